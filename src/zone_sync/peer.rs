//! One outgoing connection to another node: connect (with
//! `zone_sync_connect_timeout`), run the client side of the protocol (send
//! a snapshot, or only the changes the node has not seen if it can resume,
//! then local changes, marking positions as it goes), and retry every
//! `zone_sync_connect_retry_interval` after a failure.
//!
//! A peer never reaches its engine: the engine owns it, calls it with the
//! context it needs ([`Ctx`]), and acts on the [`Outcome`] it returns. Its
//! nginx events go through the engine too (`engine::peer_event`).

use core::ffi::c_void;
use core::sync::atomic::{AtomicPtr, Ordering};
use core::{mem, ptr};
use std::collections::VecDeque;

use nginx_sys::{
    ngx_connection_t, ngx_event_t, ngx_log_t, ngx_peer_connection_t, ngx_str_t, NGX_AGAIN,
    NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
};
use ngx::{ngx_log_debug, ngx_log_error};
use zone_sync_core::session::{Event, Role, Session};
use zone_sync_core::wire::{self, ErrorCode};

use super::conn::{self, CloseReason, ReadResult, SendWatch};
use super::engine::{self, Ctx, PeerEvent, Staged};
use super::handshake;
use super::members::NodeAddr;
use super::status;
use crate::kinds::{Record, SnapshotCursor};
use crate::ngx_ext::current_msec;

/// Snapshot buffer refills per event while the socket takes everything.
const SNAPSHOT_ROUNDS: usize = 32;

/// How much of a record key a log line shows.
pub const KEY_LOGGED: usize = 64;

/// What happened to a peer, for the engine to act on.
#[derive(Debug)]
pub enum Outcome {
    /// Nothing the engine needs to know.
    Quiet,
    /// Frames were acknowledged, the socket took what waited, or the
    /// connection came up: the peer can take more changes.
    Ready,
    /// The worker is exiting: push what is queued, then close gracefully
    /// ([`Peer::begin_close`]).
    Exiting,
    /// The connection closed (logged); the node is retried later, unless
    /// the reason is [`CloseReason::Myself`].
    Closed(CloseReason),
}

/// Where an outgoing connection is.
#[derive(PartialEq, Eq, Debug, Clone, Copy)]
enum State {
    /// Waiting for the retry timer.
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// TLS handshake in progress.
    Handshake,
    /// Connected, HELLO sent, waiting for the peer's.
    Hello,
    /// Sending the initial snapshot; live changes go out too.
    Snapshot,
    /// Sending every record again after falling behind; live changes go
    /// out too.
    Resync,
    /// Snapshot done; only changes.
    Live,
    /// This address is this node: never connected again.
    Myself,
    /// Graceful close in progress (QUIT or reload).
    Closing,
}

/// A RECORDS frame sent and not yet acknowledged.
struct InFlight {
    seq: u64,
    zone: usize,
    records: u64,
    /// When it was queued.
    queued: u64,
}

pub struct Peer {
    /// "127.0.0.1:9000", for logs.
    pub name: String,
    /// The same for nginx (`pc.name`, the log context), apart from the
    /// peer so that nginx's reads never go through it.
    name_str: *mut ngx_str_t,
    pub addr: NodeAddr,
    /// The name to verify and send with SNI (`zone_sync_ssl_name`, or the
    /// host part of the server address).
    ssl_name: Vec<u8>,
    /// The last TLS session with this node, resumed on reconnect.
    ssl_session: *mut handshake::SSL_SESSION,
    /// The connection's log: the cycle's, naming this node in every line.
    log: ngx_log_t,
    state: State,
    pc: ngx_peer_connection_t,
    conn: *mut ngx_connection_t,
    session: Option<Session>,
    /// Retry, and the session's heartbeat/timeout deadline.
    timer: ngx_event_t,
    /// The zone being snapshotted (index into shared zones) and where.
    snapshot_zone: usize,
    cursor: SnapshotCursor,
    /// Changes were dropped for this peer during the current snapshot
    /// pass: another pass follows it.
    behind: bool,
    /// The HELLO is in: decide per zone between resuming and a snapshot.
    plan_due: bool,
    /// Per engine zone, this pass sends the changes after this sequence
    /// number (a resume) instead of every record.
    pass_from: Vec<Option<u64>>,
    /// Per engine zone, the zone's sequence number when the pass began:
    /// the position the node holds once the pass is through.
    pass_start: Vec<u64>,
    /// Per engine zone, the last position sent (POSITION).
    marked: Vec<u64>,
    /// The node answered UNSUPPORTED_VERSION: speak version 1 to it (full
    /// snapshots) for the life of this worker.
    old_protocol: bool,
    in_flight: VecDeque<InFlight>,
    watch: SendWatch,
    /// Last failure reason logged, to log a repeated failure only once.
    last_error: String,
    /// A protocol failure found while reading, handled after the read.
    failure: Option<CloseReason>,
    /// An ACK came in during this read (handled once the read is done).
    acked: bool,
}

impl Drop for Peer {
    fn drop(&mut self) {
        // SAFETY: allocated in new(), used by nothing once the connection
        // and the timer are gone (shutdown() runs before the drop).
        drop(unsafe { Box::from_raw(self.name_str) });
    }
}

impl Peer {
    /// # Safety
    /// `log` outlives the peer.
    pub unsafe fn new(addr: NodeAddr, ssl_name: Vec<u8>, log: *mut ngx_log_t) -> Box<Peer> {
        let name = String::from_utf8_lossy(&addr.name).into_owned();
        let mut p = Box::new(Peer {
            name_str: ptr::null_mut(),
            name,
            addr,
            ssl_name,
            ssl_session: ptr::null_mut(),
            log: *log,
            state: State::Idle,
            pc: mem::zeroed(),
            conn: ptr::null_mut(),
            session: None,
            timer: mem::zeroed(),
            snapshot_zone: 0,
            cursor: SnapshotCursor::default(),
            behind: false,
            plan_due: false,
            pass_from: Vec::new(),
            pass_start: Vec::new(),
            marked: Vec::new(),
            old_protocol: false,
            in_flight: VecDeque::new(),
            watch: SendWatch::default(),
            last_error: String::new(),
            failure: None,
            acked: false,
        });
        let me: *mut Peer = &mut *p;
        // The address bytes live in the Vec's own heap buffer, which
        // never moves.
        p.name_str = Box::into_raw(Box::new(ngx_str_t {
            len: p.addr.name.len(),
            data: p.addr.name.as_mut_ptr(),
        }));
        p.log.handler = Some(log_context);
        p.log.data = p.name_str.cast();
        p.log.action = ptr::null_mut();
        p.timer.handler = Some(on_timer);
        p.timer.data = me.cast();
        p.timer.log = log;
        p.timer.set_cancelable(1);
        p
    }

    /// Whether zone `zi` (engine index) is synced with this node.
    pub fn shares(&self, zi: usize) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.shared_zones().contains(&zi))
    }

    /// Whether this peer lets a change leave at once: every frame is
    /// acknowledged, or it is in a snapshot pass (whose frames keep it busy
    /// for long; changes go to it when it has room).
    pub fn idle(&self) -> bool {
        self.state != State::Live || self.in_flight.is_empty()
    }

    /// Waiting out the retry interval: connect now instead.
    pub fn retry_now(&mut self, ctx: &Ctx) -> Outcome {
        if self.state == State::Idle && self.timer.timer_set() != 0 {
            // SAFETY: our own timer event.
            unsafe { nginx_sys::ngx_del_timer(&mut self.timer) };
            // SAFETY: as in the timer handler.
            return unsafe { self.connect(ctx) };
        }
        Outcome::Quiet
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Snapshot | State::Resync | State::Live)
    }

    /// Starts connecting now.
    pub fn start(&mut self, ctx: &Ctx) -> Outcome {
        // SAFETY: timer and connection belong to this peer.
        unsafe { self.connect(ctx) }
    }

    unsafe fn connect(&mut self, ctx: &Ctx) -> Outcome {
        if crate::ngx_ext::exiting() {
            return Outcome::Quiet;
        }
        // While failures repeat, nginx's own per-attempt error lines (for
        // instance SSL_do_handshake() failed) are kept quiet: the first one
        // was logged, and fail() logs a changed reason again.
        self.log.log_level = if self.last_error.is_empty() {
            (*ctx.log).log_level
        } else {
            (*ctx.log).log_level.min(nginx_sys::NGX_LOG_CRIT as usize)
        };
        let log: *mut ngx_log_t = &mut self.log;
        self.pc = mem::zeroed();
        self.pc.sockaddr = (&mut self.addr.sockaddr as *mut nginx_sys::ngx_sockaddr_t).cast();
        self.pc.socklen = self.addr.socklen;
        self.pc.name = self.name_str;
        self.pc.get = Some(nginx_sys::ngx_event_get_peer);
        self.pc.log = log;
        self.pc
            .set_log_error(nginx_sys::ngx_connection_log_error_e_NGX_ERROR_ERR);

        // nginx logs a connect() to a missing unix socket at [crit]; a node
        // that is not started yet is an ordinary failure here.
        if let Some(path) = self.addr.unix_path() {
            if !std::path::Path::new(&path).exists() {
                return self.fail(ctx, CloseReason::failed("no such socket"));
            }
        }
        let rc = nginx_sys::ngx_event_connect_peer(&mut self.pc);
        if rc == NGX_ERROR as isize
            || rc == nginx_sys::NGX_BUSY as isize
            || rc == nginx_sys::NGX_DECLINED as isize
        {
            // NGX_DECLINED: refused, connection already closed and logged.
            if !self.pc.connection.is_null() && rc != nginx_sys::NGX_DECLINED as isize {
                nginx_sys::ngx_close_connection(self.pc.connection);
            }
            return self.fail(ctx, CloseReason::failed("connect() failed"));
        }
        let c = self.pc.connection;
        self.conn = c;
        (*c).data = (self as *mut Peer).cast();
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        (*c).log = log;
        (*(*c).read).log = log;
        (*(*c).write).log = log;
        (*c).pool = nginx_sys::ngx_create_pool(4096, log);
        if (*c).pool.is_null() {
            return self.close(ctx, CloseReason::failed("out of memory"));
        }
        // Closed for us when the worker shuts down gracefully.
        (*c).set_idle(1);
        self.state = State::Connecting;
        if rc == NGX_AGAIN as isize {
            nginx_sys::ngx_add_timer((*c).write, ctx.conf().connect_timeout);
            return Outcome::Quiet;
        }
        self.connected(ctx)
    }

    /// TCP is up: TLS first if configured, then the protocol.
    unsafe fn connected(&mut self, ctx: &Ctx) -> Outcome {
        // Small frames must not wait for the peer's delayed ACK (Nagle's
        // algorithm made a quiet node's change take 40 ms now and then);
        // the stream core does the same for the accepting side.
        if self.addr.unix_path().is_none() {
            let on: libc::c_int = 1;
            libc::setsockopt(
                (*self.conn).fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&on as *const libc::c_int).cast(),
                core::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let conf = ctx.conf();
        if conf.ssl.is_null() || conf.ssl_enable != 1 {
            return self.start_session(ctx);
        }
        let c = self.conn;
        self.state = State::Handshake;
        self.log.action = c"SSL handshaking to zone_sync node".as_ptr().cast_mut();
        let name = ngx_str_t {
            len: self.ssl_name.len(),
            data: self.ssl_name.as_mut_ptr(),
        };
        match handshake::start(c, conf, &name, self.ssl_session) {
            Err(why) => self.close(ctx, CloseReason::Failed(why)),
            Ok(handshake::Start::Again) => {
                (*(*c).ssl).handler = Some(on_handshake);
                nginx_sys::ngx_add_timer((*c).write, conf.connect_timeout);
                Outcome::Quiet
            }
            Ok(handshake::Start::Done) => self.handshaked(ctx),
        }
    }

    /// TLS is up: check it, remember the session, start the protocol.
    unsafe fn handshaked(&mut self, ctx: &Ctx) -> Outcome {
        let c = self.conn;
        self.log.action = ptr::null_mut();
        if (*(*c).write).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).write);
        }
        let name = ngx_str_t {
            len: self.ssl_name.len(),
            data: self.ssl_name.as_mut_ptr(),
        };
        if let Err(why) = handshake::finish(c, ctx.conf(), &name) {
            return self.close(ctx, CloseReason::Failed(why));
        }
        // The session as it is now (TLS 1.2), and every one the node sends
        // later: TLS 1.3 tickets arrive after the handshake, and the
        // handshake's own session cannot be resumed.
        self.keep_session(handshake::save_session(c));
        (*(*c).ssl).save_session = Some(on_new_session);
        // ngx_ssl_handshake() replaced the event handlers.
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        self.start_session(ctx)
    }

    /// Keeps a TLS session (from a verified connection) for the next
    /// connection to this node.
    fn keep_session(&mut self, s: *mut handshake::SSL_SESSION) {
        if !s.is_null() {
            // SAFETY: our previous session, replaced.
            unsafe { handshake::free_session(self.ssl_session) };
            self.ssl_session = s;
        }
    }

    /// Takes a ticket nginx handed over during the last read (see
    /// [`on_new_session`]).
    fn claim_ticket(&mut self) {
        if !self.conn.is_null() && TICKET_CONN.load(Ordering::Relaxed) == self.conn {
            TICKET_CONN.store(ptr::null_mut(), Ordering::Relaxed);
            self.keep_session(TICKET.swap(ptr::null_mut(), Ordering::Relaxed));
        }
    }

    unsafe fn start_session(&mut self, ctx: &Ctx) -> Outcome {
        let now = current_msec();
        let version = if self.old_protocol {
            1
        } else {
            wire::PROTOCOL_VERSION
        };
        self.session = Some(Session::with_version(
            Role::Client,
            ctx.session_config(),
            now,
            version,
        ));
        self.state = State::Hello;
        self.in_flight.clear();
        self.watch = SendWatch::default();
        let n = ctx.zones.len();
        self.marked = vec![0; n];
        self.pass_from = vec![None; n];
        self.pass_start = vec![0; n];
        self.start_pass(ctx, State::Snapshot);
        ngx_log_error!(
            NGX_LOG_INFO,
            ctx.log,
            "zone_sync: connected to node {}",
            self.name
        );
        self.pump(ctx)
    }

    /// Starts a snapshot pass over every shared zone (the state is set
    /// once the HELLO is in, for the initial one).
    fn start_pass(&mut self, ctx: &Ctx, state: State) {
        if self.state == State::Hello {
            // The initial pass: planned once the HELLO says what the node
            // has seen.
            self.plan_due = true;
        } else {
            self.state = state;
            for (zi, z) in ctx.zones.iter().enumerate() {
                self.pass_start[zi] = z.history().seq;
                self.pass_from[zi] = None;
            }
        }
        self.snapshot_zone = 0;
        self.cursor = SnapshotCursor::default();
        self.behind = false;
    }

    /// Decides, per shared zone, whether the node resumes from where it
    /// stands in this zone's history (its HELLO said) or gets every
    /// record; logs each snapshot and why.
    fn plan(&mut self, ctx: &Ctx) {
        self.plan_due = false;
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let version = s.version();
        if version < 2 {
            ngx_log_error!(
                NGX_LOG_INFO,
                ctx.log,
                "zone_sync: node {} speaks protocol version {}: sending full snapshots",
                self.name,
                version
            );
        }
        for &zi in s.shared_zones() {
            let z = ctx.zones[zi];
            let h = z.history();
            self.pass_start[zi] = h.seq;
            self.pass_from[zi] = None;
            if version < 2 {
                continue;
            }
            let name = String::from_utf8_lossy(z.name());
            let seen = s.peer_resume(zi).unwrap_or_default();
            let why = if seen.seen_epoch == 0 {
                "it holds no position in it".to_string()
            } else if seen.seen_epoch != h.epoch {
                format!(
                    "its position is in another history of the zone (epoch {:016x}, ours {:016x})",
                    seen.seen_epoch, h.epoch
                )
            } else if seen.seen_seq < h.horizon {
                format!(
                    "its position {} is older than the zone can replay ({})",
                    seen.seen_seq, h.horizon
                )
            } else if seen.seen_seq > h.seq {
                format!(
                    "its position {} is ahead of the zone ({})",
                    seen.seen_seq, h.seq
                )
            } else {
                ngx_log_error!(
                    NGX_LOG_INFO,
                    ctx.log,
                    "zone_sync: resuming zone \"{}\" for node {} from position {} ({} since)",
                    name,
                    self.name,
                    seen.seen_seq,
                    h.seq - seen.seen_seq
                );
                self.pass_from[zi] = Some(seen.seen_seq);
                continue;
            };
            ngx_log_error!(
                NGX_LOG_INFO,
                ctx.log,
                "zone_sync: full snapshot of zone \"{}\" for node {}: {}",
                name,
                self.name,
                why
            );
        }
        self.reset_cursor();
    }

    /// The cursor for the start of the zone the pass is at.
    fn reset_cursor(&mut self) {
        let zone = self
            .session
            .as_ref()
            .and_then(|s| s.shared_zones().get(self.snapshot_zone).copied());
        self.cursor = match zone.and_then(|zi| self.pass_from.get(zi).copied().flatten()) {
            Some(after) => SnapshotCursor::after(after),
            None => SnapshotCursor::default(),
        };
    }

    /// The engine drained zone `zi`'s local changes up to `drained` and
    /// queued them for this peer: a live peer holds the zone's history up
    /// to there once it has read them.
    pub fn mark(&mut self, ctx: &Ctx, zi: usize, drained: u64) {
        if self.state != State::Live || self.marked.get(zi).is_none_or(|&m| drained <= m) {
            return;
        }
        // Changes were taken from the queue unsent after this connection's
        // pass began: it does not hold them.
        if ctx.zones[zi].dropped() > self.pass_start[zi] {
            return;
        }
        // An exiting worker 0 (QUIT, or a reload) shares the change queue
        // with its successor, which drains and sends on connections of its
        // own: the drained position no longer says what went out here.
        if crate::ngx_ext::exiting() {
            return;
        }
        if let Some(s) = self.session.as_mut() {
            s.send_position(zi, drained);
            self.marked[zi] = drained;
        }
    }

    /// Logs a failure (once while it repeats) and retries later.
    fn fail(&mut self, ctx: &Ctx, why: CloseReason) -> Outcome {
        let text = why.to_string();
        if self.last_error != text {
            ngx_log_error!(
                NGX_LOG_ERR,
                ctx.log,
                "zone_sync: node {}: {}",
                self.name,
                text
            );
            self.last_error = text;
        }
        self.state = State::Idle;
        // SAFETY: our own timer event.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, ctx.conf().connect_retry_interval) };
        Outcome::Closed(why)
    }

    /// Closes the connection; the node is retried after the retry
    /// interval, except when it turned out to be this node.
    fn close(&mut self, ctx: &Ctx, why: CloseReason) -> Outcome {
        let was_established = self.is_established();
        self.drop_connection();
        if let CloseReason::Myself = why {
            ngx_log_error!(
                NGX_LOG_INFO,
                ctx.log,
                "zone_sync: node {} is this node, not syncing with it",
                self.name
            );
            self.state = State::Myself;
            return Outcome::Closed(why);
        }
        if !was_established {
            return self.fail(ctx, why);
        }
        ngx_log_error!(
            NGX_LOG_NOTICE,
            ctx.log,
            "zone_sync: disconnected from node {}: {}",
            self.name,
            why
        );
        self.last_error.clear();
        self.state = State::Idle;
        // SAFETY: our own timer event.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, ctx.conf().connect_retry_interval) };
        Outcome::Closed(why)
    }

    fn drop_connection(&mut self) {
        if !self.conn.is_null() {
            // SAFETY: the connection and its pool are ours.
            unsafe {
                handshake::shutdown(self.conn);
                let pool = (*self.conn).pool;
                nginx_sys::ngx_close_connection(self.conn);
                if !pool.is_null() {
                    nginx_sys::ngx_destroy_pool(pool);
                }
            }
            if TICKET_CONN.load(Ordering::Relaxed) == self.conn {
                // A ticket of this connection never claimed.
                TICKET_CONN.store(ptr::null_mut(), Ordering::Relaxed);
                // SAFETY: parked by on_new_session, owned by nobody else.
                unsafe { handshake::free_session(TICKET.swap(ptr::null_mut(), Ordering::Relaxed)) };
            }
            self.conn = ptr::null_mut();
        }
        if self.timer.timer_set() != 0 {
            // SAFETY: our own timer event.
            unsafe { nginx_sys::ngx_del_timer(&mut self.timer) };
        }
        self.session = None;
        self.in_flight.clear();
    }

    /// Stops for good (worker exit, or the node left): no log, no retry.
    pub fn shutdown(&mut self) {
        self.drop_connection();
        // SAFETY: our own saved session, not used afterwards.
        unsafe { handshake::free_session(self.ssl_session) };
        self.ssl_session = ptr::null_mut();
        self.state = State::Idle;
    }

    /// Graceful close on QUIT (after the engine pushed what is queued):
    /// say SHUTDOWN, close once written (or when the timer fires).
    pub fn begin_close(&mut self, ctx: &Ctx) -> Outcome {
        let Some(s) = self.session.as_mut() else {
            self.drop_connection();
            return Outcome::Quiet;
        };
        s.close_with(ErrorCode::SHUTDOWN, "shutting down");
        self.state = State::Closing;
        // SAFETY: our own timer and connection; a non-cancelable timer keeps
        // the exiting worker alive until the flush is done.
        unsafe {
            if self.timer.timer_set() != 0 {
                nginx_sys::ngx_del_timer(&mut self.timer);
            }
            self.timer.set_cancelable(0);
            nginx_sys::ngx_add_timer(&mut self.timer, ctx.conf().timeout);
        }
        self.write_out(ctx)
    }

    /// Whether one more frame of changes fits: room in the outgoing buffer
    /// and below the cap on frames in flight.
    pub fn can_take(&mut self, ctx: &Ctx) -> bool {
        let (frame, cap, max_in_flight) =
            (ctx.frame_size(), ctx.send_capacity(), ctx.max_in_flight());
        self.session.as_mut().is_some_and(|s| {
            s.outgoing().len() + frame <= cap && (s.in_flight() as usize) < max_in_flight
        })
    }

    /// When the oldest frame not acknowledged yet was queued.
    pub fn oldest_unacked(&self) -> Option<u64> {
        self.in_flight.front().map(|f| f.queued)
    }

    /// Changes were dropped for lack of room: this peer gets every record
    /// again in a resync pass (now, or after the pass in progress).
    pub fn fall_behind(&mut self, ctx: &Ctx) {
        match self.state {
            State::Live => {
                ngx_log_error!(
                    NGX_LOG_INFO,
                    ctx.log,
                    "zone_sync: node {} fell behind, sending it every record again",
                    self.name
                );
                self.start_pass(ctx, State::Resync);
            }
            State::Snapshot | State::Resync => self.behind = true,
            _ => {}
        }
    }

    /// Sends one frame of staged records of zone `zone` (index into the
    /// engine's zones).
    pub fn send_records(&mut self, ctx: &Ctx, zone: usize, records: &[Staged]) {
        let max = ctx.frame_size();
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if !s.shared_zones().contains(&zone) {
            return;
        }
        let Ok(mut w) = s.begin_records(zone, false, max) else {
            return;
        };
        let mut n = 0u64;
        for r in records {
            if !w.try_push(&r.as_record()) {
                break;
            }
            n += 1;
        }
        if let Some(seq) = w.finish() {
            self.in_flight.push_back(InFlight {
                seq,
                zone,
                records: n,
                queued: current_msec(),
            });
            status::get().add_msgs_out(1);
        }
    }

    /// Sends the snapshot while the socket takes it (the buffers bound
    /// what waits here, not what the kernel accepts), a few rounds per
    /// event; the rest goes on with the next ack or write event.
    fn pump(&mut self, ctx: &Ctx) -> Outcome {
        for _ in 0..SNAPSHOT_ROUNDS {
            if !matches!(self.state, State::Snapshot | State::Resync) {
                break;
            }
            self.pump_snapshot(ctx);
            let Some(s) = self.session.as_mut() else {
                return Outcome::Quiet;
            };
            // SAFETY: an open connection of this peer.
            match unsafe { conn::flush(self.conn, s, &mut self.watch) } {
                Ok(true) => continue,
                Ok(false) => break,
                Err(()) => return self.close(ctx, CloseReason::failed("send() failed")),
            }
        }
        self.write_out(ctx)
    }

    /// Fills the outgoing buffer with snapshot frames, leaving room for one
    /// frame of live changes, and up to three quarters of the cap on frames
    /// in flight (the rest is for live changes). A record larger than a frame cannot be sent: it is named in
    /// a log line and the pass goes on with the next.
    fn pump_snapshot(&mut self, ctx: &Ctx) {
        let max = ctx.frame_size();
        let fill = ctx.send_capacity().saturating_sub(max).max(max);
        let max_in_flight = (ctx.max_in_flight() * 3 / 4).max(1);
        let now = current_msec();
        if self.plan_due {
            self.plan(ctx);
        }
        loop {
            let Some(s) = self.session.as_mut() else {
                return;
            };
            if s.outgoing().len() + max > fill || s.in_flight() as usize >= max_in_flight {
                return;
            }
            let shared = s.shared_zones();
            let Some(&zone) = shared.get(self.snapshot_zone) else {
                // Every zone sent.
                if self.state == State::Snapshot {
                    if s.finish_snapshot().is_ok() {
                        status::get().add_msgs_out(1);
                    }
                    ngx_log_error!(
                        NGX_LOG_INFO,
                        ctx.log,
                        "zone_sync: snapshot sent to node {}",
                        self.name
                    );
                } else {
                    ngx_log_debug!(ctx.log, "zone_sync: resync sent to node {}", self.name);
                }
                if self.behind {
                    self.start_pass(ctx, State::Resync);
                    continue;
                }
                self.state = State::Live;
                return;
            };
            let z = ctx.zones[zone];
            let budget = max.saturating_sub(wire::records_frame_overhead(z.name().len()));
            let resuming = self.pass_from[zone].is_some();
            let peer = s.peer_node_id().unwrap_or(0);
            let Ok(mut w) = s.begin_records(zone, self.state == State::Snapshot, max) else {
                return;
            };
            let mut n = 0u64;
            let mut skipped: Vec<(String, usize)> = Vec::new();
            let mut take = |r: &Record<'_>| {
                if resuming && r.origin == peer {
                    // The node made this change itself: it has it (or a
                    // newer one) in the history it resumes.
                    return true;
                }
                let len = r.encoded_len();
                if len > budget {
                    // Taken, so that the pass moves past it.
                    skipped.push((wire::escape(r.key, KEY_LOGGED), len));
                    return true;
                }
                if w.try_push(r) {
                    n += 1;
                    true
                } else {
                    false
                }
            };
            let done = if self.pass_from[zone].is_some() {
                z.changes(&mut self.cursor, now, &mut take)
            } else {
                z.snapshot(&mut self.cursor, now, usize::MAX, &mut take)
            };
            let empty = w.is_empty();
            if let Some(seq) = w.finish() {
                self.in_flight.push_back(InFlight {
                    seq,
                    zone,
                    records: n,
                    queued: now,
                });
                status::get().add_msgs_out(1);
            }
            for (key, len) in skipped {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    ctx.log,
                    "zone_sync: record \"{}\" of {} bytes in zone \"{}\" exceeds a \
                     \"zone_sync_buffers\" buffer, not sent to node {}",
                    key,
                    len,
                    String::from_utf8_lossy(z.name()),
                    self.name
                );
            }
            if done {
                // Everything of the zone up to the pass's start is sent.
                let pos = self.pass_start[zone];
                if let Some(s) = self.session.as_mut() {
                    s.send_position(zone, pos);
                }
                self.marked[zone] = self.marked[zone].max(pos);
                self.snapshot_zone += 1;
                self.reset_cursor();
            } else if empty {
                // Nothing taken and not done: cannot happen (a record that
                // fits no frame is skipped above); do not spin.
                return;
            }
        }
    }

    /// Writes what is queued; re-arms events and the session timer.
    pub fn write_out(&mut self, ctx: &Ctx) -> Outcome {
        let c = self.conn;
        let Some(s) = self.session.as_mut() else {
            return Outcome::Quiet;
        };
        // SAFETY: an open connection of this peer.
        let flushed = unsafe { conn::flush(c, s, &mut self.watch) };
        match flushed {
            Err(()) => self.close(ctx, CloseReason::failed("send() failed")),
            Ok(all) => {
                if all && self.state == State::Closing {
                    self.drop_connection();
                    return Outcome::Quiet;
                }
                // SAFETY: as above.
                if unsafe { conn::rearm(c, !all) }.is_err() {
                    return self.close(ctx, CloseReason::failed("could not arm events"));
                }
                self.arm_session_timer(ctx);
                Outcome::Quiet
            }
        }
    }

    fn arm_session_timer(&mut self, ctx: &Ctx) {
        if self.state == State::Closing {
            return;
        }
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let mut next = s.next_timer();
        if let Some(d) = self.watch.deadline(ctx.conf().timeout as u64) {
            next = next.min(d);
        }
        let delay = next.saturating_sub(current_msec()).clamp(1, 60_000);
        // SAFETY: our own timer event.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, delay as _) };
    }

    /// Handles every complete frame the session holds.
    fn on_frames(&mut self) -> Result<(), CloseReason> {
        loop {
            let Some(s) = self.session.as_mut() else {
                return Ok(());
            };
            let offered = s.version();
            let ev = match s.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(e) => return Err(CloseReason::from_session(e)),
            };
            status::get().add_msgs_in(1);
            match ev {
                Event::PeerHello { node_id, .. } => {
                    if node_id == crate::node_id() {
                        return Err(CloseReason::Myself);
                    }
                    self.state = State::Snapshot;
                    // Announced once the read is done (the engine logs
                    // "online" lines through the outcome).
                    self.acked = true;
                }
                Event::Ack { seq } => {
                    while self.in_flight.front().is_some_and(|f| f.seq <= seq) {
                        self.in_flight.pop_front();
                    }
                    self.acked = true;
                }
                Event::PeerError { code, text } => {
                    if code == ErrorCode::UNSUPPORTED_VERSION && offered > 1 {
                        // A node of the previous version: speak that.
                        self.old_protocol = true;
                    }
                    return Err(CloseReason::from_peer(code, text));
                }
                Event::Records { .. } | Event::SnapshotDone { .. } | Event::Position { .. } => {
                    // The session refuses these on a client.
                }
            }
        }
    }

    /// Unacknowledged records per zone, added into `acc`.
    pub fn add_inflight(&self, acc: &mut [u64]) {
        for f in &self.in_flight {
            if let Some(a) = acc.get_mut(f.zone) {
                *a += f.records;
            }
        }
    }

    /// An nginx event of this peer (dispatched by the engine).
    ///
    /// # Safety
    /// Called from the event's handler, with the running cycle.
    pub unsafe fn on_event(&mut self, ctx: &Ctx, what: PeerEvent) -> Outcome {
        match what {
            PeerEvent::Timer => self.on_timer(ctx),
            PeerEvent::Read => self.on_read(ctx),
            PeerEvent::Write => self.on_write(ctx),
            PeerEvent::Handshake => self.handshaked(ctx),
        }
    }

    unsafe fn on_timer(&mut self, ctx: &Ctx) -> Outcome {
        match self.state {
            State::Idle => self.connect(ctx),
            State::Closing => {
                self.drop_connection();
                Outcome::Quiet
            }
            State::Myself | State::Connecting | State::Handshake => Outcome::Quiet,
            State::Hello | State::Snapshot | State::Resync | State::Live => {
                let now = current_msec();
                if self.watch.stalled(now, ctx.conf().timeout as u64) {
                    return self.close(ctx, CloseReason::SendStalled);
                }
                let Some(s) = self.session.as_mut() else {
                    return Outcome::Quiet;
                };
                match s.poll_timers(now) {
                    Ok(()) => self.write_out(ctx),
                    Err(e) => self.close(ctx, CloseReason::from_session(e)),
                }
            }
        }
    }

    unsafe fn on_write(&mut self, ctx: &Ctx) -> Outcome {
        let c = self.conn;
        if c.is_null() {
            return Outcome::Quiet;
        }
        if self.state == State::Connecting {
            let ev = (*c).write;
            if (*ev).timedout() != 0 {
                return self.close(ctx, CloseReason::failed("connect timed out"));
            }
            if (*ev).timer_set() != 0 {
                nginx_sys::ngx_del_timer(ev);
            }
            if let Err(why) = test_connect(c) {
                return self.close(ctx, CloseReason::Failed(why));
            }
            return self.connected(ctx);
        }
        let out = self.pump(ctx);
        if !matches!(out, Outcome::Quiet) {
            return out;
        }
        // The socket took what was queued: changes held back for lack of
        // room in this peer's buffer can go now.
        if self.is_established() {
            Outcome::Ready
        } else {
            Outcome::Quiet
        }
    }

    unsafe fn on_read(&mut self, ctx: &Ctx) -> Outcome {
        let c = self.conn;
        if c.is_null() {
            return Outcome::Quiet;
        }
        if (*c).close() != 0 {
            // The worker is shutting down.
            return if self.is_established() {
                Outcome::Exiting
            } else {
                self.begin_close(ctx)
            };
        }
        if matches!(self.state, State::Connecting | State::Handshake) {
            return Outcome::Quiet;
        }
        let was = self.state;
        let r = conn::read(c, self);
        self.claim_ticket();
        if let Some(why) = self.failure.take() {
            return self.close(ctx, why);
        }
        match r {
            ReadResult::Again | ReadResult::Paused => {
                if was == State::Hello && self.is_established() {
                    ngx_log_error!(
                        NGX_LOG_NOTICE,
                        ctx.log,
                        "zone_sync: node {} is online",
                        self.name
                    );
                }
                let out = self.pump(ctx);
                if !matches!(out, Outcome::Quiet) {
                    return out;
                }
                if mem::take(&mut self.acked) && self.is_established() {
                    Outcome::Ready
                } else {
                    Outcome::Quiet
                }
            }
            // A listener with "ssl_verify_client on" completes the
            // handshake, then closes the connection if the certificate does
            // not do: all this side can tell is where it happened.
            ReadResult::Eof if self.state == State::Hello && !(*c).ssl.is_null() => self.close(
                ctx,
                CloseReason::failed(
                    "connection closed by peer after the TLS handshake, before its HELLO \
                     (client certificate refused?)",
                ),
            ),
            ReadResult::Eof => self.close(ctx, CloseReason::Eof),
            ReadResult::Error => self.close(ctx, CloseReason::failed("recv() failed")),
        }
    }
}

impl conn::Endpoint for Peer {
    fn session(&mut self) -> Option<&mut Session> {
        self.session.as_mut()
    }
    fn on_frames(&mut self) -> bool {
        match Peer::on_frames(self) {
            Ok(()) => true,
            Err(why) => {
                self.failure = Some(why);
                false
            }
        }
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    engine::peer_event((*ev).data.cast::<Peer>(), PeerEvent::Timer);
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    engine::peer_event((*c).data.cast::<Peer>(), PeerEvent::Write);
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    engine::peer_event((*c).data.cast::<Peer>(), PeerEvent::Read);
}

/// `c->ssl->handler`: the handshake ended, well or not.
unsafe extern "C" fn on_handshake(c: *mut ngx_connection_t) {
    engine::peer_event((*c).data.cast::<Peer>(), PeerEvent::Handshake);
}

/// A TLS session ticket nginx handed over during a read, and the
/// connection it came on, until that connection's peer claims it.
static TICKET: AtomicPtr<handshake::SSL_SESSION> = AtomicPtr::new(ptr::null_mut());
static TICKET_CONN: AtomicPtr<ngx_connection_t> = AtomicPtr::new(ptr::null_mut());

/// `c->ssl->save_session`: nginx's new-session callback got a session
/// (a TLS 1.3 ticket) on a verified connection. Runs inside a read of the
/// peer, so it only parks the session for [`Peer::claim_ticket`].
unsafe extern "C" fn on_new_session(c: *mut ngx_connection_t) {
    let s = handshake::save_session(c);
    if s.is_null() {
        return;
    }
    handshake::free_session(TICKET.swap(s, Ordering::Relaxed));
    TICKET_CONN.store(c, Ordering::Relaxed);
}

/// Log context of an outgoing connection: `, node: 127.0.0.1:9000` (after
/// ` while <action>` when there is one), as nginx's modules add theirs.
unsafe extern "C" fn log_context(log: *mut ngx_log_t, buf: *mut u8, len: usize) -> *mut u8 {
    let name = crate::ngx_ext::str_bytes(&*(*log).data.cast::<ngx_str_t>());
    let mut text = String::new();
    if !(*log).action.is_null() {
        text.push_str(" while ");
        text.push_str(&core::ffi::CStr::from_ptr((*log).action).to_string_lossy());
    }
    text.push_str(", node: ");
    text.push_str(&String::from_utf8_lossy(name));
    let n = text.len().min(len);
    ptr::copy_nonoverlapping(text.as_ptr(), buf, n);
    buf.add(n)
}

/// `SO_ERROR` of a non-blocking connect, as nginx's proxy checks it.
unsafe fn test_connect(c: *mut ngx_connection_t) -> Result<(), String> {
    let mut err: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    if libc::getsockopt(
        (*c).fd,
        libc::SOL_SOCKET,
        libc::SO_ERROR,
        (&mut err as *mut libc::c_int).cast::<c_void>(),
        &mut len,
    ) == -1
    {
        err = *libc::__errno_location();
    }
    if err != 0 {
        return Err(format!(
            "connect() failed ({})",
            std::io::Error::from_raw_os_error(err)
        ));
    }
    Ok(())
}

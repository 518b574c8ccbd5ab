//! One outgoing connection to another node: connect (with
//! `zone_sync_connect_timeout`), run the client side of the protocol (send
//! a snapshot, then local changes), and retry every
//! `zone_sync_connect_retry_interval` after a failure.

use core::ffi::c_void;
use core::{mem, ptr};
use std::collections::VecDeque;

use nginx_sys::{
    ngx_connection_t, ngx_event_t, ngx_log_t, ngx_peer_connection_t, ngx_str_t, NGX_AGAIN,
    NGX_ERROR, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
};
use ngx::ngx_log_error;
use zone_sync_core::session::{Event, Role, Session, SessionError};
use zone_sync_core::wire::ErrorCode;

use super::conn::{self, ReadResult};
use super::engine::Engine;
use super::handshake;
use super::members::NodeAddr;
use super::status;
use crate::kinds::SnapshotCursor;
use crate::ngx_ext::current_msec;

/// Snapshot buffer refills per event while the socket takes everything.
const SNAPSHOT_ROUNDS: usize = 32;

/// Where an outgoing connection is.
#[derive(PartialEq, Eq, Debug)]
enum State {
    /// Waiting for the retry timer.
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// TLS handshake in progress.
    Handshake,
    /// Connected, HELLO sent, waiting for the peer's.
    Hello,
    /// Sending the snapshot; live changes go out too.
    Snapshot,
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
}

pub struct Peer {
    engine: *mut Engine,
    /// "127.0.0.1:9000", for logs.
    pub name: String,
    name_str: ngx_str_t,
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
    in_flight: VecDeque<InFlight>,
    /// Last failure reason logged, to log a repeated failure only once.
    last_error: String,
    /// A protocol failure found while reading, handled after the read.
    failure: Option<String>,
    /// An ACK came in during this read (handled once the read is done).
    acked: bool,
}

impl Peer {
    /// # Safety
    /// `log` outlives the peer.
    pub unsafe fn new(
        engine: *mut Engine,
        addr: NodeAddr,
        ssl_name: Vec<u8>,
        log: *mut ngx_log_t,
    ) -> Box<Peer> {
        let name = String::from_utf8_lossy(&addr.name).into_owned();
        let mut p = Box::new(Peer {
            engine,
            name_str: ngx_str_t {
                len: 0,
                data: ptr::null_mut(),
            },
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
            in_flight: VecDeque::new(),
            last_error: String::new(),
            failure: None,
            acked: false,
        });
        let me: *mut Peer = &mut *p;
        p.name_str = ngx_str_t {
            len: p.addr.name.len(),
            data: p.addr.name.as_mut_ptr(),
        };
        p.log.handler = Some(log_context);
        p.log.data = me.cast();
        p.log.action = ptr::null_mut();
        p.timer.handler = Some(on_timer);
        p.timer.data = me.cast();
        p.timer.log = log;
        p.timer.set_cancelable(1);
        p
    }

    fn engine(&self) -> &'static mut Engine {
        // SAFETY: the engine owns its peers and outlives them; everything
        // runs on the worker's one event-loop thread, one handler at a time.
        unsafe { &mut *self.engine }
    }

    /// Whether zone `zi` (engine index) is synced with this node.
    pub fn shares(&self, zi: usize) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| s.shared_zones().contains(&zi))
    }

    /// Every frame sent has been acknowledged.
    pub fn nothing_in_flight(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Waiting out the retry interval: connect now instead.
    pub fn retry_now(&mut self) {
        if self.state == State::Idle && self.timer.timer_set() != 0 {
            // SAFETY: our own timer event.
            unsafe { nginx_sys::ngx_del_timer(&mut self.timer) };
            // SAFETY: as in the timer handler.
            unsafe { self.connect() };
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Snapshot | State::Live)
    }

    /// Starts connecting now.
    pub fn start(&mut self) {
        // SAFETY: timer and connection belong to this peer.
        unsafe { self.connect() }
    }

    unsafe fn connect(&mut self) {
        if crate::ngx_ext::exiting() {
            return;
        }
        let e = self.engine();
        // While failures repeat, nginx's own per-attempt error lines (for
        // instance SSL_do_handshake() failed) are kept quiet: the first one
        // was logged, and fail() logs a changed reason again.
        self.log.log_level = if self.last_error.is_empty() {
            (*e.log).log_level
        } else {
            (*e.log).log_level.min(nginx_sys::NGX_LOG_CRIT as usize)
        };
        let log: *mut ngx_log_t = &mut self.log;
        self.pc = mem::zeroed();
        self.pc.sockaddr = (&mut self.addr.sockaddr as *mut nginx_sys::ngx_sockaddr_t).cast();
        self.pc.socklen = self.addr.socklen;
        self.pc.name = &mut self.name_str;
        self.pc.get = Some(nginx_sys::ngx_event_get_peer);
        self.pc.log = log;
        self.pc
            .set_log_error(nginx_sys::ngx_connection_log_error_e_NGX_ERROR_ERR);

        // nginx logs a connect() to a missing unix socket at [crit]; a node
        // that is not started yet is an ordinary failure here.
        if let Some(path) = self.addr.unix_path() {
            if !std::path::Path::new(&path).exists() {
                self.fail("no such socket");
                return;
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
            self.fail("connect() failed");
            return;
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
            self.close("out of memory");
            return;
        }
        // Closed for us when the worker shuts down gracefully.
        (*c).set_idle(1);
        self.state = State::Connecting;
        if rc == NGX_AGAIN as isize {
            nginx_sys::ngx_add_timer((*c).write, e.conf().connect_timeout);
            return;
        }
        self.connected();
    }

    /// TCP is up: TLS first if configured, then the protocol.
    unsafe fn connected(&mut self) {
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
        let e = self.engine();
        let conf = e.conf();
        if conf.ssl.is_null() || conf.ssl_enable != 1 {
            self.start_session();
            return;
        }
        let c = self.conn;
        self.state = State::Handshake;
        self.log.action = c"SSL handshaking to zone_sync node".as_ptr().cast_mut();
        let name = ngx_str_t {
            len: self.ssl_name.len(),
            data: self.ssl_name.as_mut_ptr(),
        };
        match handshake::start(c, conf, &name, self.ssl_session) {
            Err(why) => self.close(&why),
            Ok(handshake::Start::Again) => {
                (*(*c).ssl).handler = Some(on_handshake);
                nginx_sys::ngx_add_timer((*c).write, conf.connect_timeout);
            }
            Ok(handshake::Start::Done) => on_handshake(c),
        }
    }

    /// TLS is up: check it, remember the session, start the protocol.
    unsafe fn handshaked(&mut self) {
        let c = self.conn;
        self.log.action = ptr::null_mut();
        if (*(*c).write).timer_set() != 0 {
            nginx_sys::ngx_del_timer((*c).write);
        }
        let e = self.engine();
        let name = ngx_str_t {
            len: self.ssl_name.len(),
            data: self.ssl_name.as_mut_ptr(),
        };
        if let Err(why) = handshake::finish(c, e.conf(), &name) {
            self.close(&why);
            return;
        }
        // The session as it is now (TLS 1.2), and every one the node sends
        // later: TLS 1.3 tickets arrive after the handshake, and the
        // handshake's own session cannot be resumed.
        self.remember_session();
        (*(*c).ssl).save_session = Some(on_new_session);
        // ngx_ssl_handshake() replaced the event handlers.
        (*(*c).read).handler = Some(on_read);
        (*(*c).write).handler = Some(on_write);
        self.start_session();
    }

    /// Keeps the connection's current TLS session for the next connection
    /// to this node (from a verified connection only).
    unsafe fn remember_session(&mut self) {
        let s = handshake::save_session(self.conn);
        if !s.is_null() {
            handshake::free_session(self.ssl_session);
            self.ssl_session = s;
        }
    }

    unsafe fn start_session(&mut self) {
        let e = self.engine();
        let now = current_msec();
        self.session = Some(Session::new(Role::Client, e.session_config(), now));
        self.state = State::Hello;
        self.in_flight.clear();
        self.snapshot_zone = 0;
        self.cursor = SnapshotCursor::default();
        ngx_log_error!(
            NGX_LOG_INFO,
            e.log,
            "zone_sync: connected to node {}",
            self.name
        );
        self.pump();
    }

    /// Logs a failure (once while it repeats) and retries later.
    fn fail(&mut self, why: &str) {
        let e = self.engine();
        if self.last_error != why {
            ngx_log_error!(NGX_LOG_ERR, e.log, "zone_sync: node {}: {}", self.name, why);
            self.last_error = why.to_string();
        }
        self.state = State::Idle;
        // SAFETY: our own timer event.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, e.conf().connect_retry_interval) };
    }

    /// Closes the connection; the node is retried after the retry interval.
    fn close(&mut self, why: &str) {
        let was_established = self.is_established();
        self.drop_connection();
        let e = self.engine();
        if was_established {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                e.log,
                "zone_sync: disconnected from node {}: {}",
                self.name,
                why
            );
            self.last_error.clear();
            self.state = State::Idle;
            e.update_online();
            // SAFETY: our own timer event.
            unsafe { nginx_sys::ngx_add_timer(&mut self.timer, e.conf().connect_retry_interval) };
        } else {
            self.fail(why);
        }
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
            self.conn = ptr::null_mut();
        }
        if self.timer.timer_set() != 0 {
            // SAFETY: our own timer event.
            unsafe { nginx_sys::ngx_del_timer(&mut self.timer) };
        }
        self.session = None;
        self.in_flight.clear();
        let e = self.engine();
        e.update_inflight();
    }

    /// Stops for good (worker exit): no log, no retry.
    pub fn shutdown(&mut self) {
        self.drop_connection();
        // SAFETY: our own saved session, not used afterwards.
        unsafe { handshake::free_session(self.ssl_session) };
        self.ssl_session = ptr::null_mut();
        self.state = State::Idle;
    }

    /// Graceful close on QUIT: push what is queued, say SHUTDOWN, close
    /// once written (or when the timer fires).
    fn begin_close(&mut self) {
        if self.session.is_none() {
            self.drop_connection();
            return;
        }
        if self.is_established() {
            self.engine().drain();
        }
        if let Some(s) = self.session.as_mut() {
            s.close_with(ErrorCode::SHUTDOWN, "shutting down");
        }
        self.state = State::Closing;
        let timeout = self.engine().conf().timeout;
        // SAFETY: our own timer and connection; a non-cancelable timer keeps
        // the exiting worker alive until the flush is done.
        unsafe {
            if self.timer.timer_set() != 0 {
                nginx_sys::ngx_del_timer(&mut self.timer);
            }
            self.timer.set_cancelable(0);
            nginx_sys::ngx_add_timer(&mut self.timer, timeout);
        }
        self.write_out();
    }

    /// Room for more records in the outgoing buffer.
    pub fn room(&mut self) -> usize {
        let cap = self.engine().send_capacity();
        self.session
            .as_mut()
            .map_or(0, |s| cap.saturating_sub(s.outgoing().len()))
    }

    /// Sends one frame of staged records of zone `zone` (index into the
    /// engine's zones).
    pub fn send_records(&mut self, zone: usize, records: &[super::engine::Staged]) {
        let max = self.engine().frame_size();
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
            });
            status::get().add_msgs_out(1);
        }
    }

    /// Fills the outgoing buffer with snapshot frames while there is room.
    /// Sends the snapshot while the socket takes it (the buffers bound
    /// what waits here, not what the kernel accepts), a few rounds per
    /// event; the rest goes on with the next ack or write event.
    fn pump(&mut self) {
        for _ in 0..SNAPSHOT_ROUNDS {
            if self.state != State::Snapshot {
                break;
            }
            self.pump_snapshot();
            let Some(s) = self.session.as_mut() else {
                return;
            };
            // SAFETY: an open connection of this peer.
            match unsafe { conn::flush(self.conn, s) } {
                Ok(true) => continue,
                Ok(false) => break,
                Err(()) => {
                    self.close("send() failed");
                    return;
                }
            }
        }
        self.write_out();
    }

    fn pump_snapshot(&mut self) {
        let e = self.engine();
        let max = e.frame_size();
        let cap = e.send_capacity();
        let now = current_msec();
        loop {
            let Some(s) = self.session.as_mut() else {
                return;
            };
            if s.outgoing().len() + max > cap {
                return;
            }
            let shared = s.shared_zones();
            let Some(&zone) = shared.get(self.snapshot_zone) else {
                // Every zone sent.
                if s.finish_snapshot().is_ok() {
                    status::get().add_msgs_out(1);
                }
                self.state = State::Live;
                ngx_log_error!(
                    NGX_LOG_INFO,
                    e.log,
                    "zone_sync: snapshot sent to node {}",
                    self.name
                );
                return;
            };
            let Ok(mut w) = s.begin_records(zone, true, max) else {
                return;
            };
            let mut n = 0u64;
            let done = e.zones[zone].snapshot(&mut self.cursor, now, usize::MAX, &mut |r| {
                if w.try_push(r) {
                    n += 1;
                    true
                } else {
                    false
                }
            });
            if let Some(seq) = w.finish() {
                self.in_flight.push_back(InFlight {
                    seq,
                    zone,
                    records: n,
                });
                status::get().add_msgs_out(1);
            } else if !done {
                // Not even one record fits a buffer: cannot happen for
                // records admitted at write time; skip it rather than spin.
                self.snapshot_zone += 1;
                self.cursor = SnapshotCursor::default();
            }
            if done {
                self.snapshot_zone += 1;
                self.cursor = SnapshotCursor::default();
            }
        }
    }

    /// Writes what is queued; re-arms events and the session timer.
    pub fn write_out(&mut self) {
        let c = self.conn;
        let Some(s) = self.session.as_mut() else {
            return;
        };
        // SAFETY: an open connection of this peer.
        let flushed = unsafe { conn::flush(c, s) };
        match flushed {
            Err(()) => self.close("send() failed"),
            Ok(all) => {
                if all && self.state == State::Closing {
                    self.drop_connection();
                    return;
                }
                // SAFETY: as above.
                if unsafe { conn::rearm(c, !all) }.is_err() {
                    self.close("could not arm events");
                    return;
                }
                self.arm_session_timer();
            }
        }
    }

    fn arm_session_timer(&mut self) {
        if self.state == State::Closing {
            return;
        }
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let next = s.next_timer();
        let now = current_msec();
        let delay = next.saturating_sub(now).clamp(1, 60_000);
        // SAFETY: our own timer event.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, delay as _) };
    }

    /// Handles every complete frame the session holds.
    fn on_frames(&mut self) -> Result<(), String> {
        loop {
            let Some(s) = self.session.as_mut() else {
                return Ok(());
            };
            let ev = match s.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(SessionError::SelfConnect) => return Err("self".into()),
                Err(err) => return Err(format!("protocol error: {err}")),
            };
            status::get().add_msgs_in(1);
            match ev {
                Event::PeerHello { node_id, .. } => {
                    if node_id == crate::node_id() {
                        return Err("self".into());
                    }
                    self.state = State::Snapshot;
                    let e = self.engine();
                    ngx_log_error!(
                        NGX_LOG_NOTICE,
                        e.log,
                        "zone_sync: node {} is online",
                        self.name
                    );
                    e.update_online();
                }
                Event::Ack { seq } => {
                    while self.in_flight.front().is_some_and(|f| f.seq <= seq) {
                        self.in_flight.pop_front();
                    }
                    self.engine().update_inflight();
                    self.acked = true;
                }
                Event::PeerError { code, text } => {
                    if code == ErrorCode::SELF {
                        return Err("self".into());
                    }
                    let text = String::from_utf8_lossy(&text[..text.len().min(128)]).into_owned();
                    return Err(format!("closed by peer: {} {}", code, text));
                }
                Event::Records { .. } | Event::SnapshotDone { .. } => {
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

    fn handle_error(&mut self, why: String) {
        if why == "self" {
            let e = self.engine();
            ngx_log_error!(
                NGX_LOG_INFO,
                e.log,
                "zone_sync: node {} is this node, not syncing with it",
                self.name
            );
            self.drop_connection();
            self.state = State::Myself;
            return;
        }
        self.close(&why);
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    let p = &mut *(*ev).data.cast::<Peer>();
    match p.state {
        State::Idle => p.connect(),
        State::Closing => p.drop_connection(),
        State::Myself | State::Connecting | State::Handshake => {}
        State::Hello | State::Snapshot | State::Live => {
            let Some(s) = p.session.as_mut() else { return };
            match s.poll_timers(current_msec()) {
                Ok(()) => p.write_out(),
                Err(SessionError::Timeout) => p.close("timed out"),
                Err(e) => p.close(&format!("{e}")),
            }
        }
    }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let p = &mut *(*c).data.cast::<Peer>();
    if p.state == State::Connecting {
        if (*ev).timedout() != 0 {
            p.close("connect timed out");
            return;
        }
        if (*ev).timer_set() != 0 {
            nginx_sys::ngx_del_timer(ev);
        }
        if let Err(why) = test_connect(c) {
            p.close(&why);
            return;
        }
        p.connected();
        return;
    }
    p.pump();
    // The socket took what was queued: changes held back for lack of
    // room in this peer's buffer can go now.
    if p.is_established() {
        p.engine().resume();
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let p = &mut *(*c).data.cast::<Peer>();
    if (*c).close() != 0 {
        // The worker is shutting down.
        p.begin_close();
        return;
    }
    if matches!(p.state, State::Connecting | State::Handshake) {
        return;
    }
    match conn::read(c, p) {
        _ if p.failure.is_some() => {
            let why = p.failure.take().unwrap_or_default();
            p.handle_error(why);
        }
        ReadResult::Again => {
            p.pump();
            if p.acked && p.is_established() {
                p.acked = false;
                p.engine().resume();
            }
        }
        // A listener with "ssl_verify_client on" completes the handshake,
        // then closes the connection if the certificate does not do: all
        // this side can tell is where it happened.
        ReadResult::Eof if p.state == State::Hello && !(*c).ssl.is_null() => p.close(
            "connection closed by peer after the TLS handshake, before its HELLO \
             (client certificate refused?)",
        ),
        ReadResult::Eof => p.close("connection closed by peer"),
        ReadResult::Error => p.close("recv() failed"),
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

/// `c->ssl->handler`: the handshake ended, well or not.
unsafe extern "C" fn on_handshake(c: *mut ngx_connection_t) {
    let p = &mut *(*c).data.cast::<Peer>();
    p.handshaked();
}

/// `c->ssl->save_session`: nginx's new-session callback got a session
/// (a TLS 1.3 ticket) on a verified connection.
unsafe extern "C" fn on_new_session(c: *mut ngx_connection_t) {
    let p = &mut *(*c).data.cast::<Peer>();
    if p.conn == c {
        p.remember_session();
    }
}

/// Log context of an outgoing connection: `, node: 127.0.0.1:9000` (after
/// ` while <action>` when there is one), as nginx's modules add theirs.
unsafe extern "C" fn log_context(log: *mut ngx_log_t, buf: *mut u8, len: usize) -> *mut u8 {
    let p = &*(*log).data.cast::<Peer>();
    let mut text = String::new();
    if !(*log).action.is_null() {
        text.push_str(" while ");
        text.push_str(&core::ffi::CStr::from_ptr((*log).action).to_string_lossy());
    }
    text.push_str(", node: ");
    text.push_str(&p.name);
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

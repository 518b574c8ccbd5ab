//! Connections accepted by the `zone_sync` server: another node pushing
//! its records to us. Any worker may accept them; records are applied to
//! the shared zones under their slab locks, then acknowledged.
//!
//! Until its HELLO is in, the other end is a stranger: its failures are
//! logged at `error` at most once per [`STRANGER_ERROR_MS`] in a worker,
//! at `info` otherwise. What waits to be sent is bounded: the socket's
//! send buffer is one `zone_sync_buffers` buffer (SO_SNDBUF), reading
//! stops while more than one buffer waits in the session, and a
//! connection whose output does not move for `zone_sync_timeout` is
//! closed.

use core::ffi::c_void;
use core::sync::atomic::{AtomicU64, Ordering};
use core::{mem, ptr};

use nginx_sys::{
    ngx_connection_t, ngx_event_t, ngx_stream_session_t, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
    NGX_STREAM_OK,
};
use ngx::ngx_log_error;
use zone_sync_core::session::{position_taken, Event, Role, Session, SessionConfig};
use zone_sync_core::wire::ErrorCode;

use super::conf::SrvConf;
use super::conn::{self, CloseReason, ReadResult, SendWatch};
use super::status;
use crate::kinds::{ApplyError, SyncZone};
use crate::ngx_ext::{current_msec, cycle, wall_ms};

/// Strangers' failures (before HELLO) logged at `error`: one per this many
/// ms in a worker; the others at `info`.
const STRANGER_ERROR_MS: u64 = 10_000;

/// When a stranger's failure was last logged at `error` in this worker.
static STRANGER_LOGGED: AtomicU64 = AtomicU64::new(0);

struct Inbound {
    s: *mut ngx_stream_session_t,
    c: *mut ngx_connection_t,
    session: Session,
    zones: Vec<&'static dyn SyncZone>,
    /// Zones a record of which could not be stored on this connection:
    /// their position in the peer's history no longer advances.
    lost: Vec<bool>,
    timer: ngx_event_t,
    failure: Option<CloseReason>,
    /// The peer's address, for logs.
    name: String,
    /// Whether the first bytes were checked for a TLS handshake.
    checked_tls: bool,
    /// The most that may wait to be sent before reading stops.
    out_limit: usize,
    /// Reading stopped until the output drains.
    read_paused: bool,
    timeout: u64,
    watch: SendWatch,
}

/// The stream content handler installed by the `zone_sync` directive.
pub unsafe extern "C" fn handler(s: *mut ngx_stream_session_t) {
    let c = (*s).connection;
    if crate::ngx_ext::exiting() {
        // A connection whose TLS handshake ended after this worker began
        // to exit: nothing would close it; the peer retries elsewhere.
        if !(*c).ssl.is_null() {
            (*(*c).ssl).set_no_wait_shutdown(1);
        }
        nginx_sys::ngx_stream_finalize_session(s, NGX_STREAM_OK as usize);
        return;
    }
    let module = &*ptr::addr_of!(super::ngx_stream_zone_sync_module);
    let conf = &*(*(*s).srv_conf.add(module.ctx_index)).cast::<SrvConf>();

    let zones: Vec<&'static dyn SyncZone> = crate::registry::zones(cycle())
        .into_iter()
        .filter(|z| z.synced())
        .collect();
    let cfg = SessionConfig {
        node_id: crate::node_id(),
        timeout_ms: conf.timeout as u64,
        max_frame: conf.recv_buffer_size,
        zones: zones.iter().map(|z| crate::kinds::zone_info(*z)).collect(),
    };
    let name = String::from_utf8_lossy(crate::ngx_ext::str_bytes(&(*c).addr_text)).into_owned();
    let ib = Box::into_raw(Box::new(Inbound {
        s,
        c,
        session: Session::new(Role::Server, cfg, current_msec()),
        lost: vec![false; zones.len()],
        zones,
        timer: mem::zeroed(),
        failure: None,
        name,
        checked_tls: false,
        out_limit: conf.bufs.size,
        read_paused: false,
        timeout: conf.timeout as u64,
        watch: SendWatch::default(),
    }));

    let cln = nginx_sys::ngx_pool_cleanup_add((*c).pool, 0);
    if cln.is_null() {
        drop(Box::from_raw(ib));
        nginx_sys::ngx_stream_finalize_session(
            s,
            nginx_sys::NGX_STREAM_INTERNAL_SERVER_ERROR as usize,
        );
        return;
    }
    (*cln).handler = Some(cleanup);
    (*cln).data = ib.cast();

    (*ib).timer.handler = Some(on_timer);
    (*ib).timer.data = ib.cast();
    (*ib).timer.log = (*c).log;
    (*ib).timer.set_cancelable(1);

    // What this side sends is small (HELLO, ACKs, heartbeats): a fixed
    // kernel send buffer, instead of one autotuned to megabytes, keeps
    // what a peer that does not read makes us hold bounded.
    let sndbuf = conf.bufs.size as libc::c_int;
    libc::setsockopt(
        (*c).fd,
        libc::SOL_SOCKET,
        libc::SO_SNDBUF,
        (&sndbuf as *const libc::c_int).cast(),
        mem::size_of::<libc::c_int>() as libc::socklen_t,
    );

    (*c).data = ib.cast();
    (*(*c).read).handler = Some(on_read);
    (*(*c).write).handler = Some(on_write);
    (*c).set_idle(1);
    ngx_log_error!(
        NGX_LOG_INFO,
        (*c).log,
        "zone_sync: connection from {}",
        (*ib).name
    );
    on_read((*c).read);
}

unsafe extern "C" fn cleanup(data: *mut c_void) {
    let ib = Box::from_raw(data.cast::<Inbound>());
    let mut ib = ib;
    if ib.timer.timer_set() != 0 {
        nginx_sys::ngx_del_timer(&mut ib.timer);
    }
}

impl Inbound {
    /// Ends the connection, logging why; `self` is freed by the pool
    /// cleanup.
    unsafe fn finish(&mut self, why: CloseReason) {
        let level = match why {
            CloseReason::Exiting => 0,
            CloseReason::Myself
            | CloseReason::PeerShutdown
            | CloseReason::Eof
            | CloseReason::TlsOnPlain => NGX_LOG_INFO,
            _ if self.session.peer_node_id().is_some() => NGX_LOG_ERR,
            _ => {
                // A stranger: rate-limited at error.
                let now = current_msec();
                let last = STRANGER_LOGGED.load(Ordering::Relaxed);
                if last == 0 || now.saturating_sub(last) >= STRANGER_ERROR_MS {
                    STRANGER_LOGGED.store(now.max(1), Ordering::Relaxed);
                    NGX_LOG_ERR
                } else {
                    NGX_LOG_INFO
                }
            }
        };
        if level != 0 {
            let why = match why {
                CloseReason::Eof => "connection closed".to_string(),
                why => why.to_string(),
            };
            ngx_log_error!(
                level,
                (*self.c).log,
                "zone_sync: node {}: {}",
                self.name,
                why
            );
        }
        // Last words (an ERROR frame) if the session has any.
        let _ = conn::flush(self.c, &mut self.session, &mut self.watch);
        // Nothing more is read: do not wait for the peer's close_notify
        // (whatever the peer still sends would fail SSL_shutdown(), which
        // nginx < 1.25 logs at crit).
        if !(*self.c).ssl.is_null() {
            (*(*self.c).ssl).set_no_wait_shutdown(1);
        }
        nginx_sys::ngx_stream_finalize_session(self.s, NGX_STREAM_OK as usize);
    }

    /// Writes what waits; false if the connection was closed.
    unsafe fn write_out(&mut self) -> bool {
        match conn::flush(self.c, &mut self.session, &mut self.watch) {
            Err(()) => {
                self.finish(CloseReason::failed("send() failed"));
                false
            }
            Ok(all) => {
                if conn::rearm(self.c, !all).is_err() {
                    self.finish(CloseReason::failed("could not arm events"));
                    return false;
                }
                let mut next = self.session.next_timer();
                if let Some(d) = self.watch.deadline(self.timeout) {
                    next = next.min(d);
                }
                let delay = next.saturating_sub(current_msec()).clamp(1, 60_000);
                nginx_sys::ngx_add_timer(&mut self.timer, delay as _);
                true
            }
        }
    }

    /// Reads and handles what arrived, writing the answers, until the
    /// socket has nothing more or the output is full.
    unsafe fn process(&mut self) {
        loop {
            let r = conn::read(self.c, self);
            if let Some(why) = self.failure.take() {
                self.finish(why);
                return;
            }
            match r {
                ReadResult::Again => {
                    self.write_out();
                    return;
                }
                ReadResult::Paused => {
                    if !self.write_out() {
                        return;
                    }
                    if self.session.outgoing().len() >= self.out_limit {
                        // on_write reads on once the peer takes some.
                        self.read_paused = true;
                        return;
                    }
                }
                ReadResult::Eof => {
                    self.finish(CloseReason::Eof);
                    return;
                }
                ReadResult::Error => {
                    self.finish(CloseReason::failed("recv() failed"));
                    return;
                }
            }
        }
    }

    fn handle_frames(&mut self) -> Result<(), CloseReason> {
        loop {
            let ev = match self.session.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(e) => return Err(CloseReason::from_session(e)),
            };
            status::get().add_msgs_in(1);
            match ev {
                Event::PeerHello {
                    node_id,
                    shared_zones,
                } => {
                    let shared = shared_zones.len();
                    // Our HELLO tells the peer where we stand in its
                    // history of each zone, for it to resume from there.
                    let zones = &self.zones;
                    self.session
                        .reply_hello(&mut |zi| zones.get(zi).and_then(|z| z.position(node_id)));
                    // Our engine may be waiting to retry this node.
                    status::get()
                        .reconnect
                        .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                    super::engine::wake();
                    // SAFETY: the connection is open while frames arrive.
                    let log = unsafe { (*self.c).log };
                    ngx_log_error!(
                        NGX_LOG_NOTICE,
                        log,
                        "zone_sync: node {} (id {:016x}) connected, {} zone(s) shared",
                        self.name,
                        node_id,
                        shared
                    );
                }
                Event::Position { zone, seq, live } => {
                    // Every record before this frame is applied: we hold
                    // the peer's history of the zone up to `seq` (a live
                    // one: if we also heard every other member meanwhile).
                    let peer = self.session.peer_node_id().unwrap_or(0);
                    let epoch = self.session.peer_resume(zone).map_or(0, |r| r.epoch);
                    let all = status::get().all_online.load(Ordering::Relaxed) != 0;
                    if epoch != 0
                        && position_taken(live, all)
                        && !self.lost.get(zone).copied().unwrap_or(true)
                    {
                        self.zones[zone].set_position(peer, epoch, seq);
                    }
                }
                Event::Records { zone, frame } => {
                    let z = self.zones[zone];
                    let now = current_msec();
                    let wall = wall_ms();
                    let mut nomem = 0u32;
                    for rec in frame.records() {
                        let Ok(rec) = rec else { break };
                        match z.apply(&rec, now, wall) {
                            Ok(_) => {}
                            Err(ApplyError::NoMemory) => nomem += 1,
                            Err(ApplyError::Invalid) => {}
                        }
                    }
                    if nomem > 0 {
                        if let Some(l) = self.lost.get_mut(zone) {
                            *l = true;
                        }
                        // SAFETY: as above.
                        let log = unsafe { (*self.c).log };
                        ngx_log_error!(
                            NGX_LOG_ERR,
                            log,
                            "zone_sync: zone \"{}\" is too small: {} record(s) from node {} not stored",
                            String::from_utf8_lossy(z.name()),
                            nomem,
                            self.name
                        );
                    }
                }
                Event::SnapshotDone { .. } => {
                    // SAFETY: as above.
                    let log = unsafe { (*self.c).log };
                    ngx_log_error!(
                        NGX_LOG_INFO,
                        log,
                        "zone_sync: snapshot received from node {}",
                        self.name
                    );
                }
                Event::PeerError { code, text } => {
                    return Err(CloseReason::from_peer(code, text));
                }
                Event::Ack { .. } => {}
            }
        }
    }
}

impl conn::Endpoint for Inbound {
    fn session(&mut self) -> Option<&mut Session> {
        Some(&mut self.session)
    }
    fn on_frames(&mut self) -> bool {
        match self.handle_frames() {
            Ok(()) => true,
            Err(why) => {
                self.failure = Some(why);
                false
            }
        }
    }
    fn output_full(&mut self) -> bool {
        self.session.outgoing().len() >= self.out_limit
    }
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let ib = &mut *(*c).data.cast::<Inbound>();
    if (*c).close() != 0 {
        ib.session.close_with(ErrorCode::SHUTDOWN, "shutting down");
        ib.finish(CloseReason::Exiting);
        return;
    }
    if ib.read_paused {
        // on_write reads on once the output drains.
        return;
    }
    if !ib.checked_tls && (*c).ssl.is_null() {
        // A TLS node talking to a plaintext listener: say so, instead of
        // a "frame too large" made of a TLS record header.
        let mut head = [0u8; 3];
        let n = libc::recv((*c).fd, head.as_mut_ptr().cast(), 3, libc::MSG_PEEK);
        if n == 3 && head[0] == 0x16 && head[1] == 0x03 {
            ib.finish(CloseReason::TlsOnPlain);
            return;
        }
        ib.checked_tls = n == 3;
    }
    ib.process();
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let ib = &mut *(*c).data.cast::<Inbound>();
    if !ib.write_out() {
        return;
    }
    if ib.read_paused && ib.session.outgoing().len() < ib.out_limit {
        ib.read_paused = false;
        ib.process();
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    let ib = &mut *(*ev).data.cast::<Inbound>();
    let now = current_msec();
    if ib.watch.stalled(now, ib.timeout) {
        ib.finish(CloseReason::SendStalled);
        return;
    }
    match ib.session.poll_timers(now) {
        Ok(()) => {
            ib.write_out();
        }
        Err(e) => ib.finish(CloseReason::from_session(e)),
    }
}

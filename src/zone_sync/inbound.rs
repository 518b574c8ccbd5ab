//! Connections accepted by the `zone_sync` server: another node pushing
//! its records to us. Any worker may accept them; records are applied to
//! the shared zones under their slab locks, then acknowledged.

use core::ffi::c_void;
use core::{mem, ptr};

use nginx_sys::{
    ngx_connection_t, ngx_event_t, ngx_stream_session_t, NGX_LOG_ERR, NGX_LOG_INFO, NGX_LOG_NOTICE,
    NGX_STREAM_OK,
};
use ngx::ngx_log_error;
use zone_sync_core::session::{Event, Role, Session, SessionConfig, SessionError, ZoneInfo};
use zone_sync_core::wire::ErrorCode;

use super::conf::SrvConf;
use super::conn::{self, ReadResult};
use super::status;
use crate::kinds::{self, ApplyError, SyncZone};
use crate::ngx_ext::{current_msec, cycle, wall_ms};

struct Inbound {
    s: *mut ngx_stream_session_t,
    c: *mut ngx_connection_t,
    session: Session,
    zones: Vec<&'static dyn SyncZone>,
    timer: ngx_event_t,
    failure: Option<String>,
    /// The peer's address, for logs.
    name: String,
    /// Whether the first bytes were checked for a TLS handshake.
    checked_tls: bool,
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

    let zones: Vec<&'static dyn SyncZone> = kinds::zones(cycle())
        .into_iter()
        .filter(|z| z.synced())
        .collect();
    let cfg = SessionConfig {
        node_id: crate::node_id(),
        timeout_ms: conf.timeout as u64,
        max_frame: conf.recv_buffer_size,
        zones: zones
            .iter()
            .map(|z| ZoneInfo::new(z.name().to_vec(), z.kind(), z.kind_version()))
            .collect(),
    };
    let name = String::from_utf8_lossy(crate::ngx_ext::str_bytes(&(*c).addr_text)).into_owned();
    let ib = Box::into_raw(Box::new(Inbound {
        s,
        c,
        session: Session::new(Role::Server, cfg, current_msec()),
        zones,
        timer: mem::zeroed(),
        failure: None,
        name,
        checked_tls: false,
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
    /// Ends the connection; `self` is freed by the pool cleanup.
    unsafe fn finish(&mut self, level: u32, why: &str) {
        if level != 0 {
            ngx_log_error!(
                level,
                (*self.c).log,
                "zone_sync: node {}: {}",
                self.name,
                why
            );
        }
        // Last words (an ERROR frame) if the session has any.
        let _ = conn::flush(self.c, &mut self.session);
        // Nothing more is read: do not wait for the peer's close_notify
        // (whatever the peer still sends would fail SSL_shutdown(), which
        // nginx < 1.25 logs at crit).
        if !(*self.c).ssl.is_null() {
            (*(*self.c).ssl).set_no_wait_shutdown(1);
        }
        nginx_sys::ngx_stream_finalize_session(self.s, NGX_STREAM_OK as usize);
    }

    unsafe fn write_out(&mut self) -> bool {
        match conn::flush(self.c, &mut self.session) {
            Err(()) => {
                self.finish(NGX_LOG_ERR, "send() failed");
                false
            }
            Ok(all) => {
                if conn::rearm(self.c, !all).is_err() {
                    self.finish(NGX_LOG_ERR, "could not arm events");
                    return false;
                }
                let delay = self
                    .session
                    .next_timer()
                    .saturating_sub(current_msec())
                    .clamp(1, 60_000);
                nginx_sys::ngx_add_timer(&mut self.timer, delay as _);
                true
            }
        }
    }

    fn handle_frames(&mut self) -> Result<(), String> {
        loop {
            let ev = match self.session.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => return Ok(()),
                Err(SessionError::SelfConnect) => return Err("self".into()),
                Err(e) => return Err(format!("protocol error: {e}")),
            };
            status::get().add_msgs_in(1);
            match ev {
                Event::PeerHello {
                    node_id,
                    shared_zones,
                } => {
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
                        shared_zones.len()
                    );
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
                Event::PeerError { code, .. } if code == ErrorCode::SHUTDOWN => {
                    return Err("shutdown".into());
                }
                Event::PeerError { code, text } => {
                    let text = String::from_utf8_lossy(&text[..text.len().min(128)]).into_owned();
                    return Err(format!("closed by peer: {code} {text}"));
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
}

unsafe extern "C" fn on_read(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let ib = &mut *(*c).data.cast::<Inbound>();
    if (*c).close() != 0 {
        ib.session.close_with(ErrorCode::SHUTDOWN, "shutting down");
        ib.finish(0, "");
        return;
    }
    if !ib.checked_tls && (*c).ssl.is_null() {
        // A TLS node talking to a plaintext listener: say so, instead of
        // a "frame too large" made of a TLS record header.
        let mut head = [0u8; 3];
        let n = libc::recv((*c).fd, head.as_mut_ptr().cast(), 3, libc::MSG_PEEK);
        if n == 3 && head[0] == 0x16 && head[1] == 0x03 {
            ib.finish(
                NGX_LOG_INFO,
                "sent a TLS handshake, but this listener has no \"ssl\"",
            );
            return;
        }
        ib.checked_tls = n == 3;
    }
    let r = conn::read(c, ib);
    if let Some(why) = ib.failure.take() {
        if why == "self" {
            ib.finish(NGX_LOG_INFO, "is this node");
        } else if why == "shutdown" {
            ib.finish(NGX_LOG_INFO, "closed: the node is shutting down");
        } else {
            ib.finish(NGX_LOG_ERR, &why);
        }
        return;
    }
    match r {
        ReadResult::Again => {
            ib.write_out();
        }
        ReadResult::Eof => ib.finish(NGX_LOG_INFO, "connection closed"),
        ReadResult::Error => ib.finish(NGX_LOG_ERR, "recv() failed"),
    }
}

unsafe extern "C" fn on_write(ev: *mut ngx_event_t) {
    let c = (*ev).data.cast::<ngx_connection_t>();
    let ib = &mut *(*c).data.cast::<Inbound>();
    ib.write_out();
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    let ib = &mut *(*ev).data.cast::<Inbound>();
    match ib.session.poll_timers(current_msec()) {
        Ok(()) => {
            ib.write_out();
        }
        Err(SessionError::Timeout) => ib.finish(NGX_LOG_ERR, "timed out"),
        Err(e) => ib.finish(NGX_LOG_ERR, &format!("{e}")),
    }
}

//! `zone_sync_server name:port resolve`: the name is resolved with the
//! stream `resolver`, again each time the answer's validity runs out; every
//! address is a node. A failed or empty answer keeps the last known set.

use core::ptr;

use nginx_sys::{
    ngx_event_t, ngx_log_t, ngx_msec_t, ngx_resolver_ctx_t, ngx_resolver_t, ngx_str_t, NGX_LOG_ERR,
    NGX_LOG_NOTICE, NGX_OK,
};
use ngx::ngx_log_error;

use super::engine;
use super::members::NodeAddr;

/// Retry delay after a failed lookup.
const RETRY_MS: ngx_msec_t = 1000;

/// Owned by the engine, which passes its events on and applies the
/// member lists it returns.
pub struct Resolve {
    host: Vec<u8>,
    port: u16,
    resolver: *mut ngx_resolver_t,
    timeout: ngx_msec_t,
    timer: ngx_event_t,
    /// The lookup in progress, if any.
    ctx: *mut ngx_resolver_ctx_t,
    /// The last failure logged, to log a repeated one once.
    last_error: String,
}

impl Resolve {
    /// # Safety
    /// `resolver` belongs to the running cycle; `log` outlives the engine.
    pub unsafe fn new(
        host: &[u8],
        port: u16,
        resolver: *mut ngx_resolver_t,
        timeout: ngx_msec_t,
        log: *mut ngx_log_t,
    ) -> Box<Resolve> {
        let mut r = Box::new(Resolve {
            host: host.to_vec(),
            port,
            resolver,
            timeout,
            timer: core::mem::zeroed(),
            ctx: ptr::null_mut(),
            last_error: String::new(),
        });
        let me: *mut Resolve = &mut *r;
        r.timer.handler = Some(on_timer);
        r.timer.data = me.cast();
        r.timer.log = log;
        r.timer.set_cancelable(1);
        r
    }

    /// Resolves now, then whenever the answer expires; `nodes` is the
    /// current member count, for logs.
    pub fn start(&mut self, nodes: usize) {
        // SAFETY: our own timer; the resolver is the cycle's.
        unsafe { self.resolve(nodes) }
    }

    pub fn stop(&mut self) {
        if !self.ctx.is_null() {
            // SAFETY: a lookup of ours still in progress: cancel it so its
            // handler never runs.
            unsafe { nginx_sys::ngx_resolve_name_done(self.ctx) };
            self.ctx = ptr::null_mut();
        }
        if self.timer.timer_set() != 0 {
            // SAFETY: our own timer.
            unsafe { nginx_sys::ngx_del_timer(&mut self.timer) };
        }
    }

    /// Starts a lookup (from the timer).
    ///
    /// # Safety
    /// The resolver belongs to the running cycle.
    pub unsafe fn resolve(&mut self, nodes: usize) {
        if crate::ngx_ext::exiting() {
            return;
        }
        let ctx = nginx_sys::ngx_resolve_start(self.resolver, ptr::null_mut());
        if ctx.is_null() || ctx as isize == -1 {
            // -1 is NGX_NO_RESOLVER: refused by `nginx -t` already.
            self.failed("could not start a lookup".into(), nodes);
            return;
        }
        (*ctx).name = ngx_str_t {
            len: self.host.len(),
            data: self.host.as_mut_ptr(),
        };
        (*ctx).handler = Some(on_resolved);
        (*ctx).data = (self as *mut Resolve).cast();
        (*ctx).timeout = self.timeout;
        // The lookup's timeout timer must not keep an exiting worker alive
        // (for up to `resolver_timeout`): stop() cancels the lookup.
        (*ctx).set_cancelable(1);
        self.ctx = ctx;
        if nginx_sys::ngx_resolve_name(ctx) != NGX_OK as isize {
            // nginx has freed the context.
            self.ctx = ptr::null_mut();
            self.failed("lookup failed".into(), nodes);
        }
    }

    fn failed(&mut self, why: String, nodes: usize) {
        if self.last_error != why {
            ngx_log_error!(
                NGX_LOG_ERR,
                self.timer.log,
                "zone_sync: could not resolve \"{}\": {}, keeping the current {} node(s)",
                String::from_utf8_lossy(&self.host),
                why,
                nodes
            );
            self.last_error = why;
        }
        // SAFETY: our own timer.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, RETRY_MS) };
    }

    /// A lookup ended: the new member list, if it has one.
    ///
    /// # Safety
    /// `ctx` is this lookup's finished context.
    pub unsafe fn resolved(
        &mut self,
        ctx: *mut ngx_resolver_ctx_t,
        nodes: usize,
    ) -> Option<Vec<NodeAddr>> {
        self.ctx = ptr::null_mut();
        let state = (*ctx).state;
        if state != 0 || (*ctx).naddrs == 0 {
            let why = if state != 0 {
                core::ffi::CStr::from_ptr(nginx_sys::ngx_resolver_strerror(state).cast())
                    .to_string_lossy()
                    .into_owned()
            } else {
                "no addresses".into()
            };
            nginx_sys::ngx_resolve_name_done(ctx);
            self.failed(why, nodes);
            return None;
        }
        if !self.last_error.is_empty() {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                self.timer.log,
                "zone_sync: \"{}\" resolves again",
                String::from_utf8_lossy(&self.host)
            );
            self.last_error.clear();
        }

        let mut nodes = Vec::new();
        for a in core::slice::from_raw_parts((*ctx).addrs, (*ctx).naddrs) {
            let mut node = NodeAddr::new(a.sockaddr, a.socklen, b"");
            nginx_sys::ngx_inet_set_port(
                (&mut node.sockaddr as *mut nginx_sys::ngx_sockaddr_t).cast(),
                self.port,
            );
            let mut text = [0u8; 128];
            let n = nginx_sys::ngx_sock_ntop(
                (&mut node.sockaddr as *mut nginx_sys::ngx_sockaddr_t).cast(),
                node.socklen,
                text.as_mut_ptr(),
                text.len(),
                1,
            );
            node.name = text[..n].to_vec();
            nodes.push(node);
        }
        let valid = (*ctx).valid;
        nginx_sys::ngx_resolve_name_done(ctx);

        // The resolver serves its cache while `valid >= now` (seconds):
        // look up again the first second past that, or the lookup is a
        // cache hit that only postpones the query.
        let now = nginx_sys::ngx_time() as i64;
        let delay = ((valid + 1 - now).max(1) * 1000) as ngx_msec_t;
        nginx_sys::ngx_add_timer(&mut self.timer, delay);
        Some(nodes)
    }
}

unsafe extern "C" fn on_timer(_ev: *mut ngx_event_t) {
    engine::resolve_event(ptr::null_mut());
}

unsafe extern "C" fn on_resolved(ctx: *mut ngx_resolver_ctx_t) {
    engine::resolve_event(ctx);
}

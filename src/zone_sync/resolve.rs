//! `zone_sync_server name:port resolve`: the name is resolved with the
//! stream `resolver`, again each time the answer's validity runs out; every
//! address is a node. A failed or empty answer keeps the last known set.

use core::ptr;

use nginx_sys::{
    ngx_event_t, ngx_log_t, ngx_msec_t, ngx_resolver_ctx_t, ngx_resolver_t, ngx_str_t, NGX_LOG_ERR,
    NGX_LOG_NOTICE, NGX_OK,
};
use ngx::ngx_log_error;

use super::engine::Engine;
use super::members::NodeAddr;

/// Retry delay after a failed lookup.
const RETRY_MS: ngx_msec_t = 1000;

pub struct Resolve {
    engine: *mut Engine,
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
        engine: *mut Engine,
        host: &[u8],
        port: u16,
        resolver: *mut ngx_resolver_t,
        timeout: ngx_msec_t,
        log: *mut ngx_log_t,
    ) -> Box<Resolve> {
        let mut r = Box::new(Resolve {
            engine,
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

    /// Resolves now, then whenever the answer expires.
    pub fn start(&mut self) {
        // SAFETY: our own timer; the resolver is the cycle's.
        unsafe { self.resolve() }
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

    fn engine(&self) -> &'static mut Engine {
        // SAFETY: the engine owns this and outlives it; one thread.
        unsafe { &mut *self.engine }
    }

    unsafe fn resolve(&mut self) {
        if crate::ngx_ext::exiting() {
            return;
        }
        let ctx = nginx_sys::ngx_resolve_start(self.resolver, ptr::null_mut());
        if ctx.is_null() || ctx as isize == -1 {
            // -1 is NGX_NO_RESOLVER: refused by `nginx -t` already.
            self.failed("could not start a lookup".into());
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
            self.failed("lookup failed".into());
        }
    }

    fn failed(&mut self, why: String) {
        let e = self.engine();
        if self.last_error != why {
            ngx_log_error!(
                NGX_LOG_ERR,
                e.log,
                "zone_sync: could not resolve \"{}\": {}, keeping the current {} node(s)",
                String::from_utf8_lossy(&self.host),
                why,
                e.node_count()
            );
            self.last_error = why;
        }
        // SAFETY: our own timer.
        unsafe { nginx_sys::ngx_add_timer(&mut self.timer, RETRY_MS) };
    }

    unsafe fn resolved(&mut self, ctx: *mut ngx_resolver_ctx_t) {
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
            self.failed(why);
            return;
        }
        if !self.last_error.is_empty() {
            ngx_log_error!(
                NGX_LOG_NOTICE,
                self.engine().log,
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

        self.engine().set_members(nodes);

        // The resolver serves its cache while `valid >= now` (seconds):
        // look up again the first second past that, or the lookup is a
        // cache hit that only postpones the query.
        let now = nginx_sys::ngx_time() as i64;
        let delay = ((valid + 1 - now).max(1) * 1000) as ngx_msec_t;
        nginx_sys::ngx_add_timer(&mut self.timer, delay);
    }
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    let r = &mut *(*ev).data.cast::<Resolve>();
    r.resolve();
}

unsafe extern "C" fn on_resolved(ctx: *mut ngx_resolver_ctx_t) {
    let r = &mut *(*ctx).data.cast::<Resolve>();
    r.resolved(ctx);
}

//! The balancer: wraps the upstream's balancing method (round robin,
//! `least_conn`, `hash`, `ip_hash`: all keep nginx's round-robin peer data
//! first in theirs and free peers with the round-robin `free`). A request
//! that names a known server (by its session, or by its cookie) goes to
//! that server when it can take the request, exactly as round robin would
//! take it (`tried` bit, `down`, `max_fails`, `max_conns`); otherwise the
//! method chooses. Learning happens when the response is done, or when its
//! headers arrive with `header`.
//!
//! A server is named across nodes by what is the same on every node: its
//! configured name and its address (`"backend1:8080 10.0.0.1:8080"`),
//! never its place in one node's list. A session naming a server this node
//! does not have is left alone here.

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, Ordering};
use core::{mem, ptr};

use nginx_sys::{
    ngx_array_t, ngx_event_free_peer_pt, ngx_event_get_peer_pt, ngx_event_notify_peer_pt,
    ngx_event_save_peer_session_pt, ngx_event_set_peer_session_pt, ngx_http_request_t,
    ngx_http_upstream_rr_peer_data_t, ngx_http_upstream_rr_peer_t, ngx_http_upstream_rr_peers_t,
    ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_log_t, ngx_peer_connection_t, ngx_str_t,
    ngx_table_elt_t, ngx_uint_t, NGX_ERROR, NGX_LOG_WARN, NGX_OK, NGX_PEER_FAILED, NGX_PEER_NEXT,
};
use ngx::ngx_log_error;

use super::module::{
    conf_of, ctx_index, valid_samesite, Mode, StickyConf, EXPIRES_MAX, EXPIRES_UNSET,
};
use crate::ngx_ext::str_bytes;

/// What the request's session or cookie named, as seen on this node.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Named {
    /// Not looked for among the servers (yet).
    Unchecked,
    /// A server of this upstream (maybe unavailable right now).
    Here,
    /// No server of this upstream: another node's.
    Absent,
}

/// Per request, in the request pool; `u->peer.data` and the module's
/// request context point here.
#[repr(C)]
struct PeerData {
    original_data: *mut c_void,
    original_get: ngx_event_get_peer_pt,
    original_free: ngx_event_free_peer_pt,
    original_notify: ngx_event_notify_peer_pt,
    original_set_session: ngx_event_set_peer_session_pt,
    original_save_session: ngx_event_save_peer_session_pt,
    request: *mut ngx_http_request_t,
    conf: *const StickyConf,
    /// The session id the request carries (learn), or its cookie value.
    id: ngx_str_t,
    /// The server it names: a session's server identity, or (cookie) the
    /// cookie value. Empty when none is known.
    target: ngx_str_t,
    /// Lifetime left of the session looked up (ms).
    remaining: u64,
    named: Named,
    /// The server the last `get` chose: its identity (learn) or its
    /// cookie value (cookie).
    chosen: ngx_str_t,
    learned: bool,
    cookie_set: bool,
}

/// `init_upstream` of a sticky upstream: the method's, then ours around
/// its per-request init.
///
/// # Safety
/// Called by nginx for an upstream whose `sticky` set this function.
pub unsafe extern "C" fn init_upstream(
    cf: *mut nginx_sys::ngx_conf_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    let conf = &mut *conf_of(us);
    let Some(init) = conf.original_init_upstream else {
        return NGX_ERROR as ngx_int_t;
    };
    if init(cf, us) != NGX_OK as ngx_int_t {
        return NGX_ERROR as ngx_int_t;
    }
    conf.original_init_peer = (*us).peer.init;
    (*us).peer.init = Some(init_peer);
    NGX_OK as ngx_int_t
}

/// The first non-empty value of the variables `vars`.
unsafe fn first_value(r: *mut ngx_http_request_t, vars: *const ngx_array_t) -> ngx_str_t {
    for &index in crate::ngx_ext::array_slice::<ngx_int_t>(vars) {
        let v = nginx_sys::ngx_http_get_flushed_variable(r, index as ngx_uint_t);
        if v.is_null() || (*v).not_found() != 0 || (*v).len() == 0 {
            continue;
        }
        return ngx_str_t {
            len: (*v).len() as usize,
            data: (*v).data,
        };
    }
    ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    }
}

/// A copy of `b` in the request pool (empty on allocation failure: the
/// request then only loses its stickiness).
unsafe fn pool_str(r: *mut ngx_http_request_t, b: &[u8]) -> ngx_str_t {
    let empty = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    if b.is_empty() {
        return empty;
    }
    let p = nginx_sys::ngx_pnalloc((*r).pool, b.len()).cast::<u8>();
    if p.is_null() {
        return empty;
    }
    ptr::copy_nonoverlapping(b.as_ptr(), p, b.len());
    ngx_str_t {
        len: b.len(),
        data: p,
    }
}

unsafe extern "C" fn init_peer(
    r: *mut ngx_http_request_t,
    us: *mut ngx_http_upstream_srv_conf_t,
) -> ngx_int_t {
    let conf = &*conf_of(us);
    let Some(init) = conf.original_init_peer else {
        return NGX_ERROR as ngx_int_t;
    };
    let rc = init(r, us);
    if rc != NGX_OK as ngx_int_t {
        return rc;
    }
    let u = (*r).upstream;
    let rr_free = nginx_sys::ngx_http_upstream_free_round_robin_peer as *const () as usize;
    if (*u).peer.free.map(|f| f as usize) != Some(rr_free) {
        // A method that does not keep round-robin peer data (or one that
        // wraps sticky: `keepalive` must come after `sticky`).
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            ngx_log_error!(
                NGX_LOG_WARN,
                (*(*r).connection).log,
                "sticky: the balancing method of upstream \"{}\" does not support sticky",
                String::from_utf8_lossy(str_bytes(&(*us).host))
            );
        }
        return NGX_OK as ngx_int_t;
    }

    let p = nginx_sys::ngx_pcalloc((*r).pool, mem::size_of::<PeerData>()).cast::<PeerData>();
    if p.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    let p = &mut *p;
    p.original_data = (*u).peer.data;
    p.original_get = (*u).peer.get;
    p.original_free = (*u).peer.free;
    p.original_notify = (*u).peer.notify;
    p.original_set_session = (*u).peer.set_session;
    p.original_save_session = (*u).peer.save_session;
    p.request = r;
    p.conf = conf;
    p.named = Named::Unchecked;
    p.id = first_value(r, conf.lookup);
    if p.id.len != 0 {
        match conf.mode {
            Mode::Learn => {
                if let Some((target, remaining)) =
                    (*conf.zone).lookup(str_bytes(&p.id), |v, rem| (pool_str(r, v), rem))
                {
                    p.target = target;
                    p.remaining = remaining;
                }
            }
            Mode::Cookie => p.target = p.id,
            Mode::None => {}
        }
    }

    (*u).peer.data = (p as *mut PeerData).cast();
    (*u).peer.get = Some(get_peer);
    (*u).peer.free = Some(free_peer);
    if p.original_notify.is_some() {
        (*u).peer.notify = Some(notify_peer);
    }
    if p.original_set_session.is_some() {
        (*u).peer.set_session = Some(set_session);
    }
    if p.original_save_session.is_some() {
        (*u).peer.save_session = Some(save_session);
    }
    *(*r).ctx.add(ctx_index()) = (p as *mut PeerData).cast();
    NGX_OK as ngx_int_t
}

/// Hex MD5 of `b`: the cookie value of the server at address `b`.
fn md5_hex(b: &[u8]) -> [u8; 32] {
    let mut md = [0u8; 16];
    let mut n: core::ffi::c_uint = 0;
    // SAFETY: reads `b`, writes 16 bytes into `md`.
    unsafe {
        nginx_sys::EVP_Digest(
            b.as_ptr().cast(),
            b.len(),
            md.as_mut_ptr(),
            &mut n,
            nginx_sys::EVP_md5(),
            ptr::null_mut(),
        );
    }
    let mut out = [0u8; 32];
    for (i, x) in md.iter().enumerate() {
        out[2 * i] = b"0123456789abcdef"[(x >> 4) as usize];
        out[2 * i + 1] = b"0123456789abcdef"[(x & 15) as usize];
    }
    out
}

/// A server's identity across nodes: configured name, space, address.
unsafe fn identity(peer: *const ngx_http_upstream_rr_peer_t) -> Vec<u8> {
    let server = str_bytes(&(*peer).server);
    let name = str_bytes(&(*peer).name);
    [server, b" ", name].concat()
}

unsafe fn is_named(peer: *const ngx_http_upstream_rr_peer_t, mode: Mode, target: &[u8]) -> bool {
    match mode {
        Mode::Learn => {
            let server = str_bytes(&(*peer).server);
            let name = str_bytes(&(*peer).name);
            target.len() == server.len() + 1 + name.len()
                && target.starts_with(server)
                && target[server.len()] == b' '
                && target.ends_with(name)
        }
        Mode::Cookie => md5_hex(str_bytes(&(*peer).name)) == target,
        Mode::None => false,
    }
}

/// Round-robin peer list locking (`ngx_http_upstream_rr_peers_wlock`):
/// only upstreams with a `zone` are shared between workers.
struct PeersLock(*mut ngx_http_upstream_rr_peers_t);

impl PeersLock {
    unsafe fn write(peers: *mut ngx_http_upstream_rr_peers_t) -> Self {
        if !(*peers).shpool.is_null() {
            nginx_sys::ngx_rwlock_wlock(ptr::addr_of_mut!((*peers).rwlock));
        }
        PeersLock(peers)
    }
}

impl Drop for PeersLock {
    fn drop(&mut self) {
        // SAFETY: taken in `write` on the same live list.
        unsafe {
            if !(*self.0).shpool.is_null() {
                nginx_sys::ngx_rwlock_unlock(ptr::addr_of_mut!((*self.0).rwlock));
            }
        }
    }
}

/// Takes the server the request names if it can take the request, the
/// way round robin takes a server. Records whether that server is here.
unsafe fn pick(
    pc: *mut ngx_peer_connection_t,
    rrp: *mut ngx_http_upstream_rr_peer_data_t,
    p: &mut PeerData,
) -> bool {
    let mode = (*p.conf).mode;
    let target = str_bytes(&p.target);
    let peers = (*rrp).peers;
    if (*peers).single() != 0 {
        return false;
    }
    let _lock = PeersLock::write(peers);
    #[cfg(ngx_rr_peer_refs)]
    if !(*peers).config.is_null() && (*rrp).config != *(*peers).config {
        return false;
    }
    let now = (*nginx_sys::ngx_cached_time).sec;
    let bits = 8 * mem::size_of::<usize>();
    let mut peer = (*peers).peer;
    let mut i = 0usize;
    while !peer.is_null() {
        if is_named(peer, mode, target) {
            p.named = Named::Here;
            let (n, m) = (i / bits, 1usize << (i % bits));
            let pr = &mut *peer;
            if *(*rrp).tried.add(n) & m != 0
                || pr.down != 0
                || (pr.max_fails != 0
                    && pr.fails >= pr.max_fails
                    && now - pr.checked <= pr.fail_timeout)
                || (pr.max_conns != 0 && pr.conns >= pr.max_conns)
            {
                return false;
            }
            (*rrp).current = peer;
            #[cfg(ngx_rr_peer_refs)]
            {
                pr.refs += 1;
            }
            *(*rrp).tried.add(n) |= m;
            if now - pr.checked > pr.fail_timeout {
                pr.checked = now;
            }
            (*pc).sockaddr = pr.sockaddr;
            (*pc).socklen = pr.socklen;
            (*pc).name = &mut pr.name;
            (*pc).set_cached(0);
            (*pc).connection = ptr::null_mut();
            pr.conns += 1;
            return true;
        }
        peer = pr_next(peer);
        i += 1;
    }
    if p.named == Named::Unchecked {
        // A backup server is here too.
        let mut list = (*peers).next;
        while !list.is_null() {
            let mut peer = (*list).peer;
            while !peer.is_null() {
                if is_named(peer, mode, target) {
                    p.named = Named::Here;
                    return false;
                }
                peer = pr_next(peer);
            }
            list = (*list).next;
        }
        p.named = Named::Absent;
    }
    false
}

unsafe fn pr_next(peer: *mut ngx_http_upstream_rr_peer_t) -> *mut ngx_http_upstream_rr_peer_t {
    (*peer).next
}

unsafe extern "C" fn get_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    let p = &mut *data.cast::<PeerData>();
    let rrp = p.original_data.cast::<ngx_http_upstream_rr_peer_data_t>();
    if p.target.len != 0 && pick(pc, rrp, p) {
        // The server the request named: its identity or cookie value.
        p.chosen = p.target;
        return NGX_OK as ngx_int_t;
    }
    let rc = match p.original_get {
        Some(get) => get(pc, p.original_data),
        None => return NGX_ERROR as ngx_int_t,
    };
    if rc == NGX_OK as ngx_int_t && !(*rrp).current.is_null() {
        let peer = (*rrp).current;
        p.chosen = match (*p.conf).mode {
            Mode::Cookie => pool_str(p.request, &md5_hex(str_bytes(&(*peer).name))),
            _ => pool_str(p.request, &identity(peer)),
        };
    }
    rc
}

unsafe extern "C" fn free_peer(
    pc: *mut ngx_peer_connection_t,
    data: *mut c_void,
    state: ngx_uint_t,
) {
    let p = &mut *data.cast::<PeerData>();
    if state & (NGX_PEER_FAILED | NGX_PEER_NEXT) as ngx_uint_t == 0
        && (*p.conf).mode == Mode::Learn
        && !(*p.conf).header
    {
        learn(p, (*pc).log);
    }
    if let Some(free) = p.original_free {
        free(pc, p.original_data, state);
    }
}

unsafe extern "C" fn notify_peer(pc: *mut ngx_peer_connection_t, data: *mut c_void, t: ngx_uint_t) {
    let p = &*data.cast::<PeerData>();
    if let Some(notify) = p.original_notify {
        notify(pc, p.original_data, t);
    }
}

unsafe extern "C" fn set_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) -> ngx_int_t {
    let p = &*data.cast::<PeerData>();
    match p.original_set_session {
        Some(f) => f(pc, p.original_data),
        None => NGX_OK as ngx_int_t,
    }
}

unsafe extern "C" fn save_session(pc: *mut ngx_peer_connection_t, data: *mut c_void) {
    let p = &*data.cast::<PeerData>();
    if let Some(f) = p.original_save_session {
        f(pc, p.original_data);
    }
}

/// Learns (creates, moves or refreshes) the request's session for the
/// server that served it. A write goes to the zone only when something
/// changes: a new session, a session moved to another server (its own
/// was unavailable), or a session used after a tenth of its `timeout`
/// (the refresh every node sees).
unsafe fn learn(p: &mut PeerData, log: *mut ngx_log_t) {
    if p.learned || p.chosen.len == 0 {
        return;
    }
    p.learned = true;
    let conf = &*p.conf;
    let zone = &*conf.zone;
    let chosen = str_bytes(&p.chosen);
    let created = first_value(p.request, conf.create);
    let id = str_bytes(&p.id);
    let own = (p.target.len != 0).then(|| (str_bytes(&p.target), p.remaining));
    let due = |known: Option<(&[u8], u64)>| match known {
        None => true,
        Some((server, remaining)) => {
            server != chosen || zone.timeout.saturating_sub(remaining) >= zone.timeout / 10
        }
    };
    let (key, due) = if created.len != 0 {
        let key = str_bytes(&created);
        if key == id {
            if p.named == Named::Absent {
                return;
            }
            (key, due(own))
        } else {
            let found = zone.lookup(key, |server, remaining| due(Some((server, remaining))));
            (key, found.unwrap_or(true))
        }
    } else if !id.is_empty() && own.is_some() && p.named != Named::Absent {
        (id, due(own))
    } else {
        return;
    };
    if due {
        zone.learn(log, key, chosen);
    }
}

/// From the header filter: learns with `header`, sets the cookie of
/// `sticky cookie`. Err on allocation failure.
///
/// # Safety
/// `r` is a request in the header filter.
#[allow(clippy::result_unit_err)]
pub unsafe fn on_response_header(r: *mut ngx_http_request_t) -> Result<(), ()> {
    let p = *(*r).ctx.add(ctx_index());
    if p.is_null() {
        return Ok(());
    }
    let p = &mut *p.cast::<PeerData>();
    let conf = &*p.conf;
    match conf.mode {
        // Only for a response from the server (not for nginx's own 502
        // after the last server failed).
        Mode::Learn
            if conf.header
                && !(*r).upstream.is_null()
                && (*(*r).upstream).headers_in.status_n != 0 =>
        {
            learn(p, (*(*r).connection).log)
        }
        Mode::Cookie if p.chosen.len != 0 && !p.cookie_set => {
            p.cookie_set = true;
            return set_cookie(r, conf, str_bytes(&p.chosen));
        }
        _ => {}
    }
    Ok(())
}

/// Evaluates a complex value.
unsafe fn complex<'a>(
    r: *mut ngx_http_request_t,
    cv: *mut nginx_sys::ngx_http_complex_value_t,
) -> Result<&'a [u8], ()> {
    let mut s = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    if nginx_sys::ngx_http_complex_value(r, cv, &mut s) != NGX_OK as ngx_int_t {
        return Err(());
    }
    Ok(str_bytes(&s))
}

/// The `Set-Cookie` value of `sticky cookie` for a server, as NGINX Plus
/// writes it: `name=value; expires=...; max-age=...; domain=...;
/// httponly; secure; samesite=...; path=...`.
unsafe fn cookie_value(
    r: *mut ngx_http_request_t,
    conf: &StickyConf,
    value: &[u8],
) -> Result<Vec<u8>, ()> {
    let c = &conf.cookie;
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(str_bytes(&c.name));
    out.push(b'=');
    out.extend_from_slice(value);
    if c.expires == EXPIRES_MAX {
        out.extend_from_slice(b"; expires=Thu, 31-Dec-37 23:55:55 GMT; max-age=315360000");
    } else if c.expires != EXPIRES_UNSET {
        let mut buf = [0u8; 64];
        let now = (*nginx_sys::ngx_cached_time).sec;
        let end = nginx_sys::ngx_http_cookie_time(buf.as_mut_ptr(), now + c.expires);
        let len = end.offset_from(buf.as_ptr()) as usize;
        out.extend_from_slice(b"; expires=");
        out.extend_from_slice(&buf[..len]);
        out.extend_from_slice(format!("; max-age={}", c.expires).as_bytes());
    }
    if !c.domain.is_null() {
        let d = complex(r, c.domain)?;
        if !d.is_empty() {
            out.extend_from_slice(b"; domain=");
            out.extend_from_slice(d);
        }
    }
    if c.httponly {
        out.extend_from_slice(b"; httponly");
    }
    if c.secure {
        out.extend_from_slice(b"; secure");
    }
    if !c.samesite.is_null() {
        let mut s = complex(r, c.samesite)?;
        if !(*c.samesite).lengths.is_null() && !s.is_empty() && !valid_samesite(s) {
            s = b"strict";
        }
        if !s.is_empty() {
            out.extend_from_slice(b"; samesite=");
            out.extend_from_slice(s);
        }
    }
    out.extend_from_slice(str_bytes(&c.path));
    Ok(out)
}

unsafe fn set_cookie(
    r: *mut ngx_http_request_t,
    conf: &StickyConf,
    value: &[u8],
) -> Result<(), ()> {
    let text = cookie_value(r, conf, value)?;
    let v = pool_str(r, &text);
    if v.len == 0 {
        return Err(());
    }
    let h = nginx_sys::ngx_list_push(ptr::addr_of_mut!((*r).headers_out.headers))
        .cast::<ngx_table_elt_t>();
    if h.is_null() {
        return Err(());
    }
    (*h).hash = 1;
    (*h).key = ngx_str_t {
        len: 10,
        data: b"Set-Cookie".as_ptr().cast_mut(),
    };
    (*h).value = v;
    (*h).lowcase_key = ptr::null_mut();
    #[cfg(ngx_1_23)]
    {
        (*h).next = ptr::null_mut();
    }
    Ok(())
}

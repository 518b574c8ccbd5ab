//! TLS on an outgoing sync connection, with nginx's own SSL layer as the
//! stream proxy uses it: create the SSL connection from the context built
//! at configuration time (`ssl.rs`), send SNI if asked, resume the last
//! session with that node, handshake, then verify the certificate chain
//! and the name.

use core::ffi::CStr;
use nginx_sys::{ngx_connection_t, ngx_str_t, NGX_AGAIN, NGX_OK};

use super::conf::SrvConf;

pub use nginx_sys::SSL_SESSION;

/// Outcome of starting a handshake.
pub enum Start {
    /// Handshake complete (call [`finish`]).
    Done,
    /// In progress: `c->ssl->handler` is called when it completes.
    Again,
}

/// Starts TLS on a connected socket.
///
/// # Safety
/// `c` is a connected connection with a pool; `conf.ssl` is set; `name`
/// outlives the call; `session` is null or a session of this context.
pub unsafe fn start(
    c: *mut ngx_connection_t,
    conf: &SrvConf,
    name: &ngx_str_t,
    session: *mut SSL_SESSION,
) -> Result<Start, String> {
    let flags = (nginx_sys::NGX_SSL_BUFFER | nginx_sys::NGX_SSL_CLIENT) as usize;
    if nginx_sys::ngx_ssl_create_connection(conf.ssl, c, flags) != NGX_OK as isize {
        return Err("cannot create an SSL connection".into());
    }

    if conf.ssl_server_name == 1 && name.len > 0 && !is_ip_literal(name) {
        // SSL_set_tlsext_host_name() is a macro over SSL_ctrl(); the name
        // must be NUL-terminated.
        let mut host = crate::ngx_ext::str_bytes(name).to_vec();
        host.push(0);
        if nginx_sys::SSL_ctrl(
            (*(*c).ssl).connection,
            nginx_sys::SSL_CTRL_SET_TLSEXT_HOSTNAME as i32,
            nginx_sys::TLSEXT_NAMETYPE_host_name as i64,
            host.as_mut_ptr().cast(),
        ) == 0
        {
            return Err(format!(
                "SSL_set_tlsext_host_name(\"{}\") failed",
                String::from_utf8_lossy(&host[..host.len() - 1])
            ));
        }
    }

    if !session.is_null() && nginx_sys::ngx_ssl_set_session(c, session) != NGX_OK as isize {
        return Err("cannot set the SSL session".into());
    }

    match nginx_sys::ngx_ssl_handshake(c) {
        rc if rc == NGX_AGAIN as isize => Ok(Start::Again),
        _ => Ok(Start::Done),
    }
}

/// Checks a completed handshake: the connection is encrypted, and with
/// `zone_sync_ssl_verify on` the chain verified and the name matches.
///
/// # Safety
/// `c` is the connection `start` was called on.
pub unsafe fn finish(
    c: *mut ngx_connection_t,
    conf: &SrvConf,
    name: &ngx_str_t,
) -> Result<(), String> {
    if (*c).ssl.is_null() || (*(*c).ssl).handshaked() == 0 {
        return Err("SSL handshake failed".into());
    }
    if conf.ssl_verify == 1 {
        let rc = nginx_sys::SSL_get_verify_result((*(*c).ssl).connection);
        if rc != nginx_sys::X509_V_OK as i64 {
            let text = CStr::from_ptr(nginx_sys::X509_verify_cert_error_string(rc));
            return Err(format!(
                "certificate verify failed: ({}:{})",
                rc,
                text.to_string_lossy()
            ));
        }
        if !name_matches(c, name) {
            return Err(format!(
                "certificate does not match \"{}\"",
                String::from_utf8_lossy(crate::ngx_ext::str_bytes(name))
            ));
        }
    }
    Ok(())
}

/// Host names through nginx's own check; an IP address (the default name
/// of a resolved node) against the certificate's IP subjectAltNames, which
/// X509_check_host() does not look at.
unsafe fn name_matches(c: *mut ngx_connection_t, name: &ngx_str_t) -> bool {
    if !is_ip_literal(name) {
        let mut n = *name;
        return nginx_sys::ngx_ssl_check_host(c, &mut n) == NGX_OK as isize;
    }
    let cert = nginx_sys::SSL_get1_peer_certificate((*(*c).ssl).connection);
    if cert.is_null() {
        return false;
    }
    let ip = crate::ngx_ext::str_bytes(name);
    let ip: Vec<u8> = ip
        .iter()
        .copied()
        .filter(|&b| b != b'[' && b != b']')
        .chain([0])
        .collect();
    let ok = nginx_sys::X509_check_ip_asc(cert, ip.as_ptr().cast(), 0) == 1;
    nginx_sys::X509_free(cert);
    ok
}

/// The session to resume next time (caller owns it; free with
/// [`free_session`]), or null if the connection has none that can be
/// resumed: a TLS 1.3 handshake's own session cannot, the tickets the
/// server sends after it can (nginx hands each one to
/// `c->ssl->save_session`, during which this returns it).
///
/// # Safety
/// `c` has completed a handshake.
pub unsafe fn save_session(c: *mut ngx_connection_t) -> *mut SSL_SESSION {
    let s = nginx_sys::ngx_ssl_get_session(c);
    if !s.is_null() && nginx_sys::SSL_SESSION_is_resumable(s) == 0 {
        nginx_sys::SSL_SESSION_free(s);
        return core::ptr::null_mut();
    }
    s
}

/// # Safety
/// `s` is null or a session from [`save_session`], not used afterwards.
pub unsafe fn free_session(s: *mut SSL_SESSION) {
    if !s.is_null() {
        nginx_sys::SSL_SESSION_free(s);
    }
}

/// Closes TLS without waiting for the peer's close_notify.
///
/// # Safety
/// `c` is an open connection.
pub unsafe fn shutdown(c: *mut ngx_connection_t) {
    if !(*c).ssl.is_null() {
        (*(*c).ssl).set_no_wait_shutdown(1);
        nginx_sys::ngx_ssl_shutdown(c);
    }
}

/// SNI carries host names only (RFC 6066).
fn is_ip_literal(name: &ngx_str_t) -> bool {
    // SAFETY: a configuration string.
    let b = unsafe { crate::ngx_ext::str_bytes(name) };
    let s = String::from_utf8_lossy(b);
    s.parse::<std::net::IpAddr>().is_ok() || s.starts_with('[')
}

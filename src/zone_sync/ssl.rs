//! The client TLS context of outgoing sync connections, built at
//! configuration time from the `zone_sync_ssl_*` directives exactly as
//! nginx's stream proxy builds its own from `proxy_ssl_*`.

use core::mem;

use nginx_sys::{
    ngx_array_t, ngx_conf_t, ngx_log_t, ngx_pcalloc, ngx_ssl_t, ngx_str_t, NGX_LOG_EMERG, NGX_OK,
};
use ngx::ngx_log_error;

use super::conf::SrvConf;

/// What a failing nginx SSL function was doing, appended to its message by
/// [`log_context`] (nginx's own messages name the file but neither the
/// directive nor the configuration location).
struct Context {
    action: &'static str,
    at: *const str,
}

/// `ngx_log_t.handler` of the log given to nginx's SSL functions while
/// the context is built: appends " while <action> for server in file:line"
/// to every message, as nginx appends " while <action>" at run time.
unsafe extern "C" fn log_context(log: *mut ngx_log_t, buf: *mut u8, len: usize) -> *mut u8 {
    let ctx = &*(*log).data.cast::<Context>();
    let at = &*ctx.at;
    let s = if at.is_empty() {
        format!(" while {}", ctx.action)
    } else {
        format!(" while {} {}", ctx.action, at)
    };
    let n = s.len().min(len);
    core::ptr::copy_nonoverlapping(s.as_ptr(), buf, n);
    buf.add(n)
}

/// `zone_sync_ssl_password_file`: nginx's reader, its messages naming the
/// directive.
///
/// # Safety
/// Called from the directive handler with its argument.
pub unsafe fn read_password_file(cf: *mut ngx_conf_t, file: &mut ngx_str_t) -> *mut ngx_array_t {
    let mut ctx = Context {
        action: "reading \"zone_sync_ssl_password_file\"",
        at: "",
    };
    let saved = (*cf).log;
    let mut log: ngx_log_t = *saved;
    log.handler = Some(log_context);
    log.data = core::ptr::addr_of_mut!(ctx).cast();
    (*cf).log = &mut log;
    let passwords = nginx_sys::ngx_ssl_read_password_file(cf, file);
    (*cf).log = saved;
    passwords
}

/// Creates `conf.ssl`. nginx's own functions log the reason of a failure
/// (unreadable file, bad passphrase, unknown cipher) as `[emerg]`, with
/// the directive and the server's location (`at`, "for server in
/// file:line") appended.
///
/// # Safety
/// `cf` is the configuration being merged and `conf` the merged zone_sync
/// server configuration.
pub unsafe fn configure(cf: *mut ngx_conf_t, conf: &mut SrvConf, at: &str) -> Result<(), ()> {
    if conf.ssl_certificate.len != 0 && conf.ssl_certificate_key.len == 0 {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync_ssl_certificate\" requires \"zone_sync_ssl_certificate_key\" {}",
            at
        );
        return Err(());
    }
    if conf.ssl_certificate.len == 0 && conf.ssl_certificate_key.len != 0 {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync_ssl_certificate_key\" requires \"zone_sync_ssl_certificate\" {}",
            at
        );
        return Err(());
    }
    if conf.ssl_verify == 1 && conf.ssl_trusted_certificate.len == 0 {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync_ssl_verify\" requires \"zone_sync_ssl_trusted_certificate\" {}",
            at
        );
        return Err(());
    }

    let ssl = ngx_pcalloc((*cf).pool, mem::size_of::<ngx_ssl_t>()).cast::<ngx_ssl_t>();
    if ssl.is_null() {
        return Err(());
    }
    conf.ssl = ssl;

    // A copy of the configuration log with the context handler, for the
    // duration of this function only.
    let mut ctx = Context {
        action: "enabling \"zone_sync_ssl\"",
        at,
    };
    let mut log: ngx_log_t = *(*cf).log;
    log.handler = Some(log_context);
    log.data = core::ptr::addr_of_mut!(ctx).cast();
    (*ssl).log = &mut log;

    let rc = build(cf, conf, ssl, &mut ctx);

    (*ssl).log = (*cf).log;
    rc
}

unsafe fn build(
    cf: *mut ngx_conf_t,
    conf: &mut SrvConf,
    ssl: *mut ngx_ssl_t,
    ctx: *mut Context,
) -> Result<(), ()> {
    let ok = |rc: isize| {
        if rc == NGX_OK as isize {
            Ok(())
        } else {
            Err(())
        }
    };
    // `ctx` is read by the log handler through `ssl.log` during each call.
    let action = |a: &'static str| (*ctx).action = a;

    ok(nginx_sys::ngx_ssl_create(
        ssl,
        conf.ssl_protocols,
        core::ptr::null_mut(),
    ))?;

    // The context lives as long as the configuration cycle.
    let cln = nginx_sys::ngx_pool_cleanup_add((*cf).pool, 0);
    if cln.is_null() {
        nginx_sys::ngx_ssl_cleanup_ctx(ssl.cast());
        return Err(());
    }
    (*cln).handler = Some(nginx_sys::ngx_ssl_cleanup_ctx);
    (*cln).data = ssl.cast();

    action("setting \"zone_sync_ssl_ciphers\"");
    ok(nginx_sys::ngx_ssl_ciphers(
        cf,
        ssl,
        &mut conf.ssl_ciphers,
        0,
    ))?;

    if conf.ssl_certificate.len != 0 {
        action("loading \"zone_sync_ssl_certificate\" and \"zone_sync_ssl_certificate_key\"");
        ok(nginx_sys::ngx_ssl_certificate(
            cf,
            ssl,
            &mut conf.ssl_certificate,
            &mut conf.ssl_certificate_key,
            conf.ssl_passwords,
        ))?;
    }

    // Loaded whenever given, so that an unreadable file is refused by
    // `nginx -t` even while verification is off; the verification result is
    // only enforced with `zone_sync_ssl_verify on`.
    if conf.ssl_trusted_certificate.len != 0 {
        action("loading \"zone_sync_ssl_trusted_certificate\"");
        ok(nginx_sys::ngx_ssl_trusted_certificate(
            cf,
            ssl,
            &mut conf.ssl_trusted_certificate,
            conf.ssl_verify_depth as isize,
        ))?;
    }
    if conf.ssl_crl.len != 0 {
        action("loading \"zone_sync_ssl_crl\"");
        ok(nginx_sys::ngx_ssl_crl(cf, ssl, &mut conf.ssl_crl))?;
    }

    action("enabling \"zone_sync_ssl\"");
    ok(nginx_sys::ngx_ssl_client_session_cache(cf, ssl, 1))?;
    action("applying \"zone_sync_ssl_conf_command\"");
    ok(nginx_sys::ngx_ssl_conf_commands(
        cf,
        ssl,
        conf.ssl_conf_commands,
    ))?;
    Ok(())
}

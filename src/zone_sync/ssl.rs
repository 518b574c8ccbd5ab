//! The client TLS context of outgoing sync connections, built at
//! configuration time from the `zone_sync_ssl_*` directives exactly as
//! nginx's stream proxy builds its own from `proxy_ssl_*`.

use core::mem;

use nginx_sys::{ngx_conf_t, ngx_pcalloc, ngx_ssl_t, NGX_LOG_EMERG, NGX_OK};
use ngx::ngx_conf_log_error;

use super::conf::SrvConf;

/// Creates `conf.ssl`. nginx's own functions log the reason of a failure
/// (unreadable file, bad passphrase, unknown cipher) as `[emerg]`.
///
/// # Safety
/// `cf` is the configuration being merged and `conf` the merged zone_sync
/// server configuration.
pub unsafe fn configure(cf: *mut ngx_conf_t, conf: &mut SrvConf) -> Result<(), ()> {
    let ok = |rc: isize| {
        if rc == NGX_OK as isize {
            Ok(())
        } else {
            Err(())
        }
    };

    let ssl = ngx_pcalloc((*cf).pool, mem::size_of::<ngx_ssl_t>()).cast::<ngx_ssl_t>();
    if ssl.is_null() {
        return Err(());
    }
    (*ssl).log = (*cf).log;
    conf.ssl = ssl;

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

    ok(nginx_sys::ngx_ssl_ciphers(
        cf,
        ssl,
        &mut conf.ssl_ciphers,
        0,
    ))?;

    if conf.ssl_certificate.len != 0 {
        if conf.ssl_certificate_key.len == 0 {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "no \"zone_sync_ssl_certificate_key\" is defined for certificate \"{}\"",
                String::from_utf8_lossy(crate::ngx_ext::str_bytes(&conf.ssl_certificate))
            );
            return Err(());
        }
        ok(nginx_sys::ngx_ssl_certificate(
            cf,
            ssl,
            &mut conf.ssl_certificate,
            &mut conf.ssl_certificate_key,
            conf.ssl_passwords,
        ))?;
    } else if conf.ssl_certificate_key.len != 0 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "no \"zone_sync_ssl_certificate\" is defined for key \"{}\"",
            String::from_utf8_lossy(crate::ngx_ext::str_bytes(&conf.ssl_certificate_key))
        );
        return Err(());
    }

    if conf.ssl_verify == 1 && conf.ssl_trusted_certificate.len == 0 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "no \"zone_sync_ssl_trusted_certificate\" for \"zone_sync_ssl_verify\""
        );
        return Err(());
    }
    // Loaded whenever given, so that an unreadable file is refused by
    // `nginx -t` even while verification is off; the verification result is
    // only enforced with `zone_sync_ssl_verify on`.
    if conf.ssl_trusted_certificate.len != 0 {
        ok(nginx_sys::ngx_ssl_trusted_certificate(
            cf,
            ssl,
            &mut conf.ssl_trusted_certificate,
            conf.ssl_verify_depth as isize,
        ))?;
    }
    if conf.ssl_crl.len != 0 {
        ok(nginx_sys::ngx_ssl_crl(cf, ssl, &mut conf.ssl_crl))?;
    }

    ok(nginx_sys::ngx_ssl_client_session_cache(cf, ssl, 1))?;
    ok(nginx_sys::ngx_ssl_conf_commands(
        cf,
        ssl,
        conf.ssl_conf_commands,
    ))?;
    Ok(())
}

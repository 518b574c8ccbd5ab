//! The `keyval` variable, common to http and stream: directive parsing and
//! the get/set logic once the key has been evaluated.

use core::ffi::{c_char, c_void};
use core::{mem, ptr};

use nginx_sys::{
    ngx_conf_t, ngx_int_t, ngx_log_t, ngx_pnalloc, ngx_pool_t, ngx_str_t, ngx_variable_value_t,
    NGX_LOG_EMERG, NGX_LOG_ERR, NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_log_error};
use zone_sync_core::keyval_key;

use super::index;
use super::zone::{self, KeyvalZone};
use crate::ngx_ext::{current_msec, str_bytes, CONF_ERROR};

/// One `keyval` directive; the variable's `data` points here.
#[repr(C)]
pub struct KeyvalVar {
    pub zone: *mut KeyvalZone,
    /// An `ngx_http_complex_value_t` or `ngx_stream_complex_value_t`.
    pub key: *mut c_void,
}

/// Parses `keyval key $variable zone=name;` up to compiling the key, which
/// the caller does with its own module's complex values.
///
/// # Safety
/// Called from a directive handler; `args` are its arguments.
pub unsafe fn parse(
    cf: *mut ngx_conf_t,
    args: &[ngx_str_t],
    tag: *mut c_void,
    what: &'static str,
    cv_size: usize,
) -> Option<(*mut KeyvalVar, ngx_str_t)> {
    let var = str_bytes(&args[2]);
    if var.len() < 2 || var[0] != b'$' {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid variable name \"{}\" in \"keyval\" directive",
            String::from_utf8_lossy(var)
        );
        return None;
    }
    let zarg = str_bytes(&args[3]);
    let Some(zname) = zarg.strip_prefix(b"zone=").filter(|z| !z.is_empty()) else {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid parameter \"{}\" in \"keyval\" directive, expected \"zone=name\"",
            String::from_utf8_lossy(zarg)
        );
        return None;
    };
    let name = ngx_str_t {
        len: zname.len(),
        data: args[3].data.add(5),
    };
    let z = zone::reference(cf, &name, 0, tag, what)?;

    let kv = nginx_sys::ngx_pcalloc((*cf).pool, mem::size_of::<KeyvalVar>()).cast::<KeyvalVar>();
    let cv = nginx_sys::ngx_pcalloc((*cf).pool, cv_size);
    if kv.is_null() || cv.is_null() {
        return None;
    }
    (*kv).zone = z;
    (*kv).key = cv;
    Some((
        kv,
        ngx_str_t {
            len: var.len() - 1,
            data: args[2].data.add(1),
        },
    ))
}

/// A variable already bound by another `keyval`.
///
/// # Safety
/// Called from a directive handler.
pub unsafe fn duplicate(cf: *mut ngx_conf_t, name: &ngx_str_t) -> *mut c_char {
    ngx_conf_log_error!(
        NGX_LOG_EMERG,
        cf,
        "variable \"${}\" is already defined",
        String::from_utf8_lossy(str_bytes(name))
    );
    CONF_ERROR
}

/// Reads the value under `key` into `v` (copied into `pool`); an absent key
/// reads as an empty value.
///
/// # Safety
/// `pool` is the request's or session's pool.
pub unsafe fn get(
    kv: &KeyvalVar,
    key: &ngx_str_t,
    pool: *mut ngx_pool_t,
    v: &mut ngx_variable_value_t,
) -> ngx_int_t {
    let z = &*kv.zone;
    let mut data: *mut u8 = ptr::null_mut();
    let mut len = 0usize;
    if let Some(store) = z.store() {
        // Matched by the zone's type (exact, network, prefix).
        let copied = index::lookup(store, str_bytes(key), current_msec(), |value, _| {
            if value.is_empty() {
                return true;
            }
            let p = ngx_pnalloc(pool, value.len()).cast::<u8>();
            if p.is_null() {
                return false;
            }
            ptr::copy_nonoverlapping(value.as_ptr(), p, value.len());
            data = p;
            len = value.len();
            true
        });
        if copied == Some(false) {
            return nginx_sys::NGX_ERROR as ngx_int_t;
        }
    }
    v.set_len(len as u32);
    v.set_valid(1);
    v.set_no_cacheable(1);
    v.set_not_found(0);
    v.data = if data.is_null() {
        c"".as_ptr().cast_mut().cast()
    } else {
        data
    };
    NGX_OK as ngx_int_t
}

/// Writes the assigned value under `key`; assigning an empty value deletes
/// the key (an absent key reads as empty anyway, and this way a deny list
/// entry can be lifted from the configuration). An empty key is ignored, as
/// nginx ignores empty keys in its other key-value modules.
///
/// # Safety
/// `v` is the value being assigned; `log` the connection's log.
pub unsafe fn set(kv: &KeyvalVar, key: &ngx_str_t, v: &ngx_variable_value_t, log: *mut ngx_log_t) {
    if key.len == 0 {
        return;
    }
    let z = &*kv.zone;
    let text = str_bytes(key);
    let Some(key) = keyval_key::stored_key(z.ty, text) else {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "keyval zone \"{}\": invalid key \"{}\" for type={}",
            String::from_utf8_lossy(z.name()),
            String::from_utf8_lossy(&text[..text.len().min(64)]),
            z.ty.name()
        );
        return;
    };
    if v.len() == 0 || v.data.is_null() {
        z.delete(&key);
        return;
    }
    let value = core::slice::from_raw_parts(v.data, v.len() as usize);
    // Failures are logged by the zone.
    let _ = z.set(log, &key, value, None);
}

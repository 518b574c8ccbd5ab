//! Small pieces of nginx C API that the `ngx` crate (0.5.1) does not wrap:
//! configuration sentinels and merge helpers, stream-module accessors, and
//! conversions between `ngx_str_t` and Rust slices.

use core::ffi::{c_char, c_void};
use core::{ptr, slice};

use nginx_sys::{
    ngx_array_t, ngx_conf_t, ngx_cycle_t, ngx_flag_t, ngx_module_t, ngx_msec_t, ngx_str_t,
    ngx_stream_conf_ctx_t, ngx_uint_t, NGX_CONF_UNSET,
};

pub const CONF_UNSET_FLAG: ngx_flag_t = NGX_CONF_UNSET as ngx_flag_t;
pub const CONF_UNSET_UINT: ngx_uint_t = NGX_CONF_UNSET as ngx_uint_t;
pub const CONF_UNSET_MSEC: ngx_msec_t = NGX_CONF_UNSET as ngx_msec_t;
pub const CONF_UNSET_SIZE: usize = NGX_CONF_UNSET as usize;
pub const CONF_UNSET_PTR: *mut c_void = NGX_CONF_UNSET as isize as *mut c_void;

/// `NGX_CONF_OK` / `NGX_CONF_ERROR` as returned by directive handlers.
pub const CONF_OK: *mut c_char = ptr::null_mut();
pub const CONF_ERROR: *mut c_char = NGX_CONF_UNSET as isize as *mut c_char;

/// A static C string returned from a directive handler: nginx prints it as
/// `"<directive>" <text> in <file>:<line>`.
pub fn conf_msg(s: &'static core::ffi::CStr) -> *mut c_char {
    s.as_ptr().cast_mut()
}

/// The same merge rules as nginx's `ngx_conf_merge_*_value` macros.
pub fn merge_flag(conf: &mut ngx_flag_t, prev: ngx_flag_t, default: ngx_flag_t) {
    if *conf == CONF_UNSET_FLAG {
        *conf = if prev == CONF_UNSET_FLAG {
            default
        } else {
            prev
        };
    }
}

pub fn merge_uint(conf: &mut ngx_uint_t, prev: ngx_uint_t, default: ngx_uint_t) {
    if *conf == CONF_UNSET_UINT {
        *conf = if prev == CONF_UNSET_UINT {
            default
        } else {
            prev
        };
    }
}

pub fn merge_msec(conf: &mut ngx_msec_t, prev: ngx_msec_t, default: ngx_msec_t) {
    if *conf == CONF_UNSET_MSEC {
        *conf = if prev == CONF_UNSET_MSEC {
            default
        } else {
            prev
        };
    }
}

pub fn merge_size(conf: &mut usize, prev: usize, default: usize) {
    if *conf == CONF_UNSET_SIZE {
        *conf = if prev == CONF_UNSET_SIZE {
            default
        } else {
            prev
        };
    }
}

/// `ngx_conf_merge_str_value`: a null string is "unset". The default is a
/// C string because nginx passes such values to C APIs as they are
/// (`ngx_ssl_ciphers` hands `data` to OpenSSL).
pub fn merge_str(conf: &mut ngx_str_t, prev: ngx_str_t, default: &'static core::ffi::CStr) {
    if conf.data.is_null() {
        if !prev.data.is_null() {
            *conf = prev;
        } else {
            conf.len = default.count_bytes();
            conf.data = default.as_ptr().cast_mut().cast();
        }
    }
}

/// `ngx_conf_merge_ptr_value` for array pointers.
pub fn merge_ptr<T>(conf: &mut *mut T, prev: *mut T, default: *mut T) {
    if *conf as *mut c_void == CONF_UNSET_PTR {
        *conf = if prev as *mut c_void == CONF_UNSET_PTR {
            default
        } else {
            prev
        };
    }
}

/// Bytes of an `ngx_str_t`.
///
/// # Safety
/// `s` must describe `len` readable bytes (or have `len == 0`) that outlive
/// the returned slice, as nginx guarantees for configuration strings.
pub unsafe fn str_bytes<'a>(s: &ngx_str_t) -> &'a [u8] {
    if s.len == 0 || s.data.is_null() {
        &[]
    } else {
        // SAFETY: guaranteed by the caller.
        unsafe { slice::from_raw_parts(s.data, s.len) }
    }
}

/// Arguments of the directive being parsed, the directive name first.
///
/// # Safety
/// `cf` must be the configuration being parsed, inside a directive handler.
pub unsafe fn conf_args<'a>(cf: *mut ngx_conf_t) -> &'a [ngx_str_t] {
    // SAFETY: while a handler runs, cf->args is an array of ngx_str_t.
    unsafe { array_slice((*cf).args) }
}

/// Elements of an `ngx_array_t`.
///
/// # Safety
/// `a` is null or an array whose elements are of type `T`.
pub unsafe fn array_slice<'a, T>(a: *const ngx_array_t) -> &'a [T] {
    if a.is_null() || (*a).nelts == 0 {
        return &[];
    }
    // SAFETY: the array holds nelts initialised elements of T.
    unsafe { slice::from_raw_parts((*a).elts.cast::<T>(), (*a).nelts) }
}

/// `ngx_stream_conf_get_module_srv_conf(cf, module)`.
///
/// # Safety
/// `cf` must be inside the `stream` block (its ctx a `ngx_stream_conf_ctx_t`)
/// and `T` the srv conf type of `module`.
pub unsafe fn stream_srv_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx.cast::<ngx_stream_conf_ctx_t>();
    (*(*ctx).srv_conf.add(module.ctx_index)).cast()
}

/// `ngx_stream_conf_get_module_main_conf(cf, module)`.
///
/// # Safety
/// As for [`stream_srv_conf`], for the main conf.
pub unsafe fn stream_main_conf<T>(cf: *mut ngx_conf_t, module: &ngx_module_t) -> *mut T {
    let ctx = (*cf).ctx.cast::<ngx_stream_conf_ctx_t>();
    (*(*ctx).main_conf.add(module.ctx_index)).cast()
}

/// `ngx_stream_cycle_get_module_main_conf(cycle, module)`: null when the
/// cycle has no `stream` block.
///
/// # Safety
/// `cycle` must be a fully configured cycle and `T` the main conf type.
pub unsafe fn stream_cycle_main_conf<T>(
    cycle: *const ngx_cycle_t,
    module: &ngx_module_t,
) -> *mut T {
    // SAFETY: ngx_stream_module is nginx's own static; its index is set once
    // the module list is known, before any configuration is parsed.
    let index = unsafe { (*ptr::addr_of!(nginx_sys::ngx_stream_module)).index };
    let ctx = *(*cycle).conf_ctx.add(index) as *mut ngx_stream_conf_ctx_t;
    if ctx.is_null() {
        return ptr::null_mut();
    }
    (*(*ctx).main_conf.add(module.ctx_index)).cast()
}

/// The `ngx_cycle` global of the running process.
pub fn cycle() -> *mut ngx_cycle_t {
    // SAFETY: nginx sets ngx_cycle before loading any module code and only
    // replaces it (on reload) between event loop iterations.
    unsafe { nginx_sys::ngx_cycle as *mut ngx_cycle_t }
}

/// True in the one process that runs cluster-wide background work: worker 0,
/// or the only process with `master_process off`.
pub fn is_worker_zero() -> bool {
    // SAFETY: plain reads of nginx's process globals, set before init_process.
    unsafe {
        let process = nginx_sys::ngx_process as u32;
        process == nginx_sys::NGX_PROCESS_SINGLE
            || (process == nginx_sys::NGX_PROCESS_WORKER && nginx_sys::ngx_worker == 0)
    }
}

/// Milliseconds since the Unix epoch, from nginx's cached time.
pub fn wall_ms() -> u64 {
    // SAFETY: ngx_timeofday() points at the cached time slot, updated in place
    // by the same thread.
    unsafe {
        let tp = *ptr::addr_of!(nginx_sys::ngx_cached_time);
        (*tp).sec as u64 * 1000 + (*tp).msec as u64
    }
}

/// nginx's monotonic millisecond clock (`ngx_current_msec`), identical in all
/// processes of one machine.
pub fn current_msec() -> u64 {
    // SAFETY: plain read of a word-sized global updated by this thread.
    unsafe { nginx_sys::ngx_current_msec as u64 }
}

/// Whether this worker is shutting down gracefully (QUIT, or a reload
/// replacing it): no new outgoing connections then.
pub fn exiting() -> bool {
    // SAFETY: plain reads of nginx's process globals.
    unsafe {
        nginx_sys::ngx_exiting != 0 || nginx_sys::ngx_quit != 0 || nginx_sys::ngx_terminate != 0
    }
}

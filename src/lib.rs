//! nginx modules for cluster state sharing, all exported from one shared
//! object (`ngx_stream_zone_sync_module.so`):
//!
//! - `ngx_stream_zone_sync_module` ([`zone_sync`]): the sync engine.
//!
//! The pure logic (wire codec, merge rules, clocks, API shapes) lives in the
//! `zone-sync-core` crate; this crate is the nginx glue around it.

use core::ffi::c_char;
use core::ptr;

use nginx_sys::ngx_module_t;

mod ngx_ext;
pub mod zone_sync;

use zone_sync::ngx_stream_zone_sync_module;

// The module table nginx reads from a dynamic module. Written by hand:
// `ngx::ngx_modules!` cannot list more than one module in ngx 0.5.1.

/// Pointers to every module of this object, null-terminated.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_modules: [*const ngx_module_t; 2] = [
    // SAFETY: only addresses of statics are taken.
    unsafe { ptr::addr_of!(ngx_stream_zone_sync_module) },
    ptr::null(),
];

/// Module names, in the order of `ngx_modules`.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_names: [*const c_char; 2] =
    [c"ngx_stream_zone_sync_module".as_ptr(), ptr::null()];

/// No ordering constraints (we have no filter modules).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_order: [*const c_char; 1] = [ptr::null()];

//! nginx modules for cluster state sharing, all exported from one shared
//! object (`ngx_stream_zone_sync_module.so`):
//!
//! - `ngx_stream_zone_sync_module` ([`zone_sync`]): the sync engine;
//! - `ngx_http_keyval_module`, `ngx_stream_keyval_module` ([`keyval`]);
//! - `ngx_http_sync_limit_req_module` ([`limit_req`]): the cluster rate limiter;
//! - `ngx_http_api_module` ([`api`]): the NGINX Plus REST API subset;
//! - `ngx_http_sync_sticky_module` ([`sticky`]): sticky sessions.
//!
//! The pure logic (wire codec, merge rules, clocks, API shapes) lives in the
//! `zone-sync-core` crate; this crate is the nginx glue around it.

use core::ffi::c_char;
use core::ptr;

use nginx_sys::ngx_module_t;

pub mod api;
pub mod keyval;
pub mod kinds;
pub mod limit_req;
mod ngx_ext;
mod registry;
mod shm;
pub mod sticky;
pub mod zone_sync;

use api::ngx_http_api_module;
use keyval::http::ngx_http_keyval_module;
use keyval::stream::ngx_stream_keyval_module;
use limit_req::module::ngx_http_sync_limit_req_module;
use sticky::module::ngx_http_sync_sticky_module;
use zone_sync::ngx_stream_zone_sync_module;

/// This node's id: random, drawn once by the master and inherited by every
/// worker; it survives reloads (module statics do) and changes on restart.
pub fn node_id() -> u64 {
    static ID: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *ID.get_or_init(|| {
        let mut id = 0u64;
        while id == 0 {
            let mut b = [0u8; 8];
            // SAFETY: filling a local buffer.
            let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
            id = if n == 8 {
                u64::from_ne_bytes(b)
            } else {
                std::process::id() as u64 ^ 0x9e37_79b9_7f4a_7c15
            };
        }
        id
    })
}

// The module table nginx reads from a dynamic module. Written by hand:
// `ngx::ngx_modules!` cannot list more than one module in ngx 0.5.1.

/// Pointers to every module of this object, null-terminated.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_modules: [*const ngx_module_t; 7] = [
    ptr::addr_of!(ngx_stream_zone_sync_module),
    ptr::addr_of!(ngx_http_keyval_module),
    ptr::addr_of!(ngx_stream_keyval_module),
    ptr::addr_of!(ngx_http_sync_limit_req_module),
    ptr::addr_of!(ngx_http_api_module),
    ptr::addr_of!(ngx_http_sync_sticky_module),
    ptr::null(),
];

/// Module names, in the order of `ngx_modules`.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_names: [*const c_char; 7] = [
    c"ngx_stream_zone_sync_module".as_ptr(),
    c"ngx_http_keyval_module".as_ptr(),
    c"ngx_stream_keyval_module".as_ptr(),
    c"ngx_http_sync_limit_req_module".as_ptr(),
    c"ngx_http_api_module".as_ptr(),
    c"ngx_http_sync_sticky_module".as_ptr(),
    ptr::null(),
];

/// No ordering constraints (we have no filter modules).
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_module_order: [*const c_char; 1] = [ptr::null()];

//! `ngx_http_api_module`: the NGINX Plus-compatible REST API,
//! `api [write=on|off];` in an http `location`.
//!
//! The answers themselves (routes, versions, JSON, error objects) come from
//! [`zone_sync_core::api`]; this module is the nginx glue: the directive
//! ([`mod@self`]), the content handler and request body ([`handler`]), and
//! the [`zone_sync_core::api::Backend`] over this node's keyval zones and
//! sync counters ([`backend`]).

use core::ffi::{c_char, c_void};
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_flag_t, ngx_http_conf_ctx_t,
    ngx_http_core_loc_conf_t, ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_str_t, ngx_uint_t,
    NGX_CONF_NOARGS, NGX_CONF_TAKE1, NGX_ERROR, NGX_HTTP_LOC_CONF, NGX_HTTP_MODULE, NGX_LOG_EMERG,
    NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_string};

use crate::ngx_ext::{conf_args, conf_msg, str_bytes, CONF_ERROR, CONF_OK};

mod backend;
mod handler;
mod monitor;
mod processes;

/// Configuration of one location; only a location with `api` uses it.
#[repr(C)]
pub struct LocConf {
    /// `api` was given here.
    enabled: ngx_flag_t,
    /// `write=on`.
    write: ngx_flag_t,
    /// Index of `$request_id`, echoed in error objects.
    request_id: ngx_int_t,
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(create_loc_conf),
    merge_loc_conf: None,
};

static mut COMMANDS: [ngx_command_t; 2] = [
    ngx_command_t {
        name: ngx_string!("api"),
        type_: (NGX_HTTP_LOC_CONF | NGX_CONF_NOARGS | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(set_api),
        conf: nginx_sys::NGX_HTTP_LOC_CONF_OFFSET as ngx_uint_t,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_api_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX).cast_mut().cast(),
    // SAFETY: only the address is taken; nginx reads the table.
    commands: unsafe { ptr::addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    init_module: Some(init_module),
    init_process: Some(init_process),
    ..ngx_module_t::default()
};

fn module() -> &'static ngx_module_t {
    // SAFETY: nginx writes the module's indices once, while loading it,
    // before any configuration is parsed; afterwards it is only read.
    unsafe { &*ptr::addr_of!(ngx_http_api_module) }
}

/// Configuration loads in this master (module statics survive reloads):
/// `generation` is this minus one.
static LOADS: AtomicU64 = AtomicU64::new(0);
/// When the running configuration was loaded, Unix ms.
static LOAD_TIMESTAMP_MS: AtomicU64 = AtomicU64::new(0);

/// Number of configuration reloads since the master started.
pub fn generation() -> u64 {
    LOADS.load(Ordering::Relaxed).saturating_sub(1)
}

/// When the running configuration was loaded (Unix ms).
pub fn load_timestamp_ms() -> u64 {
    LOAD_TIMESTAMP_MS.load(Ordering::Relaxed)
}

/// Master (or the single process), once per configuration load, before
/// the workers fork: they inherit both counters.
unsafe extern "C" fn init_module(_cycle: *mut ngx_cycle_t) -> ngx_int_t {
    LOADS.fetch_add(1, Ordering::Relaxed);
    // The cached time may be a little stale this early: take the clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    LOAD_TIMESTAMP_MS.store(now, Ordering::Relaxed);
    NGX_OK as ngx_int_t
}

/// Every child process, after fork: counts respawns for `/processes`.
unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    processes::init_process(cycle);
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let conf =
        nginx_sys::ngx_pcalloc((*cf).pool, core::mem::size_of::<LocConf>()).cast::<LocConf>();
    if conf.is_null() {
        return ptr::null_mut();
    }
    (*conf).request_id = NGX_ERROR as ngx_int_t;
    conf.cast()
}

/// `api [write=on|off];`
unsafe extern "C" fn set_api(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let lcf = &mut *conf.cast::<LocConf>();
    if lcf.enabled != 0 {
        return conf_msg(c"is duplicate");
    }
    let mut write = 0;
    for a in &conf_args(cf)[1..] {
        match str_bytes(a) {
            b"write=on" => write = 1,
            b"write=off" => write = 0,
            other => {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "invalid parameter \"{}\"",
                    String::from_utf8_lossy(other)
                );
                return CONF_ERROR;
            }
        }
    }
    let mut name = ngx_str_t {
        len: 10,
        data: c"request_id".as_ptr().cast_mut().cast(),
    };
    let index = nginx_sys::ngx_http_get_variable_index(cf, &mut name);
    if index == NGX_ERROR as ngx_int_t {
        return CONF_ERROR;
    }
    if !processes::declare(cf) {
        return CONF_ERROR;
    }
    lcf.enabled = 1;
    lcf.write = write;
    lcf.request_id = index;

    // ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module)
    let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
    let core_index = (*ptr::addr_of!(nginx_sys::ngx_http_core_module)).ctx_index;
    let clcf = (*(*ctx).loc_conf.add(core_index)).cast::<ngx_http_core_loc_conf_t>();
    (*clcf).handler = Some(handler::handler);
    CONF_OK
}

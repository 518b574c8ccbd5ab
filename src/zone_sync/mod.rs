//! `ngx_stream_zone_sync_module`: cluster membership, connections and the
//! sync engine. Zone kinds (keyval, rate limiter) plug in through
//! [`crate::kinds`].

use core::ptr;

use nginx_sys::{ngx_module_t, ngx_stream_module_t, ngx_uint_t, NGX_STREAM_MODULE};

pub mod conf;
mod inbound;
mod ssl;

static CTX: ngx_stream_module_t = ngx_stream_module_t {
    preconfiguration: None,
    postconfiguration: None,
    create_main_conf: Some(conf::create_main_conf),
    init_main_conf: None,
    create_srv_conf: Some(conf::create_srv_conf),
    merge_srv_conf: Some(conf::merge_srv_conf),
};

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_stream_zone_sync_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX).cast_mut().cast(),
    // SAFETY: only the address is taken; nginx reads the table.
    commands: unsafe { ptr::addr_of_mut!(conf::COMMANDS[0]) },
    type_: NGX_STREAM_MODULE as ngx_uint_t,
    init_master: None,
    init_module: None,
    init_process: None,
    init_thread: None,
    exit_thread: None,
    exit_process: None,
    exit_master: None,
    ..ngx_module_t::default()
};

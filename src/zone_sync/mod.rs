//! `ngx_stream_zone_sync_module`: cluster membership, connections and the
//! sync engine. Zone kinds (keyval, rate limiter) plug in through
//! [`crate::kinds`].
//!
//! Files: `conf` (directives), `ssl` (client TLS context), `engine` (the
//! worker-0 loop: drain, timers), `peer` (an outgoing connection),
//! `inbound` (an accepted connection), `conn` (socket reads and writes),
//! `status` (shared counters).

use core::ptr;

use nginx_sys::{
    ngx_cycle_t, ngx_int_t, ngx_module_t, ngx_stream_module_t, ngx_uint_t, NGX_OK,
    NGX_STREAM_MODULE,
};

pub mod conf;
mod conn;
mod engine;
mod handshake;
mod inbound;
mod members;
mod peer;
mod resolve;
mod ssl;
pub mod status;

use crate::ngx_ext::{is_worker_zero, stream_cycle_main_conf};

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
    init_module: Some(init_module),
    init_process: Some(init_process),
    init_thread: None,
    exit_thread: None,
    exit_process: Some(exit_process),
    exit_master: None,
    ..ngx_module_t::default()
};

/// The module's main conf in `cycle`, if the cycle has `zone_sync`.
unsafe fn main_conf(cycle: *mut ngx_cycle_t) -> Option<&'static conf::MainConf> {
    let mcf = stream_cycle_main_conf::<conf::MainConf>(
        cycle,
        &*ptr::addr_of!(ngx_stream_zone_sync_module),
    );
    if mcf.is_null() || (*mcf).zone_sync.is_null() {
        return None;
    }
    Some(&*mcf)
}

/// Master, once the cycle's zones exist: the node id, the wake-up
/// descriptor the workers inherit, and the record size limit of each
/// synced zone.
unsafe extern "C" fn init_module(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    crate::node_id();
    let Some(mcf) = main_conf(cycle) else {
        return NGX_OK as ngx_int_t;
    };
    engine::create_wake_fd();
    crate::kinds::set_wake_hook(engine::wake);
    let frame = (*mcf.zone_sync).bufs.size;
    for z in crate::registry::zones(cycle) {
        let overhead = zone_sync_core::wire::records_frame_overhead(z.name().len());
        z.set_max_record(frame.saturating_sub(overhead) as u64);
    }
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    let Some(mcf) = main_conf(cycle) else {
        return NGX_OK as ngx_int_t;
    };
    if !mcf.status.is_null() {
        status::attach(mcf.status);
    }
    if is_worker_zero() {
        engine::start(cycle, &*mcf.zone_sync, mcf.core);
    }
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    engine::stop();
}

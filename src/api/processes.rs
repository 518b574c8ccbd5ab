//! `GET /processes`: how many child processes (workers, cache processes)
//! died abnormally and were respawned by the master, as NGINX Plus counts
//! them. The master runs no module code when it respawns a child, so the
//! child counts itself: nginx forks a respawned child into the slot of the
//! one that died, and the child's copy of the master's process table still
//! shows that slot as exited, respawnable and not asked to exit. The count
//! lives in a small shared zone of this module (declared by the first
//! `api` directive), kept across reloads.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_list_part_t, ngx_shm_zone_t, ngx_str_t, NGX_ERROR,
    NGX_OK,
};

use crate::shm::{slab_pool, SlabLock};

/// The shared counters; atomics, used without the slab lock.
#[repr(C)]
struct Shared {
    respawned: AtomicU64,
}

fn tag() -> *mut c_void {
    super::module() as *const _ as *mut c_void
}

fn zone_name() -> ngx_str_t {
    ngx_str_t {
        len: 19,
        data: c"ngx_http_api_module".as_ptr().cast_mut().cast(),
    }
}

/// Declares the zone (once per configuration; nginx returns the same zone
/// to later calls). Returns false when nginx could not.
///
/// # Safety
/// `cf` is the configuration being parsed.
pub unsafe fn declare(cf: *mut ngx_conf_t) -> bool {
    let mut name = zone_name();
    let zone = nginx_sys::ngx_shared_memory_add(cf, &mut name, 8 * nginx_sys::ngx_pagesize, tag());
    if zone.is_null() {
        return false;
    }
    (*zone).init = Some(init_zone);
    true
}

/// A zone kept across a reload keeps its counters; a new one gets zeroed
/// ones.
unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    if !old.is_null() {
        (*zone).data = old;
        return NGX_OK as ngx_int_t;
    }
    let pool = slab_pool(zone);
    let p = SlabLock::new(pool)
        .alloc(core::mem::size_of::<Shared>())
        .cast::<Shared>();
    if p.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    ptr::write(
        p,
        Shared {
            respawned: AtomicU64::new(0),
        },
    );
    (*zone).data = p.cast();
    NGX_OK as ngx_int_t
}

/// The counters of `cycle`, if it has an `api`.
///
/// # Safety
/// `cycle` is the running cycle (its zones are initialised).
unsafe fn shared(cycle: *const ngx_cycle_t) -> Option<&'static Shared> {
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let z = &*elts.add(i);
            if z.tag == tag() {
                return z.data.cast::<Shared>().as_ref();
            }
        }
        part = (*part).next;
    }
    None
}

/// Whether this process was forked to replace a child that died: the
/// master reuses the dead child's slot, whose entry (as copied at fork)
/// is exited, respawnable and not exiting. A new child gets a free slot
/// (pid -1, or never used) or one whose last owner was told to exit.
///
/// # Safety
/// Called in a child process, in init_process.
unsafe fn is_respawn() -> bool {
    let slot = nginx_sys::ngx_process_slot;
    if !(0..nginx_sys::NGX_MAX_PROCESSES as ngx_int_t).contains(&slot) {
        return false;
    }
    let p = &(*ptr::addr_of!(nginx_sys::ngx_processes))[slot as usize];
    p.pid != -1 && p.exited() == 1 && p.respawn() == 1 && p.exiting() == 0
}

/// init_process: a respawned child counts itself.
///
/// # Safety
/// Called by nginx in a new child with the running cycle.
pub unsafe fn init_process(cycle: *mut ngx_cycle_t) {
    if nginx_sys::ngx_process == nginx_sys::NGX_PROCESS_SINGLE as nginx_sys::ngx_uint_t {
        return;
    }
    if let Some(sh) = shared(cycle) {
        if is_respawn() {
            sh.respawned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Respawned children since the zone was created; `None` without `api`.
///
/// # Safety
/// `cycle` is the running cycle.
pub unsafe fn respawned(cycle: *const ngx_cycle_t) -> Option<u64> {
    shared(cycle).map(|sh| sh.respawned.load(Ordering::Relaxed))
}

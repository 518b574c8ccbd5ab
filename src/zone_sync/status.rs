//! Node-wide sync counters, in a small shared zone so that whichever worker
//! answers an API request reads the same figures (`GET
//! /api/9/stream/zone_sync/`).

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use nginx_sys::{ngx_conf_t, ngx_int_t, ngx_shm_zone_t, ngx_str_t, NGX_ERROR, NGX_OK};

/// The counters; all atomics, read and written without the slab lock.
#[repr(C)]
#[derive(Default)]
pub struct Status {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
    pub nodes_online: AtomicU64,
    /// 1 while the engine is connected to every other member it knows
    /// (live POSITION frames are stored only then, docs/PROTOCOL.md 4.6).
    pub all_online: AtomicU64,
    /// Bumped when a node connects to us, so that the engine retries its
    /// own connection to it at once.
    pub reconnect: AtomicU64,
}

impl Status {
    pub fn add_bytes_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_bytes_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_msgs_in(&self, n: u64) {
        self.msgs_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_msgs_out(&self, n: u64) {
        self.msgs_out.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counters of this process's cycle (a private dummy until init_process).
static CURRENT: AtomicPtr<Status> = AtomicPtr::new(ptr::null_mut());
static DUMMY: Status = Status {
    bytes_in: AtomicU64::new(0),
    bytes_out: AtomicU64::new(0),
    msgs_in: AtomicU64::new(0),
    msgs_out: AtomicU64::new(0),
    nodes_online: AtomicU64::new(0),
    all_online: AtomicU64::new(0),
    reconnect: AtomicU64::new(0),
};

pub fn get() -> &'static Status {
    let p = CURRENT.load(Ordering::Relaxed);
    if p.is_null() {
        &DUMMY
    } else {
        // SAFETY: set from the zone of the running cycle, which outlives
        // every caller in this process.
        unsafe { &*p }
    }
}

/// Points [`get`] at the shared counters of `zone` (in init_process).
///
/// # Safety
/// `zone` is the initialised status zone of the running cycle.
pub unsafe fn attach(zone: *mut ngx_shm_zone_t) {
    let pool = crate::shm::slab_pool(zone);
    CURRENT.store((*pool).data.cast(), Ordering::Relaxed);
}

/// Declares the status zone (from the `zone_sync` directive).
///
/// # Safety
/// `cf` is the configuration being parsed; `tag` the module.
pub unsafe fn declare(cf: *mut ngx_conf_t, tag: *mut c_void) -> *mut ngx_shm_zone_t {
    let mut name = ngx_str_t {
        len: 20,
        data: c"ngx_stream_zone_sync".as_ptr().cast_mut().cast(),
    };
    let zone = nginx_sys::ngx_shared_memory_add(cf, &mut name, 8 * nginx_sys::ngx_pagesize, tag);
    if !zone.is_null() {
        (*zone).init = Some(init_zone);
        (*zone).data = tag;
    }
    zone
}

unsafe extern "C" fn init_zone(zone: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    let pool = crate::shm::slab_pool(zone);
    if !old.is_null() || (*zone).shm.exists != 0 {
        // Counters go on across reloads.
        return NGX_OK as ngx_int_t;
    }
    let lock = crate::shm::SlabLock::new(pool);
    let p = lock.alloc(core::mem::size_of::<Status>()).cast::<Status>();
    drop(lock);
    if p.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    p.write(Status::default());
    (*pool).data = p.cast();
    NGX_OK as ngx_int_t
}

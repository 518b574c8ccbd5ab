//! Shared-memory zones: the slab mutex guard and allocation helpers used by
//! every zone kind. Locking uses the slab pool's own `ngx_shmtx_t`, which
//! the master releases when a worker dies holding it (a Rust spinlock would
//! stay locked forever and hang every other worker).

pub mod keytree;

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{ngx_shm_zone_t, ngx_slab_pool_t};

/// The slab pool of an initialised shared zone.
///
/// # Safety
/// `zone` must have been initialised by nginx (after `init_cycle` mapped it).
pub unsafe fn slab_pool(zone: *const ngx_shm_zone_t) -> *mut ngx_slab_pool_t {
    (*zone).shm.addr.cast()
}

/// Holds the slab mutex of one zone; released on drop.
pub struct SlabLock {
    pool: *mut ngx_slab_pool_t,
}

impl SlabLock {
    /// Takes the slab mutex.
    ///
    /// # Safety
    /// `pool` is a live slab pool. The caller must not take the same lock
    /// again while this guard lives (the mutex is not recursive).
    pub unsafe fn new(pool: *mut ngx_slab_pool_t) -> Self {
        nginx_sys::ngx_shmtx_lock(ptr::addr_of_mut!((*pool).mutex));
        SlabLock { pool }
    }

    /// `ngx_slab_alloc_locked`: null when the zone is full.
    pub fn alloc(&self, size: usize) -> *mut c_void {
        // SAFETY: the mutex is held by this guard.
        unsafe { nginx_sys::ngx_slab_alloc_locked(self.pool, size) }
    }

    /// `ngx_slab_free_locked`.
    ///
    /// # Safety
    /// `p` was allocated from this pool and is not used afterwards.
    pub unsafe fn free(&self, p: *mut c_void) {
        nginx_sys::ngx_slab_free_locked(self.pool, p)
    }
}

impl Drop for SlabLock {
    fn drop(&mut self) {
        // SAFETY: taken in `new`, released once here.
        unsafe { nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*self.pool).mutex)) }
    }
}

/// Sets the slab pool's `log_ctx`, so nginx's own "ngx_slab_alloc() failed:
/// no memory" messages name the zone (`in keyval zone "one"`).
///
/// # Safety
/// `pool` is the freshly initialised pool of `zone`, not yet shared with
/// other processes.
pub unsafe fn set_log_ctx(pool: *mut ngx_slab_pool_t, what: &str, zone: &[u8]) -> bool {
    let text = format!(" in {what} zone \"{}\"\0", String::from_utf8_lossy(zone));
    let lock = SlabLock::new(pool);
    let p = lock.alloc(text.len()).cast::<u8>();
    drop(lock);
    if p.is_null() {
        return false;
    }
    ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
    (*pool).log_ctx = p;
    // Evicting old records is our answer to a full zone: the slab's own
    // "no memory" alert would be noise.
    (*pool).set_log_nomem(0);
    true
}

/// The header of a zone that did not survive a reload: the one already in
/// the mapping when nginx attaches to an existing segment, or a fresh one
/// made by `init`, with the slab's log context naming the zone.
///
/// # Safety
/// Called from the zone's init callback, before any worker uses it.
pub unsafe fn new_zone_header<T>(
    zone: *mut ngx_shm_zone_t,
    what: &str,
    name: &[u8],
    init: impl FnOnce(*mut ngx_slab_pool_t) -> Option<*mut T>,
) -> Option<*mut T> {
    let pool = slab_pool(zone);
    if (*zone).shm.exists != 0 {
        return Some((*pool).data.cast());
    }
    let header = init(pool)?;
    set_log_ctx(pool, what, name).then_some(header)
}

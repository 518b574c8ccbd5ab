//! What a `sync_limit_req_zone` did with this node's requests, for
//! `GET /api/N/http/limit_reqs/`: one small block of atomics in the zone's
//! shared memory, allocated when the zone is created and kept across
//! reloads with the zone, so every worker counts into (and the API reads)
//! the same figures, as NGINX Plus reports them.

use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use nginx_sys::ngx_slab_pool_t;

use crate::shm::SlabLock;

/// The outcomes of `$sync_limit_req_status`; written without the slab lock.
#[repr(C)]
#[derive(Default)]
pub struct Counters {
    pub passed: AtomicU64,
    pub delayed: AtomicU64,
    pub rejected: AtomicU64,
    pub delayed_dry_run: AtomicU64,
    pub rejected_dry_run: AtomicU64,
}

impl Counters {
    /// Counts one request's outcome (`1..=5`: PASSED, DELAYED, REJECTED,
    /// DELAYED_DRY_RUN, REJECTED_DRY_RUN, the order of
    /// `$sync_limit_req_status`).
    pub fn count(&self, status: u8) {
        let c = match status {
            1 => &self.passed,
            2 => &self.delayed,
            3 => &self.rejected,
            4 => &self.delayed_dry_run,
            5 => &self.rejected_dry_run,
            _ => return,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> [u64; 5] {
        [
            &self.passed,
            &self.delayed,
            &self.rejected,
            &self.delayed_dry_run,
            &self.rejected_dry_run,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

/// Zeroed counters allocated from the zone's slab pool; null when the zone
/// has no room (the zone then works without them).
///
/// # Safety
/// `pool` is the initialised slab pool of the zone, from its init callback.
pub unsafe fn alloc(pool: *mut ngx_slab_pool_t) -> *const Counters {
    let lock = SlabLock::new(pool);
    let p = lock
        .alloc(core::mem::size_of::<Counters>())
        .cast::<Counters>();
    if !p.is_null() {
        ptr::write(p, Counters::default());
    }
    p
}

//! The figures of the monitoring endpoints, read from nginx itself: its
//! stub_status counters, the slab statistics of every shared zone, and the
//! counters of our `sync_limit_req_zone`s (kept in their shared memory).

use core::ffi::CStr;
use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use nginx_sys::{ngx_cycle_t, ngx_list_part_t, ngx_shm_zone_t, ngx_slab_pool_t};
use zone_sync_core::api::{LimitReqZone, SlabSlot, SlabZone, StubStatus};

use crate::limit_req::zone::LimitZone;
use crate::ngx_ext::str_bytes;
use crate::shm::SlabLock;

/// The value of nginx's `ngx_atomic_t *name` counter, if this nginx binary
/// has it (stub_status is compiled in): looked up by symbol, so the module
/// works with any build.
fn stat(name: &CStr) -> Option<u64> {
    // SAFETY: dlsym on the process's global scope, which holds the nginx
    // executable's exported symbols.
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if sym.is_null() {
        return None;
    }
    // SAFETY: the symbol is nginx's `ngx_atomic_t *` variable; it points to
    // the counter in the shared memory nginx mapped before the workers
    // forked (null only before that).
    let counter = unsafe { *sym.cast::<*const AtomicUsize>() };
    // SAFETY: an `ngx_atomic_t` is a word-sized integer updated atomically.
    let counter = unsafe { counter.as_ref()? };
    Some(counter.load(Ordering::Relaxed) as u64)
}

/// nginx's stub_status counters, or `None` when the binary has none.
pub fn stub_status() -> Option<StubStatus> {
    Some(StubStatus {
        accepted: stat(c"ngx_stat_accepted")?,
        handled: stat(c"ngx_stat_handled")?,
        active: stat(c"ngx_stat_active")?,
        reading: stat(c"ngx_stat_reading")?,
        writing: stat(c"ngx_stat_writing")?,
        waiting: stat(c"ngx_stat_waiting")?,
        requests: stat(c"ngx_stat_requests")?,
    })
}

/// Every shared zone of `cycle`, in configuration order.
///
/// # Safety
/// `cycle` is the running cycle: its zones are mapped and initialised.
unsafe fn shm_zones(cycle: *const ngx_cycle_t) -> Vec<*mut ngx_shm_zone_t> {
    let mut out = Vec::new();
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            out.push(elts.add(i));
        }
        part = (*part).next;
    }
    out
}

/// The slab statistics of every shared zone of `cycle` (ours and every
/// other module's), read under each zone's slab mutex.
///
/// # Safety
/// `cycle` is the running cycle; the caller holds no slab lock.
pub unsafe fn slabs(cycle: *const ngx_cycle_t) -> Vec<SlabZone> {
    let page_shift = nginx_sys::ngx_pagesize_shift;
    let page_size = nginx_sys::ngx_pagesize.max(1);
    let mut out = Vec::new();
    for zone in shm_zones(cycle) {
        let pool = (*zone).shm.addr.cast::<ngx_slab_pool_t>();
        if pool.is_null() {
            continue;
        }
        let _lock = SlabLock::new(pool);
        let p = &*pool;
        let pages = (p.end as usize).saturating_sub(p.start as usize) / page_size;
        let free = p.pfree;
        let n = page_shift.saturating_sub(p.min_shift);
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            // SAFETY: ngx_slab_init gives `stats` one entry per slot size,
            // `ngx_pagesize_shift - min_shift` of them.
            let s = &*p.stats.add(i);
            slots.push(SlabSlot {
                size: 1u64 << (i + p.min_shift),
                used: s.used as u64,
                free: s.total.saturating_sub(s.used) as u64,
                reqs: s.reqs as u64,
                fails: s.fails as u64,
            });
        }
        out.push(SlabZone {
            name: str_bytes(&(*zone).shm.name).to_vec(),
            pages_used: pages.saturating_sub(free) as u64,
            pages_free: free as u64,
            slots,
        });
    }
    out
}

/// The counters of every `sync_limit_req_zone` of `cycle`.
///
/// # Safety
/// `cycle` is the running cycle.
pub unsafe fn limit_reqs(cycle: *const ngx_cycle_t) -> Vec<LimitReqZone> {
    let tag = crate::limit_req::module::module().cast_mut().cast();
    let mut out = Vec::new();
    for zone in shm_zones(cycle) {
        if (*zone).tag != tag || (*zone).data.is_null() {
            continue;
        }
        let z = &*(*zone).data.cast::<LimitZone>();
        // A zone that had no room for its counters has no figures to show.
        let Some(c) = z.counters() else { continue };
        let [passed, delayed, rejected, delayed_dry_run, rejected_dry_run] = c.get();
        out.push(LimitReqZone {
            name: z.name().to_vec(),
            passed,
            delayed,
            rejected,
            delayed_dry_run,
            rejected_dry_run,
        });
    }
    out
}

//! Shared-memory zones: the one table every zone kind is built on
//! ([`zone_sync_core::table`]) placed in an nginx slab pool, and the generic
//! [`crate::kinds::SyncZone`] of every kind ([`zone`]).
//!
//! A zone's slab pool holds a small [`Header`] (the clock and the engine's
//! figures, read without the lock) and one large block, the table's arena,
//! carved from every page left at zone init but [`SPARE_PAGES`]. Locking uses the slab pool's
//! own `ngx_shmtx_t`, which the master releases when a worker dies holding
//! it (a Rust spinlock would stay locked forever and hang every other
//! worker); the table's mutation marker then tells the next holder that
//! the dead one was in the middle of a change, and the table is rebuilt.

pub mod zone;

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::Ordering;

use nginx_sys::{
    ngx_cycle_t, ngx_list_part_t, ngx_shm_zone_t, ngx_slab_pool_t, NGX_LOG_ALERT, NGX_LOG_EMERG,
};
use ngx::ngx_log_error;
use zone_sync_core::hlc::SharedHlc;
use zone_sync_core::table::{Observer, Table, SLOTS};

use crate::kinds::EngineShared;

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
}

impl Drop for SlabLock {
    fn drop(&mut self) {
        // SAFETY: taken in `new`, released once here.
        unsafe { nginx_sys::ngx_shmtx_unlock(ptr::addr_of_mut!((*self.pool).mutex)) }
    }
}

/// Pages left to the slab pool for a kind's own small allocations (the
/// limit_req outcome counters).
const SPARE_PAGES: usize = 2;

/// Marks a [`Header`] of this layout ("zstable1").
const HEADER_MAGIC: u64 = 0x7a73_7461_626c_6531;

/// The zone header, at `pool->data`.
#[repr(C)]
pub struct Header {
    magic: u64,
    /// This node's hybrid logical clock for the zone.
    pub hlc: SharedHlc,
    /// Figures the sync engine publishes for the zone.
    pub engine: EngineShared,
    /// The arena: its offset from the pool's start, and its length.
    arena_off: usize,
    arena_len: usize,
    /// The table's slot figures last added to the pool's statistics.
    published: [(u64, u64, u64); SLOTS],
}

/// A zone's table as seen by one process.
pub struct Shm {
    pool: *mut ngx_slab_pool_t,
    hdr: *mut Header,
    /// Declared with `sync`.
    pub sync: bool,
    /// "keyval", "sync_limit_req": for messages.
    what: &'static str,
    name: &'static [u8],
    /// The kind's observer of the table (keyval's type index), in the
    /// zone's shared memory: told of every change under the lock.
    observer: Option<&'static dyn Observer>,
}

/// A fresh random seed for a zone's hash index.
fn random_seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: filling a local buffer.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        crate::ngx_ext::wall_ms() ^ u64::from(std::process::id()) << 32
    }
}

impl Shm {
    /// The table of zone `shm` for its init callback: a zone that survived
    /// a reload keeps its table; a new one gets an empty table filling the
    /// pool, and its clock starts no lower than the clock of the zone of
    /// the same name it replaces (a reload that changed its size).
    ///
    /// # Safety
    /// Called from the zone's init callback with nginx's `data` argument.
    pub unsafe fn init(
        shm: *mut ngx_shm_zone_t,
        old: *mut c_void,
        what: &'static str,
        name: &'static [u8],
        sync: bool,
    ) -> Option<Shm> {
        let pool = slab_pool(shm);
        if !old.is_null() || (*shm).shm.exists != 0 {
            let hdr: *mut Header = (*pool).data.cast();
            if hdr.is_null() || (*hdr).magic != HEADER_MAGIC {
                // A zone of the same name and size from another version
                // of the module: its layout is not ours.
                ngx_log_error!(
                    NGX_LOG_EMERG,
                    (*shm).shm.log,
                    "{} zone \"{}\" was created by another version of the module: change its size to start it afresh",
                    what,
                    String::from_utf8_lossy(name)
                );
                return None;
            }
            return Some(Shm {
                pool,
                hdr,
                sync,
                what,
                name,
                observer: None,
            });
        }
        let lock = SlabLock::new(pool);
        let hdr = lock.alloc(core::mem::size_of::<Header>()).cast::<Header>();
        let text = format!(" in {what} zone \"{}\"\0", String::from_utf8_lossy(name));
        let ctx = lock.alloc(text.len()).cast::<u8>();
        let page = nginx_sys::ngx_pagesize;
        let len = (*pool).pfree.saturating_sub(SPARE_PAGES) * page;
        let arena = lock.alloc(len).cast::<u8>();
        drop(lock);
        if hdr.is_null() || ctx.is_null() || arena.is_null() {
            return None;
        }
        ptr::copy_nonoverlapping(text.as_ptr(), ctx, text.len());
        // nginx's own "ngx_slab_alloc() failed" messages name the zone;
        // evicting is our answer to a full zone, so they stay quiet.
        (*pool).log_ctx = ctx;
        (*pool).set_log_nomem(0);
        hdr.write(Header {
            magic: HEADER_MAGIC,
            hlc: SharedHlc::new(0),
            engine: EngineShared::default(),
            arena_off: arena as usize - pool as usize,
            arena_len: len,
            published: [(0, 0, 0); SLOTS],
        });
        let s = core::slice::from_raw_parts_mut(arena, len);
        Table::format(s, random_seed())?;
        if let Some(prev) = previous_clock((*shm).tag, &(*shm).shm.name) {
            (*hdr).hlc.observe(prev, crate::ngx_ext::wall_ms());
        }
        (*pool).data = hdr.cast();
        Some(Shm {
            pool,
            hdr,
            sync,
            what,
            name,
            observer: None,
        })
    }

    /// Has `obs` told of every change of the table from now on; it must
    /// be shared by every process (in the zone's shared memory) and start
    /// out agreeing with the table (set up with the zone, or carried over
    /// from the zone's previous configuration).
    pub fn observe(&mut self, obs: &'static dyn Observer) {
        self.observer = Some(obs);
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the header lives as long as the zone; its fields read
        // without the lock are atomics.
        unsafe { &*self.hdr }
    }

    pub fn hlc(&self) -> &SharedHlc {
        &self.header().hlc
    }

    /// Runs `f` on the table under the zone's lock. A table the last
    /// holder of the lock left in the middle of a change (it died) is
    /// rebuilt first, with an alert.
    pub fn with<R>(&self, f: impl FnOnce(&mut Table<'_>) -> R) -> R {
        // SAFETY: the pool is live; no caller takes the lock twice (`f`
        // gets the table, not the zone).
        let _lock = unsafe { SlabLock::new(self.pool) };
        // SAFETY: the arena was carved from this pool at init; the lock
        // makes this the only reference to it meanwhile.
        let arena = unsafe {
            let h = &*self.hdr;
            core::slice::from_raw_parts_mut(self.pool.cast::<u8>().add(h.arena_off), h.arena_len)
        };
        // SAFETY: ngx_cycle is the running cycle.
        let log = unsafe { (*crate::ngx_ext::cycle()).log };
        let obs = self.observer;
        if Table::open(arena).is_none() {
            // Only a stray write can get here; never crash on it.
            ngx_log_error!(
                NGX_LOG_ALERT,
                log,
                "zone_sync: {} zone \"{}\" was corrupt: cleared",
                self.what,
                String::from_utf8_lossy(self.name)
            );
            Table::format(arena, random_seed());
            if let Some(o) = obs {
                o.reset();
            }
        }
        let mut t = match Table::open(arena) {
            Some(t) => t,
            None => unreachable!("formatted above"),
        };
        if let Some(o) = obs {
            t.observe(o);
        }
        if t.needs_recovery() {
            let r = t.recover();
            ngx_log_error!(
                NGX_LOG_ALERT,
                log,
                "zone_sync: {} zone \"{}\" was left mid-change by a process that died: {}, {} records kept, {} dropped",
                self.what,
                String::from_utf8_lossy(self.name),
                if r.cleared { "cleared" } else { "rebuilt" },
                r.kept,
                r.dropped
            );
        }
        let before = (t.counters().seq, t.counters().expired);
        let r = f(&mut t);
        if (t.counters().seq, t.counters().expired) != before {
            self.publish_slots(&t);
        }
        r
    }

    /// Shows the table's records among the allocations of the slab pool's
    /// statistics (what `/api/N/slabs` reports), by slot size, beside the
    /// pool's own: the pool itself sees the arena as one block.
    fn publish_slots(&self, t: &Table<'_>) {
        let stats = t.slot_stats();
        // SAFETY: under the zone's lock (the header's `published` and the
        // pool's statistics change only under it); ngx_slab_init gives
        // `stats` one entry per slot size, `ngx_pagesize_shift - min_shift`
        // of them.
        unsafe {
            // Only this field: the clock and the engine's figures may be
            // borrowed meanwhile.
            let published = &mut *ptr::addr_of_mut!((*self.hdr).published);
            let p = &*self.pool;
            let n = nginx_sys::ngx_pagesize_shift.saturating_sub(p.min_shift);
            for (i, &(used, reqs, fails)) in stats.iter().enumerate().take(n) {
                let (u0, r0, f0) = published[i];
                let s = &mut *p.stats.add(i);
                s.used = s.used.wrapping_add(used.wrapping_sub(u0) as _);
                s.total = s.total.max(s.used);
                s.reqs = s.reqs.wrapping_add(reqs.wrapping_sub(r0) as _);
                s.fails = s.fails.wrapping_add(fails.wrapping_sub(f0) as _);
                published[i] = (used, reqs, fails);
            }
        }
    }

    /// Whether a record of these key and value lengths may be stored: in
    /// the table's bounds and, in a synced zone, in one sync buffer (the
    /// largest record the engine published).
    pub fn fits(&self, key_len: usize, value_len: usize) -> bool {
        let max = self.header().engine.max_record.load(Ordering::Relaxed);
        key_len <= zone_sync_core::table::MAX_KEY
            && value_len <= zone_sync_core::table::MAX_VALUE
            && !(self.sync
                && max != 0
                && zone_sync_core::wire::encoded_record_len(key_len, value_len) as u64 > max)
    }

    /// The pool's data size (start to end), for size checks.
    pub fn pool_size(&self) -> usize {
        // SAFETY: start and end are set once when the pool is created.
        unsafe { ((*self.pool).end as usize).saturating_sub((*self.pool).start as usize) }
    }
}

/// The clock of the zone named `name` with `tag` in the running cycle
/// (called while the next one is being set up).
unsafe fn previous_clock(tag: *mut c_void, name: &nginx_sys::ngx_str_t) -> Option<u64> {
    let cycle: *const ngx_cycle_t = crate::ngx_ext::cycle();
    if cycle.is_null() {
        return None;
    }
    let want = crate::ngx_ext::str_bytes(name);
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let z = elts.add(i);
            if (*z).tag != tag || (*z).shm.addr.is_null() {
                continue;
            }
            if crate::ngx_ext::str_bytes(&(*z).shm.name) != want {
                continue;
            }
            let hdr: *const Header = (*slab_pool(z)).data.cast();
            if !hdr.is_null() {
                return Some((*hdr).hlc.load());
            }
        }
        part = (*part).next;
    }
    None
}

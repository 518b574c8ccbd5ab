//! The session zone of `sticky learn`: session id -> server identity, in
//! shared memory, with the zone's `timeout`. A thin adapter over the keyval
//! store (string key, string value, expiry, change queue, snapshot), so
//! that the store underneath can change without touching the balancer;
//! and the [`SyncZone`] view the engine syncs like any other zone (wire
//! kind 3, docs/PROTOCOL.md).

use core::ffi::c_void;

use nginx_sys::{ngx_int_t, ngx_log_t, ngx_shm_zone_t, ngx_str_t, NGX_ERROR, NGX_LOG_ERR, NGX_OK};
use ngx::ngx_log_error;

use crate::keyval::store::{Shared, Store, StoreError};
use crate::kinds::{ApplyError, Record, SnapshotCursor, SyncZone};
use crate::ngx_ext::{current_msec, str_bytes, wall_ms};

/// The wire kind of sticky session zones (docs/PROTOCOL.md).
pub const KIND: u8 = 3;
pub const KIND_VERSION: u16 = 1;

/// Records the housekeeping sweep looks at per tick (as keyval zones).
const SWEEP_PER_TICK: usize = 100;

/// One session zone, in the configuration pool; `shm_zone->data` points
/// here.
#[repr(C)]
pub struct StickyZone {
    pub shm: *mut ngx_shm_zone_t,
    /// `timeout=` in ms (10 minutes by default).
    pub timeout: u64,
    pub sync: bool,
    /// The upstream the zone belongs to, for messages.
    pub upstream: ngx_str_t,
    /// Set when the shared zone is initialised.
    pub store: Option<Store>,
}

impl StickyZone {
    pub fn name(&self) -> &[u8] {
        // SAFETY: the zone's name lives in the configuration pool as long
        // as the cycle.
        unsafe { str_bytes(&(*self.shm).shm.name) }
    }

    /// Calls `f` with the server identity session `id` names and the ms
    /// it still lives, if the session is known and not expired.
    pub fn lookup<R>(&self, id: &[u8], f: impl FnOnce(&[u8], u64) -> R) -> Option<R> {
        self.store.as_ref()?.get(id, current_msec(), f)
    }

    /// Stores (or refreshes) session `id` -> `server`, restarting its
    /// timeout on every node. Failures are logged, and only cost the
    /// session its stickiness.
    pub fn learn(&self, log: *mut ngx_log_t, id: &[u8], server: &[u8]) {
        let Some(store) = self.store.as_ref() else {
            return;
        };
        let now = current_msec();
        match store.set(id, server, None, now, wall_ms(), crate::node_id()) {
            Ok(out) => {
                if out.evicted > 0 && store.should_log_eviction(now) {
                    ngx_log_error!(
                        nginx_sys::NGX_LOG_WARN,
                        log,
                        "sticky zone \"{}\" is full, evicted {} least recently used sessions",
                        String::from_utf8_lossy(self.name()),
                        out.evicted
                    );
                }
                if out.wake {
                    crate::zone_sync::wake();
                }
            }
            Err(e) => {
                let why = match e {
                    StoreError::TooLarge => "session is larger than a \"zone_sync_buffers\" buffer",
                    StoreError::NoMemory => "zone is too small for the session",
                };
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "sticky zone \"{}\": could not store session \"{}\": {}",
                    String::from_utf8_lossy(self.name()),
                    String::from_utf8_lossy(&id[..id.len().min(64)]),
                    why
                );
            }
        }
    }
}

/// Shared-zone init: a new zone gets an empty store; a zone that survived
/// a reload keeps its sessions.
///
/// # Safety
/// Called by nginx with a zone whose `data` is a [`StickyZone`].
pub unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    let z = &mut *(*shm).data.cast::<StickyZone>();
    let pool = crate::shm::slab_pool(shm);
    let sh: *mut Shared = if !old.is_null() {
        match &(*old.cast::<StickyZone>()).store {
            Some(s) => (s.shared() as *const Shared).cast_mut(),
            None => return NGX_ERROR as ngx_int_t,
        }
    } else {
        match crate::shm::new_zone_header(shm, "sticky", z.name(), |p| Store::init(p, false)) {
            Some(sh) => sh,
            None => return NGX_ERROR as ngx_int_t,
        }
    };
    z.store = Some(Store::new(pool, sh, z.sync, z.timeout));
    NGX_OK as ngx_int_t
}

/// The engine's view of a session zone's `shm_zone->data`.
///
/// # Safety
/// `data` is the [`StickyZone`] of a zone of this cycle.
pub unsafe fn view(data: *mut c_void) -> Option<&'static dyn SyncZone> {
    let z = &*data.cast::<StickyZone>();
    z.store.as_ref()?;
    Some(z)
}

impl SyncZone for StickyZone {
    fn name(&self) -> &[u8] {
        StickyZone::name(self)
    }
    fn kind(&self) -> u8 {
        KIND
    }
    fn kind_version(&self) -> u16 {
        KIND_VERSION
    }
    fn synced(&self) -> bool {
        self.sync
    }
    fn records_total(&self) -> u64 {
        self.store.as_ref().map_or(0, Store::records_total)
    }
    fn records_pending(&self) -> u64 {
        self.store.as_ref().map_or(0, Store::records_pending)
    }
    fn engine_shared(&self) -> Option<&crate::kinds::EngineShared> {
        self.store.as_ref().map(|s| &s.shared().engine)
    }
    fn drain_changes(&self, now: u64, out: &mut dyn FnMut(&Record<'_>) -> bool) -> usize {
        self.store.as_ref().map_or(0, |s| s.drain_changes(now, out))
    }
    fn snapshot(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        max: usize,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool {
        self.store
            .as_ref()
            .is_none_or(|s| s.snapshot(cursor, now, max, out))
    }
    fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<bool, ApplyError> {
        let Some(s) = self.store.as_ref() else {
            return Err(ApplyError::NoMemory);
        };
        s.apply(rec, now, wall).map_err(|e| match e {
            StoreError::TooLarge => ApplyError::Invalid,
            StoreError::NoMemory => ApplyError::NoMemory,
        })
    }
    fn housekeeping(&self, now: u64) {
        if let Some(s) = self.store.as_ref() {
            s.expire(now, 1000, SWEEP_PER_TICK);
        }
    }
}

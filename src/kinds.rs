//! The one interface between the sync engine and the kinds of zones it
//! keeps in sync. The engine sees a zone only as a [`SyncZone`]: it drains
//! local changes, iterates a snapshot, applies remote records and reads
//! counters. A new kind implements the trait and adds one line to
//! [`KINDS`]; the engine does not change.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use nginx_sys::{ngx_cycle_t, ngx_list_part_t, ngx_module_t, ngx_shm_zone_t};

/// A record as it travels between a zone and the wire (docs/PROTOCOL.md).
pub use zone_sync_core::wire::RecordRef as Record;

/// Where a snapshot stopped: the last (hash, key) handed out.
#[derive(Debug, Default, Clone)]
pub struct SnapshotCursor {
    pub last: Option<(usize, Vec<u8>)>,
}

/// Why a remote record was not applied.
#[derive(Debug)]
pub enum ApplyError {
    /// Not storable here (too large, malformed kind-specific value).
    Invalid,
    /// The zone is full even after eviction.
    NoMemory,
}

/// Figures the engine publishes for a zone, kept in the zone's shared
/// header so that every worker reads them (`records_pending`, the write
/// path's size check).
#[repr(C)]
#[derive(Default)]
pub struct EngineShared {
    /// Records sent and not yet acknowledged by the slowest peer.
    pub inflight: AtomicU64,
    /// The largest encoded record a sync buffer carries (0: no limit).
    pub max_record: AtomicU64,
}

/// A zone the engine can sync.
pub trait SyncZone {
    fn name(&self) -> &[u8];
    /// Wire kind (docs/PROTOCOL.md, "Zone kinds").
    fn kind(&self) -> u8;
    fn kind_version(&self) -> u16;
    /// Whether the zone was declared with `sync`.
    fn synced(&self) -> bool;
    fn records_total(&self) -> u64;
    fn records_pending(&self) -> u64;
    /// Where the engine publishes its figures for the zone (none until
    /// the zone is initialised).
    fn engine_shared(&self) -> Option<&EngineShared>;
    /// Records the engine sent and peers have not acknowledged yet.
    fn set_inflight(&self, records: u64) {
        if let Some(e) = self.engine_shared() {
            e.inflight.store(records, Ordering::Relaxed);
        }
    }
    /// The largest encoded record the sync buffers can carry; a zone
    /// refuses larger local writes.
    fn set_max_record(&self, bytes: u64) {
        if let Some(e) = self.engine_shared() {
            e.max_record.store(bytes, Ordering::Relaxed);
        }
    }
    /// Hands queued local changes to `out` until it refuses one.
    fn drain_changes(&self, now: u64, out: &mut dyn FnMut(&Record<'_>) -> bool) -> usize;
    /// Continues a snapshot; true when the whole zone has been visited.
    fn snapshot(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        max: usize,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool;
    /// Applies a record received from a peer; true if the zone changed.
    fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<bool, ApplyError>;
    /// Periodic housekeeping (expiry) from the sync worker.
    fn housekeeping(&self, now: u64);
}

/// A kind: the module whose shared zones it owns, and how to view such a
/// zone's `shm_zone->data` as a [`SyncZone`].
struct Kind {
    module: fn() -> *const ngx_module_t,
    view: unsafe fn(*mut c_void) -> Option<&'static dyn SyncZone>,
}

/// Every kind of zone this module can sync.
static KINDS: &[Kind] = &[
    Kind {
        module: crate::keyval::http::module,
        view: crate::keyval::zone::view,
    },
    Kind {
        module: crate::keyval::stream::module,
        view: crate::keyval::zone::view,
    },
    Kind {
        module: crate::limit_req::module::module,
        view: crate::limit_req::zone::view,
    },
    Kind {
        module: crate::sticky::module::module,
        view: crate::sticky::zone::view,
    },
];

/// Every initialised zone of `cycle` of a known kind (synced or not).
///
/// # Safety
/// `cycle` is the running cycle; the returned references live as long as it.
pub unsafe fn zones(cycle: *const ngx_cycle_t) -> Vec<&'static dyn SyncZone> {
    let mut out = Vec::new();
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let zone = elts.add(i);
            for kind in KINDS {
                if (*zone).tag == (kind.module)().cast_mut().cast() && !(*zone).data.is_null() {
                    if let Some(z) = (kind.view)((*zone).data) {
                        out.push(z);
                    }
                }
            }
        }
        part = (*part).next;
    }
    out
}

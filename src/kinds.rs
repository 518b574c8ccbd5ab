//! The one interface between the sync engine and the kinds of zones it
//! keeps in sync. The engine sees a zone only as a [`SyncZone`]: it drains
//! local changes, iterates a snapshot, applies remote records and reads
//! counters; a zone tells the engine that a change is queued through the
//! [`wake`] hook the engine installs. A new kind implements the trait and
//! adds one line to `crate::registry::KINDS`; the engine does not change.
//! This file imports neither the engine nor any kind.

use core::sync::atomic::{AtomicU64, Ordering};

/// A record as it travels between a zone and the wire (docs/PROTOCOL.md).
pub use zone_sync_core::wire::RecordRef as Record;

/// Where a snapshot stopped: a position in the zone's table, valid while
/// records come and go between batches.
#[derive(Debug, Default, Clone)]
pub struct SnapshotCursor {
    pub table: zone_sync_core::table::Cursor,
    /// Resuming a peer ([`SyncZone::changes`]): the changes after this
    /// sequence number are left to send.
    pub after: u64,
    /// Where inside the record of sequence number `sub_seq` the pass is
    /// (limit_req records carry several shares).
    pub sub: u64,
    pub sub_seq: u64,
}

impl SnapshotCursor {
    /// A pass over the changes after `seq`.
    pub fn after(seq: u64) -> Self {
        SnapshotCursor {
            after: seq,
            ..Self::default()
        }
    }
}

/// A zone's history as peers resume it: its epoch, the oldest position it
/// can replay from, and its latest sequence number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct History {
    pub epoch: u64,
    pub horizon: u64,
    pub seq: u64,
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
    /// The highest change sequence number an engine took from the queue
    /// without sending it (no peer was connected: the next connection's
    /// pass carries it). A connection whose pass began before it never
    /// had those changes, so it acknowledges no live position after it.
    pub dropped: AtomicU64,
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
    /// Notes that the changes up to `seq` left the queue unsent.
    fn note_dropped(&self, seq: u64) {
        if let Some(e) = self.engine_shared() {
            e.dropped.fetch_max(seq, Ordering::Relaxed);
        }
    }
    /// See [`EngineShared::dropped`].
    fn dropped(&self) -> u64 {
        self.engine_shared()
            .map_or(0, |e| e.dropped.load(Ordering::Relaxed))
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
    /// The zone's history (epoch, replay horizon, latest seq).
    fn history(&self) -> History;
    /// Every local change up to this sequence number has been drained.
    fn drained(&self) -> u64;
    /// Where this node stands in peer `node`'s history of the zone:
    /// `(epoch, seq)`.
    fn position(&self, node: u64) -> Option<(u64, u64)>;
    /// Every change of peer `node`'s zone up to `seq` of `epoch` is applied.
    fn set_position(&self, node: u64, epoch: u64, seq: u64);
    /// Continues a resume pass: the records changed after `cursor.after`,
    /// oldest first, as a snapshot sends them (current values, tombstones
    /// included), until `out` refuses one. Returns true when done.
    fn changes(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool;
    /// Periodic housekeeping (expiry) from the sync worker.
    fn housekeeping(&self, now: u64);
}

/// A zone as a session announces it, with its current epoch.
pub fn zone_info(z: &dyn SyncZone) -> zone_sync_core::session::ZoneInfo {
    let mut info =
        zone_sync_core::session::ZoneInfo::new(z.name().to_vec(), z.kind(), z.kind_version());
    info.epoch = z.history().epoch;
    info
}

/// What a zone calls when a change is queued (the first one in an empty
/// queue): runs the hook the engine installed with [`set_wake_hook`], a
/// no-op until then. Cheap and safe in any process.
pub fn wake() {
    if let Some(hook) = WAKE_HOOK.get() {
        hook();
    }
}

/// Installs the engine's wake-up hook (see [`wake`]), in the master before
/// the workers fork, so that every process has it; once per process.
pub fn set_wake_hook(hook: fn()) {
    let _ = WAKE_HOOK.set(hook);
}

static WAKE_HOOK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

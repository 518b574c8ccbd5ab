//! The [`SyncZone`] of every kind, written once: a kind says how its
//! records travel ([`ZoneKind`]) and the rest (draining, snapshots,
//! expiry, counters, eviction logging) is the table's.

use core::ffi::c_void;
use core::sync::atomic::Ordering;

use nginx_sys::{ngx_log_t, NGX_LOG_ERR, NGX_LOG_WARN};
use ngx::ngx_log_error;
use zone_sync_core::table::{Rec, Table};

use super::Shm;
use crate::kinds::{ApplyError, EngineShared, History, Record, SnapshotCursor, SyncZone};

/// Expired records the housekeeping tick frees from the tail of the change
/// list at most, and the random buckets it samples for the others.
const EXPIRE_PER_TICK: usize = 1000;
const SAMPLE_BUCKETS: usize = 20;
const SAMPLE_ROUNDS: usize = 16;

/// A record handed to a kind to send, and the moment (monotonic and wall
/// ms).
pub struct Visit<'t, 'a> {
    pub t: &'t Table<'a>,
    pub r: Rec,
    pub now: u64,
    pub wall: u64,
}

/// Where a kind hands its wire records; false: no room for this one.
pub type Out<'o> = &'o mut dyn FnMut(&Record<'_>) -> bool;

/// What applying a received record did: whether the zone changed and how
/// many records were evicted.
pub type Applied = Result<(bool, u64), ApplyError>;

/// What a kind of zone supplies: its names, its value layout on the wire
/// and its merge rule.
pub trait ZoneKind {
    /// Wire kind and version (docs/PROTOCOL.md, "Zone kinds").
    const KIND: u8;
    const KIND_VERSION: u16;
    /// The zone directive's kind for messages ("keyval").
    const WHAT: &'static str;
    /// What eviction takes, for the log line ("least recently written
    /// records").
    const EVICTS: &'static str;

    fn name(&self) -> &[u8];
    /// The zone's table, once initialised.
    fn shm(&self) -> Option<&Shm>;
    /// Hands `out` the wire record of the local change to `v.r`.
    fn emit_change(&self, v: &Visit<'_, '_>, out: Out<'_>) -> bool;
    /// Hands `out` the wire records of `v.r` for a snapshot, from position
    /// `sub` on (0: the start; the kind's own meaning otherwise); true when
    /// all went, false (with `sub` updated) when `out` refused one.
    fn emit_snapshot(&self, v: &Visit<'_, '_>, sub: &mut u64, out: Out<'_>) -> bool;
    /// Applies a received record under the lock.
    fn apply_locked(&self, t: &mut Table<'_>, rec: &Record<'_>, now: u64, wall: u64) -> Applied;

    /// Logs a local write the zone refused, at `error`: `item` says what
    /// was written ("session"), `key` is shown up to 64 bytes.
    fn log_refused(&self, log: *mut ngx_log_t, item: &str, key: &[u8], why: &str) {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "{} zone \"{}\": could not store {} \"{}\": {}",
            Self::WHAT,
            String::from_utf8_lossy(self.name()),
            item,
            String::from_utf8_lossy(&key[..key.len().min(64)]),
            why
        );
    }

    /// Logs evictions, at most once a second per zone.
    fn log_evictions(&self, log: *mut ngx_log_t, evicted: u64, now: u64) {
        let Some(shm) = self.shm() else { return };
        if evicted > 0 && shm.with(|t| t.should_log_eviction(now)) {
            ngx_log_error!(
                NGX_LOG_WARN,
                log,
                "{} zone \"{}\" is full, evicted {} {}",
                Self::WHAT,
                String::from_utf8_lossy(self.name()),
                evicted,
                Self::EVICTS
            );
        }
    }
}

/// The engine's view of a zone's `shm_zone->data` when that is the kind
/// itself (a kind's `crate::registry::KINDS` entry): none until the zone
/// is initialised.
///
/// # Safety
/// `data` is a `K` of a zone of the running cycle.
pub unsafe fn view<K: ZoneKind + 'static>(data: *mut c_void) -> Option<&'static dyn SyncZone> {
    let z = &*data.cast::<K>();
    z.shm()?;
    Some(z)
}

impl<K: ZoneKind> SyncZone for K {
    fn name(&self) -> &[u8] {
        ZoneKind::name(self)
    }
    fn kind(&self) -> u8 {
        K::KIND
    }
    fn kind_version(&self) -> u16 {
        K::KIND_VERSION
    }
    fn synced(&self) -> bool {
        self.shm().is_some_and(|s| s.sync)
    }
    fn records_total(&self) -> u64 {
        self.shm().map_or(0, |s| s.with(|t| t.counters().live))
    }
    fn records_pending(&self) -> u64 {
        self.shm().map_or(0, |s| {
            s.with(|t| t.counters().pending) + s.header().engine.inflight.load(Ordering::Relaxed)
        })
    }
    fn engine_shared(&self) -> Option<&EngineShared> {
        self.shm().map(|s| &s.header().engine)
    }
    fn drain_changes(&self, now: u64, out: &mut dyn FnMut(&Record<'_>) -> bool) -> usize {
        let Some(s) = self.shm() else { return 0 };
        let wall = crate::ngx_ext::wall_ms();
        s.with(|t| t.drain(&mut |t, r| self.emit_change(&Visit { t, r, now, wall }, out)))
    }
    fn snapshot(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        max: usize,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool {
        let Some(s) = self.shm() else { return true };
        let wall = crate::ngx_ext::wall_ms();
        let mut count = 0;
        s.with(|t| {
            t.walk(&mut cursor.table, &mut |t, r, sub| {
                self.emit_snapshot(&Visit { t, r, now, wall }, sub, &mut |rec| {
                    if count >= max || !out(rec) {
                        return false;
                    }
                    count += 1;
                    true
                })
            })
        })
    }
    fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<bool, ApplyError> {
        let Some(s) = self.shm() else {
            return Err(ApplyError::NoMemory);
        };
        let (changed, evicted) = s.with(|t| self.apply_locked(t, rec, now, wall))?;
        if evicted > 0 {
            // SAFETY: ngx_cycle is the running cycle.
            let log = unsafe { (*crate::ngx_ext::cycle()).log };
            self.log_evictions(log, evicted, now);
        }
        Ok(changed)
    }
    fn history(&self) -> History {
        self.shm().map_or(History::default(), |s| {
            s.with(|t| History {
                epoch: t.epoch(),
                horizon: t.horizon(),
                seq: t.seq(),
            })
        })
    }
    fn drained(&self) -> u64 {
        self.shm().map_or(0, |s| s.with(|t| t.drained()))
    }
    fn position(&self, node: u64) -> Option<(u64, u64)> {
        self.shm().and_then(|s| s.with(|t| t.position(node)))
    }
    fn set_position(&self, node: u64, epoch: u64, seq: u64) {
        if let Some(s) = self.shm() {
            s.with(|t| t.set_position(node, epoch, seq));
        }
    }
    fn changes(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool {
        let Some(s) = self.shm() else { return true };
        let wall = crate::ngx_ext::wall_ms();
        s.with(|t| {
            let t: &Table<'_> = t;
            let (mut sub, mut sub_seq) = (cursor.sub, cursor.sub_seq);
            let mut stopped = false;
            cursor.after = t.changes_since(cursor.after, &mut |r| {
                let seq = t.meta(r).seq;
                if seq != sub_seq {
                    (sub, sub_seq) = (0, seq);
                }
                if self.emit_snapshot(&Visit { t, r, now, wall }, &mut sub, out) {
                    sub = 0;
                    true
                } else {
                    stopped = true;
                    false
                }
            });
            (cursor.sub, cursor.sub_seq) = (sub, sub_seq);
            !stopped
        })
    }
    fn housekeeping(&self, now: u64) {
        if let Some(s) = self.shm() {
            s.with(|t| {
                t.expire(now, EXPIRE_PER_TICK);
                t.sample_expire(now, SAMPLE_BUCKETS, SAMPLE_ROUNDS);
            });
        }
    }
}

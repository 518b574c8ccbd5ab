//! Versioned records on a [`Table`]: the keyval kind's writes, deletes and
//! merge rule (newest `(hlc, origin)` wins, deletes are tombstones).
//!
//! Lifetimes: a record lives for the zone's `timeout=` or its own `expire`
//! (0 = never). A tombstone must outlive every version it can shadow, or a
//! late copy of that version would come back after it is purged: it is
//! kept for the zone's tombstone lifetime ([`merge::tombstone_ttl_ms`]),
//! and at least as long as the record it replaces would have lived (for
//! ever if that one never expired; in a zone without `timeout=`, where
//! records never expire, until the zone evicts it). A received `ttl_ms` of
//! 0 means no expiry, for values and tombstones alike (docs/PROTOCOL.md).
//!
//! A zone created afresh (a restart, a reload that changed its size) starts
//! its clock from the wall clock and may be behind what its peers issued.
//! Local writes made before the zone has heard from any peer are marked
//! early. A received version that would beat an early write, stamped ahead
//! of this node's wall clock (the sender's clock, or what it observed, ran
//! ahead of ours), within [`EARLY_WINDOW_MS`] of the first record received,
//! is taken as older than the write (this node could not observe it when
//! it wrote): the local write is stamped again above it and sent. Versions
//! stamped at or behind our wall clock follow the merge rule as always.

use super::{Rec, Table, TableError, Write};
use crate::hlc::{self, SharedHlc};
use crate::merge::{self, Decision, Version};
use crate::wire::RecordRef;

/// How long after the first received record an early local write still
/// wins against versions received (see the module doc).
pub const EARLY_WINDOW_MS: u64 = 60_000;

/// The moment of an operation: monotonic and wall-clock ms, and the
/// zone's clock.
#[derive(Clone, Copy)]
pub struct At<'c> {
    pub now: u64,
    pub wall: u64,
    pub clock: &'c SharedHlc,
}

/// A keyval zone's parameters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kv {
    /// `timeout=` in ms, 0 = none.
    pub timeout: u64,
    pub sync: bool,
    /// This node's id.
    pub node: u64,
}

/// Why an API write was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiWriteError {
    /// POST of a key that exists.
    Exists,
    /// POST of several keys into a zone that is not empty.
    NotEmpty,
    /// PATCH of a key that does not exist.
    NotFound,
    Table(TableError),
}

impl From<TableError> for ApiWriteError {
    fn from(e: TableError) -> Self {
        ApiWriteError::Table(e)
    }
}

fn any(_: &Table<'_>, _: Rec) -> bool {
    true
}

/// The later of two deadlines, 0 being never.
fn later(a: u64, b: u64) -> u64 {
    if a == 0 || b == 0 {
        0
    } else {
        a.max(b)
    }
}

impl Kv {
    fn deadline(&self, expire_ms: Option<u64>, now: u64) -> u64 {
        match expire_ms.unwrap_or(self.timeout) {
            0 => 0,
            ttl => now.saturating_add(ttl),
        }
    }

    /// The deadline of a tombstone replacing `old` at `now`.
    fn tombstone_deadline(&self, t: &Table<'_>, old: Option<Rec>, now: u64) -> u64 {
        let own = merge::tombstone_ttl_ms(Some(self.timeout)).map_or(0, |t| now.saturating_add(t));
        match old {
            Some(r) if !t.is_expired(r, now) => later(own, t.meta(r).expire),
            _ => own,
        }
    }

    fn local(&self, t: &Table<'_>, hlc: u64, expire: u64, tombstone: bool) -> Write {
        Write {
            hlc,
            origin: self.node,
            expire,
            tombstone,
            queue: self.sync,
            early: self.sync && t.first_remote() == 0,
        }
    }

    /// A local write; `expire_ms` overrides the zone timeout (0 = never).
    /// Records changed at or after sequence number `protect` are not
    /// evicted to make room (`u64::MAX`: any may be). Returns how many
    /// records were evicted.
    pub fn set(
        &self,
        t: &mut Table<'_>,
        key: &[u8],
        value: &[u8],
        expire_ms: Option<u64>,
        at: &At<'_>,
        protect: u64,
    ) -> Result<u64, TableError> {
        t.expire(at.now, 4);
        let w = self.local(
            t,
            at.clock.next(at.wall),
            self.deadline(expire_ms, at.now),
            false,
        );
        Ok(t.write(key, value, &w, protect, &mut any)?.1)
    }

    /// A local delete: a tombstone in a synced zone, gone otherwise.
    /// Returns whether a live record was there.
    pub fn delete(&self, t: &mut Table<'_>, key: &[u8], at: &At<'_>) -> bool {
        let now = at.now;
        let Some(r) = t.get(key, now) else {
            return false;
        };
        if !self.sync {
            t.remove(r);
            return true;
        }
        let expire = self.tombstone_deadline(t, Some(r), now);
        let w = self.local(t, at.clock.next(at.wall), expire, true);
        // A tombstone is smaller than the record it replaces, but may
        // still find no room in a full zone: then the record is simply
        // removed (peers keep theirs until they expire it).
        if t.write(key, b"", &w, u64::MAX, &mut any).is_err() {
            if let Some(r) = t.find(key) {
                t.remove(r);
            }
        }
        true
    }

    /// Whether a live record exists (walks the change list from the
    /// newest, stopping at the first live record).
    fn has_live(t: &Table<'_>, now: u64) -> bool {
        if t.counters().live == 0 {
            return false;
        }
        let mut r = t.newest();
        while let Some(x) = r {
            if t.is_live(x, now) {
                return true;
            }
            r = t.older(x);
        }
        false
    }

    /// An API `POST`: inserts `entries` (distinct keys), all or nothing.
    /// With `only_if_empty` the zone must hold no live record; otherwise
    /// no entry may exist yet. Records older than the batch may be evicted
    /// to make room, never the batch's own. Returns the evictions.
    pub fn insert_new(
        &self,
        t: &mut Table<'_>,
        entries: &[(&[u8], &[u8], Option<u64>)],
        only_if_empty: bool,
        at: &At<'_>,
    ) -> Result<u64, ApiWriteError> {
        let now = at.now;
        t.expire(now, 4);
        if only_if_empty && Self::has_live(t, now) {
            return Err(ApiWriteError::NotEmpty);
        }
        if entries.iter().any(|e| t.get(e.0, now).is_some()) {
            return Err(ApiWriteError::Exists);
        }
        let protect = t.counters().seq + 1;
        let mut evicted = 0;
        for (i, &(key, value, expire)) in entries.iter().enumerate() {
            match self.set(t, key, value, expire, at, protect) {
                Ok(ev) => evicted += ev,
                Err(e) => {
                    // Undo the batch. A tombstone a batch key replaced is
                    // not restored: like an eviction, it only means a peer
                    // may keep an older copy of that key.
                    for &(done, _, _) in &entries[..i] {
                        if let Some(r) = t.find(done) {
                            t.remove(r);
                        }
                    }
                    return Err(e.into());
                }
            }
        }
        Ok(evicted)
    }

    /// An API `PATCH` of one live key: a new value and/or a new `expire`
    /// (0 = never). A new value without `expire` restarts the zone
    /// timeout, as any write does; `expire` alone keeps the value.
    pub fn update(
        &self,
        t: &mut Table<'_>,
        key: &[u8],
        value: Option<&[u8]>,
        expire_ms: Option<u64>,
        at: &At<'_>,
    ) -> Result<u64, ApiWriteError> {
        let Some(r) = t.get(key, at.now) else {
            return Err(ApiWriteError::NotFound);
        };
        let value = match value {
            Some(v) => v.to_vec(),
            None => t.value(r).to_vec(),
        };
        Ok(self.set(t, key, &value, expire_ms, at, u64::MAX)?)
    }

    /// Applies a record received from a peer: newest `(hlc, origin)` wins.
    /// Returns whether the zone changed. The zone has now heard from a peer
    /// (see the module doc on early writes).
    pub fn apply(
        &self,
        t: &mut Table<'_>,
        rec: &RecordRef<'_>,
        at: &At<'_>,
    ) -> Result<bool, TableError> {
        self.merge(t, rec, at, true)
    }

    /// Applies a record loaded from this node's state file, by the same
    /// merge rule as [`Self::apply`], without counting as having heard
    /// from a peer: local writes stay early until a peer's record arrives.
    pub fn load(
        &self,
        t: &mut Table<'_>,
        rec: &RecordRef<'_>,
        at: &At<'_>,
    ) -> Result<bool, TableError> {
        self.merge(t, rec, at, false)
    }

    fn merge(
        &self,
        t: &mut Table<'_>,
        rec: &RecordRef<'_>,
        at: &At<'_>,
        from_peer: bool,
    ) -> Result<bool, TableError> {
        let At { now, wall, clock } = *at;
        clock.observe(rec.hlc, wall);
        let first = t.first_remote();
        if from_peer {
            t.note_remote(now);
        }
        t.expire(now, 2);
        // The key is looked up once, for the merge rule and the write.
        let slot = t.slot(rec.key);
        let old = slot.rec;
        let existing = old.map(|r| {
            let m = t.meta(r);
            Version::new(m.hlc, m.origin)
        });
        if merge::decide_at(existing, rec.version(), wall) == Decision::Ignore {
            return Ok(false);
        }
        if let Some(r) = old {
            let m = t.meta(r);
            let window_open = first == 0 || now < first.saturating_add(EARLY_WINDOW_MS);
            let ahead = hlc::wall_of(rec.hlc) > wall;
            if m.early && m.origin == self.node && ahead && window_open && !t.is_expired(r, now) {
                // Our write made before we could see this version wins:
                // stamp it again above everything observed, and send it.
                t.changed(r, clock.next(wall), self.sync);
                return Ok(false);
            }
        }
        let expire = if rec.ttl_ms == 0 {
            0
        } else {
            now.saturating_add(u64::from(rec.ttl_ms))
        };
        let (expire, value) = if rec.is_tombstone() {
            let floor = match old {
                Some(r) if !t.is_expired(r, now) => t.meta(r).expire,
                _ => expire,
            };
            (later(expire, floor), &[][..])
        } else {
            (expire, rec.value)
        };
        let w = Write {
            hlc: rec.hlc,
            origin: rec.origin,
            expire,
            tombstone: rec.is_tombstone(),
            queue: false,
            early: false,
        };
        t.write_at(slot, rec.key, value, &w, u64::MAX, &mut any)?;
        Ok(true)
    }

    /// The wire record of `r` at `now`.
    pub fn record<'t>(t: &'t Table<'_>, r: Rec, now: u64) -> RecordRef<'t> {
        let m = t.meta(r);
        let ttl = if m.expire == 0 {
            0
        } else {
            m.expire.saturating_sub(now).clamp(1, u64::from(u32::MAX)) as u32
        };
        if m.tombstone {
            RecordRef::tombstone(t.key(r), m.hlc, m.origin, ttl)
        } else {
            RecordRef::put(t.key(r), t.value(r), m.hlc, m.origin, ttl)
        }
    }
}

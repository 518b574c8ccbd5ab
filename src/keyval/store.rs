//! The keyval store: the zone's table ([`crate::shm`]) with keyval's
//! rules ([`zone_sync_core::table::kv`]): string values, newest version
//! wins, deletes are tombstones in synced zones.

use zone_sync_core::table::kv::{self, At, Kv};
use zone_sync_core::table::{Cursor, Table, TableError, RECORD_HEADER};

use crate::kinds::Record;
use crate::shm::Shm;

/// Records an API listing copies out per hold of the zone's lock.
const LIST_BATCH: usize = 256;

/// Why a write was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Key over 65535 bytes or record over the sync buffer size.
    TooLarge,
    /// The zone cannot hold the record even after evicting everything else.
    NoMemory,
}

impl From<TableError> for StoreError {
    fn from(e: TableError) -> Self {
        match e {
            TableError::TooLarge => StoreError::TooLarge,
            TableError::NoMemory | TableError::TooManyOrigins => StoreError::NoMemory,
        }
    }
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
    Store(StoreError),
}

impl From<StoreError> for ApiWriteError {
    fn from(e: StoreError) -> Self {
        ApiWriteError::Store(e)
    }
}

impl From<kv::ApiWriteError> for ApiWriteError {
    fn from(e: kv::ApiWriteError) -> Self {
        match e {
            kv::ApiWriteError::Exists => ApiWriteError::Exists,
            kv::ApiWriteError::NotEmpty => ApiWriteError::NotEmpty,
            kv::ApiWriteError::NotFound => ApiWriteError::NotFound,
            kv::ApiWriteError::Table(t) => ApiWriteError::Store(t.into()),
        }
    }
}

/// What a local write did to the zone.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub evicted: u64,
    /// No change was queued before: the sync engine needs a wake-up (a
    /// busy zone's later writes find it awake, and cost no syscall).
    pub wake: bool,
}

/// A live record copied out of the table: key, value, remaining ms (0 =
/// never expires), hlc, origin.
type Copied = (Vec<u8>, Vec<u8>, u64, u64, u64);

/// A keyval zone as seen by one process.
pub struct Store {
    /// The zone's table (`shm.sync`: declared with `sync`).
    pub shm: Shm,
    /// `timeout=` in ms, 0 = none.
    pub timeout: u64,
    /// The `type=ip`/`prefix` index and change counter (zones with a type
    /// or a `state=` file), the table's observer.
    pub index: Option<&'static super::index::Index>,
}

impl Store {
    fn kv(&self, node_id: u64) -> Kv {
        Kv {
            timeout: self.timeout,
            sync: self.shm.sync,
            node: node_id,
        }
    }

    fn at(&self, now: u64, wall: u64) -> At<'_> {
        At {
            now,
            wall,
            clock: self.shm.hlc(),
        }
    }

    /// Calls `f` with the value stored under `key`, if any and not expired,
    /// and its remaining lifetime in ms (0 = never expires).
    pub fn get<R>(&self, key: &[u8], now: u64, f: impl FnOnce(&[u8], u64) -> R) -> Option<R> {
        self.shm.with(|t| {
            let r = t.get(key, now)?;
            Some(f(t.value(r), t.remaining(r, now)?))
        })
    }

    /// Visits every live record: `f(key, value, remaining ms or 0)`, in
    /// memory order. The records are copied out a batch at a time and the
    /// zone's lock is released between batches, so a large zone's listing
    /// does not stall other workers; a record changed meanwhile is seen
    /// with its old or its new value.
    pub fn for_each(&self, now: u64, mut f: impl FnMut(&[u8], &[u8], u64)) {
        self.for_each_versioned(now, |k, v, left, _, _| f(k, v, left));
    }

    /// [`Self::for_each`] with each record's version: `f(key, value,
    /// remaining ms or 0, hlc, origin)` (the state file keeps them).
    pub fn for_each_versioned(&self, now: u64, mut f: impl FnMut(&[u8], &[u8], u64, u64, u64)) {
        let mut cursor = Cursor::default();
        let mut batch: Vec<Copied> = Vec::with_capacity(LIST_BATCH);
        loop {
            let done = self.shm.with(|t| {
                t.walk(&mut cursor, &mut |t, r, _| {
                    if batch.len() >= LIST_BATCH {
                        return false;
                    }
                    if t.is_live(r, now) {
                        let left = t.remaining(r, now).unwrap_or(0);
                        let m = t.meta(r);
                        let (k, v) = (t.key(r).to_vec(), t.value(r).to_vec());
                        batch.push((k, v, left, m.hlc, m.origin));
                    }
                    true
                })
            });
            for (k, v, left, hlc, origin) in batch.drain(..) {
                f(&k, &v, left, hlc, origin);
            }
            if done {
                return;
            }
        }
    }

    /// A local write (variable assignment or API). `expire_ms` overrides the
    /// zone timeout (API `expire`); `None` uses the zone's `timeout=`.
    pub fn set(
        &self,
        key: &[u8],
        value: &[u8],
        expire_ms: Option<u64>,
        now: u64,
        wall: u64,
        node_id: u64,
    ) -> Result<WriteOutcome, StoreError> {
        self.check_size(key.len(), value.len())?;
        let kv = self.kv(node_id);
        self.shm.with(|t| {
            let idle = t.counters().pending == 0;
            let evicted = kv.set(t, key, value, expire_ms, &self.at(now, wall), u64::MAX)?;
            Ok(WriteOutcome {
                evicted,
                wake: self.shm.sync && idle,
            })
        })
    }

    /// A local delete: a tombstone in synced zones, gone otherwise.
    /// Returns whether a live record was there.
    pub fn delete(&self, key: &[u8], now: u64, wall: u64, node_id: u64) -> bool {
        let kv = self.kv(node_id);
        self.shm.with(|t| kv.delete(t, key, &self.at(now, wall)))
    }

    /// Deletes every live record (API `DELETE`).
    pub fn clear(&self, now: u64, wall: u64, node_id: u64) {
        let mut keys = Vec::new();
        self.for_each(now, |k, _, _| keys.push(k.to_vec()));
        for k in keys {
            self.delete(&k, now, wall, node_id);
        }
    }

    /// An API `POST`: inserts `entries` (distinct keys) under one lock, all
    /// or nothing. With `only_if_empty` the zone must hold no live record
    /// (`NotEmpty`); otherwise no entry may exist yet (`Exists`). An entry's
    /// `expire` (ms; 0 = never) overrides the zone timeout. Records older
    /// than the batch may be evicted to make room, never the batch's own.
    pub fn insert_new(
        &self,
        entries: &[(&[u8], &[u8], Option<u64>)],
        only_if_empty: bool,
        now: u64,
        wall: u64,
        node_id: u64,
    ) -> Result<WriteOutcome, ApiWriteError> {
        for &(key, value, _) in entries {
            self.check_api_size(key.len(), value.len())?;
        }
        let kv = self.kv(node_id);
        let evicted = self
            .shm
            .with(|t| kv.insert_new(t, entries, only_if_empty, &self.at(now, wall)))?;
        Ok(WriteOutcome {
            evicted,
            wake: self.shm.sync,
        })
    }

    /// An API `PATCH` of one live key: a new value and/or a new `expire`
    /// (ms; 0 = never), under one lock. A new value without `expire`
    /// restarts the zone timeout, as any write does; `expire` alone keeps
    /// the value.
    pub fn update(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
        expire_ms: Option<u64>,
        now: u64,
        wall: u64,
        node_id: u64,
    ) -> Result<WriteOutcome, ApiWriteError> {
        if let Some(value) = value {
            self.check_api_size(key.len(), value.len())?;
        }
        let kv = self.kv(node_id);
        let evicted = self
            .shm
            .with(|t| kv.update(t, key, value, expire_ms, &self.at(now, wall)))?;
        Ok(WriteOutcome {
            evicted,
            wake: self.shm.sync,
        })
    }

    /// [`Self::check_size`], and no record larger than a quarter of the
    /// zone: storing it would evict most of the zone (an API client cannot
    /// empty a zone by sending one huge value).
    fn check_api_size(&self, key_len: usize, value_len: usize) -> Result<(), StoreError> {
        self.check_size(key_len, value_len)?;
        if RECORD_HEADER + key_len + value_len > self.shm.pool_size() / 4 {
            return Err(StoreError::TooLarge);
        }
        Ok(())
    }

    fn check_size(&self, key_len: usize, value_len: usize) -> Result<(), StoreError> {
        if self.shm.fits(key_len, value_len) {
            Ok(())
        } else {
            Err(StoreError::TooLarge)
        }
    }

    /// Loads a record of this node's state file: newest (hlc, origin)
    /// wins, and the zone has not heard from a peer by it (local writes
    /// made before a peer's record arrives stay early). Returns whether
    /// the zone changed.
    pub fn load(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<bool, StoreError> {
        let kv = self.kv(crate::node_id());
        self.shm.with(|t| Ok(kv.load(t, rec, &self.at(now, wall))?))
    }

    /// Applies a record received from a peer (newest (hlc, origin) wins),
    /// with the zone's lock held. Returns whether the zone changed.
    pub fn apply_locked(
        &self,
        t: &mut Table<'_>,
        rec: &Record<'_>,
        now: u64,
        wall: u64,
    ) -> Result<bool, StoreError> {
        let kv = self.kv(crate::node_id());
        Ok(kv.apply(t, rec, &self.at(now, wall))?)
    }

    /// Records evicted so far.
    pub fn evictions(&self) -> u64 {
        self.shm.with(|t| t.counters().evictions)
    }
}

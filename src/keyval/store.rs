//! The keyval store: records in an nginx shared-memory zone, allocated from
//! its slab pool and guarded by the slab mutex.
//!
//! Layout: an rbtree indexed by (hash, key) for lookups and ordered
//! snapshot iteration, a queue of every record by last write (expiry and
//! eviction take from its tail), and a queue of records changed locally
//! that the sync engine has not sent yet. Deleted records of synced zones
//! stay as tombstones until no peer can still send an older version.
//! Nothing in the zone points outside it.

use core::mem::offset_of;
use core::ptr;
use core::sync::atomic::Ordering;

use nginx_sys::{
    ngx_queue_empty, ngx_queue_init, ngx_queue_insert_after, ngx_queue_insert_before,
    ngx_queue_remove, ngx_queue_t, ngx_rbtree_node_t, ngx_rbtree_t, ngx_slab_pool_t,
};
use zone_sync_core::hlc::SharedHlc;
use zone_sync_core::merge::{self, Decision, Version};

use crate::kinds::{Record, SnapshotCursor};
use crate::shm::{keytree, SlabLock};

const TOMBSTONE: u8 = 1;
const QUEUED: u8 = 2;

/// How many expired records one write collects at most (as limit_req does,
/// the cost of expiry is spread over the writes).
const EXPIRE_PER_WRITE: usize = 4;

/// The zone header, at the start of the slab pool's data.
#[repr(C)]
pub struct Shared {
    tree: ngx_rbtree_t,
    sentinel: ngx_rbtree_node_t,
    /// Every record, most recently written first.
    by_write: ngx_queue_t,
    /// Records changed on this node, oldest first, not yet sent.
    changes: ngx_queue_t,
    live: u64,
    tombstones: u64,
    queued: u64,
    evictions: u64,
    last_evict_log: u64,
    /// Where the expiry sweep stopped: a hash in tree order.
    sweep_hash: u64,
    /// This node's hybrid logical clock for the zone.
    pub hlc: SharedHlc,
    /// Figures the sync engine publishes for the zone.
    pub engine: crate::kinds::EngineShared,
    /// The type=ip/prefix index and the change counter (index.rs).
    pub index: super::index::Index,
}

#[repr(C)]
struct Node {
    rb: ngx_rbtree_node_t,
    by_write: ngx_queue_t,
    changes: ngx_queue_t,
    hlc: u64,
    origin: u64,
    /// `ngx_current_msec` deadline; 0 = never.
    expire: u64,
    flags: u8,
    key_len: u16,
    value_len: u32,
    // key bytes, then value bytes
}

const DATA: usize = core::mem::size_of::<Node>();

impl Node {
    unsafe fn key<'a>(n: *const Node) -> &'a [u8] {
        core::slice::from_raw_parts(n.cast::<u8>().add(DATA), (*n).key_len as usize)
    }
    unsafe fn value<'a>(n: *const Node) -> &'a [u8] {
        core::slice::from_raw_parts(
            n.cast::<u8>().add(DATA + (*n).key_len as usize),
            (*n).value_len as usize,
        )
    }
    unsafe fn from_rb(p: *mut ngx_rbtree_node_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, rb)).cast()
    }
    unsafe fn from_by_write(p: *mut ngx_queue_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, by_write)).cast()
    }
    unsafe fn from_changes(p: *mut ngx_queue_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, changes)).cast()
    }
    fn is_tombstone(n: *const Node) -> bool {
        // SAFETY: callers pass live nodes.
        unsafe { (*n).flags & TOMBSTONE != 0 }
    }
    fn expired(n: *const Node, now: u64) -> bool {
        // SAFETY: callers pass live nodes.
        let e = unsafe { (*n).expire };
        e != 0 && e <= now
    }
}

/// Why a write was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreError {
    /// Key over 65535 bytes or record over the sync buffer size.
    TooLarge,
    /// The zone cannot hold the record even after evicting everything else.
    NoMemory,
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

/// What a local write did to the zone.
#[derive(Debug, Default)]
pub struct WriteOutcome {
    pub evicted: u64,
    /// The change queue was empty: the sync engine needs a wake-up (a
    /// busy zone's later writes find it awake, and cost no syscall).
    pub wake: bool,
}

/// A keyval zone as seen by one process.
pub struct Store {
    pool: *mut ngx_slab_pool_t,
    sh: *mut Shared,
    pub sync: bool,
    /// `timeout=` in ms, 0 = none.
    pub timeout: u64,
}

impl keytree::Keyed for Node {
    unsafe fn key_of<'a>(rb: *const ngx_rbtree_node_t) -> &'a [u8] {
        Node::key(Node::from_rb(rb.cast_mut()))
    }
}

impl Store {
    /// Initialises a new zone's header, or adopts the header of a zone that
    /// survived a reload.
    ///
    /// # Safety
    /// `pool` is the zone's slab pool; on first use nobody else touches it.
    pub unsafe fn init(pool: *mut ngx_slab_pool_t, reused: bool) -> Option<*mut Shared> {
        if reused {
            return Some((*pool).data.cast());
        }
        let lock = SlabLock::new(pool);
        let sh = lock.alloc(core::mem::size_of::<Shared>()).cast::<Shared>();
        drop(lock);
        if sh.is_null() {
            return None;
        }
        ptr::write_bytes(sh, 0, 1);
        nginx_sys::ngx_rbtree_init(
            ptr::addr_of_mut!((*sh).tree),
            ptr::addr_of_mut!((*sh).sentinel),
            Some(keytree::insert_value::<Node>),
        );
        ngx_queue_init(ptr::addr_of_mut!((*sh).by_write));
        ngx_queue_init(ptr::addr_of_mut!((*sh).changes));
        (*pool).data = sh.cast();
        Some(sh)
    }

    /// # Safety
    /// `pool` and `sh` belong to one initialised zone.
    pub unsafe fn new(
        pool: *mut ngx_slab_pool_t,
        sh: *mut Shared,
        sync: bool,
        timeout: u64,
    ) -> Self {
        Store {
            pool,
            sh,
            sync,
            timeout,
        }
    }

    pub fn shared(&self) -> &Shared {
        // SAFETY: sh points to the zone header for the life of the cycle;
        // the fields read without the lock are atomics.
        unsafe { &*self.sh }
    }

    fn lock(&self) -> SlabLock {
        // SAFETY: the pool is live; no method takes the lock twice.
        unsafe { SlabLock::new(self.pool) }
    }

    /// Live records (tombstones not counted). Expired records still in
    /// memory are counted until the housekeeping sweep frees them (within
    /// a second for zones up to a hundred records; see [`Store::expire`]):
    /// the count is a counter, not a walk over the zone under its lock.
    pub fn records_total(&self) -> u64 {
        let lock = self.lock();
        // SAFETY: under the lock.
        unsafe {
            self.expire_locked(&lock, crate::ngx_ext::current_msec(), EXPIRE_PER_WRITE);
            (*self.sh).live
        }
    }

    /// Local changes not yet delivered to every peer.
    pub fn records_pending(&self) -> u64 {
        let _l = self.lock();
        // SAFETY: read under the lock.
        unsafe { (*self.sh).queued + (*self.sh).engine.inflight.load(Ordering::Relaxed) }
    }

    pub fn evictions(&self) -> u64 {
        let _l = self.lock();
        // SAFETY: read under the lock.
        unsafe { (*self.sh).evictions }
    }

    unsafe fn find(&self, key: &[u8]) -> *mut Node {
        let n = keytree::find::<Node>(ptr::addr_of!((*self.sh).tree), key);
        if n.is_null() {
            ptr::null_mut()
        } else {
            Node::from_rb(n)
        }
    }

    /// Calls `f` with the value stored under `key`, if any and not expired.
    pub fn get<R>(&self, key: &[u8], now: u64, f: impl FnOnce(&[u8], u64) -> R) -> Option<R> {
        let _l = self.lock();
        // SAFETY: the tree is only read under the lock.
        unsafe {
            let n = self.find(key);
            if n.is_null() || Node::is_tombstone(n) || Node::expired(n, now) {
                return None;
            }
            let remaining = if (*n).expire == 0 {
                0
            } else {
                (*n).expire - now
            };
            Some(f(Node::value(n), remaining))
        }
    }

    /// Visits every live record: `f(key, value, remaining ms or 0)`.
    pub fn for_each(&self, now: u64, mut f: impl FnMut(&[u8], &[u8], u64)) {
        let _l = self.lock();
        // SAFETY: walking the queue under the lock; f cannot reach the store.
        unsafe {
            let head = ptr::addr_of_mut!((*self.sh).by_write);
            let mut q = (*head).next;
            while q != head {
                let n = Node::from_by_write(q);
                q = (*q).next;
                if Node::is_tombstone(n) || Node::expired(n, now) {
                    continue;
                }
                let remaining = if (*n).expire == 0 {
                    0
                } else {
                    (*n).expire - now
                };
                f(Node::key(n), Node::value(n), remaining);
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
        let ttl = expire_ms.unwrap_or(self.timeout);
        let lock = self.lock();
        // SAFETY: all zone memory is touched under the lock.
        unsafe {
            self.expire_locked(&lock, now, EXPIRE_PER_WRITE);
            let hlc = (*self.sh).hlc.next(wall);
            let v = Version {
                hlc,
                origin: node_id,
            };
            let expire = if ttl == 0 { 0 } else { now + ttl };
            let out = self.put_locked(&lock, key, value, v, expire, false, true)?;
            Ok(out)
        }
    }

    /// A local delete: a tombstone in synced zones, gone otherwise.
    /// Returns whether a live record was there.
    pub fn delete(&self, key: &[u8], now: u64, wall: u64, node_id: u64) -> bool {
        let lock = self.lock();
        // SAFETY: under the lock.
        unsafe {
            let n = self.find(key);
            if n.is_null() || Node::is_tombstone(n) || Node::expired(n, now) {
                return false;
            }
            if !self.sync {
                self.free_node(&lock, n);
                return true;
            }
            let hlc = (*self.sh).hlc.next(wall);
            let expire = now + merge::tombstone_ttl_ms(self.timeout_opt());
            let v = Version {
                hlc,
                origin: node_id,
            };
            // A tombstone is smaller than the record it replaces, but its
            // allocation can still fail in a full zone: then the record is
            // simply removed (peers keep theirs until they expire it).
            if self
                .put_locked(&lock, key, b"", v, expire, true, true)
                .is_err()
            {
                let n = self.find(key);
                if !n.is_null() {
                    self.free_node(&lock, n);
                }
            }
            true
        }
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
        let lock = self.lock();
        // SAFETY: all zone memory is touched under the lock.
        unsafe {
            self.expire_locked(&lock, now, EXPIRE_PER_WRITE);
            if only_if_empty && self.has_live_locked(now) {
                return Err(ApiWriteError::NotEmpty);
            }
            for &(key, _, _) in entries {
                let n = self.find(key);
                if !n.is_null() && !Node::is_tombstone(n) && !Node::expired(n, now) {
                    return Err(ApiWriteError::Exists);
                }
            }
            let mut total = WriteOutcome::default();
            for (i, &(key, value, expire_ms)) in entries.iter().enumerate() {
                let v = Version {
                    hlc: (*self.sh).hlc.next(wall),
                    origin: node_id,
                };
                let expire = self.deadline(expire_ms, now);
                match self.put_locked_keep(&lock, key, value, v, expire, false, true, i as u64) {
                    Ok(out) => total.evicted += out.evicted,
                    Err(e) => {
                        // Undo the batch. A tombstone a batch key replaced
                        // is not restored: like an eviction, it only
                        // means a peer may keep an older copy of that key.
                        for &(done, _, _) in &entries[..i] {
                            let n = self.find(done);
                            if !n.is_null() {
                                self.free_node(&lock, n);
                            }
                        }
                        return Err(e.into());
                    }
                }
            }
            Ok(total)
        }
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
        let lock = self.lock();
        // SAFETY: all zone memory is touched under the lock.
        unsafe {
            let n = self.find(key);
            if n.is_null() || Node::is_tombstone(n) || Node::expired(n, now) {
                return Err(ApiWriteError::NotFound);
            }
            // The old value is copied: put_locked writes into the node it
            // may be read from.
            let value = match value {
                Some(v) => v.to_vec(),
                None => Node::value(n).to_vec(),
            };
            let v = Version {
                hlc: (*self.sh).hlc.next(wall),
                origin: node_id,
            };
            let expire = self.deadline(expire_ms, now);
            Ok(self.put_locked(&lock, key, &value, v, expire, false, true)?)
        }
    }

    /// The deadline of a local write: `expire_ms` if given (0 = never),
    /// else the zone timeout.
    fn deadline(&self, expire_ms: Option<u64>, now: u64) -> u64 {
        let ttl = expire_ms.unwrap_or(self.timeout);
        if ttl == 0 {
            0
        } else {
            now.saturating_add(ttl)
        }
    }

    /// Whether any live, unexpired record exists (walks past tombstones
    /// and expired records, newest first; stops at the first live one).
    unsafe fn has_live_locked(&self, now: u64) -> bool {
        if (*self.sh).live == 0 {
            return false;
        }
        let head = ptr::addr_of_mut!((*self.sh).by_write);
        let mut q = (*head).next;
        while q != head {
            let n = Node::from_by_write(q);
            if !Node::is_tombstone(n) && !Node::expired(n, now) {
                return true;
            }
            q = (*q).next;
        }
        false
    }

    /// [`Self::check_size`], and no record larger than a quarter of the
    /// zone: storing it would evict most of the zone (an API client cannot
    /// empty a zone by sending one huge value).
    fn check_api_size(&self, key_len: usize, value_len: usize) -> Result<(), StoreError> {
        self.check_size(key_len, value_len)?;
        // SAFETY: start and end are set once when the pool is created.
        let zone =
            unsafe { ((*self.pool).end as usize).saturating_sub((*self.pool).start as usize) };
        if DATA + key_len + value_len > zone / 4 {
            return Err(StoreError::TooLarge);
        }
        Ok(())
    }

    fn timeout_opt(&self) -> Option<u64> {
        (self.timeout != 0).then_some(self.timeout)
    }

    fn check_size(&self, key_len: usize, value_len: usize) -> Result<(), StoreError> {
        if key_len > u16::MAX as usize || value_len > u32::MAX as usize {
            return Err(StoreError::TooLarge);
        }
        let max = self.shared().engine.max_record.load(Ordering::Relaxed);
        if self.sync
            && max != 0
            && zone_sync_core::wire::encoded_record_len(key_len, value_len) as u64 > max
        {
            return Err(StoreError::TooLarge);
        }
        Ok(())
    }

    /// Applies a record received from a peer: newest (hlc, origin) wins.
    /// Returns whether the zone changed.
    pub fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<bool, StoreError> {
        if rec.key.len() > u16::MAX as usize {
            return Err(StoreError::TooLarge);
        }
        let lock = self.lock();
        // SAFETY: under the lock.
        unsafe {
            (*self.sh).hlc.observe(rec.hlc, wall);
            let n = self.find(rec.key);
            let existing = (!n.is_null()).then(|| Version {
                hlc: (*n).hlc,
                origin: (*n).origin,
            });
            let incoming = Version {
                hlc: rec.hlc,
                origin: rec.origin,
            };
            if merge::decide_at(existing, incoming, wall) == Decision::Ignore {
                return Ok(false);
            }
            let expire = if rec.ttl_ms != 0 {
                now + u64::from(rec.ttl_ms)
            } else if rec.is_tombstone() {
                now + merge::tombstone_ttl_ms(self.timeout_opt())
            } else if self.timeout != 0 {
                now + self.timeout
            } else {
                0
            };
            let value = if rec.is_tombstone() {
                &[][..]
            } else {
                rec.value
            };
            self.put_locked(
                &lock,
                rec.key,
                value,
                incoming,
                expire,
                rec.is_tombstone(),
                false,
            )
            .map(|_| true)
        }
    }

    /// Stores a version of `key`, replacing the node when the size changes,
    /// evicting the least recently written records when the zone is full.
    #[allow(clippy::too_many_arguments)]
    unsafe fn put_locked(
        &self,
        lock: &SlabLock,
        key: &[u8],
        value: &[u8],
        v: Version,
        expire: u64,
        tombstone: bool,
        local: bool,
    ) -> Result<WriteOutcome, StoreError> {
        self.put_locked_keep(lock, key, value, v, expire, tombstone, local, 0)
    }

    /// [`Self::put_locked`] that never evicts the `keep` most recently
    /// written records (a batch insert protects the records it has just
    /// written this way).
    #[allow(clippy::too_many_arguments)]
    unsafe fn put_locked_keep(
        &self,
        lock: &SlabLock,
        key: &[u8],
        value: &[u8],
        v: Version,
        expire: u64,
        tombstone: bool,
        local: bool,
        keep: u64,
    ) -> Result<WriteOutcome, StoreError> {
        let sh = self.sh;
        let mut out = WriteOutcome::default();
        let old = self.find(key);
        let mut node = old;

        if old.is_null() || (*old).value_len as usize != value.len() {
            // Keep the old node out of the eviction candidates meanwhile.
            if !old.is_null() {
                ngx_queue_remove(ptr::addr_of_mut!((*old).by_write));
            }
            let size = DATA + key.len() + value.len();
            let mut p = lock.alloc(size).cast::<Node>();
            // Records in the write queue (the old node is out of it now).
            let queued = (*sh).live + (*sh).tombstones - u64::from(!old.is_null());
            while p.is_null() {
                if queued.saturating_sub(out.evicted) <= keep || !self.evict_one(lock) {
                    break;
                }
                out.evicted += 1;
                p = lock.alloc(size).cast::<Node>();
            }
            if !old.is_null() {
                ngx_queue_insert_after(
                    ptr::addr_of_mut!((*sh).by_write),
                    ptr::addr_of_mut!((*old).by_write),
                );
            }
            if out.evicted > 0 {
                (*sh).evictions += out.evicted;
            }
            if p.is_null() {
                return Err(StoreError::NoMemory);
            }
            ptr::write_bytes(p.cast::<u8>(), 0, DATA);
            (*p).key_len = key.len() as u16;
            ptr::copy_nonoverlapping(key.as_ptr(), p.cast::<u8>().add(DATA), key.len());
            (*p).rb.key = keytree::hash(key);
            if !old.is_null() {
                // Inherit the old node's place in the change queue.
                if (*old).flags & QUEUED != 0 {
                    (*p).flags |= QUEUED;
                    ngx_queue_insert_after(
                        ptr::addr_of_mut!((*old).changes),
                        ptr::addr_of_mut!((*p).changes),
                    );
                    ngx_queue_remove(ptr::addr_of_mut!((*old).changes));
                    (*old).flags &= !QUEUED;
                }
                self.free_node_keep_changes(lock, old);
            }
            nginx_sys::ngx_rbtree_insert(ptr::addr_of_mut!((*sh).tree), ptr::addr_of_mut!((*p).rb));
            ngx_queue_insert_after(
                ptr::addr_of_mut!((*sh).by_write),
                ptr::addr_of_mut!((*p).by_write),
            );
            if tombstone {
                (*p).flags |= TOMBSTONE;
                (*sh).tombstones += 1;
            } else {
                (*sh).live += 1;
                (*sh).index.added(key);
            }
            node = p;
        } else {
            ngx_queue_remove(ptr::addr_of_mut!((*node).by_write));
            ngx_queue_insert_after(
                ptr::addr_of_mut!((*sh).by_write),
                ptr::addr_of_mut!((*node).by_write),
            );
            let was_tomb = Node::is_tombstone(node);
            if was_tomb && !tombstone {
                (*sh).tombstones -= 1;
                (*sh).live += 1;
                (*sh).index.added(key);
                (*node).flags &= !TOMBSTONE;
            } else if !was_tomb && tombstone {
                (*sh).live -= 1;
                (*sh).index.removed(key);
                (*sh).tombstones += 1;
                (*node).flags |= TOMBSTONE;
            }
        }

        (*node).value_len = value.len() as u32;
        ptr::copy_nonoverlapping(
            value.as_ptr(),
            node.cast::<u8>().add(DATA + key.len()),
            value.len(),
        );
        (*node).hlc = v.hlc;
        (*node).origin = v.origin;
        (*node).expire = expire;
        (*sh).index.touch();
        if local {
            out.wake = self.queue_change(node);
        }
        Ok(out)
    }

    /// Marks a local change for the sync engine (coalesced: a record already
    /// queued keeps its place).
    /// Returns whether the queue was empty before.
    unsafe fn queue_change(&self, node: *mut Node) -> bool {
        if !self.sync || (*node).flags & QUEUED != 0 {
            return false;
        }
        let was_empty = (*self.sh).queued == 0;
        (*node).flags |= QUEUED;
        ngx_queue_insert_before(
            ptr::addr_of_mut!((*self.sh).changes),
            ptr::addr_of_mut!((*node).changes),
        );
        (*self.sh).queued += 1;
        was_empty
    }

    /// Removes a node from every index and frees it.
    unsafe fn free_node(&self, lock: &SlabLock, n: *mut Node) {
        if (*n).flags & QUEUED != 0 {
            ngx_queue_remove(ptr::addr_of_mut!((*n).changes));
            (*self.sh).queued -= 1;
        }
        self.free_node_keep_changes(lock, n);
    }

    /// Removes a node from the tree and the write queue and frees it; the
    /// caller has dealt with the change queue.
    unsafe fn free_node_keep_changes(&self, lock: &SlabLock, n: *mut Node) {
        if Node::is_tombstone(n) {
            (*self.sh).tombstones -= 1;
        } else {
            (*self.sh).live -= 1;
            (*self.sh).index.removed(Node::key(n));
        }
        (*self.sh).index.touch();
        nginx_sys::ngx_rbtree_delete(
            ptr::addr_of_mut!((*self.sh).tree),
            ptr::addr_of_mut!((*n).rb),
        );
        ngx_queue_remove(ptr::addr_of_mut!((*n).by_write));
        lock.free(n.cast());
    }

    /// Evicts the least recently written record. False when none is left.
    unsafe fn evict_one(&self, lock: &SlabLock) -> bool {
        let head = ptr::addr_of_mut!((*self.sh).by_write);
        if ngx_queue_empty(head) {
            return false;
        }
        let n = Node::from_by_write((*head).prev);
        self.free_node(lock, n);
        true
    }

    /// Frees up to `max` expired records from the old end of the write
    /// queue; stops at the first record still alive.
    unsafe fn expire_locked(&self, lock: &SlabLock, now: u64, max: usize) {
        let head = ptr::addr_of_mut!((*self.sh).by_write);
        for _ in 0..max {
            if ngx_queue_empty(head) {
                return;
            }
            let n = Node::from_by_write((*head).prev);
            if !Node::expired(n, now) {
                return;
            }
            self.free_node(lock, n);
        }
    }

    /// Periodic expiry: up to `max` records from the old end of the write
    /// queue, then `sweep` records of a sweep that goes round the tree.
    /// The queue alone misses records that expire out of write order (an
    /// API `expire`, or old records received in a snapshot); the sweep
    /// frees them within (records / `sweep`) periods, and reads never see
    /// them meanwhile.
    pub fn expire(&self, now: u64, max: usize, sweep: usize) {
        let lock = self.lock();
        // SAFETY: under the lock; a node is unlinked only after its
        // successor has been found.
        unsafe {
            self.expire_locked(&lock, now, max);
            let tree = ptr::addr_of_mut!((*self.sh).tree);
            let sentinel = (*tree).sentinel;
            if (*tree).root == sentinel {
                return;
            }
            let mut n = keytree::first_after::<Node>(tree, (*self.sh).sweep_hash as usize, None);
            if n.is_null() {
                n = keytree::first(tree);
            }
            for _ in 0..sweep {
                if n.is_null() || n == sentinel {
                    (*self.sh).sweep_hash = 0;
                    return;
                }
                let next = nginx_sys::ngx_rbtree_next(tree, n);
                (*self.sh).sweep_hash = (*n).key as u64;
                let node = Node::from_rb(n);
                if Node::expired(node, now) {
                    self.free_node(&lock, node);
                }
                n = next;
            }
        }
    }

    /// Hands queued local changes to `out`, oldest first, until `out`
    /// refuses one (no room) or the queue is empty. Returns how many went.
    pub fn drain_changes(&self, now: u64, out: &mut dyn FnMut(&Record<'_>) -> bool) -> usize {
        let _l = self.lock();
        let mut sent = 0;
        // SAFETY: under the lock; `out` only copies the record.
        unsafe {
            let head = ptr::addr_of_mut!((*self.sh).changes);
            while !ngx_queue_empty(head) {
                let n = Node::from_changes((*head).next);
                if !out(&self.record(n, now)) {
                    break;
                }
                ngx_queue_remove(ptr::addr_of_mut!((*n).changes));
                (*n).flags &= !QUEUED;
                (*self.sh).queued -= 1;
                sent += 1;
            }
        }
        sent
    }

    /// Continues a snapshot after `cursor`, in (hash, key) order, until `out`
    /// refuses a record or `max` records went. Returns true when the whole
    /// zone has been visited.
    pub fn snapshot(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        max: usize,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool {
        let _l = self.lock();
        // SAFETY: under the lock.
        unsafe {
            let tree = ptr::addr_of_mut!((*self.sh).tree);
            let sentinel = (*tree).sentinel;
            let mut n = match &cursor.last {
                None => keytree::first(tree),
                Some((h, k)) => keytree::first_after::<Node>(tree, *h, Some(k)),
            };
            let mut count = 0;
            // The last node handed out; the cursor is updated once, on
            // the way out, instead of copying every key.
            let mut last: *mut ngx_rbtree_node_t = ptr::null_mut();
            let mut done = true;
            while !n.is_null() && n != sentinel {
                let node = Node::from_rb(n);
                if !Node::expired(node, now) {
                    if count >= max || !out(&self.record(node, now)) {
                        done = false;
                        break;
                    }
                    count += 1;
                }
                last = n;
                n = nginx_sys::ngx_rbtree_next(tree, n);
            }
            if !last.is_null() {
                cursor.last = Some(((*last).key, Node::key(Node::from_rb(last)).to_vec()));
            }
            done
        }
    }

    unsafe fn record<'a>(&self, n: *const Node, now: u64) -> Record<'a> {
        let ttl = if (*n).expire == 0 {
            0
        } else {
            ((*n).expire.saturating_sub(now)).clamp(1, u32::MAX as u64) as u32
        };
        if Node::is_tombstone(n) {
            Record::tombstone(Node::key(n), (*n).hlc, (*n).origin, ttl)
        } else {
            Record::put(Node::key(n), Node::value(n), (*n).hlc, (*n).origin, ttl)
        }
    }

    /// Logs evictions at most once a second per zone.
    pub fn should_log_eviction(&self, now: u64) -> bool {
        let _l = self.lock();
        // SAFETY: under the lock.
        unsafe {
            if now.saturating_sub((*self.sh).last_evict_log) < 1000 {
                return false;
            }
            (*self.sh).last_evict_log = now;
            true
        }
    }
}

//! The keys of a `sync_limit_req_zone` in nginx shared memory, allocated
//! from its slab pool and guarded by the slab mutex, as nginx's limit_req
//! keeps them.
//!
//! Layout: an rbtree indexed by (hash, key) for lookups and ordered
//! snapshot iteration; a queue of every key by last use (expiry and
//! eviction take from its tail, as limit_req's `queue`); and a queue of the
//! keys whose own share changed and that the sync engine has not sent yet.
//! A key's node holds its bucket ([`rate::Bucket`]: this node's share), a
//! slot array of peers' shares that grows on demand up to
//! [`rate::MAX_PEERS`], then the key bytes. Nothing in the zone points
//! outside it.

use core::mem::{offset_of, size_of};
use core::ptr;
use core::sync::atomic::Ordering;

use nginx_sys::{
    ngx_queue_empty, ngx_queue_init, ngx_queue_insert_after, ngx_queue_insert_before,
    ngx_queue_remove, ngx_queue_t, ngx_rbtree_node_t, ngx_rbtree_t, ngx_slab_pool_t,
};
use zone_sync_core::hlc::SharedHlc;
use zone_sync_core::merge::{self, Version};
use zone_sync_core::rate::{self, Applied, Bucket, Contribution, Share};
use zone_sync_core::wire::limit_req::{LimitReqValue, VALUE_LEN};

use crate::kinds::{Record, SnapshotCursor};
use crate::shm::{keytree, SlabLock};

/// The node is in the change queue.
const QUEUED: u16 = 1;

/// Stale keys collected per new key (limit_req: "one or two").
const EXPIRE_PER_INSERT: usize = 2;

/// The zone header, at the start of the slab pool's data.
#[repr(C)]
pub struct Shared {
    tree: ngx_rbtree_t,
    sentinel: ngx_rbtree_node_t,
    /// Every key, most recently used first.
    lru: ngx_queue_t,
    /// Keys whose own share changed, oldest first, not yet sent.
    changes: ngx_queue_t,
    keys: u64,
    queued: u64,
    evictions: u64,
    last_evict_log: u64,
    /// This node's hybrid logical clock for the zone.
    pub hlc: SharedHlc,
    /// Figures the sync engine publishes for the zone.
    pub engine: crate::kinds::EngineShared,
}

#[repr(C)]
struct Node {
    rb: ngx_rbtree_node_t,
    lru: ngx_queue_t,
    changes: ngx_queue_t,
    bucket: Bucket,
    /// Requests between their lookup and their accounting (limit_req's
    /// `count`): such a key is neither expired nor evicted.
    count: u32,
    flags: u16,
    /// Slots for peers' shares.
    cap: u16,
    key_len: u16,
    // [Share; cap], then the key bytes
}

const HEAD: usize = size_of::<Node>();
const _: () = assert!(HEAD.is_multiple_of(core::mem::align_of::<Share>()));

impl Node {
    const fn size(cap: usize, key_len: usize) -> usize {
        HEAD + cap * size_of::<Share>() + key_len
    }
    unsafe fn peers<'a>(n: *mut Node) -> &'a mut [Share] {
        core::slice::from_raw_parts_mut(n.cast::<u8>().add(HEAD).cast(), (*n).cap as usize)
    }
    unsafe fn key<'a>(n: *const Node) -> &'a [u8] {
        let off = HEAD + (*n).cap as usize * size_of::<Share>();
        core::slice::from_raw_parts(n.cast::<u8>().add(off), (*n).key_len as usize)
    }
    unsafe fn from_rb(p: *mut ngx_rbtree_node_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, rb)).cast()
    }
    unsafe fn from_lru(p: *mut ngx_queue_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, lru)).cast()
    }
    unsafe fn from_changes(p: *mut ngx_queue_t) -> *mut Node {
        p.byte_sub(offset_of!(Node, changes)).cast()
    }
}

/// What a lookup decided (limit_req's return codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rc {
    /// Over the burst: reject (nothing charged).
    Busy,
    /// Admitted and charged (the last limit of a location).
    Ok,
    /// Within the burst; charged later by [`Store::account`] or released
    /// by [`Store::unlock`] (an earlier limit of several).
    Again,
    /// The zone cannot hold the key even after evicting.
    Error,
}

#[derive(Clone, Copy, Debug)]
pub struct Lookup {
    pub rc: Rc,
    /// The bucket's level for this request, in thousandths (nginx's excess).
    pub excess: u64,
    /// Keys evicted to make room.
    pub evicted: u64,
    /// The key was just queued for sync: wake the engine.
    pub wake: bool,
}

/// Why a received record was not stored.
#[derive(Debug, PartialEq, Eq)]
pub enum ApplyError {
    Invalid,
    NoMemory,
}

/// A zone's keys as seen by one process.
pub struct Store {
    pool: *mut ngx_slab_pool_t,
    sh: *mut Shared,
    pub sync: bool,
    /// Thousandths of a request per second.
    pub rate: u64,
    /// The most a peer's share may claim ([`rate::share_cap`]).
    pub share_cap: u64,
}

impl keytree::Keyed for Node {
    unsafe fn key_of<'a>(rb: *const ngx_rbtree_node_t) -> &'a [u8] {
        Node::key(Node::from_rb(rb.cast_mut()))
    }
}

/// Snapshot position inside a key: the key, then the last origin sent
/// (`u64::MAX` once the whole key went), then the key's length.
fn cursor_encode(key: &[u8], origin: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 10);
    v.extend_from_slice(key);
    v.extend_from_slice(&origin.to_be_bytes());
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v
}

fn cursor_decode(v: &[u8]) -> Option<(&[u8], u64)> {
    let n = v.len().checked_sub(10)?;
    let len = u16::from_be_bytes([v[n + 8], v[n + 9]]) as usize;
    if len != n {
        return None;
    }
    let origin = u64::from_be_bytes(v[n..n + 8].try_into().ok()?);
    Some((&v[..n], origin))
}

impl Store {
    /// Initialises a new zone's header.
    ///
    /// # Safety
    /// `pool` is the zone's fresh slab pool; nobody else touches it yet.
    pub unsafe fn init(pool: *mut ngx_slab_pool_t) -> Option<*mut Shared> {
        let lock = SlabLock::new(pool);
        let sh = lock.alloc(size_of::<Shared>()).cast::<Shared>();
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
        ngx_queue_init(ptr::addr_of_mut!((*sh).lru));
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
        rate: u64,
        share_cap: u64,
    ) -> Self {
        Store {
            pool,
            sh,
            sync,
            rate,
            share_cap,
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

    /// Keys held.
    pub fn records_total(&self) -> u64 {
        let _l = self.lock();
        // SAFETY: read under the lock.
        unsafe { (*self.sh).keys }
    }

    /// Own shares not yet delivered to every peer.
    pub fn records_pending(&self) -> u64 {
        let _l = self.lock();
        // SAFETY: read under the lock.
        unsafe { (*self.sh).queued + (*self.sh).engine.inflight.load(Ordering::Relaxed) }
    }

    unsafe fn find(&self, key: &[u8]) -> *mut Node {
        let n = keytree::find::<Node>(ptr::addr_of!((*self.sh).tree), key);
        if n.is_null() {
            ptr::null_mut()
        } else {
            Node::from_rb(n)
        }
    }

    unsafe fn touch(&self, n: *mut Node) {
        ngx_queue_remove(ptr::addr_of_mut!((*n).lru));
        ngx_queue_insert_after(
            ptr::addr_of_mut!((*self.sh).lru),
            ptr::addr_of_mut!((*n).lru),
        );
    }

    /// nginx's `ngx_http_limit_req_lookup`: the decision for one request
    /// on one limit. With `account`, an admitted request is charged at
    /// once; otherwise the key is held for [`Store::account`] or
    /// [`Store::unlock`].
    pub fn lookup(&self, key: &[u8], burst: u64, account: bool, now: u64, wall: u64) -> Lookup {
        let lock = self.lock();
        // SAFETY: all zone memory is touched under the lock.
        unsafe {
            let n = self.find(key);
            if !n.is_null() {
                self.touch(n);
                let excess = rate::level(&(*n).bucket, Node::peers(n), self.rate, now);
                let mut out = Lookup {
                    rc: Rc::Busy,
                    excess,
                    evicted: 0,
                    wake: false,
                };
                // A synced zone tolerates clock granularity (rate::slack).
                let slack = if self.sync { rate::slack(self.rate) } else { 0 };
                if excess > burst.saturating_add(slack) {
                    return out;
                }
                if account {
                    (out.excess, out.wake) = self.charge(n, now, wall);
                    out.rc = Rc::Ok;
                    return out;
                }
                (*n).count += 1;
                out.rc = Rc::Again;
                return out;
            }

            self.expire_locked(&lock, now, EXPIRE_PER_INSERT);
            let (n, evicted) = self.alloc_node(&lock, 0, key.len());
            let mut out = Lookup {
                rc: Rc::Error,
                excess: 0,
                evicted,
                wake: false,
            };
            if n.is_null() {
                return out;
            }
            self.insert_node(n, key);
            (*n).bucket.last = now;
            if account {
                (_, out.wake) = self.charge(n, now, wall);
                out.rc = Rc::Ok;
            } else {
                (*n).count = 1;
                out.rc = Rc::Again;
            }
            out
        }
    }

    /// nginx's `ngx_http_limit_req_account` for one held key: charges the
    /// request (no burst check); returns the excess and whether to wake the
    /// engine.
    pub fn account(&self, key: &[u8], now: u64, wall: u64) -> Option<(u64, bool)> {
        let _l = self.lock();
        // SAFETY: under the lock.
        unsafe {
            let n = self.find(key);
            if n.is_null() {
                return None;
            }
            (*n).count = (*n).count.saturating_sub(1);
            Some(self.charge(n, now, wall))
        }
    }

    /// Releases a key held by [`Store::lookup`] without charging it.
    pub fn unlock(&self, key: &[u8]) {
        let _l = self.lock();
        // SAFETY: under the lock.
        unsafe {
            let n = self.find(key);
            if !n.is_null() {
                (*n).count = (*n).count.saturating_sub(1);
            }
        }
    }

    /// Charges one request to this node's share and queues it for sync.
    /// Returns the excess and whether the key was newly queued.
    unsafe fn charge(&self, n: *mut Node, now: u64, wall: u64) -> (u64, bool) {
        let excess = rate::charge(&mut (*n).bucket, Node::peers(n), self.rate, now);
        let mut queued = false;
        if self.sync {
            (*n).bucket.own_hlc = (*self.sh).hlc.next(wall);
            queued = self.queue_change(n);
        }
        (excess, queued)
    }

    /// Queues a key whose own share changed (coalesced: a queued key keeps
    /// its place). Keys too long for a sync buffer are never sent.
    unsafe fn queue_change(&self, n: *mut Node) -> bool {
        if (*n).flags & QUEUED != 0 {
            return false;
        }
        let max = (*self.sh).engine.max_record.load(Ordering::Relaxed);
        let len = zone_sync_core::wire::encoded_record_len((*n).key_len as usize, VALUE_LEN);
        if max != 0 && len as u64 > max {
            return false;
        }
        (*n).flags |= QUEUED;
        ngx_queue_insert_before(
            ptr::addr_of_mut!((*self.sh).changes),
            ptr::addr_of_mut!((*n).changes),
        );
        (*self.sh).queued += 1;
        true
    }

    /// Allocates a node, evicting the least recently used keys while the
    /// zone is full. Returns the node (null if even that failed) and how
    /// many keys went.
    unsafe fn alloc_node(&self, lock: &SlabLock, cap: usize, key_len: usize) -> (*mut Node, u64) {
        let size = Node::size(cap, key_len);
        let mut evicted = 0;
        let mut p = lock.alloc(size).cast::<Node>();
        while p.is_null() {
            if !self.evict_one(lock) {
                break;
            }
            evicted += 1;
            p = lock.alloc(size).cast::<Node>();
        }
        (*self.sh).evictions += evicted;
        if !p.is_null() {
            ptr::write_bytes(p.cast::<u8>(), 0, Node::size(cap, 0));
            (*p).cap = cap as u16;
        }
        (p, evicted)
    }

    /// Fills in a fresh node's key and links it everywhere.
    unsafe fn insert_node(&self, n: *mut Node, key: &[u8]) {
        (*n).key_len = key.len() as u16;
        let off = HEAD + (*n).cap as usize * size_of::<Share>();
        ptr::copy_nonoverlapping(key.as_ptr(), n.cast::<u8>().add(off), key.len());
        (*n).rb.key = keytree::hash(key);
        nginx_sys::ngx_rbtree_insert(
            ptr::addr_of_mut!((*self.sh).tree),
            ptr::addr_of_mut!((*n).rb),
        );
        ngx_queue_insert_after(
            ptr::addr_of_mut!((*self.sh).lru),
            ptr::addr_of_mut!((*n).lru),
        );
        (*self.sh).keys += 1;
    }

    /// Removes a node from every index and frees it.
    unsafe fn free_node(&self, lock: &SlabLock, n: *mut Node) {
        if (*n).flags & QUEUED != 0 {
            ngx_queue_remove(ptr::addr_of_mut!((*n).changes));
            (*self.sh).queued -= 1;
        }
        nginx_sys::ngx_rbtree_delete(
            ptr::addr_of_mut!((*self.sh).tree),
            ptr::addr_of_mut!((*n).rb),
        );
        ngx_queue_remove(ptr::addr_of_mut!((*n).lru));
        (*self.sh).keys -= 1;
        lock.free(n.cast());
    }

    /// Evicts the least recently used key, as limit_req does when the zone
    /// is full; not one a request holds. False when none can go.
    unsafe fn evict_one(&self, lock: &SlabLock) -> bool {
        let head = ptr::addr_of_mut!((*self.sh).lru);
        if ngx_queue_empty(head) {
            return false;
        }
        let n = Node::from_lru((*head).prev);
        if (*n).count != 0 {
            return false;
        }
        self.free_node(lock, n);
        true
    }

    /// Frees up to `max` stale keys from the old end of the use queue;
    /// stops at the first key still in use (limit_req's expire).
    unsafe fn expire_locked(&self, lock: &SlabLock, now: u64, max: usize) {
        let head = ptr::addr_of_mut!((*self.sh).lru);
        for _ in 0..max {
            if ngx_queue_empty(head) {
                return;
            }
            let n = Node::from_lru((*head).prev);
            if (*n).count != 0 || !rate::is_stale(&(*n).bucket, Node::peers(n), self.rate, now) {
                return;
            }
            self.free_node(lock, n);
        }
    }

    /// Periodic expiry from the sync worker's timer.
    pub fn expire(&self, now: u64, max: usize) {
        let lock = self.lock();
        // SAFETY: under the lock.
        unsafe { self.expire_locked(&lock, now, max) }
    }

    /// Moves a node to a bigger one with `cap` peer slots. Returns the new
    /// node, or null (the old one unchanged) if the zone has no room.
    unsafe fn grow(&self, lock: &SlabLock, n: *mut Node, cap: usize) -> *mut Node {
        let key_len = (*n).key_len as usize;
        // Keep the node out of the eviction candidates meanwhile.
        ngx_queue_remove(ptr::addr_of_mut!((*n).lru));
        let (p, _) = self.alloc_node(lock, cap, key_len);
        ngx_queue_insert_after(
            ptr::addr_of_mut!((*self.sh).lru),
            ptr::addr_of_mut!((*n).lru),
        );
        if p.is_null() {
            return p;
        }
        (*p).bucket = (*n).bucket;
        (*p).count = (*n).count;
        let old = Node::peers(n);
        Node::peers(p)[..old.len()].copy_from_slice(old);
        self.insert_node(p, Node::key(n));
        if (*n).flags & QUEUED != 0 {
            // Take over the old node's place in the change queue.
            (*p).flags |= QUEUED;
            ngx_queue_insert_after(
                ptr::addr_of_mut!((*n).changes),
                ptr::addr_of_mut!((*p).changes),
            );
            ngx_queue_remove(ptr::addr_of_mut!((*n).changes));
            (*n).flags &= !QUEUED;
        }
        // The new node is linked: unlink and free the old one.
        nginx_sys::ngx_rbtree_delete(
            ptr::addr_of_mut!((*self.sh).tree),
            ptr::addr_of_mut!((*n).rb),
        );
        ngx_queue_remove(ptr::addr_of_mut!((*n).lru));
        (*self.sh).keys -= 1;
        lock.free(n.cast());
        p
    }

    /// Applies a peer's share of a key: newest version per origin wins,
    /// this node's own share is never touched. Returns whether it changed
    /// the zone.
    pub fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<(bool, u64), ApplyError> {
        if rec.is_tombstone() || rec.key.is_empty() || rec.key.len() > u16::MAX as usize {
            return Err(ApplyError::Invalid);
        }
        let Some(v) = LimitReqValue::from_bytes(rec.value) else {
            return Err(ApplyError::Invalid);
        };
        if rec.origin == crate::node_id()
            || !merge::is_valid(Version::new(rec.hlc, rec.origin), wall)
        {
            return Ok((false, 0));
        }
        let c = Contribution {
            origin: rec.origin,
            hlc: rec.hlc,
            milli: v.excess_milli.min(self.share_cap),
            age_ms: v.last_ms,
        };
        let self_id = crate::node_id();
        let lock = self.lock();
        // SAFETY: all zone memory is touched under the lock.
        unsafe {
            (*self.sh).hlc.observe(rec.hlc, wall);
            let mut evicted = 0;
            let mut n = self.find(rec.key);
            if n.is_null() {
                // Nothing to remember of a share that has run out.
                let mut probe = Bucket::default();
                let mut slot = [Share::default(); 1];
                if rate::apply(&mut probe, &mut slot, self.rate, now, &c, self_id, false)
                    != Applied::Stored
                {
                    return Ok((false, 0));
                }
                self.expire_locked(&lock, now, EXPIRE_PER_INSERT);
                let (p, ev) = self.alloc_node(&lock, 2, rec.key.len());
                evicted += ev;
                if p.is_null() {
                    return Err(ApplyError::NoMemory);
                }
                self.insert_node(p, rec.key);
                (*p).bucket.last = now;
                n = p;
            } else {
                self.touch(n);
            }
            let mut may_grow = true;
            loop {
                match rate::apply(
                    &mut (*n).bucket,
                    Node::peers(n),
                    self.rate,
                    now,
                    &c,
                    self_id,
                    may_grow,
                ) {
                    Applied::Stored => return Ok((true, evicted)),
                    Applied::Ignored => return Ok((false, evicted)),
                    Applied::NeedRoom => {
                        let p = self.grow(&lock, n, rate::grown((*n).cap as usize));
                        if p.is_null() {
                            may_grow = false;
                        } else {
                            n = p;
                        }
                    }
                }
            }
        }
    }

    /// The record carrying this node's own share of a key.
    unsafe fn own_record<'a>(
        &self,
        n: *const Node,
        now: u64,
        buf: &'a mut [u8; VALUE_LEN],
    ) -> Record<'a> {
        let b = &(*n).bucket;
        *buf = LimitReqValue {
            excess_milli: b.own,
            last_ms: rate::age(b, now),
        }
        .to_bytes();
        Record::put(Node::key(n), &buf[..], b.own_hlc, crate::node_id(), 0)
    }

    /// Hands queued own shares to `out`, oldest first, until `out` refuses
    /// one or the queue is empty. Returns how many went.
    pub fn drain_changes(&self, now: u64, out: &mut dyn FnMut(&Record<'_>) -> bool) -> usize {
        let _l = self.lock();
        let mut sent = 0;
        // SAFETY: under the lock; `out` only copies the record.
        unsafe {
            let head = ptr::addr_of_mut!((*self.sh).changes);
            while !ngx_queue_empty(head) {
                let n = Node::from_changes((*head).next);
                let mut buf = [0u8; VALUE_LEN];
                if !out(&self.own_record(n, now, &mut buf)) {
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

    /// Continues a snapshot after `cursor`, in (hash, key) order, every
    /// non-zero share of every key whose bucket is not empty: this node's
    /// own and the peers' it knows, by origin. Stops when `out` refuses a
    /// record or `max` went; true when the whole zone has been visited.
    pub fn snapshot(
        &self,
        cursor: &mut SnapshotCursor,
        now: u64,
        max: usize,
        out: &mut dyn FnMut(&Record<'_>) -> bool,
    ) -> bool {
        let _l = self.lock();
        let self_id = crate::node_id();
        // SAFETY: under the lock.
        unsafe {
            let tree = ptr::addr_of_mut!((*self.sh).tree);
            let sentinel = (*tree).sentinel;
            let (mut n, mut after_origin) = match &cursor.last {
                None => (keytree::first(tree), None),
                Some((h, enc)) => match cursor_decode(enc) {
                    Some((key, origin)) if origin != u64::MAX => {
                        let n = self.find(key);
                        if !n.is_null() && (*n).rb.key == *h {
                            (ptr::addr_of_mut!((*n).rb), Some(origin))
                        } else {
                            (keytree::first_after::<Node>(tree, *h, Some(key)), None)
                        }
                    }
                    Some((key, _)) => (keytree::first_after::<Node>(tree, *h, Some(key)), None),
                    None => (keytree::first_after::<Node>(tree, *h, Some(enc)), None),
                },
            };
            let max_record = (*self.sh).engine.max_record.load(Ordering::Relaxed);
            let mut count = 0;
            while !n.is_null() && n != sentinel {
                let node = Node::from_rb(n);
                let b = &(*node).bucket;
                let peers = Node::peers(node);
                let len =
                    zone_sync_core::wire::encoded_record_len((*node).key_len as usize, VALUE_LEN);
                // Keys too long for a sync buffer stay local (never queued).
                let fits = max_record == 0 || len as u64 <= max_record;
                if fits && rate::level(b, peers, self.rate, now) > 0 {
                    let last_ms = rate::age(b, now);
                    let mut shares: Vec<Share> = peers[..(b.npeers as usize).min(peers.len())]
                        .iter()
                        .filter(|s| s.milli > 0)
                        .copied()
                        .collect();
                    if b.own > 0 && b.own_hlc != 0 {
                        shares.push(Share {
                            origin: self_id,
                            hlc: b.own_hlc,
                            milli: b.own,
                        });
                    }
                    shares.sort_unstable_by_key(|s| s.origin);
                    for s in shares {
                        if after_origin.is_some_and(|o| s.origin <= o) {
                            continue;
                        }
                        let value = LimitReqValue {
                            excess_milli: s.milli,
                            last_ms,
                        }
                        .to_bytes();
                        let rec = Record::put(Node::key(node), &value, s.hlc, s.origin, 0);
                        if count >= max || !out(&rec) {
                            return false;
                        }
                        count += 1;
                        cursor.last = Some(((*n).key, cursor_encode(Node::key(node), s.origin)));
                    }
                }
                after_origin = None;
                cursor.last = Some(((*n).key, cursor_encode(Node::key(node), u64::MAX)));
                n = nginx_sys::ngx_rbtree_next(tree, n);
            }
            true
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

    /// Keys evicted so far.
    pub fn evictions(&self) -> u64 {
        let _l = self.lock();
        // SAFETY: under the lock.
        unsafe { (*self.sh).evictions }
    }
}

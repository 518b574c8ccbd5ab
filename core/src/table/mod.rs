//! The one shared-memory table every zone kind is built on, over a plain
//! byte arena (in nginx, one block carved from the zone's slab pool; in
//! tests, a `Vec<u8>`). Everything in it is a `u32` offset into the arena,
//! so it holds no pointer and can be mapped at any address.
//!
//! # Layout
//!
//! * a header (counters, list ends, free lists, the interned origins),
//! * a hash index: a bucket array of `u32` heads, sized from the arena,
//!   chained through the records,
//! * blocks, each a record or a free block, allocated in 8-byte steps
//!   from segregated free lists and a bump pointer.
//!
//! A record is a 40-byte header (see [`rec`]), its key and its value.
//! Every change, local or received, gives the record the next zone-wide
//! sequence number and moves it to the head of one doubly linked list, so
//! the list is in change order: its tail is the least recently changed
//! record (eviction and in-order expiry take from there), and "the changes
//! since position S" are the records with `seq > S` (draining local
//! changes, and resuming a peer from what it acknowledged).
//!
//! # Expiry
//!
//! A record expires at its `expire` (monotonic ms, 0 = never). Records
//! written with the zone's own timeout expire in list order and leave from
//! the tail ([`Table::expire`]); the others (an API `expire`, a received
//! lifetime, a tombstone outliving its record) are found by sampling random
//! buckets, as Redis samples keys ([`Table::sample_expire`]); reads never
//! see an expired record meanwhile. Neither walks the zone.
//!
//! # Crash safety
//!
//! Every mutation sets a marker in the header first and clears it last. A
//! process that finds the marker set when it takes the lock knows the last
//! holder died mid-mutation, and calls [`Table::recover`], which rebuilds
//! the index, the list and the free lists from the blocks (or clears the
//! zone if the blocks themselves do not parse).

pub mod kv;
mod rec;
#[cfg(test)]
mod tests;

pub use rec::HEADER as RECORD_HEADER;

/// Header magic ("ztb2": the header holds the epoch, the replay horizon
/// and the peers' positions).
const MAGIC: u32 = 0x7a74_6232;

// Header fields (byte offsets).
const H_MAGIC: usize = 0;
const H_MUTATING: usize = 4;
const H_NBUCKETS: usize = 8;
const H_BUCKETS: usize = 12;
const H_DATA: usize = 16;
const H_END: usize = 20;
const H_TOP: usize = 24;
const H_HEAD: usize = 28;
const H_TAIL: usize = 32;
const H_NORIGINS: usize = 36;
const H_SEQ: usize = 40;
const H_DRAINED: usize = 48;
const H_LIVE: usize = 56;
const H_TOMBS: usize = 64;
const H_PENDING: usize = 72;
const H_EVICTIONS: usize = 80;
const H_EXPIRED: usize = 88;
const H_SEED: usize = 96;
const H_GEN: usize = 104;
const H_RNG: usize = 112;
const H_FREE_BYTES: usize = 120;
const H_LAST_EVICT_LOG: usize = 128;
const H_FIRST_REMOTE: usize = 136;
/// Allocations by nginx's slab slot sizes (8 bytes to 2 KiB, then one for
/// larger): used, requests, failures ([`Table::slot_stats`]).
const H_SLOTS: usize = 144;
pub const SLOTS: usize = 10;
const H_BITMAP: usize = H_SLOTS + SLOTS * 24;
/// Size classes: `size / 8` up to 254; 255 holds every larger block.
const NCLASS: usize = 256;
const LARGE: usize = NCLASS - 1;
const H_FREE: usize = H_BITMAP + NCLASS / 8;
const H_ORIGINS: usize = H_FREE + NCLASS * 4;
/// Most distinct origins (node ids) one zone remembers.
pub const MAX_ORIGINS: usize = 256;
/// The zone's epoch: random, drawn when the table is formatted (a new
/// zone, or one cleared): sequence numbers compare only within one epoch.
const H_EPOCH: usize = H_ORIGINS + MAX_ORIGINS * 8;
/// The replay horizon: changes after a sequence number below it may be
/// lost to the change list (a tombstone expired or evicted, records
/// dropped by a recovery), so a peer can only resume from it or later.
const H_HORIZON: usize = H_EPOCH + 8;
/// Peers' positions: (node id, epoch, seq) each.
const H_POSITIONS: usize = H_HORIZON + 8;
/// Most peers whose position in their history of this zone is kept.
pub const MAX_POSITIONS: usize = 64;
const H_SIZE: usize = H_POSITIONS + MAX_POSITIONS * 24;

/// Arena bytes per bucket of the index: about one bucket per record of a
/// 32-byte key and a 64-byte value (136 bytes).
const BYTES_PER_BUCKET: usize = 136;

/// The smallest arena a table accepts.
pub const MIN_ARENA: usize = H_SIZE + 4096;

/// The largest value a record holds (24 bits of length).
pub const MAX_VALUE: usize = (1 << 24) - 1;
/// The largest key.
pub const MAX_KEY: usize = u16::MAX as usize;
/// The largest expiry deadline (48 bits of ms).
pub const MAX_EXPIRE: u64 = (1 << 48) - 1;

/// A record: its offset in the arena. Valid until the next mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rec(u32);

/// A record's metadata.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    pub hlc: u64,
    pub origin: u64,
    /// Monotonic ms deadline, 0 = never.
    pub expire: u64,
    /// Zone-wide change number of its last change.
    pub seq: u64,
    pub tombstone: bool,
    /// A local change not drained yet.
    pub pending: bool,
    /// Written locally before the zone heard from any peer (see
    /// [`Table::first_remote`]).
    pub early: bool,
}

/// Where a key is in the index (see [`Table::slot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    bucket: usize,
    /// The key's record, if any.
    pub rec: Option<Rec>,
}

/// What to store with a write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Write {
    pub hlc: u64,
    pub origin: u64,
    pub expire: u64,
    pub tombstone: bool,
    /// A local change: queued for the sync engine (when `queue` is set).
    pub queue: bool,
    pub early: bool,
}

/// Why a write was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// Key or value over the record limits.
    TooLarge,
    /// No room even after evicting every record that may go.
    NoMemory,
    /// Every origin slot is taken.
    TooManyOrigins,
}

/// Where a walk in memory order stands (snapshots, API listings). Stays
/// valid while records come and go between batches: it names a block
/// boundary, and boundaries only disappear when free blocks are merged,
/// which bumps the layout generation and makes the walk find its place
/// again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Next block to visit; 0 = start.
    pub off: u32,
    /// Layout generation `off` belongs to.
    pub gen: u64,
    /// Position inside the record at `off`, for kinds that send several
    /// wire records per table record (0 = from its start).
    pub sub: u64,
}

/// What [`Table::recover`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub kept: u64,
    pub dropped: u64,
    /// The blocks did not parse: the zone was cleared.
    pub cleared: bool,
}

/// Counters of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub live: u64,
    pub tombstones: u64,
    pub pending: u64,
    pub evictions: u64,
    pub expired: u64,
    pub seq: u64,
}

/// splitmix64's finalizer: a well-mixed nonzero epoch from a seed.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).max(1)
}

/// The table's hash of a key, keyed by the zone's seed (a peer or a client
/// choosing keys cannot aim them at one bucket without knowing it).
pub fn hash(seed: u64, key: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = seed ^ (key.len() as u64).wrapping_mul(K);
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        h = (h ^ w).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    h = (h ^ u64::from_le_bytes(last)).wrapping_mul(K);
    h ^= h >> 32;
    h = h.wrapping_mul(K);
    h ^ (h >> 29)
}

/// The nginx slab slot of an allocation of `size` bytes: 8 bytes for slot
/// 0, doubling, the last slot for everything over 2 KiB.
fn slot_of(size: usize) -> usize {
    let bits = usize::BITS - size.saturating_sub(1).leading_zeros();
    (bits.saturating_sub(3) as usize).min(SLOTS - 1)
}

fn class_of(size: usize) -> usize {
    (size / 8).min(LARGE)
}

/// Told, under the zone's lock, what each mutation did to the records: a
/// kind's own figures about its keys that must follow every change,
/// whatever made it (a write, a received record, a delete, an expiry, an
/// eviction, a recovery). Keyval's `type=ip`/`prefix` index counts its
/// keys' lengths here.
pub trait Observer {
    /// A record under `key` became live (`up`: written over nothing or
    /// over a tombstone) or stopped being live (made a tombstone, or freed
    /// while live).
    fn live(&self, key: &[u8], up: bool);
    /// A record was stored or freed.
    fn changed(&self);
    /// The table was emptied or is being rebuilt: forget every record
    /// ([`Self::live`] follows for each one kept).
    fn reset(&self);
}

/// A table over an arena.
pub struct Table<'a> {
    a: &'a mut [u8],
    obs: Option<&'a dyn Observer>,
}

impl<'a> Table<'a> {
    // ---- raw field access ------------------------------------------------

    fn r32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.a[off..off + 4].try_into().unwrap())
    }
    fn w32(&mut self, off: usize, v: u32) {
        self.a[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn r64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.a[off..off + 8].try_into().unwrap())
    }
    fn w64(&mut self, off: usize, v: u64) {
        self.a[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    fn add64(&mut self, off: usize, d: i64) {
        let v = self.r64(off).wrapping_add_signed(d);
        self.w64(off, v);
    }

    // ---- creation ----------------------------------------------------------

    /// Formats `arena` as an empty table. None if it is too small (see
    /// [`MIN_ARENA`]) or over 2 GB.
    pub fn format(arena: &'a mut [u8], seed: u64) -> Option<Self> {
        let len = arena.len().min(i32::MAX as usize) & !7;
        if len < MIN_ARENA {
            return None;
        }
        arena[..H_SIZE].fill(0);
        let mut t = Table {
            a: arena,
            obs: None,
        };
        let nb = ((len - H_SIZE) / (BYTES_PER_BUCKET + 4)).max(1);
        let data = (H_SIZE + nb * 4 + 7) & !7;
        t.a[H_SIZE..data].fill(0);
        t.w32(H_MAGIC, MAGIC);
        t.w32(H_NBUCKETS, nb as u32);
        t.w32(H_BUCKETS, H_SIZE as u32);
        t.w32(H_DATA, data as u32);
        t.w32(H_END, len as u32);
        t.w32(H_TOP, data as u32);
        t.w64(H_SEED, seed);
        t.w64(H_RNG, seed | 1);
        t.w64(H_EPOCH, mix(seed ^ 0x6570_6f63_6800_0000));
        Some(t)
    }

    /// A table formatted earlier in `arena`; None if it is not one.
    pub fn open(arena: &'a mut [u8]) -> Option<Self> {
        if arena.len() < MIN_ARENA {
            return None;
        }
        let t = Table {
            a: arena,
            obs: None,
        };
        (t.r32(H_MAGIC) == MAGIC).then_some(t)
    }

    /// Tells `obs` of every change from now on (attach it before
    /// [`Table::recover`], which rebuilds what it counts).
    pub fn observe(&mut self, obs: &'a dyn Observer) {
        self.obs = Some(obs);
    }

    /// Tells the observer, if any, that `r` became live or stopped being
    /// live.
    fn notify_live(&self, r: Rec, up: bool) {
        if let Some(o) = self.obs {
            o.live(self.key(r), up);
        }
    }

    fn notify_changed(&self) {
        if let Some(o) = self.obs {
            o.changed();
        }
    }

    /// Whether the last holder of the lock died in the middle of a
    /// mutation: call [`Table::recover`].
    pub fn needs_recovery(&self) -> bool {
        self.r32(H_MUTATING) != 0
    }

    fn begin(&mut self) {
        self.w32(H_MUTATING, 1);
    }
    fn end(&mut self) {
        self.w32(H_MUTATING, 0);
    }

    /// Runs `f` as one mutation: the marker is set while it runs.
    pub fn mutate<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        self.begin();
        let r = f(self);
        self.end();
        r
    }

    // ---- counters ----------------------------------------------------------

    pub fn counters(&self) -> Counters {
        Counters {
            live: self.r64(H_LIVE),
            tombstones: self.r64(H_TOMBS),
            pending: self.r64(H_PENDING),
            evictions: self.r64(H_EVICTIONS),
            expired: self.r64(H_EXPIRED),
            seq: self.r64(H_SEQ),
        }
    }

    /// Bytes of the arena neither in a record nor in the header or index.
    pub fn free_bytes(&self) -> u64 {
        self.r64(H_FREE_BYTES) + u64::from(self.r32(H_END) - self.r32(H_TOP))
    }

    /// Whether an eviction may be logged now (at most once a second).
    pub fn should_log_eviction(&mut self, now: u64) -> bool {
        if now.saturating_sub(self.r64(H_LAST_EVICT_LOG)) < 1000 {
            return false;
        }
        self.w64(H_LAST_EVICT_LOG, now);
        true
    }

    /// When (monotonic ms, +1) the zone first applied a received record; 0
    /// if it has not yet.
    pub fn first_remote(&self) -> u64 {
        self.r64(H_FIRST_REMOTE)
    }

    /// Notes that a received record was applied at `now`.
    pub fn note_remote(&mut self, now: u64) {
        if self.r64(H_FIRST_REMOTE) == 0 {
            self.w64(H_FIRST_REMOTE, now.saturating_add(1));
        }
    }

    // ---- origins -----------------------------------------------------------

    fn origin_index(&mut self, id: u64) -> Option<u16> {
        let n = self.r32(H_NORIGINS) as usize;
        for i in 0..n {
            if self.r64(H_ORIGINS + i * 8) == id {
                return Some(i as u16);
            }
        }
        if n >= MAX_ORIGINS {
            return None;
        }
        self.w64(H_ORIGINS + n * 8, id);
        self.w32(H_NORIGINS, n as u32 + 1);
        Some(n as u16)
    }

    fn origin_id(&self, idx: u16) -> u64 {
        let i = idx as usize;
        if i < MAX_ORIGINS {
            self.r64(H_ORIGINS + i * 8)
        } else {
            0
        }
    }

    // ---- records -----------------------------------------------------------

    pub fn key(&self, r: Rec) -> &[u8] {
        let o = r.0 as usize + rec::HEADER;
        &self.a[o..o + self.klen(r)]
    }

    pub fn value(&self, r: Rec) -> &[u8] {
        let o = r.0 as usize + rec::HEADER + self.klen(r);
        &self.a[o..o + self.vlen(r)]
    }

    pub fn value_mut(&mut self, r: Rec) -> &mut [u8] {
        let o = r.0 as usize + rec::HEADER + self.klen(r);
        let l = self.vlen(r);
        &mut self.a[o..o + l]
    }

    pub fn meta(&self, r: Rec) -> Meta {
        let f = self.flags(r);
        let ex = self.r64(r.0 as usize + rec::EXPIRE);
        Meta {
            hlc: self.r64(r.0 as usize + rec::HLC),
            origin: self.origin_id((ex >> 48) as u16),
            expire: ex & MAX_EXPIRE,
            seq: self.r64(r.0 as usize + rec::SEQ) & rec::SEQ_MASK,
            tombstone: f & rec::TOMB != 0,
            pending: f & rec::PENDING != 0,
            early: f & rec::EARLY != 0,
        }
    }

    /// The remaining lifetime of `r` at `now` in ms (0 = never expires),
    /// or None if it has expired.
    pub fn remaining(&self, r: Rec, now: u64) -> Option<u64> {
        let e = self.expire_of(r);
        if e == 0 {
            Some(0)
        } else if e <= now {
            None
        } else {
            Some(e - now)
        }
    }

    /// Whether `r` is a live (not deleted, not expired) record at `now`.
    pub fn is_live(&self, r: Rec, now: u64) -> bool {
        self.flags(r) & rec::TOMB == 0 && !self.is_expired(r, now)
    }

    pub fn is_expired(&self, r: Rec, now: u64) -> bool {
        let e = self.expire_of(r);
        e != 0 && e <= now
    }

    fn expire_of(&self, r: Rec) -> u64 {
        self.r64(r.0 as usize + rec::EXPIRE) & MAX_EXPIRE
    }

    fn flags(&self, r: Rec) -> u8 {
        (self.r32(r.0 as usize) >> 24) as u8
    }
    fn set_flags(&mut self, r: Rec, f: u8) {
        let w = self.r32(r.0 as usize) & 0x00ff_ffff;
        self.w32(r.0 as usize, w | u32::from(f) << 24);
    }
    fn klen(&self, r: Rec) -> usize {
        (self.r64(r.0 as usize + rec::SEQ) >> 48) as usize
    }
    fn vlen(&self, r: Rec) -> usize {
        (self.r32(r.0 as usize) & 0x00ff_ffff) as usize
    }
    fn seq_of(&self, r: Rec) -> u64 {
        self.r64(r.0 as usize + rec::SEQ) & rec::SEQ_MASK
    }
    fn set_seq(&mut self, r: Rec, seq: u64) {
        let k = self.r64(r.0 as usize + rec::SEQ) & !rec::SEQ_MASK;
        self.w64(r.0 as usize + rec::SEQ, k | (seq & rec::SEQ_MASK));
    }

    /// The record stored under `key` (live, deleted or expired).
    pub fn find(&self, key: &[u8]) -> Option<Rec> {
        self.find_in(self.bucket_of(key), key)
    }

    /// [`Table::find`] in bucket `b` (the key's).
    fn find_in(&self, b: usize, key: &[u8]) -> Option<Rec> {
        let mut o = self.r32(b);
        while o != 0 {
            let r = Rec(o);
            if self.klen(r) == key.len() && self.key(r) == key {
                return Some(r);
            }
            o = self.r32(o as usize + rec::CHAIN);
        }
        None
    }

    /// The live record under `key` at `now`.
    pub fn get(&self, key: &[u8], now: u64) -> Option<Rec> {
        self.find(key).filter(|&r| self.is_live(r, now))
    }

    fn bucket_of(&self, key: &[u8]) -> usize {
        let h = hash(self.r64(H_SEED), key);
        let nb = u64::from(self.r32(H_NBUCKETS));
        let i = ((h >> 32) * nb) >> 32;
        self.r32(H_BUCKETS) as usize + i as usize * 4
    }

    /// The bucket of the key of `r`.
    fn bucket_of_rec(&self, r: Rec) -> usize {
        self.bucket_of(self.key(r))
    }

    fn index_insert(&mut self, r: Rec) {
        let b = self.bucket_of_rec(r);
        self.index_insert_at(b, r);
    }

    fn index_insert_at(&mut self, b: usize, r: Rec) {
        let head = self.r32(b);
        self.w32(r.0 as usize + rec::CHAIN, head);
        self.w32(b, r.0);
    }

    fn index_remove(&mut self, r: Rec) {
        let b = self.bucket_of_rec(r);
        self.index_remove_at(b, r);
    }

    fn index_remove_at(&mut self, b: usize, r: Rec) {
        let next = self.r32(r.0 as usize + rec::CHAIN);
        let mut at = b;
        loop {
            let o = self.r32(at);
            if o == 0 {
                return;
            }
            if o == r.0 {
                self.w32(at, next);
                return;
            }
            at = o as usize + rec::CHAIN;
        }
    }

    // ---- the change list ---------------------------------------------------

    fn list_unlink(&mut self, r: Rec) {
        let prev = self.r32(r.0 as usize + rec::PREV);
        let next = self.r32(r.0 as usize + rec::NEXT);
        if prev == 0 {
            self.w32(H_TAIL, next);
        } else {
            self.w32(prev as usize + rec::NEXT, next);
        }
        if next == 0 {
            self.w32(H_HEAD, prev);
        } else {
            self.w32(next as usize + rec::PREV, prev);
        }
        self.w32(r.0 as usize + rec::PREV, 0);
        self.w32(r.0 as usize + rec::NEXT, 0);
    }

    fn list_push_head(&mut self, r: Rec) {
        let head = self.r32(H_HEAD);
        self.w32(r.0 as usize + rec::PREV, head);
        self.w32(r.0 as usize + rec::NEXT, 0);
        if head == 0 {
            self.w32(H_TAIL, r.0);
        } else {
            self.w32(head as usize + rec::NEXT, r.0);
        }
        self.w32(H_HEAD, r.0);
    }

    /// Gives `r` the next sequence number and moves it to the head.
    fn bump(&mut self, r: Rec) {
        let seq = self.r64(H_SEQ) + 1;
        self.w64(H_SEQ, seq);
        self.set_seq(r, seq);
        self.list_unlink(r);
        self.list_push_head(r);
    }

    /// The least recently changed record.
    pub fn oldest(&self) -> Option<Rec> {
        let t = self.r32(H_TAIL);
        (t != 0).then_some(Rec(t))
    }

    /// The most recently changed record.
    pub fn newest(&self) -> Option<Rec> {
        let h = self.r32(H_HEAD);
        (h != 0).then_some(Rec(h))
    }

    /// The record changed just after `r`.
    pub fn newer(&self, r: Rec) -> Option<Rec> {
        let n = self.r32(r.0 as usize + rec::NEXT);
        (n != 0).then_some(Rec(n))
    }

    /// The record changed just before `r`.
    pub fn older(&self, r: Rec) -> Option<Rec> {
        let p = self.r32(r.0 as usize + rec::PREV);
        (p != 0).then_some(Rec(p))
    }

    /// Marks `r` as used without a change of its content (a rate limit key
    /// looked up): it moves to the head with a new sequence number, so
    /// that it is the last to be evicted, but is not queued for sync.
    pub fn touch(&mut self, r: Rec) {
        self.mutate(|t| t.bump(r));
    }

    // ---- allocation ----------------------------------------------------------

    fn free_head(&self, c: usize) -> u32 {
        self.r32(H_FREE + c * 4)
    }
    fn set_free_head(&mut self, c: usize, o: u32) {
        self.w32(H_FREE + c * 4, o);
        let byte = H_BITMAP + c / 8;
        if o == 0 {
            self.a[byte] &= !(1 << (c % 8));
        } else {
            self.a[byte] |= 1 << (c % 8);
        }
    }

    /// Puts the free block at `o` of `size` bytes on its list.
    fn push_free(&mut self, o: u32, size: usize) {
        let c = class_of(size);
        self.w32(o as usize, size as u32);
        let head = self.free_head(c);
        self.w32(o as usize + 4, head);
        self.set_free_head(c, o);
        self.add64(H_FREE_BYTES, size as i64);
    }

    /// Takes a free block of at least `size` bytes, split to exactly `size`.
    fn alloc(&mut self, size: usize) -> Option<u32> {
        let c = class_of(size);
        if c < LARGE {
            let o = self.free_head(c);
            if o != 0 {
                let next = self.r32(o as usize + 4);
                self.set_free_head(c, next);
                self.add64(H_FREE_BYTES, -(size as i64));
                return Some(o);
            }
        }
        let top = self.r32(H_TOP) as usize;
        if top + size <= self.r32(H_END) as usize {
            self.w32(H_TOP, (top + size) as u32);
            return Some(top as u32);
        }
        // A larger block, split.
        for cc in c + 1..LARGE {
            if self.a[H_BITMAP + cc / 8] & (1 << (cc % 8)) == 0 {
                continue;
            }
            let o = self.free_head(cc);
            let next = self.r32(o as usize + 4);
            self.set_free_head(cc, next);
            let bsize = cc * 8;
            self.add64(H_FREE_BYTES, -(bsize as i64));
            self.push_free(o + size as u32, bsize - size);
            return Some(o);
        }
        // First fit among the large blocks.
        let mut at = H_FREE + LARGE * 4;
        let mut o = self.r32(at);
        while o != 0 {
            let bsize = self.r32(o as usize) as usize;
            let next = self.r32(o as usize + 4);
            if bsize >= size {
                if at == H_FREE + LARGE * 4 {
                    self.set_free_head(LARGE, next);
                } else {
                    self.w32(at, next);
                }
                self.add64(H_FREE_BYTES, -(bsize as i64));
                if bsize > size {
                    self.push_free(o + size as u32, bsize - size);
                }
                return Some(o);
            }
            at = o as usize + 4;
            o = next;
        }
        None
    }

    /// The size of the block at `o` (record or free), or None if what is
    /// there is not a plausible block.
    fn block_size(&self, o: usize) -> Option<usize> {
        let top = self.r32(H_TOP) as usize;
        if o + 8 > top {
            return None;
        }
        let w = self.r32(o);
        let size = if w & rec::USED_BIT != 0 {
            if o + rec::HEADER > top {
                return None;
            }
            rec::size(self.klen(Rec(o as u32)), (w & 0x00ff_ffff) as usize)
        } else {
            w as usize
        };
        (size >= 8 && size % 8 == 0 && o + size <= top).then_some(size)
    }

    /// Merges neighbouring free blocks and rebuilds the free lists; the
    /// layout generation changes (cursors find their place again).
    pub fn defragment(&mut self) {
        self.mutate(|t| t.defrag_locked());
    }

    fn defrag_locked(&mut self) {
        let data = self.r32(H_DATA) as usize;
        let mut top = self.r32(H_TOP) as usize;
        for c in 0..NCLASS {
            self.set_free_head(c, 0);
        }
        self.w64(H_FREE_BYTES, 0);
        let mut o = data;
        let mut run: Option<(usize, usize)> = None;
        let mut frees = Vec::new();
        while o < top {
            let Some(size) = self.block_size(o) else {
                break;
            };
            if self.r32(o) & rec::USED_BIT == 0 {
                run = Some(match run {
                    Some((s, l)) => (s, l + size),
                    None => (o, size),
                });
            } else if let Some(r) = run.take() {
                frees.push(r);
            }
            o += size;
        }
        if let Some((s, _)) = run {
            // Free space at the end goes back to the bump region.
            top = s;
            self.w32(H_TOP, top as u32);
        }
        for (s, l) in frees {
            self.push_free(s as u32, l);
        }
        self.add64(H_GEN, 1);
    }

    fn free_block(&mut self, r: Rec) {
        let size = rec::size(self.klen(r), self.vlen(r));
        let used = H_SLOTS + slot_of(size) * 24;
        let n = self.r64(used).saturating_sub(1);
        self.w64(used, n);
        self.push_free(r.0, size);
    }

    /// Records allocated, by nginx's slab slot sizes (see [`SLOTS`]): for
    /// each, (in use, allocations, failed allocations).
    pub fn slot_stats(&self) -> [(u64, u64, u64); SLOTS] {
        core::array::from_fn(|i| {
            let o = H_SLOTS + i * 24;
            (self.r64(o), self.r64(o + 8), self.r64(o + 16))
        })
    }

    /// Takes a block of `size` bytes, evicting least recently changed
    /// records (not `spare`, not records with `seq >= protect`, and only
    /// those `may_evict` allows) while the zone is full. Returns the
    /// block and how many records went.
    fn alloc_evicting(
        &mut self,
        size: usize,
        protect: u64,
        may_evict: &mut dyn FnMut(&Table<'_>, Rec) -> bool,
    ) -> (Option<u32>, u64) {
        let mut evicted = 0;
        let mut defragged = false;
        loop {
            if let Some(o) = self.alloc(size) {
                return (Some(o), evicted);
            }
            if !defragged && self.r64(H_FREE_BYTES) >= size as u64 * 2 {
                // Enough free memory in pieces: merge them first.
                defragged = true;
                self.defrag_locked();
                continue;
            }
            let Some(victim) = self.oldest() else {
                return (None, evicted);
            };
            if self.seq_of(victim) >= protect || !may_evict(self, victim) {
                return (None, evicted);
            }
            self.forget(victim);
            self.add64(H_EVICTIONS, 1);
            evicted += 1;
            defragged = false;
        }
    }

    // ---- writes ----------------------------------------------------------

    /// Stores `value` under `key` with `w`'s metadata; the record gets the
    /// next sequence number. Evicts as [`Table::alloc_evicting`] when full.
    /// Returns the record and how many records were evicted.
    ///
    /// A record of another size is written whole into a new block before
    /// the old one is freed, and gets its sequence number last: a process
    /// dying in the middle leaves either the old record or both, never a
    /// half-written one that [`Table::recover`] would keep.
    pub fn write(
        &mut self,
        key: &[u8],
        value: &[u8],
        w: &Write,
        protect: u64,
        may_evict: &mut dyn FnMut(&Table<'_>, Rec) -> bool,
    ) -> Result<(Rec, u64), TableError> {
        let slot = self.slot(key);
        self.write_at(slot, key, value, w, protect, may_evict)
    }

    /// Where `key` is: its bucket and its record, if any. Valid until the
    /// next mutation; a lookup followed by a write finds the key once
    /// ([`Table::write_at`]).
    pub fn slot(&self, key: &[u8]) -> Slot {
        let bucket = self.bucket_of(key);
        Slot {
            bucket,
            rec: self.find_in(bucket, key),
        }
    }

    /// [`Table::write`] of the key found at `slot`, with no mutation in
    /// between.
    #[inline(never)]
    pub fn write_at(
        &mut self,
        slot: Slot,
        key: &[u8],
        value: &[u8],
        w: &Write,
        protect: u64,
        may_evict: &mut dyn FnMut(&Table<'_>, Rec) -> bool,
    ) -> Result<(Rec, u64), TableError> {
        let vlen = value.len();
        if key.len() > MAX_KEY || vlen > MAX_VALUE {
            return Err(TableError::TooLarge);
        }
        self.mutate(|t| {
            let origin = t.origin_index(w.origin).ok_or(TableError::TooManyOrigins)?;
            let (b, old) = (slot.bucket, slot.rec);
            let was_live = old.is_some_and(|o| t.flags(o) & rec::TOMB == 0);
            let mut evicted = 0;
            let (r, replaced) = match old {
                Some(r) if t.vlen(r) == vlen => {
                    t.uncount(r);
                    (r, None)
                }
                _ => {
                    // Keep the old record out of the eviction candidates.
                    if let Some(o) = old {
                        t.list_unlink(o);
                    }
                    let size = rec::size(key.len(), vlen);
                    let (blk, ev) = t.alloc_evicting(size, protect, may_evict);
                    evicted = ev;
                    let slot = H_SLOTS + slot_of(size) * 24;
                    let Some(blk) = blk else {
                        if let Some(o) = old {
                            t.list_push_head_keep_seq(o);
                        }
                        t.add64(slot + 16, 1);
                        return Err(TableError::NoMemory);
                    };
                    t.add64(slot, 1);
                    t.add64(slot + 8, 1);
                    let r = Rec(blk);
                    let o = r.0 as usize;
                    t.a[o..o + rec::HEADER].fill(0);
                    t.w32(o, rec::USED_BIT | vlen as u32);
                    t.w64(o + rec::SEQ, (key.len() as u64) << 48);
                    t.a[o + rec::HEADER..o + rec::HEADER + key.len()].copy_from_slice(key);
                    if let Some(o) = old {
                        t.index_remove_at(b, o);
                    }
                    t.index_insert_at(b, r);
                    t.list_push_head(r);
                    (r, old)
                }
            };
            let mut f = rec::USED;
            if w.tombstone {
                f |= rec::TOMB;
                t.add64(H_TOMBS, 1);
            } else {
                t.add64(H_LIVE, 1);
            }
            if w.queue {
                f |= rec::PENDING;
                t.add64(H_PENDING, 1);
            }
            if w.early {
                f |= rec::EARLY;
            }
            t.set_flags(r, f);
            t.w64(r.0 as usize + rec::HLC, w.hlc);
            t.w64(
                r.0 as usize + rec::EXPIRE,
                w.expire.min(MAX_EXPIRE) | u64::from(origin) << 48,
            );
            t.value_mut(r).copy_from_slice(value);
            t.bump(r);
            if let Some(o) = replaced {
                t.uncount(o);
                t.free_block(o);
            }
            if was_live == w.tombstone {
                t.notify_live(r, !w.tombstone);
            }
            t.notify_changed();
            Ok((r, evicted))
        })
    }

    /// Re-links a record at the head after a failed reallocation, keeping
    /// its sequence number (it did not change); the list order by seq is
    /// restored by a new number, which costs nothing but a resend.
    fn list_push_head_keep_seq(&mut self, r: Rec) {
        self.list_push_head(r);
        let seq = self.r64(H_SEQ) + 1;
        self.w64(H_SEQ, seq);
        self.set_seq(r, seq);
    }

    /// Takes `r` out of the counters (before it is rewritten or freed).
    fn uncount(&mut self, r: Rec) {
        let f = self.flags(r);
        if f & rec::TOMB != 0 {
            self.add64(H_TOMBS, -1);
        } else {
            self.add64(H_LIVE, -1);
        }
        if f & rec::PENDING != 0 {
            self.add64(H_PENDING, -1);
        }
    }

    /// Changes the value of `r` in place (same length) as a change: new
    /// sequence number, queued for sync if `queue`.
    pub fn changed(&mut self, r: Rec, hlc: u64, queue: bool) {
        self.mutate(|t| {
            t.w64(r.0 as usize + rec::HLC, hlc);
            let f = t.flags(r) & !rec::EARLY;
            if queue && f & rec::PENDING == 0 {
                t.set_flags(r, f | rec::PENDING);
                t.add64(H_PENDING, 1);
            } else {
                t.set_flags(r, f);
            }
            t.bump(r);
            t.notify_changed();
        });
    }

    /// Sets the expiry deadline of `r` (0 = never).
    pub fn set_expire(&mut self, r: Rec, expire: u64) {
        let o = r.0 as usize + rec::EXPIRE;
        let v = self.r64(o) & !MAX_EXPIRE | expire.min(MAX_EXPIRE);
        self.w64(o, v);
    }

    /// Removes a record.
    pub fn remove(&mut self, r: Rec) {
        self.mutate(|t| t.remove_locked(r));
    }

    /// Removes a record that leaves without a newer change taking its
    /// place (expired, evicted): a tombstone that goes raises the replay
    /// horizon, as a peer that missed it can no longer be told.
    fn forget(&mut self, r: Rec) {
        if self.flags(r) & rec::TOMB != 0 {
            let seq = self.seq_of(r);
            if seq > self.r64(H_HORIZON) {
                self.w64(H_HORIZON, seq);
            }
        }
        self.remove_locked(r);
    }

    fn remove_locked(&mut self, r: Rec) {
        if self.flags(r) & rec::TOMB == 0 {
            self.notify_live(r, false);
        }
        self.notify_changed();
        self.uncount(r);
        self.index_remove(r);
        self.list_unlink(r);
        self.free_block(r);
    }

    // ---- expiry ----------------------------------------------------------

    /// Frees up to `max` expired records from the tail of the change list
    /// (where records written with the zone's timeout expire in order);
    /// stops at the first one still alive. Returns how many went.
    pub fn expire(&mut self, now: u64, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Some(r) = self.oldest() else { break };
            if !self.is_expired(r, now) {
                break;
            }
            self.begin();
            self.forget(r);
            self.add64(H_EXPIRED, 1);
            self.end();
            n += 1;
        }
        n
    }

    /// Looks at `buckets` random buckets and frees the expired records
    /// chained there; repeats (up to `rounds` times) while more than a
    /// quarter of what it saw had expired. Finds the records that expire
    /// out of change order at a cost proportional to how many there are.
    pub fn sample_expire(&mut self, now: u64, buckets: usize, rounds: usize) -> usize {
        let nb = u64::from(self.r32(H_NBUCKETS));
        let base = self.r32(H_BUCKETS) as usize;
        let mut freed = 0;
        for _ in 0..rounds {
            let (mut seen, mut gone) = (0usize, 0usize);
            for _ in 0..buckets {
                let mut x = self.r64(H_RNG);
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.w64(H_RNG, x);
                let b = base + (((x >> 32) * nb) >> 32) as usize * 4;
                let mut o = self.r32(b);
                while o != 0 {
                    let next = self.r32(o as usize + rec::CHAIN);
                    seen += 1;
                    if self.is_expired(Rec(o), now) {
                        self.begin();
                        self.forget(Rec(o));
                        self.add64(H_EXPIRED, 1);
                        self.end();
                        gone += 1;
                    }
                    o = next;
                }
            }
            freed += gone;
            if gone * 4 <= seen || seen == 0 {
                break;
            }
        }
        freed
    }

    // ---- draining local changes ----------------------------------------

    /// The oldest record changed after sequence number `seq` (found from
    /// the head: the cost is the number of changes since).
    fn first_after(&self, seq: u64) -> Option<Rec> {
        let mut first = None;
        let mut r = self.newest();
        while let Some(x) = r {
            if self.seq_of(x) <= seq {
                break;
            }
            first = Some(x);
            r = self.older(x);
        }
        first
    }

    /// Hands the queued local changes to `out`, oldest first, until it
    /// refuses one; each one handed over is no longer queued. Returns how
    /// many went.
    pub fn drain(&mut self, out: &mut dyn FnMut(&Table<'_>, Rec) -> bool) -> usize {
        let drained = self.r64(H_DRAINED);
        if self.r64(H_PENDING) == 0 {
            let seq = self.r64(H_SEQ);
            self.w64(H_DRAINED, seq);
            return 0;
        }
        let mut sent = 0;
        let mut last = drained;
        let mut r = self.first_after(drained);
        while let Some(x) = r {
            if self.flags(x) & rec::PENDING != 0 {
                if !out(self, x) {
                    self.w64(H_DRAINED, last);
                    return sent;
                }
                let f = self.flags(x) & !rec::PENDING;
                self.set_flags(x, f);
                self.add64(H_PENDING, -1);
                sent += 1;
            }
            last = self.seq_of(x);
            r = self.newer(x);
        }
        self.w64(H_DRAINED, last.max(drained));
        sent
    }

    /// Every record changed after sequence number `after`, oldest first,
    /// until `out` refuses one: the changes a peer that has seen
    /// everything up to `after` is missing (records evicted or expired
    /// since are gone; deletes are there as tombstones). Returns the
    /// sequence number to resume after.
    pub fn changes_since(&self, after: u64, out: &mut dyn FnMut(Rec) -> bool) -> u64 {
        let mut pos = after;
        let mut r = self.first_after(after);
        while let Some(x) = r {
            if !out(x) {
                break;
            }
            pos = self.seq_of(x);
            r = self.newer(x);
        }
        pos
    }

    // ---- resuming peers ----------------------------------------------------

    /// The zone's epoch (see the module docs of the protocol: a peer's
    /// position counts only in the epoch it was taken in).
    pub fn epoch(&self) -> u64 {
        self.r64(H_EPOCH)
    }

    /// The lowest position a peer can resume from: changes after an older
    /// one may be gone (tombstones expired or evicted, a recovery).
    pub fn horizon(&self) -> u64 {
        self.r64(H_HORIZON)
    }

    /// The latest sequence number given to a change.
    pub fn seq(&self) -> u64 {
        self.r64(H_SEQ)
    }

    /// Every local change up to this sequence number has been drained.
    pub fn drained(&self) -> u64 {
        self.r64(H_DRAINED)
    }

    /// Where this node stands in peer `node`'s history of the zone:
    /// `(epoch, seq)`, every change up to `seq` of that epoch applied.
    pub fn position(&self, node: u64) -> Option<(u64, u64)> {
        (0..MAX_POSITIONS)
            .map(|i| H_POSITIONS + i * 24)
            .find(|&o| node != 0 && self.r64(o) == node)
            .map(|o| (self.r64(o + 8), self.r64(o + 16)))
    }

    /// Records that every change of peer `node`'s zone up to `seq` of
    /// `epoch` is applied (never moving back within one epoch). A new
    /// peer takes a free entry, or the one with the lowest position.
    pub fn set_position(&mut self, node: u64, epoch: u64, seq: u64) {
        if node == 0 {
            return;
        }
        let entries = (0..MAX_POSITIONS).map(|i| H_POSITIONS + i * 24);
        let o = match entries.clone().find(|&o| self.r64(o) == node) {
            Some(o) => {
                if self.r64(o + 8) == epoch && self.r64(o + 16) >= seq {
                    return;
                }
                o
            }
            None => entries
                .min_by_key(|&o| (self.r64(o) != 0, self.r64(o + 16)))
                .unwrap_or(H_POSITIONS),
        };
        self.w64(o, node);
        self.w64(o + 8, epoch);
        self.w64(o + 16, seq);
    }

    /// Forgets every peer's position (this node lost records it had
    /// applied).
    fn clear_positions(&mut self) {
        self.a[H_POSITIONS..H_POSITIONS + MAX_POSITIONS * 24].fill(0);
    }

    // ---- walks in memory order -------------------------------------------

    /// Continues a walk in memory order from `cursor`, handing records to
    /// `out` with the cursor's position inside the record; `out` returns
    /// true when done with the record, false to stop at it (having updated
    /// `sub`). Returns true when the walk reached the end.
    pub fn walk(
        &self,
        cursor: &mut Cursor,
        out: &mut dyn FnMut(&Table<'_>, Rec, &mut u64) -> bool,
    ) -> bool {
        let top = self.r32(H_TOP) as usize;
        let gen = self.r64(H_GEN);
        let mut o = if cursor.off == 0 {
            cursor.sub = 0;
            self.r32(H_DATA) as usize
        } else if cursor.gen != gen {
            // Free blocks were merged: find the first boundary at or after
            // the cursor.
            let want = cursor.off as usize;
            let mut o = self.r32(H_DATA) as usize;
            while o < want {
                match self.block_size(o) {
                    Some(s) => o += s,
                    None => {
                        o = top;
                        break;
                    }
                }
            }
            if o != want {
                cursor.sub = 0;
            }
            o
        } else {
            cursor.off as usize
        };
        cursor.gen = gen;
        while o < top {
            let Some(size) = self.block_size(o) else {
                break;
            };
            if self.r32(o) & rec::USED_BIT != 0 {
                cursor.off = o as u32;
                if !out(self, Rec(o as u32), &mut cursor.sub) {
                    return false;
                }
                cursor.sub = 0;
            }
            o += size;
        }
        cursor.off = top as u32;
        true
    }

    // ---- recovery ------------------------------------------------------------

    /// Rebuilds the index, the change list, the free lists and the
    /// counters from the blocks, dropping records that do not parse; if the
    /// blocks themselves do not parse, empties the table. Clears the
    /// mutation marker.
    pub fn recover(&mut self) -> Recovered {
        let mut out = Recovered::default();
        let data = self.r32(H_DATA) as usize;
        let end = self.r32(H_END) as usize;
        let top = self.r32(H_TOP) as usize;
        let nb = self.r32(H_NBUCKETS) as usize;
        let buckets = self.r32(H_BUCKETS) as usize;
        let sane = data >= H_SIZE + nb * 4 && buckets == H_SIZE && top >= data && top <= end;
        let mut recs: Vec<(u64, u32)> = Vec::new();
        let mut frees: Vec<(u32, usize)> = Vec::new();
        let mut parsed = sane;
        if sane {
            let norig = self.r32(H_NORIGINS) as usize;
            let mut o = data;
            while o < top {
                let Some(size) = self.block_size(o) else {
                    parsed = false;
                    break;
                };
                let w = self.r32(o);
                let r = Rec(o as u32);
                let used = w & rec::USED_BIT != 0;
                // A record without a sequence number was being written.
                // (Only a used block has a header: a free one may be 8
                // bytes at the top of the arena.)
                if used
                    && ((self.r64(o + rec::EXPIRE) >> 48) as usize) < norig.max(1)
                    && self.seq_of(r) != 0
                {
                    recs.push((self.seq_of(r), o as u32));
                } else {
                    if used {
                        out.dropped += 1;
                    }
                    frees.push((o as u32, size));
                }
                o += size;
            }
        }
        if !parsed {
            let seed = self.r64(H_SEED);
            let seq = self.r64(H_SEQ);
            let gen = self.r64(H_GEN);
            let dropped = self.r64(H_LIVE) + self.r64(H_TOMBS);
            let len = end;
            let first = self.r64(H_FIRST_REMOTE);
            let epoch = mix(self.r64(H_EPOCH) ^ gen ^ seq.rotate_left(32));
            let arena = &mut self.a[..len];
            let obs = self.obs;
            let mut t = Table::format(arena, seed).expect("was formatted before");
            // A cleared zone is a new history: peers start over with it.
            t.w64(H_EPOCH, epoch);
            if let Some(o) = obs {
                o.reset();
            }
            t.w64(H_SEQ, seq);
            t.w64(H_DRAINED, seq);
            t.w64(H_GEN, gen + 1);
            t.w64(H_FIRST_REMOTE, first);
            return Recovered {
                kept: 0,
                dropped,
                cleared: true,
            };
        }
        // Start over with empty structures.
        if let Some(o) = self.obs {
            o.reset();
        }
        self.a[buckets..buckets + nb * 4].fill(0);
        for c in 0..NCLASS {
            self.set_free_head(c, 0);
        }
        for f in [H_FREE_BYTES, H_LIVE, H_TOMBS, H_PENDING] {
            self.w64(f, 0);
        }
        self.w32(H_HEAD, 0);
        self.w32(H_TAIL, 0);
        for (o, size) in frees {
            self.push_free(o, size);
        }
        recs.sort_unstable();
        for i in 0..SLOTS {
            self.w64(H_SLOTS + i * 24, 0);
        }
        let mut max_seq = self.r64(H_SEQ);
        for (seq, o) in recs {
            let r = Rec(o);
            let key = self.key(r).to_vec();
            if let Some(old) = self.find(&key) {
                // Two blocks of one key (a reallocation cut short): the
                // later change wins.
                if self.flags(old) & rec::TOMB == 0 {
                    self.notify_live(old, false);
                }
                self.index_remove(old);
                self.list_unlink(old);
                self.uncount(old);
                self.free_block(old);
                out.dropped += 1;
                out.kept -= 1;
            }
            self.index_insert(r);
            self.list_push_head(r);
            self.add64(
                H_SLOTS + slot_of(rec::size(self.klen(r), self.vlen(r))) * 24,
                1,
            );
            let f = self.flags(r);
            if f & rec::TOMB != 0 {
                self.add64(H_TOMBS, 1);
            } else {
                self.add64(H_LIVE, 1);
                self.notify_live(r, true);
            }
            if f & rec::PENDING != 0 {
                self.add64(H_PENDING, 1);
            }
            max_seq = max_seq.max(seq);
            out.kept += 1;
        }
        self.w64(H_SEQ, max_seq);
        self.w64(H_DRAINED, self.r64(H_DRAINED).min(max_seq));
        if out.dropped > 0 {
            // What was dropped cannot be replayed to peers, nor is what
            // peers sent before all here any more.
            self.w64(H_HORIZON, max_seq);
            self.clear_positions();
        }
        self.add64(H_GEN, 1);
        self.end();
        out
    }

    /// Checks the table's invariants (tests, and after a recovery): every
    /// record is indexed and listed once, in seq order, the counters add
    /// up and the blocks tile the arena.
    pub fn check(&self) -> Result<(), String> {
        let data = self.r32(H_DATA) as usize;
        let top = self.r32(H_TOP) as usize;
        let mut o = data;
        let (mut used, mut free_bytes) = (0u64, 0u64);
        let (mut live, mut tombs, mut pending) = (0u64, 0u64, 0u64);
        while o < top {
            let size = self
                .block_size(o)
                .ok_or_else(|| format!("bad block at {o}"))?;
            if self.r32(o) & rec::USED_BIT != 0 {
                used += 1;
                let r = Rec(o as u32);
                if self.find(self.key(r)) != Some(r) {
                    return Err(format!("record at {o} not indexed"));
                }
                let f = self.flags(r);
                if f & rec::TOMB != 0 {
                    tombs += 1;
                } else {
                    live += 1;
                }
                if f & rec::PENDING != 0 {
                    pending += 1;
                }
            } else {
                free_bytes += size as u64;
            }
            o += size;
        }
        if o != top {
            return Err("blocks do not end at top".into());
        }
        let mut n = 0u64;
        let mut r = self.oldest();
        let mut last_seq = 0;
        let mut prev = 0u32;
        while let Some(x) = r {
            n += 1;
            if n > used {
                return Err("list longer than the records".into());
            }
            if self.r32(x.0 as usize + rec::PREV) != prev {
                return Err("list links disagree".into());
            }
            if self.seq_of(x) <= last_seq {
                return Err("list not in seq order".into());
            }
            last_seq = self.seq_of(x);
            prev = x.0;
            r = self.newer(x);
        }
        if self.r32(H_HEAD) != prev {
            return Err("list head wrong".into());
        }
        if n != used {
            return Err(format!("list has {n} of {used} records"));
        }
        let c = self.counters();
        if (c.live, c.tombstones, c.pending) != (live, tombs, pending) {
            return Err(format!(
                "counters {:?} vs live {live} tombs {tombs} pending {pending}",
                c
            ));
        }
        if self.r64(H_FREE_BYTES) != free_bytes {
            return Err(format!(
                "free bytes {} vs {free_bytes}",
                self.r64(H_FREE_BYTES)
            ));
        }
        if self.needs_recovery() {
            return Err("mutation marker set".into());
        }
        Ok(())
    }
}

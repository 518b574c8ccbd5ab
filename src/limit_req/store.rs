//! The keys of a `sync_limit_req_zone` in the zone's table
//! ([`crate::shm`]), as nginx's limit_req keeps them: a key's value is its
//! bucket ([`rate::Bucket`]: this node's share) followed by a slot array
//! of peers' shares that grows on demand up to [`rate::MAX_PEERS`].
//! Buckets run on nginx's monotonic clock; a record carries how long ago
//! its share was stated, never a wall-clock time.
//! A key leaves when nginx's limit_req would remove it (untouched for a
//! minute with at most one request left in its bucket: its table deadline
//! is set to that moment at every change) or when the zone is full (the
//! least recently used first).

use core::sync::atomic::Ordering;

use zone_sync_core::merge::{self, Version};
use zone_sync_core::rate::{self, Applied, Bucket, Contribution, Share};
use zone_sync_core::table::{Rec, Table, TableError, Write};
use zone_sync_core::wire::limit_req::{LimitReqValue, VALUE_LEN};

use crate::kinds::Record;
use crate::shm::zone::{Out, Visit};
use crate::shm::Shm;

/// Stale keys collected per new key (limit_req: "one or two").
const EXPIRE_PER_INSERT: usize = 2;

/// Bytes of a bucket in a value, and of a share.
const BUCKET: usize = 40;
const SHARE: usize = 24;

fn rd(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// A key's bucket and peers' share slots, decoded from its value.
struct Pool {
    bucket: Bucket,
    peers: Vec<Share>,
}

impl Pool {
    fn new(cap: usize) -> Self {
        Pool {
            bucket: Bucket::default(),
            peers: vec![Share::default(); cap],
        }
    }

    fn decode(v: &[u8]) -> Self {
        let bucket = Bucket {
            last: rd(v, 0),
            own: rd(v, 8),
            own_hlc: rd(v, 16),
            carry: rd(v, 24) as u32,
            npeers: (rd(v, 24) >> 32) as u32,
        };
        let peers = v[BUCKET..]
            .chunks_exact(SHARE)
            .map(|s| Share {
                origin: rd(s, 0),
                hlc: rd(s, 8),
                milli: rd(s, 16),
            })
            .collect();
        Pool { bucket, peers }
    }

    fn len(&self) -> usize {
        BUCKET + self.peers.len() * SHARE
    }

    fn encode(&self, v: &mut [u8]) {
        let b = &self.bucket;
        v[0..8].copy_from_slice(&b.last.to_le_bytes());
        v[8..16].copy_from_slice(&b.own.to_le_bytes());
        v[16..24].copy_from_slice(&b.own_hlc.to_le_bytes());
        let w = u64::from(b.carry) | u64::from(b.npeers) << 32;
        v[24..32].copy_from_slice(&w.to_le_bytes());
        v[32..40].fill(0);
        for (s, out) in self.peers.iter().zip(v[BUCKET..].chunks_exact_mut(SHARE)) {
            out[0..8].copy_from_slice(&s.origin.to_le_bytes());
            out[8..16].copy_from_slice(&s.hlc.to_le_bytes());
            out[16..24].copy_from_slice(&s.milli.to_le_bytes());
        }
    }

    fn encoded(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        self.encode(&mut v);
        v
    }

    fn level(&self, rate: u64, now: u64) -> u64 {
        rate::level(&self.bucket, &self.peers, rate, now)
    }
}

/// What a lookup decided (limit_req's return codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rc {
    /// Over the burst: reject (nothing charged).
    Busy,
    /// Admitted and charged (the last limit of a location).
    Ok,
    /// Within the burst; charged later by [`Store::account`] (an earlier
    /// limit of several).
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
    /// The zone's table (`shm.sync`: declared with `sync`).
    pub shm: Shm,
    /// Thousandths of a request per second.
    pub rate: u64,
    /// The most a peer's share may claim ([`rate::share_cap`]).
    pub share_cap: u64,
}

fn every(_: &Table<'_>, _: Rec) -> bool {
    true
}

impl Store {
    /// When (monotonic ms) nginx's limit_req would remove a key whose pool
    /// is `p` at `now`: a minute after its last update, or once its level
    /// is down to one request if later.
    fn deadline(&self, p: &Pool, now: u64) -> u64 {
        let level = p.level(self.rate, now);
        if self.rate == 0 {
            return 0;
        }
        let drain = (level.saturating_sub(rate::REQUEST) as u128 * 1000)
            .div_ceil(u128::from(self.rate))
            .min(u128::from(u32::MAX)) as u64;
        now.saturating_add(drain.max(rate::STALE_MS)).max(1)
    }

    /// Whether a change to a key of `key_len` bytes can travel (keys too
    /// long for a sync buffer stay local).
    fn fits(&self, key_len: usize) -> bool {
        let max = self.shm.header().engine.max_record.load(Ordering::Relaxed);
        max == 0 || zone_sync_core::wire::encoded_record_len(key_len, VALUE_LEN) as u64 <= max
    }

    /// Writes `p` back into `r` (same size) as a change of this node's
    /// share when `own`, and sets the key's deadline.
    fn store_pool(&self, t: &mut Table<'_>, r: Rec, p: &Pool, own: bool, now: u64) {
        p.encode(t.value_mut(r));
        let queue = own && self.shm.sync && self.fits(t.key(r).len());
        t.set_expire(r, self.deadline(p, now));
        t.changed(r, p.bucket.own_hlc, queue);
    }

    /// nginx's `ngx_http_limit_req_lookup`: the decision for one request
    /// on one limit. With `account`, an admitted request is charged at
    /// once; otherwise it is left for [`Store::account`].
    pub fn lookup(&self, key: &[u8], burst: u64, account: bool, now: u64, wall: u64) -> Lookup {
        self.shm.with(|t| {
            let mut out = Lookup {
                rc: Rc::Error,
                excess: 0,
                evicted: 0,
                wake: false,
            };
            let r = match t.find(key) {
                Some(r) => {
                    let p = Pool::decode(t.value(r));
                    out.excess = p.level(self.rate, now);
                    // A synced zone tolerates clock granularity (rate::slack).
                    let slack = if self.shm.sync {
                        rate::slack(self.rate)
                    } else {
                        0
                    };
                    if out.excess > burst.saturating_add(slack) {
                        t.touch(r);
                        out.rc = Rc::Busy;
                        return out;
                    }
                    r
                }
                None => {
                    t.expire(now, EXPIRE_PER_INSERT);
                    let mut p = Pool::new(0);
                    p.bucket.last = now;
                    let w = Write {
                        origin: crate::node_id(),
                        expire: self.deadline(&p, now),
                        ..Write::default()
                    };
                    match t.write(key, &p.encoded(), &w, u64::MAX, &mut every) {
                        Ok((r, evicted)) => {
                            out.evicted = evicted;
                            r
                        }
                        Err(_) => return out,
                    }
                }
            };
            if account {
                let idle = t.counters().pending == 0;
                out.excess = self.charge(t, r, now, wall);
                out.wake = self.shm.sync && idle && t.counters().pending > 0;
                out.rc = Rc::Ok;
            } else {
                t.touch(r);
                out.rc = Rc::Again;
            }
            out
        })
    }

    /// Charges one request to this node's share and queues it for sync;
    /// returns the excess.
    fn charge(&self, t: &mut Table<'_>, r: Rec, now: u64, wall: u64) -> u64 {
        let mut p = Pool::decode(t.value(r));
        let excess = rate::charge(&mut p.bucket, &mut p.peers, self.rate, now);
        if self.shm.sync {
            p.bucket.own_hlc = self.shm.hlc().next(wall);
        }
        self.store_pool(t, r, &p, true, now);
        excess
    }

    /// nginx's `ngx_http_limit_req_account` for a key [`Store::lookup`]
    /// admitted without charging: charges the request (no burst check);
    /// returns the excess and whether to wake the engine. None if the key
    /// is gone meanwhile (evicted by another worker).
    pub fn account(&self, key: &[u8], now: u64, wall: u64) -> Option<(u64, bool)> {
        self.shm.with(|t| {
            let r = t.find(key)?;
            let idle = t.counters().pending == 0;
            let excess = self.charge(t, r, now, wall);
            Some((excess, self.shm.sync && idle && t.counters().pending > 0))
        })
    }

    /// Releases a key [`Store::lookup`] admitted without charging. Nothing
    /// to do: unlike nginx's, a held key is found again by its bytes, so it
    /// may be evicted meanwhile (then [`Store::account`] skips it).
    pub fn unlock(&self, _key: &[u8]) {}

    /// Applies a peer's share of a key: newest version per origin wins,
    /// this node's own share is never touched. Returns whether it changed
    /// the zone and how many keys were evicted.
    pub fn apply(&self, rec: &Record<'_>, now: u64, wall: u64) -> Result<(bool, u64), ApplyError> {
        self.shm.with(|t| self.apply_locked(t, rec, now, wall))
    }

    pub fn apply_locked(
        &self,
        t: &mut Table<'_>,
        rec: &Record<'_>,
        now: u64,
        wall: u64,
    ) -> Result<(bool, u64), ApplyError> {
        if rec.is_tombstone() || rec.key.is_empty() || rec.key.len() > u16::MAX as usize {
            return Err(ApplyError::Invalid);
        }
        let Some(v) = LimitReqValue::from_bytes(rec.value) else {
            return Err(ApplyError::Invalid);
        };
        let self_id = crate::node_id();
        if rec.origin == self_id || !merge::is_valid(Version::new(rec.hlc, rec.origin), wall) {
            return Ok((false, 0));
        }
        let c = Contribution {
            origin: rec.origin,
            hlc: rec.hlc,
            milli: v.excess_milli.min(self.share_cap),
            age_ms: v.last_ms,
        };
        self.shm.hlc().observe(rec.hlc, wall);
        t.note_remote(now);
        let found = t.find(rec.key);
        let (mut p, pending) = match found {
            Some(r) => (Pool::decode(t.value(r)), t.meta(r).pending),
            None => {
                let mut p = Pool::new(2);
                p.bucket.last = now;
                (p, false)
            }
        };
        let mut may_grow = true;
        loop {
            match rate::apply(
                &mut p.bucket,
                &mut p.peers,
                self.rate,
                now,
                &c,
                self_id,
                may_grow,
            ) {
                Applied::Stored => break,
                // Nothing to remember of a share that has run out.
                Applied::Ignored => return Ok((false, 0)),
                Applied::NeedRoom if found.is_some() => {
                    let cap = rate::grown(p.peers.len());
                    p.peers.resize(cap, Share::default());
                    may_grow = false;
                }
                Applied::NeedRoom => may_grow = false,
            }
        }
        let r = match found {
            Some(r) if t.value(r).len() == p.len() => r,
            _ => {
                if found.is_none() {
                    t.expire(now, EXPIRE_PER_INSERT);
                }
                let w = Write {
                    hlc: p.bucket.own_hlc,
                    origin: self_id,
                    queue: pending,
                    ..Write::default()
                };
                match t.write(rec.key, &p.encoded(), &w, u64::MAX, &mut every) {
                    Ok((r, evicted)) => {
                        t.set_expire(r, self.deadline(&p, now));
                        return Ok((true, evicted));
                    }
                    Err(TableError::NoMemory) if found.is_some() => {
                        // No room to grow: replace the smallest share.
                        return self.apply_in_place(t, found.unwrap(), &c, now);
                    }
                    Err(_) => return Err(ApplyError::NoMemory),
                }
            }
        };
        self.store_pool(t, r, &p, false, now);
        Ok((true, 0))
    }

    /// [`Self::apply_locked`] for a key that cannot grow: the new share
    /// takes the smallest one's slot if larger.
    fn apply_in_place(
        &self,
        t: &mut Table<'_>,
        r: Rec,
        c: &Contribution,
        now: u64,
    ) -> Result<(bool, u64), ApplyError> {
        let mut p = Pool::decode(t.value(r));
        let applied = rate::apply(
            &mut p.bucket,
            &mut p.peers,
            self.rate,
            now,
            c,
            crate::node_id(),
            false,
        );
        if applied != Applied::Stored {
            return Ok((false, 0));
        }
        self.store_pool(t, r, &p, false, now);
        Ok((true, 0))
    }

    /// The record carrying this node's own share of `r`.
    pub fn own_record<'t>(&self, v: &Visit<'t, '_>, buf: &'t mut [u8; VALUE_LEN]) -> Record<'t> {
        let (t, r) = (v.t, v.r);
        let p = Pool::decode(t.value(r));
        *buf = LimitReqValue {
            excess_milli: p.bucket.own,
            last_ms: rate::age(&p.bucket, v.now),
        }
        .to_bytes();
        Record::put(t.key(r), &buf[..], p.bucket.own_hlc, crate::node_id(), 0)
    }

    /// Every non-zero share of `r` if its bucket is not empty, this node's
    /// own and the peers' it knows, by origin, after origin `*sub` (0: from
    /// the start); stops when `out` refuses one (`*sub` then names the last
    /// one sent).
    pub fn snapshot_record(&self, v: &Visit<'_, '_>, sub: &mut u64, out: Out<'_>) -> bool {
        let (t, r, now) = (v.t, v.r, v.now);
        // Keys too long for a sync buffer stay local (never queued).
        if !self.fits(t.key(r).len()) {
            return true;
        }
        let p = Pool::decode(t.value(r));
        if p.level(self.rate, now) == 0 {
            return true;
        }
        let b = &p.bucket;
        let last_ms = rate::age(b, now);
        let mut shares: Vec<Share> = p.peers[..(b.npeers as usize).min(p.peers.len())]
            .iter()
            .filter(|s| s.milli > 0)
            .copied()
            .collect();
        if b.own > 0 && b.own_hlc != 0 {
            shares.push(Share {
                origin: crate::node_id(),
                hlc: b.own_hlc,
                milli: b.own,
            });
        }
        shares.sort_unstable_by_key(|s| s.origin);
        for s in shares {
            if *sub != 0 && s.origin <= *sub {
                continue;
            }
            let value = LimitReqValue {
                excess_milli: s.milli,
                last_ms,
            }
            .to_bytes();
            if !out(&Record::put(t.key(r), &value, s.hlc, s.origin, 0)) {
                return false;
            }
            *sub = s.origin;
        }
        true
    }

    /// Keys evicted so far.
    pub fn evictions(&self) -> u64 {
        self.shm.with(|t| t.counters().evictions)
    }
}

//! Random sequences of operations on the shared-memory table (a small
//! arena, so that eviction happens), checked after each one against a
//! plain model (a BTreeMap of the keys it holds): local writes of various
//! sizes and expiries, tombstones, removes, remote writes with random
//! versions (newest wins), a moving clock with expiry, defragmentation,
//! drains, `changes_since`, a walk in batches with changes between them,
//! and a process dying in the middle of a write (a panic out of the
//! eviction callback) followed by `recover`.
//!
//! Checked: `check()` passes; every key the model holds is stored with
//! its value, version, origin, expiry, tombstone and pending flags, or
//! is gone only where the table may drop it (expired, or evicted in this
//! operation); keys the model does not hold are absent; the counters
//! agree; a full drain leaves nothing pending; `changes_since` hands
//! records in increasing sequence order, all after the position; a walk
//! visits every record that stayed unchanged through it exactly once.
#![no_main]

use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};

use libfuzzer_sys::fuzz_target;
use zone_sync_core::table::{Cursor, Rec, Table, TableError, Write, MIN_ARENA};

const NODE: u64 = 7;
const KEYS: u8 = 24;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
}

#[derive(Clone, Debug, PartialEq)]
struct M {
    value: Vec<u8>,
    hlc: u64,
    origin: u64,
    expire: u64,
    tomb: bool,
    pending: bool,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<Vec<u8>, M>,
    /// Bumped on every change of a key (walks check only the unchanged).
    gens: BTreeMap<Vec<u8>, u64>,
}

impl Model {
    fn put(&mut self, key: &[u8], m: Option<M>) {
        match m {
            Some(m) => self.keys.insert(key.to_vec(), m),
            None => self.keys.remove(key),
        };
        *self.gens.entry(key.to_vec()).or_default() += 1;
    }
    fn gen(&self, key: &[u8]) -> u64 {
        self.gens.get(key).copied().unwrap_or(0)
    }
}

fn key(k: u8) -> Vec<u8> {
    vec![k; 1 + usize::from(k % 5) * 7]
}

fn stored(t: &Table<'_>, r: Rec) -> M {
    let m = t.meta(r);
    M {
        value: t.value(r).to_vec(),
        hlc: m.hlc,
        origin: m.origin,
        expire: m.expire,
        tomb: m.tombstone,
        pending: m.pending,
    }
}

/// A key may be gone without the model removing it only if it had
/// expired or eviction ran in this operation.
fn check(t: &Table<'_>, model: &mut Model, now: u64, evicted: bool) {
    t.check().unwrap();
    let mut gone = Vec::new();
    for (k, m) in &model.keys {
        match t.find(k) {
            Some(r) => assert_eq!(&stored(t, r), m, "key {k:?}"),
            None => {
                let expired = m.expire != 0 && m.expire <= now;
                assert!(expired || evicted, "key {k:?} vanished: {m:?}");
                gone.push(k.clone());
            }
        }
    }
    for k in gone {
        model.put(&k, None);
    }
    for k in 0..KEYS {
        let k = key(k);
        if !model.keys.contains_key(&k) {
            assert!(t.find(&k).is_none(), "key {k:?} not in the model");
        }
        let live = model
            .keys
            .get(&k)
            .is_some_and(|m| !m.tomb && (m.expire == 0 || m.expire > now));
        assert_eq!(t.get(&k, now).is_some(), live, "get {k:?}");
    }
    let c = t.counters();
    let live = model.keys.values().filter(|m| !m.tomb).count() as u64;
    assert_eq!(c.live, live);
    assert_eq!(c.tombstones, model.keys.len() as u64 - live);
    assert_eq!(
        c.pending,
        model.keys.values().filter(|m| m.pending).count() as u64
    );
}

struct Walk {
    cursor: Cursor,
    /// Keys present at the start, with their generation then.
    start: BTreeMap<Vec<u8>, u64>,
    seen: BTreeMap<Vec<u8>, u32>,
}

#[derive(Debug)]
struct Crash;

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let Some(size) = inp.u8() else { return };
    let Some(seed) = inp.u8() else { return };
    let mut arena = vec![0u8; MIN_ARENA + usize::from(size) * 64];
    let mut t = Table::format(&mut arena, u64::from(seed)).unwrap();
    let mut model = Model::default();
    let mut now = 1u64;
    let mut hlc = 0u64;
    let mut walk: Option<Walk> = None;
    while let Some(op) = inp.u8() {
        let a = inp.u8().unwrap_or(0);
        let b = inp.u8().unwrap_or(0);
        let k = key(a % KEYS);
        let evictions = t.counters().evictions;
        match op % 12 {
            // a local write or tombstone; a remote write, newest wins
            0..=3 => {
                let remote = op % 12 == 3;
                let tomb = op % 12 == 2 || (remote && b & 1 != 0);
                let vlen = if tomb {
                    0
                } else {
                    usize::from(b) * (usize::from(a >> 5) + 1)
                };
                let expire = match a >> 6 {
                    0 | 1 => 0,
                    2 => now + u64::from(b),
                    _ => now + u64::from(b) * 100,
                };
                let w = if remote {
                    let v = u64::from(inp.u8().unwrap_or(0));
                    let old = model.keys.get(&k).map_or(0, |m| m.hlc);
                    if v <= old && model.keys.contains_key(&k) {
                        continue;
                    }
                    Write {
                        hlc: v,
                        origin: 100 + u64::from(b % 3),
                        expire,
                        tombstone: tomb,
                        ..Write::default()
                    }
                } else {
                    hlc += 1;
                    Write {
                        hlc: 1000 + hlc,
                        origin: NODE,
                        expire,
                        tombstone: tomb,
                        queue: true,
                        ..Write::default()
                    }
                };
                let value = vec![a; vlen];
                match t.write(&k, &value, &w, u64::MAX, &mut |_, _| true) {
                    Ok(_) => model.put(
                        &k,
                        Some(M {
                            value,
                            hlc: w.hlc,
                            origin: w.origin,
                            expire: w.expire,
                            tomb,
                            pending: w.queue,
                        }),
                    ),
                    Err(TableError::NoMemory) => {
                        // the old record stays, with a new sequence number
                    }
                    Err(e) => panic!("write: {e:?}"),
                }
            }
            4 => {
                if let Some(r) = t.find(&k) {
                    t.remove(r);
                    model.put(&k, None);
                }
            }
            5 => {
                now += u64::from(a) * u64::from(b % 16 + 1);
                t.expire(now, usize::from(b % 8));
                if b & 0x80 != 0 {
                    t.sample_expire(now, 8, 4);
                }
            }
            6 => {
                if let Some(r) = t.find(&k) {
                    let e = if b == 0 { 0 } else { now + u64::from(b) };
                    t.mutate(|t| t.set_expire(r, e));
                    if let Some(m) = model.keys.get_mut(&k) {
                        m.expire = e;
                    }
                }
            }
            7 => t.defragment(),
            8 => {
                // drain up to `b` changes (all if b == 255)
                let mut n = 0;
                let mut keys = Vec::new();
                t.drain(&mut |t, r| {
                    if b != 255 && n == b {
                        return false;
                    }
                    n += 1;
                    assert!(t.meta(r).pending);
                    keys.push(t.key(r).to_vec());
                    true
                });
                for k in keys {
                    model
                        .keys
                        .get_mut(&k)
                        .expect("drained a key not in the model")
                        .pending = false;
                }
                if b == 255 {
                    assert_eq!(t.counters().pending, 0);
                }
            }
            9 => {
                let after = t.seq().saturating_sub(u64::from(b));
                let mut last = after;
                let mut n = 0;
                let pos = t.changes_since(after, &mut |r| {
                    let s = t.meta(r).seq;
                    assert!(s > last, "changes_since out of order: {s} after {last}");
                    last = s;
                    n += 1;
                    n < a
                });
                assert!(pos >= after && pos <= t.seq());
            }
            10 => match &mut walk {
                None => {
                    let start = model
                        .keys
                        .keys()
                        .map(|k| (k.clone(), model.gen(k)))
                        .collect();
                    walk = Some(Walk {
                        cursor: Cursor::default(),
                        start,
                        seen: BTreeMap::new(),
                    });
                }
                Some(w) => {
                    let mut n = 0u8;
                    let done = t.walk(&mut w.cursor, &mut |t, r, _| {
                        if n == b % 8 + 1 {
                            return false;
                        }
                        n += 1;
                        *w.seen.entry(t.key(r).to_vec()).or_default() += 1;
                        true
                    });
                    if done {
                        for (k, g) in &w.start {
                            if model.gen(k) == *g && model.keys.contains_key(k) {
                                assert_eq!(w.seen.get(k), Some(&1), "walk visited {k:?}");
                            }
                        }
                        walk = None;
                    }
                }
            },
            _ => {
                // dies in the middle of a write that needs room
                hlc += 1;
                let w = Write {
                    hlc: 1000 + hlc,
                    origin: NODE,
                    queue: true,
                    ..Write::default()
                };
                let value = vec![a; usize::from(b) * 4];
                let hook = panic::take_hook();
                panic::set_hook(Box::new(|_| {}));
                let res = panic::catch_unwind(AssertUnwindSafe(|| {
                    t.write(&k, &value, &w, u64::MAX, &mut |_, _| {
                        panic::panic_any(Crash)
                    })
                }));
                panic::set_hook(hook);
                match res {
                    Ok(Ok(_)) => model.put(
                        &k,
                        Some(M {
                            value,
                            hlc: w.hlc,
                            origin: NODE,
                            expire: 0,
                            tomb: false,
                            pending: true,
                        }),
                    ),
                    Ok(Err(_)) => {}
                    Err(p) => {
                        if !p.is::<Crash>() {
                            panic::resume_unwind(p);
                        }
                        assert!(t.needs_recovery());
                        let rec = t.recover();
                        assert!(!rec.cleared);
                        walk = None;
                        // The write never happened: the old record stays.
                    }
                }
            }
        }
        check(&t, &mut model, now, t.counters().evictions != evictions);
    }
    let done = t.walk(&mut Cursor::default(), &mut |_, _, _| true);
    assert!(done);
});

//! The index of `type=ip` and `type=prefix` zones, in the zone's own
//! shared memory (one slab allocation beside the table's arena, from the
//! pages [`crate::shm`] leaves spare): how many live records there are of
//! each prefix length (IPv4 and IPv6 networks) or key length (prefixes),
//! and a bitmap of the lengths present. A lookup tries only those lengths,
//! longest first, each one an exact lookup of the table (core's
//! `longest_*_match`), so a deny list of plain addresses costs one lookup.
//!
//! The index is the table's [`Observer`]: the table tells it, under the
//! zone's lock, whenever a live record appears or goes (a local write, a
//! record applied from a peer, a delete, an expiry, an eviction, a
//! recovery), and of every change, which the state file writer watches
//! (the generation). Lookups read the bitmap under the same lock as their
//! exact lookups.

use core::mem::size_of;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use nginx_sys::ngx_slab_pool_t;
use zone_sync_core::keyval_key::{self, IpKey, KeyType};
use zone_sync_core::table::Observer;

use super::store::Store;
use crate::shm::SlabLock;

/// Bitmap words for the most lengths a type has (prefix: 1025).
const MAX_WORDS: usize = (keyval_key::MAX_PREFIX_KEY + 1).div_ceil(64);

/// A zone's index and change counter, followed in the same allocation by
/// its counts and its bitmap. Only atomics: every process reads it, the
/// counts change under the zone's lock.
#[repr(C)]
pub struct Index {
    ty: u8,
    /// Bumped on every change of the zone.
    generation: AtomicU64,
    /// The generation the state file holds.
    saved: AtomicU64,
    /// The last write of the state file failed (logged once).
    pub save_failed: AtomicBool,
    /// Live records per length slot ([`KeyType::lengths`] of them).
    counts: *const AtomicU32,
    /// Slots with a non-zero count.
    bits: *const AtomicU64,
}

// SAFETY: the pointers lead into the zone's shared memory, mapped at the
// same address in every process for the zone's life; all they reach are
// atomics.
unsafe impl Sync for Index {}

impl Index {
    pub fn key_type(&self) -> KeyType {
        match self.ty {
            1 => KeyType::Ip,
            2 => KeyType::Prefix,
            _ => KeyType::String,
        }
    }

    fn counts(&self) -> &[AtomicU32] {
        // SAFETY: `lengths()` counts follow the index in its allocation.
        unsafe { core::slice::from_raw_parts(self.counts, self.key_type().lengths()) }
    }

    fn bits(&self) -> &[AtomicU64] {
        let n = self.key_type().lengths().div_ceil(64);
        // SAFETY: `n` bitmap words follow the counts.
        unsafe { core::slice::from_raw_parts(self.bits, n) }
    }

    /// The current generation, and the one last saved.
    pub fn generations(&self) -> (u64, u64) {
        (
            self.generation.load(Ordering::Relaxed),
            self.saved.load(Ordering::Relaxed),
        )
    }

    pub fn set_saved(&self, generation: u64) {
        self.saved.store(generation, Ordering::Relaxed);
    }

    /// Copies the bitmap of lengths present.
    fn present<'a>(&self, buf: &'a mut [u64; MAX_WORDS]) -> &'a [u64] {
        let bits = self.bits();
        for (w, b) in buf.iter_mut().zip(bits) {
            *w = b.load(Ordering::Relaxed);
        }
        &buf[..bits.len()]
    }
}

impl Observer for Index {
    fn live(&self, key: &[u8], up: bool) {
        // Keys are checked before they are stored; a key of another type
        // (impossible) is simply not indexed.
        let Some(slot) = self.key_type().slot(key) else {
            return;
        };
        // Read and written under the zone's lock only.
        let c = &self.counts()[slot];
        let was = c.load(Ordering::Relaxed);
        let now = if up { was + 1 } else { was.saturating_sub(1) };
        c.store(now, Ordering::Relaxed);
        if (was == 0) != (now == 0) {
            let word = &self.bits()[slot / 64];
            let bit = 1u64 << (slot % 64);
            if up {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    fn reset(&self) {
        for c in self.counts() {
            c.store(0, Ordering::Relaxed);
        }
        for b in self.bits() {
            b.store(0, Ordering::Relaxed);
        }
        self.changed();
    }
}

/// Allocates the index of a zone of type `ty` from its slab pool: the
/// counts and bitmap count against the zone, as in Plus (a `type=prefix`
/// zone's 1025 counts take the two pages the table leaves spare). Null
/// when the zone has no room. Called before any record is stored.
///
/// # Safety
/// `pool` is the zone's initialised slab pool.
pub unsafe fn alloc(pool: *mut ngx_slab_pool_t, ty: KeyType) -> *const Index {
    let n = ty.lengths();
    let words = n.div_ceil(64);
    let counts_off = size_of::<Index>();
    let bits_off = (counts_off + n * size_of::<AtomicU32>()).next_multiple_of(8);
    let size = bits_off + words * size_of::<AtomicU64>();
    let p = SlabLock::new(pool).alloc(size).cast::<u8>();
    if p.is_null() {
        return ptr::null();
    }
    // All zero: counts, bitmap and generations.
    ptr::write_bytes(p, 0, size);
    let idx = p.cast::<Index>();
    idx.write(Index {
        ty: match ty {
            KeyType::String => 0,
            KeyType::Ip => 1,
            KeyType::Prefix => 2,
        },
        generation: AtomicU64::new(0),
        saved: AtomicU64::new(0),
        save_failed: AtomicBool::new(false),
        counts: p.add(counts_off).cast(),
        bits: p.add(bits_off).cast(),
    });
    idx
}

/// Looks `key` (text, as a `keyval` variable's key evaluates) up by the
/// zone's matching rule, under one hold of the zone's lock; calls `f` with
/// the value found and its remaining lifetime.
pub fn lookup<R>(
    store: &Store,
    key: &[u8],
    now: u64,
    f: impl FnOnce(&[u8], u64) -> R,
) -> Option<R> {
    let Some(idx) = store.index.filter(|i| i.key_type() != KeyType::String) else {
        return store.get(key, now, f);
    };
    store.shm.with(|t| {
        let mut f = Some(f);
        let mut get = |k: &[u8]| {
            let r = t.get(k, now)?;
            let left = t.remaining(r, now)?;
            f.take().map(|f| f(t.value(r), left))
        };
        let mut buf = [0u64; MAX_WORDS];
        match idx.key_type() {
            KeyType::String => get(key),
            KeyType::Ip => {
                let k = IpKey::parse_lookup(key)?;
                keyval_key::longest_ip_match(&k, idx.present(&mut buf), get)
            }
            KeyType::Prefix => keyval_key::longest_prefix_match(key, idx.present(&mut buf), get),
        }
    })
}

//! The index of `type=ip` and `type=prefix` zones, in the zone's own
//! shared memory: how many live records there are of each prefix length
//! (IPv4 and IPv6 networks) or key length (prefixes), and a bitmap of the
//! lengths present. A lookup tries only those lengths, longest first, each
//! one an exact lookup of the store (core's `longest_*_match`), so a deny
//! list of plain addresses costs one lookup.
//!
//! The store calls [`Index::added`] and [`Index::removed`] under the slab
//! lock whenever a live record appears or goes (a local write, a record
//! applied from a peer, a delete, an expiry, an eviction), and
//! [`Index::touch`] on every change, which the state file writer watches.
//! Lookups read the bitmap without the lock (atomics): a record written
//! meanwhile may be missed, as with any read racing a write.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use nginx_sys::ngx_slab_pool_t;
use zone_sync_core::keyval_key::{self, IpKey, KeyType};

use super::store::{Shared, Store};
use crate::shm::SlabLock;

/// Bitmap words for the most lengths a type has (prefix: 1025).
const MAX_WORDS: usize = (keyval_key::MAX_PREFIX_KEY + 1).div_ceil(64);

/// Part of the zone header ([`Shared`]). All zero is a string zone.
#[repr(C)]
pub struct Index {
    ty: u8,
    /// Bumped on every change of the zone.
    generation: AtomicU64,
    /// The generation the state file holds.
    saved: AtomicU64,
    /// The last write of the state file failed (logged once).
    pub save_failed: AtomicBool,
    /// Live records per length slot, under the slab lock.
    counts: *mut u32,
    /// Slots with a non-zero count.
    bits: *mut AtomicU64,
}

impl Index {
    pub fn key_type(&self) -> KeyType {
        match self.ty {
            1 => KeyType::Ip,
            2 => KeyType::Prefix,
            _ => KeyType::String,
        }
    }

    /// A live record with this stored key appeared.
    ///
    /// # Safety
    /// Under the zone's slab lock.
    pub unsafe fn added(&self, key: &[u8]) {
        self.count(key, true);
    }

    /// A live record with this stored key went.
    ///
    /// # Safety
    /// Under the zone's slab lock.
    pub unsafe fn removed(&self, key: &[u8]) {
        self.count(key, false);
    }

    unsafe fn count(&self, key: &[u8], up: bool) {
        if self.counts.is_null() {
            return;
        }
        // Keys are checked before they are stored; a key of another type
        // (impossible) is simply not indexed.
        let Some(slot) = self.key_type().slot(key) else {
            return;
        };
        let c = &mut *self.counts.add(slot);
        let was = *c;
        *c = if up { was + 1 } else { was.saturating_sub(1) };
        if (was == 0) != (*c == 0) {
            let word = &*self.bits.add(slot / 64);
            let bit = 1u64 << (slot % 64);
            if up {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// The zone changed.
    pub fn touch(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
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
        let n = self.key_type().lengths().div_ceil(64);
        for (i, w) in buf.iter_mut().enumerate().take(n) {
            // SAFETY: `bits` has `n` words for the zone's life.
            *w = unsafe { (*self.bits.add(i)).load(Ordering::Relaxed) };
        }
        &buf[..n]
    }
}

/// Sets up the index of a new zone of type `ty`: the counts and bitmap
/// are allocated in the zone (their size counts against it, as in Plus).
///
/// # Safety
/// `pool` is the new zone's slab pool, `sh` its header, nobody else uses
/// them yet.
pub unsafe fn init(pool: *mut ngx_slab_pool_t, sh: *mut Shared, ty: KeyType) -> bool {
    let idx = ptr::addr_of_mut!((*sh).index);
    (*idx).ty = match ty {
        KeyType::String => 0,
        KeyType::Ip => 1,
        KeyType::Prefix => 2,
    };
    let n = ty.lengths();
    if n == 0 {
        return true;
    }
    let words = n.div_ceil(64);
    let lock = SlabLock::new(pool);
    let counts = lock.alloc(n * 4).cast::<u32>();
    let bits = lock.alloc(words * 8).cast::<AtomicU64>();
    drop(lock);
    if counts.is_null() || bits.is_null() {
        return false;
    }
    ptr::write_bytes(counts, 0, n);
    ptr::write_bytes(bits, 0, words);
    (*idx).counts = counts;
    (*idx).bits = bits;
    true
}

/// Looks `key` (text, as a `keyval` variable's key evaluates) up by the
/// zone's matching rule; calls `f` with the value found and its remaining
/// lifetime.
pub fn lookup<R>(
    store: &Store,
    key: &[u8],
    now: u64,
    f: impl FnOnce(&[u8], u64) -> R,
) -> Option<R> {
    let idx = &store.shared().index;
    let mut f = Some(f);
    let mut get = |k: &[u8]| {
        store
            .get(k, now, |v, r| f.take().map(|f| f(v, r)))
            .flatten()
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
}

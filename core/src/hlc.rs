//! Hybrid logical clock.
//!
//! A timestamp is a `u64`: wall-clock milliseconds since the Unix epoch in
//! the upper 48 bits, a logical counter in the lower 16 bits.  Timestamps
//! order record versions across the cluster (see [`crate::merge`]); they
//! never run backwards on one node, even if its wall clock does, and after a
//! node has seen a remote timestamp every timestamp it makes is later.
//!
//! All arithmetic saturates: the clock stops at `u64::MAX` instead of
//! wrapping (48 bits of milliseconds last until the year 10889).
//!
//! A remote timestamp more than [`MAX_DRIFT_MS`] ahead of the local wall
//! clock is not plausible: [`observe`] ignores it, so one peer with a broken
//! clock cannot drag every node's clock into the far future, and the merge
//! layer refuses such a record (see [`crate::merge::decide_at`]).

use std::sync::atomic::{AtomicU64, Ordering};

/// Number of bits of the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// Mask of the logical counter.
pub const LOGICAL_MASK: u64 = (1 << LOGICAL_BITS) - 1;

/// Largest wall-clock value (ms) that fits a timestamp.
pub const MAX_WALL_MS: u64 = u64::MAX >> LOGICAL_BITS;

/// How far (ms) a remote timestamp may be ahead of the local wall clock
/// before it is ignored by [`observe`] and refused by the merge layer.
pub const MAX_DRIFT_MS: u64 = 24 * 60 * 60 * 1000;

/// The timestamp `wall_ms << 16` (logical counter 0), saturating.
#[inline]
pub const fn from_wall(wall_ms: u64) -> u64 {
    if wall_ms > MAX_WALL_MS {
        MAX_WALL_MS << LOGICAL_BITS
    } else {
        wall_ms << LOGICAL_BITS
    }
}

/// Wall-clock part (ms) of a timestamp.
#[inline]
pub const fn wall_of(ts: u64) -> u64 {
    ts >> LOGICAL_BITS
}

/// Logical counter of a timestamp.
#[inline]
pub const fn logical_of(ts: u64) -> u16 {
    (ts & LOGICAL_MASK) as u16
}

/// Whether a remote timestamp is at most [`MAX_DRIFT_MS`] ahead of the
/// local wall clock.
#[inline]
pub const fn is_plausible(remote: u64, wall_ms: u64) -> bool {
    remote <= (from_wall(wall_ms.saturating_add(MAX_DRIFT_MS)) | LOGICAL_MASK)
}

/// The timestamp of a local change: `max(wall_ms << 16, prev + 1)`.
#[inline]
pub const fn next(prev: u64, wall_ms: u64) -> u64 {
    max(from_wall(wall_ms), prev.saturating_add(1))
}

/// The clock after receiving `remote`: `max(prev, remote, wall_ms << 16)`,
/// ignoring `remote` if it is not [plausible](is_plausible).
#[inline]
pub const fn observe(prev: u64, remote: u64, wall_ms: u64) -> u64 {
    let local = max(prev, from_wall(wall_ms));
    if is_plausible(remote, wall_ms) {
        max(local, remote)
    } else {
        local
    }
}

#[inline]
const fn max(a: u64, b: u64) -> u64 {
    if a > b {
        a
    } else {
        b
    }
}

/// A clock shared by several processes (it lives in nginx shared memory).
///
/// The layout is exactly one `AtomicU64`, so a zeroed 8-byte aligned word
/// in shared memory is a valid clock at 0.  `AtomicU64` is lock-free on
/// every platform nginx builds this module for (x86_64, aarch64).
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct SharedHlc(AtomicU64);

impl SharedHlc {
    /// A clock starting at `ts`.
    pub const fn new(ts: u64) -> Self {
        Self(AtomicU64::new(ts))
    }

    /// The last timestamp handed out or observed.
    pub fn load(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// Advances the clock for a local change and returns the new timestamp
    /// (see [`next`]).  Concurrent callers get distinct timestamps.
    pub fn next(&self, wall_ms: u64) -> u64 {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let new = next(cur, wall_ms);
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return new,
                Err(actual) => cur = actual,
            }
        }
    }

    /// Moves the clock past a received timestamp (see [`observe`]).
    pub fn observe(&self, remote: u64, wall_ms: u64) {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let new = observe(cur, remote, wall_ms);
            if new == cur {
                return;
            }
            match self
                .0
                .compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => cur = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000_000;

    #[test]
    fn next_follows_wall_clock() {
        assert_eq!(next(0, NOW), NOW << 16);
        assert_eq!(next(NOW << 16, NOW), (NOW << 16) + 1);
        assert_eq!(next((NOW << 16) + 7, NOW + 1), (NOW + 1) << 16);
    }

    #[test]
    fn next_survives_clock_going_back() {
        let a = next(0, NOW);
        let b = next(a, NOW - 10_000);
        assert_eq!(b, a + 1);
        assert_eq!(wall_of(b), NOW);
        assert_eq!(logical_of(b), 1);
    }

    #[test]
    fn logical_counter_carries_into_wall() {
        let ts = from_wall(NOW) | LOGICAL_MASK;
        let n = next(ts, NOW);
        assert_eq!(wall_of(n), NOW + 1);
        assert_eq!(logical_of(n), 0);
    }

    #[test]
    fn saturates() {
        assert_eq!(next(u64::MAX, NOW), u64::MAX);
        assert_eq!(next(u64::MAX - 1, u64::MAX), u64::MAX);
        assert_eq!(from_wall(u64::MAX), MAX_WALL_MS << 16);
        assert_eq!(observe(u64::MAX, 0, u64::MAX), u64::MAX);
        assert!(is_plausible(u64::MAX, u64::MAX));
    }

    #[test]
    fn observe_moves_past_remote() {
        let remote = from_wall(NOW + 5_000) + 3;
        let c = observe(from_wall(NOW), remote, NOW);
        assert_eq!(c, remote);
        assert!(next(c, NOW) > remote);
    }

    #[test]
    fn observe_ignores_far_future() {
        let remote = from_wall(NOW + MAX_DRIFT_MS + 1);
        assert!(!is_plausible(remote, NOW));
        assert_eq!(observe(from_wall(NOW), remote, NOW), from_wall(NOW));
        let edge = from_wall(NOW + MAX_DRIFT_MS) | LOGICAL_MASK;
        assert!(is_plausible(edge, NOW));
        assert_eq!(observe(0, edge, NOW), edge);
        let ten_years = from_wall(NOW + 10 * 365 * 86_400_000);
        assert_eq!(observe(5, ten_years, NOW), from_wall(NOW));
    }

    #[test]
    fn shared_clock() {
        let c = SharedHlc::new(0);
        let a = c.next(NOW);
        let b = c.next(NOW);
        assert!(b > a);
        c.observe(from_wall(NOW + 1000), NOW);
        assert_eq!(c.load(), from_wall(NOW + 1000));
        assert!(c.next(NOW) > from_wall(NOW + 1000));
        c.observe(0, NOW);
        assert!(c.load() > from_wall(NOW + 1000));
        assert_eq!(std::mem::size_of::<SharedHlc>(), 8);
        assert_eq!(std::mem::align_of::<SharedHlc>(), 8);
    }

    #[test]
    fn shared_clock_threads_get_distinct_timestamps() {
        let c = std::sync::Arc::new(SharedHlc::default());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || (0..10_000).map(|_| c.next(NOW)).collect::<Vec<_>>())
            })
            .collect();
        let mut all: Vec<u64> = Vec::new();
        for h in handles {
            let v = h.join().unwrap();
            assert!(v.windows(2).all(|w| w[0] < w[1]));
            all.extend(v);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    proptest! {
        #[test]
        fn next_is_strictly_monotonic(walls in proptest::collection::vec(0u64..1u64 << 50, 1..64)) {
            let mut c = 0u64;
            for w in walls {
                let n = next(c, w);
                prop_assert!(n > c);
                prop_assert!(n >= from_wall(w));
                c = n;
            }
        }

        #[test]
        fn observe_never_goes_back(prev in any::<u64>(), remote in any::<u64>(), wall in any::<u64>()) {
            let o = observe(prev, remote, wall);
            prop_assert!(o >= prev);
            prop_assert!(o >= from_wall(wall));
            if is_plausible(remote, wall) {
                prop_assert!(o >= remote);
            }
            if prev < u64::MAX {
                prop_assert!(next(o, wall) > o);
            }
        }

        #[test]
        fn mixed_sequence_is_monotonic(
            ops in proptest::collection::vec((any::<bool>(), 0u64..1u64 << 45, any::<u64>()), 1..64)
        ) {
            let c = SharedHlc::new(0);
            let mut last = 0;
            for (local, wall, remote) in ops {
                if local {
                    let n = c.next(wall);
                    prop_assert!(n > last);
                    last = n;
                } else {
                    c.observe(remote, wall);
                    prop_assert!(c.load() >= last);
                    last = c.load();
                }
            }
        }
    }
}

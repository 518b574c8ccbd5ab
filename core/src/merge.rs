//! The merge rule: which of two versions of a record wins.
//!
//! Every write (or delete) of a record is stamped with a [`Version`]: the
//! hybrid-logical-clock timestamp of the change and the id of the node that
//! made it.  Versions are totally ordered by `(hlc, origin)`; the greater
//! one wins, everywhere, whatever the order in which a node learns of them.
//! Applying the same version twice changes nothing.  Deletes are versions
//! too (tombstones), kept for [`tombstone_ttl_ms`] (and as long as the
//! record they replace would have lived) so that an older write
//! arriving late cannot resurrect the record.

use crate::hlc;

/// The version of one record: newest `hlc` wins, `origin` breaks ties.
///
/// The derived ordering compares `hlc` first, then `origin`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid-logical-clock timestamp of the change.
    pub hlc: u64,
    /// Node id of the node that made the change.
    pub origin: u64,
}

impl Version {
    /// A version.
    pub const fn new(hlc: u64, origin: u64) -> Self {
        Self { hlc, origin }
    }
}

/// What to do with an incoming version of a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Store the incoming record (value or tombstone), replacing any other.
    Apply,
    /// Keep what is stored.
    Ignore,
}

/// Decides between the stored version (if any) and an incoming one:
/// apply if nothing is stored or the incoming version is greater;
/// equal or older versions are ignored.
#[inline]
pub fn decide(existing: Option<Version>, incoming: Version) -> Decision {
    match existing {
        Some(e) if incoming <= e => Decision::Ignore,
        _ => Decision::Apply,
    }
}

/// Whether a received version is acceptable at local wall time `wall_ms`:
/// its timestamp is at most [`hlc::MAX_DRIFT_MS`] ahead of the local clock.
#[inline]
pub fn is_valid(incoming: Version, wall_ms: u64) -> bool {
    hlc::is_plausible(incoming.hlc, wall_ms)
}

/// [`decide`] for a received record: an [invalid](is_valid) version (one
/// from a clock far in the future) is ignored whatever is stored.
#[inline]
pub fn decide_at(existing: Option<Version>, incoming: Version, wall_ms: u64) -> Decision {
    if is_valid(incoming, wall_ms) {
        decide(existing, incoming)
    } else {
        Decision::Ignore
    }
}

/// How long (ms) a tombstone is kept at least: the zone's `timeout=` (a
/// record it deletes would have expired by then, unless it had a longer
/// `expire` of its own, which the tombstone then takes); None, for ever,
/// in a zone without `timeout=`, whose records never expire.
#[inline]
pub fn tombstone_ttl_ms(zone_timeout_ms: Option<u64>) -> Option<u64> {
    zone_timeout_ms.filter(|&t| t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn absent_applies() {
        assert_eq!(decide(None, Version::new(0, 0)), Decision::Apply);
    }

    #[test]
    fn newer_hlc_wins() {
        let old = Version::new(10, 9);
        assert_eq!(decide(Some(old), Version::new(11, 1)), Decision::Apply);
        assert_eq!(decide(Some(old), Version::new(9, 99)), Decision::Ignore);
    }

    #[test]
    fn origin_breaks_ties() {
        let v = Version::new(10, 5);
        assert_eq!(decide(Some(v), Version::new(10, 6)), Decision::Apply);
        assert_eq!(decide(Some(v), Version::new(10, 4)), Decision::Ignore);
    }

    #[test]
    fn equal_is_idempotent() {
        let v = Version::new(10, 5);
        assert_eq!(decide(Some(v), v), Decision::Ignore);
    }

    #[test]
    fn far_future_is_invalid() {
        let now = 1_700_000_000_000;
        let ok = Version::new(hlc::from_wall(now + 1000), 1);
        let bad = Version::new(hlc::from_wall(now + hlc::MAX_DRIFT_MS + 1), 1);
        assert!(is_valid(ok, now));
        assert!(!is_valid(bad, now));
        assert_eq!(decide_at(None, ok, now), Decision::Apply);
        assert_eq!(decide_at(None, bad, now), Decision::Ignore);
        assert_eq!(decide_at(Some(ok), bad, now), Decision::Ignore);
    }

    #[test]
    fn tombstone_lifetime() {
        assert_eq!(tombstone_ttl_ms(None), None);
        assert_eq!(tombstone_ttl_ms(Some(0)), None);
        assert_eq!(tombstone_ttl_ms(Some(5000)), Some(5000));
    }

    fn converge(order: &[Version]) -> Option<Version> {
        let mut stored = None;
        for &v in order {
            if decide(stored, v) == Decision::Apply {
                stored = Some(v);
            }
        }
        stored
    }

    proptest! {
        #[test]
        fn any_order_converges_to_the_maximum(
            versions in proptest::collection::vec((0u64..8, 0u64..4), 1..16),
            seed in any::<u64>(),
        ) {
            let vs: Vec<Version> = versions.iter().map(|&(h, o)| Version::new(h, o)).collect();
            let expect = vs.iter().copied().max();
            prop_assert_eq!(converge(&vs), expect);
            let mut rev = vs.clone();
            rev.reverse();
            prop_assert_eq!(converge(&rev), expect);
            // a pseudo-random permutation, with duplicates (redelivery)
            let mut shuffled = vs.clone();
            shuffled.extend_from_slice(&vs[..vs.len() / 2]);
            let mut s = seed | 1;
            for i in (1..shuffled.len()).rev() {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                shuffled.swap(i, (s % (i as u64 + 1)) as usize);
            }
            prop_assert_eq!(converge(&shuffled), expect);
        }

        #[test]
        fn decide_is_a_strict_order(a in any::<(u64, u64)>(), b in any::<(u64, u64)>()) {
            let (a, b) = (Version::new(a.0, a.1), Version::new(b.0, b.1));
            let ab = decide(Some(a), b) == Decision::Apply;
            let ba = decide(Some(b), a) == Decision::Apply;
            prop_assert!(!(ab && ba));
            prop_assert_eq!(ab || ba, a != b);
        }
    }
}

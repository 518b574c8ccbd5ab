//! Inputs the fuzz targets (`core/fuzz`) stopped on, kept as tests.

use zone_sync_core::rate::{self, Bucket, Contribution, Share, MAX_PEERS, MAX_SHARE};

/// fuzz target `rate`: a peer's share received at the cap, then drained a
/// little. `advance` hands the rounding remainder to the largest share, so
/// the share may end a thousandth above `MAX_SHARE`; what the cap is for
/// still holds: the pool's total is exact and far from overflowing.
#[test]
fn rate_share_at_the_cap_drains_exactly() {
    let mut b = Bucket::default();
    let mut peers = [Share::default(); 2];
    let c = Contribution {
        origin: 7,
        hlc: 1,
        milli: u64::MAX,
        age_ms: 0,
    };
    rate::charge(&mut b, &mut peers, 1000, 1_000);
    rate::apply(&mut b, &mut peers, 1000, 1_000, &c, 1, false);
    assert_eq!(peers[0].milli, MAX_SHARE);
    let before = rate::total(&b, &peers);
    for now in 1_001..1_100 {
        let want = rate::level(&b, &peers, 1000, now);
        rate::advance(&mut b, &mut peers, 1000, now);
        assert_eq!(rate::total(&b, &peers), want);
    }
    assert!(rate::total(&b, &peers) < before);
    assert!(peers[0].milli <= MAX_SHARE + MAX_PEERS as u64 + 1);
}

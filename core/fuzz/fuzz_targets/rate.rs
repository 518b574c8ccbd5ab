//! Random sequences of requests, received shares and clock moves through
//! the cluster rate limiter's arithmetic, checked against its invariants:
//! decay conserves the pool exactly (never below 0), a request adds one
//! request, shares stay bounded, distinct and non-zero, and one node alone
//! behaves exactly as nginx's single leaky bucket.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::rate::{self, Applied, Bucket, Contribution, Share, MAX_PEERS, REQUEST};

const SELF: u64 = 1;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u64(&mut self, bytes: usize) -> Option<u64> {
        let mut v = 0u64;
        for _ in 0..bytes {
            v = v << 8 | u64::from(self.u8()?);
        }
        Some(v)
    }
}

fn check(b: &Bucket, peers: &[Share]) {
    let n = b.npeers as usize;
    // What MAX_SHARE is for: the pool's sum never overflows, whatever
    // peers send. (A share itself may pass MAX_SHARE by the rounding
    // remainder advance() hands to the largest share: the total is exact,
    // the split to a thousandth.)
    let sum = peers[..n.min(peers.len())]
        .iter()
        .fold(u128::from(b.own), |t, s| t + u128::from(s.milli));
    assert!(sum < 1 << 63, "pool total near overflow: {sum}");
    assert!(n <= peers.len() && n <= MAX_PEERS, "npeers {n}");
    for (i, s) in peers[..n].iter().enumerate() {
        assert_ne!(s.origin, SELF, "own origin among the peers");
        assert!(s.milli > 0, "a zero share kept");
        assert!(
            peers[..i].iter().all(|o| o.origin != s.origin),
            "origin twice"
        );
    }
}

/// nginx's limit_req bucket for one key (ngx_http_limit_req_lookup).
#[derive(Default)]
struct Model {
    level: u64,
    last: u64,
    steps: u64,
}

impl Model {
    /// The level at `now`, moving `last` as nginx does (only when whole
    /// milliseconds passed).
    fn step(&mut self, rate: u64, now: u64) -> u64 {
        let ms = rate::elapsed(now, self.last);
        if ms > 0 {
            let d = (u128::from(rate) * u128::from(ms) / 1000).min(u128::from(u64::MAX));
            self.level = self.level.saturating_sub(d as u64);
            self.last = now;
            self.steps += 1;
        }
        self.level
    }
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let Some(r) = inp.u64(3) else { return };
    let rate = r.max(1);
    let Some(slots) = inp.u8() else { return };
    let mut peers = vec![Share::default(); usize::from(slots) % (MAX_PEERS + 2)];
    let mut b = Bucket::default();
    let mut now: u64 = 1_000_000;
    // nginx's own bucket (its level: excess + 1000), stepped wherever the
    // pool is, for as long as no peer contributed; its per-step rounding
    // may keep up to one thousandth per step more than the pool's carry.
    let mut alone = true;
    let mut model = Model::default();
    let mut hlc = 0;
    while let Some(op) = inp.u8() {
        match op % 4 {
            0 => {
                // The clock moves (sometimes backwards, as another
                // process's cached time may be).
                let Some(d) = inp.u64(2) else { break };
                if op & 0x80 != 0 {
                    now = now.saturating_sub(d % 70_000);
                } else {
                    now += d;
                }
            }
            1 => {
                let before = rate::level(&b, &peers, rate, now);
                let total_before = rate::total(&b, &peers);
                let seen = rate::charge(&mut b, &mut peers, rate, now);
                assert_eq!(seen, before, "charge reports the level it saw");
                assert!(seen <= total_before);
                assert_eq!(rate::total(&b, &peers), seen + REQUEST);
                if alone {
                    let want = model.step(rate, now);
                    assert!(
                        seen <= want && want - seen <= model.steps,
                        "alone: {seen}, nginx {want}"
                    );
                    model.level = want + REQUEST;
                }
            }
            2 => {
                let (Some(origin), Some(milli), Some(age), Some(grow)) =
                    (inp.u8(), inp.u64(4), inp.u64(2), inp.u8())
                else {
                    break;
                };
                hlc += 1;
                let c = Contribution {
                    origin: u64::from(origin % 20),
                    hlc: if grow & 0x80 != 0 { hlc / 2 } else { hlc },
                    milli: milli << (grow & 0x1f),
                    age_ms: age,
                };
                let total_before = rate::total(&b, &peers);
                let last_before = b.last;
                match rate::apply(&mut b, &mut peers, rate, now, &c, SELF, grow & 1 != 0) {
                    Applied::NeedRoom => {
                        assert!(peers.len() < MAX_PEERS);
                        let mut bigger = peers.clone();
                        bigger.resize(rate::grown(peers.len()), Share::default());
                        assert!(bigger.len() > peers.len());
                        peers = bigger;
                        let again = rate::apply(&mut b, &mut peers, rate, now, &c, SELF, true);
                        assert_eq!(again, Applied::Stored);
                    }
                    Applied::Stored => {}
                    Applied::Ignored => {
                        assert!(rate::total(&b, &peers) <= total_before);
                    }
                }
                if b.npeers > 0 {
                    alone = false;
                } else if b.last != last_before {
                    // apply brought the pool to now, as a request would.
                    model.step(rate, now);
                }
            }
            _ => {
                let before = rate::total(&b, &peers);
                let lvl = rate::level(&b, &peers, rate, now);
                let moved = rate::elapsed(now, b.last) > 0;
                rate::advance(&mut b, &mut peers, rate, now);
                let after = rate::total(&b, &peers);
                assert!(after <= before, "advance grew the pool");
                if moved {
                    assert_eq!(after, lvl, "advance is level()");
                }
                if alone {
                    let want = model.step(rate, now);
                    assert!(after <= want && want - after <= model.steps);
                }
            }
        }
        check(&b, &peers);
        assert!(rate::level(&b, &peers, rate, now) <= rate::total(&b, &peers));
    }
});

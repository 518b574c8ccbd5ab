//! The arithmetic of the cluster-wide rate limiter (`sync_limit_req`):
//! nginx's leaky bucket, held as a pool of per-node shares.
//!
//! # Units
//!
//! Amounts are in thousandths of a request ([`REQUEST`] = 1000), rates in
//! thousandths of a request per second (`rate=20r/s` is 20000, `rate=30r/m`
//! is 500, truncated as nginx does), times in milliseconds on nginx's
//! monotonic clock (`ngx_current_msec`), in every zone, synced or not: a
//! step of the wall clock moves no bucket.  Records do not carry times but
//! ages ([`age`]: how long before the record was built its share was
//! stated), so nodes never compare their clocks either.
//!
//! # nginx's bucket, in level form
//!
//! `ngx_http_limit_req_module` keeps per key an `excess` E and the time of
//! its last update; a request at `now` computes
//! `E' = max(0, E + 1000 - rate * ms / 1000)` and is rejected if
//! `E' > burst`, else stores `E'` (a new key stores 0).  Here the stored
//! quantity is the *level* `L = E + 1000`: the bucket's content right after
//! the last admitted request, that request included.  Then a request sees
//! `level(now) = max(0, L - decay)` (which is nginx's `E'`), is rejected if
//! that is above `burst`, and when admitted sets `L = level(now) + 1000`.
//! Both forms give the same decisions and the same reported excess; the
//! level form is additive: every admitted request, on whatever node, adds
//! exactly [`REQUEST`], and the bucket drains at `rate`, never below 0.
//!
//! # Shares
//!
//! The level is the sum of *shares*, one per node: this node's own share
//! and the latest share received from each peer.  All shares of a pool are
//! stated as of one instant, the pool's `last`.  Time drains the pool at
//! `rate` in total, taken from every share *in proportion to its size*
//! ([`advance`]): the sum decays exactly like nginx's single bucket (not N
//! times faster), every share reaches 0 when the pool does, and with one
//! share the arithmetic is nginx's own.  A node adds [`REQUEST`] to its own
//! share for each request it admits ([`charge`]) and publishes the share;
//! a receiver replaces its copy of that node's share, aged by the time since
//! the sender's update with the same proportional rule ([`apply`]).
//!
//! # What a peer may claim
//!
//! A node admits a request only while the level is at most the burst (plus
//! the [`slack`]), and then adds one request: no share can legitimately
//! hold more than the largest `burst` configured with the zone plus one
//! request and the slack ([`share_cap`]).  A received share is clamped
//! there, so a peer that claims more (a forged or corrupted record) limits
//! the key at most as long as a full bucket would, and its share drains at
//! the zone's rate like any other.
//!
//! Given timely sync every node sees the same pool, so the cluster admits
//! what one nginx would: at most `burst + 1` at once and `rate` over time,
//! wherever the requests land.  What a node has not heard of yet (sync
//! latency) it cannot count: the error is bounded by what the others admit
//! within one sync delay.  A node that hears nothing more (partition) keeps
//! limiting with what it has: its own share grows, the remembered shares of
//! the others drain with the pool and are gone when it next empties.
//!
//! A synced zone admits a request finding the level up to [`slack`] above
//! the burst (two milliseconds' worth of the rate, less than one request):
//! times compared across processes and machines are only known to the
//! millisecond. Unsynced zones have none, as nginx.

/// One request, in the units of a bucket.
pub const REQUEST: u64 = 1000;

/// Most peers' shares one key keeps (one node more: its own). When a key
/// has this many, a new peer's share replaces the smallest one if larger.
pub const MAX_PEERS: usize = 15;

/// The largest share cap (2^48 thousandths, far above any real bucket), so
/// that sums of shares never overflow whatever the configuration.
pub const MAX_SHARE: u64 = 1 << 48;

/// How early (ms) a request may come in a synced zone and still be on
/// time: see [`slack`].
pub const SLACK_MS: u64 = 2;

/// A key untouched this long whose level is at most one request can be
/// removed (nginx's limit_req rule).
pub const STALE_MS: u64 = 60_000;

/// A peer's share of one key's bucket, as this node last knows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Share {
    /// The node whose share it is.
    pub origin: u64,
    /// Its hybrid-logical-clock version (newest wins per origin).
    pub hlc: u64,
    /// The share, as of the pool's `last`.
    pub milli: u64,
}

/// One key's bucket on one node; the peers' shares are kept beside it.
///
/// `repr(C)` and plain integers only: it lives in nginx shared memory,
/// where an all-zero value is an empty bucket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// When the shares were last brought up to date (monotonic ms).
    pub last: u64,
    /// This node's share.
    pub own: u64,
    /// Version of this node's share (0: never charged).
    pub own_hlc: u64,
    /// Decay owed below one thousandth of a request, in millionths, so
    /// that frequent updates at a low rate lose nothing.
    pub carry: u32,
    /// Number of peers' shares in use (at the front of the share slice).
    pub npeers: u32,
}

/// A share received from a peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Contribution {
    pub origin: u64,
    pub hlc: u64,
    /// The share as of its sender's last update of it, clamped by the
    /// receiver to its [`share_cap`].
    pub milli: u64,
    /// How long before the record was built that update was (the record's
    /// [`age`]).
    pub age_ms: u64,
}

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The share was stored (added or replaced).
    Stored,
    /// Not stored: our own origin, an older or equal version, a new share
    /// that has decayed to nothing, or no room and not larger than any.
    Ignored,
    /// A new origin and every slot is taken: give the bucket more slots
    /// and apply again, or apply with `may_grow` false to replace the
    /// smallest share.
    NeedRoom,
}

/// `rate=N r/s` (or `r/m` when `per_minute`) in bucket units, as nginx
/// computes it (`rate * 1000 / scale`).
pub const fn rate_milli(n: u64, per_minute: bool) -> u64 {
    if per_minute {
        n.saturating_mul(1000) / 60
    } else {
        n.saturating_mul(1000)
    }
}

/// Milliseconds from `last` to `now` as nginx's limit_req reads them: a
/// clock slightly behind (another process's cached time) counts as 0, one
/// more than a minute behind as 1.
pub const fn elapsed(now: u64, last: u64) -> u64 {
    let ms = now.wrapping_sub(last) as i64;
    if ms < -60_000 {
        1
    } else if ms < 0 {
        0
    } else {
        ms as u64
    }
}

/// Decay over `ms` at `rate` with `carry` millionths owed from before:
/// (whole thousandths, millionths left over).
const fn decay(rate: u64, ms: u64, carry: u32) -> (u64, u32) {
    let num = rate as u128 * ms as u128 + carry as u128;
    let whole = num / 1000;
    let whole = if whole > u64::MAX as u128 {
        u64::MAX
    } else {
        whole as u64
    };
    (whole, (num % 1000) as u32)
}

fn peers_of(b: &Bucket, peers: &[Share]) -> usize {
    (b.npeers as usize).min(peers.len())
}

/// The pool's content as of its `last`: own share plus every peer's.
pub fn total(b: &Bucket, peers: &[Share]) -> u64 {
    peers[..peers_of(b, peers)]
        .iter()
        .fold(b.own, |t, s| t.saturating_add(s.milli))
}

/// The bucket's level at `now` (nginx's excess for a request at `now`,
/// before that request), without changing anything.
pub fn level(b: &Bucket, peers: &[Share], rate: u64, now: u64) -> u64 {
    let (d, _) = decay(rate, elapsed(now, b.last), b.carry);
    total(b, peers).saturating_sub(d)
}

/// Brings every share to `now`: the pool loses `rate * elapsed` in total,
/// taken from the shares in proportion to their size (the rounding
/// remainder stays with the largest share, so the total is exact).  Peers'
/// shares that reach 0 are dropped.  Like nginx, the clock only moves when
/// whole milliseconds have passed.
pub fn advance(b: &mut Bucket, peers: &mut [Share], rate: u64, now: u64) {
    let ms = elapsed(now, b.last);
    if ms == 0 {
        return;
    }
    b.last = now;
    let n = peers_of(b, peers);
    let t = total(b, peers);
    if t == 0 {
        b.carry = 0;
        return;
    }
    let (d, carry) = decay(rate, ms, b.carry);
    if d >= t {
        b.own = 0;
        b.carry = 0;
        b.npeers = 0;
        return;
    }
    b.carry = carry;
    if d == 0 {
        return;
    }
    let left = t - d;
    let scale = |v: u64| (v as u128 * left as u128 / t as u128) as u64;
    // Largest share first found, own share winning ties.
    let mut big: Option<usize> = None;
    let mut big_v = b.own;
    for (i, s) in peers[..n].iter().enumerate() {
        if s.milli > big_v {
            big = Some(i);
            big_v = s.milli;
        }
    }
    let mut sum = scale(b.own);
    b.own = sum;
    for s in peers[..n].iter_mut() {
        s.milli = scale(s.milli);
        sum += s.milli;
    }
    let rest = left - sum;
    match big {
        None => b.own += rest,
        Some(i) => peers[i].milli += rest,
    }
    compact(b, peers);
}

/// Drops peers' shares that are 0, keeping the others in order.
fn compact(b: &mut Bucket, peers: &mut [Share]) {
    let n = peers_of(b, peers);
    let mut k = 0;
    for i in 0..n {
        if peers[i].milli != 0 {
            peers[k] = peers[i];
            k += 1;
        }
    }
    b.npeers = k as u32;
}

/// Charges one admitted request to this node's share at `now`; returns the
/// excess nginx reports for it (the level just before it).  The caller
/// stamps `own_hlc`.
pub fn charge(b: &mut Bucket, peers: &mut [Share], rate: u64, now: u64) -> u64 {
    advance(b, peers, rate, now);
    let excess = total(b, peers);
    b.own = b.own.saturating_add(REQUEST);
    excess
}

/// A share `age` ms old, in a pool whose other shares hold `others`:
/// it has lost its proportional part of `rate * age`.
fn aged(milli: u64, others: u64, rate: u64, age: u64) -> u64 {
    let pool = milli.saturating_add(others);
    if pool == 0 {
        return 0;
    }
    let (d, _) = decay(rate, age, 0);
    if d >= pool {
        return 0;
    }
    (milli as u128 * (pool - d) as u128 / pool as u128) as u64
}

/// Applies a peer's share received at `now`: per origin the newest `hlc`
/// wins; this node's own share (`self_id`) is never touched.  `peers` is
/// the key's whole slot array (`npeers` of it in use).  When a new origin
/// finds every slot taken, returns [`Applied::NeedRoom`] if `may_grow`,
/// else replaces the smallest share if the new one is larger.
pub fn apply(
    b: &mut Bucket,
    peers: &mut [Share],
    rate: u64,
    now: u64,
    c: &Contribution,
    self_id: u64,
    may_grow: bool,
) -> Applied {
    if c.origin == self_id {
        return Applied::Ignored;
    }
    let n = peers_of(b, peers);
    let slot = peers[..n].iter().position(|s| s.origin == c.origin);
    if let Some(i) = slot {
        if c.hlc <= peers[i].hlc {
            return Applied::Ignored;
        }
    }
    advance(b, peers, rate, now);
    // advance may have dropped shares: look again.
    let n = peers_of(b, peers);
    let slot = peers[..n].iter().position(|s| s.origin == c.origin);
    let others = total(b, peers) - slot.map_or(0, |i| peers[i].milli);
    let v = aged(c.milli.min(MAX_SHARE), others, rate, c.age_ms);
    let share = Share {
        origin: c.origin,
        hlc: c.hlc,
        milli: v,
    };
    if let Some(i) = slot {
        peers[i] = share;
        if v == 0 {
            compact(b, peers);
        }
        return Applied::Stored;
    }
    if v == 0 {
        return Applied::Ignored;
    }
    if n < peers.len() && n < MAX_PEERS {
        peers[n] = share;
        b.npeers += 1;
        return Applied::Stored;
    }
    if may_grow && n < MAX_PEERS {
        return Applied::NeedRoom;
    }
    match peers[..n].iter().enumerate().min_by_key(|(_, s)| s.milli) {
        Some((i, s)) if s.milli < v => {
            peers[i] = share;
            Applied::Stored
        }
        _ => Applied::Ignored,
    }
}

/// The slot count to grow a key to when a new peer arrives.
pub const fn grown(cap: usize) -> usize {
    let c = if cap < 2 { 2 } else { cap * 2 };
    if c > MAX_PEERS {
        MAX_PEERS
    } else {
        c
    }
}

/// Whether nginx's limit_req would remove this key: untouched for
/// [`STALE_MS`] and its level then at most one request.
pub fn is_stale(b: &Bucket, peers: &[Share], rate: u64, now: u64) -> bool {
    let ms = now.wrapping_sub(b.last) as i64;
    let ms = ms.unsigned_abs();
    if ms < STALE_MS {
        return false;
    }
    let (d, _) = decay(rate, ms, b.carry);
    total(b, peers).saturating_sub(d) <= REQUEST
}

/// How long ago (ms) the pool's shares were stated, at `now`: what a
/// record built at `now` carries, so that the receiver ages the share by
/// as much on its own clock.  The time the record then spends queued and
/// in transit is not counted: the receiver counts the share that much
/// longer (stricter, never looser).
pub const fn age(b: &Bucket, now: u64) -> u64 {
    elapsed(now, b.last)
}

/// The most a peer's share of a key can legitimately hold in a zone whose
/// largest `burst` is `max_burst` (both in bucket units): the burst, the
/// request admitted at it, and the [`slack`].  Received shares are clamped
/// to it.
pub const fn share_cap(max_burst: u64, rate: u64) -> u64 {
    let c = max_burst
        .saturating_add(REQUEST)
        .saturating_add(slack(rate));
    if c > MAX_SHARE {
        MAX_SHARE
    } else {
        c
    }
}

/// The tolerance of a synced zone's bucket: a request finding the level up
/// to this much above `burst` is admitted.
///
/// Nodes compare times read off millisecond clocks in different processes
/// and on different machines, so "50 ms after the last request" is only
/// known to within a millisecond or two. Without a tolerance a request
/// arriving exactly on time is rejected half of the time, and every such
/// rejection wastes the bucket's time until the next request (a client
/// sending exactly three times the rate would get 80 % of it). The
/// tolerance is [`SLACK_MS`] worth of the rate, and always less than one
/// request: it lets a request come that much early, never adds a request
/// to a burst, and does not change the sustained rate (a bucket drains at
/// `rate` whatever its capacity).
pub const fn slack(rate: u64) -> u64 {
    let s = rate.saturating_mul(SLACK_MS) / 1000;
    if s > REQUEST / 2 {
        REQUEST / 2
    } else {
        s
    }
}

/// How long a request must wait (ms) after being admitted with `excess`,
/// under a limit with `delay` (both in bucket units), as nginx computes it.
pub fn delay_ms(excess: u64, delay: u64, rate: u64) -> u64 {
    if excess <= delay || rate == 0 {
        0
    } else {
        ((excess - delay) as u128 * 1000 / rate as u128).min(u64::MAX as u128) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SELF: u64 = 0x5e1f;

    /// nginx's limit_req, line for line (ngx_http_limit_req_lookup with
    /// account = 1): (admitted, excess).
    #[derive(Default)]
    struct Stock {
        exists: bool,
        excess: i64,
        last: u64,
    }

    impl Stock {
        fn request(&mut self, rate: u64, burst: u64, now: u64) -> (bool, u64) {
            if !self.exists {
                self.exists = true;
                self.excess = 0;
                self.last = now;
                return (true, 0);
            }
            let mut ms = now.wrapping_sub(self.last) as i64;
            if ms < -60000 {
                ms = 1;
            } else if ms < 0 {
                ms = 0;
            }
            let mut excess = self.excess - rate as i64 * ms / 1000 + 1000;
            if excess < 0 {
                excess = 0;
            }
            if excess as u64 > burst {
                return (false, excess as u64);
            }
            self.excess = excess;
            if ms != 0 {
                self.last = now;
            }
            (true, excess as u64)
        }
    }

    struct Ours {
        b: Bucket,
        peers: [Share; MAX_PEERS],
    }

    impl Ours {
        fn new() -> Self {
            Ours {
                b: Bucket::default(),
                peers: [Share::default(); MAX_PEERS],
            }
        }
        fn request(&mut self, rate: u64, burst: u64, now: u64) -> (bool, u64) {
            self.request_slack(rate, burst, 0, now)
        }
        fn request_slack(&mut self, rate: u64, burst: u64, slack: u64, now: u64) -> (bool, u64) {
            let l = level(&self.b, &self.peers, rate, now);
            if l > burst + slack {
                return (false, l);
            }
            (true, charge(&mut self.b, &mut self.peers, rate, now))
        }
        fn total(&self) -> u64 {
            total(&self.b, &self.peers)
        }
    }

    #[test]
    fn rates() {
        assert_eq!(rate_milli(20, false), 20_000);
        assert_eq!(rate_milli(30, true), 500);
        assert_eq!(rate_milli(1, true), 16);
    }

    #[test]
    fn elapsed_like_nginx() {
        assert_eq!(elapsed(10, 5), 5);
        assert_eq!(elapsed(5, 10), 0);
        assert_eq!(elapsed(5, 70_010), 1);
        assert_eq!(elapsed(5, 5), 0);
    }

    #[test]
    fn one_node_burst_then_rate() {
        // rate=2r/s burst=1 nodelay: two at once, the third rejected,
        // one more after 500 ms.
        let mut o = Ours::new();
        let (r, burst) = (rate_milli(2, false), REQUEST);
        assert_eq!(o.request(r, burst, 1000), (true, 0));
        assert_eq!(o.request(r, burst, 1000), (true, 1000));
        assert_eq!(o.request(r, burst, 1000), (false, 2000));
        assert_eq!(o.request(r, burst, 1499), (false, 1002));
        assert_eq!(o.request(r, burst, 1500), (true, 1000));
    }

    #[test]
    fn decay_carries_fractions() {
        // 1r/m is 16 thousandths a second: 100 updates 10 ms apart must
        // decay as much as one update 1000 ms later.
        let r = rate_milli(1, true);
        let mut a = Ours::new();
        a.b.own = 5000;
        let mut b = Ours::new();
        b.b.own = 5000;
        for i in 1..=100 {
            advance(&mut a.b, &mut a.peers, r, i * 10);
        }
        advance(&mut b.b, &mut b.peers, r, 1000);
        assert_eq!(a.total(), b.total());
        assert_eq!(a.total(), 5000 - 16);
    }

    #[test]
    fn delays() {
        assert_eq!(delay_ms(0, 0, 20_000), 0);
        assert_eq!(delay_ms(1000, 0, 2000), 500);
        assert_eq!(delay_ms(3000, 2000, 1000), 1000);
        assert_eq!(delay_ms(3000, 3000, 1000), 0);
    }

    #[test]
    fn merge_per_origin() {
        let r = rate_milli(10, false);
        let mut o = Ours::new();
        let c = |hlc, milli| Contribution {
            origin: 7,
            hlc,
            milli,
            age_ms: 0,
        };
        let ap =
            |o: &mut Ours, c: &Contribution| apply(&mut o.b, &mut o.peers, r, 0, c, SELF, true);
        assert_eq!(ap(&mut o, &c(5, 3000)), Applied::Stored);
        assert_eq!(o.total(), 3000);
        assert_eq!(ap(&mut o, &c(5, 9000)), Applied::Ignored);
        assert_eq!(ap(&mut o, &c(4, 9000)), Applied::Ignored);
        assert_eq!(ap(&mut o, &c(6, 1000)), Applied::Stored);
        assert_eq!(o.total(), 1000);
        // never our own
        let own = Contribution {
            origin: SELF,
            hlc: 99,
            milli: 5000,
            age_ms: 0,
        };
        assert_eq!(ap(&mut o, &own), Applied::Ignored);
        assert_eq!(o.b.own, 0);
    }

    #[test]
    fn huge_shares_are_capped() {
        let r = rate_milli(1, false);
        let mut b = Bucket::default();
        let mut peers = [Share::default(); MAX_PEERS];
        for origin in 1..=MAX_PEERS as u64 {
            let c = Contribution {
                origin,
                hlc: 1,
                milli: u64::MAX,
                age_ms: 0,
            };
            assert_eq!(
                apply(&mut b, &mut peers, r, 0, &c, SELF, true),
                Applied::Stored
            );
        }
        assert_eq!(total(&b, &peers), MAX_SHARE * MAX_PEERS as u64);
        advance(&mut b, &mut peers, r, 1_000_000);
        assert_eq!(total(&b, &peers), MAX_SHARE * MAX_PEERS as u64 - 1_000_000);
    }

    #[test]
    fn share_caps() {
        // burst=5, 10r/s: five requests, the sixth admitted at the burst,
        // and 2 ms of the rate.
        assert_eq!(share_cap(5 * REQUEST, rate_milli(10, false)), 6020);
        assert_eq!(share_cap(0, rate_milli(1, true)), 1000);
        assert_eq!(share_cap(u64::MAX, 1000), MAX_SHARE);
    }

    #[test]
    fn a_forged_share_limits_no_longer_than_a_full_bucket() {
        // rate=2r/s burst=4: a peer claims 2^60 thousandths; clamped, the
        // key is limited until the claim drained to the burst (0.5 s), as
        // if a client had used the whole burst, then admits at the rate,
        // and the claim is gone once the bucket empties.
        let (r, burst) = (rate_milli(2, false), 4 * REQUEST);
        let cap = share_cap(burst, r);
        let mut o = Ours::new();
        let c = Contribution {
            origin: 7,
            hlc: 1,
            milli: (1u64 << 60).min(cap),
            age_ms: 0,
        };
        assert_eq!(
            apply(&mut o.b, &mut o.peers, r, 0, &c, SELF, true),
            Applied::Stored
        );
        let t0 = (cap - burst - slack(r)) * 1000 / r;
        assert!(!o.request_slack(r, burst, slack(r), t0 - 1).0);
        assert!(o.request_slack(r, burst, slack(r), t0).0);
        // the next one a request later, at the rate
        assert!(!o.request_slack(r, burst, slack(r), t0 + 400).0);
        assert!(o.request_slack(r, burst, slack(r), t0 + 500).0);
        // idle: the pool, forged share included, empties
        let empty = t0 + 500 + total(&o.b, &o.peers) * 1000 / r;
        advance(&mut o.b, &mut o.peers, r, empty);
        assert_eq!((o.b.npeers, o.b.own), (0, 0));
    }

    #[test]
    fn received_shares_are_aged() {
        // Alone in the pool, a share 100 ms old at 10r/s lost 1000.
        let r = rate_milli(10, false);
        let mut o = Ours::new();
        let c = Contribution {
            origin: 7,
            hlc: 1,
            milli: 3000,
            age_ms: 100,
        };
        apply(&mut o.b, &mut o.peers, r, 0, &c, SELF, true);
        assert_eq!(o.total(), 2000);
        // Fully decayed: not even stored.
        let mut o = Ours::new();
        let c = Contribution { age_ms: 400, ..c };
        assert_eq!(
            apply(&mut o.b, &mut o.peers, r, 0, &c, SELF, true),
            Applied::Ignored
        );
        assert_eq!(o.b.npeers, 0);
    }

    #[test]
    fn bounded_shares() {
        let r = rate_milli(1, false);
        let mut b = Bucket::default();
        let mut peers = [Share::default(); 2];
        let c = |origin, milli| Contribution {
            origin,
            hlc: 1,
            milli,
            age_ms: 0,
        };
        assert_eq!(
            apply(&mut b, &mut peers, r, 0, &c(1, 500), SELF, true),
            Applied::Stored
        );
        assert_eq!(
            apply(&mut b, &mut peers, r, 0, &c(2, 700), SELF, true),
            Applied::Stored
        );
        assert_eq!(
            apply(&mut b, &mut peers, r, 0, &c(3, 900), SELF, true),
            Applied::NeedRoom
        );
        // no growing: the smallest (origin 1) goes if the new one is larger
        assert_eq!(
            apply(&mut b, &mut peers, r, 0, &c(3, 400), SELF, false),
            Applied::Ignored
        );
        assert_eq!(
            apply(&mut b, &mut peers, r, 0, &c(3, 900), SELF, false),
            Applied::Stored
        );
        let origins: Vec<u64> = peers.iter().map(|s| s.origin).collect();
        assert_eq!(origins, vec![3, 2]);
        assert_eq!(grown(0), 2);
        assert_eq!(grown(2), 4);
        assert_eq!(grown(8), MAX_PEERS);
        assert_eq!(grown(MAX_PEERS), MAX_PEERS);
    }

    #[test]
    fn stale_like_nginx() {
        let r = rate_milli(1, false);
        let b = Bucket {
            last: 0,
            own: 3000,
            ..Bucket::default()
        };
        assert!(!is_stale(&b, &[], r, 59_999));
        assert!(is_stale(&b, &[], r, 60_000));
        let b = Bucket { own: 70_000, ..b };
        assert!(!is_stale(&b, &[], r, 60_000));
    }

    /// A simulated cluster for one key: every node's view, and the records
    /// in transit between them.
    struct Cluster {
        nodes: Vec<Ours>,
        /// own share changed since the last publication
        dirty: Vec<bool>,
        hlc: u64,
        /// (deliver at, to, contribution as of `sent`, sent)
        transit: Vec<(u64, usize, Contribution, u64)>,
        admitted: Vec<u64>,
    }

    impl Cluster {
        fn new(n: usize) -> Self {
            Cluster {
                nodes: (0..n).map(|_| Ours::new()).collect(),
                dirty: vec![false; n],
                hlc: 0,
                transit: Vec::new(),
                admitted: vec![0; n],
            }
        }
        fn request(&mut self, i: usize, rate: u64, burst: u64, now: u64) -> bool {
            let (ok, _) = self.nodes[i].request_slack(rate, burst, slack(rate), now);
            if ok {
                self.hlc += 1;
                self.nodes[i].b.own_hlc = self.hlc;
                self.dirty[i] = true;
                self.admitted[i] += 1;
            }
            ok
        }
        /// Node `i` publishes its share (if changed) to arrive `latency` later.
        fn publish(&mut self, i: usize, now: u64, latency: u64) {
            if !self.dirty[i] {
                return;
            }
            self.dirty[i] = false;
            let b = self.nodes[i].b;
            let c = Contribution {
                origin: i as u64 + 1,
                hlc: b.own_hlc,
                milli: b.own,
                age_ms: 0,
            };
            for j in 0..self.nodes.len() {
                if j != i {
                    self.transit.push((now + latency, j, c, b.last));
                }
            }
        }
        fn deliver(&mut self, rate: u64, now: u64) {
            let mut k = 0;
            while k < self.transit.len() {
                if self.transit[k].0 <= now {
                    let (_, j, mut c, sent) = self.transit.swap_remove(k);
                    c.age_ms = now.saturating_sub(sent);
                    let o = &mut self.nodes[j];
                    let self_id = j as u64 + 1;
                    if apply(&mut o.b, &mut o.peers, rate, now, &c, self_id, false)
                        == Applied::NeedRoom
                    {
                        unreachable!();
                    }
                } else {
                    k += 1;
                }
            }
        }
        fn admitted(&self) -> u64 {
            self.admitted.iter().sum()
        }
    }

    /// The accuracy scenario of t/limit_req_cluster.t: rate=20r/s burst=0
    /// nodelay, 60 r/s round-robin over 3 nodes for 5 s, sync every 10 ms
    /// with 1 ms of latency.
    fn round_robin(interval: u64, latency: u64, jitter: &[u64]) -> u64 {
        let rate = rate_milli(20, false);
        let mut c = Cluster::new(3);
        let mut next_pub = [0u64; 3];
        let mut k = 0u64;
        for now in 0..5000u64 {
            c.deliver(rate, now);
            // requests at k * 1000 / 60 ms, plus some jitter
            while (k * 1000) / 60 + jitter[k as usize % jitter.len()] <= now {
                c.request((k % 3) as usize, rate, 0, now);
                k += 1;
            }
            for (i, next) in next_pub.iter_mut().enumerate() {
                if now >= *next && c.dirty[i] {
                    c.publish(i, now, latency);
                    *next = now + interval;
                }
            }
        }
        c.admitted()
    }

    #[test]
    fn cluster_accuracy_round_robin() {
        // 100 is rate x duration; one bucket admits it exactly when the
        // requests come on time, and 10 ms sync adds nothing.
        assert_eq!(round_robin(0, 0, &[0]), 100);
        let synced = round_robin(10, 1, &[0]);
        assert!((100..=105).contains(&synced), "10 ms sync: {synced}");
        // Requests up to 2 ms early or late: the slack keeps the early
        // ones on time, so the bucket loses none of its time.
        let jitter = [0, 2, 0, 1, 2, 1];
        let synced = round_robin(10, 1, &jitter);
        assert!((98..=105).contains(&synced), "jitter: {synced}");
    }

    #[test]
    fn partition_then_heal() {
        // Node 2 is cut off after 1 s, rejoins at 3 s: while apart the two
        // sides limit separately (2 x rate), after the heal the total is
        // back at rate.
        let rate = rate_milli(10, false);
        let burst = 5 * REQUEST;
        let mut c = Cluster::new(3);
        let mut during = 0;
        let mut after = 0;
        for now in 0..6000u64 {
            c.deliver(rate, now);
            let cut = (1000..3000).contains(&now);
            if now % 5 == 0 {
                let i = (now / 5 % 3) as usize;
                if c.request(i, rate, burst, now) {
                    if cut {
                        during += 1;
                    } else if now >= 4000 {
                        after += 1;
                    }
                }
            }
            for i in 0..3 {
                if cut && i == 2 {
                    continue;
                }
                // a healed node's peers resend their shares (snapshot)
                if now == 3000 {
                    c.dirty[i] = true;
                }
                let latency = 1;
                if cut {
                    // only between nodes 0 and 1
                    if c.dirty[i] {
                        c.dirty[i] = false;
                        let b = c.nodes[i].b;
                        let ct = Contribution {
                            origin: i as u64 + 1,
                            hlc: b.own_hlc,
                            milli: b.own,
                            age_ms: 0,
                        };
                        c.transit.push((now + latency, 1 - i, ct, b.last));
                    }
                } else {
                    c.publish(i, now, latency);
                }
            }
        }
        // apart: node 2 alone admits ~rate, the other two ~rate together
        assert!((36..=46).contains(&during), "during: {during}");
        // 2 s after the heal: ~rate x 2 s
        assert!((18..=23).contains(&after), "after: {after}");
    }

    #[test]
    fn dead_peer_share_drains_with_the_pool() {
        let rate = rate_milli(10, false);
        let mut o = Ours::new();
        let c = Contribution {
            origin: 7,
            hlc: 1,
            milli: 4000,
            age_ms: 0,
        };
        apply(&mut o.b, &mut o.peers, rate, 0, &c, SELF, true);
        // Idle: the whole pool, dead share included, is empty after
        // 4000 / rate = 400 ms.
        assert_eq!(level(&o.b, &o.peers, rate, 400), 0);
        // Busy: this node keeps the pool at burst; the dead share still
        // shrinks, geometrically, with the pool's drain time.
        let burst = 4000;
        let mut admitted = 0;
        for now in 0..3000 {
            if o.request(rate, burst, now).0 {
                admitted += 1;
            }
        }
        // six drain times (burst / rate = 0.5 s): under 1 % is left
        advance(&mut o.b, &mut o.peers, rate, 3000);
        assert!(o.b.npeers == 0 || o.peers[0].milli < 40, "{:?}", o.peers[0]);
        // and once idle it is gone with the rest of the pool
        let t = total(&o.b, &o.peers);
        advance(&mut o.b, &mut o.peers, rate, 3000 + t / 10);
        assert_eq!((o.b.npeers, o.b.own), (0, 0));
        // the node alone admits the rate (minus the dead share's room)
        assert!((26..=31).contains(&admitted), "admitted {admitted}");
    }

    proptest! {
        /// With one node and whole requests per second, every decision and
        /// excess equals nginx's.
        #[test]
        fn parity_with_nginx(
            r in 1u64..50,
            burst in 0u64..5,
            steps in proptest::collection::vec(0u64..400, 1..200),
        ) {
            let rate = rate_milli(r, false);
            let burst = burst * REQUEST;
            let mut s = Stock::default();
            let mut o = Ours::new();
            let mut now = 1_000_000;
            for step in steps {
                now += step;
                prop_assert_eq!(s.request(rate, burst, now), o.request(rate, burst, now));
            }
        }

        /// With per-minute rates nginx truncates each update's decay; we
        /// carry the fraction, so we are never stricter, and looser by less
        /// than one thousandth of a request per update.
        #[test]
        fn per_minute_rates_close_to_nginx(
            r in 1u64..200,
            steps in proptest::collection::vec(0u64..5000, 1..100),
        ) {
            let rate = rate_milli(r, true);
            let burst = 1_000_000;
            let mut s = Stock::default();
            let mut o = Ours::new();
            let mut now = 1_000_000;
            let mut updates = 0;
            for step in steps {
                now += step;
                let (_, es) = s.request(rate, burst, now);
                let (_, eo) = o.request(rate, burst, now);
                updates += 1;
                prop_assert!(eo <= es && es - eo <= updates, "{} {}", es, eo);
            }
        }

        /// Time takes exactly `rate * ms` from the pool (never more than it
        /// holds), in proportion to each share.
        #[test]
        fn pool_drains_at_rate(
            own in 0u64..100_000,
            shares in proptest::collection::vec(1u64..100_000, 0..MAX_PEERS),
            r in 1u64..100,
            ms in 1u64..10_000,
        ) {
            let rate = rate_milli(r, false);
            let mut b = Bucket { own, npeers: shares.len() as u32, ..Bucket::default() };
            let mut peers = [Share::default(); MAX_PEERS];
            for (i, m) in shares.iter().enumerate() {
                peers[i] = Share { origin: i as u64 + 1, hlc: 1, milli: *m };
            }
            let before = total(&b, &peers);
            let old = peers;
            let old_own = own;
            advance(&mut b, &mut peers, rate, ms);
            let after = total(&b, &peers);
            prop_assert_eq!(after, before.saturating_sub(rate * ms / 1000));
            prop_assert_eq!(level(&b, &peers, rate, ms), after);
            // proportional within the rounding remainder
            let n = shares.len() as u64 + 1;
            let want = |v: u64| (v as u128 * after as u128 / before.max(1) as u128) as u64;
            prop_assert!(b.own >= want(old_own) && b.own <= want(old_own) + n);
            for s in &peers[..b.npeers as usize] {
                let o = old.iter().find(|o| o.origin == s.origin).unwrap();
                prop_assert!(s.milli >= want(o.milli) && s.milli <= want(o.milli) + n);
                prop_assert!(s.milli <= o.milli);
            }
        }

        /// No share a node builds exceeds the cap its peers clamp to,
        /// whatever the requests: the clamp never cuts a real share.
        #[test]
        fn own_share_within_cap(
            r in 1u64..100,
            per_minute in any::<bool>(),
            burst in 0u64..20,
            steps in proptest::collection::vec(0u64..200, 1..300),
        ) {
            let rate = rate_milli(r, per_minute).max(1);
            let burst = burst * REQUEST;
            let cap = share_cap(burst, rate);
            let mut o = Ours::new();
            let mut now = 0;
            for step in steps {
                now += step;
                o.request_slack(rate, burst, slack(rate), now);
                prop_assert!(o.b.own <= cap, "{} > {}", o.b.own, cap);
            }
        }

        /// A share travels as an age, so the sender's and the receiver's
        /// clocks need not agree: with instant delivery the receiver sees
        /// the share the sender has, whatever the two clocks read.
        #[test]
        fn ages_need_no_common_clock(
            r in 1u64..100,
            own in 1u64..50_000,
            idle in 0u64..5_000,
            sender_base in 0u64..(1 << 62),
            receiver_base in 0u64..(1 << 62),
        ) {
            let rate = rate_milli(r, false);
            let mut s = Ours::new();
            s.b.last = sender_base;
            s.b.own = own;
            let sent_at = sender_base + idle;
            let c = Contribution { origin: 7, hlc: 1, milli: own, age_ms: age(&s.b, sent_at) };
            let mut o = Ours::new();
            o.b.last = receiver_base;
            apply(&mut o.b, &mut o.peers, rate, receiver_base, &c, SELF, true);
            prop_assert_eq!(
                level(&o.b, &o.peers, rate, receiver_base),
                level(&s.b, &s.peers, rate, sent_at)
            );
        }

        /// With instant sync, a cluster of any size admits what one bucket
        /// admits over the same time: at most burst + 1 + rate x T, however
        /// the requests are spread.
        #[test]
        fn instant_sync_is_one_bucket(
            nodes in 1usize..6,
            r in 1u64..50,
            burst in 0u64..10,
            arrivals in proptest::collection::vec((0u64..30, 0usize..6), 1..300),
        ) {
            let rate = rate_milli(r, false);
            let burst_m = burst * REQUEST;
            let mut c = Cluster::new(nodes);
            let mut now = 0;
            for (gap, at) in arrivals {
                now += gap;
                c.deliver(rate, now);
                let i = at % nodes;
                c.request(i, rate, burst_m, now);
                c.publish(i, now, 0);
                c.deliver(rate, now);
            }
            // whole requests: (rate x T) / 1000, plus burst + 1, plus the
            // rounding of shares (a thousandth per node per update).
            let max = burst + 1 + r * now / 1000 + 2;
            prop_assert!(c.admitted() <= max, "admitted {} > {}", c.admitted(), max);
            // and every view agrees on the level (up to rounding)
            let l0 = level(&c.nodes[0].b, &c.nodes[0].peers, rate, now);
            for o in &c.nodes {
                let l = level(&o.b, &o.peers, rate, now);
                prop_assert!(l.abs_diff(l0) <= 50, "views {} {}", l, l0);
            }
        }

        /// Under saturation with instant sync the cluster admits no less
        /// than one bucket would under the same load (within a request per
        /// node), wherever the requests land.
        #[test]
        fn instant_sync_not_stricter(
            nodes in 1usize..6,
            r in 1u64..20,
            burst in 0u64..5,
            seed in 0u64..1000,
        ) {
            let rate = rate_milli(r, false);
            let burst_m = burst * REQUEST;
            let mut c = Cluster::new(nodes);
            let mut one = Ours::new();
            let mut single = 0;
            let mut x = seed;
            for now in 0..3000u64 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let i = (x >> 33) as usize % nodes;
                c.request(i, rate, burst_m, now);
                c.publish(i, now, 0);
                c.deliver(rate, now);
                if one.request(rate, burst_m, now).0 {
                    single += 1;
                }
            }
            prop_assert!(c.admitted() + nodes as u64 >= single, "{} vs {}", c.admitted(), single);
            prop_assert!(c.admitted() <= single + nodes as u64, "{} vs {}", c.admitted(), single);
        }
    }
}

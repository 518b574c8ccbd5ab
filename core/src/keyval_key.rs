//! Keys of `type=ip` and `type=prefix` keyval zones.
//!
//! A `type=ip` zone stores each key in a canonical binary form: the family
//! (4 or 6), the prefix length and the address with every bit past the
//! prefix cleared, so `192.168.13.7/24`, `192.168.13.0/24` and
//! `192.168.13.255/24` are one key, found by an exact lookup. The API and
//! the state file show keys as text ([`IpKey`]'s `Display`:
//! `192.168.13.0/24`, `2001:db8::/32`, a full-length prefix as the plain
//! address).
//!
//! Matching is a longest-match loop over the prefix lengths that are
//! present in the zone (the zone keeps a count per length), longest first,
//! each one an exact lookup: [`longest_ip_match`], [`longest_prefix_match`].
//! The set of lengths present is a bitmap; [`LengthsDesc`] walks it.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// `keyval_zone ... type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// Exact match (the default).
    #[default]
    String,
    /// Addresses and CIDR networks; the most specific network wins.
    Ip,
    /// The longest record key that is a prefix of the lookup key wins.
    Prefix,
}

impl KeyType {
    /// The value of `type=`.
    pub fn parse(s: &[u8]) -> Option<Self> {
        match s {
            b"string" => Some(KeyType::String),
            b"ip" => Some(KeyType::Ip),
            b"prefix" => Some(KeyType::Prefix),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::Ip => "ip",
            KeyType::Prefix => "prefix",
        }
    }

    /// Prefix lengths a zone of this type counts: 33 + 129 for ip (IPv4
    /// lengths 0..=32 first, then IPv6 0..=128), [`MAX_PREFIX_KEY`] + 1 for
    /// prefix, none for string.
    pub fn lengths(self) -> usize {
        match self {
            KeyType::String => 0,
            KeyType::Ip => V6_BASE + 129,
            KeyType::Prefix => MAX_PREFIX_KEY + 1,
        }
    }

    /// The slot of a stored key in the per-length counts (None for string
    /// zones, and for keys that are not valid for the type).
    pub fn slot(self, stored: &[u8]) -> Option<usize> {
        match self {
            KeyType::String => None,
            KeyType::Ip => IpKey::decode(stored).map(|k| k.slot()),
            KeyType::Prefix => (stored.len() <= MAX_PREFIX_KEY).then_some(stored.len()),
        }
    }

    /// Whether `stored` is a key a zone of this type may hold (a record
    /// received from a peer or read from a state file is checked so).
    pub fn valid_stored(self, stored: &[u8]) -> bool {
        match self {
            KeyType::String => true,
            KeyType::Ip => IpKey::decode(stored).is_some(),
            KeyType::Prefix => stored.len() <= MAX_PREFIX_KEY,
        }
    }
}

/// Longest record key of a `type=prefix` zone (the zone keeps a count per
/// key length).
pub const MAX_PREFIX_KEY: usize = 1024;

/// Where the IPv6 lengths start in an ip zone's counts.
pub const V6_BASE: usize = 33;

/// A canonical `type=ip` key.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub struct IpKey {
    buf: [u8; 18],
}

impl IpKey {
    /// IPv4 `addr/plen` (plen at most 32), host bits cleared.
    pub fn v4(addr: [u8; 4], plen: u8) -> Self {
        Self::build(4, &addr, plen.min(32))
    }

    /// IPv6 `addr/plen` (plen at most 128), host bits cleared.
    pub fn v6(addr: [u8; 16], plen: u8) -> Self {
        Self::build(6, &addr, plen.min(128))
    }

    fn build(family: u8, addr: &[u8], plen: u8) -> Self {
        let mut buf = [0u8; 18];
        buf[0] = family;
        buf[1] = plen;
        buf[2..2 + addr.len()].copy_from_slice(addr);
        let mut k = IpKey { buf };
        k.mask();
        k
    }

    fn mask(&mut self) {
        let plen = self.buf[1] as usize;
        let n = self.addr_len();
        let addr = &mut self.buf[2..2 + n];
        for (i, b) in addr.iter_mut().enumerate() {
            let bits = plen.saturating_sub(i * 8).min(8);
            *b &= (0xff00u16 >> bits) as u8;
        }
    }

    fn addr_len(&self) -> usize {
        if self.buf[0] == 4 {
            4
        } else {
            16
        }
    }

    /// The stored form: 6 bytes for IPv4, 18 for IPv6.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..2 + self.addr_len()]
    }

    pub fn is_v4(&self) -> bool {
        self.buf[0] == 4
    }

    pub fn prefix_len(&self) -> u8 {
        self.buf[1]
    }

    /// 32 or 128.
    pub fn max_len(&self) -> u8 {
        if self.is_v4() {
            32
        } else {
            128
        }
    }

    /// Its slot in an ip zone's per-length counts.
    pub fn slot(&self) -> usize {
        let base = if self.is_v4() { 0 } else { V6_BASE };
        base + self.prefix_len() as usize
    }

    /// The network of length `plen` (at most this key's) containing it.
    pub fn truncate(&self, plen: u8) -> Self {
        let mut k = *self;
        k.buf[1] = plen.min(self.prefix_len());
        k.mask();
        k
    }

    /// Reads a stored key; None unless it is exactly a canonical form.
    pub fn decode(stored: &[u8]) -> Option<Self> {
        let (&family, rest) = stored.split_first()?;
        let (&plen, addr) = rest.split_first()?;
        let k = match (family, addr.len()) {
            (4, 4) if plen <= 32 => Self::v4(addr.try_into().ok()?, plen),
            (6, 16) if plen <= 128 => Self::v6(addr.try_into().ok()?, plen),
            _ => return None,
        };
        (k.as_bytes() == stored).then_some(k)
    }

    /// A record key as written (API, `set`, state file): an address or
    /// `address/length`. Host bits past the length are cleared (as nginx's
    /// own CIDR parsing does); leading zeros, signs and zone ids refused.
    pub fn parse(text: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(text).ok()?;
        let (addr, plen) = match text.split_once('/') {
            Some((a, p)) => (a, Some(parse_plen(p)?)),
            None => (text, None),
        };
        if let Ok(a) = addr.parse::<Ipv4Addr>() {
            let plen = plen.unwrap_or(32);
            return (plen <= 32).then(|| Self::v4(a.octets(), plen));
        }
        let a = addr.parse::<Ipv6Addr>().ok()?;
        let plen = plen.unwrap_or(128);
        (plen <= 128).then(|| Self::v6(a.octets(), plen))
    }

    /// A lookup key (`$remote_addr`, ...): as [`parse`](Self::parse), and
    /// an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is looked up as the
    /// IPv4 address, as nginx's `allow`/`deny` do.
    pub fn parse_lookup(text: &[u8]) -> Option<Self> {
        let k = Self::parse(text)?;
        if !k.is_v4() && k.prefix_len() >= 96 {
            let a = Ipv6Addr::from(<[u8; 16]>::try_from(&k.buf[2..18]).ok()?);
            if let Some(v4) = a.to_ipv4_mapped() {
                return Some(Self::v4(v4.octets(), k.prefix_len() - 96));
            }
        }
        Some(k)
    }
}

fn parse_plen(p: &str) -> Option<u8> {
    if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if p.len() > 1 && p.starts_with('0') {
        return None;
    }
    p.parse::<u8>().ok()
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_v4() {
            let a: [u8; 4] = self.buf[2..6].try_into().map_err(|_| fmt::Error)?;
            write!(f, "{}", Ipv4Addr::from(a))?;
        } else {
            let a: [u8; 16] = self.buf[2..18].try_into().map_err(|_| fmt::Error)?;
            write!(f, "{}", Ipv6Addr::from(a))?;
        }
        if self.prefix_len() != self.max_len() {
            write!(f, "/{}", self.prefix_len())?;
        }
        Ok(())
    }
}

/// The text of a stored key, as the API and the state file show it: the
/// address form for ip zones, the bytes themselves otherwise.
pub fn display_key(ty: KeyType, stored: &[u8]) -> Vec<u8> {
    match ty {
        KeyType::Ip => match IpKey::decode(stored) {
            Some(k) => k.to_string().into_bytes(),
            None => stored.to_vec(),
        },
        _ => stored.to_vec(),
    }
}

/// A key as written (API, `set`, state file) in its stored form; None
/// when it is not valid for the zone's type.
pub fn stored_key(ty: KeyType, text: &[u8]) -> Option<Vec<u8>> {
    match ty {
        KeyType::String => Some(text.to_vec()),
        KeyType::Ip => IpKey::parse(text).map(|k| k.as_bytes().to_vec()),
        KeyType::Prefix => (text.len() <= MAX_PREFIX_KEY).then(|| text.to_vec()),
    }
}

/// The slots whose bit is set in `words`, highest first, starting at
/// `max` (inclusive).
pub struct LengthsDesc<'a> {
    words: &'a [u64],
    /// The next slot to look at, plus one (0: done).
    next: usize,
}

impl<'a> LengthsDesc<'a> {
    pub fn new(words: &'a [u64], max: usize) -> Self {
        LengthsDesc {
            words,
            next: (max + 1).min(words.len() * 64),
        }
    }
}

impl Iterator for LengthsDesc<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        while self.next > 0 {
            let top = self.next - 1;
            let w = top / 64;
            let bit = top % 64;
            // The bits of this word at or below `top`.
            let masked = self.words[w] & (u64::MAX >> (63 - bit));
            if masked != 0 {
                let found = w * 64 + 63 - masked.leading_zeros() as usize;
                self.next = found;
                return Some(found);
            }
            self.next = w * 64;
        }
        None
    }
}

/// Sets or clears `slot` in a bitmap.
pub fn set_bit(words: &mut [u64], slot: usize, on: bool) {
    let (w, b) = (slot / 64, slot % 64);
    if on {
        words[w] |= 1 << b;
    } else {
        words[w] &= !(1 << b);
    }
}

/// The most specific record of an ip zone for `key`: tries the networks
/// of `key` at each length set in `present` (ip zone slots, see
/// [`KeyType::lengths`]), longest first, with the exact lookup `get`.
pub fn longest_ip_match<R>(
    key: &IpKey,
    present: &[u64],
    mut get: impl FnMut(&[u8]) -> Option<R>,
) -> Option<R> {
    let base = if key.is_v4() { 0 } else { V6_BASE };
    for slot in LengthsDesc::new(present, base + key.prefix_len() as usize) {
        if slot < base {
            break;
        }
        let plen = (slot - base) as u8;
        if let Some(r) = get(key.truncate(plen).as_bytes()) {
            return Some(r);
        }
    }
    None
}

/// The longest record of a prefix zone that is a prefix of `key`: tries
/// the key lengths set in `present`, longest first, with `get`.
pub fn longest_prefix_match<R>(
    key: &[u8],
    present: &[u64],
    mut get: impl FnMut(&[u8]) -> Option<R>,
) -> Option<R> {
    for len in LengthsDesc::new(present, key.len().min(MAX_PREFIX_KEY)) {
        if let Some(r) = get(&key[..len]) {
            return Some(r);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn ip(s: &str) -> IpKey {
        IpKey::parse(s.as_bytes()).unwrap_or_else(|| panic!("{s}"))
    }

    #[test]
    fn parses_and_formats() {
        for (input, shown) in [
            ("192.168.13.0/24", "192.168.13.0/24"),
            ("192.168.13.7/24", "192.168.13.0/24"),
            ("10.0.0.1", "10.0.0.1"),
            ("10.0.0.1/32", "10.0.0.1"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:DB8:1::5/32", "2001:db8::/32"),
            ("::1", "::1"),
            ("::/0", "::/0"),
            ("2001:db8::1/128", "2001:db8::1"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
        ] {
            assert_eq!(ip(input).to_string(), shown, "{input}");
        }
    }

    #[test]
    fn refuses_what_is_not_an_address() {
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1.2.3.4.5",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3.4/33",
            "1.2.3.4/",
            "1.2.3.4/-1",
            "1.2.3.4/+8",
            "1.2.3.4/08",
            "1.2.3.4/8/8",
            " 1.2.3.4",
            "1.2.3.4 ",
            "::1/129",
            "fe80::1%eth0",
            "2001:db8:::1",
            "1.2.3.4/1000",
        ] {
            assert!(IpKey::parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(IpKey::parse(b"\xff").is_none());
    }

    #[test]
    fn mapped_lookup_is_ipv4() {
        let k = IpKey::parse_lookup(b"::ffff:10.1.2.3").unwrap();
        assert_eq!(k, ip("10.1.2.3"));
        assert_eq!(IpKey::parse_lookup(b"::1").unwrap(), ip("::1"));
    }

    #[test]
    fn decode_accepts_only_canonical_forms() {
        let k = ip("10.1.0.0/16");
        assert_eq!(IpKey::decode(k.as_bytes()), Some(k));
        assert!(IpKey::decode(&[4, 16, 10, 1, 0, 1]).is_none()); // host bit
        assert!(IpKey::decode(&[4, 33, 10, 1, 0, 0]).is_none());
        assert!(IpKey::decode(&[5, 8, 10, 0, 0, 0]).is_none());
        assert!(IpKey::decode(&[4, 8, 10, 0, 0]).is_none());
        assert!(IpKey::decode(b"10.0.0.1").is_none());
        assert!(IpKey::decode(b"").is_none());
        assert!(KeyType::Ip.valid_stored(ip("::/0").as_bytes()));
        assert!(!KeyType::Prefix.valid_stored(&[b'a'; MAX_PREFIX_KEY + 1]));
    }

    #[test]
    fn lengths_walk_down() {
        let mut words = [0u64; 3];
        for s in [0, 5, 63, 64, 100, 191] {
            set_bit(&mut words, s, true);
        }
        let all: Vec<_> = LengthsDesc::new(&words, 191).collect();
        assert_eq!(all, [191, 100, 64, 63, 5, 0]);
        let some: Vec<_> = LengthsDesc::new(&words, 99).collect();
        assert_eq!(some, [64, 63, 5, 0]);
        assert_eq!(LengthsDesc::new(&words, 10_000).next(), Some(191));
        set_bit(&mut words, 0, false);
        assert_eq!(LengthsDesc::new(&words, 4).next(), None);
    }

    /// A zone modelled as a map of stored keys, with its length bitmap.
    fn zone(ty: KeyType, keys: &[Vec<u8>]) -> (BTreeMap<Vec<u8>, usize>, Vec<u64>) {
        let mut map = BTreeMap::new();
        let mut words = vec![0u64; ty.lengths().div_ceil(64)];
        for (i, k) in keys.iter().enumerate() {
            map.insert(k.clone(), i);
            set_bit(&mut words, ty.slot(k).unwrap(), true);
        }
        (map, words)
    }

    #[test]
    fn most_specific_network_wins() {
        let keys: Vec<Vec<u8>> = ["10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "2001:db8::/32"]
            .iter()
            .map(|s| ip(s).as_bytes().to_vec())
            .collect();
        let (map, words) = zone(KeyType::Ip, &keys);
        let find = |s: &str| {
            let k = IpKey::parse_lookup(s.as_bytes()).unwrap();
            longest_ip_match(&k, &words, |b| map.get(b).copied())
        };
        assert_eq!(find("10.1.2.3"), Some(2));
        assert_eq!(find("10.1.2.4"), Some(1));
        assert_eq!(find("10.2.0.1"), Some(0));
        assert_eq!(find("10.1.0.0/24"), Some(1));
        assert_eq!(find("11.0.0.1"), None);
        assert_eq!(find("2001:db8:5::1"), Some(3));
        assert_eq!(find("2001:db9::1"), None);
        assert_eq!(find("::ffff:10.1.2.3"), Some(2));
    }

    #[test]
    fn longest_prefix_wins() {
        let keys: Vec<Vec<u8>> = ["", "/api", "/api/v1", "/b"]
            .iter()
            .map(|s| s.as_bytes().to_vec())
            .collect();
        let (map, words) = zone(KeyType::Prefix, &keys);
        let find = |s: &str| longest_prefix_match(s.as_bytes(), &words, |b| map.get(b).copied());
        assert_eq!(find("/api/v1/users"), Some(2));
        assert_eq!(find("/api/v2"), Some(1));
        assert_eq!(find("/ap"), Some(0));
        assert_eq!(find(""), Some(0));
        assert_eq!(find("/b"), Some(3));
    }

    fn any_ip() -> impl Strategy<Value = IpKey> {
        prop_oneof![
            (any::<[u8; 4]>(), 0u8..=32).prop_map(|(a, p)| IpKey::v4(a, p)),
            (any::<[u8; 16]>(), 0u8..=128).prop_map(|(a, p)| IpKey::v6(a, p)),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trips(k in any_ip()) {
            let text = k.to_string();
            prop_assert_eq!(IpKey::parse(text.as_bytes()), Some(k));
            prop_assert_eq!(IpKey::decode(k.as_bytes()), Some(k));
            prop_assert_eq!(display_key(KeyType::Ip, k.as_bytes()), text.into_bytes());
        }

        #[test]
        fn parse_never_panics(s in proptest::collection::vec(any::<u8>(), 0..48)) {
            if let Some(k) = IpKey::parse(&s) {
                prop_assert!(IpKey::decode(k.as_bytes()).is_some());
            }
            let _ = IpKey::parse_lookup(&s);
            let _ = IpKey::decode(&s);
        }

        /// The loop finds what a scan of every record finds: the longest
        /// network of the lookup's family containing it.
        #[test]
        fn ip_match_is_the_longest_containing(
            records in proptest::collection::vec(any_ip(), 0..40),
            probe in any_ip(),
            near in any::<bool>(),
        ) {
            // Half the probes sit inside a record's network.
            let probe = match (near, records.first()) {
                (true, Some(r)) if r.is_v4() == probe.is_v4() => {
                    let mut b = probe.buf;
                    let n = r.addr_len();
                    for i in 0..n {
                        let bits = (r.prefix_len() as usize).saturating_sub(i * 8).min(8);
                        let m = (0xff00u16 >> bits) as u8;
                        b[2 + i] = (r.buf[2 + i] & m) | (b[2 + i] & !m);
                    }
                    IpKey { buf: b }
                }
                _ => probe,
            };
            let keys: Vec<Vec<u8>> = records.iter().map(|k| k.as_bytes().to_vec()).collect();
            let (map, words) = zone(KeyType::Ip, &keys);
            let got = longest_ip_match(&probe, &words, |b| map.get(b).map(|_| b.to_vec()));
            let expected = records
                .iter()
                .filter(|r| r.is_v4() == probe.is_v4() && r.prefix_len() <= probe.prefix_len()
                    && probe.truncate(r.prefix_len()) == **r)
                .max_by_key(|r| r.prefix_len())
                .map(|r| r.as_bytes().to_vec());
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn prefix_match_is_the_longest_prefix(
            records in proptest::collection::vec("[ab]{0,6}", 0..20),
            probe in "[ab]{0,8}",
        ) {
            let keys: Vec<Vec<u8>> = records.iter().map(|s| s.as_bytes().to_vec()).collect();
            let (map, words) = zone(KeyType::Prefix, &keys);
            let got = longest_prefix_match(probe.as_bytes(), &words, |b| map.get(b).map(|_| b.to_vec()));
            let expected = records
                .iter()
                .filter(|r| probe.starts_with(r.as_str()))
                .max_by_key(|r| r.len())
                .map(|r| r.as_bytes().to_vec());
            prop_assert_eq!(got, expected);
        }
    }
}

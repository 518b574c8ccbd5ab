//! What each API version serves: the NGINX Plus "Compatibility" list
//! (ngx_http_api_module documentation), restricted to what this module
//! implements. Adding a version or a versioned difference is one table row.

/// The current API version.
pub const CURRENT: u32 = 9;

/// Every version answered, oldest first (`GET /api/`).
pub const ALL: [u32; 9] = [1, 2, 3, 4, 5, 6, 7, 8, 9];

/// A part of the API that not every version has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// `/stream/keyvals/`: "data were added in version 2".
    StreamKeyvals,
    /// `/stream/zone_sync/`: "data were added in version 3".
    ZoneSync,
    /// The `path` and `method` members of the error object: "removed in
    /// version 4 ... continue to exist in earlier api versions, but show an
    /// empty value".
    ErrorPathMethod,
    /// `{"key":{"value":..,"expire":ms}}` in POST/PATCH: "can be set or
    /// changed since version 5". Earlier versions reject the nested object
    /// ("nested object or list", as the version 1-4 documentation lists).
    KeyvalExpire,
    /// `/resolvers/` and `/http/location_zones/`: "added in version 5".
    Resolvers,
    /// `/http/limit_reqs/`, `/http/limit_conns/`, `/stream/limit_conns/`:
    /// "added in version 6".
    Limits,
    /// `/workers/`: "added in version 9".
    Workers,
}

/// `(feature, first version, last version)`, both inclusive.
const TABLE: &[(Feature, u32, u32)] = &[
    (Feature::StreamKeyvals, 2, CURRENT),
    (Feature::ZoneSync, 3, CURRENT),
    (Feature::ErrorPathMethod, 1, 3),
    (Feature::KeyvalExpire, 5, CURRENT),
    (Feature::Resolvers, 5, CURRENT),
    (Feature::Limits, 6, CURRENT),
    (Feature::Workers, 9, CURRENT),
];

/// Whether API `version` has `feature`.
pub fn has(version: u32, feature: Feature) -> bool {
    TABLE
        .iter()
        .any(|&(f, first, last)| f == feature && (first..=last).contains(&version))
}

pub(crate) fn error_has_path_and_method(version: u32) -> bool {
    has(version, Feature::ErrorPathMethod)
}

/// A path segment naming a supported version: plain decimal digits, no
/// sign, no leading zero.
pub fn parse(segment: &[u8]) -> Option<u32> {
    if segment.is_empty() || segment.len() > 3 || segment[0] == b'0' {
        return None;
    }
    let mut v = 0u32;
    for &b in segment {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    ALL.contains(&v).then_some(v)
}

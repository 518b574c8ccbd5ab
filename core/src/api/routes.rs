//! Path and query-string parsing.
//!
//! The path is what follows the location prefix in the (already
//! percent-decoded) request URI, with or without its leading `/`:
//! `""` and `"/"` name the version list, `"/9"` and `"/9/"` the endpoint
//! list of version 9. One trailing `/` is optional everywhere
//! (`/9/stream/zone_sync` is what the NGINX Plus Go client asks for); an
//! empty segment elsewhere (`/9//http`) is `PathNotFound`. Zone names are
//! taken verbatim, any bytes but `/`.

use super::errors::ApiError;
use super::versions::{self, Feature};
use super::Namespace;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route<'a> {
    /// `/`: the version list.
    Versions,
    /// `/{version}/`: the endpoint list.
    Endpoints,
    Nginx,
    /// `/{version}/http/` or `/{version}/stream/`.
    NsEndpoints(Namespace),
    KeyvalZones(Namespace),
    KeyvalZone(Namespace, &'a [u8]),
    ZoneSync,
}

/// A resolved path: the version (absent only for [`Route::Versions`]) and
/// the route; or the error with the version to shape it for.
pub(crate) type Resolved<'a> = Result<(Option<u32>, Route<'a>), (Option<u32>, ApiError)>;

pub(crate) fn resolve(path: &[u8]) -> Resolved<'_> {
    let path = path.strip_prefix(b"/").unwrap_or(path);
    if path.is_empty() {
        return Ok((None, Route::Versions));
    }
    let path = path.strip_suffix(b"/").unwrap_or(path);
    let mut segs = path.split(|&b| b == b'/');
    let first = segs.next().unwrap_or_default();
    let Some(v) = versions::parse(first) else {
        return Err((None, ApiError::unknown_version()));
    };
    let rest: Vec<&[u8]> = segs.collect();
    let not_found = Err((Some(v), ApiError::path_not_found()));
    if rest.iter().any(|s| s.is_empty()) {
        return not_found;
    }
    let stream_kv = versions::has(v, Feature::StreamKeyvals);
    let route = match rest.as_slice() {
        [] => Route::Endpoints,
        [b"nginx"] => Route::Nginx,
        [b"http"] => Route::NsEndpoints(Namespace::Http),
        [b"http", b"keyvals"] => Route::KeyvalZones(Namespace::Http),
        [b"http", b"keyvals", zone] => Route::KeyvalZone(Namespace::Http, zone),
        [b"stream"] => Route::NsEndpoints(Namespace::Stream),
        [b"stream", b"keyvals"] if stream_kv => Route::KeyvalZones(Namespace::Stream),
        [b"stream", b"keyvals", zone] if stream_kv => Route::KeyvalZone(Namespace::Stream, zone),
        [b"stream", b"zone_sync"] if versions::has(v, Feature::ZoneSync) => Route::ZoneSync,
        _ => return not_found,
    };
    Ok((Some(v), route))
}

/// The first `name=value` argument of a raw query string, value
/// percent-decoded (`%XX`; a `%` not followed by two hex digits stays as
/// is; `+` stays `+`, as in nginx). An argument without `=` is absent.
pub(crate) fn arg(args: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    args.split(|&b| b == b'&').find_map(|pair| {
        let value = pair.strip_prefix(name)?.strip_prefix(b"=")?;
        Some(percent_decode(value))
    })
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// The `fields` argument: which members of the requested objects to write.
/// Absent: all. Present: the comma-separated names (empty names ignored),
/// so `?fields=` writes none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields(Option<Vec<Vec<u8>>>);

impl Fields {
    pub fn from_args(args: &[u8]) -> Self {
        Fields(arg(args, b"fields").map(|v| {
            v.split(|&b| b == b',')
                .filter(|n| !n.is_empty())
                .map(<[u8]>::to_vec)
                .collect()
        }))
    }

    pub fn allows(&self, name: &[u8]) -> bool {
        match &self.0 {
            None => true,
            Some(names) => names.iter().any(|n| n == name),
        }
    }
}

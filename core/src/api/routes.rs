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
use super::metrics::Untracked;
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
    Processes,
    Connections,
    Slabs,
    Slab(&'a [u8]),
    Ssl,
    Workers,
    Worker(&'a [u8]),
    HttpRequests,
    LimitReqs,
    LimitReq(&'a [u8]),
    /// A collection this module does not track: `{}`.
    Untracked(Untracked),
    /// An item of such a collection: its "not found".
    UntrackedItem(Untracked, &'a [u8]),
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
    let v5 = versions::has(v, Feature::Resolvers);
    let v6 = versions::has(v, Feature::Limits);
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
        [b"processes"] => Route::Processes,
        [b"connections"] => Route::Connections,
        [b"slabs"] => Route::Slabs,
        [b"slabs", zone] => Route::Slab(zone),
        [b"ssl"] => Route::Ssl,
        [b"workers"] if versions::has(v, Feature::Workers) => Route::Workers,
        [b"workers", id] if versions::has(v, Feature::Workers) => Route::Worker(id),
        [b"http", b"requests"] => Route::HttpRequests,
        [b"http", b"limit_reqs"] if v6 => Route::LimitReqs,
        [b"http", b"limit_reqs", zone] if v6 => Route::LimitReq(zone),
        [b"http", b"server_zones", item @ ..] if item.len() < 2 => {
            untracked(Untracked::HttpServerZones, item.first().copied())
        }
        [b"http", b"location_zones", item @ ..] if v5 && item.len() < 2 => {
            untracked(Untracked::HttpLocationZones, item.first().copied())
        }
        [b"http", b"caches", item @ ..] if item.len() < 2 => {
            untracked(Untracked::HttpCaches, item.first().copied())
        }
        [b"http", b"upstreams", item @ ..] if item.len() < 2 => {
            untracked(Untracked::HttpUpstreams, item.first().copied())
        }
        [b"http", b"limit_conns", item @ ..] if v6 && item.len() < 2 => {
            untracked(Untracked::HttpLimitConns, item.first().copied())
        }
        [b"stream", b"server_zones", item @ ..] if item.len() < 2 => {
            untracked(Untracked::StreamServerZones, item.first().copied())
        }
        [b"stream", b"upstreams", item @ ..] if item.len() < 2 => {
            untracked(Untracked::StreamUpstreams, item.first().copied())
        }
        [b"stream", b"limit_conns", item @ ..] if v6 && item.len() < 2 => {
            untracked(Untracked::StreamLimitConns, item.first().copied())
        }
        [b"resolvers", item @ ..] if v5 && item.len() < 2 => {
            untracked(Untracked::Resolvers, item.first().copied())
        }
        _ => return not_found,
    };
    Ok((Some(v), route))
}

/// An untracked collection (no `item`) or one of its items.
fn untracked(what: Untracked, item: Option<&[u8]>) -> Route<'_> {
    match item {
        None => Route::Untracked(what),
        Some(name) => Route::UntrackedItem(what, name),
    }
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

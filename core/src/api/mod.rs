//! The pure part of the NGINX Plus-compatible REST API (`api` directive).
//!
//! The nginx layer turns a request into a [`Request`], calls [`handle`] with
//! a [`Backend`] over its shared zones, and sends the [`Response`] back. No
//! I/O, no clock, no nginx here: everything is testable with a fake backend.
//!
//! # Endpoints
//!
//! | path (after the location)          | methods                        |
//! |------------------------------------|--------------------------------|
//! | `/`                                | GET: `[1,2,...,9]`             |
//! | `/{v}/`                            | GET: `["nginx","http","stream"]` |
//! | `/{v}/nginx`                       | GET                            |
//! | `/{v}/http/`, `/{v}/stream/`       | GET: what the version serves (`zone_sync` only when configured) |
//! | `/{v}/{http,stream}/keyvals/`      | GET                            |
//! | `/{v}/{http,stream}/keyvals/{zone}`| GET (`?key=`), POST, PATCH, DELETE |
//! | `/{v}/stream/zone_sync/`           | GET                            |
//! | `/{v}/processes`, `/{v}/connections`, `/{v}/ssl`, `/{v}/http/requests` | GET |
//! | `/{v}/slabs/[{zone}]`, `/{v}/http/limit_reqs/[{zone}]` (6+) | GET |
//! | `/{v}/workers/` (9+)               | GET: `[]`                      |
//! | the collections of [`metrics::Untracked`] | GET: `{}`               |
//!
//! The monitoring endpoints ([`metrics`]) carry only figures the backend
//! read from nginx; what nginx does not count is left out (`{}`).
//!
//! HEAD is answered as GET (the nginx layer sends the headers only, with
//! the body's length). Every GET takes `?fields=a,b`: for an object
//! (`/nginx`, `/stream/zone_sync/`, one keyval zone) it keeps those
//! members; for a collection (`/keyvals/`) it keeps those members of each
//! zone, so `?fields=` lists the zone names only. Lists ignore it.
//! Versions differ only as [`versions`] tabulates.
//!
//! # Errors (status, `code`) and where the contract says so
//!
//! Cited from `nginx-plus-api-subset.yaml` (API 9) and the Plus
//! documentation's Compatibility list:
//!
//! * 404 `UnknownVersion`: first segment is not 1..9 (every path's 404).
//! * 404 `PathNotFound`: anything else not served, including
//!   `/stream/zone_sync/` without `zone_sync` (the Plus Go client takes
//!   `PathNotFound` there as "not configured").
//! * 405 `MethodNotSupported` + `Allow`: a method the path never takes
//!   (also PUT, OPTIONS, ... on keyval zones).
//! * 405 `MethodDisabled`: POST/PATCH/DELETE with `write=off` (spec: "Method
//!   disabled (*MethodDisabled*)").
//! * 404 `KeyvalNotFound`, 404 `KeyvalKeyNotFound` (spec, GET/PATCH/DELETE).
//! * 409 `KeyvalKeyExists`: POST of an existing key (spec: "key already
//!   exists (*KeyvalKeyExists*)"; text as Plus writes it,
//!   `key "a" already exists`).
//! * 415 `JsonError`: the body is not JSON (spec: "JSON error
//!   (*JsonError*)"), including nesting deeper than [`json::MAX_DEPTH`] and
//!   an empty body.
//! * 400 `KeyvalFormatError`: JSON of the wrong shape (spec: "Invalid JSON,
//!   invalid key format, key required, keyval timeout is not enabled, only
//!   one key can be added, only one key can be updated"): not an object;
//!   `{}`; an empty key; a duplicate key (rejected rather than "last one
//!   wins", so the outcome never depends on member order); an array or
//!   nested object as value (before version 5 any object: "nested object or
//!   list"); `null` in POST; an unknown or repeated parameter in
//!   `{"value":..,"expire":..}`; `value` not a string/number/boolean;
//!   `expire` not a plain integer in `0..=MAX_EXPIRE_MS`; several keys into
//!   a non-empty zone; several keys in PATCH.
//! * 400 `BodyReadError` (spec) and 413 `BodyTooLarge` (the spec lists 413
//!   without a code; the name follows `BodyReadError`): for the nginx layer,
//!   through [`reject`]; [`handle`] also answers 413 above [`MAX_BODY_LEN`].
//! * 507 `KeyvalOutOfMemory`: the zone is full. The spec lists no code for
//!   this; Plus uses `UpstreamOutOfMemory` for upstreams, and 507
//!   (Insufficient Storage) tells the client its request was fine.
//!
//! Checks run in this order, the first failure answers: version, path,
//! method (405 `MethodNotSupported`), `write=on` (405 `MethodDisabled`),
//! body size, JSON syntax (415), body shape (400), then the backend (zone,
//! key, memory). So a bad body sent to an unknown zone gets 415/400, not
//! 404. A body is parsed and checked whole before the backend sees any of
//! it: a rejected body never reaches a write method.
//!
//! # For the nginx layer
//!
//! Read the body for POST and PATCH only; on a read error or an oversized
//! body answer [`reject`]. For HEAD send the headers of the [`Response`]
//! (its `Content-Length` is `body.len()`) and drop the body. Send `Allow`
//! when [`Response::allow`] is set.
//!
//! # Values
//!
//! Keys and values are bytes. A value may be written as a JSON string, or as
//! a number or boolean, stored as its literal text (Plus stores `{"a":1}` as
//! `"1"`). For the JSON encoding of bytes that are not UTF-8 see [`json`].

mod errors;
pub mod json;
mod keyvals;
pub mod metrics;
mod routes;
mod status;
pub mod versions;

pub use errors::HREF;
pub use status::iso8601_ms;

use errors::ApiError;
pub use metrics::{LimitReqZone, SlabSlot, SlabZone, StubStatus};
use routes::{Fields, Route};

/// Largest body [`handle`] accepts (413 above). The nginx layer's own limit
/// (`client_body_buffer_size`) is normally far lower.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;

/// Largest `expire` accepted, in milliseconds: 2^53 - 1 (the largest integer
/// every JSON client represents exactly; adding it to any current Unix time
/// in milliseconds cannot overflow a `u64` or an `i64`).
pub const MAX_EXPIRE_MS: u64 = (1 << 53) - 1;

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Delete,
    /// Any other method (PUT, OPTIONS, ...): always 405.
    Other,
}

/// One API request, as the nginx layer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: Method,
    /// The percent-decoded URI after the location prefix, with or without
    /// its leading `/`: `b""`, `b"/"`, `b"/9/stream/keyvals/one"`.
    pub path: &'a [u8],
    /// The raw query string, without `?` (`fields`, `key`).
    pub args: &'a [u8],
    /// The body of POST/PATCH (`None` if there was none); ignored otherwise.
    pub body: Option<&'a [u8]>,
    /// `api write=on`.
    pub write_enabled: bool,
    /// `$request_id`, echoed in error objects.
    pub request_id: &'a str,
}

/// The answer. A non-empty body is always `application/json`; 201 and 204
/// have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// The `Allow` header, set on 405 `MethodNotSupported`.
    pub allow: Option<&'static str>,
}

impl Response {
    fn ok(status: u16, body: Vec<u8>) -> Self {
        Response {
            status,
            body,
            allow: None,
        }
    }

    /// `Content-Type` to send: `application/json` when there is a body.
    pub fn content_type(&self) -> Option<&'static str> {
        (!self.body.is_empty()).then_some("application/json")
    }
}

/// `http` or `stream` keyval zones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    Http,
    Stream,
}

/// `GET /nginx`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NginxInfo {
    pub version: String,
    pub build: String,
    /// Address of the server that accepted the request.
    pub address: String,
    /// Configuration reloads.
    pub generation: u64,
    /// Last configuration load, Unix time in milliseconds.
    pub load_timestamp_ms: u64,
    /// Now, Unix time in milliseconds.
    pub timestamp_ms: u64,
    pub pid: u64,
    pub ppid: u64,
}

/// `GET /stream/zone_sync/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneSyncStatus {
    pub bytes_in: u64,
    pub msgs_in: u64,
    pub msgs_out: u64,
    pub bytes_out: u64,
    /// Peers this node is connected to.
    pub nodes_online: u64,
    /// Synced zones, in the order to write them.
    pub zones: Vec<ZoneSyncZone>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneSyncZone {
    pub name: Vec<u8>,
    /// Records still to be sent to the cluster.
    pub records_pending: u64,
    /// Records held in the zone.
    pub records_total: u64,
}

/// One key of a POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyvalEntry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Lifetime in milliseconds (`expire`), overriding the zone's `timeout`.
    pub expire_ms: Option<u64>,
}

/// What a PATCH does to one existing key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyvalChange<'a> {
    /// `{"k":null}`.
    Delete,
    /// `{"k":"v"}`, `{"k":{"expire":ms}}`, `{"k":{"value":"v","expire":ms}}`:
    /// at least one of the two is set; `None` leaves it as it is.
    Update {
        value: Option<&'a [u8]>,
        expire_ms: Option<u64>,
    },
}

/// Why the backend refused; [`handle`] turns each into its error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendError {
    /// No such keyval zone in this namespace (404 `KeyvalNotFound`).
    ZoneNotFound,
    /// PATCH of an absent key (404 `KeyvalKeyNotFound`).
    KeyNotFound,
    /// POST of one key that exists (409 `KeyvalKeyExists`).
    KeyExists,
    /// POST of several keys into a non-empty zone (400 `KeyvalFormatError`,
    /// "only one key can be added").
    NotEmpty,
    /// A key the zone's `type=` refuses, e.g. not an address or CIDR in a
    /// `type=ip` zone (400 `KeyvalFormatError`, "invalid key format").
    InvalidKey,
    /// `expire` given for a zone that does not support it (400
    /// `KeyvalFormatError`, "keyval timeout is not enabled").
    TimeoutNotEnabled,
    /// A key or value too long for a record of the zone (400
    /// `KeyvalFormatError`).
    RecordTooLarge,
    /// The zone's memory is exhausted (507 `KeyvalOutOfMemory`).
    NoMemory,
}

/// The nginx layer's view of its shared zones.
///
/// Write methods are called only with fully validated input, and each is
/// one atomic step for the backend (under one lock): it either does all of
/// it or changes nothing.
pub trait Backend {
    fn nginx_info(&self) -> NginxInfo;

    /// `None`: `zone_sync` is not configured.
    fn zone_sync(&self) -> Option<ZoneSyncStatus>;

    /// nginx's stub_status counters; `None` when the binary has none.
    fn stub_status(&self) -> Option<StubStatus>;

    /// Abnormally terminated and respawned child processes; `None` when
    /// unknown.
    fn respawned(&self) -> Option<u64>;

    /// The slab statistics of every shared memory zone, in the order to
    /// list them.
    fn slabs(&self) -> Vec<SlabZone>;

    /// The counters of every `sync_limit_req_zone`, in the order to list
    /// them.
    fn limit_reqs(&self) -> Vec<LimitReqZone>;

    /// Names of the keyval zones of `ns`, in the order to list them.
    fn keyval_zones(&self, ns: Namespace) -> Vec<Vec<u8>>;

    /// Calls `visit(key, value)` for every live (unexpired) record.
    /// Errors: `ZoneNotFound`.
    fn keyval_visit(
        &self,
        ns: Namespace,
        zone: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), BackendError>;

    /// The value of one live record (`?key=`). Errors: `ZoneNotFound`.
    fn keyval_get(
        &self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError>;

    /// Inserts `entries` (never empty, keys distinct and non-empty). With
    /// several entries the zone must be empty (`NotEmpty`); one entry must
    /// not exist yet (`KeyExists`). Also `ZoneNotFound`, `InvalidKey`,
    /// `TimeoutNotEnabled`, `RecordTooLarge`, `NoMemory`. All or nothing.
    fn keyval_post(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        entries: &[KeyvalEntry<'_>],
    ) -> Result<(), BackendError>;

    /// Changes or deletes one existing key (`KeyNotFound` if absent). Also
    /// `ZoneNotFound`, `TimeoutNotEnabled`, `RecordTooLarge`, `NoMemory`.
    fn keyval_patch(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
        change: KeyvalChange<'_>,
    ) -> Result<(), BackendError>;

    /// Removes every record of the zone. Errors: `ZoneNotFound`.
    fn keyval_clear(&mut self, ns: Namespace, zone: &[u8]) -> Result<(), BackendError>;
}

/// Answers one API request.
pub fn handle(req: &Request<'_>, backend: &mut dyn Backend) -> Response {
    let (version, route) = match routes::resolve(req.path) {
        Ok(resolved) => resolved,
        Err((version, e)) => return e.into_response(version, req.request_id),
    };
    match dispatch(req, backend, version, route) {
        Ok(resp) => resp,
        Err(e) => e.into_response(version, req.request_id),
    }
}

/// Errors the nginx layer meets before it can call [`handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// The body exceeds the buffer (413 `BodyTooLarge`).
    BodyTooLarge,
    /// Reading the body failed (400 `BodyReadError`).
    BodyReadError,
}

/// The error answer for `rejection`, shaped for the version in `req.path`.
pub fn reject(req: &Request<'_>, rejection: Rejection) -> Response {
    let version = match routes::resolve(req.path) {
        Ok((v, _)) | Err((v, _)) => v,
    };
    let e = match rejection {
        Rejection::BodyTooLarge => ApiError::body_too_large(),
        Rejection::BodyReadError => ApiError::body_read_error(),
    };
    e.into_response(version, req.request_id)
}

const ALLOW_READ: &str = "GET, HEAD";
const ALLOW_KEYVAL: &str = "GET, HEAD, POST, PATCH, DELETE";

fn dispatch(
    req: &Request<'_>,
    backend: &mut dyn Backend,
    version: Option<u32>,
    route: Route<'_>,
) -> Result<Response, ApiError> {
    let v = version.unwrap_or(versions::CURRENT);
    let read = matches!(req.method, Method::Get | Method::Head);

    // Writes exist on one route only.
    if let Route::KeyvalZone(ns, zone) = route {
        if !read {
            return write(req, backend, v, ns, zone);
        }
    } else if route == Route::ZoneSync && backend.zone_sync().is_none() {
        return Err(ApiError::path_not_found());
    } else if !read {
        return Err(ApiError::method_not_supported(ALLOW_READ));
    }

    let fields = Fields::from_args(req.args);
    let body = match route {
        Route::Versions => {
            let mut b = Vec::new();
            b.push(b'[');
            for (i, n) in versions::ALL.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                json::write_u64(&mut b, u64::from(*n));
            }
            b.push(b']');
            b
        }
        Route::Endpoints => list(&endpoints(v, None, false)),
        Route::NsEndpoints(ns) => {
            let sync = ns == Namespace::Stream && backend.zone_sync().is_some();
            list(&endpoints(v, Some(ns), sync))
        }
        Route::Nginx => status::nginx(&backend.nginx_info(), &fields),
        Route::ZoneSync => match backend.zone_sync() {
            Some(st) => status::zone_sync(&st, &fields),
            None => return Err(ApiError::path_not_found()),
        },
        Route::Processes => metrics::processes(backend.respawned(), &fields),
        Route::Connections => metrics::connections(backend.stub_status().as_ref(), &fields),
        Route::HttpRequests => metrics::http_requests(backend.stub_status().as_ref(), &fields),
        Route::Slabs => metrics::slabs(&backend.slabs(), &fields),
        Route::Slab(zone) => metrics::slab(&backend.slabs(), zone, &fields)?,
        Route::LimitReqs => metrics::limit_reqs(&backend.limit_reqs(), &fields),
        Route::LimitReq(zone) => metrics::limit_req(&backend.limit_reqs(), zone, &fields)?,
        // nginx keeps no SSL counters, nor per-worker ones.
        Route::Ssl | Route::Untracked(_) => b"{}".to_vec(),
        Route::Workers => b"[]".to_vec(),
        Route::Worker(id) => return Err(metrics::worker_not_found(id)),
        Route::UntrackedItem(what, name) => return Err(what.not_found(name)),
        Route::KeyvalZones(ns) => keyvals::get_all(backend, ns, &fields),
        Route::KeyvalZone(ns, zone) => {
            let key = routes::arg(req.args, b"key");
            keyvals::get_zone(backend, ns, zone, key.as_deref(), &fields)?
        }
    };
    Ok(Response::ok(200, body))
}

fn write(
    req: &Request<'_>,
    backend: &mut dyn Backend,
    v: u32,
    ns: Namespace,
    zone: &[u8],
) -> Result<Response, ApiError> {
    if req.method == Method::Other {
        return Err(ApiError::method_not_supported(ALLOW_KEYVAL));
    }
    if !req.write_enabled {
        return Err(ApiError::method_disabled());
    }
    let body = req.body.unwrap_or_default();
    if body.len() > MAX_BODY_LEN && req.method != Method::Delete {
        return Err(ApiError::body_too_large());
    }
    match req.method {
        Method::Post => {
            keyvals::post(backend, ns, zone, body, v)?;
            Ok(Response::ok(201, Vec::new()))
        }
        Method::Patch => {
            keyvals::patch(backend, ns, zone, body, v)?;
            Ok(Response::ok(204, Vec::new()))
        }
        _ => {
            keyvals::delete(backend, ns, zone)?;
            Ok(Response::ok(204, Vec::new()))
        }
    }
}

/// The endpoint list of the root (`ns` `None`) or of `/http/`,
/// `/stream/`, in the order of the Plus specification: what version `v`
/// serves (`zone_sync` when `sync`).
fn endpoints(v: u32, ns: Option<Namespace>, sync: bool) -> Vec<&'static [u8]> {
    use versions::Feature::*;
    let table: &[(&[u8], Option<versions::Feature>)] = match ns {
        None => &[
            (b"nginx", None),
            (b"processes", None),
            (b"connections", None),
            (b"slabs", None),
            (b"http", None),
            (b"stream", None),
            (b"resolvers", Some(Resolvers)),
            (b"ssl", None),
            (b"workers", Some(Workers)),
        ],
        Some(Namespace::Http) => &[
            (b"requests", None),
            (b"server_zones", None),
            (b"location_zones", Some(Resolvers)),
            (b"caches", None),
            (b"limit_conns", Some(Limits)),
            (b"limit_reqs", Some(Limits)),
            (b"keyvals", None),
            (b"upstreams", None),
        ],
        Some(Namespace::Stream) => &[
            (b"server_zones", None),
            (b"limit_conns", Some(Limits)),
            (b"keyvals", Some(StreamKeyvals)),
            (b"zone_sync", Some(ZoneSync)),
            (b"upstreams", None),
        ],
    };
    table
        .iter()
        .filter(|(name, f)| {
            f.is_none_or(|f| versions::has(v, f)) && (*name != b"zone_sync" || sync)
        })
        .map(|(name, _)| *name)
        .collect()
}

fn list(names: &[&[u8]]) -> Vec<u8> {
    let mut b = Vec::new();
    json::write_str_array(&mut b, names.iter().copied());
    b
}

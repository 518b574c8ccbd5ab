//! The monitoring endpoints of the Plus API that NGINX Plus clients read
//! (`nginx-plus-go-client`'s `GetStats`, the Prometheus exporter's Plus
//! mode): `/processes`, `/connections`, `/slabs/`, `/http/requests`,
//! `/http/limit_reqs/`, `/ssl`, `/workers/`, and the collections this
//! module does not track ([`Untracked`]), which are always `{}`.
//!
//! Every figure is one the backend read from nginx or from a zone's shared
//! memory; a figure nginx does not have is left out, never invented: an
//! object with nothing known is `{}`.

use super::errors::{quoted, ApiError};
use super::json::ObjectWriter;
use super::routes::Fields;

/// nginx's own connection and request counters, as `stub_status` shows
/// them (`ngx_stat_*`, present when nginx was built with
/// `--with-http_stub_status_module`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StubStatus {
    pub accepted: u64,
    pub handled: u64,
    /// Open client connections, idle ones included.
    pub active: u64,
    pub reading: u64,
    pub writing: u64,
    /// Idle keep-alive connections.
    pub waiting: u64,
    pub requests: u64,
}

/// One shared memory zone's slab allocator statistics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlabZone {
    pub name: Vec<u8>,
    pub pages_used: u64,
    pub pages_free: u64,
    /// Smallest slot first.
    pub slots: Vec<SlabSlot>,
}

/// One slot size of a slab allocator (`ngx_slab_stat_t`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlabSlot {
    /// Bytes per allocation of this slot.
    pub size: u64,
    pub used: u64,
    pub free: u64,
    pub reqs: u64,
    pub fails: u64,
}

/// The counters of one `sync_limit_req_zone` (this node's requests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitReqZone {
    pub name: Vec<u8>,
    pub passed: u64,
    pub delayed: u64,
    pub rejected: u64,
    pub delayed_dry_run: u64,
    pub rejected_dry_run: u64,
}

/// A Plus collection whose items this module does not have: the endpoint
/// is `{}` and any item is the collection's "not found" error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untracked {
    HttpServerZones,
    HttpLocationZones,
    HttpCaches,
    HttpUpstreams,
    HttpLimitConns,
    StreamServerZones,
    StreamUpstreams,
    StreamLimitConns,
    Resolvers,
}

impl Untracked {
    /// The 404 of `/{collection}/{name}`, code and text as the Plus
    /// specification names them.
    pub(crate) fn not_found(self, name: &[u8]) -> ApiError {
        let (code, what): (&'static str, &[u8]) = match self {
            Untracked::HttpServerZones | Untracked::StreamServerZones => {
                ("ServerZoneNotFound", b"server zone ")
            }
            Untracked::HttpLocationZones => ("LocationZoneNotFound", b"location zone "),
            Untracked::HttpCaches => ("CacheNotFound", b"cache "),
            Untracked::HttpUpstreams | Untracked::StreamUpstreams => {
                ("UpstreamNotFound", b"upstream ")
            }
            Untracked::HttpLimitConns | Untracked::StreamLimitConns => {
                ("LimitConnNotFound", b"limit_conn ")
            }
            Untracked::Resolvers => ("ResolverZoneNotFound", b"resolver zone "),
        };
        ApiError::not_found(code, quoted(what, name, b" not found"))
    }
}

/// `GET /connections`: Plus counts idle keep-alive connections apart from
/// active ones, and a connection nginx accepted but did not handle as
/// dropped.
pub(crate) fn connections(st: Option<&StubStatus>, fields: &Fields) -> Vec<u8> {
    let Some(s) = st else {
        return object(&[], fields);
    };
    object(
        &[
            (b"accepted", s.accepted),
            (b"dropped", s.accepted.saturating_sub(s.handled)),
            (b"active", s.active.saturating_sub(s.waiting)),
            (b"idle", s.waiting),
        ],
        fields,
    )
}

/// `GET /http/requests`: `current` is the requests being read or written.
pub(crate) fn http_requests(st: Option<&StubStatus>, fields: &Fields) -> Vec<u8> {
    let Some(s) = st else {
        return object(&[], fields);
    };
    object(
        &[(b"total", s.requests), (b"current", s.reading + s.writing)],
        fields,
    )
}

/// `GET /processes`.
pub(crate) fn processes(respawned: Option<u64>, fields: &Fields) -> Vec<u8> {
    match respawned {
        Some(n) => object(&[(b"respawned", n)], fields),
        None => object(&[], fields),
    }
}

/// An object of integer members, those `fields` allows.
fn object(members: &[(&[u8], u64)], fields: &Fields) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + 24 * members.len());
    let mut obj = ObjectWriter::new(&mut body);
    for &(name, value) in members {
        if fields.allows(name) {
            obj.u64_member(name, value);
        }
    }
    obj.finish();
    body
}

/// `GET /slabs/`: every zone, its members filtered by `fields` (`?fields=`
/// lists the zone names only).
pub(crate) fn slabs(zones: &[SlabZone], fields: &Fields) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + 600 * zones.len());
    let mut obj = ObjectWriter::new(&mut body);
    for z in zones {
        slab_zone(obj.member(&z.name), z, fields);
    }
    obj.finish();
    body
}

/// `GET /slabs/{zone}`.
pub(crate) fn slab(zones: &[SlabZone], name: &[u8], fields: &Fields) -> Result<Vec<u8>, ApiError> {
    let z = zones.iter().find(|z| z.name == name).ok_or_else(|| {
        ApiError::not_found("SlabNotFound", quoted(b"slab ", name, b" not found"))
    })?;
    let mut body = Vec::with_capacity(600);
    slab_zone(&mut body, z, fields);
    Ok(body)
}

fn slab_zone(out: &mut Vec<u8>, z: &SlabZone, fields: &Fields) {
    let mut zo = ObjectWriter::new(out);
    if fields.allows(b"pages") {
        let mut p = ObjectWriter::new(zo.member(b"pages"));
        p.u64_member(b"used", z.pages_used);
        p.u64_member(b"free", z.pages_free);
        p.finish();
    }
    if fields.allows(b"slots") {
        let mut slots = ObjectWriter::new(zo.member(b"slots"));
        for s in &z.slots {
            let mut so = ObjectWriter::new(slots.member(s.size.to_string().as_bytes()));
            so.u64_member(b"used", s.used);
            so.u64_member(b"free", s.free);
            so.u64_member(b"reqs", s.reqs);
            so.u64_member(b"fails", s.fails);
            so.finish();
        }
        slots.finish();
    }
    zo.finish();
}

/// `GET /http/limit_reqs/`.
pub(crate) fn limit_reqs(zones: &[LimitReqZone], fields: &Fields) -> Vec<u8> {
    let mut body = Vec::with_capacity(16 + 120 * zones.len());
    let mut obj = ObjectWriter::new(&mut body);
    for z in zones {
        limit_req_zone(obj.member(&z.name), z, fields);
    }
    obj.finish();
    body
}

/// `GET /http/limit_reqs/{zone}`.
pub(crate) fn limit_req(
    zones: &[LimitReqZone],
    name: &[u8],
    fields: &Fields,
) -> Result<Vec<u8>, ApiError> {
    let z = zones.iter().find(|z| z.name == name).ok_or_else(|| {
        ApiError::not_found(
            "LimitReqNotFound",
            quoted(b"limit_req ", name, b" not found"),
        )
    })?;
    let mut body = Vec::with_capacity(120);
    limit_req_zone(&mut body, z, fields);
    Ok(body)
}

fn limit_req_zone(out: &mut Vec<u8>, z: &LimitReqZone, fields: &Fields) {
    let members: [(&[u8], u64); 5] = [
        (b"passed", z.passed),
        (b"delayed", z.delayed),
        (b"rejected", z.rejected),
        (b"delayed_dry_run", z.delayed_dry_run),
        (b"rejected_dry_run", z.rejected_dry_run),
    ];
    out.extend_from_slice(&object(&members, fields));
}

/// `/workers/{id}`: there are no per-worker counters, so no worker.
pub(crate) fn worker_not_found(id: &[u8]) -> ApiError {
    ApiError::not_found("WorkerNotFound", quoted(b"worker ", id, b" not found"))
}

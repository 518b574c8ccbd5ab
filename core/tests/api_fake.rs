//! An in-memory `Backend` for the API tests, and request helpers.
//! Included by the `api_*` tests with `#[path = "api_fake.rs"] mod fake;`.
#![allow(dead_code)]

use zone_sync_core::api::json::{self, Value};
use zone_sync_core::api::{
    handle, Backend, BackendError, KeyvalChange, KeyvalEntry, LimitReqZone, Method, Namespace,
    NginxInfo, Request, Response, SlabSlot, SlabZone, StubStatus, ZoneSyncStatus, ZoneSyncZone,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub expire_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Zone {
    pub ns: Namespace,
    pub name: Vec<u8>,
    /// In insertion order, so output order is deterministic.
    pub records: Vec<Record>,
    /// `timeout=` configured: `expire` allowed.
    pub timeout: bool,
    /// `type=ip`: keys must look like addresses or CIDR networks.
    pub ip_type: bool,
    /// Most records the zone holds (NoMemory beyond).
    pub capacity: usize,
    /// Longest key + value (RecordTooLarge beyond).
    pub max_record: usize,
}

impl Zone {
    pub fn new(ns: Namespace, name: &[u8]) -> Self {
        Zone {
            ns,
            name: name.to_vec(),
            records: Vec::new(),
            timeout: true,
            ip_type: false,
            capacity: usize::MAX,
            max_record: usize::MAX,
        }
    }

    fn find(&self, key: &[u8]) -> Option<usize> {
        self.records.iter().position(|r| r.key == key)
    }

    fn check(&self, key: &[u8], value: &[u8], expire_ms: Option<u64>) -> Result<(), BackendError> {
        if self.ip_type && !key.iter().all(|b| b"0123456789abcdef.:/".contains(b)) {
            return Err(BackendError::InvalidKey);
        }
        if expire_ms.is_some() && !self.timeout {
            return Err(BackendError::TimeoutNotEnabled);
        }
        if key.len() + value.len() > self.max_record {
            return Err(BackendError::RecordTooLarge);
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Post(Namespace, Vec<u8>, Vec<(Vec<u8>, Vec<u8>, Option<u64>)>),
    Patch(Namespace, Vec<u8>, Vec<u8>, String),
    Clear(Namespace, Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Fake {
    pub info: NginxInfo,
    pub sync: Option<ZoneSyncStatus>,
    pub zones: Vec<Zone>,
    /// Every write method call, successful or not.
    pub calls: Vec<Call>,
    pub stub: Option<StubStatus>,
    pub respawned: Option<u64>,
    pub slabs: Vec<SlabZone>,
    pub limit_reqs: Vec<LimitReqZone>,
}

impl Default for Fake {
    fn default() -> Self {
        Self::new()
    }
}

impl Fake {
    /// http zones "one" (with a=1, b=2) and "empty"; stream zone "s1"
    /// (x=y); zone_sync configured.
    pub fn new() -> Self {
        let mut one = Zone::new(Namespace::Http, b"one");
        for (k, v) in [(b"a", b"1"), (b"b", b"2")] {
            one.records.push(Record {
                key: k.to_vec(),
                value: v.to_vec(),
                expire_ms: None,
            });
        }
        let mut s1 = Zone::new(Namespace::Stream, b"s1");
        s1.records.push(Record {
            key: b"x".to_vec(),
            value: b"y".to_vec(),
            expire_ms: None,
        });
        Fake {
            info: NginxInfo {
                version: "1.27.4".into(),
                build: "zone-sync".into(),
                address: "127.0.0.1".into(),
                generation: 3,
                load_timestamp_ms: 1_656_415_007_305,
                timestamp_ms: 1_656_415_100_000,
                pid: 4242,
                ppid: 4241,
            },
            sync: Some(ZoneSyncStatus {
                bytes_in: 10,
                msgs_in: 2,
                msgs_out: 3,
                bytes_out: 40,
                nodes_online: 2,
                zones: vec![
                    ZoneSyncZone {
                        name: b"one".to_vec(),
                        records_pending: 1,
                        records_total: 2,
                    },
                    ZoneSyncZone {
                        name: b"s1".to_vec(),
                        records_pending: 0,
                        records_total: 1,
                    },
                ],
            }),
            zones: vec![one, Zone::new(Namespace::Http, b"empty"), s1],
            calls: Vec::new(),
            stub: Some(StubStatus {
                accepted: 100,
                handled: 97,
                active: 12,
                reading: 1,
                writing: 2,
                waiting: 9,
                requests: 345,
            }),
            respawned: Some(1),
            slabs: vec![SlabZone {
                name: b"one".to_vec(),
                pages_used: 3,
                pages_free: 250,
                slots: (3..12)
                    .map(|shift| SlabSlot {
                        size: 1 << shift,
                        used: shift,
                        free: 2 * shift,
                        reqs: 10 * shift,
                        fails: u64::from(shift == 11),
                    })
                    .collect(),
            }],
            limit_reqs: vec![LimitReqZone {
                name: b"perip".to_vec(),
                passed: 15,
                delayed: 4,
                rejected: 3,
                delayed_dry_run: 1,
                rejected_dry_run: 2,
            }],
        }
    }

    pub fn zone(&self, ns: Namespace, name: &[u8]) -> Option<&Zone> {
        self.zones.iter().find(|z| z.ns == ns && z.name == name)
    }

    pub fn zone_mut(&mut self, ns: Namespace, name: &[u8]) -> Option<&mut Zone> {
        self.zones.iter_mut().find(|z| z.ns == ns && z.name == name)
    }

    pub fn value(&self, ns: Namespace, zone: &[u8], key: &[u8]) -> Option<Vec<u8>> {
        let z = self.zone(ns, zone)?;
        z.records
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.value.clone())
    }

    pub fn record(&self, ns: Namespace, zone: &[u8], key: &[u8]) -> Option<Record> {
        let z = self.zone(ns, zone)?;
        z.records.iter().find(|r| r.key == key).cloned()
    }
}

impl Backend for Fake {
    fn nginx_info(&self) -> NginxInfo {
        self.info.clone()
    }

    fn zone_sync(&self) -> Option<ZoneSyncStatus> {
        self.sync.clone()
    }

    fn stub_status(&self) -> Option<StubStatus> {
        self.stub
    }

    fn respawned(&self) -> Option<u64> {
        self.respawned
    }

    fn slabs(&self) -> Vec<SlabZone> {
        self.slabs.clone()
    }

    fn limit_reqs(&self) -> Vec<LimitReqZone> {
        self.limit_reqs.clone()
    }

    fn keyval_zones(&self, ns: Namespace) -> Vec<Vec<u8>> {
        self.zones
            .iter()
            .filter(|z| z.ns == ns)
            .map(|z| z.name.clone())
            .collect()
    }

    fn keyval_visit(
        &self,
        ns: Namespace,
        zone: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), BackendError> {
        let z = self.zone(ns, zone).ok_or(BackendError::ZoneNotFound)?;
        for r in &z.records {
            visit(&r.key, &r.value);
        }
        Ok(())
    }

    fn keyval_get(
        &self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let z = self.zone(ns, zone).ok_or(BackendError::ZoneNotFound)?;
        Ok(z.find(key).map(|i| z.records[i].value.clone()))
    }

    fn keyval_post(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        entries: &[KeyvalEntry<'_>],
    ) -> Result<(), BackendError> {
        self.calls.push(Call::Post(
            ns,
            zone.to_vec(),
            entries
                .iter()
                .map(|e| (e.key.to_vec(), e.value.to_vec(), e.expire_ms))
                .collect(),
        ));
        assert!(!entries.is_empty(), "handle() must not post nothing");
        let z = self.zone_mut(ns, zone).ok_or(BackendError::ZoneNotFound)?;
        if entries.len() > 1 && !z.records.is_empty() {
            return Err(BackendError::NotEmpty);
        }
        for e in entries {
            assert!(!e.key.is_empty(), "handle() must not post an empty key");
            if z.find(e.key).is_some() {
                return Err(BackendError::KeyExists);
            }
            z.check(e.key, e.value, e.expire_ms)?;
        }
        if z.records.len() + entries.len() > z.capacity {
            return Err(BackendError::NoMemory);
        }
        for e in entries {
            z.records.push(Record {
                key: e.key.to_vec(),
                value: e.value.to_vec(),
                expire_ms: e.expire_ms,
            });
        }
        Ok(())
    }

    fn keyval_patch(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
        change: KeyvalChange<'_>,
    ) -> Result<(), BackendError> {
        self.calls.push(Call::Patch(
            ns,
            zone.to_vec(),
            key.to_vec(),
            format!("{change:?}"),
        ));
        let z = self.zone_mut(ns, zone).ok_or(BackendError::ZoneNotFound)?;
        let i = z.find(key).ok_or(BackendError::KeyNotFound)?;
        match change {
            KeyvalChange::Delete => {
                z.records.remove(i);
            }
            KeyvalChange::Update { value, expire_ms } => {
                assert!(value.is_some() || expire_ms.is_some(), "empty update");
                let new_value = value.unwrap_or(&z.records[i].value).to_vec();
                z.check(key, &new_value, expire_ms)?;
                let r = &mut z.records[i];
                r.value = new_value;
                if expire_ms.is_some() {
                    r.expire_ms = expire_ms;
                }
            }
        }
        Ok(())
    }

    fn keyval_clear(&mut self, ns: Namespace, zone: &[u8]) -> Result<(), BackendError> {
        self.calls.push(Call::Clear(ns, zone.to_vec()));
        let z = self.zone_mut(ns, zone).ok_or(BackendError::ZoneNotFound)?;
        z.records.clear();
        Ok(())
    }
}

pub const REQUEST_ID: &str = "0123456789abcdef0123456789abcdef";

/// Runs one request with write=on.
pub fn call(fake: &mut Fake, method: Method, path: &str, body: Option<&[u8]>) -> Response {
    call_full(fake, method, path.as_bytes(), b"", body, true)
}

/// GET `path` with the query string `args`.
pub fn get(fake: &mut Fake, path: &str, args: &str) -> Response {
    call_full(
        fake,
        Method::Get,
        path.as_bytes(),
        args.as_bytes(),
        None,
        true,
    )
}

pub fn call_full(
    fake: &mut Fake,
    method: Method,
    path: &[u8],
    args: &[u8],
    body: Option<&[u8]>,
    write_enabled: bool,
) -> Response {
    let req = Request {
        method,
        path,
        args,
        body,
        write_enabled,
        request_id: REQUEST_ID,
    };
    handle(&req, fake)
}

/// The body as text (panics if it is not UTF-8: our output always is).
pub fn text(r: &Response) -> &str {
    std::str::from_utf8(&r.body).expect("response body is UTF-8")
}

/// The body parsed with our own parser (panics if it is not JSON).
pub fn parsed(r: &Response) -> Value {
    json::parse(&r.body).expect("response body is JSON")
}

/// Looks a member up in an object.
pub fn member<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    match v {
        Value::Object(m) => m.iter().find(|(k, _)| k == name.as_bytes()).map(|(_, v)| v),
        _ => None,
    }
}

/// `error.code` of an error answer, checking the whole error object on the
/// way: members in order, status echoed, request_id and href.
pub fn error_code(r: &Response) -> String {
    let v = parsed(r);
    let Value::Object(top) = &v else {
        panic!("error is not an object: {}", text(r))
    };
    let names: Vec<&[u8]> = top.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        names,
        [&b"error"[..], b"request_id", b"href"],
        "members of {}",
        text(r)
    );
    check_error_members(r, &v)
}

/// As [`error_code`] for the version 1-3 shape (`path`, `method` first).
pub fn old_error_code(r: &Response) -> String {
    let v = parsed(r);
    let Value::Object(top) = &v else {
        panic!("error is not an object: {}", text(r))
    };
    let names: Vec<&[u8]> = top.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(
        names,
        [&b"path"[..], b"method", b"error", b"request_id", b"href"],
        "members of {}",
        text(r)
    );
    assert_eq!(member(&v, "path"), Some(&Value::String(Vec::new())));
    assert_eq!(member(&v, "method"), Some(&Value::String(Vec::new())));
    check_error_members(r, &v)
}

fn check_error_members(r: &Response, v: &Value) -> String {
    let err = member(v, "error").expect("error member");
    let Value::Object(e) = err else {
        panic!("error.error is not an object")
    };
    let names: Vec<&[u8]> = e.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(names, [&b"status"[..], b"text", b"code"]);
    assert_eq!(
        member(err, "status"),
        Some(&Value::Number(r.status.to_string()))
    );
    assert_eq!(
        member(v, "request_id"),
        Some(&Value::String(REQUEST_ID.as_bytes().to_vec()))
    );
    assert_eq!(
        member(v, "href"),
        Some(&Value::String(
            b"https://nginx.org/en/docs/http/ngx_http_api_module.html".to_vec()
        ))
    );
    match member(err, "code") {
        Some(Value::String(c)) => String::from_utf8(c.clone()).unwrap(),
        other => panic!("code: {other:?}"),
    }
}

/// The error code whatever the error object's version shape.
pub fn error_code_any(r: &Response) -> String {
    if member(&parsed(r), "path").is_some() {
        old_error_code(r)
    } else {
        error_code(r)
    }
}

/// `error.text` of an error answer.
pub fn error_text(r: &Response) -> Vec<u8> {
    let v = parsed(r);
    match member(member(&v, "error").expect("error"), "text") {
        Some(Value::String(t)) => t.clone(),
        other => panic!("text: {other:?}"),
    }
}

//! `/http/keyvals/` and `/stream/keyvals/`: reading zones, and turning a
//! POST/PATCH body into backend calls only once the whole body is known
//! to be good.

use std::collections::HashSet;

use super::errors::{quoted, ApiError};
use super::json::{self, ObjectWriter, Value};
use super::routes::Fields;
use super::versions::{self, Feature};
use super::{Backend, BackendError, KeyvalChange, KeyvalEntry, Namespace, MAX_EXPIRE_MS};

/// `GET .../keyvals/`: every zone, its members filtered by `fields`
/// (`?fields=` leaves the zone names only, as Plus documents).
pub(crate) fn get_all(backend: &dyn Backend, ns: Namespace, fields: &Fields) -> Vec<u8> {
    let mut body = Vec::new();
    let mut obj = ObjectWriter::new(&mut body);
    for zone in backend.keyval_zones(ns) {
        let mut zo = ObjectWriter::new(obj.member(&zone));
        // A zone that vanished meanwhile is written empty.
        let _ = backend.keyval_visit(ns, &zone, &mut |k, v| {
            if fields.allows(k) {
                zo.str_member(k, v);
            }
        });
        zo.finish();
    }
    obj.finish();
    body
}

/// `GET .../keyvals/{zone}[?key=k]`.
pub(crate) fn get_zone(
    backend: &dyn Backend,
    ns: Namespace,
    zone: &[u8],
    key: Option<&[u8]>,
    fields: &Fields,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    let mut obj = ObjectWriter::new(&mut body);
    match key {
        Some(key) => match backend.keyval_get(ns, zone, key) {
            Ok(Some(value)) => {
                if fields.allows(key) {
                    obj.str_member(key, &value);
                }
            }
            Ok(None) => return Err(ApiError::key_not_found(Some(key))),
            Err(e) => return Err(backend_error(e, zone, Some(key))),
        },
        None => backend
            .keyval_visit(ns, zone, &mut |k, v| {
                if fields.allows(k) {
                    obj.str_member(k, v);
                }
            })
            .map_err(|e| backend_error(e, zone, None))?,
    }
    obj.finish();
    Ok(body)
}

/// `POST .../keyvals/{zone}`: one key, or several into an empty zone (the
/// backend checks emptiness and inserts under one lock, all or nothing).
pub(crate) fn post(
    backend: &mut dyn Backend,
    ns: Namespace,
    zone: &[u8],
    body: &[u8],
    version: u32,
) -> Result<(), ApiError> {
    let doc = json::parse(body).map_err(|e| ApiError::json(&e))?;
    let members = members(&doc)?;
    let expire_ok = versions::has(version, Feature::KeyvalExpire);
    let mut entries = Vec::with_capacity(members.len());
    for (key, v) in members {
        match spec(key, v, expire_ok)? {
            Spec::Delete => return Err(key_error(key, b": null value")),
            Spec::Set { value: None, .. } => return Err(key_error(key, b": value required")),
            Spec::Set {
                value: Some(value),
                expire_ms,
            } => entries.push(KeyvalEntry {
                key,
                value,
                expire_ms,
            }),
        }
    }
    let single = match entries.as_slice() {
        [one] => Some(one.key),
        _ => None,
    };
    backend
        .keyval_post(ns, zone, &entries)
        .map_err(|e| backend_error(e, zone, single))
}

/// `PATCH .../keyvals/{zone}`: exactly one key ("only one key can be
/// updated", as Plus documents); `null` deletes it.
pub(crate) fn patch(
    backend: &mut dyn Backend,
    ns: Namespace,
    zone: &[u8],
    body: &[u8],
    version: u32,
) -> Result<(), ApiError> {
    let doc = json::parse(body).map_err(|e| ApiError::json(&e))?;
    let members = members(&doc)?;
    let [(key, v)] = members else {
        return Err(ApiError::format("only one key can be updated"));
    };
    let change = match spec(key, v, versions::has(version, Feature::KeyvalExpire))? {
        Spec::Delete => KeyvalChange::Delete,
        Spec::Set { value, expire_ms } => KeyvalChange::Update { value, expire_ms },
    };
    backend
        .keyval_patch(ns, zone, key, change)
        .map_err(|e| backend_error(e, zone, Some(key)))
}

/// `DELETE .../keyvals/{zone}`: empties the zone.
pub(crate) fn delete(
    backend: &mut dyn Backend,
    ns: Namespace,
    zone: &[u8],
) -> Result<(), ApiError> {
    backend
        .keyval_clear(ns, zone)
        .map_err(|e| backend_error(e, zone, None))
}

/// The members of a body: a non-empty object, no empty and no duplicate
/// keys.
fn members(doc: &Value) -> Result<&[(Vec<u8>, Value)], ApiError> {
    let Value::Object(members) = doc else {
        return Err(ApiError::format("a JSON object is expected"));
    };
    if members.is_empty() {
        return Err(ApiError::format("key required"));
    }
    let mut seen = HashSet::with_capacity(members.len());
    for (key, _) in members {
        if key.is_empty() {
            return Err(ApiError::format("empty key"));
        }
        if !seen.insert(key.as_slice()) {
            return Err(ApiError::format(quoted(b"duplicate key ", key, b"")));
        }
    }
    Ok(members)
}

/// What one member asks for.
enum Spec<'v> {
    /// `null`.
    Delete,
    /// A scalar, or `{"value":..,"expire":ms}` with at least one of them.
    Set {
        value: Option<&'v [u8]>,
        expire_ms: Option<u64>,
    },
}

fn spec<'v>(key: &[u8], v: &'v Value, expire_ok: bool) -> Result<Spec<'v>, ApiError> {
    if let Some(value) = scalar(v) {
        return Ok(Spec::Set {
            value: Some(value),
            expire_ms: None,
        });
    }
    let params = match v {
        Value::Null => return Ok(Spec::Delete),
        Value::Object(params) if expire_ok => params,
        _ => return Err(key_error(key, b": nested object or list")),
    };
    let (mut value, mut expire_ms) = (None, None);
    for (name, x) in params {
        match name.as_slice() {
            b"value" if value.is_none() => {
                value = Some(scalar(x).ok_or_else(|| key_error(key, b": invalid \"value\""))?)
            }
            b"expire" if expire_ms.is_none() => {
                expire_ms = Some(expire(x).ok_or_else(|| key_error(key, b": invalid \"expire\""))?)
            }
            b"value" | b"expire" => return Err(param_error(key, b": duplicate parameter ", name)),
            _ => return Err(param_error(key, b": unknown parameter ", name)),
        }
    }
    if value.is_none() && expire_ms.is_none() {
        return Err(key_error(key, b": value or expire required"));
    }
    Ok(Spec::Set { value, expire_ms })
}

/// A value: a string, or a number or boolean stored as its literal text
/// (Plus stores `{"a":1}` as `"1"`).
fn scalar(v: &Value) -> Option<&[u8]> {
    match v {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.as_bytes()),
        Value::Bool(true) => Some(b"true"),
        Value::Bool(false) => Some(b"false"),
        _ => None,
    }
}

/// `expire`: a plain non-negative integer (no sign, fraction or exponent)
/// not above [`MAX_EXPIRE_MS`].
fn expire(v: &Value) -> Option<u64> {
    let Value::Number(n) = v else { return None };
    let digits = n.as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut ms = 0u64;
    for &d in digits {
        ms = ms.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    (ms <= MAX_EXPIRE_MS).then_some(ms)
}

fn key_error(key: &[u8], what: &[u8]) -> ApiError {
    ApiError::format(quoted(b"key ", key, what))
}

fn param_error(key: &[u8], what: &[u8], param: &[u8]) -> ApiError {
    let mut text = quoted(b"key ", key, what);
    text.extend(quoted(b"", param, b""));
    ApiError::format(text)
}

/// The answer for a backend refusal; `key` is the key concerned when the
/// request names exactly one.
fn backend_error(e: BackendError, zone: &[u8], key: Option<&[u8]>) -> ApiError {
    match e {
        BackendError::ZoneNotFound => ApiError::keyval_not_found(zone),
        BackendError::KeyNotFound => ApiError::key_not_found(key),
        BackendError::KeyExists => ApiError::key_exists(key),
        BackendError::NotEmpty => ApiError::format("only one key can be added"),
        BackendError::InvalidKey => match key {
            Some(key) => key_error(key, b": invalid key format"),
            None => ApiError::format("invalid key format"),
        },
        BackendError::TimeoutNotEnabled => ApiError::format("keyval timeout is not enabled"),
        BackendError::RecordTooLarge => match key {
            Some(key) => key_error(key, b": key or value too long"),
            None => ApiError::format("key or value too long"),
        },
        BackendError::NoMemory => ApiError::out_of_memory(zone),
    }
}

//! The `state=file` of a keyval zone: JSON in the shape of the API's GET
//! of the zone, one record a line.
//!
//! ```json
//! {
//! "plain":"value",
//! "expiring":{"value":"v","expire":59000,"expire_at":1765100000000},
//! "synced":{"value":"v","hlc":"115672719032565760","origin":"1234"}
//! }
//! ```
//!
//! A record that never expires and carries no version is written as its
//! value, as in `GET /api/9/http/keyvals/zone`; otherwise as the object of
//! an API `POST` (`value`, `expire` in ms left when the file was written)
//! with our own fields: `expire_at` (Unix time in ms, so a restart keeps
//! the remaining lifetime) and, in synced zones, `hlc` and `origin` (the
//! record's version, as decimal strings: they exceed what a JSON double
//! holds exactly). A file without them (NGINX Plus's, or written by hand)
//! loads as the oldest data: version 0, `expire` counted from the load.

use std::fmt;

use crate::api::json::{self, ObjectWriter, Value};

/// One record to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saved<'a> {
    /// The key as text (an ip zone's key in address form).
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Milliseconds left; 0 = never expires.
    pub remaining_ms: u64,
    pub hlc: u64,
    pub origin: u64,
}

/// Builds a state file.
pub struct Writer {
    out: Vec<u8>,
    wall_ms: u64,
    versions: bool,
    empty: bool,
}

impl Writer {
    /// `wall_ms`: now, Unix time in ms; `versions`: write `hlc` and
    /// `origin` (synced zones).
    pub fn new(wall_ms: u64, versions: bool) -> Self {
        Writer {
            out: b"{".to_vec(),
            wall_ms,
            versions,
            empty: true,
        }
    }

    pub fn record(&mut self, r: &Saved<'_>) {
        self.out
            .extend_from_slice(if self.empty { b"\n" } else { b",\n" });
        self.empty = false;
        json::write_str(&mut self.out, r.key);
        self.out.push(b':');
        if r.remaining_ms == 0 && !self.versions {
            json::write_str(&mut self.out, r.value);
            return;
        }
        let mut o = ObjectWriter::new(&mut self.out);
        o.str_member(b"value", r.value);
        if r.remaining_ms != 0 {
            o.u64_member(b"expire", r.remaining_ms);
            o.u64_member(b"expire_at", self.wall_ms.saturating_add(r.remaining_ms));
        }
        if self.versions {
            o.str_member(b"hlc", r.hlc.to_string().as_bytes());
            o.str_member(b"origin", r.origin.to_string().as_bytes());
        }
        o.finish();
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"\n}\n");
        self.out
    }
}

/// One record read from a state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The key as written (text).
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Milliseconds left from the load; 0 = never expires.
    pub ttl_ms: u64,
    /// 0 when the file has no version (the oldest data).
    pub hlc: u64,
    pub origin: u64,
}

/// Why a state file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Not JSON (truncated, corrupt): the parser's message and offset.
    Syntax(json::ParseError),
    /// JSON of the wrong shape.
    Shape {
        /// 1-based record number, 0 for the document itself.
        record: usize,
        key: Vec<u8>,
        what: &'static str,
    },
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateError::Syntax(e) => write!(f, "{e}"),
            StateError::Shape {
                record: 0, what, ..
            } => f.write_str(what),
            StateError::Shape { record, key, what } => {
                let key = String::from_utf8_lossy(&key[..key.len().min(64)]);
                write!(f, "{what} in record {record} (key \"{key}\")")
            }
        }
    }
}

impl std::error::Error for StateError {}

/// Reads a state file at wall time `wall_ms`; records whose `expire_at`
/// has passed are left out.
pub fn parse(data: &[u8], wall_ms: u64) -> Result<Vec<Loaded>, StateError> {
    let doc = json::parse(data).map_err(StateError::Syntax)?;
    let Value::Object(members) = doc else {
        return Err(StateError::Shape {
            record: 0,
            key: Vec::new(),
            what: "a JSON object is expected",
        });
    };
    let mut out = Vec::with_capacity(members.len());
    for (i, (key, v)) in members.into_iter().enumerate() {
        let shape = |what| StateError::Shape {
            record: i + 1,
            key: key.clone(),
            what,
        };
        if let Some(value) = scalar(&v) {
            out.push(Loaded {
                key: key.clone(),
                value,
                ttl_ms: 0,
                hlc: 0,
                origin: 0,
            });
            continue;
        }
        let Value::Object(params) = v else {
            return Err(shape("a string or an object is expected"));
        };
        let (mut value, mut expire, mut expire_at, mut hlc, mut origin) = (None, None, None, 0, 0);
        for (name, x) in &params {
            match name.as_slice() {
                b"value" => value = Some(scalar(x).ok_or_else(|| shape("invalid \"value\""))?),
                b"expire" => expire = Some(number(x).ok_or_else(|| shape("invalid \"expire\""))?),
                b"expire_at" => {
                    expire_at = Some(number(x).ok_or_else(|| shape("invalid \"expire_at\""))?)
                }
                b"hlc" => hlc = number(x).ok_or_else(|| shape("invalid \"hlc\""))?,
                b"origin" => origin = number(x).ok_or_else(|| shape("invalid \"origin\""))?,
                // Fields of later versions are skipped.
                _ => {}
            }
        }
        let value = value.ok_or_else(|| shape("no \"value\""))?;
        let ttl_ms = match (expire_at, expire) {
            (Some(at), _) if at <= wall_ms => continue,
            (Some(at), _) => at - wall_ms,
            (None, Some(e)) => e,
            (None, None) => 0,
        };
        out.push(Loaded {
            key,
            value,
            ttl_ms,
            hlc,
            origin,
        });
    }
    Ok(out)
}

/// A value as the API takes it: a string, or a number or boolean as its
/// literal text.
fn scalar(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.as_bytes().to_vec()),
        Value::Bool(b) => Some(if *b {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        }),
        _ => None,
    }
}

/// A non-negative integer, as a JSON number or a string of digits.
fn number(v: &Value) -> Option<u64> {
    let digits = match v {
        Value::Number(n) => n.as_bytes(),
        Value::String(s) => s.as_slice(),
        _ => return None,
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_765_000_000_000;

    #[test]
    fn writes_the_get_shape_and_our_fields() {
        let mut w = Writer::new(NOW, false);
        w.record(&Saved {
            key: b"a",
            value: b"1",
            remaining_ms: 0,
            hlc: 5,
            origin: 6,
        });
        w.record(&Saved {
            key: b"10.0.0.0/8",
            value: b"x\"y",
            remaining_ms: 1500,
            hlc: 5,
            origin: 6,
        });
        assert_eq!(
            String::from_utf8(w.finish()).unwrap(),
            "{\n\"a\":\"1\",\n\"10.0.0.0/8\":{\"value\":\"x\\\"y\",\"expire\":1500,\
             \"expire_at\":1765000001500}\n}\n"
        );
        let mut w = Writer::new(NOW, true);
        w.record(&Saved {
            key: b"a",
            value: b"1",
            remaining_ms: 0,
            hlc: u64::MAX,
            origin: 7,
        });
        assert_eq!(
            String::from_utf8(w.finish()).unwrap(),
            "{\n\"a\":{\"value\":\"1\",\"hlc\":\"18446744073709551615\",\"origin\":\"7\"}\n}\n"
        );
        assert_eq!(Writer::new(NOW, true).finish(), b"{\n}\n");
    }

    #[test]
    fn reads_a_plus_style_file() {
        let got = parse(br#"{"a":"1","b":2,"c":{"value":"3","expire":500}}"#, NOW).unwrap();
        assert_eq!(
            got,
            vec![
                Loaded {
                    key: b"a".to_vec(),
                    value: b"1".to_vec(),
                    ttl_ms: 0,
                    hlc: 0,
                    origin: 0
                },
                Loaded {
                    key: b"b".to_vec(),
                    value: b"2".to_vec(),
                    ttl_ms: 0,
                    hlc: 0,
                    origin: 0
                },
                Loaded {
                    key: b"c".to_vec(),
                    value: b"3".to_vec(),
                    ttl_ms: 500,
                    hlc: 0,
                    origin: 0
                },
            ]
        );
        assert_eq!(parse(b"{}", NOW).unwrap(), vec![]);
    }

    #[test]
    fn expire_at_counts_from_the_write() {
        let f = format!(
            r#"{{"gone":{{"value":"x","expire":10,"expire_at":{}}},"left":{{"value":"y","expire":99999,"expire_at":{}}}}}"#,
            NOW - 1,
            NOW + 250
        );
        let got = parse(f.as_bytes(), NOW).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, b"left");
        assert_eq!(got[0].ttl_ms, 250);
    }

    #[test]
    fn bad_files_say_where() {
        let e = parse(br#"{"a":"1","b":"#, NOW).unwrap_err();
        assert_eq!(e.to_string(), "unexpected end of data at offset 13");
        let e = parse(b"", NOW).unwrap_err();
        assert!(matches!(e, StateError::Syntax(_)));
        let e = parse(b"[1]", NOW).unwrap_err();
        assert_eq!(e.to_string(), "a JSON object is expected");
        let e = parse(br#"{"a":"1","b":[1]}"#, NOW).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a string or an object is expected in record 2 (key \"b\")"
        );
        let e = parse(br#"{"a":{"expire":5}}"#, NOW).unwrap_err();
        assert_eq!(e.to_string(), "no \"value\" in record 1 (key \"a\")");
        let e = parse(br#"{"a":{"value":"1","hlc":"-5"}}"#, NOW).unwrap_err();
        assert_eq!(e.to_string(), "invalid \"hlc\" in record 1 (key \"a\")");
        assert!(parse(br#"{"a":null}"#, NOW).is_err());
    }

    fn text() -> impl Strategy<Value = Vec<u8>> {
        // Well-formed UTF-8 round-trips byte for byte.
        ".{0,12}".prop_map(String::into_bytes)
    }

    proptest! {
        #[test]
        fn round_trips(
            records in proptest::collection::btree_map(
                text(),
                (text(), 0u64..1_000_000, any::<u64>(), any::<u64>()),
                0..20,
            ),
            versions in any::<bool>(),
        ) {
            let mut w = Writer::new(NOW, versions);
            for (k, (v, remaining, hlc, origin)) in &records {
                w.record(&Saved { key: k, value: v, remaining_ms: *remaining, hlc: *hlc, origin: *origin });
            }
            let file = w.finish();
            let got = parse(&file, NOW).unwrap();
            prop_assert_eq!(got.len(), records.len());
            for (l, (k, (v, remaining, hlc, origin))) in got.iter().zip(&records) {
                prop_assert_eq!(&l.key, k);
                prop_assert_eq!(&l.value, v);
                prop_assert_eq!(l.ttl_ms, *remaining);
                if versions {
                    prop_assert_eq!((l.hlc, l.origin), (*hlc, *origin));
                } else {
                    prop_assert_eq!((l.hlc, l.origin), (0, 0));
                }
            }
            // Any cut of the file is refused, never half loaded.
            for cut in [file.len() / 2, file.len().saturating_sub(3)] {
                if cut > 0 && cut < file.len() - 2 {
                    prop_assert!(parse(&file[..cut], NOW).is_err());
                }
            }
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse(&data, NOW);
        }
    }
}

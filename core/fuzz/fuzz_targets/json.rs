//! Any bytes through the API's JSON parser and writer: no panic, bounded
//! nesting, and what the writer produces is valid UTF-8 JSON that parses
//! back to the same value (exactly so when every string was UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::api::json::{self, Value};

fn write(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    json::write_value(&mut out, v);
    out
}

fn all_utf8(v: &Value) -> bool {
    match v {
        Value::String(s) => std::str::from_utf8(s).is_ok(),
        Value::Array(items) => items.iter().all(all_utf8),
        Value::Object(members) => members
            .iter()
            .all(|(n, v)| std::str::from_utf8(n).is_ok() && all_utf8(v)),
        _ => true,
    }
}

fuzz_target!(|data: &[u8]| {
    // Any byte string written as a JSON string reads back (as itself when
    // it was UTF-8).
    let mut s = Vec::new();
    json::write_str(&mut s, data);
    assert!(std::str::from_utf8(&s).is_ok(), "write_str output is UTF-8");
    match json::parse(&s) {
        Ok(Value::String(back)) => {
            if std::str::from_utf8(data).is_ok() {
                assert_eq!(back, data);
            }
        }
        other => panic!("write_str output does not parse as a string: {other:?}"),
    }

    let Ok(v) = json::parse(data) else {
        return;
    };
    let w = write(&v);
    assert!(
        std::str::from_utf8(&w).is_ok(),
        "write_value output is UTF-8"
    );
    let v2 = json::parse(&w).expect("write_value output parses");
    if all_utf8(&v) {
        assert_eq!(v2, v);
    }
    // Past one round (which reads stray bytes as Latin-1) the writer's
    // output is a fixed point.
    let w2 = write(&v2);
    assert_eq!(json::parse(&w2).as_ref(), Ok(&v2));
    assert_eq!(write(&json::parse(&w2).unwrap()), w2);
});

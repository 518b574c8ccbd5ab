//! `/http/keyvals/` and `/stream/keyvals/`: reads, writes, and every way a
//! body can be refused without touching the zone.

#[path = "api_fake.rs"]
mod fake;

use fake::*;
use zone_sync_core::api::json::{self, Value};
use zone_sync_core::api::{BackendError, Method, Namespace, MAX_EXPIRE_MS};

const HTTP: Namespace = Namespace::Http;
const STREAM: Namespace = Namespace::Stream;

/// Sends `body` by `method` and asserts it is refused with `status`/`code`
/// and that no write method was even called.
fn refused(
    f: &mut Fake,
    method: Method,
    path: &str,
    body: &[u8],
    status: u16,
    code: &str,
) -> Vec<u8> {
    let before = f.zones.clone();
    let r = call(f, method, path, Some(body));
    assert_eq!(
        (r.status, error_code_any(&r).as_str()),
        (status, code),
        "{method:?} {path} {:?}: {}",
        String::from_utf8_lossy(&body[..body.len().min(200)]),
        text(&r)
    );
    assert!(f.calls.is_empty(), "a write was attempted: {:?}", f.calls);
    assert_eq!(f.zones, before, "zones changed");
    error_text(&r)
}

fn post_refused(f: &mut Fake, body: &[u8], status: u16, code: &str) -> Vec<u8> {
    refused(f, Method::Post, "/9/http/keyvals/empty", body, status, code)
}

fn patch_refused(f: &mut Fake, body: &[u8], status: u16, code: &str) -> Vec<u8> {
    refused(f, Method::Patch, "/9/http/keyvals/one", body, status, code)
}

// ---- GET ----------------------------------------------------------------

#[test]
fn get_all_zones() {
    let mut f = Fake::new();
    let r = get(&mut f, "/9/http/keyvals/", "");
    assert_eq!(r.status, 200);
    assert_eq!(text(&r), r#"{"one":{"a":"1","b":"2"},"empty":{}}"#);
    assert_eq!(text(&get(&mut f, "/9/http/keyvals", "")), text(&r));
    assert_eq!(
        text(&get(&mut f, "/9/stream/keyvals/", "")),
        r#"{"s1":{"x":"y"}}"#
    );
    assert_eq!(
        text(&get(&mut f, "/2/stream/keyvals/", "")),
        r#"{"s1":{"x":"y"}}"#
    );
}

#[test]
fn get_all_zones_without_zones() {
    let mut f = Fake::new();
    f.zones.clear();
    assert_eq!(text(&get(&mut f, "/9/http/keyvals/", "")), "{}");
    assert_eq!(text(&get(&mut f, "/9/stream/keyvals/", "")), "{}");
}

#[test]
fn get_all_zones_with_fields() {
    let mut f = Fake::new();
    // Empty fields: zone names only, as Plus documents.
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/", "fields=")),
        r#"{"one":{},"empty":{}}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/", "fields=b")),
        r#"{"one":{"b":"2"},"empty":{}}"#
    );
}

#[test]
fn get_one_zone() {
    let mut f = Fake::new();
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "")),
        r#"{"a":"1","b":"2"}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one/", "")),
        r#"{"a":"1","b":"2"}"#
    );
    assert_eq!(text(&get(&mut f, "/9/http/keyvals/empty", "")), "{}");
    assert_eq!(
        text(&get(&mut f, "/9/stream/keyvals/s1", "")),
        r#"{"x":"y"}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "fields=a")),
        r#"{"a":"1"}"#
    );
    assert_eq!(text(&get(&mut f, "/9/http/keyvals/one", "fields=")), "{}");
}

#[test]
fn get_one_key() {
    let mut f = Fake::new();
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "key=b")),
        r#"{"b":"2"}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "x=1&key=a&key=b")),
        r#"{"a":"1"}"#
    );
    let r = get(&mut f, "/9/http/keyvals/one", "key=zz");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "KeyvalKeyNotFound")
    );
    assert_eq!(error_text(&r), br#"key "zz" not found"#);
    let r = get(&mut f, "/9/http/keyvals/one", "key=");
    assert_eq!(error_code(&r), "KeyvalKeyNotFound");
    let r = get(&mut f, "/9/http/keyvals/nope", "key=a");
    assert_eq!((r.status, error_code(&r).as_str()), (404, "KeyvalNotFound"));
    // `?key=` on the collection is ignored.
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/", "key=a")),
        r#"{"one":{"a":"1","b":"2"},"empty":{}}"#
    );
}

#[test]
fn key_argument_is_percent_decoded() {
    let mut f = Fake::new();
    let z = f.zone_mut(HTTP, b"one").unwrap();
    z.records.push(Record {
        key: b"a b&c+\xff".to_vec(),
        value: b"sp".to_vec(),
        expire_ms: None,
    });
    let r = get(&mut f, "/9/http/keyvals/one", "key=a%20b%26c+%ff");
    assert_eq!(text(&r), r#"{"a b&c+\u00ff":"sp"}"#);
    // A bad escape stays literal.
    let z = f.zone_mut(HTTP, b"one").unwrap();
    z.records.push(Record {
        key: b"%zz%4".to_vec(),
        value: b"lit".to_vec(),
        expire_ms: None,
    });
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "key=%zz%4")),
        r#"{"%zz%4":"lit"}"#
    );
}

#[test]
fn unknown_zone() {
    let mut f = Fake::new();
    for (m, body) in [
        (Method::Get, None),
        (Method::Head, None),
        (Method::Post, Some(&br#"{"k":"v"}"#[..])),
        (Method::Patch, Some(br#"{"k":"v"}"#)),
        (Method::Delete, None),
    ] {
        let r = call(&mut f, m, "/9/http/keyvals/nope", body);
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (404, "KeyvalNotFound"),
            "{m:?}"
        );
        assert_eq!(error_text(&r), br#"keyval "nope" not found"#);
    }
    // Namespaces are separate.
    let r = get(&mut f, "/9/stream/keyvals/one", "");
    assert_eq!(error_code(&r), "KeyvalNotFound");
    let r = get(&mut f, "/9/http/keyvals/s1", "");
    assert_eq!(error_code(&r), "KeyvalNotFound");
}

#[test]
fn any_bytes_in_keys_and_values_give_valid_json() {
    let mut f = Fake::new();
    let nasty: Vec<u8> = (0..=255u8).collect();
    let z = f.zone_mut(HTTP, b"empty").unwrap();
    z.records.push(Record {
        key: nasty.clone(),
        value: nasty.clone(),
        expire_ms: None,
    });
    z.records.push(Record {
        key: b"q\"\\".to_vec(),
        value: b"\xff\xfe\n".to_vec(),
        expire_ms: None,
    });
    for path in ["/9/http/keyvals/empty", "/9/http/keyvals/"] {
        let r = get(&mut f, path, "");
        let body = std::str::from_utf8(&r.body).expect("UTF-8");
        assert!(json::parse(body.as_bytes()).is_ok(), "{body}");
    }
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/empty", "fields=q\"\\")),
        r#"{"q\"\\":"\u00ff\u00fe\n"}"#
    );
}

#[test]
fn key_in_error_text_is_cut_and_escaped() {
    let mut f = Fake::new();
    let long = "k".repeat(1000);
    let r = get(&mut f, "/9/http/keyvals/one", &format!("key={long}"));
    let t = error_text(&r);
    assert!(t.len() < 200, "{}", t.len());
    assert!(t.ends_with(b"...\" not found"));
    // Cut at a character boundary.
    let long = "é".repeat(500);
    let r = get(&mut f, "/9/http/keyvals/one", &format!("key={long}"));
    assert!(std::str::from_utf8(&error_text(&r)).is_ok());
    let r = get(&mut f, "/9/http/keyvals/one", "key=%22%0a%ff");
    assert!(
        text(&r).contains(r#""text":"key \"\"\n\u00ff\" not found""#),
        "{}",
        text(&r)
    );
}

// ---- POST ---------------------------------------------------------------

#[test]
fn post_one_key() {
    let mut f = Fake::new();
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/one",
        Some(br#"{"c":"3"}"#),
    );
    assert_eq!(r.status, 201);
    assert_eq!(f.value(HTTP, b"one", b"c"), Some(b"3".to_vec()));
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "")),
        r#"{"a":"1","b":"2","c":"3"}"#
    );
    let r = call(
        &mut f,
        Method::Post,
        "/9/stream/keyvals/s1",
        Some(b" {\n\"z\" : \"\" } "),
    );
    assert_eq!(r.status, 201);
    assert_eq!(f.value(STREAM, b"s1", b"z"), Some(vec![]));
}

#[test]
fn post_with_expire() {
    let mut f = Fake::new();
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/one",
        Some(br#"{"c":{"value":"3","expire":30000}}"#),
    );
    assert_eq!(r.status, 201);
    assert_eq!(
        f.record(HTTP, b"one", b"c"),
        Some(Record {
            key: b"c".to_vec(),
            value: b"3".to_vec(),
            expire_ms: Some(30000)
        })
    );
    // Member order does not matter; 0 and the maximum are accepted.
    let body = format!(r#"{{"d":{{"expire":{MAX_EXPIRE_MS},"value":"4"}}}}"#);
    assert_eq!(
        call(
            &mut f,
            Method::Post,
            "/9/http/keyvals/one",
            Some(body.as_bytes())
        )
        .status,
        201
    );
    assert_eq!(
        f.record(HTTP, b"one", b"d").unwrap().expire_ms,
        Some(MAX_EXPIRE_MS)
    );
    let r = call(
        &mut f,
        Method::Post,
        "/5/http/keyvals/one",
        Some(br#"{"e":{"value":"5","expire":0}}"#),
    );
    assert_eq!(r.status, 201);
    assert_eq!(f.record(HTTP, b"one", b"e").unwrap().expire_ms, Some(0));
}

#[test]
fn post_several_keys_into_an_empty_zone() {
    let mut f = Fake::new();
    let body = br#"{"key1":"value1","key2":"value2","key3":{"value":"value3","expire":30000}}"#;
    assert_eq!(
        call(&mut f, Method::Post, "/9/http/keyvals/empty", Some(body)).status,
        201
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/empty", "")),
        r#"{"key1":"value1","key2":"value2","key3":"value3"}"#
    );
    assert_eq!(
        f.record(HTTP, b"empty", b"key3").unwrap().expire_ms,
        Some(30000)
    );
    assert_eq!(f.calls.len(), 1, "one atomic backend call");
}

#[test]
fn post_several_keys_into_a_non_empty_zone() {
    let mut f = Fake::new();
    let before = f.zones.clone();
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/one",
        Some(br#"{"x":"1","y":"2"}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "KeyvalFormatError")
    );
    assert_eq!(error_text(&r), b"only one key can be added");
    assert_eq!(f.zones, before);
}

#[test]
fn post_existing_key() {
    let mut f = Fake::new();
    let before = f.zones.clone();
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/one",
        Some(br#"{"a":"other"}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (409, "KeyvalKeyExists")
    );
    assert_eq!(error_text(&r), br#"key "a" already exists"#);
    assert_eq!(f.zones, before);
}

#[test]
fn numbers_and_booleans_are_stored_as_their_text() {
    let mut f = Fake::new();
    let body = br#"{"i":1,"f":-2.50e+3,"t":true,"n":false,"o":{"value":7}}"#;
    assert_eq!(
        call(&mut f, Method::Post, "/9/http/keyvals/empty", Some(body)).status,
        201
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/empty", "")),
        r#"{"i":"1","f":"-2.50e+3","t":"true","n":"false","o":"7"}"#
    );
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/empty",
            Some(br#"{"i":2}"#)
        )
        .status,
        204
    );
    assert_eq!(f.value(HTTP, b"empty", b"i"), Some(b"2".to_vec()));
}

#[test]
fn escapes_and_raw_bytes_in_bodies() {
    let mut f = Fake::new();
    let body = b"{\"\\u00e9\\uD83D\\uDE00\\t\":\"\\\"q\\\"\\\\\",\"raw\xff\":\"\xfe\"}";
    assert_eq!(
        call(&mut f, Method::Post, "/9/http/keyvals/empty", Some(body)).status,
        201
    );
    assert_eq!(
        f.value(HTTP, b"empty", "é😀\t".as_bytes()),
        Some(b"\"q\"\\".to_vec())
    );
    assert_eq!(f.value(HTTP, b"empty", b"raw\xff"), Some(b"\xfe".to_vec()));
    // Raw bytes written back raw address the same key.
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/empty",
            Some(b"{\"raw\xff\":null}")
        )
        .status,
        204
    );
    assert_eq!(f.value(HTTP, b"empty", b"raw\xff"), None);
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/empty", "")),
        "{\"é😀\\t\":\"\\\"q\\\"\\\\\"}"
    );
}

// ---- PATCH --------------------------------------------------------------

#[test]
fn patch_value() {
    let mut f = Fake::new();
    let r = call(
        &mut f,
        Method::Patch,
        "/9/http/keyvals/one",
        Some(br#"{"a":"v2"}"#),
    );
    assert_eq!(r.status, 204);
    assert_eq!(f.value(HTTP, b"one", b"a"), Some(b"v2".to_vec()));
    assert_eq!(f.record(HTTP, b"one", b"a").unwrap().expire_ms, None);
}

#[test]
fn patch_deletes_with_null() {
    let mut f = Fake::new();
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/one",
            Some(br#"{"a":null}"#)
        )
        .status,
        204
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/keyvals/one", "")),
        r#"{"b":"2"}"#
    );
    let r = call(
        &mut f,
        Method::Patch,
        "/9/http/keyvals/one",
        Some(br#"{"a":null}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "KeyvalKeyNotFound")
    );
    assert_eq!(error_text(&r), br#"key "a" not found"#);
}

#[test]
fn patch_expire_only_and_value_with_expire() {
    let mut f = Fake::new();
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/one",
            Some(br#"{"a":{"expire":5000}}"#)
        )
        .status,
        204
    );
    assert_eq!(
        f.record(HTTP, b"one", b"a"),
        Some(Record {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            expire_ms: Some(5000)
        })
    );
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/one",
            Some(br#"{"a":{"value":"n","expire":7}}"#)
        )
        .status,
        204
    );
    assert_eq!(
        f.record(HTTP, b"one", b"a"),
        Some(Record {
            key: b"a".to_vec(),
            value: b"n".to_vec(),
            expire_ms: Some(7)
        })
    );
    assert_eq!(
        call(
            &mut f,
            Method::Patch,
            "/9/http/keyvals/one",
            Some(br#"{"a":{"value":"m"}}"#)
        )
        .status,
        204
    );
    assert_eq!(f.record(HTTP, b"one", b"a").unwrap().expire_ms, Some(7));
    assert_eq!(f.value(HTTP, b"one", b"a"), Some(b"m".to_vec()));
}

#[test]
fn patch_absent_key() {
    let mut f = Fake::new();
    let before = f.zones.clone();
    for body in [
        &br#"{"zz":"v"}"#[..],
        br#"{"zz":{"expire":1}}"#,
        br#"{"zz":null}"#,
    ] {
        let r = call(&mut f, Method::Patch, "/9/http/keyvals/one", Some(body));
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (404, "KeyvalKeyNotFound")
        );
    }
    assert_eq!(f.zones, before);
}

#[test]
fn patch_takes_one_key_only() {
    let mut f = Fake::new();
    let t = patch_refused(&mut f, br#"{"a":"x","b":"y"}"#, 400, "KeyvalFormatError");
    assert_eq!(t, b"only one key can be updated");
}

// ---- DELETE -------------------------------------------------------------

#[test]
fn delete_empties_the_zone() {
    let mut f = Fake::new();
    let r = call(&mut f, Method::Delete, "/9/http/keyvals/one", None);
    assert_eq!(r.status, 204);
    assert_eq!(text(&get(&mut f, "/9/http/keyvals/one", "")), "{}");
    // Again: still fine.
    assert_eq!(
        call(&mut f, Method::Delete, "/9/http/keyvals/one/", None).status,
        204
    );
    // The other namespace is untouched.
    assert_eq!(
        text(&get(&mut f, "/9/stream/keyvals/s1", "")),
        r#"{"x":"y"}"#
    );
    assert_eq!(
        call(&mut f, Method::Delete, "/9/stream/keyvals/s1", None).status,
        204
    );
    assert_eq!(text(&get(&mut f, "/9/stream/keyvals/", "")), r#"{"s1":{}}"#);
}

// ---- rejected bodies: nothing is written -------------------------------

#[test]
fn not_json_is_415() {
    let mut f = Fake::new();
    for body in [
        &b""[..],
        b"   ",
        b"{",
        b"{\"a\"",
        b"{\"a\":",
        b"{\"a\":\"b\"",
        b"{\"a\":\"b\",}",
        b"{'a':'b'}",
        b"{\"a\":\"b\"} trailing",
        b"{\"a\":\"\\x\"}",
        b"{\"a\":\"\\uD800\"}",
        b"{\"a\":\"\\uDC00\\uD800\"}",
        b"{\"a\":\"line\nbreak\"}",
        b"{\"a\":01}",
        b"{\"a\":+1}",
        b"\xef\xbb\xbf{\"a\":\"b\"}",
        b"not json",
    ] {
        post_refused(&mut f, body, 415, "JsonError");
        patch_refused(&mut f, body, 415, "JsonError");
    }
    let t = post_refused(&mut f, b"{\"a\":x}", 415, "JsonError");
    assert_eq!(t, b"JSON error: unexpected character \"x\" at offset 5");
    // No body at all reads as an empty one.
    let before = f.zones.clone();
    let r = call(&mut f, Method::Post, "/9/http/keyvals/empty", None);
    assert_eq!((r.status, error_code(&r).as_str()), (415, "JsonError"));
    assert_eq!(error_text(&r), b"JSON error: empty body at offset 0");
    assert!(f.calls.is_empty());
    assert_eq!(f.zones, before);
}

#[test]
fn every_truncation_of_a_good_body_is_refused() {
    let mut f = Fake::new();
    let body = br#"{"k1":"v1","k2":{"value":"v\u00e92","expire":1000},"k3":"\uD83D\uDE00"}"#;
    for cut in 0..body.len() {
        let before = f.zones.clone();
        let r = call(
            &mut f,
            Method::Post,
            "/9/http/keyvals/empty",
            Some(&body[..cut]),
        );
        assert_eq!(r.status, 415, "cut at {cut}");
        assert!(f.calls.is_empty());
        assert_eq!(f.zones, before);
    }
    assert_eq!(
        call(&mut f, Method::Post, "/9/http/keyvals/empty", Some(body)).status,
        201
    );
}

#[test]
fn deep_nesting_is_refused() {
    let mut f = Fake::new();
    let deep = vec![b'['; 100_000];
    let t = post_refused(&mut f, &deep, 415, "JsonError");
    assert!(
        t.starts_with(b"JSON error: nesting too deep"),
        "{}",
        String::from_utf8_lossy(&t)
    );
    let deep = format!("{}\"v\"{}", r#"{"k":"#.repeat(100_000), "}".repeat(100_000));
    post_refused(&mut f, deep.as_bytes(), 415, "JsonError");
    patch_refused(&mut f, deep.as_bytes(), 415, "JsonError");
    // Valid but nested beyond what a keyval body can be: a shape error.
    post_refused(
        &mut f,
        br#"{"k":{"value":{"value":"v"}}}"#,
        400,
        "KeyvalFormatError",
    );
    post_refused(&mut f, br#"{"k":[[["v"]]]}"#, 400, "KeyvalFormatError");
}

#[test]
fn wrong_shapes_are_400() {
    let mut f = Fake::new();
    let cases: &[(&[u8], &str)] = &[
        (br#""just a string""#, "a JSON object is expected"),
        (b"[]", "a JSON object is expected"),
        (br#"[{"a":"b"}]"#, "a JSON object is expected"),
        (b"null", "a JSON object is expected"),
        (b"42", "a JSON object is expected"),
        (b"{}", "key required"),
        (br#"{"":"v"}"#, "empty key"),
        (br#"{"k":["v"]}"#, r#"key "k": nested object or list"#),
        (br#"{"k":{}}"#, r#"key "k": value or expire required"#),
        (br#"{"k":{"value":null}}"#, r#"key "k": invalid "value""#),
        (br#"{"k":{"value":["v"]}}"#, r#"key "k": invalid "value""#),
        (br#"{"k":{"value":{}}}"#, r#"key "k": invalid "value""#),
        (
            br#"{"k":{"value":"v","bogus":1}}"#,
            r#"key "k": unknown parameter "bogus""#,
        ),
        (
            br#"{"k":{"Value":"v"}}"#,
            r#"key "k": unknown parameter "Value""#,
        ),
        (
            br#"{"k":{"value":"v","value":"w"}}"#,
            r#"key "k": duplicate parameter "value""#,
        ),
        (
            br#"{"k":{"expire":1,"expire":1}}"#,
            r#"key "k": duplicate parameter "expire""#,
        ),
    ];
    for (body, expect) in cases {
        let t = post_refused(&mut f, body, 400, "KeyvalFormatError");
        assert_eq!(
            String::from_utf8_lossy(&t),
            *expect,
            "POST {}",
            String::from_utf8_lossy(body)
        );
        // PATCH refuses the same shapes (with its key "a" where one is named).
        let patched = String::from_utf8_lossy(body).replace("\"k\"", "\"a\"");
        let t = patch_refused(&mut f, patched.as_bytes(), 400, "KeyvalFormatError");
        assert_eq!(
            String::from_utf8_lossy(&t),
            expect.replace("\"k\"", "\"a\"")
        );
    }
    // POST only.
    let t = post_refused(&mut f, br#"{"k":null}"#, 400, "KeyvalFormatError");
    assert_eq!(t, br#"key "k": null value"#);
    let t = post_refused(
        &mut f,
        br#"{"k":{"expire":1000}}"#,
        400,
        "KeyvalFormatError",
    );
    assert_eq!(t, br#"key "k": value required"#);
}

#[test]
fn one_bad_member_refuses_the_whole_body() {
    let mut f = Fake::new();
    post_refused(
        &mut f,
        br#"{"a1":"v","a2":"v","bad":[1],"a3":"v"}"#,
        400,
        "KeyvalFormatError",
    );
    post_refused(
        &mut f,
        br#"{"a1":"v","a2":{"value":"v","expire":-1}}"#,
        400,
        "KeyvalFormatError",
    );
    post_refused(
        &mut f,
        br#"{"a1":"v","a2":"v","a1":"w"}"#,
        400,
        "KeyvalFormatError",
    );
    post_refused(&mut f, br#"{"a1":"v","":"v"}"#, 400, "KeyvalFormatError");
    post_refused(&mut f, br#"{"a1":"v","a2":null}"#, 400, "KeyvalFormatError");
}

#[test]
fn duplicate_keys_are_refused() {
    let mut f = Fake::new();
    let t = post_refused(&mut f, br#"{"k":"1","k":"2"}"#, 400, "KeyvalFormatError");
    assert_eq!(t, br#"duplicate key "k""#);
    // Equal after unescaping counts as duplicate.
    post_refused(
        &mut f,
        br#"{"k":"1","\u006b":"2"}"#,
        400,
        "KeyvalFormatError",
    );
    patch_refused(&mut f, br#"{"a":"1","a":null}"#, 400, "KeyvalFormatError");
}

#[test]
fn bad_expire_values_are_400() {
    let mut f = Fake::new();
    let too_big = (MAX_EXPIRE_MS + 1).to_string();
    let u64_max = u64::MAX.to_string();
    let beyond = "9".repeat(400);
    for e in [
        "-1",
        "-0",
        "1.0",
        "1.5",
        "1e3",
        "1E3",
        "0.0",
        "\"1000\"",
        "true",
        "null",
        "[]",
        "{}",
        too_big.as_str(),
        u64_max.as_str(),
        beyond.as_str(),
    ] {
        let body = format!(r#"{{"k":{{"value":"v","expire":{e}}}}}"#);
        let t = post_refused(&mut f, body.as_bytes(), 400, "KeyvalFormatError");
        assert_eq!(t, br#"key "k": invalid "expire""#, "{e}");
        let body = format!(r#"{{"a":{{"expire":{e}}}}}"#);
        patch_refused(&mut f, body.as_bytes(), 400, "KeyvalFormatError");
    }
}

#[test]
fn expire_needs_version_5() {
    let mut f = Fake::new();
    for v in 1..=4 {
        let path = format!("/{v}/http/keyvals/empty");
        let t = refused(
            &mut f,
            Method::Post,
            &path,
            br#"{"k":{"value":"v","expire":1}}"#,
            400,
            "KeyvalFormatError",
        );
        assert_eq!(t, br#"key "k": nested object or list"#);
        let path = format!("/{v}/http/keyvals/one");
        refused(
            &mut f,
            Method::Patch,
            &path,
            br#"{"a":{"expire":1}}"#,
            400,
            "KeyvalFormatError",
        );
        // Plain values work in every version.
        let r = call(&mut f, Method::Patch, &path, Some(br#"{"a":"x"}"#));
        assert_eq!(r.status, 204);
        f.calls.clear();
    }
    let r = call(
        &mut f,
        Method::Patch,
        "/5/http/keyvals/one",
        Some(br#"{"a":{"expire":1}}"#),
    );
    assert_eq!(r.status, 204);
}

#[test]
fn a_one_megabyte_body() {
    let mut f = Fake::new();
    // One 1 MiB value.
    let mut body = br#"{"big":""#.to_vec();
    body.extend(std::iter::repeat_n(b'v', 1 << 20));
    body.extend_from_slice(br#""}"#);
    assert_eq!(
        call(&mut f, Method::Post, "/9/http/keyvals/empty", Some(&body)).status,
        201
    );
    assert_eq!(
        f.value(HTTP, b"empty", b"big").map(|v| v.len()),
        Some(1 << 20)
    );
    // About 1 MB of keys into an empty zone.
    let mut body = String::from("{");
    let mut n = 0;
    while body.len() < 1_000_000 {
        if n > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#""key{n}":{{"value":"value{n}","expire":{n}}}"#));
        n += 1;
    }
    body.push('}');
    f.zones.push(Zone::new(HTTP, b"bulk"));
    assert_eq!(
        call(
            &mut f,
            Method::Post,
            "/9/http/keyvals/bulk",
            Some(body.as_bytes())
        )
        .status,
        201
    );
    assert_eq!(f.zone(HTTP, b"bulk").unwrap().records.len(), n);
    let r = get(&mut f, "/9/http/keyvals/bulk", "");
    let Value::Object(m) = parsed(&r) else {
        panic!()
    };
    assert_eq!(m.len(), n);
    // The same megabyte with one bad member at the very end changes nothing.
    let bad = format!("{},\"last\":[]}}", &body[..body.len() - 1]);
    f.zones.push(Zone::new(HTTP, b"bulk2"));
    f.calls.clear();
    refused(
        &mut f,
        Method::Post,
        "/9/http/keyvals/bulk2",
        bad.as_bytes(),
        400,
        "KeyvalFormatError",
    );
    // And cut short: not JSON.
    refused(
        &mut f,
        Method::Post,
        "/9/http/keyvals/bulk2",
        &bad.as_bytes()[..bad.len() - 1],
        415,
        "JsonError",
    );
}

// ---- backend refusals ---------------------------------------------------

#[test]
fn backend_refusals_map_to_answers() {
    let mut f = Fake::new();
    f.zone_mut(HTTP, b"empty").unwrap().timeout = false;
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/empty",
        Some(br#"{"k":{"value":"v","expire":1}}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "KeyvalFormatError")
    );
    assert_eq!(error_text(&r), b"keyval timeout is not enabled");

    f.zone_mut(HTTP, b"empty").unwrap().ip_type = true;
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/empty",
        Some(br#"{"not an ip":"v"}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "KeyvalFormatError")
    );
    assert_eq!(error_text(&r), br#"key "not an ip": invalid key format"#);
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/empty",
        Some(br#"{"10.0.0.0/8":"v","bad key":"v"}"#),
    );
    assert_eq!(error_text(&r), b"invalid key format");
    assert!(
        f.zone(HTTP, b"empty").unwrap().records.is_empty(),
        "all or nothing"
    );

    f.zone_mut(HTTP, b"empty").unwrap().ip_type = false;
    f.zone_mut(HTTP, b"empty").unwrap().max_record = 8;
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/empty",
        Some(br#"{"k":"0123456789"}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (400, "KeyvalFormatError")
    );
    assert_eq!(error_text(&r), br#"key "k": key or value too long"#);

    f.zone_mut(HTTP, b"empty").unwrap().capacity = 1;
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/empty",
        Some(br#"{"k1":"v","k2":"v"}"#),
    );
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (507, "KeyvalOutOfMemory")
    );
    assert_eq!(error_text(&r), br#"keyval "empty" memory exhausted"#);
    assert!(
        f.zone(HTTP, b"empty").unwrap().records.is_empty(),
        "all or nothing"
    );
    assert_eq!(
        call(
            &mut f,
            Method::Post,
            "/9/http/keyvals/empty",
            Some(br#"{"k1":"v"}"#)
        )
        .status,
        201
    );

    // PATCH refusals.
    f.zone_mut(HTTP, b"one").unwrap().timeout = false;
    let r = call(
        &mut f,
        Method::Patch,
        "/9/http/keyvals/one",
        Some(br#"{"a":{"expire":1}}"#),
    );
    assert_eq!(error_text(&r), b"keyval timeout is not enabled");
    assert_eq!(f.record(HTTP, b"one", b"a").unwrap().expire_ms, None);
}

/// A backend that refuses everything with one error, to check the table.
struct Refuser(BackendError);

impl zone_sync_core::api::Backend for Refuser {
    fn nginx_info(&self) -> zone_sync_core::api::NginxInfo {
        Default::default()
    }
    fn zone_sync(&self) -> Option<zone_sync_core::api::ZoneSyncStatus> {
        None
    }
    fn stub_status(&self) -> Option<zone_sync_core::api::StubStatus> {
        None
    }
    fn respawned(&self) -> Option<u64> {
        None
    }
    fn slabs(&self) -> Vec<zone_sync_core::api::SlabZone> {
        Vec::new()
    }
    fn limit_reqs(&self) -> Vec<zone_sync_core::api::LimitReqZone> {
        Vec::new()
    }
    fn keyval_zones(&self, _: Namespace) -> Vec<Vec<u8>> {
        vec![b"z".to_vec()]
    }
    fn keyval_visit(
        &self,
        _: Namespace,
        _: &[u8],
        _: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), BackendError> {
        Err(self.0)
    }
    fn keyval_get(
        &self,
        _: Namespace,
        _: &[u8],
        _: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        Err(self.0)
    }
    fn keyval_post(
        &mut self,
        _: Namespace,
        _: &[u8],
        _: &[zone_sync_core::api::KeyvalEntry<'_>],
    ) -> Result<(), BackendError> {
        Err(self.0)
    }
    fn keyval_patch(
        &mut self,
        _: Namespace,
        _: &[u8],
        _: &[u8],
        _: zone_sync_core::api::KeyvalChange<'_>,
    ) -> Result<(), BackendError> {
        Err(self.0)
    }
    fn keyval_clear(&mut self, _: Namespace, _: &[u8]) -> Result<(), BackendError> {
        Err(self.0)
    }
}

#[test]
fn backend_error_table() {
    use zone_sync_core::api::{handle, Request};
    let table = [
        (BackendError::ZoneNotFound, 404, "KeyvalNotFound"),
        (BackendError::KeyNotFound, 404, "KeyvalKeyNotFound"),
        (BackendError::KeyExists, 409, "KeyvalKeyExists"),
        (BackendError::NotEmpty, 400, "KeyvalFormatError"),
        (BackendError::InvalidKey, 400, "KeyvalFormatError"),
        (BackendError::TimeoutNotEnabled, 400, "KeyvalFormatError"),
        (BackendError::RecordTooLarge, 400, "KeyvalFormatError"),
        (BackendError::NoMemory, 507, "KeyvalOutOfMemory"),
    ];
    for (e, status, code) in table {
        let mut b = Refuser(e);
        for (method, body) in [
            (Method::Post, &br#"{"k":"v"}"#[..]),
            (Method::Post, br#"{"k":"v","l":"w"}"#),
            (Method::Patch, br#"{"k":"v"}"#),
            (Method::Patch, br#"{"k":null}"#),
        ] {
            let req = Request {
                method,
                path: b"/9/http/keyvals/z",
                args: b"",
                body: Some(body),
                write_enabled: true,
                request_id: REQUEST_ID,
            };
            let r = handle(&req, &mut b);
            assert_eq!(
                (r.status, error_code(&r).as_str()),
                (status, code),
                "{e:?} {method:?}"
            );
        }
    }
    // DELETE and GET report the zone error.
    let mut b = Refuser(BackendError::ZoneNotFound);
    for m in [Method::Delete, Method::Get] {
        let req = Request {
            method: m,
            path: b"/9/http/keyvals/z",
            args: b"",
            body: None,
            write_enabled: true,
            request_id: REQUEST_ID,
        };
        assert_eq!(error_code(&handle(&req, &mut b)), "KeyvalNotFound");
    }
    // The collection writes a zone it cannot read as empty.
    let req = Request {
        method: Method::Get,
        path: b"/9/http/keyvals/",
        args: b"",
        body: None,
        write_enabled: true,
        request_id: REQUEST_ID,
    };
    assert_eq!(handle(&req, &mut b).body, br#"{"z":{}}"#);
}

#[test]
fn backend_sees_exactly_what_was_posted() {
    let mut f = Fake::new();
    call(
        &mut f,
        Method::Post,
        "/9/stream/keyvals/s1",
        Some(br#"{"k":{"value":"v","expire":12}}"#),
    );
    assert_eq!(
        f.calls,
        [Call::Post(
            STREAM,
            b"s1".to_vec(),
            vec![(b"k".to_vec(), b"v".to_vec(), Some(12))]
        )]
    );
    f.calls.clear();
    call(
        &mut f,
        Method::Patch,
        "/9/stream/keyvals/s1",
        Some(br#"{"k":{"expire":5}}"#),
    );
    call(
        &mut f,
        Method::Patch,
        "/9/stream/keyvals/s1",
        Some(br#"{"k":null}"#),
    );
    call(
        &mut f,
        Method::Delete,
        "/9/stream/keyvals/s1",
        Some(b"ignored"),
    );
    assert_eq!(
        f.calls,
        [
            Call::Patch(
                STREAM,
                b"s1".to_vec(),
                b"k".to_vec(),
                "Update { value: None, expire_ms: Some(5) }".into()
            ),
            Call::Patch(STREAM, b"s1".to_vec(), b"k".to_vec(), "Delete".into()),
            Call::Clear(STREAM, b"s1".to_vec()),
        ]
    );
}

#[test]
fn zone_names_with_odd_bytes() {
    let mut f = Fake::new();
    f.zones.push(Zone::new(HTTP, b"z\"\xff"));
    let r = call_full(
        &mut f,
        Method::Post,
        b"/9/http/keyvals/z\"\xff",
        b"",
        Some(br#"{"k":"v"}"#),
        true,
    );
    assert_eq!(r.status, 201);
    let r = get(&mut f, "/9/http/keyvals/", "");
    assert!(
        text(&r).ends_with(r#""z\"\u00ff":{"k":"v"}}"#),
        "{}",
        text(&r)
    );
    let r = call_full(
        &mut f,
        Method::Get,
        b"/9/http/keyvals/z\xfe",
        b"",
        None,
        true,
    );
    // The raw byte is written \u00fe, which reads back as U+00FE.
    assert_eq!(error_text(&r), "keyval \"z\u{fe}\" not found".as_bytes());
}

//! Routing, lists, `/nginx`, `/stream/zone_sync/`, methods, `fields`,
//! versions and the error object.

#[path = "api_fake.rs"]
mod fake;

use fake::*;
use zone_sync_core::api::{
    handle, iso8601_ms, reject, versions, Method, Rejection, Request, Response, HREF, MAX_BODY_LEN,
};

#[test]
fn version_list() {
    let mut f = Fake::new();
    for path in ["", "/"] {
        let r = get(&mut f, path, "");
        assert_eq!(r.status, 200, "{path:?}");
        assert_eq!(text(&r), "[1,2,3,4,5,6,7,8,9]");
        assert_eq!(r.content_type(), Some("application/json"));
    }
    // `fields` does not apply to lists.
    assert_eq!(text(&get(&mut f, "/", "fields=")), "[1,2,3,4,5,6,7,8,9]");
}

#[test]
fn endpoint_lists() {
    let mut f = Fake::new();
    for path in ["/9", "/9/", "9", "9/"] {
        assert_eq!(
            text(&get(&mut f, path, "")),
            r#"["nginx","processes","connections","slabs","http","stream","resolvers","ssl","workers"]"#,
            "{path}"
        );
    }
    let http = r#"["requests","server_zones","location_zones","caches","limit_conns","limit_reqs","keyvals","upstreams"]"#;
    assert_eq!(text(&get(&mut f, "/9/http/", "")), http);
    assert_eq!(text(&get(&mut f, "/9/http", "")), http);
    // The newest Go client fetches /stream/zone_sync only when the list
    // names limit_conns.
    assert_eq!(
        text(&get(&mut f, "/9/stream/", "")),
        r#"["server_zones","limit_conns","keyvals","zone_sync","upstreams"]"#
    );
    f.sync = None;
    assert_eq!(
        text(&get(&mut f, "/9/stream", "")),
        r#"["server_zones","limit_conns","keyvals","upstreams"]"#
    );
}

#[test]
fn endpoint_lists_follow_the_version_table() {
    let mut f = Fake::new();
    let stream = |f: &mut Fake, v: u32| text(&get(f, &format!("/{v}/stream/"), "")).to_string();
    assert_eq!(stream(&mut f, 1), r#"["server_zones","upstreams"]"#);
    assert_eq!(
        stream(&mut f, 2),
        r#"["server_zones","keyvals","upstreams"]"#
    );
    for v in 3..=5 {
        assert_eq!(
            stream(&mut f, v),
            r#"["server_zones","keyvals","zone_sync","upstreams"]"#
        );
    }
    for v in 6..=9 {
        assert_eq!(
            stream(&mut f, v),
            r#"["server_zones","limit_conns","keyvals","zone_sync","upstreams"]"#
        );
    }
    let http = |f: &mut Fake, v: u32| text(&get(f, &format!("/{v}/http/"), "")).to_string();
    for v in 1..=4 {
        assert_eq!(
            http(&mut f, v),
            r#"["requests","server_zones","caches","keyvals","upstreams"]"#
        );
    }
    assert_eq!(
        http(&mut f, 5),
        r#"["requests","server_zones","location_zones","caches","keyvals","upstreams"]"#
    );
    let root = |f: &mut Fake, v: u32| text(&get(f, &format!("/{v}/"), "")).to_string();
    let old_root = r#"["nginx","processes","connections","slabs","http","stream","ssl"]"#;
    assert_eq!(root(&mut f, 4), old_root);
    let v5_root =
        r#"["nginx","processes","connections","slabs","http","stream","resolvers","ssl"]"#;
    assert_eq!(root(&mut f, 8), v5_root);
    for v in 1..=9 {
        assert_eq!(get(&mut f, &format!("/{v}/nginx"), "").status, 200);
    }
    assert_eq!(versions::CURRENT, 9);
    assert_eq!(versions::ALL, [1, 2, 3, 4, 5, 6, 7, 8, 9]);
    use versions::Feature::*;
    assert!(!versions::has(1, StreamKeyvals) && versions::has(2, StreamKeyvals));
    assert!(!versions::has(2, ZoneSync) && versions::has(3, ZoneSync));
    assert!(versions::has(3, ErrorPathMethod) && !versions::has(4, ErrorPathMethod));
    assert!(!versions::has(4, KeyvalExpire) && versions::has(5, KeyvalExpire));
    assert!(versions::has(9, KeyvalExpire) && !versions::has(10, KeyvalExpire));
}

#[test]
fn unknown_versions() {
    let mut f = Fake::new();
    for path in [
        "//",
        "/0/",
        "/10/",
        "/09/",
        "/+9/",
        "/-1/",
        "/9a/",
        "/v9/",
        "/abc",
        "/%39/",
        "/99999999999/",
        "/10/nginx",
        "/0/http/keyvals/one",
    ] {
        let r = get(&mut f, path, "");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(error_code(&r), "UnknownVersion", "{path}");
        assert_eq!(error_text(&r), b"unknown version");
    }
    // Whatever the method.
    let r = call(&mut f, Method::Post, "/10/http/keyvals/one", Some(b"{}"));
    assert_eq!((r.status, error_code(&r).as_str()), (404, "UnknownVersion"));
    assert!(f.calls.is_empty());
}

#[test]
fn paths_not_found() {
    let mut f = Fake::new();
    for path in [
        "/9/connection",
        "/9/nginx/x",
        "/9/nginx/version",
        "/9/http/upstreams/u1/servers/",
        "/9/slabs/one/pages",
        "/9/processes/x",
        "/5/http/limit_reqs/",
        "/5/http/limit_conns/",
        "/5/stream/limit_conns/",
        "/4/resolvers/",
        "/4/http/location_zones/",
        "/8/workers/",
        "/9/http/keyvals/one/extra",
        "/9//http",
        "/9/http//",
        "/9/http/keyvals//",
        "/9/stream/zone_sync/x",
        "/9/HTTP/",
        "/9/http/keyvals/one//",
        "/1/stream/keyvals/",
        "/1/stream/keyvals/s1",
        "/2/stream/zone_sync/",
    ] {
        let r = get(&mut f, path, "");
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(error_code_any(&r), "PathNotFound", "{path}");
    }
    assert_eq!(error_text(&get(&mut f, "/9/x", "")), b"path not found");
}

#[test]
fn zone_sync_status() {
    let mut f = Fake::new();
    let expect = r#"{"status":{"bytes_in":10,"msgs_in":2,"msgs_out":3,"bytes_out":40,"nodes_online":2},"zones":{"one":{"records_pending":1,"records_total":2},"s1":{"records_pending":0,"records_total":1}}}"#;
    assert_eq!(text(&get(&mut f, "/9/stream/zone_sync/", "")), expect);
    assert_eq!(text(&get(&mut f, "/9/stream/zone_sync", "")), expect);
    assert_eq!(text(&get(&mut f, "/3/stream/zone_sync", "")), expect);
    // fields filter the top-level members.
    assert_eq!(
        text(&get(&mut f, "/9/stream/zone_sync/", "fields=status")),
        r#"{"status":{"bytes_in":10,"msgs_in":2,"msgs_out":3,"bytes_out":40,"nodes_online":2}}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/stream/zone_sync/", "fields=zones,nope")),
        r#"{"zones":{"one":{"records_pending":1,"records_total":2},"s1":{"records_pending":0,"records_total":1}}}"#
    );
    assert_eq!(text(&get(&mut f, "/9/stream/zone_sync/", "fields=")), "{}");
    // No zones yet.
    f.sync.as_mut().unwrap().zones.clear();
    assert!(text(&get(&mut f, "/9/stream/zone_sync/", "")).ends_with(r#""zones":{}}"#));
}

#[test]
fn zone_sync_not_configured_is_path_not_found() {
    let mut f = Fake::new();
    f.sync = None;
    for m in [Method::Get, Method::Head, Method::Post, Method::Delete] {
        let r = call(&mut f, m, "/9/stream/zone_sync/", None);
        assert_eq!((r.status, error_code(&r).as_str()), (404, "PathNotFound"));
    }
}

#[test]
fn nginx_object() {
    let mut f = Fake::new();
    let r = get(&mut f, "/9/nginx", "");
    assert_eq!(r.status, 200);
    assert_eq!(
        text(&r),
        r#"{"version":"1.27.4","build":"zone-sync","address":"127.0.0.1","generation":3,"load_timestamp":"2022-06-28T11:16:47.305Z","timestamp":"2022-06-28T11:18:20.000Z","pid":4242,"ppid":4241}"#
    );
    assert_eq!(text(&get(&mut f, "/9/nginx/", "")), text(&r));
    assert_eq!(
        text(&get(&mut f, "/9/nginx", "fields=version,build")),
        r#"{"version":"1.27.4","build":"zone-sync"}"#
    );
    // Order is the object's, not the argument's; unknown names ignored.
    assert_eq!(
        text(&get(&mut f, "/9/nginx", "fields=ppid,bogus,,pid")),
        r#"{"pid":4242,"ppid":4241}"#
    );
    assert_eq!(text(&get(&mut f, "/9/nginx", "fields=")), "{}");
    // Other arguments and a `fields` without `=` change nothing.
    assert_eq!(text(&get(&mut f, "/9/nginx", "x=1&fields")), text(&r));
    // The first `fields` wins; values are percent-decoded.
    assert_eq!(
        text(&get(
            &mut f,
            "/9/nginx",
            "a=b&fields=pid%2Cppid&fields=version"
        )),
        r#"{"pid":4242,"ppid":4241}"#
    );
    // `myfields=` is not `fields=`.
    assert_eq!(text(&get(&mut f, "/9/nginx", "myfields=pid")), text(&r));
}

#[test]
fn nginx_strings_are_escaped() {
    let mut f = Fake::new();
    f.info.build = "a\"b\\c\n".into();
    let r = get(&mut f, "/9/nginx", "fields=build");
    assert_eq!(text(&r), r#"{"build":"a\"b\\c\n"}"#);
}

#[test]
fn iso8601_formatting() {
    assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(iso8601_ms(1), "1970-01-01T00:00:00.001Z");
    assert_eq!(iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(iso8601_ms(951_868_799_999), "2000-02-29T23:59:59.999Z");
    assert_eq!(iso8601_ms(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    assert_eq!(iso8601_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    assert_eq!(iso8601_ms(1_656_415_007_305), "2022-06-28T11:16:47.305Z");
    // Does not panic at the end of the range.
    assert!(iso8601_ms(u64::MAX).ends_with('Z'));
}

#[test]
fn head_answers_like_get() {
    let mut f = Fake::new();
    for path in [
        "/",
        "/9/",
        "/9/nginx",
        "/9/http/keyvals/",
        "/9/http/keyvals/one",
        "/9/stream/zone_sync",
    ] {
        let g = call(&mut f, Method::Get, path, None);
        let h = call(&mut f, Method::Head, path, None);
        assert_eq!(g, h, "{path}");
        assert_eq!(h.status, 200);
    }
    let h = call(&mut f, Method::Head, "/9/http/keyvals/nope", None);
    assert_eq!((h.status, error_code(&h).as_str()), (404, "KeyvalNotFound"));
}

#[test]
fn read_only_paths_refuse_other_methods() {
    let mut f = Fake::new();
    for path in [
        "/",
        "/9/",
        "/9/nginx",
        "/9/http/",
        "/9/stream/",
        "/9/http/keyvals/",
        "/9/stream/keyvals",
        "/9/stream/zone_sync/",
    ] {
        for m in [Method::Post, Method::Patch, Method::Delete, Method::Other] {
            for write in [true, false] {
                let r = call_full(
                    &mut f,
                    m,
                    path.as_bytes(),
                    b"",
                    Some(b"{\"a\":\"b\"}"),
                    write,
                );
                assert_eq!(r.status, 405, "{m:?} {path}");
                assert_eq!(error_code(&r), "MethodNotSupported");
                assert_eq!(error_text(&r), b"method not supported");
                assert_eq!(r.allow, Some("GET, HEAD"));
            }
        }
    }
    assert!(f.calls.is_empty());
}

#[test]
fn keyval_zone_refuses_unknown_methods_with_allow() {
    let mut f = Fake::new();
    for write in [true, false] {
        let r = call_full(
            &mut f,
            Method::Other,
            b"/9/http/keyvals/one",
            b"",
            Some(b"{}"),
            write,
        );
        assert_eq!(
            (r.status, error_code(&r).as_str()),
            (405, "MethodNotSupported")
        );
        assert_eq!(r.allow, Some("GET, HEAD, POST, PATCH, DELETE"));
    }
    assert!(f.calls.is_empty());
}

#[test]
fn write_disabled() {
    let mut f = Fake::new();
    let before = f.zones.clone();
    for m in [Method::Post, Method::Patch, Method::Delete] {
        for path in [
            "/9/http/keyvals/one",
            "/9/stream/keyvals/s1",
            "/9/http/keyvals/nope",
        ] {
            let r = call_full(
                &mut f,
                m,
                path.as_bytes(),
                b"",
                Some(br#"{"new":"v"}"#),
                false,
            );
            assert_eq!(r.status, 405, "{m:?} {path}");
            assert_eq!(error_code(&r), "MethodDisabled");
            assert_eq!(error_text(&r), b"method disabled");
            assert_eq!(r.allow, None);
        }
    }
    assert!(f.calls.is_empty());
    assert_eq!(f.zones, before);
    // Reads still work.
    let r = call_full(
        &mut f,
        Method::Get,
        b"/9/http/keyvals/one",
        b"",
        None,
        false,
    );
    assert_eq!(r.status, 200);
}

#[test]
fn error_object_shape_by_version() {
    let mut f = Fake::new();
    let r = get(&mut f, "/9/http/keyvals/nope", "");
    assert_eq!(error_code(&r), "KeyvalNotFound");
    assert_eq!(
        text(&r),
        format!(
            r#"{{"error":{{"status":404,"text":"keyval \"nope\" not found","code":"KeyvalNotFound"}},"request_id":"{REQUEST_ID}","href":"{HREF}"}}"#
        )
    );
    for v in 4..=9 {
        let r = get(&mut f, &format!("/{v}/http/keyvals/nope"), "");
        assert_eq!(error_code(&r), "KeyvalNotFound");
    }
    for v in 1..=3 {
        let r = get(&mut f, &format!("/{v}/http/keyvals/nope"), "");
        assert_eq!(old_error_code(&r), "KeyvalNotFound", "version {v}");
        assert!(text(&r).starts_with(r#"{"path":"","method":"","error":{"status":404,"#));
    }
    // No version in the path: the current shape.
    let r = call(&mut f, Method::Post, "/", None);
    assert_eq!(error_code(&r), "MethodNotSupported");
    let r = get(&mut f, "/x/", "");
    assert_eq!(error_code(&r), "UnknownVersion");
    // Version 1 paths that do not exist use the old shape.
    let r = get(&mut f, "/1/stream/keyvals/", "");
    assert_eq!(old_error_code(&r), "PathNotFound");
}

#[test]
fn request_id_is_escaped() {
    let mut f = Fake::new();
    let req = Request {
        method: Method::Get,
        path: b"/9/x",
        args: b"",
        body: None,
        write_enabled: false,
        request_id: "a\"b",
    };
    let r = handle(&req, &mut f);
    assert!(text(&r).contains(r#""request_id":"a\"b""#), "{}", text(&r));
    assert!(zone_sync_core::api::json::parse(&r.body).is_ok());
}

#[test]
fn rejections_for_the_nginx_layer() {
    let req = |path: &'static [u8]| Request {
        method: Method::Post,
        path,
        args: b"",
        body: None,
        write_enabled: true,
        request_id: REQUEST_ID,
    };
    let r = reject(&req(b"/9/http/keyvals/one"), Rejection::BodyTooLarge);
    assert_eq!((r.status, error_code(&r).as_str()), (413, "BodyTooLarge"));
    let r = reject(&req(b"/9/http/keyvals/one"), Rejection::BodyReadError);
    assert_eq!((r.status, error_code(&r).as_str()), (400, "BodyReadError"));
    assert_eq!(error_text(&r), b"reading request body failed");
    let r = reject(&req(b"/2/http/keyvals/one"), Rejection::BodyTooLarge);
    assert_eq!(old_error_code(&r), "BodyTooLarge");
    let r = reject(&req(b"/zz"), Rejection::BodyTooLarge);
    assert_eq!(error_code(&r), "BodyTooLarge");
}

#[test]
fn body_over_the_limit_is_413_before_parsing() {
    let mut f = Fake::new();
    let mut body = vec![b' '; MAX_BODY_LEN + 1];
    body[0] = b'{';
    for m in [Method::Post, Method::Patch] {
        let r = call(&mut f, m, "/9/http/keyvals/empty", Some(&body));
        assert_eq!((r.status, error_code(&r).as_str()), (413, "BodyTooLarge"));
    }
    assert!(f.calls.is_empty());
    // DELETE ignores its body.
    let r = call(&mut f, Method::Delete, "/9/http/keyvals/empty", Some(&body));
    assert_eq!(r.status, 204);
}

#[test]
fn success_answers_have_no_body() {
    let mut f = Fake::new();
    let r = call(
        &mut f,
        Method::Post,
        "/9/http/keyvals/one",
        Some(br#"{"c":"3"}"#),
    );
    assert_eq!(
        r,
        Response {
            status: 201,
            body: vec![],
            allow: None
        }
    );
    assert_eq!(r.content_type(), None);
    let r = call(
        &mut f,
        Method::Patch,
        "/9/http/keyvals/one",
        Some(br#"{"c":"4"}"#),
    );
    assert_eq!(
        r,
        Response {
            status: 204,
            body: vec![],
            allow: None
        }
    );
    let r = call(&mut f, Method::Delete, "/9/http/keyvals/one", None);
    assert_eq!(
        r,
        Response {
            status: 204,
            body: vec![],
            allow: None
        }
    );
}

//! The monitoring endpoints the NGINX Plus clients read (`GetStats`):
//! shapes, the mapping from nginx's counters, `fields`, the empty
//! collections, per-item errors, version gates and methods.

#[path = "api_fake.rs"]
mod fake;

use fake::*;
use zone_sync_core::api::Method;

#[test]
fn connections_from_stub_status() {
    let mut f = Fake::new();
    // accepted 100, handled 97, active 12 of which 9 waiting.
    assert_eq!(
        text(&get(&mut f, "/9/connections", "")),
        r#"{"accepted":100,"dropped":3,"active":3,"idle":9}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/connections", "fields=accepted,idle")),
        r#"{"accepted":100,"idle":9}"#
    );
    assert_eq!(
        text(&get(&mut f, "/9/http/requests", "")),
        r#"{"total":345,"current":3}"#
    );
}

#[test]
fn no_stub_status_no_numbers() {
    let mut f = Fake::new();
    f.stub = None;
    f.respawned = None;
    for path in ["/9/connections", "/9/http/requests", "/9/processes"] {
        let r = get(&mut f, path, "");
        assert_eq!((r.status, text(&r)), (200, "{}"), "{path}");
    }
}

#[test]
fn processes() {
    let mut f = Fake::new();
    assert_eq!(text(&get(&mut f, "/9/processes", "")), r#"{"respawned":1}"#);
    assert_eq!(text(&get(&mut f, "/4/processes", "fields=")), "{}");
}

#[test]
fn slabs_shape() {
    let mut f = Fake::new();
    let one = r#"{"pages":{"used":3,"free":250},"slots":{"8":{"used":3,"free":6,"reqs":30,"fails":0},"16":{"used":4,"free":8,"reqs":40,"fails":0},"32":{"used":5,"free":10,"reqs":50,"fails":0},"64":{"used":6,"free":12,"reqs":60,"fails":0},"128":{"used":7,"free":14,"reqs":70,"fails":0},"256":{"used":8,"free":16,"reqs":80,"fails":0},"512":{"used":9,"free":18,"reqs":90,"fails":0},"1024":{"used":10,"free":20,"reqs":100,"fails":0},"2048":{"used":11,"free":22,"reqs":110,"fails":1}}}"#;
    for path in ["/9/slabs", "/9/slabs/", "/1/slabs/"] {
        assert_eq!(text(&get(&mut f, path, "")), format!(r#"{{"one":{one}}}"#));
    }
    assert_eq!(text(&get(&mut f, "/9/slabs/one", "")), one);
    assert_eq!(text(&get(&mut f, "/9/slabs/", "fields=")), r#"{"one":{}}"#);
    assert_eq!(
        text(&get(&mut f, "/9/slabs/one", "fields=pages")),
        r#"{"pages":{"used":3,"free":250}}"#
    );
    let r = get(&mut f, "/9/slabs/two", "");
    assert_eq!((r.status, error_code(&r).as_str()), (404, "SlabNotFound"));
    assert_eq!(error_text(&r), br#"slab "two" not found"#);
    f.slabs.clear();
    assert_eq!(text(&get(&mut f, "/9/slabs/", "")), "{}");
}

#[test]
fn limit_reqs() {
    let mut f = Fake::new();
    let perip =
        r#"{"passed":15,"delayed":4,"rejected":3,"delayed_dry_run":1,"rejected_dry_run":2}"#;
    assert_eq!(
        text(&get(&mut f, "/9/http/limit_reqs/", "")),
        format!(r#"{{"perip":{perip}}}"#)
    );
    assert_eq!(text(&get(&mut f, "/6/http/limit_reqs/perip", "")), perip);
    assert_eq!(
        text(&get(&mut f, "/9/http/limit_reqs/perip", "fields=rejected")),
        r#"{"rejected":3}"#
    );
    let r = get(&mut f, "/9/http/limit_reqs/other", "");
    assert_eq!(
        (r.status, error_code(&r).as_str()),
        (404, "LimitReqNotFound")
    );
    let r = get(&mut f, "/5/http/limit_reqs/", "");
    assert_eq!((r.status, error_code(&r).as_str()), (404, "PathNotFound"));
}

#[test]
fn untracked_collections_are_empty() {
    let mut f = Fake::new();
    for (path, code) in [
        ("/9/http/caches", "CacheNotFound"),
        ("/9/http/server_zones", "ServerZoneNotFound"),
        ("/9/http/location_zones", "LocationZoneNotFound"),
        ("/9/http/upstreams", "UpstreamNotFound"),
        ("/9/http/limit_conns", "LimitConnNotFound"),
        ("/9/stream/server_zones", "ServerZoneNotFound"),
        ("/9/stream/upstreams", "UpstreamNotFound"),
        ("/9/stream/limit_conns", "LimitConnNotFound"),
        ("/9/resolvers", "ResolverZoneNotFound"),
    ] {
        for p in [path.to_string(), format!("{path}/")] {
            let r = get(&mut f, &p, "");
            assert_eq!((r.status, text(&r)), (200, "{}"), "{p}");
        }
        let r = get(&mut f, &format!("{path}/x"), "");
        assert_eq!(
            (r.status, error_code(&r)),
            (404, code.to_string()),
            "{path}"
        );
    }
    assert_eq!(text(&get(&mut f, "/9/ssl", "")), "{}");
    assert_eq!(text(&get(&mut f, "/9/workers/", "")), "[]");
    let r = get(&mut f, "/9/workers/0", "");
    assert_eq!((r.status, error_code(&r).as_str()), (404, "WorkerNotFound"));
}

#[test]
fn monitoring_endpoints_are_read_only() {
    let mut f = Fake::new();
    for path in [
        "/9/connections",
        "/9/processes",
        "/9/slabs/",
        "/9/slabs/one",
        "/9/http/requests",
        "/9/http/limit_reqs/perip",
        "/9/http/caches/",
        "/9/ssl",
        "/9/workers/",
    ] {
        for m in [Method::Post, Method::Patch, Method::Delete, Method::Other] {
            let r = call_full(&mut f, m, path.as_bytes(), b"", None, true);
            assert_eq!(r.status, 405, "{m:?} {path}");
            assert_eq!(error_code(&r), "MethodNotSupported");
            assert_eq!(r.allow, Some("GET, HEAD"));
        }
        let h = call_full(&mut f, Method::Head, path.as_bytes(), b"", None, false);
        assert_eq!(h, get(&mut f, path, ""), "HEAD {path}");
    }
}

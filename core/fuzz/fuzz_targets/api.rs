//! Any request (method, path, query, body, write flag) through the REST
//! API's routes and body handling, against the in-memory backend of the
//! API tests: no panic, every answer is well-formed (a JSON body or none,
//! `Allow` exactly on 405), reads never write, and a write that succeeded
//! is visible.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::api::{handle, json, Method, Request};

#[path = "../../tests/api_fake.rs"]
mod fake;

const METHODS: [Method; 6] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Patch,
    Method::Delete,
    Method::Other,
];

fuzz_target!(|data: &[u8]| {
    // [flags] path \0 args \0 body (no second \0: no body)
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(flags & 7) % METHODS.len()];
    let write_enabled = flags & 8 != 0;
    let mut parts = rest.splitn(3, |&b| b == 0);
    let path = parts.next().unwrap_or(b"");
    let args = parts.next().unwrap_or(b"");
    let body = parts.next();

    let mut backend = fake::Fake::new();
    let before = backend.clone();
    let req = Request {
        method,
        path,
        args,
        body,
        write_enabled,
        request_id: "0123456789abcdef",
    };
    let resp = handle(&req, &mut backend);

    assert!(
        matches!(
            resp.status,
            200 | 201 | 204 | 400 | 404 | 405 | 409 | 413 | 415 | 507
        ),
        "status {}",
        resp.status
    );
    assert_eq!(resp.allow.is_some(), resp.status == 405);
    if matches!(resp.status, 201 | 204) {
        assert!(resp.body.is_empty());
    } else {
        assert!(!resp.body.is_empty() || method == Method::Head);
    }
    if !resp.body.is_empty() {
        json::parse(&resp.body).expect("API answers are JSON");
    }
    let writes = matches!(method, Method::Post | Method::Patch | Method::Delete);
    if !writes || !write_enabled {
        assert!(backend.calls.is_empty(), "a read or a disabled write wrote");
        assert_eq!(backend.zones, before.zones);
    }
    if resp.status >= 400 {
        // A refused request changes nothing (the backend is all or nothing).
        assert_eq!(backend.zones, before.zones);
    }
    if resp.status == 201 {
        // Every key of a successful POST is there with its value.
        if let Some(fake::Call::Post(ns, zone, entries)) = backend.calls.last() {
            for (k, v, _) in entries {
                assert_eq!(backend.value(*ns, zone, k).as_ref(), Some(v));
            }
        }
    }
});

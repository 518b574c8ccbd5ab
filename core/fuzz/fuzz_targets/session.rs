//! Any byte stream into a client and a server session (fresh and after a
//! handshake): no panic, and whatever they send is well-formed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::session::{Role, Session, SessionConfig, ZoneInfo};
use zone_sync_core::wire::{self, FrameReader};

fn cfg(node_id: u64) -> SessionConfig {
    SessionConfig {
        node_id,
        timeout_ms: 5000,
        max_frame: 4096,
        zones: vec![ZoneInfo::new("kv", wire::KIND_KEYVAL, 1)],
    }
}

fn check_output(s: &mut Session) {
    let out = std::mem::take(s.outgoing());
    if out.is_empty() {
        return;
    }
    // The reader allocates its whole limit: keep it to what a session sends.
    let mut r = FrameReader::new(out.len().max(wire::MIN_FRAME_LIMIT));
    assert_eq!(r.push(&out), out.len());
    while let Some(f) = r.next_frame().expect("session output is framed") {
        f.decode().expect("session output decodes");
    }
}

fn run(mut s: Session, data: &[u8]) {
    let mut pos = 0;
    let mut now = 1;
    while pos < data.len() {
        let n = s.receive(&data[pos..], now);
        pos += n;
        loop {
            match s.next_event() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    check_output(&mut s);
                    return;
                }
            }
        }
        now += 100;
        let _ = s.poll_timers(now);
        check_output(&mut s);
    }
}

fuzz_target!(|data: &[u8]| {
    run(Session::new(Role::Server, cfg(1), 0), data);
    run(Session::new(Role::Client, cfg(1), 0), data);
    // established pair
    let mut c = Session::new(Role::Client, cfg(2), 0);
    let mut s = Session::new(Role::Server, cfg(3), 0);
    let hello = std::mem::take(c.outgoing());
    s.receive(&hello, 0);
    while let Ok(Some(_)) = s.next_event() {}
    let reply = std::mem::take(s.outgoing());
    c.receive(&reply, 0);
    while let Ok(Some(_)) = c.next_event() {}
    run(s, data);
    run(c, data);
});

//! A client and a server session wired back to back, driven by a fake clock.

use proptest::prelude::*;
use zone_sync_core::session::{
    position_taken, ConfigError, Event, Role, Session, SessionConfig, SessionError, State, ZoneInfo,
};
use zone_sync_core::wire::{
    self, ErrorCode, Frame, FrameReader, RecordRef, RecordsBuilder, WireError, KIND_KEYVAL,
    KIND_LIMIT_REQ,
};

const CLIENT_ID: u64 = 0xC1;
const SERVER_ID: u64 = 0x5E;
const TIMEOUT: u64 = 3000;

type Rec = (bool, Vec<u8>, Vec<u8>, u64, u64, u32);

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Hello(u64, Vec<usize>),
    Records {
        zone: usize,
        seq: u64,
        snapshot: bool,
        recs: Vec<Rec>,
    },
    Ack(u64),
    SnapshotDone(u64),
    Position(usize, u64, bool),
    PeerError(u16, String),
}

fn owned(e: Event<'_>) -> Ev {
    match e {
        Event::PeerHello {
            node_id,
            shared_zones,
        } => Ev::Hello(node_id, shared_zones.to_vec()),
        Event::Records { zone, frame } => Ev::Records {
            zone,
            seq: frame.seq,
            snapshot: frame.is_snapshot(),
            recs: frame
                .records()
                .map(|r| {
                    let r = r.expect("validated frame");
                    (
                        r.is_tombstone(),
                        r.key.to_vec(),
                        r.value.to_vec(),
                        r.hlc,
                        r.origin,
                        r.ttl_ms,
                    )
                })
                .collect(),
        },
        Event::Ack { seq } => Ev::Ack(seq),
        Event::SnapshotDone { seq } => Ev::SnapshotDone(seq),
        Event::Position { zone, seq, live } => Ev::Position(zone, seq, live),
        Event::PeerError { code, text } => {
            Ev::PeerError(code.0, String::from_utf8_lossy(text).into_owned())
        }
    }
}

fn cfg(node_id: u64, zones: &[(&str, u8, u16)]) -> SessionConfig {
    SessionConfig {
        node_id,
        timeout_ms: TIMEOUT,
        max_frame: 65536,
        zones: zones
            .iter()
            .map(|&(n, k, v)| ZoneInfo::new(n, k, v))
            .collect(),
    }
}

fn zones() -> Vec<(&'static str, u8, u16)> {
    vec![("kv", KIND_KEYVAL, 1), ("rl", KIND_LIMIT_REQ, 1)]
}

/// Feeds `bytes` to `to` in chunks of `chunk`, collecting its events.
fn feed_chunked(
    to: &mut Session,
    bytes: &[u8],
    chunk: usize,
    now: u64,
) -> Result<Vec<Ev>, SessionError> {
    let mut evs = Vec::new();
    let mut pos = 0;
    loop {
        let end = (pos + chunk).min(bytes.len());
        pos += to.receive(&bytes[pos..end], now);
        while let Some(e) = to.next_event()? {
            evs.push(owned(e));
        }
        if pos == bytes.len() {
            return Ok(evs);
        }
    }
}

fn feed(to: &mut Session, bytes: &[u8], now: u64) -> Result<Vec<Ev>, SessionError> {
    feed_chunked(to, bytes, usize::MAX, now)
}

/// Moves everything `from` has to send into `to`.
fn pump(from: &mut Session, to: &mut Session, now: u64) -> Result<Vec<Ev>, SessionError> {
    let bytes = std::mem::take(from.outgoing());
    feed(to, &bytes, now)
}

/// Decodes a byte stream into frames (owned debug strings), for checking
/// what a session sent.
fn frames(bytes: &[u8]) -> Vec<String> {
    let mut r = FrameReader::new(1 << 20);
    assert_eq!(r.push(bytes), bytes.len());
    let mut v = Vec::new();
    while let Some(f) = r.next_frame().unwrap() {
        v.push(match f.decode().unwrap() {
            Frame::Hello(h) => format!("HELLO {}", h.node_id),
            Frame::Records(rf) => format!("RECORDS {}", rf.seq),
            Frame::Ack(s) => format!("ACK {s}"),
            Frame::Heartbeat => "HEARTBEAT".into(),
            Frame::SnapshotDone(s) => format!("SNAPSHOT_DONE {s}"),
            Frame::Error(e) => format!("ERROR {} {}", e.code.0, e.text_lossy()),
            Frame::Position { zone, seq } => {
                format!("POSITION {} {seq}", String::from_utf8_lossy(zone))
            }
            Frame::Unknown { frame_type, .. } => format!("UNKNOWN {frame_type}"),
        });
    }
    assert_eq!(r.buffered(), 0);
    v
}

fn connect(c: SessionConfig, s: SessionConfig) -> (Session, Session) {
    let mut client = Session::new(Role::Client, c, 0);
    let mut server = Session::new(Role::Server, s, 0);
    let ev = pump(&mut client, &mut server, 0).unwrap();
    assert!(matches!(ev[..], [Ev::Hello(CLIENT_ID, _)]), "{ev:?}");
    let ev = pump(&mut server, &mut client, 0).unwrap();
    assert!(matches!(ev[..], [Ev::Hello(SERVER_ID, _)]), "{ev:?}");
    assert!(client.is_established() && server.is_established());
    (client, server)
}

fn pair() -> (Session, Session) {
    connect(cfg(CLIENT_ID, &zones()), cfg(SERVER_ID, &zones()))
}

fn rec(i: u64) -> Rec {
    let key = format!("key-{i}").into_bytes();
    if i % 5 == 4 {
        (true, key, Vec::new(), 1000 + i, CLIENT_ID, 0)
    } else {
        (
            false,
            key,
            vec![i as u8; (i % 40) as usize],
            1000 + i,
            CLIENT_ID,
            60_000,
        )
    }
}

fn as_ref(r: &Rec) -> RecordRef<'_> {
    if r.0 {
        RecordRef::tombstone(&r.1, r.3, r.4, r.5)
    } else {
        RecordRef::put(&r.1, &r.2, r.3, r.4, r.5)
    }
}

/// Sends `recs` for `zone` in frames of at most `budget` bytes; returns
/// the frames' (seq, records).
fn send(
    c: &mut Session,
    zone: usize,
    snapshot: bool,
    recs: &[Rec],
    budget: usize,
) -> Vec<(u64, Vec<Rec>)> {
    let mut sent = Vec::new();
    let mut i = 0;
    while i < recs.len() {
        let mut w = c.begin_records(zone, snapshot, budget).unwrap();
        let start = i;
        while i < recs.len() && w.try_push(&as_ref(&recs[i])) {
            i += 1;
        }
        assert!(i > start, "record does not fit an empty frame");
        let seq = w.finish().unwrap();
        sent.push((seq, recs[start..i].to_vec()));
    }
    sent
}

#[test]
fn handshake_shares_matching_zones() {
    let c = cfg(
        CLIENT_ID,
        &[("a", 1, 1), ("b", 2, 1), ("c", 1, 1), ("d", 1, 2)],
    );
    let s = cfg(
        SERVER_ID,
        &[("c", 1, 1), ("b", 2, 1), ("d", 1, 1), ("e", 1, 1)],
    );
    let mut client = Session::new(Role::Client, c, 0);
    let mut server = Session::new(Role::Server, s, 0);
    assert_eq!(frames(client.outgoing()), ["HELLO 193"]);
    assert!(server.outgoing().is_empty());
    assert_eq!(client.state(), State::AwaitHello);
    assert_eq!(
        pump(&mut client, &mut server, 0).unwrap(),
        [Ev::Hello(CLIENT_ID, vec![0, 1])]
    );
    assert_eq!(
        pump(&mut server, &mut client, 0).unwrap(),
        [Ev::Hello(SERVER_ID, vec![1, 2])]
    );
    assert_eq!(client.shared_zones(), [1, 2]);
    assert_eq!(server.peer_node_id(), Some(CLIENT_ID));
    assert_eq!(client.peer_node_id(), Some(SERVER_ID));
}

#[test]
fn no_shared_zone_is_not_an_error() {
    let (mut c, mut s) = connect(cfg(CLIENT_ID, &[("x", 1, 1)]), cfg(SERVER_ID, &[]));
    assert!(c.shared_zones().is_empty());
    assert_eq!(
        c.begin_records(0, true, 4096).unwrap_err(),
        SessionError::InvalidState("zone not shared with peer")
    );
    assert_eq!(c.finish_snapshot(), Ok(0));
    assert_eq!(pump(&mut c, &mut s, 1).unwrap(), [Ev::SnapshotDone(0)]);
}

#[test]
fn snapshot_then_incremental() {
    for chunk in [usize::MAX, 1, 7, 100] {
        let (mut c, mut s) = pair();
        let kv: Vec<Rec> = (0..40).map(rec).collect();
        let rl: Vec<Rec> = (100..103).map(rec).collect();
        let mut sent = send(&mut c, 0, true, &kv, 300);
        assert!(sent.len() > 3, "small budget splits the snapshot");
        sent.extend(send(&mut c, 1, true, &rl, 4096));
        let snap_seq = sent.last().unwrap().0;
        assert_eq!(c.finish_snapshot(), Ok(snap_seq));
        let inc = send(&mut c, 0, false, &[rec(200)], 4096);
        assert_eq!(inc[0].0, snap_seq + 1);
        assert_eq!(c.last_sent_seq(), snap_seq + 1);
        assert_eq!(c.in_flight(), snap_seq + 1);

        let bytes = std::mem::take(c.outgoing());
        let evs = feed_chunked(&mut s, &bytes, chunk, 1).unwrap();
        let mut expect = Vec::new();
        for (i, (seq, recs)) in sent.iter().enumerate() {
            expect.push(Ev::Records {
                zone: usize::from(i == sent.len() - 1),
                seq: *seq,
                snapshot: true,
                recs: recs.clone(),
            });
        }
        expect.push(Ev::SnapshotDone(snap_seq));
        expect.push(Ev::Records {
            zone: 0,
            seq: snap_seq + 1,
            snapshot: false,
            recs: vec![rec(200)],
        });
        assert_eq!(evs, expect);
        assert_eq!(s.snapshot_done_seq(), Some(snap_seq));
        assert_eq!(s.last_received_seq(), snap_seq + 1);
        assert_eq!(s.stats().records_in, 44);
        assert_eq!(s.stats().records_frames_in, snap_seq + 1);

        // acks are cumulative; fed in one go the server acks once
        let acks = frames(s.outgoing());
        if chunk == usize::MAX {
            assert_eq!(acks, [format!("ACK {}", snap_seq + 1)]);
        } else {
            assert!(acks.iter().all(|a| a.starts_with("ACK ")));
        }
        let evs = pump(&mut s, &mut c, 1).unwrap();
        assert_eq!(evs.last(), Some(&Ev::Ack(snap_seq + 1)));
        assert_eq!(c.acked_seq(), snap_seq + 1);
        assert_eq!(c.in_flight(), 0);
    }
}

#[test]
fn ack_waits_until_records_are_applied() {
    let (mut c, mut s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    let bytes = std::mem::take(c.outgoing());
    s.receive(&bytes, 1);
    assert!(matches!(s.next_event(), Ok(Some(Event::Records { .. }))));
    assert!(
        s.outgoing().is_empty(),
        "no ack before the frame is applied"
    );
    assert!(matches!(s.next_event(), Ok(None)));
    assert_eq!(frames(s.outgoing()), ["ACK 1"]);
}

#[test]
fn unknown_zone_kind_or_version_is_skipped_and_acked() {
    let (mut c, mut s) = pair();
    // a newer client may send zones, kinds and versions we do not have
    let mut raw = Vec::new();
    let r = RecordRef::put(b"k", b"v", 1, CLIENT_ID, 0);
    for (seq, zone, kind, ver) in [
        (1, &b"nope"[..], KIND_KEYVAL, 1),
        (2, b"kv", KIND_LIMIT_REQ, 1),
        (3, b"kv", KIND_KEYVAL, 2),
    ] {
        let mut b = RecordsBuilder::new(&mut raw, seq, zone, kind, ver, 0, 4096).unwrap();
        assert!(b.try_push(&r));
        b.finish();
    }
    wire::encode_frame(&mut raw, 0x7f, b"from the future");
    let mut b = RecordsBuilder::new(&mut raw, 4, b"kv", KIND_KEYVAL, 1, 0, 4096).unwrap();
    assert!(b.try_push(&r));
    b.finish();
    let evs = feed(&mut s, &raw, 1).unwrap();
    assert_eq!(
        evs,
        [Ev::Records {
            zone: 0,
            seq: 4,
            snapshot: false,
            recs: vec![(false, b"k".to_vec(), b"v".to_vec(), 1, CLIENT_ID, 0)],
        }]
    );
    assert_eq!(s.stats().skipped_records_frames, 3);
    assert_eq!(s.stats().skipped_frames, 1);
    assert_eq!(frames(s.outgoing()), ["ACK 4"]);
    // the client never sent those: its ack check refuses the ack
    let e = pump(&mut s, &mut c, 1).unwrap_err();
    assert_eq!(
        e,
        SessionError::BadAck {
            seq: 4,
            acked: 0,
            sent: 0
        }
    );
    assert_eq!(e.to_string(), "invalid ack 4, acked 0, sent 0");
}

#[test]
fn only_skipped_frames_are_acked_too() {
    let (_c, mut s) = pair();
    let mut raw = Vec::new();
    let mut b = RecordsBuilder::new(&mut raw, 1, b"other", 1, 1, 0, 4096).unwrap();
    b.try_push(&RecordRef::tombstone(b"k", 1, 1, 0));
    b.finish();
    assert_eq!(feed(&mut s, &raw, 1).unwrap(), []);
    assert_eq!(frames(s.outgoing()), ["ACK 1"]);
}

#[test]
fn self_connection_is_detected() {
    let mut c = Session::new(Role::Client, cfg(7, &zones()), 0);
    let mut s = Session::new(Role::Server, cfg(7, &zones()), 0);
    let e = pump(&mut c, &mut s, 0).unwrap_err();
    assert_eq!(e, SessionError::SelfConnect);
    assert!(s.is_closed());
    assert_eq!(frames(s.outgoing()), ["ERROR 3 connected to itself"]);
    let evs = pump(&mut s, &mut c, 0).unwrap();
    assert_eq!(evs, [Ev::PeerError(3, "connected to itself".into())]);
    assert!(c.is_closed());
}

#[test]
fn client_detects_self_in_server_hello() {
    let mut c = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    let mut raw = Vec::new();
    wire::encode_hello(&mut raw, CLIENT_ID, &[]);
    assert_eq!(feed(&mut c, &raw, 0), Err(SessionError::SelfConnect));
}

fn hello_v(version: u16) -> Vec<u8> {
    let mut body = wire::MAGIC.to_vec();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&CLIENT_ID.to_be_bytes());
    body.extend_from_slice(&[0, 0]);
    let mut raw = Vec::new();
    wire::encode_frame(&mut raw, wire::FRAME_HELLO, &body);
    raw
}

#[test]
fn version_mismatch() {
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    assert!(feed(&mut s, &hello_v(1), 0).is_ok());
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    let e = feed(&mut s, &hello_v(3), 0).unwrap_err();
    assert_eq!(e, SessionError::Wire(WireError::UnsupportedVersion(3)));
    assert_eq!(
        frames(s.outgoing()),
        ["ERROR 1 unsupported protocol version 3"]
    );
    assert!(s.is_closed());
    // the client learns why
    let mut c = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    let evs = pump(&mut s, &mut c, 0).unwrap();
    assert_eq!(
        evs,
        [Ev::PeerError(1, "unsupported protocol version 3".into())]
    );
}

/// Version 2: the client announces its zones' epochs, the server answers
/// with where it stands in them, and POSITION frames reach the server.
#[test]
fn resume_positions_in_hello() {
    let mut c = cfg(CLIENT_ID, &zones());
    c.zones[0].epoch = 77;
    let s = cfg(SERVER_ID, &zones());
    let mut client = Session::new(Role::Client, c, 0);
    let mut server = Session::new(Role::Server, s, 0);
    let hello = std::mem::take(client.outgoing());
    server.receive(&hello, 0);
    let ev = server.next_event().unwrap().map(owned);
    assert!(matches!(ev, Some(Ev::Hello(CLIENT_ID, _))), "{ev:?}");
    assert_eq!(server.peer_resume(0).map(|r| r.epoch), Some(77));
    assert!(
        server.outgoing().is_empty(),
        "hello waits for the positions"
    );
    server.reply_hello(&mut |zi| (zi == 0).then_some((77, 1234)));
    let ev = pump(&mut server, &mut client, 0).unwrap();
    assert!(matches!(ev[..], [Ev::Hello(SERVER_ID, _)]), "{ev:?}");
    assert_eq!(client.version(), 2);
    let r = client.peer_resume(0).unwrap();
    assert_eq!((r.seen_epoch, r.seen_seq), (77, 1234));
    assert_eq!(client.peer_resume(1).map(|r| r.seen_epoch), Some(0));
    client.send_position(0, 1300);
    let ev = pump(&mut client, &mut server, 0).unwrap();
    assert_eq!(ev, [Ev::Position(0, 1300, false)]);
    // After SNAPSHOT_DONE a POSITION is live: it is stored only while
    // the server is connected to every other member it knows.
    assert_eq!(client.finish_snapshot(), Ok(0));
    client.send_position(0, 1400);
    let ev = pump(&mut client, &mut server, 0).unwrap();
    assert_eq!(ev, [Ev::SnapshotDone(0), Ev::Position(0, 1400, true)]);
    assert!(position_taken(false, false), "a pass's end is always taken");
    assert!(position_taken(true, true));
    assert!(!position_taken(true, false), "partial partition: not taken");
}

/// A server that does not call reply_hello still answers, without
/// positions; a version-1 client is answered in version 1 at once, and
/// gets no POSITION frames.
#[test]
fn resume_fallbacks() {
    let mut client = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    let mut server = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    pump(&mut client, &mut server, 0).unwrap();
    pump(&mut server, &mut client, 0).unwrap();
    assert_eq!(client.peer_resume(0).map(|r| r.seen_epoch), Some(0));

    let mut client = Session::with_version(Role::Client, cfg(CLIENT_ID, &zones()), 0, 1);
    let mut server = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    pump(&mut client, &mut server, 0).unwrap();
    assert_eq!(frames(server.outgoing()), [format!("HELLO {SERVER_ID}")]);
    pump(&mut server, &mut client, 0).unwrap();
    assert_eq!((client.version(), server.version()), (1, 1));
    assert_eq!(client.peer_resume(0), None);
    client.send_position(0, 5);
    assert!(client.outgoing().is_empty());
}

/// A client refuses a server HELLO of a version it did not offer.
#[test]
fn server_hello_newer_than_offered() {
    let mut client = Session::with_version(Role::Client, cfg(CLIENT_ID, &zones()), 0, 1);
    let mut server = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    server.receive(&hello_v(2), 0);
    let _ = server.next_event();
    let _ = server.next_event();
    let e = pump(&mut server, &mut client, 0).unwrap_err();
    assert_eq!(e, SessionError::BadVersion(2));
}

#[test]
fn bad_magic() {
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    let mut raw = hello_v(1);
    raw[5] = b'X';
    let e = feed(&mut s, &raw, 0).unwrap_err();
    assert_eq!(e.to_string(), "bad magic \"XSYN\"");
    assert_eq!(frames(s.outgoing()), ["ERROR 2 bad magic \"XSYN\""]);

    // something that is not this protocol at all
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    let e = feed(&mut s, b"GET / HTTP/1.0\r\n\r\n", 0).unwrap_err();
    assert!(matches!(e, SessionError::Wire(WireError::TooLarge { .. })));
    assert_eq!(
        frames(s.outgoing()),
        ["ERROR 4 frame too large: 1195725860 bytes, limit 65536"]
    );
}

fn expect_err(s: &mut Session, raw: &[u8], msg: &str) {
    let e = feed(s, raw, 1).unwrap_err();
    assert_eq!(e.to_string(), msg);
    assert!(s.is_closed());
    let out = frames(s.outgoing());
    assert_eq!(out.last().unwrap(), &format!("ERROR 4 {msg}"));
    // nothing more comes out of a closed session
    assert_eq!(s.next_event(), Ok(None));
    assert_eq!(s.receive(b"more", 2), 4);
    assert_eq!(s.next_event(), Ok(None));
    assert_eq!(s.poll_timers(1_000_000), Ok(()));
    assert_eq!(s.next_timer(), u64::MAX);
}

fn frame_of(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    wire::encode_frame(&mut v, t, body);
    v
}

fn records_frame(seq: u64, zone: &[u8], recs: &[RecordRef<'_>]) -> Vec<u8> {
    let mut raw = Vec::new();
    let mut b = RecordsBuilder::new(&mut raw, seq, zone, KIND_KEYVAL, 1, 0, 1 << 20).unwrap();
    for r in recs {
        assert!(b.try_push(r));
    }
    b.finish();
    raw
}

#[test]
fn frames_out_of_order_on_server() {
    let fresh = || Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    let r = RecordRef::put(b"k", b"v", 1, CLIENT_ID, 0);
    expect_err(
        &mut fresh(),
        &records_frame(1, b"kv", &[r]),
        "unexpected frame type 0x02 before hello",
    );
    expect_err(
        &mut fresh(),
        &frame_of(wire::FRAME_HEARTBEAT, &[]),
        "unexpected frame type 0x04 before hello",
    );
    expect_err(
        &mut fresh(),
        &frame_of(0x42, &[]),
        "unexpected frame type 0x42 before hello",
    );

    let (_, mut s) = pair();
    expect_err(
        &mut s,
        &hello_v(1),
        "unexpected frame type 0x01 after hello",
    );
    let (_, mut s) = pair();
    expect_err(
        &mut s,
        &frame_of(wire::FRAME_ACK, &[0; 8]),
        "unexpected frame type 0x03 from client",
    );
    let (_, mut s) = pair();
    expect_err(
        &mut s,
        &records_frame(2, b"kv", &[r]),
        "records frame out of sequence: 2, expected 1",
    );
    let (_, mut s) = pair();
    let mut raw = records_frame(1, b"kv", &[r]);
    raw.extend(records_frame(1, b"kv", &[r]));
    expect_err(&mut s, &raw, "records frame out of sequence: 1, expected 2");
    let (_, mut s) = pair();
    expect_err(
        &mut s,
        &frame_of(wire::FRAME_SNAPSHOT_DONE, &1u64.to_be_bytes()),
        "snapshot done at 1, received 0",
    );
    let (_, mut s) = pair();
    let mut raw = frame_of(wire::FRAME_SNAPSHOT_DONE, &0u64.to_be_bytes());
    raw.extend(frame_of(wire::FRAME_SNAPSHOT_DONE, &0u64.to_be_bytes()));
    expect_err(&mut s, &raw, "duplicate snapshot done");
    let (_, mut s) = pair();
    expect_err(
        &mut s,
        &frame_of(wire::FRAME_HEARTBEAT, &[1]),
        "trailing bytes in heartbeat",
    );
}

#[test]
fn frames_out_of_order_on_client() {
    let r = RecordRef::put(b"k", b"v", 1, SERVER_ID, 0);
    let (mut c, _) = pair();
    expect_err(
        &mut c,
        &records_frame(1, b"kv", &[r]),
        "unexpected frame type 0x02 from server",
    );
    let (mut c, _) = pair();
    expect_err(
        &mut c,
        &frame_of(wire::FRAME_SNAPSHOT_DONE, &[0; 8]),
        "unexpected frame type 0x05 from server",
    );
    let (mut c, _) = pair();
    expect_err(
        &mut c,
        &frame_of(wire::FRAME_ACK, &1u64.to_be_bytes()),
        "invalid ack 1, acked 0, sent 0",
    );
    // acks going backwards
    let (mut c, mut s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    send(&mut c, 0, false, &[rec(2)], 4096);
    pump(&mut c, &mut s, 1).unwrap();
    assert_eq!(pump(&mut s, &mut c, 1).unwrap(), [Ev::Ack(2)]);
    // a repeated ack is harmless
    assert_eq!(
        feed(&mut c, &frame_of(wire::FRAME_ACK, &2u64.to_be_bytes()), 1).unwrap(),
        [Ev::Ack(2)]
    );
    expect_err(
        &mut c,
        &frame_of(wire::FRAME_ACK, &1u64.to_be_bytes()),
        "invalid ack 1, acked 2, sent 2",
    );
    // a newer server's unknown frame type is skipped
    let (mut c, _) = pair();
    assert_eq!(feed(&mut c, &frame_of(0x99, b"x"), 1).unwrap(), []);
    assert_eq!(c.stats().skipped_frames, 1);
    assert!(c.is_established());
}

#[test]
fn error_before_hello_reaches_client() {
    let mut c = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    let mut raw = Vec::new();
    wire::encode_error(&mut raw, ErrorCode::SHUTDOWN, "reloading");
    assert_eq!(
        feed(&mut c, &raw, 0).unwrap(),
        [Ev::PeerError(5, "reloading".into())]
    );
    assert!(c.is_closed());
}

#[test]
fn malformed_frame_changes_nothing() {
    let (mut c, mut s) = pair();
    let recs: Vec<Rec> = (0..12).map(rec).collect();
    send(&mut c, 0, false, &recs[..3], 4096);
    send(&mut c, 0, false, &recs, 4096);
    let mut bytes = std::mem::take(c.outgoing());
    // break the 10th record of the second frame: set a reserved flag bit
    let first_len = 4 + u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let mut at = first_len + wire::records_frame_overhead(2);
    for r in &recs[..9] {
        at += wire::encoded_record_len(r.1.len(), r.2.len());
    }
    bytes[at] = 0x04;
    let mut evs = Vec::new();
    let mut pos = s.receive(&bytes, 1);
    assert_eq!(pos, bytes.len());
    pos = 0;
    let err = loop {
        match s.next_event() {
            Ok(Some(e)) => evs.push(owned(e)),
            Ok(None) => panic!("no error"),
            Err(e) => break e,
        }
        pos += 1;
    };
    assert_eq!(pos, 1, "only the first, valid frame was handed out");
    assert!(matches!(&evs[..], [Ev::Records { seq: 1, .. }]));
    assert_eq!(err, SessionError::Wire(WireError::BadRecordFlags(0x04)));
    // the valid frame is still acknowledged before the error
    assert_eq!(
        frames(s.outgoing()),
        ["ACK 1", "ERROR 4 invalid record flags 0x04"]
    );
}

#[test]
fn frame_over_the_receive_limit() {
    let mut small = cfg(SERVER_ID, &zones());
    small.max_frame = 1024;
    let (mut c, mut s) = connect(cfg(CLIENT_ID, &zones()), small);
    let big = (false, b"k".to_vec(), vec![0; 2000], 1, CLIENT_ID, 0);
    send(&mut c, 0, false, &[big], 4096);
    let e = pump(&mut c, &mut s, 1).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "frame too large: {} bytes, limit 1024",
            wire::records_frame_overhead(2) + wire::encoded_record_len(1, 2000)
        )
    );
}

#[test]
fn heartbeats_keep_an_idle_session_alive() {
    let (mut c, mut s) = pair();
    assert_eq!(c.heartbeat_interval_ms(), 1000);
    assert_eq!(c.next_timer(), 1000);
    let mut t = 0;
    while t < 20 * TIMEOUT {
        t += 50;
        c.poll_timers(t).unwrap();
        s.poll_timers(t).unwrap();
        assert!(pump(&mut c, &mut s, t).unwrap().is_empty());
        assert!(pump(&mut s, &mut c, t).unwrap().is_empty());
    }
    // about one heartbeat a second each way
    let hb = s.stats().frames_in;
    assert!((55..=62).contains(&hb), "{hb}");
    assert!((55..=62).contains(&c.stats().frames_in));

    // the server goes silent: the client gives up after the timeout
    let last = t;
    loop {
        t += 50;
        s.outgoing().clear();
        pump(&mut c, &mut s, t).unwrap();
        if let Err(e) = c.poll_timers(t) {
            assert_eq!(e, SessionError::Timeout);
            assert_eq!(e.to_string(), "timed out");
            break;
        }
        assert!(t < last + TIMEOUT + 100);
    }
    assert_eq!(t, last + TIMEOUT);
    assert!(c.is_closed());
    assert!(c.outgoing().is_empty() || frames(c.outgoing()) == ["HEARTBEAT"]);
}

#[test]
fn timers_without_io() {
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 10);
    // no heartbeat before the server has sent its hello
    assert_eq!(s.next_timer(), 10 + TIMEOUT);
    s.poll_timers(2000).unwrap();
    assert!(s.outgoing().is_empty());
    assert_eq!(s.poll_timers(10 + TIMEOUT), Err(SessionError::Timeout));

    let mut c = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    // hello still unwritten: no heartbeat on top
    c.poll_timers(1500).unwrap();
    assert_eq!(frames(c.outgoing()), ["HELLO 193"]);
    c.outgoing().clear();
    c.poll_timers(1600).unwrap();
    assert_eq!(frames(c.outgoing()), ["HEARTBEAT"]);
    assert_eq!(c.next_timer(), 2600);
    // received bytes push the timeout back
    let mut raw = Vec::new();
    wire::encode_hello(&mut raw, SERVER_ID, &[]);
    feed(&mut c, &raw, 2500).unwrap();
    assert_eq!(c.next_timer(), 2600);
    c.outgoing().clear();
    c.poll_timers(2600).unwrap();
    assert_eq!(c.next_timer(), 3600);
    assert!(c.poll_timers(2500 + TIMEOUT - 1).is_ok());
    assert_eq!(c.poll_timers(2500 + TIMEOUT), Err(SessionError::Timeout));
}

#[test]
fn hello_must_complete_within_the_timeout() {
    // a peer that trickles one byte at a time keeps the receive timeout
    // from firing, but not the hello deadline
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    let mut hello = Vec::new();
    wire::encode_hello(&mut hello, CLIENT_ID, &[]);
    let mut t = 0;
    for b in &hello[..hello.len() - 1] {
        t += TIMEOUT / 4;
        if t >= TIMEOUT {
            break;
        }
        feed(&mut s, std::slice::from_ref(b), t).unwrap();
        s.poll_timers(t).unwrap();
    }
    assert_eq!(s.next_timer(), TIMEOUT);
    assert_eq!(s.poll_timers(TIMEOUT), Err(SessionError::HelloTimeout));
    assert_eq!(SessionError::HelloTimeout.to_string(), "no hello in time");
    assert!(s.is_closed());
    assert!(s.outgoing().is_empty(), "no ERROR for a timeout");

    // a completed hello lifts the deadline
    let mut s = Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0);
    feed(&mut s, &hello, TIMEOUT - 1).unwrap();
    assert!(s.is_established());
    assert!(s.poll_timers(TIMEOUT + 10).is_ok());
}

#[test]
fn missing_acks_time_out() {
    let (mut c, mut s) = pair();
    assert_eq!(c.next_timer(), 1000);
    send(&mut c, 0, false, &[rec(1)], 4096);
    send(&mut c, 0, false, &[rec(2)], 4096);
    // the server reads both frames and keeps the link alive with
    // heartbeats, but its ACKs are lost
    let mut now = 0;
    while now < TIMEOUT - 100 {
        now += 100;
        pump(&mut c, &mut s, now).unwrap();
        s.poll_timers(now).unwrap();
        s.outgoing().clear();
        wire::encode_heartbeat(s.outgoing());
        pump(&mut s, &mut c, now).unwrap();
        c.poll_timers(now).unwrap();
    }
    assert_eq!(c.in_flight(), 2);
    assert_eq!(c.poll_timers(TIMEOUT), Err(SessionError::AckTimeout));
    assert_eq!(
        SessionError::AckTimeout.to_string(),
        "acknowledgement timed out"
    );

    // an ACK that leaves frames in flight restarts the wait; one that
    // covers everything ends it
    let (mut c, _s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    send(&mut c, 0, false, &[rec(2)], 4096);
    let mut bytes = Vec::new();
    wire::encode_ack(&mut bytes, 1);
    feed(&mut c, &bytes, 2000).unwrap();
    assert!(c.poll_timers(TIMEOUT + 100).is_ok());
    let mut hb = Vec::new();
    wire::encode_heartbeat(&mut hb);
    feed(&mut c, &hb, 4000).unwrap();
    assert_eq!(c.poll_timers(2000 + TIMEOUT), Err(SessionError::AckTimeout));
    let (mut c, _s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    let mut bytes = Vec::new();
    wire::encode_ack(&mut bytes, 1);
    wire::encode_heartbeat(&mut bytes);
    feed(&mut c, &bytes, 2000).unwrap();
    assert!(c.poll_timers(2000 + TIMEOUT - 1).is_ok());
    // only the receive timeout is left
    assert_eq!(c.poll_timers(2000 + TIMEOUT), Err(SessionError::Timeout));
}

#[test]
fn sending_counts_as_activity() {
    let (mut c, _s) = pair();
    c.poll_timers(900).unwrap();
    send(&mut c, 0, false, &[rec(1)], 4096);
    c.outgoing().clear();
    // the frame went out at 900: no heartbeat due at 1000
    c.poll_timers(1000).unwrap();
    assert!(c.outgoing().is_empty());
    assert_eq!(c.next_timer(), 1900);
}

#[test]
fn graceful_shutdown() {
    let (mut c, mut s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    pump(&mut c, &mut s, 1).unwrap();
    pump(&mut s, &mut c, 1).unwrap();
    assert_eq!(c.in_flight(), 0);
    c.close_with(ErrorCode::SHUTDOWN, "shutting down");
    assert!(c.is_closed());
    assert_eq!(
        pump(&mut c, &mut s, 2).unwrap(),
        [Ev::PeerError(5, "shutting down".into())]
    );
    assert!(s.is_closed());

    // a server closing acks what it has been handed first
    let (mut c, mut s) = pair();
    send(&mut c, 0, false, &[rec(1)], 4096);
    let bytes = std::mem::take(c.outgoing());
    s.receive(&bytes, 1);
    assert!(matches!(s.next_event(), Ok(Some(Event::Records { .. }))));
    s.close_with(ErrorCode::SHUTDOWN, "exiting");
    assert_eq!(frames(s.outgoing()), ["ACK 1", "ERROR 5 exiting"]);
    assert_eq!(
        pump(&mut s, &mut c, 2).unwrap(),
        [Ev::Ack(1), Ev::PeerError(5, "exiting".into())]
    );
}

#[test]
fn records_api_misuse() {
    let mut c = Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0);
    assert_eq!(
        c.begin_records(0, true, 4096).unwrap_err(),
        SessionError::InvalidState("hello not received")
    );
    assert!(c.finish_snapshot().is_err());
    let (mut c, mut s) = pair();
    assert_eq!(
        s.begin_records(0, true, 4096).unwrap_err().to_string(),
        "only the client sends records"
    );
    assert!(s.finish_snapshot().is_err());
    assert!(c.begin_records(5, true, 4096).is_err());
    assert!(c.begin_records(0, true, 10).is_err());
    // an empty frame is discarded and uses no seq
    let w = c.begin_records(0, true, 4096).unwrap();
    assert_eq!(w.seq(), 1);
    assert_eq!(w.finish(), None);
    assert!(c.outgoing().is_empty());
    // an unfinished frame is discarded
    let mut w = c.begin_records(0, true, 4096).unwrap();
    assert!(w.try_push(&as_ref(&rec(1))));
    assert_eq!(w.count(), 1);
    drop(w);
    assert!(c.outgoing().is_empty());
    assert_eq!(c.last_sent_seq(), 0);
    assert_eq!(c.finish_snapshot(), Ok(0));
    assert_eq!(
        c.finish_snapshot().unwrap_err(),
        SessionError::InvalidState("snapshot already finished")
    );
    assert!(c.begin_records(0, true, 4096).is_err());
    let w = c.begin_records(0, false, 4096).unwrap();
    assert_eq!(w.seq(), 1);
    drop(w);
    c.close_with(ErrorCode::SHUTDOWN, "");
    assert!(c.begin_records(0, false, 4096).is_err());
    // no errors leak into the stream from misuse
    assert_eq!(frames(c.outgoing()), ["SNAPSHOT_DONE 0", "ERROR 5 "]);
}

#[test]
fn config_validation() {
    let ok = cfg(1, &zones());
    assert_eq!(ok.validate(), Ok(()));
    assert_eq!(cfg(0, &[]).validate(), Err(ConfigError::ZeroNodeId));
    let long = "x".repeat(256);
    assert_eq!(
        cfg(1, &[("a", 1, 1), (&long, 1, 1)]).validate(),
        Err(ConfigError::ZoneName(1))
    );
    assert_eq!(
        cfg(1, &[("a", 1, 1), ("a", 2, 1)]).validate(),
        Err(ConfigError::DuplicateZone(1))
    );
    // a session from a bad config leaves the bad zones out of its hello
    let (c, s) = connect(
        cfg(
            CLIENT_ID,
            &[("", 1, 1), ("a", 1, 1), ("a", 1, 1), (&long, 1, 1)],
        ),
        cfg(SERVER_ID, &[("a", 1, 1)]),
    );
    assert_eq!(c.shared_zones(), [1]);
    assert_eq!(s.shared_zones(), [0]);
}

#[test]
fn zero_copy_receive_path() {
    let (mut c, mut s) = pair();
    let before = s.stats().bytes_in;
    send(&mut c, 0, false, &(0..30).map(rec).collect::<Vec<_>>(), 512);
    let bytes = std::mem::take(c.outgoing());
    let mut pos = 0;
    let mut n_frames = 0;
    while pos < bytes.len() {
        let buf = s.recv_buf();
        let n = buf.len().min(bytes.len() - pos).min(333);
        buf[..n].copy_from_slice(&bytes[pos..pos + n]);
        s.recv_commit(n, 1);
        pos += n;
        while let Some(e) = s.next_event().unwrap() {
            assert!(matches!(e, Event::Records { .. }));
            n_frames += 1;
        }
    }
    assert_eq!(n_frames, c.last_sent_seq());
    assert_eq!(s.stats().bytes_in - before, bytes.len() as u64);
}

proptest! {
    #[test]
    fn random_bytes_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..600),
        chunk in 1usize..64,
        established in any::<bool>(),
        client in any::<bool>(),
    ) {
        let (c, s) = if established {
            pair()
        } else {
            (
                Session::new(Role::Client, cfg(CLIENT_ID, &zones()), 0),
                Session::new(Role::Server, cfg(SERVER_ID, &zones()), 0),
            )
        };
        let mut x = if client { c } else { s };
        x.outgoing().clear();
        let _ = feed_chunked(&mut x, &data, chunk, 1);
        let _ = x.poll_timers(10);
        // whatever happened, what it sends is well-formed
        frames(x.outgoing());
    }

    #[test]
    fn valid_prefix_then_garbage(
        n in 1u64..20,
        garbage in proptest::collection::vec(any::<u8>(), 1..40),
    ) {
        let (mut c, mut s) = pair();
        let recs: Vec<Rec> = (0..n).map(rec).collect();
        send(&mut c, 0, true, &recs, 200);
        let mut bytes = std::mem::take(c.outgoing());
        bytes.extend_from_slice(&garbage);
        let mut got = 0;
        let _ = (|| -> Result<(), SessionError> {
            let mut pos = 0;
            while pos < bytes.len() {
                pos += s.receive(&bytes[pos..], 1);
                while let Some(e) = s.next_event()? {
                    if let Event::Records { frame, .. } = e {
                        got += frame.records().count();
                    }
                }
            }
            Ok(())
        })();
        prop_assert_eq!(got as u64, n);
        frames(s.outgoing());
    }
}

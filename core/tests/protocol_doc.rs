//! The worked examples in docs/PROTOCOL.md are produced by the encoder:
//! this test fails if the document and the code disagree.

use zone_sync_core::hlc;
use zone_sync_core::wire::{
    self, Frame, RecordRef, RecordsBuilder, ZoneDesc, ZoneResume, KIND_KEYVAL, RECORDS_SNAPSHOT,
};

const NODE: u64 = 0x0123_4567_89ab_cdef;

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(16)
        .map(|l| {
            l.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn hello() -> Vec<u8> {
    let mut out = Vec::new();
    wire::encode_hello_v(
        &mut out,
        2,
        NODE,
        &[ZoneDesc {
            name: b"kv",
            kind: KIND_KEYVAL,
            kind_version: 1,
        }],
        &[ZoneResume {
            epoch: 0x1111_2222_3333_4444,
            seen_epoch: 0x5555_6666_7777_8888,
            seen_seq: 1000,
        }],
    );
    out
}

fn records() -> Vec<u8> {
    let mut out = Vec::new();
    let mut b =
        RecordsBuilder::new(&mut out, 1, b"kv", KIND_KEYVAL, 1, RECORDS_SNAPSHOT, 4096).unwrap();
    let ts = hlc::from_wall(1_700_000_000_000) | 3;
    assert!(b.try_push(&RecordRef::put(b"user:42", b"blocked", ts, NODE, 60_000)));
    b.finish();
    out
}

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md")
}

#[test]
fn hello_example_matches_doc() {
    let h = hello();
    assert!(matches!(
        wire::split_frame(&h, 4096).unwrap().unwrap().0.decode(),
        Ok(Frame::Hello(_))
    ));
    let text = hex(&h);
    println!("HELLO ({} bytes):\n{text}", h.len());
    assert!(
        doc().contains(&text),
        "HELLO example in docs/PROTOCOL.md is stale:\n{text}"
    );
}

#[test]
fn records_example_matches_doc() {
    let r = records();
    assert!(matches!(
        wire::split_frame(&r, 4096).unwrap().unwrap().0.decode(),
        Ok(Frame::Records(_))
    ));
    let text = hex(&r);
    println!("RECORDS ({} bytes):\n{text}", r.len());
    assert!(
        doc().contains(&text),
        "RECORDS example in docs/PROTOCOL.md is stale:\n{text}"
    );
}

#[test]
fn small_frame_examples_match_doc() {
    let mut out = Vec::new();
    wire::encode_ack(&mut out, 1);
    wire::encode_heartbeat(&mut out);
    wire::encode_snapshot_done(&mut out, 1);
    wire::encode_error(&mut out, wire::ErrorCode::SHUTDOWN, "bye");
    let d = doc();
    let mut rest = &out[..];
    while let Some((f, n)) = wire::split_frame(rest, 4096).unwrap() {
        let text = hex(&rest[..n]);
        println!("{:#04x}: {text}", f.frame_type);
        assert!(
            d.contains(&text),
            "example {text} missing from docs/PROTOCOL.md"
        );
        rest = &rest[n..];
    }
}

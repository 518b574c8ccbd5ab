//! Any byte stream through the frame reader and decoders: no panic, no
//! frame over the limit, and a decoded RECORDS frame iterates cleanly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::wire::{Frame, FrameReader, MIN_FRAME_LIMIT};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut r = FrameReader::new(MIN_FRAME_LIMIT);
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + chunk).min(data.len());
        pos += r.push(&data[pos..end]);
        loop {
            match r.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.wire_len() <= MIN_FRAME_LIMIT);
                    if let Ok(Frame::Records(rf)) = f.decode() {
                        assert_eq!(
                            rf.records().filter(|x| x.is_ok()).count(),
                            rf.count as usize
                        );
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});

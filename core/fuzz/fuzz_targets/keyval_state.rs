//! Any bytes as a `type=ip` key, a lookup key and a state file: no panic;
//! a parsed ip key decodes back to itself and its text parses back to
//! it; a parsed state file written again parses to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zone_sync_core::keyval_key::IpKey;
use zone_sync_core::state_file::{self, Saved, Writer};

const NOW: u64 = 1_765_000_000_000;

fuzz_target!(|data: &[u8]| {
    if let Some(k) = IpKey::parse(data) {
        assert_eq!(IpKey::decode(k.as_bytes()), Some(k));
        assert_eq!(IpKey::parse(k.to_string().as_bytes()), Some(k));
    }
    let _ = IpKey::parse_lookup(data);
    let _ = IpKey::decode(data);

    if let Ok(records) = state_file::parse(data, NOW) {
        let mut w = Writer::new(NOW, true);
        for r in &records {
            w.record(&Saved {
                key: &r.key,
                value: &r.value,
                remaining_ms: r.ttl_ms,
                hlc: r.hlc,
                origin: r.origin,
            });
        }
        let again = state_file::parse(&w.finish(), NOW).expect("our own output parses");
        assert_eq!(again.len(), records.len());
    }
});

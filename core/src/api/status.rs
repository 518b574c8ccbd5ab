//! The read-only status objects: `/nginx` and `/stream/zone_sync/`.

use super::json::ObjectWriter;
use super::routes::Fields;
use super::{NginxInfo, ZoneSyncStatus};

/// `GET /nginx`, members in the order of the Plus definition `NginxObject`.
pub(crate) fn nginx(info: &NginxInfo, fields: &Fields) -> Vec<u8> {
    let mut body = Vec::with_capacity(256);
    let mut obj = ObjectWriter::new(&mut body);
    let strs: [(&[u8], &[u8]); 3] = [
        (b"version", info.version.as_bytes()),
        (b"build", info.build.as_bytes()),
        (b"address", info.address.as_bytes()),
    ];
    for (name, value) in strs {
        if fields.allows(name) {
            obj.str_member(name, value);
        }
    }
    if fields.allows(b"generation") {
        obj.u64_member(b"generation", info.generation);
    }
    if fields.allows(b"load_timestamp") {
        obj.str_member(
            b"load_timestamp",
            iso8601_ms(info.load_timestamp_ms).as_bytes(),
        );
    }
    if fields.allows(b"timestamp") {
        obj.str_member(b"timestamp", iso8601_ms(info.timestamp_ms).as_bytes());
    }
    if fields.allows(b"pid") {
        obj.u64_member(b"pid", info.pid);
    }
    if fields.allows(b"ppid") {
        obj.u64_member(b"ppid", info.ppid);
    }
    obj.finish();
    body
}

/// `GET /stream/zone_sync/`: `status` first, then `zones`, as Plus writes it.
pub(crate) fn zone_sync(st: &ZoneSyncStatus, fields: &Fields) -> Vec<u8> {
    let mut body = Vec::with_capacity(160 + 64 * st.zones.len());
    let mut obj = ObjectWriter::new(&mut body);
    if fields.allows(b"status") {
        let mut s = ObjectWriter::new(obj.member(b"status"));
        s.u64_member(b"bytes_in", st.bytes_in);
        s.u64_member(b"msgs_in", st.msgs_in);
        s.u64_member(b"msgs_out", st.msgs_out);
        s.u64_member(b"bytes_out", st.bytes_out);
        s.u64_member(b"nodes_online", st.nodes_online);
        s.finish();
    }
    if fields.allows(b"zones") {
        let mut zones = ObjectWriter::new(obj.member(b"zones"));
        for z in &st.zones {
            let mut zo = ObjectWriter::new(zones.member(&z.name));
            zo.u64_member(b"records_pending", z.records_pending);
            zo.u64_member(b"records_total", z.records_total);
            zo.finish();
        }
        zones.finish();
    }
    obj.finish();
    body
}

/// Milliseconds since the Unix epoch as ISO 8601 UTC with millisecond
/// resolution, the Plus format: `2022-06-28T11:15:44.467Z`.
pub fn iso8601_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    // u64 milliseconds are under 2.2e11 days: no i64 overflow.
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day),
/// after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

//! `keyval_zone ... state=file`: the zone's records kept in a JSON file
//! across restarts (core's `state_file` for the format).
//!
//! - Read when the zone is created (first start, restart, or a reload that
//!   makes a new zone), through the store's merge: newest version wins, a
//!   file without versions is the oldest data, peers' newer records win.
//! - Written atomically (a temporary file in the same directory, fsync,
//!   rename) by the master when it stops and on reload, and by worker 0
//!   [`SAVE_INTERVAL_MS`] after a change (up to [`SAVE_INTERVAL_MAX_MS`]
//!   for zones that take long to write).
//! - A file that cannot be read or parsed is reported at `error` with the
//!   position, moved aside (`<file>.bad-<unix time>`, never overwritten)
//!   and the zone starts empty. A directory the workers cannot write to is
//!   refused when the configuration is loaded (`nginx -t`) where nginx can
//!   tell; a failed write is logged once at `error` until one succeeds.

use core::ffi::CStr;
use core::ptr;
use core::sync::atomic::Ordering;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nginx_sys::{
    ngx_conf_t, ngx_core_conf_t, ngx_cycle_t, ngx_event_t, ngx_int_t, ngx_log_t, ngx_str_t,
    NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_NOTICE, NGX_OK,
};
use ngx::ngx_log_error;
use zone_sync_core::keyval_key::{self, KeyType};
use zone_sync_core::state_file::{self, Saved, Writer};

use super::zone::{self, KeyvalZone};
use crate::kinds::Record;
use crate::ngx_ext::{current_msec, str_bytes, wall_ms};

/// How long after a change worker 0 writes the file at most...
const SAVE_INTERVAL_MS: u64 = 1000;

/// ...unless writing takes long (a big zone): then worker 0 spends at most
/// a tenth of its time on it, waiting up to this long.
const SAVE_INTERVAL_MAX_MS: u64 = 5000;

/// `state=` of a zone.
#[repr(C)]
pub struct StateConf {
    /// Absolute and NUL-terminated; empty without `state=`.
    pub path: ngx_str_t,
    /// The cycle the zone belongs to (for the `user` directive).
    pub cycle: *mut ngx_cycle_t,
}

/// The `state=` path, made absolute against the prefix and
/// NUL-terminated, in the configuration pool.
///
/// # Safety
/// Called from a directive handler; `v` is part of its arguments.
pub unsafe fn conf_path(cf: *mut ngx_conf_t, v: &ngx_str_t) -> Option<ngx_str_t> {
    let mut name = *v;
    if nginx_sys::ngx_conf_full_name((*cf).cycle, &mut name, 0) != NGX_OK as ngx_int_t {
        return None;
    }
    let p = nginx_sys::ngx_pnalloc((*cf).pool, name.len + 1).cast::<u8>();
    if p.is_null() {
        return None;
    }
    ptr::copy_nonoverlapping(name.data, p, name.len);
    *p.add(name.len) = 0;
    Some(ngx_str_t {
        len: name.len,
        data: p,
    })
}

/// The keyval zone (http or stream) of the cycle being configured that
/// already writes to `path`, if any: two zones cannot share a file.
///
/// # Safety
/// Called from a directive handler.
pub unsafe fn used_by(cf: *mut ngx_conf_t, path: &ngx_str_t) -> Option<String> {
    let tags = [
        crate::keyval::http::module(),
        crate::keyval::stream::module(),
    ];
    let mut part: *const nginx_sys::ngx_list_part_t =
        ptr::addr_of!((*(*cf).cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<nginx_sys::ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let shm = elts.add(i);
            if (*shm).data.is_null() || !tags.iter().any(|t| (*shm).tag == t.cast_mut().cast()) {
                continue;
            }
            let z = &*(*shm).data.cast::<KeyvalZone>();
            if z.declared && str_bytes(&z.state.path) == str_bytes(path) && z.state.path.len != 0 {
                return Some(zone_name(z));
            }
        }
        part = (*part).next;
    }
    None
}

fn path_of(z: &KeyvalZone) -> Option<&Path> {
    if z.state.path.len == 0 {
        return None;
    }
    // SAFETY: a configuration string, alive as long as the cycle.
    let b = unsafe { str_bytes(&z.state.path) };
    Some(Path::new(std::ffi::OsStr::from_bytes(b)))
}

fn zone_name(z: &KeyvalZone) -> String {
    String::from_utf8_lossy(z.name()).into_owned()
}

/// From the zone's init in the master (and `nginx -t`): checks the
/// directory, then saves what a previous configuration's zone of the same
/// name holds (reload) and loads the file into a new zone. False (logged)
/// when the directory cannot be written.
///
/// # Safety
/// Called from the shared zone's init callback, after the store is set;
/// `reused` when the zone survived a reload.
pub unsafe fn zone_init(z: &KeyvalZone, reused: bool, log: *mut ngx_log_t) -> bool {
    let Some(path) = path_of(z) else {
        return true;
    };
    if let Err(why) = check_dir(z.state.cycle, path) {
        ngx_log_error!(
            NGX_LOG_EMERG,
            log,
            "keyval zone \"{}\": state file \"{}\" cannot be written: {}",
            zone_name(z),
            path.display(),
            why
        );
        return false;
    }
    if nginx_sys::ngx_test_config != 0 {
        return true;
    }
    if reused {
        // A reload: the zone and its records carry on; write them now (to
        // the file this configuration names).
        save(z, log);
        return true;
    }
    // A reload that made a new zone (another size): save the old one first.
    let tag = (*z.shm).tag;
    if let Some(prev) = zone::find(crate::ngx_ext::cycle(), tag, z.name()) {
        if path_of(prev) == Some(path) {
            save(prev, log);
        }
    }
    load(z, path, log);
    true
}

/// Reads the file into the zone's store.
fn load(z: &KeyvalZone, path: &Path, log: *mut ngx_log_t) {
    let Some(store) = z.store() else { return };
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            move_aside(z, path, &format!("could not be read: {e}"), log);
            return;
        }
    };
    let (now, wall) = (current_msec(), wall_ms());
    let records = match state_file::parse(&data, wall) {
        Ok(r) => r,
        Err(e) => {
            move_aside(z, path, &format!("is invalid: {e}"), log);
            return;
        }
    };
    let ty = z.ty;
    let (mut loaded, mut bad_keys, mut no_room) = (0u64, 0u64, 0u64);
    for r in &records {
        let Some(key) = keyval_key::stored_key(ty, &r.key) else {
            bad_keys += 1;
            continue;
        };
        let ttl = r.ttl_ms.min(u64::from(u32::MAX)) as u32;
        // A record without a version is the oldest data (hlc 0); this
        // node's id breaks ties between nodes that loaded the same key
        // from such files, so that they still agree on one value.
        let origin = if r.hlc == 0 && r.origin == 0 {
            crate::node_id()
        } else {
            r.origin
        };
        let rec = Record::put(&key, &r.value, r.hlc, origin, ttl);
        match store.load(&rec, now, wall) {
            Ok(_) => loaded += 1,
            Err(_) => no_room += 1,
        }
    }
    if bad_keys > 0 {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "keyval zone \"{}\": {} records of state file \"{}\" skipped: keys not valid for type={}",
            zone_name(z),
            bad_keys,
            path.display(),
            ty.name()
        );
    }
    if no_room > 0 {
        ngx_log_error!(
            NGX_LOG_ERR,
            log,
            "keyval zone \"{}\": {} records of state file \"{}\" not loaded: zone is too small",
            zone_name(z),
            no_room,
            path.display()
        );
    }
    if bad_keys == 0 && no_room == 0 {
        // The file holds what the zone holds: nothing to write yet.
        if let Some(idx) = store.index {
            idx.set_saved(idx.generations().0);
        }
    }
    ngx_log_error!(
        NGX_LOG_NOTICE,
        log,
        "keyval zone \"{}\": {} records loaded from state file \"{}\"",
        zone_name(z),
        loaded,
        path.display()
    );
}

/// Renames a bad file to `<file>.bad-<unix time>[.N]` (never replacing
/// anything) and says so.
fn move_aside(z: &KeyvalZone, path: &Path, why: &str, log: *mut ngx_log_t) {
    let base = format!("{}.bad-{}", path.display(), wall_ms() / 1000);
    let mut kept = None;
    for n in 0..100 {
        let target = if n == 0 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}.{n}"))
        };
        // A hard link fails rather than replace an existing file.
        match std::fs::hard_link(path, &target) {
            Ok(()) => {
                let _ = std::fs::remove_file(path);
                kept = Some(target);
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(_) => break,
        }
    }
    let aside = match &kept {
        Some(t) => format!("moved to \"{}\"", t.display()),
        None => "could not be moved aside".to_owned(),
    };
    ngx_log_error!(
        NGX_LOG_ERR,
        log,
        "keyval zone \"{}\": state file \"{}\" {}; the zone starts empty, the file was {}",
        zone_name(z),
        path.display(),
        why,
        aside
    );
}

/// Writes the zone's live records to its file, atomically. Logs the first
/// failure at `error` and stays quiet until a write succeeds.
pub fn save(z: &KeyvalZone, log: *mut ngx_log_t) {
    let (Some(path), Some(store)) = (path_of(z), z.store()) else {
        return;
    };
    // zone_init gives every zone with a state file an index.
    let Some(idx) = store.index else { return };
    let (generation, _) = idx.generations();
    let ty = z.ty;
    let (now, wall) = (current_msec(), wall_ms());
    let mut w = Writer::new(wall, z.sync);
    // Copied out a batch at a time, with the lock released in between.
    store.for_each_versioned(now, |key, value, remaining_ms, hlc, origin| {
        let text;
        let key: &[u8] = if ty == KeyType::Ip {
            text = keyval_key::display_key(ty, key);
            &text
        } else {
            key
        };
        w.record(&Saved {
            key,
            value,
            remaining_ms,
            hlc,
            origin,
        });
    });
    match write_atomically(path, &w.finish()) {
        Ok(()) => {
            idx.set_saved(generation);
            idx.save_failed.store(false, Ordering::Relaxed);
        }
        Err(e) => {
            if !idx.save_failed.swap(true, Ordering::Relaxed) {
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "keyval zone \"{}\": could not write state file \"{}\": {}",
                    zone_name(z),
                    path.display(),
                    e
                );
            }
        }
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether the workers can create files in the directory of `path`: exact
/// when nginx does not run as root (the workers are the same user); as
/// root, by the directory's owner, group and mode against the `user`
/// directive's user and groups (ACLs are not consulted).
unsafe fn check_dir(cycle: *const ngx_cycle_t, path: &Path) -> Result<(), String> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta =
        std::fs::metadata(dir).map_err(|e| format!("directory \"{}\": {e}", dir.display()))?;
    if !meta.is_dir() {
        return Err(format!("\"{}\" is not a directory", dir.display()));
    }
    let cdir = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    if libc::geteuid() != 0 {
        if libc::access(cdir.as_ptr(), libc::W_OK | libc::X_OK) != 0 {
            return Err(format!(
                "directory \"{}\": {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        return Ok(());
    }
    // init_zone runs after the core module's init_conf: the user is final.
    let ccf = core_conf(cycle);
    if ccf.is_null() || (*ccf).user == 0 || (*ccf).user == nginx_sys::NGX_CONF_UNSET as _ {
        return Ok(());
    }
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) = ((*ccf).user, (*ccf).group);
    let mode = meta.mode();
    let ok = if meta.uid() == uid {
        mode & 0o300 == 0o300
    } else if in_group(ccf, gid, meta.gid()) {
        mode & 0o030 == 0o030
    } else {
        mode & 0o003 == 0o003
    };
    if ok {
        return Ok(());
    }
    let user = if (*ccf).username.is_null() {
        uid.to_string()
    } else {
        CStr::from_ptr((*ccf).username)
            .to_string_lossy()
            .into_owned()
    };
    Err(format!(
        "directory \"{}\" is not writable by user \"{user}\"",
        dir.display()
    ))
}

/// Whether the `user` directive's user is in group `g` (primary or
/// supplementary).
unsafe fn in_group(ccf: *const ngx_core_conf_t, primary: libc::gid_t, g: libc::gid_t) -> bool {
    if primary == g {
        return true;
    }
    if (*ccf).username.is_null() {
        return false;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    let mut n = groups.len() as libc::c_int;
    if libc::getgrouplist((*ccf).username, primary, groups.as_mut_ptr(), &mut n) < 0 {
        return false;
    }
    groups[..n.max(0) as usize].contains(&g)
}

/// The core module's configuration of `cycle`.
unsafe fn core_conf(cycle: *const ngx_cycle_t) -> *const ngx_core_conf_t {
    let idx = (*ptr::addr_of!(nginx_sys::ngx_core_module)).index;
    (*(*cycle).conf_ctx.add(idx)).cast()
}

/// Zones of this cycle with a state file (http and stream).
unsafe fn zones_with_state(cycle: *const ngx_cycle_t) -> Vec<&'static KeyvalZone> {
    let mut out = Vec::new();
    for m in [
        crate::keyval::http::module(),
        crate::keyval::stream::module(),
    ] {
        out.extend(
            zone::zones_of(cycle, m.cast_mut().cast())
                .into_iter()
                .filter(|z| z.state.path.len != 0),
        );
    }
    out
}

/// init_process: worker 0 starts the periodic writer when a zone has a
/// state file.
///
/// # Safety
/// Called from init_process with the running cycle.
pub unsafe fn init_process(cycle: *mut ngx_cycle_t) {
    if !crate::ngx_ext::is_worker_zero() || zones_with_state(cycle).is_empty() {
        return;
    }
    let ev = nginx_sys::ngx_pcalloc((*cycle).pool, core::mem::size_of::<ngx_event_t>())
        .cast::<ngx_event_t>();
    if ev.is_null() {
        return;
    }
    (*ev).handler = Some(on_timer);
    (*ev).log = (*cycle).log;
    (*ev).data = cycle.cast();
    (*ev).set_cancelable(1);
    nginx_sys::ngx_add_timer(ev, SAVE_INTERVAL_MS as _);
}

unsafe extern "C" fn on_timer(ev: *mut ngx_event_t) {
    if crate::ngx_ext::exiting() {
        // The master writes the file at stop and reload.
        return;
    }
    let cycle = (*ev).data.cast::<ngx_cycle_t>();
    let started = std::time::Instant::now();
    for z in zones_with_state(cycle) {
        let Some(store) = z.store() else { continue };
        let Some(idx) = store.index else { continue };
        let (generation, saved) = idx.generations();
        if generation != saved {
            save(z, (*ev).log);
        }
    }
    let spent = started.elapsed().as_millis() as u64;
    let next = (spent * 10).clamp(SAVE_INTERVAL_MS, SAVE_INTERVAL_MAX_MS);
    nginx_sys::ngx_add_timer(ev, next as _);
}

/// exit_master: the last write, once every worker has gone.
///
/// # Safety
/// Called from exit_master with the running cycle.
pub unsafe fn exit_master(cycle: *mut ngx_cycle_t) {
    for z in zones_with_state(cycle) {
        save(z, (*cycle).log);
    }
}

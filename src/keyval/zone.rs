//! A keyval zone as configured (`keyval_zone`), shared by the http and the
//! stream keyval modules: parameter parsing, the shared-zone lifecycle,
//! local writes with their logging, and the [`SyncZone`] view the engine
//! uses.

use core::ffi::c_void;
use core::{mem, ptr};

use nginx_sys::{
    ngx_conf_t, ngx_cycle_t, ngx_int_t, ngx_list_part_t, ngx_log_t, ngx_parse_size, ngx_parse_time,
    ngx_pcalloc, ngx_shared_memory_add, ngx_shm_zone_t, ngx_str_t, ngx_uint_t, NGX_ERROR,
    NGX_LOG_EMERG, NGX_LOG_ERR, NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_log_error};

use zone_sync_core::keyval_key::KeyType;
use zone_sync_core::table::kv::Kv;
use zone_sync_core::table::Table;

use super::state::{self, StateConf};

use super::store::{ApiWriteError, Store, StoreError};
use crate::kinds::{ApplyError, Record};
use crate::ngx_ext::{conf_args, current_msec, str_bytes, wall_ms};
use crate::shm::zone::{Applied, Out, Visit, ZoneKind};
use crate::shm::Shm;

/// The wire kind of keyval zones (docs/PROTOCOL.md).
pub const KIND: u8 = 1;
pub const KIND_VERSION: u16 = 1;

/// One keyval zone, in the configuration pool; `shm_zone->data` points
/// here.
#[repr(C)]
pub struct KeyvalZone {
    pub shm: *mut ngx_shm_zone_t,
    pub name: ngx_str_t,
    /// "http" or "stream", for messages.
    pub what: &'static str,
    pub timeout: u64,
    pub sync: bool,
    /// Set by `keyval_zone`; a zone only referenced by `keyval` is not.
    pub declared: bool,
    /// Where it was first referenced, for "unknown zone" messages.
    pub file: ngx_str_t,
    pub line: ngx_uint_t,
    /// Set when the shared zone is initialised.
    pub store: Option<Store>,
    /// `type=` (index.rs).
    pub ty: KeyType,
    /// `state=` (state.rs).
    pub state: StateConf,
}

impl KeyvalZone {
    pub fn name(&self) -> &[u8] {
        // SAFETY: a configuration string, alive as long as the cycle.
        unsafe { str_bytes(&self.name) }
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// A local write, logged on failure. Wakes the sync engine when the
    /// zone's change queue was empty.
    pub fn set(
        &self,
        log: *mut ngx_log_t,
        key: &[u8],
        value: &[u8],
        expire: Option<u64>,
    ) -> Result<(), StoreError> {
        let Some(store) = self.store() else {
            return Err(StoreError::NoMemory);
        };
        let now = current_msec();
        match store.set(key, value, expire, now, wall_ms(), crate::node_id()) {
            Ok(out) => {
                self.log_evictions(log, out.evicted, now);
                if out.wake {
                    crate::kinds::wake();
                }
                Ok(())
            }
            Err(e) => {
                let why = match e {
                    StoreError::TooLarge => "record is larger than a \"zone_sync_buffers\" buffer",
                    StoreError::NoMemory => "zone is too small for the record",
                };
                ngx_log_error!(
                    NGX_LOG_ERR,
                    log,
                    "keyval zone \"{}\": could not store key \"{}\": {}",
                    String::from_utf8_lossy(self.name()),
                    String::from_utf8_lossy(&key[..key.len().min(64)]),
                    why
                );
                Err(e)
            }
        }
    }

    /// A local delete; true if the key was there.
    pub fn delete(&self, key: &[u8]) -> bool {
        let Some(store) = self.store() else {
            return false;
        };
        let found = store.delete(key, current_msec(), wall_ms(), crate::node_id());
        if found && self.sync {
            crate::kinds::wake();
        }
        found
    }

    /// An API `POST` ([`Store::insert_new`]); wakes the sync engine.
    pub fn insert_new(
        &self,
        log: *mut ngx_log_t,
        entries: &[(&[u8], &[u8], Option<u64>)],
        only_if_empty: bool,
    ) -> Result<(), ApiWriteError> {
        let store = self.store().ok_or(StoreError::NoMemory)?;
        let now = current_msec();
        let out = store.insert_new(entries, only_if_empty, now, wall_ms(), crate::node_id())?;
        self.written(log, now, out.evicted);
        Ok(())
    }

    /// An API `PATCH` of a value and/or expiry ([`Store::update`]); wakes
    /// the sync engine.
    pub fn update(
        &self,
        log: *mut ngx_log_t,
        key: &[u8],
        value: Option<&[u8]>,
        expire_ms: Option<u64>,
    ) -> Result<(), ApiWriteError> {
        let store = self.store().ok_or(StoreError::NoMemory)?;
        let now = current_msec();
        let out = store.update(key, value, expire_ms, now, wall_ms(), crate::node_id())?;
        self.written(log, now, out.evicted);
        Ok(())
    }

    /// After a successful local write: log evictions, wake the engine.
    fn written(&self, log: *mut ngx_log_t, now: u64, evicted: u64) {
        self.log_evictions(log, evicted, now);
        if self.sync {
            crate::kinds::wake();
        }
    }

    /// Deletes every record.
    pub fn clear(&self) {
        if let Some(store) = self.store() {
            store.clear(current_msec(), wall_ms(), crate::node_id());
            if self.sync {
                crate::kinds::wake();
            }
        }
    }
}

/// Finds or creates the zone `name` of module `tag` (`keyval` may name a
/// zone declared further down the file).
///
/// # Safety
/// `cf` is the configuration being parsed; `tag` the owning module.
pub unsafe fn reference(
    cf: *mut ngx_conf_t,
    name: &ngx_str_t,
    size: usize,
    tag: *mut c_void,
    what: &'static str,
) -> Option<*mut KeyvalZone> {
    let mut n = *name;
    let shm = ngx_shared_memory_add(cf, &mut n, size, tag);
    if shm.is_null() {
        return None;
    }
    if (*shm).data.is_null() {
        let z = ngx_pcalloc((*cf).pool, mem::size_of::<KeyvalZone>()).cast::<KeyvalZone>();
        if z.is_null() {
            return None;
        }
        z.write(KeyvalZone {
            shm,
            name: *name,
            what,
            timeout: 0,
            sync: false,
            declared: false,
            file: (*(*cf).conf_file).file.name,
            line: (*(*cf).conf_file).line,
            store: None,
            ty: KeyType::String,
            state: StateConf {
                path: ngx_str_t {
                    len: 0,
                    data: ptr::null_mut(),
                },
                cycle: (*cf).cycle,
            },
        });
        (*shm).data = z.cast();
        (*shm).init = Some(init_zone);
    }
    Some((*shm).data.cast())
}

/// `keyval_zone zone=name:size [state=file] [timeout=time]
/// [type=string|ip|prefix] [sync];`
///
/// # Safety
/// Called from a directive handler with the owning module's tag.
#[allow(clippy::result_unit_err)] // the error is logged already
pub unsafe fn parse_keyval_zone(
    cf: *mut ngx_conf_t,
    tag: *mut c_void,
    what: &'static str,
) -> Result<(), ()> {
    let args = &conf_args(cf)[1..];
    let mut name: Option<ngx_str_t> = None;
    let mut size: usize = 0;
    let mut timeout: u64 = 0;
    let mut sync = false;
    let mut ty = KeyType::String;
    let mut state_path: Option<ngx_str_t> = None;

    for a in args {
        let arg = str_bytes(a);
        if let Some(v) = arg.strip_prefix(b"zone=") {
            if name.is_some() {
                emerg(
                    cf,
                    format_args!(
                        "duplicate parameter \"{}\" in \"keyval_zone\" directive",
                        lossy(arg)
                    ),
                );
                return Err(());
            }
            let Some(colon) = v.iter().rposition(|&c| c == b':') else {
                emerg(
                    cf,
                    format_args!(
                        "invalid zone size \"{}\" in \"keyval_zone\" directive",
                        lossy(arg)
                    ),
                );
                return Err(());
            };
            if colon == 0 {
                emerg(
                    cf,
                    format_args!(
                        "invalid zone name \"{}\" in \"keyval_zone\" directive",
                        lossy(arg)
                    ),
                );
                return Err(());
            }
            let mut sz = ngx_str_t {
                len: v.len() - colon - 1,
                data: a.data.add(5 + colon + 1),
            };
            let parsed = ngx_parse_size(&mut sz);
            if parsed == NGX_ERROR as isize || parsed <= 0 {
                emerg(
                    cf,
                    format_args!(
                        "invalid zone size \"{}\" in \"keyval_zone\" directive",
                        lossy(arg)
                    ),
                );
                return Err(());
            }
            let min = 8 * nginx_sys::ngx_pagesize;
            if (parsed as usize) < min {
                emerg(
                    cf,
                    format_args!("zone \"{}\" is too small", lossy(&v[..colon])),
                );
                return Err(());
            }
            size = parsed as usize;
            name = Some(ngx_str_t {
                len: colon,
                data: a.data.add(5),
            });
        } else if let Some(v) = arg.strip_prefix(b"timeout=") {
            let mut s = ngx_str_t {
                len: v.len(),
                data: a.data.add(8),
            };
            let t = ngx_parse_time(&mut s, 0);
            if t == NGX_ERROR as isize || t <= 0 {
                emerg(
                    cf,
                    format_args!(
                        "invalid timeout \"{}\" in \"keyval_zone\" directive",
                        lossy(v)
                    ),
                );
                return Err(());
            }
            timeout = t as u64;
        } else if let Some(v) = arg.strip_prefix(b"type=") {
            let Some(t) = KeyType::parse(v) else {
                emerg(
                    cf,
                    format_args!("invalid type \"{}\" in \"keyval_zone\" directive", lossy(v)),
                );
                return Err(());
            };
            ty = t;
        } else if let Some(v) = arg.strip_prefix(b"state=") {
            if v.is_empty() || state_path.is_some() {
                let what = if v.is_empty() { "invalid" } else { "duplicate" };
                emerg(
                    cf,
                    format_args!(
                        "{what} parameter \"{}\" in \"keyval_zone\" directive",
                        lossy(arg)
                    ),
                );
                return Err(());
            }
            let s = ngx_str_t {
                len: v.len(),
                data: a.data.add(6),
            };
            let path = state::conf_path(cf, &s).ok_or(())?;
            if let Some(other) = state::used_by(cf, &path) {
                emerg(
                    cf,
                    format_args!(
                        "state file \"{}\" is already used by keyval zone \"{other}\"",
                        lossy(str_bytes(&path))
                    ),
                );
                return Err(());
            }
            state_path = Some(path);
        } else if arg == b"sync" {
            sync = true;
        } else {
            emerg(
                cf,
                format_args!(
                    "invalid parameter \"{}\" in \"keyval_zone\" directive",
                    lossy(arg)
                ),
            );
            return Err(());
        }
    }

    let Some(name) = name else {
        emerg(
            cf,
            format_args!("\"keyval_zone\" must have \"zone\" parameter"),
        );
        return Err(());
    };
    let z = reference(cf, &name, size, tag, what).ok_or(())?;
    if (*z).declared {
        emerg(
            cf,
            format_args!("duplicate zone \"{}\"", lossy(str_bytes(&name))),
        );
        return Err(());
    }
    (*z).declared = true;
    (*z).timeout = timeout;
    (*z).sync = sync;
    (*z).ty = ty;
    if let Some(p) = state_path {
        (*z).state.path = p;
    }
    Ok(())
}

/// Refuses zones that `keyval` named but no `keyval_zone` declared.
///
/// # Safety
/// `cf` is the configuration being parsed; `tag` the owning module.
#[allow(clippy::result_unit_err)] // the error is logged already
pub unsafe fn check_declared(cf: *mut ngx_conf_t, tag: *mut c_void) -> Result<(), ()> {
    let mut part = ptr::addr_of!((*(*cf).cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let shm = elts.add(i);
            if (*shm).tag != tag || (*shm).data.is_null() {
                continue;
            }
            let z = &*(*shm).data.cast::<KeyvalZone>();
            if !z.declared {
                nginx_sys::ngx_log_error_core(
                    NGX_LOG_EMERG as ngx_uint_t,
                    (*cf).log,
                    0,
                    c"unknown keyval zone \"%V\" in %V:%ui".as_ptr(),
                    &z.name,
                    &z.file,
                    z.line,
                );
                return Err(());
            }
        }
        part = (*part).next;
    }
    Ok(())
}

/// The declared, initialised keyval zones of module `tag` in `cycle`, in
/// the order they were first referenced.
///
/// # Safety
/// `cycle` is the running cycle; the references live as long as it.
pub unsafe fn zones_of(cycle: *const ngx_cycle_t, tag: *mut c_void) -> Vec<&'static KeyvalZone> {
    let mut out = Vec::new();
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let shm = elts.add(i);
            if (*shm).tag != tag || (*shm).data.is_null() {
                continue;
            }
            let z = &*(*shm).data.cast::<KeyvalZone>();
            if z.declared && z.store.is_some() {
                out.push(z);
            }
        }
        part = (*part).next;
    }
    out
}

/// The keyval zone `name` of module `tag` in `cycle`.
///
/// # Safety
/// As for [`zones_of`].
pub unsafe fn find(
    cycle: *const ngx_cycle_t,
    tag: *mut c_void,
    name: &[u8],
) -> Option<&'static KeyvalZone> {
    zones_of(cycle, tag).into_iter().find(|z| z.name() == name)
}

/// Shared-zone init: a new zone gets an empty table; a zone that survived
/// a reload keeps its records.
unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    let z = &mut *(*shm).data.cast::<KeyvalZone>();
    let name = core::slice::from_raw_parts(z.name.data, z.name.len);
    let Some(mut table) = Shm::init(shm, old, "keyval", name, z.sync) else {
        return NGX_ERROR as ngx_int_t;
    };
    let ty = z.ty;
    // The index of a zone that survived a reload carries on with it.
    let mut index = if old.is_null() {
        None
    } else {
        (*old.cast::<KeyvalZone>())
            .store
            .as_ref()
            .and_then(|s| s.index)
    };
    let was = index.map_or(KeyType::String, |i| i.key_type());
    if !old.is_null() && was != ty {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*shm).shm.log,
            "keyval zone \"{}\" has type={} and cannot change to type={} on reload",
            lossy(z.name()),
            was.name(),
            ty.name()
        );
        return NGX_ERROR as ngx_int_t;
    }
    if index.is_none() && (ty != KeyType::String || z.state.path.len != 0) {
        // A new zone, or a string zone that gains a state file: its table
        // holds no typed key yet, so an empty index agrees with it.
        let p = super::index::alloc(crate::shm::slab_pool(shm), ty);
        if p.is_null() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*shm).shm.log,
                "keyval zone \"{}\" is too small for type={}",
                lossy(z.name()),
                ty.name()
            );
            return NGX_ERROR as ngx_int_t;
        }
        index = Some(&*p);
    }
    if let Some(i) = index {
        table.observe(i);
    }
    z.store = Some(Store {
        shm: table,
        timeout: z.timeout,
        index,
    });
    if !state::zone_init(z, !old.is_null(), (*shm).shm.log) {
        return NGX_ERROR as ngx_int_t;
    }
    NGX_OK as ngx_int_t
}

impl ZoneKind for KeyvalZone {
    const KIND: u8 = KIND;
    const KIND_VERSION: u16 = KIND_VERSION;
    const WHAT: &'static str = "keyval";
    const EVICTS: &'static str = "least recently written records";

    fn name(&self) -> &[u8] {
        KeyvalZone::name(self)
    }
    fn shm(&self) -> Option<&Shm> {
        self.store().map(|s| &s.shm)
    }
    fn emit_change(&self, v: &Visit<'_, '_>, out: Out<'_>) -> bool {
        out(&Kv::record(v.t, v.r, v.now))
    }
    fn emit_snapshot(&self, v: &Visit<'_, '_>, _sub: &mut u64, out: Out<'_>) -> bool {
        v.t.is_expired(v.r, v.now) || out(&Kv::record(v.t, v.r, v.now))
    }
    fn apply_locked(&self, t: &mut Table<'_>, rec: &Record<'_>, now: u64, wall: u64) -> Applied {
        let Some(s) = self.store() else {
            return Err(ApplyError::NoMemory);
        };
        if !self.ty.valid_stored(rec.key) {
            return Err(ApplyError::Invalid);
        }
        match s.apply_locked(t, rec, now, wall) {
            Ok(changed) => Ok((changed, 0)),
            Err(StoreError::TooLarge) => Err(ApplyError::Invalid),
            Err(StoreError::NoMemory) => Err(ApplyError::NoMemory),
        }
    }
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn emerg(cf: *mut ngx_conf_t, args: core::fmt::Arguments<'_>) {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", args);
}

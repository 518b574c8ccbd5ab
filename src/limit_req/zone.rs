//! A `sync_limit_req_zone` as configured: its key, rate and `sync` flag,
//! the shared-zone lifecycle, and the [`SyncZone`] view the engine uses.

use core::ffi::c_void;

use nginx_sys::{
    ngx_http_complex_value_t, ngx_int_t, ngx_shm_zone_t, NGX_ERROR, NGX_LOG_EMERG, NGX_OK,
};
use ngx::ngx_log_error;
use zone_sync_core::table::Table;
use zone_sync_core::wire::limit_req::VALUE_LEN;

use super::store::{ApplyError as StoreApplyError, Store};
use crate::kinds::{ApplyError, Record};
use crate::ngx_ext::str_bytes;
use crate::shm::zone::{Applied, Out, Visit, ZoneKind};
use crate::shm::Shm;

/// The wire kind of limit_req zones (docs/PROTOCOL.md).
pub const KIND: u8 = zone_sync_core::wire::KIND_LIMIT_REQ;
pub const KIND_VERSION: u16 = 2;

/// One zone, in the configuration pool; `shm_zone->data` points here.
#[repr(C)]
pub struct LimitZone {
    pub shm: *mut ngx_shm_zone_t,
    /// The key, as `sync_limit_req_zone` compiled it.
    pub key: ngx_http_complex_value_t,
    /// Thousandths of a request per second.
    pub rate: u64,
    /// The largest `burst` of the `sync_limit_req`s using the zone.
    pub max_burst: u64,
    pub sync: bool,
    /// Set when the shared zone is initialised.
    pub store: Option<Store>,
    /// This node's outcomes, in the zone's shared memory (null until the
    /// zone is initialised, or if it had no room for them).
    pub counters: *const super::counters::Counters,
}

impl LimitZone {
    pub fn name(&self) -> &[u8] {
        // SAFETY: the zone's name lives in the configuration pool as long as
        // the cycle.
        unsafe { str_bytes(&(*self.shm).shm.name) }
    }

    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    pub fn counters(&self) -> Option<&super::counters::Counters> {
        // SAFETY: null or allocated in the zone, which outlives the cycle.
        unsafe { self.counters.as_ref() }
    }

    fn key_text(&self) -> &[u8] {
        // SAFETY: a configuration string.
        unsafe { str_bytes(&self.key.value) }
    }

    /// Logs evictions (at most once a second per zone).
    pub fn log_evictions(&self, log: *mut nginx_sys::ngx_log_t, evicted: u64, now: u64) {
        ZoneKind::log_evictions(self, log, evicted, now);
    }
}

/// Shared-zone init: a new zone gets an empty store; a zone that survived
/// a reload keeps its keys, unless the key changed (as limit_req refuses).
///
/// # Safety
/// Called by nginx with a zone of this module.
pub unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    let z = &mut *(*shm).data.cast::<LimitZone>();
    if !old.is_null() {
        let o = &*old.cast::<LimitZone>();
        if z.key_text() != o.key_text() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*shm).shm.log,
                "sync_limit_req \"{}\" uses the \"{}\" key while previously it used the \"{}\" key",
                String::from_utf8_lossy(z.name()),
                String::from_utf8_lossy(z.key_text()),
                String::from_utf8_lossy(o.key_text())
            );
            return NGX_ERROR as ngx_int_t;
        }
        if z.sync != o.sync {
            // A synced zone's keys carry peers' shares and versions, and
            // its changes are queued for the peers: neither fits the other.
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*shm).shm.log,
                "sync_limit_req \"{}\" cannot change \"sync\" across a reload",
                String::from_utf8_lossy(z.name())
            );
            return NGX_ERROR as ngx_int_t;
        }
        z.counters = o.counters;
    }
    let name = core::slice::from_raw_parts((*shm).shm.name.data, (*shm).shm.name.len);
    let Some(table) = Shm::init(shm, old, "sync_limit_req", name, z.sync) else {
        return NGX_ERROR as ngx_int_t;
    };
    if z.counters.is_null() {
        z.counters = super::counters::alloc(crate::shm::slab_pool(shm));
    }
    z.store = Some(Store {
        shm: table,
        rate: z.rate,
        share_cap: zone_sync_core::rate::share_cap(z.max_burst, z.rate),
    });
    NGX_OK as ngx_int_t
}

impl ZoneKind for LimitZone {
    const KIND: u8 = KIND;
    const KIND_VERSION: u16 = KIND_VERSION;
    const WHAT: &'static str = "sync_limit_req";
    const EVICTS: &'static str = "least recently used keys";

    fn name(&self) -> &[u8] {
        LimitZone::name(self)
    }
    fn shm(&self) -> Option<&Shm> {
        self.store().map(|s| &s.shm)
    }
    fn emit_change(&self, v: &Visit<'_, '_>, out: Out<'_>) -> bool {
        let Some(s) = self.store() else { return true };
        let mut buf = [0u8; VALUE_LEN];
        out(&s.own_record(v, &mut buf))
    }
    fn emit_snapshot(&self, v: &Visit<'_, '_>, sub: &mut u64, out: Out<'_>) -> bool {
        self.store().is_none_or(|s| s.snapshot_record(v, sub, out))
    }
    fn apply_locked(&self, t: &mut Table<'_>, rec: &Record<'_>, now: u64, wall: u64) -> Applied {
        let Some(s) = self.store() else {
            return Err(ApplyError::NoMemory);
        };
        s.apply_locked(t, rec, now, wall).map_err(|e| match e {
            StoreApplyError::Invalid => ApplyError::Invalid,
            StoreApplyError::NoMemory => ApplyError::NoMemory,
        })
    }
}

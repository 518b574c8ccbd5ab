//! The session zone of `sticky learn`: session id -> server identity
//! (`<configured name> <address>`), a kind of zone on the shared-memory
//! table ([`crate::shm`]) with the versioned-record rules of
//! [`zone_sync_core::table::kv`]: a learned or refreshed session is a
//! write that lives for the zone's `timeout`, newest version wins, and a
//! record travels with its remaining lifetime so that it expires alike on
//! every node (wire kind 3, docs/PROTOCOL.md). Which sessions are learned,
//! refreshed or ignored is the balancer's rule (`super::balancer`).

use core::ffi::c_void;

use nginx_sys::{ngx_int_t, ngx_log_t, ngx_shm_zone_t, ngx_str_t, NGX_ERROR, NGX_OK};
use zone_sync_core::table::kv::{At, Kv};
use zone_sync_core::table::{Table, TableError};

use crate::kinds::{ApplyError, Record};
use crate::ngx_ext::{current_msec, str_bytes, wall_ms};
use crate::shm::zone::{Applied, Out, Visit, ZoneKind};
use crate::shm::Shm;

/// One session zone, in the configuration pool; `shm_zone->data` points
/// here.
#[repr(C)]
pub struct StickyZone {
    pub shm: *mut ngx_shm_zone_t,
    /// `timeout=` in ms (10 minutes by default).
    pub timeout: u64,
    pub sync: bool,
    /// The upstream the zone belongs to, for messages.
    pub upstream: ngx_str_t,
    /// The zone's table, once initialised.
    pub table: Option<Shm>,
}

impl StickyZone {
    pub fn name(&self) -> &[u8] {
        // SAFETY: the zone's name lives in the configuration pool as long
        // as the cycle.
        unsafe { str_bytes(&(*self.shm).shm.name) }
    }

    fn kv(&self) -> Kv {
        Kv {
            timeout: self.timeout,
            sync: self.sync,
            node: crate::node_id(),
        }
    }

    /// Calls `f` with the server identity session `id` names and the ms
    /// it still lives, if the session is known and not expired.
    pub fn lookup<R>(&self, id: &[u8], f: impl FnOnce(&[u8], u64) -> R) -> Option<R> {
        let now = current_msec();
        self.table.as_ref()?.with(|t| {
            let r = t.get(id, now)?;
            Some(f(t.value(r), t.remaining(r, now)?))
        })
    }

    /// Stores (or refreshes) session `id` -> `server` for the zone's
    /// `timeout`, on every node when synced. Failures are logged, and only
    /// cost the session its stickiness.
    pub fn learn(&self, log: *mut ngx_log_t, id: &[u8], server: &[u8]) {
        let Some(shm) = self.table.as_ref() else {
            return;
        };
        let now = current_msec();
        let stored = if shm.fits(id.len(), server.len()) {
            let at = At {
                now,
                wall: wall_ms(),
                clock: shm.hlc(),
            };
            shm.with(|t| {
                let idle = t.counters().pending == 0;
                let evicted = self.kv().set(t, id, server, None, &at, u64::MAX)?;
                Ok((evicted, self.sync && idle))
            })
        } else {
            Err(TableError::TooLarge)
        };
        match stored {
            Ok((evicted, wake)) => {
                ZoneKind::log_evictions(self, log, evicted, now);
                if wake {
                    crate::kinds::wake();
                }
            }
            Err(e) => {
                let why = match e {
                    TableError::TooLarge => "session is larger than a \"zone_sync_buffers\" buffer",
                    TableError::NoMemory | TableError::TooManyOrigins => {
                        "zone is too small for the session"
                    }
                };
                self.log_refused(log, "session", id, why);
            }
        }
    }
}

/// Shared-zone init: a new zone gets an empty table; a zone that survived
/// a reload keeps its sessions.
///
/// # Safety
/// Called by nginx with a zone whose `data` is a [`StickyZone`].
pub unsafe extern "C" fn init_zone(shm: *mut ngx_shm_zone_t, old: *mut c_void) -> ngx_int_t {
    let z = &mut *(*shm).data.cast::<StickyZone>();
    let name = str_bytes(&(*shm).shm.name);
    match Shm::init(shm, old, "sticky", name, z.sync) {
        Some(table) => {
            z.table = Some(table);
            NGX_OK as ngx_int_t
        }
        None => NGX_ERROR as ngx_int_t,
    }
}

impl ZoneKind for StickyZone {
    const KIND: u8 = zone_sync_core::wire::KIND_STICKY;
    const KIND_VERSION: u16 = 1;
    const WHAT: &'static str = "sticky";
    const EVICTS: &'static str = "least recently written sessions";

    fn name(&self) -> &[u8] {
        StickyZone::name(self)
    }
    fn shm(&self) -> Option<&Shm> {
        self.table.as_ref()
    }
    fn emit_change(&self, v: &Visit<'_, '_>, out: Out<'_>) -> bool {
        out(&Kv::record(v.t, v.r, v.now))
    }
    fn emit_snapshot(&self, v: &Visit<'_, '_>, _sub: &mut u64, out: Out<'_>) -> bool {
        v.t.is_expired(v.r, v.now) || out(&Kv::record(v.t, v.r, v.now))
    }
    fn apply_locked(&self, t: &mut Table<'_>, rec: &Record<'_>, now: u64, wall: u64) -> Applied {
        let Some(shm) = self.table.as_ref() else {
            return Err(ApplyError::NoMemory);
        };
        let at = At {
            now,
            wall,
            clock: shm.hlc(),
        };
        match self.kv().apply(t, rec, &at) {
            Ok(changed) => Ok((changed, 0)),
            Err(TableError::TooLarge) => Err(ApplyError::Invalid),
            Err(TableError::NoMemory | TableError::TooManyOrigins) => Err(ApplyError::NoMemory),
        }
    }
}

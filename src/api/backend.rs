//! The [`Backend`] of the API over this node: keyval zones of the running
//! cycle (http ones tagged with the http keyval module, stream ones with
//! the stream keyval module) and the sync engine's shared counters.

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::Ordering;

use nginx_sys::{ngx_cycle_t, ngx_log_t};
use zone_sync_core::api::{
    Backend, BackendError, KeyvalChange, KeyvalEntry, LimitReqZone, Namespace, NginxInfo, SlabZone,
    StubStatus, ZoneSyncStatus, ZoneSyncZone,
};

use zone_sync_core::keyval_key::{self, KeyType};

use crate::keyval::store::{ApiWriteError, StoreError};
use crate::keyval::zone::{self, KeyvalZone};
use crate::ngx_ext::{current_msec, stream_cycle_main_conf, wall_ms};
use crate::zone_sync::{conf::MainConf, ngx_stream_zone_sync_module, status};

/// One request's view of the node.
pub struct NodeBackend {
    pub cycle: *mut ngx_cycle_t,
    pub log: *mut ngx_log_t,
    /// Local address of the connection that carried the request.
    pub address: String,
}

fn tag(ns: Namespace) -> *mut c_void {
    match ns {
        Namespace::Http => crate::keyval::http::module(),
        Namespace::Stream => crate::keyval::stream::module(),
    }
    .cast_mut()
    .cast()
}

impl NodeBackend {
    fn zone(&self, ns: Namespace, name: &[u8]) -> Result<&'static KeyvalZone, BackendError> {
        // SAFETY: the running cycle; its zones outlive the request.
        unsafe { zone::find(self.cycle, tag(ns), name) }.ok_or(BackendError::ZoneNotFound)
    }

    /// Whether this cycle has `zone_sync`.
    fn zone_sync_configured(&self) -> bool {
        // SAFETY: the running, fully configured cycle; the module's index is
        // fixed once loaded.
        unsafe {
            let mcf = stream_cycle_main_conf::<MainConf>(
                self.cycle,
                &*ptr::addr_of!(ngx_stream_zone_sync_module),
            );
            !mcf.is_null() && !(*mcf).zone_sync.is_null()
        }
    }
}

fn write_error(e: ApiWriteError) -> BackendError {
    match e {
        ApiWriteError::Exists => BackendError::KeyExists,
        ApiWriteError::NotEmpty => BackendError::NotEmpty,
        ApiWriteError::NotFound => BackendError::KeyNotFound,
        ApiWriteError::Store(StoreError::TooLarge) => BackendError::RecordTooLarge,
        ApiWriteError::Store(StoreError::NoMemory) => BackendError::NoMemory,
    }
}

/// A key as the client wrote it, in the zone's stored form (type=ip:
/// canonical binary); refused as Plus does (400 `KeyvalFormatError`).
fn stored_key(z: &KeyvalZone, text: &[u8]) -> Result<Vec<u8>, BackendError> {
    keyval_key::stored_key(z.ty, text).ok_or(BackendError::InvalidKey)
}

/// Plus accepts `expire` only in zones with a `timeout`.
fn check_expire(z: &KeyvalZone, expire: Option<u64>) -> Result<(), BackendError> {
    if expire.is_some() && z.timeout == 0 {
        return Err(BackendError::TimeoutNotEnabled);
    }
    Ok(())
}

impl Backend for NodeBackend {
    fn nginx_info(&self) -> NginxInfo {
        // SAFETY: plain reads of process globals set before any request.
        let (pid, ppid) = unsafe { (nginx_sys::ngx_pid, nginx_sys::ngx_parent) };
        NginxInfo {
            version: nginx_sys::NGINX_VERSION.to_string_lossy().into_owned(),
            build: concat!("zone-sync-", env!("CARGO_PKG_VERSION")).to_owned(),
            address: self.address.clone(),
            generation: super::generation(),
            load_timestamp_ms: super::load_timestamp_ms(),
            timestamp_ms: wall_ms(),
            pid: pid.max(0) as u64,
            ppid: ppid.max(0) as u64,
        }
    }

    fn zone_sync(&self) -> Option<ZoneSyncStatus> {
        if !self.zone_sync_configured() {
            return None;
        }
        let st = status::get();
        // SAFETY: the running cycle; its zones outlive the request.
        let zones = unsafe { crate::registry::zones(self.cycle) }
            .into_iter()
            .filter(|z| z.synced())
            .map(|z| ZoneSyncZone {
                name: z.name().to_vec(),
                records_pending: z.records_pending(),
                records_total: z.records_total(),
            })
            .collect();
        Some(ZoneSyncStatus {
            bytes_in: st.bytes_in.load(Ordering::Relaxed),
            msgs_in: st.msgs_in.load(Ordering::Relaxed),
            msgs_out: st.msgs_out.load(Ordering::Relaxed),
            bytes_out: st.bytes_out.load(Ordering::Relaxed),
            nodes_online: st.nodes_online.load(Ordering::Relaxed),
            zones,
        })
    }

    // The monitoring endpoints: see `super::monitor`.

    fn stub_status(&self) -> Option<StubStatus> {
        super::monitor::stub_status()
    }

    fn respawned(&self) -> Option<u64> {
        // SAFETY: the running cycle.
        unsafe { super::processes::respawned(self.cycle) }
    }

    fn slabs(&self) -> Vec<SlabZone> {
        // SAFETY: the running cycle; no slab lock is held while answering.
        unsafe { super::monitor::slabs(self.cycle) }
    }

    fn limit_reqs(&self) -> Vec<LimitReqZone> {
        // SAFETY: the running cycle.
        unsafe { super::monitor::limit_reqs(self.cycle) }
    }

    fn keyval_zones(&self, ns: Namespace) -> Vec<Vec<u8>> {
        // SAFETY: the running cycle; its zones outlive the request.
        unsafe { zone::zones_of(self.cycle, tag(ns)) }
            .into_iter()
            .map(|z| z.name().to_vec())
            .collect()
    }

    fn keyval_visit(
        &self,
        ns: Namespace,
        zone: &[u8],
        visit: &mut dyn FnMut(&[u8], &[u8]),
    ) -> Result<(), BackendError> {
        let z = self.zone(ns, zone)?;
        if let Some(store) = z.store() {
            // Records are copied out a batch at a time; `visit` encodes them
            // with the zone's lock released.
            if z.ty == KeyType::Ip {
                store.for_each(current_msec(), |k, v, _| {
                    visit(&keyval_key::display_key(z.ty, k), v)
                });
            } else {
                store.for_each(current_msec(), |k, v, _| visit(k, v));
            }
        }
        Ok(())
    }

    fn keyval_get(
        &self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let z = self.zone(ns, zone)?;
        let Some(key) = keyval_key::stored_key(z.ty, key) else {
            return Ok(None);
        };
        Ok(z.store()
            .and_then(|s| s.get(&key, current_msec(), |v, _| v.to_vec())))
    }

    fn keyval_post(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        entries: &[KeyvalEntry<'_>],
    ) -> Result<(), BackendError> {
        let z = self.zone(ns, zone)?;
        for e in entries {
            check_expire(z, e.expire_ms)?;
        }
        let keys = entries
            .iter()
            .map(|e| stored_key(z, e.key))
            .collect::<Result<Vec<_>, _>>()?;
        // Two spellings of one network ("10.0.0.1", "10.0.0.1/32").
        if keys.iter().collect::<std::collections::HashSet<_>>().len() != keys.len() {
            return Err(BackendError::KeyExists);
        }
        let batch: Vec<(&[u8], &[u8], Option<u64>)> = entries
            .iter()
            .zip(&keys)
            .map(|(e, k)| (k.as_slice(), e.value, e.expire_ms))
            .collect();
        z.insert_new(self.log, &batch, batch.len() > 1)
            .map_err(write_error)
    }

    fn keyval_patch(
        &mut self,
        ns: Namespace,
        zone: &[u8],
        key: &[u8],
        change: KeyvalChange<'_>,
    ) -> Result<(), BackendError> {
        let z = self.zone(ns, zone)?;
        let key = &stored_key(z, key)?;
        match change {
            KeyvalChange::Delete => {
                if z.delete(key) {
                    Ok(())
                } else {
                    Err(BackendError::KeyNotFound)
                }
            }
            KeyvalChange::Update { value, expire_ms } => {
                check_expire(z, expire_ms)?;
                z.update(self.log, key, value, expire_ms)
                    .map_err(write_error)
            }
        }
    }

    fn keyval_clear(&mut self, ns: Namespace, zone: &[u8]) -> Result<(), BackendError> {
        self.zone(ns, zone)?.clear();
        Ok(())
    }
}

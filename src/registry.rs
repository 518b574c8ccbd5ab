//! Every kind of zone this module can sync: which module owns a shared
//! zone of that kind, and how to view it as a [`SyncZone`]. Kept apart from
//! the interface (`crate::kinds`) so that the kinds and the engine depend
//! on the interface, never on each other.

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{ngx_cycle_t, ngx_list_part_t, ngx_module_t, ngx_shm_zone_t};

use crate::kinds::SyncZone;

/// A kind: the module whose shared zones it owns, and how to view such a
/// zone's `shm_zone->data` as a [`SyncZone`].
struct Kind {
    module: fn() -> *const ngx_module_t,
    view: unsafe fn(*mut c_void) -> Option<&'static dyn SyncZone>,
}

/// Every kind of zone this module can sync.
static KINDS: &[Kind] = &[
    Kind {
        module: crate::keyval::http::module,
        view: crate::shm::zone::view::<crate::keyval::zone::KeyvalZone>,
    },
    Kind {
        module: crate::keyval::stream::module,
        view: crate::shm::zone::view::<crate::keyval::zone::KeyvalZone>,
    },
    Kind {
        module: crate::limit_req::module::module,
        view: crate::shm::zone::view::<crate::limit_req::zone::LimitZone>,
    },
    Kind {
        module: crate::sticky::module::module,
        view: crate::shm::zone::view::<crate::sticky::zone::StickyZone>,
    },
];

/// Every initialised zone of `cycle` of a known kind (synced or not).
///
/// # Safety
/// `cycle` is the running cycle; the returned references live as long as it.
pub unsafe fn zones(cycle: *const ngx_cycle_t) -> Vec<&'static dyn SyncZone> {
    let mut out = Vec::new();
    let mut part: *const ngx_list_part_t = ptr::addr_of!((*cycle).shared_memory.part);
    while !part.is_null() {
        let elts = (*part).elts.cast::<ngx_shm_zone_t>();
        for i in 0..(*part).nelts {
            let zone = elts.add(i);
            for kind in KINDS {
                if (*zone).tag == (kind.module)().cast_mut().cast() && !(*zone).data.is_null() {
                    if let Some(z) = (kind.view)((*zone).data) {
                        out.push(z);
                    }
                }
            }
        }
        part = (*part).next;
    }
    out
}

//! The request side, step for step nginx's `ngx_http_limit_req_handler`:
//! every `sync_limit_req` of the location is looked up in turn (the last
//! one charges at once, earlier ones are held), the first rejection
//! releases the held ones, and when all pass the held ones are charged and
//! the longest delay applies. Then `$sync_limit_req_status`.
//!
//! nginx keeps a request's limit_req status in a bit field of the main
//! request (`r->main->limit_req_status`), which survives internal
//! redirects. Ours lives in a pool cleanup record of the main request,
//! found again after an internal redirect reset the module contexts (the
//! way nginx's realip module keeps its state).

use core::ffi::c_void;
use core::ptr;

use nginx_sys::{
    ngx_http_request_t, ngx_http_variable_value_t, ngx_int_t, ngx_str_t, NGX_AGAIN, NGX_DECLINED,
    NGX_HTTP_INTERNAL_SERVER_ERROR, NGX_LOG_ALERT, NGX_LOG_ERR, NGX_OK,
};
use ngx::{ngx_log_debug, ngx_log_error};
use zone_sync_core::rate;

use super::module::{ctx_index, Limit, LocConf};
use super::store::Rc;
use crate::ngx_ext::{array_slice, current_msec, str_bytes, wall_ms};

const PASSED: u8 = 1;
const DELAYED: u8 = 2;
const REJECTED: u8 = 3;
const DELAYED_DRY_RUN: u8 = 4;
const REJECTED_DRY_RUN: u8 = 5;

static STATUS_NAMES: [&[u8]; 5] = [
    b"PASSED",
    b"DELAYED",
    b"REJECTED",
    b"DELAYED_DRY_RUN",
    b"REJECTED_DRY_RUN",
];

/// A main request's limit status; 0 until the limits were applied.
#[repr(C)]
struct ReqStatus {
    magic: u64,
    status: u8,
}

const MAGIC: u64 = 0x7379_6e63_6c72_7173; // "synclrqs"

/// The cleanup handler that marks our record among a pool's cleanups; it
/// has nothing to release.
unsafe extern "C" fn status_cleanup(data: *mut c_void) {
    // Not a no-op, so that it cannot be merged with another function.
    if let Some(s) = data.cast::<ReqStatus>().as_mut() {
        s.magic = 0;
    }
}

/// The status record of `r`'s main request, if there is one.
unsafe fn find_status(r: *mut ngx_http_request_t) -> *mut ReqStatus {
    let main = (*r).main;
    let slot = (*main).ctx.add(ctx_index());
    if !(*slot).is_null() {
        return (*slot).cast();
    }
    // Module contexts are reset by an internal redirect; the record is
    // still among the pool's cleanups.
    let mut cln = (*(*main).pool).cleanup;
    while !cln.is_null() {
        if let Some(h) = (*cln).handler {
            if ptr::fn_addr_eq(h, status_cleanup as unsafe extern "C" fn(*mut c_void)) {
                let s = (*cln).data.cast::<ReqStatus>();
                if !s.is_null() && (*s).magic == MAGIC {
                    *slot = s.cast();
                    return s;
                }
            }
        }
        cln = (*cln).next;
    }
    ptr::null_mut()
}

/// The status record of `r`'s main request, created if needed; null only
/// if the pool is out of memory.
unsafe fn status_record(r: *mut ngx_http_request_t) -> *mut ReqStatus {
    let s = find_status(r);
    if !s.is_null() {
        return s;
    }
    let main = (*r).main;
    let cln = nginx_sys::ngx_pool_cleanup_add((*main).pool, core::mem::size_of::<ReqStatus>());
    if cln.is_null() {
        return ptr::null_mut();
    }
    let s = (*cln).data.cast::<ReqStatus>();
    s.write(ReqStatus {
        magic: MAGIC,
        status: 0,
    });
    (*cln).handler = Some(status_cleanup);
    *(*main).ctx.add(ctx_index()) = s.cast();
    s
}

fn empty_str() -> ngx_str_t {
    ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    }
}

/// Releases the keys held by earlier limits (limit_req's unlock).
fn unlock(limits: &[Limit], held: &[Option<ngx_str_t>], n: usize) {
    for (limit, key) in limits.iter().zip(held).take(n) {
        if let (Some(key), Some(store)) = (key, limit.zone().store()) {
            // SAFETY: the key was evaluated into the request pool.
            store.unlock(unsafe { str_bytes(key) });
        }
    }
}

/// The preaccess phase handler.
///
/// # Safety
/// Called by nginx with a live request.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    // Without limits there is nothing to do (checked first: it is cheap).
    let lrcf = &*(*(*r).loc_conf.add(ctx_index())).cast::<LocConf>();
    let limits: &[Limit] = array_slice(&lrcf.limits);
    if limits.is_empty() {
        return NGX_DECLINED as ngx_int_t;
    }
    let st = find_status(r);
    if !st.is_null() && (*st).status != 0 {
        return NGX_DECLINED as ngx_int_t;
    }
    let st = status_record(r);
    if st.is_null() {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }

    let log = (*(*r).connection).log;
    let now = current_msec();
    let wall = wall_ms();
    let mut held: Vec<Option<ngx_str_t>> = vec![None; limits.len()];
    let mut excess = 0u64;
    let mut rc: Option<Rc> = None;
    let mut n = 0;
    let mut at = 0;

    while n < limits.len() {
        at = n;
        let limit = &limits[n];
        let zone = limit.zone();
        let mut key = empty_str();
        let cv = ptr::addr_of!(zone.key).cast_mut();
        if nginx_sys::ngx_http_complex_value(r, cv, &mut key) != NGX_OK as ngx_int_t {
            unlock(limits, &held, n);
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        }
        if key.len == 0 {
            n += 1;
            continue;
        }
        if key.len > 65535 {
            let k = str_bytes(&key);
            ngx_log_error!(
                NGX_LOG_ERR,
                log,
                "the value of the \"{}\" key is more than 65535 bytes: \"{}\"",
                String::from_utf8_lossy(str_bytes(&zone.key.value)),
                String::from_utf8_lossy(&k[..k.len().min(256)])
            );
            n += 1;
            continue;
        }
        let Some(store) = zone.store() else {
            unlock(limits, &held, n);
            return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
        };
        let last = n == limits.len() - 1;
        let res = store.lookup(str_bytes(&key), limit.burst as u64, last, now, wall);
        zone.log_evictions(log, res.evicted, now);
        if res.rc == Rc::Error {
            ngx_log_error!(
                NGX_LOG_ALERT,
                (*crate::ngx_ext::cycle()).log,
                "could not allocate node in sync_limit_req zone \"{}\"",
                String::from_utf8_lossy(zone.name())
            );
        }
        if res.wake {
            crate::kinds::wake();
        }
        ngx_log_debug!(
            log,
            "sync_limit_req[{}]: {:?} {}.{:03}",
            n,
            res.rc,
            res.excess / 1000,
            res.excess % 1000
        );
        excess = res.excess;
        rc = Some(res.rc);
        if res.rc != Rc::Again {
            break;
        }
        held[n] = Some(key);
        n += 1;
    }

    let Some(rc) = rc else {
        return NGX_DECLINED as ngx_int_t;
    };
    let dry = if lrcf.dry_run == 1 { ", dry run" } else { "" };
    let limit = &limits[at];

    if rc == Rc::Busy || rc == Rc::Error {
        if rc == Rc::Busy {
            ngx_log_error!(
                lrcf.limit_log_level,
                log,
                "limiting requests{}, excess: {}.{:03} by zone \"{}\"",
                dry,
                excess / 1000,
                excess % 1000,
                String::from_utf8_lossy(limit.zone().name())
            );
        }
        unlock(limits, &held, n);
        if lrcf.dry_run == 1 {
            outcome(st, limit, REJECTED_DRY_RUN);
            return NGX_DECLINED as ngx_int_t;
        }
        outcome(st, limit, REJECTED);
        return lrcf.status_code as ngx_int_t;
    }

    if rc == Rc::Again {
        excess = 0;
    }
    let (delay, excess, at) = account(limits, &held, n, excess, at, now, wall);

    if delay == 0 {
        outcome(st, &limits[at], PASSED);
        return NGX_DECLINED as ngx_int_t;
    }

    ngx_log_error!(
        lrcf.delay_log_level,
        log,
        "delaying request{}, excess: {}.{:03}, by zone \"{}\"",
        dry,
        excess / 1000,
        excess % 1000,
        String::from_utf8_lossy(limits[at].zone().name())
    );

    if lrcf.dry_run == 1 {
        outcome(st, &limits[at], DELAYED_DRY_RUN);
        return NGX_DECLINED as ngx_int_t;
    }
    outcome(st, &limits[at], DELAYED);

    let c = (*r).connection;
    if (*(*c).read).ready() != 0 {
        nginx_sys::ngx_post_event((*c).read, ptr::addr_of_mut!(nginx_sys::ngx_posted_events));
    } else if nginx_sys::ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
        return NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    (*r).read_event_handler = Some(nginx_sys::ngx_http_test_reading);
    (*r).write_event_handler = Some(delay_handler);
    (*(*c).write).set_delayed(1);
    nginx_sys::ngx_add_timer((*c).write, delay as nginx_sys::ngx_msec_t);
    NGX_AGAIN as ngx_int_t
}

/// Records a request's outcome: `$sync_limit_req_status`, and the count of
/// the zone that decided it (for `/api/N/http/limit_reqs/`).
unsafe fn outcome(st: *mut ReqStatus, decided_by: &Limit, status: u8) {
    (*st).status = status;
    if let Some(c) = decided_by.zone().counters() {
        c.count(status);
    }
}

/// Charges the keys held by the first `n` limits and returns the longest
/// delay with its excess and limit (limit_req's account).
#[allow(clippy::too_many_arguments)]
fn account(
    limits: &[Limit],
    held: &[Option<ngx_str_t>],
    n: usize,
    mut excess: u64,
    mut at: usize,
    now: u64,
    wall: u64,
) -> (u64, u64, usize) {
    let mut max_delay = rate::delay_ms(excess, limits[at].delay as u64, limits[at].zone().rate);
    for i in (0..n.min(held.len())).rev() {
        let Some(key) = &held[i] else { continue };
        let limit = &limits[i];
        let zone = limit.zone();
        let Some(store) = zone.store() else { continue };
        // SAFETY: the key was evaluated into the request pool.
        let Some((ex, wake)) = store.account(unsafe { str_bytes(key) }, now, wall) else {
            continue;
        };
        if wake {
            crate::kinds::wake();
        }
        let d = rate::delay_ms(ex, limit.delay as u64, zone.rate);
        if d > max_delay {
            max_delay = d;
            excess = ex;
            at = i;
        }
    }
    (max_delay, excess, at)
}

/// The write event handler of a delayed request (limit_req's delay).
unsafe extern "C" fn delay_handler(r: *mut ngx_http_request_t) {
    let c = (*r).connection;
    ngx_log_debug!((*c).log, "sync_limit_req delay");
    let wev = (*c).write;
    if (*wev).delayed() != 0 {
        if nginx_sys::ngx_handle_write_event(wev, 0) != NGX_OK as ngx_int_t {
            nginx_sys::ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        }
        return;
    }
    if nginx_sys::ngx_handle_read_event((*c).read, 0) != NGX_OK as ngx_int_t {
        nginx_sys::ngx_http_finalize_request(r, NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t);
        return;
    }
    (*r).read_event_handler = Some(nginx_sys::ngx_http_block_reading);
    (*r).write_event_handler = Some(nginx_sys::ngx_http_core_run_phases);
    nginx_sys::ngx_http_core_run_phases(r);
}

/// `$sync_limit_req_status`.
///
/// # Safety
/// Called by nginx with a live request and variable value.
pub unsafe extern "C" fn status_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    _data: usize,
) -> ngx_int_t {
    let st = find_status(r);
    let status = if st.is_null() { 0 } else { (*st).status };
    let Some(name) = (status as usize)
        .checked_sub(1)
        .and_then(|i| STATUS_NAMES.get(i))
    else {
        (*v).set_not_found(1);
        return NGX_OK as ngx_int_t;
    };
    (*v).set_valid(1);
    (*v).set_no_cacheable(0);
    (*v).set_not_found(0);
    (*v).set_len(name.len() as u32);
    (*v).data = name.as_ptr().cast_mut();
    NGX_OK as ngx_int_t
}

//! `ngx_http_sync_limit_req_module`: the directives, their configuration
//! and the module table. The directives are nginx's `limit_req*` ones with
//! a `sync_` prefix, parsed and merged exactly as
//! `ngx_http_limit_req_module.c` does, plus the `sync` parameter of the
//! zone.

use core::ffi::{c_char, c_void};
use core::mem::{offset_of, size_of};
use core::ptr;

use nginx_sys::{
    ngx_array_t, ngx_command_t, ngx_conf_enum_t, ngx_conf_num_bounds_t, ngx_conf_t, ngx_flag_t,
    ngx_http_compile_complex_value_t, ngx_http_conf_ctx_t, ngx_http_core_main_conf_t,
    ngx_http_module_t, ngx_int_t, ngx_module_t, ngx_shm_zone_t, ngx_str_t, ngx_uint_t,
    NGX_CONF_FLAG, NGX_CONF_TAKE1, NGX_CONF_TAKE123, NGX_CONF_TAKE3, NGX_CONF_TAKE4, NGX_ERROR,
    NGX_HTTP_LOC_CONF, NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_SERVICE_UNAVAILABLE,
    NGX_HTTP_SRV_CONF, NGX_HTTP_VAR_NOCACHEABLE, NGX_LOG_EMERG, NGX_LOG_ERR, NGX_LOG_INFO,
    NGX_LOG_NOTICE, NGX_LOG_WARN, NGX_MAX_INT_T_VALUE, NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_string};

use super::handler;
use super::zone::{self, LimitZone};
use crate::ngx_ext::{
    conf_args, merge_flag, merge_uint, str_bytes, CONF_ERROR, CONF_OK, CONF_UNSET_FLAG,
    CONF_UNSET_UINT,
};

/// One `sync_limit_req` of a location (limit_req's `limit_t`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Limit {
    pub shm_zone: *mut ngx_shm_zone_t,
    /// In thousandths of a request.
    pub burst: ngx_uint_t,
    pub delay: ngx_uint_t,
}

impl Limit {
    /// The zone of this limit: declared, or the configuration was refused.
    pub fn zone(&self) -> &LimitZone {
        // SAFETY: nginx refuses a configuration with a zone referenced but
        // never declared ("zero size shared memory zone"), and the zone
        // directive set `data` to a LimitZone in the configuration pool.
        unsafe { &*(*self.shm_zone).data.cast::<LimitZone>() }
    }
}

/// Main configuration: every `sync_limit_req` of the http block, as
/// (zone, burst), so that each zone learns its largest burst once all
/// zones are declared (a location may name a zone declared after it).
#[repr(C)]
pub struct MainConf {
    /// Array of [`Limit`] (its `delay` unused).
    limits: *mut ngx_array_t,
}

/// Location configuration (limit_req's `conf_t`).
#[repr(C)]
pub struct LocConf {
    /// Array of [`Limit`].
    pub limits: ngx_array_t,
    pub limit_log_level: ngx_uint_t,
    pub delay_log_level: ngx_uint_t,
    pub status_code: ngx_uint_t,
    pub dry_run: ngx_flag_t,
}

static mut LOG_LEVELS: [ngx_conf_enum_t; 5] = [
    ngx_conf_enum_t {
        name: ngx_string!("info"),
        value: NGX_LOG_INFO as ngx_uint_t,
    },
    ngx_conf_enum_t {
        name: ngx_string!("notice"),
        value: NGX_LOG_NOTICE as ngx_uint_t,
    },
    ngx_conf_enum_t {
        name: ngx_string!("warn"),
        value: NGX_LOG_WARN as ngx_uint_t,
    },
    ngx_conf_enum_t {
        name: ngx_string!("error"),
        value: NGX_LOG_ERR as ngx_uint_t,
    },
    ngx_conf_enum_t {
        name: ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        },
        value: 0,
    },
];

static mut STATUS_BOUNDS: ngx_conf_num_bounds_t = ngx_conf_num_bounds_t {
    post_handler: Some(nginx_sys::ngx_conf_check_num_bounds),
    low: 400,
    high: 599,
};

const LOC_CONF_OFFSET: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, loc_conf) as ngx_uint_t;
const ANY_LEVEL: u32 = NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF;

static mut COMMANDS: [ngx_command_t; 6] = [
    ngx_command_t {
        name: ngx_string!("sync_limit_req_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE3 | NGX_CONF_TAKE4) as ngx_uint_t,
        set: Some(set_zone),
        conf: 0,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("sync_limit_req"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE123) as ngx_uint_t,
        set: Some(set_limit),
        conf: LOC_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("sync_limit_req_log_level"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(nginx_sys::ngx_conf_set_enum_slot),
        conf: LOC_CONF_OFFSET,
        offset: offset_of!(LocConf, limit_log_level) as ngx_uint_t,
        post: ptr::addr_of_mut!(LOG_LEVELS).cast(),
    },
    ngx_command_t {
        name: ngx_string!("sync_limit_req_status"),
        type_: (ANY_LEVEL | NGX_CONF_TAKE1) as ngx_uint_t,
        set: Some(nginx_sys::ngx_conf_set_num_slot),
        conf: LOC_CONF_OFFSET,
        offset: offset_of!(LocConf, status_code) as ngx_uint_t,
        post: ptr::addr_of_mut!(STATUS_BOUNDS).cast(),
    },
    ngx_command_t {
        name: ngx_string!("sync_limit_req_dry_run"),
        type_: (ANY_LEVEL | NGX_CONF_FLAG) as ngx_uint_t,
        set: Some(nginx_sys::ngx_conf_set_flag_slot),
        conf: LOC_CONF_OFFSET,
        offset: offset_of!(LocConf, dry_run) as ngx_uint_t,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: Some(add_variables),
    postconfiguration: Some(init),
    create_main_conf: Some(create_main_conf),
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: Some(create_loc_conf),
    merge_loc_conf: Some(merge_loc_conf),
};

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_sync_limit_req_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX).cast_mut().cast(),
    // SAFETY: only the address is taken; nginx reads the table.
    commands: unsafe { ptr::addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    ..ngx_module_t::default()
};

/// The module, as the tag of its shared zones.
pub fn module() -> *const ngx_module_t {
    ptr::addr_of!(ngx_http_sync_limit_req_module)
}

fn tag() -> *mut c_void {
    module().cast_mut().cast()
}

/// The module's index among http modules.
pub fn ctx_index() -> usize {
    // SAFETY: set by nginx before any configuration or request is handled.
    unsafe { (*module()).ctx_index }
}

unsafe extern "C" fn add_variables(cf: *mut ngx_conf_t) -> ngx_int_t {
    let mut name = ngx_string!("sync_limit_req_status");
    let v = nginx_sys::ngx_http_add_variable(cf, &mut name, NGX_HTTP_VAR_NOCACHEABLE as ngx_uint_t);
    if v.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    (*v).get_handler = Some(handler::status_variable);
    (*v).data = 0;
    NGX_OK as ngx_int_t
}

/// Registers the request handler in the preaccess phase, as limit_req,
/// and tells every zone its largest burst.
unsafe extern "C" fn init(cf: *mut ngx_conf_t) -> ngx_int_t {
    let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
    let mcf = &*(*(*ctx).main_conf.add(ctx_index())).cast::<MainConf>();
    for l in crate::ngx_ext::array_slice::<Limit>(mcf.limits) {
        // Null for a zone never declared: nginx refuses the configuration
        // ("zero size shared memory zone").
        if let Some(z) = (*l.shm_zone).data.cast::<LimitZone>().as_mut() {
            z.max_burst = z.max_burst.max(l.burst as u64);
        }
    }
    let core = ptr::addr_of!(nginx_sys::ngx_http_core_module);
    let cmcf = (*(*ctx).main_conf.add((*core).ctx_index)).cast::<ngx_http_core_main_conf_t>();
    let phase = nginx_sys::ngx_http_phases_NGX_HTTP_PREACCESS_PHASE as usize;
    let h = nginx_sys::ngx_array_push(ptr::addr_of_mut!((*cmcf).phases[phase].handlers))
        .cast::<nginx_sys::ngx_http_handler_pt>();
    if h.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    *h = Some(handler::handler);
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let conf = nginx_sys::ngx_pcalloc((*cf).pool, size_of::<MainConf>()).cast::<MainConf>();
    if conf.is_null() {
        return ptr::null_mut();
    }
    (*conf).limits = nginx_sys::ngx_array_create((*cf).pool, 4, size_of::<Limit>());
    if (*conf).limits.is_null() {
        return ptr::null_mut();
    }
    conf.cast()
}

unsafe extern "C" fn create_loc_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let conf = nginx_sys::ngx_pcalloc((*cf).pool, size_of::<LocConf>()).cast::<LocConf>();
    if conf.is_null() {
        return ptr::null_mut();
    }
    // limits: zeroed by ngx_pcalloc (elts == NULL: none here)
    (*conf).limit_log_level = CONF_UNSET_UINT;
    (*conf).status_code = CONF_UNSET_UINT;
    (*conf).dry_run = CONF_UNSET_FLAG;
    conf.cast()
}

unsafe extern "C" fn merge_loc_conf(
    _cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    let prev = &*parent.cast::<LocConf>();
    let conf = &mut *child.cast::<LocConf>();
    if conf.limits.elts.is_null() {
        conf.limits = prev.limits;
    }
    merge_uint(
        &mut conf.limit_log_level,
        prev.limit_log_level,
        NGX_LOG_ERR as ngx_uint_t,
    );
    conf.delay_log_level = if conf.limit_log_level == NGX_LOG_INFO as ngx_uint_t {
        NGX_LOG_INFO as ngx_uint_t
    } else {
        conf.limit_log_level + 1
    };
    merge_uint(
        &mut conf.status_code,
        prev.status_code,
        NGX_HTTP_SERVICE_UNAVAILABLE as ngx_uint_t,
    );
    merge_flag(&mut conf.dry_run, prev.dry_run, 0);
    CONF_OK
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

fn emerg(cf: *mut ngx_conf_t, args: core::fmt::Arguments<'_>) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", args);
    CONF_ERROR
}

/// `ngx_atoi` over a byte slice: the number, or -1 (`NGX_ERROR`).
fn atoi(b: &[u8]) -> i64 {
    if b.is_empty() {
        return -1;
    }
    let mut v: i64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return -1;
        }
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i64::from(c - b'0')))
        {
            Some(v) => v,
            None => return -1,
        };
    }
    v
}

/// `sync_limit_req_zone key zone=name:size rate=rate [sync];`
unsafe extern "C" fn set_zone(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    let args = conf_args(cf);
    let cmd_name = lossy(str_bytes(&(*cmd).name));

    let z = nginx_sys::ngx_pcalloc((*cf).pool, size_of::<LimitZone>()).cast::<LimitZone>();
    if z.is_null() {
        return CONF_ERROR;
    }
    z.write(LimitZone {
        shm: ptr::null_mut(),
        key: core::mem::zeroed(),
        rate: 0,
        max_burst: 0,
        sync: false,
        store: None,
        counters: ptr::null(),
    });

    let mut key = args[1];
    let mut ccv: ngx_http_compile_complex_value_t = core::mem::zeroed();
    ccv.cf = cf;
    ccv.value = &mut key;
    ccv.complex_value = ptr::addr_of_mut!((*z).key);
    if nginx_sys::ngx_http_compile_complex_value(&mut ccv) != NGX_OK as ngx_int_t {
        return CONF_ERROR;
    }

    let mut name = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    let mut size: usize = 0;
    let mut rate: i64 = 1;
    let mut scale: i64 = 1;
    let mut sync = false;

    for a in &args[2..] {
        let arg = str_bytes(a);
        if let Some(v) = arg.strip_prefix(b"zone=") {
            let Some(colon) = v.iter().position(|&c| c == b':') else {
                return emerg(cf, format_args!("invalid zone size \"{}\"", lossy(arg)));
            };
            name = ngx_str_t {
                len: colon,
                data: a.data.add(5),
            };
            let mut s = ngx_str_t {
                len: v.len() - colon - 1,
                data: a.data.add(5 + colon + 1),
            };
            let parsed = nginx_sys::ngx_parse_size(&mut s);
            if parsed == NGX_ERROR as isize {
                return emerg(cf, format_args!("invalid zone size \"{}\"", lossy(arg)));
            }
            if parsed < (8 * nginx_sys::ngx_pagesize) as isize {
                return emerg(cf, format_args!("zone \"{}\" is too small", lossy(arg)));
            }
            size = parsed as usize;
        } else if let Some(v) = arg.strip_prefix(b"rate=") {
            let mut num = v;
            if let Some(n) = v.strip_suffix(b"r/s") {
                scale = 1;
                num = n;
            } else if let Some(n) = v.strip_suffix(b"r/m") {
                scale = 60;
                num = n;
            }
            rate = atoi(num);
            if rate <= 0 {
                return emerg(cf, format_args!("invalid rate \"{}\"", lossy(arg)));
            }
        } else if arg == b"sync" {
            sync = true;
        } else {
            return emerg(cf, format_args!("invalid parameter \"{}\"", lossy(arg)));
        }
    }

    if name.len == 0 {
        return emerg(
            cf,
            format_args!("\"{}\" must have \"zone\" parameter", cmd_name),
        );
    }

    let shm = nginx_sys::ngx_shared_memory_add(cf, &mut name, size, tag());
    if shm.is_null() {
        return CONF_ERROR;
    }
    if !(*shm).data.is_null() {
        let other = &*(*shm).data.cast::<LimitZone>();
        return emerg(
            cf,
            format_args!(
                "{} \"{}\" is already bound to key \"{}\"",
                cmd_name,
                lossy(str_bytes(&name)),
                lossy(str_bytes(&other.key.value))
            ),
        );
    }

    (*z).shm = shm;
    (*z).rate = (rate as u64).saturating_mul(1000) / scale as u64;
    (*z).sync = sync;
    (*shm).init = Some(zone::init_zone);
    (*shm).data = z.cast();
    CONF_OK
}

/// `sync_limit_req zone=name [burst=number] [nodelay | delay=number];`
unsafe extern "C" fn set_limit(
    cf: *mut ngx_conf_t,
    cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let lrcf = &mut *conf.cast::<LocConf>();
    let args = conf_args(cf);
    let mut shm_zone: *mut ngx_shm_zone_t = ptr::null_mut();
    let mut burst: i64 = 0;
    let mut delay: i64 = 0;

    for a in &args[1..] {
        let arg = str_bytes(a);
        if let Some(v) = arg.strip_prefix(b"zone=") {
            let mut s = ngx_str_t {
                len: v.len(),
                data: a.data.add(5),
            };
            shm_zone = nginx_sys::ngx_shared_memory_add(cf, &mut s, 0, tag());
            if shm_zone.is_null() {
                return CONF_ERROR;
            }
        } else if let Some(v) = arg.strip_prefix(b"burst=") {
            burst = atoi(v);
            if burst <= 0 {
                return emerg(cf, format_args!("invalid burst value \"{}\"", lossy(arg)));
            }
        } else if let Some(v) = arg.strip_prefix(b"delay=") {
            delay = atoi(v);
            if delay <= 0 {
                return emerg(cf, format_args!("invalid delay value \"{}\"", lossy(arg)));
            }
        } else if arg == b"nodelay" {
            delay = NGX_MAX_INT_T_VALUE as i64 / 1000;
        } else {
            return emerg(cf, format_args!("invalid parameter \"{}\"", lossy(arg)));
        }
    }

    if shm_zone.is_null() {
        return emerg(
            cf,
            format_args!(
                "\"{}\" must have \"zone\" parameter",
                lossy(str_bytes(&(*cmd).name))
            ),
        );
    }

    if lrcf.limits.elts.is_null() {
        // ngx_array_init(&lrcf->limits, cf->pool, 1, sizeof(limit))
        let elts = nginx_sys::ngx_palloc((*cf).pool, size_of::<Limit>());
        if elts.is_null() {
            return CONF_ERROR;
        }
        lrcf.limits = ngx_array_t {
            elts,
            nelts: 0,
            size: size_of::<Limit>(),
            nalloc: 1,
            pool: (*cf).pool,
        };
    }

    let limits: &[Limit] = crate::ngx_ext::array_slice(&lrcf.limits);
    if limits.iter().any(|l| l.shm_zone == shm_zone) {
        return crate::ngx_ext::conf_msg(c"is duplicate");
    }

    let limit_slot = nginx_sys::ngx_array_push(&mut lrcf.limits).cast::<Limit>();
    if limit_slot.is_null() {
        return CONF_ERROR;
    }
    let limit = Limit {
        shm_zone,
        burst: burst as ngx_uint_t * 1000,
        delay: delay as ngx_uint_t * 1000,
    };
    let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
    let mcf = &*(*(*ctx).main_conf.add(ctx_index())).cast::<MainConf>();
    let all = nginx_sys::ngx_array_push(mcf.limits).cast::<Limit>();
    if all.is_null() {
        return CONF_ERROR;
    }
    all.write(limit);
    limit_slot.write(limit);
    CONF_OK
}

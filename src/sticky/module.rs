//! `ngx_http_sync_sticky_module`: the `sync_sticky` directive (also named
//! `sticky` where the nginx built against has no `sticky` of its own), its
//! per-upstream configuration, and the header filter that learns sessions
//! with `header` and sets the cookie of `sticky cookie`.

use core::ffi::{c_char, c_void};
use core::mem::{self, offset_of};
use core::ptr;

use nginx_sys::{
    ngx_array_t, ngx_command_t, ngx_conf_t, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_http_conf_ctx_t, ngx_http_module_t,
    ngx_http_output_header_filter_pt, ngx_http_request_t, ngx_http_upstream_init_peer_pt,
    ngx_http_upstream_init_pt, ngx_http_upstream_srv_conf_t, ngx_int_t, ngx_module_t, ngx_str_t,
    ngx_uint_t, NGX_CONF_2MORE, NGX_ERROR, NGX_HTTP_MODULE, NGX_HTTP_UPS_CONF, NGX_LOG_EMERG,
    NGX_OK,
};
use ngx::{ngx_conf_log_error, ngx_string};

use super::balancer;
use super::zone::{self, StickyZone};
use crate::ngx_ext::{conf_args, conf_msg, str_bytes, CONF_ERROR, CONF_OK};

/// `expires=max`: the cookie lives until 31 Dec 2037 23:55:55 GMT.
pub const EXPIRES_MAX: nginx_sys::time_t = 2_145_916_555;
/// `expires=` not given: a session cookie.
pub const EXPIRES_UNSET: nginx_sys::time_t = -1;

/// The sticky method of an upstream.
#[repr(u8)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    None = 0,
    Cookie,
    Learn,
}

/// `sticky cookie` parameters.
#[repr(C)]
pub struct CookieConf {
    pub name: ngx_str_t,
    pub domain: *mut ngx_http_complex_value_t,
    /// `"; path=..."`, or empty.
    pub path: ngx_str_t,
    /// Seconds, [`EXPIRES_MAX`] or [`EXPIRES_UNSET`].
    pub expires: nginx_sys::time_t,
    pub samesite: *mut ngx_http_complex_value_t,
    pub httponly: bool,
    pub secure: bool,
}

/// The per-upstream configuration (the module's srv conf in an
/// `upstream` block).
#[repr(C)]
pub struct StickyConf {
    pub mode: Mode,
    pub original_init_upstream: ngx_http_upstream_init_pt,
    pub original_init_peer: ngx_http_upstream_init_peer_pt,
    /// Variable indexes (`ngx_int_t`): where a request names its session
    /// (`lookup=`, or the cookie of `sticky cookie`).
    pub lookup: *mut ngx_array_t,
    /// Variable indexes of `create=`.
    pub create: *mut ngx_array_t,
    pub zone: *mut StickyZone,
    /// `header`: learn when the response headers arrive.
    pub header: bool,
    pub cookie: CookieConf,
}

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: Some(create_srv_conf),
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

const SRV_CONF_OFFSET: ngx_uint_t = offset_of!(ngx_http_conf_ctx_t, srv_conf) as ngx_uint_t;

const fn command(name: ngx_str_t) -> ngx_command_t {
    ngx_command_t {
        name,
        type_: (NGX_HTTP_UPS_CONF | NGX_CONF_2MORE) as ngx_uint_t,
        set: Some(set_sticky),
        conf: SRV_CONF_OFFSET,
        offset: 0,
        post: ptr::null_mut(),
    }
}

/// `sync_sticky` always; `sticky` too where nginx has none (before 1.29.6:
/// a module cannot take a directive name the core already has).
#[cfg(not(ngx_core_sticky))]
static mut COMMANDS: [ngx_command_t; 3] = [
    command(ngx_string!("sync_sticky")),
    command(ngx_string!("sticky")),
    ngx_command_t::empty(),
];
#[cfg(ngx_core_sticky)]
static mut COMMANDS: [ngx_command_t; 2] =
    [command(ngx_string!("sync_sticky")), ngx_command_t::empty()];

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_sync_sticky_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX).cast_mut().cast(),
    // SAFETY: only the address is taken; nginx reads the table.
    commands: unsafe { ptr::addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    ..ngx_module_t::default()
};

/// The module, as the tag of its shared zones.
pub fn module() -> *const ngx_module_t {
    ptr::addr_of!(ngx_http_sync_sticky_module)
}

/// The module's index among http modules.
pub fn ctx_index() -> usize {
    // SAFETY: set by nginx before any configuration is parsed.
    unsafe { (*module()).ctx_index }
}

/// The sticky configuration of an upstream.
///
/// # Safety
/// `us` is an upstream of the running configuration.
pub unsafe fn conf_of(us: *const ngx_http_upstream_srv_conf_t) -> *mut StickyConf {
    (*(*us).srv_conf.add(ctx_index())).cast()
}

unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let c = nginx_sys::ngx_pcalloc((*cf).pool, mem::size_of::<StickyConf>()).cast::<StickyConf>();
    if c.is_null() {
        return ptr::null_mut();
    }
    // All zero (no mode, null pointers, no flags) but `expires`.
    (*c).cookie.expires = EXPIRES_UNSET;
    c.cast()
}

fn emerg(cf: *mut ngx_conf_t, args: core::fmt::Arguments<'_>) -> *mut c_char {
    ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", args);
    CONF_ERROR
}

fn lossy(b: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(b)
}

/// `sticky cookie|route|learn ...` in an `upstream` block.
unsafe extern "C" fn set_sticky(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let sc = &mut *conf.cast::<StickyConf>();
    if sc.mode != Mode::None {
        return conf_msg(c"is duplicate");
    }
    let ctx = (*cf).ctx.cast::<ngx_http_conf_ctx_t>();
    let upstream = ptr::addr_of!(nginx_sys::ngx_http_upstream_module);
    let us = (*(*ctx).srv_conf.add((*upstream).ctx_index)).cast::<ngx_http_upstream_srv_conf_t>();
    let args = conf_args(cf);
    let directive = str_bytes(&args[0]);

    sc.lookup = nginx_sys::ngx_array_create((*cf).pool, 1, mem::size_of::<ngx_int_t>());
    sc.create = nginx_sys::ngx_array_create((*cf).pool, 1, mem::size_of::<ngx_int_t>());
    if sc.lookup.is_null() || sc.create.is_null() {
        return CONF_ERROR;
    }

    let rv = match str_bytes(&args[1]) {
        b"cookie" => parse_cookie(cf, sc, args),
        b"learn" => parse_learn(cf, sc, us, args),
        b"route" => {
            // Before 1.29.6 the "server" directive has no "route=".
            #[cfg(not(ngx_core_sticky))]
            return emerg(
                cf,
                format_args!(
                    "\"{} route\" is not supported: it matches the \"route=\" parameter of \
                     \"server\", which this nginx's \"server\" directive does not have \
                     (use \"{} learn\" or \"{} cookie\")",
                    lossy(directive),
                    lossy(directive),
                    lossy(directive)
                ),
            );
            // Routes are stateless: nothing to sync.
            #[cfg(ngx_core_sticky)]
            return emerg(
                cf,
                format_args!(
                    "\"{} route\" is not supported: routes need no sync, use nginx's own \
                     \"sticky route\"",
                    lossy(directive)
                ),
            );
        }
        other => {
            return emerg(cf, format_args!("unknown parameter \"{}\"", lossy(other)));
        }
    };
    if rv != CONF_OK {
        return rv;
    }

    // Wrap the balancing method configured so far (sticky comes after it).
    sc.original_init_upstream = if (*us).peer.init_upstream.is_some() {
        (*us).peer.init_upstream
    } else {
        Some(nginx_sys::ngx_http_upstream_init_round_robin)
    };
    (*us).peer.init_upstream = Some(balancer::init_upstream);
    CONF_OK
}

/// Adds `$name` (given without the `$`) to an index array.
unsafe fn push_variable(cf: *mut ngx_conf_t, a: *mut ngx_array_t, name: ngx_str_t) -> bool {
    let mut name = name;
    let index = nginx_sys::ngx_http_get_variable_index(cf, &mut name);
    if index == NGX_ERROR as ngx_int_t {
        return false;
    }
    let p = nginx_sys::ngx_array_push(a).cast::<ngx_int_t>();
    if p.is_null() {
        return false;
    }
    *p = index;
    true
}

/// A sub-string of a configuration argument, from byte `from`.
unsafe fn tail(a: &ngx_str_t, from: usize) -> ngx_str_t {
    ngx_str_t {
        len: a.len - from,
        data: a.data.add(from),
    }
}

unsafe fn compile(cf: *mut ngx_conf_t, value: ngx_str_t) -> *mut ngx_http_complex_value_t {
    let cv = nginx_sys::ngx_pcalloc((*cf).pool, mem::size_of::<ngx_http_complex_value_t>())
        .cast::<ngx_http_complex_value_t>();
    if cv.is_null() {
        return cv;
    }
    let mut value = value;
    let mut ccv: ngx_http_compile_complex_value_t = mem::zeroed();
    ccv.cf = cf;
    ccv.value = &mut value;
    ccv.complex_value = cv;
    if nginx_sys::ngx_http_compile_complex_value(&mut ccv) != NGX_OK as ngx_int_t {
        return ptr::null_mut();
    }
    cv
}

/// Whether `v` is a SameSite value (`strict`, `lax`, `none`, any case).
pub fn valid_samesite(v: &[u8]) -> bool {
    [&b"strict"[..], b"lax", b"none"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(v))
}

/// `sticky cookie name [expires=time|max] [domain=domain] [httponly]
/// [samesite=strict|lax|none|$variable] [secure] [path=path]`.
unsafe fn parse_cookie(
    cf: *mut ngx_conf_t,
    sc: &mut StickyConf,
    args: &[ngx_str_t],
) -> *mut c_char {
    sc.mode = Mode::Cookie;
    let Some(name) = args.get(2) else {
        return conf_msg(c"needs a cookie name");
    };
    if name.len == 0 {
        return conf_msg(c"empty cookie name");
    }
    let c = &mut sc.cookie;
    c.name = *name;
    for a in &args[3..] {
        let arg = str_bytes(a);
        if let Some(v) = arg.strip_prefix(b"domain=") {
            if !c.domain.is_null() {
                return conf_msg(c"parameter \"domain\" is duplicate");
            }
            if v.is_empty() {
                return conf_msg(c"no value for \"domain\"");
            }
            c.domain = compile(cf, tail(a, 7));
            if c.domain.is_null() {
                return CONF_ERROR;
            }
        } else if let Some(v) = arg.strip_prefix(b"path=") {
            if c.path.len != 0 {
                return conf_msg(c"parameter \"path\" is duplicate");
            }
            if v.is_empty() {
                return conf_msg(c"no value for \"path\"");
            }
            let text = [&b"; path="[..], v].concat();
            let p = nginx_sys::ngx_pnalloc((*cf).pool, text.len()).cast::<u8>();
            if p.is_null() {
                return CONF_ERROR;
            }
            ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
            c.path = ngx_str_t {
                len: text.len(),
                data: p,
            };
        } else if let Some(v) = arg.strip_prefix(b"expires=") {
            if c.expires != EXPIRES_UNSET {
                return conf_msg(c"parameter \"expires\" is duplicate");
            }
            if v == b"max" {
                c.expires = EXPIRES_MAX;
            } else {
                let mut s = tail(a, 8);
                let t = nginx_sys::ngx_parse_time(&mut s, 1);
                if t == NGX_ERROR as isize {
                    return conf_msg(c"invalid \"expires\" parameter value");
                }
                c.expires = t as nginx_sys::time_t;
            }
        } else if arg == b"httponly" {
            if c.httponly {
                return conf_msg(c"parameter \"httponly\" is duplicate");
            }
            c.httponly = true;
        } else if arg == b"secure" {
            if c.secure {
                return conf_msg(c"parameter \"secure\" is duplicate");
            }
            c.secure = true;
        } else if let Some(v) = arg.strip_prefix(b"samesite=") {
            if !c.samesite.is_null() {
                return conf_msg(c"parameter \"samesite\" is duplicate");
            }
            c.samesite = compile(cf, tail(a, 9));
            if c.samesite.is_null() {
                return CONF_ERROR;
            }
            if (*c.samesite).lengths.is_null() && !valid_samesite(v) {
                return conf_msg(c"invalid \"samesite\" parameter value");
            }
        } else {
            return emerg(cf, format_args!("unknown parameter \"{}\"", lossy(arg)));
        }
    }
    // Requests name their server in the cookie.
    let var = [&b"cookie_"[..], str_bytes(name)].concat();
    let p = nginx_sys::ngx_pnalloc((*cf).pool, var.len()).cast::<u8>();
    if p.is_null() {
        return CONF_ERROR;
    }
    ptr::copy_nonoverlapping(var.as_ptr(), p, var.len());
    let var = ngx_str_t {
        len: var.len(),
        data: p,
    };
    if !push_variable(cf, sc.lookup, var) {
        return CONF_ERROR;
    }
    CONF_OK
}

/// `sticky learn create=$variable lookup=$variable zone=name:size
/// [timeout=time] [header] [sync]`.
unsafe fn parse_learn(
    cf: *mut ngx_conf_t,
    sc: &mut StickyConf,
    us: *mut ngx_http_upstream_srv_conf_t,
    args: &[ngx_str_t],
) -> *mut c_char {
    sc.mode = Mode::Learn;
    let mut zone: Option<(ngx_str_t, usize)> = None;
    let mut timeout: Option<u64> = None;
    let mut sync = false;
    for a in &args[2..] {
        let arg = str_bytes(a);
        if let Some(v) = arg.strip_prefix(b"zone=") {
            if zone.is_some() {
                return conf_msg(c"duplicate zone");
            }
            let Some(colon) = v.iter().position(|&b| b == b':') else {
                return conf_msg(c"zone size is not specified");
            };
            if colon == 0 {
                return conf_msg(c"zone name is not specified");
            }
            let mut size = tail(a, 5 + colon + 1);
            let n = nginx_sys::ngx_parse_size(&mut size);
            if n == NGX_ERROR as isize {
                return conf_msg(c"invalid zone size");
            }
            if (n as usize) < 8 * nginx_sys::ngx_pagesize {
                return conf_msg(c"zone is too small");
            }
            let name = ngx_str_t {
                len: colon,
                data: a.data.add(5),
            };
            zone = Some((name, n as usize));
        } else if let Some(v) = arg.strip_prefix(b"timeout=") {
            if timeout.is_some() {
                return conf_msg(c"duplicate timeout");
            }
            let mut s = tail(a, 8);
            let t = nginx_sys::ngx_parse_time(&mut s, 0);
            if t == NGX_ERROR as isize || t == 0 || v.is_empty() {
                return conf_msg(c"invalid timeout");
            }
            timeout = Some(t as u64);
        } else if let Some(v) = arg.strip_prefix(b"create=") {
            if v.first() != Some(&b'$') {
                return conf_msg(c"missing variable in the \"create\" parameter");
            }
            if !push_variable(cf, sc.create, tail(a, 8)) {
                return CONF_ERROR;
            }
        } else if let Some(v) = arg.strip_prefix(b"lookup=") {
            if v.first() != Some(&b'$') {
                return conf_msg(c"missing variable in the \"lookup\" parameter");
            }
            if !push_variable(cf, sc.lookup, tail(a, 8)) {
                return CONF_ERROR;
            }
        } else if arg == b"header" {
            sc.header = true;
        } else if arg == b"sync" {
            sync = true;
        } else {
            return emerg(cf, format_args!("unknown parameter \"{}\"", lossy(arg)));
        }
    }
    if (*sc.lookup).nelts == 0 {
        return conf_msg(c"\"lookup\" parameter is not specified");
    }
    if (*sc.create).nelts == 0 {
        return conf_msg(c"\"create\" parameter is not specified");
    }
    let Some((mut name, size)) = zone else {
        return conf_msg(c"\"zone\" parameter is not specified");
    };
    let shm = nginx_sys::ngx_shared_memory_add(cf, &mut name, size, module().cast_mut().cast());
    if shm.is_null() {
        return CONF_ERROR;
    }
    if !(*shm).data.is_null() {
        let z = &*(*shm).data.cast::<StickyZone>();
        return emerg(
            cf,
            format_args!(
                "sticky zone \"{}\" is already used in upstream \"{}\"",
                lossy(str_bytes(&name)),
                lossy(str_bytes(&z.upstream))
            ),
        );
    }
    let z = nginx_sys::ngx_pcalloc((*cf).pool, mem::size_of::<StickyZone>()).cast::<StickyZone>();
    if z.is_null() {
        return CONF_ERROR;
    }
    z.write(StickyZone {
        shm,
        timeout: timeout.unwrap_or(600_000),
        sync,
        upstream: (*us).host,
        table: None,
    });
    (*shm).data = z.cast();
    (*shm).init = Some(zone::init_zone);
    sc.zone = z;
    CONF_OK
}

static mut NEXT_HEADER_FILTER: ngx_http_output_header_filter_pt = None;

unsafe extern "C" fn postconfiguration(_cf: *mut ngx_conf_t) -> ngx_int_t {
    // SAFETY: configuration runs single-threaded; every http filter links
    // itself into the chain this way.
    NEXT_HEADER_FILTER = nginx_sys::ngx_http_top_header_filter;
    nginx_sys::ngx_http_top_header_filter = Some(header_filter);
    NGX_OK as ngx_int_t
}

/// Learns a session when the response headers arrive (`header`), and sets
/// the cookie of `sticky cookie`, for requests a sticky upstream served.
unsafe extern "C" fn header_filter(r: *mut ngx_http_request_t) -> ngx_int_t {
    if balancer::on_response_header(r).is_err() {
        return NGX_ERROR as ngx_int_t;
    }
    match NEXT_HEADER_FILTER {
        Some(next) => next(r),
        None => NGX_OK as ngx_int_t,
    }
}

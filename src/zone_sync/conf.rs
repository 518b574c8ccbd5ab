//! Configuration of `ngx_stream_zone_sync_module`: the directive table, the
//! srv/main conf structures, their create/merge functions and the directive
//! handlers. Every default lives in `merge_srv_conf`.

use core::ffi::{c_char, c_void};
use core::{mem, ptr};

use nginx_sys::{
    ngx_array_create, ngx_array_push, ngx_array_t, ngx_bufs_t, ngx_cmp_sockaddr, ngx_command_t,
    ngx_conf_bitmask_t, ngx_conf_post_t, ngx_conf_set_flag_slot, ngx_conf_set_keyval_slot,
    ngx_conf_set_msec_slot, ngx_conf_set_num_slot, ngx_conf_set_size_slot, ngx_conf_set_str_slot,
    ngx_conf_t, ngx_flag_t, ngx_msec_t, ngx_parse_size, ngx_parse_url, ngx_pcalloc, ngx_ssl_t,
    ngx_str_t, ngx_stream_conf_ctx_t, ngx_stream_core_srv_conf_t, ngx_uint_t, ngx_url_t,
    NGX_SSL_SSLv2, NGX_SSL_SSLv3, NGX_SSL_TLSv1, NGX_SSL_TLSv1_1, NGX_SSL_TLSv1_2, NGX_SSL_TLSv1_3,
    NGX_CONF_1MORE, NGX_CONF_BITMASK_SET, NGX_CONF_FLAG, NGX_CONF_NOARGS, NGX_CONF_TAKE1,
    NGX_CONF_TAKE12, NGX_CONF_TAKE2, NGX_LOG_EMERG, NGX_STREAM_MAIN_CONF, NGX_STREAM_SRV_CONF,
};
use ngx::{ngx_conf_log_error, ngx_log_error, ngx_string};

use super::ssl;
use crate::ngx_ext::{
    array_slice, conf_args, conf_msg, merge_flag, merge_msec, merge_ptr, merge_size, merge_str,
    merge_uint, str_bytes, stream_main_conf, stream_srv_conf, CONF_ERROR, CONF_OK, CONF_UNSET_FLAG,
    CONF_UNSET_MSEC, CONF_UNSET_PTR, CONF_UNSET_SIZE, CONF_UNSET_UINT,
};

/// One `zone_sync_server` directive.
#[repr(C)]
pub struct ServerConf {
    /// The parsed address; for a static name, `addrs` holds every address
    /// it resolved to at configuration time (each one a node).
    pub url: ngx_url_t,
    /// The `resolve` parameter: re-resolve `url.host` at run time.
    pub resolve: bool,
}

/// Per-server configuration (also the `stream` level, for inheritance).
#[repr(C)]
pub struct SrvConf {
    /// `zone_sync` is present in this server.
    pub enabled: ngx_flag_t,
    pub bufs: ngx_bufs_t,
    pub connect_retry_interval: ngx_msec_t,
    pub connect_timeout: ngx_msec_t,
    pub interval: ngx_msec_t,
    pub recv_buffer_size: usize,
    pub timeout: ngx_msec_t,

    pub ssl_enable: ngx_flag_t,
    pub ssl_protocols: ngx_uint_t,
    pub ssl_ciphers: ngx_str_t,
    pub ssl_certificate: ngx_str_t,
    pub ssl_certificate_key: ngx_str_t,
    pub ssl_passwords: *mut ngx_array_t,
    pub ssl_trusted_certificate: ngx_str_t,
    pub ssl_crl: ngx_str_t,
    pub ssl_verify: ngx_flag_t,
    pub ssl_verify_depth: ngx_uint_t,
    pub ssl_name: ngx_str_t,
    pub ssl_server_name: ngx_flag_t,
    pub ssl_conf_commands: *mut ngx_array_t,
    /// The client TLS context, built at configuration time (zone_sync
    /// server only, when `zone_sync_ssl on`).
    pub ssl: *mut ngx_ssl_t,

    /// `zone_sync_server` entries (array of [`ServerConf`]), null if none.
    pub servers: *mut ngx_array_t,
}

impl SrvConf {
    pub fn servers(&self) -> &[ServerConf] {
        // SAFETY: `servers` is null or an array of ServerConf made below.
        unsafe { array_slice(self.servers) }
    }
}

/// `stream`-level state of the module.
#[repr(C)]
pub struct MainConf {
    /// The one server with `zone_sync`, or null.
    pub zone_sync: *mut SrvConf,
    /// Where that `zone_sync` directive was, for duplicate messages.
    pub file: ngx_str_t,
    pub line: ngx_uint_t,
    /// The shared counters zone ([`super::status`]).
    pub status: *mut nginx_sys::ngx_shm_zone_t,
    /// The stream core conf of the zone_sync server (its `resolver`).
    pub core: *mut ngx_stream_core_srv_conf_t,
}

static mut SSL_PROTOCOLS: [ngx_conf_bitmask_t; 7] = [
    ngx_conf_bitmask_t {
        name: ngx_string!("SSLv2"),
        mask: NGX_SSL_SSLv2 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_string!("SSLv3"),
        mask: NGX_SSL_SSLv3 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_string!("TLSv1"),
        mask: NGX_SSL_TLSv1 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_string!("TLSv1.1"),
        mask: NGX_SSL_TLSv1_1 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_string!("TLSv1.2"),
        mask: NGX_SSL_TLSv1_2 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_string!("TLSv1.3"),
        mask: NGX_SSL_TLSv1_3 as ngx_uint_t,
    },
    ngx_conf_bitmask_t {
        name: ngx_str_t {
            len: 0,
            data: ptr::null_mut(),
        },
        mask: 0,
    },
];

/// Post handler shared by every time and size directive: zero is refused.
static mut NONZERO_POST: ngx_conf_post_t = ngx_conf_post_t {
    post_handler: Some(check_nonzero),
};

const SRV: u32 = NGX_STREAM_SRV_CONF;
const MAIN_SRV: u32 = NGX_STREAM_MAIN_CONF | NGX_STREAM_SRV_CONF;
const SRV_OFFSET: ngx_uint_t = mem::offset_of!(ngx_stream_conf_ctx_t, srv_conf);

macro_rules! command {
    ($name:literal, $type:expr, $set:expr, $offset:expr, $post:expr) => {
        ngx_command_t {
            name: ngx_string!($name),
            type_: ($type) as ngx_uint_t,
            set: Some($set),
            conf: SRV_OFFSET,
            offset: $offset,
            post: $post,
        }
    };
    ($name:literal, $type:expr, $set:expr, $offset:expr) => {
        command!($name, $type, $set, $offset, ptr::null_mut())
    };
}

macro_rules! field {
    ($f:ident) => {
        mem::offset_of!(SrvConf, $f)
    };
}

pub static mut COMMANDS: [ngx_command_t; 22] = [
    command!("zone_sync", SRV | NGX_CONF_NOARGS, set_zone_sync, 0),
    command!("zone_sync_server", SRV | NGX_CONF_TAKE12, set_server, 0),
    command!(
        "zone_sync_buffers",
        MAIN_SRV | NGX_CONF_TAKE2,
        set_buffers,
        field!(bufs)
    ),
    command!(
        "zone_sync_connect_retry_interval",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(connect_retry_interval),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    command!(
        "zone_sync_connect_timeout",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(connect_timeout),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    command!(
        "zone_sync_interval",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(interval),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    command!(
        "zone_sync_recv_buffer_size",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_size_slot,
        field!(recv_buffer_size),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    command!(
        "zone_sync_timeout",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_msec_slot,
        field!(timeout),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    command!(
        "zone_sync_ssl",
        MAIN_SRV | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(ssl_enable)
    ),
    command!(
        "zone_sync_ssl_certificate",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_certificate)
    ),
    command!(
        "zone_sync_ssl_certificate_key",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_certificate_key)
    ),
    command!(
        "zone_sync_ssl_ciphers",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_ciphers)
    ),
    command!(
        "zone_sync_ssl_conf_command",
        MAIN_SRV | NGX_CONF_TAKE2,
        ngx_conf_set_keyval_slot,
        field!(ssl_conf_commands)
    ),
    command!(
        "zone_sync_ssl_crl",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_crl)
    ),
    command!(
        "zone_sync_ssl_name",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_name)
    ),
    command!(
        "zone_sync_ssl_password_file",
        MAIN_SRV | NGX_CONF_TAKE1,
        set_password_file,
        field!(ssl_passwords)
    ),
    command!(
        "zone_sync_ssl_protocols",
        MAIN_SRV | NGX_CONF_1MORE,
        set_protocols,
        field!(ssl_protocols)
    ),
    command!(
        "zone_sync_ssl_server_name",
        MAIN_SRV | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(ssl_server_name)
    ),
    command!(
        "zone_sync_ssl_trusted_certificate",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_str_slot,
        field!(ssl_trusted_certificate)
    ),
    command!(
        "zone_sync_ssl_verify",
        MAIN_SRV | NGX_CONF_FLAG,
        ngx_conf_set_flag_slot,
        field!(ssl_verify)
    ),
    command!(
        "zone_sync_ssl_verify_depth",
        MAIN_SRV | NGX_CONF_TAKE1,
        ngx_conf_set_num_slot,
        field!(ssl_verify_depth),
        ptr::addr_of_mut!(NONZERO_POST).cast()
    ),
    ngx_command_t::empty(),
];

/// # Safety
/// Called by nginx with the configuration being parsed.
pub unsafe extern "C" fn create_main_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    // ngx_pcalloc: zone_sync null, file empty, line 0.
    ngx_pcalloc((*cf).pool, mem::size_of::<MainConf>())
}

/// # Safety
/// Called by nginx with the configuration being parsed.
pub unsafe extern "C" fn create_srv_conf(cf: *mut ngx_conf_t) -> *mut c_void {
    let conf = ngx_pcalloc((*cf).pool, mem::size_of::<SrvConf>()).cast::<SrvConf>();
    if conf.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: freshly allocated and zeroed; every field below is plain data.
    // Zeroed strings and null pointers already mean "unset" (ssl_ciphers,
    // certificates, ssl, servers); the rest start at nginx's sentinels so
    // that the stock slot handlers detect duplicates and merge works.
    let c = &mut *conf;
    c.enabled = CONF_UNSET_FLAG;
    c.bufs.num = 0;
    c.connect_retry_interval = CONF_UNSET_MSEC;
    c.connect_timeout = CONF_UNSET_MSEC;
    c.interval = CONF_UNSET_MSEC;
    c.recv_buffer_size = CONF_UNSET_SIZE;
    c.timeout = CONF_UNSET_MSEC;
    c.ssl_enable = CONF_UNSET_FLAG;
    c.ssl_protocols = 0;
    c.ssl_passwords = CONF_UNSET_PTR.cast();
    c.ssl_verify = CONF_UNSET_FLAG;
    c.ssl_verify_depth = CONF_UNSET_UINT;
    c.ssl_server_name = CONF_UNSET_FLAG;
    c.ssl_conf_commands = CONF_UNSET_PTR.cast();
    conf.cast()
}

/// # Safety
/// Called by nginx with the configuration being parsed and two confs made
/// by [`create_srv_conf`].
pub unsafe extern "C" fn merge_srv_conf(
    cf: *mut ngx_conf_t,
    parent: *mut c_void,
    child: *mut c_void,
) -> *mut c_char {
    // SAFETY: nginx passes the stream-level and the server-level SrvConf
    // made by create_srv_conf.
    let prev = &*parent.cast::<SrvConf>();
    let conf = &mut *child.cast::<SrvConf>();

    merge_flag(&mut conf.enabled, CONF_UNSET_FLAG, 0);
    if conf.bufs.num == 0 {
        conf.bufs = prev.bufs;
        if conf.bufs.num == 0 {
            conf.bufs.num = 8;
            conf.bufs.size = nginx_sys::ngx_pagesize;
        }
    }
    merge_msec(
        &mut conf.connect_retry_interval,
        prev.connect_retry_interval,
        1000,
    );
    merge_msec(&mut conf.connect_timeout, prev.connect_timeout, 5000);
    merge_msec(&mut conf.interval, prev.interval, 1000);
    merge_size(
        &mut conf.recv_buffer_size,
        prev.recv_buffer_size,
        conf.bufs.size * conf.bufs.num as usize,
    );
    merge_msec(&mut conf.timeout, prev.timeout, 5000);

    merge_flag(&mut conf.ssl_enable, prev.ssl_enable, 0);
    if conf.ssl_protocols == 0 {
        conf.ssl_protocols = if prev.ssl_protocols == 0 {
            (NGX_CONF_BITMASK_SET | NGX_SSL_TLSv1_2 | NGX_SSL_TLSv1_3) as ngx_uint_t
        } else {
            prev.ssl_protocols
        };
    }
    merge_str(&mut conf.ssl_ciphers, prev.ssl_ciphers, c"DEFAULT");
    merge_str(&mut conf.ssl_certificate, prev.ssl_certificate, c"");
    merge_str(&mut conf.ssl_certificate_key, prev.ssl_certificate_key, c"");
    merge_ptr(&mut conf.ssl_passwords, prev.ssl_passwords, ptr::null_mut());
    merge_str(
        &mut conf.ssl_trusted_certificate,
        prev.ssl_trusted_certificate,
        c"",
    );
    merge_str(&mut conf.ssl_crl, prev.ssl_crl, c"");
    merge_flag(&mut conf.ssl_verify, prev.ssl_verify, 0);
    merge_uint(&mut conf.ssl_verify_depth, prev.ssl_verify_depth, 1);
    merge_str(&mut conf.ssl_name, prev.ssl_name, c"");
    merge_flag(&mut conf.ssl_server_name, prev.ssl_server_name, 0);
    merge_ptr(
        &mut conf.ssl_conf_commands,
        prev.ssl_conf_commands,
        ptr::null_mut(),
    );

    // The server block this conf belongs to, for "in file:line" messages.
    let cscf = &*stream_srv_conf::<ngx_stream_core_srv_conf_t>(
        cf,
        &*ptr::addr_of!(nginx_sys::ngx_stream_core_module),
    );
    let file = cscf.file_name;
    let line = cscf.line;

    // Checked here, once both are known; nginx's style for errors found
    // while merging: the location of the server block they apply to.
    let at = format!("for server in {}:{}", cstr_lossy(file), line);

    if conf.recv_buffer_size < conf.bufs.size {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync_recv_buffer_size\" ({}) must be at least one \"zone_sync_buffers\" buffer \
             ({}) {}",
            conf.recv_buffer_size,
            conf.bufs.size,
            at
        );
        return CONF_ERROR;
    }

    if conf.enabled != 1 {
        if !conf.servers.is_null() {
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*cf).log,
                "\"zone_sync_server\" requires \"zone_sync\" {}",
                at
            );
            return CONF_ERROR;
        }
        return CONF_OK;
    }

    let servers = conf.servers();
    if servers.is_empty() {
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync\" requires at least one \"zone_sync_server\" {}",
            at
        );
        return CONF_ERROR;
    }

    if servers.iter().any(|s| s.resolve) {
        let resolver = cscf.resolver;
        if resolver.is_null() || (*resolver).connections.nelts == 0 {
            ngx_log_error!(
                NGX_LOG_EMERG,
                (*cf).log,
                "no resolver defined to resolve names at run time in \"zone_sync_server\" {}",
                at
            );
            return CONF_ERROR;
        }
    }

    if conf.ssl_enable == 1 && ssl::configure(cf, conf, &at).is_err() {
        return CONF_ERROR;
    }

    CONF_OK
}

fn cstr_lossy(p: *const u8) -> std::borrow::Cow<'static, str> {
    if p.is_null() {
        return "?".into();
    }
    // SAFETY: nginx keeps configuration file names NUL-terminated for the
    // lifetime of the cycle.
    unsafe { core::ffi::CStr::from_ptr(p.cast()) }.to_string_lossy()
}

/// `zone_sync;`
unsafe extern "C" fn set_zone_sync(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = conf.cast::<SrvConf>();
    if (*conf).enabled != CONF_UNSET_FLAG {
        return conf_msg(c"is duplicate");
    }
    let module = &*ptr::addr_of!(super::ngx_stream_zone_sync_module);
    let mcf = &mut *stream_main_conf::<MainConf>(cf, module);
    if !mcf.zone_sync.is_null() {
        let here = &*(*cf).conf_file;
        ngx_log_error!(
            NGX_LOG_EMERG,
            (*cf).log,
            "\"zone_sync\" directive is duplicate in {}:{}, another server enables it in {}:{}",
            String::from_utf8_lossy(str_bytes(&here.file.name)),
            here.line,
            String::from_utf8_lossy(str_bytes(&mcf.file)),
            mcf.line
        );
        return CONF_ERROR;
    }
    (*conf).enabled = 1;
    mcf.zone_sync = conf;
    mcf.core = stream_srv_conf::<ngx_stream_core_srv_conf_t>(
        cf,
        &*ptr::addr_of!(nginx_sys::ngx_stream_core_module),
    );
    mcf.status = super::status::declare(
        cf,
        ptr::addr_of_mut!(super::ngx_stream_zone_sync_module).cast(),
    );
    if mcf.status.is_null() {
        return CONF_ERROR;
    }
    mcf.file = (*(*cf).conf_file).file.name;
    mcf.line = (*(*cf).conf_file).line;

    let cscf = &mut *stream_srv_conf::<ngx_stream_core_srv_conf_t>(
        cf,
        &*ptr::addr_of!(nginx_sys::ngx_stream_core_module),
    );
    cscf.handler = Some(super::inbound::handler);
    CONF_OK
}

/// `zone_sync_server address [resolve];`
unsafe extern "C" fn set_server(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut *conf.cast::<SrvConf>();
    let args = conf_args(cf);
    let value = args[1];

    // nginx < 1.25.5 refuses a stream server without a content handler
    // while merging ("no handler for server"), before merge_srv_conf can
    // name the real mistake ("zone_sync_server" requires "zone_sync").
    #[cfg(not(ngx_1_25))]
    {
        let cscf = &mut *stream_srv_conf::<ngx_stream_core_srv_conf_t>(
            cf,
            &*ptr::addr_of!(nginx_sys::ngx_stream_core_module),
        );
        if cscf.handler.is_none() {
            cscf.handler = Some(super::inbound::handler);
        }
    }

    let resolve = match args.get(2) {
        None => false,
        Some(a) if str_bytes(a) == b"resolve" => true,
        Some(a) => {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid parameter \"{}\" in \"zone_sync_server\" directive",
                String::from_utf8_lossy(str_bytes(a))
            );
            return CONF_ERROR;
        }
    };

    let mut url: ngx_url_t = mem::zeroed();
    url.url = value;
    url.default_port = 0;
    url.set_no_resolve(u32::from(resolve));

    if ngx_parse_url((*cf).pool, &mut url) != nginx_sys::NGX_OK as isize {
        let err = if url.err.is_null() {
            "invalid address".into()
        } else {
            cstr_lossy(url.err.cast())
        };
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "{} in \"{}\" of the \"zone_sync_server\" directive",
            err,
            String::from_utf8_lossy(str_bytes(&value))
        );
        return CONF_ERROR;
    }

    let is_unix = url.family == libc::AF_UNIX;
    if !is_unix && (url.no_port() != 0 || url.port == 0) {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "no port in \"{}\" of the \"zone_sync_server\" directive",
            String::from_utf8_lossy(str_bytes(&value))
        );
        return CONF_ERROR;
    }
    if url.uri.len != 0 && !is_unix {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid address \"{}\" of the \"zone_sync_server\" directive",
            String::from_utf8_lossy(str_bytes(&value))
        );
        return CONF_ERROR;
    }
    if resolve && !is_unix && url.naddrs > 0 {
        // ngx_parse_url() parsed a literal address: nothing to resolve.
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"resolve\" needs a name, not the address \"{}\", in the \"zone_sync_server\" directive",
            String::from_utf8_lossy(str_bytes(&value))
        );
        return CONF_ERROR;
    }
    if resolve && is_unix {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "\"resolve\" cannot be used with a unix socket in \"{}\" of the \"zone_sync_server\" \
             directive",
            String::from_utf8_lossy(str_bytes(&value))
        );
        return CONF_ERROR;
    }

    if conf.servers.is_null() {
        conf.servers = ngx_array_create((*cf).pool, 4, mem::size_of::<ServerConf>());
        if conf.servers.is_null() {
            return CONF_ERROR;
        }
    }

    for other in conf.servers() {
        if resolve || other.resolve {
            let what = if resolve && other.resolve {
                "only one \"zone_sync_server\" with \"resolve\" is allowed"
            } else {
                "a \"zone_sync_server\" with \"resolve\" cannot be mixed with static servers"
            };
            ngx_conf_log_error!(NGX_LOG_EMERG, cf, "{}", what);
            return CONF_ERROR;
        }
        if same_node(other, &url) {
            let first = str_bytes(&other.url.url);
            if first == str_bytes(&value) {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "duplicate node \"{}\" in \"zone_sync_server\" directive",
                    String::from_utf8_lossy(str_bytes(&value))
                );
            } else {
                ngx_conf_log_error!(
                    NGX_LOG_EMERG,
                    cf,
                    "duplicate node \"{}\" in \"zone_sync_server\" directive, the same as \"{}\"",
                    String::from_utf8_lossy(str_bytes(&value)),
                    String::from_utf8_lossy(first)
                );
            }
            return CONF_ERROR;
        }
    }
    // Two addresses of one name that are the same node.
    let addrs: &[nginx_sys::ngx_addr_t] = if url.addrs.is_null() {
        &[]
    } else {
        core::slice::from_raw_parts(url.addrs, url.naddrs)
    };
    for (i, a) in addrs.iter().enumerate() {
        if addrs[..i]
            .iter()
            .any(|b| ngx_cmp_sockaddr(a.sockaddr, a.socklen, b.sockaddr, b.socklen, 1) == 0)
        {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "duplicate node \"{}\" in \"zone_sync_server\" directive, the name has one \
                 address twice",
                String::from_utf8_lossy(str_bytes(&value))
            );
            return CONF_ERROR;
        }
    }

    let entry = ngx_array_push(conf.servers).cast::<ServerConf>();
    if entry.is_null() {
        return CONF_ERROR;
    }
    entry.write(ServerConf { url, resolve });
    CONF_OK
}

/// Whether two static server entries share a node address.
unsafe fn same_node(a: &ServerConf, b: &ngx_url_t) -> bool {
    if a.url.addrs.is_null() || b.addrs.is_null() {
        return str_bytes(&a.url.url) == str_bytes(&b.url);
    }
    let xs = core::slice::from_raw_parts(a.url.addrs, a.url.naddrs);
    let ys = core::slice::from_raw_parts(b.addrs, b.naddrs);
    xs.iter().any(|x| {
        ys.iter()
            .any(|y| ngx_cmp_sockaddr(x.sockaddr, x.socklen, y.sockaddr, y.socklen, 1) == 0)
    })
}

/// `zone_sync_buffers number size;`
unsafe extern "C" fn set_buffers(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut *conf.cast::<SrvConf>();
    if conf.bufs.num != 0 {
        return conf_msg(c"is duplicate");
    }
    let args = conf_args(cf);
    let num = nginx_sys::ngx_atoi(args[1].data, args[1].len);
    if num <= 0 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid number of buffers \"{}\" in \"zone_sync_buffers\" directive",
            String::from_utf8_lossy(str_bytes(&args[1]))
        );
        return CONF_ERROR;
    }
    let mut size_arg = args[2];
    let size = ngx_parse_size(&mut size_arg);
    if size <= 0 {
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid buffer size \"{}\" in \"zone_sync_buffers\" directive",
            String::from_utf8_lossy(str_bytes(&args[2]))
        );
        return CONF_ERROR;
    }
    conf.bufs.num = num;
    conf.bufs.size = size as usize;
    CONF_OK
}

/// `zone_sync_ssl_password_file file;`
unsafe extern "C" fn set_password_file(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut *conf.cast::<SrvConf>();
    if conf.ssl_passwords as *mut c_void != CONF_UNSET_PTR {
        return conf_msg(c"is duplicate");
    }
    let mut file = conf_args(cf)[1];
    conf.ssl_passwords = ssl::read_password_file(cf, &mut file);
    if conf.ssl_passwords.is_null() {
        return CONF_ERROR;
    }
    CONF_OK
}

/// `zone_sync_ssl_protocols [SSLv2] [SSLv3] [TLSv1] [TLSv1.1] [TLSv1.2] [TLSv1.3];`
///
/// nginx's bitmask slot, but a second directive on one level is refused
/// like every other single-valued directive, and an unknown name is
/// reported with the directive's name.
unsafe extern "C" fn set_protocols(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    conf: *mut c_void,
) -> *mut c_char {
    let conf = &mut *conf.cast::<SrvConf>();
    if conf.ssl_protocols != 0 {
        return conf_msg(c"is duplicate");
    }
    let names = &*ptr::addr_of!(SSL_PROTOCOLS);
    let mut mask = NGX_CONF_BITMASK_SET as ngx_uint_t;
    for a in &conf_args(cf)[1..] {
        let v = str_bytes(a);
        let Some(p) = names
            .iter()
            .take_while(|p| p.name.len != 0)
            .find(|p| str_bytes(&p.name).eq_ignore_ascii_case(v))
        else {
            ngx_conf_log_error!(
                NGX_LOG_EMERG,
                cf,
                "invalid value \"{}\" in \"zone_sync_ssl_protocols\" directive",
                String::from_utf8_lossy(v)
            );
            return CONF_ERROR;
        };
        mask |= p.mask;
    }
    conf.ssl_protocols = mask;
    CONF_OK
}

/// Refuses zero for times, sizes and counts: a zero interval would spin, a
/// zero timeout would drop every connection, a zero buffer holds nothing.
unsafe extern "C" fn check_nonzero(
    cf: *mut ngx_conf_t,
    _post: *mut c_void,
    data: *mut c_void,
) -> *mut c_char {
    // Every field using this post handler is one machine word.
    if *data.cast::<usize>() == 0 {
        let args = conf_args(cf);
        ngx_conf_log_error!(
            NGX_LOG_EMERG,
            cf,
            "invalid value \"{}\" in \"{}\" directive, it must be greater than zero",
            String::from_utf8_lossy(str_bytes(&args[1])),
            String::from_utf8_lossy(str_bytes(&args[0]))
        );
        return CONF_ERROR;
    }
    CONF_OK
}

// check_nonzero reads each field it guards as one machine word.
const _: () = assert!(mem::size_of::<ngx_msec_t>() == mem::size_of::<usize>());
const _: () = assert!(mem::size_of::<ngx_uint_t>() == mem::size_of::<usize>());

//! `ngx_http_keyval_module`: `keyval_zone` and `keyval` in the `http` block.

use core::ffi::{c_char, c_void};
use core::{mem, ptr};

use nginx_sys::{
    ngx_command_t, ngx_conf_t, ngx_cycle_t, ngx_http_compile_complex_value_t,
    ngx_http_complex_value_t, ngx_http_module_t, ngx_http_request_t, ngx_http_variable_value_t,
    ngx_int_t, ngx_module_t, ngx_str_t, ngx_uint_t, NGX_CONF_1MORE, NGX_CONF_TAKE3,
    NGX_HTTP_MAIN_CONF, NGX_HTTP_MODULE, NGX_HTTP_VAR_CHANGEABLE, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};
use ngx::ngx_string;

use super::var::{self, KeyvalVar};
use super::zone;
use crate::ngx_ext::{conf_args, CONF_ERROR, CONF_OK};

static CTX: ngx_http_module_t = ngx_http_module_t {
    preconfiguration: None,
    postconfiguration: Some(postconfiguration),
    create_main_conf: None,
    init_main_conf: None,
    create_srv_conf: None,
    merge_srv_conf: None,
    create_loc_conf: None,
    merge_loc_conf: None,
};

static mut COMMANDS: [ngx_command_t; 3] = [
    ngx_command_t {
        name: ngx_string!("keyval_zone"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_1MORE) as ngx_uint_t,
        set: Some(set_keyval_zone),
        conf: 0,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t {
        name: ngx_string!("keyval"),
        type_: (NGX_HTTP_MAIN_CONF | NGX_CONF_TAKE3) as ngx_uint_t,
        set: Some(set_keyval),
        conf: 0,
        offset: 0,
        post: ptr::null_mut(),
    },
    ngx_command_t::empty(),
];

#[used]
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut ngx_http_keyval_module: ngx_module_t = ngx_module_t {
    ctx: ptr::addr_of!(CTX).cast_mut().cast(),
    // SAFETY: only the address is taken.
    commands: unsafe { ptr::addr_of_mut!(COMMANDS[0]) },
    type_: NGX_HTTP_MODULE as ngx_uint_t,
    // The state file writer serves the http and the stream zones.
    init_process: Some(init_process),
    exit_master: Some(exit_master),
    ..ngx_module_t::default()
};

/// The module, as the tag of its shared zones.
pub fn module() -> *const ngx_module_t {
    ptr::addr_of!(ngx_http_keyval_module)
}

fn tag() -> *mut c_void {
    module().cast_mut().cast()
}

unsafe extern "C" fn set_keyval_zone(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    match zone::parse_keyval_zone(cf, tag(), "http") {
        Ok(()) => CONF_OK,
        Err(()) => CONF_ERROR,
    }
}

/// `keyval key $variable zone=name;`
unsafe extern "C" fn set_keyval(
    cf: *mut ngx_conf_t,
    _cmd: *mut ngx_command_t,
    _conf: *mut c_void,
) -> *mut c_char {
    let args = conf_args(cf);
    let Some((kv, name)) = var::parse(
        cf,
        args,
        tag(),
        "http",
        mem::size_of::<ngx_http_complex_value_t>(),
    ) else {
        return CONF_ERROR;
    };

    let mut key = args[1];
    let mut ccv: ngx_http_compile_complex_value_t = mem::zeroed();
    ccv.cf = cf;
    ccv.value = &mut key;
    ccv.complex_value = (*kv).key.cast();
    if nginx_sys::ngx_http_compile_complex_value(&mut ccv) != NGX_OK as ngx_int_t {
        return CONF_ERROR;
    }

    let mut name: ngx_str_t = name;
    let v = nginx_sys::ngx_http_add_variable(
        cf,
        &mut name,
        (NGX_HTTP_VAR_CHANGEABLE | NGX_HTTP_VAR_NOCACHEABLE) as ngx_uint_t,
    );
    if v.is_null() {
        return CONF_ERROR;
    }
    if (*v).get_handler.is_some() {
        return var::duplicate(cf, &name);
    }
    (*v).get_handler = Some(get_variable);
    (*v).set_handler = Some(set_variable);
    (*v).data = kv as usize;
    CONF_OK
}

unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    super::state::init_process(cycle);
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn exit_master(cycle: *mut ngx_cycle_t) {
    super::state::exit_master(cycle);
}

unsafe extern "C" fn postconfiguration(cf: *mut ngx_conf_t) -> ngx_int_t {
    match zone::check_declared(cf, tag()) {
        Ok(()) => NGX_OK as ngx_int_t,
        Err(()) => nginx_sys::NGX_ERROR as ngx_int_t,
    }
}

/// Evaluates the key of a `keyval` variable for this request.
unsafe fn eval_key(r: *mut ngx_http_request_t, kv: &KeyvalVar) -> Option<ngx_str_t> {
    let mut key = ngx_str_t {
        len: 0,
        data: ptr::null_mut(),
    };
    if nginx_sys::ngx_http_complex_value(r, kv.key.cast(), &mut key) != NGX_OK as ngx_int_t {
        return None;
    }
    Some(key)
}

unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) -> ngx_int_t {
    let kv = &*(data as *const KeyvalVar);
    let Some(key) = eval_key(r, kv) else {
        return nginx_sys::NGX_ERROR as ngx_int_t;
    };
    var::get(kv, &key, (*r).pool, &mut *v)
}

unsafe extern "C" fn set_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_http_variable_value_t,
    data: usize,
) {
    let kv = &*(data as *const KeyvalVar);
    if let Some(key) = eval_key(r, kv) {
        var::set(kv, &key, &*v, (*(*r).connection).log);
    }
}

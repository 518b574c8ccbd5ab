//! The content handler of an `api` location: reads the body of POST and
//! PATCH (in memory only, at most `client_body_buffer_size`), asks
//! [`zone_sync_core::api::handle`] and sends its answer.
//!
//! # Safety
//! Every `unsafe fn` here takes `r`, a live request of an `api` location,
//! as nginx hands it to the content handler or the body handler; nginx
//! keeps it (its pool, connection and configuration) alive until the
//! request is finalized, which happens after these functions return.

use core::ptr;
use core::slice;

use nginx_sys::{
    ngx_buf_t, ngx_chain_t, ngx_http_core_loc_conf_t, ngx_http_request_t, ngx_int_t, ngx_str_t,
    ngx_table_elt_t, ngx_uint_t, NGX_DONE, NGX_ERROR, NGX_HTTP_DELETE, NGX_HTTP_GET, NGX_HTTP_HEAD,
    NGX_HTTP_PATCH, NGX_HTTP_POST, NGX_HTTP_SPECIAL_RESPONSE, NGX_OK,
};
use zone_sync_core::api::{self, Method, Rejection, Request, Response};

use super::backend::NodeBackend;
use super::LocConf;
use crate::ngx_ext::str_bytes;

/// Room for a textual socket address (nginx's NGX_SOCKADDR_STRLEN is
/// about 110 for unix sockets).
const ADDR_LEN: usize = 256;

fn method(r: &ngx_http_request_t) -> Method {
    match r.method as u32 {
        NGX_HTTP_GET => Method::Get,
        NGX_HTTP_HEAD => Method::Head,
        NGX_HTTP_POST => Method::Post,
        NGX_HTTP_PATCH => Method::Patch,
        NGX_HTTP_DELETE => Method::Delete,
        _ => Method::Other,
    }
}

unsafe fn loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a LocConf {
    &*(*(*r).loc_conf.add(super::module().ctx_index)).cast::<LocConf>()
}

unsafe fn core_loc_conf<'a>(r: *mut ngx_http_request_t) -> &'a ngx_http_core_loc_conf_t {
    let index = (*ptr::addr_of!(nginx_sys::ngx_http_core_module)).ctx_index;
    &*(*(*r).loc_conf.add(index)).cast::<ngx_http_core_loc_conf_t>()
}

/// The content handler (`clcf->handler`).
///
/// # Safety
/// Called by nginx with a live request in an `api` location.
pub unsafe extern "C" fn handler(r: *mut ngx_http_request_t) -> ngx_int_t {
    let m = method(&*r);
    let lcf = loc_conf(r);
    // Only a write that will be carried out needs its body; the others get
    // their answer (405, ...) without it.
    if !(matches!(m, Method::Post | Method::Patch) && lcf.write != 0) {
        let rc = nginx_sys::ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        return respond(r, None);
    }

    let limit = core_loc_conf(r).client_body_buffer_size;
    if (*r).headers_in.content_length_n > limit as i64 {
        let rc = nginx_sys::ngx_http_discard_request_body(r);
        if rc != NGX_OK as ngx_int_t {
            return rc;
        }
        return respond(r, Some(Rejection::BodyTooLarge));
    }

    // One buffer in memory: a body that does not fit is refused, never
    // written to a temporary file for us.
    (*r).set_request_body_in_single_buf(1);
    (*r).set_request_body_in_file_only(0);
    (*r).set_request_body_in_persistent_file(0);
    (*r).set_request_body_in_clean_file(0);

    let rc = nginx_sys::ngx_http_read_client_request_body(r, Some(body_handler));
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        if rc == nginx_sys::NGX_HTTP_REQUEST_ENTITY_TOO_LARGE as ngx_int_t {
            // Over client_max_body_size (a chunked body): the rest of the
            // body is still unread, so the connection closes after.
            (*r).set_keepalive(0);
            (*r).set_lingering_close(1);
            return respond(r, Some(Rejection::BodyTooLarge));
        }
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// Called once the whole body has been read.
unsafe extern "C" fn body_handler(r: *mut ngx_http_request_t) {
    let rc = respond_with_body(r);
    nginx_sys::ngx_http_finalize_request(r, rc);
}

unsafe fn respond_with_body(r: *mut ngx_http_request_t) -> ngx_int_t {
    let limit = core_loc_conf(r).client_body_buffer_size;
    let rb = (*r).request_body;
    if rb.is_null() {
        return respond(r, None);
    }
    if !(*rb).temp_file.is_null() {
        return respond(r, Some(Rejection::BodyTooLarge));
    }
    let mut body = Vec::new();
    let mut cl = (*rb).bufs;
    while !cl.is_null() {
        let b = (*cl).buf;
        if !b.is_null() {
            if (*b).in_file() != 0 {
                return respond(r, Some(Rejection::BodyTooLarge));
            }
            let len = ((*b).last as usize).saturating_sub((*b).pos as usize);
            if body.len() + len > limit {
                return respond(r, Some(Rejection::BodyTooLarge));
            }
            if len > 0 {
                // SAFETY: pos..last is the buffer's filled part.
                body.extend_from_slice(slice::from_raw_parts((*b).pos, len));
            }
        }
        cl = (*cl).next;
    }
    respond_body(r, Some(&body), None)
}

unsafe fn respond(r: *mut ngx_http_request_t, rejection: Option<Rejection>) -> ngx_int_t {
    respond_body(r, None, rejection)
}

/// Builds the core request, gets the answer and sends it.
unsafe fn respond_body(
    r: *mut ngx_http_request_t,
    body: Option<&[u8]>,
    rejection: Option<Rejection>,
) -> ngx_int_t {
    let lcf = loc_conf(r);
    let uri = str_bytes(&(*r).uri);
    let path = api_path(core_loc_conf(r), uri);
    let request_id = request_id(r, lcf);
    let req = Request {
        method: method(&*r),
        path,
        args: str_bytes(&(*r).args),
        body,
        write_enabled: lcf.write != 0,
        request_id: &request_id,
    };
    let resp = match rejection {
        Some(rej) => api::reject(&req, rej),
        None => {
            let mut backend = NodeBackend {
                cycle: crate::ngx_ext::cycle(),
                log: (*(*r).connection).log,
                address: local_address(r),
            };
            api::handle(&req, &mut backend)
        }
    };
    send(r, &resp)
}

/// The part of the URI after the location's prefix. For a prefix or exact
/// location that is the URI minus the location name; regex and named
/// locations have no prefix, their whole URI is the API path.
fn api_path<'a>(clcf: &ngx_http_core_loc_conf_t, uri: &'a [u8]) -> &'a [u8] {
    if !clcf.regex.is_null() || clcf.named() != 0 {
        return uri;
    }
    // SAFETY: a configuration string.
    let name = unsafe { str_bytes(&clcf.name) };
    if uri.len() >= name.len() && uri[..name.len()].eq_ignore_ascii_case(name) {
        &uri[name.len()..]
    } else {
        uri
    }
}

/// `$request_id` (32 hex digits), or empty if unavailable.
unsafe fn request_id(r: *mut ngx_http_request_t, lcf: &LocConf) -> String {
    if lcf.request_id < 0 {
        return String::new();
    }
    let v = nginx_sys::ngx_http_get_indexed_variable(r, lcf.request_id as ngx_uint_t);
    if v.is_null() || (*v).not_found() != 0 || (*v).data.is_null() {
        return String::new();
    }
    // SAFETY: a found variable value holds len bytes in the request pool.
    let bytes = slice::from_raw_parts((*v).data, (*v).len() as usize);
    String::from_utf8_lossy(bytes).into_owned()
}

/// The address the connection was accepted on, without port.
unsafe fn local_address(r: *mut ngx_http_request_t) -> String {
    let mut buf = [0u8; ADDR_LEN];
    let mut s = ngx_str_t {
        len: ADDR_LEN,
        data: buf.as_mut_ptr(),
    };
    if nginx_sys::ngx_connection_local_sockaddr((*r).connection, &mut s, 0) != NGX_OK as ngx_int_t {
        return String::new();
    }
    String::from_utf8_lossy(&buf[..s.len.min(ADDR_LEN)]).into_owned()
}

/// Sends `resp`: status, `Content-Type` when there is a body, its exact
/// `Content-Length` (also for HEAD, whose body nginx drops), `Allow`.
unsafe fn send(r: *mut ngx_http_request_t, resp: &Response) -> ngx_int_t {
    let ho = &mut (*r).headers_out;
    ho.status = resp.status as ngx_uint_t;
    ho.content_length_n = resp.body.len() as i64;
    if let Some(ct) = resp.content_type() {
        ho.content_type = ngx_str_t {
            len: ct.len(),
            data: ct.as_ptr().cast_mut(),
        };
        ho.content_type_len = ct.len();
        ho.content_type_lowcase = ptr::null_mut();
    }
    if let Some(allow) = resp.allow {
        let h = nginx_sys::ngx_list_push(&mut ho.headers).cast::<ngx_table_elt_t>();
        if h.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        (*h).hash = 1;
        #[cfg(ngx_1_23)]
        {
            (*h).next = ptr::null_mut();
        }
        (*h).key = ngx_str_t {
            len: 5,
            data: c"Allow".as_ptr().cast_mut().cast(),
        };
        (*h).value = ngx_str_t {
            len: allow.len(),
            data: allow.as_ptr().cast_mut(),
        };
        (*h).lowcase_key = ptr::null_mut();
    }

    if resp.body.is_empty() {
        // 201, 204: nothing follows the header.
        (*r).set_header_only(1);
    }
    let rc = nginx_sys::ngx_http_send_header(r);
    if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
        return rc;
    }

    let b: *mut ngx_buf_t = nginx_sys::ngx_create_temp_buf((*r).pool, resp.body.len());
    if b.is_null() {
        return NGX_ERROR as ngx_int_t;
    }
    ptr::copy_nonoverlapping(resp.body.as_ptr(), (*b).last, resp.body.len());
    (*b).last = (*b).last.add(resp.body.len());
    (*b).set_last_buf(if r == (*r).main { 1 } else { 0 });
    (*b).set_last_in_chain(1);
    let mut out = ngx_chain_t {
        buf: b,
        next: ptr::null_mut(),
    };
    // NGX_AGAIN included: finalizing the request keeps writing the rest.
    nginx_sys::ngx_http_output_filter(r, &mut out)
}

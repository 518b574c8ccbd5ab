//! Connections accepted by the `zone_sync` server: a peer pushing its
//! records to us. Any worker may accept them.

use nginx_sys::ngx_stream_session_t;

/// The stream content handler installed by the `zone_sync` directive.
pub unsafe extern "C" fn handler(s: *mut ngx_stream_session_t) {
    nginx_sys::ngx_stream_finalize_session(s, nginx_sys::NGX_STREAM_OK as usize);
}

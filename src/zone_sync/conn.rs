//! Socket I/O of one sync connection, outgoing or accepted: reading into
//! the session's receive buffer and writing its outgoing bytes, on nginx's
//! own connection (plain or TLS: `c->recv`/`c->send` are nginx's).

use nginx_sys::{ngx_connection_t, NGX_AGAIN, NGX_ERROR, NGX_OK};
use zone_sync_core::session::Session;

use super::status;
use crate::ngx_ext::current_msec;

/// What a read pass found.
pub enum ReadResult {
    /// Nothing more to read now; frames may be waiting in the session.
    Again,
    /// The peer closed the connection.
    Eof,
    /// A socket error (logged by nginx) or a protocol error (logged by the
    /// endpoint).
    Error,
}

/// Either end of a sync connection, as the reader sees it.
pub trait Endpoint {
    fn session(&mut self) -> Option<&mut Session>;
    /// Handles every complete frame; false ends the connection.
    fn on_frames(&mut self) -> bool;
}

/// Reads what the socket has into the endpoint's session, handing complete
/// frames to it whenever the buffer fills. Stops at EAGAIN, EOF or error.
///
/// # Safety
/// `c` is an open connection owned by the caller.
pub unsafe fn read<E: Endpoint>(c: *mut ngx_connection_t, e: &mut E) -> ReadResult {
    let Some(recv) = (*c).recv else {
        return ReadResult::Error;
    };
    loop {
        let Some(session) = e.session() else {
            return ReadResult::Error;
        };
        let buf = session.recv_buf();
        if buf.is_empty() {
            // Complete frames fill the buffer: consume them first.
            if !e.on_frames() {
                return ReadResult::Error;
            }
            let room = e.session().map_or(0, |s| s.recv_buf().len());
            if room == 0 {
                return ReadResult::Error;
            }
            continue;
        }
        let n = recv(c, buf.as_mut_ptr(), buf.len());
        if n > 0 {
            session.recv_commit(n as usize, current_msec());
            status::get().add_bytes_in(n as u64);
            if !e.on_frames() {
                return ReadResult::Error;
            }
            continue;
        }
        if n == 0 {
            return ReadResult::Eof;
        }
        if n == NGX_AGAIN as isize {
            return ReadResult::Again;
        }
        return ReadResult::Error;
    }
}

/// Writes as much of the session's outgoing bytes as the socket takes.
/// Ok(true) when everything was written.
///
/// # Safety
/// `c` is an open connection owned by the caller.
pub unsafe fn flush(c: *mut ngx_connection_t, session: &mut Session) -> Result<bool, ()> {
    let Some(send) = (*c).send else {
        return Err(());
    };
    loop {
        let out = session.outgoing();
        if out.is_empty() {
            return Ok(true);
        }
        let n = send(c, out.as_mut_ptr(), out.len());
        if n > 0 {
            out.drain(..n as usize);
            status::get().add_bytes_out(n as u64);
            continue;
        }
        if n == NGX_AGAIN as isize || n == 0 {
            return Ok(false);
        }
        debug_assert_eq!(n, NGX_ERROR as isize);
        return Err(());
    }
}

/// Re-arms read and write events after a pass (level of interest as
/// nginx's own modules do).
///
/// # Safety
/// `c` is an open connection.
pub unsafe fn rearm(c: *mut ngx_connection_t, want_write: bool) -> Result<(), ()> {
    if nginx_sys::ngx_handle_read_event((*c).read, 0) != NGX_OK as isize {
        return Err(());
    }
    if want_write && nginx_sys::ngx_handle_write_event((*c).write, 0) != NGX_OK as isize {
        return Err(());
    }
    Ok(())
}

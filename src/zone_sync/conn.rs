//! Socket I/O of one sync connection, outgoing or accepted: reading into
//! the session's receive buffer and writing its outgoing bytes, on nginx's
//! own connection (plain or TLS: `c->recv`/`c->send` are nginx's); and why
//! a connection ends.

use core::fmt;

use nginx_sys::{ngx_connection_t, NGX_AGAIN, NGX_ERROR, NGX_OK};
use zone_sync_core::session::{Session, SessionError};
use zone_sync_core::wire::{self, ErrorCode};

use super::status;
use crate::ngx_ext::current_msec;

/// The most of a peer's ERROR text a log line shows (escaped).
const ERROR_TEXT_LOGGED: usize = 128;

/// Why a connection ended.
#[derive(Debug)]
pub enum CloseReason {
    /// The other end is this node (its HELLO carried our id, or it said
    /// SELF).
    Myself,
    /// The other end said SHUTDOWN: it exits or reloads.
    PeerShutdown,
    /// The other end sent another ERROR; the text is escaped for logs.
    PeerError(ErrorCode, String),
    /// The session ended on a protocol error or one of its deadlines.
    Session(SessionError),
    /// Nothing of what waits to be sent left for `zone_sync_timeout`.
    SendStalled,
    /// The other end closed the connection.
    Eof,
    /// This worker is exiting.
    Exiting,
    /// The other end began a TLS handshake on a listener without `ssl`.
    TlsOnPlain,
    /// A system or TLS failure, as nginx or the handshake describe it.
    Failed(String),
}

impl CloseReason {
    /// The reason for an ERROR frame received.
    pub fn from_peer(code: ErrorCode, text: &[u8]) -> Self {
        match code {
            ErrorCode::SELF => CloseReason::Myself,
            ErrorCode::SHUTDOWN => CloseReason::PeerShutdown,
            _ => CloseReason::PeerError(code, wire::escape(text, ERROR_TEXT_LOGGED)),
        }
    }

    /// The reason for a session error.
    pub fn from_session(e: SessionError) -> Self {
        match e {
            SessionError::SelfConnect => CloseReason::Myself,
            e => CloseReason::Session(e),
        }
    }

    pub fn failed(why: impl Into<String>) -> Self {
        CloseReason::Failed(why.into())
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Myself => f.write_str("is this node"),
            CloseReason::PeerShutdown => f.write_str("closed: the node is shutting down"),
            CloseReason::PeerError(code, text) => write!(f, "closed by peer: {code} {text}"),
            CloseReason::Session(
                e @ (SessionError::Timeout | SessionError::HelloTimeout | SessionError::AckTimeout),
            ) => write!(f, "{e}"),
            CloseReason::Session(e) => write!(f, "protocol error: {e}"),
            CloseReason::SendStalled => f.write_str("send timed out"),
            CloseReason::Eof => f.write_str("connection closed by peer"),
            CloseReason::Exiting => f.write_str("shutting down"),
            CloseReason::TlsOnPlain => {
                f.write_str("sent a TLS handshake, but this listener has no \"ssl\"")
            }
            CloseReason::Failed(why) => f.write_str(why),
        }
    }
}

/// What a read pass found.
pub enum ReadResult {
    /// Nothing more to read now; frames may be waiting in the session.
    Again,
    /// Reading stopped because the output is full; go on once it drains.
    Paused,
    /// The peer closed the connection.
    Eof,
    /// A socket error (logged by nginx) or a protocol error (kept by the
    /// endpoint).
    Error,
}

/// Either end of a sync connection, as the reader sees it.
pub trait Endpoint {
    fn session(&mut self) -> Option<&mut Session>;
    /// Handles every complete frame; false ends the connection.
    fn on_frames(&mut self) -> bool;
    /// Whether so much waits to be sent that reading must stop.
    fn output_full(&mut self) -> bool {
        false
    }
}

/// Reads what the socket has into the endpoint's session, handing complete
/// frames to it whenever the buffer fills. Stops at EAGAIN, EOF, error, or
/// when the endpoint's output is full.
///
/// # Safety
/// `c` is an open connection owned by the caller.
pub unsafe fn read<E: Endpoint>(c: *mut ngx_connection_t, e: &mut E) -> ReadResult {
    let Some(recv) = (*c).recv else {
        return ReadResult::Error;
    };
    loop {
        if e.output_full() {
            return ReadResult::Paused;
        }
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

/// Whether a connection's output moves: the time since which bytes have
/// been waiting without any of them being written.
#[derive(Default)]
pub struct SendWatch {
    since: Option<u64>,
}

impl SendWatch {
    /// When the output has been stuck for `timeout` (absolute ms).
    pub fn deadline(&self, timeout: u64) -> Option<u64> {
        self.since.map(|t| t.saturating_add(timeout))
    }

    /// Whether the output has been stuck for `timeout` at `now`.
    pub fn stalled(&self, now: u64, timeout: u64) -> bool {
        self.deadline(timeout).is_some_and(|d| now >= d)
    }
}

/// Writes as much of the session's outgoing bytes as the socket takes.
/// Ok(true) when everything was written.
///
/// # Safety
/// `c` is an open connection owned by the caller.
pub unsafe fn flush(
    c: *mut ngx_connection_t,
    session: &mut Session,
    watch: &mut SendWatch,
) -> Result<bool, ()> {
    let Some(send) = (*c).send else {
        return Err(());
    };
    let now = current_msec();
    loop {
        let out = session.outgoing();
        if out.is_empty() {
            watch.since = None;
            return Ok(true);
        }
        let n = send(c, out.as_mut_ptr(), out.len());
        if n > 0 {
            out.drain(..n as usize);
            status::get().add_bytes_out(n as u64);
            watch.since = Some(now);
            continue;
        }
        if n == NGX_AGAIN as isize || n == 0 {
            watch.since.get_or_insert(now);
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

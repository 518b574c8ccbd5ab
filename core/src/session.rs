//! One peer connection's protocol state machine, without I/O.
//!
//! Bytes and the time go in, frames (bytes to write) and events come out;
//! the caller owns the socket and the timers.  One [`Session`] per
//! connection:
//!
//! * the connecting side is [`Role::Client`] and sends records;
//! * the accepting side is [`Role::Server`], applies them and acknowledges.
//!
//! Driving a session:
//!
//! 1. Read from the socket into [`Session::recv_buf`], then
//!    [`Session::recv_commit`] (or hand a slice to [`Session::receive`]).
//! 2. Call [`Session::next_event`] until it returns `Ok(None)`.  A
//!    [`Event::Records`] frame counts as applied when the session is next
//!    called; the server's cumulative ACK is queued when `next_event` runs
//!    out of complete frames, so one ACK covers a whole read.
//! 3. Write [`Session::outgoing`] to the socket and drain what was written.
//! 4. Call [`Session::poll_timers`] at [`Session::next_timer`]: it queues
//!    HEARTBEATs and reports the deadlines (receive, HELLO, acknowledgement).
//!
//! Any `Err` ends the session: the session has queued an ERROR frame for
//! the peer if there is one to send; write it out if possible, then close.

use std::fmt;

use crate::wire::{
    self, ErrorCode, Frame, FrameReader, RawFrame, RecordRef, RecordsBuilder, RecordsFrame,
    WireError, ZoneDesc, ZoneResume,
};

/// Shortest heartbeat interval, in ms.
pub const MIN_HEARTBEAT_MS: u64 = 100;

/// Which end of the connection this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Opened the connection; sends records, receives ACKs.
    Client,
    /// Accepted the connection; receives records, sends ACKs.
    Server,
}

/// A synced zone of this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ZoneInfo {
    /// Zone name, 1..=255 bytes, the same on every node.
    pub name: Vec<u8>,
    /// Zone kind ([`wire::KIND_KEYVAL`], [`wire::KIND_LIMIT_REQ`]).
    pub kind: u8,
    /// Version of the kind's value format.
    pub kind_version: u16,
    /// The zone's epoch (protocol version 2): random, drawn when its
    /// shared memory was created; 0 if unknown.
    pub epoch: u64,
}

impl ZoneInfo {
    /// A zone.
    pub fn new(name: impl Into<Vec<u8>>, kind: u8, kind_version: u16) -> Self {
        Self {
            name: name.into(),
            kind,
            kind_version,
            epoch: 0,
        }
    }

    /// The zone as the wire names it.
    pub fn desc(&self) -> ZoneDesc<'_> {
        ZoneDesc {
            name: &self.name,
            kind: self.kind,
            kind_version: self.kind_version,
        }
    }
}

/// Parameters of a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// This node's id: random, nonzero, the same for all its connections.
    pub node_id: u64,
    /// `zone_sync_timeout`: the peer is gone after this long without a
    /// byte from it.  Heartbeats go out every `timeout_ms / 3` (at least
    /// [`MIN_HEARTBEAT_MS`]).
    pub timeout_ms: u64,
    /// `zone_sync_recv_buffer_size`: the longest frame accepted, length
    /// field included (at least [`wire::MIN_FRAME_LIMIT`]).
    pub max_frame: usize,
    /// This node's synced zones.  Indices into this list name zones in
    /// events and in [`Session::begin_records`].
    pub zones: Vec<ZoneInfo>,
}

/// A configuration the session cannot work with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The node id is 0.
    ZeroNodeId,
    /// The zone at this index has an empty name or one over 255 bytes.
    ZoneName(usize),
    /// The zone at this index has the name of an earlier one.
    DuplicateZone(usize),
    /// More than 65535 zones.
    TooManyZones,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::ZeroNodeId => f.write_str("node id must not be zero"),
            ConfigError::ZoneName(_) => f.write_str("zone name must be 1 to 255 bytes long"),
            ConfigError::DuplicateZone(_) => f.write_str("duplicate zone name"),
            ConfigError::TooManyZones => f.write_str("too many synced zones"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl SessionConfig {
    /// Checks the configuration.  A session built from a configuration that
    /// fails this still works: it leaves out the offending zones.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.zones.len() > u16::MAX as usize {
            return Err(ConfigError::TooManyZones);
        }
        for (i, z) in self.zones.iter().enumerate() {
            if z.name.is_empty() || z.name.len() > wire::MAX_ZONE_NAME {
                return Err(ConfigError::ZoneName(i));
            }
            if self.zones[..i].iter().any(|o| o.name == z.name) {
                return Err(ConfigError::DuplicateZone(i));
            }
        }
        Ok(())
    }

    /// Indices of the zones that go into HELLO.
    fn announced(&self) -> Vec<usize> {
        let mut v: Vec<usize> = Vec::new();
        for (i, z) in self.zones.iter().enumerate() {
            if v.len() == u16::MAX as usize {
                break;
            }
            if z.name.is_empty()
                || z.name.len() > wire::MAX_ZONE_NAME
                || v.iter().any(|&j| self.zones[j].name == z.name)
            {
                continue;
            }
            v.push(i);
        }
        v
    }
}

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for the peer's HELLO.
    AwaitHello,
    /// HELLOs exchanged.
    Established,
    /// Ended; nothing more is accepted or produced (bar what is already in
    /// the outgoing buffer).
    Closed,
}

/// Something the caller has to act on.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// The peer's HELLO was accepted (the server has queued its own).
    PeerHello {
        /// The peer's node id.
        node_id: u64,
        /// Zones both sides sync with the same kind and kind version, as
        /// indices into [`SessionConfig::zones`].  The client sends exactly
        /// these.
        shared_zones: &'a [usize],
    },
    /// (Server) a validated RECORDS frame for a shared zone: apply every
    /// record, then call the session again.
    Records {
        /// Index into [`SessionConfig::zones`].
        zone: usize,
        /// The frame; its records iterator yields no errors.
        frame: RecordsFrame<'a>,
    },
    /// (Client) the server has applied every RECORDS frame up to `seq`.
    Ack {
        /// Cumulative sequence number.
        seq: u64,
    },
    /// (Server, version 2) the client has sent every change of `zone` up
    /// to its sequence number `seq` before this point: once the records
    /// handed out before are applied, this node holds them.
    Position {
        /// Index into [`SessionConfig::zones`].
        zone: usize,
        /// The client's change sequence number of the zone.
        seq: u64,
        /// Received after the client's SNAPSHOT_DONE: a live mark (or the
        /// end of a resync pass), not the end of a zone's initial snapshot
        /// or resume pass (see [`position_taken`]).
        live: bool,
    },
    /// (Server) the client's initial snapshot is complete: every frame up
    /// to `seq` has already been handed out.
    SnapshotDone {
        /// Seq of the last snapshot frame, 0 if it had none.
        seq: u64,
    },
    /// The peer sent ERROR and the session is over.  [`ErrorCode::SHUTDOWN`]
    /// is a graceful close; [`ErrorCode::SELF`] means the client connected
    /// to its own node and should stop connecting to that address.
    PeerError {
        /// The code.
        code: ErrorCode,
        /// The text (UTF-8 by the spec, not trusted).
        text: &'a [u8],
    },
}

/// Why a session ended (or, for [`SessionError::InvalidState`], why a call
/// was refused without ending it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionError {
    /// Bytes that do not decode.
    Wire(WireError),
    /// A frame of a type not allowed here.
    Unexpected {
        /// The frame type.
        frame_type: u8,
        /// When: "before hello", "after hello", "from server", "from client".
        context: &'static str,
    },
    /// A RECORDS frame whose seq is not the previous one plus one.
    BadSeq {
        /// Seq received.
        got: u64,
        /// Seq expected.
        expected: u64,
    },
    /// An ACK for a frame never sent, or going backwards.
    BadAck {
        /// Seq received.
        seq: u64,
        /// Highest seq acknowledged before.
        acked: u64,
        /// Highest seq sent.
        sent: u64,
    },
    /// SNAPSHOT_DONE naming a frame never received.
    BadSnapshotDone {
        /// Seq received.
        seq: u64,
        /// Highest RECORDS seq received.
        received: u64,
    },
    /// A second SNAPSHOT_DONE.
    DuplicateSnapshotDone,
    /// The peer has this node's own id.
    SelfConnect,
    /// (Client) the server's HELLO has a version newer than offered.
    BadVersion(u16),
    /// Nothing received for `timeout_ms`.
    Timeout,
    /// The peer's HELLO was not complete `timeout_ms` after the session
    /// started.
    HelloTimeout,
    /// (Client) frames were waiting for an acknowledgement and none came
    /// for `timeout_ms`.
    AckTimeout,
    /// A call this session cannot honour now (caller's bug); the session
    /// goes on.
    InvalidState(&'static str),
}

impl SessionError {
    /// The ERROR code sent to the peer for this error, if any.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            SessionError::Wire(e) => Some(e.error_code()),
            SessionError::SelfConnect => Some(ErrorCode::SELF),
            SessionError::Timeout
            | SessionError::HelloTimeout
            | SessionError::AckTimeout
            | SessionError::InvalidState(_) => None,
            _ => Some(ErrorCode::PROTOCOL),
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SessionError::Wire(e) => e.fmt(f),
            SessionError::Unexpected {
                frame_type,
                context,
            } => write!(f, "unexpected frame type 0x{frame_type:02x} {context}"),
            SessionError::BadSeq { got, expected } => {
                write!(
                    f,
                    "records frame out of sequence: {got}, expected {expected}"
                )
            }
            SessionError::BadAck { seq, acked, sent } => {
                write!(f, "invalid ack {seq}, acked {acked}, sent {sent}")
            }
            SessionError::BadSnapshotDone { seq, received } => {
                write!(f, "snapshot done at {seq}, received {received}")
            }
            SessionError::DuplicateSnapshotDone => f.write_str("duplicate snapshot done"),
            SessionError::SelfConnect => f.write_str("connected to itself"),
            SessionError::BadVersion(v) => write!(f, "hello of version {v}, not offered"),
            SessionError::Timeout => f.write_str("timed out"),
            SessionError::HelloTimeout => f.write_str("no hello in time"),
            SessionError::AckTimeout => f.write_str("acknowledgement timed out"),
            SessionError::InvalidState(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for SessionError {}

impl From<WireError> for SessionError {
    fn from(e: WireError) -> Self {
        SessionError::Wire(e)
    }
}

/// Counters of one session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessionStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Frames received.
    pub frames_in: u64,
    /// RECORDS frames handed out as events.
    pub records_frames_in: u64,
    /// Records in those frames.
    pub records_in: u64,
    /// RECORDS frames skipped (zone, kind or kind version not shared).
    pub skipped_records_frames: u64,
    /// Frames of unknown type skipped.
    pub skipped_frames: u64,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Records queued for sending.
    pub records_out: u64,
}

/// Sender-side counters, split out so a [`RecordsWriter`] can borrow them
/// next to the outgoing buffer.
#[derive(Debug, Default)]
struct Tx {
    last_sent_seq: u64,
    /// Since when frames wait for an acknowledgement (the first frame
    /// sent with none in flight, or the last ACK that left some).
    ack_wait_since: Option<u64>,
    snapshot_seq: u64,
    last_send_ms: u64,
    stats: SessionStats,
}

/// Whether a server stores the position a POSITION frame carries
/// (docs/PROTOCOL.md section 4.6). One ending the client's initial
/// snapshot or resume pass of a zone always is. A live one also covers
/// records the client applied from a third node, which it does not
/// forward: only while this node is connected to every other member it
/// knows has it had those records from their makers (the third node may
/// restart empty before a later resume, which would skip them).
pub fn position_taken(live: bool, all_members_connected: bool) -> bool {
    !live || all_members_connected
}

/// What a received frame leads to, decided before the event borrows it.
enum Action {
    Skip,
    Hello(u64),
    Records(usize),
    Position(usize, u64, bool),
    Ack(u64),
    SnapshotDone(u64),
    PeerError,
}

/// A peer connection's protocol state.  See the [module docs](self).
#[derive(Debug)]
pub struct Session {
    reader: FrameReader,
    st: Inner,
}

#[derive(Debug)]
struct Inner {
    role: Role,
    cfg: SessionConfig,
    announced: Vec<usize>,
    state: State,
    peer_node_id: u64,
    shared: Vec<usize>,
    out: Vec<u8>,
    tx: Tx,
    hello_sent: bool,
    /// (Server, version 2) the peer's HELLO is in and ours waits for
    /// [`Session::reply_hello`].
    hello_due: bool,
    /// The protocol version offered (client) or spoken once the HELLOs
    /// are exchanged.
    version: u16,
    /// Per zone of the configuration, what the peer's HELLO said of it
    /// (version 2).
    peer_resume: Vec<Option<ZoneResume>>,
    clock: u64,
    last_recv_ms: u64,
    /// When the session started: the peer's HELLO is due by then plus
    /// `timeout_ms`.
    started_ms: u64,
    // client
    acked_seq: u64,
    snapshot_done_sent: bool,
    // server
    last_recv_seq: u64,
    applied_seq: u64,
    ack_sent_seq: u64,
    pending_apply: Option<u64>,
    snapshot_done_recv: Option<u64>,
}

impl Session {
    /// A session at time `now_ms` (any monotonic millisecond clock),
    /// offering [`wire::PROTOCOL_VERSION`].  A client queues its HELLO at
    /// once.
    pub fn new(role: Role, cfg: SessionConfig, now_ms: u64) -> Self {
        Self::with_version(role, cfg, now_ms, wire::PROTOCOL_VERSION)
    }

    /// A session offering protocol `version` (a client that was answered
    /// UNSUPPORTED_VERSION retries with an older one; clamped to what this
    /// module speaks).
    pub fn with_version(role: Role, cfg: SessionConfig, now_ms: u64, version: u16) -> Self {
        let announced = cfg.announced();
        let version = version.clamp(wire::MIN_PROTOCOL_VERSION, wire::PROTOCOL_VERSION);
        let peer_resume = vec![None; cfg.zones.len()];
        let mut st = Inner {
            role,
            cfg,
            announced,
            state: State::AwaitHello,
            peer_node_id: 0,
            shared: Vec::new(),
            out: Vec::new(),
            tx: Tx {
                last_send_ms: now_ms,
                ..Tx::default()
            },
            hello_sent: false,
            hello_due: false,
            version,
            peer_resume,
            clock: now_ms,
            last_recv_ms: now_ms,
            started_ms: now_ms,
            acked_seq: 0,
            snapshot_done_sent: false,
            last_recv_seq: 0,
            applied_seq: 0,
            ack_sent_seq: 0,
            pending_apply: None,
            snapshot_done_recv: None,
        };
        if role == Role::Client {
            st.send_hello();
        }
        Session {
            reader: FrameReader::new(st.cfg.max_frame),
            st,
        }
    }

    /// This end's role.
    pub fn role(&self) -> Role {
        self.st.role
    }

    /// The protocol version offered, or spoken once established.
    pub fn version(&self) -> u16 {
        self.st.version
    }

    /// What the peer's HELLO (version 2) said of a zone (index into
    /// [`SessionConfig::zones`]): its epoch, and (from a server) where this
    /// node's history of the zone is resumed from.
    pub fn peer_resume(&self, zone: usize) -> Option<ZoneResume> {
        self.st.peer_resume.get(zone).copied().flatten()
    }

    /// (Server) sends the HELLO that answers the client's, with where
    /// this node stands in the client's history of each zone: `seen(zone)`
    /// gives `(epoch, seq)` for a zone index (version 2; ignored for a
    /// version-1 client, which was answered at once).  If the caller does
    /// not, the next [`next_event`](Self::next_event) answers with no
    /// positions.
    pub fn reply_hello(&mut self, seen: &mut dyn FnMut(usize) -> Option<(u64, u64)>) {
        let st = &mut self.st;
        if !st.hello_due {
            return;
        }
        st.hello_due = false;
        let resume: Vec<ZoneResume> = st
            .announced
            .iter()
            .map(|&i| {
                let (seen_epoch, seen_seq) = if st.shared.contains(&i) {
                    seen(i).unwrap_or((0, 0))
                } else {
                    (0, 0)
                };
                ZoneResume {
                    epoch: st.cfg.zones[i].epoch,
                    seen_epoch,
                    seen_seq,
                }
            })
            .collect();
        st.send_hello_with(&resume);
    }

    /// (Client, version 2) queues POSITION: every change of `zone` (index
    /// into [`SessionConfig::zones`]) up to the zone's sequence number
    /// `seq` has been queued before it.  Does nothing on a version-1
    /// session or for a zone not shared.
    pub fn send_position(&mut self, zone: usize, seq: u64) {
        let st = &mut self.st;
        if st.role != Role::Client
            || st.state != State::Established
            || st.version < 2
            || !st.shared.contains(&zone)
        {
            return;
        }
        wire::encode_position(&mut st.out, &st.cfg.zones[zone].name, seq);
        st.sent();
    }

    /// Where the session is.
    pub fn state(&self) -> State {
        self.st.state
    }

    /// Whether HELLOs have been exchanged and the session is not over.
    pub fn is_established(&self) -> bool {
        self.st.state == State::Established
    }

    /// Whether the session is over.
    pub fn is_closed(&self) -> bool {
        self.st.state == State::Closed
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.st.cfg
    }

    /// The peer's node id, once its HELLO is in.
    pub fn peer_node_id(&self) -> Option<u64> {
        (self.st.peer_node_id != 0).then_some(self.st.peer_node_id)
    }

    /// Zones shared with the peer (indices into [`SessionConfig::zones`]);
    /// empty before the HELLO exchange.
    pub fn shared_zones(&self) -> &[usize] {
        &self.st.shared
    }

    /// Counters.
    pub fn stats(&self) -> SessionStats {
        self.st.tx.stats
    }

    /// Heartbeat interval in ms: a third of the timeout, at least
    /// [`MIN_HEARTBEAT_MS`].
    pub fn heartbeat_interval_ms(&self) -> u64 {
        (self.st.cfg.timeout_ms / 3).max(MIN_HEARTBEAT_MS)
    }

    /// (Client) seq of the last RECORDS frame queued, 0 if none.
    pub fn last_sent_seq(&self) -> u64 {
        self.st.tx.last_sent_seq
    }

    /// (Client) highest seq acknowledged by the server.
    pub fn acked_seq(&self) -> u64 {
        self.st.acked_seq
    }

    /// (Client) RECORDS frames sent and not yet acknowledged.
    pub fn in_flight(&self) -> u64 {
        self.st.tx.last_sent_seq - self.st.acked_seq
    }

    /// (Server) seq of the last RECORDS frame received, 0 if none.
    pub fn last_received_seq(&self) -> u64 {
        self.st.last_recv_seq
    }

    /// (Server) the seq carried by SNAPSHOT_DONE, once received.
    pub fn snapshot_done_seq(&self) -> Option<u64> {
        self.st.snapshot_done_recv
    }

    /// Bytes to write to the peer.  Drain what was written
    /// (`outgoing().drain(..n)`).
    pub fn outgoing(&mut self) -> &mut Vec<u8> {
        &mut self.st.out
    }

    /// Free space of the receive buffer, to read into.  Empty only while
    /// complete frames wait for [`next_event`](Self::next_event).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        self.reader.spare()
    }

    /// Marks `n` bytes of [`recv_buf`](Self::recv_buf) as received at
    /// `now_ms`.
    pub fn recv_commit(&mut self, n: usize, now_ms: u64) {
        self.st.tick(now_ms);
        if n > 0 && self.st.state != State::Closed {
            self.reader.commit(n);
            self.st.last_recv_ms = self.st.clock;
            self.st.tx.stats.bytes_in += n as u64;
        }
    }

    /// Copies received bytes into the receive buffer; returns how many were
    /// taken (fewer than offered when complete frames are waiting: call
    /// [`next_event`](Self::next_event), then offer the rest).  Bytes
    /// arriving after the session closed are taken and dropped.
    pub fn receive(&mut self, bytes: &[u8], now_ms: u64) -> usize {
        if self.st.state == State::Closed {
            self.st.tick(now_ms);
            return bytes.len();
        }
        let spare = self.reader.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.recv_commit(n, now_ms);
        n
    }

    /// The next event from the received bytes, `Ok(None)` when more bytes
    /// are needed (or the session is closed).  Frames that need no action
    /// from the caller (HEARTBEAT, skipped frames) are consumed silently.
    pub fn next_event(&mut self) -> Result<Option<Event<'_>>, SessionError> {
        let Session { reader, st } = self;
        if st.state == State::Closed {
            return Ok(None);
        }
        if st.hello_due {
            st.hello_due = false;
            st.send_hello_with(&[]);
        }
        st.take_pending_apply();
        let action = loop {
            let raw = match reader.next_frame() {
                Ok(Some(raw)) => raw,
                Ok(None) => {
                    st.flush_ack();
                    return Ok(None);
                }
                Err(e) => return Err(st.fail(e.into())),
            };
            st.tx.stats.frames_in += 1;
            match st.process(raw) {
                Ok(Action::Skip) => continue,
                Ok(a) => break a,
                Err(e) => return Err(st.fail(e)),
            }
        };
        // `process` validated the frame; decode the parts the event borrows
        let raw = reader.current();
        Ok(Some(match action {
            Action::Skip => return Err(st.fail(SessionError::InvalidState("lost frame"))),
            Action::Hello(node_id) => Event::PeerHello {
                node_id,
                shared_zones: &st.shared,
            },
            Action::Records(zone) => match raw.map(|r| RecordsFrame::decode_header(r.body)) {
                Some(Ok(frame)) => Event::Records { zone, frame },
                _ => return Err(st.fail(SessionError::InvalidState("lost frame"))),
            },
            Action::Ack(seq) => Event::Ack { seq },
            Action::Position(zone, seq, live) => Event::Position { zone, seq, live },
            Action::SnapshotDone(seq) => Event::SnapshotDone { seq },
            Action::PeerError => match raw.map(|r| r.decode()) {
                Some(Ok(Frame::Error(e))) => Event::PeerError {
                    code: e.code,
                    text: e.text,
                },
                _ => return Err(st.fail(SessionError::InvalidState("lost frame"))),
            },
        }))
    }

    /// Queues HEARTBEAT when due and checks the deadlines at `now_ms`:
    /// something received every `timeout_ms` ([`SessionError::Timeout`]),
    /// the peer's HELLO within `timeout_ms` of the start
    /// ([`SessionError::HelloTimeout`]), and (client) an acknowledgement
    /// within `timeout_ms` while frames wait for one
    /// ([`SessionError::AckTimeout`]).  An error ends the session.
    pub fn poll_timers(&mut self, now_ms: u64) -> Result<(), SessionError> {
        let st = &mut self.st;
        st.tick(now_ms);
        if st.state == State::Closed {
            return Ok(());
        }
        let timeout = st.cfg.timeout_ms;
        let expired = if st.clock.saturating_sub(st.last_recv_ms) >= timeout {
            Some(SessionError::Timeout)
        } else if st.state == State::AwaitHello && st.clock.saturating_sub(st.started_ms) >= timeout
        {
            Some(SessionError::HelloTimeout)
        } else if st
            .tx
            .ack_wait_since
            .is_some_and(|t| st.clock.saturating_sub(t) >= timeout)
        {
            Some(SessionError::AckTimeout)
        } else {
            None
        };
        if let Some(e) = expired {
            st.state = State::Closed;
            return Err(e);
        }
        let interval = (st.cfg.timeout_ms / 3).max(MIN_HEARTBEAT_MS);
        if st.hello_sent
            && st.out.is_empty()
            && st.clock.saturating_sub(st.tx.last_send_ms) >= interval
        {
            wire::encode_heartbeat(&mut st.out);
            st.sent();
        }
        Ok(())
    }

    /// When [`poll_timers`](Self::poll_timers) has something to do next
    /// (absolute ms); `u64::MAX` once closed.
    pub fn next_timer(&self) -> u64 {
        let st = &self.st;
        if st.state == State::Closed {
            return u64::MAX;
        }
        let mut timeout = st.last_recv_ms.saturating_add(st.cfg.timeout_ms);
        if st.state == State::AwaitHello {
            timeout = timeout.min(st.started_ms.saturating_add(st.cfg.timeout_ms));
        }
        if let Some(t) = st.tx.ack_wait_since {
            timeout = timeout.min(t.saturating_add(st.cfg.timeout_ms));
        }
        if st.hello_sent {
            let hb = st
                .tx
                .last_send_ms
                .saturating_add(self.heartbeat_interval_ms());
            timeout.min(hb)
        } else {
            timeout
        }
    }

    /// (Client) starts a RECORDS frame for a shared zone (index into
    /// [`SessionConfig::zones`]) of at most `max_frame_bytes` bytes
    /// (`zone_sync_buffers` size), marked as part of the initial snapshot
    /// if `snapshot`.  The frame takes the next seq when
    /// [`RecordsWriter::finish`] completes it with at least one record.
    pub fn begin_records(
        &mut self,
        zone: usize,
        snapshot: bool,
        max_frame_bytes: usize,
    ) -> Result<RecordsWriter<'_>, SessionError> {
        let st = &mut self.st;
        if st.role != Role::Client {
            return Err(SessionError::InvalidState("only the client sends records"));
        }
        match st.state {
            State::AwaitHello => return Err(SessionError::InvalidState("hello not received")),
            State::Closed => return Err(SessionError::InvalidState("session closed")),
            State::Established => {}
        }
        if !st.shared.contains(&zone) {
            return Err(SessionError::InvalidState("zone not shared with peer"));
        }
        if snapshot && st.snapshot_done_sent {
            return Err(SessionError::InvalidState("snapshot already finished"));
        }
        let seq = st.tx.last_sent_seq + 1;
        let z = &st.cfg.zones[zone];
        let flags = if snapshot { wire::RECORDS_SNAPSHOT } else { 0 };
        let builder = RecordsBuilder::new(
            &mut st.out,
            seq,
            &z.name,
            z.kind,
            z.kind_version,
            flags,
            max_frame_bytes,
        )
        .map_err(|_| SessionError::InvalidState("frame budget too small"))?;
        Ok(RecordsWriter {
            builder,
            seq,
            snapshot,
            tx: &mut st.tx,
            now: st.clock,
        })
    }

    /// (Client) queues SNAPSHOT_DONE after the last snapshot frame; returns
    /// the seq it carries (0 if the snapshot had no frame).  Once only.
    pub fn finish_snapshot(&mut self) -> Result<u64, SessionError> {
        let st = &mut self.st;
        if st.role != Role::Client {
            return Err(SessionError::InvalidState(
                "only the client sends snapshots",
            ));
        }
        if st.state != State::Established {
            return Err(SessionError::InvalidState("session not established"));
        }
        if st.snapshot_done_sent {
            return Err(SessionError::InvalidState("snapshot already finished"));
        }
        st.snapshot_done_sent = true;
        let seq = st.tx.snapshot_seq;
        wire::encode_snapshot_done(&mut st.out, seq);
        st.sent();
        Ok(seq)
    }

    /// Ends the session: queues (on a server, after the ACK of every frame
    /// handed out so far) an ERROR frame with `code` and `text`.  Use
    /// [`ErrorCode::SHUTDOWN`] for a graceful close on exit or reload.
    pub fn close_with(&mut self, code: ErrorCode, text: &str) {
        let st = &mut self.st;
        if st.state == State::Closed {
            return;
        }
        st.take_pending_apply();
        st.flush_ack();
        wire::encode_error(&mut st.out, code, text);
        st.sent();
        st.state = State::Closed;
    }
}

impl Inner {
    fn tick(&mut self, now_ms: u64) {
        self.clock = self.clock.max(now_ms);
    }

    fn sent(&mut self) {
        self.tx.last_send_ms = self.clock;
        self.tx.stats.frames_out += 1;
    }

    fn send_hello(&mut self) {
        let resume: Vec<ZoneResume> = self
            .announced
            .iter()
            .map(|&i| ZoneResume {
                epoch: self.cfg.zones[i].epoch,
                ..ZoneResume::default()
            })
            .collect();
        self.send_hello_with(&resume);
    }

    /// Sends HELLO of the session's version; `resume` runs parallel to
    /// the announced zones (zeros where it is short).
    fn send_hello_with(&mut self, resume: &[ZoneResume]) {
        let zones: Vec<ZoneDesc<'_>> = self
            .announced
            .iter()
            .map(|&i| self.cfg.zones[i].desc())
            .collect();
        let full: Vec<ZoneResume> = if resume.is_empty() {
            self.announced
                .iter()
                .map(|&i| ZoneResume {
                    epoch: self.cfg.zones[i].epoch,
                    ..ZoneResume::default()
                })
                .collect()
        } else {
            resume.to_vec()
        };
        wire::encode_hello_v(&mut self.out, self.version, self.cfg.node_id, &zones, &full);
        self.hello_sent = true;
        self.sent();
    }

    fn take_pending_apply(&mut self) {
        if let Some(seq) = self.pending_apply.take() {
            self.applied_seq = seq;
        }
    }

    fn flush_ack(&mut self) {
        if self.role == Role::Server && self.applied_seq > self.ack_sent_seq {
            wire::encode_ack(&mut self.out, self.applied_seq);
            self.ack_sent_seq = self.applied_seq;
            self.sent();
        }
    }

    /// Ends the session on `e`, queueing (after the ACK of the frames
    /// handed out) ERROR for the peer if `e` has a code.
    fn fail(&mut self, e: SessionError) -> SessionError {
        if let Some(code) = e.error_code() {
            self.flush_ack();
            wire::encode_error(&mut self.out, code, &e.to_string());
            self.sent();
        }
        self.state = State::Closed;
        e
    }

    fn process(&mut self, raw: RawFrame<'_>) -> Result<Action, SessionError> {
        let t = raw.frame_type;
        if self.state == State::AwaitHello {
            return match t {
                wire::FRAME_HELLO => match raw.decode()? {
                    Frame::Hello(h) => self.on_hello(&h),
                    _ => Err(SessionError::InvalidState("lost frame")),
                },
                wire::FRAME_ERROR => {
                    raw.decode()?;
                    self.state = State::Closed;
                    Ok(Action::PeerError)
                }
                _ => Err(SessionError::Unexpected {
                    frame_type: t,
                    context: "before hello",
                }),
            };
        }
        let unexpected = |context| SessionError::Unexpected {
            frame_type: t,
            context,
        };
        match t {
            wire::FRAME_HELLO => Err(unexpected("after hello")),
            wire::FRAME_RECORDS | wire::FRAME_SNAPSHOT_DONE if self.role == Role::Client => {
                Err(unexpected("from server"))
            }
            wire::FRAME_ACK if self.role == Role::Server => Err(unexpected("from client")),
            wire::FRAME_POSITION if self.version >= 2 => {
                if self.role == Role::Client {
                    return Err(unexpected("from server"));
                }
                let Frame::Position { zone, seq } = raw.decode()? else {
                    return Err(SessionError::InvalidState("lost frame"));
                };
                match self
                    .shared
                    .iter()
                    .copied()
                    .find(|&i| self.cfg.zones[i].name == zone)
                {
                    Some(i) => Ok(Action::Position(i, seq, self.snapshot_done_recv.is_some())),
                    None => Ok(Action::Skip),
                }
            }
            wire::FRAME_RECORDS => {
                let f = RecordsFrame::decode_header(raw.body)?;
                let expected = self.last_recv_seq.wrapping_add(1);
                if f.seq != expected || expected == 0 {
                    return Err(SessionError::BadSeq {
                        got: f.seq,
                        expected,
                    });
                }
                f.validate()?;
                self.last_recv_seq = f.seq;
                let desc = f.zone_desc();
                match self
                    .shared
                    .iter()
                    .copied()
                    .find(|&i| self.cfg.zones[i].desc() == desc)
                {
                    Some(zone) => {
                        self.tx.stats.records_frames_in += 1;
                        self.tx.stats.records_in += u64::from(f.count);
                        self.pending_apply = Some(f.seq);
                        Ok(Action::Records(zone))
                    }
                    None => {
                        self.tx.stats.skipped_records_frames += 1;
                        self.applied_seq = f.seq;
                        Ok(Action::Skip)
                    }
                }
            }
            wire::FRAME_ACK => {
                let Frame::Ack(seq) = raw.decode()? else {
                    return Err(SessionError::InvalidState("lost frame"));
                };
                if seq > self.tx.last_sent_seq || seq < self.acked_seq {
                    return Err(SessionError::BadAck {
                        seq,
                        acked: self.acked_seq,
                        sent: self.tx.last_sent_seq,
                    });
                }
                if seq > self.acked_seq {
                    self.tx.ack_wait_since = (seq < self.tx.last_sent_seq).then_some(self.clock);
                }
                self.acked_seq = seq;
                Ok(Action::Ack(seq))
            }
            wire::FRAME_SNAPSHOT_DONE => {
                let Frame::SnapshotDone(seq) = raw.decode()? else {
                    return Err(SessionError::InvalidState("lost frame"));
                };
                if self.snapshot_done_recv.is_some() {
                    return Err(SessionError::DuplicateSnapshotDone);
                }
                if seq > self.last_recv_seq {
                    return Err(SessionError::BadSnapshotDone {
                        seq,
                        received: self.last_recv_seq,
                    });
                }
                self.snapshot_done_recv = Some(seq);
                Ok(Action::SnapshotDone(seq))
            }
            wire::FRAME_HEARTBEAT => {
                raw.decode()?;
                Ok(Action::Skip)
            }
            wire::FRAME_ERROR => {
                raw.decode()?;
                self.state = State::Closed;
                Ok(Action::PeerError)
            }
            _ => {
                self.tx.stats.skipped_frames += 1;
                Ok(Action::Skip)
            }
        }
    }

    fn on_hello(&mut self, h: &wire::Hello<'_>) -> Result<Action, SessionError> {
        if h.node_id == self.cfg.node_id {
            return Err(SessionError::SelfConnect);
        }
        self.shared = self
            .announced
            .iter()
            .copied()
            .filter(|&i| h.zones.contains(&self.cfg.zones[i].desc()))
            .collect();
        if self.role == Role::Client && h.version > self.version {
            return Err(SessionError::BadVersion(h.version));
        }
        self.version = self.version.min(h.version);
        for (d, r) in h.zones.iter().zip(&h.resume) {
            if let Some(i) = self
                .shared
                .iter()
                .copied()
                .find(|&i| self.cfg.zones[i].desc() == *d)
            {
                self.peer_resume[i] = Some(*r);
            }
        }
        self.peer_node_id = h.node_id;
        self.state = State::Established;
        if self.role == Role::Server {
            if self.version >= 2 {
                self.hello_due = true;
            } else {
                self.send_hello();
            }
        }
        Ok(Action::Hello(h.node_id))
    }
}

/// A RECORDS frame being built into a client session's outgoing buffer
/// (see [`Session::begin_records`]).  Dropping it unfinished discards the
/// frame.
#[derive(Debug)]
pub struct RecordsWriter<'s> {
    builder: RecordsBuilder<'s>,
    seq: u64,
    snapshot: bool,
    tx: &'s mut Tx,
    now: u64,
}

impl RecordsWriter<'_> {
    /// The seq this frame will carry.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Appends a record if it fits (see [`RecordsBuilder::try_push`]).
    pub fn try_push(&mut self, r: &RecordRef<'_>) -> bool {
        self.builder.try_push(r)
    }

    /// Records pushed so far.
    pub fn count(&self) -> u16 {
        self.builder.count()
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.builder.is_empty()
    }

    /// Frame size so far.
    pub fn len(&self) -> usize {
        self.builder.len()
    }

    /// Bytes left in the budget.
    pub fn remaining(&self) -> usize {
        self.builder.remaining()
    }

    /// Completes the frame and returns its seq; a frame without records is
    /// discarded instead (`None`, no seq used).
    pub fn finish(self) -> Option<u64> {
        let RecordsWriter {
            builder,
            seq,
            snapshot,
            tx,
            now,
        } = self;
        if builder.is_empty() {
            return None;
        }
        tx.stats.records_out += u64::from(builder.count());
        builder.finish();
        tx.last_sent_seq = seq;
        tx.ack_wait_since.get_or_insert(now);
        if snapshot {
            tx.snapshot_seq = seq;
        }
        tx.last_send_ms = now;
        tx.stats.frames_out += 1;
        Some(seq)
    }
}

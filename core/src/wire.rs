//! The wire format: frame encoders and zero-copy decoders.
//!
//! A frame is `u32 len` (the bytes after the length field), `u8 type` and a
//! body; all integers are big-endian.  `docs/PROTOCOL.md` is the
//! specification; this module is its reference implementation.
//!
//! Decoding never panics and never allocates in proportion to a length
//! claimed by the peer: lengths are checked against the bytes actually
//! present, and [`FrameReader`] refuses any frame longer than its limit
//! before buffering it.

use std::borrow::Cow;
use std::fmt;

use crate::merge::Version;

/// First four bytes of a HELLO body.
pub const MAGIC: [u8; 4] = *b"ZSYN";
/// The protocol version this module speaks (and offers in HELLO).
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version it still speaks: version 1 has no resume
/// (every connection starts with a full snapshot).
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// Bytes of the length field.
pub const LEN_BYTES: usize = 4;
/// Bytes of the length field and the type byte.
pub const FRAME_HEADER_LEN: usize = 5;
/// What a [`FrameReader`] allocates first: frames larger than this get a
/// buffer as large as they are (up to the frame limit) once their length
/// field is in.
pub const RECV_CHUNK: usize = 16384;

/// Smallest frame limit a [`FrameReader`] accepts (smaller limits are
/// raised to it); an ERROR frame with the longest text always fits.
pub const MIN_FRAME_LIMIT: usize = 1024;

/// Frame type HELLO.
pub const FRAME_HELLO: u8 = 0x01;
/// Frame type RECORDS.
pub const FRAME_RECORDS: u8 = 0x02;
/// Frame type ACK.
pub const FRAME_ACK: u8 = 0x03;
/// Frame type HEARTBEAT.
pub const FRAME_HEARTBEAT: u8 = 0x04;
/// Frame type SNAPSHOT_DONE.
pub const FRAME_SNAPSHOT_DONE: u8 = 0x05;
/// Frame type ERROR.
pub const FRAME_ERROR: u8 = 0x06;
/// Frame type POSITION (version 2).
pub const FRAME_POSITION: u8 = 0x07;

/// Zone kind: keyval.
pub const KIND_KEYVAL: u8 = 1;
/// Zone kind: limit_req.
pub const KIND_LIMIT_REQ: u8 = 2;
/// Zone kind: sticky sessions.
pub const KIND_STICKY: u8 = 3;
/// Current version of both zone kinds.
pub const KIND_VERSION: u16 = 1;

/// RECORDS frame flag: the frame is part of the initial snapshot.
pub const RECORDS_SNAPSHOT: u8 = 0x01;
/// Record flag: the record is a tombstone (a delete).
pub const RECORD_TOMBSTONE: u8 = 0x01;

/// Longest zone name.
pub const MAX_ZONE_NAME: usize = 255;
/// Longest record key.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;
/// Longest ERROR text, in bytes.
pub const MAX_ERROR_TEXT: usize = 512;

/// Bytes of a record besides its key and value.
pub const RECORD_FIXED_LEN: usize = 1 + 8 + 8 + 4 + 2 + 4;
/// Bytes of a RECORDS frame besides its zone name and records, including
/// the length field.
pub const RECORDS_FIXED_LEN: usize = FRAME_HEADER_LEN + 8 + 1 + 1 + 2 + 1 + 2;

/// Encoded size of one record.
#[inline]
pub const fn encoded_record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_FIXED_LEN
        .saturating_add(key_len)
        .saturating_add(value_len)
}

/// Size of a RECORDS frame with no records (length field included).
#[inline]
pub const fn records_frame_overhead(zone_name_len: usize) -> usize {
    RECORDS_FIXED_LEN.saturating_add(zone_name_len)
}

/// Whether a record can be sent at all in frames of at most `max_frame`
/// bytes (one record alone in a frame).
#[inline]
pub const fn record_fits(
    zone_name_len: usize,
    key_len: usize,
    value_len: usize,
    max_frame: usize,
) -> bool {
    key_len <= MAX_KEY_LEN
        && value_len <= u32::MAX as usize
        && records_frame_overhead(zone_name_len)
            .saturating_add(encoded_record_len(key_len, value_len))
            <= max_frame
}

/// An ERROR frame code.  Unknown codes are kept as they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    /// The HELLO carried a protocol version the receiver does not speak.
    pub const UNSUPPORTED_VERSION: Self = Self(1);
    /// The HELLO did not start with the magic.
    pub const BAD_MAGIC: Self = Self(2);
    /// The peer is this very node.
    pub const SELF: Self = Self(3);
    /// Malformed or unexpected frame.
    pub const PROTOCOL: Self = Self(4);
    /// Graceful close (shutdown or reload); not an error.
    pub const SHUTDOWN: Self = Self(5);

    /// Short name, for logs.
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "unsupported version",
            2 => "bad magic",
            3 => "self",
            4 => "protocol error",
            5 => "shutdown",
            _ => "unknown error",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

/// Why bytes could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The frame (length field included) exceeds the receive limit.
    TooLarge {
        /// Claimed frame size in bytes, length field included.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// The bytes do not follow the format; the phrase says how.
    Malformed(&'static str),
    /// A HELLO that does not start with [`MAGIC`].
    BadMagic([u8; 4]),
    /// A HELLO of another protocol version.
    UnsupportedVersion(u16),
    /// A record with reserved flag bits set.
    BadRecordFlags(u8),
}

impl WireError {
    /// The ERROR code to answer this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            WireError::BadMagic(_) => ErrorCode::BAD_MAGIC,
            WireError::UnsupportedVersion(_) => ErrorCode::UNSUPPORTED_VERSION,
            _ => ErrorCode::PROTOCOL,
        }
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::TooLarge { size, limit } => {
                write!(f, "frame too large: {size} bytes, limit {limit}")
            }
            WireError::Malformed(what) => f.write_str(what),
            WireError::BadMagic(m) => write!(f, "bad magic \"{}\"", m.escape_ascii()),
            WireError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            WireError::BadRecordFlags(fl) => write!(f, "invalid record flags 0x{fl:02x}"),
        }
    }
}

impl std::error::Error for WireError {}

/* decoding */

/// A bounds-checked reader over a byte slice.
struct Cur<'a>(&'a [u8]);

impl<'a> Cur<'a> {
    fn bytes(&mut self, n: usize, err: &'static str) -> Result<&'a [u8], WireError> {
        if n > self.0.len() {
            return Err(WireError::Malformed(err));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, err: &'static str) -> Result<[u8; N], WireError> {
        let b = self.bytes(N, err)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u8(&mut self, err: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(err)?[0])
    }

    fn u16(&mut self, err: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(err)?))
    }

    fn u32(&mut self, err: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(err)?))
    }

    fn u64(&mut self, err: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array(err)?))
    }

    fn end(&self, err: &'static str) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed(err))
        }
    }
}

/// A zone as announced in HELLO and named in RECORDS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZoneDesc<'a> {
    /// Zone name, 1..=255 bytes.
    pub name: &'a [u8],
    /// Zone kind ([`KIND_KEYVAL`], [`KIND_LIMIT_REQ`], ...).
    pub kind: u8,
    /// Version of the kind's value format.
    pub kind_version: u16,
}

/// What a version-2 HELLO adds to each zone entry: the sender's history
/// of the zone, and where it stands in the receiver's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneResume {
    /// The sender's epoch of this zone (random, drawn when its shared
    /// memory was created).
    pub epoch: u64,
    /// (Server) the client's epoch this position is in, 0 for none.
    pub seen_epoch: u64,
    /// (Server) the client's change sequence number up to which this node
    /// has applied every change of the zone.
    pub seen_seq: u64,
}

/// A decoded HELLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello<'a> {
    /// Protocol version ([`MIN_PROTOCOL_VERSION`]..=[`PROTOCOL_VERSION`]).
    pub version: u16,
    /// Sender's node id (nonzero).
    pub node_id: u64,
    /// The sender's synced zones, names distinct.
    pub zones: Vec<ZoneDesc<'a>>,
    /// Version 2: one entry per zone; empty for version 1.
    pub resume: Vec<ZoneResume>,
}

impl<'a> Hello<'a> {
    /// Decodes a HELLO body.  Magic and version are checked first, so a
    /// peer of another version gets [`WireError::UnsupportedVersion`]
    /// whatever follows them.
    pub fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        const T: &str = "truncated hello";
        let mut c = Cur(body);
        let magic: [u8; 4] = match c.array(T) {
            Ok(m) => m,
            Err(e) => {
                return Err(if MAGIC.starts_with(body) {
                    e
                } else {
                    let mut m = [0u8; 4];
                    m[..body.len()].copy_from_slice(body);
                    WireError::BadMagic(m)
                })
            }
        };
        if magic != MAGIC {
            return Err(WireError::BadMagic(magic));
        }
        let version = c.u16(T)?;
        if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&version) {
            return Err(WireError::UnsupportedVersion(version));
        }
        let node_id = c.u64(T)?;
        if node_id == 0 {
            return Err(WireError::Malformed("zero node id in hello"));
        }
        let count = c.u16(T)? as usize;
        // each zone takes at least 5 bytes: never reserve more than present
        let mut zones = Vec::with_capacity(count.min(c.0.len() / 5));
        let mut resume = Vec::new();
        for _ in 0..count {
            let name_len = c.u8(T)? as usize;
            if name_len == 0 {
                return Err(WireError::Malformed("empty zone name in hello"));
            }
            let name = c.bytes(name_len, T)?;
            let kind = c.u8(T)?;
            let kind_version = c.u16(T)?;
            zones.push(ZoneDesc {
                name,
                kind,
                kind_version,
            });
            if version >= 2 {
                resume.push(ZoneResume {
                    epoch: c.u64(T)?,
                    seen_epoch: c.u64(T)?,
                    seen_seq: c.u64(T)?,
                });
            }
        }
        c.end("trailing bytes in hello")?;
        let mut names: Vec<&[u8]> = zones.iter().map(|z| z.name).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(WireError::Malformed("duplicate zone in hello"));
        }
        Ok(Hello {
            version,
            node_id,
            zones,
            resume,
        })
    }
}

/// One record, borrowed from a received frame or from the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// Record flags ([`RECORD_TOMBSTONE`]).
    pub flags: u8,
    /// Hybrid-logical-clock timestamp of the change.
    pub hlc: u64,
    /// Node id of the node that made the change.
    pub origin: u64,
    /// Remaining lifetime at send time in ms, 0 = no expiry.
    pub ttl_ms: u32,
    /// The key.
    pub key: &'a [u8],
    /// The value (empty for a tombstone).
    pub value: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// A record carrying a value.
    pub fn put(key: &'a [u8], value: &'a [u8], hlc: u64, origin: u64, ttl_ms: u32) -> Self {
        Self {
            flags: 0,
            hlc,
            origin,
            ttl_ms,
            key,
            value,
        }
    }

    /// A tombstone.
    pub fn tombstone(key: &'a [u8], hlc: u64, origin: u64, ttl_ms: u32) -> Self {
        Self {
            flags: RECORD_TOMBSTONE,
            hlc,
            origin,
            ttl_ms,
            key,
            value: &[],
        }
    }

    /// Whether this is a delete.
    #[inline]
    pub fn is_tombstone(&self) -> bool {
        self.flags & RECORD_TOMBSTONE != 0
    }

    /// The record's version for the merge rule.
    #[inline]
    pub fn version(&self) -> Version {
        Version {
            hlc: self.hlc,
            origin: self.origin,
        }
    }

    /// Encoded size.
    #[inline]
    pub fn encoded_len(&self) -> usize {
        encoded_record_len(self.key.len(), self.value.len())
    }

    fn decode(c: &mut Cur<'a>) -> Result<Self, WireError> {
        const T: &str = "truncated record";
        let flags = c.u8(T)?;
        if flags & !RECORD_TOMBSTONE != 0 {
            return Err(WireError::BadRecordFlags(flags));
        }
        let hlc = c.u64(T)?;
        let origin = c.u64(T)?;
        let ttl_ms = c.u32(T)?;
        let key_len = c.u16(T)? as usize;
        let key = c.bytes(key_len, T)?;
        let value_len = c.u32(T)?;
        let value = c.bytes(usize::try_from(value_len).unwrap_or(usize::MAX), T)?;
        if flags & RECORD_TOMBSTONE != 0 && !value.is_empty() {
            return Err(WireError::Malformed("tombstone with a value"));
        }
        Ok(RecordRef {
            flags,
            hlc,
            origin,
            ttl_ms,
            key,
            value,
        })
    }
}

/// A RECORDS frame, borrowing the received bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordsFrame<'a> {
    /// Per-connection sequence number, from 1.
    pub seq: u64,
    /// Zone name.
    pub zone: &'a [u8],
    /// Zone kind.
    pub kind: u8,
    /// Zone kind version.
    pub kind_version: u16,
    /// Frame flags ([`RECORDS_SNAPSHOT`]).
    pub flags: u8,
    /// Number of records.
    pub count: u16,
    records: &'a [u8],
}

impl<'a> RecordsFrame<'a> {
    /// Decodes the frame header only; records are checked by
    /// [`validate`](Self::validate) or lazily by the iterator.
    pub fn decode_header(body: &'a [u8]) -> Result<Self, WireError> {
        const T: &str = "truncated records header";
        let mut c = Cur(body);
        let seq = c.u64(T)?;
        let name_len = c.u8(T)? as usize;
        if name_len == 0 {
            return Err(WireError::Malformed("empty zone name in records"));
        }
        let zone = c.bytes(name_len, T)?;
        let kind = c.u8(T)?;
        let kind_version = c.u16(T)?;
        let flags = c.u8(T)?;
        if flags & !RECORDS_SNAPSHOT != 0 {
            return Err(WireError::Malformed("invalid records flags"));
        }
        let count = c.u16(T)?;
        Ok(RecordsFrame {
            seq,
            zone,
            kind,
            kind_version,
            flags,
            count,
            records: c.0,
        })
    }

    /// Decodes the header and validates every record.
    pub fn decode(body: &'a [u8]) -> Result<Self, WireError> {
        let f = Self::decode_header(body)?;
        f.validate()?;
        Ok(f)
    }

    /// Checks every record and that they exactly fill the frame, so that
    /// nothing is applied from a frame that is bad anywhere.
    pub fn validate(&self) -> Result<(), WireError> {
        self.records().try_for_each(|r| r.map(|_| ()))
    }

    /// The records, decoded as they are iterated.  After an error the
    /// iterator ends.
    pub fn records(&self) -> RecordIter<'a> {
        RecordIter {
            rest: self.records,
            left: self.count,
            done: false,
        }
    }

    /// Whether the frame is part of the initial snapshot.
    #[inline]
    pub fn is_snapshot(&self) -> bool {
        self.flags & RECORDS_SNAPSHOT != 0
    }

    /// The zone this frame is for.
    #[inline]
    pub fn zone_desc(&self) -> ZoneDesc<'a> {
        ZoneDesc {
            name: self.zone,
            kind: self.kind,
            kind_version: self.kind_version,
        }
    }
}

/// Iterator over the records of a [`RecordsFrame`].
#[derive(Clone, Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
    left: u16,
    done: bool,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<RecordRef<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.left == 0 {
            self.done = true;
            return if self.rest.is_empty() {
                None
            } else {
                Some(Err(WireError::Malformed("trailing bytes after records")))
            };
        }
        let mut c = Cur(self.rest);
        match RecordRef::decode(&mut c) {
            Ok(r) => {
                self.rest = c.0;
                self.left -= 1;
                Some(Ok(r))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        if self.done {
            (0, Some(0))
        } else {
            (0, Some(self.left as usize + 1))
        }
    }
}

/// A decoded ERROR frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorFrame<'a> {
    /// The code.
    pub code: ErrorCode,
    /// The text as sent (UTF-8 by the spec, not trusted).
    pub text: &'a [u8],
}

impl ErrorFrame<'_> {
    /// The text, invalid UTF-8 replaced.
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.text)
    }
}

/// Bytes from the wire made safe for a log line: printable ASCII stays,
/// every other byte (newlines, control characters, quotes, backslashes,
/// non-ASCII) is written `\\xNN`; at most `max` bytes are shown, followed
/// by `...` if there were more.
pub fn escape(bytes: &[u8], max: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len().min(max));
    for &b in bytes.iter().take(max) {
        if (0x20..0x7f).contains(&b) && b != b'\\' && b != b'"' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if bytes.len() > max {
        s.push_str("...");
    }
    s
}

/// Any decoded frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// HELLO.
    Hello(Hello<'a>),
    /// RECORDS, already [validated](RecordsFrame::validate).
    Records(RecordsFrame<'a>),
    /// ACK: every RECORDS frame up to this seq was applied or skipped.
    Ack(u64),
    /// HEARTBEAT.
    Heartbeat,
    /// SNAPSHOT_DONE: seq of the last snapshot RECORDS frame (0 if none).
    SnapshotDone(u64),
    /// ERROR.
    Error(ErrorFrame<'a>),
    /// POSITION (version 2): every change of `zone` up to `seq` has been
    /// sent on this connection before this frame.
    Position {
        /// Zone name.
        zone: &'a [u8],
        /// The sender's change sequence number.
        seq: u64,
    },
    /// A frame type this version does not know.
    Unknown {
        /// Its type byte.
        frame_type: u8,
        /// Its body.
        body: &'a [u8],
    },
}

impl<'a> Frame<'a> {
    /// Decodes and fully validates a frame body of the given type.
    pub fn decode(frame_type: u8, body: &'a [u8]) -> Result<Self, WireError> {
        let seq_body = |what_short, what_long| -> Result<u64, WireError> {
            let mut c = Cur(body);
            let seq = c.u64(what_short)?;
            c.end(what_long)?;
            Ok(seq)
        };
        Ok(match frame_type {
            FRAME_HELLO => Frame::Hello(Hello::decode(body)?),
            FRAME_RECORDS => Frame::Records(RecordsFrame::decode(body)?),
            FRAME_ACK => Frame::Ack(seq_body("truncated ack", "trailing bytes in ack")?),
            FRAME_HEARTBEAT => {
                Cur(body).end("trailing bytes in heartbeat")?;
                Frame::Heartbeat
            }
            FRAME_SNAPSHOT_DONE => Frame::SnapshotDone(seq_body(
                "truncated snapshot done",
                "trailing bytes in snapshot done",
            )?),
            FRAME_ERROR => {
                const T: &str = "truncated error frame";
                let mut c = Cur(body);
                let code = ErrorCode(c.u16(T)?);
                let len = c.u16(T)? as usize;
                let text = c.bytes(len, T)?;
                c.end("trailing bytes in error frame")?;
                Frame::Error(ErrorFrame { code, text })
            }
            FRAME_POSITION => {
                const T: &str = "truncated position";
                let mut c = Cur(body);
                let len = c.u8(T)? as usize;
                if len == 0 {
                    return Err(WireError::Malformed("empty zone name in position"));
                }
                let zone = c.bytes(len, T)?;
                let seq = c.u64(T)?;
                c.end("trailing bytes in position")?;
                Frame::Position { zone, seq }
            }
            _ => Frame::Unknown { frame_type, body },
        })
    }

    /// The frame's type byte.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Hello(_) => FRAME_HELLO,
            Frame::Records(_) => FRAME_RECORDS,
            Frame::Ack(_) => FRAME_ACK,
            Frame::Heartbeat => FRAME_HEARTBEAT,
            Frame::SnapshotDone(_) => FRAME_SNAPSHOT_DONE,
            Frame::Error(_) => FRAME_ERROR,
            Frame::Position { .. } => FRAME_POSITION,
            Frame::Unknown { frame_type, .. } => *frame_type,
        }
    }
}

/// A complete frame, not yet decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// The type byte.
    pub frame_type: u8,
    /// The body (after the type byte).
    pub body: &'a [u8],
}

impl<'a> RawFrame<'a> {
    /// Decodes the body (see [`Frame::decode`]).
    pub fn decode(&self) -> Result<Frame<'a>, WireError> {
        Frame::decode(self.frame_type, self.body)
    }

    /// Size of the frame on the wire, length field included.
    pub fn wire_len(&self) -> usize {
        FRAME_HEADER_LEN + self.body.len()
    }
}

/// Splits the first frame off `buf`: `Ok(None)` if it is not complete
/// yet, else the frame and its size on the wire.  A length field claiming
/// more than `max_frame` bytes (length field included) is an error as soon
/// as the length field is in.
pub fn split_frame(
    buf: &[u8],
    max_frame: usize,
) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
    let Some(len) = buf.get(..LEN_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as u64;
    if len == 0 {
        return Err(WireError::Malformed("zero frame length"));
    }
    let size = LEN_BYTES as u64 + len;
    if size > max_frame as u64 {
        return Err(WireError::TooLarge {
            size,
            limit: max_frame,
        });
    }
    let size = size as usize; // <= max_frame
    match buf.get(LEN_BYTES..size) {
        Some(rest) => Ok(Some((
            RawFrame {
                frame_type: rest[0],
                body: &rest[1..],
            },
            size,
        ))),
        None => Ok(None),
    }
}

/// Reassembles frames from a byte stream into a buffer bounded by the
/// frame limit (`zone_sync_recv_buffer_size`).
///
/// Feed it with [`spare`](Self::spare) + [`commit`](Self::commit) (read
/// straight from the socket) or [`push`](Self::push), then call
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)` (need more
/// bytes).  A frame returned by `next_frame` stays valid until the next
/// call on the reader, which discards it.  Errors are final.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    consumed: usize,
    limit: usize,
    error: Option<WireError>,
    /// A read filled the whole buffer: the peer sends in bulk, the buffer
    /// may take the frame limit.
    bulk: bool,
}

impl FrameReader {
    /// A reader accepting frames of at most `max_frame` bytes (length field
    /// included; raised to [`MIN_FRAME_LIMIT`] if smaller).  Nothing is
    /// allocated until the first read; the buffer then starts at
    /// [`RECV_CHUNK`] bytes (or the limit, if smaller) and grows to hold
    /// the frame being received, or to the limit once a read has filled
    /// it (the peer sends in bulk).
    pub fn new(max_frame: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            end: 0,
            consumed: 0,
            limit: max_frame.max(MIN_FRAME_LIMIT),
            error: None,
            bulk: false,
        }
    }

    /// The frame limit in force.
    pub fn max_frame(&self) -> usize {
        self.limit
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start - self.consumed
    }

    fn settle(&mut self) {
        self.start += self.consumed;
        self.consumed = 0;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free space to read into; call [`commit`](Self::commit) with the
    /// number of bytes written.  Empty only when complete frames are
    /// waiting to be taken by [`next_frame`](Self::next_frame).
    pub fn spare(&mut self) -> &mut [u8] {
        self.settle();
        // the frame being received, once its length field is in (a length
        // over the limit is refused by next_frame, not allocated)
        let head = &self.buf[self.start..self.end];
        let pending = match head.get(..LEN_BYTES) {
            Some(l) => LEN_BYTES + u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize,
            None => 0,
        };
        let want = if self.bulk {
            self.limit
        } else {
            RECV_CHUNK.max(pending).min(self.limit)
        };
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`spare`](Self::spare) as filled.
    pub fn commit(&mut self, n: usize) {
        self.end += n.min(self.buf.len() - self.end);
        if n > 0 && self.end == self.buf.len() {
            self.bulk = true;
        }
    }

    /// Copies as much of `bytes` as fits; returns how many were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = bytes.len().min(spare.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The frame last returned by [`next_frame`](Self::next_frame), until
    /// the next call that changes the reader.
    pub fn current(&self) -> Option<RawFrame<'_>> {
        if self.consumed == 0 {
            return None;
        }
        split_frame(
            &self.buf[self.start..self.start + self.consumed],
            self.limit,
        )
        .ok()
        .flatten()
        .map(|(f, _)| f)
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<RawFrame<'_>>, WireError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        self.settle();
        match split_frame(&self.buf[self.start..self.end], self.limit) {
            Ok(Some((frame, n))) => {
                self.consumed = n;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.error = Some(e);
                Err(e)
            }
        }
    }
}

/* encoding */

fn begin_frame(out: &mut Vec<u8>, frame_type: u8) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, frame_type]);
    start
}

fn end_frame(out: &mut [u8], start: usize) -> usize {
    let size = out.len() - start;
    let len = (size - LEN_BYTES) as u32;
    out[start..start + LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    size
}

/// Appends a frame with an arbitrary type and body (for frame types this
/// module does not build itself).
pub fn encode_frame(out: &mut Vec<u8>, frame_type: u8, body: &[u8]) {
    let start = begin_frame(out, frame_type);
    out.extend_from_slice(body);
    end_frame(out, start);
}

/// Appends a HELLO of [`PROTOCOL_VERSION`] (see [`encode_hello_v`]).
pub fn encode_hello(out: &mut Vec<u8>, node_id: u64, zones: &[ZoneDesc<'_>]) {
    encode_hello_v(out, PROTOCOL_VERSION, node_id, zones, &[]);
}

/// Appends a HELLO of `version`.  Zones with an empty or over-long name are
/// left out, as are zones past the 65535th; the caller validates its
/// configuration.  Version 2 gives each zone its entry of `resume` (zeros
/// where it is short).
pub fn encode_hello_v(
    out: &mut Vec<u8>,
    version: u16,
    node_id: u64,
    zones: &[ZoneDesc<'_>],
    resume: &[ZoneResume],
) {
    let start = begin_frame(out, FRAME_HELLO);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&node_id.to_be_bytes());
    let count_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut count: u16 = 0;
    for (i, z) in zones.iter().enumerate() {
        if z.name.is_empty() || z.name.len() > MAX_ZONE_NAME || count == u16::MAX {
            continue;
        }
        out.push(z.name.len() as u8);
        out.extend_from_slice(z.name);
        out.push(z.kind);
        out.extend_from_slice(&z.kind_version.to_be_bytes());
        if version >= 2 {
            let r = resume.get(i).copied().unwrap_or_default();
            for v in [r.epoch, r.seen_epoch, r.seen_seq] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        count += 1;
    }
    out[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
    end_frame(out, start);
}

/// Appends a POSITION (version 2): every change of `zone` up to `seq` was
/// sent before it.
pub fn encode_position(out: &mut Vec<u8>, zone: &[u8], seq: u64) {
    let start = begin_frame(out, FRAME_POSITION);
    out.push(zone.len().min(MAX_ZONE_NAME) as u8);
    out.extend_from_slice(&zone[..zone.len().min(MAX_ZONE_NAME)]);
    out.extend_from_slice(&seq.to_be_bytes());
    end_frame(out, start);
}

/// Appends an ACK.
pub fn encode_ack(out: &mut Vec<u8>, seq: u64) {
    encode_frame(out, FRAME_ACK, &seq.to_be_bytes());
}

/// Appends a HEARTBEAT.
pub fn encode_heartbeat(out: &mut Vec<u8>) {
    encode_frame(out, FRAME_HEARTBEAT, &[]);
}

/// Appends a SNAPSHOT_DONE.
pub fn encode_snapshot_done(out: &mut Vec<u8>, seq: u64) {
    encode_frame(out, FRAME_SNAPSHOT_DONE, &seq.to_be_bytes());
}

/// Appends an ERROR; the text is cut to [`MAX_ERROR_TEXT`] bytes on a
/// character boundary.
pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, text: &str) {
    let mut n = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    let text = &text.as_bytes()[..n];
    let start = begin_frame(out, FRAME_ERROR);
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(&(n as u16).to_be_bytes());
    out.extend_from_slice(text);
    end_frame(out, start);
}

/// Builds one RECORDS frame at the end of a buffer, within a byte budget.
///
/// Dropping the builder without [`finish`](Self::finish) removes the
/// partial frame from the buffer.
#[derive(Debug)]
pub struct RecordsBuilder<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    count_at: usize,
    count: u16,
    limit: usize,
    finished: bool,
}

impl<'a> RecordsBuilder<'a> {
    /// Starts a RECORDS frame of at most `max_frame_bytes` bytes (length
    /// field included).  Fails if the zone name is empty or longer than
    /// 255 bytes, or the empty frame alone exceeds the budget.
    pub fn new(
        out: &'a mut Vec<u8>,
        seq: u64,
        zone: &[u8],
        kind: u8,
        kind_version: u16,
        flags: u8,
        max_frame_bytes: usize,
    ) -> Result<Self, WireError> {
        if zone.is_empty() || zone.len() > MAX_ZONE_NAME {
            return Err(WireError::Malformed("invalid zone name length"));
        }
        let overhead = records_frame_overhead(zone.len());
        if overhead > max_frame_bytes {
            return Err(WireError::TooLarge {
                size: overhead as u64,
                limit: max_frame_bytes,
            });
        }
        let start = begin_frame(out, FRAME_RECORDS);
        out.extend_from_slice(&seq.to_be_bytes());
        out.push(zone.len() as u8);
        out.extend_from_slice(zone);
        out.push(kind);
        out.extend_from_slice(&kind_version.to_be_bytes());
        out.push(flags);
        let count_at = out.len();
        out.extend_from_slice(&[0, 0]);
        Ok(Self {
            out,
            start,
            count_at,
            count: 0,
            limit: max_frame_bytes,
            finished: false,
        })
    }

    /// Appends a record if it fits the budget; `false` if it does not (or
    /// the frame already has 65535 records, or the record cannot be
    /// encoded at all: key over 65535 bytes, reserved flags, tombstone
    /// with a value).
    pub fn try_push(&mut self, r: &RecordRef<'_>) -> bool {
        if self.count == u16::MAX
            || r.key.len() > MAX_KEY_LEN
            || r.value.len() > u32::MAX as usize
            || r.flags & !RECORD_TOMBSTONE != 0
            || (r.is_tombstone() && !r.value.is_empty())
            || self.len().saturating_add(r.encoded_len()) > self.limit
        {
            return false;
        }
        let o = &mut *self.out;
        o.push(r.flags);
        o.extend_from_slice(&r.hlc.to_be_bytes());
        o.extend_from_slice(&r.origin.to_be_bytes());
        o.extend_from_slice(&r.ttl_ms.to_be_bytes());
        o.extend_from_slice(&(r.key.len() as u16).to_be_bytes());
        o.extend_from_slice(r.key);
        o.extend_from_slice(&(r.value.len() as u32).to_be_bytes());
        o.extend_from_slice(r.value);
        self.count += 1;
        true
    }

    /// Records pushed so far.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Whether no record was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the frame so far, length field included.
    pub fn len(&self) -> usize {
        self.out.len() - self.start
    }

    /// Bytes left in the budget.
    pub fn remaining(&self) -> usize {
        self.limit.saturating_sub(self.len())
    }

    /// Completes the frame (length and count) and returns its size.
    pub fn finish(mut self) -> usize {
        let c = self.count.to_be_bytes();
        self.out[self.count_at..self.count_at + 2].copy_from_slice(&c);
        self.finished = true;
        end_frame(self.out, self.start)
    }
}

impl Drop for RecordsBuilder<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.out.truncate(self.start);
        }
    }
}

/// The value of a kind 2 (limit_req) record: one node's contribution to a
/// leaky bucket.
pub mod limit_req {
    /// Encoded size of a limit_req value.
    pub const VALUE_LEN: usize = 16;

    /// A node's share of a leaky bucket for one key.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct LimitReqValue {
        /// Excess in thousandths of a request, as nginx's limit_req keeps it.
        pub excess_milli: u64,
        /// How long before the record was built the share was stated, in
        /// ms (kind_version 2; see `rate::age`).
        pub last_ms: u64,
    }

    impl LimitReqValue {
        /// The value bytes.
        pub fn to_bytes(self) -> [u8; VALUE_LEN] {
            let mut b = [0u8; VALUE_LEN];
            b[..8].copy_from_slice(&self.excess_milli.to_be_bytes());
            b[8..].copy_from_slice(&self.last_ms.to_be_bytes());
            b
        }

        /// Parses value bytes; `None` unless exactly 16 bytes.
        pub fn from_bytes(b: &[u8]) -> Option<Self> {
            let b: &[u8; VALUE_LEN] = b.try_into().ok()?;
            let (a, l) = b.split_at(8);
            Some(Self {
                excess_milli: u64::from_be_bytes(a.try_into().ok()?),
                last_ms: u64::from_be_bytes(l.try_into().ok()?),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limit_req::LimitReqValue;
    use super::*;
    use proptest::prelude::*;

    const LIMIT: usize = 65536;

    #[test]
    fn reader_allocates_as_frames_need() {
        let mut r = FrameReader::new(1 << 20);
        assert_eq!(r.buf.capacity(), 0, "nothing before the first read");
        assert_eq!(r.spare().len(), RECV_CHUNK);
        // one byte of a frame: still one chunk
        r.push(&[0]);
        assert_eq!(r.buf.len(), RECV_CHUNK);
        // a 100000-byte frame announced: room for exactly that frame
        let len = 100_000u32 - LEN_BYTES as u32;
        r.push(&len.to_be_bytes()[1..]);
        assert_eq!(r.spare().len(), 100_000 - LEN_BYTES);
        assert_eq!(r.buf.len(), 100_000);
        let mut body = vec![0u8; len as usize];
        body[0] = FRAME_HEARTBEAT + 0x40;
        assert_eq!(r.push(&body), body.len());
        assert!(matches!(r.next_frame(), Ok(Some(_))));
        assert_eq!(r.next_frame(), Ok(None));
        // a read that fills the buffer: the limit from then on
        let mut r = FrameReader::new(1 << 20);
        let n = r.spare().len();
        r.commit(n);
        assert_eq!(r.spare().len(), (1 << 20) - RECV_CHUNK);
        // a small limit caps the first allocation
        let mut r = FrameReader::new(2000);
        assert_eq!(r.spare().len(), 2000);
        // a length over the limit allocates nothing more
        let mut r = FrameReader::new(1 << 20);
        r.push(&u32::MAX.to_be_bytes());
        assert!(r.next_frame().is_err());
        assert_eq!(r.buf.len(), RECV_CHUNK);
    }

    #[test]
    fn escape_for_logs() {
        assert_eq!(escape(b"plain text", 64), "plain text");
        assert_eq!(
            escape(b"a\nfake [emerg] \"x\\\xff", 64),
            "a\\x0afake [emerg] \\x22x\\x5c\\xff"
        );
        assert_eq!(escape(b"abcdef", 3), "abc...");
    }

    fn one(buf: &[u8]) -> (u8, &[u8]) {
        let (f, n) = split_frame(buf, LIMIT).unwrap().unwrap();
        assert_eq!(n, buf.len());
        (f.frame_type, f.body)
    }

    fn decode_all(buf: &[u8]) -> Frame<'_> {
        let (t, b) = one(buf);
        Frame::decode(t, b).unwrap()
    }

    fn sample_records(out: &mut Vec<u8>, seq: u64, n: usize) {
        let mut b = RecordsBuilder::new(out, seq, b"zone", KIND_KEYVAL, 1, 0, LIMIT).unwrap();
        for i in 0..n {
            let key = format!("key{i}");
            let val = vec![i as u8; i];
            let r = if i % 3 == 2 {
                RecordRef::tombstone(key.as_bytes(), 100 + i as u64, 7, 0)
            } else {
                RecordRef::put(key.as_bytes(), &val, 100 + i as u64, 7, 1000)
            };
            assert!(b.try_push(&r));
        }
        b.finish();
    }

    #[test]
    fn hello_roundtrip() {
        let mut out = Vec::new();
        let zones = [
            ZoneDesc {
                name: b"one",
                kind: KIND_KEYVAL,
                kind_version: 1,
            },
            ZoneDesc {
                name: b"two",
                kind: KIND_LIMIT_REQ,
                kind_version: 1,
            },
        ];
        encode_hello(&mut out, 42, &zones);
        match decode_all(&out) {
            Frame::Hello(h) => {
                assert_eq!(h.version, 2);
                assert_eq!(h.node_id, 42);
                assert_eq!(h.zones, zones);
                assert_eq!(h.resume, [ZoneResume::default(); 2]);
            }
            f => panic!("{f:?}"),
        }
        // version 2 carries each zone's epoch and position
        let resume = [
            ZoneResume {
                epoch: 7,
                seen_epoch: 8,
                seen_seq: 9,
            },
            ZoneResume::default(),
        ];
        out.clear();
        encode_hello_v(&mut out, 2, 42, &zones, &resume);
        match decode_all(&out) {
            Frame::Hello(h) => assert_eq!(h.resume, resume),
            f => panic!("{f:?}"),
        }
        // version 1 has no such fields
        out.clear();
        encode_hello_v(&mut out, 1, 42, &zones, &resume);
        match decode_all(&out) {
            Frame::Hello(h) => {
                assert_eq!((h.version, h.zones.len()), (1, 2));
                assert!(h.resume.is_empty());
            }
            f => panic!("{f:?}"),
        }
    }

    #[test]
    fn position_roundtrip() {
        let mut out = Vec::new();
        encode_position(&mut out, b"kv", 0x0102);
        assert_eq!(
            decode_all(&out),
            Frame::Position {
                zone: b"kv",
                seq: 0x0102
            }
        );
        for bad in [
            &b""[..],
            b"\x00",
            b"\x02kv",
            b"\x02kv\0\0\0\0\0\0\0\x01\x00",
        ] {
            assert!(Frame::decode(FRAME_POSITION, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hello_skips_bad_names() {
        let long = [b'x'; 256];
        let mut out = Vec::new();
        let zones = [
            ZoneDesc {
                name: b"",
                kind: 1,
                kind_version: 1,
            },
            ZoneDesc {
                name: &long,
                kind: 1,
                kind_version: 1,
            },
            ZoneDesc {
                name: &long[..255],
                kind: 1,
                kind_version: 1,
            },
        ];
        encode_hello(&mut out, 1, &zones);
        match decode_all(&out) {
            Frame::Hello(h) => assert_eq!(h.zones, &zones[2..]),
            f => panic!("{f:?}"),
        }
    }

    fn hello_body(version: u16, node: u64, zones: &[(&[u8], u8, u16)]) -> Vec<u8> {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&node.to_be_bytes());
        b.extend_from_slice(&(zones.len() as u16).to_be_bytes());
        for (n, k, v) in zones {
            b.push(n.len() as u8);
            b.extend_from_slice(n);
            b.push(*k);
            b.extend_from_slice(&v.to_be_bytes());
        }
        b
    }

    #[test]
    fn hello_errors() {
        let ok = hello_body(1, 5, &[(b"a", 1, 1)]);
        assert!(Hello::decode(&ok).is_ok());
        let mut bad = ok.clone();
        bad[0] = b'X';
        assert_eq!(Hello::decode(&bad), Err(WireError::BadMagic(*b"XSYN")));
        assert_eq!(Hello::decode(b"GE"), Err(WireError::BadMagic(*b"GE\0\0")));
        assert_eq!(
            Hello::decode(b"ZS"),
            Err(WireError::Malformed("truncated hello"))
        );
        assert_eq!(
            Hello::decode(&hello_body(3, 5, &[])),
            Err(WireError::UnsupportedVersion(3))
        );
        // a future version may change everything after the version
        assert_eq!(
            Hello::decode(b"ZSYN\x00\x07garbage"),
            Err(WireError::UnsupportedVersion(7))
        );
        assert_eq!(
            Hello::decode(&hello_body(1, 0, &[])),
            Err(WireError::Malformed("zero node id in hello"))
        );
        assert_eq!(
            Hello::decode(&hello_body(1, 5, &[(b"a", 1, 1), (b"a", 2, 1)])),
            Err(WireError::Malformed("duplicate zone in hello"))
        );
        assert_eq!(
            Hello::decode(&hello_body(1, 5, &[(b"", 1, 1)])),
            Err(WireError::Malformed("empty zone name in hello"))
        );
        let mut trailing = ok.clone();
        trailing.push(0);
        assert_eq!(
            Hello::decode(&trailing),
            Err(WireError::Malformed("trailing bytes in hello"))
        );
        for n in 0..ok.len() {
            assert!(Hello::decode(&ok[..n]).is_err(), "prefix {n}");
        }
        // a huge zone count with no zones: error, no big allocation
        let mut huge = hello_body(1, 5, &[]);
        huge[14..16].copy_from_slice(&[0xff, 0xff]);
        assert_eq!(
            Hello::decode(&huge),
            Err(WireError::Malformed("truncated hello"))
        );
    }

    #[test]
    fn records_roundtrip() {
        let mut out = Vec::new();
        sample_records(&mut out, 3, 10);
        let Frame::Records(f) = decode_all(&out) else {
            panic!()
        };
        assert_eq!(f.seq, 3);
        assert_eq!(f.zone, b"zone");
        assert_eq!(f.kind, KIND_KEYVAL);
        assert_eq!(f.kind_version, 1);
        assert!(!f.is_snapshot());
        assert_eq!(f.count, 10);
        let recs: Vec<_> = f.records().map(|r| r.unwrap()).collect();
        assert_eq!(recs.len(), 10);
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.key, format!("key{i}").as_bytes());
            assert_eq!(r.hlc, 100 + i as u64);
            assert_eq!(r.version(), Version::new(100 + i as u64, 7));
            if i % 3 == 2 {
                assert!(r.is_tombstone());
                assert!(r.value.is_empty());
                assert_eq!(r.ttl_ms, 0);
            } else {
                assert!(!r.is_tombstone());
                assert_eq!(r.value, vec![i as u8; i]);
                assert_eq!(r.ttl_ms, 1000);
            }
        }
    }

    #[test]
    fn records_empty_frame() {
        let mut out = Vec::new();
        let b =
            RecordsBuilder::new(&mut out, 1, b"z", KIND_KEYVAL, 1, RECORDS_SNAPSHOT, 100).unwrap();
        assert_eq!(b.len(), records_frame_overhead(1));
        assert_eq!(b.finish(), records_frame_overhead(1));
        let Frame::Records(f) = decode_all(&out) else {
            panic!()
        };
        assert!(f.is_snapshot());
        assert_eq!(f.records().count(), 0);
    }

    #[test]
    fn builder_respects_budget() {
        let budget = records_frame_overhead(4) + 2 * encoded_record_len(3, 10);
        let mut out = vec![0xAA]; // something before the frame
        let mut b = RecordsBuilder::new(&mut out, 9, b"zone", 1, 1, 0, budget).unwrap();
        let r = RecordRef::put(b"abc", &[1; 10], 1, 1, 0);
        assert!(b.try_push(&r));
        assert_eq!(b.remaining(), encoded_record_len(3, 10));
        assert!(b.try_push(&r));
        assert_eq!(b.remaining(), 0);
        assert!(!b.try_push(&r));
        assert!(!b.try_push(&RecordRef::put(b"", &[], 1, 1, 0)));
        assert_eq!(b.count(), 2);
        assert_eq!(b.finish(), budget);
        assert_eq!(out.len(), budget + 1);
        assert!(record_fits(4, 3, 10, records_frame_overhead(4) + 40));
        assert!(!record_fits(4, 3, 10, records_frame_overhead(4) + 39));
        assert!(!record_fits(4, 70000, 0, usize::MAX));
    }

    #[test]
    fn builder_refuses_bad_records_and_rolls_back() {
        let mut out = vec![1, 2, 3];
        {
            let mut b = RecordsBuilder::new(&mut out, 1, b"z", 1, 1, 0, LIMIT).unwrap();
            let big = vec![0u8; 70000];
            assert!(!b.try_push(&RecordRef::put(&big, b"", 1, 1, 0)));
            let mut t = RecordRef::tombstone(b"k", 1, 1, 0);
            t.value = b"v";
            assert!(!b.try_push(&t));
            let mut f = RecordRef::put(b"k", b"v", 1, 1, 0);
            f.flags = 0x80;
            assert!(!b.try_push(&f));
            assert!(b.try_push(&RecordRef::put(b"k", b"v", 1, 1, 0)));
            // dropped unfinished
        }
        assert_eq!(out, [1, 2, 3]);
        assert!(RecordsBuilder::new(&mut out, 1, b"", 1, 1, 0, LIMIT).is_err());
        assert!(RecordsBuilder::new(&mut out, 1, &[b'a'; 256], 1, 1, 0, LIMIT).is_err());
        assert_eq!(
            RecordsBuilder::new(&mut out, 1, b"zone", 1, 1, 0, 23).unwrap_err(),
            WireError::TooLarge {
                size: 24,
                limit: 23
            }
        );
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn builder_count_limit() {
        let mut out = Vec::new();
        let mut b = RecordsBuilder::new(&mut out, 1, b"z", 1, 1, 0, usize::MAX).unwrap();
        let r = RecordRef::put(b"", b"", 1, 1, 0);
        for _ in 0..u16::MAX {
            assert!(b.try_push(&r));
        }
        assert!(!b.try_push(&r));
        b.finish();
        assert!(split_frame(&out, usize::MAX).unwrap().is_some());
        let Frame::Records(f) = Frame::decode(FRAME_RECORDS, &out[5..]).unwrap() else {
            panic!()
        };
        assert_eq!(f.records().count(), 65535);
    }

    #[test]
    fn truncated_in_tenth_record_is_rejected_whole() {
        let mut out = Vec::new();
        sample_records(&mut out, 1, 12);
        let body = &out[5..];
        // the offset where the 10th record starts
        let f = RecordsFrame::decode_header(body).unwrap();
        let header = body.len() - f.records.len();
        let tenth: usize = header
            + f.records()
                .take(9)
                .map(|r| r.unwrap().encoded_len())
                .sum::<usize>();
        for cut in tenth..tenth + 20 {
            let f = RecordsFrame::decode_header(&body[..cut]).unwrap();
            assert_eq!(f.validate(), Err(WireError::Malformed("truncated record")));
            assert_eq!(f.records().filter(|r| r.is_ok()).count(), 9);
            assert!(Frame::decode(FRAME_RECORDS, &body[..cut]).is_err());
        }
    }

    #[test]
    fn records_errors() {
        let mut out = Vec::new();
        sample_records(&mut out, 1, 3);
        let body = out[5..].to_vec();
        // every strict prefix fails
        for n in 0..body.len() {
            assert!(
                Frame::decode(FRAME_RECORDS, &body[..n]).is_err(),
                "prefix {n}"
            );
        }
        // trailing byte
        let mut t = body.clone();
        t.push(0);
        assert_eq!(
            Frame::decode(FRAME_RECORDS, &t),
            Err(WireError::Malformed("trailing bytes after records"))
        );
        // count larger than present
        let mut c = body.clone();
        let count_at = 8 + 1 + 4 + 1 + 2 + 1;
        c[count_at + 1] = 4;
        assert_eq!(
            Frame::decode(FRAME_RECORDS, &c),
            Err(WireError::Malformed("truncated record"))
        );
        // reserved record flag
        let mut r = body.clone();
        r[count_at + 2] = 0x02;
        assert_eq!(
            Frame::decode(FRAME_RECORDS, &r),
            Err(WireError::BadRecordFlags(0x02))
        );
        // tombstone flag on a record with a value
        let mut tv = body.clone();
        tv[count_at + 2 + encoded_record_len(4, 0)] = 0x01;
        assert_eq!(
            Frame::decode(FRAME_RECORDS, &tv),
            Err(WireError::Malformed("tombstone with a value"))
        );
        // reserved frame flag
        let mut ff = body.clone();
        ff[count_at - 1] = 0x80;
        assert!(Frame::decode(FRAME_RECORDS, &ff).is_err());
        // empty zone name
        assert_eq!(
            Frame::decode(
                FRAME_RECORDS,
                &[0, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0]
            ),
            Err(WireError::Malformed("empty zone name in records"))
        );
        // a value length of 4 GiB
        let mut v = body.clone();
        let value_len_at = count_at + 2 + 1 + 8 + 8 + 4 + 2 + 4;
        v[value_len_at..value_len_at + 4].copy_from_slice(&[0xff; 4]);
        assert_eq!(
            Frame::decode(FRAME_RECORDS, &v),
            Err(WireError::Malformed("truncated record"))
        );
    }

    #[test]
    fn small_frames_roundtrip() {
        let mut out = Vec::new();
        encode_ack(&mut out, 77);
        encode_heartbeat(&mut out);
        encode_snapshot_done(&mut out, 0);
        encode_error(&mut out, ErrorCode::SHUTDOWN, "bye");
        encode_frame(&mut out, 0x42, b"future");
        let mut r = FrameReader::new(0);
        assert_eq!(r.max_frame(), MIN_FRAME_LIMIT);
        assert_eq!(r.push(&out), out.len());
        let mut got = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            got.push(format!("{:?}", f.decode().unwrap()));
        }
        assert_eq!(
            got,
            [
                "Ack(77)",
                "Heartbeat",
                "SnapshotDone(0)",
                "Error(ErrorFrame { code: ErrorCode(5), text: [98, 121, 101] })",
                "Unknown { frame_type: 66, body: [102, 117, 116, 117, 114, 101] }",
            ]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn small_frame_errors() {
        assert_eq!(
            Frame::decode(FRAME_ACK, &[0; 7]),
            Err(WireError::Malformed("truncated ack"))
        );
        assert_eq!(
            Frame::decode(FRAME_ACK, &[0; 9]),
            Err(WireError::Malformed("trailing bytes in ack"))
        );
        assert_eq!(
            Frame::decode(FRAME_HEARTBEAT, &[0]),
            Err(WireError::Malformed("trailing bytes in heartbeat"))
        );
        assert!(Frame::decode(FRAME_SNAPSHOT_DONE, &[]).is_err());
        assert!(Frame::decode(FRAME_ERROR, &[0, 4, 0, 3, b'a']).is_err());
        assert!(Frame::decode(FRAME_ERROR, &[0, 4, 0, 0, b'a']).is_err());
        let Frame::Error(e) = Frame::decode(FRAME_ERROR, &[0, 9, 0, 2, 0xff, b'a']).unwrap() else {
            panic!()
        };
        assert_eq!(e.code.name(), "unknown error");
        assert_eq!(e.text_lossy(), "\u{fffd}a");
    }

    #[test]
    fn error_text_is_bounded() {
        let mut out = Vec::new();
        let text = "é".repeat(400); // 800 bytes
        encode_error(&mut out, ErrorCode::PROTOCOL, &text);
        let Frame::Error(e) = decode_all(&out) else {
            panic!()
        };
        assert_eq!(e.text.len(), 512);
        assert_eq!(e.text_lossy(), "é".repeat(256));
        assert_eq!(e.code, ErrorCode::PROTOCOL);
        assert!(out.len() <= MIN_FRAME_LIMIT);
    }

    #[test]
    fn split_frame_limits() {
        assert_eq!(split_frame(&[], 100), Ok(None));
        assert_eq!(split_frame(&[0, 0, 0], 100), Ok(None));
        assert_eq!(
            split_frame(&[0, 0, 0, 0], 100),
            Err(WireError::Malformed("zero frame length"))
        );
        assert_eq!(split_frame(&[0, 0, 0, 1], 100), Ok(None));
        assert_eq!(
            split_frame(&[0, 0, 0, 1, 4], 100).unwrap().unwrap().0,
            RawFrame {
                frame_type: 4,
                body: &[]
            }
        );
        assert_eq!(split_frame(&[0, 0, 0, 96], 100), Ok(None));
        let e = split_frame(&[0, 0, 0, 97], 100).unwrap_err();
        assert_eq!(
            e,
            WireError::TooLarge {
                size: 101,
                limit: 100
            }
        );
        let e = split_frame(&[0xff, 0xff, 0xff, 0xff], 1 << 20).unwrap_err();
        assert_eq!(
            e,
            WireError::TooLarge {
                size: (1 << 32) + 3,
                limit: 1 << 20
            }
        );
        assert_eq!(split_frame(&[0xff, 0xff, 0xff, 0xff], usize::MAX), Ok(None));
        let e = split_frame(&[0, 1, 0x11, 0x6c], 65536).unwrap_err();
        assert_eq!(e.to_string(), "frame too large: 70000 bytes, limit 65536");
    }

    #[test]
    fn reader_refuses_huge_frame_early() {
        let mut r = FrameReader::new(4096);
        r.push(b"GET / HTTP/1.1\r\n");
        let e = r.next_frame().unwrap_err();
        assert!(matches!(e, WireError::TooLarge { limit: 4096, .. }));
        // errors are final
        assert_eq!(r.next_frame().unwrap_err(), e);
    }

    #[test]
    fn reader_spare_and_commit() {
        let mut frames = Vec::new();
        for i in 0..50 {
            sample_records(&mut frames, i + 1, (i % 7) as usize);
        }
        let mut r = FrameReader::new(MIN_FRAME_LIMIT);
        let mut pos = 0;
        let mut seqs = Vec::new();
        while pos < frames.len() {
            let spare = r.spare();
            assert!(!spare.is_empty());
            let n = spare.len().min(37).min(frames.len() - pos);
            spare[..n].copy_from_slice(&frames[pos..pos + n]);
            r.commit(n);
            pos += n;
            while let Some(f) = r.next_frame().unwrap() {
                let Frame::Records(rf) = f.decode().unwrap() else {
                    panic!()
                };
                seqs.push(rf.seq);
            }
        }
        assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn reader_full_of_frames_accepts_after_taking_them() {
        let mut out = Vec::new();
        while out.len() < 3 * MIN_FRAME_LIMIT {
            encode_heartbeat(&mut out);
        }
        let mut r = FrameReader::new(MIN_FRAME_LIMIT);
        let mut pos = r.push(&out);
        assert_eq!(pos, MIN_FRAME_LIMIT);
        assert_eq!(r.push(&out[pos..]), 0);
        let mut n = 0;
        loop {
            while let Some(f) = r.next_frame().unwrap() {
                assert_eq!(f.frame_type, FRAME_HEARTBEAT);
                n += 1;
            }
            if pos == out.len() {
                break;
            }
            let k = r.push(&out[pos..]);
            assert!(k > 0);
            pos += k;
        }
        assert_eq!(n, out.len() / 5);
    }

    #[test]
    fn limit_req_value() {
        let v = LimitReqValue {
            excess_milli: 1500,
            last_ms: 1_700_000_000_123,
        };
        let b = v.to_bytes();
        assert_eq!(b.len(), limit_req::VALUE_LEN);
        assert_eq!(LimitReqValue::from_bytes(&b), Some(v));
        assert_eq!(LimitReqValue::from_bytes(&b[..15]), None);
        assert_eq!(LimitReqValue::from_bytes(&[0; 17]), None);
    }

    #[test]
    fn error_phrases() {
        assert_eq!(
            WireError::BadMagic(*b"GET ").to_string(),
            "bad magic \"GET \""
        );
        assert_eq!(
            WireError::BadMagic([0, 1, 0xff, b'"']).to_string(),
            "bad magic \"\\x00\\x01\\xff\\\"\""
        );
        assert_eq!(
            WireError::UnsupportedVersion(2).to_string(),
            "unsupported protocol version 2"
        );
        assert_eq!(
            WireError::BadRecordFlags(4).to_string(),
            "invalid record flags 0x04"
        );
        assert_eq!(
            WireError::Malformed("truncated record").to_string(),
            "truncated record"
        );
        assert_eq!(ErrorCode::SELF.to_string(), "self (3)");
        assert_eq!(
            WireError::UnsupportedVersion(2).error_code(),
            ErrorCode::UNSUPPORTED_VERSION
        );
        assert_eq!(
            WireError::BadMagic([0; 4]).error_code(),
            ErrorCode::BAD_MAGIC
        );
        assert_eq!(WireError::Malformed("x").error_code(), ErrorCode::PROTOCOL);
    }

    proptest! {
        #[test]
        fn decode_random_never_panics(t in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(Frame::Records(f)) = Frame::decode(t, &body) {
                for r in f.records() {
                    prop_assert!(r.is_ok());
                }
            }
            let _ = RecordsFrame::decode_header(&body).map(|f| f.records().count());
            let _ = Hello::decode(&body);
        }

        #[test]
        fn reader_random_stream_never_panics(
            data in proptest::collection::vec(any::<u8>(), 0..2000),
            chunk in 1usize..100,
        ) {
            let mut r = FrameReader::new(MIN_FRAME_LIMIT);
            let mut pos = 0;
            'outer: while pos < data.len() {
                let end = (pos + chunk).min(data.len());
                pos += r.push(&data[pos..end]);
                loop {
                    match r.next_frame() {
                        Ok(Some(f)) => {
                            prop_assert!(f.wire_len() <= MIN_FRAME_LIMIT);
                            let _ = f.decode();
                        }
                        Ok(None) => break,
                        Err(_) => break 'outer,
                    }
                }
            }
        }

        #[test]
        fn mutated_records_never_panic(
            n in 0usize..12,
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut out = Vec::new();
            sample_records(&mut out, 1, n);
            for (i, v) in flips {
                let i = i.index(out.len());
                out[i] = v;
            }
            if let Ok(Some((f, _))) = split_frame(&out, LIMIT) {
                if let Ok(Frame::Records(rf)) = f.decode() {
                    prop_assert!(rf.records().all(|r| r.is_ok()));
                    prop_assert_eq!(rf.records().count(), rf.count as usize);
                }
            }
        }

        #[test]
        fn records_roundtrip_any(
            recs in proptest::collection::vec(
                (any::<bool>(), any::<u64>(), any::<u64>(), any::<u32>(),
                 proptest::collection::vec(any::<u8>(), 0..40),
                 proptest::collection::vec(any::<u8>(), 0..80)),
                0..20),
            seq in any::<u64>(),
            zone in proptest::collection::vec(any::<u8>(), 1..=255),
            budget in 0usize..3000,
        ) {
            let mut out = Vec::new();
            let budget = records_frame_overhead(zone.len()) + budget;
            let mut b = RecordsBuilder::new(&mut out, seq, &zone, 2, 9, 1, budget).unwrap();
            let mut pushed = Vec::new();
            for (tomb, hlc, origin, ttl, key, value) in &recs {
                let r = if *tomb {
                    RecordRef::tombstone(key, *hlc, *origin, *ttl)
                } else {
                    RecordRef::put(key, value, *hlc, *origin, *ttl)
                };
                if b.try_push(&r) {
                    pushed.push(r);
                } else {
                    break;
                }
            }
            let size = b.finish();
            prop_assert!(size <= budget);
            prop_assert_eq!(size, out.len());
            let (raw, n) = split_frame(&out, budget).unwrap().unwrap();
            prop_assert_eq!(n, size);
            let Frame::Records(f) = raw.decode().unwrap() else { panic!() };
            prop_assert_eq!(f.seq, seq);
            prop_assert_eq!(f.zone, &zone[..]);
            let got: Vec<_> = f.records().map(|r| r.unwrap()).collect();
            prop_assert_eq!(got, pushed);
        }
    }
}

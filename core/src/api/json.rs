//! The little JSON the REST API needs: a writer that turns any byte string
//! into valid JSON, and a bounded parser for request bodies.
//!
//! # Strings are byte strings
//!
//! Keyval keys and values are bytes, not text. The two directions:
//!
//! * **Output** ([`write_str`]): well-formed UTF-8 is copied as is; `"` and
//!   `\` are escaped; control characters and DEL become `\b \f \n \r \t` or
//!   `\u00XX`. A byte that is not part of well-formed UTF-8 becomes `\u00XX`
//!   with the byte's value, i.e. it is read as Latin-1. The output is always
//!   valid JSON and valid Unicode, so every strict parser accepts it. The
//!   mapping is injective on the JSON text (a raw `0xFF` byte is written
//!   `\u00ff`, a well-formed `ÿ` is written as its two UTF-8 bytes) but a
//!   client that decodes the JSON sees U+00FF in both cases.
//! * **Input** ([`parse`]): escapes are decoded to UTF-8 (`\u00ff` becomes
//!   the two bytes `C3 BF`), surrogate pairs are combined, a lone surrogate
//!   is an error. Raw bytes inside a string are copied unvalidated, so a
//!   client can address a key holding invalid UTF-8 by sending the same raw
//!   bytes. Raw control characters (below 0x20) are an error, as RFC 8259
//!   requires.
//!
//! # Bounds
//!
//! The parser nests at most [`MAX_DEPTH`] arrays/objects (recursion depth
//! is bounded, so hostile input cannot exhaust the stack); everything else
//! is bounded by the input length. Numbers are grammar-checked and kept as
//! their literal text: the caller converts them (and decides what "too big"
//! means).

use std::fmt;

/// Deepest nesting of arrays and objects [`parse`] accepts.
pub const MAX_DEPTH: usize = 32;

/// Hard ceiling for [`parse_with_max_depth`], to keep recursion bounded.
pub const HARD_MAX_DEPTH: usize = 1024;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    /// The literal text of a number, exactly as written (grammar-checked).
    Number(String),
    /// The decoded bytes of a string.
    String(Vec<u8>),
    Array(Vec<Value>),
    /// Members in input order. Duplicate names are kept: the caller decides.
    Object(Vec<(Vec<u8>, Value)>),
}

/// Why a body is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Nothing but whitespace.
    Empty,
    UnexpectedEnd,
    UnexpectedByte(u8),
    /// A complete value followed by something other than whitespace.
    TrailingData,
    /// A raw byte below 0x20 inside a string.
    ControlCharInString,
    InvalidEscape,
    /// `\u` not followed by four hex digits.
    InvalidUnicodeEscape,
    /// A `\uD800`-`\uDFFF` escape that is not part of a proper pair.
    LoneSurrogate,
    InvalidNumber,
    /// More than the allowed nesting of arrays/objects.
    TooDeep,
}

/// A parse failure and the byte offset where it was detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub offset: usize,
    pub kind: ErrorKind,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Empty => f.write_str("empty body")?,
            ErrorKind::UnexpectedEnd => f.write_str("unexpected end of data")?,
            ErrorKind::UnexpectedByte(b) if b.is_ascii_graphic() => {
                write!(f, "unexpected character \"{}\"", b as char)?
            }
            ErrorKind::UnexpectedByte(b) => write!(f, "unexpected byte 0x{b:02x}")?,
            ErrorKind::TrailingData => f.write_str("trailing data after the value")?,
            ErrorKind::ControlCharInString => f.write_str("control character in string")?,
            ErrorKind::InvalidEscape => f.write_str("invalid escape sequence")?,
            ErrorKind::InvalidUnicodeEscape => f.write_str("invalid \\u escape")?,
            ErrorKind::LoneSurrogate => f.write_str("unpaired UTF-16 surrogate")?,
            ErrorKind::InvalidNumber => f.write_str("invalid number")?,
            ErrorKind::TooDeep => write!(f, "nesting too deep")?,
        }
        write!(f, " at offset {}", self.offset)
    }
}

impl std::error::Error for ParseError {}

/// Parses one JSON value (RFC 8259, no extensions) nested at most
/// [`MAX_DEPTH`] deep. See the module documentation for string handling.
pub fn parse(input: &[u8]) -> Result<Value, ParseError> {
    parse_with_max_depth(input, MAX_DEPTH)
}

/// [`parse`] with another nesting limit (capped at [`HARD_MAX_DEPTH`]).
pub fn parse_with_max_depth(input: &[u8], max_depth: usize) -> Result<Value, ParseError> {
    let mut p = Parser {
        s: input,
        pos: 0,
        max_depth: max_depth.min(HARD_MAX_DEPTH),
    };
    p.skip_ws();
    if p.pos == p.s.len() {
        return Err(p.err(ErrorKind::Empty));
    }
    let v = p.value(0)?;
    p.skip_ws();
    if p.pos != p.s.len() {
        return Err(p.err(ErrorKind::TrailingData));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    max_depth: usize,
}

impl Parser<'_> {
    fn err(&self, kind: ErrorKind) -> ParseError {
        ParseError {
            offset: self.pos,
            kind,
        }
    }

    /// The error for the byte at `pos` (or the end of input).
    fn unexpected(&self) -> ParseError {
        match self.s.get(self.pos) {
            Some(&b) => self.err(ErrorKind::UnexpectedByte(b)),
            None => self.err(ErrorKind::UnexpectedEnd),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.pos) {
            self.pos += 1;
        }
    }

    /// `depth` is the number of arrays/objects already open around us.
    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        match self.s.get(self.pos) {
            None => Err(self.err(ErrorKind::UnexpectedEnd)),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => Ok(Value::String(self.string()?)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b't') => self.literal(b"true", Value::Bool(true)),
            Some(b'f') => self.literal(b"false", Value::Bool(false)),
            Some(b'n') => self.literal(b"null", Value::Null),
            Some(_) => Err(self.unexpected()),
        }
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Result<Value, ParseError> {
        for &w in word {
            match self.s.get(self.pos) {
                Some(&b) if b == w => self.pos += 1,
                _ => return Err(self.unexpected()),
            }
        }
        Ok(v)
    }

    fn object(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > self.max_depth {
            return Err(self.err(ErrorKind::TooDeep));
        }
        self.pos += 1; // '{'
        let mut members = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Value::Object(members));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b'"') {
                return Err(self.unexpected());
            }
            let name = self.string()?;
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b':') {
                return Err(self.unexpected());
            }
            self.pos += 1;
            self.skip_ws();
            let v = self.value(depth)?;
            members.push((name, v));
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Value::Object(members));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > self.max_depth {
            return Err(self.err(ErrorKind::TooDeep));
        }
        self.pos += 1; // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth)?);
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Value::Array(items));
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn number(&mut self) -> Result<Value, ParseError> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while let Some(b'0'..=b'9') = p.s.get(p.pos) {
                p.pos += 1;
            }
            p.pos > from
        };
        if self.s.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.s.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return Err(self.err(ErrorKind::InvalidNumber)),
        }
        if self.s.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.err(ErrorKind::InvalidNumber));
            }
        }
        if let Some(b'e' | b'E') = self.s.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.s.get(self.pos) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.err(ErrorKind::InvalidNumber));
            }
        }
        // A digit right after "0" or "-0" ("01") is not a number either.
        if let Some(b'0'..=b'9') = self.s.get(self.pos) {
            return Err(self.err(ErrorKind::InvalidNumber));
        }
        let text = &self.s[start..self.pos];
        // The grammar above admits ASCII only.
        Ok(Value::Number(text.iter().map(|&b| b as char).collect()))
    }

    /// Reads a string; `pos` is at the opening quote.
    fn string(&mut self) -> Result<Vec<u8>, ParseError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let start = self.pos;
            while let Some(&b) = self.s.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.extend_from_slice(&self.s[start..self.pos]);
            match self.s.get(self.pos) {
                None => return Err(self.err(ErrorKind::UnexpectedEnd)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => self.escape(&mut out)?,
                Some(_) => return Err(self.err(ErrorKind::ControlCharInString)),
            }
        }
    }

    /// Decodes one escape; `pos` is at the backslash.
    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), ParseError> {
        let at = self.pos;
        self.pos += 1;
        let simple = match self.s.get(self.pos) {
            None => return Err(self.err(ErrorKind::UnexpectedEnd)),
            Some(b'"') => b'"',
            Some(b'\\') => b'\\',
            Some(b'/') => b'/',
            Some(b'b') => 0x08,
            Some(b'f') => 0x0c,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'u') => {
                self.pos += 1;
                let hi = self.hex4()?;
                let cp = match hi {
                    0xD800..=0xDBFF => {
                        if self.s.get(self.pos) != Some(&b'\\')
                            || self.s.get(self.pos + 1) != Some(&b'u')
                        {
                            return Err(ParseError {
                                offset: at,
                                kind: ErrorKind::LoneSurrogate,
                            });
                        }
                        self.pos += 2;
                        let lo = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&lo) {
                            return Err(ParseError {
                                offset: at,
                                kind: ErrorKind::LoneSurrogate,
                            });
                        }
                        0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(ParseError {
                            offset: at,
                            kind: ErrorKind::LoneSurrogate,
                        })
                    }
                    _ => hi,
                };
                // Every value built above is a valid scalar value.
                let c = char::from_u32(cp).ok_or(ParseError {
                    offset: at,
                    kind: ErrorKind::LoneSurrogate,
                })?;
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                return Ok(());
            }
            Some(_) => return Err(self.err(ErrorKind::InvalidEscape)),
        };
        self.pos += 1;
        out.push(simple);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut v = 0u32;
        for _ in 0..4 {
            let d = match self.s.get(self.pos) {
                None => return Err(self.err(ErrorKind::UnexpectedEnd)),
                Some(&b) => match (b as char).to_digit(16) {
                    Some(d) => d,
                    None => return Err(self.err(ErrorKind::InvalidUnicodeEscape)),
                },
            };
            v = v << 4 | d;
            self.pos += 1;
        }
        Ok(v)
    }
}

/// Appends `s` as a quoted JSON string. Never fails, for any bytes: see the
/// module documentation for how invalid UTF-8 is written.
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut rest = s;
    loop {
        match std::str::from_utf8(rest) {
            Ok(_) => {
                escape_utf8(out, rest);
                break;
            }
            Err(e) => {
                let (good, after) = rest.split_at(e.valid_up_to());
                escape_utf8(out, good);
                let bad = e.error_len().unwrap_or(after.len());
                for &b in &after[..bad] {
                    write_u00(out, b);
                }
                rest = &after[bad..];
            }
        }
    }
    out.push(b'"');
}

/// Escapes well-formed UTF-8 (only ASCII bytes ever need escaping).
fn escape_utf8(out: &mut Vec<u8>, s: &[u8]) {
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        if esc.is_empty() {
            write_u00(out, b);
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
}

fn write_u00(out: &mut Vec<u8>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u00");
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

/// Appends a decimal integer.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(n.to_string().as_bytes());
}

/// Appends `v` compactly (no whitespace). Numbers are written as their
/// literal text, which [`parse`] guarantees is valid; a hand-built
/// `Value::Number` that is not a JSON number is written as `null`.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if matches!(parse(n.as_bytes()), Ok(Value::Number(_))) {
                out.extend_from_slice(n.as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(members) => {
            let mut obj = ObjectWriter::new(out);
            for (name, value) in members {
                write_value(obj.member(name), value);
            }
            obj.finish();
        }
    }
}

/// Writes an object member by member, placing the commas.
pub struct ObjectWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> ObjectWriter<'a> {
    /// Writes `{`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        ObjectWriter { out, first: true }
    }

    /// Writes the member name and colon; the caller writes the value into
    /// the returned buffer (exactly one value).
    pub fn member(&mut self, name: &[u8]) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(self.out, name);
        self.out.push(b':');
        self.out
    }

    /// A member with a string value.
    pub fn str_member(&mut self, name: &[u8], value: &[u8]) {
        write_str(self.member(name), value);
    }

    /// A member with an integer value.
    pub fn u64_member(&mut self, name: &[u8], value: u64) {
        write_u64(self.member(name), value);
    }

    /// Writes `}`.
    pub fn finish(self) {
        self.out.push(b'}');
    }
}

/// Appends a JSON array of strings.
pub fn write_str_array<'s>(out: &mut Vec<u8>, items: impl IntoIterator<Item = &'s [u8]>) {
    out.push(b'[');
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, item);
    }
    out.push(b']');
}

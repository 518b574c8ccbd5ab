//! Every error the API answers with, and the one place that renders the
//! NGINX Plus error object.
//!
//! Shape (API version 4 and later):
//! `{"error":{"status":N,"text":"...","code":"..."},"request_id":"...","href":"..."}`.
//! Versions 1 to 3 also carry `"path"` and `"method"` before `"error"`;
//! Plus documents them as "removed in version 4; these fields continue to
//! exist in earlier api versions, but show an empty value", so they are
//! written as empty strings.

use super::json::{ObjectWriter, ParseError};
use super::{versions, Response};

/// Link written into every error object, as Plus does.
pub const HREF: &str = "https://nginx.org/en/docs/http/ngx_http_api_module.html";

/// Longest piece of a client-supplied name quoted in an error text.
const QUOTE_MAX: usize = 128;

/// An error answer before rendering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub code: &'static str,
    /// Bytes: it may quote a key, which may be any bytes.
    pub text: Vec<u8>,
    /// The `Allow` header of a 405 `MethodNotSupported`.
    pub allow: Option<&'static str>,
}

impl ApiError {
    fn new(status: u16, code: &'static str, text: impl Into<Vec<u8>>) -> Self {
        ApiError {
            status,
            code,
            text: text.into(),
            allow: None,
        }
    }

    pub fn unknown_version() -> Self {
        Self::new(404, "UnknownVersion", "unknown version")
    }

    pub fn path_not_found() -> Self {
        Self::new(404, "PathNotFound", "path not found")
    }

    /// A named item of a collection that does not exist (`SlabNotFound`,
    /// `LimitReqNotFound`, ...).
    pub fn not_found(code: &'static str, text: Vec<u8>) -> Self {
        Self::new(404, code, text)
    }

    pub fn method_not_supported(allow: &'static str) -> Self {
        ApiError {
            allow: Some(allow),
            ..Self::new(405, "MethodNotSupported", "method not supported")
        }
    }

    pub fn method_disabled() -> Self {
        Self::new(405, "MethodDisabled", "method disabled")
    }

    pub fn keyval_not_found(zone: &[u8]) -> Self {
        Self::new(
            404,
            "KeyvalNotFound",
            quoted(b"keyval ", zone, b" not found"),
        )
    }

    pub fn key_not_found(key: Option<&[u8]>) -> Self {
        let text = match key {
            Some(key) => quoted(b"key ", key, b" not found"),
            None => b"key not found".to_vec(),
        };
        Self::new(404, "KeyvalKeyNotFound", text)
    }

    pub fn key_exists(key: Option<&[u8]>) -> Self {
        let text = match key {
            Some(key) => quoted(b"key ", key, b" already exists"),
            None => b"key already exists".to_vec(),
        };
        Self::new(409, "KeyvalKeyExists", text)
    }

    pub fn format(text: impl Into<Vec<u8>>) -> Self {
        Self::new(400, "KeyvalFormatError", text)
    }

    pub fn json(e: &ParseError) -> Self {
        Self::new(415, "JsonError", format!("JSON error: {e}"))
    }

    pub fn out_of_memory(zone: &[u8]) -> Self {
        Self::new(
            507,
            "KeyvalOutOfMemory",
            quoted(b"keyval ", zone, b" memory exhausted"),
        )
    }

    pub fn body_too_large() -> Self {
        Self::new(413, "BodyTooLarge", "request body too large")
    }

    pub fn body_read_error() -> Self {
        Self::new(400, "BodyReadError", "reading request body failed")
    }

    /// Renders the error object for API `version` (`None`: the path names
    /// no valid version, the current shape is used).
    pub fn into_response(self, version: Option<u32>, request_id: &str) -> Response {
        let mut body = Vec::with_capacity(160 + self.text.len());
        let mut obj = ObjectWriter::new(&mut body);
        if version.is_some_and(versions::error_has_path_and_method) {
            obj.str_member(b"path", b"");
            obj.str_member(b"method", b"");
        }
        let mut err = ObjectWriter::new(obj.member(b"error"));
        err.u64_member(b"status", u64::from(self.status));
        err.str_member(b"text", &self.text);
        err.str_member(b"code", self.code.as_bytes());
        err.finish();
        obj.str_member(b"request_id", request_id.as_bytes());
        obj.str_member(b"href", HREF.as_bytes());
        obj.finish();
        Response {
            status: self.status,
            body,
            allow: self.allow,
        }
    }
}

/// `prefix "name" suffix`, the name cut to [`QUOTE_MAX`] bytes (at a
/// character boundary when it is UTF-8) and marked with "..." when cut.
pub(crate) fn quoted(prefix: &[u8], name: &[u8], suffix: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(prefix.len() + name.len().min(QUOTE_MAX) + suffix.len() + 5);
    t.extend_from_slice(prefix);
    t.push(b'"');
    if name.len() <= QUOTE_MAX {
        t.extend_from_slice(name);
    } else {
        let mut cut = QUOTE_MAX;
        // Back off over UTF-8 continuation bytes (at most 3).
        while cut > QUOTE_MAX - 3 && name[cut] & 0xC0 == 0x80 {
            cut -= 1;
        }
        t.extend_from_slice(&name[..cut]);
        t.extend_from_slice(b"...");
    }
    t.push(b'"');
    t.extend_from_slice(suffix);
    t
}

//! Client request heads: parsed strictly (RFC 9112), and turned into the head sent to backends.
//!
//! Whatever two parsers could read two ways is an error here, never repaired: backends only ever
//! see a clean request line, end-to-end fields and (added by the caller) a `Content-Length`. This
//! module decides 400, 413 and 431; 404 and 503 are decided elsewhere. No I/O, no allocation
//! beyond the caller's buffer.

use std::ops::Range;

use httparse::Status;

use super::encode::{field_line, is_hop_by_hop};
use super::fields::{self, Fields};
use super::limits::{Limits, MAX_HEADERS};
use super::FramingError;

/// The HTTP version of a client request. Backends are always spoken to in HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: no `Host` required, persistent only on request, no chunked bodies.
    Http10,
    /// HTTP/1.1.
    Http11,
}

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// Exactly this many bytes, at most `Limits::max_body`; `Length(0)` when there is no body.
    Length(usize),
    /// Chunked coding; decode with [`super::chunked::ChunkedDecoder`].
    Chunked,
}

/// A parsed client request head: what the caller needs to route, read the body and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The client's HTTP version, which decides persistence and the `Connection` field sent back.
    pub version: Version,
    /// Bytes of the head in the input, leading empty lines and the final CRLFCRLF included: the
    /// body starts at this offset.
    pub head_len: usize,
    /// Offsets in the input of the path (the target up to any `?`), for routing.
    pub path: Range<usize>,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// Whether the client wants the connection kept: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` in an HTTP/1.1 request (an HTTP/1.0 one is ignored, RFC 9110
    /// §10.1.1): the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

/// Why a client request is refused. The caller answers [`RequestError::status`] and closes: the
/// stream can no longer be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The request line or a header line breaks the syntax, as `httparse` reports it (spaces
    /// before a colon and obs-fold lines land here).
    #[error("malformed request head: {0}")]
    Syntax(httparse::Error),
    /// A NUL, a bare CR or a bare LF in the head (RFC 9112 §2.2).
    #[error("NUL, bare CR or bare LF in the request head")]
    StrayControl,
    /// A version other than HTTP/1.0 and HTTP/1.1. A 400 rather than a 505: `httparse` cannot tell
    /// `HTTP/2.0` from garbage in that place.
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    /// A target not in origin-form (`/path?query`, visible ASCII, no `#`): the splitter is an
    /// origin server to its clients, so absolute-form, authority-form (`CONNECT`) and `*` are
    /// refused.
    #[error("request target not in origin-form")]
    InvalidTarget,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("missing Host")]
    MissingHost,
    /// More than one `Host` (RFC 9112 §3.2).
    #[error("more than one Host")]
    DuplicateHost,
    /// Framing fields that disagree or that the splitter cannot decode.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// A `Content-Length` over `Limits::max_body`.
    #[error("request body over the size limit")]
    BodyTooLarge,
    /// The head is longer than `Limits::max_header_bytes`.
    #[error("request head over the size limit")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} request header fields")]
    TooManyHeaders,
}

impl RequestError {
    /// The status to answer with (SPEC 5): 413 for a body too large, 431 for a head too large,
    /// 400 for everything else.
    pub fn status(&self) -> u16 {
        match self {
            RequestError::BodyTooLarge => 413,
            RequestError::HeadTooLarge | RequestError::TooManyHeaders => 431,
            _ => 400,
        }
    }
}

/// Parses the client request head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet; once `buf` holds more than `limits.max_header_bytes`
/// without a complete head, [`RequestError::HeadTooLarge`]. Empty lines (CRLF) before the request
/// line are skipped, as RFC 9112 §2.2 recommends, and counted in `head_len` and the limit.
///
/// On success `forward` (cleared first) holds the head for every backend, without its end:
/// `METHOD TARGET HTTP/1.1\r\n`, then each end-to-end field as `Name: value\r\n`, in the order
/// received. Left out: hop-by-hop fields, fields the `Connection` options name (but never `Host`),
/// `Content-Length` and `Expect` (the splitter answers `100-continue` itself and sends backends
/// the whole body at once). An HTTP/1.0 request without `Host` gets an empty `Host:` so the
/// backend's HTTP/1.1 request stays valid (RFC 9112 §3.2). The caller completes the head with
/// [`super::encode::end_head`] once it knows the (de-chunked) body length, then appends the body.
pub fn parse_request(
    buf: &[u8],
    limits: &Limits,
    forward: &mut Vec<u8>,
) -> Result<Option<RequestHead>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    // Every leniency of httparse off (the defaults, spelled out). Requests never get spaces before
    // a colon or obs-fold from httparse whatever the configuration; our own checks below hold
    // regardless.
    let mut config = httparse::ParserConfig::default();
    config
        .allow_multiple_spaces_in_request_line_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_requests(false);
    let head_len = match config.parse_request(&mut request, buf) {
        Ok(Status::Complete(len)) => len,
        Ok(Status::Partial) if buf.len() > limits.max_header_bytes => {
            return Err(RequestError::HeadTooLarge)
        }
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(RequestError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(RequestError::UnsupportedVersion),
        Err(error) => return Err(RequestError::Syntax(error)),
    };
    if head_len > limits.max_header_bytes {
        return Err(RequestError::HeadTooLarge);
    }
    if !fields::line_endings_are_strict(&buf[..head_len]) {
        return Err(RequestError::StrayControl);
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        unreachable!("httparse sets the method, target and version of a complete request");
    };
    if !is_origin_form(target) {
        return Err(RequestError::InvalidTarget);
    }
    let version = if minor_version == 0 {
        Version::Http10
    } else {
        Version::Http11
    };
    let headers = &*request.headers;
    let fields = Fields::scan(headers, version == Version::Http10)?;
    match (version, fields.hosts) {
        (Version::Http11, 0) => return Err(RequestError::MissingHost),
        (_, 2..) => return Err(RequestError::DuplicateHost),
        _ => {}
    }
    let framing = if fields.chunked {
        BodyFraming::Chunked
    } else {
        let length = fields.content_length.unwrap_or(0);
        match usize::try_from(length) {
            Ok(length) if length <= limits.max_body => BodyFraming::Length(length),
            _ => return Err(RequestError::BodyTooLarge),
        }
    };

    forward.clear();
    forward.reserve(head_len);
    forward.extend_from_slice(method.as_bytes());
    forward.push(b' ');
    forward.extend_from_slice(target.as_bytes());
    forward.extend_from_slice(b" HTTP/1.1\r\n");
    for header in headers {
        let name = header.name;
        // Host stays even when a Connection option names it: backends need it, and a client must
        // not be able to strip it (RFC 9110 §7.6.1 forbids naming end-to-end fields anyway).
        let is_host = name.eq_ignore_ascii_case("host");
        let dropped = is_hop_by_hop(name.as_bytes())
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || (!is_host && fields::named_by_connection(headers, name));
        if !dropped {
            field_line(forward, name.as_bytes(), header.value);
        }
    }
    if fields.hosts == 0 {
        forward.extend_from_slice(b"Host: \r\n");
    }

    // The target is a subslice of `buf`, so its offset is the distance between their addresses.
    let target_start = target.as_ptr() as usize - buf.as_ptr() as usize;
    let path_len = target.find('?').unwrap_or(target.len());
    Ok(Some(RequestHead {
        version,
        head_len,
        path: target_start..target_start + path_len,
        framing,
        keep_alive: match version {
            Version::Http11 => !fields.close,
            Version::Http10 => fields.keep_alive && !fields.close,
        },
        expect_continue: version == Version::Http11 && fields.expect_continue,
    }))
}

/// Whether `target` is in origin-form (RFC 9112 §3.2.1): `/`, then visible ASCII without `#`
/// (a fragment never travels in a request). httparse also lets obs-text through here.
fn is_origin_form(target: &str) -> bool {
    target.starts_with('/') && target.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
}

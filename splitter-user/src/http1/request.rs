//! Client request heads: parsed strictly (RFC 9112), and turned into the head sent to backends.
//!
//! Whatever two parsers could read two ways is an error here, never repaired: backends only ever
//! see a clean request line, end-to-end fields and (added by the caller) a `Content-Length`. This
//! module decides 400, 413 and 431; 404 and 503 are decided elsewhere. No I/O, no allocation
//! beyond the caller's buffer.

use std::ops::Range;

use httparse::Status;

use super::body::Framing;
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

/// The request method, as far as the splitter treats methods differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: responses to it have no body, whatever their fields say.
    Head,
    /// `POST`, the method of bid requests.
    Post,
    /// Any other token; forwarded as received.
    Other,
}

impl Method {
    fn of(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }
}

/// A parsed client request head: what the caller needs to route, read the body and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method (methods are case-sensitive: `get` is `Other`).
    pub method: Method,
    /// The client's HTTP version, which decides persistence and the `Connection` field sent back.
    pub version: Version,
    /// Bytes of the head in the input, leading empty lines and the final CRLFCRLF included: the
    /// body starts at this offset.
    pub head_len: usize,
    /// Offsets in the input of the path (the target up to any `?`, after the authority of an
    /// absolute-form target), for routing; see [`RequestHead::path`].
    pub path: Range<usize>,
    /// How the body is delimited: `Length` or `Chunked`, never `UntilClose`.
    pub framing: Framing,
    /// Whether the client wants the connection kept: HTTP/1.1 unless `Connection: close`,
    /// HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// Where, in the forwarded head, the target (origin-form) and the `Host` value are: what a
    /// backend with its own `path_prefix` or `host` gets changed.
    pub forward_target: Range<usize>,
    /// See `forward_target`. Every forwarded head has exactly one `Host` (maybe empty).
    pub forward_host: Range<usize>,
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
    /// A target neither in origin-form (`/path?query`) nor in absolute-form
    /// (`http://host/path?query`), visible ASCII without `#`: authority-form (`CONNECT`) and `*`
    /// ask for things the splitter does not do, and so does `CONNECT` whatever its target.
    #[error("request target not in origin-form or absolute-form")]
    InvalidTarget,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2).
    #[error("missing Host")]
    MissingHost,
    /// More than one `Host` (RFC 9112 §3.2).
    #[error("more than one Host")]
    DuplicateHost,
    /// A `Host`, or the authority of an absolute-form target, that is not `host[:port]`
    /// (RFC 9112 §3.2: "a Host header field with an invalid field value" gets 400).
    #[error("invalid Host")]
    InvalidHost,
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

/// How many bytes at the start of `buf` are empty lines (CRLF) before a request line, which a
/// server ignores (RFC 9112 §2.2). The connection drops them as they arrive, so a client that
/// sends thousands of them one by one does not have its buffer parsed again for each.
pub fn leading_empty_lines(buf: &[u8]) -> usize {
    buf.as_chunks::<2>()
        .0
        .iter()
        .take_while(|pair| *pair == b"\r\n")
        .count()
        * 2
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
/// the whole body at once). An HTTP/1.0 request without `Host` gets an empty `Host:`, which the
/// caller fills with each backend's own address (RFC 9112 §3.2 requires a `Host`). The caller
/// completes the head with [`super::encode::end_head`] once it knows the (de-chunked) body
/// length, then appends the body.
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
    // CONNECT takes only the authority-form (RFC 9112 §3.2.3), and its 2xx opens a tunnel:
    // never forwarded, whatever its target looks like.
    let Some(target) = Target::parse(target).filter(|_| method != "CONNECT") else {
        return Err(RequestError::InvalidTarget);
    };
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
    // With the other checks of the head, before its framing's: a bad head is 400 whatever the
    // limits say of its body.
    if fields.host.is_some_and(|i| !is_authority(headers[i].value)) {
        return Err(RequestError::InvalidHost);
    }
    let framing = if fields.chunked {
        Framing::Chunked
    } else {
        let length = fields.content_length.unwrap_or(0);
        match usize::try_from(length) {
            Ok(length) if length <= limits.max_body => Framing::Length(length),
            _ => return Err(RequestError::BodyTooLarge),
        }
    };

    forward.clear();
    forward.reserve(head_len);
    forward.extend_from_slice(method.as_bytes());
    forward.push(b' ');
    // Backends always get the origin-form (RFC 9112 §3.2.1).
    let target_start = forward.len();
    forward.extend_from_slice(target.origin_form().as_bytes());
    let forward_target = target_start..forward.len();
    forward.extend_from_slice(b" HTTP/1.1\r\n");
    let mut forward_host = 0..0;
    let named = fields
        .names_fields
        .then(|| fields::ConnectionOptions::of(headers));
    for header in headers {
        let name = header.name;
        // Host stays even when a Connection option names it: backends need it, and a client must
        // not be able to strip it (RFC 9110 §7.6.1 forbids naming end-to-end fields anyway).
        let is_host = name.eq_ignore_ascii_case("host");
        let dropped = is_hop_by_hop(name.as_bytes())
            || name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("expect")
            || (!is_host && named.as_ref().is_some_and(|named| named.name(name)));
        if is_host {
            // An absolute-form target's authority replaces Host (RFC 9112 §3.2.2).
            let value = target.authority.map_or(header.value, str::as_bytes);
            forward_host = host_line(forward, name.as_bytes(), value);
        } else if !dropped {
            field_line(forward, name.as_bytes(), header.value);
        }
    }
    if fields.hosts == 0 {
        forward_host = host_line(forward, b"Host", target.authority.unwrap_or("").as_bytes());
    }

    // The path is a subslice of `buf`, so its offset is the distance between their addresses.
    let path_start = target.path.as_ptr() as usize - buf.as_ptr() as usize;
    Ok(Some(RequestHead {
        method: Method::of(method),
        version,
        head_len,
        path: path_start..path_start + target.path.len(),
        framing,
        keep_alive: match version {
            Version::Http11 => !fields.close,
            Version::Http10 => fields.keep_alive && !fields.close,
        },
        forward_target,
        forward_host,
        expect_continue: version == Version::Http11 && fields.expect_continue,
    }))
}

/// Whether `value` is `uri-host [":" port]` (RFC 3986 §3.2.2, §3.2.3): an IP literal in
/// brackets, or a registered name or IPv4 address (unreserved, percent-encoded and sub-delims
/// characters, possibly none), then digits after a colon. No userinfo, no whitespace, no path:
/// what a backend could read as another host than the one checked here is refused.
pub(crate) fn is_authority(value: &[u8]) -> bool {
    // The common case in one pass: a registered name or IPv4 address, a colon, digits.
    let mut i = 0;
    while let Some(&b) = value.get(i) {
        match HOST_BYTE[usize::from(b)] {
            REG_NAME => i += 1,
            COLON => return value[i + 1..].iter().all(u8::is_ascii_digit),
            _ => return is_authority_escaped(value),
        }
    }
    true
}

/// [`is_authority`] for what its pass does not take: an IP literal, `%XX` escapes, or no
/// authority at all.
#[cold]
fn is_authority_escaped(value: &[u8]) -> bool {
    let (host_ok, port) = match value.first() {
        Some(b'[') => match value.iter().position(|&b| b == b']') {
            Some(end) => {
                let literal = &value[1..end];
                let ok = !literal.is_empty()
                    && literal
                        .iter()
                        .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
                (ok, &value[end + 1..])
            }
            None => return false,
        },
        _ => {
            let end = value.iter().position(|&b| b == b':').unwrap_or(value.len());
            (is_reg_name(&value[..end]), &value[end..])
        }
    };
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host_ok && port_ok
}

/// [`HOST_BYTE`]'s classes.
const OTHER: u8 = 0;
const REG_NAME: u8 = 1;
const COLON: u8 = 2;

/// Each byte's place in an authority: of a registered name (RFC 3986 §3.2.2: unreserved and
/// sub-delims but `,`, which no host name has and a backend may split a list on; `%` starts an
/// escape, taken apart), the colon before the port, or neither. A table: a `Host` is checked on
/// every request.
const HOST_BYTE: [u8; 256] = {
    let mut table = [OTHER; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b';'
                    | b'='
            )
        {
            table[b] = REG_NAME;
        }
        b += 1;
    }
    table[b':' as usize] = COLON;
    table
};

/// A registered name or IPv4 address: [`REG_NAME`] bytes and `%XX` escapes.
fn is_reg_name(host: &[u8]) -> bool {
    let mut rest = host;
    loop {
        rest = match rest {
            [] => return true,
            [b'%', h, l, tail @ ..] if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => tail,
            [b, tail @ ..] if HOST_BYTE[usize::from(*b)] == REG_NAME => tail,
            _ => return false,
        };
    }
}

/// Writes `<name>: value` (the client's spelling of `Host`) and returns where the value is in
/// `forward`.
fn host_line(forward: &mut Vec<u8>, name: &[u8], value: &[u8]) -> Range<usize> {
    let start = forward.len() + name.len() + b": ".len();
    field_line(forward, name, value);
    start..start + value.len()
}

impl RequestHead {
    /// The path to route by, from the buffer the head was parsed from: `/` for an absolute-form
    /// target with an empty path (RFC 9112 §3.2.1 makes that `/` in origin-form).
    pub fn path<'b>(&self, buf: &'b [u8]) -> &'b [u8] {
        match &buf[self.path.clone()] {
            b"" => b"/",
            path => path,
        }
    }
}

/// A request target the splitter serves, split for routing and forwarding.
struct Target<'t> {
    /// `host[:port]` of an absolute-form target.
    authority: Option<&'t str>,
    /// The path, up to any `?`: empty only after an authority.
    path: &'t str,
    /// The path with its query, as the origin-form sends it (may be empty after an authority).
    path_and_query: &'t str,
}

impl<'t> Target<'t> {
    /// Origin-form (RFC 9112 §3.2.1): `/`, then visible ASCII without `#` (a fragment never
    /// travels in a request; httparse also lets obs-text through here). Absolute-form (§3.2.2):
    /// `http://` or `https://` (any case), an authority without userinfo, then the same.
    fn parse(target: &'t str) -> Option<Target<'t>> {
        if !target.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
            return None;
        }
        let (authority, path_and_query) = if target.starts_with('/') {
            (None, target)
        } else {
            let (scheme, rest) = target.split_once("://")?;
            if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
                return None;
            }
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            let authority = &rest[..end];
            // RFC 9110 §4.2.4: userinfo is deprecated; a sender must not send it (and
            // `is_authority` refuses its `@`).
            if authority.is_empty() || !is_authority(authority.as_bytes()) {
                return None;
            }
            (Some(authority), &rest[end..])
        };
        let path = &path_and_query[..path_and_query.find('?').unwrap_or(path_and_query.len())];
        Some(Target {
            authority,
            path,
            path_and_query,
        })
    }

    /// The target as origin-form: `/` when the absolute-form path is empty, before any query.
    fn origin_form(&self) -> std::borrow::Cow<'t, str> {
        if self.path.is_empty() {
            format!("/{}", self.path_and_query).into()
        } else {
            self.path_and_query.into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_header_bytes: 512,
        max_body: 100,
    };

    /// Parses `input` whole and split at every offset (the first part, then the whole): every
    /// prefix that does not hold the whole head must say "need more", every other one must give
    /// the same head and forwarded bytes. Returns the head and the forwarded head as text.
    fn parse_with(input: &[u8], limits: &Limits) -> (RequestHead, String) {
        let mut forward = Vec::new();
        let head = parse_request(input, limits, &mut forward)
            .unwrap_or_else(|e| panic!("{e:?} for {:?}", String::from_utf8_lossy(input)))
            .expect("complete head");
        for split in 0..input.len() {
            let mut partial_forward = Vec::new();
            let partial = parse_request(&input[..split], limits, &mut partial_forward);
            if split < head.head_len {
                assert_eq!(partial, Ok(None), "prefix of {split} bytes");
            } else {
                assert_eq!(partial, Ok(Some(head.clone())), "prefix of {split} bytes");
                assert_eq!(partial_forward, forward, "prefix of {split} bytes");
            }
        }
        (head, String::from_utf8(forward).unwrap())
    }

    fn parse(input: &[u8]) -> (RequestHead, String) {
        parse_with(input, &LIMITS)
    }

    /// Parses `input` whole, expecting `why`; every prefix must say "need more" or fail the same.
    fn parse_err_with(input: &[u8], limits: &Limits, why: RequestError) {
        let mut forward = b"stale".to_vec();
        assert_eq!(
            parse_request(input, limits, &mut forward),
            Err(why),
            "{:?}",
            String::from_utf8_lossy(input)
        );
        for split in 0..input.len() {
            let partial = parse_request(&input[..split], limits, &mut forward);
            assert!(
                partial == Ok(None) || partial == Err(why),
                "prefix of {split} bytes of {:?}: {partial:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn parse_err(input: &[u8], why: RequestError) {
        parse_err_with(input, &LIMITS, why);
    }

    fn path<'a>(input: &'a [u8], head: &RequestHead) -> &'a [u8] {
        &input[head.path.clone()]
    }

    #[test]
    fn parses_a_post_with_content_length() {
        let input = b"POST /bid?x=1 HTTP/1.1\r\nHost: ex\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello";
        let (head, forward) = parse(input);
        assert_eq!(
            head,
            RequestHead {
                method: Method::Post,
                version: Version::Http11,
                head_len: input.len() - 5,
                path: 5..9,
                framing: Framing::Length(5),
                keep_alive: true,
                forward_target: 5..13,
                forward_host: 30..32,
                expect_continue: false,
            }
        );
        assert_eq!(path(input, &head), b"/bid");
        assert_eq!(
            forward,
            "POST /bid?x=1 HTTP/1.1\r\nHost: ex\r\nContent-Type: application/json\r\n"
        );
    }

    #[test]
    fn absolute_form_targets_are_routed_by_path_and_forwarded_in_origin_form() {
        let cases: &[(&[u8], &[u8], &str)] = &[
            (
                b"POST http://bidder.example:8080/bid?x=1 HTTP/1.1\r\nHost: other\r\nContent-Length: 0\r\n\r\n",
                b"/bid",
                "POST /bid?x=1 HTTP/1.1\r\nHost: bidder.example:8080\r\n",
            ),
            (
                b"GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/",
                "GET / HTTP/1.1\r\nHost: a\r\n",
            ),
            (
                b"GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/",
                "GET /?q HTTP/1.1\r\nHost: a\r\n",
            ),
            (
                b"GET http://a/p HTTP/1.0\r\n\r\n",
                b"/p",
                "GET /p HTTP/1.1\r\nHost: a\r\n",
            ),
        ];
        for &(input, routed, forwarded) in cases {
            let (head, forward) = parse(input);
            assert_eq!(
                head.path(input),
                routed,
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(forward, forwarded);
        }
    }

    #[test]
    fn the_method_is_in_the_head() {
        for (input, method) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], Method::Get),
            (b"\r\nHEAD / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Head),
            (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Post),
            (b"head / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Other),
            (b"PUT / HTTP/1.1\r\nHost: a\r\n\r\n", Method::Other),
        ] {
            assert_eq!(parse(input).0.method, method);
        }
    }

    #[test]
    fn framing_keep_alive_and_expect_follow_the_fields() {
        type Case = (&'static [u8], Version, Framing, bool, bool);
        let cases: &[Case] = &[
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", Version::Http11, Framing::Length(0), true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", Version::Http11, Framing::Chunked, true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: Chunked\r\n\r\n", Version::Http11, Framing::Chunked, true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n", Version::Http11, Framing::Length(5), true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", Version::Http11, Framing::Length(5), true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", Version::Http11, Framing::Length(100), true, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", Version::Http11, Framing::Length(0), true, false),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", Version::Http11, Framing::Length(0), false, false),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive, CLOSE\r\n\r\n", Version::Http11, Framing::Length(0), false, false),
            (b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", Version::Http11, Framing::Length(0), true, false),
            (b"GET / HTTP/1.0\r\n\r\n", Version::Http10, Framing::Length(0), false, false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", Version::Http10, Framing::Length(0), true, false),
            (b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", Version::Http10, Framing::Length(0), false, false),
            (b"POST / HTTP/1.0\r\nHost: a\r\nContent-Length: 3\r\n\r\n", Version::Http10, Framing::Length(3), false, false),
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", Version::Http11, Framing::Length(3), true, true),
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n", Version::Http11, Framing::Chunked, true, true),
            (b"POST / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n", Version::Http11, Framing::Length(0), true, false),
            (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n", Version::Http10, Framing::Length(3), false, false),
        ];
        for &(input, version, framing, keep_alive, expect_continue) in cases {
            let (head, _) = parse(input);
            let what = String::from_utf8_lossy(input);
            assert_eq!(head.version, version, "{what}");
            assert_eq!(head.framing, framing, "{what}");
            assert_eq!(head.keep_alive, keep_alive, "{what}");
            assert_eq!(head.expect_continue, expect_continue, "{what}");
            assert_eq!(head.head_len, input.len(), "{what}");
        }
    }

    #[test]
    fn path_excludes_the_query() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\n\r\n", b"/"),
            (b"POST /fast HTTP/1.1\r\nHost: a\r\n\r\n", b"/fast"),
            (
                b"POST /fast/x?q=1&r=2 HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/fast/x",
            ),
            (b"POST /?q HTTP/1.1\r\nHost: a\r\n\r\n", b"/"),
            (b"POST /a%20b?c?d HTTP/1.1\r\nHost: a\r\n\r\n", b"/a%20b"),
            (
                b"\r\n\r\nPOST /after-empty-lines HTTP/1.1\r\nHost: a\r\n\r\n",
                b"/after-empty-lines",
            ),
        ];
        for &(input, expected) in cases {
            let (head, _) = parse(input);
            assert_eq!(
                path(input, &head),
                expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped_and_counted() {
        let input = b"\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let (head, forward) = parse(input);
        assert_eq!(head.head_len, input.len());
        assert_eq!(head.path, 6..8);
        assert_eq!(forward, "GET /x HTTP/1.1\r\nHost: a\r\n");
    }

    #[test]
    fn forwarded_head_drops_hop_by_hop_and_framing_fields() {
        let input = b"POST /p HTTP/1.1\r\n\
            Host: a\r\n\
            Connection: keep-alive, X-Trace, host\r\n\
            Keep-Alive: timeout=5\r\n\
            TE: trailers\r\n\
            Trailer: X-Sum\r\n\
            Upgrade: h2c\r\n\
            Proxy-Connection: keep-alive\r\n\
            Proxy-Authorization: Basic eA==\r\n\
            Proxy-Authenticate: Basic\r\n\
            X-Trace: 1\r\n\
            x-trace: 2\r\n\
            Expect: 100-continue\r\n\
            Transfer-Encoding: chunked\r\n\
            X-Keep: \tspaced value \r\n\
            Accept: */*\r\n\r\n";
        let (_, forward) = parse(input);
        assert_eq!(
            forward,
            "POST /p HTTP/1.1\r\nHost: a\r\nX-Keep: spaced value\r\nAccept: */*\r\n"
        );
    }

    #[test]
    fn forwarded_head_is_http11_and_keeps_order_and_case() {
        let input =
            b"PUT /q?a=b HTTP/1.0\r\nx-b: 2\r\nHOST: h\r\nX-A: 1\r\nContent-Length: 2\r\n\r\nhi";
        let (_, forward) = parse(input);
        assert_eq!(
            forward,
            "PUT /q?a=b HTTP/1.1\r\nx-b: 2\r\nHOST: h\r\nX-A: 1\r\n"
        );
    }

    #[test]
    fn http10_without_host_gets_an_empty_host_for_backends() {
        let (_, forward) = parse(b"GET /x HTTP/1.0\r\nAccept: */*\r\n\r\n");
        assert_eq!(forward, "GET /x HTTP/1.1\r\nAccept: */*\r\nHost: \r\n");
    }

    #[test]
    fn forward_buffer_is_cleared_first() {
        let mut forward = b"left over".to_vec();
        parse_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", &LIMITS, &mut forward).unwrap();
        assert_eq!(forward, b"GET / HTTP/1.1\r\nHost: a\r\n");
    }

    #[test]
    fn obs_text_in_a_value_is_forwarded_as_received() {
        let (_, forward) = parse(b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\n\r\n");
        assert_eq!(forward, "GET / HTTP/1.1\r\nHost: a\r\nX-Name: café\r\n");
    }

    #[test]
    fn malformed_heads_are_rejected() {
        use httparse::Error::{HeaderName, HeaderValue, NewLine, Token};
        use RequestError::*;
        let cases: &[(&[u8], RequestError)] = &[
            // Whitespace before a colon, and obs-fold (RFC 9112 §5.1, §5.2).
            (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Syntax(HeaderName)),
            (b"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", Syntax(HeaderName)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n  2\r\n\r\n",
                Syntax(HeaderName),
            ),
            (b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Syntax(HeaderName)),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\n\tX: 1\r\n\r\n",
                Syntax(HeaderName),
            ),
            (
                b"GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n",
                Syntax(HeaderName),
            ),
            (b"GET / HTTP/1.1\r\nHo\"st: a\r\n\r\n", Syntax(HeaderName)),
            (b"GET / HTTP/1.1\r\nHost a\r\n\r\n", Syntax(HeaderName)),
            // NUL, bare CR, bare LF, other controls.
            (b"GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", Syntax(HeaderValue)),
            (b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", Syntax(HeaderValue)),
            (
                b"GET / HTTP/1.1\r\nHost: a\x7f\r\n\r\n",
                Syntax(HeaderValue),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",
                Syntax(HeaderValue),
            ),
            (b"GET / HTTP/1.1\r\nHo\0st: a\r\n\r\n", Syntax(HeaderName)),
            (b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", Syntax(Token)),
            (b"GET / HTTP/1.1\nHost: a\r\n\r\n", StrayControl),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", StrayControl),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\n", StrayControl),
            (b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", StrayControl),
            (b"GET / HTTP/1.1\rHost: a\r\n\r\n", Syntax(NewLine)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\r\n", Syntax(NewLine)),
            // Request line.
            (b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Syntax(Token)),
            (b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", UnsupportedVersion),
            (b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", Syntax(Token)),
            (b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", Syntax(Token)),
            (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", Syntax(Token)),
            (b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", Syntax(NewLine)),
            (b"GET /\r\nHost: a\r\n\r\n", Syntax(Token)),
            // Versions.
            (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/0.9\r\nHost: a\r\n\r\n", UnsupportedVersion),
            (b"GET / http/1.1\r\nHost: a\r\n\r\n", UnsupportedVersion),
            (b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Syntax(NewLine)),
            // Targets.
            (b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (
                b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                InvalidTarget,
            ),
            (b"GET http:/a/ HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (b"CONNECT /api HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (
                b"CONNECT http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                InvalidTarget,
            ),
            (b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n", InvalidTarget),
            (
                b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n",
                InvalidTarget,
            ),
            // Host.
            (b"GET / HTTP/1.1\r\n\r\n", MissingHost),
            (b"GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", MissingHost),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n",
                DuplicateHost,
            ),
            (
                b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                DuplicateHost,
            ),
            // A Host that is not host[:port]: two hosts as a list, whitespace, a path, userinfo,
            // a port that is not a number, a broken IP literal or percent-encoding.
            (b"GET / HTTP/1.1\r\nHost: x, y\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: x,y\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a:8o\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: []\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a%2\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n", InvalidHost),
            // Whatever the body's size: the head is bad first.
            (
                b"POST / HTTP/1.1\r\nHost: a b\r\nContent-Length: 101\r\n\r\n",
                InvalidHost,
            ),
            // The same in an absolute-form target's authority.
            (
                b"GET http://y:99x/ HTTP/1.1\r\nHost: y\r\n\r\n",
                InvalidTarget,
            ),
            (
                b"GET http://[::1/ HTTP/1.1\r\nHost: y\r\n\r\n",
                InvalidTarget,
            ),
        ];
        for &(input, why) in cases {
            parse_err(input, why);
            assert_eq!(why.status(), 400);
        }
    }

    #[test]
    fn every_host_of_the_uri_grammar_is_accepted() {
        for host in [
            "a",
            "bidder.example:8080",
            "127.0.0.1",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8443",
            "[2001:db8::ffff:1.2.3.4]",
            "xn--bcher-kva.example",
            "a_b-c~d.e",
            "caf%C3%A9.example",
            "host:",
            "",
        ] {
            let input = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let (head, forward) = parse(input.as_bytes());
            assert_eq!(&forward[head.forward_host.clone()], host, "{host:?}");
        }
        let (head, forward) = parse(b"GET http://[::1]:8080/x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(&forward[head.forward_host], "[::1]:8080");
    }

    #[test]
    fn ambiguous_framing_is_rejected() {
        use FramingError::*;
        let cases: &[(&[u8], FramingError)] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", ContentLengthWithTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -5\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5a\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5,\r\n\r\n", InvalidContentLength),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-unknown\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding),
            (b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding),
        ];
        let many = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: {}\r\n\r\n",
            vec!["x"; fields::MAX_CONNECTION_OPTIONS + 1].join(",")
        );
        parse_err(
            many.as_bytes(),
            RequestError::Framing(TooManyConnectionOptions),
        );
        for &(input, why) in cases {
            parse_err(input, RequestError::Framing(why));
            assert_eq!(RequestError::Framing(why).status(), 400);
        }
    }

    #[test]
    fn body_over_the_limit_is_413_at_the_head() {
        let at_limit = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
        assert_eq!(parse(at_limit).0.framing, Framing::Length(100));
        let over = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 101\r\n\r\n";
        parse_err(over, RequestError::BodyTooLarge);
        let huge = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551615\r\n\r\n";
        parse_err(huge, RequestError::BodyTooLarge);
        assert_eq!(RequestError::BodyTooLarge.status(), 413);
    }

    #[test]
    fn leading_empty_lines_are_whole_crlf_pairs() {
        assert_eq!(leading_empty_lines(b""), 0);
        assert_eq!(leading_empty_lines(b"\r"), 0);
        assert_eq!(leading_empty_lines(b"\r\n\r\nGET"), 4);
        assert_eq!(leading_empty_lines(b"\r\n\r\r\n"), 2);
        assert_eq!(leading_empty_lines(b"\n\r\n"), 0);
    }

    #[test]
    fn head_over_the_limit_is_431() {
        let head = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let exact = Limits {
            max_header_bytes: head.len(),
            max_body: 0,
        };
        parse_with(head, &exact);
        let short = Limits {
            max_header_bytes: head.len() - 1,
            ..exact
        };
        parse_err_with(head, &short, RequestError::HeadTooLarge);

        // Incomplete, but already over the limit: no point waiting for the end.
        let mut endless = b"GET / HTTP/1.1\r\nHost: a\r\nX-Pad: ".to_vec();
        endless.resize(LIMITS.max_header_bytes, b'x');
        assert_eq!(parse_request(&endless, &LIMITS, &mut Vec::new()), Ok(None));
        endless.push(b'x');
        assert_eq!(
            parse_request(&endless, &LIMITS, &mut Vec::new()),
            Err(RequestError::HeadTooLarge)
        );
        let mut blank_lines = b"\r\n".repeat(LIMITS.max_header_bytes / 2);
        blank_lines.push(b'G');
        assert_eq!(
            parse_request(&blank_lines, &LIMITS, &mut Vec::new()),
            Err(RequestError::HeadTooLarge)
        );
        assert_eq!(RequestError::HeadTooLarge.status(), 431);
    }

    #[test]
    fn more_than_max_headers_is_431() {
        let roomy = Limits {
            max_header_bytes: 1 << 16,
            max_body: 0,
        };
        let head_with = |count: usize| {
            let mut head = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
            for i in 1..count {
                head.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            head
        };
        let full = head_with(MAX_HEADERS);
        assert!(parse_request(&full, &roomy, &mut Vec::new())
            .unwrap()
            .is_some());
        parse_err_with(
            &head_with(MAX_HEADERS + 1),
            &roomy,
            RequestError::TooManyHeaders,
        );
        assert_eq!(RequestError::TooManyHeaders.status(), 431);
    }

    #[test]
    fn pipelined_bytes_after_the_head_are_left_alone() {
        let input = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        let (head, _) = parse(input);
        assert_eq!(head.head_len, input.len() / 2);
        assert_eq!(path(input, &head), b"/a");
    }
}

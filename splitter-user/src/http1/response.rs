//! Backend response heads: where the splitter is the client.
//!
//! [`parse_response`] reads a head and decides how its body is framed (RFC 9112 §6.3). It is as
//! strict as request parsing: an ambiguous or oversized response makes that backend's answer an
//! `error` outcome and its connection is closed. No I/O, no allocation.

use httparse::{Header, Status};

use super::body::Framing;
use super::encode::is_hop_by_hop;
use super::fields::{self, Fields};
use super::limits::{MAX_HEADERS, MAX_RESPONSE_HEAD};
use super::FramingError;

/// A parsed backend response head, with interim `1xx` responses already skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The final status code, 200..=599.
    pub status: u16,
    /// Its `Content-Encoding`.
    pub coding: Coding,
    /// Bytes of the head, interim responses before it and the final blank line included: the body
    /// starts at this offset.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection may carry another request after this body: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, never for
    /// [`Framing::UntilClose`].
    pub keep_alive: bool,
}

/// A response body's `Content-Encoding` (RFC 9110 §8.4), as far as the splitter reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// None, or `identity`.
    Identity,
    /// `gzip` (or its alias `x-gzip`).
    Gzip,
    /// `deflate`: the zlib format (RFC 9110 §8.4.1.2).
    Deflate,
    /// Anything else, or more than one coding: not decoded, so the reply cannot be judged.
    Other,
}

impl Coding {
    /// The coding the `Content-Encoding` fields of `headers` describe.
    fn of(headers: &[Header<'_>]) -> Coding {
        let mut coding = Coding::Identity;
        let codings = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
            .flat_map(|h| h.value.split(|&b| b == b','))
            .map(|c| c.trim_ascii())
            .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case(b"identity"));
        for c in codings {
            let this = if c.eq_ignore_ascii_case(b"gzip") || c.eq_ignore_ascii_case(b"x-gzip") {
                Coding::Gzip
            } else if c.eq_ignore_ascii_case(b"deflate") {
                Coding::Deflate
            } else {
                Coding::Other
            };
            coding = match coding {
                Coding::Identity => this,
                _ => Coding::Other,
            };
        }
        coding
    }
}

/// The header fields a winning response passes on to the client, in the order received: all but
/// the hop-by-hop ones, those its `Connection` names, `Content-Length` (the splitter frames the
/// body itself) and `X-Splitter-*` (the splitter's own, which a backend must not forge).
///
/// Offsets are `u16`: a head is at most [`MAX_RESPONSE_HEAD`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PassedFields {
    /// Name start, name end, value start, value end of each field.
    spans: [[u16; 4]; MAX_HEADERS],
    len: usize,
}

impl PassedFields {
    /// Each field as `(name, value)`, borrowed from `head`, the bytes the head was parsed from.
    pub fn iter<'a>(&'a self, head: &'a [u8]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.spans[..self.len].iter().map(move |&[ns, ne, vs, ve]| {
            (
                &head[usize::from(ns)..usize::from(ne)],
                &head[usize::from(vs)..usize::from(ve)],
            )
        })
    }

    /// The passed fields of the final head in `raw_head`, a head [`parse_response`] accepted.
    ///
    /// Only the winning reply's are ever wanted, so they are found again when the client's
    /// response is written rather than kept with every reply (an array of offsets as large as
    /// [`MAX_HEADERS`] allows, moved with each reply through the exchange).
    pub fn of_head(raw_head: &[u8]) -> Self {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match parse_final_head(raw_head, &mut headers) {
            Ok(Some(head)) => {
                let headers = &headers[..head.header_count];
                let names_fields =
                    Fields::scan(headers, head.minor_version == 0).is_ok_and(|f| f.names_fields);
                Self::of(raw_head, headers, names_fields)
            }
            _ => {
                debug_assert!(false, "a head parse_response accepted no longer parses");
                Self {
                    spans: [[0; 4]; MAX_HEADERS],
                    len: 0,
                }
            }
        }
    }

    fn of(buf: &[u8], headers: &[Header<'_>], names_fields: bool) -> Self {
        let offset = |part: &[u8]| (part.as_ptr() as usize - buf.as_ptr() as usize) as u16;
        let mut passed = PassedFields {
            spans: [[0; 4]; MAX_HEADERS],
            len: 0,
        };
        let named = names_fields.then(|| fields::ConnectionOptions::of(headers));
        for header in headers {
            let name = header.name;
            let dropped = is_hop_by_hop(name.as_bytes())
                || name.eq_ignore_ascii_case("content-length")
                || name
                    .get(..11)
                    .is_some_and(|p| p.eq_ignore_ascii_case("x-splitter-"))
                || named.as_ref().is_some_and(|named| named.name(name));
            if !dropped {
                let (n, v) = (offset(name.as_bytes()), offset(header.value));
                passed.spans[passed.len] =
                    [n, n + name.len() as u16, v, v + header.value.len() as u16];
                passed.len += 1;
            }
        }
        passed
    }
}

impl std::fmt::Debug for PassedFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.spans[..self.len]).finish()
    }
}

/// Why a backend response head is unusable (the backend's outcome is then `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// The status line or a header line breaks the syntax, as `httparse` reports it.
    #[error("malformed response head: {0}")]
    Syntax(httparse::Error),
    /// A NUL, a bare CR or a bare LF in the head (RFC 9112 §2.2).
    #[error("NUL, bare CR or bare LF in the response head")]
    StrayControl,
    /// The head does not end within [`MAX_RESPONSE_HEAD`] bytes.
    #[error("response head over {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLarge,
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {MAX_HEADERS} response header fields")]
    TooManyHeaders,
    /// A status outside 100..=599, or `101 Switching Protocols`, which the splitter never asks for.
    #[error("unexpected response status {0}")]
    InvalidStatus(u16),
    /// Framing fields that disagree or that the splitter cannot decode.
    #[error(transparent)]
    Framing(#[from] FramingError),
    /// A `Content-Length` no buffer could hold. Smaller ones over `max_response_bytes` are
    /// refused by the body decoder, before any of the body is read.
    #[error("response body larger than memory")]
    BodyTooLarge,
}

/// Parses the backend response head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet. Interim `1xx` responses (`100 Continue`, `103 Early
/// Hints`) are skipped: the result describes the final response, and `head_len` covers the interim
/// ones too. The whole of
/// it must fit in [`MAX_RESPONSE_HEAD`].
///
/// The framing follows RFC 9112 §6.3, with the request-side strictness: `Content-Length` together
/// with `Transfer-Encoding` is an error rather than a choice. The request method is not known here:
/// responses to `HEAD` are not told apart (the splitter forwards them as any other; see the report).
pub fn parse_response(buf: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Some(head) = parse_final_head(buf, &mut headers)? else {
        return Ok(None);
    };
    let http10 = head.minor_version == 0;
    let headers = &headers[..head.header_count];
    let fields = Fields::scan(headers, http10)?;

    let framing = if head.status == 204 || head.status == 304 {
        Framing::Length(0)
    } else if fields.chunked {
        Framing::Chunked
    } else if let Some(length) = fields.content_length {
        match usize::try_from(length) {
            Ok(length) if length <= isize::MAX as usize => Framing::Length(length),
            _ => return Err(ResponseError::BodyTooLarge),
        }
    } else {
        Framing::UntilClose
    };
    let persistent = if http10 {
        fields.keep_alive && !fields.close
    } else {
        !fields.close
    };
    Ok(Some(ResponseHead {
        status: head.status,
        coding: Coding::of(headers),
        head_len: head.len,
        framing,
        keep_alive: persistent && framing != Framing::UntilClose,
    }))
}

/// Whether a head may have ended in `buf` now that it grew past `scanned` bytes: an LF followed
/// by an LF or a CRLF lies in the new bytes (or straddles them). Lets a reader parse a head once
/// it can be complete rather than after every read, which keeps the work linear in the head's
/// size however it is cut.
pub fn head_may_end(buf: &[u8], scanned: usize) -> bool {
    let from = scanned.saturating_sub(2);
    memchr::memchr_iter(b'\n', &buf[from..])
        .any(|i| matches!(&buf[from + i + 1..], [b'\n', ..] | [b'\r', b'\n', ..]))
}

/// The final (non-`1xx`) head of a response, as `httparse` split it.
struct FinalHead {
    /// Bytes up to the end of the final head, interim responses included.
    pub len: usize,
    /// `0` for HTTP/1.0, `1` for HTTP/1.1.
    pub minor_version: u8,
    /// The status code, 200..=599.
    pub status: u16,
    /// How many entries of the caller's header array belong to the final head.
    pub header_count: usize,
}

/// Skips interim responses and splits the final head of `buf` into `headers`, checking the syntax,
/// the size, the status and the line endings (not the framing fields).
fn parse_final_head<'b>(
    buf: &'b [u8],
    headers: &mut [Header<'b>; MAX_HEADERS],
) -> Result<Option<FinalHead>, ResponseError> {
    // Every leniency of httparse off (the defaults, spelled out): no spaces before a colon, no
    // obs-fold, single spaces in the status line, no invalid lines skipped.
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(false)
        .allow_obsolete_multiline_headers_in_responses(false)
        .allow_multiple_spaces_in_response_status_delimiters(false)
        .allow_space_before_first_header_name(false)
        .ignore_invalid_headers_in_responses(false);

    let mut start = 0;
    loop {
        let mut response = httparse::Response::new(&mut headers[..]);
        let len = match config.parse_response(&mut response, &buf[start..]) {
            Ok(Status::Complete(len)) => len,
            Ok(Status::Partial) if buf.len() > MAX_RESPONSE_HEAD => {
                return Err(ResponseError::HeadTooLarge)
            }
            Ok(Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyHeaders),
            Err(error) => return Err(ResponseError::Syntax(error)),
        };
        let end = start + len;
        if end > MAX_RESPONSE_HEAD {
            return Err(ResponseError::HeadTooLarge);
        }
        if !fields::line_endings_are_strict(&buf[start..end]) {
            return Err(ResponseError::StrayControl);
        }
        let (Some(minor_version), Some(status)) = (response.version, response.code) else {
            unreachable!("httparse sets the version and the code of a complete response");
        };
        match status {
            // 101 only answers an Upgrade, which the splitter never sends.
            100 | 102..=199 => start = end,
            200..=599 => {
                return Ok(Some(FinalHead {
                    len: end,
                    minor_version,
                    status,
                    header_count: response.headers.len(),
                }))
            }
            _ => return Err(ResponseError::InvalidStatus(status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `input` whole and split at every offset: every prefix that does not hold the whole
    /// head must say "need more", every other one must give the same head.
    fn parse(input: &[u8]) -> ResponseHead {
        let head = parse_response(input)
            .unwrap_or_else(|e| panic!("{e:?} for {:?}", String::from_utf8_lossy(input)))
            .expect("complete head");
        for split in 0..input.len() {
            let expected = if split < head.head_len {
                None
            } else {
                Some(head)
            };
            assert_eq!(
                parse_response(&input[..split]),
                Ok(expected),
                "split at {split}"
            );
        }
        head
    }

    /// Parses `input` whole, expecting `why`; every prefix must say "need more" or fail the same.
    fn parse_err(input: &[u8], why: ResponseError) {
        let what = String::from_utf8_lossy(&input[..input.len().min(80)]);
        assert_eq!(parse_response(input), Err(why), "{what:?}");
        for split in 0..input.len() {
            let partial = parse_response(&input[..split]);
            assert!(
                partial == Ok(None) || partial == Err(why),
                "split at {split} of {what:?}: {partial:?}"
            );
        }
    }

    #[test]
    fn a_head_may_end_only_once_a_blank_line_arrived() {
        let head = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n";
        let end = head.len();
        for split in 0..end {
            // Fed in two reads: the first cannot end the head, the second must say it may.
            assert!(!head_may_end(&head[..split], 0), "split at {split}");
            assert!(head_may_end(head, split), "split at {split}");
        }
        assert!(head_may_end(b"HTTP/1.0 200 OK\n\n", 0));
        assert!(!head_may_end(b"HTTP/1.1 200 OK\r\nA: b\r\n", 0));
    }

    #[test]
    fn framing_and_keep_alive_follow_status_and_fields() {
        use Framing::*;
        let cases: &[(&[u8], u16, Framing, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                200,
                Length(12),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 3, 3\r\n\r\n",
                200,
                Length(3),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                200,
                Length(0),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n",
                200,
                Length(1 << 20),
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                200,
                Chunked,
                true,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\n", 200, UntilClose, false),
            (
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                200,
                Length(2),
                false,
            ),
            (
                b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\n\r\n",
                500,
                Length(2),
                true,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", 204, Length(0), true),
            (
                b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
                204,
                Length(0),
                true,
            ),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n",
                304,
                Length(0),
                true,
            ),
            (
                b"HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n",
                200,
                Length(1),
                true,
            ),
            (
                b"HTTP/1.1 200 \r\nContent-Length: 1\r\n\r\n",
                200,
                Length(1),
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                200,
                Length(2),
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n",
                200,
                Length(2),
                true,
            ),
            (
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\n\r\n",
                200,
                UntilClose,
                false,
            ),
            (
                b"HTTP/1.0 204 No Content\r\nConnection: keep-alive\r\n\r\n",
                204,
                Length(0),
                true,
            ),
        ];
        for &(input, status, framing, keep_alive) in cases {
            let head = parse(input);
            let what = String::from_utf8_lossy(input);
            assert_eq!(
                (head.status, head.head_len, head.framing, head.keep_alive),
                (status, input.len(), framing, keep_alive),
                "{what}"
            );
        }
    }

    #[test]
    fn content_encoding_is_read() {
        let coding = |fields: &str| {
            let input = format!("HTTP/1.1 200 OK\r\n{fields}Content-Length: 0\r\n\r\n");
            parse(input.as_bytes()).coding
        };
        assert_eq!(coding(""), Coding::Identity);
        assert_eq!(coding("Content-Encoding: identity\r\n"), Coding::Identity);
        assert_eq!(coding("Content-Encoding: GZIP\r\n"), Coding::Gzip);
        assert_eq!(coding("content-encoding: x-gzip\r\n"), Coding::Gzip);
        assert_eq!(coding("Content-Encoding: deflate\r\n"), Coding::Deflate);
        assert_eq!(coding("Content-Encoding: br\r\n"), Coding::Other);
        assert_eq!(coding("Content-Encoding: gzip, gzip\r\n"), Coding::Other);
        assert_eq!(
            coding("Content-Encoding: gzip\r\nContent-Encoding: deflate\r\n"),
            Coding::Other
        );
    }

    #[test]
    fn passed_fields_leave_out_hop_by_hop_framing_and_splitter_fields() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: X-Hop\r\n\
            X-Hop: 1\r\nContent-Length: 2\r\nX-Splitter-Value: 99\r\nx-splitter-backend: f\r\n\
            Keep-Alive: timeout=5\r\nX-Req-Id: 7\r\n\r\nok";
        let head = parse(input);
        let passed = PassedFields::of_head(&input[..head.head_len]);
        let passed: Vec<(&[u8], &[u8])> = passed.iter(input).collect();
        assert_eq!(
            passed,
            [
                (&b"Content-Type"[..], &b"application/json"[..]),
                (b"X-Req-Id", b"7")
            ]
        );
    }

    #[test]
    fn interim_responses_are_skipped_and_counted() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let head = parse(input);
        assert_eq!(head.status, 200);
        assert_eq!(head.head_len, input.len() - 2);
        assert_eq!(head.framing, Framing::Length(2));
        // An interim response alone is not a complete head.
        assert_eq!(parse_response(b"HTTP/1.1 100 Continue\r\n\r\n"), Ok(None));
    }

    #[test]
    fn body_after_the_head_is_left_alone() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody";
        assert_eq!(parse(input).head_len, input.len() - 4);
    }

    #[test]
    fn malformed_heads_are_errors() {
        use httparse::Error::{HeaderName, HeaderValue, NewLine, Status, Version};
        use ResponseError::*;
        let cases: &[(&[u8], ResponseError)] = &[
            (
                b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\n",
                Syntax(HeaderName),
            ),
            (b"HTTP/1.1 200 OK\r\nX: 1\r\n 2\r\n\r\n", Syntax(HeaderName)),
            (b"HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n", Syntax(HeaderValue)),
            (b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n", Syntax(HeaderValue)),
            (b"HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\n", StrayControl),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\n", StrayControl),
            (
                b"HTTP/1.1 100 Continue\n\nHTTP/1.1 200 OK\r\n\r\n",
                StrayControl,
            ),
            (b"HTTP/1.1  200 OK\r\n\r\n", Syntax(Status)),
            (b"HTTP/1.1 20 OK\r\n\r\n", Syntax(Status)),
            (b"HTTP/1.1 2000 OK\r\n\r\n", Syntax(Status)),
            (b"HTTP/1.1 OK\r\n\r\n", Syntax(Status)),
            (b"HTTP/2.0 200 OK\r\n\r\n", Syntax(Version)),
            (b"HTTP/1.1 200 OK\r\nX\r\n\r\n", Syntax(HeaderName)),
            (b"HTTP/1.1 200 OK\r\n\r\r\n", Syntax(NewLine)),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
                InvalidStatus(101),
            ),
            (b"HTTP/1.1 099 Low\r\n\r\n", InvalidStatus(99)),
            (b"HTTP/1.1 600 High\r\n\r\n", InvalidStatus(600)),
        ];
        for &(input, why) in cases {
            parse_err(input, why);
        }
    }

    #[test]
    fn ambiguous_or_oversized_framing_is_an_error() {
        use FramingError::*;
        let cases: &[(&[u8], ResponseError)] = &[
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", ContentLengthWithTransferEncoding.into()),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", InvalidContentLength.into()),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", InvalidContentLength.into()),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", UnsupportedTransferEncoding.into()),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", UnsupportedTransferEncoding.into()),
            (b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", UnsupportedTransferEncoding.into()),
            (b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", ContentLengthWithTransferEncoding.into()),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551615\r\n\r\n", ResponseError::BodyTooLarge),
        ];
        for &(input, why) in cases {
            parse_err(input, why);
        }
    }

    #[test]
    fn head_size_and_field_count_are_capped() {
        let mut head = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        head.resize(MAX_RESPONSE_HEAD - 4, b'x');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_response(&head).unwrap().unwrap().head_len,
            MAX_RESPONSE_HEAD
        );

        let mut head = b"HTTP/1.1 200 OK\r\nX-Pad: ".to_vec();
        head.resize(MAX_RESPONSE_HEAD - 3, b'x');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(parse_response(&head), Err(ResponseError::HeadTooLarge));
        assert_eq!(
            parse_response(&head[..MAX_RESPONSE_HEAD + 1]),
            Err(ResponseError::HeadTooLarge)
        );

        let mut interims = b"HTTP/1.1 100 Continue\r\n\r\n".repeat(MAX_RESPONSE_HEAD / 25);
        interims.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(parse_response(&interims), Err(ResponseError::HeadTooLarge));

        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: {i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        parse_err(&many, ResponseError::TooManyHeaders);
    }
}

//! Backend response heads: where the splitter is the client.
//!
//! [`parse_response`] reads a head and decides how its body is framed (RFC 9112 §6.3). It is as
//! strict as request parsing: an ambiguous or oversized response makes that backend's answer an
//! `error` outcome and its connection is closed. No I/O, no allocation.

use httparse::{Header, Status};

use super::fields::{self, Fields};
use super::limits::{MAX_HEADERS, MAX_RESPONSE_BODY, MAX_RESPONSE_HEAD};
use super::FramingError;

/// How the body of a backend response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// Exactly this many bytes follow the head.
    Length(usize),
    /// Chunked coding; decode with [`super::chunked::ChunkedDecoder`].
    Chunked,
    /// No `Content-Length`, no `Transfer-Encoding`: the body ends when the backend closes.
    UntilClose,
    /// No body at all, whatever the fields say: `204` and `304` (RFC 9112 §6.3 rule 1).
    Empty,
}

/// A parsed backend response head, with interim `1xx` responses already skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// The final status code, 200..=599.
    pub status: u16,
    /// Bytes of the head, interim responses before it and the final blank line included: the body
    /// starts at this offset.
    pub head_len: usize,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// Whether the connection may carry another request after this body: HTTP/1.1 unless
    /// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`, never for
    /// [`ResponseFraming::UntilClose`].
    pub keep_alive: bool,
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
    /// A `Content-Length` over [`MAX_RESPONSE_BODY`].
    #[error("response body over {MAX_RESPONSE_BODY} bytes")]
    BodyTooLarge,
    /// The bytes end before the head does. Only [`super::encode::client_response`] reports this,
    /// when handed something [`parse_response`] did not accept; `parse_response` says `Ok(None)`.
    #[error("truncated response head")]
    Truncated,
}

/// Parses the backend response head at the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet. Interim `1xx` responses (`100 Continue`, `103 Early
/// Hints`) are skipped: the result describes the final response, and `head_len` covers the interim
/// ones too, so `&buf[..head_len]` is what [`super::encode::client_response`] takes. The whole of
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
    let fields = Fields::scan(&headers[..head.header_count], http10)?;

    let framing = if head.status == 204 || head.status == 304 {
        ResponseFraming::Empty
    } else if fields.chunked {
        ResponseFraming::Chunked
    } else if let Some(length) = fields.content_length {
        match usize::try_from(length) {
            Ok(length) if length <= MAX_RESPONSE_BODY => ResponseFraming::Length(length),
            _ => return Err(ResponseError::BodyTooLarge),
        }
    } else {
        ResponseFraming::UntilClose
    };
    let persistent = if http10 {
        fields.keep_alive && !fields.close
    } else {
        !fields.close
    };
    Ok(Some(ResponseHead {
        status: head.status,
        head_len: head.len,
        framing,
        keep_alive: persistent && framing != ResponseFraming::UntilClose,
    }))
}

/// The final (non-`1xx`) head of a response, as `httparse` split it.
pub(super) struct FinalHead {
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
pub(super) fn parse_final_head<'b>(
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

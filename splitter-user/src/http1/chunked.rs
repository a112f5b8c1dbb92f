//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder, and an encoder for the mock
//! backend and tests.
//!
//! The decoder is a state machine fed whatever bytes arrived, one small function per state, with
//! checked size arithmetic. It is strict: bare LF, padding, whitespace or extension syntax that
//! another parser could read differently are errors. Extensions and trailer fields are checked,
//! then discarded. No I/O; payload bytes go to the caller's buffer.

use super::limits::{MAX_CHUNK_METADATA, MAX_CHUNK_SIZE_DIGITS};

/// Where the decoder stands in the grammar:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
/// chunk-ext    = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// Whitespace after the size: only `;` may follow.
    SizeWs,
    /// After `;`: whitespace, then an extension name.
    ExtNameStart,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name: only `=` or `;` may follow.
    ExtNameWs,
    /// After `=`: whitespace, then a token or a quoted string.
    ExtValueStart,
    /// Inside a token value.
    ExtToken,
    /// Inside a quoted-string value.
    ExtQuoted,
    /// After a backslash in a quoted string.
    ExtQuotedPair,
    /// Right after the closing quote of a value.
    ExtValueEnd,
    /// Whitespace after a value: only `;` may follow.
    ExtValueWs,
    /// CR of the size line seen; LF must follow.
    SizeLf,
    /// Chunk data, `size` bytes still to read.
    Data,
    /// After chunk data: CR must follow.
    DataCr,
    /// After chunk data and CR: LF must follow.
    DataLf,
    /// Start of a trailer line, or of the final CRLF.
    TrailerStart,
    /// Inside a trailer field name.
    TrailerName,
    /// Inside a trailer field value, up to CR.
    TrailerValue,
    /// CR of a trailer line seen; LF must follow.
    TrailerLf,
    /// CR of the final line seen; LF must follow.
    EndLf,
    /// The body is complete.
    Done,
}

/// A streaming decoder for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    /// Where in the grammar the next byte falls.
    state: State,
    /// The chunk size being read, then the bytes of that chunk still to come.
    size: usize,
    /// Hex digits read in the current size, bounded by [`MAX_CHUNK_SIZE_DIGITS`].
    digits: usize,
    /// Payload bytes announced so far, bounded by `max_body`.
    total: usize,
    /// Most payload bytes accepted.
    max_body: usize,
    /// Extension and trailer bytes so far, bounded by [`MAX_CHUNK_METADATA`].
    metadata: usize,
}

/// Progress of one [`ChunkedDecoder::decode`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed. All of the input unless `done`: then none after the final CRLF, so
    /// a pipelined request that follows stays in the caller's buffer.
    pub consumed: usize,
    /// Whether the last chunk, the trailers and the final CRLF have been read.
    pub done: bool,
}

/// Why a chunked body is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// The coding breaks RFC 9112 §7.1; the text says how.
    #[error("malformed chunked body: {0}")]
    Malformed(&'static str),
    /// The payload would exceed the decoder's `max_body` (exactly `max_body` is accepted).
    #[error("chunked body over the size limit")]
    BodyTooLarge,
}

impl ChunkedError {
    /// The status for a client whose request body this is: 413 when too large, else 400.
    pub fn status(&self) -> u16 {
        match self {
            ChunkedError::BodyTooLarge => 413,
            ChunkedError::Malformed(_) => 400,
        }
    }
}

impl ChunkedDecoder {
    /// A decoder for one body of at most `max_body` payload bytes.
    pub fn new(max_body: usize) -> Self {
        ChunkedDecoder {
            state: State::Size,
            size: 0,
            digits: 0,
            total: 0,
            max_body,
            metadata: 0,
        }
    }

    /// Consumes from `input`, appending payload bytes to `out`.
    ///
    /// Call again with more input until `done`; after that it consumes nothing. After an error the
    /// decoder's state is unspecified: the stream cannot be trusted, close it.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let n = self.size.min(input.len() - pos);
                out.extend_from_slice(&input[pos..pos + n]);
                pos += n;
                self.size -= n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let byte = input[pos];
            pos += 1;
            self.state = self.step(byte)?;
        }
        Ok(Decoded {
            consumed: pos,
            done: self.state == State::Done,
        })
    }

    /// Moves past one byte of framing (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<State, ChunkedError> {
        use State::*;
        // One place for the rule every line obeys: LF only right after CR (RFC 9112 §2.2).
        if byte == b'\n' && !matches!(self.state, SizeLf | DataLf | TrailerLf | EndLf) {
            return Err(ChunkedError::Malformed("bare LF"));
        }
        if matches!(
            self.state,
            ExtNameStart
                | ExtName
                | ExtNameWs
                | ExtValueStart
                | ExtToken
                | ExtQuoted
                | ExtQuotedPair
                | ExtValueEnd
                | ExtValueWs
                | TrailerStart
                | TrailerName
                | TrailerValue
                | TrailerLf
        ) {
            self.metadata += 1;
            if self.metadata > MAX_CHUNK_METADATA {
                return Err(ChunkedError::Malformed(
                    "chunk extensions and trailers too long",
                ));
            }
        }
        match self.state {
            Size => self.read_size(byte),
            SizeWs => read_size_ws(byte),
            ExtNameStart => read_ext_name_start(byte),
            ExtName => read_ext_name(byte),
            ExtNameWs => read_ext_name_ws(byte),
            ExtValueStart => read_ext_value_start(byte),
            ExtToken => read_ext_token(byte),
            ExtQuoted => read_ext_quoted(byte),
            ExtQuotedPair => read_ext_quoted_pair(byte),
            ExtValueEnd => read_ext_value_end(byte),
            ExtValueWs => read_ext_value_ws(byte),
            SizeLf => self.read_size_lf(byte),
            DataCr => expect(byte, b'\r', DataLf, "missing CRLF after chunk data"),
            DataLf => self.read_data_lf(byte),
            TrailerStart => read_trailer_start(byte),
            TrailerName => read_trailer_name(byte),
            TrailerValue => read_trailer_value(byte),
            TrailerLf => expect(byte, b'\n', TrailerStart, "bare CR in trailer"),
            EndLf => expect(byte, b'\n', Done, "bare CR after the last chunk"),
            Data | Done => unreachable!("decode handles {:?} without stepping", self.state),
        }
    }

    fn read_size(&mut self, byte: u8) -> Result<State, ChunkedError> {
        let Some(digit) = hex_value(byte) else {
            if self.digits == 0 {
                return Err(ChunkedError::Malformed("missing chunk size"));
            }
            return match byte {
                b'\r' => Ok(State::SizeLf),
                b';' => Ok(State::ExtNameStart),
                b' ' | b'\t' => Ok(State::SizeWs),
                _ => Err(ChunkedError::Malformed("invalid chunk size")),
            };
        };
        self.digits += 1;
        if self.digits > MAX_CHUNK_SIZE_DIGITS {
            return Err(ChunkedError::Malformed("chunk size too long"));
        }
        self.size = self
            .size
            .checked_mul(16)
            .and_then(|size| size.checked_add(digit))
            .ok_or(ChunkedError::Malformed("chunk size overflow"))?;
        Ok(State::Size)
    }

    fn read_size_lf(&mut self, byte: u8) -> Result<State, ChunkedError> {
        if byte != b'\n' {
            return Err(ChunkedError::Malformed("bare CR after chunk size"));
        }
        if self.size == 0 {
            return Ok(State::TrailerStart);
        }
        // Refused as soon as announced, before any of the chunk is buffered.
        self.total = self
            .total
            .checked_add(self.size)
            .filter(|&total| total <= self.max_body)
            .ok_or(ChunkedError::BodyTooLarge)?;
        Ok(State::Data)
    }

    fn read_data_lf(&mut self, byte: u8) -> Result<State, ChunkedError> {
        self.digits = 0;
        expect(byte, b'\n', State::Size, "missing CRLF after chunk data")
    }
}

fn read_size_ws(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::SizeWs),
        b';' => Ok(State::ExtNameStart),
        _ => Err(ChunkedError::Malformed("whitespace after chunk size")),
    }
}

fn read_ext_name_start(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::ExtNameStart),
        _ if is_tchar(byte) => Ok(State::ExtName),
        _ => Err(ChunkedError::Malformed("invalid chunk extension name")),
    }
}

fn read_ext_name(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        _ if is_tchar(byte) => Ok(State::ExtName),
        b' ' | b'\t' => Ok(State::ExtNameWs),
        b'=' => Ok(State::ExtValueStart),
        b';' => Ok(State::ExtNameStart),
        b'\r' => Ok(State::SizeLf),
        _ => Err(ChunkedError::Malformed("invalid chunk extension name")),
    }
}

fn read_ext_name_ws(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::ExtNameWs),
        b'=' => Ok(State::ExtValueStart),
        b';' => Ok(State::ExtNameStart),
        _ => Err(ChunkedError::Malformed(
            "whitespace after chunk extension name",
        )),
    }
}

fn read_ext_value_start(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::ExtValueStart),
        b'"' => Ok(State::ExtQuoted),
        _ if is_tchar(byte) => Ok(State::ExtToken),
        _ => Err(ChunkedError::Malformed("invalid chunk extension value")),
    }
}

fn read_ext_token(byte: u8) -> Result<State, ChunkedError> {
    if is_tchar(byte) {
        return Ok(State::ExtToken);
    }
    read_ext_value_end(byte)
}

fn read_ext_quoted(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b'"' => Ok(State::ExtValueEnd),
        b'\\' => Ok(State::ExtQuotedPair),
        // qdtext: HTAB, SP, visible ASCII but `"` and `\`, obs-text (RFC 9110 §5.6.4).
        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Ok(State::ExtQuoted),
        _ => Err(ChunkedError::Malformed(
            "invalid byte in quoted chunk extension",
        )),
    }
}

fn read_ext_quoted_pair(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b'\t' | b' ' | 0x21..=0x7e | 0x80..=0xff => Ok(State::ExtQuoted),
        _ => Err(ChunkedError::Malformed(
            "invalid quoted-pair in chunk extension",
        )),
    }
}

fn read_ext_value_end(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b';' => Ok(State::ExtNameStart),
        b'\r' => Ok(State::SizeLf),
        b' ' | b'\t' => Ok(State::ExtValueWs),
        _ => Err(ChunkedError::Malformed("invalid chunk extension value")),
    }
}

fn read_ext_value_ws(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::ExtValueWs),
        b';' => Ok(State::ExtNameStart),
        _ => Err(ChunkedError::Malformed(
            "whitespace after chunk extension value",
        )),
    }
}

fn read_trailer_start(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b'\r' => Ok(State::EndLf),
        // A leading space would be obs-fold (RFC 9112 §5.2): refused like in a head.
        _ if is_tchar(byte) => Ok(State::TrailerName),
        _ => Err(ChunkedError::Malformed("invalid trailer field")),
    }
}

fn read_trailer_name(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        _ if is_tchar(byte) => Ok(State::TrailerName),
        b':' => Ok(State::TrailerValue),
        _ => Err(ChunkedError::Malformed("invalid trailer field name")),
    }
}

fn read_trailer_value(byte: u8) -> Result<State, ChunkedError> {
    match byte {
        b'\r' => Ok(State::TrailerLf),
        b'\t' | b' '..=0x7e | 0x80..=0xff => Ok(State::TrailerValue),
        _ => Err(ChunkedError::Malformed(
            "invalid byte in trailer field value",
        )),
    }
}

/// `next` if `byte` is `wanted`, else the error `why`.
fn expect(byte: u8, wanted: u8, next: State, why: &'static str) -> Result<State, ChunkedError> {
    if byte == wanted {
        Ok(next)
    } else {
        Err(ChunkedError::Malformed(why))
    }
}

fn hex_value(byte: u8) -> Option<usize> {
    char::from(byte).to_digit(16).map(|digit| digit as usize)
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Appends `body` to `out` in the chunked coding, `chunk_size` payload bytes per chunk (the last
/// one may be shorter), then the last chunk and the final CRLF; no extensions, no trailers.
///
/// # Panics
///
/// If `chunk_size` is 0.
pub fn encode_chunked(body: &[u8], chunk_size: usize, out: &mut Vec<u8>) {
    assert!(chunk_size > 0, "chunk_size must be positive");
    for chunk in body.chunks(chunk_size) {
        write_hex(out, chunk.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
}

/// Lower-case hex digits of `n`, without going through `core::fmt`.
fn write_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; MAX_CHUNK_SIZE_DIGITS];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b"0123456789abcdef"[n % 16];
        n /= 16;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

//! The chunked transfer coding (RFC 9112 §7.1): a streaming decoder, and an encoder for the mock
//! backend and tests.
//!
//! The decoder is a state machine fed whatever bytes arrived, one small function per state, with
//! checked size arithmetic. It is strict: bare LF, padding, whitespace or extension syntax that
//! another parser could read differently are errors. Extensions and trailer fields are checked,
//! then discarded. No I/O, no copy but where the caller asks for one.

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

impl State {
    /// Whether LF is the byte this state wants: anywhere else an LF is a bare LF.
    fn expects_lf(self) -> bool {
        matches!(
            self,
            State::SizeLf | State::DataLf | State::TrailerLf | State::EndLf
        )
    }

    /// Whether this state reads chunk extensions, trailer fields or the whitespace after a
    /// size, which count against [`MAX_CHUNK_METADATA`] (else a peer could stream spaces).
    fn is_metadata(self) -> bool {
        use State::*;
        matches!(
            self,
            SizeWs
                | ExtNameStart
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
        )
    }
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
#[cfg(any(test, fuzzing))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed. All of the input unless `done`: then none after the final CRLF, so
    /// a pipelined request that follows stays in the caller's buffer.
    pub consumed: usize,
    /// Whether the last chunk, the trailers and the final CRLF have been read.
    pub done: bool,
}

/// Progress of one [`ChunkedDecoder::decode_run`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// Input bytes consumed, the run of payload included. Never any after the final CRLF.
    pub consumed: usize,
    /// Where the run of payload lies in the input; empty when the call saw none.
    pub data: std::ops::Range<usize>,
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

    /// Whether the last chunk, the trailers and the final CRLF have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes from `input`, appending payload bytes to `out`: the reference the in-place
    /// decoding is tested against.
    ///
    /// Call again with more input until `done`; after that it consumes nothing. After an error the
    /// decoder's state is unspecified: the stream cannot be trusted, close it.
    #[cfg(any(test, fuzzing))]
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<Decoded, ChunkedError> {
        let mut consumed = 0;
        loop {
            let run = self.decode_run(&input[consumed..])?;
            out.extend_from_slice(&input[consumed..][run.data]);
            consumed += run.consumed;
            if run.done || consumed == input.len() {
                return Ok(Decoded {
                    consumed,
                    done: run.done,
                });
            }
        }
    }

    /// Consumes framing from `input` up to and including one run of payload, which it does not
    /// copy: `data` says where it lies in `input`. The caller may then move it anywhere, even
    /// down within the buffer `input` came from (in-place de-chunking, see
    /// [`super::body::BodyDecoder`]). Stops after the run, at the end of the body, or at the end
    /// of `input`: the work is linear in the bytes consumed.
    pub fn decode_run(&mut self, input: &[u8]) -> Result<Run, ChunkedError> {
        let mut pos = 0;
        while pos < input.len() && self.state != State::Done {
            if self.state == State::Data {
                let n = self.size.min(input.len() - pos);
                self.size -= n;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                return Ok(Run {
                    consumed: pos + n,
                    data: pos..pos + n,
                    done: false,
                });
            }
            let byte = input[pos];
            pos += 1;
            self.state = self.step(byte)?;
        }
        Ok(Run {
            consumed: pos,
            data: pos..pos,
            done: self.state == State::Done,
        })
    }

    /// Moves past one byte of framing (anything but chunk data).
    fn step(&mut self, byte: u8) -> Result<State, ChunkedError> {
        use State::*;
        // One place for the rule every line obeys: LF only right after CR (RFC 9112 §2.2).
        if byte == b'\n' && !self.state.expects_lf() {
            return Err(ChunkedError::Malformed("bare LF"));
        }
        if self.state.is_metadata() {
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

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 64;

    /// Decodes `input` in one call, then split at every offset (the first part, then the rest),
    /// then byte by byte: each must consume exactly up to the end of the body and give `payload`.
    /// `input` may carry bytes after the body; they must stay unconsumed.
    fn decode(input: &[u8], payload: &[u8]) -> usize {
        let mut out = Vec::new();
        let whole = ChunkedDecoder::new(MAX)
            .decode(input, &mut out)
            .unwrap_or_else(|e| panic!("{e:?} for {:?}", String::from_utf8_lossy(input)));
        assert!(whole.done, "{:?}", String::from_utf8_lossy(input));
        assert_eq!(out, payload);
        let end = whole.consumed;

        for split in 0..=end {
            let mut decoder = ChunkedDecoder::new(MAX);
            let mut out = Vec::new();
            let first = decoder.decode(&input[..split], &mut out).unwrap();
            assert_eq!(first.consumed, split, "first part of split at {split}");
            assert_eq!(first.done, split == end, "split at {split}");
            let rest = decoder.decode(&input[split..], &mut out).unwrap();
            assert_eq!(split + rest.consumed, end, "split at {split}");
            assert!(rest.done, "split at {split}");
            assert_eq!(out, payload, "split at {split}");
        }

        let mut decoder = ChunkedDecoder::new(MAX);
        let mut out = Vec::new();
        let mut consumed = 0;
        for byte in input.chunks(1) {
            consumed += decoder.decode(byte, &mut out).unwrap().consumed;
        }
        assert_eq!((consumed, out.as_slice()), (end, payload));
        end
    }

    /// Decodes `input` whole and byte by byte, expecting `why` both ways.
    fn decode_err_with(input: &[u8], max_body: usize, why: ChunkedError) {
        let what = String::from_utf8_lossy(&input[..input.len().min(80)]);
        let whole = ChunkedDecoder::new(max_body).decode(input, &mut Vec::new());
        assert_eq!(whole, Err(why), "{what:?}");
        let mut decoder = ChunkedDecoder::new(max_body);
        let error = input
            .chunks(1)
            .find_map(|byte| decoder.decode(byte, &mut Vec::new()).err());
        assert_eq!(error, Some(why), "byte by byte: {what:?}");
    }

    fn decode_err(input: &[u8], why: &'static str) {
        decode_err_with(input, MAX, ChunkedError::Malformed(why));
    }

    #[test]
    fn decodes_valid_bodies() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
            (b"A\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\n", b"0123456789"),
            (b"00000005\r\nhello\r\n000\r\n\r\n", b"hello"),
            (b"0000000000000005\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"3\r\n\r\n\0\r\n0\r\n\r\n", b"\r\n\0"),
            // Extensions (RFC 9112 §7.1.1).
            (b"5;ext\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a=b;c=\"d e\"\r\nhello\r\n0;last\r\n\r\n", b"hello"),
            (b"5 ;a\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5\t; a = b ;c\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a=\"q\\\"uo\\\\te\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a=\"\"\r\nhello\r\n0\r\n\r\n", b"hello"),
            (b"5;a=\"x\" ;b\r\nhello\r\n0\r\n\r\n", b"hello"),
            (
                b"5;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nhello\r\n0\r\n\r\n",
                b"hello",
            ),
            // Trailers, parsed and discarded.
            (b"5\r\nhello\r\n0\r\nX-Sum: 1\r\n\r\n", b"hello"),
            (b"0\r\nA: 1\r\nB:\r\nC: x \t y\r\n\r\n", b""),
        ];
        for &(input, payload) in cases {
            assert_eq!(decode(input, payload), input.len());
        }
    }

    #[test]
    fn stops_right_after_the_final_crlf() {
        let body = b"5\r\nhello\r\n0\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"POST / HTTP/1.1\r\n");
        assert_eq!(decode(&input, b"hello"), body.len());

        let mut decoder = ChunkedDecoder::new(MAX);
        decoder.decode(body, &mut Vec::new()).unwrap();
        assert_eq!(
            decoder.decode(b"more", &mut Vec::new()),
            Ok(Decoded {
                consumed: 0,
                done: true
            })
        );
    }

    #[test]
    fn rejects_malformed_sizes() {
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "missing chunk size"),
            (b";a\r\n", "missing chunk size"),
            (b" 5\r\nhello\r\n0\r\n\r\n", "missing chunk size"),
            (b"-5\r\n", "missing chunk size"),
            (b"+5\r\n", "missing chunk size"),
            (b"0x5\r\n", "invalid chunk size"),
            (b"5g\r\n", "invalid chunk size"),
            (b"5,\r\n", "invalid chunk size"),
            (b"5\0\r\n", "invalid chunk size"),
            (b"5 \r\nhello\r\n0\r\n\r\n", "whitespace after chunk size"),
            (b"5 5\r\n", "whitespace after chunk size"),
            (b"00000000000000005\r\n", "chunk size too long"),
            (b"5\rhello", "bare CR after chunk size"),
        ];
        for &(input, why) in cases {
            decode_err(input, why);
        }
    }

    #[test]
    fn rejects_bare_lf_everywhere() {
        for input in [
            &b"5\nhello\r\n0\r\n\r\n"[..],
            b"5;a\nhello\r\n0\r\n\r\n",
            b"5;a=b\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"5\r\nhello\r\n0\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"0\r\nA: 1\n\r\n",
            b"\n",
        ] {
            decode_err(input, "bare LF");
        }
    }

    #[test]
    fn rejects_malformed_extensions() {
        let cases: &[(&[u8], &str)] = &[
            (b"5;\r\n", "invalid chunk extension name"),
            (b"5; \r\n", "invalid chunk extension name"),
            (b"5;;a\r\n", "invalid chunk extension name"),
            (b"5;=b\r\n", "invalid chunk extension name"),
            (b"5;a b\r\n", "whitespace after chunk extension name"),
            (b"5;a \r\n", "whitespace after chunk extension name"),
            (b"5;a@\r\n", "invalid chunk extension name"),
            (b"5;a=\r\n", "invalid chunk extension value"),
            (b"5;a==b\r\n", "invalid chunk extension value"),
            (b"5;a=b=c\r\n", "invalid chunk extension value"),
            (b"5;a=b@\r\n", "invalid chunk extension value"),
            (b"5;a=\"b\"c\r\n", "invalid chunk extension value"),
            (b"5;a=b \r\n", "whitespace after chunk extension value"),
            (b"5;a=b c\r\n", "whitespace after chunk extension value"),
            (b"5;a=\"b\r\n", "invalid byte in quoted chunk extension"),
            (b"5;a=\"b\0\"\r\n", "invalid byte in quoted chunk extension"),
            (b"5;a=\"b\\\r\n", "invalid quoted-pair in chunk extension"),
        ];
        for &(input, why) in cases {
            decode_err(input, why);
        }
    }

    #[test]
    fn rejects_missing_crlf_after_data() {
        let cases: &[(&[u8], &str)] = &[
            (b"5\r\nhelloX\r\n0\r\n\r\n", "missing CRLF after chunk data"),
            (b"5\r\nhello\rX0\r\n\r\n", "missing CRLF after chunk data"),
            (
                b"5\r\nhello world\r\n0\r\n\r\n",
                "missing CRLF after chunk data",
            ),
            (b"5\r\nhello0\r\n\r\n", "missing CRLF after chunk data"),
        ];
        for &(input, why) in cases {
            decode_err(input, why);
        }
    }

    #[test]
    fn rejects_malformed_trailers() {
        let cases: &[(&[u8], &str)] = &[
            (b"0\r\n X: 1\r\n\r\n", "invalid trailer field"),
            (b"0\r\nA: 1\r\n\tcontinued\r\n\r\n", "invalid trailer field"),
            (b"0\r\n: 1\r\n\r\n", "invalid trailer field"),
            (b"0\r\nA : 1\r\n\r\n", "invalid trailer field name"),
            (b"0\r\nA\r\n\r\n", "invalid trailer field name"),
            (
                b"0\r\nA: 1\0\r\n\r\n",
                "invalid byte in trailer field value",
            ),
            (
                b"0\r\nA: 1\x7f\r\n\r\n",
                "invalid byte in trailer field value",
            ),
            (b"0\r\nA: 1\rX\r\n\r\n", "bare CR in trailer"),
            (b"0\r\n\rX", "bare CR after the last chunk"),
            (b"0\r\nGET / HTTP/1.1\r\n\r\n", "invalid trailer field name"),
        ];
        for &(input, why) in cases {
            decode_err(input, why);
        }
    }

    #[test]
    fn body_limit_counts_payload_and_allows_exactly_max() {
        let exact = [b'x'; MAX];
        let mut input = Vec::new();
        encode_chunked(&exact, 10, &mut input);
        decode(&input, &exact);

        input.clear();
        encode_chunked(&[b'x'; MAX + 1], 10, &mut input);
        decode_err_with(&input, MAX, ChunkedError::BodyTooLarge);
        // Refused when announced, before the data arrives.
        decode_err_with(b"41\r\n", MAX, ChunkedError::BodyTooLarge);
        decode_err_with(b"ffffffffffffffff\r\n", MAX, ChunkedError::BodyTooLarge);
        decode_err_with(
            b"1\r\nx\r\nffffffffffffffff\r\n",
            usize::MAX,
            ChunkedError::BodyTooLarge,
        );
        assert_eq!(ChunkedError::BodyTooLarge.status(), 413);
        assert_eq!(ChunkedError::Malformed("bare LF").status(), 400);
    }

    #[test]
    fn extensions_and_trailers_are_capped() {
        let mut input = b"1".to_vec();
        for _ in 0..=MAX_CHUNK_METADATA / 2 {
            input.extend_from_slice(b";a");
        }
        decode_err(&input, "chunk extensions and trailers too long");

        let mut input = b"1".to_vec();
        input.resize(MAX_CHUNK_METADATA + 16, b' ');
        decode_err(&input, "chunk extensions and trailers too long");

        let mut input = b"0\r\n".to_vec();
        while input.len() < MAX_CHUNK_METADATA + 16 {
            input.extend_from_slice(b"X-Pad: padding\r\n");
        }
        decode_err(&input, "chunk extensions and trailers too long");
    }

    #[test]
    fn encode_chunked_writes_hex_sizes() {
        let cases: &[(&[u8], usize, &[u8])] = &[
            (b"", 4, b"0\r\n\r\n"),
            (b"hello", 5, b"5\r\nhello\r\n0\r\n\r\n"),
            (b"hello", 2, b"2\r\nhe\r\n2\r\nll\r\n1\r\no\r\n0\r\n\r\n"),
            (b"hello", 100, b"5\r\nhello\r\n0\r\n\r\n"),
        ];
        for &(body, chunk_size, expected) in cases {
            let mut out = b"prefix:".to_vec();
            encode_chunked(body, chunk_size, &mut out);
            assert_eq!(&out[7..], expected);
        }
        let mut out = Vec::new();
        encode_chunked(&[b'z'; 0x1ab], 0x1ab, &mut out);
        assert!(out.starts_with(b"1ab\r\nzz"));
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let body: Vec<u8> = (0..=255).collect();
        for chunk_size in [1, 2, 7, 16, 255, 256, 1000] {
            let mut encoded = Vec::new();
            encode_chunked(&body, chunk_size, &mut encoded);
            let mut out = Vec::new();
            let decoded = ChunkedDecoder::new(body.len())
                .decode(&encoded, &mut out)
                .unwrap();
            assert_eq!(
                decoded,
                Decoded {
                    consumed: encoded.len(),
                    done: true
                }
            );
            assert_eq!(out, body, "chunk size {chunk_size}");
        }
    }
}

//! The chunked transfer coding (`http1::chunked::ChunkedDecoder`) and the body decoder both roles
//! use (`http1::body::BodyDecoder`).
//!
//! The input is a body as a peer sends it, perhaps followed by the next message. Asserted:
//! - Every way of feeding it gives one outcome (payload, bytes consumed, done, or the same error):
//!   `ChunkedDecoder::decode` whole, split at every offset, in random reads and byte by byte;
//!   `BodyDecoder::decode` step by step; `BodyDecoder::decode_in_place` behind a head, whole and
//!   in random reads (which must also leave the head alone and what follows the body in place).
//! - A reference decoder written here from RFC 9112 §7.1 agrees: same payload and end for a valid
//!   body, "need more" for an incomplete one, an error (of the same kind) for anything else.
//! - Limits: the payload never exceeds `max_body`; a valid body passes with limits equal to its
//!   payload and wire size and fails one byte under either.
//! - `encode_chunked` of the input decodes back to it; `Length` framing takes exactly its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitter_fuzz::{is_tchar, read_plans, split_points, Rng};
use splitter_user::http1::body::{BodyDecoder, BodyError, BodyLimit, Framing};
use splitter_user::http1::chunked::{encode_chunked, ChunkedDecoder, ChunkedError};
use splitter_user::http1::limits::MAX_CHUNK_METADATA;

/// What decoding a whole input came to.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// The body ended after `consumed` bytes.
    Done {
        payload: Vec<u8>,
        consumed: usize,
    },
    /// The input ended inside the body; `payload` is what was decoded of it.
    Incomplete {
        payload: Vec<u8>,
    },
    Failed(ChunkedError),
}

fuzz_target!(|input: &[u8]| {
    let mut rng = Rng::new(input, 2);
    // Mostly unlimited, sometimes small limits, so that BodyTooLarge is met on every path.
    let max_body = [usize::MAX, usize::MAX, 0, 1, 7, 64, 4096][rng.below(7)];
    let whole = chunked_whole(input, max_body);
    if let Outcome::Done { payload, .. } | Outcome::Incomplete { payload } = &whole {
        assert!(payload.len() <= max_body, "payload over the limit");
    }

    for split in split_points(input.len(), &mut rng, &[]) {
        assert_eq!(
            chunked_reads(input, &[split], max_body),
            whole,
            "split at {split}"
        );
    }
    for plan in read_plans(input.len(), &mut rng) {
        assert_eq!(
            chunked_reads(input, &plan, max_body),
            whole,
            "reads ending at {plan:?}"
        );
        let head_len = rng.below(8);
        assert_eq!(
            in_place(input, &plan, head_len, BodyLimit::decoded(max_body)),
            Ok(whole.clone())
        );
    }
    assert_eq!(
        in_place(input, &[], 4, BodyLimit::decoded(max_body)),
        Ok(whole.clone())
    );
    assert_eq!(body_steps(input, max_body), whole);

    // The reference reads extensions and trailers without the product's cap on their size:
    // compared only where that cap cannot be reached.
    if input.len() <= MAX_CHUNK_METADATA {
        let expected = reference(input, max_body);
        match (&whole, &expected) {
            (Outcome::Failed(got), Outcome::Failed(want)) => {
                assert_eq!(
                    kind(got),
                    kind(want),
                    "{got:?} where the reference says {want:?}"
                )
            }
            _ => assert_eq!(whole, expected, "against the reference decoder"),
        }
    }

    if let Outcome::Done { payload, consumed } = &whole {
        check_exact_limits(input, payload, *consumed, &mut rng);
    }
    check_round_trip(input, &mut rng);
    check_length_framing(input, &mut rng);
});

fn kind(error: &ChunkedError) -> &'static str {
    match error {
        ChunkedError::Malformed(_) => "malformed",
        ChunkedError::BodyTooLarge => "too large",
    }
}

fn chunked_whole(input: &[u8], max_body: usize) -> Outcome {
    chunked_reads(input, &[], max_body)
}

/// `ChunkedDecoder::decode`, fed `input` in reads ending at `cuts`.
fn chunked_reads(input: &[u8], cuts: &[usize], max_body: usize) -> Outcome {
    let mut decoder = ChunkedDecoder::new(max_body);
    let mut payload = Vec::new();
    let mut fed = 0;
    for cut in cuts.iter().copied().chain([input.len()]) {
        let read = &input[fed..cut];
        match decoder.decode(read, &mut payload) {
            Err(error) => return Outcome::Failed(error),
            Ok(step) if step.done => {
                assert!(decoder.is_done());
                let consumed = fed + step.consumed;
                // Done means done: nothing more is consumed, whatever follows.
                let after = decoder.decode(&input[consumed..], &mut payload).unwrap();
                assert_eq!((after.consumed, after.done), (0, true));
                return Outcome::Done { payload, consumed };
            }
            Ok(step) => {
                assert_eq!(
                    step.consumed,
                    read.len(),
                    "not done, yet input left unconsumed"
                );
                assert!(!decoder.is_done());
            }
        }
        fed = cut;
    }
    Outcome::Incomplete { payload }
}

/// `BodyDecoder::decode`, step by step on the whole input, collecting each run of payload.
fn body_steps(input: &[u8], max_body: usize) -> Outcome {
    let mut decoder = BodyDecoder::new(Framing::Chunked, BodyLimit::decoded(max_body)).unwrap();
    let mut payload = Vec::new();
    let mut pos = 0;
    loop {
        let step = match decoder.decode(&input[pos..]) {
            Ok(step) => step,
            Err(BodyError::Chunked(error)) => return Outcome::Failed(error),
            Err(other) => panic!("{other:?} from a decoder limited by max_body alone"),
        };
        assert!(step.data.start <= step.data.end && step.data.end <= step.consumed);
        payload.extend_from_slice(&input[pos..][step.data]);
        pos += step.consumed;
        if step.done {
            assert!(decoder.is_done() && decoder.close().is_ok());
            return Outcome::Done {
                payload,
                consumed: pos,
            };
        }
        if pos == input.len() {
            assert_eq!(decoder.close(), Err(BodyError::Truncated(payload.len())));
            return Outcome::Incomplete { payload };
        }
        // Each call moves on: no call may consume nothing before the end.
        assert!(step.consumed > 0, "no progress at {pos}");
    }
}

/// `BodyDecoder::decode_in_place` behind a head of `head_len` bytes, fed in reads ending at
/// `cuts`. The head must stay, the payload land right behind it, and what follows the body stay
/// in the buffer after it.
fn in_place(
    input: &[u8],
    cuts: &[usize],
    head_len: usize,
    limit: BodyLimit,
) -> Result<Outcome, BodyError> {
    let mut decoder = BodyDecoder::new(Framing::Chunked, limit)?;
    let mut buf = vec![b'H'; head_len];
    let mut body_end = head_len;
    let mut fed = 0;
    for cut in cuts.iter().copied().chain([input.len()]) {
        buf.extend_from_slice(&input[fed..cut]);
        fed = cut;
        let done = match decoder.decode_in_place(&mut buf, &mut body_end) {
            Ok(done) => done,
            Err(BodyError::Chunked(error)) => return Ok(Outcome::Failed(error)),
            Err(error) => return Err(error),
        };
        assert!(
            buf[..head_len].iter().all(|&b| b == b'H'),
            "head overwritten"
        );
        if done {
            let rest = &buf[body_end..];
            let consumed = fed - rest.len();
            assert_eq!(
                rest,
                &input[consumed..fed],
                "bytes after the body moved or lost"
            );
            return Ok(Outcome::Done {
                payload: buf[head_len..body_end].to_vec(),
                consumed,
            });
        }
        assert_eq!(
            body_end,
            buf.len(),
            "framing left in the buffer before the end"
        );
    }
    Ok(Outcome::Incomplete {
        payload: buf[head_len..].to_vec(),
    })
}

/// A valid body passes with limits equal to its payload and wire sizes, and fails one under.
fn check_exact_limits(input: &[u8], payload: &[u8], consumed: usize, rng: &mut Rng) {
    let plan = read_plans(input.len(), rng).pop().unwrap();
    let exact = BodyLimit {
        decoded: payload.len(),
        wire: consumed,
    };
    let done = Outcome::Done {
        payload: payload.to_vec(),
        consumed,
    };
    assert_eq!(
        in_place(input, &plan, 2, exact),
        Ok(done.clone()),
        "at exact limits"
    );
    assert_eq!(chunked_reads(input, &plan, payload.len()), done);
    let wire_under = BodyLimit {
        wire: consumed - 1,
        ..exact
    };
    assert_eq!(
        in_place(input, &plan, 2, wire_under),
        Err(BodyError::TooLarge),
        "wire limit"
    );
    if let Some(under) = payload.len().checked_sub(1) {
        let expected = Outcome::Failed(ChunkedError::BodyTooLarge);
        assert_eq!(
            chunked_reads(input, &plan, under),
            expected,
            "payload limit"
        );
        let limit = BodyLimit::decoded(under);
        assert_eq!(in_place(input, &plan, 2, limit), Ok(expected));
    }
}

/// `encode_chunked` of the input (as a payload) decodes back to it, in any chunk size.
fn check_round_trip(input: &[u8], rng: &mut Rng) {
    let chunk_size = 1 + rng.below(input.len().max(1) + 2);
    let mut encoded = b"left alone".to_vec();
    encode_chunked(input, chunk_size, &mut encoded);
    let encoded = &encoded[10..];
    let done = Outcome::Done {
        payload: input.to_vec(),
        consumed: encoded.len(),
    };
    assert_eq!(
        chunked_whole(encoded, input.len()),
        done,
        "chunk size {chunk_size}"
    );
    let plan = read_plans(encoded.len(), rng).pop().unwrap();
    assert_eq!(
        in_place(encoded, &plan, 1, BodyLimit::decoded(input.len())),
        Ok(done)
    );
}

/// `Length(n)` framing takes exactly n bytes, leaves the rest, and is refused over the limit.
fn check_length_framing(input: &[u8], rng: &mut Rng) {
    let n = rng.below(input.len() + 8);
    let limit = BodyLimit::decoded(n);
    let over = BodyLimit::decoded(n.wrapping_sub(1));
    if n > 0 {
        assert_eq!(
            BodyDecoder::new(Framing::Length(n), over).err(),
            Some(BodyError::TooLarge)
        );
    }
    let mut decoder = BodyDecoder::new(Framing::Length(n), limit).unwrap();
    let mut buf = b"HEAD".to_vec();
    buf.extend_from_slice(input);
    let mut end = 4;
    let done = decoder.decode_in_place(&mut buf, &mut end).unwrap();
    assert_eq!(done, n <= input.len());
    assert_eq!(&buf[4..end], &input[..n.min(input.len())]);
    assert_eq!(&buf[end..], &input[n.min(input.len())..]);
    let closed = decoder.close();
    if done {
        assert_eq!(closed, Ok(()));
    } else {
        assert_eq!(closed, Err(BodyError::Truncated(input.len())));
    }
}

/// Why the reference decoder stopped.
enum Stop {
    /// The input ended.
    More,
    Malformed,
    TooLarge,
}

/// A chunked decoder written from the grammar, not from the product's state machine:
///
/// ```text
/// chunked-body = *chunk last-chunk trailer-section CRLF
/// chunk        = 1*16HEXDIG *( *WS ";" *WS token [ *WS "=" *WS ( token / quoted-string ) ] ) CRLF
///                chunk-data CRLF                  ; a size of 0 is the last chunk
/// trailer      = token ":" *( HTAB / SP / VCHAR / obs-text ) CRLF
/// ```
///
/// with the splitter's strictness: whitespace may only come before `;`, `=` or a name or value,
/// never before the CRLF; and the sum of the sizes may not exceed `max_body`, checked as each
/// size line ends.
fn reference(input: &[u8], max_body: usize) -> Outcome {
    let mut payload = Vec::new();
    let mut p = Cursor { input, pos: 0 };
    match p.body(max_body, &mut payload) {
        Ok(()) => Outcome::Done {
            payload,
            consumed: p.pos,
        },
        Err(Stop::More) => Outcome::Incomplete { payload },
        Err(Stop::Malformed) => Outcome::Failed(ChunkedError::Malformed("")),
        Err(Stop::TooLarge) => Outcome::Failed(ChunkedError::BodyTooLarge),
    }
}

struct Cursor<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, Stop> {
        self.input.get(self.pos).copied().ok_or(Stop::More)
    }

    fn take(&mut self, wanted: u8) -> Result<(), Stop> {
        if self.peek()? != wanted {
            return Err(Stop::Malformed);
        }
        self.pos += 1;
        Ok(())
    }

    /// Skips SP and HTAB; whether there were any.
    fn ws(&mut self) -> Result<bool, Stop> {
        let start = self.pos;
        while matches!(self.peek()?, b' ' | b'\t') {
            self.pos += 1;
        }
        Ok(self.pos > start)
    }

    fn token(&mut self) -> Result<(), Stop> {
        if !is_tchar(self.peek()?) {
            return Err(Stop::Malformed);
        }
        while is_tchar(self.peek()?) {
            self.pos += 1;
        }
        Ok(())
    }

    fn quoted_string(&mut self) -> Result<(), Stop> {
        self.take(b'"')?;
        loop {
            let byte = self.peek()?;
            self.pos += 1;
            let text = |b: u8| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80;
            match byte {
                b'"' => return Ok(()),
                b'\\' if text(self.peek()?) => self.pos += 1,
                _ if text(byte) && byte != b'\\' => {}
                _ => return Err(Stop::Malformed),
            }
        }
    }

    fn crlf(&mut self) -> Result<(), Stop> {
        self.take(b'\r')?;
        self.take(b'\n')
    }

    fn body(&mut self, max_body: usize, payload: &mut Vec<u8>) -> Result<(), Stop> {
        let mut total: usize = 0;
        loop {
            let mut size: usize = 0;
            let mut digits = 0;
            while let Some(digit) = char::from(self.peek()?).to_digit(16) {
                self.pos += 1;
                digits += 1;
                if digits > 16 {
                    return Err(Stop::Malformed);
                }
                size = size * 16 + digit as usize;
            }
            if digits == 0 {
                return Err(Stop::Malformed);
            }
            // Extensions: whitespace is only allowed where something other than CRLF follows.
            let mut pending_ws = false;
            loop {
                pending_ws |= self.ws()?;
                match self.peek()? {
                    b'\r' if !pending_ws => break,
                    b';' => self.pos += 1,
                    _ => return Err(Stop::Malformed),
                }
                self.ws()?;
                self.token()?;
                pending_ws = self.ws()?;
                if self.peek()? == b'=' {
                    self.pos += 1;
                    self.ws()?;
                    if self.peek()? == b'"' {
                        self.quoted_string()?;
                    } else {
                        self.token()?;
                    }
                    pending_ws = false;
                }
            }
            self.crlf()?;
            if size == 0 {
                break;
            }
            total = total.checked_add(size).ok_or(Stop::TooLarge)?;
            if total > max_body {
                return Err(Stop::TooLarge);
            }
            for _ in 0..size {
                payload.push(self.peek()?);
                self.pos += 1;
            }
            self.crlf()?;
        }
        // Trailer fields, then the final CRLF.
        while self.peek()? != b'\r' {
            self.token()?;
            self.take(b':')?;
            while matches!(self.peek()?, b'\t' | b' '..=0x7e | 0x80..=0xff) {
                self.pos += 1;
            }
            self.crlf()?;
        }
        self.crlf()
    }
}

//! Message bodies, for both roles: how a body is delimited ([`Framing`]) and one decoder for every
//! way ([`BodyDecoder`]), used on client requests and on backend responses alike.
//!
//! The decoder never allocates and copies only where it is asked to: [`BodyDecoder::decode`]
//! reports where the payload lies in its input, and [`BodyDecoder::decode_in_place`] moves it down
//! over the chunk framing so a whole message, head and de-chunked body, stays in one buffer. Every
//! byte is looked at once: the work is linear in what the peer sent, however it was cut into
//! chunks or reads.

use std::ops::Range;

use super::chunked::{ChunkedDecoder, ChunkedError};

/// How a body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Exactly this many bytes; `Length(0)` when there is no body (and for responses that have
    /// none whatever their fields say: to `HEAD`, `204`, `304`).
    Length(usize),
    /// The chunked transfer coding.
    Chunked,
    /// A response with neither `Content-Length` nor `Transfer-Encoding`: the body ends when the
    /// peer closes. Never a request's.
    UntilClose,
}

/// Most bytes a body may cost: `decoded` counts the payload, `wire` everything consumed for it,
/// chunk sizes, extensions, trailers and CRLFs included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimit {
    /// Most payload bytes.
    pub decoded: usize,
    /// Most bytes on the wire.
    pub wire: usize,
}

impl BodyLimit {
    /// A limit on the payload only; the wire is then bounded by the chunked coding's own limits
    /// (size digits, extension and trailer bytes).
    pub fn decoded(max: usize) -> Self {
        BodyLimit {
            decoded: max,
            wire: usize::MAX,
        }
    }
}

/// Why a body cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// The chunked coding is broken, or announces a payload over the limit.
    #[error(transparent)]
    Chunked(#[from] ChunkedError),
    /// The payload, or the bytes on the wire, would exceed the [`BodyLimit`].
    #[error("body over the size limit")]
    TooLarge,
    /// The peer closed before the body was complete.
    #[error("connection closed {0} bytes into the body")]
    Truncated(usize),
}

impl BodyError {
    /// The status for a client whose request body this is: 413 when too large, else 400.
    pub fn status(&self) -> u16 {
        match self {
            BodyError::Chunked(e) => e.status(),
            BodyError::TooLarge => 413,
            BodyError::Truncated(_) => 400,
        }
    }
}

/// Progress of one [`BodyDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Input bytes consumed, `data` included. None after the end of the body: what follows it (a
    /// pipelined request, say) stays with the caller.
    pub consumed: usize,
    /// Where the run of payload found lies in the input; may be empty.
    pub data: Range<usize>,
    /// Whether the body is complete.
    pub done: bool,
}

/// Reads one body, fed whatever bytes arrived.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    coding: Coding,
    limit: BodyLimit,
    /// Payload bytes so far.
    decoded: usize,
    /// Bytes consumed so far.
    wire: usize,
}

#[derive(Debug, Clone)]
enum Coding {
    /// This many payload bytes still to come.
    Length(usize),
    Chunked(ChunkedDecoder),
    /// Everything until the peer closes; `true` once it has.
    UntilClose(bool),
}

impl BodyDecoder {
    /// A decoder for a body delimited by `framing`. A `Length` over the limit is refused at once,
    /// before any of it is read.
    pub fn new(framing: Framing, limit: BodyLimit) -> Result<Self, BodyError> {
        let coding = match framing {
            Framing::Length(n) if n > limit.decoded || n > limit.wire => {
                return Err(BodyError::TooLarge)
            }
            Framing::Length(n) => Coding::Length(n),
            Framing::Chunked => Coding::Chunked(ChunkedDecoder::new(limit.decoded)),
            Framing::UntilClose => Coding::UntilClose(false),
        };
        Ok(BodyDecoder {
            coding,
            limit,
            decoded: 0,
            wire: 0,
        })
    }

    /// Whether the whole body has been read.
    pub fn is_done(&self) -> bool {
        match &self.coding {
            Coding::Length(remaining) => *remaining == 0,
            Coding::Chunked(chunked) => chunked.is_done(),
            Coding::UntilClose(closed) => *closed,
        }
    }

    /// Payload bytes read so far.
    #[cfg(test)]
    fn decoded(&self) -> usize {
        self.decoded
    }

    /// Consumes from `input` up to and including one run of payload, and says where that run
    /// lies in `input`. Call again with what follows until `done`. After an error the stream
    /// cannot be trusted: close it.
    pub fn decode(&mut self, input: &[u8]) -> Result<Step, BodyError> {
        let step = match &mut self.coding {
            Coding::Length(remaining) => {
                let n = (*remaining).min(input.len());
                *remaining -= n;
                Step {
                    consumed: n,
                    data: 0..n,
                    done: *remaining == 0,
                }
            }
            Coding::Chunked(chunked) => {
                let run = chunked.decode_run(input)?;
                Step {
                    consumed: run.consumed,
                    data: run.data,
                    done: run.done,
                }
            }
            Coding::UntilClose(closed) => Step {
                consumed: input.len(),
                data: 0..input.len(),
                done: *closed,
            },
        };
        self.decoded += step.data.len();
        self.wire += step.consumed;
        if self.decoded > self.limit.decoded || self.wire > self.limit.wire {
            return Err(BodyError::TooLarge);
        }
        Ok(step)
    }

    /// Decodes what `buf` holds past `*body_end`, where the body decoded so far ends: payload is
    /// moved down to `*body_end` (which advances), framing is dropped, and bytes after the end of
    /// the body move down behind it. So `buf[..*body_end]` is always the head followed by the
    /// payload so far, and `buf[*body_end..]` what is left to decode (empty until `done`).
    /// Returns whether the body is complete.
    pub fn decode_in_place(
        &mut self,
        buf: &mut Vec<u8>,
        body_end: &mut usize,
    ) -> Result<bool, BodyError> {
        let mut pos = *body_end;
        let done = loop {
            let step = self.decode(&buf[pos..])?;
            let data = pos + step.data.start..pos + step.data.end;
            if data.start != *body_end {
                buf.copy_within(data.clone(), *body_end);
            }
            *body_end += data.len();
            pos += step.consumed;
            if step.done || pos == buf.len() {
                break step.done;
            }
        };
        buf.drain(*body_end..pos);
        Ok(done)
    }

    /// The peer closed the stream: the end of an `UntilClose` body, an error for any other one
    /// that is not complete.
    pub fn close(&mut self) -> Result<(), BodyError> {
        if let Coding::UntilClose(closed) = &mut self.coding {
            *closed = true;
        }
        if self.is_done() {
            Ok(())
        } else {
            Err(BodyError::Truncated(self.decoded))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: BodyLimit = BodyLimit {
        decoded: 64,
        wire: 256,
    };

    /// Feeds `input` cut after every offset in `cuts` (one read each), decoding in place behind a
    /// 4-byte head; returns the buffer's payload and what is left after the body, or the error.
    fn in_place(
        framing: Framing,
        input: &[u8],
        cuts: &[usize],
        close: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let mut decoder = BodyDecoder::new(framing, LIMIT)?;
        let mut buf = b"HEAD".to_vec();
        let mut end = buf.len();
        let mut fed = 0;
        let mut done = false;
        for &cut in cuts.iter().chain([input.len()].iter()) {
            buf.extend_from_slice(&input[fed..cut.max(fed)]);
            fed = cut.max(fed);
            done = decoder.decode_in_place(&mut buf, &mut end)?;
            if done {
                break;
            }
        }
        if !done {
            assert!(close, "body not complete and no close");
            decoder.close()?;
        }
        assert!(buf.starts_with(b"HEAD"));
        buf.extend_from_slice(&input[fed..]);
        assert_eq!(decoder.decoded(), end - 4);
        Ok((buf[4..end].to_vec(), buf[end..].to_vec()))
    }

    /// The same result whole, split at every offset, and byte by byte.
    fn every_split(
        framing: Framing,
        input: &[u8],
        close: bool,
    ) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        let whole = in_place(framing, input, &[], close);
        for split in 0..=input.len() {
            assert_eq!(
                in_place(framing, input, &[split], close),
                whole,
                "split at {split}"
            );
        }
        let bytes: Vec<usize> = (0..=input.len()).collect();
        assert_eq!(
            in_place(framing, input, &bytes, close),
            whole,
            "byte by byte"
        );
        whole
    }

    fn ok(payload: &[u8], rest: &[u8]) -> Result<(Vec<u8>, Vec<u8>), BodyError> {
        Ok((payload.to_vec(), rest.to_vec()))
    }

    #[test]
    fn length_bodies_stay_where_they_are_and_leave_what_follows() {
        assert_eq!(
            every_split(Framing::Length(5), b"helloGET /", false),
            ok(b"hello", b"GET /")
        );
        assert_eq!(
            every_split(Framing::Length(0), b"next", false),
            ok(b"", b"next")
        );
        assert_eq!(
            every_split(Framing::Length(64), &[b'x'; 64], false),
            ok(&[b'x'; 64], b"")
        );
    }

    #[test]
    fn chunked_bodies_are_decoded_in_place() {
        assert_eq!(
            every_split(
                Framing::Chunked,
                b"5\r\nhello\r\n1;x=y\r\n \r\n5\r\nworld\r\n0\r\nT: 1\r\n\r\nnext",
                false
            ),
            ok(b"hello world", b"next")
        );
        let mut one_byte_chunks = Vec::new();
        for b in b"abcdefgh" {
            one_byte_chunks.extend_from_slice(b"1\r\n");
            one_byte_chunks.push(*b);
            one_byte_chunks.extend_from_slice(b"\r\n");
        }
        one_byte_chunks.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            every_split(Framing::Chunked, &one_byte_chunks, false),
            ok(b"abcdefgh", b"")
        );
    }

    #[test]
    fn until_close_bodies_end_with_the_stream() {
        assert_eq!(
            every_split(Framing::UntilClose, b"all of it", true),
            ok(b"all of it", b"")
        );
        assert_eq!(every_split(Framing::UntilClose, b"", true), ok(b"", b""));
    }

    #[test]
    fn a_close_before_the_end_is_truncation() {
        assert_eq!(
            in_place(Framing::Length(5), b"hel", &[], true),
            Err(BodyError::Truncated(3))
        );
        assert_eq!(
            in_place(Framing::Chunked, b"5\r\nhello\r\n", &[], true),
            Err(BodyError::Truncated(5))
        );
    }

    #[test]
    fn payload_and_wire_are_both_bounded() {
        assert_eq!(
            BodyDecoder::new(Framing::Length(65), LIMIT).err(),
            Some(BodyError::TooLarge)
        );
        assert_eq!(
            in_place(Framing::UntilClose, &[b'x'; 65], &[], true),
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            in_place(Framing::Chunked, b"41\r\n", &[], true),
            Err(BodyError::Chunked(ChunkedError::BodyTooLarge))
        );
        // 60 payload bytes in 1-byte chunks cost 6 wire bytes each: over 256 long before 64.
        let mut tiny = Vec::new();
        for _ in 0..60 {
            tiny.extend_from_slice(b"1\r\nx\r\n");
        }
        assert_eq!(
            in_place(Framing::Chunked, &tiny, &[], true),
            Err(BodyError::TooLarge)
        );
    }

    #[test]
    fn errors_carry_the_client_status() {
        assert_eq!(BodyError::TooLarge.status(), 413);
        assert_eq!(BodyError::Chunked(ChunkedError::BodyTooLarge).status(), 413);
        assert_eq!(
            BodyError::Chunked(ChunkedError::Malformed("x")).status(),
            400
        );
    }
}

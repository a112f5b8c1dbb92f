//! One backend reply read to its end, sans IO: the bytes go in as they arrive, the reader says
//! whether it needs another read, and when the reply is whole, where its head and body are and
//! whether the connection may carry another exchange. Every byte counts against `max_bytes`, so a
//! sender that trickles costs at most a read per byte, and each read consumes its budget: a reply
//! that is whole in time counts however it was cut. Past the deadline, while a late reply is
//! drained, the reads are few.

use std::time::Instant;

use super::body::{BodyDecoder, BodyError, BodyLimit, Framing};
use super::limits::MAX_RESPONSE_HEAD;
use super::response::{head_may_end, parse_response, ResponseError, ResponseHead};

/// What one reply may cost besides its size.
#[derive(Clone, Copy, Debug)]
pub struct ReplyLimits {
    /// Most bytes, on the wire and decoded (`max_response_bytes`).
    pub max_bytes: usize,
    /// The backend's deadline: past it, only [`LATE_READS`] more reads.
    pub deadline: Instant,
}

/// Most reads after the deadline, while a late reply is drained to keep its connection: a
/// reply still trickling then is not worth its CPU.
pub const LATE_READS: u32 = 64;

/// Why a reply could not be read. Every one of them ends the connection.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    /// The backend closed the connection before the response head was whole.
    #[error("connection closed after {0} bytes of the response head")]
    Closed(usize),
    /// The head is not a valid HTTP/1.1 response, or too large.
    #[error("bad response head: {0}")]
    Head(#[from] ResponseError),
    /// The body is malformed, too large, or cut short.
    #[error("bad response body: {0}")]
    Body(#[from] BodyError),
    /// The reply went on for more than [`LATE_READS`] reads past its deadline.
    #[error("reply still trickling {0} reads in, past its deadline")]
    Trickle(u32),
}

/// What the reader needs next.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// More bytes: read once more, append to the buffer, and call [`ReplyReader::step`] again
    /// (or [`ReplyReader::end_of_stream`] if the backend closed).
    Read,
    /// The reply is whole, its head in the caller's slot.
    Done(Whole),
}

/// Where a whole reply is in the buffer it was read into: `buf[..head_len]` is the head as
/// received, `buf[head_len..body_end]` the body, de-chunked in place.
#[derive(Clone, Copy, Debug)]
pub struct Whole {
    pub body_end: usize,
    /// The connection may carry another exchange: keep-alive, a body with an end, and not a
    /// byte beyond it (a byte beyond is a protocol error on the backend's part).
    pub reusable: bool,
}

/// Reads one reply to a request; `head_request`: to a `HEAD`, whose reply has no body whatever
/// its fields say. The parsed head goes to a slot the caller owns.
pub struct ReplyReader {
    head_request: bool,
    limits: ReplyLimits,
    reads: u32,
    late_reads: u32,
    /// Bytes before this have been looked at for the head's end.
    scanned: usize,
    /// The body's decoder, once the head is whole.
    body: Option<BodyDecoder>,
    body_end: usize,
    /// The head allows another exchange once this one ends: keep-alive, and a body with an end.
    reusable_head: bool,
}

impl ReplyReader {
    pub fn new(head_request: bool, limits: ReplyLimits) -> ReplyReader {
        ReplyReader {
            head_request,
            limits,
            reads: 0,
            late_reads: 0,
            scanned: 0,
            body: None,
            body_end: 0,
            reusable_head: false,
        }
    }

    /// Takes what `buf` holds so far (the reply from its first byte); the head, once whole, is
    /// put in `head`; `now` is asked only when the read budget depends on the deadline.
    pub fn step(
        &mut self,
        buf: &mut Vec<u8>,
        head: &mut Option<ResponseHead>,
        now: impl FnOnce() -> Instant,
    ) -> Result<Step, ReplyError> {
        if self.body.is_none() {
            // Parse only once a blank line may have arrived: each byte is scanned once, however
            // the head is cut into reads.
            if head_may_end(buf, self.scanned) {
                *head = parse_response(buf)?;
            }
            match head {
                Some(head) => self.start_body(head)?,
                None if buf.len() > MAX_RESPONSE_HEAD.min(self.limits.max_bytes) => {
                    return Err(ResponseError::HeadTooLarge.into());
                }
                None => {
                    self.scanned = buf.len();
                    return self.one_more_read(now);
                }
            }
        }
        let body = self.body.as_mut().expect("the head is whole");
        if body.decode_in_place(buf, &mut self.body_end)? {
            return Ok(Step::Done(self.whole(buf)));
        }
        self.one_more_read(now)
    }

    /// The backend closed the connection: the reply ends here, if its framing allows.
    pub fn end_of_stream(&mut self, buf: &[u8]) -> Result<Whole, ReplyError> {
        match &mut self.body {
            None => Err(ReplyError::Closed(buf.len())),
            Some(body) => {
                body.close()?;
                Ok(self.whole(buf))
            }
        }
    }

    fn start_body(&mut self, head: &ResponseHead) -> Result<(), ReplyError> {
        let framing = match self.head_request {
            true => Framing::Length(0),
            false => head.framing,
        };
        let limit = BodyLimit {
            decoded: self.limits.max_bytes,
            wire: self.limits.max_bytes.saturating_sub(head.head_len),
        };
        self.body = Some(BodyDecoder::new(framing, limit)?);
        self.body_end = head.head_len;
        self.reusable_head = head.keep_alive && framing != Framing::UntilClose;
        Ok(())
    }

    fn whole(&self, buf: &[u8]) -> Whole {
        Whole {
            body_end: self.body_end,
            reusable: self.reusable_head && buf.len() == self.body_end,
        }
    }

    /// Counts one more read, or refuses it.
    fn one_more_read(&mut self, now: impl FnOnce() -> Instant) -> Result<Step, ReplyError> {
        self.reads = self.reads.saturating_add(1);
        // The clock is asked only once the reply is long enough to matter.
        if self.reads > 4 && now() >= self.limits.deadline {
            self.late_reads += 1;
            if self.late_reads > LATE_READS {
                return Err(ReplyError::Trickle(self.reads));
            }
        }
        Ok(Step::Read)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        5\r\n{\"a\":\r\n3\r\n12}\r\n0\r\n\r\n";
    const LENGTH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n{\"a\":12}";

    fn limits(max_bytes: usize) -> ReplyLimits {
        ReplyLimits {
            max_bytes,
            deadline: Instant::now() + Duration::from_secs(3600),
        }
    }

    /// A whole reply: its head, and where its body ends in the buffer.
    #[derive(Debug)]
    struct Read {
        head: ResponseHead,
        body_end: usize,
        reusable: bool,
    }

    /// Feeds `wire` in pieces of `piece` bytes, as reads would bring it.
    fn read(wire: &[u8], piece: usize, head_request: bool) -> (Result<Read, ReplyError>, Vec<u8>) {
        let mut reader = ReplyReader::new(head_request, limits(1 << 20));
        let mut buf = Vec::new();
        let mut head = None;
        let mut rest = wire;
        let whole = |head: Option<ResponseHead>, w: Whole| Read {
            head: head.expect("a whole reply has a head"),
            body_end: w.body_end,
            reusable: w.reusable,
        };
        loop {
            match reader.step(&mut buf, &mut head, Instant::now) {
                Err(e) => return (Err(e), buf),
                Ok(Step::Done(w)) => return (Ok(whole(head, w)), buf),
                Ok(Step::Read) if rest.is_empty() => {
                    let end = reader.end_of_stream(&buf);
                    return (end.map(|w| whole(head, w)), buf);
                }
                Ok(Step::Read) => {
                    let n = piece.min(rest.len());
                    buf.extend_from_slice(&rest[..n]);
                    rest = &rest[n..];
                }
            }
        }
    }

    #[test]
    fn a_reply_is_whole_however_it_is_cut_into_reads() {
        for wire in [LENGTH, CHUNKED] {
            for piece in 1..=wire.len() {
                let (whole, buf) = read(wire, piece, false);
                let whole = whole.unwrap();
                assert_eq!(&buf[whole.head.head_len..whole.body_end], b"{\"a\":12}");
                assert!(whole.reusable, "{piece}");
            }
        }
    }

    #[test]
    fn a_byte_beyond_the_reply_makes_the_connection_unusable() {
        let mut wire = LENGTH.to_vec();
        wire.push(b'x');
        let (whole, _) = read(&wire, wire.len(), false);
        assert!(!whole.unwrap().reusable);
    }

    #[test]
    fn a_reply_without_length_ends_with_the_stream_and_its_connection() {
        let wire = b"HTTP/1.1 200 OK\r\n\r\n{\"a\":1}";
        let (whole, buf) = read(wire, 3, false);
        let whole = whole.unwrap();
        assert_eq!(&buf[whole.head.head_len..whole.body_end], b"{\"a\":1}");
        assert!(!whole.reusable);
    }

    #[test]
    fn a_reply_to_head_has_no_body_whatever_its_fields_say() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n";
        let (whole, _) = read(wire, 5, true);
        let whole = whole.unwrap();
        assert_eq!(whole.body_end, whole.head.head_len);
        assert!(whole.reusable);
    }

    #[test]
    fn a_reply_cut_short_is_an_error_and_names_where() {
        let (e, _) = read(&LENGTH[..20], 7, false);
        assert!(matches!(e, Err(ReplyError::Closed(20))), "{e:?}");
        let (e, _) = read(&LENGTH[..LENGTH.len() - 1], 7, false);
        assert!(matches!(e, Err(ReplyError::Body(_))), "{e:?}");
        let (e, _) = read(&CHUNKED[..CHUNKED.len() - 5], 7, false);
        assert!(matches!(e, Err(ReplyError::Body(_))), "{e:?}");
    }

    #[test]
    fn a_head_over_the_limit_is_refused_before_it_ends() {
        let mut reader = ReplyReader::new(false, limits(64));
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        buf.extend_from_slice(&[b'x'; 60]);
        let e = reader.step(&mut buf, &mut None, Instant::now);
        assert!(
            matches!(e, Err(ReplyError::Head(ResponseError::HeadTooLarge))),
            "{e:?}"
        );
    }

    #[test]
    fn a_body_over_max_bytes_is_refused() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
        let mut reader = ReplyReader::new(false, limits(80));
        let mut buf = wire.to_vec();
        let e = reader.step(&mut buf, &mut None, Instant::now);
        assert!(matches!(e, Err(ReplyError::Body(_))), "{e:?}");
    }

    /// A head that never ends, a byte per read: the reads allowed, and how the last ended.
    fn trickle(limits: ReplyLimits) -> (u32, Result<Step, ReplyError>) {
        let mut reader = ReplyReader::new(false, limits);
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        let mut reads = 0;
        loop {
            match reader.step(&mut buf, &mut None, Instant::now) {
                Ok(Step::Read) => {
                    reads += 1;
                    buf.push(b'x');
                }
                other => return (reads, other),
            }
        }
    }

    #[test]
    fn a_trickle_costs_a_read_per_byte_at_most_and_counts_when_whole_in_time() {
        // Before the deadline, a head that never ends is cut by its size, not by its reads.
        let (reads, e) = trickle(limits(1 << 20));
        assert!(
            matches!(e, Err(ReplyError::Head(ResponseError::HeadTooLarge))),
            "{e:?}"
        );
        assert_eq!(reads as usize, MAX_RESPONSE_HEAD + 1 - 17);

        // A 20 KB reply a byte per read: 20,000 reads, and it is whole.
        let body = format!("{{\"price\":1,\"pad\":\"{}\"}}", "p".repeat(20_000));
        let wire = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut reader = ReplyReader::new(false, limits(1 << 20));
        let (mut buf, mut head, mut reads) = (Vec::new(), None, 0);
        let whole = loop {
            match reader.step(&mut buf, &mut head, Instant::now) {
                Ok(Step::Read) => {
                    buf.push(wire.as_bytes()[reads]);
                    reads += 1;
                }
                Ok(Step::Done(whole)) => break whole,
                Err(e) => panic!("after {reads} reads: {e}"),
            }
        };
        assert_eq!(reads, wire.len());
        assert_eq!(
            &buf[head.unwrap().head_len..whole.body_end],
            body.as_bytes()
        );

        // Past the deadline: 4 reads free, then 64 more.
        let (reads, e) = trickle(ReplyLimits {
            max_bytes: 1 << 20,
            deadline: Instant::now(),
        });
        assert!(matches!(e, Err(ReplyError::Trickle(_))), "{e:?}");
        assert_eq!(reads, 4 + LATE_READS);
    }

    #[test]
    fn the_clock_is_not_asked_for_short_replies() {
        let mut reader = ReplyReader::new(false, limits(1 << 20));
        let mut buf = Vec::new();
        let mut head = None;
        for piece in LENGTH.chunks(LENGTH.len() / 4 + 1) {
            let step = reader.step(&mut buf, &mut head, || panic!("the clock was asked"));
            assert!(matches!(step, Ok(Step::Read)), "{step:?}");
            buf.extend_from_slice(piece);
        }
        let step = reader.step(&mut buf, &mut head, || panic!("the clock was asked"));
        assert!(matches!(step, Ok(Step::Done(_))), "{step:?}");
    }
}

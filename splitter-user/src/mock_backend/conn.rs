//! One connection of the mock: requests framed (leniently), a reply drawn for each, replies
//! written in request order once due, and the close or reset a reply calls for.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::reply::{sanitize_id_into, Kind, Meta, MockConfig};

/// Longest request head (request line and headers) accepted; longer gets 431 and a close.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Most request headers accepted; more gets 431 and a close.
const MAX_HEADERS: usize = 64;
/// Size of each read; a few typical requests fit, so pipelined batches are parsed in one go.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing connection keeps draining input so that unread bytes don't turn our FIN
/// into a RST, which could destroy the reply still in flight.
const CLOSE_LINGER: Duration = Duration::from_millis(500);
/// Sent before the body is read when the client asked for it (curl does for larger bodies).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
      Content-Length: 0\r\nConnection: close\r\n\r\n";

/// What the connection does once a reply has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
    Reset,
}

/// A reply that waits for its delay, or for an earlier one that does.
struct Pending {
    due: Instant,
    bytes: Vec<u8>,
    after: After,
}

/// Progress through the request being read.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Head,
    /// Body bytes still to skip.
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body skip stands.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// One client connection, with the buffers it reuses from request to request.
pub(super) struct Conn {
    stream: TcpStream,
    cfg: Arc<MockConfig>,
    rbuf: Vec<u8>,
    /// Start of the unconsumed bytes in `rbuf`.
    rpos: usize,
    /// Replies ready to go, written in one call.
    wbuf: Vec<u8>,
    /// Body scratch, reused.
    body: Vec<u8>,
    /// Sanitized X-Req-Id of the current request.
    id: Vec<u8>,
    meta: Meta,
    phase: Phase,
    /// Replies not yet due, in request order; empty on the fast path.
    queue: VecDeque<Pending>,
    /// Recycled `Pending::bytes`.
    spare: Vec<Vec<u8>>,
    /// A close or reset is now due, after `wbuf` is written.
    closing: Option<After>,
    /// A close or reset is on its way: parse and read nothing more.
    stop: bool,
    eof: bool,
}

impl Conn {
    pub(super) fn new(stream: TcpStream, cfg: Arc<MockConfig>) -> Conn {
        Conn {
            stream,
            cfg,
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            wbuf: Vec::with_capacity(4096),
            body: Vec::new(),
            id: Vec::new(),
            meta: Meta::default(),
            phase: Phase::Head,
            queue: VecDeque::new(),
            spare: Vec::new(),
            closing: None,
            stop: false,
            eof: false,
        }
    }

    pub(super) async fn run(mut self) -> io::Result<()> {
        loop {
            self.process_input();
            self.flush_due();
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            match self.closing {
                Some(After::Reset) => {
                    // SO_LINGER 0: dropping the socket sends a RST, not a FIN.
                    let _ = self.stream.set_zero_linger();
                    return Ok(());
                }
                Some(After::Close) => return self.close_gracefully().await,
                _ => {}
            }
            let reading = !self.stop && !self.eof;
            let due = self.queue.front().map(|p| p.due);
            self.make_room();
            let got = match (reading, due) {
                (false, None) => return Ok(()),
                (true, None) => Some(self.stream.read_buf(&mut self.rbuf).await),
                (false, Some(due)) => {
                    tokio::time::sleep_until(due).await;
                    None
                }
                (true, Some(due)) => tokio::select! {
                    r = self.stream.read_buf(&mut self.rbuf) => Some(r),
                    _ = tokio::time::sleep_until(due) => None,
                },
            };
            if let Some(r) = got {
                if r? == 0 {
                    self.eof = true;
                }
            }
        }
    }

    /// Compacts `rbuf` and makes sure a read has room.
    fn make_room(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 0 && self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    async fn close_gracefully(mut self) -> io::Result<()> {
        self.stream.shutdown().await?;
        let drain = async {
            loop {
                self.rbuf.clear();
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
        Ok(())
    }

    /// Parses every complete request in `rbuf` and emits (or queues) its reply.
    fn process_input(&mut self) {
        while !self.stop {
            match self.phase {
                Phase::Head => {
                    if self.rpos == self.rbuf.len() {
                        return;
                    }
                    match self.parse_head() {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(reply) => {
                            self.emit_static(reply, After::Close);
                            return;
                        }
                    }
                }
                Phase::Length(rem) => {
                    let take = ((self.rbuf.len() - self.rpos) as u64).min(rem);
                    self.rpos += take as usize;
                    if take < rem {
                        self.phase = Phase::Length(rem - take);
                        return;
                    }
                    self.phase = Phase::Head;
                    self.complete_request();
                }
                Phase::Chunked(state) => match self.skip_chunked(state) {
                    Ok(true) => {
                        self.phase = Phase::Head;
                        self.complete_request();
                    }
                    Ok(false) => return,
                    Err(()) => {
                        self.emit_static(BAD_REQUEST, After::Close);
                        return;
                    }
                },
            }
        }
    }

    /// Parses a request head at `rpos`: `Ok(false)` when incomplete, `Err(reply)` when the
    /// stream can't be framed.
    fn parse_head(&mut self) -> Result<bool, &'static [u8]> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let buf = &self.rbuf[self.rpos..];
        let n = match self.cfg.parser.parse_request(&mut req, buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HEAD_TOO_LARGE),
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(HEAD_TOO_LARGE),
            Err(_) => return Err(BAD_REQUEST),
        };
        let (mut close, mut keep_alive, mut expect) = (false, false, false);
        let mut length: Option<u64> = None;
        // Some(whether the last coding is chunked)
        let mut chunked: Option<bool> = None;
        let mut has_id = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let v = parse_content_length(h.value).ok_or(BAD_REQUEST)?;
                if length.is_some_and(|l| l != v) {
                    return Err(BAD_REQUEST);
                }
                length = Some(v);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(trim_ascii(last).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim_ascii(token);
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"x-req-id") && !has_id {
                has_id = true;
                sanitize_id_into(&mut self.id, h.value);
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect = trim_ascii(h.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        if !has_id {
            self.id.clear();
        }
        let http10 = req.version == Some(0);
        self.meta = Meta {
            keep_alive: !close && (!http10 || keep_alive),
            echo_keep_alive: http10 && keep_alive && !close,
            has_id,
            head_only: req.method == Some("HEAD"),
        };
        self.rpos += n;
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3); a final coding other than
        // chunked can't be framed.
        self.phase = match chunked {
            Some(true) => Phase::Chunked(Chunk::Size),
            Some(false) => return Err(BAD_REQUEST),
            None => Phase::Length(length.unwrap_or(0)),
        };
        let has_body = !matches!(self.phase, Phase::Length(0));
        if expect && !http10 && has_body && self.rpos == self.rbuf.len() {
            self.emit_static(CONTINUE, After::KeepAlive);
        }
        Ok(true)
    }

    /// Skips a chunked body: `Ok(true)` once it (trailers included) is consumed.
    fn skip_chunked(&mut self, mut state: Chunk) -> Result<bool, ()> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            match state {
                Chunk::Size => match httparse::parse_chunk_size(avail) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.rpos += n;
                        state = if size == 0 {
                            Chunk::Trailer
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if avail.len() <= MAX_HEAD => break,
                    _ => return Err(()),
                },
                Chunk::Data(rem) => {
                    let take = (avail.len() as u64).min(rem);
                    self.rpos += take as usize;
                    if take < rem {
                        state = Chunk::Data(rem - take);
                        break;
                    }
                    state = Chunk::DataEnd;
                }
                Chunk::DataEnd => {
                    if avail.len() < 2 {
                        break;
                    }
                    if &avail[..2] != b"\r\n" {
                        return Err(());
                    }
                    self.rpos += 2;
                    state = Chunk::Size;
                }
                Chunk::Trailer => match avail.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.rpos += 2;
                        return Ok(true);
                    }
                    Some(i) => self.rpos += i + 2,
                    None if avail.len() <= MAX_HEAD => break,
                    None => return Err(()),
                },
            }
        }
        self.phase = Phase::Chunked(state);
        Ok(false)
    }

    /// The whole request has been read: draw and emit its reply.
    fn complete_request(&mut self) {
        let delay = self.cfg.pick_delay();
        let kind = self.cfg.pick_kind();
        let after = match kind {
            Kind::Reset => After::Reset,
            Kind::Garbage => After::Close,
            _ if self.cfg.close || !self.meta.keep_alive => After::Close,
            _ => After::KeepAlive,
        };
        let (mut out, immediate) = self.reply_buffer(delay);
        self.cfg
            .render(&mut out, &mut self.body, &self.id, &self.meta, kind);
        self.commit_reply(out, immediate, delay, after);
    }

    /// Emits a fixed reply that goes out as soon as the replies before it have.
    fn emit_static(&mut self, bytes: &[u8], after: After) {
        let (mut out, immediate) = self.reply_buffer(Duration::ZERO);
        out.extend_from_slice(bytes);
        self.commit_reply(out, immediate, Duration::ZERO, after);
    }

    /// The buffer to render a reply into: `wbuf` itself (taken, so no copy) when nothing waits
    /// before it, else a buffer of its own to be queued; and which of the two it is.
    fn reply_buffer(&mut self, delay: Duration) -> (Vec<u8>, bool) {
        if delay.is_zero() && self.queue.is_empty() {
            (std::mem::take(&mut self.wbuf), true)
        } else {
            (self.spare.pop().unwrap_or_default(), false)
        }
    }

    /// Puts back a reply from [`Conn::reply_buffer`]: ready in `wbuf`, or queued until `delay`
    /// has passed and earlier replies are out (replies on a connection stay in request order).
    fn commit_reply(&mut self, out: Vec<u8>, immediate: bool, delay: Duration, after: After) {
        if after != After::KeepAlive {
            self.stop = true;
        }
        if immediate {
            self.wbuf = out;
            if after != After::KeepAlive {
                self.closing = Some(after);
            }
        } else {
            self.queue.push_back(Pending {
                due: Instant::now() + delay,
                bytes: out,
                after,
            });
        }
    }

    /// Moves the replies now due, in order, from the queue to `wbuf`.
    fn flush_due(&mut self) {
        let Some(first) = self.queue.front() else {
            return;
        };
        let now = Instant::now();
        if first.due > now {
            return;
        }
        while self.queue.front().is_some_and(|p| p.due <= now) {
            let Some(mut p) = self.queue.pop_front() else {
                break;
            };
            self.wbuf.extend_from_slice(&p.bytes);
            if p.after != After::KeepAlive {
                self.closing = Some(p.after);
            }
            p.bytes.clear();
            if self.spare.len() < 16 {
                self.spare.push(p.bytes);
            }
        }
    }
}

fn trim_ascii(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ascii(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_digits_only() {
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"+4"), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
    }
}

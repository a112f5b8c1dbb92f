//! One connection of the mock: requests framed by the product's own HTTP/1.1 code, a reply drawn
//! for each, replies written in request order once due, and the close or reset a reply calls for.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::reply::{sanitize_id_into, Kind, Meta, MockConfig, Scratch};
use crate::http1::body::{BodyDecoder, BodyLimit, Framing};
use crate::http1::encode::{self, ConnectionHeader};
use crate::http1::limits::Limits;
use crate::http1::request::{parse_request, Method, RequestHead, Version};

/// Longest request head (request line and headers) accepted; longer gets 431 and a close.
pub(super) const MAX_HEAD: usize = 64 * 1024;
/// Bodies are skipped as they arrive, never held, so any size is accepted.
const LIMITS: Limits = Limits {
    max_header_bytes: MAX_HEAD,
    max_body: usize::MAX,
};
/// Size of each read; a few typical requests fit, so pipelined batches are parsed in one go.
const READ_CHUNK: usize = 16 * 1024;
/// How long a closing connection keeps draining input so that unread bytes don't turn our FIN
/// into a RST, which could destroy the reply still in flight.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// What the connection does once a reply has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
    Reset,
    /// Go on writing the endless block until the client stops reading or goes.
    Endless,
}

/// A reply that waits for its delay, or for an earlier one that does.
struct Pending {
    due: Instant,
    bytes: Vec<u8>,
    /// Offsets in `bytes` where a write of its own begins (`--chunk-bytes`).
    cuts: Vec<usize>,
    after: After,
}

/// Progress through the request being read.
#[derive(Debug)]
enum Phase {
    Head,
    /// A body, read only to find its end.
    Body(BodyDecoder),
}

/// One client connection, with the buffers it reuses from request to request.
pub(super) struct Conn {
    stream: TcpStream,
    cfg: Arc<MockConfig>,
    rbuf: Vec<u8>,
    /// Start of the unconsumed bytes in `rbuf`.
    rpos: usize,
    /// Replies ready to go, written in one call (or one per piece between `cuts`).
    wbuf: Vec<u8>,
    /// Offsets in `wbuf` where a write of its own begins; empty but with `--chunk-bytes`.
    cuts: Vec<usize>,
    /// Body scratch, reused.
    body: Vec<u8>,
    /// The rest of the reply scratch (compressors, OpenRTB pad offsets), reused.
    scratch: Scratch,
    /// Where the product's framing code writes what the mock has no use for: the head the
    /// splitter would forward, the de-chunked body. Reused; never more than one head (at most
    /// `MAX_HEAD`) or one read's worth of body.
    discard: Vec<u8>,
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
            cuts: Vec::new(),
            body: Vec::new(),
            scratch: Scratch::default(),
            discard: Vec::new(),
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
                self.write_out().await?;
            }
            match self.closing {
                Some(After::Reset) => {
                    // SO_LINGER 0: dropping the socket sends a RST, not a FIN.
                    let _ = self.stream.set_zero_linger();
                    return Ok(());
                }
                Some(After::Close) => return self.close_gracefully().await,
                // Ends with the write error once the client has gone.
                Some(After::Endless) => loop {
                    self.stream.write_all(self.cfg.endless_block()).await?;
                },
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

    /// Writes `wbuf`: in one call, or one call per piece between `cuts`.
    async fn write_out(&mut self) -> io::Result<()> {
        let mut from = 0;
        for &cut in &self.cuts {
            if cut > from {
                self.stream.write_all(&self.wbuf[from..cut]).await?;
                from = cut;
            }
        }
        self.stream.write_all(&self.wbuf[from..]).await?;
        self.wbuf.clear();
        self.cuts.clear();
        Ok(())
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
            let input = &self.rbuf[self.rpos..];
            match &mut self.phase {
                Phase::Head => {
                    if input.is_empty() {
                        return;
                    }
                    match parse_request(input, &LIMITS, &mut self.discard) {
                        Ok(Some(head)) => self.start_request(&head),
                        Ok(None) => return,
                        Err(e) => return self.refuse(e.status()),
                    }
                }
                Phase::Body(body) => match body.decode(input) {
                    Ok(step) => {
                        self.rpos += step.consumed;
                        if !step.done {
                            if self.rpos == self.rbuf.len() {
                                return;
                            }
                            continue;
                        }
                        self.phase = Phase::Head;
                        self.complete_request();
                    }
                    Err(e) => return self.refuse(e.status()),
                },
            }
        }
    }

    /// Takes in a request head the parser accepted at `rpos`: what the reply needs, and how the
    /// body that follows is framed.
    fn start_request(&mut self, head: &RequestHead) {
        let raw = &self.rbuf[self.rpos..self.rpos + head.head_len];
        let id = req_id(raw);
        match id {
            Some(v) => sanitize_id_into(&mut self.id, v),
            None => self.id.clear(),
        }
        self.meta = Meta {
            keep_alive: head.keep_alive,
            echo_keep_alive: head.version == Version::Http10 && head.keep_alive,
            has_id: id.is_some(),
            head_only: head.method == Method::Head,
        };
        self.rpos += head.head_len;
        self.phase = match BodyDecoder::new(head.framing, BodyLimit::decoded(LIMITS.max_body)) {
            Ok(body) => Phase::Body(body),
            Err(e) => return self.refuse(e.status()),
        };
        // Only while none of the body is here: a client that sent it anyway is not waiting.
        let has_body = head.framing != Framing::Length(0);
        if head.expect_continue && has_body && self.rpos == self.rbuf.len() && !self.cfg.silent() {
            self.emit_now(After::KeepAlive, |out| {
                out.extend_from_slice(encode::continue_100())
            });
        }
    }

    /// The whole request has been read: draw and emit its reply.
    fn complete_request(&mut self) {
        let delay = self.cfg.pick_delay();
        let kind = self.cfg.pick_kind();
        let after = match kind {
            // No reply, and the connection stays open for more requests to go unanswered.
            Kind::Silent => return,
            Kind::Reset => After::Reset,
            _ if self.cfg.reset_after_bytes.is_some() => After::Reset,
            Kind::EndlessHead | Kind::EndlessBody => After::Endless,
            Kind::Garbage => After::Close,
            _ if self.cfg.close || self.cfg.close_silently || !self.meta.keep_alive => After::Close,
            _ => After::KeepAlive,
        };
        let (mut out, mut cuts, immediate) = self.reply_buffer(delay);
        let start = out.len();
        let (body, scratch) = (&mut self.body, &mut self.scratch);
        self.cfg.render(
            &mut out, &mut cuts, body, &self.id, &self.meta, kind, scratch,
        );
        if let Some(n) = self.cfg.reset_after_bytes {
            out.truncate(start + n);
            cuts.retain(|&cut| cut < out.len());
        }
        self.commit_reply(out, cuts, immediate, delay, after);
    }

    /// Refuses a request that cannot be framed: `status`, then a close, since the rest of the
    /// stream cannot be trusted.
    fn refuse(&mut self, status: u16) {
        self.emit_now(After::Close, |out| {
            encode::status_response(out, status, ConnectionHeader::Close)
        });
    }

    /// Emits a reply of the mock's own that goes out as soon as the replies before it have.
    fn emit_now(&mut self, after: After, write: impl FnOnce(&mut Vec<u8>)) {
        let (mut out, cuts, immediate) = self.reply_buffer(Duration::ZERO);
        write(&mut out);
        self.commit_reply(out, cuts, immediate, Duration::ZERO, after);
    }

    /// The buffer to render a reply into, with its write offsets: `wbuf` and `cuts` themselves
    /// (taken, so no copy) when nothing waits before it, else buffers of its own to be queued;
    /// and which of the two it is.
    fn reply_buffer(&mut self, delay: Duration) -> (Vec<u8>, Vec<usize>, bool) {
        if delay.is_zero() && self.queue.is_empty() {
            (
                std::mem::take(&mut self.wbuf),
                std::mem::take(&mut self.cuts),
                true,
            )
        } else {
            (self.spare.pop().unwrap_or_default(), Vec::new(), false)
        }
    }

    /// Puts back a reply from [`Conn::reply_buffer`]: ready in `wbuf`, or queued until `delay`
    /// has passed and earlier replies are out (replies on a connection stay in request order).
    fn commit_reply(
        &mut self,
        out: Vec<u8>,
        cuts: Vec<usize>,
        immediate: bool,
        delay: Duration,
        after: After,
    ) {
        if after != After::KeepAlive {
            self.stop = true;
        }
        if immediate {
            self.wbuf = out;
            self.cuts = cuts;
            if after != After::KeepAlive {
                self.closing = Some(after);
            }
        } else {
            self.queue.push_back(Pending {
                due: Instant::now() + delay,
                bytes: out,
                cuts,
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
            let base = self.wbuf.len();
            self.cuts.extend(p.cuts.iter().map(|cut| base + cut));
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

/// The value of the first `X-Req-Id` field in `head`, a head `parse_request` accepted: its lines
/// end in CRLF, field names are tokens and nothing is folded, so a line split is exact.
fn req_id(head: &[u8]) -> Option<&[u8]> {
    head.split(|&b| b == b'\n').find_map(|line| {
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = line.split_at(colon);
        name.eq_ignore_ascii_case(b"x-req-id")
            .then(|| value[1..].trim_ascii())
    })
}

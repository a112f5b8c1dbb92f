//! One connection to a backend, and one HTTP exchange on it: the request written, the whole
//! response read (framed by its `Content-Length`, chunked coding or the connection's end), with
//! every byte the backend sends counted against `max_response_bytes`.

use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use super::buffers::{self, Shared};
use super::conn::{Conn, Readiness, READ_CHUNK};
use super::guards::BackendOpen;
use crate::http1::body::{BodyDecoder, BodyError, BodyLimit, Framing};
use crate::http1::limits::MAX_RESPONSE_HEAD;
use crate::http1::response::{head_may_end, parse_response, Coding, ResponseError, ResponseHead};
use crate::scatter::exchange::Reply;

/// One keep-alive connection to a backend.
pub struct BackendConn {
    /// Declared before `stream`: deregistered before the socket closes.
    readiness: Option<Readiness>,
    stream: Conn,
    /// Counts the connection open, and closed when it is dropped.
    _open: BackendOpen,
}

impl BackendConn {
    /// Opens a new connection, on io_uring or epoll; `open` counts it from now on.
    pub async fn connect(addr: SocketAddr, uring: bool, open: BackendOpen) -> io::Result<Self> {
        let stream = Conn::connect(addr, uring).await?;
        Ok(BackendConn {
            readiness: Readiness::of(&stream)?,
            stream,
            _open: open,
        })
    }

    /// True when nothing is waiting to be read and the backend has not closed. Known without a
    /// system call when no readiness event came since the last reply was read; otherwise a
    /// non-blocking peek must answer `EAGAIN`.
    pub fn is_clean(&self) -> bool {
        let fd = self.stream.fd();
        self.stream.idle_clean(self.readiness.as_ref(), || {
            let mut byte = 0u8;
            // SAFETY: one valid byte of buffer; the fd belongs to `stream`.
            let n = unsafe {
                libc::recv(
                    fd,
                    (&raw mut byte).cast(),
                    1,
                    libc::MSG_PEEK | libc::MSG_DONTWAIT,
                )
            };
            n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
        })
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        // An exchange abandoned past its grace time leaves a read in the ring that keeps the
        // socket open until the backend sends something; shut it down to close it now.
        // SAFETY: the fd is owned by `self.stream`, still open.
        unsafe { libc::shutdown(self.stream.fd(), libc::SHUT_RDWR) };
    }
}

/// A whole backend response: its head as received, then its body, de-chunked, in one buffer.
pub struct Response {
    /// The head, then the body.
    raw: Vec<u8>,
    /// The parsed head; the body starts at `head.head_len`.
    pub head: ResponseHead,
    /// Where the body ends in `raw`.
    body_end: usize,
}

impl Drop for Response {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.raw));
    }
}

impl Response {
    /// The head as the backend sent it (status line and headers), which `head` indexes.
    pub fn raw_head(&self) -> &[u8] {
        &self.raw[..self.head.head_len]
    }
}

impl Reply for Response {
    fn status(&self) -> u16 {
        self.head.status
    }

    fn body(&self) -> &[u8] {
        &self.raw[self.head.head_len..self.body_end]
    }

    fn coding(&self) -> Coding {
        self.head.coding
    }
}

/// Why an exchange failed. Every failure closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Socket error while writing or reading.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before the response head was whole.
    #[error("connection closed after {0} bytes of the response head")]
    Closed(usize),
    /// The head is not a valid HTTP/1.1 response, or too large.
    #[error("bad response head: {0}")]
    Head(#[from] ResponseError),
    /// The body is malformed, too large, or cut short.
    #[error("bad response body: {0}")]
    Body(#[from] BodyError),
    /// The reply came in more pieces than any sound sender cuts one into (a byte or a chunk per
    /// segment), or went on too long past its deadline.
    #[error("reply trickled in over {0} reads")]
    Trickle(u32),
}

/// What one reply may cost besides its size: reads are where a trickling sender makes the
/// splitter work (a wake-up, a syscall or a ring entry each), however few bytes each brings.
#[derive(Clone, Copy, Debug)]
pub struct ReplyLimits {
    /// Most bytes, on the wire and decoded (`max_response_bytes`).
    pub max_bytes: usize,
    /// The backend's deadline: past it, only [`LATE_READS`] more reads.
    pub deadline: Instant,
}

/// Most reads for one reply. A whole 1 MiB reply takes about 130 reads of 8 KiB; a sender
/// that needs thousands is writing a byte at a time, and costs milliseconds of CPU per reply.
const MAX_READS: u32 = 1024;

/// Most reads after the deadline, while a late reply is drained to keep its connection: a
/// reply still trickling then is not worth its CPU.
const LATE_READS: u32 = 64;

/// The reads one reply has taken.
struct Reads {
    limits: ReplyLimits,
    total: u32,
    late: u32,
}

impl Reads {
    fn new(limits: ReplyLimits) -> Self {
        Reads {
            limits,
            total: 0,
            late: 0,
        }
    }

    /// Counts one more read, or refuses it.
    fn one_more(&mut self) -> Result<(), ExchangeError> {
        self.total += 1;
        if self.total > MAX_READS {
            return Err(ExchangeError::Trickle(self.total));
        }
        // Checking the clock only once the reply is long enough to matter.
        if self.total > 4 && Instant::now() >= self.limits.deadline {
            self.late += 1;
            if self.late > LATE_READS {
                return Err(ExchangeError::Trickle(self.total));
            }
        }
        Ok(())
    }
}

/// Sends `request` (a whole request, framed by `Content-Length`) and reads the whole response;
/// `head_request`: it was a `HEAD`, whose response has no body whatever its fields say. At most
/// `max_bytes` of it are read, head and body as they come on the wire, and the body decoded.
/// Returns it with whether the connection may be reused.
pub async fn exchange(
    conn: &mut BackendConn,
    request: Shared,
    head_request: bool,
    limits: ReplyLimits,
) -> Result<(Response, bool), ExchangeError> {
    conn.stream.write_shared(request).await?;

    let max_bytes = limits.max_bytes;
    let mut reads = Reads::new(limits);
    let mut raw = buffers::take(READ_CHUNK);
    let mut scanned = 0;
    let head = loop {
        // Parse only once a blank line may have arrived: each byte is scanned once, however
        // the head is cut into reads.
        if head_may_end(&raw, scanned) {
            if let Some(head) = parse_response(&raw)? {
                break head;
            }
        }
        if raw.len() > MAX_RESPONSE_HEAD.min(max_bytes) {
            return Err(ResponseError::HeadTooLarge.into());
        }
        scanned = raw.len();
        reads.one_more()?;
        let (n, more) = conn.stream.read_ready(conn.readiness.as_ref(), raw).await;
        raw = more;
        if n? == 0 {
            return Err(ExchangeError::Closed(raw.len()));
        }
    };
    let framing = if head_request {
        Framing::Length(0)
    } else {
        head.framing
    };
    let limit = BodyLimit {
        decoded: max_bytes,
        wire: max_bytes.saturating_sub(head.head_len),
    };
    let mut body = BodyDecoder::new(framing, limit)?;
    let mut body_end = head.head_len;
    while !body.decode_in_place(&mut raw, &mut body_end)? {
        reads.one_more()?;
        let (n, more) = conn.stream.read_ready(conn.readiness.as_ref(), raw).await;
        raw = more;
        if n? == 0 {
            body.close()?;
            break;
        }
    }
    // A byte beyond the body is a protocol error on the backend's part: never reuse then.
    let reusable = head.keep_alive && framing != Framing::UntilClose && raw.len() == body_end;
    let response = Response {
        raw,
        head,
        body_end,
    };
    Ok((response, reusable))
}

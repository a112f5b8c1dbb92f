//! Keep-alive connections to the backends (one pool per backend, per worker), and one HTTP
//! exchange on one connection.
//!
//! A connection goes back to its pool only after its response was read to the end, framed by the
//! backend's `Content-Length` or chunked coding, with no byte beyond it. Before reuse it is probed
//! without blocking: any byte waiting on an idle connection, or its end, closes it (pingora's
//! rule), so a late or unsolicited reply can never be read as another request's answer.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;

use super::buffers::{self, Shared};
use super::conn::{Conn, READ_CHUNK};
use super::guards::BackendOpen;
use super::BackendTarget;
use crate::http1::body::{BodyDecoder, BodyError, BodyLimit, Framing};
use crate::http1::limits::{MAX_RESPONSE_BODY, MAX_RESPONSE_HEAD};
use crate::http1::response::{head_may_end, parse_response, ResponseError, ResponseHead};
use crate::metrics::WorkerCounters;
use crate::scatter::exchange::Reply;

/// Idle connections kept per backend and worker. Enough for the concurrency of a busy worker;
/// beyond it, connections are closed rather than hoarded.
const MAX_IDLE_PER_BACKEND: usize = 1024;

/// One keep-alive connection to a backend.
pub struct BackendConn {
    stream: Conn,
    /// Counts the connection open, and closed when it is dropped.
    _open: BackendOpen,
}

impl BackendConn {
    /// Opens a new connection, on io_uring or epoll, to the backend of metrics slot `slot`.
    pub async fn connect(
        addr: SocketAddr,
        uring: bool,
        counters: &Rc<WorkerCounters>,
        slot: usize,
    ) -> io::Result<BackendConn> {
        let stream = Conn::connect(addr, uring).await?;
        Ok(BackendConn {
            stream,
            _open: BackendOpen::new(Rc::clone(counters), slot),
        })
    }

    /// True when nothing is waiting to be read and the backend has not closed: a non-blocking
    /// peek answers `EAGAIN`.
    fn is_clean(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: one valid byte of buffer; the fd belongs to `stream`.
        let n = unsafe {
            libc::recv(
                self.stream.fd(),
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
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

/// The idle connections of one worker, by backend address.
#[derive(Default)]
pub struct Pools {
    idle: HashMap<SocketAddr, Vec<BackendConn>>,
}

impl Pools {
    /// Empty pools for these backends.
    pub fn new(backends: &[BackendTarget]) -> Pools {
        let mut pools = Pools::default();
        pools.retain_backends(backends);
        pools
    }

    /// After a reload: drops the pools of backends no longer configured, adds the new ones.
    pub fn retain_backends(&mut self, backends: &[BackendTarget]) {
        self.idle
            .retain(|addr, _| backends.iter().any(|b| b.addr == *addr));
        for b in backends {
            self.idle.entry(b.addr).or_default();
        }
    }

    /// An idle connection to `addr` that is still clean, if any; dirty ones are closed.
    pub fn take(&mut self, addr: SocketAddr) -> Option<BackendConn> {
        let pool = self.idle.get_mut(&addr)?;
        while let Some(conn) = pool.pop() {
            if conn.is_clean() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a connection whose exchange ended cleanly. False when it was closed instead
    /// (pool full, or backend removed by a reload).
    pub fn put(&mut self, addr: SocketAddr, conn: BackendConn) -> bool {
        match self.idle.get_mut(&addr) {
            Some(pool) if pool.len() < MAX_IDLE_PER_BACKEND => {
                pool.push(conn);
                true
            }
            _ => false,
        }
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
}

/// Sends `request` (a whole request, framed by `Content-Length`) and reads the whole response;
/// `head_request`: it was a `HEAD`, whose response has no body whatever its fields say.
/// Returns it with whether the connection may be reused.
pub async fn exchange(
    conn: &mut BackendConn,
    request: Shared,
    head_request: bool,
) -> Result<(Response, bool), ExchangeError> {
    conn.stream.write_shared(request).await?;

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
        if raw.len() > MAX_RESPONSE_HEAD {
            return Err(ResponseError::HeadTooLarge.into());
        }
        scanned = raw.len();
        let (n, more) = conn.stream.read(raw).await;
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
    let mut body = BodyDecoder::new(framing, BodyLimit::decoded(MAX_RESPONSE_BODY))?;
    let mut body_end = head.head_len;
    while !body.decode_in_place(&mut raw, &mut body_end)? {
        let (n, more) = conn.stream.read(raw).await;
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

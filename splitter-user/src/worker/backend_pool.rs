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
use std::ops::Range;

use super::buffers::{self, Shared};
use super::conn::{Conn, READ_CHUNK};
use super::BackendTarget;
use crate::http1::chunked::ChunkedDecoder;
use crate::http1::limits::{MAX_RESPONSE_BODY, MAX_RESPONSE_HEAD};
use crate::http1::response::{parse_response, ResponseFraming};

/// Idle connections kept per backend and worker. Enough for the concurrency of a busy worker;
/// beyond it, connections are closed rather than hoarded.
const MAX_IDLE_PER_BACKEND: usize = 1024;

/// One keep-alive connection to a backend.
pub struct BackendConn {
    stream: Conn,
    /// True once the connection has carried an exchange: a failure before any byte of the reply
    /// may then just be the backend closing an idle connection, worth one retry on a new one.
    pub reused: bool,
}

impl BackendConn {
    /// Opens a new connection, on io_uring or epoll.
    pub async fn connect(addr: SocketAddr, uring: bool) -> io::Result<BackendConn> {
        Ok(BackendConn {
            stream: Conn::connect(addr, uring).await?,
            reused: false,
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
    pub fn put(&mut self, addr: SocketAddr, mut conn: BackendConn) -> bool {
        match self.idle.get_mut(&addr) {
            Some(pool) if pool.len() < MAX_IDLE_PER_BACKEND => {
                conn.reused = true;
                pool.push(conn);
                true
            }
            _ => false,
        }
    }
}

/// A whole backend response.
pub struct Response {
    /// The bytes as received (head, then body unless it was chunked).
    raw: Vec<u8>,
    /// Length of the head in `raw`.
    head_len: usize,
    /// The response status.
    pub status: u16,
    /// Where the body is.
    body: Body,
}

enum Body {
    /// In `raw`, at this range.
    Inline(Range<usize>),
    /// De-chunked into its own buffer.
    Decoded(Vec<u8>),
}

impl Drop for Response {
    fn drop(&mut self) {
        buffers::give(std::mem::take(&mut self.raw));
        if let Body::Decoded(body) = &mut self.body {
            buffers::give(std::mem::take(body));
        }
    }
}

impl Response {
    /// The head as the backend sent it (status line and headers).
    pub fn head(&self) -> &[u8] {
        &self.raw[..self.head_len]
    }

    /// The body, de-chunked.
    pub fn body(&self) -> &[u8] {
        match &self.body {
            Body::Inline(r) => &self.raw[r.clone()],
            Body::Decoded(b) => b,
        }
    }
}

/// Why an exchange failed. Every failure closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Socket error while writing or reading.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The backend closed the connection before a whole response.
    #[error("connection closed after {0} bytes of the response")]
    Closed(usize),
    /// The backend sent bytes that are not a valid HTTP/1.1 response, or too many of them.
    #[error("bad response: {0}")]
    Protocol(String),
}

impl ExchangeError {
    /// True when the connection died before any byte of a reply: on a reused connection this is
    /// the backend having closed it while idle, and the request may go again on a new one.
    pub fn before_reply(&self) -> bool {
        match self {
            ExchangeError::Closed(0) => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            _ => false,
        }
    }
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
    let head = loop {
        if let Some(head) =
            parse_response(&raw).map_err(|e| ExchangeError::Protocol(e.to_string()))?
        {
            break head;
        }
        if raw.len() > MAX_RESPONSE_HEAD {
            return Err(ExchangeError::Protocol("response head too large".into()));
        }
        raw = read_more(&conn.stream, raw).await?;
    };
    let start = head.head_len;
    let framing = if head_request {
        ResponseFraming::Empty
    } else {
        head.framing
    };
    let (body, reusable) = match framing {
        ResponseFraming::Empty => (Body::Inline(start..start), raw.len() == start),
        ResponseFraming::Length(n) => {
            while raw.len() < start + n {
                raw = read_more(&conn.stream, raw).await?;
            }
            (Body::Inline(start..start + n), raw.len() == start + n)
        }
        ResponseFraming::Chunked => {
            let mut decoder = ChunkedDecoder::new(MAX_RESPONSE_BODY);
            let mut body = buffers::take(READ_CHUNK);
            let mut pos = start;
            loop {
                let step = decoder
                    .decode(&raw[pos..], &mut body)
                    .map_err(|e| ExchangeError::Protocol(e.to_string()))?;
                pos += step.consumed;
                if step.done {
                    break;
                }
                raw = read_more(&conn.stream, raw).await?;
            }
            (Body::Decoded(body), raw.len() == pos)
        }
        ResponseFraming::UntilClose => {
            // An HTTP/1.0-style body ends with the connection, which then cannot be reused.
            loop {
                if raw.len() - start > MAX_RESPONSE_BODY {
                    return Err(ExchangeError::Protocol("response body too large".into()));
                }
                let (n, more) = conn.stream.read(raw).await;
                raw = more;
                if n? == 0 {
                    break;
                }
            }
            (Body::Inline(start..raw.len()), false)
        }
    };
    let response = Response {
        status: head.status,
        head_len: start,
        body,
        raw,
    };
    Ok((response, reusable && head.keep_alive))
}

/// Reads once more into `buf`; end of stream is `Closed`.
async fn read_more(stream: &Conn, buf: Vec<u8>) -> Result<Vec<u8>, ExchangeError> {
    let len = buf.len();
    match stream.read(buf).await {
        (Ok(0), _) => Err(ExchangeError::Closed(len)),
        (Ok(_), buf) => Ok(buf),
        (Err(e), _) => Err(e.into()),
    }
}

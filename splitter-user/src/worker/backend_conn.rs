//! One connection to a backend, and one HTTP exchange on it: the request written, then reads
//! until [`ReplyReader`] (sans IO, in `http1::reply`) has the whole response, framed by its
//! `Content-Length`, chunked coding or the connection's end, within its byte and read budgets.

use std::io;
use std::net::SocketAddr;

use super::buffers::{self, Shared};
use super::conn::{Conn, READ_CHUNK};
use super::guards::BackendOpen;
use crate::http1::reply::{ReplyError, ReplyLimits, ReplyReader, Step};
use crate::http1::response::{Coding, ResponseHead};
use crate::scatter::exchange::Reply;

/// One keep-alive connection to a backend.
pub struct BackendConn {
    stream: Conn,
    /// Counts the connection open, and closed when it is dropped.
    _open: BackendOpen,
}

impl BackendConn {
    /// Opens a new connection, on io_uring or epoll; `open` counts it from now on.
    pub async fn connect(addr: SocketAddr, uring: bool, open: BackendOpen) -> io::Result<Self> {
        let stream = Conn::connect(addr, uring).await?;
        Ok(BackendConn {
            stream,
            _open: open,
        })
    }

    /// True when nothing is waiting to be read and the backend has not closed. Known without a
    /// system call when no readiness event came since the last reply was read; otherwise a
    /// non-blocking peek must answer `EAGAIN`.
    pub fn is_clean(&self) -> bool {
        let fd = self.stream.fd();
        self.stream.idle_clean(|| {
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
        // An exchange abandoned past its grace time may leave a write in the ring, holding the
        // socket open until its cancellation completes; shut it down to close it now.
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
    /// What the backend sent is not a whole, bounded reply.
    #[error(transparent)]
    Reply(#[from] ReplyError),
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
    // Not waited for: the reply is. A write that fails leaves the socket in error (the read
    // then fails) or, at worst, the reply missing until the caller's deadline.
    let mut sent = conn.stream.send_shared(request).await?;
    let mut reader = ReplyReader::new(head_request, limits);
    let mut raw = buffers::take(READ_CHUNK);
    let mut head = None;
    let whole = loop {
        match reader.step(&mut raw, &mut head, super::rt::now)? {
            Step::Done(whole) => break whole,
            Step::Read => {
                let (n, more) = conn.stream.read_ready(raw).await;
                raw = more;
                if n? == 0 {
                    break reader.end_of_stream(&raw)?;
                }
            }
        }
    };
    let response = Response {
        raw,
        head: head.expect("a whole reply has a head"),
        body_end: whole.body_end,
    };
    Ok((response, whole.reusable && sent.ended_whole()))
}

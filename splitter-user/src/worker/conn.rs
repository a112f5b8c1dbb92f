//! The two I/O shells' sockets behind one type: `tokio-uring` (completion-based, io_uring) and
//! plain `tokio` readiness (epoll). Both take and give back owned buffers, so the code above them
//! is the same for both; `io` in the configuration picks one per process.
//!
//! The epoll side keeps its own readiness: a read that comes back short drained the socket, so
//! the readiness is cleared and the next read waits for epoll instead of spending a syscall to
//! learn `EAGAIN`. Writes go straight to the socket and wait only when it is full.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio_uring::buf::BoundedBuf;

use super::buffers::Shared;

/// Smallest free space offered to a read, so reads are never tiny.
pub const READ_CHUNK: usize = 8192;

/// A connected TCP socket of either shell.
pub enum Conn {
    /// io_uring, through tokio-uring.
    Uring(tokio_uring::net::TcpStream),
    /// epoll, through tokio's reactor.
    Epoll(AsyncFd<std::net::TcpStream>),
}

impl Conn {
    /// Connects to `addr` with the given shell; Nagle off, since every write is a whole message.
    pub async fn connect(addr: SocketAddr, uring: bool) -> io::Result<Conn> {
        let conn = if uring {
            Conn::Uring(tokio_uring::net::TcpStream::connect(addr).await?)
        } else {
            let stream = tokio::net::TcpStream::connect(addr).await?.into_std()?;
            Conn::Epoll(register(stream)?)
        };
        conn.set_nodelay()?;
        Ok(conn)
    }

    /// Disables Nagle's algorithm.
    pub fn set_nodelay(&self) -> io::Result<()> {
        match self {
            Conn::Uring(s) => s.set_nodelay(true),
            Conn::Epoll(s) => s.get_ref().set_nodelay(true),
        }
    }

    /// The socket's file descriptor, for `shutdown` and non-blocking probes.
    pub fn fd(&self) -> RawFd {
        match self {
            Conn::Uring(s) => s.as_raw_fd(),
            Conn::Epoll(s) => s.as_raw_fd(),
        }
    }

    /// Reads once, appending to `buf` (grown so at least `READ_CHUNK / 2` bytes are free).
    /// `Ok(0)` is the end of the stream. The buffer comes back whatever happens.
    pub async fn read(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        make_room(&mut buf);
        match self {
            Conn::Uring(s) => {
                let len = buf.len();
                let (res, slice) = s.read(buf.slice(len..)).await;
                (res, slice.into_inner())
            }
            Conn::Epoll(s) => recv_when_ready(s, buf).await,
        }
    }

    /// Waits, holding no buffer, until a read would not block (bytes, the end of the stream, or
    /// an error). For an io_uring socket this needs its [`Readiness`]; without one it returns at
    /// once and the read that follows waits in the ring.
    pub async fn readable(&self, readiness: Option<&Readiness>) -> io::Result<()> {
        match (self, readiness) {
            // The guard is dropped without clearing: the socket stays ready for the read.
            (Conn::Epoll(s), _) => s.readable().await.map(drop),
            (Conn::Uring(_), Some(r)) => r.0.readable().await.map(drop),
            (Conn::Uring(_), None) => Ok(()),
        }
    }

    /// Reads once when the socket is readable, like [`Conn::read`]. An io_uring socket with a
    /// [`Readiness`] waits for it first, then is read through the ring (the bytes are there:
    /// the read completes as it is submitted, in the batch, where a `recv` would cost a system
    /// call of its own; measured, the `recv` cost 2-6 µs more per request); a short read means
    /// the socket is drained, so its readiness is cleared and what comes next is a new event.
    pub async fn read_ready(
        &self,
        readiness: Option<&Readiness>,
        mut buf: Vec<u8>,
    ) -> (io::Result<usize>, Vec<u8>) {
        match (self, readiness) {
            (Conn::Uring(s), Some(r)) => {
                make_room(&mut buf);
                let mut guard = match r.0.readable().await {
                    Ok(guard) => guard,
                    Err(e) => return (Err(e), buf),
                };
                let len = buf.len();
                let room = buf.capacity() - len;
                let (res, slice) = s.read(buf.slice(len..)).await;
                if matches!(res, Ok(n) if n < room) {
                    guard.clear_ready();
                }
                (res, slice.into_inner())
            }
            _ => self.read(buf).await,
        }
    }

    /// Whether an idle socket is still as its last read left it: no byte and no end of stream
    /// since. True at once, with no system call, when no readiness event came since that read
    /// drained it; otherwise `peek` asks the socket (the event may be the last reply's own),
    /// and a clean answer clears the readiness. Without a [`Readiness`] `peek` always decides.
    pub fn idle_clean(&self, readiness: Option<&Readiness>, peek: impl FnOnce() -> bool) -> bool {
        match (self, readiness) {
            (Conn::Epoll(s), _) => idle_clean(s, peek),
            (Conn::Uring(_), Some(r)) => idle_clean(&r.0, peek),
            (Conn::Uring(_), None) => peek(),
        }
    }

    /// Writes all of `buf`; gives it back.
    pub async fn write_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        match self {
            Conn::Uring(s) => s.write_all(buf).await,
            Conn::Epoll(s) => {
                let res = epoll_write_all(s, &buf).await;
                (res, buf)
            }
        }
    }

    /// Writes all of a shared buffer (the request every backend gets).
    pub async fn write_shared(&self, buf: Shared) -> io::Result<()> {
        match self {
            Conn::Uring(s) => s.write_all(buf).await.0,
            Conn::Epoll(s) => epoll_write_all(s, &buf).await,
        }
    }
}

/// Grows `buf` so at least `READ_CHUNK / 2` bytes are free: reads are never tiny.
fn make_room(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK.max(buf.len()));
    }
}

/// Receives once into `buf`'s spare capacity when `s` is readable. A read that comes back short
/// drained the socket, so the readiness is cleared and the next read waits for epoll instead of
/// spending a syscall to learn `EAGAIN`.
async fn recv_when_ready<T: AsRawFd>(
    s: &AsyncFd<T>,
    mut buf: Vec<u8>,
) -> (io::Result<usize>, Vec<u8>) {
    loop {
        let mut guard = match s.readable().await {
            Ok(guard) => guard,
            Err(e) => return (Err(e), buf),
        };
        let len = buf.len();
        let spare = buf.spare_capacity_mut();
        let room = spare.len();
        let dst = spare.as_mut_ptr();
        // Into the spare capacity through a raw pointer: no reference to uninitialised bytes is
        // ever made.
        let recv = |s: &AsyncFd<T>| {
            // SAFETY: `dst` has room for `room` bytes; the kernel writes at most that.
            let n = unsafe { libc::recv(s.as_raw_fd(), dst.cast(), room, 0) };
            if n < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(n as usize)
            }
        };
        match guard.try_io(recv) {
            Ok(Ok(n)) => {
                // SAFETY: the kernel initialised `n` bytes after `len`.
                unsafe { buf.set_len(len + n) };
                if n > 0 && n < room {
                    guard.clear_ready();
                }
                return (Ok(n), buf);
            }
            Ok(Err(e)) => return (Err(e), buf),
            // Spurious readiness, now cleared: wait for the next edge.
            Err(_would_block) => continue,
        }
    }
}

/// [`Conn::idle_clean`] for one registration. The guard is taken before `peek`, so an event
/// the reactor notes after it is never cleared by it.
fn idle_clean<T: AsRawFd>(s: &AsyncFd<T>, peek: impl FnOnce() -> bool) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match s.poll_read_ready(&mut cx) {
        std::task::Poll::Pending => true,
        std::task::Poll::Ready(Ok(mut guard)) => {
            let clean = peek();
            if clean {
                guard.clear_ready();
            }
            clean
        }
        std::task::Poll::Ready(Err(_)) => false,
    }
}

/// The epoll readiness of an io_uring socket. A client connection waits on it for its next
/// request without a buffer posted to the ring (io_uring's own answer, a provided-buffer ring,
/// is out of tokio-uring's reach); a pooled backend connection learns from it, without a system
/// call, that nothing arrived while it was idle. Registered once per connection; dropped before
/// the socket closes.
pub struct Readiness(AsyncFd<Fd>);

impl Readiness {
    /// Registers `conn`'s socket for read readiness; `None` for an epoll socket, which has its
    /// own.
    pub fn of(conn: &Conn) -> io::Result<Option<Readiness>> {
        match conn {
            Conn::Uring(s) => {
                let fd = Fd(s.as_raw_fd());
                // SAFETY: the owner of the socket (the connection's `TcpStream`) outlives this
                // registration: client connections drop their `Readiness` first.
                unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                    .map(|afd| Some(Readiness(afd)))
                    .map_err(io::Error::from)
            }
            Conn::Epoll(_) => Ok(None),
        }
    }
}

/// A descriptor owned elsewhere (by the connection's `TcpStream`).
struct Fd(RawFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// Writes optimistically (a socket's send buffer almost always has room) and waits for
/// writability only when it is full.
async fn epoll_write_all(s: &AsyncFd<std::net::TcpStream>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match s.get_ref().write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut guard = s.writable().await?;
                match guard.try_io(|s| s.get_ref().write(buf)) {
                    Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(Ok(n)) => buf = &buf[n..],
                    Ok(Err(e)) => return Err(e),
                    Err(_would_block) => {}
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A worker's listener, for either shell. Accepting goes through the reactor's readiness
/// (`accept4` when the socket is readable) on both: accepting is rare next to reads and writes,
/// and unlike an io_uring accept left in the ring, a readiness wait is gone the moment it is
/// dropped, so a listener handed over to a new process is never accepted from again here.
pub struct Listener {
    socket: AsyncFd<std::net::TcpListener>,
    uring: bool,
}

impl Listener {
    /// Wraps a bound, listening, non-blocking socket for the chosen shell.
    pub fn new(listener: std::net::TcpListener, uring: bool) -> io::Result<Listener> {
        Ok(Listener {
            socket: register(listener)?,
            uring,
        })
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Conn> {
        let stream = loop {
            let mut guard = self.socket.readable().await?;
            match guard.try_io(|l| l.get_ref().accept()) {
                Ok(Ok((stream, _))) => break stream,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        };
        stream.set_nonblocking(true)?;
        let conn = if self.uring {
            Conn::Uring(tokio_uring::net::TcpStream::from_std(stream))
        } else {
            Conn::Epoll(register(stream)?)
        };
        conn.set_nodelay()?;
        Ok(conn)
    }

    /// The listening socket's file descriptor.
    pub fn fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// Registers a std socket with the worker's epoll reactor.
fn register<T: AsRawFd>(socket: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: std's sockets own their descriptor and return the same one for their lifetime.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

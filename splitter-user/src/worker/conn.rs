//! The two I/O shells' sockets behind one type: io_uring (this worker runtime's own ring,
//! [`ring`](super::ring)) and plain `tokio` readiness (epoll). Both take and give back owned
//! buffers, so the code above them is the same for both; `io` in the configuration picks one per
//! process.
//!
//! Both wait for readiness before they read, so an idle connection holds no buffer, and both
//! keep it: a read that comes back short drained the socket, so the next read waits for a new
//! event instead of spending a system call to learn `EAGAIN`. On epoll, writes go straight to the
//! socket and wait only when it is full; on io_uring, they are submitted with the turn's others.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;

use super::buffers::Shared;
use super::ring;

/// Smallest free space offered to a read, so reads are never tiny.
pub const READ_CHUNK: usize = 8192;

/// A connected TCP socket of either shell.
pub enum Conn {
    /// io_uring, on the worker's ring.
    Uring(ring::TcpStream),
    /// epoll, through tokio's reactor.
    Epoll(AsyncFd<std::net::TcpStream>),
}

impl Conn {
    /// Connects to `addr` with the given shell; Nagle off, since every write is a whole message.
    pub async fn connect(addr: SocketAddr, uring: bool) -> io::Result<Conn> {
        let conn = if uring {
            Conn::Uring(ring::TcpStream::connect(addr).await?)
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
            Conn::Uring(s) => s.socket().set_nodelay(true),
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
            Conn::Uring(s) => s.read(buf).await,
            Conn::Epoll(s) => recv_when_ready(s, buf).await,
        }
    }

    /// Waits, holding no buffer, until a read would not block (bytes, the end of the stream, or
    /// an error).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            // The guard is dropped without clearing: the socket stays ready for the read.
            Conn::Epoll(s) => s.readable().await.map(drop),
            Conn::Uring(s) => {
                s.readable().await;
                Ok(())
            }
        }
    }

    /// Reads once when the socket is readable, like [`Conn::read`]; a short read means the
    /// socket is drained, and what comes next is a new event.
    pub async fn read_ready(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Conn::Uring(s) => {
                make_room(&mut buf);
                s.read_ready(buf).await
            }
            Conn::Epoll(_) => self.read(buf).await,
        }
    }

    /// Waits, holding no buffer, until the socket is readable, then reads once, like
    /// [`Conn::read_ready`], into a buffer `take` gives then (on io_uring, the driver takes it
    /// as it submits the read: the task is woken once, with the bytes).
    pub async fn read_next(&self, take: fn() -> Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        match self {
            Conn::Uring(s) => s.read_next(take).await,
            Conn::Epoll(_) => {
                if let Err(e) = self.readable().await {
                    return (Err(e), Vec::new());
                }
                self.read_ready(take()).await
            }
        }
    }

    /// Whether an idle socket is still as its last read left it: no byte and no end of stream
    /// since. True at once, with no system call, when no readiness event came since that read
    /// drained it; otherwise `peek` asks the socket (the event may be the last reply's own),
    /// and a clean answer clears the readiness.
    pub fn idle_clean(&self, peek: impl FnOnce() -> bool) -> bool {
        match self {
            Conn::Epoll(s) => idle_clean(s, peek),
            Conn::Uring(s) => s.idle_clean(peek),
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

    /// Writes a shared buffer (the request every backend gets) without waiting for the write to
    /// end where the shell allows it: on io_uring it is submitted and left in flight, to be
    /// looked at once the reply is in ([`Sent::ended_whole`]); on epoll it is written here.
    pub async fn send_shared(&self, buf: Shared) -> io::Result<Sent> {
        match self {
            Conn::Uring(s) => Ok(Sent::InFlight(s.start_write(buf))),
            Conn::Epoll(s) => epoll_write_all(s, &buf).await.map(|()| Sent::Whole),
        }
    }
}

/// A write [`Conn::send_shared`] started.
pub enum Sent {
    /// Still in the ring, or ended there; cancelled if dropped unfinished.
    InFlight(ring::net::Write<Shared>),
    /// Written.
    Whole,
}

impl Sent {
    /// Whether every byte was sent: false while the write is in flight (a reply came before
    /// the whole request left) or when it failed. Either way the connection is not reused.
    pub fn ended_whole(&mut self) -> bool {
        match self {
            Sent::InFlight(write) => write.ended_whole(),
            Sent::Whole => true,
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

/// A worker's listener, for either shell. Accepting waits for readiness, then calls `accept4`,
/// on both: accepting is rare next to reads and writes, and unlike an accept left in the ring,
/// a readiness wait is gone the moment it is dropped, so a listener handed over to a new process
/// is never accepted from again here.
pub enum Listener {
    /// On the worker's ring.
    Uring(ring::TcpListener),
    /// On tokio's reactor.
    Epoll(AsyncFd<std::net::TcpListener>),
}

impl Listener {
    /// Wraps a bound, listening, non-blocking socket for the chosen shell.
    pub fn new(listener: std::net::TcpListener, uring: bool) -> io::Result<Listener> {
        Ok(if uring {
            Listener::Uring(ring::TcpListener::from_std(listener))
        } else {
            Listener::Epoll(register(listener)?)
        })
    }

    /// The next connection.
    pub async fn accept(&self) -> io::Result<Conn> {
        let conn = match self {
            Listener::Uring(l) => Conn::Uring(ring::TcpStream::from_std(l.accept().await?)),
            Listener::Epoll(l) => {
                let stream = loop {
                    let mut guard = l.readable().await?;
                    match guard.try_io(|l| l.get_ref().accept()) {
                        Ok(Ok((stream, _))) => break stream,
                        Ok(Err(e)) => return Err(e),
                        Err(_would_block) => continue,
                    }
                };
                stream.set_nonblocking(true)?;
                Conn::Epoll(register(stream)?)
            }
        };
        conn.set_nodelay()?;
        Ok(conn)
    }

    /// The listening socket's file descriptor.
    pub fn fd(&self) -> RawFd {
        match self {
            Listener::Uring(l) => l.as_raw_fd(),
            Listener::Epoll(l) => l.as_raw_fd(),
        }
    }
}

/// Registers a std socket with the worker's epoll reactor.
fn register<T: AsRawFd>(socket: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: std's sockets own their descriptor and return the same one for their lifetime.
    unsafe { AsyncFd::register(socket) }.map_err(io::Error::from)
}

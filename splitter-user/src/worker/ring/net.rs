//! TCP on the ring, readiness first.
//!
//! Every socket has a multishot `POLLIN` poll in the ring for its life (armed at its first wait):
//! each of its completions marks the socket readable. A read is submitted when the socket is
//! readable, with `MSG_DONTWAIT`, so it completes as it is submitted, in the same system call as
//! everything else of the turn; one that comes back short (or finds nothing) drained the socket,
//! which is then not readable until the poll says so again. That is decided as the read's
//! completion is reaped, in the ring's order, so a poll event reaped after it (bytes that came
//! since) is never lost. An idle connection waits with no read, and so no buffer, in the ring;
//! a pooled one is known clean without a system call when no event came since its last read.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use io_uring::{opcode, types};

use super::driver::{self, on_sock, ArmedRead, Op, Sock};

/// A socket's readiness, as its poll reports it.
pub(crate) struct Readiness {
    /// Bytes (or the end of the stream, or an error) may be waiting.
    ready: Cell<bool>,
    /// The peer closed (or the socket failed): readable for good. A short read does not clear
    /// it, since the end of the stream can arrive with the last bytes and raise no event after
    /// the read that takes them.
    closed: Cell<bool>,
    /// The poll's slot while it is armed.
    poll: Cell<Option<usize>>,
    /// The task waiting for the socket to become readable.
    waiter: RefCell<Option<Waker>>,
    /// The read the poll's next event submits (see [`TcpStream::read_ready`]).
    armed_read: Cell<Option<usize>>,
}

impl Readiness {
    fn new() -> Rc<Readiness> {
        Rc::new(Readiness {
            ready: Cell::new(false),
            closed: Cell::new(false),
            poll: Cell::new(None),
            waiter: RefCell::new(None),
            armed_read: Cell::new(None),
        })
    }

    pub(super) fn set_armed_read(&self, op: usize) {
        self.armed_read.set(Some(op));
    }

    pub(super) fn take_armed_read(&self) -> Option<usize> {
        self.armed_read.take()
    }

    /// A completion of the socket's poll.
    pub(super) fn event(&self, res: i32, more: bool) {
        if !more {
            self.poll.set(None);
        }
        if res == -libc::ECANCELED {
            return;
        }
        // Readable, hung up, in error, or the poll itself failed: the next read will say which.
        let hung_up = (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) as i32;
        if res > 0 && res & hung_up != 0 {
            self.closed.set(true);
        }
        self.ready.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// A read on the socket completed with `res` where `room` bytes were offered: if it came
    /// back short, or found nothing, it drained the socket.
    pub(super) fn read_done(&self, res: i32, room: u32) {
        // Nothing there at all: whatever an event said is over (even a hang-up, which leaves
        // the end of the stream to read, never `EAGAIN`).
        if res == -libc::EAGAIN {
            self.ready.set(false);
            self.closed.set(false);
        } else if !self.closed.get() && res > 0 && (res as u32) < room {
            self.ready.set(false);
        }
    }

    /// Arms the socket's poll if it is not armed.
    fn arm(self: &Rc<Self>, sock: Sock) {
        if self.poll.get().is_none() {
            self.poll
                .set(Some(driver::poll_readable(sock, Rc::clone(self))));
        }
    }

    /// Waits until the socket is readable, arming its poll if it is not armed.
    async fn readable(self: &Rc<Self>, sock: Sock) {
        poll_fn(|cx| {
            if self.ready.get() {
                return Poll::Ready(());
            }
            self.arm(sock);
            let mut waiter = self.waiter.borrow_mut();
            match &*waiter {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waiter = Some(cx.waker().clone()),
            }
            Poll::Pending
        })
        .await
    }

    fn disarm(&self) {
        if let Some(poll) = self.poll.take() {
            driver::cancel_poll(poll);
        }
    }
}

/// A connected TCP socket.
pub struct TcpStream {
    socket: std::net::TcpStream,
    readiness: Rc<Readiness>,
    /// Its slot in the registered-file table of the runtime it was made on.
    fixed: Option<super::Registered>,
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        // The poll holds the socket open in the kernel until its cancellation completes.
        self.readiness.disarm();
        if let Some(fixed) = self.fixed.take() {
            super::unregister_file(fixed);
        }
    }
}

impl TcpStream {
    /// Takes a connected, non-blocking socket, registered with the ring when there is room.
    pub fn from_std(socket: std::net::TcpStream) -> TcpStream {
        let fixed = super::register_file(socket.as_raw_fd());
        TcpStream {
            socket,
            readiness: Readiness::new(),
            fixed,
        }
    }

    /// How operations name the socket: its registered slot on the runtime that registered it.
    pub(super) fn sock(&self) -> Sock {
        match &self.fixed {
            Some(fixed) if fixed.is_current() => Sock::Fixed(fixed.slot),
            _ => Sock::Fd(self.socket.as_raw_fd()),
        }
    }

    /// Connects to `addr` without blocking the thread.
    pub async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(addr),
            Type::STREAM.nonblocking().cloexec(),
            Some(Protocol::TCP),
        )?;
        match socket.connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                let fd = types::Fd(socket.as_raw_fd());
                let sqe = opcode::PollAdd::new(fd, libc::POLLOUT as u32).build();
                let mut op = Op::submit(sqe, ());
                let (res, ()) = poll_fn(|cx| op.poll_done(cx)).await;
                if res < 0 {
                    return Err(io::Error::from_raw_os_error(-res));
                }
                if let Some(e) = socket.take_error()? {
                    return Err(e);
                }
            }
            Err(e) => return Err(e),
        }
        Ok(TcpStream::from_std(socket.into()))
    }

    /// The socket, for its options.
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.socket
    }

    /// Waits until a read would find bytes, the end of the stream or an error.
    pub async fn readable(&self) {
        self.readiness.readable(self.sock()).await
    }

    /// Reads once into `buf`'s spare capacity, waiting in the ring for bytes if none are there.
    /// `Ok(0)` is the end of the stream.
    pub async fn read(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.recv(buf, 0).await
    }

    /// Reads once when the socket is readable (see the module's documentation). When it is not
    /// readable yet, the read waits armed in the driver, which submits it at the poll's next
    /// event: the task is woken once, by the bytes, not first by the event and then by them.
    pub async fn read_ready(&self, mut buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            let (res, back) = if self.readiness.ready.get() {
                self.recv(buf, libc::MSG_DONTWAIT).await
            } else {
                self.recv_armed(buf).await
            };
            buf = back;
            match res {
                // The event was older than the last read: wait for the next one.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                res => return (res, buf),
            }
        }
    }

    async fn recv(&self, buf: Vec<u8>, flags: i32) -> (io::Result<usize>, Vec<u8>) {
        let (sqe, room) = self.recv_sqe(&buf, flags);
        let op = Op::submit_read(sqe, buf, Rc::clone(&self.readiness), room);
        Self::received(op).await
    }

    /// A `MSG_DONTWAIT` receive submitted at the poll's next event.
    async fn recv_armed(&self, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        self.readiness.arm(self.sock());
        let (sqe, room) = self.recv_sqe(&buf, libc::MSG_DONTWAIT);
        let read = ArmedRead::Sqe { sqe, room };
        let op = Op::arm_read(buf, Rc::clone(&self.readiness), read);
        Self::received(op).await
    }

    /// Waits until the socket is readable holding no buffer, then reads once, like
    /// [`TcpStream::read_ready`], into a buffer `take` gives at that moment: a connection
    /// waiting for its next request holds none, and its task is woken once, by the bytes.
    pub async fn read_next(&self, take: fn() -> Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
        loop {
            if self.readiness.ready.get() {
                return self.read_ready(take()).await;
            }
            let sock = self.sock();
            self.readiness.arm(sock);
            let read = ArmedRead::Take { sock, take };
            let mut op = Op::arm_read((), Rc::clone(&self.readiness), read);
            let (res, mut buf) = poll_fn(|cx| op.poll_taken(cx)).await;
            return match res {
                // The event was older than the last read: wait again, holding no buffer.
                n if n == -libc::EAGAIN => continue,
                n if n < 0 => (Err(io::Error::from_raw_os_error(-n)), buf),
                n => {
                    // SAFETY: the kernel initialised `n` bytes after the buffer's length.
                    unsafe { buf.set_len(buf.len() + n as usize) };
                    (Ok(n as usize), buf)
                }
            };
        }
    }

    /// A receive into `buf`'s spare capacity, and the room it offers.
    fn recv_sqe(&self, buf: &Vec<u8>, flags: i32) -> (io_uring::squeue::Entry, u32) {
        driver::recv_sqe(self.sock(), buf, buf.capacity(), flags)
    }

    async fn received(mut op: Op<Vec<u8>>) -> (io::Result<usize>, Vec<u8>) {
        let (res, mut buf) = poll_fn(|cx| op.poll_done(cx)).await;
        let len = buf.len();
        if res < 0 {
            return (Err(io::Error::from_raw_os_error(-res)), buf);
        }
        // SAFETY: the kernel initialised `res` bytes after `len`.
        unsafe { buf.set_len(len + res as usize) };
        (Ok(res as usize), buf)
    }

    /// Starts writing all of `buf` and returns at once: the request to a backend is not waited
    /// for (its task would be woken for nothing), only its reply is. `MSG_WAITALL` has the
    /// kernel finish a short write itself, so the one completion says whole or failed.
    pub fn start_write<B: Deref<Target = [u8]> + 'static>(&self, buf: B) -> Write<B> {
        let len = buf.len().min(u32::MAX as usize) as u32;
        let flags = libc::MSG_NOSIGNAL | libc::MSG_WAITALL;
        let sqe = on_sock!(self.sock(), t => opcode::Send::new(t, buf.as_ptr(), len).flags(flags).build());
        // The bytes live in `buf`'s heap allocation, which the operation owns.
        Write {
            whole: buf.len() == len as usize,
            len,
            op: Op::submit(sqe, buf),
        }
    }

    /// Whether the socket is as its last read left it: no byte and no end of stream since. True
    /// at once when no poll event came since that read; otherwise `peek` asks the socket, and a
    /// clean answer clears the readiness.
    pub fn idle_clean(&self, peek: impl FnOnce() -> bool) -> bool {
        if !self.readiness.ready.get() {
            return true;
        }
        let clean = peek();
        if clean {
            self.readiness.ready.set(false);
        }
        clean
    }

    /// Writes all of `buf`, and gives it back.
    pub async fn write_all<B: Deref<Target = [u8]> + 'static>(
        &self,
        buf: B,
    ) -> (io::Result<()>, B) {
        let mut buf = buf;
        let mut sent = 0;
        while sent < buf.len() {
            let rest = &buf[sent..];
            let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
            let sqe = on_sock!(self.sock(), t => opcode::Send::new(t, ptr, len).flags(libc::MSG_NOSIGNAL).build());
            // The bytes live in `buf`'s heap allocation, which the operation owns and which does
            // not move with it.
            let mut op = Op::submit(sqe, buf);
            let (res, back) = poll_fn(|cx| op.poll_done(cx)).await;
            buf = back;
            match res {
                0 => return (Err(io::ErrorKind::WriteZero.into()), buf),
                n if n < 0 => return (Err(io::Error::from_raw_os_error(-n)), buf),
                n => sent += n as usize,
            }
        }
        (Ok(()), buf)
    }
}

/// A write in flight, started by [`TcpStream::start_write`]; cancelled if dropped unfinished.
pub struct Write<B: 'static> {
    op: Op<B>,
    len: u32,
    /// All of the buffer was submitted (it is under 4 GiB).
    whole: bool,
}

impl<B: 'static> Write<B> {
    /// Whether the write has ended, every byte sent; false while it is in flight, or when it
    /// failed. Never waits, never registers to be woken.
    pub fn ended_whole(&mut self) -> bool {
        match self.op.try_done() {
            Some((res, _buf)) => self.whole && res >= 0 && res as u32 == self.len,
            None => false,
        }
    }
}

impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// A listening socket; accepting waits for its readiness in the ring, then calls `accept4`.
/// Dropping it cancels the poll: nothing of it stays in the ring to accept from a socket handed
/// over to another process.
pub struct TcpListener {
    socket: std::net::TcpListener,
    readiness: Rc<Readiness>,
}

impl TcpListener {
    /// Takes a bound, listening, non-blocking socket.
    pub fn from_std(socket: std::net::TcpListener) -> TcpListener {
        TcpListener {
            socket,
            readiness: Readiness::new(),
        }
    }

    /// The next connection, non-blocking.
    pub async fn accept(&self) -> io::Result<std::net::TcpStream> {
        loop {
            let fd = Sock::Fd(self.socket.as_raw_fd());
            self.readiness.readable(fd).await;
            match self.socket.accept() {
                Ok((stream, _)) => {
                    stream.set_nonblocking(true)?;
                    return Ok(stream);
                }
                // Drained: the poll's next event is a new connection. (Cleared here, right
                // after the system call: an event for a later connection is reaped after it.)
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readiness.ready.set(false),
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.readiness.disarm();
    }
}

//! One worker: a thread with its own ring, its own listener, and a slab of client connections.
//!
//! The loop is `submit_and_wait(1)`, then every completion is handled, each pushing the SQEs it
//! leads to; they all go to the kernel in the next `io_uring_enter`, so the sends of one request
//! to every backend share one submission.
//!
//! With `--poll` every socket also has a multishot `POLLIN` poll for its life, and a recv is
//! submitted only when a poll completion (or a recv that filled all it was offered) says bytes
//! are there, as the real server does; a multishot poll fires on new wakeups only, so a socket's
//! `ready` remembers an event no recv has followed yet.

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::mpsc::Sender;

use anyhow::{bail, Context, Result};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use socket2::{SockRef, Socket};

use crate::bufring::{self, BufRing};
use crate::http::{self, Json};
use crate::Mode;

const RING_ENTRIES: u32 = 4096;
/// Fixed file table slots per ring: `1 + backends` per connection.
const FIXED_FILES: u32 = 16384;
/// Read buffer per socket without `--multishot`; each recv gets at least a quarter of it spare.
const READ_BUF: usize = 16 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Accept,
    Recv,
    Send,
    /// `--poll`: the socket's multishot poll.
    Poll,
    /// `--poll`: the cancellation of a closing socket's poll (not counted in `inflight`).
    Cancel,
}

/// `user_data`: connection slot (32 bits) | its generation (16) | socket role (8: 0 is the
/// client, 1.. the backends) | op (8).
const fn user_data(slot: u32, gen: u16, role: usize, op: Op) -> u64 {
    (slot as u64) << 32 | (gen as u64) << 16 | (role as u64) << 8 | op as u64
}

const ACCEPT: u64 = user_data(u32::MAX, 0, 0, Op::Accept);

/// One socket of a connection: the client's (role 0) or a backend's (role 1..).
#[derive(Default)]
struct Sock {
    fd: RawFd,
    /// Bytes received and not consumed yet. Without `--multishot` the kernel receives into its
    /// spare capacity, so it is left alone (never grown) while a recv is in flight.
    buf: Vec<u8>,
    /// Bytes of the message being sent that the kernel has taken.
    sent: usize,
    /// A backend: the response to the current request is still expected.
    awaiting: bool,
    /// A backend: its answered response's price, body start and end in `buf`.
    price: f64,
    body: usize,
    end: usize,
    /// A single-shot recv is in flight, offered `offered` bytes.
    recving: bool,
    offered: u32,
    /// `--poll`: bytes may be waiting that no recv has been submitted for since: a poll event
    /// came while no recv was wanted or one was in flight, or the last recv filled its offer.
    ready: bool,
}

/// A client connection and its backend connections, a slot of the slab.
#[derive(Default)]
struct Conn {
    gen: u16,
    live: bool,
    closing: bool,
    /// Ops in the kernel for this connection. The slot (and the buffers the ops point into) is
    /// reused only once it is back to 0.
    inflight: u32,
    /// What the current request still waits for: each backend's send to complete and each
    /// backend's response to arrive. 0 when no request is being forwarded.
    pending: usize,
    /// The reply is being sent to the client.
    replying: bool,
    socks: Vec<Sock>,
    /// The backends' request: one buffer sent to them all.
    out: Vec<u8>,
    /// The client's reply, head and body.
    reply: Vec<u8>,
}

struct Worker {
    ring: IoUring,
    mode: Mode,
    listener: Socket,
    backends: Vec<SocketAddr>,
    /// The `Host` header of every backend request.
    host: String,
    conns: Vec<Conn>,
    free: Vec<u32>,
    bufs: Option<BufRing>,
    json: Json,
}

/// Sets up a worker on this thread, tells `ready` whether the kernel took it, then serves.
pub fn run(
    listener: Socket,
    backends: Vec<SocketAddr>,
    mode: Mode,
    ready: Sender<Result<()>>,
) -> Result<()> {
    match Worker::new(listener, backends, mode) {
        Ok(mut worker) => {
            let _ = ready.send(Ok(()));
            worker.serve()
        }
        // `main` reports it and exits.
        Err(e) => ready
            .send(Err(e))
            .map_err(|_| anyhow::anyhow!("main is gone")),
    }
}

impl Worker {
    fn new(listener: Socket, backends: Vec<SocketAddr>, mode: Mode) -> Result<Worker> {
        let mut builder = IoUring::builder();
        if mode.defer {
            // Completions then run only when this thread enters with GETEVENTS (which
            // `submit_and_wait(1)` does), never by interrupting it. COOP_TASKRUN (accepted by
            // 6.18 alongside) is left out: deferred task work never interrupts the task anyway.
            builder.setup_single_issuer().setup_defer_taskrun();
        }
        let ring = builder
            .build(RING_ENTRIES)
            .with_context(|| format!("io_uring_setup ({mode:?})"))?;
        if mode.fixed {
            ring.submitter()
                .register_files_sparse(FIXED_FILES)
                .context("registering a sparse file table")?;
        }
        let bufs = match mode.multishot {
            true => Some(BufRing::new(&ring.submitter()).context("registering a buffer ring")?),
            false => None,
        };
        Ok(Worker {
            ring,
            mode,
            listener,
            host: backends[0].to_string(),
            backends,
            conns: Vec::new(),
            free: Vec::new(),
            bufs,
            json: Json::default(),
        })
    }

    fn serve(&mut self) -> Result<()> {
        self.arm_accept();
        let mut cqes = Vec::new();
        loop {
            if let Err(e) = self.ring.submit_and_wait(1) {
                // EINTR: a signal; EBUSY: completions must be reaped first. Both: reap, retry.
                if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
                    return Err(e).context("io_uring_enter");
                }
            }
            // Copied out so that handling them may push SQEs.
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for (user_data, res, flags) in cqes.drain(..) {
                self.complete(user_data, res, flags);
            }
        }
    }

    /// Queues `entry`, handing a full SQ to the kernel first.
    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the memory an entry names stays valid and in place until its last completion:
        // a connection's buffers are not reused before its `inflight` is back to 0 nor grown
        // while a recv into them is in flight, and the buffer ring lives as long as the process.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            if let Err(e) = self.ring.submit() {
                assert!(e.raw_os_error() == Some(libc::EINTR), "io_uring_enter: {e}");
            }
        }
    }

    fn arm_accept(&mut self) {
        let listener = types::Fd(self.listener.as_raw_fd());
        let accept = opcode::AcceptMulti::new(listener)
            .flags(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            .build();
        self.push(accept.user_data(ACCEPT));
    }

    fn fixed_index(&self, slot: u32, role: usize) -> u32 {
        slot * (1 + self.backends.len() as u32) + role as u32
    }

    /// Queues an op on socket `role` of connection `slot`, named by its fixed table index
    /// (`--fixed`) or its descriptor.
    fn op(
        &mut self,
        slot: u32,
        role: usize,
        op: Op,
        build: impl FnOnce(types::Fd) -> squeue::Entry,
    ) {
        let fixed = self.fixed_index(slot, role);
        let conn = &mut self.conns[slot as usize];
        conn.inflight += 1;
        let user_data = user_data(slot, conn.gen, role, op);
        let entry = match self.mode.fixed {
            // The SQE `types::Fixed` makes: the index in `fd`, plus IOSQE_FIXED_FILE.
            true => build(types::Fd(fixed as RawFd)).flags(squeue::Flags::FIXED_FILE),
            false => build(types::Fd(conn.socks[role].fd)),
        };
        self.push(entry.user_data(user_data));
    }

    fn arm_recv(&mut self, slot: u32, role: usize) {
        if self.mode.multishot {
            return self.op(slot, role, Op::Recv, |fd| {
                opcode::RecvMulti::new(fd, bufring::GROUP).build()
            });
        }
        let sock = &mut self.conns[slot as usize].socks[role];
        sock.buf.reserve(READ_BUF / 4);
        let spare = sock.buf.spare_capacity_mut();
        let (ptr, len) = (spare.as_mut_ptr().cast::<u8>(), spare.len() as u32);
        (sock.recving, sock.offered, sock.ready) = (true, len, false);
        self.op(slot, role, Op::Recv, |fd| {
            opcode::Recv::new(fd, ptr, len).build()
        });
    }

    /// A message on the socket is incomplete: without `--multishot`, receive more; with
    /// `--poll`, only if bytes may be waiting, else the next poll event will say when.
    fn recv_more(&mut self, slot: u32, role: usize) {
        if self.mode.multishot {
            return; // the multishot recv stays armed
        }
        let sock = &self.conns[slot as usize].socks[role];
        if self.mode.poll && (sock.recving || !sock.ready) {
            return;
        }
        self.arm_recv(slot, role);
    }

    /// `--poll`: the socket's multishot readiness poll.
    fn arm_poll(&mut self, slot: u32, role: usize) {
        self.op(slot, role, Op::Poll, |fd| {
            opcode::PollAdd::new(fd, libc::POLLIN as u32)
                .multi(true)
                .build()
        });
    }

    /// Sends what is left of the socket's message: the reply to the client, the request to a
    /// backend.
    fn send(&mut self, slot: u32, role: usize) {
        let conn = &self.conns[slot as usize];
        let message = if role == 0 { &conn.reply } else { &conn.out };
        let rest = &message[conn.socks[role].sent..];
        let (ptr, len) = (rest.as_ptr(), rest.len() as u32);
        self.op(slot, role, Op::Send, |fd| {
            opcode::Send::new(fd, ptr, len).build()
        });
    }

    fn complete(&mut self, user_data: u64, res: i32, flags: u32) {
        if user_data == ACCEPT {
            return self.accepted(res, flags);
        }
        if user_data as u8 == Op::Cancel as u8 {
            return; // the poll's own last completion is what counts
        }
        let (slot, gen, role) = (
            (user_data >> 32) as u32,
            (user_data >> 16) as u16,
            (user_data >> 8) as u8,
        );
        let conn = &mut self.conns[slot as usize];
        let buffer = cqueue::buffer_select(flags);
        let give_back = |bufs: &mut Option<BufRing>| {
            if let (Some(bufs), Some(bid)) = (bufs, buffer) {
                bufs.give_back(bid);
            }
        };
        if !conn.live || conn.gen != gen {
            // Slots are freed only with nothing in flight, so this is a defence, not a path.
            return give_back(&mut self.bufs);
        }
        conn.inflight -= u32::from(!cqueue::more(flags));
        if conn.closing {
            give_back(&mut self.bufs);
            return self.maybe_free(slot);
        }
        match user_data as u8 {
            op if op == Op::Send as u8 => self.sent(slot, role as usize, res),
            op if op == Op::Poll as u8 => self.polled(slot, role as usize, res, flags),
            _ => self.received(slot, role as usize, res, flags, buffer),
        }
    }

    fn accepted(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.arm_accept();
        }
        if res < 0 {
            return eprintln!("accept: {}", std::io::Error::from_raw_os_error(-res));
        }
        // SAFETY: a descriptor accept has just made, owned by no one else.
        let client = unsafe { OwnedFd::from_raw_fd(res) };
        if let Err(e) = self.open(client) {
            eprintln!("connection dropped: {e:#}");
        }
    }

    /// Sets up a client connection: its backend connections, its slot, its first recvs.
    fn open(&mut self, client: OwnedFd) -> Result<()> {
        SockRef::from(&client).set_tcp_nodelay(true)?;
        let mut fds = vec![client];
        for addr in &self.backends {
            // A blocking connect, as the splitter's connection setup does, then non-blocking.
            let stream = TcpStream::connect(addr).with_context(|| format!("connecting {addr}"))?;
            stream.set_nodelay(true)?;
            stream.set_nonblocking(true)?;
            fds.push(stream.into());
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = self.conns.len() as u32;
                if self.mode.fixed && self.fixed_index(slot + 1, 0) > FIXED_FILES {
                    bail!("the fixed file table is full");
                }
                let cap = if self.mode.multishot { 0 } else { READ_BUF };
                let socks = fds.iter().map(|_| Sock {
                    buf: Vec::with_capacity(cap),
                    ..Sock::default()
                });
                self.conns.push(Conn {
                    socks: socks.collect(),
                    ..Conn::default()
                });
                slot
            }
        };
        if self.mode.fixed {
            let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
            let first = self.fixed_index(slot, 0);
            if let Err(e) = self.ring.submitter().register_files_update(first, &raw) {
                self.free.push(slot);
                return Err(e).context("registering the sockets");
            }
        }
        let conn = &mut self.conns[slot as usize];
        for (sock, fd) in conn.socks.iter_mut().zip(fds) {
            sock.fd = fd.into_raw_fd();
            (sock.awaiting, sock.recving, sock.ready) = (false, false, false);
        }
        (conn.live, conn.pending, conn.replying) = (true, 0, false);
        if self.mode.poll {
            // Receives wait for readiness.
            for role in 0..=self.backends.len() {
                self.arm_poll(slot, role);
            }
            return Ok(());
        }
        // Multishot recvs stay armed on every socket for the connection's life; single-shot
        // ones are armed when a message is expected.
        let sockets = if self.mode.multishot {
            self.backends.len() + 1
        } else {
            1
        };
        for role in 0..sockets {
            self.arm_recv(slot, role);
        }
        Ok(())
    }

    fn received(&mut self, slot: u32, role: usize, res: i32, flags: u32, buffer: Option<u16>) {
        if res == -libc::ENOBUFS {
            // The buffer ring ran dry (buffers go back as soon as they are copied): re-arm.
            return self.arm_recv(slot, role);
        }
        let sock = &mut self.conns[slot as usize].socks[role];
        sock.recving = false;
        if res <= 0 {
            return self.close(slot); // end of stream or error
        }
        // All it was offered: more may be queued, with no new wakeup to come for it.
        sock.ready |= res as u32 == sock.offered;
        let buf = &mut sock.buf;
        match (&mut self.bufs, buffer) {
            (Some(bufs), Some(bid)) => {
                buf.extend_from_slice(bufs.get(bid, res as usize));
                bufs.give_back(bid);
            }
            // SAFETY: the kernel wrote `res` bytes into the spare capacity the recv was given.
            (None, _) => unsafe { buf.set_len(buf.len() + res as usize) },
            (Some(_), None) => return self.close(slot),
        }
        if buf.len() > 2 * http::MAX_MESSAGE {
            return self.close(slot);
        }
        if self.mode.multishot && !cqueue::more(flags) {
            self.arm_recv(slot, role); // the kernel ended the multishot recv
        }
        match role {
            0 => self.next_request(slot),
            _ => self.backend_data(slot, role),
        }
    }

    /// Forwards the client's next request if it is whole and the last one is answered.
    fn next_request(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.pending > 0 || conn.replying {
            return; // `--multishot`: a pipelined request waits in the buffer
        }
        match http::backend_request(&conn.socks[0].buf, &self.host, &mut conn.out) {
            Err(http::Bad) => self.close(slot),
            Ok(None) => self.recv_more(slot, 0),
            Ok(Some(length)) => {
                conn.socks[0].buf.drain(..length);
                conn.pending = 2 * self.backends.len();
                for sock in &mut conn.socks[1..] {
                    (sock.sent, sock.awaiting) = (0, true);
                }
                for role in 1..=self.backends.len() {
                    self.send(slot, role);
                    match self.mode.poll {
                        // Only if an event came while the backend was idle: its response
                        // comes with a new one.
                        true => self.recv_more(slot, role),
                        false if !self.mode.multishot => self.arm_recv(slot, role),
                        false => {}
                    }
                }
            }
        }
    }

    fn sent(&mut self, slot: u32, role: usize, res: i32) {
        if res <= 0 {
            return self.close(slot);
        }
        let conn = &mut self.conns[slot as usize];
        conn.socks[role].sent += res as usize;
        let length = if role == 0 {
            conn.reply.len()
        } else {
            conn.out.len()
        };
        if conn.socks[role].sent < length {
            self.send(slot, role); // a short send: the rest
        } else if role == 0 {
            conn.replying = false;
            self.next_request(slot);
        } else {
            self.progress(slot);
        }
    }

    fn backend_data(&mut self, slot: u32, role: usize) {
        let sock = &mut self.conns[slot as usize].socks[role];
        if !sock.awaiting {
            return; // bytes nobody asked for: kept, and taken for the next response
        }
        match http::response(&sock.buf) {
            Err(http::Bad) => self.close(slot),
            Ok(None) => self.recv_more(slot, role),
            Ok(Some(response)) => {
                let body = &sock.buf[response.body..response.end];
                let price = match response.status {
                    200 => self.json.price(body),
                    _ => None,
                };
                sock.price = price.unwrap_or(f64::NEG_INFINITY);
                (sock.awaiting, sock.body, sock.end) = (false, response.body, response.end);
                self.progress(slot);
            }
        }
    }

    /// `--poll`: a poll event on socket `role`. If the socket is readable (or hung up or in
    /// error: a recv then says which), a message is wanted on it and no recv is in flight, one
    /// recv is submitted; otherwise the event is remembered in `ready`.
    fn polled(&mut self, slot: u32, role: usize, res: i32, flags: u32) {
        if res < 0 {
            return self.close(slot);
        }
        if !cqueue::more(flags) {
            self.arm_poll(slot, role); // the kernel ended the multishot poll
        }
        let readable = (libc::POLLIN | libc::POLLHUP | libc::POLLERR) as i32;
        if res & readable == 0 {
            return;
        }
        let conn = &mut self.conns[slot as usize];
        let wanted = match role {
            0 => conn.pending == 0 && !conn.replying,
            _ => conn.socks[role].awaiting,
        };
        let sock = &mut conn.socks[role];
        sock.ready = true;
        if wanted && !sock.recving {
            self.arm_recv(slot, role);
        }
    }

    /// One backend send or response done; the reply goes out after the last.
    fn progress(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        conn.pending -= 1;
        if conn.pending > 0 {
            return;
        }
        let (client, backends) = conn.socks.split_first_mut().expect("a client socket");
        let winner = backends
            .iter()
            .reduce(|best, b| if b.price > best.price { b } else { best })
            .expect("a backend");
        http::reply(&winner.buf[winner.body..winner.end], &mut conn.reply);
        for backend in backends {
            backend.buf.drain(..backend.end);
        }
        (client.sent, conn.replying) = (0, true);
        self.send(slot, 0);
    }

    /// Closes a connection: shutting its sockets down ends the ops still in flight (a pending
    /// recv completes with 0), and the slot is freed when the last has completed. A multishot
    /// poll outlives the shutdown (it reports the hangup with F_MORE and stays armed), so it is
    /// cancelled. ASYNC_CANCEL, not POLL_REMOVE: the shutdown's own wakeup has usually just
    /// queued the poll's task work, and POLL_REMOVE then fails with -EALREADY (seen under
    /// `--defer`, leaking every connection); a cancel marks it and its task work ends it.
    fn close(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.closing {
            return;
        }
        conn.closing = true;
        for sock in &conn.socks {
            // SAFETY: the connection's own descriptor, still open.
            unsafe { libc::shutdown(sock.fd, libc::SHUT_RDWR) };
        }
        if self.mode.poll {
            let gen = conn.gen;
            for role in 0..=self.backends.len() {
                // Not found (-ENOENT) if the kernel has just ended it: it is not re-armed now.
                let poll = user_data(slot, gen, role, Op::Poll);
                let cancel = opcode::AsyncCancel::new(poll).build();
                self.push(cancel.user_data(user_data(slot, gen, role, Op::Cancel)));
            }
        }
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: u32) {
        if self.conns[slot as usize].inflight > 0 {
            return;
        }
        if self.mode.fixed {
            let empty = vec![-1; self.backends.len() + 1];
            let first = self.fixed_index(slot, 0);
            let _ = self.ring.submitter().register_files_update(first, &empty);
        }
        let conn = &mut self.conns[slot as usize];
        for sock in &mut conn.socks {
            // SAFETY: the connection's own descriptor; nothing in flight uses it any more.
            unsafe { libc::close(sock.fd) };
            sock.buf.clear();
        }
        (conn.live, conn.closing) = (false, false);
        conn.gen = conn.gen.wrapping_add(1);
        self.free.push(slot);
    }
}

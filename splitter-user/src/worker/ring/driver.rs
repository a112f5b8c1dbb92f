//! The ring, and every operation in flight: a slab indexed by the submission's `user_data`.
//!
//! An operation is awaited by an [`Op`], which owns what the kernel reads or writes (a buffer,
//! an address). If the `Op` is dropped before its completion, what it owns moves into the slab
//! and a cancellation is submitted; the slot, and the buffer, are freed at the completion, so
//! the kernel never writes into freed memory. A socket's readiness poll is an operation too,
//! multishot: each of its completions marks the socket readable.

use std::any::Any;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use io_uring::types::{SubmitArgs, Timespec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;

use super::batch;
use super::net::Readiness;
use super::with_core;

/// `io_uring_enter` flag: reap completions (and, with `DEFER_TASKRUN`, run the deferred work
/// that posts them) even when not waiting.
const ENTER_GETEVENTS: u32 = 1;

/// `io_uring_enter` flag: the argument is a [`GeteventsArg`].
const ENTER_EXT_ARG: u32 = 8;

/// `struct io_uring_getevents_arg` as of Linux 6.12, which gave its padding the meaning of
/// `min_wait_usec` (the io-uring crate's binding still calls it `pad`). Older kernels refuse a
/// non-zero `pad` with EINVAL, which is how [`Driver::new`] tells whether the kernel has it.
#[repr(C)]
struct GeteventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    /// A `*const Timespec`, or 0.
    ts: u64,
}

/// The timeout of a batched wait with no timer due: the batch's minimum wait needs one to fall
/// back on (without it the kernel ends the wait at the minimum, completions or not).
const NO_TIMER: std::time::Duration = std::time::Duration::from_secs(3600);

/// `user_data` of submissions whose own completion means nothing (cancellations).
const IGNORED: u64 = u64::MAX;

/// The io_uring set-up of every worker: its completions are only ever reaped by its own thread,
/// so the kernel neither locks for other submitters (SINGLE_ISSUER) nor interrupts the thread
/// to post them (DEFER_TASKRUN: they are posted when the thread enters the ring). Linux 6.1.
pub fn builder() -> io_uring::Builder {
    let mut ring = IoUring::builder();
    ring.setup_single_issuer().setup_defer_taskrun();
    ring
}

enum State {
    /// Submitted; the waker of the task that awaits it, and for a read, the readiness of its
    /// socket and the room it was offered (a short read drained the socket).
    Waiting(Option<Waker>, Option<(Rc<Readiness>, u32)>),
    /// A read not yet submitted: the socket's poll submits it when it next reports the socket
    /// readable, so the task is woken once, by the read's completion, not first by the event.
    Armed {
        waker: Option<Waker>,
        readiness: Rc<Readiness>,
        read: ArmedRead,
    },
    /// A read into a buffer the driver took when the socket became readable, submitted.
    Reading {
        waker: Option<Waker>,
        readiness: Rc<Readiness>,
        room: u32,
        buf: Vec<u8>,
    },
    /// Such a read, completed: the result and the buffer.
    Read(i32, Vec<u8>),
    /// Completed, not yet taken: the result.
    Done(i32),
    /// Its `Op` was dropped first: what the kernel may still use, kept until the completion.
    Abandoned { _owned: Option<Box<dyn Any>> },
    /// A socket's multishot readiness poll.
    Poll(Rc<Readiness>),
    /// The read of the runtime's eventfd: a wake-up from another thread.
    Wakeup,
}

/// A socket as an operation names it: its slot in the ring's registered-file table (the kernel
/// then takes no reference on the file per operation), or its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sock {
    Fd(RawFd),
    Fixed(u32),
}

/// Builds an entry with `$t` bound to the socket's `types::Fd` or `types::Fixed`.
macro_rules! on_sock {
    ($sock:expr, $t:ident => $build:expr) => {
        match $sock {
            $crate::worker::ring::driver::Sock::Fd(fd) => {
                let $t = io_uring::types::Fd(fd);
                $build
            }
            $crate::worker::ring::driver::Sock::Fixed(slot) => {
                let $t = io_uring::types::Fixed(slot);
                $build
            }
        }
    };
}
pub(crate) use on_sock;

/// The ring's registered-file table: a slot per socket, taken when the socket is made and
/// given back when it is dropped. A slot given back is reused only after the next submission,
/// so an entry queued before it was given back never reaches the socket that takes it next.
struct Files {
    size: u32,
    /// Slots never used yet start here.
    next: u32,
    free: Vec<u32>,
    /// Given back since the last submission.
    quarantined: Vec<u32>,
}

/// Most registered files per ring; past it (or the open-file limit) sockets go by descriptor.
const MAX_FILES: u32 = 1 << 16;

/// What an armed read submits when its socket becomes readable.
pub(super) enum ArmedRead {
    /// This receive, into a buffer its `Op` owns, offering `room` bytes.
    Sqe { sqe: squeue::Entry, room: u32 },
    /// A receive on `fd` into a buffer `take` gives at that moment: a connection waiting for
    /// its next request holds no buffer, and is woken once, with the bytes.
    Take { sock: Sock, take: fn() -> Vec<u8> },
}

/// A receive on `sock` into `buf`'s spare capacity, and the room it offers.
pub(super) fn recv_sqe(
    sock: Sock,
    buf: &[u8],
    capacity: usize,
    flags: i32,
) -> (squeue::Entry, u32) {
    let len = buf.len();
    let room = (capacity - len).min(u32::MAX as usize) as u32;
    // The kernel writes at most `room` bytes after `len`, into the spare capacity of the heap
    // allocation the operation owns until the completion: the pointer is the kernel's only,
    // never made into a reference.
    let ptr = buf.as_ptr().wrapping_add(len).cast_mut();
    let sqe = on_sock!(sock, t => opcode::Recv::new(t, ptr, room).flags(flags).build());
    (sqe, room)
}

/// The ring and its operations.
pub(super) struct Driver {
    ring: IoUring,
    ops: Slab<State>,
    /// The eventfd read's target.
    wakeup: Box<u64>,
    eventfd: RawFd,
    /// The runtime is ending: the eventfd read is not renewed.
    closing: bool,
    /// Completions of one turn, taken off the queue before they are handled (handling one may
    /// submit); kept so a turn allocates nothing.
    reaped: Vec<cqueue::Entry>,
    /// The registered-file table, if the kernel gave one.
    files: Option<Files>,
    /// The kernel can wait for a batch of completions for a bounded time (Linux 6.12).
    pub(super) batches: bool,
    batcher: batch::Batcher,
    /// Sleeps that asked for a batch, for the tests to tell that one did.
    #[cfg(test)]
    pub(super) batched_sleeps: usize,
}

impl Driver {
    pub(super) fn new(entries: u32) -> io::Result<Driver> {
        // Room for eight completions per submission slot: a burst of poll events from many
        // idle connections fits without the kernel holding completions back on its overflow list.
        let ring = builder().setup_cqsize(entries * 8).build(entries)?;
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: fills a valid rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        let size = limit.rlim_cur.min(u64::from(MAX_FILES)) as u32;
        let files = ring
            .submitter()
            .register_files_sparse(size)
            .ok()
            .map(|()| Files {
                size,
                next: 0,
                free: Vec::new(),
                quarantined: Vec::new(),
            });
        let batches = min_wait_works(&ring);
        Ok(Driver {
            batches,
            batcher: batch::Batcher::default(),
            #[cfg(test)]
            batched_sleeps: 0,
            ring,
            ops: Slab::with_capacity(entries as usize),
            wakeup: Box::new(0),
            eventfd: -1,
            closing: false,
            reaped: Vec::with_capacity(entries as usize),
            files,
        })
    }

    /// Puts `fd` in the registered-file table; its slot, or `None` when the table is full or
    /// absent (the socket then goes by descriptor).
    pub(super) fn register_file(&mut self, fd: RawFd) -> Option<u32> {
        let files = self.files.as_mut()?;
        let slot = files.free.pop().or_else(|| {
            (files.next < files.size).then(|| {
                files.next += 1;
                files.next - 1
            })
        })?;
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => Some(slot),
            Err(_) => {
                files.free.push(slot);
                None
            }
        }
    }

    /// Takes a socket out of the table (the kernel drops its reference once the operations
    /// that hold it are done); the slot is reused after the next submission.
    pub(super) fn unregister_file(&mut self, slot: u32) {
        let _ = self.ring.submitter().register_files_update(slot, &[-1]);
        if let Some(files) = self.files.as_mut() {
            files.quarantined.push(slot);
        }
    }

    /// Keeps a read of `eventfd` in the ring: its completion is a wake-up from another thread.
    pub(super) fn watch_eventfd(&mut self, eventfd: RawFd) {
        self.eventfd = eventfd;
        self.read_eventfd();
    }

    fn read_eventfd(&mut self) {
        let sqe =
            opcode::Read::new(types::Fd(self.eventfd), (&raw mut *self.wakeup).cast(), 8).build();
        self.submit(sqe, State::Wakeup);
    }

    /// Queues `sqe`; it reaches the kernel at the next turn (or now, if the queue is full).
    fn submit(&mut self, sqe: squeue::Entry, state: State) -> usize {
        let index = self.ops.insert(state);
        self.push(sqe.user_data(index as u64));
        index
    }

    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: every buffer and address an entry points to is owned by its operation's slot
        // (or the driver) until the completion.
        while unsafe { self.ring.submission().push(&sqe) }.is_err() {
            self.enter(None);
        }
    }

    /// One entry into the ring: submits what is queued, runs the deferred completions, and
    /// waits for one if `wait` says so (`Some(None)`: until a completion; `Some(Some(at))`:
    /// until `at` at the latest); then hands every completion to its operation. True when
    /// another thread woke the runtime.
    pub(super) fn turn(&mut self, wait: Option<Option<Instant>>) -> bool {
        match wait {
            None => self.enter(None),
            Some(at) => {
                let left = at.map(|at| at.saturating_duration_since(Instant::now()));
                if left.is_some_and(|left| left.is_zero()) {
                    self.enter(None);
                } else {
                    self.enter(Some(left));
                }
            }
        }
        self.dispatch()
    }

    /// Submits what is queued and reaps; with `sleep`, waits first: for completions (a batch,
    /// as [`batch::Batcher::wait`] sizes it) and, if a timer is `Some(left)` away, no longer than that.
    fn enter(&mut self, sleep: Option<Option<std::time::Duration>>) {
        let pending = self.ring.submission().len() as u32;
        let wait = sleep.map(|left| match self.batcher.wait(self.ops.len(), left) {
            wait if self.batches => wait,
            _ => batch::Wait::PLAIN,
        });
        let submitter = self.ring.submitter();
        let res = match (sleep, wait) {
            (Some(left), Some(wait)) => {
                if !wait.batch_for.is_zero() {
                    let left = left.unwrap_or(NO_TIMER);
                    let ts = Timespec::new()
                        .sec(left.as_secs())
                        .nsec(left.subsec_nanos());
                    let arg = GeteventsArg {
                        sigmask: 0,
                        sigmask_sz: 0,
                        min_wait_usec: wait.batch_for.as_micros() as u32,
                        ts: (&raw const ts) as u64,
                    };
                    let flags = ENTER_GETEVENTS | ENTER_EXT_ARG;
                    #[cfg(test)]
                    {
                        self.batched_sleeps += 1;
                    }
                    // SAFETY: `arg` and the timespec it points to outlive the call.
                    unsafe { submitter.enter(pending, wait.completions, flags, Some(&arg)) }
                } else if let Some(left) = left {
                    let ts = Timespec::new()
                        .sec(left.as_secs())
                        .nsec(left.subsec_nanos());
                    submitter.submit_with_args(1, &SubmitArgs::new().timespec(&ts))
                } else {
                    submitter.submit_and_wait(1)
                }
            }
            _ => {
                // SAFETY: a plain submit-and-reap; no argument is passed.
                unsafe { submitter.enter::<libc::sigset_t>(pending, 0, ENTER_GETEVENTS, None) }
            }
        };
        if let Some(wait) = wait {
            let completions = self.ring.completion().len();
            self.batcher.woke(wait, completions);
        }
        if let Some(files) = self.files.as_mut() {
            // Every entry queued before a slot was given back has reached the kernel, which
            // resolved its file as it took it.
            if !files.quarantined.is_empty() && self.ring.submission().is_empty() {
                files.free.append(&mut files.quarantined);
            }
        }
        match res {
            Ok(_) => {}
            // The timeout passed, a signal came, or the completion queue is full (reaped next).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) => {}
            Err(e) => panic!("io_uring_enter failed: {e}"),
        }
    }

    /// Hands each completion to its operation; true when the eventfd was read.
    fn dispatch(&mut self) -> bool {
        let mut woke_remote = false;
        let mut reaped = std::mem::take(&mut self.reaped);
        reaped.extend(self.ring.completion());
        for cqe in reaped.drain(..) {
            let user_data = cqe.user_data();
            if user_data == IGNORED {
                continue;
            }
            let index = user_data as usize;
            let res = cqe.result();
            let more = cqueue::more(cqe.flags());
            let Some(state) = self.ops.get_mut(index) else {
                continue;
            };
            match state {
                State::Waiting(waker, drains) => {
                    if let Some((readiness, room)) = drains {
                        readiness.read_done(res, *room);
                    }
                    let waker = waker.take();
                    *state = State::Done(res);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                State::Poll(readiness) => {
                    readiness.event(res, more);
                    let armed = readiness.take_armed_read();
                    if !more {
                        self.ops.remove(index);
                    }
                    if let Some(read) = armed {
                        self.submit_armed(read);
                    }
                }
                State::Abandoned { .. } => {
                    if !more {
                        self.ops.remove(index);
                    }
                }
                State::Wakeup => {
                    self.ops.remove(index);
                    woke_remote = true;
                    if !self.closing {
                        self.read_eventfd();
                    }
                }
                State::Reading { .. } => {
                    let State::Reading {
                        waker,
                        readiness,
                        room,
                        buf,
                    } = std::mem::replace(state, State::Done(res))
                    else {
                        unreachable!();
                    };
                    readiness.read_done(res, room);
                    *state = State::Read(res, buf);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
                State::Done(_) | State::Read(..) => {
                    unreachable!("a one-shot operation completed twice")
                }
                State::Armed { .. } => {
                    unreachable!("an armed read completed before its submission")
                }
            }
        }
        self.reaped = reaped;
        woke_remote
    }

    /// Submits the armed read `index`: its socket is readable.
    fn submit_armed(&mut self, index: usize) {
        let State::Armed {
            waker,
            readiness,
            read,
        } = std::mem::replace(&mut self.ops[index], State::Done(0))
        else {
            unreachable!("a socket's armed read is in the armed state");
        };
        let sqe = match read {
            ArmedRead::Sqe { sqe, room } => {
                self.ops[index] = State::Waiting(waker, Some((readiness, room)));
                sqe
            }
            ArmedRead::Take { sock, take } => {
                let buf = take();
                let (sqe, room) = recv_sqe(sock, &buf, buf.capacity(), libc::MSG_DONTWAIT);
                self.ops[index] = State::Reading {
                    waker,
                    readiness,
                    room,
                    buf,
                };
                sqe
            }
        };
        self.push(sqe.user_data(index as u64));
    }

    /// Cancels operation `index` (its completion still comes, and frees the slot).
    fn cancel(&mut self, index: usize) {
        let sqe = opcode::AsyncCancel::new(index as u64).build();
        self.push(sqe.user_data(IGNORED));
    }

    /// At the runtime's end: cancels everything still in flight and waits a little for it to
    /// complete. What is left then (a kernel that does not answer) is leaked, not freed under it.
    pub(super) fn shut_down(&mut self) {
        self.closing = true;
        let live: Vec<usize> = self.ops.iter().map(|(index, _)| index).collect();
        for index in live {
            self.cancel(index);
        }
        let until = Instant::now() + std::time::Duration::from_millis(500);
        while !self.ops.is_empty() && Instant::now() < until {
            self.enter(Some(Some(std::time::Duration::from_millis(10))));
            self.dispatch();
            // Completed one-shot operations whose `Op` is gone are freed here.
            self.ops
                .retain(|_, state| !matches!(state, State::Done(_) | State::Read(..)));
        }
        for state in self.ops.drain() {
            std::mem::forget(state);
        }
    }
}

/// The submitting side of an operation: awaits its result, owns `T` (what the kernel uses)
/// until then, and gives it back with the result.
pub struct Op<T: 'static> {
    index: Option<usize>,
    owned: Option<T>,
}

impl<T: 'static> Op<T> {
    /// Submits `sqe`, which points into `owned`.
    pub(super) fn submit(sqe: squeue::Entry, owned: T) -> Op<T> {
        Op::submit_state(sqe, owned, State::Waiting(None, None))
    }

    /// Submits a read on a socket with `readiness`, offering it `room` bytes.
    pub(super) fn submit_read(
        sqe: squeue::Entry,
        owned: T,
        readiness: Rc<Readiness>,
        room: u32,
    ) -> Op<T> {
        Op::submit_state(sqe, owned, State::Waiting(None, Some((readiness, room))))
    }

    /// A read on a socket with `readiness` that is not readable now: submitted by the driver
    /// when the socket's poll (armed by the caller) next reports it readable.
    pub(super) fn arm_read(owned: T, readiness: Rc<Readiness>, read: ArmedRead) -> Op<T> {
        let index = with_core(|core| {
            core.driver.borrow_mut().ops.insert(State::Armed {
                waker: None,
                readiness: Rc::clone(&readiness),
                read,
            })
        });
        readiness.set_armed_read(index);
        Op {
            index: Some(index),
            owned: Some(owned),
        }
    }

    fn submit_state(sqe: squeue::Entry, owned: T, state: State) -> Op<T> {
        let index = with_core(|core| core.driver.borrow_mut().submit(sqe, state));
        Op {
            index: Some(index),
            owned: Some(owned),
        }
    }

    /// The result (a count, or `-errno`), and what the operation owned.
    pub fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<(i32, T)> {
        let index = self
            .index
            .expect("an operation polled after its completion");
        with_core(|core| {
            let mut driver = core.driver.borrow_mut();
            match &mut driver.ops[index] {
                State::Done(res) => {
                    let res = *res;
                    driver.ops.remove(index);
                    self.index = None;
                    Poll::Ready((res, self.owned.take().expect("owned until completion")))
                }
                State::Waiting(waker, _)
                | State::Armed { waker, .. }
                | State::Reading { waker, .. } => {
                    register(waker, cx);
                    Poll::Pending
                }
                _ => unreachable!("an awaited operation is waiting or done"),
            }
        })
    }

    /// The result of an [`ArmedRead::Take`] read, and the buffer the driver took for it.
    pub fn poll_taken(&mut self, cx: &mut Context<'_>) -> Poll<(i32, Vec<u8>)> {
        let index = self
            .index
            .expect("an operation polled after its completion");
        with_core(|core| {
            let mut driver = core.driver.borrow_mut();
            match &mut driver.ops[index] {
                State::Read(..) => {
                    let State::Read(res, buf) = driver.ops.remove(index) else {
                        unreachable!();
                    };
                    self.index = None;
                    Poll::Ready((res, buf))
                }
                State::Armed { waker, .. } | State::Reading { waker, .. } => {
                    register(waker, cx);
                    Poll::Pending
                }
                _ => unreachable!("a taken read is armed, reading or read"),
            }
        })
    }

    /// The result and what the operation owned, if it has completed; never registers to be
    /// woken (a send nobody waits for is looked at when its reply is in).
    pub fn try_done(&mut self) -> Option<(i32, T)> {
        let index = self.index?;
        with_core(|core| {
            let mut driver = core.driver.borrow_mut();
            let State::Done(res) = driver.ops[index] else {
                return None;
            };
            driver.ops.remove(index);
            self.index = None;
            Some((res, self.owned.take().expect("owned until completion")))
        })
    }
}

impl<T: 'static> Drop for Op<T> {
    fn drop(&mut self) {
        let Some(index) = self.index else { return };
        let owned = self.owned.take();
        let _ = super::CURRENT.try_with(|current| {
            let current = current.borrow();
            let Some(core) = current.as_ref() else {
                // No runtime: the kernel may still write into it; leak rather than free.
                std::mem::forget(owned);
                return;
            };
            let mut driver = core.driver.borrow_mut();
            let state = &mut driver.ops[index];
            let kept: Option<Box<dyn Any>> = match state {
                State::Armed { readiness, .. } => {
                    // Never submitted: nothing of it is in the kernel.
                    readiness.take_armed_read();
                    driver.ops.remove(index);
                    return;
                }
                State::Done(_) | State::Read(..) => {
                    driver.ops.remove(index);
                    return;
                }
                State::Reading { buf, .. } => Some(Box::new(std::mem::take(buf))),
                _ => owned.map(|t| Box::new(t) as Box<dyn Any>),
            };
            *state = State::Abandoned { _owned: kept };
            driver.cancel(index);
        });
    }
}

/// Keeps `cx`'s waker in `slot`, unless the one there wakes the same task.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
}

/// Arms a multishot readiness poll on `sock` for `readiness`; returns its index (to cancel it).
pub(super) fn poll_readable(sock: Sock, readiness: Rc<Readiness>) -> usize {
    let events = (libc::POLLIN | libc::POLLRDHUP) as u32;
    let sqe = on_sock!(sock, t => opcode::PollAdd::new(t, events).multi(true).build());
    with_core(|core| core.driver.borrow_mut().submit(sqe, State::Poll(readiness)))
}

/// Cancels a readiness poll; its last completion frees it.
pub(super) fn cancel_poll(index: usize) {
    let _ = super::CURRENT.try_with(|current| {
        if let Some(core) = &*current.borrow() {
            core.driver.borrow_mut().cancel(index);
        }
    });
}

/// Whether the kernel takes a batch's minimum wait: an enter that waits for nothing, with one.
fn min_wait_works(ring: &IoUring) -> bool {
    let ts = Timespec::new();
    let arg = GeteventsArg {
        sigmask: 0,
        sigmask_sz: 0,
        min_wait_usec: 1,
        ts: (&raw const ts) as u64,
    };
    // SAFETY: `arg` and the timespec it points to outlive the call; nothing is submitted.
    unsafe {
        ring.submitter()
            .enter(0, 0, ENTER_GETEVENTS | ENTER_EXT_ARG, Some(&arg))
    }
    .is_ok()
}

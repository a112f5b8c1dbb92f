//! The io_uring worker runtime: one ring, one thread, one loop, no runtime beneath it.
//!
//! A worker's tasks (its connections, late replies, health checks) are futures polled by this
//! thread alone. The loop runs the woken tasks, fires the timers that are due, then enters the
//! ring once: that one system call submits what the tasks asked for, runs the kernel's deferred
//! completions (`DEFER_TASKRUN`: the kernel never interrupts the thread for them) and, when no
//! task is runnable, sleeps until a completion (a batch of them, under load) or the next timer.
//! Readiness comes from the ring too (a multishot poll per socket), so there is no epoll set and
//! no second event source.
//!
//! It replaces tokio-uring, which runs a ring beneath tokio's epoll reactor: every wake-up there
//! went through epoll, tokio's scheduler and tokio-uring's driver task, and the ring could use
//! neither `DEFER_TASKRUN` (completions were reaped without `GETEVENTS`) nor poll for readiness.
//!
//! - [`driver`]: the ring, and each operation in flight with what it owns.
//! - [`batch`]: how long a worker with nothing to run waits, and for how many completions.
//! - [`time`]: the timers, and the loop's clock.
//! - [`net`]: TCP sockets on the ring.

pub mod batch;
pub mod driver;
pub mod net;
pub mod time;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

use driver::Driver;
use time::Timers;

pub use net::{TcpListener, TcpStream};
pub use time::{now_cached, sleep_until, Sleep};

/// Most tasks polled between two entries into the ring: a flood of wake-ups cannot keep the
/// loop from submitting and reaping.
const BUDGET: usize = 256;

type Task = Pin<Box<dyn Future<Output = ()>>>;

/// A task's slot: who wakes it, and, while it is not being polled, its waker and itself.
type Slot = (Arc<Header>, Option<(Waker, Task)>);

/// What a waker points to: its task, and the way back to its runtime from any thread.
struct Header {
    /// The task's slot; `usize::MAX` for the future `block_on` runs.
    slot: usize,
    /// Already in the run queue: a second wake-up adds nothing.
    queued: AtomicBool,
    /// The runtime that owns the task.
    remote: Arc<Remote>,
}

/// How another thread (the control plane's `watch` channels) wakes a worker's task: a queue
/// behind a lock, and an eventfd whose read waits in the ring.
struct Remote {
    /// Unique per runtime, to tell a wake-up on the owner thread from one elsewhere.
    id: usize,
    queue: Mutex<Vec<Arc<Header>>>,
    eventfd: std::os::fd::OwnedFd,
}

impl Wake for Header {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let local = CURRENT.with(|current| match &*current.borrow() {
            Some(core) if core.remote.id == self.remote.id => {
                core.run_queue.borrow_mut().push_back(Arc::clone(self));
                true
            }
            _ => false,
        });
        if !local {
            self.remote
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Arc::clone(self));
            let one = 1u64;
            // SAFETY: writes 8 bytes from a valid u64 to the runtime's own eventfd. It fails only
            // when the counter is saturated, and then a wake-up is pending anyway.
            unsafe { libc::write(self.remote.eventfd_raw(), (&raw const one).cast(), 8) };
        }
    }
}

impl Remote {
    fn eventfd_raw(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.eventfd.as_raw_fd()
    }
}

/// One worker thread's runtime state, reached through [`CURRENT`] by the futures it polls.
struct Core {
    driver: RefCell<Driver>,
    timers: RefCell<Timers>,
    /// Each task with its waker, made once (a poll borrows it: no count to touch); the pair is
    /// out of its slot while the task is polled.
    tasks: RefCell<Slab<Slot>>,
    run_queue: RefCell<VecDeque<Arc<Header>>>,
    remote: Arc<Remote>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Core>>> = const { RefCell::new(None) };
}

/// The current thread's runtime. Panics outside one: only the worker's own code calls this.
fn with_core<R>(f: impl FnOnce(&Core) -> R) -> R {
    CURRENT.with(|current| {
        let current = current.borrow();
        let core = current
            .as_ref()
            .expect("called outside the worker's io_uring runtime");
        f(core)
    })
}

/// True on a thread running this runtime (the io_uring shell), false on the epoll shell's.
pub fn is_current() -> bool {
    CURRENT.with(|current| current.borrow().is_some())
}

/// Runs `task` on this thread's runtime, from the next turn of its loop.
pub fn spawn(task: impl Future<Output = ()> + 'static) {
    with_core(|core| {
        let mut tasks = core.tasks.borrow_mut();
        let entry = tasks.vacant_entry();
        let header = Arc::new(Header {
            slot: entry.key(),
            queued: AtomicBool::new(true),
            remote: Arc::clone(&core.remote),
        });
        core.run_queue.borrow_mut().push_back(Arc::clone(&header));
        let waker = Waker::from(Arc::clone(&header));
        entry.insert((header, Some((waker, Box::pin(task)))));
    });
}

/// A socket's slot in the registered-file table of the runtime that registered it.
pub(crate) struct Registered {
    runtime: usize,
    slot: u32,
}

impl Registered {
    /// Whether this thread runs the runtime whose table holds the slot.
    fn is_current(&self) -> bool {
        CURRENT.with(|current| {
            current
                .borrow()
                .as_ref()
                .is_some_and(|core| core.remote.id == self.runtime)
        })
    }
}

/// Registers `fd` with the current runtime's ring, if there is one and room in its table.
fn register_file(fd: std::os::fd::RawFd) -> Option<Registered> {
    CURRENT.with(|current| {
        let current = current.borrow();
        let core = current.as_ref()?;
        let slot = core.driver.borrow_mut().register_file(fd)?;
        Some(Registered {
            runtime: core.remote.id,
            slot,
        })
    })
}

/// Gives a slot back to its runtime's table; nothing if that runtime is gone from this thread.
fn unregister_file(fixed: Registered) {
    let _ = CURRENT.try_with(|current| {
        if let Some(core) = &*current.borrow() {
            if core.remote.id == fixed.runtime {
                core.driver.borrow_mut().unregister_file(fixed.slot);
            }
        }
    });
}

/// A worker's runtime: built on the worker's thread, run with [`Runtime::block_on`].
pub struct Runtime {
    core: Rc<Core>,
}

impl Runtime {
    /// A runtime whose ring has room for `entries` submissions per turn.
    pub fn new(entries: u32) -> io::Result<Runtime> {
        // SAFETY: plain eventfd creation; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        static IDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);
        let remote = Arc::new(Remote {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            queue: Mutex::new(Vec::new()),
            // SAFETY: a fresh descriptor that nothing else owns.
            eventfd: unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) },
        });
        let mut driver = Driver::new(entries)?;
        driver.watch_eventfd(fd);
        Ok(Runtime {
            core: Rc::new(Core {
                driver: RefCell::new(driver),
                timers: RefCell::new(Timers::default()),
                tasks: RefCell::new(Slab::new()),
                run_queue: RefCell::new(VecDeque::new()),
                remote,
            }),
        })
    }

    /// Runs `main` and the tasks it spawns until `main` is done; the tasks left are dropped.
    pub fn block_on<F: Future>(&self, main: F) -> F::Output {
        CURRENT.with(|current| *current.borrow_mut() = Some(Rc::clone(&self.core)));
        let _leave = Leave(&self.core);
        let core = &*self.core;
        let main_header = Arc::new(Header {
            slot: usize::MAX,
            queued: AtomicBool::new(true),
            remote: Arc::clone(&core.remote),
        });
        let main_waker = Waker::from(Arc::clone(&main_header));
        let mut main = pin!(main);
        core.run_queue
            .borrow_mut()
            .push_back(Arc::clone(&main_header));
        loop {
            core.timers.borrow_mut().fire_due(time::now_fresh());
            for _ in 0..BUDGET {
                let Some(header) = core.run_queue.borrow_mut().pop_front() else {
                    break;
                };
                header.queued.store(false, Ordering::Release);
                if header.slot == usize::MAX {
                    let cx = &mut Context::from_waker(&main_waker);
                    if let Poll::Ready(out) = main.as_mut().poll(cx) {
                        return out;
                    }
                    continue;
                }
                run_task(core, &header);
            }
            // Runnable tasks left: reap without waiting. Otherwise sleep until a completion,
            // or until the next timer.
            let wait = core
                .run_queue
                .borrow()
                .is_empty()
                .then(|| core.timers.borrow_mut().next_deadline());
            let woke_remote = core.driver.borrow_mut().turn(wait);
            if woke_remote {
                let queued = std::mem::take(
                    &mut *core.remote.queue.lock().unwrap_or_else(|e| e.into_inner()),
                );
                core.run_queue.borrow_mut().extend(queued);
            }
        }
    }
}

/// Polls the task of `header` once; removes it when it is done.
fn run_task(core: &Core, header: &Arc<Header>) {
    let task = {
        let mut tasks = core.tasks.borrow_mut();
        match tasks.get_mut(header.slot) {
            // A stale wake-up for a slot reused since: not this task's.
            Some((owner, task)) if Arc::ptr_eq(owner, header) => task.take(),
            _ => None,
        }
    };
    let Some((waker, mut task)) = task else {
        return;
    };
    let done = task
        .as_mut()
        .poll(&mut Context::from_waker(&waker))
        .is_ready();
    let mut tasks = core.tasks.borrow_mut();
    if done {
        tasks.remove(header.slot);
    } else {
        tasks[header.slot].1 = Some((waker, task));
    }
}

/// Leaving `block_on` (or unwinding out of it): the tasks go first, while the runtime is still
/// current (their operations and timers deregister through it), then the runtime.
struct Leave<'a>(&'a Rc<Core>);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let tasks: Vec<_> = self.0.tasks.borrow_mut().drain().collect();
        drop(tasks);
        self.0.run_queue.borrow_mut().clear();
        self.0.driver.borrow_mut().shut_down();
        CURRENT.with(|current| *current.borrow_mut() = None);
    }
}

#[cfg(test)]
mod tests;

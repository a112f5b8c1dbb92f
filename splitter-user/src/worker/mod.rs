//! The data plane: one worker thread per CPU, pinned, each its own io_uring runtime ([`ring`])
//! with its own listener, its own backend connection pools and its own metrics cell. Workers share nothing
//! on the hot path; the control plane reaches them only through two `watch` channels (the
//! configuration, and shutdown), which they read when those change.
//!
//! - [`listener`]: the `SO_REUSEPORT` group of listeners.
//! - [`client_conn`]: one client connection: read, frame, answer, in order.
//! - [`fanout`]: one request sent to every backend and the answer chosen, driving
//!   [`Exchange`](crate::scatter::exchange::Exchange).
//! - [`admission`]: `max_in_flight` for the whole process, without a shared counter per request.
//! - [`guards`]: the counted pairs (in flight, connections open) as values that undo on drop.
//! - [`backend_pool`]: each backend as the worker sees it: idle connections, open count, health.
//! - [`backend_conn`]: one connection to a backend, and one exchange on it.
//! - [`buffers`]: the worker's free list of byte buffers.
//! - [`conn`]: the sockets of the two I/O shells, io_uring and epoll, behind one type.
//! - [`ring`]: the io_uring shell's runtime: one ring, one loop, its own timers.
//! - [`rt`]: spawning and timers, on whichever runtime the worker runs.

pub mod admission;
pub mod backend_conn;
pub mod backend_pool;
pub mod buffers;
pub mod client_conn;
pub mod conn;
pub mod fanout;
pub mod guards;
pub mod listener;
pub mod ring;
pub mod rt;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::access_log::Sink;
use crate::config::Config;
use crate::http1::limits::Limits;
use crate::metrics::WorkerCounters;
use crate::scatter::route::RouteTable;
use crate::scatter::select::{Scratch, Selection};

use admission::Admission;
use backend_pool::{Backend, Backends};
use listener::AcceptBackoff;

/// What the control plane asks of the workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Serve.
    No,
    /// `SIGTERM`: stop listening (the socket is closed for everyone), close idle connections,
    /// finish the requests in progress, answer them with `Connection: close`.
    Drain,
    /// A new process took the listening sockets over: stop accepting but leave the sockets be
    /// (they are the new process's now); finish requests, answer each connection's next
    /// request with `Connection: close` rather than close it idle under a client about to send.
    HandedOver,
}

/// A configuration as the control plane hands it to the workers.
pub struct Loaded {
    /// The validated file.
    pub config: Config,
    /// Metrics slot of each backend, by position in `config.backends`: stable across reloads
    /// for a backend that keeps its name, so its counters keep counting.
    pub slots: Vec<usize>,
}

/// What a worker needs from the configuration, built on the worker's own thread so the hot path
/// only touches thread-local, non-atomic data (`Rc`, not `Arc`).
pub struct Plan {
    /// Longest-prefix route table.
    pub routes: RouteTable,
    /// Which replies are valid, and which is best.
    pub selection: Selection,
    /// Every backend, in configuration order (a backend's index is its `BackendId`).
    pub backends: Vec<Rc<Backend>>,
    /// Client-side framing limits.
    pub limits: Limits,
    /// Longest time a client may take to send one request (head and body).
    pub header_timeout: Duration,
    /// Longest time a keep-alive client connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest time a client may take to take one response.
    pub send_timeout: Duration,
    /// Most bytes of one backend reply, on the wire and decoded.
    pub max_response_bytes: usize,
    /// Idle pooled backend connections are closed after this.
    pub backend_idle_timeout: Duration,
}

impl Plan {
    /// Derives a worker's plan from a loaded configuration; `backends` keeps the state of those
    /// that stay.
    pub fn new(loaded: &Loaded, backends: &mut Backends, counters: &Rc<WorkerCounters>) -> Plan {
        let c = &loaded.config;
        backends.own_routes(&c.routes, counters);
        Plan {
            routes: RouteTable::new(c.routes.clone()),
            selection: c.select.clone(),
            backends: backends.load(&c.backends, &loaded.slots, counters),
            limits: Limits {
                max_header_bytes: c.max_header_bytes,
                max_body: c.max_request_body,
            },
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            send_timeout: c.send_timeout,
            max_response_bytes: c.max_response_bytes,
            backend_idle_timeout: c.backend_idle_timeout,
        }
    }
}

/// One worker's state, shared by the tasks of its thread.
pub struct Worker {
    /// The current plan; replaced on reload, requests in progress keep the one they started with.
    pub plan: RefCell<Rc<Plan>>,
    /// The backends: idle connections, open counts, health.
    pub backends: RefCell<Backends>,
    /// This worker's metrics cell (shared with the backend connections, which count their close).
    pub counters: Rc<WorkerCounters>,
    /// Admission against `max_in_flight`.
    pub admission: Admission,
    /// Becomes true when the process is draining.
    pub shutdown: watch::Receiver<Stop>,
    /// Reusable buffers for the JSON selection (simd-json parses in place).
    pub scratch: RefCell<Scratch>,
    /// Which shell this worker runs: io_uring, or epoll.
    pub uring: bool,
    /// Where sampled requests are logged, when the access log is on.
    pub access_log: Option<Sink>,
}

/// Everything a worker thread is started with.
pub struct WorkerSpec {
    /// Worker number, also its metrics cell index.
    pub index: usize,
    /// CPU to pin the thread to, if any.
    pub cpu: Option<usize>,
    /// Its own listener of the `SO_REUSEPORT` group.
    pub listener: std::net::TcpListener,
    /// Its metrics recording handle.
    pub counters: WorkerCounters,
    /// Configuration updates from the control plane.
    pub config: watch::Receiver<Arc<Loaded>>,
    /// Shutdown signal from the control plane.
    pub shutdown: watch::Receiver<Stop>,
    /// The process's `max_in_flight`.
    pub admission: Admission,
    /// Longest a draining worker waits for its requests in progress before it gives up on them.
    pub drain_timeout: Duration,
    /// Run on io_uring (the worker's own ring runtime) rather than epoll (tokio).
    pub uring: bool,
    /// This worker's access log queue, when the log is on.
    pub access_log: Option<Sink>,
}

/// Checks that this process may use io_uring as the workers will; the error says why not.
pub fn probe_io_uring() -> std::io::Result<()> {
    ring::driver::builder().build(8).map(drop)
}

/// Starts a worker thread on the shell `spec.uring` chooses.
pub fn spawn(spec: WorkerSpec) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("splitter-w{}", spec.index))
        .spawn(move || {
            if let Some(cpu) = spec.cpu {
                pin_to_cpu(cpu);
            }
            if spec.uring {
                match ring::Runtime::new(1024) {
                    Ok(rt) => rt.block_on(run(spec)),
                    Err(e) => tracing::error!(error = %e, "cannot set up the worker's io_uring"),
                }
            } else {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("worker runtime");
                tokio::task::LocalSet::new().block_on(&rt, run(spec));
            }
        })
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET stays in bounds for cpu < 1024.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % libc::CPU_SETSIZE as usize, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::warn!(cpu, error = %std::io::Error::last_os_error(), "cannot pin worker");
        }
    }
}

/// Every how many pool sweeps ([`backend_pool::SWEEP_EVERY`]) a worker has the allocator
/// return freed memory: about once a second.
const COLLECT_EVERY_SWEEPS: u32 = 10;

async fn run(spec: WorkerSpec) {
    let WorkerSpec {
        index,
        listener,
        counters,
        mut config,
        mut shutdown,
        drain_timeout,
        uring,
        admission,
        access_log,
        ..
    } = spec;
    let counters = Rc::new(counters);
    let mut backends = Backends::default();
    let plan = Plan::new(&config.borrow_and_update(), &mut backends, &counters);
    let worker = Rc::new(Worker {
        backends: RefCell::new(backends),
        plan: RefCell::new(Rc::new(plan)),
        counters,
        admission,
        shutdown: shutdown.clone(),
        scratch: RefCell::new(Scratch::default()),
        uring,
        access_log,
    });

    let reloader = Rc::clone(&worker);
    rt::spawn(async move {
        while config.changed().await.is_ok() {
            let loaded = Arc::clone(&config.borrow_and_update());
            let plan = Plan::new(
                &loaded,
                &mut reloader.backends.borrow_mut(),
                &reloader.counters,
            );
            *reloader.plan.borrow_mut() = Rc::new(plan);
        }
    });

    let sweeper = Rc::downgrade(&worker);
    rt::spawn(async move {
        let mut sweep: u32 = 0;
        loop {
            sweep = sweep.wrapping_add(1);
            rt::sleep(backend_pool::SWEEP_EVERY).await;
            let Some(worker) = sweeper.upgrade() else {
                return;
            };
            let idle_timeout = worker.plan.borrow().backend_idle_timeout;
            if let Some(idle_since) = Instant::now().checked_sub(idle_timeout) {
                worker.backends.borrow().sweep(idle_since);
            }
            if sweep.is_multiple_of(COLLECT_EVERY_SWEEPS) {
                // mimalloc gives freed memory back to the system only after a delay (1 s),
                // and only when the heap is next worked on that way: without this, what a
                // burst of large messages took would stay resident (SPEC 9: memory returns).
                // SAFETY: no arguments to uphold; it works on this thread's own heap.
                unsafe { libmimalloc_sys::mi_collect(false) };
            }
        }
    });

    let listener = match conn::Listener::new(listener, uring) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "cannot use the listener");
            return;
        }
    };
    // Every connection task holds a clone of `open`; when the last one is dropped, `drained`
    // resolves: the worker knows its connections are done without counting them.
    let (open, mut drained) = mpsc::channel::<()>(1);
    let mut backoff = AcceptBackoff::default();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    backoff.reset();
                    let worker = Rc::clone(&worker);
                    let open = open.clone();
                    rt::spawn(async move {
                        client_conn::serve(&worker, stream).await;
                        drop(open);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have, and try
                    // again later rather than spin on an error that persists.
                    let pause = backoff.next();
                    tracing::warn!(worker = index, error = %e, ?pause, "accept failed");
                    rt::sleep(pause).await;
                }
            },
            _ = shutdown.wait_for(|&stop| stop != Stop::No) => break,
        }
    }
    if *shutdown.borrow() == Stop::Drain {
        // Unlisten now: the kernel stops queueing new connections on this socket (its
        // `SO_REUSEPORT` siblings, or the next instance, get them).
        // SAFETY: a valid listening socket owned by `listener`.
        unsafe { libc::shutdown(listener.fd(), libc::SHUT_RDWR) };
    }
    // Handed over, the socket (and the connections queued on it) lives on in the new process:
    // only this process's descriptor goes.
    drop(listener);
    drop(open);
    if rt::timeout(drain_timeout, drained.recv()).await.is_err() {
        tracing::warn!(
            worker = index,
            "drain timed out; closing remaining connections"
        );
    }
}

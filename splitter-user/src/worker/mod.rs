//! The data plane: one worker thread per CPU, pinned, each its own `tokio-uring` runtime with its
//! own listener, its own backend connection pools and its own metrics cell. Workers share nothing
//! on the hot path; the control plane reaches them only through two `watch` channels (the
//! configuration, and shutdown), which they read when those change.
//!
//! - [`listener`]: the `SO_REUSEPORT` group of listeners.
//! - [`client_conn`]: one client connection: read, frame, answer, in order.
//! - [`fanout`]: one request sent to every backend and the answer chosen, driving
//!   [`Exchange`](crate::scatter::exchange::Exchange).
//! - [`admission`]: `max_in_flight` for the whole process, without a shared counter per request.
//! - [`guards`]: the counted pairs (in flight, connections open) as values that undo on drop.
//! - [`backend_pool`]: keep-alive connections to the backends, and one exchange on one of them.
//! - [`buffers`]: the worker's free list of byte buffers.
//! - [`conn`]: the sockets of the two I/O shells, io_uring and epoll, behind one type.

pub mod admission;
pub mod backend_pool;
pub mod buffers;
pub mod client_conn;
pub mod conn;
pub mod fanout;
pub mod guards;
pub mod listener;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::http1::limits::Limits;
use crate::metrics::WorkerCounters;
use crate::scatter::route::RouteTable;
use crate::scatter::select::{Scratch, Selection};

use admission::{Admission, TokenPool};
use backend_pool::Pools;

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
    pub backends: Vec<BackendTarget>,
    /// Client-side framing limits.
    pub limits: Limits,
    /// Longest time a client may take to send one request (head and body).
    pub header_timeout: Duration,
    /// Longest time a keep-alive client connection may sit idle between requests.
    pub idle_timeout: Duration,
}

/// One backend as a worker sees it.
pub struct BackendTarget {
    /// Name for `X-Splitter-Backend` and logs.
    pub name: Rc<str>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Index of its counters in the metrics cell.
    pub slot: usize,
}

impl Plan {
    /// Derives a worker's plan from a loaded configuration.
    pub fn new(loaded: &Loaded) -> Plan {
        let c = &loaded.config;
        Plan {
            routes: RouteTable::new(c.routes.clone()),
            selection: c.select.clone(),
            backends: c
                .backends
                .iter()
                .zip(&loaded.slots)
                .map(|(b, &slot)| BackendTarget {
                    name: Rc::from(b.name.as_str()),
                    addr: b.address,
                    slot,
                })
                .collect(),
            limits: Limits {
                max_header_bytes: c.max_header_bytes,
                max_body: c.max_request_body,
            },
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
        }
    }
}

/// One worker's state, shared by the tasks of its thread.
pub struct Worker {
    /// The current plan; replaced on reload, requests in progress keep the one they started with.
    pub plan: RefCell<Rc<Plan>>,
    /// Idle keep-alive connections to the backends.
    pub pools: RefCell<Pools>,
    /// This worker's metrics cell (shared with the backend connections, which count their close).
    pub counters: Rc<WorkerCounters>,
    /// Admission against `max_in_flight`.
    pub admission: Admission,
    /// Becomes true when the process is draining.
    pub shutdown: watch::Receiver<bool>,
    /// Reusable buffers for the JSON selection (simd-json parses in place).
    pub scratch: RefCell<Scratch>,
    /// Which shell this worker runs: io_uring, or epoll.
    pub uring: bool,
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
    pub shutdown: watch::Receiver<bool>,
    /// The process's `max_in_flight` tokens.
    pub tokens: TokenPool,
    /// Number of workers, to size the admission batches.
    pub workers: usize,
    /// Longest a draining worker waits for its requests in progress before it gives up on them.
    pub drain_timeout: Duration,
    /// Run on io_uring (tokio-uring) rather than epoll (tokio).
    pub uring: bool,
}

/// The io_uring set-up every worker uses: completions are handled by the worker's own thread
/// only, so the kernel need not interrupt it for them (COOP_TASKRUN) nor lock for other
/// submitters (SINGLE_ISSUER). Both need Linux 6.0.
fn ring_builder() -> io_uring::Builder {
    let mut ring = io_uring::IoUring::builder();
    ring.setup_coop_taskrun().setup_single_issuer();
    ring
}

/// Checks that this process may use io_uring as the workers will; the error says why not.
pub fn probe_io_uring() -> std::io::Result<()> {
    ring_builder().build(8).map(drop)
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
                tokio_uring::builder()
                    .entries(1024)
                    .uring_builder(&ring_builder())
                    .start(run(spec));
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

async fn run(spec: WorkerSpec) {
    let WorkerSpec {
        index,
        listener,
        counters,
        mut config,
        mut shutdown,
        workers,
        drain_timeout,
        uring,
        tokens,
        ..
    } = spec;
    let plan = Plan::new(&config.borrow_and_update());
    let max_in_flight = config.borrow().config.max_in_flight;
    let worker = Rc::new(Worker {
        pools: RefCell::new(Pools::new(&plan.backends)),
        plan: RefCell::new(Rc::new(plan)),
        counters: Rc::new(counters),
        admission: Admission::new(tokens, max_in_flight, workers),
        shutdown: shutdown.clone(),
        scratch: RefCell::new(Scratch::default()),
        uring,
    });

    let reloader = Rc::clone(&worker);
    tokio::task::spawn_local(async move {
        while config.changed().await.is_ok() {
            let plan = Plan::new(&config.borrow_and_update());
            reloader.pools.borrow_mut().retain_backends(&plan.backends);
            *reloader.plan.borrow_mut() = Rc::new(plan);
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
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => {
                    let worker = Rc::clone(&worker);
                    let open = open.clone();
                    tokio::task::spawn_local(async move {
                        client_conn::serve(&worker, stream).await;
                        drop(open);
                    });
                }
                Err(e) => {
                    // EMFILE and friends: keep serving the connections we have.
                    tracing::warn!(worker = index, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = shutdown.wait_for(|&stop| stop) => break,
        }
    }
    // Unlisten now: the pending accept fails, and the kernel stops queueing new connections on
    // this socket (its `SO_REUSEPORT` siblings, or the next instance, get them).
    // SAFETY: a valid listening socket owned by `listener`.
    unsafe { libc::shutdown(listener.fd(), libc::SHUT_RDWR) };
    drop(listener);
    drop(open);
    if tokio::time::timeout(drain_timeout, drained.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            worker = index,
            "drain timed out; closing remaining connections"
        );
    }
}

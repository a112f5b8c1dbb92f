//! `uring-floor`: a measurement tool, not the product. It is the leanest fan-out forwarder we
//! could write on the raw `io-uring` crate (no async runtime, no futures, one thread and one ring
//! per worker), run on the splitter's load to find the CPU floor per request of an io_uring
//! worker shell, to be set against the splitter and HAProxy.
//!
//! Per request it does the splitter's socket work: parse the client's head (httparse) and wait
//! for the whole body, send one shared request buffer to every backend in one submission, read
//! each backend's framed response, parse its body with simd-json for the top-level `price`, and
//! send the client the highest-priced body in one send. Each client connection opens one
//! connection per backend at accept time and keeps them for its life.
//!
//! Left out on purpose: deadlines (the real server arms one timer per request; the floor arms
//! none), routes, metrics, logs, compression, chunked bodies, and error replies: a backend that
//! fails just closes the client connection.
//!
//! io_uring features are flags, independent of each other, so each can be measured alone:
//! - `--defer`: `IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN`;
//! - `--multishot`: one multishot recv per socket, on a provided-buffer ring per worker;
//! - `--fixed`: every client and backend socket in the ring's registered file table;
//! - `--poll`: the real server's I/O pattern: one multishot `POLLIN` poll per socket, and a
//!   single-shot recv submitted only once a poll says the socket is readable (so it completes
//!   inline, at submission), never posted ahead of the bytes. Not with `--multishot`.

mod bufring;
mod http;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::mpsc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use socket2::{Domain, Protocol, Socket, Type};

#[derive(Parser)]
#[command(about = "The CPU floor of a raw io_uring fan-out forwarder (a measurement tool)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the splitter's load until killed.
    Run {
        /// The splitter's TOML config: only `listen`, `workers` and `backend[].address` are read.
        #[arg(short, long)]
        config: PathBuf,
        /// Rings set up with SINGLE_ISSUER and DEFER_TASKRUN.
        #[arg(long)]
        defer: bool,
        /// One multishot recv per socket into a provided-buffer ring.
        #[arg(long)]
        multishot: bool,
        /// Sockets in a registered (fixed) file table.
        #[arg(long)]
        fixed: bool,
        /// A multishot POLLIN poll per socket; a recv is submitted only once it is readable.
        #[arg(long)]
        poll: bool,
    },
}

/// The io_uring features in use, as chosen on the command line.
#[derive(Clone, Copy, Debug)]
pub struct Mode {
    pub defer: bool,
    pub multishot: bool,
    pub fixed: bool,
    pub poll: bool,
}

/// The part of the splitter's config the floor reads; serde skips the other keys.
#[derive(Deserialize)]
struct Config {
    listen: SocketAddr,
    workers: usize,
    backend: Vec<Backend>,
}

#[derive(Deserialize)]
struct Backend {
    address: SocketAddr,
}

/// Listen backlog of each worker's socket.
const BACKLOG: i32 = 1024;

fn main() -> Result<()> {
    let Cmd::Run {
        config,
        defer,
        multishot,
        fixed,
        poll,
    } = Cli::parse().cmd;
    if poll && multishot {
        bail!(
            "--poll and --multishot do not combine: --poll submits single-shot recvs on readiness"
        );
    }
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("reading {}", config.display()))?;
    let config: Config =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    if config.backend.is_empty() || config.backend.len() > 64 {
        bail!("1 to 64 backends, please");
    }
    let mode = Mode {
        defer,
        multishot,
        fixed,
        poll,
    };
    let backends: Vec<SocketAddr> = config.backend.iter().map(|b| b.address).collect();
    raise_nofile_limit();

    // Each worker builds its ring on its own thread (SINGLE_ISSUER ties a ring to the task that
    // creates it) and reports whether the kernel took the setup before we say we are up.
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut threads = Vec::new();
    for i in 0..config.workers.max(1) {
        let listener = bind(config.listen)?;
        let (backends, ready) = (backends.clone(), ready_tx.clone());
        let thread = std::thread::Builder::new()
            .name(format!("worker-{i}"))
            .spawn(move || worker::run(listener, backends, mode, ready))?;
        threads.push(thread);
    }
    drop(ready_tx);
    for result in ready_rx.iter().take(threads.len()) {
        result.context("setting up a worker's ring")?;
    }
    println!(
        "uring-floor listening on {} ({} workers, {mode:?})",
        config.listen,
        threads.len()
    );
    for thread in threads {
        match thread.join() {
            Ok(result) => result?,
            Err(_) => bail!("a worker panicked"),
        }
    }
    Ok(())
}

/// One worker's listening socket, in the `SO_REUSEPORT` group on `addr`.
fn bind(addr: SocketAddr) -> Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding {addr}"))?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// Three descriptors per client connection, and the fixed file table may not be larger than
/// `RLIMIT_NOFILE`: take the hard limit.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit for both calls to read and write.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

//! The mock backend, `splitter mock-backend`: a small, fast HTTP/1.1 server that answers every
//! request with a JSON price, used by `splitter demo`, the black-box tests and the benchmarks.
//!
//! It has to be faithful (real TCP, keep-alive, pipelining, chunked bodies both ways) and never
//! the bottleneck of a benchmark, so each connection is one task with reused read/write buffers,
//! the reply is formatted by hand (no serde) and written with one `write` per batch of replies.
//! Requests are framed by the splitter's own sans-IO code ([`crate::http1::request`],
//! [`crate::http1::chunked`]), so the mock reads requests exactly as the splitter reads its
//! clients' (with roomier size limits, and bodies skipped rather than held): what that code
//! refuses gets 400 (431 for a head too large) and a close, and nothing the splitter forwards is.
//!
//! Misbehaviour is switchable per flag so tests and benchmarks can model bad backends: random or
//! fixed delays, a share of late replies, invalid prices, non-JSON or non-HTTP replies, other
//! status codes, `Connection: close` after each reply, or a reset without a reply. And hostile
//! ones, for `cargo xtask soak --chaos`: a blackhole that never answers, bodies trickled in tiny
//! chunks (one write each), endless heads and bodies, replies cut short by a reset, and
//! keep-alive connections closed right after a reply without a word.
//!
//! - `args`: the command-line flags and their parsing.
//! - `reply`: what a reply looks like, drawn per request from the flags.
//! - `openrtb`: `--openrtb`, OpenRTB 2.x BidResponse bodies; `encoding`: `--gzip`/`--deflate`,
//!   compressed replies.
//! - `server`: the accept loop; `conn`: one connection's reads, delays, order and close.

use std::io::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

mod args;
mod conn;
mod encoding;
mod openrtb;
mod reply;
mod server;
#[cfg(test)]
mod tests;

pub use args::MockArgs;
pub use reply::MockConfig;
pub use server::serve;

/// Runs `splitter mock-backend`: builds the runtime, binds, prints `listening on ADDR` to stdout
/// once bound, and serves until SIGTERM or SIGINT (then returns `Ok`).
pub fn run(args: MockArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let cfg = Arc::new(MockConfig::new(&args)?);
    // Its connections come and go in waves too (see `fd_table`); a mock that stalls would be
    // blamed on the splitter.
    if let Err(e) = crate::fd_table::reserve() {
        tracing::warn!("descriptor table not reserved: {e}");
    }
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads.into());
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let listener =
            server::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Handlers go in before the line is printed: a script may signal as soon as it reads it.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        {
            let mut out = io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        tokio::select! {
            r = serve(listener, cfg) => r.context("serving")?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    // Open connections are simply dropped: the mock has no requests worth finishing.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

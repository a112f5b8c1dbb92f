//! splitter: a scatter-gather HTTP/1.1 server.
//!
//! Every request is sent to every backend; the best valid response (by one JSON number) goes back,
//! or `204 No Content` when none arrives before the route's deadline. `../shared/SPEC.md` (in the
//! repository, `SPEC` below) is the contract.
//!
//! Map of the crate:
//!
//! - Sans-IO core, no sockets, no clock (time is an argument):
//!   - [`http1`]: HTTP/1.1 framing: request heads ([`http1::request`]), backend response heads
//!     ([`http1::response`]), chunked coding ([`http1::chunked`]), what the splitter writes
//!     ([`http1::encode`]), limits ([`http1::limits`]).
//!   - [`scatter`]: the route table ([`scatter::route`]), the JSON-pointer selection
//!     ([`scatter::select`]), and one request's fan-out state and deadline ([`scatter::exchange`]).
//!   - [`config`]: TOML to a validated [`config::Config`]; errors name the key and the file.
//! - Shells:
//!   - [`worker`]: the data plane, one pinned io_uring thread per CPU.
//!   - [`control`]: the control plane on plain `tokio`: admin HTTP, signals, reload, shutdown.
//!   - [`metrics`]: per-worker counter cells and their Prometheus rendering.
//!   - [`steering`]: how new connections reach the workers: the eBPF program, or `SO_REUSEPORT`.
//! - [`fd_table`]: the descriptor table grown once at start, so that no worker ever waits for the
//!   kernel to grow it.
//! - [`access_log`]: sampled request lines, queued by the workers, written by the control plane.
//! - Tools that ship with the product: [`mock_backend`], [`demo`], [`reload`] (systemd's reload
//!   that waits for the outcome); the command line, [`cli`].
//!
//! Only [`cli`] (and the shipped default configuration) is public: the rest is crate-private, so
//! the compiler reports anything nothing uses. Fuzz builds (`--cfg fuzzing`, which `cargo fuzz`
//! sets) open the sans-IO core to the fuzz targets.

mod access_log;
pub mod cli;
mod config;
mod control;
mod demo;
mod fd_table;
#[cfg(fuzzing)]
pub mod http1;
#[cfg(not(fuzzing))]
mod http1;
mod metrics;
mod mock_backend;
mod reload;
#[cfg(fuzzing)]
pub mod scatter;
#[cfg(not(fuzzing))]
mod scatter;
mod steering;
mod top;
mod worker;

pub use config::DEFAULT_CONFIG;

//! How new connections reach the workers (`[steering]`, SPEC 7), decided once at start.
//!
//! - `ebpf`: [`ebpf::attach`] loads the `sk_reuseport` program of `splitter-ebpf` onto the
//!   listeners' `SO_REUSEPORT` group. It sends each new connection to the least-loaded worker
//!   (open connections plus `IN_FLIGHT_WEIGHT` per request in flight; the SYN's CPU breaks ties), reading the
//!   load from the workers' metrics cells, which then live in a pinned, mmap-ed BPF map.
//! - `reuseport`: nothing is attached; the kernel hashes connections over the listeners, and the
//!   metrics cells live in ordinary memory.
//! - `auto`: `ebpf` where it loads, else `reuseport`, with a warning saying why.
//!
//! Owns the choice and its log line; does not touch sockets beyond attaching to them.

mod ebpf;

use std::net::TcpListener;
use std::sync::Arc;

use crate::config::{SteeringConfig, SteeringMode};
use crate::metrics::MetricsRegion;

pub use ebpf::{Attached, Error};

/// The steering in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// The load-aware `sk_reuseport` program.
    Ebpf,
    /// The kernel's `SO_REUSEPORT` hash.
    Reuseport,
}

impl Steering {
    /// The name the start-up line and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Steering::Ebpf => "ebpf",
            Steering::Reuseport => "reuseport",
        }
    }
}

/// What [`start`] set up.
pub struct Steered {
    /// The steering in use.
    pub mode: Steering,
    /// The workers' metrics cells: in the BPF map with eBPF, else on the heap.
    pub region: Arc<MetricsRegion>,
    /// With eBPF: the loaded program and maps; dropping it removes the pin.
    pub attached: Option<Attached>,
}

/// Sets up steering for `listeners` (one per worker, one `SO_REUSEPORT` group) as `config`
/// asks. Fails only for `mode = "ebpf"` when the program cannot be loaded, naming the cause.
pub fn start(config: &SteeringConfig, listeners: &[TcpListener]) -> Result<Steered, Error> {
    let workers = listeners.len();
    let heap = || Steered {
        mode: Steering::Reuseport,
        region: MetricsRegion::heap(workers),
        attached: None,
    };
    let with_ebpf = |(attached, region)| Steered {
        mode: Steering::Ebpf,
        region,
        attached: Some(attached),
    };
    match config.mode {
        SteeringMode::Reuseport => {
            tracing::info!("steering: SO_REUSEPORT hash (`steering.mode = \"reuseport\"`)");
            Ok(heap())
        }
        SteeringMode::Ebpf => ebpf::attach(&config.pin_dir, listeners).map(with_ebpf),
        SteeringMode::Auto => match ebpf::attach(&config.pin_dir, listeners) {
            Ok(attached) => Ok(with_ebpf(attached)),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "eBPF steering unavailable: falling back to the SO_REUSEPORT hash \
                     (`steering.mode = \"auto\"`)"
                );
                Ok(heap())
            }
        },
    }
}

//! Per-worker counter cells, how workers bump them, and their Prometheus rendering.
//!
//! Each worker owns one [`WorkerMetrics`](splitter_common::WorkerMetrics) (the `splitter-common`
//! struct that is also the BPF map value) and is its only writer: a bump is a relaxed load and a
//! relaxed store of a cache line no other thread writes, so it costs no syscall, no lock and no
//! contended atomic. The admin thread reads every cell word by word (relaxed atomic loads, so
//! never torn) and sums the workers when scraped.
//!
//! - `region`: the memory the cells live in, heap or a mmap-ed BPF array map ([`MetricsRegion`]).
//! - `counters`: the hot-path recording handle of one worker ([`WorkerCounters`]).
//! - `backend`: what a worker counts for one backend ([`BackendMeter`]), and which backend name
//!   each metrics slot counts for ([`BackendSlots`]); a removed backend whose slot a reload gave
//!   to another name counts nowhere.
//! - `exposition`: the exposition (OpenMetrics or Prometheus text) of the summed cells, in the control plane ([`Renderer`]).

mod backend;
mod counters;
mod exposition;
mod process;
mod region;

pub use backend::{BackendMeter, BackendSlots};
pub use counters::WorkerCounters;
pub use exposition::{Format, Renderer};
pub use region::MetricsRegion;

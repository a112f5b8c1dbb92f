//! Types shared by the splitter daemon (`splitter-user`) and its eBPF programs (`splitter-ebpf`).
//!
//! Everything here is `#[repr(C)]` and `bytemuck::Pod`: the same bytes are a BPF map value on one
//! side and a Rust struct on the other. Fields are `u64` only, so there is no hidden padding and
//! `bpftool map dump` prints every field by name.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Most backends a configuration may name (SPEC section 6: 1 to 16).
pub const MAX_BACKENDS: usize = 16;

/// Most workers (one per CPU) whose counters the metrics map holds.
pub const MAX_WORKERS: usize = 256;

/// Client-facing statuses the splitter can send, in the order of [`WorkerMetrics::responses`].
/// The chosen backend response is always a 200 (only a 200 is valid, SPEC section 2).
pub const STATUSES: [u16; 10] = [200, 204, 400, 404, 408, 413, 431, 500, 502, 503];

/// Upper bounds, in microseconds, of the request duration histogram buckets; a last bucket
/// (`+Inf`) follows them. Chosen around the route timeouts of SPEC section 3 (80 to 450 ms).
pub const LATENCY_BOUNDS_US: [u64; 15] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 80_000, 100_000, 200_000, 300_000,
    450_000, 1_000_000, 5_000_000,
];

/// Index of `status` in [`STATUSES`], if it is one the splitter sends.
pub fn status_slot(status: u16) -> Option<usize> {
    STATUSES.iter().position(|&s| s == status)
}

/// Index of the histogram bucket that counts a duration of `us` microseconds.
pub fn latency_slot(us: u64) -> usize {
    LATENCY_BOUNDS_US
        .iter()
        .position(|&bound| us <= bound)
        .unwrap_or(LATENCY_BOUNDS_US.len())
}

/// What became of one backend's part of one request (SPEC section 6, `outcome` label).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BackendCounters {
    /// An HTTP 200 whose JSON field resolved to a number: a candidate for the answer.
    pub valid: u64,
    /// An HTTP response that cannot be used: another status, bad JSON, missing or non-number field.
    pub invalid: u64,
    /// The route's deadline passed before the whole response arrived.
    pub timeout: u64,
    /// Connect failure, reset, or bytes that are not HTTP.
    pub error: u64,
    /// Times this backend's response was the one returned to the client.
    pub wins: u64,
    /// Late responses read to their end after their request had gone, connection kept.
    pub late_drained: u64,
    /// Late or broken exchanges whose connection was closed rather than reused.
    pub closed: u64,
    /// Connections opened to this backend.
    pub connects: u64,
}

/// One worker's counters and gauges. Each worker is the only writer of its own value; readers
/// (`/metrics`, `bpftool`) sum the workers. Counters only grow; gauges are marked as such.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct WorkerMetrics {
    /// Requests received: whole heads parsed, good or bad.
    pub requests: u64,
    /// Gauge: requests being served now (read, not yet answered).
    pub in_flight: u64,
    /// Gauge: client connections open now.
    pub connections: u64,
    /// Client connections accepted since start.
    pub accepted: u64,
    /// Responses sent, by status, indexed like [`STATUSES`].
    pub responses: [u64; STATUSES.len()],
    /// Per-backend outcomes, indexed by the backend's metrics slot.
    pub backends: [BackendCounters; MAX_BACKENDS],
    /// Request duration histogram (not cumulative), indexed by [`latency_slot`].
    pub latency_buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of the request durations, in microseconds.
    pub latency_sum_us: u64,
    /// Connections closed for reading too slowly (`header_timeout_ms`) or idling (`idle_timeout_ms`).
    pub client_timeouts: u64,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn latency_slots_cover_every_duration() {
        assert_eq!(latency_slot(0), 0);
        assert_eq!(latency_slot(250), 0);
        assert_eq!(latency_slot(251), 1);
        assert_eq!(latency_slot(u64::MAX), LATENCY_BOUNDS_US.len());
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn status_slots() {
        assert_eq!(status_slot(200), Some(0));
        assert_eq!(status_slot(503), Some(STATUSES.len() - 1));
        assert_eq!(status_slot(418), None);
    }

    #[test]
    fn metrics_have_no_padding() {
        // Pod derive already refuses padding; this pins the size the BPF map value will have.
        assert_eq!(core::mem::size_of::<WorkerMetrics>() % 8, 0);
    }
}

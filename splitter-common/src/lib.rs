//! Types shared by the splitter daemon (`splitter-user`) and its eBPF programs (`splitter-ebpf`).
//!
//! Everything here is `#[repr(C)]` and `bytemuck::Pod`: the same bytes are a BPF map value on one
//! side and a Rust struct on the other. Fields are `u64` only, so there is no hidden padding and
//! `bpftool map dump` prints every field by name.
//!
//! It also holds what both sides must agree on by name: the eBPF toolchain, the map and program
//! names, and the steering policy ([`least_loaded`]), which the program runs in the kernel and the
//! unit tests below run on the host.
#![no_std]

use bytemuck::{Pod, Zeroable};

/// Most backends a configuration may name (SPEC section 6: 1 to 16).
pub const MAX_BACKENDS: usize = 16;

/// Most routes a configuration may have: each has its own counters.
pub const MAX_ROUTES: usize = 32;

/// Most workers (one per CPU) whose counters the metrics map holds.
pub const MAX_WORKERS: usize = 256;

/// The nightly toolchain that builds `splitter-ebpf` (with `rust-src` and bpf-linker), used by
/// `splitter-user/build.rs` and `cargo xtask setup-ebpf`. bpf-linker is linked against this
/// nightly's libLLVM, so moving it means rebuilding bpf-linker (xtask does).
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-10-30";

/// The `sk_reuseport` program that picks a worker for each new connection.
pub const STEER_PROGRAM: &str = "steer";

/// The `BPF_F_MMAPABLE` array of [`WorkerMetrics`], key = worker index. Workers write it through
/// a shared mapping; the steering program reads each worker's load from it; `bpftool` dumps it.
/// Kernel object names are at most 15 bytes: these names are kept short enough to stay whole.
pub const METRICS_MAP: &str = "WORKER_METRICS";

/// The `REUSEPORT_SOCKARRAY` of the workers' listeners, key = worker index.
pub const SOCKETS_MAP: &str = "WORKER_SOCKETS";

/// The program's read-only global holding the number of workers, set at load time.
pub const WORKERS_GLOBAL: &str = "WORKERS";

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
    /// Connections to this backend closed, for whatever reason: `connects - closed` is open.
    pub closed: u64,
    /// Connections opened to this backend.
    pub connects: u64,
    /// Requests this backend was not asked, being ejected after consecutive failures.
    pub ejected: u64,
    /// Requests this backend was not asked, all its `max_connections` being busy.
    pub overloaded: u64,
    /// Times this backend was ejected (again after a failed probe included).
    pub ejections: u64,
    /// Gauge: 1 while this worker has the backend ejected, else 0.
    pub is_ejected: u64,
    /// Of the `invalid` ones: a number worse than the floor.
    pub below_floor: u64,
    /// Of the `invalid` ones: a `Content-Encoding` that is not gzip or deflate, or does not decode.
    pub bad_encoding: u64,
    /// Gauge: idle connections in this worker's pool for the backend.
    pub pool_idle: u64,
    /// Reply time histogram (not cumulative), from the request's start to the whole reply, late
    /// replies included; indexed by [`latency_slot`].
    pub latency_buckets: [u64; LATENCY_BOUNDS_US.len() + 1],
    /// Sum of the reply times, in microseconds.
    pub latency_sum_us: u64,
}

/// One route's counters, indexed by the route's metrics slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct RouteCounters {
    /// Requests routed here.
    pub requests: u64,
    /// Of them, answered `204 No Content`.
    pub no_content: u64,
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
    /// Connections the eBPF steering program sent to this worker since start (the program is
    /// its writer, with atomic adds: several CPUs steer at once). Ahead of `accepted` by the
    /// connections waiting in the worker's accept queue; 0 without eBPF.
    pub steered: u64,
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
    /// Responses written more than 10 ms after their deadline.
    pub deadline_misses: u64,
    /// Access log records dropped, the writer being behind.
    pub access_log_dropped: u64,
    /// Per-route counters, indexed by the route's metrics slot.
    pub routes: [RouteCounters; MAX_ROUTES],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Zeroable::zeroed()
    }
}

/// A request in flight weighs as much as this many open connections in a worker's [`Load`].
/// In-flight requests are work now, connections are work perhaps later; comparing in-flight
/// first (an infinite weight) made every connection of a burst herd onto whichever worker had
/// one request fewer at that instant, and it kept them for their whole life (measured with
/// `cargo xtask bench`'s skewed scenario: 62/5 connection splits). A finite weight still sends
/// new connections away from a busy worker, but only until the other has that many more.
pub const IN_FLIGHT_WEIGHT: u64 = 4;

/// How busy a worker is, as the steering policy compares it: see [`Load::score`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests read and not yet answered.
    pub in_flight: u64,
    /// Client connections open, and those steered to the worker but not yet accepted.
    pub connections: u64,
}

impl Load {
    /// The figure compared: open connections plus [`IN_FLIGHT_WEIGHT`] per request in flight.
    #[inline(always)]
    pub fn score(&self) -> u64 {
        self.connections
            .saturating_add(self.in_flight.saturating_mul(IN_FLIGHT_WEIGHT))
    }

    /// The load a worker publishes in its metrics cell. Connections still in the accept queue
    /// count: a worker's own gauges move only when it accepts, and without them a burst of SYNs
    /// would all go to whichever worker looked least loaded before the burst.
    #[inline(always)]
    pub fn of(m: &WorkerMetrics) -> Load {
        Load {
            in_flight: m.in_flight,
            connections: m
                .connections
                .wrapping_add(m.steered.saturating_sub(m.accepted)),
        }
    }
}

/// Most workers [`least_loaded`] weighs for one connection: a window of them. The verifier walks
/// every turn of the loop (the worker count is a constant the loader writes), and its budget of
/// a million instructions ran out between 32 and 64 turns.
pub const MAX_SCAN: u32 = 16;

/// Where [`least_loaded`]'s window starts for a connection whose SYN `cpu` took and whose
/// 4-tuple hashes to `hash`: at the CPU's own worker (its caches are warm) when one window holds
/// every worker; else where the hash says, so that every worker is in reach however few CPUs
/// take SYNs (a NIC with 8 queues on a 64-CPU host would otherwise reach 23 workers of 64).
#[inline(always)]
pub fn window_start(workers: u32, cpu: u32, hash: u32) -> u32 {
    if workers > MAX_SCAN {
        hash
    } else {
        cpu
    }
}

/// The worker a new connection should go to: the least loaded (by [`Load`]) of the
/// [`MAX_SCAN`] workers, at most, that start at `first` ([`window_start`]) in the order that
/// wraps around at `workers`; on a tie, the first met. Workers whose load cannot be read are
/// skipped; `None` when none can be.
///
/// The loop has a constant bound ([`MAX_SCAN`]) so the BPF verifier accepts it.
#[inline(always)]
pub fn least_loaded(workers: u32, first: u32, load: impl Fn(u32) -> Option<Load>) -> Option<u32> {
    if workers == 0 {
        return None;
    }
    let workers = if workers > MAX_WORKERS as u32 {
        MAX_WORKERS as u32
    } else {
        workers
    };
    let span = if workers > MAX_SCAN {
        MAX_SCAN
    } else {
        workers
    };
    let first = first % workers;
    let mut best: Option<(u64, u32)> = None;
    for step in 0..MAX_SCAN {
        if step >= span {
            break;
        }
        let mut worker = first + step;
        if worker >= workers {
            worker -= workers;
        }
        let Some(l) = load(worker) else { continue };
        let score = l.score();
        // Strictly less: an equal load never displaces a worker met earlier in the rotation.
        if best.is_none_or(|(b, _)| score < b) {
            best = Some((score, worker));
        }
    }
    best.map(|(_, worker)| worker)
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

    fn loads(table: &[(u64, u64)]) -> impl Fn(u32) -> Option<Load> + '_ {
        |i| {
            table.get(i as usize).map(|&(in_flight, connections)| Load {
                in_flight,
                connections,
            })
        }
    }

    #[test]
    fn steering_weighs_requests_in_flight_against_open_connections() {
        // (in_flight, connections) per worker; the SYN arrived on CPU 0.
        for (table, want) in [
            (&[(1, 2), (0, 5)][..], 1),
            (&[(0, 3), (0, 2), (0, 4)][..], 1),
            (&[(2, 0), (1, 9), (1, 8)][..], 0),
            (&[(0, 9), (2, 0)][..], 1),
        ] {
            assert_eq!(
                least_loaded(table.len() as u32, 0, loads(table)),
                Some(want),
                "{table:?}"
            );
        }
    }

    #[test]
    fn a_burst_does_not_herd_away_from_a_busy_worker_for_ever() {
        // Worker 0 keeps 4 heavy connections busy; 60 light ones arrive one by one.
        let mut conns = [4u64, 0];
        for _ in 0..60 {
            let load = |w: u32| {
                Some(Load {
                    in_flight: if w == 0 { 4 } else { 0 },
                    connections: conns[w as usize],
                })
            };
            let w = least_loaded(2, 0, load).unwrap();
            conns[w as usize] += 1;
        }
        // The idle worker takes connections until its score meets the busy one's, then they
        // alternate: both get light connections, and the scores end within one of each other.
        assert!(conns[0] > 4, "{conns:?}");
        let busy_score = conns[0] + 4 * IN_FLIGHT_WEIGHT;
        assert!(busy_score.abs_diff(conns[1]) <= 1, "{conns:?}");
    }

    #[test]
    fn steering_ties_go_to_the_syn_cpu_then_round_from_it() {
        let idle = [(0, 0); 4];
        for cpu in 0..8 {
            assert_eq!(least_loaded(4, cpu, loads(&idle)), Some(cpu % 4));
        }
        // Workers 0 and 3 tie for least; the rotation from CPU 2 meets 3 first.
        let table = [(0, 1), (0, 2), (0, 2), (0, 1)];
        assert_eq!(least_loaded(4, 2, loads(&table)), Some(3));
    }

    #[test]
    fn steering_skips_unreadable_workers_and_bounds_the_count() {
        assert_eq!(least_loaded(0, 0, loads(&[])), None);
        assert_eq!(
            least_loaded(3, 0, |i| (i == 2).then_some(Load::default())),
            Some(2)
        );
        assert_eq!(least_loaded(3, 0, |_| None), None);
        // More workers than MAX_SCAN: the window of MAX_SCAN from the SYN's CPU's worker, wrapping
        // around at the worker count, itself at most MAX_WORKERS.
        for (workers, first) in [(u32::MAX, 0), (64, 60), (MAX_WORKERS as u32, 250)] {
            let seen = core::cell::RefCell::new([false; MAX_WORKERS]);
            least_loaded(workers, first, |i| {
                seen.borrow_mut()[i as usize] = true;
                Some(Load::default())
            });
            let n = workers.min(MAX_WORKERS as u32);
            let want: [bool; MAX_WORKERS] =
                core::array::from_fn(|i| (0..MAX_SCAN).any(|s| (first % n + s) % n == i as u32));
            assert_eq!(*seen.borrow(), want, "{workers} workers from {first}");
        }
        // In the window, the least loaded wins; outside it, a lighter worker is not seen.
        let load = |i: u32| {
            Some(Load {
                in_flight: 0,
                connections: match i {
                    80 => 0,
                    65 => 1,
                    _ => 5,
                },
            })
        };
        assert_eq!(least_loaded(128, 60, load), Some(65));
    }

    #[test]
    fn every_worker_is_in_reach_whichever_cpus_take_the_syns() {
        // 64 workers, every SYN on CPUs 0-7: the windows start where the hashes say.
        let workers = 64;
        let mut reached = [false; 64];
        for hash in 0..1024u32 {
            let first = window_start(workers, hash % 8, hash.wrapping_mul(2_654_435_761));
            // All idle: the window's first worker takes it.
            let w = least_loaded(workers, first, |_| Some(Load::default())).unwrap();
            reached[w as usize] = true;
        }
        assert!(reached.iter().all(|&r| r), "{reached:?}");
        // One window holds them all: the SYN's CPU's own worker, whatever the hash.
        assert_eq!(window_start(MAX_SCAN, 3, 999), 3);
    }

    #[test]
    fn load_counts_connections_waiting_to_be_accepted() {
        let mut m = WorkerMetrics {
            in_flight: 2,
            connections: 3,
            accepted: 10,
            steered: 12,
            ..Default::default()
        };
        assert_eq!(
            Load::of(&m),
            Load {
                in_flight: 2,
                connections: 5
            }
        );
        // Accepts that were not steered (before the program was attached) never go negative.
        m.steered = 4;
        assert_eq!(
            Load::of(&m),
            Load {
                in_flight: 2,
                connections: 3
            }
        );
    }

    #[test]
    fn metrics_have_no_padding() {
        // Pod derive already refuses padding; this pins the size the BPF map value will have.
        assert_eq!(core::mem::size_of::<WorkerMetrics>() % 8, 0);
    }
}

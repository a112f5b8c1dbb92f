//! Per-worker counter cells and their Prometheus rendering.
//!
//! Each worker owns one [`WorkerMetrics`] (the `splitter-common` struct that is also the BPF map
//! value) and is its only writer: a bump is a relaxed load and a relaxed store of a cache line
//! no other thread writes, so it costs no syscall, no lock and no contended atomic. The admin
//! thread reads every cell word by word (relaxed atomic loads, so never torn) and sums the workers
//! when scraped. Recording handles live on the hot path, the renderer in the control plane.

use std::fmt;
use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use splitter_common::{
    latency_slot, status_slot, BackendCounters, WorkerMetrics, LATENCY_BOUNDS_US, MAX_BACKENDS,
    STATUSES,
};

use crate::scatter::exchange::BackendOutcome;

/// Where the cells live: ordinary memory, or (with eBPF) a mmap-ed BPF array map that `bpftool`
/// reads too. Either way, one `WorkerMetrics` per worker, contiguous, alive as long as this value.
pub struct MetricsRegion {
    base: NonNull<WorkerMetrics>,
    workers: usize,
    /// Keeps the memory alive: dropped last, after every handle (handles hold an `Arc` of us).
    _backing: Backing,
}

enum Backing {
    /// Ordinary memory; held only to be freed last.
    Heap { _cells: Box<[WorkerMetrics]> },
    /// A BPF map's pages; held only to be unmapped last.
    Bpf { _mapping: SharedMapping },
}

/// The value array of a `BPF_F_MMAPABLE` BPF array map, mapped `MAP_SHARED`: the kernel's own
/// pages, so the steering program and `bpftool` read exactly what the workers write. The mapping
/// holds its own reference on the map: it stays valid after the map's fd closes or its pin is
/// removed, until it is unmapped on drop.
struct SharedMapping {
    addr: NonNull<libc::c_void>,
    len: usize,
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: exactly the range `mmap` returned, unmapped once; no handle outlives us.
        unsafe { libc::munmap(self.addr.as_ptr(), self.len) };
    }
}

// SAFETY: the region is only accessed through atomic loads and stores (`cell`), so sharing it
// between the workers (one writer per cell) and the admin thread (reader) is free of data races.
unsafe impl Send for MetricsRegion {}
unsafe impl Sync for MetricsRegion {}

impl MetricsRegion {
    /// Cells in ordinary memory, for runs without eBPF.
    pub fn heap(workers: usize) -> Arc<Self> {
        let mut cells = vec![WorkerMetrics::default(); workers].into_boxed_slice();
        let base = NonNull::new(cells.as_mut_ptr()).expect("boxed slice pointer is non-null");
        Arc::new(MetricsRegion {
            base,
            workers,
            _backing: Backing::Heap { _cells: cells },
        })
    }

    /// Cells in the value array of a `BPF_F_MMAPABLE` array map (`map`), one per worker: the
    /// map must hold at least `workers` values of exactly `size_of::<WorkerMetrics>()` bytes (the
    /// kernel lays an mmapable array's values out back to back from offset 0).
    pub fn bpf_array(map: BorrowedFd<'_>, workers: usize) -> std::io::Result<Arc<Self>> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (workers * size_of::<WorkerMetrics>()).next_multiple_of(page);
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks `len` against the
        // map's size and refuses (EINVAL) an array created without BPF_F_MMAPABLE.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let addr = NonNull::new(addr).expect("mmap never maps page 0");
        Ok(Arc::new(MetricsRegion {
            // Page-aligned, so aligned for WorkerMetrics (u64 fields); zeroed by the kernel.
            base: addr.cast(),
            workers,
            _backing: Backing::Bpf {
                _mapping: SharedMapping { addr, len },
            },
        }))
    }

    /// Whether the cells live in a BPF map (and so are visible to `bpftool`).
    pub fn is_bpf(&self) -> bool {
        matches!(self._backing, Backing::Bpf { .. })
    }

    /// Number of worker cells.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The recording handle of worker `index`. Exactly one handle per worker must be used for
    /// writing: the single-writer rule is what makes a bump a plain load and store.
    pub fn handle(self: &Arc<Self>, index: usize) -> WorkerCounters {
        assert!(index < self.workers, "worker {index} has no metrics cell");
        // SAFETY: index is in bounds of the allocation of `workers` cells.
        let cell = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(index)) };
        WorkerCounters {
            cell,
            _region: Arc::clone(self),
        }
    }

    /// A consistent-enough copy of one worker's cell (each word read atomically).
    pub fn read(&self, index: usize) -> WorkerMetrics {
        assert!(index < self.workers);
        let mut out = WorkerMetrics::default();
        let words: &mut [u64] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut out));
        // SAFETY: in bounds; the cell is a run of u64 words accessed only atomically.
        let src = unsafe { self.base.as_ptr().add(index) as *mut u64 };
        for (i, w) in words.iter_mut().enumerate() {
            *w = unsafe { AtomicU64::from_ptr(src.add(i)) }.load(Ordering::Relaxed);
        }
        out
    }

    /// The sum of every worker's cell.
    pub fn total(&self) -> WorkerMetrics {
        let mut sum = WorkerMetrics::default();
        for i in 0..self.workers {
            let cell = self.read(i);
            let acc: &mut [u64] = bytemuck::cast_slice_mut(std::slice::from_mut(&mut sum));
            let add: &[u64] = bytemuck::cast_slice(std::slice::from_ref(&cell));
            for (a, b) in acc.iter_mut().zip(add) {
                *a = a.wrapping_add(*b);
            }
        }
        sum
    }
}

/// One worker's recording handle. Not `Clone`: its worker is the cell's only writer.
pub struct WorkerCounters {
    cell: NonNull<WorkerMetrics>,
    _region: Arc<MetricsRegion>,
}

// SAFETY: moved once to its worker thread; see `MetricsRegion`.
unsafe impl Send for WorkerCounters {}

/// Adds `n` (two's complement, so gauges can go down) to one word of the worker's own cell.
fn bump(word: *mut u64, n: u64) {
    // SAFETY: `word` points into a live cell; every access to it is atomic; this thread is its
    // only writer, so load-then-store loses no update and needs no read-modify-write instruction.
    let a = unsafe { AtomicU64::from_ptr(word) };
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
}

impl WorkerCounters {
    fn cell(&self) -> *mut WorkerMetrics {
        self.cell.as_ptr()
    }

    fn backend(&self, slot: usize) -> *mut BackendCounters {
        debug_assert!(slot < MAX_BACKENDS);
        // SAFETY: in bounds of the cell (slot < MAX_BACKENDS is a config invariant).
        unsafe {
            (&raw mut (*self.cell()).backends)
                .cast::<BackendCounters>()
                .add(slot)
        }
    }

    /// A request head was parsed (good or bad).
    pub fn request(&self) {
        bump(unsafe { &raw mut (*self.cell()).requests }, 1);
    }

    /// A response with `status` left for the client.
    pub fn response(&self, status: u16) {
        if let Some(i) = status_slot(status) {
            bump(
                unsafe { (&raw mut (*self.cell()).responses).cast::<u64>().add(i) },
                1,
            );
        }
    }

    /// A request was answered `elapsed_us` after its head arrived.
    pub fn latency(&self, elapsed_us: u64) {
        let i = latency_slot(elapsed_us);
        bump(
            unsafe {
                (&raw mut (*self.cell()).latency_buckets)
                    .cast::<u64>()
                    .add(i)
            },
            1,
        );
        bump(
            unsafe { &raw mut (*self.cell()).latency_sum_us },
            elapsed_us,
        );
    }

    /// Gauge of requests in progress: `+1` when one starts, `-1` when it is answered.
    pub fn in_flight(&self, delta: i64) {
        bump(unsafe { &raw mut (*self.cell()).in_flight }, delta as u64);
    }

    /// Gauge of open client connections, and the count of accepted ones.
    pub fn connection(&self, delta: i64) {
        bump(unsafe { &raw mut (*self.cell()).connections }, delta as u64);
        if delta > 0 {
            bump(unsafe { &raw mut (*self.cell()).accepted }, 1);
        }
    }

    /// A client was disconnected for being too slow or idle too long.
    pub fn client_timeout(&self) {
        bump(unsafe { &raw mut (*self.cell()).client_timeouts }, 1);
    }

    /// What became of backend `slot`'s part of a request.
    pub fn backend_outcome(&self, slot: usize, outcome: BackendOutcome) {
        let b = self.backend(slot);
        let word = match outcome {
            BackendOutcome::Valid => unsafe { &raw mut (*b).valid },
            BackendOutcome::Invalid => unsafe { &raw mut (*b).invalid },
            BackendOutcome::Timeout => unsafe { &raw mut (*b).timeout },
            BackendOutcome::Error => unsafe { &raw mut (*b).error },
        };
        bump(word, 1);
    }

    /// Backend `slot`'s response was the one returned.
    pub fn win(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).wins }, 1);
    }

    /// A late response was read to its end and its connection kept.
    pub fn late_drained(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).late_drained }, 1);
    }

    /// A backend connection was closed instead of going back to the pool.
    pub fn backend_closed(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).closed }, 1);
    }

    /// A new connection to backend `slot` was opened.
    pub fn backend_connect(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).connects }, 1);
    }
}

/// Renders the region as Prometheus text; backend labels come from the current configuration.
#[derive(Clone)]
pub struct Renderer {
    region: Arc<MetricsRegion>,
    /// Backend name of each metrics slot, replaced on reload.
    names: Arc<std::sync::RwLock<Vec<Option<String>>>>,
}

impl Renderer {
    /// A renderer of `region`, with no backend named yet.
    pub fn new(region: Arc<MetricsRegion>) -> Self {
        Renderer {
            region,
            names: Arc::new(std::sync::RwLock::new(vec![None; MAX_BACKENDS])),
        }
    }

    /// Names the backend slots after a (re)load: `names[slot]`.
    pub fn set_backend_names(&self, names: Vec<Option<String>>) {
        *self.names.write().expect("metrics names lock") = names;
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            total: self.region.total(),
            names: self.names.read().expect("metrics names lock").clone(),
        }));
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The summed counters, for the demo's summary and tests.
    pub fn total(&self) -> WorkerMetrics {
        self.region.total()
    }
}

/// One scrape: the summed cells and the labels to print them with.
#[derive(Debug)]
struct Snapshot {
    total: WorkerMetrics,
    names: Vec<Option<String>>,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(value as i64);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let t = &self.total;
        counter(
            &mut enc,
            "splitter_requests",
            "Requests received.",
            t.requests,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "splitter_responses",
                "Responses sent to clients, by status.",
                None,
                MetricType::Counter,
            )?;
            for (status, &n) in STATUSES.iter().zip(&t.responses) {
                let labels = [("status", status.to_string())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let backends: Vec<(usize, &str)> = self
            .names
            .iter()
            .enumerate()
            .filter_map(|(slot, n)| n.as_deref().map(|n| (slot, n)))
            .collect();
        {
            let mut m = enc.encode_descriptor(
                "splitter_backend_responses",
                "Backend replies by outcome: valid, invalid (unusable HTTP response), timeout, error.",
                None,
                MetricType::Counter,
            )?;
            for &(slot, name) in &backends {
                let b = &t.backends[slot];
                for (outcome, n) in [
                    ("valid", b.valid),
                    ("invalid", b.invalid),
                    ("timeout", b.timeout),
                    ("error", b.error),
                ] {
                    let labels = [("backend", name), ("outcome", outcome)];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        for (metric, help, field) in [
            (
                "splitter_backend_wins",
                "Times the backend's response was the one returned.",
                (|b: &BackendCounters| b.wins) as fn(&BackendCounters) -> u64,
            ),
            (
                "splitter_backend_late_drained",
                "Late backend responses read to their end on a kept connection.",
                |b: &BackendCounters| b.late_drained,
            ),
            (
                "splitter_backend_connections_closed",
                "Backend connections closed instead of reused (late, broken, or closed by the backend).",
                |b: &BackendCounters| b.closed,
            ),
            (
                "splitter_backend_connects",
                "Connections opened to the backend.",
                |b: &BackendCounters| b.connects,
            ),
        ] {
            let mut m = enc.encode_descriptor(metric, help, None, MetricType::Counter)?;
            for &(slot, name) in &backends {
                let labels = [("backend", name)];
                ConstCounter::new(field(&t.backends[slot])).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let m = enc.encode_descriptor(
                "splitter_request_duration_seconds",
                "Time from a request's last byte read to its response written.",
                None,
                MetricType::Histogram,
            )?;
            // The encoder takes per-bucket counts and accumulates them itself; f64::MAX is
            // its spelling of +Inf.
            let buckets: Vec<(f64, u64)> = t
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let upper = LATENCY_BOUNDS_US
                        .get(i)
                        .map_or(f64::MAX, |&us| us as f64 / 1e6);
                    (upper, n)
                })
                .collect();
            let count = t.latency_buckets.iter().sum();
            histogram(m, t.latency_sum_us as f64 / 1e6, count, &buckets)?;
        }
        gauge(
            &mut enc,
            "splitter_in_flight",
            "Requests in progress.",
            t.in_flight,
        )?;
        gauge(
            &mut enc,
            "splitter_client_connections",
            "Client connections open.",
            t.connections,
        )?;
        counter(
            &mut enc,
            "splitter_client_connections_accepted",
            "Client connections accepted.",
            t.accepted,
        )?;
        counter(
            &mut enc,
            "splitter_client_timeouts",
            "Client connections closed for sending too slowly or idling too long.",
            t.client_timeouts,
        )?;
        Ok(())
    }
}

fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), fmt::Error> {
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bumps_sum_across_workers_and_gauges_go_down() {
        let region = MetricsRegion::heap(2);
        let (a, b) = (region.handle(0), region.handle(1));
        a.request();
        b.request();
        b.request();
        a.in_flight(1);
        b.in_flight(1);
        a.in_flight(-1);
        a.response(204);
        b.backend_outcome(3, BackendOutcome::Timeout);
        b.latency(1_500);
        let t = region.total();
        assert_eq!(t.requests, 3);
        assert_eq!(t.in_flight, 1);
        assert_eq!(t.responses[status_slot(204).unwrap()], 1);
        assert_eq!(t.backends[3].timeout, 1);
        assert_eq!(t.latency_buckets[latency_slot(1_500)], 1);
        assert_eq!(t.latency_sum_us, 1_500);
    }

    #[test]
    fn renders_the_spec_metric_names() {
        let region = MetricsRegion::heap(1);
        let h = region.handle(0);
        h.request();
        h.response(200);
        h.win(0);
        h.backend_outcome(0, BackendOutcome::Valid);
        h.backend_outcome(1, BackendOutcome::Error);
        h.latency(70_000);
        let r = Renderer::new(region);
        r.set_backend_names(vec![Some("a".into()), Some("b".into())]);
        let text = r.render();
        for line in [
            "splitter_requests_total 1",
            "splitter_responses_total{status=\"200\"} 1",
            "splitter_responses_total{status=\"204\"} 0",
            "splitter_backend_responses_total{backend=\"a\",outcome=\"valid\"} 1",
            "splitter_backend_responses_total{backend=\"b\",outcome=\"error\"} 1",
            "splitter_backend_wins_total{backend=\"a\"} 1",
            "splitter_request_duration_seconds_bucket{le=\"0.08\"} 1",
            "splitter_request_duration_seconds_bucket{le=\"0.05\"} 0",
            "splitter_request_duration_seconds_bucket{le=\"+Inf\"} 1",
            "splitter_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }
}

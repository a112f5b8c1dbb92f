//! Hot-path recording: one worker's handle on its own cell. Single writer, so every bump is a
//! relaxed load and a relaxed store, never an atomic read-modify-write.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use splitter_common::{
    latency_slot, status_slot, BackendCounters, RouteCounters, WorkerMetrics, MAX_BACKENDS,
    MAX_ROUTES,
};

use super::MetricsRegion;
use crate::scatter::exchange::BackendOutcome;
use crate::scatter::select::Invalid;

/// One worker's recording handle. Not `Clone`: its worker is the cell's only writer.
pub struct WorkerCounters {
    cell: NonNull<WorkerMetrics>,
    _region: Arc<MetricsRegion>,
}

// SAFETY: moved once to its worker thread; see `MetricsRegion`.
unsafe impl Send for WorkerCounters {}

impl WorkerCounters {
    /// The handle of `cell`, which keeps `region` (and so the cell's memory) alive.
    ///
    /// # Safety
    ///
    /// `cell` points to one of `region`'s cells, and no other handle of that cell is used to write.
    pub(super) unsafe fn new(cell: NonNull<WorkerMetrics>, region: Arc<MetricsRegion>) -> Self {
        WorkerCounters {
            cell,
            _region: region,
        }
    }

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

    /// Zeroes backend slot `slot`: it now counts for another backend than before (a reload gave
    /// a removed backend's slot to a new one), whose counters start at 0. Per-backend counts
    /// are made only through a [`BackendMeter`](super::BackendMeter), which stops counting once
    /// its slot went to another name.
    pub(super) fn reset_backend(&self, slot: usize) {
        let words = size_of::<BackendCounters>() / size_of::<u64>();
        let base = self.backend(slot).cast::<u64>();
        for i in 0..words {
            // SAFETY: in bounds (see `backend`), a run of u64 words; this worker is the only writer.
            unsafe { AtomicU64::from_ptr(base.add(i)) }.store(0, Ordering::Relaxed);
        }
    }

    /// Zeroes route slot `slot`, now another route's (see `reset_backend`).
    pub fn reset_route(&self, slot: usize) {
        debug_assert!(slot < MAX_ROUTES);
        // SAFETY: in bounds of the cell (slot < MAX_ROUTES is a config invariant).
        let r = unsafe { (&raw mut (*self.cell()).routes).cast::<u64>().add(slot * 2) };
        for i in 0..size_of::<RouteCounters>() / size_of::<u64>() {
            // SAFETY: the route's words; this worker is the only writer.
            unsafe { AtomicU64::from_ptr(r.add(i)) }.store(0, Ordering::Relaxed);
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

    /// An access log record was dropped.
    pub fn access_log_dropped(&self) {
        bump(unsafe { &raw mut (*self.cell()).access_log_dropped }, 1);
    }

    /// A response left more than 10 ms after its deadline.
    pub fn deadline_miss(&self) {
        bump(unsafe { &raw mut (*self.cell()).deadline_misses }, 1);
    }

    /// A request was routed to the route of metrics slot `slot`; `no_content`: it got a 204.
    pub fn route(&self, slot: usize, no_content: bool) {
        debug_assert!(slot < MAX_ROUTES);
        // SAFETY: in bounds of the cell (slot < MAX_ROUTES is a config invariant).
        let r = unsafe {
            (&raw mut (*self.cell()).routes)
                .cast::<RouteCounters>()
                .add(slot)
        };
        bump(unsafe { &raw mut (*r).requests }, 1);
        if no_content {
            bump(unsafe { &raw mut (*r).no_content }, 1);
        }
    }

    /// Backend `slot`'s whole reply came `elapsed_us` after its request started.
    pub(super) fn backend_latency(&self, slot: usize, elapsed_us: u64) {
        let b = self.backend(slot);
        let i = latency_slot(elapsed_us);
        bump(
            unsafe { (&raw mut (*b).latency_buckets).cast::<u64>().add(i) },
            1,
        );
        bump(unsafe { &raw mut (*b).latency_sum_us }, elapsed_us);
    }

    /// Gauge: backend `slot` has `idle` connections in this worker's pool.
    pub(super) fn pool_idle(&self, slot: usize, idle: usize) {
        // SAFETY: in bounds (see `backend`); this worker is the only writer.
        unsafe { AtomicU64::from_ptr(&raw mut (*self.backend(slot)).pool_idle) }
            .store(idle as u64, Ordering::Relaxed);
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
    pub(super) fn backend_outcome(&self, slot: usize, outcome: BackendOutcome) {
        let b = self.backend(slot);
        let word = match outcome {
            BackendOutcome::Valid => unsafe { &raw mut (*b).valid },
            BackendOutcome::Invalid => unsafe { &raw mut (*b).invalid },
            BackendOutcome::Timeout => unsafe { &raw mut (*b).timeout },
            BackendOutcome::Error => unsafe { &raw mut (*b).error },
            BackendOutcome::Ejected => unsafe { &raw mut (*b).ejected },
            BackendOutcome::Overloaded => unsafe { &raw mut (*b).overloaded },
        };
        bump(word, 1);
    }

    /// Backend `slot`'s response was the one returned.
    pub(super) fn win(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).wins }, 1);
    }

    /// A late response was read to its end and its connection kept.
    pub(super) fn late_drained(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).late_drained }, 1);
    }

    /// Why one of backend `slot`'s invalid replies was invalid, when it is worth telling.
    pub(super) fn backend_invalid(&self, slot: usize, why: Invalid) {
        let b = self.backend(slot);
        let word = match why {
            Invalid::BelowFloor => unsafe { &raw mut (*b).below_floor },
            Invalid::Encoding => unsafe { &raw mut (*b).bad_encoding },
            Invalid::Status | Invalid::Field => return,
        };
        bump(word, 1);
    }

    /// Backend `slot` was ejected on this worker.
    pub(super) fn backend_ejected(&self, slot: usize) {
        let b = self.backend(slot);
        bump(unsafe { &raw mut (*b).ejections }, 1);
        // SAFETY: in bounds (see `backend`); this worker is the only writer.
        unsafe { AtomicU64::from_ptr(&raw mut (*b).is_ejected) }.store(1, Ordering::Relaxed);
    }

    /// Backend `slot` takes traffic again on this worker.
    pub(super) fn backend_restored(&self, slot: usize) {
        // SAFETY: in bounds (see `backend`); this worker is the only writer.
        unsafe { AtomicU64::from_ptr(&raw mut (*self.backend(slot)).is_ejected) }
            .store(0, Ordering::Relaxed);
    }

    /// A connection to backend `slot` was closed.
    pub(super) fn backend_closed(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).closed }, 1);
    }

    /// A new connection to backend `slot` was opened.
    pub(super) fn backend_connect(&self, slot: usize) {
        bump(unsafe { &raw mut (*self.backend(slot)).connects }, 1);
    }
}

/// Adds `n` (two's complement, so gauges can go down) to one word of the worker's own cell.
fn bump(word: *mut u64, n: u64) {
    // SAFETY: `word` points into a live cell; every access to it is atomic; this thread is its
    // only writer, so load-then-store loses no update and needs no read-modify-write instruction.
    let a = unsafe { AtomicU64::from_ptr(word) };
    a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
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
}

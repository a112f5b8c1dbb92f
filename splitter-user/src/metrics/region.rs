//! The memory the per-worker cells live in: ordinary heap, or the value array of the mmap-ed BPF
//! map the steering program reads. Readers here (the scrape, the demo) load every word atomically.

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use splitter_common::WorkerMetrics;

use super::WorkerCounters;

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

    /// The recording handle of worker `index`. Exactly one handle per worker must be used for
    /// writing: the single-writer rule is what makes a bump a plain load and store.
    pub fn handle(self: &Arc<Self>, index: usize) -> WorkerCounters {
        assert!(index < self.workers, "worker {index} has no metrics cell");
        // SAFETY: index is in bounds of the allocation of `workers` cells.
        let cell = unsafe { NonNull::new_unchecked(self.base.as_ptr().add(index)) };
        // SAFETY: `cell` is one of ours; the caller keeps to one writing handle per worker.
        unsafe { WorkerCounters::new(cell, Arc::clone(self)) }
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

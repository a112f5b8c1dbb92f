//! The provided-buffer ring of `--multishot` (`IORING_REGISTER_PBUF_RING`): the kernel takes one
//! buffer per multishot recv completion; the worker copies the bytes out at once and hands the
//! buffer back, so buffers are only ever in the kernel's hands or in flight in a CQE.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The buffer group id the multishot recvs name.
pub const GROUP: u16 = 0;
/// Buffers in the ring (a power of two). 1024 x 4 KiB: a 2 KB exchange at 64 connections per
/// worker keeps only a few in flight.
const COUNT: u16 = 1024;
const SIZE: usize = 4096;

pub struct BufRing {
    /// `COUNT` ring entries, then `COUNT` buffers of `SIZE` bytes, in one page-aligned mapping
    /// that lives as long as the process (the worker and its ring never end before it does).
    entries: *mut BufRingEntry,
    buffers: *mut u8,
    /// Our copy of the tail; the kernel reads the shared one, in entry 0's `resv` field.
    tail: u16,
}

impl BufRing {
    pub fn new(submitter: &Submitter<'_>) -> io::Result<BufRing> {
        let ring_bytes = COUNT as usize * size_of::<BufRingEntry>();
        // SAFETY: a fresh anonymous mapping; failure is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_bytes + COUNT as usize * SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            entries: base.cast(),
            // SAFETY: within the mapping; `ring_bytes` is a multiple of the page size.
            buffers: unsafe { base.cast::<u8>().add(ring_bytes) },
            tail: 0,
        };
        for bid in 0..COUNT {
            ring.put(bid);
        }
        ring.publish();
        // SAFETY: the entries stay mapped, and in place, for the life of the process.
        unsafe { submitter.register_buf_ring(base as u64, COUNT, GROUP)? };
        Ok(ring)
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has just handed us in a CQE.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < COUNT && len <= SIZE,
            "the kernel names a buffer we gave it"
        );
        // SAFETY: in bounds (checked above); the kernel wrote these bytes and does not touch the
        // buffer again until `give_back` returns it.
        unsafe { std::slice::from_raw_parts(self.buffers.add(bid as usize * SIZE), len) }
    }

    /// Hands buffer `bid` back to the kernel.
    pub fn give_back(&mut self, bid: u16) {
        self.put(bid);
        self.publish();
    }

    /// Writes the entry at the tail, not yet visible to the kernel.
    fn put(&mut self, bid: u16) {
        let index = (self.tail & (COUNT - 1)) as usize;
        // SAFETY: `index < COUNT`; the kernel only reads entries between its head and the
        // published tail, and this one is at the tail. The setters leave `resv` (the tail, in
        // entry 0) alone.
        let entry = unsafe { &mut *self.entries.add(index) };
        // SAFETY: `bid < COUNT`, so the address is inside the mapping.
        entry.set_addr(unsafe { self.buffers.add(bid as usize * SIZE) } as u64);
        entry.set_len(SIZE as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes the entries written so far visible: the Release store orders them before the tail.
    fn publish(&self) {
        // SAFETY: `entries` is the ring's base; the tail is a naturally aligned u16 that only we
        // write, and the kernel reads with an acquire load.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

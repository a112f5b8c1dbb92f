//! The process's descriptor table, grown once at start to the descriptor limit.
//!
//! Linux keeps a process's open files in one table that it doubles when a new descriptor does not
//! fit. When several threads share the table, the kernel first waits for an RCU grace period
//! (`expand_fdtable`: `synchronize_rcu`), 10-15 ms on the test host, and every thread that opens a
//! descriptor meanwhile waits with it. For thread-per-core workers that is every worker's accept
//! and connect stalled at once, each time the open sockets first pass a power of two: 64 clients
//! leaving with requests in flight while 64 others arrived did it, and the newcomers' first
//! requests left 5-20 ms past their deadline (traced with `perf`: `accept4` → `alloc_fd` →
//! `expand_files` → `synchronize_rcu`, both workers, for 14 ms).
//!
//! The table never shrinks, so growing it before the workers start, while the process has one
//! thread and the kernel need not wait, removes the stall for good. It costs the kernel 8 bytes and
//! 3 bits per descriptor: 8 MiB at the unit's `LimitNOFILE=1048576`, 160 KiB at 20,000.

use std::io;

/// Grows the table to `RLIMIT_NOFILE`'s soft limit, at most [`MOST`] descriptors, and returns
/// that size. An error leaves the table to grow on demand, as without this.
pub fn reserve() -> io::Result<usize> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: fills a valid rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let size = usize::try_from(limit.rlim_cur).map_or(MOST, |n| n.min(MOST));
    grow_to(size)?;
    Ok(size)
}

/// Beyond `fs.nr_open`'s default no descriptor can be opened anyway.
const MOST: usize = 1 << 20;

/// Makes room for descriptors `0..size` by opening one at `size - 1` and closing it.
fn grow_to(size: usize) -> io::Result<()> {
    let Some(highest) = size.checked_sub(1) else {
        return Ok(());
    };
    let highest = libc::c_int::try_from(highest).map_err(|_| io::Error::other("too large"))?;
    // SAFETY: no pointers; the returned descriptor is this function's to close.
    let probe = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if probe < 0 {
        return Err(io::Error::last_os_error());
    }
    // F_DUPFD takes the lowest free descriptor at or above `highest`: `highest` itself unless
    // something already sits there, in which case the table is that large already.
    // SAFETY: `probe` is open and ours; the duplicate, if any, is closed below.
    let dup = unsafe { libc::fcntl(probe, libc::F_DUPFD_CLOEXEC, highest) };
    let result = if dup < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `dup` was just opened by this function.
        unsafe { libc::close(dup) };
        Ok(())
    };
    // SAFETY: `probe` was opened by this function.
    unsafe { libc::close(probe) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's descriptor table size.
    fn table_size() -> usize {
        splitter_test_support::procfs::fd_table_size(std::process::id())
    }

    #[test]
    fn the_table_grows_and_the_probe_leaves_nothing_open() {
        // Within any limit a test host has (1024 at least), beyond the test harness's own needs.
        let size = 1000;
        let before = std::fs::read_dir("/proc/self/fd").unwrap().count();
        grow_to(size).unwrap();
        assert!(table_size() >= size, "FDSize {}", table_size());
        // SAFETY: F_GETFD reads flags only.
        let open = unsafe { libc::fcntl(size as libc::c_int - 1, libc::F_GETFD) };
        assert_eq!(open, -1, "the descriptor at the top was left open");
        // Other tests of this binary open and close descriptors meanwhile (a few hundred at
        // most), so one leaked probe would not show; a leak in each of 3000 calls would.
        for _ in 0..3000 {
            grow_to(size).unwrap();
        }
        let after = std::fs::read_dir("/proc/self/fd").unwrap().count();
        assert!(after < before + 1000, "{before} → {after} descriptors");
    }

    #[test]
    fn beyond_the_limit_is_an_error_not_a_panic() {
        assert!(grow_to(usize::MAX).is_err());
        grow_to(0).unwrap();
    }
}

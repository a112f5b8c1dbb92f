//! The process's own figures for `/metrics`: resident memory, open descriptors and their limit.
//!
//! `/proc/self/statm` and `/proc/self/fd` are opened once, at start-up, and read again at each
//! scrape: a process that has run out of descriptors (`EMFILE`) could not open them, and that
//! is when `splitter_process_open_fds` matters most (the alert on descriptors near the limit).

use std::fs::File;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::sync::{LazyLock, Mutex};

/// The process's figures, read at scrape time.
#[derive(Debug, Default)]
pub struct Process {
    pub rss_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
}

/// The files read at each scrape, opened once (`None` without `/proc`).
struct ProcFiles {
    statm: File,
    /// `/proc/self/fd`, listed again from its start at each scrape.
    fds: File,
}

static PROC_FILES: LazyLock<Option<Mutex<ProcFiles>>> = LazyLock::new(|| {
    Some(Mutex::new(ProcFiles {
        statm: File::open("/proc/self/statm").ok()?,
        fds: File::open("/proc/self/fd").ok()?,
    }))
});

impl Process {
    /// Opens the files the figures are read from; the first scrape would otherwise, when it may
    /// be too late.
    pub fn open() {
        LazyLock::force(&PROC_FILES);
    }

    pub fn read() -> Process {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
        let (rss_pages, open_fds) = match PROC_FILES.as_ref() {
            Some(files) => {
                let files = files.lock().unwrap_or_else(|e| e.into_inner());
                (resident_pages(&files.statm), count_fds(&files.fds))
            }
            None => (None, None),
        };
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a valid pointer to an rlimit.
        let max_fds = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
            0 => limit.rlim_cur,
            _ => 0,
        };
        Process {
            rss_bytes: rss_pages.unwrap_or(0) * page,
            open_fds: open_fds.unwrap_or(0),
            max_fds,
        }
    }
}

/// The second field of `statm`, read from its start.
fn resident_pages(statm: &File) -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = statm.read_at(&mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The entries of `/proc/self/fd`, listed from the start with `getdents64` on the descriptor
/// held open (`std::fs::read_dir` would open another); the held one is not counted.
fn count_fds(dir: &File) -> Option<u64> {
    let fd = dir.as_raw_fd();
    // SAFETY: lseek on a descriptor this File owns.
    if unsafe { libc::lseek(fd, 0, libc::SEEK_SET) } != 0 {
        return None;
    }
    let mut buf = [0u8; 4096];
    let mut entries = 0u64;
    loop {
        // SAFETY: getdents64 writes at most `buf.len()` bytes into `buf`.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return None;
        }
        if n == 0 {
            break;
        }
        // Each record: d_ino (8), d_off (8), d_reclen (2), d_type (1), then the NUL-ended name.
        let mut at = 0;
        while at + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..at + reclen];
            if !name.starts_with(b".\0") && !name.starts_with(b"..\0") {
                entries += 1;
            }
            at += reclen.max(1);
        }
    }
    Some(entries.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_descriptors_the_process_holds() {
        let before = Process::read().open_fds;
        assert!(before > 0, "stdin, stdout, stderr at least");
        // Other tests open and close a hundred or so descriptors on other threads meanwhile: 500
        // of ours show through that noise.
        let held: Vec<File> = (0..500).map(|_| File::open("/dev/null").unwrap()).collect();
        let during = Process::read().open_fds;
        assert!(
            during >= before + 250,
            "{before} → {during} with 500 more held"
        );
        drop(held);
        let p = Process::read();
        assert!(p.rss_bytes > 0 && p.max_fds > 0, "{p:?}");
    }
}

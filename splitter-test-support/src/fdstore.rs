//! systemd's file descriptor store, played by the test: what `FDSTORE=1` sends to
//! `NOTIFY_SOCKET` is kept by `FDNAME` (`FDSTOREREMOVE=1` drops it), and the next start gets it
//! as `LISTEN_FDS`, `LISTEN_FDNAMES` and `LISTEN_PID`, as `systemctl restart` does.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::host::TempDir;
use crate::process::{spawn_logged, LineLog, ProcGuard, READY_TIMEOUT};
use crate::splitter::Binary;

/// systemd's descriptor store, as far as the splitter sees it: a `NOTIFY_SOCKET` that keeps
/// what comes with `FDSTORE=1` by `FDNAME`, and gives it to the next start as `LISTEN_FDS`. A
/// thread takes the notifications in as they come, as systemd does: the kernel queues only a
/// few datagrams (`net.unix.max_dgram_qlen`), and a sender blocks when the queue is full.
pub struct FdStore {
    binary: Binary,
    path: PathBuf,
    fds: Arc<Mutex<Stored>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Stored descriptors by `FDNAME`.
type Stored = std::collections::BTreeMap<String, Vec<OwnedFd>>;

impl FdStore {
    /// A store with its notification socket in `dir`, for `binary`'s processes.
    pub fn new(dir: &TempDir, binary: Binary) -> FdStore {
        let path = dir.path.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let fds = Arc::new(Mutex::new(Stored::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (fds, stop) = (Arc::clone(&fds), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    receive_notification(&socket, &fds);
                }
            })
        };
        FdStore {
            binary,
            path,
            fds,
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until `workers` worker listeners and the admin one are stored (bounded).
    pub fn wait_stored(&self, workers: usize) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            {
                let fds = self.fds.lock().unwrap();
                if fds.get("worker").map_or(0, Vec::len) == workers
                    && fds.get("admin").map_or(0, Vec::len) == 1
                {
                    return;
                }
                assert!(Instant::now() < until, "not stored: {:?}", fds.keys());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The local addresses of the sockets stored under `name`, in order.
    pub fn stored_addrs(&self, name: &str) -> Vec<std::net::SocketAddr> {
        let stored = self.fds.lock().unwrap();
        stored
            .get(name)
            .into_iter()
            .flatten()
            .map(|fd| {
                let socket = std::net::TcpListener::from(fd.try_clone().expect("dup"));
                socket.local_addr().expect("a listening socket")
            })
            .collect()
    }

    /// Starts `splitter run` as systemd would: with the stored descriptors from fd 3 on
    /// (`LISTEN_FDS`, `LISTEN_FDNAMES`, `LISTEN_PID`), under `wrapper` (a command line that
    /// ends by exec-ing its arguments), and returns once it logs `splitter started`.
    pub fn start(&self, config: &Path, wrapper: &[&str]) -> (ProcGuard, LineLog) {
        let stored = self.fds.lock().unwrap();
        let mut passed = Vec::new();
        let mut names = Vec::new();
        for name in ["worker", "admin"] {
            for fd in stored.get(name).into_iter().flatten() {
                passed.push(fd.as_raw_fd());
                names.push(name);
            }
        }
        // `$$` is the shell's PID, which `exec` hands on to the splitter.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "LISTEN_PID=$$ exec \"$@\"", "sh"])
            .args(wrapper)
            .arg(self.binary.path())
            .args(["run", "-c"])
            .arg(config)
            .env("NOTIFY_SOCKET", &self.path)
            .env("LISTEN_FDS", passed.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        // SAFETY: only async-signal-safe calls between fork and exec. Each descriptor is first
        // copied above any it could overwrite, then put at 3, 4, ...
        unsafe {
            cmd.pre_exec(move || {
                let mut high = Vec::with_capacity(passed.len());
                for &fd in &passed {
                    let h = libc::fcntl(fd, libc::F_DUPFD, 1000);
                    if h < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    high.push(h);
                }
                for (i, &h) in high.iter().enumerate() {
                    if libc::dup2(h, 3 + i as libc::c_int) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(h);
                }
                Ok(())
            });
        }
        let (proc, log) = spawn_logged(&mut cmd);
        drop(stored);
        assert!(
            log.wait_line(0, READY_TIMEOUT, |l| l.contains("splitter started"))
                .is_some(),
            "did not start:\n{}",
            log.text()
        );
        (proc, log)
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes in one notification, if one comes within the socket's timeout.
fn receive_notification(socket: &UnixDatagram, store: &Mutex<Stored>) {
    let mut data = [0u8; 4096];
    let mut control = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: every pointer outlives the call; the descriptors the kernel passes are new and
    // ours to own.
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control.len() as _;
        let n = libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return;
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let p = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..bytes / size_of::<libc::c_int>() {
                    fds.push(OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        n as usize
    };
    let text = String::from_utf8_lossy(&data[..n]).into_owned();
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
    };
    let name = field("FDNAME").unwrap_or_else(|| "stored".into());
    let mut stored = store.lock().unwrap();
    if field("FDSTOREREMOVE").as_deref() == Some("1") {
        stored.remove(&name);
    } else if field("FDSTORE").as_deref() == Some("1") {
        stored.entry(name).or_default().extend(fds);
    }
}

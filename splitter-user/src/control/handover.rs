//! Restarts without a refused connection (SPEC 10): a starting splitter takes the listening
//! sockets of the running one over a Unix socket (`SCM_RIGHTS`), so the same sockets, with the
//! connections already queued on them, keep listening throughout; the old process then stops
//! accepting, finishes its requests and exits.
//!
//! The exchange, on the `handover_socket` path the running process listens on:
//! 1. the new process connects and sends `take <listen address>\n`;
//! 2. the old one answers `ok <n>\n` with its `n` worker listeners and its admin listener
//!    attached (`SCM_RIGHTS`), or `no\n` when the addresses differ (another instance's path).
//!    The kernel carries at most [`SCM_MAX_FD`] descriptors per message: beyond, the rest
//!    follow in messages of one byte (`+`) each, as many as needed;
//! 3. once its own workers run on them, the new process sends `ready\n`; the old one stops
//!    accepting and drains, and the new one takes over the path for the next restart.
//!
//! With eBPF steering, the old process takes the listeners out of its socket array just before
//! it sends them (a socket can be in one array at a time; the new process puts them in its
//! own), and back if the handover fails.
//!
//! Blocking code on threads of its own: it runs once per restart, never on the data path.

use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Most descriptors one `SCM_RIGHTS` message carries (the kernel's `SCM_MAX_FD`; more is
/// EINVAL).
const SCM_MAX_FD: usize = 253;

/// Most worker listeners a handover accepts: a bound on what a confused peer can make this
/// process wait for, far above any worker count.
const MAX_LISTENERS: usize = 1 << 16;

/// The payload of the messages that carry the descriptors beyond the first [`SCM_MAX_FD`].
const MORE: &[u8] = b"+";

/// How long either side waits for the other at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The sockets taken over from a running process, and the line to tell it when to let go.
pub struct Inherited {
    /// The workers' listeners (none when they listen elsewhere than `listen` now asks).
    pub listeners: Vec<TcpListener>,
    /// The admin listener (none when it listens elsewhere than `admin_listen` now asks).
    pub admin: Option<TcpListener>,
    /// The line to the old process, when one is waiting to hear that this one runs.
    pub old: Option<OldProcess>,
}

/// Which of the inherited sockets [`Inherited::keep_matching`] closed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replaced {
    pub listeners: bool,
    pub admin: bool,
}

/// Whether a socket inherited listening on `local` serves what the configuration asks for,
/// `configured`: the very same address. Port 0 (any free port) is never matched: it asks for
/// a fresh bind. `0.0.0.0:80` and `127.0.0.1:80` differ: a restart applies the change.
pub fn serves(configured: SocketAddr, local: SocketAddr) -> bool {
    configured.port() != 0 && configured == local
}

impl Inherited {
    /// Keeps the sockets that listen where `listen` and `admin_listen` ask and closes the
    /// others, for the caller to bind the configured addresses afresh (a restart that changed
    /// `listen` or `admin_listen`). Logs which were kept and which replaced.
    pub fn keep_matching(&mut self, listen: SocketAddr, admin_listen: SocketAddr) -> Replaced {
        let mut replaced = Replaced::default();
        if let Some(first) = self.listeners.first() {
            let local = first.local_addr().ok();
            // One group, one address: a socket elsewhere among them replaces them all.
            let all = self
                .listeners
                .iter()
                .all(|l| l.local_addr().ok().is_some_and(|a| serves(listen, a)));
            let inherited = local.map_or_else(|| "?".to_owned(), |a| a.to_string());
            if all {
                tracing::info!(address = %inherited, "inherited listeners kept (`listen`)");
            } else {
                tracing::warn!(
                    inherited = %inherited,
                    configured = %listen,
                    "inherited listeners replaced: `listen` changed, binding it afresh"
                );
                self.listeners.clear();
                replaced.listeners = true;
            }
        }
        if let Some(admin) = &self.admin {
            let local = admin.local_addr().ok();
            let inherited = local.map_or_else(|| "?".to_owned(), |a| a.to_string());
            if local.is_some_and(|a| serves(admin_listen, a)) {
                tracing::info!(address = %inherited, "inherited admin listener kept (`admin_listen`)");
            } else {
                tracing::warn!(
                    inherited = %inherited,
                    configured = %admin_listen,
                    "inherited admin listener replaced: `admin_listen` changed, binding it afresh"
                );
                self.admin = None;
                replaced.admin = true;
            }
        }
        replaced
    }

    /// Nothing inherited is left to serve on (and no process waits to hear from this one).
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty() && self.admin.is_none() && self.old.is_none()
    }
}

/// The process the sockets came from, waiting to hear that the new one runs.
pub struct OldProcess(UnixStream);

impl OldProcess {
    /// The new process serves on the inherited sockets: the old one may stop accepting.
    pub fn ready(mut self) -> io::Result<()> {
        self.0.write_all(b"ready\n")
    }
}

/// Takes the sockets of the splitter serving `listen` at `path`, if one runs there. `None` when
/// nothing listens at `path`, or what does serves another address.
pub fn take_over(path: &Path, listen: SocketAddr) -> io::Result<Option<Inherited>> {
    let mut old = match UnixStream::connect(path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    old.set_read_timeout(Some(STEP_TIMEOUT))?;
    old.write_all(format!("take {listen}\n").as_bytes())?;
    let (line, mut fds) = recv_with_fds(&old)?;
    if line.trim_end() == "no" {
        return Ok(None);
    }
    let count: usize = line
        .trim_end()
        .strip_prefix("ok ")
        .and_then(|n| n.parse().ok())
        .filter(|&n| (1..=MAX_LISTENERS).contains(&n))
        .ok_or_else(|| io::Error::other(format!("unexpected handover answer {line:?}")))?;
    // The descriptors beyond the first message's, in messages of their own.
    while fds.len() < count + 1 && !fds.is_empty() && fds.len() % SCM_MAX_FD == 0 {
        let (more, next) = recv_with_fds(&old)?;
        if more.as_bytes() != MORE || next.is_empty() {
            break;
        }
        fds.extend(next);
    }
    if fds.len() != count + 1 {
        return Err(io::Error::other(format!(
            "handover sent {} descriptors for {count} listeners",
            fds.len()
        )));
    }
    let mut sockets: Vec<TcpListener> = fds.into_iter().map(TcpListener::from).collect();
    let admin = sockets.pop().expect("count + 1 descriptors");
    for socket in &sockets {
        socket.set_nonblocking(true)?;
    }
    admin.set_nonblocking(true)?;
    Ok(Some(Inherited {
        listeners: sockets,
        admin: Some(admin),
        old: Some(OldProcess(old)),
    }))
}

/// Listens at `path` (replacing what was there: the previous process's socket) and, on a valid
/// request, hands over `listeners` and `admin` (duplicates the caller keeps open), waits for
/// `ready` and calls `handed_over`, once. Returns when the handover is done, or at once when
/// `path` cannot be listened on (logged: restarts then refuse connections for a moment).
pub fn serve(
    path: PathBuf,
    listen: SocketAddr,
    listeners: Vec<TcpListener>,
    admin: TcpListener,
    handed_over: impl FnOnce() + Send + 'static,
) -> io::Result<std::thread::JoinHandle<()>> {
    let _ = std::fs::remove_file(&path);
    let server = UnixListener::bind(&path)?;
    std::thread::Builder::new()
        .name("splitter-handover".into())
        .spawn(move || {
            // Out of descriptors (EMFILE) the accept fails at once, again and again: pause.
            let mut backoff = crate::worker::listener::AcceptBackoff::default();
            for stream in server.incoming() {
                let stream = match stream {
                    Ok(stream) => {
                        backoff.reset();
                        stream
                    }
                    Err(_) => {
                        std::thread::sleep(backoff.next());
                        continue;
                    }
                };
                match hand_over(stream, listen, &listeners, &admin) {
                    Ok(true) => {
                        handed_over();
                        // After the drain began: a reader of the log may count on it.
                        tracing::info!("listening sockets handed over to a new process: draining");
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "handover failed; still serving"),
                }
            }
        })
}

/// One handover request. `Ok(true)`: the new process runs on the sockets.
fn hand_over(
    stream: UnixStream,
    listen: SocketAddr,
    listeners: &[TcpListener],
    admin: &TcpListener,
) -> io::Result<bool> {
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(256).read_line(&mut line)?;
    let wanted: Option<SocketAddr> = line
        .trim_end()
        .strip_prefix("take ")
        .and_then(|a| a.parse().ok());
    if wanted != Some(listen) {
        (&stream).write_all(b"no\n")?;
        return Ok(false);
    }
    let mut fds: Vec<RawFd> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    fds.push(admin.as_raw_fd());
    // Out of this process's eBPF socket array, so that the new process can steer them; the
    // kernel hashes new connections over them until it does.
    let released = crate::steering::release(listeners);
    let handed = send_all(&stream, listeners.len(), &fds).and_then(|()| {
        // As long as the new process takes to start (it may wait seconds for the kernel to free
        // a socket array): taking steering back from a process that is still starting would
        // leave both without it. It says `ready`, or its end closes the stream.
        stream.set_read_timeout(None)?;
        line.clear();
        reader.take(64).read_line(&mut line)?;
        if line.trim_end() != "ready" {
            return Err(io::Error::other(format!(
                "the new process did not start ({line:?})"
            )));
        }
        Ok(())
    });
    if let Err(e) = handed {
        if let Some(released) = released {
            released.restore(listeners);
        }
        return Err(e);
    }
    Ok(true)
}

/// Sends `ok <count>` and `fds`: as many as one message carries with it, the rest in messages
/// of [`MORE`].
fn send_all(stream: &UnixStream, count: usize, fds: &[RawFd]) -> io::Result<()> {
    let first = format!("ok {count}\n");
    for (i, chunk) in fds.chunks(SCM_MAX_FD).enumerate() {
        let data = if i == 0 { first.as_bytes() } else { MORE };
        send_with_fds(stream, data, chunk)?;
    }
    Ok(())
}

/// Sends `data` with `fds` (at most [`SCM_MAX_FD`], at least one) attached in one `sendmsg`.
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > SCM_MAX_FD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} descriptors in one message", fds.len()),
        ));
    }
    let space = cmsg_space(fds.len());
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call, and the
    // control buffer is sized by CMSG_SPACE for exactly these descriptors.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of_val(fds) as u32) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        while libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Receives one message (a message with descriptors ends a read) and its descriptors.
fn recv_with_fds(stream: &UnixStream) -> io::Result<(String, Vec<OwnedFd>)> {
    let space = cmsg_space(SCM_MAX_FD);
    let mut control = vec![0u8; space];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    let mut fds = Vec::new();
    // SAFETY: as in `send_with_fds`; the kernel writes at most `space` control bytes, and every
    // SCM_RIGHTS descriptor it hands us is new and ours to own (MSG_CMSG_CLOEXEC).
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // A signal arriving while the old process prepares its answer (the restart's own, a
        // child's exit) must not turn a handover into a failed bind.
        let n = loop {
            let n = libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n >= 0 {
                break n;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(io::Error::other("handover descriptors truncated"));
        }
        n as usize
    };
    Ok((String::from_utf8_lossy(&data[..n]).into_owned(), fds))
}

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic.
    unsafe { libc::CMSG_SPACE((fds * size_of::<RawFd>()) as u32) as usize }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_move_from_one_process_side_to_the_other() {
        let dir = std::env::temp_dir().join(format!("splitter-handover-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("handover.sock");
        let group = crate::worker::listener::bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let listen = group[0].local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let thread = serve(path.clone(), listen, group, admin, move || {
            done_tx.send(()).unwrap();
        })
        .unwrap();

        // Another address: refused, and the old side keeps serving.
        assert!(take_over(&path, "127.0.0.1:1".parse().unwrap())
            .unwrap()
            .is_none());
        let inherited = take_over(&path, listen).unwrap().expect("sockets");
        assert_eq!(inherited.listeners.len(), 2);
        assert!(inherited
            .listeners
            .iter()
            .all(|l| l.local_addr().unwrap() == listen));
        let inherited_admin = inherited.admin.as_ref().expect("the admin listener");
        assert_eq!(inherited_admin.local_addr().unwrap(), admin_addr);
        // The very same socket: a connection made now is accepted on the inherited one.
        let _client = std::net::TcpStream::connect(admin_addr).unwrap();
        inherited_admin.set_nonblocking(false).unwrap();
        inherited_admin.accept().unwrap();
        inherited.old.expect("a process waits").ready().unwrap();
        done_rx.recv_timeout(STEP_TIMEOUT).expect("handed over");
        thread.join().unwrap();
        assert!(take_over(&dir.join("nothing.sock"), listen)
            .unwrap()
            .is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// The kernel's identity of a socket, the same in every descriptor of it.
    fn cookie(socket: &TcpListener) -> u64 {
        crate::steering::socket_cookie(socket).unwrap()
    }

    #[test]
    fn more_listeners_than_one_message_carries_all_arrive_in_order() {
        let dir =
            std::env::temp_dir().join(format!("splitter-handover-many-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // One message exactly full (with the admin listener), one descriptor over, and several
        // messages (`workers = 0` on a host of 512 CPUs).
        for workers in [SCM_MAX_FD - 1, SCM_MAX_FD, 2 * SCM_MAX_FD + 10] {
            let path = dir.join(format!("handover-{workers}.sock"));
            let group =
                crate::worker::listener::bind_group("127.0.0.1:0".parse().unwrap(), workers)
                    .unwrap();
            let listen = group[0].local_addr().unwrap();
            let cookies: Vec<u64> = group.iter().map(cookie).collect();
            let admin = TcpListener::bind("127.0.0.1:0").unwrap();
            let admin_cookie = cookie(&admin);
            let (done_tx, done_rx) = std::sync::mpsc::channel();
            let thread = serve(path.clone(), listen, group, admin, move || {
                done_tx.send(()).unwrap();
            })
            .unwrap();
            let inherited = take_over(&path, listen)
                .unwrap_or_else(|e| panic!("{workers} workers: {e}"))
                .expect("sockets");
            let got: Vec<u64> = inherited.listeners.iter().map(cookie).collect();
            assert_eq!(
                got, cookies,
                "{workers} workers: the same sockets, by worker"
            );
            assert_eq!(cookie(inherited.admin.as_ref().unwrap()), admin_cookie);
            inherited.old.expect("a process waits").ready().unwrap();
            done_rx.recv_timeout(STEP_TIMEOUT).expect("handed over");
            thread.join().unwrap();
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_inherited_socket_serves_only_the_very_address_configured() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(serves(addr("127.0.0.1:8080"), addr("127.0.0.1:8080")));
        assert!(serves(addr("0.0.0.0:8080"), addr("0.0.0.0:8080")));
        assert!(serves(addr("[::1]:8080"), addr("[::1]:8080")));
        // Another port, another interface, another family.
        assert!(!serves(addr("127.0.0.1:8081"), addr("127.0.0.1:8080")));
        assert!(!serves(addr("0.0.0.0:8080"), addr("127.0.0.1:8080")));
        assert!(!serves(addr("127.0.0.1:8080"), addr("0.0.0.0:8080")));
        assert!(!serves(addr("[::]:8080"), addr("0.0.0.0:8080")));
        // Port 0 asks for a fresh bind, whatever the socket's port.
        assert!(!serves(addr("127.0.0.1:0"), addr("127.0.0.1:0")));
        assert!(!serves(addr("127.0.0.1:0"), addr("127.0.0.1:8080")));
    }

    #[test]
    fn only_the_sockets_on_the_configured_addresses_are_kept() {
        let group = crate::worker::listener::bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let listen = group[0].local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let elsewhere: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let inherit = || Inherited {
            listeners: group.iter().map(|l| l.try_clone().unwrap()).collect(),
            admin: Some(admin.try_clone().unwrap()),
            old: None,
        };

        let mut same = inherit();
        assert_eq!(same.keep_matching(listen, admin_addr), Replaced::default());
        assert_eq!(same.listeners.len(), 2);
        assert!(same.admin.is_some());

        let mut admin_moved = inherit();
        let replaced = admin_moved.keep_matching(listen, elsewhere);
        assert_eq!(
            replaced,
            Replaced {
                listeners: false,
                admin: true
            }
        );
        assert_eq!(admin_moved.listeners.len(), 2);
        assert!(admin_moved.admin.is_none());

        let mut listen_moved = inherit();
        let replaced = listen_moved.keep_matching(elsewhere, admin_addr);
        assert_eq!(
            replaced,
            Replaced {
                listeners: true,
                admin: false
            }
        );
        assert!(listen_moved.listeners.is_empty());
        assert!(!listen_moved.is_empty(), "the admin listener stays");

        let mut both = inherit();
        both.keep_matching(elsewhere, elsewhere);
        assert!(both.is_empty());
    }

    #[test]
    fn a_message_of_too_many_descriptors_is_an_error_not_a_panic() {
        let (a, _b) = UnixStream::pair().unwrap();
        let fds = vec![a.as_raw_fd(); SCM_MAX_FD + 1];
        let e = send_with_fds(&a, b"x", &fds).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        let e = send_with_fds(&a, b"x", &[]).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        send_with_fds(&a, b"x", &fds[..SCM_MAX_FD]).expect("a full message");
    }
}

//! How new connections reach the workers (`[steering]`, SPEC 7), decided once at start.
//!
//! - `ebpf`: [`ebpf::attach`] loads the `sk_reuseport` program of `splitter-ebpf` onto the
//!   listeners' `SO_REUSEPORT` group. It sends each new connection to the least-loaded worker
//!   (open connections plus `IN_FLIGHT_WEIGHT` per request in flight; the SYN's CPU breaks ties), reading the
//!   load from the workers' metrics cells, which then live in a pinned, mmap-ed BPF map.
//! - `reuseport`: nothing is attached; the kernel hashes connections over the listeners, and the
//!   metrics cells live in ordinary memory.
//! - `auto`: `ebpf` where it loads, else `reuseport`, with a warning saying why (an error when
//!   the process these sockets were taken over from steered them with eBPF).
//!
//! Restarts keep the listening sockets, and with them the `SO_REUSEPORT` group and the program
//! attached to it: `ebpf` replaces that program with its own (taking the sockets from the
//! previous process's socket array, see [`ebpf`]), `reuseport` detaches it. A handover lets go
//! of the sockets through [`release`].
//!
//! Owns the choice and its log line; does not touch sockets beyond attaching to them.

mod ebpf;
#[cfg(test)]
pub(crate) use ebpf::socket_cookie;

use std::net::TcpListener;
use std::sync::Arc;

use crate::config::{SteeringConfig, SteeringMode};
use crate::metrics::MetricsRegion;

pub use ebpf::{release, Attached, Error};

/// The steering in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Steering {
    /// The load-aware `sk_reuseport` program.
    Ebpf,
    /// The kernel's `SO_REUSEPORT` hash.
    Reuseport,
}

impl Steering {
    /// The name the start-up line and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Steering::Ebpf => "ebpf",
            Steering::Reuseport => "reuseport",
        }
    }
}

/// What [`start`] set up.
pub struct Steered {
    /// The steering in use.
    pub mode: Steering,
    /// The workers' metrics cells: in the BPF map with eBPF, else on the heap.
    pub region: Arc<MetricsRegion>,
    /// With eBPF: the loaded program and maps; dropping it removes the pin.
    pub attached: Option<Attached>,
}

/// Sets up steering for `listeners` (one per worker, one `SO_REUSEPORT` group) as `config`
/// asks. Fails only for `mode = "ebpf"` when the program cannot be loaded, naming the cause.
pub fn start(config: &SteeringConfig, listeners: &[TcpListener]) -> Result<Steered, Error> {
    let workers = listeners.len();
    let heap = || Steered {
        mode: Steering::Reuseport,
        region: MetricsRegion::heap(workers),
        attached: None,
    };
    let with_ebpf = |(attached, region)| Steered {
        mode: Steering::Ebpf,
        region,
        attached: Some(attached),
    };
    match config.mode {
        SteeringMode::Reuseport => {
            if detach_previous(listeners) {
                tracing::info!(
                    "detached the eBPF steering program the previous process attached to the \
                     listening sockets taken over"
                );
            }
            tracing::info!("steering: SO_REUSEPORT hash (`steering.mode = \"reuseport\"`)");
            Ok(heap())
        }
        SteeringMode::Ebpf => ebpf::attach(&config.pin_dir, listeners).map(with_ebpf),
        SteeringMode::Auto => match ebpf::attach(&config.pin_dir, listeners) {
            Ok(attached) => Ok(with_ebpf(attached)),
            Err(e) => {
                // A program left on the group would keep steering from the previous process's
                // stale counters: the hash must really apply.
                let detached = detach_previous(listeners);
                if detached || matches!(e, Error::Busy { .. }) {
                    tracing::error!(
                        error = %e,
                        "eBPF steering lost: the process these listening sockets were taken \
                         over from steered them with eBPF, this one cannot; falling back to \
                         the SO_REUSEPORT hash (`steering.mode = \"auto\"`)"
                    );
                } else {
                    tracing::warn!(
                        error = %e,
                        "eBPF steering unavailable: falling back to the SO_REUSEPORT hash \
                         (`steering.mode = \"auto\"`)"
                    );
                }
                Ok(heap())
            }
        },
    }
}

/// Detaches a steering program from the group of `listeners` (one the process they were taken
/// over from attached): true if there was one. Only when no other socket listens on that port:
/// another instance started on the same `listen` joins the group too, and its steering is not
/// this process's to remove.
fn detach_previous(listeners: &[TcpListener]) -> bool {
    let Some(first) = listeners.first() else {
        return false;
    };
    let port = first.local_addr().map(|a| a.port()).unwrap_or(0);
    let ours: Vec<u64> = listeners.iter().filter_map(inode).collect();
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"].map(std::fs::read_to_string);
    let Ok(tcp) = &tables[0] else {
        return false;
    };
    let tcp6 = tables[1].as_deref().unwrap_or_default();
    only_ours_listen(&[tcp, tcp6], port, &ours) && ebpf::detach(first)
}

/// Whether every socket `tables` (`/proc/net/tcp`, `/proc/net/tcp6`) list as listening on
/// `port` is one of `ours` (by inode).
fn only_ours_listen(tables: &[&str], port: u16, ours: &[u64]) -> bool {
    const LISTEN: &str = "0A";
    tables.iter().flat_map(|t| t.lines().skip(1)).all(|line| {
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let listening_here = fields.len() > 9
            && fields[3] == LISTEN
            && fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok())
                == Some(port);
        !listening_here || fields[9].parse().is_ok_and(|i: u64| ours.contains(&i))
    })
}

/// The inode of `socket`, as `/proc/net/tcp` names it.
fn inode(socket: &TcpListener) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a valid descriptor and a zeroed out-parameter the kernel fills.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        (libc::fstat(socket.as_raw_fd(), &mut st) == 0).then_some(st.st_ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_with_another_process_s_listener_is_not_ours() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:5DC0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 0100007F:5DC0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:5DC0 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3001 1 0000000000000000 100 0 0 10 0";
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
        // Port 0x5DC0 = 24000: both listeners ours; connections and other ports do not count.
        assert!(only_ours_listen(&[tcp, tcp6], 24000, &[1001, 1002]));
        // One listener of another process on the port.
        assert!(!only_ours_listen(&[tcp, tcp6], 24000, &[1001]));
        let tcp6_other = format!(
            "{tcp6}\n   0: 00000000000000000000000000000000:5DC0 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4001 1 0000000000000000 100 0 0 10 0"
        );
        assert!(!only_ours_listen(&[tcp, &tcp6_other], 24000, &[1001, 1002]));
    }

    #[test]
    fn inodes_are_those_proc_lists() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let ours = [inode(&listener).unwrap()];
        assert!(only_ours_listen(&[&tcp], port, &ours));
        assert!(!only_ours_listen(&[&tcp], port, &[]));
    }
}

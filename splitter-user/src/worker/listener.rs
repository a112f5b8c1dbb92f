//! The workers' listening sockets: one per worker, bound to the same address with `SO_REUSEPORT`.
//!
//! The kernel spreads new connections across the group (a hash of the 4-tuple); the eBPF steering
//! program, where it loads, replaces that load-blind choice.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Accept queue length per listener. The kernel caps it at `net.core.somaxconn` (4096 by default
/// since Linux 5.4); bursts of new connections at 50k requests/s need more than the old 128.
const BACKLOG: i32 = 4096;

/// Binds `count` listeners to `addr` in one `SO_REUSEPORT` group. With port 0, the first listener
/// picks the port and the others join it, so tests can ask for any free port.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(BACKLOG)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_zero_binds_every_listener_to_one_port() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let port = group[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(group.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}

/// How long an accept loop pauses after an error (`EMFILE`, `ENFILE`, `ENOBUFS`...): doubling
/// from 5 ms to 1 s while the errors go on, so a persistent one costs a few wake-ups a second,
/// never a spinning core; back to nothing after a success.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    last: Option<std::time::Duration>,
}

impl AcceptBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(5);
    const MAX: std::time::Duration = std::time::Duration::from_secs(1);

    /// The pause after one more error.
    pub fn next(&mut self) -> std::time::Duration {
        let pause = self
            .last
            .map_or(Self::FIRST, |last| (last * 2).min(Self::MAX));
        self.last = Some(pause);
        pause
    }

    /// An accept succeeded.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod backoff_tests {
    use std::time::Duration;

    use super::AcceptBackoff;

    #[test]
    fn pauses_double_to_a_second_and_reset_after_a_success() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<Duration> = (0..10).map(|_| b.next()).collect();
        assert_eq!(pauses[0], Duration::from_millis(5));
        assert_eq!(pauses[1], Duration::from_millis(10));
        assert_eq!(pauses[9], Duration::from_secs(1));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(5));
    }
}

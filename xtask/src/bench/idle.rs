//! The memory check: the splitter's RSS while it holds many idle keep-alive client connections,
//! as behind a balancer that keeps a large pool open.

use crate::bench::deploy::{self, Deployment, Env};
use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::proc;
use crate::bench::record::IdleMemory;
use anyhow::{ensure, Context};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::str::FromStr;
use std::time::Duration;

/// Connections that exchange their request at the same time: enough to be quick, few enough
/// that the splitter's backend pools stay small and the RSS is about client connections.
const BATCH: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the splitter to finish with the last batch before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);
const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
                         Content-Length: 2\r\n\r\n{}";
/// Client connections per source address: one address has the ephemeral port range's
/// 28,232 ports (32768-60999) to connect from, to the one listener; this leaves a margin.
const PER_SOURCE_ADDRESS: usize = 20_000;
/// The splitter's `idle_timeout_ms` for the check: long enough that no connection closes
/// while the last ones are opened and the memory is read, however many there are.
const IDLE_TIMEOUT: &str = "idle_timeout_ms = 600000\n";

/// Counts of idle connections to measure, from the command line: `10000,50000`; `0` skips.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts(pub Vec<usize>);

impl FromStr for Counts {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut counts = Vec::new();
        for n in s.split(',') {
            let n: usize = n.trim().parse().map_err(|_| {
                format!("expected connection counts, such as 10000,50000 (0 skips), not {s:?}")
            })?;
            if n > 0 && !counts.contains(&n) {
                counts.push(n);
            }
        }
        Ok(Counts(counts))
    }
}

/// Starts the splitter (fast backends, all CPUs), opens `connections` client connections
/// making one request on each, leaves them idle and reads the splitter's memory.
pub fn measure(env: &Env, connections: usize) -> anyhow::Result<IdleMemory> {
    let mut dep = Deployment::start_with(
        env,
        Scenario::Fast,
        Pinning::Unpinned,
        Target::SplitterUring,
        IDLE_TIMEOUT,
    )?;
    let rss_before = dep.measured().rss_kib()?;
    let SocketAddr::V4(listen) = dep.listen else {
        anyhow::bail!("the splitter listens on {}, not IPv4", dep.listen);
    };
    let mut streams = Vec::with_capacity(connections);
    // Batch by batch, so no connection waits long for its request (`header_timeout_ms`).
    while streams.len() < connections {
        proc::check_interrupted()?;
        let first = streams.len();
        for i in first..connections.min(first + BATCH) {
            let stream = connect_from(source_address(i), listen).with_context(|| {
                format!(
                    "connection {} of {connections}, from {}, to the splitter at {listen}",
                    i + 1,
                    source_address(i)
                )
            })?;
            streams.push(stream);
        }
        exchange(&mut streams[first..])?;
    }
    proc::sleep(SETTLE)?;
    dep.ensure_running()?;
    let splitter = dep.measured();
    let rss_idle = splitter.rss_kib()?;
    let peak = splitter.peak_rss_kib()?;
    let admin = dep.admin.context("the splitter has an admin listener")?;
    let seen = deploy::metric(
        &deploy::scrape_metrics(admin)?,
        "splitter_client_connections",
    );
    drop(streams);
    Ok(IdleMemory {
        connections,
        source_addresses: connections.div_ceil(PER_SOURCE_ADDRESS),
        connections_seen: seen,
        rss_before_mib: mib(rss_before),
        rss_idle_mib: mib(rss_idle),
        peak_rss_mib: mib(peak),
        kib_per_connection: rss_idle.saturating_sub(rss_before) as f64 / connections as f64,
    })
}

/// The source address of connection `i`: 127.0.0.2 for the first [`PER_SOURCE_ADDRESS`], then
/// 127.0.0.3, and so on (all of 127.0.0.0/8 is the loopback's).
fn source_address(i: usize) -> Ipv4Addr {
    let n = (2 + i / PER_SOURCE_ADDRESS) as u32;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) + n)
}

/// A TCP connection from `source` (port chosen at connect time: `IP_BIND_ADDRESS_NO_PORT`, so
/// the port need only be unique per destination) to `addr`, connecting and reading within
/// [`IO_TIMEOUT`].
fn connect_from(source: Ipv4Addr, addr: SocketAddrV4) -> io::Result<TcpStream> {
    // SAFETY: plain syscalls; the descriptor is owned by the TcpStream from its creation on,
    // so every error path closes it.
    let stream = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        TcpStream::from_raw_fd(fd)
    };
    // Bounds connect() as well as writes (socket(7), SO_SNDTIMEO).
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let fd = stream.as_raw_fd();
    let one: libc::c_int = 1;
    let src = sockaddr_in(SocketAddrV4::new(source, 0));
    let dst = sockaddr_in(addr);
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: the pointers are to live values of the sizes given.
    unsafe {
        if libc::setsockopt(
            fd,
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) != 0
            || libc::bind(fd, (&src as *const libc::sockaddr_in).cast(), len) != 0
            || libc::connect(fd, (&dst as *const libc::sockaddr_in).cast(), len) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

/// Sends one request on every connection of `batch`, then reads every response whole, so each
/// connection is left idle between requests, as a keep-alive client leaves it.
fn exchange(batch: &mut [TcpStream]) -> anyhow::Result<()> {
    for s in batch.iter_mut() {
        s.write_all(REQUEST)?;
    }
    for s in batch.iter_mut() {
        let status = read_response(s)?;
        ensure!(
            status == 200 || status == 204,
            "the splitter answered {status}"
        );
    }
    Ok(())
}

/// Reads one `Content-Length` framed response (what the splitter sends); returns its status.
fn read_response(s: &mut TcpStream) -> anyhow::Result<u16> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).context("reading a response")?;
        ensure!(n > 0, "the splitter closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        ensure!(buf.len() < 64 * 1024, "response head over 64 KiB");
    };
    let head = std::str::from_utf8(&buf[..head_end]).context("response head is not UTF-8")?;
    let (status, length) = parse_head(head).context("malformed response head")?;
    let mut rest = vec![0u8; (head_end + length).saturating_sub(buf.len())];
    s.read_exact(&mut rest).context("reading a response body")?;
    Ok(status)
}

/// The status and `Content-Length` (0 when absent) of a response head.
fn parse_head(head: &str) -> Option<(u16, usize)> {
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let length = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map_or(Some(0), |(_, v)| v.trim().parse().ok())?;
    Some((status, length))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_command_line() {
        let counts = |s: &str| s.parse::<Counts>().map(|c| c.0);
        assert_eq!(counts("10000,50000"), Ok(vec![10_000, 50_000]));
        assert_eq!(counts("0"), Ok(vec![]));
        assert_eq!(counts(" 5000 , 5000,0"), Ok(vec![5_000]));
        assert!(counts("10k").is_err());
        assert!(counts("").is_err());
    }

    #[test]
    fn source_addresses_change_every_20000_connections() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(19_999), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(20_000), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(source_address(49_999), Ipv4Addr::new(127, 0, 0, 4));
        assert_eq!(source_address(254 * 20_000), Ipv4Addr::new(127, 0, 1, 0));
    }

    #[test]
    fn connections_come_from_the_source_address_asked_for() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!("bound to IPv4")
        };
        for source in [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)] {
            let stream = connect_from(source, addr).unwrap();
            let (_, peer) = listener.accept().unwrap();
            assert_eq!(peer.ip(), source);
            assert_eq!(stream.local_addr().unwrap().ip(), source);
            assert_eq!(stream.peer_addr().unwrap(), SocketAddr::V4(addr));
        }
    }

    #[test]
    fn response_heads() {
        let head = "HTTP/1.1 200 OK\r\ncontent-length: 12\r\nX-A: b\r\n\r\n";
        assert_eq!(parse_head(head), Some((200, 12)));
        assert_eq!(
            parse_head("HTTP/1.1 204 No Content\r\n\r\n"),
            Some((204, 0))
        );
        assert_eq!(
            parse_head("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"),
            None
        );
    }
}

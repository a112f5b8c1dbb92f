//! What `/proc` says about a process the tests started and about the machine's TCP sockets:
//! resident memory, CPU time, open descriptors, and sockets by state, read without touching the
//! process.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Resident set size of process `pid` (`VmRSS` in `/proc/PID/status`), in bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    let kib: u64 = status_field(pid, "VmRSS", |v| {
        v.trim_end_matches("kB").trim().parse().ok()
    });
    kib * 1024
}

/// Field `name` of `/proc/PID/status`, parsed by `parse` from its value (trimmed).
fn status_field<T>(pid: u32, name: &str, parse: impl Fn(&str) -> Option<T>) -> T {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| parse(l.strip_prefix(name)?.strip_prefix(':')?.trim()))
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
}

/// User plus system CPU time process `pid` has used so far, all threads (`utime` + `stime` of
/// `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The command name, field 2, is in parentheses and may hold spaces: count after it.
    let rest = &stat[stat.rfind(')').expect("(comm) in /proc/PID/stat") + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// How many descriptors process `pid`'s descriptor table holds before the kernel must grow it
/// (`FDSize` in `/proc/PID/status`).
pub fn fd_table_size(pid: u32) -> usize {
    status_field(pid, "FDSize", |v| v.parse().ok())
}

/// Process `pid`'s soft limit of open descriptors (`Max open files` in `/proc/PID/limits`).
pub fn descriptor_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/limits: {e}"));
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Max open files in /proc/{pid}/limits:\n{limits}"))
}

/// The inodes of the sockets process `pid` has open (its `socket:[INODE]` descriptors).
pub fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// The TCP connections process `pid` has open to port `port`: its sockets whose remote end is
/// that port, whatever their state (connecting, established, or closed by the other end).
pub fn connections_to_port(pid: u32, port: u16) -> Vec<TcpSocket> {
    let mine = socket_inodes(pid);
    tcp_sockets_to_port(port)
        .into_iter()
        .filter(|s| s.inode != 0 && mine.contains(&s.inode))
        .collect()
}

/// TCP states as `/proc/net/tcp` numbers them.
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 0x01;
    pub const FIN_WAIT1: u8 = 0x04;
    pub const FIN_WAIT2: u8 = 0x05;
    pub const TIME_WAIT: u8 = 0x06;
    pub const CLOSE: u8 = 0x07;
    pub const CLOSE_WAIT: u8 = 0x08;
    pub const LAST_ACK: u8 = 0x09;
    pub const LISTEN: u8 = 0x0A;
}

/// One line of `/proc/net/tcp` or `/proc/net/tcp6`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// One of [`tcp_state`].
    pub state: u8,
    /// The socket's inode (0 once no descriptor holds it, as in TIME-WAIT).
    pub inode: u64,
}

/// Every TCP socket of the machine's network namespace, IPv4 and IPv6.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        out.extend(text.lines().skip(1).filter_map(parse_tcp_line));
    }
    out
}

/// The sockets whose remote end is port `port`: a client's side of its connections to a server
/// listening there.
pub fn tcp_sockets_to_port(port: u16) -> Vec<TcpSocket> {
    tcp_sockets()
        .into_iter()
        .filter(|s| s.remote.port() == port)
        .collect()
}

fn parse_tcp_line(line: &str) -> Option<TcpSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    Some(TcpSocket {
        local: parse_addr(f[1])?,
        remote: parse_addr(f[2])?,
        state: u8::from_str_radix(f[3], 16).ok()?,
        inode: f[9].parse().ok()?,
    })
}

/// `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): the address is printed as
/// 32-bit words in the host's byte order, each word's bytes being the address's in memory.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.as_slice() {
        [w] => IpAddr::V4(Ipv4Addr::from(w.to_ne_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines() {
        // Little-endian host: 127.0.0.1 is 0100007F.
        let v4 = "   0: 0100007F:1F90 0100007F:C350 08 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1";
        let s = parse_tcp_line(v4).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(s.local, "127.0.0.1:8080".parse().unwrap());
            assert_eq!(s.remote, "127.0.0.1:50000".parse().unwrap());
        }
        assert_eq!((s.state, s.inode), (tcp_state::CLOSE_WAIT, 12345));
        let v6 = "   1: 00000000000000000000000001000000:1F90 0000000000000000FFFF00000100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 20 4 30 10 -1";
        let s = parse_tcp_line(v6).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(s.local, "[::1]:8080".parse().unwrap());
            assert_eq!(s.remote, "[::ffff:127.0.0.1]:50000".parse().unwrap());
        }
        assert_eq!(s.state, tcp_state::ESTABLISHED);
        assert!(parse_tcp_line("  sl  local_address rem_address   st").is_none());
    }

    fn free_port() -> u16 {
        crate::host::free_addr().port()
    }

    #[test]
    fn this_process_has_memory_cpu_and_descriptors() {
        let me = std::process::id();
        assert!(rss_bytes(me) > 0);
        let _ = cpu_time(me);
        assert!(open_fds(me) >= 3);
        assert!(fd_table_size(me) >= open_fds(me));
        assert!(descriptor_limit(me) >= open_fds(me) as u64);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let _c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let to = tcp_sockets_to_port(port);
        assert!(
            to.iter().any(|s| s.state == tcp_state::ESTABLISHED),
            "{to:?}"
        );
        let mine = connections_to_port(me, port);
        assert_eq!(mine.len(), 1, "{mine:?}");
        assert!(connections_to_port(me, free_port()).is_empty());
    }
}

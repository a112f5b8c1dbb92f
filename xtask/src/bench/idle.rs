//! The memory check: the splitter's RSS while it holds many idle keep-alive client connections,
//! as behind a balancer that keeps a large pool open.

use crate::bench::deploy::{self, Deployment, Env};
use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::proc;
use crate::bench::record::IdleMemory;
use anyhow::{ensure, Context};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connections that exchange their request at the same time: enough to be quick, few enough
/// that the splitter's backend pools stay small and the RSS is about client connections.
const BATCH: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the splitter to finish with the last batch before its memory is read.
const SETTLE: Duration = Duration::from_secs(1);
const REQUEST: &[u8] = b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n\
                         Content-Length: 2\r\n\r\n{}";

/// Starts the splitter (fast backends, all CPUs), opens `connections` client connections,
/// makes one request on each, leaves them idle and reads the splitter's memory.
pub fn measure(env: &Env, connections: usize) -> anyhow::Result<IdleMemory> {
    let mut dep = Deployment::start(
        env,
        Scenario::Fast,
        Pinning::Unpinned,
        Target::SplitterUring,
    )?;
    let rss_before = dep.measured().rss_kib()?;
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        proc::check_interrupted()?;
        streams.push(connect(dep.listen)?);
    }
    for batch in streams.chunks_mut(BATCH) {
        proc::check_interrupted()?;
        exchange(batch)?;
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
    Ok(IdleMemory {
        connections,
        connections_seen: seen,
        rss_before_mib: mib(rss_before),
        rss_idle_mib: mib(rss_idle),
        peak_rss_mib: mib(peak),
        kib_per_connection: rss_idle.saturating_sub(rss_before) as f64 / connections as f64,
    })
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .with_context(|| format!("connecting to the splitter at {addr}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
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

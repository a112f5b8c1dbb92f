//! The load a profile is taken under: `splitter run` in front of two `splitter mock-backend`s
//! (the bench's `fast` scenario, then its `openrtb` one), with keep-alive clients POSTing 2 KB
//! of JSON. The profile is then the worker's path as the bench measures it and production runs
//! it, and only that: `splitter demo` runs its backends and its load generator in the
//! splitter's process, whose code would share the profile (and, for BOLT, the hot pages).

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};

use crate::bench::deploy::{Deployment, Env};
use crate::bench::plan::{Pinning, Scenario, Target};

/// The scenarios and seconds of load of a profiling run.
const LOADS: [(Scenario, u64); 2] = [(Scenario::Fast, 6), (Scenario::OpenRtb, 3)];

/// Keep-alive client connections, one thread each.
const CONNECTIONS: usize = 16;

/// Runs the loads on `binary` (splitter and backends alike, each with `child_env`), its logs in
/// `work_dir`; returns the PIDs of the `splitter run` processes, whose counts are the profile
/// (the backends write theirs too, to be left out).
pub fn run(
    binary: &Path,
    child_env: Vec<(OsString, OsString)>,
    work_dir: &Path,
) -> anyhow::Result<Vec<u32>> {
    std::fs::create_dir_all(work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let env = Env {
        splitter_bin: binary.to_owned(),
        splitter_build: "profiling",
        work_dir: work_dir.to_owned(),
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        child_env,
    };
    let mut pids = Vec::new();
    for (scenario, seconds) in LOADS {
        let deployment =
            Deployment::start(&env, scenario, Pinning::Unpinned, Target::SplitterUring)?;
        pids.push(deployment.measured().pid());
        let answered = drive(deployment.listen, Duration::from_secs(seconds))
            .with_context(|| format!("the {} load (logs in {})", scenario, work_dir.display()))?;
        ensure!(
            answered > 0,
            "the {scenario} load got no answer (logs in {})",
            work_dir.display()
        );
        // Dropped: SIGTERM, and each process writes its counts as it exits.
        drop(deployment);
    }
    Ok(pids)
}

/// [`CONNECTIONS`] clients sending requests to `target` one after the other, for `length`;
/// returns how many were answered 200 or 204.
fn drive(target: SocketAddr, length: Duration) -> anyhow::Result<u64> {
    let until = Instant::now() + length;
    let request = request();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CONNECTIONS)
            .map(|_| scope.spawn(|| client(target, &request, until)))
            .collect();
        clients.into_iter().try_fold(0, |sum, c| {
            let answered = c.join().expect("a load client panicked")?;
            Ok(sum + answered)
        })
    })
}

/// One keep-alive connection's requests until `until`.
fn client(target: SocketAddr, request: &[u8], until: Instant) -> anyhow::Result<u64> {
    let stream = TcpStream::connect(target).with_context(|| format!("connecting to {target}"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    let mut answered = 0;
    let mut line = String::new();
    let mut body = Vec::new();
    while Instant::now() < until {
        writer.write_all(request)?;
        line.clear();
        reader.read_line(&mut line)?;
        let ok = line.starts_with("HTTP/1.1 200 ") || line.starts_with("HTTP/1.1 204 ");
        let mut length = 0;
        loop {
            line.clear();
            ensure!(reader.read_line(&mut line)? > 0, "the splitter closed");
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().context("a Content-Length")?;
                }
            }
        }
        body.resize(length, 0);
        reader.read_exact(&mut body)?;
        answered += u64::from(ok);
    }
    Ok(answered)
}

/// A POST of 2 KB of JSON, like the bench's (`bench/post-2k.lua`).
fn request() -> Vec<u8> {
    let body = format!(
        r#"{{"id":"profile","imp":[{{"id":"1","bidfloor":0.5}}],"pad":"{}"}}"#,
        "x".repeat(1950)
    );
    format!(
        "POST / HTTP/1.1\r\nHost: splitter\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

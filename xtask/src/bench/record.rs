//! The benchmark record: the machine, the settings, every run, and the medians quoted.

use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::skew::SteeringMode;
use anyhow::Context;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The figures of one run (or the medians of several).
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub requests: u64,
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// User+system CPU of the target's process over the measured window, per request served.
    pub cpu_us_per_request: f64,
    /// The target's peak resident set size (VmHWM) after the measured window.
    pub peak_rss_mib: f64,
    /// How busy each CPU of the machine was over the measured window (all processes), in
    /// percent: pinned, CPU 0 is the target's and CPU 1 the load's (wrk and the backends).
    pub cpu_busy_percent: Vec<f64>,
    pub socket_errors: u64,
    /// wrk's count of responses with a status of 400 or above.
    pub non_2xx: u64,
    /// Splitter only: 204s in the measured window, from its `/metrics`.
    pub responses_204: Option<u64>,
    /// Splitter only: 200s of the id check run, and those carrying another request's id.
    pub checked: Option<u64>,
    pub mismatches: Option<u64>,
}

/// One combination measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Case {
    pub scenario: Scenario,
    pub pinning: Pinning,
    pub target: Target,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    #[serde(flatten)]
    pub case: Case,
    pub repetition: u32,
    #[serde(flatten)]
    pub sample: Sample,
}

#[derive(Clone, Debug, Serialize)]
pub struct Median {
    #[serde(flatten)]
    pub case: Case,
    pub runs: usize,
    #[serde(flatten)]
    pub sample: Sample,
}

/// Memory of the splitter holding many idle keep-alive client connections.
#[derive(Clone, Debug, Serialize)]
pub struct IdleMemory {
    pub connections: usize,
    /// The client side's source addresses, 127.0.0.2 on: one address has too few ports.
    pub source_addresses: usize,
    /// What the splitter's `splitter_client_connections` gauge said while they were open.
    pub connections_seen: Option<u64>,
    pub rss_before_mib: f64,
    pub rss_idle_mib: f64,
    pub peak_rss_mib: f64,
    pub kib_per_connection: f64,
}

/// A count of idle connections that could not be measured here, and why.
#[derive(Clone, Debug, Serialize)]
pub struct IdleNotMeasured {
    pub connections: usize,
    pub why: String,
}

/// What one request costs the kernel, per target: from a separate pass, not the measured runs.
#[derive(Clone, Debug, Serialize)]
pub struct Accounting {
    pub seconds: u32,
    /// The `perf stat` events counted in the target's threads.
    pub perf_events: Vec<String>,
    /// Why some `perf stat` columns are missing, if they are.
    pub perf_unavailable: Option<String>,
    /// Why the TCP columns are missing, if they are.
    pub tcp_unavailable: Option<String>,
    pub rows: Vec<AccountingRow>,
}

/// One target's accounting: all but `requests` and `requests_per_s` per request served.
#[derive(Clone, Debug, Serialize)]
pub struct AccountingRow {
    pub pinning: Pinning,
    pub target: Target,
    /// wrk's count over the window, the divisor of every other figure.
    pub requests: u64,
    pub requests_per_s: f64,
    /// The target's user and system CPU time (`/proc/PID/stat`), in µs.
    pub user_us: f64,
    pub system_us: f64,
    /// `raw_syscalls:sys_enter` in the target's threads.
    pub syscalls: Option<f64>,
    /// `io_uring:io_uring_submit_req`: SQEs the target submitted.
    pub io_uring_sqes: Option<f64>,
    /// `io_uring:io_uring_complete`: CQEs posted in the target's threads.
    pub io_uring_cqes: Option<f64>,
    /// Summed over the target's threads: voluntary (about one per wake-up) and involuntary.
    pub voluntary_switches: f64,
    pub involuntary_switches: f64,
    /// System-wide (`/proc/net/snmp`, `/proc/net/netstat`), so through the whole loopback path:
    /// wrk, target and backends. `TcpOutSegs`: TCP segments sent.
    pub tcp_segments: Option<f64>,
    /// `TcpExtTCPPureAcks`: pure ACKs (no data) received and taken on TCP's slow path.
    pub pure_acks: Option<f64>,
    /// `TcpExtDelayedACKs`: delayed ACKs sent.
    pub delayed_acks: Option<f64>,
    /// `TcpExtTCPHPAcks`: ACKs taken on the fast path (header prediction), pure or carrying
    /// data; the pure ACKs `pure_acks` does not count are among them.
    pub fast_path_acks: Option<f64>,
}

/// The splitter's RSS through one long run.
#[derive(Clone, Debug, Serialize)]
pub struct SoakMemory {
    pub seconds: u32,
    pub requests: u64,
    /// Seconds of load before `rss_settled_mib` was read.
    pub settled_after_seconds: usize,
    /// After a few seconds of load, once pools and buffers have filled.
    pub rss_settled_mib: f64,
    /// At the end of the run.
    pub rss_end_mib: f64,
    /// One sample a second.
    pub samples_mib: Vec<f64>,
}

/// One run of the skewed measurement: heavy and light long-lived connections at once.
#[derive(Clone, Debug, Serialize)]
pub struct SkewRun {
    pub mode: SteeringMode,
    pub repetition: u32,
    /// Each worker's share of the workers' CPU time over the run, by worker index.
    pub worker_cpu_shares: Vec<f64>,
    /// The busiest worker's CPU time over the mean: 1 is an even spread, the worker count is
    /// all the work on one worker.
    pub spread: f64,
    /// eBPF only: each worker's `requests` and `accepted` in the pinned map at the end.
    pub worker_requests: Option<Vec<u64>>,
    pub worker_accepted: Option<Vec<u64>>,
    pub heavy_p99_ms: f64,
    pub light_p99_ms: f64,
    pub requests_per_s: f64,
    /// Socket errors and statuses of 400 and above, both loads together.
    pub errors: u64,
}

/// The medians of one steering mode's skewed runs.
#[derive(Clone, Debug, Serialize)]
pub struct SkewMedian {
    pub mode: SteeringMode,
    pub runs: usize,
    pub spread: f64,
    /// The 4-tuple hash changes from run to run: the worst spread seen tells more than the median.
    pub worst_spread: f64,
    pub heavy_p99_ms: f64,
    pub light_p99_ms: f64,
    pub requests_per_s: f64,
    /// The worst run's.
    pub errors: u64,
}

/// The skewed measurement: both steering modes side by side.
#[derive(Clone, Debug, Serialize)]
pub struct Skew {
    pub seconds: u32,
    pub workers: usize,
    pub heavy_connections: u32,
    pub light_connections: u32,
    /// `splitter mock-backend --delay-ms`.
    pub backend_delay_ms: &'static str,
    /// Why only `reuseport` was measured, if it was.
    pub ebpf_unavailable: Option<String>,
    pub medians: Vec<SkewMedian>,
    pub runs: Vec<SkewRun>,
}

/// Where and how the runs were made.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub haproxy: String,
    pub wrk: String,
    pub splitter_commit: String,
    /// How the splitter was built: `release, PGO, BOLT` (`cargo xtask build`), `release, PGO`
    /// (the same where BOLT is missing) or `release` (`--no-pgo`).
    pub splitter_build: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub repeat: u32,
    pub seconds: u32,
    pub warmup_seconds: u32,
    pub wrk_threads: u32,
    pub wrk_connections: u32,
    pub check_connections: u32,
    pub check_seconds: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct Record {
    /// UTC, RFC 3339.
    pub date: String,
    pub machine: Machine,
    pub settings: Settings,
    pub medians: Vec<Median>,
    /// One measurement per count of idle connections, each with a splitter of its own.
    pub idle: Vec<IdleMemory>,
    /// The counts asked for that the open-file limit does not allow.
    pub idle_not_measured: Vec<IdleNotMeasured>,
    pub accounting: Option<Accounting>,
    pub soak: Option<SoakMemory>,
    pub skew: Option<Skew>,
    pub runs: Vec<Run>,
}

/// The median of every figure, per case, in the cases' order.
pub fn medians(runs: &[Run]) -> Vec<Median> {
    let mut cases: Vec<Case> = runs.iter().map(|r| r.case).collect();
    cases.sort();
    cases.dedup();
    cases
        .into_iter()
        .map(|case| {
            let samples: Vec<&Sample> = runs
                .iter()
                .filter(|r| r.case == case)
                .map(|r| &r.sample)
                .collect();
            Median {
                case,
                runs: samples.len(),
                sample: median_sample(&samples),
            }
        })
        .collect()
}

/// Figure by figure: medians of different runs may mix in one row, as is usual for medians.
fn median_sample(s: &[&Sample]) -> Sample {
    let f = |get: fn(&Sample) -> f64| median(s.iter().map(|x| get(x))).unwrap_or(f64::NAN);
    let n = |get: fn(&Sample) -> u64| median(s.iter().map(|x| get(x))).unwrap_or(0);
    let opt = |get: fn(&Sample) -> Option<u64>| median(s.iter().filter_map(|x| get(x)));
    Sample {
        requests: n(|x| x.requests),
        requests_per_s: f(|x| x.requests_per_s),
        p50_ms: f(|x| x.p50_ms),
        p99_ms: f(|x| x.p99_ms),
        p999_ms: f(|x| x.p999_ms),
        cpu_us_per_request: f(|x| x.cpu_us_per_request),
        peak_rss_mib: f(|x| x.peak_rss_mib),
        cpu_busy_percent: (0..s
            .iter()
            .map(|x| x.cpu_busy_percent.len())
            .max()
            .unwrap_or(0))
            .map(|cpu| {
                median(
                    s.iter()
                        .filter_map(|x| x.cpu_busy_percent.get(cpu).copied()),
                )
                .unwrap_or(f64::NAN)
            })
            .collect(),
        socket_errors: n(|x| x.socket_errors),
        non_2xx: n(|x| x.non_2xx),
        responses_204: opt(|x| x.responses_204),
        checked: opt(|x| x.checked),
        // Any mismatch is a bug, not noise: quote the worst run, not the median.
        mismatches: s.iter().filter_map(|x| x.mismatches).max(),
    }
}

/// The middle value (the upper one of an even count), so a median is always a measured value.
pub fn median<T: Copy + PartialOrd>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = values.collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v.get(v.len() / 2).copied()
}

impl Machine {
    /// Describes this machine and the versions of the programs measured.
    pub fn probe(root: &Path, env: &super::deploy::Env) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |k| k.trim().to_owned());
        Machine {
            nproc: env.nproc,
            cpu_model,
            kernel,
            // "HAProxy version 2.6.12-1+deb12u4 2023/..." and "wrk debian/4.1.0-3 [epoll] ..."
            haproxy: first_line_word(Command::new("haproxy").arg("-v"), 2),
            wrk: first_line_word(Command::new("wrk").arg("-v"), 1),
            splitter_commit: first_line_word(
                Command::new("git")
                    .current_dir(root)
                    .args(["describe", "--always", "--dirty"]),
                0,
            ),
            splitter_build: env.splitter_build.into(),
        }
    }
}

/// Word `n` of the first line a command prints (on stdout or, like `wrk -v`, stderr).
fn first_line_word(cmd: &mut Command, n: usize) -> String {
    let Ok(out) = cmd.output() else {
        return "unknown".into();
    };
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(n))
        .unwrap_or("unknown")
        .to_owned()
}

/// Writes `record` as `<dir>/<prefix><date>.json` and, with `latest`, as
/// `<dir>/<prefix>latest.json`; returns the first path.
pub fn write<T: Serialize>(
    record: &T,
    date: &str,
    dir: &Path,
    prefix: &str,
    latest: bool,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = serde_json::to_string_pretty(record)? + "\n";
    // Colons are legal in Linux file names but awkward in shells and on other systems.
    let path = dir.join(format!("{prefix}{}.json", date.replace(':', "")));
    let latest_path = dir.join(format!("{prefix}latest.json"));
    for p in std::iter::once(&path).chain(latest.then_some(&latest_path)) {
        std::fs::write(p, &json).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(cpu: f64, mismatches: Option<u64>) -> Sample {
        Sample {
            requests: 10,
            requests_per_s: 5.0,
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            cpu_us_per_request: cpu,
            peak_rss_mib: 4.0,
            cpu_busy_percent: vec![cpu, 100.0 - cpu],
            socket_errors: 0,
            non_2xx: 0,
            responses_204: Some(1),
            checked: Some(9),
            mismatches,
        }
    }

    #[test]
    fn medians_per_case_with_the_worst_mismatch_count() {
        let case = Case {
            scenario: Scenario::Fast,
            pinning: Pinning::Pinned,
            target: Target::SplitterUring,
        };
        let runs: Vec<Run> = [(30.0, Some(0)), (10.0, Some(2)), (20.0, Some(0))]
            .into_iter()
            .enumerate()
            .map(|(i, (cpu, m))| Run {
                case,
                repetition: i as u32,
                sample: sample(cpu, m),
            })
            .collect();
        let m = medians(&runs);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].runs, 3);
        // CPU by CPU, each the median of its own column.
        assert_eq!(m[0].sample.cpu_busy_percent, [20.0, 80.0]);
        assert_eq!(m[0].sample.cpu_us_per_request, 20.0);
        assert_eq!(m[0].sample.mismatches, Some(2));
    }

    #[test]
    fn median_of_an_even_count_is_the_upper_middle() {
        assert_eq!(median([4, 1, 3, 2].into_iter()), Some(3));
        assert_eq!(median(std::iter::empty::<u64>()), None);
    }
}

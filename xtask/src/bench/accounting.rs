//! The per-request kernel accounting: what one request of the `fast` scenario costs in system
//! calls, io_uring submissions and completions, context switches and TCP segments. A separate
//! short pass after the measured runs, so that tracing cannot skew their medians.

use crate::bench::deploy::{Deployment, Env};
use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::proc::{ContextSwitches, Proc};
use crate::bench::record::{Accounting, AccountingRow, Settings};
use crate::bench::wrk::{self, Load};
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Counted in the target's threads by `perf stat -p`.
pub const PERF_EVENTS: [&str; 3] = [
    "raw_syscalls:sys_enter",
    "io_uring:io_uring_submit_req",
    "io_uring:io_uring_complete",
];
/// Where tracefs may be mounted: `perf` finds tracepoints there.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
/// The targets accounted for: both splitter shells and the yardstick.
const TARGETS: [Target; 3] = [
    Target::SplitterUring,
    Target::SplitterEpoll,
    Target::Haproxy,
];
/// `perf stat`'s counts by event; `None` for one it did not count.
type Counts = HashMap<String, Option<f64>>;
/// The system-wide TCP counters read, by their `nstat` names.
const TCP_OUT_SEGS: &str = "TcpOutSegs";
const TCP_PURE_ACKS: &str = "TcpExtTCPPureAcks";
const TCP_DELAYED_ACKS: &str = "TcpExtDelayedACKs";
const TCP_HP_ACKS: &str = "TcpExtTCPHPAcks";

/// For each pinning, each target of [`TARGETS`] with the `fast` backends: warm up, then
/// `seconds` of the same wrk load with the counters read around it.
pub fn measure(
    env: &Env,
    settings: &Settings,
    script: &Path,
    pinnings: &[Pinning],
    seconds: u32,
) -> anyhow::Result<Accounting> {
    let perf = Perf::probe(&env.work_dir.join("perf-stat.csv"));
    let mut tcp_unavailable = None;
    let mut rows = Vec::new();
    for &pinning in pinnings {
        for target in TARGETS {
            eprint!("accounting: {pinning} {target}: ");
            let (row, tcp_err) =
                measure_one(env, settings, script, pinning, target, seconds, &perf)
                    .with_context(|| format!("kernel accounting of {pinning} {target}"))?;
            eprintln!(
                "{:.0} req/s, {} syscalls/req, {:.2} voluntary switches/req",
                row.requests_per_s,
                row.syscalls.map_or("-".into(), |v| format!("{v:.2}")),
                row.voluntary_switches
            );
            tcp_unavailable = tcp_unavailable.or(tcp_err);
            rows.push(row);
        }
    }
    Ok(Accounting {
        seconds,
        perf_events: perf.events.iter().map(|e| e.to_string()).collect(),
        perf_unavailable: perf.unavailable.clone(),
        tcp_unavailable,
        rows,
    })
}

/// One target: its row, and why the TCP counters could not be read, if they could not.
fn measure_one(
    env: &Env,
    settings: &Settings,
    script: &Path,
    pinning: Pinning,
    target: Target,
    seconds: u32,
    perf: &Perf,
) -> anyhow::Result<(AccountingRow, Option<String>)> {
    let mut dep = Deployment::start(env, Scenario::Fast, pinning, target)?;
    let cpus = pinning.load_cpus();
    let load = |seconds| Load {
        script: script.to_owned(),
        threads: settings.wrk_threads,
        connections: settings.wrk_connections,
        seconds,
    };
    wrk::run(&load(settings.warmup_seconds), &dep.url(), cpus)?;
    let before = Snapshot::read(dep.measured())?;
    let (summary, counts) = perf.run(&load(seconds), &dep.url(), cpus, dep.measured().pid())?;
    let after = Snapshot::read(dep.measured())?;
    dep.ensure_running()?;
    anyhow::ensure!(summary.requests > 0, "wrk completed no request");
    let n = summary.requests as f64;
    let per = |v: f64| v / n;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let switches = after.switches.since(before.switches);
    let event = |name: &str| counts.as_ref()?.get(name).copied().flatten().map(per);
    let (tcp, tcp_err) = match (&before.tcp, &after.tcp) {
        (Ok(b), Ok(a)) => (Some((b, a)), None),
        (Err(e), _) | (_, Err(e)) => (None, Some(e.clone())),
    };
    let tcp_delta = |key: &str| {
        let (b, a) = tcp?;
        Some(per(a.get(key)?.saturating_sub(*b.get(key)?) as f64))
    };
    let row = AccountingRow {
        pinning,
        target,
        requests: summary.requests,
        requests_per_s: summary.requests_per_s(),
        user_us: us(after.user.saturating_sub(before.user)),
        system_us: us(after.system.saturating_sub(before.system)),
        syscalls: event(PERF_EVENTS[0]),
        io_uring_sqes: event(PERF_EVENTS[1]),
        io_uring_cqes: event(PERF_EVENTS[2]),
        voluntary_switches: per(switches.voluntary as f64),
        involuntary_switches: per(switches.involuntary as f64),
        tcp_segments: tcp_delta(TCP_OUT_SEGS),
        pure_acks: tcp_delta(TCP_PURE_ACKS),
        delayed_acks: tcp_delta(TCP_DELAYED_ACKS),
        fast_path_acks: tcp_delta(TCP_HP_ACKS),
    };
    Ok((row, tcp_err))
}

/// The counters read just before and just after the window.
struct Snapshot {
    user: Duration,
    system: Duration,
    switches: ContextSwitches,
    /// Every counter of `/proc/net/snmp` and `/proc/net/netstat`, or why they could not be read.
    tcp: Result<HashMap<String, u64>, String>,
}

impl Snapshot {
    fn read(target: &Proc) -> anyhow::Result<Snapshot> {
        let tcp = read_net_counters();
        let (user, system) = target.user_system_time()?;
        let switches = target.context_switches()?;
        Ok(Snapshot {
            user,
            system,
            switches,
            tcp,
        })
    }
}

/// The system's TCP counters by their `nstat` names, from `/proc/net/snmp` and
/// `/proc/net/netstat`.
fn read_net_counters() -> Result<HashMap<String, u64>, String> {
    let mut all = HashMap::new();
    for path in ["/proc/net/snmp", "/proc/net/netstat"] {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
        all.extend(parse_net_counters(&text));
    }
    for key in [TCP_OUT_SEGS, TCP_PURE_ACKS, TCP_DELAYED_ACKS] {
        if !all.contains_key(key) {
            return Err(format!("no {key} in /proc/net/snmp or /proc/net/netstat"));
        }
    }
    Ok(all)
}

/// The counters of `/proc/net/snmp` or `/proc/net/netstat`: pairs of lines, `Group: Name ...`
/// then `Group: value ...`, named as `nstat` names them (`TcpOutSegs`, `TcpExtDelayedACKs`).
/// Negative values (`Tcp: MaxConn -1`) are left out.
fn parse_net_counters(text: &str) -> HashMap<String, u64> {
    let mut counters = HashMap::new();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((group, names)), Some((group2, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        if group != group2 {
            continue;
        }
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = value.parse::<u64>() {
                counters.insert(format!("{group}{name}"), v);
            }
        }
    }
    counters
}

/// `perf stat` as it can run here: the events it can count, or why none.
struct Perf {
    /// The events whose tracepoints exist.
    events: Vec<&'static str>,
    /// What is missing, when something is.
    unavailable: Option<String>,
    output: PathBuf,
}

impl Perf {
    fn probe(output: &Path) -> Perf {
        let mut missing = Vec::new();
        let runs = Command::new("perf")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        let events: Vec<&'static str> = match runs {
            false => {
                missing.push("`perf` does not run (Debian's `linux-perf`)".to_owned());
                Vec::new()
            }
            true => PERF_EVENTS
                .into_iter()
                .filter(|e| {
                    let found = tracepoint_exists(e);
                    if !found {
                        missing.push(format!("no tracepoint {e} in tracefs"));
                    }
                    found
                })
                .collect(),
        };
        Perf {
            events,
            unavailable: (!missing.is_empty()).then(|| missing.join("; ")),
            output: output.to_owned(),
        }
    }

    /// Runs `load` under `perf stat -p pid`, so the events are counted exactly while wrk runs;
    /// returns wrk's summary and the counts, `None` if perf could not count (wrk then runs
    /// again without it). A count perf reports `<not counted>` or `<not supported>` is `None`.
    fn run(
        &self,
        load: &Load,
        url: &str,
        cpus: crate::bench::proc::Cpus,
        pid: u32,
    ) -> anyhow::Result<(wrk::Summary, Option<Counts>)> {
        if self.events.is_empty() {
            return Ok((wrk::run(load, url, cpus)?.0, None));
        }
        let _ = std::fs::remove_file(&self.output);
        let mut prefix: Vec<String> = ["perf", "stat", "-x,", "-o"]
            .into_iter()
            .map(String::from)
            .collect();
        prefix.push(self.output.display().to_string());
        prefix.push("-e".into());
        prefix.push(self.events.join(","));
        prefix.extend(["-p".into(), pid.to_string(), "--".into()]);
        match wrk::run_under(&prefix, load, url, cpus) {
            Ok((summary, _)) => {
                let text = std::fs::read_to_string(&self.output)
                    .with_context(|| format!("reading {}", self.output.display()))?;
                let counts = parse_perf_stat(&text);
                Ok((summary, Some(counts)))
            }
            Err(e) => {
                crate::bench::proc::check_interrupted()?;
                eprint!("perf stat failed ({e:#}), again without it: ");
                Ok((wrk::run(load, url, cpus)?.0, None))
            }
        }
    }
}

/// Whether tracepoint `system:name` is in tracefs.
fn tracepoint_exists(event: &str) -> bool {
    let Some((system, name)) = event.split_once(':') else {
        return false;
    };
    TRACEFS.iter().any(|root| {
        Path::new(root)
            .join("events")
            .join(system)
            .join(name)
            .is_dir()
    })
}

/// The counts of `perf stat -x,` output: `value,unit,event,run time,share,...` lines, among
/// comments and blank lines. `<not counted>` or `<not supported>` gives `None`.
fn parse_perf_stat(text: &str) -> Counts {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(',');
            let value = fields.next()?.trim();
            let event = fields.nth(1)?.trim();
            (!event.is_empty()).then(|| (event.to_owned(), value.parse::<f64>().ok()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_counters_by_nstat_name() {
        let snmp = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 1234\n\
                    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens OutSegs RetransSegs\n\
                    Tcp: 1 200 120000 -1 42 987654 3\n\
                    Udp: InDatagrams NoPorts\nUdp: 5 6\n";
        let c = parse_net_counters(snmp);
        assert_eq!(c.get("TcpOutSegs"), Some(&987_654));
        assert_eq!(c.get("TcpActiveOpens"), Some(&42));
        assert_eq!(c.get("IpInReceives"), Some(&1234));
        assert_eq!(c.get("UdpNoPorts"), Some(&6));
        assert_eq!(c.get("TcpMaxConn"), None, "negative: left out");
        let netstat = "TcpExt: SyncookiesSent DelayedACKs TCPPureAcks TCPHPAcks\n\
                       TcpExt: 0 311 52000 9\n\
                       IpExt: InNoRoutes InOctets\nIpExt: 0 123456789\n";
        let c = parse_net_counters(netstat);
        assert_eq!(c.get("TcpExtDelayedACKs"), Some(&311));
        assert_eq!(c.get("TcpExtTCPPureAcks"), Some(&52_000));
        assert_eq!(c.get("IpExtInOctets"), Some(&123_456_789));
    }

    #[test]
    fn net_counters_skip_mismatched_pairs() {
        let c = parse_net_counters("Tcp: OutSegs\nUdp: 5\nIcmp: InMsgs\nIcmp: 7\n");
        assert_eq!(c.get("TcpOutSegs"), None);
        assert_eq!(c.get("UdpOutSegs"), None);
        // The pairing is by position: a mismatched pair is dropped, the next pair still reads.
        assert_eq!(c.get("IcmpInMsgs"), Some(&7));
    }

    #[test]
    fn perf_stat_csv() {
        let out = "# started on Tue Dec  1 14:20:00 2026\n\n\
                   1234567,,raw_syscalls:sys_enter,5001234567,100.00,,\n\
                   0,,io_uring:io_uring_submit_req,5001234567,100.00,,\n\
                   <not supported>,,io_uring:io_uring_complete,0,100.00,,\n";
        let c = parse_perf_stat(out);
        assert_eq!(c.len(), 3);
        assert_eq!(c["raw_syscalls:sys_enter"], Some(1_234_567.0));
        assert_eq!(c["io_uring:io_uring_submit_req"], Some(0.0));
        assert_eq!(c["io_uring:io_uring_complete"], None);
        assert!(parse_perf_stat("# nothing\n\n").is_empty());
    }

    #[test]
    fn tracepoint_names() {
        assert!(!tracepoint_exists("no-colon"));
        assert!(!tracepoint_exists("nosuchsystem:nosuchevent"));
    }
}

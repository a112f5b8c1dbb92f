//! The record as Markdown: the README's performance section and the summary printed at the end.

use crate::bench::plan::{Named, Pinning, Scenario, Target, OPENRTB_FIELD};
use crate::bench::record::{Accounting, Case, IdleMemory, IdleNotMeasured, Median, Record, Skew};
use anyhow::{bail, Context};
use std::fmt::Write;
use std::path::Path;

pub const BEGIN: &str = "<!-- bench:begin -->";
pub const END: &str = "<!-- bench:end -->";

/// Requests/s of one 8-vCPU machine for a cost of 1 CPU µs per request.
const CPU_US_PER_SECOND_ON_8_VCPUS: f64 = 8_000_000.0;

/// Where the charts are, relative to the README.
pub struct Charts {
    /// Of the medians, per scenario and pinning (the fan-out series apart).
    pub medians: String,
    /// Of the fan-out series.
    pub fanout: String,
}

/// The Markdown of the README's performance section.
pub fn markdown(record: &Record, charts: &Charts) -> String {
    let mut md = String::new();
    describe_setup(&mut md, record);
    medians_table(&mut md, &record.medians);
    headline_table(&mut md, &record.medians);
    openrtb_table(&mut md, &record.medians);
    fanout_table(&mut md, &fanout(&record.medians), &charts.fanout);
    if let Some(accounting) = &record.accounting {
        accounting_table(&mut md, accounting, record.settings.warmup_seconds);
    }
    idle_table(&mut md, &record.idle, &record.idle_not_measured);
    if let Some(soak) = &record.soak {
        let _ = writeln!(
            md,
            "Growth: through {} s of load ({} requests), the splitter's RSS went from {:.1} MiB \
             (after {} s) to {:.1} MiB at the end.\n",
            soak.seconds,
            thousands(soak.requests as f64),
            soak.rss_settled_mib,
            soak.settled_after_seconds,
            soak.rss_end_mib,
        );
    }
    if let Some(skew) = &record.skew {
        md += &skew_markdown(skew);
    }
    let _ = writeln!(
        md,
        "![CPU µs per request and p99 latency per target]({})",
        charts.medians
    );
    md
}

/// The splitter's memory with many idle client connections, per count measured, and the
/// counts that could not be.
fn idle_table(md: &mut String, idle: &[IdleMemory], not_measured: &[IdleNotMeasured]) {
    for n in not_measured {
        let _ = writeln!(
            md,
            "Memory with {} idle connections was not measured: {}.\n",
            thousands(n.connections as f64),
            n.why
        );
    }
    if idle.is_empty() {
        return;
    }
    md.push_str(
        "Memory: the splitter's RSS holding idle keep-alive client connections (each after one \
         request), a fresh splitter per count; the client sockets are bound to 127.0.0.2, \
         127.0.0.3, ... (20,000 per address, as one address has too few ephemeral ports).\n\n\
         | idle connections | seen by the splitter | RSS before MiB | RSS with them MiB \
         | KiB per connection | peak RSS MiB |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for m in idle {
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | **{:.1}** | {:.1} |",
            thousands(m.connections as f64),
            m.connections_seen
                .map_or("-".into(), |n| thousands(n as f64)),
            m.rss_before_mib,
            m.rss_idle_mib,
            m.kib_per_connection,
            m.peak_rss_mib,
        );
    }
    md.push('\n');
}

/// The fan-out series: the splitter's CPU per request by backend count.
#[derive(Clone, Debug, Default)]
pub struct FanOut {
    pub rows: Vec<FanOutRow>,
    /// HAProxy's CPU µs per request in `fast`, per pinning, where it was measured: the unit of
    /// the cost per extra backend ("no more than one HAProxy forward").
    pub units: Vec<(Pinning, f64)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FanOutRow {
    pub pinning: Pinning,
    pub target: Target,
    pub backends: usize,
    pub requests_per_s: f64,
    pub cpu_us: f64,
    /// (CPU µs at N - CPU µs at 2) / (N - 2); `None` at 2 or without a 2-backend run.
    pub per_extra_backend_us: Option<f64>,
    /// `per_extra_backend_us` in units of HAProxy's forward; `None` without the unit.
    pub per_extra_backend_forwards: Option<f64>,
}

impl FanOut {
    pub fn unit(&self, pinning: Pinning) -> Option<f64> {
        self.units
            .iter()
            .find(|(p, _)| *p == pinning)
            .map(|(_, u)| *u)
    }
}

/// The cost of each backend past the first two: `(cpu_n - cpu_2) / (n - 2)`; `None` for
/// `n <= 2`.
pub fn cost_per_extra_backend(cpu_n: f64, n: usize, cpu_2: f64) -> Option<f64> {
    (n > 2).then(|| (cpu_n - cpu_2) / (n - 2) as f64)
}

/// The fan-out series of `medians`, per pinning, shell and backend count. The 2-backend point
/// is `fanout-2`, or `fast` (the same deployment) when `fanout-2` was not run.
pub fn fanout(medians: &[Median]) -> FanOut {
    let find = |scenario, pinning, target| {
        medians.iter().find(|m| {
            m.case
                == Case {
                    scenario,
                    pinning,
                    target,
                }
        })
    };
    let mut out = FanOut::default();
    for &pinning in Pinning::ALL {
        let unit = find(Scenario::Fast, pinning, Target::Haproxy)
            .map(|m| m.sample.cpu_us_per_request)
            .filter(|u| u.is_finite() && *u > 0.0);
        if let Some(u) = unit {
            out.units.push((pinning, u));
        }
        for &target in &[Target::SplitterUring, Target::SplitterEpoll] {
            let two = find(Scenario::FanOut2, pinning, target)
                .or_else(|| find(Scenario::Fast, pinning, target))
                .map(|m| m.sample.cpu_us_per_request);
            for &scenario in Scenario::ALL.iter().filter(|s| s.is_fanout()) {
                let Some(m) = find(scenario, pinning, target) else {
                    continue;
                };
                let (n, cpu) = (scenario.backends(), m.sample.cpu_us_per_request);
                let per_extra = two.and_then(|two| cost_per_extra_backend(cpu, n, two));
                out.rows.push(FanOutRow {
                    pinning,
                    target,
                    backends: n,
                    requests_per_s: m.sample.requests_per_s,
                    cpu_us: cpu,
                    per_extra_backend_us: per_extra,
                    per_extra_backend_forwards: per_extra.zip(unit).map(|(e, u)| e / u),
                });
            }
        }
    }
    out
}

/// The fan-out table, with the unit it is measured in and a link to its chart at `chart`.
fn fanout_table(md: &mut String, fanout: &FanOut, chart: &str) {
    if fanout.rows.is_empty() {
        return;
    }
    let units: Vec<String> = fanout
        .units
        .iter()
        .map(|(p, u)| format!("{u:.1} µs {p}"))
        .collect();
    let _ = writeln!(
        md,
        "Fan-out: the splitter alone (no HAProxy or direct runs) in front of 2, 4, 8 and 16 \
         `fast` backends (`fanout-N`), the same load. **Per extra backend** is (CPU µs/req at N \
         - CPU µs/req at 2) / (N - 2); **in HAProxy forwards** is that over HAProxy's CPU µs \
         per request in `fast` of the same run and pinning ({}): SPEC's target is at most 1.00, \
         each extra backend costing no more than one HAProxy forward.\n",
        if units.is_empty() {
            "not measured".to_owned()
        } else {
            units.join(", ")
        }
    );
    md.push_str(
        "| pinning | shell | backends | req/s | CPU µs/req | per extra backend µs | in HAProxy \
         forwards |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in &fanout.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} | {} | {} |",
            r.pinning,
            r.target.splitter_io().unwrap_or("-"),
            r.backends,
            thousands(r.requests_per_s),
            r.cpu_us,
            r.per_extra_backend_us
                .map_or("-".into(), |v| format!("{v:.2}")),
            r.per_extra_backend_forwards
                .map_or("-".into(), |v| format!("**{v:.2}**")),
        );
    }
    md.push('\n');
    let mut pinnings: Vec<Pinning> = fanout.rows.iter().map(|r| r.pinning).collect();
    pinnings.dedup();
    for p in pinnings.into_iter().filter(|&p| fanout.unit(p).is_none()) {
        let _ = writeln!(
            md,
            "The unit is missing for {p}: HAProxy's forward was not measured (the `fast` \
             scenario was not run {p}), so the cost per extra backend is not given in HAProxy \
             forwards.\n"
        );
    }
    let _ = writeln!(md, "![CPU µs per request by backend count]({chart})\n");
}

/// The per-request kernel accounting table.
fn accounting_table(md: &mut String, a: &Accounting, warmup_seconds: u32) {
    let _ = writeln!(
        md,
        "Per request, in a separate pass after the measured runs (so tracing cannot skew their \
         medians): `fast`, the same `wrk` load for {} s per target after {warmup_seconds} s of \
         warm-up. **user µs** and **sys µs**: the target's CPU time (`/proc/PID/stat`), under \
         the tracing, so a little above the medians'; **syscalls**, **io_uring \
         SQEs** and **CQEs**: `raw_syscalls:sys_enter`, `io_uring:io_uring_submit_req` and \
         `io_uring:io_uring_complete` in the target's threads (`perf stat -p PID`, counting \
         exactly while `wrk` runs); **ctx switches**: voluntary (about one per wake-up) and \
         involuntary, summed over the target's threads (`/proc/PID/task/*/status`); **TCP \
         segments** sent (`TcpOutSegs`), **pure ACKs** received (`TcpExtTCPPureAcks`, which \
         counts only those taken on TCP's slow path; the record has the fast path's \
         `TcpExtTCPHPAcks`, pure or not, too) and **delayed ACKs** sent (`TcpExtDelayedACKs`) \
         are system-wide on loopback, so through the whole path: `wrk`, target and backends. The splitter makes three HTTP exchanges \
         per request (client, two backends), HAProxy two.\n",
        a.seconds
    );
    md.push_str(
        "| pinning | target | req/s | user µs | sys µs | syscalls | io_uring SQEs | CQEs | ctx \
         switches (vol/invol) | TCP segments | pure ACKs | delayed ACKs |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let count = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    for r in &a.rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} | {} | {} | {} | {:.2} / {:.2} | {} | {} | {} |",
            r.pinning,
            r.target,
            thousands(r.requests_per_s),
            r.user_us,
            r.system_us,
            count(r.syscalls),
            count(r.io_uring_sqes),
            count(r.io_uring_cqes),
            r.voluntary_switches,
            r.involuntary_switches,
            count(r.tcp_segments),
            count(r.pure_acks),
            count(r.delayed_acks),
        );
    }
    md.push('\n');
    if let Some(why) = &a.perf_unavailable {
        let _ = writeln!(md, "A \"-\" from `perf stat`: {why}.\n");
    }
    if let Some(why) = &a.tcp_unavailable {
        let _ = writeln!(md, "No TCP counters: {why}.\n");
    }
}

/// The skewed measurement: how evenly each steering mode spread the work over the workers.
pub fn skew_markdown(skew: &Skew) -> String {
    let mut md = format!(
        "Skewed load: `wrk -t1 -c{}` sending back to back and `wrk -t1 -c{}` pausing 20 ms \
         between requests (`bench/post-2k-light.lua`), together for {} s, on long-lived \
         connections, against the splitter with {} workers; backends take {} ms per request. \
         Each steering mode in turn, the same load, per run. **Spread** is the busiest worker \
         thread's CPU time over the workers' mean (1.00 is even, {}.00 all on one worker); the \
         `SO_REUSEPORT` hash differs per run, so the worst run is shown too.\n\n\
         | steering | runs | spread | worst spread | heavy p99 ms | light p99 ms | req/s | errors |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
        skew.heavy_connections,
        skew.light_connections,
        skew.seconds,
        skew.workers,
        skew.backend_delay_ms,
        skew.workers,
    );
    for m in &skew.medians {
        let _ = writeln!(
            md,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            m.mode.name(),
            m.runs,
            m.spread,
            m.worst_spread,
            m.heavy_p99_ms,
            m.light_p99_ms,
            thousands(m.requests_per_s),
            m.errors,
        );
    }
    md.push('\n');
    let ebpf_counts: Vec<String> = skew
        .runs
        .iter()
        .filter_map(|r| {
            let requests = r.worker_requests.as_ref()?;
            let accepted = r.worker_accepted.as_ref()?;
            Some(format!(
                "run {}: {} requests, {} connections",
                r.repetition,
                slashed(requests),
                slashed(accepted)
            ))
        })
        .collect();
    if !ebpf_counts.is_empty() {
        let _ = writeln!(
            md,
            "Per worker with eBPF, from `bpftool map dump` of the pinned map at the end of \
             each run: {}.\n",
            ebpf_counts.join("; ")
        );
    }
    if let Some(why) = &skew.ebpf_unavailable {
        let last = why.lines().last().unwrap_or_default();
        let _ = writeln!(
            md,
            "eBPF steering could not run, so only `reuseport` was measured: {last}\n"
        );
    }
    md
}

/// `[1200, 34]` as `1,200 / 34`.
fn slashed(values: &[u64]) -> String {
    let v: Vec<String> = values.iter().map(|&v| thousands(v as f64)).collect();
    v.join(" / ")
}

fn describe_setup(md: &mut String, r: &Record) {
    let (m, s) = (&r.machine, &r.settings);
    let _ = writeln!(
        md,
        "Measured {} on {}, {} vCPUs, Linux {}; HAProxy {}, wrk {}, splitter `{}` ({}), by \
         `cargo xtask bench` ([record](bench/results/latest.json)).\n\n\
         {} of {} s (after {} s of warm-up, then a pause for the route's deadline to answer \
         its requests): `wrk -t{} -c{}` POSTing 2 KB of JSON. \
         **CPU µs/req** is the user+system CPU time of the target's process, all threads, \
         per request served; **CPUs busy %**, how busy each CPU of the machine was meanwhile \
         (CPU 0 / CPU 1, every process). `splitter` fans out to two mock backends, `haproxy` \
         forwards to one (keep-alive, `http-reuse always`), `direct` is one backend alone \
         (its own cost: what one backend takes per reply). `pinned`: the target on CPU 0 \
         with one thread, wrk and backends on CPU 1, which the splitter's load (two replies \
         per request) keeps the busier of the two; \
         `unpinned`: everything anywhere, the target with one thread per CPU. `deadline`: \
         backends take 1-76 ms, 5% of replies 95 ms, the splitter's deadline is 80 ms. \
         Mismatches come from a separate {} s splitter run with `-t{} -c{}` checking every \
         response body's echoed `X-Req-Id` (`bench/post-2k-check.lua`).{}\n",
        r.date,
        m.cpu_model,
        m.nproc,
        m.kernel,
        m.haproxy,
        m.wrk,
        m.splitter_commit,
        m.splitter_build,
        match s.repeat {
            1 => "One run".to_owned(),
            n => format!("Medians of {n} runs"),
        },
        s.seconds,
        s.warmup_seconds,
        s.wrk_threads,
        s.wrk_connections,
        s.check_seconds,
        s.check_connections,
        s.check_connections,
        if has_openrtb(&r.medians) {
            format!(
                " `openrtb`: wrk POSTs a 2.1 KB OpenRTB 2.x BidRequest (`bench/post-ortb.lua`), \
                 the backends answer 2 KB BidResponses of 3 seats x 2 bids at random prices, half \
                 of them gzip-compressed (level 1), and the splitter selects with `field = \
                 \"{OPENRTB_FIELD}\"`; `openrtb-plain`: the same, none compressed. The id \
                 check reads a compressed reply's echoed `X-Req-Id` header instead of its body."
            )
        } else {
            String::new()
        },
    );
}

fn has_openrtb(medians: &[Median]) -> bool {
    medians
        .iter()
        .any(|m| matches!(m.case.scenario, Scenario::OpenRtb | Scenario::OpenRtbPlain))
}

/// What OpenRTB traffic costs the splitter over `fast`, per pinning and shell: the selection
/// through wildcards in a nested reply (with a larger request), then the gzip share.
fn openrtb_table(md: &mut String, medians: &[Median]) {
    if !has_openrtb(medians) {
        return;
    }
    md.push_str(
        "| pinning | shell | fast CPU µs/req | openrtb-plain | openrtb | OpenRTB selection \
         (openrtb-plain - fast) | half of replies gzip (openrtb - openrtb-plain) |\n\
         | --- | --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for &pinning in [Pinning::Unpinned, Pinning::Pinned].iter() {
        for &target in [Target::SplitterUring, Target::SplitterEpoll].iter() {
            let cpu = |scenario| {
                cpu_of(
                    medians,
                    Case {
                        scenario,
                        pinning,
                        target,
                    },
                )
            };
            let (fast, plain, gzip) = (
                cpu(Scenario::Fast),
                cpu(Scenario::OpenRtbPlain),
                cpu(Scenario::OpenRtb),
            );
            if plain.is_none() && gzip.is_none() {
                continue;
            }
            let us = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
            let delta = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:+.1} µs ({:+.0} %)", a - b, (a / b - 1.0) * 100.0),
                _ => "-".into(),
            };
            let _ = writeln!(
                md,
                "| {pinning} | {} | {} | {} | {} | {} | {} |",
                target.splitter_io().unwrap_or("-"),
                us(fast),
                us(plain),
                us(gzip),
                delta(plain, fast),
                delta(gzip, plain),
            );
        }
    }
    md.push('\n');
}

fn medians_table(md: &mut String, medians: &[Median]) {
    md.push_str(
        "| scenario | pinning | target | req/s | p50 ms | p99 ms | p99.9 ms | CPU µs/req \
         | CPUs busy % | peak RSS MiB | socket errors | non-2xx | 204s | mismatches |\n\
         | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: \
         | ---: |\n",
    );
    for m in medians {
        let (c, s) = (&m.case, &m.sample);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {:.1} | {} | {} | {} | {} |",
            c.scenario,
            c.pinning,
            c.target,
            thousands(s.requests_per_s),
            s.p50_ms,
            s.p99_ms,
            s.p999_ms,
            s.cpu_us_per_request,
            busy(&s.cpu_busy_percent),
            s.peak_rss_mib,
            s.socket_errors,
            s.non_2xx,
            or_dash(s.responses_204),
            or_dash(s.mismatches),
        );
    }
    md.push('\n');
}

/// The headline: splitter / HAProxy CPU per request, and the capacity it extrapolates to.
fn headline_table(md: &mut String, medians: &[Median]) {
    md.push_str(
        "| scenario | pinning | shell | splitter / HAProxy CPU µs per request | splitter \
         capacity on 8 vCPUs (8,000,000 / CPU µs per request) |\n| --- | --- | --- | ---: | ---: |\n",
    );
    // The fan-out series has its own table, in units of HAProxy's forward.
    for m in medians
        .iter()
        .filter(|m| m.case.target.splitter_io().is_some() && !m.case.scenario.is_fanout())
    {
        let splitter = m.sample.cpu_us_per_request;
        let haproxy = cpu_of(
            medians,
            Case {
                target: Target::Haproxy,
                ..m.case
            },
        );
        let ratio = haproxy.map_or("-".into(), |h| format!("**{:.2}x**", splitter / h));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {ratio} | {} req/s |",
            m.case.scenario,
            m.case.pinning,
            m.case.target.splitter_io().unwrap_or("-"),
            thousands(CPU_US_PER_SECOND_ON_8_VCPUS / splitter),
        );
    }
    md.push('\n');
}

fn cpu_of(medians: &[Median], case: Case) -> Option<f64> {
    medians
        .iter()
        .find(|m| m.case == case)
        .map(|m| m.sample.cpu_us_per_request)
}

/// Each CPU's busy share, `88 / 99`; `-` for a record made before it was measured.
fn busy(percent: &[f64]) -> String {
    if percent.is_empty() {
        return "-".into();
    }
    let each: Vec<String> = percent
        .iter()
        .map(|p| {
            if p.is_finite() {
                format!("{p:.0}")
            } else {
                "-".into()
            }
        })
        .collect();
    each.join(" / ")
}

fn or_dash(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

/// `12345.6` as `12,346`.
fn thousands(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Replaces what lies between the bench markers of the README with `body`.
pub fn update_readme(readme: &Path, body: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(readme).with_context(|| format!("reading {}", readme.display()))?;
    let updated = splice(&text, body).with_context(|| format!("{}", readme.display()))?;
    std::fs::write(readme, updated).with_context(|| format!("writing {}", readme.display()))
}

fn splice(text: &str, body: &str) -> anyhow::Result<String> {
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        bail!("no {BEGIN} ... {END} markers");
    };
    if end < begin {
        bail!("{END} comes before {BEGIN}");
    }
    let head = &text[..begin + BEGIN.len()];
    Ok(format!("{head}\n{}\n{}", body.trim_end(), &text[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(1234567.8), "1,234,568");
        assert_eq!(thousands(f64::INFINITY), "-");
    }

    #[test]
    fn openrtb_costs_per_shell() {
        let median = |scenario, target, cpu| median_of(scenario, Pinning::Unpinned, target, cpu);
        let mut md = String::new();
        openrtb_table(
            &mut md,
            &[median(Scenario::Fast, Target::SplitterUring, 16.0)],
        );
        assert_eq!(md, "", "no OpenRTB scenario, no table");
        let medians = [
            median(Scenario::Fast, Target::SplitterUring, 16.0),
            median(Scenario::OpenRtb, Target::SplitterUring, 22.0),
            median(Scenario::OpenRtbPlain, Target::SplitterUring, 20.0),
            median(Scenario::OpenRtb, Target::SplitterEpoll, 25.0),
        ];
        openrtb_table(&mut md, &medians);
        assert!(
            md.contains(
                "| unpinned | uring | 16.0 | 20.0 | 22.0 | +4.0 µs (+25 %) | +2.0 µs (+10 %) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| unpinned | epoll | - | - | 25.0 | - | - |"),
            "{md}"
        );
        assert!(!md.contains("| pinned |"), "{md}");
    }

    fn median_of(scenario: Scenario, pinning: Pinning, target: Target, cpu: f64) -> Median {
        Median {
            case: Case {
                scenario,
                pinning,
                target,
            },
            runs: 1,
            sample: crate::bench::record::Sample {
                requests: 1,
                requests_per_s: 1000.0 / cpu,
                p50_ms: 1.0,
                p99_ms: 1.0,
                p999_ms: 1.0,
                cpu_us_per_request: cpu,
                peak_rss_mib: 1.0,
                cpu_busy_percent: Vec::new(),
                socket_errors: 0,
                non_2xx: 0,
                responses_204: None,
                checked: None,
                mismatches: None,
            },
        }
    }

    #[test]
    fn cpus_busy_column_lines_up_with_the_header() {
        assert_eq!(busy(&[92.6, 98.2]), "93 / 98");
        assert_eq!(busy(&[f64::NAN, 50.0]), "- / 50");
        assert_eq!(busy(&[]), "-");
        let mut m = median_of(Scenario::Fast, Pinning::Pinned, Target::Haproxy, 40.0);
        m.sample.cpu_busy_percent = vec![95.0, 96.0];
        let mut md = String::new();
        medians_table(&mut md, &[m]);
        let lines: Vec<&str> = md.lines().collect();
        let cells = |l: &str| l.matches('|').count();
        assert_eq!(cells(lines[0]), cells(lines[1]));
        assert_eq!(cells(lines[0]), cells(lines[2]));
        assert!(lines[2].contains("| 40.0 | 95 / 96 |"), "{}", lines[2]);
    }

    #[test]
    fn cost_per_extra_backend_over_two() {
        assert_eq!(cost_per_extra_backend(20.0, 4, 16.0), Some(2.0));
        assert_eq!(cost_per_extra_backend(44.0, 16, 16.0), Some(2.0));
        assert_eq!(cost_per_extra_backend(15.0, 4, 16.0), Some(-0.5));
        assert_eq!(cost_per_extra_backend(16.0, 2, 16.0), None);
    }

    #[test]
    fn fanout_rows_in_units_of_the_haproxy_forward() {
        use crate::bench::plan::Pinning::{Pinned, Unpinned};
        use crate::bench::plan::Scenario::{FanOut16, FanOut2, FanOut4, Fast};
        use crate::bench::plan::Target::{Haproxy, SplitterEpoll, SplitterUring};
        let medians = [
            median_of(Fast, Pinned, SplitterUring, 16.0),
            median_of(Fast, Pinned, Haproxy, 10.0),
            median_of(FanOut2, Pinned, SplitterUring, 16.5),
            median_of(FanOut4, Pinned, SplitterUring, 22.5),
            median_of(FanOut16, Pinned, SplitterUring, 58.5),
            // No fanout-2 epoll: `fast` is its 2-backend point.
            median_of(Fast, Pinned, SplitterEpoll, 17.0),
            median_of(FanOut4, Pinned, SplitterEpoll, 25.0),
            // Unpinned: no `fast`, so neither a unit nor (for epoll) a 2-backend point.
            median_of(FanOut2, Unpinned, SplitterUring, 15.0),
            median_of(FanOut4, Unpinned, SplitterUring, 19.0),
            median_of(FanOut4, Unpinned, SplitterEpoll, 21.0),
        ];
        let f = fanout(&medians);
        assert_eq!(f.units, [(Pinned, 10.0)]);
        assert_eq!(f.unit(Unpinned), None);
        let rows: Vec<_> = f
            .rows
            .iter()
            .map(|r| {
                (
                    r.pinning,
                    r.target,
                    r.backends,
                    r.per_extra_backend_us,
                    r.per_extra_backend_forwards,
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (Unpinned, SplitterUring, 2, None, None),
                (Unpinned, SplitterUring, 4, Some(2.0), None),
                (Unpinned, SplitterEpoll, 4, None, None),
                (Pinned, SplitterUring, 2, None, None),
                (Pinned, SplitterUring, 4, Some(3.0), Some(0.3)),
                (Pinned, SplitterUring, 16, Some(3.0), Some(0.3)),
                (Pinned, SplitterEpoll, 4, Some(4.0), Some(0.4)),
            ]
        );
        let mut md = String::new();
        fanout_table(&mut md, &f, "fanout.svg");
        assert!(md.contains("(10.0 µs pinned)"), "{md}");
        assert!(
            md.contains("| pinned | uring | 16 | 17 | 58.5 | 3.00 | **0.30** |"),
            "{md}"
        );
        assert!(
            md.contains("| unpinned | epoll | 4 | 48 | 21.0 | - | - |"),
            "{md}"
        );
        assert!(md.contains("The unit is missing for unpinned"), "{md}");
        assert!(!md.contains("The unit is missing for pinned"), "{md}");
        assert!(md.ends_with("![CPU µs per request by backend count](fanout.svg)\n\n"));
        let mut md = String::new();
        fanout_table(&mut md, &fanout(&medians[..2]), "fanout.svg");
        assert_eq!(md, "", "no fan-out scenario, no table");
    }

    #[test]
    fn accounting_rows_with_missing_perf_counts() {
        let row = |target, syscalls, sqes| crate::bench::record::AccountingRow {
            pinning: Pinning::Pinned,
            target,
            requests: 100_000,
            requests_per_s: 50_000.0,
            user_us: 5.25,
            system_us: 10.5,
            syscalls,
            io_uring_sqes: sqes,
            io_uring_cqes: sqes,
            voluntary_switches: 0.25,
            involuntary_switches: 0.01,
            tcp_segments: Some(7.0),
            pure_acks: Some(1.5),
            delayed_acks: Some(0.1),
            fast_path_acks: Some(3.0),
        };
        let a = Accounting {
            seconds: 5,
            perf_events: vec!["raw_syscalls:sys_enter".into()],
            perf_unavailable: Some("no tracepoint io_uring:io_uring_submit_req in tracefs".into()),
            tcp_unavailable: None,
            rows: vec![
                row(Target::SplitterUring, Some(2.3), None),
                row(Target::Haproxy, Some(4.0), None),
            ],
        };
        let mut md = String::new();
        accounting_table(&mut md, &a, 1);
        assert!(
            md.contains(
                "| pinned | splitter-uring | 50,000 | 5.25 | 10.50 | 2.30 | - | - | 0.25 / 0.01 \
                 | 7.00 | 1.50 | 0.10 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("for 5 s per target after 1 s of warm-up"),
            "{md}"
        );
        assert!(
            md.contains("A \"-\" from `perf stat`: no tracepoint io_uring"),
            "{md}"
        );
        assert!(!md.contains("No TCP counters"), "{md}");
    }

    #[test]
    fn idle_memory_per_count() {
        let idle = |connections, kib| IdleMemory {
            connections,
            source_addresses: 1,
            connections_seen: Some(connections as u64),
            rss_before_mib: 5.0,
            rss_idle_mib: 5.0 + kib * connections as f64 / 1024.0,
            peak_rss_mib: 6.0 + kib * connections as f64 / 1024.0,
            kib_per_connection: kib,
        };
        let mut md = String::new();
        idle_table(&mut md, &[], &[]);
        assert_eq!(md, "");
        let not_measured = IdleNotMeasured {
            connections: 100_000,
            why: "needs an open-file limit of 101024".into(),
        };
        idle_table(
            &mut md,
            &[idle(10_000, 10.7), idle(50_000, 10.5)],
            &[not_measured],
        );
        assert!(
            md.starts_with(
                "Memory with 100,000 idle connections was not measured: needs an open-file \
                 limit of 101024.\n\n"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 10,000 | 10,000 | 5.0 | 109.5 | **10.7** | 110.5 |"),
            "{md}"
        );
        assert!(md.contains("| 50,000 | 50,000 | 5.0 |"), "{md}");
    }

    #[test]
    fn splice_replaces_only_between_the_markers() {
        let text = format!("# x\n{BEGIN}\nold\n{END}\nafter\n");
        let out = splice(&text, "new\n").unwrap();
        assert_eq!(out, format!("# x\n{BEGIN}\nnew\n{END}\nafter\n"));
        assert_eq!(splice(&out, "new\n").unwrap(), out);
        assert!(splice("# x\n", "new").is_err());
    }
}

//! From the per-second counts and samples to the record's rows, the summary and the verdicts.
//! Pure: tested with literal numbers.

use std::time::Duration;

use serde::Serialize;

use crate::bench::proc::MachineCpu;
use crate::soak::chaos::{Event, Mode};
use crate::soak::load::{Errors, Second};

/// RSS may end this much above the steady state, or `RSS_SLACK_MIB` if that is more.
const RSS_SLACK_SHARE: f64 = 0.10;
const RSS_SLACK_MIB: f64 = 4.0;
/// Descriptors may end this much above the steady state, or `FD_SLACK` if that is more.
const FD_SLACK_SHARE: f64 = 0.10;
const FD_SLACK: f64 = 16.0;
/// The first seconds of the load, in which the splitter opens its first connections to the
/// backends: their late answers are counted apart, not judged (the soak is about minutes of
/// chaos; a cold start is the benchmark's business).
pub const COLD_START_S: u32 = 1;
/// Seconds of incidents printed at the end (all are in the record).
pub const INCIDENTS_PRINTED: usize = 20;

/// What was read from the splitter's process, its `/metrics` and the machine at one instant:
/// the load's start, then the end of each second.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub rss_kib: Option<u64>,
    pub fds: Option<u64>,
    /// Per backend: workers that have it ejected.
    pub ejected: Vec<u64>,
    /// The splitter's CPU time so far.
    pub cpu: Option<Duration>,
    /// Time the splitter's threads have waited for a CPU so far.
    pub run_queue_wait: Option<Duration>,
    /// The same for this process: the load generator.
    pub client_run_queue_wait: Option<Duration>,
    /// The machine's `some` CPU pressure so far, in microseconds.
    pub cpu_pressure_us: Option<u64>,
    /// Requests the splitter itself timed at over 200 ms so far (its histogram's buckets are
    /// 100 and 200 ms around the deadline), from the end of the request to the response.
    pub splitter_over_200ms: Option<u64>,
    /// The machine's CPU time so far.
    pub machine: Option<MachineCpu>,
    /// When this sample was read, in seconds since the load started (late when the soak
    /// itself could not run).
    pub at_s: f64,
    /// The processes that used the most CPU since the sample before, with their ms.
    pub top_cpu: Vec<(String, f64)>,
}

/// One second of the run, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// Seconds since the load started: this row is `[t_s, t_s + 1)`.
    pub t_s: u32,
    pub requests: u64,
    pub ok: u64,
    pub no_content: u64,
    pub errors: u64,
    pub error_kinds: Errors,
    pub mismatches: u64,
    pub late: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub rss_mib: Option<f64>,
    pub fds: Option<u64>,
    /// Per backend: workers that had it ejected at the end of the second.
    pub ejected: Vec<u64>,
    /// The splitter's CPU time in this second, in ms (1000 is one CPU's worth).
    pub splitter_cpu_ms: Option<f64>,
    /// How long the splitter's threads, together, were runnable but waited for a CPU.
    pub splitter_run_queue_ms: Option<f64>,
    /// The same for the load generator's threads.
    pub client_run_queue_ms: Option<f64>,
    /// Share of the second in which some task on the machine waited for a CPU (PSI `some`).
    pub cpu_pressure: Option<f64>,
    /// Requests the splitter itself timed at over 200 ms in this second.
    pub splitter_over_200ms: Option<u64>,
    /// CPU time the machine spent running anything in this second, all CPUs (2000 is two
    /// CPUs' worth), and the time the hypervisor took from it.
    pub machine_busy_ms: Option<f64>,
    pub steal_ms: Option<f64>,
    /// How late the sample closing this second was read: the soak itself did not run.
    pub sample_late_ms: f64,
    /// The processes that used the most CPU in this second: `name ms`.
    pub top_cpu: Vec<String>,
}

/// The rows of a run of `run_s` seconds: `seconds[t]`, with `samples[t + 1]` (read at the end
/// of second `t`) and what changed since `samples[t]`.
pub fn rows(seconds: &[Second], samples: &[Sample], run_s: u32) -> Vec<Row> {
    let delta =
        |a: Option<Duration>, b: Option<Duration>| Some(b?.checked_sub(a?)?.as_secs_f64() * 1000.0);
    (0..run_s)
        .map(|t| {
            let s = seconds.get(t as usize).cloned().unwrap_or_default();
            let before = samples.get(t as usize).cloned().unwrap_or_default();
            let sample = samples.get(t as usize + 1).cloned().unwrap_or_default();
            let mut lat = s.latencies_us.clone();
            lat.sort_unstable();
            Row {
                t_s: t,
                requests: s.requests,
                ok: s.ok,
                no_content: s.no_content,
                errors: s.errors.total(),
                error_kinds: s.errors,
                mismatches: s.mismatches,
                late: s.late,
                p50_ms: percentile_ms(&lat, 50.0),
                p99_ms: percentile_ms(&lat, 99.0),
                p999_ms: percentile_ms(&lat, 99.9),
                max_ms: lat.last().map(|&us| ms(us)),
                rss_mib: sample.rss_kib.map(|k| k as f64 / 1024.0),
                fds: sample.fds,
                splitter_cpu_ms: delta(before.cpu, sample.cpu),
                splitter_run_queue_ms: delta(before.run_queue_wait, sample.run_queue_wait),
                client_run_queue_ms: delta(
                    before.client_run_queue_wait,
                    sample.client_run_queue_wait,
                ),
                cpu_pressure: sample
                    .cpu_pressure_us
                    .zip(before.cpu_pressure_us)
                    .map(|(b, a)| b.saturating_sub(a) as f64 / 1e6),
                splitter_over_200ms: sample
                    .splitter_over_200ms
                    .zip(before.splitter_over_200ms)
                    .map(|(b, a)| b.saturating_sub(a)),
                machine_busy_ms: delta(
                    before.machine.map(|m| m.busy),
                    sample.machine.map(|m| m.busy),
                ),
                steal_ms: delta(
                    before.machine.map(|m| m.steal),
                    sample.machine.map(|m| m.steal),
                ),
                sample_late_ms: ((sample.at_s - f64::from(t + 1)) * 1000.0).max(0.0),
                top_cpu: sample
                    .top_cpu
                    .iter()
                    .map(|(name, ms)| format!("{name} {ms:.0}"))
                    .collect(),
                ejected: sample.ejected,
            }
        })
        .collect()
}

fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    // The epsilon keeps 99.9 % of 1000 (999.000...1 in floating point) at rank 999.
    let rank = ((p / 100.0) * sorted_us.len() as f64 - 1e-9).ceil() as usize;
    Some(ms(sorted_us[rank.clamp(1, sorted_us.len()) - 1]))
}

/// A resource's steady state, end and peak, and whether it stayed flat.
#[derive(Clone, Debug, Serialize)]
pub struct Flatness {
    /// Median over the reference window: the calm at the end of the first cycle.
    pub reference: f64,
    pub reference_window_s: (u32, u32),
    /// Median over the end window: the last seconds of the run, calm too.
    pub end: f64,
    pub end_window_s: (u32, u32),
    /// First sample, a second into the load.
    pub start: f64,
    pub max: f64,
    /// The most `end` may be: the reference plus the larger of a share and an absolute slack.
    pub limit: f64,
    pub flat: bool,
}

fn flatness(
    values: &[Option<f64>],
    reference_window: (u32, u32),
    end_window: (u32, u32),
    slack_share: f64,
    slack_abs: f64,
) -> Option<Flatness> {
    let window = |(from, to): (u32, u32)| {
        let v: Vec<f64> = values
            .get(from as usize..(to as usize).min(values.len()))
            .unwrap_or_default()
            .iter()
            .flatten()
            .copied()
            .collect();
        crate::bench::record::median(v.into_iter())
    };
    let reference = window(reference_window)?;
    let end = window(end_window)?;
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let limit = reference + (reference * slack_share).max(slack_abs);
    Some(Flatness {
        reference,
        reference_window_s: reference_window,
        end,
        end_window_s: end_window,
        start: *present.first()?,
        max: present.iter().copied().fold(f64::MIN, f64::max),
        limit,
        flat: end <= limit,
    })
}

/// One backend's outcomes as the splitter counts them (`splitter_backend_responses_total`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Outcomes {
    pub valid: u64,
    pub invalid: u64,
    pub timeout: u64,
    pub error: u64,
    /// Not asked: ejected.
    pub ejected: u64,
    /// Not asked: `max_connections` busy.
    pub overloaded: u64,
}

impl Outcomes {
    fn since(&self, before: &Outcomes) -> Outcomes {
        Outcomes {
            valid: self.valid.saturating_sub(before.valid),
            invalid: self.invalid.saturating_sub(before.invalid),
            timeout: self.timeout.saturating_sub(before.timeout),
            error: self.error.saturating_sub(before.error),
            ejected: self.ejected.saturating_sub(before.ejected),
            overloaded: self.overloaded.saturating_sub(before.overloaded),
        }
    }

    fn add(&mut self, o: &Outcomes) {
        self.valid += o.valid;
        self.invalid += o.invalid;
        self.timeout += o.timeout;
        self.error += o.error;
        self.ejected += o.ejected;
        self.overloaded += o.overloaded;
    }
}

/// One backend's time in one faulty mode, and what the splitter made of it.
#[derive(Clone, Debug, Serialize)]
pub struct FaultWindow {
    pub backend: String,
    pub mode: String,
    pub from_s: f64,
    pub to_s: f64,
    /// The backend's outcomes in the window.
    pub outcomes: Option<Outcomes>,
}

/// The fault windows of one mode, together.
#[derive(Clone, Debug, Serialize)]
pub struct ModeOutcomes {
    pub mode: String,
    pub windows: usize,
    pub seconds: f64,
    pub outcomes: Outcomes,
}

/// The windows between each change of a backend to a faulty mode and its next change.
fn fault_windows(events: &[Event], names: &[String]) -> Vec<FaultWindow> {
    let mut open: Vec<Option<&Event>> = vec![None; names.len()];
    let mut windows = Vec::new();
    for e in events {
        let Some(slot) = open.get_mut(e.backend) else {
            continue;
        };
        if let Some(start) = slot.take() {
            windows.push(FaultWindow {
                backend: names[e.backend].clone(),
                mode: start.mode.name(),
                from_s: start.at_s,
                to_s: e.at_s,
                outcomes: e.counts.zip(start.counts).map(|(end, s)| end.since(&s)),
            });
        }
        if e.mode != Mode::Healthy {
            *slot = Some(e);
        }
    }
    windows
}

/// The windows' outcomes summed per mode, in the order the modes first appear.
fn by_mode(windows: &[FaultWindow]) -> Vec<ModeOutcomes> {
    let mut modes: Vec<ModeOutcomes> = Vec::new();
    for w in windows {
        let i = match modes.iter().position(|m| m.mode == w.mode) {
            Some(i) => i,
            None => {
                modes.push(ModeOutcomes {
                    mode: w.mode.clone(),
                    windows: 0,
                    seconds: 0.0,
                    outcomes: Outcomes::default(),
                });
                modes.len() - 1
            }
        };
        let m = &mut modes[i];
        m.windows += 1;
        m.seconds += w.to_s - w.from_s;
        if let Some(o) = &w.outcomes {
            m.outcomes.add(o);
        }
    }
    modes
}

/// One acceptance item and how the run did.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub item: String,
    pub pass: bool,
    pub detail: String,
}

/// A second in which something went wrong, with the faults in force.
#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    pub t_s: u32,
    pub late: u64,
    pub mismatches: u64,
    pub errors: u64,
    pub max_ms: Option<f64>,
    /// What the machine was doing: see [`Row`].
    pub splitter_run_queue_ms: Option<f64>,
    pub client_run_queue_ms: Option<f64>,
    pub cpu_pressure: Option<f64>,
    pub splitter_over_200ms: Option<u64>,
    pub machine_busy_ms: Option<f64>,
    pub steal_ms: Option<f64>,
    pub sample_late_ms: f64,
    pub top_cpu: Vec<String>,
    /// Per backend: workers that had it ejected at the end of the second.
    pub ejected: Vec<u64>,
    /// `backend mode` of every backend not healthy at the start of that second.
    pub faults: Vec<String>,
    /// Chaos events within two seconds before it.
    pub recent_events: Vec<String>,
}

/// The whole run in figures.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seconds: u32,
    pub requests: u64,
    pub ok: u64,
    pub no_content: u64,
    /// Of the requests.
    pub no_content_share: f64,
    pub errors: u64,
    pub error_kinds: Errors,
    pub mismatches: u64,
    pub deadline_ms: u64,
    pub late_after_ms: u64,
    /// Answers later than `late_after_ms`, and requests given up, after the cold start.
    pub late: u64,
    /// The same in the first `COLD_START_S` seconds.
    pub late_cold_start: u64,
    /// The slowest answer after the cold start.
    pub max_ms_after_cold_start: Option<f64>,
    pub late_split: LateSplit,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub rss_mib: Option<Flatness>,
    pub fds: Option<Flatness>,
    pub verdicts: Vec<Verdict>,
    pub incidents: Vec<Incident>,
    /// What the splitter counted of each faulty backend while it was faulty.
    pub fault_windows: Vec<FaultWindow>,
    pub by_mode: Vec<ModeOutcomes>,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.pass)
    }
}

/// What the summary is judged against.
pub struct Judge<'a> {
    pub deadline_ms: u64,
    pub late_after_ms: u64,
    pub reference_window: (u32, u32),
    pub end_window: (u32, u32),
    pub events: &'a [Event],
    pub backend_names: &'a [String],
}

/// Sums up `rows` (latencies from `seconds`) and judges each acceptance item.
pub fn summarize(rows: &[Row], seconds: &[Second], judge: &Judge) -> Summary {
    let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    let mut error_kinds = Errors::default();
    rows.iter().for_each(|r| error_kinds.add(&r.error_kinds));
    let mut lat: Vec<u32> = seconds
        .iter()
        .take(rows.len())
        .flat_map(|s| s.latencies_us.iter().copied())
        .collect();
    lat.sort_unstable();
    let requests = sum(|r| r.requests);
    let rss: Vec<Option<f64>> = rows.iter().map(|r| r.rss_mib).collect();
    let fds: Vec<Option<f64>> = rows.iter().map(|r| r.fds.map(|f| f as f64)).collect();
    let (rw, ew) = (judge.reference_window, judge.end_window);
    let mut s = Summary {
        seconds: rows.len() as u32,
        requests,
        ok: sum(|r| r.ok),
        no_content: sum(|r| r.no_content),
        no_content_share: sum(|r| r.no_content) as f64 / requests.max(1) as f64,
        errors: error_kinds.total(),
        error_kinds,
        mismatches: sum(|r| r.mismatches),
        deadline_ms: judge.deadline_ms,
        late_after_ms: judge.late_after_ms,
        late: rows
            .iter()
            .skip(COLD_START_S as usize)
            .map(|r| r.late)
            .sum(),
        late_cold_start: rows
            .iter()
            .take(COLD_START_S as usize)
            .map(|r| r.late)
            .sum(),
        max_ms_after_cold_start: rows
            .iter()
            .skip(COLD_START_S as usize)
            .filter_map(|r| r.max_ms)
            .reduce(f64::max),
        late_split: late_split(rows, judge),
        p50_ms: percentile_ms(&lat, 50.0),
        p99_ms: percentile_ms(&lat, 99.0),
        p999_ms: percentile_ms(&lat, 99.9),
        max_ms: lat.last().map(|&us| ms(us)),
        rss_mib: flatness(&rss, rw, ew, RSS_SLACK_SHARE, RSS_SLACK_MIB),
        fds: flatness(&fds, rw, ew, FD_SLACK_SHARE, FD_SLACK),
        verdicts: Vec::new(),
        incidents: incidents(rows, judge),
        fault_windows: fault_windows(judge.events, judge.backend_names),
        by_mode: Vec::new(),
    };
    s.by_mode = by_mode(&s.fault_windows);
    s.verdicts = verdicts(&s);
    s
}

fn verdicts(s: &Summary) -> Vec<Verdict> {
    let flat = |what: &str, unit: &str, f: &Option<Flatness>| match f {
        Some(f) => Verdict {
            item: format!("{what} flat"),
            pass: f.flat,
            detail: format!(
                "end {:.1} {unit} (median of s {}..{}) against the steady state {:.1} {unit} \
                 (median of s {}..{}); at most {:.1} {unit} allowed; max {:.1} {unit}",
                f.end,
                f.end_window_s.0,
                f.end_window_s.1,
                f.reference,
                f.reference_window_s.0,
                f.reference_window_s.1,
                f.limit,
                f.max
            ),
        },
        None => Verdict {
            item: format!("{what} flat"),
            pass: false,
            detail: "not sampled".into(),
        },
    };
    vec![
        Verdict {
            item: "0 id mismatches".into(),
            pass: s.mismatches == 0 && s.ok > 0,
            detail: format!("{} mismatches in {} 200s", s.mismatches, s.ok),
        },
        Verdict {
            item: format!(
                "no request answered later than deadline + {} ms ({} ms)",
                s.late_after_ms - s.deadline_ms,
                s.late_after_ms
            ),
            pass: s.late == 0,
            detail: format!(
                "{} late or given up after the first {COLD_START_S} s, max {}; \
                 {} in the cold start (not judged)",
                s.late,
                s.max_ms_after_cold_start
                    .map_or("-".into(), |m| format!("{m:.1} ms")),
                s.late_cold_start
            ),
        },
        Verdict {
            item: "every request answered 200 or 204".into(),
            pass: s.errors == 0,
            detail: format!("{} errors: {:?}", s.errors, s.error_kinds),
        },
        flat("RSS", "MiB", &s.rss_mib),
        flat("open fds", "fds", &s.fds),
    ]
}

/// Every backend's mode at `t` seconds.
fn modes_at(judge: &Judge, t: f64) -> Vec<Mode> {
    let mut modes = vec![Mode::Healthy; judge.backend_names.len()];
    for e in judge.events.iter().filter(|e| e.at_s <= t) {
        if let Some(m) = modes.get_mut(e.backend) {
            *m = e.mode;
        }
    }
    modes
}

/// Whether second `t` was calm: every backend healthy throughout, no change within it.
fn calm(judge: &Judge, t: u32) -> bool {
    let (from, to) = (f64::from(t), f64::from(t + 1));
    modes_at(judge, from).iter().all(|m| *m == Mode::Healthy)
        && !judge.events.iter().any(|e| e.at_s > from && e.at_s < to)
}

/// Late answers (after the cold start) in calm seconds and in seconds with chaos: late
/// answers in calm seconds are not the chaos's doing.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct LateSplit {
    pub calm_seconds: u32,
    pub late_in_calm: u64,
    pub chaos_seconds: u32,
    pub late_in_chaos: u64,
}

fn late_split(rows: &[Row], judge: &Judge) -> LateSplit {
    let mut split = LateSplit::default();
    for r in rows.iter().skip(COLD_START_S as usize) {
        if calm(judge, r.t_s) {
            split.calm_seconds += 1;
            split.late_in_calm += r.late;
        } else {
            split.chaos_seconds += 1;
            split.late_in_chaos += r.late;
        }
    }
    split
}

/// The seconds with a late answer, a mismatch or an error, and the chaos around them.
fn incidents(rows: &[Row], judge: &Judge) -> Vec<Incident> {
    rows.iter()
        .filter(|r| r.late > 0 || r.mismatches > 0 || r.errors > 0)
        .map(|r| {
            let t = f64::from(r.t_s);
            let name = |b: usize| judge.backend_names.get(b).map_or("?", |s| s.as_str());
            let modes = modes_at(judge, t);
            Incident {
                t_s: r.t_s,
                late: r.late,
                mismatches: r.mismatches,
                errors: r.errors,
                max_ms: r.max_ms,
                splitter_run_queue_ms: r.splitter_run_queue_ms,
                client_run_queue_ms: r.client_run_queue_ms,
                cpu_pressure: r.cpu_pressure,
                splitter_over_200ms: r.splitter_over_200ms,
                machine_busy_ms: r.machine_busy_ms,
                steal_ms: r.steal_ms,
                sample_late_ms: r.sample_late_ms,
                top_cpu: r.top_cpu.clone(),
                ejected: r.ejected.clone(),
                faults: modes
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| **m != Mode::Healthy)
                    .map(|(b, m)| format!("{} {}", name(b), m.name()))
                    .collect(),
                recent_events: judge
                    .events
                    .iter()
                    .filter(|e| e.at_s > t - 2.0 && e.at_s < t + 1.0)
                    .map(|e| format!("{:.0} s: {} {}", e.at_s, name(e.backend), e.mode.name()))
                    .collect(),
            }
        })
        .collect()
}

/// The summary as printed at the end of a run.
pub fn text(s: &Summary) -> String {
    let opt = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
    let res = |f: &Option<Flatness>, unit: &str| match f {
        Some(f) => format!(
            "start {:.1}, steady {:.1}, end {:.1}, max {:.1} {unit}",
            f.start, f.reference, f.end, f.max
        ),
        None => "not sampled".into(),
    };
    let mut out = format!(
        "requests {} in {} s ({:.0}/s): 200 {}, 204 {} ({:.2} %), errors {} {:?}\n\
         id mismatches {}\n\
         latency ms: p50 {}, p99 {}, p99.9 {} (deadline {}), max {}\n\
         answered later than deadline + {} ms: {} (and {} in the first {} s, not judged): \
         {} in {} calm seconds, {} in {} seconds with a backend faulty\n\
         RSS MiB: {}\n\
         open fds: {}\n",
        s.requests,
        s.seconds,
        s.requests as f64 / f64::from(s.seconds.max(1)),
        s.ok,
        s.no_content,
        s.no_content_share * 100.0,
        s.errors,
        s.error_kinds,
        s.mismatches,
        opt(s.p50_ms),
        opt(s.p99_ms),
        opt(s.p999_ms),
        s.deadline_ms,
        opt(s.max_ms),
        s.late_after_ms - s.deadline_ms,
        s.late,
        s.late_cold_start,
        COLD_START_S,
        s.late_split.late_in_calm,
        s.late_split.calm_seconds,
        s.late_split.late_in_chaos,
        s.late_split.chaos_seconds,
        res(&s.rss_mib, "MiB"),
        res(&s.fds, "fds"),
    );
    if !s.incidents.is_empty() {
        out += &format!(
            "seconds with late answers, mismatches or errors: {}\n",
            s.incidents.len()
        );
        for i in s.incidents.iter().take(INCIDENTS_PRINTED) {
            out += &format!(
                "  s {}: late {}, mismatches {}, errors {}, max {} ms; faults [{}]; events [{}]; \
                 ejected {:?}; splitter's own count over 200 ms {}; CPU pressure {} %, \
                 run-queue wait ms: splitter {}, load {}; machine busy {} ms, steal {} ms, \
                 sample {:.0} ms late; top CPU ms [{}]\n",
                i.t_s,
                i.late,
                i.mismatches,
                i.errors,
                opt(i.max_ms),
                i.faults.join(", "),
                i.recent_events.join(", "),
                i.ejected,
                i.splitter_over_200ms.map_or("-".into(), |n| n.to_string()),
                opt(i.cpu_pressure.map(|p| p * 100.0)),
                opt(i.splitter_run_queue_ms),
                opt(i.client_run_queue_ms),
                opt(i.machine_busy_ms),
                opt(i.steal_ms),
                i.sample_late_ms,
                i.top_cpu.join(", "),
            );
        }
    }
    if !s.by_mode.is_empty() {
        out += "the faulty backend's outcomes while faulty, as the splitter counted them:\n";
        for m in &s.by_mode {
            let o = &m.outcomes;
            out += &format!(
                "  {:<22} {:>2} x, {:>4.0} s: valid {}, invalid {}, timeout {}, error {}, \
                 not asked (ejected) {}, overloaded {}\n",
                m.mode,
                m.windows,
                m.seconds,
                o.valid,
                o.invalid,
                o.timeout,
                o.error,
                o.ejected,
                o.overloaded
            );
        }
    }
    for v in &s.verdicts {
        let mark = if v.pass { "PASS" } else { "FAIL" };
        out += &format!("{mark}  {}: {}\n", v.item, v.detail);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(requests: u64, lat_ms: &[u32]) -> Second {
        Second {
            requests,
            ok: requests,
            latencies_us: lat_ms.iter().map(|m| m * 1000).collect(),
            ..Second::default()
        }
    }

    fn sample(rss_mib: u64, fds: u64) -> Sample {
        Sample {
            rss_kib: Some(rss_mib * 1024),
            fds: Some(fds),
            ejected: vec![0, 0],
            cpu: Some(Duration::from_millis(rss_mib * 10)),
            ..Sample::default()
        }
    }

    fn judge(events: &[Event]) -> Judge<'_> {
        Judge {
            deadline_ms: 100,
            late_after_ms: 120,
            reference_window: (1, 3),
            end_window: (4, 6),
            events,
            backend_names: &[],
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u32> = (1..=1000).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), Some(500.0));
        assert_eq!(percentile_ms(&v, 99.9), Some(999.0));
        assert_eq!(percentile_ms(&[7000], 99.9), Some(7.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn a_clean_flat_run_passes() {
        let seconds: Vec<Second> = (0..6).map(|_| second(10, &[10, 20, 101])).collect();
        let samples: Vec<Sample> = [10, 10, 12, 12, 12, 13, 12]
            .iter()
            .map(|&m| sample(m, 50))
            .collect();
        let rows = rows(&seconds, &samples, 6);
        let s = summarize(&rows, &seconds, &judge(&[]));
        assert_eq!((s.requests, s.ok, s.late), (60, 60, 0));
        assert_eq!(s.max_ms, Some(101.0));
        let rss = s.rss_mib.as_ref().unwrap();
        assert_eq!(
            (rss.reference, rss.end, rss.start, rss.max),
            (12.0, 13.0, 10.0, 13.0)
        );
        assert_eq!(rss.limit, 16.0, "4 MiB is more than 10 % of 12");
        let cpu: Vec<Option<f64>> = rows.iter().map(|r| r.splitter_cpu_ms).collect();
        assert_eq!(cpu[0], Some(0.0));
        assert_eq!(cpu[1], Some(20.0));
        assert_eq!(cpu[5], None, "the CPU time cannot go back");
        assert!(s.passed(), "{}", text(&s));
        assert!(text(&s).contains("PASS  0 id mismatches"));
    }

    #[test]
    fn growth_late_answers_and_errors_fail_and_are_placed() {
        let mut seconds: Vec<Second> = (0..6).map(|_| second(10, &[10])).collect();
        seconds[0].late = 3;
        seconds[4].late = 1;
        seconds[4].latencies_us.push(130_000);
        seconds[5].errors.io = 2;
        let samples: Vec<Sample> = [100, 100, 100, 100, 100, 111, 111]
            .iter()
            .map(|&m| sample(m, 50 + m))
            .collect();
        let rows = rows(&seconds, &samples, 6);
        let counts = |timeout, error| Outcomes {
            timeout,
            error,
            ..Outcomes::default()
        };
        let events = [
            Event {
                at_s: 3.0,
                backend: 1,
                mode: Mode::Blackhole,
                counts: Some(counts(1, 0)),
            },
            Event {
                at_s: 4.0,
                backend: 0,
                mode: Mode::Down,
                counts: None,
            },
            Event {
                at_s: 5.0,
                backend: 1,
                mode: Mode::Healthy,
                counts: Some(counts(6, 2)),
            },
        ];
        let names = ["a".to_string(), "b".to_string()];
        let j = Judge {
            backend_names: &names,
            ..judge(&events)
        };
        let s = summarize(&rows, &seconds, &j);
        let failed: Vec<&str> = s
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| v.item.as_str())
            .collect();
        assert_eq!(
            failed,
            [
                "no request answered later than deadline + 20 ms (120 ms)",
                "every request answered 200 or 204",
                "RSS flat"
            ],
            "fds: 211 is within 16 of 200"
        );
        assert_eq!((s.late, s.late_cold_start), (1, 3));
        let split = s.late_split;
        assert_eq!(
            (split.calm_seconds, split.late_in_calm),
            (2, 0),
            "s 1 and 2"
        );
        assert_eq!(
            (split.chaos_seconds, split.late_in_chaos),
            (3, 1),
            "s 3, 4 and 5"
        );
        assert_eq!(s.incidents.len(), 3);
        assert_eq!(s.incidents[1].t_s, 4);
        assert_eq!(s.incidents[1].faults, ["a down", "b blackhole"]);
        assert_eq!(
            s.incidents[1].recent_events,
            ["3 s: b blackhole", "4 s: a down"]
        );
        assert!(text(&s).contains("FAIL  RSS flat"));
        // b's blackhole window closed; a is still down at the end, so its window is open.
        assert_eq!(s.fault_windows.len(), 1);
        assert_eq!(s.fault_windows[0].mode, "blackhole");
        assert_eq!(s.fault_windows[0].outcomes, Some(counts(5, 2)));
        assert_eq!(s.by_mode[0].seconds, 2.0);
        assert!(text(&s).contains(
            "blackhole               1 x,    2 s: valid 0, invalid 0, timeout 5, error 2"
        ));
    }
}

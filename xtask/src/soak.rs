//! `cargo xtask soak [--chaos]`: minutes of load on the splitter in front of mock backends,
//! every response checked against its request, the splitter's RSS and descriptors sampled
//! every second; with `--chaos`, backends are killed and restarted, blackholed, slowed and
//! made hostile on a seeded schedule meanwhile (SPEC section 9, "Chaos").
//!
//! Writes `bench/results/soak-<date>.json` (and `soak-latest.json`), a chart beside it
//! (`soak-latest.svg`), prints a summary with a verdict per acceptance item, and fails when
//! one fails.
//!
//! The load is generated here rather than by wrk: a request's id, its latency and its outcome
//! are needed per second of the run, against the chaos of that second, and wrk's Lua gets them
//! out only at the end and in aggregate (its id check also needs one connection per thread).

mod chaos;
mod chart;
mod load;
mod report;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde::Serialize;

use crate::bench::deploy::{self, SplitterSpec};
use crate::bench::proc::{self, Cpus, Proc};
use crate::bench::record::Machine;
use chaos::{Backends, Event};
use load::{Load, LoadSpec};
use report::{Judge, Outcomes, Row, Sample, Summary};

/// Where the record and the chart go, relative to the root.
const RESULTS_DIR: &str = "bench/results";
/// What an answer may take past the deadline before it counts as late.
const LATE_SLACK_MS: u64 = 20;
/// A request not answered within this is given up.
const GIVE_UP: Duration = Duration::from_secs(2);
/// The splitter's settings the chaos is about, beyond the defaults.
const EJECT_AFTER: u32 = 5;
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Set in the environment of the soak rerun in its own session.
const SESSION_MARKER: &str = "SPLITTER_SOAK_OWN_SESSION";
/// How far below the soak's nice value the load's threads run: the measuring side first.
const LOAD_NICE_BELOW: i32 = 5;
/// Processes named per second, by the CPU they used.
const TOP_PROCESSES: usize = 4;
/// Every process's name and CPU time, by PID.
type ProcessTimes = std::collections::HashMap<u32, (String, Duration)>;
/// Seconds between progress lines.
const PROGRESS_EVERY_S: u32 = 10;

/// Options of `cargo xtask soak`.
#[derive(clap::Args)]
pub struct Options {
    /// Kill and restart, blackhole, slow and make hostile the backends while the load runs.
    #[arg(long)]
    chaos: bool,
    /// Minutes of load.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=24 * 60))]
    minutes: u32,
    /// Seconds of load instead of --minutes (at least 60: the warm-up and two chaos cycles, so
    /// that the steady state and the end are read in different calms).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(60..))]
    seconds: Option<u32>,
    /// Seed of the chaos schedule: which backend gets which fault in each cycle.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Mock backends.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u16).range(4..=16))]
    backends: u16,
    /// Client connections, each sending its next request when the last is answered.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    connections: u16,
    /// Least milliseconds between two requests of a connection (0: back to back).
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pace_ms: u64,
    /// Nice value of the soak: of its scheduling group (it runs in a session of its own, which
    /// autogroup scheduling makes a group) against the rest of the machine, and of its own
    /// processes within it (this one, the splitter, the healthy backends; the load's threads 5
    /// below, faulty backends at 19). What is judged is the splitter, not the other work of a
    /// shared machine. A negative value needs root (else a warning).
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    /// The route's deadline.
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    deadline_ms: u64,
    #[command(flatten)]
    build: crate::build::BuildOptions,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
struct Settings {
    chaos: bool,
    seconds: u32,
    seed: u64,
    backends: usize,
    connections: usize,
    pace_ms: u64,
    /// Of this process, the load, the splitter and the healthy backends.
    nice: i32,
    deadline_ms: u64,
    late_after_ms: u64,
    give_up_after_ms: u64,
    warmup_s: u32,
    cycle_s: u32,
    calm_s: u32,
    workers: usize,
    /// The configuration file the splitter ran with.
    splitter_config: String,
}

/// The splitter's own count of one backend's outcomes over the run, from `/metrics`.
#[derive(Debug, Serialize)]
struct BackendMetrics {
    name: String,
    outcomes: Option<Outcomes>,
    ejections: Option<u64>,
    wins: Option<u64>,
    connects: Option<u64>,
    connections_closed: Option<u64>,
    late_drained: Option<u64>,
}

#[derive(Debug, Serialize)]
struct SoakRecord {
    date: String,
    machine: Machine,
    settings: Settings,
    summary: Summary,
    backends: Vec<BackendMetrics>,
    /// As executed: `at_s` is when the change was made.
    events: Vec<Event>,
    seconds: Vec<Row>,
}

/// Runs `cargo xtask soak`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    proc::trap_interrupts().context("installing signal handlers")?;
    // Its own session, so that its nice value counts against the rest of the machine.
    if !proc::leads_session() && std::env::var_os(SESSION_MARKER).is_none() {
        return proc::rerun_in_own_session(SESSION_MARKER);
    }
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let root = crate::workspace_root();
    let run_s = opts.seconds.unwrap_or(opts.minutes * 60);
    let late_after_ms = opts.deadline_ms + LATE_SLACK_MS;
    let env = crate::bench::build_env(&root, "xtask-soak", &opts.build)?;
    proc::raise_fd_limit()?;
    // After the build: only what the soak starts from here on inherits it. The session's
    // group against the rest of the machine, the thread against the rest of the soak.
    if let Err(e) = proc::set_session_nice(opts.nice) {
        eprintln!(
            "soak: cannot give the soak's scheduling group nice {}: {e:#}",
            opts.nice
        );
    }
    if let Err(e) = proc::set_own_nice(opts.nice) {
        eprintln!(
            "soak: cannot run at nice {} ({e}); running at {}",
            opts.nice,
            proc::own_nice()
        );
    }
    let nice = proc::own_nice();

    let mut backends = Backends::start(&env, opts.backends.into())?;
    let named = backends.named_addrs();
    let extra = format!("eject_after = {EJECT_AFTER}\nmax_response_bytes = {MAX_RESPONSE_BYTES}\n");
    let spec = SplitterSpec {
        backends: &named,
        workers: env.nproc,
        io: "auto",
        route_timeout_ms: opts.deadline_ms,
        steering: None,
        extra: &extra,
        select_field: None,
        cpus: Cpus::Any,
    };
    let (mut splitter, listen, admin) = deploy::launch_splitter(&env, &spec)?;
    let splitter_config = std::fs::read_to_string(env.work_dir.join("splitter.toml"))?;
    let schedule = match opts.chaos {
        true => chaos::schedule(run_s, named.len(), opts.seed),
        false => Vec::new(),
    };
    eprintln!(
        "soak{}: {run_s} s, {} connections, {} backends, deadline {} ms; splitter pid {} on {listen}; \
         {} chaos events",
        if opts.chaos { " --chaos" } else { "" },
        opts.connections,
        named.len(),
        opts.deadline_ms,
        splitter.pid(),
        schedule.len()
    );

    let load = Load::start(LoadSpec {
        addr: listen,
        connections: opts.connections.into(),
        late_after: Duration::from_millis(late_after_ms),
        give_up_after: GIVE_UP,
        pace: Duration::from_millis(opts.pace_ms),
        nice: Some((nice - LOAD_NICE_BELOW).max(-20)),
        id_prefix: format!("s{}-", std::process::id()),
    })?;
    let names: Vec<String> = named.iter().map(|(n, _)| n.clone()).collect();
    let drive = Drive {
        env: &env,
        splitter: &mut splitter,
        admin,
        backends: &mut backends,
        names: &names,
        load: &load,
        run_s,
    };
    let driven = drive.run(&schedule);
    let seconds = load.stop();
    let (samples, events) = driven?;
    let backend_metrics = backend_metrics(admin, &names);
    splitter.ensure_running()?;

    let rows = report::rows(&seconds, &samples, run_s);
    let calm_cycles = chaos::cycles(run_s);
    ensure!(calm_cycles > 0, "a run of {run_s} s has no full cycle");
    let judge = Judge {
        deadline_ms: opts.deadline_ms,
        late_after_ms,
        reference_window: chaos::calm_window(0),
        end_window: (run_s - chaos::CALM_S, run_s),
        events: &events,
        backend_names: &names,
    };
    let summary = report::summarize(&rows, &seconds, &judge);
    let record = SoakRecord {
        date: date.clone(),
        machine: Machine::probe(&root, &env),
        settings: Settings {
            chaos: opts.chaos,
            seconds: run_s,
            seed: opts.seed,
            backends: names.len(),
            connections: opts.connections.into(),
            pace_ms: opts.pace_ms,
            nice,
            deadline_ms: opts.deadline_ms,
            late_after_ms,
            give_up_after_ms: GIVE_UP.as_millis() as u64,
            warmup_s: chaos::WARMUP_S,
            cycle_s: chaos::CYCLE_S,
            calm_s: chaos::CALM_S,
            workers: env.nproc,
            splitter_config,
        },
        summary,
        backends: backend_metrics,
        events,
        seconds: rows,
    };
    publish(&record, &root)
}

/// The run itself: the chaos on schedule and a sample a second, until `run_s`.
struct Drive<'a> {
    env: &'a crate::bench::deploy::Env,
    splitter: &'a mut Proc,
    admin: SocketAddr,
    backends: &'a mut Backends,
    names: &'a [String],
    load: &'a Load,
    run_s: u32,
}

impl Drive<'_> {
    /// Returns the samples, one at the start and one at the end of each second, and the events
    /// as made.
    fn run(self, schedule: &[Event]) -> anyhow::Result<(Vec<Sample>, Vec<Event>)> {
        let t0 = self.load.started();
        let mut samples = Vec::with_capacity(self.run_s as usize + 1);
        let mut procs = proc::process_cpu_times();
        samples.push(self.sample(&mut procs));
        let mut done = Vec::with_capacity(schedule.len());
        let mut next = schedule.iter().peekable();
        for second in 1..=self.run_s {
            let sample_at = t0 + Duration::from_secs(second.into());
            loop {
                let now = Instant::now();
                match next.peek() {
                    Some(e) if t0 + Duration::from_secs_f64(e.at_s) <= now => {
                        let e = next.next().expect("peeked");
                        let counts = deploy::scrape_metrics(self.admin)
                            .ok()
                            .and_then(|m| outcomes(&m, &self.names[e.backend]));
                        self.backends.set(self.env, e.backend, e.mode)?;
                        let at_s = t0.elapsed().as_secs_f64();
                        eprintln!(
                            "  {at_s:6.1} s: backend {} {}",
                            self.names[e.backend],
                            e.mode.name()
                        );
                        done.push(Event {
                            at_s,
                            counts,
                            ..e.clone()
                        });
                    }
                    Some(e) if t0 + Duration::from_secs_f64(e.at_s) < sample_at => {
                        proc::sleep((t0 + Duration::from_secs_f64(e.at_s)) - now)?;
                    }
                    _ if now < sample_at => proc::sleep(sample_at - now)?,
                    _ => break,
                }
            }
            self.splitter
                .ensure_running()
                .context("the splitter died under the soak")?;
            samples.push(self.sample(&mut procs));
            if second % PROGRESS_EVERY_S == 0 {
                let t = self.load.totals();
                let s = samples.last().cloned().unwrap_or_default();
                eprintln!(
                    "soak {second}/{} s: {} requests, {} mismatches, {} errors, {} late; \
                     RSS {:.1} MiB, {} fds",
                    self.run_s,
                    t.requests,
                    t.mismatches,
                    t.errors,
                    t.late,
                    s.rss_kib.unwrap_or(0) as f64 / 1024.0,
                    s.fds.unwrap_or(0)
                );
            }
        }
        self.backends.ensure_running()?;
        Ok((samples, done))
    }

    /// The splitter's RSS, descriptors and ejected backends now, and what the machine did since
    /// `procs` (the processes' CPU times then, replaced by those now); what cannot be read is
    /// left out.
    fn sample(&self, procs: &mut ProcessTimes) -> Sample {
        let at_s = self.load.started().elapsed().as_secs_f64();
        let now = proc::process_cpu_times();
        // The soak's own processes by their role; the others by name and PID.
        let mut roles: std::collections::HashMap<u32, String> = self
            .backends
            .pids()
            .into_iter()
            .map(|(pid, name)| (pid, format!("soak backend {name}")))
            .collect();
        roles.insert(self.splitter.pid(), "soak splitter".into());
        roles.insert(std::process::id(), "soak load".into());
        let mut top: Vec<(String, f64)> = now
            .iter()
            .map(|(pid, (name, t))| {
                let before = procs.get(pid).map_or(Duration::ZERO, |p| p.1);
                let who = roles
                    .get(pid)
                    .cloned()
                    .unwrap_or_else(|| format!("{name}[{pid}]"));
                (who, t.saturating_sub(before).as_secs_f64() * 1000.0)
            })
            .filter(|(_, ms)| *ms > 0.0)
            .collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        top.truncate(TOP_PROCESSES);
        *procs = now;
        let metrics = deploy::scrape_metrics(self.admin).ok();
        Sample {
            at_s,
            machine: proc::machine_cpu(),
            top_cpu: top,
            rss_kib: self.splitter.rss_kib().ok(),
            fds: self.splitter.fd_count().ok().map(|n| n as u64),
            cpu: self.splitter.cpu_time().ok(),
            run_queue_wait: self.splitter.run_queue_wait().ok(),
            client_run_queue_wait: proc::run_queue_wait("/proc/self").ok(),
            cpu_pressure_us: proc::cpu_pressure_us(),
            splitter_over_200ms: metrics.as_deref().and_then(|m| {
                let all = deploy::metric(m, "splitter_request_duration_seconds_count")?;
                let within =
                    deploy::metric(m, "splitter_request_duration_seconds_bucket{le=\"0.2\"}")?;
                all.checked_sub(within)
            }),
            ejected: self
                .names
                .iter()
                .map(|n| {
                    let series = format!("splitter_backend_ejected{{backend=\"{n}\"}}");
                    metrics
                        .as_deref()
                        .and_then(|m| deploy::metric(m, &series))
                        .unwrap_or(0)
                })
                .collect(),
        }
    }
}

/// Backend `name`'s outcomes in the splitter's `/metrics` text.
fn outcomes(text: &str, name: &str) -> Option<Outcomes> {
    let get = |o: &str| {
        let series =
            format!("splitter_backend_responses_total{{backend=\"{name}\",outcome=\"{o}\"}}");
        deploy::metric(text, &series)
    };
    Some(Outcomes {
        valid: get("valid")?,
        invalid: get("invalid")?,
        timeout: get("timeout")?,
        error: get("error")?,
        ejected: get("ejected")?,
        overloaded: get("overloaded")?,
    })
}

/// Each backend's outcomes as the splitter counted them.
fn backend_metrics(admin: SocketAddr, names: &[String]) -> Vec<BackendMetrics> {
    let text = deploy::scrape_metrics(admin).unwrap_or_default();
    let get = |metric: &str, name: &str| {
        deploy::metric(&text, &format!("{metric}{{backend=\"{name}\"}}"))
    };
    names
        .iter()
        .map(|n| BackendMetrics {
            name: n.clone(),
            outcomes: outcomes(&text, n),
            ejections: get("splitter_backend_ejections_total", n),
            wins: get("splitter_backend_wins_total", n),
            connects: get("splitter_backend_connects_total", n),
            connections_closed: get("splitter_backend_connections_closed_total", n),
            late_drained: get("splitter_backend_late_drained_total", n),
        })
        .collect()
}

/// Writes the record and the chart, prints the summary, and fails if an item failed.
fn publish(record: &SoakRecord, root: &Path) -> anyhow::Result<()> {
    let dir = root.join(RESULTS_DIR);
    let path = crate::bench::record::write(record, &record.date, &dir, "soak-", true)?;
    let chart = dir.join("soak-latest.svg");
    let s = &record.settings;
    let title = format!(
        "splitter soak{}: {} s, {} connections, {} backends, deadline {} ms ({})",
        if s.chaos { " --chaos" } else { "" },
        s.seconds,
        s.connections,
        s.backends,
        s.deadline_ms,
        record.date
    );
    chart::render(
        &record.seconds,
        &record.events,
        &record.summary,
        &title,
        &chart,
    )
    .context("rendering the chart")?;
    println!("{}", report::text(&record.summary));
    println!("each backend over the whole run, as the splitter counted it:");
    for b in &record.backends {
        let n = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
        let o = b.outcomes.unwrap_or_default();
        println!(
            "  {}: valid {}, invalid {}, timeout {}, error {}, not asked (ejected) {}, \
             overloaded {}; ejections {}, wins {}, connects {}",
            b.name,
            o.valid,
            o.invalid,
            o.timeout,
            o.error,
            o.ejected,
            o.overloaded,
            n(b.ejections),
            n(b.wins),
            n(b.connects)
        );
    }
    eprintln!("record: {}\nchart: {}", path.display(), chart.display());
    if !record.summary.passed() {
        let failed: Vec<&str> = record
            .summary
            .verdicts
            .iter()
            .filter(|v| !v.pass)
            .map(|v| v.item.as_str())
            .collect();
        bail!("soak failed: {}", failed.join("; "));
    }
    Ok(())
}

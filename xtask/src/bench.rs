//! `cargo xtask bench`: the splitter side by side with HAProxy and a bare mock backend, as SPEC
//! section 8 asks. Every process it starts is held by a guard that stops it by PID, so an error
//! or a Ctrl-C never leaves a backend, a splitter or an HAProxy running.

mod accounting;
mod chart;
pub(crate) mod deploy;
mod idle;
pub(crate) mod plan;
pub(crate) mod proc;
pub(crate) mod record;
mod report;
mod skew;
mod soak;
mod wrk;

use anyhow::{ensure, Context};
use deploy::{Deployment, Env};
use plan::{Pinning, Scenario, Selection, Target};
use record::{Accounting, Case, IdleNotMeasured, Machine, Record, Run, Sample, Settings, Skew};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Open files a process needs besides the idle check's connections: listeners, backend
/// connections, logs.
const FD_HEADROOM: u64 = 1024;
/// The splitter's count of `204 No Content` answers (nothing valid before the deadline).
const RESPONSES_204: &str = "splitter_responses_total{status=\"204\"}";
/// Where the record, the chart and the README's link to them live, relative to the root.
const RESULTS_DIR: &str = "bench/results";

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct Options {
    /// A smoke run of about a minute: one repetition of 2 s per case.
    #[arg(long)]
    quick: bool,
    /// Repetitions of each case, whose medians are quoted [default: 3; 1 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    repeat: Option<u32>,
    /// Seconds of load measured per run [default: 8; 2 with --quick].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    seconds: Option<u32>,
    /// Backend behaviour: fast, deadline, openrtb, openrtb-plain, fanout-2, fanout-4, fanout-8,
    /// fanout-16 (the splitter alone in front of that many `fast` backends), fanout (all four),
    /// a comma-separated list of them, or all.
    #[arg(long, value_name = "NAME[,NAME]", default_value = "all")]
    scenario: Selection<Scenario>,
    /// Process placement: unpinned, pinned or all.
    #[arg(long, value_name = "NAME", default_value = "all")]
    pinning: Selection<Pinning>,
    /// Idle keep-alive client connections held open to measure the splitter's memory, a
    /// comma-separated list of counts, each measured with a splitter of its own (0 skips).
    #[arg(long, value_name = "N[,N]", default_value = "10000,50000")]
    idle_connections: idle::Counts,
    /// Seconds of the per-request kernel accounting of the `fast` scenario (system calls,
    /// io_uring submissions, context switches, TCP segments), a separate pass after the
    /// measured runs, per target and pinning; made when `fast` is among the scenarios (0 skips;
    /// default 5, or 2 with --quick).
    #[arg(long, value_name = "N")]
    accounting_seconds: Option<u32>,
    /// Seconds of one long run sampling the splitter's RSS, to show it does not grow (0 skips;
    /// default 30, or 0 with --quick).
    #[arg(long, value_name = "N")]
    soak_seconds: Option<u32>,
    /// Seconds of each run of the skewed measurement (a few busy and many light long-lived
    /// connections), `--repeat` times per steering mode (0 skips; default 10, or 3 with --quick).
    #[arg(long, value_name = "N")]
    skew_seconds: Option<u32>,
    /// Make only the skewed measurement and print its table; the record, the chart and the
    /// README stay as they are.
    #[arg(long)]
    only_skew: bool,
    /// Leave README.md and what its performance section shows (bench/results/latest.json,
    /// latest.svg and fanout.svg) as they are, e.g. for a partial run; the record is still
    /// written, under its date.
    #[arg(long)]
    no_readme: bool,
    #[command(flatten)]
    build: crate::build::BuildOptions,
}

impl Options {
    fn settings(&self) -> Settings {
        let (repeat, seconds, check_seconds) = if self.quick { (1, 2, 2) } else { (3, 8, 4) };
        Settings {
            repeat: self.repeat.unwrap_or(repeat),
            seconds: self.seconds.unwrap_or(seconds),
            warmup_seconds: 1,
            wrk_threads: 1,
            wrk_connections: 64,
            // One connection per wrk thread: what the id check script needs.
            check_connections: 16,
            check_seconds,
        }
    }

    fn skew_seconds(&self) -> u32 {
        self.skew_seconds.unwrap_or(if self.quick { 3 } else { 10 })
    }

    fn accounting_seconds(&self) -> u32 {
        self.accounting_seconds
            .unwrap_or(if self.quick { 2 } else { 5 })
    }
}

/// The wrk scripts, in `bench/`.
struct Scripts {
    load: PathBuf,
    check: PathBuf,
}

impl Scripts {
    /// The scripts `scenario` loads the targets with.
    fn of(root: &Path, scenario: Scenario) -> Scripts {
        let (load, check) = scenario.scripts();
        Scripts {
            load: root.join(load),
            check: root.join(check),
        }
    }
}

/// Runs `cargo xtask bench`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    proc::trap_interrupts().context("installing signal handlers")?;
    let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let root = crate::workspace_root();
    let settings = opts.settings();
    ensure!(
        !opts.only_skew || opts.skew_seconds() > 0,
        "--only-skew with --skew-seconds 0 measures nothing"
    );
    let (env, fd_limit) = prepare(&root, &opts)?;
    if opts.only_skew {
        if let Some(skew) = measure_skew(&env, &root, opts.skew_seconds(), settings.repeat)? {
            print!("{}", report::skew_markdown(&skew));
        }
        return Ok(());
    }
    let runs = measure_all(&env, &root, &opts, &settings)?;
    let accounting = measure_accounting(&env, &root, &opts, &settings)?;
    let (mut idle, mut idle_not_measured) = (Vec::new(), Vec::new());
    for &n in &opts.idle_connections.0 {
        let need = n as u64 + FD_HEADROOM;
        if need > fd_limit {
            let why = format!(
                "needs an open-file limit of {need}, and this process's is {fd_limit} (raising \
                 the hard limit needs CAP_SYS_RESOURCE; fs.nr_open caps it)"
            );
            eprintln!("memory: {n} idle connections not measured: {why}");
            idle_not_measured.push(IdleNotMeasured {
                connections: n,
                why,
            });
            continue;
        }
        eprintln!("memory: {n} idle keep-alive connections to the splitter");
        idle.push(idle::measure(&env, n)?);
    }
    let soak_seconds = opts.soak_seconds.unwrap_or(if opts.quick { 0 } else { 30 });
    let soak = match soak_seconds {
        0 => None,
        n => {
            eprintln!("memory: {n} s of load, RSS sampled every second");
            Some(soak::measure(
                &env,
                n,
                Scripts::of(&root, Scenario::Fast).load,
            )?)
        }
    };
    let skew = measure_skew(&env, &root, opts.skew_seconds(), settings.repeat)?;
    let record = Record {
        date,
        machine: Machine::probe(&root, &env),
        settings,
        medians: record::medians(&runs),
        idle,
        idle_not_measured,
        accounting,
        soak,
        skew,
        runs,
    };
    publish(&record, &root, !opts.no_readme)
}

/// The kernel accounting pass of the `fast` scenario, for the pinnings selected; `None` when
/// `fast` is not among the scenarios or its seconds are 0.
fn measure_accounting(
    env: &Env,
    root: &Path,
    opts: &Options,
    settings: &Settings,
) -> anyhow::Result<Option<Accounting>> {
    let seconds = opts.accounting_seconds();
    if seconds == 0 || !opts.scenario.0.contains(&Scenario::Fast) {
        return Ok(None);
    }
    eprintln!("accounting: {seconds} s per target of system calls, switches and TCP segments");
    let script = Scripts::of(root, Scenario::Fast).load;
    accounting::measure(env, settings, &script, &opts.pinning.0, seconds).map(Some)
}

/// The skewed measurement, both steering modes `repeat` times; `None` when `seconds` is 0.
fn measure_skew(env: &Env, root: &Path, seconds: u32, repeat: u32) -> anyhow::Result<Option<Skew>> {
    if seconds == 0 {
        return Ok(None);
    }
    eprintln!("skewed: busy and light long-lived connections, reuseport and eBPF steering");
    let scripts = skew::Scripts {
        heavy: root.join("bench/post-2k.lua"),
        light: root.join("bench/post-2k-light.lua"),
    };
    skew::measure(env, seconds, repeat, &scripts).map(Some)
}

/// Checks the tools, raises the open-file limit as far as the idle check asks and this process
/// may, builds the splitter and readies the working directory; returns the open-file limit
/// with the environment.
fn prepare(root: &Path, opts: &Options) -> anyhow::Result<(Env, u64)> {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    ensure!(
        nproc >= 2 || !opts.pinning.0.contains(&Pinning::Pinned),
        "pinned runs need two CPUs (target on CPU 0, load on CPU 1); this machine has {nproc}"
    );
    for (tool, package) in [("wrk", "wrk"), ("haproxy", "haproxy")] {
        Command::new(tool)
            .arg("-v")
            .output()
            .with_context(|| format!("running {tool}; install Debian's `{package}` package"))?;
    }
    let most = opts.idle_connections.0.iter().copied().max().unwrap_or(0) as u64;
    let fd_limit = proc::raise_fd_limit_to(most + FD_HEADROOM)?;
    Ok((build_env(root, "xtask-bench", &opts.build)?, fd_limit))
}

/// Builds the release splitter (`cargo xtask build`, as `build` asks) and readies `work` under
/// the target directory, for the configurations and logs of the processes a run starts.
pub(crate) fn build_env(
    root: &Path,
    work: &str,
    build: &crate::build::BuildOptions,
) -> anyhow::Result<Env> {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let release = crate::build::release(build)?;
    let work_dir = target_dir(root).join(work);
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    Ok(Env {
        splitter_bin: release.binary,
        splitter_build: release.kind,
        child_env: Vec::new(),
        work_dir,
        nproc,
    })
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// Every case, `repeat` times, in the order of [`schedule`].
fn measure_all(
    env: &Env,
    root: &Path,
    opts: &Options,
    settings: &Settings,
) -> anyhow::Result<Vec<Run>> {
    let schedule = schedule(opts, settings.repeat);
    let mut runs = Vec::with_capacity(schedule.len());
    for (i, &(case, repetition)) in schedule.iter().enumerate() {
        let Case {
            scenario,
            pinning,
            target,
        } = case;
        let name = format!("{scenario} {pinning} {target}");
        eprint!("[{}/{}] {name} #{repetition}: ", i + 1, schedule.len());
        let scripts = Scripts::of(root, scenario);
        let sample = measure_once(env, case, settings, &scripts).context(name)?;
        eprintln!(
            "{:.0} req/s, p99 {:.2} ms, {:.1} CPU µs/req",
            sample.requests_per_s, sample.p99_ms, sample.cpu_us_per_request
        );
        runs.push(Run {
            case,
            repetition,
            sample,
        });
    }
    Ok(runs)
}

/// The runs to make, with their repetition number. The scenarios and targets take turns within
/// a repetition, so that a slow spell on this shared machine weighs on all of them, not on one
/// (which matters most where scenarios are compared: `openrtb` against `openrtb-plain`).
fn schedule(opts: &Options, repeat: u32) -> Vec<(Case, u32)> {
    let mut runs = Vec::new();
    for &pinning in &opts.pinning.0 {
        for repetition in 1..=repeat {
            for &scenario in &opts.scenario.0 {
                for &target in scenario.targets() {
                    let case = Case {
                        scenario,
                        pinning,
                        target,
                    };
                    runs.push((case, repetition));
                }
            }
        }
    }
    runs
}

/// One run: start the case's processes, warm up, measure a window of load, and for the
/// splitter check that every response answers its own request.
fn measure_once(
    env: &Env,
    case: Case,
    settings: &Settings,
    scripts: &Scripts,
) -> anyhow::Result<Sample> {
    let mut dep = Deployment::start(env, case.scenario, case.pinning, case.target)?;
    let cpus = case.pinning.load_cpus();
    let load = |seconds| wrk::Load {
        script: scripts.load.clone(),
        threads: settings.wrk_threads,
        connections: settings.wrk_connections,
        seconds,
    };
    wrk::run(&load(settings.warmup_seconds), &dep.url(), cpus)?;
    // The warm-up's clients left with requests in flight; the measured window starts once the
    // route's deadline has answered them all, so it sees the steady load and not that
    // turnover (opened at once, the `deadline` scenario's p99.9 took 5-20 ms more, in both
    // shells: README, Performance).
    std::thread::sleep(Duration::from_millis(case.scenario.route_timeout_ms() + 50));
    let before = Counters::read(&dep)?;
    let (summary, _) = wrk::run(&load(settings.seconds), &dep.url(), cpus)?;
    let after = Counters::read(&dep)?;
    let cpu_busy_percent = proc::busy_percent(&before.cpus, &after.cpus);
    dep.ensure_running()?;
    let peak_rss_kib = dep.measured().peak_rss_kib()?;
    let check = match case.target {
        Target::SplitterUring | Target::SplitterEpoll => {
            Some(check_ids(&dep, settings, scripts, cpus)?)
        }
        Target::Haproxy | Target::Direct => None,
    };
    ensure!(summary.requests > 0, "wrk completed no request");
    let cpu = after.cpu.saturating_sub(before.cpu);
    Ok(Sample {
        requests: summary.requests,
        requests_per_s: summary.requests_per_s(),
        p50_ms: ms(summary.p50_us),
        p99_ms: ms(summary.p99_us),
        p999_ms: ms(summary.p999_us),
        cpu_us_per_request: cpu.as_secs_f64() * 1e6 / summary.requests as f64,
        peak_rss_mib: peak_rss_kib as f64 / 1024.0,
        cpu_busy_percent,
        socket_errors: summary.socket_errors,
        non_2xx: summary.non_2xx,
        responses_204: after
            .responses_204
            .zip(before.responses_204)
            .map(|(a, b)| a - b),
        checked: check.as_ref().map(|c| c.checked),
        mismatches: check.as_ref().map(|c| c.mismatches),
    })
}

/// What is read from the target around the measured window.
struct Counters {
    cpu: Duration,
    responses_204: Option<u64>,
    /// The machine's CPUs, to tell a target short of CPU from one short of load.
    cpus: Vec<proc::CpuTicks>,
}

impl Counters {
    fn read(dep: &Deployment) -> anyhow::Result<Counters> {
        let responses_204 = match dep.admin {
            Some(admin) => {
                Some(deploy::metric(&deploy::scrape_metrics(admin)?, RESPONSES_204).unwrap_or(0))
            }
            None => None,
        };
        Ok(Counters {
            cpu: dep.measured().cpu_time()?,
            responses_204,
            cpus: proc::cpu_ticks(),
        })
    }
}

/// Loads the splitter with the id-checking script, one connection per wrk thread.
fn check_ids(
    dep: &Deployment,
    settings: &Settings,
    scripts: &Scripts,
    cpus: proc::Cpus,
) -> anyhow::Result<wrk::Check> {
    let load = wrk::Load {
        script: scripts.check.clone(),
        threads: settings.check_connections,
        connections: settings.check_connections,
        seconds: settings.check_seconds,
    };
    let (_, check) = wrk::run(&load, &dep.url(), cpus)?;
    let check = check.context("the check script printed no bench-check line")?;
    ensure!(check.checked > 0, "the id check saw no 200 response");
    Ok(check)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Writes the record, prints the table, and with `update_readme` makes it the latest record,
/// charts it and puts it in the README.
fn publish(record: &Record, root: &Path, update_readme: bool) -> anyhow::Result<()> {
    let dir = root.join(RESULTS_DIR);
    let path = record::write(record, &record.date, &dir, "", update_readme)?;
    let charts = report::Charts {
        medians: format!("{RESULTS_DIR}/latest.svg"),
        fanout: format!("{RESULTS_DIR}/fanout.svg"),
    };
    let markdown = report::markdown(record, &charts);
    println!("{markdown}");
    eprintln!("record: {}", path.display());
    if update_readme {
        let chart = dir.join("latest.svg");
        // The fan-out series has a chart of its own.
        let medians: Vec<_> = record
            .medians
            .iter()
            .filter(|m| !m.case.scenario.is_fanout())
            .cloned()
            .collect();
        chart::render(&medians, &chart).context("rendering the chart")?;
        eprintln!("chart: {}", chart.display());
        let fanout = report::fanout(&record.medians);
        if !fanout.rows.is_empty() {
            let chart = dir.join("fanout.svg");
            chart::render_fanout(&fanout, &chart).context("rendering the fan-out chart")?;
            eprintln!("chart: {}", chart.display());
        }
        let readme = root.join("README.md");
        report::update_readme(&readme, &markdown)?;
        eprintln!("updated the performance table in {}", readme.display());
    }
    Ok(())
}

//! The skewed measurement of issue 4: long-lived connections with very unequal request rates,
//! as a balancer's keep-alive pool brings them. `SO_REUSEPORT` hashes each connection's 4-tuple
//! to a worker, blind to load, so the few busy connections often share one worker; the eBPF
//! program sends each new connection to the least-loaded worker. Both modes get the same load
//! in the same run, several times, since the hash's outcome changes from run to run.
//!
//! The load spread is read from each worker thread's CPU time in `/proc`: it needs nothing from
//! the splitter, so it means the same in both modes. With eBPF, the per-worker counts of the
//! pinned map are recorded as well, as `bpftool` prints them.

use crate::bench::deploy::{Deployment, Env, Steering};
use crate::bench::plan::Scenario;
use crate::bench::proc::{self, Cpus, Proc};
use crate::bench::record::{self, Skew, SkewMedian, SkewRun};
use crate::bench::wrk::{self, Load, Summary};
use anyhow::{anyhow, ensure, Context};
use serde::Serialize;
use splitter_test_support::bpftool::{self, PinDir};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Connections sending back to back: few, so the hash often puts them on one worker.
const HEAVY_CONNECTIONS: u32 = 4;
/// Connections pausing between requests (`bench/post-2k-light.lua`).
const LIGHT_CONNECTIONS: u32 = 60;
/// Backend time per request, so that requests stay in flight and in-flight counts matter.
const BACKEND_DELAY_MS: &str = "1..3";
/// The worker threads' names are this and their index.
const WORKER_THREAD: &str = "splitter-w";
/// How long the splitter may take to start all its worker threads once it accepts.
const WORKERS_TIMEOUT: Duration = Duration::from_secs(10);

/// How the splitter spreads new connections over its workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SteeringMode {
    /// The kernel's `SO_REUSEPORT` hash of the 4-tuple: load-blind.
    Reuseport,
    /// The splitter's `sk_reuseport` program: the least-loaded worker.
    Ebpf,
}

impl SteeringMode {
    /// The `steering.mode` value.
    pub fn name(self) -> &'static str {
        match self {
            SteeringMode::Reuseport => "reuseport",
            SteeringMode::Ebpf => "ebpf",
        }
    }
}

/// The wrk scripts of the two loads, in `bench/`.
pub struct Scripts {
    pub heavy: PathBuf,
    pub light: PathBuf,
}

/// Runs both modes `repeat` times for `seconds` each, taking turns. When the eBPF program
/// cannot load (not root, a build without it), says why and measures `reuseport` alone.
pub fn measure(env: &Env, seconds: u32, repeat: u32, scripts: &Scripts) -> anyhow::Result<Skew> {
    let mut modes = vec![SteeringMode::Reuseport, SteeringMode::Ebpf];
    let mut ebpf_unavailable = None;
    let mut runs = Vec::new();
    for repetition in 1..=repeat {
        for mode in modes.clone() {
            // Declared before the deployment, so removed after the splitter has stopped.
            let pins = PinDir::new(&format!("bench-{}", mode.name()));
            let steering = Steering {
                mode: mode.name(),
                pin_dir: &pins.path,
            };
            let mut dep = match Deployment::start_steered(env, &mock_flags(), &steering) {
                Err(e) if mode == SteeringMode::Ebpf => {
                    proc::check_interrupted()?;
                    eprintln!(
                        "skewed: eBPF steering cannot run here, measuring reuseport only: {e:#}"
                    );
                    ebpf_unavailable = Some(format!("{e:#}"));
                    modes.retain(|&m| m != SteeringMode::Ebpf);
                    continue;
                }
                started => started?,
            };
            eprint!("skewed {} #{repetition}: ", mode.name());
            let run = measure_once(
                &mut dep, env.nproc, mode, repetition, seconds, scripts, &pins,
            )
            .with_context(|| format!("skewed {} #{repetition}", mode.name()))?;
            eprintln!(
                "CPU shares {}, heavy p99 {:.2} ms, light p99 {:.2} ms, {:.0} req/s",
                percentages(&run.worker_cpu_shares),
                run.heavy_p99_ms,
                run.light_p99_ms,
                run.requests_per_s
            );
            runs.push(run);
        }
    }
    Ok(Skew {
        seconds,
        workers: env.nproc,
        heavy_connections: HEAVY_CONNECTIONS,
        light_connections: LIGHT_CONNECTIONS,
        backend_delay_ms: BACKEND_DELAY_MS,
        ebpf_unavailable,
        medians: medians(&runs),
        runs,
    })
}

/// The fast scenario's backends, each request made to take a few milliseconds.
fn mock_flags() -> Vec<&'static str> {
    [
        Scenario::Fast.mock_flags(),
        &["--delay-ms", BACKEND_DELAY_MS],
    ]
    .concat()
}

/// Loads the started splitter with both loads at once and reads how its workers shared them.
fn measure_once(
    dep: &mut Deployment,
    workers: usize,
    mode: SteeringMode,
    repetition: u32,
    seconds: u32,
    scripts: &Scripts,
    pins: &PinDir,
) -> anyhow::Result<SkewRun> {
    let before = all_workers_cpu(dep.measured(), workers)?;
    let (heavy, light) = run_loads(&dep.url(), seconds, scripts)?;
    let after = worker_cpu(dep.measured())?;
    dep.ensure_running()?;
    ensure!(
        after.len() == workers,
        "{} worker threads, not {workers}",
        after.len()
    );
    let cells = match mode {
        SteeringMode::Ebpf => Some(bpftool::dump_pinned(&pins.map())?),
        SteeringMode::Reuseport => None,
    };
    ensure!(
        heavy.requests > 0 && light.requests > 0,
        "a load completed no request"
    );
    let busy: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b).as_secs_f64())
        .collect();
    let shares = shares(&busy).context("the workers used no CPU time")?;
    Ok(SkewRun {
        mode,
        repetition,
        spread: spread(&shares),
        worker_cpu_shares: shares,
        worker_requests: cells
            .as_ref()
            .map(|c| c.iter().map(|c| c.requests).collect()),
        worker_accepted: cells
            .as_ref()
            .map(|c| c.iter().map(|c| c.accepted).collect()),
        heavy_p99_ms: heavy.p99_us as f64 / 1000.0,
        light_p99_ms: light.p99_us as f64 / 1000.0,
        requests_per_s: heavy.requests_per_s() + light.requests_per_s(),
        errors: [heavy, light]
            .iter()
            .map(|s| s.socket_errors + s.non_2xx)
            .sum(),
    })
}

/// The heavy and the light wrk, started together, each over its own connections.
fn run_loads(url: &str, seconds: u32, scripts: &Scripts) -> anyhow::Result<(Summary, Summary)> {
    let heavy = Load {
        script: scripts.heavy.clone(),
        threads: 1,
        connections: HEAVY_CONNECTIONS,
        seconds,
    };
    let light = Load {
        script: scripts.light.clone(),
        threads: 1,
        connections: LIGHT_CONNECTIONS,
        seconds,
    };
    let heavy_url = url.to_owned();
    let heavy = std::thread::spawn(move || wrk::run(&heavy, &heavy_url, Cpus::Any));
    let light = wrk::run(&light, url, Cpus::Any);
    // Joined before `light` is looked at, so a failed light load leaves no heavy wrk behind.
    let heavy = heavy
        .join()
        .map_err(|_| anyhow!("the heavy wrk thread panicked"))?;
    Ok((heavy?.0, light?.0))
}

/// [`worker_cpu`] once all `workers` threads run: the splitter accepts (its listeners are all
/// bound) before it has started every worker thread.
fn all_workers_cpu(splitter: &Proc, workers: usize) -> anyhow::Result<Vec<Duration>> {
    let end = Instant::now() + WORKERS_TIMEOUT;
    loop {
        let cpu = worker_cpu(splitter)?;
        if cpu.len() == workers {
            return Ok(cpu);
        }
        ensure!(
            Instant::now() < end,
            "the splitter started {} of {workers} worker threads in {WORKERS_TIMEOUT:?}",
            cpu.len()
        );
        proc::sleep(Duration::from_millis(20))?;
    }
}

/// Each worker thread's CPU time so far, by worker index.
fn worker_cpu(splitter: &Proc) -> anyhow::Result<Vec<Duration>> {
    let mut workers: Vec<(usize, Duration)> = splitter
        .thread_cpu_times()?
        .into_iter()
        .filter_map(|(name, cpu)| Some((name.strip_prefix(WORKER_THREAD)?.parse().ok()?, cpu)))
        .collect();
    workers.sort_unstable_by_key(|&(i, _)| i);
    Ok(workers.into_iter().map(|(_, cpu)| cpu).collect())
}

/// Each value's share of the total; `None` when the total is zero.
fn shares(values: &[f64]) -> Option<Vec<f64>> {
    let total: f64 = values.iter().sum();
    (total > 0.0).then(|| values.iter().map(|v| v / total).collect())
}

/// The largest share over the mean share: 1 when even, the count when all in one.
fn spread(shares: &[f64]) -> f64 {
    shares.iter().copied().fold(0.0, f64::max) * shares.len() as f64
}

fn percentages(shares: &[f64]) -> String {
    let p: Vec<String> = shares
        .iter()
        .map(|s| format!("{:.0}%", s * 100.0))
        .collect();
    p.join(" / ")
}

/// The medians per mode, reuseport first.
fn medians(runs: &[SkewRun]) -> Vec<SkewMedian> {
    [SteeringMode::Reuseport, SteeringMode::Ebpf]
        .into_iter()
        .filter_map(|mode| {
            let runs: Vec<&SkewRun> = runs.iter().filter(|r| r.mode == mode).collect();
            let f = |get: fn(&SkewRun) -> f64| record::median(runs.iter().map(|r| get(r)));
            Some(SkewMedian {
                mode,
                runs: runs.len(),
                spread: f(|r| r.spread)?,
                worst_spread: runs.iter().map(|r| r.spread).fold(0.0, f64::max),
                heavy_p99_ms: f(|r| r.heavy_p99_ms)?,
                light_p99_ms: f(|r| r.light_p99_ms)?,
                requests_per_s: f(|r| r.requests_per_s)?,
                errors: runs.iter().map(|r| r.errors).max()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_and_spread() {
        let s = shares(&[3.0, 1.0]).unwrap();
        assert_eq!(s, [0.75, 0.25]);
        assert_eq!(spread(&s), 1.5);
        assert_eq!(spread(&shares(&[2.0, 2.0]).unwrap()), 1.0);
        assert_eq!(shares(&[0.0, 0.0]), None);
        assert_eq!(percentages(&s), "75% / 25%");
    }

    fn run(mode: SteeringMode, spread: f64, errors: u64) -> SkewRun {
        SkewRun {
            mode,
            repetition: 1,
            worker_cpu_shares: vec![],
            spread,
            worker_requests: None,
            worker_accepted: None,
            heavy_p99_ms: spread,
            light_p99_ms: 1.0,
            requests_per_s: 100.0,
            errors,
        }
    }

    #[test]
    fn medians_per_mode_with_the_worst_spread() {
        let runs = [
            run(SteeringMode::Ebpf, 1.1, 0),
            run(SteeringMode::Reuseport, 1.9, 0),
            run(SteeringMode::Reuseport, 1.2, 3),
            run(SteeringMode::Reuseport, 1.5, 0),
        ];
        let m = medians(&runs);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mode, SteeringMode::Reuseport);
        assert_eq!(
            (m[0].runs, m[0].spread, m[0].worst_spread, m[0].errors),
            (3, 1.5, 1.9, 3)
        );
        assert_eq!(m[0].heavy_p99_ms, 1.5);
        assert_eq!((m[1].runs, m[1].spread), (1, 1.1));
    }
}

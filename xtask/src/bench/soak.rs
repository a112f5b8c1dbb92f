//! The growth check: the splitter's RSS sampled every second through one long run, to show the
//! memory it needs stays flat however many requests it serves (no per-request leak, pools and
//! free lists bounded).

use std::time::Duration;

use crate::bench::deploy::{Deployment, Env};
use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::proc;
use crate::bench::record::SoakMemory;
use crate::bench::wrk::{self, Load};

/// Seconds of load before the first sample counts: pools and buffers fill up first.
const WARMUP_SAMPLES: usize = 3;

/// Loads the splitter (fast backends, all CPUs) for `seconds` with `load`'s script and samples
/// its RSS once a second.
pub fn measure(env: &Env, seconds: u32, script: std::path::PathBuf) -> anyhow::Result<SoakMemory> {
    let mut dep = Deployment::start(
        env,
        Scenario::Fast,
        Pinning::Unpinned,
        Target::SplitterUring,
    )?;
    let load = Load {
        script,
        threads: 1,
        connections: 64,
        seconds,
    };
    let url = dep.url();
    let wrk = std::thread::spawn(move || wrk::run(&load, &url, proc::Cpus::Any));
    let mut samples_mib = Vec::with_capacity(seconds as usize);
    for _ in 0..seconds {
        proc::sleep(Duration::from_secs(1))?;
        samples_mib.push(dep.measured().rss_kib()? as f64 / 1024.0);
    }
    let (summary, _) = wrk
        .join()
        .map_err(|_| anyhow::anyhow!("the wrk thread panicked"))??;
    dep.ensure_running()?;
    let settled_at = WARMUP_SAMPLES.min(samples_mib.len().saturating_sub(1));
    Ok(SoakMemory {
        seconds,
        requests: summary.requests,
        settled_after_seconds: settled_at + 1,
        rss_settled_mib: samples_mib.get(settled_at).copied().unwrap_or_default(),
        rss_end_mib: samples_mib.last().copied().unwrap_or_default(),
        samples_mib,
    })
}

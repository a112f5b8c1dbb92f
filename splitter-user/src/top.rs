//! `splitter top`: the per-worker counters, live, read from the pinned BPF metrics map the way
//! `bpftool map dump pinned` reads it, for a host without Prometheus. Rates are per second over
//! the refresh interval; gauges are as read.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use aya::maps::MapData;
use splitter_common::{WorkerMetrics, METRICS_MAP};

use crate::metrics::MetricsRegion;

/// Options of `splitter top`.
#[derive(clap::Args)]
pub struct TopArgs {
    /// Where the running splitter pins its maps (`steering.pin_dir`).
    #[arg(short, long, value_name = "DIR", default_value = crate::config::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    /// Seconds between refreshes.
    #[arg(short, long, value_name = "SECONDS", default_value_t = 1.0)]
    interval: f64,
    /// Print one table of totals since start, then exit.
    #[arg(long)]
    once: bool,
}

/// Shows the pinned map until interrupted (or once).
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let pin = args.pin_dir.join(METRICS_MAP);
    let map = MapData::from_pin(&pin).with_context(|| {
        format!(
            "cannot open {} (is a splitter running with eBPF steering, and are you root?)",
            pin.display()
        )
    })?;
    let workers = map.info()?.max_entries() as usize;
    use std::os::fd::AsFd as _;
    let region = MetricsRegion::bpf_array(map.fd().as_fd(), workers)
        .with_context(|| format!("cannot map {}", pin.display()))?;
    let read = || (0..workers).map(|w| region.read(w)).collect::<Vec<_>>();
    if args.once {
        print!("{}", table(&read(), None));
        return Ok(());
    }
    let interval = Duration::from_secs_f64(args.interval.max(0.1));
    let mut before = (read(), Instant::now());
    loop {
        std::thread::sleep(interval);
        let now = (read(), Instant::now());
        let seconds = now.1.duration_since(before.1).as_secs_f64();
        // Clear the screen and go home, as top does.
        print!("\x1b[2J\x1b[H{}", table(&now.0, Some((&before.0, seconds))));
        before = now;
    }
}

/// One row per worker and a total: requests, responses by class, in flight, connections,
/// steered and accepted, backend valid/timeout/error. With `since`, counters are rates.
fn table(cells: &[WorkerMetrics], since: Option<(&[WorkerMetrics], f64)>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let unit = if since.is_some() { "/s" } else { "" };
    let _ = writeln!(
        out,
        "{:>6} {:>12} {:>10} {:>10} {:>10} {:>9} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "worker",
        format!("requests{unit}"),
        format!("200{unit}"),
        format!("204{unit}"),
        format!("other{unit}"),
        "in_flight",
        "conns",
        format!("steered{unit}"),
        format!("valid{unit}"),
        format!("timeout{unit}"),
        format!("error{unit}"),
        format!("ejected{unit}"),
    );
    let mut total = [0f64; 9];
    let mut gauges = [0u64; 2];
    for (w, cell) in cells.iter().enumerate() {
        let prev = since.map(|(p, _)| &p[w]);
        let seconds = since.map_or(1.0, |(_, s)| s);
        let rate = |f: fn(&WorkerMetrics) -> u64| {
            let was = prev.map_or(0, f);
            f(cell).saturating_sub(was) as f64 / seconds
        };
        let row = [
            rate(|m| m.requests),
            rate(|m| m.responses[0]),
            rate(|m| m.responses[1]),
            rate(|m| m.responses[2..].iter().sum()),
            rate(|m| m.steered),
            rate(|m| m.backends.iter().map(|b| b.valid).sum()),
            rate(|m| m.backends.iter().map(|b| b.timeout).sum()),
            rate(|m| m.backends.iter().map(|b| b.error).sum()),
            rate(|m| m.backends.iter().map(|b| b.ejected).sum()),
        ];
        for (t, v) in total.iter_mut().zip(row) {
            *t += v;
        }
        gauges[0] += cell.in_flight;
        gauges[1] += cell.connections;
        let _ = writeln!(
            out,
            "{w:>6} {:>12.0} {:>10.0} {:>10.0} {:>10.0} {:>9} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            row[0], row[1], row[2], row[3], cell.in_flight, cell.connections, row[4], row[5], row[6],
            row[7], row[8],
        );
    }
    let _ = writeln!(
        out,
        "{:>6} {:>12.0} {:>10.0} {:>10.0} {:>10.0} {:>9} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
        "all", total[0], total[1], total[2], total[3], gauges[0], gauges[1], total[4], total[5],
        total[6], total[7], total[8],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_and_rates() {
        let mut responses = [0; splitter_common::STATUSES.len()];
        (responses[0], responses[1]) = (7, 3);
        let a = WorkerMetrics {
            requests: 10,
            responses,
            in_flight: 2,
            ..Default::default()
        };
        let b = WorkerMetrics { requests: 30, ..a };
        let once = table(&[a, b], None);
        let last = once.lines().last().unwrap();
        assert!(last.split_whitespace().take(2).eq(["all", "40"]), "{once}");
        let rates = table(&[b], Some((&[a][..], 2.0)));
        let row = rates.lines().nth(1).unwrap();
        assert!(row.split_whitespace().take(2).eq(["0", "10"]), "{rates}");
    }
}

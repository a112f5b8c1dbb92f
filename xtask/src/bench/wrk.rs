//! Running wrk with the scripts in `bench/` and reading the lines their `done()` prints.

use crate::bench::proc::{Cpus, Proc};
use anyhow::{ensure, Context};
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// How long wrk may overrun its `-d` before it is considered stuck.
const OVERRUN: Duration = Duration::from_secs(15);

/// One wrk invocation.
pub struct Load {
    pub script: PathBuf,
    pub threads: u32,
    pub connections: u32,
    pub seconds: u32,
}

/// What `bench/post-2k.lua` prints (latencies in microseconds).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Summary {
    pub requests: u64,
    pub duration_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub socket_errors: u64,
    pub non_2xx: u64,
}

impl Summary {
    pub fn requests_per_s(&self) -> f64 {
        self.requests as f64 * 1e6 / self.duration_us.max(1) as f64
    }
}

/// What `bench/post-2k-check.lua` adds: 200 responses checked and those not carrying the id
/// of the request they answer.
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct Check {
    pub checked: u64,
    pub mismatches: u64,
}

/// Runs `load` against `url` on `cpus`, returning the script's summary and, for the check
/// script, its id check.
pub fn run(load: &Load, url: &str, cpus: Cpus) -> anyhow::Result<(Summary, Option<Check>)> {
    run_under(&[], load, url, cpus)
}

/// [`run`], with wrk started by the command `prefix` (such as `perf stat ... --`), which must
/// run it and exit with its status; an empty `prefix` starts wrk itself.
pub fn run_under(
    prefix: &[String],
    load: &Load,
    url: &str,
    cpus: Cpus,
) -> anyhow::Result<(Summary, Option<Check>)> {
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut cmd = Command::new(program);
            cmd.args(args).arg("wrk");
            cmd
        }
        None => Command::new("wrk"),
    };
    cmd.arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", load.seconds))
        .arg("-s")
        .arg(&load.script)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut wrk = Proc::spawn("wrk", cmd, cpus)?;
    // wrk writes a few hundred bytes: the pipe cannot fill before it exits.
    let status = wrk.wait(Duration::from_secs(load.seconds.into()) + OVERRUN)?;
    let mut out = String::new();
    wrk.take_stdout()
        .context("wrk stdout is not piped")?
        .read_to_string(&mut out)?;
    ensure!(status.success(), "wrk {status}:\n{out}");
    parse(&out).with_context(|| format!("wrk output:\n{out}"))
}

fn parse(out: &str) -> anyhow::Result<(Summary, Option<Check>)> {
    let summary = tagged_line(out, "bench-result ").context("no bench-result line")?;
    let check = tagged_line(out, "bench-check ");
    Ok((
        serde_json::from_str(summary)?,
        check.map(serde_json::from_str).transpose()?,
    ))
}

fn tagged_line<'a>(out: &'a str, tag: &str) -> Option<&'a str> {
    out.lines().find_map(|line| line.strip_prefix(tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_script_lines_among_wrk_output() {
        let out = "Running 2s test @ http://127.0.0.1:1/\n  1 threads and 4 connections\n\
            bench-result {\"requests\":100,\"duration_us\":2000000,\"p50_us\":281,\"p99_us\":2450,\
            \"p999_us\":4890,\"socket_errors\":1,\"non_2xx\":2}\n\
            bench-check {\"checked\":98,\"mismatches\":0}\n";
        let (summary, check) = parse(out).unwrap();
        assert_eq!(
            (summary.requests, summary.p999_us, summary.non_2xx),
            (100, 4890, 2)
        );
        assert_eq!(summary.requests_per_s(), 50.0);
        assert_eq!(
            check,
            Some(Check {
                checked: 98,
                mismatches: 0
            })
        );
    }

    #[test]
    fn the_check_line_is_optional_the_result_line_is_not() {
        let out = "bench-result {\"requests\":1,\"duration_us\":1,\"p50_us\":1,\"p99_us\":1,\
                   \"p999_us\":1,\"socket_errors\":0,\"non_2xx\":0}\n";
        assert_eq!(parse(out).unwrap().1, None);
        assert!(parse("Requests/sec: 1\n").is_err());
    }
}

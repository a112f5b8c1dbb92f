//! `splitter reload -c FILE --pid PID`: reloads a running splitter and waits until it has.
//!
//! `SIGHUP` alone returns at once, before the process has read the file; systemd's
//! `Type=notify-reload`, which waits for `RELOADING=1` and `READY=1`, came in systemd 253, after
//! Debian 12's. So the unit's `ExecReload` runs this instead of `kill -HUP`: the file is checked
//! first (a bad one fails the reload here, loudly, and the process is not signalled), then
//! `SIGHUP` goes to PID, and the command waits for `splitter_reloads_total` on the admin port to
//! count it, as applied (exit 0) or refused (exit 1). `systemctl reload` then returns once the
//! new configuration is the running one, or fails. When the file names an admin port the process
//! does not listen on (an edit of `admin_listen`, which applies at the next restart), the signal
//! is sent all the same and the command warns that it cannot confirm it.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::config::Config;

/// How long one scrape of the admin port may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the admin port is asked while waiting.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// `splitter reload` arguments.
#[derive(clap::Args, Debug)]
pub struct ReloadArgs {
    /// The configuration file the process runs with (read for `admin_listen`, and checked).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// The process to reload (systemd: `$MAINPID`).
    #[arg(long)]
    pub pid: i32,
    /// How long to wait for the reload to be counted.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    pub timeout: u64,
}

/// Reloads the process and waits for the outcome.
pub fn run(args: ReloadArgs) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    let admin = loopback_if_unspecified(config.admin_listen);
    // The file's admin address is the process's unless the edit changed it (a restart-only
    // key): then the reload is still sent, only not confirmed.
    let before = reloads(admin);
    // A stale or mistyped PID must not have SIGHUP, which ends most programs, sent to another.
    let command = std::fs::read(format!("/proc/{}/cmdline", args.pid))
        .map_err(|e| anyhow::anyhow!("no process {}: {e}", args.pid))?;
    if !is_splitter_run(&command) {
        bail!(
            "process {} is not a running splitter (its command: `{}`); not signalled",
            args.pid,
            String::from_utf8_lossy(&command)
                .replace('\0', " ")
                .trim_end()
        );
    }
    // SAFETY: kill(2) with a plain signal number; no memory is involved.
    if unsafe { libc::kill(args.pid, libc::SIGHUP) } != 0 {
        let e = std::io::Error::last_os_error();
        bail!("cannot signal process {}: {e}", args.pid);
    }
    let before = match before {
        Ok(before) => before,
        Err(e) => {
            eprintln!(
                "warning: sent SIGHUP to process {} but cannot confirm the reload: no metrics on \
                 {admin} (`admin_listen` in {}; a changed one applies at the next restart): {e:#}",
                args.pid,
                args.config.display()
            );
            return Ok(());
        }
    };
    let until = Instant::now() + Duration::from_secs(args.timeout);
    loop {
        std::thread::sleep(POLL_EVERY);
        // A scrape may fail while the process is busy: only the deadline ends the wait.
        if let Ok(now) = reloads(admin) {
            if now.refused > before.refused {
                bail!(
                    "process {} refused {}: its running configuration stays (its log says why)",
                    args.pid,
                    args.config.display()
                );
            }
            if now.applied > before.applied {
                match now.restart_keys.as_slice() {
                    [] => println!("{}: reloaded", args.config.display()),
                    keys => println!(
                        "{}: reloaded; these changed keys apply only at the next restart: {}",
                        args.config.display(),
                        keys.join(", ")
                    ),
                }
                return Ok(());
            }
        }
        if Instant::now() > until {
            bail!(
                "process {} did not report a reload on {admin} within {} s",
                args.pid,
                args.timeout
            );
        }
    }
}

/// Whether a `/proc/PID/cmdline` is a `splitter run`: a program named `splitter...` (as
/// installed, or a build of it) with the `run` subcommand.
fn is_splitter_run(cmdline: &[u8]) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    let program = args.next().unwrap_or_default();
    let name = program.rsplit(|&b| b == b'/').next().unwrap_or_default();
    name.starts_with(b"splitter") && args.any(|a| a == b"run")
}

/// A listener on every address is reached on the loopback one.
fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// The reload counters of `splitter_reloads_total`, and the keys waiting for a restart.
#[derive(Debug, Default, PartialEq, Eq, Clone)]
struct Reloads {
    applied: u64,
    refused: u64,
    /// Keys changed in the file that only a restart applies.
    restart_keys: Vec<String>,
}

/// Scrapes `/metrics` on the admin port for the reload counters.
fn reloads(admin: SocketAddr) -> anyhow::Result<Reloads> {
    let mut stream = TcpStream::connect_timeout(&admin, SCRAPE_TIMEOUT)?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: splitter\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        bail!(
            "GET /metrics: {}",
            text.lines().next().unwrap_or("no answer")
        );
    }
    Ok(parse_reloads(&text))
}

/// The `success` and `failure` samples of `splitter_reloads_total` in a Prometheus text page,
/// and the keys of `splitter_config_restart_pending`.
fn parse_reloads(text: &str) -> Reloads {
    let mut r = Reloads::default();
    for line in text.lines() {
        if let Some(key) = line
            .strip_prefix("splitter_config_restart_pending{key=\"")
            .and_then(|rest| rest.split_once('"'))
        {
            r.restart_keys.push(key.0.to_owned());
            continue;
        }
        let Some(rest) = line.strip_prefix("splitter_reloads_total{result=\"") else {
            continue;
        };
        let Some((result, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let value = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        match result {
            "success" => r.applied = value,
            "failure" => r.refused = value,
            _ => {}
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_the_page() {
        let page = "# HELP splitter_reloads_total Reloads\n\
                    # TYPE splitter_reloads_total counter\n\
                    splitter_reloads_total{result=\"success\"} 3\n\
                    splitter_reloads_total{result=\"failure\"} 1\n\
                    splitter_config_restart_pending{key=\"workers\"} 1\n\
                    splitter_config_restart_pending{key=\"listen\"} 1\n\
                    splitter_requests_total 9\n";
        assert_eq!(
            parse_reloads(page),
            Reloads {
                applied: 3,
                refused: 1,
                restart_keys: vec!["workers".into(), "listen".into()],
            }
        );
        assert_eq!(parse_reloads("nothing"), Reloads::default());
    }

    #[test]
    fn only_a_splitter_run_is_signalled() {
        for yes in [
            &b"/usr/bin/splitter\0run\0-c\0/etc/splitter/splitter.toml\0"[..],
            b"splitter\0run\0-c\0x.toml\0",
            b"/work/target/debug/splitter\0run\0--config\0x\0",
        ] {
            assert!(is_splitter_run(yes), "{yes:?}");
        }
        for no in [
            &b"sleep\x0030\0"[..],
            b"/usr/bin/splitter\0mock-backend\0--listen\0x\0",
            b"/bin/run\0splitter\0",
            b"",
        ] {
            assert!(!is_splitter_run(no), "{no:?}");
        }
    }

    #[test]
    fn an_admin_port_on_every_address_is_asked_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8405".parse().unwrap();
        assert_eq!(
            loopback_if_unspecified(any),
            "127.0.0.1:8405".parse().unwrap()
        );
        let any6: SocketAddr = "[::]:8405".parse().unwrap();
        assert_eq!(loopback_if_unspecified(any6), "[::1]:8405".parse().unwrap());
        let one: SocketAddr = "10.0.0.1:8405".parse().unwrap();
        assert_eq!(loopback_if_unspecified(one), one);
    }
}

//! Starting what one run measures: the mock backends, then the splitter, HAProxy or nothing in
//! front of them; each waited for with a bounded readiness check.

use crate::bench::plan::{Pinning, Scenario, Target};
use crate::bench::proc::{self, Cpus, Proc};
use anyhow::{bail, Context};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a process may take to print its address or accept a connection.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of a process's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 20;
/// The mock backends' names, in order: as many as a route may fan out to.
const BACKEND_NAMES: [&str; 16] = [
    "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m", "n", "o", "p",
];

/// What every deployment needs: the binaries and where to put configurations and logs.
pub struct Env {
    pub splitter_bin: PathBuf,
    /// How it was built ([`crate::build::Release::kind`]).
    pub splitter_build: &'static str,
    pub work_dir: PathBuf,
    pub nproc: usize,
    /// Environment variables of the splitter and mock processes (a profiling run's
    /// `LLVM_PROFILE_FILE`).
    pub child_env: Vec<(OsString, OsString)>,
}

/// The processes of one run. Fields drop in declaration order: the front (splitter or
/// HAProxy) stops before the backends it forwards to.
pub struct Deployment {
    front: Option<Proc>,
    mocks: Vec<Mock>,
    /// Where the load goes: the front's listener, or the lone backend's.
    pub listen: SocketAddr,
    /// The splitter's admin listener, for `/metrics`.
    pub admin: Option<SocketAddr>,
}

struct Mock {
    proc: Proc,
    addr: SocketAddr,
}

impl Deployment {
    /// Starts `target` for `scenario`: the splitter in front of the scenario's backends,
    /// HAProxy in front of one, or one backend alone.
    pub fn start(
        env: &Env,
        scenario: Scenario,
        pinning: Pinning,
        target: Target,
    ) -> anyhow::Result<Deployment> {
        Deployment::start_with(env, scenario, pinning, target, "")
    }

    /// [`Deployment::start`], with `extra` top-level keys (TOML lines) in the splitter's
    /// configuration.
    pub fn start_with(
        env: &Env,
        scenario: Scenario,
        pinning: Pinning,
        target: Target,
        extra: &str,
    ) -> anyhow::Result<Deployment> {
        let backends = match target.splitter_io() {
            Some(_) => scenario.backends(),
            None => 1,
        };
        let mocks = start_mocks(env, backends, scenario.mock_flags(), pinning.load_cpus())?;
        let addrs: Vec<SocketAddr> = mocks.iter().map(|m| m.addr).collect();
        let (front, listen, admin) = match target {
            Target::SplitterUring | Target::SplitterEpoll => {
                let io = target.splitter_io().unwrap_or("auto");
                let (p, listen, admin) =
                    start_splitter(env, &addrs, scenario, pinning, io, None, extra)?;
                (Some(p), listen, Some(admin))
            }
            Target::Haproxy => {
                let (p, listen) = start_haproxy(env, addrs[0], pinning)?;
                (Some(p), listen, None)
            }
            Target::Direct => (None, addrs[0], None),
        };
        Ok(Deployment {
            front,
            mocks,
            listen,
            admin,
        })
    }

    /// The splitter (one worker per CPU, steered as `steering` says, the fast scenario's
    /// deadline) in front of two backends run with `mock_flags`.
    pub fn start_steered(
        env: &Env,
        mock_flags: &[&str],
        steering: &Steering,
    ) -> anyhow::Result<Deployment> {
        let mocks = start_mocks(env, 2, mock_flags, Cpus::Any)?;
        let addrs: Vec<SocketAddr> = mocks.iter().map(|m| m.addr).collect();
        let (front, listen, admin) = start_splitter(
            env,
            &addrs,
            Scenario::Fast,
            Pinning::Unpinned,
            "auto",
            Some(steering),
            "",
        )?;
        Ok(Deployment {
            front: Some(front),
            mocks,
            listen,
            admin: Some(admin),
        })
    }

    /// The URL wrk loads.
    pub fn url(&self) -> String {
        format!("http://{}/", self.listen)
    }

    /// The process whose CPU time and memory the run reports: the front, or the lone backend.
    pub fn measured(&self) -> &Proc {
        self.front.as_ref().unwrap_or(&self.mocks[0].proc)
    }

    /// Fails if any process of the deployment has died.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        let mocks = self.mocks.iter_mut().map(|m| &mut m.proc);
        self.front
            .iter_mut()
            .chain(mocks)
            .try_for_each(Proc::ensure_running)
    }
}

/// Starts `count` mock backends (at most 16), named `a`, `b`, ... `p`.
fn start_mocks(env: &Env, count: usize, flags: &[&str], cpus: Cpus) -> anyhow::Result<Vec<Mock>> {
    let names = BACKEND_NAMES
        .get(..count)
        .with_context(|| format!("{count} backends: at most {}", BACKEND_NAMES.len()))?;
    names
        .iter()
        .map(|name| {
            let spec = MockSpec {
                name,
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                flags,
                cpus,
                nice: None,
                append_log: false,
            };
            let (proc, addr) = spawn_mock(env, &spec)?;
            Ok(Mock { proc, addr })
        })
        .collect()
}

/// One `splitter mock-backend` process to start.
pub struct MockSpec<'a> {
    /// Its `--name`, also naming its log, `mock-NAME.log`.
    pub name: &'a str,
    /// Port 0 for any free one.
    pub listen: SocketAddr,
    pub flags: &'a [&'a str],
    pub cpus: Cpus,
    /// Run at nice value N (whatever this process's own is).
    pub nice: Option<i32>,
    /// Append to the log rather than start it anew: a backend restarted many times.
    pub append_log: bool,
}

/// Starts `splitter mock-backend` as `spec` says and reads back the address it bound.
pub fn spawn_mock(env: &Env, spec: &MockSpec) -> anyhow::Result<(Proc, SocketAddr)> {
    let name = spec.name;
    let mut cmd = match spec.nice {
        // nice execs the mock: the PID held is the mock's. Its -n is relative to our own.
        Some(n) => {
            let mut cmd = Command::new("nice");
            cmd.arg("-n")
                .arg((n - proc::own_nice()).to_string())
                .arg(&env.splitter_bin);
            cmd
        }
        None => Command::new(&env.splitter_bin),
    };
    let log = format!("mock-{name}");
    let log = match spec.append_log {
        true => append_log_file(env, &log)?,
        false => log_file(env, &log)?,
    };
    cmd.args([
        "mock-backend",
        "--listen",
        &spec.listen.to_string(),
        "--name",
        name,
    ])
    .args(spec.flags)
    .envs(env.child_env.iter().map(|(k, v)| (k, v)))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(log);
    let mut proc = Proc::spawn(&format!("mock backend {name}"), cmd, spec.cpus)?;
    let addr = read_listening_address(&mut proc)?;
    Ok((proc, addr))
}

/// Waits for the mock's `listening on ADDR` line. A thread reads the pipe, so the wait can be
/// bounded, and keeps draining it afterwards so the mock can never block writing to it.
fn read_listening_address(proc: &mut Proc) -> anyhow::Result<SocketAddr> {
    let stdout = proc.take_stdout().context("mock stdout is not piped")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        if let Some(first) = lines.next() {
            let _ = tx.send(first);
        }
        lines.for_each(drop);
    });
    let end = Instant::now() + READY_TIMEOUT;
    loop {
        proc::check_interrupted()?;
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                let addr = line.strip_prefix("listening on ").unwrap_or(&line);
                return addr
                    .parse()
                    .with_context(|| format!("{}: unexpected first line {line:?}", proc.name()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                proc.ensure_running()?;
                bail!("{} closed stdout without an address", proc.name());
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > end => {
                bail!("{} printed no address in {READY_TIMEOUT:?}", proc.name())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Starts `splitter run` in front of `backends` (named `a`, `b`, ... as the mocks are) with
/// `scenario`'s deadline; returns it with its listen and admin addresses.
fn start_splitter(
    env: &Env,
    backends: &[SocketAddr],
    scenario: Scenario,
    pinning: Pinning,
    io: &str,
    steering: Option<&Steering>,
    extra: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let backends = named_backends(backends);
    let spec = SplitterSpec {
        backends: &backends,
        workers: pinning.target_threads(env.nproc),
        io,
        route_timeout_ms: scenario.route_timeout_ms(),
        steering,
        extra,
        select_field: scenario.select_field(),
        cpus: pinning.target_cpus(),
    };
    launch_splitter(env, &spec)
}

/// The backends' addresses with their names, `a`, `b`, ...; at most 16, as [`start_mocks`]
/// starts.
fn named_backends(addrs: &[SocketAddr]) -> Vec<(String, SocketAddr)> {
    assert!(addrs.len() <= BACKEND_NAMES.len(), "at most 16 backends");
    BACKEND_NAMES
        .iter()
        .zip(addrs)
        .map(|(name, addr)| (name.to_string(), *addr))
        .collect()
}

/// How to run one splitter.
pub struct SplitterSpec<'a> {
    /// Names and addresses.
    pub backends: &'a [(String, SocketAddr)],
    pub workers: usize,
    /// `auto`, `uring` or `epoll`.
    pub io: &'a str,
    /// The deadline of route `/`, the only one.
    pub route_timeout_ms: u64,
    /// The default steering unless set.
    pub steering: Option<&'a Steering<'a>>,
    /// More top-level keys, as TOML lines.
    pub extra: &'a str,
    /// `[select] field`, when not the default.
    pub select_field: Option<&'a str>,
    pub cpus: Cpus,
}

/// Starts `splitter run` as `spec` says on free ports; returns it with its listen and admin
/// addresses, once both accept. A port taken between finding it and binding it (by a
/// connection's ephemeral port) means new ports and another start, twice at most.
pub fn launch_splitter(
    env: &Env,
    spec: &SplitterSpec,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let mut attempt = 1;
    loop {
        match try_launch_splitter(env, spec) {
            Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                eprintln!("splitter: a port was taken before it bound it; new ports");
                attempt += 1;
            }
            started => return started,
        }
    }
}

fn try_launch_splitter(
    env: &Env,
    spec: &SplitterSpec,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let [listen, admin] = free_ports()?;
    let config = splitter_config(listen, admin, spec);
    let path = env.work_dir.join("splitter.toml");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = Command::new(&env.splitter_bin);
    cmd.envs(env.child_env.iter().map(|(k, v)| (k, v)))
        .arg("run")
        .arg("-c")
        .arg(&path)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(env, "splitter")?);
    let mut proc = Proc::spawn("splitter", cmd, spec.cpus)?;
    for addr in [listen, admin] {
        wait_for_tcp(&mut proc, addr, &log_path(env, "splitter"))?;
    }
    Ok((proc, listen, admin))
}

/// The splitter's `[steering]` section.
pub struct Steering<'a> {
    /// `auto`, `ebpf` or `reuseport`.
    pub mode: &'a str,
    pub pin_dir: &'a Path,
}

/// The splitter's configuration: route `/` with the spec's deadline and selection field, warnings only in the log
/// so logging stays off the measured path; the default steering unless the spec says.
fn splitter_config(listen: SocketAddr, admin: SocketAddr, spec: &SplitterSpec) -> String {
    let (workers, io) = (spec.workers, spec.io);
    let mut config = format!(
        "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = {workers}\n\
         io = \"{io}\"\nlog_level = \"warn\"\n{}",
        spec.extra
    );
    if let Some(field) = spec.select_field {
        config += &format!("\n[select]\nfield = \"{field}\"\n");
    }
    for (name, addr) in spec.backends {
        config += &format!("\n[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n");
    }
    config += &format!(
        "\n[[route]]\npath_prefix = \"/\"\ntimeout_ms = {}\n",
        spec.route_timeout_ms
    );
    if let Some(s) = spec.steering {
        config += &format!(
            "\n[steering]\nmode = \"{}\"\npin_dir = \"{}\"\n",
            s.mode,
            s.pin_dir.display()
        );
    }
    config
}

/// Starts Debian's HAProxy forwarding to `backend`; returns it with its listen address.
fn start_haproxy(
    env: &Env,
    backend: SocketAddr,
    pinning: Pinning,
) -> anyhow::Result<(Proc, SocketAddr)> {
    let listen = free_port()?;
    let config = haproxy_config(listen, backend, pinning.target_threads(env.nproc));
    let path = env.work_dir.join("haproxy.cfg");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db") // foreground: the PID we hold is the one serving
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(env, "haproxy")?);
    let mut proc = Proc::spawn("haproxy", cmd, pinning.target_cpus())?;
    wait_for_tcp(&mut proc, listen, &log_path(env, "haproxy"))?;
    Ok((proc, listen))
}

/// HAProxy set up as the splitter's users would put it in front of one backend: keep-alive on
/// both sides, server connections reused across clients, no logging.
fn haproxy_config(listen: SocketAddr, backend: SocketAddr, threads: usize) -> String {
    format!(
        "global
    nbthread {threads}
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 1s
    timeout client 30s
    timeout server 30s

frontend bench
    bind {listen}
    default_backend mock

backend mock
    server mock {backend}
"
    )
}

/// A free loopback port. Another process could take it before the target binds it; on this
/// dedicated benchmark machine that race is not worth a protocol to close.
fn free_port() -> anyhow::Result<SocketAddr> {
    let [port] = free_ports()?;
    Ok(port)
}

/// `N` distinct free loopback ports: each is held while the next is found, or the kernel may
/// hand the same one out twice (it did: the splitter then found its admin port taken by its
/// own listener).
fn free_ports<const N: usize>() -> anyhow::Result<[SocketAddr; N]> {
    let held = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").context("finding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut ports = [SocketAddr::from(([127, 0, 0, 1], 0)); N];
    for (port, listener) in ports.iter_mut().zip(&held) {
        *port = listener.local_addr()?;
    }
    Ok(ports)
}

/// Waits until `addr` accepts a connection, failing early (with its log) if `proc` dies.
fn wait_for_tcp(proc: &mut Proc, addr: SocketAddr, log: &Path) -> anyhow::Result<()> {
    let end = Instant::now() + READY_TIMEOUT;
    loop {
        proc.ensure_running()
            .with_context(|| format!("log {}:\n{}", log.display(), log_tail(log)))?;
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        if Instant::now() > end {
            bail!(
                "{} does not accept on {addr} after {READY_TIMEOUT:?}; log {}:\n{}",
                proc.name(),
                log.display(),
                log_tail(log)
            );
        }
        proc::sleep(Duration::from_millis(20))?;
    }
}

fn log_path(env: &Env, name: &str) -> PathBuf {
    env.work_dir.join(format!("{name}.log"))
}

fn log_file(env: &Env, name: &str) -> anyhow::Result<std::fs::File> {
    let path = log_path(env, name);
    std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
}

fn append_log_file(env: &Env, name: &str) -> anyhow::Result<std::fs::File> {
    let path = log_path(env, name);
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// The splitter's `/metrics` text.
pub fn scrape_metrics(admin: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&admin, READY_TIMEOUT)?;
    stream.set_read_timeout(Some(READY_TIMEOUT))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    stream
        .read_to_string(&mut text)
        .with_context(|| format!("reading http://{admin}/metrics"))?;
    Ok(text)
}

/// The value of the sample named exactly `series` (name and labels) in Prometheus text.
pub fn metric(text: &str, series: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_matches_the_whole_series() {
        let text = "# TYPE x counter\nsplitter_responses_total{status=\"204\"} 7\n\
                    splitter_responses_total{status=\"2040\"} 9\n";
        assert_eq!(
            metric(text, "splitter_responses_total{status=\"204\"}"),
            Some(7)
        );
        assert_eq!(metric(text, "splitter_requests_total"), None);
    }

    fn spec<'a>(backends: &'a [(String, SocketAddr)], io: &'a str) -> SplitterSpec<'a> {
        SplitterSpec {
            backends,
            workers: 1,
            io,
            route_timeout_ms: Scenario::Deadline.route_timeout_ms(),
            steering: None,
            extra: "",
            select_field: None,
            cpus: Cpus::Any,
        }
    }

    #[test]
    fn splitter_config_names_both_backends_and_the_deadline() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let backends = [("a".to_string(), a), ("b".to_string(), b)];
        let c = splitter_config(a, b, &spec(&backends, "epoll"));
        assert!(c.contains("io = \"epoll\""));
        assert!(c.contains("name = \"b\"\naddress = \"127.0.0.1:2\""));
        assert!(c.contains("timeout_ms = 80"));
        assert!(!c.contains("[steering]"));
        assert!(!c.contains("[select]"));
        let openrtb = SplitterSpec {
            route_timeout_ms: Scenario::OpenRtb.route_timeout_ms(),
            select_field: Scenario::OpenRtb.select_field(),
            ..spec(&backends, "uring")
        };
        let c = splitter_config(a, b, &openrtb);
        assert!(c.contains("[select]\nfield = \"/seatbid/*/bid/*/price\"\n"));
        assert!(c.contains("timeout_ms = 450"));
    }

    #[test]
    fn splitter_config_lists_all_sixteen_backends() {
        let addrs: Vec<SocketAddr> = (1..=16)
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        let backends = named_backends(&addrs);
        assert_eq!(backends.len(), 16);
        let c = splitter_config(addrs[0], addrs[1], &spec(&backends, "uring"));
        assert_eq!(c.matches("[[backend]]").count(), 16);
        assert!(c.contains("name = \"a\"\naddress = \"127.0.0.1:1\""));
        assert!(c.contains("name = \"p\"\naddress = \"127.0.0.1:16\""));
        assert_eq!(named_backends(&addrs[..4]).last().unwrap().0, "d");
    }

    #[test]
    fn splitter_config_has_the_steering_asked_for() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let steering = Steering {
            mode: "ebpf",
            pin_dir: Path::new("/sys/fs/bpf/x"),
        };
        let backends = [("a".to_string(), a)];
        let c = splitter_config(
            a,
            a,
            &SplitterSpec {
                steering: Some(&steering),
                ..spec(&backends, "auto")
            },
        );
        assert!(c.ends_with("[steering]\nmode = \"ebpf\"\npin_dir = \"/sys/fs/bpf/x\"\n"));
    }

    #[test]
    fn splitter_config_extra_keys_are_top_level() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let backends = [("x".to_string(), a)];
        let extra = "eject_after = 5\n";
        let c = splitter_config(
            a,
            a,
            &SplitterSpec {
                extra,
                ..spec(&backends, "auto")
            },
        );
        let (top, _) = c.split_once("[[backend]]").unwrap();
        assert!(
            top.ends_with("log_level = \"warn\"\neject_after = 5\n\n"),
            "{c}"
        );
    }
}

//! The binary under test and what it runs as: `splitter run` on a configuration file,
//! `splitter mock-backend`, and any other command line run to completion.

use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::client::{self, Client};
use crate::host::TempDir;
use crate::http::Response;
use crate::metrics::Metrics;
use crate::process::{spawn_logged, strip_ansi, LineLog, ProcGuard, READY_TIMEOUT};

/// A `splitter` executable. Cargo tells where it built it only to the package's integration
/// tests (`env!("CARGO_BIN_EXE_splitter")`), which hand it over in one constant.
#[derive(Clone, Copy, Debug)]
pub struct Binary(&'static str);

impl Binary {
    pub const fn new(path: &'static str) -> Binary {
        Binary(path)
    }

    pub fn path(self) -> &'static Path {
        Path::new(self.0)
    }

    /// `splitter mock-backend --listen 127.0.0.1:0 --name NAME ARGS...`, once it listens.
    pub fn mock_backend(self, name: &str, args: &[&str]) -> Mock {
        let (proc, log) = spawn_logged(
            Command::new(self.0)
                .args(["mock-backend", "--listen", "127.0.0.1:0", "--name", name])
                .args(args),
        );
        let line = log
            .wait_line(0, READY_TIMEOUT, |l| l.starts_with("listening on "))
            .unwrap_or_else(|| {
                panic!(
                    "mock-backend {name} {args:?} never printed `listening on`:\n{}",
                    log.text()
                )
            });
        let addr = line["listening on ".len()..].trim();
        Mock {
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("mock-backend address {addr:?}: {e}")),
            name: name.to_string(),
            _proc: proc,
        }
    }

    /// Writes `config` to a file, with the I/O shell `SPLITTER_TEST_IO` names unless it picks
    /// one, and starts `splitter run -c FILE` on it; returns once it logs `splitter started`.
    pub fn run(self, config: &str) -> Splitter {
        self.run_with(config, |_| {})
    }

    /// [`Binary::run`], with `customize` applied to the command before it is spawned: more
    /// environment, or a `pre_exec` that lowers a resource limit in the child.
    pub fn run_with(self, config: &str, customize: impl FnOnce(&mut Command)) -> Splitter {
        let dir = TempDir::new("run");
        let config = with_io_shell(config);
        let config_path = dir.write("splitter.toml", &config);
        let mut cmd = Command::new(self.0);
        cmd.arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        customize(&mut cmd);
        let (proc, logs) = spawn_logged(&mut cmd);
        let Some(line) = logs.wait_line(0, READY_TIMEOUT, |l| l.contains("splitter started"))
        else {
            panic!(
                "splitter never logged `splitter started`; config:\n{config}\noutput:\n{}",
                logs.text()
            )
        };
        let addr = |key: &str| -> SocketAddr {
            log_field(&line, key)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {key}= address in the start line: {line:?}"))
        };
        Splitter {
            addr: addr("listen"),
            admin: addr("admin"),
            dir,
            config_path,
            logs,
            proc,
        }
    }

    /// Runs `splitter ARGS` to completion (bounded): its status, stdout and stderr.
    pub fn cli(self, args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
        let child = Command::new(self.0)
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn splitter");
        let mut guard = ProcGuard::new(child);
        let mut out = guard.child.stdout.take().unwrap();
        let mut err = guard.child.stderr.take().unwrap();
        // Both pipes drained while it runs, so a long output cannot block it.
        let t_out = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = out.read_to_end(&mut s);
            s
        });
        let t_err = thread::spawn(move || {
            let mut s = Vec::new();
            let _ = err.read_to_end(&mut s);
            s
        });
        let status = guard
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("`splitter {args:?}` did not exit within {timeout:?}"));
        let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
        let err = strip_ansi(&String::from_utf8_lossy(&t_err.join().unwrap()));
        (status, out, err)
    }
}

/// A running `splitter mock-backend`.
pub struct Mock {
    pub addr: SocketAddr,
    pub name: String,
    _proc: ProcGuard,
}

/// Builds a config file: `listen` and `admin_listen` on 127.0.0.1:0, the `top` lines (top-level
/// keys), the `select` lines (inside `[select]`, omitted when empty), then backends and routes.
pub fn config(
    top: &str,
    select: &str,
    backends: &[(&str, SocketAddr)],
    routes: &[(&str, u64)],
) -> String {
    let backends: Vec<(&str, SocketAddr, &str)> = backends
        .iter()
        .map(|&(name, addr)| (name, addr, ""))
        .collect();
    config_with_backend_keys(top, select, &backends, routes)
}

/// [`config`], with more lines in each backend's table: `(name, address, lines)`, the lines
/// (`eject_after = 3\nhealth_path = "/health"`) right after its address; empty for none.
pub fn config_with_backend_keys(
    top: &str,
    select: &str,
    backends: &[(&str, SocketAddr, &str)],
    routes: &[(&str, u64)],
) -> String {
    let mut s = String::from("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    s.push_str(top);
    s.push('\n');
    if !select.is_empty() {
        s.push_str("[select]\n");
        s.push_str(select);
        s.push('\n');
    }
    for (name, addr, lines) in backends {
        s.push_str(&format!(
            "[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
        if !lines.is_empty() {
            s.push_str(lines);
            s.push('\n');
        }
    }
    for (prefix, ms) in routes {
        s.push_str(&format!(
            "[[route]]\npath_prefix = \"{prefix}\"\ntimeout_ms = {ms}\n"
        ));
    }
    s
}

/// The black-box suites run once per I/O shell: `SPLITTER_TEST_IO=epoll` (or `uring`) puts
/// `io = "..."` at the top of every configuration that does not choose one itself.
fn with_io_shell(config: &str) -> String {
    match std::env::var("SPLITTER_TEST_IO") {
        Ok(io) if !config.lines().any(|l| l.trim_start().starts_with("io =")) => {
            format!("io = \"{io}\"\n{config}")
        }
        _ => config.to_string(),
    }
}

/// Value of `key=value` in a tracing text log line.
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|tok| tok.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim_matches('"'))
}

/// A running `splitter run -c FILE`.
pub struct Splitter {
    /// The client listener.
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    dir: TempDir,
    config_path: PathBuf,
    /// Its output so far: stderr has the log.
    logs: LineLog,
    pub proc: ProcGuard,
}

impl Splitter {
    /// The process id, for `/proc` ([`crate::procfs`]).
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends one request on a fresh connection and reads its response.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut c = self.client();
        c.send(raw);
        c.read_response()
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        client::get(self.admin, path).unwrap_or_else(|e| panic!("GET {path} on admin: {e}"))
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::scrape(self.admin).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Polls `/metrics` until `pred` holds (bounded); returns the last scrape.
    pub fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let until = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) || Instant::now() >= until {
                return m;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The file it runs with.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config_path
    }

    pub fn signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// Replaces the configuration file at once (rename), for a SIGHUP to read.
    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.dir.path.join("splitter.toml.new");
        std::fs::write(&tmp, with_io_shell(config)).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn log_snapshot(&self) -> Vec<String> {
        self.logs.snapshot()
    }

    pub fn log_count(&self) -> usize {
        self.logs.count()
    }

    /// Waits until a log line at index `from` or later satisfies `pred`; returns it.
    pub fn wait_log(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.logs.wait_line(from, timeout, pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_line_fields() {
        let line =
            "INFO splitter started listen=127.0.0.1:8080 admin=\"127.0.0.1:9090\" io=\"uring\"";
        assert_eq!(log_field(line, "listen"), Some("127.0.0.1:8080"));
        assert_eq!(log_field(line, "admin"), Some("127.0.0.1:9090"));
        assert_eq!(log_field(line, "io"), Some("uring"));
        assert_eq!(log_field(line, "lis"), None);
    }

    #[test]
    fn config_sections_in_order() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let c = config("workers = 2", "field = \"/p\"", &[("a", a)], &[("/x", 80)]);
        assert_eq!(
            c,
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nworkers = 2\n\
             [select]\nfield = \"/p\"\n\
             [[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\n\
             [[route]]\npath_prefix = \"/x\"\ntimeout_ms = 80\n"
        );
        assert!(!config("", "", &[], &[]).contains("[select]"));
        let c = config_with_backend_keys("", "", &[("a", a, "eject_after = 3")], &[("/", 80)]);
        assert_eq!(
            c,
            "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\n\
             [[backend]]\nname = \"a\"\naddress = \"127.0.0.1:1\"\neject_after = 3\n\
             [[route]]\npath_prefix = \"/\"\ntimeout_ms = 80\n"
        );
    }
}

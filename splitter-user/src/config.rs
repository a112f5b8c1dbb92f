//! The configuration file (SPEC 6): TOML to a validated [`Config`].
//!
//! Owns the keys, their defaults and every check; it does not apply anything. `splitter check`
//! and a `SIGHUP` reload use the same [`Config::load`], so a file that passes `check` reloads.
//! The only I/O is reading the file and resolving backend host names.
//!
//! Every [`ConfigError`] names the file and the key (`route[1].timeout_ms`, `select.prefer`):
//! serde's errors get their key path from `serde_path_to_error`, syntax errors from the line
//! they point at, and validation errors from the check that failed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use splitter_common::{MAX_BACKENDS, MAX_ROUTES, MAX_WORKERS};

use crate::scatter::route::Route;
use crate::scatter::select::{Prefer, Selection, Selector};

/// A complete, commented configuration: what `splitter demo` runs and `cargo xtask install`
/// ships. Every key is present with its default, except `listen`, `[[backend]]` and `[[route]]`,
/// which have none.
pub const DEFAULT_CONFIG: &str = r#"# splitter configuration (TOML). Every key but `listen`, [[backend]] and [[route]] has the
# default shown. Check a file with `splitter check -c FILE`; SIGHUP reloads backends, routes and
# select without dropping connections.

listen = "127.0.0.1:8080"          # client-facing listener: an IP address and a port
admin_listen = "127.0.0.1:8405"    # GET /metrics (Prometheus text), GET /healthz
workers = 0                        # data-plane threads; 0 = one per online CPU
max_request_body = 262144          # bytes; a larger body gets 413
max_header_bytes = 16384           # request line plus headers; larger gets 431
max_in_flight = 100000             # requests in progress, whole process; more get 503
header_timeout_ms = 10000          # a client slower than this to send its request head is dropped
idle_timeout_ms = 60000            # an idle client connection is closed after this
log_level = "info"                 # tracing EnvFilter syntax, e.g. "info,splitter_user=debug"
log_format = "text"                # "text" | "json"
io = "auto"                        # "auto" | "uring" | "epoll"; auto = io_uring where the kernel allows
send_timeout_ms = 10000            # a client that does not take a response within this is dropped
max_response_bytes = 1048576       # most bytes of one backend reply, on the wire and decoded
backend_idle_timeout_ms = 4000     # idle pooled backend connections are closed after this
dns_refresh_s = 30                 # backend host names are resolved again this often
handover_socket = "/run/splitter/handover.sock"  # a restart takes the sockets over here; "" = off
# Defaults of the per-backend keys of the same names (a [[backend]] may set its own):
eject_after = 0                    # consecutive errors/timeouts that eject a backend; 0 = never
max_connections = 1024             # connections per backend per worker; none free = `overloaded`

[select]
field = "/price"                   # JSON Pointer (RFC 6901) to the number in each backend response
prefer = "max"                     # "max" | "min": which number wins; ties go to the first arrival
# floor = 0.5                      # numbers worse than this are invalid (a route may set its own)
# `*` matches every array element or member: field = "/seatbid/*/bid/*/price" for OpenRTB

# One table per backend, 1 to 16 of them. Every request goes to all of them.
[[backend]]
name = "a"                         # letters, digits, `.`, `_`, `-`: shows in X-Splitter-Backend and metrics
address = "127.0.0.1:9001"         # host:port; a host name is resolved again every dns_refresh_s
# health_path = "/healthz"         # when set, an ejected backend is probed with GET health_path
# timeout_ms = 60                  # its own deadline, capped by the route's (a bidder's tmax)
# host = "dsp.example"             # the Host it gets instead of the client's
# path_prefix = "/openrtb2"        # prepended to the forwarded target
# shadow = true                    # gets every request, measured, never waited for, never wins
[[backend]]
name = "b"
address = "127.0.0.1:9002"

# Plain string prefix of the path (not the query); the longest wins; no match gives 404.
[[route]]
path_prefix = "/fast"
timeout_ms = 80                    # deadline, 1 to 60000, from the end of the client request
# backends = ["a", "b"]            # the backends this route fans out to (default: all)
# floor = 1.0                      # this route's floor
[[route]]
path_prefix = "/"
timeout_ms = 450

[steering]
mode = "auto"                      # "auto" | "ebpf" | "reuseport"; auto = eBPF where it loads, else SO_REUSEPORT
pin_dir = "/sys/fs/bpf/splitter"   # where the eBPF maps are pinned (bpftool map dump pinned ...)

# One line per request (or a sample), written off the request path; off without this table.
# [access_log]
# path = "/var/log/splitter/access.log"
# format = "json"                  # "json" | "text"
# sample = 0.01                    # share of requests logged, 0 to 1
"#;

/// `admin_listen`: loopback, because metrics and health are for the local scraper and
/// balancer, not for the clients; port 8405, next to HAProxy's customary stats port 8404 and
/// clear of the usual monitoring ports (Prometheus 9090, Pushgateway 9091, Alertmanager 9093,
/// node_exporter 9100, Grafana 3000), which often run on the same host.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8405);
/// `workers`: 0 lets the caller use one per online CPU, the thread-per-core design (SPEC 7).
pub const DEFAULT_WORKERS: usize = 0;
/// `max_request_body`: bids are 1 to 3 KB; 256 KiB is ample headroom, yet bounds the memory a
/// client can pin per request.
pub const DEFAULT_MAX_REQUEST_BODY: usize = 256 * 1024;
/// `max_header_bytes`: 16 KiB, the order of common proxies' limits (HAProxy's `tune.bufsize`
/// and nginx's large header buffers), so whatever HAProxy passes, the splitter takes.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `max_in_flight`: 100 000 requests in progress is twice the required 50 000 req/s held for a
/// full second, far above steady state, yet bounds memory under a backend stall.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 100_000;
/// `header_timeout_ms`: 10 s is generous for a real client and still sheds slowloris.
pub const DEFAULT_HEADER_TIMEOUT_MS: u64 = 10_000;
/// `idle_timeout_ms`: 60 s, above HAProxy's usual keep-alive, so the balancer, not the
/// splitter, is the side that closes idle pooled connections.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// `send_timeout_ms`: 10 s to take a response of a few KB is far beyond any live client; one
/// that reads nothing for that long only pins kernel buffers.
pub const DEFAULT_SEND_TIMEOUT_MS: u64 = 10_000;
/// `max_response_bytes`: 1 MiB, a thousand times a bid reply, and the most one backend can make
/// the splitter hold per request.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;
/// `backend_idle_timeout_ms`: 4 s, below the keep-alive timeouts of common servers (Node.js and
/// Apache 5 s, nginx 75 s), so the splitter closes an idle connection before the backend can
/// close it under a request.
pub const DEFAULT_BACKEND_IDLE_TIMEOUT_MS: u64 = 4_000;
/// `dns_refresh_s`: 30 s follows a moved backend within a typical record TTL.
pub const DEFAULT_DNS_REFRESH_S: u64 = 30;
/// `handover_socket`: under systemd's `RuntimeDirectory=splitter`, which outlives a restart
/// with `RuntimeDirectoryPreserve=restart`.
pub const DEFAULT_HANDOVER_SOCKET: &str = "/run/splitter/handover.sock";
/// `eject_after`: 0, off, as Envoy's outlier detection is until configured; 5 is a sound value.
pub const DEFAULT_EJECT_AFTER: u32 = 0;
/// `max_connections`: 1024 per backend and worker, far above what a healthy backend needs at
/// full load (a few per request in flight), low enough that a stalled one cannot take every
/// descriptor.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// `log_level`: `info` logs start, reload and errors, never per request.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// `select.field`: `/price`, the flat quote shape the mock backend and most users answer with.
pub const DEFAULT_SELECT_FIELD: &str = "/price";
/// `steering.pin_dir`: under the BPF filesystem's usual mount, named after the program.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/splitter";

/// Most a route deadline may be: a minute is beyond any scatter-gather use, while a larger
/// value is most likely a unit mistake (seconds typed as milliseconds are smaller, not larger).
const MAX_ROUTE_TIMEOUT_MS: u64 = 60_000;
/// Longest backend name: it is sent in a response header and used as a metric label.
const MAX_BACKEND_NAME_LEN: usize = 64;

/// A validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `listen`: the client-facing listener.
    pub listen: SocketAddr,
    /// `admin_listen`: `/metrics` and `/healthz`.
    pub admin_listen: SocketAddr,
    /// `workers`: data-plane threads; 0 means one per online CPU, for the caller to resolve.
    pub workers: usize,
    /// `max_request_body`: largest accepted request body, in bytes (413 above).
    pub max_request_body: usize,
    /// `max_header_bytes`: largest accepted request line plus headers, in bytes (431 above).
    pub max_header_bytes: usize,
    /// `max_in_flight`: requests in progress in the whole process (503 above).
    pub max_in_flight: usize,
    /// `header_timeout_ms`: how long a client may take to send a request head.
    pub header_timeout: Duration,
    /// `idle_timeout_ms`: how long a client connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// `log_level`: a `tracing_subscriber::EnvFilter` directive, checked to parse.
    pub log_level: String,
    /// `log_format`: how log lines are written.
    pub log_format: LogFormat,
    /// `io`: the data plane's I/O interface.
    pub io: IoMode,
    /// `send_timeout_ms`: how long a client may take to take a response.
    pub send_timeout: Duration,
    /// `max_response_bytes`: most bytes of one backend reply, on the wire and decoded.
    pub max_response_bytes: usize,
    /// `backend_idle_timeout_ms`: idle pooled backend connections are closed after this.
    pub backend_idle_timeout: Duration,
    /// `dns_refresh_s`: how often backend host names are resolved again.
    pub dns_refresh: Duration,
    /// `handover_socket`: where a restarting splitter takes this one's sockets over; `None`
    /// (`""`) turns that off.
    pub handover_socket: Option<PathBuf>,
    /// `[select]`: which number ranks the responses, and which way.
    pub select: Selection,
    /// `[[backend]]`: 1 to 16, in file order; a backend's index is its `BackendId`.
    pub backends: Vec<BackendConfig>,
    /// `[[route]]`: at least one, in file order, prefixes unique.
    pub routes: Vec<Route>,
    /// `[steering]`: how new connections reach a worker.
    pub steering: SteeringConfig,
    /// `[access_log]`: off when absent.
    pub access_log: Option<AccessLogConfig>,
}

/// `[[backend]]`: one upstream that gets every request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendConfig {
    /// `name`: unique, `[A-Za-z0-9._-]{1,64}`; sent as `X-Splitter-Backend` and used as the
    /// `backend` metric label.
    pub name: String,
    /// `address`: what connections go to. A literal as written; for a host name, one address
    /// of its answer ([`preferred`]): the running one while the answer still has it.
    pub address: SocketAddr,
    /// `address` as written, when it is a host name to resolve again every `dns_refresh_s`.
    pub host_name: Option<String>,
    /// The resolver's answer `address` was chosen from, deduplicated, in the resolver's order
    /// (the literal alone for an IP literal). Its order is the resolver's whim: it never makes
    /// a backend move by itself ([`Config::keep_addresses`]).
    pub answer: Vec<SocketAddr>,
    /// `eject_after`: consecutive errors or timeouts that eject it; 0 never ejects.
    pub eject_after: u32,
    /// `health_path`: what an ejected backend is probed with (`GET`), instead of a real request.
    pub health_path: Option<String>,
    /// `max_connections`: most connections to it per worker.
    pub max_connections: usize,
    /// `timeout_ms`: its own deadline, capped by the route's (a bidder's tighter `tmax`).
    pub timeout: Option<Duration>,
    /// `host`: the `Host` it gets instead of the client's (a virtual host).
    pub host: Option<String>,
    /// `path_prefix`: prepended to the forwarded target (an endpoint like `/openrtb2`), as
    /// written; never `/` alone, which changes nothing.
    pub path_prefix: Option<String>,
    /// `shadow`: it gets every request and is measured, but never wins and is never waited for.
    pub shadow: bool,
}

/// `[select]`: how responses are ranked (SPEC 2).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileSelect {
    /// `field`: a JSON Pointer, checked by [`Selector::parse`].
    field: String,
    /// `prefer`: the largest or the smallest number wins.
    prefer: Prefer,
    /// `floor`: numbers worse than this are invalid.
    floor: Option<f64>,
}

impl Default for FileSelect {
    fn default() -> Self {
        Self {
            field: DEFAULT_SELECT_FIELD.to_owned(),
            prefer: Prefer::default(),
            floor: None,
        }
    }
}

/// `[access_log]`: one line per request (or a sample), off when the table is absent.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    /// `path`: the file lines are appended to (created if missing).
    pub path: PathBuf,
    /// `format`: `json` (one object per line) or `text` (`key=value`).
    pub format: LogFormat,
    /// `sample`: the share of requests logged, 0 to 1.
    pub sample: f64,
}

/// `[access_log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAccessLog {
    /// `path`, required.
    path: Option<PathBuf>,
    /// `format`.
    #[serde(default)]
    format: LogFormat,
    /// `sample`: every request by default.
    #[serde(default = "full_sample")]
    sample: f64,
}

fn full_sample() -> f64 {
    1.0
}

/// `[steering]`: how new connections are spread over the workers (SPEC 7).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteeringConfig {
    /// `mode`: eBPF, `SO_REUSEPORT`, or the first that works.
    pub mode: SteeringMode,
    /// `pin_dir`: absolute directory where the eBPF maps are pinned.
    pub pin_dir: PathBuf,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        Self {
            mode: SteeringMode::default(),
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
        }
    }
}

/// `steering.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SteeringMode {
    /// eBPF where the program loads (privileges, kernel), else `SO_REUSEPORT`.
    #[default]
    Auto,
    /// eBPF or fail to start.
    Ebpf,
    /// Plain `SO_REUSEPORT`: the kernel hashes connections over the workers' listeners.
    Reuseport,
}

/// `io`: the data plane's I/O interface.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// `io_uring` where the kernel and its settings allow it, else epoll.
    #[default]
    Auto,
    /// `io_uring` or fail to start.
    Uring,
    /// epoll, e.g. where `io_uring` is disabled by policy.
    Epoll,
}

/// `log_format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for a terminal or journald.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// A configuration file that cannot be used: which file, which key, what is wrong.
///
/// Displays as ``<path>: `<key>`: <message>``, e.g.
/// ``/etc/splitter/splitter.toml: `route[1].timeout_ms`: must be between 1 and 60000, got 0``,
/// or `<path>: <message>` when no key is at fault (the file cannot be read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given to [`Config::load`] or [`Config::parse`].
    pub path: PathBuf,
    /// The key at fault, with tables and indexes: `listen`, `select.prefer`,
    /// `backend[2].address`; empty when none is.
    pub key: String,
    /// What is wrong, and for syntax and type errors, the line.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}: `{}`: {}",
                self.path.display(),
                self.key,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_owned(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let in_file = |Invalid { key, message }| ConfigError {
            path: path.to_owned(),
            key,
            message,
        };
        let document = toml::Deserializer::parse(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            in_file(Invalid::new(
                key_near(text, offset),
                at_line(e.message(), text, offset),
            ))
        })?;
        let file: FileConfig = serde_path_to_error::deserialize(document).map_err(|e| {
            let key = e.path().to_string();
            let e = e.into_inner();
            let offset = e.span().map_or(0, |s| s.start);
            let key = if key == "." {
                key_near(text, offset)
            } else {
                key
            };
            in_file(Invalid::new(key, at_line(e.message(), text, offset)))
        })?;
        file.validate().map_err(in_file)
    }
}

/// The file as written: typed by serde, not yet validated. Required keys are `Option`s (and
/// tables empty vectors) so that their absence is reported by key, like any other mistake.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileConfig {
    /// `listen`, required: `None` when absent.
    listen: Option<String>,
    /// `admin_listen`, parsed in `validate`.
    admin_listen: String,
    /// `workers`.
    workers: usize,
    /// `max_request_body`.
    max_request_body: usize,
    /// `max_header_bytes`.
    max_header_bytes: usize,
    /// `max_in_flight`.
    max_in_flight: usize,
    /// `header_timeout_ms`.
    header_timeout_ms: u64,
    /// `idle_timeout_ms`.
    idle_timeout_ms: u64,
    /// `log_level`.
    log_level: String,
    /// `log_format`.
    log_format: LogFormat,
    /// `io`.
    io: IoMode,
    /// `send_timeout_ms`.
    send_timeout_ms: u64,
    /// `max_response_bytes`.
    max_response_bytes: usize,
    /// `backend_idle_timeout_ms`.
    backend_idle_timeout_ms: u64,
    /// `dns_refresh_s`.
    dns_refresh_s: u64,
    /// `handover_socket`.
    handover_socket: PathBuf,
    /// `eject_after`: the backends' default.
    eject_after: u32,
    /// `health_path`: the backends' default.
    health_path: Option<String>,
    /// `max_connections`: the backends' default.
    max_connections: usize,
    /// `[select]`.
    select: FileSelect,
    /// `[[backend]]`, required: empty when absent.
    backend: Vec<FileBackend>,
    /// `[[route]]`, required: empty when absent.
    route: Vec<FileRoute>,
    /// `[steering]`.
    steering: SteeringConfig,
    /// `[access_log]`.
    access_log: Option<FileAccessLog>,
}

impl Default for FileConfig {
    fn default() -> Self {
        Self {
            listen: None,
            admin_listen: DEFAULT_ADMIN_LISTEN.to_string(),
            workers: DEFAULT_WORKERS,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            header_timeout_ms: DEFAULT_HEADER_TIMEOUT_MS,
            idle_timeout_ms: DEFAULT_IDLE_TIMEOUT_MS,
            log_level: DEFAULT_LOG_LEVEL.to_owned(),
            log_format: LogFormat::default(),
            io: IoMode::default(),
            send_timeout_ms: DEFAULT_SEND_TIMEOUT_MS,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            backend_idle_timeout_ms: DEFAULT_BACKEND_IDLE_TIMEOUT_MS,
            dns_refresh_s: DEFAULT_DNS_REFRESH_S,
            handover_socket: PathBuf::from(DEFAULT_HANDOVER_SOCKET),
            eject_after: DEFAULT_EJECT_AFTER,
            health_path: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            select: FileSelect::default(),
            backend: Vec::new(),
            route: Vec::new(),
            steering: SteeringConfig::default(),
            access_log: None,
        }
    }
}

/// `[[backend]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileBackend {
    /// `name`, required.
    name: Option<String>,
    /// `address`, required, resolved in `validate`.
    address: Option<String>,
    /// `eject_after`, else the top-level one.
    eject_after: Option<u32>,
    /// `health_path`, else the top-level one.
    health_path: Option<String>,
    /// `max_connections`, else the top-level one.
    max_connections: Option<usize>,
    /// `timeout_ms`: its own deadline.
    timeout_ms: Option<u64>,
    /// `host`: the `Host` it gets.
    host: Option<String>,
    /// `path_prefix`: prepended to the forwarded target.
    path_prefix: Option<String>,
    /// `shadow`: measured, never waited for, never wins.
    shadow: bool,
}

/// `[[route]]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FileRoute {
    /// `path_prefix`, required.
    path_prefix: Option<String>,
    /// `timeout_ms`, required.
    timeout_ms: Option<u64>,
    /// `floor`, else `select.floor`.
    floor: Option<f64>,
    /// `backends`: names; all backends when absent.
    backends: Option<Vec<String>>,
}

/// A failed check, before the file's path is attached.
struct Invalid {
    /// The key at fault.
    key: String,
    /// What is wrong with it.
    message: String,
}

impl Invalid {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl FileConfig {
    /// Checks every key, in file order, and builds the typed [`Config`].
    fn validate(self) -> Result<Config, Invalid> {
        let listen = self
            .listen
            .ok_or_else(|| Invalid::new("listen", "required, e.g. `listen = \"0.0.0.0:8080\"`"))?;
        let listen = ip_and_port("listen", &listen)?;
        let admin_listen = ip_and_port("admin_listen", &self.admin_listen)?;
        // The same port on the same address, or on all addresses for either: one bind fails.
        let overlap = |a: SocketAddr, b: SocketAddr| {
            a.port() == b.port()
                && a.port() != 0
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
        };
        if overlap(admin_listen, listen) {
            return Err(Invalid::new(
                "admin_listen",
                format!("must not overlap `listen`: {admin_listen} and {listen}"),
            ));
        }
        if self.workers > MAX_WORKERS {
            return Err(Invalid::new(
                "workers",
                format!(
                    "at most {MAX_WORKERS} (the steering program's and the metrics map's size), got {}",
                    self.workers
                ),
            ));
        }
        at_least_one("max_request_body", self.max_request_body as u64)?;
        at_least_one("max_header_bytes", self.max_header_bytes as u64)?;
        at_least_one("max_in_flight", self.max_in_flight as u64)?;
        at_least_one("header_timeout_ms", self.header_timeout_ms)?;
        at_least_one("idle_timeout_ms", self.idle_timeout_ms)?;
        at_least_one("send_timeout_ms", self.send_timeout_ms)?;
        at_least_one("max_response_bytes", self.max_response_bytes as u64)?;
        at_least_one("backend_idle_timeout_ms", self.backend_idle_timeout_ms)?;
        at_least_one("dns_refresh_s", self.dns_refresh_s)?;
        at_least_one("max_connections", self.max_connections as u64)?;
        let handover_socket = match self.handover_socket.as_os_str().is_empty() {
            true => None,
            false if self.handover_socket.is_absolute() => Some(self.handover_socket),
            false => {
                return Err(Invalid::new(
                    "handover_socket",
                    format!(
                        "must be an absolute path, or \"\" for none, got {:?}",
                        self.handover_socket
                    ),
                ))
            }
        };
        let access_log = match self.access_log {
            None => None,
            Some(log) => {
                let path = log.path.ok_or_else(|| {
                    Invalid::new(
                        "access_log.path",
                        "required, e.g. \"/var/log/splitter/access.log\"",
                    )
                })?;
                if !path.is_absolute() {
                    return Err(Invalid::new(
                        "access_log.path",
                        format!("must be an absolute path, got {path:?}"),
                    ));
                }
                if !(0.0..=1.0).contains(&log.sample) {
                    return Err(Invalid::new(
                        "access_log.sample",
                        format!("must be between 0 and 1, got {}", log.sample),
                    ));
                }
                Some(AccessLogConfig {
                    path,
                    format: log.format,
                    sample: log.sample,
                })
            }
        };
        if let Some(path) = &self.health_path {
            health_path(path).map_err(|message| Invalid::new("health_path", message))?;
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(Invalid::new(
                "log_level",
                format!("not a tracing filter ({e}), got {:?}", self.log_level),
            ));
        }
        let selector = Selector::parse(&self.select.field).map_err(|e| {
            Invalid::new("select.field", format!("{e}, got {:?}", self.select.field))
        })?;
        let defaults = BackendDefaults {
            eject_after: self.eject_after,
            health_path: self.health_path,
            max_connections: self.max_connections,
        };
        let backends = backends(self.backend, &defaults)?;
        if let Some(floor) = self.select.floor {
            finite("select.floor", floor)?;
        }
        let routes = routes(self.route, &backends, self.select.floor)?;
        if !self.steering.pin_dir.is_absolute() {
            return Err(Invalid::new(
                "steering.pin_dir",
                format!("must be an absolute path, got {:?}", self.steering.pin_dir),
            ));
        }
        Ok(Config {
            listen,
            admin_listen,
            workers: self.workers,
            max_request_body: self.max_request_body,
            max_header_bytes: self.max_header_bytes,
            max_in_flight: self.max_in_flight,
            header_timeout: Duration::from_millis(self.header_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            log_level: self.log_level,
            log_format: self.log_format,
            io: self.io,
            send_timeout: Duration::from_millis(self.send_timeout_ms),
            max_response_bytes: self.max_response_bytes,
            backend_idle_timeout: Duration::from_millis(self.backend_idle_timeout_ms),
            dns_refresh: Duration::from_secs(self.dns_refresh_s),
            handover_socket,
            select: Selection {
                selector,
                prefer: self.select.prefer,
                max_decoded: self.max_response_bytes,
            },
            backends,
            routes,
            steering: self.steering,
            access_log,
        })
    }
}

/// Checks the `[[backend]]` tables: 1 to [`MAX_BACKENDS`], names valid and unique, addresses
/// resolved.
/// What a `[[backend]]` that does not set these keys gets: the top-level values.
struct BackendDefaults {
    eject_after: u32,
    health_path: Option<String>,
    max_connections: usize,
}

fn backends(
    tables: Vec<FileBackend>,
    defaults: &BackendDefaults,
) -> Result<Vec<BackendConfig>, Invalid> {
    if tables.is_empty() {
        return Err(Invalid::new(
            "backend",
            "at least one [[backend]] table is required",
        ));
    }
    if tables.len() > MAX_BACKENDS {
        return Err(Invalid::new(
            "backend",
            format!("at most {MAX_BACKENDS} backends, got {}", tables.len()),
        ));
    }
    let mut backends: Vec<BackendConfig> = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let key = |field: &str| format!("backend[{i}].{field}");
        let name = table
            .name
            .ok_or_else(|| Invalid::new(key("name"), "required"))?;
        backend_name(&name).map_err(|message| Invalid::new(key("name"), message))?;
        if let Some(j) = backends.iter().position(|b| b.name == name) {
            return Err(Invalid::new(
                key("name"),
                format!("{name:?} is already the name of backend[{j}]"),
            ));
        }
        let address = table
            .address
            .ok_or_else(|| Invalid::new(key("address"), "required"))?;
        let answer =
            resolve_all(&address).map_err(|message| Invalid::new(key("address"), message))?;
        let resolved = preferred(&answer, None).ok_or_else(|| {
            Invalid::new(
                key("address"),
                format!("{address:?} resolves to no address"),
            )
        })?;
        let host_name = address.parse::<SocketAddr>().is_err().then_some(address);
        let max_connections = table.max_connections.unwrap_or(defaults.max_connections);
        at_least_one(&key("max_connections"), max_connections as u64)?;
        let health_path = match table.health_path {
            Some(path) => {
                health_path(&path).map_err(|message| Invalid::new(key("health_path"), message))?;
                Some(path)
            }
            None => defaults.health_path.clone(),
        };
        let timeout = match table.timeout_ms {
            Some(ms) if (1..=MAX_ROUTE_TIMEOUT_MS).contains(&ms) => Some(Duration::from_millis(ms)),
            Some(ms) => {
                return Err(Invalid::new(
                    key("timeout_ms"),
                    format!("must be between 1 and {MAX_ROUTE_TIMEOUT_MS}, got {ms}"),
                ))
            }
            None => None,
        };
        if let Some(host) = &table.host {
            // The rule a client's `Host` is held to: what a backend gets is as clean.
            if host.is_empty() || !crate::http1::request::is_authority(host.as_bytes()) {
                return Err(Invalid::new(
                    key("host"),
                    format!(
                        "must be a host[:port] (a name or IP address, then digits), with no user, path or list, got {host:?}"
                    ),
                ));
            }
        }
        if let Some(prefix) = &table.path_prefix {
            path_prefix_chars(prefix)
                .map_err(|message| Invalid::new(key("path_prefix"), message))?;
        }
        backends.push(BackendConfig {
            name,
            address: resolved,
            host_name,
            answer,
            eject_after: table.eject_after.unwrap_or(defaults.eject_after),
            health_path,
            max_connections,
            timeout,
            host: table.host,
            // As written (the root target becomes exactly this); `/` alone changes nothing.
            path_prefix: table
                .path_prefix
                .filter(|p| !p.trim_end_matches('/').is_empty()),
            shadow: table.shadow,
        });
    }
    Ok(backends)
}

/// Checks a backend name: it becomes a header value and a metric label, so it stays within a
/// charset that needs no escaping in either.
fn backend_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_BACKEND_NAME_LEN || !name.chars().all(allowed) {
        return Err(format!(
            "must be 1 to {MAX_BACKEND_NAME_LEN} of `A-Z a-z 0-9 . _ -`, got {name:?}"
        ));
    }
    Ok(())
}

/// Checks a `health_path`: an origin-form target for `GET`, visible ASCII.
fn health_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic() && b != b'#') {
        return Err(format!(
            "must be a path like \"/healthz\": `/`, then visible ASCII without `#`, got {path:?}"
        ));
    }
    Ok(())
}

/// Resolves a backend `host:port`, now: an IP literal gives itself; a host name every address
/// the system resolver gives, deduplicated, in its order (never empty).
pub fn resolve_all(address: &str) -> Result<Vec<SocketAddr>, String> {
    if let Ok(address) = address.parse() {
        return Ok(vec![address]);
    }
    let has_port = address
        .rsplit_once(':')
        // A bracketed IPv6 literal parsed above: a `:` left in the host is a missing port.
        .is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
        });
    if !has_port {
        return Err(format!(
            "must be host:port, like \"10.0.0.1:9000\" or \"backend.internal:9000\", got {address:?}"
        ));
    }
    let mut answer: Vec<SocketAddr> = Vec::new();
    for resolved in address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address:?}: {e}"))?
    {
        if !answer.contains(&resolved) {
            answer.push(resolved);
        }
    }
    if answer.is_empty() {
        return Err(format!("{address:?} resolves to no address"));
    }
    Ok(answer)
}

/// The address of `answer` a backend connects to: `current`, the one it runs on, while the
/// answer still has it (a reordered answer, or a resolver rotating its records, moves nothing);
/// else the first IPv4 address, else the first one (IPv4 preferred, like Envoy's default
/// `V4_PREFERRED`: `localhost` is `::1` first on Debian, where many backends listen on IPv4
/// only). `None` only for an empty answer.
pub fn preferred(answer: &[SocketAddr], current: Option<SocketAddr>) -> Option<SocketAddr> {
    current
        .filter(|current| answer.contains(current))
        .or_else(|| answer.iter().find(|a| a.is_ipv4()).copied())
        .or_else(|| answer.first().copied())
}

/// A host-name backend that left the address it ran on, which is no longer in its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Moved {
    /// Its `name`.
    pub backend: String,
    /// The address it ran on.
    pub from: SocketAddr,
    /// The address it goes to now.
    pub to: SocketAddr,
}

impl Config {
    /// Keeps each host-name backend of this freshly resolved configuration on the address it
    /// runs on in `running` (the same `name` with the same `address` as written) while that
    /// address is still in its answer; the others take their [`preferred`] one. Returns the
    /// backends that move: their pooled connections drain, those that stay keep theirs. Used
    /// by the `dns_refresh_s` timer and by a reload, which resolves the file's names again.
    pub fn keep_addresses(&mut self, running: &Config) -> Vec<Moved> {
        let mut moved = Vec::new();
        for backend in &mut self.backends {
            if backend.host_name.is_none() {
                continue;
            }
            let Some(old) = running
                .backends
                .iter()
                .find(|old| old.name == backend.name && old.host_name == backend.host_name)
            else {
                continue;
            };
            let Some(to) = preferred(&backend.answer, Some(old.address)) else {
                continue;
            };
            backend.address = to;
            if to != old.address {
                moved.push(Moved {
                    backend: backend.name.clone(),
                    from: old.address,
                    to,
                });
            }
        }
        moved
    }
}

/// Checks the `[[route]]` tables: at least one, prefixes valid and unique, timeouts in range.
fn routes(
    tables: Vec<FileRoute>,
    backends: &[BackendConfig],
    floor: Option<f64>,
) -> Result<Vec<Route>, Invalid> {
    if tables.is_empty() {
        return Err(Invalid::new(
            "route",
            "at least one [[route]] table is required, e.g. `path_prefix = \"/\"`",
        ));
    }
    if tables.len() > MAX_ROUTES {
        return Err(Invalid::new(
            "route",
            format!("at most {MAX_ROUTES} routes, got {}", tables.len()),
        ));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(tables.len());
    for (i, table) in tables.into_iter().enumerate() {
        let key = |field: &str| format!("route[{i}].{field}");
        let path_prefix = table
            .path_prefix
            .ok_or_else(|| Invalid::new(key("path_prefix"), "required"))?;
        path_prefix_chars(&path_prefix)
            .map_err(|message| Invalid::new(key("path_prefix"), message))?;
        if let Some(j) = routes.iter().position(|r| r.path_prefix == path_prefix) {
            return Err(Invalid::new(
                key("path_prefix"),
                format!("{path_prefix:?} is already the prefix of route[{j}]"),
            ));
        }
        let timeout_ms = table
            .timeout_ms
            .ok_or_else(|| Invalid::new(key("timeout_ms"), "required"))?;
        if !(1..=MAX_ROUTE_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(Invalid::new(
                key("timeout_ms"),
                format!("must be between 1 and {MAX_ROUTE_TIMEOUT_MS}, got {timeout_ms}"),
            ));
        }
        if let Some(floor) = table.floor {
            finite(&key("floor"), floor)?;
        }
        let mask = match table.backends {
            None => all_backends(backends.len()),
            Some(names) => {
                let mut mask = 0u16;
                for (j, name) in names.iter().enumerate() {
                    let Some(b) = backends.iter().position(|b| &b.name == name) else {
                        return Err(Invalid::new(
                            format!("route[{i}].backends[{j}]"),
                            format!("no [[backend]] is named {name:?}"),
                        ));
                    };
                    mask |= 1 << b;
                }
                mask
            }
        };
        let answering = (0..backends.len()).any(|b| mask & (1 << b) != 0 && !backends[b].shadow);
        if !answering {
            return Err(Invalid::new(
                key("backends"),
                "needs at least one backend that is not a shadow: shadows never answer",
            ));
        }
        routes.push(Route {
            path_prefix,
            timeout: Duration::from_millis(timeout_ms),
            floor: table.floor.or(floor),
            backends: mask,
            slot: i,
        });
    }
    Ok(routes)
}

/// One bit per backend, for `count` backends.
fn all_backends(count: usize) -> u16 {
    // Shifting a u16 by 16 overflows, hence the detour through u32.
    ((1u32 << count) - 1) as u16
}

/// Checks that a number is finite.
fn finite(key: &str, value: f64) -> Result<(), Invalid> {
    if !value.is_finite() {
        return Err(Invalid::new(
            key,
            format!("must be a finite number, got {value}"),
        ));
    }
    Ok(())
}

/// Checks a route prefix: it is matched against the raw path of a request target, which is
/// visible ASCII (RFC 9112 section 3.2, RFC 3986) and ends before `?`; any other prefix could
/// never match.
fn path_prefix_chars(prefix: &str) -> Result<(), String> {
    if !prefix.starts_with('/') {
        return Err(format!("must start with `/`, got {prefix:?}"));
    }
    if let Some(c) = prefix
        .chars()
        .find(|&c| !c.is_ascii_graphic() || matches!(c, '?' | '#'))
    {
        return Err(format!(
            "must be visible ASCII without `?` or `#` (it matches the path, not the query; \
             percent-encode other bytes), found {c:?} in {prefix:?}"
        ));
    }
    Ok(())
}

/// Parses a listener address: an IP literal and a port, because a host name could resolve to
/// several addresses, or to another one after a reload.
fn ip_and_port(key: &str, address: &str) -> Result<SocketAddr, Invalid> {
    address.parse().map_err(|_| {
        Invalid::new(
            key,
            format!(
                "must be an IP address and a port, like \"0.0.0.0:8080\" or \"[::]:8080\", got {address:?}"
            ),
        )
    })
}

/// Checks that a count or a duration is not zero.
fn at_least_one(key: &str, value: u64) -> Result<(), Invalid> {
    if value == 0 {
        return Err(Invalid::new(key, "must be at least 1, got 0"));
    }
    Ok(())
}

/// Appends the 1-based line of byte `offset` to a parser message.
fn at_line(message: &str, text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())].matches('\n').count() + 1;
    format!("{} (line {line})", message.trim_end())
}

/// The key a syntax error at byte `offset` is closest to: the `key =` of its line inside the
/// table in effect there (`route[1].timeout_ms`), or that table. Best effort: it reads lines,
/// not TOML, which is all a file that does not parse allows.
fn key_near(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut counts: Vec<(String, usize)> = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let code = line.split('#').next().unwrap_or_default().trim();
        let on_error_line = (start..start + line.len()).contains(&offset);
        start += line.len();
        // Headers, even unclosed ones: a syntax error may be in the header itself.
        if let Some(header) = code.strip_prefix('[') {
            let name = header.trim_matches(|c| c == '[' || c == ']').trim();
            table = if header.starts_with('[') {
                let index = match counts.iter_mut().find(|(n, _)| n == name) {
                    Some((_, count)) => {
                        *count += 1;
                        *count - 1
                    }
                    None => {
                        counts.push((name.to_owned(), 1));
                        0
                    }
                };
                format!("{name}[{index}]")
            } else {
                name.to_owned()
            };
        } else if on_error_line {
            if let Some((key, _)) = code.split_once('=') {
                let key = key.trim().trim_matches('"');
                return match table.as_str() {
                    "" => key.to_owned(),
                    _ => format!("{table}.{key}"),
                };
            }
        }
        if on_error_line {
            break;
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const PATH: &str = "/etc/splitter/splitter.toml";

    /// The smallest valid file; tests append or replace keys.
    const MINIMAL: &str = r#"
listen = "0.0.0.0:8080"
[[backend]]
name = "a"
address = "10.0.0.1:9000"
[[route]]
path_prefix = "/"
timeout_ms = 450
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(PATH))
    }

    /// `MINIMAL` with `top` added at the top level (before any table).
    fn with_top(top: &str) -> String {
        format!("{top}\n{MINIMAL}")
    }

    /// The (key, message) of the error `text` gives.
    fn error(text: &str) -> (String, String) {
        let e = parse(text).expect_err("the file must be refused");
        assert_eq!(e.path, Path::new(PATH));
        (e.key, e.message)
    }

    /// Asserts the key of the error and that its message contains `needle`.
    #[track_caller]
    fn assert_error(text: &str, key: &str, needle: &str) {
        let (k, message) = error(text);
        assert_eq!(k, key, "message: {message}");
        assert!(message.contains(needle), "{message:?} lacks {needle:?}");
    }

    fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
    }

    #[test]
    fn default_config_parses_and_matches_the_defaults() {
        let config = parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(config.listen, v4(127, 0, 0, 1, 8080));
        assert_eq!(
            config.backends,
            [
                BackendConfig {
                    name: "a".into(),
                    address: v4(127, 0, 0, 1, 9001),
                    host_name: None,
                    answer: vec![v4(127, 0, 0, 1, 9001)],
                    eject_after: 0,
                    health_path: None,
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    timeout: None,
                    host: None,
                    path_prefix: None,
                    shadow: false,
                },
                BackendConfig {
                    name: "b".into(),
                    address: v4(127, 0, 0, 1, 9002),
                    host_name: None,
                    answer: vec![v4(127, 0, 0, 1, 9002)],
                    eject_after: 0,
                    health_path: None,
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    timeout: None,
                    host: None,
                    path_prefix: None,
                    shadow: false,
                },
            ]
        );
        assert_eq!(
            config.routes,
            [
                Route {
                    path_prefix: "/fast".into(),
                    timeout: Duration::from_millis(80),
                    floor: None,
                    backends: 0b11,
                    slot: 0,
                },
                Route {
                    path_prefix: "/".into(),
                    timeout: Duration::from_millis(450),
                    floor: None,
                    backends: 0b11,
                    slot: 1,
                },
            ]
        );
        // Every other key of the example spells its default: the two cannot drift apart.
        let minimal = parse(MINIMAL).unwrap();
        assert_eq!(
            Config {
                listen: minimal.listen,
                backends: minimal.backends.clone(),
                routes: minimal.routes.clone(),
                ..config
            },
            minimal
        );
    }

    #[test]
    fn defaults_fill_every_optional_key() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            config,
            Config {
                listen: v4(0, 0, 0, 0, 8080),
                admin_listen: v4(127, 0, 0, 1, 8405),
                workers: 0,
                max_request_body: 262_144,
                max_header_bytes: 16_384,
                max_in_flight: 100_000,
                header_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(60),
                log_level: "info".into(),
                log_format: LogFormat::Text,
                io: IoMode::Auto,
                send_timeout: Duration::from_millis(DEFAULT_SEND_TIMEOUT_MS),
                max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
                backend_idle_timeout: Duration::from_millis(DEFAULT_BACKEND_IDLE_TIMEOUT_MS),
                dns_refresh: Duration::from_secs(DEFAULT_DNS_REFRESH_S),
                handover_socket: Some(PathBuf::from(DEFAULT_HANDOVER_SOCKET)),
                access_log: None,
                select: Selection {
                    selector: Selector::parse("/price").unwrap(),
                    prefer: Prefer::Max,
                    max_decoded: DEFAULT_MAX_RESPONSE_BYTES,
                },
                backends: vec![BackendConfig {
                    name: "a".into(),
                    address: v4(10, 0, 0, 1, 9000),
                    host_name: None,
                    answer: vec![v4(10, 0, 0, 1, 9000)],
                    eject_after: 0,
                    health_path: None,
                    max_connections: DEFAULT_MAX_CONNECTIONS,
                    timeout: None,
                    host: None,
                    path_prefix: None,
                    shadow: false,
                }],
                routes: vec![Route {
                    path_prefix: "/".into(),
                    timeout: Duration::from_millis(450),
                    floor: None,
                    backends: 0b1,
                    slot: 0,
                }],
                steering: SteeringConfig {
                    mode: SteeringMode::Auto,
                    pin_dir: "/sys/fs/bpf/splitter".into()
                },
            }
        );
    }

    #[test]
    fn every_key_is_read() {
        let text = r#"
listen = "[::]:80"
admin_listen = "0.0.0.0:9999"
workers = 3
max_request_body = 1
max_header_bytes = 2
max_in_flight = 3
header_timeout_ms = 4
idle_timeout_ms = 5
log_level = "warn,splitter_user=trace"
log_format = "json"
io = "epoll"
[select]
field = "/seatbid/0/bid/0/price"
prefer = "min"
[[backend]]
name = "A-1.x_y"
address = "[::1]:7000"
[[route]]
path_prefix = "/bid"
timeout_ms = 60000
[[route]]
path_prefix = "/bid/fast"
timeout_ms = 1
[steering]
mode = "reuseport"
pin_dir = "/run/splitter"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.listen, "[::]:80".parse().unwrap());
        assert_eq!(c.admin_listen, v4(0, 0, 0, 0, 9999));
        assert_eq!(
            (
                c.workers,
                c.max_request_body,
                c.max_header_bytes,
                c.max_in_flight
            ),
            (3, 1, 2, 3)
        );
        assert_eq!(c.header_timeout, Duration::from_millis(4));
        assert_eq!(c.idle_timeout, Duration::from_millis(5));
        assert_eq!(c.log_level, "warn,splitter_user=trace");
        assert_eq!((c.log_format, c.io), (LogFormat::Json, IoMode::Epoll));
        assert_eq!(c.select.selector.as_str(), "/seatbid/0/bid/0/price");
        assert_eq!(c.select.prefer, Prefer::Min);
        assert_eq!(c.backends[0].name, "A-1.x_y");
        assert_eq!(c.backends[0].address, "[::1]:7000".parse().unwrap());
        assert_eq!(c.routes[0].timeout, Duration::from_secs(60));
        assert_eq!(c.routes[1].path_prefix, "/bid/fast");
        assert_eq!(c.steering.mode, SteeringMode::Reuseport);
        assert_eq!(c.steering.pin_dir, Path::new("/run/splitter"));
    }

    #[test]
    fn enum_keys_take_each_documented_value() {
        for (value, io) in [
            ("auto", IoMode::Auto),
            ("uring", IoMode::Uring),
            ("epoll", IoMode::Epoll),
        ] {
            assert_eq!(parse(&with_top(&format!("io = {value:?}"))).unwrap().io, io);
        }
        for (value, mode) in [
            ("auto", SteeringMode::Auto),
            ("ebpf", SteeringMode::Ebpf),
            ("reuseport", SteeringMode::Reuseport),
        ] {
            let text = format!("{MINIMAL}[steering]\nmode = {value:?}\n");
            assert_eq!(parse(&text).unwrap().steering.mode, mode);
        }
        for (value, format) in [("text", LogFormat::Text), ("json", LogFormat::Json)] {
            let text = with_top(&format!("log_format = {value:?}"));
            assert_eq!(parse(&text).unwrap().log_format, format);
        }
    }

    #[test]
    fn error_display_names_the_file_and_the_key() {
        assert_eq!(
            parse(&with_route("/x", "0")).unwrap_err().to_string(),
            "/etc/splitter/splitter.toml: `route[1].timeout_ms`: must be between 1 and 60000, got 0"
        );
    }

    #[test]
    fn unreadable_file_names_the_file() {
        let path = Path::new("/nonexistent/splitter.toml");
        let e = Config::load(path).unwrap_err();
        assert_eq!(e.key, "");
        assert!(e.message.starts_with("cannot read: "), "{}", e.message);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/splitter.toml: cannot read: "),
            "{e}"
        );
    }

    #[test]
    fn load_reads_the_file() {
        let path =
            std::env::temp_dir().join(format!("splitter-config-{}.toml", std::process::id()));
        std::fs::write(&path, DEFAULT_CONFIG).unwrap();
        let loaded = Config::load(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(loaded.unwrap(), parse(DEFAULT_CONFIG).unwrap());
    }

    #[test]
    fn missing_required_keys_are_named() {
        let without = |line: &str| MINIMAL.replace(line, "");
        assert_error(&without("listen = \"0.0.0.0:8080\""), "listen", "required");
        assert_error(
            &without("[[backend]]\nname = \"a\"\naddress = \"10.0.0.1:9000\"\n"),
            "backend",
            "at least one [[backend]] table is required",
        );
        assert_error(
            &without("[[route]]\npath_prefix = \"/\"\ntimeout_ms = 450\n"),
            "route",
            "at least one [[route]] table is required",
        );
        assert_error(&without("name = \"a\"\n"), "backend[0].name", "required");
        assert_error(
            &without("address = \"10.0.0.1:9000\"\n"),
            "backend[0].address",
            "required",
        );
        assert_error(
            &without("path_prefix = \"/\"\n"),
            "route[0].path_prefix",
            "required",
        );
        assert_error(
            &without("timeout_ms = 450\n"),
            "route[0].timeout_ms",
            "required",
        );
        assert_error("", "listen", "required");
    }

    #[test]
    fn unknown_keys_are_named() {
        let cases = [
            (with_top("listne = \"0.0.0.0:1\""), "listne"),
            (
                format!("{MINIMAL}[select]\nfeild = \"/x\"\n"),
                "select.feild",
            ),
            (
                format!("{MINIMAL}[steering]\npin = \"/x\"\n"),
                "steering.pin",
            ),
            (
                MINIMAL.replace("name = \"a\"", "name = \"a\"\nweight = 2"),
                "backend[0].weight",
            ),
            (
                MINIMAL.replace("timeout_ms = 450", "timeout_ms = 450\ntimeout = 1"),
                "route[0].timeout",
            ),
            (format!("{MINIMAL}[backends]\nx = 1\n"), "backends"),
        ];
        for (text, key) in cases {
            assert_error(&text, key, "unknown field");
        }
    }

    #[test]
    fn workers_are_bounded_and_the_admin_port_is_not_the_listeners() {
        assert_eq!(
            parse(&with_top(&format!("workers = {MAX_WORKERS}")))
                .unwrap()
                .workers,
            MAX_WORKERS
        );
        assert_error(
            &with_top(&format!("workers = {}", MAX_WORKERS + 1)),
            "workers",
            &format!("at most {MAX_WORKERS}"),
        );
        for admin in ["0.0.0.0:8080", "127.0.0.1:8080", "[::]:8080"] {
            assert_error(
                &with_top(&format!("admin_listen = \"{admin}\"")),
                "admin_listen",
                "must not overlap `listen`",
            );
        }
        // Another port, or port 0 for both (any free port: a test's), is fine.
        assert!(parse(&with_top("admin_listen = \"0.0.0.0:8081\"")).is_ok());
        let zeros = MINIMAL.replace("0.0.0.0:8080", "127.0.0.1:0");
        assert!(parse(&format!("admin_listen = \"127.0.0.1:0\"\n{zeros}")).is_ok());
    }

    #[test]
    fn wrong_types_are_named() {
        let cases = [
            (with_top("workers = \"4\""), "workers", "invalid type"),
            (with_top("workers = -1"), "workers", "invalid value"),
            (
                with_top("max_request_body = 1.5"),
                "max_request_body",
                "invalid type",
            ),
            (
                with_top("header_timeout_ms = true"),
                "header_timeout_ms",
                "invalid type",
            ),
            (
                with_top("admin_listen = 9090"),
                "admin_listen",
                "invalid type",
            ),
            (
                MINIMAL.replace("listen = \"0.0.0.0:8080\"", "listen = 8080"),
                "listen",
                "invalid type",
            ),
            (
                MINIMAL.replace("timeout_ms = 450", "timeout_ms = \"450ms\""),
                "route[0].timeout_ms",
                "invalid type",
            ),
            (
                MINIMAL.replace("timeout_ms = 450", "timeout_ms = -1"),
                "route[0].timeout_ms",
                "invalid value",
            ),
            (
                MINIMAL.replace("name = \"a\"", "name = 1"),
                "backend[0].name",
                "invalid type",
            ),
            (
                format!("{MINIMAL}[select]\nprefer = \"maximum\"\n"),
                "select.prefer",
                "unknown variant `maximum`",
            ),
            (
                format!("{MINIMAL}[select]\nfield = 3\n"),
                "select.field",
                "invalid type",
            ),
            (
                format!("{MINIMAL}[steering]\nmode = \"xdp\"\n"),
                "steering.mode",
                "unknown variant `xdp`",
            ),
            (
                with_top("log_format = \"yaml\""),
                "log_format",
                "unknown variant `yaml`",
            ),
            (
                with_top("io = \"iouring\""),
                "io",
                "unknown variant `iouring`",
            ),
            (with_top("select = 1"), "select", "invalid type"),
            (
                format!(
                    "backend = \"a\"\n{}",
                    MINIMAL.replace(
                        "[[backend]]\nname = \"a\"\naddress = \"10.0.0.1:9000\"\n",
                        ""
                    )
                ),
                "backend",
                "invalid type",
            ),
        ];
        for (text, key, needle) in cases {
            assert_error(&text, key, needle);
        }
    }

    #[test]
    fn type_errors_give_the_line() {
        let text = MINIMAL.replace("timeout_ms = 450", "timeout_ms = \"x\"");
        let (key, message) = error(&text);
        assert_eq!(key, "route[0].timeout_ms");
        assert!(message.ends_with("(line 8)"), "{message}");
    }

    #[test]
    fn syntax_errors_give_the_closest_key_and_line() {
        let cases = [
            (with_top("workers = "), "workers", "(line 1)"),
            (with_top("workers 4"), "", "(line 1)"),
            (MINIMAL.replace("timeout_ms = 450", "timeout_ms = 4 50"), "route[0].timeout_ms", "(line 8)"),
            (
                format!("{MINIMAL}[[route]]\npath_prefix = \"/x\"\ntimeout_ms = 1\n[[route]]\npath_prefix = \"/y\ntimeout_ms = 2\n"),
                "route[2].path_prefix",
                "(line 13)",
            ),
            (MINIMAL.replace("name = \"a\"", "name = 'a"), "backend[0].name", "(line 4)"),
            (format!("{MINIMAL}[select]\nprefer = max\n"), "select.prefer", "(line 10)"),
            (format!("{MINIMAL}[select\n"), "select", "(line 9)"),
            // A key given twice is a TOML error, not a last-wins.
            (with_top("workers = 1\nworkers = 2"), "workers", "(line 2)"),
        ];
        for (text, key, line) in cases {
            let (k, message) = error(&text);
            assert_eq!(k, key, "{message}\n{text}");
            assert!(message.ends_with(line), "{message:?} lacks {line}\n{text}");
        }
    }

    #[test]
    fn listen_addresses_must_be_ip_and_port() {
        for bad in [
            "localhost:8080",
            "0.0.0.0",
            ":8080",
            "0.0.0.0:99999",
            "",
            "::1:80",
        ] {
            let text = MINIMAL.replace("0.0.0.0:8080", bad);
            assert_error(&text, "listen", "must be an IP address and a port");
            assert_error(
                &with_top(&format!("admin_listen = {bad:?}")),
                "admin_listen",
                &format!("got {bad:?}"),
            );
        }
    }

    #[test]
    fn backend_addresses_resolve_at_load() {
        let address =
            |a: &str| parse(&MINIMAL.replace("10.0.0.1:9000", a)).map(|c| c.backends[0].address);
        assert_eq!(address("192.0.2.7:80").unwrap(), v4(192, 0, 2, 7, 80));
        assert_eq!(
            address("[2001:db8::1]:443").unwrap(),
            "[2001:db8::1]:443".parse().unwrap()
        );
        let local = address("localhost:9001").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 9001, "{local}");
        for bad in [
            "10.0.0.1",
            "10.0.0.1:",
            "10.0.0.1:http",
            ":9000",
            "",
            "10.0.0.1:65536",
            "2001:db8::1",
        ] {
            assert_error(
                &MINIMAL.replace("10.0.0.1:9000", bad),
                "backend[0].address",
                "must be host:port",
            );
        }
        // `.invalid` never resolves (RFC 6761).
        assert_error(
            &MINIMAL.replace("10.0.0.1:9000", "backend.invalid:9000"),
            "backend[0].address",
            "cannot resolve \"backend.invalid:9000\"",
        );
    }

    /// `MINIMAL` plus backends named `names`, at 10.0.0.2...
    fn with_backends(names: &[&str]) -> String {
        let mut text = MINIMAL.to_owned();
        for (i, name) in names.iter().enumerate() {
            text += &format!(
                "[[backend]]\nname = {name:?}\naddress = \"10.0.0.{}:9000\"\n",
                i + 2
            );
        }
        text
    }

    #[test]
    fn backend_names_are_checked() {
        for good in ["b", "B-2", "x.y_z", &"n".repeat(64)] {
            assert!(parse(&with_backends(&[good])).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a b",
            "a/b",
            "bé",
            "a\nb",
            "a:b",
            "\"a\"",
            &"n".repeat(65),
        ] {
            assert_error(
                &with_backends(&[bad]),
                "backend[1].name",
                "must be 1 to 64 of `A-Z a-z 0-9 . _ -`",
            );
        }
        assert_error(
            &with_backends(&["b", "a"]),
            "backend[2].name",
            "\"a\" is already the name of backend[0]",
        );
        assert!(
            parse(&with_backends(&["A"])).is_ok(),
            "names are case sensitive"
        );
    }

    #[test]
    fn sixteen_backends_at_most() {
        let names: Vec<String> = (1..16).map(|i| format!("b{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(parse(&with_backends(&names)).unwrap().backends.len(), 16);
        let mut seventeen = names.clone();
        seventeen.push("b16");
        assert_error(
            &with_backends(&seventeen),
            "backend",
            "at most 16 backends, got 17",
        );
    }

    /// `MINIMAL` plus a route.
    fn with_route(prefix: &str, timeout_ms: &str) -> String {
        format!("{MINIMAL}[[route]]\npath_prefix = {prefix:?}\ntimeout_ms = {timeout_ms}\n")
    }

    #[test]
    fn route_timeouts_are_bounded() {
        assert!(parse(&with_route("/a", "1")).is_ok());
        assert!(parse(&with_route("/a", "60000")).is_ok());
        for bad in ["0", "60001", "18446744073709551615"] {
            assert_error(
                &with_route("/a", bad),
                "route[1].timeout_ms",
                &format!("must be between 1 and 60000, got {bad}"),
            );
        }
    }

    #[test]
    fn route_prefixes_are_checked() {
        for good in ["/a", "/a/", "/a-b_c.d~e%20", "/;x=1", "//"] {
            assert!(parse(&with_route(good, "1")).is_ok(), "{good}");
        }
        for bad in ["", "a", "fast", "*", "https://h/"] {
            assert_error(
                &with_route(bad, "1"),
                "route[1].path_prefix",
                "must start with `/`",
            );
        }
        for bad in ["/a?b", "/a#b", "/a b", "/\u{e9}", "/a\tb"] {
            assert_error(
                &with_route(bad, "1"),
                "route[1].path_prefix",
                "must be visible ASCII",
            );
        }
        assert_error(
            &with_route("/", "1"),
            "route[1].path_prefix",
            "\"/\" is already the prefix of route[0]",
        );
    }

    #[test]
    fn select_field_must_be_a_json_pointer() {
        let field = |f: &str| format!("{MINIMAL}[select]\nfield = {f:?}\n");
        assert_eq!(parse(&field("")).unwrap().select.selector.as_str(), "");
        assert_eq!(
            parse(&field("/a~1b/0")).unwrap().select.selector.as_str(),
            "/a~1b/0"
        );
        assert_error(
            &field("price"),
            "select.field",
            "starts with `/`, like `/price`, got \"price\"",
        );
        assert_error(
            &field("/a~2"),
            "select.field",
            "`~` at byte 2 must be followed by `0` or `1`",
        );
    }

    #[test]
    fn limits_and_timeouts_must_not_be_zero() {
        for key in [
            "max_request_body",
            "max_header_bytes",
            "max_in_flight",
            "header_timeout_ms",
            "idle_timeout_ms",
        ] {
            assert_error(
                &with_top(&format!("{key} = 0")),
                key,
                "must be at least 1, got 0",
            );
        }
        assert_eq!(parse(&with_top("workers = 0")).unwrap().workers, 0);
    }

    #[test]
    fn log_level_must_be_a_tracing_filter() {
        for good in ["info", "warn", "splitter_user=debug,info", "trace"] {
            assert!(
                parse(&with_top(&format!("log_level = {good:?}"))).is_ok(),
                "{good}"
            );
        }
        for bad in ["splitter=loud", "info,[", "="] {
            assert_error(
                &with_top(&format!("log_level = {bad:?}")),
                "log_level",
                "not a tracing filter",
            );
        }
    }

    #[test]
    fn pin_dir_must_be_absolute() {
        let text = format!("{MINIMAL}[steering]\npin_dir = \"bpf/splitter\"\n");
        assert_error(&text, "steering.pin_dir", "must be an absolute path");
    }

    #[test]
    fn key_near_tracks_tables_and_array_indexes() {
        let text = "a = 1\n[t]\nb = 2\n[[r]]\nc = 3\n[[r]]\n\"d\" = 4 # x = 5\n[[s]]\n[[r]]\n";
        let at = |needle: &str| key_near(text, text.find(needle).unwrap());
        assert_eq!(at("a ="), "a");
        assert_eq!(at("[t]"), "t");
        assert_eq!(at("b ="), "t.b");
        assert_eq!(at("c ="), "r[0].c");
        assert_eq!(at("\"d\""), "r[1].d");
        assert_eq!(at("# x"), "r[1].d");
        assert_eq!(at("[[s]]"), "s[0]");
        assert_eq!(key_near(text, text.len() - 1), "r[2]");
        assert_eq!(key_near("", 0), "");
    }

    #[test]
    fn backend_keys_default_to_the_top_level_ones() {
        let text = format!(
            "eject_after = 5\nmax_connections = 8\nhealth_path = \"/up\"\n{MINIMAL}\
             [[backend]]\nname = \"b\"\naddress = \"10.0.0.2:9000\"\neject_after = 0\n\
             max_connections = 2\nhealth_path = \"/ping?x\"\n"
        );
        let c = parse(&text).unwrap();
        let a = &c.backends[0];
        assert_eq!(
            (a.eject_after, a.max_connections, a.health_path.as_deref()),
            (5, 8, Some("/up"))
        );
        let b = &c.backends[1];
        assert_eq!(
            (b.eject_after, b.max_connections, b.health_path.as_deref()),
            (0, 2, Some("/ping?x"))
        );
    }

    #[test]
    fn resilience_keys_are_checked_by_name() {
        for (top, key) in [
            ("send_timeout_ms = 0", "send_timeout_ms"),
            ("max_response_bytes = 0", "max_response_bytes"),
            ("backend_idle_timeout_ms = 0", "backend_idle_timeout_ms"),
            ("dns_refresh_s = 0", "dns_refresh_s"),
            ("max_connections = 0", "max_connections"),
            ("health_path = \"healthz\"", "health_path"),
            ("eject_after = -1", "eject_after"),
        ] {
            let e = parse(&with_top(top)).unwrap_err();
            assert_eq!(e.key, key, "{top}: {e}");
        }
        let e = parse(&format!(
            "{MINIMAL}[[backend]]\nname = \"b\"\naddress = \"10.0.0.2:1\"\nmax_connections = 0\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backend[1].max_connections");
        let e = parse(&format!(
            "{MINIMAL}[[backend]]\nname = \"b\"\naddress = \"10.0.0.2:1\"\nhealth_path = \"x y\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "backend[1].health_path");
    }

    #[test]
    fn a_host_name_address_is_kept_for_resolving_again() {
        let text = MINIMAL.replace("10.0.0.1:9000", "localhost:9000");
        let c = parse(&text).unwrap();
        assert_eq!(c.backends[0].host_name.as_deref(), Some("localhost:9000"));
        assert_eq!(c.backends[0].address.port(), 9000);
        assert_eq!(parse(MINIMAL).unwrap().backends[0].host_name, None);
    }

    /// `MINIMAL` with its backend `a` at the host name `bk1:9000` and a second backend `lit` at
    /// an IP literal, as loading would make it had the resolver answered `answer` for `bk1`
    /// (`localhost` stands in for it while parsing: no resolver is asked for `bk1`).
    fn named(answer: &[SocketAddr]) -> Config {
        let text = MINIMAL.replace("10.0.0.1:9000", "localhost:9000")
            + "[[backend]]\nname = \"lit\"\naddress = \"10.0.0.9:9000\"\n";
        let mut c = parse(&text).unwrap();
        let a = &mut c.backends[0];
        a.host_name = Some("bk1:9000".into());
        a.answer = answer.to_vec();
        a.address = preferred(answer, None).unwrap();
        c
    }

    #[test]
    fn preferred_keeps_the_running_address_else_the_first_ipv4() {
        let (two, three) = (v4(127, 0, 0, 2, 80), v4(127, 0, 0, 3, 80));
        let six: SocketAddr = "[::1]:80".parse().unwrap();
        let six2: SocketAddr = "[2001:db8::2]:80".parse().unwrap();
        // Nothing running yet: the first address, the first IPv4 one when there is one.
        assert_eq!(preferred(&[three, two], None), Some(three));
        assert_eq!(preferred(&[six, two, three], None), Some(two));
        assert_eq!(preferred(&[six, six2], None), Some(six));
        // Running on an address still in the answer, wherever it is in it: it stays.
        assert_eq!(preferred(&[two, three], Some(three)), Some(three));
        assert_eq!(preferred(&[six, two], Some(six)), Some(six));
        // Its address left the answer: the preferred one of the new answer.
        assert_eq!(preferred(&[two], Some(three)), Some(two));
        assert_eq!(preferred(&[six, two], Some(three)), Some(two));
        assert_eq!(preferred(&[], Some(three)), None);
    }

    #[test]
    fn a_reordered_answer_moves_no_backend() {
        let (two, three) = (v4(127, 0, 0, 2, 9000), v4(127, 0, 0, 3, 9000));
        let running = named(&[three, two]);
        assert_eq!(running.backends[0].address, three);
        // `.2, .3` alone would pick .2; running on .3, still answered, it stays there.
        let mut fresh = named(&[two, three]);
        assert_eq!(fresh.keep_addresses(&running), []);
        assert_eq!(fresh.backends[0].address, three);
        assert_eq!(fresh.backends[1], running.backends[1]);
        // Any order, any extra address: still no move.
        let mut fresh = named(&[v4(127, 0, 0, 4, 9000), two, three]);
        assert_eq!(fresh.keep_addresses(&running), []);
        assert_eq!(fresh.backends[0].address, three);
    }

    #[test]
    fn a_backend_moves_when_its_address_left_the_answer() {
        let (two, three) = (v4(127, 0, 0, 2, 9000), v4(127, 0, 0, 3, 9000));
        let six: SocketAddr = "[::1]:9000".parse().unwrap();
        let running = named(&[three, two]);
        let mut fresh = named(&[six, two]);
        assert_eq!(
            fresh.keep_addresses(&running),
            [Moved {
                backend: "a".into(),
                from: three,
                to: two,
            }]
        );
        assert_eq!(fresh.backends[0].address, two, "IPv4 preferred");
    }

    #[test]
    fn only_the_same_name_at_the_same_host_name_keeps_its_address() {
        let (two, three) = (v4(127, 0, 0, 2, 9000), v4(127, 0, 0, 3, 9000));
        let running = named(&[three, two]);
        // `address` as written changed (a reload of an edited file): chosen afresh, no move.
        let mut other = named(&[two, three]);
        other.backends[0].host_name = Some("bk2:9000".into());
        assert_eq!(other.keep_addresses(&running), []);
        assert_eq!(other.backends[0].address, two);
        // Another name: a new backend, chosen afresh.
        let mut renamed = named(&[two, three]);
        renamed.backends[0].name = "b".into();
        assert_eq!(renamed.keep_addresses(&running), []);
        assert_eq!(renamed.backends[0].address, two);
    }

    #[test]
    fn resolve_all_gives_a_literal_itself_and_a_name_its_addresses_once() {
        assert_eq!(resolve_all("192.0.2.7:80").unwrap(), [v4(192, 0, 2, 7, 80)]);
        let answer = resolve_all("localhost:9001").unwrap();
        assert!(!answer.is_empty());
        for (i, a) in answer.iter().enumerate() {
            assert!(a.ip().is_loopback() && a.port() == 9001, "{a}");
            assert!(!answer[..i].contains(a), "{answer:?} repeats {a}");
        }
        let c = parse(&MINIMAL.replace("10.0.0.1:9000", "localhost:9001")).unwrap();
        assert_eq!(c.backends[0].answer, answer);
        assert_eq!(Some(c.backends[0].address), preferred(&answer, None));
        assert!(resolve_all("backend.invalid:9000").is_err());
    }

    #[test]
    fn bid_keys_parse_into_routes_and_backends() {
        let text = r#"
listen = "0.0.0.0:8080"
[select]
field = "/seatbid/*/bid/*/price"
floor = 0.5
[[backend]]
name = "a"
address = "10.0.0.1:9000"
timeout_ms = 60
host = "dsp.example:443"
path_prefix = "/openrtb2"
[[backend]]
name = "b"
address = "10.0.0.2:9000"
shadow = true
[[backend]]
name = "c"
address = "10.0.0.3:9000"
[[route]]
path_prefix = "/bid"
timeout_ms = 100
backends = ["a", "b"]
floor = 1.25
[[route]]
path_prefix = "/"
timeout_ms = 450
"#;
        let c = parse(text).unwrap();
        let a = &c.backends[0];
        assert_eq!(a.timeout, Some(Duration::from_millis(60)));
        assert_eq!(a.host.as_deref(), Some("dsp.example:443"));
        assert_eq!(a.path_prefix.as_deref(), Some("/openrtb2"));
        assert!(!a.shadow && c.backends[1].shadow);
        // Kept as written (the forwarding joins it with the target); `/` alone is no prefix.
        for (prefix, kept) in [
            ("/rtb/", Some("/rtb/")),
            ("/rtb//", Some("/rtb//")),
            ("/", None),
            ("//", None),
        ] {
            let c = parse(&text.replace("\"/openrtb2\"", &format!("{prefix:?}"))).unwrap();
            assert_eq!(c.backends[0].path_prefix.as_deref(), kept, "{prefix}");
        }
        assert_eq!(
            (c.routes[0].backends, c.routes[0].floor),
            (0b011, Some(1.25))
        );
        assert_eq!(
            (c.routes[1].backends, c.routes[1].floor),
            (0b111, Some(0.5))
        );
    }

    #[test]
    fn bid_keys_are_checked_by_name() {
        let backend = |extra: &str| {
            format!("{MINIMAL}[[backend]]\nname = \"b\"\naddress = \"10.0.0.2:1\"\n{extra}\n")
        };
        for (text, key) in [
            (backend("timeout_ms = 0"), "backend[1].timeout_ms"),
            (backend("host = \"a b\""), "backend[1].host"),
            (backend("host = \"u@evil.example\""), "backend[1].host"),
            (backend("host = \"a,b\""), "backend[1].host"),
            (backend("host = \"h/p\""), "backend[1].host"),
            (backend("host = \"h:xx\""), "backend[1].host"),
            (backend("host = \"h:80:90\""), "backend[1].host"),
            (backend("host = \"\""), "backend[1].host"),
            (
                backend("path_prefix = \"openrtb2\""),
                "backend[1].path_prefix",
            ),
            (backend("shadow = 1"), "backend[1].shadow"),
            (format!("{MINIMAL}[select]\nfloor = nan\n"), "select.floor"),
            (
                format!("{MINIMAL}[select]\nfloor = \"1\"\n"),
                "select.floor",
            ),
            (
                format!("{MINIMAL}[select]\nfield = \"{}\"\n", "/a".repeat(40)),
                "select.field",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.key, key, "{text}: {e}");
        }
        let route = |extra: &str| {
            format!(
                "listen = \"0.0.0.0:1\"\n[[backend]]\nname = \"a\"\naddress = \"10.0.0.1:1\"\n\
                     [[backend]]\nname = \"s\"\naddress = \"10.0.0.2:1\"\nshadow = true\n\
                     [[route]]\npath_prefix = \"/\"\ntimeout_ms = 10\n{extra}\n"
            )
        };
        let e = parse(&route("backends = [\"a\", \"x\"]")).unwrap_err();
        assert_eq!(e.key, "route[0].backends[1]", "{e}");
        assert!(e.message.contains("\"x\""), "{e}");
        let e = parse(&route("backends = [\"s\"]")).unwrap_err();
        assert_eq!(e.key, "route[0].backends", "{e}");
        let e = parse(&route("floor = inf")).unwrap_err();
        assert_eq!(e.key, "route[0].floor", "{e}");
        assert!(parse(&route("backends = [\"a\", \"s\"]")).is_ok());
    }
}

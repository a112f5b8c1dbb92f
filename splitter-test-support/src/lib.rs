//! What the splitter's black-box tests (`splitter-user/tests/`) and `cargo xtask bench` share:
//! the binary under test and its processes, raw HTTP/1.1 clients and backends over loopback TCP,
//! the metrics they scrape, and `bpftool`'s view of eBPF steering.
//!
//! Nothing here knows the splitter's internals: only its command line, its configuration file,
//! its start-up log line `splitter started listen=... admin=...`, its metrics, and the wire.
//! Every process started here is killed by PID when its guard drops; every wait is bounded.

pub mod bpftool;
pub mod client;
pub mod fdstore;
pub mod host;
pub mod http;
pub mod metrics;
pub mod peer;
pub mod process;
pub mod procfs;
pub mod splitter;
pub mod wrk;

// The suites import everything at once (`use common::*`), the modules being for this crate's
// reader.
pub use client::{assert_serves, Client, IO_TIMEOUT};
pub use fdstore::FdStore;
pub use host::{free_addr, repo_path, require_root, require_tool, with_hosts_file, TempDir};
pub use http::{bid, bid_body, http_json, post, priced_body, RawRequest, Response};
pub use metrics::Metrics;
pub use peer::{PeerConn, RawPeer};
pub use process::{spawn_logged, wait_for, LineLog, ProcGuard, READY_TIMEOUT};
pub use splitter::{config, config_with_backend_keys, Binary, Mock, Splitter};
pub use wrk::Wrk;

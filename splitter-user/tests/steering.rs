//! eBPF steering, black-box: real `splitter run` processes, real loopback connections, and the
//! pinned metrics map read back through `bpftool map dump -j`, the operator's view.
//!
//! The tests that load the program need root (CAP_BPF, CAP_NET_ADMIN, a bpffs), bpftool and a
//! build with the eBPF object. They are `#[ignore]`d, so that elsewhere `cargo test` reports them
//! skipped; test.sh runs them with `--ignored` where they can run (CI), and run so without what
//! they need they fail, naming it. Every test pins under its own
//! `/sys/fs/bpf/splitter-test-<name>-<pid>`, removed by a guard even when the test fails.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::bpftool::{self, PinDir, WorkerCell};
use common::{bid, config, spawn_logged, Mock, READY_TIMEOUT, SPLITTER};

/// Fails the test unless this build has the eBPF program.
#[track_caller]
fn require_ebpf_object() {
    if cfg!(splitter_no_ebpf) {
        panic!(
            "this build has no eBPF object ({}): run `cargo xtask setup-ebpf`, then rebuild",
            option_env!("SPLITTER_NO_EBPF_REASON").unwrap_or("see the build's warning")
        );
    }
}

/// Fails the test unless this build and this machine can load the eBPF program.
#[track_caller]
fn require_privileged() {
    require_ebpf_object();
    common::require_root("loading eBPF needs CAP_BPF and CAP_NET_ADMIN");
    common::require_tool("bpftool");
}

/// A configuration with `workers` workers, one backend, one route and `[steering]`.
fn steering_config(
    workers: usize,
    mode: &str,
    pin_dir: &Path,
    backend: &Mock,
    timeout_ms: u64,
) -> String {
    let mut c = config(
        &format!("workers = {workers}"),
        "",
        &[(backend.name.as_str(), backend.addr)],
        &[("/", timeout_ms)],
    );
    c.push_str(&format!(
        "[steering]\nmode = \"{mode}\"\npin_dir = \"{}\"\n",
        pin_dir.display()
    ));
    c
}

/// The pinned map as `bpftool` prints it, one cell per worker.
fn dump(map: &Path) -> Vec<WorkerCell> {
    bpftool::dump_pinned(map).unwrap_or_else(|e| panic!("{e:#}"))
}

/// Polls the map until `pred` holds (bounded); returns the last dump.
fn wait_dump(map: &Path, what: &str, pred: impl Fn(&[WorkerCell]) -> bool) -> Vec<WorkerCell> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let cells = dump(map);
        if pred(&cells) {
            return cells;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}: {cells:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sum(cells: &[WorkerCell], f: impl Fn(&WorkerCell) -> u64) -> u64 {
    cells.iter().map(f).sum()
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn ebpf_mode_loads_attaches_logs_it_and_unpins_on_exit() {
    require_privileged();
    let pins = PinDir::new("test-load");
    let backend = SPLITTER.mock_backend("a", &[]);
    let mut s = SPLITTER.run(&steering_config(2, "ebpf", &pins.path, &backend, 450));
    let logs = s.log_snapshot().join("\n");
    assert!(
        logs.contains("steering=\"ebpf\"") && logs.contains("eBPF sk_reuseport"),
        "start-up did not report eBPF steering:\n{logs}"
    );
    assert!(pins.map().exists(), "no pin at {}", pins.map().display());
    // The attached program must not break serving.
    s.request(&bid("/", "r1")).assert_won("r1");

    s.signal(libc::SIGTERM);
    let status = s.proc.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "exit status {status:?}");
    assert!(!pins.map().exists(), "the pin outlived the process");
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn bpftool_shows_exactly_the_requests_sent() {
    require_privileged();
    let pins = PinDir::new("test-count");
    let backend = SPLITTER.mock_backend("a", &[]);
    let s = SPLITTER.run(&steering_config(2, "ebpf", &pins.path, &backend, 450));
    const SENT: u64 = 17;
    // Some on fresh connections (spread over the workers), some on one kept-alive connection.
    for i in 0..SENT / 2 {
        s.request(&bid("/", &format!("fresh-{i}")))
            .assert_won(&format!("fresh-{i}"));
    }
    let mut kept = s.client();
    for i in SENT / 2..SENT {
        kept.request(&bid("/", &format!("kept-{i}")))
            .assert_won(&format!("kept-{i}"));
    }
    let cells = dump(&pins.map());
    assert_eq!(cells.len(), 2, "one entry per worker: {cells:?}");
    assert_eq!(sum(&cells, |c| c.requests), SENT, "{cells:?}");
    // `/metrics` reads the same memory: the two views agree.
    let metrics = s.admin_get("/metrics").body_str();
    assert!(
        metrics.contains(&format!("splitter_requests_total {SENT}\n")),
        "/metrics disagrees with bpftool ({cells:?}):\n{metrics}"
    );
    // And so does `splitter top`, which maps the pinned map as the workers do.
    let pin_dir = pins.path.to_str().unwrap();
    let (status, out, err) =
        SPLITTER.cli(&["top", "--once", "-p", pin_dir], Duration::from_secs(30));
    assert!(status.success(), "{err}");
    let all = out
        .lines()
        .find(|l| l.trim_start().starts_with("all"))
        .unwrap_or_default();
    let total: Vec<&str> = all.split_whitespace().collect();
    assert_eq!(total.get(1), Some(&SENT.to_string().as_str()), "{out}");
    assert_eq!(
        out.lines().count(),
        4,
        "a header, two workers, the total: {out}"
    );
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn busy_worker_gets_no_new_connections_while_another_is_idle() {
    require_privileged();
    let pins = PinDir::new("test-busy");
    // Slow enough that the first request stays in flight while the others connect.
    let backend = SPLITTER.mock_backend("slow", &["--delay-ms", "3000"]);
    let s = SPLITTER.run(&steering_config(2, "ebpf", &pins.path, &backend, 5000));
    let map = pins.map();

    let mut slow = s.client();
    slow.send(&bid("/", "slow"));
    let cells = wait_dump(&map, "a request in flight", |c| {
        sum(c, |c| c.in_flight) == 1
    });
    let busy = cells.iter().position(|c| c.in_flight == 1).unwrap();
    let idle = 1 - busy;

    // The busy worker weighs its one connection plus IN_FLIGHT_WEIGHT for its request; the idle
    // worker wins every new connection while it has fewer than that.
    const NEW: u64 = 1 + splitter_common::IN_FLIGHT_WEIGHT;
    let mut held = Vec::new();
    for k in 1..=NEW {
        held.push(TcpStream::connect(s.addr).expect("connect"));
        wait_dump(&map, "the connection accepted", |c| {
            sum(c, |c| c.accepted) == 1 + k
        });
    }
    let cells = dump(&map);
    assert_eq!(
        (cells[busy].accepted, cells[idle].accepted),
        (1, NEW),
        "worker {busy} has a request in flight: every new connection belongs to worker \
         {idle}: {cells:?}"
    );
    // The slow request still completes on the busy worker.
    slow.read_response().assert_won("slow");
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn idle_workers_take_new_connections_in_turn() {
    require_privileged();
    let pins = PinDir::new("test-spread");
    let backend = SPLITTER.mock_backend("a", &[]);
    let s = SPLITTER.run(&steering_config(2, "ebpf", &pins.path, &backend, 450));
    let map = pins.map();
    // With nothing in flight the fewest open connections wins, so one at a time (each accepted
    // before the next) the two workers alternate: 4 and 4, where a 4-tuple hash gives any split.
    let mut held = Vec::new();
    for k in 1..=8 {
        held.push(s.client());
        wait_dump(&map, "the connection counted", |c| {
            sum(c, |c| c.connections) == k
        });
    }
    let cells = dump(&map);
    assert_eq!(
        (cells[0].connections, cells[1].connections),
        (4, 4),
        "{cells:?}"
    );
    // And a request on each still works.
    for (i, c) in held.iter_mut().enumerate() {
        c.request(&bid("/", &format!("c{i}")))
            .assert_won(&format!("c{i}"));
    }
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn a_burst_of_connections_does_not_herd_onto_one_worker() {
    require_privileged();
    let pins = PinDir::new("test-burst");
    let backend = SPLITTER.mock_backend("a", &[]);
    let s = SPLITTER.run(&steering_config(2, "ebpf", &pins.path, &backend, 450));
    let map = pins.map();
    // Back to back, without waiting for the workers to accept: their own gauges lag, so only
    // the program's count of what it steered keeps the choice from repeating.
    const BURST: u64 = 16;
    let held: Vec<_> = (0..BURST).map(|_| s.client()).collect();
    let cells = wait_dump(&map, "the burst accepted", |c| {
        sum(c, |c| c.accepted) == BURST
    });
    let most = cells.iter().map(|c| c.accepted).max().unwrap();
    assert!(most <= BURST / 2 + 2, "{cells:?}");
    drop(held);
}

/// What an unprivileged `splitter run` did: its exit (None if it kept running) and its output.
struct Unprivileged {
    status: Option<std::process::ExitStatus>,
    output: String,
}

/// Runs the splitter without CAP_BPF, CAP_NET_ADMIN or CAP_SYS_ADMIN (dropped from the bounding
/// set by `setpriv`, so even root's exec does not get them back) until it exits or logs
/// `splitter started`, then stops it.
fn run_unprivileged(config: &str, tag: &str) -> Unprivileged {
    let dir = common::TempDir::new(tag);
    let path = dir.write("splitter.toml", config);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args([
            "--inh-caps=-all",
            "--bounding-set=-bpf,-net_admin,-sys_admin",
            "--",
        ])
        .arg(SPLITTER.path());
        c
    } else {
        Command::new(SPLITTER.path())
    };
    // Killed and reaped on drop, whatever happens below.
    let (mut proc, log) = spawn_logged(
        cmd.args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
    );
    // No start-up line means its output ended: it is exiting.
    let status = match log.wait_line(0, READY_TIMEOUT, |l| l.contains("splitter started")) {
        Some(_) => None,
        None => proc.wait_exit(Duration::from_secs(10)),
    };
    Unprivileged {
        status,
        output: log.text(),
    }
}

#[test]
#[cfg_attr(
    splitter_no_ebpf,
    ignore = "needs a build with the eBPF object (without, that is the error reported)"
)]
fn ebpf_mode_without_privileges_fails_naming_the_capabilities() {
    require_ebpf_object();
    let pins = PinDir::new("test-noprivs");
    let backend = SPLITTER.mock_backend("a", &[]);
    let run = run_unprivileged(
        &steering_config(1, "ebpf", &pins.path, &backend, 450),
        "noprivs",
    );
    let status = run
        .status
        .expect("`mode = \"ebpf\"` without privileges must not start");
    assert!(!status.success(), "exit status {status:?}");
    assert!(
        run.output.contains("CAP_BPF") && run.output.contains("CAP_NET_ADMIN"),
        "the error must name the missing capabilities:\n{}",
        run.output
    );
    assert!(!pins.map().exists());
}

#[test]
fn auto_mode_without_privileges_falls_back_to_reuseport_and_says_why() {
    let pins = PinDir::new("test-auto");
    let backend = SPLITTER.mock_backend("a", &[]);
    let run = run_unprivileged(
        &steering_config(1, "auto", &pins.path, &backend, 450),
        "auto",
    );
    assert!(run.status.is_none(), "did not start:\n{}", run.output);
    assert!(
        run.output.contains("falling back to the SO_REUSEPORT hash")
            && run.output.contains("steering=\"reuseport\""),
        "no fallback line, or the start line does not say reuseport:\n{}",
        run.output
    );
}

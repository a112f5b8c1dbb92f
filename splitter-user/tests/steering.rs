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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bpftool::{self, PinDir, WorkerCell};
use common::{bid, config, spawn_logged, FdStore, Mock, READY_TIMEOUT, SPLITTER};

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

/// The program passes the verifier whatever the worker count (it weighs a window of at most
/// `MAX_SCAN` workers): it failed with "program is too large" from 64 workers on.
#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn ebpf_mode_loads_with_many_workers() {
    require_privileged();
    let backend = SPLITTER.mock_backend("a", &[]);
    for workers in [64, splitter_common::MAX_WORKERS] {
        let pins = PinDir::new(&format!("test-many-{workers}"));
        let s = SPLITTER.run(&steering_config(workers, "ebpf", &pins.path, &backend, 450));
        let logs = s.log_snapshot().join("\n");
        assert!(
            logs.contains("steering=\"ebpf\""),
            "{workers} workers: not steered by eBPF:\n{logs}"
        );
        s.request(&bid("/", "many")).assert_won("many");
        assert_eq!(dump(&pins.map()).len(), workers, "one cell per worker");
    }
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

/// A configuration on fixed addresses (a restart takes over only the address it is given), with
/// eBPF steering pinning under `pins` and the handover socket `handover` ("" for none).
fn restart_config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    handover: &Path,
    pins: &PinDir,
    backend: &Mock,
) -> String {
    format!(
        "listen = \"{listen}\"\nadmin_listen = \"{admin}\"\nworkers = 2\n\
         handover_socket = \"{}\"\n\
         [[backend]]\nname = \"{}\"\naddress = \"{}\"\n\
         [[route]]\npath_prefix = \"/\"\ntimeout_ms = 450\n\
         [steering]\nmode = \"ebpf\"\npin_dir = \"{}\"\n",
        handover.display(),
        backend.name,
        backend.addr,
        pins.path.display()
    )
}

/// Clients sending bids back to back, each on a new connection (so that each is steered),
/// until dropped; [`Load::finish`] tells how many were answered 200 and what failed.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(addr: std::net::SocketAddr, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..clients)
            .map(|c| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let (mut ok, mut failed) = (0, Vec::new());
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let id = format!("c{c}-{i}");
                        let answer = common::Client::try_connect(addr)
                            .map_err(|e| format!("connect: {e}"))
                            .and_then(|mut client| {
                                client.try_send(&bid("/", &id)).map_err(|e| e.to_string())?;
                                client.try_read_response()
                            });
                        match answer {
                            Ok(r) if r.status == 200 => ok += 1,
                            Ok(r) => failed.push(format!("{id}: status {}", r.status)),
                            Err(e) => failed.push(format!("{id}: {e}")),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops the clients: requests answered 200, and the failures.
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread"))
            .fold((0, Vec::new()), |(ok, mut failed), (o, f)| {
                failed.extend(f);
                (ok + o, failed)
            })
    }
}

/// The `steered` total of `splitter top --once` on `pins`: connections the program sent.
fn steered_total(pins: &PinDir) -> u64 {
    let pin_dir = pins.path.to_str().unwrap();
    let (status, out, err) =
        SPLITTER.cli(&["top", "--once", "-p", pin_dir], Duration::from_secs(30));
    assert!(status.success(), "splitter top: {err}");
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|&h| h == "steered")
        .unwrap_or_else(|| panic!("no steered column: {out}"));
    let all = out
        .lines()
        .find(|l| l.trim_start().starts_with("all"))
        .unwrap_or_else(|| panic!("no total row: {out}"));
    all.split_whitespace()
        .nth(column)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no steered total: {out}"))
}

/// The new process steers with eBPF: its start-up says so, its program sends new connections
/// into its own pinned map, which `bpftool` and `splitter top` read.
#[track_caller]
fn assert_steers_with_ebpf(s: &common::Splitter, pins: &PinDir) {
    let logs = s.log_snapshot().join("\n");
    assert!(
        logs.contains("took the listening sockets over")
            && logs.contains("eBPF sk_reuseport")
            && logs.contains("steering=\"ebpf\""),
        "the new process does not steer with eBPF:\n{logs}"
    );
    let before = steered_total(pins);
    for i in 0..8 {
        s.request(&bid("/", &format!("after-{i}")))
            .assert_won(&format!("after-{i}"));
    }
    let after = steered_total(pins);
    assert!(
        after >= before + 8,
        "8 new connections, but the pinned map's `steered` went from {before} to {after}"
    );
    let cells = dump(&pins.map());
    assert_eq!(cells.len(), 2, "{cells:?}");
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn a_handover_under_load_keeps_ebpf_steering_and_fails_no_request() {
    require_privileged();
    let pins = PinDir::new("test-handover");
    let backend = SPLITTER.mock_backend("a", &[]);
    let dir = common::TempDir::new("ebpf-handover");
    let (listen, admin) = (common::free_addr(), common::free_addr());
    let config = restart_config(
        listen,
        admin,
        &dir.path.join("handover.sock"),
        &pins,
        &backend,
    );
    let mut old = SPLITTER.run(&config);

    let load = Load::start(listen, 2);
    std::thread::sleep(Duration::from_millis(500));
    // Twice: the second new process takes the sockets from one that itself took them over.
    for restart in 1..=2 {
        let new = SPLITTER.run(&config);
        let status = old
            .proc
            .wait_exit(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("restart {restart}: the old process did not exit"));
        assert!(status.success(), "restart {restart}: {status:?}");
        std::thread::sleep(Duration::from_millis(500));
        old = new;
    }
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed ({ok} ok): {failed:?}",
        failed.len()
    );
    assert!(ok > 50, "only {ok} requests answered");

    assert!(pins.map().exists(), "no pin after the handover");
    assert_steers_with_ebpf(&old, &pins);
    old.signal(libc::SIGTERM);
    assert!(old.proc.wait_exit(Duration::from_secs(10)).is_some());
    assert!(!pins.map().exists(), "the pin outlived the last process");
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool, setpriv and a build with the eBPF object"]
fn restarts_from_the_descriptor_store_keep_ebpf_steering_also_after_a_crash() {
    require_privileged();
    common::require_tool("setpriv");
    let pins = PinDir::new("test-fdstore");
    let backend = SPLITTER.mock_backend("a", &[]);
    let dir = common::TempDir::new("ebpf-fdstore");
    let (listen, admin) = (common::free_addr(), common::free_addr());
    let config = dir.write(
        "splitter.toml",
        &restart_config(listen, admin, Path::new(""), &pins, &backend),
    );
    let store = FdStore::new(&dir, SPLITTER);
    let started = |log: &common::LineLog| {
        let text = log.text();
        assert!(
            text.contains("took the listening sockets over") && text.contains("steering=\"ebpf\""),
            "{text}"
        );
    };

    // `systemctl restart`: the first process stores its sockets and stops; the next one starts
    // on them, steering with eBPF, while clients keep connecting.
    let (mut first, _) = store.start(&config, &[]);
    store.wait_stored(2);
    let load = Load::start(listen, 2);
    std::thread::sleep(Duration::from_millis(500));
    first.signal(libc::SIGTERM);
    let status = first.wait_exit(Duration::from_secs(15)).expect("stops");
    assert!(status.success(), "{status:?}");
    let (mut second, log) = store.start(&config, &[]);
    started(&log);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} failed ({ok} ok): {failed:?}",
        failed.len()
    );
    assert!(ok > 20, "only {ok} requests answered");
    assert!(steered_total(&pins) > 0);
    store.wait_stored(2);

    // A crash leaves the sockets in the dead process's socket array, which its program, still
    // attached, keeps alive. The next start takes them back, also without CAP_SYS_ADMIN (the
    // unit's capabilities), which cannot look that array up.
    second.signal(libc::SIGKILL);
    second.wait_exit(Duration::from_secs(10)).expect("killed");
    let (mut third, log) = store.start(
        &config,
        &[
            "setpriv",
            "--inh-caps=-sys_admin",
            "--bounding-set=-sys_admin",
            "--",
        ],
    );
    started(&log);
    let before = steered_total(&pins);
    for i in 0..8 {
        common::Client::connect(listen)
            .request(&bid("/", &format!("after-{i}")))
            .assert_won(&format!("after-{i}"));
    }
    assert!(steered_total(&pins) >= before + 8, "{}", log.text());
    third.signal(libc::SIGTERM);
    assert!(
        third.wait_exit(Duration::from_secs(10)).is_some(),
        "{}",
        log.text()
    );
    assert!(!pins.map().exists(), "the pin outlived the last process");
}

/// systemd's descriptor store takes every listener of the most workers a configuration may ask
/// for: more than one `SCM_RIGHTS` message carries (253), so they go in several, and the next
/// start gets them all back.
#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn the_descriptor_store_takes_the_listeners_of_256_workers() {
    require_privileged();
    let pins = PinDir::new("test-fdstore-many");
    let backend = SPLITTER.mock_backend("a", &[]);
    let dir = common::TempDir::new("fdstore-many");
    let (listen, admin) = (common::free_addr(), common::free_addr());
    let workers = splitter_common::MAX_WORKERS;
    let config = dir.write(
        "splitter.toml",
        &restart_config(listen, admin, Path::new(""), &pins, &backend).replacen(
            "workers = 2",
            &format!("workers = {workers}"),
            1,
        ),
    );
    let store = FdStore::new(&dir, SPLITTER);
    let (mut first, _) = store.start(&config, &[]);
    store.wait_stored(workers);
    first.signal(libc::SIGTERM);
    assert!(first.wait_exit(Duration::from_secs(15)).is_some());
    let (mut second, log) = store.start(&config, &[]);
    assert!(
        log.text().contains(&format!(
            "took the listening sockets over listeners={workers}"
        )),
        "{}",
        log.text()
    );
    common::Client::connect(listen)
        .request(&bid("/", "many-stored"))
        .assert_won("many-stored");
    second.signal(libc::SIGTERM);
    assert!(second.wait_exit(Duration::from_secs(15)).is_some());
}

//! The process: memory that returns after large messages, clients that do not read, running
//! out of descriptors, metrics across reloads, `max_in_flight` exactly, and the absolute-form
//! request target.

use std::net::TcpStream;
use std::os::unix::process::CommandExt as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::common::*;
use super::{exclusive, mib, per_backend, priced_peer, rss, WAIT};

/// Idle connections may grow the splitter's RSS by at most this, whatever they carried.
const IDLE_GROWTH: u64 = 16 << 20;

/// Opens `n` keep-alive connections and waits until the splitter has accepted them all, then a
/// moment for the process to settle.
fn open_idle(s: &Splitter, n: usize) -> Vec<Client> {
    let clients: Vec<Client> = (0..n).map(|_| s.client()).collect();
    let m = s.wait_metrics(WAIT, |m| {
        m.get("splitter_client_connections", &[]) == n as f64
    });
    assert_eq!(
        m.get("splitter_client_connections", &[]),
        n as f64,
        "{}",
        m.text
    );
    // Timing condition, not synchronisation: let the allocator settle before measuring.
    thread::sleep(Duration::from_millis(300));
    clients
}

#[test]
fn idle_connections_keep_nothing_of_a_large_request() {
    let _exclusive = exclusive();
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "max_request_body = 262144",
        "",
        &[("good", good.addr)],
        &[("/", 5000)],
    ));
    let mut clients = open_idle(&s, 100);
    let before = rss(&s);
    // One request with a body of exactly max_request_body on each connection, one after the
    // other: only what each connection keeps afterwards adds up.
    for (i, c) in clients.iter_mut().enumerate() {
        let id = format!("bigreq-{i}");
        let head = format!(r#"{{"id":"{id}","pad":""#);
        let body = format!("{head}{}\"}}", "p".repeat(262_144 - head.len() - 2));
        assert_eq!(body.len(), 262_144);
        c.request(&post("/x", &id, &body)).assert_won(&id);
    }
    thread::sleep(Duration::from_millis(300));
    let after = rss(&s);
    assert!(
        after.saturating_sub(before) < IDLE_GROWTH,
        "100 idle connections that each carried a 256 KiB request grew RSS from {:.1} to {:.1} \
         MiB (100 x 256 KiB = 25 MiB if each kept its buffer)",
        mib(before),
        mib(after)
    );
    drop(clients);
}

#[test]
fn idle_connections_keep_nothing_of_a_large_reply() {
    let _exclusive = exclusive();
    let big = SPLITTER.mock_backend("big", &["--price", "1", "--body-bytes", "900000"]);
    let s = SPLITTER.run(&config(
        "max_response_bytes = 2000000",
        "",
        &[("big", big.addr)],
        &[("/", 5000)],
    ));
    let clients = open_idle(&s, 100);
    let before = rss(&s);
    // One request on each connection, by 4 threads of 25 connections (a reply costs the debug
    // build ~150 ms of CPU: two workers share the work).
    let mut quarters: Vec<Vec<Client>> = (0..4).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        quarters[i % 4].push(c);
    }
    let clients: Vec<Client> = quarters
        .into_iter()
        .enumerate()
        .map(|(q, mut cs)| {
            thread::spawn(move || {
                for (i, c) in cs.iter_mut().enumerate() {
                    let id = format!("bigrep-{q}-{i}");
                    let r = c.request(&bid("/x", &id));
                    r.assert_won(&id);
                    assert!(r.body.len() >= 850_000, "a 900 KB reply: {}", r.body.len());
                }
                cs
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    // The allocator gives freed pages back a second or two after they are freed: wait for it,
    // within a bound.
    let mut after = rss(&s);
    wait_for(Duration::from_secs(10), || {
        after = rss(&s);
        after.saturating_sub(before) < IDLE_GROWTH
    });
    assert!(
        after.saturating_sub(before) < IDLE_GROWTH,
        "100 idle connections that each carried a 900 KB reply grew RSS from {:.1} to {:.1} MiB",
        mib(before),
        mib(after)
    );
    drop(clients);
}

/// What the process may keep, once idle again, of a burst of large replies.
const BURST_GROWTH: u64 = 8 << 20;

#[test]
fn memory_taken_by_a_burst_of_large_replies_is_given_back() {
    // Not per connection this time: 16 clients at once, three times, each reply about 1 MB,
    // then quiet. The worker's parse buffers and the allocator's freed pages must go back to
    // the system (they stayed: 6 MiB grew to 48 and remained there).
    let _exclusive = exclusive();
    let args = ["--price", "1", "--body-bytes", "900000"];
    let (a, b) = (
        SPLITTER.mock_backend("a", &args),
        SPLITTER.mock_backend("b", &args),
    );
    let s = SPLITTER.run(&config(
        "workers = 1\nmax_response_bytes = 2000000",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 10_000)],
    ));
    let mut warm = s.client();
    warm.request(&bid("/x", "warm")).assert_won("warm");
    drop(warm);
    thread::sleep(Duration::from_millis(1500));
    let before = rss(&s);
    for round in 0..3 {
        let clients: Vec<_> = (0..16)
            .map(|i| {
                let addr = s.addr;
                thread::spawn(move || {
                    let id = format!("burst-{round}-{i}");
                    let r = Client::connect(addr).request(&bid("/x", &id));
                    r.assert_won(&id);
                })
            })
            .collect();
        for c in clients {
            c.join().expect("client thread");
        }
    }
    let mut after = rss(&s);
    // The allocator returns freed pages after a delay: wait for it, within a bound.
    wait_for(Duration::from_secs(10), || {
        after = rss(&s);
        after < before + BURST_GROWTH
    });
    assert!(
        after < before + BURST_GROWTH,
        "a burst of large replies left RSS at {:.1} MiB, from {:.1} before it",
        mib(after),
        mib(before)
    );
}

/// SPEC section 8: what an idle keep-alive client connection may cost the splitter.
const IDLE_CONNECTION_BUDGET: u64 = 4 << 10;

#[test]
fn an_idle_keep_alive_connection_costs_at_most_4_kib() {
    let _exclusive = exclusive();
    let good = SPLITTER.mock_backend("good", &["--price", "1", "--body-bytes", "2048"]);
    let s = SPLITTER.run(&config("", "", &[("good", good.addr)], &[("/", 5000)]));
    // Warm up first: the workers' buffer pools, backend connections and allocator arenas are
    // the process's, not the idle connections'.
    let mut warm = open_idle(&s, 64);
    for (i, c) in warm.iter_mut().enumerate() {
        let id = format!("warm-{i}");
        c.request(&bid("/x", &id)).assert_won(&id);
    }
    let before = rss(&s);
    // Each new connection carries one 2 KB request and reply, as a balancer's pool would, and
    // then waits.
    const IDLE: usize = 2000;
    let mut idle = Vec::with_capacity(IDLE);
    for i in 0..IDLE {
        let mut c = s.client();
        let id = format!("idle-{i}");
        c.request(&bid("/x", &id)).assert_won(&id);
        idle.push(c);
    }
    let m = s.wait_metrics(WAIT, |m| {
        m.get("splitter_client_connections", &[]) == (64 + IDLE) as f64
    });
    assert_eq!(
        m.get("splitter_client_connections", &[]),
        (64 + IDLE) as f64
    );
    // Timing condition, not synchronisation: let the allocator settle before measuring.
    thread::sleep(Duration::from_millis(300));
    let after = rss(&s);
    let per_connection = after.saturating_sub(before) / IDLE as u64;
    assert!(
        per_connection <= IDLE_CONNECTION_BUDGET,
        "{IDLE} idle keep-alive connections grew RSS from {:.1} to {:.1} MiB: {per_connection} \
         bytes each, over {IDLE_CONNECTION_BUDGET}",
        mib(before),
        mib(after)
    );
    drop((warm, idle));
}

/// A splitter with `send_timeout_ms = 300` in front of one backend whose replies have
/// `body_bytes` of body, and the backend.
fn slow_reader_setup(body_bytes: &str) -> (Splitter, Mock) {
    let big = SPLITTER.mock_backend("big", &["--price", "1", "--body-bytes", body_bytes]);
    let s = SPLITTER.run(&config(
        "send_timeout_ms = 300\nmax_response_bytes = 10000000",
        "",
        &[("big", big.addr)],
        &[("/", 5000)],
    ));
    (s, big)
}

/// Waits until `s` has served at least `requests` and holds no client connection, and
/// `sink`, which never read its responses, sees its connection end.
fn assert_sink_dropped(s: &Splitter, sink: &mut Client, requests: f64) {
    let t = Instant::now();
    let m = s.wait_metrics(WAIT, |m| {
        m.get("splitter_requests_total", &[]) >= requests
            && m.get("splitter_client_connections", &[]) == 0.0
    });
    assert_eq!(
        m.get("splitter_client_connections", &[]),
        0.0,
        "a client that reads nothing is still connected {:?} later (send_timeout_ms = 300)\n{}",
        t.elapsed(),
        m.text
    );
    assert!(
        sink.closed_within(WAIT),
        "the client's socket must see the end of the connection"
    );
    assert!(
        m.get("splitter_client_timeouts_total", &[]) >= 1.0,
        "a client dropped for not reading is a client timeout\n{}",
        m.text
    );
    // Reset, not closed: what it did not read is not left queued in the kernel, in a socket
    // in FIN-WAIT-1 for as long as the client goes on not reading.
    let lingering = fin_wait_1(s.addr.port());
    assert!(
        lingering.is_empty(),
        "closed gracefully, still queued: {lingering:?}"
    );
}

/// The lines of `/proc/net/tcp` for sockets on local port `port` in FIN-WAIT-1.
fn fin_wait_1(port: u16) -> Vec<String> {
    let local = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "04"
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_client_that_never_reads_is_dropped_after_send_timeout() {
    let _exclusive = exclusive();
    let (s, _big) = slow_reader_setup("900000");
    let mut sink = s.client();
    sink.request(&bid("/x", "sink-0")).assert_won("sink-0");
    // 40 pipelined requests for 900 KB replies each (36 MB), and then never a read.
    let mut all = Vec::new();
    for i in 1..=40 {
        all.extend_from_slice(&bid("/x", &format!("sink-{i}")));
    }
    sink.send(&all);
    assert_sink_dropped(&s, &mut sink, 2.0);
    // Others are served.
    let r = s.request(&bid("/x", "after-sink"));
    r.assert_won("after-sink");
}

#[test]
fn a_client_that_does_not_read_its_one_large_response_is_dropped_after_send_timeout() {
    let _exclusive = exclusive();
    // One reply larger than what the socket buffers between the splitter and the client hold,
    // so its write cannot end while the client, waiting for nothing else, never reads.
    let (s, _big) = slow_reader_setup("9000000");
    let mut sink = s.client();
    sink.send(&bid("/x", "sink-0"));
    assert_sink_dropped(&s, &mut sink, 1.0);
}

/// The highest number of descriptors the splitter may open in the test below.
const NOFILE: libc::rlim_t = 64;

#[test]
fn out_of_descriptors_it_neither_spins_nor_loses_the_admin_port() {
    let _exclusive = exclusive();
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run_with(
        &config("workers = 2", "", &[("good", good.addr)], &[("/", 1000)]),
        |cmd| {
            // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
            unsafe {
                cmd.pre_exec(|| {
                    let limit = libc::rlimit {
                        rlim_cur: NOFILE,
                        rlim_max: NOFILE,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        },
    );
    let pid = s.pid();
    assert_serves(s.addr, "/x", "fd-before");
    // 100 connections: the kernel completes them all (the accept queue is long), the splitter
    // runs out of descriptors accepting them.
    let held: Vec<TcpStream> = (0..100)
        .map(|i| {
            TcpStream::connect_timeout(&s.addr, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("connection {i}: {e}"))
        })
        .collect();
    let full = wait_for(WAIT, || procfs::open_fds(pid) as u64 >= NOFILE - 4);
    assert!(
        full.is_some(),
        "the splitter should be near its {NOFILE} descriptors, has {}",
        procfs::open_fds(pid)
    );
    // Timing condition: accepts fail with EMFILE all along this window.
    let cpu = procfs::cpu_time(pid);
    thread::sleep(Duration::from_secs(2));
    let spent = procfs::cpu_time(pid) - cpu;
    assert!(
        spent < Duration::from_millis(500),
        "out of descriptors with connections waiting, the process spent {spent:?} of CPU in 2 s: \
         its accept loops spin"
    );
    // Again and again, not once: the descriptor a request took is held in reserve again after
    // it, and kept while the admin port waits for the next one. The rounds are half a second
    // apart, so the workers' accept loops try for a descriptor between them.
    for round in 0..4 {
        if round > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        let r = s.admin_get("/healthz");
        assert_eq!(
            r.status, 200,
            "GET /healthz on the admin port while out of descriptors (round {round}): {r:?}"
        );
    }
    // And the scrape still reads the process's figures, which need descriptors of their own:
    // this is when the alert on descriptors near the limit must see them.
    let m = s.metrics();
    let open = m.find("splitter_process_open_fds", &[]).unwrap_or(0.0);
    assert!(
        open >= (NOFILE - 4) as f64,
        "open fds while out of descriptors: {open}\n{}",
        m.text
    );
    let rss = m
        .find("splitter_process_resident_memory_bytes", &[])
        .unwrap_or(0.0);
    assert!(rss > 0.0, "RSS while out of descriptors: {rss}\n{}", m.text);
    drop(held);
    // New clients are served again once descriptors are free (the accept loops back off up
    // to a second).
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let attempt = Client::try_connect(s.addr)
            .map_err(|e| e.to_string())
            .and_then(|mut c| {
                c.try_send(&bid("/x", "fd-after"))
                    .map_err(|e| e.to_string())?;
                c.try_read_response_within(Duration::from_secs(3))
            });
        let last = match attempt {
            Ok(r) if r.status == 200 => {
                r.assert_won("fd-after");
                break;
            }
            Ok(r) => format!("{r:?}"),
            Err(e) => e,
        };
        assert!(
            Instant::now() < until,
            "no new client served within 10 s of freeing the descriptors; last: {last}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_descriptor_table_is_grown_before_the_workers_start() {
    // Grown on demand, the kernel would first wait for an RCU grace period with every worker
    // blocked in accept: 10-15 ms, each time the open sockets first passed a power of two.
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "workers = 2",
        "",
        &[("good", good.addr)],
        &[("/", 1000)],
    ));
    let pid = s.pid();
    // Without the reservation a fresh process's table holds 64 or 256 descriptors.
    let want = procfs::descriptor_limit(pid).min(1 << 20) as usize;
    assert!(
        procfs::fd_table_size(pid) >= want,
        "descriptor table of {} at start, limit {want}",
        procfs::fd_table_size(pid)
    );
    assert_serves(s.addr, "/x", "fd-table");
}

/// Sends SIGHUP and waits for the reload to be logged as applied.
fn reload(s: &Splitter, config: &str) {
    s.rewrite_config(config);
    let from = s.log_count();
    s.signal(libc::SIGHUP);
    let line = s
        .wait_log(from, Duration::from_secs(10), |l| {
            l.contains("configuration reloaded") || l.to_ascii_lowercase().contains("refused")
        })
        .unwrap_or_else(|| panic!("no reload log line: {:?}", s.log_snapshot()));
    assert!(line.contains("configuration reloaded"), "{line}");
}

/// `connects - closed` of `backend` in `m`, if it is in the metrics.
fn open_by_metrics(m: &Metrics, backend: &str) -> Option<f64> {
    let connects = m.find("splitter_backend_connects_total", &[("backend", backend)])?;
    Some(connects - per_backend(m, "splitter_backend_connections_closed_total", backend))
}

#[test]
fn backend_connection_counts_stay_exact_across_a_reload_that_removes_a_backend() {
    let _exclusive = exclusive();
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "2", "--delay-ms", "150"]);
    let routes = [("/", 1000)];
    let s = SPLITTER.run(&config(
        "workers = 2",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &routes,
    ));
    // One client connection idle across the reload, as a balancer keeps some.
    let mut idle = s.client();
    idle.request(&bid("/x", "rl-idle")).assert_won("rl-idle");
    // Four clients sending back to back, before, during and after the reload; their
    // connections stay open (idle) afterwards too.
    const CLIENTS: usize = 4;
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let mut client = s.client();
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let id = format!("rl-{c}-{i}");
                    i += 1;
                    client.request(&bid("/x", &id)).assert_won(&id);
                }
                (client, i)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    reload(&s, &config("workers = 2", "", &[("a", a.addr)], &routes));
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let clients: Vec<(Client, usize)> = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .collect();
    assert!(
        clients.iter().all(|(_, n)| *n > 0),
        "every client was served"
    );

    // Settled: b's last replies (150 ms) are in, late replies drained (1 s at most).
    let pid = s.pid();
    let settled = |m: &Metrics| {
        let a_open = procfs::connections_to_port(pid, a.addr.port()).len() as f64;
        let b_open = procfs::connections_to_port(pid, b.addr.port()).len() as f64;
        open_by_metrics(m, "a") == Some(a_open)
            && b_open == 0.0
            && open_by_metrics(m, "b").is_none_or(|n| n == 0.0)
    };
    let m = s.wait_metrics(Duration::from_secs(5), settled);
    let a_sockets = procfs::connections_to_port(pid, a.addr.port());
    let b_sockets = procfs::connections_to_port(pid, b.addr.port());
    assert_eq!(
        b_sockets.len(),
        0,
        "the removed backend b: the splitter still has connections to it: {b_sockets:?}\n{}",
        m.text
    );
    if let Some(open) = open_by_metrics(&m, "b") {
        assert_eq!(open, 0.0, "b: connects - closed\n{}", m.text);
    }
    let a_open = open_by_metrics(&m, "a").expect("a in the metrics");
    assert_eq!(
        a_open,
        a_sockets.len() as f64,
        "a: connects - closed must be what is open: {a_sockets:?}\n{}",
        m.text
    );
    assert!(
        (0.0..=CLIENTS as f64).contains(&a_open),
        "a: {a_open} open for {CLIENTS} concurrent clients\n{}",
        m.text
    );
    idle.request(&bid("/x", "rl-idle-2"))
        .assert_won("rl-idle-2");
    drop(clients);
}

#[test]
fn a_backend_added_by_a_reload_starts_its_counters_at_zero() {
    let _exclusive = exclusive();
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "2"]);
    let c = SPLITTER.mock_backend("c", &["--price", "3"]);
    let routes = [("/", 1000)];
    let s = SPLITTER.run(&config(
        "workers = 1",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &routes,
    ));
    let mut client = s.client();
    for i in 0..5 {
        let id = format!("zero-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("b"));
    }
    // b goes, c comes: c has answered nothing yet, won nothing, connected nowhere.
    reload(
        &s,
        &config("workers = 1", "", &[("a", a.addr), ("c", c.addr)], &routes),
    );
    let m = s.metrics();
    for (name, labels) in [
        (
            "splitter_backend_responses_total",
            vec![("backend", "c"), ("outcome", "valid")],
        ),
        ("splitter_backend_wins_total", vec![("backend", "c")]),
        ("splitter_backend_connects_total", vec![("backend", "c")]),
    ] {
        assert_eq!(
            m.find(name, &labels),
            Some(0.0),
            "{name}{labels:?} of a backend just added, before any request: it must not carry \
             another backend's counts\n{}",
            m.text
        );
    }
    let r = client.request(&bid("/x", "zero-c"));
    r.assert_won("zero-c");
    assert_eq!(r.backend(), Some("c"));
    let m = s.metrics();
    assert_eq!(
        per_backend(&m, "splitter_backend_wins_total", "c"),
        1.0,
        "{}",
        m.text
    );
}

/// A backend that tells the test when each request has arrived and answers it once `release`
/// is set (after 10 s at most).
fn gated_peer() -> (RawPeer, mpsc::Receiver<String>, Arc<AtomicBool>) {
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let release = Arc::new(AtomicBool::new(false));
    let gate = Arc::clone(&release);
    let peer = RawPeer::start(move |mut conn| {
        while let Some(req) = conn.next_request() {
            let _ = tx.lock().unwrap().send(req.req_id());
            let until = Instant::now() + Duration::from_secs(10);
            while !gate.load(Ordering::SeqCst) && Instant::now() < until {
                thread::sleep(Duration::from_millis(5));
            }
            if !conn.write(&http_json(&priced_body("p", &req.req_id(), "1"), "")) {
                return;
            }
        }
    });
    (peer, rx, release)
}

/// SPEC 9: metrics stay exact across reloads. Once all 16 slots have been used, a reload gives
/// a removed backend's slot to a new name; the removed backend's connections still open and its
/// calls still running must not count for the new name when they end (the audit saw `closed`
/// 48 with `connects` 0, 48 outcomes and 48 durations on backends never asked).
#[test]
fn a_removed_backends_calls_do_not_count_for_the_name_a_reload_gave_its_slot() {
    let _exclusive = exclusive();
    let (peer, arrived, release) = gated_peer();
    let names = |prefix: &str| -> Vec<String> { (0..16).map(|i| format!("{prefix}{i}")).collect() };
    let (old, new) = (names("a"), names("b"));
    // Two routes to all 16: `/late` ends at its deadline, before the replies, which come in
    // late; `/` waits for them, across the reload.
    let routes = [("/late", 200), ("/", 5000)];
    let config_of = |names: &[String]| {
        let backends: Vec<(&str, std::net::SocketAddr)> =
            names.iter().map(|n| (n.as_str(), peer.addr)).collect();
        config("workers = 1", "", &backends, &routes)
    };
    let s = SPLITTER.run(&config_of(&old));

    let send = |path: &'static str, id: &'static str| {
        let mut client = s.client();
        client.send(&bid(path, id));
        client
    };
    let mut late = [send("/late", "slot-late-1"), send("/late", "slot-late-2")];
    let mut waiting = send("/", "slot-waiting");
    // Every backend has been asked, on a connection of its own: 48 connections busy.
    for n in 0..48 {
        arrived
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("only {n} of 48 requests reached the backend"));
    }
    for client in &mut late {
        let r = client.read_response();
        assert_eq!(r.status, 204, "{r:?}");
    }
    let m = s.metrics();
    for name in &old {
        assert_eq!(
            per_backend(&m, "splitter_backend_connects_total", name),
            3.0,
            "{name}\n{}",
            m.text
        );
    }

    // Every name changes: the 16 slots, all used, go to the new names.
    reload(&s, &config_of(&new));
    release.store(true, Ordering::SeqCst);
    let r = waiting.read_response();
    r.assert_won("slot-waiting");
    assert!(
        r.backend().is_some_and(|b| b.starts_with('a')),
        "a request taken before the reload is answered by the backends it asked: {r:?}"
    );

    // Settled: every call has ended and its connection closed (its backend was removed); each
    // is counted (or not) when dropped, before its socket goes.
    let pid = s.pid();
    let until = Instant::now() + WAIT;
    loop {
        let sockets = procfs::connections_to_port(pid, peer.addr.port());
        if sockets.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "still open: {sockets:?}");
        thread::sleep(Duration::from_millis(20));
    }
    let m = s.metrics();
    let mut wrong = Vec::new();
    for name in &new {
        let backend = [("backend", name.as_str())];
        let mut expect_zero = |metric: &str, labels: &[(&str, &str)]| {
            let v = m.find(metric, labels);
            if v != Some(0.0) {
                wrong.push(format!("{metric}{labels:?} = {v:?}"));
            }
        };
        expect_zero("splitter_backend_connects_total", &backend);
        expect_zero("splitter_backend_connections_closed_total", &backend);
        for outcome in [
            "valid",
            "invalid",
            "timeout",
            "error",
            "ejected",
            "overloaded",
        ] {
            expect_zero(
                "splitter_backend_responses_total",
                &[("backend", name), ("outcome", outcome)],
            );
        }
        expect_zero("splitter_backend_duration_seconds_count", &backend);
        expect_zero("splitter_backend_wins_total", &backend);
        expect_zero("splitter_backend_late_drained_total", &backend);
        expect_zero("splitter_backend_ejections_total", &backend);
        expect_zero("splitter_backend_ejected", &backend);
        for state in ["open", "idle"] {
            expect_zero(
                "splitter_backend_pool_connections",
                &[("backend", name), ("state", state)],
            );
        }
        // Opened minus closed is what is open: nothing, as the sockets say.
        let open = open_by_metrics(&m, name);
        if open != Some(0.0) {
            wrong.push(format!("{name}: connects - closed = {open:?}"));
        }
    }
    for name in &old {
        assert!(
            m.find("splitter_backend_connects_total", &[("backend", name)])
                .is_none(),
            "the removed {name} left /metrics with its slot\n{}",
            m.text
        );
    }
    assert!(
        wrong.is_empty(),
        "backends added by the reload and never asked count what the removed ones did after \
         it:\n{}\n{}",
        wrong.join("\n"),
        m.text
    );

    // The new names count as any backend does.
    let mut client = s.client();
    client
        .request(&bid("/", "slot-after"))
        .assert_won("slot-after");
    let m = s.metrics();
    for name in &new {
        assert_eq!(
            per_backend(&m, "splitter_backend_connects_total", name),
            1.0,
            "{name}\n{}",
            m.text
        );
    }
}

/// A backend that tells the test when each request has arrived, then answers it 500 ms later.
fn holding_peer() -> (RawPeer, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let tx = Mutex::new(tx);
    let peer = RawPeer::start(move |mut conn| {
        while let Some(req) = conn.next_request() {
            let _ = tx.lock().unwrap().send(req.req_id());
            thread::sleep(Duration::from_millis(500));
            if !conn.write(&http_json(&priced_body("p", &req.req_id(), "1"), "")) {
                return;
            }
        }
    });
    (peer, rx)
}

#[test]
fn max_in_flight_admits_exactly_the_limit_over_two_workers() {
    let _exclusive = exclusive();
    let (peer, arrived) = holding_peer();
    let s = SPLITTER.run(&config(
        "workers = 2\nmax_in_flight = 4",
        "",
        &[("p", peer.addr)],
        &[("/", 1000)],
    ));
    for round in 0..3 {
        let sent = Instant::now();
        let mut busy: Vec<(String, Client)> = (0..4)
            .map(|i| {
                let id = format!("mif-{round}-{i}");
                let mut c = s.client();
                c.send(&bid("/x", &id));
                (id, c)
            })
            .collect();
        for n in 0..4 {
            if arrived.recv_timeout(WAIT).is_err() {
                let statuses: Vec<_> = busy
                    .iter_mut()
                    .map(|(id, c)| {
                        let r = c.try_read_response_within(Duration::from_millis(100));
                        (id.clone(), r.map(|r| r.status))
                    })
                    .collect();
                panic!(
                    "round {round}: only {n} of 4 requests (max_in_flight = 4) reached the \
                     backend; their answers: {statuses:?}"
                );
            }
        }
        // Four in flight: the fifth is over the limit.
        let r = s.request(&bid("/x", &format!("mif-{round}-over")));
        assert_eq!(
            r.status, 503,
            "round {round}: a 5th concurrent request: {r:?}"
        );
        let answers: Vec<_> = busy
            .iter_mut()
            .map(|(id, c)| {
                let r = c.read_response();
                (id.clone(), r, sent.elapsed())
            })
            .collect();
        if answers.iter().any(|(_, r, _)| r.status != 200) {
            let summary: Vec<_> = answers.iter().map(|(id, r, t)| (id, r.status, t)).collect();
            panic!(
                "round {round}: the 4 admitted requests (backend holds 500 ms, route 1000 ms) \
                 must each get the backend's 200; got (id, status, answered after): \
                 {summary:?}\n{}",
                s.metrics().text
            );
        }
        for (id, r, _) in &answers {
            r.assert_won(id);
        }
    }
    let m = s.metrics();
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "503")]),
        3.0,
        "{}",
        m.text
    );
}

#[test]
fn an_absolute_form_target_is_routed_by_its_path_and_forwarded_in_origin_form() {
    let _exclusive = exclusive();
    let peer = priced_peer("p", "1");
    let s = SPLITTER.run(&config("", "", &[("p", peer.addr)], &[("/bid", 1000)]));
    let body = bid_body("abs-1");
    let raw = format!(
        "POST http://example.test/bid?x=1 HTTP/1.1\r\nHost: example.test\r\nX-Req-Id: abs-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = s.client();
    client.request(raw.as_bytes()).assert_won("abs-1");
    let got = peer.next_request(WAIT);
    let head = String::from_utf8_lossy(&got.head).into_owned();
    assert_eq!(
        head.split("\r\n").next(),
        Some("POST /bid?x=1 HTTP/1.1"),
        "backends get the origin form: {head:?}"
    );
    assert_eq!(got.header_all("Host"), ["example.test"], "{head:?}");
    assert_eq!(got.body, body.as_bytes());
    // Routed by the path, not the host or the query: no route for /other.
    for target in ["http://example.test/other", "http://bid/other?next=/bid"] {
        let host = target["http://".len()..].split('/').next().unwrap();
        let raw =
            format!("POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}");
        let r = s.request(raw.as_bytes());
        assert_eq!(r.status, 404, "{target}: {r:?}");
    }
    // The connection that carried the absolute form stays in sync.
    client.request(&bid("/bid", "abs-2")).assert_won("abs-2");
    assert_eq!(
        peer.next_request(WAIT).req_id(),
        "abs-2",
        "the 404s reached no backend"
    );
}

//! Failing backends: `eject_after` limits what a dead backend costs (connects, waiting), an
//! ejected backend is probed (`GET health_path`) before it takes traffic again, and
//! `max_connections` makes a busy backend `overloaded` instead of a queue.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use super::common::*;
use super::{exclusive, outcome, per_backend, timed, MARGIN};

/// 300 requests over about 1.5 s beside a dead backend (nothing listens on its port), with
/// `eject_after`: the metrics at the end.
fn traffic_beside_a_dead_backend(eject_after: u32) -> Metrics {
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let dead = free_addr();
    let s = SPLITTER.run(&config(
        &format!("eject_after = {eject_after}"),
        "",
        &[("dead", dead), ("good", good.addr)],
        &[("/", 1000)],
    ));
    let mut clients = [s.client(), s.client()];
    let start = Instant::now();
    for i in 0..300 {
        let id = format!("dead-{eject_after}-{i}");
        let r = clients[i % 2].request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("good"));
        // Paced to 5 ms a request, so the traffic outlives the first ejection (1 s).
        let due = start + Duration::from_millis(5) * (i as u32 + 1);
        thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    s.metrics()
}

#[test]
fn an_ejected_dead_backend_costs_a_few_connects_not_one_per_request() {
    let _exclusive = exclusive();
    let m = traffic_beside_a_dead_backend(3);
    let connects = per_backend(&m, "splitter_backend_connects_total", "dead");
    assert!(
        (3.0..=15.0).contains(&connects),
        "eject_after = 3: {connects} connect attempts to a dead backend for 300 requests \
         (3 per worker, then only probes)\n{}",
        m.text
    );
    assert!(
        outcome(&m, "dead", "ejected") >= 250.0,
        "requests that skipped the ejected backend count as `ejected`\n{}",
        m.text
    );
    assert!(
        per_backend(&m, "splitter_backend_ejections_total", "dead") >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(
        per_backend(&m, "splitter_backend_up", "dead"),
        0.0,
        "still failing, so still ejected\n{}",
        m.text
    );
    assert!(
        per_backend(&m, "splitter_backend_ejected", "dead") >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(per_backend(&m, "splitter_backend_up", "good"), 1.0);
    assert_eq!(outcome(&m, "good", "ejected"), 0.0);

    // The contrast: without ejection, every request tries the dead backend.
    let m = traffic_beside_a_dead_backend(0);
    let connects = per_backend(&m, "splitter_backend_connects_total", "dead");
    assert!(
        connects >= 290.0,
        "eject_after = 0: every request tries to connect; {connects}\n{}",
        m.text
    );
    assert_eq!(outcome(&m, "dead", "ejected"), 0.0, "{}", m.text);
    assert_eq!(per_backend(&m, "splitter_backend_up", "dead"), 1.0);
}

#[test]
fn when_every_backend_is_ejected_the_client_gets_204_at_once() {
    let _exclusive = exclusive();
    // Reads requests, never answers: each one costs the whole 400 ms deadline until ejected.
    let hole = RawPeer::start(|mut conn| while conn.next_request().is_some() {});
    let s = SPLITTER.run(&config_with_backend_keys(
        "workers = 1",
        "",
        &[("hole", hole.addr, "eject_after = 3")],
        &[("/", 400)],
    ));
    let deadline = Duration::from_millis(400);
    let mut client = s.client();
    for i in 0..3 {
        let (r, took) = timed(&mut client, &bid("/x", &format!("hole-{i}")));
        r.assert_no_content();
        assert!(
            took >= deadline - Duration::from_millis(5) && took <= deadline + MARGIN,
            "request {i} before the ejection waits for the deadline: {took:?}"
        );
    }
    // Ejected now (its back-off is 1 s): nothing to wait for.
    for i in 0..5 {
        let (r, took) = timed(&mut client, &bid("/x", &format!("ejected-{i}")));
        r.assert_no_content();
        assert!(
            took < Duration::from_millis(100),
            "request {i}: every backend of the route is ejected, so 204 at once, not at the \
             400 ms deadline: took {took:?}"
        );
    }
    let m = s.metrics();
    assert_eq!(outcome(&m, "hole", "timeout"), 3.0, "{}", m.text);
    assert_eq!(outcome(&m, "hole", "ejected"), 5.0, "{}", m.text);
    assert_eq!(per_backend(&m, "splitter_backend_up", "hole"), 0.0);
}

/// The probe names the backend as requests do (its `host`): one served by name answers
/// nothing else.
#[test]
fn an_ejected_backend_is_probed_on_health_path_and_comes_back() {
    let _exclusive = exclusive();
    // Resets every connection while `healthy` is false; then answers `GET /health` for its
    // host name with 200 (404 for any other `Host`) and real requests with a price that wins.
    let healthy = Arc::new(AtomicBool::new(false));
    let peer = {
        let healthy = Arc::clone(&healthy);
        RawPeer::start(move |mut conn| {
            while let Some(req) = conn.next_request() {
                if !healthy.load(Ordering::SeqCst) {
                    conn.reset();
                    return;
                }
                let out = if req.method == "GET" && req.header_all("Host") == ["bid.example"] {
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
                } else if req.method == "GET" {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
                } else {
                    http_json(&priced_body("flappy", &req.req_id(), "5"), "")
                };
                if !conn.write(&out) {
                    return;
                }
            }
        })
    };
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run(&config_with_backend_keys(
        "workers = 1",
        "",
        &[
            ("good", good.addr, ""),
            (
                "flappy",
                peer.addr,
                "eject_after = 3\nhealth_path = \"/health\"\nhost = \"bid.example\"",
            ),
        ],
        &[("/", 1000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("fail-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("good"));
    }
    let m = s.metrics();
    assert_eq!(outcome(&m, "flappy", "error"), 3.0, "{}", m.text);
    assert_eq!(
        per_backend(&m, "splitter_backend_ejections_total", "flappy"),
        1.0,
        "ejected after 3 consecutive errors\n{}",
        m.text
    );
    assert_eq!(per_backend(&m, "splitter_backend_up", "flappy"), 0.0);

    // It recovers. Requests go on: the first after its back-off (1 s) starts the health check.
    healthy.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let mut back = false;
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(6) {
        let id = format!("probe-{i}");
        i += 1;
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        if r.backend() == Some("flappy") {
            back = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(
        back,
        "flappy answers GET /health with 200 and real requests validly, yet it never won again \
         within 6 s\n{}",
        s.metrics().text
    );
    for j in 0..3 {
        let id = format!("back-{j}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("flappy"), "{r:?}");
    }
    let m = s.metrics();
    assert!(outcome(&m, "flappy", "valid") >= 4.0, "{}", m.text);
    assert!(outcome(&m, "flappy", "ejected") >= 1.0, "{}", m.text);
    assert_eq!(per_backend(&m, "splitter_backend_up", "flappy"), 1.0);

    // What the backend saw, in order: the 3 failed requests, then (ejected) only health checks,
    // then real requests again.
    let mut seen = Vec::new();
    while let Ok(req) = peer.requests.try_recv() {
        seen.push(format!("{} {}", req.method, req.target));
    }
    let first_get = seen
        .iter()
        .position(|r| r.starts_with("GET "))
        .unwrap_or_else(|| panic!("no health check reached the backend: {seen:?}"));
    assert_eq!(
        seen[..first_get],
        ["POST /x", "POST /x", "POST /x"],
        "before the first health check: exactly the 3 failures that ejected it; {seen:?}"
    );
    assert_eq!(seen[first_get], "GET /health", "{seen:?}");
    assert!(
        seen[first_get..].iter().any(|r| r == "POST /x"),
        "real requests after the health check: {seen:?}"
    );
}

#[test]
fn a_backend_at_max_connections_is_overloaded_not_waited_for() {
    let _exclusive = exclusive();
    let slow = SPLITTER.mock_backend("slow", &["--price", "9", "--delay-ms", "300"]);
    let fast = SPLITTER.mock_backend("fast", &["--price", "1"]);
    let s = SPLITTER.run(&config_with_backend_keys(
        "workers = 1",
        "",
        &[
            ("slow", slow.addr, "max_connections = 1"),
            ("fast", fast.addr, ""),
        ],
        &[("/", 500)],
    ));
    let deadline = Duration::from_millis(500);
    const CLIENTS: usize = 5;
    const ROUNDS: usize = 3;
    let mut winners = Vec::new();
    for round in 0..ROUNDS {
        let barrier = Arc::new(Barrier::new(CLIENTS));
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let mut client = s.client();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let id = format!("ovl-{round}-{c}");
                    barrier.wait();
                    let (r, took) = timed(&mut client, &bid("/x", &id));
                    (id, r, took)
                })
            })
            .collect();
        for t in threads {
            let (id, r, took) = t.join().expect("client thread");
            r.assert_won(&id);
            assert!(
                took <= deadline + MARGIN,
                "{id}: {took:?}, past the 500 ms deadline: a request waited for a connection"
            );
            winners.push(r.backend().unwrap_or_default().to_string());
        }
        // The slow backend's one connection went back to its pool before its reply was
        // given: the next round finds it free.
    }
    let m = s.metrics();
    let total = (CLIENTS * ROUNDS) as f64;
    let overloaded = outcome(&m, "slow", "overloaded");
    let valid = outcome(&m, "slow", "valid");
    assert!(
        overloaded >= 1.0,
        "5 concurrent requests, one connection allowed: some must count `overloaded`\n{}",
        m.text
    );
    assert_eq!(
        overloaded + valid + outcome(&m, "slow", "timeout") + outcome(&m, "slow", "error"),
        total,
        "{}",
        m.text
    );
    let slow_wins = winners.iter().filter(|w| *w == "slow").count() as f64;
    assert_eq!(slow_wins, valid, "winners {winners:?}\n{}", m.text);
    assert!(
        per_backend(&m, "splitter_backend_connects_total", "slow") <= 1.0,
        "max_connections = 1 on one worker: one connection, reused\n{}",
        m.text
    );
}

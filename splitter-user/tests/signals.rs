//! SPEC 6, signals: SIGHUP reloads (routes, backends, select) without dropping connections and
//! refuses an invalid file; SIGTERM and SIGINT drain: in-flight requests finish, exit 0.

mod common;

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const RELOAD_WAIT: Duration = Duration::from_secs(10);

/// Sends SIGHUP and waits for the reload to be logged (as applied, or refused).
fn reload(s: &Splitter) -> String {
    let from = s.log_count();
    s.signal(libc::SIGHUP);
    let line = s
        .wait_log(from, RELOAD_WAIT, |l| {
            l.to_ascii_lowercase().contains("reload")
        })
        .unwrap_or_else(|| panic!("no reload log line after SIGHUP: {:?}", s.log_snapshot()));
    // Timing condition, not synchronisation: the reload is logged by the control thread; give
    // the workers a generous moment to pick it up, so a failure below is not a propagation race.
    thread::sleep(Duration::from_millis(200));
    line
}

#[test]
fn sighup_applies_a_new_route_timeout() {
    let a = SPLITTER.mock_backend("a", &["--price", "1", "--delay-ms", "600"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 150)]));
    let mut client = s.client();
    let t = Instant::now();
    client.request(&bid("/x", "before")).assert_no_content();
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );

    s.rewrite_config(&config("", "", &[("a", a.addr)], &[("/", 3000)]));
    let line = reload(&s);
    assert!(!line.to_ascii_lowercase().contains("refused"), "{line}");

    // Same client connection: it was not dropped by the reload.
    let t = Instant::now();
    let r = client.request(&bid("/x", "after"));
    assert_eq!(
        r.status, 200,
        "200 expected under the reloaded 3000 ms route (backend takes 600 ms); a 204 means the \
         old 150 ms route still applies: {r:?}"
    );
    r.assert_won("after");
    assert!(
        t.elapsed() >= Duration::from_millis(550),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn sighup_applies_a_new_backend_set_and_select() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "2"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let mut client = s.client();
    let r = client.request(&bid("/x", "one"));
    r.assert_won("one");
    assert_eq!(r.backend(), Some("a"));

    s.rewrite_config(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 2000)],
    ));
    reload(&s);
    let r = client.request(&bid("/x", "two"));
    r.assert_won("two");
    assert_eq!(r.backend(), Some("b"), "max of a=1, b=2 after adding b");

    s.rewrite_config(&config(
        "",
        "prefer = \"min\"",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 2000)],
    ));
    reload(&s);
    let r = client.request(&bid("/x", "three"));
    r.assert_won("three");
    assert_eq!(r.backend(), Some("a"), "min after reload");

    s.rewrite_config(&config("", "", &[("b", b.addr)], &[("/", 2000)]));
    reload(&s);
    let r = client.request(&bid("/x", "four"));
    r.assert_won("four");
    assert_eq!(r.backend(), Some("b"), "a removed");
    // The metrics know the new backend.
    let m = s.wait_metrics(Duration::from_secs(5), |m| {
        m.get("splitter_backend_wins_total", &[("backend", "b")]) >= 2.0
    });
    assert!(
        m.get("splitter_backend_wins_total", &[("backend", "b")]) >= 2.0,
        "{}",
        m.text
    );
}

#[test]
fn sighup_with_an_invalid_file_is_refused_and_logged_with_the_key() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "5"]);
    let good = config("", "", &[("a", a.addr)], &[("/", 2000)]);
    let s = SPLITTER.run(&good);
    let mut client = s.client();
    client.request(&bid("/x", "pre")).assert_won("pre");

    // Invalid: adds b but with a bad timeout. Nothing of it may apply.
    let bad = config("", "", &[("a", a.addr), ("b", b.addr)], &[("/", 2000)])
        .replace("timeout_ms = 2000", "timeout_ms = \"never\"");
    s.rewrite_config(&bad);
    let from = s.log_count();
    s.signal(libc::SIGHUP);
    let line = s
        .wait_log(from, RELOAD_WAIT, |l| l.contains("timeout_ms"))
        .unwrap_or_else(|| {
            panic!(
                "the refused reload must be logged naming the key: {:?}",
                s.log_snapshot()
            )
        });
    assert!(
        line.contains("ERROR")
            || line.contains("WARN")
            || line.to_ascii_lowercase().contains("refused"),
        "{line}"
    );
    for i in 0..3 {
        let id = format!("still-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("a"), "the old configuration must stay");
    }
    // New connections too.
    let r = s.request(&bid("/x", "new-conn"));
    assert_eq!(r.backend(), Some("a"));
}

/// A raw backend that reports each arrival and answers after `delay`.
fn delayed_peer(delay: Duration) -> (RawPeer, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    let peer = RawPeer::start(move |mut conn| {
        while let Some(req) = conn.next_request() {
            let _ = tx.lock().unwrap().send(req.req_id());
            thread::sleep(delay);
            if !conn.write(&http_json(&priced_body("p", &req.req_id(), "1"), "")) {
                return;
            }
        }
    });
    (peer, rx)
}

fn drain_on(sig: i32) {
    let (peer, arrived) = delayed_peer(Duration::from_millis(300));
    let mut s = SPLITTER.run(&config("", "", &[("p", peer.addr)], &[("/", 3000)]));
    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = s.client();
    idle.request(&bid("/x", "idle-warmup"))
        .assert_won("idle-warmup");
    assert_eq!(
        arrived.recv_timeout(Duration::from_secs(5)).unwrap(),
        "idle-warmup"
    );
    // Two requests in one write: the second, pipelined, waits in the splitter's buffer.
    let mut busy = s.client();
    busy.send(&[bid("/x", "in-flight"), bid("/x", "pipelined")].concat());
    assert_eq!(
        arrived.recv_timeout(Duration::from_secs(5)).unwrap(),
        "in-flight",
        "the request reaches the backend before the signal"
    );
    let t = Instant::now();
    s.signal(sig);
    // The request in flight still gets its answer, and so does the one the client had
    // already sent after it; then the connection closes, and says so.
    let r = busy.read_response();
    r.assert_won("in-flight");
    assert_ne!(r.header("Connection"), Some("close"), "{r:?}");
    let r = busy.read_response();
    r.assert_won("pipelined");
    assert_eq!(r.header("Connection"), Some("close"), "{r:?}");
    assert!(
        busy.closed_within(Duration::from_secs(5)),
        "the connection closes after the last request it had sent"
    );
    // New connections are refused after a short while.
    let until = Instant::now() + Duration::from_secs(5);
    let mut refused = false;
    while Instant::now() < until {
        match TcpStream::connect_timeout(&s.addr, Duration::from_millis(500)) {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
    assert!(refused, "the listener must close on drain");
    // The idle connection is closed.
    assert!(
        idle.closed_within(Duration::from_secs(5)),
        "idle connections close on drain"
    );
    let status = s
        .proc
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of the signal: {:?}", s.log_snapshot()));
    assert_eq!(
        status.code(),
        Some(0),
        "exit status; logs {:?}",
        s.log_snapshot()
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    drain_on(libc::SIGTERM);
}

#[test]
fn sigint_finishes_in_flight_requests_and_exits_0() {
    drain_on(libc::SIGINT);
}

#[test]
fn healthz_turns_503_while_draining() {
    let (peer, arrived) = delayed_peer(Duration::from_millis(1500));
    let mut s = SPLITTER.run(&config("", "", &[("p", peer.addr)], &[("/", 3000)]));
    assert_eq!(s.admin_get("/healthz").status, 200);
    let mut busy = s.client();
    busy.send(&bid("/x", "hold"));
    assert_eq!(
        arrived.recv_timeout(Duration::from_secs(5)).unwrap(),
        "hold"
    );
    s.signal(libc::SIGTERM);
    let until = Instant::now() + Duration::from_millis(1000);
    let mut saw = None;
    while Instant::now() < until {
        let mut c = Client::connect(s.admin);
        c.send(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n");
        if let Ok(r) = c.try_read_response_within(Duration::from_secs(2)) {
            saw = Some(r.status);
            if r.status == 503 {
                break;
            }
        }
        thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(saw, Some(503), "/healthz must answer 503 while draining");
    busy.read_response().assert_won("hold");
    let status = s.proc.wait_exit(Duration::from_secs(10)).expect("exit");
    assert_eq!(status.code(), Some(0));
}

/// `splitter reload` (the unit's `ExecReload`) returns once the process has applied the file:
/// the very next request runs under it, with no wait in between. A file that fails the check
/// fails the command, and the process is not signalled.
#[test]
fn reload_command_returns_once_applied_and_refuses_a_bad_file() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "2"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let path = s.config_path().to_str().unwrap().to_owned();
    let pid = s.pid().to_string();
    let reload = || SPLITTER.cli(&["reload", "-c", &path, "--pid", &pid], RELOAD_WAIT);
    let mut client = s.client();
    assert_eq!(client.request(&bid("/x", "one")).backend(), Some("a"));

    // The command finds the admin port in the file: the one the process bound, not port 0.
    let two = config("", "", &[("a", a.addr), ("b", b.addr)], &[("/", 2000)]);
    let two = two.replacen(
        "admin_listen = \"127.0.0.1:0\"",
        &format!("admin_listen = \"{}\"", s.admin),
        1,
    );
    s.rewrite_config(&two);
    let (status, out, err) = reload();
    assert_eq!(status.code(), Some(0), "stdout {out} stderr {err}");
    assert!(out.contains("reloaded"), "{out}");
    let r = client.request(&bid("/x", "two"));
    r.assert_won("two");
    assert_eq!(r.backend(), Some("b"), "b bids more and is configured now");

    let applied = |m: &Metrics| m.get("splitter_reloads_total", &[("result", "success")]);
    let before = applied(&s.metrics());
    s.rewrite_config("listen = oops");
    let (status, _, err) = reload();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("listen"), "{err}");
    let m = s.metrics();
    assert_eq!(applied(&m), before);
    assert_eq!(
        m.get("splitter_reloads_total", &[("result", "failure")]),
        0.0
    );

    // An edit that also moves `admin_listen` (it applies at the next restart): the process
    // is still signalled and reloads the rest; the command says it cannot confirm it.
    s.rewrite_config(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let from = s.log_count();
    let (status, _, err) = reload();
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(err.contains("cannot confirm"), "{err}");
    s.wait_log(from, RELOAD_WAIT, |l| l.contains("configuration reloaded"))
        .expect("reloaded all the same");
    let r = client.request(&bid("/x", "three"));
    r.assert_won("three");
    assert_eq!(r.backend(), Some("a"), "b is no longer configured");

    // A PID that is not a splitter (stale, mistyped) is refused, not sent a SIGHUP.
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let other_pid = other.id().to_string();
    let (status, _, err) = SPLITTER.cli(&["reload", "-c", &path, "--pid", &other_pid], RELOAD_WAIT);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("not a running splitter"), "{err}");
    assert!(matches!(other.try_wait(), Ok(None)), "sleep was signalled");
    other.kill().expect("kill sleep");
    other.wait().expect("reap sleep");
}

#[test]
fn a_reload_names_restart_keys_against_what_runs_not_the_last_file() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let s = SPLITTER.run(&config("workers = 1", "", &[("a", a.addr)], &[("/", 1000)]));
    // The restart-only keys a reload warns of, if any.
    let warned = |file: String| {
        s.rewrite_config(&file);
        let from = s.log_count();
        s.signal(libc::SIGHUP);
        s.wait_log(from, RELOAD_WAIT, |l| l.contains("configuration reloaded"))
            .expect("the reload is applied");
        s.log_snapshot()[from..]
            .iter()
            .find(|l| l.contains("next restart"))
            .cloned()
    };
    let file = |workers: u32, timeout: u64| {
        config(
            &format!("workers = {workers}"),
            "",
            &[("a", a.addr)],
            &[("/", timeout)],
        )
    };
    let line = warned(file(2, 1000)).expect("workers 1 -> 2 needs a restart");
    assert!(line.contains("workers"), "{line}");
    // One worker still runs: the file's 2 still needs a restart, though the last file had it.
    let line = warned(file(2, 900)).expect("still one worker running");
    assert!(line.contains("workers"), "{line}");
    // Back to what runs: nothing to restart for.
    assert_eq!(warned(file(1, 800)), None);

    // `splitter reload` (`systemctl reload`) names them too, from the metrics. Its file names
    // the admin port the process bound (port 0 in the file it started with: that key differs
    // too, and stays listed).
    let path = s.config_path().to_str().unwrap().to_owned();
    let pid = s.pid().to_string();
    let reload = |workers: u32| {
        let file = file(workers, 700).replacen(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"{}\"", s.admin),
            1,
        );
        s.rewrite_config(&file);
        let (status, out, err) = SPLITTER.cli(&["reload", "-c", &path, "--pid", &pid], RELOAD_WAIT);
        assert_eq!(status.code(), Some(0), "stdout {out} stderr {err}");
        out
    };
    let out = reload(2);
    assert!(
        out.contains("next restart") && out.contains("workers"),
        "{out}"
    );
    let pending = |key| {
        s.metrics()
            .find("splitter_config_restart_pending", &[("key", key)])
    };
    assert_eq!(pending("workers"), Some(1.0));
    let out = reload(1);
    assert!(
        out.contains("reloaded") && !out.contains("workers"),
        "{out}"
    );
    assert_eq!(pending("workers"), None);
}

#[test]
fn reloads_that_turn_a_shadow_on_and_off_under_traffic_lose_nothing() {
    // A reload changes a backend's options for the requests in flight too; one that began with
    // `a` as a shadow must still end as it began (the process aborted when it did not).
    let a = SPLITTER.mock_backend("a", &["--price", "2", "--delay-ms", "30"]);
    let b = SPLITTER.mock_backend("b", &["--price", "1", "--delay-ms", "30"]);
    let file = |shadow: bool| {
        let keys = if shadow { "shadow = true" } else { "" };
        config_with_backend_keys(
            "",
            "",
            &[("a", a.addr, keys), ("b", b.addr, "")],
            &[("/", 2000)],
        )
    };
    let s = SPLITTER.run(&file(true));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (addr, stop) = (s.addr, Arc::clone(&stop));
            thread::spawn(move || {
                let mut client = Client::connect(addr);
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let id = format!("flip-{t}-{answered}");
                    client.request(&bid("/x", &id)).assert_won(&id);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    for flip in 0..8 {
        s.rewrite_config(&file(flip % 2 == 1));
        let line = reload(&s);
        assert!(!line.to_ascii_lowercase().contains("refused"), "{line}");
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        assert!(c.join().expect("every request answered") > 0);
    }
    assert_eq!(s.admin_get("/healthz").status, 200);
}

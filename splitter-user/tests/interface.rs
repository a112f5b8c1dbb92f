//! SPEC 6, Interface: the command line (`run`, `check`, `demo`, `mock-backend`), the
//! configuration file and its defaults, and the admin listener (`/metrics`, `/healthz`).

mod common;

use std::time::{Duration, Instant};

use common::*;

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

fn valid_config() -> String {
    config(
        "",
        "",
        &[
            ("a", "127.0.0.1:9".parse().unwrap()),
            ("b", "127.0.0.1:10".parse().unwrap()),
        ],
        &[("/fast", 80), ("/", 450)],
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (status, out, _) = SPLITTER.cli(&["--help"], CLI_TIMEOUT);
    assert!(status.success());
    for cmd in ["run", "check", "demo", "mock-backend"] {
        assert!(out.contains(cmd), "--help must list {cmd}: {out}");
    }
}

#[test]
fn check_accepts_a_valid_file() {
    let dir = TempDir::new("check-ok");
    let path = dir.write("ok.toml", &valid_config());
    let (status, out, err) = SPLITTER.cli(&["check", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(0), "stdout {out} stderr {err}");
}

#[test]
fn check_accepts_the_spec_example_with_every_key() {
    let text = r#"
listen = "0.0.0.0:8080"
admin_listen = "127.0.0.1:9090"
workers = 0
max_request_body = 262144
max_header_bytes = 16384
max_in_flight = 100000
header_timeout_ms = 10000
idle_timeout_ms = 60000

[select]
field = "/seatbid/0/bid/0/price"
prefer = "min"

[[backend]]
name = "a"
address = "10.0.0.1:9000"
[[backend]]
name = "b"
address = "10.0.0.2:9000"

[[route]]
path_prefix = "/fast"
timeout_ms = 80
[[route]]
path_prefix = "/"
timeout_ms = 450

[steering]
mode = "auto"
pin_dir = "/sys/fs/bpf/splitter"
"#;
    let dir = TempDir::new("check-full");
    let path = dir.write("full.toml", text);
    let (status, out, err) = SPLITTER.cli(&["check", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(0), "stdout {out} stderr {err}");
}

#[test]
fn check_accepts_the_minimal_file_with_defaults() {
    let text = "listen = \"127.0.0.1:8080\"\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:9000\"\n[[route]]\npath_prefix = \"/\"\ntimeout_ms = 100\n";
    let dir = TempDir::new("check-min");
    let path = dir.write("min.toml", text);
    let (status, out, err) = SPLITTER.cli(&["check", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(0), "stdout {out} stderr {err}");
}

/// `check` must exit 1 and name `key` and the file.
fn check_rejects(text: &str, key: &str) {
    let dir = TempDir::new("check-bad");
    let path = dir.write("bad.toml", text);
    let path_str = path.to_str().unwrap();
    let (status, out, err) = SPLITTER.cli(&["check", "-c", path_str], CLI_TIMEOUT);
    assert_eq!(
        status.code(),
        Some(1),
        "for {key}: stdout {out} stderr {err}"
    );
    let all = format!("{out}\n{err}");
    assert!(
        all.contains(key),
        "the error must name `{key}`: {all}\n--- file:\n{text}"
    );
    assert!(
        all.contains("bad.toml"),
        "the error must name the file: {all}"
    );
}

#[test]
fn check_rejects_bad_values_naming_the_key() {
    let good = valid_config();
    check_rejects(
        &good.replacen("timeout_ms = 80", "timeout_ms = \"soon\"", 1),
        "timeout_ms",
    );
    check_rejects(
        &good.replacen("timeout_ms = 80", "timeout_ms = -5", 1),
        "timeout_ms",
    );
    check_rejects(
        &good.replacen(
            "[[backend]]",
            "[select]\nprefer = \"median\"\n[[backend]]",
            1,
        ),
        "prefer",
    );
    check_rejects(
        &good.replacen("[[backend]]", "[select]\nfield = \"price\"\n[[backend]]", 1),
        "field",
    );
    check_rejects(
        &good.replacen(
            "address = \"127.0.0.1:9\"",
            "address = \"not an address\"",
            1,
        ),
        "address",
    );
    check_rejects(
        &good.replacen(
            "admin_listen = \"127.0.0.1:0\"",
            "admin_listen = \"127.0.0.1:0\"\nmax_header_bytes = \"lots\"",
            1,
        ),
        "max_header_bytes",
    );
    check_rejects(
        &good.replacen(
            "admin_listen = \"127.0.0.1:0\"",
            "admin_listen = \"127.0.0.1:0\"\n[steering]\nmode = \"magic\"",
            1,
        ),
        "mode",
    );
}

#[test]
fn check_rejects_missing_required_keys() {
    let good = valid_config();
    check_rejects(
        &good.replacen("listen = \"127.0.0.1:0\"\n", "", 1),
        "listen",
    );
    // No backend at all.
    let no_backend = config("", "", &[], &[("/", 100)]);
    check_rejects(&no_backend, "backend");
    // No route at all.
    let no_route = config("", "", &[("a", "127.0.0.1:9".parse().unwrap())], &[]);
    check_rejects(&no_route, "route");
}

#[test]
fn check_rejects_more_than_16_backends() {
    let addrs: Vec<(String, std::net::SocketAddr)> = (0..17)
        .map(|i| {
            (
                format!("b{i}"),
                format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
            )
        })
        .collect();
    let refs: Vec<(&str, std::net::SocketAddr)> =
        addrs.iter().map(|(n, a)| (n.as_str(), *a)).collect();
    check_rejects(&config("", "", &refs, &[("/", 100)]), "backend");
    // Sixteen is fine.
    let dir = TempDir::new("check-16");
    let path = dir.write("ok.toml", &config("", "", &refs[..16], &[("/", 100)]));
    let (status, _, err) = SPLITTER.cli(&["check", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn check_rejects_unparsable_toml_and_missing_file() {
    check_rejects("listen = \n[[[", "bad.toml");
    let (status, _, err) = SPLITTER.cli(
        &["check", "-c", "/nonexistent/splitter-missing.toml"],
        CLI_TIMEOUT,
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("splitter-missing.toml"), "{err}");
}

#[test]
fn run_refuses_an_invalid_file_with_exit_1() {
    let dir = TempDir::new("run-bad");
    let text = valid_config().replacen("timeout_ms = 80", "timeout_ms = \"x\"", 1);
    let path = dir.write("bad.toml", &text);
    let (status, _, err) = SPLITTER.cli(&["run", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("timeout_ms"), "{err}");
}

#[test]
fn healthz_answers_ok() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 500)]));
    let r = s.admin_get("/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_str().trim(), "ok");
    let r = s.admin_get("/nope");
    assert_eq!(r.status, 404, "{r:?}");
}

#[test]
fn metrics_count_requests_responses_outcomes_and_wins() {
    let valid = SPLITTER.mock_backend("valid", &["--price", "2"]);
    let invalid = SPLITTER.mock_backend("invalid", &["--price", "9", "--status", "500"]);
    let error = SPLITTER.mock_backend("error", &["--reset"]);
    let late = SPLITTER.mock_backend("late", &["--price", "9", "--delay-ms", "3000"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("valid", valid.addr),
            ("invalid", invalid.addr),
            ("error", error.addr),
            ("late", late.addr),
        ],
        &[("/", 200)],
    ));
    let before = s.metrics();
    for name in [
        "splitter_requests_total",
        "splitter_request_duration_seconds_count",
    ] {
        assert!(before.has(name), "{name} missing:\n{}", before.text);
    }
    assert_eq!(before.get("splitter_requests_total", &[]), 0.0);
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("m-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("valid"));
    }
    let bo = "splitter_backend_responses_total";
    let m = s.wait_metrics(Duration::from_secs(5), |m| {
        m.get(bo, &[("backend", "late"), ("outcome", "timeout")]) >= 3.0
            && m.get("splitter_request_duration_seconds_count", &[]) >= 3.0
    });
    let ctx = &m.text;
    assert_eq!(m.get("splitter_requests_total", &[]), 3.0, "{ctx}");
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "200")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get(bo, &[("backend", "valid"), ("outcome", "valid")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get(bo, &[("backend", "invalid"), ("outcome", "invalid")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get(bo, &[("backend", "error"), ("outcome", "error")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get(bo, &[("backend", "late"), ("outcome", "timeout")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get(bo, &[("backend", "valid"), ("outcome", "invalid")]),
        0.0,
        "{ctx}"
    );
    assert_eq!(
        m.get("splitter_backend_wins_total", &[("backend", "valid")]),
        3.0,
        "{ctx}"
    );
    assert_eq!(
        m.get("splitter_backend_wins_total", &[("backend", "invalid")]),
        0.0,
        "{ctx}"
    );
    assert_eq!(
        m.get("splitter_request_duration_seconds_count", &[]),
        3.0,
        "{ctx}"
    );
    let sum = m.get("splitter_request_duration_seconds_sum", &[]);
    assert!(sum >= 0.5, "3 requests of >= 200 ms each: sum {sum}\n{ctx}");
    let inf = m.get(
        "splitter_request_duration_seconds_bucket",
        &[("le", "+Inf")],
    );
    assert_eq!(inf, 3.0, "{ctx}");

    // A 204 is counted under its status, and a 404 too.
    let only_bad = SPLITTER.run(&config(
        "",
        "",
        &[("invalid", invalid.addr)],
        &[("/api", 500)],
    ));
    only_bad.request(&bid("/api", "n-1")).assert_no_content();
    assert_eq!(only_bad.request(&bid("/zzz", "n-2")).status, 404);
    let m = only_bad.wait_metrics(Duration::from_secs(5), |m| {
        m.get("splitter_responses_total", &[("status", "404")]) >= 1.0
    });
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "204")]),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "404")]),
        1.0,
        "{}",
        m.text
    );
}

#[test]
fn mock_backend_echoes_the_request_id() {
    let a = SPLITTER.mock_backend("echo", &["--price", "4.5"]);
    let mut c = Client::connect(a.addr);
    let r = c.request(&bid("/any", "mock-1"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-Req-Id"), Some("mock-1"));
    assert_eq!(r.json_str("backend").as_deref(), Some("echo"));
    assert_eq!(r.json_str("req_id").as_deref(), Some("mock-1"));
    assert!(r.body_str().contains("4.5"));
}

#[test]
fn demo_runs_and_prints_a_summary() {
    let t = Instant::now();
    let (status, out, err) = SPLITTER.cli(
        &["demo", "--seconds", "1", "--connections", "4"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "demo failed: {out}\n{err}");
    assert!(out.contains("requests:"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(60));
}

/// A second `splitter run` on the port of a running one (no handover) fails on the admin port,
/// which the first holds, before its listeners join the port's `SO_REUSEPORT` group: it never
/// takes (and resets) a share of the first one's new connections.
#[test]
fn a_start_that_fails_on_the_admin_port_takes_no_connection_of_the_running_one() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "handover_socket = \"\"",
        "",
        &[("a", a.addr)],
        &[("/", 500)],
    ));
    let second = format!(
        "listen = \"{}\"\nadmin_listen = \"{}\"\nhandover_socket = \"\"\n\
         [steering]\nmode = \"reuseport\"\n\
         [[backend]]\nname = \"a\"\naddress = \"{}\"\n[[route]]\npath_prefix = \"/\"\ntimeout_ms = 500\n",
        s.addr, s.admin, a.addr
    );
    let dir = TempDir::new("second-start");
    let path = dir.write("second.toml", &second);

    // New connections all along, one request each.
    let stop = Arc::new(AtomicBool::new(false));
    let addr = s.addr;
    let load = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let answer = Client::try_connect(addr)
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| {
                        c.try_send(&bid("/x", &format!("fresh-{ok}")))
                            .map_err(|e| e.to_string())?;
                        c.try_read_response()
                    });
                match answer {
                    Ok(r) if r.status == 200 => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed)
        })
    };
    // Deterministically, the order: with both ports held by plain sockets (no `SO_REUSEPORT`,
    // so either bind fails), the admin port is the one named.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let both_held = dir.write(
        "held.toml",
        &second
            .replacen(
                &s.addr.to_string(),
                &held.local_addr().unwrap().to_string(),
                1,
            )
            .replacen(
                &s.admin.to_string(),
                &held_admin.local_addr().unwrap().to_string(),
                1,
            ),
    );
    let (status, _, err) = SPLITTER.cli(&["run", "-c", both_held.to_str().unwrap()], CLI_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("`admin_listen`"), "{err}");

    for _ in 0..5 {
        let (status, _, err) = SPLITTER.cli(&["run", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("admin_listen"), "{err}");
    }
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(ok > 0, "the load made no request");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok as usize + failed.len()
    );
}

//! The access log (SPEC 10): off by default; with `[access_log]`, one line per sampled request
//! (time, route, status, winner, value, duration, per-backend outcomes), JSON or text, written by
//! the control plane.

mod common;

use std::time::Duration;

use common::*;

fn with_log(log: &str, backends: &[(&str, std::net::SocketAddr)]) -> String {
    let mut c = config("", "", backends, &[("/bid", 300), ("/", 300)]);
    c.push_str(log);
    c
}

fn lines(path: &std::path::Path, want: usize) -> Vec<String> {
    let mut got = Vec::new();
    wait_for(Duration::from_secs(10), || {
        got = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        got.len() >= want
    });
    got
}

#[test]
fn json_lines_name_route_status_winner_value_and_outcomes() {
    let a = SPLITTER.mock_backend("a", &["--price", "2.5"]);
    let dir = TempDir::new("access-json");
    let path = dir.path.join("access.log");
    let s = SPLITTER.run(&with_log(
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
            path.display()
        ),
        &[("a", a.addr), ("dead", free_addr())],
    ));
    for i in 0..3 {
        assert_eq!(
            s.request(&post("/bid/x", &format!("r{i}"), "{}")).status,
            200
        );
    }
    let got = lines(&path, 3);
    assert_eq!(got.len(), 3, "{got:?}");
    for line in &got {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["route"], "/bid", "{line}");
        assert_eq!(v["status"], 200);
        assert_eq!(v["winner"], "a");
        assert_eq!(v["value"], 2.5);
        assert_eq!(v["backends"]["a"], "valid");
        assert_eq!(v["backends"]["dead"], "error");
        assert!(v["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        assert!(
            v["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
}

#[test]
fn text_lines_and_sampling() {
    let a = SPLITTER.mock_backend("a", &["--status", "500"]);
    let dir = TempDir::new("access-text");
    let path = dir.path.join("access.log");
    let s = SPLITTER.run(&with_log(
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"text\"\n",
            path.display()
        ),
        &[("a", a.addr)],
    ));
    assert_eq!(s.request(&post("/", "r", "{}")).status, 204);
    let got = lines(&path, 1);
    assert!(
        got[0].contains(" route=/ status=204 winner=- value=- ") && got[0].ends_with(" a=invalid"),
        "{got:?}"
    );

    // sample = 0: nothing is written, the requests are served all the same.
    let quiet_path = dir.path.join("quiet.log");
    let quiet = SPLITTER.run(&with_log(
        &format!(
            "[access_log]\npath = \"{}\"\nsample = 0.0\n",
            quiet_path.display()
        ),
        &[("a", a.addr)],
    ));
    for i in 0..5 {
        assert_eq!(
            quiet.request(&post("/", &format!("q{i}"), "{}")).status,
            204
        );
    }
    // The writer drains every 100 ms: give it a few rounds before looking.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(std::fs::read_to_string(&quiet_path).unwrap_or_default(), "");
}

#[test]
fn check_names_the_access_log_keys() {
    let dir = TempDir::new("access-check");
    for (table, key) in [
        ("[access_log]\npath = \"relative.log\"\n", "access_log.path"),
        (
            "[access_log]\npath = \"/tmp/x.log\"\nsample = 1.5\n",
            "access_log.sample",
        ),
        (
            "[access_log]\npath = \"/tmp/x.log\"\nformat = \"csv\"\n",
            "access_log.format",
        ),
        ("[access_log]\nformat = \"json\"\n", "access_log.path"),
    ] {
        let file = dir.write("c.toml", &with_log(table, &[("a", free_addr())]));
        let (status, _, err) = SPLITTER.cli(
            &["check", "-c", file.to_str().unwrap()],
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(1), "{table}: {err}");
        assert!(err.contains(&format!("`{key}`")), "{table}: {err}");
    }
}

/// Every request gets its line, not only those fanned out: refused ones too (no route, bad
/// framing, too large, over `max_in_flight`), with the status they got.
#[test]
fn refused_requests_have_their_lines_too() {
    let slow = SPLITTER.mock_backend("slow", &["--price", "1", "--delay-ms", "600"]);
    let dir = TempDir::new("access-refused");
    let path = dir.path.join("access.log");
    let mut cfg = config(
        "max_in_flight = 1\nmax_request_body = 16",
        "",
        &[("slow", slow.addr)],
        &[("/bid", 2000)],
    );
    cfg.push_str(&format!(
        "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
        path.display()
    ));
    let s = SPLITTER.run(&cfg);
    assert_eq!(s.request(&post("/nowhere", "r404", "{}")).status, 404);
    assert_eq!(s.request(b"POST /bid HTTP/1.1\r\n\r\n").status, 400);
    assert_eq!(
        s.request(&post("/bid", "r413", &"x".repeat(17))).status,
        413
    );
    // One request in flight (the backend takes 600 ms): the next is over the limit.
    let mut first = s.client();
    first.send(&post("/bid", "held", "{}"));
    let busy = wait_for(Duration::from_secs(5), || {
        s.metrics().get("splitter_in_flight", &[]) >= 1.0
    });
    assert!(busy.is_some(), "the first request never got in flight");
    assert_eq!(s.request(&post("/bid", "r503", "{}")).status, 503);
    assert_eq!(first.read_response().status, 200);

    let got = lines(&path, 5);
    let mut statuses: Vec<u64> = got
        .iter()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            let status = v["status"].as_u64().unwrap();
            match status {
                503 => {
                    assert_eq!(v["route"], "/bid", "{line}");
                    assert!(v["duration_ms"].as_f64().is_some(), "{line}");
                }
                200 => assert_eq!(v["winner"], "slow", "{line}"),
                _ => {
                    assert!(v["route"].is_null(), "{line}");
                    assert!(v["duration_ms"].is_null(), "{line}");
                    assert_eq!(v["backends"], serde_json::json!({}), "{line}");
                }
            }
            status
        })
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 400, 404, 413, 503], "{got:?}");
}

/// logrotate's way: move the file away, SIGHUP; the lines after the signal go to a new file at
/// the configured path, none are lost, none go on into the moved one.
#[test]
fn sighup_reopens_the_file_after_it_was_moved() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let dir = TempDir::new("access-rotate");
    let path = dir.path.join("access.log");
    let moved = dir.path.join("access.log.1");
    let s = SPLITTER.run(&with_log(
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"text\"\n",
            path.display()
        ),
        &[("a", a.addr)],
    ));
    assert_eq!(s.request(&post("/bid", "before", "{}")).status, 200);
    assert_eq!(lines(&path, 1).len(), 1);
    std::fs::rename(&path, &moved).unwrap();
    let from = s.log_count();
    s.signal(libc::SIGHUP);
    s.wait_log(from, Duration::from_secs(10), |l| {
        l.contains("configuration reloaded")
    })
    .expect("the reload is logged");
    // The writer reopens at its next drain, before writing what is queued then: a request
    // answered after the signal is written to the new file, whenever the drain comes.
    assert_eq!(s.request(&post("/bid", "after", "{}")).status, 200);
    let new = lines(&path, 1);
    assert_eq!(new.len(), 1, "{new:?}");
    assert!(new[0].contains("status=200"), "{new:?}");
    let old = std::fs::read_to_string(&moved).unwrap();
    assert_eq!(old.lines().count(), 1, "{old}");
}

#[test]
fn sigterm_exits_though_the_log_takes_no_more_lines() {
    // A pipe whose reader never reads, as a stalled log shipper: the writer blocks in a write.
    // Requests go on (records past the queue are dropped and counted), and a SIGTERM must
    // still end the process rather than wait on that write for ever.
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let dir = TempDir::new("access-fifo");
    let fifo = dir.path.join("access.pipe");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    // Held open, never read: the splitter's open for writing then succeeds at once.
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap()
    };
    let mut s = SPLITTER.run(&with_log(
        &format!(
            "[access_log]\npath = \"{}\"\nformat = \"json\"\n",
            fifo.display()
        ),
        &[("a", a.addr)],
    ));
    // A line is about 300 bytes: 3,000 requests are several times what the pipe (64 KiB) and
    // the writer's buffer (64 KiB) take.
    let mut client = s.client();
    for i in 0..3000 {
        let r = client.request(&post("/bid", &format!("f{i}"), "{}"));
        assert_eq!(r.status, 200, "{r:?}");
    }
    s.wait_metrics(Duration::from_secs(10), |m| {
        m.get("splitter_access_log_dropped_total", &[]) > 0.0
    });
    drop(client);
    s.signal(libc::SIGTERM);
    let status = s
        .proc
        .wait_exit(Duration::from_secs(20))
        .expect("SIGTERM: the process exits though its access log is blocked");
    assert!(status.success(), "{status:?}");
}

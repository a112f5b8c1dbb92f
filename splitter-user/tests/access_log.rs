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

//! Soak: thousands of requests over many connections with backends that answer around the
//! deadline; no response may ever carry another request's body. Plus a `wrk` run with the
//! repository's benchmark script (`#[ignore]`d, as it needs `wrk`: test.sh runs it where it is).

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn soak_every_response_belongs_to_its_own_request() {
    const CONNECTIONS: usize = 50;
    const PER_CONNECTION: usize = 60;
    let a = SPLITTER.mock_backend("a", &["--price-range", "1..2", "--delay-ms", "40..120"]);
    let b = SPLITTER.mock_backend("b", &["--price-range", "1..2", "--delay-ms", "40..120"]);
    let c = SPLITTER.mock_backend(
        "c",
        &[
            "--price-range",
            "1..2",
            "--delay-ms",
            "0..10",
            "--late-share",
            "0.2",
            "--late-delay-ms",
            "150",
        ],
    );
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 80)],
    ));
    let started = Instant::now();
    let (tx, rx) = mpsc::channel::<Result<(usize, usize), String>>();
    for conn in 0..CONNECTIONS {
        let tx = tx.clone();
        let addr = s.addr;
        thread::spawn(move || {
            let run = || -> Result<(usize, usize), String> {
                let mut client = Client::connect(addr);
                let (mut ok, mut empty) = (0, 0);
                let mut i = 0;
                while i < PER_CONNECTION {
                    // Every fifth round pipelines two requests.
                    let depth = if i % 5 == 4 && i + 1 < PER_CONNECTION {
                        2
                    } else {
                        1
                    };
                    let ids: Vec<String> =
                        (0..depth).map(|k| format!("s{conn}-{}", i + k)).collect();
                    let mut raw = Vec::new();
                    for id in &ids {
                        raw.extend_from_slice(&bid("/soak", id));
                    }
                    client.try_send(&raw).map_err(|e| format!("write: {e}"))?;
                    for id in &ids {
                        let r = client
                            .try_read_response_within(Duration::from_secs(5))
                            .map_err(|e| format!("{id}: {e}"))?;
                        match r.status {
                            200 => {
                                let got = r.json_str("req_id");
                                if got.as_deref() != Some(id.as_str()) {
                                    return Err(format!("{id} got the body of {got:?}: {r:?}"));
                                }
                                if r.header("X-Req-Id") != Some(id.as_str()) {
                                    return Err(format!(
                                        "{id} got X-Req-Id {:?}",
                                        r.header("X-Req-Id")
                                    ));
                                }
                                if r.backend().is_none() {
                                    return Err(format!("{id}: 200 without X-Splitter-Backend"));
                                }
                                ok += 1;
                            }
                            204 => {
                                if !r.body.is_empty() || r.backend().is_some() {
                                    return Err(format!("{id}: bad 204 {r:?}"));
                                }
                                empty += 1;
                            }
                            other => return Err(format!("{id}: status {other}: {r:?}")),
                        }
                    }
                    i += depth;
                }
                Ok((ok, empty))
            };
            let _ = tx.send(run());
        });
    }
    drop(tx);
    let (mut ok, mut empty, mut done) = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(90);
    while done < CONNECTIONS {
        let left = deadline.saturating_duration_since(Instant::now());
        let res = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("soak did not finish in time ({done} connections done)"));
        let (o, e) = res.unwrap_or_else(|e| panic!("{e}"));
        ok += o;
        empty += e;
        done += 1;
    }
    let total = CONNECTIONS * PER_CONNECTION;
    assert_eq!(ok + empty, total);
    assert!(
        ok > total / 4,
        "most requests should find a valid reply: {ok} of {total}"
    );
    eprintln!(
        "soak: {total} requests, {ok} x 200, {empty} x 204, in {:?}",
        started.elapsed()
    );
    // A response is counted once its write completes, which may be after the client read it.
    let m = s.wait_metrics(Duration::from_secs(5), |m| {
        let answered = m.get("splitter_responses_total", &[("status", "200")])
            + m.get("splitter_responses_total", &[("status", "204")]);
        m.get("splitter_requests_total", &[]) >= total as f64 && answered >= total as f64
    });
    assert_eq!(
        m.get("splitter_requests_total", &[]),
        total as f64,
        "{}",
        m.text
    );
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "200")]),
        ok as f64
    );
    assert_eq!(
        m.get("splitter_responses_total", &[("status", "204")]),
        empty as f64
    );
}

#[test]
#[ignore = "needs wrk"]
fn wrk_post_2k_has_no_errors() {
    let wrk = require_tool("wrk");
    let script = repo_path("bench/post-2k.lua");
    assert!(script.is_file(), "{}", script.display());
    let a = SPLITTER.mock_backend("a", &["--price-range", "1..2"]);
    let b = SPLITTER.mock_backend("b", &["--price-range", "1..2"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 200)],
    ));
    let url = format!("http://{}/bid", s.addr);
    let (text, requests) = Wrk::start(&wrk, &["-t1", "-c64", "-d3s"], &script, &url)
        .finish_clean(Duration::from_secs(30));
    assert!(requests > 0, "{text}");
    eprintln!("wrk: {requests} requests\n{text}");
    // The splitter counted them all (wrk may leave a few in flight when it stops).
    let m = s.metrics();
    assert!(
        m.get("splitter_requests_total", &[]) >= requests as f64,
        "{}",
        m.text
    );
}

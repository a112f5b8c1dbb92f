//! SPEC 3, Deadlines: when the response leaves, and what happens to late replies.
//! Timing assertions are one-sided and generous: the machine is shared and noisy.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// Scheduling slack allowed past a deadline on a busy 2-core machine.
const SLACK: Duration = Duration::from_millis(1000);

#[test]
fn dead_slow_backend_gives_204_at_the_deadline() {
    let slow = SPLITTER.mock_backend("slow", &["--price", "5", "--delay-ms", "5000"]);
    let s = SPLITTER.run(&config("", "", &[("slow", slow.addr)], &[("/", 150)]));
    let mut client = s.client();
    for i in 0..3 {
        let t = Instant::now();
        let r = client.request(&bid("/x", &format!("dl-{i}")));
        let took = t.elapsed();
        r.assert_no_content();
        assert!(
            took >= Duration::from_millis(150),
            "answered before the deadline: {took:?}"
        );
        assert!(took < Duration::from_millis(150) + SLACK, "late: {took:?}");
    }
}

#[test]
fn valid_fast_reply_waits_for_slow_backend_until_the_deadline_only() {
    let fast = SPLITTER.mock_backend("fast", &["--price", "1"]);
    let slow = SPLITTER.mock_backend("slow", &["--price", "9", "--delay-ms", "5000"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("fast", fast.addr), ("slow", slow.addr)],
        &[("/", 300)],
    ));
    let t = Instant::now();
    let r = s.request(&bid("/x", "wait-1"));
    let took = t.elapsed();
    r.assert_won("wait-1");
    assert_eq!(r.backend(), Some("fast"));
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_millis(300) + SLACK, "{took:?}");
}

#[test]
fn all_backends_answered_early_leaves_at_once() {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let b = SPLITTER.mock_backend("b", &["--price", "2", "--delay-ms", "20"]);
    let c = SPLITTER.mock_backend("c", &["--status", "500"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..5 {
        let id = format!("early-{i}");
        let t = Instant::now();
        let r = client.request(&bid("/x", &id));
        let took = t.elapsed();
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("b"));
        assert!(
            took < Duration::from_millis(1000),
            "not immediate: {took:?}"
        );
    }
}

#[test]
fn two_dead_backends_give_an_immediate_204() {
    let reset = SPLITTER.mock_backend("reset", &["--reset"]);
    // Nothing listens there: connecting is refused.
    let closed = free_addr();
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("closed", closed), ("reset", reset.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..4 {
        let t = Instant::now();
        let r = client.request(&bid("/x", &format!("dead-{i}")));
        let took = t.elapsed();
        r.assert_no_content();
        assert!(
            took < Duration::from_millis(1000),
            "dead backends count as answered at once; took {took:?}"
        );
    }
}

#[test]
fn garbage_backends_do_not_delay_or_break_the_response() {
    let garbage = SPLITTER.mock_backend("garbage", &["--broken-share", "1.0", "--price", "99"]);
    // A raw peer that answers with non-HTTP bytes then closes.
    let raw = RawPeer::start(|mut conn| {
        if conn.next_request().is_some() {
            conn.write(b"\x00\x01garbage\r\n\r\nnot http at all");
        }
    });
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("garbage", garbage.addr),
            ("raw", raw.addr),
            ("good", good.addr),
        ],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..5 {
        let id = format!("gb-{i}");
        let t = Instant::now();
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("good"));
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
}

#[test]
fn deadline_clock_starts_when_the_whole_request_is_read() {
    let slow = SPLITTER.mock_backend("slow", &["--price", "5", "--delay-ms", "5000"]);
    let s = SPLITTER.run(&config("", "", &[("slow", slow.addr)], &[("/", 200)]));
    let mut client = s.client();
    let raw = bid("/x", "clock-1");
    let split = raw.len() - 5;
    let t0 = Instant::now();
    client.send(&raw[..split]);
    // Timing condition: the body is incomplete for longer than the route deadline.
    thread::sleep(Duration::from_millis(400));
    let t1 = Instant::now();
    client.send(&raw[split..]);
    let r = client.read_response();
    r.assert_no_content();
    assert!(
        t1.elapsed() >= Duration::from_millis(200),
        "the deadline must count from the end of the request: {:?} after the last byte",
        t1.elapsed()
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );
    assert!(t1.elapsed() < Duration::from_millis(200) + SLACK);
}

#[test]
fn longest_route_prefix_sets_the_deadline_and_the_query_is_ignored() {
    let slow = SPLITTER.mock_backend("slow", &["--price", "5", "--delay-ms", "5000"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("slow", slow.addr)],
        &[("/", 700), ("/fast", 100)],
    ));
    let mut client = s.client();

    let t = Instant::now();
    client.request(&bid("/fast/bid", "r1")).assert_no_content();
    let fast = t.elapsed();
    assert!(fast >= Duration::from_millis(100), "{fast:?}");
    assert!(
        fast < Duration::from_millis(600),
        "the /fast route: {fast:?}"
    );

    // Plain string prefix: /fastlane matches /fast.
    let t = Instant::now();
    client.request(&bid("/fastlane", "r2")).assert_no_content();
    assert!(
        t.elapsed() < Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );

    // The prefix applies to the path, not the query.
    let t = Instant::now();
    client
        .request(&bid("/slow?next=/fast", "r3"))
        .assert_no_content();
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "the / route (700 ms) applies: {:?}",
        t.elapsed()
    );
}

#[test]
fn late_reply_never_reaches_the_next_request_on_a_reused_connection() {
    // A keep-alive backend that answers "slow-*" requests after 400 ms (past the 100 ms deadline)
    // and everything else at once, always echoing the id of the request it answers, with a
    // price that would win if a late reply were mistaken for a fresh one.
    let peer = RawPeer::start(|mut conn| {
        while let Some(req) = conn.next_request() {
            let id = req.req_id();
            let price = if id.starts_with("slow") {
                thread::sleep(Duration::from_millis(400));
                "1000"
            } else {
                "1"
            };
            if !conn.write(&http_json(&priced_body("p", &id, price), "")) {
                return;
            }
        }
    });
    let s = SPLITTER.run(&config(
        "workers = 1",
        "",
        &[("p", peer.addr)],
        &[("/", 100)],
    ));
    let mut client = s.client();
    for round in 0..3 {
        let slow_id = format!("slow-{round}");
        client.request(&bid("/x", &slow_id)).assert_no_content();
        // Straight away, while the late reply is still on its way: each answer is its own or 204.
        for i in 0..3 {
            let id = format!("now-{round}-{i}");
            let r = client.request(&bid("/x", &id));
            assert!(
                r.status == 204 || r.json_str("req_id").as_deref() == Some(id.as_str()),
                "a late reply leaked into {id}: {r:?}"
            );
            if r.status == 200 {
                r.assert_won(&id);
            }
        }
        // Timing condition: let the late reply land on its pooled connection.
        thread::sleep(Duration::from_millis(450));
        for i in 0..4 {
            let id = format!("after-{round}-{i}");
            let r = client.request(&bid("/x", &id));
            r.assert_won(&id);
            assert!(r.body_str().contains("\"price\":1"), "{}", r.body_str());
        }
    }
}

#[test]
fn late_mock_replies_never_cross_requests() {
    let a = SPLITTER.mock_backend(
        "a",
        &[
            "--price-range",
            "1..2",
            "--late-share",
            "0.5",
            "--late-delay-ms",
            "150",
        ],
    );
    let b = SPLITTER.mock_backend(
        "b",
        &[
            "--price-range",
            "1..2",
            "--late-share",
            "0.5",
            "--late-delay-ms",
            "150",
        ],
    );
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 60)],
    ));
    let mut client = s.client();
    let mut ok = 0;
    for i in 0..60 {
        let id = format!("lm-{i}");
        let r = client.request(&bid("/x", &id));
        match r.status {
            200 => {
                r.assert_won(&id);
                ok += 1;
            }
            204 => r.assert_no_content(),
            other => panic!("unexpected status {other}: {r:?}"),
        }
    }
    assert!(ok > 0, "some requests must be answered in time");
}

#[test]
fn concurrent_requests_each_meet_their_own_deadline() {
    // One slow backend and many simultaneous requests: none may wait for a free backend
    // connection past its own deadline.
    let slow = SPLITTER.mock_backend("slow", &["--price", "5", "--delay-ms", "3000"]);
    let fast = SPLITTER.mock_backend("fast", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("slow", slow.addr), ("fast", fast.addr)],
        &[("/", 200)],
    ));
    let (tx, rx) = mpsc::channel();
    for i in 0..30 {
        let tx = tx.clone();
        let addr = s.addr;
        thread::spawn(move || {
            let mut c = Client::connect(addr);
            let id = format!("cc-{i}");
            let t = Instant::now();
            c.send(&bid("/x", &id));
            let r = c.try_read_response();
            let _ = tx.send((id, t.elapsed(), r));
        });
    }
    drop(tx);
    let mut n = 0;
    while let Ok((id, took, r)) = rx.recv_timeout(Duration::from_secs(20)) {
        let r = r.unwrap_or_else(|e| panic!("{id}: {e}"));
        n += 1;
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("fast"));
        assert!(
            took < Duration::from_millis(200) + SLACK,
            "{id} took {took:?}"
        );
    }
    assert_eq!(n, 30);
}

#[test]
fn reply_whose_body_ends_after_the_deadline_is_invalid() {
    // Head and half the body at once, the rest 600 ms later: the 200 ms deadline passes first.
    let trickle = RawPeer::start(|mut conn| {
        while let Some(req) = conn.next_request() {
            let out = http_json(&priced_body("trickle", &req.req_id(), "1000"), "");
            let half = out.len() - 10;
            if !conn.write(&out[..half]) {
                return;
            }
            thread::sleep(Duration::from_millis(600));
            if !conn.write(&out[half..]) {
                return;
            }
        }
    });
    let fast = SPLITTER.mock_backend("fast", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("trickle", trickle.addr), ("fast", fast.addr)],
        &[("/", 200)],
    ));
    let mut client = s.client();
    for i in 0..2 {
        let id = format!("half-{i}");
        let t = Instant::now();
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(
            r.backend(),
            Some("fast"),
            "an unfinished body must not win: {r:?}"
        );
        assert!(
            t.elapsed() < Duration::from_millis(200) + SLACK,
            "{:?}",
            t.elapsed()
        );
    }
}

#[test]
fn unsolicited_extra_reply_never_answers_the_next_request() {
    // After each real reply the peer sends a second, unrequested one with a winning price.
    let peer = RawPeer::start(|mut conn| {
        while let Some(req) = conn.next_request() {
            let mut out = http_json(&priced_body("p", &req.req_id(), "1"), "");
            out.extend_from_slice(&http_json(&priced_body("p", "bogus", "1000"), ""));
            if !conn.write(&out) {
                return;
            }
        }
    });
    let s = SPLITTER.run(&config(
        "workers = 1",
        "",
        &[("p", peer.addr)],
        &[("/", 300)],
    ));
    let mut client = s.client();
    for i in 0..8 {
        let id = format!("extra-{i}");
        let r = client.request(&bid("/x", &id));
        assert!(
            r.status == 204 || r.json_str("req_id").as_deref() == Some(id.as_str()),
            "a stray reply answered {id}: {r:?}"
        );
        assert!(!r.body_str().contains("bogus"), "{r:?}");
    }
}

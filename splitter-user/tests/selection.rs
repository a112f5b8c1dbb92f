//! SPEC 2, Selection: which backend response is valid, which is best, what the client gets.
//! Black-box: real splitter, real mock backends (and raw peers where the reply must be exact).

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn prefer_max_is_the_default_and_returns_the_highest_price() {
    let a = SPLITTER.mock_backend("a", &["--price", "1.5"]);
    let b = SPLITTER.mock_backend("b", &["--price", "3.25"]);
    let c = SPLITTER.mock_backend("c", &["--price", "2"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 1000)],
    ));
    let mut client = s.client();
    for i in 0..5 {
        let id = format!("max-{i}");
        let r = client.request(&bid("/bid", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("b"), "{r:?}");
        assert_eq!(r.json_str("backend").as_deref(), Some("b"));
        assert!(r.body_str().contains("3.25"), "{}", r.body_str());
    }
}

#[test]
fn prefer_min_returns_the_lowest_price() {
    let a = SPLITTER.mock_backend("a", &["--price", "1.5"]);
    let b = SPLITTER.mock_backend("b", &["--price", "0.75"]);
    let c = SPLITTER.mock_backend("c", &["--price", "2"]);
    let s = SPLITTER.run(&config(
        "",
        "field = \"/price\"\nprefer = \"min\"",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 1000)],
    ));
    let mut client = s.client();
    for i in 0..5 {
        let id = format!("min-{i}");
        let r = client.request(&bid("/bid", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("b"), "{r:?}");
    }
}

#[test]
fn configured_field_name_is_the_one_compared() {
    // Both mocks publish their number under `bid`; `price` is not there at all.
    let a = SPLITTER.mock_backend("a", &["--price", "7", "--field", "bid"]);
    let b = SPLITTER.mock_backend("b", &["--price", "4", "--field", "bid"]);
    let s = SPLITTER.run(&config(
        "",
        "field = \"/bid\"",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 1000)],
    ));
    let r = s.request(&bid("/x", "field-1"));
    r.assert_won("field-1");
    assert_eq!(r.backend(), Some("a"));
}

#[test]
fn nested_json_pointer_selects_the_deep_number() {
    let shape = |name: &'static str, price: &'static str| {
        RawPeer::replying(move |req| {
            let body = format!(
                r#"{{"backend":"{name}","req_id":"{}","price":1000,"seatbid":[{{"bid":[{{"price":{price}}}]}}]}}"#,
                req.req_id()
            );
            http_json(&body, "")
        })
    };
    let a = shape("a", "2.5");
    let b = shape("b", "9.5");
    // `c` has the deep path but a string at the end: invalid, even with a huge top-level price.
    let c = RawPeer::replying(|req| {
        let body = format!(
            r#"{{"backend":"c","req_id":"{}","price":99999,"seatbid":[{{"bid":[{{"price":"99999"}}]}}]}}"#,
            req.req_id()
        );
        http_json(&body, "")
    });
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/0/bid/0/price\"",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 1000)],
    ));
    let r = s.request(&bid("/x", "deep-1"));
    r.assert_won("deep-1");
    assert_eq!(r.backend(), Some("b"), "{r:?}");
}

#[test]
fn equal_prices_first_arrival_wins() {
    // The slow one is listed first, so configuration order cannot explain the result.
    let slow = SPLITTER.mock_backend("slow", &["--price", "5", "--delay-ms", "60"]);
    let fast = SPLITTER.mock_backend("fast", &["--price", "5", "--delay-ms", "0"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("slow", slow.addr), ("fast", fast.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..4 {
        let id = format!("tie-{i}");
        let r = client.request(&bid("/tie", &id));
        r.assert_won(&id);
        assert_eq!(
            r.backend(),
            Some("fast"),
            "a tie goes to the first arrival: {r:?}"
        );
    }
}

#[test]
fn invalid_replies_never_win_and_do_not_spoil_the_request() {
    let valid = SPLITTER.mock_backend("valid", &["--price", "1"]);
    let s500 = SPLITTER.mock_backend("s500", &["--price", "90", "--status", "500"]);
    let s204 = SPLITTER.mock_backend("s204", &["--price", "91", "--status", "204"]);
    let s201 = SPLITTER.mock_backend("s201", &["--price", "91", "--status", "201"]);
    let garbage = SPLITTER.mock_backend("garbage", &["--price", "92", "--broken-share", "1.0"]);
    let missing = SPLITTER.mock_backend("missing", &["--price", "93", "--omit-field"]);
    let string = SPLITTER.mock_backend("string", &["--price-raw", "\"12\""]);
    let null = SPLITTER.mock_backend("null", &["--price-raw", "null"]);
    let boolean = SPLITTER.mock_backend("boolean", &["--price-raw", "true"]);
    let object = SPLITTER.mock_backend("object", &["--price-raw", "{\"v\":50}"]);
    let backends = [
        ("s500", s500.addr),
        ("s204", s204.addr),
        ("s201", s201.addr),
        ("garbage", garbage.addr),
        ("missing", missing.addr),
        ("string", string.addr),
        ("null", null.addr),
        ("boolean", boolean.addr),
        ("object", object.addr),
        ("valid", valid.addr),
    ];
    let s = SPLITTER.run(&config("", "", &backends, &[("/", 3000)]));
    for i in 0..6 {
        let id = format!("inv-{i}");
        let t = Instant::now();
        // A fresh connection each time: a garbage backend must not hurt the client connection.
        let r = s.request(&bid("/bid", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("valid"), "{r:?}");
        assert!(r.body_str().contains("\"price\":1"), "{}", r.body_str());
        // Everyone answered (valid or not): no reason to wait for the 3 s deadline.
        assert!(
            t.elapsed() < Duration::from_millis(2000),
            "took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn non_json_body_with_200_is_invalid() {
    // A raw peer with an HTTP-valid 200 whose body is not JSON but contains the field text.
    let bad = RawPeer::replying(|_| {
        let body = "price: 1000000, \"price\":1000000";
        http_json(body, "")
    });
    let truncated = RawPeer::replying(|req| {
        // Valid start of JSON, cut before the end.
        let body = format!(r#"{{"backend":"t","req_id":"{}","price":500"#, req.req_id());
        http_json(&body, "")
    });
    let good = SPLITTER.mock_backend("good", &["--price", "0.5"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("bad", bad.addr),
            ("truncated", truncated.addr),
            ("good", good.addr),
        ],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "nj-1"));
    r.assert_won("nj-1");
    assert_eq!(r.backend(), Some("good"));
}

/// A number beyond f64's range is valid JSON: one in a field nobody selects (a bidder's `ext`)
/// does not cost the reply its bid; one among a wildcard's matches is skipped.
#[test]
fn a_huge_number_outside_the_field_leaves_the_reply_valid() {
    let huge = RawPeer::replying(|req| {
        let body = format!(
            r#"{{"req_id":"{}","ext":{{"n":1e400,"m":1{}}},"price":5}}"#,
            req.req_id(),
            "0".repeat(400)
        );
        http_json(&body, "")
    });
    let cheap = SPLITTER.mock_backend("cheap", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("huge", huge.addr), ("cheap", cheap.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "huge-1"));
    r.assert_won("huge-1");
    assert_eq!(r.backend(), Some("huge"), "{r:?}");
    assert_eq!(r.header("X-Splitter-Value"), Some("5"), "{r:?}");

    let bids = RawPeer::replying(|_| {
        http_json(r#"{"seatbid":[{"bid":[{"price":1e400},{"price":4}]}]}"#, "")
    });
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/*/bid/*/price\"",
        &[("bids", bids.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "huge-2"));
    assert_eq!(r.backend(), Some("bids"), "{r:?}");
    assert_eq!(r.header("X-Splitter-Value"), Some("4"), "{r:?}");
}

#[test]
fn no_valid_reply_gives_204_without_backend_header() {
    let s500 = SPLITTER.mock_backend("s500", &["--price", "90", "--status", "500"]);
    let missing = SPLITTER.mock_backend("missing", &["--omit-field"]);
    let string = SPLITTER.mock_backend("string", &["--price-raw", "\"12\""]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("s500", s500.addr),
            ("missing", missing.addr),
            ("string", string.addr),
        ],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let t = Instant::now();
        let r = client.request(&bid("/x", &format!("none-{i}")));
        r.assert_no_content();
        assert_eq!(r.version, "HTTP/1.1");
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "all answered: immediate 204 expected, took {:?}",
            t.elapsed()
        );
    }
}

#[test]
fn winner_status_body_and_end_to_end_headers_pass_byte_for_byte() {
    // Odd but valid JSON: whitespace, escapes, unicode, a number in exponent form.
    let body = "{ \"price\" : 2.5e0 ,\n \"note\": \"caf\u{e9} \\\"quoted\\\" \\u0041\",\t\"list\": [1, 2 ,3] }\n";
    let peer = RawPeer::replying(move |_| {
        http_json(
            body,
            "X-Custom-Header: alpha beta\r\nCache-Control: no-store\r\nSet-Cookie: a=1\r\n",
        )
    });
    let other = SPLITTER.mock_backend("other", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("peer", peer.addr), ("other", other.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "bytes-1"));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.backend(), Some("peer"));
    assert_eq!(r.body, body.as_bytes(), "body must be byte for byte");
    r.assert_length_matches();
    assert_eq!(r.header("X-Custom-Header"), Some("alpha beta"));
    assert_eq!(r.header("Cache-Control"), Some("no-store"));
    assert_eq!(r.header("Set-Cookie"), Some("a=1"));
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    assert_eq!(r.header_all("X-Splitter-Backend").len(), 1);
}

#[test]
fn mock_headers_are_passed_through() {
    let a = SPLITTER.mock_backend("a", &["--price", "4"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let r = s.request(&bid("/x", "hdr-7"));
    r.assert_won("hdr-7");
    assert_eq!(
        r.header("X-Req-Id"),
        Some("hdr-7"),
        "backend's X-Req-Id passed on"
    );
    assert!(
        r.header("Content-Type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{r:?}"
    );
    assert_eq!(r.backend(), Some("a"));
}

#[test]
fn chunked_backend_body_is_dechunked_with_a_correct_length() {
    let chunked_mock =
        SPLITTER.mock_backend("cm", &["--price", "8", "--chunked", "--body-bytes", "3000"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("cm", chunked_mock.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "chunk-m"));
    r.assert_won("chunk-m");
    assert!(r.body.len() >= 100, "a padded body: {}", r.body.len());
    assert!(r.body.starts_with(b"{") && r.body_str().trim_end().ends_with('}'));
}

#[test]
fn chunked_raw_backend_body_is_reassembled_exactly() {
    let body = r#"{"backend":"raw","price":6,"pad":"0123456789abcdef0123456789"}"#;
    let peer = RawPeer::replying(move |_| {
        let (p1, rest) = body.split_at(10);
        let (p2, p3) = rest.split_at(17);
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{p1}\r\n{:x};ext=1\r\n{p2}\r\n{:X}\r\n{p3}\r\n0\r\n\r\n",
            p1.len(),
            p2.len(),
            p3.len()
        )
        .into_bytes()
    });
    let s = SPLITTER.run(&config("", "", &[("raw", peer.addr)], &[("/", 2000)]));
    let mut client = s.client();
    for i in 0..3 {
        let r = client.request(&bid("/x", &format!("ch-{i}")));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.backend(), Some("raw"));
        assert_eq!(r.body, body.as_bytes());
        r.assert_length_matches();
        assert!(r.header("Transfer-Encoding").is_none());
    }
}

#[test]
fn reply_byte_by_byte_still_counts() {
    let peer = RawPeer::start(|mut conn| {
        while let Some(req) = conn.next_request() {
            let out = http_json(&priced_body("drip", &req.req_id(), "3"), "");
            for b in out {
                if !conn.write(&[b]) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let s = SPLITTER.run(&config("", "", &[("drip", peer.addr)], &[("/", 3000)]));
    let r = s.request(&bid("/x", "drip-1"));
    r.assert_won("drip-1");
    assert_eq!(r.backend(), Some("drip"));
}

#[test]
fn truncated_backend_reply_is_invalid() {
    // Promises 500 body bytes, sends a few, closes: bad HTTP, never a winner.
    let cut = RawPeer::start(|mut conn| {
        if let Some(req) = conn.next_request() {
            let body = priced_body("cut", &req.req_id(), "1000");
            let head =
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n";
            conn.write(head.as_bytes());
            conn.write(body.as_bytes());
        }
    });
    let good = SPLITTER.mock_backend("good", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("cut", cut.addr), ("good", good.addr)],
        &[("/", 2000)],
    ));
    let t = Instant::now();
    let r = s.request(&bid("/x", "cut-1"));
    r.assert_won("cut-1");
    assert_eq!(r.backend(), Some("good"), "{r:?}");
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
}

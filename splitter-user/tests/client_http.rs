//! SPEC 5, client side HTTP/1.1: persistence, pipelining, HTTP/1.0 keep-alive, 100-continue,
//! chunked bodies, limits and the statuses for them, slow clients, overload, response hop-by-hop
//! headers. Malformed input (RFC 9112 strictness) lives in `strict_parsing.rs`.

mod common;

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn one_mock_splitter(top: &str, routes: &[(&str, u64)]) -> (Mock, Splitter) {
    let a = SPLITTER.mock_backend("a", &["--price", "1"]);
    let s = SPLITTER.run(&config(top, "", &[("a", a.addr)], routes));
    (a, s)
}

#[test]
fn persistent_connection_serves_many_requests() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    for i in 0..50 {
        let id = format!("ka-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.version, "HTTP/1.1");
        if let Some(c) = r.header("Connection") {
            assert!(!c.eq_ignore_ascii_case("close"), "{r:?}");
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let a = SPLITTER.mock_backend("a", &["--price-range", "1..2", "--delay-ms", "0..40"]);
    let b = SPLITTER.mock_backend("b", &["--price-range", "1..2", "--delay-ms", "0..40"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let ids: Vec<String> = (0..12).map(|i| format!("pipe-{i}")).collect();
    let mut all = Vec::new();
    for id in &ids {
        all.extend_from_slice(&bid("/x", id));
    }
    // One write: every request is in the splitter's buffer before the first answer.
    client.send(&all);
    for id in &ids {
        let r = client.read_response();
        r.assert_won(id);
        assert_eq!(r.header("X-Req-Id"), Some(id.as_str()), "{r:?}");
    }
}

#[test]
fn pipelined_posts_and_gets_wait_for_their_deadlines_in_order() {
    // Every request waits for the 100 ms deadline (one backend is too slow): answers come one
    // after the other, each to its own request.
    let slow = SPLITTER.mock_backend("slow", &["--price", "9", "--delay-ms", "3000"]);
    let fast = SPLITTER.mock_backend("fast", &["--price", "1"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("slow", slow.addr), ("fast", fast.addr)],
        &[("/", 100)],
    ));
    let mut client = s.client();
    let mut all = Vec::new();
    for i in 0..6 {
        all.extend_from_slice(&bid("/x", &format!("mix-{i}")));
        all.extend_from_slice(
            format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: get-{i}\r\n\r\n").as_bytes(),
        );
    }
    client.send(&all);
    for i in 0..6 {
        let r = client.read_response();
        r.assert_won(&format!("mix-{i}"));
        let r = client.read_response();
        r.assert_won(&format!("get-{i}"));
    }
}

#[test]
fn http10_keep_alive_client_gets_keep_alive_back() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("ab-{i}");
        let body = bid_body(&id);
        let raw = format!(
            "POST /x HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\nX-Req-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = client.request(raw.as_bytes());
        r.assert_won(&id);
        assert!(
            r.header("Connection")
                .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive")),
            "HTTP/1.0 keep-alive needs `Connection: keep-alive` back: {r:?}"
        );
    }
    assert!(
        !client.closed_within(Duration::from_millis(200)),
        "must stay open"
    );
}

#[test]
fn http10_without_keep_alive_is_closed_after_the_response() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    let r = client.request(b"GET /x HTTP/1.0\r\nX-Req-Id: old-1\r\n\r\n");
    r.assert_won("old-1");
    assert!(
        client.closed_within(Duration::from_secs(3)),
        "HTTP/1.0 default is close"
    );
}

#[test]
fn connection_close_request_is_answered_then_closed() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    let r = client
        .request(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Req-Id: cl-1\r\n\r\n");
    r.assert_won("cl-1");
    assert!(client.closed_within(Duration::from_secs(3)));
}

/// A response that ends the connection reaches the client whole though the client had already
/// sent more (a next request, unread in the socket): the connection is closed in stages (RFC 9112
/// 9.6), not reset, and a reset would discard what was still queued towards the client.
#[test]
fn a_closing_response_is_whole_though_the_client_sent_more() {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    const PAD: usize = 300_000;
    let big = RawPeer::replying(|req| {
        let body = format!(
            r#"{{"req_id":"{}","price":1,"pad":"{}"}}"#,
            req.req_id(),
            "p".repeat(PAD)
        );
        http_json(&body, "")
    });
    let s = SPLITTER.run(&config("", "", &[("big", big.addr)], &[("/", 5000)]));
    let mut client = std::net::TcpStream::connect(s.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // A small receive buffer: most of the response waits in the splitter's socket.
    let small: libc::c_int = 16 * 1024;
    // SAFETY: a valid int of its size, for a socket this test owns.
    unsafe {
        libc::setsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&raw const small).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    let body = bid_body("close-1");
    let first = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Req-Id: close-1\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(first.as_bytes()).unwrap();
    // Once the backend has it, the splitter is answering and reads no more: the next request
    // stays in its socket.
    big.next_request(Duration::from_secs(10));
    client.write_all(&bid("/x", "close-2")).unwrap();
    let mut got = Vec::new();
    let end = client.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    let head_end = text.find("\r\n\r\n").expect("a response head") + 4;
    assert!(
        text[..head_end].contains("Connection: close"),
        "{}",
        &text[..head_end]
    );
    assert!(
        end.is_ok() && got.len() - head_end > PAD,
        "{} body bytes, then {end:?}",
        got.len() - head_end
    );
    assert!(text.ends_with("\"}"), "the body is cut");
}

/// The staged close is bounded: a client that never closes after its last response, and goes on
/// sending, holds its connection for about the linger second, not for as long as it likes.
#[test]
fn a_client_that_never_closes_after_the_last_response_is_let_go() {
    use std::io::{Read, Write};

    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = std::net::TcpStream::connect(s.addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    client
        .write_all(b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nX-Req-Id: l-1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    client.read_to_end(&mut got).unwrap();
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // The response and the end of the stream came; the client neither closes nor stops.
    let started = Instant::now();
    let sent_until_refused = loop {
        if client
            .write_all(b"more bytes nobody asked for\r\n")
            .is_err()
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the connection was still taking bytes after 10 s"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert!(
        sent_until_refused >= Duration::from_millis(500),
        "{sent_until_refused:?}"
    );
    let m = s.wait_metrics(Duration::from_secs(5), |m| {
        m.get("splitter_client_connections", &[]) == 0.0
    });
    assert_eq!(m.get("splitter_client_connections", &[]), 0.0, "{}", m.text);
}

#[test]
fn expect_100_continue_gets_interim_response_before_the_body() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    let body = bid_body("exp-1");
    let head = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: exp-1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    client.send(head.as_bytes());
    let interim = client
        .try_read_response_within(Duration::from_secs(3))
        .expect("100 Continue before the body is sent");
    assert_eq!(interim.status, 100, "{interim:?}");
    assert!(String::from_utf8_lossy(&interim.head).starts_with("HTTP/1.1 100 Continue"));
    client.send(body.as_bytes());
    let r = client.read_response();
    r.assert_won("exp-1");
    client.request(&bid("/x", "exp-2")).assert_won("exp-2");
}

#[test]
fn chunked_request_body_is_accepted() {
    let (_a, s) = one_mock_splitter("", &[("/", 2000)]);
    let mut client = s.client();
    let body = bid_body("chunked-1");
    let (p1, p2) = body.split_at(7);
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: chunked-1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{p1}\r\n{:x}\r\n{p2}\r\n0\r\n\r\n",
        p1.len(),
        p2.len()
    );
    client.request(raw.as_bytes()).assert_won("chunked-1");
    client
        .request(&bid("/x", "chunked-2"))
        .assert_won("chunked-2");
}

#[test]
fn backend_hop_by_hop_response_headers_are_not_passed_on() {
    let peer = RawPeer::replying(|req| {
        http_json(
            &priced_body("p", &req.req_id(), "3"),
            "Connection: x-foo\r\nX-Foo: 1\r\nKeep-Alive: timeout=5, max=100\r\nProxy-Authenticate: Basic\r\nProxy-Connection: keep-alive\r\nTrailer: X-Tail\r\nUpgrade: h2c\r\nX-Kept: 2\r\n",
        )
    });
    let s = SPLITTER.run(&config("", "", &[("p", peer.addr)], &[("/", 2000)]));
    let mut client = s.client();
    let r = client.request(&bid("/x", "hbh-1"));
    r.assert_won("hbh-1");
    for name in [
        "X-Foo",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Connection",
        "Trailer",
        "Upgrade",
        "TE",
    ] {
        assert!(r.header(name).is_none(), "{name} passed on: {r:?}");
    }
    for v in r.header_all("Connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-foo"),
            "backend Connection passed on: {r:?}"
        );
    }
    assert_eq!(r.header("X-Kept"), Some("2"));
    // The client connection is unaffected by the backend's Connection header.
    client.request(&bid("/x", "hbh-2")).assert_won("hbh-2");
}

#[test]
fn no_matching_route_gives_404() {
    let (_a, s) = one_mock_splitter("", &[("/api", 2000)]);
    let r = s.request(&bid("/other", "nr-1"));
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.backend().is_none());
    // Route matching uses the path only.
    let r = s.request(&bid("/other?p=/api", "nr-2"));
    assert_eq!(r.status, 404, "{r:?}");
    s.request(&bid("/api/x", "nr-3")).assert_won("nr-3");
}

#[test]
fn head_over_max_header_bytes_gets_431_and_close() {
    let (_a, s) = one_mock_splitter("max_header_bytes = 1024", &[("/", 2000)]);
    let mut client = s.client();
    let big = "v".repeat(2000);
    let raw = format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Big: {big}\r\n\r\n");
    let _ = client.try_send(raw.as_bytes());
    client.expect_status_then_close(431, Duration::from_secs(3));
    // Many small headers adding up past the limit.
    let mut client = s.client();
    let mut raw = String::from("GET /x HTTP/1.1\r\nHost: h\r\n");
    for i in 0..100 {
        raw.push_str(&format!("X-H{i}: 0123456789\r\n"));
    }
    raw.push_str("\r\n");
    let _ = client.try_send(raw.as_bytes());
    client.expect_status_then_close(431, Duration::from_secs(3));
    // A head just under the limit is fine.
    let mut client = s.client();
    let pad = "p".repeat(600);
    let raw = format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: small\r\nX-Pad: {pad}\r\n\r\n");
    client.request(raw.as_bytes()).assert_won("small");
}

/// Sends `bytes` in writes of `piece` bytes, a moment apart, so the splitter reads them in
/// pieces (shaping the input, not synchronising).
fn send_in_pieces(client: &mut Client, bytes: &[u8], piece: usize) {
    for chunk in bytes.chunks(piece) {
        if client.try_send(chunk).is_err() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_head_in_pieces_is_parsed_whole_and_judged_at_its_limit() {
    let (_a, s) = one_mock_splitter("max_header_bytes = 1024", &[("/", 2000)]);
    // A byte at a time: the same answer as in one write.
    let mut client = s.client();
    send_in_pieces(&mut client, &bid("/x", "bytewise"), 1);
    client.read_response().assert_won("bytewise");
    // A bad head (Host twice), a byte at a time: 400.
    let mut client = s.client();
    send_in_pieces(
        &mut client,
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        1,
    );
    client.expect_status_then_close(400, Duration::from_secs(3));
    // A header line past max_header_bytes that never ends: 431 once it is over the limit, not
    // 408 when header_timeout_ms (10 s) runs out.
    let mut client = s.client();
    let endless = format!("GET /x HTTP/1.1\r\nHost: h\r\nX-Big: {}", "v".repeat(2000));
    send_in_pieces(&mut client, endless.as_bytes(), 100);
    client.expect_status_then_close(431, Duration::from_secs(3));
}

#[test]
fn body_over_max_request_body_gets_413_and_exactly_the_limit_is_accepted() {
    let (_a, s) = one_mock_splitter("max_request_body = 1000", &[("/", 2000)]);
    let exact = "x".repeat(1000);
    let r = s.request(&post("/x", "exact", &exact));
    assert!(
        r.status == 200 || r.status == 204,
        "exactly the limit: {r:?}"
    );
    assert_eq!(r.status, 200, "the mock answers a 1000-byte body: {r:?}");

    let over = "x".repeat(1001);
    let mut client = s.client();
    let _ = client.try_send(&post("/x", "over", &over));
    client.expect_status_then_close(413, Duration::from_secs(3));

    // Announced too big: refused without waiting for the body.
    let mut client = s.client();
    client.send(b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 50000000\r\n\r\n");
    client.expect_status_then_close(413, Duration::from_secs(3));

    // A chunked body that grows past the limit.
    let mut client = s.client();
    let chunk = "y".repeat(600);
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n"
    );
    let _ = client.try_send(raw.as_bytes());
    client.expect_status_then_close(413, Duration::from_secs(3));

    // A chunked body of exactly the limit.
    let mut client = s.client();
    let half = "z".repeat(500);
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: chunk-exact\r\nTransfer-Encoding: chunked\r\n\r\n1f4\r\n{half}\r\n1f4\r\n{half}\r\n0\r\n\r\n"
    );
    client.request(raw.as_bytes()).assert_won("chunk-exact");
}

#[test]
fn slow_client_is_disconnected_after_header_timeout() {
    let (_a, s) = one_mock_splitter("header_timeout_ms = 300", &[("/", 2000)]);
    let mut slow = s.client();
    let raw = bid("/x", "slow-1");
    let t = Instant::now();
    slow.send(&raw[..20]);
    assert!(
        slow.closed_within(Duration::from_millis(300 + 2000)),
        "a half-sent head must be cut after header_timeout_ms"
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "cut too early: {took:?}"
    );
    if !slow.buf.is_empty() {
        let text = String::from_utf8_lossy(&slow.buf).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "only 408 or a plain close: {text:?}"
        );
    }
    // Others are served fine.
    assert_serves(s.addr, "/x", "after-slow");
}

/// A connection that never sends a byte is closed after `header_timeout_ms` too, not held for
/// `idle_timeout_ms` as a keep-alive connection between requests is (what a request timeout
/// from accept is in HAProxy and nginx).
#[test]
fn a_connection_that_says_nothing_is_closed_after_header_timeout() {
    let (_a, s) = one_mock_splitter(
        "header_timeout_ms = 300\nidle_timeout_ms = 60000",
        &[("/", 2000)],
    );
    let mut silent = s.client();
    let t = Instant::now();
    assert!(
        silent.closed_within(Duration::from_millis(300 + 2000)),
        "a silent new connection kept past header_timeout_ms"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert!(silent.buf.is_empty(), "nothing to answer: {:?}", silent.buf);
    // After a request, the connection waits for the next one for idle_timeout_ms.
    let mut kept = s.client();
    kept.request(&bid("/x", "kept-1")).assert_won("kept-1");
    assert!(
        !kept.closed_within(Duration::from_millis(600)),
        "a keep-alive connection between requests was closed before idle_timeout_ms"
    );
    kept.request(&bid("/x", "kept-2")).assert_won("kept-2");
}

#[test]
fn dribbling_client_is_disconnected_even_if_it_keeps_sending() {
    // One byte every 100 ms: each read is "recent", but the head as a whole is too slow.
    let (_a, s) = one_mock_splitter("header_timeout_ms = 500", &[("/", 2000)]);
    let mut slow = s.client();
    let raw = format!(
        "GET /x HTTP/1.1\r\nHost: h\r\nX-Pad: {}\r\n\r\n",
        "d".repeat(200)
    );
    let t = Instant::now();
    let mut closed = false;
    for b in raw.as_bytes() {
        if slow.try_send(&[*b]).is_err() {
            closed = true;
            break;
        }
        if slow.closed_within(Duration::from_millis(100)) {
            closed = true;
            break;
        }
        if t.elapsed() > Duration::from_millis(500 + 2000) {
            break;
        }
    }
    assert!(
        closed,
        "a client dribbling its head must be cut after header_timeout_ms (+slack); still open after {:?}",
        t.elapsed()
    );
    assert_serves(s.addr, "/x", "after-dribble");
}

#[test]
fn idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let (_a, s) = one_mock_splitter("idle_timeout_ms = 300", &[("/", 2000)]);
    let mut client = s.client();
    client.request(&bid("/x", "idle-1")).assert_won("idle-1");
    let t = Instant::now();
    assert!(
        client.closed_within(Duration::from_millis(300 + 2000)),
        "idle connection kept past idle_timeout_ms"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
}

/// A backend that tells the test when each request has arrived (its id on the channel), then
/// answers it after 800 ms: requests stay in flight long enough to hit `max_in_flight`.
fn slow_signalling_peer() -> (RawPeer, mpsc::Receiver<String>) {
    let (arrived_tx, arrived_rx) = mpsc::channel::<String>();
    let arrived_tx = std::sync::Mutex::new(arrived_tx);
    let peer = RawPeer::start(move |mut conn| {
        while let Some(req) = conn.next_request() {
            let _ = arrived_tx.lock().unwrap().send(req.req_id());
            thread::sleep(Duration::from_millis(800));
            if !conn.write(&http_json(&priced_body("p", &req.req_id(), "1"), "")) {
                return;
            }
        }
    });
    (peer, arrived_rx)
}

#[test]
fn over_max_in_flight_gets_503() {
    let (peer, arrived_rx) = slow_signalling_peer();
    let s = SPLITTER.run(&config(
        "workers = 1\nmax_in_flight = 1",
        "",
        &[("p", peer.addr)],
        &[("/", 3000)],
    ));
    let mut first = s.client();
    first.send(&bid("/x", "busy-1"));
    let id = arrived_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the first request reaches the backend");
    assert_eq!(id, "busy-1");
    // The first request is in flight: the second is over the limit.
    let t = Instant::now();
    let r = s.request(&bid("/x", "busy-2"));
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.backend().is_none());
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "503 must not wait: {:?}",
        t.elapsed()
    );
    // Over the limit, a request that waits for `100 Continue` gets 503 instead, its body never
    // asked for, and the connection ends (body bytes could follow).
    let mut waiting = s.client();
    waiting.send(
        b"POST /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: busy-expect\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let r = waiting.read_response();
    assert_eq!(r.status, 503, "{r:?}");
    assert!(waiting.closed_within(Duration::from_secs(5)));
    first.read_response().assert_won("busy-1");
    // Capacity is back.
    let mut third = s.client();
    third.send(&bid("/x", "busy-3"));
    third.read_response().assert_won("busy-3");
}

#[test]
fn max_in_flight_is_for_the_whole_process_whatever_the_workers() {
    // Four workers, a limit of two: once two requests are in progress, a request refused on any
    // worker proves the limit is not split per worker.
    let (peer, arrived_rx) = slow_signalling_peer();
    let s = SPLITTER.run(&config(
        "workers = 4\nmax_in_flight = 2",
        "",
        &[("p", peer.addr)],
        &[("/", 3000)],
    ));
    let mut busy: Vec<_> = (1..=2)
        .map(|i| {
            let mut c = s.client();
            c.send(&bid("/x", &format!("busy-{i}")));
            c
        })
        .collect();
    for _ in 0..2 {
        arrived_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("both requests reach the backend");
    }
    for i in 0..6 {
        let r = s.request(&bid("/x", &format!("over-{i}")));
        assert_eq!(r.status, 503, "request {i} over a limit of 2: {r:?}");
    }
    for (i, c) in busy.iter_mut().enumerate() {
        c.read_response().assert_won(&format!("busy-{}", i + 1));
    }
    let mut after = s.client();
    after.send(&bid("/x", "after"));
    after.read_response().assert_won("after");
}

#[test]
fn bad_request_does_not_affect_a_concurrent_good_request() {
    let a = SPLITTER.mock_backend("a", &["--price", "1", "--delay-ms", "300"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let mut good = s.client();
    good.send(&bid("/x", "good-1"));
    // While the good request waits on its backend, bad clients come and go.
    for raw in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut bad = s.client();
        let _ = bad.try_send(raw);
        bad.shutdown_write();
        let _ = bad.closed_within(Duration::from_secs(3));
    }
    good.read_response().assert_won("good-1");
    good.request(&bid("/x", "good-2")).assert_won("good-2");
}

#[test]
fn empty_lines_before_a_request_are_ignored_however_many() {
    // RFC 9112 §2.2: empty lines before a request line are ignored. They are dropped as they
    // come (the buffer is not parsed again for each), so they never add up to a head over
    // `max_header_bytes`.
    let (_a, s) = one_mock_splitter("max_header_bytes = 4096", &[("/", 2000)]);
    let mut client = s.client();
    for round in 0..3 {
        client.send(&b"\r\n".repeat(5000));
        let id = format!("blank-{round}");
        client.request(&bid("/x", &id)).assert_won(&id);
    }
}

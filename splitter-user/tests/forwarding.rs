//! SPEC 4, Forwarding: what every backend receives. Raw TCP peers record the exact bytes.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(5);

/// A peer answering every request with a valid priced body.
fn echo_peer(name: &'static str, price: &'static str) -> RawPeer {
    RawPeer::replying(move |req| http_json(&priced_body(name, &req.req_id(), price), ""))
}

#[test]
fn every_backend_receives_the_request() {
    let a = echo_peer("a", "1");
    let b = echo_peer("b", "2");
    let c = echo_peer("c", "3");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/all", "fan-1"));
    r.assert_won("fan-1");
    assert_eq!(r.backend(), Some("c"));
    for peer in [&a, &b, &c] {
        let got = peer.next_request(WAIT);
        assert_eq!(got.req_id(), "fan-1");
        assert_eq!(got.body, bid_body("fan-1").as_bytes());
    }
}

#[test]
fn method_target_and_body_are_forwarded_unchanged() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let mut client = s.client();

    // Arbitrary bytes in the body, including CRLFs and a NUL, and an encoded query.
    let body: Vec<u8> = b"\x00\x01binary\r\n\r\nHTTP/1.1 200 OK\r\n\xff\xfe end".to_vec();
    let target = "/api/v1/bid?x=1&y=%20z&empty=&list=a,b#";
    let target = target.trim_end_matches('#');
    let mut req = format!(
        "PUT {target} HTTP/1.1\r\nHost: example.test\r\nX-Req-Id: put-1\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = client.request(&req);
    r.assert_won("put-1");
    let got = a.next_request(WAIT);
    assert_eq!(got.method, "PUT");
    assert_eq!(got.target, target);
    assert_eq!(
        got.version, "HTTP/1.1",
        "backends are spoken to in HTTP/1.1"
    );
    assert_eq!(got.body, body);
    assert_eq!(
        got.header("Content-Length"),
        Some(body.len().to_string().as_str())
    );
    assert!(got.header("Transfer-Encoding").is_none());

    // A GET without a body.
    let r = client.request(b"GET /q?a=%2F HTTP/1.1\r\nHost: h\r\nX-Req-Id: get-1\r\n\r\n");
    r.assert_won("get-1");
    let got = a.next_request(WAIT);
    assert_eq!(got.method, "GET");
    assert_eq!(got.target, "/q?a=%2F");
    assert!(got.body.is_empty());
    assert!(got.header("Transfer-Encoding").is_none());
    if let Some(cl) = got.header("Content-Length") {
        assert_eq!(cl, "0");
    }

    // DELETE with a body, and a method the splitter has no opinion on.
    for method in ["DELETE", "PATCH", "OPTIONS"] {
        let id = format!("m-{method}");
        let raw = format!(
            "{method} /m HTTP/1.1\r\nHost: h\r\nX-Req-Id: {id}\r\nContent-Length: 3\r\n\r\nabc"
        );
        client.request(raw.as_bytes()).assert_won(&id);
        let got = a.next_request(WAIT);
        assert_eq!(got.method, method);
        assert_eq!(got.body, b"abc");
    }
}

#[test]
fn end_to_end_headers_are_forwarded() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let body = bid_body("e2e-1");
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: example.test\r\nX-Req-Id: e2e-1\r\nContent-Type: application/json\r\nAuthorization: Bearer t0ken\r\nAccept: */*\r\nUser-Agent: splitter-tests/1\r\nX-Forwarded-For: 10.1.2.3\r\nX-Multi: one\r\nX-Multi: two\r\nX-Empty:\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.request(raw.as_bytes()).assert_won("e2e-1");
    let got = a.next_request(WAIT);
    assert_eq!(got.header("Content-Type"), Some("application/json"));
    assert_eq!(got.header("Authorization"), Some("Bearer t0ken"));
    assert_eq!(got.header("Accept"), Some("*/*"));
    assert_eq!(got.header("User-Agent"), Some("splitter-tests/1"));
    assert_eq!(got.header("X-Forwarded-For"), Some("10.1.2.3"));
    let multi = got.header_all("X-Multi").join(",");
    let multi: String = multi
        .split(',')
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(multi, "one,two", "repeated header kept in order");
    assert_eq!(got.header("Host"), Some("example.test"));
    assert_eq!(got.body, body.as_bytes());
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let body = bid_body("hop-1");
    let raw = format!(
        "POST /x HTTP/1.1\r\nHost: h\r\nX-Req-Id: hop-1\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: secret\r\nKeep-Alive: timeout=300\r\nTE: trailers\r\nTrailer: X-Tail\r\nUpgrade: websocket\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\nProxy-Authenticate: Basic\r\nX-Keep-Me: yes\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut client = s.client();
    client.request(raw.as_bytes()).assert_won("hop-1");
    let got = a.next_request(WAIT);
    for name in [
        "X-Drop-Me",
        "Keep-Alive",
        "TE",
        "Trailer",
        "Upgrade",
        "Proxy-Connection",
        "Proxy-Authorization",
        "Proxy-Authenticate",
        "Transfer-Encoding",
    ] {
        assert!(
            got.header(name).is_none(),
            "hop-by-hop {name} forwarded: {:?}",
            String::from_utf8_lossy(&got.head)
        );
    }
    for v in got.header_all("Connection") {
        assert!(
            !v.to_ascii_lowercase().contains("x-drop-me")
                && !v.to_ascii_lowercase().contains("upgrade"),
            "the client's Connection header forwarded: {v}"
        );
    }
    assert_eq!(got.header("X-Keep-Me"), Some("yes"));
    assert_eq!(got.body, body.as_bytes());
    // The client connection is still usable (keep-alive was asked for).
    client.request(&bid("/x", "hop-2")).assert_won("hop-2");
}

#[test]
fn chunked_client_body_reaches_backends_dechunked_with_content_length() {
    let a = echo_peer("a", "1");
    let b = echo_peer("b", "2");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/", 2000)],
    ));
    let raw = b"POST /chunky HTTP/1.1\r\nHost: h\r\nX-Req-Id: chk-1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n{\"a\":1\r\nA\r\n,\"b\":\"xyz\"\r\n1\r\n}\r\n0\r\n\r\n";
    let mut client = s.client();
    let r = client.request(raw);
    r.assert_won("chk-1");
    assert_eq!(r.backend(), Some("b"));
    let want = b"{\"a\":1,\"b\":\"xyz\"}";
    for peer in [&a, &b] {
        let got = peer.next_request(WAIT);
        assert!(
            got.header("Transfer-Encoding").is_none(),
            "backends must see Content-Length framing: {:?}",
            String::from_utf8_lossy(&got.head)
        );
        assert_eq!(
            got.header("Content-Length"),
            Some(want.len().to_string().as_str())
        );
        assert_eq!(got.body, want);
        assert_eq!(got.target, "/chunky");
    }
    // The connection stays in sync after a chunked request.
    client.request(&bid("/x", "chk-2")).assert_won("chk-2");
}

#[test]
fn chunked_body_with_trailers_is_forwarded_without_them() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let raw = b"POST /t HTTP/1.1\r\nHost: h\r\nX-Req-Id: trl-1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Trailer-Field: t\r\n\r\n";
    let mut client = s.client();
    let r = client.request(raw);
    r.assert_won("trl-1");
    let got = a.next_request(WAIT);
    assert_eq!(got.body, b"hello");
    assert_eq!(got.header("Content-Length"), Some("5"));
    assert!(got.header("Transfer-Encoding").is_none());
    client.request(&bid("/x", "trl-2")).assert_won("trl-2");
}

#[test]
fn backend_connections_are_persistent_and_pooled() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("workers = 1", "", &[("a", a.addr)], &[("/", 2000)]));
    let mut client = s.client();
    for i in 0..20 {
        let id = format!("pool-{i}");
        client.request(&bid("/x", &id)).assert_won(&id);
    }
    // Separate client connections share the backend pool too.
    for i in 0..5 {
        let id = format!("pool-new-{i}");
        s.request(&bid("/x", &id)).assert_won(&id);
    }
    let conns = a.accepted.load(Ordering::SeqCst);
    assert!(
        conns <= 3,
        "25 sequential requests opened {conns} backend connections: not pooled"
    );
    let mut versions = HashSet::new();
    while let Ok(r) = a.requests.try_recv() {
        versions.insert(r.version.clone());
        let conn = r.header_all("Connection").join(",").to_ascii_lowercase();
        assert!(
            !conn.contains("close"),
            "backend requests must not ask to close: {conn}"
        );
    }
    assert_eq!(
        versions.into_iter().collect::<Vec<_>>(),
        vec!["HTTP/1.1".to_string()]
    );
}

#[test]
fn backend_closing_after_each_reply_is_handled() {
    // `--close`: the mock answers with Connection: close and closes; the pool must not reuse it.
    let a = SPLITTER.mock_backend("a", &["--price", "2", "--close"]);
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let mut client = s.client();
    for i in 0..10 {
        let id = format!("close-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_eq!(r.backend(), Some("a"));
    }
}

#[test]
fn requests_for_http10_clients_go_to_backends_as_http11() {
    let a = echo_peer("a", "1");
    let s = SPLITTER.run(&config("", "", &[("a", a.addr)], &[("/", 2000)]));
    let r = s.request(b"GET /old HTTP/1.0\r\nX-Req-Id: v10\r\n\r\n");
    assert_eq!(r.status, 200, "{r:?}");
    let got = a.next_request(WAIT);
    assert_eq!(got.version, "HTTP/1.1");
    assert_eq!(got.target, "/old");
    // No Host from the client: the backend's address stands in (many servers refuse an
    // empty one), for a backend with its own `path_prefix` as for the others.
    assert_eq!(got.header_all("Host"), [a.addr.to_string()]);
}

#[test]
fn a_client_without_host_gives_each_backend_its_own_address_as_host() {
    let a = echo_peer("a", "1");
    let b = echo_peer("b", "2");
    let c = echo_peer("c", "3");
    let s = SPLITTER.run(&config_with_backend_keys(
        "",
        "",
        &[
            ("a", a.addr, ""),
            ("b", b.addr, "path_prefix = \"/bid\""),
            ("c", c.addr, "host = \"dsp.example\""),
        ],
        &[("/", 2000)],
    ));
    let r = s.request(b"POST /x HTTP/1.0\r\nX-Req-Id: h1\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(r.status, 200, "{r:?}");
    let (ga, gb, gc) = (
        a.next_request(WAIT),
        b.next_request(WAIT),
        c.next_request(WAIT),
    );
    assert_eq!(ga.header_all("Host"), [a.addr.to_string()]);
    assert_eq!(gb.target, "/bid/x");
    assert_eq!(gb.header_all("Host"), [b.addr.to_string()]);
    assert_eq!(gc.header_all("Host"), ["dsp.example"]);
    // A client with a Host keeps it.
    let r = s
        .request(b"POST /x HTTP/1.0\r\nHost: front\r\nX-Req-Id: h2\r\nContent-Length: 2\r\n\r\n{}");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(a.next_request(WAIT).header_all("Host"), ["front"]);
}

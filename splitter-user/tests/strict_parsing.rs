//! SPEC 5, strict parsing (RFC 9112): what two parsers could read two ways is rejected with 400
//! and the connection closed, never repaired and forwarded. Each case also checks that the
//! backend never saw the request and that a good client on a new connection is served.

mod common;

use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(3);

/// A splitter with one recording raw backend.
struct Fixture {
    peer: RawPeer,
    s: Splitter,
}

fn fixture() -> Fixture {
    let peer = RawPeer::replying(|req| http_json(&priced_body("p", &req.req_id(), "1"), ""));
    let s = SPLITTER.run(&config("", "", &[("p", peer.addr)], &[("/", 2000)]));
    Fixture { peer, s }
}

impl Fixture {
    /// Sends `raw` on a new connection; expects `status`, then a close; then checks the backend
    /// saw nothing of it and a good client is still served.
    fn rejects(&self, raw: &[u8], status: u16, why: &str) {
        let mut c = self.s.client();
        let _ = c.try_send(raw);
        let r = c
            .try_read_response_within(WAIT)
            .unwrap_or_else(|e| panic!("{why}: expected {status}, got no response: {e}"));
        assert_eq!(
            r.status,
            status,
            "{why}: {:?} answered {r:?}",
            String::from_utf8_lossy(raw)
        );
        assert!(r.backend().is_none(), "{why}: {r:?}");
        assert!(
            c.closed_within(WAIT),
            "{why}: the connection must be closed after {status}"
        );
        let good = format!("good-after-{}", why.replace(' ', "-"));
        assert_serves(self.s.addr, "/x", &good);
        // Nothing but good requests ever reached the backend.
        while let Ok(req) = self.peer.requests.try_recv() {
            assert!(
                req.req_id().starts_with("good-after-"),
                "{why}: a rejected request reached the backend: {:?}",
                String::from_utf8_lossy(&req.head)
            );
        }
    }
}

#[test]
fn malformed_request_line_gets_400() {
    let f = fixture();
    f.rejects(b"GARBAGE\r\n\r\n", 400, "no spaces");
    f.rejects(
        b"GET /x HTTP/1.1 extra\r\nHost: h\r\n\r\n",
        400,
        "four parts",
    );
    f.rejects(b"GET  /x HTTP/1.1\r\nHost: h\r\n\r\n", 400, "double space");
    f.rejects(b"GET /x HTTX/1.1\r\nHost: h\r\n\r\n", 400, "bad protocol");
    f.rejects(
        b"G@T /x HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "bad method token",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\nNoColonHere\r\nHost: h\r\n\r\n",
        400,
        "header without colon",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\n: empty-name\r\nHost: h\r\n\r\n",
        400,
        "empty header name",
    );
}

#[test]
fn content_length_with_transfer_encoding_gets_400() {
    let f = fixture();
    f.rejects(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
        "CL then TE",
    );
    f.rejects(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        400,
        "TE then CL",
    );
}

#[test]
fn invalid_content_length_gets_400() {
    let f = fixture();
    for (cl, why) in [
        ("abc", "letters"),
        ("-1", "negative"),
        ("+5", "plus sign"),
        ("5 5", "two numbers"),
        ("0x5", "hex"),
        ("", "empty"),
        ("99999999999999999999999999", "overflow"),
    ] {
        let raw = format!("POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\nhello");
        f.rejects(raw.as_bytes(), 400, &format!("Content-Length {why}"));
    }
}

#[test]
fn conflicting_duplicate_content_length_gets_400() {
    let f = fixture();
    f.rejects(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
        "two headers",
    );
    f.rejects(
        b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\nhello!",
        400,
        "list of two",
    );
}

#[test]
fn transfer_encoding_other_than_final_chunked_gets_400() {
    let f = fixture();
    for (te, why) in [
        ("gzip", "gzip alone"),
        ("chunked, gzip", "chunked not last"),
        ("identity", "identity"),
        ("xchunked", "lookalike"),
        (
            "chunked\r\nTransfer-Encoding: gzip",
            "second header with gzip last",
        ),
    ] {
        let raw = format!(
            "POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: {te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        );
        f.rejects(raw.as_bytes(), 400, &format!("TE {why}"));
    }
}

#[test]
fn http10_with_transfer_encoding_is_not_forwarded() {
    // RFC 9112 6.1: chunked from an HTTP/1.0 client cannot be trusted; rejected, never repaired.
    let f = fixture();
    let mut c = f.s.client();
    let _ = c.try_send(
        b"POST /x HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let r = c.try_read_response_within(WAIT).expect("a response");
    assert_eq!(r.status, 400, "{r:?}");
    assert!(c.closed_within(WAIT));
    assert!(f.peer.requests.try_recv().is_err(), "forwarded anyway");
}

#[test]
fn malformed_chunk_sizes_and_extensions_get_400() {
    let f = fixture();
    for (body, why) in [
        ("zz\r\nhello\r\n0\r\n\r\n", "non-hex size"),
        ("-5\r\nhello\r\n0\r\n\r\n", "negative size"),
        ("0x5\r\nhello\r\n0\r\n\r\n", "0x prefix"),
        ("\r\nhello\r\n0\r\n\r\n", "empty size"),
        (
            "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            "size overflow",
        ),
        ("5\nhello\r\n0\r\n\r\n", "bare LF after size"),
        ("5\r\nhelloXX0\r\n\r\n", "data not followed by CRLF"),
        ("5;=x\r\nhello\r\n0\r\n\r\n", "extension without name"),
        (
            "5;a=\"open\r\nhello\r\n0\r\n\r\n",
            "unterminated quoted extension",
        ),
        ("5 5\r\nhello\r\n0\r\n\r\n", "two sizes"),
    ] {
        let raw =
            format!("POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        f.rejects(raw.as_bytes(), 400, &format!("chunked {why}"));
    }
}

#[test]
fn nul_in_head_gets_400() {
    let f = fixture();
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\x00b\r\n\r\n",
        400,
        "NUL in value",
    );
    f.rejects(
        b"GET /x\x00y HTTP/1.1\r\nHost: h\r\n\r\n",
        400,
        "NUL in target",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-\x00A: 1\r\n\r\n",
        400,
        "NUL in name",
    );
}

#[test]
fn bare_cr_in_head_gets_400() {
    let f = fixture();
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: a\rb\r\n\r\n",
        400,
        "CR in value",
    );
    f.rejects(b"GET /x HTTP/1.1\rHost: h\r\n\r\n", 400, "CR as line end");
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\r\n\r\n",
        400,
        "CR CR LF",
    );
}

#[test]
fn whitespace_before_colon_gets_400() {
    let f = fixture();
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n",
        400,
        "space before colon",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A\t: 1\r\n\r\n",
        400,
        "tab before colon",
    );
    f.rejects(
        b"POST /x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\nhello",
        400,
        "smuggling shape",
    );
}

#[test]
fn obsolete_line_folding_gets_400() {
    let f = fixture();
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n  continued\r\n\r\n",
        400,
        "obs-fold",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\n Host: h\r\n\r\n",
        400,
        "leading space first header",
    );
}

#[test]
fn missing_or_repeated_host_in_http11_gets_400() {
    let f = fixture();
    f.rejects(b"GET /x HTTP/1.1\r\nX-A: 1\r\n\r\n", 400, "missing Host");
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        "repeated Host",
    );
    f.rejects(
        b"GET /x HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        400,
        "repeated identical Host",
    );
    // HTTP/1.0 without Host is fine.
    let mut c = f.s.client();
    let r = c.request(b"GET /x HTTP/1.0\r\nX-Req-Id: good-after-v10\r\n\r\n");
    r.assert_won("good-after-v10");
}

/// RFC 9112 §3.2: a Host with an invalid value gets 400 too; a backend must never get a Host
/// it could read as another host (a list, a path, userinfo), nor an absolute-form authority
/// that is not `host[:port]`.
#[test]
fn invalid_host_gets_400() {
    let f = fixture();
    for host in ["x, y", "a b", "a/b", "x@y", "x:abc", "[::1"] {
        let raw = format!("GET /x HTTP/1.1\r\nHost: {host}\r\n\r\n");
        f.rejects(raw.as_bytes(), 400, &format!("Host: {host}"));
    }
    f.rejects(
        b"GET http://y:99x/x HTTP/1.1\r\nHost: y\r\n\r\n",
        400,
        "absolute-form authority with a bad port",
    );
    let mut c = f.s.client();
    let r = c.request(b"GET /x HTTP/1.1\r\nHost: [::1]:8080\r\nX-Req-Id: v6-host\r\n\r\n");
    r.assert_won("v6-host");
}

#[test]
fn bad_input_then_a_good_client_is_served() {
    let f = fixture();
    // A grab-bag of hostile bytes, each on its own connection, then half-closed.
    let inputs: Vec<Vec<u8>> = vec![
        vec![0u8; 64],
        (0u8..=255).collect(),
        b"\r\n\r\n\r\n".to_vec(),
        b"GET / HTTP/9.9\r\nHost: h\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nshort".to_vec(),
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel".to_vec(),
        vec![b'A'; 70_000],
    ];
    for raw in &inputs {
        let mut c = f.s.client();
        let _ = c.try_send(raw);
        c.shutdown_write();
        assert!(
            c.closed_within(Duration::from_secs(12)),
            "the splitter must close after {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
        if let Ok(r) = c.try_read_response_within(Duration::from_millis(1)) {
            assert!(
                (400..=505).contains(&r.status),
                "hostile input answered {r:?}"
            );
        }
    }
    for i in 0..3 {
        assert_serves(f.s.addr, "/x", &format!("good-after-bag-{i}"));
    }
    while let Ok(req) = f.peer.requests.try_recv() {
        assert!(
            req.req_id().starts_with("good-after-"),
            "hostile input reached the backend: {:?}",
            String::from_utf8_lossy(&req.head)
        );
    }
}

#[test]
fn bad_request_after_a_good_one_on_the_same_connection_closes_it() {
    let f = fixture();
    let mut c = f.s.client();
    c.request(&bid("/x", "good-after-first"))
        .assert_won("good-after-first");
    let _ = c.try_send(b"GET /x HTTP/1.1\r\nHost: h\r\nX-A : 1\r\n\r\n");
    c.expect_status_then_close(400, WAIT);
    assert_serves(f.s.addr, "/x", "good-after-second");
}

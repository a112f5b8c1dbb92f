//! Socket-level tests of the whole mock: a real listener on loopback, raw bytes in and out, one
//! test per behaviour the black-box tests and the benchmarks rely on.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::args::test_args;
use super::conn::MAX_HEAD;
use super::server::bind;
use super::{serve, MockConfig};
use crate::http1::chunked::ChunkedDecoder;

mod openrtb;

/// Every network test is bounded by this; nothing waits on sleeps.
const BOUND: Duration = Duration::from_secs(10);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("test timed out")
}

async fn start(extra: &[&str]) -> SocketAddr {
    let cfg = Arc::new(MockConfig::new(&test_args(extra)).unwrap());
    let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(listener, cfg));
    addr
}

fn post(id: &str, body: &str) -> String {
    format!(
        "POST /bid?x=1 HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
         X-Req-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }
}

/// De-chunks a complete chunked body at the start of `buf`: (body, bytes used).
fn dechunk(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let decoded = ChunkedDecoder::new(usize::MAX)
        .decode(buf, &mut body)
        .expect("a well-formed chunked body");
    decoded.done.then_some((body, decoded.consumed))
}

/// Parses one complete response off the front of `buf`, if there is one.
fn take_resp(buf: &mut Vec<u8>, head_request: bool) -> Option<Resp> {
    let mut hs = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut hs);
    let httparse::Status::Complete(n) = r.parse(buf).unwrap() else {
        return None;
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8(h.value.to_vec()).unwrap(),
            )
        })
        .collect();
    let resp = |body| Resp {
        status,
        headers: headers.clone(),
        body,
    };
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let (body, used) = if status < 200 || status == 204 || status == 304 || head_request {
        (Vec::new(), n)
    } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let (body, used) = dechunk(&buf[n..])?;
        (body, n + used)
    } else {
        let len: usize = get("content-length").expect("framed").parse().unwrap();
        if buf.len() < n + len {
            return None;
        }
        (buf[n..n + len].to_vec(), n + len)
    };
    buf.drain(..used);
    Some(resp(body))
}

async fn read_resp(s: &mut TcpStream, buf: &mut Vec<u8>) -> Resp {
    loop {
        if let Some(r) = take_resp(buf, false) {
            return r;
        }
        let n = s.read_buf(buf).await.unwrap();
        assert!(n > 0, "EOF before a whole response; got {buf:?}");
    }
}

async fn read_to_eof(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    Ok(buf)
}

async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

#[tokio::test]
async fn keep_alive_pipelined_with_req_id_echo() {
    bounded(async {
        let addr = start(&["--name", "alpha", "--price", "2.5"]).await;
        let mut s = connect(addr).await;
        let two = post("a1", r#"{"x":1}"#) + &post("a2", r#"{"x":2}"#);
        s.write_all(two.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        for id in ["a1", "a2"] {
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-req-id"), Some(id));
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(r.header("connection"), None);
            let want = format!(r#"{{"backend":"alpha","req_id":"{id}","price":2.5}}"#);
            assert_eq!(r.text(), want);
        }
        // Still open afterwards (keep-alive), and a request without an id gets none back.
        let no_id = "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}";
        s.write_all(no_id.as_bytes()).await.unwrap();
        let r = read_resp(&mut s, &mut buf).await;
        assert_eq!(r.header("x-req-id"), None);
        assert_eq!(r.text(), r#"{"backend":"alpha","req_id":"","price":2.5}"#);
        assert!(buf.is_empty());
    })
    .await;
}

#[tokio::test]
async fn req_id_is_sanitized_in_header_and_body() {
    bounded(async {
        let addr = start(&[]).await;
        let mut s = connect(addr).await;
        s.write_all(post(r#"x"y\z"#, "{}").as_bytes())
            .await
            .unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).await;
        assert_eq!(r.header("x-req-id"), Some("xyz"));
        assert_eq!(r.text(), r#"{"backend":"mock","req_id":"xyz","price":1}"#);
    })
    .await;
}

#[tokio::test]
async fn chunked_both_ways_and_fragmented_input() {
    bounded(async {
        let addr = start(&["--chunked", "--body-bytes", "300"]).await;
        let mut s = connect(addr).await;
        let chunked = "POST / HTTP/1.1\r\nHost: t\r\nX-Req-Id: c1\r\n\
                       Transfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\
                       Trailer-A: 1\r\n\r\n";
        let all = chunked.to_string() + &post("c2", r#"{"y":2}"#);
        // Byte by byte: exercises every partial-input path of the parser.
        for b in all.as_bytes() {
            s.write_all(std::slice::from_ref(b)).await.unwrap();
        }
        let mut buf = Vec::new();
        for id in ["c1", "c2"] {
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
            assert_eq!(r.header("content-length"), None);
            assert_eq!(r.header("x-req-id"), Some(id));
            assert_eq!(r.body.len(), 300);
            let prefix = format!(r#"{{"backend":"mock","req_id":"{id}","price":1,"pad":"xxx"#);
            assert!(r.text().starts_with(&prefix), "{}", r.text());
            assert!(r.text().ends_with("xx\"}"));
        }
    })
    .await;
}

#[tokio::test]
async fn body_is_padded_to_size() {
    bounded(async {
        let addr = start(&["--body-bytes", "2048"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("p", "{}").as_bytes()).await.unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).await;
        assert_eq!(r.body.len(), 2048);
        assert_eq!(r.header("content-length"), Some("2048"));
    })
    .await;
}

#[tokio::test]
async fn status_flag() {
    bounded(async {
        let addr = start(&["--status", "503"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("s", "{}").as_bytes()).await.unwrap();
        let r = read_resp(&mut s, &mut Vec::new()).await;
        assert_eq!(r.status, 503);
        assert!(r.text().contains(r#""price":1"#));

        // 204 has no body and no framing, and the connection stays usable.
        let addr = start(&["--status", "204"]).await;
        let mut s = connect(addr).await;
        let mut buf = Vec::new();
        for id in ["n1", "n2"] {
            s.write_all(post(id, "{}").as_bytes()).await.unwrap();
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.status, 204);
            assert_eq!(r.header("content-length"), None);
            assert_eq!(r.header("x-req-id"), Some(id));
        }
    })
    .await;
}

#[tokio::test]
async fn price_variants() {
    bounded(async {
        let one = |addr| async move {
            let mut s = connect(addr).await;
            s.write_all(post("q", "{}").as_bytes()).await.unwrap();
            read_resp(&mut s, &mut Vec::new()).await.text().to_string()
        };
        let raw = one(start(&["--price-raw", "\"12\""]).await).await;
        assert_eq!(raw, r#"{"backend":"mock","req_id":"q","price":"12"}"#);
        let field = one(start(&["--field", "bid", "--price-raw", "null"]).await).await;
        assert_eq!(field, r#"{"backend":"mock","req_id":"q","bid":null}"#);
        let omit = one(start(&["--omit-field"]).await).await;
        assert_eq!(omit, r#"{"backend":"mock","req_id":"q"}"#);
        let addr = start(&["--price-range", "1.0..2.0"]).await;
        for _ in 0..5 {
            let text = one(addr).await;
            let v = text
                .strip_prefix(r#"{"backend":"mock","req_id":"q","price":"#)
                .and_then(|t| t.strip_suffix('}'))
                .unwrap();
            let v: f64 = v.parse().unwrap();
            assert!((1.0..=2.0).contains(&v), "{v}");
        }
    })
    .await;
}

#[tokio::test]
async fn broken_replies_are_not_http_or_not_json() {
    bounded(async {
        let addr = start(&["--broken-share", "1.0"]).await;
        let (mut not_json, mut garbage) = (0, 0);
        for i in 0..40 {
            let mut s = connect(addr).await;
            // Connection: close so the not-JSON half ends with EOF too.
            let req = format!(
                "POST / HTTP/1.1\r\nHost: t\r\nX-Req-Id: b{i}\r\nConnection: close\r\n\
                 Content-Length: 2\r\n\r\n{{}}"
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut got = read_to_eof(&mut s).await.unwrap();
            if got.starts_with(b"HTTP/") {
                let r = take_resp(&mut got, false).expect("a whole response");
                assert_eq!(r.status, 200);
                assert_eq!(r.header("x-req-id"), Some(format!("b{i}").as_str()));
                assert!(!r.body.starts_with(b"{"), "{}", r.text());
                not_json += 1;
            } else {
                assert!(!got.is_empty());
                garbage += 1;
            }
        }
        assert!(
            not_json > 0 && garbage > 0,
            "{not_json} not-JSON, {garbage} garbage"
        );
    })
    .await;
}

#[tokio::test]
async fn reset_closes_without_reply() {
    bounded(async {
        let addr = start(&["--reset"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("r", "{}").as_bytes()).await.unwrap();
        let err = read_to_eof(&mut s).await.expect_err("a reset, not a reply");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    })
    .await;
}

#[tokio::test]
async fn close_flag_closes_after_reply() {
    bounded(async {
        let addr = start(&["--close"]).await;
        let mut s = connect(addr).await;
        // The second request must be ignored: the connection closes after the first reply.
        let two = post("c1", "{}") + &post("c2", "{}");
        s.write_all(two.as_bytes()).await.unwrap();
        let mut got = read_to_eof(&mut s).await.unwrap();
        let r = take_resp(&mut got, false).unwrap();
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("x-req-id"), Some("c1"));
        assert!(got.is_empty(), "nothing after the first reply");
    })
    .await;
}

#[tokio::test]
async fn http10_keep_alive_only_when_asked() {
    bounded(async {
        let addr = start(&[]).await;
        let mut s = connect(addr).await;
        let ka = "POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n{}";
        let mut buf = Vec::new();
        for _ in 0..2 {
            s.write_all(ka.as_bytes()).await.unwrap();
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.header("connection"), Some("keep-alive"));
        }
        let plain = "POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}";
        s.write_all(plain.as_bytes()).await.unwrap();
        let mut got = read_to_eof(&mut s).await.unwrap();
        let r = take_resp(&mut got, false).unwrap();
        assert_eq!(r.header("connection"), Some("close"));
    })
    .await;
}

#[tokio::test]
async fn bad_framing_gets_400_and_close() {
    bounded(async {
        let addr = start(&[]).await;
        for bad in [
            "NOT HTTP AT ALL\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            // Refused by the splitter's own parser, and so by the mock.
            "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ] {
            let mut s = connect(addr).await;
            s.write_all(bad.as_bytes()).await.unwrap();
            let mut got = read_to_eof(&mut s).await.unwrap();
            let r = take_resp(&mut got, false).unwrap();
            assert_eq!(r.status, 400, "{bad:?}");
            assert_eq!(r.header("connection"), Some("close"));
        }
        let mut s = connect(addr).await;
        let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(MAX_HEAD + 10));
        s.write_all(huge.as_bytes()).await.unwrap();
        let mut got = read_to_eof(&mut s).await.unwrap();
        assert_eq!(take_resp(&mut got, false).unwrap().status, 431);
    })
    .await;
}

#[tokio::test]
async fn expect_100_continue() {
    bounded(async {
        let addr = start(&[]).await;
        let mut s = connect(addr).await;
        let head = "POST / HTTP/1.1\r\nHost: t\r\nX-Req-Id: e\r\nExpect: 100-continue\r\n\
                    Content-Length: 5\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        assert_eq!(read_resp(&mut s, &mut buf).await.status, 100);
        s.write_all(b"hello").await.unwrap();
        let r = read_resp(&mut s, &mut buf).await;
        assert_eq!((r.status, r.header("x-req-id")), (200, Some("e")));
    })
    .await;
}

#[tokio::test]
async fn head_request_has_no_body() {
    bounded(async {
        let addr = start(&[]).await;
        let mut s = connect(addr).await;
        let req = "HEAD / HTTP/1.1\r\nHost: t\r\n\r\n".to_string() + &post("after", "{}");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        while buf.is_empty() || take_resp(&mut buf.clone(), true).is_none() {
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        }
        let r = take_resp(&mut buf, true).unwrap();
        assert!(r.header("content-length").is_some() && r.body.is_empty());
        let r = read_resp(&mut s, &mut buf).await;
        assert_eq!(r.header("x-req-id"), Some("after"));
    })
    .await;
}

#[tokio::test]
async fn delayed_replies_stay_in_order() {
    bounded(async {
        let addr = start(&["--delay-ms", "0..40"]).await;
        let mut s = connect(addr).await;
        let ids: Vec<String> = (0..8).map(|i| format!("d{i}")).collect();
        let all: String = ids.iter().map(|id| post(id, "{}")).collect();
        s.write_all(all.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        for id in &ids {
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.header("x-req-id"), Some(id.as_str()));
        }
    })
    .await;
}

#[tokio::test]
async fn delays_do_not_block_other_connections() {
    bounded(async {
        let addr = start(&["--delay-ms", "1000"]).await;
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..5 {
            tasks.push(tokio::spawn(async move {
                let mut s = connect(addr).await;
                s.write_all(post(&format!("w{i}"), "{}").as_bytes())
                    .await
                    .unwrap();
                read_resp(&mut s, &mut Vec::new()).await.status
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 200);
        }
        let took = t0.elapsed();
        // In series the five delays alone would add up to 5 s; in parallel it takes a little over
        // 1 s, which leaves a shared machine 4 s of slack.
        assert!(took >= Duration::from_millis(1000), "{took:?}");
        assert!(took < Duration::from_millis(5 * 1000), "{took:?}");
    })
    .await;
}

#[tokio::test]
async fn late_share_delays_replies() {
    bounded(async {
        let addr = start(&["--late-share", "1", "--late-delay-ms", "150"]).await;
        let t0 = Instant::now();
        let mut s = connect(addr).await;
        s.write_all(post("l", "{}").as_bytes()).await.unwrap();
        assert_eq!(read_resp(&mut s, &mut Vec::new()).await.status, 200);
        assert!(t0.elapsed() >= Duration::from_millis(150));
    })
    .await;
}

#[tokio::test]
async fn chunk_bytes_trickles_the_body_in_tiny_chunks() {
    bounded(async {
        let addr = start(&["--chunk-bytes", "1", "--body-bytes", "300"]).await;
        let mut s = connect(addr).await;
        let mut buf = Vec::new();
        for id in ["t1", "t2"] {
            s.write_all(post(id, "{}").as_bytes()).await.unwrap();
            let r = read_resp(&mut s, &mut buf).await;
            assert_eq!(r.status, 200);
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
            assert_eq!(r.header("x-req-id"), Some(id));
            assert_eq!(r.body.len(), 300);
            assert!(r
                .text()
                .starts_with(&format!(r#"{{"backend":"mock","req_id":"{id}""#)));
        }
        // On the wire: 300 chunks of one byte each, then the last chunk.
        s.write_all(post("t3", "{}").as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        while !raw.ends_with(b"0\r\n\r\n") {
            assert!(s.read_buf(&mut raw).await.unwrap() > 0);
        }
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(
            raw.len() - head_end,
            300 * b"1\r\nx\r\n".len() + b"0\r\n\r\n".len()
        );
        assert!(raw[head_end..].starts_with(b"1\r\n{\r\n1\r\n\"\r\n"));
    })
    .await;
}

#[tokio::test]
async fn blackhole_reads_and_never_answers() {
    bounded(async {
        let addr = start(&["--blackhole"]).await;
        let mut s = connect(addr).await;
        let mut buf = [0u8; 64];
        for id in ["h1", "h2"] {
            s.write_all(post(id, "{}").as_bytes()).await.unwrap();
            let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
            assert!(read.is_err(), "the blackhole answered: {read:?}");
        }
        // Expect: 100-continue gets no 100 either.
        let head = "POST / HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n\
                    Content-Length: 5\r\n\r\n";
        s.write_all(head.as_bytes()).await.unwrap();
        let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await;
        assert!(read.is_err(), "the blackhole answered: {read:?}");
    })
    .await;
}

/// Reads from `s` until `want` bytes have arrived; the mock must keep sending.
async fn read_at_least(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        assert!(
            s.read_buf(&mut got).await.unwrap() > 0,
            "EOF after {}",
            got.len()
        );
    }
    got
}

#[tokio::test]
async fn endless_head_never_ends_the_header_block() {
    bounded(async {
        let addr = start(&["--endless-head"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("eh", "{}").as_bytes()).await.unwrap();
        let got = read_at_least(&mut s, 256 * 1024).await;
        assert!(got.starts_with(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                                  X-Req-Id: eh\r\nX-Filler: xxx"
        ));
        assert!(!got.windows(4).any(|w| w == b"\r\n\r\n"), "the head ended");
        let mut hs = [httparse::EMPTY_HEADER; 16];
        let partial = httparse::Response::new(&mut hs).parse(&got);
        assert!(
            matches!(partial, Err(httparse::Error::TooManyHeaders)),
            "{partial:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn endless_body_never_ends_the_chunked_body() {
    bounded(async {
        let addr = start(&["--endless-body", "--name", "eb"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("e1", "{}").as_bytes()).await.unwrap();
        let got = read_at_least(&mut s, 256 * 1024).await;
        let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = std::str::from_utf8(&got[..head_end]).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Transfer-Encoding: chunked\r\n"), "{head}");
        assert!(head.contains("X-Req-Id: e1\r\n"), "{head}");
        let mut body = Vec::new();
        let decoded = ChunkedDecoder::new(usize::MAX)
            .decode(&got[head_end..], &mut body)
            .expect("well-formed chunks");
        assert!(!decoded.done, "the body ended");
        assert!(body.len() > 200 * 1024, "{}", body.len());
        assert!(body.starts_with(br#"{"backend":"eb","req_id":"e1","pad":"xxxx"#));
        assert!(body[40..].iter().all(|&b| b == b'x'));
    })
    .await;
}

#[tokio::test]
async fn reset_after_bytes_cuts_the_reply_short() {
    bounded(async {
        let addr = start(&["--reset-after-bytes", "20"]).await;
        let mut s = connect(addr).await;
        s.write_all(post("rb", "{}").as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let err = loop {
            match s.read_buf(&mut got).await {
                Ok(0) => panic!("a FIN, not a reset, after {got:?}"),
                Ok(_) => {}
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        assert!(b"HTTP/1.1 200 OK\r\nCont".starts_with(&got), "{got:?}");
    })
    .await;
}

#[tokio::test]
async fn close_silently_closes_a_keep_alive_connection_after_one_reply() {
    bounded(async {
        let addr = start(&["--close-silently"]).await;
        let mut s = connect(addr).await;
        let two = post("q1", "{}") + &post("q2", "{}");
        s.write_all(two.as_bytes()).await.unwrap();
        let mut got = read_to_eof(&mut s).await.unwrap();
        let r = take_resp(&mut got, false).unwrap();
        assert_eq!(r.header("x-req-id"), Some("q1"));
        assert_eq!(r.header("connection"), None, "the close is not announced");
        assert!(got.is_empty(), "nothing after the first reply");
    })
    .await;
}

#[test]
fn replacing_modes_exclude_each_other() {
    for pair in [
        ["--blackhole", "--endless-head"],
        ["--endless-body", "--reset"],
        ["--endless-head", "--endless-body"],
    ] {
        assert!(MockConfig::new(&test_args(&pair)).is_err(), "{pair:?}");
    }
    let err = MockConfig::new(&test_args(&["--blackhole", "--reset-after-bytes", "3"]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--blackhole, --reset-after-bytes"), "{err}");
    assert!(MockConfig::new(&test_args(&["--chunk-bytes", "1", "--close-silently"])).is_ok());
}

/// Rough throughput check: `cargo test --release -p splitter-user --lib wrk_load --
/// --ignored --nocapture` (needs `wrk`). POSTs a 2 KB JSON body over 32 keep-alive
/// connections for 5 s to a single-threaded mock answering 2 KB bodies.
#[test]
#[ignore = "load test: needs wrk; run in --release with --ignored --nocapture"]
fn wrk_load() {
    let cfg = Arc::new(MockConfig::new(&test_args(&["--body-bytes", "2048"])).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener, cfg).await
        })
    });
    let addr = rx.recv().unwrap();
    let dir = std::env::temp_dir().join(format!("mock-wrk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("post.lua");
    let body = format!(
        r#"{{"id":"bench","imp":[{{"id":"1"}}],"pad":"{}"}}"#,
        "y".repeat(2000)
    );
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = '{body}'\n\
             wrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"X-Req-Id\"] = \"bench-1\"\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new("wrk")
        .args(["-t1", "-c32", "-d5s", "-s"])
        .arg(&script)
        .arg(format!("http://{addr}/bid"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    let out = out.expect("wrk installed");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

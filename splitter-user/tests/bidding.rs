//! Bid traffic (SPEC 2, 4 and 6): `*` in `select.field` over real OpenRTB 2.x replies, floors,
//! gzip and deflate replies, `X-Splitter-Value` and `X-Splitter-Second`, and the per-backend
//! (`timeout_ms`, `host`, `path_prefix`, `shadow`) and per-route (`backends`, `floor`) keys.
//! Black-box: the real splitter, raw TCP peers the test controls, raw bytes both ways.
//! Timing assertions are one-sided with wide margins: the machine is shared and noisy.

mod common;

use std::io::{Read as _, Write as _};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::{Compression, GzBuilder};

/// Bound of every wait for a request or a metric.
const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Configuration: `config(...)` plus the per-backend and per-route keys.

/// Adds `keys` (TOML lines) to the `[[backend]]` named `name` of a file built by [`config`].
fn backend_keys(cfg: &str, name: &str, keys: &str) -> String {
    let at = format!("[[backend]]\nname = \"{name}\"\n");
    assert!(cfg.contains(&at), "no backend {name} in:\n{cfg}");
    cfg.replacen(&at, &format!("{at}{keys}\n"), 1)
}

/// Adds `keys` (TOML lines) to the `[[route]]` with path prefix `prefix` of a file built by
/// [`config`].
fn route_keys(cfg: &str, prefix: &str, keys: &str) -> String {
    let at = format!("[[route]]\npath_prefix = \"{prefix}\"\n");
    assert!(cfg.contains(&at), "no route {prefix} in:\n{cfg}");
    cfg.replacen(&at, &format!("{at}{keys}\n"), 1)
}

// ---------------------------------------------------------------------------------------------
// Raw peers.

/// The value of query parameter `key` in a request target (`/x?a=2.5&b=7`).
fn query_param(target: &str, key: &str) -> Option<String> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == key => Some(v.to_string()),
        _ => None,
    })
}

/// The JSON a query-priced peer named `name` answers `req` with: its `price` is the text of query
/// parameter `name`, verbatim (`2.50`, `1.5e1`), or the string `"none"` (invalid) without one.
fn query_priced_body(name: &str, req: &RawRequest) -> String {
    let price = query_param(&req.target, name).unwrap_or_else(|| "\"none\"".into());
    priced_body(name, &req.req_id(), &price)
}

/// A keep-alive peer whose price comes from the request's query: see [`query_priced_body`].
/// One splitter then serves every combination of prices a test wants.
fn query_peer(name: &'static str) -> RawPeer {
    RawPeer::replying(move |req| http_json(&query_priced_body(name, req), ""))
}

/// A keep-alive peer answering every request with the same bytes.
fn fixed_peer(reply: Vec<u8>) -> RawPeer {
    RawPeer::replying(move |_| reply.clone())
}

/// A keep-alive peer answering `{"backend":NAME,"req_id":...,"price":PRICE}` at once.
fn priced_peer(name: &'static str, price: &'static str) -> RawPeer {
    RawPeer::replying(move |req| http_json(&priced_body(name, &req.req_id(), price), ""))
}

/// A keep-alive peer answering like [`priced_peer`], each reply `delay` after its request.
fn delayed_peer(name: &'static str, price: &'static str, delay: Duration) -> RawPeer {
    RawPeer::start(move |mut conn| {
        while let Some(req) = conn.next_request() {
            thread::sleep(delay);
            if !conn.write(&http_json(&priced_body(name, &req.req_id(), price), "")) {
                return;
            }
        }
    })
}

/// A 200 carrying `body` as is, with `Content-Encoding: encoding` and a Content-Length.
fn encoded_reply(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {encoding}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// The same, `Transfer-Encoding: chunked` in chunks of at most 7 bytes.
fn encoded_chunked_reply(encoding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: {encoding}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Compression. Not the library's defaults (a name and a time in the gzip header, the best
// level), so a splitter that decoded and encoded again would not give the same bytes back.

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzBuilder::new()
        .filename("bid.json")
        .mtime(1_700_000_000)
        .write(Vec::new(), Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// HTTP's `deflate`: the zlib format (RFC 9110 8.4.1.2).
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = ZlibEncoder::new(Vec::new(), Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// gzip at the library's default level: for the bombs, where only the size matters.
fn gzip_fast(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("the client's body must be valid gzip");
    out
}

fn inflate(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .expect("the client's body must be valid zlib (deflate)");
    out
}

/// Encodes `data` as `encoding` says (`gzip` or `deflate`).
fn encode(encoding: &str, data: &[u8]) -> Vec<u8> {
    match encoding {
        "gzip" => gzip(data),
        "deflate" => deflate(data),
        other => panic!("no encoder for {other}"),
    }
}

/// A keep-alive peer answering [`query_priced_body`] encoded as `encoding` (`gzip` or
/// `deflate`), chunked or with a Content-Length.
fn encoded_query_peer(name: &'static str, encoding: &'static str, chunked: bool) -> RawPeer {
    RawPeer::replying(move |req| {
        let body = encode(encoding, query_priced_body(name, req).as_bytes());
        if chunked {
            encoded_chunked_reply(encoding, &body)
        } else {
            encoded_reply(encoding, &body)
        }
    })
}

// ---------------------------------------------------------------------------------------------
// What the client got.

/// A 200 from `backend` whose `X-Splitter-Value` is `value` and whose `X-Splitter-Second` is
/// `second` (absent for `None`), each at most once.
#[track_caller]
fn assert_priced(r: &Response, backend: impl Winner, value: &str, second: Option<&str>) {
    assert_eq!(r.status, 200, "expected a 200: {r:?}");
    let got = r.header_all("X-Splitter-Backend");
    assert!(
        got.len() == 1 && backend.matches(got[0]),
        "X-Splitter-Backend {got:?}, expected {}: {r:?}",
        backend.show()
    );
    assert_eq!(
        r.header_all("X-Splitter-Value"),
        [value],
        "X-Splitter-Value: {r:?}"
    );
    match second {
        Some(second) => assert_eq!(
            r.header_all("X-Splitter-Second"),
            [second],
            "X-Splitter-Second: {r:?}"
        ),
        None => assert!(
            r.header("X-Splitter-Second").is_none(),
            "no second valid reply, yet X-Splitter-Second: {r:?}"
        ),
    }
    r.assert_length_matches();
}

/// Who may have won: one backend, or any of several (a tie).
trait Winner {
    fn matches(&self, backend: &str) -> bool;
    fn show(&self) -> String;
}

impl Winner for &str {
    fn matches(&self, backend: &str) -> bool {
        *self == backend
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Winner for &[&str] {
    fn matches(&self, backend: &str) -> bool {
        self.contains(&backend)
    }
    fn show(&self) -> String {
        self.join(" or ")
    }
}

/// A 204 without any `X-Splitter-*` header.
#[track_caller]
fn assert_no_bid(r: &Response) {
    r.assert_no_content();
    for (name, _) in &r.headers {
        assert!(
            !name.to_ascii_lowercase().starts_with("x-splitter-"),
            "a 204 with {name}: {r:?}"
        );
    }
}

/// Sends `raw` on `client`; the response and how long it took from the last byte sent.
fn timed(client: &mut Client, raw: &[u8]) -> (Response, Duration) {
    client.send(raw);
    let t = Instant::now();
    let r = client.read_response();
    (r, t.elapsed())
}

fn outcome(m: &Metrics, backend: &str, outcome: &str) -> f64 {
    m.get(
        "splitter_backend_responses_total",
        &[("backend", backend), ("outcome", outcome)],
    )
}

fn invalid_reason(m: &Metrics, backend: &str, reason: &str) -> f64 {
    m.get(
        "splitter_backend_invalid_total",
        &[("backend", backend), ("reason", reason)],
    )
}

fn wins(m: &Metrics, backend: &str) -> f64 {
    m.get("splitter_backend_wins_total", &[("backend", backend)])
}

/// Every request `peer` received within `within`, in order.
fn received(peer: &RawPeer, within: Duration) -> Vec<RawRequest> {
    let until = Instant::now() + within;
    let mut got = Vec::new();
    while let Ok(r) = peer
        .requests
        .recv_timeout(until.saturating_duration_since(Instant::now()))
    {
        got.push(r);
    }
    got
}

// ---------------------------------------------------------------------------------------------
// `*` in select.field over OpenRTB 2.x bid responses.

/// An OpenRTB 2.5 bid response: two seats, three bids priced 1.2, 3.4 and 2.2; one bid has an
/// `ext.price` of 99 that the `price` field must not see.
fn ortb_a(req_id: &str) -> String {
    format!(
        r#"{{"id":"{req_id}","bidid":"a-resp-1","cur":"USD","seatbid":[
  {{"seat":"dsp-a-1","group":0,"bid":[
    {{"id":"1","impid":"1","price":1.2,"adid":"314","nurl":"http://a.example/win?p=${{AUCTION_PRICE}}",
      "adm":"<div class=\"ad\">ad</div>","adomain":["a.example"],"iurl":"http://a.example/i.png",
      "cid":"campaign-1","crid":"creative-1","cat":["IAB1"],"w":300,"h":250}},
    {{"id":"2","impid":"2","price":3.4,"crid":"creative-2","ext":{{"price":99}}}}]}},
  {{"seat":"dsp-a-2","bid":[{{"id":"3","impid":"1","price":2.2,"crid":"creative-3"}}]}}],
 "ext":{{"price":1000}}}}"#
    )
}

/// Another one: numeric prices 2.0 and 1.0, and bids without a usable price (a string "0.1",
/// none at all, null) that must be skipped; an `ext.price` of 0.05.
fn ortb_b(req_id: &str) -> String {
    format!(
        r#"{{"id":"{req_id}","cur":"USD","seatbid":[
  {{"seat":"b-1","bid":[
    {{"id":"1","impid":"1","price":2.0,"crid":"x"}},
    {{"id":"2","impid":"1","price":"0.1","crid":"y"}},
    {{"id":"3","impid":"1","crid":"z"}}]}},
  {{"seat":"b-2","bid":[
    {{"id":"4","impid":"2","price":null,"ext":{{"price":0.05}}}},
    {{"id":"5","impid":"2","price":1.0,"ext":{{"price":"7"}}}}]}}]}}"#
    )
}

/// What a bidder without a bid answers 200 with (OpenRTB allows an empty seatbid, or a no-bid
/// reason without seatbid), and one whose only price is a string.
fn ortb_no_bids(req_id: &str) -> [String; 4] {
    [
        format!(r#"{{"id":"{req_id}","seatbid":[]}}"#),
        format!(r#"{{"id":"{req_id}","nbr":2}}"#),
        format!(r#"{{"id":"{req_id}","seatbid":[{{"seat":"s","bid":[]}}]}}"#),
        format!(r#"{{"id":"{req_id}","seatbid":[{{"bid":[{{"id":"1","price":"50"}}]}}]}}"#),
    ]
}

/// Backends `a` and `b` answering [`ortb_a`] and [`ortb_b`], and four no-bid bidders.
fn ortb_peers() -> Vec<(&'static str, RawPeer)> {
    let mut peers = vec![
        (
            "a",
            RawPeer::replying(|req| http_json(&ortb_a(&req.req_id()), "")),
        ),
        (
            "b",
            RawPeer::replying(|req| http_json(&ortb_b(&req.req_id()), "")),
        ),
    ];
    for (i, name) in ["nb0", "nb1", "nb2", "nb3"].into_iter().enumerate() {
        peers.push((
            name,
            RawPeer::replying(move |req| http_json(&ortb_no_bids(&req.req_id())[i], "")),
        ));
    }
    peers
}

#[test]
fn openrtb_wildcard_picks_the_highest_bid_of_every_seat() {
    let peers = ortb_peers();
    let backends: Vec<_> = peers.iter().map(|(n, p)| (*n, p.addr)).collect();
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/*/bid/*/price\"",
        &backends,
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("ortb-max-{i}");
        let t = Instant::now();
        let r = client.request(&bid("/openrtb2/auction", &id));
        // a's best is 3.4 (not ext.price 99 or 1000), b's is 2 (not the string "0.1").
        assert_priced(&r, "a", "3.4", Some("2"));
        assert_eq!(
            r.body_str(),
            ortb_a(&id),
            "the winner's body, byte for byte"
        );
        // The no-bid replies count as answered: nothing waits for the 2 s deadline.
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
    }
    let m = s.wait_metrics(WAIT, |m| outcome(m, "nb3", "invalid") >= 3.0);
    for nb in ["nb0", "nb1", "nb2", "nb3"] {
        assert_eq!(
            outcome(&m, nb, "invalid"),
            3.0,
            "{nb}: no number matched = invalid\n{}",
            m.text
        );
        assert_eq!(outcome(&m, nb, "valid"), 0.0, "{nb}\n{}", m.text);
    }
    assert_eq!(outcome(&m, "a", "valid"), 3.0, "{}", m.text);
    assert_eq!(outcome(&m, "b", "valid"), 3.0, "{}", m.text);
    assert_eq!(wins(&m, "a"), 3.0, "{}", m.text);
}

#[test]
fn openrtb_wildcard_with_prefer_min_picks_the_lowest_bid() {
    let peers = ortb_peers();
    let backends: Vec<_> = peers.iter().map(|(n, p)| (*n, p.addr)).collect();
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/*/bid/*/price\"\nprefer = \"min\"",
        &backends,
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("ortb-min-{i}");
        let r = client.request(&bid("/openrtb2/auction", &id));
        // b's lowest number is 1 (the string "0.1", the null and ext.price 0.05 do not count);
        // a's is 1.2.
        assert_priced(&r, "b", "1", Some("1.2"));
        assert_eq!(r.body_str(), ortb_b(&id));
    }
}

#[test]
fn wildcard_reaches_a_nested_ext_price_and_skips_bids_without_one() {
    let peers = ortb_peers();
    let backends: Vec<_> = peers.iter().map(|(n, p)| (*n, p.addr)).collect();
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/*/bid/*/ext/price\"",
        &backends,
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "ext-1"));
    // a: only bid 2 has an ext, priced 99 (the top-level ext.price 1000 is not under a bid);
    // b: 0.05, its other ext.price being the string "7".
    assert_priced(&r, "a", "99", Some("0.05"));
    assert_eq!(r.body_str(), ortb_a("ext-1"));
}

#[test]
fn wildcard_matches_object_members_arrays_and_escaped_keys() {
    // `*` over an object's member values and over an array's elements, in one field.
    let obj = fixed_peer(http_json(
        r#"{"bids":{"dsp1":{"price":4},"dsp2":{"price":"8"},"dsp3":{"price":6.5},"dsp4":[],"dsp5":{"cost":100}}}"#,
        "",
    ));
    let arr = fixed_peer(http_json(r#"{"bids":[{"price":5},{"nope":9},7,null]}"#, ""));
    // `*` over a number, a string and an empty object match nothing: invalid.
    let scalar = fixed_peer(http_json(r#"{"bids":500}"#, ""));
    let string = fixed_peer(http_json(r#"{"bids":"600"}"#, ""));
    let empty = fixed_peer(http_json(r#"{"bids":{}}"#, ""));
    let s = SPLITTER.run(&config(
        "",
        "field = \"/bids/*/price\"",
        &[
            ("obj", obj.addr),
            ("arr", arr.addr),
            ("scalar", scalar.addr),
            ("string", string.addr),
            ("empty", empty.addr),
        ],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "obj-1"));
    assert_priced(&r, "obj", "6.5", Some("5"));
    let m = s.wait_metrics(WAIT, |m| outcome(m, "empty", "invalid") >= 1.0);
    for name in ["scalar", "string", "empty"] {
        assert_eq!(outcome(&m, name, "invalid"), 1.0, "{name}\n{}", m.text);
    }

    // RFC 6901 escapes around a `*`: `~1` is `/`, `~0` is `~`.
    let esc = fixed_peer(http_json(
        r#"{"a/b":[{"c~d":7},{"c~d":2,"cd":100}],"a":{"b":[{"c~d":1000}]},"ab":[{"c~d":999}]}"#,
        "",
    ));
    let s = SPLITTER.run(&config(
        "",
        "field = \"/a~1b/*/c~0d\"",
        &[("esc", esc.addr)],
        &[("/", 2000)],
    ));
    assert_priced(&s.request(&bid("/x", "esc-1")), "esc", "7", None);

    // A last `*` takes the numbers among the elements themselves, without going deeper; a
    // top-level array is walked like any other.
    let mixed = fixed_peer(http_json(r#"{"p":[1,"9",[20],{"x":30},3.5,null]}"#, ""));
    let top = fixed_peer(http_json(r#"[{"p":2},{"p":"40"}]"#, ""));
    let s = SPLITTER.run(&config(
        "",
        "field = \"/p/*\"",
        &[("mixed", mixed.addr)],
        &[("/", 2000)],
    ));
    assert_priced(&s.request(&bid("/x", "last-1")), "mixed", "3.5", None);
    let s = SPLITTER.run(&config(
        "",
        "field = \"/*/p\"",
        &[("top", top.addr)],
        &[("/", 2000)],
    ));
    assert_priced(&s.request(&bid("/x", "top-1")), "top", "2", None);
}

#[test]
fn wildcard_with_no_number_anywhere_gives_204() {
    let peers: Vec<RawPeer> = (0..4)
        .map(|i| RawPeer::replying(move |req| http_json(&ortb_no_bids(&req.req_id())[i], "")))
        .collect();
    let names = ["nb0", "nb1", "nb2", "nb3"];
    let backends: Vec<_> = names
        .iter()
        .zip(&peers)
        .map(|(n, p)| (*n, p.addr))
        .collect();
    let s = SPLITTER.run(&config(
        "",
        "field = \"/seatbid/*/bid/*/price\"",
        &backends,
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let (r, took) = timed(&mut client, &bid("/x", "nobid-1"));
    assert_no_bid(&r);
    assert!(
        took < Duration::from_millis(1500),
        "every bidder answered: an immediate 204, took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Floors.

#[test]
fn floor_global_and_per_route_with_prefer_max() {
    // `q` prices from the query; `low` always bids 0.5.
    let q = query_peer("q");
    let low = priced_peer("low", "0.5");
    let cfg = config(
        "",
        "floor = 1",
        &[("q", q.addr), ("low", low.addr)],
        &[("/", 2000), ("/low", 2000), ("/high", 2000)],
    );
    let cfg = route_keys(&cfg, "/low", "floor = 0.25");
    let cfg = route_keys(&cfg, "/high", "floor = 5");
    let s = SPLITTER.run(&cfg);
    let mut client = s.client();
    let mut ask = |target: &str| client.request(&bid(target, "floor"));

    // Global floor 1: 0.5 is below it (both backends), 1 is equal (valid), 1.5 above.
    assert_no_bid(&ask("/x?q=0.5"));
    assert_priced(&ask("/x?q=1"), "q", "1", None);
    assert_priced(&ask("/x?q=1.5"), "q", "1.5", None);
    // /low overrides it downwards: 0.5 is valid there, from both backends.
    assert_priced(&ask("/low?q=0.75"), "q", "0.75", Some("0.5"));
    assert_priced(&ask("/low?q=0.25"), "low", "0.5", Some("0.25"));
    // q's 0.2 is below 0.25; low's 0.5 alone is valid.
    assert_priced(&ask("/low?q=0.2"), "low", "0.5", None);
    // /high overrides it upwards.
    assert_no_bid(&ask("/high?q=4.99"));
    assert_priced(&ask("/high?q=5"), "q", "5", None);
    assert_priced(&ask("/high?q=7"), "q", "7", None);

    // Below the floor: q 3 times (0.5, 0.2, 4.99), low on every request but the 3 on /low.
    let m = s.wait_metrics(WAIT, |m| {
        invalid_reason(m, "q", "below_floor") >= 3.0
            && invalid_reason(m, "low", "below_floor") >= 6.0
    });
    assert_eq!(invalid_reason(&m, "q", "below_floor"), 3.0, "{}", m.text);
    assert_eq!(invalid_reason(&m, "low", "below_floor"), 6.0, "{}", m.text);
    assert_eq!(outcome(&m, "q", "invalid"), 3.0, "{}", m.text);
    assert_eq!(outcome(&m, "q", "valid"), 6.0, "{}", m.text);
    assert_eq!(outcome(&m, "low", "valid"), 3.0, "{}", m.text);
    assert_eq!(invalid_reason(&m, "q", "encoding"), 0.0, "{}", m.text);
}

#[test]
fn floor_with_prefer_min_is_a_ceiling() {
    let q = query_peer("q");
    let cfg = config(
        "",
        "prefer = \"min\"\nfloor = 10",
        &[("q", q.addr)],
        &[("/", 2000), ("/tight", 2000)],
    );
    let cfg = route_keys(&cfg, "/tight", "floor = 3");
    let s = SPLITTER.run(&cfg);
    let mut client = s.client();
    let mut ask = |target: &str| client.request(&bid(target, "ceil"));
    assert_no_bid(&ask("/x?q=12"));
    assert_priced(&ask("/x?q=10"), "q", "10", None);
    assert_priced(&ask("/x?q=9"), "q", "9", None);
    assert_priced(&ask("/tight?q=3"), "q", "3", None);
    assert_no_bid(&ask("/tight?q=3.01"));
    assert_no_bid(&ask("/tight?q=9"));
    let m = s.wait_metrics(WAIT, |m| invalid_reason(m, "q", "below_floor") >= 3.0);
    assert_eq!(invalid_reason(&m, "q", "below_floor"), 3.0, "{}", m.text);
    assert_eq!(outcome(&m, "q", "valid"), 3.0, "{}", m.text);
}

#[test]
fn floor_applies_to_the_best_wildcard_match() {
    // The OpenRTB replies' best bids are 3.4 (a) and 2 (b): a floor of 2.5 leaves only a, one
    // of 3.5 leaves nothing, though a has a bid above it under ext.
    let peers = ortb_peers();
    let backends: Vec<_> = peers.iter().map(|(n, p)| (*n, p.addr)).collect();
    let cfg = config(
        "",
        "field = \"/seatbid/*/bid/*/price\"\nfloor = 2.5",
        &backends,
        &[("/", 2000), ("/none", 2000)],
    );
    let s = SPLITTER.run(&route_keys(&cfg, "/none", "floor = 3.5"));
    assert_priced(&s.request(&bid("/x", "wf-1")), "a", "3.4", None);
    assert_no_bid(&s.request(&bid("/none", "wf-2")));
    let m = s.wait_metrics(WAIT, |m| invalid_reason(m, "a", "below_floor") >= 1.0);
    assert_eq!(invalid_reason(&m, "a", "below_floor"), 1.0, "{}", m.text);
    assert_eq!(invalid_reason(&m, "b", "below_floor"), 2.0, "{}", m.text);
}

// ---------------------------------------------------------------------------------------------
// X-Splitter-Value and X-Splitter-Second.

#[test]
fn value_and_second_headers_with_one_two_and_three_valid_replies() {
    let a = query_peer("a");
    let b = query_peer("b");
    let c = query_peer("c");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let mut ask = |target: &str| client.request(&bid(target, "val"));
    // One valid reply: a value, no second. Numbers in their shortest form.
    assert_priced(&ask("/v?a=2.50"), "a", "2.5", None);
    assert_priced(&ask("/v?b=3.0"), "b", "3", None);
    assert_priced(&ask("/v?c=1.5e1"), "c", "15", None);
    assert_priced(&ask("/v?a=0.1"), "a", "0.1", None);
    // Two.
    assert_priced(&ask("/v?a=3.0&b=1.5e1"), "b", "15", Some("3"));
    assert_priced(&ask("/v?a=0.30&c=0.2"), "a", "0.3", Some("0.2"));
    // Three: the runner-up is the second best, whatever the arrival order.
    assert_priced(&ask("/v?a=2.50&b=3.0&c=1.5e1"), "c", "15", Some("3"));
    assert_priced(&ask("/v?a=9&b=1&c=4"), "a", "9", Some("4"));
    assert_priced(&ask("/v?a=-1&b=-2&c=-0.5"), "c", "-0.5", Some("-1"));
    // Ties: the second is the same number.
    assert_priced(&ask("/v?a=4&b=4.0"), &["a", "b"][..], "4", Some("4"));
    assert_priced(&ask("/v?a=4&b=4&c=1"), &["a", "b"][..], "4", Some("4"));
    assert_priced(&ask("/v?a=7&b=7&c=7"), &["a", "b", "c"][..], "7", Some("7"));
    // Nothing valid: 204, neither header.
    assert_no_bid(&ask("/v"));
}

#[test]
fn value_and_second_with_prefer_min() {
    let a = query_peer("a");
    let b = query_peer("b");
    let c = query_peer("c");
    let s = SPLITTER.run(&config(
        "",
        "prefer = \"min\"",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let mut ask = |target: &str| client.request(&bid(target, "valmin"));
    assert_priced(&ask("/v?a=2.5&b=3&c=15"), "a", "2.5", Some("3"));
    assert_priced(&ask("/v?a=2.5&b=0.75"), "b", "0.75", Some("2.5"));
    assert_priced(&ask("/v?c=8"), "c", "8", None);
}

#[test]
fn a_backend_cannot_forge_splitter_headers() {
    let forged = "X-Splitter-Value: 999\r\nX-Splitter-Second: 998\r\nx-splitter-backend: evil\r\n\
                  X-SPLITTER-VALUE: 997\r\nX-Splitter-Debug: yes\r\n";
    let forger = RawPeer::replying(move |req| {
        let price = query_param(&req.target, "f").unwrap_or_else(|| "\"none\"".into());
        http_json(&priced_body("forger", &req.req_id(), &price), forged)
    });
    let honest = query_peer("h");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("forger", forger.addr), ("honest", honest.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let no_forged = |r: &Response| {
        assert!(r.header("X-Splitter-Debug").is_none(), "{r:?}");
        let head = String::from_utf8_lossy(&r.head).to_ascii_lowercase();
        for forged in ["999", "998", "997", "evil"] {
            assert!(!head.contains(forged), "forged {forged} passed on: {head}");
        }
    };
    // The forger wins with 2: the real value and second, once each.
    let r = client.request(&bid("/x?f=2&h=1", "forge-1"));
    assert_priced(&r, "forger", "2", Some("1"));
    no_forged(&r);
    // The forger alone is valid: no second at all, not its forged one.
    let r = client.request(&bid("/x?f=2", "forge-2"));
    assert_priced(&r, "forger", "2", None);
    no_forged(&r);
    // Nothing valid: a 204 with no X-Splitter-* header.
    let r = client.request(&bid("/x", "forge-3"));
    assert_no_bid(&r);
}

// ---------------------------------------------------------------------------------------------
// Content-Encoding.

#[test]
fn gzip_and_deflate_replies_are_judged_decoded_and_passed_on_as_sent() {
    let gz = encoded_query_peer("gz", "gzip", false);
    let df = encoded_query_peer("df", "deflate", false);
    let gzc = encoded_query_peer("gzc", "gzip", true);
    let plain = query_peer("plain");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("gz", gz.addr),
            ("df", df.addr),
            ("gzc", gzc.addr),
            ("plain", plain.addr),
        ],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    // (target, winner, its encoding, value, second)
    let cases = [
        ("/e?gz=5&df=4&plain=1", "gz", Some("gzip"), "5", Some("4")),
        (
            "/e?gz=2&df=4.5&plain=1",
            "df",
            Some("deflate"),
            "4.5",
            Some("2"),
        ),
        ("/e?gz=1&df=2&plain=3", "plain", None, "3", Some("2")),
        ("/e?gzc=8&plain=3", "gzc", Some("gzip"), "8", Some("3")),
        ("/e?gz=1.25", "gz", Some("gzip"), "1.25", None),
        ("/e?df=6", "df", Some("deflate"), "6", None),
    ];
    for (i, (target, winner, encoding, value, second)) in cases.into_iter().enumerate() {
        let id = format!("enc-{i}");
        let r = client.request(&bid(target, &id));
        assert_priced(&r, winner, value, second);
        // What the winner's peer built: its JSON, then its exact compressed bytes.
        let probe = RawRequest {
            method: "POST".into(),
            target: target.into(),
            version: "HTTP/1.1".into(),
            headers: vec![("X-Req-Id".into(), id.clone())],
            body: Vec::new(),
            head: Vec::new(),
        };
        let json = query_priced_body(winner, &probe);
        match encoding {
            Some(enc) => {
                assert_eq!(
                    r.header_all("Content-Encoding"),
                    [enc],
                    "the winner's Content-Encoding passed on: {r:?}"
                );
                assert_eq!(
                    r.body,
                    encode(enc, json.as_bytes()),
                    "{target}: the compressed bytes as the backend sent them"
                );
                let decoded = if enc == "gzip" {
                    gunzip(&r.body)
                } else {
                    inflate(&r.body)
                };
                assert_eq!(String::from_utf8_lossy(&decoded), json, "{target}");
            }
            None => {
                assert!(r.header("Content-Encoding").is_none(), "{r:?}");
                assert_eq!(r.body_str(), json);
            }
        }
    }
    let m = s.wait_metrics(WAIT, |m| outcome(m, "gz", "valid") >= 4.0);
    assert_eq!(outcome(&m, "gz", "valid"), 4.0, "{}", m.text);
    assert_eq!(outcome(&m, "df", "valid"), 4.0, "{}", m.text);
    for b in ["gz", "df", "gzc", "plain"] {
        assert_eq!(invalid_reason(&m, b, "encoding"), 0.0, "{b}\n{}", m.text);
    }
}

#[test]
fn unknown_or_undecodable_encodings_are_invalid_and_counted() {
    let json = |name: &str| format!(r#"{{"backend":"{name}","price":100}}"#);
    // Brotli is not decoded: invalid whatever the bytes.
    let br = fixed_peer(encoded_reply("br", json("br").as_bytes()));
    // Says gzip, is plain JSON.
    let fake = fixed_peer(encoded_reply("gzip", json("fake").as_bytes()));
    // A gzip stream cut in half.
    let whole = gzip(json("cut").repeat(20).as_bytes());
    let cut = fixed_peer(encoded_reply("gzip", &whole[..whole.len() / 2]));
    // Says deflate, is gzip.
    let mixed = fixed_peer(encoded_reply("deflate", &gzip(json("mixed").as_bytes())));
    let good = priced_peer("good", "1");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("br", br.addr),
            ("fake", fake.addr),
            ("cut", cut.addr),
            ("mixed", mixed.addr),
            ("good", good.addr),
        ],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("badenc-{i}");
        let (r, took) = timed(&mut client, &bid("/x", &id));
        assert_priced(&r, "good", "1", None);
        r.assert_won(&id);
        assert!(r.header("Content-Encoding").is_none(), "{r:?}");
        assert!(took < Duration::from_millis(1500), "all answered: {took:?}");
    }
    let bad = ["br", "fake", "cut", "mixed"];
    let m = s.wait_metrics(WAIT, |m| {
        bad.iter().all(|b| invalid_reason(m, b, "encoding") >= 3.0)
    });
    for b in bad {
        assert_eq!(invalid_reason(&m, b, "encoding"), 3.0, "{b}\n{}", m.text);
        assert_eq!(outcome(&m, b, "invalid"), 3.0, "{b}\n{}", m.text);
        assert_eq!(outcome(&m, b, "valid"), 0.0, "{b}\n{}", m.text);
    }

    // Alone, a `br` reply gives a 204.
    let s = SPLITTER.run(&config("", "", &[("br", br.addr)], &[("/", 2000)]));
    assert_no_bid(&s.request(&bid("/x", "br-only")));
}

#[test]
fn content_codings_are_case_insensitive_and_x_gzip_is_gzip() {
    // RFC 9110 8.4.1: content codings are case-insensitive; `x-gzip` is `gzip`.
    let upper = RawPeer::replying(move |req| {
        let body = gzip(query_priced_body("upper", req).as_bytes());
        encoded_reply("GZip", &body)
    });
    let xgzip = RawPeer::replying(|req| {
        let body = gzip(query_priced_body("xgzip", req).as_bytes());
        encoded_reply("x-gzip", &body)
    });
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("upper", upper.addr), ("xgzip", xgzip.addr)],
        &[("/", 2000)],
    ));
    let mut client = s.client();
    let r = client.request(&bid("/x?upper=3&xgzip=2", "ci-1"));
    assert_priced(&r, "upper", "3", Some("2"));
    assert_eq!(r.header_all("Content-Encoding"), ["GZip"], "as sent: {r:?}");
    assert_eq!(r.json_str("req_id"), None, "still compressed");
    assert!(String::from_utf8_lossy(&gunzip(&r.body)).contains("\"ci-1\""));
    let r = client.request(&bid("/x?upper=1&xgzip=2", "ci-2"));
    assert_priced(&r, "xgzip", "2", Some("1"));
    assert_eq!(
        r.header_all("Content-Encoding"),
        ["x-gzip"],
        "as sent: {r:?}"
    );
    assert!(String::from_utf8_lossy(&gunzip(&r.body)).contains("\"ci-2\""));
}

#[test]
fn multi_member_gzip_reply_is_decoded_whole() {
    // RFC 1952 2.2: a gzip stream is a series of members; the body is all of them, in order.
    let json = br#"{"backend":"multi","seatbid":[{"bid":[{"price":7}]}],"price":9}"#;
    let mut multi = gzip(&json[..20]);
    multi.extend(gzip(&json[20..45]));
    multi.extend(gzip(&json[45..]));
    let mut decoded = Vec::new();
    flate2::read::MultiGzDecoder::new(&multi[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert_eq!(decoded, json);
    let peer = fixed_peer(encoded_reply("gzip", &multi));
    let plain = priced_peer("plain", "1");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("multi", peer.addr), ("plain", plain.addr)],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "multi-1"));
    assert_priced(&r, "multi", "9", Some("1"));
    assert_eq!(r.body, multi, "passed on as sent");
}

#[test]
fn decoded_size_counts_against_max_response_bytes() {
    // A small gzip stream that decodes to `size` bytes of JSON priced `price`.
    let padded = |price: &str, size: usize| {
        let head = format!(r#"{{"price":{price},"pad":""#);
        let pad = size - head.len() - 2;
        let json = format!("{head}{}\"}}", "x".repeat(pad));
        assert_eq!(json.len(), size);
        gzip(json.as_bytes())
    };
    let over = fixed_peer(encoded_reply("gzip", &padded("9", 70_000)));
    let under = fixed_peer(encoded_reply("gzip", &padded("5", 60_000)));
    let plain = priced_peer("plain", "1");
    let s = SPLITTER.run(&config(
        "max_response_bytes = 65536",
        "",
        &[
            ("over", over.addr),
            ("under", under.addr),
            ("plain", plain.addr),
        ],
        &[("/", 2000)],
    ));
    let r = s.request(&bid("/x", "limit-1"));
    assert_priced(&r, "under", "5", Some("1"));
    assert_eq!(r.body, padded("5", 60_000), "passed on compressed");
    let m = s.wait_metrics(WAIT, |m| outcome(m, "over", "invalid") >= 1.0);
    assert_eq!(outcome(&m, "over", "invalid"), 1.0, "{}", m.text);
}

#[test]
fn gzip_and_deflate_bombs_are_invalid_and_the_splitter_keeps_serving() {
    // 10 MB of JSON whitespace after a high price: about 10 KB compressed, ten times the
    // default max_response_bytes (1 MiB) decoded.
    let mut json = br#"{"price":1000,"pad":""#.to_vec();
    json.resize(json.len() + 10_000_000, b' ');
    json.extend_from_slice(b"\"}");
    let gz = gzip_fast(&json);
    let mut df = ZlibEncoder::new(Vec::new(), Compression::fast());
    df.write_all(&json).unwrap();
    let df = df.finish().unwrap();
    assert!(
        gz.len() < 100_000 && df.len() < 100_000,
        "{} {}",
        gz.len(),
        df.len()
    );
    let gz_bomb = fixed_peer(encoded_reply("gzip", &gz));
    let df_bomb = fixed_peer(encoded_reply("deflate", &df));
    let good = priced_peer("good", "1");
    let s = SPLITTER.run(&config(
        "",
        "",
        &[
            ("gzbomb", gz_bomb.addr),
            ("dfbomb", df_bomb.addr),
            ("good", good.addr),
        ],
        &[("/", 3000)],
    ));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("bomb-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        assert_priced(&r, "good", "1", None);
    }
    // A fresh client connection is served too, and so is the admin listener.
    s.request(&bid("/x", "bomb-after")).assert_won("bomb-after");
    assert_eq!(s.admin_get("/healthz").status, 200);
    let m = s.wait_metrics(WAIT, |m| {
        outcome(m, "gzbomb", "invalid") >= 4.0 && outcome(m, "dfbomb", "invalid") >= 4.0
    });
    for b in ["gzbomb", "dfbomb"] {
        assert_eq!(outcome(&m, b, "invalid"), 4.0, "{b}: invalid\n{}", m.text);
        assert_eq!(
            outcome(&m, b, "error"),
            0.0,
            "{b}: not an outage\n{}",
            m.text
        );
        assert_eq!(wins(&m, b), 0.0, "{b}\n{}", m.text);
    }
}

// ---------------------------------------------------------------------------------------------
// Per-backend keys.

#[test]
fn backend_timeout_ends_its_wait_early_when_the_others_are_done() {
    let fast = priced_peer("fast", "1");
    // Would win, if it were not past its own 50 ms deadline.
    let slow = delayed_peer("slow", "100", Duration::from_millis(1000));
    let cfg = config(
        "",
        "",
        &[("fast", fast.addr), ("slow", slow.addr)],
        &[("/", 400)],
    );
    let s = SPLITTER.run(&backend_keys(&cfg, "slow", "timeout_ms = 50"));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("bto-{i}");
        let (r, took) = timed(&mut client, &bid("/x", &id));
        r.assert_won(&id);
        assert_priced(&r, "fast", "1", None);
        assert!(
            took < Duration::from_millis(250),
            "slow's own deadline is 50 ms, the route's 400 ms: answered after {took:?}"
        );
    }
    let m = s.wait_metrics(WAIT, |m| outcome(m, "slow", "timeout") >= 3.0);
    assert_eq!(outcome(&m, "slow", "timeout"), 3.0, "{}", m.text);
    assert_eq!(outcome(&m, "slow", "valid"), 0.0, "{}", m.text);
}

/// A backend's own deadline passes while another is still awaited: the worker goes on waiting
/// for the other (it once woke again and again at the passed deadline, its CPU at 100 % and
/// every request it held unanswered).
#[test]
fn backend_timeout_passing_while_another_is_awaited_does_not_stall_the_worker() {
    // Past its own 50 ms, it would win.
    let tight = delayed_peer("tight", "100", Duration::from_millis(150));
    let other = delayed_peer("other", "1", Duration::from_millis(120));
    let cfg = config(
        "workers = 1",
        "",
        &[("tight", tight.addr), ("other", other.addr)],
        &[("/", 400)],
    );
    let s = SPLITTER.run(&backend_keys(&cfg, "tight", "timeout_ms = 50"));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("stall-{i}");
        let (r, took) = timed(&mut client, &bid("/x", &id));
        r.assert_won(&id);
        assert_priced(&r, "other", "1", None);
        assert!(
            took < Duration::from_millis(350),
            "other answers at 120 ms, the route's deadline is 400 ms: answered after {took:?}"
        );
    }
    // The worker is free: another client is answered too.
    s.request(&bid("/x", "stall-next")).assert_won("stall-next");
    let m = s.wait_metrics(WAIT, |m| outcome(m, "tight", "timeout") >= 4.0);
    assert_eq!(outcome(&m, "tight", "timeout"), 4.0, "{}", m.text);
    assert_eq!(outcome(&m, "other", "valid"), 4.0, "{}", m.text);
}

#[test]
fn backend_timeout_past_the_routes_is_capped_and_one_within_it_can_win() {
    let fast = priced_peer("fast", "1");
    // timeout_ms 5000 on a 300 ms route: the route's deadline holds.
    let sleepy = delayed_peer("sleepy", "100", Duration::from_millis(3000));
    // timeout_ms 1000, answers at 30 ms with the best price: valid, it wins.
    let prompt = delayed_peer("prompt", "50", Duration::from_millis(30));
    let cfg = config(
        "",
        "",
        &[
            ("fast", fast.addr),
            ("sleepy", sleepy.addr),
            ("prompt", prompt.addr),
        ],
        &[("/", 300)],
    );
    let cfg = backend_keys(&cfg, "sleepy", "timeout_ms = 5000");
    let cfg = backend_keys(&cfg, "prompt", "timeout_ms = 1000");
    let s = SPLITTER.run(&cfg);
    let mut client = s.client();
    let (r, took) = timed(&mut client, &bid("/x", "cap-1"));
    r.assert_won("cap-1");
    assert_priced(&r, "prompt", "50", Some("1"));
    assert!(
        took >= Duration::from_millis(250),
        "sleepy was still within the route's 300 ms: answered early, after {took:?}"
    );
    assert!(
        took < Duration::from_millis(2000),
        "sleepy's 5000 ms is capped by the route's 300 ms: answered after {took:?}"
    );
}

#[test]
fn backend_host_replaces_the_clients_and_path_prefix_is_prepended() {
    let a = priced_peer("a", "2");
    let b = priced_peer("b", "1");
    let cfg = config("", "", &[("a", a.addr), ("b", b.addr)], &[("/bid", 2000)]);
    let cfg = backend_keys(
        &cfg,
        "a",
        "host = \"dsp.example:8443\"\npath_prefix = \"/openrtb2\"",
    );
    let s = SPLITTER.run(&cfg);
    let body = bid_body("hp-1");
    let raw = format!(
        "POST /bid?x=1&y=%2F HTTP/1.1\r\nHost: client.example\r\nX-Req-Id: hp-1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let r = s.request(raw.as_bytes());
    r.assert_won("hp-1");
    assert_priced(&r, "a", "2", Some("1"));

    let got = a.next_request(WAIT);
    assert_eq!(got.target, "/openrtb2/bid?x=1&y=%2F", "{got:?}");
    assert_eq!(got.header_all("Host"), ["dsp.example:8443"], "{got:?}");
    assert_eq!(got.body, body.as_bytes());
    let got = b.next_request(WAIT);
    assert_eq!(got.target, "/bid?x=1&y=%2F", "{got:?}");
    assert_eq!(got.header_all("Host"), ["client.example"], "{got:?}");
    assert_eq!(got.body, body.as_bytes());
}

/// The root target is the prefix as written, with its query: `/` reaches a bid endpoint as
/// `/openrtb2/auction`, not `/openrtb2/auction/`, which many refuse, and as `/rtb/` when the
/// operator wrote the slash; other targets are joined with one slash.
#[test]
fn the_root_target_is_the_path_prefix_as_written() {
    let a = priced_peer("a", "2");
    let b = priced_peer("b", "1");
    let cfg = config("", "", &[("a", a.addr), ("b", b.addr)], &[("/", 2000)]);
    let cfg = backend_keys(&cfg, "a", "path_prefix = \"/openrtb2/auction\"");
    let s = SPLITTER.run(&backend_keys(&cfg, "b", "path_prefix = \"/rtb/\""));
    let mut client = s.client();
    for (target, forwarded, to_b) in [
        ("/", "/openrtb2/auction", "/rtb/"),
        ("/?tmax=80", "/openrtb2/auction?tmax=80", "/rtb/?tmax=80"),
        ("/x", "/openrtb2/auction/x", "/rtb/x"),
        ("//x", "/openrtb2/auction//x", "/rtb//x"),
    ] {
        let id = format!("root-{forwarded}");
        let body = bid_body(&id);
        let raw = format!(
            "POST {target} HTTP/1.1\r\nHost: c\r\nX-Req-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        client.request(raw.as_bytes()).assert_won(&id);
        assert_eq!(a.next_request(WAIT).target, forwarded, "{target}");
        assert_eq!(b.next_request(WAIT).target, to_b, "{target}");
    }
}

#[test]
fn absolute_form_targets_are_routed_by_path_and_forwarded_in_origin_form() {
    let a = priced_peer("a", "2");
    let b = priced_peer("b", "1");
    let cfg = config("", "", &[("a", a.addr), ("b", b.addr)], &[("/bid", 2000)]);
    let s = SPLITTER.run(&backend_keys(&cfg, "a", "path_prefix = \"/openrtb2\""));
    let mut client = s.client();
    let absolute = |target: &str, id: &str| {
        let body = bid_body(id);
        format!(
            "POST {target} HTTP/1.1\r\nHost: client.example\r\nX-Req-Id: {id}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let r = client.request(&absolute("http://client.example/bid?x=1", "abs-1"));
    r.assert_won("abs-1");
    assert_priced(&r, "a", "2", Some("1"));
    let got = a.next_request(WAIT);
    assert_eq!(got.target, "/openrtb2/bid?x=1", "{got:?}");
    let got = b.next_request(WAIT);
    assert_eq!(got.target, "/bid?x=1", "{got:?}");
    assert_eq!(got.header_all("Host"), ["client.example"], "{got:?}");

    // With a port in the authority.
    let r = client.request(&absolute("http://client.example:80/bid/v2", "abs-2"));
    r.assert_won("abs-2");
    assert_eq!(b.next_request(WAIT).target, "/bid/v2");
    assert_eq!(a.next_request(WAIT).target, "/openrtb2/bid/v2");

    // Routed by the path, not by the whole target: neither is under /bid.
    for (i, target) in ["http://client.example/other/bid", "http://bid/x"]
        .into_iter()
        .enumerate()
    {
        let r = client.request(&absolute(target, &format!("abs-404-{i}")));
        assert_eq!(r.status, 404, "{target}: {r:?}");
    }

    // An empty path is `/` (RFC 9112 3.2.1), routed and forwarded as such.
    let s = SPLITTER.run(&config("", "", &[("b", b.addr)], &[("/", 2000)]));
    let mut client = s.client();
    for (target, want) in [
        ("http://client.example", "/"),
        ("http://client.example?x=1", "/?x=1"),
    ] {
        let r = client.request(&absolute(target, "abs-root"));
        r.assert_won("abs-root");
        assert_eq!(b.next_request(WAIT).target, want, "{target}");
    }
}

// ---------------------------------------------------------------------------------------------
// Shadow backends.

#[test]
fn shadow_gets_every_request_never_wins_and_is_counted() {
    let a = priced_peer("a", "2");
    let sh = priced_peer("sh", "1000");
    let cfg = config("", "", &[("a", a.addr), ("sh", sh.addr)], &[("/", 2000)]);
    let s = SPLITTER.run(&backend_keys(&cfg, "sh", "shadow = true"));
    let mut client = s.client();
    for i in 0..3 {
        let id = format!("shadow-{i}");
        let r = client.request(&bid("/x", &id));
        r.assert_won(&id);
        // Not the winner, and not the runner-up either: its number sets no price.
        assert_priced(&r, "a", "2", None);
        assert_eq!(r.json_str("backend").as_deref(), Some("a"));
    }
    // Each once, in any order: a shadow's call outlives its request, so the next one may go
    // out on another connection and arrive first.
    let mut got: Vec<String> = received(&sh, Duration::from_millis(500))
        .iter()
        .map(RawRequest::req_id)
        .collect();
    got.sort();
    assert_eq!(
        got,
        ["shadow-0", "shadow-1", "shadow-2"],
        "the shadow gets every request"
    );
    let m = s.wait_metrics(WAIT, |m| outcome(m, "sh", "valid") >= 3.0);
    assert_eq!(outcome(&m, "sh", "valid"), 3.0, "{}", m.text);
    assert_eq!(wins(&m, "sh"), 0.0, "{}", m.text);
    assert_eq!(wins(&m, "a"), 3.0, "{}", m.text);
}

#[test]
fn slow_shadows_do_not_delay_the_answer_and_their_outcomes_are_counted() {
    let a = priced_peer("a", "1");
    // Answers within the route's 2000 ms, but long after a.
    let slow = delayed_peer("slow", "1000", Duration::from_millis(1200));
    // Answers after the route's deadline.
    let never = delayed_peer("never", "1000", Duration::from_millis(4000));
    let cfg = config(
        "",
        "",
        &[("a", a.addr), ("slow", slow.addr), ("never", never.addr)],
        &[("/", 2000)],
    );
    let cfg = backend_keys(&cfg, "slow", "shadow = true");
    let s = SPLITTER.run(&backend_keys(&cfg, "never", "shadow = true"));
    let mut client = s.client();
    let (r, took) = timed(&mut client, &bid("/x", "slowsh-1"));
    r.assert_won("slowsh-1");
    assert_priced(&r, "a", "1", None);
    assert!(
        took < Duration::from_millis(800),
        "the client must not wait for shadows (1200 ms and 4000 ms): took {took:?}"
    );
    assert_eq!(slow.next_request(WAIT).req_id(), "slowsh-1");
    assert_eq!(never.next_request(WAIT).req_id(), "slowsh-1");
    // Measured all the same: slow's reply came within the route's deadline, never's did not.
    let m = s.wait_metrics(Duration::from_secs(8), |m| {
        outcome(m, "slow", "valid") >= 1.0 && outcome(m, "never", "timeout") >= 1.0
    });
    assert_eq!(outcome(&m, "slow", "valid"), 1.0, "{}", m.text);
    assert_eq!(outcome(&m, "never", "timeout"), 1.0, "{}", m.text);
    assert_eq!(wins(&m, "slow") + wins(&m, "never"), 0.0, "{}", m.text);
}

#[test]
fn when_only_shadows_answer_validly_the_client_gets_204_at_once() {
    let broken =
        fixed_peer(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec());
    let sh = priced_peer("sh", "5");
    let slow_sh = delayed_peer("slowsh", "6", Duration::from_millis(1500));
    let cfg = config(
        "",
        "",
        &[
            ("broken", broken.addr),
            ("sh", sh.addr),
            ("slowsh", slow_sh.addr),
        ],
        &[("/", 3000)],
    );
    let cfg = backend_keys(&cfg, "sh", "shadow = true");
    let s = SPLITTER.run(&backend_keys(&cfg, "slowsh", "shadow = true"));
    let mut client = s.client();
    for i in 0..2 {
        let (r, took) = timed(&mut client, &bid("/x", &format!("onlysh-{i}")));
        assert_no_bid(&r);
        assert!(
            took < Duration::from_millis(1000),
            "the only non-shadow backend answered: no waiting, took {took:?}"
        );
    }
    let m = s.wait_metrics(WAIT, |m| outcome(m, "sh", "valid") >= 2.0);
    assert_eq!(outcome(&m, "sh", "valid"), 2.0, "{}", m.text);
    assert_eq!(wins(&m, "sh"), 0.0, "{}", m.text);
}

// ---------------------------------------------------------------------------------------------
// Per-route backends.

#[test]
fn a_route_fans_out_only_to_its_backends() {
    let a = query_peer("a");
    let b = query_peer("b");
    let c = query_peer("c");
    let cfg = config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr), ("c", c.addr)],
        &[("/", 2000), ("/a-only", 2000), ("/ac", 2000)],
    );
    let cfg = route_keys(&cfg, "/a-only", "backends = [\"a\"]");
    let s = SPLITTER.run(&route_keys(&cfg, "/ac", "backends = [\"a\", \"c\"]"));
    let mut client = s.client();
    let prices = "?a=1&b=9&c=3";
    for i in 0..3 {
        let id = format!("only-{i}");
        let r = client.request(&bid(&format!("/a-only{prices}"), &id));
        r.assert_won(&id);
        assert_priced(&r, "a", "1", None);
        let id = format!("ac-{i}");
        let r = client.request(&bid(&format!("/ac/x{prices}"), &id));
        r.assert_won(&id);
        assert_priced(&r, "c", "3", Some("1"));
    }
    let r = client.request(&bid(&format!("/all{prices}"), "all-1"));
    r.assert_won("all-1");
    assert_priced(&r, "b", "9", Some("3"));

    let ids = |peer: &RawPeer| -> Vec<String> {
        received(peer, Duration::from_millis(500))
            .iter()
            .map(RawRequest::req_id)
            .collect()
    };
    assert_eq!(ids(&b), ["all-1"], "b is on neither /a-only nor /ac");
    assert_eq!(ids(&c), ["ac-0", "ac-1", "ac-2", "all-1"]);
    assert_eq!(ids(&a).len(), 7);
    let m = s.wait_metrics(WAIT, |m| outcome(m, "a", "valid") >= 7.0);
    assert_eq!(outcome(&m, "b", "valid"), 1.0, "{}", m.text);
    for o in ["invalid", "timeout", "error"] {
        assert_eq!(outcome(&m, "b", o), 0.0, "b {o}\n{}", m.text);
    }
}

// ---------------------------------------------------------------------------------------------
// Reload.

#[test]
fn sighup_applies_new_floors_shadows_and_route_backends() {
    let a = query_peer("a");
    let b = query_peer("b");
    let c = query_peer("c");
    let backends = [("a", a.addr), ("b", b.addr), ("c", c.addr)];
    let s = SPLITTER.run(&config("", "floor = 1", &backends, &[("/", 2000)]));
    let mut client = s.client();
    let target = "/x?a=5&b=9&c=6";
    assert_priced(&client.request(&bid(target, "before")), "b", "9", Some("6"));

    // b becomes a shadow, c leaves the route, the floor rises past what a bids on /low.
    let cfg = config("", "floor = 4", &backends, &[("/", 2000), ("/low", 2000)]);
    let cfg = backend_keys(&cfg, "b", "shadow = true");
    let cfg = route_keys(&cfg, "/", "backends = [\"a\", \"b\"]");
    let cfg = route_keys(&cfg, "/low", "floor = 6");
    s.rewrite_config(&cfg);
    let from = s.log_count();
    s.signal(libc::SIGHUP);
    assert!(
        s.wait_log(from, WAIT, |l| l.to_ascii_lowercase().contains("reload"))
            .is_some(),
        "no reload logged: {:?}",
        s.log_snapshot()
    );
    // The workers take it up soon after the log line: poll (bounded) until they have.
    let until = Instant::now() + WAIT;
    let r = loop {
        let r = client.request(&bid(target, "after"));
        if r.header("X-Splitter-Backend") != Some("b") || Instant::now() >= until {
            break r;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_priced(&r, "a", "5", None);
    // What c got before the workers took the reload up.
    received(&c, Duration::from_millis(300));
    let r = client.request(&bid(target, "after-2"));
    assert_priced(&r, "a", "5", None);
    assert_no_bid(&client.request(&bid("/x?a=3.5&b=9&c=9", "after-floor")));
    assert_no_bid(&client.request(&bid("/low?a=5", "after-low")));
    // /low has no `backends`: all of them, c included.
    let ids: Vec<String> = received(&c, Duration::from_millis(300))
        .iter()
        .map(RawRequest::req_id)
        .collect();
    assert_eq!(ids, ["after-low"], "c is no longer on the route /");
}

// ---------------------------------------------------------------------------------------------
// `splitter check`.

const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// `splitter check` on `text`: exit code, stdout and stderr together.
fn check(text: &str) -> (Option<i32>, String) {
    let dir = TempDir::new("bid-check");
    let path = dir.write("bid.toml", text);
    let (status, out, err) = SPLITTER.cli(&["check", "-c", path.to_str().unwrap()], CLI_TIMEOUT);
    (status.code(), format!("{out}\n{err}"))
}

#[track_caller]
fn check_accepts(text: &str) {
    let (code, all) = check(text);
    assert_eq!(code, Some(0), "{all}\n--- file:\n{text}");
}

/// Exit 1, and the message names the file and `key`.
#[track_caller]
fn check_rejects(text: &str, key: &str) {
    let (code, all) = check(text);
    assert_eq!(code, Some(1), "for {key}: {all}\n--- file:\n{text}");
    assert!(
        all.contains(key),
        "the error must name `{key}`: {all}\n--- file:\n{text}"
    );
    assert!(
        all.contains("bid.toml"),
        "the error must name the file: {all}"
    );
}

fn check_config(select: &str) -> String {
    config(
        "",
        select,
        &[
            ("a", "127.0.0.1:9".parse().unwrap()),
            ("b", "127.0.0.1:10".parse().unwrap()),
            ("c", "127.0.0.1:11".parse().unwrap()),
        ],
        &[("/fast", 80), ("/", 450)],
    )
}

#[test]
fn check_accepts_every_bidding_key() {
    let cfg = check_config("field = \"/seatbid/*/bid/*/price\"\nprefer = \"min\"\nfloor = 0.5");
    let cfg = backend_keys(
        &cfg,
        "a",
        "timeout_ms = 60\nhost = \"dsp.example\"\npath_prefix = \"/openrtb2\"",
    );
    let cfg = backend_keys(&cfg, "c", "shadow = true");
    let cfg = route_keys(&cfg, "/fast", "backends = [\"a\", \"c\"]\nfloor = 1.0");
    check_accepts(&cfg);
    // 32 segments, the most; escapes and `*` together.
    let field: String = "/a".repeat(32);
    check_accepts(&check_config(&format!("field = \"{field}\"")));
    check_accepts(&check_config("field = \"/a~0b/*/~1c/*\""));
    check_accepts(&check_config("field = \"/*\""));
}

#[test]
fn check_rejects_fields_it_cannot_evaluate() {
    let field: String = "/a".repeat(33);
    check_rejects(
        &check_config(&format!("field = \"{field}\"")),
        "select.field",
    );
    let field: String = "/*".repeat(33);
    check_rejects(
        &check_config(&format!("field = \"{field}\"")),
        "select.field",
    );
    check_rejects(
        &check_config("field = \"seatbid/*/bid/*/price\""),
        "select.field",
    );
    check_rejects(&check_config("field = \"*/price\""), "select.field");
    check_rejects(
        &check_config("field = \"/seatbid/~2/price\""),
        "select.field",
    );
    check_rejects(
        &check_config("field = \"/seatbid/*/price~\""),
        "select.field",
    );
    check_rejects(&check_config("field = \"/a~b\""), "select.field");
}

#[test]
fn check_rejects_unknown_route_backends_and_shadow_only_routes() {
    let good = check_config("");
    check_rejects(
        &route_keys(&good, "/", "backends = [\"a\", \"zz\"]"),
        "route[1].backends[1]",
    );
    check_rejects(
        &route_keys(&good, "/fast", "backends = [\"nope\"]"),
        "route[0].backends[0]",
    );
    // A route whose backends are all shadows has nobody whose answer it could return.
    let shadows = backend_keys(
        &backend_keys(&good, "b", "shadow = true"),
        "c",
        "shadow = true",
    );
    check_accepts(&route_keys(&shadows, "/fast", "backends = [\"a\", \"b\"]"));
    check_rejects(
        &route_keys(&shadows, "/fast", "backends = [\"b\", \"c\"]"),
        "route[0].backends",
    );
    check_rejects(
        &route_keys(&shadows, "/", "backends = [\"c\"]"),
        "route[1].backends",
    );
}

#[test]
fn check_rejects_bad_floors() {
    check_rejects(&check_config("floor = \"high\""), "select.floor");
    check_rejects(&check_config("floor = nan"), "select.floor");
    check_rejects(
        &route_keys(&check_config(""), "/", "floor = \"low\""),
        "route[1].floor",
    );
    check_rejects(
        &route_keys(&check_config(""), "/", "floor = inf"),
        "route[1].floor",
    );
}

#[test]
fn check_rejects_per_backend_keys_that_could_not_be_sent() {
    let good = check_config("");
    // A Host that would split the request head, or say nothing.
    check_rejects(
        &backend_keys(&good, "b", "host = \"dsp.example\\r\\nX-Evil: 1\""),
        "backend[1].host",
    );
    check_rejects(&backend_keys(&good, "a", "host = \"\""), "backend[0].host");
    // A prefix that would not make an origin-form target.
    check_rejects(
        &backend_keys(&good, "c", "path_prefix = \"openrtb2\""),
        "backend[2].path_prefix",
    );
    check_rejects(
        &backend_keys(&good, "a", "path_prefix = \"/a b\""),
        "backend[0].path_prefix",
    );
    check_rejects(
        &backend_keys(&good, "a", "timeout_ms = 0"),
        "backend[0].timeout_ms",
    );
    // Every backend a shadow, and a route without `backends`: it fans out to shadows only.
    let all_shadows = ["a", "b", "c"]
        .iter()
        .fold(good, |cfg, b| backend_keys(&cfg, b, "shadow = true"));
    check_rejects(&all_shadows, "route[0].backends");
}

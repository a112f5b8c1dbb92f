//! Client request heads (`http1::request::parse_request`), and a client connection's read loop
//! over pipelined requests with their bodies.
//!
//! The input is what a client sends. Asserted, beyond "no panic":
//! - Splits: a prefix of the input parses to "need more" or to the whole input's error, and once
//!   it holds the whole head, to the same head and forwarded bytes.
//! - Strictness: an accepted head has CRLF line ends only, no NUL, fits `max_header_bytes`, and
//!   its forwarded head is a clean origin-form HTTP/1.1 request line plus exactly the client's
//!   end-to-end fields (no framing, hop-by-hop, `Expect` or `Connection`-named field), one `Host`.
//! - The forwarded head, completed with a `Content-Length`, parses again to itself.
//! - Limits: a tighter limit changes an answer only into 431 or 413.
//! - The read loop (head, de-chunked body, next request) gives the same requests whatever reads
//!   the bytes arrive in.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitter_fuzz::{
    connection_options, crlf_lines, field_line, is_field_value, is_hop_by_hop, lines_are_strict,
    read_plans, split_points, Rng,
};
use splitter_user::http1::body::{BodyDecoder, BodyLimit, Framing};
use splitter_user::http1::encode::end_head;
use splitter_user::http1::limits::Limits;
use splitter_user::http1::request::{parse_request, Method, RequestError, RequestHead, Version};

/// Small limits, so that inputs of a few hundred bytes reach them.
const TIGHT: Limits = Limits {
    max_header_bytes: 256,
    max_body: 64,
};
/// The configuration's defaults.
const DEFAULT: Limits = Limits {
    max_header_bytes: 16384,
    max_body: 262_144,
};

fuzz_target!(|input: &[u8]| {
    let mut rng = Rng::new(input, 1);
    for limits in [TIGHT, DEFAULT] {
        check_splits(input, &limits, &mut rng);
    }
    check_tighter_limits(input);
    check_read_loop(input, &mut rng);
});

type Parsed = Result<Option<RequestHead>, RequestError>;

fn parse(buf: &[u8], limits: &Limits) -> (Parsed, Vec<u8>) {
    // Stale bytes first: the parser must clear the buffer it is lent.
    let mut forward = b"stale".to_vec();
    let parsed = parse_request(buf, limits, &mut forward);
    (parsed, forward)
}

fn check_splits(input: &[u8], limits: &Limits, rng: &mut Rng) {
    let (whole, forward) = parse(input, limits);
    let head_len = match &whole {
        Ok(Some(head)) => {
            check_accepted(input, limits, head, &forward);
            Some(head.head_len)
        }
        _ => None,
    };
    let around_end: Vec<usize> = head_len
        .map(|n| vec![n.saturating_sub(1), n, n + 1])
        .unwrap_or_default();
    for split in split_points(input.len(), rng, &around_end) {
        let (part, part_forward) = parse(&input[..split], limits);
        match (&whole, head_len) {
            (_, Some(end)) if split >= end => {
                assert_eq!(part, whole, "split at {split}");
                assert_eq!(part_forward, forward, "forwarded head, split at {split}");
            }
            (_, Some(_)) | (Ok(None), _) => assert_eq!(part, Ok(None), "split at {split}"),
            (Err(error), _) => assert!(
                part == Ok(None)
                    || part == Err(*error)
                    // Documented difference: a head still incomplete past the limit is 431 at
                    // once, even where more bytes would have shown a syntax error first.
                    || (part == Err(RequestError::HeadTooLarge) && split > limits.max_header_bytes),
                "split at {split}: {part:?}, whole: {whole:?}"
            ),
            (Ok(Some(_)), None) => unreachable!(),
        }
    }
}

/// What the strict rules require of an accepted head and of the head forwarded to backends.
fn check_accepted(input: &[u8], limits: &Limits, head: &RequestHead, forward: &[u8]) {
    let raw = &input[..head.head_len];
    assert!(
        head.head_len <= limits.max_header_bytes,
        "head over the limit"
    );
    assert!(raw.ends_with(b"\r\n\r\n"), "head does not end in CRLFCRLF");
    assert!(
        lines_are_strict(raw),
        "NUL, bare CR or bare LF in an accepted head"
    );
    match head.framing {
        Framing::Length(n) => assert!(n <= limits.max_body, "body over the limit"),
        Framing::Chunked => assert_eq!(head.version, Version::Http11, "chunked in HTTP/1.0"),
        Framing::UntilClose => panic!("a request framed until close"),
    }
    let path = head.path(input);
    assert!(head.path.end <= head.head_len);
    assert!(
        path.starts_with(b"/")
            && path
                .iter()
                .all(|&b| b.is_ascii_graphic() && b != b'?' && b != b'#'),
        "path {path:?}"
    );

    // The head as received, split by httparse directly (leading empty lines skipped).
    let mut headers = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut headers);
    let start = raw
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(0);
    assert!(matches!(
        request.parse(&raw[start..]),
        Ok(httparse::Status::Complete(_))
    ));
    let (method, target) = (request.method.unwrap(), request.path.unwrap());
    assert_eq!(head.method, method_of(method));
    // A CONNECT would open a tunnel: never accepted, whatever its target.
    assert_ne!(method, "CONNECT");
    assert_eq!(head.version == Version::Http10, request.version == Some(0));
    let authority = absolute_form_authority(target);

    // The forwarded request line: `METHOD SP origin-form SP HTTP/1.1`.
    let lines = crlf_lines(forward).expect("forwarded head is not CRLF lines");
    let mut words = lines[0].split(|&b| b == b' ');
    let (fmethod, ftarget, fversion) = (words.next(), words.next(), words.next());
    assert!(words.next().is_none(), "request line {:?}", lines[0]);
    assert_eq!(fmethod, Some(method.as_bytes()));
    assert_eq!(fversion, Some(&b"HTTP/1.1"[..]));
    let ftarget = ftarget.unwrap();
    assert!(
        ftarget.starts_with(b"/"),
        "forwarded target not in origin-form"
    );
    assert!(ftarget.iter().all(|&b| b.is_ascii_graphic() && b != b'#'));
    assert!(ftarget.starts_with(path) && matches!(ftarget.get(path.len()), None | Some(b'?')));

    // The fields: exactly the client's end-to-end ones, in order, then Host if there was none.
    let options = connection_options(request.headers);
    let mut expected: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut hosts = 0;
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        let is_host = name.eq_ignore_ascii_case(b"host");
        if is_host {
            hosts += 1;
            // An absolute-form target's authority replaces the client's Host value (RFC 9112
            // §3.2.2), under the client's spelling of the name.
            match authority {
                Some(authority) => expected.push((name.to_vec(), authority.to_vec())),
                None => expected.push((name.to_vec(), h.value.to_vec())),
            }
        } else if !is_hop_by_hop(name)
            && !name.eq_ignore_ascii_case(b"content-length")
            && !name.eq_ignore_ascii_case(b"expect")
            && !options.contains(&name.to_ascii_lowercase())
        {
            expected.push((name.to_vec(), h.value.to_vec()));
        }
    }
    if hosts == 0 {
        expected.push((b"Host".to_vec(), authority.unwrap_or(b"").to_vec()));
    }
    assert!(hosts <= 1, "more than one Host accepted");
    let fields: Vec<(Vec<u8>, Vec<u8>)> = lines[1..]
        .iter()
        .map(|line| {
            let (name, value) = field_line(line).expect("malformed forwarded field line");
            assert!(is_field_value(value), "forwarded value {value:?}");
            (name.to_vec(), value.to_vec())
        })
        .collect();
    assert_eq!(fields, expected, "forwarded fields");

    // What a backend gets parses again to itself: the forwarded head is a fixed point.
    let length = match head.framing {
        Framing::Length(n) => n,
        _ => 3,
    };
    let mut again = forward.to_vec();
    end_head(&mut again, length);
    let roomy = Limits {
        max_header_bytes: again.len(),
        max_body: length,
    };
    let (reparsed, reforward) = parse(&again, &roomy);
    let reparsed = reparsed
        .expect("forwarded head refused")
        .expect("forwarded head incomplete");
    assert_eq!(reforward, forward, "forwarded head not a fixed point");
    assert_eq!(reparsed.head_len, again.len());
    assert_eq!(reparsed.method, head.method);
    assert_eq!(reparsed.version, Version::Http11);
    assert_eq!(reparsed.framing, Framing::Length(length));
    assert_eq!(reparsed.path(&again), path);
    assert!(reparsed.keep_alive && !reparsed.expect_continue);
}

fn method_of(token: &str) -> Method {
    match token {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    }
}

/// The authority of an absolute-form target (`http://host:port/...`), if it is one.
fn absolute_form_authority(target: &str) -> Option<&[u8]> {
    if target.starts_with('/') {
        return None;
    }
    let rest = &target[target.find("://")? + 3..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    Some(&rest.as_bytes()[..end])
}

/// Tighter limits turn an answer into 431 or 413, never into anything else.
fn check_tighter_limits(input: &[u8]) {
    let (roomy, _) = parse(input, &DEFAULT);
    let (tight, _) = parse(input, &TIGHT);
    let allowed = match roomy.clone() {
        Ok(Some(head)) if head.head_len > TIGHT.max_header_bytes => Err(RequestError::HeadTooLarge),
        Ok(Some(head)) if matches!(head.framing, Framing::Length(n) if n > TIGHT.max_body) => {
            Err(RequestError::BodyTooLarge)
        }
        other => other,
    };
    assert!(
        tight == allowed || tight == Err(RequestError::HeadTooLarge),
        "tight: {tight:?}, default: {roomy:?}"
    );
}

/// One outcome of the read loop. Errors carry no detail: which error a given cut meets first is
/// checked above for heads and by the `chunked` target for bodies.
#[derive(Debug, PartialEq)]
enum Event {
    Request {
        forward: Vec<u8>,
        payload: Vec<u8>,
        keep_alive: bool,
        path: Vec<u8>,
    },
    Error,
    /// The input ended inside a head or a body.
    Incomplete,
}

/// The client connection's loop (`worker::client_conn`: parse the head on what is buffered, read
/// the body into place behind it, drop both, go on with what is left), fed `input` in reads that
/// end at `cuts`. At most 8 requests.
fn read_loop(input: &[u8], cuts: &[usize]) -> Vec<Event> {
    let mut reads = cuts.iter().copied().chain([input.len()]);
    let mut fed = 0;
    let mut buf: Vec<u8> = Vec::new();
    let mut more = |buf: &mut Vec<u8>| match reads.next() {
        Some(cut) => {
            buf.extend_from_slice(&input[fed..cut]);
            fed = cut;
            true
        }
        None => false,
    };
    let mut events = Vec::new();
    let mut forward = Vec::new();
    while events.len() < 8 {
        let head = loop {
            match parse_request(&buf, &TIGHT, &mut forward) {
                Ok(Some(head)) => break head,
                Ok(None) if more(&mut buf) => {}
                Ok(None) if buf.is_empty() => return events,
                Ok(None) => {
                    events.push(Event::Incomplete);
                    return events;
                }
                Err(_) => {
                    events.push(Event::Error);
                    return events;
                }
            }
        };
        let Ok(mut body) = BodyDecoder::new(head.framing, BodyLimit::decoded(TIGHT.max_body))
        else {
            events.push(Event::Error);
            return events;
        };
        let mut body_end = head.head_len;
        loop {
            match body.decode_in_place(&mut buf, &mut body_end) {
                Ok(true) => break,
                Ok(false) if more(&mut buf) => {}
                Ok(false) => {
                    events.push(Event::Incomplete);
                    return events;
                }
                Err(_) => {
                    events.push(Event::Error);
                    return events;
                }
            }
        }
        events.push(Event::Request {
            forward: forward.clone(),
            payload: buf[head.head_len..body_end].to_vec(),
            keep_alive: head.keep_alive,
            path: head.path(&buf).to_vec(),
        });
        buf.drain(..body_end);
        if !head.keep_alive {
            break;
        }
    }
    events
}

fn check_read_loop(input: &[u8], rng: &mut Rng) {
    let whole = read_loop(input, &[]);
    for (i, plan) in read_plans(input.len(), rng).iter().enumerate() {
        // Byte by byte parses the buffer again at every byte, quadratic: short inputs only.
        if i == 0 && input.len() > 256 {
            continue;
        }
        assert_eq!(read_loop(input, plan), whole, "reads ending at {plan:?}");
    }
    // The loop never forwards a byte that was not sent: a sanity bound on its own bookkeeping.
    for event in &whole {
        if let Event::Request { payload, .. } = event {
            assert!(payload.len() <= input.len());
        }
    }
}

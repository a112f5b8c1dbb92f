//! Backend response heads (`http1::response::parse_response`, `head_may_end`) and the response
//! written to the client from one (`http1::encode::client_response`).
//!
//! The input is what a backend sends. Asserted, beyond "no panic":
//! - Splits: a prefix parses to "need more" or to the whole input's error, and once it holds the
//!   whole head (interim `1xx` heads included), to the same head.
//! - The backend reader's loop, which parses only when `head_may_end` says a blank line may have
//!   arrived, finds that head in whatever reads it comes: `head_may_end` never hides a head end.
//! - Strictness: an accepted head has CRLF line ends only, no NUL, a final status 200..=599, fits
//!   `MAX_RESPONSE_HEAD`, and its passed fields hold no framing, hop-by-hop, `Connection`-named
//!   or `X-Splitter-*` field.
//! - `client_response` of it parses again to the same status and passed fields, framed by one
//!   `Content-Length`, with the splitter's own `X-Splitter-Backend` and `Connection` only.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitter_fuzz::{
    connection_options, crlf_lines, field_line, is_field_value, is_hop_by_hop, is_token,
    lines_are_strict, read_plans, split_points, Rng,
};
use splitter_user::http1::body::Framing;
use splitter_user::http1::encode::{client_response, Chosen, ConnectionHeader};
use splitter_user::http1::limits::{MAX_HEADERS, MAX_RESPONSE_HEAD};
use splitter_user::http1::response::{
    head_may_end, parse_response, PassedFields, ResponseError, ResponseHead,
};

fuzz_target!(|input: &[u8]| {
    let mut rng = Rng::new(input, 3);
    let whole = parse_response(input);
    let head_len = match &whole {
        Ok(Some(head)) => {
            check_accepted(input, head);
            check_client_response(input, head, &mut rng);
            Some(head.head_len)
        }
        _ => None,
    };
    let around_end: Vec<usize> = head_len
        .map(|n| vec![n.saturating_sub(1), n, n + 1])
        .unwrap_or_default();
    for split in split_points(input.len(), &mut rng, &around_end) {
        let part = parse_response(&input[..split]);
        match (&whole, head_len) {
            (_, Some(end)) if split >= end => assert_eq!(part, whole, "split at {split}"),
            (_, Some(_)) => {
                assert_eq!(part, Ok(None), "split at {split}");
                // A reader that scanned up to here and then got the rest must parse again.
                assert!(
                    head_may_end(input, split),
                    "head end hidden, scanned {split}"
                );
            }
            (Ok(None), _) => assert_eq!(part, Ok(None), "split at {split}"),
            (Err(error), _) => assert!(
                part == Ok(None)
                    || part == Err(*error)
                    // Documented difference: a head still incomplete past the limit is refused
                    // at once, even where more bytes would have shown another error first.
                    || (part == Err(ResponseError::HeadTooLarge) && split > MAX_RESPONSE_HEAD),
                "split at {split}: {part:?}, whole: {whole:?}"
            ),
            (Ok(Some(_)), None) => unreachable!(),
        }
    }
    for plan in read_plans(input.len(), &mut rng) {
        let read = reader(input, &plan);
        match (&whole, &read) {
            (Ok(Some(head)), _) => {
                // Found in the first read that completes it, not later.
                let read_end = plan
                    .iter()
                    .copied()
                    .chain([input.len()])
                    .find(|&end| end >= head.head_len)
                    .unwrap();
                assert_eq!(
                    read,
                    Read::Head(Box::new(*head), read_end),
                    "reads ending at {plan:?}"
                );
            }
            (Ok(None), _) => assert_eq!(read, Read::More, "reads ending at {plan:?}"),
            // The reader may wait for a blank line that never comes, or hit the size first.
            (Err(_), Read::More | Read::Failed(ResponseError::HeadTooLarge)) => {}
            (Err(error), _) => assert_eq!(read, Read::Failed(*error), "reads ending at {plan:?}"),
        }
    }
});

#[derive(Debug, PartialEq)]
enum Read {
    /// The head (boxed: it is large), found once the buffer held this many bytes.
    Head(Box<ResponseHead>, usize),
    Failed(ResponseError),
    More,
}

/// The backend reader's head loop (`worker::backend_pool::exchange`), fed reads ending at `cuts`.
fn reader(input: &[u8], cuts: &[usize]) -> Read {
    let mut raw = Vec::new();
    let mut scanned = 0;
    let mut reads = cuts.iter().copied().chain([input.len()]);
    loop {
        if head_may_end(&raw, scanned) {
            match parse_response(&raw) {
                Ok(Some(head)) => return Read::Head(Box::new(head), raw.len()),
                Ok(None) => {}
                Err(error) => return Read::Failed(error),
            }
        }
        if raw.len() > MAX_RESPONSE_HEAD {
            return Read::Failed(ResponseError::HeadTooLarge);
        }
        scanned = raw.len();
        let Some(cut) = reads.next() else {
            return Read::More;
        };
        raw.extend_from_slice(&input[scanned..cut]);
    }
}

fn check_accepted(input: &[u8], head: &ResponseHead) {
    let raw = &input[..head.head_len];
    assert!(head.head_len <= MAX_RESPONSE_HEAD, "head over the limit");
    assert!(raw.ends_with(b"\r\n\r\n"), "head does not end in CRLFCRLF");
    assert!(
        lines_are_strict(raw),
        "NUL, bare CR or bare LF in an accepted head"
    );
    assert!(
        (200..=599).contains(&head.status),
        "final status {}",
        head.status
    );
    match head.framing {
        // Sizes over `max_response_bytes` are the body decoder's to refuse; none is past isize.
        Framing::Length(n) => assert!(n <= isize::MAX as usize),
        Framing::UntilClose => assert!(!head.keep_alive, "kept alive until close"),
        Framing::Chunked => {}
    }
    if head.status == 204 || head.status == 304 {
        assert_eq!(head.framing, Framing::Length(0));
    }

    // The final head as received, split by httparse directly: the interim heads before it are
    // the complete heads with a 1xx status.
    let mut start = 0;
    let final_head = loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(len)) = response.parse(&raw[start..]) else {
            panic!("accepted head that httparse does not split at {start}");
        };
        if response.code.unwrap() >= 200 {
            assert_eq!(start + len, head.head_len);
            assert_eq!(response.code, Some(head.status));
            if head.framing == Framing::Chunked {
                assert_eq!(response.version, Some(1), "chunked in HTTP/1.0");
            }
            let options = connection_options(response.headers);
            let expected: Vec<(Vec<u8>, Vec<u8>)> = response
                .headers
                .iter()
                .filter(|h| passes(h.name.as_bytes(), &options))
                .map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec()))
                .collect();
            break expected;
        }
        start += len;
    };
    assert_eq!(passed(head, input), final_head, "passed fields");
}

/// Whether a backend's field reaches the client: not hop-by-hop, not named by the response's
/// `Connection`, not `Content-Length`, not one of the splitter's own `X-Splitter-*`.
fn passes(name: &[u8], options: &[Vec<u8>]) -> bool {
    !is_hop_by_hop(name)
        && !name.eq_ignore_ascii_case(b"content-length")
        && !name
            .get(..11)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(b"x-splitter-"))
        && !options.contains(&name.to_ascii_lowercase())
}

fn passed(head: &ResponseHead, raw: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    PassedFields::of_head(&raw[..head.head_len])
        .iter(raw)
        .map(|(name, value)| (name.to_vec(), value.to_vec()))
        .collect()
}

fn check_client_response(input: &[u8], head: &ResponseHead, rng: &mut Rng) {
    // `client_response` is for the 200s selection picks; a 204 or 304 cannot carry the
    // Content-Length it writes. Every other final status is checked too.
    if head.status == 204 || head.status == 304 {
        return;
    }
    let conn = [
        ConnectionHeader::None,
        ConnectionHeader::KeepAlive,
        ConnectionHeader::Close,
    ][rng.below(3)];
    let body = &input[head.head_len..];
    let mut out = b"left alone".to_vec();
    let chosen = Chosen {
        backend: "b-1.x_y",
        value: 2.5,
        second: Some(-1.0),
    };
    client_response(&mut out, input, head, body, &chosen, conn);
    assert!(out.starts_with(b"left alone"));
    let out = &out[10..];

    let fields = passed(head, input);
    // Documented limits of the re-parse below, not of the writer: our parser's caps.
    if fields.len() + 3 > MAX_HEADERS || out.len() - body.len() > MAX_RESPONSE_HEAD {
        return;
    }
    let again = parse_response(out)
        .unwrap_or_else(|e| panic!("client response refused: {e:?}"))
        .expect("client response incomplete");
    assert_eq!(again.status, head.status);
    assert_eq!(again.head_len, out.len() - body.len());
    assert_eq!(&out[again.head_len..], body);
    assert_eq!(again.framing, Framing::Length(body.len()));
    assert_eq!(again.keep_alive, conn != ConnectionHeader::Close);
    let mut expected = fields.clone();
    if conn == ConnectionHeader::Close {
        // `Connection: close` makes a field named `Close` hop-by-hop on the way back; RFC 9110
        // §7.6.1 reserves that name for this reason, so a backend has no business sending it.
        expected.retain(|(name, _)| !name.eq_ignore_ascii_case(b"close"));
    }
    assert_eq!(
        passed(&again, out),
        expected,
        "passed fields after the splitter"
    );

    // Line by line: the backend's passed fields, then exactly the splitter's own.
    let lines = crlf_lines(&out[..again.head_len]).expect("client head not CRLF lines");
    assert!(lines[0].starts_with(format!("HTTP/1.1 {} ", head.status).as_bytes()));
    assert_eq!(lines.last(), Some(&&b""[..]));
    let mut own = Vec::new();
    for (i, line) in lines[1..lines.len() - 1].iter().enumerate() {
        let (name, value) = field_line(line).expect("malformed field line");
        assert!(is_token(name) && is_field_value(value), "{line:?}");
        if i < fields.len() {
            assert_eq!((name, value), (&fields[i].0[..], &fields[i].1[..]));
        } else {
            own.push((String::from_utf8_lossy(name).into_owned(), value.to_vec()));
        }
    }
    let mut expected_own = vec![
        ("X-Splitter-Backend".to_owned(), b"b-1.x_y".to_vec()),
        ("X-Splitter-Value".to_owned(), b"2.5".to_vec()),
        ("X-Splitter-Second".to_owned(), b"-1".to_vec()),
    ];
    match conn {
        ConnectionHeader::None => {}
        ConnectionHeader::KeepAlive => {
            expected_own.push(("Connection".to_owned(), b"keep-alive".to_vec()))
        }
        ConnectionHeader::Close => expected_own.push(("Connection".to_owned(), b"close".to_vec())),
    }
    expected_own.push((
        "Content-Length".to_owned(),
        body.len().to_string().into_bytes(),
    ));
    assert_eq!(own, expected_own, "the splitter's own fields");
}

//! What the splitter writes to clients, and which header fields stop at this hop.
//!
//! Every response leaves with a `Content-Length` (or none, for `204`), never chunked: the splitter
//! holds whole bodies anyway. Writers append to the caller's buffer and format numbers by hand; no
//! I/O, no allocation beyond the caller's `Vec` growing.

use super::response::{PassedFields, ResponseHead};

/// Whether a field is hop-by-hop by name (RFC 9110 §7.6.1, plus the `Proxy-*` fields of
/// RFC 9110 §11.7 and the legacy `Keep-Alive` and `Proxy-Connection`), case-insensitive.
///
/// Fields named by the message's own `Connection` options are hop-by-hop too; that needs the whole
/// head, so the writers here and in [`super::request`] check it separately.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP_BY_HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-connection",
        b"proxy-authorization",
        b"proxy-authenticate",
    ];
    HOP_BY_HOP.iter().any(|hop| hop.eq_ignore_ascii_case(name))
}

/// The `Connection` field the splitter adds to a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionHeader {
    /// None: the default of HTTP/1.1 (persistent) applies.
    None,
    /// `Connection: keep-alive`, for an HTTP/1.0 client that asked for it (`ab -k` waits for it).
    KeepAlive,
    /// `Connection: close`, when the splitter closes after this response.
    Close,
}

/// `100 Continue`, sent to a client that announced `Expect: 100-continue` before it sends the body.
pub fn continue_100() -> &'static [u8] {
    b"HTTP/1.1 100 Continue\r\n\r\n"
}

/// What the splitter says about the response it chose.
#[derive(Debug, Clone, Copy)]
pub struct Chosen<'a> {
    /// The winner's name: `X-Splitter-Backend`.
    pub backend: &'a str,
    /// Its number: `X-Splitter-Value`.
    pub value: f64,
    /// The runner-up's number, if another valid reply came in time: `X-Splitter-Second`.
    pub second: Option<f64>,
}

/// Writes the winning backend response for the client into `out`.
///
/// `HTTP/1.1 <status> <reason>`, the fields the backend's head passes on (see
/// [`PassedFields`](super::response::PassedFields)), `X-Splitter-Backend`, `X-Splitter-Value`
/// and, when there is one, `X-Splitter-Second` (from `chosen`), the `Connection` field from
/// `conn`, `Content-Length: <body.len()>`, the blank line and `body` (de-chunked, still in its
/// `Content-Encoding`). `raw_head` holds the bytes `head` was parsed from. Numbers are written
/// in their shortest form that reads back the same (`2.5`, `3`, `0.1`).
///
/// Meant for the `200` responses selection picks: a `204` or `304` head would get a
/// `Content-Length` it must not carry.
pub fn client_response(
    out: &mut Vec<u8>,
    raw_head: &[u8],
    head: &ResponseHead,
    body: &[u8],
    chosen: &Chosen<'_>,
    conn: ConnectionHeader,
) {
    out.reserve(raw_head.len() + chosen.backend.len() + body.len() + 128);
    status_line(out, head.status);
    for (name, value) in PassedFields::of_head(raw_head).iter(raw_head) {
        field_line(out, name, value);
    }
    field_line(out, b"X-Splitter-Backend", chosen.backend.as_bytes());
    number_line(out, b"X-Splitter-Value", chosen.value);
    if let Some(second) = chosen.second {
        number_line(out, b"X-Splitter-Second", second);
    }
    connection_line(out, conn);
    end_head(out, body.len());
    out.extend_from_slice(body);
}

/// Writes a response of the splitter's own, without content, into `out`.
///
/// `204` carries no `Content-Length` (RFC 9110 §8.6); any other status (400, 404, 408, 413, 431,
/// 503...) carries `Content-Length: 0` so the client knows the body is empty on a persistent
/// connection. Then the `Connection` field from `conn` and the blank line.
pub fn status_response(out: &mut Vec<u8>, status: u16, conn: ConnectionHeader) {
    status_line(out, status);
    connection_line(out, conn);
    if status == 204 {
        out.extend_from_slice(b"\r\n");
    } else {
        end_head(out, 0);
    }
}

/// Ends a head: `Content-Length: <content_length>`, then the blank line.
///
/// Completes the head [`super::request::parse_request`] prepares for backends, once the body (and
/// so its length) is known.
pub fn end_head(out: &mut Vec<u8>, content_length: usize) {
    out.extend_from_slice(b"Content-Length: ");
    write_decimal(out, content_length);
    out.extend_from_slice(b"\r\n\r\n");
}

/// The reason phrase the splitter writes for `status`; empty for codes it has no name for (the
/// phrase is optional, RFC 9112 §4).
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        203 => "Non-Authoritative Information",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// `HTTP/1.1 <status> <reason>\r\n`; the space before an empty reason is required (RFC 9112 §4).
fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    write_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `<name>: <value>\r\n`.
pub(super) fn field_line(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// `<name>: <number>\r\n`, the number in Rust's shortest round-trip form.
fn number_line(out: &mut Vec<u8>, name: &[u8], value: f64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    write_shortest(out, value);
    out.extend_from_slice(b"\r\n");
}

/// `value` as `Display` writes it (`2.5`, `3`, `0.0001`, `100000000000000000000`): the
/// shortest digits that read back the same, never an exponent.
///
/// The digits come from `zmij`, at a fraction of the cost of Rust's own formatter, which finds
/// the same ones but for exact ties in the last of 17 digits (`zmij` takes the even one, as
/// `printf` does, Rust the one above); their placement is `Display`'s (`zmij` writes `3.0`,
/// `1e20` and `0.0001`).
fn write_shortest(out: &mut Vec<u8>, value: f64) {
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format(value).as_bytes();
    let (mantissa, exponent) = match text.iter().position(|&b| b == b'e') {
        Some(e) => (&text[..e], &text[e + 1..]),
        None => (text, &b""[..]),
    };
    let (sign, mantissa) = match mantissa.split_first() {
        Some((b'-', rest)) => (&b"-"[..], rest),
        _ => (&b""[..], mantissa),
    };
    out.extend_from_slice(sign);
    if exponent.is_empty() {
        // Positional already (or `NaN`, `inf`): only a `.0` to drop.
        out.extend_from_slice(mantissa.strip_suffix(b".0").unwrap_or(mantissa));
        return;
    }
    // `d[.ddd]e<x>`: the digits, with the point after `1 + x` of them.
    let digits = mantissa.iter().copied().filter(|&b| b != b'.');
    let exponent = std::str::from_utf8(exponent)
        .ok()
        .and_then(|x| x.parse::<isize>().ok())
        .unwrap_or(0);
    let point = 1 + exponent;
    if point <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', point.unsigned_abs()));
        out.extend(digits);
        return;
    }
    let point = point.unsigned_abs();
    let mut count = 0;
    for digit in digits {
        if count == point {
            out.push(b'.');
        }
        out.push(digit);
        count += 1;
    }
    out.extend(std::iter::repeat_n(b'0', point.saturating_sub(count)));
}

/// The `Connection` field line for `conn`, if any.
fn connection_line(out: &mut Vec<u8>, conn: ConnectionHeader) {
    match conn {
        ConnectionHeader::None => {}
        ConnectionHeader::KeepAlive => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        ConnectionHeader::Close => out.extend_from_slice(b"Connection: close\r\n"),
    }
}

/// Decimal digits of `n`, without going through `core::fmt`.
fn write_decimal(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http1::response::parse_response;

    fn client(backend_head: &[u8], body: &[u8], conn: ConnectionHeader) -> String {
        let head = parse_response(backend_head).unwrap().unwrap();
        let mut out = Vec::new();
        let chosen = Chosen {
            backend: "b1",
            value: 2.5,
            second: None,
        };
        client_response(&mut out, backend_head, &head, body, &chosen, conn);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        let shortest = |v: f64| {
            let mut out = Vec::new();
            write_shortest(&mut out, v);
            String::from_utf8(out).unwrap()
        };
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            2.5,
            3.0,
            0.1,
            1e-4,
            1.5e-7,
            1e15,
            1e16,
            1e20,
            1.2345678901234567e16,
            123456789012345680.0,
            5e-324,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            0.3,
            100.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        // Every binary exponent, and random bit patterns.
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..200_000 {
            values.push(f64::from_bits(rng.u64(..)));
        }
        for e in -1074..=1023 {
            values.push(2f64.powi(e));
            values.push(1.1 * 2f64.powi(e));
        }
        let mut ties = 0;
        for v in values {
            let (ours, display) = (shortest(v), format!("{v}"));
            if ours == display {
                continue;
            }
            // A tie: as short, reads back the same, the last digit one below Display's.
            ties += 1;
            assert_eq!(ours.len(), display.len(), "{v:e}: {ours} {display}");
            assert_eq!(ours.parse::<f64>().unwrap(), v, "{v:e}: {ours}");
            let (o, d) = (ours.as_bytes(), display.as_bytes());
            assert_eq!(
                o[..o.len() - 1],
                d[..d.len() - 1],
                "{v:e}: {ours} {display}"
            );
            assert_eq!(
                o[o.len() - 1] + 1,
                d[d.len() - 1],
                "{v:e}: {ours} {display}"
            );
        }
        assert!(ties < 100, "{ties} ties");
    }

    #[test]
    fn hop_by_hop_names_are_recognised_in_any_case() {
        for name in [
            "Connection",
            "keep-alive",
            "TRANSFER-ENCODING",
            "te",
            "Trailer",
            "upgrade",
            "Proxy-Connection",
            "proxy-authorization",
            "Proxy-Authenticate",
        ] {
            assert!(is_hop_by_hop(name.as_bytes()), "{name}");
        }
        for name in [
            "Content-Length",
            "Host",
            "Trailers",
            "TEE",
            "Upgrade-Insecure-Requests",
            "",
        ] {
            assert!(!is_hop_by_hop(name.as_bytes()), "{name}");
        }
    }

    #[test]
    fn client_response_reframes_the_backend_response() {
        let head = b"HTTP/1.1 200 Whatever\r\nContent-Type: application/json\r\nContent-Length: 11\r\nX-Req: 7\r\n\r\n";
        assert_eq!(
            client(head, b"{\"price\":1}", ConnectionHeader::None),
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Req: 7\r\n\
             X-Splitter-Backend: b1\r\nX-Splitter-Value: 2.5\r\nContent-Length: 11\r\n\r\n{\"price\":1}"
        );
    }

    #[test]
    fn client_response_drops_hop_by_hop_and_forged_fields() {
        let head = b"HTTP/1.1 200 OK\r\n\
            Connection: keep-alive, X-Internal\r\n\
            Keep-Alive: timeout=5\r\n\
            Transfer-Encoding: chunked\r\n\
            Trailer: X-Sum\r\n\
            Upgrade: h2c\r\n\
            Proxy-Authenticate: Basic\r\n\
            X-Internal: secret\r\n\
            x-splitter-backend: forged\r\n\
            Cache-Control: no-store\r\n\r\n";
        assert_eq!(
            client(head, b"{}", ConnectionHeader::Close),
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nX-Splitter-Backend: b1\r\nX-Splitter-Value: 2.5\r\n\
             Connection: close\r\nContent-Length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn client_response_skips_interim_responses() {
        let head =
            b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\nHTTP/1.0 200 OK\r\nX-Final: 1\r\n\r\n";
        assert_eq!(
            client(head, b"", ConnectionHeader::KeepAlive),
            "HTTP/1.1 200 OK\r\nX-Final: 1\r\nX-Splitter-Backend: b1\r\nX-Splitter-Value: 2.5\r\n\
             Connection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn status_responses_have_no_content() {
        let cases: &[(u16, ConnectionHeader, &str)] = &[
            (204, ConnectionHeader::None, "HTTP/1.1 204 No Content\r\n\r\n"),
            (204, ConnectionHeader::KeepAlive, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"),
            (400, ConnectionHeader::Close, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            (404, ConnectionHeader::None, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            (408, ConnectionHeader::Close, "HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            (413, ConnectionHeader::Close, "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            (431, ConnectionHeader::Close, "HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"),
            (503, ConnectionHeader::KeepAlive, "HTTP/1.1 503 Service Unavailable\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
            (299, ConnectionHeader::None, "HTTP/1.1 299 \r\nContent-Length: 0\r\n\r\n"),
        ];
        for &(status, conn, expected) in cases {
            let mut out = b"prev|".to_vec();
            status_response(&mut out, status, conn);
            assert_eq!(String::from_utf8(out).unwrap(), format!("prev|{expected}"));
        }
    }

    #[test]
    fn continue_100_is_a_complete_interim_response() {
        assert_eq!(continue_100(), b"HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn end_head_writes_the_length_in_decimal() {
        for (length, expected) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (262144, "262144"),
            (usize::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            end_head(&mut out, length);
            assert_eq!(
                out,
                format!("Content-Length: {expected}\r\n\r\n").as_bytes()
            );
        }
    }

    #[test]
    fn forwarded_request_is_complete_after_end_head() {
        let mut forward = Vec::new();
        let limits = crate::http1::limits::Limits {
            max_header_bytes: 1024,
            max_body: 1024,
        };
        let request = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        crate::http1::request::parse_request(request, &limits, &mut forward)
            .unwrap()
            .unwrap();
        end_head(&mut forward, 5);
        forward.extend_from_slice(b"hello");
        assert_eq!(
            forward,
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn reasons_cover_what_the_splitter_sends() {
        for status in [100, 200, 204, 400, 404, 408, 413, 431, 503] {
            assert!(!reason(status).is_empty(), "{status}");
        }
        assert_eq!(reason(299), "");
    }
}

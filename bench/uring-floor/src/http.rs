//! HTTP/1.1 framing (httparse) and the price lookup (simd-json), as little as the floor needs.

use std::io::Write as _;

use simd_json::prelude::ValueAsScalar as _;

/// Bytes the peer sent that the floor will not handle; the connection is closed.
#[derive(Debug)]
pub struct Bad;

/// Largest head plus body accepted, either way.
pub const MAX_MESSAGE: usize = 1 << 20;

/// If `buf` starts with a whole request, writes the backends' request for it into `out` and
/// returns the request's length; `None` while it is incomplete.
pub fn backend_request(buf: &[u8], host: &str, out: &mut Vec<u8>) -> Result<Option<usize>, Bad> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let head = match req.parse(buf).map_err(|_| Bad)? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let (mut length, mut id) = (0, &b""[..]);
    for header in req.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = content_length(header.value)?;
        } else if header.name.eq_ignore_ascii_case("x-req-id") {
            id = header.value;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Bad);
        }
    }
    let end = head + length;
    if buf.len() < end {
        return Ok(None);
    }
    out.clear();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(req.path.unwrap_or("/").as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\nContent-Type: application/json\r\nX-Req-Id: ");
    out.extend_from_slice(id);
    let _ = write!(out, "\r\nContent-Length: {length}\r\n\r\n");
    out.extend_from_slice(&buf[head..end]);
    Ok(Some(end))
}

/// A whole response at the start of `buf`: its status, where its body starts and where it ends.
pub struct Response {
    pub status: u16,
    pub body: usize,
    pub end: usize,
}

pub fn response(buf: &[u8]) -> Result<Option<Response>, Bad> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf).map_err(|_| Bad)? {
        httparse::Status::Complete(head) => head,
        httparse::Status::Partial => return Ok(None),
    };
    let mut length = 0;
    for header in resp.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            length = content_length(header.value)?;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(Bad);
        }
    }
    let end = head + length;
    Ok((buf.len() >= end).then(|| Response {
        status: resp.code.unwrap_or(0),
        body: head,
        end,
    }))
}

/// The client's reply: the winning body, in `out`.
pub fn reply(body: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

fn content_length(value: &[u8]) -> Result<usize, Bad> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n <= MAX_MESSAGE)
        .ok_or(Bad)
}

/// simd-json's reusable buffers, one set per worker, used as the splitter uses them: the body
/// is copied with padding (simd-json parses in place and reads past the end), parsed into a
/// tape, and the tape is walked; no allocation once the buffers have grown.
#[derive(Default)]
pub struct Json {
    input: Vec<u8>,
    buffers: simd_json::Buffers,
    /// Always empty between calls, hence `'static`.
    tape: Vec<simd_json::Node<'static>>,
}

impl Json {
    /// The top-level number `price` of `body`, if it is JSON and has one.
    pub fn price(&mut self, body: &[u8]) -> Option<f64> {
        self.input.clear();
        self.input.extend_from_slice(body);
        self.input.resize(body.len() + simd_json::INPUT_PADDING, 0);
        let mut tape = simd_json::Tape(std::mem::take(&mut self.tape)).reset();
        let price =
            simd_json::fill_tape_padded(&mut self.input, body.len(), &mut self.buffers, &mut tape)
                .ok()
                .and_then(|()| tape.as_value().as_object()?.get("price")?.cast_f64());
        self.tape = tape.reset().0;
        price
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] =
        b"POST /bid HTTP/1.1\r\nHost: x\r\nX-Req-Id: 7\r\nContent-Length: 8\r\n\r\n{\"a\":12}";

    #[test]
    fn a_request_is_forwarded_only_once_whole_and_its_length_is_what_it_took() {
        let mut out = Vec::new();
        for cut in 0..REQUEST.len() {
            assert!(matches!(
                backend_request(&REQUEST[..cut], "b:1", &mut out),
                Ok(None)
            ));
        }
        let mut pipelined = REQUEST.to_vec();
        pipelined.extend_from_slice(b"POST /next");
        let taken = backend_request(&pipelined, "b:1", &mut out).unwrap();
        assert_eq!(taken, Some(REQUEST.len()));
        assert_eq!(
            out,
            b"POST /bid HTTP/1.1\r\nHost: b:1\r\nContent-Type: application/json\r\n\
              X-Req-Id: 7\r\nContent-Length: 8\r\n\r\n{\"a\":12}"
        );
    }

    #[test]
    fn chunked_or_oversized_or_garbled_requests_are_refused() {
        let mut out = Vec::new();
        for bad in [
            &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"\x00\x01 nonsense\r\n\r\n",
        ] {
            assert!(backend_request(bad, "b", &mut out).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_response_is_framed_by_its_length_and_its_price_read() {
        let wire =
            b"HTTP/1.1 200 OK\r\nContent-Length: 27\r\n\r\n{\"backend\":\"a\",\"price\":2.5}rest";
        let r = response(wire).unwrap().unwrap();
        assert_eq!(
            (r.status, &wire[r.body..r.end]),
            (200, &b"{\"backend\":\"a\",\"price\":2.5}"[..])
        );
        assert!(response(&wire[..wire.len() - 6]).unwrap().is_none());
        let mut json = Json::default();
        assert_eq!(json.price(&wire[r.body..r.end]), Some(2.5));
        assert_eq!(json.price(b"{\"price\":\"2.5\"}"), None);
        assert_eq!(json.price(b"not json"), None);
        assert_eq!(json.price(b"{\"price\":7}"), Some(7.0));
    }

    #[test]
    fn the_reply_carries_the_winning_body() {
        let mut out = Vec::new();
        reply(b"{}", &mut out);
        assert_eq!(
            out,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
    }
}

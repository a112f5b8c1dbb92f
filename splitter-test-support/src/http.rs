//! HTTP/1.1 as the tests write and read it: raw request and response bytes, the messages parsed
//! back, and the one chunked-body decoder of the tests and benchmarks. Deliberately lenient: the
//! splitter's strictness is what the tests check, not this parser's.

/// `POST path HTTP/1.1` with Host, X-Req-Id, a JSON content type and a Content-Length body.
pub fn post(path: &str, req_id: &str, body: &str) -> Vec<u8> {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nX-Req-Id: {req_id}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A small bid-like JSON body.
pub fn bid_body(req_id: &str) -> String {
    format!(r#"{{"id":"{req_id}","imp":[{{"id":"1","bidfloor":0.5}}]}}"#)
}

/// [`post`] with a bid body.
pub fn bid(path: &str, req_id: &str) -> Vec<u8> {
    post(path, req_id, &bid_body(req_id))
}

/// A 200 JSON response with `extra` header lines (each ending in CRLF) and a Content-Length.
pub fn http_json(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body a priced peer answers with: the mock backend's shape.
pub fn priced_body(name: &str, req_id: &str, price: &str) -> String {
    format!(r#"{{"backend":"{name}","req_id":"{req_id}","price":{price}}}"#)
}

/// A response as a client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// De-chunked when it came chunked.
    pub body: Vec<u8>,
    /// The head as received, status line to the blank line.
    pub head: Vec<u8>,
}

impl Response {
    /// Reads one response from `buf`, calling `fill` for more bytes (`Ok(false)` at the end of
    /// the stream); what follows it stays in `buf`.
    pub(crate) fn read(
        buf: &mut Vec<u8>,
        fill: impl FnMut(&mut Vec<u8>) -> Fill,
    ) -> Result<Response, String> {
        let mut status = 0;
        let (head, body) = read_message(buf, fill, |head| {
            status = head.start[1]
                .parse()
                .map_err(|_| format!("bad status line {:?}", head.start.join(" ")))?;
            Ok(
                if (100..200).contains(&status) || status == 204 || status == 304 {
                    Framing::Length(0)
                } else if head
                    .header("Transfer-Encoding")
                    .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
                {
                    Framing::Chunked
                } else if let Some(cl) = head.header("Content-Length") {
                    let len = cl
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad Content-Length {cl:?}"))?;
                    Framing::Length(len)
                } else {
                    Framing::UntilClose
                },
            )
        })?;
        let [version, ..] = head.start;
        Ok(Response {
            version,
            status,
            headers: head.headers,
            body,
            head: head.raw,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `"key":"value"` string field of a flat JSON body (the mock's `backend`, `req_id`).
    pub fn json_str(&self, key: &str) -> Option<String> {
        let body = self.body_str();
        let pat = format!("\"{key}\"");
        let at = body.find(&pat)? + pat.len();
        let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        let end = rest.find('"')?;
        Some(rest[..end].to_string())
    }

    pub fn backend(&self) -> Option<&str> {
        self.header("X-Splitter-Backend")
    }

    /// The response is a 200 from the splitter carrying the winner's body for `req_id`.
    pub fn assert_won(&self, req_id: &str) {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        assert_eq!(
            self.json_str("req_id").as_deref(),
            Some(req_id),
            "body must carry its own request's id: {self:?}"
        );
        assert!(self.backend().is_some(), "200 without X-Splitter-Backend");
        self.assert_length_matches();
    }

    pub fn assert_no_content(&self) {
        assert_eq!(self.status, 204, "expected 204, got {self:?}");
        assert!(self.body.is_empty(), "204 with a body: {self:?}");
        assert!(
            self.backend().is_none(),
            "204 must not carry X-Splitter-Backend: {self:?}"
        );
        if let Some(cl) = self.header("Content-Length") {
            assert_eq!(cl.trim(), "0", "204 with a non-zero Content-Length");
        }
    }

    pub fn assert_length_matches(&self) {
        let cl = self
            .header("Content-Length")
            .unwrap_or_else(|| panic!("no Content-Length: {self:?}"));
        assert_eq!(
            cl.trim().parse::<usize>().ok(),
            Some(self.body.len()),
            "Content-Length vs body"
        );
        assert!(
            self.header("Transfer-Encoding").is_none(),
            "Transfer-Encoding to the client: {self:?}"
        );
    }
}

/// A request as a raw peer received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    /// De-chunked when it came chunked.
    pub body: Vec<u8>,
    /// The head bytes as received.
    pub head: Vec<u8>,
}

impl RawRequest {
    /// Reads one request from `buf` as [`Response::read`] reads a response.
    pub(crate) fn read(
        buf: &mut Vec<u8>,
        fill: impl FnMut(&mut Vec<u8>) -> Fill,
    ) -> Result<RawRequest, String> {
        let (head, body) = read_message(buf, fill, |head| {
            Ok(if head.header("Transfer-Encoding").is_some() {
                Framing::Chunked
            } else {
                let len = head
                    .header("Content-Length")
                    .and_then(|v| v.trim().parse().ok());
                Framing::Length(len.unwrap_or(0))
            })
        })?;
        let [method, target, version] = head.start;
        Ok(RawRequest {
            method,
            target,
            version,
            headers: head.headers,
            body,
            head: head.raw,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    /// Its `X-Req-Id`, empty when it has none.
    pub fn req_id(&self) -> String {
        self.header("X-Req-Id").unwrap_or("").to_string()
    }
}

/// Every value of header `name` (case-insensitive), in order.
fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// What a source of bytes did when asked for more: `Ok(true)` it appended some, `Ok(false)` the
/// stream ended, `Err` it failed or timed out.
pub(crate) type Fill = Result<bool, String>;

/// How a message's body ends.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// A message head.
struct Head {
    /// The start line's three parts (request: method, target, version; response: version,
    /// status, reason), empty where missing.
    start: [String; 3],
    headers: Vec<(String, String)>,
    /// The bytes as received, start line to the blank line.
    raw: Vec<u8>,
}

impl Head {
    fn parse(raw: &[u8]) -> Head {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let mut parts = lines
            .next()
            .unwrap_or("")
            .splitn(3, ' ')
            .map(str::to_string);
        let start = [(); 3].map(|_| parts.next().unwrap_or_default());
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Head {
            start,
            headers,
            raw: raw.to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }
}

/// Reads one message from the start of `buf`, calling `fill` until it is whole; `framing` says
/// from the head how its body ends. The message's bytes are removed from `buf`.
fn read_message(
    buf: &mut Vec<u8>,
    mut fill: impl FnMut(&mut Vec<u8>) -> Fill,
    framing: impl FnOnce(&Head) -> Result<Framing, String>,
) -> Result<(Head, Vec<u8>), String> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if !fill(buf)? {
            return Err(format!(
                "closed before a whole head; got {:?}",
                String::from_utf8_lossy(buf)
            ));
        }
    };
    let head = Head::parse(&buf[..head_end]);
    let (body, end) = match framing(&head)? {
        Framing::Length(len) => {
            while buf.len() < head_end + len {
                if !fill(buf)? {
                    return Err(format!(
                        "closed after {} of {len} body bytes",
                        buf.len() - head_end
                    ));
                }
            }
            (buf[head_end..head_end + len].to_vec(), head_end + len)
        }
        Framing::Chunked => loop {
            if let Some((body, used)) = dechunk(&buf[head_end..])? {
                break (body, head_end + used);
            }
            if !fill(buf)? {
                return Err("closed inside a chunked body".into());
            }
        },
        Framing::UntilClose => {
            while fill(buf)? {}
            (buf[head_end..].to_vec(), buf.len())
        }
    };
    buf.drain(..end);
    Ok((head, body))
}

/// Decodes a chunked body at the start of `buf`: `Ok(None)` while incomplete, else the body and
/// how many bytes it took (trailers included, and dropped).
fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let line_end = |from: usize| buf[from..].windows(2).position(|w| w == b"\r\n");
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = line_end(pos) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|e| e.to_string())?;
        // Extensions (`;name=value`) carry nothing a test reads.
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|e| format!("chunk size {line:?}: {e}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailer lines up to an empty one.
            loop {
                let Some(eol) = line_end(pos) else {
                    return Ok(None);
                };
                pos += eol + 2;
                if eol == 0 {
                    return Ok(Some((body, pos)));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk data not followed by CRLF".into());
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A source that hands out `input` a few bytes at a time, then ends.
    fn trickle(input: &[u8], step: usize) -> impl FnMut(&mut Vec<u8>) -> Fill + '_ {
        let mut at = 0;
        move |buf| {
            let n = step.min(input.len() - at);
            buf.extend_from_slice(&input[at..at + n]);
            at += n;
            Ok(n > 0)
        }
    }

    #[test]
    fn dechunk_whole_partial_extensions_and_trailers() {
        let whole = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: t\r\n\r\nNEXT";
        assert_eq!(
            dechunk(whole).unwrap(),
            Some((b"hello world".to_vec(), whole.len() - 4))
        );
        for cut in 0..whole.len() - 4 {
            assert_eq!(dechunk(&whole[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(
            dechunk(b"A\r\n0123456789\r\n0\r\n\r\n").unwrap(),
            Some((b"0123456789".to_vec(), 20))
        );
        assert!(dechunk(b"zz\r\n").is_err());
        assert!(dechunk(b"2\r\nabX\r\n").is_err());
    }

    #[test]
    fn responses_by_each_framing_byte_by_byte() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\n\
                      HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: 1\r\nx-a: 2\r\n\r\nok\
                      HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n\
                      HTTP/1.1 204 No Content\r\n\r\n\
                      HTTP/1.0 200 OK\r\n\r\nuntil the end";
        let mut buf = Vec::new();
        let mut fill = trickle(input, 1);
        let mut next = || Response::read(&mut buf, &mut fill).unwrap();
        let r = next();
        assert_eq!((r.status, r.body.len()), (100, 0));
        assert_eq!(r.head, b"HTTP/1.1 100 Continue\r\n\r\n");
        let r = next();
        assert_eq!(
            (r.version.as_str(), r.status, r.body_str().as_str()),
            ("HTTP/1.1", 200, "ok")
        );
        assert_eq!(r.header_all("X-A"), ["1", "2"]);
        assert_eq!(next().body, b"ab");
        assert_eq!(next().status, 204);
        let r = next();
        assert_eq!(
            (r.version.as_str(), r.body_str().as_str()),
            ("HTTP/1.0", "until the end")
        );
        let err = Response::read(&mut buf, &mut fill).unwrap_err();
        assert!(err.starts_with("closed before a whole head"), "{err}");
    }

    #[test]
    fn a_truncated_response_says_how_far_it_got() {
        let mut buf = Vec::new();
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
        let err = Response::read(&mut buf, trickle(input, 7)).unwrap_err();
        assert_eq!(err, "closed after 3 of 10 body bytes");
        let mut buf = b"HTTP/1.1 OK\r\n\r\n".to_vec();
        assert!(Response::read(&mut buf, trickle(b"", 1)).is_err());
    }

    #[test]
    fn requests_chunked_or_by_length_and_what_follows_stays() {
        let input = b"POST /a?b HTTP/1.1\r\nX-Req-Id: r1\r\nTransfer-Encoding: chunked\r\n\r\n\
                      3\r\nabc\r\n0\r\n\r\n\
                      GET / HTTP/1.1\r\nHost: h\r\n\r\n\
                      PUT /x HTTP/1.1\r\ncontent-length: 3\r\n\r\nxyzREST";
        let mut buf = input.to_vec();
        let mut ended = trickle(b"", 1);
        let r = RawRequest::read(&mut buf, &mut ended).unwrap();
        assert_eq!(
            (r.method.as_str(), r.target.as_str(), r.version.as_str()),
            ("POST", "/a?b", "HTTP/1.1")
        );
        assert_eq!(
            (r.req_id().as_str(), r.body.as_slice()),
            ("r1", &b"abc"[..])
        );
        let r = RawRequest::read(&mut buf, &mut ended).unwrap();
        assert_eq!(
            (r.method.as_str(), r.body.len(), r.req_id().as_str()),
            ("GET", 0, "")
        );
        assert_eq!(r.head, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(RawRequest::read(&mut buf, &mut ended).unwrap().body, b"xyz");
        assert_eq!(buf, b"REST");
    }

    #[test]
    fn json_string_fields() {
        let r = Response {
            version: "HTTP/1.1".into(),
            status: 200,
            headers: vec![],
            body: br#"{"backend" : "a","req_id":"r-1","price":2}"#.to_vec(),
            head: vec![],
        };
        assert_eq!(r.json_str("backend").as_deref(), Some("a"));
        assert_eq!(r.json_str("req_id").as_deref(), Some("r-1"));
        assert_eq!(r.json_str("price"), None);
        assert_eq!(r.json_str("missing"), None);
    }
}

//! The soak's load: a closed loop over keep-alive connections, one thread each (a few dozen:
//! blocking sockets are the simplest faithful client, and the threads sleep in `read` almost
//! all the time). Each request carries a unique `X-Req-Id`; each 200 must carry it back, in
//! its body (the mock backends echo it as `"req_id"`) and, when present, in its `X-Req-Id`
//! header. Outcomes and latencies are counted per second of the run, by the second the request
//! ended in.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most headers a response may have.
const MAX_HEADERS: usize = 32;
/// Largest response head read.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body read (a backend's body, within the splitter's `max_response_bytes`).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Pause after a failed connect, so a refusing splitter is not hammered.
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// What the load does.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub connections: usize,
    /// A response slower than this is late (the route's deadline plus the allowed slack).
    pub late_after: Duration,
    /// A request not answered within this is given up (a timeout error) and its connection
    /// closed.
    pub give_up_after: Duration,
    /// Least time from one request of a connection to its next: when every backend is down
    /// and 204s come back at once, the load stays what it was rather than racing ahead (an
    /// exchange's traffic does not grow when its bidders fail).
    pub pace: Duration,
    /// Unique to the run, so an id can only match its own request.
    pub id_prefix: String,
    /// The connections' threads' nice value, if it can be set: the side that measures should
    /// read a response as soon as it arrives, not when the machine has a moment.
    pub nice: Option<i32>,
}

/// Client-side errors, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Errors {
    /// The connection could not be opened.
    pub connect: u64,
    /// Write or read failed, or the connection closed before a whole response.
    pub io: u64,
    /// No whole response within the give-up time.
    pub timeout: u64,
    /// A response that is not valid HTTP/1.1 or not framed by `Content-Length`.
    pub bad_http: u64,
    /// A status other than 200 and 204.
    pub status: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.timeout + self.bad_http + self.status
    }

    pub fn add(&mut self, o: &Errors) {
        self.connect += o.connect;
        self.io += o.io;
        self.timeout += o.timeout;
        self.bad_http += o.bad_http;
        self.status += o.status;
    }
}

/// What happened in one second of the run.
#[derive(Clone, Debug, Default)]
pub struct Second {
    /// Requests sent whose fate is known: a response, an error or a timeout.
    pub requests: u64,
    pub ok: u64,
    pub no_content: u64,
    pub errors: Errors,
    /// 200s without their own request's id.
    pub mismatches: u64,
    /// Responses (any status) later than `late_after`, and requests given up.
    pub late: u64,
    /// Of every response, in microseconds.
    pub latencies_us: Vec<u32>,
}

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok { id_matches: bool },
    NoContent,
    Status,
    Connect,
    Io,
    Timeout,
    BadHttp,
}

impl Second {
    fn count(&mut self, outcome: Outcome, latency: Option<Duration>, late_after: Duration) {
        if outcome != Outcome::Connect {
            self.requests += 1;
        }
        match outcome {
            Outcome::Ok { id_matches } => {
                self.ok += 1;
                self.mismatches += u64::from(!id_matches);
            }
            Outcome::NoContent => self.no_content += 1,
            Outcome::Status => self.errors.status += 1,
            Outcome::Connect => self.errors.connect += 1,
            Outcome::Io => self.errors.io += 1,
            Outcome::Timeout => {
                self.errors.timeout += 1;
                self.late += 1;
            }
            Outcome::BadHttp => self.errors.bad_http += 1,
        }
        if let Some(l) = latency {
            self.latencies_us
                .push(u32::try_from(l.as_micros()).unwrap_or(u32::MAX));
            self.late += u64::from(l > late_after);
        }
    }
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub requests: u64,
    pub mismatches: u64,
    pub errors: u64,
    pub late: u64,
}

/// The running load.
pub struct Load {
    threads: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    seconds: Arc<Mutex<Vec<Second>>>,
    started: Instant,
}

impl Load {
    /// Opens the connections and starts sending.
    pub fn start(spec: LoadSpec) -> anyhow::Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let seconds = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let body = Arc::new(request_body());
        let threads = (0..spec.connections)
            .map(|conn| {
                let client = Client {
                    spec: spec.clone(),
                    conn,
                    body: body.clone(),
                    stop: stop.clone(),
                    seconds: seconds.clone(),
                    started,
                };
                std::thread::Builder::new()
                    .name(format!("soak-load-{conn}"))
                    .spawn(move || client.run())
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Load {
            threads,
            stop,
            seconds,
            started,
        })
    }

    /// When the load started: second `n` of the counts is `[started + n, started + n + 1)`.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Totals so far, for progress lines.
    pub fn totals(&self) -> Totals {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        seconds.iter().fold(Totals::default(), |t, s| Totals {
            requests: t.requests + s.requests,
            mismatches: t.mismatches + s.mismatches,
            errors: t.errors + s.errors.total(),
            late: t.late + s.late,
        })
    }

    /// Stops sending, waits for every connection's thread (at most the give-up time), and
    /// returns the counts, one entry per second of the run.
    pub fn stop(self) -> Vec<Second> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *seconds)
    }
}

/// The 2 KB JSON bid request of `bench/post-2k.lua`.
fn request_body() -> Vec<u8> {
    format!(
        r#"{{"id":"soak","imp":[{{"id":"1","bidfloor":0.5}}],"pad":"{}"}}"#,
        "x".repeat(1960)
    )
    .into_bytes()
}

/// One connection's loop.
struct Client {
    spec: LoadSpec,
    conn: usize,
    body: Arc<Vec<u8>>,
    stop: Arc<AtomicBool>,
    seconds: Arc<Mutex<Vec<Second>>>,
    started: Instant,
}

impl Client {
    fn run(self) {
        if let Some(n) = self.spec.nice {
            // Without the privilege, the thread keeps the priority it inherited.
            let _ = crate::bench::proc::set_own_nice(n);
        }
        let mut seq = 0u64;
        let mut buf = Vec::with_capacity(8192);
        let mut request = Vec::with_capacity(self.body.len() + 256);
        let mut next_send = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(mut stream) = self.connect() else {
                std::thread::sleep(RECONNECT_PAUSE);
                continue;
            };
            buf.clear();
            while !self.stop.load(Ordering::Relaxed) {
                seq += 1;
                let id = format!("{}{}-{seq}", self.spec.id_prefix, self.conn);
                self.format_request(&mut request, &id);
                if let Some(wait) = next_send.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let sent = Instant::now();
                next_send = sent + self.spec.pace;
                let (outcome, latency, keep) = match stream.write_all(&request) {
                    Err(_) => (Outcome::Io, None, false),
                    Ok(()) => match read_response(&mut stream, &mut buf) {
                        Ok(r) => (r.outcome(&id), Some(sent.elapsed()), r.keep_alive),
                        Err(ReadError::Timeout) => (Outcome::Timeout, None, false),
                        Err(ReadError::Io) => (Outcome::Io, None, false),
                        Err(ReadError::BadHttp) => (Outcome::BadHttp, None, false),
                    },
                };
                self.count(outcome, latency);
                if !keep {
                    break;
                }
            }
        }
    }

    fn connect(&self) -> Option<TcpStream> {
        let stream = match TcpStream::connect_timeout(&self.spec.addr, self.spec.give_up_after) {
            Ok(s) => s,
            Err(_) => {
                self.count(Outcome::Connect, None);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        if stream
            .set_read_timeout(Some(self.spec.give_up_after))
            .is_err()
        {
            self.count(Outcome::Connect, None);
            return None;
        }
        Some(stream)
    }

    fn format_request(&self, out: &mut Vec<u8>, id: &str) {
        out.clear();
        let _ = write!(
            out,
            "POST /bid HTTP/1.1\r\nHost: soak\r\nContent-Type: application/json\r\n\
             X-Req-Id: {id}\r\nContent-Length: {}\r\n\r\n",
            self.body.len()
        );
        out.extend_from_slice(&self.body);
    }

    fn count(&self, outcome: Outcome, latency: Option<Duration>) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        if seconds.len() <= second {
            seconds.resize_with(second + 1, Second::default);
        }
        seconds[second].count(outcome, latency, self.spec.late_after);
    }
}

/// A whole response as far as the check needs it.
#[derive(Debug)]
struct Response {
    status: u16,
    /// The `X-Req-Id` header, if any.
    req_id: Option<Vec<u8>>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl Response {
    fn outcome(&self, id: &str) -> Outcome {
        match self.status {
            200 => Outcome::Ok {
                id_matches: carries_id(&self.body, self.req_id.as_deref(), id),
            },
            204 => Outcome::NoContent,
            _ => Outcome::Status,
        }
    }
}

/// Whether a 200 answers request `id`: its body has `"req_id":"ID"` (the closing quote keeps
/// `a-1` from matching `a-12`), and its `X-Req-Id` header, if any, is `id`.
fn carries_id(body: &[u8], header: Option<&[u8]>, id: &str) -> bool {
    let needle = format!("\"req_id\":\"{id}\"");
    let in_body = body.windows(needle.len()).any(|w| w == needle.as_bytes());
    in_body && header.is_none_or(|h| h == id.as_bytes())
}

#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    Timeout,
    Io,
    BadHttp,
}

/// Reads one response from `stream`; `buf` holds what was read past it (nothing, with a
/// client that waits for each response before sending the next request).
fn read_response<R: Read>(stream: &mut R, buf: &mut Vec<u8>) -> Result<Response, ReadError> {
    loop {
        if let Some(r) = parse_response(buf)? {
            return Ok(r);
        }
        if buf.len() > MAX_HEAD + MAX_BODY {
            return Err(ReadError::BadHttp);
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk) {
            Ok(0) => return Err(ReadError::Io),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(ReadError::Timeout)
            }
            Err(_) => return Err(ReadError::Io),
        }
    }
}

/// Takes one whole response off the front of `buf`, if it is there.
fn parse_response(buf: &mut Vec<u8>) -> Result<Option<Response>, ReadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut headers);
    let head_len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        _ => return Err(ReadError::BadHttp),
    };
    let status = r.code.ok_or(ReadError::BadHttp)?;
    let mut length = None;
    let mut req_id = None;
    let mut keep_alive = r.version == Some(1);
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ReadError::BadHttp)?;
            let n: usize = v.trim().parse().map_err(|_| ReadError::BadHttp)?;
            if length.is_some_and(|l| l != n) || n > MAX_BODY {
                return Err(ReadError::BadHttp);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The splitter frames every response with Content-Length.
            return Err(ReadError::BadHttp);
        } else if h.name.eq_ignore_ascii_case("x-req-id") {
            req_id = Some(h.value.to_vec());
        } else if h.name.eq_ignore_ascii_case("connection") {
            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if v.split(',').any(|t| t.trim() == "close") {
                keep_alive = false;
            }
        }
    }
    let length = match (status, length) {
        (204 | 304, _) | (100..=199, _) => 0,
        (_, Some(n)) => n,
        (_, None) => return Err(ReadError::BadHttp),
    };
    if buf.len() < head_len + length {
        return Ok(None);
    }
    let body = buf[head_len..head_len + length].to_vec();
    buf.drain(..head_len + length);
    if (100..=199).contains(&status) {
        return parse_response(buf);
    }
    Ok(Some(Response {
        status,
        req_id,
        body,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_exactly_in_body_and_header() {
        let body = br#"{"backend":"a","req_id":"s1-12","price":2}"#;
        assert!(carries_id(body, None, "s1-12"));
        assert!(carries_id(body, Some(b"s1-12"), "s1-12"));
        assert!(!carries_id(body, None, "s1-1"), "a prefix is not the id");
        assert!(!carries_id(body, Some(b"s1-13"), "s1-12"));
        assert!(!carries_id(b"{}", Some(b"s1-12"), "s1-12"));
    }

    #[test]
    fn responses_are_framed_by_content_length_and_may_arrive_in_pieces() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Req-Id: q\r\n\r\nhello\
                     HTTP/1.1 204 No Content\r\n\r\n";
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for &b in wire.iter() {
            buf.push(b);
            if let Some(r) = parse_response(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].status, &got[0].body[..]), (200, &b"hello"[..]));
        assert_eq!(got[0].req_id.as_deref(), Some(&b"q"[..]));
        assert_eq!((got[1].status, got[1].body.len()), (204, 0));
        assert!(got[1].keep_alive && buf.is_empty());
    }

    #[test]
    fn unframed_or_chunked_200s_and_close_are_seen() {
        let mut unframed = b"HTTP/1.1 200 OK\r\n\r\nabc".to_vec();
        assert_eq!(
            parse_response(&mut unframed).unwrap_err(),
            ReadError::BadHttp
        );
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        assert_eq!(
            parse_response(&mut chunked).unwrap_err(),
            ReadError::BadHttp
        );
        let mut close =
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec();
        let r = parse_response(&mut close).unwrap().unwrap();
        assert_eq!(r.status, 503);
        assert!(!r.keep_alive);
        assert_eq!(r.outcome("x"), Outcome::Status);
        let mut garbage = b"SSH-2.0-x\r\n\r\n".to_vec();
        assert!(parse_response(&mut garbage).is_err());
    }

    #[test]
    fn read_response_sees_eof_and_timeouts() {
        let mut eof: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort";
        assert_eq!(
            read_response(&mut eof, &mut Vec::new()).unwrap_err(),
            ReadError::Io
        );
        struct Slow;
        impl Read for Slow {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(ErrorKind::WouldBlock.into())
            }
        }
        assert_eq!(
            read_response(&mut Slow, &mut Vec::new()).unwrap_err(),
            ReadError::Timeout
        );
    }

    #[test]
    fn seconds_count_outcomes_late_answers_and_timeouts() {
        let late = Duration::from_millis(120);
        let mut s = Second::default();
        s.count(
            Outcome::Ok { id_matches: true },
            Some(Duration::from_millis(20)),
            late,
        );
        s.count(
            Outcome::Ok { id_matches: false },
            Some(Duration::from_millis(121)),
            late,
        );
        s.count(Outcome::NoContent, Some(Duration::from_millis(100)), late);
        s.count(Outcome::Timeout, None, late);
        s.count(Outcome::Connect, None, late);
        assert_eq!((s.requests, s.ok, s.no_content, s.mismatches), (4, 2, 1, 1));
        assert_eq!(s.late, 2, "one late answer, one given up");
        assert_eq!(s.errors.total(), 2);
        assert_eq!(s.latencies_us, [20_000, 121_000, 100_000]);
    }
}

//! Black-box harness: starts the real `splitter` binary and `splitter mock-backend` processes,
//! speaks raw HTTP/1.1 bytes to them over loopback TCP, and offers tiny raw TCP peers for
//! backends whose exact input or misbehaviour a test needs to control.
//!
//! Every process started here is killed by PID when its guard drops; every wait is bounded.
//! Nothing here knows the splitter's internals: only its command line, its config file, its
//! log line `splitter started listen=... admin=...`, and the wire.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_splitter");

/// How long a process may take to report it is ready (debug build, busy shared machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Default socket read/write timeout for test clients.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process killed (by PID) and reaped on drop.
pub struct ProcGuard {
    pub child: Child,
    /// Set once the test has reaped the child itself.
    reaped: bool,
}

impl ProcGuard {
    pub fn new(child: Child) -> ProcGuard {
        ProcGuard {
            child,
            reaped: false,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends `sig` to process `pid`.
pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a PID we spawned ourselves and still own (not yet reaped).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// A `splitter mock-backend` process.
pub struct Mock {
    pub addr: SocketAddr,
    pub name: String,
    _proc: ProcGuard,
}

impl Mock {
    /// Starts `splitter mock-backend --listen 127.0.0.1:0 --name NAME ARGS...` and waits for its
    /// `listening on ADDR` line.
    pub fn start(name: &str, args: &[&str]) -> Mock {
        let mut child = Command::new(BIN)
            .args(["mock-backend", "--listen", "127.0.0.1:0", "--name", name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mock-backend");
        let stdout = child.stdout.take().expect("mock stdout");
        let guard = ProcGuard::new(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            // Keep draining so the pipe never fills.
            while let Some(Ok(line)) = lines.next() {
                if !sent {
                    if let Some(rest) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(rest.trim().to_string());
                        sent = true;
                    }
                }
            }
        });
        let addr = rx.recv_timeout(READY_TIMEOUT).unwrap_or_else(|_| {
            panic!("mock-backend {name} {args:?} never printed `listening on`")
        });
        let addr: SocketAddr = addr
            .parse()
            .unwrap_or_else(|e| panic!("mock-backend address {addr:?}: {e}"));
        Mock {
            addr,
            name: name.to_string(),
            _proc: guard,
        }
    }
}

/// An address nothing listens on (bound once, then released): connecting is refused.
pub fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A unique scratch directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "splitter-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Builds a config file: `listen` and `admin_listen` on 127.0.0.1:0, the `top` lines (top-level
/// keys), the `select` lines (inside `[select]`, omitted when empty), then backends and routes.
pub fn config(
    top: &str,
    select: &str,
    backends: &[(&str, SocketAddr)],
    routes: &[(&str, u64)],
) -> String {
    let mut s = String::from("listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n");
    s.push_str(top);
    s.push('\n');
    if !select.is_empty() {
        s.push_str("[select]\n");
        s.push_str(select);
        s.push('\n');
    }
    for (name, addr) in backends {
        s.push_str(&format!(
            "[[backend]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    for (prefix, ms) in routes {
        s.push_str(&format!(
            "[[route]]\npath_prefix = \"{prefix}\"\ntimeout_ms = {ms}\n"
        ));
    }
    s
}

/// Removes ANSI escape sequences (tracing's text format colours field names on a terminal).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Value of `key=value` in a tracing text log line.
pub fn log_field(line: &str, key: &str) -> Option<String> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|tok| tok.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"').to_string())
}

/// A running `splitter run -c FILE`.
pub struct Splitter {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: TempDir,
    pub config_path: PathBuf,
    /// Every stderr line so far (ANSI stripped).
    pub logs: Arc<Mutex<Vec<String>>>,
    pub proc: ProcGuard,
}

/// The whole suite runs once per I/O shell: `SPLITTER_TEST_IO=epoll` (or `uring`) puts
/// `io = "..."` at the top of every configuration that does not choose one itself.
pub fn with_io_shell(config: &str) -> String {
    match std::env::var("SPLITTER_TEST_IO") {
        Ok(io) if !config.lines().any(|l| l.trim_start().starts_with("io =")) => {
            format!("io = \"{io}\"\n{config}")
        }
        _ => config.to_string(),
    }
}

impl Splitter {
    /// Writes `config` to a file and starts the splitter on it; waits for `splitter started`.
    pub fn start(config: &str) -> Splitter {
        let dir = TempDir::new("run");
        let config = with_io_shell(config);
        let config = config.as_str();
        let config_path = dir.write("splitter.toml", config);
        let mut child = Command::new(BIN)
            .arg("run")
            .arg("-c")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn splitter run");
        let stderr = child.stderr.take().expect("splitter stderr");
        let proc = ProcGuard::new(child);
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            thread::spawn(move || {
                let mut reader = BufReader::new(stderr);
                let mut sent = false;
                let mut raw = Vec::new();
                loop {
                    raw.clear();
                    match reader.read_until(b'\n', &mut raw) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    let line = strip_ansi(String::from_utf8_lossy(&raw).trim_end());
                    // Kept before readiness is signalled, so a test sees the start-up line in
                    // its first snapshot.
                    logs.lock().unwrap().push(line.clone());
                    if !sent && line.contains("splitter started") {
                        let listen = log_field(&line, "listen");
                        let admin = log_field(&line, "admin");
                        let _ = tx.send((listen, admin));
                        sent = true;
                    }
                }
            });
        }
        let (listen, admin) = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(v) => v,
            Err(_) => {
                let logs = logs.lock().unwrap().join("\n");
                panic!(
                    "splitter never logged `splitter started`; config:\n{config}\nstderr:\n{logs}"
                )
            }
        };
        let addr: SocketAddr = listen
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no listen= in the start line: {listen:?}"));
        let admin: SocketAddr = admin
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no admin= in the start line: {admin:?}"));
        Splitter {
            addr,
            admin,
            dir,
            config_path,
            logs,
            proc,
        }
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Sends one request on a fresh connection and reads its response.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut c = self.client();
        c.send(raw);
        c.read_response()
    }

    /// GET on the admin listener.
    pub fn admin_get(&self, path: &str) -> Response {
        let mut c = Client::connect(self.admin);
        c.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\n\r\n").as_bytes());
        c.read_response()
    }

    pub fn metrics(&self) -> Metrics {
        let r = self.admin_get("/metrics");
        assert_eq!(r.status, 200, "GET /metrics");
        Metrics::parse(&r.body_str())
    }

    /// Polls `/metrics` until `pred` holds (bounded); returns the last scrape.
    pub fn wait_metrics(&self, timeout: Duration, pred: impl Fn(&Metrics) -> bool) -> Metrics {
        let until = Instant::now() + timeout;
        loop {
            let m = self.metrics();
            if pred(&m) || Instant::now() >= until {
                return m;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn signal(&self, sig: i32) {
        send_signal(self.pid(), sig);
    }

    pub fn rewrite_config(&self, config: &str) {
        let tmp = self.dir.path.join("splitter.toml.new");
        std::fs::write(&tmp, with_io_shell(config)).unwrap();
        std::fs::rename(&tmp, &self.config_path).unwrap();
    }

    pub fn log_snapshot(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    pub fn log_count(&self) -> usize {
        self.logs.lock().unwrap().len()
    }

    /// Waits until a log line at index `from` or later satisfies `pred`; returns it.
    pub fn wait_log(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            {
                let logs = self.logs.lock().unwrap();
                if let Some(l) = logs.iter().skip(from).find(|l| pred(l)) {
                    return Some(l.clone());
                }
            }
            if Instant::now() >= until {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Client side: raw requests and a response parser
// ---------------------------------------------------------------------------------------------

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

/// `post` with a bid body.
pub fn bid(path: &str, req_id: &str) -> Vec<u8> {
    post(path, req_id, &bid_body(req_id))
}

#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as received, status line to the blank line.
    pub head: Vec<u8>,
}

/// Every value of header `name` (case-insensitive), in order, in a parsed head's header list.
fn header_all<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

impl Response {
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
        json_str_field(&self.body_str(), key)
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

/// `"key":"value"` in a JSON text (tolerates spaces around the colon).
pub fn json_str_field(body: &str, key: &str) -> Option<String> {
    let pat = format!("\"{key}\"");
    let at = body.find(&pat)? + pat.len();
    let rest = body[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

/// Position of the end of an HTTP head (`\r\n\r\n`), returning the index after it.
pub fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Decodes a complete chunked body at the start of `buf`; `Ok(None)` if incomplete.
/// Returns (body, bytes consumed).
pub fn dechunk(buf: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..pos + eol]).map_err(|e| e.to_string())?;
        let size_str = line.split(';').next().unwrap().trim();
        let size =
            usize::from_str_radix(size_str, 16).map_err(|e| format!("chunk size {line:?}: {e}"))?;
        pos += eol + 2;
        if size == 0 {
            // Trailers until an empty line.
            loop {
                let Some(eol) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
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

/// Parses header lines (after the first line) of a head.
fn parse_header_lines(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| match l.split_once(':') {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A raw TCP client with a buffer for pipelined responses.
pub struct Client {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
    eof: bool,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Client {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to splitter");
    }

    /// Writes; an error (the peer closed) is returned, not a panic.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    fn fill(&mut self, until: Instant) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out".into());
        }
        self.stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(false)
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err("timed out".into())
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(true),
            Err(e) => {
                self.eof = true;
                Err(format!("read error: {e}"))
            }
        }
    }

    /// Reads one response (bounded by `timeout`).
    pub fn try_read_response_within(&mut self, timeout: Duration) -> Result<Response, String> {
        let until = Instant::now() + timeout;
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break end;
            }
            if !self.fill(until)? {
                return Err(format!(
                    "connection closed before a full response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ));
            }
        };
        let head_str = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let status_line = head_str.split("\r\n").next().unwrap_or("").to_string();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("").to_string();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let reason = parts.next().unwrap_or("").to_string();
        let headers = parse_header_lines(&head_str);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let head = self.buf[..head_end].to_vec();
        let body;
        let consumed;
        if (100..200).contains(&status) || status == 204 || status == 304 {
            body = Vec::new();
            consumed = head_end;
        } else if get("Transfer-Encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
        {
            loop {
                if let Some((b, used)) = dechunk(&self.buf[head_end..])? {
                    body = b;
                    consumed = head_end + used;
                    break;
                }
                if !self.fill(until)? {
                    return Err("closed inside a chunked body".into());
                }
            }
        } else if let Some(cl) = get("Content-Length") {
            let len: usize = cl
                .trim()
                .parse()
                .map_err(|_| format!("bad Content-Length {cl:?}"))?;
            while self.buf.len() < head_end + len {
                if !self.fill(until)? {
                    return Err(format!(
                        "closed after {} of {len} body bytes",
                        self.buf.len() - head_end
                    ));
                }
            }
            body = self.buf[head_end..head_end + len].to_vec();
            consumed = head_end + len;
        } else {
            // Delimited by close.
            while self.fill(until)? {}
            body = self.buf[head_end..].to_vec();
            consumed = self.buf.len();
        }
        self.buf.drain(..consumed);
        Ok(Response {
            version,
            status,
            reason,
            headers,
            body,
            head,
        })
    }

    pub fn try_read_response(&mut self) -> Result<Response, String> {
        self.try_read_response_within(IO_TIMEOUT)
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response()
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.send(raw);
        self.read_response()
    }

    /// True when the peer closes (EOF or reset) within `timeout`; bytes that arrive meanwhile
    /// (a final status) are kept in the buffer.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            match self.fill(until) {
                Ok(false) => return true,
                Ok(true) => continue,
                Err(e) if e == "timed out" => return false,
                Err(_) => return true,
            }
        }
    }

    /// Reads a final status (if any) and checks the connection is then closed.
    pub fn expect_status_then_close(&mut self, status: u16, timeout: Duration) -> Response {
        let r = self
            .try_read_response_within(timeout)
            .unwrap_or_else(|e| panic!("expected a {status} response: {e}"));
        assert_eq!(r.status, status, "status; response {r:?}");
        assert!(
            self.closed_within(timeout),
            "the connection must be closed after a {status}"
        );
        r
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// Connects to `addr` and checks that a simple request gets a 200 with its own id.
pub fn assert_serves(addr: SocketAddr, path: &str, req_id: &str) {
    let mut c = Client::connect(addr);
    let r = c.request(&bid(path, req_id));
    r.assert_won(req_id);
}

// ---------------------------------------------------------------------------------------------
// Raw backend peers
// ---------------------------------------------------------------------------------------------

/// A request as a raw peer received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head bytes as received.
    pub head: Vec<u8>,
    /// Which accepted connection (0-based) carried it.
    pub conn: usize,
    /// When the whole request had arrived.
    pub at: Instant,
}

impl RawRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_all(&self.headers, name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_all(&self.headers, name)
    }

    pub fn req_id(&self) -> String {
        self.header("X-Req-Id").unwrap_or("").to_string()
    }
}

/// One connection accepted by a raw peer.
pub struct PeerConn {
    pub stream: TcpStream,
    pub index: usize,
    buf: Vec<u8>,
    tx: Sender<RawRequest>,
}

impl PeerConn {
    /// Reads the next request (Content-Length or chunked body); `None` on EOF or error.
    pub fn next_request(&mut self) -> Option<RawRequest> {
        let head_end = loop {
            if let Some(e) = find_head_end(&self.buf) {
                break e;
            }
            if !self.fill() {
                return None;
            }
        };
        let head_str = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let line = head_str.split("\r\n").next().unwrap_or("").to_string();
        let mut parts = line.split(' ');
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let version = parts.next().unwrap_or("").to_string();
        let headers = parse_header_lines(&head_str);
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let head = self.buf[..head_end].to_vec();
        let (body, used) = if get("Transfer-Encoding").is_some() {
            loop {
                match dechunk(&self.buf[head_end..]) {
                    Ok(Some((b, used))) => break (b, head_end + used),
                    Ok(None) => {
                        if !self.fill() {
                            return None;
                        }
                    }
                    Err(_) => return None,
                }
            }
        } else {
            let len: usize = get("Content-Length")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while self.buf.len() < head_end + len {
                if !self.fill() {
                    return None;
                }
            }
            (self.buf[head_end..head_end + len].to_vec(), head_end + len)
        };
        self.buf.drain(..used);
        let req = RawRequest {
            method,
            target,
            version,
            headers,
            body,
            head,
            conn: self.index,
            at: Instant::now(),
        };
        let _ = self.tx.send(req.clone());
        Some(req)
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16384];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return true;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }

    pub fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }
}

/// A raw TCP backend run by the test: one thread per accepted connection, each calling the
/// handler. Every request read through `PeerConn::next_request` is also sent to `requests`.
pub struct RawPeer {
    pub addr: SocketAddr,
    pub requests: Receiver<RawRequest>,
    pub accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl RawPeer {
    pub fn start<F>(handler: F) -> RawPeer
    where
        F: Fn(PeerConn) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let handler = Arc::new(handler);
        {
            let stop = Arc::clone(&stop);
            let accepted = Arc::clone(&accepted);
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let index = accepted.fetch_add(1, Ordering::SeqCst);
                            stream.set_nonblocking(false).unwrap();
                            stream
                                .set_read_timeout(Some(Duration::from_secs(30)))
                                .unwrap();
                            stream
                                .set_write_timeout(Some(Duration::from_secs(10)))
                                .unwrap();
                            let _ = stream.set_nodelay(true);
                            let conn = PeerConn {
                                stream,
                                index,
                                buf: Vec::new(),
                                tx: tx.clone(),
                            };
                            let handler = Arc::clone(&handler);
                            thread::spawn(move || handler(conn));
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(2)),
                    }
                }
            });
        }
        RawPeer {
            addr,
            requests: rx,
            accepted,
            stop,
        }
    }

    /// A keep-alive peer answering every request with `reply(request)`.
    pub fn replying<F>(reply: F) -> RawPeer
    where
        F: Fn(&RawRequest) -> Vec<u8> + Send + Sync + 'static,
    {
        RawPeer::start(move |mut conn| {
            while let Some(req) = conn.next_request() {
                let out = reply(&req);
                if !conn.write(&out) {
                    return;
                }
            }
        })
    }

    /// Next request received (bounded wait).
    pub fn next_request(&self, timeout: Duration) -> RawRequest {
        self.requests
            .recv_timeout(timeout)
            .expect("the raw backend received no request in time")
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A 200 JSON response with `extra` header lines (each ending in CRLF) and a Content-Length.
pub fn http_json(body: &str, extra: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The body a priced peer answers with: the mock's shape.
pub fn priced_body(name: &str, req_id: &str, price: &str) -> String {
    format!(r#"{{"backend":"{name}","req_id":"{req_id}","price":{price}}}"#)
}

// ---------------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------------

/// A parsed Prometheus text exposition: (name, labels) -> value.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = match line.rsplit_once(' ') {
                Some(v) => v,
                None => continue,
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let mut map = BTreeMap::new();
                    for pair in rest.split(',').filter(|p| !p.is_empty()) {
                        if let Some((k, v)) = pair.split_once('=') {
                            map.insert(
                                k.trim().to_string(),
                                v.trim().trim_matches('"').to_string(),
                            );
                        }
                    }
                    (n.to_string(), map)
                }
                None => (series.trim().to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// The value of `name` whose labels include all of `labels` (0 if absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

/// Runs `splitter ARGS` to completion (bounded), returning (status, stdout, stderr).
pub fn run_cli(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let child = Command::new(BIN)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn splitter");
    let mut guard = ProcGuard::new(child);
    let mut out = guard.child.stdout.take().unwrap();
    let mut err = guard.child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = guard
        .wait_exit(timeout)
        .unwrap_or_else(|| panic!("`splitter {args:?}` did not exit within {timeout:?}"));
    let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
    let err = strip_ansi(&String::from_utf8_lossy(&t_err.join().unwrap()));
    (status, out, err)
}

/// Path of a file in the repository (the workspace root is the crate's parent).
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Milliseconds since `t`.
pub fn ms_since(t: Instant) -> u128 {
    t.elapsed().as_millis()
}

//! The mock backend, `splitter mock-backend`: a small, fast HTTP/1.1 server that answers every
//! request with a JSON price, used by `splitter demo`, the black-box tests and the benchmarks.
//!
//! It has to be faithful (real TCP, keep-alive, pipelining, chunked bodies both ways) and never
//! the bottleneck of a benchmark, so each connection is one task with reused read/write buffers,
//! the reply is formatted by hand (no serde) and written with one `write` per batch of replies.
//! The request parse is lenient on purpose: the splitter's strictness is tested elsewhere; here
//! only what is needed to frame requests correctly is checked (bad framing gets 400 and a close).
//!
//! Misbehaviour is switchable per flag so tests and benchmarks can model bad backends: random or
//! fixed delays, a share of late replies, invalid prices, non-JSON or non-HTTP replies, other
//! status codes, `Connection: close` after each reply, or a reset without a reply.

use std::collections::VecDeque;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// Longest request head (request line and headers) accepted; longer gets 431 and a close.
const MAX_HEAD: usize = 64 * 1024;
/// Most request headers accepted; more gets 431 and a close.
const MAX_HEADERS: usize = 64;
/// Size of each read; a few typical requests fit, so pipelined batches are parsed in one go.
const READ_CHUNK: usize = 16 * 1024;
/// Listen backlog: benchmarks open hundreds of connections at once.
const BACKLOG: u32 = 4096;
/// Longest delay a flag may ask for (a day): keeps `Instant + delay` far from overflow.
const MAX_DELAY_MS: u64 = 86_400_000;
/// Largest `--body-bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// How long a closing connection keeps draining input so that unread bytes don't turn our FIN
/// into a RST, which could destroy the reply still in flight.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// The 200 body of a "broken" reply that is HTTP but not JSON.
const NOT_JSON: &[u8] = b"<html><body>mock backend: this is not JSON</body></html>";
/// A "broken" reply that is not HTTP at all (starts like a TLS record), followed by a close.
const GARBAGE: &[u8] = b"\x16\x03\x01\x00\x2a mock backend garbage, not HTTP \xff\xfe\x00\r\n\r\n";
/// Sent before the body is read when the client asked for it (curl does for larger bodies).
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n\
      Content-Length: 0\r\nConnection: close\r\n\r\n";
/// `,"pad":""}`: what the pad field adds around its `x`s (closing brace included).
const PAD_OVERHEAD: usize = 10;

/// An inclusive range `A..B` from the command line; a single value `N` means `N..N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span<T> {
    /// Lower bound (inclusive).
    pub lo: T,
    /// Upper bound (inclusive).
    pub hi: T,
}

/// Command-line flags of `splitter mock-backend`.
///
/// [`Default`] gives the command-line defaults with `listen = 127.0.0.1:0`, handy in-process:
/// `MockArgs { price: 2.0, ..MockArgs::default() }`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct MockArgs {
    /// Address to listen on, e.g. 127.0.0.1:9001 (port 0 picks a free port; see the
    /// `listening on ADDR` line printed once bound).
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Backend name, put in the reply as "backend".
    #[arg(long, default_value = "mock")]
    pub name: String,
    /// Fixed price.
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true, value_parser = parse_finite)]
    pub price: f64,
    /// Uniform random price in A..B instead of the fixed one.
    #[arg(long, value_name = "A..B", allow_hyphen_values = true, value_parser = parse_price_range)]
    pub price_range: Option<Span<f64>>,
    /// Raw JSON text used as the price value (e.g. '"12"' or 'null'), to make invalid replies;
    /// overrides --price and --price-range.
    #[arg(long, value_name = "JSON", allow_hyphen_values = true)]
    pub price_raw: Option<String>,
    /// Top-level key holding the price.
    #[arg(long, default_value = "price")]
    pub field: String,
    /// Leave the price field out of the reply.
    #[arg(long)]
    pub omit_field: bool,
    /// Reply delay in ms: uniform in A..B, or exactly N.
    #[arg(long, value_name = "A..B|N", default_value = "0", value_parser = parse_delay)]
    pub delay_ms: Span<u64>,
    /// Share (0..1) of replies delayed by --late-delay-ms instead of --delay-ms.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub late_share: f64,
    /// Delay of the late replies, in ms.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=MAX_DELAY_MS))]
    pub late_delay_ms: u64,
    /// Share (0..1) of broken replies: half a 200 with a non-JSON body, half garbage bytes that
    /// are not HTTP followed by a close.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub broken_share: f64,
    /// Status code of the replies (204 and 304 are sent without a body).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(200..=599))]
    pub status: u16,
    /// Send the body with `Transfer-Encoding: chunked` (in two chunks).
    #[arg(long)]
    pub chunked: bool,
    /// Pad the JSON body to about N bytes with a "pad" string field (0 = no pad).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub body_bytes: usize,
    /// Tokio worker threads (1 = a single-threaded runtime, the cheapest).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Send `Connection: close` and close after each reply.
    #[arg(long)]
    pub close: bool,
    /// Read each request, then reset the connection (SO_LINGER 0) without replying: a dead
    /// backend that still accepts.
    #[arg(long)]
    pub reset: bool,
}

impl Default for MockArgs {
    fn default() -> Self {
        MockArgs {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            name: "mock".into(),
            price: 1.0,
            price_range: None,
            price_raw: None,
            field: "price".into(),
            omit_field: false,
            delay_ms: Span { lo: 0, hi: 0 },
            late_share: 0.0,
            late_delay_ms: 1000,
            broken_share: 0.0,
            status: 200,
            chunked: false,
            body_bytes: 0,
            threads: 1,
            close: false,
            reset: false,
        }
    }
}

fn parse_finite(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a finite number"))
    }
}

/// Splits `A..B` (or a lone `N`) and checks `A <= B`.
fn parse_span<T: Copy + PartialOrd>(
    s: &str,
    one: impl Fn(&str) -> Result<T, String>,
) -> Result<Span<T>, String> {
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (one(a)?, one(b)?),
        None => {
            let v = one(s)?;
            (v, v)
        }
    };
    if lo <= hi {
        Ok(Span { lo, hi })
    } else {
        Err(format!("`{s}`: the lower bound is above the upper bound"))
    }
}

fn parse_price_range(s: &str) -> Result<Span<f64>, String> {
    parse_span(s, parse_finite)
}

fn parse_delay(s: &str) -> Result<Span<u64>, String> {
    parse_span(s, |p| match p.trim().parse::<u64>() {
        Ok(v) if v <= MAX_DELAY_MS => Ok(v),
        Ok(_) => Err(format!("`{p}` ms is more than a day")),
        Err(_) => Err(format!("`{p}` is not a whole number of ms")),
    })
}

fn parse_share(s: &str) -> Result<f64, String> {
    let v = parse_finite(s)?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("`{s}` is not a share between 0 and 1"))
    }
}

/// Where the price value of a reply comes from.
#[derive(Debug, Clone)]
enum Price {
    /// Preformatted bytes: a fixed number, or `--price-raw` text.
    Bytes(Vec<u8>),
    /// Uniform in `lo..hi`, formatted per reply.
    Range(f64, f64),
}

/// What one reply turns out to be (drawn per request from the shares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Json,
    NotJson,
    Garbage,
    Reset,
}

/// The validated, preformatted form of [`MockArgs`] that [`serve`] runs with.
#[derive(Debug, Clone)]
pub struct MockConfig {
    status_line: Vec<u8>,
    /// `{"backend":"NAME","req_id":"`
    body_prefix: Vec<u8>,
    /// `,"FIELD":`, or `None` with `--omit-field`.
    field_key: Option<Vec<u8>>,
    price: Price,
    /// No body nor framing headers (204, 304).
    bodiless: bool,
    chunked: bool,
    body_bytes: usize,
    /// `body_bytes` times `x`, sliced for each reply's pad.
    pad: Vec<u8>,
    delay: Span<u64>,
    late_share: f64,
    late_delay: Duration,
    broken_share: f64,
    close: bool,
    reset: bool,
    parser: httparse::ParserConfig,
}

impl MockConfig {
    /// Validates `args` and preformats the constant parts of the replies.
    pub fn new(args: &MockArgs) -> anyhow::Result<MockConfig> {
        // clap checks these on the command line; in-process callers build MockArgs by hand.
        let share = |v: f64| (0.0..=1.0).contains(&v);
        anyhow::ensure!(args.price.is_finite(), "--price: not a finite number");
        anyhow::ensure!(share(args.late_share), "--late-share: not in 0..=1");
        anyhow::ensure!(share(args.broken_share), "--broken-share: not in 0..=1");
        if let Some(r) = args.price_range {
            anyhow::ensure!(
                r.lo.is_finite() && r.hi.is_finite() && r.lo <= r.hi,
                "--price-range: bad range {}..{}",
                r.lo,
                r.hi
            );
        }
        anyhow::ensure!(
            args.delay_ms.lo <= args.delay_ms.hi && args.delay_ms.hi <= MAX_DELAY_MS,
            "--delay-ms: bad range {}..{}",
            args.delay_ms.lo,
            args.delay_ms.hi
        );
        anyhow::ensure!(
            args.late_delay_ms <= MAX_DELAY_MS,
            "--late-delay-ms: over a day"
        );
        anyhow::ensure!(
            (200..=599).contains(&args.status),
            "--status: not in 200..=599"
        );
        anyhow::ensure!(
            args.body_bytes <= MAX_BODY_BYTES,
            "--body-bytes: over 64 MiB"
        );
        anyhow::ensure!(args.threads >= 1, "--threads: at least 1");

        let price = match (&args.price_raw, args.price_range) {
            (Some(raw), _) => Price::Bytes(raw.as_bytes().to_vec()),
            (None, Some(r)) if r.lo < r.hi => Price::Range(r.lo, r.hi),
            (None, Some(r)) => Price::Bytes(r.lo.to_string().into_bytes()),
            (None, None) => Price::Bytes(args.price.to_string().into_bytes()),
        };
        let mut body_prefix = b"{\"backend\":\"".to_vec();
        json_escape_into(&mut body_prefix, args.name.as_bytes());
        body_prefix.extend_from_slice(b"\",\"req_id\":\"");
        let field_key = (!args.omit_field).then(|| {
            let mut k = b",\"".to_vec();
            json_escape_into(&mut k, args.field.as_bytes());
            k.extend_from_slice(b"\":");
            k
        });
        let mut parser = httparse::ParserConfig::default();
        parser
            .allow_multiple_spaces_in_request_line_delimiters(true)
            .ignore_invalid_headers_in_requests(true);
        Ok(MockConfig {
            status_line: format!("HTTP/1.1 {} {}\r\n", args.status, reason(args.status))
                .into_bytes(),
            body_prefix,
            field_key,
            price,
            bodiless: matches!(args.status, 204 | 304),
            chunked: args.chunked,
            body_bytes: args.body_bytes,
            pad: vec![b'x'; args.body_bytes],
            delay: args.delay_ms,
            late_share: args.late_share,
            late_delay: Duration::from_millis(args.late_delay_ms),
            broken_share: args.broken_share,
            close: args.close,
            reset: args.reset,
            parser,
        })
    }

    /// Draws the delay of one reply.
    fn pick_delay(&self) -> Duration {
        if self.late_share > 0.0 && fastrand::f64() < self.late_share {
            return self.late_delay;
        }
        let Span { lo, hi } = self.delay;
        Duration::from_millis(if lo == hi { lo } else { fastrand::u64(lo..=hi) })
    }

    /// Draws what one reply is.
    fn pick_kind(&self) -> Kind {
        if self.reset {
            return Kind::Reset;
        }
        if self.broken_share > 0.0 {
            let r = fastrand::f64();
            if r < self.broken_share / 2.0 {
                return Kind::NotJson;
            }
            if r < self.broken_share {
                return Kind::Garbage;
            }
        }
        Kind::Json
    }

    /// Appends the JSON body to `body` (cleared first).
    fn render_json(&self, body: &mut Vec<u8>, id: &[u8]) {
        body.clear();
        body.extend_from_slice(&self.body_prefix);
        body.extend_from_slice(id);
        body.push(b'"');
        if let Some(key) = &self.field_key {
            body.extend_from_slice(key);
            match &self.price {
                Price::Bytes(b) => body.extend_from_slice(b),
                Price::Range(lo, hi) => {
                    let v = lo + fastrand::f64() * (hi - lo);
                    // Writing to a Vec cannot fail.
                    let _ = write!(body, "{v}");
                }
            }
        }
        if self.body_bytes > 0 {
            let n = self.body_bytes.saturating_sub(body.len() + PAD_OVERHEAD);
            body.extend_from_slice(b",\"pad\":\"");
            body.extend_from_slice(&self.pad[..n]);
            body.push(b'"');
        }
        body.push(b'}');
    }

    /// Appends a whole reply (head and framed body) to `out`; `body` is scratch space.
    fn render(&self, out: &mut Vec<u8>, body: &mut Vec<u8>, id: &[u8], meta: &Meta, kind: Kind) {
        body.clear();
        if !self.bodiless {
            if kind == Kind::NotJson {
                body.extend_from_slice(NOT_JSON);
            } else {
                self.render_json(body, id);
            }
        }
        out.extend_from_slice(&self.status_line);
        if !self.bodiless {
            // Not-JSON replies still claim JSON: the splitter must judge the body itself.
            out.extend_from_slice(b"Content-Type: application/json\r\n");
            if self.chunked {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            } else {
                let _ = write!(out, "Content-Length: {}\r\n", body.len());
            }
        }
        if meta.has_id {
            out.extend_from_slice(b"X-Req-Id: ");
            out.extend_from_slice(id);
            out.extend_from_slice(b"\r\n");
        }
        if self.close || !meta.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if meta.echo_keep_alive {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if self.bodiless || meta.head {
            return;
        }
        if self.chunked {
            // Two chunks, so the splitter's de-chunking is exercised across a chunk boundary.
            let (a, b) = body.split_at(body.len() / 2);
            for part in [a, b] {
                if !part.is_empty() {
                    let _ = write!(out, "{:x}\r\n", part.len());
                    out.extend_from_slice(part);
                    out.extend_from_slice(b"\r\n");
                }
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(body);
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Mock",
    }
}

/// JSON string escaping for the configured name and field.
fn json_escape_into(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f | 0x7f => {
                let _ = write!(out, "\\u{b:04x}");
            }
            _ => out.push(b),
        }
    }
}

/// Keeps the bytes of an echoed request id that are safe both in a JSON string and in a header
/// value without escaping: printable ASCII except `"` and `\`.
fn sanitize_id_into(out: &mut Vec<u8>, v: &[u8]) {
    out.clear();
    out.extend(
        v.iter()
            .copied()
            .filter(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'),
    );
    while out.last() == Some(&b' ') {
        out.pop();
    }
    let lead = out.iter().take_while(|&&b| b == b' ').count();
    out.drain(..lead);
}

fn trim_ascii(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ascii(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// Accepts connections until the listener fails and serves each in its own task.
///
/// Transient accept errors (a connection aborted before accept, out of descriptors or memory)
/// are logged and retried after a short pause; any other error is returned.
pub async fn serve(listener: TcpListener, cfg: Arc<MockConfig>) -> io::Result<()> {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) if accept_error_is_transient(&e) => {
                tracing::warn!(error = %e, "mock backend: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        // One write per reply batch: Nagle would only add latency.
        let _ = stream.set_nodelay(true);
        tokio::spawn(Conn::new(stream, cfg.clone()).run());
    }
}

fn accept_error_is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EPROTO)
    )
}

/// Binds with `SO_REUSEADDR` (quick restarts in scripts) and a large backlog.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Runs `splitter mock-backend`: builds the runtime, binds, prints `listening on ADDR` to stdout
/// once bound, and serves until SIGTERM or SIGINT (then returns `Ok`).
pub fn run(args: MockArgs) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};

    let cfg = Arc::new(MockConfig::new(&args)?);
    let mut builder = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(args.threads.into());
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let listener = bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Handlers go in before the line is printed: a script may signal as soon as it reads it.
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        {
            let mut out = io::stdout().lock();
            writeln!(out, "listening on {addr}")?;
            out.flush()?;
        }
        tokio::select! {
            r = serve(listener, cfg) => r.context("serving")?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    // Open connections are simply dropped: the mock has no requests worth finishing.
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

/// What the connection does once a reply has been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
    Reset,
}

/// A reply that waits for its delay, or for an earlier one that does.
struct Pending {
    due: Instant,
    bytes: Vec<u8>,
    after: After,
}

/// Progress through the request being read.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Head,
    /// Body bytes still to skip.
    Length(u64),
    Chunked(Chunk),
}

/// Where a chunked body skip stands.
#[derive(Debug, Clone, Copy)]
enum Chunk {
    Size,
    Data(u64),
    DataEnd,
    Trailer,
}

/// What the request head said that the reply needs (the id is kept in `Conn::id`).
#[derive(Debug, Clone, Copy, Default)]
struct Meta {
    keep_alive: bool,
    /// HTTP/1.0 with `Connection: keep-alive` wants it back (`ab -k`).
    echo_keep_alive: bool,
    has_id: bool,
    head: bool,
}

struct Conn {
    stream: TcpStream,
    cfg: Arc<MockConfig>,
    rbuf: Vec<u8>,
    /// Start of the unconsumed bytes in `rbuf`.
    rpos: usize,
    /// Replies ready to go, written in one call.
    wbuf: Vec<u8>,
    /// Body scratch, reused.
    body: Vec<u8>,
    /// Sanitized X-Req-Id of the current request.
    id: Vec<u8>,
    meta: Meta,
    phase: Phase,
    /// Replies not yet due, in request order; empty on the fast path.
    queue: VecDeque<Pending>,
    /// Recycled `Pending::bytes`.
    spare: Vec<Vec<u8>>,
    /// A close or reset is now due, after `wbuf` is written.
    closing: Option<After>,
    /// A close or reset is on its way: parse and read nothing more.
    stop: bool,
    eof: bool,
}

impl Conn {
    fn new(stream: TcpStream, cfg: Arc<MockConfig>) -> Conn {
        Conn {
            stream,
            cfg,
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            wbuf: Vec::with_capacity(4096),
            body: Vec::new(),
            id: Vec::new(),
            meta: Meta::default(),
            phase: Phase::Head,
            queue: VecDeque::new(),
            spare: Vec::new(),
            closing: None,
            stop: false,
            eof: false,
        }
    }

    async fn run(mut self) -> io::Result<()> {
        loop {
            self.process_input();
            self.flush_due();
            if !self.wbuf.is_empty() {
                self.stream.write_all(&self.wbuf).await?;
                self.wbuf.clear();
            }
            match self.closing {
                Some(After::Reset) => {
                    // SO_LINGER 0: dropping the socket sends a RST, not a FIN.
                    let _ = self.stream.set_zero_linger();
                    return Ok(());
                }
                Some(After::Close) => return self.close_gracefully().await,
                _ => {}
            }
            let reading = !self.stop && !self.eof;
            let due = self.queue.front().map(|p| p.due);
            self.make_room();
            let got = match (reading, due) {
                (false, None) => return Ok(()),
                (true, None) => Some(self.stream.read_buf(&mut self.rbuf).await),
                (false, Some(due)) => {
                    tokio::time::sleep_until(due).await;
                    None
                }
                (true, Some(due)) => tokio::select! {
                    r = self.stream.read_buf(&mut self.rbuf) => Some(r),
                    _ = tokio::time::sleep_until(due) => None,
                },
            };
            if let Some(r) = got {
                if r? == 0 {
                    self.eof = true;
                }
            }
        }
    }

    /// Compacts `rbuf` and makes sure a read has room.
    fn make_room(&mut self) {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > 0 && self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 2 {
            self.rbuf.reserve(READ_CHUNK);
        }
    }

    async fn close_gracefully(mut self) -> io::Result<()> {
        self.stream.shutdown().await?;
        let drain = async {
            loop {
                self.rbuf.clear();
                match self.stream.read_buf(&mut self.rbuf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
        Ok(())
    }

    /// Parses every complete request in `rbuf` and emits (or queues) its reply.
    fn process_input(&mut self) {
        while !self.stop {
            match self.phase {
                Phase::Head => {
                    if self.rpos == self.rbuf.len() {
                        return;
                    }
                    match self.parse_head() {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(reply) => {
                            self.emit_static(reply, After::Close);
                            return;
                        }
                    }
                }
                Phase::Length(rem) => {
                    let take = ((self.rbuf.len() - self.rpos) as u64).min(rem);
                    self.rpos += take as usize;
                    if take < rem {
                        self.phase = Phase::Length(rem - take);
                        return;
                    }
                    self.phase = Phase::Head;
                    self.complete_request();
                }
                Phase::Chunked(state) => match self.skip_chunked(state) {
                    Ok(true) => {
                        self.phase = Phase::Head;
                        self.complete_request();
                    }
                    Ok(false) => return,
                    Err(()) => {
                        self.emit_static(BAD_REQUEST, After::Close);
                        return;
                    }
                },
            }
        }
    }

    /// Parses a request head at `rpos`: `Ok(false)` when incomplete, `Err(reply)` when the
    /// stream can't be framed.
    fn parse_head(&mut self) -> Result<bool, &'static [u8]> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let buf = &self.rbuf[self.rpos..];
        let n = match self.cfg.parser.parse_request(&mut req, buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(HEAD_TOO_LARGE),
            Ok(httparse::Status::Partial) => return Ok(false),
            Err(httparse::Error::TooManyHeaders) => return Err(HEAD_TOO_LARGE),
            Err(_) => return Err(BAD_REQUEST),
        };
        let (mut close, mut keep_alive, mut expect) = (false, false, false);
        let mut length: Option<u64> = None;
        // Some(whether the last coding is chunked)
        let mut chunked: Option<bool> = None;
        let mut has_id = false;
        for h in req.headers.iter() {
            let name = h.name.as_bytes();
            if name.eq_ignore_ascii_case(b"content-length") {
                let v = parse_content_length(h.value).ok_or(BAD_REQUEST)?;
                if length.is_some_and(|l| l != v) {
                    return Err(BAD_REQUEST);
                }
                length = Some(v);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(trim_ascii(last).eq_ignore_ascii_case(b"chunked"));
            } else if name.eq_ignore_ascii_case(b"connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = trim_ascii(token);
                    close |= token.eq_ignore_ascii_case(b"close");
                    keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case(b"x-req-id") && !has_id {
                has_id = true;
                sanitize_id_into(&mut self.id, h.value);
            } else if name.eq_ignore_ascii_case(b"expect") {
                expect = trim_ascii(h.value).eq_ignore_ascii_case(b"100-continue");
            }
        }
        if !has_id {
            self.id.clear();
        }
        let http10 = req.version == Some(0);
        self.meta = Meta {
            keep_alive: !close && (!http10 || keep_alive),
            echo_keep_alive: http10 && keep_alive && !close,
            has_id,
            head: req.method == Some("HEAD"),
        };
        self.rpos += n;
        // Transfer-Encoding wins over Content-Length (RFC 9112 6.3); a final coding other than
        // chunked can't be framed.
        self.phase = match chunked {
            Some(true) => Phase::Chunked(Chunk::Size),
            Some(false) => return Err(BAD_REQUEST),
            None => Phase::Length(length.unwrap_or(0)),
        };
        let has_body = !matches!(self.phase, Phase::Length(0));
        if expect && !http10 && has_body && self.rpos == self.rbuf.len() {
            self.emit_static(CONTINUE, After::KeepAlive);
        }
        Ok(true)
    }

    /// Skips a chunked body: `Ok(true)` once it (trailers included) is consumed.
    fn skip_chunked(&mut self, mut state: Chunk) -> Result<bool, ()> {
        loop {
            let avail = &self.rbuf[self.rpos..];
            match state {
                Chunk::Size => match httparse::parse_chunk_size(avail) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        self.rpos += n;
                        state = if size == 0 {
                            Chunk::Trailer
                        } else {
                            Chunk::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if avail.len() <= MAX_HEAD => break,
                    _ => return Err(()),
                },
                Chunk::Data(rem) => {
                    let take = (avail.len() as u64).min(rem);
                    self.rpos += take as usize;
                    if take < rem {
                        state = Chunk::Data(rem - take);
                        break;
                    }
                    state = Chunk::DataEnd;
                }
                Chunk::DataEnd => {
                    if avail.len() < 2 {
                        break;
                    }
                    if &avail[..2] != b"\r\n" {
                        return Err(());
                    }
                    self.rpos += 2;
                    state = Chunk::Size;
                }
                Chunk::Trailer => match avail.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => {
                        self.rpos += 2;
                        return Ok(true);
                    }
                    Some(i) => self.rpos += i + 2,
                    None if avail.len() <= MAX_HEAD => break,
                    None => return Err(()),
                },
            }
        }
        self.phase = Phase::Chunked(state);
        Ok(false)
    }

    /// The whole request has been read: draw and emit its reply.
    fn complete_request(&mut self) {
        let delay = self.cfg.pick_delay();
        let kind = self.cfg.pick_kind();
        let after = match kind {
            Kind::Reset => After::Reset,
            Kind::Garbage => After::Close,
            _ if self.cfg.close || !self.meta.keep_alive => After::Close,
            _ => After::KeepAlive,
        };
        let (mut out, immediate) = self.reply_buffer(delay);
        match kind {
            Kind::Json | Kind::NotJson => {
                self.cfg
                    .render(&mut out, &mut self.body, &self.id, &self.meta, kind)
            }
            Kind::Garbage => out.extend_from_slice(GARBAGE),
            Kind::Reset => {}
        }
        self.commit_reply(out, immediate, delay, after);
    }

    /// Emits a fixed reply that goes out as soon as the replies before it have.
    fn emit_static(&mut self, bytes: &[u8], after: After) {
        let (mut out, immediate) = self.reply_buffer(Duration::ZERO);
        out.extend_from_slice(bytes);
        self.commit_reply(out, immediate, Duration::ZERO, after);
    }

    /// The buffer to render a reply into: `wbuf` itself (taken, so no copy) when nothing waits
    /// before it, else a buffer of its own to be queued; and which of the two it is.
    fn reply_buffer(&mut self, delay: Duration) -> (Vec<u8>, bool) {
        if delay.is_zero() && self.queue.is_empty() {
            (std::mem::take(&mut self.wbuf), true)
        } else {
            (self.spare.pop().unwrap_or_default(), false)
        }
    }

    /// Puts back a reply from [`Conn::reply_buffer`]: ready in `wbuf`, or queued until `delay`
    /// has passed and earlier replies are out (replies on a connection stay in request order).
    fn commit_reply(&mut self, out: Vec<u8>, immediate: bool, delay: Duration, after: After) {
        if after != After::KeepAlive {
            self.stop = true;
        }
        if immediate {
            self.wbuf = out;
            if after != After::KeepAlive {
                self.closing = Some(after);
            }
        } else {
            self.queue.push_back(Pending {
                due: Instant::now() + delay,
                bytes: out,
                after,
            });
        }
    }

    /// Moves the replies now due, in order, from the queue to `wbuf`.
    fn flush_due(&mut self) {
        let Some(first) = self.queue.front() else {
            return;
        };
        let now = Instant::now();
        if first.due > now {
            return;
        }
        while self.queue.front().is_some_and(|p| p.due <= now) {
            let Some(mut p) = self.queue.pop_front() else {
                break;
            };
            self.wbuf.extend_from_slice(&p.bytes);
            if p.after != After::KeepAlive {
                self.closing = Some(p.after);
            }
            p.bytes.clear();
            if self.spare.len() < 16 {
                self.spare.push(p.bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;
    use std::future::Future;

    /// Every network test is bounded by this; nothing waits on sleeps.
    const BOUND: Duration = Duration::from_secs(10);

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }

    fn args(extra: &[&str]) -> MockArgs {
        let argv = ["mock", "--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    async fn bounded<F: Future>(f: F) -> F::Output {
        tokio::time::timeout(BOUND, f)
            .await
            .expect("test timed out")
    }

    async fn start(extra: &[&str]) -> SocketAddr {
        let cfg = Arc::new(MockConfig::new(&args(extra)).unwrap());
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
        let (mut pos, mut body) = (0, Vec::new());
        loop {
            let httparse::Status::Complete((n, size)) =
                httparse::parse_chunk_size(&buf[pos..]).unwrap()
            else {
                return None;
            };
            pos += n;
            let size = size as usize;
            if size == 0 {
                return (buf.len() >= pos + 2).then(|| {
                    assert_eq!(&buf[pos..pos + 2], b"\r\n", "no trailers expected");
                    (body, pos + 2)
                });
            }
            if buf.len() < pos + size + 2 {
                return None;
            }
            body.extend_from_slice(&buf[pos..pos + size]);
            assert_eq!(&buf[pos + size..pos + size + 2], b"\r\n");
            pos += size + 2;
        }
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

    #[test]
    fn spans_parse() {
        assert_eq!(parse_price_range("1.0..2.0"), Ok(Span { lo: 1.0, hi: 2.0 }));
        assert_eq!(
            parse_price_range("-1.5..-0.5"),
            Ok(Span { lo: -1.5, hi: -0.5 })
        );
        assert_eq!(parse_price_range("3"), Ok(Span { lo: 3.0, hi: 3.0 }));
        assert!(parse_price_range("2..1").is_err());
        assert!(parse_price_range("a..1").is_err());
        assert!(parse_price_range("1..inf").is_err());
        assert!(parse_price_range("NaN").is_err());
        assert_eq!(parse_delay("10..20"), Ok(Span { lo: 10, hi: 20 }));
        assert_eq!(parse_delay("7"), Ok(Span { lo: 7, hi: 7 }));
        assert!(parse_delay("20..10").is_err());
        assert!(parse_delay("-1").is_err());
        assert!(parse_delay("1.5").is_err());
        assert!(parse_delay("99999999999").is_err());
        assert_eq!(parse_share("0.25"), Ok(0.25));
        assert!(parse_share("1.5").is_err());
        assert!(parse_share("-0.1").is_err());
    }

    #[test]
    fn args_defaults_match_default_impl() {
        assert_eq!(args(&[]), MockArgs::default());
        assert!(
            Cli::try_parse_from(["mock"]).is_err(),
            "--listen is required"
        );
    }

    #[test]
    fn args_all_flags() {
        let a = args(&[
            "--name",
            "b1",
            "--price",
            "-2",
            "--price-range",
            "1.0..2.0",
            "--price-raw",
            "null",
            "--field",
            "bid",
            "--omit-field",
            "--delay-ms",
            "5..10",
            "--late-share",
            "0.1",
            "--late-delay-ms",
            "900",
            "--broken-share",
            "0.2",
            "--status",
            "503",
            "--chunked",
            "--body-bytes",
            "2048",
            "--threads",
            "2",
            "--close",
            "--reset",
        ]);
        let want = MockArgs {
            name: "b1".into(),
            price: -2.0,
            price_range: Some(Span { lo: 1.0, hi: 2.0 }),
            price_raw: Some("null".into()),
            field: "bid".into(),
            omit_field: true,
            delay_ms: Span { lo: 5, hi: 10 },
            late_share: 0.1,
            late_delay_ms: 900,
            broken_share: 0.2,
            status: 503,
            chunked: true,
            body_bytes: 2048,
            threads: 2,
            close: true,
            reset: true,
            ..MockArgs::default()
        };
        assert_eq!(a, want);
        for bad in [
            &["--status", "99"][..],
            &["--status", "600"],
            &["--threads", "0"],
            &["--late-share", "2"],
            &["--delay-ms", "3..1"],
        ] {
            let argv = ["mock", "--listen", "127.0.0.1:0"]
                .into_iter()
                .chain(bad.iter().copied());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?} accepted");
        }
        let hand_built = MockArgs {
            broken_share: 3.0,
            ..MockArgs::default()
        };
        assert!(MockConfig::new(&hand_built).is_err());
    }

    #[test]
    fn body_format_and_escaping() {
        let cfg = MockConfig::new(&args(&["--name", "a\"b\\c\n", "--price", "2.5"])).unwrap();
        let mut body = Vec::new();
        cfg.render_json(&mut body, b"r1");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"backend":"a\"b\\c\u000a","req_id":"r1","price":2.5}"#
        );
        let mut id = Vec::new();
        sanitize_id_into(&mut id, b" a\"b\\c\x7fd ");
        assert_eq!(id, b"abcd");
        assert_eq!(parse_content_length(b" 42 "), Some(42));
        assert_eq!(parse_content_length(b"+4"), None);
        assert_eq!(parse_content_length(b"99999999999999999999"), None);
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
            let addr = start(&["--delay-ms", "300"]).await;
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
            // In series it would take 1.5 s; in parallel a little over 0.3 s.
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took < Duration::from_millis(1200), "{took:?}");
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

    /// Rough throughput check: `cargo test --release -p splitter-user --lib wrk_load --
    /// --ignored --nocapture` (needs `wrk`). POSTs a 2 KB JSON body over 32 keep-alive
    /// connections for 5 s to a single-threaded mock answering 2 KB bodies.
    #[test]
    #[ignore = "load test: needs wrk; run in --release with --ignored --nocapture"]
    fn wrk_load() {
        let cfg = Arc::new(MockConfig::new(&args(&["--body-bytes", "2048"])).unwrap());
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
}

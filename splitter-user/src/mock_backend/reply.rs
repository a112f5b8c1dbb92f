//! What a reply looks like: the validated flags ([`MockConfig`]), what each request draws from
//! them (delay, kind, price), and the bytes of the reply, JSON escaping included.

use std::io::Write as _;
use std::time::Duration;

use super::args::{MockArgs, Span, MAX_CHUNK_BYTES, MAX_DELAY_MS};
use super::encoding::{Compressors, Encoding, Shares};
use super::openrtb::Template;
use crate::http1::chunked::encode_chunked;
use crate::http1::encode;

/// Largest `--body-bytes`.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The 200 body of a "broken" reply that is HTTP but not JSON.
const NOT_JSON: &[u8] = b"<html><body>mock backend: this is not JSON</body></html>";
/// A "broken" reply that is not HTTP at all (starts like a TLS record), followed by a close.
const GARBAGE: &[u8] = b"\x16\x03\x01\x00\x2a mock backend garbage, not HTTP \xff\xfe\x00\r\n\r\n";
/// `,"pad":""}`: what the pad field adds around its `x`s (closing brace included).
const PAD_OVERHEAD: usize = 10;
/// Bytes of one write of an endless head or body.
const ENDLESS_BLOCK: usize = 16 * 1024;
/// One header line of an endless head: `X-Filler: xxx...x` and CRLF, 64 bytes.
const FILLER_LINE_PAD: usize = 64 - b"X-Filler: \r\n".len();

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
pub(super) enum Kind {
    Json,
    NotJson,
    Garbage,
    Reset,
    /// No reply at all, the connection kept open (`--blackhole`).
    Silent,
    /// A status line, then header lines without end (`--endless-head`).
    EndlessHead,
    /// A chunked 200 whose body never ends (`--endless-body`).
    EndlessBody,
}

/// The validated, preformatted form of [`MockArgs`] that [`serve`](super::serve) runs with.
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
    /// `Connection: close` and a close after every reply.
    pub(super) close: bool,
    reset: bool,
    /// `--chunk-bytes`: chunks of this size, each written on its own.
    chunk_bytes: Option<usize>,
    blackhole: bool,
    endless_head: bool,
    endless_body: bool,
    /// `--reset-after-bytes`: replies cut to this many bytes, then a reset.
    pub(super) reset_after_bytes: Option<usize>,
    /// A close after every reply, without `Connection: close`.
    pub(super) close_silently: bool,
    /// What an endless head or body goes on with, one write at a time.
    endless_block: Vec<u8>,
    /// `--openrtb`: BidResponse-shaped bodies instead of the flat one.
    openrtb: Option<Template>,
    /// `--gzip`, `--deflate`.
    encodings: Shares,
}

/// A connection's scratch space for [`MockConfig::render`], besides the body buffer: reused
/// from reply to reply.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    compressors: Compressors,
    /// The compressed body, swapped with the plain one.
    packed: Vec<u8>,
    /// Where the OpenRTB `adm` pads go.
    adm_at: Vec<usize>,
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
        if let Some(n) = args.chunk_bytes {
            anyhow::ensure!(
                (1..=MAX_CHUNK_BYTES).contains(&n),
                "--chunk-bytes: not in 1..={MAX_CHUNK_BYTES}"
            );
        }
        let exclusive = [
            ("--reset", args.reset),
            ("--blackhole", args.blackhole),
            ("--endless-head", args.endless_head),
            ("--endless-body", args.endless_body),
            ("--reset-after-bytes", args.reset_after_bytes.is_some()),
        ];
        let set: Vec<&str> = exclusive
            .iter()
            .filter(|(_, on)| *on)
            .map(|(name, _)| *name)
            .collect();
        anyhow::ensure!(
            set.len() <= 1,
            "{} exclude each other: each replaces the reply",
            set.join(", ")
        );
        let encodings = Shares::new(args.gzip, args.deflate)?;
        let openrtb = args
            .openrtb
            .map(|shape| Template::new(shape, &args.name, args.body_bytes));
        // The OpenRTB template has a pad of its own.
        let flat_pad = args.body_bytes * usize::from(openrtb.is_none());

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
        Ok(MockConfig {
            status_line: format!(
                "HTTP/1.1 {} {}\r\n",
                args.status,
                encode::reason(args.status)
            )
            .into_bytes(),
            body_prefix,
            field_key,
            price,
            bodiless: matches!(args.status, 204 | 304),
            chunked: args.chunked,
            body_bytes: args.body_bytes,
            pad: vec![b'x'; flat_pad],
            delay: args.delay_ms,
            late_share: args.late_share,
            late_delay: Duration::from_millis(args.late_delay_ms),
            broken_share: args.broken_share,
            close: args.close,
            reset: args.reset,
            chunk_bytes: args.chunk_bytes.map(|n| n as usize),
            blackhole: args.blackhole,
            endless_head: args.endless_head,
            endless_body: args.endless_body,
            reset_after_bytes: args.reset_after_bytes.map(|n| n as usize),
            close_silently: args.close_silently,
            endless_block: endless_block(args.endless_head, args.endless_body),
            openrtb,
            encodings,
        })
    }

    /// `--blackhole`: nothing is ever answered, not even `100 Continue`.
    pub(super) fn silent(&self) -> bool {
        self.blackhole
    }

    /// What an endless reply goes on with after its first bytes, one write at a time.
    pub(super) fn endless_block(&self) -> &[u8] {
        &self.endless_block
    }

    /// Draws the delay of one reply.
    pub(super) fn pick_delay(&self) -> Duration {
        if self.late_share > 0.0 && fastrand::f64() < self.late_share {
            return self.late_delay;
        }
        let Span { lo, hi } = self.delay;
        Duration::from_millis(if lo == hi { lo } else { fastrand::u64(lo..=hi) })
    }

    /// Draws what one reply is.
    pub(super) fn pick_kind(&self) -> Kind {
        if self.reset {
            return Kind::Reset;
        }
        if self.blackhole {
            return Kind::Silent;
        }
        if self.endless_head {
            return Kind::EndlessHead;
        }
        if self.endless_body {
            return Kind::EndlessBody;
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
            self.write_price(body);
        }
        if self.body_bytes > 0 {
            let n = self.body_bytes.saturating_sub(body.len() + PAD_OVERHEAD);
            body.extend_from_slice(b",\"pad\":\"");
            body.extend_from_slice(&self.pad[..n]);
            body.push(b'"');
        }
        body.push(b'}');
    }

    /// Appends one price value, drawn if it is a range.
    fn write_price(&self, body: &mut Vec<u8>) {
        match &self.price {
            Price::Bytes(b) => body.extend_from_slice(b),
            Price::Range(lo, hi) => {
                let v = lo + fastrand::f64() * (hi - lo);
                // Writing to a Vec cannot fail.
                let _ = write!(body, "{v}");
            }
        }
    }

    /// Appends the bytes of a `kind` reply to `out` (a whole HTTP response for the JSON and
    /// not-JSON kinds, the start of one for the endless kinds); `body` and `scratch` are scratch
    /// space. With `--chunk-bytes`, `cuts` gets the offsets in `out` where a write of its own begins.
    // The reply's bytes and where its writes cut, the request's id and head, and two scratch
    // buffers: bundling them would only rename the arguments.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn render(
        &self,
        out: &mut Vec<u8>,
        cuts: &mut Vec<usize>,
        body: &mut Vec<u8>,
        id: &[u8],
        meta: &Meta,
        kind: Kind,
        scratch: &mut Scratch,
    ) {
        match kind {
            Kind::Json | Kind::NotJson => {}
            Kind::Garbage => return out.extend_from_slice(GARBAGE),
            // No reply at all: the connection is reset, or left open, instead.
            Kind::Reset | Kind::Silent => return,
            Kind::EndlessHead => return self.render_endless_head(out, id, meta),
            Kind::EndlessBody => return self.render_endless_body(out, body, id, meta),
        }
        body.clear();
        let mut encoding = Encoding::Identity;
        if !self.bodiless {
            if kind == Kind::NotJson {
                body.extend_from_slice(NOT_JSON);
            } else {
                self.render_body(body, id, scratch);
                encoding = self.encodings.pick();
            }
        }
        if encoding != Encoding::Identity {
            let packed = &mut scratch.packed;
            scratch.compressors.compress(encoding, body, packed);
            std::mem::swap(body, packed);
        }
        out.extend_from_slice(&self.status_line);
        if !self.bodiless {
            // Not-JSON replies still claim JSON: the splitter must judge the body itself.
            out.extend_from_slice(b"Content-Type: application/json\r\n");
            if let Some(line) = encoding.header() {
                out.extend_from_slice(line);
            }
            if self.chunked || self.chunk_bytes.is_some() {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            } else {
                let _ = write!(out, "Content-Length: {}\r\n", body.len());
            }
        }
        self.render_id(out, id, meta);
        if self.close || !meta.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if meta.echo_keep_alive {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if self.bodiless || meta.head_only {
            return;
        }
        if let Some(size) = self.chunk_bytes {
            for chunk in body.chunks(size) {
                cuts.push(out.len());
                let _ = write!(out, "{:x}\r\n", chunk.len());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            cuts.push(out.len());
            out.extend_from_slice(b"0\r\n\r\n");
        } else if self.chunked {
            // Two chunks, so the splitter's de-chunking is exercised across a chunk boundary.
            encode_chunked(body, body.len().div_ceil(2).max(1), out);
        } else {
            out.extend_from_slice(body);
        }
    }
}

impl MockConfig {
    /// The status line, then as many header lines as the client takes: the first ones here, the
    /// rest from [`MockConfig::endless_block`].
    fn render_endless_head(&self, out: &mut Vec<u8>, id: &[u8], meta: &Meta) {
        out.extend_from_slice(&self.status_line);
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        self.render_id(out, id, meta);
    }

    /// A chunked 200 head and a first chunk opening the JSON body and its pad string, which
    /// [`MockConfig::endless_block`] then goes on with, chunk after chunk, never closing it.
    fn render_endless_body(&self, out: &mut Vec<u8>, body: &mut Vec<u8>, id: &[u8], meta: &Meta) {
        out.extend_from_slice(&self.status_line);
        out.extend_from_slice(b"Content-Type: application/json\r\n");
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        self.render_id(out, id, meta);
        out.extend_from_slice(b"\r\n");
        body.clear();
        body.extend_from_slice(&self.body_prefix);
        body.extend_from_slice(id);
        body.extend_from_slice(b"\",\"pad\":\"");
        let _ = write!(out, "{:x}\r\n", body.len());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }

    fn render_id(&self, out: &mut Vec<u8>, id: &[u8], meta: &Meta) {
        if meta.has_id {
            out.extend_from_slice(b"X-Req-Id: ");
            out.extend_from_slice(id);
            out.extend_from_slice(b"\r\n");
        }
    }

    /// The JSON body of a reply: OpenRTB-shaped with `--openrtb`, else the flat one.
    fn render_body(&self, body: &mut Vec<u8>, id: &[u8], scratch: &mut Scratch) {
        match &self.openrtb {
            Some(t) => t.render(
                body,
                &mut scratch.adm_at,
                id,
                self.field_key.as_deref(),
                |b| self.write_price(b),
                self.body_bytes,
            ),
            None => self.render_json(body, id),
        }
    }
}

/// The block an endless reply repeats: 64-byte header lines, or one chunk of `x`s.
fn endless_block(head: bool, body: bool) -> Vec<u8> {
    let mut block = Vec::new();
    if head {
        while block.len() < ENDLESS_BLOCK {
            block.extend_from_slice(b"X-Filler: ");
            block.resize(block.len() + FILLER_LINE_PAD, b'x');
            block.extend_from_slice(b"\r\n");
        }
    } else if body {
        let _ = write!(block, "{ENDLESS_BLOCK:x}\r\n");
        block.resize(block.len() + ENDLESS_BLOCK, b'x');
        block.extend_from_slice(b"\r\n");
    }
    block
}

/// What the request head said that the reply needs (the id itself is passed alongside).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Meta {
    /// The client wants the connection kept.
    pub(super) keep_alive: bool,
    /// HTTP/1.0 with `Connection: keep-alive` wants it back (`ab -k`).
    pub(super) echo_keep_alive: bool,
    /// The request carried an `X-Req-Id`, so the reply echoes one.
    pub(super) has_id: bool,
    /// A `HEAD` request: the head of the reply only.
    pub(super) head_only: bool,
}

/// JSON string escaping for the configured name and field.
pub(super) fn json_escape_into(out: &mut Vec<u8>, s: &[u8]) {
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
pub(super) fn sanitize_id_into(out: &mut Vec<u8>, v: &[u8]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_backend::args::test_args;

    #[test]
    fn body_format_and_escaping() {
        let cfg = MockConfig::new(&test_args(&["--name", "a\"b\\c\n", "--price", "2.5"])).unwrap();
        let mut body = Vec::new();
        cfg.render_json(&mut body, b"r1");
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"backend":"a\"b\\c\u000a","req_id":"r1","price":2.5}"#
        );
        let mut id = Vec::new();
        sanitize_id_into(&mut id, b" a\"b\\c\x7fd ");
        assert_eq!(id, b"abcd");
    }

    #[test]
    fn hand_built_args_are_validated() {
        let hand_built = MockArgs {
            broken_share: 3.0,
            ..MockArgs::default()
        };
        assert!(MockConfig::new(&hand_built).is_err());
    }

    #[test]
    fn chunked_reply_is_two_chunks() {
        let cfg = MockConfig::new(&test_args(&["--chunked"])).unwrap();
        let meta = Meta {
            keep_alive: true,
            ..Meta::default()
        };
        let (mut out, mut body) = (Vec::new(), Vec::new());
        let mut scratch = Scratch::default();
        cfg.render(
            &mut out,
            &mut Vec::new(),
            &mut body,
            b"c",
            &meta,
            Kind::Json,
            &mut scratch,
        );
        let text = std::str::from_utf8(&out).unwrap();
        let (head, chunks) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("Transfer-Encoding: chunked"), "{head}");
        let json = r#"{"backend":"mock","req_id":"c","price":1}"#;
        let (a, b) = json.split_at(json.len().div_ceil(2));
        let want = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
        assert_eq!(chunks, want);
    }

    #[test]
    fn chunk_bytes_reply_is_cut_at_every_chunk() {
        let cfg = MockConfig::new(&test_args(&["--chunk-bytes", "16", "--name", "n"])).unwrap();
        let meta = Meta {
            keep_alive: true,
            ..Meta::default()
        };
        let (mut out, mut cuts, mut body) = (b"earlier".to_vec(), Vec::new(), Vec::new());
        cfg.render(
            &mut out,
            &mut cuts,
            &mut body,
            b"c",
            &meta,
            Kind::Json,
            &mut Scratch::default(),
        );
        let text = std::str::from_utf8(&out).unwrap();
        let body_start = text.find("\r\n\r\n").unwrap() + 4;
        // The head, then each chunk, then the last chunk: each a write of its own.
        let pieces: Vec<&str> = cuts
            .iter()
            .zip(cuts.iter().skip(1).chain([&out.len()]))
            .map(|(&a, &b)| &text[a..b])
            .collect();
        assert_eq!(cuts[0], body_start);
        assert_eq!(
            pieces,
            [
                "10\r\n{\"backend\":\"n\",\"\r\n",
                "10\r\nreq_id\":\"c\",\"pri\r\n",
                "6\r\nce\":1}\r\n",
                "0\r\n\r\n"
            ]
        );
    }

    #[test]
    fn endless_blocks() {
        let head = endless_block(true, false);
        assert_eq!(head.len(), ENDLESS_BLOCK);
        assert!(head
            .chunks(64)
            .all(|l| l.starts_with(b"X-Filler: x") && l.ends_with(b"x\r\n")));
        let body = endless_block(false, true);
        assert!(body.starts_with(b"4000\r\nxxx") && body.ends_with(b"x\r\n"));
        assert_eq!(body.len(), 6 + ENDLESS_BLOCK + 2);
        assert!(endless_block(false, false).is_empty());
    }
}

//! Helpers shared by the fuzz targets: where to cut an input, and the strict HTTP/1.1 rules
//! written out again here, independently of the product, so that the targets check the product
//! against them rather than against itself.

/// A small deterministic generator (xorshift64*), seeded from the input: the same input always
/// gets the same cuts, so every finding reproduces from its file alone.
pub struct Rng(u64);

impl Rng {
    /// Seeded with the FNV-1a hash of `input` and a `salt` (one stream per use).
    pub fn new(input: &[u8], salt: u64) -> Self {
        let mut hash = 0xcbf2_9ce4_8422_2325 ^ salt;
        for &byte in input {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(hash | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Offsets to split an input of `len` bytes at, each in `0..=len`: every one when the input is
/// short (below 256 bytes), else a sample of 16 plus the `extra` ones the caller cares about
/// (say, around the end of a head), to keep each run fast.
pub fn split_points(len: usize, rng: &mut Rng, extra: &[usize]) -> Vec<usize> {
    if len < 256 {
        return (0..=len).collect();
    }
    let mut points: Vec<usize> = (0..16).map(|_| rng.below(len + 1)).collect();
    points.extend(extra.iter().copied().filter(|&p| p <= len));
    points.extend([0, 1, len - 1, len]);
    points.sort_unstable();
    points.dedup();
    points
}

/// A few ways to cut `len` bytes into reads: each plan is the increasing offsets at which one
/// read ends (the last read, up to `len`, is implied). Byte-by-byte is always among them; the
/// others mix short and long reads.
pub fn read_plans(len: usize, rng: &mut Rng) -> Vec<Vec<usize>> {
    let mut plans = vec![(1..len).collect::<Vec<_>>()];
    for max_read in [3, 17, 200] {
        let mut plan = Vec::new();
        let mut at = 0;
        loop {
            // Zero-length reads included: a decoder must take an empty read in its stride.
            at += rng.below(max_read + 1);
            if at >= len {
                break;
            }
            plan.push(at);
        }
        plans.push(plan);
    }
    plans
}

/// `tchar` (RFC 9110 §5.6.2): the bytes of a token (a method, a field name).
pub fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether `bytes` is a non-empty token.
pub fn is_token(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|&b| is_tchar(b))
}

/// Whether every line of `head` ends in CRLF and there is no NUL, bare CR or bare LF in it
/// (RFC 9112 §2.2, the splitter's strict reading).
pub fn lines_are_strict(head: &[u8]) -> bool {
    head.iter().enumerate().all(|(i, &b)| match b {
        0 => false,
        b'\r' => head.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && head[i - 1] == b'\r',
        _ => true,
    })
}

/// Whether a field value is only HTAB, SP, visible ASCII and obs-text (RFC 9110 §5.5), with no
/// whitespace at either end (a parser would strip it: a forwarded value must already be bare).
pub fn is_field_value(value: &[u8]) -> bool {
    let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
    value
        .iter()
        .all(|&b| b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80)
        && !value.first().is_some_and(is_ws)
        && !value.last().is_some_and(is_ws)
}

/// Fields that stop at this hop whatever the message says (RFC 9110 §7.6.1, the `Proxy-*` fields
/// and the legacy `Keep-Alive` and `Proxy-Connection`); the product has its own list.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
];

pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| h.as_bytes().eq_ignore_ascii_case(name))
}

/// The options of every `Connection` field of `headers`, lower-cased, empty ones left out.
pub fn connection_options(headers: &[httparse::Header<'_>]) -> Vec<Vec<u8>> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.value.split(|&b| b == b','))
        .map(|option| {
            let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
            let start = option
                .iter()
                .position(|b| !is_ws(b))
                .unwrap_or(option.len());
            let end = option
                .iter()
                .rposition(|b| !is_ws(b))
                .map_or(start, |i| i + 1);
            option[start..end].to_ascii_lowercase()
        })
        .filter(|option| !option.is_empty())
        .collect()
}

/// The lines of `text`, each of which must end in CRLF, without their CRLF (a head's final blank
/// line comes out as an empty line); `None` if any line ends otherwise or a CR stands alone.
pub fn crlf_lines(text: &[u8]) -> Option<Vec<&[u8]>> {
    let mut parts: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if !parts.pop()?.is_empty() {
        return None;
    }
    parts
        .into_iter()
        .map(|line| line.strip_suffix(b"\r").filter(|l| !l.contains(&b'\r')))
        .collect()
}

/// `name: value` split at the first colon, the single space after it dropped; `None` if the line
/// is not `token ": " value`.
pub fn field_line(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, rest) = (&line[..colon], &line[colon + 1..]);
    let value = rest.strip_prefix(b" ")?;
    (is_token(name)).then_some((name, value))
}

//! Selection (SPEC 2): which replies are valid and which is best. The field is an RFC 6901 JSON
//! Pointer to the number in a backend's response body; [`Selection::judge`] is the one place
//! that decides whether a reply counts.
//!
//! Sans-IO and allocation-free per call in steady state: the caller keeps one [`Scratch`] per
//! worker and lends it to every [`Selector::select`]. Parsing uses `simd-json`'s tape (a flat
//! vector of nodes whose containers know their size), so a lookup skips whole sub-documents
//! and no DOM (maps, owned strings) is built.

use flate2::{Decompress, FlushDecompress, Status};
use serde::Deserialize;

use super::exchange::Reply;
use crate::http1::response::Coding;
use simd_json::prelude::ValueAsScalar as _;
use simd_json::{Buffers, Node, Tape};

/// Which number is best (`[select] prefer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// The largest number wins, e.g. the highest bid (SPEC 6 default).
    #[default]
    Max,
    /// The smallest number wins, e.g. the cheapest quote.
    Min,
}

impl Prefer {
    /// Whether `value` beats `than`. Strict: on a tie the earlier arrival stays best (SPEC 2).
    pub fn is_better(self, value: f64, than: f64) -> bool {
        match self {
            Prefer::Max => value > than,
            Prefer::Min => value < than,
        }
    }
}

/// How replies are judged and ranked: the configured `[select]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    /// Where the number is.
    pub selector: Selector,
    /// Which way numbers rank.
    pub prefer: Prefer,
    /// Most bytes a compressed body may decode to (`max_response_bytes`): a zip bomb is an
    /// invalid reply, not an outage.
    pub max_decoded: usize,
}

/// Why a whole reply is not valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// Its status is not 200.
    Status,
    /// Its body has no usable number at the field (not JSON, no number there, not finite).
    Field,
    /// Its number is worse than the floor.
    BelowFloor,
    /// Its `Content-Encoding` is not one the splitter decodes, or does not decode.
    Encoding,
}

impl Selection {
    /// The number of a reply that counts, or why it does not: a reply is valid when its status
    /// is 200, its body (decoded from gzip or deflate when so encoded, within `max_decoded`) is
    /// JSON with a number at the field, the number is finite (NaN and infinities cannot be
    /// ordered, and no real price is infinite), and it is not worse than `floor`.
    pub fn judge(
        &self,
        reply: &impl Reply,
        floor: Option<f64>,
        scratch: &mut Scratch,
    ) -> Result<f64, Invalid> {
        if reply.status() != 200 {
            return Err(Invalid::Status);
        }
        let value = match reply.coding() {
            Coding::Identity => self.selector.select(reply.body(), self.prefer, scratch),
            coding @ (Coding::Gzip | Coding::Deflate) => {
                let mut decoded = std::mem::take(&mut scratch.decoded);
                let inflater = scratch
                    .inflater
                    .get_or_insert_with(|| Decompress::new(false));
                let inflated = inflate(
                    coding,
                    reply.body(),
                    self.max_decoded,
                    inflater,
                    &mut decoded,
                );
                let value =
                    inflated.and_then(|()| self.selector.select(&decoded, self.prefer, scratch));
                scratch.decoded = decoded;
                scratch.trim();
                if inflated.is_none() {
                    return Err(Invalid::Encoding);
                }
                value
            }
            Coding::Other => return Err(Invalid::Encoding),
        };
        let value = value.filter(|v| v.is_finite()).ok_or(Invalid::Field)?;
        if floor.is_some_and(|floor| self.prefer.is_better(floor, value)) {
            return Err(Invalid::BelowFloor);
        }
        Ok(value)
    }
}

/// Decodes a gzip or deflate (zlib, or raw deflate as some servers send it) body into `out`,
/// at most `max` bytes, with the worker's reusable `inflater`; `None` when it is not valid,
/// not whole, or larger.
fn inflate(
    coding: Coding,
    body: &[u8],
    max: usize,
    inflater: &mut Decompress,
    out: &mut Vec<u8>,
) -> Option<()> {
    out.clear();
    match coding {
        // A gzip body may be several members one after the other (RFC 1952 §2.2).
        Coding::Gzip => {
            let mut rest = body;
            loop {
                let data = gzip_member(rest)?;
                let start = out.len();
                let used = inflate_with(inflater, false, data, max, out)?;
                // The member's trailer follows its data: the CRC-32 and the size (mod 2^32)
                // of what it decodes to. A client's gzip decoder checks both, so a reply that
                // fails them would reach it undecodable: it is not valid here either.
                let trailer = data.get(used..used + 8)?;
                let decoded = &out[start..];
                let mut crc = flate2::Crc::new();
                crc.update(decoded);
                if trailer[..4] != crc.sum().to_le_bytes()
                    || trailer[4..] != (decoded.len() as u32).to_le_bytes()
                {
                    return None;
                }
                rest = &data[used + 8..];
                if rest.is_empty() {
                    return Some(());
                }
            }
        }
        _ => inflate_with(inflater, true, body, max, out)
            .or_else(|| {
                out.clear();
                inflate_with(inflater, false, body, max, out)
            })
            .map(drop),
    }
}

/// One whole deflate stream (with a zlib header or raw) from `input`, appended to `out`, in
/// steps that grow `out` up to `max`: the work is linear in what is decoded, and stops at
/// `max`. Returns the input bytes the stream took.
fn inflate_with(
    inflater: &mut Decompress,
    zlib: bool,
    input: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Option<usize> {
    inflater.reset(zlib);
    loop {
        if out.len() == out.capacity() {
            if out.len() > max {
                return None;
            }
            // Double, from 4 KiB, never past one byte over `max` (which says "too large").
            let room = max + 1 - out.len();
            out.reserve(out.len().max(4096).min(room));
        }
        let (read, written) = (inflater.total_in(), inflater.total_out());
        let rest = &input[read as usize..];
        let status = inflater
            .decompress_vec(rest, out, FlushDecompress::Finish)
            .ok()?;
        if out.len() > max {
            return None;
        }
        match status {
            Status::StreamEnd => return Some(inflater.total_in() as usize),
            // No progress with room to write: the stream is cut short.
            _ if inflater.total_in() == read && inflater.total_out() == written => return None,
            _ => {}
        }
    }
}

/// The deflate data of a gzip member, after its header (RFC 1952 §2.3); `None` when the header
/// sets reserved flags or fails its own CRC, as a client's decoder would refuse it.
fn gzip_member(body: &[u8]) -> Option<&[u8]> {
    const FHCRC: u8 = 2;
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    const FCOMMENT: u8 = 16;
    const RESERVED: u8 = 0xe0;
    let [0x1f, 0x8b, 8, flags, ..] = *body else {
        return None;
    };
    if flags & RESERVED != 0 {
        return None;
    }
    let mut at = 10;
    if flags & FEXTRA != 0 {
        let len = usize::from(*body.get(at)?) | usize::from(*body.get(at + 1)?) << 8;
        at += 2 + len;
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            at += body.get(at..)?.iter().position(|&b| b == 0)? + 1;
        }
    }
    if flags & FHCRC != 0 {
        // The low 16 bits of the CRC-32 of the header before it.
        let mut crc = flate2::Crc::new();
        crc.update(body.get(..at)?);
        if *body.get(at..at + 2)? != (crc.sum() as u16).to_le_bytes() {
            return None;
        }
        at += 2;
    }
    body.get(at..)
}

/// Why a configured JSON Pointer is not one (RFC 6901 section 3).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PointerError {
    /// Neither the empty pointer (the whole document) nor a `/`-separated path.
    #[error("a JSON Pointer is empty or starts with `/`, like `/price`")]
    NoLeadingSlash,
    /// More segments than [`MAX_TOKENS`].
    #[error("more than {MAX_TOKENS} segments")]
    TooLong,
    /// A `~` not followed by `0` (for `~`) or `1` (for `/`).
    #[error("`~` at byte {at} must be followed by `0` or `1` (`~0` is `~`, `~1` is `/`)")]
    BadEscape {
        /// Offset of the `~` in the pointer.
        at: usize,
    },
}

/// Most segments in a pointer: far beyond any real reply's nesting (OpenRTB's price is 5 deep),
/// and a bound on the walk's recursion at `*` segments.
pub const MAX_TOKENS: usize = 32;

/// A parsed JSON Pointer, ready to find its number in many bodies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    /// The pointer as configured, for messages.
    pointer: String,
    /// The reference tokens, root first; none for the whole document.
    tokens: Vec<Token>,
}

/// One reference token: an object member name, which may also be an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Token {
    /// Exactly `*`: every element of an array, every member value of an object (SPEC 2).
    wildcard: bool,
    /// The member name, unescaped (`~1` is `/`, `~0` is `~`).
    key: String,
    /// The array index the token spells, when it is one: `0`, or digits without a leading
    /// zero, small enough for a `usize`. `-` (past the end) never resolves to a value.
    index: Option<usize>,
}

impl Token {
    fn new(key: String) -> Self {
        let is_index = key == "0"
            || (!key.is_empty()
                && !key.starts_with('0')
                && key.bytes().all(|c| c.is_ascii_digit()));
        // An index too large for usize cannot exist in any array: no index, never resolves.
        let index = if is_index { key.parse().ok() } else { None };
        Self {
            wildcard: key == "*",
            key,
            index,
        }
    }
}

/// Reusable parse buffers, one per worker, lent to [`Selector::select`].
///
/// `simd-json` parses in place (it unescapes strings where they lie) and reads past the end of
/// its input in SIMD-wide steps, so a body is first copied here with padding. The tape and
/// the parser's work buffers grow with the bodies, and are let go after one past
/// [`Scratch::KEEP_BYTES`] or [`Scratch::KEEP_NODES`].
#[derive(Default)]
pub struct Scratch {
    /// The body being parsed, followed by `simd_json::INPUT_PADDING` bytes.
    input: Vec<u8>,
    /// simd-json's stage 1 and stage 2 work buffers.
    buffers: Buffers,
    /// A compressed body, decoded.
    decoded: Vec<u8>,
    /// The inflater, made once, reset for each compressed body.
    inflater: Option<Decompress>,
    /// The tape's storage between calls; always empty there, hence `'static`.
    tape: Vec<Node<'static>>,
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("input_capacity", &self.input.capacity())
            .field("tape_capacity", &self.tape.capacity())
            .finish_non_exhaustive()
    }
}

impl Selector {
    /// Parses an RFC 6901 JSON Pointer: `""` is the whole document, `/price` a member,
    /// `/seatbid/0/bid/0/price` a path through objects and arrays.
    pub fn parse(pointer: &str) -> Result<Self, PointerError> {
        if pointer.is_empty() {
            return Ok(Self {
                pointer: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = pointer.strip_prefix('/') else {
            return Err(PointerError::NoLeadingSlash);
        };
        let mut tokens = Vec::new();
        let mut offset = 1;
        for raw in rest.split('/') {
            if tokens.len() == MAX_TOKENS {
                return Err(PointerError::TooLong);
            }
            tokens.push(Token::new(unescape(raw, offset)?));
            offset += raw.len() + 1;
        }
        Ok(Self {
            pointer: pointer.to_owned(),
            tokens,
        })
    }

    /// The pointer as configured.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.pointer
    }

    /// The best number (by `prefer`) this pointer resolves to in `body`, as `f64`, or `None`:
    /// not JSON (trailing bytes included), nothing at the pointer, or nothing but non-numbers
    /// there (strings, even `"1.5"`, null, bools, objects, arrays). Without `*` segments the
    /// pointer resolves to one value at most; each `*` fans out over an array's elements or an
    /// object's member values, and non-numbers among the matches are skipped.
    ///
    /// Integers are included (beyond 2^53 they round, beyond `u64` they are read as floats);
    /// the result is always finite: a number beyond `f64`'s range is not ranked (it is no
    /// number, skipped among a `*`'s matches), and does not make the rest of the body invalid.
    ///
    /// When an object has a member twice, the last one counts, as in JavaScript's
    /// `JSON.parse` and serde_json, so the splitter ranks the number a client would read.
    ///
    /// One parse into simd-json's tape, one walk of it: no DOM, no allocation once the scratch
    /// buffers have grown to the largest body seen.
    pub fn select(&self, body: &[u8], prefer: Prefer, scratch: &mut Scratch) -> Option<f64> {
        let found = match self.parse_and_resolve(body, prefer, scratch, false) {
            // A number beyond f64's range is valid JSON that simd-json refuses, wherever it is:
            // parsed again with such numbers read as `null`, a huge number in a bidder's `ext`
            // does not cost it its bid. Rare, so the common case scans the body once.
            Err(Refused::Number) => self
                .parse_and_resolve(body, prefer, scratch, true)
                .ok()
                .flatten(),
            found => found.ok().flatten(),
        };
        scratch.trim();
        found
    }

    /// One parse of `body` (first with its numbers beyond `f64` made `null` when
    /// `huge_as_null`), and the walk of its tape.
    fn parse_and_resolve(
        &self,
        body: &[u8],
        prefer: Prefer,
        scratch: &mut Scratch,
        huge_as_null: bool,
    ) -> Result<Option<f64>, Refused> {
        let Scratch {
            input,
            buffers,
            tape,
            ..
        } = scratch;
        input.clear();
        input.extend_from_slice(body);
        if huge_as_null && !null_huge_numbers(input) {
            return Err(Refused::Other);
        }
        input.resize(body.len() + simd_json::INPUT_PADDING, 0);
        // The stored tape is empty, so it may take the lifetime of this call's input.
        let mut parsed = Tape(std::mem::take(tape)).reset();
        let found = match simd_json::fill_tape_padded(input, body.len(), buffers, &mut parsed) {
            Ok(()) => Ok(resolve(&self.tokens, parsed.as_value(), prefer)),
            Err(e) if matches!(e.error(), simd_json::ErrorType::InvalidNumber) => {
                Err(Refused::Number)
            }
            Err(_) => Err(Refused::Other),
        };
        *tape = parsed.reset().0;
        found
    }
}

/// Why simd-json refused a body.
#[derive(Debug, PartialEq)]
enum Refused {
    /// A number: malformed, or beyond `f64`'s range.
    Number,
    Other,
}

/// Overwrites each number of `json` that is valid JSON but beyond `f64`'s range (`1e400`, an
/// integer of 400 digits) with `null` and spaces, which are valid wherever a number is, so the
/// document is JSON again exactly when it was; such a number matched by the pointer is then not
/// a number, as it cannot be ranked. Strings are stepped over, escapes included. Whether any was
/// found. One pass over the body; a malformed number is left for the parser to refuse.
fn null_huge_numbers(json: &mut [u8]) -> bool {
    let mut found = false;
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            b'"' => {
                i += 1;
                while i < json.len() && json[i] != b'"' {
                    i += if json[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let end = json[i..]
                    .iter()
                    .position(|c| !matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                    .map_or(json.len(), |n| i + n);
                let number = &mut json[i..end];
                if is_json_number(number)
                    && std::str::from_utf8(number)
                        .ok()
                        .and_then(|n| n.parse::<f64>().ok())
                        .is_some_and(f64::is_infinite)
                {
                    // At least `2e308`: room for `null`.
                    number.fill(b' ');
                    number[..4].copy_from_slice(b"null");
                    found = true;
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    found
}

/// RFC 8259's `number`: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn is_json_number(token: &[u8]) -> bool {
    fn digits(s: &[u8]) -> usize {
        s.iter().take_while(|c| c.is_ascii_digit()).count()
    }
    let mut s = token.strip_prefix(b"-").unwrap_or(token);
    match s.first() {
        Some(b'0') => s = &s[1..],
        Some(b'1'..=b'9') => s = &s[digits(s)..],
        _ => return false,
    }
    if let Some(rest) = s.strip_prefix(b".") {
        match digits(rest) {
            0 => return false,
            n => s = &rest[n..],
        }
    }
    if let Some(rest) = s.strip_prefix(b"e").or_else(|| s.strip_prefix(b"E")) {
        let rest = rest
            .strip_prefix(b"+")
            .or_else(|| rest.strip_prefix(b"-"))
            .unwrap_or(rest);
        match digits(rest) {
            0 => return false,
            n => s = &rest[n..],
        }
    }
    s.is_empty()
}

impl Scratch {
    /// Past these the buffers a parse grew are let go: replies that large are rare, and what
    /// one grew must not stay with the worker for good (SPEC 9: memory returns).
    /// 64 KiB: OpenRTB replies with their ad markup stay within it.
    const KEEP_BYTES: usize = 64 * 1024 + simd_json::INPUT_PADDING;
    const KEEP_NODES: usize = 8192;

    fn trim(&mut self) {
        if self.input.capacity() > Self::KEEP_BYTES || self.tape.capacity() > Self::KEEP_NODES {
            self.input = Vec::new();
            self.buffers = Buffers::default();
            self.tape = Vec::new();
        }
        if self.decoded.capacity() > Self::KEEP_BYTES {
            self.decoded = Vec::new();
        }
    }
}

/// The best number `tokens` lead to from `value`. Recursion only at `*` segments, as deep as
/// the pointer has them (bounded by [`MAX_TOKENS`]).
fn resolve(
    tokens: &[Token],
    mut value: simd_json::value::tape::Value<'_, '_>,
    prefer: Prefer,
) -> Option<f64> {
    for (i, token) in tokens.iter().enumerate() {
        if token.wildcard {
            let rest = &tokens[i + 1..];
            let best = |best: Option<f64>, found: Option<f64>| match (best, found) {
                (Some(b), Some(f)) if prefer.is_better(f, b) => Some(f),
                (None, found) => found,
                (best, _) => best,
            };
            return if let Some(object) = value.as_object() {
                object
                    .iter()
                    .map(|(_, v)| resolve(rest, v, prefer))
                    .fold(None, best)
            } else {
                value
                    .as_array()?
                    .iter()
                    .map(|v| resolve(rest, v, prefer))
                    .fold(None, best)
            };
        }
        value = if let Some(object) = value.as_object() {
            object.iter().filter(|(key, _)| *key == token.key).last()?.1
        } else {
            value.as_array()?.get(token.index?)?
        };
    }
    value.cast_f64().filter(|v| v.is_finite())
}

/// Decodes the `~0` and `~1` escapes of one reference token that starts at `offset` in the
/// pointer.
fn unescape(raw: &str, offset: usize) -> Result<String, PointerError> {
    let mut key = String::with_capacity(raw.len());
    let mut chars = raw.char_indices();
    while let Some((i, c)) = chars.next() {
        key.push(match c {
            '~' => match chars.next() {
                Some((_, '0')) => '~',
                Some((_, '1')) => '/',
                _ => return Err(PointerError::BadEscape { at: offset + i }),
            },
            c => c,
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply for `judge`.
    struct Body(u16, Coding, Vec<u8>);

    impl Reply for Body {
        fn status(&self) -> u16 {
            self.0
        }
        fn body(&self) -> &[u8] {
            &self.2
        }
        fn coding(&self) -> Coding {
            self.1
        }
    }

    fn selection(prefer: Prefer, max_decoded: usize) -> Selection {
        Selection {
            selector: Selector::parse("/price").unwrap(),
            prefer,
            max_decoded,
        }
    }

    #[test]
    fn judge_wants_status_200_a_finite_number_and_the_floor() {
        let mut scratch = Scratch::default();
        let s = &mut scratch;
        let judge = |prefer, floor, status, body: &str, s: &mut Scratch| {
            let reply = Body(status, Coding::Identity, body.as_bytes().to_vec());
            selection(prefer, 1 << 20).judge(&reply, floor, s)
        };
        use Invalid::*;
        assert_eq!(
            judge(Prefer::Max, None, 200, r#"{"price":1.5}"#, s),
            Ok(1.5)
        );
        assert_eq!(
            judge(Prefer::Max, None, 201, r#"{"price":1.5}"#, s),
            Err(Status)
        );
        assert_eq!(
            judge(Prefer::Max, None, 500, r#"{"price":1.5}"#, s),
            Err(Status)
        );
        assert_eq!(
            judge(Prefer::Max, None, 200, r#"{"price":"1.5"}"#, s),
            Err(Field)
        );
        assert_eq!(
            judge(Prefer::Max, None, 200, r#"{"price":1e999}"#, s),
            Err(Field)
        );
        assert_eq!(
            judge(Prefer::Max, Some(1.5), 200, r#"{"price":1.5}"#, s),
            Ok(1.5)
        );
        assert_eq!(
            judge(Prefer::Max, Some(1.5), 200, r#"{"price":1.4}"#, s),
            Err(BelowFloor)
        );
        assert_eq!(
            judge(Prefer::Min, Some(1.5), 200, r#"{"price":1.4}"#, s),
            Ok(1.4)
        );
        assert_eq!(
            judge(Prefer::Min, Some(1.5), 200, r#"{"price":1.6}"#, s),
            Err(BelowFloor)
        );
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn compressed_bodies_are_decoded_to_judge() {
        let json = br#"{"price": 4.25, "pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;
        let sel = selection(Prefer::Max, 1 << 20);
        let mut scratch = Scratch::default();
        for (coding, body) in [
            (Coding::Gzip, gzip(json)),
            (Coding::Deflate, zlib(json)),
            (Coding::Deflate, raw_deflate(json)),
        ] {
            // Twice: the scratch's inflater is reused.
            for _ in 0..2 {
                let reply = Body(200, coding, body.clone());
                assert_eq!(
                    sel.judge(&reply, None, &mut scratch),
                    Ok(4.25),
                    "{coding:?}"
                );
            }
        }
        // A gzip header with every optional part.
        let mut fancy = gzip(json);
        fancy[3] = 4 | 8 | 16;
        let mut with_parts = fancy[..10].to_vec();
        with_parts.extend_from_slice(&[2, 0, b'x', b'y']);
        with_parts.extend_from_slice(b"name\0comment\0");
        with_parts.extend_from_slice(&fancy[10..]);
        assert_eq!(
            sel.judge(&Body(200, Coding::Gzip, with_parts), None, &mut scratch),
            Ok(4.25)
        );
    }

    /// A gzip reply judged with `prefer = "max"` and room to decode it.
    fn judge(body: Vec<u8>) -> Result<f64, Invalid> {
        selection(Prefer::Max, 1 << 20).judge(
            &Body(200, Coding::Gzip, body),
            None,
            &mut Scratch::default(),
        )
    }

    #[test]
    fn a_gzip_body_of_several_members_is_decoded_whole() {
        let mut body = gzip(br#"{"price": "#);
        body.extend(gzip(b"7.5"));
        body.extend(gzip(b"}"));
        assert_eq!(judge(body.clone()), Ok(7.5));
        // Garbage after the last member is not a member.
        body.extend_from_slice(b"junk");
        assert_eq!(judge(body), Err(Invalid::Encoding));
    }

    #[test]
    fn a_gzip_member_that_fails_its_checks_is_invalid() {
        // What zlib, and so curl and browsers, refuse: the client could not decode it.
        let json = br#"{"price": 9}"#;
        let good = gzip(json);
        assert_eq!(judge(good.clone()), Ok(9.0));
        let n = good.len();
        let mut bad_crc = good.clone();
        bad_crc[n - 8] ^= 1;
        assert_eq!(judge(bad_crc), Err(Invalid::Encoding));
        let mut bad_size = good.clone();
        bad_size[n - 4] ^= 1;
        assert_eq!(judge(bad_size), Err(Invalid::Encoding));
        let mut reserved = good.clone();
        reserved[3] |= 0x20;
        assert_eq!(judge(reserved), Err(Invalid::Encoding));
        // A header CRC: the low 16 bits of the CRC-32 of the 10 bytes before it.
        let mut crc = flate2::Crc::new();
        let mut head = good[..10].to_vec();
        head[3] |= 2;
        crc.update(&head);
        let mut with_hcrc = head.clone();
        with_hcrc.extend_from_slice(&(crc.sum() as u16).to_le_bytes());
        with_hcrc.extend_from_slice(&good[10..]);
        assert_eq!(judge(with_hcrc.clone()), Ok(9.0));
        with_hcrc[10] ^= 1;
        assert_eq!(judge(with_hcrc), Err(Invalid::Encoding));
    }

    #[test]
    fn bad_or_oversized_encodings_are_invalid_for_their_encoding() {
        let json = br#"{"price": 4.25}"#;
        let mut scratch = Scratch::default();
        let sel = selection(Prefer::Max, 1 << 20);
        let judge = |sel: &Selection, coding, body: Vec<u8>, scratch: &mut Scratch| {
            sel.judge(&Body(200, coding, body), None, scratch)
        };
        // Not compressed at all, cut short, or another coding.
        assert_eq!(
            judge(&sel, Coding::Gzip, json.to_vec(), &mut scratch),
            Err(Invalid::Encoding)
        );
        let cut = gzip(json);
        assert_eq!(
            judge(
                &sel,
                Coding::Gzip,
                cut[..cut.len() / 2].to_vec(),
                &mut scratch
            ),
            Err(Invalid::Encoding)
        );
        assert_eq!(
            judge(
                &sel,
                Coding::Deflate,
                b"\x78\x9c garbage".to_vec(),
                &mut scratch
            ),
            Err(Invalid::Encoding)
        );
        assert_eq!(
            judge(&sel, Coding::Other, json.to_vec(), &mut scratch),
            Err(Invalid::Encoding)
        );
        // A zip bomb: 10 MB of zeros in a few KB, against a 1 MiB limit.
        let bomb = gzip(&vec![b' '; 10 << 20]);
        assert!(bomb.len() < 64 << 10);
        assert_eq!(
            judge(&sel, Coding::Gzip, bomb, &mut scratch),
            Err(Invalid::Encoding)
        );
        // Exactly at the limit decodes; one byte more does not.
        let padded = |n: usize| {
            let mut v = json.to_vec();
            v.resize(n, b' ');
            v
        };
        let at = selection(Prefer::Max, 4096);
        assert_eq!(
            judge(&at, Coding::Gzip, gzip(&padded(4096)), &mut scratch),
            Ok(4.25)
        );
        assert_eq!(
            judge(&at, Coding::Gzip, gzip(&padded(4097)), &mut scratch),
            Err(Invalid::Encoding)
        );
    }

    #[test]
    fn prefer_deserializes_from_lowercase_names() {
        #[derive(Deserialize)]
        struct T {
            prefer: Prefer,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.prefer);
        assert_eq!(parse("prefer = \"max\"").unwrap(), Prefer::Max);
        assert_eq!(parse("prefer = \"min\"").unwrap(), Prefer::Min);
        assert!(parse("prefer = \"Max\"").is_err());
        assert_eq!(Prefer::default(), Prefer::Max);
    }

    /// The number `pointer` finds in `body`.
    fn sel(pointer: &str, body: &str) -> Option<f64> {
        let selector = Selector::parse(pointer).expect("valid pointer");
        selector.select(body.as_bytes(), Prefer::Max, &mut Scratch::default())
    }

    /// The reference tokens of `pointer`, as (key, index).
    fn tokens(pointer: &str) -> Vec<(String, Option<usize>)> {
        let selector = Selector::parse(pointer).expect("valid pointer");
        selector
            .tokens
            .into_iter()
            .map(|t| (t.key, t.index))
            .collect()
    }

    #[test]
    fn parse_splits_and_unescapes_tokens() {
        /// The expected (key, index) of each token.
        type Tokens = &'static [(&'static str, Option<usize>)];
        let cases: &[(&str, Tokens)] = &[
            ("", &[]),
            ("/", &[("", None)]),
            ("//", &[("", None), ("", None)]),
            ("/price", &[("price", None)]),
            (
                "/seatbid/0/bid/10/price",
                &[
                    ("seatbid", None),
                    ("0", Some(0)),
                    ("bid", None),
                    ("10", Some(10)),
                    ("price", None),
                ],
            ),
            ("/a~1b", &[("a/b", None)]),
            ("/m~0n", &[("m~n", None)]),
            // `~01` is `~` then `1`, never `/`: escapes decode left to right, once.
            ("/~01", &[("~1", None)]),
            ("/~10", &[("/0", None)]),
            ("/ ", &[(" ", None)]),
            (
                "/\u{e9}t\u{e9}/\u{1f600}",
                &[("\u{e9}t\u{e9}", None), ("\u{1f600}", None)],
            ),
            ("/01", &[("01", None)]),
            ("/00", &[("00", None)]),
            ("/-", &[("-", None)]),
            ("/-1", &[("-1", None)]),
            ("/+1", &[("+1", None)]),
            ("/1e3", &[("1e3", None)]),
            (
                "/99999999999999999999999",
                &[("99999999999999999999999", None)],
            ),
        ];
        for (pointer, expected) in cases {
            let expected: Vec<(String, Option<usize>)> =
                expected.iter().map(|&(k, i)| (k.to_owned(), i)).collect();
            assert_eq!(tokens(pointer), expected, "{pointer:?}");
        }
    }

    #[test]
    fn parse_rejects_malformed_pointers() {
        let cases = [
            ("price", PointerError::NoLeadingSlash),
            (" /price", PointerError::NoLeadingSlash),
            ("#/price", PointerError::NoLeadingSlash),
            ("/a~", PointerError::BadEscape { at: 2 }),
            ("/a~2", PointerError::BadEscape { at: 2 }),
            ("/ok/~x", PointerError::BadEscape { at: 4 }),
            ("/\u{e9}/~", PointerError::BadEscape { at: 4 }),
        ];
        for (pointer, expected) in cases {
            assert_eq!(Selector::parse(pointer), Err(expected), "{pointer:?}");
        }
    }

    #[test]
    fn pointer_errors_explain_themselves() {
        assert_eq!(
            PointerError::BadEscape { at: 3 }.to_string(),
            "`~` at byte 3 must be followed by `0` or `1` (`~0` is `~`, `~1` is `/`)"
        );
        assert_eq!(
            PointerError::NoLeadingSlash.to_string(),
            "a JSON Pointer is empty or starts with `/`, like `/price`"
        );
    }

    #[test]
    fn select_finds_numbers() {
        let rtb = r#"{"id":"r1","seatbid":[{"bid":[{"id":"b0","price":1.5},{"price":2.25}]}],"cur":"USD"}"#;
        let cases: &[(&str, &str, Option<f64>)] = &[
            ("/price", r#"{"price": 1.5}"#, Some(1.5)),
            ("/price", r#"{"price": 3}"#, Some(3.0)),
            ("/price", r#"{"price": -3}"#, Some(-3.0)),
            ("/price", r#"{"price": -0.25}"#, Some(-0.25)),
            ("/price", r#"{"price": 0}"#, Some(0.0)),
            ("/price", r#"{"price": 1e3}"#, Some(1000.0)),
            ("/price", r#"{"price": 1E-2}"#, Some(0.01)),
            ("/price", r#"{"price": 2.5e+2}"#, Some(250.0)),
            (
                "/price",
                r#"{"price": 1.7976931348623157e308}"#,
                Some(f64::MAX),
            ),
            (
                "/price",
                r#"{"price": 18446744073709551615}"#,
                Some(u64::MAX as f64),
            ),
            (
                "/price",
                r#"{"price": -9223372036854775808}"#,
                Some(i64::MIN as f64),
            ),
            (
                "/price",
                r#"{"price": 9007199254740993}"#,
                Some(9007199254740992.0),
            ),
            ("/seatbid/0/bid/0/price", rtb, Some(1.5)),
            ("/seatbid/0/bid/1/price", rtb, Some(2.25)),
            ("/a/b/c/d", r#"{"a":{"b":{"c":{"d":42}}}}"#, Some(42.0)),
            (
                "/a/b",
                r#"{"x":{"b":1},"a":{"y":[1,{"b":2}],"b":3}}"#,
                Some(3.0),
            ),
            ("/1", "[10, 11, 12]", Some(11.0)),
            ("/0/0/0", "[[[7]]]", Some(7.0)),
            ("/2", r#"[{"a":[1,2,{"b":3}]}, [4,[5]], 6]"#, Some(6.0)),
            ("", "12.5", Some(12.5)),
            ("", " \n\t 7 \r\n", Some(7.0)),
            ("/price", " {\n  \"price\" :\t4 \n} \n", Some(4.0)),
            // Object members named like indices are plain names.
            ("/0", r#"{"0": 5}"#, Some(5.0)),
            ("/01", r#"{"01": 5}"#, Some(5.0)),
            ("/-", r#"{"-": 5}"#, Some(5.0)),
            (
                "/seatbid/0/bid/0/price",
                r#"{"seatbid": {"0": {"bid": [{"price": 1}]}}}"#,
                Some(1.0),
            ),
            ("/", r#"{"": 5}"#, Some(5.0)),
            ("/ ", r#"{" ": 5}"#, Some(5.0)),
            // Escapes: in the pointer (`~0`, `~1`) and in the JSON key (`\u`, `\/`).
            ("/a~1b", r#"{"a/b": 1, "a": {"b": 2}}"#, Some(1.0)),
            ("/m~0n", r#"{"m~n": 8}"#, Some(8.0)),
            ("/a~1b", r#"{"a\/b": 9}"#, Some(9.0)),
            ("/quo\"te", r#"{"quo\"te": 9}"#, Some(9.0)),
            ("/back\\slash", r#"{"back\\slash": 9}"#, Some(9.0)),
            ("/price", r#"{"\u0070rice": 6}"#, Some(6.0)),
            // Unicode keys, raw or escaped, including a surrogate pair.
            ("/pr\u{e9}is", "{\"pr\u{e9}is\": 2}", Some(2.0)),
            ("/pr\u{e9}is", r#"{"pr\u00e9is": 2}"#, Some(2.0)),
            ("/\u{1f4b0}", r#"{"\ud83d\udcb0": 3}"#, Some(3.0)),
            // Duplicate members: the last wins, at every level.
            ("/price", r#"{"price": 1, "price": 2}"#, Some(2.0)),
            ("/price", r#"{"price": 1, "price": "x"}"#, None),
            ("/price", r#"{"price": "x", "price": 3}"#, Some(3.0)),
            ("/a/b", r#"{"a": {"b": 1}, "a": {"c": 2}}"#, None),
            ("/a/b", r#"{"a": {"c": 2}, "a": {"b": 1}}"#, Some(1.0)),
        ];
        for &(pointer, body, expected) in cases {
            assert_eq!(sel(pointer, body), expected, "{pointer:?} in {body}");
        }
    }

    #[test]
    fn select_refuses_everything_but_a_number() {
        let cases: &[(&str, &str)] = &[
            // Not a number at the pointer.
            ("/price", r#"{"price": "1.5"}"#),
            ("/price", r#"{"price": "1e3"}"#),
            ("/price", r#"{"price": null}"#),
            ("/price", r#"{"price": true}"#),
            ("/price", r#"{"price": false}"#),
            ("/price", r#"{"price": {}}"#),
            ("/price", r#"{"price": {"value": 1}}"#),
            ("/price", r#"{"price": [1]}"#),
            ("/price", r#"{"price": []}"#),
            ("", r#"{"price": 1}"#),
            // Nothing at the pointer.
            ("/price", r#"{}"#),
            ("/price", r#"{"Price": 1}"#),
            ("/price", r#"{"price ": 1}"#),
            ("/price", r#"{"nested": {"price": 1}}"#),
            ("/price", "[1]"),
            ("/price", "1"),
            ("/price/x", r#"{"price": 1}"#),
            ("/0", "[]"),
            ("/3", "[1, 2, 3]"),
            ("/-", "[1, 2, 3]"),
            ("/01", "[1, 2, 3]"),
            ("/00", "[1, 2, 3]"),
            ("/+1", "[1, 2, 3]"),
            ("/1.0", "[1, 2, 3]"),
            ("/-1", "[1, 2, 3]"),
            ("/ 1", "[1, 2, 3]"),
            ("/99999999999999999999999", "[1, 2, 3]"),
            // Not JSON, or not only JSON.
            ("/price", ""),
            ("/price", "   "),
            ("", ""),
            ("/price", "price=1"),
            ("/price", r#"{"price": 1"#),
            ("/price", r#"{"price": 1}}"#),
            ("/price", r#"{"price": 1} x"#),
            ("/price", r#"{"price": 1}{"price": 2}"#),
            ("/price", r#"{"price": 1,}"#),
            ("/price", r#"{price: 1}"#),
            ("/price", r#"{'price': 1}"#),
            ("/price", r#"{"price": 01}"#),
            ("/price", r#"{"price": .5}"#),
            ("/price", r#"{"price": +1}"#),
            ("/price", r#"{"price": 1.}"#),
            ("/price", r#"{"price": NaN}"#),
            ("/price", r#"{"price": Infinity}"#),
            ("/price", r#"{"price": 0x10}"#),
            ("", "1 2"),
            ("/price", "{\"price\": 1}\0"),
        ];
        for &(pointer, body) in cases {
            assert_eq!(sel(pointer, body), None, "{pointer:?} in {body:?}");
        }
    }

    #[test]
    fn select_refuses_invalid_utf8_and_stray_bytes() {
        let selector = Selector::parse("/price").unwrap();
        let mut scratch = Scratch::default();
        for body in [
            &b"{\"price\": 1, \"x\": \"\xff\"}"[..],
            b"\xef\xbb\xbf{\"price\": 1}",
            b"{\"price\": 1}\xff",
        ] {
            assert_eq!(
                selector.select(body, Prefer::Max, &mut scratch),
                None,
                "{body:?}"
            );
        }
    }

    #[test]
    fn select_of_huge_and_tiny_numbers() {
        // Beyond u64, integers are read as floats (simd-json's `big-int-as-float`), so a
        // valid JSON number is never refused for its size; beyond f64 it is refused, never
        // infinite; below f64's precision it underflows to zero.
        let big = format!(r#"{{"price": 1{}}}"#, "0".repeat(30));
        let cases: &[(&str, Option<f64>)] = &[
            (&big, Some(1e30)),
            (
                r#"{"price": 18446744073709551616}"#,
                Some(18446744073709551616.0),
            ),
            (r#"{"price": -100000000000000000000}"#, Some(-1e20)),
            (r#"{"price": 1e400}"#, None),
            (r#"{"price": -1e400}"#, None),
            (r#"{"price": 1e-400}"#, Some(0.0)),
        ];
        for &(body, expected) in cases {
            assert_eq!(sel("/price", body), expected, "{body}");
        }
    }

    #[test]
    fn a_number_beyond_f64_elsewhere_leaves_the_body_valid() {
        let huge_int = format!("1{}", "0".repeat(400));
        let cases: &[(&str, String, Option<f64>)] = &[
            (
                "/price",
                r#"{"ext":{"n":1e400},"price":5}"#.into(),
                Some(5.0),
            ),
            (
                "/price",
                r#"{"ext":[-1E+400, 2e308],"price":5}"#.into(),
                Some(5.0),
            ),
            (
                "/price",
                format!(r#"{{"ext":{huge_int},"price":5}}"#),
                Some(5.0),
            ),
            // In a string, an escaped quote before it: still the string's.
            (
                "/price",
                r#"{"s":"\" 1e400","n":1e400,"price":5}"#.into(),
                Some(5.0),
            ),
            // Matched: not a number; among a wildcard's matches, skipped.
            ("/price", r#"{"price":1e400}"#.into(), None),
            ("/a/*", r#"{"a":[1e400,4,-1e400]}"#.into(), Some(4.0)),
            ("", "1e400".into(), None),
            // What is not JSON stays refused: malformed numbers, and huge ones in bad places.
            ("/price", r#"{"ext":01,"price":5}"#.into(), None),
            ("/price", r#"{"ext":1e,"price":5}"#.into(), None),
            ("/price", r#"{"ext":1e400 1,"price":5}"#.into(), None),
            ("/price", r#"{1e400:1,"price":5}"#.into(), None),
            ("/price", r#"{"ext":1e400,"price":5"#.into(), None),
            ("/price", r#"{"ext":"1e400,"price":5}"#.into(), None),
        ];
        for (pointer, body, expected) in cases {
            assert_eq!(
                best(pointer, Prefer::Max, body),
                *expected,
                "{pointer} in {body}"
            );
        }
    }

    #[test]
    fn json_numbers_by_the_grammar() {
        for good in [
            "0",
            "-0",
            "1",
            "10",
            "1.5",
            "-0.25e-7",
            "1E400",
            "2e+308",
            "123456789",
        ] {
            assert!(is_json_number(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "1e+", "+1", "1.2.3", "1e4e4", "--1", "0x1",
        ] {
            assert!(!is_json_number(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn scratch_is_reused_across_bodies_of_any_size() {
        let selector = Selector::parse("/seatbid/0/bid/0/price").unwrap();
        let mut scratch = Scratch::default();
        let big = format!(
            r#"{{"pad":"{}","seatbid":[{{"bid":[{{"price":9.5}}]}}]}}"#,
            "x".repeat(4096)
        );
        let small = r#"{"seatbid":[{"bid":[{"price":1}]}]}"#;
        assert_eq!(
            selector.select(big.as_bytes(), Prefer::Max, &mut scratch),
            Some(9.5)
        );
        assert_eq!(
            selector.select(b"not json", Prefer::Max, &mut scratch),
            None
        );
        // A short body after a long one: leftovers of the long one must not be read.
        assert_eq!(
            selector.select(small.as_bytes(), Prefer::Max, &mut scratch),
            Some(1.0)
        );
        assert_eq!(
            selector.select(br#"{"seatbid":[{"bid":[{"pr"#, Prefer::Max, &mut scratch),
            None
        );
        let (input, tape) = (scratch.input.capacity(), scratch.tape.capacity());
        assert_eq!(
            selector.select(small.as_bytes(), Prefer::Max, &mut scratch),
            Some(1.0)
        );
        assert_eq!(
            (scratch.input.capacity(), scratch.tape.capacity()),
            (input, tape),
            "no growth in steady state"
        );
        assert!(scratch.tape.is_empty());
    }

    #[test]
    fn select_does_not_depend_on_a_particular_scratch() {
        let selector = Selector::parse("/a").unwrap();
        let mut one = Scratch::default();
        let mut other = Scratch::default();
        assert_eq!(
            selector.select(br#"{"a": 1}"#, Prefer::Max, &mut one),
            Some(1.0)
        );
        assert_eq!(
            selector.select(br#"{"a": 2}"#, Prefer::Max, &mut other),
            Some(2.0)
        );
        assert_eq!(
            selector.select(br#"{"a": 3}"#, Prefer::Max, &mut one),
            Some(3.0)
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_a_crash() {
        let depth = 10_000;
        let body = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(sel("/0", &body), None);
        let pointer = "/0".repeat(20);
        let body = format!("{}1{}", "[".repeat(20), "]".repeat(20));
        assert_eq!(sel(&pointer, &body), Some(1.0));
    }

    /// An OpenRTB 2.x bid response: three seats, bids with and without prices, a price as a
    /// string, a nested `ext` with a number of its own named price.
    const OPENRTB: &str = r#"{
        "id": "req-1", "bidid": "b", "cur": "USD",
        "seatbid": [
            {"seat": "s1", "bid": [
                {"id": "1", "impid": "1", "price": 1.25, "adm": "<a/>", "ext": {"price": 99}},
                {"id": "2", "impid": "2", "price": 2.5}
            ]},
            {"seat": "s2", "bid": [
                {"id": "3", "impid": "1", "price": "7.0"},
                {"id": "4", "impid": "1"}
            ]},
            {"seat": "s3", "bid": [
                {"id": "5", "impid": "1", "price": 0.75, "dealid": "d"}
            ]}
        ]
    }"#;

    fn best(pointer: &str, prefer: Prefer, body: &str) -> Option<f64> {
        let selector = Selector::parse(pointer).expect("valid pointer");
        selector.select(body.as_bytes(), prefer, &mut Scratch::default())
    }

    #[test]
    fn wildcards_take_the_best_of_every_match() {
        let w = "/seatbid/*/bid/*/price";
        assert_eq!(
            best(w, Prefer::Max, OPENRTB),
            Some(2.5),
            "strings and ext skipped"
        );
        assert_eq!(best(w, Prefer::Min, OPENRTB), Some(0.75));
        assert_eq!(
            best("/seatbid/0/bid/*/price", Prefer::Max, OPENRTB),
            Some(2.5)
        );
        assert_eq!(
            best("/seatbid/*/bid/0/price", Prefer::Min, OPENRTB),
            Some(0.75)
        );
        assert_eq!(
            best("/seatbid/*/bid/*/ext/price", Prefer::Max, OPENRTB),
            Some(99.0)
        );
        // No bid has a number there: invalid.
        assert_eq!(best("/seatbid/1/bid/*/price", Prefer::Max, OPENRTB), None);
        assert_eq!(best(w, Prefer::Max, r#"{"seatbid": []}"#), None);
        assert_eq!(best(w, Prefer::Max, r#"{"seatbid": [{"bid": []}]}"#), None);
        assert_eq!(best(w, Prefer::Max, r#"{"nbr": 2}"#), None);
        assert_eq!(
            best(
                w,
                Prefer::Max,
                r#"{"seatbid": {"a": {"bid": [{"price": 3}]}}}"#
            ),
            Some(3.0),
            "object members too"
        );
        // A `*` at the end ranks the numbers of an array, skipping the rest.
        assert_eq!(
            best("/p/*", Prefer::Max, r#"{"p": [1, "9", null, 4, {"x": 8}]}"#),
            Some(4.0)
        );
        assert_eq!(
            best("/*", Prefer::Min, r#"{"a": 3, "b": -1, "c": "x"}"#),
            Some(-1.0)
        );
        // Not JSON at all is invalid whatever the pointer.
        assert_eq!(best(w, Prefer::Max, r#"{"seatbid": [}"#), None);
    }

    #[test]
    fn a_literal_star_key_is_only_reached_without_the_wildcard_meaning() {
        // `*` means "every member": a member named `*` is one of them.
        assert_eq!(best("/*", Prefer::Max, r#"{"*": 1, "b": 2}"#), Some(2.0));
    }

    #[test]
    fn too_many_segments_are_refused() {
        let ok = "/a".repeat(MAX_TOKENS);
        assert!(Selector::parse(&ok).is_ok());
        let long = "/a".repeat(MAX_TOKENS + 1);
        assert_eq!(Selector::parse(&long), Err(PointerError::TooLong));
    }
}

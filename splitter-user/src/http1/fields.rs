//! Header-field rules shared by requests and responses: message framing (`Content-Length`,
//! `Transfer-Encoding`, RFC 9112 §6), connection options (RFC 9110 §7.6.1), and the line-ending
//! discipline of a head (RFC 9112 §2.2).
//!
//! Works on heads `httparse` has already split into fields; allocates nothing.

use httparse::Header;

/// Framing headers that disagree, or that the splitter cannot honour. Two parsers could frame such
/// a message two ways (request smuggling), so it is refused, never repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// A `Content-Length` element that is not `1*DIGIT`, overflows, or differs from another one
    /// (RFC 9112 §6.3 rule 5). Identical duplicates, `5, 5` included, count as one.
    #[error("invalid Content-Length")]
    InvalidContentLength,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3 rule 3 says to let the latter
    /// win; a front proxy may have chosen the former, so the message is refused instead).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    /// A `Transfer-Encoding` other than exactly `chunked`, or any in an HTTP/1.0 message
    /// (RFC 9112 §6.1).
    #[error("unsupported Transfer-Encoding")]
    UnsupportedTransferEncoding,
    /// More `Connection` options than [`MAX_CONNECTION_OPTIONS`]: every field would have to be
    /// checked against each, work a peer could grow with the square of the head.
    #[error("more than {MAX_CONNECTION_OPTIONS} Connection options")]
    TooManyConnectionOptions,
}

/// Most `Connection` options (non-empty list elements) in one message. Real ones carry one to
/// three (`keep-alive`, `close`, `Upgrade`, a field to drop).
pub const MAX_CONNECTION_OPTIONS: usize = 32;

/// What the header fields of one message say about its framing and its connection.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fields {
    /// The `Content-Length`, when present (every occurrence agreed).
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked`, the only transfer coding accepted.
    pub chunked: bool,
    /// `close` among the `Connection` options.
    pub close: bool,
    /// `keep-alive` among the `Connection` options (how an HTTP/1.0 peer asks to persist).
    pub keep_alive: bool,
    /// Some `Connection` option other than `keep-alive`, which may name a field to drop: only
    /// then are [`ConnectionOptions`] worth gathering.
    pub names_fields: bool,
    /// How many `Host` fields there are; a request needs exactly one in HTTP/1.1.
    pub hosts: usize,
    /// The index of the (last) `Host` field in the headers.
    pub host: Option<usize>,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
}

impl Fields {
    /// Reads the framing and connection fields of `headers` in one pass.
    pub(super) fn scan(headers: &[Header<'_>], http10: bool) -> Result<Self, FramingError> {
        let mut fields = Fields::default();
        let mut options = 0;
        for (i, header) in headers.iter().enumerate() {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                for element in list_elements(header.value) {
                    let length = parse_length(element)?;
                    if fields.content_length.is_some_and(|seen| seen != length) {
                        return Err(FramingError::InvalidContentLength);
                    }
                    fields.content_length = Some(length);
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                // Only one coding is accepted, exactly `chunked`, once. `gzip, chunked` is valid
                // HTTP, but the body would reach backends still gzipped under a `Content-Length`
                // that hides it, and the splitter will not decompress on their behalf.
                for coding in list_elements(header.value) {
                    if fields.chunked || !coding.eq_ignore_ascii_case(b"chunked") {
                        return Err(FramingError::UnsupportedTransferEncoding);
                    }
                    fields.chunked = true;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                for option in list_elements(header.value).filter(|o| !o.is_empty()) {
                    options += 1;
                    if options > MAX_CONNECTION_OPTIONS {
                        return Err(FramingError::TooManyConnectionOptions);
                    }
                    let keep_alive = option.eq_ignore_ascii_case(b"keep-alive");
                    fields.keep_alive |= keep_alive;
                    fields.close |= option.eq_ignore_ascii_case(b"close");
                    fields.names_fields |= !keep_alive;
                }
            } else if name.eq_ignore_ascii_case("host") {
                fields.hosts += 1;
                fields.host = Some(i);
            } else if name.eq_ignore_ascii_case("expect") {
                fields.expect_continue |= header.value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        if fields.chunked && fields.content_length.is_some() {
            return Err(FramingError::ContentLengthWithTransferEncoding);
        }
        // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
        if fields.chunked && http10 {
            return Err(FramingError::UnsupportedTransferEncoding);
        }
        Ok(fields)
    }
}

/// The options of a message's `Connection` fields, gathered once: a field they name is
/// hop-by-hop for that message (RFC 9110 §7.6.1). At most [`MAX_CONNECTION_OPTIONS`] (what
/// [`Fields::scan`] accepts), so checking every field costs at most that many comparisons each.
pub(super) struct ConnectionOptions<'h> {
    options: [&'h [u8]; MAX_CONNECTION_OPTIONS],
    len: usize,
}

impl<'h> ConnectionOptions<'h> {
    pub(super) fn of(headers: &[Header<'h>]) -> Self {
        let mut this = ConnectionOptions {
            options: [&[]; MAX_CONNECTION_OPTIONS],
            len: 0,
        };
        let all = headers
            .iter()
            .filter(|header| header.name.eq_ignore_ascii_case("connection"))
            .flat_map(|header| list_elements(header.value))
            .filter(|option| !option.is_empty());
        for option in all.take(MAX_CONNECTION_OPTIONS) {
            this.options[this.len] = option;
            this.len += 1;
        }
        this
    }

    /// Whether they name the field `name`.
    pub(super) fn name(&self, name: &str) -> bool {
        self.options[..self.len]
            .iter()
            .any(|option| option.eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// Whether `head` is free of NUL, of CR not followed by LF, and of LF not preceded by CR.
///
/// `httparse` rejects NUL and bare CR itself but takes a bare LF as a line end (RFC 9112 §2.2
/// allows that leniency); a front proxy may not, so we refuse all three, whatever `httparse` does.
pub(super) fn line_endings_are_strict(head: &[u8]) -> bool {
    // Jump from one NUL, CR or LF to the next (memchr searches a vector at a time): each must be
    // the CR of a CRLF pair, whose LF is then stepped over.
    let mut at = 0;
    while let Some(found) = memchr::memchr3(0, b'\r', b'\n', &head[at..]) {
        let i = at + found;
        if head[i] != b'\r' || head.get(i + 1) != Some(&b'\n') {
            return false;
        }
        at = i + 2;
    }
    true
}

/// The elements of a comma-separated field value (RFC 9110 §5.6.1), optional whitespace trimmed.
/// Empty elements are yielded too: each caller decides whether they are an error.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// `bytes` without leading and trailing `OWS` (SP and HTAB, RFC 9110 §5.6.3).
fn trim_ows(bytes: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// A `Content-Length` element: `1*DIGIT`, no sign, no overflow (RFC 9110 §8.6).
fn parse_length(element: &[u8]) -> Result<u64, FramingError> {
    if element.is_empty() {
        return Err(FramingError::InvalidContentLength);
    }
    element.iter().try_fold(0u64, |length, &digit| {
        if !digit.is_ascii_digit() {
            return Err(FramingError::InvalidContentLength);
        }
        length
            .checked_mul(10)
            .and_then(|length| length.checked_add(u64::from(digit - b'0')))
            .ok_or(FramingError::InvalidContentLength)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(name: &'a str, value: &'a str) -> Header<'a> {
        Header {
            name,
            value: value.as_bytes(),
        }
    }

    fn scan(headers: &[(&str, &str)]) -> Result<Fields, FramingError> {
        let headers: Vec<Header<'_>> = headers.iter().map(|&(n, v)| header(n, v)).collect();
        Fields::scan(&headers, false)
    }

    #[test]
    fn content_length_accepts_digits_and_identical_duplicates() {
        let cases: &[(&[(&str, &str)], u64)] = &[
            (&[("Content-Length", "0")], 0),
            (&[("content-length", "42")], 42),
            (&[("Content-Length", "007")], 7),
            (&[("Content-Length", "5, 5")], 5),
            (&[("Content-Length", "5,5")], 5),
            (&[("Content-Length", "5"), ("CONTENT-LENGTH", "5")], 5),
            (&[("Content-Length", "18446744073709551615")], u64::MAX),
        ];
        for &(headers, expected) in cases {
            assert_eq!(
                scan(headers).unwrap().content_length,
                Some(expected),
                "{headers:?}"
            );
        }
    }

    #[test]
    fn content_length_rejects_anything_else() {
        for value in [
            "",
            " ",
            "-5",
            "+5",
            "5a",
            "0x5",
            "5.0",
            "5 5",
            "5,",
            ",5",
            "5, 6",
            "1e3",
            "18446744073709551616",
            "99999999999999999999999",
        ] {
            assert_eq!(
                scan(&[("Content-Length", value)]),
                Err(FramingError::InvalidContentLength),
                "{value:?}"
            );
        }
        assert_eq!(
            scan(&[("Content-Length", "5"), ("Content-Length", "6")]),
            Err(FramingError::InvalidContentLength)
        );
    }

    #[test]
    fn transfer_encoding_accepts_exactly_chunked() {
        for value in ["chunked", "Chunked", "CHUNKED"] {
            assert!(
                scan(&[("Transfer-Encoding", value)]).unwrap().chunked,
                "{value}"
            );
        }
    }

    #[test]
    fn transfer_encoding_rejects_anything_else() {
        for value in [
            "",
            "gzip",
            "identity",
            "gzip, chunked",
            "chunked, gzip",
            "chunked, chunked",
            "chunked,",
            ",chunked",
            "chunked;q=1",
            "chunkedx",
            "x-custom",
        ] {
            assert_eq!(
                scan(&[("Transfer-Encoding", value)]),
                Err(FramingError::UnsupportedTransferEncoding),
                "{value:?}"
            );
        }
        assert_eq!(
            scan(&[
                ("Transfer-Encoding", "chunked"),
                ("Transfer-Encoding", "chunked")
            ]),
            Err(FramingError::UnsupportedTransferEncoding)
        );
        let http10 = [header("Transfer-Encoding", "chunked")];
        assert_eq!(
            Fields::scan(&http10, true),
            Err(FramingError::UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn content_length_with_transfer_encoding_is_rejected() {
        assert_eq!(
            scan(&[("Content-Length", "5"), ("Transfer-Encoding", "chunked")]),
            Err(FramingError::ContentLengthWithTransferEncoding)
        );
        assert_eq!(
            scan(&[("Transfer-Encoding", "chunked"), ("Content-Length", "5")]),
            Err(FramingError::ContentLengthWithTransferEncoding)
        );
    }

    #[test]
    fn connection_options_host_and_expect_are_read() {
        let fields = scan(&[
            ("Connection", "Keep-Alive, X-Foo"),
            ("connection", "CLOSE"),
            ("Host", "a"),
            ("host", "b"),
            ("Expect", "100-Continue"),
        ])
        .unwrap();
        assert!(fields.close && fields.keep_alive && fields.expect_continue);
        assert!(fields.names_fields);
        assert_eq!(fields.hosts, 2);
        assert!(!scan(&[("Connection", "keep-alive,")]).unwrap().names_fields);
        assert!(scan(&[("Connection", "close")]).unwrap().names_fields);
        assert!(
            !scan(&[("Expect", "100-continue, x")])
                .unwrap()
                .expect_continue
        );
    }

    #[test]
    fn connection_names_hop_by_hop_fields() {
        let headers = [
            header("Connection", "keep-alive, X-Foo ,,x-bar"),
            header("X-Foo", "1"),
        ];
        let named = ConnectionOptions::of(&headers);
        assert!(named.name("x-foo"));
        assert!(named.name("X-Bar"));
        assert!(named.name("Keep-Alive"));
        assert!(!named.name("X-Baz"));
        assert!(!named.name("Connection"));
    }

    #[test]
    fn connection_options_are_bounded() {
        // Empty elements are free (RFC 9110 §5.6.1 says to accept them); options are counted.
        let commas = format!("a{}", ",".repeat(10_000));
        assert!(scan(&[("Connection", &commas)]).unwrap().names_fields);
        let at_limit = vec!["x"; MAX_CONNECTION_OPTIONS].join(",");
        assert!(scan(&[("Connection", &at_limit)]).is_ok());
        assert_eq!(
            scan(&[("Connection", &at_limit), ("Connection", "y")]),
            Err(FramingError::TooManyConnectionOptions)
        );
    }

    #[test]
    fn line_endings_must_be_crlf_without_nul() {
        let cases: &[(&[u8], bool)] = &[
            (b"", true),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
            (b"a\r\n", true),
            (b"a\n", false),
            (b"\n", false),
            (b"a\r", false),
            (b"a\rb\n", false),
            (b"a\r\r\n", false),
            (b"a\r\n\n", false),
            (b"a\0b\r\n", false),
        ];
        for &(head, expected) in cases {
            assert_eq!(line_endings_are_strict(head), expected, "{head:?}");
        }
    }

    /// The rule, one byte at a time.
    fn strict_by_bytes(head: &[u8]) -> bool {
        head.iter().enumerate().all(|(i, &b)| match b {
            0 => false,
            b'\r' => head.get(i + 1) == Some(&b'\n'),
            b'\n' => i > 0 && head[i - 1] == b'\r',
            _ => true,
        })
    }

    #[test]
    fn line_endings_agree_with_the_bytewise_rule_on_every_short_head() {
        // Every string of up to 8 bytes over {a, CR, LF, NUL}, then the same patterns placed past
        // a vector's width, where memchr's search is no longer a scalar loop.
        const ALPHABET: [u8; 4] = [b'a', b'\r', b'\n', 0];
        let long_prefix = b"x".repeat(70);
        for len in 0..=8u32 {
            for mut n in 0..4usize.pow(len) {
                let mut head = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    head.push(ALPHABET[n % 4]);
                    n /= 4;
                }
                assert_eq!(
                    line_endings_are_strict(&head),
                    strict_by_bytes(&head),
                    "{head:?}"
                );
                let mut long = long_prefix.clone();
                long.extend_from_slice(&head);
                long.extend_from_slice(&long_prefix);
                assert_eq!(
                    line_endings_are_strict(&long),
                    strict_by_bytes(&long),
                    "{long:?}"
                );
            }
        }
    }
}

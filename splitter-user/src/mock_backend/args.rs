//! The command line of `splitter mock-backend`: its flags, their defaults, and the parsing of the
//! ranges and shares they take. The black-box tests and `cargo xtask bench` drive the mock through
//! these flags, so their names and meanings are an interface.

use std::net::SocketAddr;

/// Longest delay a flag may ask for (a day): keeps `Instant + delay` far from overflow.
pub(super) const MAX_DELAY_MS: u64 = 86_400_000;
/// Largest `--chunk-bytes`.
pub(super) const MAX_CHUNK_BYTES: u32 = 1 << 20;

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
    /// Send the body with `Transfer-Encoding: chunked`, N bytes per chunk, each chunk (and the
    /// head, and the last chunk) in a write of its own: a reply trickled in tiny pieces.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=MAX_CHUNK_BYTES as i64))]
    pub chunk_bytes: Option<u32>,
    /// Read requests and never answer them; connections stay open until the client closes them.
    #[arg(long)]
    pub blackhole: bool,
    /// Answer each request with a status line and then header lines without end, until the
    /// client stops reading or closes.
    #[arg(long)]
    pub endless_head: bool,
    /// Answer each request with a chunked 200 whose JSON body never ends, until the client
    /// stops reading or closes.
    #[arg(long)]
    pub endless_body: bool,
    /// Write only the first N bytes of each reply, then reset the connection (SO_LINGER 0).
    // u32 like --chunk-bytes: keeps `MockArgs` small enough to sit in the CLI's command enum.
    #[arg(long, value_name = "N")]
    pub reset_after_bytes: Option<u32>,
    /// Close the connection right after each reply without announcing it (no
    /// `Connection: close`): a keep-alive connection the client expects to reuse.
    #[arg(long)]
    pub close_silently: bool,

    // OpenRTB replies and compression (see `openrtb.rs` and `encoding.rs`).
    /// Reply with an OpenRTB 2.x BidResponse of SEATS seatbids of BIDS bids each (e.g. 3x2),
    /// each bid priced by --price/--price-range/--price-raw under --field; the request's
    /// X-Req-Id header is echoed as "id" and "ext":{"req_id"} (the body is not read); --body-bytes
    /// pads the bids' "adm".
    #[arg(long, value_name = "SEATSxBIDS", value_parser = super::openrtb::parse_shape)]
    pub openrtb: Option<super::openrtb::Shape>,
    /// Share (0..1) of replies sent with `Content-Encoding: gzip`, whatever the request accepts.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub gzip: f64,
    /// Share (0..1) of replies sent with `Content-Encoding: deflate` (zlib format); with --gzip,
    /// at most 1 in all.
    #[arg(long, value_name = "SHARE", default_value_t = 0.0, value_parser = parse_share)]
    pub deflate: f64,
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
            chunk_bytes: None,
            blackhole: false,
            endless_head: false,
            endless_body: false,
            reset_after_bytes: None,
            close_silently: false,
            openrtb: None,
            gzip: 0.0,
            deflate: 0.0,
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

/// The flags `argv` (without the program name) parse to, as on the command line.
#[cfg(test)]
pub(super) fn parse_flags<'a>(
    argv: impl IntoIterator<Item = &'a str>,
) -> Result<MockArgs, clap::Error> {
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockArgs,
    }
    Cli::try_parse_from(std::iter::once("mock").chain(argv)).map(|cli| cli.args)
}

/// `--listen 127.0.0.1:0` and the flags in `extra`, which must parse.
#[cfg(test)]
pub(super) fn test_args(extra: &[&str]) -> MockArgs {
    parse_flags(
        ["--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(extra.iter().copied()),
    )
    .expect("valid flags")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(test_args(&[]), MockArgs::default());
        assert!(parse_flags([]).is_err(), "--listen is required");
    }

    #[test]
    fn args_all_flags() {
        let a = test_args(&[
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
            "--chunk-bytes",
            "1",
            "--blackhole",
            "--endless-head",
            "--endless-body",
            "--reset-after-bytes",
            "30",
            "--close-silently",
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
            chunk_bytes: Some(1),
            blackhole: true,
            endless_head: true,
            endless_body: true,
            reset_after_bytes: Some(30),
            close_silently: true,
            ..MockArgs::default()
        };
        assert_eq!(a, want);
        for bad in [
            &["--status", "99"][..],
            &["--status", "600"],
            &["--threads", "0"],
            &["--late-share", "2"],
            &["--delay-ms", "3..1"],
            &["--chunk-bytes", "0"],
            &["--reset-after-bytes", "-1"],
        ] {
            let argv = ["--listen", "127.0.0.1:0"]
                .into_iter()
                .chain(bad.iter().copied());
            assert!(parse_flags(argv).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn args_openrtb_and_compression() {
        let a = test_args(&["--openrtb", "3x2", "--gzip", "0.5", "--deflate", "0.25"]);
        let shape = crate::mock_backend::openrtb::Shape { seats: 3, bids: 2 };
        assert_eq!(a.openrtb, Some(shape));
        assert_eq!((a.gzip, a.deflate), (0.5, 0.25));
        for bad in [
            &["--openrtb", "3"][..],
            &["--openrtb", "0x2"],
            &["--gzip", "1.1"],
            &["--deflate", "-0.5"],
        ] {
            let argv = ["--listen", "127.0.0.1:0"]
                .into_iter()
                .chain(bad.iter().copied());
            assert!(parse_flags(argv).is_err(), "{bad:?} accepted");
        }
    }
}

//! `--openrtb SEATSxBIDS`: replies shaped as OpenRTB 2.x BidResponses, with SEATS `seatbid`
//! entries of BIDS bids each, every bid with its own price, for `field =
//! "/seatbid/*/bid/*/price"`:
//!
//! ```json
//! {"id":"<X-Req-Id>","seatbid":[{"seat":"s1","bid":[{"id":"1-1","impid":"1","price":1.83,
//!   "adid":"ad-1-1","adm":"<div class='ad'>...","adomain":["a.example"],"cid":"c1",
//!   "crid":"cr-1-1","w":300,"h":250,"ext":{"dsp":"a"}}, ...]}, ...],
//!  "cur":"USD","ext":{"backend":"a","req_id":"<X-Req-Id>"}}
//! ```
//!
//! The request id is echoed as the response's `id` (as OpenRTB asks) and as `ext.req_id`, the
//! `"req_id":"<id>"` that `bench/post-2k-check.lua` looks for in every body. `--body-bytes`
//! padding goes into the bids' `adm` (ad markup), shared out evenly; it is text like ad markup
//! (tags, URLs, ids), so compressed replies shrink about as real ones do, not to a few bytes.

use std::io::Write as _;

use super::reply::json_escape_into;

/// Most seats, and most bids per seat.
pub const MAX_PER_LEVEL: u16 = 64;

/// `SEATSxBIDS` from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// `seatbid` entries.
    pub seats: u16,
    /// Bids in each seat.
    pub bids: u16,
}

/// Parses `SEATSxBIDS`, e.g. `3x2`.
pub(super) fn parse_shape(s: &str) -> Result<Shape, String> {
    let bad = || format!("`{s}`: expected SEATSxBIDS, e.g. 3x2, each 1 to {MAX_PER_LEVEL}");
    let (a, b) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
    let one = |v: &str| match v.trim().parse::<u16>() {
        Ok(n) if (1..=MAX_PER_LEVEL).contains(&n) => Ok(n),
        _ => Err(bad()),
    };
    Ok(Shape {
        seats: one(a)?,
        bids: one(b)?,
    })
}

/// The constant parts of a BidResponse, preformatted once.
#[derive(Debug, Clone)]
pub(super) struct Template {
    /// Per bid, in order: what comes before its price key (the seat's opening for a seat's
    /// first bid, a comma otherwise), and what follows its `adm` text.
    bids: Vec<(Vec<u8>, Vec<u8>)>,
    /// `]}],"cur":"USD","ext":{"backend":"NAME","req_id":"`
    end: Vec<u8>,
    /// Ad-markup-like text; each reply's `adm`s are consecutive slices of it.
    pad: Vec<u8>,
}

impl Template {
    /// The template for `shape`, backend `name`, and pads of up to `pad_bytes` in total.
    pub(super) fn new(shape: Shape, name: &str, pad_bytes: usize) -> Template {
        let mut esc = Vec::new();
        json_escape_into(&mut esc, name.as_bytes());
        let name = String::from_utf8_lossy(&esc).into_owned();
        let mut bids = Vec::with_capacity(usize::from(shape.seats) * usize::from(shape.bids));
        for s in 1..=shape.seats {
            for b in 1..=shape.bids {
                let mut head = Vec::new();
                if b == 1 {
                    if s > 1 {
                        head.extend_from_slice(b"]},");
                    }
                    let _ = write!(head, r#"{{"seat":"s{s}","bid":["#);
                } else {
                    head.push(b',');
                }
                let _ = write!(head, r#"{{"id":"{s}-{b}","impid":"1""#);
                let tail = format!(
                    r#"","adomain":["{name}.example"],"cid":"c{s}","crid":"cr-{s}-{b}","w":300,"h":250,"ext":{{"dsp":"{name}"}}}}"#
                );
                bids.push((head, tail.into_bytes()));
            }
        }
        let end = format!(r#"]}}],"cur":"USD","ext":{{"backend":"{name}","req_id":""#);
        Template {
            bids,
            end: end.into_bytes(),
            pad: markup(pad_bytes),
        }
    }

    /// Number of bids in a reply.
    #[cfg(test)]
    pub(super) fn bid_count(&self) -> usize {
        self.bids.len()
    }

    /// Writes a BidResponse for request `id` into `body` (cleared first): each bid's price is
    /// `price_key` (`,"price":`) and what `price` writes, or nothing without a key; the body is
    /// padded through the `adm`s to `body_bytes` when shorter. `adm_at` is scratch.
    pub(super) fn render(
        &self,
        body: &mut Vec<u8>,
        adm_at: &mut Vec<usize>,
        id: &[u8],
        price_key: Option<&[u8]>,
        mut price: impl FnMut(&mut Vec<u8>),
        body_bytes: usize,
    ) {
        body.clear();
        adm_at.clear();
        body.extend_from_slice(br#"{"id":""#);
        body.extend_from_slice(id);
        body.extend_from_slice(br#"","seatbid":["#);
        for (head, tail) in &self.bids {
            body.extend_from_slice(head);
            if let Some(key) = price_key {
                body.extend_from_slice(key);
                price(body);
            }
            let _ = write!(body, r#","adid":"ad-{}","adm":""#, adm_at.len() + 1);
            adm_at.push(body.len());
            body.extend_from_slice(tail);
        }
        body.extend_from_slice(&self.end);
        body.extend_from_slice(id);
        body.extend_from_slice(br#""}}"#);
        if body_bytes > body.len() {
            self.insert_pads(body, adm_at, body_bytes - body.len());
        }
    }

    /// Inserts `total` bytes of pad at the offsets `at` (ascending) of `body`, shared out evenly
    /// in consecutive slices of the pad: one pass from the back, moving each segment once.
    fn insert_pads(&self, body: &mut Vec<u8>, at: &[usize], total: usize) {
        let total = total.min(self.pad.len());
        let (k, old_len) = (at.len(), body.len());
        if k == 0 || total == 0 {
            return;
        }
        let (each, extra) = (total / k, total % k);
        body.resize(old_len + total, 0);
        let (mut src_end, mut dst_end) = (old_len, old_len + total);
        for (i, &off) in at.iter().enumerate().rev() {
            let seg = src_end - off;
            body.copy_within(off..src_end, dst_end - seg);
            dst_end -= seg;
            let share = each + usize::from(i < extra);
            let start = i * each + i.min(extra);
            body[dst_end - share..dst_end].copy_from_slice(&self.pad[start..start + share]);
            dst_end -= share;
            src_end = off;
        }
        debug_assert_eq!(src_end, dst_end);
    }
}

/// `n` bytes of text that looks and compresses like ad markup: tags, attributes, URLs with
/// random ids. Safe in a JSON string as is (no `"`, `\` or control characters); the same for a
/// given `n`, so replies are reproducible.
fn markup(n: usize) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "<div class='ad-slot'>",
        "<a href='https://click.example/c?crid=",
        "' target='_blank'>",
        "<img src='https://cdn.example/creative/",
        ".jpg' width='300' height='250' alt='ad'>",
        "</a>",
        "</div>",
        "<script>(function(){var i=new Image();i.src='https://track.example/imp?id=",
        "';})();</script>",
        "<span style='font:12px sans-serif;color:#666'>Sponsored</span>",
        "<p>Spring sale: up to 40% off selected items, free delivery over 50.</p>",
        "<noscript><img src='https://track.example/pixel.gif?e=",
        "' width='1' height='1'></noscript>",
    ];
    let mut rng = fastrand::Rng::with_seed(0x0123_4567_89ab_cdef);
    let mut out = Vec::with_capacity(n + 128);
    out.extend_from_slice(WORDS[0].as_bytes());
    while out.len() < n {
        let w = WORDS[rng.usize(..WORDS.len())];
        out.extend_from_slice(w.as_bytes());
        if w.ends_with('=') || w.ends_with('/') {
            for _ in 0..12 {
                out.push(b"0123456789abcdef"[rng.usize(..16)]);
            }
        }
    }
    out.truncate(n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply with prices 1.5, 2.5, ... in bid order.
    fn render_bytes(t: &Template, id: &[u8], body_bytes: usize) -> Vec<u8> {
        let (mut body, mut at) = (Vec::new(), Vec::new());
        let mut n = 0;
        t.render(
            &mut body,
            &mut at,
            id,
            Some(b",\"price\":"),
            |b| {
                n += 1;
                let _ = write!(b, "{n}.5");
            },
            body_bytes,
        );
        body
    }

    fn render(t: &Template, id: &[u8], body_bytes: usize) -> serde_json::Value {
        let body = render_bytes(t, id, body_bytes);
        serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&body));
        })
    }

    #[test]
    fn shapes_parse() {
        assert_eq!(parse_shape("3x2"), Ok(Shape { seats: 3, bids: 2 }));
        assert_eq!(parse_shape("1X1"), Ok(Shape { seats: 1, bids: 1 }));
        assert_eq!(
            parse_shape("64x64"),
            Ok(Shape {
                seats: 64,
                bids: 64
            })
        );
        for bad in ["", "3", "0x2", "3x0", "65x1", "ax2", "3x2x1", "-1x2", "3*2"] {
            assert!(parse_shape(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bid_response_shape() {
        let t = Template::new(Shape { seats: 3, bids: 2 }, "dsp\"1", 0);
        assert_eq!(t.bid_count(), 6);
        let v = render(&t, b"r-7", 0);
        assert_eq!(v["id"], "r-7");
        assert_eq!(v["cur"], "USD");
        assert_eq!(v["ext"]["req_id"], "r-7");
        assert_eq!(v["ext"]["backend"], "dsp\"1");
        let seats = v["seatbid"].as_array().unwrap();
        assert_eq!(seats.len(), 3);
        let mut prices = Vec::new();
        for (s, seat) in seats.iter().enumerate() {
            assert_eq!(seat["seat"], format!("s{}", s + 1));
            let bids = seat["bid"].as_array().unwrap();
            assert_eq!(bids.len(), 2);
            for (b, bid) in bids.iter().enumerate() {
                assert_eq!(bid["id"], format!("{}-{}", s + 1, b + 1));
                assert_eq!(bid["impid"], "1");
                assert_eq!(bid["adm"], "");
                assert_eq!(bid["crid"], format!("cr-{}-{}", s + 1, b + 1));
                prices.push(bid["price"].as_f64().unwrap());
            }
        }
        assert_eq!(prices, [1.5, 2.5, 3.5, 4.5, 5.5, 6.5]);
    }

    #[test]
    fn padding_goes_into_the_adms() {
        let t = Template::new(Shape { seats: 2, bids: 2 }, "a", 4096);
        let natural = render_bytes(&t, b"p", 0).len();
        for size in [natural + 1, natural + 3, 2048, 4096] {
            assert_eq!(render_bytes(&t, b"p", size).len(), size);
            let v = render(&t, b"p", size);
            let adms: Vec<&str> = v["seatbid"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["bid"].as_array().unwrap())
                .map(|b| b["adm"].as_str().unwrap())
                .collect();
            let total: usize = adms.iter().map(|a| a.len()).sum();
            assert_eq!(total, size - natural);
            let (min, max) = (
                adms.iter().map(|a| a.len()).min().unwrap(),
                adms.iter().map(|a| a.len()).max().unwrap(),
            );
            assert!(max - min <= 1, "even shares: {min}..{max}");
            assert_eq!(
                adms.concat().as_bytes(),
                &t.pad[..total],
                "consecutive slices"
            );
        }
        // Asking for less than the natural size adds nothing.
        let v = render(&t, b"p", 10);
        assert_eq!(v["seatbid"][0]["bid"][0]["adm"], "");
    }

    #[test]
    fn markup_is_json_safe_and_compressible() {
        let m = markup(20_000);
        assert_eq!(m.len(), 20_000);
        assert!(m
            .iter()
            .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'));
        assert_eq!(markup(20_000), m, "deterministic");
        let mut c = super::super::encoding::Compressors::default();
        let mut z = Vec::new();
        c.compress(super::super::encoding::Encoding::Gzip, &m, &mut z);
        let ratio = m.len() as f64 / z.len() as f64;
        assert!((2.0..20.0).contains(&ratio), "compresses {ratio:.1}x");
    }
}

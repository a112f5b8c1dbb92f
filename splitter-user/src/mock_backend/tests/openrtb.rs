//! Socket-level tests of `--openrtb`, `--gzip` and `--deflate`: what the splitter's wildcard
//! selection and its decoding of compressed replies will be fed.

use std::io::Read as _;

use tokio::io::AsyncWriteExt as _;

use super::{bounded, connect, post, read_resp, start, Resp};

/// The reply's body as sent, decoded per its `Content-Encoding`.
fn decoded(r: &Resp) -> Vec<u8> {
    let mut out = Vec::new();
    match r.header("content-encoding") {
        None => return r.body.clone(),
        Some("gzip") => flate2::read::GzDecoder::new(&r.body[..]).read_to_end(&mut out),
        Some("deflate") => flate2::read::ZlibDecoder::new(&r.body[..]).read_to_end(&mut out),
        Some(other) => panic!("unexpected Content-Encoding {other}"),
    }
    .expect("a valid compressed body");
    out
}

/// `n` requests with ids `{prefix}{i}` on one keep-alive connection, pipelined.
async fn replies(extra: &[&str], prefix: &str, n: usize) -> Vec<Resp> {
    let addr = start(extra).await;
    let mut s = connect(addr).await;
    let all: String = (0..n)
        .map(|i| post(&format!("{prefix}{i}"), "{}"))
        .collect();
    s.write_all(all.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for i in 0..n {
        let r = read_resp(&mut s, &mut buf).await;
        assert_eq!(r.header("x-req-id"), Some(format!("{prefix}{i}").as_str()));
        out.push(r);
    }
    out
}

/// Every price of a BidResponse, seat by seat, bid by bid.
fn prices(v: &serde_json::Value) -> Vec<f64> {
    v["seatbid"]
        .as_array()
        .expect("a seatbid array")
        .iter()
        .flat_map(|s| s["bid"].as_array().expect("a bid array"))
        .map(|b| b["price"].as_f64().expect("a numeric price"))
        .collect()
}

#[tokio::test]
async fn openrtb_bid_response_shape() {
    bounded(async {
        let flags = [
            "--openrtb",
            "3x2",
            "--price-range",
            "1.0..2.0",
            "--name",
            "dsp",
        ];
        let rs = replies(&flags, "o", 3).await;
        for (i, r) in rs.iter().enumerate() {
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-encoding"), None);
            let id = format!("o{i}");
            // What bench/post-2k-check.lua looks for.
            assert!(
                r.text().contains(&format!(r#""req_id":"{id}""#)),
                "{}",
                r.text()
            );
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["id"], id.as_str());
            assert_eq!(v["cur"], "USD");
            assert_eq!(v["ext"]["backend"], "dsp");
            assert_eq!(v["seatbid"].as_array().unwrap().len(), 3);
            let p = prices(&v);
            assert_eq!(p.len(), 6);
            assert!(p.iter().all(|p| (1.0..=2.0).contains(p)), "{p:?}");
            assert!(
                p.windows(2).any(|w| w[0] != w[1]),
                "each bid its own price: {p:?}"
            );
        }

        // A fixed price is every bid's; --field renames the key, --omit-field drops it.
        let r = &replies(&["--openrtb", "2x4", "--price", "0.75"], "f", 1).await[0];
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(prices(&v), [0.75; 8]);
        let r = &replies(&["--openrtb", "1x2", "--field", "bidprice"], "k", 1).await[0];
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["seatbid"][0]["bid"][1]["bidprice"], 1.0);
        let r = &replies(&["--openrtb", "1x2", "--omit-field"], "m", 1).await[0];
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["seatbid"][0]["bid"][0].get("price").is_none());
    })
    .await;
}

#[tokio::test]
async fn openrtb_padded_to_size_in_adm() {
    bounded(async {
        let flags = [
            "--openrtb",
            "3x2",
            "--body-bytes",
            "2048",
            "--price-range",
            "1..9",
        ];
        for r in replies(&flags, "p", 4).await {
            assert_eq!(r.body.len(), 2048);
            assert_eq!(r.header("content-length"), Some("2048"));
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            let adm = v["seatbid"][2]["bid"][1]["adm"].as_str().unwrap();
            assert!(adm.len() > 100, "{adm}");
        }
    })
    .await;
}

#[tokio::test]
async fn gzip_share_one_compresses_every_reply() {
    bounded(async {
        let flags = ["--openrtb", "3x2", "--body-bytes", "2048", "--gzip", "1"];
        for (i, r) in replies(&flags, "g", 5).await.iter().enumerate() {
            assert_eq!(r.header("content-encoding"), Some("gzip"));
            assert_eq!(r.header("content-type"), Some("application/json"));
            assert_eq!(&r.body[..2], [0x1f, 0x8b]);
            assert!(r.body.len() < 1024, "compressed: {} bytes", r.body.len());
            let json = decoded(r);
            assert_eq!(json.len(), 2048);
            let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(v["id"], format!("g{i}").as_str());
            assert_eq!(prices(&v).len(), 6);
        }
        // The flat body compresses too, and a chunked one is chunked after compression.
        let flags = ["--gzip", "1", "--chunked"];
        let r = &replies(&flags, "c", 1).await[0];
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        assert_eq!(decoded(r), br#"{"backend":"mock","req_id":"c0","price":1}"#);
    })
    .await;
}

#[tokio::test]
async fn deflate_share_one_is_zlib() {
    bounded(async {
        let flags = ["--openrtb", "2x2", "--deflate", "1.0"];
        for r in replies(&flags, "d", 3).await {
            assert_eq!(r.header("content-encoding"), Some("deflate"));
            // RFC 1950: CM 8, and the header's check bits.
            assert_eq!(r.body[0] & 0x0f, 8);
            assert_eq!(u16::from_be_bytes([r.body[0], r.body[1]]) % 31, 0);
            let v: serde_json::Value = serde_json::from_slice(&decoded(&r)).unwrap();
            assert_eq!(prices(&v).len(), 4);
        }
    })
    .await;
}

#[tokio::test]
async fn compression_shares_zero_and_mixed() {
    bounded(async {
        let flags = ["--openrtb", "1x1", "--gzip", "0", "--deflate", "0"];
        for r in replies(&flags, "z", 20).await {
            assert_eq!(r.header("content-encoding"), None);
            assert!(r.body.starts_with(b"{\"id\":"));
        }
        let flags = ["--gzip", "0.4", "--deflate", "0.4"];
        let (mut gzip, mut deflate, mut plain) = (0, 0, 0);
        for (i, r) in replies(&flags, "x", 200).await.iter().enumerate() {
            match r.header("content-encoding") {
                Some("gzip") => gzip += 1,
                Some("deflate") => deflate += 1,
                _ => plain += 1,
            }
            let want = format!(r#"{{"backend":"mock","req_id":"x{i}","price":1}}"#);
            assert_eq!(decoded(r), want.as_bytes());
        }
        assert!(
            gzip > 0 && deflate > 0 && plain > 0,
            "{gzip} gzip, {deflate} deflate, {plain} plain"
        );
    })
    .await;
}

#[tokio::test]
async fn shares_over_one_are_refused() {
    let args = super::test_args(&["--gzip", "0.7", "--deflate", "0.5"]);
    assert!(super::MockConfig::new(&args).is_err());
    let cli = super::super::args::parse_flags(["--listen", "127.0.0.1:0", "--gzip", "1.5"]);
    assert!(cli.is_err());
}

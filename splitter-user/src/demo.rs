//! `splitter demo`: the embedded default configuration with two in-process mock backends on
//! loopback, the splitter in front, a short built-in load, and a summary of what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::{Config, DEFAULT_CONFIG};
use crate::control::Server;
use crate::http1::body::Framing;
use crate::http1::response::parse_response;
use crate::mock_backend::{self, MockArgs, MockConfig};
use crate::scatter::select::Selector;

/// Options of `splitter demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Seconds of load.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive client connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// OpenRTB traffic: BidRequests in, BidResponses of 3 seats x 2 bids back (half of them
    /// gzip-compressed), the best of all bids selected with `/seatbid/*/bid/*/price`.
    #[arg(long)]
    pub openrtb: bool,
}

/// Lets the demo build mock backends from the same flags an operator would type.
#[derive(Parser)]
struct MockCommand {
    #[command(flatten)]
    args: MockArgs,
}

/// The two demo backends: both price at random; `b` is sometimes late for the 80 ms route and
/// `a` sometimes broken, so the summary shows wins on both sides, timeouts and a few 204s.
const BACKENDS: [(&str, &[&str]); 2] = [
    (
        "a",
        &[
            "--price-range",
            "1.0..2.0",
            "--delay-ms",
            "0..4",
            "--broken-share",
            "0.03",
        ],
    ),
    (
        "b",
        &[
            "--price-range",
            "1.0..2.0",
            "--delay-ms",
            "0..4",
            "--late-share",
            "0.05",
            "--late-delay-ms",
            "120",
        ],
    ),
];

/// What `--openrtb` adds to both backends' flags: OpenRTB replies of 3 seats x 2 bids with ad
/// markup, about 2 KB, half of them gzip-compressed.
const OPENRTB_FLAGS: &[&str] = &["--openrtb", "3x2", "--body-bytes", "2048", "--gzip", "0.5"];
/// The selection field of `--openrtb`: the best price of every bid of every seat.
const OPENRTB_FIELD: &str = "/seatbid/*/bid/*/price";

/// An OpenRTB 2.x BidRequest of about 2 KB: one banner impression with a deal, site, device,
/// user with consent and an extended id, supply chain, regulations.
const OPENRTB_REQUEST: &str = concat!(
    r#"{"id":"demo-auction","imp":[{"id":"1","banner":{"w":300,"h":250,"format":[{"w":300,"h":250},"#,
    r#"{"w":320,"h":50},{"w":728,"h":90}],"pos":1,"api":[3,5]},"tagid":"homepage-mpu-1","bidfloor":0.5,"#,
    r#""bidfloorcur":"USD","secure":1,"instl":0,"pmp":{"private_auction":0,"deals":[{"id":"deal-spring-01","#,
    r#""bidfloor":2.5,"at":1,"wseat":["s1","s2"]}]},"ext":{"gpid":"/1234/homepage/mpu-1","data":"#,
    r#"{"pbadslot":"/1234/homepage/mpu-1"}}}],"site":{"id":"site-1029","name":"Example News","#,
    r#""domain":"news.example","cat":["IAB12"],"sectioncat":["IAB12-1"],"#,
    r#""page":"https://news.example/world/2026/11/26/markets-rally-as-rates-hold.html","#,
    r#""ref":"https://search.example/?q=markets","publisher":{"id":"pub-88","name":"Example Media","#,
    r#""domain":"media.example"},"content":{"language":"en","keywords":"markets,rates,economy"},"mobile":0},"#,
    r#""device":{"ua":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "#,
    r#"Chrome/131.0.0.0 Safari/537.36","sua":{"browsers":[{"brand":"Chromium","version":["131","0","0","0"]},"#,
    r#"{"brand":"Google Chrome","version":["131","0","0","0"]}],"platform":{"brand":"Windows","#,
    r#""version":["10","0","0"]},"mobile":0,"source":2},"ip":"203.0.113.42","geo":{"lat":51.5072,"#,
    r#""lon":-0.1276,"country":"GBR","region":"ENG","city":"London","zip":"EC1A","type":2,"utcoffset":0},"#,
    r#""dnt":0,"lmt":0,"devicetype":2,"make":"","model":"","os":"Windows","osv":"10","js":1,"language":"en","#,
    r#""connectiontype":2,"w":1920,"h":1080},"user":{"id":"u-5f0c2a9e7b3d4c11","buyeruid":"b-91ad7e22c4f0","#,
    r#""yob":1984,"gender":"O","consent":"CPzHq4APzHq4AAHABBENC-CgAP_AAH_AAAqIHBtf_X_fb39j-_59__t0eY1f9_7_v-"#,
    r#"0zjhfdt-8N2f_X_L8X42M7vF36pq4KuR4Eu3LBIQdlHOHcTUmw6okVrzPsbk2cr7NKJ7PEmnMbO2dYGH9_n93TuZKY7_____7z_v-"#,
    r#"v_v","ext":{"eids":[{"source":"id5-sync.com","uids":[{"id":"ID5*x9bMNpU3Zl1Ww1vQ3sR7kE0a2cTq8yH4","#,
    r#""atype":1}]}]}},"at":1,"tmax":80,"cur":["USD"],"bcat":["IAB25","IAB26"],"badv":["competitor.example"],"#,
    r#""source":{"fd":1,"tid":"t-4a8e1c6f-2b7d-4e93-a5f1-0c3b9d8e7f21","schain":{"complete":1,"ver":"1.0","#,
    r#""nodes":[{"asi":"media.example","sid":"pub-88","hp":1}]}},"regs":{"coppa":0,"gdpr":1,"#,
    r#""us_privacy":"1---"},"ext":{"prebid":{"channel":{"name":"web","version":"9.0"}}}}"#,
);

/// A 2 KB JSON body, like the bid requests the splitter is made for.
fn request_body() -> String {
    let pad = "x".repeat(1900);
    format!(r#"{{"id":"demo","imp":[{{"id":"1","bidfloor":0.5}}],"pad":"{pad}"}}"#)
}

/// Runs the demo and prints its summary.
pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    // Load, backends and splitter share this process: its descriptor table too (see `fd_table`).
    if let Err(e) = crate::fd_table::reserve() {
        tracing::warn!("descriptor table not reserved: {e}");
    }
    let backends_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut config = Config::parse(DEFAULT_CONFIG, "<embedded default>".as_ref())
        .context("the embedded default configuration")?;
    let extra: &[&str] = if args.openrtb { OPENRTB_FLAGS } else { &[] };
    if args.openrtb {
        config.select.selector = Selector::parse(OPENRTB_FIELD)
            .map_err(|e| anyhow::anyhow!("select.field {OPENRTB_FIELD:?}: {e}"))?;
    }
    for (backend, (name, flags)) in config.backends.iter_mut().zip(BACKENDS) {
        let listener = backends_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        backend.address = listener.local_addr()?;
        backend.answer = vec![backend.address];
        let argv = ["mock-backend", "--listen", "127.0.0.1:0", "--name", name]
            .into_iter()
            .chain(flags.iter().copied())
            .chain(extra.iter().copied());
        let mock = Arc::new(MockConfig::new(&MockCommand::try_parse_from(argv)?.args)?);
        backends_rt.spawn(mock_backend::serve(listener, mock));
    }
    config.listen = "127.0.0.1:0".parse()?;
    config.admin_listen = "127.0.0.1:0".parse()?;
    // A demo has nothing to hand over to, nor to take over from.
    config.handover_socket = None;
    // Pins of its own: the default directory may be a running instance's, whose metrics map a
    // demo must not replace (`splitter top` and bpftool read it there).
    let pin_dir = config
        .steering
        .pin_dir
        .with_file_name(format!("splitter-demo-{}", std::process::id()));
    config.steering.pin_dir = pin_dir.clone();
    let server = Server::start(config.clone())?;
    let target = server.listen_addr();
    println!(
        "splitter demo: {} workers on {target}, backends {}, route /fast ({} ms deadline), \
         {} connections for {} s",
        crate::control::worker_count(config.workers),
        config
            .backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.address))
            .collect::<Vec<_>>()
            .join(" "),
        config
            .routes
            .iter()
            .find(|r| r.path_prefix == "/fast")
            .map_or(0, |r| r.timeout.as_millis()),
        args.connections,
        args.seconds,
    );
    if args.openrtb {
        println!(
            "OpenRTB: {} B BidRequests; backends answer BidResponses of 3 seats x 2 bids, half \
             of them gzip-compressed; select.field = \"{OPENRTB_FIELD}\" (the best of 6 prices)",
            OPENRTB_REQUEST.len()
        );
    }

    let load_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let body = Arc::new(if args.openrtb {
        OPENRTB_REQUEST.to_owned()
    } else {
        request_body()
    });
    let started = Instant::now();
    let results = load_rt.block_on(async {
        let clients: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(client(target, Arc::clone(&body), until)))
            .collect();
        let mut all = Tally::default();
        for c in clients {
            all.merge(c.await??);
        }
        anyhow::Ok(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();

    let metrics = server.renderer().total();
    server.shutdown();
    server.wait()?;
    // The steering removed its pins; the directory was the demo's own. Absent without eBPF.
    let _ = std::fs::remove_dir(&pin_dir);
    drop(backends_rt);
    let ok = results.ok;
    results.print(elapsed, metrics.requests);
    // Slots follow the configuration's order on a first load.
    for (slot, backend) in config.backends.iter().enumerate() {
        let c = &metrics.backends[slot];
        println!(
            "backend {} replies: {} valid, {} invalid, {} timeout, {} error",
            backend.name, c.valid, c.invalid, c.timeout, c.error
        );
    }
    anyhow::ensure!(ok > 0, "no request succeeded");
    Ok(())
}

/// What the load saw.
#[derive(Default)]
struct Tally {
    /// Latency of every answered request, in microseconds.
    latencies_us: Vec<u64>,
    /// Responses with a body, by `X-Splitter-Backend`.
    wins: BTreeMap<String, u64>,
    /// 204 responses.
    no_content: u64,
    /// Answered requests, any status.
    ok: u64,
    /// Other statuses and broken connections.
    errors: u64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.wins {
            *self.wins.entry(k).or_default() += v;
        }
        self.no_content += other.no_content;
        self.ok += other.ok;
        self.errors += other.errors;
    }

    fn print(mut self, elapsed: f64, served: u64) {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| {
            let i = ((self.latencies_us.len() as f64 * p) as usize)
                .min(self.latencies_us.len().saturating_sub(1));
            self.latencies_us.get(i).copied().unwrap_or(0) as f64 / 1000.0
        };
        println!(
            "requests: {} in {elapsed:.1} s = {:.0} requests/s (splitter counted {served})",
            self.ok,
            self.ok as f64 / elapsed
        );
        println!("latency: p50 {:.2} ms, p99 {:.2} ms", pct(0.50), pct(0.99));
        for (name, n) in &self.wins {
            println!("wins {name}: {n}");
        }
        println!("204 No Content: {}", self.no_content);
        println!("errors: {}", self.errors);
    }
}

/// One keep-alive client connection sending requests back to back until `until`.
async fn client(
    target: std::net::SocketAddr,
    body: Arc<String>,
    until: Instant,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(8192);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let request = format!(
            "POST /fast/bid HTTP/1.1\r\nHost: demo\r\nContent-Type: application/json\r\n\
             X-Req-Id: {n}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        stream.write_all(request.as_bytes()).await?;
        buf.clear();
        let (status, backend) = loop {
            if stream.read_buf(&mut buf).await? == 0 {
                anyhow::bail!("the splitter closed the connection");
            }
            let Some(head) = parse_response(&buf)? else {
                continue;
            };
            let len = match head.framing {
                Framing::Length(len) => len,
                _ => 0,
            };
            while buf.len() < head.head_len + len {
                if stream.read_buf(&mut buf).await? == 0 {
                    anyhow::bail!("the splitter closed the connection mid-response");
                }
            }
            break (head.status, backend_header(&buf[..head.head_len]));
        };
        tally.latencies_us.push(sent.elapsed().as_micros() as u64);
        match (status, backend) {
            (200, Some(name)) => {
                tally.ok += 1;
                *tally.wins.entry(name).or_default() += 1;
            }
            (204, None) => {
                tally.ok += 1;
                tally.no_content += 1;
            }
            _ => tally.errors += 1,
        }
    }
    Ok(tally)
}

/// The value of `X-Splitter-Backend` in a response head.
fn backend_header(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    response.parse(head).ok()?;
    response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("x-splitter-backend"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrtb_request_is_a_2k_bid_request() {
        let v: serde_json::Value = serde_json::from_str(OPENRTB_REQUEST).unwrap();
        assert_eq!(v["imp"][0]["id"], "1");
        assert_eq!(v["tmax"], 80);
        assert!((1900..2300).contains(&OPENRTB_REQUEST.len()));
        assert!(Selector::parse(OPENRTB_FIELD).is_ok());
        let flags = ["mock-backend", "--listen", "127.0.0.1:0"]
            .into_iter()
            .chain(OPENRTB_FLAGS.iter().copied());
        MockConfig::new(&MockCommand::try_parse_from(flags).unwrap().args).unwrap();
    }
}

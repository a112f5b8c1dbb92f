//! The exposition of the summed cells, for the admin endpoint (control plane, off the hot path):
//! OpenMetrics text, or the Prometheus text format 0.0.4 derived from it, each served with its
//! own content type. Backend and route labels come from the current configuration. Process
//! figures (RSS, descriptors), the build, reloads and the configuration's hash are read or
//! kept here, at scrape time.

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest as _, Sha256};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use splitter_common::{BackendCounters, RouteCounters, WorkerMetrics, LATENCY_BOUNDS_US, STATUSES};

use super::process::Process;
use super::MetricsRegion;

/// Renders the region; labels come from the current configuration.
#[derive(Clone)]
pub struct Renderer {
    region: Arc<MetricsRegion>,
    /// Backend name and route prefix of each metrics slot, replaced on reload.
    names: Arc<RwLock<Names>>,
    /// Reloads applied, and refused.
    reloads: Arc<[AtomicU64; 2]>,
    /// SHA-256 of the configuration file running, in hex (what `sha256sum` prints).
    config_hash: Arc<RwLock<String>>,
    /// The file's changed keys that only a restart applies (set at each reload).
    restart_pending: Arc<RwLock<Vec<&'static str>>>,
}

#[derive(Clone, Debug, Default)]
struct Names {
    backends: Vec<Option<String>>,
    routes: Vec<Option<String>>,
}

/// The two text formats `/metrics` speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, for a scraper that asks for it (`Accept: application/openmetrics-text`).
    OpenMetrics,
    /// The Prometheus text format 0.0.4, for everyone else.
    Prometheus,
}

impl Format {
    /// The format a scraper's `Accept` field value asks for.
    pub fn for_accept(accept: Option<&[u8]>) -> Format {
        // The best weight (`q`, 1 when absent) the field gives OpenMetrics by name, and the
        // best it gives the text format, by name or by a wildcard (RFC 9110 §12.5.1).
        let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
        let accept = accept.map(String::from_utf8_lossy).unwrap_or_default();
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("q"))
                .map_or(1.0, |(_, v)| v.trim().parse::<f32>().unwrap_or(0.0));
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= text {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    /// The `Content-Type` of a body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

impl Renderer {
    /// A renderer of `region`, with no backend named yet.
    pub fn new(region: Arc<MetricsRegion>) -> Self {
        Process::open();
        Renderer {
            region,
            names: Arc::new(RwLock::new(Names::default())),
            reloads: Arc::new([AtomicU64::new(0), AtomicU64::new(0)]),
            config_hash: Arc::new(RwLock::new(String::new())),
            restart_pending: Arc::new(RwLock::new(Vec::new())),
        }
    }

    /// Names the backend and route slots after a (re)load: `backends[slot]`, `routes[slot]`.
    pub fn set_names(&self, backends: Vec<Option<String>>, routes: Vec<Option<String>>) {
        *self.names.write().expect("metrics names lock") = Names { backends, routes };
    }

    /// The backend name and the route prefix of each slot, as now configured.
    pub fn names(&self) -> (Vec<Option<String>>, Vec<Option<String>>) {
        let names = self.names.read().expect("metrics names lock");
        (names.backends.clone(), names.routes.clone())
    }

    /// A reload was applied (`true`) or refused.
    pub fn reloaded(&self, applied: bool) {
        self.reloads[usize::from(!applied)].fetch_add(1, Ordering::Relaxed);
    }

    /// The keys of the file just reloaded that differ from what runs and only a restart
    /// applies: `splitter reload` reads them here to name them.
    pub fn set_restart_pending(&self, keys: Vec<&'static str>) {
        *self.restart_pending.write().expect("restart keys lock") = keys;
    }

    /// The configuration file now running.
    pub fn set_config_hash(&self, file: &[u8]) {
        let hash = Sha256::digest(file);
        let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
        *self.config_hash.write().expect("config hash lock") = hex;
    }

    /// The exposition text of every metric, in `format`.
    pub fn render(&self, format: Format) -> String {
        let names = self.names.read().expect("metrics names lock").clone();
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            total: self.region.total(),
            backends: names.backends,
            routes: names.routes,
            reloads: [0, 1].map(|i| self.reloads[i].load(Ordering::Relaxed)),
            config_hash: self.config_hash.read().expect("config hash lock").clone(),
            restart_pending: self
                .restart_pending
                .read()
                .expect("restart keys lock")
                .clone(),
            process: Process::read(),
        }));
        let mut out = String::with_capacity(16384);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => prometheus_text(&out),
        }
    }

    /// The summed counters, for the demo's summary and tests.
    pub fn total(&self) -> WorkerMetrics {
        self.region.total()
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics text: a counter family's `TYPE` and `HELP`
/// name its samples (`_total`), there is no `UNIT` and no `# EOF`, and `info` is a gauge.
fn prometheus_text(open_metrics: &str) -> String {
    let mut counters: Vec<&str> = Vec::new();
    for line in open_metrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.push(name);
        }
    }
    let mut out = String::with_capacity(open_metrics.len());
    for line in open_metrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let tail = if prefix == "# TYPE " && tail == "info" {
                    "gauge"
                } else {
                    tail
                };
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(&name) {
                    out.push_str("_total");
                }
                out.push(' ');
                out.push_str(tail);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// One scrape: the summed cells, the labels to print them with, and the control plane's own.
#[derive(Debug)]
struct Snapshot {
    total: WorkerMetrics,
    backends: Vec<Option<String>>,
    routes: Vec<Option<String>>,
    reloads: [u64; 2],
    config_hash: String,
    restart_pending: Vec<&'static str>,
    process: Process,
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let g = ConstGauge::new(value as i64);
    g.encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let t = &self.total;
        counter(
            &mut enc,
            "splitter_requests",
            "Requests received.",
            t.requests,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "splitter_responses",
                "Responses sent to clients, by status.",
                None,
                MetricType::Counter,
            )?;
            for (status, &n) in STATUSES.iter().zip(&t.responses) {
                let labels = [("status", status.to_string())];
                ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
            }
        }
        let backends: Vec<(usize, &str)> = self
            .backends
            .iter()
            .enumerate()
            .filter_map(|(slot, n)| n.as_deref().map(|n| (slot, n)))
            .collect();
        {
            let mut m = enc.encode_descriptor(
                "splitter_backend_responses",
                "Backend parts of requests by outcome: valid, invalid (unusable HTTP response), \
                 timeout, error, ejected (not asked: ejected), overloaded (not asked: \
                 max_connections busy).",
                None,
                MetricType::Counter,
            )?;
            for &(slot, name) in &backends {
                let b = &t.backends[slot];
                for (outcome, n) in [
                    ("valid", b.valid),
                    ("invalid", b.invalid),
                    ("timeout", b.timeout),
                    ("error", b.error),
                    ("ejected", b.ejected),
                    ("overloaded", b.overloaded),
                ] {
                    let labels = [("backend", name), ("outcome", outcome)];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_backend_invalid",
                "Of the backend's invalid replies, those invalid for a reason worth telling: \
                 below_floor (a number worse than the floor), encoding (a Content-Encoding \
                 other than gzip or deflate, or one that does not decode).",
                None,
                MetricType::Counter,
            )?;
            for &(slot, name) in &backends {
                let b = &t.backends[slot];
                for (reason, n) in [("below_floor", b.below_floor), ("encoding", b.bad_encoding)] {
                    let labels = [("backend", name), ("reason", reason)];
                    ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        for (metric, help, field) in [
            (
                "splitter_backend_wins",
                "Times the backend's response was the one returned.",
                (|b: &BackendCounters| b.wins) as fn(&BackendCounters) -> u64,
            ),
            (
                "splitter_backend_late_drained",
                "Late backend responses read to their end on a kept connection.",
                |b: &BackendCounters| b.late_drained,
            ),
            (
                "splitter_backend_connections_closed",
                "Backend connections closed: connects minus closed is what is open.",
                |b: &BackendCounters| b.closed,
            ),
            (
                "splitter_backend_ejections",
                "Times a worker ejected the backend after consecutive failures.",
                |b: &BackendCounters| b.ejections,
            ),
            (
                "splitter_backend_connects",
                "Connections opened to the backend.",
                |b: &BackendCounters| b.connects,
            ),
        ] {
            let mut m = enc.encode_descriptor(metric, help, None, MetricType::Counter)?;
            for &(slot, name) in &backends {
                let labels = [("backend", name)];
                ConstCounter::new(field(&t.backends[slot])).encode(m.encode_family(&labels)?)?;
            }
        }
        for (metric, help, field) in [
            (
                "splitter_backend_ejected",
                "Workers that have the backend ejected now (each worker judges on its own).",
                (|b: &BackendCounters| b.is_ejected) as fn(&BackendCounters) -> u64,
            ),
            (
                "splitter_backend_up",
                "1 when no worker has the backend ejected, else 0.",
                |b: &BackendCounters| u64::from(b.is_ejected == 0),
            ),
        ] {
            let mut m = enc.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for &(slot, name) in &backends {
                let labels = [("backend", name)];
                ConstGauge::new(field(&t.backends[slot]) as i64)
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let m = enc.encode_descriptor(
                "splitter_request_duration_seconds",
                "Time from a request's last byte read to its response written.",
                None,
                MetricType::Histogram,
            )?;
            // The encoder takes per-bucket counts and accumulates them itself; f64::MAX is
            // its spelling of +Inf.
            let buckets: Vec<(f64, u64)> = t
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let upper = LATENCY_BOUNDS_US
                        .get(i)
                        .map_or(f64::MAX, |&us| us as f64 / 1e6);
                    (upper, n)
                })
                .collect();
            let count = t.latency_buckets.iter().sum();
            histogram(m, t.latency_sum_us as f64 / 1e6, count, &buckets)?;
        }
        gauge(
            &mut enc,
            "splitter_in_flight",
            "Requests in progress.",
            t.in_flight,
        )?;
        gauge(
            &mut enc,
            "splitter_client_connections",
            "Client connections open.",
            t.connections,
        )?;
        counter(
            &mut enc,
            "splitter_client_connections_accepted",
            "Client connections accepted.",
            t.accepted,
        )?;
        counter(
            &mut enc,
            "splitter_client_timeouts",
            "Client connections closed for sending too slowly or idling too long.",
            t.client_timeouts,
        )?;
        counter(
            &mut enc,
            "splitter_access_log_dropped",
            "Access log records dropped because the writer fell behind.",
            t.access_log_dropped,
        )?;
        counter(
            &mut enc,
            "splitter_deadline_misses",
            "Responses written more than 10 ms after their deadline.",
            t.deadline_misses,
        )?;
        let routes: Vec<(usize, Cow<'_, str>)> = self
            .routes
            .iter()
            .enumerate()
            .filter_map(|(slot, n)| n.as_deref().map(|n| (slot, escape_label(n))))
            .collect();
        for (metric, help, field) in [
            (
                "splitter_route_requests",
                "Requests routed to the route (its path prefix).",
                (|r: &RouteCounters| r.requests) as fn(&RouteCounters) -> u64,
            ),
            (
                "splitter_route_no_content",
                "Requests of the route answered 204: no valid reply in time.",
                |r: &RouteCounters| r.no_content,
            ),
        ] {
            let mut m = enc.encode_descriptor(metric, help, None, MetricType::Counter)?;
            for (slot, prefix) in &routes {
                let (slot, labels) = (*slot, [("route", &**prefix)]);
                ConstCounter::new(field(&t.routes[slot])).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_backend_duration_seconds",
                "Time from a request's start to the backend's whole reply, late ones included.",
                None,
                MetricType::Histogram,
            )?;
            for &(slot, name) in &backends {
                let b = &t.backends[slot];
                let labels = [("backend", name)];
                let family = m.encode_family(&labels)?;
                let sum = b.latency_sum_us as f64 / 1e6;
                histogram(
                    family,
                    sum,
                    b.latency_buckets.iter().sum(),
                    &buckets_of(&b.latency_buckets),
                )?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_backend_pool_connections",
                "Connections to the backend, all workers: open (busy or idle), idle (pooled).",
                None,
                MetricType::Gauge,
            )?;
            for &(slot, name) in &backends {
                let b = &t.backends[slot];
                let open = b.connects.saturating_sub(b.closed);
                for (state, n) in [("open", open), ("idle", b.pool_idle)] {
                    let labels = [("backend", name), ("state", state)];
                    ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_reloads",
                "Configuration reloads: success (applied) or failure (refused, the old one stays).",
                None,
                MetricType::Counter,
            )?;
            for (result, n) in [("success", self.reloads[0]), ("failure", self.reloads[1])] {
                ConstCounter::new(n).encode(m.encode_family(&[("result", result)])?)?;
            }
        }
        {
            let m = enc.encode_descriptor(
                "splitter_config_info",
                "The running configuration file's SHA-256 (as sha256sum prints it).",
                None,
                MetricType::Gauge,
            )?;
            let mut m = m;
            let labels = [("hash", self.config_hash.as_str())];
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_config_restart_pending",
                "Keys changed in the file that only a restart applies, one series each (none when \
                 the process runs what the file says).",
                None,
                MetricType::Gauge,
            )?;
            for key in &self.restart_pending {
                ConstGauge::new(1).encode(m.encode_family(&[("key", *key)])?)?;
            }
        }
        {
            let mut m = enc.encode_descriptor(
                "splitter_build_info",
                "The splitter build: version and commit.",
                None,
                MetricType::Gauge,
            )?;
            let labels = [
                ("version", env!("CARGO_PKG_VERSION")),
                ("commit", env!("SPLITTER_COMMIT")),
            ];
            ConstGauge::new(1).encode(m.encode_family(&labels)?)?;
        }
        let p = &self.process;
        gauge(
            &mut enc,
            "splitter_process_resident_memory_bytes",
            "Resident memory of the process.",
            p.rss_bytes,
        )?;
        gauge(
            &mut enc,
            "splitter_process_open_fds",
            "File descriptors the process has open.",
            p.open_fds,
        )?;
        gauge(
            &mut enc,
            "splitter_process_max_fds",
            "The process's limit of open file descriptors (RLIMIT_NOFILE).",
            p.max_fds,
        )?;
        Ok(())
    }
}

/// `(upper bound in seconds, count)` of each histogram bucket; `f64::MAX` is the encoder's
/// spelling of `+Inf`.
fn buckets_of(counts: &[u64]) -> Vec<(f64, u64)> {
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let upper = LATENCY_BOUNDS_US
                .get(i)
                .map_or(f64::MAX, |&us| us as f64 / 1e6);
            (upper, n)
        })
        .collect()
}

fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), fmt::Error> {
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
}

/// A label value as both text formats need it (`\\`, `"` and line feeds escaped):
/// `prometheus_client` writes values as given, and a route's prefix may hold any of them; one
/// left raw would make the whole scrape unreadable.
fn escape_label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scatter::exchange::BackendOutcome;

    #[test]
    fn renders_the_spec_metric_names() {
        let region = MetricsRegion::heap(1);
        let h = region.handle(0);
        h.request();
        h.response(200);
        h.win(0);
        h.backend_outcome(0, BackendOutcome::Valid);
        h.backend_outcome(1, BackendOutcome::Error);
        h.latency(70_000);
        let r = Renderer::new(region);
        r.set_names(
            vec![Some("a".into()), Some("b".into())],
            vec![Some("/".into())],
        );
        let text = r.render(Format::OpenMetrics);
        for line in [
            "splitter_requests_total 1",
            "splitter_responses_total{status=\"200\"} 1",
            "splitter_responses_total{status=\"204\"} 0",
            "splitter_backend_responses_total{backend=\"a\",outcome=\"valid\"} 1",
            "splitter_backend_responses_total{backend=\"b\",outcome=\"error\"} 1",
            "splitter_backend_wins_total{backend=\"a\"} 1",
            "splitter_request_duration_seconds_bucket{le=\"0.08\"} 1",
            "splitter_request_duration_seconds_bucket{le=\"0.05\"} 0",
            "splitter_request_duration_seconds_bucket{le=\"+Inf\"} 1",
            "splitter_request_duration_seconds_count 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn both_formats_name_counters_by_their_samples() {
        let region = MetricsRegion::heap(1);
        region.handle(0).request();
        let r = Renderer::new(region);
        r.set_names(vec![Some("a".into())], vec![Some("/bid".into())]);
        r.set_config_hash(b"listen = \"x\"\n");
        r.reloaded(true);
        let open = r.render(Format::OpenMetrics);
        assert!(
            open.contains("# TYPE splitter_requests counter\n"),
            "{open}"
        );
        assert!(open.ends_with("# EOF\n"));
        let text = r.render(Format::Prometheus);
        assert!(
            text.contains("# TYPE splitter_requests_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP splitter_requests_total "), "{text}");
        assert!(text.contains("splitter_requests_total 1\n"), "{text}");
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE splitter_request_duration_seconds histogram\n"));
        assert!(
            text.contains("splitter_reloads_total{result=\"success\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("splitter_route_requests_total{route=\"/bid\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("splitter_build_info{version=\""), "{text}");
        assert!(text.contains("splitter_process_open_fds "), "{text}");
        assert!(
            text.contains(
                "splitter_backend_duration_seconds_bucket{le=\"0.08\",backend=\"a\"} 0\n"
            ),
            "{text}"
        );
        // A route's prefix may hold what a label value must escape.
        r.set_names(vec![Some("a".into())], vec![Some("/q\"\\x".into())]);
        for format in [Format::Prometheus, Format::OpenMetrics] {
            let text = r.render(format);
            assert!(text.contains("{route=\"/q\\\"\\\\x\"} 0\n"), "{text}");
        }
        assert_eq!(escape_label("a\nb"), "a\\nb");
        // sha256 of the file, as sha256sum prints it.
        let hash = "splitter_config_info{hash=\"";
        let at = text.find(hash).expect("config hash") + hash.len();
        assert_eq!(text[at..].find('"'), Some(64));
    }

    #[test]
    fn the_format_follows_the_accept_field() {
        assert_eq!(Format::for_accept(None), Format::Prometheus);
        assert_eq!(
            Format::for_accept(Some(b"text/plain;version=0.0.4")),
            Format::Prometheus
        );
        let prometheus =
            b"application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::for_accept(Some(prometheus)), Format::OpenMetrics);
        // Prometheus 2.5x's field: OpenMetrics weighs most.
        let newer = b"application/openmetrics-text;version=1.0.0;q=0.5,\
            application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2";
        assert_eq!(Format::for_accept(Some(newer)), Format::OpenMetrics);
        // The weights decide, not the mere mention.
        let text_first = b"application/openmetrics-text;q=0.1, text/plain;q=0.9";
        assert_eq!(Format::for_accept(Some(text_first)), Format::Prometheus);
        let refused = b"Application/OpenMetrics-Text; q=0";
        assert_eq!(Format::for_accept(Some(refused)), Format::Prometheus);
        assert_eq!(Format::for_accept(Some(b"*/*")), Format::Prometheus);
        assert_eq!(
            Format::for_accept(Some(b"application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert!(Format::OpenMetrics
            .content_type()
            .starts_with("application/openmetrics-text"));
    }
}

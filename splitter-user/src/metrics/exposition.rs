//! Prometheus text exposition of the summed cells, for the admin endpoint (control plane, off the
//! hot path). Backend labels come from the current configuration, so a reload renames them.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use splitter_common::{BackendCounters, WorkerMetrics, LATENCY_BOUNDS_US, MAX_BACKENDS, STATUSES};

use super::MetricsRegion;

/// Renders the region as Prometheus text; backend labels come from the current configuration.
#[derive(Clone)]
pub struct Renderer {
    region: Arc<MetricsRegion>,
    /// Backend name of each metrics slot, replaced on reload.
    names: Arc<std::sync::RwLock<Vec<Option<String>>>>,
}

impl Renderer {
    /// A renderer of `region`, with no backend named yet.
    pub fn new(region: Arc<MetricsRegion>) -> Self {
        Renderer {
            region,
            names: Arc::new(std::sync::RwLock::new(vec![None; MAX_BACKENDS])),
        }
    }

    /// Names the backend slots after a (re)load: `names[slot]`.
    pub fn set_backend_names(&self, names: Vec<Option<String>>) {
        *self.names.write().expect("metrics names lock") = names;
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Snapshot {
            total: self.region.total(),
            names: self.names.read().expect("metrics names lock").clone(),
        }));
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &registry)
            .expect("writing to a String cannot fail");
        out
    }

    /// The summed counters, for the demo's summary and tests.
    pub fn total(&self) -> WorkerMetrics {
        self.region.total()
    }
}

/// One scrape: the summed cells and the labels to print them with.
#[derive(Debug)]
struct Snapshot {
    total: WorkerMetrics,
    names: Vec<Option<String>>,
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
            .names
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
        Ok(())
    }
}

fn histogram(
    mut m: prometheus_client::encoding::MetricEncoder,
    sum: f64,
    count: u64,
    buckets: &[(f64, u64)],
) -> Result<(), fmt::Error> {
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, buckets, None)
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
        r.set_backend_names(vec![Some("a".into()), Some("b".into())]);
        let text = r.render();
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
}

//! The splitter's `/metrics`, read back: Prometheus text into samples a test can look up.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use crate::client;

/// A parsed Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// (name, labels, value) per sample line.
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
    /// The text as scraped, for failure messages.
    pub text: String,
}

impl Metrics {
    /// `GET /metrics` on the admin listener at `admin`.
    pub fn scrape(admin: SocketAddr) -> Result<Metrics, String> {
        let r = client::get(admin, "/metrics")?;
        if r.status != 200 {
            return Err(format!("GET /metrics: {r:?}"));
        }
        Ok(Metrics::parse(&r.body_str()))
    }

    pub fn parse(text: &str) -> Metrics {
        let mut samples = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.trim().parse::<f64>() else {
                continue;
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let rest = rest.trim_end_matches('}');
                    let mut map = BTreeMap::new();
                    for pair in rest.split(',').filter(|p| !p.is_empty()) {
                        if let Some((k, v)) = pair.split_once('=') {
                            map.insert(
                                k.trim().to_string(),
                                v.trim().trim_matches('"').to_string(),
                            );
                        }
                    }
                    (n.to_string(), map)
                }
                None => (series.trim().to_string(), BTreeMap::new()),
            };
            samples.push((name, labels, value));
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// The value of `name` whose labels include all of `labels` (0 if absent).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    /// The value of `name` whose labels include all of `labels`, if there is one.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Is there a sample named `name`, whatever its labels?
    pub fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|(n, _, _)| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_by_name_and_labels() {
        let m = Metrics::parse(
            "# HELP splitter_requests_total Requests.\n\
             # TYPE splitter_requests_total counter\n\
             splitter_requests_total 12\n\
             splitter_responses_total{status=\"204\"} 3\n\
             splitter_backend_responses_total{backend=\"a\",outcome=\"valid\"} 7\n\
             splitter_request_duration_seconds_bucket{le=\"+Inf\"} 12\n\
             garbage line\n",
        );
        assert_eq!(m.get("splitter_requests_total", &[]), 12.0);
        assert_eq!(m.get("splitter_responses_total", &[("status", "204")]), 3.0);
        assert_eq!(
            m.find("splitter_responses_total", &[("status", "200")]),
            None
        );
        assert_eq!(
            m.get(
                "splitter_backend_responses_total",
                &[("outcome", "valid"), ("backend", "a")]
            ),
            7.0
        );
        assert_eq!(
            m.get(
                "splitter_request_duration_seconds_bucket",
                &[("le", "+Inf")]
            ),
            12.0
        );
        assert!(m.has("splitter_responses_total") && !m.has("garbage"));
    }
}

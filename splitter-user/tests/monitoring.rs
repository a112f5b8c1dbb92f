//! The monitoring files of SPEC.md section 10: the Grafana dashboard
//! (`infra/grafana/splitter.json`) and the Prometheus alert rules (`infra/prometheus/`).
//!
//! Without any tool: the dashboard is JSON Grafana imports (schema, the `DS_PROMETHEUS` input,
//! `instance` and `backend` variables, panels on the 24-column grid without overlap), and every
//! query of the dashboard and the rules names only the metrics this file lists (the documented
//! ones: README "Metrics", SPEC.md sections 6 and 10), with their labels and label values, counters
//! only under `rate`/`increase`, histograms only by their series; every alert has a severity, a
//! `for`, annotations naming only labels its query keeps, and a unit test where it fires and one
//! where it does not.
//!
//! With `promtool` (`#[ignore]`d, so that without it `cargo test` reports them skipped; test.sh
//! runs them where it is, and scripts/setup.sh installs it): the rules check and pass their unit
//! tests, the example scrape configuration checks, every dashboard query parses, and a running
//! splitter's `/metrics` passes `promtool check metrics`. A documented metric the binary does not
//! export yet fails nothing here: the live test checks the format, and the types of the metrics
//! it does export.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{config, repo_path, require_tool, TempDir, SPLITTER};
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// The documented metrics
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A label, and the values it takes when they are a fixed set (`None`: any value).
type Label = (&'static str, Option<&'static [&'static str]>);

const OUTCOMES: &[&str] = &[
    "valid",
    "invalid",
    "timeout",
    "error",
    "ejected",
    "overloaded",
];
const REASONS: &[&str] = &["below_floor", "encoding"];
const RESULTS: &[&str] = &["success", "failure"];
const STATES: &[&str] = &["open", "idle"];
const BACKEND: Label = ("backend", None);

/// Every metric the dashboard and the rules may name: name (as exported, counters with
/// `_total`, histograms without their suffixes), kind, labels.
const METRICS: &[(&str, Kind, &[Label])] = &[
    ("splitter_requests_total", Kind::Counter, &[]),
    (
        "splitter_responses_total",
        Kind::Counter,
        &[("status", None)],
    ),
    (
        "splitter_backend_responses_total",
        Kind::Counter,
        &[BACKEND, ("outcome", Some(OUTCOMES))],
    ),
    ("splitter_backend_wins_total", Kind::Counter, &[BACKEND]),
    ("splitter_backend_connects_total", Kind::Counter, &[BACKEND]),
    (
        "splitter_backend_connections_closed_total",
        Kind::Counter,
        &[BACKEND],
    ),
    (
        "splitter_backend_ejections_total",
        Kind::Counter,
        &[BACKEND],
    ),
    (
        "splitter_backend_invalid_total",
        Kind::Counter,
        &[BACKEND, ("reason", Some(REASONS))],
    ),
    (
        "splitter_route_requests_total",
        Kind::Counter,
        &[("route", None)],
    ),
    (
        "splitter_route_no_content_total",
        Kind::Counter,
        &[("route", None)],
    ),
    ("splitter_deadline_misses_total", Kind::Counter, &[]),
    (
        "splitter_reloads_total",
        Kind::Counter,
        &[("result", Some(RESULTS))],
    ),
    (
        "splitter_client_connections_accepted_total",
        Kind::Counter,
        &[],
    ),
    ("splitter_in_flight", Kind::Gauge, &[]),
    ("splitter_client_connections", Kind::Gauge, &[]),
    ("splitter_backend_up", Kind::Gauge, &[BACKEND]),
    ("splitter_backend_ejected", Kind::Gauge, &[BACKEND]),
    (
        "splitter_backend_pool_connections",
        Kind::Gauge,
        &[BACKEND, ("state", Some(STATES))],
    ),
    ("splitter_process_resident_memory_bytes", Kind::Gauge, &[]),
    ("splitter_process_open_fds", Kind::Gauge, &[]),
    ("splitter_process_max_fds", Kind::Gauge, &[]),
    (
        "splitter_build_info",
        Kind::Gauge,
        &[("version", None), ("commit", None)],
    ),
    ("splitter_config_info", Kind::Gauge, &[("hash", None)]),
    ("splitter_request_duration_seconds", Kind::Histogram, &[]),
    (
        "splitter_backend_duration_seconds",
        Kind::Histogram,
        &[BACKEND],
    ),
];

/// Labels Prometheus attaches to every scraped series.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// A series name in a query, resolved: the documented metric, and whether it is a histogram's
/// `_bucket` (which has `le`).
fn resolve(series: &str) -> Option<(&'static str, Kind, &'static [Label], bool)> {
    METRICS.iter().find_map(|&(name, kind, labels)| {
        if kind != Kind::Histogram {
            return (series == name).then_some((name, kind, labels, false));
        }
        let suffix = series.strip_prefix(name)?;
        // The bare name is no series; resolved, for check_query to say so.
        matches!(suffix, "" | "_bucket" | "_sum" | "_count").then_some((
            name,
            kind,
            labels,
            suffix == "_bucket",
        ))
    })
}

// ---------------------------------------------------------------------------------------------
// PromQL, as far as these files need it
// ---------------------------------------------------------------------------------------------

/// The PromQL functions and aggregations a query may call.
const FUNCTIONS: &str =
    "abs absent avg avg_over_time ceil clamp_max clamp_min count count_over_time \
     delta deriv floor group histogram_quantile idelta increase irate label_replace \
     max max_over_time min min_over_time quantile rate resets round scalar sort \
     sort_desc stddev sum sum_over_time time topk bottomk vector";
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset"];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// A series in a query: its name, its matchers (label, operator, value), and the function whose
/// argument it is directly (`rate` in `rate(x[5m])`), if any.
#[derive(Debug)]
struct Selector {
    series: String,
    matchers: Vec<(String, String, String)>,
    around: Option<String>,
}

/// What a query says: the series it selects, with their label matchers, the function applied
/// right around each, and the labels its groupings name.
#[derive(Debug, Default)]
struct Query {
    /// (series name, [(label, operator, value)], innermost enclosing function).
    selectors: Vec<Selector>,
    grouping_labels: BTreeSet<String>,
}

/// Reads `expr`; errors name what is not understood. Brackets (`[5m]`) and numbers are skipped;
/// strings only occur as matcher values or function arguments.
fn parse_query(expr: &str) -> Result<Query, String> {
    let b = expr.as_bytes();
    let mut q = Query::default();
    // The function of each open parenthesis (None for a plain or a grouping one).
    let mut stack: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    let ident = |i: usize| {
        let mut j = i;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b':') {
            j += 1;
        }
        j
    };
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let string = |i: usize| -> Result<(String, usize), String> {
        let quote = b[i];
        let mut j = i + 1;
        while j < b.len() && b[j] != quote {
            j += if b[j] == b'\\' { 2 } else { 1 };
        }
        if j >= b.len() {
            return Err(format!("unterminated string in {expr:?}"));
        }
        Ok((expr[i + 1..j].to_string(), j + 1))
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() || b"+-*/%^=!<>,".contains(&c) {
            i += 1;
        } else if c == b'[' {
            i += expr[i..].find(']').ok_or("unclosed [")? + 1;
        } else if c == b'(' {
            stack.push(None);
            i += 1;
        } else if c == b')' {
            stack
                .pop()
                .ok_or_else(|| format!("unbalanced ) in {expr:?}"))?;
            i += 1;
        } else if c == b'"' || c == b'\'' {
            i = string(i)?.1;
        } else if c.is_ascii_digit() || c == b'.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let end = ident(i);
            let word = &expr[i..end];
            let next = skip_ws(end);
            if GROUPING.contains(&word) {
                i = next;
                if b.get(i) == Some(&b'(') {
                    let close = i + expr[i..].find(')').ok_or("unclosed grouping")?;
                    for label in expr[i + 1..close].split(',').map(str::trim) {
                        if !label.is_empty() {
                            q.grouping_labels.insert(label.to_string());
                        }
                    }
                    i = close + 1;
                }
            } else if KEYWORDS.contains(&word) {
                i = end;
            } else if FUNCTIONS.split_whitespace().any(|f| f == word) {
                // `sum by (le) (...)`: the grouping may come between the name and its argument.
                let mut j = next;
                let word2 = &expr[j..ident(j)];
                if word2 == "by" || word2 == "without" {
                    j = skip_ws(ident(j));
                    let close = j + expr[j..].find(')').ok_or("unclosed grouping")?;
                    for label in expr[j + 1..close].split(',').map(str::trim) {
                        if !label.is_empty() {
                            q.grouping_labels.insert(label.to_string());
                        }
                    }
                    j = skip_ws(close + 1);
                }
                if b.get(j) != Some(&b'(') {
                    return Err(format!("{word} without its argument in {expr:?}"));
                }
                stack.push(Some(word.to_string()));
                i = j + 1;
            } else if b.get(next) == Some(&b'(') {
                return Err(format!("unknown function {word}() in {expr:?}"));
            } else {
                // A series.
                let mut matchers = Vec::new();
                i = next;
                if b.get(i) == Some(&b'{') {
                    i += 1;
                    loop {
                        i = skip_ws(i);
                        if b.get(i) == Some(&b'}') {
                            i += 1;
                            break;
                        }
                        let end = ident(i);
                        let label = expr[i..end].to_string();
                        i = skip_ws(end);
                        let op_end = i + expr[i..]
                            .find(['"', '\''])
                            .ok_or_else(|| format!("matcher of {label} in {expr:?}"))?;
                        let op = expr[i..op_end].trim().to_string();
                        if !["=", "!=", "=~", "!~"].contains(&op.as_str()) || label.is_empty() {
                            return Err(format!("bad matcher {label}{op} in {expr:?}"));
                        }
                        let (value, after) = string(op_end)?;
                        matchers.push((label, op, value));
                        i = skip_ws(after);
                        if b.get(i) == Some(&b',') {
                            i += 1;
                        }
                    }
                } else {
                    i = end.max(i);
                }
                let around = stack.iter().rev().find_map(Clone::clone);
                // Only the function whose parenthesis is the innermost open one is "around" it.
                let around = if stack.last().is_some_and(Option::is_some) {
                    around
                } else {
                    None
                };
                q.selectors.push(Selector {
                    series: word.to_string(),
                    matchers,
                    around,
                });
            }
        } else {
            return Err(format!("unexpected {:?} in {expr:?}", c as char));
        }
    }
    if !stack.is_empty() {
        return Err(format!("unbalanced ( in {expr:?}"));
    }
    Ok(q)
}

/// Checks a query against the documented metrics; `extra` are series allowed besides them
/// (`up` in the rules). Returns the labels its series may carry.
fn check_query(
    expr: &str,
    extra: &[(&'static str, &'static [&'static str])],
    errors: &mut Vec<String>,
) -> (BTreeSet<String>, Vec<&'static str>) {
    let q = match parse_query(expr) {
        Ok(q) => q,
        Err(e) => {
            errors.push(e);
            return (BTreeSet::new(), Vec::new());
        }
    };
    let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|s| s.to_string()).collect();
    let mut names = Vec::new();
    for Selector {
        series,
        matchers,
        around,
    } in &q.selectors
    {
        let allowed: Vec<Label> = if let Some((name, kind, documented, bucket)) = resolve(series) {
            names.push(name);
            let counting = matches!(around.as_deref(), Some("rate" | "increase" | "irate"));
            match kind {
                Kind::Counter if !counting => errors.push(format!(
                    "counter {series} outside rate()/increase() in {expr:?}"
                )),
                Kind::Histogram if !counting => errors.push(format!(
                    "histogram series {series} outside rate()/increase() in {expr:?}"
                )),
                Kind::Histogram if series == name => {
                    errors.push(format!("histogram {series} without a suffix in {expr:?}"))
                }
                _ => {}
            }
            let mut l = documented.to_vec();
            if bucket {
                l.push(("le", None));
            }
            l
        } else if let Some((_, l)) = extra.iter().find(|(n, _)| n == series) {
            l.iter().map(|&n| (n, None)).collect()
        } else {
            errors.push(format!("{series} is not a documented metric, in {expr:?}"));
            continue;
        };
        for (label, _) in &allowed {
            labels.insert(label.to_string());
        }
        for (label, op, value) in matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let Some((_, values)) = allowed.iter().find(|(l, _)| l == label) else {
                errors.push(format!("{series} has no label {label:?}, in {expr:?}"));
                continue;
            };
            // A fixed value, or an alternation of fixed values, must be one the label takes.
            let literal = !value.contains('$')
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '|');
            if let (Some(values), true) = (values, literal) {
                let alternatives: Vec<&str> = if op.contains('~') {
                    value.split('|').collect()
                } else {
                    vec![value]
                };
                for v in alternatives {
                    if !values.contains(&v) {
                        errors.push(format!(
                            "{series}{{{label}}} never is {v:?} (one of {values:?}), in {expr:?}"
                        ));
                    }
                }
            }
        }
    }
    for label in &q.grouping_labels {
        if !labels.contains(label) {
            errors.push(format!(
                "groups by {label:?}, which no series of {expr:?} has"
            ));
        }
    }
    (labels, names)
}

/// `{{label}}` (a Grafana legend) or `{{ $labels.label }}` (an alert annotation) references.
fn template_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        let Some(close) = rest[open..].find("}}") else {
            break;
        };
        let inner = rest[open + 2..open + close].trim();
        let name = inner.strip_prefix("$labels.").unwrap_or(inner);
        let name = name.split_whitespace().next().unwrap_or("");
        if !name.starts_with('$') && !name.is_empty() {
            out.push(name.to_string());
        }
        rest = &rest[open + close + 2..];
    }
    out
}

#[test]
fn the_query_reader_finds_selectors_matchers_and_groupings() {
    let q = parse_query(
        "sum by (backend, le) (rate(splitter_backend_duration_seconds_bucket{instance=~\"$instance\", \
         backend=~'$backend'}[$__rate_interval])) / ignoring (backend) group_left up > 0.5",
    )
    .unwrap();
    assert_eq!(q.selectors.len(), 2, "{q:?}");
    assert_eq!(
        q.selectors[0].series,
        "splitter_backend_duration_seconds_bucket"
    );
    assert_eq!(
        q.selectors[0].matchers[1],
        ("backend".into(), "=~".into(), "$backend".into())
    );
    assert_eq!(q.selectors[0].around.as_deref(), Some("rate"));
    assert_eq!(
        (
            q.selectors[1].series.as_str(),
            q.selectors[1].around.as_deref()
        ),
        ("up", None)
    );
    assert_eq!(
        q.grouping_labels.iter().collect::<Vec<_>>(),
        ["backend", "le"]
    );

    let mut errors = Vec::new();
    check_query(
        "sum(splitter_requests_total) + rate(splitter_backend_responses_total{outcome=\"vaild\"}[1m]) \
         + splitter_backend_up{backnd=\"a\"} + rate(splitter_nope_total[1m]) \
         + rate(splitter_request_duration_seconds[1m]) + sum by (route) (splitter_in_flight)",
        &[],
        &mut errors,
    );
    let joined = errors.join("\n");
    for expected in [
        "counter splitter_requests_total outside",
        "never is \"vaild\"",
        "has no label \"backnd\"",
        "splitter_nope_total is not a documented metric",
        "without a suffix",
        "groups by \"route\"",
    ] {
        assert!(joined.contains(expected), "{expected:?} not in:\n{joined}");
    }
    assert_eq!(errors.len(), 6, "{joined}");
    assert!(parse_query("rat(splitter_requests_total[1m])").is_err());
    assert_eq!(
        template_labels("{{ $labels.backend }} at {{ $value | humanize }}, {{route}}"),
        ["backend", "route"]
    );
}

// ---------------------------------------------------------------------------------------------
// The dashboard
// ---------------------------------------------------------------------------------------------

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    let path = repo_path("infra/grafana/splitter.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {v}"))
}

/// The panels that query (not rows), with their `targets`' exprs and legends.
fn dashboard_queries(dash: &Value) -> Vec<(String, Vec<(String, String)>)> {
    dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .map(|p| {
            let targets = p["targets"]
                .as_array()
                .unwrap_or_else(|| panic!("panel {} has no targets", p["title"]))
                .iter()
                .map(|t| {
                    (
                        str_at(t, "/expr").to_string(),
                        t["legendFormat"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect();
            (str_at(p, "/title").to_string(), targets)
        })
        .collect()
}

const DATASOURCE: &str = "${DS_PROMETHEUS}";

#[test]
fn dashboard_is_a_grafana_dashboard_with_the_datasource_input_and_variables() {
    let dash = dashboard();
    assert_eq!(dash["schemaVersion"], 39);
    assert_eq!(dash["uid"], "splitter");
    assert!(dash["id"].is_null(), "an exported dashboard has no id");
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert!(
        inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS"
            && i["type"] == "datasource"
            && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    let vars: BTreeMap<&str, &Value> = dash["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .map(|v| (str_at(v, "/name"), v))
        .collect();
    let ds = vars["DS_PROMETHEUS"];
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    for (name, metric) in [
        ("instance", "splitter_requests_total"),
        ("backend", "splitter_backend_responses_total"),
    ] {
        let v = vars
            .get(name)
            .unwrap_or_else(|| panic!("no {name} variable"));
        assert_eq!(v["type"], "query");
        assert_eq!(str_at(v, "/datasource/uid"), DATASOURCE);
        assert_eq!(v["includeAll"], true);
        assert_eq!(
            v["allValue"], ".*",
            "All must be a regex the =~ matchers take"
        );
        let query = str_at(v, "/query/query");
        assert!(
            query.starts_with(&format!("label_values({metric}"))
                && query.ends_with(&format!(", {name})")),
            "{query}"
        );
    }
    assert!(str_at(vars["backend"], "/query/query").contains("instance=~\"$instance\""));
}

#[test]
fn dashboard_panels_tile_the_grid_and_query_the_datasource() {
    let dash = dashboard();
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = str_at(p, "/title");
        assert!(
            ids.insert(p["id"].as_u64().expect("id")),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().expect("gridPos"));
        assert!(w > 0 && h > 0 && x + w <= 24, "{title}: {g}");
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), title.to_string()) {
                    panic!("{title} overlaps {other} at ({cx}, {cy})");
                }
            }
        }
        if p["type"] == "row" {
            assert!(p["collapsed"] == false && h == 1, "{title}");
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&str_at(p, "/type")),
            "{title}: a panel type infra/grafana/preview does not draw"
        );
        assert!(!str_at(p, "/description").is_empty(), "{title}");
        assert_eq!(str_at(p, "/datasource/uid"), DATASOURCE, "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(str_at(t, "/datasource/uid"), DATASOURCE, "{title}");
            assert!(refs.insert(str_at(t, "/refId")), "{title}: duplicate refId");
        }
    }
}

#[test]
fn dashboard_queries_name_only_documented_metrics_and_cover_them_all() {
    let dash = dashboard();
    let mut errors = Vec::new();
    let mut used = BTreeSet::new();
    for (title, targets) in dashboard_queries(&dash) {
        for (expr, legend) in targets {
            let mut errs = Vec::new();
            let (labels, names) = check_query(&expr, &[], &mut errs);
            used.extend(names);
            // The instance variable filters every series.
            for sel in &parse_query(&expr).map(|q| q.selectors).unwrap_or_default() {
                if !sel
                    .matchers
                    .iter()
                    .any(|(l, op, v)| l == "instance" && op == "=~" && v == "$instance")
                {
                    errs.push(format!("{} without instance=~\"$instance\"", sel.series));
                }
            }
            for label in template_labels(&legend) {
                if !labels.contains(&label) {
                    errs.push(format!(
                        "legend {legend:?} names {label:?}, not a label here"
                    ));
                }
            }
            errors.extend(errs.into_iter().map(|e| format!("panel {title:?}: {e}")));
        }
    }
    for (name, _, _) in METRICS {
        if !used.contains(name) {
            errors.push(format!("no panel shows {name}"));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn dashboard_has_the_latency_quantiles() {
    let dash = dashboard();
    let all: Vec<String> = dashboard_queries(&dash)
        .into_iter()
        .flat_map(|(_, t)| t.into_iter().map(|(e, _)| e))
        .collect();
    for q in ["0.5", "0.99", "0.999"] {
        let prefix = format!(
            "histogram_quantile({q}, sum by (le) (rate(splitter_request_duration_seconds_bucket"
        );
        assert!(
            all.iter().any(|e| e.starts_with(&prefix)),
            "no p{q} of the request latency"
        );
    }
    for q in ["0.5", "0.99"] {
        let prefix = format!(
            "histogram_quantile({q}, sum by (backend, le) (rate(splitter_backend_duration_seconds_bucket"
        );
        assert!(
            all.iter().any(|e| e.starts_with(&prefix)),
            "no per-backend p{q}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The alert rules
// ---------------------------------------------------------------------------------------------

fn prometheus_dir() -> PathBuf {
    repo_path("infra/prometheus")
}

#[derive(Debug, Default)]
struct Alert {
    name: String,
    expr: String,
    r#for: Option<String>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The alerts of splitter.rules.yml, read line by line: the file keeps to one layout (`expr: |`
/// blocks, one key per line, double-quoted annotations), which this reader holds it to.
fn alerts() -> Vec<Alert> {
    let text = read(&prometheus_dir().join("splitter.rules.yml"));
    let mut alerts: Vec<Alert> = Vec::new();
    let mut section = "";
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if let Some(name) = t.strip_prefix("- alert: ") {
            alerts.push(Alert {
                name: name.to_string(),
                ..Alert::default()
            });
            section = "";
            continue;
        }
        if t.starts_with("- record:") {
            panic!("recording rules are not expected: {t}");
        }
        let Some(alert) = alerts.last_mut() else {
            continue;
        };
        let indent = line.len() - line.trim_start().len();
        match t {
            "expr: |" => {
                while let Some(next) = lines.peek() {
                    let ni = next.len() - next.trim_start().len();
                    if next.trim().is_empty() || ni <= indent {
                        break;
                    }
                    alert.expr.push_str(next.trim());
                    alert.expr.push('\n');
                    lines.next();
                }
            }
            "labels:" | "annotations:" => {
                section = if t == "labels:" {
                    "labels"
                } else {
                    "annotations"
                }
            }
            _ => {
                let (k, v) = t
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("{}: unexpected line {t:?}", alert.name));
                let v = v.trim();
                if k == "for" {
                    alert.r#for = Some(v.to_string());
                } else if k == "expr" {
                    panic!("{}: write expr as a `|` block", alert.name);
                } else {
                    let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                        Some(inner) => inner.replace("\\\"", "\""),
                        None => v.to_string(),
                    };
                    let map = match section {
                        "labels" => &mut alert.labels,
                        "annotations" => &mut alert.annotations,
                        _ => panic!("{}: {k} outside labels/annotations", alert.name),
                    };
                    map.insert(k.to_string(), v);
                }
            }
        }
    }
    alerts
}

#[test]
fn alert_rules_name_only_documented_metrics_and_say_what_fired() {
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for expected in [
        "SplitterDown",
        "NoBackendValid",
        "HighNoContentRate",
        "DeadlineMisses",
        "BackendEjected",
        "FdsNearLimit",
        "ReloadFailed",
    ] {
        assert!(names.contains(expected), "no {expected} alert in {names:?}");
    }
    assert_eq!(names.len(), alerts.len(), "duplicate alert names");
    let mut errors = Vec::new();
    for a in &alerts {
        let mut errs = Vec::new();
        if a.expr.trim().is_empty() {
            errs.push("no expr".to_string());
        }
        let (labels, _) = check_query(&a.expr, &[("up", &["job", "instance"])], &mut errs);
        if a.r#for.is_none() {
            errs.push("no `for:`".into());
        }
        match a.labels.get("severity").map(String::as_str) {
            Some("critical" | "warning") => {}
            other => errs.push(format!("severity {other:?}")),
        }
        for key in ["summary", "description"] {
            let Some(text) = a.annotations.get(key) else {
                errs.push(format!("no {key}"));
                continue;
            };
            if !text.contains("$labels.instance") {
                errs.push(format!("{key} does not name the instance"));
            }
            for label in template_labels(text) {
                if !labels.contains(&label) {
                    errs.push(format!(
                        "{key} names label {label:?}, which the query lacks"
                    ));
                }
            }
        }
        if a.name.starts_with("Backend")
            && !a
                .annotations
                .get("summary")
                .is_some_and(|s| s.contains("$labels.backend"))
        {
            errs.push("a backend alert's summary must name the backend".into());
        }
        errors.extend(errs.into_iter().map(|e| format!("alert {}: {e}", a.name)));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let text = read(&prometheus_dir().join("splitter.rules.test.yml"));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    for (i, line) in lines.iter().enumerate() {
        if let Some(name) = line.strip_prefix("alertname: ") {
            let exp = lines[i + 1..]
                .iter()
                .find(|l| l.starts_with("exp_alerts:"))
                .unwrap_or_else(|| panic!("no exp_alerts after {line}"));
            if *exp == "exp_alerts: []" {
                quiet.insert(name.to_string());
            } else {
                fires.insert(name.to_string());
            }
        }
    }
    for a in alerts() {
        assert!(
            fires.contains(&a.name),
            "no unit test where {} fires",
            a.name
        );
        assert!(
            quiet.contains(&a.name),
            "no unit test where {} stays quiet",
            a.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// With promtool
// ---------------------------------------------------------------------------------------------

fn promtool(args: &[&str], dir: &Path, stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(require_tool("promtool"));
    cmd.args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("promtool {args:?}: {e}"));
    if let Some(input) = stdin {
        // Dropped at the end of the statement: promtool sees the end of its input.
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool"]
fn promtool_checks_the_rules_runs_their_unit_tests_and_checks_the_example_config() {
    let dir = prometheus_dir();
    for args in [
        &["check", "rules", "splitter.rules.yml"][..],
        &["test", "rules", "splitter.rules.test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        assert_ok(
            &promtool(args, &dir, None),
            &format!("promtool {}", args.join(" ")),
        );
    }
}

#[test]
#[ignore = "needs promtool"]
fn promtool_parses_every_dashboard_query() {
    // As recording rules of a scratch file: `promtool check rules` parses each expression.
    let dash = dashboard();
    let mut file = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for (title, targets) in dashboard_queries(&dash) {
        for (expr, _) in targets {
            n += 1;
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$instance", ".*")
                .replace("$backend", ".*");
            file.push_str(&format!(
                "      # {title}\n      - record: dashboard:query_{n}\n        expr: {}\n",
                serde_json::to_string(&expr).unwrap()
            ));
        }
    }
    let dir = TempDir::new("dashboard-queries");
    dir.write("dashboard.rules.yml", &file);
    let out = promtool(&["check", "rules", "dashboard.rules.yml"], &dir.path, None);
    assert_ok(
        &out,
        &format!("promtool check rules on the dashboard's queries:\n{file}"),
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("SUCCESS: {n} rules found")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs promtool"]
fn a_running_splitter_metrics_pass_promtool_check_metrics() {
    require_tool("promtool");
    // a answers in time, b never before the deadline: 200s with a winner, timeouts.
    let a = SPLITTER.mock_backend("a", &["--price", "2"]);
    let b = SPLITTER.mock_backend("b", &["--price", "3", "--delay-ms", "400"]);
    let s = SPLITTER.run(&config(
        "",
        "",
        &[("a", a.addr), ("b", b.addr)],
        &[("/fast", 80)],
    ));
    for i in 0..3 {
        s.request(&common::bid("/fast", &format!("m{i}")))
            .assert_won(&format!("m{i}"));
    }
    // No route: 404.
    assert_eq!(s.request(&common::bid("/none", "m404")).status, 404);
    let m = s.wait_metrics(Duration::from_secs(5), |m| {
        m.get("splitter_responses_total", &[("status", "200")]) >= 3.0
    });

    // What Prometheus gets when it asks for the text format (no Accept: the same).
    let r = s.admin_get("/metrics");
    assert_eq!(r.status, 200);
    let content_type = r.header("content-type").unwrap_or("").to_ascii_lowercase();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    let text = r.body_str();
    let out = promtool(&["check", "metrics"], Path::new("."), Some(text.as_bytes()));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\n{}{}\n--- the scrape:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The documented metrics it exports have the documented types; those it does not export
    // yet are only listed.
    let types: BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let mut missing = Vec::new();
    for (name, kind, _) in METRICS {
        let expected = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        match types.get(name) {
            Some(t) => assert_eq!(*t, expected, "# TYPE of {name}"),
            None => missing.push(*name),
        }
    }
    if !missing.is_empty() {
        eprintln!("documented metrics not exported by this build (yet): {missing:?}");
    }
    assert!(m.has("splitter_requests_total"), "{}", m.text);
}

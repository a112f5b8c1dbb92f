//! The route table: which deadline a request path gets (SPEC 3, 6).
//!
//! Owns matching a request path against the configured prefixes. It does no I/O and never sees
//! the query: the caller strips it (SPEC 6: "plain string prefix of the path, not the query").

use std::time::Duration;

/// One configured route: the requests whose path starts with `path_prefix` get `timeout`.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    /// Byte-wise prefix of the request path, e.g. `/fast`; `/fast` also matches `/faster`.
    pub path_prefix: String,
    /// Deadline of the fan-out, counted from the moment the whole client request was read.
    pub timeout: Duration,
    /// A number worse than this makes a reply invalid (the route's `floor`, else `[select]`'s).
    pub floor: Option<f64>,
    /// The backends this route fans out to, one bit per backend index (all by default).
    pub backends: u16,
    /// Index of its counters in the metrics cell, given by the control plane so that a route
    /// keeps its counters across reloads.
    pub slot: usize,
}

/// Maps a request path to its [`Route`]: the longest matching prefix wins.
///
/// Built once per configuration (and again on reload), read per request. A handful of routes
/// is the norm, so the table is a vector sorted by prefix length, longest first, and a lookup is
/// a linear scan that stops at the first hit: no allocation, no hashing, cache friendly.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Longest prefix first; among equal lengths, configuration order (the sort is stable).
    routes: Vec<Route>,
}

impl RouteTable {
    /// Builds the table from the validated routes, in configuration order.
    ///
    /// Config validation rejects duplicate prefixes; should two equal prefixes reach this
    /// function anyway, the one configured first wins.
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.path_prefix.len()));
        Self { routes }
    }

    /// The route of `path` (the request target without its `?query`), or `None`, which the
    /// caller answers with `404 Not Found`.
    ///
    /// Matching is on raw bytes, as received: no percent-decoding, no dot-segment removal, no
    /// case folding. Backends get the same bytes, so both sides agree on what was asked for.
    pub fn lookup(&self, path: &[u8]) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| path.starts_with(r.path_prefix.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, u64)]) -> RouteTable {
        let routes: Vec<Route> = routes
            .iter()
            .map(|&(prefix, ms)| Route {
                path_prefix: prefix.to_owned(),
                timeout: Duration::from_millis(ms),
                floor: None,
                backends: u16::MAX,
                slot: 0,
            })
            .collect();
        RouteTable::new(routes)
    }

    /// The prefix of the route `path` resolves to, for compact tables.
    fn hit<'a>(table: &'a RouteTable, path: &str) -> Option<&'a str> {
        table
            .lookup(path.as_bytes())
            .map(|r| r.path_prefix.as_str())
    }

    #[test]
    fn longest_prefix_wins_whatever_the_configuration_order() {
        let orders: [&[(&str, u64)]; 3] = [
            &[("/", 450), ("/fast", 80), ("/fast/lane", 20)],
            &[("/fast/lane", 20), ("/", 450), ("/fast", 80)],
            &[("/fast", 80), ("/fast/lane", 20), ("/", 450)],
        ];
        for routes in orders {
            let t = table(routes);
            assert_eq!(hit(&t, "/"), Some("/"), "{routes:?}");
            assert_eq!(hit(&t, "/bid"), Some("/"), "{routes:?}");
            assert_eq!(hit(&t, "/fast"), Some("/fast"), "{routes:?}");
            assert_eq!(hit(&t, "/fast/"), Some("/fast"), "{routes:?}");
            assert_eq!(hit(&t, "/fast/lan"), Some("/fast"), "{routes:?}");
            assert_eq!(hit(&t, "/fast/lane"), Some("/fast/lane"), "{routes:?}");
            assert_eq!(hit(&t, "/fast/lane/x"), Some("/fast/lane"), "{routes:?}");
        }
    }

    #[test]
    fn lookup_returns_the_route_timeout() {
        let t = table(&[("/", 450), ("/fast", 80)]);
        assert_eq!(
            t.lookup(b"/fast/x").map(|r| r.timeout),
            Some(Duration::from_millis(80))
        );
        assert_eq!(
            t.lookup(b"/slow").map(|r| r.timeout),
            Some(Duration::from_millis(450))
        );
    }

    #[test]
    fn prefix_is_plain_bytes_not_path_segments() {
        let t = table(&[("/fast", 80)]);
        assert_eq!(hit(&t, "/faster"), Some("/fast"));
        assert_eq!(hit(&t, "/fas"), None);
        assert_eq!(hit(&t, "/FAST"), None, "case sensitive");
        assert_eq!(hit(&t, "/%66ast"), None, "no percent-decoding");
        assert_eq!(hit(&t, "//fast"), None, "no normalisation");
    }

    #[test]
    fn no_match_is_none() {
        let t = table(&[("/fast", 80), ("/bid", 100)]);
        assert_eq!(hit(&t, "/"), None);
        assert_eq!(hit(&t, ""), None);
        assert_eq!(hit(&t, "*"), None, "asterisk-form target");
        assert_eq!(
            hit(&t, "http://h/fast"),
            None,
            "absolute-form is the caller's job"
        );
        assert!(table(&[]).lookup(b"/").is_none());
    }

    #[test]
    fn root_route_catches_everything_starting_with_a_slash() {
        let t = table(&[("/", 450)]);
        for path in ["/", "/a", "/a/b/c", "/\u{e9}t\u{e9}"] {
            assert_eq!(hit(&t, path), Some("/"), "{path}");
        }
        assert_eq!(
            t.lookup(b"/\xff\xfe").map(|r| r.timeout.as_millis()),
            Some(450)
        );
    }

    #[test]
    fn equal_prefixes_first_configured_wins() {
        let t = table(&[("/a", 1), ("/b", 2), ("/a", 3)]);
        assert_eq!(t.lookup(b"/a").map(|r| r.timeout.as_millis()), Some(1));
        assert_eq!(t.lookup(b"/b").map(|r| r.timeout.as_millis()), Some(2));
    }
}

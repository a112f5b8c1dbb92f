//! What is measured: scenarios, pinning modes and targets, and how each shapes a run.

use crate::bench::proc::Cpus;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A closed set of named values, selectable one by one, by group or as `all` on the command
/// line.
pub trait Named: Copy + PartialEq + Sized + 'static {
    const ALL: &'static [Self];
    /// Names that select several values at once (`fanout`), with the values they select.
    const GROUPS: &'static [(&'static str, &'static [Self])] = &[];
    fn name(self) -> &'static str;
}

/// A command-line choice of values of `T`: one, a group, a comma-separated list of them
/// (`fast,fanout`), or `all` of them; in `T::ALL`'s order, each once.
#[derive(Clone, Debug)]
pub struct Selection<T>(pub Vec<T>);

impl<T: Named> FromStr for Selection<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(Selection(T::ALL.to_vec()));
        }
        let mut picked = vec![false; T::ALL.len()];
        for name in s.split(',').map(str::trim) {
            if let Some(i) = T::ALL.iter().position(|v| v.name() == name) {
                picked[i] = true;
            } else if let Some((_, members)) = T::GROUPS.iter().find(|(g, _)| *g == name) {
                for member in members.iter() {
                    if let Some(i) = T::ALL.iter().position(|v| v == member) {
                        picked[i] = true;
                    }
                }
            } else {
                let names: Vec<_> = T::ALL
                    .iter()
                    .map(|v| v.name())
                    .chain(T::GROUPS.iter().map(|(g, _)| *g))
                    .collect();
                return Err(format!(
                    "expected {}, a list of them, or all",
                    names.join(", ")
                ));
            }
        }
        Ok(Selection(
            T::ALL
                .iter()
                .zip(picked)
                .filter_map(|(v, p)| p.then_some(*v))
                .collect(),
        ))
    }
}

macro_rules! named {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }
     $(groups { $($g:literal => [$($gv:ident),+ $(,)?]),+ $(,)? })?) => {
        impl Named for $t {
            const ALL: &'static [Self] = &[$(<$t>::$v),+];
            $(const GROUPS: &'static [(&'static str, &'static [Self])] =
                &[$(($g, &[$(<$t>::$gv),+])),+];)?
            fn name(self) -> &'static str {
                match self { $(<$t>::$v => $s),+ }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }
    };
}

/// How the mock backends behave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// Backends answer at once: the cost of the hop itself.
    Fast,
    /// Backends take 1-76 ms and 5% of replies take 95 ms, past the 80 ms route deadline.
    Deadline,
    /// OpenRTB: a 2 KB BidRequest, BidResponses of 3 seats x 2 bids (2 KB), half of them
    /// gzip-compressed, the price selected with `/seatbid/*/bid/*/price`.
    OpenRtb,
    /// The same with no reply compressed: the difference to `openrtb` is the gzip share's cost.
    OpenRtbPlain,
    /// `fast`'s backends, 2 of them, measured in the fan-out series (only the splitter runs).
    FanOut2,
    /// `fast`'s backends, 4 of them: the cost of fan-out.
    FanOut4,
    /// `fast`'s backends, 8 of them.
    FanOut8,
    /// `fast`'s backends, 16 of them (the most a route may have).
    FanOut16,
}
named!(Scenario {
    Fast => "fast",
    Deadline => "deadline",
    OpenRtb => "openrtb",
    OpenRtbPlain => "openrtb-plain",
    FanOut2 => "fanout-2",
    FanOut4 => "fanout-4",
    FanOut8 => "fanout-8",
    FanOut16 => "fanout-16",
} groups {
    "fanout" => [FanOut2, FanOut4, FanOut8, FanOut16],
});

/// The splitter targets: the only ones of the fan-out scenarios.
const SPLITTERS: &[Target] = &[Target::SplitterUring, Target::SplitterEpoll];

/// The selection field of the OpenRTB scenarios: the best price of every bid of every seat.
pub const OPENRTB_FIELD: &str = "/seatbid/*/bid/*/price";

impl Scenario {
    /// Mock backends behind the splitter (HAProxy and `direct` always have one).
    pub fn backends(self) -> usize {
        match self {
            Scenario::Fast
            | Scenario::Deadline
            | Scenario::OpenRtb
            | Scenario::OpenRtbPlain
            | Scenario::FanOut2 => 2,
            Scenario::FanOut4 => 4,
            Scenario::FanOut8 => 8,
            Scenario::FanOut16 => 16,
        }
    }

    /// Whether this is one of the fan-out series, `fanout-N`.
    pub fn is_fanout(self) -> bool {
        matches!(
            self,
            Scenario::FanOut2 | Scenario::FanOut4 | Scenario::FanOut8 | Scenario::FanOut16
        )
    }

    /// The targets measured: the fan-out series measures only the splitter, whose unit (one
    /// HAProxy forward) comes from the `fast` scenario of the same run.
    pub fn targets(self) -> &'static [Target] {
        if self.is_fanout() {
            SPLITTERS
        } else {
            Target::ALL
        }
    }

    /// `splitter mock-backend` flags. Every scenario replies with about 2 KB of JSON at random
    /// prices, so the winning backend changes from request to request.
    pub fn mock_flags(self) -> &'static [&'static str] {
        match self {
            Scenario::Fast
            | Scenario::FanOut2
            | Scenario::FanOut4
            | Scenario::FanOut8
            | Scenario::FanOut16 => &["--body-bytes", "2048", "--price-range", "0.1..10"],
            Scenario::Deadline => &[
                "--body-bytes",
                "2048",
                "--price-range",
                "0.1..10",
                "--delay-ms",
                "1..76",
                "--late-share",
                "0.05",
                "--late-delay-ms",
                "95",
            ],
            Scenario::OpenRtb => &[
                "--body-bytes",
                "2048",
                "--price-range",
                "0.1..10",
                "--openrtb",
                "3x2",
                "--gzip",
                "0.5",
            ],
            Scenario::OpenRtbPlain => &[
                "--body-bytes",
                "2048",
                "--price-range",
                "0.1..10",
                "--openrtb",
                "3x2",
            ],
        }
    }

    /// The splitter's deadline for route `/`.
    pub fn route_timeout_ms(self) -> u64 {
        match self {
            Scenario::Deadline => 80,
            _ => 450,
        }
    }

    /// The splitter's `select.field`, when not the default `/price`.
    pub fn select_field(self) -> Option<&'static str> {
        match self {
            Scenario::OpenRtb | Scenario::OpenRtbPlain => Some(OPENRTB_FIELD),
            _ => None,
        }
    }

    /// The wrk scripts, relative to the workspace root: the load, and the check of every
    /// response's echoed request id.
    pub fn scripts(self) -> (&'static str, &'static str) {
        match self {
            Scenario::OpenRtb | Scenario::OpenRtbPlain => {
                ("bench/post-ortb.lua", "bench/post-ortb-check.lua")
            }
            _ => ("bench/post-2k.lua", "bench/post-2k-check.lua"),
        }
    }
}

/// Where the processes run on this (two-core) machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pinning {
    /// Everything may run anywhere; the target uses every CPU.
    Unpinned,
    /// The target alone on CPU 0 with one thread; load and backends on CPU 1.
    Pinned,
}
named!(Pinning { Unpinned => "unpinned", Pinned => "pinned" });

impl Pinning {
    pub fn target_cpus(self) -> Cpus {
        match self {
            Pinning::Unpinned => Cpus::Any,
            Pinning::Pinned => Cpus::Only(0),
        }
    }

    /// CPUs of wrk and the mock backends.
    pub fn load_cpus(self) -> Cpus {
        match self {
            Pinning::Unpinned => Cpus::Any,
            Pinning::Pinned => Cpus::Only(1),
        }
    }

    /// Threads the target serves with: the splitter's workers and HAProxy's `nbthread`.
    pub fn target_threads(self, nproc: usize) -> usize {
        match self {
            Pinning::Unpinned => nproc,
            Pinning::Pinned => 1,
        }
    }
}

/// What wrk loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The splitter with two mock backends, on its io_uring shell.
    SplitterUring,
    /// The same, on its epoll shell.
    SplitterEpoll,
    /// HAProxy forwarding to one mock backend: the efficiency yardstick.
    Haproxy,
    /// One mock backend, directly: what a backend's reply costs.
    Direct,
}
named!(Target {
    SplitterUring => "splitter-uring",
    SplitterEpoll => "splitter-epoll",
    Haproxy => "haproxy",
    Direct => "direct",
});

impl Target {
    /// The splitter's `io` setting, for the splitter targets.
    pub fn splitter_io(self) -> Option<&'static str> {
        match self {
            Target::SplitterUring => Some("uring"),
            Target::SplitterEpoll => Some("epoll"),
            Target::Haproxy | Target::Direct => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_by_name_group_or_all() {
        assert_eq!(
            "all".parse::<Selection<Scenario>>().unwrap().0,
            [
                Scenario::Fast,
                Scenario::Deadline,
                Scenario::OpenRtb,
                Scenario::OpenRtbPlain,
                Scenario::FanOut2,
                Scenario::FanOut4,
                Scenario::FanOut8,
                Scenario::FanOut16,
            ]
        );
        assert_eq!(
            "pinned".parse::<Selection<Pinning>>().unwrap().0,
            [Pinning::Pinned]
        );
        assert_eq!(
            "openrtb-plain,fast,openrtb,fast"
                .parse::<Selection<Scenario>>()
                .unwrap()
                .0,
            [Scenario::Fast, Scenario::OpenRtb, Scenario::OpenRtbPlain]
        );
        let err = "slow".parse::<Selection<Scenario>>().unwrap_err();
        assert_eq!(
            err,
            "expected fast, deadline, openrtb, openrtb-plain, fanout-2, fanout-4, fanout-8, \
             fanout-16, fanout, a list of them, or all"
        );
        assert!("fast,".parse::<Selection<Scenario>>().is_err());
        let err = "fanout".parse::<Selection<Pinning>>().unwrap_err();
        assert_eq!(err, "expected unpinned, pinned, a list of them, or all");
    }

    #[test]
    fn the_fanout_group_selects_the_series_once_in_order() {
        assert_eq!(
            "fanout-8, fanout,fast"
                .parse::<Selection<Scenario>>()
                .unwrap()
                .0,
            [
                Scenario::Fast,
                Scenario::FanOut2,
                Scenario::FanOut4,
                Scenario::FanOut8,
                Scenario::FanOut16,
            ]
        );
        assert_eq!(
            "fanout-16".parse::<Selection<Scenario>>().unwrap().0,
            [Scenario::FanOut16]
        );
    }

    #[test]
    fn fanout_scenarios_are_fast_backends_in_number_behind_the_splitter_alone() {
        let counts: Vec<usize> = Scenario::ALL.iter().map(|s| s.backends()).collect();
        assert_eq!(counts, [2, 2, 2, 2, 2, 4, 8, 16]);
        for &s in Scenario::ALL {
            assert_eq!(s.is_fanout(), s.name().starts_with("fanout-"), "{s}");
            if s.is_fanout() {
                assert_eq!(s.targets(), [Target::SplitterUring, Target::SplitterEpoll]);
                assert_eq!(s.mock_flags(), Scenario::Fast.mock_flags());
                assert_eq!(s.route_timeout_ms(), Scenario::Fast.route_timeout_ms());
                assert_eq!(s.scripts(), Scenario::Fast.scripts());
                assert_eq!(s.select_field(), None);
            } else {
                assert_eq!(s.targets(), Target::ALL);
            }
        }
    }
}

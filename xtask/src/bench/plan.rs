//! What is measured: scenarios, pinning modes and targets, and how each shapes a run.

use crate::bench::proc::Cpus;
use serde::Serialize;
use std::fmt;
use std::str::FromStr;

/// A closed set of named values, selectable one by one or as `all` on the command line.
pub trait Named: Copy + Sized + 'static {
    const ALL: &'static [Self];
    fn name(self) -> &'static str;
}

/// A command-line choice of one value of `T`, or `all` of them.
#[derive(Clone, Debug)]
pub struct Selection<T>(pub Vec<T>);

impl<T: Named> FromStr for Selection<T> {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "all" {
            return Ok(Selection(T::ALL.to_vec()));
        }
        match T::ALL.iter().find(|v| v.name() == s) {
            Some(v) => Ok(Selection(vec![*v])),
            None => {
                let names: Vec<_> = T::ALL.iter().map(|v| v.name()).collect();
                Err(format!("expected {} or all", names.join(", ")))
            }
        }
    }
}

macro_rules! named {
    ($t:ty { $($v:ident => $s:literal),+ $(,)? }) => {
        impl Named for $t {
            const ALL: &'static [Self] = &[$(<$t>::$v),+];
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
}
named!(Scenario { Fast => "fast", Deadline => "deadline" });

impl Scenario {
    /// `splitter mock-backend` flags. Both scenarios reply with about 2 KB of JSON at a random
    /// price, so the winning backend changes from request to request.
    pub fn mock_flags(self) -> &'static [&'static str] {
        match self {
            Scenario::Fast => &["--body-bytes", "2048", "--price-range", "0.1..10"],
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
        }
    }

    /// The splitter's deadline for route `/`.
    pub fn route_timeout_ms(self) -> u64 {
        match self {
            Scenario::Fast => 450,
            Scenario::Deadline => 80,
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
    /// One mock backend, directly: shows the backends and wrk are not the bottleneck.
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
    fn selections_by_name_or_all() {
        assert_eq!(
            "all".parse::<Selection<Scenario>>().unwrap().0,
            [Scenario::Fast, Scenario::Deadline]
        );
        assert_eq!(
            "pinned".parse::<Selection<Pinning>>().unwrap().0,
            [Pinning::Pinned]
        );
        let err = "slow".parse::<Selection<Scenario>>().unwrap_err();
        assert_eq!(err, "expected fast, deadline or all");
    }
}

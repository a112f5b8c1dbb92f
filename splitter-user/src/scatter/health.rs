//! Backend health (SPEC 9): after `eject_after` consecutive errors or timeouts a backend is
//! ejected for a back-off that doubles while it keeps failing (capped), then probed once before
//! it takes traffic again.
//!
//! Sans-IO: one [`Health`] per backend and worker, fed outcomes and the time; the shell asks it
//! before each request whether to send ([`Health::admit`]) and tells it how each ended
//! ([`Health::record`]). Each worker judges on its own, as it sees the backend: nothing shared.

use std::time::{Duration, Instant};

/// The first ejection's length.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest ejection: a backend back after an outage is tried at least this often.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Whether a request goes to the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Up: send.
    Send,
    /// Its back-off is over: this request (or a health check) is the one probe.
    Probe,
    /// Ejected, or its probe is out: do not send, do not wait for it.
    Skip,
}

/// What a recorded outcome changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing the operator needs to hear of.
    None,
    /// The backend was ejected (again, after a failed probe).
    Ejected,
    /// The backend is back.
    Restored,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    Ejected { until: Instant },
    Probing,
}

/// One backend's health as one worker sees it.
#[derive(Clone, Debug)]
pub struct Health {
    /// Consecutive failures that eject; 0 never ejects.
    eject_after: u32,
    /// Consecutive failures so far.
    failures: u32,
    state: State,
    /// The length of the next ejection.
    backoff: Duration,
}

impl Health {
    /// A healthy backend that is ejected after `eject_after` consecutive failures (0: never).
    pub fn new(eject_after: u32) -> Self {
        Health {
            eject_after,
            failures: 0,
            state: State::Up,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Takes a new `eject_after` (after a reload); the state stays.
    pub fn set_eject_after(&mut self, eject_after: u32) {
        self.eject_after = eject_after;
        if eject_after == 0 {
            self.restore();
        }
    }

    /// Whether a request at `now` goes to the backend. A `Probe` answer is given once per
    /// back-off: until its outcome is recorded, every other request skips the backend.
    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Up => Admit::Send,
            State::Ejected { until } if now >= until => {
                self.state = State::Probing;
                Admit::Probe
            }
            State::Ejected { .. } | State::Probing => Admit::Skip,
        }
    }

    /// Whether the backend is out of rotation (ejected, or waiting for its probe).
    pub fn is_ejected(&self) -> bool {
        self.state != State::Up
    }

    /// How a request sent to the backend ended: `ok` for any whole HTTP response, `false` for an
    /// error or a timeout.
    pub fn record(&mut self, ok: bool, now: Instant) -> Change {
        if ok {
            self.failures = 0;
            return if self.is_ejected() {
                self.restore();
                Change::Restored
            } else {
                Change::None
            };
        }
        if self.eject_after == 0 {
            return Change::None;
        }
        self.failures = self.failures.saturating_add(1);
        match self.state {
            State::Up if self.failures >= self.eject_after => {
                self.eject(now);
                Change::Ejected
            }
            State::Probing => {
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                self.eject(now);
                Change::Ejected
            }
            // Requests sent before the ejection still end in failures: no longer news.
            State::Up | State::Ejected { .. } => Change::None,
        }
    }

    fn eject(&mut self, now: Instant) {
        self.state = State::Ejected {
            until: now + self.backoff,
        };
    }

    fn restore(&mut self) {
        self.state = State::Up;
        self.failures = 0;
        self.backoff = FIRST_BACKOFF;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn zero_never_ejects() {
        let t0 = Instant::now();
        let mut h = Health::new(0);
        for i in 0..100 {
            assert_eq!(h.record(false, ms(t0, i)), Change::None);
            assert_eq!(h.admit(ms(t0, i)), Admit::Send);
        }
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_in_between_resets_the_count() {
        let t0 = Instant::now();
        let mut h = Health::new(3);
        assert_eq!(h.record(false, t0), Change::None);
        assert_eq!(h.record(false, t0), Change::None);
        assert_eq!(h.record(true, t0), Change::None);
        assert_eq!(h.record(false, t0), Change::None);
        assert_eq!(h.record(false, t0), Change::None);
        assert_eq!(h.admit(t0), Admit::Send);
        assert_eq!(h.record(false, t0), Change::Ejected);
        assert!(h.is_ejected());
        assert_eq!(h.admit(t0), Admit::Skip);
        // Failures of requests sent before the ejection change nothing.
        assert_eq!(h.record(false, ms(t0, 10)), Change::None);
        assert_eq!(h.admit(ms(t0, 999)), Admit::Skip);
    }

    #[test]
    fn one_probe_per_backoff_and_the_backoff_doubles_to_its_cap() {
        let t0 = Instant::now();
        let mut h = Health::new(1);
        assert_eq!(h.record(false, t0), Change::Ejected);
        let mut now = t0;
        let mut expected = FIRST_BACKOFF;
        for _ in 0..10 {
            assert_eq!(
                h.admit(now + expected - Duration::from_millis(1)),
                Admit::Skip
            );
            now += expected;
            assert_eq!(h.admit(now), Admit::Probe);
            assert_eq!(h.admit(now), Admit::Skip, "one probe at a time");
            assert_eq!(h.record(false, now), Change::Ejected, "the probe failed");
            expected = (expected * 2).min(MAX_BACKOFF);
        }
        assert_eq!(expected, MAX_BACKOFF);
        now += expected;
        assert_eq!(h.admit(now), Admit::Probe);
        assert_eq!(h.record(true, now), Change::Restored);
        assert_eq!(h.admit(now), Admit::Send);
        // The next ejection starts from the first back-off again.
        assert_eq!(h.record(false, now), Change::Ejected);
        assert_eq!(h.admit(now + FIRST_BACKOFF), Admit::Probe);
    }

    #[test]
    fn turning_ejection_off_restores() {
        let t0 = Instant::now();
        let mut h = Health::new(1);
        h.record(false, t0);
        assert!(h.is_ejected());
        h.set_eject_after(0);
        assert_eq!(h.admit(t0), Admit::Send);
    }
}

//! One request's fan-out: which backends answered, which answer is best, and when it is over
//! (SPEC 2, 3).
//!
//! Sans-IO: no sockets, no timers, never reads the clock. Time comes in as `now: Instant`, the
//! next wake-up goes out through [`Exchange::poll_timeout`]. The shell owns the connections,
//! the response bytes and the one timer, and tells the exchange what happened.

use std::time::Instant;

use serde::Deserialize;

/// Index of a backend in the configured list (`[[backend]]` order), below [`MAX_BACKENDS`].
pub type BackendId = usize;

/// Most backends one exchange tracks: their states are bits of a `u16`. SPEC 6 caps the
/// configuration at 16 too.
pub const MAX_BACKENDS: usize = u16::BITS as usize;

/// Which number is best (`[select] prefer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prefer {
    /// The largest number wins, e.g. the highest bid (SPEC 6 default).
    #[default]
    Max,
    /// The smallest number wins, e.g. the cheapest quote.
    Min,
}

/// What the client gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// This backend's response, byte for byte.
    Chosen(BackendId),
    /// `204 No Content`: no valid response in time.
    NoContent,
}

/// How one backend did in one exchange: the `outcome` label of
/// `splitter_backend_responses_total` (SPEC 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendOutcome {
    /// A usable response: status 200 and the selected field is a finite number.
    Valid,
    /// A whole HTTP response in time, but not usable: status, JSON, field.
    Invalid,
    /// Nothing usable before the deadline.
    Timeout,
    /// Connect refused, reset, bad HTTP, before the deadline.
    Error,
}

impl BackendOutcome {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

/// The state of one client request fanned out to every backend.
///
/// Methods come in three kinds:
/// - inputs: [`handle_reply`](Self::handle_reply) (a whole response arrived) and
///   [`handle_failure`](Self::handle_failure) (the backend's exchange broke);
/// - outputs: [`poll_outcome`](Self::poll_outcome) and [`poll_timeout`](Self::poll_timeout);
/// - getters: [`best`](Self::best), [`backend_outcome`](Self::backend_outcome).
///
/// After every input, and when the timer fires, drain in this order: `poll_outcome(now)`; if it
/// gave `None`, re-arm the timer at `poll_timeout()` (it only changes from the deadline to
/// `None`). Once `poll_outcome` has given `Some`, the exchange is over: later inputs are
/// ignored and every backend's [`BackendOutcome`] is final, ready for the metrics.
///
/// Ordering rules, all relative to the `now` given with each input:
/// - an input at or after the deadline changes nothing: that backend stays a `Timeout`;
/// - the first input from a backend counts, later ones from the same backend are ignored
///   (the shell should not send them, but a duplicate must never replace an answer);
/// - ties go to the earlier arrival, i.e. to whichever `handle_reply` came first.
///
/// Fixed size and allocation-free: a few bitmasks and the best so far.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// One bit per configured backend: the ones this exchange waits for.
    all: u16,
    /// Backends that answered (reply or failure) before the deadline.
    answered: u16,
    /// Of `answered`, those whose reply was valid.
    valid: u16,
    /// Of `answered`, those that failed (transport or HTTP error).
    failed: u16,
    /// The best valid reply so far and its number.
    best: Option<(BackendId, f64)>,
    /// When the client gets its answer at the latest.
    deadline: Instant,
    /// Largest or smallest number wins.
    prefer: Prefer,
    /// `poll_outcome` gave its answer: the exchange is over.
    decided: bool,
}

impl Exchange {
    /// A new exchange over backends `0..backends`, due at `deadline`.
    ///
    /// # Panics
    ///
    /// If `backends` exceeds [`MAX_BACKENDS`]; config validation prevents it.
    pub fn new(backends: usize, deadline: Instant, prefer: Prefer) -> Self {
        assert!(
            backends <= MAX_BACKENDS,
            "{backends} backends, at most {MAX_BACKENDS}"
        );
        Self {
            // Shifting a u16 by 16 overflows, hence the detour through u32.
            all: ((1u32 << backends) - 1) as u16,
            answered: 0,
            valid: 0,
            failed: 0,
            best: None,
            deadline,
            prefer,
            decided: false,
        }
    }

    /// A whole response arrived from `b`: `value` is `Some(number)` when it is valid (status
    /// 200 and the field resolved), `None` when it is not.
    ///
    /// Returns `true` when this reply became the best so far: the shell then keeps its bytes
    /// and may drop those of the previous best. A NaN or infinite `value` counts as invalid:
    /// it cannot be ordered, and no real price is infinite.
    ///
    /// # Panics
    ///
    /// If `b` is not one of the backends given to [`new`](Self::new).
    pub fn handle_reply(&mut self, b: BackendId, value: Option<f64>, now: Instant) -> bool {
        let Some(bit) = self.accept(b, now) else {
            return false;
        };
        self.answered |= bit;
        let Some(value) = value.filter(|v| v.is_finite()) else {
            return false;
        };
        self.valid |= bit;
        let better = match (self.best, self.prefer) {
            (None, _) => true,
            // Strict comparisons: on a tie the earlier arrival stays best (SPEC 2).
            (Some((_, best)), Prefer::Max) => value > best,
            (Some((_, best)), Prefer::Min) => value < best,
        };
        if better {
            self.best = Some((b, value));
        }
        better
    }

    /// `b`'s exchange failed (connect refused, reset, bad HTTP): it counts as answered at
    /// once, so dead backends never hold the client until the deadline (SPEC 3).
    ///
    /// # Panics
    ///
    /// If `b` is not one of the backends given to [`new`](Self::new).
    pub fn handle_failure(&mut self, b: BackendId, now: Instant) {
        if let Some(bit) = self.accept(b, now) {
            self.answered |= bit;
            self.failed |= bit;
        }
    }

    /// When to call [`poll_outcome`](Self::poll_outcome) if no input comes first: the deadline
    /// while the exchange waits for a backend, `None` once the outcome is ready or given.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.decided && self.answered != self.all).then_some(self.deadline)
    }

    /// The outcome, once: when every backend has answered, or at `now >= deadline`.
    /// `None` before that, and on every call after the one that gave it.
    pub fn poll_outcome(&mut self, now: Instant) -> Option<Outcome> {
        if self.decided || (self.answered != self.all && now < self.deadline) {
            return None;
        }
        self.decided = true;
        Some(match self.best {
            Some((b, _)) => Outcome::Chosen(b),
            None => Outcome::NoContent,
        })
    }

    /// How `b` did: `Valid`, `Invalid` or `Error` as it answered, `Timeout` when it did not
    /// answer before the deadline. Final once [`poll_outcome`](Self::poll_outcome) gave `Some`;
    /// before that a backend still awaited reads `Timeout`.
    ///
    /// # Panics
    ///
    /// If `b` is not one of the backends given to [`new`](Self::new).
    pub fn backend_outcome(&self, b: BackendId) -> BackendOutcome {
        let bit = self.bit(b);
        if self.valid & bit != 0 {
            BackendOutcome::Valid
        } else if self.failed & bit != 0 {
            BackendOutcome::Error
        } else if self.answered & bit != 0 {
            BackendOutcome::Invalid
        } else {
            BackendOutcome::Timeout
        }
    }

    /// The backend whose valid reply is best so far, if any.
    pub fn best(&self) -> Option<BackendId> {
        self.best.map(|(b, _)| b)
    }

    /// `b`'s bit when an input from it at `now` counts: the exchange is open, the deadline
    /// has not passed, and `b` has not answered yet.
    fn accept(&self, b: BackendId, now: Instant) -> Option<u16> {
        let bit = self.bit(b);
        (!self.decided && now < self.deadline && self.answered & bit == 0).then_some(bit)
    }

    /// `b`'s bit in the masks.
    fn bit(&self, b: BackendId) -> u16 {
        assert!(
            b < MAX_BACKENDS && self.all & (1 << b) != 0,
            "backend {b} is not part of this exchange"
        );
        1 << b
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use BackendOutcome::{Error, Invalid, Timeout, Valid};

    /// The explicit clock: every test starts at `t0` with a 100 ms deadline.
    struct Clock {
        t0: Instant,
    }

    impl Clock {
        fn new() -> Self {
            Self { t0: Instant::now() }
        }

        fn at(&self, ms: u64) -> Instant {
            self.t0 + Duration::from_millis(ms)
        }

        fn exchange(&self, backends: usize, prefer: Prefer) -> Exchange {
            Exchange::new(backends, self.at(100), prefer)
        }
    }

    fn outcomes(x: &Exchange, backends: usize) -> Vec<BackendOutcome> {
        (0..backends).map(|b| x.backend_outcome(b)).collect()
    }

    /// One backend's input in an interleaving.
    #[derive(Clone, Copy, Debug)]
    enum Input {
        Reply(BackendId, Option<f64>),
        Failure(BackendId),
    }

    /// Feeds `inputs` one per millisecond from `t0 + 1 ms`, draining as the type doc says, and
    /// returns the outcome with the time it was given.
    fn run(
        clock: &Clock,
        backends: usize,
        prefer: Prefer,
        inputs: &[Input],
    ) -> (Outcome, u64, Exchange) {
        let mut x = clock.exchange(backends, prefer);
        for (i, input) in inputs.iter().enumerate() {
            let ms = i as u64 + 1;
            match *input {
                Input::Reply(b, v) => {
                    x.handle_reply(b, v, clock.at(ms));
                }
                Input::Failure(b) => x.handle_failure(b, clock.at(ms)),
            }
            if let Some(outcome) = x.poll_outcome(clock.at(ms)) {
                assert_eq!(x.poll_timeout(), None);
                return (outcome, ms, x);
            }
            assert_eq!(x.poll_timeout(), Some(clock.at(100)));
        }
        let outcome = x.poll_outcome(clock.at(100)).expect("the deadline decides");
        (outcome, 100, x)
    }

    /// Every order of `inputs`.
    fn permutations(inputs: &[Input]) -> Vec<Vec<Input>> {
        if inputs.len() <= 1 {
            return vec![inputs.to_vec()];
        }
        let mut all = Vec::new();
        for i in 0..inputs.len() {
            let mut rest = inputs.to_vec();
            let first = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, first);
                all.push(tail);
            }
        }
        all
    }

    #[test]
    fn every_valid_reply_in_time_answers_at_once_with_the_max() {
        let c = Clock::new();
        let inputs = [
            Input::Reply(0, Some(1.5)),
            Input::Reply(1, Some(3.0)),
            Input::Reply(2, Some(2.0)),
        ];
        for order in permutations(&inputs) {
            let (outcome, ms, x) = run(&c, 3, Prefer::Max, &order);
            assert_eq!((outcome, ms), (Outcome::Chosen(1), 3), "{order:?}");
            assert_eq!(outcomes(&x, 3), [Valid, Valid, Valid]);
        }
    }

    #[test]
    fn prefer_min_picks_the_smallest() {
        let c = Clock::new();
        let inputs = [
            Input::Reply(0, Some(1.5)),
            Input::Reply(1, Some(-3.0)),
            Input::Reply(2, Some(2.0)),
        ];
        for order in permutations(&inputs) {
            let (outcome, _, _) = run(&c, 3, Prefer::Min, &order);
            assert_eq!(outcome, Outcome::Chosen(1), "{order:?}");
        }
    }

    #[test]
    fn dead_backends_give_an_immediate_no_content() {
        let c = Clock::new();
        for order in permutations(&[Input::Failure(0), Input::Failure(1)]) {
            let (outcome, ms, x) = run(&c, 2, Prefer::Max, &order);
            assert_eq!((outcome, ms), (Outcome::NoContent, 2), "{order:?}");
            assert_eq!(outcomes(&x, 2), [Error, Error]);
        }
    }

    #[test]
    fn every_mix_of_valid_invalid_and_failed_answers_at_once() {
        let c = Clock::new();
        let inputs = [
            Input::Reply(0, None),
            Input::Failure(1),
            Input::Reply(2, Some(7.0)),
        ];
        for order in permutations(&inputs) {
            let (outcome, ms, x) = run(&c, 3, Prefer::Max, &order);
            assert_eq!((outcome, ms), (Outcome::Chosen(2), 3), "{order:?}");
            assert_eq!(outcomes(&x, 3), [Invalid, Error, Valid]);
        }
    }

    #[test]
    fn only_invalid_replies_give_no_content_at_once() {
        let c = Clock::new();
        let (outcome, ms, x) = run(
            &c,
            2,
            Prefer::Max,
            &[Input::Reply(1, None), Input::Reply(0, None)],
        );
        assert_eq!((outcome, ms), (Outcome::NoContent, 2));
        assert_eq!(outcomes(&x, 2), [Invalid, Invalid]);
    }

    #[test]
    fn a_silent_backend_holds_the_answer_until_the_deadline() {
        let c = Clock::new();
        for inputs in permutations(&[Input::Reply(0, Some(1.0)), Input::Failure(2)]) {
            let (outcome, ms, x) = run(&c, 3, Prefer::Max, &inputs);
            assert_eq!((outcome, ms), (Outcome::Chosen(0), 100), "{inputs:?}");
            assert_eq!(outcomes(&x, 3), [Valid, Timeout, Error]);
        }
    }

    #[test]
    fn nothing_at_all_is_no_content_at_the_deadline_not_before() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        assert_eq!(x.poll_timeout(), Some(c.at(100)));
        assert_eq!(x.poll_outcome(c.at(0)), None);
        assert_eq!(x.poll_outcome(c.at(99)), None);
        assert_eq!(x.poll_outcome(c.at(100)), Some(Outcome::NoContent));
        assert_eq!(x.poll_timeout(), None);
        assert_eq!(outcomes(&x, 2), [Timeout, Timeout]);
    }

    #[test]
    fn a_late_timer_still_gives_the_outcome() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        x.handle_reply(1, Some(4.0), c.at(10));
        assert_eq!(x.poll_outcome(c.at(250)), Some(Outcome::Chosen(1)));
    }

    #[test]
    fn outcome_is_given_once() {
        let c = Clock::new();
        let mut x = c.exchange(1, Prefer::Max);
        x.handle_reply(0, Some(1.0), c.at(1));
        assert_eq!(x.poll_outcome(c.at(1)), Some(Outcome::Chosen(0)));
        assert_eq!(x.poll_outcome(c.at(1)), None);
        assert_eq!(x.poll_outcome(c.at(500)), None);
        assert_eq!(x.poll_timeout(), None);
    }

    #[test]
    fn a_reply_at_the_deadline_is_a_timeout() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        x.handle_reply(0, Some(1.0), c.at(99));
        assert!(!x.handle_reply(1, Some(9.0), c.at(100)), "at the deadline");
        assert_eq!(x.best(), Some(0));
        assert_eq!(x.poll_outcome(c.at(100)), Some(Outcome::Chosen(0)));
        assert_eq!(outcomes(&x, 2), [Valid, Timeout]);
    }

    #[test]
    fn a_failure_at_the_deadline_is_a_timeout() {
        let c = Clock::new();
        let mut x = c.exchange(1, Prefer::Max);
        x.handle_failure(0, c.at(100));
        assert_eq!(x.backend_outcome(0), Timeout);
        assert_eq!(x.poll_outcome(c.at(100)), Some(Outcome::NoContent));
        assert_eq!(x.backend_outcome(0), Timeout);
    }

    #[test]
    fn a_late_reply_after_the_outcome_changes_nothing() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        x.handle_reply(0, Some(1.0), c.at(5));
        assert_eq!(x.poll_outcome(c.at(100)), Some(Outcome::Chosen(0)));
        assert!(!x.handle_reply(1, Some(9.0), c.at(130)));
        x.handle_failure(1, c.at(131));
        assert_eq!(x.best(), Some(0));
        assert_eq!(x.poll_outcome(c.at(131)), None);
        assert_eq!(outcomes(&x, 2), [Valid, Timeout]);
    }

    #[test]
    fn inputs_after_the_outcome_are_ignored_even_before_the_deadline() {
        // A shell that drains the outcome before feeding a stale event must not change
        // the per-backend record that the metrics read.
        let c = Clock::new();
        let mut x = c.exchange(1, Prefer::Max);
        x.handle_failure(0, c.at(1));
        assert_eq!(x.poll_outcome(c.at(1)), Some(Outcome::NoContent));
        assert!(!x.handle_reply(0, Some(1.0), c.at(2)));
        assert_eq!(x.backend_outcome(0), Error);
        assert_eq!(x.best(), None);
    }

    #[test]
    fn ties_go_to_the_first_arrival() {
        let c = Clock::new();
        for prefer in [Prefer::Max, Prefer::Min] {
            for order in permutations(&[
                Input::Reply(0, Some(2.0)),
                Input::Reply(1, Some(2.0)),
                Input::Reply(2, Some(2.0)),
            ]) {
                let Input::Reply(first, _) = order[0] else {
                    unreachable!()
                };
                let (outcome, _, _) = run(&c, 3, prefer, &order);
                assert_eq!(outcome, Outcome::Chosen(first), "{prefer:?} {order:?}");
            }
        }
    }

    #[test]
    fn zero_and_negative_zero_tie() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        assert!(x.handle_reply(1, Some(-0.0), c.at(1)));
        assert!(!x.handle_reply(0, Some(0.0), c.at(2)));
        assert_eq!(x.best(), Some(1));
    }

    #[test]
    fn handle_reply_reports_each_new_best() {
        let c = Clock::new();
        let mut x = c.exchange(4, Prefer::Max);
        assert!(x.handle_reply(2, Some(1.0), c.at(1)));
        assert!(!x.handle_reply(0, Some(0.5), c.at(2)));
        assert!(!x.handle_reply(3, None, c.at(3)));
        assert!(x.handle_reply(1, Some(1.25), c.at(4)));
        assert_eq!(x.best(), Some(1));
    }

    #[test]
    fn duplicates_of_a_backend_are_ignored() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        assert!(x.handle_reply(0, Some(1.0), c.at(1)));
        assert!(!x.handle_reply(0, Some(5.0), c.at(2)), "a second reply");
        x.handle_failure(0, c.at(3));
        assert_eq!(x.backend_outcome(0), Valid);
        assert_eq!(x.best(), Some(0));
        assert_eq!(x.poll_outcome(c.at(3)), None, "backend 1 is still awaited");

        let mut x = c.exchange(2, Prefer::Max);
        x.handle_failure(1, c.at(1));
        assert!(
            !x.handle_reply(1, Some(5.0), c.at(2)),
            "a reply after a failure"
        );
        assert_eq!(x.backend_outcome(1), Error);
        assert_eq!(x.best(), None);

        let mut x = c.exchange(2, Prefer::Max);
        assert!(!x.handle_reply(1, None, c.at(1)));
        assert!(
            !x.handle_reply(1, Some(5.0), c.at(2)),
            "a valid reply after an invalid one"
        );
        assert_eq!(x.backend_outcome(1), Invalid);
    }

    #[test]
    fn nan_and_infinities_are_invalid() {
        let c = Clock::new();
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            for prefer in [Prefer::Max, Prefer::Min] {
                let mut x = c.exchange(2, prefer);
                assert!(x.handle_reply(0, Some(1.0), c.at(1)));
                assert!(!x.handle_reply(1, Some(bad), c.at(2)), "{bad} {prefer:?}");
                assert_eq!(x.poll_outcome(c.at(2)), Some(Outcome::Chosen(0)));
                assert_eq!(outcomes(&x, 2), [Valid, Invalid]);
            }
        }
    }

    #[test]
    fn extreme_finite_values_still_order() {
        let c = Clock::new();
        let mut x = c.exchange(3, Prefer::Max);
        x.handle_reply(0, Some(f64::MIN), c.at(1));
        x.handle_reply(1, Some(f64::MAX), c.at(2));
        x.handle_reply(2, Some(f64::MIN_POSITIVE), c.at(3));
        assert_eq!(x.poll_outcome(c.at(3)), Some(Outcome::Chosen(1)));
    }

    #[test]
    fn sixteen_backends_fill_the_mask() {
        let c = Clock::new();
        let mut x = c.exchange(MAX_BACKENDS, Prefer::Min);
        for b in 0..MAX_BACKENDS {
            x.handle_reply(b, Some(100.0 - b as f64), c.at(1));
            let expected = (b == MAX_BACKENDS - 1).then_some(Outcome::Chosen(b));
            assert_eq!(x.poll_outcome(c.at(1)), expected, "after backend {b}");
        }
        // One backend fewer: the last one is not awaited, the 15th answer completes.
        let mut x = c.exchange(MAX_BACKENDS - 1, Prefer::Max);
        for b in 0..MAX_BACKENDS - 1 {
            x.handle_failure(b, c.at(1));
        }
        assert_eq!(x.poll_outcome(c.at(1)), Some(Outcome::NoContent));
    }

    #[test]
    fn no_backends_is_no_content_at_once() {
        let c = Clock::new();
        let mut x = c.exchange(0, Prefer::Max);
        assert_eq!(x.poll_timeout(), None);
        assert_eq!(x.poll_outcome(c.at(0)), Some(Outcome::NoContent));
    }

    #[test]
    fn before_the_outcome_an_awaited_backend_reads_timeout() {
        let c = Clock::new();
        let mut x = c.exchange(2, Prefer::Max);
        x.handle_reply(0, Some(1.0), c.at(1));
        assert_eq!(outcomes(&x, 2), [Valid, Timeout]);
    }

    #[test]
    #[should_panic(expected = "backend 2 is not part of this exchange")]
    fn an_unknown_backend_panics() {
        let c = Clock::new();
        c.exchange(2, Prefer::Max).handle_failure(2, c.at(1));
    }

    #[test]
    #[should_panic(expected = "17 backends, at most 16")]
    fn more_than_sixteen_backends_panics() {
        let c = Clock::new();
        c.exchange(17, Prefer::Max);
    }

    #[test]
    fn outcome_labels_match_the_spec() {
        let labels: Vec<&str> = [Valid, Invalid, Timeout, Error]
            .map(BackendOutcome::as_str)
            .to_vec();
        assert_eq!(labels, ["valid", "invalid", "timeout", "error"]);
    }

    #[test]
    fn prefer_deserializes_from_lowercase_names() {
        #[derive(Deserialize)]
        struct T {
            prefer: Prefer,
        }
        let parse = |s: &str| toml::from_str::<T>(s).map(|t| t.prefer);
        assert_eq!(parse("prefer = \"max\"").unwrap(), Prefer::Max);
        assert_eq!(parse("prefer = \"min\"").unwrap(), Prefer::Min);
        assert!(parse("prefer = \"Max\"").is_err());
        assert_eq!(Prefer::default(), Prefer::Max);
    }
}

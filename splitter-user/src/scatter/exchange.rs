//! One request's fan-out: which backends answered, which answer is best, and when it is over
//! (SPEC 2, 3).
//!
//! Sans-IO: no sockets, no timers, never reads the clock. Time comes in as `now: Instant`, the
//! next wake-up goes out through [`Exchange::poll_timeout`]. The shell owns the connections and
//! the one timer; it hands the exchange each backend's whole reply (or failure) and sleeps until
//! `poll_timeout()`. The exchange judges each reply ([`Selection::judge`]), keeps the best one
//! and drops the others, and says when and what to answer.

use std::time::Instant;

pub use splitter_common::MAX_BACKENDS;

use crate::http1::response::Coding;

use super::select::{Invalid, Scratch, Selection};

/// Index of a backend in the configured list (`[[backend]]` order), below [`MAX_BACKENDS`].
pub type BackendId = usize;

/// A whole backend reply, as the exchange judges it.
pub trait Reply {
    /// The final status code.
    fn status(&self) -> u16;
    /// The body, de-chunked (still compressed when it has a `Content-Encoding`).
    fn body(&self) -> &[u8];
    /// Its `Content-Encoding`.
    fn coding(&self) -> Coding;
}

/// What the client gets.
#[derive(Debug)]
pub enum Outcome<R> {
    /// The best valid reply.
    Chosen(Winner<R>),
    /// `204 No Content`: no valid reply in time.
    NoContent,
}

/// The best valid reply of an exchange.
#[derive(Debug)]
pub struct Winner<R> {
    /// Who sent it.
    pub backend: BackendId,
    /// The reply, for the client byte for byte.
    pub reply: R,
    /// Its number.
    pub value: f64,
    /// The best number among the other valid replies, if any: the price a second-price auction
    /// charges.
    pub second: Option<f64>,
}

/// How one backend did in one exchange: the `outcome` label of
/// `splitter_backend_responses_total` (SPEC 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendOutcome {
    /// A usable response: see [`Selection::judge`].
    Valid,
    /// A whole HTTP response in time, but not usable: status, JSON, field.
    Invalid,
    /// Nothing usable before the deadline.
    Timeout,
    /// Connect refused, reset, bad HTTP, before the deadline.
    Error,
    /// Not asked: ejected after consecutive failures (SPEC 9).
    Ejected,
    /// Not asked: its `max_connections` were all busy (SPEC 9).
    Overloaded,
}

/// Why a backend is not asked at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// It is ejected.
    Ejected,
    /// No connection to it is free.
    Overloaded,
}

/// The state of one client request fanned out to every backend.
///
/// Methods come in two kinds:
/// - inputs: [`handle_reply`](Self::handle_reply) (a whole response arrived) and
///   [`handle_failure`](Self::handle_failure) (the backend's exchange broke);
/// - outputs: [`poll_outcome`](Self::poll_outcome), [`poll_timeout`](Self::poll_timeout) and,
///   once the outcome is given, [`backend_outcome`](Self::backend_outcome).
///
/// After every input, and when the timer fires, drain in this order: `poll_outcome(now)`; if it
/// gave `None`, sleep until `poll_timeout()`. Once `poll_outcome` has given `Some`, the exchange
/// is over: later inputs are dropped unjudged and every backend's [`BackendOutcome`] is final,
/// ready for the metrics.
///
/// Ordering rules, all relative to the `now` given with each input:
/// - an input at or after the deadline changes nothing: that backend stays a `Timeout`;
/// - the first input from a backend counts, later ones from the same backend are ignored
///   (the shell should not send them, but a duplicate must never replace an answer);
/// - ties go to the earlier arrival, i.e. to whichever `handle_reply` came first.
///
/// Each backend may have its own deadline, earlier than the exchange's (a bidder with a tighter
/// `tmax`): past it, that backend is a `Timeout` even while others are still awaited.
///
/// Fixed size: a few bitmasks, the deadlines and the best reply so far; no allocation.
#[derive(Debug)]
pub struct Exchange<'s, R> {
    /// How replies are judged and ranked.
    selection: &'s Selection,
    /// A number worse than this makes a reply invalid (the route's floor, or `[select]`'s).
    floor: Option<f64>,
    /// One bit per backend this exchange waits for.
    all: u16,
    /// Each awaited backend's own deadline, never later than `deadline`.
    deadlines: [Instant; MAX_BACKENDS],
    /// Backends that answered (reply or failure) before the deadline.
    answered: u16,
    /// Of `answered`, those whose reply was valid.
    valid: u16,
    /// Of `answered`, those that failed (transport or HTTP error).
    failed: u16,
    /// Of `answered`, those not asked because they are ejected.
    ejected: u16,
    /// Of `answered`, those not asked because no connection was free.
    overloaded: u16,
    /// Of the invalid ones, those whose number was worse than the floor.
    below_floor: u16,
    /// Of the invalid ones, those whose `Content-Encoding` could not be decoded.
    bad_encoding: u16,
    /// The best valid reply so far.
    best: Option<Winner<R>>,
    /// When the client gets its answer at the latest.
    deadline: Instant,
    /// `poll_outcome` gave its answer: the exchange is over.
    decided: bool,
}

impl<'s, R: Reply> Exchange<'s, R> {
    /// A new exchange due at `deadline`, waiting for no backend yet: add each with
    /// [`expect`](Self::expect).
    pub fn new(deadline: Instant, selection: &'s Selection, floor: Option<f64>) -> Self {
        Self {
            selection,
            floor,
            all: 0,
            deadlines: [deadline; MAX_BACKENDS],
            answered: 0,
            valid: 0,
            failed: 0,
            ejected: 0,
            overloaded: 0,
            below_floor: 0,
            bad_encoding: 0,
            best: None,
            deadline,
            decided: false,
        }
    }

    /// Waits for backend `b` too, until `deadline` at the latest (capped by the exchange's).
    ///
    /// # Panics
    ///
    /// If `b` is not below [`MAX_BACKENDS`]; config validation prevents it.
    pub fn expect(&mut self, b: BackendId, deadline: Instant) {
        assert!(b < MAX_BACKENDS, "backend {b}, at most {MAX_BACKENDS}");
        self.all |= 1 << b;
        self.deadlines[b] = deadline.min(self.deadline);
    }

    /// A whole reply arrived from `b`. It is judged (with `scratch`, the worker's parse buffers)
    /// unless it no longer counts (late, or a duplicate), and kept if it is the best so far; any
    /// other reply is dropped here. Returns `true` when it became the best.
    ///
    /// # Panics
    ///
    /// If `b` is not one of the backends given to [`new`](Self::new).
    pub fn handle_reply(
        &mut self,
        b: BackendId,
        reply: R,
        scratch: &mut Scratch,
        now: Instant,
    ) -> bool {
        let Some(bit) = self.accept(b, now) else {
            return false;
        };
        self.answered |= bit;
        let value = match self.selection.judge(&reply, self.floor, scratch) {
            Ok(value) => value,
            Err(why) => {
                match why {
                    Invalid::BelowFloor => self.below_floor |= bit,
                    Invalid::Encoding => self.bad_encoding |= bit,
                    Invalid::Status | Invalid::Field => {}
                }
                return false;
            }
        };
        self.valid |= bit;
        match &mut self.best {
            Some(best) if !self.selection.prefer.is_better(value, best.value) => {
                best.second = Some(match best.second {
                    Some(second) if !self.selection.prefer.is_better(value, second) => second,
                    _ => value,
                });
                false
            }
            best => {
                let second = best.as_ref().map(|previous| previous.value);
                *best = Some(Winner {
                    backend: b,
                    reply,
                    value,
                    second,
                });
                true
            }
        }
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

    /// `b` is not asked (see [`Skip`]): it counts as answered at once, so the client never waits
    /// for it, and when no backend is asked the answer is an immediate 204.
    ///
    /// # Panics
    ///
    /// If `b` is not one of the backends given to [`new`](Self::new).
    pub fn handle_skip(&mut self, b: BackendId, why: Skip, now: Instant) {
        if let Some(bit) = self.accept(b, now) {
            self.answered |= bit;
            match why {
                Skip::Ejected => self.ejected |= bit,
                Skip::Overloaded => self.overloaded |= bit,
            }
        }
    }

    /// When to call [`poll_outcome`](Self::poll_outcome) if no input comes first: the latest
    /// deadline of the awaited backends that have not answered, `None` once the outcome is
    /// ready or given. At that time `poll_outcome` gives the outcome, so a shell that sleeps
    /// until it never wakes for nothing. A backend past an earlier deadline of its own needs no
    /// wake-up: it is a `Timeout` from then on, and the exchange waits for the others.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.decided {
            return None;
        }
        self.waiting().map(|b| self.deadlines[b]).max()
    }

    /// The outcome, once: when every awaited backend has answered or passed its deadline.
    /// `None` before that, and on every call after the one that gave it.
    pub fn poll_outcome(&mut self, now: Instant) -> Option<Outcome<R>> {
        if self.decided || self.waiting().any(|b| now < self.deadlines[b]) {
            return None;
        }
        self.decided = true;
        Some(match self.best.take() {
            Some(winner) => Outcome::Chosen(winner),
            None => Outcome::NoContent,
        })
    }

    /// Of an invalid reply from `b`, whether it was for being below the floor, or for an
    /// encoding that could not be decoded: the operator's "why does this bidder never win".
    pub fn invalid_because(&self, b: BackendId) -> Option<Invalid> {
        let bit = self.bit(b);
        if self.below_floor & bit != 0 {
            Some(Invalid::BelowFloor)
        } else if self.bad_encoding & bit != 0 {
            Some(Invalid::Encoding)
        } else {
            None
        }
    }

    /// The awaited backends that have not answered.
    fn waiting(&self) -> impl Iterator<Item = BackendId> + '_ {
        let waiting = self.all & !self.answered;
        (0..MAX_BACKENDS).filter(move |b| waiting & (1 << b) != 0)
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
        } else if self.ejected & bit != 0 {
            BackendOutcome::Ejected
        } else if self.overloaded & bit != 0 {
            BackendOutcome::Overloaded
        } else if self.answered & bit != 0 {
            BackendOutcome::Invalid
        } else {
            BackendOutcome::Timeout
        }
    }

    /// `b`'s bit when an input from it at `now` counts: the exchange is open, `b`'s deadline
    /// has not passed, and `b` has not answered yet.
    fn accept(&self, b: BackendId, now: Instant) -> Option<u16> {
        let bit = self.bit(b);
        (!self.decided && now < self.deadlines[b] && self.answered & bit == 0).then_some(bit)
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
    use std::time::{Duration, Instant};

    use super::{BackendId, BackendOutcome, Reply, MAX_BACKENDS};
    use crate::http1::response::Coding;
    use crate::scatter::select::{Prefer, Scratch, Selection, Selector};

    /// A reply whose `/price` is the number given, or a string when `None` (invalid).
    #[derive(Debug)]
    struct Priced(Vec<u8>);

    impl Reply for Priced {
        fn status(&self) -> u16 {
            200
        }
        fn body(&self) -> &[u8] {
            &self.0
        }
        fn coding(&self) -> Coding {
            Coding::Identity
        }
    }

    fn priced(value: Option<f64>) -> Priced {
        Priced(match value {
            // NaN and the infinities are not JSON: the selector refuses them as numbers do
            // not reach that far, so they are written as 1e999 (infinite to f64).
            Some(v) if v.is_nan() => b"{\"price\":NaN}".to_vec(),
            Some(v) if v.is_infinite() => {
                format!("{{\"price\":{}1e999}}", if v < 0.0 { "-" } else { "" }).into_bytes()
            }
            Some(v) => format!("{{\"price\":{v:e}}}").into_bytes(),
            None => b"{\"price\":\"none\"}".to_vec(),
        })
    }

    /// The outcome as the tests compare it: who won.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outcome {
        Chosen(BackendId),
        NoContent,
    }

    /// The core exchange behind the calls these tests were written with: numbers in, winners
    /// out, the judging done by the real selection on a `/price` body.
    #[derive(Debug)]
    struct Exchange {
        inner: super::Exchange<'static, Priced>,
        scratch: Scratch,
        best: Option<BackendId>,
    }

    impl Exchange {
        fn new(backends: usize, deadline: Instant, prefer: Prefer) -> Self {
            let selection = Box::leak(Box::new(Selection {
                selector: Selector::parse("/price").unwrap(),
                prefer,
                max_decoded: 1 << 20,
            }));
            let mut inner = super::Exchange::new(deadline, selection, None);
            for b in 0..backends {
                inner.expect(b, deadline);
            }
            Exchange {
                inner,
                scratch: Scratch::default(),
                best: None,
            }
        }

        fn handle_reply(&mut self, b: BackendId, value: Option<f64>, now: Instant) -> bool {
            let better = self
                .inner
                .handle_reply(b, priced(value), &mut self.scratch, now);
            if better {
                self.best = Some(b);
            }
            better
        }

        fn handle_failure(&mut self, b: BackendId, now: Instant) {
            self.inner.handle_failure(b, now)
        }

        fn poll_timeout(&self) -> Option<Instant> {
            self.inner.poll_timeout()
        }

        fn poll_outcome(&mut self, now: Instant) -> Option<Outcome> {
            self.inner.poll_outcome(now).map(|o| match o {
                super::Outcome::Chosen(w) => Outcome::Chosen(w.backend),
                super::Outcome::NoContent => Outcome::NoContent,
            })
        }

        fn backend_outcome(&self, b: BackendId) -> BackendOutcome {
            self.inner.backend_outcome(b)
        }

        fn best(&self) -> Option<BackendId> {
            self.best
        }
    }

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
    #[should_panic(expected = "backend 16, at most 16")]
    fn more_than_sixteen_backends_panics() {
        let c = Clock::new();
        c.exchange(17, Prefer::Max);
    }

    #[test]
    fn skipped_backends_answer_at_once_and_keep_their_reason() {
        let c = Clock::new();
        let mut x = c.exchange(3, Prefer::Max);
        x.inner.handle_skip(0, super::Skip::Ejected, c.at(0));
        x.inner.handle_skip(1, super::Skip::Overloaded, c.at(0));
        assert_eq!(x.poll_outcome(c.at(0)), None);
        x.handle_reply(2, Some(1.0), c.at(3));
        assert_eq!(x.poll_outcome(c.at(3)), Some(Outcome::Chosen(2)));
        assert_eq!(
            outcomes(&x, 3),
            [BackendOutcome::Ejected, BackendOutcome::Overloaded, Valid]
        );
        // Every backend skipped: 204 at once, not at the deadline.
        let mut x = c.exchange(2, Prefer::Max);
        x.inner.handle_skip(0, super::Skip::Ejected, c.at(0));
        x.inner.handle_skip(1, super::Skip::Ejected, c.at(0));
        assert_eq!(x.poll_outcome(c.at(0)), Some(Outcome::NoContent));
    }

    #[test]
    fn the_winner_carries_the_runner_up() {
        let c = Clock::new();
        let selection = Selection {
            selector: Selector::parse("/price").unwrap(),
            prefer: Prefer::Max,
            max_decoded: 1 << 20,
        };
        let mut scratch = Scratch::default();
        let mut second = |values: &[Option<f64>]| {
            let mut x = super::Exchange::new(c.at(100), &selection, None);
            for b in 0..values.len() {
                x.expect(b, c.at(100));
            }
            for (b, &v) in values.iter().enumerate() {
                x.handle_reply(b, priced(v), &mut scratch, c.at(1));
            }
            match x.poll_outcome(c.at(1)) {
                Some(super::Outcome::Chosen(w)) => (w.backend, w.value, w.second),
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(second(&[Some(1.0)]), (0, 1.0, None));
        assert_eq!(
            second(&[Some(1.0), Some(3.0), Some(2.0)]),
            (1, 3.0, Some(2.0))
        );
        assert_eq!(
            second(&[Some(3.0), Some(1.0), Some(2.0)]),
            (0, 3.0, Some(2.0))
        );
        assert_eq!(second(&[Some(2.0), None, Some(2.0)]), (0, 2.0, Some(2.0)));
        assert_eq!(second(&[None, Some(5.0), None]), (1, 5.0, None));
    }

    /// An exchange with a 100 ms deadline and backends whose own deadlines are `own` (ms).
    fn with_own_deadlines(c: &Clock, own: &[u64]) -> Exchange {
        let mut x = c.exchange(0, Prefer::Max);
        for (b, &ms) in own.iter().enumerate() {
            x.inner.expect(b, c.at(ms));
        }
        x
    }

    #[test]
    fn a_backend_past_its_own_deadline_waits_for_the_others_without_waking() {
        let c = Clock::new();
        let mut x = with_own_deadlines(&c, &[50, 100]);
        // The outcome waits for backend 1 (100 ms); nothing to wake for at backend 0's 50 ms.
        assert_eq!(x.poll_timeout(), Some(c.at(100)));
        assert_eq!(x.poll_outcome(c.at(50)), None);
        assert_eq!(x.poll_timeout(), Some(c.at(100)));
        // Past its own deadline, backend 0's reply no longer counts, however good.
        assert!(!x.handle_reply(0, Some(9.0), c.at(60)));
        assert_eq!(x.poll_outcome(c.at(60)), None);
        x.handle_reply(1, Some(1.0), c.at(70));
        assert_eq!(x.poll_outcome(c.at(70)), Some(Outcome::Chosen(1)));
        assert_eq!(outcomes(&x, 2), [Timeout, Valid]);
    }

    #[test]
    fn a_backends_own_deadline_ends_the_wait_when_the_others_answered() {
        let c = Clock::new();
        let mut x = with_own_deadlines(&c, &[50, 100]);
        x.handle_reply(1, Some(1.0), c.at(10));
        assert_eq!(x.poll_outcome(c.at(10)), None);
        assert_eq!(x.poll_timeout(), Some(c.at(50)));
        assert_eq!(x.poll_outcome(c.at(50)), Some(Outcome::Chosen(1)));
        assert_eq!(outcomes(&x, 2), [Timeout, Valid]);
    }

    /// The shell sleeps until `poll_timeout()` and then asks for the outcome: whatever the
    /// deadlines and whoever answered, that one wake-up must give it (a time that does not would
    /// have the shell wake again and again at the same instant).
    #[test]
    fn the_wake_up_time_always_gives_the_outcome() {
        let c = Clock::new();
        let deadlines = [10, 50, 100];
        for a in deadlines {
            for b in deadlines {
                for d in deadlines {
                    for answered in 0..8u8 {
                        let own = [a, b, d];
                        let mut x = with_own_deadlines(&c, &own);
                        for (i, &ms) in own.iter().enumerate() {
                            if answered & (1 << i) != 0 {
                                x.handle_reply(i, Some(1.0), c.at(ms / 2));
                            }
                        }
                        let at = match x.poll_outcome(c.at(5)) {
                            Some(_) => continue,
                            None => x.poll_timeout().expect("no outcome yet: a time to wake"),
                        };
                        assert!(
                            x.poll_outcome(at).is_some(),
                            "own deadlines {own:?}, answered {answered:03b}: no outcome at {:?}",
                            at - c.at(0)
                        );
                    }
                }
            }
        }
    }
}

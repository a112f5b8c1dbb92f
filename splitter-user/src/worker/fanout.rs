//! One request, sent to every backend at once; the answer decided by
//! [`Exchange`](crate::scatter::exchange::Exchange), which this shell feeds and sleeps for.
//!
//! The backend calls are futures polled by the request's own task, so the common case (every
//! backend answers in time) spawns nothing and passes no message. The task hands each finished
//! call's reply to the exchange and sleeps until [`Exchange::poll_timeout`]; the exchange judges,
//! keeps the best reply, and says when and what to answer. When the request has its answer before
//! every call is done, the unfinished calls move to a task of their own: a late reply is read to
//! its end there and its connection returned to the pool, or closed after [`LATE_GRACE`].
//!
//! A call has no timer of its own: while the request waits, the request's timer bounds it; once
//! late, the late task's one timer does (a shadow call, on a task of its own, has its own). Timers
//! are a wheel operation each way, and a request would otherwise arm one per backend.

use std::future::{poll_fn, Future};
use std::ops::Range;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::backend_conn::{exchange, BackendConn, Response};
use super::backend_pool::{Backend, ConnSource, Options, Route};
use super::buffers::{self, Shared};
use super::rt;
use super::{Plan, Worker};
use crate::http1::reply::ReplyLimits;
use crate::scatter::exchange::{
    BackendId, BackendOutcome, Exchange, Outcome, Skip, Winner, MAX_BACKENDS,
};
use crate::scatter::select::Invalid;

/// How long past its request's deadline a late reply may take to arrive and be drained so its
/// connection can be reused; past that the connection is closed. Late replies are common (that
/// is what deadlines are for) and reconnecting costs more than waiting a little.
const LATE_GRACE: Duration = Duration::from_secs(1);

/// One request to scatter.
pub struct Request {
    /// The bytes every backend gets (but those with their own `host` or `path_prefix`).
    pub bytes: Shared,
    /// Where the target and the `Host` value are in `bytes`.
    pub target: Range<usize>,
    /// See `target`.
    pub host: Range<usize>,
    /// A `HEAD`: responses have no body (and so none is valid).
    pub head: bool,
    /// When the whole request had been read: the deadlines count from here.
    pub started: Instant,
    /// When the client gets its answer at the latest (the route's deadline).
    pub deadline: Instant,
    /// The route's floor.
    pub floor: Option<f64>,
    /// The route's backends, one bit each.
    pub backends: u16,
}

impl Request {
    /// The bytes `backend` gets: the shared ones, or for a backend with its own `host` or
    /// `path_prefix`, or when the client's `Host` is empty, a copy with those changed.
    fn bytes_for(&self, options: &Options) -> Shared {
        if !options.rewrites() && !self.host.is_empty() {
            return self.bytes.clone();
        }
        let b = &self.bytes;
        let written = options.path_prefix.as_deref().unwrap_or_default();
        let host = match options.host.as_deref() {
            Some(host) => host,
            None if self.host.is_empty() => &options.default_host,
            None => &b[self.host.clone()],
        };
        // The root target is the prefix as written: `/openrtb2/auction`, not `.../auction/`,
        // which many bid endpoints refuse, unless the operator wrote the slash (`/?tmax=80`
        // keeps its query). Any other target starts with `/`: `/rtb/` and `/rtb` both give
        // `/rtb/x`, not `/rtb//x`.
        let root =
            !written.is_empty() && matches!(&b[self.target.start..], [b'/', b' ' | b'?', ..]);
        let (prefix, rest) = if root {
            (written, self.target.start + 1)
        } else {
            let slashes = written.iter().rev().take_while(|&&c| c == b'/').count();
            (&written[..written.len() - slashes], self.target.start)
        };
        let mut out = buffers::take(b.len() + prefix.len() + host.len());
        out.extend_from_slice(&b[..self.target.start]);
        out.extend_from_slice(prefix);
        out.extend_from_slice(&b[rest..self.host.start]);
        out.extend_from_slice(host);
        out.extend_from_slice(&b[self.host.end..]);
        Shared::new(out)
    }

    /// `backend`'s deadline: its own, capped by the route's.
    fn deadline_for(&self, options: &Options) -> Instant {
        options
            .timeout
            .map_or(self.deadline, |t| (self.started + t).min(self.deadline))
    }
}

/// How one backend call ended.
enum CallEnd {
    /// A whole response; `kept`: its connection went back to the pool.
    Reply { response: Response, kept: bool },
    /// Connect failure, reset, or not HTTP: answered, invalid, at once.
    Failed,
    /// Nothing in time: the connect outlived the backend's deadline, or a shadow call its grace
    /// (a timeout for the request, if it is still waiting).
    GaveUp,
    /// Not asked at all.
    Skipped(Skip),
}

/// One backend call, boxed so the pending ones can be handed to another task.
type Call = Pin<Box<dyn Future<Output = (BackendId, CallEnd)>>>;

/// What became of a scattered request.
pub struct Scattered {
    /// What the client gets.
    pub outcome: Outcome<Response>,
    /// How each backend of the route did, by metrics slot (for the access log).
    pub backends: [Option<BackendOutcome>; MAX_BACKENDS],
}

/// Sends `request` to every backend of `plan` and waits for the answer, at most until its
/// deadline. Counts each backend's outcome and the win.
pub async fn scatter(worker: &Rc<Worker>, plan: &Rc<Plan>, request: Request) -> Scattered {
    let request = Rc::new(request);
    let mut exchange = Exchange::new(request.deadline, &plan.selection, request.floor);
    let mut calls: Vec<Call> = Vec::with_capacity(plan.backends.len());
    // Which backends this request treats as shadows, fixed at its start: a reload may change
    // a backend's options while it is in flight, and the exchange only knows those it waits for.
    let mut shadows: u16 = 0;
    for (id, backend) in plan.backends.iter().enumerate() {
        if request.backends & (1 << id) == 0 {
            continue;
        }
        let options = Rc::clone(&backend.options.borrow());
        let deadline = request.deadline_for(&options);
        let call = call(
            Rc::clone(worker),
            Rc::clone(plan),
            id,
            Rc::clone(&request),
            deadline,
        );
        if options.shadow {
            shadows |= 1 << id;
            // Never waited for, never a winner: measured on a task of its own.
            let worker = Rc::clone(worker);
            let plan = Rc::clone(plan);
            let floor = request.floor;
            rt::spawn(async move {
                let give_up = deadline + LATE_GRACE;
                let (id, end) = rt::timeout_at(give_up, call)
                    .await
                    .unwrap_or((id, CallEnd::GaveUp));
                shadow_outcome(&worker, &plan, id, end, deadline, floor);
            });
            continue;
        }
        exchange.expect(id, deadline);
        calls.push(Box::pin(call));
    }

    // The one timer, armed at what the exchange asks for (with backends, always its deadline).
    let mut timer = pin!(rt::sleep_until(request.deadline));
    let outcome = poll_fn(|cx| {
        // Each wake-up polls every pending call: there are at most 16, usually 2.
        calls.retain_mut(|call| match call.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready((id, end)) => {
                let now = rt::now();
                match end {
                    CallEnd::Reply { response, .. } => {
                        let scratch = &mut worker.scratch.borrow_mut();
                        exchange.handle_reply(id, response, scratch, now);
                    }
                    CallEnd::Failed => exchange.handle_failure(id, now),
                    CallEnd::Skipped(why) => exchange.handle_skip(id, why, now),
                    CallEnd::GaveUp => {}
                }
                false
            }
        });
        let mut now = rt::now();
        loop {
            if let Some(outcome) = exchange.poll_outcome(now) {
                return Poll::Ready(outcome);
            }
            let Some(at) = exchange.poll_timeout() else {
                unreachable!("an exchange without an outcome waits for a time");
            };
            if timer.deadline() != at {
                timer.as_mut().reset(at);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // The timer fired: the time is `at` at least, whatever the clock's granularity.
            now = now.max(at);
        }
    })
    .await;

    if !calls.is_empty() {
        let plan = Rc::clone(plan);
        // Every call's deadline is the request's at the latest. Past the grace, the calls still
        // reading are dropped, and their connections closed with them.
        let mut give_up = Box::pin(rt::sleep_until(request.deadline + LATE_GRACE));
        rt::spawn(poll_fn(move |cx| {
            if give_up.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
            calls.retain_mut(|call| match call.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready((id, end)) => {
                    // Late: forgotten unread, but counted when its connection was kept.
                    if let CallEnd::Reply { kept: true, .. } = end {
                        plan.backends[id].meter.late_drained();
                    }
                    false
                }
            });
            if calls.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
    }

    let now = rt::now();
    let mut backends = [None; MAX_BACKENDS];
    for (id, b) in plan.backends.iter().enumerate() {
        if request.backends & !shadows & (1 << id) == 0 {
            continue;
        }
        let how = exchange.backend_outcome(id);
        backends[b.slot] = Some(how);
        count(b, how, exchange.invalid_because(id), now);
    }
    if let Outcome::Chosen(Winner { backend, .. }) = &outcome {
        plan.backends[*backend].meter.win();
    }
    Scattered { outcome, backends }
}

/// Counts how backend `b` did in one request, and tells its health.
fn count(b: &Backend, outcome: BackendOutcome, invalid: Option<Invalid>, now: Instant) {
    b.meter.outcome(outcome, invalid);
    match outcome {
        BackendOutcome::Valid | BackendOutcome::Invalid => b.record(true, now),
        BackendOutcome::Timeout | BackendOutcome::Error => b.record(false, now),
        BackendOutcome::Ejected | BackendOutcome::Overloaded => {}
    }
}

/// How a shadow backend did, judged as if it counted: a reply after its deadline is a timeout.
fn shadow_outcome(
    worker: &Worker,
    plan: &Plan,
    id: BackendId,
    end: CallEnd,
    deadline: Instant,
    floor: Option<f64>,
) {
    let now = rt::now();
    let (outcome, invalid) = match end {
        CallEnd::Reply { .. } | CallEnd::Failed | CallEnd::GaveUp if now >= deadline => {
            (BackendOutcome::Timeout, None)
        }
        CallEnd::Reply { response, .. } => {
            let scratch = &mut worker.scratch.borrow_mut();
            match plan.selection.judge(&response, floor, scratch) {
                Ok(_) => (BackendOutcome::Valid, None),
                Err(why) => (BackendOutcome::Invalid, Some(why)),
            }
        }
        CallEnd::Failed => (BackendOutcome::Error, None),
        CallEnd::GaveUp => (BackendOutcome::Timeout, None),
        CallEnd::Skipped(Skip::Ejected) => (BackendOutcome::Ejected, None),
        CallEnd::Skipped(Skip::Overloaded) => (BackendOutcome::Overloaded, None),
    };
    let invalid = invalid.filter(|why| matches!(why, Invalid::BelowFloor | Invalid::Encoding));
    count(&plan.backends[id], outcome, invalid, now);
}

/// One backend's part of one request: a pooled or new connection, one exchange, a reply. The
/// request is sent at most once: a pooled connection is used only after a probe found it clean,
/// and whatever fails after the write is that backend's error, never a resend. The connection
/// goes back to the pool (or is closed) before the reply is given.
async fn call(
    worker: Rc<Worker>,
    plan: Rc<Plan>,
    id: BackendId,
    request: Rc<Request>,
    deadline: Instant,
) -> (BackendId, CallEnd) {
    let backend = &plan.backends[id];
    let mut conn = match backend.route(rt::now(), plan.backend_idle_timeout) {
        Route::Ejected { check } => {
            if let Some(path) = check {
                let backend = Rc::clone(backend);
                let (uring, max_bytes) = (worker.uring, plan.max_response_bytes);
                rt::spawn(health_check(backend, path, uring, max_bytes));
            }
            return (id, CallEnd::Skipped(Skip::Ejected));
        }
        Route::Overloaded => return (id, CallEnd::Skipped(Skip::Overloaded)),
        Route::Send(ConnSource::Pooled(conn)) => conn,
        Route::Send(ConnSource::New(open)) => {
            let connect = BackendConn::connect(backend.addr, worker.uring, open);
            match rt::timeout_at(deadline, connect).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(_)) => return (id, CallEnd::Failed),
                // The deadline passed while connecting: the request counts it as a timeout.
                Err(_) => return (id, CallEnd::GaveUp),
            }
        }
    };
    let bytes = request.bytes_for(&backend.options.borrow());
    let limits = ReplyLimits {
        max_bytes: plan.max_response_bytes,
        deadline,
    };
    // Bounded by whoever polls it (see the module's documentation).
    match exchange(&mut conn, bytes, request.head, limits).await {
        Ok((response, reusable)) => {
            let elapsed = rt::now()
                .saturating_duration_since(request.started)
                .as_micros();
            backend.meter.latency(elapsed.min(u64::MAX.into()) as u64);
            let kept = reusable && backend.put(conn, rt::now());
            (id, CallEnd::Reply { response, kept })
        }
        Err(e) => {
            tracing::debug!(backend = %backend.name, error = %e, "backend exchange failed");
            (id, CallEnd::Failed)
        }
    }
}

/// How long a health check may take: as long as the first ejection lasts.
const HEALTH_CHECK_TIMEOUT: Duration = crate::scatter::health::FIRST_BACKOFF;

/// Probes an ejected backend with `GET path` on a connection of its own: any 2xx restores it,
/// anything else (or nothing within [`HEALTH_CHECK_TIMEOUT`]) ejects it for a longer back-off.
/// It is named as requests name it (its `host`, else its address as written): a backend
/// served by name (a virtual host, a shared ingress) answers nothing else.
async fn health_check(backend: Rc<Backend>, path: Rc<str>, uring: bool, max_bytes: usize) {
    let check = async {
        let mut conn = BackendConn::connect(backend.addr, uring, backend.open_one())
            .await
            .ok()?;
        let options = Rc::clone(&backend.options.borrow());
        let host = options.host.as_deref().unwrap_or(&options.default_host);
        let mut request = buffers::take(path.len() + host.len() + 48);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(host);
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let limits = ReplyLimits {
            max_bytes,
            deadline: Instant::now() + HEALTH_CHECK_TIMEOUT,
        };
        let (response, _) = exchange(&mut conn, Shared::new(request), false, limits)
            .await
            .ok()?;
        Some(response.head.status)
    };
    let status = rt::timeout(HEALTH_CHECK_TIMEOUT, check)
        .await
        .ok()
        .flatten();
    let ok = status.is_some_and(|status| (200..300).contains(&status));
    tracing::debug!(backend = %backend.name, ?status, "health check");
    backend.record(ok, Instant::now());
}

//! One request, sent to every backend at once; the answer decided by
//! [`Exchange`](crate::scatter::exchange::Exchange), which this shell feeds and sleeps for.
//!
//! The backend calls are futures polled by the request's own task, so the common case (every
//! backend answers in time) spawns nothing and passes no message. The task hands each finished
//! call's reply to the exchange and sleeps until [`Exchange::poll_timeout`]; the exchange judges,
//! keeps the best reply, and says when and what to answer. When the request has its answer before
//! every call is done, the unfinished calls move to a task of their own: a late reply is read to
//! its end there and its connection returned to the pool, or closed after [`LATE_GRACE`].

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::backend_conn::{exchange, BackendConn, Response};
use super::backend_pool::{Backend, ConnSource, Route};
use super::buffers::{self, Shared};
use super::{Plan, Worker};
use crate::scatter::exchange::{BackendId, BackendOutcome, Exchange, Outcome, Skip, Winner};

/// How long past its request's deadline a late reply may take to arrive and be drained so its
/// connection can be reused; past that the connection is closed. Late replies are common (that
/// is what deadlines are for) and reconnecting costs more than waiting a little.
const LATE_GRACE: Duration = Duration::from_secs(1);

/// One request to scatter.
pub struct Request {
    /// The bytes every backend gets.
    pub bytes: Shared,
    /// A `HEAD`: responses have no body (and so none is valid).
    pub head: bool,
    /// When the client gets its answer at the latest.
    pub deadline: Instant,
}

/// How one backend call ended.
enum CallEnd {
    /// A whole response; `kept`: its connection went back to the pool.
    Reply { response: Response, kept: bool },
    /// Connect failure, reset, or not HTTP: answered, invalid, at once.
    Failed,
    /// Nothing in time: the connect or the exchange outlived its time (a timeout for the
    /// request, if it is still waiting).
    GaveUp,
    /// Not asked at all.
    Skipped(Skip),
}

/// One backend call, boxed so the pending ones can be handed to another task.
type Call = Pin<Box<dyn Future<Output = (BackendId, CallEnd)>>>;

/// Sends `request` to every backend of `plan` and waits for the answer, at most until its
/// deadline. Counts each backend's outcome and the win.
pub async fn scatter(worker: &Rc<Worker>, plan: &Rc<Plan>, request: Request) -> Outcome<Response> {
    let request = Rc::new(request);
    let mut exchange = Exchange::new(plan.backends.len(), request.deadline, &plan.selection);
    let mut calls: Vec<Call> = (0..plan.backends.len())
        .map(|id| -> Call {
            Box::pin(call(
                Rc::clone(worker),
                Rc::clone(plan),
                id,
                Rc::clone(&request),
            ))
        })
        .collect();

    // The one timer, armed at what the exchange asks for (with backends, always its deadline).
    let mut timer = pin!(tokio::time::sleep_until(request.deadline.into()));
    let outcome = poll_fn(|cx| {
        // Each wake-up polls every pending call: there are at most 16, usually 2.
        calls.retain_mut(|call| match call.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready((id, end)) => {
                let now = Instant::now();
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
        let mut now = Instant::now();
        loop {
            if let Some(outcome) = exchange.poll_outcome(now) {
                return Poll::Ready(outcome);
            }
            let Some(at) = exchange.poll_timeout() else {
                unreachable!("an exchange without an outcome waits for a time");
            };
            if timer.deadline() != at.into() {
                timer.as_mut().reset(at.into());
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
        let counters = Rc::clone(&worker.counters);
        let plan = Rc::clone(plan);
        tokio::task::spawn_local(poll_fn(move |cx| {
            calls.retain_mut(|call| match call.as_mut().poll(cx) {
                Poll::Pending => true,
                Poll::Ready((id, end)) => {
                    // Late: forgotten unread, but counted when its connection was kept.
                    if let CallEnd::Reply { kept: true, .. } = end {
                        counters.late_drained(plan.backends[id].slot);
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

    let counters = &worker.counters;
    let now = Instant::now();
    for (id, b) in plan.backends.iter().enumerate() {
        let outcome = exchange.backend_outcome(id);
        counters.backend_outcome(b.slot, outcome);
        match outcome {
            BackendOutcome::Valid | BackendOutcome::Invalid => b.record(true, now),
            BackendOutcome::Timeout | BackendOutcome::Error => b.record(false, now),
            BackendOutcome::Ejected | BackendOutcome::Overloaded => {}
        }
    }
    if let Outcome::Chosen(Winner { backend, .. }) = &outcome {
        counters.win(plan.backends[*backend].slot);
    }
    outcome
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
) -> (BackendId, CallEnd) {
    let backend = &plan.backends[id];
    let mut conn = match backend.route(Instant::now()) {
        Route::Ejected { check } => {
            if let Some(path) = check {
                let backend = Rc::clone(backend);
                let (uring, max_bytes) = (worker.uring, plan.max_response_bytes);
                tokio::task::spawn_local(health_check(backend, path, uring, max_bytes));
            }
            return (id, CallEnd::Skipped(Skip::Ejected));
        }
        Route::Overloaded => return (id, CallEnd::Skipped(Skip::Overloaded)),
        Route::Send(ConnSource::Pooled(conn)) => conn,
        Route::Send(ConnSource::New(open)) => {
            let connect = BackendConn::connect(backend.addr, worker.uring, open);
            match tokio::time::timeout_at(request.deadline.into(), connect).await {
                Ok(Ok(conn)) => conn,
                Ok(Err(_)) => return (id, CallEnd::Failed),
                // The deadline passed while connecting: the request counts it as a timeout.
                Err(_) => return (id, CallEnd::GaveUp),
            }
        }
    };
    let give_up = request.deadline + LATE_GRACE;
    let exchanged = exchange(
        &mut conn,
        request.bytes.clone(),
        request.head,
        plan.max_response_bytes,
    );
    match tokio::time::timeout_at(give_up.into(), exchanged).await {
        Ok(Ok((response, reusable))) => {
            let kept = reusable && backend.put(conn, Instant::now());
            (id, CallEnd::Reply { response, kept })
        }
        Ok(Err(e)) => {
            tracing::debug!(backend = %backend.name, error = %e, "backend exchange failed");
            (id, CallEnd::Failed)
        }
        Err(_elapsed) => (id, CallEnd::GaveUp),
    }
}

/// How long a health check may take: as long as the first ejection lasts.
const HEALTH_CHECK_TIMEOUT: Duration = crate::scatter::health::FIRST_BACKOFF;

/// Probes an ejected backend with `GET path` on a connection of its own: any 2xx restores it,
/// anything else (or nothing within [`HEALTH_CHECK_TIMEOUT`]) ejects it for a longer back-off.
async fn health_check(backend: Rc<Backend>, path: Rc<str>, uring: bool, max_bytes: usize) {
    let check = async {
        let mut conn = BackendConn::connect(backend.addr, uring, backend.open_one())
            .await
            .ok()?;
        let mut request = buffers::take(path.len() + 64);
        request.extend_from_slice(b"GET ");
        request.extend_from_slice(path.as_bytes());
        request.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        request.extend_from_slice(backend.addr.to_string().as_bytes());
        request.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        let (response, _) = exchange(&mut conn, Shared::new(request), false, max_bytes)
            .await
            .ok()?;
        Some(response.head.status)
    };
    let status = tokio::time::timeout(HEALTH_CHECK_TIMEOUT, check)
        .await
        .ok()
        .flatten();
    let ok = status.is_some_and(|status| (200..300).contains(&status));
    tracing::debug!(backend = %backend.name, ?status, "health check");
    backend.record(ok, Instant::now());
}

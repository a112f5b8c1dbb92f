//! One request, sent to every backend at once; the answer chosen by
//! [`Exchange`](crate::scatter::exchange::Exchange) as replies arrive or the deadline passes.
//!
//! The backend calls are futures polled by the request's own task, so the common case (every
//! backend answers in time) spawns nothing and passes no message. When the request has its
//! answer before every call is done, the unfinished calls move to a task of their own: a late
//! reply is read to its end there and its connection returned to the pool, or closed after
//! [`LATE_GRACE`]. The request side only ever waits on its deadline.

use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use super::backend_pool::{exchange, BackendConn, Response};
use super::buffers::Shared;
use super::{Plan, Worker};
use crate::scatter::exchange::{BackendId, Exchange, Outcome};

/// How long past its request's deadline a late reply may take to arrive and be drained so its
/// connection can be reused; past that the connection is closed. Late replies are common (that
/// is what deadlines are for) and reconnecting costs more than waiting a little.
const LATE_GRACE: Duration = Duration::from_secs(1);

/// What the client gets.
pub enum Answer {
    /// This backend's response won.
    Backend(BackendId, Response),
    /// No valid response in time: 204.
    NoContent,
}

/// What a backend call reports to its request.
enum Reply {
    /// A whole response, with the selected number when it is valid.
    Response(Response, Option<f64>),
    /// Connect failure, reset, or not HTTP: answered, invalid, at once.
    Failed,
    /// Nothing in time: the connect or the exchange outlived the deadline (counted as a timeout
    /// by the request).
    GaveUp,
}

/// One backend call, boxed so the pending ones can be handed to another task.
type Call = Pin<Box<dyn Future<Output = (BackendId, Reply)>>>;

/// One request to scatter.
pub struct Request {
    /// The bytes every backend gets.
    pub bytes: Shared,
    /// A `HEAD`: responses have no body (and so none is valid).
    pub head: bool,
    /// The route's deadline, from now.
    pub timeout: Duration,
}

/// Sends `request` to every backend of `plan` and waits for the answer, at most
/// `request.timeout` from now. Counts each backend's outcome and the win.
pub async fn scatter(worker: &Rc<Worker>, plan: &Rc<Plan>, request: Request) -> Answer {
    let deadline = Instant::now() + request.timeout;
    let mut exchange = Exchange::new(plan.backends.len(), deadline, plan.prefer);
    // Set once the request has its answer: replies after that are late.
    let answered = Rc::new(Cell::new(false));
    let mut calls: Vec<Call> = (0..plan.backends.len())
        .map(|id| -> Call {
            Box::pin(call(
                Rc::clone(worker),
                Rc::clone(plan),
                id,
                request.bytes.clone(),
                request.head,
                deadline,
                Rc::clone(&answered),
            ))
        })
        .collect();

    let mut best: Option<(BackendId, Response)> = None;
    let timer = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timer);
    let outcome = poll_fn(|cx| {
        // Each wake-up polls every pending call: there are at most 16, usually 2.
        calls.retain_mut(|call| match call.as_mut().poll(cx) {
            Poll::Pending => true,
            Poll::Ready((id, reply)) => {
                let now = Instant::now();
                match reply {
                    Reply::Response(response, value) => {
                        if exchange.handle_reply(id, value, now) {
                            best = Some((id, response));
                        }
                    }
                    Reply::Failed => exchange.handle_failure(id, now),
                    Reply::GaveUp => {}
                }
                false
            }
        });
        if let Some(outcome) = exchange.poll_outcome(Instant::now()) {
            return Poll::Ready(outcome);
        }
        if timer.as_mut().poll(cx).is_ready() {
            // The timer fires at the deadline or later: the exchange decides now.
            return Poll::Ready(
                exchange
                    .poll_outcome(deadline)
                    .unwrap_or(Outcome::NoContent),
            );
        }
        Poll::Pending
    })
    .await;
    answered.set(true);
    if !calls.is_empty() {
        tokio::task::spawn_local(poll_fn(move |cx| {
            calls.retain_mut(|call| call.as_mut().poll(cx).is_pending());
            if calls.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }));
    }

    let counters = &worker.counters;
    for (id, b) in plan.backends.iter().enumerate() {
        counters.backend_outcome(b.slot, exchange.backend_outcome(id));
    }
    match (outcome, best) {
        (Outcome::Chosen(id), Some((best_id, response))) if id == best_id => {
            counters.win(plan.backends[id].slot);
            Answer::Backend(id, response)
        }
        _ => Answer::NoContent,
    }
}

/// One backend's part of one request: a pooled or new connection, one exchange, a reply. The
/// connection goes back to the pool (or is closed) before the reply is given.
async fn call(
    worker: Rc<Worker>,
    plan: Rc<Plan>,
    id: BackendId,
    request: Shared,
    head_request: bool,
    deadline: Instant,
    answered: Rc<Cell<bool>>,
) -> (BackendId, Reply) {
    let target = &plan.backends[id];
    let counters = &worker.counters;
    let give_up = deadline + LATE_GRACE;
    let mut pooled = worker.pools.borrow_mut().take(target.addr);
    let result = loop {
        let mut conn = match pooled.take() {
            Some(conn) => conn,
            None => {
                match tokio::time::timeout_at(
                    deadline.into(),
                    BackendConn::connect(target.addr, worker.uring),
                )
                .await
                {
                    Ok(Ok(conn)) => {
                        counters.backend_connect(target.slot);
                        conn
                    }
                    Ok(Err(_)) => return (id, Reply::Failed),
                    // The deadline passed while connecting: the request counts it as a timeout.
                    Err(_) => return (id, Reply::GaveUp),
                }
            }
        };
        match tokio::time::timeout_at(
            give_up.into(),
            exchange(&mut conn, request.clone(), head_request),
        )
        .await
        {
            // A reused connection that died before replying was closed by the backend while
            // idle: the request never reached it, so it may go once more on a new connection.
            Ok(Err(e)) if conn.reused && e.before_reply() && Instant::now() < deadline => {
                counters.backend_closed(target.slot);
                continue;
            }
            Ok(result) => break result.map(|ok| (conn, ok)),
            Err(_elapsed) => {
                counters.backend_closed(target.slot);
                return (id, Reply::GaveUp);
            }
        }
    };
    match result {
        Ok((conn, (response, reusable))) => {
            let late = answered.get();
            if reusable && worker.pools.borrow_mut().put(target.addr, conn) {
                if late {
                    counters.late_drained(target.slot);
                }
            } else {
                counters.backend_closed(target.slot);
            }
            // A late reply is forgotten: no need to read its number.
            let value = if response.status == 200 && !late {
                plan.selector
                    .select(response.body(), &mut worker.scratch.borrow_mut())
            } else {
                None
            };
            (id, Reply::Response(response, value))
        }
        Err(_) => {
            counters.backend_closed(target.slot);
            (id, Reply::Failed)
        }
    }
}

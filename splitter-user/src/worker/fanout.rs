//! One request, sent to every backend at once; the answer chosen by
//! [`Exchange`](crate::scatter::exchange::Exchange) as replies arrive or the deadline passes.
//!
//! Each backend call is its own task, so a call that outlives its request (a late reply) keeps
//! going on its own: it reads the reply to the end and returns the connection to the pool, or
//! closes it after [`LATE_GRACE`]. The request side only ever waits on its deadline.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::backend_pool::{exchange, BackendConn, Response};
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
}

/// One request to scatter.
pub struct Request {
    /// The bytes every backend gets.
    pub bytes: Bytes,
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
    let (tx, mut rx) = mpsc::unbounded_channel();
    for id in 0..plan.backends.len() {
        tokio::task::spawn_local(call(
            Rc::clone(worker),
            Rc::clone(plan),
            id,
            request.bytes.clone(),
            request.head,
            deadline,
            tx.clone(),
        ));
    }
    drop(tx);

    let mut best: Option<(BackendId, Response)> = None;
    let timer = tokio::time::sleep_until(deadline.into());
    tokio::pin!(timer);
    let outcome = loop {
        if let Some(outcome) = exchange.poll_outcome(Instant::now()) {
            break outcome;
        }
        tokio::select! {
            biased;
            reply = rx.recv() => match reply {
                Some((id, Reply::Response(response, value))) => {
                    if exchange.handle_reply(id, value, Instant::now()) {
                        best = Some((id, response));
                    }
                }
                Some((id, Reply::Failed)) => exchange.handle_failure(id, Instant::now()),
                // Every call has reported or given up: only the deadline is left.
                None => (&mut timer).await,
            },
            () = &mut timer => {}
        }
    };

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

/// One backend's part of one request: a pooled or new connection, one exchange, a report.
async fn call(
    worker: Rc<Worker>,
    plan: Rc<Plan>,
    id: BackendId,
    request: Bytes,
    head_request: bool,
    deadline: Instant,
    report: mpsc::UnboundedSender<(BackendId, Reply)>,
) {
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
                    Ok(Err(_)) => {
                        let _ = report.send((id, Reply::Failed));
                        return;
                    }
                    // The deadline passed while connecting: the request counts it as a timeout.
                    Err(_) => return,
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
                return;
            }
        }
    };
    match result {
        Ok((conn, (response, reusable))) => {
            let value = if response.status == 200 {
                plan.selector
                    .select(response.body(), &mut worker.scratch.borrow_mut())
            } else {
                None
            };
            // A send fails once the request has its answer: this reply is late, and forgotten.
            let late = report.send((id, Reply::Response(response, value))).is_err();
            if reusable && worker.pools.borrow_mut().put(target.addr, conn) {
                if late {
                    counters.late_drained(target.slot);
                }
            } else {
                counters.backend_closed(target.slot);
            }
        }
        Err(_) => {
            counters.backend_closed(target.slot);
            let _ = report.send((id, Reply::Failed));
        }
    }
}

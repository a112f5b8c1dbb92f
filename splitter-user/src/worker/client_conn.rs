//! One client connection: read a request, frame it, fan it out, answer; then the next one,
//! in order (pipelined requests wait in the buffer and are answered one after the other).
//!
//! The stream is closed, after a final status where one is due, whenever it can no longer be
//! trusted (any framing error), when the client asked for it, when it is too slow, and when the
//! process drains.

use std::io;
use std::rc::Rc;
use std::time::{Instant, SystemTime};

use super::buffers::{self, Shared};
use super::conn::{Conn, READ_CHUNK};
use super::fanout::{scatter, Request, Scattered};
use super::guards::{ClientOpen, InFlight};
use super::rt;
use super::{Plan, Stop, Worker};
use crate::access_log::Record;
use crate::http1::body::{BodyDecoder, BodyLimit};
use crate::http1::encode::{
    client_response, continue_100, end_head, status_response, Chosen, ConnectionHeader,
};
use crate::http1::request::{leading_empty_lines, parse_request, Method, RequestHead, Version};
use crate::scatter::exchange::{BackendOutcome, Outcome, Reply as _, Winner, MAX_BACKENDS};
use crate::scatter::route::Route;

/// Serves `stream` until it closes.
pub async fn serve(worker: &Rc<Worker>, stream: Conn) {
    let _open = ClientOpen::new(&worker.counters);
    let mut conn = ClientConn {
        stream,
        buf: Vec::new(),
        out: Vec::new(),
        forward: Vec::new(),
        send_timeout: worker.plan.borrow().send_timeout,
        responded_last: false,
    };
    conn.run(worker).await;
    if conn.responded_last {
        conn.close_in_stages().await;
    }
}

/// How long a connection closed after a response may go on being read (and what comes
/// discarded) for the client to take that response and close: [`ClientConn::close_in_stages`].
const LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// How late past its deadline a response may leave before it counts as a deadline miss: the
/// scheduling noise SPEC 3 allows.
const DEADLINE_SLACK: std::time::Duration = std::time::Duration::from_millis(10);

/// Gives back what a buffer grew beyond what the worker's pool keeps, keeping what it holds: a
/// client that pipelines, and so is never idle, does not keep the memory of one large message.
fn shrink(buf: &mut Vec<u8>) {
    let keep = buffers::MAX_POOLED_CAPACITY.max(buf.len());
    if buf.capacity() > keep {
        buf.shrink_to(keep);
    }
}

/// What a response says of the connection: HTTP/1.0 keeps it open only when told.
fn connection_header(close: bool, version: Version) -> ConnectionHeader {
    match (close, version) {
        (true, _) => ConnectionHeader::Close,
        (false, Version::Http10) => ConnectionHeader::KeepAlive,
        (false, Version::Http11) => ConnectionHeader::None,
    }
}

/// Microseconds from `started` to the loop's clock, for the latency histogram.
fn micros_since(started: Instant) -> u64 {
    let elapsed = rt::now().saturating_duration_since(started);
    elapsed.as_micros().min(u64::MAX.into()) as u64
}

/// Puts a request's record in the access log, if there is one and the request is sampled.
fn log(
    worker: &Worker,
    status: u16,
    route: Option<usize>,
    started: Option<Instant>,
    winner: Option<u8>,
    value: Option<f64>,
    backends: [Option<BackendOutcome>; MAX_BACKENDS],
) {
    let Some(log) = worker.access_log.as_ref().filter(|log| log.sampled()) else {
        return;
    };
    let record = Record {
        time: SystemTime::now(),
        route: route.map(|slot| slot as u8),
        status,
        winner,
        value,
        duration: started.map(|started| rt::now().saturating_duration_since(started)),
        backends,
    };
    if !log.push(record) {
        worker.counters.access_log_dropped();
    }
}

struct ClientConn {
    stream: Conn,
    /// How long the client may take to take a response (`send_timeout_ms`).
    send_timeout: std::time::Duration,
    /// Bytes read and not yet consumed: the request being read and any pipelined after it.
    /// This and the next two are the worker's pool's while the connection is idle.
    buf: Vec<u8>,
    /// The response being written.
    out: Vec<u8>,
    /// The head to forward, as `parse_request` writes it.
    forward: Vec<u8>,
    /// The last thing done on the connection was writing a whole response: if it ends now, it
    /// is closed in stages, so that response is not lost to a reset.
    responded_last: bool,
}

impl Drop for ClientConn {
    fn drop(&mut self) {
        // A read abandoned on a timeout or a drain is cancelled, but asynchronously: until its
        // completion it holds the socket open in the kernel. Shutting the socket down closes
        // the connection now, so the client sees the close at once.
        // SAFETY: the fd is owned by `self.stream`, still open.
        unsafe { libc::shutdown(self.stream.fd(), libc::SHUT_RDWR) };
    }
}

/// How reading more bytes ended.
enum Read {
    /// Some bytes arrived.
    More,
    /// The client closed, or the socket failed.
    Closed,
    /// The wait's deadline passed.
    TimedOut,
    /// The process is draining and the connection is between requests.
    Draining,
}

impl ClientConn {
    async fn run(&mut self, worker: &Rc<Worker>) {
        let mut first = true;
        loop {
            // The last response is written: its bytes are no longer needed.
            self.out.clear();
            shrink(&mut self.buf);
            shrink(&mut self.out);
            shrink(&mut self.forward);
            let Some((head, deadline)) = self.read_head(worker, first).await else {
                return;
            };
            first = false;
            // Taken once the head is in, not before waiting for it: a reload that happened
            // while this connection was idle applies to its next request.
            let plan = Rc::clone(&worker.plan.borrow());
            self.send_timeout = plan.send_timeout;
            worker.counters.request();
            let closing = !head.keep_alive;
            let conn_header = |close: bool| connection_header(close, head.version);
            let route = plan.routes.lookup(head.path(&self.buf));
            if head.expect_continue {
                // Refuse before the body is sent (RFC 9110 §10.1.1), rather than ask for it
                // and then refuse; its bytes, if any come, cannot be told from a next request,
                // so the connection ends here.
                let refused = match route {
                    None => Some(404),
                    Some(_) if worker.admission.full() => Some(503),
                    Some(_) => None,
                };
                if let Some(status) = refused {
                    let slot = route.map(|r| r.slot);
                    self.refuse(worker, status, conn_header(true), slot, None)
                        .await;
                    return;
                }
            }
            let max_body = plan.limits.max_body;
            let Some(request) = self.read_body(worker, &head, max_body, deadline).await else {
                return;
            };
            let Some(route) = route else {
                if !self
                    .refuse(worker, 404, conn_header(closing), None, None)
                    .await
                    || closing
                {
                    return;
                }
                continue;
            };

            // Boxed: what answering needs (the exchange, the chosen reply) is allocated while a
            // request is answered, so the task of an idle connection stays small.
            let answer = self.answer(worker, &plan, &head, route, request, closing);
            if !Box::pin(answer).await {
                return;
            }
        }
    }

    /// Fans `request` out along `route`, answers the client, counts and logs it. False when the
    /// connection is done.
    async fn answer(
        &mut self,
        worker: &Rc<Worker>,
        plan: &Rc<Plan>,
        head: &RequestHead,
        route: &Route,
        request: Shared,
        closing: bool,
    ) -> bool {
        let conn_header = |close: bool| connection_header(close, head.version);
        // The deadline starts now: the whole request has been read (SPEC section 3).
        let started = Instant::now();
        let closing = closing || *worker.shutdown.borrow() != Stop::No;
        let conn = conn_header(closing);
        let Some(permit) = worker.admission.admit() else {
            return self
                .refuse(worker, 503, conn, Some(route.slot), Some(started))
                .await
                && !closing;
        };
        let in_flight = InFlight::new(&worker.counters, permit);
        let request = Request {
            bytes: request,
            target: head.forward_target.clone(),
            host: head.forward_host.clone(),
            head: head.method == Method::Head,
            started,
            deadline: started + route.timeout,
            floor: route.floor,
            backends: route.backends,
        };
        let Scattered { outcome, backends } = scatter(worker, plan, request).await;
        drop(in_flight);
        // A drain that began while the backends were asked still closes this connection,
        // and says so, so the balancer in front does not send another request on it; unless
        // the client has already sent its next one (pipelined, in the buffer): that one is
        // in flight too, and answered before the connection closes.
        let draining = *worker.shutdown.borrow() != Stop::No;
        let closing = closing || (draining && self.buf.is_empty());
        let conn = conn_header(closing);

        let no_content = matches!(outcome, Outcome::NoContent);
        let (winner, value) = match &outcome {
            Outcome::Chosen(w) => (Some(plan.backends[w.backend].slot as u8), Some(w.value)),
            Outcome::NoContent => (None, None),
        };
        let written = match outcome {
            Outcome::Chosen(Winner {
                backend,
                reply,
                value,
                second,
            }) => {
                self.out.clear();
                let chosen = Chosen {
                    backend: &plan.backends[backend].name,
                    value,
                    second,
                };
                client_response(
                    &mut self.out,
                    reply.raw_head(),
                    &reply.head,
                    reply.body(),
                    &chosen,
                    conn,
                );
                drop(reply);
                self.write_out(worker, 200, Some(started)).await
            }
            Outcome::NoContent => self.respond(worker, 204, conn, Some(started)).await,
        };
        worker.counters.route(route.slot, no_content);
        let status = if no_content { 204 } else { 200 };
        log(
            worker,
            status,
            Some(route.slot),
            Some(started),
            winner,
            value,
            backends,
        );
        if Instant::now() > started + route.timeout + DEADLINE_SLACK {
            worker.counters.deadline_miss();
        }
        written && !closing
    }

    /// Reads until a whole request head is in the buffer. Returns it with the time by which the
    /// whole request must have arrived, or `None` when the connection is done. The `first` on a
    /// connection must begin within `header_timeout_ms` too: a client that connects and says
    /// nothing holds a connection no longer than one that trickles its head.
    async fn read_head(
        &mut self,
        worker: &Rc<Worker>,
        first: bool,
    ) -> Option<(RequestHead, Instant)> {
        let header_timeout = worker.plan.borrow().header_timeout;
        // A request already (partly) buffered started arriving no later than now.
        let mut deadline = (!self.buf.is_empty()).then(|| rt::now() + header_timeout);
        // Bytes already looked at: a head is parsed again only once a line has ended in the new
        // bytes (or it is over the limit), so a head sent a byte at a time costs a parse per
        // line, not one per byte.
        let mut scanned: usize = 0;
        loop {
            let plan = Rc::clone(&worker.plan.borrow());
            let blank = leading_empty_lines(&self.buf);
            if blank > 0 {
                self.buf.drain(..blank);
                scanned = scanned.saturating_sub(blank);
            }
            let started = !self.buf.is_empty();
            let line_ended = self.buf[scanned..].contains(&b'\n')
                || self.buf.len() > plan.limits.max_header_bytes;
            scanned = self.buf.len();
            if started && line_ended {
                match parse_request(&self.buf, &plan.limits, &mut self.forward) {
                    Ok(Some(head)) => {
                        let deadline = deadline.unwrap_or_else(|| rt::now() + header_timeout);
                        return Some((head, deadline));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        worker.counters.request();
                        tracing::debug!(error = %e, "bad request");
                        self.refuse(worker, e.status(), ConnectionHeader::Close, None, None)
                            .await;
                        return None;
                    }
                }
            }
            let read = match deadline {
                Some(at) => self.read_until(at, None).await,
                None => {
                    let wait = match first {
                        true => plan.idle_timeout.min(header_timeout),
                        false => plan.idle_timeout,
                    };
                    self.read_until(rt::now() + wait, Some(worker)).await
                }
            };
            match read {
                Read::More => {
                    deadline.get_or_insert_with(|| rt::now() + header_timeout);
                }
                Read::Closed | Read::Draining => return None,
                Read::TimedOut => {
                    worker.counters.client_timeout();
                    if started {
                        self.refuse(worker, 408, ConnectionHeader::Close, None, None)
                            .await;
                    }
                    return None;
                }
            }
        }
    }

    /// Reads the body of `head` (sending `100 Continue` first if the client waits for it) and
    /// builds the request every backend gets; the request leaves the buffer, anything pipelined
    /// after it stays. `None` when the connection is done.
    async fn read_body(
        &mut self,
        worker: &Rc<Worker>,
        head: &RequestHead,
        max_body: usize,
        deadline: Instant,
    ) -> Option<Shared> {
        let bad_body = |e: crate::http1::body::BodyError| {
            tracing::debug!(error = %e, "bad request body");
            e.status()
        };
        let mut body = match BodyDecoder::new(head.framing, BodyLimit::decoded(max_body)) {
            Ok(body) => body,
            Err(e) => {
                let status = bad_body(e);
                self.refuse(worker, status, ConnectionHeader::Close, None, None)
                    .await;
                return None;
            }
        };
        // The body is de-chunked in place: `buf[head_len..body_end]` is the payload so far.
        let mut body_end = head.head_len;
        let mut asked_to_continue = !head.expect_continue;
        loop {
            match body.decode_in_place(&mut self.buf, &mut body_end) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => {
                    let status = bad_body(e);
                    self.refuse(worker, status, ConnectionHeader::Close, None, None)
                        .await;
                    return None;
                }
            }
            if !asked_to_continue {
                asked_to_continue = true;
                self.out.clear();
                self.out.extend_from_slice(continue_100());
                if !self.write_raw(worker).await {
                    return None;
                }
            }
            if !self.read_or_give_up(worker, deadline).await {
                return None;
            }
        }
        // One buffer, written as is to every backend: the forwarded head, the length, the body.
        let payload = &self.buf[head.head_len..body_end];
        let mut request = buffers::take(self.forward.len() + 32 + payload.len());
        request.extend_from_slice(&self.forward);
        end_head(&mut request, payload.len());
        request.extend_from_slice(payload);
        self.buf.drain(..body_end);
        Some(Shared::new(request))
    }

    /// One more read of the request body before `deadline`; on a timeout answers 408. False when
    /// the connection is done.
    async fn read_or_give_up(&mut self, worker: &Rc<Worker>, deadline: Instant) -> bool {
        match self.read_until(deadline, None).await {
            Read::More => true,
            Read::Closed | Read::Draining => false,
            Read::TimedOut => {
                worker.counters.client_timeout();
                self.refuse(worker, 408, ConnectionHeader::Close, None, None)
                    .await;
                false
            }
        }
    }

    /// Reads more bytes into the buffer, until `deadline`; between requests (`idle` given) also
    /// stops when the process drains.
    async fn read_until(&mut self, deadline: Instant, idle: Option<&Rc<Worker>>) -> Read {
        self.responded_last = false;
        let Some(worker) = idle else {
            let buf = std::mem::take(&mut self.buf);
            let read = rt::timeout_at(deadline, self.stream.read(buf)).await;
            return self.took(read);
        };
        // Between requests the buffers go back to the worker's pool, and come from it again when
        // bytes arrive: an idle keep-alive connection holds its socket and its task, no buffer.
        self.park_buffers();
        let next = self.stream.read_next(|| buffers::take(READ_CHUNK));
        let timed = rt::timeout_at(deadline, next);
        let mut shutdown = worker.shutdown.clone();
        let read = tokio::select! {
            r = timed => r,
            // The read was abandoned (its buffer, if any, with it); the connection ends anyway.
            _ = shutdown.wait_for(|&stop| stop == Stop::Drain) => return Read::Draining,
        };
        let more = self.took(read);
        if matches!(more, Read::More) {
            self.out = buffers::take(0);
            self.forward = buffers::take(0);
        }
        more
    }

    /// The end of a read: the buffer back in place, and what came of it.
    fn took(&mut self, read: Result<(io::Result<usize>, Vec<u8>), rt::Elapsed>) -> Read {
        match read {
            // A read abandoned with the buffer inside it; the connection ends anyway.
            Err(_elapsed) => Read::TimedOut,
            Ok((res, buf)) => {
                self.buf = buf;
                match res {
                    Ok(0) | Err(_) => Read::Closed,
                    Ok(_) => Read::More,
                }
            }
        }
    }

    /// Gives the connection's (empty) buffers to the worker's pool while it waits.
    fn park_buffers(&mut self) {
        for buf in [&mut self.buf, &mut self.out, &mut self.forward] {
            buffers::give(std::mem::take(buf));
        }
    }

    /// Refuses a request (or what was read of one) with an error `status`: writes, counts and
    /// logs it. `route` and `started` when the request got that far. False when the write failed.
    async fn refuse(
        &mut self,
        worker: &Rc<Worker>,
        status: u16,
        conn: ConnectionHeader,
        route: Option<usize>,
        started: Option<Instant>,
    ) -> bool {
        let written = self.respond(worker, status, conn, started).await;
        log(
            worker,
            status,
            route,
            started,
            None,
            None,
            [None; MAX_BACKENDS],
        );
        written
    }

    /// Writes a response without backend content. False when the write failed.
    async fn respond(
        &mut self,
        worker: &Rc<Worker>,
        status: u16,
        conn: ConnectionHeader,
        started: Option<Instant>,
    ) -> bool {
        self.out.clear();
        status_response(&mut self.out, status, conn);
        self.write_out(worker, status, started).await
    }

    /// Writes `out` as the response with `status`, and counts it.
    async fn write_out(
        &mut self,
        worker: &Rc<Worker>,
        status: u16,
        started: Option<Instant>,
    ) -> bool {
        let ok = self.write_raw(worker).await;
        self.responded_last = ok;
        worker.counters.response(status);
        if let Some(started) = started {
            worker.counters.latency(micros_since(started));
        }
        ok
    }

    /// Ends the connection after its last response in stages (RFC 9112 §9.6): the write side is
    /// shut down, so the client reads the response then the end of the stream, and what it still
    /// sends (a pipelined request, the rest of a refused body) is read and discarded until it
    /// closes too, for at most [`LINGER`]. Closed with bytes unread, the socket would be reset,
    /// and the reset discards the response still queued towards the client. No buffer is held
    /// while waiting.
    async fn close_in_stages(&mut self) {
        // SAFETY: the fd is owned by `self.stream`, still open.
        unsafe { libc::shutdown(self.stream.fd(), libc::SHUT_WR) };
        let until = rt::now() + LINGER;
        loop {
            let next = self.stream.read_next(|| buffers::take(READ_CHUNK));
            match rt::timeout_at(until, next).await {
                Ok((Ok(n), buf)) if n > 0 => buffers::give(buf),
                Ok((_, buf)) => {
                    buffers::give(buf);
                    return;
                }
                Err(_elapsed) => return,
            }
        }
    }

    /// Writes `out`; false when the write failed, or the client did not take it within
    /// `send_timeout`. Such a client is counted as timed out and its connection reset, not
    /// closed: a graceful close would keep what it did not read queued in the kernel
    /// (FIN-WAIT-1) for as long as it goes on not reading.
    async fn write_raw(&mut self, worker: &Worker) -> bool {
        let out = std::mem::take(&mut self.out);
        let write = self.stream.write_all(out);
        match rt::timeout(self.send_timeout, write).await {
            Ok((res, out)) => {
                self.out = out;
                res.is_ok()
            }
            Err(_elapsed) => {
                tracing::debug!("client did not take its response in time");
                worker.counters.client_timeout();
                let linger = libc::linger {
                    l_onoff: 1,
                    l_linger: 0,
                };
                // SAFETY: a valid `linger` of its size, for the fd `self.stream` owns; the close
                // that follows (when the connection is dropped) then resets it.
                unsafe {
                    libc::setsockopt(
                        self.stream.fd(),
                        libc::SOL_SOCKET,
                        libc::SO_LINGER,
                        (&raw const linger).cast(),
                        std::mem::size_of::<libc::linger>() as libc::socklen_t,
                    )
                };
                false
            }
        }
    }
}

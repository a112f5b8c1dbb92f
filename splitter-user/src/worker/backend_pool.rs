//! Each backend as one worker sees it: its idle keep-alive connections, how many connections are
//! open, and its health. Nothing here is shared with another worker.
//!
//! A connection goes back to the pool only after its response was read to the end with no byte
//! beyond it. Before reuse it is checked: any byte waiting on an idle connection, or its end,
//! closes it (pingora's rule), so a late or unsolicited reply can never be read as another
//! request's answer. The check is its readiness (epoll, or the ring's poll), free; a
//! non-blocking peek asks the socket only when an event came while it was idle. A sweep every [`SWEEP_EVERY`] closes idle
//! connections the backend closed (so none lingers in CLOSE-WAIT) and those idle past
//! `backend_idle_timeout_ms` (so the splitter, not the backend, closes them, never under a
//! request).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::backend_conn::BackendConn;
use super::guards::BackendOpen;
use crate::config::BackendConfig;
use crate::metrics::{BackendMeter, BackendSlots, WorkerCounters};
use crate::scatter::health::{Admit, Change, Health};

/// Idle connections kept per backend and worker. Enough for the concurrency of a busy worker;
/// beyond it, connections are closed rather than hoarded.
const MAX_IDLE: usize = 1024;

/// How often idle connections are checked (a peek only for those with a readiness event since
/// their last reply); the pools are LIFO, so the busy ones are rarely idle when it runs.
pub const SWEEP_EVERY: Duration = Duration::from_millis(100);

/// One backend, on one worker.
pub struct Backend {
    /// Its configured name, for `X-Splitter-Backend` and logs.
    pub name: Rc<str>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Index of its counters in the metrics cell (and its name in the access log).
    pub slot: usize,
    /// Everything counted for it goes through this: nothing once a reload gave its slot to
    /// another name (while it is removed, its connections and calls ending).
    pub meter: Rc<BackendMeter>,
    /// What this backend gets differently from the others: its own deadline, `Host`, target
    /// prefix, and whether it is a shadow. Replaced on reload.
    pub options: RefCell<Rc<Options>>,
    /// `GET` this to probe it when ejected, instead of a real request.
    health_path: RefCell<Option<Rc<str>>>,
    /// Most connections open at once.
    max_connections: Cell<usize>,
    /// Connections open now: idle, busy and connecting.
    open: Rc<Cell<usize>>,
    /// Idle connections, the most recently used last, with when they went idle.
    idle: RefCell<Vec<(BackendConn, Instant)>>,
    /// Removed by a reload (or moved to another address): requests still using it close their
    /// connections instead of pooling them, where no sweep would reach them.
    retired: Cell<bool>,
    health: RefCell<Health>,
}

/// The per-backend request settings (SPEC 4).
#[derive(Debug, Default, PartialEq)]
pub struct Options {
    /// Its own deadline, capped by the route's.
    pub timeout: Option<Duration>,
    /// The `Host` it gets.
    pub host: Option<Box<[u8]>>,
    /// The `Host` it gets when the client sent none (HTTP/1.0) or an empty one: its `address`
    /// as written, as a proxy names its upstream; many servers refuse an empty `Host`.
    pub default_host: Box<[u8]>,
    /// Prepended to the forwarded target.
    pub path_prefix: Option<Box<[u8]>>,
    /// Measured, never waited for, never wins.
    pub shadow: bool,
}

impl Options {
    fn of(config: &BackendConfig) -> Self {
        Options {
            timeout: config.timeout,
            host: config.host.as_deref().map(|h| h.as_bytes().into()),
            default_host: config
                .host_name
                .clone()
                .unwrap_or_else(|| config.address.to_string())
                .into_bytes()
                .into(),
            path_prefix: config.path_prefix.as_deref().map(|p| p.as_bytes().into()),
            shadow: config.shadow,
        }
    }

    /// Whether the request it gets differs from the one the others get.
    pub fn rewrites(&self) -> bool {
        self.host.is_some() || self.path_prefix.is_some()
    }
}

/// How the backend's part of a request goes.
pub enum Route {
    /// Send it on this connection (pooled, or opened for it). When the backend was ejected,
    /// this request is the probe: its outcome decides whether the backend is back.
    Send(ConnSource),
    /// Do not send: the backend is ejected. `check`: its back-off is over and it has a
    /// `health_path`: the caller probes it with `GET check` ([`Backend::record`] the outcome).
    Ejected { check: Option<Rc<str>> },
    /// Do not send: all of `max_connections` are busy.
    Overloaded,
}

/// Where the connection for a request comes from.
pub enum ConnSource {
    /// An idle one, probed clean.
    Pooled(BackendConn),
    /// A new one may be opened: this counts it.
    New(BackendOpen),
}

impl Backend {
    fn new(config: &BackendConfig, name: Rc<str>, meter: Rc<BackendMeter>) -> Self {
        Backend {
            name,
            addr: config.address,
            slot: meter.slot(),
            meter,
            options: RefCell::new(Rc::new(Options::of(config))),
            health_path: RefCell::new(config.health_path.as_deref().map(Rc::from)),
            max_connections: Cell::new(config.max_connections),
            open: Rc::new(Cell::new(0)),
            idle: RefCell::new(Vec::new()),
            retired: Cell::new(false),
            health: RefCell::new(Health::new(config.eject_after)),
        }
    }

    /// Takes the settings a reload may change.
    fn update(&self, config: &BackendConfig) {
        *self.options.borrow_mut() = Rc::new(Options::of(config));
        *self.health_path.borrow_mut() = config.health_path.as_deref().map(Rc::from);
        self.max_connections.set(config.max_connections);
        let mut health = self.health.borrow_mut();
        let was_ejected = health.is_ejected();
        health.set_eject_after(config.eject_after);
        if was_ejected && !health.is_ejected() {
            self.meter.restored();
        }
    }

    /// How a request at `now` goes to this backend; a pooled connection idle for
    /// `idle_timeout` or longer is not used (the sweep may not have come by yet). With a
    /// `health_path`, the probe of an ejected backend is a health check the caller starts
    /// ([`Backend::health_check_due`]).
    pub fn route(&self, now: Instant, idle_timeout: Duration) -> Route {
        let admit = self.health.borrow_mut().admit(now);
        let probe = match admit {
            Admit::Send => false,
            Admit::Skip => return Route::Ejected { check: None },
            Admit::Probe => match self.health_path.borrow().clone() {
                Some(path) => return Route::Ejected { check: Some(path) },
                None => true,
            },
        };
        if let Some(conn) = self.take(now.checked_sub(idle_timeout)) {
            return Route::Send(ConnSource::Pooled(conn));
        }
        if self.open.get() >= self.max_connections.get() {
            if probe {
                // A probe that cannot get a connection failed: the backend is still stuck.
                self.record(false, now);
            }
            return Route::Overloaded;
        }
        let open = self.open_one();
        Route::Send(ConnSource::New(open))
    }

    /// Counts a connection about to be opened (a request's, or a health check's).
    pub fn open_one(&self) -> BackendOpen {
        BackendOpen::new(Rc::clone(&self.meter), Rc::clone(&self.open))
    }

    /// An idle connection that is still clean and went idle at or after `idle_since`, if any;
    /// the others are closed (the most recent is last: once one is too old, all are).
    fn take(&self, idle_since: Option<Instant>) -> Option<BackendConn> {
        let mut idle = self.idle.borrow_mut();
        let mut found = None;
        while let Some((conn, since)) = idle.pop() {
            if idle_since.is_none_or(|at| since >= at) && conn.is_clean() {
                found = Some(conn);
                break;
            }
        }
        self.meter.pool_idle(idle.len());
        found
    }

    /// Returns a connection whose exchange ended cleanly. False when it was closed instead
    /// (the pool is full, or the backend was removed).
    pub fn put(&self, conn: BackendConn, now: Instant) -> bool {
        let mut idle = self.idle.borrow_mut();
        if idle.len() >= MAX_IDLE || self.retired.get() {
            return false;
        }
        idle.push((conn, now));
        self.meter.pool_idle(idle.len());
        true
    }

    /// How a request sent to it ended: `ok` for a whole HTTP response, else an error or a
    /// timeout. Ejections and restorations are logged and counted.
    pub fn record(&self, ok: bool, now: Instant) {
        let change = self.health.borrow_mut().record(ok, now);
        match change {
            Change::None => {}
            Change::Ejected => {
                tracing::warn!(backend = %self.name, "backend ejected");
                self.meter.ejected();
            }
            Change::Restored => {
                tracing::info!(backend = %self.name, "backend restored");
                self.meter.restored();
            }
        }
    }

    /// Closes idle connections the backend closed or sent something on, and those idle since
    /// before `idle_since`.
    fn sweep(&self, idle_since: Instant) {
        let mut idle = self.idle.borrow_mut();
        if idle.is_empty() {
            return;
        }
        idle.retain(|(conn, since)| *since >= idle_since && conn.is_clean());
        self.meter.pool_idle(idle.len());
    }
}

/// A worker's backends, kept across reloads: a backend whose name and address stay keeps its
/// idle connections and its health; one removed (or whose name now resolves elsewhere) is
/// dropped with its idle connections once no request uses it.
#[derive(Default)]
pub struct Backends {
    current: HashMap<(Rc<str>, SocketAddr), Rc<Backend>>,
    /// The backend name each metrics slot counts for, to zero a slot given to another name
    /// and silence the backends of the name it counted for.
    slots: BackendSlots,
    /// The same for the route slots, by path prefix.
    route_owners: [Option<Box<str>>; splitter_common::MAX_ROUTES],
}

impl Backends {
    /// The backends of a (re)loaded configuration, in its order; `slots[i]` is the metrics slot
    /// of `configs[i]`.
    pub fn load(
        &mut self,
        configs: &[BackendConfig],
        slots: &[usize],
        counters: &Rc<WorkerCounters>,
    ) -> Vec<Rc<Backend>> {
        let mut previous = std::mem::take(&mut self.current);
        let backends: Vec<Rc<Backend>> = configs
            .iter()
            .zip(slots)
            .map(|(config, &slot)| {
                let name: Rc<str> = Rc::from(config.name.as_str());
                let meter = self.slots.claim(slot, &name, counters);
                let key = (Rc::clone(&name), config.address);
                let backend = match previous.remove(&key) {
                    Some(kept) if Rc::ptr_eq(&kept.meter, &meter) => {
                        kept.update(config);
                        kept
                    }
                    _ => Rc::new(Backend::new(config, name, meter)),
                };
                self.current.insert(key, Rc::clone(&backend));
                backend
            })
            .collect();
        // What is left was removed: its idle connections close now, busy ones when done (and
        // are counted closed in its slot unless the slot went to another name, above).
        for gone in previous.values() {
            gone.retired.set(true);
            gone.idle.borrow_mut().clear();
            gone.meter.pool_idle(0);
            if gone.health.borrow().is_ejected() {
                gone.meter.restored();
            }
        }
        backends
    }

    /// Zeroes the counters of route slots given to another route prefix than before.
    pub fn own_routes(
        &mut self,
        routes: &[crate::scatter::route::Route],
        counters: &WorkerCounters,
    ) {
        for route in routes {
            let owner = &mut self.route_owners[route.slot];
            if owner.as_deref() != Some(route.path_prefix.as_str()) {
                counters.reset_route(route.slot);
                *owner = Some(route.path_prefix.as_str().into());
            }
        }
    }

    /// Closes idle connections that are no longer clean or were idle since before `idle_since`.
    pub fn sweep(&self, idle_since: Instant) {
        for backend in self.current.values() {
            backend.sweep(idle_since);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsRegion;
    use crate::scatter::exchange::BackendOutcome;

    fn config(name: &str, port: u16) -> BackendConfig {
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        BackendConfig {
            name: name.to_owned(),
            address,
            answer: vec![address],
            host_name: None,
            eject_after: 1,
            health_path: None,
            max_connections: 64,
            timeout: None,
            host: None,
            path_prefix: None,
            shadow: false,
        }
    }

    fn configs(prefix: &str, n: usize) -> Vec<BackendConfig> {
        (0..n)
            .map(|i| config(&format!("{prefix}{i}"), 9000))
            .collect()
    }

    #[test]
    fn connections_of_a_removed_backend_do_not_count_for_the_name_given_its_slot() {
        let region = MetricsRegion::heap(1);
        let counters = Rc::new(region.handle(0));
        let mut pool = Backends::default();
        let slots: Vec<usize> = (0..splitter_common::MAX_BACKENDS).collect();
        let old = pool.load(&configs("a", slots.len()), &slots, &counters);
        // A connection of each, busy across the reload.
        let busy: Vec<BackendOpen> = old.iter().map(|b| b.open_one()).collect();
        assert_eq!(region.total().backends[7].connects, 1);
        // Every slot goes to a new name (all 16 used: the freed ones are taken again).
        let new = pool.load(&configs("b", slots.len()), &slots, &counters);
        assert!(new.iter().zip(&old).all(|(n, o)| n.slot == o.slot));
        // The removed backends' calls end after the reload: their closes, outcomes, replies
        // and the rest are not the new names'.
        drop(busy);
        for b in &old {
            b.meter.outcome(BackendOutcome::Timeout, None);
            b.meter.latency(600_000);
            b.meter.late_drained();
            b.record(false, Instant::now());
            assert!(b.retired.get());
        }
        for (slot, b) in region.total().backends.iter().enumerate() {
            assert_eq!((b.connects, b.closed), (0, 0), "slot {slot}");
            assert_eq!((b.timeout, b.late_drained), (0, 0), "slot {slot}");
            assert_eq!((b.ejections, b.is_ejected), (0, 0), "slot {slot}");
            assert_eq!(b.latency_buckets.iter().sum::<u64>(), 0, "slot {slot}");
        }
        // The new names count as ever.
        drop(new[3].open_one());
        let t = region.total().backends[3];
        assert_eq!((t.connects, t.closed), (1, 1));
    }

    #[test]
    fn a_removed_backend_whose_slot_no_name_took_keeps_counting_there() {
        let region = MetricsRegion::heap(1);
        let counters = Rc::new(region.handle(0));
        let mut pool = Backends::default();
        let old = pool.load(&[config("a", 9000), config("b", 9001)], &[0, 1], &counters);
        let busy_a = old[0].open_one();
        let busy_b = old[1].open_one();
        // `a` is removed (its slot left free); `b` moves to another address, keeping its name
        // and slot: both old backends are retired, their slots still theirs.
        let new = pool.load(&[config("b", 9002)], &[1], &counters);
        assert!(!Rc::ptr_eq(&new[0], &old[1]));
        drop(busy_a);
        drop(busy_b);
        let t = region.total();
        assert_eq!((t.backends[0].connects, t.backends[0].closed), (1, 1));
        assert_eq!((t.backends[1].connects, t.backends[1].closed), (1, 1));
        // A later reload gives `a`'s slot to `c`: it starts at zero.
        pool.load(&[config("b", 9002), config("c", 9003)], &[1, 0], &counters);
        let t = region.total();
        assert_eq!((t.backends[0].connects, t.backends[0].closed), (0, 0));
        assert_eq!((t.backends[1].connects, t.backends[1].closed), (1, 1));
    }
}

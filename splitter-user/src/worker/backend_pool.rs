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
use crate::metrics::WorkerCounters;
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
    /// Index of its counters in the metrics cell.
    pub slot: usize,
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
    counters: Rc<WorkerCounters>,
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
    fn new(config: &BackendConfig, slot: usize, counters: &Rc<WorkerCounters>) -> Self {
        Backend {
            name: Rc::from(config.name.as_str()),
            addr: config.address,
            slot,
            options: RefCell::new(Rc::new(Options::of(config))),
            health_path: RefCell::new(config.health_path.as_deref().map(Rc::from)),
            max_connections: Cell::new(config.max_connections),
            open: Rc::new(Cell::new(0)),
            idle: RefCell::new(Vec::new()),
            retired: Cell::new(false),
            health: RefCell::new(Health::new(config.eject_after)),
            counters: Rc::clone(counters),
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
            self.counters.backend_restored(self.slot);
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
        BackendOpen::new(Rc::clone(&self.counters), self.slot, Rc::clone(&self.open))
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
        self.counters.pool_idle(self.slot, idle.len());
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
        self.counters.pool_idle(self.slot, idle.len());
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
                self.counters.backend_ejected(self.slot);
            }
            Change::Restored => {
                tracing::info!(backend = %self.name, "backend restored");
                self.counters.backend_restored(self.slot);
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
        self.counters.pool_idle(self.slot, idle.len());
    }
}

/// A worker's backends, kept across reloads: a backend whose name and address stay keeps its
/// idle connections and its health; one removed (or whose name now resolves elsewhere) is
/// dropped with its idle connections once no request uses it.
#[derive(Default)]
pub struct Backends {
    current: HashMap<(Rc<str>, SocketAddr), Rc<Backend>>,
    /// The backend name each metrics slot counts for, to zero a slot given to another name.
    owners: [Option<Rc<str>>; splitter_common::MAX_BACKENDS],
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
                if self.owners[slot].as_deref() != Some(&*name) {
                    counters.reset_backend(slot);
                    self.owners[slot] = Some(Rc::clone(&name));
                }
                let key = (name, config.address);
                let backend = match previous.remove(&key) {
                    Some(kept) if kept.slot == slot => {
                        kept.update(config);
                        kept
                    }
                    _ => Rc::new(Backend::new(config, slot, counters)),
                };
                self.current.insert(key, Rc::clone(&backend));
                backend
            })
            .collect();
        // What is left was removed: its idle connections close now, busy ones when done.
        for gone in previous.values() {
            gone.retired.set(true);
            gone.idle.borrow_mut().clear();
            gone.counters.pool_idle(gone.slot, 0);
            if gone.health.borrow().is_ejected() {
                gone.counters.backend_restored(gone.slot);
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

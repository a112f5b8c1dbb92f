//! The counted pairs of the data plane as values: what is counted up when one is made is counted
//! down when it is dropped, on every path out, early returns and cancelled futures included. So
//! the gauges (requests in flight, open client connections) and the backend connection counts
//! (`connects` minus `closed` is what is open) cannot drift.

use std::cell::Cell;
use std::rc::Rc;

use super::admission::Permit;
use crate::metrics::{BackendMeter, WorkerCounters};

/// A request in progress: admitted against `max_in_flight` and counted in the in-flight gauge.
pub struct InFlight<'w> {
    counters: &'w WorkerCounters,
    _permit: Permit<'w>,
}

impl<'w> InFlight<'w> {
    /// Counts the request admitted by `permit`.
    pub fn new(counters: &'w WorkerCounters, permit: Permit<'w>) -> Self {
        counters.in_flight(1);
        InFlight {
            counters,
            _permit: permit,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.counters.in_flight(-1);
    }
}

/// An open client connection, in the connections gauge (and once in `accepted`).
pub struct ClientOpen<'w>(&'w WorkerCounters);

impl<'w> ClientOpen<'w> {
    /// Counts a connection just accepted.
    pub fn new(counters: &'w WorkerCounters) -> Self {
        counters.connection(1);
        ClientOpen(counters)
    }
}

impl Drop for ClientOpen<'_> {
    fn drop(&mut self) {
        self.0.connection(-1);
    }
}

/// A connection to a backend, from the moment it is attempted: counted in the backend's `open`
/// (which `max_connections` bounds) and in its meter's `connects`, then in `closed` when dropped,
/// wherever that happens (a failed connect or exchange, a full pool, a reload that removed its
/// backend, the worker's exit). A reload that gives the removed backend's metrics slot to another
/// name silences the meter: the close is not counted for the new name, whose `connects` never
/// counted it.
pub struct BackendOpen {
    meter: Rc<BackendMeter>,
    open: Rc<Cell<usize>>,
}

impl BackendOpen {
    /// Counts a connection about to be opened.
    pub fn new(meter: Rc<BackendMeter>, open: Rc<Cell<usize>>) -> Self {
        meter.connect();
        open.set(open.get() + 1);
        BackendOpen { meter, open }
    }
}

impl Drop for BackendOpen {
    fn drop(&mut self) {
        self.open.set(self.open.get() - 1);
        self.meter.closed();
    }
}

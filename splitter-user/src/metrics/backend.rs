//! What a worker counts for each backend goes through the backend's [`BackendMeter`], and the
//! meters through [`BackendSlots`], the owner of each of the worker's backend metrics slots.
//!
//! A slot counts for one backend name at a time. A reload may give a removed backend's slot to
//! a new name (once all 16 have been used); the slot is then zeroed for its new owner, but the
//! removed backend may still have connections open and calls in flight, whose ends would count
//! for the new name: `closed` without `connects`, replies it never had. So the old owner's meter
//! is disowned first, and from then on counts nothing: every count for a backend (connects,
//! closes, outcomes, latency, wins, late drains, the pool and ejection gauges) takes the one
//! check of [`BackendMeter::counting`]. A removed backend whose slot no other name took keeps
//! counting there, so its connects and closes still balance.

use std::cell::Cell;
use std::rc::Rc;

use splitter_common::MAX_BACKENDS;

use super::WorkerCounters;
use crate::scatter::exchange::BackendOutcome;
use crate::scatter::select::Invalid;

/// One backend name's metrics slot, on one worker; shared by its backends (one per address it
/// had) and their connections.
pub struct BackendMeter {
    counters: Rc<WorkerCounters>,
    slot: usize,
    /// False once the slot counts for another name.
    owned: Cell<bool>,
}

impl BackendMeter {
    /// The counters and slot to count in, unless the slot went to another name.
    fn counting(&self) -> Option<(&WorkerCounters, usize)> {
        self.owned.get().then_some((&*self.counters, self.slot))
    }

    /// The slot it counts in (or did).
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// Whether it still counts: its slot was not given to another name.
    #[cfg(test)]
    pub fn owns_slot(&self) -> bool {
        self.owned.get()
    }

    /// A new connection was opened (attempted).
    pub fn connect(&self) {
        if let Some((c, slot)) = self.counting() {
            c.backend_connect(slot);
        }
    }

    /// A connection was closed.
    pub fn closed(&self) {
        if let Some((c, slot)) = self.counting() {
            c.backend_closed(slot);
        }
    }

    /// What became of its part of a request; `invalid`: why its reply was invalid.
    pub fn outcome(&self, outcome: BackendOutcome, invalid: Option<Invalid>) {
        if let Some((c, slot)) = self.counting() {
            c.backend_outcome(slot, outcome);
            if let Some(why) = invalid {
                c.backend_invalid(slot, why);
            }
        }
    }

    /// Its whole reply came `elapsed_us` after its request started.
    pub fn latency(&self, elapsed_us: u64) {
        if let Some((c, slot)) = self.counting() {
            c.backend_latency(slot, elapsed_us);
        }
    }

    /// Its response was the one returned.
    pub fn win(&self) {
        if let Some((c, slot)) = self.counting() {
            c.win(slot);
        }
    }

    /// A late response was read to its end and its connection kept.
    pub fn late_drained(&self) {
        if let Some((c, slot)) = self.counting() {
            c.late_drained(slot);
        }
    }

    /// Gauge: `idle` connections in this worker's pool.
    pub fn pool_idle(&self, idle: usize) {
        if let Some((c, slot)) = self.counting() {
            c.pool_idle(slot, idle);
        }
    }

    /// It was ejected on this worker.
    pub fn ejected(&self) {
        if let Some((c, slot)) = self.counting() {
            c.backend_ejected(slot);
        }
    }

    /// It takes traffic again on this worker (or was removed while ejected).
    pub fn restored(&self) {
        if let Some((c, slot)) = self.counting() {
            c.backend_restored(slot);
        }
    }
}

/// Which backend name each of a worker's metrics slots counts for, with its meter.
#[derive(Default)]
pub struct BackendSlots {
    owners: [Option<(Rc<str>, Rc<BackendMeter>)>; MAX_BACKENDS],
}

impl BackendSlots {
    /// The meter of backend `name`, whose slot is `slot`: the one it has, or, when the slot
    /// counted for another name (or for none yet), a new one on the slot zeroed. The meter of
    /// the name it counted for before stops counting: backends that name had, still closing
    /// connections and ending calls, count nowhere rather than for `name`.
    pub fn claim(
        &mut self,
        slot: usize,
        name: &Rc<str>,
        counters: &Rc<WorkerCounters>,
    ) -> Rc<BackendMeter> {
        let owner = &mut self.owners[slot];
        match owner {
            Some((owned_by, meter)) if **owned_by == **name => Rc::clone(meter),
            _ => {
                if let Some((_, before)) = owner.take() {
                    before.owned.set(false);
                }
                counters.reset_backend(slot);
                let meter = Rc::new(BackendMeter {
                    counters: Rc::clone(counters),
                    slot,
                    owned: Cell::new(true),
                });
                *owner = Some((Rc::clone(name), Rc::clone(&meter)));
                meter
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsRegion;

    fn name(s: &str) -> Rc<str> {
        Rc::from(s)
    }

    /// Every kind of count, once, through `meter`.
    fn count_everything(meter: &BackendMeter) {
        meter.connect();
        meter.closed();
        meter.outcome(BackendOutcome::Invalid, Some(Invalid::BelowFloor));
        meter.latency(1_500);
        meter.win();
        meter.late_drained();
        meter.pool_idle(3);
        meter.ejected();
    }

    #[test]
    fn a_name_keeps_its_meter_and_its_counts() {
        let region = MetricsRegion::heap(1);
        let counters = Rc::new(region.handle(0));
        let mut slots = BackendSlots::default();
        let a = slots.claim(2, &name("a"), &counters);
        a.connect();
        let again = slots.claim(2, &name("a"), &counters);
        assert!(Rc::ptr_eq(&a, &again));
        again.closed();
        let t = region.total();
        assert_eq!((t.backends[2].connects, t.backends[2].closed), (1, 1));
    }

    #[test]
    fn a_slot_given_to_another_name_starts_at_zero_and_the_old_owner_counts_nowhere() {
        let region = MetricsRegion::heap(1);
        let counters = Rc::new(region.handle(0));
        let mut slots = BackendSlots::default();
        let a = slots.claim(5, &name("a"), &counters);
        // A connection and a call of `a` still under way when the reload comes.
        a.connect();
        a.connect();
        a.pool_idle(1);
        a.ejected();
        let b = slots.claim(5, &name("b"), &counters);
        assert!(!a.owns_slot() && b.owns_slot());
        let zero = region.total().backends[5];
        assert_eq!(zero.connects, 0);
        assert_eq!(zero.is_ejected, 0);
        assert_eq!(zero.pool_idle, 0);
        // `a`'s connections close and its calls end after the reload: not `b`'s counts.
        count_everything(&a);
        a.restored();
        let t = region.total().backends[5];
        assert_eq!(t.connects, 0);
        assert_eq!(t.closed, 0);
        assert_eq!(t.invalid + t.below_floor + t.wins + t.late_drained, 0);
        assert_eq!(t.latency_buckets.iter().sum::<u64>(), 0);
        assert_eq!(t.latency_sum_us, 0);
        assert_eq!((t.pool_idle, t.ejections, t.is_ejected), (0, 0, 0));
        // `b` counts as any backend does.
        count_everything(&b);
        let t = region.total().backends[5];
        assert_eq!(
            (t.connects, t.closed, t.invalid, t.below_floor),
            (1, 1, 1, 1)
        );
        assert_eq!(
            (t.wins, t.late_drained, t.pool_idle, t.ejections),
            (1, 1, 3, 1)
        );
        assert_eq!(t.latency_sum_us, 1_500);
    }

    #[test]
    fn a_name_back_in_a_slot_another_name_had_is_a_new_owner() {
        let region = MetricsRegion::heap(1);
        let counters = Rc::new(region.handle(0));
        let mut slots = BackendSlots::default();
        let a = slots.claim(0, &name("a"), &counters);
        let b = slots.claim(0, &name("b"), &counters);
        let a2 = slots.claim(0, &name("a"), &counters);
        assert!(!a.owns_slot() && !b.owns_slot() && a2.owns_slot());
        a.connect();
        b.connect();
        a2.win();
        let t = region.total().backends[0];
        assert_eq!((t.connects, t.wins), (0, 1));
    }
}

//! Timers: a binary heap of deadlines over a slab of entries, one per registered [`Sleep`].
//!
//! A sleep registers at its first poll that finds it not yet due, and deregisters when dropped;
//! moving a deadline pushes a new heap item and leaves the old one stale (skipped when it reaches
//! the top), so a reset costs a push, never a search. Most sleeps are dropped long before their
//! deadline (a connection's idle timeout ends with its next request), so stale items would pile
//! up for as long as the longest timeout: the heap is rebuilt from the live entries whenever it
//! holds more than twice as many items as there are sleeps (plus a slack), which keeps it
//! bounded at a cost amortised over the pushes that made it grow. The loop fires what is due
//! once per turn and sleeps in the ring until the earliest deadline.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use slab::Slab;

use super::with_core;

thread_local! {
    /// The clock as the loop last read it: a sleep compares against it rather than reading the
    /// clock itself. It is never ahead of the time, so a sleep it calls early only registers,
    /// and fires on the next turn.
    static NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Reads the clock, and keeps the reading for [`Sleep`]s polled in this turn.
pub(super) fn now_fresh() -> Instant {
    let now = Instant::now();
    NOW.with(|n| n.set(Some(now)));
    now
}

/// The clock as the loop read it at the start of this turn, after the completions the turn's
/// tasks handle were reaped: a little behind the time, never ahead, and no clock read.
pub fn now_cached() -> Instant {
    NOW.with(|n| n.get()).unwrap_or_else(now_fresh)
}

struct Entry {
    deadline: Instant,
    /// Renewed on each reset: heap items of older deadlines are stale.
    version: u64,
    waker: Option<Waker>,
    fired: bool,
}

/// Stale heap items tolerated beyond twice the live sleeps before a rebuild.
const COMPACT_SLACK: usize = 1024;

/// A runtime's timers.
#[derive(Default)]
pub(super) struct Timers {
    entries: Slab<Entry>,
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    /// Versions are unique across entries: a slot reused by another sleep never matches the
    /// stale heap items of the one before.
    next_version: u64,
}

impl Timers {
    /// Wakes every sleep due at `now`.
    pub(super) fn fire_due(&mut self, now: Instant) {
        while let Some(&Reverse((deadline, key, version))) = self.heap.peek() {
            if deadline > now {
                break;
            }
            self.heap.pop();
            if let Some(entry) = self.entries.get_mut(key) {
                if entry.version == version && !entry.fired {
                    entry.fired = true;
                    if let Some(waker) = entry.waker.take() {
                        waker.wake();
                    }
                }
            }
        }
    }

    /// The earliest deadline of a live sleep, stale heap items dropped on the way.
    pub(super) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, key, version))) = self.heap.peek() {
            match self.entries.get(key) {
                Some(entry) if entry.version == version && !entry.fired => return Some(deadline),
                _ => {
                    self.heap.pop();
                }
            }
        }
        None
    }

    fn register(&mut self, deadline: Instant, waker: Waker) -> usize {
        let version = self.version();
        let key = self.entries.insert(Entry {
            deadline,
            version,
            waker: Some(waker),
            fired: false,
        });
        self.heap.push(Reverse((deadline, key, version)));
        self.compact();
        key
    }

    fn reset(&mut self, key: usize, deadline: Instant) {
        let version = self.version();
        let entry = &mut self.entries[key];
        entry.deadline = deadline;
        entry.version = version;
        entry.fired = false;
        self.heap.push(Reverse((deadline, key, version)));
        self.compact();
    }

    /// Rebuilds the heap from the live entries when stale items outnumber them.
    fn compact(&mut self) {
        if self.heap.len() <= 2 * self.entries.len() + COMPACT_SLACK {
            return;
        }
        let mut items = std::mem::take(&mut self.heap).into_vec();
        items.clear();
        items.extend(
            self.entries
                .iter()
                .filter(|(_, e)| !e.fired)
                .map(|(key, e)| Reverse((e.deadline, key, e.version))),
        );
        self.heap = BinaryHeap::from(items);
    }

    fn version(&mut self) -> u64 {
        self.next_version += 1;
        self.next_version
    }
}

/// Completes at its deadline; [`Sleep::reset`] moves it.
pub struct Sleep {
    deadline: Instant,
    /// Its timer entry, once polled.
    key: Option<usize>,
}

/// A sleep until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Moves the deadline (a completed sleep may be reset and awaited again).
    pub fn reset(&mut self, deadline: Instant) {
        self.deadline = deadline;
        if let Some(key) = self.key {
            with_core(|core| core.timers.borrow_mut().reset(key, deadline));
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.key {
            None => {
                if now_cached() >= self.deadline {
                    return Poll::Ready(());
                }
                let deadline = self.deadline;
                let key = with_core(|core| {
                    core.timers
                        .borrow_mut()
                        .register(deadline, cx.waker().clone())
                });
                self.key = Some(key);
                Poll::Pending
            }
            Some(key) => with_core(|core| {
                let entry = &mut core.timers.borrow_mut().entries[key];
                if entry.fired {
                    return Poll::Ready(());
                }
                match &mut entry.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    slot => *slot = Some(cx.waker().clone()),
                }
                Poll::Pending
            }),
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            // Not through `with_core`: a sleep may outlive its runtime in a value dropped late.
            let _ = super::CURRENT.try_with(|current| {
                if let Some(core) = &*current.borrow() {
                    core.timers.borrow_mut().entries.remove(key);
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sleeps_dropped_before_their_deadline_leave_a_bounded_heap() {
        let mut timers = Timers::default();
        let far = Instant::now() + Duration::from_secs(3600);
        let kept = timers.register(far, Waker::noop().clone());
        for i in 0..100_000 {
            let key = timers.register(far + Duration::from_millis(i), Waker::noop().clone());
            timers.entries.remove(key);
            assert!(timers.heap.len() <= 2 * (timers.entries.len() + 1) + COMPACT_SLACK);
        }
        for i in 0..10_000 {
            timers.reset(kept, far + Duration::from_millis(i));
        }
        assert!(timers.heap.len() <= 2 + COMPACT_SLACK + 1);
        assert_eq!(
            timers.next_deadline(),
            Some(far + Duration::from_millis(9_999))
        );
    }

    #[test]
    fn due_sleeps_fire_once_and_stale_items_do_not_fire_a_reset_one() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let a = timers.register(t0 + Duration::from_millis(10), Waker::noop().clone());
        let b = timers.register(t0 + Duration::from_millis(20), Waker::noop().clone());
        timers.reset(a, t0 + Duration::from_millis(30));
        timers.fire_due(t0 + Duration::from_millis(25));
        assert!(!timers.entries[a].fired, "its old deadline is stale");
        assert!(timers.entries[b].fired);
        assert_eq!(timers.next_deadline(), Some(t0 + Duration::from_millis(30)));
        timers.fire_due(t0 + Duration::from_millis(30));
        assert!(timers.entries[a].fired);
        assert_eq!(timers.next_deadline(), None);
    }
}

//! How a worker with nothing to run waits in the ring: for one completion, or for a batch.
//!
//! Each time the worker sleeps and is woken costs a context switch, a cross-CPU wake-up and a
//! turn of the loop, whatever the turn then finds to do. Under load the completions come in
//! streams (a request's replies, the next requests), so the worker asks the kernel to wake it
//! only when several are pending, or when [`WAIT`] has passed and at least one is (Linux 6.12's
//! `min_wait_usec`; with `DEFER_TASKRUN` the kernel does not even wake the thread to count them).
//! How many it waits for follows what can complete: a share of the operations in flight (every
//! socket's readiness poll among them). With few connections that is one, a plain wait, and a
//! lone request is never held back; with many, a completion waits at most [`WAIT`] for others.
//! Only while completions come that fast, though: a batch that was not filled before its wait
//! ended (light load: many connections, few of them busy) makes the next waits plain, until a
//! plain wait finds more than one completion at its end. Otherwise every sleep of a lightly
//! loaded worker would pay the batch's timer for nothing.
//! Measured in the levers table of the README: 27.3 → 24.4 µs per request pinned at 64
//! connections, no change in throughput at 1, 4, 16 or 64.

use std::time::Duration;

/// The longest a completion waits for others before the worker takes it alone. Small against
/// any deadline (80 ms and more) and against a request's own latency on a network.
pub const WAIT: Duration = Duration::from_micros(100);

/// One completion is waited for per this many operations in flight.
const SHARE: usize = 8;

/// The most completions waited for: enough to amortise a wake-up, few enough that a burst
/// ends the wait before [`WAIT`] does.
const MOST: usize = 32;

/// What a sleeping enter into the ring asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wait {
    /// Completions that end the wait at once.
    pub completions: u32,
    /// After this, any completion ends it; zero for a plain wait.
    pub batch_for: Duration,
}

impl Wait {
    /// Until the first completion.
    pub const PLAIN: Wait = Wait {
        completions: 1,
        batch_for: Duration::ZERO,
    };
}

/// Whether a worker's next sleep may wait for a batch, from how its last sleeps ended.
#[derive(Debug)]
pub struct Batcher {
    on: bool,
}

impl Default for Batcher {
    fn default() -> Batcher {
        Batcher { on: true }
    }
}

impl Batcher {
    /// The wait of a worker with `in_flight` operations in the ring and its next timer `left`
    /// away (`None`: no timer). A batch never waits past the timer.
    pub fn wait(&self, in_flight: usize, left: Option<Duration>) -> Wait {
        let completions = if self.on {
            (in_flight / SHARE).clamp(1, MOST)
        } else {
            1
        };
        if completions == 1 {
            return Wait::PLAIN;
        }
        Wait {
            completions: completions as u32,
            batch_for: left.map_or(WAIT, |left| left.min(WAIT)),
        }
    }

    /// A sleep that asked for `asked` ended with `completions` waiting.
    pub fn woke(&mut self, asked: Wait, completions: usize) {
        let wanted = if asked.completions > 1 {
            asked.completions as usize
        } else {
            2
        };
        self.on = completions >= wanted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(in_flight: usize, left: Option<Duration>) -> Wait {
        Batcher::default().wait(in_flight, left)
    }

    #[test]
    fn a_worker_with_few_operations_waits_for_one_completion_and_no_longer() {
        for in_flight in [0, 1, 7, 15] {
            assert_eq!(
                wait(in_flight, None),
                Wait {
                    completions: 1,
                    batch_for: Duration::ZERO
                },
                "{in_flight} in flight"
            );
        }
    }

    #[test]
    fn a_busier_worker_waits_for_a_share_of_its_operations_up_to_the_most() {
        assert_eq!(wait(16, None).completions, 2);
        assert_eq!(wait(200, None).completions, 25);
        assert_eq!(wait(10_000, None).completions, MOST as u32);
        assert_eq!(wait(200, None).batch_for, WAIT);
    }

    #[test]
    fn a_batch_never_waits_past_the_next_timer() {
        let soon = Duration::from_micros(30);
        assert_eq!(wait(200, Some(soon)).batch_for, soon);
        assert_eq!(wait(200, Some(Duration::from_secs(1))).batch_for, WAIT);
        assert_eq!(wait(200, Some(Duration::ZERO)).batch_for, Duration::ZERO);
    }

    #[test]
    fn an_unfilled_batch_makes_the_next_waits_plain_until_one_ends_with_more_than_one() {
        let mut batcher = Batcher::default();
        let batch = batcher.wait(200, None);
        assert_eq!(batch.completions, 25);
        // Filled: the next one batches too.
        batcher.woke(batch, 25);
        assert_eq!(batcher.wait(200, None), batch);
        // Ended by its wait with fewer: light load, plain waits from now on.
        batcher.woke(batch, 3);
        let plain = batcher.wait(200, None);
        assert_eq!(plain.completions, 1);
        assert_eq!(plain.batch_for, Duration::ZERO);
        batcher.woke(plain, 1);
        assert_eq!(batcher.wait(200, None), plain);
        // A plain wait that ended with several waiting: completions come fast again.
        batcher.woke(plain, 2);
        assert_eq!(batcher.wait(200, None), batch);
    }
}

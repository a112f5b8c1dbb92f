//! `max_in_flight`, exactly, for the whole process, without a shared counter on the hot path.
//!
//! The limit is a pool of tokens, one per request allowed in progress. A worker takes tokens
//! from the shared pool a batch at a time and keeps the spare ones, so a busy worker admits and
//! finishes requests with no atomic operation at all; it gives its spare tokens back as soon as
//! it has nothing in progress (or holds more than two batches), so an idle worker never starves
//! a busy one. A request runs only while holding a token: the process never has more than
//! `max_in_flight` requests in progress, and refuses one (503) only when every token is taken or
//! held by a worker that is itself busy.

use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;

/// The process-wide pool of free tokens. Signed: a reload that lowers the limit while requests
/// are in progress may leave it below zero until they finish.
#[derive(Clone, Debug)]
pub struct TokenPool(Arc<AtomicIsize>);

impl TokenPool {
    /// A pool of `max_in_flight` tokens.
    pub fn new(max_in_flight: usize) -> TokenPool {
        TokenPool(Arc::new(AtomicIsize::new(max_in_flight as isize)))
    }

    /// After a reload: the limit moves from `old` to `new`.
    pub fn resize(&self, old: usize, new: usize) {
        self.0
            .fetch_add(new as isize - old as isize, Ordering::AcqRel);
    }

    /// Takes up to `want` tokens; returns how many it got.
    fn take(&self, want: usize) -> usize {
        let mut free = self.0.load(Ordering::Acquire);
        loop {
            if free <= 0 {
                return 0;
            }
            let got = want.min(free as usize);
            match self.0.compare_exchange_weak(
                free,
                free - got as isize,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return got,
                Err(now) => free = now,
            }
        }
    }

    fn give(&self, n: usize) {
        if n > 0 {
            self.0.fetch_add(n as isize, Ordering::AcqRel);
        }
    }
}

/// One worker's side: the tokens it holds, spare or in use.
#[derive(Debug)]
pub struct Admission {
    pool: TokenPool,
    /// Tokens taken from the pool per trip: few enough to leave some for the other workers,
    /// enough that a busy worker rarely touches the pool.
    batch: usize,
    /// Tokens held and not in use.
    spare: Cell<usize>,
    /// Tokens in use: requests in progress on this worker.
    in_use: Cell<usize>,
}

impl Admission {
    /// A worker's admission over `pool`, for a limit of `max_in_flight` shared by `workers`.
    pub fn new(pool: TokenPool, max_in_flight: usize, workers: usize) -> Admission {
        Admission {
            pool,
            batch: (max_in_flight / (workers.max(1) * 8)).clamp(1, 64),
            spare: Cell::new(0),
            in_use: Cell::new(0),
        }
    }

    /// Admits a request, or refuses it when the process is at its limit. The token goes back
    /// when the permit is dropped.
    pub fn admit(&self) -> Option<Permit<'_>> {
        if self.spare.get() == 0 {
            self.spare.set(self.pool.take(self.batch));
        }
        match self.spare.get() {
            0 => None,
            n => {
                self.spare.set(n - 1);
                self.in_use.set(self.in_use.get() + 1);
                Some(Permit(self))
            }
        }
    }

    /// A request admitted by `admit` is done.
    fn release(&self) {
        let in_use = self.in_use.get() - 1;
        self.in_use.set(in_use);
        let spare = self.spare.get() + 1;
        let keep = match in_use {
            // Idle: keep nothing, another worker may need it.
            0 => 0,
            _ if spare > 2 * self.batch => self.batch,
            _ => spare,
        };
        self.pool.give(spare - keep);
        self.spare.set(keep);
    }

    /// Requests in progress on this worker.
    #[cfg(test)]
    fn in_use(&self) -> usize {
        self.in_use.get()
    }
}

/// One admitted request: its token goes back when this is dropped.
#[derive(Debug)]
pub struct Permit<'a>(&'a Admission);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limit_of_one_is_exact_across_workers() {
        let pool = TokenPool::new(1);
        let (a, b) = (
            Admission::new(pool.clone(), 1, 2),
            Admission::new(pool.clone(), 1, 2),
        );
        let held = a.admit().expect("the one token");
        assert!(b.admit().is_none(), "the only token is in use on a");
        assert!(a.admit().is_none());
        drop(held);
        let held = b.admit().expect("a gave its token back when it went idle");
        drop(held);
        assert!(a.admit().is_some());
    }

    #[test]
    fn never_more_than_the_limit_in_progress() {
        let pool = TokenPool::new(100);
        let workers: Vec<_> = (0..3)
            .map(|_| Admission::new(pool.clone(), 100, 3))
            .collect();
        let mut admitted = Vec::new();
        for round in 0..500 {
            admitted.extend(workers[round % 3].admit());
        }
        assert_eq!(admitted.len(), 100);
        assert_eq!(workers.iter().map(Admission::in_use).sum::<usize>(), 100);
    }

    #[test]
    fn a_busy_worker_keeps_a_batch_and_returns_the_surplus() {
        let pool = TokenPool::new(1000);
        let w = Admission::new(pool.clone(), 1000, 2);
        assert_eq!(w.batch, 62);
        let mut admitted: Vec<Permit> = (0..200).filter_map(|_| w.admit()).collect();
        assert_eq!(admitted.len(), 200);
        let last = admitted.pop();
        drop(admitted);
        // One request still in progress: at most two batches of spares stay here.
        assert!(w.spare.get() <= 2 * w.batch);
        drop(last);
        assert_eq!(w.spare.get(), 0);
        assert_eq!(pool.0.load(Ordering::Relaxed), 1000);
    }

    #[test]
    fn resizing_moves_the_limit() {
        let pool = TokenPool::new(1);
        let w = Admission::new(pool.clone(), 1, 1);
        let held = w.admit().expect("the one token");
        pool.resize(1, 0);
        drop(held);
        assert!(w.admit().is_none(), "the limit is now 0");
        pool.resize(0, 2);
        let first = w.admit();
        assert!(first.is_some() && w.admit().is_some());
    }
}

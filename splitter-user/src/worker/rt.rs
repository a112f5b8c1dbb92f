//! What the worker's code asks of its runtime (spawning a task, sleeping, a deadline on a
//! future), answered by the runtime of the shell it runs on: the io_uring shell's own
//! ([`ring`](super::ring)), or tokio for the epoll shell.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::ring;

/// Runs `task` on this worker thread.
pub fn spawn(task: impl Future<Output = ()> + 'static) {
    if ring::is_current() {
        ring::spawn(task);
    } else {
        tokio::task::spawn_local(task);
    }
}

pin_project_lite::pin_project! {
    /// Completes at its deadline; [`Sleep::reset`] moves it.
    #[project = SleepProj]
    pub enum Sleep {
        /// On the io_uring shell.
        Ring { sleep: ring::Sleep },
        /// On the epoll shell.
        Tokio { #[pin] sleep: tokio::time::Sleep },
    }
}

/// A sleep until `deadline`.
pub fn sleep_until(deadline: Instant) -> Sleep {
    if ring::is_current() {
        Sleep::Ring {
            sleep: ring::sleep_until(deadline),
        }
    } else {
        Sleep::Tokio {
            sleep: tokio::time::sleep_until(deadline.into()),
        }
    }
}

/// A sleep for `duration`.
pub fn sleep(duration: Duration) -> Sleep {
    sleep_until(now() + duration)
}

/// The time, for timeouts and measurements: on the ring, the loop's reading at the start of
/// this turn (a little behind, never ahead: a timeout counted from it ends early by at most a
/// turn); on tokio, the clock. Deadlines a client is promised count from the clock itself.
pub fn now() -> Instant {
    if ring::is_current() {
        ring::now_cached()
    } else {
        Instant::now()
    }
}

impl Sleep {
    /// When it completes.
    pub fn deadline(&self) -> Instant {
        match self {
            Sleep::Ring { sleep } => sleep.deadline(),
            Sleep::Tokio { sleep } => sleep.deadline().into_std(),
        }
    }

    /// Moves the deadline.
    pub fn reset(self: Pin<&mut Self>, deadline: Instant) {
        match self.project() {
            SleepProj::Ring { sleep } => sleep.reset(deadline),
            SleepProj::Tokio { sleep } => sleep.reset(deadline.into()),
        }
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project() {
            SleepProj::Ring { sleep } => Pin::new(sleep).poll(cx),
            SleepProj::Tokio { sleep } => sleep.poll(cx),
        }
    }
}

/// The deadline of a [`timeout_at`] passed first.
#[derive(Debug, PartialEq, Eq)]
pub struct Elapsed;

pin_project_lite::pin_project! {
    /// `future`, unless `deadline` comes first.
    pub struct Timeout<F> {
        #[pin]
        future: F,
        #[pin]
        sleep: Sleep,
    }
}

/// `future`'s output, or [`Elapsed`] if `deadline` comes first.
pub fn timeout_at<F: Future>(deadline: Instant, future: F) -> Timeout<F> {
    Timeout {
        future,
        sleep: sleep_until(deadline),
    }
}

/// `future`'s output, or [`Elapsed`] if it takes longer than `duration`.
pub fn timeout<F: Future>(duration: Duration, future: F) -> Timeout<F> {
    timeout_at(now() + duration, future)
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.future.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.sleep.poll(cx).map(|()| Err(Elapsed))
    }
}

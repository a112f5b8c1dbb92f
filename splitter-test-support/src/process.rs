//! Child processes: each one killed by PID and reaped when its guard drops, its output kept line
//! by line, every wait bounded.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long a process may take to report it is ready (debug build, busy shared machine).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A child process killed (by PID) and reaped on drop, unless the test reaped it.
pub struct ProcGuard {
    pub child: Child,
    reaped: bool,
}

impl ProcGuard {
    pub fn new(child: Child) -> ProcGuard {
        ProcGuard {
            child,
            reaped: false,
        }
    }

    /// Sends signal `sig` to the process.
    pub fn signal(&self, sig: i32) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on a child we spawned and have not reaped, so the PID is still ours.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Is the process still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if Instant::now() < until => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Spawns `cmd` with stdin closed and stdout and stderr collected in a [`LineLog`]. Each pipe is
/// drained to its end by a thread of its own, so the child never blocks on a full one.
pub fn spawn_logged(cmd: &mut Command) -> (ProcGuard, LineLog) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let log = LineLog::default();
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("piped stdout")),
        Box::new(child.stderr.take().expect("piped stderr")),
    ];
    log.state().open = pipes.len();
    for pipe in pipes {
        let log = log.clone();
        thread::spawn(move || log.collect(pipe));
    }
    (ProcGuard::new(child), log)
}

/// The lines a child wrote so far, stdout and stderr interleaved as they arrived, terminal
/// colours removed (tracing's text format colours field names on a terminal).
#[derive(Clone, Default)]
pub struct LineLog(Arc<Shared>);

#[derive(Default)]
struct Shared {
    state: Mutex<LogState>,
    /// Signalled on every new line and at the end of each pipe.
    changed: Condvar,
}

#[derive(Default)]
struct LogState {
    lines: Vec<String>,
    /// Pipes not yet at their end.
    open: usize,
}

impl LineLog {
    // Poisoning is ignored: whatever happened to a test thread, the pipes must be drained.
    fn state(&self) -> MutexGuard<'_, LogState> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn collect(&self, pipe: impl Read) {
        let mut reader = BufReader::new(pipe);
        let mut raw = Vec::new();
        // Bytes, not `lines()`: one line that is not UTF-8 must not end the draining.
        while matches!(reader.read_until(b'\n', &mut raw), Ok(n) if n > 0) {
            let line = strip_ansi(String::from_utf8_lossy(&raw).trim_end());
            raw.clear();
            self.state().lines.push(line);
            self.0.changed.notify_all();
        }
        self.state().open -= 1;
        self.0.changed.notify_all();
    }

    pub fn snapshot(&self) -> Vec<String> {
        self.state().lines.clone()
    }

    /// How many lines so far: a later [`LineLog::wait_line`] can start from there.
    pub fn count(&self) -> usize {
        self.state().lines.len()
    }

    /// Every line so far, one per line, for a failure message.
    pub fn text(&self) -> String {
        self.state().lines.join("\n")
    }

    /// The first line at index `from` or later that `pred` accepts, waiting for it up to
    /// `timeout`; `None` once the time is up or the child's output has ended without one.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let until = Instant::now() + timeout;
        let mut state = self.state();
        loop {
            if let Some(l) = state.lines.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let left = until.saturating_duration_since(Instant::now());
            if state.open == 0 || left.is_zero() {
                return None;
            }
            state = self
                .0
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Removes ANSI escape sequences.
pub(crate) fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls `cond` every 20 ms until it holds: how long that took, or `None` after `limit`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_colours_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[3mlisten\u{1b}[0m\u{1b}[2m=\u{1b}[0m127.0.0.1:1"),
            "listen=127.0.0.1:1"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }

    #[test]
    fn a_child_s_lines_from_both_pipes_and_the_end_of_its_output() {
        let (mut proc, log) =
            spawn_logged(Command::new("sh").args(["-c", "echo one; echo two >&2; echo three"]));
        let three = log.wait_line(0, READY_TIMEOUT, |l| l == "three");
        assert_eq!(three.as_deref(), Some("three"));
        assert!(proc.wait_exit(READY_TIMEOUT).is_some_and(|s| s.success()));
        // Both pipes ended: waiting for a line that never comes returns at once.
        assert_eq!(
            log.wait_line(0, Duration::from_secs(3600), |l| l == "four"),
            None
        );
        let mut lines = log.snapshot();
        lines.sort();
        assert_eq!(lines, ["one", "three", "two"]);
        assert_eq!(log.count(), 3);
    }
}

//! `wrk` as the suites drive it: started in the background, waited for (bounded), its report
//! checked for socket errors and non-2xx responses.

use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::process::ProcGuard;

/// A `wrk` run in progress.
pub struct Wrk {
    proc: ProcGuard,
    out: JoinHandle<String>,
}

impl Wrk {
    /// Starts `wrk ARGS -s SCRIPT URL`.
    pub fn start(wrk: &Path, args: &[&str], script: &Path, url: &str) -> Wrk {
        let child = Command::new(wrk)
            .args(args)
            .arg("-s")
            .arg(script)
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wrk");
        let mut proc = ProcGuard::new(child);
        let mut stdout = proc.child.stdout.take().expect("wrk's stdout");
        let out = thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
            s
        });
        Wrk { proc, out }
    }

    /// Waits for `wrk` to finish (at most `timeout`); asserts it saw no socket error and no
    /// non-2xx response; returns its report and the number of requests it made.
    pub fn finish_clean(mut self, timeout: Duration) -> (String, u64) {
        let status = self
            .proc
            .wait_exit(timeout)
            .unwrap_or_else(|| panic!("wrk did not finish within {timeout:?}"));
        let text = self.out.join().expect("wrk's output");
        assert!(status.success(), "wrk failed: {text}");
        assert!(!text.contains("Socket errors"), "socket errors:\n{text}");
        assert!(
            !text.contains("Non-2xx or 3xx responses"),
            "non-2xx responses:\n{text}"
        );
        let requests = text
            .lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no `requests in` line:\n{text}"));
        (text, requests)
    }
}

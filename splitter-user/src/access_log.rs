//! The access log (SPEC 10): one line per request, or a sample of them, written by the control
//! plane, never on a request's critical path.
//!
//! A worker that samples a request puts a small fixed-size [`Record`] (numbers and slots, no
//! strings) into its own bounded queue; when the queue is full the record is dropped and
//! counted (`splitter_access_log_dropped_total`), the worker never waits. A writer thread
//! drains every worker's queue a few times a second, names the slots with the current
//! configuration, formats the lines and appends them to the file.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use splitter_common::MAX_BACKENDS;

use crate::config::{AccessLogConfig, LogFormat};
use crate::metrics::Renderer;
use crate::scatter::exchange::BackendOutcome;

/// Records a worker may have waiting before it drops new ones.
const QUEUE: usize = 8192;

/// How often the writer drains the queues.
const DRAIN_EVERY: Duration = Duration::from_millis(100);

/// How long the process waits at exit for the writer's last lines. A file that takes none (a
/// pipe nobody reads, a stalled disk) must not keep a stopping process alive: past this the
/// lines still queued are lost, and said so.
const LAST_FLUSH: Duration = Duration::from_secs(1);

/// One request, as the worker saw it.
#[derive(Clone, Copy, Debug)]
pub struct Record {
    /// When the response was written.
    pub time: SystemTime,
    /// The route's metrics slot; `None` for a request refused before it had one (a bad or
    /// unrouted request, a timeout while reading it).
    pub route: Option<u8>,
    /// The status sent.
    pub status: u16,
    /// The winner's metrics slot, for a 200.
    pub winner: Option<u8>,
    /// The winning number.
    pub value: Option<f64>,
    /// From the whole request read to the response written; `None` for a request refused
    /// before it was whole.
    pub duration: Option<Duration>,
    /// How each backend did, by metrics slot; `None` for those not on the route.
    pub backends: [Option<BackendOutcome>; MAX_BACKENDS],
}

/// A worker's end: decides which requests are logged and queues their records.
pub struct Sink {
    queue: SyncSender<Record>,
    sample: f64,
}

impl Sink {
    /// Whether the next request is one to log.
    pub fn sampled(&self) -> bool {
        self.sample >= 1.0 || fastrand::f64() < self.sample
    }

    /// Queues a record; `false` when the queue was full and the record dropped.
    pub fn push(&self, record: Record) -> bool {
        match self.queue.try_send(record) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }
}

/// The control plane's end: the writer thread.
pub struct Writer {
    thread: Option<JoinHandle<()>>,
    stop: SyncSender<()>,
    /// Disconnected when the thread has returned.
    done: Receiver<()>,
    /// Set by [`Writer::reopen`], taken by the thread at its next drain.
    reopen: Arc<AtomicBool>,
}

impl Writer {
    /// Opens (appends to) the file and starts the writer; one [`Sink`] per worker.
    pub fn start(
        config: &AccessLogConfig,
        workers: usize,
        names: Renderer,
    ) -> io::Result<(Writer, Vec<Sink>)> {
        let file = open(&config.path)?;
        let (sinks, queues): (Vec<Sink>, Vec<Receiver<Record>>) = (0..workers)
            .map(|_| {
                let (tx, rx) = mpsc::sync_channel(QUEUE);
                let sink = Sink {
                    queue: tx,
                    sample: config.sample,
                };
                (sink, rx)
            })
            .unzip();
        let (stop, stopped) = mpsc::sync_channel(1);
        let reopen = Arc::new(AtomicBool::new(false));
        let file = LogFile {
            path: config.path.clone(),
            out: io::BufWriter::with_capacity(64 * 1024, file),
            reopen: Arc::clone(&reopen),
        };
        let format = config.format;
        let (finished, done) = mpsc::sync_channel::<()>(0);
        let thread = std::thread::Builder::new()
            .name("splitter-access".into())
            .spawn(move || {
                write_loop(file, format, queues, &names, stopped);
                drop(finished);
            })?;
        Ok((
            Writer {
                thread: Some(thread),
                stop,
                done,
                reopen,
            },
            sinks,
        ))
    }

    /// Has the writer open the file again by its path before it writes more (on `SIGHUP`): after
    /// logrotate moved it away, the lines go to a new file, not on into the moved one.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        let Some(thread) = self.thread.take() else {
            return;
        };
        match self.done.recv_timeout(LAST_FLUSH) {
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = thread.join();
            }
            // Blocked in a write: left to the process's exit.
            _ => tracing::warn!(
                waited = ?LAST_FLUSH,
                "the access log takes no more lines; its last ones are lost"
            ),
        }
    }
}

fn open(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// The file the writer appends to, and how to open it again.
struct LogFile {
    path: PathBuf,
    out: io::BufWriter<std::fs::File>,
    reopen: Arc<AtomicBool>,
}

impl LogFile {
    /// Opens the path again if asked to; on failure the old file stays in use.
    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.out.flush() {
            tracing::warn!(error = %e, "cannot write the access log");
        }
        match open(&self.path) {
            Ok(file) => self.out = io::BufWriter::with_capacity(64 * 1024, file),
            Err(e) => tracing::warn!(
                path = %self.path.display(),
                error = %e,
                "cannot open the access log again; writing on to the old file"
            ),
        }
    }
}

/// Drains the queues until told to stop (then once more), writing a line per record.
fn write_loop(
    mut file: LogFile,
    format: LogFormat,
    queues: Vec<Receiver<Record>>,
    names: &Renderer,
    stopped: Receiver<()>,
) {
    let mut line = String::with_capacity(512);
    loop {
        let stop = !matches!(
            stopped.recv_timeout(DRAIN_EVERY),
            Err(mpsc::RecvTimeoutError::Timeout)
        );
        file.reopen_if_asked();
        let out = &mut file.out;
        let (backends, routes) = names.names();
        for queue in &queues {
            while let Ok(record) = queue.try_recv() {
                line.clear();
                render(&mut line, format, &record, &backends, &routes);
                if out.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        }
        if let Err(e) = out.flush() {
            tracing::warn!(error = %e, "cannot write the access log");
        }
        if stop {
            return;
        }
    }
}

/// One line for `record`, ending with a newline.
pub fn render(
    line: &mut String,
    format: LogFormat,
    record: &Record,
    backends: &[Option<String>],
    routes: &[Option<String>],
) {
    use std::fmt::Write as _;
    let name = |names: &[Option<String>], slot: u8| {
        names
            .get(usize::from(slot))
            .and_then(Option::as_deref)
            .unwrap_or("?")
            .to_owned()
    };
    let time = humantime::format_rfc3339_millis(record.time);
    let route = record.route.map(|r| name(routes, r));
    let winner = record.winner.map(|w| name(backends, w));
    let duration_ms = record
        .duration
        .map(|d| format!("{:.3}", d.as_secs_f64() * 1e3));
    let outcomes = record
        .backends
        .iter()
        .enumerate()
        .filter_map(|(slot, o)| o.map(|o| (name(backends, slot as u8), outcome(o))));
    match format {
        LogFormat::Json => {
            let _ = write!(
                line,
                "{{\"time\":\"{time}\",\"route\":{},\"status\":{},\"winner\":{},\"value\":{},\
                 \"duration_ms\":{},\"backends\":{{",
                route.as_deref().map_or("null".into(), json_str),
                record.status,
                winner.as_deref().map_or("null".into(), json_str),
                record.value.map_or("null".into(), |v| v.to_string()),
                duration_ms.as_deref().unwrap_or("null"),
            );
            for (i, (backend, outcome)) in outcomes.enumerate() {
                let comma = if i == 0 { "" } else { "," };
                let _ = write!(line, "{comma}{}:\"{outcome}\"", json_str(&backend));
            }
            line.push_str("}}\n");
        }
        LogFormat::Text => {
            let _ = write!(
                line,
                "{time} route={} status={} winner={} value={} duration_ms={}",
                route.as_deref().unwrap_or("-"),
                record.status,
                winner.as_deref().unwrap_or("-"),
                record.value.map_or("-".into(), |v| v.to_string()),
                duration_ms.as_deref().unwrap_or("-"),
            );
            for (backend, outcome) in outcomes {
                let _ = write!(line, " {backend}={outcome}");
            }
            line.push('\n');
        }
    }
}

fn outcome(o: BackendOutcome) -> &'static str {
    match o {
        BackendOutcome::Valid => "valid",
        BackendOutcome::Invalid => "invalid",
        BackendOutcome::Timeout => "timeout",
        BackendOutcome::Error => "error",
        BackendOutcome::Ejected => "ejected",
        BackendOutcome::Overloaded => "overloaded",
    }
}

/// A JSON string literal; route prefixes and backend names are ASCII without quotes or
/// backslashes (config checks them), but a `"` or `\` is escaped all the same.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        let mut backends = [None; MAX_BACKENDS];
        backends[0] = Some(BackendOutcome::Valid);
        backends[1] = Some(BackendOutcome::Timeout);
        Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_588_000_123),
            route: Some(0),
            status: 200,
            winner: Some(0),
            value: Some(2.5),
            duration: Some(Duration::from_micros(12_345)),
            backends,
        }
    }

    #[test]
    fn lines_name_route_winner_and_outcomes() {
        let names = [Some("a".to_owned()), Some("b".to_owned())];
        let routes = [Some("/bid".to_owned())];
        let mut line = String::new();
        render(&mut line, LogFormat::Json, &record(), &names, &routes);
        assert_eq!(
            line,
            "{\"time\":\"2025-12-01T11:20:00.123Z\",\"route\":\"/bid\",\"status\":200,\
             \"winner\":\"a\",\"value\":2.5,\"duration_ms\":12.345,\
             \"backends\":{\"a\":\"valid\",\"b\":\"timeout\"}}\n"
        );
        line.clear();
        let mut no_content = record();
        (no_content.status, no_content.winner, no_content.value) = (204, None, None);
        render(&mut line, LogFormat::Text, &no_content, &names, &routes);
        assert_eq!(
            line,
            "2025-12-01T11:20:00.123Z route=/bid status=204 winner=- value=- \
             duration_ms=12.345 a=valid b=timeout\n"
        );
    }

    #[test]
    fn a_refused_request_has_no_route_duration_or_backends() {
        let refused = Record {
            route: None,
            status: 400,
            winner: None,
            value: None,
            duration: None,
            backends: [None; MAX_BACKENDS],
            ..record()
        };
        let mut line = String::new();
        render(&mut line, LogFormat::Json, &refused, &[], &[]);
        assert_eq!(
            line,
            "{\"time\":\"2025-12-01T11:20:00.123Z\",\"route\":null,\"status\":400,\
             \"winner\":null,\"value\":null,\"duration_ms\":null,\"backends\":{}}\n"
        );
        line.clear();
        render(&mut line, LogFormat::Text, &refused, &[], &[]);
        assert_eq!(
            line,
            "2025-12-01T11:20:00.123Z route=- status=400 winner=- value=- duration_ms=-\n"
        );
    }

    #[test]
    fn a_full_queue_drops_instead_of_waiting() {
        let (tx, _rx) = mpsc::sync_channel(2);
        let sink = Sink {
            queue: tx,
            sample: 1.0,
        };
        assert!(sink.push(record()) && sink.push(record()));
        assert!(!sink.push(record()), "the third waits for nobody");
    }

    #[test]
    fn sampling_takes_about_the_share_asked() {
        let (tx, _rx) = mpsc::sync_channel(1);
        let sink = Sink {
            queue: tx,
            sample: 0.25,
        };
        let taken = (0..10_000).filter(|_| sink.sampled()).count();
        assert!((2000..3000).contains(&taken), "{taken}");
    }
}

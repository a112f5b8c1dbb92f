//! The control plane, on plain `tokio` and off the data path: it starts the workers, serves
//! `/metrics` and `/healthz` ([`admin`]), turns signals into reloads and a graceful drain
//! ([`signals`]), and reaches the workers only through two `watch` channels.

pub mod admin;
pub mod handover;
pub mod signals;
mod systemd;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use splitter_common::{MAX_BACKENDS, MAX_ROUTES};
use tokio::sync::{oneshot, watch};

use crate::access_log::Writer as AccessLog;
use crate::config::{Config, IoMode};
use crate::metrics::Renderer;
use crate::steering::{self, Steering};
use crate::worker::admission::Admission;
use crate::worker::{self, Loaded, Stop, WorkerSpec};

/// A running splitter: workers, admin server, and the channels to steer them.
pub struct Server {
    listen: SocketAddr,
    admin: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    config_tx: watch::Sender<Arc<Loaded>>,
    shutdown_tx: watch::Sender<Stop>,
    /// Stops the admin server once the workers are done.
    admin_stop: Option<oneshot::Sender<()>>,
    admin_thread: Option<JoinHandle<()>>,
    renderer: Renderer,
    /// Backend name and route prefix of each metrics slot.
    slots: std::sync::Mutex<Slots>,
    /// The I/O shell the workers run.
    io: Shell,
    /// How new connections reach the workers.
    steering: Steering,
    /// `max_in_flight` for the whole process.
    admission: Admission,
    /// The access log's writer, flushed and stopped after the workers.
    access_log: Option<AccessLog>,
    /// The listening sockets are in systemd's descriptor store: a stop leaves them listening
    /// for the next start, rather than closing them under queued connections.
    stored: bool,
    /// With eBPF steering: the program and maps, unpinned on drop, after the workers stop.
    _attached: Option<steering::Attached>,
}

/// The I/O shell of the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    /// io_uring: the workers' own ring runtime (`worker::ring`).
    Uring,
    /// tokio: epoll readiness.
    Epoll,
}

impl Shell {
    /// The name the start-up line and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Shell::Uring => "uring",
            Shell::Epoll => "epoll",
        }
    }

    /// The shell for the `io` setting: `uring` fails when io_uring cannot be used here, `auto`
    /// falls back to epoll then, and says why.
    pub fn resolve(mode: IoMode) -> anyhow::Result<Shell> {
        match (mode, worker::probe_io_uring()) {
            (IoMode::Epoll, _) => Ok(Shell::Epoll),
            (IoMode::Uring | IoMode::Auto, Ok(())) => Ok(Shell::Uring),
            (IoMode::Uring, Err(e)) => Err(anyhow::anyhow!(
                "`io = \"uring\"` but io_uring is not available ({e}). Check \
                 `sysctl kernel.io_uring_disabled` (0 allows it), the container's seccomp \
                 profile (Docker's default blocks io_uring_setup), and Linux >= 6.1; or set \
                 `io = \"auto\"` or `\"epoll\"`"
            )),
            (IoMode::Auto, Err(e)) => {
                tracing::warn!(
                    error = %e,
                    "io_uring is not available (kernel.io_uring_disabled, seccomp, or Linux < 6.1): \
                     running on epoll"
                );
                Ok(Shell::Epoll)
            }
        }
    }
}

/// Which backend name and which route prefix has each metrics slot, kept across reloads.
#[derive(Default)]
struct Slots {
    backends: Vec<Option<String>>,
    routes: Vec<Option<String>>,
    /// Slots that have counted for some name since start.
    backends_used: Vec<bool>,
    routes_used: Vec<bool>,
}

/// The keys a reload cannot change that differ between `old` and `new`: sockets, threads, the
/// I/O shell, steering and logging are set up once, at start.
fn restart_keys(old: &Config, new: &Config) -> Vec<&'static str> {
    [
        ("listen", old.listen != new.listen),
        ("admin_listen", old.admin_listen != new.admin_listen),
        ("workers", old.workers != new.workers),
        ("io", old.io != new.io),
        ("log_level", old.log_level != new.log_level),
        ("log_format", old.log_format != new.log_format),
        ("steering", old.steering != new.steering),
        ("access_log", old.access_log != new.access_log),
        (
            "handover_socket",
            old.handover_socket != new.handover_socket,
        ),
    ]
    .into_iter()
    .filter_map(|(key, changed)| changed.then_some(key))
    .collect()
}

/// Number of worker threads for a `workers` setting (0: one per online CPU, at most
/// [`MAX_WORKERS`](splitter_common::MAX_WORKERS), the most a setting may ask for).
pub fn worker_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(splitter_common::MAX_WORKERS),
        n => n,
    }
}

impl Server {
    /// Binds the listeners and the admin socket, starts one worker per CPU and the admin
    /// thread. Returns once every worker's listener is listening.
    pub fn start(config: Config) -> anyhow::Result<Server> {
        let io = Shell::resolve(config.io)?;
        let count = worker_count(config.workers);
        // The sockets of the process this one replaces, if any: from systemd's descriptor store
        // (`systemctl restart`), or handed over by a running splitter (an upgrade in place).
        // Only those on the addresses configured now are kept; the others are bound afresh.
        let (mut inherited, mut replaced) =
            systemd::stored_listeners(config.listen, config.admin_listen);
        if let (None, Some(path)) = (&inherited, config.handover_socket.as_deref()) {
            inherited = handover::take_over(path, config.listen)
                .inspect_err(|e| tracing::warn!(error = %e, "cannot take the sockets over"))
                .ok()
                .flatten()
                .map(|mut taken| {
                    replaced = taken.keep_matching(config.listen, config.admin_listen);
                    taken
                });
        }
        let (listeners, admin_listener, old) = match inherited {
            Some(taken) => (taken.listeners, taken.admin, taken.old),
            None => (Vec::new(), None, None),
        };
        // The admin socket first: a listener joins the `SO_REUSEPORT` group of a running
        // instance on the same port and takes its share of new connections at once, so a start
        // that fails on the admin port (that instance holds it) must fail before.
        let admin_listener = match admin_listener {
            Some(admin) => admin,
            None => {
                let admin = bind_afresh(replaced.admin, || {
                    std::net::TcpListener::bind(config.admin_listen)
                })
                .with_context(|| {
                    format!("cannot listen on {} (`admin_listen`)", config.admin_listen)
                })?;
                admin.set_nonblocking(true)?;
                admin
            }
        };
        let listeners = if listeners.is_empty() {
            bind_afresh(replaced.listeners, || {
                worker::listener::bind_group(config.listen, count)
            })
            .with_context(|| format!("cannot listen on {} (`listen`)", config.listen))?
        } else {
            let mut listeners = listeners;
            let have = listeners.len();
            if have > count {
                tracing::warn!(
                    have,
                    count,
                    "more listeners inherited than workers: the extra ones close"
                );
                listeners.truncate(count);
            } else if have < count {
                let port = listeners[0].local_addr()?;
                listeners.extend(worker::listener::bind_group(port, count - have)?);
            }
            tracing::info!(listeners = have, "took the listening sockets over");
            listeners
        };
        let listen = listeners[0].local_addr()?;
        let admin = admin_listener.local_addr()?;
        // Kept for the next restart: the same sockets, handed to the process that replaces this one.
        let handed = listeners
            .iter()
            .map(std::net::TcpListener::try_clone)
            .collect::<std::io::Result<Vec<_>>>()?;
        let handed_admin = admin_listener.try_clone()?;

        // Steering decides where the metrics cells live (a BPF map with eBPF), so it comes
        // before the workers get their handles.
        let steered = steering::start(&config.steering, &listeners)
            .context("`steering.mode = \"ebpf\"` cannot run here")?;
        let region = steered.region;
        let renderer = Renderer::new(Arc::clone(&region));
        let mut slots = Slots::default();
        let loaded = Arc::new(Self::assign(&mut slots, &renderer, config));
        let drain_timeout = drain_timeout(&loaded.config);
        let max_in_flight = loaded.config.max_in_flight;
        let admission = Admission::new(max_in_flight);
        let (config_tx, config_rx) = watch::channel(Arc::clone(&loaded));
        let (shutdown_tx, shutdown_rx) = watch::channel(Stop::No);

        let (access_log, mut sinks) = match &loaded.config.access_log {
            Some(log) => {
                let (writer, sinks) =
                    AccessLog::start(log, count, renderer.clone()).with_context(|| {
                        format!("cannot open {} (`access_log.path`)", log.path.display())
                    })?;
                (Some(writer), sinks.into_iter().map(Some).collect())
            }
            None => (None, Vec::new()),
        };
        sinks.resize_with(count, || None);
        let cpus = online_cpus();
        let mut workers = Vec::with_capacity(count);
        for ((index, listener), access_log) in listeners.into_iter().enumerate().zip(sinks) {
            workers.push(worker::spawn(WorkerSpec {
                index,
                cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
                listener,
                counters: region.handle(index),
                config: config_rx.clone(),
                shutdown: shutdown_rx.clone(),
                admission: admission.clone(),
                drain_timeout,
                uring: io == Shell::Uring,
                access_log,
            })?);
        }

        let (admin_stop, stop_rx) = oneshot::channel();
        let admin_renderer = renderer.clone();
        let draining = shutdown_rx.clone();
        let admin_thread = std::thread::Builder::new()
            .name("splitter-admin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("admin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(admin_listener).expect("admin listener");
                    tokio::select! {
                        () = admin::serve(listener, admin_renderer, draining) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;

        // Every worker runs on the sockets now: the process they came from may let go.
        if let Some(old) = old {
            if let Err(e) = old.ready() {
                tracing::warn!(error = %e, "cannot tell the previous process to drain");
            }
        }
        let stored = systemd::store_listeners(&handed, &handed_admin);
        if let Some(path) = loaded.config.handover_socket.clone() {
            // systemd makes /run/splitter (RuntimeDirectory=); started by hand, the process
            // makes it, private to its user, so the default works there too.
            if let Some(dir) = path.parent().filter(|dir| !dir.exists()) {
                use std::os::unix::fs::DirBuilderExt as _;
                let made = std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir);
                if let Err(e) = made {
                    tracing::debug!(dir = %dir.display(), error = %e, "cannot make the directory");
                }
            }
            let stop = shutdown_tx.clone();
            let serving = handover::serve(path.clone(), listen, handed, handed_admin, move || {
                stop.send_replace(Stop::HandedOver);
            });
            if let Err(e) = serving {
                tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot listen for a restart's handover: a restart will refuse connections \
                     for a moment"
                );
            }
        }

        Ok(Server {
            listen,
            admin,
            workers,
            config_tx,
            shutdown_tx,
            admin_stop: Some(admin_stop),
            admin_thread: Some(admin_thread),
            renderer,
            slots: std::sync::Mutex::new(slots),
            io,
            steering: steered.mode,
            admission,
            stored,
            access_log,
            _attached: steered.attached,
        })
    }

    /// Gives each backend and route of `config` a metrics slot, keeping the slots of names
    /// (and route prefixes) already known.
    fn assign(slots: &mut Slots, renderer: &Renderer, mut config: Config) -> Loaded {
        let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
        slots.backends = assign_slots(
            &slots.backends,
            &names,
            MAX_BACKENDS,
            &mut slots.backends_used,
        );
        let backend_slots = slot_of(&slots.backends, &names);
        let prefixes: Vec<String> = config
            .routes
            .iter()
            .map(|r| r.path_prefix.clone())
            .collect();
        let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
        slots.routes = assign_slots(&slots.routes, &prefixes, MAX_ROUTES, &mut slots.routes_used);
        for (route, slot) in config
            .routes
            .iter_mut()
            .zip(slot_of(&slots.routes, &prefixes))
        {
            route.slot = slot;
        }
        renderer.set_names(slots.backends.clone(), slots.routes.clone());
        Loaded {
            config,
            slots: backend_slots,
        }
    }

    /// The client-facing address (with the real port when the configuration asked for port 0).
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen
    }

    /// The admin address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// The I/O shell the workers run.
    pub fn io(&self) -> Shell {
        self.io
    }

    /// How new connections reach the workers.
    pub fn steering(&self) -> Steering {
        self.steering
    }

    /// The metrics renderer, for in-process readers (the demo).
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Applies a file reloaded from `path`: backends, routes, selection and limits change for
    /// requests that start from now on; connections stay open. Keys only a restart applies
    /// that differ from what the process `started` with (and so still runs) are named in the
    /// log, whatever earlier reloads said.
    pub fn reload(&self, started: &Config, config: Config, path: &Path) {
        let fixed = restart_keys(started, &config);
        if !fixed.is_empty() {
            tracing::warn!(
                keys = %fixed.join(", "),
                "reload: these changed keys apply only at the next restart"
            );
        }
        let (backends, routes) = (config.backends.len(), config.routes.len());
        // Before the reload is counted: `splitter reload` reads them once it is.
        self.renderer.set_restart_pending(fixed);
        self.apply(config);
        self.renderer.reloaded(true);
        // Logged once the metrics name the new backends: a reader of the log may scrape next.
        tracing::info!(backends, routes, "configuration reloaded");
        if let Ok(bytes) = std::fs::read(path) {
            self.renderer.set_config_hash(&bytes);
        }
    }

    /// Has the access log, if any, opened again by its path (logrotate moved it away).
    pub fn reopen_logs(&self) {
        if let Some(log) = &self.access_log {
            log.reopen();
        }
    }

    /// Hands a configuration to the workers.
    pub fn apply(&self, config: Config) {
        let mut slots = self.slots.lock().expect("slots lock");
        self.admission.set_limit(config.max_in_flight);
        let loaded = Self::assign(&mut slots, &self.renderer, config);
        self.config_tx.send_replace(Arc::new(loaded));
    }

    /// Starts the graceful drain: requests in progress finish, `/healthz` answers 503 from now
    /// on. The listeners close, and idle connections with them, unless systemd keeps the
    /// sockets for the next start: then they stay listening, and connections get
    /// `Connection: close` with their next response.
    pub fn shutdown(&self) {
        let stop = if self.stored {
            Stop::HandedOver
        } else {
            Stop::Drain
        };
        self.shutdown_tx.send_replace(stop);
    }

    /// What the process is asked to do: a handover ends it too.
    pub fn stop(&self) -> watch::Receiver<Stop> {
        self.shutdown_tx.subscribe()
    }

    /// Waits for every worker to finish, then stops the admin server.
    pub fn wait(mut self) -> anyhow::Result<()> {
        for w in self.workers.drain(..) {
            w.join().map_err(|_| anyhow::anyhow!("a worker panicked"))?;
        }
        if let Some(stop) = self.admin_stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.admin_thread.take() {
            t.join()
                .map_err(|_| anyhow::anyhow!("the admin thread panicked"))?;
        }
        Ok(())
    }
}

/// How long a bind waits for the address of a socket just closed to be free: systemd closes
/// its copy of a stored one once it has read the removal.
const REBIND_TIMEOUT: Duration = Duration::from_secs(1);

/// `bind()`, retried while the address is in use for [`REBIND_TIMEOUT`] when `replacing` an
/// inherited socket.
fn bind_afresh<T>(
    replacing: bool,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let until = std::time::Instant::now() + REBIND_TIMEOUT;
    loop {
        match bind() {
            Err(e)
                if replacing
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < until =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            result => return result,
        }
    }
}

/// Ticks every `dns_refresh_s`, first one period from now.
fn dns_timer(config: &Config) -> tokio::time::Interval {
    let every = config.dns_refresh;
    let mut timer = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    timer
}

/// Resolves the backends given by host name again: the configuration with their new answers
/// (their addresses are for [`Config::keep_addresses`] to choose), or `None` when there is no
/// host name. A failed resolution keeps the answer it had: a resolver outage must not take a
/// backend away.
async fn resolve_again(config: &Config) -> Option<Config> {
    let names: Vec<(usize, String)> = config
        .backends
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.host_name.clone().map(|name| (i, name)))
        .collect();
    if names.is_empty() {
        return None;
    }
    let resolved = tokio::task::spawn_blocking(move || {
        names
            .into_iter()
            .map(|(i, name)| (i, crate::config::resolve_all(&name)))
            .collect::<Vec<_>>()
    })
    .await
    .ok()?;
    let mut fresh = config.clone();
    for (i, result) in resolved {
        let backend = &mut fresh.backends[i];
        match result {
            Ok(answer) => backend.answer = answer,
            Err(e) => tracing::warn!(backend = %backend.name, error = %e, "cannot resolve again"),
        }
    }
    Some(fresh)
}

/// Carries the addresses the backends of `running` are on over into `fresh` (a backend stays
/// while its address is still in its answer), and logs the backends that move.
fn keep_addresses(fresh: &mut Config, running: &Config) -> bool {
    let moved = fresh.keep_addresses(running);
    for m in &moved {
        tracing::info!(
            backend = %m.backend,
            from = %m.from,
            to = %m.to,
            "backend address changed: new connections go to the new one, the old drain"
        );
    }
    !moved.is_empty()
}

/// How long a draining worker waits for requests in progress: the longest route deadline plus
/// the time a late reply may take to drain, plus slack.
fn drain_timeout(config: &Config) -> Duration {
    let longest = config
        .routes
        .iter()
        .map(|r| r.timeout)
        .max()
        .unwrap_or_default();
    longest + Duration::from_secs(2)
}

/// The new slot table of `size` slots: names already there keep their slot, names gone free
/// theirs, new names take a free one, preferring one never used (`used`, updated), whose
/// counters are still zero in every worker: a slot reused for another name is zeroed by each
/// worker only when it applies the new configuration, a moment after the new name shows (and
/// from then on the removed backend counts nothing there: `metrics::BackendSlots`).
/// `names` has at most `size` entries (validated).
pub fn assign_slots(
    old: &[Option<String>],
    names: &[&str],
    size: usize,
    used: &mut Vec<bool>,
) -> Vec<Option<String>> {
    let mut table: Vec<Option<String>> = old
        .iter()
        .map(|s| s.clone().filter(|s| names.contains(&s.as_str())))
        .collect();
    table.resize(size, None);
    used.resize(size, false);
    for name in names {
        if !table.iter().any(|s| s.as_deref() == Some(name)) {
            let free = (0..size)
                .find(|&i| table[i].is_none() && !used[i])
                .or_else(|| table.iter().position(Option::is_none))
                .expect("no more names than slots");
            table[free] = Some(name.to_string());
            used[free] = true;
        }
    }
    table
}

/// Where each of `names` sits in `table`.
fn slot_of(table: &[Option<String>], names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| {
            table
                .iter()
                .position(|s| s.as_deref() == Some(n))
                .expect("every name has a slot")
        })
        .collect()
}

/// CPUs this process may run on, in order, for pinning workers.
fn online_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, filled by the kernel.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// `splitter run`: serve with the configuration at `path` until SIGTERM or SIGINT; SIGHUP
/// reloads it.
pub fn run(path: &Path, config: Config) -> anyhow::Result<()> {
    // First, while this is the process's only thread: the kernel then grows the table at once.
    match crate::fd_table::reserve() {
        Ok(size) => tracing::debug!(size, "descriptor table reserved"),
        Err(e) => tracing::warn!(
            "descriptor table not reserved ({e}): each time open sockets first pass a power of \
             two, every worker stalls for an RCU grace period"
        ),
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Handlers first: a SIGHUP that arrives during start-up must reload, not kill.
    let mut signals = rt.block_on(async { signals::Signals::new() })?;
    let server = Server::start(config.clone())?;
    if let Ok(bytes) = std::fs::read(path) {
        server.renderer().set_config_hash(&bytes);
    }
    tracing::info!(
        listen = %server.listen_addr(),
        admin = %server.admin_addr(),
        workers = worker_count(config.workers),
        io = server.io().name(),
        steering = server.steering().name(),
        backends = %config
            .backends
            .iter()
            .map(|b| format!("{}={}", b.name, b.address))
            .collect::<Vec<_>>()
            .join(","),
        routes = %config
            .routes
            .iter()
            .map(|r| format!("{}:{}ms", r.path_prefix, r.timeout.as_millis()))
            .collect::<Vec<_>>()
            .join(","),
        "splitter started"
    );
    // systemd `Type=notify`: every worker is listening now (their sockets were bound before
    // the threads started). Outside systemd, NOTIFY_SOCKET is unset and this does nothing.
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "cannot notify systemd of readiness");
    }
    rt.block_on(async {
        // What the process runs with of the keys only a restart applies, reload after reload.
        let started = config.clone();
        let mut current = config;
        let mut refresh = dns_timer(&current);
        let mut stop = server.stop();
        loop {
            tokio::select! {
                _ = stop.wait_for(|&s| s == Stop::HandedOver) => return,
                signal = signals.next() => match signal {
                    signals::Signal::Shutdown => break,
                    signals::Signal::Reload => {
                        // systemd: `systemctl reload` returns once READY=1 follows.
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                        // Whatever the file says: SIGHUP is also how logrotate has logs reopened.
                        server.reopen_logs();
                        match Config::load(path) {
                            Ok(mut config) => {
                                // Loading resolved the host names again: those still on an
                                // address of their new answer stay there, pools and all.
                                keep_addresses(&mut config, &current);
                                server.reload(&started, config.clone(), path);
                                refresh = dns_timer(&config);
                                current = config;
                            }
                            Err(e) => {
                                server.renderer().reloaded(false);
                                tracing::error!(
                                    error = %e,
                                    "reload refused, the running configuration stays"
                                );
                            }
                        }
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                    }
                },
                _ = refresh.tick() => {
                    if let Some(mut resolved) = resolve_again(&current).await {
                        // Only a backend whose address left its answer moves: the workers
                        // get a configuration only then.
                        if keep_addresses(&mut resolved, &current) {
                            server.apply(resolved.clone());
                        }
                        current = resolved;
                    }
                }
            }
        }
    });
    tracing::info!("draining");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    if *server.stop().borrow() == Stop::No {
        server.shutdown();
    }
    server.wait()?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_with_their_names() {
        let mut used = Vec::new();
        let t = assign_slots(&[], &["a", "b"], MAX_BACKENDS, &mut used);
        assert_eq!(t[0].as_deref(), Some("a"));
        assert_eq!(t[1].as_deref(), Some("b"));
        // `a` goes, `c` comes: `b` keeps slot 1, `c` takes a slot never used (its counters are
        // zero everywhere), not `a`'s.
        let t = assign_slots(&t, &["b", "c"], MAX_BACKENDS, &mut used);
        assert_eq!(t[0], None);
        assert_eq!(t[1].as_deref(), Some("b"));
        assert_eq!(t[2].as_deref(), Some("c"));
        assert_eq!(t.len(), MAX_BACKENDS);
        // Once every slot has been used, a freed one is taken again.
        let many: Vec<String> = (0..MAX_BACKENDS).map(|i| format!("n{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let t = assign_slots(&t, &many, MAX_BACKENDS, &mut used);
        assert!(t.iter().all(Option::is_some));
        let t = assign_slots(&t, &["fresh"], MAX_BACKENDS, &mut used);
        assert_eq!(t.iter().flatten().count(), 1);
    }

    #[test]
    fn a_reload_names_every_changed_key_only_a_restart_applies() {
        const BASE: &str = "listen = \"127.0.0.1:8080\"\n[[backend]]\nname = \"a\"\naddress = \"127.0.0.1:9000\"\n[[route]]\npath_prefix = \"/\"\ntimeout_ms = 100\n";
        // Top-level keys go before the tables, a table of its own after them.
        let parse = |extra: &str| {
            let text = match extra.starts_with('[') {
                true => format!("{BASE}{extra}\n"),
                false => format!("{extra}\n{BASE}"),
            };
            Config::parse(&text, Path::new("t.toml")).unwrap()
        };
        let old = parse("");
        let cases = [
            ("admin_listen = \"127.0.0.1:9999\"", "admin_listen"),
            ("workers = 3", "workers"),
            ("io = \"epoll\"", "io"),
            ("log_level = \"debug\"", "log_level"),
            ("log_format = \"json\"", "log_format"),
            ("[steering]\nmode = \"reuseport\"", "steering"),
            ("[access_log]\npath = \"/tmp/a.log\"", "access_log"),
            ("handover_socket = \"/tmp/other.sock\"", "handover_socket"),
        ];
        for (extra, key) in cases {
            assert_eq!(restart_keys(&old, &parse(extra)), [key], "{extra}");
        }
        let moved = BASE.replace("127.0.0.1:8080", "127.0.0.1:8081");
        let moved = Config::parse(&moved, Path::new("t.toml")).unwrap();
        assert_eq!(restart_keys(&old, &moved), ["listen"]);
        // What a reload applies is not named.
        let limits = parse("max_in_flight = 5\nidle_timeout_ms = 5");
        assert!(restart_keys(&old, &limits).is_empty());
        // A backend's answer is no key: whatever its order, a restart has nothing to apply.
        let mut reordered = old.clone();
        reordered.backends[0].answer = ["127.0.0.2:9000", "127.0.0.1:9000"]
            .map(|a| a.parse().unwrap())
            .to_vec();
        assert!(restart_keys(&old, &reordered).is_empty());
    }
}

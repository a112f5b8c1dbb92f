//! The aya loader of `splitter-ebpf`: checks what loading needs, loads the object sized for the
//! worker count, fills the socket array, maps the metrics array, pins it, and attaches.
//!
//! Order matters: the program passes the verifier, the socket array is complete and the metrics
//! cells are mapped before the program is attached, so the first SYN it sees can already be
//! steered. The pin is replaced at start (the previous process's, or one a crashed run left
//! behind) and removed on drop only while it is still ours.
//!
//! Restarts: the listening sockets outlive the process (handed over, or kept in systemd's
//! descriptor store), and the kernel lets a socket be in one `REUSEPORT_SOCKARRAY` at a time
//! (EBUSY otherwise). So a process lets go of its sockets ([`release`] when it hands them over,
//! and on drop, which a stop into the descriptor store goes through), and a new process that
//! still finds them held takes them ([`fill`]) from wherever they are. Meanwhile the program
//! attached to the group finds no socket to select and the kernel hashes: both processes
//! accept on the same sockets, so no connection waits on a process that does not accept.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aya::maps::{Map, MapData, MapError, MapInfo, MapType, ReusePortSockArray};
use aya::programs::SkReuseport;
use aya::{Ebpf, EbpfLoader};
use splitter_common::{
    WorkerMetrics, MAX_WORKERS, METRICS_MAP, SOCKETS_MAP, STEER_PROGRAM, WORKERS_GLOBAL,
};

use crate::metrics::MetricsRegion;

/// Why eBPF steering cannot run here. Each message names the cause and what fixes it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `splitter-user/build.rs` embedded an empty object.
    #[cfg(splitter_no_ebpf)]
    #[error("this splitter was built without its eBPF object ({0})")]
    NotBuilt(&'static str),
    /// The maps are declared with room for `MAX_WORKERS`.
    #[error("{0} workers, but eBPF steering handles at most {MAX_WORKERS}")]
    TooManyWorkers(usize),
    /// Loading needs CAP_BPF and CAP_NET_ADMIN (or CAP_SYS_ADMIN).
    #[error(
        "missing {0}: loading the steering program needs CAP_BPF and CAP_NET_ADMIN (run as \
         root, or grant them, e.g. systemd `AmbientCapabilities=CAP_BPF CAP_NET_ADMIN`)"
    )]
    Privileges(String),
    /// `steering.pin_dir` is not on a BPF filesystem, and one could not be mounted.
    #[error("no BPF filesystem for `steering.pin_dir` {}: {why}", path.display())]
    NoBpffs {
        /// The configured directory.
        path: PathBuf,
        /// What was found instead.
        why: String,
    },
    /// The inherited listeners stay in another process's socket array.
    #[error(
        "the listening sockets taken over are still in the socket array of another process's \
         steering program (the kernel allows one; EBUSY), and it was not found to take them \
         from: a splitter that does not release them on a handover (a version before this \
         one) still runs with `steering.pin_dir` {}. Run this one as root once (CAP_SYS_ADMIN \
         finds that array), or stop the old one and start this one",
        pin_dir.display()
    )]
    Busy {
        /// The configured directory, where the previous process pinned its metrics map.
        pin_dir: PathBuf,
    },
    /// The kernel (or aya) refused a step: `what` failed with `cause`.
    #[error("{what}: {cause}")]
    Kernel {
        /// The step, e.g. "loading the BPF object".
        what: &'static str,
        /// The error chain, flattened.
        cause: String,
    },
}

impl Error {
    fn kernel(what: &'static str) -> impl FnOnce(&dyn std::error::Error) -> Error {
        move |e| Error::Kernel {
            what,
            cause: chain(e),
        }
    }
}

/// An error and its sources, joined: aya's top-level messages alone ("error loading map") hide
/// the errno that says what went wrong.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The object built by `build.rs`, or why there is none.
fn object() -> Result<&'static [u8], Error> {
    #[cfg(not(splitter_no_ebpf))]
    return Ok(aya::include_bytes_aligned!(concat!(
        env!("OUT_DIR"),
        "/splitter-ebpf"
    )));
    #[cfg(splitter_no_ebpf)]
    return Err(Error::NotBuilt(env!("SPLITTER_NO_EBPF_REASON")));
}

/// The loaded program and its maps. Dropping it takes the listeners out of the socket array
/// (they may live on in another process) and removes the metrics map's pin (if still ours);
/// the program stays attached until the listeners close or another program replaces it, and
/// the metrics cells stay mapped as long as the [`MetricsRegion`] lives.
pub struct Attached {
    /// The loaded program (and any map not taken out below).
    ebpf: Ebpf,
    /// What a handover needs, also listed in [`GROUPS`].
    group: Arc<Group>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        lock(&GROUPS).retain(|g| !Arc::ptr_eq(g, &self.group));
        // Handed over or stored with systemd, the listeners outlive this process: the next
        // one can put them in its own array only once they have left this one.
        self.group.clear();
        // Another instance configured with the same pin_dir may have replaced our pin since we
        // made it: its pin is not ours to remove.
        if self.group.pin_is_ours() {
            if let Err(e) = std::fs::remove_file(&self.group.pin) {
                tracing::warn!(pin = %self.group.pin.display(), error = %e, "cannot remove the pin");
            }
        }
        // The directory stays: removing it could race with another instance that has just
        // created it to pin there.
    }
}

/// One attached steering: what its listeners are, where they are selected from, and what
/// attaches it again.
struct Group {
    /// `SO_COOKIE` of worker 0's listener: names the `SO_REUSEPORT` group in a handover.
    cookie: u64,
    /// Entries in the socket array.
    workers: u32,
    /// The workers' listeners, by worker index.
    sockets: Mutex<ReusePortSockArray<MapData>>,
    /// The loaded program, to attach it again after a failed handover.
    program: OwnedFd,
    /// The metrics array: its id tells whether the pin is still ours.
    metrics: MapData,
    /// `<pin_dir>/<METRICS_MAP>`.
    pin: PathBuf,
}

/// This process's attached steerings (one per `Server`), for [`release`].
static GROUPS: Mutex<Vec<Arc<Group>>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Group {
    /// Empties the socket array: the program then selects nothing and the kernel hashes.
    fn clear(&self) {
        let mut sockets = lock(&self.sockets);
        for i in 0..self.workers {
            // ENOENT for an entry already empty (or whose socket closed).
            let _ = sockets.clear_index(&i);
        }
    }

    fn pin_is_ours(&self) -> bool {
        let ours = self.metrics.info().map(|i| i.id()).ok();
        let pinned = MapInfo::from_pin(&self.pin).map(|i| i.id()).ok();
        ours.is_some() && ours == pinned
    }

    /// Steers `listeners` again after a handover that failed: attaches the program (replacing
    /// one the failed process may have attached), takes the listeners back, pins the map again
    /// if the failed process removed the pin.
    fn restore(&self, listeners: &[TcpListener]) -> Result<(), Error> {
        let first = listeners.first().ok_or_else(|| Error::Kernel {
            what: "restoring steering",
            cause: "no listener".into(),
        })?;
        attach_fd(first, &self.program)
            .map_err(|e| Error::kernel("attaching to the SO_REUSEPORT group again")(&e))?;
        let n = listeners.len().min(self.workers as usize);
        let mut sockets = lock(&self.sockets);
        // The failed process's array lets go of them when the kernel frees it, a moment after
        // the process exited or its program was replaced just above.
        let busy = poll_fill(&mut sockets, &listeners[..n], (0..n).collect(), BUSY_WAIT)?;
        if !busy.is_empty() {
            return Err(Error::Kernel {
                what: "taking the listeners back into the socket array",
                cause: format!(
                    "{} still held by another process's array (EBUSY)",
                    busy.len()
                ),
            });
        }
        if MapInfo::from_pin(&self.pin).is_err() {
            self.metrics
                .pin(&self.pin)
                .map_err(|e| Error::kernel("pinning the metrics map again")(&e))?;
        }
        Ok(())
    }
}

/// Steering let go of for a handover; [`Released::restore`] takes it back if the handover fails.
pub struct Released(Arc<Group>);

impl Released {
    /// The handover failed: this process steers its listeners again.
    pub fn restore(self, listeners: &[TcpListener]) {
        match self.0.restore(listeners) {
            Ok(()) => tracing::info!("eBPF steering restored after the failed handover"),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot restore eBPF steering after the failed handover: the kernel hashes new \
                 connections over the workers"
            ),
        }
    }
}

/// Takes `listeners` (a handover's, worker 0's first) out of this process's socket array, so
/// that the process they are handed to can put them in its own; `None` when they are not
/// steered by eBPF here. Until that process attaches its program, the kernel hashes new
/// connections over the listeners, which both processes accept on.
pub fn release(listeners: &[TcpListener]) -> Option<Released> {
    let cookie = socket_cookie(listeners.first()?).ok()?;
    let group = lock(&GROUPS).iter().find(|g| g.cookie == cookie).cloned()?;
    group.clear();
    tracing::info!("eBPF steering: listeners released for the process taking them over");
    Some(Released(group))
}

/// Loads and attaches the steering program to the group of `listeners` (worker `i` owns
/// `listeners[i]`), with the metrics cells in the pinned map under `pin_dir`.
pub fn attach(
    pin_dir: &Path,
    listeners: &[TcpListener],
) -> Result<(Attached, Arc<MetricsRegion>), Error> {
    let object = object()?;
    let workers = listeners.len();
    if workers > MAX_WORKERS {
        return Err(Error::TooManyWorkers(workers));
    }
    check_capabilities()?;
    ensure_bpffs(pin_dir)?;

    let n = workers as u32;
    let mut ebpf = EbpfLoader::new()
        .override_global(WORKERS_GLOBAL, &n, true)
        // One entry per worker, not MAX_WORKERS: bpftool then shows only real workers.
        .map_max_entries(METRICS_MAP, n)
        .map_max_entries(SOCKETS_MAP, n)
        .load(object)
        .map_err(|e| Error::kernel("loading the BPF object")(&e))?;

    let sockets: ReusePortSockArray<MapData> = take_map(&mut ebpf, SOCKETS_MAP)?
        .try_into()
        .map_err(|e| Error::kernel("opening the socket array")(&e))?;
    let Map::Array(metrics) = take_map(&mut ebpf, METRICS_MAP)? else {
        return Err(Error::Kernel {
            what: "opening the metrics map",
            cause: format!("{METRICS_MAP} is not an array"),
        });
    };
    check_geometry(&metrics, n)?;
    let region = MetricsRegion::bpf_array(metrics.fd().as_fd(), workers)
        .map_err(|e| Error::kernel("mapping the metrics array (mmap)")(&e))?;

    let program = steer_program(&mut ebpf)?;
    program
        .load()
        .map_err(|e| Error::kernel("loading the sk_reuseport program (verifier)")(&e))?;
    let program_fd = program
        .fd()
        .map_err(|e| Error::kernel("loading the sk_reuseport program")(&e))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::kernel("duplicating the program's descriptor")(&e))?;
    let cookie = socket_cookie(&listeners[0])
        .map_err(|e| Error::kernel("reading the listener's socket cookie")(&e))?;
    // From here on, a failure drops `attached`, which empties the socket array (the old
    // process then takes the listeners back) and removes the pin if it was made.
    let group = Arc::new(Group {
        cookie,
        workers: n,
        sockets: Mutex::new(sockets),
        program: program_fd,
        metrics,
        pin: pin_dir.join(METRICS_MAP),
    });
    lock(&GROUPS).push(Arc::clone(&group));
    let attached = Attached { ebpf, group };

    fill(&mut lock(&attached.group.sockets), listeners, pin_dir)?;
    pin_replacing(&attached.group.metrics, &attached.group.pin)?;
    let program: &SkReuseport = attached
        .ebpf
        .program(STEER_PROGRAM)
        .ok_or_else(|| Error::Kernel {
            what: "finding the program",
            cause: format!("no program {STEER_PROGRAM} in the object"),
        })?
        .try_into()
        .map_err(|e| Error::kernel("finding the program")(&e))?;
    program
        .attach(&listeners[0])
        .map_err(|e| Error::kernel("attaching to the SO_REUSEPORT group")(&e))?;
    tracing::info!(
        workers,
        pin = %attached.group.pin.display(),
        "steering: eBPF sk_reuseport, least-loaded worker (open connections plus {} per \
         request in flight; ties to the SYN's CPU)",
        splitter_common::IN_FLIGHT_WEIGHT
    );
    Ok((attached, region))
}

fn steer_program(ebpf: &mut Ebpf) -> Result<&mut SkReuseport, Error> {
    ebpf.program_mut(STEER_PROGRAM)
        .ok_or_else(|| Error::Kernel {
            what: "finding the program",
            cause: format!("no program {STEER_PROGRAM} in the object"),
        })?
        .try_into()
        .map_err(|e| Error::kernel("finding the program")(&e))
}

/// How long a new process waits for the kernel to free the socket array of a process that is
/// gone (its program detached), and a failed handover for the new process's.
const BUSY_WAIT: Duration = Duration::from_secs(3);

/// Puts worker `i`'s listener at index `i`. Listeners taken over from a previous process may
/// still be in its socket array (EBUSY): a splitter of this version releases them when it hands
/// them over or stops, but one that crashed, or one of a version before, did not. They are
/// taken from it:
/// 1. with CAP_SYS_ADMIN (root), from the array of the program that reads the metrics map
///    pinned under `pin_dir` (the previous process pinned it there), emptied;
/// 2. else the program the previous process attached to the group is detached: once that
///    process is gone, nothing holds its array any more, and the kernel frees it, releasing
///    the sockets (polled for [`BUSY_WAIT`]).
///
/// In the meantime the group's program selects nothing and the kernel hashes.
fn fill(
    sockets: &mut ReusePortSockArray<MapData>,
    listeners: &[TcpListener],
    pin_dir: &Path,
) -> Result<(), Error> {
    let mut busy = try_fill(sockets, listeners, (0..listeners.len()).collect())?;
    if busy.is_empty() {
        return Ok(());
    }
    let pin = pin_dir.join(METRICS_MAP);
    match clear_array_of_pinned(&pin) {
        Ok(0) => tracing::info!(
            pin = %pin.display(),
            "listeners taken over are still in another socket array, and no program that \
             reads the pinned metrics map holds one"
        ),
        Ok(arrays) => tracing::info!(
            arrays,
            "listeners taken over were still in the previous process's socket array: emptied it"
        ),
        Err(e) => tracing::info!(
            error = %e,
            "listeners taken over are still in another socket array, not found through the \
             metrics map pinned under steering.pin_dir (that needs the pin and CAP_SYS_ADMIN)"
        ),
    }
    busy = try_fill(sockets, listeners, busy)?;
    if busy.is_empty() {
        return Ok(());
    }
    match SkReuseport::detach(&listeners[0]) {
        Ok(()) => tracing::info!(
            "detached the previous process's steering program: its socket array goes with it \
             once that process is gone"
        ),
        Err(e) => tracing::info!(error = %chain(&e), "no steering program to detach"),
    }
    busy = poll_fill(sockets, listeners, busy, BUSY_WAIT)?;
    if busy.is_empty() {
        Ok(())
    } else {
        Err(Error::Busy {
            pin_dir: pin_dir.to_owned(),
        })
    }
}

/// [`try_fill`] again and again until nothing is busy or `wait` has passed.
fn poll_fill(
    sockets: &mut ReusePortSockArray<MapData>,
    listeners: &[TcpListener],
    mut busy: Vec<usize>,
    wait: Duration,
) -> Result<Vec<usize>, Error> {
    let until = Instant::now() + wait;
    loop {
        busy = try_fill(sockets, listeners, busy)?;
        if busy.is_empty() || Instant::now() >= until {
            return Ok(busy);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Puts the listeners at `indices` into the array; the indices whose socket is in another
/// array (EBUSY).
fn try_fill(
    sockets: &mut ReusePortSockArray<MapData>,
    listeners: &[TcpListener],
    indices: Vec<usize>,
) -> Result<Vec<usize>, Error> {
    let mut busy = Vec::new();
    for i in indices {
        match sockets.set(i as u32, &listeners[i], 0) {
            Ok(()) => {}
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EBUSY) => {
                busy.push(i);
            }
            Err(e) => return Err(Error::kernel("adding a listener to the socket array")(&e)),
        }
    }
    Ok(busy)
}

/// Empties the socket arrays of the programs that read the map pinned at `pin`; how many. The
/// kernel lists programs only to CAP_SYS_ADMIN.
fn clear_array_of_pinned(pin: &Path) -> Result<usize, String> {
    let metrics = MapInfo::from_pin(pin).map_err(|e| chain(&e))?.id();
    let mut cleared = 0;
    for program in aya::programs::loaded_programs() {
        let program = program.map_err(|e| chain(&e))?;
        let Ok(Some(maps)) = program.map_ids() else {
            continue;
        };
        if !maps.contains(&metrics) {
            continue;
        }
        for id in maps {
            let Ok(info) = MapInfo::from_id(id) else {
                continue;
            };
            if !matches!(info.map_type(), Ok(MapType::ReuseportSockArray)) {
                continue;
            }
            let data = MapData::from_id(id).map_err(|e| chain(&e))?;
            let mut array: ReusePortSockArray<MapData> = Map::ReusePortSockArray(data)
                .try_into()
                .map_err(|e: MapError| chain(&e))?;
            for i in 0..info.max_entries() {
                let _ = array.clear_index(&i);
            }
            cleared += 1;
        }
    }
    Ok(cleared)
}

/// `SO_ATTACH_REUSEPORT_EBPF`: `program` steers the group of `socket`, replacing its program.
fn attach_fd(socket: &TcpListener, program: &OwnedFd) -> std::io::Result<()> {
    let fd: libc::c_int = program.as_raw_fd();
    // SAFETY: a valid socket and an int-sized option value that outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_REUSEPORT_EBPF,
            (&raw const fd).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Detaches the program steering the `SO_REUSEPORT` group of `socket`, if any: true when there
/// was one (a previous process's).
pub fn detach(socket: &TcpListener) -> bool {
    SkReuseport::detach(socket).is_ok()
}

/// The kernel's cookie of `socket` (`SO_COOKIE`): the same for every descriptor of it, in any
/// process.
pub(crate) fn socket_cookie(socket: &TcpListener) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as libc::socklen_t;
    // SAFETY: a valid socket and an out-parameter of the size given.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&raw mut cookie).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<Map, Error> {
    ebpf.take_map(name).ok_or_else(|| Error::Kernel {
        what: "finding a map",
        cause: format!("no map {name} in the object"),
    })
}

/// The kernel's view of the metrics map must match the struct the workers write: mmap would
/// otherwise succeed and the cells overlap or run past the map.
fn check_geometry(metrics: &MapData, workers: u32) -> Result<(), Error> {
    let info = metrics
        .info()
        .map_err(|e| Error::kernel("reading the metrics map's info")(&e))?;
    let mmapable = info.map_flags() & BPF_F_MMAPABLE != 0;
    if info.value_size() as usize != size_of::<WorkerMetrics>()
        || info.max_entries() < workers
        || !mmapable
    {
        return Err(Error::Kernel {
            what: "checking the metrics map",
            cause: format!(
                "value size {} (want {}), {} entries (want {workers}), mmapable: {mmapable}: \
                 the eBPF object is out of date with splitter-common",
                info.value_size(),
                size_of::<WorkerMetrics>(),
                info.max_entries()
            ),
        });
    }
    Ok(())
}

/// Pins `map` at `pin`, first removing whatever is there: the pin of the process this one
/// replaces (a restart), a pin left by a run that crashed, or one of another instance
/// configured with the same `pin_dir` (the last to start owns the path).
fn pin_replacing(map: &MapData, pin: &Path) -> Result<(), Error> {
    match std::fs::remove_file(pin) {
        Ok(()) => tracing::info!(
            pin = %pin.display(),
            "replaced an existing pin (the process this one replaces, a run that did not exit \
             cleanly, or another instance with the same steering.pin_dir)"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Kernel {
                what: "removing a stale pin",
                cause: format!("{}: {e}", pin.display()),
            })
        }
    }
    map.pin(pin)
        .map_err(|e| Error::kernel("pinning the metrics map")(&e))
}

/// `BPF_F_MMAPABLE` (linux/bpf.h): the array may be mmap-ed.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// Fails early, with the names, when this process lacks the capabilities loading needs: the
/// kernel would only say EPERM, somewhere inside map creation.
fn check_capabilities() -> Result<(), Error> {
    let Some(effective) = effective_capabilities() else {
        // No /proc: let the kernel decide.
        return Ok(());
    };
    let has = |cap: u32| effective & (1 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_NET_ADMIN) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Privileges(missing.join(" and ")))
    }
}

/// The `CapEff` mask of this process.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Where a BPF filesystem is usually mounted (and where we mount one if none is).
const BPFFS: &str = "/sys/fs/bpf";
/// `statfs.f_type` of a BPF filesystem (linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Makes `pin_dir` exist on a BPF filesystem, mounting one at `/sys/fs/bpf` when `pin_dir` is
/// under it and nothing is mounted there yet (as systemd does at boot; containers often don't).
fn ensure_bpffs(pin_dir: &Path) -> Result<(), Error> {
    let fail = |why: String| Error::NoBpffs {
        path: pin_dir.to_owned(),
        why,
    };
    let nearest = pin_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !is_bpffs(nearest) {
        if !pin_dir.starts_with(BPFFS) || !Path::new(BPFFS).is_dir() {
            return Err(fail(format!(
                "{} is not on a BPF filesystem; point `steering.pin_dir` under a bpffs mount \
                 (mount -t bpf bpf {BPFFS})",
                nearest.display()
            )));
        }
        if !is_bpffs(Path::new(BPFFS)) {
            mount_bpffs().map_err(|e| {
                fail(format!(
                    "{BPFFS} is not mounted and mounting it failed ({e}); run \
                     `mount -t bpf bpf {BPFFS}` as root"
                ))
            })?;
            tracing::info!("mounted a BPF filesystem at {BPFFS}");
        }
    }
    std::fs::create_dir_all(pin_dir).map_err(|e| fail(format!("cannot create it: {e}")))
}

fn is_bpffs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a NUL-terminated path and a zeroed out-parameter the kernel fills.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

fn mount_bpffs() -> std::io::Result<()> {
    // SAFETY: NUL-terminated literals; no data argument.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c"/sys/fs/bpf".as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

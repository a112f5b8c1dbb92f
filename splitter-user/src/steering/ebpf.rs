//! The aya loader of `splitter-ebpf`: checks what loading needs, loads the object sized for the
//! worker count, fills the socket array, maps the metrics array, pins it, and attaches.
//!
//! Order matters: the socket array is complete and the metrics cells are mapped before the
//! program is attached, so the first SYN it sees can already be steered. The pin is replaced
//! at start (a crashed run leaves one behind) and removed on drop only while it is still ours.

use std::fmt::Write as _;
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{Map, MapData, MapInfo, ReusePortSockArray};
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

/// The loaded program and its maps. Dropping it removes the metrics map's pin (if still ours);
/// the program stays attached until the listeners close, and the metrics cells stay mapped as
/// long as the [`MetricsRegion`] lives.
pub struct Attached {
    /// The loaded program (and any map not taken out below).
    ebpf: Ebpf,
    /// The workers' listeners, by worker index.
    _sockets: ReusePortSockArray<MapData>,
    /// The metrics array: its id tells whether the pin is still ours.
    metrics: MapData,
    /// `<pin_dir>/<METRICS_MAP>`.
    pin: PathBuf,
}

impl Drop for Attached {
    fn drop(&mut self) {
        // Another instance configured with the same pin_dir may have replaced our pin since we
        // made it: its pin is not ours to remove.
        let ours = self.metrics.info().map(|i| i.id()).ok();
        let pinned = MapInfo::from_pin(&self.pin).map(|i| i.id()).ok();
        if ours.is_some() && ours == pinned {
            if let Err(e) = std::fs::remove_file(&self.pin) {
                tracing::warn!(pin = %self.pin.display(), error = %e, "cannot remove the pin");
            }
        }
        // The directory stays: removing it could race with another instance that has just
        // created it to pin there.
    }
}

/// Loads and attaches the steering program to the group of `listeners` (worker `i` owns
/// `listeners[i]`), with the metrics cells in the pinned map under `pin_dir`.
pub fn attach(
    pin_dir: &Path,
    listeners: &[std::net::TcpListener],
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

    let mut sockets: ReusePortSockArray<MapData> = take_map(&mut ebpf, SOCKETS_MAP)?
        .try_into()
        .map_err(|e| Error::kernel("opening the socket array")(&e))?;
    for (i, listener) in listeners.iter().enumerate() {
        sockets
            .set(i as u32, listener, 0)
            .map_err(|e| Error::kernel("adding a listener to the socket array")(&e))?;
    }

    let Map::Array(metrics) = take_map(&mut ebpf, METRICS_MAP)? else {
        return Err(Error::Kernel {
            what: "opening the metrics map",
            cause: format!("{METRICS_MAP} is not an array"),
        });
    };
    check_geometry(&metrics, n)?;
    let region = MetricsRegion::bpf_array(metrics.fd().as_fd(), workers)
        .map_err(|e| Error::kernel("mapping the metrics array (mmap)")(&e))?;
    let pin = pin_dir.join(METRICS_MAP);
    pin_replacing(&metrics, &pin)?;
    // From here on, a failure drops `attached`, which removes the pin just made.
    let mut attached = Attached {
        ebpf,
        _sockets: sockets,
        metrics,
        pin,
    };

    let program: &mut SkReuseport = attached
        .ebpf
        .program_mut(STEER_PROGRAM)
        .ok_or_else(|| Error::Kernel {
            what: "finding the program",
            cause: format!("no program {STEER_PROGRAM} in the object"),
        })?
        .try_into()
        .map_err(|e| Error::kernel("finding the program")(&e))?;
    program
        .load()
        .map_err(|e| Error::kernel("loading the sk_reuseport program (verifier)")(&e))?;
    program
        .attach(&listeners[0])
        .map_err(|e| Error::kernel("attaching to the SO_REUSEPORT group")(&e))?;
    tracing::info!(
        workers,
        pin = %attached.pin.display(),
        "steering: eBPF sk_reuseport, least-loaded worker (open connections plus {} per \
         request in flight; ties to the SYN's CPU)",
        splitter_common::IN_FLIGHT_WEIGHT
    );
    Ok((attached, region))
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

/// Pins `map` at `pin`, first removing whatever is there: a pin left by a run that crashed, or
/// by another instance configured with the same `pin_dir` (the last to start owns the path).
fn pin_replacing(map: &MapData, pin: &Path) -> Result<(), Error> {
    match std::fs::remove_file(pin) {
        Ok(()) => tracing::info!(
            pin = %pin.display(),
            "replaced an existing pin (left by a run that did not exit cleanly, or another \
             instance with the same steering.pin_dir)"
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

//! The machine the tests run on: scratch directories, free ports, the repository's files, and
//! the privileges and programs the `#[ignore]`d tests need.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A unique scratch directory, removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "splitter-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir { path }
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A loopback address nothing listens on (bound once, then released): connecting to it is
/// refused, and a server may bind it, until something else does. Never one this process was
/// given before: the kernel may hand a released port out again at once, and a test that asks for
/// two (a listener and an admin port) must not get the same one twice.
pub fn free_addr() -> SocketAddr {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0");
        if !given.contains(&addr.port()) {
            given.push(addr.port());
            return addr;
        }
    }
}

/// Path of a file in the repository, from the workspace root.
pub fn repo_path(rel: &str) -> PathBuf {
    // Like every crate of the workspace, this one is a directory of the root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate is inside the workspace")
        .join(rel)
}

/// Fails the test unless it runs as root; `why` says what needs it.
#[track_caller]
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root ({why}): it is #[ignore]d for that; run it as root with \
         `-- --ignored`, as test.sh does"
    );
}

/// The path of `program` on `PATH`; fails the test, naming the program, when it is not there.
#[track_caller]
pub fn require_tool(program: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| {
                p.metadata()
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    // Not `unwrap_or_else`: a closure's panic would point here, not at the test.
    match found {
        Some(path) => path,
        None => panic!(
            "`{program}` is not on PATH: this test is #[ignore]d because it needs it; \
             scripts/setup.sh installs it"
        ),
    }
}

/// Has `cmd` run in a mount namespace of its own, where `hosts` is bind-mounted over
/// `/etc/hosts`: what its resolver reads, and what the test rewrites in place (same inode, as
/// `std::fs::write` does) for it to read again; the machine's own `/etc/hosts` is untouched.
/// Needs root (`CAP_SYS_ADMIN`), as `unshare -m` and `mount --bind` do.
pub fn with_hosts_file(cmd: &mut std::process::Command, hosts: &Path) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::process::CommandExt as _;

    let source = CString::new(hosts.as_os_str().as_bytes()).expect("a path without NUL");
    let target = c"/etc/hosts";
    let root = c"/";
    // SAFETY: the closure runs in the child between fork and exec, and makes only system calls
    // (async-signal-safe) on strings built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| match rc {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            };
            check(libc::unshare(libc::CLONE_NEWNS))?;
            // Private, as `unshare -m` makes it: the bind mount stays in this namespace.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))
        });
    }
}

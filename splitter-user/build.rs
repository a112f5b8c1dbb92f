//! Builds `splitter-ebpf` for the BPF target with aya-build, on the pinned nightly
//! ([`EBPF_TOOLCHAIN`]), and leaves the object in `OUT_DIR` for `src/steering/ebpf.rs` to embed.
//!
//! When the eBPF part cannot or should not be built (the nightly, its `rust-src` or bpf-linker is
//! missing, or `SPLITTER_NO_EBPF=1` / `AYA_BUILD_SKIP=1`), it writes an empty object and sets
//! `cfg(splitter_no_ebpf)` plus `SPLITTER_NO_EBPF_REASON`: the daemon still builds and runs,
//! steering falls back to `SO_REUSEPORT` and the log says why. A missing tool is a reason to
//! fall back; an eBPF crate that does not compile, with every tool present, fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

use splitter_common::EBPF_TOOLCHAIN;

/// The commit being built, for `splitter_build_info`: `SPLITTER_COMMIT` when set (a package
/// build from a tarball), else `git rev-parse`, else `unknown`.
fn commit() -> String {
    println!("cargo::rerun-if-env-changed=SPLITTER_COMMIT");
    if let Ok(commit) = std::env::var("SPLITTER_COMMIT") {
        return commit;
    }
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    // Rebuild when HEAD moves. On a branch, HEAD only names the branch and a commit changes the
    // branch's ref instead: a loose file under refs/heads (watched as a directory, so a ref
    // that appears after `git pack-refs` counts) or a line of packed-refs. Paths come from git,
    // so worktrees work; only existing ones are watched, as a missing one reruns every build.
    for path in ["HEAD", "refs/heads", "packed-refs"] {
        let Some(found) = git(&["rev-parse", "--git-path", path]) else {
            continue;
        };
        let found = Path::new(env!("CARGO_MANIFEST_DIR")).join(found);
        if found.exists() {
            println!("cargo::rerun-if-changed={}", found.display());
        }
    }
    git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
}

/// Name of the object (the `splitter-ebpf` bin target) in `OUT_DIR`.
const OBJECT: &str = "splitter-ebpf";

fn main() {
    println!("cargo::rustc-check-cfg=cfg(splitter_no_ebpf)");
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
    println!("cargo::rerun-if-env-changed=SPLITTER_NO_EBPF");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rustc-env=SPLITTER_COMMIT={}", commit());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("splitter-user is inside the workspace")
        .join("splitter-ebpf");

    if let Some(reason) = reason_to_skip() {
        return stub(&out_dir, &reason);
    }
    let package = aya_build::Package {
        name: "splitter-ebpf",
        root_dir: root.to_str().expect("a UTF-8 workspace path"),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(EBPF_TOOLCHAIN)) {
        panic!("building splitter-ebpf with {EBPF_TOOLCHAIN}: {e:#}");
    }
}

/// Why the eBPF object will not be built here, if it will not.
fn reason_to_skip() -> Option<String> {
    for var in ["SPLITTER_NO_EBPF", "AYA_BUILD_SKIP"] {
        if std::env::var(var).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true")) {
            return Some(format!("built with {var}=1"));
        }
    }
    let setup = "run `cargo xtask setup-ebpf`, then rebuild";
    // `rustup toolchain list` rather than `rustup run`: the latter may install a missing
    // toolchain by itself, which a build script must not do.
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).contains(EBPF_TOOLCHAIN));
    if !listed {
        return Some(format!(
            "toolchain {EBPF_TOOLCHAIN} is not installed; {setup}"
        ));
    }
    let sysroot = Command::new("rustc")
        .args([&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let has_src = sysroot.is_some_and(|s| s.join("lib/rustlib/src/rust/library/core").is_dir());
    if !has_src {
        return Some(format!("{EBPF_TOOLCHAIN} has no rust-src; {setup}"));
    }
    let linker = Command::new("bpf-linker").arg("--version").output();
    if !linker.is_ok_and(|o| o.status.success()) {
        return Some(format!("bpf-linker is missing or cannot start; {setup}"));
    }
    None
}

/// An empty object and the cfg that tells the daemon there is no eBPF in this build.
fn stub(out_dir: &Path, reason: &str) {
    println!("cargo::warning=eBPF steering not built ({reason}): splitter will use SO_REUSEPORT");
    println!("cargo::rustc-cfg=splitter_no_ebpf");
    println!("cargo::rustc-env=SPLITTER_NO_EBPF_REASON={reason}");
    let dst = out_dir.join(OBJECT);
    std::fs::write(&dst, []).unwrap_or_else(|e| panic!("writing {}: {e}", dst.display()));
}

//! `cargo xtask setup-ebpf`: what building `splitter-ebpf` needs, installed only when missing.
//!
//! 1. The pinned nightly ([`EBPF_TOOLCHAIN`]) with `rust-src` (the BPF target builds `core`
//!    from source).
//! 2. `bpf-linker` 0.13.0, linked against that nightly's own `libLLVM.so`: Debian's LLVM is too
//!    old and bpf-linker has no bundled-LLVM feature, so the nightly's library is exposed under a
//!    prefix in `$CARGO_HOME/bpf-llvm` and bpf-linker is built against it.
//!
//! It never touches the host toolchain (`rust-toolchain.toml`). When this fails, plain
//! `cargo build` still works: `splitter-user/build.rs` embeds an empty object and the daemon
//! falls back to `SO_REUSEPORT`, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use splitter_common::EBPF_TOOLCHAIN;

/// The bpf-linker release known to link aya-ebpf 0.3 objects with this nightly's LLVM.
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Options of `cargo xtask setup-ebpf`.
#[derive(clap::Args)]
pub struct Options {
    /// Rebuild bpf-linker even when one is installed.
    #[arg(long)]
    force: bool,
}

/// Runs `cargo xtask setup-ebpf`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    // rustup's self-update can replace the rustup binary with an older one on these machines.
    let _ = Command::new("rustup")
        .args(["set", "auto-self-update", "disable"])
        .output();
    ensure_nightly()?;
    let llvm = LlvmPrefix::of_nightly()?;
    if !opts.force && bpf_linker_fits(&llvm) {
        println!("bpf-linker {BPF_LINKER_VERSION}: present, linked to {EBPF_TOOLCHAIN}'s LLVM");
    } else {
        install_bpf_linker(&llvm)?;
    }
    println!("eBPF toolchain ready: {EBPF_TOOLCHAIN} + rust-src, bpf-linker {BPF_LINKER_VERSION}");
    Ok(())
}

/// Installs the nightly with `rust-src` unless both are there.
fn ensure_nightly() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ])
        .output()
        .context("running rustup")?;
    let has_src = installed.status.success()
        && String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|l| l.trim() == "rust-src");
    if has_src {
        println!("{EBPF_TOOLCHAIN} with rust-src: present");
        return Ok(());
    }
    run_cmd(Command::new("rustup").args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--no-self-update",
    ]))
}

/// `$CARGO_HOME/bpf-llvm`: a prefix whose `lib/` holds the nightly's `libLLVM.so`, under its
/// real name (its SONAME, needed at run time) and its plain name (needed at link time).
struct LlvmPrefix {
    prefix: PathBuf,
    /// The nightly's library, e.g. `.../lib/libLLVM.so.21.1-rust-1.99.0-nightly`.
    library: PathBuf,
    /// The LLVM major version, for bpf-linker's `llvm-N` feature.
    major: String,
}

impl LlvmPrefix {
    fn of_nightly() -> anyhow::Result<LlvmPrefix> {
        let sysroot = capture(Command::new("rustc").args([
            &format!("+{EBPF_TOOLCHAIN}"),
            "--print",
            "sysroot",
        ]))?;
        let lib_dir = Path::new(sysroot.trim()).join("lib");
        let library = std::fs::read_dir(&lib_dir)
            .with_context(|| format!("reading {}", lib_dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libLLVM.so."))
            })
            .with_context(|| format!("no libLLVM.so.* in {}", lib_dir.display()))?;
        let version = capture(Command::new("rustc").args([&format!("+{EBPF_TOOLCHAIN}"), "-vV"]))?;
        let major = version
            .lines()
            .find_map(|l| l.strip_prefix("LLVM version: "))
            .and_then(|v| v.split('.').next())
            .context("rustc -vV printed no LLVM version")?
            .to_owned();
        Ok(LlvmPrefix {
            prefix: cargo_home()?.join("bpf-llvm"),
            library,
            major,
        })
    }

    /// The link under the library's own name, which the installed bpf-linker loads.
    fn soname_link(&self) -> PathBuf {
        self.prefix
            .join("lib")
            .join(self.library.file_name().expect("a file name"))
    }

    fn create(&self) -> anyhow::Result<()> {
        let lib = self.prefix.join("lib");
        std::fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
        for link in [self.soname_link(), lib.join("libLLVM.so")] {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&self.library, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
        Ok(())
    }
}

/// Is the installed bpf-linker the pinned version, and does it still find this nightly's LLVM?
/// (A moved nightly changes the library's name, so its link would be missing.)
fn bpf_linker_fits(llvm: &LlvmPrefix) -> bool {
    let version = Command::new("bpf-linker").arg("--version").output();
    let runs = version.is_ok_and(|o| {
        o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
    });
    runs && std::fs::read_link(llvm.soname_link()).is_ok_and(|t| t == llvm.library)
}

fn install_bpf_linker(llvm: &LlvmPrefix) -> anyhow::Result<()> {
    llvm.create()?;
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "install",
            "--locked",
            "--force",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--no-default-features",
            "--features",
            &format!("llvm-{}", llvm.major),
        ])
        .env("LLVM_PREFIX", &llvm.prefix)
        // A shared CARGO_TARGET_DIR would keep bpf-linker's LLVM-linked build among ours.
        .env_remove("CARGO_TARGET_DIR");
    run_cmd(&mut cargo)
}

fn cargo_home() -> anyhow::Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    println!("+ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn capture(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

//! `cargo xtask build`: the release splitter, optimised with the profile of its own load
//! (profile-guided optimisation, PGO). `bench`, `soak`, `install` and `package` build through
//! here, so what is measured is what is shipped.
//!
//! Why: the hot path's code does not fit the instruction cache (about 800 simulated L1i misses
//! per request); laid out by a profile it does far better (about 290), and the user time per
//! request falls by a sixth (README, "Instructions per request").
//!
//! The steps, all under `<target dir>/pgo` but the last:
//! 1. an instrumented release build (`-Cprofile-generate`; without the eBPF program, which the
//!    demo's load does not exercise: one nested build fewer);
//! 2. `splitter demo` run on it: two mock backends in the process, the splitter's io_uring
//!    workers in front, a few seconds of 2 KB JSON and of OpenRTB (gzip, `*` paths) traffic;
//! 3. the counts merged by `llvm-profdata` (rustup's `llvm-tools` component);
//! 4. the release build with `-Cprofile-use`, into `<target dir>/<host>/release/splitter`.
//!
//! The flags reach the splitter's crates only: they are given for the host target named with
//! `--target`, which keeps them from build scripts, proc macros and the eBPF build. Steps 2 and 3
//! are skipped while the profile is newer than the instrumented binary.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _};

/// Build options shared by the tasks that build the release splitter.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildOptions {
    /// A plain release build (`target/release/splitter`), without the profiling run.
    #[arg(long)]
    pub no_pgo: bool,
}

/// Seconds of each demo load of the profiling run: 2 KB JSON, then OpenRTB.
const PROFILE_LOADS: [(&[&str], &str); 2] = [(&[], "6"), (&["--openrtb"], "3")];

/// Runs `cargo xtask build`: prints the binary's path.
pub fn run(opts: BuildOptions) -> anyhow::Result<()> {
    println!("{}", release(&opts)?.display());
    Ok(())
}

/// Builds the release splitter as `opts` asks; returns the binary.
pub fn release(opts: &BuildOptions) -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root();
    let target = crate::install::target_dir();
    if opts.no_pgo {
        cargo_build(&root, &[], &[])?;
        return Ok(target.join("release/splitter"));
    }
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        ensure!(
            std::env::var_os(var).is_none(),
            "{var} is set and would replace the profile flags of the PGO build: \
             unset it, or build with --no-pgo"
        );
    }
    let host = host_triple(&root)?;
    let flags_var = format!(
        "CARGO_TARGET_{}_RUSTFLAGS",
        host.to_uppercase().replace(['-', '.'], "_")
    );
    let pgo = target.join("pgo");
    let raw = pgo.join("raw");
    let profile = pgo.join("splitter.profdata");

    eprintln!("PGO 1/4: instrumented build");
    let generate = format!("-Cprofile-generate={}", raw.display());
    let pgo_dir = pgo.as_os_str().to_owned();
    cargo_build(
        &root,
        &[
            "--target".into(),
            host.clone().into(),
            "--target-dir".into(),
            pgo_dir,
        ],
        &[
            (flags_var.as_str(), generate.as_str()),
            ("SPLITTER_NO_EBPF", "1"),
        ],
    )?;
    let instrumented = pgo.join(&host).join("release/splitter");
    if is_newer(&profile, &instrumented) {
        eprintln!("PGO 2-3/4: {} is up to date", profile.display());
    } else {
        eprintln!("PGO 2/4: profiling run (splitter demo)");
        profile_run(&instrumented, &raw, &pgo.join("demo.log"))?;
        eprintln!("PGO 3/4: merging the profile");
        merge(&root, &host, &raw, &profile)?;
    }

    eprintln!("PGO 4/4: release build with the profile");
    // The steering code differs from the instrumented build's (no eBPF program there): its
    // functions' profiles are dropped, which LLVM would report function by function.
    let use_profile = format!(
        "-Cprofile-use={} -Cllvm-args=-no-pgo-warn-mismatch",
        profile.display()
    );
    cargo_build(
        &root,
        &["--target".into(), host.clone().into()],
        &[(flags_var.as_str(), use_profile.as_str())],
    )?;
    Ok(target.join(&host).join("release/splitter"))
}

/// `cargo build --release -p splitter-user` with `args` and `envs` added.
fn cargo_build(root: &Path, args: &[OsString], envs: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--release", "-p", "splitter-user"])
        .args(args)
        .envs(envs.iter().copied());
    let status = cmd.status().context("running cargo build")?;
    ensure!(status.success(), "{cmd:?}: {status}");
    Ok(())
}

/// The host's target triple, from the workspace's (pinned) rustc.
fn host_triple(root: &Path) -> anyhow::Result<String> {
    let out = rustc(root, &["-vV"])?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` names no host")
}

/// Runs the workspace's rustc (the toolchain rust-toolchain.toml pins) with `args`.
fn rustc(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .current_dir(root)
        .args(args)
        .output()
        .context("running rustc")?;
    ensure!(out.status.success(), "rustc {args:?}: {}", out.status);
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `a` exists and was modified after `b`.
fn is_newer(a: &Path, b: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    matches!((modified(a), modified(b)), (Some(a), Some(b)) if a > b)
}

/// Runs the demo loads on the instrumented binary, each process writing its counts into `raw`.
fn profile_run(binary: &Path, raw: &Path, log: &Path) -> anyhow::Result<()> {
    if raw.exists() {
        std::fs::remove_dir_all(raw).with_context(|| format!("emptying {}", raw.display()))?;
    }
    std::fs::create_dir_all(raw).with_context(|| format!("creating {}", raw.display()))?;
    let log_file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    for (flags, seconds) in PROFILE_LOADS {
        let status = Command::new(binary)
            .arg("demo")
            .args(flags)
            .args(["--seconds", seconds])
            .env("LLVM_PROFILE_FILE", raw.join("splitter-%p-%m.profraw"))
            .stdout(log_file.try_clone()?)
            .stderr(log_file.try_clone()?)
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running {}", binary.display()))?;
        ensure!(
            status.success(),
            "the profiling run `splitter demo {flags:?}` failed ({status}); its output is in {}",
            log.display()
        );
    }
    Ok(())
}

/// Merges the raw counts in `raw` into `profile` with rustup's `llvm-profdata`.
fn merge(root: &Path, host: &str, raw: &Path, profile: &Path) -> anyhow::Result<()> {
    let sysroot = rustc(root, &["--print", "sysroot"])?;
    let tool = Path::new(sysroot.trim()).join(format!("lib/rustlib/{host}/bin/llvm-profdata"));
    if !tool.is_file() {
        // rust-toolchain.toml lists the component; a toolchain installed before it did lacks it.
        let status = Command::new("rustup")
            .current_dir(root)
            .args(["component", "add", "llvm-tools"])
            .status()
            .context("running rustup component add llvm-tools")?;
        ensure!(
            status.success(),
            "rustup component add llvm-tools: {status}"
        );
    }
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(raw)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    inputs.retain(|p| p.extension().is_some_and(|e| e == "profraw"));
    if inputs.is_empty() {
        bail!("the profiling run left no counts in {}", raw.display());
    }
    let status = Command::new(&tool)
        .arg("merge")
        .arg("-o")
        .arg(profile)
        .args(&inputs)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    ensure!(status.success(), "llvm-profdata merge: {status}");
    Ok(())
}

//! `cargo xtask build`: the release splitter, optimised with the profile of its own load
//! (profile-guided optimisation, PGO), then laid out by that load (BOLT). `bench`, `soak`,
//! `install` and `package` build through here, so what is measured is what is shipped.
//!
//! Why: the hot path's code does not fit the instruction cache (about 800 simulated L1i misses
//! per request); laid out by a profile it does far better (about 290 with PGO, a third fewer
//! again with BOLT), and the user time per request falls by a sixth, then by another
//! microsecond (README, "Instructions per request").
//!
//! The steps, all under `<target dir>/pgo` and `<target dir>/bolt`:
//! 1. an instrumented release build (`-Cprofile-generate`; without the eBPF program, which the
//!    demo's load does not exercise: one nested build fewer);
//! 2. the profiling load run on it (`load.rs`): `splitter run`, its io_uring workers in front of
//!    two `splitter mock-backend`s, a few seconds of 2 KB JSON and of OpenRTB (gzip, `*` paths)
//!    traffic from keep-alive clients;
//! 3. the splitter's counts merged by `llvm-profdata` (rustup's `llvm-tools` component);
//! 4. the release build with `-Cprofile-use` (and its relocations kept, for BOLT), into
//!    `<target dir>/<host>/release/splitter`;
//! 5. that binary instrumented by `llvm-bolt`, the same load run on it, the splitter's counts
//!    merged by `merge-fdata`;
//! 6. `llvm-bolt` reorders its functions and blocks by those counts and moves the cold code
//!    apart, into `<target dir>/bolt/splitter`, the binary shipped.
//!
//! BOLT comes from Debian's `bolt-19` (scripts/packages.sh); where it is missing the PGO
//! binary of step 4 is shipped, with a warning.
//!
//! The flags reach the splitter's crates only: they are given for the host target named with
//! `--target`, which keeps them from build scripts, proc macros and the eBPF build. Steps 2-3
//! and 5-6 are skipped while their output is newer than their input.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _};

mod load;

/// Build options shared by the tasks that build the release splitter.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct BuildOptions {
    /// A plain release build (`target/release/splitter`), without the profiling runs.
    #[arg(long)]
    pub no_pgo: bool,
}

/// What [`release`] built.
pub struct Release {
    pub binary: PathBuf,
    /// How: `release`, `release, PGO` or `release, PGO, BOLT` (for the bench's record).
    pub kind: &'static str,
}

/// How BOLT lays the binary out: functions ordered by who calls whom (`cdsort`), blocks by the
/// profile's paths (`ext-tsp`), every function's cold blocks (and its unwinding paths) moved
/// to a cold section, identical functions folded; the debug information kept, for `perf`.
const BOLT_LAYOUT: [&str; 8] = [
    "-reorder-blocks=ext-tsp",
    "-reorder-functions=cdsort",
    "-split-functions",
    "-split-all-cold",
    "-split-eh",
    "-icf=1",
    "-use-gnu-stack",
    "-update-debug-sections",
];

/// Runs `cargo xtask build`: prints the binary's path.
pub fn run(opts: BuildOptions) -> anyhow::Result<()> {
    println!("{}", release(&opts)?.binary.display());
    Ok(())
}

/// Builds the release splitter as `opts` asks.
pub fn release(opts: &BuildOptions) -> anyhow::Result<Release> {
    let root = crate::workspace_root();
    let target = crate::install::target_dir();
    if opts.no_pgo {
        cargo_build(&root, &[], &[])?;
        return Ok(Release {
            binary: target.join("release/splitter"),
            kind: "release",
        });
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

    eprintln!("build 1/6: instrumented build (PGO)");
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
        eprintln!("build 2-3/6: {} is up to date", profile.display());
    } else {
        eprintln!("build 2/6: profiling run");
        empty_dir(&raw)?;
        let file = raw.join("splitter-%p-%m.profraw");
        let env = vec![("LLVM_PROFILE_FILE".into(), file.into_os_string())];
        let pids = load::run(&instrumented, env, &pgo.join("profiling"))?;
        eprintln!("build 3/6: merging the profile");
        merge(&root, &host, &counts(&raw, "profraw", &pids)?, &profile)?;
    }

    let bolt = Bolt::find();
    eprintln!("build 4/6: release build with the profile");
    // The steering code differs from the instrumented build's (no eBPF program there): its
    // functions' profiles are dropped, which LLVM would report function by function.
    let mut use_profile = format!(
        "-Cprofile-use={} -Cllvm-args=-no-pgo-warn-mismatch",
        profile.display()
    );
    if bolt.is_some() {
        // BOLT moves functions only in a binary that kept its relocations.
        use_profile.push_str(" -Clink-args=-Wl,--emit-relocs");
    }
    cargo_build(
        &root,
        &["--target".into(), host.clone().into()],
        &[(flags_var.as_str(), use_profile.as_str())],
    )?;
    let binary = target.join(&host).join("release/splitter");
    let Some(bolt) = bolt else {
        eprintln!(
            "warning: llvm-bolt not found (Debian: apt-get install bolt-19): \
             the binary is not laid out by BOLT"
        );
        return Ok(Release {
            binary,
            kind: "release, PGO",
        });
    };
    Ok(Release {
        binary: bolt.lay_out(&binary, &target.join("bolt"))?,
        kind: "release, PGO, BOLT",
    })
}

/// LLVM's post-link optimiser: `llvm-bolt` and `merge-fdata`, from one LLVM version.
struct Bolt {
    dir: PathBuf,
}

impl Bolt {
    /// The directory of the `llvm-bolt` on `PATH`, or else of the newest
    /// `/usr/lib/llvm-N/bin/llvm-bolt` (Debian installs the tools there, versioned on `PATH`).
    fn find() -> Option<Self> {
        let on_path = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join("llvm-bolt"))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::canonicalize(p).ok())
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib")
            .into_iter()
            .flatten()
            .filter_map(|e| {
                let e = e.ok()?;
                let version = e
                    .file_name()
                    .to_str()?
                    .strip_prefix("llvm-")?
                    .parse()
                    .ok()?;
                Some((version, e.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|(version, _)| std::cmp::Reverse(*version));
        on_path
            .into_iter()
            .chain(versioned.into_iter().map(|(_, dir)| dir))
            .find(|dir| dir.join("llvm-bolt").is_file() && dir.join("merge-fdata").is_file())
            .map(|dir| Bolt { dir })
    }

    /// Steps 5 and 6: `input` instrumented, profiled by the demo loads and laid out by that
    /// profile into `dir/splitter`, which it returns.
    fn lay_out(&self, input: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
        let output = dir.join("splitter");
        if is_newer(&output, input) {
            eprintln!("build 5-6/6: {} is up to date", output.display());
            return Ok(output);
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let raw = dir.join("raw");
        let instrumented = dir.join("splitter-instrumented");
        let profile = dir.join("splitter.fdata");

        eprintln!("build 5/6: BOLT profiling run");
        let counts_at = format!("--instrumentation-file={}", raw.join("splitter").display());
        self.run(self.tool("llvm-bolt").arg(input).args([
            "-instrument".as_ref(),
            "--instrumentation-file-append-pid".as_ref(),
            OsStr::new(&counts_at),
            "-o".as_ref(),
            instrumented.as_os_str(),
        ]))?;
        // Each process of the run writes `raw/splitter.<pid>.fdata` as it exits.
        empty_dir(&raw)?;
        let pids = load::run(&instrumented, Vec::new(), &dir.join("profiling"))?;
        let inputs = counts(&raw, "fdata", &pids)?;
        self.run(
            self.tool("merge-fdata")
                .args(["-q".as_ref(), "-o".as_ref(), profile.as_os_str()])
                .args(&inputs),
        )?;

        eprintln!("build 6/6: BOLT layout");
        self.run(
            self.tool("llvm-bolt")
                .arg(input)
                .arg("-o")
                .arg(&output)
                .arg(format!("-data={}", profile.display()))
                .args(BOLT_LAYOUT),
        )?;
        Ok(output)
    }

    fn tool(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.dir.join(name));
        cmd.stdin(Stdio::null());
        cmd
    }

    /// Runs one of the tools; its output is shown only when it fails.
    fn run(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
        ensure!(
            out.status.success(),
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }
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

/// Removes what `dir` holds, or creates it.
fn empty_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// The counts the processes `pids` left in `dir`, in files `*.ext` whose names hold the PID
/// between `-` or `.`: at least one.
fn counts(dir: &Path, ext: &str, pids: &[u32]) -> anyhow::Result<Vec<PathBuf>> {
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| {
        let name = p.file_name().and_then(OsStr::to_str).unwrap_or_default();
        name.ends_with(&format!(".{ext}"))
            && name
                .split(['-', '.'])
                .any(|part| pids.iter().any(|pid| pid == part))
    });
    if files.is_empty() {
        bail!("the profiling run left no counts in {}", dir.display());
    }
    Ok(files)
}

/// Merges the raw counts `inputs` into `profile` with rustup's `llvm-profdata`.
fn merge(root: &Path, host: &str, inputs: &[PathBuf], profile: &Path) -> anyhow::Result<()> {
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
    let status = Command::new(&tool)
        .arg("merge")
        .arg("-o")
        .arg(profile)
        .args(inputs)
        .status()
        .with_context(|| format!("running {}", tool.display()))?;
    ensure!(status.success(), "llvm-profdata merge: {status}");
    Ok(())
}

//! `cargo xtask install`: the release binary, the systemd unit, the system user's sysusers.d
//! entry, a commented default configuration and the operator's documents, under `--root`.
//!
//! | installed as                                  | from                        | mode |
//! | --------------------------------------------- | --------------------------- | ---- |
//! | `usr/local/bin/splitter`                      | `target/release/splitter`   | 0755 |
//! | `etc/systemd/system/splitter.service`         | `infra/splitter.service`    | 0644 |
//! | `usr/local/lib/sysusers.d/splitter.conf`      | `infra/splitter.sysusers`   | 0644 |
//! | `etc/splitter/splitter.toml` (only if absent) | `infra/splitter.toml`       | 0644 |
//! | `usr/local/share/doc/splitter/*`              | `README.md`, `infra/tuning.md`, `haproxy.cfg` | 0644 |
//!
//! The configuration is the operator's from the first install on: an existing one is never
//! touched, whatever its content. Every other file is replaced atomically (written next to its
//! destination, then renamed), so a running `splitter` keeps its old binary until restarted and
//! a crash mid-install leaves no half-written file.
//!
//! Into the real root (`/`), it also creates the `splitter` system user and tells systemd to
//! reload its units, when systemd runs. Into any other root it only writes files: that is what
//! makes it testable, and what an image or package build wants.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

/// Options of `cargo xtask install`.
#[derive(clap::Args)]
pub struct Options {
    /// Install under this directory instead of `/` (no user is created, systemd is not told).
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Install this `splitter` binary instead of building release (`cargo build --release`).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
}

/// Where each file goes, relative to the root.
const BIN: &str = "usr/local/bin/splitter";
const UNIT: &str = "etc/systemd/system/splitter.service";
const SYSUSERS: &str = "usr/local/lib/sysusers.d/splitter.conf";
const CONFIG: &str = "etc/splitter/splitter.toml";
const DOC_DIR: &str = "usr/local/share/doc/splitter";
/// Documents installed under [`DOC_DIR`], from `infra/` (and the README, whose "Operate it"
/// section is the operator's guide).
const DOCS: [&str; 2] = ["tuning.md", "haproxy.cfg"];

/// Runs `cargo xtask install`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let infra = crate::workspace_root().join("infra");
    let binary = match opts.binary {
        Some(path) => path,
        None => build_release()?,
    };
    if !binary.is_file() {
        bail!("{}: no such binary", binary.display());
    }
    let root = &opts.root;
    let real_root = root.canonicalize().ok().as_deref() == Some(Path::new("/"));

    // Everything is read before anything is written: a missing source leaves no half install.
    let mut files = vec![
        (BIN.to_string(), read(&binary)?, 0o755),
        (
            UNIT.to_string(),
            read(&infra.join("splitter.service"))?,
            0o644,
        ),
        (
            SYSUSERS.to_string(),
            read(&infra.join("splitter.sysusers"))?,
            0o644,
        ),
    ];
    for doc in DOCS {
        files.push((format!("{DOC_DIR}/{doc}"), read(&infra.join(doc))?, 0o644));
    }
    let readme = crate::workspace_root().join("README.md");
    files.push((format!("{DOC_DIR}/README.md"), read(&readme)?, 0o644));
    let default_config = read(&infra.join("splitter.toml"))?;
    for (rel, contents, mode) in &files {
        install(root, rel, contents, *mode)?;
    }
    let config = root.join(CONFIG);
    // symlink_metadata: a dangling symlink at the path is the operator's too.
    if config.symlink_metadata().is_ok() {
        println!(
            "kept {}: an existing configuration is never overwritten (the shipped default is \
             infra/splitter.toml)",
            config.display()
        );
    } else {
        install(root, CONFIG, &default_config, 0o644)?;
    }

    if real_root {
        create_user()?;
        if Path::new("/run/systemd/system").is_dir() {
            // sd_booted(3): systemd is PID 1. Otherwise (a container, a chroot) there is no
            // manager to tell, and the unit is picked up when one starts.
            run_cmd(Command::new("systemctl").arg("daemon-reload"))?;
            println!("ran systemctl daemon-reload");
        }
        println!(
            "next: edit {CONFIG_ABS} (backends, routes), `splitter check -c {CONFIG_ABS}`, then \
             `systemctl enable --now splitter`",
            CONFIG_ABS = Path::new("/").join(CONFIG).display()
        );
    } else {
        println!(
            "installed under {}: no user created and systemd not told (not the real root)",
            root.display()
        );
    }
    Ok(())
}

/// `cargo build --release -p splitter-user`; returns the binary it built.
fn build_release() -> anyhow::Result<PathBuf> {
    let root = crate::workspace_root();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    run_cmd(Command::new(cargo).current_dir(&root).args([
        "build",
        "--release",
        "-p",
        "splitter-user",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    Ok(target.join("release/splitter"))
}

/// Writes `contents` to `root/rel` with `mode`, atomically: a temporary file in the same
/// directory, then a rename over the destination. Parent directories are created 0755.
fn install(root: &Path, rel: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dest = root.join(rel);
    let dir = dest.parent().expect("every destination has a directory");
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = dest.file_name().expect("a file name").to_string_lossy();
    let tmp = dir.join(format!(".{name}.xtask-install"));
    let write = || -> std::io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(contents)?;
        // Explicit, not from the umask: the unit and the config must be readable by the
        // `splitter` user and by whoever debugs it; the binary must be executable by all.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, &dest)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("installing {}", dest.display()));
    }
    println!("installed {} ({mode:04o})", dest.display());
    Ok(())
}

/// Creates the `splitter` system user and group the unit runs as, if missing.
fn create_user() -> anyhow::Result<()> {
    let exists = Command::new("getent")
        .args(["passwd", "splitter"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        println!("user splitter exists");
        return Ok(());
    }
    let sysusers = Path::new("/").join(SYSUSERS);
    if Command::new("systemd-sysusers")
        .arg("--version")
        .output()
        .is_ok()
    {
        // The same declaration systemd applies at boot: one source of truth for the user.
        run_cmd(Command::new("systemd-sysusers").arg(&sysusers))?;
    } else {
        run_cmd(Command::new("useradd").args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "splitter scatter-gather server",
            "splitter",
        ]))?;
    }
    println!("created system user splitter");
    Ok(())
}

fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

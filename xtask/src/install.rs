//! `cargo xtask install`: the release binary, the systemd unit, the system user's sysusers.d
//! entry, a commented default configuration and the operator's documents, under `--root`.
//!
//! | installed as                                  | from                        | mode |
//! | --------------------------------------------- | --------------------------- | ---- |
//! | `usr/local/bin/splitter`                      | `cargo xtask build`'s       | 0755 |
//! | `etc/systemd/system/splitter.service`         | `infra/splitter.service`    | 0644 |
//! | `usr/local/lib/sysusers.d/splitter.conf`      | `infra/splitter.sysusers`   | 0644 |
//! | `etc/splitter/splitter.toml` (only if absent) | `infra/splitter.toml`       | 0644 |
//! | `usr/local/share/doc/splitter/*`              | `README.md`, `infra/tuning.md`, `haproxy.cfg` | 0644 |
//!
//! That list is [`files`], which `cargo xtask package` packs too, with the paths of a
//! distribution package ([`PACKAGE`]: `/usr/bin`, `/lib/systemd/system`, ...) instead of a
//! local install's ([`LOCAL`]). The files under `infra/` name the local paths; [`files`] rewrites
//! them for the layout it installs, so the unit's `ExecStart=` always runs the binary installed
//! beside it.
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
    /// Install this `splitter` binary instead of building release (`cargo xtask build`).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    #[command(flatten)]
    build: crate::build::BuildOptions,
}

/// Where each file goes, relative to the root, and who put it there.
pub struct Layout {
    pub bin: &'static str,
    pub unit: &'static str,
    pub sysusers: &'static str,
    pub config: &'static str,
    pub doc_dir: &'static str,
    /// Who installs these files, as the deployment files' comments name it.
    pub by: &'static str,
}

/// `cargo xtask install`: software the administrator installs locally, under `/usr/local`, and
/// a unit in `/etc/systemd/system`. The files under `infra/` are written for this layout.
pub const LOCAL: Layout = Layout {
    bin: "usr/local/bin/splitter",
    unit: "etc/systemd/system/splitter.service",
    sysusers: "usr/local/lib/sysusers.d/splitter.conf",
    config: "etc/splitter/splitter.toml",
    doc_dir: "usr/local/share/doc/splitter",
    by: "`cargo xtask install`",
};

/// The `.deb` of `cargo xtask package`: a distribution package's paths (Debian 12 keeps
/// packaged units in `/lib/systemd/system`; `/etc/systemd/system` is the administrator's).
pub const PACKAGE: Layout = Layout {
    bin: "usr/bin/splitter",
    unit: "lib/systemd/system/splitter.service",
    sysusers: "usr/lib/sysusers.d/splitter.conf",
    config: "etc/splitter/splitter.toml",
    doc_dir: "usr/share/doc/splitter",
    by: "the splitter package (`cargo xtask package`)",
};

/// Documents installed under [`Layout::doc_dir`], from `infra/` (and the README, whose "Operate
/// it" section is the operator's guide).
const DOCS: [&str; 2] = ["tuning.md", "haproxy.cfg"];

/// One file to install.
pub struct File {
    /// Its path, relative to the root.
    pub rel: String,
    pub contents: Vec<u8>,
    pub mode: u32,
    /// The operator's configuration: installed only if absent (a conffile in the package).
    pub config: bool,
}

/// Every file of an install with `layout`, read (and rewritten for the layout) before anything
/// is written: a missing source leaves no half install.
pub fn files(layout: &Layout, binary: &Path) -> anyhow::Result<Vec<File>> {
    let root = crate::workspace_root();
    let infra = root.join("infra");
    let file = |rel: &str, contents: Vec<u8>, mode: u32| File {
        rel: rel.to_string(),
        contents,
        mode,
        config: false,
    };
    let deployment = |name: &str| -> anyhow::Result<Vec<u8>> {
        let text = String::from_utf8(read(&infra.join(name))?)
            .with_context(|| format!("infra/{name} is not UTF-8"))?;
        Ok(rewrite(layout, name, &text)?.into_bytes())
    };
    let unit = deployment("splitter.service")?;
    check_unit(layout, &String::from_utf8_lossy(&unit))?;
    let mut files = vec![
        file(layout.bin, read(binary)?, 0o755),
        file(layout.unit, unit, 0o644),
        file(layout.sysusers, deployment("splitter.sysusers")?, 0o644),
    ];
    for doc in DOCS {
        let rel = format!("{}/{doc}", layout.doc_dir);
        files.push(file(&rel, read(&infra.join(doc))?, 0o644));
    }
    let readme = format!("{}/README.md", layout.doc_dir);
    files.push(file(&readme, read(&root.join("README.md"))?, 0o644));
    files.push(File {
        config: true,
        ..file(layout.config, deployment("splitter.toml")?, 0o644)
    });
    Ok(files)
}

/// `text` (the file `infra/name`, written for [`LOCAL`]) with [`LOCAL`]'s paths and installer
/// replaced by `layout`'s. Nothing of the local layout may be left in another layout's file.
fn rewrite(layout: &Layout, name: &str, text: &str) -> anyhow::Result<String> {
    let pairs = [
        (LOCAL.bin, layout.bin),
        (LOCAL.unit, layout.unit),
        (LOCAL.sysusers, layout.sysusers),
        (LOCAL.config, layout.config),
        (LOCAL.doc_dir, layout.doc_dir),
    ];
    let mut text = text.replace(LOCAL.by, layout.by);
    for (local, this) in pairs {
        text = text.replace(&format!("/{local}"), &format!("/{this}"));
    }
    if layout.bin != LOCAL.bin && text.contains("/usr/local/") {
        bail!(
            "infra/{name} names a /usr/local path that {} does not install: name the paths of \
             xtask's install::LOCAL, which `cargo xtask package` rewrites",
            layout.by
        );
    }
    Ok(text)
}

/// The unit must run the binary installed beside it: `ExecStart=/<bin> run ...`.
fn check_unit(layout: &Layout, unit: &str) -> anyhow::Result<()> {
    let exec_start = format!("ExecStart=/{} run ", layout.bin);
    if !unit
        .lines()
        .any(|l| l.trim_start().starts_with(&exec_start))
    {
        bail!(
            "infra/splitter.service has no `{exec_start}...` line (after rewriting for {}): the \
             unit would not run the binary installed with it",
            layout.by
        );
    }
    Ok(())
}

/// Runs `cargo xtask install`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let binary = match opts.binary {
        Some(path) => path,
        None => crate::build::release(&opts.build)?.binary,
    };
    if !binary.is_file() {
        bail!("{}: no such binary", binary.display());
    }
    let root = &opts.root;
    let real_root = root.canonicalize().ok().as_deref() == Some(Path::new("/"));

    let layout = &LOCAL;
    let files = files(layout, &binary)?;
    for f in files.iter().filter(|f| !f.config) {
        install(root, &f.rel, &f.contents, f.mode)?;
    }
    for f in files.iter().filter(|f| f.config) {
        let config = root.join(&f.rel);
        // symlink_metadata: a dangling symlink at the path is the operator's too.
        if config.symlink_metadata().is_ok() {
            println!(
                "kept {}: an existing configuration is never overwritten (the shipped default \
                 is infra/splitter.toml)",
                config.display()
            );
        } else {
            install(root, &f.rel, &f.contents, f.mode)?;
        }
    }

    if real_root {
        create_user(layout)?;
        if Path::new("/run/systemd/system").is_dir() {
            // sd_booted(3): systemd is PID 1. Otherwise (a container, a chroot) there is no
            // manager to tell, and the unit is picked up when one starts.
            run_cmd(Command::new("systemctl").arg("daemon-reload"))?;
            println!("ran systemctl daemon-reload");
        }
        println!(
            "next: edit {CONFIG_ABS} (backends, routes), `splitter check -c {CONFIG_ABS}`, then \
             `systemctl enable --now splitter`",
            CONFIG_ABS = Path::new("/").join(layout.config).display()
        );
    } else {
        println!(
            "installed under {}: no user created and systemd not told (not the real root)",
            root.display()
        );
    }
    Ok(())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR`, or `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// Writes `contents` to `root/rel` with `mode`, atomically: a temporary file in the same
/// directory, then a rename over the destination. Parent directories are created 0755.
fn install(root: &Path, rel: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    write_file(root, rel, contents, mode)?;
    println!("installed {} ({mode:04o})", root.join(rel).display());
    Ok(())
}

/// [`install`] without a word: for trees that are not an install (a package's).
pub fn write_file(root: &Path, rel: &str, contents: &[u8], mode: u32) -> anyhow::Result<()> {
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
    Ok(())
}

/// Creates the `splitter` system user and group the unit runs as, if missing.
fn create_user(layout: &Layout) -> anyhow::Result<()> {
    let exists = Command::new("getent")
        .args(["passwd", "splitter"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if exists {
        println!("user splitter exists");
        return Ok(());
    }
    let sysusers = Path::new("/").join(layout.sysusers);
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

pub fn read(path: &Path) -> anyhow::Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

pub fn run_cmd(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

//! `cargo xtask package`: a Debian package of splitter, `splitter_<version>_<arch>.deb`.
//!
//! It holds the files of `cargo xtask install` ([`install::files`], the one list of them) at a
//! distribution package's paths ([`install::PACKAGE`]):
//!
//! | path                                   | what                                        |
//! | -------------------------------------- | ------------------------------------------- |
//! | `/usr/bin/splitter`                    | the binary                                  |
//! | `/lib/systemd/system/splitter.service` | the unit, `ExecStart=/usr/bin/splitter ...` |
//! | `/usr/lib/sysusers.d/splitter.conf`    | the `splitter` system user                  |
//! | `/etc/splitter/splitter.toml`          | the default configuration, a conffile       |
//! | `/usr/share/doc/splitter/`             | README.md, tuning.md, haproxy.cfg           |
//!
//! and the maintainer scripts of `xtask/src/package/`: postinst creates the user, never enables
//! or starts the service (the default configuration names placeholder backends), and restarts a
//! running splitter on an upgrade; prerm stops it on removal; postrm cleans up on purge.
//!
//! The tree is assembled here and packed with `dpkg-deb --build --root-owner-group` rather than
//! by `cargo-deb`: dpkg-deb is on every Debian machine, there is nothing to install or build
//! first, and the file list stays the one of `install.rs` instead of a second copy as cargo-deb
//! assets in a Cargo.toml. `Depends:` comes from `dpkg-shlibdeps` (package `dpkg-dev`), as
//! Debian's own packages get it, plus `passwd` for postinst's useradd.
//!
//! The package's version is the workspace's; its `Maintainer:` is `$DEBFULLNAME <$DEBEMAIL>`
//! when both are set (Debian's convention), a placeholder otherwise.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};

use crate::install::{self, PACKAGE};

/// Options of `cargo xtask package`.
#[derive(clap::Args)]
pub struct Options {
    /// Package this `splitter` binary instead of building release (`cargo xtask build`).
    #[arg(long, value_name = "PATH")]
    binary: Option<PathBuf>,
    #[command(flatten)]
    build: crate::build::BuildOptions,
    /// Write the .deb into this directory [default: <target dir>/debian].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// dpkg-deb's compression of the files: `xz` (Debian's), `gzip`, or `none` (for tests that
    /// package a 100 MB debug binary: xz takes minutes on it).
    #[arg(long, value_name = "TYPE", default_value = "xz", value_parser = ["xz", "gzip", "none"])]
    compression: String,
}

/// The package's name, and the unit's.
const NAME: &str = "splitter";
const UNIT: &str = "splitter.service";
/// Maintainer scripts, with `@...@` placeholders filled by [`script`].
const SCRIPTS: [(&str, &str); 3] = [
    ("postinst", include_str!("package/postinst")),
    ("prerm", include_str!("package/prerm")),
    ("postrm", include_str!("package/postrm")),
];

/// Runs `cargo xtask package`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let binary = match opts.binary {
        Some(path) => path,
        None => crate::build::release(&opts.build)?.binary,
    };
    if !binary.is_file() {
        bail!("{}: no such binary", binary.display());
    }
    let out = opts
        .out
        .unwrap_or_else(|| install::target_dir().join("debian"));
    let deb = build(&binary, &out, &opts.compression)?;
    println!("{}", deb.display());
    Ok(())
}

/// Builds the package of `binary` in `out`; returns the .deb's path.
fn build(binary: &Path, out: &Path, compression: &str) -> anyhow::Result<PathBuf> {
    let files = install::files(&PACKAGE, binary)?;
    let version = env!("CARGO_PKG_VERSION");
    let arch = architecture()?;

    // The tree is `work/debian/splitter/`, beside an empty `work/debian/control`: where
    // dpkg-shlibdeps expects a package's files, and the control file it insists on reading.
    let work = out.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let tree = work.join("debian").join(NAME);
    for f in &files {
        install::write_file(&tree, &f.rel, &f.contents, f.mode)?;
    }
    install::write_file(&work, "debian/control", b"", 0o644)?;

    let depends = depends(&work, &PACKAGE)?;
    let control = control(version, &arch, &depends, &files);
    install::write_file(&tree, "DEBIAN/control", control.as_bytes(), 0o644)?;
    let conffiles: String = files
        .iter()
        .filter(|f| f.config)
        .map(|f| format!("/{}\n", f.rel))
        .collect();
    install::write_file(&tree, "DEBIAN/conffiles", conffiles.as_bytes(), 0o644)?;
    let md5sums = md5sums(&tree, files.iter().filter(|f| !f.config).map(|f| &*f.rel))?;
    install::write_file(&tree, "DEBIAN/md5sums", &md5sums, 0o644)?;
    for (name, text) in SCRIPTS {
        install::write_file(
            &tree,
            &format!("DEBIAN/{name}"),
            script(text).as_bytes(),
            0o755,
        )?;
    }
    // Directories as a package wants them whatever the umask: 0755 (dpkg-deb refuses a DEBIAN
    // directory writable by others).
    chmod_dirs(&tree, 0o755)?;

    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(format!("{NAME}_{version}_{arch}.deb"));
    install::run_cmd(
        Command::new("dpkg-deb")
            // Owned by root:root in the package whoever builds it, without fakeroot.
            .args(["--root-owner-group", "-Z", compression, "--build"])
            .arg(&tree)
            .arg(&deb),
    )?;
    fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(deb)
}

/// The Debian architecture of the packages this machine builds (`amd64`, `arm64`, ...).
fn architecture() -> anyhow::Result<String> {
    let out = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .context("running dpkg --print-architecture (is this Debian?)")?;
    if !out.status.success() {
        bail!("dpkg --print-architecture failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `Depends:`: the shared libraries the binary links, as dpkg-shlibdeps names their packages
/// and minimum versions, and `passwd` (postinst's useradd, when there is no systemd-sysusers).
/// The unit runs nothing but the binary (its ExecReload= is `splitter reload`, not `/bin/kill`,
/// which Debian 12 has only with procps).
fn depends(work: &Path, layout: &install::Layout) -> anyhow::Result<String> {
    let out = Command::new("dpkg-shlibdeps")
        .current_dir(work)
        .args(["-O", "-e"])
        .arg(Path::new("debian").join(NAME).join(layout.bin))
        .output()
        .context("running dpkg-shlibdeps: install dpkg-dev (scripts/setup.sh does)")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dpkg-shlibdeps failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let libs = stdout
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {stdout}"))?;
    Ok(format!("{libs}, passwd"))
}

/// The `DEBIAN/control` file.
fn control(version: &str, arch: &str, depends: &str, files: &[install::File]) -> String {
    // What dpkg-gencontrol counts: KiB per file, rounded up, and one per directory.
    let mut dirs = std::collections::BTreeSet::new();
    let mut kib = 0;
    for f in files {
        kib += f.contents.len().div_ceil(1024);
        let mut dir = Path::new(&f.rel).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_path_buf());
            dir = d.parent();
        }
    }
    let installed_size = kib + dirs.len();
    let maintainer = match (std::env::var("DEBFULLNAME"), std::env::var("DEBEMAIL")) {
        (Ok(name), Ok(email)) if !name.is_empty() && !email.is_empty() => {
            format!("{name} <{email}>")
        }
        _ => "splitter maintainers <splitter@localhost>".to_string(),
    };
    let mut c = String::new();
    let _ = write!(
        c,
        "Package: {NAME}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {maintainer}\n\
         Installed-Size: {installed_size}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: scatter-gather HTTP/1.1 server\n \
         Every request it receives goes to every backend at once; of the replies that\n \
         arrive before the route's deadline, the one with the best JSON number (a price,\n \
         say) goes back to the client, byte for byte. For real-time bidding exchanges,\n \
         price and quote aggregators and A/B race gateways, usually behind HAProxy.\n \
         .\n \
         The systemd unit is installed but neither enabled nor started: edit\n \
         /{config} (backends, routes), then run\n \
         `systemctl enable --now splitter`.\n",
        config = PACKAGE.config,
    );
    c
}

/// `DEBIAN/md5sums` of `rels` under `tree` (conffiles are left out: dpkg keeps their sums).
fn md5sums<'a>(tree: &Path, rels: impl Iterator<Item = &'a str>) -> anyhow::Result<Vec<u8>> {
    let out = Command::new("md5sum")
        .current_dir(tree)
        .arg("--")
        .args(rels)
        .output()
        .context("running md5sum")?;
    if !out.status.success() {
        bail!(
            "md5sum failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out.stdout)
}

/// A maintainer script with the package's paths filled in.
fn script(text: &str) -> String {
    text.replace("@SYSUSERS@", &format!("/{}", PACKAGE.sysusers))
        .replace("@UNIT_PATH@", &format!("/{}", PACKAGE.unit))
        .replace("@LOCAL_UNIT@", &format!("/{}", install::LOCAL.unit))
        .replace("@UNIT@", UNIT)
}

/// Sets every directory under `dir`, and `dir`, to `mode`.
fn chmod_dirs(dir: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dir.display()))?;
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chmod_dirs(&entry.path(), mode)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_have_no_placeholder_left() {
        for (name, text) in SCRIPTS {
            let filled = script(text);
            assert!(!filled.contains('@'), "{name}: {filled}");
            assert!(filled.starts_with("#!/bin/sh\n"), "{name}");
        }
    }

    #[test]
    fn the_unit_runs_the_packaged_binary_and_names_no_local_path() {
        let me = std::env::current_exe().unwrap();
        let files = install::files(&PACKAGE, &me).unwrap();
        let unit = files.iter().find(|f| f.rel == PACKAGE.unit).unwrap();
        let unit = String::from_utf8_lossy(&unit.contents);
        assert!(unit.contains("\nExecStart=/usr/bin/splitter run -c /etc/splitter/splitter.toml\n"));
        assert!(unit.contains("\nDocumentation=file:///usr/share/doc/splitter/README.md\n"));
        assert!(!unit.contains("/usr/local/"), "{unit}");
        let local = install::files(&install::LOCAL, &me).unwrap();
        let unit = local.iter().find(|f| f.rel == install::LOCAL.unit).unwrap();
        let infra = install::read(&crate::workspace_root().join("infra/splitter.service")).unwrap();
        assert_eq!(
            unit.contents, infra,
            "a local install's unit is infra's as it is"
        );
    }
}

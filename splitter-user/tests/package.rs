//! `cargo xtask package` (SPEC section 10, "Packages"): the `.deb` holds the files of `cargo
//! xtask install` at a package's paths, its unit runs the packaged binary and verifies, and it
//! installs, starts, upgrades, is removed and purged on a fresh Debian 12.
//!
//! Both tests are `#[ignore]`d, for tools a bare machine may lack; test.sh runs them with
//! `--ignored` where those are (CI: root, and everything scripts/setup.sh installs):
//!
//! - [`deb_holds_the_install_files_at_package_paths`]: `dpkg-deb`, `dpkg-shlibdeps` (dpkg-dev),
//!   `systemd-analyze`, `systemd-sysusers`. A few seconds.
//! - [`deb_installs_and_starts_on_a_fresh_debian_12`]: root, `debootstrap` and the Debian
//!   mirror. No container: `debootstrap --variant=minbase` makes a fresh Debian 12 in a scratch
//!   directory (about 3 minutes, most of it downloading; nothing is cached), `dpkg -i` installs
//!   the package inside it with `chroot`, and the unit's commands run there as its `User=`, in a
//!   network namespace of their own, with a notify socket standing in for systemd.
//!
//! The package is of the binary under test (`--binary`), uncompressed (`--compression none`:
//! xz takes minutes on a 100 MB debug binary), built once per run of this file.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{
    repo_path, require_root, require_tool, spawn_logged, TempDir, READY_TIMEOUT, SPLITTER,
};

const DEB_BIN: &str = "usr/bin/splitter";
const DEB_UNIT: &str = "lib/systemd/system/splitter.service";
const DEB_SYSUSERS: &str = "usr/lib/sysusers.d/splitter.conf";
const DEB_CONFIG: &str = "etc/splitter/splitter.toml";
const DEB_DOC: &str = "usr/share/doc/splitter";

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd`, which must succeed; its stdout.
#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The package of the binary under test, built once into Cargo's scratch directory for tests.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package");
        let _ = std::fs::remove_dir_all(&out);
        // `cargo test` has released the build lock by the time tests run: this nested cargo
        // only waits for another cargo of the same target directory, if any.
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let stdout = ok(Command::new(cargo)
            .current_dir(repo_path("."))
            .args(["xtask", "package", "--compression", "none", "--binary"])
            .arg(SPLITTER.path())
            .arg("--out")
            .arg(&out));
        let deb = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("xtask package prints the path"),
        );
        assert!(deb.starts_with(&out) && deb.is_file(), "{stdout}");
        let name = deb.file_name().unwrap().to_string_lossy().into_owned();
        let arch = ok(Command::new("dpkg").arg("--print-architecture"));
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(name, format!("splitter_{version}_{}.deb", arch.trim()));
        deb
    })
}

/// The unit's `[Service]` assignments: key to every value assigned, in order.
fn unit_service(unit: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut section = "";
    for line in unit.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" {
            let (k, v) = line.split_once('=').expect("key=value");
            map.entry(k.trim().into())
                .or_default()
                .push(v.trim().into());
        }
    }
    map
}

/// The unit's setting lines, comments and blank lines left out.
fn settings(unit: &str) -> Vec<String> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// Every program the unit's `Exec*=` lines run.
fn exec_programs(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|l| l.starts_with("Exec"))
        .filter_map(|l| l.split_once('='))
        .map(|(_, cmd)| {
            cmd.split_whitespace()
                .next()
                .expect("a program")
                .to_string()
        })
        .collect()
}

/// `systemd-analyze verify` on `root`'s installed unit. verify resolves `Exec*=` programs on
/// this machine, not under `root`: each one `root` has is pointed at its copy there. verify
/// exits 0 on many complaints, only printing them, so any line naming the unit fails.
fn verify_unit(root: &Path) {
    let systemd_analyze = require_tool("systemd-analyze");
    let unit = read(&root.join(DEB_UNIT));
    let mut rooted = String::new();
    for line in unit.lines() {
        let line = match line.split_once('=') {
            Some((key, cmd))
                if key.starts_with("Exec")
                    && cmd
                        .split_whitespace()
                        .next()
                        .is_some_and(|p| root.join(p.trim_start_matches('/')).exists()) =>
            {
                format!("{key}={}{cmd}", root.display())
            }
            _ => line.to_string(),
        };
        rooted.push_str(&line);
        rooted.push('\n');
    }
    assert!(rooted.contains(&format!("ExecStart={}/{DEB_BIN} ", root.display())));
    let dir = TempDir::new("unit");
    let path = dir.write("splitter.service", &rooted);
    let out = run(Command::new(systemd_analyze)
        .args(["verify", "--man=no"])
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0"));
    let complaints: Vec<String> = text(&out.stderr)
        .lines()
        .chain(text(&out.stdout).lines())
        .filter(|l| l.contains("splitter.service"))
        .map(String::from)
        .collect();
    assert!(
        out.status.success() && complaints.is_empty(),
        "systemd-analyze verify of the installed unit: {}",
        complaints.join("\n")
    );
}

#[test]
#[ignore = "needs dpkg-deb, dpkg-shlibdeps (dpkg-dev), systemd-analyze, systemd-sysusers"]
fn deb_holds_the_install_files_at_package_paths() {
    let dpkg_deb = require_tool("dpkg-deb");
    require_tool("dpkg-shlibdeps");
    let deb = deb();

    // The files, their modes and owners, as `dpkg-deb -c` lists them: exactly these.
    let listing = ok(Command::new(&dpkg_deb).arg("-c").arg(deb));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        let (perms, owner, path) = (cols[0], cols[1], cols[5]);
        assert_eq!(owner, "root/root", "{line}");
        if perms.starts_with('d') {
            assert_eq!(perms, "drwxr-xr-x", "{line}");
        } else {
            files.insert(path.trim_start_matches("./").to_string(), perms.to_string());
        }
    }
    let expected: BTreeMap<String, String> = [
        (DEB_BIN.to_string(), "-rwxr-xr-x"),
        (DEB_UNIT.to_string(), "-rw-r--r--"),
        (DEB_SYSUSERS.to_string(), "-rw-r--r--"),
        (DEB_CONFIG.to_string(), "-rw-r--r--"),
        (format!("{DEB_DOC}/README.md"), "-rw-r--r--"),
        (format!("{DEB_DOC}/tuning.md"), "-rw-r--r--"),
        (format!("{DEB_DOC}/haproxy.cfg"), "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p, m.to_string()))
    .collect();
    assert_eq!(files, expected, "dpkg-deb -c:\n{listing}");

    // Control: the workspace's version, the libraries dpkg-shlibdeps found, what the maintainer
    // scripts and the unit run besides.
    let field = |name: &str| ok(Command::new(&dpkg_deb).arg("-f").arg(deb).arg(name));
    assert_eq!(field("Package").trim(), "splitter");
    assert_eq!(field("Version").trim(), env!("CARGO_PKG_VERSION"));
    let depends = field("Depends");
    for dep in ["libc6 (>= ", "passwd"] {
        assert!(depends.contains(dep), "Depends: {depends}");
    }
    assert!(
        !depends.contains("procps"),
        "the unit runs no /bin/kill: {depends}"
    );
    let control = TempDir::new("control");
    ok(Command::new(&dpkg_deb)
        .arg("-e")
        .arg(deb)
        .arg(&control.path));
    assert_eq!(
        read(&control.path.join("conffiles")),
        format!("/{DEB_CONFIG}\n")
    );
    let md5sums = read(&control.path.join("md5sums"));
    assert!(md5sums.contains(&format!("  {DEB_BIN}\n")), "{md5sums}");
    assert!(
        !md5sums.contains(DEB_CONFIG),
        "conffiles have no md5sums line"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path.join(script);
        assert_eq!(mode(&path), 0o755, "{script}");
        let body = read(&path);
        assert!(
            !body.contains('@'),
            "{script} has a placeholder left:\n{body}"
        );
        ok(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = read(&control.path.join("postinst"));
    assert!(postinst.contains(&format!("systemd-sysusers /{DEB_SYSUSERS}")));
    assert!(!postinst.contains("enable splitter") && !postinst.contains("invoke start"));

    // The contents: the files of `cargo xtask install`, with the package's paths in them.
    let tree = TempDir::new("deb-tree");
    let root = &tree.path;
    ok(Command::new(&dpkg_deb).arg("-x").arg(deb).arg(root));
    assert_eq!(
        std::fs::read(root.join(DEB_BIN)).unwrap(),
        std::fs::read(SPLITTER.path()).unwrap()
    );
    for doc in ["tuning.md", "haproxy.cfg"] {
        let shipped = read(&repo_path("infra").join(doc));
        assert_eq!(read(&root.join(DEB_DOC).join(doc)), shipped, "{doc}");
    }
    assert_eq!(
        read(&root.join(DEB_DOC).join("README.md")),
        read(&repo_path("README.md"))
    );
    // Only comments may differ from the shipped default (they name the package, not xtask).
    let config: toml::Value = toml::from_str(&read(&root.join(DEB_CONFIG))).unwrap();
    let shipped: toml::Value = toml::from_str(&read(&repo_path("infra/splitter.toml"))).unwrap();
    assert_eq!(config, shipped);

    let unit = read(&root.join(DEB_UNIT));
    let sysusers = read(&root.join(DEB_SYSUSERS));
    for (name, file) in [("unit", &unit), ("sysusers", &sysusers)] {
        assert!(
            !file.contains("/usr/local/"),
            "the packaged {name} names /usr/local:\n{file}"
        );
    }
    let s = unit_service(&unit);
    let config_arg = format!("-c /{DEB_CONFIG}");
    assert_eq!(s["ExecStart"], [format!("/{DEB_BIN} run {config_arg}")]);
    assert_eq!(
        s["ExecStartPre"],
        [format!("/{DEB_BIN} check {config_arg}")]
    );
    assert_eq!(
        s["ExecReload"],
        [format!("/{DEB_BIN} reload {config_arg} --pid $MAINPID")]
    );
    let doc = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file:///"))
        .expect("a Documentation= file");
    assert!(
        root.join(doc).is_file(),
        "Documentation= {doc} is not in the package"
    );
    // The same unit as infra's, setting for setting, but for those paths.
    let infra = read(&repo_path("infra/splitter.service"))
        .replace("/usr/local/bin/", "/usr/bin/")
        .replace("/usr/local/share/doc/", "/usr/share/doc/");
    assert_eq!(settings(&unit), settings(&infra));
    verify_unit(root);

    // The sysusers.d entry makes the user the unit runs as (postinst's path with systemd).
    let sysusers_bin = require_tool("systemd-sysusers");
    ok(Command::new(sysusers_bin)
        .arg(format!("--root={}", root.display()))
        .arg(root.join(DEB_SYSUSERS)));
    let passwd = read(&root.join("etc/passwd"));
    let user = passwd
        .lines()
        .find(|l| l.starts_with("splitter:"))
        .unwrap_or_else(|| panic!("no splitter user made: {passwd}"));
    assert!(user.ends_with(":/usr/sbin/nologin"), "{user}");
    assert_eq!(s["User"], ["splitter"]);
}

/// Runs commands inside a Debian root with `chroot`, in a clean environment.
struct Chroot<'a> {
    root: &'a Path,
}

impl Chroot<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(self.root)
            .args(args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("LANG", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Output {
        let out = run(&mut self.cmd(args));
        assert!(
            out.status.success(),
            "chroot {args:?}: {}\n{}{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// `dpkg-query`'s status of the package: "install ok installed", "", ...
    fn status(&self) -> String {
        let out = run(&mut self.cmd(&["dpkg-query", "-W", "-f", "${Status}", "splitter"]));
        text(&out.stdout)
    }
}

/// `name`'s entry in the root's `/etc/passwd` (or `/etc/group`), split at the colons.
fn entry(root: &Path, file: &str, name: &str) -> Option<Vec<String>> {
    read(&root.join("etc").join(file))
        .lines()
        .map(|l| l.split(':').map(String::from).collect::<Vec<_>>())
        .find(|f| f[0] == name)
}

#[test]
#[ignore = "needs root, dpkg-deb, dpkg-shlibdeps, debootstrap and the Debian mirror"]
fn deb_installs_and_starts_on_a_fresh_debian_12() {
    require_root("chroot, and the user the package creates inside the root");
    let debootstrap = require_tool("debootstrap");
    for tool in ["unshare", "nsenter", "ip", "dpkg-deb"] {
        require_tool(tool);
    }
    let deb = deb();
    let dir = TempDir::new("debian12");
    let root = dir.path.join("root");
    let start = Instant::now();
    // minbase: Essential and Priority: required packages, which is what a package may assume
    // without depending on it (dpkg -i does not fetch dependencies).
    let mirror = std::env::var("SPLITTER_DEBIAN_MIRROR")
        .unwrap_or_else(|_| "http://deb.debian.org/debian".to_string());
    ok(Command::new(debootstrap)
        .args(["--variant=minbase", "bookworm"])
        .arg(&root)
        .arg(&mirror));
    eprintln!("debootstrap: {:.0?}", start.elapsed());
    let c = Chroot { root: &root };
    assert!(
        !c.path("usr/bin/systemctl").exists(),
        "minbase has no systemd"
    );

    // Install.
    std::fs::copy(deb, c.path("tmp/splitter.deb")).unwrap();
    let install = c.ok(&["dpkg", "-i", "/tmp/splitter.deb"]);
    assert_eq!(c.status(), "install ok installed");
    assert!(
        !text(&install.stderr).contains("warning"),
        "{}",
        text(&install.stderr)
    );
    assert_eq!(mode(&c.path(DEB_BIN)), 0o755);
    assert_eq!(mode(&c.path(DEB_CONFIG)), 0o644);

    // The user the unit runs as, made without systemd-sysusers (minbase has none): useradd.
    let user = entry(&root, "passwd", "splitter").expect("postinst made the splitter user");
    let uid: u32 = user[2].parse().unwrap();
    let gid: u32 = user[3].parse().unwrap();
    assert!(uid < 1000, "a system user: {user:?}");
    assert_eq!(user[6], "/usr/sbin/nologin");
    assert_eq!(
        entry(&root, "group", "splitter").expect("its group")[2],
        user[3]
    );

    // The unit as installed: it verifies, and every program it runs is in the root.
    let unit = read(&c.path(DEB_UNIT));
    for program in exec_programs(&unit) {
        let path = c.path(&program);
        assert!(
            path.is_file() && mode(&path) & 0o111 != 0,
            "the unit runs {program}, which a Debian 12 with the package's dependencies lacks"
        );
    }
    verify_unit(&root);
    let s = unit_service(&unit);
    assert_eq!(s["User"], ["splitter"]);
    assert_eq!(s["Type"], ["notify"]);

    // Start it as systemd would: ExecStartPre, then ExecStart as User= with a notify socket,
    // until READY=1; it serves; SIGTERM stops it with STOPPING=1 and exit 0. Its own network
    // namespace keeps the shipped config's fixed ports off this machine's.
    let userspec = format!("--userspec={uid}:{gid}");
    let argv =
        |key: &str| -> Vec<String> { s[key][0].split_whitespace().map(String::from).collect() };
    let pre = argv("ExecStartPre");
    let mut args = vec!["chroot", &userspec, root.to_str().unwrap()];
    args.extend(pre.iter().map(String::as_str));
    ok(Command::new(args[0]).args(&args[1..]));

    let notify_path = c.path("run/splitter-test-notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify.set_read_timeout(Some(READY_TIMEOUT)).unwrap();
    let recv = |want: &str| {
        let mut buf = [0u8; 4096];
        loop {
            let n = notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} on the notify socket: {e}"));
            if text(&buf[..n]).lines().any(|l| l == want) {
                return;
            }
        }
    };
    let started = Instant::now();
    let (mut proc, log) = spawn_logged(
        Command::new("unshare")
            .args(["--net", "--", "sh", "-c"])
            .arg(r#"ip link set lo up && exec chroot "$@""#)
            .arg("sh")
            .arg(&userspec)
            .arg(&root)
            .args(argv("ExecStart"))
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("NOTIFY_SOCKET", "/run/splitter-test-notify"),
    );
    recv("READY=1");
    eprintln!("READY=1 after {:.0?}", started.elapsed());

    let config: toml::Value = toml::from_str(&read(&c.path(DEB_CONFIG))).unwrap();
    let port = |key: &str| -> String {
        let addr = config[key].as_str().unwrap();
        addr.rsplit_once(':').unwrap().1.to_string()
    };
    let body = r#"{"id":"1"}"#;
    let probe = format!(
        r#"exec 3<>/dev/tcp/127.0.0.1/{admin} && printf 'GET /healthz HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n' >&3 && cat <&3 && echo && exec 3<>/dev/tcp/127.0.0.1/{listen} && printf 'POST /fast HTTP/1.1\r\nHost: s\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}' >&3 && cat <&3"#,
        admin = port("admin_listen"),
        listen = port("listen"),
        len = body.len(),
    );
    let answers = ok(Command::new("nsenter")
        .arg(format!("--target={}", proc.child.id()))
        .args(["--net", "--", "bash", "-c", &probe]));
    let answers: Vec<&str> = answers.split("HTTP/1.1 ").skip(1).collect();
    assert!(
        answers[0].starts_with("200 ") && answers[0].contains("\r\n\r\nok"),
        "{answers:?}"
    );
    // Both shipped placeholder backends are absent in the namespace: refused at once, 204.
    assert!(
        answers[1].starts_with("204 "),
        "{answers:?}\n{}",
        log.text()
    );

    proc.signal(libc::SIGTERM);
    recv("STOPPING=1");
    let status = proc.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "SIGTERM: {status:?}\n{}",
        log.text()
    );

    // A unit in /etc/systemd/system (what `cargo xtask install` leaves) overrides the package's:
    // installing again says so.
    let local_unit = c.path("etc/systemd/system/splitter.service");
    std::fs::write(
        &local_unit,
        "[Service]\nExecStart=/usr/local/bin/splitter\n",
    )
    .unwrap();
    let again = c.ok(&["dpkg", "-i", "/tmp/splitter.deb"]);
    let warning = "overrides this package's /lib/systemd/system/splitter.service";
    assert!(
        text(&again.stderr).contains(warning),
        "{}",
        text(&again.stderr)
    );
    std::fs::remove_file(&local_unit).unwrap();

    // An upgrade (the same version again) keeps the operator's configuration and enablement.
    let edited = format!("{}\n# edited by the operator\n", read(&c.path(DEB_CONFIG)));
    std::fs::write(c.path(DEB_CONFIG), &edited).unwrap();
    let wants = c.path("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).unwrap();
    let enabled = wants.join("splitter.service");
    // What `systemctl enable splitter` makes (minbase has no systemctl).
    std::os::unix::fs::symlink(format!("/{DEB_UNIT}"), &enabled).unwrap();
    let upgrade = c.ok(&["dpkg", "-i", "/tmp/splitter.deb"]);
    assert!(
        !text(&upgrade.stderr).contains("warning"),
        "{}",
        text(&upgrade.stderr)
    );
    assert_eq!(read(&c.path(DEB_CONFIG)), edited);
    assert!(enabled.symlink_metadata().is_ok());
    assert_eq!(
        entry(&root, "passwd", "splitter").unwrap()[2],
        uid.to_string()
    );

    // Remove: the program and the unit go, the configuration and the user stay.
    c.ok(&["dpkg", "--remove", "splitter"]);
    assert!(!c.path(DEB_BIN).exists() && !c.path(DEB_UNIT).exists());
    assert_eq!(read(&c.path(DEB_CONFIG)), edited);
    assert_eq!(c.status(), "deinstall ok config-files");

    // Purge: the configuration and the enablement link go too; the user stays (Debian practice).
    c.ok(&["dpkg", "--purge", "splitter"]);
    assert!(
        !c.path("etc/splitter").exists(),
        "purge leaves /etc/splitter"
    );
    assert!(
        enabled.symlink_metadata().is_err(),
        "purge leaves the enablement link"
    );
    assert!(entry(&root, "passwd", "splitter").is_some());
    assert_eq!(c.status(), "");
    eprintln!("whole test: {:.0?}", start.elapsed());
}

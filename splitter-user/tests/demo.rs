//! `splitter demo` next to a running instance: the demo steers with eBPF where it can, under a
//! pin directory of its own, so the map a production instance pinned under the default
//! directory (what `splitter top` and `bpftool` read) is left alone.

mod common;

use std::path::Path;
use std::time::Duration;

use common::bpftool::PinDir;
use common::{bid, config, SPLITTER};

/// The id of the map pinned at `pin`, as `bpftool map show pinned` gives it.
fn map_id(pin: &Path) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("bpftool's JSON");
    v["id"].to_string()
}

#[test]
#[ignore = "needs root (CAP_BPF, CAP_NET_ADMIN), bpftool and a build with the eBPF object"]
fn the_demo_leaves_a_running_instances_pins_alone() {
    if cfg!(splitter_no_ebpf) {
        panic!("this build has no eBPF object: run `cargo xtask setup-ebpf`, then rebuild");
    }
    common::require_root("loading eBPF needs CAP_BPF and CAP_NET_ADMIN");
    common::require_tool("bpftool");
    // The default directory, the demo's own default: where a production instance pins (and
    // where the other suites' splitters, in `auto` mode as root, pin too and may have left a pin
    // when killed: the instance below replaces it).
    let default = Path::new("/sys/fs/bpf/splitter");
    let pins = PinDir {
        path: default.to_path_buf(),
    };
    let backend = SPLITTER.mock_backend("a", &["--price", "1"]);
    let mut cfg = config("workers = 2", "", &[("a", backend.addr)], &[("/", 450)]);
    cfg.push_str(&format!(
        "[steering]\nmode = \"ebpf\"\npin_dir = \"{}\"\n",
        default.display()
    ));
    let s = SPLITTER.run(&cfg);
    let before = map_id(&pins.map());

    let (status, out, err) = SPLITTER.cli(
        &["demo", "--seconds", "1", "--connections", "4"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "demo failed: {out}\n{err}");

    assert!(
        pins.map().exists(),
        "the demo removed the running instance's pin"
    );
    assert_eq!(map_id(&pins.map()), before, "the pin is another map now");
    s.request(&bid("/x", "after-demo")).assert_won("after-demo");
    let litter: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("splitter-demo-")
        })
        .map(|e| e.path())
        .collect();
    assert!(litter.is_empty(), "the demo left {litter:?}");
}

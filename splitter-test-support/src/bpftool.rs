//! The operator's view of eBPF steering: the per-worker metrics map pinned under the BPF
//! filesystem, as `bpftool -j map dump pinned` prints it, and a pin directory of one's own.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _};

/// A pin directory (`steering.pin_dir`) under the bpffs, unique to this process and `tag`;
/// what the splitter leaves in it (the map pin is removed on exit, the directory kept) is
/// removed on drop, also when a test panics.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> PinDir {
        PinDir {
            path: PathBuf::from(format!("/sys/fs/bpf/splitter-{tag}-{}", std::process::id())),
        }
    }

    /// Where the splitter pins its metrics map.
    pub fn map(&self) -> PathBuf {
        self.path.join(splitter_common::METRICS_MAP)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.map());
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// One worker's figures in the metrics map, by the field names BTF gives bpftool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCell {
    pub requests: u64,
    pub in_flight: u64,
    pub connections: u64,
    pub accepted: u64,
}

/// `bpftool -j map dump pinned <map>`: one cell per worker, by worker index.
pub fn dump_pinned(map: &Path) -> anyhow::Result<Vec<WorkerCell>> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "pinned"])
        .arg(map)
        .output()
        .context("running bpftool (Debian's `bpftool` package)")?;
    ensure!(
        out.status.success(),
        "bpftool map dump pinned {}: {}",
        map.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    parse_dump(&out.stdout).with_context(|| format!("bpftool's dump of {}", map.display()))
}

/// The cells of a dump, by key. With BTF, bpftool gives each entry a `formatted` key and value,
/// the value by field name; without it there are only bytes, which is an error here.
fn parse_dump(json: &[u8]) -> anyhow::Result<Vec<WorkerCell>> {
    let entries: Vec<serde_json::Value> = serde_json::from_slice(json)?;
    let mut cells = entries
        .iter()
        .map(|e| {
            let f = &e["formatted"];
            let field = |name: &str| {
                f["value"][name]
                    .as_u64()
                    .with_context(|| format!("no field {name} in {e}"))
            };
            let key = f["key"]
                .as_u64()
                .with_context(|| format!("no numeric key in {e}"))?;
            let cell = WorkerCell {
                requests: field("requests")?,
                in_flight: field("in_flight")?,
                connections: field("connections")?,
                accepted: field("accepted")?,
            };
            Ok((key, cell))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    cells.sort_by_key(|&(k, _)| k);
    Ok(cells.into_iter().map(|(_, c)| c).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_by_key() {
        let json = br#"[
            {"key":["0x01"],"value":["0x00"],"formatted":{"key":1,"value":{"requests":7,"in_flight":0,"connections":4,"accepted":2,"statuses":[1,2]}}},
            {"key":["0x00"],"value":["0x00"],"formatted":{"key":0,"value":{"requests":5,"in_flight":1,"connections":3,"accepted":3,"statuses":[0,0]}}}
        ]"#;
        assert_eq!(
            parse_dump(json).unwrap(),
            [
                WorkerCell {
                    requests: 5,
                    in_flight: 1,
                    connections: 3,
                    accepted: 3
                },
                WorkerCell {
                    requests: 7,
                    in_flight: 0,
                    connections: 4,
                    accepted: 2
                }
            ]
        );
    }

    #[test]
    fn a_dump_without_btf_or_a_field_is_an_error() {
        let no_btf = parse_dump(br#"[{"key":["0x00"],"value":["0x00"]}]"#).unwrap_err();
        assert!(no_btf.to_string().contains("no numeric key"), "{no_btf}");
        let json =
            br#"[{"formatted":{"key":0,"value":{"requests":1,"in_flight":0,"accepted":0}}}]"#;
        let missing = parse_dump(json).unwrap_err();
        assert!(
            missing.to_string().contains("no field connections"),
            "{missing}"
        );
        assert!(parse_dump(b"not json").is_err());
    }
}

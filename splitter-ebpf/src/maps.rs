//! The program's maps and load-time constant. Userspace finds each by the name in
//! `splitter-common` ([`METRICS_MAP`](splitter_common::METRICS_MAP),
//! [`SOCKETS_MAP`](splitter_common::SOCKETS_MAP), [`WORKERS_GLOBAL`](splitter_common::WORKERS_GLOBAL)):
//! a static's name is its map's name, so each is spelled exactly like its constant.
//!
//! Both maps are declared with room for [`MAX_WORKERS`]; the loader shrinks them to the real
//! worker count before creating them, so `bpftool` shows one entry per worker.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, ReusePortSockArray},
    macros::btf_map,
    Global,
};
use splitter_common::{WorkerMetrics, MAX_WORKERS};

/// One [`WorkerMetrics`] per worker, key = worker index. `BPF_F_MMAPABLE` so the daemon maps the
/// values into its address space and the workers bump them with plain stores; this program
/// reads each worker's load from them. A BTF map, so `bpftool map dump` prints field names.
#[btf_map]
pub static WORKER_METRICS: Array<WorkerMetrics, MAX_WORKERS, { BPF_F_MMAPABLE as usize }> =
    Array::new();

/// The workers' listeners, key = worker index: where `bpf_sk_select_reuseport` sends a SYN.
#[btf_map]
pub static WORKER_SOCKETS: ReusePortSockArray<MAX_WORKERS> = ReusePortSockArray::new();

/// Number of workers, written by the loader (`.rodata`, so the verifier sees a constant).
#[unsafe(no_mangle)]
pub static WORKERS: Global<u32> = Global::new(0);

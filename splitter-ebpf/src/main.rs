//! splitter's eBPF side: an `sk_reuseport` program that steers each new connection to the
//! least-loaded worker.
//!
//! The workers' listeners form one `SO_REUSEPORT` group. Without this program the kernel picks a
//! listener by hashing the 4-tuple, blind to how busy each worker is: one worker can queue a
//! burst of slow requests while another idles. Here, the kernel runs [`steer`] for every SYN the
//! group receives; it reads each worker's in-flight requests and open connections from the
//! metrics map the workers already write (no second copy of the load to keep in sync) and
//! selects that worker's listener. The policy itself, [`least_loaded`], lives in
//! `splitter-common`, where host unit tests pin it down.
//!
//! On the host (clippy, `cargo test --workspace`) this is an empty binary: the program only
//! exists for the BPF target, built by `splitter-user/build.rs`.
#![cfg_attr(target_arch = "bpf", no_std, no_main)]
// `atomic_xadd`: the BPF target has atomic add but no compare-and-swap, so `AtomicU64::fetch_add`
// does not compile there.
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

mod maps;

use aya_ebpf::{
    bindings::sk_action::SK_PASS, cty::c_long, helpers::bpf_get_smp_processor_id,
    macros::sk_reuseport, programs::SkReuseportContext,
};
use splitter_common::{least_loaded, window_start, Load};

use maps::{WORKERS, WORKER_METRICS, WORKER_SOCKETS};

/// `ENOENT`: no worker's load could be read (no workers configured).
const NO_WORKER: c_long = -2;

/// Entry point, once per new connection. Always `SK_PASS`: with a listener selected the
/// connection goes there; without one (an error below: no worker, or the chosen listener just
/// closed while draining) the kernel falls back to its own hash, as plain `SO_REUSEPORT` would.
/// `SK_DROP` would refuse a client the other workers could serve.
#[sk_reuseport]
pub fn steer(ctx: SkReuseportContext) -> u32 {
    match try_steer(&ctx) {
        Ok(()) => SK_PASS,
        Err(_) => SK_PASS,
    }
}

fn try_steer(ctx: &SkReuseportContext) -> Result<(), c_long> {
    // SAFETY: a helper without arguments, allowed in every program type.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let workers = WORKERS.load();
    let first = window_start(workers, cpu, ctx.hash());
    let worker =
        least_loaded(workers, first, |i| WORKER_METRICS.get(i).map(Load::of)).ok_or(NO_WORKER)?;
    WORKER_SOCKETS.select_reuseport(ctx, worker)?;
    // Counted at once: the worker's own gauges move only when it accepts, and the next SYN,
    // maybe a microsecond later, must see this one (see `Load::of`).
    if let Some(cell) = WORKER_METRICS.get_ptr_mut(worker) {
        // SAFETY: a live value of the array map; `steered` is written only here, atomically.
        unsafe { add_one(&raw mut (*cell).steered) };
    }
    Ok(())
}

/// Atomically adds 1 to a counter other CPUs may bump at the same time.
#[inline(always)]
unsafe fn add_one(word: *mut u64) {
    #[cfg(target_arch = "bpf")]
    // SAFETY: the caller's pointer is valid and aligned.
    unsafe {
        core::intrinsics::atomic_xadd::<u64, u64, { core::intrinsics::AtomicOrdering::Relaxed }>(
            word, 1,
        );
    }
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: as above (the host build is only type-checked, never loaded).
    unsafe {
        core::sync::atomic::AtomicU64::from_ptr(word)
            .fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable path to here, so a loaded program never panics.
    loop {}
}

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible licence; this
/// program calls none, but declares one like aya's own programs do, so adding one later is safe.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

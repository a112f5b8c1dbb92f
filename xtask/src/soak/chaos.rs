//! The chaos: what a backend can be made to do ([`Mode`]), the seeded schedule of who is made
//! to do what and when ([`schedule`]), and the backends themselves, each a `splitter
//! mock-backend` process on a fixed loopback port that a change of mode replaces ([`Backends`]).
//!
//! Every fault is a mock-backend flag: a separate process, like a real backend, whose CPU the
//! soak can keep from competing with the splitter's (faulty backends run at nice 19: a hostile
//! backend is someone else's machine, its CPU is not this one's), restarted on the same port
//! the splitter's configuration names. Changing a backend's mode kills its process (SIGKILL)
//! and starts another: its connections are reset, as in a crash and redeploy.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;

use crate::bench::deploy::{self, Env, MockSpec};
use crate::bench::proc::{self, Cpus, Proc};
use crate::soak::report::Outcomes;

/// What every backend answers with when healthy: about 2 KB of JSON at a random price (so the
/// winner changes from request to request), after 1 to 20 ms.
const HEALTHY: &[&str] = &[
    "--body-bytes",
    "2048",
    "--price-range",
    "0.1..10",
    "--delay-ms",
    "1..20",
];
/// Priority of a backend in a faulty mode.
const FAULTY_NICE: i32 = 19;
/// How long a restarted backend may take to bind its port again.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Where the backends' fixed ports are looked for: below the usual ephemeral range, so no
/// outgoing connection can take a port while its backend is down.
const PORT_SEARCH: std::ops::Range<u16> = 21_000..30_000;

/// The hostile behaviours, one per cycle in turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hostile {
    /// A 16 KiB body in 1-byte chunks, a write each: about 96 KiB on the wire, over the
    /// splitter's `max_response_bytes`, arriving a few bytes at a time.
    Trickle,
    /// A status line, then header lines without end.
    EndlessHead,
    /// A chunked JSON body without end.
    EndlessBody,
    /// Half 200s whose body is not JSON, half bytes that are not HTTP, then a close.
    Garbage,
    /// Each reply cut after 1000 bytes (mid-body) by a reset.
    ResetPartial,
    /// Good replies, but the keep-alive connection is closed right after each, unannounced.
    CloseSilently,
}

impl Hostile {
    pub const ALL: [Hostile; 6] = [
        Hostile::Trickle,
        Hostile::EndlessHead,
        Hostile::EndlessBody,
        Hostile::Garbage,
        Hostile::ResetPartial,
        Hostile::CloseSilently,
    ];
}

/// What a backend does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    Healthy,
    /// Killed (SIGKILL): connections reset, then refused until it is back.
    Down,
    /// Accepts and reads, never answers.
    Blackhole,
    /// Answers after 150 to 300 ms, past the deadline.
    Slow,
    Hostile(Hostile),
}

impl Mode {
    /// `splitter mock-backend` flags, besides `--listen` and `--name`.
    pub fn flags(self) -> Vec<&'static str> {
        let with = |extra: &[&'static str]| [HEALTHY, extra].concat();
        match self {
            Mode::Healthy | Mode::Down => HEALTHY.to_vec(),
            Mode::Blackhole => vec!["--blackhole"],
            Mode::Slow => vec![
                "--body-bytes",
                "2048",
                "--price-range",
                "0.1..10",
                "--delay-ms",
                "150..300",
            ],
            Mode::Hostile(h) => match h {
                Hostile::Trickle => vec![
                    "--chunk-bytes",
                    "1",
                    "--body-bytes",
                    "16384",
                    "--price-range",
                    "0.1..10",
                ],
                Hostile::EndlessHead => vec!["--endless-head"],
                Hostile::EndlessBody => vec!["--endless-body"],
                Hostile::Garbage => with(&["--broken-share", "1"]),
                Hostile::ResetPartial => with(&["--reset-after-bytes", "1000"]),
                Hostile::CloseSilently => with(&["--close-silently"]),
            },
        }
    }

    /// A short name for logs, the record and the chart.
    pub fn name(self) -> String {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::String(s)) => s,
            Ok(serde_json::Value::Object(o)) => o
                .into_iter()
                .map(|(k, v)| format!("{k} {}", v.as_str().unwrap_or("?")))
                .collect(),
            _ => format!("{self:?}"),
        }
    }
}

/// One change of one backend.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    /// Seconds since the load started.
    pub at_s: f64,
    /// Index into the backends.
    pub backend: usize,
    pub mode: Mode,
    /// As made: the backend's outcomes as the splitter had counted them just before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<Outcomes>,
}

/// The shape of a chaos cycle, in seconds from its start. One backend each is killed,
/// blackholed, slowed and made hostile, a second apart; each is restored six seconds later
/// (two after the last fault, the first one comes back), then all are healthy until the next
/// cycle: the calm in which memory and descriptors must come back to the steady state.
pub const CYCLE_S: u32 = 24;
const FAULTS: [(u32, u32); 4] = [(0, 9), (1, 11), (2, 13), (3, 15)];
/// Seconds of calm at the end of a cycle that the resource checks read (the last restore is at
/// 15 s: 2 s are left to the probes that bring ejected backends back).
pub const CALM_S: u32 = 7;
/// Seconds of plain load before the first cycle.
pub const WARMUP_S: u32 = 12;

/// The schedule of a run of `run_s` seconds with `backends` backends: full cycles only, each
/// followed by its calm, so the run always ends calm. `seed` picks which backend takes which
/// fault in each cycle (a seeded shuffle) and the order of the hostile behaviours.
pub fn schedule(run_s: u32, backends: usize, seed: u64) -> Vec<Event> {
    let mut rng = SplitMix64(seed);
    let mut hostile = Hostile::ALL;
    shuffle(&mut hostile, &mut rng);
    let mut events = Vec::new();
    for cycle in 0..cycles(run_s) {
        let start = WARMUP_S + cycle * CYCLE_S;
        let mut order: Vec<usize> = (0..backends).collect();
        shuffle(&mut order, &mut rng);
        let faults = [
            Mode::Down,
            Mode::Blackhole,
            Mode::Slow,
            Mode::Hostile(hostile[cycle as usize % hostile.len()]),
        ];
        for ((&backend, mode), (on, off)) in order.iter().zip(faults).zip(FAULTS) {
            for (at, mode) in [(on, mode), (off, Mode::Healthy)] {
                events.push(Event {
                    at_s: f64::from(start + at),
                    backend,
                    mode,
                    counts: None,
                });
            }
        }
    }
    events.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    events
}

/// Full cycles in a run of `run_s` seconds.
pub fn cycles(run_s: u32) -> u32 {
    run_s.saturating_sub(WARMUP_S) / CYCLE_S
}

/// The calm window `[from, to)` of `cycle` (its last `CALM_S` seconds), in seconds of the run.
pub fn calm_window(cycle: u32) -> (u32, u32) {
    let end = WARMUP_S + (cycle + 1) * CYCLE_S;
    (end - CALM_S, end)
}

/// SplitMix64: a few lines of deterministic randomness, the same on every machine and version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Fisher-Yates.
fn shuffle<T>(items: &mut [T], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// One backend: its name, its fixed address, and its process while it runs.
struct Slot {
    name: String,
    addr: SocketAddr,
    proc: Option<Proc>,
    mode: Mode,
}

/// The backends of a soak.
pub struct Backends {
    slots: Vec<Slot>,
}

impl Backends {
    /// Starts `count` healthy backends, `a`, `b`, ..., on fixed free ports.
    pub fn start(env: &Env, count: usize) -> anyhow::Result<Backends> {
        let ports = fixed_ports(count)?;
        let mut slots = Vec::with_capacity(count);
        for (i, port) in ports.into_iter().enumerate() {
            let name = ((b'a' + i as u8) as char).to_string();
            // A fresh log for this run; restarts append to it.
            let _ = std::fs::remove_file(env.work_dir.join(format!("mock-{name}.log")));
            let mut slot = Slot {
                name,
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                proc: None,
                mode: Mode::Down,
            };
            slot.set(env, Mode::Healthy)?;
            slots.push(slot);
        }
        Ok(Backends { slots })
    }

    /// Names and addresses, for the splitter's configuration.
    pub fn named_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.slots
            .iter()
            .map(|s| (s.name.clone(), s.addr))
            .collect()
    }

    /// Puts backend `backend` in `mode`: killed for `Down`, else its process replaced by one in
    /// `mode` on the same port.
    pub fn set(&mut self, env: &Env, backend: usize, mode: Mode) -> anyhow::Result<()> {
        self.slots[backend].set(env, mode)
    }

    /// The PIDs of the backends running now, with their names.
    pub fn pids(&self) -> Vec<(u32, &str)> {
        self.slots
            .iter()
            .filter_map(|s| Some((s.proc.as_ref()?.pid(), s.name.as_str())))
            .collect()
    }

    /// Fails if a backend that should run has died.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.slots
            .iter_mut()
            .filter_map(|s| s.proc.as_mut())
            .try_for_each(Proc::ensure_running)
    }
}

impl Slot {
    fn set(&mut self, env: &Env, mode: Mode) -> anyhow::Result<()> {
        if let Some(p) = self.proc.take() {
            // SIGKILL either way: a kill is the fault, and a change of mode need not wait for
            // the old process to wind down (the port is reusable at once: SO_REUSEADDR).
            p.kill()?;
        }
        self.mode = mode;
        if mode == Mode::Down {
            return Ok(());
        }
        let flags = mode.flags();
        let spec = MockSpec {
            name: &self.name,
            listen: self.addr,
            flags: &flags,
            cpus: Cpus::Any,
            nice: (mode != Mode::Healthy).then_some(FAULTY_NICE),
            append_log: true,
        };
        let end = std::time::Instant::now() + REBIND_TIMEOUT;
        loop {
            match deploy::spawn_mock(env, &spec) {
                Ok((p, addr)) if addr == self.addr => {
                    self.proc = Some(p);
                    return Ok(());
                }
                Ok((_, addr)) => bail!("backend {} bound {addr}, not {}", self.name, self.addr),
                // The port may still be held for a moment: try again, within bounds.
                Err(e) if std::time::Instant::now() < end => {
                    eprintln!("backend {} ({}): {e:#}; retrying", self.name, mode.name());
                    proc::sleep(Duration::from_millis(100))?;
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("restarting backend {} on {}", self.name, self.addr)
                    })
                }
            }
        }
    }
}

/// `count` loopback ports that are free now, below the ephemeral range.
fn fixed_ports(count: usize) -> anyhow::Result<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    // Start somewhere that depends on this process, so two soaks on one machine differ.
    let span = PORT_SEARCH.end - PORT_SEARCH.start;
    let offset = (std::process::id() % u32::from(span)) as u16;
    let mut ports = Vec::with_capacity(count);
    for i in 0..span {
        let port = PORT_SEARCH.start + (offset + i) % span;
        if port >= ephemeral_low {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
            if ports.len() == count {
                return Ok(ports);
            }
        }
    }
    bail!("fewer than {count} free loopback ports in {PORT_SEARCH:?} below {ephemeral_low}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_faults_four_backends_and_restores_each() {
        let events = schedule(WARMUP_S + CYCLE_S, 5, 7);
        assert_eq!(events.len(), 8);
        let faulted: Vec<usize> = events[..4].iter().map(|e| e.backend).collect();
        let mut distinct = faulted.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{faulted:?}");
        assert_eq!(events[0].mode, Mode::Down);
        assert_eq!(events[0].at_s, f64::from(WARMUP_S));
        assert!(matches!(events[3].mode, Mode::Hostile(_)));
        for e in &events[..4] {
            let back = events[4..].iter().find(|r| r.backend == e.backend).unwrap();
            assert_eq!(back.mode, Mode::Healthy);
            assert!(back.at_s > e.at_s);
        }
        let last = events.last().unwrap().at_s;
        let (calm_from, calm_to) = calm_window(0);
        assert!(last < f64::from(calm_from));
        assert_eq!(calm_to, WARMUP_S + CYCLE_S);
    }

    #[test]
    fn the_schedule_is_seeded_and_covers_every_hostile_mode() {
        let run = WARMUP_S + 6 * CYCLE_S + 5;
        assert_eq!(cycles(run), 6);
        let a = schedule(run, 5, 1);
        assert_eq!(a, schedule(run, 5, 1));
        assert_ne!(a, schedule(run, 5, 2));
        let mut hostile: Vec<Hostile> = a
            .iter()
            .filter_map(|e| match e.mode {
                Mode::Hostile(h) => Some(h),
                _ => None,
            })
            .collect();
        hostile.sort_by_key(|h| Hostile::ALL.iter().position(|x| x == h));
        assert_eq!(hostile, Hostile::ALL);
        assert!(a.iter().all(|e| e.at_s < f64::from(run)));
    }

    #[test]
    fn modes_have_names_and_flags() {
        assert_eq!(Mode::Slow.name(), "slow");
        assert_eq!(
            Mode::Hostile(Hostile::EndlessHead).name(),
            "hostile endless-head"
        );
        assert!(Mode::Hostile(Hostile::Garbage)
            .flags()
            .ends_with(&["--broken-share", "1"]));
        assert_eq!(Mode::Blackhole.flags(), ["--blackhole"]);
    }

    #[test]
    fn no_run_too_short_for_a_cycle() {
        assert!(schedule(WARMUP_S + CYCLE_S - 1, 5, 1).is_empty());
    }
}

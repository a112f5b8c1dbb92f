//! The benchmark's child processes: started in their own process group on chosen CPUs, stopped
//! by PID when their guard drops (also on error or Ctrl-C), and measured through `/proc`.

use anyhow::{bail, ensure, Context};
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often bounded waits look at the clock, the child and the interrupt flag.
const POLL: Duration = Duration::from_millis(20);
/// How long a child has to exit after SIGTERM before it gets SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag that every wait checks, so an interrupted run
/// unwinds through the guards and stops its children instead of dying with them running.
pub fn trap_interrupts() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        if unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) }
            == libc::SIG_ERR
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Fails once the user asked the benchmark to stop.
pub fn check_interrupted() -> anyhow::Result<()> {
    ensure!(!INTERRUPTED.load(Ordering::Relaxed), "interrupted");
    Ok(())
}

/// Sleeps up to `d`, in short steps, failing as soon as the run is interrupted.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        check_interrupted()?;
        std::thread::sleep(left.min(POLL));
    }
    check_interrupted()
}

/// Where a child may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cpus {
    Any,
    Only(usize),
}

/// A running child process, stopped (SIGTERM, then SIGKILL) and reaped when dropped.
pub struct Proc {
    name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd` on `cpus`. The child gets its own process group, so a Ctrl-C at the
    /// terminal reaches only the benchmark, which then stops the child itself; and it is
    /// killed by the kernel should the benchmark die without running its guards.
    pub fn spawn(name: &str, mut cmd: Command, cpus: Cpus) -> anyhow::Result<Proc> {
        cmd.process_group(0);
        // SAFETY: the closure runs between fork and exec and makes only async-signal-safe
        // system calls; it touches no lock and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Cpus::Only(cpu) = cpus {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    let size = std::mem::size_of::<libc::cpu_set_t>();
                    if libc::sched_setaffinity(0, size, &set) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The child's stdout, once, if it was piped.
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// Fails if the child has exited (a target that dies mid-run must not be measured).
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited early: {status}", self.name),
        }
    }

    /// Waits for the child to exit, at most `limit`.
    pub fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < end,
                "{} still running after {limit:?}",
                self.name
            );
            sleep(POLL)?;
        }
    }

    /// User plus system CPU time of all the child's threads so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_cpu_ticks(&stat)
            .map(ticks_to_duration)
            .with_context(|| format!("{path}: no utime and stime"))
    }

    /// User and system CPU time, apart, of all the child's threads so far.
    pub fn user_system_time(&self) -> anyhow::Result<(Duration, Duration)> {
        let path = format!("/proc/{}/stat", self.pid());
        let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let (user, system) = parse_user_system_ticks(&stat)
            .with_context(|| format!("{path}: no utime and stime"))?;
        Ok((ticks_to_duration(user), ticks_to_duration(system)))
    }

    /// Voluntary and involuntary context switches of the child's threads so far, summed over
    /// `/proc/PID/task/*/status` (a thread that exits takes its counts with it).
    pub fn context_switches(&self) -> anyhow::Result<ContextSwitches> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut sum = ContextSwitches::default();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            // A thread may exit between the listing and the read: it is not counted.
            let Ok(status) = std::fs::read_to_string(entry?.path().join("status")) else {
                continue;
            };
            let t = parse_context_switches(&status)
                .with_context(|| format!("{dir}: no context switch counts"))?;
            sum.voluntary += t.voluntary;
            sum.involuntary += t.involuntary;
        }
        Ok(sum)
    }

    /// User plus system CPU time of each of the child's threads so far, with its name.
    pub fn thread_cpu_times(&self) -> anyhow::Result<Vec<(String, Duration)>> {
        let dir = format!("/proc/{}/task", self.pid());
        let mut threads = Vec::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
            let task = entry?.path();
            // A thread may exit between the listing and the read: it is not measured.
            let (Ok(comm), Ok(stat)) = (
                std::fs::read_to_string(task.join("comm")),
                std::fs::read_to_string(task.join("stat")),
            ) else {
                continue;
            };
            let ticks = parse_cpu_ticks(&stat)
                .with_context(|| format!("{}: no utime and stime", task.display()))?;
            threads.push((comm.trim_end().to_owned(), ticks_to_duration(ticks)));
        }
        Ok(threads)
    }

    /// Peak resident set size (`VmHWM`), in KiB.
    pub fn peak_rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmHWM")
    }

    /// Current resident set size (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        self.status_kib("VmRSS")
    }

    /// Time the child's threads have spent runnable but waiting for a CPU, so far.
    pub fn run_queue_wait(&self) -> anyhow::Result<Duration> {
        run_queue_wait(&format!("/proc/{}", self.pid()))
    }

    /// Open file descriptors: the entries of `/proc/PID/fd`.
    pub fn fd_count(&self) -> anyhow::Result<usize> {
        let dir = format!("/proc/{}/fd", self.pid());
        let entries = std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))?;
        Ok(entries.count())
    }

    /// Kills the child at once (SIGKILL, no chance to clean up) and reaps it.
    pub fn kill(mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_none() {
            self.signal(libc::SIGKILL);
            self.child
                .wait()
                .with_context(|| format!("reaping {}", self.name))?;
        }
        Ok(())
    }

    fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        parse_status_kib(&status, key).with_context(|| format!("{path}: no {key}"))
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain syscall. The child is not reaped yet (try_wait said so), so its PID
        // cannot have been reused by another process.
        unsafe { libc::kill(self.pid() as libc::pid_t, sig) };
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        self.signal(libc::SIGTERM);
        let end = Instant::now() + STOP_GRACE;
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(POLL);
        }
        eprintln!(
            "{} ignored SIGTERM for {STOP_GRACE:?}; killing it",
            self.name
        );
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Runs this program again, with the same arguments and `marker` set in its environment, in a
/// session of its own, waits for it and exits with its status. With autogroup scheduling
/// (Linux's default), a session is a scheduling group: nice values order the threads within a
/// group only, and groups share the CPUs by their own weight. The parent passes Ctrl-C on as
/// SIGTERM; the child gets SIGTERM should the parent die.
pub fn rerun_in_own_session(marker: &str) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(marker, "1");
    // SAFETY: only async-signal-safe system calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 || libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("starting the soak in its own session")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if INTERRUPTED.swap(false, Ordering::Relaxed) {
            // SAFETY: plain syscall; the child is not reaped yet, so its PID is still its own.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
        std::thread::sleep(POLL);
    };
    std::process::exit(status.code().unwrap_or(1));
}

/// Gives the scheduling group of this process's session (its autogroup) nice value `n`: a
/// negative one needs CAP_SYS_NICE, and the kernel autogroup support.
pub fn set_session_nice(n: i32) -> anyhow::Result<()> {
    std::fs::write("/proc/self/autogroup", n.to_string())
        .context("writing /proc/self/autogroup")?;
    Ok(())
}

/// Whether this process leads its session.
pub fn leads_session() -> bool {
    // SAFETY: plain syscalls.
    unsafe { libc::getsid(0) == libc::getpid() }
}

/// This thread's nice value; threads and processes started from it inherit it.
pub fn own_nice() -> i32 {
    // SAFETY: plain syscall. -1 is also a valid priority: errno tells them apart.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, 0);
        if n == -1 && *libc::__errno_location() != 0 {
            return 0;
        }
        n
    }
}

/// Sets this thread's nice value (a negative one needs CAP_SYS_NICE).
pub fn set_own_nice(n: i32) -> io::Result<()> {
    // SAFETY: plain syscall; who = 0 is the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Time the threads of the process at `proc_dir` (`/proc/PID`, `/proc/self`) have spent
/// runnable but waiting for a CPU: the sum of the second field of each `task/*/schedstat`.
pub fn run_queue_wait(proc_dir: &str) -> anyhow::Result<Duration> {
    let dir = format!("{proc_dir}/task");
    let mut ns = 0u64;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {dir}"))? {
        // A thread may exit between the listing and the read: it is not counted.
        let Ok(stat) = std::fs::read_to_string(entry?.path().join("schedstat")) else {
            continue;
        };
        ns += parse_schedstat_wait_ns(&stat).with_context(|| format!("{dir}: bad schedstat"))?;
    }
    Ok(Duration::from_nanos(ns))
}

/// The run-queue wait of a `schedstat` line: `<on cpu ns> <waiting ns> <timeslices>`.
fn parse_schedstat_wait_ns(stat: &str) -> Option<u64> {
    stat.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's CPU pressure so far: the total time, in microseconds, that some runnable task
/// waited for a CPU (`some total=` of `/proc/pressure/cpu`); `None` without PSI.
pub fn cpu_pressure_us() -> Option<u64> {
    let psi = std::fs::read_to_string("/proc/pressure/cpu").ok()?;
    parse_psi_some_total(&psi)
}

fn parse_psi_some_total(psi: &str) -> Option<u64> {
    let some = psi.lines().find(|l| l.starts_with("some "))?;
    some.split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse()
        .ok()
}

/// The machine's CPU time so far, all CPUs together (`/proc/stat`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineCpu {
    /// Running anything: user, nice, system, irq and softirq.
    pub busy: Duration,
    /// Taken by the hypervisor from this virtual machine while it had work to run.
    pub steal: Duration,
}

/// The machine's CPU time so far; `None` if `/proc/stat` cannot be read.
pub fn machine_cpu() -> Option<MachineCpu> {
    parse_machine_cpu(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_machine_cpu(stat: &str) -> Option<MachineCpu> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy = t.first()? + t.get(1)? + t.get(2)? + t.get(5)? + t.get(6)?;
    Some(MachineCpu {
        busy: ticks_to_duration(busy),
        steal: ticks_to_duration(*t.get(7)?),
    })
}

/// Each online CPU's ticks so far (`/proc/stat`, `cpuN` lines, in CPU order): running anything
/// (user, nice, system, irq, softirq) and in all (idle, iowait and steal too).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTicks {
    pub busy: u64,
    pub total: u64,
}

/// Each CPU's ticks so far; empty if `/proc/stat` cannot be read.
pub fn cpu_ticks() -> Vec<CpuTicks> {
    std::fs::read_to_string("/proc/stat")
        .map_or_else(|_| Vec::new(), |s| parse_cpu_ticks_per_cpu(&s))
}

/// How busy each CPU was between two readings of [`cpu_ticks`], in percent of its time.
pub fn busy_percent(before: &[CpuTicks], after: &[CpuTicks]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| {
            let total = a.total.saturating_sub(b.total);
            let busy = a.busy.saturating_sub(b.busy);
            if total == 0 {
                f64::NAN
            } else {
                100.0 * busy as f64 / total as f64
            }
        })
        .collect()
}

fn parse_cpu_ticks_per_cpu(stat: &str) -> Vec<CpuTicks> {
    stat.lines()
        .filter(|l| {
            l.strip_prefix("cpu")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        })
        .map_while(|line| {
            let t: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .take(8)
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            // user nice system idle iowait irq softirq steal
            Some(CpuTicks {
                busy: t.first()? + t.get(1)? + t.get(2)? + t.get(5)? + t.get(6)?,
                total: t.iter().sum(),
            })
        })
        .collect()
}

/// Every process's name and CPU time so far, by PID (those that exit meanwhile are skipped).
pub fn process_cpu_times() -> std::collections::HashMap<u32, (String, Duration)> {
    let mut all = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map_or("?", |(name, _)| name);
        if let Some(ticks) = parse_cpu_ticks(&stat) {
            all.insert(pid, (name.to_owned(), ticks_to_duration(ticks)));
        }
    }
    all
}

/// `utime + stime` in clock ticks from a `/proc/PID/stat` line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    parse_user_system_ticks(stat).map(|(utime, stime)| utime + stime)
}

/// `utime` and `stime` in clock ticks from a `/proc/PID/stat` line. Fields are counted after
/// the command name's closing parenthesis, since the name itself may hold spaces.
fn parse_user_system_ticks(stat: &str) -> Option<(u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11); // field 14 of proc(5) is utime
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Context switches of a thread or, summed, of a process's threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextSwitches {
    /// The thread gave the CPU up, waiting for something: about one per wake-up.
    pub voluntary: u64,
    /// The scheduler took the CPU from it.
    pub involuntary: u64,
}

impl ContextSwitches {
    /// What happened between `before` and `self`.
    pub fn since(self, before: ContextSwitches) -> ContextSwitches {
        ContextSwitches {
            voluntary: self.voluntary.saturating_sub(before.voluntary),
            involuntary: self.involuntary.saturating_sub(before.involuntary),
        }
    }
}

/// The `voluntary_ctxt_switches` and `nonvoluntary_ctxt_switches` of a `/proc/.../status`.
fn parse_context_switches(status: &str) -> Option<ContextSwitches> {
    let value = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(ContextSwitches {
        voluntary: value("voluntary_ctxt_switches")?,
        involuntary: value("nonvoluntary_ctxt_switches")?,
    })
}

/// The value of a `Key:   1234 kB` line of `/proc/PID/status`.
fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: plain libc call without pointers.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) as f64 }
}

/// Raises this process's open-file limit to its hard limit, which children inherit, and
/// returns it: the idle connection check holds thousands of sockets, in the benchmark and in
/// the splitter. (Raising the hard limit itself needs a privilege containers often drop.)
pub fn raise_fd_limit() -> anyhow::Result<u64> {
    raise_fd_limit_to(0)
}

/// [`raise_fd_limit`], and where the hard limit is below `want`, raises the hard limit too, to
/// `want` (at most the kernel's `fs.nr_open`), when this process may (root, CAP_SYS_RESOURCE).
/// Returns the open-file limit now in force, which may still be below `want`.
pub fn raise_fd_limit_to(want: u64) -> anyhow::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill and then read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
        }
        if want > lim.rlim_max {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(lim.rlim_max);
            let n = want.min(nr_open).max(lim.rlim_max);
            let raised = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // Without the privilege this fails, and the hard limit stays as it is.
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(n);
            }
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(io::Error::last_os_error()).context("raising the open-file limit");
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(100));
    }

    #[test]
    fn machine_cpu_from_proc_stat() {
        let stat = "cpu  100 20 30 4000 5 6 7 8 0 0\ncpu0 50 10 15 2000 2 3 3 4 0 0\n";
        let t = |n: u64| ticks_to_duration(n);
        assert_eq!(
            parse_machine_cpu(stat),
            Some(MachineCpu {
                busy: t(100 + 20 + 30 + 6 + 7),
                steal: t(8)
            })
        );
        assert_eq!(parse_machine_cpu("cpu0 1 2 3\n"), None);
    }

    #[test]
    fn each_cpu_from_proc_stat_and_its_busy_share() {
        let stat = "cpu  100 20 30 4000 5 6 7 8 0 0\n\
                    cpu0 50 10 15 2000 2 3 3 4 0 0\n\
                    cpu1 50 10 15 2000 3 3 4 4 0 0\n\
                    intr 1 2 3\n";
        let before = parse_cpu_ticks_per_cpu(stat);
        assert_eq!(
            before,
            [
                CpuTicks {
                    busy: 50 + 10 + 15 + 3 + 3,
                    total: 2087
                },
                CpuTicks {
                    busy: 50 + 10 + 15 + 3 + 4,
                    total: 2089
                }
            ]
        );
        // CPU 0: 90 of 100 ticks busy; CPU 1: no tick at all.
        let after = [
            CpuTicks {
                busy: before[0].busy + 90,
                total: before[0].total + 100,
            },
            before[1],
        ];
        let busy = busy_percent(&before, &after);
        assert_eq!(busy[0], 90.0);
        assert!(busy[1].is_nan());
        assert!(parse_cpu_ticks_per_cpu("cpu  1 2 3\n").is_empty());
    }

    #[test]
    fn schedstat_and_psi() {
        assert_eq!(parse_schedstat_wait_ns("95079 143739 1\n"), Some(143_739));
        assert_eq!(parse_schedstat_wait_ns("95079\n"), None);
        let psi = "some avg10=99.89 avg60=99.58 avg300=98.31 total=1838696815\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_psi_some_total(psi), Some(1_838_696_815));
        assert_eq!(parse_psi_some_total("full total=3\n"), None);
    }

    #[test]
    fn user_and_system_ticks_apart() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 70 30 0 0 20 0 3 0";
        assert_eq!(parse_user_system_ticks(stat), Some((70, 30)));
        assert_eq!(parse_user_system_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn context_switches_from_status() {
        let status = "Name:\tsplitter\nvoluntary_ctxt_switches:\t1234\n\
                      nonvoluntary_ctxt_switches:\t56\n";
        let t = parse_context_switches(status).unwrap();
        assert_eq!(
            t,
            ContextSwitches {
                voluntary: 1234,
                involuntary: 56
            }
        );
        let before = ContextSwitches {
            voluntary: 1000,
            involuntary: 60,
        };
        assert_eq!(
            t.since(before),
            ContextSwitches {
                voluntary: 234,
                involuntary: 0
            }
        );
        assert_eq!(
            parse_context_switches("voluntary_ctxt_switches:\t1\n"),
            None
        );
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tsplitter\nVmHWM:\t   10240 kB\nVmRSS:\t    8000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(10240));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(8000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }
}

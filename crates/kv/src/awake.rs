//! Keeps the commit thread's CPU awake while the log's `fdatasync` is in
//! flight, so that the disk's completion reaches the commit thread at once.
//!
//! Why: on a virtual machine an idle vCPU halts, and once it has been halted
//! for longer than the host polls for it, waking it takes the host's
//! scheduler, which on a busy host is a few milliseconds. A commit thread
//! blocked in `fdatasync` on an otherwise idle CPU is exactly that: measured
//! on the bench machine (a Firecracker VM, `cpuidle_haltpoll` with guest
//! polling off), a 104-byte write plus `fdatasync` took p50 3.9 ms with the
//! CPU idle and 0.2 ms with a thread on the same CPU waking every 20 µs; and
//! the watch latency tail of torc kv was the put's commit (watch p99 =
//! put p99, the event came p99 30-260 µs after the put's acknowledgement),
//! with either client. etcd probably escapes part of it by accident: Go's runtime
//! monitor naps 20 µs at a time while the process is busy. A client's own
//! halted vCPU delays its wakeups the same way; nothing on the server helps
//! that.
//!
//! What: a companion thread, pinned to the CPU the commit thread last synced
//! on and scheduled `SCHED_IDLE` (it runs only when that CPU has nothing else
//! to run, and any other thread waking there preempts it at once), that sleeps
//! in [`TICK`]-long naps while a sync is in flight, then parks (unparking it
//! is one futex wake per sync). A nap costs a timer interrupt and two
//! context switches; it never computes. It does not linger after a sync:
//! napping on while the workers send the commit's answers put a timer
//! interrupt (a VM exit) into their path every nap, ~50 µs on the watch p50.
//! On bare metal it would be useless (an idle CPU wakes in microseconds), so
//! it runs only under a hypervisor (`on_a_hypervisor`);
//! `TORC_KV_AWAKE=0` turns it off (for measuring it), `TORC_KV_AWAKE=1` on.
//!
//! What not: it changes nothing about durability or ordering; the sync is
//! the caller's, run on the caller's thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

/// How long the companion naps: short enough that a halted vCPU is woken
/// again before the host stops polling for it (KVM's default poll is 200 µs;
/// Go's runtime monitor uses 20 µs).
const TICK: Duration = Duration::from_micros(25);

/// Longest the companion naps for one sync: one that hangs (a failing disk)
/// does not keep it ticking; it waits for the next.
const MAX_TICKING: Duration = Duration::from_millis(50);

/// No CPU known yet.
const NO_CPU: usize = usize::MAX;

struct Shared {
    /// Counts syncs' starts and ends: odd while one is in flight (the commit
    /// thread is the only caller).
    seq: AtomicU64,
    /// The CPU the last sync started on.
    cpu: AtomicUsize,
    stop: AtomicBool,
}

/// The companion thread; stops when dropped.
pub(crate) struct Awake {
    shared: Arc<Shared>,
    thread: Option<(Thread, JoinHandle<()>)>,
}

impl Awake {
    /// Starts the companion when this is a virtual machine (see [`wanted`]).
    pub(crate) fn start() -> Awake {
        let shared = Arc::new(Shared {
            seq: AtomicU64::new(0),
            cpu: AtomicUsize::new(NO_CPU),
            stop: AtomicBool::new(false),
        });
        let on = wanted(
            std::env::var_os("TORC_KV_AWAKE").as_deref(),
            on_a_hypervisor(),
        );
        let thread = on
            .then(|| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("torc-kv-awake".into())
                    .spawn(move || run(&s))
                    .ok()
            })
            .flatten()
            .map(|handle| (handle.thread().clone(), handle));
        Awake { shared, thread }
    }

    /// Runs `sync` (the caller's `fdatasync`) with the companion napping on
    /// this thread's CPU.
    pub(crate) fn during<T>(&self, sync: impl FnOnce() -> T) -> T {
        let Some((thread, _)) = &self.thread else {
            return sync();
        };
        let cpu = nix::sched::sched_getcpu().unwrap_or(NO_CPU);
        self.shared.cpu.store(cpu, Ordering::Relaxed);
        self.shared.seq.fetch_add(1, Ordering::AcqRel);
        // Cheap when the companion is not parked (lingering after the last sync).
        thread.unpark();
        let out = sync();
        self.shared.seq.fetch_add(1, Ordering::AcqRel);
        out
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some((thread, handle)) = self.thread.take() {
            thread.unpark();
            let _ = handle.join();
        }
    }
}

/// Whether to run the companion: as `TORC_KV_AWAKE` says (`0` off, `1` on), else only on a
/// virtual machine. On bare metal (a switch) an idle CPU wakes in microseconds, and the naps
/// would only cost timer interrupts.
fn wanted(env: Option<&std::ffi::OsStr>, virtual_machine: bool) -> bool {
    match env.and_then(|v| v.to_str()) {
        Some("0") => false,
        Some("1") => true,
        _ => virtual_machine,
    }
}

/// Whether this kernel runs under a hypervisor: x86's CPUID `hypervisor` bit, which Linux shows
/// among `/proc/cpuinfo`'s flags, or a `/sys/hypervisor/type` (Xen, and others on other
/// architectures). Unknown counts as bare metal. Read once per process: every log a store
/// opens (and, on a full disk, each reopening) asks.
fn on_a_hypervisor() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(read_hypervisor)
}

fn read_hypervisor() -> bool {
    let flagged = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
        info.lines()
            .filter(|l| l.starts_with("flags"))
            .any(|l| l.split_whitespace().any(|f| f == "hypervisor"))
    });
    flagged || std::fs::read_to_string("/sys/hypervisor/type").is_ok_and(|t| !t.trim().is_empty())
}

/// The companion: parks until a sync starts, moves to its CPU, naps while
/// syncs go on, at most [`MAX_TICKING`] for one sync.
fn run(shared: &Shared) {
    // Naps of TICK, not TICK plus the default 50 µs of timer slack.
    let _ = nix::sys::prctl::set_timerslack(1_000);
    // Runs only when its CPU has nothing else to run, and gives way at once to
    // any thread that wakes there: it never delays the commit thread or the
    // runtime's workers (nix has no sched_setscheduler).
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sets the calling thread's (pid 0) policy; `param` is valid for the call.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    let mut pinned = NO_CPU;
    // A sync already napped through for MAX_TICKING.
    let mut given_up = None;
    loop {
        let seq = loop {
            if shared.stop.load(Ordering::Acquire) {
                return;
            }
            let seq = shared.seq.load(Ordering::Acquire);
            if !seq.is_multiple_of(2) && Some(seq) != given_up {
                break seq;
            }
            std::thread::park();
        };
        let cpu = shared.cpu.load(Ordering::Relaxed);
        if cpu != pinned && cpu != NO_CPU {
            let mut set = nix::sched::CpuSet::new();
            if set.set(cpu).is_ok()
                && nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).is_ok()
            {
                pinned = cpu;
            }
        }
        let (mut current, mut started) = (seq, Instant::now());
        while !shared.stop.load(Ordering::Acquire) {
            std::thread::sleep(TICK);
            let now = shared.seq.load(Ordering::Acquire);
            if now.is_multiple_of(2) {
                // Not a moment longer: the runtime's workers run now, and a
                // nap's timer interrupt would cost them (a VM exit each).
                break;
            }
            if now != current {
                (current, started) = (now, Instant::now());
            } else if started.elapsed() >= MAX_TICKING {
                given_up = Some(now);
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_a_virtual_machine_unless_told() {
        use std::ffi::OsStr;
        assert!(wanted(None, true));
        assert!(!wanted(None, false));
        assert!(!wanted(Some(OsStr::new("0")), true));
        assert!(wanted(Some(OsStr::new("1")), false));
        assert!(
            wanted(Some(OsStr::new("yes")), true),
            "anything else: the default"
        );
    }
}

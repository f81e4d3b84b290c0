//! A scheduling hint for the threads that answer queries.
//!
//! On a busy machine a query's latency is mostly time spent runnable but not running: the thread
//! that wakes up for it waits until the task on its CPU (an ingest batch, a compaction, another
//! program) uses up its time slice. Linux's EEVDF scheduler (6.12 and later) lets a thread ask
//! for a shorter slice: it then gets an earlier deadline when it wakes and preempts the running
//! task at once, without getting a larger share of the CPU. [`prefer_short_slice`] asks for
//! that on each thread that serves a query; on other kernels the request fails and changes
//! nothing.
//!
//! What it is not: a priority. The nice value and policy are kept, and no privilege is needed.

/// The slice requested for query threads: longer than a typical query's CPU time (about
/// 0.5 ms for the 1,000-row seed query), much shorter than the default slice (0.75 ms times
/// 1 + log2(CPUs), at least).
#[cfg(target_os = "linux")]
const QUERY_SLICE_NS: u64 = 500_000;

/// Asks, once per thread, for a short scheduling slice for the calling thread.
pub fn prefer_short_slice() {
    #[cfg(target_os = "linux")]
    {
        use std::cell::Cell;
        thread_local! {
            static ASKED: Cell<bool> = const { Cell::new(false) };
        }
        if ASKED.get() {
            return;
        }
        ASKED.set(true);
        /// Keep the thread's policy (SCHED_OTHER or SCHED_BATCH, as the operator set it).
        const SCHED_FLAG_KEEP_POLICY: u64 = 0x08;
        // nix has no getpriority.
        // SAFETY: getpriority reads the calling thread's nice value; no memory is passed.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        let attr = libc::sched_attr {
            size: std::mem::size_of::<libc::sched_attr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_flags: SCHED_FLAG_KEEP_POLICY,
            sched_nice: nice,
            sched_priority: 0,
            sched_runtime: QUERY_SLICE_NS,
            sched_deadline: 0,
            sched_period: 0,
        };
        // nix has no sched_setattr.
        // SAFETY: sched_setattr(0 = this thread, a valid sched_attr of the size it states,
        // flags 0) only reads `attr`, which outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_sched_setattr,
                0,
                &attr as *const libc::sched_attr,
                0,
            )
        };
        if r != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "short scheduling slice not available; keeping the default"
            );
        }
    }
}

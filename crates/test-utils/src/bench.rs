//! What the benchmarks of `crates/torc/benches` share: their runtime, the load they ran
//! under, the wall clock the controller also stamps its task history with, percentiles.

use std::time::SystemTime;

/// A runtime of 2 workers, as the benchmarks run (the machine has 2 cores).
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): other work on the machine shows in
/// every figure, so a benchmark says how much there was.
pub fn load_average() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    load.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds since the epoch on the wall clock, as the controller's `now_millis` but finer.
pub fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// The `p` quantile (0..=1) of `sorted` (nearest rank); `sorted` must not be empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

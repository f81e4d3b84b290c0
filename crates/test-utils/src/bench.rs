//! What the benchmarks of `crates/torc/benches` share: their runtime, the load they ran
//! under, the wall clock the controller also stamps its task history with, percentiles, and
//! the launch measurements (`bench rack`'s, which `bench ha` repeats on each store).

use std::time::{Duration, Instant, SystemTime};

use torc_client::Client;
use torc_types::{Resources, TaskSpec, TaskState};

use crate::wait_running;

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

/// The task the launch benchmarks start: `sleep 3600` at 0.01 cpu and 1 MiB, so that a
/// thousand fit on a few nodes; a second's grace when killed.
pub fn bench_sleeper() -> TaskSpec {
    let mut spec = TaskSpec::new("bench".parse().expect("a task name"), "sleep");
    spec.args = vec!["3600".into()];
    spec.resources = Resources::new(0.01, 1.0, 0.0);
    spec.kill_grace_ms = 1000;
    spec
}

/// Accept → running of `n` launches of `spec`, one at a time, on the controller's clock (ms):
/// from the launch request's arrival (`created_at`) to the agent's report that the process
/// runs (the `running` entry of its history). Sorted.
pub async fn sequential_launches(client: &Client, spec: &TaskSpec, n: usize) -> Vec<f64> {
    let mut server_ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = client.launch(spec).await.expect("a launch is accepted");
        let running = wait_running(client, &t.id, Duration::from_secs(10))
            .await
            .expect("the task runs");
        let at = running
            .history
            .iter()
            .find(|h| h.state == TaskState::Running)
            .expect("a running task's history says when")
            .at;
        server_ms.push(at.saturating_sub(running.created_at) as f64);
    }
    server_ms.sort_by(|a, b| a.total_cmp(b));
    server_ms
}

/// Launches `n` tasks of `spec` back to back, then waits until every one runs: how long from
/// the first launch until the last runs.
pub async fn burst_launches(client: &Client, spec: &TaskSpec, n: usize) -> Duration {
    let launched = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        ids.push(client.launch(spec).await.expect("a launch is accepted").id);
    }
    for id in &ids {
        wait_running(client, id, Duration::from_secs(60))
            .await
            .expect("the task runs");
    }
    launched.elapsed()
}

//! The local rack, measured: task accept → running latency, how soon a started or stopped
//! task's name changes in the rack's DNS, and controller and agent memory idle and with 1,000
//! running tasks. Real processes on loopback (release build).
//! Run with `cargo bench -p torc --bench rack`. Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use torc_test_utils::bench::{bench_sleeper, burst_launches, percentile, sequential_launches};
use torc_test_utils::{
    DNS_SYSTEM_SERVICE, LocalRack, RackOptions, processes_mentioning, system_services,
};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = s.rsplit(')').next()?.split_whitespace().collect::<Vec<_>>();
            Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn agent_pids(rack: &LocalRack) -> Vec<u32> {
    processes_mentioning(rack.dir.path())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" agent "))
        .map(|(pid, _)| pid)
        .collect()
}

fn agent_rss(rack: &LocalRack) -> Vec<u64> {
    processes_mentioning(rack.dir.path())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" agent "))
        .map(|(pid, _)| rss_kib(pid))
        .collect()
}

/// Polls `server` for `name` A every millisecond (one query each, through the controller's own
/// lookup: no resolver cache or retries in between) until `done` holds of the answer; returns
/// when, on the controller's clock.
async fn until_answer(
    server: std::net::SocketAddr,
    name: &str,
    done: impl Fn(&torc_controller::Lookup) -> bool,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if torc_controller::lookup(server, name, "A")
            .await
            .is_ok_and(|l| done(&l))
        {
            return torc_types::now_millis();
        }
        assert!(Instant::now() < deadline, "{name}: no change in 10 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 4,
            node_timeout_secs: 30,
            security: torc_test_utils::Security::Tls,
            node_resources: (64.0, 64_000.0),
            extra_yaml: format!("{}{}", system_services(&[DNS_SYSTEM_SERVICE]), r#""#),
            ..Default::default()
        },
    )
    .await
    .expect("rack starts");
    let client = rack.client();
    let controller = rack.controller_pid().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_kib(controller);
    let agents_idle = agent_rss(&rack);
    // An idle agent's CPU over 10 s of 1 s metrics sampling (and heartbeats).
    let pids = agent_pids(&rack);
    let before: Vec<u64> = pids.iter().map(|p| cpu_ticks(*p)).collect();
    let window = Duration::from_secs(10);
    tokio::time::sleep(window).await;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let agent_cpu = pids
        .iter()
        .zip(&before)
        .map(|(p, b)| (cpu_ticks(*p) - b) as f64 / hz / window.as_secs_f64() * 100.0)
        .fold(0.0, f64::max);

    let spec = bench_sleeper();

    // Accept → running, one task at a time, on the controller's clock (ms): from the launch
    // request's arrival to the agent's report that the process runs.
    let server_ms = sequential_launches(&client, &spec, 200).await;

    let answered = |l: &torc_controller::Lookup| l.rcode == "NOERROR" && !l.answers.is_empty();
    // DNS: from the controller recording a task running (or accepting its kill) to the rack's
    // DNS answering its name (or NXDOMAIN), polled every millisecond.
    let dns = std::net::SocketAddr::from((rack.nodes["wedge"], 53));
    until_answer(dns, "wedge.homer.ave", answered).await;
    let (mut appear_ms, mut vanish_ms) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let mut probe = spec.clone();
        probe.name = format!("dnsprobe{i}").parse().unwrap();
        let name = format!("dnsprobe{i}.service.torc");
        let t = client.launch(&probe).await.unwrap();
        let answered = until_answer(dns, &name, answered).await;
        let running = client.task(&t.id).await.unwrap();
        let at = running
            .history
            .iter()
            .find(|h| h.state == TaskState::Running)
            .expect("answered, so running")
            .at;
        appear_ms.push(answered.saturating_sub(at) as f64);
        let asked = torc_types::now_millis();
        client.kill(&t.id).await.unwrap();
        let gone = until_answer(dns, &name, |l| l.rcode == "NXDOMAIN").await;
        vanish_ms.push(gone.saturating_sub(asked) as f64);
    }
    appear_ms.sort_by(|a, b| a.total_cmp(b));
    vanish_ms.sort_by(|a, b| a.total_cmp(b));

    // Up to 1,000 running tasks.
    let burst = burst_launches(&client, &spec, 800).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let busy = rss_kib(controller);
    let agents_busy = agent_rss(&rack);

    println!("rack: 5 nodes (4 compute), release build");
    println!(
        "  accept -> running (controller clock, ms): p50 {:.0}  p99 {:.0}  max {:.0}   (target p99 <= 50)",
        percentile(&server_ms, 0.5),
        percentile(&server_ms, 0.99),
        server_ms.last().unwrap()
    );
    println!(
        "  DNS: running -> name answered p50 {:.0} ms, max {:.0} ms; kill -> NXDOMAIN p50 {:.0} ms, max {:.0} ms   (target <= 100)",
        percentile(&appear_ms, 0.5),
        appear_ms.last().unwrap(),
        percentile(&vanish_ms, 0.5),
        vanish_ms.last().unwrap()
    );
    println!(
        "  800 more tasks launched and running in {:.1} s",
        burst.as_secs_f64()
    );
    println!(
        "  controller RSS: idle {:.1} MiB, with 1000 running tasks {:.1} MiB   (target idle <= 64)",
        idle as f64 / 1024.0,
        busy as f64 / 1024.0
    );
    // One clock tick (10 ms) in the 10 s window is 0.1%: below that, say so.
    let agent_cpu = if agent_cpu > 0.0 {
        format!("{agent_cpu:.2}%")
    } else {
        "< 0.1% (no tick in 10 s)".to_string()
    };
    println!("  agent CPU idle, 1 s metrics sampling: max {agent_cpu} of a core   (target <= 1%)");
    println!(
        "  agent RSS: idle max {:.1} MiB, with 200 tasks each max {:.1} MiB",
        *agents_idle.iter().max().unwrap_or(&0) as f64 / 1024.0,
        *agents_busy.iter().max().unwrap_or(&0) as f64 / 1024.0
    );
}

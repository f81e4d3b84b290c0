//! The highly available controller, measured (issue 18, `docs/design/ha-controller.md` §14).
//! Real processes on loopback (release build): a `LocalRack` of 2 controllers on a real
//! 3-member etcd (`--store etcd`, as `torc up --ha` runs them), 2 compute nodes, every agent
//! following both controllers.
//!
//! 1. *Failover*, `TORC_BENCH_KILLS` times (20 by default): with the survivor standing by
//!    behind the leader and the leader accepting launches, `kill -9` the leader at t0; then
//!    launch one small task at a time through a client given both controllers (each call
//!    bounded to 1 s, 10 ms apart) until one is accepted, necessarily by the new leader: t1.
//!    Meanwhile the survivor's `GET /api/v1/controller` is polled every 10 ms, for when it
//!    first says `elected` (won the election, catching up with the store) and when it first
//!    leads and acts. Then the killed controller is started again and waited for until it
//!    stands by behind the new leader. Prints p50 and max of each.
//! 2. *etcd vs redb, same run*: `bench rack`'s launch measurements (the shared ones of
//!    `torc_test_utils::bench`): 200 sequential launches, accept → running on the controller's
//!    clock, then 800 launched back to back until all run; on the HA rack after the failovers
//!    and on a rack of one controller on its local redb with the same number of nodes (3
//!    compute nodes, so 4 agents on each), both up: the sequential launches on each, then the
//!    etcd rack's burst, then (the etcd rack gone) the redb rack's. Prints both and the ratio.
//!
//! It prints the etcd settings and the load average. Run with `cargo bench -p torc --bench
//! ha`. Prints figures; asserts nothing about speed.

use std::time::{Duration, Instant};

use torc_api::controller::{ControllerRole, ControllerStatus};
use torc_client::Client;
use torc_test_utils::bench::{
    bench_runtime, bench_sleeper, burst_launches, load_average, percentile, sequential_launches,
};
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::TaskSpec;

const TORC: &str = env!("CARGO_BIN_EXE_torc");
const KILLS: usize = 20;
const SEQUENTIAL: usize = 200;
const BURST: usize = 800;
/// Between polls of a launch and of the survivor's status during a failover.
const POLL: Duration = Duration::from_millis(10);
/// Bounds each launch and status call during a failover.
const CALL: Duration = Duration::from_secs(1);
/// Bounds a whole failover, and a restarted controller's way back to standby.
const PATIENCE: Duration = Duration::from_secs(60);
/// Design §14's target for kill → first accepted launch, at a 2 s lease.
const TARGET_MS: f64 = 5000.0;

fn main() {
    let kills = match std::env::var("TORC_BENCH_KILLS") {
        Err(_) => KILLS,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                eprintln!("TORC_BENCH_KILLS: {v:?} is not a positive number of kills");
                std::process::exit(2);
            }
        },
    };
    bench_runtime().block_on(async {
        println!(
            "ha, release build; load average at the start: {}",
            load_average()
        );
        // LocalRack's etcd members (as `torc up --ha` runs them) and the controller's defaults
        // (`torc controller --store etcd`, which LocalRack does not change).
        println!(
            "  etcd: 3 members on loopback, --max-txn-ops 4096 --heartbeat-interval 100 \
             --election-timeout 1000 (ms)"
        );
        println!(
            "  controllers: --lease-ttl 2 (s), a keepalive every 500 ms (TTL / 4), \
             --etcd-commit-timeout-ms 3000"
        );

        let mut rack = LocalRack::start(TORC, options(2, 2))
            .await
            .expect("the HA rack starts");
        let leader = rack.wait_leader(&[]).await.expect("a leader");
        let status = rack.controller_status(&leader).await.expect("its status");
        let versions: Vec<&str> = (status.store.endpoints.iter())
            .map(|e| e.version.as_deref().unwrap_or("?"))
            .collect();
        println!("  etcd versions: {}", versions.join(", "));

        failover_bench(&mut rack, kills).await;
        // Both racks up for the sequential launches, so that neither follows the other's
        // burst or teardown (a thousand processes starting or ending); each burst then.
        let solo = LocalRack::start(TORC, options(1, 3))
            .await
            .expect("the redb rack starts");
        let mut redb = sequential(&solo).await;
        let mut etcd = sequential(&rack).await;
        etcd.burst_s = burst(&rack).await;
        drop(rack);
        redb.burst_s = burst(&solo).await;
        drop(solo);

        println!(
            "launches, {SEQUENTIAL} sequential (accept -> running, controller clock, ms) and \
             {BURST} back to back (until all run); 4 nodes each"
        );
        for (what, l) in [
            ("redb, 1 controller", &redb),
            ("etcd, 2 controllers", &etcd),
        ] {
            println!(
                "  {what:<20} p50 {:5.1}  p99 {:5.1}  max {:5.1}   {BURST} running in {:.2} s   \
                 (load average before the sequential: {})",
                l.p50, l.p99, l.max, l.burst_s, l.load
            );
        }
        println!(
            "  etcd / redb          p50 {:.2}x  p99 {:.2}x  max {:.2}x   {BURST}: {:.2}x   \
             (target p99 <= 50 ms on both)",
            etcd.p50 / redb.p50,
            etcd.p99 / redb.p99,
            etcd.max / redb.max,
            etcd.burst_s / redb.burst_s
        );
        println!("  load average at the end: {}", load_average());
    });
}

/// A rack of `controllers` (several: on etcd) and `compute` compute nodes with room for the
/// launch bench's thousand tasks.
fn options(controllers: usize, compute: usize) -> RackOptions {
    RackOptions {
        controllers,
        compute_nodes: compute,
        node_timeout_secs: 30,
        node_resources: (64.0, 64_000.0),
        ..RackOptions::default()
    }
}

/// The other of the HA rack's two controllers.
fn other(rack: &LocalRack, name: &str) -> String {
    (rack.controller_names.iter())
        .find(|n| *n != name)
        .expect("two controllers")
        .clone()
}

/// When, in ms after the kill, the survivor first said it was elected (or already led), first
/// led and acted, and accepted a launch.
struct Failover {
    elected: f64,
    acting: f64,
    accepted: f64,
}

async fn failover_bench(rack: &mut LocalRack, kills: usize) {
    let client = rack.client();
    let http = rack.http_admin();
    let spec = bench_sleeper();
    let mut runs = Vec::with_capacity(kills);
    for i in 0..kills {
        let run = failover(rack, &client, &http, &spec).await;
        eprintln!(
            "  kill {}: elected {:.0} ms, acting {:.0} ms, first launch {:.0} ms",
            i + 1,
            run.elected,
            run.acting,
            run.accepted
        );
        runs.push(run);
    }
    println!("failover, kill -9 of the leader, {kills} times (ms after the kill):");
    let line = |what: &str, pick: fn(&Failover) -> f64, target: &str| {
        let mut values: Vec<f64> = runs.iter().map(pick).collect();
        values.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  {what:<36} p50 {:6.0}  max {:6.0}{target}",
            percentile(&values, 0.5),
            values.last().expect("at least one kill")
        );
    };
    line("survivor elected (role elected)", |r| r.elected, "");
    line("survivor leads and acts (leader)", |r| r.acting, "");
    line(
        "first launch accepted (t1 - t0)",
        |r| r.accepted,
        &format!("   (target <= {TARGET_MS:.0} at a 2 s lease)"),
    );
}

async fn failover(
    rack: &mut LocalRack,
    client: &Client,
    http: &reqwest::Client,
    spec: &TaskSpec,
) -> Failover {
    let leader = rack.wait_leader(&[]).await.expect("a leader");
    let survivor = other(rack, &leader);
    // The leader takes launches, and the survivor stands by behind it.
    wait_for("the leader to accept a launch", PATIENCE, || async {
        tokio::time::timeout(CALL, client.launch(spec))
            .await
            .ok()?
            .ok()
    })
    .await
    .expect("the leader accepts launches");
    wait_standby(rack, &survivor, &leader).await;

    let url = format!("{}/api/v1/controller", rack.controller_url(&survivor));
    let t0 = Instant::now();
    rack.kill_controller_named(&leader);
    let ms = |at: Instant| at.duration_since(t0).as_secs_f64() * 1000.0;
    let watch = async {
        let (mut elected, mut acting) = (None, None);
        while acting.is_none() && t0.elapsed() < PATIENCE {
            if let Some(s) = status(http, &url).await {
                let now = Instant::now();
                if matches!(s.role, ControllerRole::Elected | ControllerRole::Leader) {
                    elected.get_or_insert(now);
                }
                if s.role == ControllerRole::Leader && s.acting {
                    acting = Some(now);
                }
            }
            tokio::time::sleep(POLL).await;
        }
        let acting = acting.expect("the survivor leads within a minute");
        (elected.unwrap_or(acting), acting)
    };
    let launch = async {
        while t0.elapsed() < PATIENCE {
            if let Ok(Ok(_)) = tokio::time::timeout(CALL, client.launch(spec)).await {
                return Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("no launch accepted within a minute of the kill");
    };
    let ((elected, acting), accepted) = tokio::join!(watch, launch);
    rack.start_controller_named(&leader)
        .expect("the killed controller starts again");
    wait_standby(rack, &leader, &survivor).await;
    Failover {
        elected: ms(elected),
        acting: ms(acting),
        accepted: ms(accepted),
    }
}

async fn status(http: &reqwest::Client, url: &str) -> Option<ControllerStatus> {
    let resp = http.get(url).timeout(CALL).send().await.ok()?;
    resp.error_for_status().ok()?.json().await.ok()
}

/// Waits until controller `name` stands by behind `leader`.
async fn wait_standby(rack: &LocalRack, name: &str, leader: &str) {
    wait_for(
        &format!("{name} to stand by behind {leader}"),
        PATIENCE,
        || async {
            rack.controller_status(name).await.ok().filter(|s| {
                s.role == ControllerRole::Standby
                    && s.leader.as_ref().is_some_and(|l| l.name == leader)
            })
        },
    )
    .await
    .expect("the controller stands by");
}

/// Accept → running p50, p99 and max (ms), the burst's time (s), and the load average before
/// the sequential launches (a burst's thousand processes raise it themselves).
struct Launches {
    p50: f64,
    p99: f64,
    max: f64,
    burst_s: f64,
    load: String,
}

async fn sequential(rack: &LocalRack) -> Launches {
    let load = load_average();
    let ms = sequential_launches(&rack.client(), &bench_sleeper(), SEQUENTIAL).await;
    Launches {
        p50: percentile(&ms, 0.5),
        p99: percentile(&ms, 0.99),
        max: *ms.last().expect("launches were measured"),
        burst_s: f64::NAN,
        load,
    }
}

/// The burst on `rack`, in seconds.
async fn burst(rack: &LocalRack) -> f64 {
    let elapsed = burst_launches(&rack.client(), &bench_sleeper(), BURST).await;
    elapsed.as_secs_f64()
}

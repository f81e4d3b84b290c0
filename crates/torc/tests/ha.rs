//! A highly available controller (issue 18, `docs/design/ha-controller.md` §13): two real
//! controllers on a real 3-member etcd cluster (`--store etcd`), real agents following both.
//! One leads; the other is a standby that serves reads marked stale and answers changes with
//! 421 naming the leader. When the leader is killed (`kill -9`) or frozen (SIGSTOP) past its
//! lease, the standby takes over: every acknowledged launch is there, running tasks are neither
//! restarted nor duplicated, and agents follow without restarting.
//!
//! These tests wait on lease expiry (2 s) and elections: they run in the nextest group `ha`
//! (`.config/nextest.toml`), which keeps them from starving each other on a small machine.

use std::time::Duration;

use torc_api::TaskView;
use torc_client::Client;
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::{TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn sleeper(name: &str) -> TaskSpec {
    let mut spec = TaskSpec::new(name.parse().unwrap(), "sleep");
    spec.args = vec!["600".into()];
    spec.resources.cpus = 0.05;
    spec.resources.mem_mb = 8.0;
    spec
}

async fn wait_running(client: &Client, id: &TaskId) -> TaskView {
    wait_for(
        &format!("task {id} to run"),
        Duration::from_secs(30),
        || async {
            client
                .task(id)
                .await
                .ok()
                .filter(|t| t.state == TaskState::Running)
        },
    )
    .await
    .unwrap()
}

async fn ha_rack() -> LocalRack {
    LocalRack::start(
        TORC,
        RackOptions {
            controllers: 2,
            compute_nodes: 2,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap()
}

fn other(name: &str) -> &'static str {
    if name == "wedge" { "wedge2" } else { "wedge" }
}

/// One leads and one stands by; the standby's reads are marked stale and its changes refused
/// with 421 naming the leader, which torc's client follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_controller_leads_and_the_standby_names_it() {
    let rack = ha_rack().await;
    let leader = rack.wait_leader(&[]).await.unwrap();
    let standby = other(&leader);
    let status = rack.controller_status(standby).await.unwrap();
    assert!(!status.acting, "{status:?}");
    assert_eq!(status.role.as_str(), "standby");
    let named = wait_for(
        "the standby to see the leader",
        Duration::from_secs(10),
        || async {
            rack.controller_status(standby)
                .await
                .ok()
                .and_then(|s| s.leader)
        },
    )
    .await
    .unwrap();
    assert_eq!(named.name, leader);
    assert_eq!(named.url, rack.controller_rack_url(&leader));
    let lead = rack.controller_status(&leader).await.unwrap();
    assert_eq!(lead.role.as_str(), "leader");
    assert_eq!(lead.epoch, Some(named.epoch));
    assert_eq!(lead.store.kind, "etcd");

    // A read from the standby is served, marked.
    let http = rack.http_admin();
    let resp = http
        .get(format!("{}/api/v1/nodes", rack.controller_url(standby)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["torc-stale"], "true");
    assert_eq!(
        resp.headers()["torc-leader"],
        rack.controller_rack_url(&leader).as_str()
    );
    // A change is refused, naming the leader; nothing runs.
    let resp = http
        .post(format!("{}/api/v1/tasks", rack.controller_url(standby)))
        .json(&sleeper("refused"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    assert_eq!(
        resp.headers()["torc-leader"],
        rack.controller_rack_url(&leader).as_str()
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("standby"),
        "{body}"
    );
    // torc's client, given the standby first, moves to the leader.
    let standby_first = Client::from_files(
        format!(
            "{},{}",
            rack.controller_url(standby),
            rack.controller_url(&leader)
        ),
        rack.token.clone(),
        rack.ca_path().as_deref(),
    )
    .unwrap();
    let launched = standby_first.launch(&sleeper("followed")).await.unwrap();
    wait_running(&standby_first, &launched.id).await;
}

/// kill -9 of the leader: the standby takes over within the lease and an election; the task
/// that ran keeps running (same shim, one start), agents follow without restarting, and a
/// launch after the failover runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_nothing_restarts() {
    let mut rack = ha_rack().await;
    let client = rack.client();
    let leader = rack.wait_leader(&[]).await.unwrap();
    let before = client.launch(&sleeper("before")).await.unwrap();
    let running = wait_running(&client, &before.id).await;
    let shims = rack.shim_pids();
    let agents: Vec<Option<u32>> = ["bladerunner1", "bladerunner2", "wedge", "wedge2"]
        .iter()
        .map(|n| rack.agent_pid(n))
        .collect();
    let epoch = rack
        .controller_status(&leader)
        .await
        .unwrap()
        .epoch
        .unwrap();

    rack.kill_controller_named(&leader);
    let next = rack.wait_leader(&[&leader]).await.unwrap();
    assert_eq!(next, other(&leader));
    let status = rack.controller_status(&next).await.unwrap();
    assert!(status.epoch.unwrap() > epoch, "{status:?} after {epoch}");

    // Everything acknowledged is there; the task runs on, not restarted.
    let after = client.task(&before.id).await.unwrap();
    assert_eq!(after.state, TaskState::Running);
    assert_eq!(after.node, running.node);
    assert_eq!(
        rack.shim_pids(),
        shims,
        "no task was restarted or started twice"
    );
    let now: Vec<Option<u32>> = ["bladerunner1", "bladerunner2", "wedge", "wedge2"]
        .iter()
        .map(|n| rack.agent_pid(n))
        .collect();
    assert_eq!(now, agents, "agents keep running");

    // A launch after the failover is placed by the new leader and runs: agents follow it.
    let later = client.launch(&sleeper("after")).await.unwrap();
    wait_running(&client, &later.id).await;
    let tasks = client
        .tasks(&torc_api::TaskFilter::default())
        .await
        .unwrap();
    let live: Vec<&str> = tasks
        .iter()
        .filter(|t| !t.state.is_terminal())
        .map(|t| t.spec.name.as_str())
        .collect();
    assert_eq!(
        live.iter().filter(|n| **n == "before").count(),
        1,
        "{live:?}"
    );

    // The killed controller comes back as a standby.
    rack.start_controller_named(&leader).unwrap();
    wait_for(
        "the restarted controller to stand by behind the new leader",
        Duration::from_secs(30),
        || async {
            rack.controller_status(&leader)
                .await
                .ok()
                .filter(|s| s.leader.as_ref().is_some_and(|l| l.name == next))
        },
    )
    .await
    .unwrap();
    assert_eq!(rack.wait_leader(&[]).await.unwrap(), next);
}

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
    torc_test_utils::wait_running(client, id, Duration::from_secs(30))
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
    // The original API's changes are passed on to the leader (their clients know one URL).
    let resp = http
        .get(format!(
            "{}/start/group?name=nosuch",
            rack.controller_url(standby)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "the leader's answer, passed back");
    assert_eq!(
        resp.headers()["torc-leader"],
        rack.controller_rack_url(&leader).as_str()
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("no service group"),
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

/// The epoch of the last fenced write (`P meta/writer`), read from etcd.
fn writer(rack: &LocalRack) -> u64 {
    let etcd = rack.etcd().unwrap();
    let out = torc_test_utils::etcdctl(
        &etcd.endpoints().join(","),
        &[
            "get",
            "--print-value-only",
            "/torc-controller/torc-scheduler/meta/writer",
        ],
    )
    .unwrap();
    out.trim().parse().unwrap_or(0)
}

/// A client that asks `first` before the others (a frozen controller would hold a call to its
/// timeout).
fn client_of(rack: &LocalRack, first: &str) -> Client {
    let rest: Vec<String> = rack
        .controller_names
        .iter()
        .filter(|n| *n != first)
        .map(|n| rack.controller_url(n))
        .collect();
    Client::from_files(
        format!("{},{}", rack.controller_url(first), rest.join(",")),
        rack.token.clone(),
        rack.ca_path().as_deref(),
    )
    .unwrap()
}

/// Fencing: a leader frozen (SIGSTOP) past its lease is replaced; resumed, it changes nothing
/// (every write since the takeover is the new leader's) and becomes a standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_fenced_and_resumes_as_a_standby() {
    let rack = ha_rack().await;
    let old = rack.wait_leader(&[]).await.unwrap();
    let old_epoch = rack.controller_status(&old).await.unwrap().epoch.unwrap();
    rack.freeze_controller(&old, true).unwrap();
    let new = rack.wait_leader(&[&old]).await.unwrap();
    let new_epoch = rack.controller_status(&new).await.unwrap().epoch.unwrap();
    assert!(new_epoch > old_epoch);
    let client = client_of(&rack, &new);
    let launched = client.launch(&sleeper("during")).await.unwrap();
    wait_running(&client, &launched.id).await;
    assert_eq!(writer(&rack), new_epoch);

    rack.freeze_controller(&old, false).unwrap();
    let status = wait_for(
        "the resumed controller to stand by",
        Duration::from_secs(20),
        || async {
            rack.controller_status(&old)
                .await
                .ok()
                .filter(|s| s.role.as_str() == "standby" && !s.acting)
        },
    )
    .await
    .unwrap();
    assert!(status.why_not.is_some(), "{status:?}");
    // Its reconciler and held polls woke up under the old epoch; none of it landed.
    for _ in 0..10 {
        assert_eq!(writer(&rack), new_epoch, "a write of the old leader landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rack.wait_leader(&[]).await.unwrap(), new);
    let task = client.task(&launched.id).await.unwrap();
    assert_eq!(task.state, TaskState::Running);
}

/// etcd losing members: one is survived; without a quorum the leader stops changing things
/// and says why (reads go on, tasks keep running); with the quorum back it acts again by
/// itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_quorum_stops_changes_until_it_returns() {
    let mut rack = ha_rack().await;
    let leader = rack.wait_leader(&[]).await.unwrap();
    let client = client_of(&rack, &leader);
    let before = client.launch(&sleeper("before")).await.unwrap();
    wait_running(&client, &before.id).await;

    rack.etcd_mut().unwrap().kill(0);
    let one_down = wait_for(
        "a launch with one etcd member down",
        Duration::from_secs(20),
        || async { client.launch(&sleeper("one-down")).await.ok() },
    )
    .await
    .unwrap();
    wait_running(&client, &one_down.id).await;

    rack.etcd_mut().unwrap().kill(1);
    let refused = wait_for(
        "the leader to stop acting without a quorum",
        Duration::from_secs(20),
        || async {
            let s = rack.controller_status(&leader).await.ok()?;
            (!s.acting).then_some(s)
        },
    )
    .await
    .unwrap();
    println!("without a quorum: {refused:?}");
    let err = client.launch(&sleeper("no-quorum")).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("no leader") || text.contains("not act") || text.contains("lease"),
        "{text}"
    );
    let status = client.status().await.unwrap();
    assert!(
        status
            .warnings
            .iter()
            .any(|w| w.contains("changes refused")),
        "{:?}",
        status.warnings
    );
    // Reads go on; the task runs on.
    let task = client.task(&before.id).await.unwrap();
    assert_eq!(task.state, TaskState::Running);

    rack.etcd_mut().unwrap().restart(0).await.unwrap();
    rack.etcd_mut().unwrap().restart(1).await.unwrap();
    let after = wait_for(
        "a launch once the quorum is back",
        Duration::from_secs(30),
        || async { client.launch(&sleeper("back")).await.ok() },
    )
    .await
    .unwrap();
    wait_running(&client, &after.id).await;
    assert_eq!(
        client.task(&before.id).await.unwrap().state,
        TaskState::Running
    );
}

/// `torc controller step-down` by API: the leader hands over to the standby and stands by; a
/// standby's step-down is a 421 naming the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_steps_down_on_request() {
    let rack = ha_rack().await;
    let leader = rack.wait_leader(&[]).await.unwrap();
    let standby = other(&leader);
    // Both campaign (the survey runs every 2 s) before a step-down can be granted.
    wait_for(
        "the leader to see the standby campaign",
        Duration::from_secs(10),
        || async {
            rack.controller_status(&leader)
                .await
                .ok()
                .filter(|s| s.controllers.len() == 2)
        },
    )
    .await
    .unwrap();
    let http = rack.http_admin();
    let resp = http
        .post(format!(
            "{}/api/v1/controller/step-down",
            rack.controller_url(standby)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 421);
    // The CLI, given both controllers, asks whichever answers and is sent to the leader. The
    // leader surveys the controllers every 2 s: the standby is counted from its next survey.
    let out = wait_for(
        "the leader to count its standby",
        Duration::from_secs(10),
        || {
            let (ok, out, _) = rack.torc(TORC, &["controller", "status"]);
            let counted = ok && out.contains("1 standby");
            async move { counted.then_some(out) }
        },
    )
    .await
    .unwrap();
    assert!(
        out.contains(&format!("controller: {leader} leads")),
        "{out}"
    );
    assert!(out.contains("1 standby"), "{out}");
    assert!(out.contains("store etcd, 3/3 members healthy"), "{out}");
    let (ok, out, err) = rack.torc(TORC, &["status"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(&format!("controller: {leader} leads")),
        "{out}"
    );
    let (ok, out, err) = rack.torc(TORC, &["controller", "step-down"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("{leader} stepped down")), "{out}");
    let next = rack.wait_leader(&[&leader]).await.unwrap();
    assert_eq!(next, standby);
    wait_for(
        "the old leader to stand by",
        Duration::from_secs(10),
        || async {
            rack.controller_status(&leader)
                .await
                .ok()
                .filter(|s| s.role.as_str() == "standby")
        },
    )
    .await
    .unwrap();
}

/// A controller pointed at an etcd it cannot reach exits with an error naming the endpoint.
#[test]
fn an_unreachable_etcd_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rack.yaml");
    std::fs::write(
        &config,
        "name: r1\nnodes:\n  - name: wedge\n    ip: 127.0.0.1\n    type: master\n",
    )
    .unwrap();
    let port = torc_test_utils::free_port(std::net::Ipv4Addr::LOCALHOST);
    let endpoint = format!("http://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let out = std::process::Command::new(TORC)
        .args(["controller", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--insecure",
            "--plaintext",
            "--store",
            "etcd",
            "--etcd-endpoints",
            &endpoint,
            "--store-key",
        ])
        .arg(dir.path().join("store.key"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

fn dig_short(server: &str, name: &str) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{server}"))
        .args(["+time=1", "+tries=1", "+short", name])
        .output()
        .expect("dig is installed (scripts/test installs it)");
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Failover under load: launches go on while the leader is killed. Every launch the rack
/// acknowledged is in the new leader's table; tasks that ran before run on (same shims); no
/// service instance runs twice; agents and `torc dns` (a system service, following both
/// controllers) go on without restarting, and DNS answers for a group started after the
/// failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_under_load_loses_no_acknowledged_launch() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            controllers: 2,
            compute_nodes: 2,
            extra_yaml: format!(
                "{}{}",
                torc_test_utils::system_services(&[torc_test_utils::DNS_SYSTEM_SERVICE]),
                r#"api:
  service-groups:
    - name: web
      services:
        - name: web
          command: sleep
          args: ["600"]
          memory: 8
          cpu: 0.05
          number_of_instances: 2
"#
            ),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let leader = rack.wait_leader(&[]).await.unwrap();
    let dns = rack.wait_service_running("dns").await.unwrap();
    let server = dns.ip.expect("the dns instance has an address").to_string();
    wait_for("dns to answer", Duration::from_secs(30), || {
        let s = server.clone();
        async move { (!dig_short(&s, "bladerunner1.homer.ave").is_empty()).then_some(()) }
    })
    .await
    .unwrap();
    let shims = rack.shim_pids();

    // Launches in a loop, recording what the rack acknowledged.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let launcher = {
        let client = rack.client();
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let (mut acked, mut refused) = (Vec::new(), 0u32);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                i += 1;
                match client.launch(&sleeper(&format!("load-{i}"))).await {
                    Ok(t) => acked.push(t.id),
                    Err(_) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            (acked, refused)
        })
    };
    wait_for(
        "launches before the kill",
        Duration::from_secs(20),
        || async {
            let tasks = client.tasks(&torc_api::TaskFilter::default()).await.ok()?;
            (tasks
                .iter()
                .filter(|t| t.spec.name.as_str().starts_with("load-"))
                .count()
                >= 5)
                .then_some(())
        },
    )
    .await
    .unwrap();
    rack.kill_controller_named(&leader);
    let next = rack.wait_leader(&[&leader]).await.unwrap();
    wait_for(
        "launches after the failover",
        Duration::from_secs(20),
        || async {
            let s = rack.controller_status(&next).await.ok()?;
            let tasks = client.tasks(&torc_api::TaskFilter::default()).await.ok()?;
            let after = tasks
                .iter()
                .filter(|t| t.spec.name.as_str().starts_with("load-"))
                .count();
            (s.acting && after >= 10).then_some(())
        },
    )
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    let (acked, refused) = launcher.await.unwrap();
    println!(
        "{} launches acknowledged, {refused} refused around the failover",
        acked.len()
    );

    // Every acknowledged launch is in the new leader's table.
    let tasks = client
        .tasks(&torc_api::TaskFilter::default())
        .await
        .unwrap();
    for id in &acked {
        assert!(
            tasks.iter().any(|t| &t.id == id),
            "acknowledged launch {id} is missing after the failover"
        );
    }
    // What ran before runs on: same shims (a superset now), one dns task.
    let now = rack.shim_pids();
    assert!(
        shims.iter().all(|p| now.contains(p)),
        "a task was restarted: {shims:?} then {now:?}"
    );
    let dns_after = client.service(&"dns".parse().unwrap()).await.unwrap();
    assert_eq!(dns_after.task, dns.task, "torc dns was not restarted");
    let live_dns = tasks
        .iter()
        .filter(|t| t.spec.name.as_str() == "dns" && !t.state.is_terminal())
        .count();
    assert_eq!(live_dns, 1, "one dns instance");

    // torc dns follows the new leader: a group started now is answered.
    client.start_group(&"web".parse().unwrap()).await.unwrap();
    wait_for(
        "dns to answer for the group started after the failover",
        Duration::from_secs(30),
        || {
            let s = server.clone();
            async move { (dig_short(&s, "web.service.torc").len() == 2).then_some(()) }
        },
    )
    .await
    .unwrap();
}

/// A frozen etcd member (SIGSTOP: it accepts connections and never answers) is passed over:
/// the leader keeps its lease through the others and launches go on; the standby's copy keeps
/// following.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_member_is_passed_over() {
    let rack = ha_rack().await;
    let leader = rack.wait_leader(&[]).await.unwrap();
    let client = client_of(&rack, &leader);
    let epoch = rack.controller_status(&leader).await.unwrap().epoch;
    // The controllers pin the first endpoint: freeze that one.
    rack.etcd().unwrap().stop(0).unwrap();
    for i in 0..3 {
        let t = wait_for(
            "a launch with a frozen etcd member",
            Duration::from_secs(20),
            || async { client.launch(&sleeper(&format!("frozen-{i}"))).await.ok() },
        )
        .await
        .unwrap();
        wait_running(&client, &t.id).await;
    }
    let status = rack.controller_status(&leader).await.unwrap();
    assert!(status.acting, "{status:?}");
    assert_eq!(status.epoch, epoch, "no failover was needed");
    // The standby's copy follows (its reads come from its mirror).
    let standby = other(&leader);
    let http = rack.http_admin();
    wait_for(
        "the standby to see the launches",
        Duration::from_secs(20),
        || async {
            let tasks: Vec<TaskView> = http
                .get(format!("{}/api/v1/tasks", rack.controller_url(standby)))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (tasks
                .iter()
                .filter(|t| t.spec.name.as_str().starts_with("frozen-"))
                .count()
                == 3)
                .then_some(())
        },
    )
    .await
    .unwrap();
    rack.etcd().unwrap().cont(0).unwrap();
}

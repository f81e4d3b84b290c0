//! The ToRC Scheduler: system services, service groups, sub-schedulers, announce, and the
//! original REST API, on a real local rack.

use std::time::Duration;

use torc_api::original::OriginalTask;
use torc_api::{ServiceView, TokenRole};
use torc_client::{Client, Framework, Updates};
use torc_test_utils::{LocalRack, RackOptions, pid_alive, processes_mentioning, wait_for};
use torc_types::{FrameworkName, ServiceName, TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

const SERVICES: &str = r#"
healthcheck:
  system_services:
    - name: core
      command: sleep
      args: ["3600"]
      memory: 16
      cpu: 0.1
      node_function: controller
    - name: pcp
      command: sleep
      args: ["3600"]
      memory: 8
      cpu: 0.05
      sla: singleton_each_node
    - name: crasher
      command: sh
      args: ["-c", "exit 1"]
      memory: 8
      cpu: 0.05
      node_name: bladerunner2
    - name: once
      command: sh
      args: ["-c", "echo did it"]
      memory: 8
      cpu: 0.05
      is_job: true
    - name: web
      command: python3
      args: ["-m", "http.server", "$PORT0", "--bind", "$IP"]
      ports: 1
      memory: 32
      cpu: 0.1
      node_name: bladerunner1
      health:
        http: "http://$IP:$PORT0/"
        interval_in_seconds: 1
        timeout_in_seconds: 1
        failure_threshold: 2
    - name: after-web
      command: sleep
      args: ["3600"]
      memory: 8
      cpu: 0.05
      dependent_service: web
api:
  service-groups:
    - name: demo
      services:
        - name: worker
          command: sleep
          args: ["3600"]
          memory: 8
          cpu: 0.05
          number_of_instances: 2
        - name: helper
          command: sleep
          args: ["3600"]
          memory: 8
          cpu: 0.05
open_join: true
"#;

async fn service(client: &Client, name: &str) -> ServiceView {
    client.service(&name.parse().unwrap()).await.unwrap()
}

async fn wait_running(rack: &LocalRack, name: &str) -> ServiceView {
    rack.wait_service_running(name).await.unwrap()
}

fn pid_of_task(rack: &LocalRack, id: &TaskId) -> u32 {
    processes_mentioning(rack.dir.path())
        .into_iter()
        .find(|(_, cmd)| cmd.contains("shim") && cmd.contains(id.as_str()))
        .map(|(pid, _)| pid)
        .unwrap_or_else(|| panic!("no shim for {id}"))
}

fn rack_options() -> RackOptions {
    RackOptions {
        compute_nodes: 2,
        node_timeout_secs: 3,
        extra_yaml: SERVICES.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_services_run_where_they_should_and_come_back_when_they_die() {
    let mut rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let client = rack.client();

    // Placement by function and per-node SLA.
    let core = wait_running(&rack, "core").await;
    assert_eq!(core.node.unwrap().as_str(), "wedge");
    for node in ["wedge", "bladerunner1", "bladerunner2"] {
        let pcp = wait_running(&rack, &format!("pcp-{node}")).await;
        assert_eq!(pcp.node.unwrap().as_str(), node);
    }
    // A node that joins later gets its instance too.
    rack.add_node("bladerunner9");
    rack.start_agent("bladerunner9").unwrap();
    let pcp9 = wait_running(&rack, "pcp-bladerunner9").await;
    assert_eq!(pcp9.node.unwrap().as_str(), "bladerunner9");

    // kill -9 of a service's process: back within the restart delay (1 s) plus a poll, with a
    // new task id, and the restart counted.
    let before = service(&client, "core").await;
    let old_id = before.task.clone().unwrap();
    let shim = pid_of_task(&rack, &old_id);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let after = wait_for("core to run again", Duration::from_secs(10), || async {
        let s = service(&client, "core").await;
        (s.state == Some(TaskState::Running) && s.task.as_ref() != Some(&old_id)).then_some(s)
    })
    .await
    .unwrap();
    assert_eq!(after.restarts, before.restarts + 1);
    assert!(after.last_failure.is_some());
    assert!(!pid_alive(shim));

    // A service that always fails backs off: 1 s, 2 s, 4 s, ...
    let crasher = wait_for(
        "crasher to fail three times",
        Duration::from_secs(20),
        || async {
            let s = service(&client, "crasher").await;
            (s.restarts >= 2 && s.next_start_at.is_some()).then_some(s)
        },
    )
    .await
    .unwrap();
    let delay = crasher.next_start_at.unwrap() - crasher.last_failure.as_ref().unwrap().at;
    assert!(
        delay >= 4_000,
        "third failure in a row waits 4 s, got {delay} ms: {crasher:?}"
    );
    assert!(
        crasher
            .last_failure
            .unwrap()
            .message
            .contains("exited with code 1")
    );

    // A job runs once.
    wait_for("the job to finish", Duration::from_secs(10), || async {
        let s = service(&client, "once").await;
        (s.state == Some(TaskState::Finished)).then_some(s)
    })
    .await
    .unwrap();
    // That it is never restarted is a rule of the rack: crates/controller/tests/rules/jobs.rules.

    // Health and dependencies: web becomes healthy, then after-web starts.
    let web = wait_for("web to be healthy", Duration::from_secs(20), || async {
        let s = service(&client, "web").await;
        (s.health.state == "healthy").then_some(s)
    })
    .await
    .unwrap();
    wait_running(&rack, "after-web").await;
    // An unhealthy instance is replaced: stop answering (SIGSTOP the server).
    let web_shim = pid_of_task(&rack, web.task.as_ref().unwrap());
    let server = std::fs::read_to_string(format!("/proc/{web_shim}/task/{web_shim}/children"))
        .unwrap()
        .trim()
        .parse::<i32>()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let replaced = wait_for("web to be replaced", Duration::from_secs(30), || async {
        let s = service(&client, "web").await;
        (s.task != web.task && s.state == Some(TaskState::Running)).then_some(s)
    })
    .await
    .unwrap();
    let old = client.task(web.task.as_ref().unwrap()).await.unwrap();
    assert!(
        old.message
            .clone()
            .unwrap_or_default()
            .contains("unhealthy"),
        "{old:?}"
    );
    assert_eq!(replaced.restarts, web.restarts + 1);

    // The status page tells it all.
    let status = client.status().await.unwrap();
    let pcp = status
        .services
        .iter()
        .find(|s| s.name.as_str() == "pcp")
        .unwrap();
    assert_eq!((pcp.desired, pcp.running), (4, 4));
    let core = status
        .services
        .iter()
        .find(|s| s.name.as_str() == "core")
        .unwrap();
    assert!(core.restarts >= 1 && core.last_failure.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_start_once_and_stop_for_good() {
    let mut rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let client = rack.client();
    let http = rack.http();
    let url = rack.url();
    let token = rack.token.clone().unwrap();
    let get = |path: &str| http.get(format!("{url}{path}")).bearer_auth(&token).send();

    // The original call, twice: the instances run once.
    for _ in 0..2 {
        let r = get("/start/group?name=demo").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap(),
            serde_json::json!({"result": "done"})
        );
    }
    for name in ["worker-0", "worker-1", "helper"] {
        wait_running(&rack, name).await;
    }
    let live = |tasks: Vec<torc_api::TaskView>, name: &str| {
        tasks
            .iter()
            .filter(|t| t.name.as_str() == name && !t.state.is_terminal())
            .count()
    };
    let tasks = client.tasks(&Default::default()).await.unwrap();
    assert_eq!(live(tasks.clone(), "worker-0"), 1);
    assert_eq!(live(tasks, "helper"), 1);

    // Unknown names are 404s, not "done".
    let r = get("/start/group?name=nosuch").await.unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .delete(format!("{url}/service?name=nosuch"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The original's state-changing GETs need the token like any change.
    let r = http
        .get(format!("{url}/start/group?name=demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // DELETE of a group task ends it for good.
    let helper = service(&client, "helper").await;
    let r = http
        .delete(format!("{url}/service?name=helper"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for("helper to end", Duration::from_secs(10), || async {
        client
            .task(helper.task.as_ref().unwrap())
            .await
            .ok()
            .filter(|t| t.state.is_terminal())
    })
    .await
    .unwrap();
    // Gone for good (never restarted: crates/controller/tests/rules/groups.rules).
    assert!(
        client.service(&"helper".parse().unwrap()).await.is_err(),
        "helper is gone"
    );

    // DELETE of a system service: it is restarted.
    let core = wait_running(&rack, "core").await;
    let r = http
        .delete(format!("{url}/service?name=core"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_for("core to be back", Duration::from_secs(10), || async {
        let s = service(&client, "core").await;
        (s.state == Some(TaskState::Running) && s.task != core.task).then_some(())
    })
    .await
    .unwrap();

    // Controller kill -9 and restart: nothing duplicated, nothing lost.
    let before = client.services().await.unwrap();
    rack.kill_controller();
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    let r = get("/start/group?name=demo").await.unwrap();
    assert_eq!(r.status(), 200);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = client.services().await.unwrap();
    for b in &before {
        let a = after
            .iter()
            .find(|a| a.name == b.name)
            .unwrap_or_else(|| panic!("{} lost", b.name));
        assert!(
            a.restarts >= b.restarts,
            "{} lost its restart count",
            b.name
        );
        if b.state == Some(TaskState::Running)
            && b.name.as_str() != "crasher"
            && b.name.as_str() != "web"
        {
            assert_eq!(a.task, b.task, "{} was restarted", b.name);
        }
    }
    let tasks = client.tasks(&Default::default()).await.unwrap();
    for name in ["worker-0", "worker-1", "helper", "core"] {
        assert_eq!(live(tasks.clone(), name), 1, "{name} runs exactly once");
    }
    // Stopping the group ends its instances.
    let g = client.stop_group(&"demo".parse().unwrap()).await.unwrap();
    assert!(g.instances.is_empty());
    wait_for(
        "the group's tasks to end",
        Duration::from_secs(10),
        || async {
            let tasks = client.tasks(&Default::default()).await.ok()?;
            (live(tasks.clone(), "worker-0") + live(tasks, "worker-1") == 0).then_some(())
        },
    )
    .await
    .unwrap();
}

fn sleeper(name: &str) -> TaskSpec {
    let mut s = TaskSpec::new(name.parse().unwrap(), "sleep");
    s.args = vec!["3600".into()];
    s.resources.cpus = 0.05;
    s.resources.mem_mb = 8.0;
    s.kill_grace_ms = 1000;
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frameworks_get_their_tasks_back_or_lose_them_after_the_failover_timeout() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let client = rack.client();
    let name = FrameworkName::new("dns-scheduler").unwrap();
    // A framework acts with its own token, scoped to its own tasks.
    let fw_client = rack
        .client_as(TokenRole::Framework, Some("dns-scheduler"))
        .await
        .unwrap();
    let other_client = rack
        .client_as(TokenRole::Framework, Some("other"))
        .await
        .unwrap();
    // Its token registers no other framework.
    let err = Framework::register(
        fw_client.clone(),
        "other".parse().unwrap(),
        Duration::from_secs(3),
    )
    .await
    .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403, "{err}");

    let (mut fw, tasks) =
        Framework::register(fw_client.clone(), name.clone(), Duration::from_secs(3))
            .await
            .unwrap();
    assert!(tasks.is_empty());
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(fw.launch(&sleeper(&format!("dns-sl{i}"))).await.unwrap().id);
    }
    // Updates arrive through the long poll until all three run.
    let mut running = std::collections::BTreeSet::new();
    while running.len() < 3 {
        match fw.updates(Duration::from_secs(5)).await.unwrap() {
            Updates::Changed(ts) | Updates::Snapshot(ts) => {
                for t in ts.into_iter().filter(|t| t.state == TaskState::Running) {
                    running.insert(t.id);
                }
            }
        }
    }

    // It may not touch other tasks, nor launch under a service's name.
    let core = wait_running(&rack, "core").await;
    let err = fw.kill(core.task.as_ref().unwrap()).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409, "{err}");
    let err = fw.launch(&sleeper("core")).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409, "{err}");
    let (other, _) = Framework::register(
        other_client.clone(),
        "other".parse().unwrap(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let err = other.kill(&ids[0]).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409, "{err}");
    // Nor, with its token, use another framework's routes at all, or the admin's.
    let err = other_client.framework_tasks(&name).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403, "{err}");
    let err = other_client.launch(&sleeper("sneaky")).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403, "{err}");
    let err = other_client.tasks(&Default::default()).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 403, "{err}");

    // "Restart": a new process registers under the same name and finds its 3 tasks.
    drop(fw);
    let (fw, tasks) = Framework::register(fw_client.clone(), name.clone(), Duration::from_secs(3))
        .await
        .unwrap();
    let mut back: Vec<TaskId> = tasks.iter().map(|t| t.id.clone()).collect();
    back.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(back, want);
    assert!(tasks.iter().all(|t| t.state == TaskState::Running));
    fw.kill(&ids[2]).await.unwrap();

    // Now it goes silent for longer than its failover timeout: its tasks are killed.
    let killed = wait_for(
        "the framework's tasks to be killed",
        Duration::from_secs(20),
        || async {
            let t0 = client.task(&ids[0]).await.ok()?;
            let t1 = client.task(&ids[1]).await.ok()?;
            (t0.state == TaskState::Killed && t1.state == TaskState::Killed).then_some(t0)
        },
    )
    .await
    .unwrap();
    assert!(killed.message.unwrap().contains("failover timeout"));
    let view = client.framework(&name).await.unwrap();
    assert!(!view.active);
    // Launching needs a new registration.
    let err = fw.launch(&sleeper("late")).await.unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409);
}

fn announced(name: &str, ip: &str) -> OriginalTask {
    serde_json::from_value(serde_json::json!({
        "name": name, "controller": "torc-dns-scheduler", "id": "c0ffee", "image": "bind9",
        "node_name": "bladerunner1", "node_type": "", "node_function": "",
        "dependent_service": "", "arguments": "", "parameters": "", "memory": 128.0, "cpu": 0.2,
        "volumes": [], "privileged": false, "sla": "None", "is_metered": true,
        "is_system_service": false, "is_job": false, "network_type": "torc", "ip": ip,
        "slave_id": "x", "state": "Running", "last_update": 1475000000
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_tasks_live_by_their_lease_and_the_original_routes_keep_their_shapes() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let client = rack.client();
    let http = rack.http_admin();
    let url = rack.url();
    wait_running(&rack, "core").await;

    assert_eq!(
        http.get(format!("{url}/admin/ping"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "pong"
    );

    // /nodes: the original field names, every node.
    let nodes: Vec<serde_json::Value> = http
        .get(format!("{url}/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes.len(), 3);
    let keys: Vec<&str> = nodes[0]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "name",
        "ip",
        "external_ip",
        "management_ip",
        "node_type",
        "node_function",
        "active",
        "slave_id",
        "port_id",
        "last_seen",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }

    // Announce: it shows in /services/running, and lapses when not renewed (lease = 3 s).
    client
        .announce(&announced("dns-sl1", "192.168.2.3"))
        .await
        .unwrap();
    let running: Vec<serde_json::Value> = http
        .get(format!("{url}/services/running"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sl1 = running
        .iter()
        .find(|t| t["name"] == "dns-sl1")
        .expect("announced task listed");
    assert_eq!(sl1["controller"], "torc-dns-scheduler");
    assert_eq!(sl1["ip"], "192.168.2.3");
    let core = running
        .iter()
        .find(|t| t["name"] == "core")
        .expect("own task listed");
    for k in [
        "name",
        "controller",
        "id",
        "image",
        "node_name",
        "node_type",
        "node_function",
        "dependent_service",
        "arguments",
        "parameters",
        "memory",
        "cpu",
        "volumes",
        "privileged",
        "sla",
        "is_metered",
        "is_system_service",
        "is_job",
        "network_type",
        "ip",
        "slave_id",
        "state",
        "last_update",
    ] {
        assert!(core.get(k).is_some(), "{k} missing from {core}");
    }
    assert_eq!(core["controller"], "torc-scheduler");
    assert_eq!(core["state"], "Running");
    assert_eq!(core["is_system_service"], true);
    assert_eq!(core["node_name"], "wedge");
    assert!(
        !running.iter().any(|t| t["name"] == "once"),
        "jobs are not listed"
    );
    let metered: Vec<serde_json::Value> = http
        .get(format!("{url}/services/metered"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(metered.iter().any(|t| t["name"] == "dns-sl1"));
    assert!(!metered.iter().any(|t| t["name"] == "core"));

    // /service?id= finds a task by id prefix, CORS-open; unknown is a 404.
    let id = core["id"].as_str().unwrap();
    let r = http
        .get(format!("{url}/service?id={}", &id[..8]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"result": "core"})
    );
    assert_eq!(
        http.get(format!("{url}/service?id=zzzz"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // A sub-scheduler may not announce over a system service, nor take another's task.
    let err = client
        .announce(&announced("core", "10.0.0.1"))
        .await
        .unwrap_err();
    assert_eq!(err.status().unwrap().as_u16(), 409);
    let mut stolen = announced("dns-sl1", "10.0.0.9");
    stolen.controller = "someone-else".into();
    assert_eq!(
        client
            .announce(&stolen)
            .await
            .unwrap_err()
            .status()
            .unwrap()
            .as_u16(),
        409
    );
    // A malformed announce is a 400 naming the problem.
    let r = http
        .post(format!("{url}/service/announce"))
        .bearer_auth(rack.token.clone().unwrap())
        .header("content-type", "application/json")
        .body(r#"{"name": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("missing field"));

    // Power: no power_command configured is a clear error; an unknown node is a 404.
    let r = http
        .get(format!("{url}/node/startup?name=bladerunner1"))
        .bearer_auth(rack.token.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 501);
    assert!(r.text().await.unwrap().contains("power_command"));
    let r = http
        .get(format!("{url}/node/startup?name=nosuch"))
        .bearer_auth(rack.token.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The lease lapses.
    wait_for(
        "the announced task to lapse",
        Duration::from_secs(15),
        || async {
            let running = client.original_running().await.ok()?;
            (!running.iter().any(|t| t.name == "dns-sl1")).then_some(())
        },
    )
    .await
    .unwrap();
    let _ = ServiceName::new("x");
}

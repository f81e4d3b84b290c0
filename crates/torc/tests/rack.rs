//! The rack foundation, end to end: real controller and agent processes on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use torc_api::{TaskFilter, TaskView};
use torc_client::Client;
use torc_test_utils::{LocalRack, RackOptions, pid_alive, wait_for};
use torc_types::{NodeName, Resources, TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn spec(name: &str, cmd: &str, args: &[&str]) -> TaskSpec {
    let mut s = TaskSpec::new(name.parse().unwrap(), cmd);
    s.args = args.iter().map(|a| a.to_string()).collect();
    s.resources = Resources::new(0.1, 16.0, 0.0);
    s.kill_grace_ms = 2_000;
    s
}

async fn wait_state(client: &Client, id: &TaskId, want: TaskState) -> TaskView {
    wait_for(
        &format!("task {id} to be {want}"),
        Duration::from_secs(20),
        || async { client.task(id).await.ok().filter(|t| t.state == want) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_runs_spreads_kills_and_explains_tasks() {
    let rack = LocalRack::start(TORC, RackOptions::default())
        .await
        .unwrap();
    let client = rack.client();

    let nodes = client.nodes().await.unwrap();
    assert_eq!(nodes.len(), 5);
    assert!(nodes.iter().all(|n| n.active), "{nodes:#?}");

    // 20 tasks run, spread over all five nodes rather than piled on the first.
    let mut ids = Vec::new();
    for i in 0..20 {
        let t = client
            .launch(&spec(&format!("sleeper{i}"), "sleep", &["300"]))
            .await
            .unwrap();
        ids.push(t.id);
    }
    let mut per_node: BTreeMap<NodeName, usize> = BTreeMap::new();
    for id in &ids {
        let t = wait_state(&client, id, TaskState::Running).await;
        *per_node.entry(t.node.unwrap()).or_default() += 1;
    }
    assert_eq!(per_node.len(), 5, "spread over every node: {per_node:?}");
    assert!(per_node.values().all(|&n| n == 4), "evenly: {per_node:?}");
    let node = client.node(&"bladerunner1".parse().unwrap()).await.unwrap();
    assert_eq!(node.tasks, 4);
    assert!(
        (node.resources.allocated.cpus - 0.4).abs() < 1e-9,
        "{node:?}"
    );

    // Killing one ends it, and only it.
    let killed = client.kill(&ids[0]).await.unwrap();
    assert!(matches!(
        killed.state,
        TaskState::Killing | TaskState::Killed
    ));
    wait_state(&client, &ids[0], TaskState::Killed).await;
    assert_eq!(
        client.task(&ids[1]).await.unwrap().state,
        TaskState::Running
    );
    let running = client
        .tasks(&TaskFilter {
            state: Some(TaskState::Running),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 19);

    // A task that exits 1 is failed with exit code 1, and its stderr is in its sandbox.
    let bad = client
        .launch(&spec("bad", "sh", &["-c", "echo broken >&2; exit 1"]))
        .await
        .unwrap();
    let bad = wait_state(&client, &bad.id, TaskState::Failed).await;
    assert_eq!(bad.exit_code, Some(1));
    let err = client
        .logs(
            &bad.id,
            &torc_api::LogQuery {
                stream: torc_api::LogStream::Stderr,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(err.data, "broken\n");

    // A task that finishes is finished, with its environment and ports.
    let mut ok = spec("ok", "sh", &["-c", "echo port=$PORT0 node=$TORC_NODE"]);
    ok.ports = 2;
    ok.constraints.node_name = Some("bladerunner2".parse().unwrap());
    let ok = client.launch(&ok).await.unwrap();
    let ok = wait_state(&client, &ok.id, TaskState::Finished).await;
    assert_eq!(ok.ports.len(), 2);
    let out = client.logs(&ok.id, &Default::default()).await.unwrap();
    assert_eq!(
        out.data,
        format!("port={} node=bladerunner2\n", ok.ports[0])
    );

    // A command that does not exist fails with a message that says so.
    let missing = client
        .launch(&spec("missing", "/no/such/program", &[]))
        .await
        .unwrap();
    let missing = wait_state(&client, &missing.id, TaskState::Failed).await;
    assert!(
        missing
            .message
            .as_deref()
            .unwrap_or("")
            .contains("/no/such/program"),
        "{missing:?}"
    );

    // More memory than any node has: pending, with the reason.
    let mut huge = spec("huge", "sleep", &["1"]);
    huge.resources.mem_mb = 1e9;
    let huge = client.launch(&huge).await.unwrap();
    assert_eq!(huge.state, TaskState::Pending);
    let reason = huge.message.unwrap();
    assert!(reason.contains("1000000000 MiB memory"), "{reason}");
    assert!(reason.contains("most free"), "{reason}");
    // Killing a pending task ends it at once.
    assert_eq!(
        client.kill(&huge.id).await.unwrap().state,
        TaskState::Killed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_loses_its_tasks_and_rejoins() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            node_timeout_secs: 2,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let mut s = spec("victim", "sleep", &["300"]);
    s.constraints.node_name = Some("bladerunner1".parse().unwrap());
    let t = client.launch(&s).await.unwrap();
    wait_state(&client, &t.id, TaskState::Running).await;
    let shims_before = rack.shim_pids();
    assert_eq!(shims_before.len(), 1);

    rack.kill_agent("bladerunner1");
    rack.wait_active(&["bladerunner1".into()], false)
        .await
        .unwrap();
    let lost = wait_state(&client, &t.id, TaskState::Lost).await;
    assert!(lost.message.unwrap().contains("stopped reporting"));
    // The other nodes are untouched.
    assert!(
        client
            .node(&"bladerunner2".parse().unwrap())
            .await
            .unwrap()
            .active
    );

    // Back again: it registers, and the lost task's process (which survived the agent) is
    // stopped, since the controller no longer wants it.
    rack.start_agent("bladerunner1").unwrap();
    rack.wait_active(&["bladerunner1".into()], true)
        .await
        .unwrap();
    wait_for(
        "the orphaned task to be stopped",
        Duration::from_secs(20),
        || async { (!shims_before.iter().any(|p| pid_alive(*p))).then_some(()) },
    )
    .await
    .unwrap();
    // The lost task stays lost: a terminal state is final.
    assert_eq!(client.task(&t.id).await.unwrap().state, TaskState::Lost);
    // New work lands on the node again.
    let t2 = client.launch(&s).await.unwrap();
    wait_state(&client, &t2.id, TaskState::Running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_controller_keeps_every_task_running() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            node_timeout_secs: 5,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            client
                .launch(&spec(&format!("keep{i}"), "sleep", &["300"]))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        wait_state(&client, id, TaskState::Running).await;
    }
    let mut shims = rack.shim_pids();
    shims.sort();
    assert_eq!(shims.len(), 6);

    rack.kill_controller();
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    // Across a few heartbeats: same ids, still running, none restarted.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for id in &ids {
        let t = client.task(id).await.unwrap();
        assert_eq!(t.state, TaskState::Running, "{t:?}");
        let runs = t
            .history
            .iter()
            .filter(|h| h.state == TaskState::Running)
            .count();
        assert_eq!(runs, 1, "{t:?}");
    }
    let mut after = rack.shim_pids();
    after.sort();
    assert_eq!(shims, after, "the same processes run");
    let all = client.tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(all.len(), 6, "nothing duplicated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_readopts_its_tasks() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            node_timeout_secs: 30,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let mut s = spec("steady", "sleep", &["300"]);
    s.constraints.node_name = Some("bladerunner1".parse().unwrap());
    let steady = client.launch(&s).await.unwrap().id;
    let mut s2 = spec("brief", "sh", &["-c", "sleep 2; exit 3"]);
    s2.constraints.node_name = Some("bladerunner1".parse().unwrap());
    let brief = client.launch(&s2).await.unwrap().id;
    wait_state(&client, &steady, TaskState::Running).await;
    wait_state(&client, &brief, TaskState::Running).await;
    assert_eq!(rack.shim_pids().len(), 2);

    // While the agent is down, one task ends and the other keeps running. The new agent
    // learns both from the shims: the live one is adopted, the ended one's exit code is read
    // from its exit record.
    rack.kill_agent("bladerunner1");
    wait_for(
        "brief to end while its agent is down",
        Duration::from_secs(20),
        || async { (rack.shim_pids().len() == 1).then_some(()) },
    )
    .await
    .unwrap();
    rack.start_agent("bladerunner1").unwrap();
    rack.wait_active(&["bladerunner1".into()], true)
        .await
        .unwrap();
    let b = wait_for(
        "brief to be reported ended",
        Duration::from_secs(20),
        || async {
            client
                .task(&brief)
                .await
                .ok()
                .filter(|t| t.state.is_terminal())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (b.state, b.exit_code),
        (TaskState::Failed, Some(3)),
        "{b:?}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = client.task(&steady).await.unwrap();
    assert_eq!(t.state, TaskState::Running, "{t:?}");
    assert_eq!(
        t.history
            .iter()
            .filter(|h| h.state == TaskState::Running)
            .count(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_the_controller_keeps_serving() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let http = rack.http();
    let url = rack.url();
    let token = rack.token.clone().unwrap();
    let post = |path: &str, body: &str| {
        http.post(format!("{url}{path}"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    async fn answer(r: reqwest::Response) -> (u16, String) {
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.expect("errors are JSON");
        assert_eq!(body["status"], status);
        (status, body["error"].as_str().unwrap().to_string())
    }

    let (s, e) = answer(post("/api/v1/tasks", "{\"name\": ").await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(e.contains("line 1 column"), "{e}");

    let (s, e) = answer(
        post(
            "/api/v1/tasks",
            r#"{"name":"x","command":"true","memroy":5}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(e.contains("unknown field `memroy`"), "{e}");

    let (s, e) = answer(
        post("/api/v1/tasks", r#"{"name":"Bad Name","command":"true"}"#)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(e.contains("invalid service name"), "{e}");

    let (s, e) = answer(
        post(
            "/api/v1/tasks",
            r#"{"name":"x","command":"true","constraints":{"node_name":"nowhere"}}"#,
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 422);
    assert!(e.contains("no node named \"nowhere\""), "{e}");

    let (s, e) = answer(
        http.get(format!("{url}/api/v1/nodes/nowhere"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(e.contains("no node named \"nowhere\""), "{e}");

    let (s, e) = answer(
        http.get(format!("{url}/api/v1/tasks/nosuch.1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);
    assert!(e.contains("no task with id \"nosuch.1\""), "{e}");

    let (s, _) = answer(
        http.get(format!("{url}/api/v1/tasks/..%2Fetc"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 400);

    let (s, e) = answer(
        http.delete(format!("{url}/api/v1/tasks/nosuch.1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404, "{e}");

    // No token, wrong token.
    let (s, e) = answer(
        http.post(format!("{url}/api/v1/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);
    assert!(e.contains("Bearer"), "{e}");
    let (s, e) = answer(
        http.get(format!("{url}/api/v1/tasks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401, "reads need a credential too");
    assert!(e.contains("needs a credential"), "{e}");
    let (s, _) = answer(
        http.delete(format!("{url}/api/v1/tasks/x.1"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 401);

    // An agent for a node the config does not know is refused, saying why.
    let (s, e) = answer(
        post(
            "/api/v1/agents/register",
            &serde_json::json!({
                "node": "stranger", "ip": "127.9.9.9", "agent_url": "http://127.9.9.9:5051",
                "resources": {"cpus": 1, "mem_mb": 1, "disk_mb": 1}, "port_range": "31000-31001",
                "runtime": {"kind": "process", "limits_enforced": false}, "tasks": []
            })
            .to_string(),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 403);
    assert!(
        e.contains("not in the rack config") && e.contains("rack.yaml"),
        "{e}"
    );

    let (s, _) = answer(
        http.get(format!("{url}/no/such/route"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 404);

    // Still serving.
    assert_eq!(rack.client().nodes().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_serve_host_and_task_metrics() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let mut busy = spec("busy", "sh", &["-c", "while :; do :; done"]);
    busy.constraints.node_name = Some("bladerunner1".parse().unwrap());
    busy.metered = true;
    let busy = client.launch(&busy).await.unwrap();
    wait_state(&client, &busy.id, TaskState::Running).await;
    let node = client.node(&"bladerunner1".parse().unwrap()).await.unwrap();
    let agent = node.agent_url.unwrap();
    let http = rack.http();
    let token = rack.token.clone().unwrap();
    let m: torc_api::NodeMetrics = wait_for(
        "the busy task's CPU to show",
        Duration::from_secs(20),
        || async {
            let m: torc_api::NodeMetrics = http
                .get(format!("{agent}/v1/metrics"))
                .bearer_auth(&token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            m.tasks
                .iter()
                .any(|t| t.id == busy.id && t.cpu_user_percent + t.cpu_system_percent > 50.0)
                .then_some(m)
        },
    )
    .await
    .unwrap();
    assert_eq!(m.node.as_str(), "bladerunner1");
    assert!(m.cpu.cores >= 1);
    assert!(
        m.cpu.user_percent + m.cpu.system_percent > 10.0,
        "{:?}",
        m.cpu
    );
    assert!(m.memory.total_bytes > 0 && m.memory.used_bytes <= m.memory.total_bytes);
    assert!(m.interfaces.iter().any(|i| i.name == "lo"));
    let task = m.tasks.iter().find(|t| t.id == busy.id).unwrap();
    assert!(
        task.metered && task.memory_bytes > 0 && task.processes >= 1,
        "{task:?}"
    );
    let text = http
        .get(format!("{agent}/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    torc_test_utils::prom::promtool_check(&text).unwrap();
    assert!(
        text.contains("# TYPE torc_node_cpu_percent gauge"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "torc_task_cpu_percent{{node=\"bladerunner1\",task=\"{}\"",
            busy.id
        )),
        "{text}"
    );
    let history: Vec<torc_api::NodeMetrics> = http
        .get(format!("{agent}/v1/metrics/history"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!history.is_empty());
}

/// The controller's own `/metrics`: a viewer token reads it (none is refused), the real
/// `promtool` parses and lints it, and it says what the rack holds and what commits cost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_serves_its_own_metrics() {
    use torc_test_utils::prom::{promtool_check, sample};
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let keep = client
        .launch(&spec("keep", "sleep", &["300"]))
        .await
        .unwrap();
    let stop = client
        .launch(&spec("stop", "sleep", &["300"]))
        .await
        .unwrap();
    wait_state(&client, &keep.id, TaskState::Running).await;
    wait_state(&client, &stop.id, TaskState::Running).await;
    client.kill(&stop.id).await.unwrap();
    wait_state(&client, &stop.id, TaskState::Killed).await;

    let url = format!("{}/metrics", rack.url());
    let http = rack.http();
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    let viewer = rack
        .make_token(torc_api::TokenRole::Viewer, None)
        .await
        .unwrap();
    let response = http.get(&url).bearer_auth(&viewer).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let text = response.text().await.unwrap();
    promtool_check(&text).unwrap();
    let active = (client.nodes().await.unwrap().iter())
        .filter(|n| n.active)
        .count() as f64;
    for (series, want) in [
        ("torc_controller_acting", 1.0),
        ("torc_controller_tasks{state=\"running\"}", 1.0),
        ("torc_controller_tasks{state=\"killed\"}", 1.0),
        ("torc_controller_tasks{state=\"lost\"}", 0.0),
        ("torc_controller_nodes{state=\"active\"}", active),
        (
            "torc_controller_store_commits_total{result=\"failed\"}",
            0.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    let commits = sample(&text, "torc_controller_store_commits_total{result=\"ok\"}").unwrap();
    assert!(
        commits >= 4.0,
        "two launches, two running reports, a kill: {text}"
    );
    assert_eq!(
        sample(&text, "torc_controller_store_commit_duration_seconds_count"),
        Some(commits),
        "{text}"
    );
    assert!(sample(&text, "process_resident_memory_bytes") > Some(0.0));
}

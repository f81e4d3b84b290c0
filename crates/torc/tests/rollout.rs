//! Reload and rollout end to end (issue 21 part 4), with real controller and agent processes
//! on loopback and the real `torc` CLI: a config with a typo is refused naming the key, and
//! changes nothing; a viewer may not apply; `--dry-run` prints the diff and changes nothing;
//! `torc apply` of a changed service of 3 instances (one per compute node, each with an HTTP
//! health check) replaces them one at a time, never leaving fewer than 2 of them running and
//! healthy, the next instance's task started only after the last one's new task ran, while an
//! added service starts and a changed key that needs a restart is named; a broken version sent
//! by SIGHUP (the controller reads its file again), whose tasks fail their health check, stops
//! after the first instance and rolls it back, while a removed service stops; a version whose
//! command exits at once, by `torc apply`, likewise. After each rollback every instance runs
//! the old spec, healthy.

use std::time::Duration;

use torc_api::{EventKind, RackEvent, ServiceView, StatusView};
use torc_client::Client;
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// The service under test: an HTTP server on each compute node, health-checked.
const ROLL: &str = r#"
healthcheck:
  system_services:
    - name: roll
      command: python3
      args: ["-m", "http.server", "$PORT0", "--bind", "$IP"]
      env: {V: "1"}
      ports: 1
      memory: 32
      cpu: 0.1
      sla: singleton_each_slave
      health:
        http: "http://$IP:$PORT0/"
        interval_in_seconds: 1
        timeout_in_seconds: 1
        failure_threshold: 2
"#;

/// A service `apply` adds (the list of system services is the config's last key).
const EXTRA: &str = r#"    - name: extra
      command: sleep
      args: ["600"]
      memory: 8
      cpu: 0.05
"#;

async fn status(client: &Client) -> StatusView {
    client.status().await.unwrap()
}

/// The instances of `roll`, by name.
fn instances(s: &StatusView) -> Vec<ServiceView> {
    let mut out: Vec<ServiceView> = (s.services.iter())
        .filter(|s| s.name.as_str() == "roll")
        .flat_map(|s| s.instances.clone())
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn healthy(instances: &[ServiceView]) -> usize {
    (instances.iter())
        .filter(|i| i.state == Some(TaskState::Running) && i.health.state == "healthy")
        .count()
}

/// Waits until all 3 instances run and are healthy, with no rollout going on; their views.
async fn all_healthy(client: &Client) -> Vec<ServiceView> {
    wait_for(
        "3 healthy instances of roll and no rollout going on",
        Duration::from_secs(90),
        || async {
            let s = client.status().await.ok()?;
            let going = s.rollouts.iter().any(|r| r.state != "rolled back");
            let i = instances(&s);
            (i.len() == 3 && healthy(&i) == 3 && !going).then_some(i)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The value of `V` in the spec of each instance's task.
async fn versions(client: &Client, instances: &[ServiceView]) -> Vec<String> {
    let mut out = Vec::new();
    for i in instances {
        let task = client.task(i.task.as_ref().unwrap()).await.unwrap();
        out.push(task.spec.env.get("V").cloned().unwrap_or_default());
    }
    out
}

async fn rollout_events(client: &Client, after: u64) -> Vec<RackEvent> {
    let events = client.events(after).await.unwrap();
    (events.into_iter())
        .filter(|e| e.kind == EventKind::Rollout)
        .collect()
}

fn last_seq(events: &[RackEvent]) -> u64 {
    events.iter().map(|e| e.seq).max().unwrap_or(0)
}

/// Waits for a rollout line containing `words` after `after`; all rollout lines until then.
async fn wait_event(client: &Client, after: u64, words: &str) -> Vec<RackEvent> {
    wait_for(
        &format!("a rollout event saying {words:?}"),
        Duration::from_secs(90),
        || async {
            let events = rollout_events(client, after).await;
            events
                .iter()
                .any(|e| e.message.contains(words))
                .then_some(events)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

fn write_config(rack: &LocalRack, text: &str) -> std::path::PathBuf {
    let path = rack.dir.path().join("next.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_rolls_one_instance_at_a_time_and_a_broken_version_rolls_back() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 3,
            extra_yaml: ROLL.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let v1_text = std::fs::read_to_string(&rack.config_path).unwrap();
    let before = all_healthy(&client).await;
    let ids = |i: &[ServiceView]| i.iter().map(|i| i.task.clone()).collect::<Vec<_>>();
    assert_eq!(versions(&client, &before).await, ["1", "1", "1"]);

    // A typo is refused, naming the key; nothing changes.
    let typo = write_config(&rack, &v1_text.replace("memory: 32", "memroy: 32"));
    let (ok, _, err) = rack.torc(TORC, &["apply", "-f", typo.to_str().unwrap()]);
    assert!(!ok, "a config with a typo was applied");
    assert!(
        err.contains("memroy"),
        "the error does not name the key: {err}"
    );
    assert!(err.contains("system_services[0]"), "{err}");
    assert!(
        err.contains("next.yaml:"),
        "the error does not name the file: {err}"
    );

    // A dry run prints the diff and changes nothing.
    // v2: `roll` changed, a service added, and a key that needs a restart.
    assert!(v1_text.ends_with(ROLL) && v1_text.contains("timeout_in_seconds: 10\n"));
    let v2_text = v1_text
        .replace(r#"V: "1""#, r#"V: "2""#)
        .replace("timeout_in_seconds: 10\n", "timeout_in_seconds: 12\n")
        + EXTRA;
    let v2 = write_config(&rack, &v2_text);
    let (ok, out, err) = rack.torc(TORC, &["apply", "--dry-run", "-f", v2.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("~ roll: env changed (would roll out"), "{out}");
    assert!(out.contains("+ extra: added (would start)"), "{out}");
    assert!(
        out.contains("! stateclean: changed, needs a restart"),
        "{out}"
    );
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert_eq!(std::fs::read_to_string(&rack.config_path).unwrap(), v1_text);
    assert!(rollout_events(&client, 0).await.is_empty());
    let now = instances(&status(&client).await);
    assert_eq!(ids(&now), ids(&before), "a dry run replaced tasks");

    // Only an admin applies a config, a dry run included (the diff shows the config).
    let viewer = rack
        .client_as(torc_api::TokenRole::Viewer, None)
        .await
        .unwrap();
    for dry_run in [true, false] {
        let refused = viewer
            .apply_config(&v2_text, "v2.yaml", dry_run)
            .await
            .unwrap_err();
        assert_eq!(refused.status().map(|s| s.as_u16()), Some(403), "{refused}");
    }

    // The apply: one instance at a time, never fewer than 2 healthy.
    let start = last_seq(&client.events(0).await.unwrap());
    let (ok, out, err) = rack.torc(TORC, &["apply", "-f", v2.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("~ roll: env changed (rolling out one instance at a time)"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&rack.config_path).unwrap(),
        v2_text,
        "the controller's config file is the applied config"
    );
    rack.wait_service_running("extra").await.unwrap();
    let (mut fewest, mut saw_status) = (3, false);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s = status(&client).await;
        let i = instances(&s);
        fewest = fewest.min(healthy(&i));
        if let Some(r) = s.rollouts.iter().find(|r| r.state == "rolling") {
            assert_eq!((r.service.as_str(), r.of), ("roll", 3), "{r:?}");
            if !saw_status {
                let (ok, out, _) = rack.torc(TORC, &["status"]);
                saw_status = ok && out.contains("ROLLOUT") && out.contains("rolling");
            }
        }
        let done = rollout_events(&client, start).await;
        if done.iter().any(|e| e.message.contains("done")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the rollout did not end: {done:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        fewest >= 2,
        "only {fewest} of 3 instances were healthy during the rollout"
    );
    assert!(saw_status, "`torc status` never showed the rollout");
    let after = all_healthy(&client).await;
    assert_eq!(versions(&client, &after).await, ["2", "2", "2"]);
    assert!(
        after.iter().all(|i| i.restarts == 0),
        "a replacement counted as a restart: {after:?}"
    );
    // Every instance was replaced, one after another: replacing X, X replaced, for each.
    let events = rollout_events(&client, start).await;
    let steps: Vec<String> = (events.iter())
        .filter_map(|e| {
            let m = &e.message;
            let name = |w: &str| m.split(w).nth(1)?.split(' ').next().map(str::to_string);
            if m.contains(": replacing ") {
                name(": replacing ").map(|n| format!("start {n}"))
            } else if m.contains(" replaced") {
                name(": ").map(|n| format!("done {n}"))
            } else {
                None
            }
        })
        .collect();
    let names: Vec<String> = before.iter().map(|i| i.name.to_string()).collect();
    let want: Vec<String> = names
        .iter()
        .flat_map(|n| [format!("start {n}"), format!("done {n}")])
        .collect();
    assert_eq!(steps, want, "{events:#?}");
    // The task list says the same: each new task was created after the last one ran.
    let mut new_tasks = Vec::new();
    for i in &after {
        new_tasks.push(client.task(i.task.as_ref().unwrap()).await.unwrap());
    }
    new_tasks.sort_by_key(|t| t.created_at);
    for pair in new_tasks.windows(2) {
        let ran = (pair[0].history.iter())
            .find(|h| h.state == TaskState::Running)
            .unwrap()
            .at;
        assert!(
            pair[1].created_at >= ran,
            "{} was created before {} ran",
            pair[1].id,
            pair[0].id
        );
    }

    // A broken version by SIGHUP: it serves nothing, so it fails its health check.
    // It also removes `extra`.
    let v3_text = v2_text
        .replace(
            r#"args: ["-m", "http.server", "$PORT0", "--bind", "$IP"]"#,
            r#"args: ["-c", "import time; time.sleep(600)"]"#,
        )
        .replace(EXTRA, "");
    assert_ne!(v3_text, v2_text);
    std::fs::write(&rack.config_path, &v3_text).unwrap();
    let start = last_seq(&client.events(0).await.unwrap());
    let pid = nix::unistd::Pid::from_raw(rack.controller_pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let events = wait_event(&client, start, "rollback of system service roll done").await;
    let text: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert!(
        text[0].contains("removed extra; changed roll (args)"),
        "{text:#?}"
    );
    assert!(text[0].contains("needs a restart: stateclean"), "{text:#?}");
    let services = client.services().await.unwrap();
    assert!(
        services.iter().all(|s| s.name.as_str() != "extra"),
        "{services:?}"
    );
    let replacing = text.iter().filter(|m| m.contains(": replacing ")).count();
    assert!(
        text.iter()
            .any(|m| m.contains("stopped") && m.contains("unhealthy")),
        "{text:#?}"
    );
    // One instance tried the new spec, and one was replaced back.
    assert_eq!(replacing, 2, "{text:#?}");
    let rolled = all_healthy(&client).await;
    assert_eq!(versions(&client, &rolled).await, ["2", "2", "2"]);
    for i in &rolled {
        let t = client.task(i.task.as_ref().unwrap()).await.unwrap();
        assert_eq!(t.spec.args[1], "http.server", "{t:?}");
    }
    let s = status(&client).await;
    assert_eq!(s.rollouts.len(), 1, "{:?}", s.rollouts);
    assert_eq!(s.rollouts[0].state, "rolled back");

    // A version whose command exits at once, by `torc apply`: the same.
    let v4_text = v2_text.replace("command: python3", "command: \"false\"");
    let v4 = write_config(&rack, &v4_text);
    let start = last_seq(&client.events(0).await.unwrap());
    let (ok, out, err) = rack.torc(TORC, &["apply", "-f", v4.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("~ roll: args, command changed"), "{out}");
    let events = wait_event(&client, start, "rollback of system service roll done").await;
    let text: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    let replacing = text.iter().filter(|m| m.contains(": replacing ")).count();
    assert_eq!(replacing, 2, "{text:#?}");
    assert!(
        text.iter()
            .any(|m| m.contains("stopped") && m.contains("failed")),
        "{text:#?}"
    );
    let rolled = all_healthy(&client).await;
    assert_eq!(versions(&client, &rolled).await, ["2", "2", "2"]);
    for i in &rolled {
        let t = client.task(i.task.as_ref().unwrap()).await.unwrap();
        assert_eq!(t.spec.command, "python3", "{t:?}");
    }
}

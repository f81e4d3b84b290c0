//! Node maintenance end to end, with real controller and agent processes on loopback and the
//! real `torc` CLI: cordon keeps new tasks off a node and uncordon lets them on again, both
//! surviving a SIGKILL of the controller; a drain moves a node's service instances elsewhere
//! (each replacement running before the old task is killed) and leaves its pinned instances
//! and directly launched tasks; a drain with no room waits and says why; the power command (a
//! script this test writes, recording every call's argv) runs for `on`, `off` and `status`,
//! failures included, each call in the event feed and its state shown by `torc nodes`; the
//! nodes page's buttons in headless Chromium.

use std::path::{Path, PathBuf};
use std::time::Duration;

use torc_api::{EventKind, NodeView, PowerState, RackEvent, TaskFilter, TaskView};
use torc_client::Client;
use torc_test_utils::{Browser, LocalRack, RackOptions, wait_for};
use torc_types::{NodeName, ServiceName, TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn node(name: &str) -> NodeName {
    name.parse().unwrap()
}

fn sleeper(name: &str, on: Option<&str>) -> TaskSpec {
    let mut s = TaskSpec::new(name.parse().unwrap(), "sleep");
    s.args = vec!["600".into()];
    s.resources = torc_types::Resources::new(0.05, 8.0, 0.0);
    s.kill_grace_ms = 1_000;
    s.constraints.node_name = on.map(node);
    s
}

async fn wait_state(client: &Client, id: &TaskId, want: TaskState) -> TaskView {
    wait_for(
        &format!("task {id} to be {want}"),
        Duration::from_secs(30),
        || async { client.task(id).await.ok().filter(|t| t.state == want) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The tasks of the rack that live and are not being killed.
async fn live(client: &Client) -> Vec<TaskView> {
    let all = client.tasks(&TaskFilter::default()).await.unwrap();
    (all.into_iter())
        .filter(|t| !t.state.is_terminal() && t.state != TaskState::Killing)
        .collect()
}

/// The maintenance lines of the event feed.
async fn maintenance_events(client: &Client) -> Vec<RackEvent> {
    let events = client.events(0).await.unwrap();
    events
        .into_iter()
        .filter(|e| e.kind == EventKind::Maintenance)
        .collect()
}

/// The `torc nodes` row of `name`.
fn nodes_row(rack: &LocalRack, name: &str) -> String {
    let (ok, out, err) = rack.torc(TORC, &["nodes"]);
    assert!(ok, "{err}");
    out.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row for {name} in {out}"))
        .to_string()
}

/// When a task entered `state`, from its history.
fn entered(t: &TaskView, state: TaskState) -> u64 {
    (t.history.iter())
        .find(|h| h.state == state)
        .unwrap_or_else(|| panic!("{} was never {state}: {:?}", t.id, t.history))
        .at
}

/// Starts the group `shop` and waits until its 3 instances run, every one on `on` (the test
/// cordoned the other nodes); their tasks.
async fn shop_runs_on(rack: &LocalRack, on: &NodeName) -> Vec<TaskId> {
    let client = rack.client();
    client
        .start_group(&"shop".parse::<ServiceName>().unwrap())
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let s = rack
            .wait_service_running(&format!("web-{i}"))
            .await
            .unwrap();
        assert_eq!(s.node.as_ref(), Some(on), "{s:?}");
        tasks.push(s.task.unwrap());
    }
    tasks
}

const SHOP: &str = r#"
healthcheck:
  system_services:
    - name: pinned
      command: sleep
      args: ["600"]
      memory: 8
      cpu: 0.05
      sla: singleton_each_slave
api:
  service-groups:
    - name: shop
      services:
        - name: web
          command: sleep
          args: ["600"]
          memory: 8
          cpu: 0.05
          number_of_instances: 3
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cordon_keeps_tasks_off_and_a_drain_moves_services_but_not_singletons() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: SHOP.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let (b1, b2) = (node("bladerunner1"), node("bladerunner2"));
    rack.wait_service_running("pinned-bladerunner1")
        .await
        .unwrap();
    rack.wait_service_running("pinned-bladerunner2")
        .await
        .unwrap();

    // Cordoned, bladerunner2 takes no new task (a pinned one waits, saying why), and what runs
    // there keeps running.
    let (ok, out, err) = rack.torc(TORC, &["node", "cordon", "bladerunner2"]);
    assert!(ok, "{err}");
    assert!(out.contains("node bladerunner2 cordoned"), "{out}");
    assert!(nodes_row(&rack, "bladerunner2").contains("cordoned"));
    let events = maintenance_events(&client).await;
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(
        events[0].message,
        "node bladerunner2 cordoned: no new task is placed on it"
    );
    let mut spread = Vec::new();
    for i in 0..4 {
        spread.push(
            client
                .launch(&sleeper(&format!("free{i}"), None))
                .await
                .unwrap()
                .id,
        );
    }
    for id in &spread {
        let t = wait_state(&client, id, TaskState::Running).await;
        assert_ne!(t.node.as_ref(), Some(&b2), "{t:?}");
    }
    let waiting = client
        .launch(&sleeper("waiting", Some("bladerunner2")))
        .await
        .unwrap();
    assert_eq!(waiting.state, TaskState::Pending);
    let why = waiting.message.unwrap();
    assert!(why.contains("cordoned (bladerunner2)"), "{why}");
    let pinned2 = client
        .service(&"pinned-bladerunner2".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(pinned2.state, Some(TaskState::Running));

    // With wedge cordoned too, the group's instances all go to bladerunner1.
    assert!(rack.torc(TORC, &["node", "cordon", "wedge"]).0);
    shop_runs_on(&rack, &b1).await;

    // The cordons are stored: a controller killed and started again keeps them.
    rack.kill_controller();
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    assert!(client.node(&b2).await.unwrap().cordoned);
    assert!(client.node(&node("wedge")).await.unwrap().cordoned);
    let still = client.task(&waiting.id).await.unwrap();
    assert_eq!(still.state, TaskState::Pending, "{still:?}");

    // Uncordoned, bladerunner2 takes tasks again: the waiting one runs there.
    let (ok, out, err) = rack.torc(TORC, &["node", "uncordon", "bladerunner2"]);
    assert!(ok, "{err}");
    assert!(out.contains("uncordoned"), "{out}");
    let placed = wait_state(&client, &waiting.id, TaskState::Running).await;
    assert_eq!(placed.node, Some(b2.clone()));
    assert!(!nodes_row(&rack, "bladerunner2").contains("cordoned"));

    // A directly launched task on bladerunner1, which the drain leaves.
    let direct = client
        .launch(&sleeper("direct", Some("bladerunner1")))
        .await
        .unwrap();
    wait_state(&client, &direct.id, TaskState::Running).await;
    let pinned1 = rack
        .wait_service_running("pinned-bladerunner1")
        .await
        .unwrap();
    let on_b1: Vec<TaskView> = (live(&client).await.into_iter())
        .filter(|t| t.node.as_ref() == Some(&b1))
        .collect();
    let webs_before = (on_b1.iter())
        .filter(|t| t.name.as_str().starts_with("web-"))
        .count();
    assert_eq!(webs_before, 3, "{on_b1:#?}");

    // Drained, bladerunner1's web instances move to bladerunner2 (wedge is cordoned).
    let (ok, out, err) = rack.torc(TORC, &["node", "drain", "bladerunner1", "--timeout", "90"]);
    assert!(ok, "{err}");
    assert!(out.contains("done: "), "{out}");
    assert!(out.contains(&format!("done: {webs_before} moved")), "{out}");
    assert!(out.contains("left in place"), "{out}");

    let after = live(&client).await;
    let on_b1_after: Vec<&TaskView> = (after.iter())
        .filter(|t| t.node.as_ref() == Some(&b1))
        .collect();
    // The pinned instance and the tasks no service restarts stay, the very same tasks.
    assert!(
        on_b1_after
            .iter()
            .any(|t| t.id == pinned1.task.clone().unwrap())
    );
    assert!(on_b1_after.iter().any(|t| t.id == direct.id));
    assert!(
        !on_b1_after
            .iter()
            .any(|t| t.name.as_str().starts_with("web-")),
        "{on_b1_after:#?}"
    );
    assert!(
        (on_b1.iter())
            .filter(|t| t.name.as_str().starts_with("free"))
            .all(|t| on_b1_after.iter().any(|a| a.id == t.id)),
        "directly launched tasks stay"
    );
    // Each moved instance's replacement ran before its old task was asked to end: no gap.
    for old in on_b1.iter().filter(|t| t.name.as_str().starts_with("web-")) {
        let old = client.task(&old.id).await.unwrap();
        let killed_at = entered(&old, TaskState::Killing);
        let service = client.service(&old.name).await.unwrap();
        let new = client.task(service.task.as_ref().unwrap()).await.unwrap();
        assert_eq!(new.node, Some(b2.clone()), "{new:?}");
        assert_eq!(new.state, TaskState::Running);
        assert!(
            entered(&new, TaskState::Running) <= killed_at,
            "{} ran at {} after {} was killed at {killed_at}",
            new.id,
            entered(&new, TaskState::Running),
            old.id
        );
        assert!(
            old.message
                .as_deref()
                .unwrap_or("")
                .contains("moved off bladerunner1")
        );
    }
    let view = client.node(&b1).await.unwrap();
    let drain = view.drain.clone().unwrap();
    assert!(view.cordoned && drain.done_at.is_some(), "{view:?}");
    assert_eq!(drain.moved as usize, webs_before);
    assert!(
        drain
            .left
            .iter()
            .any(|l| l.contains("pinned-bladerunner1 is pinned")),
        "{drain:?}"
    );
    let events = maintenance_events(&client).await;
    let said = |needle: &str| events.iter().any(|e| e.message.contains(needle));
    assert!(said("drain of bladerunner1 started"), "{events:#?}");
    assert!(said("drain of bladerunner1: moving web-"), "{events:#?}");
    assert!(said("drain of bladerunner1 done"), "{events:#?}");

    // Clear errors: an unknown node, a drain of a node already draining.
    let (ok, _, err) = rack.torc(TORC, &["node", "drain", "nosuch"]);
    assert!(!ok && err.contains("no node named \"nosuch\""), "{err}");
    // No room: every other node cordoned (wedge, and bladerunner1 by its drain), a drain of
    // bladerunner2 waits and says so.
    // The CLI gives up waiting at its timeout, saying why and that the drain goes on.
    let (ok, out, err) = rack.torc(TORC, &["node", "drain", "bladerunner2", "--timeout", "1"]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("the drain of bladerunner2 is not done after 1 s"),
        "{err}"
    );
    assert!(err.contains("it goes on in the controller"), "{err}");
    let (ok, _, err) = rack.torc(TORC, &["node", "drain", "bladerunner2"]);
    assert!(
        !ok && err.contains("node bladerunner2 is already draining"),
        "{err}"
    );
    let waits = wait_for(
        "the drain to say it waits",
        Duration::from_secs(20),
        || async {
            let n: NodeView = client.node(&b2).await.ok()?;
            n.drain.and_then(|d| d.waiting)
        },
    )
    .await
    .unwrap();
    assert!(waits.contains("no room for web-"), "{waits}");
    assert!(waits.contains("cordoned"), "{waits}");
    assert!(nodes_row(&rack, "bladerunner2").contains("draining"));
    // Uncordoning stops it; the web instances still run on bladerunner2.
    assert!(rack.torc(TORC, &["node", "uncordon", "bladerunner2"]).0);
    let stopped = client.node(&b2).await.unwrap().drain.unwrap();
    assert_eq!(stopped.stopped.as_deref(), Some("the node was uncordoned"));
    for i in 0..3 {
        let s = rack
            .wait_service_running(&format!("web-{i}"))
            .await
            .unwrap();
        assert_eq!(s.state, Some(TaskState::Running));
    }
}

/// Writes the fake power command: it appends its argv (each argument in brackets) to `log`,
/// says `Chassis Power is on|off` for `status`, and fails for `off` of bladerunner2.
fn power_script(dir: &Path, log: &Path) -> PathBuf {
    let path = dir.join("fake-ipmitool");
    let script = format!(
        r#"#!/bin/sh
line=""
for a in "$@"; do line="$line[$a]"; done
echo "$line" >> '{}'
case "$1 $2" in
  "status bladerunner1") echo "Chassis Power is on" ;;
  "status bladerunner2") echo "Chassis Power is off" ;;
  "off bladerunner2") echo "Error: BMC at bladerunner2 unreachable" >&2; exit 3 ;;
  *) echo "Chassis Power Control: $1" ;;
esac
"#,
        log.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    path
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_commands_run_with_their_argv_and_land_in_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let script = power_script(dir.path(), &log);
    let s = script.display();
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: format!(
                "power_command:\n  on: [\"{s}\", \"on\", \"{{node}}\", \"two words\"]\n  off: [\"{s}\", \"off\", \"{{node}}\", \"two words\"]\n  status: [\"{s}\", \"status\", \"{{node}}\", \"two words\"]\n"
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();

    let (ok, out, err) = rack.torc(TORC, &["node", "power", "status", "bladerunner1"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("power status of bladerunner1 ran: power is on"),
        "{out}"
    );
    assert!(out.contains("Chassis Power is on"), "{out}");
    assert_eq!(calls(&log), ["[status][bladerunner1][two words]"]);

    let (ok, _, err) = rack.torc(TORC, &["node", "power", "off", "bladerunner2"]);
    assert!(!ok, "a failing command fails the CLI");
    assert!(err.contains("exited with 3"), "{err}");
    assert!(
        err.contains("Error: BMC at bladerunner2 unreachable"),
        "{err}"
    );

    let (ok, out, err) = rack.torc(TORC, &["node", "power", "on", "bladerunner1"]);
    assert!(ok, "{err}");
    assert!(out.contains("Chassis Power Control: on"), "{out}");
    let (ok, _, err) = rack.torc(TORC, &["node", "power", "status", "bladerunner2"]);
    assert!(ok, "{err}");
    // The original API's /node/shutdown runs the same command, and is recorded the same way.
    let answer = rack
        .http_admin()
        .get(format!("{}/node/shutdown?name=bladerunner1", rack.url()))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let (ok, _, err) = rack.torc(TORC, &["node", "power", "reboot", "bladerunner1"]);
    assert!(!ok && err.contains("reboot"), "{err}");
    let (ok, _, err) = rack.torc(TORC, &["node", "power", "on", "nosuch"]);
    assert!(!ok && err.contains("no node named \"nosuch\""), "{err}");
    assert_eq!(
        calls(&log),
        [
            "[status][bladerunner1][two words]",
            "[off][bladerunner2][two words]",
            "[on][bladerunner1][two words]",
            "[status][bladerunner2][two words]",
            "[off][bladerunner1][two words]",
        ]
    );

    // Every call is in the feed with its outcome and output; the failure as an error.
    let events = maintenance_events(&client).await;
    let lines: Vec<(String, String)> = (events.iter())
        .map(|e| (e.level.to_string(), e.message.clone()))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines[0].0, "info");
    assert!(lines[0].1.starts_with(&format!("power status of bladerunner1 ran ({s} status bladerunner1 two words, exit 0, power on): Chassis Power is on")), "{lines:#?}");
    assert_eq!(lines[1].0, "error");
    assert!(
        lines[1].1.starts_with("power off of bladerunner2 failed ("),
        "{lines:#?}"
    );
    assert!(
        lines[1]
            .1
            .contains("exit 3): Error: BMC at bladerunner2 unreachable"),
        "{lines:#?}"
    );
    assert!(
        lines[2].1.contains("power on of bladerunner1 ran"),
        "{lines:#?}"
    );
    assert!(lines[3].1.contains("power off"), "{lines:#?}");
    assert!(
        lines[4].1.starts_with("power off of bladerunner1 ran"),
        "{lines:#?}"
    );

    // The state each status read, and the last action, shown by `torc nodes` and kept across a
    // controller's SIGKILL.
    rack.kill_controller();
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    let b1 = client.node(&node("bladerunner1")).await.unwrap();
    let p = b1.power.unwrap();
    assert_eq!(p.state, Some(PowerState::On));
    assert_eq!(p.last.action.to_string(), "off");
    let b2 = client.node(&node("bladerunner2")).await.unwrap();
    assert_eq!(b2.power.unwrap().state, Some(PowerState::Off));
    assert!(nodes_row(&rack, "bladerunner1").ends_with("on (off ran)"));
    assert!(nodes_row(&rack, "bladerunner2").ends_with("off"));
    assert!(nodes_row(&rack, "wedge").ends_with("-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_page_cordons_drains_and_asks_power_behind_a_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let script = power_script(dir.path(), &log);
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: format!(
                "{SHOP}power_command:\n  on: [\"{s}\", \"on\", \"{{node}}\"]\n  off: [\"{s}\", \"off\", \"{{node}}\"]\n  status: [\"{s}\", \"status\", \"{{node}}\"]\n",
                s = script.display()
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let b = Browser::start_with(&["--ignore-certificate-errors"])
        .await
        .unwrap();
    b.goto(&format!("{}/", rack.url())).await.unwrap();
    b.wait_text("Log in to the rack").await.unwrap();
    b.eval(&format!(
        "document.querySelector('#token-input').value = '{}'; document.querySelector('#dialog-form button[value=ok]').click(); return true",
        rack.token.as_deref().unwrap()
    ))
    .await
    .unwrap();
    b.wait_text("Nodes").await.unwrap();
    b.goto(&format!("{}/#/agents", rack.url())).await.unwrap();
    b.wait_text("Power status").await.unwrap();

    // Clicks a node's button, and confirms (`ok`) or cancels the dialog it opens.
    let click = |what: &'static str, name: &'static str, answer: &'static str| {
        let b = &b;
        async move {
            b.eval(&format!(
                "document.querySelector('[data-node-act=\"{what}\"][data-node=\"{name}\"]').click(); return true"
            ))
            .await
            .unwrap();
            b.wait_text("Yes, do it").await.unwrap();
            b.eval(&format!(
                "document.querySelector('#dialog-form button[value={answer}]').click(); return true"
            ))
            .await
            .unwrap();
        }
    };
    let b1 = node("bladerunner1");
    // Cancelled, nothing happens.
    click("cordon", "bladerunner1", "cancel").await;
    b.wait_text("Agents").await.unwrap();
    assert!(!client.node(&b1).await.unwrap().cordoned);
    click("cordon", "bladerunner1", "ok").await;
    wait_for("the cordon", Duration::from_secs(30), || async {
        client.node(&b1).await.ok().filter(|n| n.cordoned)
    })
    .await
    .unwrap();
    b.wait_text("Done: Cordon node bladerunner1?")
        .await
        .unwrap();
    wait_for("the page to show it", Duration::from_secs(10), || async {
        let v = b
            .eval(
                "return document.querySelector('[data-maintenance=\"bladerunner1\"]').textContent",
            )
            .await
            .ok()?;
        (v.as_str()? == "cordoned").then_some(())
    })
    .await
    .unwrap();
    click("uncordon", "bladerunner1", "ok").await;
    wait_for("the uncordon", Duration::from_secs(10), || async {
        client.node(&b1).await.ok().filter(|n| !n.cordoned)
    })
    .await
    .unwrap();

    click("power-status", "bladerunner2", "ok").await;
    wait_for("the power state", Duration::from_secs(10), || async {
        let n = client.node(&node("bladerunner2")).await.ok()?;
        n.power.filter(|p| p.state == Some(PowerState::Off))
    })
    .await
    .unwrap();
    assert_eq!(calls(&log), ["[status][bladerunner2]"]);
    // A failing command shows its error on the page.
    b.wait_text("Agents").await.unwrap();
    click("power-off", "bladerunner2", "ok").await;
    b.wait_text("exited with 3").await.unwrap();
    click("power-on", "bladerunner1", "ok").await;
    wait_for("power on to run", Duration::from_secs(10), || async {
        (calls(&log).len() == 3).then_some(())
    })
    .await
    .unwrap();

    // The group's instances all on bladerunner1 (the others cordoned), then room elsewhere.
    let b2 = node("bladerunner2");
    client.cordon(&node("wedge")).await.unwrap();
    client.cordon(&b2).await.unwrap();
    shop_runs_on(&rack, &b1).await;
    client.uncordon(&b2).await.unwrap();
    b.goto(&format!("{}/#/agents", rack.url())).await.unwrap();
    b.wait_text("Power status").await.unwrap();
    click("drain", "bladerunner1", "ok").await;
    let done = wait_for("the drain to end", Duration::from_secs(60), || async {
        let n = client.node(&b1).await.ok()?;
        n.drain.filter(|d| d.done_at.is_some())
    })
    .await
    .unwrap();
    assert_eq!(done.moved, 3, "{done:?}");
    let on_b1 = live(&client).await;
    assert!(
        !(on_b1.iter())
            .any(|t| t.node.as_ref() == Some(&b1) && t.name.as_str().starts_with("web-")),
        "{on_b1:#?}"
    );
    b.goto(&format!("{}/#/agents/bladerunner1", rack.url()))
        .await
        .unwrap();
    b.wait_text("cordoned, drained").await.unwrap();
    b.wait_text("left in place").await.unwrap();
    let errors: Vec<String> = (b.errors().await.unwrap().into_iter())
        .filter(|e| !e.contains("/api/v1/session - Failed to load resource: the server responded with a status of 401"))
        // The failing power command's answer, which the page showed.
        .filter(|e| !e.contains("/power - Failed to load resource: the server responded with a status of 502"))
        .filter(|e| !e.contains("exited with 3: Error: BMC at bladerunner2 unreachable"))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// Two controllers on a real etcd: a drain that waits for room, and the cordons, are the new
/// leader's after the old one's SIGKILL, and the drain goes on there once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_and_cordons_survive_a_failover() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            controllers: 2,
            compute_nodes: 2,
            extra_yaml: SHOP.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let leader = rack.wait_leader(&[]).await.unwrap();
    let (b1, b2) = (node("bladerunner1"), node("bladerunner2"));
    for n in ["wedge", "wedge2", "bladerunner2"] {
        client.cordon(&node(n)).await.unwrap();
    }
    let before = shop_runs_on(&rack, &b1).await;
    // Every other node is cordoned: the drain waits, its first replacement pending.
    client.drain(&b1).await.unwrap();
    wait_for("the drain to wait", Duration::from_secs(20), || async {
        client.node(&b1).await.ok()?.drain?.waiting
    })
    .await
    .unwrap();

    rack.kill_controller_named(&leader);
    let next = rack.wait_leader(&[&leader]).await.unwrap();
    assert_ne!(next, leader);
    let status = wait_for("the new leader to act", Duration::from_secs(20), || async {
        rack.controller_status(&next)
            .await
            .ok()
            .filter(|s| s.acting)
    })
    .await
    .unwrap();
    assert!(status.acting);
    let view = client.node(&b1).await.unwrap();
    let drain = view.drain.clone().unwrap();
    assert!(view.cordoned && drain.done_at.is_none(), "{view:?}");
    assert!(drain.moving.is_some(), "{drain:?}");
    assert!(client.node(&b2).await.unwrap().cordoned);

    // Room again: the new leader finishes the drain, every instance now on bladerunner2.
    client.uncordon(&b2).await.unwrap();
    let done = wait_for("the drain to end", Duration::from_secs(60), || async {
        client
            .node(&b1)
            .await
            .ok()?
            .drain
            .filter(|d| d.done_at.is_some())
    })
    .await
    .unwrap();
    assert_eq!(done.moved, 3, "{done:?}");
    assert!(done.stopped.is_none(), "{done:?}");
    for i in 0..3 {
        let s = rack
            .wait_service_running(&format!("web-{i}"))
            .await
            .unwrap();
        assert_eq!(s.node, Some(b2.clone()), "{s:?}");
        assert!(!before.contains(s.task.as_ref().unwrap()));
    }
}

//! Alerts end to end: a rack whose config has alert rules and a webhook, the webhook a real
//! HTTP server started by the test. A node whose agent is killed fires `node_lost` (and
//! resolves when it is back), a crash-looping service fires `crash_loop`, a metric rule fires
//! per node; each reaches the webhook as JSON, the event feed, `GET /api/v1/alerts` and
//! `torc alerts`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use torc_api::{AlertState, AlertView, EventKind};
use torc_test_utils::{LocalRack, RackOptions, wait_for};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// A webhook receiver on a free loopback port: every JSON body POSTed to `/hook`.
async fn receiver() -> (String, Arc<Mutex<Vec<AlertView>>>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let got = got.clone();
            move |axum::Json(alert): axum::Json<AlertView>| {
                let got = got.clone();
                async move {
                    got.lock().unwrap().push(alert);
                    "ok"
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_fire_and_resolve_to_the_webhook_the_feed_and_the_cli() {
    let (hook, got) = receiver().await;
    let extra = format!(
        r#"
alerts:
  evaluation_interval_in_seconds: 1
  webhooks: ["{hook}"]
  rules:
    - name: node-lost
      when: node_lost
    - name: crash-loop
      when: {{crash_loop: {{restarts: 2, within_seconds: 60}}}}
    - name: memory-used
      when: {{metric: {{name: memory_percent, above: 0}}}}
      for_seconds: 1
healthcheck:
  system_services:
    - name: flaky
      command: sh
      args: ["-c", "exit 1"]
      memory: 8
      cpu: 0.05
      node_name: bladerunner1
"#
    );
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            node_timeout_secs: 2,
            extra_yaml: extra,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let told = |rule: &'static str, subject: &'static str, state: AlertState| {
        let got = got.clone();
        move || {
            let got = got.clone();
            async move {
                (got.lock().unwrap().iter())
                    .find(|a| a.rule == rule && a.subject == subject && a.state == state)
                    .cloned()
            }
        }
    };
    // Every node uses some memory: one firing alert per node, after its 1 s.
    let mem = wait_for(
        "memory-used to fire for bladerunner2",
        Duration::from_secs(30),
        told("memory-used", "node bladerunner2", AlertState::Firing),
    )
    .await
    .unwrap();
    assert!(mem.value > Some(0.0), "{mem:?}");
    assert!(mem.fired_at >= Some(mem.since + 1000), "{mem:?}");
    assert!(mem.summary.contains("memory_percent is"), "{mem:?}");
    // The service that exits at once restarts (1 s, then 2 s back-off): a crash loop.
    let crash = wait_for(
        "crash-loop to fire",
        Duration::from_secs(30),
        told("crash-loop", "service flaky", AlertState::Firing),
    )
    .await
    .unwrap();
    assert!(crash.value >= Some(2.0), "{crash:?}");

    // A node whose agent dies: lost after the node timeout, then back.
    rack.kill_agent("bladerunner2");
    wait_for(
        "node-lost to fire",
        Duration::from_secs(30),
        told("node-lost", "node bladerunner2", AlertState::Firing),
    )
    .await
    .unwrap();
    let listed = client.alerts().await.unwrap();
    assert!(
        listed
            .iter()
            .any(|a| a.rule == "node-lost" && a.state == AlertState::Firing),
        "{listed:?}"
    );
    let out = std::process::Command::new(TORC)
        .arg("alerts")
        .envs(rack.cli_env())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("node-lost") && text.contains("node bladerunner2") && text.contains("firing"),
        "{text}"
    );
    rack.start_agent("bladerunner2").unwrap();
    let resolved = wait_for(
        "node-lost to resolve",
        Duration::from_secs(30),
        told("node-lost", "node bladerunner2", AlertState::Resolved),
    )
    .await
    .unwrap();
    assert!(resolved.resolved_at.is_some(), "{resolved:?}");
    // Told once each: no second firing of node-lost for the same outage.
    let firings = (got.lock().unwrap().iter())
        .filter(|a| a.rule == "node-lost" && a.state == AlertState::Firing)
        .count();
    assert_eq!(firings, 1);
    // The event feed has them too.
    let feed = client.events(0).await.unwrap();
    let alert_lines: Vec<&str> = (feed.iter())
        .filter(|e| e.kind == EventKind::Alert)
        .map(|e| e.message.as_str())
        .collect();
    assert!(
        alert_lines
            .iter()
            .any(|l| l.starts_with("alert node-lost firing: node bladerunner2")),
        "{alert_lines:?}"
    );
    assert!(
        alert_lines
            .iter()
            .any(|l| l.starts_with("alert node-lost resolved:")),
        "{alert_lines:?}"
    );
}

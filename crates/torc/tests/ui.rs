//! The web UI in a real headless Chromium (WebDriver), against a real local rack: every page
//! loads with no script error and no failed request, and shows live data.

use std::time::Duration;

use torc_test_utils::{Browser, LocalRack, RackOptions, wait_for};
use torc_types::{TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_and_shows_live_data() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: "healthcheck:\n  system_services:\n    - name: dns\n      command: torc\n      args: [dns, --listen, \"$IP:53\"]\n      memory: 32\n      cpu: 0.2\n      node_function: controller\napi:\n  service-groups:\n    - name: demo\n      services:\n        - name: worker\n          command: sleep\n          args: [\"600\"]\n          memory: 8\n          cpu: 0.05\n".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let mut spec = TaskSpec::new("uitest".parse().unwrap(), "sh");
    spec.args = vec!["-c".into(), "echo hello-from-the-sandbox; sleep 600".into()];
    spec.constraints.node_name = Some("bladerunner2".parse().unwrap());
    let task = client.launch(&spec).await.unwrap();
    wait_for("the task to run", Duration::from_secs(20), || async {
        client
            .task(&task.id)
            .await
            .ok()
            .filter(|t| t.state == TaskState::Running)
    })
    .await
    .unwrap();

    let b = Browser::start().await.unwrap();
    let url = rack.url();

    // Overview: the node list matches /api/v1/nodes.
    b.goto(&format!("{url}/")).await.unwrap();
    let text = b.wait_text("Nodes").await.unwrap();
    for n in client.nodes().await.unwrap() {
        assert!(
            text.contains(n.name.as_str()),
            "{} missing from the overview:\n{text}",
            n.name
        );
    }
    b.wait_text("node bladerunner2 registered").await.unwrap();

    // Tasks: the task started by the test appears; its page shows its output.
    b.goto(&format!("{url}/#/tasks")).await.unwrap();
    b.wait_text(task.id.as_str()).await.unwrap();
    b.goto(&format!("{url}/#/tasks/{}", task.id)).await.unwrap();
    b.wait_text("hello-from-the-sandbox").await.unwrap();

    // Frameworks, agents, a node's page with live charts, services, metrics.
    b.goto(&format!("{url}/#/frameworks")).await.unwrap();
    b.wait_text("built-in scheduler").await.unwrap();
    b.goto(&format!("{url}/#/agents")).await.unwrap();
    b.wait_text("bladerunner1").await.unwrap();
    b.goto(&format!("{url}/#/agents/bladerunner2"))
        .await
        .unwrap();
    b.wait_text("CPU %").await.unwrap();
    b.goto(&format!("{url}/#/services")).await.unwrap();
    b.wait_text("demo").await.unwrap();
    b.goto(&format!("{url}/#/metrics")).await.unwrap();
    b.wait_text("Network (bytes/s)").await.unwrap();
    b.goto(&format!("{url}/#/metrics/bladerunner1"))
        .await
        .unwrap();
    b.wait_text("Load").await.unwrap();

    let errors = b.errors().await.unwrap();
    assert!(errors.is_empty(), "page errors: {errors:?}");

    // An action that changes the rack asks for confirmation, then for the token, and shows
    // API errors in words.
    b.goto(&format!("{url}/#/services")).await.unwrap();
    b.wait_text("Start").await.unwrap();
    b.eval("document.querySelector('[data-start=\"demo\"]').click(); return true")
        .await
        .unwrap();
    b.wait_text("Start service group demo?").await.unwrap();
    b.eval("document.querySelector('#dialog-form button[value=ok]').click(); return true")
        .await
        .unwrap();
    b.wait_text("needs the rack's token").await.unwrap();
    let token = rack.token.clone().unwrap();
    b.eval(&format!(
        "document.querySelector('#token-input').value = '{token}'; document.querySelector('#dialog-form button[value=ok]').click(); return true"
    ))
    .await
    .unwrap();
    b.wait_text("Done: Start service group demo?")
        .await
        .unwrap();
    wait_for(
        "the group's instance to run",
        Duration::from_secs(20),
        || async {
            client
                .service(&"worker".parse().unwrap())
                .await
                .ok()
                .filter(|s| s.state == Some(TaskState::Running))
        },
    )
    .await
    .unwrap();
    // The DNS lookup box asks the rack's own DNS server.
    b.eval("document.querySelector('#dns-name').value = 'bladerunner1.homer.ave'; document.querySelector('#dns-go').click(); return true")
        .await
        .unwrap();
    b.wait_text(&rack.nodes["bladerunner1"].to_string())
        .await
        .unwrap();
    b.wait_text("NOERROR (authoritative)").await.unwrap();
    // An unknown page says so.
    b.goto(&format!("{url}/#/nowhere")).await.unwrap();
    b.wait_text("No page at").await.unwrap();
}

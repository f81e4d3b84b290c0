//! The web UI in a real headless Chromium (WebDriver), against a real local rack: every page
//! loads with no script error and no failed request, and shows live data.

use std::time::Duration;

use torc_test_utils::{Browser, LocalRack, RackOptions, wait_for};
use torc_types::{TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// Where the screenshots go (CI keeps `target/` as the artifact folder).
fn shot(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/ui-screenshots")
        .join(format!("{name}.png"))
}

/// Logs `b` in to the rack at `url` with `token` (the login dialog's form).
async fn log_in(b: &Browser, token: &str) {
    b.eval(&format!(
        "document.querySelector('#token-input').value = '{token}'; document.querySelector('#dialog-form button[value=ok]').click(); return true"
    ))
    .await
    .unwrap();
}

/// The page's errors, but for the 401 of asking for a session before logging in.
async fn page_errors(b: &Browser) -> Vec<String> {
    b.errors()
        .await
        .unwrap()
        .into_iter()
        .filter(|e| !e.contains("/api/v1/session - Failed to load resource: the server responded with a status of 401"))
        .collect()
}

/// A browser logged in to `rack`'s UI with its admin token, on the overview.
async fn logged_in(rack: &LocalRack) -> Browser {
    let b = Browser::start_with(&["--ignore-certificate-errors"])
        .await
        .unwrap();
    b.goto(&format!("{}/", rack.url())).await.unwrap();
    b.wait_text("Log in to the rack").await.unwrap();
    log_in(&b, rack.token.as_deref().unwrap()).await;
    b.wait_text("Nodes").await.unwrap();
    b
}

/// Visits every page at the current window size: it shows `needle`, does not scroll sideways,
/// and is saved as a screenshot.
async fn tour(b: &Browser, url: &str, suffix: &str, pages: &[(&str, &str, &str)]) {
    for (name, route, needle) in pages {
        b.goto(&format!("{url}/{route}")).await.unwrap();
        b.wait_text(needle).await.unwrap();
        let overflow = b
            .eval("return document.documentElement.scrollWidth - window.innerWidth")
            .await
            .unwrap()
            .as_i64()
            .unwrap();
        assert!(
            overflow <= 1,
            "{name} scrolls sideways by {overflow} px at {suffix}"
        );
        b.screenshot(&shot(&format!("{name}-{suffix}")))
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_and_shows_live_data() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: "healthcheck:\n  system_services:\n    - name: dns\n      command: torc\n      args: [dns, --listen, \"$IP:53\"]\n      privileged: true\n      credentials: {api_access: viewer}\n      memory: 32\n      cpu: 0.2\n      node_function: controller\n    - name: etcd\n      command: torc\n      args: [kv, --listen, \"$IP:2379\", --data-dir, \"$DATA_DIR\"]\n      memory: 64\n      cpu: 0.2\n      node_function: controller\n    - name: influxdb\n      command: torc\n      args: [tsdb, --listen, \"$IP:8086\", --data-dir, \"$DATA_DIR\"]\n      memory: 128\n      cpu: 0.2\n      node_name: bladerunner1\n    - name: datacollector\n      command: torc\n      args: [datacollector, --influxdb, \"service:influxdb\", --interval-seconds, \"1\"]\n      credentials: {api_access: viewer}\n      memory: 40\n      cpu: 0.1\n      node_name: bladerunner1\n      dependent_service: influxdb\napi:\n  service-groups:\n    - name: demo\n      services:\n        - name: worker\n          command: sleep\n          args: [\"600\"]\n          memory: 8\n          cpu: 0.05\nalerts:\n  evaluation_interval_in_seconds: 1\n  rules:\n    - name: memory-used\n      when: {metric: {name: memory_percent, above: 0}}\n".into(),
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

    // The rack serves TLS from its own CA, which this throwaway browser profile does not trust
    // (the TLS itself is tested with clients that do, in security.rs).
    let b = Browser::start_with(&["--ignore-certificate-errors"])
        .await
        .unwrap();
    let url = rack.url();
    let token = rack.token.clone().unwrap();

    // The page asks to log in first, and keeps no token: a session cookie that scripts cannot
    // read carries the login.
    b.goto(&format!("{url}/")).await.unwrap();
    b.wait_text("Log in to the rack").await.unwrap();
    b.screenshot(&shot("login")).await.unwrap();
    b.eval("document.querySelector('#token-input').value = 'torc_0000000000000000_00'; document.querySelector('#dialog-form button[value=ok]').click(); return true")
        .await
        .unwrap();
    b.wait_text("the token is malformed").await.unwrap();
    log_in(&b, &token).await;
    let text = b.wait_text("Nodes").await.unwrap();
    assert!(text.contains("admin token"), "who is logged in: {text}");
    let stored = b
        .eval("return [localStorage.length, sessionStorage.length, document.cookie]")
        .await
        .unwrap();
    assert_eq!(
        stored,
        serde_json::json!([0, 0, ""]),
        "the page keeps nothing a script can read"
    );

    // Overview: the node list matches /api/v1/nodes.
    for n in client.nodes().await.unwrap() {
        assert!(
            text.contains(n.name.as_str()),
            "{} missing from the overview:\n{text}",
            n.name
        );
    }
    b.wait_text("node bladerunner2 registered").await.unwrap();
    // The controllers: one, leading on its local store.
    let text = b.wait_text("State store: a local file").await.unwrap();
    assert!(text.contains("wedge leads"), "{text}");

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
    // Its agent runs no containers (test racks give `--containerd off`), and the page says so.
    let text = b.wait_text("Containers").await.unwrap();
    assert!(text.contains("unavailable: "), "{text}");
    b.goto(&format!("{url}/#/services")).await.unwrap();
    b.wait_text("demo").await.unwrap();
    // A loopback rack programs no routes, and the Network page says why.
    b.goto(&format!("{url}/#/network")).await.unwrap();
    b.wait_text("This rack programs no routes").await.unwrap();
    b.goto(&format!("{url}/#/metrics")).await.unwrap();
    b.wait_text("Network (bytes/s)").await.unwrap();
    b.goto(&format!("{url}/#/metrics/bladerunner1"))
        .await
        .unwrap();
    b.wait_text("Load").await.unwrap();
    // The control plane: the controller's own /metrics now, and its history from the
    // datacollector's control_plane series (a chart's legend shows once it has points).
    b.goto(&format!("{url}/#/metrics")).await.unwrap();
    b.wait_text("control plane").await.unwrap();
    b.eval("document.querySelector('a[href=\"#/control-plane\"]').click(); return true")
        .await
        .unwrap();
    let text = b.wait_text("Mean commit time").await.unwrap();
    assert!(text.contains("running"), "tasks by state: {text}");
    b.wait_text("active nodes").await.unwrap();
    b.wait_text("commits/s").await.unwrap();
    // An alert rule that holds for every node: the overview lists its alerts.
    b.goto(&format!("{url}/#/")).await.unwrap();
    let text = b.wait_text("memory-used").await.unwrap();
    assert!(text.contains("Alerts") && text.contains("firing"), "{text}");

    let errors = page_errors(&b).await;
    assert!(errors.is_empty(), "page errors: {errors:?}");

    // An action that changes the rack asks for confirmation and runs with the session.
    b.goto(&format!("{url}/#/services")).await.unwrap();
    b.wait_text("Start").await.unwrap();
    b.eval("document.querySelector('[data-start=\"demo\"]').click(); return true")
        .await
        .unwrap();
    b.wait_text("Start service group demo?").await.unwrap();
    b.eval("document.querySelector('#dialog-form button[value=ok]').click(); return true")
        .await
        .unwrap();
    b.wait_text("Done: Start service group demo?")
        .await
        .unwrap();
    rack.wait_service_running("worker").await.unwrap();
    // The DNS lookup box asks the rack's own DNS server.
    b.eval("document.querySelector('#dns-name').value = 'bladerunner1.homer.ave'; document.querySelector('#dns-go').click(); return true")
        .await
        .unwrap();
    b.wait_text(&rack.nodes["bladerunner1"].to_string())
        .await
        .unwrap();
    b.wait_text("NOERROR (authoritative)").await.unwrap();
    // State browser: a key put by the test shows, as formatted JSON; a key put while the page is
    // open appears (a watch, not a reload).
    let etcd = format!("{}:2379", rack.nodes["wedge"]);
    let etcdctl = |args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={etcd}"))
            .args(args)
            .output()
            .expect("etcdctl (apt-get install etcd-client)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    rack.wait_service_running("etcd").await.unwrap();
    let e = etcd.clone();
    wait_for("etcd to answer", Duration::from_secs(20), || {
        let e = e.clone();
        async move { tokio::net::TcpStream::connect(e).await.ok() }
    })
    .await
    .unwrap();
    etcdctl(&[
        "put",
        "/calico/v1/host/bladerunner1",
        r#"{"ip":"10.250.3.21","asn":64512}"#,
    ]);
    b.goto(&format!("{url}/#/state?prefix=/calico"))
        .await
        .unwrap();
    b.wait_text("bladerunner1").await.unwrap();
    b.eval("document.querySelector('[data-key=\"/calico/v1/host/bladerunner1\"]').click(); return true")
        .await
        .unwrap();
    b.wait_text("\"asn\": 64512").await.unwrap();
    etcdctl(&["put", "/calico/v1/host/bladerunner2", "plain text"]);
    b.wait_text("bladerunner2").await.unwrap();
    // The 401s of the login above (before it, and the malformed token) are expected; nothing
    // else may have failed.
    let errors = page_errors(&b).await;
    assert!(errors.is_empty(), "page errors: {errors:?}");
    // Query: the seed's sample query, one click away, returns rows as a table and a time chart.
    b.goto(&format!("{url}/#/query")).await.unwrap();
    b.wait_text("Sample queries").await.unwrap();
    let rows = wait_for(
        "the seed query to return rows",
        Duration::from_secs(30),
        || async {
            b.eval("document.querySelector('[data-sample=\"1\"]').click(); return true")
                .await
                .ok()?;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = b.text().await.ok()?;
            let charts = b
                .eval("return document.querySelectorAll('#q-chart svg').length")
                .await
                .ok()?;
            (t.contains("cpu_usage_user") && charts.as_u64() >= Some(1)).then_some(t)
        },
    )
    .await
    .unwrap();
    assert!(
        rows.to_lowercase().contains("sequence_number"),
        "the 0.8 shape: {rows}"
    );
    // A broken query is shown in words.
    b.eval("document.querySelector('#q-api').value = '1.x'; document.querySelector('#q-text').value = 'SELEC nonsense'; document.querySelector('#q-run').click(); return true")
        .await
        .unwrap();
    b.wait_text("error parsing query").await.unwrap();
    // Every page, at 1280x800 and at phone width, usable (no sideways scrolling) and saved.
    let pages = [
        ("overview", "#/", "Nodes"),
        ("tasks", "#/tasks", "Tasks"),
        (
            "task",
            &format!("#/tasks/{}", task.id) as &str,
            "hello-from-the-sandbox",
        ),
        ("frameworks", "#/frameworks", "built-in scheduler"),
        ("agents", "#/agents", "bladerunner1"),
        ("agent", "#/agents/bladerunner2", "CPU %"),
        ("services", "#/services", "DNS lookup"),
        ("metrics", "#/metrics/bladerunner1", "Load"),
        ("control-plane", "#/control-plane", "Mean commit time"),
        ("state", "#/state?prefix=/calico", "bladerunner2"),
        ("query", "#/query", "Sample queries"),
    ];
    b.resize(1280, 800).await.unwrap();
    tour(&b, &url, "1280x800", &pages).await;
    b.resize(390, 844).await.unwrap();
    tour(&b, &url, "phone", &pages).await;
    b.resize(1300, 1000).await.unwrap();

    // An action end to end: kill the test's task from its page (confirm; the session acts).
    b.goto(&format!("{url}/#/tasks/{}", task.id)).await.unwrap();
    b.wait_text("Kill task").await.unwrap();
    b.eval("document.querySelector('#kill').click(); return true")
        .await
        .unwrap();
    b.wait_text(&format!("Kill task {}?", task.id))
        .await
        .unwrap();
    b.eval("document.querySelector('#dialog-form button[value=ok]').click(); return true")
        .await
        .unwrap();
    wait_for("the task to be killed", Duration::from_secs(20), || async {
        client
            .task(&task.id)
            .await
            .ok()
            .filter(|t| t.state == TaskState::Killed)
    })
    .await
    .unwrap();

    // An unknown page says so.
    b.goto(&format!("{url}/#/nowhere")).await.unwrap();
    b.wait_text("No page at").await.unwrap();
}

/// The Network page of a rack on namespaces: the switch's ports with their counters, and each
/// task route with the task behind it, as the switch's network agent reported them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_page_shows_the_switchs_ports_and_each_tasks_route() {
    if !torc_test_utils::namespaces_or_skip() {
        return;
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            network: torc_test_utils::RackNetwork::Namespaces,
            extra_yaml: "healthcheck:\n  system_services:\n    - name: network-agent\n      command: torc\n      privileged: true\n      args: [network-agent]\n      credentials: {api_access: network}\n      memory: 32\n      cpu: 0.1\n      node_function: controller\n".into(),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    rack.assert_namespaces();
    let client = rack.client();
    let mut spec = TaskSpec::new("web".parse().unwrap(), "sleep");
    spec.args = vec!["600".into()];
    spec.network = torc_types::TaskNetwork::Rack;
    spec.constraints.node_name = Some("bladerunner2".parse().unwrap());
    let task = client.launch(&spec).await.unwrap();
    let routed = wait_for(
        "the task's route on the switch",
        Duration::from_secs(30),
        || async {
            let view = client.network().await.ok()?;
            let wanted = view.desired.routes.first()?.destination;
            (view.reported?.routes.iter())
                .any(|r| r.destination == wanted && r.protocol == "torc")
                .then_some(wanted)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));

    let b = logged_in(&rack).await;
    let url = rack.url();
    b.goto(&format!("{url}/#/network")).await.unwrap();
    let mut text = b.wait_text(task.id.as_str()).await.unwrap();
    // Each part of the page may come with a later poll (on a loaded machine, the ports came
    // after the task's route): wait for each, with the page's text in the failure.
    for needle in [
        "swp1",
        "swp2",
        &format!("{routed}/32"),
        "web on bladerunner2",
        "198.18.0.22",
        "applied generation",
    ] {
        text = match b.wait_text(needle).await {
            Ok(text) => text,
            Err(e) => panic!(
                "{e}: {needle:?} missing from:\n{}",
                b.text().await.unwrap_or_default()
            ),
        };
    }
    assert!(
        !text.contains("missing"),
        "every wanted route is held:\n{text}"
    );
    b.screenshot(&shot("network-namespaces")).await.unwrap();
    let errors = page_errors(&b).await;
    assert!(errors.is_empty(), "page errors: {errors:?}");
}

/// A container task on a rack whose agents run containers: its task page shows the image and
/// its output, and its node's page says the node runs containers and with what engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_tasks_page_shows_its_image_and_output() {
    if !torc_test_utils::containers_or_skip() {
        return;
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            containers: true,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let archive =
        torc_test_utils::TestImage::get(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))
            .unwrap()
            .oci_archive;
    let node: torc_types::NodeName = "bladerunner1".parse().unwrap();
    client.import_image(&node, &archive, None).await.unwrap();
    let mut spec = TaskSpec::new("boxed".parse().unwrap(), "");
    spec.args = vec![
        "sh".into(),
        "-c".into(),
        "echo hello-from-a-container; sleep 600".into(),
    ];
    spec.constraints.node_name = Some(node.clone());
    spec.container = Some(torc_types::ContainerSpec::new(
        torc_types::ImageRef::parse(torc_test_utils::TEST_IMAGE_NAME).unwrap(),
    ));
    let task = client.launch(&spec).await.unwrap();

    let b = logged_in(&rack).await;
    let url = rack.url();
    b.goto(&format!("{url}/#/tasks/{}", task.id)).await.unwrap();
    let text = b.wait_text("hello-from-a-container").await.unwrap();
    assert!(
        text.contains(torc_test_utils::TEST_IMAGE_NAME),
        "the image is missing from:\n{text}"
    );
    b.screenshot(&shot("task-container")).await.unwrap();
    b.goto(&format!("{url}/#/agents/bladerunner1"))
        .await
        .unwrap();
    let text = b.wait_text("containerd 1.").await.unwrap();
    assert!(text.contains("Containers"), "{text}");
    b.screenshot(&shot("node-containers")).await.unwrap();
    let errors = page_errors(&b).await;
    assert!(errors.is_empty(), "page errors: {errors:?}");
    client.kill(&task.id).await.unwrap();
}

/// A rack of two controllers: the leader's overview names it and the store's members; the
/// standby's UI still shows the rack (its copy), with a banner saying it is a standby and who
/// leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_shows_the_leader_and_a_standby_says_so() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            controllers: 2,
            compute_nodes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let leader = rack.wait_leader(&[]).await.unwrap();
    let standby = if leader == "wedge" { "wedge2" } else { "wedge" };
    let token = rack.token.clone().unwrap();
    let b = Browser::start_with(&["--ignore-certificate-errors"])
        .await
        .unwrap();

    b.goto(&format!("{}/", rack.controller_url(&leader)))
        .await
        .unwrap();
    b.wait_text("Log in to the rack").await.unwrap();
    log_in(&b, &token).await;
    let text = b.wait_text("3/3 members healthy").await.unwrap();
    assert!(text.contains(&format!("{leader} leads")), "{text}");
    assert!(
        text.contains(&format!("this one ({leader}) is leader")),
        "{text}"
    );
    b.screenshot(&shot("ha-leader")).await.unwrap();
    assert_eq!(page_errors(&b).await, Vec::<String>::new());

    // The standby: sessions are each controller's own, so the browser logs in there too.
    b.goto(&format!("{}/", rack.controller_url(standby)))
        .await
        .unwrap();
    b.wait_text("Log in to the rack").await.unwrap();
    log_in(&b, &token).await;
    b.wait_text("this controller is a standby").await.unwrap();
    let text = b.wait_text("State store:").await.unwrap();
    assert!(text.contains(&format!("{leader} leads")), "{text}");
    assert!(
        text.contains(&format!("this one ({standby}) is standby")),
        "{text}"
    );
    assert!(
        text.contains("bladerunner1"),
        "its copy of the rack: {text}"
    );
    b.screenshot(&shot("ha-standby")).await.unwrap();
}

//! A rack is guarded as a real one: every route wants a credential, each role can do what it
//! may and no more, agents prove who they are with their certificates, tasks get credentials
//! of their own, and the web UI's session cannot be ridden by another site. Real processes,
//! real TLS, from the outside.

use std::time::Duration;

use reqwest::StatusCode;
use torc_api::TokenRole;
use torc_test_utils::{LocalRack, RackOptions, Security, wait_for};
use torc_types::{TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn rack_options() -> RackOptions {
    RackOptions {
        compute_nodes: 2,
        extra_yaml: "api:\n  service-groups:\n    - name: demo\n      services:\n        - name: worker\n          command: sleep\n          args: [\"600\"]\n          memory: 8\n          cpu: 0.05\n".into(),
        ..Default::default()
    }
}

/// An HTTP client trusting the rack CA and presenting `identity`.
fn http_with(rack: &LocalRack, identity: Option<torc_tls::Identity>) -> reqwest::Client {
    let roots = torc_tls::load_certs(&rack.ca_path().unwrap()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .tls_backend_preconfigured(torc_tls::client_config(&roots, identity).unwrap())
        .build()
        .unwrap()
}

async fn status_and_error(r: reqwest::RequestBuilder) -> (StatusCode, String) {
    let r = r.send().await.expect("the server answers");
    let status = r.status();
    let body: serde_json::Value = r.json().await.unwrap_or_default();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// A node's credential, once its agent has written it (the node is active a moment before).
async fn node_credential(rack: &LocalRack, node: &str) -> String {
    let path = rack.dir.path().join("agents").join(node).join("credential");
    wait_for(
        "the node's credential file",
        Duration::from_secs(10),
        || async { torc_tls::files::read_secret(&path).ok() },
    )
    .await
    .unwrap()
}

/// A node's certificate and key, once its agent has written them.
async fn node_identity(rack: &LocalRack, node: &str) -> torc_tls::Identity {
    let tls = rack.dir.path().join("agents").join(node).join("tls");
    wait_for(
        "the node's certificate",
        Duration::from_secs(10),
        || async {
            torc_tls::Identity::from_files(&tls.join("node.crt"), &tls.join("node.key")).ok()
        },
    )
    .await
    .unwrap()
}

fn sleeper(name: &str, node: &str) -> TaskSpec {
    let mut spec = TaskSpec::new(name.parse().unwrap(), "sh");
    spec.args = vec!["-c".into(), "echo secret-output; sleep 600".into()];
    spec.env.insert("PASSWORD".into(), "hunter2".into());
    spec.constraints.node_name = Some(node.parse().unwrap());
    spec
}

/// Runs `script` (sh) on `node` as a task with `access` (if any), and answers its id and its
/// output once that contains `marker`.
async fn task_saying(
    admin: &torc_client::Client,
    (name, node): (&str, &str),
    script: &str,
    access: Option<torc_types::ApiAccess>,
    marker: &str,
) -> (torc_types::TaskId, String) {
    let mut spec = TaskSpec::new(name.parse().unwrap(), "sh");
    spec.args = vec!["-c".into(), script.into()];
    spec.constraints.node_name = Some(node.parse().unwrap());
    spec.credentials.api_access = access;
    let task = admin.launch(&spec).await.unwrap();
    running(admin, &task.id).await;
    let out = wait_for(
        &format!("{marker} in the task's output"),
        Duration::from_secs(10),
        || async {
            (admin.logs(&task.id, &Default::default()).await.ok())
                .filter(|c| c.data.contains(marker))
        },
    )
    .await
    .unwrap()
    .data;
    (task.id, out)
}

async fn running(client: &torc_client::Client, id: &torc_types::TaskId) -> torc_api::TaskView {
    torc_test_utils::wait_running(client, id, Duration::from_secs(20))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_credential_nothing_is_read_or_changed() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    let task = admin
        .launch(&sleeper("guarded", "bladerunner1"))
        .await
        .unwrap();
    let task = running(&admin, &task.id).await;
    let id = task.id.to_string();
    let url = rack.url();
    let agent = admin
        .node(&"bladerunner1".parse().unwrap())
        .await
        .unwrap()
        .agent_url
        .unwrap();
    let anon = rack.http();
    let before = admin.tasks(&Default::default()).await.unwrap().len();

    // Every change, every read of env, args, logs or stored values, and every agent route.
    let calls: Vec<(reqwest::Method, String)> = vec![
        (reqwest::Method::POST, format!("{url}/api/v1/tasks")),
        (reqwest::Method::DELETE, format!("{url}/api/v1/tasks/{id}")),
        (
            reqwest::Method::POST,
            format!("{url}/api/v1/groups/demo/start"),
        ),
        (reqwest::Method::GET, format!("{url}/start/group?name=demo")),
        (reqwest::Method::POST, format!("{url}/api/v1/config")),
        (reqwest::Method::POST, format!("{url}/api/v1/backup")),
        (
            reqwest::Method::POST,
            format!("{url}/api/v1/nodes/bladerunner1/power"),
        ),
        (
            reqwest::Method::GET,
            format!("{url}/node/startup?name=bladerunner1"),
        ),
        (reqwest::Method::GET, format!("{url}/api/v1/tasks")),
        (reqwest::Method::GET, format!("{url}/api/v1/tasks/{id}")),
        (
            reqwest::Method::GET,
            format!("{url}/api/v1/tasks/{id}/logs"),
        ),
        (
            reqwest::Method::GET,
            format!("{url}/api/v1/agents/bladerunner1/desired"),
        ),
        (reqwest::Method::GET, format!("{url}/services/running")),
        (reqwest::Method::GET, format!("{url}/api/v1/kv?prefix=/")),
        (
            reqwest::Method::GET,
            format!("{url}/api/v1/query?q=SHOW%20DATABASES"),
        ),
        (reqwest::Method::GET, format!("{url}/api/v1/nodes")),
        (reqwest::Method::GET, format!("{url}/api/v1/tokens")),
        (reqwest::Method::GET, format!("{agent}/v1/health")),
        (reqwest::Method::GET, format!("{agent}/v1/tasks")),
        (reqwest::Method::GET, format!("{agent}/v1/tasks/{id}/logs")),
        (reqwest::Method::GET, format!("{agent}/v1/metrics")),
        (reqwest::Method::GET, format!("{agent}/v1/metrics/history")),
        (reqwest::Method::GET, format!("{agent}/metrics")),
    ];
    for (method, call) in &calls {
        let mut req = anon.request(method.clone(), call);
        if *method == reqwest::Method::POST {
            req = req
                .header("content-type", "application/json")
                .body(r#"{"name":"x","command":"true"}"#);
        }
        let (status, error) = status_and_error(req).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {call}: {error}");
        assert!(
            error.contains("credential") || error.contains("Bearer"),
            "{method} {call} says what is missing: {error}"
        );
        assert!(!error.contains("secret-output") && !error.contains("hunter2"));
    }
    // A token of the wrong shape or an unknown one is refused the same way.
    for bad in [
        "nonsense",
        "torc_0123456789abcdef_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let (status, _) =
            status_and_error(anon.get(format!("{url}/api/v1/tasks")).bearer_auth(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) =
            status_and_error(anon.get(format!("{agent}/v1/tasks")).bearer_auth(bad)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Nothing changed: no task launched or killed, the group not started.
    let after = admin.tasks(&Default::default()).await.unwrap();
    assert_eq!(after.len(), before);
    assert_eq!(
        admin.task(&task.id).await.unwrap().state,
        TaskState::Running
    );
    assert!(admin.service(&"worker".parse().unwrap()).await.is_err());
    // The UI's shell and the original's ping stay open.
    assert_eq!(
        anon.get(format!("{url}/")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        anon.get(format!("{url}/admin/ping"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_does_what_it_may_and_no_more() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    let task = admin
        .launch(&sleeper("viewed", "bladerunner1"))
        .await
        .unwrap();
    running(&admin, &task.id).await;

    // A viewer reads everything, env and logs included, and changes nothing.
    let viewer = rack.client_as(TokenRole::Viewer, None).await.unwrap();
    let seen = viewer.task(&task.id).await.unwrap();
    assert_eq!(seen.spec.env["PASSWORD"], "hunter2");
    let logs = wait_for("the task's output", Duration::from_secs(10), || async {
        viewer
            .logs(&task.id, &Default::default())
            .await
            .ok()
            .filter(|c| c.data.contains("secret-output"))
    })
    .await
    .unwrap();
    assert!(logs.data.contains("secret-output"));
    for err in [
        viewer
            .launch(&sleeper("nope", "bladerunner2"))
            .await
            .unwrap_err(),
        viewer.kill(&task.id).await.unwrap_err(),
        viewer
            .start_group(&"demo".parse().unwrap())
            .await
            .unwrap_err(),
        viewer
            .power(&"bladerunner1".parse().unwrap(), torc_api::PowerAction::On)
            .await
            .unwrap_err(),
        viewer.tokens().await.unwrap_err(),
    ] {
        assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
        assert!(err.to_string().contains("viewer token"), "{err}");
    }
    // Through the query proxy a viewer may read but not drop a database.
    let http = rack.http();
    let viewer_token = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    let (status, error) = status_and_error(
        http.get(format!("{}/api/v1/query", rack.url()))
            .bearer_auth(&viewer_token)
            .query(&[("q", "DROP DATABASE torc")]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(error.contains("one SELECT or SHOW"), "{error}");
    // An API version that does not exist is named, with the ones that do.
    let (status, error) = status_and_error(
        http.get(format!("{}/api/v1/query", rack.url()))
            .bearer_auth(&viewer_token)
            .query(&[("q", "SHOW DATABASES"), ("api", "2.0")]),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error.contains("api") && error.contains("`0.8`") && error.contains("`1.x`"),
        "{error}"
    );

    // A join token registers agents and does nothing else.
    let join = rack.client_with(Some(
        torc_tls::files::read_secret(&rack.dir.path().join("join.token")).unwrap(),
    ));
    let err = join.nodes().await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");

    // A node's credential acts only as its own node, and only with its own certificate.
    let node_token = node_credential(&rack, "bladerunner1").await;
    let identity = node_identity(&rack, "bladerunner1").await;
    let with_cert = http_with(&rack, Some(identity));
    let url = rack.url();
    let (status, error) = status_and_error(
        with_cert
            .get(format!("{url}/api/v1/agents/bladerunner1/desired"))
            .bearer_auth(&node_token),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{error}");
    let (status, error) = status_and_error(
        with_cert
            .get(format!("{url}/api/v1/agents/bladerunner2/desired"))
            .bearer_auth(&node_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(
        error.contains("node bladerunner2's own credential"),
        "{error}"
    );
    let (status, error) = status_and_error(
        with_cert
            .post(format!("{url}/api/v1/tasks"))
            .bearer_auth(&node_token)
            .json(&sleeper("from-a-node", "bladerunner2")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    let (status, _) = status_and_error(
        with_cert
            .get(format!("{url}/api/v1/tasks"))
            .bearer_auth(&node_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Its token without its certificate does not do either.
    let (status, error) = status_and_error(
        rack.http()
            .get(format!("{url}/api/v1/agents/bladerunner1/desired"))
            .bearer_auth(&node_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(error.contains("client certificate"), "{error}");
    // Nor does another node's certificate with its token.
    let other_cert = http_with(&rack, Some(node_identity(&rack, "bladerunner2").await));
    let (status, _) = status_and_error(
        other_cert
            .get(format!("{url}/api/v1/agents/bladerunner1/desired"))
            .bearer_auth(&node_token),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // A certificate from another CA does not even get a connection.
    let stranger = tempfile::tempdir().unwrap();
    let ca = torc_tls::pki::Ca::create(stranger.path(), "stranger").unwrap();
    let forged = ca
        .issue(&torc_tls::pki::CertRequest {
            common_name: "node bladerunner1".into(),
            dns_names: vec!["bladerunner1.homer.ave".into()],
            ips: vec![rack.nodes["bladerunner1"].into()],
            validity: Duration::from_secs(3600),
        })
        .unwrap();
    let forged = http_with(
        &rack,
        Some(
            torc_tls::Identity::from_pem(&forged.cert_pem, &forged.key_pem.unwrap(), "forged")
                .unwrap(),
        ),
    );
    assert!(
        forged
            .get(format!("{url}/api/v1/agents/bladerunner1/desired"))
            .bearer_auth(&node_token)
            .send()
            .await
            .is_err(),
        "a certificate from another CA is refused in the handshake"
    );
    // A client that does not trust the rack CA does not talk to the controller at all.
    assert!(
        reqwest::Client::new()
            .get(format!("{url}/admin/ping"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_holds_its_own_token_and_never_its_agents() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    // The task prints its environment, then reads the rack with its own token.
    let (task_id, out) = task_saying(
        &admin,
        ("reader", "bladerunner1"),
        "env; echo; echo TOKEN_FILE_MODE=$(stat -c %a \"$TORC_TOKEN_FILE\"); sleep 600",
        Some(torc_types::ApiAccess::Viewer),
        "TOKEN_FILE_MODE",
    )
    .await;
    assert!(out.contains("TOKEN_FILE_MODE=600"), "{out}");
    let node_token = node_credential(&rack, "bladerunner1").await;
    let join_token = torc_tls::files::read_secret(&rack.dir.path().join("join.token")).unwrap();
    for secret in [&node_token, &join_token, rack.token.as_ref().unwrap()] {
        assert!(
            !out.contains(secret.as_str()),
            "a credential leaked into the task's env:\n{out}"
        );
    }
    // Its token file works, as a viewer, while it runs.
    let token_file = out
        .lines()
        .find_map(|l| l.strip_prefix("TORC_TOKEN_FILE="))
        .expect("the agent points the task at its token")
        .to_string();
    // The file is the task's own (its task user's, 0600): the agent's user reads it here.
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&token_file).unwrap();
    assert!(
        meta.uid() >= 200_000,
        "the task's own user's: {}",
        meta.uid()
    );
    let own = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_string();
    let as_task = rack.client_with(Some(own.clone()));
    assert!(as_task.tasks(&Default::default()).await.is_ok());
    let err = as_task
        .launch(&sleeper("from-a-task", "bladerunner2"))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403));
    // Once the task ends, its token is dead.
    admin.kill(&task_id).await.unwrap();
    wait_for(
        "the task's token to die",
        Duration::from_secs(20),
        || async {
            let err = as_task.tasks(&Default::default()).await.err()?;
            (err.status().map(|s| s.as_u16()) == Some(401)).then_some(())
        },
    )
    .await
    .unwrap();
    // A task that asked for nothing gets no credential files and no token variable.
    let (_, out) = task_saying(
        &admin,
        ("plain", "bladerunner2"),
        "echo TOKEN_FILE=[$TORC_TOKEN_FILE] SECRETS=[$TORC_SECRETS_DIR]; sleep 600",
        None,
        "TOKEN_FILE=",
    )
    .await;
    assert!(out.contains("TOKEN_FILE=[] SECRETS=[]"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_session_cannot_be_ridden_by_another_site() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let url = rack.url();
    let host = url.trim_start_matches("https://").to_string();
    let http = rack.http();
    let token = rack.token.clone().unwrap();
    // Logging in sets an HttpOnly, SameSite=Strict, Secure cookie.
    let r = http
        .post(format!("{url}/api/v1/session"))
        .header("origin", &url)
        .json(&serde_json::json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let with_session = |req: reqwest::RequestBuilder| req.header("cookie", &session);
    // It reads, and changes from the controller's own page.
    let (status, _) = status_and_error(with_session(http.get(format!("{url}/api/v1/tasks")))).await;
    assert_eq!(status, 200);
    let (status, error) = status_and_error(with_session(
        http.post(format!("{url}/api/v1/groups/demo/start"))
            .header("origin", &url)
            .json(&serde_json::json!({})),
    ))
    .await;
    assert_eq!(status, 200, "{error}");
    // Another site's page (Origin), a rebinding name (Host), the original's changing GET:
    // all refused.
    let (status, error) = status_and_error(with_session(
        http.post(format!("{url}/api/v1/groups/demo/stop"))
            .header("origin", "https://evil.example")
            .json(&serde_json::json!({})),
    ))
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("Origin"), "{error}");
    let (status, error) = status_and_error(with_session(
        http.post(format!("{url}/api/v1/groups/demo/stop"))
            .json(&serde_json::json!({})),
    ))
    .await;
    assert_eq!(status, 403, "no Origin at all: {error}");
    let (status, error) = status_and_error(with_session(
        http.get(format!("{url}/api/v1/tasks"))
            .header("host", "rebound.evil.example"),
    ))
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("host"), "{error}");
    let (status, error) = status_and_error(with_session(
        http.get(format!("{url}/start/group?name=demo")),
    ))
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(error.contains("never a browser session"), "{error}");
    // Logging out ends the session.
    let r = with_session(
        http.delete(format!("{url}/api/v1/session"))
            .header("origin", &url),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 204);
    let (status, _) = status_and_error(with_session(http.get(format!("{url}/api/v1/tasks")))).await;
    assert_eq!(status, 401);
    // A session opened with a token dies with the token.
    let viewer_token = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    let r = http
        .post(format!("{url}/api/v1/session"))
        .header("origin", &url)
        .json(&serde_json::json!({ "token": viewer_token }))
        .send()
        .await
        .unwrap();
    let session = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let id = rack
        .client()
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .rev()
        .find(|t| t.role == "viewer")
        .unwrap()
        .id;
    rack.client().revoke_token(&id).await.unwrap();
    let (status, _) = status_and_error(
        http.get(format!("{url}/api/v1/tasks"))
            .header("cookie", &session),
    )
    .await;
    assert_eq!(status, 401);
    let _ = host;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_never_starts_unguarded_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rack.yaml");
    std::fs::write(
        &config,
        "nodes:\n  - name: wedge\n    ip: 127.0.0.1\n    type: master\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(TORC)
            .arg("controller")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--ca-dir") && err.contains("--plaintext"),
        "{err}"
    );
    let out = run(&["--plaintext"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no credentials")
            && err.contains("--admin-token-file")
            && err.contains("--insecure"),
        "{err}"
    );
    // A token file others can read is refused, with the fix.
    let loose = dir.path().join("loose.token");
    std::fs::write(&loose, torc_test_utils::fresh_token()).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(&["--plaintext", "--admin-token-file", loose.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insecure_rack_says_so() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            security: Security::Insecure,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let status = rack.client().status().await.unwrap();
    assert!(
        status.warnings.iter().any(|w| w.starts_with("insecure")),
        "{:?}",
        status.warnings
    );
    assert!(status.warnings.iter().any(|w| w.starts_with("plain HTTP")));
    let log = std::fs::read_to_string(rack.dir.path().join("controller.log")).unwrap();
    assert!(log.contains("--insecure"), "{log}");
}

/// The review's attacks, each refused now: a node sending the controller's calls elsewhere, the
/// controller's own token used against it, a join token taking over a node, a revoked token
/// coming back with a restart, a task named like the controller, a query smuggling a write
/// past the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reviewed_attacks_fail() {
    use axum::routing::get;
    let mut rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    let url = rack.url();
    let node_token = node_credential(&rack, "bladerunner1").await;
    let identity = node_identity(&rack, "bladerunner1").await;
    let as_node = http_with(&rack, Some(identity.clone()));
    let node_ip = rack.nodes["bladerunner1"];

    // A listener the "node" runs on its own address, to see what the controller sends it.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let listener = tokio::net::TcpListener::bind((node_ip, 0)).await.unwrap();
    let trap_port = listener.local_addr().unwrap().port();
    let s2 = seen.clone();
    let app = axum::Router::new().fallback(get(move |headers: axum::http::HeaderMap| {
        let s2 = s2.clone();
        async move {
            if let Some(a) = headers.get("authorization") {
                s2.lock().unwrap().push(a.to_str().unwrap().to_string());
            }
            "{}"
        }
    }));
    let tls = torc_tls::server_config(identity, torc_tls::ClientAuth::None).unwrap();
    tokio::spawn(torc_tls::serve(
        listener,
        app,
        Some(std::sync::Arc::new(tls)),
        std::future::pending(),
    ));
    // Re-register with an agent URL of another host: the controller keeps the node's own
    // address (and HTTPS), only the port is the node's to say.
    let mut register: serde_json::Value = serde_json::json!({
        "node": "bladerunner1", "ip": node_ip.to_string(),
        "agent_url": format!("http://127.250.250.250:{trap_port}"),
        "resources": {"cpus": 4, "mem_mb": 4096, "disk_mb": 10000}, "port_range": "31000-31999",
        "runtime": {"kind": "process", "limits_enforced": false}, "tasks": []
    });
    let (status, error) = status_and_error(
        as_node
            .post(format!("{url}/api/v1/agents/register"))
            .bearer_auth(&node_token)
            .json(&register),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{error}");
    let view = admin.node(&"bladerunner1".parse().unwrap()).await.unwrap();
    assert_eq!(
        view.agent_url.as_deref(),
        Some(format!("https://{node_ip}:{trap_port}").as_str())
    );
    // The controller's calls now reach the trap (the node itself): the token it shows there is
    // no good on the controller's own API.
    let _ = admin
        .get_url::<serde_json::Value>(&format!("{url}/api/v1/nodes/bladerunner1/metrics"))
        .await;
    let controller_token = wait_for("the controller's call", Duration::from_secs(10), || async {
        seen.lock().unwrap().first().cloned()
    })
    .await
    .unwrap();
    let controller_token = controller_token.trim_start_matches("Bearer ").to_string();
    let (status, error) = status_and_error(
        rack.http()
            .post(format!("{url}/api/v1/tokens"))
            .bearer_auth(&controller_token)
            .json(&serde_json::json!({"role": "admin", "name": "backdoor"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{error}");
    // Without its certificate, the node's credential does not re-register it at all.
    register["agent_url"] = format!("https://{node_ip}:{trap_port}").into();
    let (status, error) = status_and_error(
        rack.http()
            .post(format!("{url}/api/v1/agents/register"))
            .bearer_auth(&node_token)
            .json(&register),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");

    // A join token cannot take over a node that holds a credential.
    let join = torc_tls::files::read_secret(&rack.dir.path().join("join.token")).unwrap();
    let (status, error) = status_and_error(
        rack.http()
            .post(format!("{url}/api/v1/agents/register"))
            .bearer_auth(&join)
            .json(&register),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert!(error.contains("already holds a credential"), "{error}");
    // Revoked, the node's agent joins again with the join token by itself.
    let node_id = admin
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.subject.as_deref() == Some("bladerunner2"))
        .unwrap()
        .id;
    admin.revoke_token(&node_id).await.unwrap();
    wait_for(
        "bladerunner2's new credential",
        Duration::from_secs(20),
        || async {
            admin
                .tokens()
                .await
                .ok()?
                .into_iter()
                .find(|t| t.subject.as_deref() == Some("bladerunner2") && t.id != node_id)
        },
    )
    .await
    .unwrap();

    // Names that are the controller's are no task's.
    let err = admin
        .launch(&sleeper("torc-scheduler", "bladerunner2"))
        .await
        .unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(422), "{err}");
    assert!(err.to_string().contains("reserved"), "{err}");

    // The query proxy's smuggling tricks, as a viewer.
    let viewer = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    for (api, db, q) in [
        (
            "1.x",
            "torc",
            "SHOW DATABASES; SELECT * FROM /--/; CREATE USER m WITH PASSWORD 'p' WITH ALL PRIVILEGES",
        ),
        (
            "1.x",
            "torc",
            "SELECT * FROM /'/; CREATE DATABASE x; SELECT * FROM /'/",
        ),
        ("1.x", "torc", "SELECT mean(v) INTO other FROM m"),
        (
            "0.8",
            "../../query?q=CREATE DATABASE via_path&db=torc&x=",
            "list series",
        ),
    ] {
        let (status, error) = status_and_error(
            rack.http()
                .get(format!("{url}/api/v1/query"))
                .bearer_auth(&viewer)
                .query(&[("api", api), ("db", db), ("q", q)]),
        )
        .await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::BAD_REQUEST,
            "{q}: {status} {error}"
        );
    }

    // A revoked admin token never comes back with a restart: the controller refuses its file.
    let file_admin = admin
        .tokens()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "admin.token")
        .unwrap()
        .id;
    let backup = rack.make_token(TokenRole::Admin, None).await.unwrap();
    rack.client_with(Some(backup.clone()))
        .revoke_token(&file_admin)
        .await
        .unwrap();
    rack.kill_controller();
    let out = std::process::Command::new(TORC)
        .args(["controller", "--config"])
        .arg(&rack.config_path)
        .arg("--data-dir")
        .arg(rack.dir.path().join("controller"))
        .args(["--listen", &format!("{}:0", rack.nodes["wedge"])])
        .arg("--admin-token-file")
        .arg(rack.token_path())
        .arg("--ca-dir")
        .arg(rack.dir.path().join("pki"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("was revoked"), "{err}");
}

/// A framework's task (or any unprivileged task) runs as its own user: it reads neither the
/// agent's credential, key or task table, nor another task's secrets, nor the rack's tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprivileged_task_reads_no_one_elses_secrets() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    // Another task with a token of its own, on the same node.
    let mut holder = sleeper("holder", "bladerunner1");
    holder.credentials.api_access = Some(torc_types::ApiAccess::Viewer);
    let holder = admin.launch(&holder).await.unwrap();
    running(&admin, &holder.id).await;
    let agent = rack.dir.path().join("agents").join("bladerunner1");
    node_credential(&rack, "bladerunner1").await;
    let targets = [
        agent.join("credential"),
        agent.join("tls").join("node.key"),
        agent.join("tasks.json"),
        agent
            .join("sandboxes")
            .join(holder.id.as_str())
            .join("secrets")
            .join("token"),
        agent
            .join("sandboxes")
            .join(holder.id.as_str())
            .join("stdout"),
        rack.token_path(),
    ];
    // A framework's task tries them all, and says what it is.
    let fw_client = rack
        .client_as(TokenRole::Framework, Some("snooper"))
        .await
        .unwrap();
    let (fw, _) = torc_client::Framework::register(
        fw_client,
        "snooper".parse().unwrap(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut snoop = TaskSpec::new("snoop".parse().unwrap(), "sh");
    let script: String = targets
        .iter()
        .map(|p| {
            format!(
                "if cat '{0}' >/dev/null 2>&1; then echo READ {0}; else echo DENIED {0}; fi; ",
                p.display()
            )
        })
        .collect();
    snoop.args = vec!["-c".into(), format!("id -u; {script} sleep 600")];
    snoop.constraints.node_name = Some("bladerunner1".parse().unwrap());
    let snoop = fw.launch(&snoop).await.unwrap();
    let out = wait_for("the snoop's report", Duration::from_secs(20), || async {
        admin
            .logs(&snoop.id, &Default::default())
            .await
            .ok()
            .filter(|c| c.data.matches("DENIED").count() + c.data.matches("READ").count() == 6)
    })
    .await
    .unwrap()
    .data;
    assert!(!out.contains("READ "), "an unprivileged task read: {out}");
    let uid: u32 = out.lines().next().unwrap().trim().parse().unwrap();
    assert!(uid >= 200_000, "a task user of its own: {uid}");
    // And frameworks cannot ask for privilege.
    let mut root = sleeper("rooted", "bladerunner1");
    root.privileged = true;
    let err = fw.launch(&root).await.unwrap_err();
    assert_eq!(err.status().map(|s| s.as_u16()), Some(403), "{err}");
}

/// The network agent's token (`api_access: network`) reads the routes the switch should hold
/// and reports what it holds, and nothing more; no other token but an admin's does either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_agents_token_reaches_the_routes_and_nothing_more() {
    let rack = LocalRack::start(TORC, rack_options()).await.unwrap();
    let admin = rack.client();
    let (_, out) = task_saying(
        &admin,
        ("network-agent", "bladerunner1"),
        "echo TOKEN=$(cat \"$TORC_TOKEN_FILE\"); sleep 600",
        Some(torc_types::ApiAccess::Network),
        "TOKEN=torc",
    )
    .await;
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN="))
        .expect("the token")
        .trim()
        .to_string();
    let http = http_with(&rack, None);
    let url = rack.url();
    let bearer = |t: &str| format!("Bearer {t}");
    let routes = http
        .get(format!("{url}/api/v1/network/routes"))
        .header("authorization", bearer(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(routes.status(), StatusCode::OK);
    let snapshot: torc_api::RouteSnapshot = routes.json().await.unwrap();
    assert!(snapshot.generation >= 1 && snapshot.routes.is_empty());
    let report = torc_api::NetworkReport {
        epoch: snapshot.epoch,
        generation_applied: snapshot.generation,
        routes: vec![torc_api::SwitchRoute {
            destination: "198.18.0.21".parse().unwrap(),
            prefix_len: 32,
            gateway: None,
            port: Some("swp1".into()),
            protocol: "kernel".into(),
        }],
        ports: vec![torc_api::SwitchPort {
            name: "swp1".into(),
            oper_state: "up".into(),
            mtu: 1500,
            mac: None,
            rx_bytes: 1234,
            tx_bytes: 5678,
            rx_packets: 12,
            tx_packets: 56,
            rx_errors: 0,
            tx_errors: 0,
        }],
    };
    let posted = http
        .post(format!("{url}/api/v1/network/report"))
        .header("authorization", bearer(&token))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    // Nothing a viewer may read: tasks carry env and args.
    let (status, error) = status_and_error(
        http.get(format!("{url}/api/v1/tasks"))
            .header("authorization", bearer(&token)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(error.contains("needs a viewer or admin token"), "{error}");
    // A viewer reads the network's view, but is not the network agent.
    let viewer = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    let (status, error) = status_and_error(
        http.get(format!("{url}/api/v1/network/routes"))
            .header("authorization", bearer(&viewer)),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert!(
        error.contains("the network agent's task token or an admin token"),
        "{error}"
    );
    let view: torc_api::NetworkView = http
        .get(format!("{url}/api/v1/network"))
        .header("authorization", bearer(&viewer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view.reported, Some(report));
    assert!(view.reported_at > 0);
    // A route the switch gains is an event in the rack's feed.
    let mut second = view.reported.clone().unwrap();
    second.routes.push(torc_api::SwitchRoute {
        destination: "198.19.1.2".parse().unwrap(),
        prefix_len: 32,
        gateway: Some("198.18.0.21".parse().unwrap()),
        port: Some("swp1".into()),
        protocol: "torc".into(),
    });
    let posted = http
        .post(format!("{url}/api/v1/network/report"))
        .header("authorization", bearer(&token))
        .json(&second)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), StatusCode::OK);
    let events: serde_json::Value = http
        .get(format!("{url}/api/v1/events"))
        .header("authorization", bearer(&viewer))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        events
            .to_string()
            .contains("route 198.19.1.2/32 via 198.18.0.21 (swp1) added on the switch"),
        "{events}"
    );
    // The CLI shows both.
    let cli = |command: &str| {
        let out = std::process::Command::new(TORC)
            .arg(command)
            .envs(rack.cli_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let routes = cli("routes");
    assert!(routes.contains("0 task route(s) wanted"), "{routes}");
    assert!(
        routes.contains("198.18.0.21/32") && routes.contains("kernel"),
        "{routes}"
    );
    let ports = cli("ports");
    assert!(
        ports.contains("swp1") && ports.contains("1234/5678"),
        "{ports}"
    );
}

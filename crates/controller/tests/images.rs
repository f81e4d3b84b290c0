//! The image routes (`/api/v1/nodes/{name}/images…`) and registry logins, against a real
//! controller on a free port: what is refused before any agent is asked (unknown, inactive
//! and container-less nodes, bad references, a caller's own registry login, viewers, archives
//! over the limit), the framework rule for host-path volumes, and the rack's registry login in
//! a container task's desired document. Pulls and imports through a real agent and containerd
//! are the end-to-end tests' (`crates/torc/tests/containers.rs`).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use torc_api::{RegisterRequest, RegisterResponse, RuntimeInfo};
use torc_config::{ContainersConfig, RegistryConfig};
use torc_controller::{AuthMode, ConfiguredNode, Controller, ControllerOptions, RackSettings};
use torc_types::{NodeName, NodeType, TaskSpec};

struct Rack {
    url: String,
    admin: String,
    join: String,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
}

fn node(name: &str, ip: &str, node_type: NodeType) -> ConfiguredNode {
    ConfiguredNode {
        name: NodeName::new(name).unwrap(),
        ip: ip.parse().unwrap(),
        external_ip: None,
        management_ip: None,
        port: 0,
        node_type,
        node_function: None,
        resources: None,
        port_range: None,
        task_block: None,
        endpoint: None,
    }
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap().trim().to_string()
}

impl Rack {
    /// A controller for `wedge` (master), `b1` and `b2`, which knows the registry
    /// `registry.example.com:5000` (login `torc`, secret `registry-example`) and takes
    /// archives of at most 1 MiB.
    async fn start() -> Rack {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = RackSettings::with_nodes(
            "rack",
            vec![
                node("wedge", "127.0.0.20", NodeType::Master),
                node("b1", "127.0.0.21", NodeType::Slave),
                node("b2", "127.0.0.22", NodeType::Slave),
            ],
        );
        settings.containers = ContainersConfig {
            registries: vec![RegistryConfig {
                host: "registry.example.com:5000".parse().unwrap(),
                user: Some("torc".into()),
                password_secret: Some("registry-example".parse().unwrap()),
                insecure: true,
            }],
            import_max_mb: 1,
            ..ContainersConfig::default()
        };
        let admin_file = dir.path().join("admin.token");
        let join_file = dir.path().join("join.token");
        let options = ControllerOptions {
            auth: AuthMode::Tokens {
                admin_token_file: Some(admin_file.clone()),
                join_token_file: Some(join_file.clone()),
            },
            ca_dir: None,
            ui_hosts: Vec::new(),
        };
        let ctl: Arc<Controller> =
            Controller::open(settings, &dir.path().join("data"), options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(ctl.serve(listener, async {
            let _ = stopped.await;
        }));
        Rack {
            url,
            admin: read_token(&admin_file),
            join: read_token(&join_file),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            stop: Some(stop),
            server: Some(server),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Registers a node's agent (with the join token) as saying `containers`; gives the
    /// node's own credential. Its agent URL leads nowhere: nothing listens on port 1.
    async fn register(&self, node: &str, ip: &str, containers: Result<(), &str>) -> String {
        let req = RegisterRequest {
            node: NodeName::new(node).unwrap(),
            ip: ip.parse::<IpAddr>().unwrap(),
            agent_url: format!("http://{ip}:1"),
            node_type: None,
            node_function: None,
            resources: torc_types::Resources::new(2.0, 1024.0, 1000.0),
            port_range: "31000-31009".parse().unwrap(),
            attributes: Default::default(),
            runtime: RuntimeInfo {
                containers: containers.is_ok(),
                containers_note: containers.err().map(str::to_string),
                ..RuntimeInfo::default()
            },
            tasks: Vec::new(),
            public_key: None,
        };
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/agents/register",
                &self.join,
                Some(serde_json::to_value(&req).unwrap()),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let resp: RegisterResponse = serde_json::from_value(body).unwrap();
        resp.credential
            .expect("a join registration mints a credential")
    }

    async fn token(&self, body: Value) -> String {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                "/api/v1/tokens",
                &self.admin,
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
    }
}

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn image_routes_refuse_before_asking_an_agent() {
    let rack = Rack::start().await;
    rack.register("b1", "127.0.0.21", Ok(())).await;
    rack.register("b2", "127.0.0.22", Err("turned off (--containerd off)"))
        .await;
    let viewer = rack.token(json!({"role": "viewer", "name": "v"})).await;
    use reqwest::Method as M;
    let admin = rack.admin.as_str();
    let pull = |reference: &str| Some(json!({ "reference": reference }));

    // An unknown node, an inactive one, one whose agent runs no containers.
    let (status, body) = rack
        .call(M::GET, "/api/v1/nodes/ghost/images", admin, None)
        .await;
    assert_eq!((status, error(&body)), (404, "no node named \"ghost\""));
    let (status, body) = rack
        .call(M::GET, "/api/v1/nodes/wedge/images", admin, None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(error(&body).contains("node wedge is inactive"), "{body}");
    for (method, path, body) in [
        (M::GET, "/api/v1/nodes/b2/images", None),
        (M::POST, "/api/v1/nodes/b2/images/pull", pull("busybox")),
        (M::DELETE, "/api/v1/nodes/b2/images?reference=busybox", None),
    ] {
        let (status, body) = rack.call(method, path, admin, body).await;
        assert_eq!(
            (status, error(&body)),
            (
                409,
                "node b2 cannot run containers: turned off (--containerd off)"
            ),
            "{path}"
        );
    }

    // References are checked before anything goes out.
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/nodes/b1/images/pull",
            admin,
            pull("Bad/Ref"),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).starts_with("reference: invalid image reference \"Bad/Ref\""),
        "{body}"
    );
    let (status, body) = rack
        .call(
            M::DELETE,
            "/api/v1/nodes/b1/images?reference=a%20b",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).starts_with("reference: invalid image reference"),
        "{body}"
    );
    let (status, body) = rack
        .call(M::DELETE, "/api/v1/nodes/b1/images", admin, None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(error(&body).contains("reference"), "{body}");

    // A caller's own registry login is refused: the controller adds the rack's.
    let with_login = json!({
        "reference": "registry.example.com:5000/torc/busybox:1",
        "registry": {"host": "registry.example.com:5000", "user": "me", "password": "x"},
    });
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/nodes/b1/images/pull",
            admin,
            Some(with_login),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).starts_with("registry: the controller adds"),
        "{body}"
    );

    // Viewers list images but change none.
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/nodes/b1/images/pull",
            &viewer,
            pull("busybox"),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).contains("needs an admin token"), "{body}");
    let (status, body) = rack
        .call(
            M::DELETE,
            "/api/v1/nodes/b1/images?reference=busybox",
            &viewer,
            None,
        )
        .await;
    assert_eq!(status, 403, "{body}");
    // The listing passes the policy and reaches for b1's agent, which is not there.
    let (status, body) = rack
        .call(M::GET, "/api/v1/nodes/b1/images", &viewer, None)
        .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        error(&body).starts_with("agent on b1 did not answer"),
        "{body}"
    );
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/nodes/b1/images/pull",
            admin,
            pull("busybox"),
        )
        .await;
    assert_eq!(status, 502, "{body}");

    // An archive over the rack's limit (1 MiB here), as its length says.
    let resp = rack
        .http
        .post(format!("{}/api/v1/nodes/b1/images/import", rack.url))
        .bearer_auth(admin)
        .body(vec![0u8; (1 << 20) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        error(&body),
        "the archive is larger than this rack's import limit, 1 MiB (containers.import_max_mb in the rack config)"
    );
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/nodes/b1/images/import?name=NO",
            admin,
            None,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        error(&body).starts_with("name: invalid image reference"),
        "{body}"
    );
    rack.stop().await;
}

#[tokio::test]
async fn container_tasks_get_the_racks_registry_login() {
    let rack = Rack::start().await;
    let b1 = rack.register("b1", "127.0.0.21", Ok(())).await;
    use reqwest::Method as M;
    let admin = rack.admin.as_str();
    let (status, body) = rack
        .call(
            M::PUT,
            "/api/v1/secrets/registry-example",
            admin,
            Some(json!({"value": "s3cret"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let launch = |name: &str, image: &str| {
        let mut spec = TaskSpec::new(name.parse().unwrap(), "");
        spec.container = Some(torc_types::ContainerSpec::new(image.parse().unwrap()));
        Some(serde_json::to_value(&spec).unwrap())
    };
    for (name, image) in [
        ("private", "registry.example.com:5000/torc/busybox:1"),
        ("public", "busybox"),
    ] {
        let (status, body) = rack
            .call(M::POST, "/api/v1/tasks", admin, launch(name, image))
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["node"], "b1", "{body}");
    }
    let (status, doc) = rack
        .call(M::GET, "/api/v1/agents/b1/desired", &b1, None)
        .await;
    assert_eq!(status, 200, "{doc}");
    let tasks = doc["tasks"].as_array().unwrap();
    let registry = |name: &str| {
        tasks
            .iter()
            .find(|t| t["spec"]["name"] == name)
            .map(|t| t["registry"].clone())
            .unwrap()
    };
    assert_eq!(
        registry("private"),
        json!({"host": "registry.example.com:5000", "user": "torc", "password": "s3cret", "insecure": true})
    );
    assert_eq!(registry("public"), Value::Null);
    // Each container task to start carries the rack's pull timeout (300 s by default).
    for t in tasks {
        assert_eq!(t["pull_timeout_seconds"], 300, "{t}");
    }

    // A framework may not mount a host path beyond its data directory (as `privileged`).
    let fw = rack
        .token(json!({"role": "framework", "name": "f", "framework": "fw"}))
        .await;
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/frameworks",
            &fw,
            Some(json!({"name": "fw"})),
        )
        .await;
    assert!(status == 200 || status == 201, "{body}");
    let mut spec = TaskSpec::new("peek".parse().unwrap(), "");
    let mut container = torc_types::ContainerSpec::new("busybox".parse().unwrap());
    container
        .volumes
        .push(torc_types::Volume::new("/etc", "/host-etc", true).unwrap());
    spec.container = Some(container);
    let (status, body) = rack
        .call(
            M::POST,
            "/api/v1/frameworks/fw/tasks",
            &fw,
            Some(serde_json::to_value(&spec).unwrap()),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        error(&body).starts_with("container.volumes: /etc:/host-etc:ro mounts a host path"),
        "{body}"
    );
    rack.stop().await;
}

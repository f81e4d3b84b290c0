//! A typed client for the controller's `/api/v1`: what the CLI, the agents and sub-schedulers
//! use to talk to a rack.
//!
//! It is a thin layer: one method per route, the wire types of `torc-api`, and errors that
//! carry the controller's own message, so a caller can show the operator what went wrong.
//! The image routes, whose answers and bodies are streams, are in `images.rs`.

mod images;

use std::time::Duration;

pub use images::PullStream;

/// TLS and secret files, for programs built on this client (frameworks) that need no more.
pub use torc_tls as tls;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use torc_api::original::{OriginalNode, OriginalTask, SimpleResponse};
use torc_api::{
    DesiredQuery, DesiredState, ErrorBody, EventLevel, EventsQuery, FrameworkEvents, FrameworkLog,
    FrameworkRegistered, FrameworkRegistration, FrameworkView, GroupView, LogChunk, LogQuery,
    NodeView, PowerAction, PowerRequest, PowerResult, RegisterRequest, RegisterResponse,
    ServiceView, StatusReport, StatusView, TaskFilter, TaskView,
};
use torc_types::{FrameworkName, NodeName, ServiceName, TaskId, TaskSpec};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller answered with an error status; `message` is its own words.
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    /// The controller could not be reached, or the answer was cut off.
    #[error("cannot reach the controller at {url}: {source}")]
    Transport {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the JSON we expected.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
    /// A file to send (an image archive) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the controller could not be reached at all (as opposed to answering "no").
    pub fn is_transport(&self) -> bool {
        matches!(self, ClientError::Transport { .. })
    }
}

/// A handle on one controller. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    /// For the controller: under TLS its certificate must name `torc_tls::CONTROLLER_NAME`.
    http: reqwest::Client,
    /// For the rack's other servers (agents): their certificates must name the address.
    rack_http: reqwest::Client,
}

/// What a client trusts, and what it presents when asked.
#[derive(Debug, Clone)]
pub struct RackTls {
    /// The rack CA.
    pub roots: Vec<torc_tls::CertificateDer<'static>>,
    /// A certificate and key to present (agents).
    pub identity: Option<torc_tls::Identity>,
}

/// Why a client could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Tls(#[from] torc_tls::TlsError),
    #[error("{0} is not set: it names the controller's URL")]
    NoController(&'static str),
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// An HTTP client builder that trusts the rack CA named by `TORC_CA` (when set), for a task's
/// calls to the rack's other services (the tsdb, an agent).
pub fn rack_http_from_env() -> Result<reqwest::ClientBuilder, SetupError> {
    let builder = reqwest::Client::builder().no_proxy();
    Ok(match std::env::var_os(ENV_CA) {
        Some(path) => builder.tls_backend_preconfigured(torc_tls::client_config(
            &torc_tls::load_certs(std::path::Path::new(&path))?,
            None,
        )?),
        None => builder,
    })
}

/// The environment variables a task finds its controller by (set by its agent).
pub const ENV_CONTROLLER: &str = "TORC_CONTROLLER";
/// The file holding the task's own token (when its spec asked for `api_access`).
pub const ENV_TOKEN_FILE: &str = "TORC_TOKEN_FILE";
/// The rack CA's certificate (PEM), which the controller's certificate chains to.
pub const ENV_CA: &str = "TORC_CA";

impl Client {
    /// `base` is the controller's root URL, e.g. `http://127.0.3.20:3000`. Plain HTTP or
    /// HTTPS checked against the system's roots; racks use [`Client::with_tls`].
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        Client::with_tls(base, token, None).expect("a client without TLS settings always builds")
    }

    /// A client for a controller whose certificate chains to the rack CA in `tls` and names
    /// the controller (`torc_tls::CONTROLLER_NAME`, whatever address is dialled), presenting
    /// `tls`'s identity when the controller asks for one (agents).
    pub fn with_tls(
        base: impl Into<String>,
        token: Option<String>,
        tls: Option<RackTls>,
    ) -> Result<Self, SetupError> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .no_proxy()
        };
        let (mut http, mut rack_http) = (builder(), builder());
        if let Some(tls) = tls {
            http = http.tls_backend_preconfigured(torc_tls::controller_client_config(
                &tls.roots,
                tls.identity,
            )?);
            rack_http =
                rack_http.tls_backend_preconfigured(torc_tls::client_config(&tls.roots, None)?);
        }
        Ok(Client {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            http: http.build()?,
            rack_http: rack_http.build()?,
        })
    }

    /// A client from a CA file (PEM) and a token, as the CLI and tasks are configured.
    pub fn from_files(
        base: impl Into<String>,
        token: Option<String>,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, SetupError> {
        let tls = match ca {
            Some(path) => Some(RackTls {
                roots: torc_tls::load_certs(path)?,
                identity: None,
            }),
            None => None,
        };
        Client::with_tls(base, token, tls)
    }

    /// A task's client, from what its agent set: `TORC_CONTROLLER`, `TORC_CA` and, when the
    /// task asked for one, `TORC_TOKEN_FILE`.
    pub fn from_env() -> Result<Self, SetupError> {
        let base =
            std::env::var(ENV_CONTROLLER).map_err(|_| SetupError::NoController(ENV_CONTROLLER))?;
        Client::from_env_with(base)
    }

    /// [`Client::from_env`] with the controller's URL given.
    pub fn from_env_with(base: impl Into<String>) -> Result<Self, SetupError> {
        let token = match std::env::var_os(ENV_TOKEN_FILE) {
            Some(path) => Some(torc_tls::files::read_secret(std::path::Path::new(&path))?),
            None => None,
        };
        let ca = std::env::var_os(ENV_CA).map(std::path::PathBuf::from);
        Client::from_files(base, token, ca.as_deref())
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// GETs a URL of the rack (e.g. an agent's `/v1/metrics`) with this client's TLS
    /// settings and token.
    pub async fn get_url<T: DeserializeOwned>(&self, url: &str) -> Result<T, ClientError> {
        let mut req = self.rack_http.get(url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        self.send(url.to_string(), req).await
    }

    fn request(&self, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        (url, req)
    }

    /// Sends `req`; a success status gives the response, whose body is still to be read.
    async fn checked(
        &self,
        url: String,
        req: RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
        Err(ClientError::Api { status, message })
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: String,
        req: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = self.checked(url.clone(), req).await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (url, req) = self.request(Method::GET, path);
        self.send(url, req).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let (url, req) = self.request(Method::POST, path);
        self.send(url, req.json(body)).await
    }

    // --- credentials ---

    pub async fn tokens(&self) -> Result<Vec<torc_api::TokenView>, ClientError> {
        self.get("/api/v1/tokens").await
    }

    pub async fn create_token(
        &self,
        req: &torc_api::TokenRequest,
    ) -> Result<torc_api::TokenCreated, ClientError> {
        self.post("/api/v1/tokens", req).await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let (url, req) = self.request(Method::DELETE, &format!("/api/v1/tokens/{id}"));
        self.send(url, req).await
    }

    /// Who holds `token` (agents and frameworks ask about their callers). Bounded to 5 s: a
    /// caller waits on it.
    pub async fn review(&self, token: &str) -> Result<torc_api::ReviewResponse, ClientError> {
        let (url, req) = self.request(Method::POST, "/api/v1/auth/review");
        let body = torc_api::ReviewRequest {
            token: token.to_string(),
        };
        self.send(url, req.json(&body).timeout(Duration::from_secs(5)))
            .await
    }

    /// Who this client's credential is.
    pub async fn whoami(&self) -> Result<torc_api::SessionView, ClientError> {
        self.get("/api/v1/session").await
    }

    pub async fn secrets(&self) -> Result<Vec<String>, ClientError> {
        self.get("/api/v1/secrets").await
    }

    /// A rack secret's value (admins only).
    pub async fn secret(&self, name: &torc_types::SecretName) -> Result<String, ClientError> {
        let v: serde_json::Value = self.get(&format!("/api/v1/secrets/{name}")).await?;
        Ok(v["value"].as_str().unwrap_or_default().to_string())
    }

    pub async fn set_secret(
        &self,
        name: &torc_types::SecretName,
        value: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let (url, req) = self.request(Method::PUT, &format!("/api/v1/secrets/{name}"));
        self.send(url, req.json(&serde_json::json!({ "value": value })))
            .await
    }

    // --- nodes ---

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get("/api/v1/nodes").await
    }

    pub async fn node(&self, name: &NodeName) -> Result<NodeView, ClientError> {
        self.get(&format!("/api/v1/nodes/{name}")).await
    }

    // --- tasks ---

    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, ClientError> {
        let (url, req) = self.request(Method::GET, "/api/v1/tasks");
        self.send(url, req.query(filter)).await
    }

    pub async fn task(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    pub async fn launch(&self, spec: &TaskSpec) -> Result<TaskView, ClientError> {
        self.post("/api/v1/tasks", spec).await
    }

    pub async fn kill(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        let (url, req) = self.request(Method::DELETE, &format!("/api/v1/tasks/{id}"));
        self.send(url, req).await
    }

    pub async fn logs(&self, id: &TaskId, query: &LogQuery) -> Result<LogChunk, ClientError> {
        let (url, req) = self.request(Method::GET, &format!("/api/v1/tasks/{id}/logs"));
        self.send(url, req.query(query)).await
    }

    // --- frameworks ---

    pub async fn frameworks(&self) -> Result<Vec<FrameworkView>, ClientError> {
        self.get("/api/v1/frameworks").await
    }

    pub async fn framework(&self, name: &FrameworkName) -> Result<FrameworkView, ClientError> {
        self.get(&format!("/api/v1/frameworks/{name}")).await
    }

    /// Registers (or re-registers) a framework; the answer carries its surviving tasks.
    pub async fn register_framework(
        &self,
        reg: &FrameworkRegistration,
    ) -> Result<FrameworkRegistered, ClientError> {
        self.post("/api/v1/frameworks", reg).await
    }

    pub async fn unregister_framework(
        &self,
        name: &FrameworkName,
    ) -> Result<FrameworkView, ClientError> {
        let (url, req) = self.request(Method::DELETE, &format!("/api/v1/frameworks/{name}"));
        self.send(url, req).await
    }

    pub async fn framework_tasks(
        &self,
        name: &FrameworkName,
    ) -> Result<Vec<TaskView>, ClientError> {
        self.get(&format!("/api/v1/frameworks/{name}/tasks")).await
    }

    pub async fn framework_launch(
        &self,
        name: &FrameworkName,
        spec: &TaskSpec,
    ) -> Result<TaskView, ClientError> {
        self.post(&format!("/api/v1/frameworks/{name}/tasks"), spec)
            .await
    }

    pub async fn framework_kill(
        &self,
        name: &FrameworkName,
        id: &TaskId,
    ) -> Result<TaskView, ClientError> {
        let (url, req) = self.request(
            Method::DELETE,
            &format!("/api/v1/frameworks/{name}/tasks/{id}"),
        );
        self.send(url, req).await
    }

    /// One long poll for a framework's task updates (see `Framework` for the loop).
    pub async fn framework_events(
        &self,
        name: &FrameworkName,
        query: &EventsQuery,
    ) -> Result<FrameworkEvents, ClientError> {
        let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
        let (url, req) = self.request(Method::GET, &format!("/api/v1/frameworks/{name}/events"));
        self.send(
            url,
            req.query(query).timeout(wait + Duration::from_secs(10)),
        )
        .await
    }

    /// Posts a line to the rack's event feed (the UI's "recent events") for a framework, e.g. a
    /// scaling decision.
    pub async fn framework_event(
        &self,
        name: &FrameworkName,
        level: EventLevel,
        message: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let line = FrameworkLog {
            level,
            message: message.to_string(),
        };
        self.post(&format!("/api/v1/frameworks/{name}/log"), &line)
            .await
    }

    /// Starts (`start`) or stops (`stop`) one of a framework's groups through the controller.
    pub async fn framework_group(
        &self,
        name: &FrameworkName,
        group: &str,
        action: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.post(
            &format!("/api/v1/frameworks/{name}/groups/{group}/{action}"),
            &serde_json::json!({}),
        )
        .await
    }

    // --- the rack network ---

    /// The routes the switch should hold and what its network agent last reported.
    pub async fn network(&self) -> Result<torc_api::NetworkView, ClientError> {
        self.get("/api/v1/network").await
    }

    /// Long-polls the routes the switch should hold (the network agent's): answers when the
    /// controller's `(epoch, generation)` differs from the one given, or when `wait` is over.
    pub async fn switch_routes(
        &self,
        epoch: u64,
        after: u64,
        wait: Duration,
    ) -> Result<torc_api::RouteSnapshot, ClientError> {
        let query = torc_api::SnapshotQuery {
            epoch,
            after,
            wait_ms: Some(wait.as_millis() as u64),
        };
        let (url, req) = self.request(Method::GET, "/api/v1/network/routes");
        self.send(
            url,
            req.query(&query).timeout(wait + Duration::from_secs(5)),
        )
        .await
    }

    /// The network agent's report of what the switch holds.
    pub async fn report_network(
        &self,
        report: &torc_api::NetworkReport,
    ) -> Result<serde_json::Value, ClientError> {
        self.post("/api/v1/network/report", report).await
    }

    // --- services and groups ---

    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get("/api/v1/status").await
    }

    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.get("/api/v1/services").await
    }

    pub async fn service(&self, name: &ServiceName) -> Result<ServiceView, ClientError> {
        self.get(&format!("/api/v1/services/{name}")).await
    }

    /// Ends a service instance: a system service is restarted, a group instance ends.
    pub async fn delete_service(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        let (url, req) = self.request(Method::DELETE, &format!("/api/v1/services/{name}"));
        self.send(url, req).await
    }

    pub async fn groups(&self) -> Result<Vec<GroupView>, ClientError> {
        self.get("/api/v1/groups").await
    }

    pub async fn start_group(&self, name: &ServiceName) -> Result<GroupView, ClientError> {
        self.post(
            &format!("/api/v1/groups/{name}/start"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn stop_group(&self, name: &ServiceName) -> Result<GroupView, ClientError> {
        self.post(
            &format!("/api/v1/groups/{name}/stop"),
            &serde_json::json!({}),
        )
        .await
    }

    pub async fn power(
        &self,
        node: &NodeName,
        action: PowerAction,
    ) -> Result<PowerResult, ClientError> {
        let body = PowerRequest { action };
        self.post(&format!("/api/v1/nodes/{node}/power"), &body)
            .await
    }

    // --- the original API ---

    /// `POST /service/announce`: registers or renews an external task.
    pub async fn announce(&self, task: &OriginalTask) -> Result<SimpleResponse, ClientError> {
        self.post("/service/announce", task).await
    }

    pub async fn original_nodes(&self) -> Result<Vec<OriginalNode>, ClientError> {
        self.get("/nodes").await
    }

    pub async fn original_running(&self) -> Result<Vec<OriginalTask>, ClientError> {
        self.get("/services/running").await
    }

    pub async fn original_metered(&self) -> Result<Vec<OriginalTask>, ClientError> {
        self.get("/services/metered").await
    }

    /// Long-polls the rack's names for `torc dns`: answers when the controller's `(epoch,
    /// generation)` differs from the one given, or when `wait` is over.
    pub async fn dns_snapshot<T: DeserializeOwned>(
        &self,
        epoch: u64,
        after: u64,
        wait: Duration,
    ) -> Result<T, ClientError> {
        let query = torc_api::SnapshotQuery {
            epoch,
            after,
            wait_ms: Some(wait.as_millis() as u64),
        };
        let (url, req) = self.request(Method::GET, "/api/v1/dns");
        self.send(
            url,
            req.query(&query).timeout(wait + Duration::from_secs(5)),
        )
        .await
    }

    // --- agent protocol ---

    pub async fn register_agent(
        &self,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        self.post("/api/v1/agents/register", req).await
    }

    pub async fn report_status(
        &self,
        node: &NodeName,
        report: &StatusReport,
    ) -> Result<serde_json::Value, ClientError> {
        self.post(&format!("/api/v1/agents/{node}/status"), report)
            .await
    }

    /// Long-polls for the node's desired state, newer than the document (`epoch`, `after`)
    /// the agent holds (a controller of another epoch answers at once). `wait` bounds the
    /// server-side wait; the request itself times out a little later.
    pub async fn desired(
        &self,
        node: &NodeName,
        epoch: u64,
        after: u64,
        wait: Duration,
    ) -> Result<DesiredState, ClientError> {
        let query = DesiredQuery {
            epoch,
            after,
            wait_ms: Some(wait.as_millis() as u64),
        };
        let (url, req) = self.request(Method::GET, &format!("/api/v1/agents/{node}/desired"));
        self.send(
            url,
            req.query(&query).timeout(wait + Duration::from_secs(5)),
        )
        .await
    }
}

/// A sub-scheduler's handle on the controller: registers under its name, launches and kills
/// its own tasks, and follows their updates. Re-registering after a restart (a new `Framework`
/// with the same name) gives back the tasks that survived.
#[derive(Debug, Clone)]
pub struct Framework {
    client: Client,
    name: FrameworkName,
    epoch: u64,
    seq: u64,
}

/// What a poll of `Framework::updates` brings.
#[derive(Debug, Clone)]
pub enum Updates {
    /// The tasks that changed, in order.
    Changed(Vec<TaskView>),
    /// Every task of the framework: the controller restarted, or we fell behind.
    Snapshot(Vec<TaskView>),
}

impl Framework {
    /// Registers; the answer lists the framework's surviving tasks.
    pub async fn register(
        client: Client,
        name: FrameworkName,
        failover_timeout: Duration,
    ) -> Result<(Framework, Vec<TaskView>), ClientError> {
        Self::register_with_api(client, name, failover_timeout, None).await
    }

    /// `register`, telling the controller where the framework's own API answers (the
    /// controller then forwards group start/stop calls there).
    pub async fn register_with_api(
        client: Client,
        name: FrameworkName,
        failover_timeout: Duration,
        api_url: Option<String>,
    ) -> Result<(Framework, Vec<TaskView>), ClientError> {
        let reg = FrameworkRegistration {
            name: name.clone(),
            failover_timeout_ms: Some(failover_timeout.as_millis() as u64),
            api_url,
        };
        let registered = client.register_framework(&reg).await?;
        Ok((
            Framework {
                client,
                name,
                epoch: 0,
                seq: 0,
            },
            registered.tasks,
        ))
    }

    pub fn name(&self) -> &FrameworkName {
        &self.name
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn launch(&self, spec: &TaskSpec) -> Result<TaskView, ClientError> {
        self.client.framework_launch(&self.name, spec).await
    }

    pub async fn kill(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        self.client.framework_kill(&self.name, id).await
    }

    pub async fn tasks(&self) -> Result<Vec<TaskView>, ClientError> {
        self.client.framework_tasks(&self.name).await
    }

    /// Waits up to `wait` for task updates. Calling this regularly is also what keeps the
    /// framework alive: past its failover timeout without a poll, its tasks are killed.
    pub async fn updates(&mut self, wait: Duration) -> Result<Updates, ClientError> {
        let q = EventsQuery {
            epoch: self.epoch,
            after: self.seq,
            wait_ms: Some(wait.as_millis() as u64),
        };
        let ev = self.client.framework_events(&self.name, &q).await?;
        self.epoch = ev.epoch;
        self.seq = ev.seq;
        Ok(if ev.reset {
            Updates::Snapshot(ev.tasks)
        } else {
            Updates::Changed(ev.tasks)
        })
    }
}

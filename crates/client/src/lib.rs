//! A typed client for the controller's `/api/v1`: what the CLI, the agents and sub-schedulers
//! use to talk to a rack.
//!
//! It is a thin layer: one method per route, the wire types of `torc-api`, and errors that
//! carry the controller's own message, so a caller can show the operator what went wrong.
//! The image routes, whose answers and bodies are streams, are in `images.rs`.
//!
//! A client knows one controller or several (a highly available rack, design
//! `docs/design/ha-controller.md` §7.1): [`Endpoints`] holds the list and the one calls go to
//! now, and decides after each answer whether to send the call again and where (a standby's
//! `421` names the leader; a refused connection moves on to the next URL). A change whose
//! connection broke after it was sent is not sent again: its error goes to the caller. HTTP
//! redirects are never followed.

mod endpoints;
mod images;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use endpoints::{Endpoints, EndpointsError, Kind, MAX_HOPS, Next, Outcome, Tried};
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
    /// No controller took the call: every URL tried, and what each attempt came to.
    #[error("no controller took the call: {}", tried.iter().map(|t| format!("{}: {}", t.url, t.what)).collect::<Vec<_>>().join("; "))]
    Unreachable { tried: Vec<Tried> },
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
        matches!(
            self,
            ClientError::Transport { .. } | ClientError::Unreachable { .. }
        )
    }
}

pub use torc_api::{LEADER_HEADER, STALE_HEADER};

/// How long a call may take unless it says otherwise (long polls, streams, reviews do).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A backup reads the whole store and derives its sealing key (PBKDF2): longer than a call.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(120);

/// A handle on the rack's controllers. Cheap to clone; clones share which controller is
/// current, so one clone's switch to the leader serves them all.
#[derive(Debug, Clone)]
pub struct Client {
    endpoints: Arc<Mutex<Endpoints>>,
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
    #[error(
        "neither {ENV_CONTROLLERS} nor {ENV_CONTROLLER} is set: they name the controllers' URLs"
    )]
    NoController,
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
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

/// Every controller's URL, comma-separated: how a task finds the rack's controllers (set by
/// its agent; read first).
pub const ENV_CONTROLLERS: &str = "TORC_CONTROLLERS";
/// One controller's URL (the one the agent followed when it launched the task), for scripts
/// that take a single URL; may hold a comma-separated list too.
pub const ENV_CONTROLLER: &str = "TORC_CONTROLLER";

/// The controllers' URLs: `flag` when given (a `--controller` list), else `TORC_CONTROLLERS`,
/// else `TORC_CONTROLLER`.
pub fn controllers_from_env(flag: Option<String>) -> Result<String, SetupError> {
    flag.filter(|f| !f.trim().is_empty())
        .or_else(|| std::env::var(ENV_CONTROLLERS).ok())
        .filter(|f| !f.trim().is_empty())
        .or_else(|| std::env::var(ENV_CONTROLLER).ok())
        .filter(|f| !f.trim().is_empty())
        .ok_or(SetupError::NoController)
}
/// The file holding the task's own token (when its spec asked for `api_access`).
pub const ENV_TOKEN_FILE: &str = "TORC_TOKEN_FILE";
/// The rack CA's certificate (PEM), which the controller's certificate chains to.
pub const ENV_CA: &str = "TORC_CA";

/// What a transport error says happened (connection refused, a certificate refused): its
/// sources, without reqwest's own line, which only repeats the URL.
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    if parts.is_empty() {
        return e.to_string();
    }
    parts.join(": ")
}

/// A controller's error answer: its status and its own words.
async fn api_error(url: String, resp: reqwest::Response) -> ClientError {
    let status = resp.status();
    match resp.bytes().await {
        Ok(bytes) => {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            ClientError::Api { status, message }
        }
        Err(source) => ClientError::Transport { url, source },
    }
}

/// Reads a success's JSON body.
async fn decode<T: DeserializeOwned>(
    url: String,
    resp: reqwest::Response,
) -> Result<T, ClientError> {
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

impl Client {
    /// `base` is the controller's root URL, e.g. `http://127.0.3.20:3000`, or several,
    /// comma-separated. Plain HTTP or HTTPS checked against the system's roots; racks use
    /// [`Client::with_tls`].
    pub fn new(base: impl Into<String>, token: Option<String>) -> Result<Self, SetupError> {
        Client::with_tls(base, token, None)
    }

    /// A client for controllers whose certificates chain to the rack CA in `tls` and name
    /// the controller (`torc_tls::CONTROLLER_NAME`, whatever address is dialled: so a name in
    /// `base` may be dialled by its addresses), presenting `tls`'s identity when the
    /// controller asks for one (agents). `base` is one URL or a comma-separated list.
    pub fn with_tls(
        base: impl Into<String>,
        token: Option<String>,
        tls: Option<RackTls>,
    ) -> Result<Self, SetupError> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(3))
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
        };
        let (mut http, mut rack_http) = (builder(), builder());
        let endpoints = Endpoints::parse(&base.into(), tls.is_some())?;
        if let Some(tls) = tls {
            http = http.tls_backend_preconfigured(torc_tls::controller_client_config(
                &tls.roots,
                tls.identity,
            )?);
            rack_http =
                rack_http.tls_backend_preconfigured(torc_tls::client_config(&tls.roots, None)?);
        }
        Ok(Client {
            endpoints: Arc::new(Mutex::new(endpoints)),
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

    /// A task's client, from what its agent set: `TORC_CONTROLLERS` (else `TORC_CONTROLLER`),
    /// `TORC_CA` and, when the task asked for one, `TORC_TOKEN_FILE`.
    pub fn from_env() -> Result<Self, SetupError> {
        Client::from_env_with(controllers_from_env(None)?)
    }

    /// [`Client::from_env`] with the controllers' URLs given (one, or a comma-separated list).
    pub fn from_env_with(base: impl Into<String>) -> Result<Self, SetupError> {
        let token = match std::env::var_os(ENV_TOKEN_FILE) {
            Some(path) => Some(torc_tls::files::read_secret(std::path::Path::new(&path))?),
            None => None,
        };
        let ca = std::env::var_os(ENV_CA).map(std::path::PathBuf::from);
        Client::from_files(base, token, ca.as_deref())
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, Endpoints> {
        // The state is a list and an index, valid after any panic of another holder.
        self.endpoints.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The controller calls go to now.
    pub fn base_url(&self) -> String {
        self.endpoints().current().to_string()
    }

    /// This client with `other`'s controllers and current one (when both were configured
    /// with the same list), so a client rebuilt with new credentials (an agent's, after it
    /// registered) keeps following the leader its predecessor found.
    pub fn with_endpoints_of(mut self, other: &Client) -> Client {
        if self.controllers() == other.controllers() {
            self.endpoints = Arc::clone(&other.endpoints);
        }
        self
    }

    /// Every configured controller's URL, comma-separated (what `TORC_CONTROLLERS` holds).
    pub fn controllers(&self) -> String {
        self.endpoints().configured().join(",")
    }

    /// GETs a URL of the rack (e.g. an agent's `/v1/metrics`) with this client's TLS
    /// settings and token.
    pub async fn get_url<T: DeserializeOwned>(&self, url: &str) -> Result<T, ClientError> {
        let resp = self.get_url_response(url).await?;
        decode(url.to_string(), resp).await
    }

    /// [`Client::get_url`] for a text answer (a `/metrics`).
    pub async fn get_url_text(&self, url: &str) -> Result<String, ClientError> {
        let resp = self.get_url_response(url).await?;
        resp.text().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })
    }

    async fn get_url_response(&self, url: &str) -> Result<reqwest::Response, ClientError> {
        let mut req = self.rack_http.get(url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        if !resp.status().is_success() {
            return Err(api_error(url.to_string(), resp).await);
        }
        Ok(resp)
    }

    /// Looks the controllers' names up when they are stale (at first, after a failed round).
    async fn refresh_names(&self) {
        let lookups = self.endpoints().lookups();
        if lookups.is_empty() {
            return;
        }
        let mut answers = Vec::new();
        for (i, host, port) in lookups {
            // A name that does not resolve stays a target: dialling it gives the error.
            if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
                answers.push((i, addrs.collect()));
            }
        }
        self.endpoints().expand(&answers);
    }

    /// Sends a call to the current controller, following the leader and moving on to the
    /// next controller as [`Endpoints::decide`] says; `build` adds the call's query, body
    /// and timeout to each attempt. A success status gives the response, whose body is still
    /// to be read; the URL is the one that answered.
    async fn execute(
        &self,
        method: Method,
        path: &str,
        mut build: impl FnMut(RequestBuilder) -> Result<RequestBuilder, ClientError>,
    ) -> Result<(String, reqwest::Response), ClientError> {
        self.refresh_names().await;
        let kind = if method == Method::GET {
            Kind::Read
        } else {
            Kind::Change
        };
        let (mut call, mut base) = {
            let e = self.endpoints();
            (e.begin(kind), e.current().to_string())
        };
        // A read a standby answered (possibly stale), kept while the others are asked.
        let mut stale: Option<(String, reqwest::Response)> = None;
        loop {
            let url = format!("{base}{path}");
            let mut req = self.http.request(method.clone(), &url);
            if let Some(token) = &self.token {
                req = req.bearer_auth(token);
            }
            let (outcome, failure) = match build(req)?.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success()
                        && stale.is_none()
                        && resp.headers().contains_key(STALE_HEADER)
                        && let Some(next) = self.endpoints().stale(&mut call, &base)
                    {
                        stale = Some((url, resp));
                        base = next;
                        continue;
                    }
                    let leader = resp
                        .headers()
                        .get(LEADER_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    let outcome = Outcome::Answered {
                        status: status.as_u16(),
                        leader,
                    };
                    if status.is_success() {
                        // Learns a leader named on a success; a success is always returned.
                        self.endpoints().decide(&mut call, &base, outcome);
                        return Ok((url, resp));
                    }
                    (outcome, api_error(url, resp).await)
                }
                Err(source) => {
                    let what = error_chain(&source);
                    // Connecting (TCP, TLS) happens before anything is written.
                    let outcome = if source.is_connect() || source.is_builder() {
                        Outcome::NotSent(what)
                    } else {
                        Outcome::Lost(what)
                    };
                    (outcome, ClientError::Transport { url, source })
                }
            };
            let next = self.endpoints().decide(&mut call, &base, outcome);
            if !matches!(next, Next::Retry(_))
                && let Some(answer) = stale.take()
            {
                // Nobody fresher answered: the standby's read stands.
                return Ok(answer);
            }
            match next {
                Next::Return => return Err(failure),
                Next::Retry(next) => base = next,
                Next::Fail if call.tried().len() <= 1 => return Err(failure),
                Next::Fail => {
                    return Err(ClientError::Unreachable {
                        tried: call.tried().to_vec(),
                    });
                }
            }
        }
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        mut build: impl FnMut(RequestBuilder) -> RequestBuilder,
    ) -> Result<T, ClientError> {
        // Bounded unless the call says otherwise (a long poll, a review): a controller that
        // accepts connections but never answers (frozen, hung) must not hold a caller forever,
        // and a call that times out moves the next one to the next controller.
        let (url, resp) = self
            .execute(method, path, |r| Ok(build(r.timeout(CALL_TIMEOUT))))
            .await?;
        decode(url, resp).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.send(Method::GET, path, |r| r).await
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send(Method::POST, path, |r| r.json(body)).await
    }

    /// `POST /api/v1/backup`: the acting controller's state as a backup file, its secrets
    /// sealed under `passphrase`.
    pub async fn backup(&self, passphrase: &str) -> Result<Vec<u8>, ClientError> {
        let body = torc_api::BackupRequest {
            passphrase: passphrase.to_string(),
        };
        let (url, resp) = self
            .execute(Method::POST, "/api/v1/backup", |r| {
                Ok(r.timeout(BACKUP_TIMEOUT).json(&body))
            })
            .await?;
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport { url, source })?;
        Ok(bytes.to_vec())
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
        self.send(Method::DELETE, &format!("/api/v1/tokens/{id}"), |r| r)
            .await
    }

    /// Who holds `token` (agents and frameworks ask about their callers). Bounded to 5 s: a
    /// caller waits on it.
    pub async fn review(&self, token: &str) -> Result<torc_api::ReviewResponse, ClientError> {
        let body = torc_api::ReviewRequest {
            token: token.to_string(),
        };
        self.send(Method::POST, "/api/v1/auth/review", |r| {
            r.json(&body).timeout(Duration::from_secs(5))
        })
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
        let body = serde_json::json!({ "value": value });
        self.send(Method::PUT, &format!("/api/v1/secrets/{name}"), |r| {
            r.json(&body)
        })
        .await
    }

    // --- nodes ---

    pub async fn nodes(&self) -> Result<Vec<NodeView>, ClientError> {
        self.get("/api/v1/nodes").await
    }

    pub async fn node(&self, name: &NodeName) -> Result<NodeView, ClientError> {
        self.get(&format!("/api/v1/nodes/{name}")).await
    }

    /// No new task is placed on the node; its tasks keep running.
    pub async fn cordon(&self, name: &NodeName) -> Result<NodeView, ClientError> {
        self.post(&format!("/api/v1/nodes/{name}/cordon"), &())
            .await
    }

    /// Tasks may be placed on the node again; a drain going on stops.
    pub async fn uncordon(&self, name: &NodeName) -> Result<NodeView, ClientError> {
        self.post(&format!("/api/v1/nodes/{name}/uncordon"), &())
            .await
    }

    /// Starts a drain of the node; its progress is the node's `drain`.
    pub async fn drain(&self, name: &NodeName) -> Result<NodeView, ClientError> {
        self.post(&format!("/api/v1/nodes/{name}/drain"), &()).await
    }

    /// The rack's event feed after `after` (a `seq`; 0 for all it keeps), oldest first.
    pub async fn events(&self, after: u64) -> Result<Vec<torc_api::RackEvent>, ClientError> {
        self.get(&format!("/api/v1/events?after={after}")).await
    }

    // --- tasks ---

    pub async fn tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskView>, ClientError> {
        self.send(Method::GET, "/api/v1/tasks", |r| r.query(filter))
            .await
    }

    pub async fn task(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        self.get(&format!("/api/v1/tasks/{id}")).await
    }

    pub async fn launch(&self, spec: &TaskSpec) -> Result<TaskView, ClientError> {
        self.post("/api/v1/tasks", spec).await
    }

    pub async fn kill(&self, id: &TaskId) -> Result<TaskView, ClientError> {
        self.send(Method::DELETE, &format!("/api/v1/tasks/{id}"), |r| r)
            .await
    }

    pub async fn logs(&self, id: &TaskId, query: &LogQuery) -> Result<LogChunk, ClientError> {
        self.send(Method::GET, &format!("/api/v1/tasks/{id}/logs"), |r| {
            r.query(query)
        })
        .await
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
        self.send(Method::DELETE, &format!("/api/v1/frameworks/{name}"), |r| r)
            .await
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
        self.send(
            Method::DELETE,
            &format!("/api/v1/frameworks/{name}/tasks/{id}"),
            |r| r,
        )
        .await
    }

    /// One long poll for a framework's task updates (see `Framework` for the loop).
    pub async fn framework_events(
        &self,
        name: &FrameworkName,
        query: &EventsQuery,
    ) -> Result<FrameworkEvents, ClientError> {
        let wait = Duration::from_millis(query.wait_ms.unwrap_or(0));
        self.send(
            Method::GET,
            &format!("/api/v1/frameworks/{name}/events"),
            |r| r.query(query).timeout(wait + Duration::from_secs(10)),
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
        self.send(Method::GET, "/api/v1/network/routes", |r| {
            r.query(&query).timeout(wait + Duration::from_secs(5))
        })
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

    /// Sends a new rack config (its YAML text) to be checked, compared with the one applied
    /// and, unless `dry_run`, applied: changed services roll out one instance at a time.
    /// `origin` names the text in errors (a file name).
    pub async fn apply_config(
        &self,
        yaml: &str,
        origin: &str,
        dry_run: bool,
    ) -> Result<torc_api::ApplyReport, ClientError> {
        let body = yaml.to_string();
        let query = [
            ("dry_run", dry_run.to_string()),
            ("origin", origin.to_string()),
        ];
        self.send(Method::POST, "/api/v1/config", |r| {
            r.query(&query)
                .header("content-type", "application/yaml")
                .body(body.clone())
        })
        .await
    }

    /// The pending and firing alerts of the rack config's rules.
    pub async fn alerts(&self) -> Result<Vec<torc_api::AlertView>, ClientError> {
        self.get("/api/v1/alerts").await
    }

    /// The rack's controllers as the controller that answers sees them (any controller
    /// answers about itself: the leader's view names the members' health too).
    pub async fn controller_status(
        &self,
    ) -> Result<torc_api::controller::ControllerStatus, ClientError> {
        self.get("/api/v1/controller").await
    }

    /// Asks the leader to hand over to a standby (a standby's 421 is followed to the leader).
    pub async fn step_down(&self) -> Result<torc_api::controller::StepDownResponse, ClientError> {
        self.post("/api/v1/controller/step-down", &serde_json::json!({}))
            .await
    }

    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.get("/api/v1/services").await
    }

    pub async fn service(&self, name: &ServiceName) -> Result<ServiceView, ClientError> {
        self.get(&format!("/api/v1/services/{name}")).await
    }

    /// Ends a service instance: a system service is restarted, a group instance ends.
    pub async fn delete_service(&self, name: &str) -> Result<serde_json::Value, ClientError> {
        self.send(Method::DELETE, &format!("/api/v1/services/{name}"), |r| r)
            .await
    }

    /// Removes the data dirs of a service the rack config no longer defines, on every node
    /// (`POST /api/v1/services/{name}/purge`): each node's answer.
    pub async fn purge_service(
        &self,
        name: &ServiceName,
    ) -> Result<torc_api::ServicePurge, ClientError> {
        self.post(
            &format!("/api/v1/services/{name}/purge"),
            &serde_json::json!({}),
        )
        .await
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
        self.send(Method::GET, "/api/v1/dns", |r| {
            r.query(&query).timeout(wait + Duration::from_secs(5))
        })
        .await
    }

    // --- agent protocol ---

    pub async fn register_agent(
        &self,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        self.post("/api/v1/agents/register", req).await
    }

    /// An agent's heartbeat, bounded to 5 s (a commit takes milliseconds; etcd's own deadline
    /// is 3 s): a leader that does not answer in time is left for the next controller at the
    /// next heartbeat.
    pub async fn report_status(
        &self,
        node: &NodeName,
        report: &StatusReport,
    ) -> Result<serde_json::Value, ClientError> {
        let path = format!("/api/v1/agents/{node}/status");
        self.send(Method::POST, &path, |r| {
            r.json(report).timeout(Duration::from_secs(5))
        })
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
        self.send(
            Method::GET,
            &format!("/api/v1/agents/{node}/desired"),
            |r| r.query(&query).timeout(wait + Duration::from_secs(5)),
        )
        .await
    }
}

/// A sub-scheduler's handle on the controller: registers under its name, launches and kills
/// its own tasks, and follows their updates. Re-registering after a restart (a new `Framework`
/// with the same name) gives back the tasks that survived. Its calls and long polls go where
/// its [`Client`] goes: to the leader, when the client knows several controllers.
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
    /// Every task of the framework: the controller restarted, another controller leads now
    /// (its epoch differs), or we fell behind.
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

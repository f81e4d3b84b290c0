//! A typed client for the controller's `/api/v1`: what the CLI, the agents and sub-schedulers
//! use to talk to a rack.
//!
//! It is a thin layer: one method per route, the wire types of `torc-api`, and errors that
//! carry the controller's own message, so a caller can show the operator what went wrong.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use torc_api::original::{OriginalNode, OriginalTask, SimpleResponse};
use torc_api::{
    DesiredQuery, DesiredState, ErrorBody, EventsQuery, FrameworkEvents, FrameworkRegistered,
    FrameworkRegistration, FrameworkView, GroupView, LogChunk, LogQuery, NodeView, PowerRequest,
    PowerResult, RegisterRequest, RegisterResponse, ServiceView, StatusReport, StatusView,
    TaskFilter, TaskView,
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
    http: reqwest::Client,
}

impl Client {
    /// `base` is the controller's root URL, e.g. `http://127.0.3.20:3000`.
    pub fn new(base: impl Into<String>, token: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .no_proxy()
            .build()
            .expect("a plain HTTP client always builds");
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn request(&self, method: Method, path: &str) -> (String, RequestBuilder) {
        let url = format!("{}{}", self.base, path);
        let mut req = self.http.request(method, &url);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        (url, req)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        url: String,
        req: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.clone(),
            source,
        })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            return Err(ClientError::Api { status, message });
        }
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
        level: &str,
        message: &str,
    ) -> Result<serde_json::Value, ClientError> {
        self.post(
            &format!("/api/v1/frameworks/{name}/log"),
            &serde_json::json!({ "level": level, "message": message }),
        )
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

    pub async fn power(&self, node: &NodeName, action: &str) -> Result<PowerResult, ClientError> {
        let body = PowerRequest {
            action: action.to_string(),
        };
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

    /// Long-polls the rack's names for `torc dns`: answers when the generation differs from
    /// `after`, or when `wait` is over.
    pub async fn dns_snapshot<T: DeserializeOwned>(
        &self,
        after: u64,
        wait: Duration,
    ) -> Result<T, ClientError> {
        let query = DesiredQuery {
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

    /// Long-polls for the node's desired state. `wait` bounds the server-side wait; the
    /// request itself times out a little later.
    pub async fn desired(
        &self,
        node: &NodeName,
        after: u64,
        wait: Duration,
    ) -> Result<DesiredState, ClientError> {
        let query = DesiredQuery {
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

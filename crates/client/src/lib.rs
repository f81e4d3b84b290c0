//! A typed client for the controller's `/api/v1`: what the CLI, the agents and sub-schedulers
//! use to talk to a rack.
//!
//! It is a thin layer: one method per route, the wire types of `torc-api`, and errors that
//! carry the controller's own message, so a caller can show the operator what went wrong.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use torc_api::{
    DesiredQuery, DesiredState, ErrorBody, FrameworkView, LogChunk, LogQuery, NodeView,
    RegisterRequest, RegisterResponse, StatusReport, TaskFilter, TaskView,
};
use torc_types::{NodeName, TaskId, TaskSpec};

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

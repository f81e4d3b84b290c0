//! The controller's HTTP API, `/api/v1`: JSON in and out, proper verbs and status codes, and
//! every error a JSON body `{"error": "...", "status": N}` that says what was wrong.
//!
//! Calls that change the rack (every method but GET and HEAD) need the bearer token when the
//! controller has one; reads stay open on the rack network.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, request::Parts};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use torc_api::{
    DesiredQuery, DesiredState, ErrorBody, LogChunk, LogQuery, RegisterRequest, RegisterResponse,
    StatusReport, TaskFilter, TaskView,
};
use torc_types::{BUILTIN_FRAMEWORK, FrameworkName, NodeName, TaskId, TaskSpec, now_millis};

use crate::{ChangeError, Controller, RackError};

/// Longest a desired-state long poll waits.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route("/api/v1/tasks", get(list_tasks).post(launch_task))
        .route("/api/v1/tasks/{id}", get(get_task).delete(kill_task))
        .route("/api/v1/tasks/{id}/logs", get(task_logs))
        .route("/api/v1/frameworks", get(list_frameworks))
        .route("/api/v1/agents/register", post(register_agent))
        .route("/api/v1/agents/{name}/status", post(agent_status))
        .route("/api/v1/agents/{name}/desired", get(agent_desired))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&ctl),
            require_token,
        ))
        .with_state(ctl)
}

// ---------------------------------------------------------------------------------------------
// Errors and extractors

/// An error answer.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RackError> for ApiError {
    fn from(e: RackError) -> Self {
        let status = match &e {
            RackError::NotFound(_) => StatusCode::NOT_FOUND,
            RackError::Conflict(_) => StatusCode::CONFLICT,
            RackError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RackError::Forbidden(_) => StatusCode::FORBIDDEN,
            RackError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rejected(e) => e.into(),
            ChangeError::Store(e) => {
                tracing::error!(error = %e, "state store write failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

/// A JSON body whose rejection is a JSON error naming the problem (line and column included).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let status = match &r {
        JsonRejection::JsonDataError(_) => StatusCode::UNPROCESSABLE_ENTITY,
        JsonRejection::MissingJsonContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, format!("request body: {}", r.body_text()))
}

/// Query parameters whose rejection is a JSON error.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("query: {}", r.body_text()))
            })
    }
}

/// A path segment whose rejection is a JSON error.
pub struct Segment<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segment<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Segment(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("path: {}", r.body_text()))
            })
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

async fn require_token(State(ctl): State<Arc<Controller>>, req: Request, next: Next) -> Response {
    let needs_token = !matches!(*req.method(), Method::GET | Method::HEAD);
    if let (true, Some(token)) = (needs_token, ctl.token.as_deref()) {
        let given = req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token) {
            let why = if given.is_none() {
                "this call changes the rack and needs `Authorization: Bearer <token>` (the token is in the controller's data dir, file `token`)"
            } else {
                "the bearer token is not this controller's"
            };
            return ApiError::new(StatusCode::UNAUTHORIZED, why).into_response();
        }
    }
    next.run(req).await
}

type Reply<T> = Result<Json<T>, ApiError>;

// ---------------------------------------------------------------------------------------------
// Nodes

async fn list_nodes(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::NodeView>> {
    Json(ctl.read(|r| r.node_views()))
}

async fn get_node(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<NodeName>,
) -> Reply<torc_api::NodeView> {
    Ok(Json(ctl.read(|r| r.node_view(&name))?))
}

// ---------------------------------------------------------------------------------------------
// Tasks

async fn list_tasks(
    State(ctl): State<Arc<Controller>>,
    Params(filter): Params<TaskFilter>,
) -> Json<Vec<TaskView>> {
    Json(ctl.read(|r| r.tasks(&filter)))
}

async fn get_task(
    State(ctl): State<Arc<Controller>>,
    Segment(id): Segment<TaskId>,
) -> Reply<TaskView> {
    Ok(Json(ctl.read(|r| r.task(&id))?))
}

async fn launch_task(
    State(ctl): State<Arc<Controller>>,
    Body(spec): Body<TaskSpec>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let framework = FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name");
    let task = ctl
        .change(move |rack| {
            let id = rack.launch(spec, framework, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(task)))
}

async fn kill_task(
    State(ctl): State<Arc<Controller>>,
    Segment(id): Segment<TaskId>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let task = ctl
        .change(move |rack| {
            rack.kill(&id, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// The task's sandbox output, read from its node's agent.
async fn task_logs(
    State(ctl): State<Arc<Controller>>,
    Segment(id): Segment<TaskId>,
    Params(query): Params<LogQuery>,
) -> Reply<LogChunk> {
    let task = ctl.read(|r| r.task(&id))?;
    let node = task.node.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("task {id} was never placed on a node, so it has no output"),
        )
    })?;
    let (url, active) = ctl.read(|r| r.agent_url(&node)).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} has no agent address"),
        )
    })?;
    if !active {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} is inactive; its agent cannot be asked for the output"),
        ));
    }
    let resp = ctl
        .http
        .get(format!("{url}/v1/tasks/{id}/logs"))
        .query(&query)
        .send()
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("agent on {node} did not answer: {e}"),
            )
        })?;
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("agent on {node}: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
        let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        return Err(ApiError::new(status, format!("agent on {node}: {message}")));
    }
    serde_json::from_slice(&bytes).map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("agent on {node} sent an unreadable answer: {e}"),
        )
    })
}

async fn list_frameworks(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::FrameworkView>> {
    Json(ctl.read(|r| r.frameworks()))
}

// ---------------------------------------------------------------------------------------------
// Agent protocol

async fn register_agent(
    State(ctl): State<Arc<Controller>>,
    Body(req): Body<RegisterRequest>,
) -> Reply<RegisterResponse> {
    let node = req.node.clone();
    let interval = ctl
        .change(move |rack| rack.register(req, now_millis()))
        .await?;
    tracing::info!(%node, "agent registered");
    Ok(Json(RegisterResponse {
        heartbeat_interval_ms: interval.as_millis() as u64,
    }))
}

async fn agent_status(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
    Body(report): Body<StatusReport>,
) -> Reply<serde_json::Value> {
    ctl.change(move |rack| rack.report(&node, report, now_millis()))
        .await?;
    Ok(Json(serde_json::json!({})))
}

/// Long poll: answers as soon as the node's desired set is newer than `after`, or when the
/// wait is over (with the current document either way).
async fn agent_desired(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
    Params(query): Params<DesiredQuery>,
) -> Reply<DesiredState> {
    let mut rx = ctl
        .subscribe(&node)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named \"{node}\"")))?;
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = *rx.borrow_and_update();
        // `after` beyond what we have means the agent remembers another controller life: give
        // it our document at once.
        if current != query.after {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => break,
        }
    }
    Ok(Json(ctl.read(|r| r.desired(&node))?))
}

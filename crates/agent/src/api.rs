//! The agent's own HTTP API (port 5051 by default): health, its task table, the tasks'
//! sandboxes (the Mesos "sandbox": stdout and stderr), and the node's images (`images`:
//! listed to readers; pulled, imported and removed by admins, in practice the controller).
//!
//! Every route needs a caller who may read the whole rack (an admin or viewer token, a task's
//! viewer token, the controller's own): the agent asks the controller who holds the token it
//! was shown (`POST /api/v1/auth/review`, with the node's credential) and remembers the answer
//! for a few seconds, so a revoked token stops working here within that time. When the
//! controller cannot be asked, only remembered answers work and the rest get a 503.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::{LogChunk, LogQuery};
use torc_types::TaskId;

use crate::agent::Agent;
use crate::reply::error;

/// Most bytes one log read returns.
const MAX_CHUNK: u64 = 1 << 20;
/// Bytes returned by a tail read when none is asked for.
const DEFAULT_TAIL: u64 = 8 << 10;

mod images;

pub fn router(agent: Arc<Agent>) -> Router {
    let admin = Router::new()
        .route("/v1/images/pull", post(images::pull))
        .route("/v1/images/import", post(images::import))
        .route("/v1/images", axum::routing::delete(images::remove))
        .route("/v1/data/{service}/purge", post(purge_data))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&agent),
            authorize_admin,
        ));
    Router::new()
        .route("/v1/images", get(images::list))
        .merge(admin)
        .route("/v1/health", get(health))
        .route("/v1/tasks", get(tasks))
        .route("/v1/tasks/{id}/logs", get(logs))
        .route("/v1/metrics", get(metrics_json))
        .route("/v1/metrics/history", get(metrics_history))
        .route("/metrics", get(metrics_prometheus))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&agent),
            authorize,
        ))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route".into()) })
        .with_state(agent)
}

/// Admits admins and the controller only (the image routes that change the node).
async fn authorize_admin(State(agent): State<Arc<Agent>>, req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    match agent.review(token).await {
        // An admin, or the controller passing on an admin's request (it checked the caller,
        // adds the rack's registry login and bounds imports).
        Ok(r) if r.admin || r.controller => next.run(req).await,
        Ok(r) => error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not change this node's images: it needs an admin token",
                r.subject.unwrap_or_else(|| "an anonymous caller".into())
            ),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the caller's token with the controller: {e}"),
        ),
    }
}

/// Admits callers who may read the whole rack (see the module comment).
async fn authorize(State(agent): State<Arc<Agent>>, req: Request, next: Next) -> Response {
    let token = match req.headers().get(axum::http::header::AUTHORIZATION) {
        None => "",
        Some(v) => match v.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
            Some(t) => t.trim(),
            None => {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer <token>`".into(),
                );
            }
        },
    };
    match agent.review(token).await {
        Ok(r) if r.reads_all => next.run(req).await,
        Ok(r) if r.authenticated => error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not read this node's tasks, logs or metrics: it needs a viewer or admin token",
                r.subject.unwrap_or_default()
            ),
        ),
        Ok(_) if token.is_empty() => error(
            StatusCode::UNAUTHORIZED,
            "this node's API needs a credential: `Authorization: Bearer <token>` (a viewer or admin token)".into(),
        ),
        Ok(_) => error(
            StatusCode::UNAUTHORIZED,
            "the token is unknown, revoked or expired".into(),
        ),
        Err(e) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot check the caller's token with the controller: {e}"),
        ),
    }
}

async fn health(State(agent): State<Arc<Agent>>) -> Json<serde_json::Value> {
    let tasks = agent.snapshot();
    Json(serde_json::json!({
        "node": agent.cfg.node,
        "tasks": tasks.len(),
        "runtime": agent.runtime_info(),
    }))
}

async fn tasks(State(agent): State<Arc<Agent>>) -> Json<serde_json::Value> {
    Json(serde_json::to_value(agent.snapshot()).unwrap_or_default())
}

async fn logs(
    State(agent): State<Arc<Agent>>,
    Path(id): Path<String>,
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let id = match TaskId::new(id) {
        Ok(id) => id,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    let Some(sandbox) = agent.sandbox(&id) else {
        return error(StatusCode::NOT_FOUND, agent.no_sandbox(&id));
    };
    let name = query.stream.file_name();
    let from = match (query.offset, query.tail) {
        (Some(off), _) => crate::logfiles::From::Offset(off),
        (None, tail) => crate::logfiles::From::Tail(tail.unwrap_or(DEFAULT_TAIL).min(MAX_CHUNK)),
    };
    let read =
        tokio::task::spawn_blocking(move || crate::logfiles::read(&sandbox, name, from, MAX_CHUNK))
            .await;
    match read {
        Ok(Ok(piece)) => Json(LogChunk {
            task: id,
            stream: query.stream,
            offset: piece.offset,
            next_offset: piece.offset + piece.data.len() as u64,
            size: piece.end,
            kept_from: piece.kept_from,
            data: String::from_utf8_lossy(&piece.data).into_owned(),
        })
        .into_response(),
        Ok(Err(e)) => error(
            StatusCode::NOT_FOUND,
            format!(
                "cannot read the {} of task {id}: {e}",
                query.stream.file_name()
            ),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Removes a service's data dir (`$DATA_DIR`) on this node: the controller's
/// `torc service purge` (it refuses a service still in the rack config). Refused while a task
/// of the service runs here.
async fn purge_data(State(agent): State<Arc<Agent>>, Path(service): Path<String>) -> Response {
    let service = match service.parse::<torc_types::ServiceName>() {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("service: {e}")),
    };
    match agent.purge_data(&service).await {
        Ok(done) => Json(done).into_response(),
        Err((status, message)) => error(status, message),
    }
}

async fn metrics_json(State(agent): State<Arc<Agent>>) -> Response {
    let sampler = agent.metrics.lock().unwrap_or_else(|e| e.into_inner());
    match sampler.latest() {
        Some(m) => Json(m.clone()).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics sampled yet; try again in a second".into(),
        ),
    }
}

#[derive(serde::Deserialize)]
struct Since {
    /// Samples taken after this time (ms).
    #[serde(default)]
    since: u64,
    /// At most this many, the newest.
    #[serde(default)]
    last: Option<usize>,
}

async fn metrics_history(
    State(agent): State<Arc<Agent>>,
    Query(q): Query<Since>,
) -> Json<Vec<torc_api::NodeMetrics>> {
    let sampler = agent.metrics.lock().unwrap_or_else(|e| e.into_inner());
    let mut out: Vec<torc_api::NodeMetrics> = sampler
        .history
        .iter()
        .rev()
        .filter(|m| m.at > q.since)
        .take(q.last.unwrap_or(usize::MAX))
        .cloned()
        .collect();
    out.reverse();
    Json(out)
}

async fn metrics_prometheus(State(agent): State<Arc<Agent>>) -> Response {
    let text = {
        let sampler = agent.metrics.lock().unwrap_or_else(|e| e.into_inner());
        sampler.latest().map(crate::metrics::prometheus)
    };
    match text {
        Some(t) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )],
            t,
        )
            .into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no metrics sampled yet; try again in a second".into(),
        ),
    }
}

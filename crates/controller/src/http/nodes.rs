//! Nodes: the table (`GET /api/v1/nodes`, `/nodes/{name}`), each node's metrics read from
//! its agent, and powering a node on or off (`POST /nodes/{name}/power`, see `crate::power`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::{PowerRequest, PowerResult};
use torc_types::NodeName;

use super::error::Reply;
use super::extract::{Body, Path, Query};
use super::proxy::agent_get;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route("/api/v1/nodes/{name}/metrics", get(node_metrics))
        .route(
            "/api/v1/nodes/{name}/metrics/history",
            get(node_metrics_history),
        )
        .route("/api/v1/nodes/{name}/power", post(power))
}

async fn list_nodes(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::NodeView>> {
    Json(ctl.read(|r| r.node_views()))
}

async fn get_node(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<NodeName>,
) -> Reply<torc_api::NodeView> {
    Ok(Json(ctl.read(|r| r.node_view(&name))?))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<usize>,
}

/// A node's latest metrics sample, from its agent.
async fn node_metrics(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
) -> Reply<torc_api::NodeMetrics> {
    agent_get(&ctl, &node, "/v1/metrics", &()).await
}

/// A node's recent metrics samples (newer than `since`), from its agent.
async fn node_metrics_history(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Query(q): Query<Since>,
) -> Reply<Vec<torc_api::NodeMetrics>> {
    agent_get(&ctl, &node, "/v1/metrics/history", &q).await
}

/// Runs the configured power command for a node.
async fn power(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<NodeName>,
    Body(req): Body<PowerRequest>,
) -> Reply<PowerResult> {
    let argv = ctl.read(|r| crate::power::command(r, &name, req.action))?;
    Ok(Json(crate::power::run(&name, req.action, argv).await?))
}

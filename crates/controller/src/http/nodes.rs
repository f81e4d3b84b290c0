//! Nodes: the table (`GET /api/v1/nodes`, `/nodes/{name}`), each node's metrics read from
//! its agent, maintenance (`POST /nodes/{name}/cordon`, `/uncordon`, `/drain`: see
//! `rack::maintenance`), and powering a node on or off or asking its power state (`POST
//! /nodes/{name}/power`, see `crate::power`; the original API's `/node/startup` and
//! `/node/shutdown` come through [`power_node`] too).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::{PowerAction, PowerRequest, PowerResult};
use torc_types::{NodeName, UnixMillis};

use super::error::ApiError;
use super::error::Reply;
use super::extract::{Body, Path, Query};
use super::proxy::agent_get;
use crate::clock::now_millis;
use crate::controller::Controller;
use crate::rack::{Rack, RackError};

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
        .route("/api/v1/nodes/{name}/cordon", post(cordon))
        .route("/api/v1/nodes/{name}/uncordon", post(uncordon))
        .route("/api/v1/nodes/{name}/drain", post(drain))
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

/// No new task is placed on the node.
async fn cordon(ctl: State<Arc<Controller>>, name: Path<NodeName>) -> Reply<torc_api::NodeView> {
    node_change(ctl, name, Rack::cordon).await
}

/// Tasks may be placed on the node again; a drain going on stops.
async fn uncordon(ctl: State<Arc<Controller>>, name: Path<NodeName>) -> Reply<torc_api::NodeView> {
    node_change(ctl, name, Rack::uncordon).await
}

/// Starts a drain; its progress is the node's `drain` (and the event feed).
async fn drain(ctl: State<Arc<Controller>>, name: Path<NodeName>) -> Reply<torc_api::NodeView> {
    node_change(ctl, name, Rack::drain).await
}

/// A maintenance change of one node, answered with the node as it is then.
async fn node_change(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<NodeName>,
    change: fn(&mut Rack, &NodeName, UnixMillis) -> Result<torc_api::NodeView, RackError>,
) -> Reply<torc_api::NodeView> {
    Ok(Json(
        ctl.change(move |r| change(r, &name, now_millis())).await?,
    ))
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
    Ok(Json(power_node(&ctl, name, req.action).await?))
}

/// Runs a node's power command and keeps its result on the node and in the event feed
/// (durably, before answering), success or failure; a failure is then the caller's error.
pub(super) async fn power_node(
    ctl: &Arc<Controller>,
    node: NodeName,
    action: PowerAction,
) -> Result<PowerResult, ApiError> {
    let argv = ctl.read(|r| crate::power::command(r, &node, action))?;
    let result = crate::power::run(&node, action, argv, now_millis()).await;
    let kept = result.clone();
    ctl.change(move |r| r.power_ran(&kept, now_millis()))
        .await?;
    Ok(crate::power::outcome(result)?)
}

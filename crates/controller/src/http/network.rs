//! The rack network: the routes the switch should hold, which the network agent long-polls for
//! (`GET /api/v1/network/routes`), its report of what the switch holds (`POST
//! /api/v1/network/report`), and both together for people (`GET /api/v1/network`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::{NetworkReport, NetworkView, RouteSnapshot, SnapshotQuery};

use super::error::ApiError;
use super::extract::{Body, Query};
use super::longpoll::MAX_WAIT;
use crate::controller::Controller;

/// The most routes and ports a report may list: a switch has at most a few hundred ports, and
/// its table the rack's tasks plus a few.
const MAX_REPORTED: usize = 100_000;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/network", get(network))
        .route("/api/v1/network/routes", get(desired_routes))
        .route("/api/v1/network/report", post(report))
}

fn snapshot(n: crate::published::Numbered<crate::controller::SwitchRoutes>) -> RouteSnapshot {
    RouteSnapshot {
        epoch: n.epoch,
        generation: n.generation,
        switch: n.doc.switch,
        routes: n.doc.routes,
    }
}

async fn desired_routes(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<SnapshotQuery>,
) -> Json<RouteSnapshot> {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    Json(snapshot(ctl.routes.next(q.epoch, q.after, wait).await))
}

async fn report(
    State(ctl): State<Arc<Controller>>,
    Body(report): Body<NetworkReport>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if report.routes.len() > MAX_REPORTED || report.ports.len() > MAX_REPORTED {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a report lists at most {MAX_REPORTED} routes and {MAX_REPORTED} ports"),
        ));
    }
    let at = ctl.set_network_report(report);
    Ok(Json(serde_json::json!({ "reported_at": at })))
}

async fn network(State(ctl): State<Arc<Controller>>) -> Json<NetworkView> {
    let (reported, reported_at) = match ctl.network_report() {
        Some((report, at)) => (Some(report), at),
        None => (None, 0),
    };
    Json(NetworkView {
        desired: snapshot(ctl.routes.current()),
        reported,
        reported_at,
    })
}

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
    let torc =
        |routes: &[torc_api::SwitchRoute]| -> std::collections::BTreeSet<torc_api::SwitchRoute> {
            routes
                .iter()
                .filter(|r| r.protocol == "torc")
                .cloned()
                .collect()
        };
    let now_held = torc(&report.routes);
    let (at, previous) = ctl.set_network_report(report);
    // The feed tells of changes, not of the first report (what the switch held before).
    if let Some(previous) = previous {
        let before = torc(&previous.routes);
        let added: Vec<_> = now_held.difference(&before).cloned().collect();
        let removed: Vec<_> = before.difference(&now_held).cloned().collect();
        if !added.is_empty() || !removed.is_empty() {
            ctl.change(move |r| {
                r.note_switch_routes(&added, &removed, crate::clock::now_millis());
                Ok(())
            })
            .await?;
        }
    }
    Ok(Json(serde_json::json!({ "reported_at": at })))
}

async fn network(State(ctl): State<Arc<Controller>>) -> Json<NetworkView> {
    let (reported, reported_at) = match ctl.network_report() {
        Some((report, at)) => (Some(report), at),
        None => (None, 0),
    };
    Json(NetworkView::new(
        snapshot(ctl.routes.current()),
        reported,
        reported_at,
    ))
}

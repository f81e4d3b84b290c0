//! The rack at a glance: `GET /api/v1/status` (services, nodes, frameworks, and warnings
//! about how the controller runs), the event feed for people (`GET /api/v1/events`) and the
//! alerts that hold (`GET /api/v1/alerts`).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use torc_api::StatusView;

use super::extract::Query;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/status", get(status))
        .route("/api/v1/events", get(events))
        .route("/api/v1/alerts", get(alerts))
}

/// The pending and firing alerts of the rack config's rules (`crate::alerts`); empty on a
/// controller that does not act.
async fn alerts(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::AlertView>> {
    Json(ctl.alerts.lock().unwrap_or_else(|e| e.into_inner()).list())
}

async fn status(State(ctl): State<Arc<Controller>>) -> Json<StatusView> {
    let mut view = ctl.read(|r| r.status());
    if ctl.access.insecure {
        view.warnings.push(
            "insecure: this controller checks no credentials; anyone who reaches it can run any command on any node".into(),
        );
    }
    if let Err(not) = ctl.acting() {
        view.warnings.push(format!(
            "changes refused: {} (this view may be stale)",
            not.why
        ));
    }
    if ctl.tls.is_none() {
        view.warnings.push(
            "plain HTTP: tokens and task specs cross the rack network unencrypted (start the controller with --ca-dir)".into(),
        );
    }
    Json(view)
}

#[derive(serde::Deserialize)]
struct EventsAfter {
    #[serde(default)]
    after: u64,
}

/// The event feed after `after` (a `seq`), oldest first.
async fn events(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<EventsAfter>,
) -> Json<Vec<torc_api::RackEvent>> {
    Json(ctl.read(|r| r.feed(q.after)))
}

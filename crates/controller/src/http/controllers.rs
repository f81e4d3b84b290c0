//! The rack's controllers: `GET /api/v1/controller` (this controller, who leads, the
//! controllers campaigning, the store and its members; any controller answers about itself)
//! and `POST /api/v1/controller/step-down` (the leader hands over on purpose, e.g. before its
//! switch is upgraded; a standby answers 421 naming the leader).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::controller::{ControllerRef, ControllerRole, ControllerStatus, StepDownResponse};

use super::error::{ApiError, Reply};
use crate::controller::Controller;
use crate::leadership::{Event, LeaderInfo, Role};

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/controller", get(status))
        .route("/api/v1/controller/step-down", post(step_down))
}

fn reference(l: &LeaderInfo) -> ControllerRef {
    ControllerRef {
        name: l.name.clone(),
        url: l.url.clone(),
        epoch: l.epoch.0,
    }
}

async fn status(State(ctl): State<Arc<Controller>>) -> Json<ControllerStatus> {
    let acting = ctl.acting();
    let backstage = ctl.backstage();
    let me = || ControllerRef {
        name: ctl.name().to_string(),
        url: ctl.url().unwrap_or_default().to_string(),
        epoch: 0,
    };
    let (role, epoch, leader, acting_for, trouble) = match ctl.seat.role() {
        None => {
            let epoch = acting.as_ref().ok().map(|e| e.0);
            let leader = ControllerRef {
                epoch: epoch.unwrap_or_default(),
                ..me()
            };
            (ControllerRole::Sole, epoch, Some(leader), None, None)
        }
        Some((role, trouble)) => {
            let now = crate::seat::boot_now();
            let own = |epoch: crate::store::Epoch| {
                Some(ControllerRef {
                    epoch: epoch.0,
                    ..me()
                })
            };
            match role {
                Role::Standby { leader } => (
                    ControllerRole::Standby,
                    None,
                    leader.as_ref().map(reference),
                    None,
                    trouble,
                ),
                Role::Elected { epoch } => (
                    ControllerRole::Elected,
                    Some(epoch.0),
                    own(epoch),
                    None,
                    trouble,
                ),
                Role::Leader {
                    epoch,
                    acting_until,
                } => (
                    ControllerRole::Leader,
                    Some(epoch.0),
                    own(epoch),
                    Some(acting_until.saturating_sub(now).as_millis() as u64),
                    trouble,
                ),
                Role::Lapsed { epoch, .. } => (
                    ControllerRole::Lapsed,
                    Some(epoch.0),
                    own(epoch),
                    None,
                    trouble,
                ),
                Role::SteppingDown { epoch } => (
                    ControllerRole::SteppingDown,
                    Some(epoch.0),
                    None,
                    None,
                    trouble,
                ),
            }
        }
    };
    Json(ControllerStatus {
        name: ctl.name().to_string(),
        url: ctl.url().map(str::to_string),
        role,
        epoch,
        acting: acting.is_ok(),
        why_not: acting.err().map(|n| n.why),
        acting_for_ms: acting_for,
        trouble,
        leader,
        controllers: backstage.controllers,
        store: backstage.store,
    })
}

async fn step_down(State(ctl): State<Arc<Controller>>) -> Reply<StepDownResponse> {
    let epoch = ctl.acting().map_err(|n| ApiError::not_acting(&n))?;
    if ctl.seat.role().is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no standby: this controller is the rack's only one, and keeps its state in a local store",
        ));
    }
    let standbys: Vec<ControllerRef> = (ctl.backstage().controllers.into_iter())
        .filter(|c| c.epoch != epoch.0)
        .collect();
    if standbys.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no standby would take over: no other controller campaigns (it would only win again)",
        ));
    }
    ctl.seat.on(Event::StepDown);
    tracing::warn!(%epoch, "stepping down on request");
    Ok(Json(StepDownResponse {
        epoch: epoch.0,
        standbys,
    }))
}

//! Supervised services and groups (`/api/v1/services`, `/api/v1/groups`) and the tasks that
//! sub-schedulers announce (`/api/v1/announcements`; the original's `POST /service/announce`
//! is the same handler).

use std::sync::Arc;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use torc_api::original::OriginalTask;
use torc_api::{DataPurged, GroupView, NodePurge, ServicePurge, ServiceView};
use torc_types::ServiceName;

use super::error::{ApiError, Reply};
use super::extract::{Body, Path};
use super::proxy::{decode, forward};
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/services", get(list_services))
        .route(
            "/api/v1/services/{name}",
            get(get_service).delete(delete_service),
        )
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{name}/start", post(start_group))
        .route("/api/v1/groups/{name}/stop", post(stop_group))
        .route("/api/v1/announcements", get(list_announced).post(announce))
        .route("/api/v1/services/{name}/purge", post(purge_service))
}

/// How long a node's agent may take to remove a service's data dir.
const PURGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Removes a service's data dirs (`$DATA_DIR`) from every active node: only for a service the
/// rack config no longer defines (its data is kept until then, whatever its tasks do). Each
/// node answers for itself: an inactive node, or one where a task of the service still runs,
/// keeps its copy and says why (purge again later).
async fn purge_service(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<ServiceName>,
) -> Reply<ServicePurge> {
    if let Some(at) = ctl.read(|r| r.settings().configured_at(&name)) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "service {name} is in the rack config ({at}); its data is kept while it is: \
                 remove it from the config first"
            ),
        ));
    }
    let mut nodes = Vec::new();
    for view in ctl.read(|r| r.node_views()) {
        let node = view.name.clone();
        let who = format!("agent on {node}");
        let answer = match (&view.agent_url, view.active) {
            (Some(url), true) => {
                let req = ctl
                    .http
                    .post(format!("{url}/v1/data/{name}/purge"))
                    .bearer_auth(&ctl.own_token)
                    .timeout(PURGE_TIMEOUT);
                match forward(req, &who).await {
                    Ok(value) => decode::<DataPurged>(value, &who)
                        .map(|Json(p)| p)
                        .map_err(|e| e.message().to_string()),
                    Err(e) => Err(e.message().to_string()),
                }
            }
            (None, _) => Err(format!(
                "node {node} has no agent address (its agent never registered)"
            )),
            (_, false) => Err(format!(
                "node {node} is inactive; its data dir is kept (purge again once it is back)"
            )),
        };
        nodes.push(match answer {
            Ok(purged) => NodePurge {
                node,
                purged: Some(purged),
                error: None,
            },
            Err(error) => NodePurge {
                node,
                purged: None,
                error: Some(error),
            },
        });
    }
    Ok(Json(ServicePurge {
        service: name,
        nodes,
    }))
}

async fn list_services(State(ctl): State<Arc<Controller>>) -> Json<Vec<ServiceView>> {
    Json(ctl.read(|r| r.services()))
}

async fn get_service(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<ServiceName>,
) -> Reply<ServiceView> {
    Ok(Json(ctl.read(|r| r.service(&name))?))
}

async fn delete_service(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let what = ctl
        .change(move |rack| rack.delete_service(&name, now_millis()))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "result": what })),
    ))
}

async fn list_groups(State(ctl): State<Arc<Controller>>) -> Json<Vec<GroupView>> {
    Json(ctl.read(|r| r.groups()))
}

async fn start_group(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<ServiceName>,
) -> Reply<GroupView> {
    group_action(&ctl, name, true).await
}

async fn stop_group(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<ServiceName>,
) -> Reply<GroupView> {
    group_action(&ctl, name, false).await
}

/// Starts or stops a service group and answers with the group as it is now.
async fn group_action(ctl: &Arc<Controller>, name: ServiceName, start: bool) -> Reply<GroupView> {
    let view = ctl
        .change(move |rack| {
            if start {
                rack.start_group(&name, now_millis())?;
            } else {
                rack.stop_group(&name, now_millis())?;
            }
            rack.group(&name)
        })
        .await?;
    Ok(Json(view))
}

async fn list_announced(State(ctl): State<Arc<Controller>>) -> Json<Vec<OriginalTask>> {
    Json(ctl.read(|r| r.announced()))
}

pub(super) async fn announce(
    State(ctl): State<Arc<Controller>>,
    Body(task): Body<OriginalTask>,
) -> Result<Json<torc_api::original::SimpleResponse>, ApiError> {
    ctl.change(move |rack| rack.announce(task, now_millis()))
        .await?;
    Ok(Json(torc_api::original::SimpleResponse {
        result: "done".into(),
    }))
}

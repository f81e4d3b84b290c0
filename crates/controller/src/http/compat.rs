//! The original ToRC Scheduler's REST API (reference §3): `/nodes`, `/services/running`,
//! `/services/metered`, `/service`, `/start/group`, `/service/announce`, `/calico/*`, `/node/startup`,
//! `/node/shutdown` and `/admin/ping`, on the same port as `/api/v1`, with
//! the original JSON shapes, so that statesync, the datacollector, Vector and sub-schedulers
//! written for it work unchanged. Unlike the original: unknown names get a 404 JSON error (not
//! `{"result":"done"}`), query strings are properly decoded, bad bodies get a 400, every
//! route needs a credential, and the GETs that change the rack need an admin's bearer token
//! (never a browser session: see `super::access`).

use std::sync::Arc;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use torc_api::PowerAction;
use torc_api::original::{OriginalNode, OriginalTask, SimpleResponse};
use torc_types::{NodeName, ServiceName};

use super::error::{ApiError, Reply};
use super::extract::Query;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/admin/ping", get(|| async { "pong" }))
        .route("/nodes", get(nodes))
        .route("/services/running", get(running))
        .route("/services/metered", get(metered))
        .route("/service", get(service_by_id).delete(delete_service))
        .route("/start/group", get(start_group))
        .route("/service/announce", post(super::services::announce))
        .route("/node/startup", get(startup))
        .route("/node/shutdown", get(shutdown))
        .route("/calico/configure", get(calico_configure))
        .route("/calico/shutdown", get(calico_shutdown))
}

#[derive(Deserialize)]
struct ByName {
    name: Option<String>,
}

#[derive(Deserialize)]
struct ById {
    id: Option<String>,
}

fn done() -> Json<SimpleResponse> {
    Json(SimpleResponse {
        result: "done".into(),
    })
}

fn required(v: Option<String>, key: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.is_empty()).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("missing query parameter `{key}`"),
        )
    })
}

async fn nodes(State(ctl): State<Arc<Controller>>) -> Json<Vec<OriginalNode>> {
    Json(ctl.read(|r| r.original_nodes()))
}

async fn running(State(ctl): State<Arc<Controller>>) -> Json<Vec<OriginalTask>> {
    Json(ctl.read(|r| r.original_running(false)))
}

async fn metered(State(ctl): State<Arc<Controller>>) -> Json<Vec<OriginalTask>> {
    Json(ctl.read(|r| r.original_running(true)))
}

/// The name of the task with an id starting with `?id=`; CORS-open, as Vector calls it from the
/// browser.
async fn service_by_id(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ById>,
) -> impl IntoResponse {
    let cors = [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")];
    let id = match required(q.id, "id") {
        Ok(id) => id,
        Err(e) => return (cors, e).into_response(),
    };
    match ctl.read(|r| r.name_by_id_prefix(&id)) {
        Some(name) => (cors, Json(SimpleResponse { result: name })).into_response(),
        None => (
            cors,
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no task with an id starting with {id:?}"),
            ),
        )
            .into_response(),
    }
}

async fn delete_service(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ByName>,
) -> Reply<SimpleResponse> {
    let name = required(q.name, "name")?;
    ctl.change(move |rack| rack.delete_service(&name, now_millis()))
        .await?;
    Ok(done())
}

async fn start_group(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ByName>,
) -> Reply<SimpleResponse> {
    let name = required(q.name, "name")?;
    let group = ServiceName::new(name.clone()).map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no service group named {name:?}"),
        )
    })?;
    ctl.change(move |rack| rack.start_group(&group, now_millis()))
        .await?;
    Ok(done())
}

async fn power(
    ctl: &Arc<Controller>,
    name: Option<String>,
    action: PowerAction,
) -> Reply<SimpleResponse> {
    let name = required(name, "name")?;
    let node = NodeName::new(name.clone())
        .map_err(|_| ApiError::new(StatusCode::NOT_FOUND, format!("no node named {name:?}")))?;
    super::nodes::power_node(ctl, node, action).await?;
    Ok(done())
}

async fn startup(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ByName>,
) -> Reply<SimpleResponse> {
    power(&ctl, q.name, PowerAction::On).await
}

/// `GET /calico/configure`: the rack network (the original's Calico network) runs.
async fn calico_configure(State(ctl): State<Arc<Controller>>) -> Reply<SimpleResponse> {
    ctl.change(|r| {
        r.configure_network(now_millis());
        Ok(())
    })
    .await?;
    Ok(done())
}

/// `GET /calico/shutdown`: the rack network stops; its routes are withdrawn and its tasks
/// killed (services among them wait until `/calico/configure`).
async fn calico_shutdown(State(ctl): State<Arc<Controller>>) -> Reply<SimpleResponse> {
    ctl.change(|r| {
        r.shut_down_network(now_millis());
        Ok(())
    })
    .await?;
    Ok(done())
}

async fn shutdown(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ByName>,
) -> Reply<SimpleResponse> {
    power(&ctl, q.name, PowerAction::Off).await
}

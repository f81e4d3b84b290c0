//! Sub-schedulers: registration, their tasks, the long poll for their tasks' updates (which is
//! also their heartbeat), their line in the event feed, and starting or stopping one of their
//! groups through their own API (`/api/v1/frameworks/...`).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use torc_api::{
    EventKind, EventsQuery, FrameworkEvents, FrameworkLog, FrameworkRegistered,
    FrameworkRegistration, FrameworkView, TaskView,
};
use torc_types::{FrameworkName, TaskId, TaskSpec};

use super::access::CallerExt;
use super::error::{ApiError, Reply};
use super::extract::{Body, Path, Query};
use super::longpoll::MAX_WAIT;
use super::proxy::forward;
use super::tasks::check_tls_wanted;
use crate::auth::Role;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route(
            "/api/v1/frameworks",
            get(list_frameworks).post(register_framework),
        )
        .route(
            "/api/v1/frameworks/{name}",
            get(get_framework).delete(unregister_framework),
        )
        .route(
            "/api/v1/frameworks/{name}/tasks",
            get(framework_tasks).post(framework_launch),
        )
        .route(
            "/api/v1/frameworks/{name}/tasks/{id}",
            delete(framework_kill),
        )
        .route("/api/v1/frameworks/{name}/events", get(framework_events))
        .route("/api/v1/frameworks/{name}/log", post(framework_log))
        .route(
            "/api/v1/frameworks/{name}/groups/{group}/{action}",
            post(framework_group),
        )
}

async fn list_frameworks(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::FrameworkView>> {
    Json(ctl.read(|r| r.frameworks()))
}

async fn register_framework(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    Body(reg): Body<FrameworkRegistration>,
) -> Reply<FrameworkRegistered> {
    let name = reg.name.clone();
    let own =
        matches!(caller.who.role(), Some(Role::Framework { framework }) if *framework == name);
    if !(own || caller.who.is_admin()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} cannot register framework {name}: it needs that framework's token (`torc token create --role framework --framework {name}`) or an admin's",
                caller.who.describe()
            ),
        ));
    }
    let out = ctl
        .change(move |rack| rack.register_framework(reg, now_millis()))
        .await?;
    tracing::info!(framework = %name, tasks = out.tasks.len(), "framework registered");
    Ok(Json(out))
}

async fn get_framework(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<FrameworkName>,
) -> Reply<FrameworkView> {
    Ok(Json(ctl.read(|r| r.framework(&name))?))
}

async fn unregister_framework(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<FrameworkName>,
) -> Reply<FrameworkView> {
    let view = ctl
        .change(move |rack| {
            rack.unregister_framework(&name, now_millis())?;
            rack.framework(&name)
        })
        .await?;
    Ok(Json(view))
}

async fn framework_tasks(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<FrameworkName>,
) -> Reply<Vec<TaskView>> {
    ctl.read(|r| r.framework(&name))?;
    Ok(Json(ctl.read(|r| r.framework_tasks(&name, false))))
}

async fn framework_launch(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    Path(name): Path<FrameworkName>,
    Body(spec): Body<TaskSpec>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    check_tls_wanted(&ctl, &spec)?;
    if !caller.who.is_admin() {
        if spec.privileged {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "framework {name}'s tasks run as their node's task user, never privileged; an admin launches privileged tasks"
                ),
            ));
        }
        // A host path outside the service's data directory is as strong as `privileged`.
        if let Some(volume) = (spec.container.as_ref()).and_then(|c| c.privileged_volume()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "container.volumes: {volume} mounts a host path other than $DATA_DIR, which needs the same grant as privileged: framework {name}'s tasks may not; an admin launches such tasks"
                ),
            ));
        }
        if spec.credentials.api_access.is_some() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "framework {name}'s tasks may not ask for a controller token (credentials.api_access); an admin launches such tasks"
                ),
            ));
        }
        let granted = ctl.read(|r| {
            r.settings()
                .framework_secrets
                .get(&name)
                .cloned()
                .unwrap_or_default()
        });
        if let Some(s) = spec
            .credentials
            .secrets
            .iter()
            .find(|s| !granted.contains(s))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "framework {name}'s tasks may not ask for the rack secret {s}: the rack config's access.framework_secrets does not grant it"
                ),
            ));
        }
    }
    let task = ctl
        .change(move |rack| {
            let id = rack.framework_launch(&name, spec, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(task)))
}

async fn framework_kill(
    State(ctl): State<Arc<Controller>>,
    Path((name, id)): Path<(FrameworkName, TaskId)>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let task = ctl
        .change(move |rack| {
            rack.framework_kill(&name, &id, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// Long poll for a framework's task updates; each poll also tells the controller the framework
/// is alive (its failover clock restarts).
async fn framework_events(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<FrameworkName>,
    Query(q): Query<EventsQuery>,
) -> Reply<FrameworkEvents> {
    let mut rx = ctl.subscribe_updates();
    {
        let name = name.clone();
        ctl.change(move |rack| rack.framework_seen(&name, now_millis()))
            .await?;
    }
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        rx.borrow_and_update();
        let events = ctl.read(|r| r.framework_events(&name, q.epoch, q.after));
        if events.reset || !events.tasks.is_empty() {
            return Ok(Json(events));
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                // Mark the framework seen at the end of the wait too: a long poll is presence.
                let n = name.clone();
                ctl.change(move |rack| rack.framework_seen(&n, now_millis()))
                    .await?;
                return Ok(Json(
                    ctl.read(|r| r.framework_events(&name, q.epoch, q.after)),
                ));
            }
        }
    }
}

/// Starts or stops one of a framework's groups through the framework's own API (the
/// original's `GET /start/group?name=` and `DELETE /service?name=`).
async fn framework_group(
    State(ctl): State<Arc<Controller>>,
    Path((name, group, action)): Path<(FrameworkName, String, String)>,
) -> Reply<serde_json::Value> {
    let view = ctl.read(|r| r.framework(&name))?;
    let api = view.api_url.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("framework {name} registered no API of its own, so it has no groups to start or stop"),
        )
    })?;
    // The caller is an admin (the policy says so); the framework hears it from the controller
    // with a delegation token good for that framework's API alone, for a minute or two.
    let delegation = ctl
        .keys(|k| k.delegation_token(&name, now_millis()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the rack key is missing; restart the controller",
            )
        })?;
    let req = match action.as_str() {
        "start" => ctl
            .http
            .get(format!("{api}/start/group"))
            .bearer_auth(&delegation)
            .query(&[("name", &group)]),
        "stop" => ctl
            .http
            .delete(format!("{api}/service"))
            .bearer_auth(&delegation)
            .query(&[("name", &group)]),
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no group action {other:?}; use start or stop"),
            ));
        }
    };
    let body = forward(req, &format!("framework {name} at {api}")).await?;
    Ok(Json(body))
}

/// A framework's line in the rack's event feed (e.g. a scaling decision).
async fn framework_log(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<FrameworkName>,
    Body(line): Body<FrameworkLog>,
) -> Reply<serde_json::Value> {
    ctl.change(move |rack| {
        rack.framework(&name)?;
        let msg = format!("{name}: {}", line.message);
        rack.record_event(EventKind::Framework, line.level, msg, now_millis());
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({})))
}

//! Tasks of the built-in framework: list, launch, get, kill (`/api/v1/tasks`), and a task's
//! sandbox output, read from its node's agent (`/tasks/{id}/logs`).

use std::sync::Arc;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use torc_api::{LogChunk, LogQuery, TaskFilter, TaskView};
use torc_types::{BUILTIN_FRAMEWORK, FrameworkName, TaskId, TaskSpec};

use super::error::{ApiError, Reply};
use super::extract::{Body, Path, Query};
use super::proxy::agent_get;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/tasks", get(list_tasks).post(launch_task))
        .route("/api/v1/tasks/{id}", get(get_task).delete(kill_task))
        .route("/api/v1/tasks/{id}/logs", get(task_logs))
}

async fn list_tasks(
    State(ctl): State<Arc<Controller>>,
    Query(filter): Query<TaskFilter>,
) -> Json<Vec<TaskView>> {
    Json(ctl.read(|r| r.tasks(&filter)))
}

async fn get_task(State(ctl): State<Arc<Controller>>, Path(id): Path<TaskId>) -> Reply<TaskView> {
    Ok(Json(ctl.read(|r| r.task(&id))?))
}

async fn launch_task(
    State(ctl): State<Arc<Controller>>,
    Body(spec): Body<TaskSpec>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let framework = FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name");
    check_tls_wanted(&ctl, &spec)?;
    let task = ctl
        .change_keys(move |rack, keys| {
            for name in &spec.credentials.secrets {
                keys.ensure_secret(name.as_str());
            }
            let id = rack.launch(spec, framework, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::CREATED, Json(task)))
}

/// A task that asks for a certificate needs a controller with a rack CA.
pub(super) fn check_tls_wanted(ctl: &Controller, spec: &TaskSpec) -> Result<(), ApiError> {
    if spec.credentials.tls && ctl.ca.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "credentials.tls: this controller has no rack CA (start it with --ca-dir), so it cannot issue the task a certificate",
        ));
    }
    Ok(())
}

async fn kill_task(
    State(ctl): State<Arc<Controller>>,
    Path(id): Path<TaskId>,
) -> Result<(StatusCode, Json<TaskView>), ApiError> {
    let task = ctl
        .change(move |rack| {
            rack.kill(&id, now_millis())?;
            rack.task(&id)
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(task)))
}

/// The task's sandbox output, read from its node's agent.
async fn task_logs(
    State(ctl): State<Arc<Controller>>,
    Path(id): Path<TaskId>,
    Query(query): Query<LogQuery>,
) -> Reply<LogChunk> {
    let task = ctl.read(|r| r.task(&id))?;
    let node = task.node.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("task {id} was never placed on a node, so it has no output"),
        )
    })?;
    agent_get(&ctl, &node, &format!("/v1/tasks/{id}/logs"), &query).await
}

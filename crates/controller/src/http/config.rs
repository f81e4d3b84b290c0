//! `POST /api/v1/config` (admin; `torc apply -f rack.yaml`): a new rack config, the YAML text
//! as the body, checked, compared with the one applied and applied (`crate::apply`);
//! `?dry_run=true` answers the comparison only; `?origin=FILE` names the text in errors. A config that does not parse or validate is
//! answered 400 with the error, which names the line and the key, and changes nothing.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use torc_api::ApplyReport;

use super::error::{ApiError, Reply};
use super::extract::Query;
use crate::apply::ApplyError;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new().route("/api/v1/config", post(apply))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
    /// What the caller calls the text (its file name), for the errors.
    #[serde(default)]
    origin: Option<String>,
}

async fn apply(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<ApplyQuery>,
    body: String,
) -> Reply<ApplyReport> {
    let result = tokio::task::spawn_blocking(move || {
        ctl.apply_config(Some(&body), q.origin.as_deref(), q.dry_run)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(result?))
}

impl From<ApplyError> for ApiError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::Change(e) => e.into(),
            e @ ApplyError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, e.to_string()),
            e @ (ApplyError::NoConfig | ApplyError::NoFile) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            e @ ApplyError::Write { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
        }
    }
}

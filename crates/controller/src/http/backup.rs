//! `POST /api/v1/backup`, for admins: the rack state as a backup file (`crate::backup`), its
//! secrets sealed under the passphrase in the body. A POST, though it changes nothing but the
//! event feed: the passphrase travels in the body, never in a URL or a log line.
//!
//! Only the acting controller answers (a standby's copy may be stale: `leader` sends the
//! caller to the leader). The taking is recorded in the event feed; a backup whose record
//! cannot be committed is still given (the record is the only thing lost).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use torc_api::{BackupRequest, EventKind, EventLevel};

use super::access::Caller;
use super::error::ApiError;
use super::extract::Body;
use crate::backup::{self, BackupError};
use crate::clock::now_millis;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new().route("/api/v1/backup", post(take_backup))
}

async fn take_backup(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<BackupRequest>,
) -> Result<Response, ApiError> {
    let this = Arc::clone(&ctl);
    let taken = tokio::task::spawn_blocking(move || {
        let loaded = this.durable_state()?;
        let records: usize = loaded.records.values().map(Vec::len).sum();
        let file = backup::encode(
            &loaded,
            this.name(),
            now_millis(),
            req.passphrase.as_bytes(),
        )
        .map_err(|e| match e {
            BackupError::ShortPassphrase(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("passphrase: {e}"))
            }
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
        Ok::<_, ApiError>((file, records))
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let (file, records) = taken?;
    let by = caller.who.describe();
    let size = file.len();
    let recorded = ctl
        .change(move |rack| {
            rack.record_event(
                EventKind::Maintenance,
                EventLevel::Info,
                format!(
                    "{by} took a backup of the controller's state ({records} records, {size} bytes)"
                ),
                now_millis(),
            );
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "a backup was taken but its event could not be recorded");
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        file,
    )
        .into_response())
}

//! Error answers of the agent's API: `{"error": "...", "status": N}` (`torc_api::ErrorBody`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use torc_api::ErrorBody;

pub(crate) fn error(status: StatusCode, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: message,
            status: status.as_u16(),
        }),
    )
        .into_response()
}

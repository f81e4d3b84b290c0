//! The API's error answer: JSON `{"error": "...", "status": N}` that says what was wrong, and
//! the status each kind of refusal maps to.

use axum::Json;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use torc_api::{ErrorBody, LEADER_HEADER};

use crate::controller::ChangeError;
use crate::lookup::LookupError;
use crate::power::PowerError;
use crate::rack::RackError;
use crate::seat::NotActing;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The leader's URL, sent as `Torc-Leader` (a refusal of a controller that does not act).
    leader: Option<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            leader: None,
        }
    }

    /// The words of the answer (a caller that reports several peers' answers together).
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// The refusal of a controller that may not act: 421 naming the leader (`Torc-Leader`),
    /// so that torc's clients move to it, or 503 when no leader is known.
    pub(crate) fn not_acting(not: &NotActing) -> Self {
        match &not.leader {
            Some(leader) => ApiError {
                status: StatusCode::MISDIRECTED_REQUEST,
                message: format!("{}; send it to the leader, {}", not.why, leader.url),
                leader: Some(leader.url.clone()),
            },
            None => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no leader: {}", not.why),
            ),
        }
    }
}

/// A handler's answer: JSON, or an error answer.
pub(crate) type Reply<T> = Result<Json<T>, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(url) = self
            .leader
            .and_then(|u| axum::http::HeaderValue::from_str(&u).ok())
        {
            response.headers_mut().insert(LEADER_HEADER, url);
        }
        response
    }
}

impl From<RackError> for ApiError {
    fn from(e: RackError) -> Self {
        ApiError::new(e.status(), e.to_string())
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rejected(e) => e.into(),
            // A full disk: logged where the refused commit was handled (the write path's
            // `back_to_durable`, one warning per refused change), not again here.
            ChangeError::Store(e @ StoreError::NoSpace { .. }) => {
                ApiError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string())
            }
            ChangeError::Store(e) => {
                tracing::error!(error = %e, "state store write failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            ChangeError::NotActing(not) => ApiError::not_acting(&not),
        }
    }
}

impl From<PowerError> for ApiError {
    fn from(e: PowerError) -> Self {
        let status = match &e {
            PowerError::Rack(e) => return e.clone().into(),
            PowerError::NotConfigured { .. } | PowerError::Empty { .. } => {
                StatusCode::NOT_IMPLEMENTED
            }
            PowerError::NoManagementIp { .. } => StatusCode::CONFLICT,
            PowerError::DidNotRun { .. } | PowerError::Failed { .. } => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        // A question DNS cannot ask is the caller's to fix; anything else, the DNS server's.
        let status = if e.is_bad_question() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::BAD_GATEWAY
        };
        ApiError::new(status, e.to_string())
    }
}

/// A peer (an agent, the tsdb, a framework, the state store) failed us.
pub(crate) fn bad_gateway(e: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, e)
}

/// The answer to a path no route matches.
pub(crate) async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

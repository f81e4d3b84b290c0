//! Who is calling: the web UI's session (`/api/v1/session`: log in with a token for a cookie,
//! ask who you are, log out) and token reviews for agents and frameworks
//! (`POST /api/v1/auth/review`: who holds this token).

use std::sync::Arc;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use torc_api::{LoginRequest, ReviewRequest, ReviewResponse, SessionView};
use torc_types::UnixMillis;

use super::access::{
    SESSION_COOKIE, Via, authenticate, check_browser, cookie, forbidden, unauthorized,
};
use super::error::ApiError;
use super::extract::Body;
use crate::auth::Who;
use crate::controller::Controller;
use crate::sessions::SESSION_TTL_MS;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/session", post(login).get(whoami).delete(logout))
        .route("/api/v1/auth/review", post(review))
}

fn session_view(ctl: &Controller, who: &Who, expires_at: Option<UnixMillis>) -> SessionView {
    SessionView {
        subject: who.describe(),
        admin: who.is_admin(),
        reads_all: who.reads_all(),
        expires_at,
        insecure: ctl.access.insecure,
    }
}

/// `POST /api/v1/session`: trades an admin or viewer token for a session cookie.
async fn login(
    State(ctl): State<Arc<Controller>>,
    headers: HeaderMap,
    Body(req): Body<LoginRequest>,
) -> Result<Response, ApiError> {
    let who = if ctl.access.insecure {
        Who::Insecure
    } else {
        ctl.authenticate(req.token.trim())
            .map_err(|e| unauthorized(e.to_string()))?
    };
    if !who.reads_all() {
        return Err(forbidden(format!(
            "{} cannot open a UI session: log in with an admin or viewer token",
            who.describe()
        )));
    }
    check_browser(&ctl, &headers, false)?;
    let (id, expires_at) = ctl.access.sessions.open(who.clone(), now_millis());
    let secure = if ctl.tls.is_some() { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}",
        SESSION_TTL_MS / 1000
    );
    let mut resp = Json(session_view(&ctl, &who, Some(expires_at))).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex and ASCII"),
    );
    Ok(resp)
}

/// `GET /api/v1/session`: who the caller is (the UI asks at load; 401 shows the login form).
async fn whoami(
    State(ctl): State<Arc<Controller>>,
    headers: HeaderMap,
) -> Result<Json<SessionView>, ApiError> {
    let caller = authenticate(&ctl, &headers)?
        .ok_or_else(|| unauthorized("not logged in: log in with an admin or viewer token"))?;
    let expires = match caller.via {
        Via::Session => cookie(&headers, SESSION_COOKIE)
            .and_then(|id| ctl.access.sessions.get(&id, now_millis()))
            .map(|s| s.expires_at),
        _ => None,
    };
    Ok(Json(session_view(&ctl, &caller.who, expires)))
}

/// `DELETE /api/v1/session`: logs out.
async fn logout(State(ctl): State<Arc<Controller>>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        ctl.access.sessions.close(&id);
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("torc_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    resp
}

/// `POST /api/v1/auth/review`: who holds a token.
async fn review(
    State(ctl): State<Arc<Controller>>,
    Body(req): Body<ReviewRequest>,
) -> Json<ReviewResponse> {
    let who = if ctl.access.insecure {
        Ok(Who::Insecure)
    } else {
        ctl.authenticate(req.token.trim())
    };
    Json(match who {
        Ok(who) => ReviewResponse {
            authenticated: true,
            reads_all: who.reads_all(),
            admin: who.is_admin(),
            controller: who == Who::Controller,
            delegate_for: match &who {
                Who::Delegate(f) => Some(f.clone()),
                _ => None,
            },
            subject: Some(who.describe()),
        },
        Err(_) => ReviewResponse {
            authenticated: false,
            reads_all: false,
            admin: false,
            controller: false,
            delegate_for: None,
            subject: None,
        },
    })
}

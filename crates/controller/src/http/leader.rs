//! What a controller that does not act (a standby, or a leader that lapsed) answers, decided
//! per route before its handler runs (design §7.3):
//! - reads of the rack are served from its own copy, marked `Torc-Stale: true` and
//!   `Torc-Leader: URL` (when a leader is known);
//! - changes on `/api/v1`, long polls and routes that reach agents answer `421 Misdirected
//!   Request` naming the leader (`Torc-Leader` and the body's text), so torc's clients move to
//!   it; `503` when no leader is known, saying why;
//! - the original ToRC API's changes are proxied to the leader, one hop, since their clients
//!   know a single URL;
//! - the UI's shell, `/admin/ping`, sessions, `/api/v1/controller` and `/metrics` are every
//!   controller's own.
//!
//! A sole controller (one controller on its local store) always acts: nothing here applies.
//!
//! Invariants: a controller that does not act runs no handler of a change, a long poll or an
//! agent route; a long poll whose controller stopped acting while it waited answers the
//! refusal, not its document (the document would be of an epoch that no longer leads).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use torc_api::{LEADER_HEADER, STALE_HEADER};

use super::error::ApiError;
use crate::controller::Controller;
use crate::seat::NotActing;

/// Marks a request a standby passed on to the leader: never passed on twice.
pub(crate) const PROXIED_HEADER: &str = "torc-proxied-by";

/// The largest body a standby passes on (the original API's bodies are a few hundred bytes).
const PROXY_BODY_LIMIT: usize = 1 << 20;

/// What a controller that does not act does with a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnStandby {
    /// Every controller's own: the UI's shell and assets, `/admin/ping`, sessions.
    Own,
    /// A read, served from this controller's copy of the rack and marked possibly stale.
    Stale,
    /// Only the leader answers: 421 naming it (503 when none is known).
    Leader,
    /// Passed on to the leader (the original API's changes).
    Proxy,
}

/// The policy, per matched route.
pub(crate) fn on_standby(method: &Method, route: &str) -> OnStandby {
    use OnStandby::*;
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        "/" | "/ui/app.js" | "/ui/style.css" | "/admin/ping" | "/api/v1/session" => Own,
        // Every controller says where it stands, and gives its own figures.
        "/api/v1/controller" | "/metrics" if read => Own,
        // The original API: changes, some of them GETs.
        "/start/group" | "/node/startup" | "/node/shutdown" | "/calico/configure"
        | "/calico/shutdown" | "/service/announce" => Proxy,
        "/service" if !read => Proxy,
        // Long polls: their documents are numbered by the leader's epoch.
        "/api/v1/agents/{name}/desired"
        | "/api/v1/frameworks/{name}/events"
        | "/api/v1/network/routes"
        | "/api/v1/dns" => Leader,
        // Routes that reach agents with the controller's own token, which only the leader's
        // agents know; and token reviews, which must know the leader's own token.
        "/api/v1/nodes/{name}/metrics"
        | "/api/v1/nodes/{name}/metrics/history"
        | "/api/v1/nodes/{name}/images"
        | "/api/v1/tasks/{id}/logs"
        | "/api/v1/auth/review" => Leader,
        _ if read => Stale,
        _ => Leader,
    }
}

/// The route layer: applies [`on_standby`] when this controller does not act.
pub(super) async fn follow_the_leader(
    State(ctl): State<Arc<Controller>>,
    route: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let standing = on_standby(req.method(), route.as_str());
    if standing == OnStandby::Own {
        return next.run(req).await;
    }
    match ctl.acting() {
        Ok(_) => {
            let read = matches!(*req.method(), Method::GET | Method::HEAD);
            let answer = next.run(req).await;
            if standing == OnStandby::Leader
                && read
                && let Err(not) = ctl.acting()
            {
                return ApiError::not_acting(&not).into_response();
            }
            answer
        }
        Err(not) => match standing {
            OnStandby::Stale => {
                let mut answer = next.run(req).await;
                mark_stale(&mut answer, &not);
                answer
            }
            OnStandby::Proxy => proxy(&ctl, &not, req).await,
            OnStandby::Leader | OnStandby::Own => ApiError::not_acting(&not).into_response(),
        },
    }
}

fn mark_stale(answer: &mut Response, not: &NotActing) {
    let headers = answer.headers_mut();
    headers.insert(STALE_HEADER, HeaderValue::from_static("true"));
    if let Some(url) = not
        .leader
        .as_ref()
        .and_then(|l| HeaderValue::from_str(&l.url).ok())
    {
        headers.insert(LEADER_HEADER, url);
    }
}

/// Passes an original-API change on to the leader, with the caller's credential, one hop.
async fn proxy(ctl: &Controller, not: &NotActing, req: Request) -> Response {
    let Some(leader) = &not.leader else {
        return ApiError::not_acting(not).into_response();
    };
    if req.headers().contains_key(PROXIED_HEADER) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the leader changed while this request was passed on to it; retry",
        )
        .into_response();
    }
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, PROXY_BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("this controller is a standby and passes on bodies of at most {PROXY_BODY_LIMIT} bytes to the leader: {e}"),
            )
            .into_response();
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or(parts.uri.path(), |p| p.as_str());
    let url = format!("{}{path}", leader.url.trim_end_matches('/'));
    let mut out = ctl
        .http
        .request(parts.method.clone(), &url)
        .header(PROXIED_HEADER, ctl.name())
        .timeout(Duration::from_secs(30))
        .body(body);
    for name in [
        axum::http::header::AUTHORIZATION,
        axum::http::header::CONTENT_TYPE,
    ] {
        if let Some(v) = parts.headers.get(&name) {
            out = out.header(name, v.clone());
        }
    }
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "this controller is a standby and could not pass the request on to the leader at {}: {e}",
                    leader.url
                ),
            )
            .into_response();
        }
    };
    let status = answer.status();
    let content_type = answer
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .cloned();
    match answer.bytes().await {
        Ok(bytes) => {
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            if let Some(ct) = content_type {
                response
                    .headers_mut()
                    .insert(axum::http::header::CONTENT_TYPE, ct);
            }
            if let Ok(url) = HeaderValue::from_str(&leader.url) {
                response.headers_mut().insert(LEADER_HEADER, url);
            }
            response
        }
        Err(e) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the leader at {} broke off its answer: {e}", leader.url),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_standby_does_with_each_kind_of_route() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(on_standby(&get, "/api/v1/tasks"), OnStandby::Stale);
        assert_eq!(on_standby(&post, "/api/v1/tasks"), OnStandby::Leader);
        assert_eq!(on_standby(&get, "/nodes"), OnStandby::Stale);
        assert_eq!(on_standby(&get, "/services/running"), OnStandby::Stale);
        assert_eq!(on_standby(&get, "/service"), OnStandby::Stale);
        assert_eq!(on_standby(&Method::DELETE, "/service"), OnStandby::Proxy);
        assert_eq!(on_standby(&get, "/start/group"), OnStandby::Proxy);
        assert_eq!(
            on_standby(&get, "/api/v1/agents/{name}/desired"),
            OnStandby::Leader
        );
        assert_eq!(
            on_standby(&post, "/api/v1/agents/register"),
            OnStandby::Leader
        );
        assert_eq!(on_standby(&get, "/api/v1/dns"), OnStandby::Leader);
        assert_eq!(
            on_standby(&get, "/api/v1/tasks/{id}/logs"),
            OnStandby::Leader
        );
        assert_eq!(on_standby(&post, "/api/v1/session"), OnStandby::Own);
        assert_eq!(on_standby(&get, "/"), OnStandby::Own);
    }
}

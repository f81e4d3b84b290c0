//! Who may call which route of the controller, decided in one place.
//!
//! Every request that matched a route passes [`authorize`] (a route layer, so it knows the
//! route's pattern and path parameters). It finds the caller (a bearer token, the web UI's
//! session cookie, or anyone when the controller runs `--insecure`), then checks the route's
//! [`Need`] from one table, [`need`]. A route the table does not name needs a viewer to read
//! (GET, HEAD) and an admin for anything else, so a new route is guarded until someone decides
//! otherwise. The caller goes on to the handler as a [`Caller`] extension.
//!
//! The web UI logs in with a token once (`POST /api/v1/session`, `super::session`) and then
//! holds only a session cookie (`crate::sessions`): HttpOnly (no script reads it), SameSite=Strict (no other site's page or link sends
//! it), Secure under TLS, 12 hours. Requests that ride on that cookie must also name this
//! controller in `Host` (an IP literal or one of the rack's own names: a DNS-rebinding page
//! names its own domain), must carry a matching `Origin` when they change anything, and may not
//! use the original API's GETs that change the rack.
//!
//! Agents' routes also want the node's client certificate when the controller serves TLS: the
//! node credential and the certificate must both name the node in the path.
//!
//! Invariants: no handler runs for a caller its route does not admit; a session lives no longer
//! than the credential it was opened with; answers never echo a token.

use std::net::IpAddr;
use std::sync::Arc;

use crate::clock::now_millis;
use axum::Extension;
use axum::extract::{FromRequestParts as _, RawPathParams, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use torc_types::ApiAccess;

use super::error::ApiError;
use crate::auth::{Role, Who};
use crate::controller::Controller;

/// The web UI's session cookie.
pub(super) const SESSION_COOKIE: &str = "torc_session";

/// Who is calling, and how they proved it.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub who: Who,
    pub via: Via,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Via {
    /// `Authorization: Bearer <token>`.
    Token,
    /// The web UI's session cookie.
    Session,
    /// No credential: the controller runs `--insecure`.
    Insecure,
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// No credential: the UI's shell and assets, `/admin/ping`, logging in.
    Public,
    /// Any credential: the rack's shape (nodes, services, status, names, events), nothing
    /// secret.
    Member,
    /// Reads that expose env, args, logs or stored values: admin, viewer, a task's viewer token.
    Viewer,
    Admin,
    /// An admin with a bearer token: the original API's GETs that change the rack, which a
    /// browser session must never trigger.
    AdminToken,
    /// The node named in the path, with its own credential (and certificate under TLS).
    OwnNode,
    /// The framework named in the path with its own credential, or an admin; viewers may read.
    OwnFramework,
    /// Only the framework named in the path: its events long poll keeps it alive.
    OnlyOwnFramework,
    /// A join token, the node's own credential, or an admin (checked against the body).
    Register,
    /// Node and framework credentials: asking who holds a token.
    Review,
    /// The network agent (a task whose token has `api_access: network`), or an admin.
    NetworkAgent,
}

/// The policy: what each route needs. `route` is the matched pattern (`/api/v1/nodes/{name}`).
pub(crate) fn need(method: &Method, route: &str) -> Need {
    use Need::*;
    let read = matches!(*method, Method::GET | Method::HEAD);
    match route {
        "/" | "/ui/app.js" | "/ui/style.css" | "/admin/ping" | "/api/v1/session" => Public,
        "/api/v1/agents/register" => Register,
        "/api/v1/agents/{name}/status" | "/api/v1/agents/{name}/desired" => OwnNode,
        "/api/v1/auth/review" => Review,
        "/api/v1/network/routes" | "/api/v1/network/report" => NetworkAgent,
        "/api/v1/frameworks/{name}/events" => OnlyOwnFramework,
        "/api/v1/frameworks/{name}"
        | "/api/v1/frameworks/{name}/tasks"
        | "/api/v1/frameworks/{name}/tasks/{id}"
        | "/api/v1/frameworks/{name}/log" => OwnFramework,
        // Registration names the framework in its body: the handler checks it.
        "/api/v1/frameworks" => Member,
        "/start/group" | "/node/startup" | "/node/shutdown" | "/calico/configure"
        | "/calico/shutdown" => AdminToken,
        "/api/v1/tokens"
        | "/api/v1/tokens/{id}"
        | "/api/v1/secrets"
        | "/api/v1/secrets/{name}"
        | "/api/v1/config" => Admin,
        // A node's images: listed by viewers; pulled, imported and removed by admins.
        "/api/v1/nodes/{name}/images" if read => Viewer,
        "/api/v1/nodes/{name}/images"
        | "/api/v1/nodes/{name}/images/pull"
        | "/api/v1/nodes/{name}/images/import" => Admin,
        "/api/v1/nodes"
        | "/api/v1/nodes/{name}"
        | "/api/v1/status"
        | "/api/v1/services"
        | "/api/v1/services/{name}"
        | "/api/v1/groups"
        | "/api/v1/dns"
        | "/api/v1/network"
        | "/api/v1/events"
            if read =>
        {
            Member
        }
        _ if read => Viewer,
        _ => Admin,
    }
}

pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

pub(super) fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

pub(super) fn forbidden(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

/// The bearer token of a request, if it has an `Authorization` header.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| Some(t.trim()))
        .ok_or_else(|| unauthorized("the Authorization header must be `Bearer <token>`"))
}

/// Finds the caller of a request: `None` when it brings no credential at all.
pub(super) fn authenticate(
    ctl: &Controller,
    headers: &HeaderMap,
) -> Result<Option<Caller>, ApiError> {
    if ctl.access.insecure {
        return Ok(Some(Caller {
            who: Who::Insecure,
            via: Via::Insecure,
        }));
    }
    if let Some(token) = bearer(headers)? {
        return match ctl.authenticate(token) {
            // Tokens the controller hands out for calls elsewhere: never good here.
            Ok(Who::Controller | Who::Delegate(_)) => Err(unauthorized(
                "this token is for the controller's calls to agents and frameworks, not for its API",
            )),
            Ok(who) => Ok(Some(Caller {
                who,
                via: Via::Token,
            })),
            Err(e) => Err(unauthorized(e.to_string())),
        };
    }
    if let Some(id) = cookie(headers, SESSION_COOKIE) {
        let session = ctl.access.sessions.get(&id, now_millis());
        return match session {
            Some(s) if ctl.still_valid(&s.who) => Ok(Some(Caller {
                who: s.who,
                via: Via::Session,
            })),
            _ => Err(unauthorized("the session has ended; log in again")),
        };
    }
    Ok(None)
}

/// The host part of a `Host` header value (no port, no brackets, lowercase).
fn host_name(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match v.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Browser-session checks: the `Host` is this controller's, and a change comes from its own
/// page (`Origin`).
pub(super) fn check_browser(
    ctl: &Controller,
    headers: &HeaderMap,
    read: bool,
) -> Result<(), ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = host_name(host);
    let known = name.parse::<IpAddr>().is_ok() || ctl.access.hosts.contains(&name);
    if !known {
        return Err(forbidden(format!(
            "this controller does not answer browser sessions for the host {host:?}; use its address or one of the rack's names (or start it with --ui-host {name})"
        )));
    }
    if !read {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or("");
        if origin_host != host {
            return Err(forbidden(format!(
                "a change from a browser session must come from this controller's own page (Origin {origin:?} is not {host:?})"
            )));
        }
    }
    Ok(())
}

/// The route layer: authenticate, check the route's need, pass the caller on.
pub(crate) async fn authorize(
    State(ctl): State<Arc<Controller>>,
    req: Request,
    next: Next,
) -> Response {
    match admit(&ctl, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

async fn admit(ctl: &Controller, req: Request) -> Result<Request, ApiError> {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let read = matches!(method, Method::GET | Method::HEAD);
    let need = need(&method, &route);
    if need == Need::Public {
        return Ok(req);
    }
    // A browser says where a request comes from: another site's page (a link, a form, an
    // image) never acts here, whatever credential the browser would attach or the controller
    // would not ask for (`--insecure`). Tools send no such header.
    if let Some(site) = req
        .headers()
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(forbidden(format!(
            "a request from another site's page ({site}) is refused; open the controller's own page"
        )));
    }
    let Some(caller) = authenticate(ctl, req.headers())? else {
        return Err(unauthorized(format!(
            "{method} {route} needs a credential: `Authorization: Bearer <token>` (`torc token create`; for `torc up`, the admin token file it printed)"
        )));
    };
    // Sessions ride on cookies, and `--insecure` on nothing at all: both must come from this
    // controller's own page, by one of its own names.
    if matches!(caller.via, Via::Session | Via::Insecure) {
        check_browser(ctl, req.headers(), read || caller.via == Via::Insecure)?;
    }
    let (mut parts, body) = req.into_parts();
    let params = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("path: {}", e.body_text())))?;
    let name = params
        .iter()
        .find(|(k, _)| *k == "name")
        .map(|(_, v)| v.to_string());
    let who = &caller.who;
    let denied = |what: &str| {
        forbidden(format!(
            "{} may not {method} {route}: it needs {what}",
            who.describe()
        ))
    };
    match need {
        Need::Public => {}
        Need::Member => {
            if matches!(who.role(), Some(Role::Join)) {
                return Err(denied("a credential other than a join token"));
            }
        }
        Need::Viewer => {
            if !who.reads_all() {
                return Err(denied("a viewer or admin token"));
            }
        }
        Need::Admin => {
            if !who.is_admin() {
                return Err(denied("an admin token"));
            }
        }
        Need::AdminToken => {
            if caller.via == Via::Session {
                return Err(forbidden(format!(
                    "{route} is a GET that changes the rack (the original API): it needs an admin's bearer token, never a browser session"
                )));
            }
            if !who.is_admin() {
                return Err(denied("an admin token"));
            }
        }
        Need::OwnNode => {
            let own = matches!(who.role(), Some(Role::Node { node }) if Some(node.as_str()) == name.as_deref());
            if !(own || caller.via == Via::Insecure) {
                return Err(denied(&format!(
                    "node {}'s own credential",
                    name.as_deref().unwrap_or("?")
                )));
            }
            if ctl.tls.is_some() {
                let node = name.as_deref().unwrap_or("");
                let dns = ctl.node_cert_name(node);
                let ok = parts
                    .extensions
                    .get::<torc_tls::PeerCertificates>()
                    .and_then(|p| p.leaf())
                    .is_some_and(|leaf| torc_tls::cert_names(leaf, &dns));
                if !ok {
                    return Err(denied(&format!(
                        "a client certificate from the rack CA for {dns} (node {node}'s)"
                    )));
                }
            }
        }
        Need::OwnFramework | Need::OnlyOwnFramework => {
            let own = matches!(who.role(), Some(Role::Framework { framework }) if Some(framework.as_str()) == name.as_deref());
            let other_ok = match need {
                Need::OwnFramework => who.is_admin() || (read && who.reads_all()),
                _ => caller.via == Via::Insecure,
            };
            if !(own || other_ok) {
                return Err(denied(&format!(
                    "framework {}'s own credential",
                    name.as_deref().unwrap_or("?")
                )));
            }
        }
        Need::Register => {
            let ok = who.is_admin() || matches!(who.role(), Some(Role::Join | Role::Node { .. }));
            if !ok {
                return Err(denied(
                    "a join token, the node's own credential or an admin token",
                ));
            }
        }
        Need::NetworkAgent => {
            let agent = matches!(
                who,
                Who::Task {
                    access: ApiAccess::Network,
                    ..
                }
            );
            if !(agent || who.is_admin()) {
                return Err(denied("the network agent's task token or an admin token"));
            }
        }
        Need::Review => {
            let ok = who.is_admin()
                || matches!(who.role(), Some(Role::Node { .. } | Role::Framework { .. }));
            if !ok {
                return Err(denied("a node's or a framework's credential"));
            }
        }
    }
    parts.extensions.insert(caller);
    Ok(Request::from_parts(parts, body))
}

/// The caller a handler runs for.
pub(crate) type CallerExt = Extension<Caller>;

//! Who may call which route of the controller, decided in one place.
//!
//! Every request that matched a route passes [`authorize`] (a route layer, so it knows the
//! route's pattern and path parameters). It finds the caller (a bearer token, the web UI's
//! session cookie, or anyone when the controller runs `--insecure`), then checks the route's
//! [`Need`] from one table, [`need`]. A route the table does not name needs a viewer to read
//! (GET, HEAD) and an admin for anything else, so a new route is guarded until someone decides
//! otherwise. The caller goes on to the handler as a [`Caller`] extension.
//!
//! The web UI logs in with a token once (`POST /api/v1/session`) and then holds only a session
//! cookie: HttpOnly (no script reads it), SameSite=Strict (no other site's page or link sends
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

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts as _, RawPathParams, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use torc_api::{
    LoginRequest, ReviewRequest, ReviewResponse, SessionView, TokenCreated, TokenRequest,
    TokenRole, TokenView,
};
use torc_types::{UnixMillis, now_millis};

use crate::Controller;
use crate::api::{ApiError, Body};
use crate::auth::{Role, Who};

/// The web UI's session cookie.
const SESSION_COOKIE: &str = "torc_session";
/// How long a UI session lasts.
const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Most sessions held at once; past it the oldest is dropped.
const MAX_SESSIONS: usize = 1024;
/// Most sessions one identity holds; past it its own oldest is dropped, never another's.
const MAX_SESSIONS_EACH: usize = 16;

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
        "/api/v1/frameworks/{name}/events" => OnlyOwnFramework,
        "/api/v1/frameworks/{name}"
        | "/api/v1/frameworks/{name}/tasks"
        | "/api/v1/frameworks/{name}/tasks/{id}"
        | "/api/v1/frameworks/{name}/log" => OwnFramework,
        // Registration names the framework in its body: the handler checks it.
        "/api/v1/frameworks" => Member,
        "/start/group" | "/node/startup" | "/node/shutdown" => AdminToken,
        "/api/v1/tokens" | "/api/v1/tokens/{id}" | "/api/v1/secrets" | "/api/v1/secrets/{name}" => {
            Admin
        }
        "/api/v1/nodes"
        | "/api/v1/nodes/{name}"
        | "/api/v1/status"
        | "/api/v1/services"
        | "/api/v1/services/{name}"
        | "/api/v1/groups"
        | "/api/v1/dns"
        | "/api/v1/events"
            if read =>
        {
            Member
        }
        _ if read => Viewer,
        _ => Admin,
    }
}

/// The sessions of the web UI, in memory: a controller restart logs everyone out.
#[derive(Default)]
pub(crate) struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

#[derive(Debug, Clone)]
struct Session {
    who: Who,
    expires_at: UnixMillis,
}

fn session_key(id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    fn open(&self, who: Who, now: UnixMillis) -> (String, UnixMillis) {
        let mut id = [0u8; 32];
        torc_types::random_bytes(&mut id);
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let expires_at = now + SESSION_TTL_MS;
        let mut map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires_at > now);
        let mine: Vec<(String, UnixMillis)> = map
            .iter()
            .filter(|(_, s)| s.who == who)
            .map(|(k, s)| (k.clone(), s.expires_at))
            .collect();
        if mine.len() >= MAX_SESSIONS_EACH
            && let Some((oldest, _)) = mine.iter().min_by_key(|(_, e)| *e)
        {
            map.remove(oldest);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(session_key(&id), Session { who, expires_at });
        (id, expires_at)
    }

    fn get(&self, id: &str, now: UnixMillis) -> Option<Session> {
        let map = self.by_hash.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&session_key(id))
            .filter(|s| s.expires_at > now)
            .cloned()
    }

    fn close(&self, id: &str) {
        self.by_hash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&session_key(id));
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, message)
}

fn forbidden(message: impl Into<String>) -> ApiError {
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
fn authenticate(ctl: &Controller, headers: &HeaderMap) -> Result<Option<Caller>, ApiError> {
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
fn check_browser(ctl: &Controller, headers: &HeaderMap, read: bool) -> Result<(), ApiError> {
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

// ---------------------------------------------------------------------------------------------
// Sessions and reviews

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
pub(crate) async fn login(
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
pub(crate) async fn whoami(
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
pub(crate) async fn logout(State(ctl): State<Arc<Controller>>, headers: HeaderMap) -> Response {
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
pub(crate) async fn review(
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
            delegate_for: None,
            subject: None,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Tokens and secrets (admin)

fn token_view(c: &crate::auth::Credential) -> TokenView {
    let (role, subject) = match &c.role {
        Role::Admin => ("admin", None),
        Role::Viewer => ("viewer", None),
        Role::Join => ("join", None),
        Role::Node { node } => ("node", Some(node.to_string())),
        Role::Framework { framework } => ("framework", Some(framework.to_string())),
    };
    TokenView {
        id: c.id.clone(),
        name: c.name.clone(),
        role: role.to_string(),
        subject,
        created_at: c.created_at,
        expires_at: c.expires_at,
    }
}

/// `GET /api/v1/tokens`: every stored credential, without secrets.
pub(crate) async fn list_tokens(State(ctl): State<Arc<Controller>>) -> Json<Vec<TokenView>> {
    let inner = ctl.inner.lock().unwrap_or_else(|e| e.into_inner());
    Json(
        inner
            .keys
            .list(now_millis())
            .iter()
            .map(token_view)
            .collect(),
    )
}

/// `POST /api/v1/tokens`: a new token, shown this once.
pub(crate) async fn create_token(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let role = match (req.role, req.framework) {
        (TokenRole::Framework, Some(framework)) => Role::Framework { framework },
        (TokenRole::Framework, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "framework: a framework token needs the framework's name",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "framework: only framework tokens name a framework",
            ));
        }
        (TokenRole::Admin, None) => Role::Admin,
        (TokenRole::Viewer, None) => Role::Viewer,
        (TokenRole::Join, None) => Role::Join,
    };
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: 1 to 128 printable characters",
        ));
    }
    let now = now_millis();
    let expires_at = match req.ttl_seconds {
        Some(0) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ttl_seconds: must be positive (leave it out for a token that lasts until revoked)",
            ));
        }
        Some(s) => Some(now.saturating_add(s.saturating_mul(1000))),
        None => None,
    };
    let by = caller.who.describe();
    let minted = ctl
        .change_keys(move |rack, keys| {
            let minted = keys.mint(&name, role, now, expires_at);
            rack.record(
                "auth",
                "info",
                format!(
                    "{by} created {} token {:?} ({})",
                    minted.credential.role, minted.credential.name, minted.credential.id
                ),
                None,
                None,
                now,
            );
            Ok(minted)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: minted.token.clone(),
            view: token_view(&minted.credential),
        }),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a credential at once.
pub(crate) async fn revoke_token(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    crate::api::Segment(id): crate::api::Segment<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let by = caller.who.describe();
    let revoked = ctl
        .change_keys(move |rack, keys| {
            if !keys.revoke(&id, now_millis()) {
                return Err(crate::RackError::NotFound(format!(
                    "no token with id {id:?}"
                )));
            }
            rack.record(
                "auth",
                "info",
                format!("{by} revoked token {id}"),
                None,
                None,
                now_millis(),
            );
            Ok(id)
        })
        .await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

/// `GET /api/v1/secrets`: the names of the rack's secrets (never their values).
pub(crate) async fn list_secrets(State(ctl): State<Arc<Controller>>) -> Json<Vec<String>> {
    let inner = ctl.inner.lock().unwrap_or_else(|e| e.into_inner());
    Json(inner.keys.secret_names())
}

/// `GET /api/v1/secrets/{name}`: a rack secret's value, for an admin (e.g. the kv root
/// password, to use etcdctl as root). Recorded in the event feed.
pub(crate) async fn get_secret(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    crate::api::Segment(name): crate::api::Segment<torc_types::SecretName>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let by = caller.who.describe();
    let n = name.clone();
    let value = ctl
        .change_keys(move |rack, keys| {
            let value = keys
                .secret(n.as_str())
                .map(str::to_string)
                .ok_or_else(|| crate::RackError::NotFound(format!("no rack secret named {n}")))?;
            rack.record(
                "auth",
                "info",
                format!("{by} read secret {n}"),
                None,
                None,
                now_millis(),
            );
            Ok(value)
        })
        .await?;
    Ok(Json(serde_json::json!({ "secret": name, "value": value })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SecretValue {
    value: String,
}

/// `PUT /api/v1/secrets/{name}`: sets a rack secret (e.g. to a password an outside service
/// already has). Tasks started from then on get the new value.
pub(crate) async fn set_secret(
    State(ctl): State<Arc<Controller>>,
    crate::api::Segment(name): crate::api::Segment<torc_types::SecretName>,
    Body(v): Body<SecretValue>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if v.value.is_empty() || v.value.len() > 64 * 1024 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value: 1 byte to 64 KiB",
        ));
    }
    let n = name.clone();
    ctl.change_keys(move |rack, keys| {
        keys.set_secret(n.as_str(), v.value);
        rack.record(
            "auth",
            "info",
            format!("secret {n} set"),
            None,
            None,
            now_millis(),
        );
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({ "secret": name })))
}

/// The access state of a controller.
pub(crate) struct Access {
    /// `--insecure`: no credentials at all.
    pub insecure: bool,
    pub sessions: Sessions,
    /// DNS names a browser may reach the controller by (IP literals always may).
    pub hosts: Vec<String>,
}

/// The caller a handler runs for.
pub(crate) type CallerExt = Extension<Caller>;

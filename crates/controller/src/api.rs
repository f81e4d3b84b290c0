//! The controller's HTTP API, `/api/v1`: JSON in and out, proper verbs and status codes, and
//! every error a JSON body `{"error": "...", "status": N}` that says what was wrong.
//!
//! Who may call each route is decided before any handler runs (`crate::access`); handlers
//! that act on a caller's behalf read it from the `Caller` extension.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{Method, StatusCode, request::Parts};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use torc_api::original::OriginalTask;
use torc_api::{
    DesiredQuery, DesiredState, ErrorBody, LogChunk, LogQuery, RegisterRequest, RegisterResponse,
    StatusReport, TaskFilter, TaskView,
};
use torc_api::{
    EventsQuery, FrameworkEvents, FrameworkRegistered, FrameworkRegistration, FrameworkView,
    GroupView, PowerRequest, PowerResult, ServiceView, StatusView,
};
use torc_types::{
    BUILTIN_FRAMEWORK, FrameworkName, NodeName, ServiceName, TaskId, TaskSpec, now_millis,
};

use crate::access::CallerExt;
use crate::auth::Role;
use crate::{ChangeError, Controller, RackError};
use axum::Extension;

/// Most bytes of an answer the controller passes on from an agent, the tsdb or a framework.
const MAX_PROXIED_BYTES: usize = 32 << 20;

/// Longest a desired-state long poll waits.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub fn router(ctl: Arc<Controller>) -> Router {
    Router::new()
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{name}", get(get_node))
        .route("/api/v1/nodes/{name}/metrics", get(node_metrics))
        .route(
            "/api/v1/nodes/{name}/metrics/history",
            get(node_metrics_history),
        )
        .route("/api/v1/events", get(events))
        .route("/api/v1/dns", get(dns_snapshot))
        .route("/api/v1/dns/lookup", get(dns_lookup))
        .route("/api/v1/kv", get(kv_list).put(kv_put).delete(kv_delete))
        .route("/api/v1/kv/watch", get(kv_watch))
        .route("/api/v1/query", get(tsdb_query))
        .route("/api/v1/tasks", get(list_tasks).post(launch_task))
        .route("/api/v1/tasks/{id}", get(get_task).delete(kill_task))
        .route("/api/v1/tasks/{id}/logs", get(task_logs))
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
            axum::routing::delete(framework_kill),
        )
        .route("/api/v1/frameworks/{name}/events", get(framework_events))
        .route("/api/v1/frameworks/{name}/log", post(framework_log))
        .route(
            "/api/v1/frameworks/{name}/groups/{group}/{action}",
            post(framework_group),
        )
        .route("/api/v1/status", get(status))
        .route("/api/v1/services", get(list_services))
        .route(
            "/api/v1/services/{name}",
            get(get_service).delete(delete_service),
        )
        .route("/api/v1/groups", get(list_groups))
        .route("/api/v1/groups/{name}/start", post(start_group))
        .route("/api/v1/groups/{name}/stop", post(stop_group))
        .route("/api/v1/announcements", get(list_announced).post(announce))
        .route("/api/v1/nodes/{name}/power", post(power))
        .merge(crate::original::routes())
        .route("/", get(ui_index))
        .route("/ui/app.js", get(ui_js))
        .route("/ui/style.css", get(ui_css))
        .route("/api/v1/agents/register", post(register_agent))
        .route("/api/v1/agents/{name}/status", post(agent_status))
        .route("/api/v1/agents/{name}/desired", get(agent_desired))
        .route(
            "/api/v1/session",
            post(crate::access::login)
                .get(crate::access::whoami)
                .delete(crate::access::logout),
        )
        .route("/api/v1/auth/review", post(crate::access::review))
        .route(
            "/api/v1/tokens",
            get(crate::access::list_tokens).post(crate::access::create_token),
        )
        .route(
            "/api/v1/tokens/{id}",
            axum::routing::delete(crate::access::revoke_token),
        )
        .route("/api/v1/secrets", get(crate::access::list_secrets))
        .route(
            "/api/v1/secrets/{name}",
            get(crate::access::get_secret).put(crate::access::set_secret),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&ctl),
            crate::access::authorize,
        ))
        .fallback(not_found)
        .with_state(ctl)
}

// ---------------------------------------------------------------------------------------------
// Errors and extractors

/// An error answer.
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message,
            status: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<RackError> for ApiError {
    fn from(e: RackError) -> Self {
        let status = match &e {
            RackError::NotFound(_) => StatusCode::NOT_FOUND,
            RackError::Conflict(_) => StatusCode::CONFLICT,
            RackError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RackError::Forbidden(_) => StatusCode::FORBIDDEN,
            RackError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rejected(e) => e.into(),
            ChangeError::Store(e) => {
                tracing::error!(error = %e, "state store write failed");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

/// A JSON body whose rejection is a JSON error naming the problem (line and column included).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    // axum's own statuses: 422 for a body of the wrong shape, 415 without the JSON content
    // type, 413 over the body limit, 400 for bytes that are not JSON.
    ApiError::new(r.status(), format!("request body: {}", r.body_text()))
}

/// Query parameters whose rejection is a JSON error.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|r: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("query: {}", r.body_text()))
            })
    }
}

/// A path segment whose rejection is a JSON error.
pub struct Segment<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segment<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Segment(p.0))
            .map_err(|r: PathRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, format!("path: {}", r.body_text()))
            })
    }
}

async fn not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
    )
}

pub(crate) type Reply<T> = Result<Json<T>, ApiError>;

// ---------------------------------------------------------------------------------------------
// Nodes

async fn list_nodes(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::NodeView>> {
    Json(ctl.read(|r| r.node_views()))
}

async fn get_node(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<NodeName>,
) -> Reply<torc_api::NodeView> {
    Ok(Json(ctl.read(|r| r.node_view(&name))?))
}

// ---------------------------------------------------------------------------------------------
// Tasks

async fn list_tasks(
    State(ctl): State<Arc<Controller>>,
    Params(filter): Params<TaskFilter>,
) -> Json<Vec<TaskView>> {
    Json(ctl.read(|r| r.tasks(&filter)))
}

async fn get_task(
    State(ctl): State<Arc<Controller>>,
    Segment(id): Segment<TaskId>,
) -> Reply<TaskView> {
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
fn check_tls_wanted(ctl: &Controller, spec: &TaskSpec) -> Result<(), ApiError> {
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
    Segment(id): Segment<TaskId>,
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
    Segment(id): Segment<TaskId>,
    Params(query): Params<LogQuery>,
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

#[derive(serde::Serialize, serde::Deserialize)]
struct Since {
    #[serde(default)]
    since: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last: Option<usize>,
}

/// A node's latest metrics sample, from its agent.
async fn node_metrics(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
) -> Reply<torc_api::NodeMetrics> {
    agent_get(&ctl, &node, "/v1/metrics", &()).await
}

/// A node's recent metrics samples (newer than `since`), from its agent.
async fn node_metrics_history(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
    Params(q): Params<Since>,
) -> Reply<Vec<torc_api::NodeMetrics>> {
    agent_get(&ctl, &node, "/v1/metrics/history", &q).await
}

async fn events(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<EventsAfter>,
) -> Json<Vec<torc_api::RackEvent>> {
    Json(ctl.read(|r| r.events(q.after)))
}

/// The rack's names for `torc dns`, as a whole snapshot. Long poll: waits up to `wait_ms` for a
/// generation newer than `after`.
async fn dns_snapshot(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<DesiredQuery>,
) -> Json<torc_dns::DnsSnapshot> {
    let mut rx = ctl.subscribe_dns();
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    while *rx.borrow_and_update() == q.after {
        if !matches!(
            tokio::time::timeout_at(deadline, rx.changed()).await,
            Ok(Ok(()))
        ) {
            break;
        }
    }
    Json(ctl.dns_snapshot())
}

/// Where the running service named `service` answers on `port`.
fn service_addr(
    ctl: &Controller,
    service: &str,
    port: u16,
) -> Result<std::net::SocketAddr, ApiError> {
    service_endpoint(ctl, service, port).map(|(addr, _)| addr)
}

/// Where the running service named `service` answers on `port`, and whether it serves TLS.
fn service_endpoint(
    ctl: &Controller,
    service: &str,
    port: u16,
) -> Result<(std::net::SocketAddr, bool), ApiError> {
    ctl.read(|r| r.services())
        .into_iter()
        .find(|s| s.service.as_str() == service && s.state == Some(torc_types::TaskState::Running))
        .and_then(|s| Some((std::net::SocketAddr::new(s.ip?, port), s.tls)))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no `{service}` system service is running in this rack"),
            )
        })
}

#[derive(serde::Deserialize)]
struct KvQuery {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    after: i64,
    #[serde(default)]
    wait_ms: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KvValue {
    value: String,
}

fn bad_gateway(e: String) -> ApiError {
    ApiError::new(StatusCode::BAD_GATEWAY, e)
}

/// The rack's state store and the controller's client of it (logged in as `access.etcd`).
fn kv_client(ctl: &Controller) -> Result<(String, torc_kv::client::Client), ApiError> {
    let (addr, tls) = service_endpoint(ctl, "etcd", 2379)?;
    let url = format!("{}://{addr}", if tls { "https" } else { "http" });
    let login = match ctl.login(|s| s.etcd_login.clone()) {
        (Some(user), Some(password)) => Some((user, password)),
        _ => None,
    };
    let roots = ctl
        .ca
        .as_ref()
        .and_then(|ca| torc_tls::parse_certs(ca.cert_pem(), "the rack CA").ok());
    let client = ctl
        .kv
        .get(&url, login, roots.as_deref())
        .map_err(|e| bad_gateway(e.to_string()))?;
    Ok((url, client))
}

fn kv_error(e: crate::kv::KvError) -> ApiError {
    match e {
        crate::kv::KvError::NoKey(_) => ApiError::new(StatusCode::NOT_FOUND, e.to_string()),
        e => bad_gateway(e.to_string()),
    }
}

/// The state store's keys under `prefix` (the state browser).
async fn kv_list(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<KvQuery>,
) -> Reply<crate::kv::KvListing> {
    let (url, client) = kv_client(&ctl)?;
    crate::kv::list(&client, &url, &q.prefix)
        .await
        .map(Json)
        .map_err(kv_error)
}

async fn kv_put(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<KvQuery>,
    Body(v): Body<KvValue>,
) -> Reply<serde_json::Value> {
    if q.key.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing query parameter `key`",
        ));
    }
    let (_, client) = kv_client(&ctl)?;
    let revision = crate::kv::put(&client, &q.key, &v.value)
        .await
        .map_err(kv_error)?;
    Ok(Json(
        serde_json::json!({ "key": q.key, "revision": revision }),
    ))
}

async fn kv_delete(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<KvQuery>,
) -> Reply<serde_json::Value> {
    if q.key.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "missing query parameter `key`",
        ));
    }
    let (_, client) = kv_client(&ctl)?;
    let revision = crate::kv::delete(&client, &q.key).await.map_err(kv_error)?;
    Ok(Json(
        serde_json::json!({ "key": q.key, "revision": revision }),
    ))
}

/// Long poll: answers when something under `prefix` changed after revision `after`.
async fn kv_watch(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<KvQuery>,
) -> Reply<crate::kv::KvChange> {
    let (_, client) = kv_client(&ctl)?;
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    crate::kv::wait_change(&client, &q.prefix, q.after, wait)
        .await
        .map(Json)
        .map_err(kv_error)
}

#[derive(serde::Deserialize)]
struct TsdbQuery {
    q: String,
    #[serde(default = "default_db")]
    db: String,
    /// `0.8` (the seed's API: `/db/<db>/series`) or `1.x` (`/query`).
    #[serde(default = "default_api")]
    api: String,
}

fn default_db() -> String {
    "torc".into()
}

fn default_api() -> String {
    "1.x".into()
}

/// Runs a query on the rack's time-series database (the running `influxdb` service) and passes
/// its JSON answer on, for the UI's query page.
async fn tsdb_query(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    Params(q): Params<TsdbQuery>,
) -> Result<Response, ApiError> {
    if !caller.who.is_admin()
        && let Some(why) = not_plainly_a_read(&q.q, q.api == "0.8")
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{} may only run one SELECT or SHOW (LIST on the 0.8 API) through the controller, and this query is not plainly one: {why}; an admin may run it",
                caller.who.describe()
            ),
        ));
    }
    let db = plain_db_name(&q.db)?;
    let (addr, tls) = service_endpoint(&ctl, "influxdb", 8086)?;
    let scheme = if tls { "https" } else { "http" };
    // The controller logs in as the config's `access.influxdb` user (0.8's default `root`
    // otherwise, which a database without authentication ignores).
    let (user, password) = ctl.login(|s| s.influxdb_login.clone());
    let (user, password) = (
        user.unwrap_or_else(|| "root".into()),
        password.unwrap_or_else(|| "root".into()),
    );
    // Credentials go in the Authorization header, never in the URL, which errors quote.
    let req = match q.api.as_str() {
        "0.8" => ctl
            .http
            .get(format!("{scheme}://{addr}/db/{db}/series"))
            .basic_auth(&user, Some(&password))
            .query(&[("q", q.q.as_str())]),
        "1.x" => ctl
            .http
            .get(format!("{scheme}://{addr}/query"))
            .basic_auth(&user, Some(&password))
            .query(&[("q", q.q.as_str()), ("db", db), ("epoch", "ms")]),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("api: expected \"0.8\" or \"1.x\", got {other:?}"),
            ));
        }
    };
    let who = format!("influxdb at {addr}");
    let resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("{who} did not answer: {}", e.without_url())))?;
    if !resp.status().is_success() {
        // The database's own words (a parse error, a refusal), as ours.
        return Err(forward_error(resp, &who).await);
    }
    // The answer goes through as it comes, never held whole: a big answer costs the
    // controller a chunk at a time. A statement's error in a 1.x answer stays inside it
    // (`results[i].error`), as InfluxDB sends it.
    let mut out = Response::new(axum::body::Body::from_stream(resp.bytes_stream()));
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    Ok(out)
}

/// Why a non-admin may not run `text` through the query proxy, if they may not.
///
/// The proxy logs in to the database as its admin, so for everyone else it admits only what
/// is plainly a read, and is conservative about it rather than a second InfluxQL lexer (the
/// database's own is the judge of what a statement means): one statement, starting with
/// SELECT or SHOW (0.8's SELECT or LIST), without the word INTO (SELECT ... INTO writes), and
/// without comments (which could hide a statement boundary from a check this simple).
fn not_plainly_a_read(text: &str, api_08: bool) -> Option<String> {
    let mut body = text.trim();
    if let Some(stripped) = body.strip_suffix(';') {
        body = stripped.trim_end();
    }
    if body.contains(';') {
        return Some("it holds more than one statement".into());
    }
    if body.contains("--") || body.contains("/*") {
        return Some("it holds a comment".into());
    }
    let words: Vec<String> = body
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_uppercase)
        .collect();
    let first = words.first().map(String::as_str).unwrap_or("");
    let reads: &[&str] = if api_08 {
        &["SELECT", "LIST"]
    } else {
        &["SELECT", "SHOW"]
    };
    if !reads.contains(&first) || !body.to_ascii_uppercase().starts_with(first) {
        return Some(format!("it does not start with {}", reads.join(" or ")));
    }
    if words.iter().any(|w| w == "INTO") {
        return Some("SELECT ... INTO writes".into());
    }
    None
}

/// A database name the proxy may put in a path or a parameter: letters, digits, `_`, `-`, `.`.
fn plain_db_name(db: &str) -> Result<&str, ApiError> {
    let ok = !db.is_empty()
        && db.len() <= 255
        && db != "."
        && db != ".."
        && db
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(db)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("db: {db:?} is not a database name (letters, digits, '_', '-', '.')"),
        ))
    }
}

#[derive(serde::Deserialize)]
struct LookupQuery {
    name: String,
    #[serde(default = "default_rtype", rename = "type")]
    rtype: String,
}

fn default_rtype() -> String {
    "A".into()
}

/// Asks the rack's own DNS server (the running `dns` service, port 53).
async fn dns_lookup(
    State(ctl): State<Arc<Controller>>,
    Params(q): Params<LookupQuery>,
) -> Reply<crate::dns::Lookup> {
    let dns = service_addr(&ctl, "dns", 53)?;
    crate::dns::lookup(dns, &q.name, &q.rtype)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e))
}

#[derive(serde::Deserialize)]
struct EventsAfter {
    #[serde(default)]
    after: u64,
}

/// GETs `path` from a node's agent and passes its JSON answer (or error) on.
async fn agent_get<T: serde::de::DeserializeOwned, Q: serde::Serialize>(
    ctl: &Controller,
    node: &NodeName,
    path: &str,
    query: &Q,
) -> Reply<T> {
    let (url, active) = ctl.read(|r| r.agent_url(node)).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} has no agent address (its agent never registered)"),
        )
    })?;
    if !active {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} is inactive; its agent cannot be asked"),
        ));
    }
    let req = ctl
        .http
        .get(format!("{url}{path}"))
        .bearer_auth(&ctl.own_token)
        .query(query);
    let body = forward(req, &format!("agent on {node}")).await?;
    serde_json::from_value(body).map(Json).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("agent on {node} sent an unreadable answer: {e}"),
        )
    })
}

/// An error answer of a peer as ours: its status and words (at most 64 KiB of them), prefixed
/// with `who`.
async fn forward_error(mut resp: reqwest::Response, who: &str) -> ApiError {
    let status = resp.status();
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > 64 << 10 {
            bytes.truncate(64 << 10);
            break;
        }
    }
    // torc's and InfluxDB's errors are JSON with an `error` field; anything else is text.
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).trim().to_string());
    let status = StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    ApiError::new(status, format!("{who}: {message}"))
}

/// Sends a request to a peer (an agent, the tsdb, a framework) and passes its JSON answer on;
/// its error status and words come back as ours, prefixed with `who`.
async fn forward(req: reqwest::RequestBuilder, who: &str) -> Result<serde_json::Value, ApiError> {
    let mut resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("{who} did not answer: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(forward_error(resp, who).await);
    }
    // The answer is held whole (it is checked and re-encoded): bounded, so one huge answer
    // cannot grow the controller's memory.
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| bad_gateway(format!("{who}: {}", e.without_url())))?
    {
        if bytes.len() + chunk.len() > MAX_PROXIED_BYTES {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!(
                    "{who} answered more than {} MiB, which the controller does not pass on; narrow the request (a LIMIT, a shorter time range)",
                    MAX_PROXIED_BYTES >> 20
                ),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| bad_gateway(format!("{who} sent an unreadable answer: {e}")))
}

async fn list_frameworks(State(ctl): State<Arc<Controller>>) -> Json<Vec<torc_api::FrameworkView>> {
    Json(ctl.read(|r| r.frameworks()))
}

// ---------------------------------------------------------------------------------------------
// Agent protocol

async fn register_agent(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    peer: Option<Extension<torc_tls::PeerCertificates>>,
    Body(req): Body<RegisterRequest>,
) -> Reply<RegisterResponse> {
    let node = req.node.clone();
    if let Some(Role::Node { node: own }) = caller.who.role() {
        if *own != node {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("node {own}'s credential cannot register node {node}"),
            ));
        }
        // Under TLS a node re-registers with its certificate too: its credential alone does
        // not get a certificate for a new key.
        if ctl.tls.is_some() {
            let dns = ctl.node_cert_name(node.as_str());
            let shown = peer
                .as_ref()
                .and_then(|p| p.0.leaf())
                .is_some_and(|leaf| torc_tls::cert_names(leaf, &dns));
            if !shown {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!(
                        "node {node} re-registers with its client certificate for {dns} as well as its credential"
                    ),
                ));
            }
        }
    }
    let joining = matches!(caller.who.role(), Some(Role::Join));
    // A join token (or an admin's) gets the node its own credential; a node's own keeps it.
    let mint = matches!(caller.who.role(), Some(Role::Join | Role::Admin));
    let public_key = match (&ctl.ca, &req.public_key) {
        (Some(_), Some(hex)) => Some(
            decode_hex(hex)
                .and_then(torc_tls::pki::RawPublicKey::p256)
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "public_key: expected an uncompressed P-256 public key in hex (130 digits, starting 04)",
                    )
                })?,
        ),
        _ => None,
    };
    let mut req = req;
    req.agent_url = agent_url(&ctl, &req)?;
    let n = node.clone();
    let (interval, credential, ip) = ctl
        .change_keys(move |rack, keys| {
            // A join token brings in a node that holds no credential; it never takes over one
            // that does (that would shut its agent out and give the caller its identity).
            if joining && keys.node_has_credential(&n, now_millis()) {
                return Err(RackError::Conflict(format!(
                    "node {n} already holds a credential, with which its agent registers; to let another agent take the node, revoke that credential first (`torc token list`, `torc token revoke ID`)"
                )));
            }
            let interval = rack.register(req, now_millis())?;
            let credential = mint.then(|| keys.mint_node(&n, now_millis()).token);
            let ip = rack.node_view(&n)?.ip;
            Ok((interval, credential, ip))
        })
        .await?;
    let certificate = match (&ctl.ca, public_key) {
        (Some(_), Some(_)) if ctl.node_cert_name(node.as_str()) == torc_tls::CONTROLLER_NAME => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "node {node}'s certificate would name the controller ({}); rename the node",
                    torc_tls::CONTROLLER_NAME
                ),
            ));
        }
        (Some(ca), Some(key)) => {
            let req = torc_tls::pki::CertRequest {
                common_name: format!("node {node}"),
                dns_names: vec![ctl.node_cert_name(node.as_str())],
                ips: vec![ip],
                validity: NODE_CERT_VALIDITY,
            };
            Some(
                ca.issue_for(&req, &key)
                    .map_err(|e| {
                        ApiError::new(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("cannot issue node {node}'s certificate: {e}"),
                        )
                    })?
                    .cert_pem,
            )
        }
        _ => None,
    };
    tracing::info!(%node, by = %caller.who.describe(), credential = credential.is_some(), certificate = certificate.is_some(), "agent registered");
    Ok(Json(RegisterResponse {
        heartbeat_interval_ms: interval.as_millis() as u64,
        credential,
        certificate,
    }))
}

/// Where the controller calls a node's agent: the node's own address (from the rack config
/// when it lists the node), the port the agent serves on, HTTPS when the rack has a CA. Never
/// the URL as the agent sent it: the controller's calls carry its token, and a node must not
/// be able to send them anywhere else.
fn agent_url(ctl: &Controller, req: &RegisterRequest) -> Result<String, ApiError> {
    let port = req
        .agent_url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.trim_end_matches('/').parse::<u16>().ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "agent_url: expected scheme://address:port, got {:?}",
                    req.agent_url
                ),
            )
        })?;
    let configured = ctl.read(|r| {
        r.settings()
            .nodes
            .iter()
            .find(|n| n.name == req.node)
            .map(|n| n.ip)
    });
    let ip = configured.unwrap_or(req.ip);
    let scheme = if ctl.ca.is_some() { "https" } else { "http" };
    Ok(match ip {
        std::net::IpAddr::V6(v6) => format!("{scheme}://[{v6}]:{port}"),
        v4 => format!("{scheme}://{v4}:{port}"),
    })
}

/// How long a node's certificate is valid; the agent gets a new one at each registration.
const NODE_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn agent_status(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
    Body(report): Body<StatusReport>,
) -> Reply<serde_json::Value> {
    ctl.change(move |rack| rack.report(&node, report, now_millis()))
        .await?;
    Ok(Json(serde_json::json!({})))
}

/// Long poll: answers as soon as the node's desired set is newer than `after`, or when the
/// wait is over (with the current document either way).
async fn agent_desired(
    State(ctl): State<Arc<Controller>>,
    Segment(node): Segment<NodeName>,
    Params(query): Params<DesiredQuery>,
) -> Reply<DesiredState> {
    let mut rx = ctl
        .subscribe(&node)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no node named \"{node}\"")))?;
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let current = *rx.borrow_and_update();
        // `after` beyond what we have means the agent remembers another controller life: give
        // it our document at once.
        if current != query.after {
            break;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            _ => break,
        }
    }
    let mut doc = ctl.read(|r| r.desired(&node))?;
    let ip = ctl.read(|r| r.node_view(&node).ok().map(|n| n.ip));
    for task in &mut doc.tasks {
        task.files = ctl.task_files(task, ip);
    }
    Ok(Json(doc))
}

// ---------------------------------------------------------------------------------------------
// Frameworks (sub-schedulers)

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
    Segment(name): Segment<FrameworkName>,
) -> Reply<FrameworkView> {
    Ok(Json(ctl.read(|r| r.framework(&name))?))
}

async fn unregister_framework(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<FrameworkName>,
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
    Segment(name): Segment<FrameworkName>,
) -> Reply<Vec<TaskView>> {
    ctl.read(|r| r.framework(&name))?;
    Ok(Json(ctl.read(|r| r.framework_tasks(&name, false))))
}

async fn framework_launch(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): CallerExt,
    Segment(name): Segment<FrameworkName>,
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
    Segment((name, id)): Segment<(FrameworkName, TaskId)>,
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
    Segment(name): Segment<FrameworkName>,
    Params(q): Params<EventsQuery>,
) -> Reply<FrameworkEvents> {
    let mut rx = ctl.subscribe_events();
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
    Segment((name, group, action)): Segment<(FrameworkName, String, String)>,
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
    let delegation = {
        let inner = ctl.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.keys.delegation_token(&name, now_millis())
    }
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLine {
    level: String,
    message: String,
}

/// A framework's line in the rack's event feed (e.g. a scaling decision).
async fn framework_log(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<FrameworkName>,
    Body(line): Body<LogLine>,
) -> Reply<serde_json::Value> {
    if !matches!(line.level.as_str(), "info" | "warning" | "error") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "level: expected info, warning or error, got {:?}",
                line.level
            ),
        ));
    }
    ctl.change(move |rack| {
        rack.framework(&name)?;
        let msg = format!("{name}: {}", line.message);
        rack.record("framework", &line.level, msg, None, None, now_millis());
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({})))
}

// ---------------------------------------------------------------------------------------------
// Services, groups, status

async fn status(State(ctl): State<Arc<Controller>>) -> Json<StatusView> {
    let mut view = ctl.read(|r| r.status());
    if ctl.access.insecure {
        view.warnings.push(
            "insecure: this controller checks no credentials; anyone who reaches it can run any command on any node".into(),
        );
    }
    if ctl.tls.is_none() {
        view.warnings.push(
            "plain HTTP: tokens and task specs cross the rack network unencrypted (start the controller with --ca-dir)".into(),
        );
    }
    Json(view)
}

async fn list_services(State(ctl): State<Arc<Controller>>) -> Json<Vec<ServiceView>> {
    Json(ctl.read(|r| r.services()))
}

async fn get_service(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<ServiceName>,
) -> Reply<ServiceView> {
    Ok(Json(ctl.read(|r| r.service(&name))?))
}

async fn delete_service(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let what = ctl
        .change(move |rack| rack.delete_service(&name, now_millis()))
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "result": what })),
    ))
}

async fn list_groups(State(ctl): State<Arc<Controller>>) -> Json<Vec<GroupView>> {
    Json(ctl.read(|r| r.groups()))
}

async fn start_group(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<ServiceName>,
) -> Reply<GroupView> {
    group_action(&ctl, name, true).await
}

async fn stop_group(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<ServiceName>,
) -> Reply<GroupView> {
    group_action(&ctl, name, false).await
}

/// Starts or stops a service group and answers with the group as it is now.
async fn group_action(ctl: &Arc<Controller>, name: ServiceName, start: bool) -> Reply<GroupView> {
    let view = ctl
        .change(move |rack| {
            if start {
                rack.start_group(&name, now_millis())?;
            } else {
                rack.stop_group(&name, now_millis())?;
            }
            rack.group(&name)
        })
        .await?;
    Ok(Json(view))
}

async fn list_announced(State(ctl): State<Arc<Controller>>) -> Json<Vec<OriginalTask>> {
    Json(ctl.read(|r| r.announced()))
}

pub(crate) async fn announce(
    State(ctl): State<Arc<Controller>>,
    Body(task): Body<OriginalTask>,
) -> Result<Json<torc_api::original::SimpleResponse>, ApiError> {
    ctl.change(move |rack| rack.announce(task, now_millis()))
        .await?;
    Ok(Json(torc_api::original::SimpleResponse {
        result: "done".into(),
    }))
}

async fn power(
    State(ctl): State<Arc<Controller>>,
    Segment(name): Segment<NodeName>,
    Body(req): Body<PowerRequest>,
) -> Reply<PowerResult> {
    Ok(Json(run_power(&ctl, &name, &req.action).await?))
}

/// Runs the configured power command for a node.
pub(crate) async fn run_power(
    ctl: &Controller,
    node: &NodeName,
    action: &str,
) -> Result<PowerResult, ApiError> {
    let (template, management_ip, origin) = ctl.read(|r| {
        let s = r.settings();
        let template = match action {
            "on" => Ok(s.power_on.clone()),
            "off" => Ok(s.power_off.clone()),
            other => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("action: expected \"on\" or \"off\", got {other:?}"),
            )),
        }?;
        let ip = r.node_view(node)?.management_ip;
        Ok::<_, ApiError>((template, ip, s.config_origin.clone()))
    })?;
    let template = template.ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("no power_command is configured in {origin}; add power_command.on and power_command.off to power nodes {action}"),
        )
    })?;
    let mut argv = Vec::new();
    for part in &template {
        if part.contains("{management_ip}") && management_ip.is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "node {node} has no management_ip in {origin}, which the power command needs"
                ),
            ));
        }
        argv.push(part.replace("{node}", node.as_str()).replace(
            "{management_ip}",
            &management_ip.map(|i| i.to_string()).unwrap_or_default(),
        ));
    }
    let (cmd, args) = argv.split_first().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("power_command.{action} is empty in {origin}"),
        )
    })?;
    let run = tokio::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("{cmd} did not finish in 60 s"),
            )
        })?
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("cannot run {cmd}: {e}")))?;
    let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
    output.push_str(&String::from_utf8_lossy(&out.stderr));
    let exit_code = out.status.code().unwrap_or(-1);
    tracing::info!(%node, action, exit_code, "power command ran");
    if !out.status.success() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "power {action} of {node}: {cmd} exited with {exit_code}: {}",
                output.trim()
            ),
        ));
    }
    Ok(PowerResult {
        node: node.clone(),
        action: action.to_string(),
        command: argv,
        exit_code,
        output,
    })
}

// ---------------------------------------------------------------------------------------------
// The web UI: static assets compiled into the binary.

fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, content_type),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn ui_index() -> axum::response::Response {
    asset("text/html; charset=utf-8", include_str!("../ui/index.html"))
}

async fn ui_js() -> axum::response::Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../ui/app.js"),
    )
}

async fn ui_css() -> axum::response::Response {
    asset("text/css; charset=utf-8", include_str!("../ui/style.css"))
}

#[cfg(test)]
mod tests {
    use super::not_plainly_a_read as refused;

    #[test]
    fn only_plain_reads_pass_the_query_proxy() {
        for read in [
            "SELECT * FROM machine",
            "  select mean(x) from m;",
            "select * from machine where hostname = 'bladerunner1' limit 1000",
            "SHOW MEASUREMENTS",
            "SELECT * FROM /^cpu/ WHERE host =~ /web/",
        ] {
            assert_eq!(refused(read, false), None, "{read:?}");
        }
        assert_eq!(refused("list series", true), None);
        for write in [
            "DROP DATABASE torc",
            "select * from m; drop measurement m",
            "SHOW DATABASES; SELECT * FROM /--/; CREATE USER m WITH PASSWORD 'p' WITH ALL PRIVILEGES",
            "SELECT * FROM /'/; CREATE DATABASE x; SELECT * FROM /'/",
            "SELECT mean(x) INTO other FROM m",
            "-- a comment\nDROP DATABASE torc",
            "/* x */ SELECT 1",
            "(drop database torc)",
            "delete from machine",
            "",
            // Conservative: a ';' even inside a string is refused to non-admins.
            "select * from machine where hostname = 'a;drop' limit 1",
        ] {
            assert!(refused(write, false).is_some(), "{write:?}");
        }
        assert!(refused("delete from machine", true).is_some());
        assert!(
            refused("show databases", true).is_some(),
            "0.8 has LIST, not SHOW"
        );
    }

    #[test]
    fn database_names_stay_names() {
        for ok in ["torc", "my_db-1", "a.b"] {
            assert!(super::plain_db_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../../query?q=x", "a/b", "a b", "a%2f"] {
            assert!(super::plain_db_name(bad).is_err(), "{bad}");
        }
    }
}

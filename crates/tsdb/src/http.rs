//! The HTTP API: InfluxDB 1.x (`/ping`, `/write`, `/query`), the 0.8 shim (`/db...`), and
//! torc's own `/metrics` (`crate::metrics`), `/torc/backup` and `/torc/restore`.
//!
//! Invariants: request bytes never cause a panic; every error is answered with InfluxDB's
//! status and JSON (`{"error":"..."}`) or, on the 0.8 endpoints, 0.8's plain-text message; the
//! server keeps serving after any bad request.
//!
//! Read-only GETs: a `GET /query` runs only `SELECT` and `SHOW` statements; a request holding
//! anything else is answered 405 (`Allow: POST`) naming the statement, and none of it runs.
//! influxd 1.6 runs such statements and only adds a warning to the result ("deprecated use of
//! '...' in a read only context, please use a POST request instead"); torc refuses them
//! because a rack's services must never change state on a GET (a link, a prefetch, a proxy
//! that forwards reads could otherwise drop a database, issue 14). The influx CLI and
//! InfluxDB's client libraries send changes with POST.
//!
//! Backups (torc's own, influxd has them on its RPC port): `POST /torc/backup?db=X` streams a
//! consistent backup of database X (of every database without `db`), see [`crate::backup`];
//! `POST /torc/restore?db=X&newdb=Y` restores one from the request body, see
//! [`crate::restore`]. A backup is a POST: taking its cut flushes the heads (no answer to a
//! query changes, but the disk does). With authentication, both need an admin (403 otherwise).
//!
//! gzip, as influxd 1.6 does it: a `/write` body with `Content-Encoding: gzip` is inflated
//! (bounded by [`MAX_BODY`] *after* inflation, so a gzip bomb is a 413, not an allocation;
//! damaged gzip is a 400 with Go's error text and writes nothing), and a successful `/query`
//! answer is gzip-compressed when `Accept-Encoding` mentions gzip.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::Error;
use crate::auth::{self, Caller, Denied};
use crate::exec;
use crate::form::parse_form;
use crate::influxql;
use crate::json::{self, Epoch};
use crate::lineproto::{self, Precision};
use crate::password::AuthError;
use crate::storage::{Tsdb, now_ns};
use crate::v08;

/// The version reported in `X-Influxdb-Version`.
pub const INFLUXDB_VERSION: &str = "1.6.7-torc";

/// Maximum request body (InfluxDB's default `max-body-size` is 25 MB).
pub const MAX_BODY: usize = 25_000_000;

/// Builds the router.
pub fn router(db: Arc<Tsdb>) -> Router {
    // `/query` and `/write` authenticate first, before their bodies are read (see `auth`);
    // `/metrics` too. Each request to the first two is counted for `/metrics`.
    let counters = Arc::new(crate::metrics::Counters::default());
    let counted = Router::new()
        .route("/write", post(write))
        .route("/query", get(query).post(query))
        .route_layer(axum::middleware::from_fn_with_state(
            counters.clone(),
            crate::metrics::count_requests,
        ));
    let authenticated = Router::new()
        .merge(counted)
        .route("/metrics", get(crate::metrics::serve))
        .route("/torc/backup", post(backup))
        .route(
            "/torc/restore",
            post(restore).layer(DefaultBodyLimit::disable()),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            db.clone(),
            authenticate,
        ));
    Router::new()
        .merge(authenticated)
        .route("/ping", get(ping).head(ping))
        .route("/db", get(v08_list).post(v08_create))
        .route("/db/{db}/series", get(v08_query).post(v08_write))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::Extension(counters))
        .with_state(db)
}

/// Serves plain HTTP until `shutdown` resolves: [`serve_tls`] without TLS.
pub async fn serve(
    listener: tokio::net::TcpListener,
    db: Arc<Tsdb>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(listener, db, None, shutdown).await
}

/// Serves (HTTPS when `tls` is given, as influxd's `https-enabled`) until `shutdown` resolves,
/// then flushes the heads into segments. Also runs the background work: size-triggered
/// flushes, the retention sweep (every [`crate::Options::retention_check_interval`]) and the
/// continuous queries (checked every [`crate::Options::cq_run_interval`], on a task of their
/// own, so that a long query delays no flush).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    db: Arc<Tsdb>,
    tls: Option<Arc<torc_tls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let bg = tokio::spawn(flushes_and_retention(db.clone(), stop_rx.clone()));
    let cqs = tokio::spawn(continuous_queries(db.clone(), stop_rx));
    let app = router(db.clone());
    let r = torc_tls::serve(listener, app, tls, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = bg.await;
    let _ = cqs.await;
    if let Err(e) = db.flush().await {
        tracing::error!(error = %e, "final flush failed");
    }
    r
}

/// Flushes the heads when a write asked for it (checked every 250 ms, or more often when the
/// retention check is set shorter) and drops expired data every retention check interval.
async fn flushes_and_retention(db: Arc<Tsdb>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = db
        .options()
        .retention_check_interval
        .max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every.min(Duration::from_millis(250)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_check = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if db.take_flush_request()
            && let Err(e) = db.flush().await
        {
            tracing::error!(error = %e, "flush failed");
        }
        if last_check.elapsed() >= every {
            last_check = Instant::now();
            if let Err(e) = db.enforce_retention().await {
                tracing::error!(error = %e, "retention sweep failed");
            }
        }
    }
}

/// Checks the continuous queries every run interval and runs the due ones (see [`crate::cq`]).
async fn continuous_queries(db: Arc<Tsdb>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let every = db.options().cq_run_interval.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut runner = crate::cq::Runner::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        runner.run_due(&db, now_ns()).await;
    }
}

fn with_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        "X-Influxdb-Version",
        HeaderValue::from_static(INFLUXDB_VERSION),
    );
    h.insert("X-Influxdb-Build", HeaderValue::from_static("OSS"));
    r
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    with_headers(r)
}

/// An error as influxd answers it: `{"error": msg}` and a newline, and the message again in
/// `X-Influxdb-Error` (its first 1024 bytes; a 401 carries `WWW-Authenticate` instead).
fn error_response(status: StatusCode, msg: &str) -> Response {
    // influxd's JSON encoder ends every body with a newline.
    let mut r = json_response(status, json::error_json(msg) + "\n");
    let h = r.headers_mut();
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"InfluxDB\""),
        );
    } else {
        let mut end = msg.len().min(1024);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        let text = msg[..end].replace(['\r', '\n'], " ");
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert("X-Influxdb-Error", v);
        }
    }
    r
}

/// Authenticates a `/query` or `/write` request and hands the [`Caller`] on to the handler.
async fn authenticate(
    State(db): State<Arc<Tsdb>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match auth::authenticate(&db, &query, authorization.as_deref()).await {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(Denied::Unauthenticated(msg)) => error_response(StatusCode::UNAUTHORIZED, msg),
        Err(Denied::Busy) => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &AuthError::Busy.to_string(),
        ),
    }
}

async fn ping() -> Response {
    with_headers(StatusCode::NO_CONTENT.into_response())
}

/// True when the request's `Content-Encoding` is gzip (Telegraf's default).
fn gzip_encoded(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"))
}

/// True when the client accepts a gzip response. Like influxd 1.6 (`gzipFilter`), any mention
/// of `gzip` in `Accept-Encoding` counts.
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("gzip"))
}

/// Why a gzip request body was refused. The texts of damaged or truncated gzip are what Go's
/// `compress/gzip` says, as influxd answers them.
#[derive(Debug, thiserror::Error)]
pub enum GunzipError {
    #[error("unexpected EOF")]
    Truncated,
    #[error("gzip: invalid header")]
    Header,
    #[error("gzip: invalid checksum")]
    Checksum,
    /// Any other damage; flate2's own words in parentheses.
    #[error("flate: corrupt input ({0})")]
    Corrupt(#[source] std::io::Error),
    /// The body inflates to more than the limit (a gzip bomb, or simply too much).
    #[error("http: request body too large")]
    TooLarge,
}

/// Inflates a gzip body (several members, as Go's reader accepts), refusing to produce more than
/// `limit` bytes: the bound applies to the *decompressed* size, so a small bomb cannot exhaust
/// memory.
pub fn gunzip_bounded(body: &[u8], limit: usize) -> Result<Vec<u8>, GunzipError> {
    use std::io::Read;
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit));
    let mut dec = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    match dec.read_to_end(&mut out) {
        Ok(_) if out.len() > limit => Err(GunzipError::TooLarge),
        Ok(_) => Ok(out),
        Err(e) => Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => GunzipError::Truncated,
            _ => {
                let t = e.to_string();
                if t.contains("header") {
                    GunzipError::Header
                } else if t.contains("checksum") || t.contains("CRC") || t.contains("crc") {
                    GunzipError::Checksum
                } else {
                    GunzipError::Corrupt(e)
                }
            }
        }),
    }
}

/// Gzip-compresses a response body (fast level: query latency matters more than bytes).
fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = enc.write_all(body);
    enc.finish().unwrap_or_default()
}

/// A body axum would not buffer (over [`MAX_BODY`], or cut short): InfluxDB's JSON error,
/// not axum's plain text.
fn body_rejected(r: axum::extract::rejection::BytesRejection) -> Response {
    if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "http: request body too large",
        )
    } else {
        error_response(r.status(), &r.body_text())
    }
}

async fn write(
    State(db): State<Arc<Tsdb>>,
    axum::Extension(caller): axum::Extension<Caller>,
    axum::Extension(counters): axum::Extension<Arc<crate::metrics::Counters>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // influxd's order: the database, then the caller's right to write, then the body.
    let params = parse_form(q.as_deref().unwrap_or(""));
    let dbname = params.get("db").map(String::as_str).unwrap_or("");
    if dbname.is_empty() {
        return error_response(StatusCode::BAD_REQUEST, "database is required");
    }
    if db.database(dbname).is_none() {
        return error_response(
            StatusCode::NOT_FOUND,
            &format!("database not found: {dbname:?}"),
        );
    }
    if let Err(e) = auth::authorize_write(&caller, dbname) {
        return error_response(StatusCode::FORBIDDEN, &e.to_string());
    }
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_rejected(r),
    };
    let body = if gzip_encoded(&headers) {
        match db.cpu_bound(|| gunzip_bounded(&body, MAX_BODY)).await {
            Ok(b) => Bytes::from(b),
            Err(e @ GunzipError::TooLarge) => {
                return error_response(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
            }
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &e.to_string()),
        }
    } else {
        body
    };
    let precision = Precision::parse(params.get("precision").map(String::as_str).unwrap_or(""));
    // Parsing a 5,000-line batch takes milliseconds: keep it off the async worker.
    let parsed = db
        .cpu_bound(|| lineproto::parse(&body, precision, now_ns()))
        .await;
    let parse_err = parsed.error_text();
    if parsed.points.is_empty() {
        return match parse_err {
            Some(e) => error_response(StatusCode::BAD_REQUEST, &e),
            None => with_headers(StatusCode::NO_CONTENT.into_response()),
        };
    }
    let rp = params
        .get("rp")
        .map(String::as_str)
        .filter(|r| !r.is_empty());
    let points = parsed.points.len();
    match db.write(dbname, rp, parsed.points).await {
        Ok(_) => {
            counters.points_written(points);
            match parse_err {
                None => with_headers(StatusCode::NO_CONTENT.into_response()),
                Some(e) => error_response(
                    StatusCode::BAD_REQUEST,
                    &format!("partial write: {e} dropped=0"),
                ),
            }
        }
        Err(e @ Error::PartialWrite { .. }) => {
            error_response(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(Error::DatabaseNotFound(d)) => {
            error_response(StatusCode::NOT_FOUND, &format!("database not found: {d:?}"))
        }
        Err(Error::RetentionPolicyNotFound(r)) => error_response(
            StatusCode::BAD_REQUEST,
            &format!("retention policy not found: {r}"),
        ),
        Err(e) => {
            tracing::error!(error = %e, "write failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

async fn query(
    State(db): State<Arc<Tsdb>>,
    axum::Extension(caller): axum::Extension<Caller>,
    method: Method,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    crate::sched::prefer_short_slice();
    let body = match body {
        Ok(b) => b,
        Err(r) => return body_rejected(r),
    };
    let mut params = parse_form(q.as_deref().unwrap_or(""));
    if method == Method::POST {
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if ct.starts_with("application/x-www-form-urlencoded") || ct.is_empty() {
            let form = parse_form(&String::from_utf8_lossy(&body));
            for (k, v) in form {
                params.entry(k).or_insert(v);
            }
        }
    }
    let Some(text) = params.get("q").filter(|q| !q.is_empty()) else {
        return error_response(StatusCode::BAD_REQUEST, "missing required parameter \"q\"");
    };
    let started = std::time::Instant::now();
    let stmts = match influxql::parse_query(text) {
        Ok(s) => s,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("error parsing query: {e}"),
            );
        }
    };
    // GETs never change state (see the module doc): the whole request is refused, before
    // anything of it runs.
    if method == Method::GET
        && let Some(stmt) = stmts.iter().find(|s| !s.is_read_only())
    {
        let mut r = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "'{stmt}' changes the database: not allowed in a read only context (GET), please use a POST request instead"
            ),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let default_db = params
        .get("db")
        .map(String::as_str)
        .filter(|d| !d.is_empty());
    if let Err(e) =
        auth::authorize_query(&caller, db.user_count(), &stmts, default_db.unwrap_or(""))
    {
        return error_response(
            StatusCode::FORBIDDEN,
            &format!("error authorizing query: {e}"),
        );
    }
    let parsed = started.elapsed();
    let results = exec::execute_as(&db, &stmts, default_db, &caller).await;
    let executed = started.elapsed();
    let epoch = Epoch::parse(params.get("epoch").map(String::as_str));
    let mut body = json::results_json(&results, epoch);
    if params.get("pretty").is_some_and(|p| p == "true") {
        body = json::pretty(&body);
    }
    body.push('\n');
    if query_timing_enabled() {
        let total = started.elapsed();
        eprintln!(
            "query timing: parse_us={} exec_us={} json_us={} bytes={} q={text:?}",
            parsed.as_micros(),
            (executed - parsed).as_micros(),
            (total - executed).as_micros(),
            body.len()
        );
    }
    if accepts_gzip(&headers) {
        // Not through `cpu_bound`: a query answer should not queue behind write batches.
        let bytes = crate::storage::blocking(|| gzip(body.as_bytes()));
        let mut r = json_response(StatusCode::OK, String::new());
        *r.body_mut() = axum::body::Body::from(bytes);
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        return r;
    }
    json_response(StatusCode::OK, body)
}

/// True when `TORC_TSDB_QUERY_TIMING` is set (to anything but `0`): each `/query` then prints
/// the time it spent parsing, executing and encoding on stderr. For finding where latency goes.
fn query_timing_enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var("TORC_TSDB_QUERY_TIMING").is_ok_and(|v| v != "0"))
}

fn v08_response(r: Result<(StatusCode, String), v08::V08Error>) -> Response {
    match r {
        Ok((status, body)) => json_response(status, body),
        Err(e) => {
            let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut r = (status, e.to_string()).into_response();
            let h = r.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            if status == StatusCode::UNAUTHORIZED {
                h.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"influxdb\""),
                );
            }
            with_headers(r)
        }
    }
}

/// Authenticates a 0.8 request (see [`v08::authenticate`]) and lets `check` refuse the caller.
async fn v08_caller(
    db: &Tsdb,
    q: &Option<String>,
    headers: &HeaderMap,
    check: impl FnOnce(&Caller) -> Result<(), v08::V08Error>,
) -> Result<Caller, Response> {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let caller = v08::authenticate(db, q.as_deref().unwrap_or(""), authorization)
        .await
        .map_err(|e| v08_response(Err(e)))?;
    check(&caller).map_err(|e| v08_response(Err(e)))?;
    Ok(caller)
}

async fn v08_list(
    State(db): State<Arc<Tsdb>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = v08_caller(&db, &q, &headers, v08::require_admin).await {
        return r;
    }
    let mut out = String::from("[");
    for (i, d) in db.databases().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json::write_str(&mut out, d);
        out.push('}');
    }
    out.push(']');
    v08_response(Ok((StatusCode::OK, out)))
}

async fn v08_create(
    State(db): State<Arc<Tsdb>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    if let Err(r) = v08_caller(&db, &q, &headers, v08::require_admin).await {
        return r;
    }
    let r = (|| {
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| v08::V08Error::Json(Arc::new(e)))?;
        let name = v
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
            .ok_or(v08::V08Error::CreateBody)?;
        if db.database(name).is_some() {
            return Err(v08::V08Error::DatabaseExists {
                name: name.to_string(),
            });
        }
        db.create_database(name)?;
        Ok((StatusCode::CREATED, String::new()))
    })();
    v08_response(r)
}

async fn v08_query(
    State(db): State<Arc<Tsdb>>,
    Path(dbname): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    crate::sched::prefer_short_slice();
    let caller = match v08_caller(&db, &q, &headers, |c| v08::require_db_user(c, &dbname)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params = parse_form(q.as_deref().unwrap_or(""));
    let Some(text) = params.get("q").filter(|q| !q.is_empty()) else {
        return v08_response(Err(v08::V08Error::NoQuery));
    };
    let r = v08::query(
        &db,
        &caller,
        &dbname,
        text,
        params.get("time_precision").map(String::as_str),
    )
    .await;
    v08_response(r.map(|b| (StatusCode::OK, b)))
}

async fn v08_write(
    State(db): State<Arc<Tsdb>>,
    Path(dbname): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    let caller = match v08_caller(&db, &q, &headers, |c| v08::require_db_user(c, &dbname)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let params = parse_form(q.as_deref().unwrap_or(""));
    if db.database(&dbname).is_none() {
        return v08_response(Err(v08::V08Error::NoDatabase { database: dbname }));
    }
    let points = match v08::parse_write(
        &body,
        params.get("time_precision").map(String::as_str),
        now_ns(),
    ) {
        Ok(p) => p,
        Err(e) => return v08_response(Err(e)),
    };
    if let Err(e) = v08::require_write(&caller, &dbname, &points) {
        return v08_response(Err(e));
    }
    let r = match db.write(&dbname, None, points).await {
        Ok(_) => Ok((StatusCode::OK, String::new())),
        Err(e) => Err(v08::V08Error::Storage(e)),
    };
    v08_response(r)
}

/// Backups and restores need an admin when authentication is on: the refusal otherwise.
fn refuse_non_admin(caller: &Caller, what: &str) -> Option<Response> {
    match caller {
        Caller::Open => None,
        Caller::User(u) if u.admin => None,
        Caller::User(u) => Some(error_response(
            StatusCode::FORBIDDEN,
            &format!(
                "{} not authorized to {what}, requires admin privilege",
                u.name
            ),
        )),
        Caller::Anonymous => Some(error_response(
            StatusCode::UNAUTHORIZED,
            "create admin user first or disable authentication",
        )),
    }
}

/// Most bytes of a restore's body read and dropped after a non-admin's refusal, and after a
/// refused file (the restore stops reading at the first error).
const REFUSED_DRAIN_LIMIT: usize = 64 << 20;
const RESTORE_DRAIN_LIMIT: usize = 1 << 30;

/// Reads and drops what is left of a request body, up to `limit` bytes, so that a client still
/// sending it gets to read the answer: hyper closes a connection whose request body was not
/// read, and a client that is writing then sees a reset instead of the refusal. Past the limit
/// the connection is closed anyway. TODO-cleanup: a refusal by the authentication layer
/// (401) does not drain, so a client sending a large body with wrong credentials may see a
/// reset.
async fn drain(chunks: &mut axum::body::BodyDataStream, limit: usize) {
    use tokio_stream::StreamExt as _;
    let mut left = limit;
    while let Some(Ok(c)) = chunks.next().await {
        if c.len() >= left {
            break;
        }
        left -= c.len();
    }
}

/// A non-empty parameter of the URL's query.
fn param(q: &Option<String>, name: &str) -> Option<String> {
    parse_form(q.as_deref().unwrap_or(""))
        .get(name)
        .filter(|v| !v.is_empty())
        .cloned()
}

/// `POST /torc/backup[?db=X]`: the backup file, streamed (see [`crate::backup`]).
async fn backup(
    State(db): State<Arc<Tsdb>>,
    axum::Extension(caller): axum::Extension<Caller>,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = refuse_non_admin(&caller, "back up databases") {
        return r;
    }
    let only = param(&q, "db");
    match crate::backup::stream(&db, only.as_deref()).await {
        Ok(rx) => {
            let body =
                axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
            let mut r = Response::new(body);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            with_headers(r)
        }
        Err(e @ Error::DatabaseNotFound(_)) => {
            error_response(StatusCode::NOT_FOUND, &e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "backup failed");
            error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
        }
    }
}

/// `POST /torc/restore[?db=X[&newdb=Y]]`: restores the backup in the body (see
/// [`crate::restore`]); answers `{"restored": [...]}`.
async fn restore(
    State(db): State<Arc<Tsdb>>,
    axum::Extension(caller): axum::Extension<Caller>,
    RawQuery(q): RawQuery,
    body: axum::body::Body,
) -> Response {
    use crate::restore::{ChannelReader, RestoreError, Selection};
    use tokio_stream::StreamExt as _;
    let mut chunks = body.into_data_stream();
    if let Some(r) = refuse_non_admin(&caller, "restore databases") {
        drain(&mut chunks, REFUSED_DRAIN_LIMIT).await;
        return r;
    }
    let sel = Selection {
        db: param(&q, "db"),
        newdb: param(&q, "newdb"),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let feed = tokio::spawn(async move {
        while let Some(c) = chunks.next().await {
            let c = c.map_err(std::io::Error::other);
            let failed = c.is_err();
            if tx.send(c).await.is_err() || failed {
                break;
            }
        }
        drain(&mut chunks, RESTORE_DRAIN_LIMIT).await;
    });
    let result = crate::restore::restore(db, ChannelReader::new(rx), sel).await;
    let _ = feed.await;
    match result {
        Ok(restored) => json_response(
            StatusCode::OK,
            serde_json::json!({ "restored": restored }).to_string() + "\n",
        ),
        Err(e) => {
            let status = match &e {
                RestoreError::Backup(_) | RestoreError::NewDbWithoutDb => StatusCode::BAD_REQUEST,
                RestoreError::Storage(Error::Name(_)) => StatusCode::BAD_REQUEST,
                RestoreError::NotInBackup { .. } => StatusCode::NOT_FOUND,
                RestoreError::Storage(Error::DatabaseExists(_)) => StatusCode::CONFLICT,
                RestoreError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if status.is_server_error() {
                tracing::error!(error = %e, "restore failed");
            }
            error_response(status, &e.to_string())
        }
    }
}

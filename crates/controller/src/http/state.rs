//! The UI's state browser: the rack's state store (the running `etcd` service) listed, changed
//! and watched over `/api/v1/kv`, through the controller's etcd client (`crate::kv`), logged
//! in as the rack config's `access.etcd` user.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

use super::error::{ApiError, Reply, bad_gateway};
use super::extract::{Body, Query};
use super::longpoll::MAX_WAIT;
use super::proxy::service_endpoint;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/kv", get(kv_list).put(kv_put).delete(kv_delete))
        .route("/api/v1/kv/watch", get(kv_watch))
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

impl KvQuery {
    /// A change names its key.
    fn require_key(&self) -> Result<(), ApiError> {
        if self.key.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "missing query parameter `key`",
            ));
        }
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KvValue {
    value: String,
}

/// The rack's state store and the controller's client of it (logged in as `access.etcd`).
fn kv_client(ctl: &Controller) -> Result<(String, torc_kv_client::Client), ApiError> {
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
    Query(q): Query<KvQuery>,
) -> Reply<crate::kv::KvListing> {
    let (url, client) = kv_client(&ctl)?;
    crate::kv::list(&client, &url, &q.prefix)
        .await
        .map(Json)
        .map_err(kv_error)
}

async fn kv_put(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<KvQuery>,
    Body(v): Body<KvValue>,
) -> Reply<serde_json::Value> {
    q.require_key()?;
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
    Query(q): Query<KvQuery>,
) -> Reply<serde_json::Value> {
    q.require_key()?;
    let (_, client) = kv_client(&ctl)?;
    let revision = crate::kv::delete(&client, &q.key).await.map_err(kv_error)?;
    Ok(Json(
        serde_json::json!({ "key": q.key, "revision": revision }),
    ))
}

/// Long poll: answers when something under `prefix` changed after revision `after`.
async fn kv_watch(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<KvQuery>,
) -> Reply<crate::kv::KvChange> {
    let (_, client) = kv_client(&ctl)?;
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    crate::kv::wait_change(&client, &q.prefix, q.after, wait)
        .await
        .map(Json)
        .map_err(kv_error)
}

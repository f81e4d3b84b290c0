//! The rack's names: the DNS snapshot the DNS role long-polls for (`GET /api/v1/dns`) and the
//! UI's lookup box, which asks the rack's own DNS server (`GET /api/v1/dns/lookup`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use torc_api::SnapshotQuery;

use super::error::{ApiError, Reply};
use super::extract::Query;
use super::longpoll::MAX_WAIT;
use super::proxy::service_addr;
use crate::controller::Controller;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/dns", get(dns_snapshot))
        .route("/api/v1/dns/lookup", get(dns_lookup))
}

async fn dns_snapshot(
    State(ctl): State<Arc<Controller>>,
    Query(q): Query<SnapshotQuery>,
) -> Json<torc_api::dns::DnsSnapshot> {
    let wait = Duration::from_millis(q.wait_ms.unwrap_or(0)).min(MAX_WAIT);
    let numbered = ctl.names.next(q.epoch, q.after, wait).await;
    let mut names = numbered.doc;
    names.epoch = numbered.epoch;
    names.generation = numbered.generation;
    Json(names)
}

/// Where the running service named `service` answers on `port`.

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
    Query(q): Query<LookupQuery>,
) -> Reply<crate::lookup::Lookup> {
    let dns = service_addr(&ctl, "dns", 53)?;
    crate::lookup::lookup(dns, &q.name, &q.rtype)
        .await
        .map(Json)
        .map_err(ApiError::from)
}

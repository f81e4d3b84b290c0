//! Images on a node (design `docs/design/containers.md` §5): each route is its agent's
//! `/v1/images` route, reached through the controller (the table is `torc_api::images`'s).
//!
//! | route | agent | who |
//! |---|---|---|
//! | `GET /api/v1/nodes/{name}/images` | `GET /v1/images` | viewer |
//! | `POST /api/v1/nodes/{name}/images/pull` | `POST /v1/images/pull` (NDJSON lines, streamed back) | admin |
//! | `POST /api/v1/nodes/{name}/images/import[?name=]` | `POST /v1/images/import` (the body streamed on) | admin |
//! | `DELETE /api/v1/nodes/{name}/images?reference=[&force=]` | `DELETE /v1/images` | admin |
//!
//! Before an agent is asked: an unknown node is 404, an inactive one 503, one whose agent
//! said it cannot run containers 409 with its reason, and a reference that is not one
//! (`ImageRef`) 422. The controller adds the rack's registry login to a pull (`RegistryAuth`,
//! from `containers.registries` and a rack secret); a caller's own is refused.
//!
//! Invariants: neither the pull's answer nor the import's body is held whole (both stream
//! through); an import never passes more than `containers.import_max_mb` to the agent, and a
//! larger one is answered 413 naming the bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body as RawBody;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio_stream::StreamExt as _;
use torc_api::images::{ImportQuery, Imported, NodeImages, PullRequest, RemoveQuery, Removed};
use torc_types::{ImageRef, NodeName};

use super::error::{ApiError, Reply};
use super::extract::{Body, Path, Query};
use super::proxy::{decode, forward, send};
use crate::controller::Controller;

/// A pull may take the rack's pull timeout; the agent answers its own timeout within it, so
/// the controller waits a little longer.
const PULL_MARGIN: Duration = Duration::from_secs(30);
/// An upload of up to `import_max_mb` (2 GiB by default) from a slow link, and its unpack.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(3600);
/// Removing an image makes containerd collect its blobs and snapshots synchronously.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route(
            "/api/v1/nodes/{name}/images",
            get(list_images).delete(remove_image),
        )
        .route("/api/v1/nodes/{name}/images/pull", post(pull_image))
        .route("/api/v1/nodes/{name}/images/import", post(import_image))
}

/// Where the node's agent answers, once the node is known, active and able to run
/// containers.
fn image_agent(ctl: &Controller, node: &NodeName) -> Result<String, ApiError> {
    let view = ctl.read(|r| r.node_view(node))?;
    if !view.active {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} is inactive; its agent cannot be asked"),
        ));
    }
    if !view.runtime.containers {
        let why = (view.runtime.containers_note.as_deref())
            .unwrap_or("this agent runs no containers (an agent older than containers)");
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("node {node} cannot run containers: {why}"),
        ));
    }
    view.agent_url.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("node {node} has no agent address (its agent never registered)"),
        )
    })
}

/// A reference as the API takes it (`field` names where it came from): normalised, or 422
/// naming what is wrong.
fn image_ref(field: &str, text: &str) -> Result<ImageRef, ApiError> {
    ImageRef::parse(text)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: {e}")))
}

fn who(node: &NodeName) -> String {
    format!("agent on {node}")
}

async fn list_images(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
) -> Reply<NodeImages> {
    let url = image_agent(&ctl, &node)?;
    let req = ctl
        .http
        .get(format!("{url}/v1/images"))
        .bearer_auth(&ctl.own_token);
    decode(forward(req, &who(&node)).await?, &who(&node))
}

async fn remove_image(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Query(query): Query<RemoveQuery>,
) -> Reply<Removed> {
    image_ref("reference", &query.reference)?;
    let url = image_agent(&ctl, &node)?;
    let req = ctl
        .http
        .delete(format!("{url}/v1/images"))
        .bearer_auth(&ctl.own_token)
        .query(&query)
        .timeout(REMOVE_TIMEOUT);
    decode(forward(req, &who(&node)).await?, &who(&node))
}

/// The agent's NDJSON progress lines, passed through as they come; the agent's refusal
/// (before any line) is ours.
async fn pull_image(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Body(mut pull): Body<PullRequest>,
) -> Result<Response, ApiError> {
    if pull.registry.is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "registry: the controller adds the rack's registry login (containers.registries in the rack config, its password a rack secret); a request may not bring its own",
        ));
    }
    let image = image_ref("reference", &pull.reference)?;
    let url = image_agent(&ctl, &node)?;
    pull.registry = ctl.registry_auth(&image);
    let timeout = ctl.read(|r| r.settings().containers.pull_timeout());
    pull.timeout_seconds = Some(timeout.as_secs());
    let timeout = timeout + PULL_MARGIN;
    let req = ctl
        .http
        .post(format!("{url}/v1/images/pull"))
        .bearer_auth(&ctl.own_token)
        .json(&pull)
        .timeout(timeout);
    let who = who(&node);
    let resp = send(req, &who).await?;
    let lines = resp.bytes_stream().map(move |chunk| {
        chunk.map_err(|e| {
            let e = e.without_url();
            tracing::warn!(agent = %who, error = %e, "a pull's answer broke off");
            std::io::Error::other(format!("{who}: {e}"))
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        RawBody::from_stream(lines),
    )
        .into_response())
}

/// `chunks` as they come, until more than `limit` bytes have: then an error ends the stream,
/// and `over` says why.
fn bounded<E: Into<Box<dyn std::error::Error + Send + Sync>>>(
    chunks: impl tokio_stream::Stream<Item = Result<axum::body::Bytes, E>>,
    limit: u64,
    over: Arc<AtomicBool>,
) -> impl tokio_stream::Stream<Item = Result<axum::body::Bytes, std::io::Error>> {
    let mut sent = 0u64;
    chunks.map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        sent += chunk.len() as u64;
        if sent > limit {
            over.store(true, Ordering::SeqCst);
            return Err(std::io::Error::other(format!(
                "the archive is over the import limit ({limit} bytes)"
            )));
        }
        Ok(chunk)
    })
}

/// The archive, streamed to the agent as it arrives, at most `containers.import_max_mb`.
async fn import_image(
    State(ctl): State<Arc<Controller>>,
    Path(node): Path<NodeName>,
    Query(query): Query<ImportQuery>,
    headers: HeaderMap,
    body: RawBody,
) -> Reply<Imported> {
    if let Some(name) = &query.name {
        image_ref("name", name)?;
    }
    let max_mb = ctl.read(|r| r.settings().containers.import_max_mb);
    let limit = max_mb.saturating_mul(1 << 20);
    let too_big = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the archive is larger than this rack's import limit, {max_mb} MiB (containers.import_max_mb in the rack config)"
            ),
        )
    };
    let declared = (headers.get(header::CONTENT_LENGTH))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_big());
    }
    let url = image_agent(&ctl, &node)?;
    // The body goes on as it comes; past the limit the stream ends in an error, which breaks
    // the agent's request, and the caller is told why.
    let over = Arc::new(AtomicBool::new(false));
    let stream = bounded(body.into_data_stream(), limit, Arc::clone(&over));
    let mut req = ctl
        .http
        .post(format!("{url}/v1/images/import"))
        .bearer_auth(&ctl.own_token)
        .query(&query)
        .header(header::CONTENT_TYPE, "application/x-tar")
        .timeout(IMPORT_TIMEOUT)
        .body(reqwest::Body::wrap_stream(stream));
    if let Some(n) = declared {
        req = req.header(header::CONTENT_LENGTH, n);
    }
    let result = forward(req, &who(&node)).await;
    if over.load(Ordering::SeqCst) {
        return Err(too_big());
    }
    decode(result?, &who(&node))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_archive_past_the_limit_ends_in_an_error() {
        let chunks = |sizes: &[usize]| {
            let items: Vec<Result<axum::body::Bytes, std::io::Error>> = (sizes.iter())
                .map(|n| Ok(axum::body::Bytes::from(vec![0u8; *n])))
                .collect();
            tokio_stream::iter(items)
        };
        let over = Arc::new(AtomicBool::new(false));
        let got: Vec<_> = bounded(chunks(&[4, 4, 2]), 10, Arc::clone(&over))
            .collect()
            .await;
        assert!(got.iter().all(Result::is_ok));
        assert!(!over.load(Ordering::SeqCst));
        let got: Vec<_> = bounded(chunks(&[4, 4, 3, 1]), 10, Arc::clone(&over))
            .collect()
            .await;
        assert_eq!(got.iter().filter(|c| c.is_ok()).count(), 2);
        assert_eq!(
            got[2].as_ref().unwrap_err().to_string(),
            "the archive is over the import limit (10 bytes)"
        );
        assert!(over.load(Ordering::SeqCst));
    }
}

//! Reaching the rack's peers for a caller: a node's agent (metrics, task logs), a framework's
//! own API, and the running system services the UI's back ends talk to (etcd, influxdb, dns).
//! A peer's error comes back as ours: its status and words, prefixed with who said them.
//!
//! Invariant: an answer the controller holds whole is bounded (`MAX_PROXIED_BYTES`), so one
//! huge answer cannot grow the controller's memory; what `send` gives is streamed on by its
//! caller (an image pull's progress), never held whole.

use axum::Json;
use axum::http::StatusCode;
use torc_types::NodeName;

use super::error::{ApiError, Reply, bad_gateway};
use crate::controller::Controller;

/// Most bytes of an answer the controller passes on from an agent, the tsdb or a framework.
const MAX_PROXIED_BYTES: usize = 32 << 20;

pub(super) fn service_addr(
    ctl: &Controller,
    service: &str,
    port: u16,
) -> Result<std::net::SocketAddr, ApiError> {
    service_endpoint(ctl, service, port).map(|(addr, _)| addr)
}

/// Where the running service named `service` answers on `port`, and whether it serves TLS.
pub(super) fn service_endpoint(
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

pub(super) async fn agent_get<T: serde::de::DeserializeOwned, Q: serde::Serialize>(
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
    let who = format!("agent on {node}");
    decode(forward(req, &who).await?, &who)
}

/// A peer's JSON answer as the type it should be.
pub(super) fn decode<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    who: &str,
) -> Reply<T> {
    serde_json::from_value(value)
        .map(Json)
        .map_err(|e| bad_gateway(format!("{who} sent an unreadable answer: {e}")))
}

/// An error answer of a peer as ours: its status and words (at most 64 KiB of them), prefixed
/// with `who`.
pub(super) async fn forward_error(mut resp: reqwest::Response, who: &str) -> ApiError {
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

/// Sends a request to a peer and gives its answer when it is a success (to stream it on);
/// its error status and words come back as ours, prefixed with `who`.
pub(super) async fn send(
    req: reqwest::RequestBuilder,
    who: &str,
) -> Result<reqwest::Response, ApiError> {
    let resp = req
        .send()
        .await
        .map_err(|e| bad_gateway(format!("{who} did not answer: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(forward_error(resp, who).await);
    }
    Ok(resp)
}

/// Sends a request to a peer (an agent, the tsdb, a framework) and passes its JSON answer on;
/// its error status and words come back as ours, prefixed with `who`.
pub(super) async fn forward(
    req: reqwest::RequestBuilder,
    who: &str,
) -> Result<serde_json::Value, ApiError> {
    let mut resp = send(req, who).await?;
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

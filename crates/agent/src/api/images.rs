//! The node's images (`/v1/images`, see `torc_api::images`): list (any reader), pull (NDJSON
//! progress, then the outcome), import (the archive streamed as the body) and remove (admins,
//! in practice the controller, which adds the rack's registry credentials and bounds imports).
//! A node whose agent runs no containers answers 409 with the reason.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use torc_api::images::{
    ImportQuery, Imported, NodeImage, NodeImages, PullLine, PullRequest, RemoveQuery, Removed,
};
use torc_containerd::images::ImageInfo;
use torc_types::{ImageRef, TaskId, TaskState};

use crate::agent::Agent;
use crate::container::{ContainerError, ContainerRuntime, PullStatus};
use crate::reply::error;

/// The most bytes one import reads (the controller's `containers.import_max_mb` is the
/// operator's bound; this one only keeps a direct caller from filling the disk).
const IMPORT_MAX: u64 = 16 << 30;
/// How long a refused import's body is read on, to answer the caller rather than reset it.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// A refusal before any work: its status and words.
type Refusal = (StatusCode, String);

fn refused((status, message): Refusal) -> Response {
    error(status, message)
}

fn engine(agent: &Agent) -> Result<Arc<ContainerRuntime>, Refusal> {
    let node = &agent.cfg.node;
    match &agent.runtime.containers {
        Ok(c) => match c.ready() {
            Ok(()) => Ok(Arc::clone(c)),
            Err(e) => Err((StatusCode::CONFLICT, format!("node {node}: {e}"))),
        },
        Err(why) => Err((
            StatusCode::CONFLICT,
            format!("node {node}: containers: unavailable: {why}"),
        )),
    }
}

fn failed(e: ContainerError) -> Response {
    let status = match &e {
        ContainerError::Unavailable(_) | ContainerError::InUse { .. } => StatusCode::CONFLICT,
        ContainerError::NoImage(_) => StatusCode::NOT_FOUND,
        ContainerError::BadReference(_) | ContainerError::Import(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::BAD_GATEWAY,
    };
    error(status, e.to_string())
}

/// The live tasks of the node whose container uses each image.
fn users(agent: &Agent) -> Vec<(String, TaskId)> {
    agent
        .snapshot()
        .into_iter()
        .filter(|t| matches!(t.state, TaskState::Running | TaskState::Staging))
        .filter_map(|t| Some((t.spec.container?.image.to_string(), t.id)))
        .collect()
}

fn node_image(info: &ImageInfo, users: &[(String, TaskId)]) -> NodeImage {
    NodeImage {
        name: info.name.clone(),
        digest: info.target.digest.clone(),
        size: info.size,
        created_at: info.created_at.and_then(|t| {
            let ms = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
            u64::try_from(ms).ok()
        }),
        used_by: users
            .iter()
            .filter(|(image, _)| *image == info.name)
            .map(|(_, id)| id.clone())
            .collect(),
    }
}

pub(super) async fn list(State(agent): State<Arc<Agent>>) -> Response {
    let c = match engine(&agent) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    match c.list_images().await {
        Ok(images) => {
            let users = users(&agent);
            Json(NodeImages {
                node: agent.cfg.node.clone(),
                images: images.iter().map(|i| node_image(i, &users)).collect(),
            })
            .into_response()
        }
        Err(e) => failed(e),
    }
}

fn reference(text: &str) -> Result<ImageRef, Refusal> {
    ImageRef::parse(text).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))
}

/// Newline-delimited JSON: progress lines as the pull goes, then `pulled` or `failed`. The
/// pull goes on to its end if the caller goes away (the node then has the image).
pub(super) async fn pull(
    State(agent): State<Arc<Agent>>,
    body: Result<Json<PullRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(req) = match body {
        Ok(b) => b,
        Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e.body_text()),
    };
    let image = match reference(&req.reference) {
        Ok(i) => i,
        Err(r) => return refused(r),
    };
    let c = match engine(&agent) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PullLine>();
    tokio::spawn(async move {
        let started = Instant::now();
        let progress_tx = tx.clone();
        let progress = |status: PullStatus| {
            let _ = progress_tx.send(PullLine::Progress {
                fetched: status.fetched,
                total: status.total,
                message: status.message,
            });
        };
        let timeout = req.timeout_seconds.map(std::time::Duration::from_secs);
        let line = match c
            .pull(&image, req.registry.as_ref(), timeout, &progress)
            .await
        {
            Ok(pulled) => match c.list_images().await {
                Ok(list) => {
                    let users = users(&agent);
                    match list.iter().find(|i| i.name == pulled.name) {
                        Some(info) => PullLine::Pulled {
                            image: node_image(info, &users),
                            fetched: pulled.fetched,
                            millis: started.elapsed().as_millis() as u64,
                        },
                        None => PullLine::Failed {
                            error: format!("{} was pulled but is not listed", pulled.name),
                        },
                    }
                }
                Err(e) => PullLine::Failed {
                    error: e.to_string(),
                },
            },
            Err(e) => PullLine::Failed {
                error: e.to_string(),
            },
        };
        let _ = tx.send(line);
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut text = serde_json::to_vec(&line).expect("a pull line serialises");
        text.push(b'\n');
        Some((Ok::<_, std::io::Error>(text), rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response()
}

/// A blocking reader of a request body, fed by the async side through a bounded channel (the
/// importer reads archives on a blocking thread, where `blocking_recv` may wait).
struct BodyReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<bytes::Bytes>>,
    current: bytes::Bytes,
}

impl std::io::Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

pub(super) async fn import(
    State(agent): State<Arc<Agent>>,
    query: Result<Query<ImportQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    let name = match query.name.as_deref().map(reference).transpose() {
        Ok(n) => n,
        Err(r) => return refused(r),
    };
    let c = match engine(&agent) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let started = Instant::now();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let feeder = {
        let counted = Arc::clone(&counted);
        tokio::spawn(async move {
            let mut stream = body.into_data_stream();
            let mut receiving = true;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(std::io::Error::other);
                if let Ok(c) = &chunk {
                    let total = counted
                        .fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed)
                        + c.len() as u64;
                    if total > IMPORT_MAX {
                        let _ = tx
                            .send(Err(std::io::Error::other(format!(
                                "the archive is larger than {} GiB",
                                IMPORT_MAX >> 30
                            ))))
                            .await;
                        return;
                    }
                }
                let failed = chunk.is_err();
                if failed {
                    let _ = tx.send(chunk).await;
                    return;
                }
                // Once the importer stopped (it refused the archive), the rest is read and
                // dropped: the caller, who is still sending, then gets the answer, not a
                // connection reset.
                if receiving && tx.send(chunk).await.is_err() {
                    receiving = false;
                }
            }
        })
    };
    let result = c
        .import(
            BodyReader {
                rx,
                current: bytes::Bytes::new(),
            },
            name.as_ref(),
        )
        .await;
    // The body's end (bounded by IMPORT_MAX, and by the caller's pace).
    if tokio::time::timeout(DRAIN_TIMEOUT, feeder).await.is_err() {
        tracing::warn!("an import's caller kept sending after the import ended; answering anyway");
    }
    let names: Vec<String> = match result {
        Ok(imported) => imported.into_iter().map(|i| i.name).collect(),
        Err(e) => return failed(e),
    };
    let list = match c.list_images().await {
        Ok(l) => l,
        Err(e) => return failed(e),
    };
    let users = users(&agent);
    Json(Imported {
        node: agent.cfg.node.clone(),
        images: list
            .iter()
            .filter(|i| names.contains(&i.name))
            .map(|i| node_image(i, &users))
            .collect(),
        bytes: counted.load(std::sync::atomic::Ordering::Relaxed),
        millis: started.elapsed().as_millis() as u64,
    })
    .into_response()
}

pub(super) async fn remove(
    State(agent): State<Arc<Agent>>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())),
    };
    let image = match reference(&query.reference) {
        Ok(i) => i,
        Err(r) => return refused(r),
    };
    let c = match engine(&agent) {
        Ok(c) => c,
        Err(r) => return refused(r),
    };
    let users: Vec<TaskId> = users(&agent)
        .into_iter()
        .filter(|(i, _)| i == image.as_str())
        .map(|(_, id)| id)
        .collect();
    match c.remove_image(image.as_str(), &users, query.force).await {
        Ok(freed) => Json(Removed {
            node: agent.cfg.node.clone(),
            name: image.to_string(),
            blobs: freed.blobs,
            bytes: freed.bytes,
            snapshots: freed.snapshots,
        })
        .into_response(),
        Err(e) => failed(e),
    }
}

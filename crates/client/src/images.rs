//! The controller's image routes (`/api/v1/nodes/{name}/images…`, design
//! `docs/design/containers.md` §5; the wire types are `torc_api::images`): list, pull (an
//! NDJSON stream of [`PullLine`]s, read as it comes), import (the archive streamed from a
//! file as the request body) and remove.

use std::path::Path;
use std::time::Duration;

use reqwest::Method;
use torc_api::images::{
    ImportQuery, Imported, NodeImages, PullLine, PullRequest, RemoveQuery, Removed,
};
use torc_types::NodeName;

use crate::{Client, ClientError};

/// A pull in progress: its answer's lines, one at a time.
#[derive(Debug)]
pub struct PullStream {
    url: String,
    response: reqwest::Response,
    /// Bytes received after the last complete line.
    buffer: Vec<u8>,
    /// Whether the `pulled` or `failed` line was read.
    ended: bool,
}

impl PullStream {
    /// The next line of the pull: progress lines, then exactly one `pulled` or `failed`;
    /// `None` after that. An answer cut off before its last line is
    /// [`ClientError::Transport`] or, when the stream ended cleanly, [`ClientError::Decode`].
    pub async fn next(&mut self) -> Option<Result<PullLine, ClientError>> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(end) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=end).collect();
                let line = line.trim_ascii();
                if line.is_empty() {
                    continue;
                }
                let parsed =
                    serde_json::from_slice::<PullLine>(line).map_err(|e| ClientError::Decode {
                        url: self.url.clone(),
                        message: format!("{e} in the line {:?}", String::from_utf8_lossy(line)),
                    });
                self.ended = matches!(
                    parsed,
                    Err(_) | Ok(PullLine::Pulled { .. } | PullLine::Failed { .. })
                );
                return Some(parsed);
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => {
                    self.ended = true;
                    if self.buffer.trim_ascii().is_empty() {
                        return Some(Err(ClientError::Decode {
                            url: self.url.clone(),
                            message: "the pull's answer ended before its result line".into(),
                        }));
                    }
                    // A last line without its newline.
                    self.buffer.push(b'\n');
                    self.ended = false;
                }
                Err(source) => {
                    self.ended = true;
                    return Some(Err(ClientError::Transport {
                        url: self.url.clone(),
                        source,
                    }));
                }
            }
        }
    }
}

/// How long a pull may take before the client gives up on the answer (the agent's own pull
/// timeout, `containers.pull_timeout_in_seconds`, is 300 s by default).
const PULL_TIMEOUT: Duration = Duration::from_secs(900);
/// How long an import may take (an archive of 2 GiB at ~10 MB/s, and the unpack).
const IMPORT_TIMEOUT: Duration = Duration::from_secs(900);

impl Client {
    /// The images a node holds.
    pub async fn node_images(&self, node: &NodeName) -> Result<NodeImages, ClientError> {
        self.get(&format!("/api/v1/nodes/{node}/images")).await
    }

    /// Starts pulling `reference` on `node`; the answer's lines come from the stream. An
    /// error status (the node cannot run containers: 409; not an admin: 403) is an error here.
    pub async fn pull_image(
        &self,
        node: &NodeName,
        reference: &str,
    ) -> Result<PullStream, ClientError> {
        let body = PullRequest {
            reference: reference.to_string(),
            registry: None,
            timeout_seconds: None,
        };
        let (url, response) = self
            .execute(
                Method::POST,
                &format!("/api/v1/nodes/{node}/images/pull"),
                |r| Ok(r.json(&body).timeout(PULL_TIMEOUT)),
            )
            .await?;
        Ok(PullStream {
            url,
            response,
            buffer: Vec::new(),
            ended: false,
        })
    }

    /// Imports the image archive at `archive` (OCI or docker) into `node`, streaming the file
    /// as the body; `name` names an image the archive names only by a tag.
    pub async fn import_image(
        &self,
        node: &NodeName,
        archive: &Path,
        name: Option<&str>,
    ) -> Result<Imported, ClientError> {
        let query = ImportQuery {
            name: name.map(str::to_string),
        };
        // Each attempt streams the file from its start (an attempt is sent again only when
        // it certainly did not run: refused, or a standby's 421).
        let (url, response) = self
            .execute(
                Method::POST,
                &format!("/api/v1/nodes/{node}/images/import"),
                |req| {
                    let file = std::fs::File::open(archive).map_err(|e| ClientError::File {
                        path: archive.to_path_buf(),
                        source: e,
                    })?;
                    let length = file.metadata().ok().map(|m| m.len());
                    let mut req = req
                        .query(&query)
                        .header(reqwest::header::CONTENT_TYPE, "application/x-tar")
                        .timeout(IMPORT_TIMEOUT);
                    if let Some(length) = length {
                        req = req.header(reqwest::header::CONTENT_LENGTH, length);
                    }
                    Ok(req.body(reqwest::Body::from(tokio::fs::File::from_std(file))))
                },
            )
            .await?;
        crate::decode(url, response).await
    }

    /// Removes `reference` from `node`; `force` even while tasks use it.
    pub async fn remove_image(
        &self,
        node: &NodeName,
        reference: &str,
        force: bool,
    ) -> Result<Removed, ClientError> {
        let query = RemoveQuery {
            reference: reference.to_string(),
            force,
        };
        self.send(
            Method::DELETE,
            &format!("/api/v1/nodes/{node}/images"),
            |r| r.query(&query),
        )
        .await
    }
}

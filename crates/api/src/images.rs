//! Images on nodes (design `docs/design/containers.md` §5): what an agent's `/v1/images`
//! routes and the controller's `/api/v1/nodes/{name}/images` routes take and answer.
//!
//! | agent | controller | who |
//! |---|---|---|
//! | `GET /v1/images` → [`NodeImages`] | `GET /api/v1/nodes/{n}/images` | viewer |
//! | `POST /v1/images/pull` [`PullRequest`] → NDJSON [`PullLine`]s | `POST /api/v1/nodes/{n}/images/pull` [`PullRequest`] (the controller adds the rack's [`RegistryAuth`] for the image's host) | admin |
//! | `POST /v1/images/import[?name=REF]` the archive as the body → [`Imported`] | `POST /api/v1/nodes/{n}/images/import[?name=REF]` (streamed, at most `containers.import_max_mb`) | admin |
//! | `DELETE /v1/images?reference=REF[&force=true]` → [`Removed`] | `DELETE /api/v1/nodes/{n}/images?reference=REF[&force=true]` | admin |
//!
//! A node whose agent cannot run containers answers each with 409 and its reason
//! (`containers: unavailable: …`).

use serde::{Deserialize, Serialize};
use torc_types::{NodeName, TaskId, UnixMillis};

/// A registry credential, from the rack config's `containers.registries`, handed to an agent
/// for one pull (in a pull request, or in a container task's [`DesiredTask`]). The agent
/// never writes it to disk. `Debug` hides the password.
///
/// [`DesiredTask`]: crate::DesiredTask
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuth {
    /// The registry host as image references name it (`registry.example.com:5000`).
    pub host: String,
    /// With `password`, Basic (or token) credentials; both empty: anonymous, only the
    /// `insecure` flag matters.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub password: String,
    /// Plain HTTP (loopback registries are plain HTTP without it, as containerd and Docker
    /// treat them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("host", &self.host)
            .field("user", &self.user)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<hidden>"
                },
            )
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// `POST …/images/pull`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// The image, as written (normalised by the agent: `busybox` is
    /// `docker.io/library/busybox:latest`).
    pub reference: String,
    /// Set by the controller only: a caller's own is refused there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryAuth>,
    /// How long the pull may take (`containers.pull_timeout_in_seconds`), set by the
    /// controller; the agent's own default (300 s) without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// One line of a pull's answer (newline-delimited JSON): progress lines, then exactly one
/// `pulled` or `failed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PullLine {
    /// Bytes fetched so far of what the image needs (`total` 0 until the manifest is read),
    /// and the phase in words (`fetching`, `unpacking layer 2 of 3`).
    Progress {
        fetched: u64,
        total: u64,
        message: String,
    },
    Pulled {
        image: NodeImage,
        /// Bytes fetched from the registry (0 when the node had every blob).
        fetched: u64,
        millis: u64,
    },
    Failed {
        error: String,
    },
}

/// An image as a node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImage {
    /// Normalised name (`docker.io/torc/busybox:1`).
    pub name: String,
    /// What the name points at (a manifest or an index).
    pub digest: String,
    /// Bytes of its manifest, config and layers for this node's platform, as stored.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<UnixMillis>,
    /// The tasks on the node whose container uses it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub used_by: Vec<TaskId>,
}

/// `GET …/images`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeImages {
    pub node: NodeName,
    pub images: Vec<NodeImage>,
}

/// `POST …/images/import?name=REF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    /// The name to give an archive that names its image only by a tag, or not at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// What an import made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imported {
    pub node: NodeName,
    pub images: Vec<NodeImage>,
    /// Archive bytes read.
    pub bytes: u64,
    pub millis: u64,
}

/// `DELETE …/images?reference=REF&force=true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    pub reference: String,
    /// Remove it even while tasks use it (their containers keep their snapshots).
    #[serde(default)]
    pub force: bool,
}

/// What removing an image freed: what containerd collected because nothing else used it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Removed {
    pub node: NodeName,
    pub name: String,
    pub blobs: usize,
    pub bytes: u64,
    pub snapshots: usize,
}

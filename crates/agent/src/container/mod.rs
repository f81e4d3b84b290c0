//! The container runtime (issue 17; design `docs/design/containers.md` §6): tasks with an
//! image run on containerd, driven through `torc-containerd`.

use std::path::PathBuf;

/// Where the agent's container engine answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerdConfig {
    /// containerd's gRPC socket (`/run/containerd/containerd.sock` on a real node).
    pub socket: PathBuf,
    /// The containerd namespace the agent's containers, images and snapshots live in (`torc`
    /// on a real node, `torc-<slug>-<node>` on a local rack).
    pub namespace: String,
}

/// The system containerd's socket, the agent's default.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";
/// The namespace a real node's agent uses.
pub const DEFAULT_NAMESPACE: &str = "torc";

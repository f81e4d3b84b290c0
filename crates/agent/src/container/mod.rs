//! The container runtime (issue 17; design `docs/design/containers.md` §6): tasks with an
//! image run on containerd, driven through `torc-containerd`.
//!
//! - [`ContainerRuntime`] (`runtime`): the agent's second `Runtime`. A container's id is its
//!   task id; its output goes to the sandbox's `stdout` and `stderr`, capped and rotated by
//!   `torc` run as containerd's logging program (`logfiles::container_log`; the shim appends
//!   to the files uncapped only when the agent has no torc binary, as in unit tests); its cgroup is `/torc/<containerd namespace>/<task id>` in every hierarchy, where
//!   runc enforces `cpus` and `mem` on cgroup v1 and v2 alike; its end is recorded in the
//!   sandbox (with `oom` read from the cgroup's counter, before the cgroup goes) and then its
//!   task, container and snapshot are removed. An agent that restarts finds its containers by
//!   id (`Tasks.Get`) and adopts them with the same pid.
//! - `spec`: the OCI runtime spec, a pure function of the task, the image's config and what
//!   the agent prepared.
//! - `cgroups`: where a container's cgroup files are on this node.
//! - [`Engine`]: whether containerd can run containers here, in words
//!   (`RuntimeInfo.containers_note`).
//!
//! Invariants:
//! - a task id runs at most once as a container: a container of it that runs is adopted, one
//!   that ran is never started again, one that was created but never started is removed and
//!   started over (nothing of it ran);
//! - a failed start leaves no task, container or snapshot behind;
//! - stops and kills signal the container's processes directly (the init process, then every
//!   process of its cgroup), so they work while containerd is away.

mod cgroups;
mod runtime;
pub mod spec;

use std::path::PathBuf;

use torc_containerd::Client;

pub use cgroups::Hierarchies;
pub use runtime::{ContainerError, ContainerRuntime, PullStatus};

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

/// Whether this node's containerd runs containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineState {
    /// Not asked yet.
    Unknown,
    /// Ready: `containerd 1.6.20, runc, cgroup v1 (hybrid)`.
    Ready(String),
    /// Why not, in words.
    Unavailable(String),
}

/// The capability probe: containerd's version, its overlayfs snapshotter, runc, cgroups.
pub struct Engine;

impl Engine {
    pub async fn probe(client: &Client, cfg: &ContainerdConfig, cgroups: &str) -> EngineState {
        let socket = cfg.socket.display();
        if !nix::unistd::geteuid().is_root() {
            return EngineState::Unavailable(format!(
                "the agent is not root; containers need root (containerd at {socket})"
            ));
        }
        let version = match client.version().await {
            Ok(v) => v,
            Err(e) if !cfg.socket.exists() => {
                tracing::debug!(error = %e, "containerd");
                return EngineState::Unavailable(format!(
                    "no containerd answers at {socket}: no such socket (install Debian's \
                     containerd, or give --containerd)"
                ));
            }
            Err(e) => {
                return EngineState::Unavailable(format!(
                    "no containerd answers at {socket}: {e} (is it running?)"
                ));
            }
        };
        match version.major_minor() {
            Some(v) if v >= (1, 6) => {}
            _ => {
                return EngineState::Unavailable(format!(
                    "containerd {} at {socket}: 1.6 or later is needed",
                    version.version
                ));
            }
        }
        match client
            .plugins(&["type==io.containerd.snapshotter.v1"])
            .await
        {
            Ok(plugins) => match plugins.iter().find(|p| p.id == torc_containerd::OVERLAYFS) {
                Some(p) if p.init_error.is_some() => {
                    return EngineState::Unavailable(format!(
                        "containerd at {socket}: its overlayfs snapshotter is not usable: {}",
                        p.init_error.clone().unwrap_or_default()
                    ));
                }
                Some(_) => {}
                None => {
                    return EngineState::Unavailable(format!(
                        "containerd at {socket}: it has no overlayfs snapshotter"
                    ));
                }
            },
            Err(e) => return EngineState::Unavailable(e.to_string()),
        }
        if torc_containerd::daemon::which("runc").is_none() {
            return EngineState::Unavailable(
                "runc is not installed (containerd's shim runs it: install Debian's runc)".into(),
            );
        }
        EngineState::Ready(format!("containerd {}, runc, {cgroups}", version.version))
    }
}

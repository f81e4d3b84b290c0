//! The torc agent: one per node (the seed's Mesos agent). It registers the node and its
//! resources with the controller, runs the tasks the controller assigns to it, reports every
//! transition, and serves the tasks' sandboxes (stdout/stderr) on its own small API.
//!
//! How it talks to the controller: it long-polls for its node's desired task set (a whole
//! document numbered `(epoch, generation)`) and reconciles: starts what is new and marked for
//! launch, stops what is no longer wanted. A document of an epoch below the one it follows (its
//! registration's leader's, or a higher one applied since) is a deposed leader's late answer:
//! ignored, so it never stops a task (`torc_api::order::Floor`). It reports its full task list right after every change and on
//! every heartbeat, so a lost report is repaired by the next one.
//!
//! Invariants:
//! - A task id is started at most once on a node, even across agent restarts and crashes. The
//!   agent keeps its task table, and the ids it retired, in its data dir; a new task is
//!   recorded as starting and the table saved *before* its shim is spawned, and while the table
//!   cannot be saved no task is started (each is reported failed, with the reason). A shim
//!   holds a lock of its task from its fork to its end, so the next agent tells a task whose
//!   shim runs (adopted) from one that never started or ended (settled from its exit record, or
//!   lost), and a task whose shim runs is never started again. The table's lock is never held
//!   across a runtime's await (`Runtime::start`, `find` and `ended` are async, as a container
//!   engine's calls are): a task is started without it and stays recorded as starting until
//!   its outcome is recorded; a task killed, or an agent that began to shut down, before its
//!   start is not started, and one killed during its start is stopped once started
//!   (`stop_all` waits for tasks still starting).
//! - Retired ids (tasks whose end the controller acknowledged) are remembered up to
//!   `RETIRED_KEPT` (10,000), oldest forgotten first. Past that, an old id is refused only
//!   because the controller never reuses a task id nor asks to launch a task that ended.
//! - A task the controller believes running but the agent does not know is reported lost, never
//!   started again.
//! - Nothing is started from a desired set read after the controller may have declared the node
//!   inactive (its last acknowledged report sent more than 3/4 of the node timeout ago: a
//!   partition, a freeze; see `lease`): the answer may have waited in a socket, naming tasks
//!   the rack lost and replaced since. The agent waits until a report is acknowledged again
//!   (or it has registered again, after which the controller's fresh answer stops its surplus).
//! - Tasks outlive an agent restart (each runs under its own shim) and are re-adopted.
//! - No process of a task outlives its shim's end or the agent's hard kill; a SIGKILL of the
//!   shim from elsewhere takes only the task's main process with it (see `shim`).
//! - A `network: rack` task's network namespace (its own address, a veth to the node, the
//!   node's route to it) lives exactly as long as its shim and the processes under it: the
//!   shim enters it before anything else and the agent keeps no handle on it (see `network`).
//!   The agent never picks an address: it checks the one the controller sent.

mod agent;
mod api;
pub mod container;
mod dispatch;
mod lease;
pub mod logfiles;
pub mod metrics;
mod network;
mod reply;
pub mod runtime;
pub mod shim;
mod upkeep;

pub use agent::{Agent, AgentConfig, StartError, detect_resources};
pub use container::ContainerdConfig;
pub use runtime::TaskUser;

impl Agent {
    /// Serves the agent API on `listener` and keeps in touch with the controller until
    /// `shutdown` completes.
    pub async fn run(
        self: std::sync::Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = api::router(std::sync::Arc::clone(&self));
        self.run_with(listener, app, shutdown).await
    }
}

//! The torc agent: one per node (the seed's Mesos agent). It registers the node and its
//! resources with the controller, runs the tasks the controller assigns to it, reports every
//! transition, and serves the tasks' sandboxes (stdout/stderr) on its own small API.
//!
//! How it talks to the controller: it long-polls for its node's desired task set (a whole
//! document with a generation) and reconciles: starts what is new and marked for launch, stops
//! what is no longer wanted. It reports its full task list right after every change and on
//! every heartbeat, so a lost report is repaired by the next one.
//!
//! Invariants:
//! - A task id is started at most once on a node, even across agent restarts (the agent keeps
//!   its task table, and the ids it retired, in its data dir).
//! - A task the controller believes running but the agent does not know is reported lost, never
//!   started again.
//! - Tasks outlive an agent restart (each runs under its own shim) and are re-adopted.

mod agent;
mod api;
pub mod metrics;
pub mod runtime;
pub mod shim;

pub use agent::{Agent, AgentConfig, StartError, detect_resources};
pub use runtime::TaskUser;

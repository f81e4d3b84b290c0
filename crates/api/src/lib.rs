//! Wire types of torc's HTTP APIs: the controller's `/api/v1` and the agent protocol.
//!
//! Only data shapes live here, no behaviour: the controller, the agent, the client library and
//! the CLI all speak through these structs, so a field renamed here is renamed everywhere.
//! Every struct rejects unknown fields so that a typo in a request is an error, not a no-op.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use torc_types::{
    FrameworkName, NodeName, PortRange, Resources, ServiceName, TaskId, TaskSpec, TaskState,
    UnixMillis,
};

/// The body of every error answer: `{"error": "...", "status": 404}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub status: u16,
}

/// Header that carries the bearer token for calls that change the rack.
pub const AUTHORIZATION: &str = "authorization";

// ---------------------------------------------------------------------------------------------
// Nodes

/// A node as the controller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    pub name: NodeName,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_ip: Option<IpAddr>,
    /// `master` or `slave`.
    pub node_type: String,
    /// `controller`, `compute`, ...
    pub node_function: String,
    pub active: bool,
    /// Whether an agent has ever registered for this node.
    pub registered: bool,
    /// Last time the agent was heard from (0 = never).
    pub last_seen: UnixMillis,
    /// Where the node's agent API answers (`http://ip:5051`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_url: Option<String>,
    pub resources: NodeResources,
    pub port_range: PortRange,
    pub attributes: BTreeMap<String, String>,
    /// What the agent's runtime can enforce (e.g. why cgroup limits are not applied).
    pub runtime: RuntimeInfo,
    /// Tasks holding resources on this node.
    pub tasks: usize,
}

/// Total vs allocated resources of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeResources {
    pub total: Resources,
    pub allocated: Resources,
    pub ports_allocated: usize,
}

/// What an agent's task runtime is and can do.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeInfo {
    /// `process` today; a container runtime would name itself here.
    pub kind: String,
    /// Whether cpu and memory limits are enforced with cgroup v2.
    pub limits_enforced: bool,
    /// When limits are not enforced, why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_note: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// A task as the controller sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskView {
    pub id: TaskId,
    pub name: ServiceName,
    pub framework: FrameworkName,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    /// Ports assigned from the node's range, in `PORT0`, `PORT1`, ... order.
    pub ports: Vec<u16>,
    pub spec: TaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The last word on the task: why it is pending, why it failed, ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
    pub history: Vec<Transition>,
}

/// One state change in a task's life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub state: TaskState,
    pub at: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /api/v1/tasks`: launch an ad-hoc task. The spec is the whole body.
pub type LaunchRequest = TaskSpec;

/// `GET /api/v1/tasks` filters.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<FrameworkName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<ServiceName>,
}

/// Which of a task's output files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    #[default]
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// Query of a log read: the last `tail` bytes, or everything after `offset` (to follow).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    #[serde(default)]
    pub stream: LogStream,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A piece of a task's output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogChunk {
    pub task: TaskId,
    pub stream: LogStream,
    /// Byte offset of `data` in the file.
    pub offset: u64,
    /// Where the next read should start (`offset` plus the bytes read).
    pub next_offset: u64,
    /// The file's size when read.
    pub size: u64,
    /// The bytes, lossily decoded as UTF-8.
    pub data: String,
}

// ---------------------------------------------------------------------------------------------
// Frameworks

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkView {
    pub name: FrameworkName,
    /// The built-in scheduler, or a registered sub-scheduler.
    pub builtin: bool,
    pub active: bool,
    /// Task counts by state name, for the states that have any.
    pub tasks: BTreeMap<String, usize>,
}

// ---------------------------------------------------------------------------------------------
// Agent protocol

/// `POST /api/v1/agents/register`: an agent (re)joins. Carries everything the agent is running,
/// so that a controller that restarted can reconcile with the truth.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub node: NodeName,
    pub ip: IpAddr,
    pub agent_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_function: Option<String>,
    pub resources: Resources,
    pub port_range: PortRange,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub runtime: RuntimeInfo,
    /// Every task the agent knows, running or ended and not yet acknowledged.
    pub tasks: Vec<TaskReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// How often the agent must report (its heartbeat).
    pub heartbeat_interval_ms: u64,
}

/// `POST /api/v1/agents/{node}/status`: task transitions and the heartbeat. With `full`, the
/// list is everything the agent runs, and the controller marks the rest of the node's tasks lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub tasks: Vec<TaskReport>,
    #[serde(default)]
    pub full: bool,
}

/// What the agent knows of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskReport {
    pub id: TaskId,
    /// `running`, `finished`, `failed`, `killed` or `lost`.
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub at: UnixMillis,
}

/// `GET /api/v1/agents/{node}/desired?after=G`: the whole set of tasks the node must run, with
/// a generation. The call waits until the generation is newer than `after` (long poll). An
/// agent ignores a document older than the one it has applied.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    pub generation: u64,
    pub tasks: Vec<DesiredTask>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredTask {
    pub id: TaskId,
    pub spec: TaskSpec,
    pub ports: Vec<u16>,
    /// True while the controller waits for the start (staging): the agent may launch it. A
    /// task the controller believes running is never launched again, only adopted.
    pub launch: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredQuery {
    #[serde(default)]
    pub after: u64,
    /// Longest wait in milliseconds (capped by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

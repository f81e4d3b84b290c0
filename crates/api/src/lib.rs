//! Wire types of torc's HTTP APIs: the controller's `/api/v1`, the agent protocol, and the
//! rack's names as the controller serves them to the DNS server ([`dns`]).
//!
//! Only data shapes live here (with what serde checks when reading them), and one rule of the
//! protocol ([`order`]: how followers order the documents numbered `(epoch, generation)`, pure):
//! the controller, the agent, the client library, the DNS server and the CLI all speak through
//! these structs, so a field renamed here is renamed everywhere.
//! Request bodies and queries, the messages between the controller and its agents (the
//! agent protocol, the network agent's snapshot and report, both ways) and the DNS snapshot
//! reject unknown fields, so that a typo is an error, not a no-op; the other answers (views,
//! metrics, events, the original API's nodes) accept them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use torc_types::{
    FrameworkName, Ipv4Block, NodeName, NodeType, PortRange, Resources, ServiceName, TaskId,
    TaskSpec, TaskState, UnixMillis,
};

/// The body of every error answer: `{"error": "...", "status": 404}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub status: u16,
}

/// Header that carries the bearer token.
pub const AUTHORIZATION: &str = "authorization";

/// The message of a task its agent stopped because the agent itself shut down (a rack stopped,
/// killed or restarted), reported with the state `killed`: the controller restarts such a
/// service instance at once, as no failure of its own (`rack::supervisor`).
pub const AGENT_SHUTDOWN_STOP: &str = "stopped: its agent shut down";

/// Header in which a controller that does not act names the leader (on its `421`, its stale
/// reads, and the answers it passes back from the leader).
pub const LEADER_HEADER: &str = "torc-leader";

/// Header (`true`) that marks an answer from a controller that does not act: possibly stale.
pub const STALE_HEADER: &str = "torc-stale";

// ---------------------------------------------------------------------------------------------
// Credentials

/// The roles a token can be created with (`POST /api/v1/tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRole {
    /// May do anything.
    Admin,
    /// May read everything and change nothing.
    Viewer,
    /// May only register agents (each registration mints that node's own credential).
    Join,
    /// May act for one framework (`framework` names it).
    Framework,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: TokenRole,
    /// A name to recognise it by in `torc token list` (e.g. who holds it).
    pub name: String,
    /// For `framework` tokens: the framework it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<FrameworkName>,
    /// Seconds until it expires; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

/// A credential as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    /// `admin`, `viewer`, `join`, `node`, `framework`.
    pub role: String,
    /// The node or framework it acts for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub created_at: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
}

/// The answer to `POST /api/v1/tokens`: the token itself, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenCreated {
    pub token: String,
    #[serde(flatten)]
    pub view: TokenView,
}

/// `POST /api/v1/auth/review`: who holds a token (asked by agents about their callers, and by
/// frameworks about theirs).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    /// The token to check; empty for a caller that presented none.
    pub token: String,
}

/// Who holds the token reviewed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewResponse {
    pub authenticated: bool,
    /// May read everything (admin, viewer, a task's viewer token, anyone in insecure mode).
    pub reads_all: bool,
    /// May change anything.
    pub admin: bool,
    /// The controller itself, passing on a change an admin asked of it (it checked the caller
    /// and bounds the change): what an agent's image routes accept besides an admin.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub controller: bool,
    /// The controller passing on an admin's action to this framework's own API (and good for
    /// nothing else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delegate_for: Option<FrameworkName>,
    /// How to name the holder in logs (never the secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

/// `POST /api/v1/session`: log the web UI in with a token.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub token: String,
}

/// Who the current session or token is (`GET /api/v1/session`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionView {
    pub subject: String,
    pub admin: bool,
    pub reads_all: bool,
    /// When the session ends (sessions only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// The controller runs without credentials.
    pub insecure: bool,
}

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
    pub node_type: NodeType,
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
    /// The addresses its `network: rack` tasks get (from the rack config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_block: Option<Ipv4Block>,
    /// Where people reach the node from outside the rack network, when that is not `ip`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<IpAddr>,
    pub attributes: BTreeMap<String, String>,
    /// What the agent's runtime can enforce (e.g. why cgroup limits are not applied).
    pub runtime: RuntimeInfo,
    /// Tasks holding resources on this node.
    pub tasks: usize,
    /// Cordoned (`torc node cordon`): no new task is placed on it; its tasks keep running.
    #[serde(default)]
    pub cordoned: bool,
    /// Its last drain (`torc node drain`), going on or done; `None` when never drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainView>,
    /// What its power command last did and said (`torc node power`); `None` when never run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerView>,
}

/// A node's drain: its movable tasks (instances of services not pinned to the node) moved
/// elsewhere one at a time, each replacement running before the old task is killed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrainView {
    pub started_at: UnixMillis,
    /// When every movable task had left (`None`: going on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_at: Option<UnixMillis>,
    /// Why it ended before its tasks had left (the node was uncordoned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Tasks moved so far.
    pub moved: u32,
    /// The move in progress: `<instance>: <old task> -> <replacement> (<its state>[ on <node>])`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<String>,
    /// Movable tasks still on the node (the one moving included).
    pub to_move: usize,
    /// Why the drain does not progress (no room elsewhere, a replacement that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Live tasks the drain leaves on the node, each with why (pinned to it, a job, a
    /// framework's or a task launched directly).
    #[serde(default)]
    pub left: Vec<String>,
}

/// What a node's power command last did, and the power state its last `status` said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerView {
    /// From the last `status` (`None`: never asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PowerState>,
    /// When `state` was read.
    #[serde(default)]
    pub state_at: UnixMillis,
    /// The last action run, whatever it was.
    pub last: PowerResult,
}

torc_types::words! {
    /// A node's power as its `status` command said: the last word of its output (`Chassis
    /// Power is on`), `unknown` when that is neither or the command failed.
    pub enum PowerState as "power state" {
        On = "on",
        Off = "off",
        Unknown = "unknown",
    }
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
    /// `process`: the node's task runtime (containers, when it runs them, are `containers`).
    pub kind: String,
    /// Whether process tasks' cpu and memory limits are enforced with cgroup v2 (containers'
    /// are enforced by their engine wherever they run).
    pub limits_enforced: bool,
    /// When limits are not enforced, why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_note: Option<String>,
    /// Whether the agent gives `network: rack` tasks a network namespace of their own.
    #[serde(default)]
    pub rack_network: bool,
    /// When it does not, why, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_network_note: Option<String>,
    /// Whether the agent runs container tasks (a container engine answers it).
    #[serde(default)]
    pub containers: bool,
    /// The engine when it does (`containerd 1.6.20, runc 1.1.5, cgroup v1 (hybrid)`), why not
    /// when it does not, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers_note: Option<String>,
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
    /// Byte offset of `data` in the stream (past `offset` asked for when that was rotated
    /// away meanwhile).
    pub offset: u64,
    /// Where the next read should start (`offset` plus the bytes read).
    pub next_offset: u64,
    /// The end of the output when read: every byte the task wrote to the stream (offsets
    /// count from the task's first byte, across rotated files).
    pub size: u64,
    /// The oldest offset still kept (older output was rotated away). Absent from an agent
    /// before rotation: 0.
    #[serde(default)]
    pub kept_from: u64,
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
    /// Registered and within its failover timeout.
    pub active: bool,
    /// Task counts by state name, for the states that have any.
    pub tasks: BTreeMap<String, usize>,
    /// How long the framework may be silent before its tasks are killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout_ms: Option<u64>,
    #[serde(default)]
    pub registered_at: UnixMillis,
    /// Last time the framework polled for its events.
    #[serde(default)]
    pub last_seen: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The framework's own API (the original's port-3005 API), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// `POST /api/v1/frameworks`: register, or re-register after a restart (same name).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkRegistration {
    pub name: FrameworkName,
    /// Default: 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout_ms: Option<u64>,
    /// The framework's own API with the original's group calls (`GET /start/group?name=`,
    /// `DELETE /service?name=`); the controller forwards `/api/v1/frameworks/{name}/groups/...`
    /// there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// The answer to a registration: the framework and every task it still has.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkRegistered {
    pub framework: FrameworkView,
    pub tasks: Vec<TaskView>,
}

/// `GET /api/v1/frameworks/{name}/events`: task updates after `after` in this controller's
/// `epoch`. Waits up to `wait_ms` for one.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub after: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// Task updates for a framework. With `reset`, `tasks` is every task the framework has (its
/// position was unknown: a new controller epoch, or it fell too far behind); otherwise each
/// entry is a task that changed, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FrameworkEvents {
    pub epoch: u64,
    /// Position to pass as `after` next time.
    pub seq: u64,
    pub reset: bool,
    pub tasks: Vec<TaskView>,
}

// ---------------------------------------------------------------------------------------------
// Services (system services and service groups)

/// One instance of a supervised service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceView {
    /// The instance name (`pcp-wedge`, `hello-0`): its task name and DNS name.
    pub name: ServiceName,
    /// The service's name in the config.
    pub service: ServiceName,
    /// `system`, or the name of its service group.
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TaskState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub ports: Vec<u16>,
    /// Its tasks get a certificate from the rack CA (`credentials.tls`): it serves TLS.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    pub health: Health,
    /// When the next start is due (restart back-off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_start_at: Option<UnixMillis>,
    /// Why it is not running, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    pub is_job: bool,
    pub metered: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub at: UnixMillis,
    pub message: String,
}

/// The health of a service instance's current task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// `none` (no check configured), `unknown` (not checked yet), `healthy`, `unhealthy`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default)]
    pub checked_at: UnixMillis,
}

/// A service group of the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupView {
    pub name: ServiceName,
    pub services: Vec<ServiceName>,
    /// Instances of the group that exist now (started and not stopped).
    pub instances: Vec<ServiceView>,
}

/// `GET /api/v1/status`: the scheduler at a glance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusView {
    pub rack: String,
    /// Things an operator must know about how this controller runs (e.g. `--insecure`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub started_at: UnixMillis,
    pub nodes_total: usize,
    pub nodes_active: usize,
    pub services: Vec<ServiceStatus>,
    pub frameworks: Vec<FrameworkView>,
    /// Services whose changed spec is being rolled out (or back), one instance at a time,
    /// and those whose last rollout was rolled back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<RolloutView>,
}

/// A service's rollout: its instances replaced one at a time by tasks of the new spec, the
/// next only once the last is healthy (`GET /api/v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub service: ServiceName,
    /// `system`, or the group its instances were started from.
    pub origin: String,
    /// Instances on the rollout's target spec and healthy.
    pub step: usize,
    /// Instances of the service.
    pub of: usize,
    /// `rolling`, `rolling back` or `rolled back`.
    pub state: String,
    /// The instance being replaced now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<ServiceName>,
    /// Why it waits, or why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: UnixMillis,
}

/// `POST /api/v1/config` (`torc apply`, and the controller's SIGHUP): what a new rack config
/// changes against the one applied, and whether it was applied (not on a dry run).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub dry_run: bool,
    /// Services the new config adds (started), as `NAME` (a system service) or `GROUP/NAME`.
    pub added: Vec<String>,
    /// Services it removes (stopped; their data kept until `torc service purge`).
    pub removed: Vec<String>,
    /// Services whose definition changed, with the keys that changed.
    pub changed: Vec<ChangedService>,
    /// Top-level keys that changed but apply only when the controller restarts.
    pub needs_restart: Vec<String>,
}

/// A service whose definition changed: which of its keys (`args`, `env`, `health`, ...).
/// `rollout` when its tasks' spec changed, so its instances are replaced one at a time;
/// otherwise (a health check, restart timers) the change applies at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangedService {
    pub service: String,
    pub fields: Vec<String>,
    pub rollout: bool,
}

/// A service of the config with all its instances.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: ServiceName,
    pub origin: String,
    pub desired: usize,
    pub running: usize,
    pub healthy: usize,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Failure>,
    pub instances: Vec<ServiceView>,
}

/// `POST /api/v1/nodes/{name}/power`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerRequest {
    pub action: PowerAction,
}

torc_types::words! {
    /// What a power command does to a node.
    pub enum PowerAction as "power action" {
        On = "on",
        Off = "off",
        /// Asks the node's power state (`power_command.status`, e.g. `ipmitool ... chassis
        /// power status`); changes nothing on the node.
        Status = "status",
    }
}

/// What one run of a power command did. A run that failed (a non-zero exit, a timeout, a
/// program that could not start) is answered as an error, and kept on the node as this with
/// `ok: false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerResult {
    pub node: NodeName,
    pub action: PowerAction,
    pub command: Vec<String>,
    /// `None` when it did not exit (killed at its deadline, or never started).
    pub exit_code: Option<i32>,
    /// Its stdout then stderr (at most 4 KiB kept), or why it did not run.
    pub output: String,
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub at: UnixMillis,
    /// For `status`: the state its output says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PowerState>,
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
    pub node_type: Option<NodeType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_function: Option<String>,
    pub resources: Resources,
    pub port_range: PortRange,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub runtime: RuntimeInfo,
    /// Every task the agent knows, running or ended and not yet acknowledged.
    pub tasks: Vec<TaskReport>,
    /// The node's public key (P-256, uncompressed, hex) when it wants a certificate from the
    /// rack CA. The node keeps the private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterResponse {
    /// The epoch of the leader that registered the node (a durable write on the acting
    /// leader): the agent's floor, below which it ignores desired states ([`order::Floor`]).
    /// 0 from a controller before epochs, whose documents carry 0 too.
    #[serde(default)]
    pub epoch: u64,
    /// How often the agent must report (its heartbeat).
    pub heartbeat_interval_ms: u64,
    /// The node timeout (`stateclean.timeout_in_seconds`): silent for longer, the node is
    /// declared inactive and its tasks lost. The agent starts nothing from a desired set read
    /// once it may have been (its lease). Absent from a controller before it: the agent takes
    /// 4 heartbeat intervals (the controller's interval is a quarter of it, or less).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_timeout_ms: Option<u64>,
    /// The node's own credential, when this registration minted one (it came with a join
    /// token): every later call of the agent carries it. Shown once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
    /// The node's certificate (PEM) for the public key it sent, valid for its address and
    /// `<node>.<domain>`: its client certificate towards the controller and its agent API's
    /// server certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// What the node keeps of its tasks' output and ended sandboxes (the rack config's
    /// `logs`). Absent from a controller before it: the agent takes the built-in defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upkeep: Option<Upkeep>,
}

/// The rack's rules for what a node keeps on its disk (the rack config's `logs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upkeep {
    /// The rack's cap of a task's output files (a task's own `logs` overrides it).
    pub logs: torc_types::LogCap,
    /// Sandboxes of ended tasks kept per service (the newest).
    pub keep_ended_per_service: u32,
    /// How long an ended task's sandbox is kept at most, in seconds.
    pub keep_ended_for_seconds: u64,
    /// The node warns when its data dir's file system has less free, in percent (0: never).
    pub disk_free_warning_percent: u8,
}

impl Default for Upkeep {
    fn default() -> Upkeep {
        Upkeep {
            logs: torc_types::LogCap::default(),
            keep_ended_per_service: torc_types::logs::DEFAULT_KEEP_ENDED_PER_SERVICE,
            keep_ended_for_seconds: torc_types::logs::DEFAULT_KEEP_ENDED_FOR_SECS,
            disk_free_warning_percent: torc_types::logs::DEFAULT_DISK_FREE_WARNING_PERCENT,
        }
    }
}

/// `POST /api/v1/agents/{node}/status`: task transitions and the heartbeat. With `full`, the
/// list is everything the agent runs, and the controller marks the rest of the node's tasks lost.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusReport {
    pub tasks: Vec<TaskReport>,
    #[serde(default)]
    pub full: bool,
    /// The node's data dir's file system (the controller notes in the event feed when its
    /// free space falls below, and rises back above, the rack's threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUsage>,
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

/// `GET /api/v1/agents/{node}/desired?epoch=E&after=G`: the whole set of tasks the node must
/// run, numbered `(epoch, generation)`. The call waits until the generation is newer than
/// `after` (long poll); a controller whose epoch is not `epoch` answers at once. An agent
/// applies a document only if it is newer than the one it applied and not of an epoch below
/// the one it follows ([`order::Floor`]), so a deposed leader's late answer changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredState {
    /// The epoch of the leader that numbered it (0: from a controller before epochs).
    #[serde(default)]
    pub epoch: u64,
    /// The node's desired generation: grows with every change of its set, also across
    /// epochs (it is the rack's durable counter).
    pub generation: u64,
    pub tasks: Vec<DesiredTask>,
}

impl DesiredState {
    pub fn stamp(&self) -> order::Stamp {
        order::Stamp {
            epoch: self.epoch,
            generation: self.generation,
        }
    }
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
    /// For a `network: rack` task: its own address, from its node's task block. The agent
    /// gives the task a network namespace with this address and a link to the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rack_address: Option<RackAddress>,
    /// For a `network: rack` task: the rack's resolver, which the agent makes the task's
    /// `/etc/resolv.conf` (its own namespace has no other way to the rack's names). `None`:
    /// the rack has no nameserver (no master node), and the task keeps the node's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<Resolver>,
    /// The task's credential files (name → content), for its secrets directory: what its
    /// spec's `credentials` asked for. Only this node's credential can read them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    /// For a container task whose image's registry the rack config has credentials for:
    /// them, for the pull. Never written to disk by the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<images::RegistryAuth>,
    /// For a container task to start: how long the pull of its image may take (the rack
    /// config's `containers.pull_timeout_in_seconds`); the agent's own default without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_timeout_seconds: Option<u64>,
}

/// A resolver configuration (`resolv.conf`): the rack's nameserver and the domains searched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolver {
    pub nameserver: Ipv4Addr,
    /// The service domain first (`service.torc`), then the node domain (`homer.ave`).
    pub search: Vec<String>,
}

impl Resolver {
    /// As `resolv.conf(5)` reads it.
    pub fn resolv_conf(&self) -> String {
        let mut text = format!("nameserver {}\n", self.nameserver);
        if !self.search.is_empty() {
            text.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        text
    }
}

/// A rack task's address and the block it is from (the block's gateway is the node's end of
/// the task's link).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackAddress {
    pub ip: Ipv4Addr,
    pub block: Ipv4Block,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredQuery {
    /// The epoch of the document the agent applied last (or of its registration). Sent only
    /// when not 0, so that an agent following a controller before epochs can still ask it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub epoch: u64,
    #[serde(default)]
    pub after: u64,
    /// Longest wait in milliseconds (capped by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

pub mod controller;
pub mod dns;
pub mod images;
pub mod order;
pub mod original;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

// ---------------------------------------------------------------------------------------------
// Metrics (the agent's PCP role)

/// One sample of a node and its tasks, with rates over the interval since the previous one.
/// Percentages of the host are of its whole capacity (100 = every core busy); a task's are of
/// one core (a task busy on two cores shows 200), as `top` does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeMetrics {
    pub node: NodeName,
    /// When the sample was taken.
    pub at: UnixMillis,
    /// Time since the previous sample, over which rates are computed.
    pub interval_ms: u64,
    pub cpu: CpuMetrics,
    pub memory: MemoryMetrics,
    pub load: [f64; 3],
    pub disks: Vec<DiskMetrics>,
    pub filesystems: Vec<FsMetrics>,
    pub interfaces: Vec<InterfaceMetrics>,
    pub tasks: Vec<TaskMetrics>,
    /// The file system of the agent's data dir (sandboxes, service data). Absent from an
    /// agent before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<DiskUsage>,
}

/// What a node's agent did with a service's data dir (`$DATA_DIR`) on a purge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataPurged {
    /// The data dir was there and is removed.
    pub removed: bool,
    /// Bytes its files took.
    pub bytes: u64,
}

/// `POST /api/v1/services/{name}/purge`: each node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePurge {
    pub service: ServiceName,
    pub nodes: Vec<NodePurge>,
}

/// One node's part of a purge: what its agent did, or why it could not be asked or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodePurge {
    pub node: NodeName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<DataPurged>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The file system holding an agent's data dir, as its upkeep last measured it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    /// The agent's data dir.
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    /// What an unprivileged writer may still use.
    pub free_bytes: u64,
    /// The rack's threshold (`logs.disk_free_warning_percent`).
    pub warning_percent: u8,
    /// Free space is below the threshold.
    pub low: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuMetrics {
    pub cores: usize,
    pub user_percent: f64,
    pub system_percent: f64,
    pub idle_percent: f64,
    pub iowait_percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryMetrics {
    pub total_bytes: u64,
    /// Total minus available.
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub cached_bytes: u64,
    pub swap_used_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiskMetrics {
    pub device: String,
    pub read_bytes_per_s: f64,
    pub write_bytes_per_s: f64,
    pub reads_per_s: f64,
    pub writes_per_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FsMetrics {
    pub mount_point: String,
    pub device: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceMetrics {
    pub name: String,
    pub rx_bytes_per_s: f64,
    pub tx_bytes_per_s: f64,
    pub rx_packets_per_s: f64,
    pub tx_packets_per_s: f64,
    pub rx_drops_per_s: f64,
    pub tx_drops_per_s: f64,
    pub rx_errors_per_s: f64,
    pub tx_errors_per_s: f64,
    /// Cumulative counters, as the kernel reports them.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_drops: u64,
    pub tx_drops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub id: TaskId,
    pub name: ServiceName,
    pub metered: bool,
    pub cpu_user_percent: f64,
    pub cpu_system_percent: f64,
    /// Resident memory of all the task's processes.
    pub memory_bytes: u64,
    pub processes: usize,
}

/// `POST /api/v1/frameworks/{name}/log`: a framework's line in the rack's event feed (e.g. a
/// scaling decision).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkLog {
    pub level: EventLevel,
    pub message: String,
}

torc_types::words! {
    /// What a [`RackEvent`] is about.
    pub enum EventKind as "event kind" {
        Task = "task",
        Service = "service",
        Node = "node",
        Framework = "framework",
        /// Credentials and secrets: a token created or revoked, a secret read or set.
        Auth = "auth",
        /// The rack network as a whole: shut down or started.
        Network = "network",
        /// A route the switch gained or lost.
        Route = "route",
        /// An alert rule of the rack config fired or resolved.
        Alert = "alert",
        /// Node maintenance: cordon, drain and its moves, power commands.
        Maintenance = "maintenance",
        /// A rack config applied (`torc apply`, SIGHUP) and its services' rollouts.
        Rollout = "rollout",
    }
}

torc_types::words! {
    /// Where an [`AlertView`] stands.
    pub enum AlertState as "alert state" {
        /// The condition holds, not yet for the rule's `for_seconds`.
        Pending = "pending",
        /// The condition has held long enough: the webhooks were told.
        Firing = "firing",
        /// It no longer holds (only in a webhook's payload: resolved alerts are not listed).
        Resolved = "resolved",
    }
}

/// An alert: a rule of the rack config whose condition holds for one subject (a node, a
/// service, a node's file system). `GET /api/v1/alerts` lists the pending and firing ones;
/// each webhook gets one as JSON when it fires and when it resolves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertView {
    pub rule: String,
    /// What it is about, e.g. `node bladerunner1`, `service dns`, `node b1 file system /`.
    pub subject: String,
    pub state: AlertState,
    /// In words, with the value seen and the threshold.
    pub summary: String,
    /// The value that made it hold, when the rule watches a number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// When its condition was first seen holding.
    pub since: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<UnixMillis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<UnixMillis>,
    /// The rack it is from.
    pub rack: String,
}

torc_types::words! {
    /// How much a [`RackEvent`] matters (the UI's badge).
    pub enum EventLevel as "event level" {
        Error = "error",
        Warning = "warning",
        Info = "info",
    }
}

/// Something that happened in the rack, for people: a task failure, a restart, a node lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RackEvent {
    pub seq: u64,
    pub at: UnixMillis,
    pub kind: EventKind,
    pub level: EventLevel,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeName>,
}

// ---------------------------------------------------------------------------------------------
// The rack network

/// The `/32` routes the switch should hold: one per rack-network task on an active node, through
/// that node. The network agent long-polls for it (`GET /api/v1/network/routes`).
///
/// `(epoch, generation)` numbers it: the epoch is the leader's, higher at every controller start
/// and for every new leader, the generation grows with every change within an epoch. A snapshot
/// replaces the one before whole; the network agent orders them as [`order::Follower`] says (a
/// lower epoch is refused for a grace, then taken as a new store's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSnapshot {
    pub epoch: u64,
    pub generation: u64,
    /// Where the routes go: the network namespace whose kernel table is the switch's (a name
    /// under `/run/netns` or a path; `""`: where the network agent runs). `None`: this rack
    /// has no netlink network agent (`network-agent.type` in its config), so nothing is
    /// programmed and the agent idles.
    #[serde(default)]
    pub switch: Option<String>,
    pub routes: Vec<RackRoute>,
}

impl RouteSnapshot {
    pub fn stamp(&self) -> order::Stamp {
        order::Stamp {
            epoch: self.epoch,
            generation: self.generation,
        }
    }
}

/// One task's route: `destination/32 via next_hop` (its node's address).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackRoute {
    pub destination: Ipv4Addr,
    pub next_hop: Ipv4Addr,
    pub node: NodeName,
    pub task: TaskId,
    pub service: ServiceName,
}

/// Where a long poll for a numbered document stands: answered at once when the controller's
/// `(epoch, generation)` differs, else when it changes or `wait_ms` passes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotQuery {
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub after: u64,
    /// Longest wait in milliseconds (capped by the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
}

/// What the network agent found on the switch after applying a route snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkReport {
    /// The snapshot it applied.
    pub epoch: u64,
    pub generation_applied: u64,
    /// Every IPv4 route of the switch's main table.
    pub routes: Vec<SwitchRoute>,
    /// The switch's ports.
    pub ports: Vec<SwitchPort>,
}

/// A route of the switch's table, as the kernel has it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchRoute {
    pub destination: Ipv4Addr,
    pub prefix_len: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// The port (interface) it leaves by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    /// `kernel`, `boot`, `static`, `torc` (the network agent's) or the protocol's number.
    pub protocol: String,
}

/// A port of the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchPort {
    pub name: String,
    /// `up`, `down`, `lowerlayerdown`, ... as the kernel says.
    pub oper_state: String,
    pub mtu: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
}

/// `GET /api/v1/network`: the routes the switch should hold, and what it last reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkView {
    pub desired: RouteSnapshot,
    /// `None` until a network agent reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<NetworkReport>,
    /// When it reported (0 = never).
    pub reported_at: UnixMillis,
    /// The wanted routes the last report does not show as held by the network agent (all of
    /// them before it reports): what the switch lacks, or lacked when it last said.
    #[serde(default)]
    pub missing: Vec<RackRoute>,
}

impl NetworkView {
    /// The view of `desired` and `reported`, with what is missing worked out.
    pub fn new(
        desired: RouteSnapshot,
        reported: Option<NetworkReport>,
        reported_at: UnixMillis,
    ) -> NetworkView {
        let held = |d: &RackRoute| {
            reported.as_ref().is_some_and(|r| {
                r.routes.iter().any(|h| {
                    h.prefix_len == 32 && h.destination == d.destination && h.protocol == "torc"
                })
            })
        };
        let missing = desired
            .routes
            .iter()
            .filter(|d| !held(d))
            .cloned()
            .collect();
        NetworkView {
            desired,
            reported,
            reported_at,
            missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The epochs of the agent protocol read as 0 when absent (a controller before epochs),
    /// and the poll's epoch is sent only when it is not 0 (such a controller refuses unknown
    /// query fields).
    #[test]
    fn agent_protocol_epochs_default_to_zero_and_zero_is_not_sent() {
        let doc: DesiredState = serde_json::from_str(r#"{"generation": 4, "tasks": []}"#).unwrap();
        assert_eq!(
            doc.stamp(),
            order::Stamp {
                epoch: 0,
                generation: 4
            }
        );
        let resp: RegisterResponse =
            serde_json::from_str(r#"{"heartbeat_interval_ms": 1000}"#).unwrap();
        assert_eq!(resp.epoch, 0);
        let doc: DesiredState =
            serde_json::from_str(r#"{"epoch": 7, "generation": 4, "tasks": []}"#).unwrap();
        assert_eq!(doc.epoch, 7);
        let query = |epoch| {
            serde_json::to_value(DesiredQuery {
                epoch,
                after: 3,
                wait_ms: None,
            })
            .unwrap()
        };
        assert_eq!(query(0), serde_json::json!({"after": 3}));
        assert_eq!(query(7), serde_json::json!({"epoch": 7, "after": 3}));
        let e = serde_json::from_str::<DesiredState>(
            r#"{"epoch": 7, "generation": 4, "tasks": [], "leader": 1}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `leader`"), "{e}");
    }

    /// A wanted route is missing until a report shows it held as torc's own `/32`.
    #[test]
    fn missing_routes_are_the_wanted_ones_not_held_as_torcs() {
        let route = |dst: &str| RackRoute {
            destination: dst.parse().unwrap(),
            next_hop: "198.18.0.21".parse().unwrap(),
            node: "b1".parse().unwrap(),
            task: TaskId::new("web.0123456789ab").unwrap(),
            service: "web".parse().unwrap(),
        };
        let desired = RouteSnapshot {
            epoch: 1,
            generation: 2,
            switch: Some(String::new()),
            routes: vec![
                route("198.19.1.2"),
                route("198.19.1.3"),
                route("198.19.1.4"),
            ],
        };
        let held = |dst: &str, protocol: &str| SwitchRoute {
            destination: dst.parse().unwrap(),
            prefix_len: 32,
            gateway: Some("198.18.0.21".parse().unwrap()),
            port: Some("swp1".into()),
            protocol: protocol.into(),
        };
        let report = NetworkReport {
            epoch: 1,
            generation_applied: 2,
            routes: vec![held("198.19.1.2", "torc"), held("198.19.1.3", "static")],
            ports: vec![],
        };
        let missing = |v: NetworkView| -> Vec<String> {
            v.missing
                .iter()
                .map(|r| r.destination.to_string())
                .collect()
        };
        assert_eq!(
            missing(NetworkView::new(desired.clone(), Some(report), 5)),
            ["198.19.1.3", "198.19.1.4"],
            "held by another protocol is not held by torc"
        );
        assert_eq!(missing(NetworkView::new(desired, None, 0)).len(), 3);
    }

    /// The closed sets keep the JSON strings the UI and clients read, and a word outside one
    /// is refused with the words allowed.
    #[test]
    fn words_are_checked_and_named() {
        let event: RackEvent = serde_json::from_str(
            r#"{"seq": 1, "at": 5, "kind": "auth", "level": "warning", "message": "m"}"#,
        )
        .unwrap();
        assert_eq!(
            (event.kind, event.level),
            (EventKind::Auth, EventLevel::Warning)
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            (json["kind"].as_str(), json["level"].as_str()),
            (Some("auth"), Some("warning"))
        );

        let e = serde_json::from_str::<FrameworkLog>(r#"{"level": "loud", "message": "m"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown event level \"loud\", expected `error`, `warning` or `info`"),
            "{e}"
        );

        let power: PowerRequest = serde_json::from_str(r#"{"action": "off"}"#).unwrap();
        assert_eq!(power.action, PowerAction::Off);
        let e = serde_json::from_str::<PowerRequest>(r#"{"action": "reboot"}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown power action \"reboot\", expected `on`, `off` or `status`"),
            "{e}"
        );

        let e = serde_json::from_str::<TaskSpec>(
            r#"{"name": "web", "command": "w", "constraints": {"node_type": "switch"}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown node type \"switch\", expected `master` or `slave`"),
            "{e}"
        );
    }
}

/// `POST /api/v1/backup`: the passphrase the backup's secrets are sealed under (at least 12
/// bytes). The answer is the backup file (`torc_controller::backup`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    pub passphrase: String,
}

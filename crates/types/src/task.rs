//! What a task is (its spec) and where it is in its life (its state).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    ContainerSpec, ContainerSpecError, NodeName, NodeType, Resources, SecretName, ServiceName,
    TaskNetwork,
};

/// Where a task may run. Every constraint that is set must hold; unset ones match any node.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraints {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<NodeName>,
    /// As the original's `machine-type` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_type: Option<NodeType>,
    /// `controller`, `compute`, `lab`, ...: the original's `machine-function` attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_function: Option<String>,
}

impl Constraints {
    pub fn is_empty(&self) -> bool {
        self.node_name.is_none() && self.node_type.is_none() && self.node_function.is_none()
    }
}

impl fmt::Display for Constraints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = &self.node_name {
            parts.push(format!("node_name={n}"));
        }
        if let Some(t) = &self.node_type {
            parts.push(format!("node_type={t}"));
        }
        if let Some(func) = &self.node_function {
            parts.push(format!("node_function={func}"));
        }
        if parts.is_empty() {
            f.write_str("any node")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Everything needed to run one task: a process, or an image under the node's container
/// engine when `container` is set. Immutable once the task is created.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// The logical name (`dns`, `pcp-wedge`). Several tasks over time share a name; each has
    /// its own `TaskId`.
    pub name: ServiceName,
    /// The program to run: a path, or a name looked up in `PATH`. For a container, the
    /// program in its image (`docker run --entrypoint`), and empty to run the image's own
    /// entrypoint.
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub resources: Resources,
    /// How many ports to assign from the node's range (`PORT`, `PORT0`, `PORT1`, ...).
    #[serde(default)]
    pub ports: u16,
    #[serde(default)]
    pub constraints: Constraints,
    /// Grace period between SIGTERM and SIGKILL when the task is killed.
    #[serde(default = "default_kill_grace_ms")]
    pub kill_grace_ms: u64,
    /// Collect this task's metrics into the time-series database (the original's `is_metered`).
    #[serde(default)]
    pub metered: bool,
    /// Credentials the task gets as files, never in its environment.
    #[serde(default, skip_serializing_if = "TaskCredentials::is_empty")]
    pub credentials: TaskCredentials,
    /// Run as the agent's own user (root on a real node: a port below 1024, the host's
    /// files). Otherwise the task runs as its node's task user (`nobody` by default), which
    /// reads neither the agent's credential nor another task's secrets. Only an admin, or the
    /// rack config, launches a privileged task.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// The node's network (the default) or an address of its own on the rack network.
    #[serde(default, skip_serializing_if = "TaskNetwork::is_node")]
    pub network: TaskNetwork,
    /// Run an image under the node's container engine instead of a process on the node.
    /// Absent in specs stored before containers, which read as processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerSpec>,
    /// This task's own cap of its output files (a service's `logs:`); what it leaves out is
    /// the rack's (see `logs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<crate::LogLimits>,
}

/// Credentials a task receives as files in its secrets directory (`$TORC_SECRETS_DIR`, mode
/// 0700, files 0600), written by its agent before it starts. None of them is ever put in the
/// task's environment or spec, where every viewer of the rack could read them.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskCredentials {
    /// A controller token bound to this task (file `token`), valid while the task lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_access: Option<ApiAccess>,
    /// A certificate from the rack CA for the task's node address and its service's names
    /// (files `tls.crt`, `tls.key` and the CA's `ca.crt`). A controller without a CA refuses
    /// such a task at launch.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// Named rack secrets, one file each (`<name>`), created at random the first time a task
    /// asks for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretName>,
}

impl TaskCredentials {
    pub fn is_empty(&self) -> bool {
        self.api_access.is_none() && !self.tls && self.secrets.is_empty()
    }
}

/// What a task's own controller token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiAccess {
    /// Read the whole rack (as a viewer token), change nothing.
    Viewer,
    /// The network agent's: read the routes the switch should hold and report what it holds,
    /// nothing else.
    Network,
}

pub fn default_kill_grace_ms() -> u64 {
    5_000
}

/// Why a task spec cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskSpecError {
    #[error("command must not be empty")]
    EmptyCommand,
    #[error("resources must be finite and non-negative")]
    BadResources,
    #[error("env key {0:?} is not a valid variable name")]
    BadEnvKey(String),
    #[error("ports: at most 100 ports per task, asked for {0}")]
    TooManyPorts(u16),
    #[error(
        "a container without a network (none) cannot have an address on the rack network \
         (network: rack)"
    )]
    NoNetworkOnRack,
    #[error(transparent)]
    Container(#[from] ContainerSpecError),
}

impl TaskSpec {
    /// A spec with the given name and command, and defaults for the rest.
    pub fn new(name: ServiceName, command: impl Into<String>) -> Self {
        TaskSpec {
            name,
            command: command.into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            resources: Resources::ZERO,
            ports: 0,
            constraints: Constraints::default(),
            kill_grace_ms: default_kill_grace_ms(),
            metered: false,
            credentials: TaskCredentials::default(),
            privileged: false,
            network: TaskNetwork::Node,
            container: None,
            logs: None,
        }
    }

    /// Checks what the types do not. A container may leave `command` empty (its image's
    /// entrypoint runs), but not blank.
    pub fn validate(&self) -> Result<(), TaskSpecError> {
        if self.command.trim().is_empty() && (self.container.is_none() || !self.command.is_empty())
        {
            return Err(TaskSpecError::EmptyCommand);
        }
        if !self.resources.is_valid() {
            return Err(TaskSpecError::BadResources);
        }
        if let Some(key) = self.env.keys().find(|k| !is_env_key(k)) {
            return Err(TaskSpecError::BadEnvKey(key.clone()));
        }
        if self.ports > 100 {
            return Err(TaskSpecError::TooManyPorts(self.ports));
        }
        if let Some(container) = &self.container {
            if container.options.no_network && self.network == TaskNetwork::Rack {
                return Err(TaskSpecError::NoNetworkOnRack);
            }
            container.validate()?;
        }
        Ok(())
    }
}

/// A name a process environment takes: letters, digits and `_`, not starting with a digit.
pub(crate) fn is_env_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The life of a task. `Pending` and `Staging` are the controller's; the agent reports the rest.
/// Terminal states are final: a task id never leaves one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, not yet placed on a node (no node fits, or waiting for a dependency).
    Pending,
    /// Placed on a node; the agent has not yet confirmed it started.
    Staging,
    /// The process runs.
    Running,
    /// A kill was requested; waiting for the agent to confirm.
    Killing,
    /// Exited with code 0.
    Finished,
    /// Exited non-zero, died of a signal, or could not be started.
    Failed,
    /// Ended because a kill was requested.
    Killed,
    /// Its node went away, or its process vanished without a trace.
    Lost,
}

impl TaskState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished | TaskState::Failed | TaskState::Killed | TaskState::Lost
        )
    }

    /// States in which the task holds resources on a node.
    pub fn holds_resources(self) -> bool {
        matches!(
            self,
            TaskState::Staging | TaskState::Running | TaskState::Killing
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Staging => "staging",
            TaskState::Running => "running",
            TaskState::Killing => "killing",
            TaskState::Finished => "finished",
            TaskState::Failed => "failed",
            TaskState::Killed => "killed",
            TaskState::Lost => "lost",
        }
    }

    pub const ALL: [TaskState; 8] = [
        TaskState::Pending,
        TaskState::Staging,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
    ];
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A word that is not a task state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown task state {text:?}; expected one of: {}",
    TaskState::ALL.map(|s| s.as_str()).join(", ")
)]
pub struct UnknownTaskState {
    pub text: String,
}

impl std::str::FromStr for TaskState {
    type Err = UnknownTaskState;
    fn from_str(s: &str) -> Result<Self, UnknownTaskState> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownTaskState { text: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_validation() {
        let mut spec = TaskSpec::new(ServiceName::new("t").unwrap(), "sleep");
        assert!(spec.validate().is_ok());
        spec.env.insert("1X".into(), "v".into());
        assert_eq!(spec.validate(), Err(TaskSpecError::BadEnvKey("1X".into())));
    }

    #[test]
    fn container_specs() {
        let mut spec = TaskSpec::new(ServiceName::new("t").unwrap(), "");
        assert_eq!(spec.validate(), Err(TaskSpecError::EmptyCommand));
        spec.container = Some(ContainerSpec::new("busybox".parse().unwrap()));
        assert_eq!(spec.validate(), Ok(()), "the image's entrypoint runs");
        spec.command = "  ".into();
        assert_eq!(spec.validate(), Err(TaskSpecError::EmptyCommand));
        spec.command = "sh".into();
        assert_eq!(spec.validate(), Ok(()));

        let container = spec.container.as_mut().unwrap();
        container.options.no_network = true;
        assert_eq!(spec.validate(), Ok(()));
        spec.network = TaskNetwork::Rack;
        assert_eq!(spec.validate(), Err(TaskSpecError::NoNetworkOnRack));
        spec.network = TaskNetwork::Node;

        let container = spec.container.as_mut().unwrap();
        container.options.user = Some("".into());
        assert_eq!(
            spec.validate().unwrap_err().to_string(),
            "container option user \"\": must be USER[:GROUP], with names (letters, digits, \
             '_', '.', '-') or numbers"
        );
    }

    #[test]
    fn stored_specs_without_a_container_still_read() {
        let old = r#"{"name":"t","command":"sleep","args":["1"],"kill_grace_ms":5000}"#;
        let spec: TaskSpec = serde_json::from_str(old).unwrap();
        assert_eq!(spec.container, None);
        // And a process spec is written as before: no `container` key.
        assert!(!serde_json::to_string(&spec).unwrap().contains("container"));

        let new = r#"{"name":"t","command":"","container":{"image":"busybox:1.36"}}"#;
        let spec: TaskSpec = serde_json::from_str(new).unwrap();
        let image = spec.container.as_ref().map(|c| c.image.to_string());
        assert_eq!(image.as_deref(), Some("docker.io/library/busybox:1.36"));
        let err = serde_json::from_str::<TaskSpec>(
            r#"{"name":"t","command":"","container":{"image":"x","memory":1}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");
    }

    #[test]
    fn spec_rejects_unknown_fields() {
        let err = serde_json::from_str::<TaskSpec>(r#"{"name":"t","command":"x","memory":5}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field `memory`"), "{err}");
    }

    #[test]
    fn states_round_trip() {
        for st in TaskState::ALL {
            assert_eq!(st.as_str().parse::<TaskState>().unwrap(), st);
        }
        let err = "runing".parse::<TaskState>().unwrap_err();
        assert_eq!(err.text, "runing");
        assert_eq!(
            err.to_string(),
            "unknown task state \"runing\"; expected one of: pending, staging, running, \
             killing, finished, failed, killed, lost"
        );
    }
}

/// Fills `$IP`, `$PORT` and `$PORT<n>` in a task's argument, env value or health-check target
/// with the task's node address and assigned ports. Longer names go first, so `$PORT10` is not
/// read as `$PORT1` followed by `0`. Unknown placeholders stay as they are.
pub fn expand_placeholders(text: &str, ip: Option<std::net::IpAddr>, ports: &[u16]) -> String {
    if !text.contains('$') {
        return text.to_string();
    }
    let mut out = text.to_string();
    for (i, p) in ports.iter().enumerate().rev() {
        out = out.replace(&format!("$PORT{i}"), &p.to_string());
    }
    if let Some(p) = ports.first() {
        out = out.replace("$PORT", &p.to_string());
    }
    if let Some(ip) = ip {
        out = out.replace("$IP", &ip.to_string());
    }
    out
}

#[cfg(test)]
mod placeholder_tests {
    use super::expand_placeholders;

    #[test]
    fn fills_ports_and_ip() {
        let ports: Vec<u16> = (31000..31011).collect();
        let ip = Some("10.0.0.1".parse().unwrap());
        assert_eq!(
            expand_placeholders("$IP:$PORT $PORT0 $PORT1 $PORT10 $OTHER", ip, &ports),
            "10.0.0.1:31000 31000 31001 31010 $OTHER"
        );
        assert_eq!(expand_placeholders("$PORT", None, &[]), "$PORT");
    }
}

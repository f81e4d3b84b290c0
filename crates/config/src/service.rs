//! One service definition: the original's keys (container-oriented) plus torc's (process-
//! oriented), and its mapping onto a [`TaskSpec`]: a process when it names only a `command`,
//! a container when it names an `image_name`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use torc_types::{
    Constraints, ContainerSpec, ImageRef, NetworkMode, NodeName, NodeType, Parameters, Resources,
    ServiceName, TaskCredentials, TaskNetwork, TaskSpec, words,
};

use crate::de::{empty_as_none, null_as_default};
use crate::error::ServiceSpecError;

/// A service: an entry of `healthcheck.system_services` (always on) or of a service group
/// (on demand). Keys and defaults follow the original; torc adds `command`, `args`, `env`,
/// `ports`, `disk`, `restart_delay_in_seconds`, `kill_grace_in_seconds` and `health`.
///
/// With `image_name` its tasks are containers: `command` is the image's entrypoint, `args`
/// (or `arguments`) replace the image's `Cmd`, and `privileged`, `volumes`, `network_type`
/// and `parameters` are the container's, as the original gave them to Docker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// The task name, and its DNS name under the service domain.
    pub name: ServiceName,
    /// A container image (original), as written: `dns` means `docker.io/library/dns:latest`,
    /// as for Docker. Checked when the config is read.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub image_name: Option<String>,
    /// The original's container network: `host`, `none`, `torc` (the original's Calico
    /// network) or `calico`; the last two mean `network: rack`. For a process any other name
    /// is kept as data (the node's network); a container refuses it (torc has no `bridge`).
    #[serde(default = "default_network_type")]
    pub network_type: String,
    /// `node` (share the node's address, ports from its range) or `rack` (an address of
    /// its own from the node's `task_block`, routed by the switch). Default: from
    /// `network_type`, else `node`. torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<TaskNetwork>,
    /// Placement: run only on this node. `""` means unset, as in the original.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<NodeName>,
    /// Placement: run only on nodes of this type.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_type: Option<NodeType>,
    /// Placement: run only on nodes with this `function`.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_function: Option<String>,
    /// Placement waits until this service runs.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub dependent_service: Option<ServiceName>,
    /// The original's arguments, one string split on whitespace (no quoting).
    #[serde(default, deserialize_with = "null_as_default")]
    pub arguments: String,
    /// The original's extra `docker run` options (`--ipc=host`), for a container: read by
    /// [`torc_types::Parameters`], which maps each option it can honour and refuses the rest
    /// by name. Needs `image_name`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub parameters: String,
    /// Memory in MiB. Integers are accepted (the original panicked on `memory: 1024`).
    #[serde(default = "default_memory")]
    pub memory: f64,
    /// Cores.
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    #[serde(default)]
    pub privileged: bool,
    /// Host paths bind-mounted into the container (`$DATA_DIR` for the service's data
    /// directory). Needs `image_name`.
    #[serde(default, deserialize_with = "null_as_default")]
    pub volumes: Vec<Volume>,
    /// Run one instance on every node (or every slave node) instead of one in the rack.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub sla: Option<Sla>,
    /// Whether its metrics are collected per task.
    #[serde(default)]
    pub is_metered: bool,
    /// A job runs to completion: it is never restarted and not listed as running.
    #[serde(default)]
    pub is_job: bool,
    /// How many instances a group start creates (`<name>-0` ... `<name>-<n-1>` when > 1).
    #[serde(default = "default_instances")]
    pub number_of_instances: u32,

    /// The program to run, a path or a name looked up in `PATH`. torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The command's arguments. When absent, `arguments` split on whitespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub env: BTreeMap<String, String>,
    /// How many ports to assign from the node's range (`$PORT`, `$PORT0`, ...).
    #[serde(default)]
    pub ports: u16,
    /// Disk in MiB.
    #[serde(default)]
    pub disk: f64,
    /// Overrides `stateclean.restart_delay_in_seconds` for this service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_delay_in_seconds: Option<u64>,
    /// Grace period between SIGTERM and SIGKILL (default: `TaskSpec`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_grace_in_seconds: Option<u64>,
    /// This service's cap of its output files (`max_bytes`, `files`), over the rack's `logs`.
    /// torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<torc_types::LogLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ServiceHealth>,
    /// TTL, in seconds, of this service's names in the service domain (default: the rack's
    /// `service_ttl_in_seconds`). torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_ttl_in_seconds: Option<u32>,
    /// Credentials its tasks get as files in `$SECRETS_DIR`: `api_access: viewer` (a controller
    /// token of the task's own), `tls: true` (a certificate from the rack CA), `secrets:
    /// [name, ...]` (rack secrets, generated at random when first named). torc addition.
    #[serde(default, skip_serializing_if = "TaskCredentials::is_empty")]
    pub credentials: TaskCredentials,
}

fn default_network_type() -> String {
    "host".to_string()
}

/// The original's `DEFAULT_MEMORY`.
fn default_memory() -> f64 {
    128.0
}

/// The original's `DEFAULT_CPU`.
fn default_cpu() -> f64 {
    0.2
}

fn default_instances() -> u32 {
    1
}

impl ServiceConfig {
    /// The command's arguments: `args` if given, else `arguments` split on whitespace, as
    /// the original split it.
    pub fn effective_args(&self) -> Vec<String> {
        match &self.args {
            Some(args) => args.clone(),
            None => self
                .arguments
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        }
    }

    /// The process to run and its arguments; `None` for a service with an image (its
    /// `command` is the image's entrypoint) or with nothing to run.
    pub fn process_command(&self) -> Option<(&str, Vec<String>)> {
        if self.image_name.is_some() {
            return None;
        }
        self.command
            .as_deref()
            .map(|command| (command, self.effective_args()))
    }

    pub fn resources(&self) -> Resources {
        Resources::new(self.cpu, self.memory, self.disk)
    }

    pub fn constraints(&self) -> Constraints {
        Constraints {
            node_name: self.node_name.clone(),
            node_type: self.node_type,
            node_function: self.node_function.clone(),
        }
    }

    /// The network its tasks live on: `network` if set, else what the original's
    /// `network_type` means (`torc` and `calico` are the rack network).
    pub fn task_network(&self) -> TaskNetwork {
        match self.network {
            Some(network) => network,
            None if self.network_type_is_rack() => TaskNetwork::Rack,
            None => TaskNetwork::Node,
        }
    }

    /// Whether the original's `network_type` names the rack network.
    pub fn network_type_is_rack(&self) -> bool {
        matches!(self.network_type.as_str(), "torc" | "calico")
    }

    /// The restart delay for this service, given the rack-wide default.
    pub fn restart_delay(&self, rack_default: Duration) -> Duration {
        self.restart_delay_in_seconds
            .map_or(rack_default, Duration::from_secs)
    }

    /// The spec of one task of this service, for a config that passed validation: `None`
    /// when it has nothing to run, or when its container keys do not hold (which
    /// validation refuses; [`ServiceConfig::task_spec`] says why).
    pub fn to_task_spec(&self) -> Option<TaskSpec> {
        self.task_spec().ok().flatten()
    }

    /// The spec of one task of this service: a process for a `command` alone, a container
    /// for an `image_name`; `Ok(None)` when it has neither. An error names the key whose
    /// value cannot make a container.
    pub fn task_spec(&self) -> Result<Option<TaskSpec>, ServiceSpecError> {
        let Some(image) = &self.image_name else {
            if !self.parameters.trim().is_empty() {
                return Err(ServiceSpecError::ParametersNeedImage);
            }
            if !self.volumes.is_empty() {
                return Err(ServiceSpecError::VolumesNeedImage);
            }
            return Ok(self.command.as_deref().map(|command| self.spec(command)));
        };
        let image = ImageRef::parse(image).map_err(ServiceSpecError::Image)?;
        let mode = NetworkMode::parse(&self.network_type).map_err(ServiceSpecError::NetworkType)?;
        let mut spec = self.spec(self.command.as_deref().unwrap_or_default());
        let mut container = ContainerSpec::new(image);
        for (index, v) in self.volumes.iter().enumerate() {
            let volume = torc_types::Volume::new(&v.host_path, &v.container_path, v.read_only_mode)
                .map_err(|error| ServiceSpecError::Volume { index, error })?;
            container.volumes.push(volume);
        }
        if mode == NetworkMode::None {
            if spec.network == TaskNetwork::Rack {
                return Err(ServiceSpecError::NoNetworkOnRack);
            }
            container.options.no_network = true;
        }
        spec.container = Some(container);
        let parameters =
            Parameters::parse(&self.parameters).map_err(ServiceSpecError::Parameters)?;
        if let Some(parameter) = parameters.network
            && parameter != mode
        {
            return Err(ServiceSpecError::NetConflict {
                parameter,
                network_type: self.network_type.clone(),
            });
        }
        parameters
            .apply_to(&mut spec)
            .map_err(ServiceSpecError::Parameters)?;
        Ok(Some(spec))
    }

    /// The keys a process and a container share.
    fn spec(&self, command: &str) -> TaskSpec {
        let mut spec = TaskSpec::new(self.name.clone(), command);
        spec.args = self.effective_args();
        spec.env = self.env.clone();
        spec.resources = self.resources();
        spec.ports = self.ports;
        spec.constraints = self.constraints();
        spec.metered = self.is_metered;
        spec.credentials = self.credentials.clone();
        spec.privileged = self.privileged;
        spec.network = self.task_network();
        if let Some(secs) = self.kill_grace_in_seconds {
            spec.kill_grace_ms = secs.saturating_mul(1000);
        }
        spec.logs = self.logs;
        spec
    }
}

/// A host path mounted into a container (original key names), checked as a
/// [`torc_types::Volume`] when the config is read: `host_path` absolute or `$DATA_DIR[/sub]`,
/// `container_path` absolute and not `/`, no `..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    pub host_path: String,
    pub container_path: String,
    #[serde(default)]
    pub read_only_mode: bool,
}

words! {
    /// A placement SLA: one instance per node instead of one per rack.
    pub enum Sla as "sla" {
        /// One instance on every configured node, master included (`<name>-<node>`).
        SingletonEachNode = "singleton_each_node",
        /// One instance on every node of type `slave`.
        SingletonEachSlave = "singleton_each_slave",
    }
}

/// How a service's health is probed beyond "its process runs". `$PORT`, `$PORT<n>` and `$IP`
/// in the probe are kept verbatim, to be filled in per task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "HealthFields", into = "HealthFields")]
pub struct ServiceHealth {
    pub probe: HealthProbe,
    pub interval_in_seconds: u64,
    pub timeout_in_seconds: u64,
    /// Consecutive failures before the task counts as unhealthy.
    pub failure_threshold: u32,
}

/// One kind of health probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthProbe {
    /// Connect to `host:port`.
    Tcp(String),
    /// `GET` the URL; any 2xx or 3xx is healthy.
    Http(String),
    /// Run the argv; exit code 0 is healthy.
    Command(Vec<String>),
}

impl ServiceHealth {
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_in_seconds)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_in_seconds)
    }
}

/// `health` as written: exactly one probe key, and the timers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tcp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    command: Option<Vec<String>>,
    #[serde(default = "default_health_interval")]
    interval_in_seconds: u64,
    #[serde(default = "default_health_timeout")]
    timeout_in_seconds: u64,
    #[serde(default = "default_failure_threshold")]
    failure_threshold: u32,
}

fn default_health_interval() -> u64 {
    5
}

fn default_health_timeout() -> u64 {
    2
}

fn default_failure_threshold() -> u32 {
    3
}

/// A `health` section without exactly one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProbeCountError {
    #[error("set one of `tcp`, `http` or `command`")]
    None,
    #[error("set only one of `tcp`, `http` or `command`")]
    Several,
}

impl TryFrom<HealthFields> for ServiceHealth {
    type Error = ProbeCountError;
    fn try_from(fields: HealthFields) -> Result<Self, ProbeCountError> {
        let probe = match (fields.tcp, fields.http, fields.command) {
            (Some(addr), None, None) => HealthProbe::Tcp(addr),
            (None, Some(url), None) => HealthProbe::Http(url),
            (None, None, Some(argv)) => HealthProbe::Command(argv),
            (None, None, None) => return Err(ProbeCountError::None),
            _ => return Err(ProbeCountError::Several),
        };
        Ok(ServiceHealth {
            probe,
            interval_in_seconds: fields.interval_in_seconds,
            timeout_in_seconds: fields.timeout_in_seconds,
            failure_threshold: fields.failure_threshold,
        })
    }
}

impl From<ServiceHealth> for HealthFields {
    fn from(health: ServiceHealth) -> Self {
        let (mut tcp, mut http, mut command) = (None, None, None);
        match health.probe {
            HealthProbe::Tcp(addr) => tcp = Some(addr),
            HealthProbe::Http(url) => http = Some(url),
            HealthProbe::Command(argv) => command = Some(argv),
        }
        HealthFields {
            tcp,
            http,
            command,
            interval_in_seconds: health.interval_in_seconds,
            timeout_in_seconds: health.timeout_in_seconds,
            failure_threshold: health.failure_threshold,
        }
    }
}

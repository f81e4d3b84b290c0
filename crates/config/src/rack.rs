//! The rack config's top level: identity, nodes, timers and the two lists of services.

use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use torc_types::{
    ByteSize, FrameworkName, Ipv4Block, NodeName, NodeType, PortRange, RegistryHost, Resources,
    SecretName, ServiceName, words,
};

use crate::de::{empty_as_none, ip_addr, null_as_default, opt_ip_addr};
use crate::service::ServiceConfig;

/// A whole rack config, as parsed and validated by [`RackConfig::load`] or
/// [`RackConfig::parse`]. Holding one means every rule in the crate docs holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RackConfig {
    /// The controller's name: its DNS name under `service_domain`, and the owner written
    /// into the tasks it starts.
    #[serde(default = "default_name")]
    pub name: String,
    /// The DNS domain of the nodes (`wedge.homer.ave`). torc addition.
    #[serde(default = "default_domain")]
    pub domain: String,
    /// The DNS domain of the services (`dns.service.torc`). torc addition.
    #[serde(default = "default_service_domain")]
    pub service_domain: String,
    /// TTL, in seconds, of the node domain's answers (nodes change rarely). torc addition.
    #[serde(default = "default_node_ttl")]
    pub node_ttl_in_seconds: u32,
    /// TTL, in seconds, of service-domain answers unless a service sets `dns_ttl_in_seconds`:
    /// short, since instances come and go. torc addition.
    #[serde(default = "default_service_ttl")]
    pub service_ttl_in_seconds: u32,
    /// Host of the original's IPMI proxy (`:8085/sync`). Kept for compatibility.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipmiproxy: Option<String>,
    /// Commands that power a node on and off. torc addition, replacing the IPMI proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_command: Option<PowerCommand>,
    /// Whether agents that are not listed in `nodes` may join. torc addition; the original
    /// only logged them.
    #[serde(default)]
    pub open_join: bool,
    /// The switch's route-programming agent (original: `snaproute` or `fboss`).
    #[serde(
        default,
        rename = "network-agent",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_agent: Option<NetworkAgentConfig>,
    #[serde(deserialize_with = "null_as_default")]
    pub nodes: Vec<NodeConfig>,
    /// Extra names published in the service domain (`etcd.service.torc`).
    #[serde(default, rename = "dns-addons", deserialize_with = "null_as_default")]
    pub dns_addons: Vec<DnsAddon>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub statesync: StateSyncConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub stateclean: StateCleanConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub healthcheck: HealthcheckConfig,
    #[serde(default, deserialize_with = "null_as_default")]
    pub api: ApiConfig,
    /// Credentials the controller uses itself, and what frameworks' tasks may ask for. torc
    /// addition.
    #[serde(default, deserialize_with = "null_as_default")]
    pub access: AccessConfig,
    /// How nodes' container engines reach registries, and bounds on pulls and imports. torc
    /// addition.
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: ContainersConfig,
    /// Alert rules and the webhooks they go to. torc addition.
    #[serde(default, deserialize_with = "null_as_default")]
    pub alerts: crate::alerts::AlertsConfig,
    /// What a node keeps of its tasks' output and ended sandboxes, and when it warns about
    /// its disk. torc addition.
    #[serde(default, deserialize_with = "null_as_default")]
    pub logs: LogsConfig,
}

/// The `logs` section: the rack's defaults for every task's output files (a service's own
/// `logs:` overrides `max_bytes` and `files`), how long nodes keep ended tasks' sandboxes, and
/// the free space below which a node warns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// The cap of each of a task's output files (`stdout`, `stderr`): bytes, or with a unit
    /// (`10MiB`).
    pub max_bytes: ByteSize,
    /// How many rotated files (`stdout.1` ... `stdout.N`) stay besides the current one.
    pub files: u32,
    /// How many ended tasks' sandboxes a node keeps per service (the newest).
    pub keep_ended_per_service: u32,
    /// How long a node keeps an ended task's sandbox at most.
    pub keep_ended_for_in_seconds: u64,
    /// A node warns (its log, the rack's event feed) when its data dir's file system has
    /// less than this share free, in percent (0: never).
    pub disk_free_warning_percent: u8,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            max_bytes: ByteSize(torc_types::logs::DEFAULT_LOG_BYTES),
            files: torc_types::logs::DEFAULT_LOG_FILES,
            keep_ended_per_service: torc_types::logs::DEFAULT_KEEP_ENDED_PER_SERVICE,
            keep_ended_for_in_seconds: torc_types::logs::DEFAULT_KEEP_ENDED_FOR_SECS,
            disk_free_warning_percent: torc_types::logs::DEFAULT_DISK_FREE_WARNING_PERCENT,
        }
    }
}

impl LogsConfig {
    /// The rack's default cap of a task's output files.
    pub fn cap(&self) -> torc_types::LogCap {
        torc_types::LogCap {
            max_bytes: self.max_bytes.0,
            files: self.files,
        }
    }
}

/// The `containers` section: for services with an `image_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainersConfig {
    /// Logins and plain-HTTP registries, one entry per registry host. A registry not listed
    /// is pulled from without a login, over HTTPS unless it is on loopback.
    #[serde(deserialize_with = "null_as_default")]
    pub registries: Vec<RegistryConfig>,
    /// How long a node's pull of an image may take (Nomad's `image_pull_timeout`).
    pub pull_timeout_in_seconds: u64,
    /// The largest image archive `torc image import` accepts, in MiB.
    pub import_max_mb: u64,
}

impl Default for ContainersConfig {
    fn default() -> Self {
        ContainersConfig {
            registries: Vec::new(),
            pull_timeout_in_seconds: 300,
            import_max_mb: 2048,
        }
    }
}

impl ContainersConfig {
    pub fn pull_timeout(&self) -> Duration {
        Duration::from_secs(self.pull_timeout_in_seconds)
    }

    /// The entry for `host`, if the config lists it.
    pub fn registry(&self, host: &RegistryHost) -> Option<&RegistryConfig> {
        self.registries.iter().find(|r| r.host == *host)
    }
}

/// How to reach one registry: a login whose password is a rack secret, and whether it
/// speaks plain HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// `registry.example.com` or `10.0.0.5:5000`, as image names spell it
    /// (`index.docker.io` is read as `docker.io`).
    pub host: RegistryHost,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The rack secret holding the password (`torc secret set <name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretName>,
    /// Plain HTTP instead of HTTPS. Loopback registries are plain HTTP without it, as for
    /// Docker and containerd.
    #[serde(default)]
    pub insecure: bool,
}

/// The `access` section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// How the web UI's state browser logs in to the `etcd` service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<ServiceLogin>,
    /// How the web UI's query page logs in to the `influxdb` service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub influxdb: Option<ServiceLogin>,
    /// Rack secrets each framework's tasks may ask for (`credentials.secrets`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub framework_secrets: std::collections::BTreeMap<FrameworkName, Vec<SecretName>>,
}

/// A user of a rack service and the rack secret holding its password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLogin {
    pub user: String,
    pub password_secret: SecretName,
}

fn default_name() -> String {
    "torc-scheduler".to_string()
}

fn default_domain() -> String {
    "homer.ave".to_string()
}

fn default_node_ttl() -> u32 {
    60
}

fn default_service_ttl() -> u32 {
    5
}

fn default_service_domain() -> String {
    "service.torc".to_string()
}

impl RackConfig {
    /// The node called `name`, if the config lists it.
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name.as_str() == name)
    }

    /// The on-demand service group called `name` (`/start/group?name=`).
    pub fn service_group(&self, name: &str) -> Option<&ServiceGroup> {
        self.api
            .service_groups
            .iter()
            .find(|g| g.name.as_str() == name)
    }
}

/// Argv templates that power a node on or off, and (optional) ask its power state.
/// `{node}` and `{management_ip}` in any argument stand for the node's name and management
/// address; this crate only holds them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCommand {
    pub on: Vec<String>,
    pub off: Vec<String>,
    /// Prints the node's power state, its output's last word `on` or `off` (ipmitool's
    /// `chassis power status` prints `Chassis Power is on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<String>>,
}

/// The original's `network-agent` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkAgentConfig {
    #[serde(rename = "type")]
    pub agent_type: NetworkAgentKind,
    /// Where the agent programs routes. For the original's types, `ip:port` of the switch's
    /// API, e.g. `$MASTER_IP:8080`. For `netlink`, the network namespace whose kernel table
    /// is the switch's (a name under `/run/netns` or a path); empty means the namespace the
    /// network agent runs in, which is the switch itself on a switch OS.
    #[serde(default, deserialize_with = "null_as_default")]
    pub connection: String,
}

/// One machine of the rack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: NodeName,
    /// The data-plane address, where its agent listens.
    #[serde(deserialize_with = "ip_addr")]
    pub ip: IpAddr,
    /// The original writes `""` for "none".
    #[serde(
        default,
        deserialize_with = "opt_ip_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub external_ip: Option<IpAddr>,
    /// The address of its baseboard management controller, for power on/off.
    #[serde(
        default,
        deserialize_with = "opt_ip_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub management_ip: Option<IpAddr>,
    /// The switch port the node hangs off (the original's `port_id`); 0 when unknown.
    #[serde(default)]
    pub port: u16,
    #[serde(rename = "type")]
    pub node_type: NodeType,
    /// What the node is for (`controller`, `compute`, `lab`): the original's
    /// `machine-function` agent attribute, which services select with `node_function`.
    /// torc addition.
    #[serde(
        default,
        deserialize_with = "empty_as_none",
        skip_serializing_if = "Option::is_none"
    )]
    pub function: Option<String>,
    /// Overrides the resources the node's agent detects. torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The ports the node hands out to tasks (`31000-31999`). torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_range: Option<PortRange>,
    /// The addresses the node gives its `network: rack` tasks (`198.19.1.0/24`): the
    /// switch routes each task's address through the node. The block's first host address
    /// is the node's end of every task link. torc addition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_block: Option<Ipv4Block>,
    /// Where people reach the node's services from outside the rack network, when that is
    /// not `ip` (e.g. `127.0.3.21`, forwarded into a namespaced rack). torc addition.
    #[serde(
        default,
        deserialize_with = "opt_ip_addr",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint: Option<IpAddr>,
}

words! {
    /// The switch's route-programming agent: the original dispatched on these words.
    pub enum NetworkAgentKind as "network agent type" {
        /// SnapRoute's REST API (`POST /public/v1/config/IPv4Route`).
        Snaproute = "snaproute",
        /// FBOSS's Thrift API (`syncFib`).
        Fboss = "fboss",
        /// No agent: no routes are programmed (the original's default).
        Undefined = "undefined",
        /// torc's network agent: `/32` routes in the switch's kernel table over netlink,
        /// which a switch OS (SONiC, Cumulus, switchdev) syncs into its ASIC.
        Netlink = "netlink",
    }
}

/// An extra DNS name: `<name>.<service_domain>` → `ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsAddon {
    pub name: ServiceName,
    #[serde(deserialize_with = "ip_addr")]
    pub ip: IpAddr,
}

/// How often the controller publishes its state (the original's statesync loop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateSyncConfig {
    pub poll_interval_in_seconds: u64,
}

impl Default for StateSyncConfig {
    fn default() -> Self {
        StateSyncConfig {
            poll_interval_in_seconds: 5,
        }
    }
}

impl StateSyncConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_in_seconds)
    }
}

/// The garbage-collection loop: liveness timeouts and restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateCleanConfig {
    pub poll_interval_in_seconds: u64,
    /// After this long without news, a node or a foreign task is gone.
    pub timeout_in_seconds: u64,
    /// Delay before a failed system service is started again: the first step of the
    /// back-off.
    pub restart_delay_in_seconds: u64,
    /// Cap of the exponential restart back-off. torc addition.
    pub max_restart_delay_in_seconds: u64,
}

impl Default for StateCleanConfig {
    fn default() -> Self {
        StateCleanConfig {
            poll_interval_in_seconds: 18,
            timeout_in_seconds: 30,
            restart_delay_in_seconds: 30,
            max_restart_delay_in_seconds: 300,
        }
    }
}

impl StateCleanConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_in_seconds)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_in_seconds)
    }

    pub fn restart_delay(&self) -> Duration {
        Duration::from_secs(self.restart_delay_in_seconds)
    }

    pub fn max_restart_delay(&self) -> Duration {
        Duration::from_secs(self.max_restart_delay_in_seconds)
    }
}

/// The health loop and the always-on services it keeps running.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthcheckConfig {
    pub poll_interval_in_seconds: u64,
    #[serde(deserialize_with = "null_as_default")]
    pub system_services: Vec<ServiceConfig>,
}

impl Default for HealthcheckConfig {
    fn default() -> Self {
        HealthcheckConfig {
            poll_interval_in_seconds: 12,
            system_services: Vec::new(),
        }
    }
}

impl HealthcheckConfig {
    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.poll_interval_in_seconds)
    }
}

/// The on-demand side: groups of services started together by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    #[serde(rename = "service-groups", deserialize_with = "null_as_default")]
    pub service_groups: Vec<ServiceGroup>,
}

/// Services started together by `/start/group?name=<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceGroup {
    pub name: ServiceName,
    #[serde(default, deserialize_with = "null_as_default")]
    pub services: Vec<ServiceConfig>,
}

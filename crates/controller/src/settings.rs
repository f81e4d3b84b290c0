//! What the controller takes from the rack config: nodes, timers, services and groups.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use torc_api::original::OriginalVolume;
use torc_config::{ContainersConfig, HealthProbe, LogsConfig, RackConfig, ServiceConfig, Sla};
use torc_types::{
    FrameworkName, Ipv4Block, NodeName, NodeType, PortRange, Resources, SecretName, ServiceName,
    TaskSpec,
};

/// Where the controller's rack config comes from: its file and the variables (`--var`) it is
/// read with.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub vars: BTreeMap<String, String>,
}

/// The rack config a controller runs with, and its file (`crate::apply`).
#[derive(Debug)]
pub(crate) struct AppliedConfig {
    pub file: Option<ConfigFile>,
    pub config: RackConfig,
}

/// A node as the rack config declares it.
#[derive(Debug, Clone)]
pub struct ConfiguredNode {
    pub name: NodeName,
    pub ip: IpAddr,
    pub external_ip: Option<IpAddr>,
    pub management_ip: Option<IpAddr>,
    pub port: u16,
    pub node_type: NodeType,
    pub node_function: Option<String>,
    pub resources: Option<Resources>,
    pub port_range: Option<PortRange>,
    pub task_block: Option<Ipv4Block>,
    pub endpoint: Option<IpAddr>,
}

/// A supervised service as the config defines it, before SLA expansion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceTemplate {
    pub name: ServiceName,
    /// `None` when the service has nothing to run (neither a command nor an `image_name`).
    pub spec: Option<TaskSpec>,
    pub policy: ServicePolicy,
    pub sla: Option<SlaKind>,
    pub instances: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SlaKind {
    EachNode,
    EachSlave,
}

/// How a service is supervised, and what the original's task shape reports of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServicePolicy {
    pub is_job: bool,
    pub is_metered: bool,
    pub restart_delay_ms: u64,
    pub max_restart_delay_ms: u64,
    pub dependent_service: Option<ServiceName>,
    pub health: Option<HealthSpec>,
    pub image: String,
    pub arguments: String,
    pub parameters: String,
    pub network_type: String,
    pub privileged: bool,
    pub volumes: Vec<OriginalVolume>,
    /// The original's spelling: `None`, `SingletonEachNode`, `SingletonEachSlave`.
    pub sla: String,
    /// TTL of the service's names in the service domain; `None`: the rack's default.
    #[serde(default)]
    pub dns_ttl: Option<u32>,
}

/// A health check of a service's task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub failure_threshold: u32,
}

/// What a health check does. `$IP`, `$PORT` and `$PORT<n>` are filled from the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Tcp(String),
    Http(String),
    Command(Vec<String>),
}

/// Tasks one derived step (a `tick`, the load) loses, and service instances it starts, at most
/// (docs/design/ha-controller.md §4.3); the next step takes the rest. A change is one etcd Txn
/// of at most 2,047 writes (`store::etcd::TXN_OPS`), and each such task writes two records in
/// its step (its own and its service instance's): 500 × 2 leaves room for the node records
/// and counters of the same step.
pub const TASKS_PER_STEP: usize = 500;

/// What the controller takes from the rack config.
#[derive(Debug, Clone)]
pub struct RackSettings {
    pub rack_name: String,
    /// Where the config came from, for error messages (`rack.yaml`).
    pub config_origin: String,
    pub nodes: Vec<ConfiguredNode>,
    pub open_join: bool,
    /// A node not heard from for this long is inactive, and its tasks lost. Also the lease of an
    /// announced external task.
    pub node_timeout: Duration,
    /// How many tasks one derived step (a `tick`, the load) loses, and service instances it
    /// starts, at most: the rest wait for the next step, so no change is too large for the
    /// store. [`TASKS_PER_STEP`] unless a test makes it smaller to show the rule on a few.
    pub tasks_per_step: usize,
    pub system_services: Vec<ServiceTemplate>,
    pub groups: BTreeMap<ServiceName, Vec<ServiceTemplate>>,
    /// argv templates for power on and off (`{node}`, `{management_ip}`), and for the power
    /// state (`status`).
    pub power_on: Option<Vec<String>>,
    pub power_off: Option<Vec<String>>,
    pub power_status: Option<Vec<String>>,
    /// DNS domain of the nodes (`homer.ave`) and of the services (`service.torc`).
    pub domain: String,
    pub service_domain: String,
    /// TTLs of node-domain answers and (by default) of service-domain answers, in seconds.
    pub node_ttl: u32,
    pub service_ttl: u32,
    /// Extra names in the service domain.
    pub dns_addons: Vec<(ServiceName, IpAddr)>,
    /// Where the controller's API listens (its own name in the service domain points here).
    pub controller_addr: Option<std::net::SocketAddr>,
    /// How the controller logs in to the rack's `etcd` and `influxdb` services (the UI's
    /// state browser and query page): a user and the rack secret with its password.
    pub etcd_login: Option<(String, SecretName)>,
    pub influxdb_login: Option<(String, SecretName)>,
    /// Rack secrets each framework's tasks may ask for.
    pub framework_secrets: BTreeMap<FrameworkName, Vec<SecretName>>,
    /// Where the network agent programs routes (`network-agent.type: netlink`): the switch's
    /// namespace, `""` for the agent's own. `None`: the rack programs no routes.
    pub switch: Option<String>,
    /// Registry logins (passwords are rack secrets) and the bounds of pulls and imports.
    pub containers: ContainersConfig,
    /// Alert rules and their webhooks (`crate::alerts`).
    pub alerts: torc_config::AlertsConfig,
    /// What nodes keep of tasks' output and ended sandboxes (`logs`), sent at registration.
    pub logs: LogsConfig,
}

impl RackSettings {
    /// Where the rack config defines the service `name` (a system service, or one of a
    /// group's), if it does.
    pub fn configured_at(&self, name: &ServiceName) -> Option<String> {
        if self.system_services.iter().any(|s| s.name == *name) {
            return Some("healthcheck.system_services".into());
        }
        self.groups.iter().find_map(|(group, services)| {
            services
                .iter()
                .any(|s| s.name == *name)
                .then(|| format!("api.service-groups, group {group}"))
        })
    }

    /// What an agent keeps on its disk, as its registration answers it.
    pub fn upkeep(&self) -> torc_api::Upkeep {
        torc_api::Upkeep {
            logs: self.logs.cap(),
            keep_ended_per_service: self.logs.keep_ended_per_service,
            keep_ended_for_seconds: self.logs.keep_ended_for_in_seconds,
            disk_free_warning_percent: self.logs.disk_free_warning_percent,
        }
    }

    /// A rack with these nodes, no services, and the original's timers.
    pub fn with_nodes(name: &str, nodes: Vec<ConfiguredNode>) -> RackSettings {
        RackSettings {
            rack_name: name.to_string(),
            config_origin: "rack config".into(),
            nodes,
            open_join: false,
            node_timeout: Duration::from_secs(30),
            tasks_per_step: TASKS_PER_STEP,
            system_services: Vec::new(),
            groups: BTreeMap::new(),
            power_on: None,
            power_off: None,
            power_status: None,
            domain: "homer.ave".into(),
            service_domain: "service.torc".into(),
            node_ttl: 60,
            service_ttl: 5,
            dns_addons: Vec::new(),
            controller_addr: None,
            etcd_login: None,
            influxdb_login: None,
            framework_secrets: BTreeMap::new(),
            switch: None,
            containers: ContainersConfig::default(),
            alerts: torc_config::AlertsConfig::default(),
            logs: LogsConfig::default(),
        }
    }

    /// The rack secrets the config's services ask for.
    pub fn secret_names(&self) -> Vec<torc_types::SecretName> {
        let mut names: Vec<torc_types::SecretName> = self
            .system_services
            .iter()
            .chain(self.groups.values().flatten())
            .filter_map(|t| t.spec.as_ref())
            .flat_map(|s| s.credentials.secrets.iter().cloned())
            .chain(self.etcd_login.iter().map(|(_, s)| s.clone()))
            .chain(self.influxdb_login.iter().map(|(_, s)| s.clone()))
            .chain(self.framework_secrets.values().flatten().cloned())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The controller's own DNS names: `<rack>.<service_domain>` and `<node>.<domain>` of the
    /// controller (master) nodes.
    pub fn own_names(&self) -> Vec<String> {
        let mut names = vec![format!("{}.{}", self.rack_name, self.service_domain)];
        for node in self
            .nodes
            .iter()
            .filter(|n| n.node_type == NodeType::Master)
        {
            names.push(format!("{}.{}", node.name, self.domain));
        }
        names
    }

    pub fn from_config(config: &RackConfig, origin: &str) -> RackSettings {
        let restart = config.stateclean.restart_delay();
        let max_restart = config.stateclean.max_restart_delay();
        let template = |s: &ServiceConfig| service_template(s, restart, max_restart);
        RackSettings {
            rack_name: config.name.clone(),
            config_origin: origin.to_string(),
            nodes: config
                .nodes
                .iter()
                .map(|n| ConfiguredNode {
                    name: n.name.clone(),
                    ip: n.ip,
                    external_ip: n.external_ip,
                    management_ip: n.management_ip,
                    port: n.port,
                    node_type: n.node_type,
                    node_function: n.function.clone(),
                    resources: n.resources,
                    port_range: n.port_range,
                    task_block: n.task_block,
                    endpoint: n.endpoint,
                })
                .collect(),
            open_join: config.open_join,
            switch: (config.network_agent.as_ref())
                .filter(|a| a.agent_type == torc_config::NetworkAgentKind::Netlink)
                .map(|a| a.connection.clone()),
            node_timeout: config.stateclean.timeout(),
            tasks_per_step: TASKS_PER_STEP,
            system_services: config
                .healthcheck
                .system_services
                .iter()
                .map(template)
                .collect(),
            groups: config
                .api
                .service_groups
                .iter()
                .map(|g| (g.name.clone(), g.services.iter().map(template).collect()))
                .collect(),
            power_on: config.power_command.as_ref().map(|p| p.on.clone()),
            power_off: config.power_command.as_ref().map(|p| p.off.clone()),
            power_status: (config.power_command.as_ref()).and_then(|p| p.status.clone()),
            domain: config.domain.clone(),
            service_domain: config.service_domain.clone(),
            node_ttl: config.node_ttl_in_seconds,
            service_ttl: config.service_ttl_in_seconds,
            dns_addons: config
                .dns_addons
                .iter()
                .map(|a| (a.name.clone(), a.ip))
                .collect(),
            controller_addr: None,
            etcd_login: config
                .access
                .etcd
                .as_ref()
                .map(|l| (l.user.clone(), l.password_secret.clone())),
            influxdb_login: config
                .access
                .influxdb
                .as_ref()
                .map(|l| (l.user.clone(), l.password_secret.clone())),
            framework_secrets: config.access.framework_secrets.clone(),
            containers: config.containers.clone(),
            alerts: config.alerts.clone(),
            logs: config.logs.clone(),
        }
    }
}

fn service_template(
    s: &ServiceConfig,
    restart: Duration,
    max_restart: Duration,
) -> ServiceTemplate {
    let restart = s.restart_delay(restart);
    ServiceTemplate {
        name: s.name.clone(),
        spec: s.to_task_spec(),
        policy: ServicePolicy {
            is_job: s.is_job,
            is_metered: s.is_metered,
            restart_delay_ms: restart.as_millis() as u64,
            max_restart_delay_ms: max_restart.max(restart).as_millis() as u64,
            dependent_service: s.dependent_service.clone(),
            health: s.health.as_ref().map(|h| HealthSpec {
                probe: match &h.probe {
                    HealthProbe::Tcp(a) => Probe::Tcp(a.clone()),
                    HealthProbe::Http(u) => Probe::Http(u.clone()),
                    HealthProbe::Command(c) => Probe::Command(c.clone()),
                },
                interval_ms: h.interval().as_millis() as u64,
                timeout_ms: h.timeout().as_millis() as u64,
                failure_threshold: h.failure_threshold.max(1),
            }),
            image: s.image_name.clone().unwrap_or_default(),
            arguments: s.arguments.clone(),
            parameters: s.parameters.clone(),
            network_type: s.network_type.clone(),
            privileged: s.privileged,
            volumes: s
                .volumes
                .iter()
                .map(|v| OriginalVolume {
                    host_path: v.host_path.clone(),
                    container_path: v.container_path.clone(),
                    read_only_mode: v.read_only_mode,
                })
                .collect(),
            sla: match s.sla {
                None => "None",
                Some(Sla::SingletonEachNode) => "SingletonEachNode",
                Some(Sla::SingletonEachSlave) => "SingletonEachSlave",
            }
            .to_string(),
            dns_ttl: s.dns_ttl_in_seconds,
        },
        sla: s.sla.map(|x| match x {
            Sla::SingletonEachNode => SlaKind::EachNode,
            Sla::SingletonEachSlave => SlaKind::EachSlave,
        }),
        instances: s.number_of_instances.max(1),
    }
}

//! The original ToRC Scheduler's JSON shapes (reference §2), served on its original routes so
//! that its clients (statesync, the datacollector, Vector, sub-schedulers) work unchanged.
//! Field names and value spellings are exactly the original's.

use serde::{Deserialize, Serialize};

/// `GET /nodes` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OriginalNode {
    pub name: String,
    pub ip: String,
    pub external_ip: String,
    pub management_ip: String,
    pub node_type: String,
    pub node_function: String,
    pub active: bool,
    pub slave_id: String,
    pub port_id: u16,
    /// Unix seconds.
    pub last_seen: u64,
}

/// A host path mounted into a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalVolume {
    pub host_path: String,
    pub container_path: String,
    pub read_only_mode: bool,
}

/// `GET /services/running` entry, and the body of `POST /service/announce`.
///
/// On announce, `name`, `controller` and `ip` are required; the rest default as in a task the
/// original would have built from an empty service definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginalTask {
    pub name: String,
    pub controller: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub node_type: String,
    #[serde(default)]
    pub node_function: String,
    #[serde(default)]
    pub dependent_service: String,
    #[serde(default)]
    pub arguments: String,
    #[serde(default)]
    pub parameters: String,
    #[serde(default = "default_memory")]
    pub memory: f64,
    #[serde(default = "default_cpu")]
    pub cpu: f64,
    #[serde(default)]
    pub volumes: Vec<OriginalVolume>,
    #[serde(default)]
    pub privileged: bool,
    /// `None`, `SingletonEachNode` or `SingletonEachSlave`.
    #[serde(default = "default_sla")]
    pub sla: String,
    #[serde(default)]
    pub is_metered: bool,
    #[serde(default)]
    pub is_system_service: bool,
    #[serde(default)]
    pub is_job: bool,
    #[serde(default = "default_network")]
    pub network_type: String,
    pub ip: String,
    #[serde(default)]
    pub slave_id: String,
    /// `NotRunning`, `Restart`, `Requested`, `Accepted` or `Running`.
    #[serde(default = "default_state")]
    pub state: String,
    /// Unix seconds.
    #[serde(default)]
    pub last_update: u64,
}

fn default_memory() -> f64 {
    128.0
}
fn default_cpu() -> f64 {
    0.2
}
fn default_sla() -> String {
    "None".into()
}
fn default_network() -> String {
    "host".into()
}
fn default_state() -> String {
    "Running".into()
}

/// `{"result": "..."}`: the original's answer to every action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimpleResponse {
    pub result: String,
}

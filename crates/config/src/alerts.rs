//! The `alerts` section: rules the controller evaluates (`torc_controller`'s `alerts` module)
//! and the webhooks it tells when one fires and when it resolves. torc addition.
//!
//! ```yaml
//! alerts:
//!   evaluation_interval_in_seconds: 5
//!   webhooks: ["https://hooks.example.com/torc"]
//!   rules:
//!     - name: node-lost
//!       when: node_lost
//!     - name: crash-loop
//!       when: {crash_loop: {restarts: 3, within_seconds: 600}}
//!     - name: hot-cpu
//!       when: {metric: {name: cpu_percent, above: 90}}
//!       for_seconds: 120
//!     - name: disk-filling
//!       when: {disk_used_percent_above: 90}
//! ```
//!
//! The rules of a valid section (names unique and DNS-label-like, thresholds finite, webhooks
//! `http(s)://` URLs) are checked by `validate` like every other rule, naming the key.

use serde::{Deserialize, Serialize};

use crate::de::null_as_default;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// How often the rules are evaluated.
    pub evaluation_interval_in_seconds: u64,
    /// Each alert is POSTed (JSON) to every one of these when it fires and when it resolves.
    #[serde(deserialize_with = "null_as_default")]
    pub webhooks: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub rules: Vec<AlertRule>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            evaluation_interval_in_seconds: 5,
            webhooks: Vec::new(),
            rules: Vec::new(),
        }
    }
}

/// One rule: a condition, per node (or service, or file system) it holds for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Names the alert in the event feed and the webhook's payload.
    pub name: String,
    pub when: AlertCondition,
    /// How long the condition must hold before the alert fires (0: at the first evaluation
    /// that sees it).
    #[serde(default)]
    pub for_seconds: u64,
}

/// What an alert watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AlertCondition {
    /// A node of the config whose agent does not report (lost, or never joined).
    NodeLost,
    /// A system service restarted at least `restarts` times in the last `within_seconds`.
    CrashLoop { restarts: u32, within_seconds: u64 },
    /// A node's metric (its agent's latest sample) above a threshold.
    Metric { name: NodeMetric, above: f64 },
    /// A node's file system fuller than this percent.
    DiskUsedPercentAbove(f64),
}

/// The node metrics a rule may watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMetric {
    /// User and system CPU, percent of the node's capacity.
    CpuPercent,
    /// Memory used, percent of the total.
    MemoryPercent,
    /// The one-minute load average.
    Load1,
}

impl NodeMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeMetric::CpuPercent => "cpu_percent",
            NodeMetric::MemoryPercent => "memory_percent",
            NodeMetric::Load1 => "load1",
        }
    }
}

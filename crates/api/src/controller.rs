//! The rack's controllers as one of them sees them (`GET /api/v1/controller`, answered by any
//! controller, leader or standby): itself, who leads, the controllers campaigning, and the store
//! their state lives in. `torc controller status` prints it; the UI's status page shows it.
//!
//! A sole controller (one controller on its local store) is `role: sole`: it always acts, and
//! its store has no endpoints.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/controller`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerStatus {
    /// This controller's name (`--name`; its node's by default).
    pub name: String,
    /// Where agents and clients reach it (`--advertise-url`), when it was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub role: ControllerRole,
    /// The epoch it leads (or led, or won) under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Whether it acts now: places, restarts, answers long polls.
    pub acting: bool,
    /// Why it does not act, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
    /// How much longer it may act without another keepalive answered, in milliseconds (a
    /// leader of several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_for_ms: Option<u64>,
    /// The last failure to renew its lease, since the last renewal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trouble: Option<String>,
    /// Who leads, as this controller last saw it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<ControllerRef>,
    /// The controllers campaigning, in election order (the first leads).
    #[serde(default)]
    pub controllers: Vec<ControllerRef>,
    pub store: StoreView,
}

/// Where a controller stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControllerRole {
    /// The only controller, on its local store: it always leads.
    Sole,
    /// Leads and acts.
    Leader,
    /// Won the election, and is catching up with the store before it acts.
    Elected,
    /// Leads, but acts on nothing until its lease is renewed (or a commit's unknown outcome is
    /// resolved).
    Lapsed,
    /// Does not lead: serves reads marked stale, and sends changes to the leader.
    Standby,
    /// Handing leadership over.
    SteppingDown,
}

impl ControllerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ControllerRole::Sole => "sole",
            ControllerRole::Leader => "leader",
            ControllerRole::Elected => "elected",
            ControllerRole::Lapsed => "lapsed",
            ControllerRole::Standby => "standby",
            ControllerRole::SteppingDown => "stepping down",
        }
    }
}

/// A controller among the rack's: its name, URL and epoch (its campaign key's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerRef {
    pub name: String,
    pub url: String,
    pub epoch: u64,
}

/// The store the controllers' state lives in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreView {
    /// `redb` (a local file) or `etcd`.
    pub kind: String,
    /// The file, or the etcd prefix.
    pub location: String,
    /// The store's revision as this controller last saw it (etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The etcd members, each as this controller last reached it.
    #[serde(default)]
    pub endpoints: Vec<StoreEndpoint>,
}

/// One etcd member, as its `Maintenance.Status` answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreEndpoint {
    pub url: String,
    /// It answered, with a raft leader.
    pub healthy: bool,
    /// Why not, when it did not answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its member id, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_id: Option<String>,
    /// It is the raft leader.
    #[serde(default)]
    pub raft_leader: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_term: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size: Option<i64>,
    /// etcd's alarms on it (`NOSPACE`, `CORRUPT`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alarms: Vec<String>,
}

/// `POST /api/v1/controller/step-down`: the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDownResponse {
    /// The epoch the leader gave up.
    pub epoch: u64,
    /// The standbys that may take over.
    pub standbys: Vec<ControllerRef>,
}

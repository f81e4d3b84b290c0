//! The node table: every node of the rack, as the rack config declares it and as its agent
//! reports it, and the generation of each node's desired task set.
//!
//! What it is not: it knows nothing of tasks. What a node has allocated is the task table's
//! ledger; the rack passes it in when it builds a node's view.
//!
//! Invariants:
//! - The config wins on what it declares (address, type, function, resources, port range); the
//!   agent supplies the rest. A configured node registers only from its configured address.
//! - No two nodes share an address.
//! - Desired-set generations come from one rack-wide counter that only grows and is persisted
//!   with the records, so an agent never sees a generation twice, across controller restarts
//!   too.
//! - What people set on a node (cordoned, its drain, its power command's last result) is kept
//!   in its record, so it outlives controller restarts and failovers, and the config does not
//!   override it. A node with a drain going on is cordoned.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use torc_api::{
    DrainView, NodeResources, NodeView, PowerResult, PowerView, RegisterRequest, RuntimeInfo,
};
use torc_scheduler::{Capability, NodeState};
use torc_types::{Ipv4Block, NodeName, NodeType, PortRange, Resources, UnixMillis};

use super::error::NodeError;
use crate::settings::{ConfiguredNode, RackSettings};
use crate::store::{Table, Write};

/// The store's counter of the nodes' desired-set generation.
pub(crate) const GENERATION_KEY: &str = "generation";

/// A node's durable record. Other parts read it; only the table changes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub(crate) name: NodeName,
    pub(crate) ip: IpAddr,
    pub(crate) external_ip: Option<IpAddr>,
    pub(crate) management_ip: Option<IpAddr>,
    pub(crate) node_type: NodeType,
    pub(crate) node_function: String,
    pub(crate) registered: bool,
    pub(crate) active: bool,
    pub(crate) last_seen: UnixMillis,
    pub(crate) agent_url: Option<String>,
    pub(crate) total: Resources,
    pub(crate) port_range: PortRange,
    /// The switch port the node hangs off (the original's `port_id`).
    #[serde(default)]
    pub(crate) port_id: u16,
    pub(crate) attributes: BTreeMap<String, String>,
    pub(crate) runtime: RuntimeInfo,
    /// Generation of this node's desired task set.
    pub(crate) desired_generation: u64,
    /// Declared in the rack config (as opposed to joined openly).
    pub(crate) configured: bool,
    /// The addresses its rack-network tasks get (config only).
    #[serde(default)]
    pub(crate) task_block: Option<Ipv4Block>,
    /// Where people reach it from outside the rack network (config only).
    #[serde(default)]
    pub(crate) endpoint: Option<IpAddr>,
    /// No new task is placed on it (`torc node cordon`).
    #[serde(default)]
    pub(crate) cordoned: bool,
    /// Its last drain, going on or ended.
    #[serde(default)]
    pub(crate) drain: Option<DrainRecord>,
    /// Its power command's last run and the state its last `status` read.
    #[serde(default)]
    pub(crate) power: Option<PowerView>,
}

/// A node's drain as stored: what the drain step (`Rack::drain_step`) needs to go on after
/// a restart. What moves now is not here: it is the supervisor's (an instance's replacement).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct DrainRecord {
    pub(crate) started_at: UnixMillis,
    #[serde(default)]
    pub(crate) done_at: Option<UnixMillis>,
    /// Why it ended before its tasks had left (the node was uncordoned).
    #[serde(default)]
    pub(crate) stopped: Option<String>,
    #[serde(default)]
    pub(crate) moved: u32,
    /// Why it does not progress now.
    #[serde(default)]
    pub(crate) waiting: Option<String>,
    /// No replacement is started before this (one failed).
    #[serde(default)]
    pub(crate) retry_at: UnixMillis,
}

impl DrainRecord {
    pub(crate) fn going_on(&self) -> bool {
        self.done_at.is_none()
    }
}

impl NodeRecord {
    fn from_config(c: &ConfiguredNode) -> NodeRecord {
        NodeRecord {
            name: c.name.clone(),
            ip: c.ip,
            external_ip: c.external_ip,
            management_ip: c.management_ip,
            node_type: c.node_type,
            node_function: c.node_function.clone().unwrap_or_else(|| "none".into()),
            registered: false,
            active: false,
            last_seen: 0,
            agent_url: None,
            total: c.resources.unwrap_or(Resources::ZERO),
            port_range: c.port_range.unwrap_or_default(),
            port_id: c.port,
            attributes: BTreeMap::new(),
            runtime: RuntimeInfo::default(),
            desired_generation: 0,
            configured: true,
            task_block: c.task_block,
            endpoint: c.endpoint,
            cordoned: false,
            drain: None,
            power: None,
        }
    }

    /// What the node's agent last said it can do: `ready` and, when not, `note` (or
    /// `missing` when it gave no reason: an older agent).
    fn capability(&self, ready: bool, note: Option<&String>, missing: &str) -> Capability {
        if !self.registered {
            Capability::Unknown
        } else if ready {
            Capability::Ready
        } else {
            Capability::Unavailable {
                note: note.cloned().unwrap_or_else(|| missing.into()),
            }
        }
    }

    fn containers_capability(&self) -> Capability {
        let r = &self.runtime;
        let missing = "this agent runs no containers (an agent older than containers)";
        self.capability(r.containers, r.containers_note.as_ref(), missing)
    }

    /// The scheduler's view of the node, with nothing allocated (the ledger adds what is).
    pub(crate) fn scheduler_state(&self) -> NodeState {
        NodeState {
            name: self.name.clone(),
            node_type: self.node_type,
            node_function: self.node_function.clone(),
            active: self.active,
            cordoned: self.cordoned,
            total: self.total,
            allocated: Resources::ZERO,
            port_range: self.port_range,
            used_ports: BTreeSet::new(),
            tasks: 0,
            task_block: self.task_block,
            rack_network: self.capability(
                self.runtime.rack_network,
                self.runtime.rack_network_note.as_ref(),
                "this agent has no rack network support",
            ),
            containers: self.containers_capability(),
            used_addresses: BTreeSet::new(),
            next_address: 0,
        }
    }

    /// The API's view, with what the ledger says is allocated on the node, and its drain as
    /// the rack sees it.
    pub(crate) fn view(
        &self,
        allocated: Resources,
        ports: usize,
        tasks: usize,
        drain: Option<DrainView>,
    ) -> NodeView {
        NodeView {
            name: self.name.clone(),
            ip: self.ip,
            external_ip: self.external_ip,
            management_ip: self.management_ip,
            node_type: self.node_type,
            node_function: self.node_function.clone(),
            active: self.active,
            registered: self.registered,
            last_seen: self.last_seen,
            agent_url: self.agent_url.clone(),
            resources: NodeResources {
                total: self.total,
                allocated,
                ports_allocated: ports,
            },
            port_range: self.port_range,
            task_block: self.task_block,
            endpoint: self.endpoint,
            attributes: self.attributes.clone(),
            runtime: self.runtime.clone(),
            tasks,
            cordoned: self.cordoned,
            drain,
            power: self.power.clone(),
        }
    }
}

/// The rack's nodes and their desired-set generations.
#[derive(Debug)]
pub struct NodeTable {
    records: BTreeMap<NodeName, NodeRecord>,
    /// The last desired-set generation handed out.
    generation: u64,
    /// Records to persist.
    dirty: BTreeSet<NodeName>,
    /// Nodes whose desired set changed since the last `take_changes`.
    desired_changed: BTreeSet<NodeName>,
}

impl NodeTable {
    /// The config's nodes, completed by what the store held. A node that was up when the
    /// controller stopped gets a full timeout from `now` to report again; a node removed from
    /// the config is forgotten.
    pub fn load(
        settings: &RackSettings,
        stored: Vec<NodeRecord>,
        generation: u64,
        now: UnixMillis,
    ) -> NodeTable {
        let mut records: BTreeMap<NodeName, NodeRecord> = settings
            .nodes
            .iter()
            .map(|c| (c.name.clone(), NodeRecord::from_config(c)))
            .collect();
        for stored in stored {
            match records.get_mut(&stored.name) {
                Some(n) => {
                    n.registered = stored.registered;
                    n.active = stored.active;
                    n.last_seen = if stored.active { now } else { stored.last_seen };
                    n.agent_url = stored.agent_url;
                    if n.total == Resources::ZERO {
                        n.total = stored.total;
                    }
                    n.attributes = stored.attributes;
                    n.runtime = stored.runtime;
                    n.cordoned = stored.cordoned;
                    n.drain = stored.drain;
                    n.power = stored.power;
                    n.desired_generation = stored.desired_generation;
                    if n.node_function == "none" {
                        n.node_function = stored.node_function;
                    }
                    if !settings
                        .nodes
                        .iter()
                        .any(|c| c.name == n.name && c.port_range.is_some())
                    {
                        n.port_range = stored.port_range;
                    }
                }
                None if settings.open_join && !stored.configured => {
                    // The config wins on addresses too: a node it now lists at a joined
                    // node's address takes the address, and the joined node is gone (its
                    // tasks are lost, as for a node removed from the config).
                    if let Some(owner) = records.values().find(|n| n.ip == stored.ip) {
                        tracing::warn!(
                            node = %stored.name,
                            ip = %stored.ip,
                            owner = %owner.name,
                            "a node that joined is dropped: the rack config gives its address to another node"
                        );
                        continue;
                    }
                    let mut stored = stored;
                    if stored.active {
                        stored.last_seen = now;
                    }
                    records.insert(stored.name.clone(), stored);
                }
                None => {}
            }
        }
        NodeTable {
            records,
            generation,
            dirty: BTreeSet::new(),
            desired_changed: BTreeSet::new(),
        }
    }

    /// An agent (re)joins: checks that it may, and takes what it reports (the config still
    /// winning). The node is active from now and its desired set gets a fresh generation (the
    /// agent starts from 0). `req.tasks` is not looked at: the task table takes those.
    pub fn register(
        &mut self,
        settings: &RackSettings,
        req: RegisterRequest,
        now: UnixMillis,
    ) -> Result<NodeName, NodeError> {
        if !req.resources.is_valid() {
            return Err(NodeError::BadResources);
        }
        let origin = &settings.config_origin;
        // No node may take another's address (its certificate would name that address).
        if let Some(other) = self
            .records
            .values()
            .find(|n| n.name != req.node && n.ip == req.ip)
        {
            return Err(NodeError::AddressTaken {
                ip: req.ip,
                owner: other.name.clone(),
                node: req.node,
            });
        }
        let node = match self.records.get_mut(&req.node) {
            Some(node) => {
                if node.configured && node.ip != req.ip {
                    return Err(NodeError::WrongAddress {
                        node: req.node,
                        configured: node.ip,
                        from: req.ip,
                        origin: origin.clone(),
                    });
                }
                node
            }
            None if settings.open_join => {
                let c = ConfiguredNode {
                    name: req.node.clone(),
                    ip: req.ip,
                    external_ip: None,
                    management_ip: None,
                    port: 0,
                    node_type: req.node_type.unwrap_or(NodeType::Slave),
                    node_function: None,
                    resources: None,
                    port_range: None,
                    task_block: None,
                    endpoint: None,
                };
                let mut record = NodeRecord::from_config(&c);
                record.configured = false;
                self.records.entry(req.node.clone()).or_insert(record)
            }
            None => {
                return Err(NodeError::NotConfigured {
                    node: req.node,
                    origin: origin.clone(),
                });
            }
        };
        let configured = settings.nodes.iter().find(|c| c.name == req.node);
        node.registered = true;
        node.active = true;
        node.last_seen = now;
        node.agent_url = Some(req.agent_url);
        node.attributes = req.attributes;
        node.runtime = req.runtime;
        node.total = configured
            .and_then(|c| c.resources)
            .unwrap_or(req.resources);
        node.port_range = configured
            .and_then(|c| c.port_range)
            .unwrap_or(req.port_range);
        if configured.and_then(|c| c.node_function.as_ref()).is_none()
            && let Some(f) = req.node_function
        {
            node.node_function = f;
        }
        if let (None, Some(t)) = (configured, req.node_type) {
            node.node_type = t;
        }
        let name = node.name.clone();
        self.dirty.insert(name.clone());
        // A new relationship: the agent starts from generation 0, so give it a fresh one.
        self.desired_changed.insert(name.clone());
        Ok(name)
    }

    /// A registered, active node was heard from.
    pub fn heartbeat(&mut self, node: &NodeName, now: UnixMillis) -> Result<(), NodeError> {
        let record = self
            .records
            .get_mut(node)
            .ok_or_else(|| NodeError::Unregistered(node.clone()))?;
        if !record.registered || !record.active {
            // The agent must re-register (with its full task list) before it is trusted again.
            return Err(NodeError::Inactive(node.clone()));
        }
        record.last_seen = now;
        Ok(())
    }

    /// An active node's report reached the controller at `at`, before it could be processed:
    /// the node was heard then (its last word never moves back). Inactive and unknown nodes are
    /// left as they are: they must register again.
    pub fn heard(&mut self, node: &NodeName, at: UnixMillis) {
        if let Some(n) = self.records.get_mut(node).filter(|n| n.active) {
            n.last_seen = n.last_seen.max(at);
        }
    }

    /// Marks inactive the active nodes silent for more than `timeout_ms`; returns them.
    pub fn expire(&mut self, timeout_ms: u64, now: UnixMillis) -> Vec<NodeName> {
        let expired: Vec<NodeName> = self
            .records
            .values()
            .filter(|n| n.active && now.saturating_sub(n.last_seen) > timeout_ms)
            .map(|n| n.name.clone())
            .collect();
        for name in &expired {
            if let Some(n) = self.records.get_mut(name) {
                n.active = false;
            }
            self.dirty.insert(name.clone());
        }
        expired
    }

    /// Moves every active node's last word `ms` later (never past `now`): the controller did
    /// not run for that long, so the nodes' silence over it is not theirs (see
    /// `Rack::excuse_stall`).
    pub fn excuse(&mut self, ms: u64, now: UnixMillis) {
        for n in self.records.values_mut().filter(|n| n.active) {
            n.last_seen = n.last_seen.saturating_add(ms).min(now);
        }
    }

    /// Notes that a node's desired set changed: it gets a new generation at `take_changes`.
    pub fn desired_set_changed(&mut self, node: &NodeName) {
        self.desired_changed.insert(node.clone());
    }

    /// Gives every node whose desired set changed a new generation, and drains the records to
    /// persist. Returns the writes and the (node, generation) pairs to wake agents with.
    pub fn take_changes(&mut self) -> (Vec<Write>, Vec<(NodeName, u64)>) {
        let mut wake = Vec::new();
        for name in std::mem::take(&mut self.desired_changed) {
            if let Some(node) = self.records.get_mut(&name) {
                self.generation += 1;
                node.desired_generation = self.generation;
                self.dirty.insert(name.clone());
                wake.push((name, self.generation));
            }
        }
        let mut writes: Vec<Write> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|name| {
                let node = self.records.get(&name)?;
                Some(Write::put(Table::Nodes, name.as_str(), node))
            })
            .collect();
        if !wake.is_empty() {
            writes.push(Write::Meta(GENERATION_KEY, self.generation));
        }
        (writes, wake)
    }

    pub fn get(&self, name: &NodeName) -> Option<&NodeRecord> {
        self.records.get(name)
    }

    pub fn contains(&self, name: &NodeName) -> bool {
        self.records.contains_key(name)
    }

    /// Every node, by name.
    pub fn iter(&self) -> impl Iterator<Item = &NodeRecord> {
        self.records.values()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn active_count(&self) -> usize {
        self.records.values().filter(|n| n.active).count()
    }

    pub fn ip(&self, name: &NodeName) -> Option<IpAddr> {
        self.records.get(name).map(|n| n.ip)
    }

    /// The first master node's address (the rack's nameserver).
    pub fn master_ip(&self) -> Option<IpAddr> {
        self.records
            .values()
            .find(|n| n.node_type == NodeType::Master)
            .map(|n| n.ip)
    }

    fn record_mut(&mut self, name: &NodeName) -> Result<&mut NodeRecord, NodeError> {
        let record =
            (self.records.get_mut(name)).ok_or_else(|| NodeError::Unknown(name.clone()))?;
        self.dirty.insert(name.clone());
        Ok(record)
    }

    /// Cordons a node or lets tasks on it again; uncordoning stops a drain going on (as
    /// `stopped`). Returns whether that changed anything.
    pub fn set_cordoned(
        &mut self,
        name: &NodeName,
        cordoned: bool,
        now: UnixMillis,
    ) -> Result<bool, NodeError> {
        let record = self.record_mut(name)?;
        let changed = record.cordoned != cordoned;
        record.cordoned = cordoned;
        if let Some(drain) = record.drain.as_mut().filter(|d| !cordoned && d.going_on()) {
            drain.done_at = Some(now);
            drain.stopped = Some("the node was uncordoned".into());
            drain.waiting = None;
        }
        Ok(changed)
    }

    /// Starts a drain of a node (it is cordoned too); refused while one goes on.
    pub fn start_drain(&mut self, name: &NodeName, now: UnixMillis) -> Result<(), NodeError> {
        let record = self.record_mut(name)?;
        if let Some(d) = record.drain.as_ref().filter(|d| d.going_on()) {
            return Err(NodeError::AlreadyDraining {
                node: name.clone(),
                moved: d.moved,
            });
        }
        record.cordoned = true;
        record.drain = Some(DrainRecord {
            started_at: now,
            done_at: None,
            stopped: None,
            moved: 0,
            waiting: None,
            retry_at: 0,
        });
        Ok(())
    }

    /// The nodes with a drain going on.
    pub fn draining(&self) -> Vec<NodeName> {
        (self.records.values())
            .filter(|n| n.drain.as_ref().is_some_and(DrainRecord::going_on))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Changes a node's drain going on through `f`; stored only when `f` changed it.
    pub fn update_drain(&mut self, name: &NodeName, f: impl FnOnce(&mut DrainRecord)) {
        let Some(drain) = (self.records.get_mut(name))
            .and_then(|n| n.drain.as_mut())
            .filter(|d| d.going_on())
        else {
            return;
        };
        let before = drain.clone();
        f(drain);
        if *drain != before {
            self.dirty.insert(name.clone());
        }
    }

    /// Keeps a power command's run on its node (a `status` also sets the state it read).
    pub fn power_ran(&mut self, result: &PowerResult) -> Result<(), NodeError> {
        let record = self.record_mut(&result.node)?;
        let (mut state, mut state_at) = record
            .power
            .as_ref()
            .map_or((None, 0), |p| (p.state, p.state_at));
        if let Some(read) = result.state {
            (state, state_at) = (Some(read), result.at);
        }
        record.power = Some(PowerView {
            state,
            state_at,
            last: result.clone(),
        });
        Ok(())
    }

    /// The scheduler's view of every node, with nothing allocated.
    pub fn scheduler_states(&self) -> Vec<NodeState> {
        self.records
            .values()
            .map(NodeRecord::scheduler_state)
            .collect()
    }
}

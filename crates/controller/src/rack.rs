//! The rack's state as the controller keeps it: nodes, tasks, and the rules of their lives.
//!
//! `Rack` is plain data plus transitions. It performs no I/O and reads no clock (time is an
//! argument), so every rule here can be tested directly. The controller wraps it with the store
//! and the network: after each change it drains `take_changes()`, persists the records, and
//! wakes the agents whose desired task set changed.
//!
//! Invariants:
//! - A task id is never reused, and a task in a terminal state never changes again.
//! - A node's desired set is exactly its tasks in `staging` or `running`; any change to that set
//!   gives the node a new, higher generation.
//! - Resources allocated on a node are derived from its tasks, never stored separately.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use torc_api::{
    DesiredState, DesiredTask, NodeResources, NodeView, RegisterRequest, RuntimeInfo, StatusReport,
    TaskFilter, TaskReport, TaskView, Transition,
};
use torc_scheduler::{NodeState, Planner, TaskRequest};
use torc_types::{
    FrameworkName, NodeName, PortRange, Resources, ServiceName, TaskId, TaskSpec, TaskState,
    UnixMillis,
};

use crate::frameworks::FrameworkRecord;
use crate::services::{AnnouncedRecord, ServiceRecord};
use crate::settings::{ConfiguredNode, RackSettings};
use crate::store::{Loaded, Table, Write};

/// How many transitions a task keeps in its history.
const HISTORY_LIMIT: usize = 32;
/// Ended tasks kept for inspection; older ones are forgotten.
const ENDED_TASKS_KEPT: usize = 2_000;

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RackError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A node's durable record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NodeRecord {
    pub(crate) name: NodeName,
    pub(crate) ip: IpAddr,
    pub(crate) external_ip: Option<IpAddr>,
    pub(crate) management_ip: Option<IpAddr>,
    pub(crate) node_type: String,
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
}

impl NodeRecord {
    fn from_config(c: &ConfiguredNode) -> NodeRecord {
        NodeRecord {
            name: c.name.clone(),
            ip: c.ip,
            external_ip: c.external_ip,
            management_ip: c.management_ip,
            node_type: c.node_type.clone(),
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
        }
    }
}

/// What a change left to do: records to persist and agents to wake.
pub struct Changes {
    pub writes: Vec<Write>,
    /// Nodes whose desired set has a new generation.
    pub wake: Vec<(NodeName, u64)>,
    /// Whether the rack's names (DNS) may differ: a record changed, or a service's health did.
    /// Heartbeats and framework polls change neither, so they skip rebuilding the names.
    pub names_may_change: bool,
}

pub struct Rack {
    pub(crate) settings: RackSettings,
    pub(crate) nodes: BTreeMap<NodeName, NodeRecord>,
    pub(crate) tasks: BTreeMap<TaskId, TaskView>,
    /// Supervised service instances (system services and started groups), by instance name.
    pub(crate) services: BTreeMap<ServiceName, ServiceRecord>,
    pub(crate) frameworks: BTreeMap<FrameworkName, FrameworkRecord>,
    /// External tasks announced by sub-schedulers (`POST /service/announce`), by name.
    pub(crate) announced: BTreeMap<String, AnnouncedRecord>,
    /// Framework task updates of this controller life, oldest first: (seq, framework, task).
    pub(crate) events: std::collections::VecDeque<(u64, FrameworkName, TaskId)>,
    pub(crate) event_seq: u64,
    /// Recent events for people (the UI's feed), newest last; in memory only.
    pub(crate) log: std::collections::VecDeque<torc_api::RackEvent>,
    /// A service's health changed since the last `take_changes` (health is not persisted).
    pub(crate) health_changed: bool,
    log_seq: u64,
    pub(crate) epoch: u64,
    pub(crate) started_at: UnixMillis,
    generation: u64,
    /// What every node has allocated, kept in step with task transitions (never recomputed
    /// from all tasks on the hot path).
    ledger: Planner,
    /// Tasks waiting for a node, oldest first.
    pending: BTreeSet<(UnixMillis, TaskId)>,
    /// How many tasks are in a terminal state (for retention).
    ended: usize,
    dirty_nodes: BTreeSet<NodeName>,
    dirty_tasks: BTreeSet<TaskId>,
    deleted_tasks: Vec<TaskId>,
    pub(crate) dirty_other: BTreeSet<(Table, String)>,
    desired_changed: BTreeSet<NodeName>,
}

impl Rack {
    /// Builds the rack from the config and whatever the store held. Config wins on what it
    /// declares (addresses, type, function); the store supplies what only agents know.
    pub fn new(
        settings: RackSettings,
        mut loaded: Loaded,
        now: UnixMillis,
    ) -> Result<Rack, String> {
        let mut nodes: BTreeMap<NodeName, NodeRecord> = settings
            .nodes
            .iter()
            .map(|c| (c.name.clone(), NodeRecord::from_config(c)))
            .collect();
        let stored_nodes: Vec<NodeRecord> = loaded.take(Table::Nodes).map_err(|e| e.to_string())?;
        for stored in stored_nodes {
            match nodes.get_mut(&stored.name) {
                Some(n) => {
                    n.registered = stored.registered;
                    // A node that was up when the controller stopped gets a full timeout to
                    // report again before it is declared inactive.
                    n.active = stored.active;
                    n.last_seen = if stored.active { now } else { stored.last_seen };
                    n.agent_url = stored.agent_url;
                    if n.total == Resources::ZERO {
                        n.total = stored.total;
                    }
                    n.attributes = stored.attributes;
                    n.runtime = stored.runtime;
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
                    let mut stored = stored;
                    if stored.active {
                        stored.last_seen = now;
                    }
                    nodes.insert(stored.name.clone(), stored);
                }
                // A node removed from the config is forgotten; its tasks are lost below.
                None => {}
            }
        }
        let tasks: BTreeMap<TaskId, TaskView> = loaded
            .take::<TaskView>(Table::Tasks)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|t| (t.id.clone(), t))
            .collect();
        let services = loaded
            .take::<ServiceRecord>(Table::Services)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let frameworks = loaded
            .take::<FrameworkRecord>(Table::Frameworks)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|mut f| {
                // A framework gets a full failover timeout from the restart to come back.
                f.last_seen = now;
                (f.name.clone(), f)
            })
            .collect();
        let announced = loaded
            .take::<AnnouncedRecord>(Table::Announced)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|a| (a.task.name.clone(), a))
            .collect();
        let generation = loaded.meta("generation").unwrap_or(0);
        let mut rack = Rack {
            settings,
            nodes,
            tasks,
            services,
            frameworks,
            announced,
            events: std::collections::VecDeque::new(),
            event_seq: 0,
            log: std::collections::VecDeque::new(),
            health_changed: false,
            log_seq: 0,
            epoch: (torc_types::random_u64() & 0xffff_ffff).max(1),
            started_at: now,
            generation,
            ledger: Planner::new(Vec::new()),
            pending: BTreeSet::new(),
            ended: 0,
            dirty_nodes: BTreeSet::new(),
            dirty_tasks: BTreeSet::new(),
            deleted_tasks: Vec::new(),
            dirty_other: BTreeSet::new(),
            desired_changed: BTreeSet::new(),
        };
        rack.ledger = Planner::new(rack.node_states());
        for t in rack.tasks.values() {
            match t.state {
                TaskState::Pending => {
                    rack.pending.insert((t.created_at, t.id.clone()));
                }
                s if s.is_terminal() => rack.ended += 1,
                _ => {}
            }
        }
        let orphans: Vec<TaskId> = rack
            .tasks
            .values()
            .filter(|t| !t.state.is_terminal())
            .filter(|t| t.node.as_ref().is_some_and(|n| !rack.nodes.contains_key(n)))
            .map(|t| t.id.clone())
            .collect();
        for id in orphans {
            rack.transition(
                &id,
                TaskState::Lost,
                Some("its node was removed from the rack config".into()),
                None,
                now,
            );
        }
        Ok(rack)
    }

    /// Adds an event to the feed (bounded).
    pub(crate) fn record(
        &mut self,
        kind: &str,
        level: &str,
        message: String,
        task: Option<&TaskId>,
        node: Option<&NodeName>,
        now: UnixMillis,
    ) {
        self.log_seq += 1;
        self.log.push_back(torc_api::RackEvent {
            seq: self.log_seq,
            at: now,
            kind: kind.to_string(),
            level: level.to_string(),
            message,
            task: task.cloned(),
            node: node.cloned(),
        });
        while self.log.len() > 500 {
            self.log.pop_front();
        }
    }

    /// Events after `after` (a `seq`), oldest first.
    pub fn events(&self, after: u64) -> Vec<torc_api::RackEvent> {
        self.log.iter().filter(|e| e.seq > after).cloned().collect()
    }

    /// A rack with nothing stored yet.
    pub fn fresh(settings: RackSettings, now: UnixMillis) -> Rack {
        Rack::new(settings, Loaded::default(), now).expect("an empty store always loads")
    }

    pub fn settings(&self) -> &RackSettings {
        &self.settings
    }

    // -----------------------------------------------------------------------------------------
    // Changes

    /// Drains what changed since the last call: records to write and agents to wake.
    pub fn take_changes(&mut self) -> Changes {
        let mut wake = Vec::new();
        for name in std::mem::take(&mut self.desired_changed) {
            if let Some(node) = self.nodes.get_mut(&name) {
                self.generation += 1;
                node.desired_generation = self.generation;
                self.dirty_nodes.insert(name.clone());
                wake.push((name, self.generation));
            }
        }
        let mut writes = Vec::new();
        for name in std::mem::take(&mut self.dirty_nodes) {
            if let Some(node) = self.nodes.get(&name) {
                writes.push(Write::put(Table::Nodes, name.as_str(), node));
            }
        }
        for id in std::mem::take(&mut self.dirty_tasks) {
            if let Some(task) = self.tasks.get(&id) {
                writes.push(Write::put(Table::Tasks, id.as_str(), task));
            }
        }
        for id in self.deleted_tasks.drain(..) {
            writes.push(Write::Delete(Table::Tasks, id.to_string()));
        }
        for (table, key) in std::mem::take(&mut self.dirty_other) {
            let value = match table {
                Table::Services => self.services.get(key.as_str()).map(serde_json::to_value),
                Table::Frameworks => self.frameworks.get(key.as_str()).map(serde_json::to_value),
                Table::Announced => self.announced.get(&key).map(serde_json::to_value),
                Table::Nodes | Table::Tasks | Table::Credentials | Table::Secrets => None,
            };
            match value {
                Some(v) => writes.push(Write::put(table, &key, &v.expect("records serialise"))),
                None => writes.push(Write::Delete(table, key)),
            }
        }
        if !wake.is_empty() {
            writes.push(Write::Meta("generation", self.generation));
        }
        let names_may_change = !writes.is_empty() || std::mem::take(&mut self.health_changed);
        Changes {
            writes,
            wake,
            names_may_change,
        }
    }

    /// Moves a task to a new state, keeping its history and the desired sets in step.
    fn transition(
        &mut self,
        id: &TaskId,
        state: TaskState,
        message: Option<String>,
        exit_code: Option<i32>,
        now: UnixMillis,
    ) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        let old = task.state;
        if old.is_terminal() || (old == state && exit_code.is_none() && message.is_none()) {
            return;
        }
        task.state = state;
        task.updated_at = now;
        if exit_code.is_some() {
            task.exit_code = exit_code;
        }
        // The message is the last word on the task: a new state brings its own (or none).
        if message.is_some() || old != state {
            task.message.clone_from(&message);
        }
        if old != state {
            task.history.push(Transition {
                state,
                at: now,
                message,
            });
            if task.history.len() > HISTORY_LIMIT {
                let excess = task.history.len() - HISTORY_LIMIT;
                task.history.drain(1..=excess);
            }
        }
        if old != state {
            if old.holds_resources()
                && !state.holds_resources()
                && let Some(node) = &task.node
            {
                self.ledger.release(node, &task.spec.resources, &task.ports);
            }
            if old == TaskState::Pending {
                self.pending.remove(&(task.created_at, task.id.clone()));
            }
            if state.is_terminal() {
                self.ended += 1;
            }
        }
        let desired = |s: TaskState| matches!(s, TaskState::Staging | TaskState::Running);
        if old != state
            && (desired(old) || desired(state))
            && let Some(node) = &task.node
        {
            self.desired_changed.insert(node.clone());
        }
        self.dirty_tasks.insert(id.clone());
        if old != state {
            if matches!(state, TaskState::Failed | TaskState::Lost) {
                let t = &self.tasks[id];
                let msg = format!(
                    "task {} {state}{}",
                    t.id,
                    t.message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                );
                let (task, node) = (t.id.clone(), t.node.clone());
                self.record("task", "error", msg, Some(&task), node.as_ref(), now);
            }
            self.task_changed(id, now);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Tasks

    /// Accepts a task; it is placed now if a node fits, or stays pending with the reason.
    pub fn launch(
        &mut self,
        spec: TaskSpec,
        framework: FrameworkName,
        now: UnixMillis,
    ) -> Result<TaskId, RackError> {
        spec.validate()
            .map_err(|e| RackError::Invalid(format!("task spec: {e}")))?;
        // The controller's own name and the config's DNS addons are not for tasks: a task so
        // named would answer in DNS (and hold a certificate) for them.
        if spec.name.as_str() == self.settings.rack_name
            || self
                .settings
                .dns_addons
                .iter()
                .any(|(n, _)| *n == spec.name)
        {
            return Err(RackError::Invalid(format!(
                "name: {} is reserved (the controller's own name, or a dns-addon in {})",
                spec.name, self.settings.config_origin
            )));
        }
        if let Some(n) = &spec.constraints.node_name
            && !self.nodes.contains_key(n)
        {
            return Err(RackError::Invalid(format!(
                "constraints.node_name: no node named \"{n}\" in the rack"
            )));
        }
        let id = new_task_id(&spec);
        let task = TaskView {
            id: id.clone(),
            name: spec.name.clone(),
            framework,
            state: TaskState::Pending,
            node: None,
            ip: None,
            ports: Vec::new(),
            spec,
            exit_code: None,
            message: None,
            created_at: now,
            updated_at: now,
            history: vec![Transition {
                state: TaskState::Pending,
                at: now,
                message: None,
            }],
        };
        self.pending.insert((now, id.clone()));
        self.tasks.insert(id.clone(), task);
        self.dirty_tasks.insert(id.clone());
        self.schedule(now);
        Ok(id)
    }

    /// Asks for a task to end. Pending tasks end at once; placed ones are killed by their agent.
    pub fn kill(&mut self, id: &TaskId, now: UnixMillis) -> Result<(), RackError> {
        self.kill_with(id, "kill requested", now)
    }

    /// `kill`, with the reason recorded on the task.
    pub(crate) fn kill_with(
        &mut self,
        id: &TaskId,
        why: &str,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        let task = self
            .tasks
            .get(id)
            .ok_or_else(|| RackError::NotFound(format!("no task with id \"{id}\"")))?;
        match task.state {
            s if s.is_terminal() => Err(RackError::Conflict(format!(
                "task {id} already ended ({s})"
            ))),
            TaskState::Pending => {
                let msg = format!("{why} (before it was placed)");
                self.transition(id, TaskState::Killed, Some(msg), None, now);
                Ok(())
            }
            TaskState::Killing => Ok(()),
            _ => {
                let node_active = task
                    .node
                    .as_ref()
                    .and_then(|n| self.nodes.get(n))
                    .is_some_and(|n| n.active);
                if node_active {
                    self.transition(id, TaskState::Killing, Some(why.to_string()), None, now);
                } else {
                    let msg = format!("{why}, while its node was unreachable");
                    self.transition(id, TaskState::Lost, Some(msg), None, now);
                }
                Ok(())
            }
        }
    }

    /// Places pending tasks, oldest first; the ones that fit nowhere keep the reason.
    pub fn schedule(&mut self, now: UnixMillis) {
        if self.pending.is_empty() {
            return;
        }
        let queue: Vec<TaskId> = self.pending.iter().map(|(_, id)| id.clone()).collect();
        for id in queue {
            let task = &self.tasks[&id];
            let req = TaskRequest {
                id: &task.id,
                resources: task.spec.resources,
                ports: task.spec.ports,
                constraints: &task.spec.constraints,
            };
            match self.ledger.place(&req) {
                Ok(placement) => {
                    let ip = self.nodes.get(&placement.node).map(|n| n.ip);
                    let task = self.tasks.get_mut(&id).expect("pending task exists");
                    task.node = Some(placement.node.clone());
                    task.ip = ip;
                    task.ports = placement.ports;
                    let msg = format!("placed on {}", placement.node);
                    self.transition(&id, TaskState::Staging, Some(msg), None, now);
                }
                Err(reason) => {
                    let reason = format!("pending: {reason}");
                    let task = self.tasks.get_mut(&id).expect("pending task exists");
                    if task.message.as_deref() != Some(reason.as_str()) {
                        task.message = Some(reason);
                        task.updated_at = now;
                        self.dirty_tasks.insert(id);
                    }
                }
            }
        }
    }

    /// Tells the ledger what is now known of a node (state, type, resources).
    fn sync_ledger(&mut self, name: &NodeName) {
        if let Some(n) = self.nodes.get(name) {
            self.ledger.upsert_node(NodeState {
                name: n.name.clone(),
                node_type: n.node_type.clone(),
                node_function: n.node_function.clone(),
                active: n.active,
                total: n.total,
                allocated: Resources::ZERO,
                port_range: n.port_range,
                used_ports: BTreeSet::new(),
                tasks: 0,
            });
        }
    }

    fn node_states(&self) -> Vec<NodeState> {
        let mut states: BTreeMap<&NodeName, NodeState> = self
            .nodes
            .values()
            .map(|n| {
                (
                    &n.name,
                    NodeState {
                        name: n.name.clone(),
                        node_type: n.node_type.clone(),
                        node_function: n.node_function.clone(),
                        active: n.active,
                        total: n.total,
                        allocated: Resources::ZERO,
                        port_range: n.port_range,
                        used_ports: BTreeSet::new(),
                        tasks: 0,
                    },
                )
            })
            .collect();
        for task in self.tasks.values().filter(|t| t.state.holds_resources()) {
            if let Some(s) = task.node.as_ref().and_then(|n| states.get_mut(n)) {
                s.allocated = s.allocated.add(&task.spec.resources);
                s.used_ports.extend(task.ports.iter().copied());
                s.tasks += 1;
            }
        }
        states.into_values().collect()
    }

    /// Forgets the oldest ended tasks beyond the retention limit.
    fn forget_old_tasks(&mut self) {
        if self.ended <= ENDED_TASKS_KEPT {
            return;
        }
        let mut ended: Vec<(UnixMillis, TaskId)> = self
            .tasks
            .values()
            .filter(|t| t.state.is_terminal())
            .map(|t| (t.updated_at, t.id.clone()))
            .collect();
        ended.sort();
        for (_, id) in ended.into_iter().take(ENDED_TASKS_KEPT / 10) {
            self.tasks.remove(&id);
            self.dirty_tasks.remove(&id);
            self.deleted_tasks.push(id);
            self.ended -= 1;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Agents

    /// An agent (re)joins with everything it runs. Returns its heartbeat interval.
    pub fn register(
        &mut self,
        req: RegisterRequest,
        now: UnixMillis,
    ) -> Result<Duration, RackError> {
        if !req.resources.is_valid() {
            return Err(RackError::Invalid(
                "resources must be finite and non-negative".into(),
            ));
        }
        let origin = self.settings.config_origin.clone();
        // No node may take another's address (its certificate would name that address).
        if let Some(other) = self
            .nodes
            .values()
            .find(|n| n.name != req.node && n.ip == req.ip)
        {
            return Err(RackError::Conflict(format!(
                "address {} belongs to node {}; node {} cannot register from it",
                req.ip, other.name, req.node
            )));
        }
        let node = match self.nodes.get_mut(&req.node) {
            Some(node) => {
                if node.configured && node.ip != req.ip {
                    return Err(RackError::Forbidden(format!(
                        "node {} has ip {} in {origin}, but its agent registered from {}",
                        req.node, node.ip, req.ip
                    )));
                }
                node
            }
            None if self.settings.open_join => {
                let c = ConfiguredNode {
                    name: req.node.clone(),
                    ip: req.ip,
                    external_ip: None,
                    management_ip: None,
                    port: 0,
                    node_type: req.node_type.clone().unwrap_or_else(|| "slave".into()),
                    node_function: None,
                    resources: None,
                    port_range: None,
                };
                let mut record = NodeRecord::from_config(&c);
                record.configured = false;
                self.nodes.entry(req.node.clone()).or_insert(record)
            }
            None => {
                return Err(RackError::Forbidden(format!(
                    "node {} is not in the rack config ({origin}); add it under `nodes`, or set `open_join: true`",
                    req.node
                )));
            }
        };
        let configured = self
            .settings
            .nodes
            .iter()
            .find(|c| c.name == req.node)
            .cloned();
        node.registered = true;
        node.active = true;
        node.last_seen = now;
        node.agent_url = Some(req.agent_url);
        node.attributes = req.attributes;
        node.runtime = req.runtime;
        node.total = configured
            .as_ref()
            .and_then(|c| c.resources)
            .unwrap_or(req.resources);
        node.port_range = configured
            .as_ref()
            .and_then(|c| c.port_range)
            .unwrap_or(req.port_range);
        if configured
            .as_ref()
            .and_then(|c| c.node_function.as_ref())
            .is_none()
            && let Some(f) = req.node_function
        {
            node.node_function = f;
        }
        if let (None, Some(t)) = (configured.as_ref(), req.node_type) {
            node.node_type = t;
        }
        let name = node.name.clone();
        self.sync_ledger(&name);
        self.record(
            "node",
            "info",
            format!("node {name} registered"),
            None,
            Some(&name),
            now,
        );
        self.dirty_nodes.insert(name.clone());
        // A new relationship: the agent starts from generation 0, so give it a fresh one.
        self.desired_changed.insert(name.clone());
        self.apply_reports(&name, req.tasks, true, now);
        self.reconcile_services(now);
        self.schedule(now);
        Ok(self.heartbeat_interval())
    }

    pub fn heartbeat_interval(&self) -> Duration {
        (self.settings.node_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// Task transitions and the heartbeat from a registered, active node.
    pub fn report(
        &mut self,
        node: &NodeName,
        report: StatusReport,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        let record = self.nodes.get_mut(node).ok_or_else(|| {
            RackError::NotFound(format!("no node named \"{node}\"; register first"))
        })?;
        if !record.registered || !record.active {
            // The agent must re-register (with its full task list) before it is trusted again.
            return Err(RackError::Conflict(format!(
                "node {node} is not active; the agent must register again"
            )));
        }
        record.last_seen = now;
        self.apply_reports(node, report.tasks, report.full, now);
        self.reconcile_services(now);
        self.schedule(now);
        Ok(())
    }

    fn apply_reports(
        &mut self,
        node: &NodeName,
        reports: Vec<TaskReport>,
        full: bool,
        now: UnixMillis,
    ) {
        let mut seen = BTreeSet::new();
        for r in reports {
            let Some(task) = self.tasks.get(&r.id) else {
                continue;
            };
            if task.node.as_ref() != Some(node) {
                continue;
            }
            seen.insert(r.id.clone());
            let current = task.state;
            let next = match (current, r.state) {
                (c, _) if c.is_terminal() => continue,
                (TaskState::Staging, TaskState::Running) => TaskState::Running,
                (_, TaskState::Running) => continue,
                (TaskState::Killing, s) if s.is_terminal() => TaskState::Killed,
                (_, s) if s.is_terminal() => s,
                _ => continue,
            };
            // A killed task keeps the reason it was killed for.
            let message = if current == TaskState::Killing {
                task.message.clone()
            } else {
                r.message
            };
            self.transition(&r.id, next, message, r.exit_code, now);
        }
        if full {
            let missing: Vec<TaskId> = self
                .tasks
                .values()
                .filter(|t| t.node.as_ref() == Some(node))
                .filter(|t| matches!(t.state, TaskState::Running | TaskState::Killing))
                .filter(|t| !seen.contains(&t.id))
                .map(|t| t.id.clone())
                .collect();
            for id in missing {
                if self.tasks[&id].state == TaskState::Killing {
                    // Killed before the agent started it, or it ended unseen: keep the reason.
                    let why = self.tasks[&id].message.clone();
                    self.transition(&id, TaskState::Killed, why, None, now);
                } else {
                    self.transition(
                        &id,
                        TaskState::Lost,
                        Some(format!("agent on {node} no longer knows this task")),
                        None,
                        now,
                    );
                }
            }
        }
        self.forget_old_tasks();
    }

    /// Periodic work: nodes that stopped reporting go inactive and their tasks are lost.
    pub fn tick(&mut self, now: UnixMillis) {
        let timeout = self.settings.node_timeout.as_millis() as u64;
        let expired: Vec<NodeName> = self
            .nodes
            .values()
            .filter(|n| n.active && now.saturating_sub(n.last_seen) > timeout)
            .map(|n| n.name.clone())
            .collect();
        for name in expired {
            if let Some(n) = self.nodes.get_mut(&name) {
                n.active = false;
            }
            self.record(
                "node",
                "error",
                format!("node {name} stopped reporting; it is inactive"),
                None,
                Some(&name),
                now,
            );
            self.sync_ledger(&name);
            self.dirty_nodes.insert(name.clone());
            let lost: Vec<TaskId> = self
                .tasks
                .values()
                .filter(|t| t.node.as_ref() == Some(&name) && !t.state.is_terminal())
                .map(|t| t.id.clone())
                .collect();
            let msg = format!("node {name} stopped reporting (no word for {} ms)", timeout);
            for id in lost {
                self.transition(&id, TaskState::Lost, Some(msg.clone()), None, now);
            }
        }
        self.expire_frameworks(now);
        self.expire_announced(now);
        self.reconcile_services(now);
        self.schedule(now);
    }

    // -----------------------------------------------------------------------------------------
    // Views

    pub fn desired(&self, node: &NodeName) -> Result<DesiredState, RackError> {
        let record = self
            .nodes
            .get(node)
            .ok_or_else(|| RackError::NotFound(format!("no node named \"{node}\"")))?;
        let tasks = self
            .tasks
            .values()
            .filter(|t| t.node.as_ref() == Some(node))
            .filter(|t| matches!(t.state, TaskState::Staging | TaskState::Running))
            .map(|t| DesiredTask {
                id: t.id.clone(),
                spec: t.spec.clone(),
                ports: t.ports.clone(),
                launch: t.state == TaskState::Staging,
                files: Default::default(),
            })
            .collect();
        Ok(DesiredState {
            generation: record.desired_generation,
            tasks,
        })
    }

    /// Whether a task lives and asked for its own controller token.
    pub fn task_may_hold_token(&self, id: &TaskId) -> bool {
        self.tasks
            .get(id)
            .is_some_and(|t| !t.state.is_terminal() && t.spec.credentials.api_access.is_some())
    }

    pub fn desired_generation(&self, node: &NodeName) -> Option<u64> {
        self.nodes.get(node).map(|n| n.desired_generation)
    }

    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .values()
            .map(|n| {
                let (allocated, ports, tasks) = self
                    .ledger
                    .node(&n.name)
                    .map(|s| (s.allocated, s.used_ports.len(), s.tasks))
                    .unwrap_or((Resources::ZERO, 0, 0));
                NodeView {
                    name: n.name.clone(),
                    ip: n.ip,
                    external_ip: n.external_ip,
                    management_ip: n.management_ip,
                    node_type: n.node_type.clone(),
                    node_function: n.node_function.clone(),
                    active: n.active,
                    registered: n.registered,
                    last_seen: n.last_seen,
                    agent_url: n.agent_url.clone(),
                    resources: NodeResources {
                        total: n.total,
                        allocated,
                        ports_allocated: ports,
                    },
                    port_range: n.port_range,
                    attributes: n.attributes.clone(),
                    runtime: n.runtime.clone(),
                    tasks,
                }
            })
            .collect()
    }

    pub fn node_view(&self, name: &NodeName) -> Result<NodeView, RackError> {
        self.node_views()
            .into_iter()
            .find(|n| &n.name == name)
            .ok_or_else(|| RackError::NotFound(format!("no node named \"{name}\"")))
    }

    pub fn agent_url(&self, name: &NodeName) -> Option<(String, bool)> {
        self.nodes
            .get(name)
            .and_then(|n| n.agent_url.clone().map(|u| (u, n.active)))
    }

    pub fn tasks(&self, filter: &TaskFilter) -> Vec<TaskView> {
        let mut out: Vec<TaskView> = self
            .tasks
            .values()
            .filter(|t| {
                filter
                    .node
                    .as_ref()
                    .is_none_or(|n| t.node.as_ref() == Some(n))
            })
            .filter(|t| filter.framework.as_ref().is_none_or(|f| &t.framework == f))
            .filter(|t| filter.state.is_none_or(|s| t.state == s))
            .filter(|t| filter.name.as_ref().is_none_or(|n| &t.name == n))
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        out
    }

    pub fn task(&self, id: &TaskId) -> Result<TaskView, RackError> {
        self.tasks
            .get(id)
            .cloned()
            .ok_or_else(|| RackError::NotFound(format!("no task with id \"{id}\"")))
    }
}

/// A new task id: `<name>.<12 random hex digits>`.
fn new_task_id(spec: &TaskSpec) -> TaskId {
    let suffix = torc_types::random_u64() & 0xffff_ffff_ffff;
    TaskId::new(format!("{}.{suffix:012x}", spec.name)).expect("service name + hex is a valid id")
}

#[cfg(test)]
#[path = "rack_tests.rs"]
mod tests;

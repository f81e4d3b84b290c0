//! The rack's state as the controller keeps it, and the rules of its life.
//!
//! `Rack` is plain data plus transitions. It reads no clock (time is an argument; task ids and
//! the epoch are the only random inputs) and does no I/O but log lines (`tracing`), so every
//! rule can be tested directly: `rules.rs` runs the data-driven cases of
//! `crates/controller/tests/rules/` against it. The controller wraps it with the store and the
//! network: after each change it drains `take_changes()`, persists the records, and wakes the
//! agents whose desired task set changed.
//!
//! `Rack` is a composition of parts, each in its own module, owning its data and changing it
//! only through its own methods (other parts read its records through `&`):
//! - `nodes`: the node table, and the generations of the nodes' desired sets;
//! - `tasks`: the task table, its lifecycle and the resource ledger that places tasks;
//! - `supervisor`: service instances (system services expanded by SLA, started groups) and
//!   their rules: restart back-off, jobs, dependencies, health;
//! - `frameworks`: the framework registry and its tasks' updates;
//! - `announcements`: external tasks announced by sub-schedulers;
//! - `feed`: the event feed for people;
//! - `maintenance`: cordon, drain (moving a node's service instances elsewhere), a power
//!   command's result;
//! - `rollout`: a changed service spec rolled out one instance at a time, rolled back on a
//!   failure;
//! - `names`, `routes` and `compat`: views over the parts (the DNS names; the `/32` routes the
//!   switch should hold; the original API's shapes);
//! - `error`: why a change was refused.
//!
//! This module is where the parts meet: it checks what needs more than one part, carries out
//! what the supervisor and the registry ask (start this, kill that), and hands each task state
//! change to the parts that follow tasks (`settle`), in the order the changes happened.
//!
//! Invariants:
//! - A new task id is never one of a task in the table (ids of forgotten tasks are not checked:
//!   48 random bits per name, see `tasks`), and a task in a terminal state never changes again.
//! - A node's desired set is exactly its tasks in `staging` or `running`; any change to that set
//!   gives the node a new, higher generation.
//! - Resources allocated on a node are derived from its tasks, never stored separately.
//! - Every task state change reaches the supervisor, the registry and the feed before the
//!   rack method that caused it returns.
//! - A step loses at most `settings.tasks_per_step` tasks stranded on an inactive or removed
//!   node, kills the tasks of inactive frameworks and starts service instances, all within
//!   that one budget (`settings::TASKS_PER_STEP`, 500: each writes about two records, so a
//!   derived change stays far under an etcd Txn's 2,047 writes); the next `tick` takes the
//!   rest. What is still to do is derived from the records (an inactive node's or framework's
//!   live tasks), so a restart goes on, and that node or framework cannot register again until
//!   it is done (503). Not bounded: what a request asks at once (the rack network's kills,
//!   `DELETE /service` of a name, a group's instance records), which the store refuses whole
//!   when too large.

mod announcements;
mod compat;
mod error;
mod feed;
mod frameworks;
mod maintenance;
mod names;
mod nodes;
mod rollout;
mod routes;
mod supervisor;
mod tasks;

use std::time::Duration;

use torc_api::dns::DnsSnapshot;
use torc_api::original::OriginalTask;
use torc_api::{
    DesiredState, EventKind, EventLevel, FrameworkEvents, FrameworkRegistered,
    FrameworkRegistration, FrameworkView, GroupView, NodeView, RackEvent, RegisterRequest,
    ServiceView, StatusReport, StatusView, TaskFilter, TaskView,
};
use torc_types::{
    BUILTIN_FRAMEWORK, FrameworkName, NodeName, ServiceName, TaskId, TaskNetwork, TaskSpec,
    TaskState, UnixMillis,
};

use crate::settings::RackSettings;
use crate::store::{Loaded, StoreError, Table, Write};
use announcements::Announcements;
use feed::Feed;
use frameworks::{FrameworkRegistry, Updates};
use nodes::NodeTable;
use supervisor::{Kill, Supervisor};
use tasks::TaskTable;

pub use error::{
    AnnounceError, CredentialError, FrameworkError, NodeError, RackError, ServiceError, TaskError,
};
pub use supervisor::{HealthCheck, ProbeFailure};

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
    settings: RackSettings,
    started_at: UnixMillis,
    nodes: NodeTable,
    tasks: TaskTable,
    services: Supervisor,
    frameworks: FrameworkRegistry,
    announced: Announcements,
    feed: Feed,
    /// The rack network was shut down (`/calico/shutdown`): no routes, no rack addresses.
    network_shut: bool,
    /// `network_shut` changed and is not stored yet.
    network_shut_dirty: bool,
}

/// The store's key for whether the rack network is shut down (1) or not (0).
pub(crate) const NETWORK_SHUT: &str = "rack_network_shut";

pub(crate) use nodes::GENERATION_KEY;

/// Why a rack task waits while the rack network is shut down.
const NETWORK_SHUT_REASON: &str =
    "pending: the rack network is shut down (/calico/shutdown); GET /calico/configure starts it";

fn builtin() -> FrameworkName {
    FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name")
}

impl Rack {
    /// Builds the rack from the config and whatever the store held. Config wins on what it
    /// declares (addresses, type, function); the store supplies what only agents know. Tasks
    /// of nodes no longer in the config are lost.
    pub fn new(
        settings: RackSettings,
        loaded: Loaded,
        now: UnixMillis,
    ) -> Result<Rack, StoreError> {
        let epoch = (torc_types::random_u64() & 0xffff_ffff).max(1);
        Rack::with_epoch(settings, loaded, now, epoch)
    }

    fn with_epoch(
        settings: RackSettings,
        mut loaded: Loaded,
        now: UnixMillis,
        epoch: u64,
    ) -> Result<Rack, StoreError> {
        let generation = loaded.meta(GENERATION_KEY).unwrap_or(0);
        let network_shut = loaded.meta(NETWORK_SHUT).unwrap_or(0) == 1;
        let nodes = NodeTable::load(&settings, loaded.take(Table::Nodes)?, generation, now);
        let tasks = TaskTable::load(loaded.take(Table::Tasks)?, nodes.scheduler_states());
        let mut rack = Rack {
            services: Supervisor::load(loaded.take(Table::Services)?),
            frameworks: FrameworkRegistry::load(loaded.take(Table::Frameworks)?, epoch, now),
            announced: Announcements::load(loaded.take(Table::Announced)?),
            feed: Feed::default(),
            started_at: now,
            settings,
            nodes,
            tasks,
            network_shut,
            network_shut_dirty: false,
        };
        let mut budget = rack.settings.tasks_per_step;
        rack.lose_stranded(None, &mut budget, now);
        rack.kill_abandoned(None, &mut budget, now);
        Ok(rack)
    }

    /// A rack with nothing stored yet.
    pub fn fresh(settings: RackSettings, now: UnixMillis) -> Rack {
        Rack::new(settings, Loaded::default(), now).expect("an empty store always loads")
    }

    /// A rack for tests: the epoch given, task ids counted (`web.000000000001`, ...).
    #[cfg(test)]
    pub(crate) fn for_tests(
        settings: RackSettings,
        loaded: Loaded,
        now: UnixMillis,
        epoch: u64,
    ) -> Rack {
        let mut rack =
            Rack::with_epoch(settings, loaded, now, epoch).expect("the test store loads");
        rack.tasks.count_ids();
        rack
    }

    pub fn settings(&self) -> &RackSettings {
        &self.settings
    }

    // -----------------------------------------------------------------------------------------
    // Changes

    /// Drains what changed since the last call: records to write and agents to wake.
    pub fn take_changes(&mut self) -> Changes {
        let (mut writes, wake) = self.nodes.take_changes();
        writes.extend(self.tasks.take_writes());
        writes.extend(self.services.take_writes());
        writes.extend(self.frameworks.take_writes());
        writes.extend(self.announced.take_writes());
        if std::mem::take(&mut self.network_shut_dirty) {
            writes.push(Write::Meta(NETWORK_SHUT, u64::from(self.network_shut)));
        }
        // Taken every time, so a health change is never reported twice.
        let health_changed = self.services.take_health_changed();
        let names_may_change = !writes.is_empty() || health_changed;
        Changes {
            writes,
            wake,
            names_may_change,
        }
    }

    /// Hands the task table's state changes, oldest first, to the parts that follow tasks:
    /// the node table (desired sets), the feed (failures), the framework registry (its
    /// frameworks' tasks) and the supervisor (the built-in framework's tasks that ended).
    fn settle(&mut self, now: UnixMillis) {
        for change in self.tasks.take_transitions() {
            // A staging task's new phase (an image pull) and a task that failed or was lost
            // are news for people; a new phase is nothing else.
            let message = change.message.as_deref();
            let line = if change.is_progress() {
                let words = message.unwrap_or_default();
                Some((EventLevel::Info, format!("task {} {words}", change.id)))
            } else if matches!(change.to, TaskState::Failed | TaskState::Lost) {
                let why = message.map(|m| format!(": {m}")).unwrap_or_default();
                let line = format!("task {} {}{why}", change.id, change.to);
                Some((EventLevel::Error, line))
            } else {
                None
            };
            if let Some((level, line)) = line {
                let (task, node) = (Some(&change.id), change.node.as_ref());
                self.feed
                    .record(EventKind::Task, level, line, task, node, now);
            }
            if change.is_progress() {
                continue;
            }
            if change.moves_desired_set()
                && let Some(node) = &change.node
            {
                self.nodes.desired_set_changed(node);
            }
            if change.framework.as_str() != BUILTIN_FRAMEWORK {
                self.frameworks.task_updated(&change.framework, &change.id);
            } else if change.to.is_terminal()
                && let Some(old) = self.services.task_ended(&change, now)
            {
                let message = change.message.as_deref();
                self.replacement_ended(&change.id, &old, change.to, message, now);
            }
        }
    }

    /// Places pending tasks, oldest first; the ones that fit nowhere keep the reason.
    pub fn schedule(&mut self, now: UnixMillis) {
        let nodes = &self.nodes;
        let rack_network = (!self.network_shut)
            .then_some(())
            .ok_or(NETWORK_SHUT_REASON);
        self.tasks.place_pending(now, |n| nodes.ip(n), rack_network);
        self.settle(now);
    }

    /// `GET /calico/shutdown`: the rack network stops. Every route is withdrawn and every live
    /// rack task is killed (its address would lead nowhere); the services among them wait,
    /// pending, until `configure`. Stored, so a restarted controller keeps it shut.
    pub fn shut_down_network(&mut self, now: UnixMillis) {
        if !self.network_shut {
            self.network_shut = true;
            self.network_shut_dirty = true;
            self.feed.record(
                EventKind::Network,
                EventLevel::Warning,
                "the rack network was shut down (/calico/shutdown): its routes are withdrawn"
                    .into(),
                None,
                None,
                now,
            );
        }
        let rack_tasks = self
            .tasks
            .live_ids(|t| t.spec.network == TaskNetwork::Rack && t.state != TaskState::Pending);
        let why = "the rack network was shut down (/calico/shutdown)";
        self.kill_all(rack_tasks.into_iter().map(|id| (id, why.to_string())), now);
        self.schedule(now);
    }

    /// Tells the event feed which of torc's routes the switch gained and lost since its
    /// network agent's previous report, with the task behind each.
    pub fn note_switch_routes(
        &mut self,
        added: &[torc_api::SwitchRoute],
        removed: &[torc_api::SwitchRoute],
        now: UnixMillis,
    ) {
        let wanted = self.rack_routes();
        let task_of = |r: &torc_api::SwitchRoute| {
            wanted
                .iter()
                .find(|w| w.destination == r.destination)
                .map(|w| (w.task.clone(), format!(" for {} ({})", w.task, w.service)))
        };
        for (routes, what) in [(added, "added"), (removed, "withdrawn")] {
            for r in routes {
                let (task, behind) = task_of(r).unzip();
                let message = format!(
                    "route {}/{} via {} ({}) {what} on the switch{}",
                    r.destination,
                    r.prefix_len,
                    r.gateway.map_or("-".into(), |g| g.to_string()),
                    r.port.as_deref().unwrap_or("-"),
                    behind.unwrap_or_default()
                );
                self.feed.record(
                    EventKind::Route,
                    EventLevel::Info,
                    message,
                    task.as_ref(),
                    None,
                    now,
                );
            }
        }
    }

    /// `GET /calico/configure`: the rack network runs again, and waiting rack tasks are placed.
    pub fn configure_network(&mut self, now: UnixMillis) {
        if self.network_shut {
            self.network_shut = false;
            self.network_shut_dirty = true;
            self.feed.record(
                EventKind::Network,
                EventLevel::Info,
                "the rack network was started (/calico/configure)".into(),
                None,
                None,
                now,
            );
        }
        self.schedule(now);
    }

    /// Kills a task with the reason recorded on it.
    fn kill_with(&mut self, id: &TaskId, why: &str, now: UnixMillis) -> Result<(), RackError> {
        let result = self.tasks.kill(id, why, now);
        self.settle(now);
        Ok(result?)
    }

    /// Kills what a part asked to, ignoring tasks that already ended.
    fn kill_all(&mut self, kills: impl IntoIterator<Item = Kill>, now: UnixMillis) {
        for (id, why) in kills {
            let _ = self.kill_with(&id, &why, now);
        }
    }

    /// Tells the ledger what the node table now says of a node.
    fn sync_ledger(&mut self, name: &NodeName) {
        if let Some(state) = self.nodes.get(name).map(|n| n.scheduler_state()) {
            self.tasks.sync_node(state);
        }
    }

    /// Adds an event to the feed (e.g. a credential created, a framework's own line).
    pub fn record_event(
        &mut self,
        kind: EventKind,
        level: EventLevel,
        message: String,
        now: UnixMillis,
    ) {
        self.feed.record(kind, level, message, None, None, now);
    }

    /// The feed's events after `after` (a `seq`), oldest first.
    pub fn feed(&self, after: u64) -> Vec<RackEvent> {
        self.feed.after(after)
    }

    // -----------------------------------------------------------------------------------------
    // Agents

    /// An agent (re)joins with everything it runs. Returns its heartbeat interval.
    pub fn register(
        &mut self,
        mut req: RegisterRequest,
        now: UnixMillis,
    ) -> Result<Duration, RackError> {
        let reports = std::mem::take(&mut req.tasks);
        // Tasks of the node's previous life are lost, all of them, before it is trusted again:
        // its report must not bring back a task the rack already counts as gone.
        let left = self.stranded_on(&req.node);
        if left > 0 {
            return Err(NodeError::StillLosing {
                node: req.node.clone(),
                left,
            }
            .into());
        }
        let name = self.nodes.register(&self.settings, req, now)?;
        self.sync_ledger(&name);
        let msg = format!("node {name} registered");
        self.feed.record(
            EventKind::Node,
            EventLevel::Info,
            msg,
            None,
            Some(&name),
            now,
        );
        self.tasks.apply_reports(&name, reports, true, now);
        self.settle(now);
        let mut budget = self.settings.tasks_per_step;
        self.reconcile_services(&mut budget, now);
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
        self.nodes.heartbeat(node, now)?;
        if let Some(disk) = &report.disk {
            self.feed.disk(node, disk, now);
        }
        self.tasks
            .apply_reports(node, report.tasks, report.full, now);
        self.settle(now);
        let mut budget = self.settings.tasks_per_step;
        self.reconcile_services(&mut budget, now);
        self.schedule(now);
        self.maintain(now);
        self.roll(now);
        Ok(())
    }

    /// Loses the live tasks stranded on a node that is inactive or no longer in the config, at
    /// most `budget` of them (by id), which it counts down: a step's budget starts at
    /// `tasks_per_step`, so one change stays far under the store's bound
    /// (`settings::TASKS_PER_STEP`), and the next step (`tick`) takes the rest. Stranded
    /// tasks are derived from the stored records (node inactive or gone, task live), so the
    /// rest is lost after a restart or a failover too, never forgotten. `only` picks one
    /// node's (the one that just went inactive, so the feed tells each node with its tasks).
    fn lose_stranded(&mut self, only: Option<&NodeName>, budget: &mut usize, now: UnixMillis) {
        let nodes = &self.nodes;
        let stranded = self.tasks.live_ids(|t| {
            t.node.as_ref().is_some_and(|n| {
                only.is_none_or(|o| o == n) && nodes.get(n).is_none_or(|n| !n.active)
            })
        });
        let timeout = self.settings.node_timeout.as_millis();
        for id in stranded.into_iter().take(*budget) {
            *budget -= 1;
            let node = self.tasks.get(&id).and_then(|t| t.node.clone());
            let why = match node {
                Some(name) if self.nodes.contains(&name) => {
                    format!("node {name} stopped reporting (no word for {timeout} ms)")
                }
                _ => "its node was removed from the rack config".to_string(),
            };
            self.tasks.lose(&id, why, now);
        }
        self.settle(now);
    }

    /// How many live tasks of an inactive node are still to be lost (`lose_stranded`).
    fn stranded_on(&self, name: &NodeName) -> usize {
        if self.nodes.get(name).is_none_or(|n| n.active) {
            return 0;
        }
        self.tasks.live_ids(|t| t.node.as_ref() == Some(name)).len()
    }

    /// The controller itself did not run for `stalled_ms` (frozen, a paused VM, a starved
    /// machine): the agents' and frameworks' silence over that time is not theirs, and their
    /// words of it may still wait in its sockets. Each active node's last report and each
    /// active framework's last poll move that much later (never past `now`), so the next
    /// `tick` expires only what was silent for its timeout while the controller ran, as a
    /// restart gives every node a full timeout. (Announced tasks' leases are not moved:
    /// TODO-correctness.)
    pub fn excuse_stall(&mut self, stalled_ms: u64, now: UnixMillis) {
        self.nodes.excuse(stalled_ms, now);
        self.frameworks.excuse(stalled_ms, now);
    }

    /// Reports that reached the controller but wait to be processed (behind other changes,
    /// each waiting for its fsync): each node was heard when its report arrived, so a queue of
    /// changes longer than the node timeout expires no node that kept reporting.
    pub fn heard(&mut self, arrivals: impl IntoIterator<Item = (NodeName, UnixMillis)>) {
        for (node, at) in arrivals {
            self.nodes.heard(&node, at);
        }
    }

    /// Periodic work: nodes that stopped reporting go inactive and their tasks are lost;
    /// frameworks past their failover timeout lose their tasks; announcements lapse; services
    /// due are started and pending tasks placed. Tasks lost and instances started share one
    /// budget of `tasks_per_step`: the next tick takes the rest.
    pub fn tick(&mut self, now: UnixMillis) {
        let timeout = self.settings.node_timeout.as_millis() as u64;
        let mut budget = self.settings.tasks_per_step;
        for name in self.nodes.expire(timeout, now) {
            let msg = format!("node {name} stopped reporting; it is inactive");
            self.feed.record(
                EventKind::Node,
                EventLevel::Error,
                msg,
                None,
                Some(&name),
                now,
            );
            self.sync_ledger(&name);
            // Lost right after their node's line, as the feed has always told it.
            self.lose_stranded(Some(&name), &mut budget, now);
        }
        self.lose_stranded(None, &mut budget, now);
        for (name, timeout) in self.frameworks.expired(now) {
            tracing::warn!(framework = %name, "failover timeout passed; killing its tasks");
            let why = format!("did not come back within its failover timeout ({timeout} ms)");
            self.deactivate_framework(&name, &why, &mut budget, now);
        }
        self.kill_abandoned(None, &mut budget, now);
        self.announced.expire(timeout, now);
        self.reconcile_services(&mut budget, now);
        self.schedule(now);
        self.maintain(now);
        self.roll(now);
    }

    /// A node's desired set, with its generation. Its epoch is left 0: the controller numbers
    /// the document with the epoch it acts under (`Controller::read_numbered`).
    pub fn desired(&self, node: &NodeName) -> Result<DesiredState, RackError> {
        let record = self
            .nodes
            .get(node)
            .ok_or_else(|| NodeError::Unknown(node.clone()))?;
        let resolver = self.task_resolver();
        let mut tasks = self.tasks.desired_on(node);
        for task in tasks.iter_mut().filter(|t| t.rack_address.is_some()) {
            task.resolver = resolver.clone();
        }
        Ok(DesiredState {
            epoch: 0,
            generation: record.desired_generation,
            tasks,
        })
    }

    /// What a rack task resolves through: the rack's nameserver (the first master node, as in
    /// the DNS snapshot), searching the service domain, then the node domain.
    fn task_resolver(&self) -> Option<torc_api::Resolver> {
        match self.nodes.master_ip()? {
            std::net::IpAddr::V4(nameserver) => Some(torc_api::Resolver {
                nameserver,
                search: vec![
                    self.settings.service_domain.clone(),
                    self.settings.domain.clone(),
                ],
            }),
            std::net::IpAddr::V6(_) => None,
        }
    }

    pub fn desired_generation(&self, node: &NodeName) -> Option<u64> {
        self.nodes.get(node).map(|n| n.desired_generation)
    }

    /// Whether a task lives and asked for its own controller token.
    /// What a task's token may do (`None`: the task ended or asked for no token).
    pub fn task_token_access(&self, id: &TaskId) -> Option<torc_types::ApiAccess> {
        self.tasks.token_access(id)
    }

    // -----------------------------------------------------------------------------------------
    // Nodes

    pub fn node_views(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|n| {
                let (allocated, ports, tasks) = self.tasks.allocation(&n.name);
                n.view(allocated, ports, tasks, self.drain_view(&n.name))
            })
            .collect()
    }

    pub fn node_view(&self, name: &NodeName) -> Result<NodeView, RackError> {
        let n = self
            .nodes
            .get(name)
            .ok_or_else(|| NodeError::Unknown(name.clone()))?;
        let (allocated, ports, tasks) = self.tasks.allocation(name);
        Ok(n.view(allocated, ports, tasks, self.drain_view(name)))
    }

    /// Where a node's agent answers, and whether the node is active.
    pub fn agent_url(&self, name: &NodeName) -> Option<(String, bool)> {
        self.nodes
            .get(name)
            .and_then(|n| n.agent_url.clone().map(|u| (u, n.active)))
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
        spec.validate().map_err(TaskError::BadSpec)?;
        // The controller's own name and the config's DNS addons are not for tasks: a task so
        // named would answer in DNS (and hold a certificate) for them.
        if spec.name.as_str() == self.settings.rack_name
            || self
                .settings
                .dns_addons
                .iter()
                .any(|(n, _)| *n == spec.name)
        {
            return Err(TaskError::ReservedName {
                name: spec.name,
                origin: self.settings.config_origin.clone(),
            }
            .into());
        }
        if let Some(n) = &spec.constraints.node_name
            && !self.nodes.contains(n)
        {
            return Err(TaskError::UnknownConstraintNode(n.clone()).into());
        }
        if spec.network == TaskNetwork::Rack && self.nodes.iter().all(|n| n.task_block.is_none()) {
            return Err(TaskError::NoTaskBlock {
                origin: self.settings.config_origin.clone(),
            }
            .into());
        }
        let id = self.tasks.add(spec, framework, now);
        self.schedule(now);
        Ok(id)
    }

    /// Asks for a task to end. Pending tasks end at once; placed ones are killed by their agent.
    pub fn kill(&mut self, id: &TaskId, now: UnixMillis) -> Result<(), RackError> {
        self.kill_with(id, "kill requested", now)
    }

    pub fn tasks(&self, filter: &TaskFilter) -> Vec<TaskView> {
        self.tasks.list(filter)
    }

    /// How many tasks the rack holds in each state (every state, zeros included), live and
    /// ended ones still listed.
    pub fn task_counts(&self) -> [(TaskState, usize); TaskState::ALL.len()] {
        let mut counts = TaskState::ALL.map(|s| (s, 0));
        for task in self.tasks.iter() {
            if let Some(c) = counts.iter_mut().find(|(s, _)| *s == task.state) {
                c.1 += 1;
            }
        }
        counts
    }

    pub fn task(&self, id: &TaskId) -> Result<TaskView, RackError> {
        Ok(self.tasks.view(id)?)
    }

    // -----------------------------------------------------------------------------------------
    // Services

    /// Brings the supervisor in line with the config and the nodes, then starts the service
    /// instances that should run and do not, at most `budget` of them (counted down, as in
    /// `lose_stranded`): the rest are still due at the next step.
    fn reconcile_services(&mut self, budget: &mut usize, now: UnixMillis) {
        let kills = self.services.adopt_config(&self.settings, &self.nodes, now);
        self.kill_all(kills, now);
        let due = self.services.due_starts(&self.tasks, now);
        let starts = due.len().min(*budget);
        *budget -= starts;
        for start in due.into_iter().take(starts) {
            let result = self.launch(start.spec.clone(), builtin(), now);
            if let Some(line) = self.services.started(&start, result) {
                self.feed.record(
                    EventKind::Service,
                    EventLevel::Warning,
                    line,
                    None,
                    None,
                    now,
                );
            }
        }
    }

    /// Takes a new rack config's services (`torc apply`, SIGHUP): instances of added services
    /// start, those of removed ones are killed and forgotten, and changed specs are rolled
    /// out (`rollout`). The rest of the settings stay as they are (they need a restart).
    pub fn apply_services(
        &mut self,
        system_services: Vec<crate::settings::ServiceTemplate>,
        groups: std::collections::BTreeMap<ServiceName, Vec<crate::settings::ServiceTemplate>>,
        summary: String,
        now: UnixMillis,
    ) {
        self.settings.system_services = system_services;
        self.settings.groups = groups;
        self.feed.record(
            EventKind::Rollout,
            EventLevel::Info,
            summary,
            None,
            None,
            now,
        );
        let mut budget = self.settings.tasks_per_step;
        self.reconcile_services(&mut budget, now);
        self.schedule(now);
        self.roll(now);
    }

    /// Starts a service group. Idempotent: instances that exist are left alone.
    pub fn start_group(
        &mut self,
        group: &ServiceName,
        now: UnixMillis,
    ) -> Result<Vec<ServiceName>, RackError> {
        let names = self.services.start_group(group, &self.settings)?;
        let mut budget = self.settings.tasks_per_step;
        self.reconcile_services(&mut budget, now);
        self.schedule(now);
        Ok(names)
    }

    /// Stops a service group: its instances are killed and forgotten.
    pub fn stop_group(
        &mut self,
        group: &ServiceName,
        now: UnixMillis,
    ) -> Result<Vec<ServiceName>, RackError> {
        let (names, kills) = self.services.stop_group(group, &self.settings)?;
        self.kill_all(kills, now);
        Ok(names)
    }

    pub fn group(&self, name: &ServiceName) -> Result<GroupView, RackError> {
        self.groups()
            .into_iter()
            .find(|g| &g.name == name)
            .ok_or_else(|| ServiceError::UnknownGroup(name.clone()).into())
    }

    pub fn groups(&self) -> Vec<GroupView> {
        self.services.groups(&self.settings, &self.tasks)
    }

    /// Ends a service instance, announced task or task by name (`DELETE /service?name=`): a
    /// system service's task is killed and restarted; a group instance ends for good.
    pub fn delete_service(&mut self, name: &str, now: UnixMillis) -> Result<String, RackError> {
        if let Ok(sname) = ServiceName::new(name)
            && let Some(rec) = self.services.get(&sname)
        {
            if rec.group.is_some() {
                let kill = self.services.remove(&sname, "stopped by request");
                self.kill_all(kill, now);
                return Ok(format!("{name} stopped"));
            }
            if let Some(id) = self.tasks.live(rec.task.as_ref()).map(|t| t.id.clone()) {
                self.kill_with(&id, "killed by request; a system service is restarted", now)?;
            }
            return Ok(format!(
                "{name} killed; it is a system service and will be restarted"
            ));
        }
        if self.announced.remove(name) {
            return Ok(format!("announced task {name} removed"));
        }
        let live = self.tasks.live_ids(|t| t.name.as_str() == name);
        if live.is_empty() {
            return Err(ServiceError::NothingNamed(name.to_string()).into());
        }
        for id in &live {
            self.kill_with(id, "killed by request", now)?;
        }
        Ok(format!("{name} killed"))
    }

    pub fn services(&self) -> Vec<ServiceView> {
        self.services.views(&self.tasks)
    }

    pub fn service(&self, name: &ServiceName) -> Result<ServiceView, RackError> {
        Ok(self.services.view(name, &self.tasks)?)
    }

    pub fn status(&self) -> StatusView {
        StatusView {
            warnings: Vec::new(),
            rack: self.settings.rack_name.clone(),
            started_at: self.started_at,
            nodes_total: self.nodes.len(),
            nodes_active: self.nodes.active_count(),
            services: self.services.statuses(&self.tasks),
            frameworks: self.frameworks(),
            rollouts: self.rollout_views(),
        }
    }

    /// Health checks due at `now`.
    pub fn due_health_checks(&self, now: UnixMillis) -> Vec<HealthCheck> {
        self.services.due_health_checks(&self.tasks, now)
    }

    /// Marks a check as started, so it is not started again before it ends.
    pub fn health_check_started(&mut self, service: &ServiceName, now: UnixMillis) {
        self.services.health_check_started(service, now);
    }

    /// Records a check's outcome; after `failure_threshold` failures in a row the task is
    /// killed, and the service restarted.
    pub fn record_health(
        &mut self,
        service: &ServiceName,
        task: &TaskId,
        result: Result<(), ProbeFailure>,
        now: UnixMillis,
    ) {
        let kill = self.services.record_health(service, task, result, now);
        if let Some((id, why)) = &kill {
            let node = self.task(id).ok().and_then(|t| t.node);
            self.feed.record(
                EventKind::Service,
                EventLevel::Warning,
                format!("service {service}: task {id} {why}"),
                Some(id),
                node.as_ref(),
                now,
            );
        }
        self.kill_all(kill, now);
    }

    // -----------------------------------------------------------------------------------------
    // Announced tasks

    /// `POST /service/announce`: registers or renews an external task of a sub-scheduler.
    pub fn announce(&mut self, task: OriginalTask, now: UnixMillis) -> Result<(), RackError> {
        let services = &self.services;
        self.announced.announce(
            task,
            &self.settings.rack_name,
            |name| services.get(name).map(|r| r.origin()),
            now,
        )?;
        Ok(())
    }

    pub fn announced(&self) -> Vec<OriginalTask> {
        self.announced.tasks().cloned().collect()
    }

    // -----------------------------------------------------------------------------------------
    // Frameworks

    /// Registers a framework, or re-registers it: its surviving tasks are its again.
    pub fn register_framework(
        &mut self,
        reg: FrameworkRegistration,
        now: UnixMillis,
    ) -> Result<FrameworkRegistered, RackError> {
        // Its tasks of before it went inactive are all asked to end before it is active again.
        let left = self.abandoned_of(&reg.name);
        if left > 0 {
            return Err(FrameworkError::StillKilling {
                name: reg.name,
                left,
            }
            .into());
        }
        self.frameworks
            .register(&reg, &self.settings.rack_name, now)?;
        Ok(FrameworkRegistered {
            framework: self
                .frameworks
                .view(&reg.name, &self.tasks, self.started_at),
            tasks: self.tasks.of_framework(&reg.name, true),
        })
    }

    /// Unregisters a framework: its tasks are killed.
    pub fn unregister_framework(
        &mut self,
        name: &FrameworkName,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        self.frameworks.get(name)?;
        let mut budget = self.settings.tasks_per_step;
        self.deactivate_framework(name, "unregistered", &mut budget, now);
        Ok(())
    }

    fn deactivate_framework(
        &mut self,
        name: &FrameworkName,
        why: &str,
        budget: &mut usize,
        now: UnixMillis,
    ) {
        self.frameworks.deactivate(name, why);
        self.kill_abandoned(Some(name), budget, now);
    }

    /// Kills the live tasks of inactive frameworks not yet asked to end, at most `budget` of
    /// them (counted down, as in `lose_stranded`); the next `tick` takes the rest. Derived
    /// from the records (framework inactive, task live and not killing), so a restart goes on.
    /// `only` picks one framework's (the one just deactivated).
    fn kill_abandoned(
        &mut self,
        only: Option<&FrameworkName>,
        budget: &mut usize,
        now: UnixMillis,
    ) {
        let frameworks = &self.frameworks;
        let abandoned = self.tasks.live_ids(|t| {
            t.state != TaskState::Killing
                && only.is_none_or(|o| *o == t.framework)
                && frameworks.get(&t.framework).is_ok_and(|f| !f.active)
        });
        for id in abandoned.into_iter().take(*budget) {
            *budget -= 1;
            let Some(framework) = self.tasks.get(&id).map(|t| t.framework.clone()) else {
                continue;
            };
            let message = (self.frameworks.get(&framework).ok())
                .and_then(|f| f.message.clone())
                .unwrap_or_else(|| "unregistered".to_string());
            let _ = self.kill_with(&id, &format!("framework {framework} {message}"), now);
        }
    }

    /// How many live tasks of an inactive framework are still to be killed (`kill_abandoned`).
    fn abandoned_of(&self, name: &FrameworkName) -> usize {
        if self.frameworks.get(name).map_or(true, |f| f.active) {
            return 0;
        }
        self.tasks
            .live_ids(|t| &t.framework == name && t.state != TaskState::Killing)
            .len()
    }

    /// Launches a task for a framework, under a name no service and no other framework holds.
    pub fn framework_launch(
        &mut self,
        name: &FrameworkName,
        spec: TaskSpec,
        now: UnixMillis,
    ) -> Result<TaskId, RackError> {
        self.frameworks.active(name)?;
        if let Some(rec) = self.services.get(&spec.name) {
            return Err(FrameworkError::NameIsService {
                name: spec.name,
                origin: rec.origin(),
            }
            .into());
        }
        if let Some(other) = self
            .tasks
            .iter()
            .find(|t| t.name == spec.name && &t.framework != name && !t.state.is_terminal())
        {
            return Err(FrameworkError::NameTaken {
                name: spec.name,
                owner: other.framework.clone(),
            }
            .into());
        }
        self.launch(spec, name.clone(), now)
    }

    /// Kills one of a framework's own tasks.
    pub fn framework_kill(
        &mut self,
        name: &FrameworkName,
        id: &TaskId,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        self.frameworks.get(name)?;
        let task = self.tasks.view(id)?;
        if &task.framework != name {
            return Err(FrameworkError::NotItsTask {
                id: id.clone(),
                owner: task.framework,
                framework: name.clone(),
            }
            .into());
        }
        self.kill_with(id, &format!("killed by framework {name}"), now)
    }

    /// Notes that a framework is alive (it polled).
    pub fn framework_seen(
        &mut self,
        name: &FrameworkName,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        Ok(self.frameworks.seen(name, now)?)
    }

    /// A framework's tasks; with `live_only`, those not ended.
    pub fn framework_tasks(&self, name: &FrameworkName, live_only: bool) -> Vec<TaskView> {
        self.tasks.of_framework(name, live_only)
    }

    /// Updates of a framework's tasks after `after` (see `FrameworkEvents`).
    pub fn framework_events(
        &self,
        name: &FrameworkName,
        epoch: u64,
        after: u64,
    ) -> FrameworkEvents {
        let (epoch_now, seq) = self.frameworks.position();
        match self.frameworks.updates_after(name, epoch, after) {
            Updates::Reset => FrameworkEvents {
                epoch: epoch_now,
                seq,
                reset: true,
                tasks: self.tasks.of_framework(name, false),
            },
            Updates::Since(ids) => FrameworkEvents {
                epoch: epoch_now,
                seq,
                reset: false,
                tasks: ids
                    .iter()
                    .filter_map(|id| self.tasks.get(id).cloned())
                    .collect(),
            },
        }
    }

    /// The frameworks' update position: (epoch, seq).
    pub fn update_position(&self) -> (u64, u64) {
        self.frameworks.position()
    }

    pub fn frameworks(&self) -> Vec<FrameworkView> {
        self.frameworks.views(&self.tasks, self.started_at)
    }

    pub fn framework(&self, name: &FrameworkName) -> Result<FrameworkView, RackError> {
        if name.as_str() != BUILTIN_FRAMEWORK {
            self.frameworks.get(name)?;
        }
        Ok(self.frameworks.view(name, &self.tasks, self.started_at))
    }

    // -----------------------------------------------------------------------------------------
    // Names and the original API's shapes

    /// The current DNS names, with generation 0 (the controller numbers snapshots).
    pub fn dns_snapshot(&self) -> DnsSnapshot {
        names::snapshot(
            &self.settings,
            &self.nodes,
            &self.tasks,
            &self.services,
            &self.announced,
        )
    }

    /// The `/32` routes the switch should hold (the controller numbers snapshots).
    pub fn rack_routes(&self) -> Vec<torc_api::RackRoute> {
        if self.network_shut {
            return Vec::new();
        }
        routes::routes(&self.nodes, &self.tasks)
    }

    /// `GET /nodes` of the original API.
    pub fn original_nodes(&self) -> Vec<torc_api::original::OriginalNode> {
        compat::nodes(&self.nodes)
    }

    /// `GET /services/running` (`metered_only`: `/services/metered`) of the original API.
    pub fn original_running(&self, metered_only: bool) -> Vec<OriginalTask> {
        compat::running(
            &self.settings,
            &self.nodes,
            &self.tasks,
            &self.services,
            &self.announced,
            metered_only,
        )
    }

    /// `GET /service?id=` of the original API: the name of the first task whose id starts
    /// with `prefix`.
    pub fn name_by_id_prefix(&self, prefix: &str) -> Option<String> {
        compat::name_by_id_prefix(&self.tasks, &self.announced, prefix)
    }
}

#[cfg(test)]
mod rules;
#[cfg(test)]
mod tests;

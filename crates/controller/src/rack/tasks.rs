//! The task table: every task of the rack, its lifecycle, and the resource ledger that places
//! pending tasks on nodes.
//!
//! What it is not: it does not know who a task is for. Each state change is queued as a
//! [`TaskChange`]; the rack drains the queue (`take_transitions`) and hands each change to the
//! parts that follow tasks (the node table for desired sets, the supervisor for its services,
//! the framework registry for its frameworks, the feed).
//!
//! Invariants:
//! - A new task id is never one of a task in the table (ids of forgotten tasks are not
//!   checked: 48 random bits per name), and a task in a terminal state never changes again.
//! - What a node has allocated is kept in the ledger in step with the transitions (a task
//!   holds resources from `staging` until it ends), never recomputed from all tasks on the hot
//!   path. The ledger's view of each node (active, resources) is the node table's, passed in by
//!   the rack (`sync_node`) whenever it changes.
//! - Pending tasks are placed oldest first.
//! - A staging task's progress (an image pull, `(Staging, Staging)` reports) changes its
//!   message at every report, but its history and the feed only when the phase, the
//!   message's first word, changes (`pulling`, then `pulled`): never a line per report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use torc_api::{DesiredTask, RackAddress, TaskFilter, TaskReport, TaskView, Transition};
use torc_scheduler::{Holding, Ledger, NodeState, TaskRequest};
use torc_types::{
    ApiAccess, FrameworkName, NodeName, Resources, ServiceName, TaskId, TaskNetwork, TaskSpec,
    TaskState, UnixMillis,
};

use super::error::TaskError;
use crate::store::{Table, Write};

/// How many transitions a task keeps in its history.
const HISTORY_LIMIT: usize = 32;
/// Ended tasks kept for inspection; older ones are forgotten.
const ENDED_TASKS_KEPT: usize = 2_000;

/// One change of a task's state, for the parts that follow tasks.
#[derive(Debug, Clone)]
pub struct TaskChange {
    pub id: TaskId,
    pub name: ServiceName,
    pub framework: FrameworkName,
    pub node: Option<NodeName>,
    pub from: TaskState,
    pub to: TaskState,
    /// The task's message after the change.
    pub message: Option<String>,
    /// When the task started running, if it did.
    pub running_since: Option<UnixMillis>,
}

impl TaskChange {
    /// Whether the change moved the task into or out of its node's desired set.
    pub fn moves_desired_set(&self) -> bool {
        let desired = |s: TaskState| matches!(s, TaskState::Staging | TaskState::Running);
        self.from != self.to && (desired(self.from) || desired(self.to))
    }

    /// A new phase of a staging task (`pulling …`, `pulled …`), not a change of state.
    pub fn is_progress(&self) -> bool {
        self.from == self.to
    }
}

/// Where new task ids' suffixes come from.
#[derive(Debug)]
enum IdSource {
    /// 48 random bits: ids stay unique across controller lives.
    Random,
    /// A counter, for tests whose output names ids.
    #[cfg_attr(not(test), allow(dead_code))]
    Counter(u64),
}

/// The rack's tasks.
#[derive(Debug)]
pub struct TaskTable {
    tasks: BTreeMap<TaskId, TaskView>,
    /// What every node has allocated.
    ledger: Ledger,
    /// Tasks waiting for a node, oldest first.
    pending: BTreeSet<(UnixMillis, TaskId)>,
    /// How many tasks are in a terminal state (for retention).
    ended: usize,
    /// Records to persist, and to delete.
    dirty: BTreeSet<TaskId>,
    deleted: Vec<TaskId>,
    /// State changes not yet taken by the rack, oldest first.
    changes: Vec<TaskChange>,
    ids: IdSource,
}

/// What a task holds on its node while it is placed. A rack task's address is its `ip`.
fn holding(task: &TaskView) -> Holding<'_> {
    Holding {
        resources: &task.spec.resources,
        ports: &task.ports,
        address: match (task.spec.network, task.ip) {
            (TaskNetwork::Rack, Some(IpAddr::V4(ip))) => Some(ip),
            _ => None,
        },
    }
}

/// Adds a line to a task's history, dropping the oldest past the limit (the first, `pending`,
/// is kept).
fn push_history(
    history: &mut Vec<Transition>,
    state: TaskState,
    message: Option<String>,
    now: UnixMillis,
) {
    history.push(Transition {
        state,
        at: now,
        message,
    });
    if history.len() > HISTORY_LIMIT {
        let excess = history.len() - HISTORY_LIMIT;
        history.drain(1..=excess);
    }
}

/// The change of a task that was in state `from` and now is as it is.
fn change_of(task: &TaskView, from: TaskState) -> TaskChange {
    TaskChange {
        id: task.id.clone(),
        name: task.name.clone(),
        framework: task.framework.clone(),
        node: task.node.clone(),
        from,
        to: task.state,
        message: task.message.clone(),
        running_since: (task.history.iter())
            .find(|h| h.state == TaskState::Running)
            .map(|h| h.at),
    }
}

/// A rack task's address with its node's block, for the agent.
fn rack_address(task: &TaskView, node: Option<&NodeState>) -> Option<RackAddress> {
    let ip = holding(task).address?;
    let block = node?.task_block.filter(|b| b.contains(ip))?;
    Some(RackAddress { ip, block })
}

impl TaskTable {
    /// The stored tasks, on nodes as the node table sees them (`nodes` carry no allocation:
    /// it is summed here from the tasks that hold resources).
    pub fn load(stored: Vec<TaskView>, nodes: Vec<NodeState>) -> TaskTable {
        let tasks: BTreeMap<TaskId, TaskView> =
            stored.into_iter().map(|t| (t.id.clone(), t)).collect();
        let mut ledger = Ledger::new(nodes);
        for task in tasks.values().filter(|t| t.state.holds_resources()) {
            if let Some(node) = &task.node {
                ledger.reserve(node, holding(task));
            }
        }
        let mut pending = BTreeSet::new();
        let mut ended = 0;
        for t in tasks.values() {
            match t.state {
                TaskState::Pending => {
                    pending.insert((t.created_at, t.id.clone()));
                }
                s if s.is_terminal() => ended += 1,
                _ => {}
            }
        }
        TaskTable {
            tasks,
            ledger,
            pending,
            ended,
            dirty: BTreeSet::new(),
            deleted: Vec::new(),
            changes: Vec::new(),
            ids: IdSource::Random,
        }
    }

    /// Numbers new tasks `<name>.000000000001`, `...2`, and so on (past the largest suffix
    /// held), for tests.
    #[cfg(test)]
    pub fn count_ids(&mut self) {
        let held = self
            .tasks
            .keys()
            .filter_map(|id| id.as_str().rsplit_once('.'))
            .filter_map(|(_, hex)| u64::from_str_radix(hex, 16).ok())
            .max()
            .unwrap_or(0);
        self.ids = IdSource::Counter(held);
    }

    /// A new id, never one of a task in the table (random ids are drawn again on a
    /// collision; a task already forgotten cannot be checked, which 48 random bits make a
    /// one-in-billions event per name).
    fn new_id(&mut self, spec: &TaskSpec) -> TaskId {
        loop {
            let suffix = match &mut self.ids {
                IdSource::Random => torc_types::random_u64() & 0xffff_ffff_ffff,
                IdSource::Counter(n) => {
                    *n += 1;
                    *n
                }
            };
            let id = TaskId::new(format!("{}.{suffix:012x}", spec.name))
                .expect("service name + hex is a valid id");
            if !self.tasks.contains_key(&id) {
                return id;
            }
        }
    }

    /// Tells the ledger what is now known of a node (state, type, resources).
    pub fn sync_node(&mut self, node: NodeState) {
        self.ledger.upsert_node(node);
    }

    /// Accepts a task as pending; `place_pending` places it.
    pub fn add(&mut self, spec: TaskSpec, framework: FrameworkName, now: UnixMillis) -> TaskId {
        let id = self.new_id(&spec);
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
        self.dirty.insert(id.clone());
        id
    }

    /// Places pending tasks, oldest first; the ones that fit nowhere keep the reason.
    /// `ip_of` gives a node's address, which the task gets with its placement.
    /// `rack_network` is `Err(reason)` while the rack network is shut down: rack tasks wait with
    /// that reason.
    pub fn place_pending(
        &mut self,
        now: UnixMillis,
        ip_of: impl Fn(&NodeName) -> Option<IpAddr>,
        rack_network: Result<(), &str>,
    ) {
        if self.pending.is_empty() {
            return;
        }
        let queue: Vec<TaskId> = self.pending.iter().map(|(_, id)| id.clone()).collect();
        for id in queue {
            let task = &self.tasks[&id];
            if let (TaskNetwork::Rack, Err(reason)) = (task.spec.network, rack_network) {
                self.keep_waiting(&id, reason.to_string(), now);
                continue;
            }
            let req = TaskRequest {
                id: &task.id,
                resources: task.spec.resources,
                ports: task.spec.ports,
                constraints: &task.spec.constraints,
                rack_address: task.spec.network == TaskNetwork::Rack,
                container: task.spec.container.as_ref().map(|c| &c.image),
            };
            match self.ledger.place(&req) {
                Ok(placement) => {
                    let ip = (placement.address.map(IpAddr::V4)).or_else(|| ip_of(&placement.node));
                    let task = self.tasks.get_mut(&id).expect("pending task exists");
                    task.node = Some(placement.node.clone());
                    task.ip = ip;
                    task.ports = placement.ports;
                    let msg = format!("placed on {}", placement.node);
                    self.transition(&id, TaskState::Staging, Some(msg), None, now);
                }
                Err(reason) => self.keep_waiting(&id, format!("pending: {reason}"), now),
            }
        }
    }

    /// A pending task stays pending, with `reason` as its message.
    fn keep_waiting(&mut self, id: &TaskId, reason: String, now: UnixMillis) {
        let task = self.tasks.get_mut(id).expect("pending task exists");
        if task.message.as_deref() != Some(reason.as_str()) {
            task.message = Some(reason);
            task.updated_at = now;
            self.dirty.insert(id.clone());
        }
    }

    /// Asks for a task to end, with the reason recorded on it. Pending tasks end at once;
    /// placed ones are killed by their agent, or lost when their node is unreachable.
    pub fn kill(&mut self, id: &TaskId, why: &str, now: UnixMillis) -> Result<(), TaskError> {
        let task = self
            .tasks
            .get(id)
            .ok_or_else(|| TaskError::Unknown(id.clone()))?;
        match task.state {
            s if s.is_terminal() => Err(TaskError::Ended {
                id: id.clone(),
                state: s,
            }),
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
                    .and_then(|n| self.ledger.node(n))
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

    /// Marks a task lost (its node is gone or silent).
    pub fn lose(&mut self, id: &TaskId, why: String, now: UnixMillis) {
        self.transition(id, TaskState::Lost, Some(why), None, now);
    }

    /// Applies an agent's task reports. With `full`, the report is everything the agent runs:
    /// a running (or killing) task it does not list is lost (or killed).
    pub fn apply_reports(
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
            if let (TaskState::Staging, TaskState::Staging, Some(message)) =
                (current, r.state, r.message.clone())
            {
                self.progress(&r.id, message, now);
                continue;
            }
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

    /// A staging task's progress in words: its message follows every report; its history gets
    /// a line, and the rack's feed a change, only when the phase (the first word) changes.
    fn progress(&mut self, id: &TaskId, message: String, now: UnixMillis) {
        let Some(task) = self.tasks.get_mut(id) else {
            return;
        };
        if task.message.as_deref() == Some(message.as_str()) {
            return;
        }
        let phase = |m: Option<&str>| {
            m.and_then(|m| m.split_whitespace().next())
                .map(str::to_owned)
        };
        let new_phase = phase(Some(&message)) != phase(task.message.as_deref());
        task.message = Some(message);
        task.updated_at = now;
        self.dirty.insert(id.clone());
        if new_phase {
            push_history(&mut task.history, task.state, task.message.clone(), now);
            self.changes.push(change_of(task, task.state));
        }
    }

    /// Moves a task to a new state, keeping its history, the ledger and the pending queue in
    /// step, and queues the change.
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
        self.dirty.insert(id.clone());
        if old == state {
            return;
        }
        push_history(&mut task.history, state, message, now);
        if old.holds_resources()
            && !state.holds_resources()
            && let Some(node) = &task.node
        {
            self.ledger.release(node, holding(task));
        }
        if old == TaskState::Pending {
            self.pending.remove(&(task.created_at, task.id.clone()));
        }
        if state.is_terminal() {
            self.ended += 1;
        }
        self.changes.push(change_of(task, old));
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
            self.dirty.remove(&id);
            self.deleted.push(id);
            self.ended -= 1;
        }
    }

    /// The state changes since the last call, oldest first.
    pub fn take_transitions(&mut self) -> Vec<TaskChange> {
        std::mem::take(&mut self.changes)
    }

    /// The records to persist (and delete) since the last call.
    pub fn take_writes(&mut self) -> Vec<Write> {
        let mut writes: Vec<Write> = std::mem::take(&mut self.dirty)
            .into_iter()
            .filter_map(|id| {
                let task = self.tasks.get(&id)?;
                Some(Write::put(Table::Tasks, id.as_str(), task))
            })
            .collect();
        writes.extend(
            self.deleted
                .drain(..)
                .map(|id| Write::Delete(Table::Tasks, id.to_string())),
        );
        writes
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    pub fn get(&self, id: &TaskId) -> Option<&TaskView> {
        self.tasks.get(id)
    }

    /// A task's view, or why there is none.
    pub fn view(&self, id: &TaskId) -> Result<TaskView, TaskError> {
        self.tasks
            .get(id)
            .cloned()
            .ok_or_else(|| TaskError::Unknown(id.clone()))
    }

    /// The task if it has not ended.
    pub fn live(&self, id: Option<&TaskId>) -> Option<&TaskView> {
        id.and_then(|id| self.tasks.get(id))
            .filter(|t| !t.state.is_terminal())
    }

    /// Every task, by id.
    pub fn iter(&self) -> impl Iterator<Item = &TaskView> {
        self.tasks.values()
    }

    /// The ids of the tasks not ended that `pick` selects.
    pub fn live_ids(&self, pick: impl Fn(&TaskView) -> bool) -> Vec<TaskId> {
        self.tasks
            .values()
            .filter(|t| !t.state.is_terminal() && pick(t))
            .map(|t| t.id.clone())
            .collect()
    }

    /// The tasks a filter selects, oldest first.
    pub fn list(&self, filter: &TaskFilter) -> Vec<TaskView> {
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

    /// A framework's tasks; with `live_only`, those not ended.
    pub fn of_framework(&self, name: &FrameworkName, live_only: bool) -> Vec<TaskView> {
        self.tasks
            .values()
            .filter(|t| &t.framework == name && (!live_only || !t.state.is_terminal()))
            .cloned()
            .collect()
    }

    /// A node's desired set: its tasks in `staging` (to launch) or `running`.
    pub fn desired_on(&self, node: &NodeName) -> Vec<DesiredTask> {
        self.tasks
            .values()
            .filter(|t| t.node.as_ref() == Some(node))
            .filter(|t| matches!(t.state, TaskState::Staging | TaskState::Running))
            .map(|t| DesiredTask {
                id: t.id.clone(),
                spec: t.spec.clone(),
                ports: t.ports.clone(),
                launch: t.state == TaskState::Staging,
                rack_address: rack_address(t, self.ledger.node(node)),
                resolver: None,
                files: Default::default(),
                registry: None,
                pull_timeout_seconds: None,
            })
            .collect()
    }

    /// What the ledger holds on a node: resources, ports and tasks.
    pub fn allocation(&self, node: &NodeName) -> (Resources, usize, usize) {
        self.ledger
            .node(node)
            .map(|s| (s.allocated, s.used_ports.len(), s.tasks))
            .unwrap_or((Resources::ZERO, 0, 0))
    }

    /// Whether a task lives and asked for its own controller token.
    /// What a task's token may do: what its spec asked for, while it lives.
    pub fn token_access(&self, id: &TaskId) -> Option<ApiAccess> {
        (self.tasks.get(id))
            .filter(|t| !t.state.is_terminal())
            .and_then(|t| t.spec.credentials.api_access)
    }
}

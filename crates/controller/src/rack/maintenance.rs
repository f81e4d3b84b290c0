//! Node maintenance: cordon, uncordon, drain, and keeping a power command's result.
//!
//! A cordoned node takes no new task (the ledger skips it, so every path that places a task:
//! the API, the original API's group starts, frameworks, service restarts); what runs on it
//! keeps running. A task pinned to it (`singleton_each_node` instances too) waits, pending with
//! the reason, until it is uncordoned. A drain cordons the node, then moves its movable tasks elsewhere one at a
//! time: for the next one, a replacement of its service instance is launched (placed on
//! another node, or pending there until there is room, the drain then saying it waits); once
//! the replacement runs it becomes the instance's task and the old task is killed, so the
//! service never runs fewer instances than before when there is room. When no movable task is
//! left, the drain is done (the node stays cordoned).
//!
//! Movable: a live task that is the current task of a service instance (system service or
//! started group) that is not a job and is not pinned to the node (`constraints.node_name`,
//! which every `singleton_each_node` instance has). Left in place, and listed with why: pinned
//! instances, running jobs, frameworks' tasks and tasks launched directly (nothing would start
//! them again elsewhere: their owner decides).
//!
//! Everything a drain needs to go on is in the records (the node's `DrainRecord`, an instance's
//! `replacement`), so a restarted controller, or a new leader, goes on from where it was.
//! Each step is idempotent: it compares the records with the tasks and takes the next step.
//! Every step is a line of the event feed (`maintenance`).

use torc_api::{DrainView, EventKind, EventLevel, NodeView, PowerResult, TaskView};
use torc_types::{BUILTIN_FRAMEWORK, NodeName, ServiceName, TaskId, TaskState, UnixMillis};

use super::error::RackError;
use super::{Rack, builtin};

/// After a replacement failed, the next one starts no sooner than this.
const RETRY_MS: u64 = 5_000;

/// What a drain finds on its node.
struct DrainPlan {
    /// Movable tasks not moving yet: (instance, task), by instance name.
    movable: Vec<(ServiceName, TaskId)>,
    /// The move going on: (instance, old task, replacement).
    moving: Option<(ServiceName, TaskId, TaskId)>,
    /// Live tasks left in place, each with why.
    left: Vec<String>,
}

impl DrainPlan {
    /// `; 2 left in place (why; why)`, or nothing.
    fn left_text(&self) -> String {
        match self.left.len() {
            0 => String::new(),
            n => format!("; {n} left in place ({})", self.left.join("; ")),
        }
    }
}

impl Rack {
    /// Cordons a node: no new task is placed on it.
    pub fn cordon(&mut self, name: &NodeName, now: UnixMillis) -> Result<NodeView, RackError> {
        if self.nodes.set_cordoned(name, true, now)? {
            self.maintenance_event(
                EventLevel::Info,
                format!("node {name} cordoned: no new task is placed on it"),
                None,
                name,
                now,
            );
            self.sync_ledger(name);
        }
        self.node_view(name)
    }

    /// Lets tasks on a node again, and stops its drain if one goes on (a move under way still
    /// completes).
    pub fn uncordon(&mut self, name: &NodeName, now: UnixMillis) -> Result<NodeView, RackError> {
        let draining = self.nodes.draining().contains(name);
        if self.nodes.set_cordoned(name, false, now)? || draining {
            let stopped = if draining {
                "; its drain is stopped"
            } else {
                ""
            };
            self.maintenance_event(
                EventLevel::Info,
                format!("node {name} uncordoned: tasks may be placed on it again{stopped}"),
                None,
                name,
                now,
            );
            self.sync_ledger(name);
            self.schedule(now);
            self.maintain(now);
        }
        self.node_view(name)
    }

    /// Starts draining a node: cordoned, then its movable tasks moved one at a time.
    pub fn drain(&mut self, name: &NodeName, now: UnixMillis) -> Result<NodeView, RackError> {
        self.nodes.start_drain(name, now)?;
        self.sync_ledger(name);
        let plan = self.drain_plan(name);
        let left = plan.left_text();
        self.maintenance_event(
            EventLevel::Info,
            format!(
                "drain of {name} started: cordoned, {} task(s) to move one at a time{left}",
                plan.movable.len() + usize::from(plan.moving.is_some())
            ),
            None,
            name,
            now,
        );
        self.maintain(now);
        self.node_view(name)
    }

    /// Keeps a power command's run on its node and tells the event feed, output included.
    pub fn power_ran(&mut self, result: &PowerResult, now: UnixMillis) -> Result<(), RackError> {
        self.nodes.power_ran(result)?;
        let code = result
            .exit_code
            .map_or("no exit".to_string(), |c| format!("exit {c}"));
        let state = result
            .state
            .map(|s| format!(", power {s}"))
            .unwrap_or_default();
        let (level, outcome) = if result.ok {
            (EventLevel::Info, "ran")
        } else {
            (EventLevel::Error, "failed")
        };
        let output = match result.output.as_str() {
            "" => String::new(),
            o => format!(": {o}"),
        };
        let message = format!(
            "power {} of {} {outcome} ({}, {code}{state}){output}",
            result.action,
            result.node,
            result.command.join(" "),
        );
        self.maintenance_event(level, message, None, &result.node, now);
        Ok(())
    }

    /// The drain steps: finishes the moves whose replacement runs, then on each node with a
    /// drain going on starts the next move, notes why it waits, or ends the drain.
    pub(super) fn maintain(&mut self, now: UnixMillis) {
        let draining = self.nodes.draining();
        if draining.is_empty() && self.services.moves().next().is_none() {
            return;
        }
        self.finish_moves(now);
        for node in draining {
            self.drain_step(&node, now);
        }
    }

    /// Hands every instance whose replacement runs over to it, and kills the old task.
    fn finish_moves(&mut self, now: UnixMillis) {
        let running =
            |id: &TaskId| (self.tasks.get(id)).is_some_and(|t| t.state == TaskState::Running);
        let ready: Vec<(ServiceName, TaskId)> = (self.services.moves())
            .filter(|(_, _, new)| running(new))
            .map(|(name, _, new)| (name.clone(), new.clone()))
            .collect();
        for (name, new) in ready {
            let Some(old) = self.services.hand_over(&name) else {
                continue;
            };
            let from = self.tasks.get(&old).and_then(|t| t.node.clone());
            let to = self.tasks.get(&new).and_then(|t| t.node.clone());
            let (from_text, to_text) = (node_text(from.as_ref()), node_text(to.as_ref()));
            let why = format!("moved off {from_text} by its drain: {new} runs on {to_text}");
            let _ = self.kill_with(&old, &why, now);
            let Some(from) = from else { continue };
            self.nodes.update_drain(&from, |d| {
                d.moved += 1;
                d.waiting = None;
            });
            self.maintenance_event(
                EventLevel::Info,
                format!("drain of {from}: {name} moved to {to_text} ({new} runs); {old} killed"),
                Some(&new),
                &from,
                now,
            );
        }
    }

    /// One step of one node's drain.
    fn drain_step(&mut self, node: &NodeName, now: UnixMillis) {
        let plan = self.drain_plan(node);
        if let Some((name, _, new)) = &plan.moving {
            let pending = (self.tasks.get(new))
                .filter(|t| t.state == TaskState::Pending)
                .map(|t| t.message.clone().unwrap_or_default());
            match pending {
                Some(reason) => {
                    let why = format!(
                        "no room for {name} elsewhere ({reason}); its task stays until there is (`torc node uncordon {node}` stops the drain)"
                    );
                    self.drain_waits(node, why, now);
                }
                // Placed: whatever it waited for is over.
                None => self.nodes.update_drain(node, |d| d.waiting = None),
            }
            return;
        }
        let Some(record) = self.nodes.get(node).and_then(|n| n.drain.clone()) else {
            return;
        };
        let Some((name, old)) = plan.movable.first().cloned() else {
            self.nodes.update_drain(node, |d| {
                d.done_at = Some(now);
                d.waiting = None;
            });
            let left = plan.left_text();
            self.maintenance_event(
                EventLevel::Info,
                format!(
                    "drain of {node} done: {} task(s) moved{left}; it stays cordoned",
                    record.moved
                ),
                None,
                node,
                now,
            );
            return;
        };
        if now < record.retry_at {
            return;
        }
        let Some(spec) = self.services.get(&name).and_then(|r| r.spec.clone()) else {
            return;
        };
        match self.launch(spec, builtin(), now) {
            Ok(id) => {
                self.services.replacing(&name, id.clone());
                let placed = (self.tasks.get(&id))
                    .map(|t| match &t.node {
                        Some(n) => format!("placed on {n}"),
                        None => "pending".to_string(),
                    })
                    .unwrap_or_default();
                self.maintenance_event(
                    EventLevel::Info,
                    format!("drain of {node}: moving {name}: {old} is replaced by {id} ({placed}), killed once that runs"),
                    Some(&id),
                    node,
                    now,
                );
            }
            Err(e) => {
                let why = format!("cannot start a replacement for {name}: {e}");
                self.nodes
                    .update_drain(node, |d| d.retry_at = now + RETRY_MS);
                self.drain_waits(node, why, now);
            }
        }
    }

    /// A drain waits: kept on the node, and told to the feed when the reason is new.
    fn drain_waits(&mut self, node: &NodeName, why: String, now: UnixMillis) {
        let new = (self.nodes.get(node).and_then(|n| n.drain.as_ref()))
            .is_some_and(|d| d.waiting.as_ref() != Some(&why));
        if new {
            self.nodes
                .update_drain(node, |d| d.waiting = Some(why.clone()));
            let message = format!("drain of {node} waits: {why}");
            self.maintenance_event(EventLevel::Warning, message, None, node, now);
        }
    }

    /// A drain's replacement ended before it ran (`old` the task it was to replace): the
    /// drain of `old`'s node tries again after `RETRY_MS`.
    pub(super) fn replacement_ended(
        &mut self,
        replacement: &TaskId,
        old: &TaskId,
        state: TaskState,
        message: Option<&str>,
        now: UnixMillis,
    ) {
        let Some(node) = self.tasks.get(old).and_then(|t| t.node.clone()) else {
            return;
        };
        let why = message.map(|m| format!(": {m}")).unwrap_or_default();
        let line = format!(
            "replacement {replacement} of {old} ended before it ran ({state}{why}); another is tried in {} s",
            RETRY_MS / 1000
        );
        self.nodes
            .update_drain(&node, |d| d.retry_at = now + RETRY_MS);
        self.drain_waits(&node, line, now);
    }

    /// What a drain of `node` finds there now.
    fn drain_plan(&self, node: &NodeName) -> DrainPlan {
        let mut plan = DrainPlan {
            movable: Vec::new(),
            moving: None,
            left: Vec::new(),
        };
        let here = |t: &&TaskView| {
            t.node.as_ref() == Some(node)
                && matches!(t.state, TaskState::Staging | TaskState::Running)
        };
        for t in self.tasks.iter().filter(here) {
            if self.services.is_replacement(t) {
                continue;
            }
            let id = &t.id;
            match self.services.instance_of(t) {
                None if t.framework.as_str() != BUILTIN_FRAMEWORK => plan
                    .left
                    .push(format!("{id}: a task of framework {}", t.framework)),
                None => plan.left.push(format!(
                    "{id}: launched directly, no service starts it elsewhere"
                )),
                Some(rec) if rec.policy.is_job => plan
                    .left
                    .push(format!("{id}: a job of {}, left to end", rec.name)),
                Some(rec) if t.spec.constraints.node_name.is_some() || rec.spec.is_none() => plan
                    .left
                    .push(format!("{id}: {} is pinned to {node}", rec.name)),
                Some(rec) => match &rec.replacement {
                    Some(new) => plan.moving = Some((rec.name.clone(), id.clone(), new.clone())),
                    None => plan.movable.push((rec.name.clone(), id.clone())),
                },
            }
        }
        plan.movable.sort();
        plan
    }

    /// A node's drain for people: its record with what it finds on the node now.
    pub(super) fn drain_view(&self, node: &NodeName) -> Option<DrainView> {
        let record = self.nodes.get(node)?.drain.as_ref()?;
        let mut plan = self.drain_plan(node);
        if record.done_at.is_some() && record.stopped.is_none() {
            // Done: what came to the node since is not the drain's (it may be uncordoned).
            plan.movable.clear();
            plan.moving = None;
        }
        let moving = plan.moving.as_ref().map(|(name, old, new)| {
            let state = self.tasks.get(new).map_or_else(
                || "gone".to_string(),
                |t| match &t.node {
                    Some(n) => format!("{} on {n}", t.state),
                    None => t.state.to_string(),
                },
            );
            format!("{name}: {old} -> {new} ({state})")
        });
        Some(DrainView {
            started_at: record.started_at,
            done_at: record.done_at,
            stopped: record.stopped.clone(),
            moved: record.moved,
            to_move: plan.movable.len() + usize::from(moving.is_some()),
            moving,
            waiting: record.waiting.clone(),
            left: plan.left,
        })
    }

    fn maintenance_event(
        &mut self,
        level: EventLevel,
        message: String,
        task: Option<&TaskId>,
        node: &NodeName,
        now: UnixMillis,
    ) {
        self.feed.record(
            EventKind::Maintenance,
            level,
            message,
            task,
            Some(node),
            now,
        );
    }
}

fn node_text(node: Option<&NodeName>) -> String {
    node.map_or_else(|| "no node".to_string(), |n| n.to_string())
}

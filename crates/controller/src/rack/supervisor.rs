//! The service supervisor: the config's system services (always on, expanded per node by their
//! SLA) and the instances of started service groups, each a durable record that outlives its
//! tasks; and the rules of their lives: restart back-off, jobs, dependencies, health.
//!
//! When an instance's task ends, the record schedules the next start after `restart_delay`,
//! doubling on each failure in a row up to `max_restart_delay` (a crash loop does not hammer
//! the node); a task that ran for a minute resets the count. A task its node's agent stopped
//! unasked (the agent shut down: a rack stopped or restarted) did not fail: its instance starts
//! again at once, with no back-off and no failure counted. Jobs (`is_job`) run once.
//! `dependent_service` holds a start until the dependency runs and is healthy. After
//! `failure_threshold` failed health checks in a row, the task is replaced.
//!
//! What it is not: it starts and kills nothing itself. It answers what to start
//! ([`Supervisor::due_starts`]) and what to kill (the `(task, why)` pairs its methods return);
//! the rack does it through the task table and reports back (`started`, `task_ended`).
//!
//! A changed spec is rolled out (`rack::rollout`): the record takes the new spec at once and
//! keeps the one before in its `rollout` mark, and the rollout replaces its task when its turn
//! comes. The supervisor's part: the rollout's own kill of the old task is no failure (the new
//! spec starts at once), and a task of the new spec that ends, or cannot be launched, while its
//! instance is being replaced fails the rollout (`RolloutMark::failed`). A spec that was rolled
//! back is not taken again (`rolled_back`) until the config changes it.
//!
//! A drain moves an instance off its node without a gap (`replacement`): a second task of the
//! instance is started elsewhere, and once it runs it becomes the instance's task and the old
//! one is killed; should the old one end first, the replacement takes over at once.
//!
//! Invariants:
//! - At most one live task per service instance, but for a drain's move: then its
//!   replacement too, until the replacement runs (or ends; or the old task ends).
//! - A service instance's task is always a task of the built-in framework named like it.
//! - Starting a group that runs changes nothing; stopping it removes its records for good.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use torc_api::{Failure, GroupView, Health, ServiceStatus, ServiceView, TaskView};
use torc_types::{NodeName, NodeType, ServiceName, TaskId, TaskSpec, TaskState, UnixMillis};

use super::error::{RackError, ServiceError};
use super::nodes::NodeTable;
use super::tasks::{TaskChange, TaskTable};
use crate::settings::{Probe, RackSettings, ServicePolicy, ServiceTemplate, SlaKind};
use crate::store::{Table, Write};

/// A failure in a row resets the back-off once a task ran this long.
const STABLE_RUN_MS: u64 = 60_000;

/// A task to kill, and why.
pub type Kill = (TaskId, String);

/// One supervised service instance. Other parts read it; only the supervisor changes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    /// Instance name: task name and DNS name.
    pub name: ServiceName,
    /// The config's service name.
    pub service: ServiceName,
    /// The group it was started from; `None` for a system service.
    pub group: Option<ServiceName>,
    /// `None` when the config gives no command to run.
    pub spec: Option<TaskSpec>,
    pub policy: ServicePolicy,
    pub task: Option<TaskId>,
    pub restarts: u32,
    /// Failures in a row (drives the back-off).
    pub failures: u32,
    pub next_start: Option<UnixMillis>,
    pub last_failure: Option<Failure>,
    /// A job that ran.
    pub completed: bool,
    pub waiting: Option<String>,
    /// The task a drain started elsewhere to take over from `task` once it runs.
    #[serde(default)]
    pub replacement: Option<TaskId>,
    /// Its part in its service's rollout of a changed spec (`rack::rollout`), stored so that
    /// a restarted controller or a new leader goes on.
    #[serde(default)]
    pub rollout: Option<RolloutMark>,
    /// The last rollout of a spec that was rolled back: that spec is not taken again until
    /// the config changes it.
    #[serde(default)]
    pub rolled_back: Option<RolledBack>,
    /// Health of the current task; not persisted (a restarted controller checks again).
    #[serde(skip)]
    pub health: HealthState,
}

/// An instance's part in its service's rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RolloutMark {
    /// The spec before the rollout: what a rollback goes back to.
    pub previous: Option<TaskSpec>,
    /// When the rollout (or its rollback) began.
    pub started_at: UnixMillis,
    pub phase: RolloutPhase,
    /// Why the rollout failed at this instance: the service rolls back.
    #[serde(default)]
    pub failed: Option<String>,
    /// A rollback's mark: a failure ends it rather than rolling back again.
    #[serde(default)]
    pub back: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RolloutPhase {
    /// Its task still runs the spec before; its turn has not come.
    Waiting,
    /// Its turn: `old` (its task then, if one lived) was killed at `since`, and a task of the
    /// record's spec must run and be healthy.
    Replacing {
        since: UnixMillis,
        old: Option<TaskId>,
    },
    /// Its task of the record's spec runs and is healthy.
    Done,
}

/// A rollout that was rolled back: the spec it tried, and why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RolledBack {
    pub spec: Option<TaskSpec>,
    pub why: String,
    pub at: UnixMillis,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) enum HealthKind {
    #[default]
    Unknown,
    Healthy,
    Unhealthy,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct HealthState {
    pub kind: HealthKind,
    pub failures: u32,
    pub checked_at: UnixMillis,
    pub message: Option<String>,
}

/// A health check due now: which instance, which task, and what to probe.
#[derive(Debug, Clone)]
pub struct HealthCheck {
    pub service: ServiceName,
    pub task: TaskId,
    pub probe: Probe,
    pub timeout_ms: u64,
    pub ip: Option<std::net::IpAddr>,
    pub ports: Vec<u16>,
}

/// Why a health check failed, as its probe found it (`crate::health` runs the probes). The
/// supervisor keeps its text as the instance's health message.
#[derive(Debug, thiserror::Error)]
pub enum ProbeFailure {
    /// The TCP connect failed (refused, unreachable, ...).
    #[error("tcp {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("tcp {addr}: no answer in {timeout_ms} ms")]
    ConnectTimeout { addr: String, timeout_ms: u64 },
    /// An answer whose status is neither a success nor a redirection.
    #[error("http {url}: {status}")]
    HttpStatus {
        url: String,
        status: reqwest::StatusCode,
    },
    /// No answer: the request failed (connect, timeout, protocol).
    #[error("http {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("empty health command")]
    EmptyCommand,
    /// The command could not be started, or waited for.
    #[error("command {cmd}: {source}")]
    Command {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// The command ended unsuccessfully; `stderr` is what it wrote there, trimmed.
    #[error("command {cmd}: {status} {stderr}")]
    Exited {
        cmd: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("command {cmd}: no result in {timeout_ms} ms")]
    CommandTimeout { cmd: String, timeout_ms: u64 },
}

/// An instance to start now.
#[derive(Debug, Clone)]
pub struct Start {
    pub service: ServiceName,
    pub spec: TaskSpec,
    /// It ran before (a restart, counted when it starts).
    pub restart: bool,
}

fn instance_name(base: &ServiceName, suffix: &str) -> Result<ServiceName, ServiceError> {
    ServiceName::new(format!("{base}-{suffix}")).map_err(|source| ServiceError::BadInstanceName {
        base: base.clone(),
        suffix: suffix.to_string(),
        source,
    })
}

impl ServiceRecord {
    fn new(
        name: ServiceName,
        t: &ServiceTemplate,
        group: Option<ServiceName>,
        node: Option<&NodeName>,
    ) -> Self {
        let mut rec = ServiceRecord {
            name,
            service: t.name.clone(),
            group,
            spec: None,
            policy: t.policy.clone(),
            task: None,
            restarts: 0,
            failures: 0,
            next_start: None,
            last_failure: None,
            completed: false,
            waiting: None,
            replacement: None,
            rollout: None,
            rolled_back: None,
            health: HealthState::default(),
        };
        rec.spec = rec.expand(t, node);
        rec
    }

    /// The template's spec for this instance.
    fn expand(&self, t: &ServiceTemplate, node: Option<&NodeName>) -> Option<TaskSpec> {
        t.spec.clone().map(|mut spec| {
            spec.name = self.name.clone();
            if let Some(n) = node {
                spec.constraints.node_name = Some(n.clone());
            }
            spec
        })
    }

    /// Takes the template's policy at once, and its spec: an instance that has run gets a
    /// rollout mark, so its task is replaced when its turn comes (`rack::rollout`); one that
    /// never ran starts with it. A spec that was rolled back is not taken again (and is
    /// forgotten once the config asks for the spec that runs). A spec that changes again
    /// during a rollout restarts the rollout's count: instances done go back
    /// to waiting (the spec to roll back to stays the first one). Returns whether anything
    /// changed.
    fn apply_template(
        &mut self,
        t: &ServiceTemplate,
        node: Option<&NodeName>,
        now: UnixMillis,
    ) -> bool {
        let policy_changed = self.policy != t.policy;
        self.policy = t.policy.clone();
        let spec = self.expand(t, node);
        if spec == self.spec {
            // The config asks for what runs: a rolled-back spec is no longer news.
            return self.rolled_back.take().is_some() || policy_changed;
        }
        if self.rolled_back.as_ref().is_some_and(|r| r.spec == spec) {
            return policy_changed;
        }
        self.rolled_back = None;
        let previous = std::mem::replace(&mut self.spec, spec);
        if self.policy.is_job || self.task.is_none() {
            return true;
        }
        match &mut self.rollout {
            Some(mark) => {
                if mark.phase == RolloutPhase::Done {
                    mark.phase = RolloutPhase::Waiting;
                }
                mark.back = false;
                mark.failed = None;
                mark.started_at = now;
            }
            None => {
                self.rollout = Some(RolloutMark {
                    previous,
                    started_at: now,
                    phase: RolloutPhase::Waiting,
                    failed: None,
                    back: false,
                })
            }
        }
        true
    }

    /// Whether it is being replaced by its rollout now (its task killed, the new one due).
    fn replacing(&self) -> bool {
        matches!(
            self.rollout.as_ref().map(|m| &m.phase),
            Some(RolloutPhase::Replacing { .. })
        )
    }

    /// `system`, or the group it was started from.
    pub fn origin(&self) -> String {
        self.group
            .as_ref()
            .map_or_else(|| "system".to_string(), |g| g.to_string())
    }

    /// Whether its running task may be named in DNS: it has no health check, or passes it.
    pub fn passes_health(&self) -> bool {
        self.policy.health.is_none() || self.health.kind == HealthKind::Healthy
    }

    fn health_view(&self) -> Health {
        let state = match (&self.policy.health, &self.health.kind) {
            (None, _) => "none",
            (Some(_), HealthKind::Unknown) => "unknown",
            (Some(_), HealthKind::Healthy) => "healthy",
            (Some(_), HealthKind::Unhealthy) => "unhealthy",
        };
        Health {
            state: state.to_string(),
            message: self.health.message.clone(),
            checked_at: self.health.checked_at,
        }
    }

    fn view(&self, tasks: &TaskTable) -> ServiceView {
        let task = self.task.as_ref().and_then(|id| tasks.get(id));
        ServiceView {
            name: self.name.clone(),
            service: self.service.clone(),
            origin: self.origin(),
            task: self.task.clone(),
            state: task.map(|t| t.state),
            node: task.and_then(|t| t.node.clone()),
            ip: task.and_then(|t| t.ip),
            ports: task.map(|t| t.ports.clone()).unwrap_or_default(),
            tls: task.is_some_and(|t| t.spec.credentials.tls),
            restarts: self.restarts,
            last_failure: self.last_failure.clone(),
            health: self.health_view(),
            next_start_at: self.next_start,
            waiting: self.waiting.clone(),
            is_job: self.policy.is_job,
            metered: self.policy.is_metered,
        }
    }
}

/// The supervised service instances, by instance name.
#[derive(Debug, Default)]
pub struct Supervisor {
    records: BTreeMap<ServiceName, ServiceRecord>,
    /// Records to persist (or delete, when gone).
    dirty: BTreeSet<ServiceName>,
    /// A service's health changed since the last `take_health_changed` (health is not
    /// persisted, but DNS names only healthy instances).
    health_changed: bool,
}

impl Supervisor {
    pub fn load(stored: Vec<ServiceRecord>) -> Supervisor {
        Supervisor {
            records: stored.into_iter().map(|s| (s.name.clone(), s)).collect(),
            ..Supervisor::default()
        }
    }

    fn mark(&mut self, name: &ServiceName) {
        self.dirty.insert(name.clone());
    }

    /// The records to persist (and delete) since the last call.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|name| Write::current(Table::Services, name.as_str(), self.records.get(&name)))
            .collect()
    }

    /// Whether a service's health changed since the last call.
    pub fn take_health_changed(&mut self) -> bool {
        std::mem::take(&mut self.health_changed)
    }

    /// The system-service instances the config asks for on the current nodes.
    fn desired_system_instances(
        settings: &RackSettings,
        nodes: &NodeTable,
    ) -> Vec<(ServiceName, ServiceTemplate, Option<NodeName>)> {
        let mut out = Vec::new();
        for t in &settings.system_services {
            match t.sla {
                None => out.push((t.name.clone(), t.clone(), None)),
                Some(sla) => {
                    for n in nodes.iter() {
                        if sla == SlaKind::EachSlave && n.node_type != NodeType::Slave {
                            continue;
                        }
                        match instance_name(&t.name, n.name.as_str()) {
                            Ok(name) => out.push((name, t.clone(), Some(n.name.clone()))),
                            Err(e) => tracing::error!(error = %e, "cannot expand service"),
                        }
                    }
                }
            }
        }
        out
    }

    /// Brings the records in line with the config: new system instances (e.g. for a node that
    /// just joined), changed specs, removed services. Returns the tasks of removed instances.
    pub fn adopt_config(
        &mut self,
        settings: &RackSettings,
        nodes: &NodeTable,
        now: UnixMillis,
    ) -> Vec<Kill> {
        let desired = Self::desired_system_instances(settings, nodes);
        let mut wanted = BTreeSet::new();
        for (name, t, node) in desired {
            wanted.insert(name.clone());
            match self.records.get_mut(&name) {
                Some(rec) if rec.group.is_none() => {
                    if rec.apply_template(&t, node.as_ref(), now) {
                        self.mark(&name);
                    }
                }
                Some(_) => {} // a group instance of the same name: the config validator forbids it
                None => {
                    self.records.insert(
                        name.clone(),
                        ServiceRecord::new(name.clone(), &t, None, node.as_ref()),
                    );
                    self.mark(&name);
                }
            }
        }
        let stale: Vec<ServiceName> = self
            .records
            .values()
            .filter(|r| match &r.group {
                None => !wanted.contains(&r.name),
                Some(g) => !settings
                    .groups
                    .get(g)
                    .is_some_and(|ts| ts.iter().any(|t| t.name == r.service)),
            })
            .map(|r| r.name.clone())
            .collect();
        let mut kills = Vec::new();
        for name in stale {
            kills.extend(self.remove(&name, "its service was removed from the rack config"));
        }
        // Group instances follow template changes too.
        let groups: Vec<(ServiceName, ServiceTemplate)> = self
            .records
            .values()
            .filter_map(|r| {
                let g = r.group.as_ref()?;
                let t = settings
                    .groups
                    .get(g)?
                    .iter()
                    .find(|t| t.name == r.service)?;
                Some((r.name.clone(), t.clone()))
            })
            .collect();
        for (name, t) in groups {
            if let Some(rec) = self.records.get_mut(&name)
                && rec.apply_template(&t, None, now)
            {
                self.mark(&name);
            }
        }
        kills
    }

    /// Forgets an instance; returns its task (and a drain's replacement of it) to kill.
    pub fn remove(&mut self, name: &ServiceName, why: &str) -> Vec<Kill> {
        let Some(rec) = self.records.remove(name) else {
            return Vec::new();
        };
        self.mark(name);
        (rec.task.into_iter().chain(rec.replacement))
            .map(|id| (id, why.to_string()))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // A drain's moves

    /// A drain started `id` elsewhere to take over from the instance's task.
    pub fn replacing(&mut self, name: &ServiceName, id: TaskId) {
        if let Some(rec) = self.records.get_mut(name) {
            rec.replacement = Some(id);
            self.mark(name);
        }
    }

    /// The moves going on: (instance, its task, the replacement).
    pub fn moves(&self) -> impl Iterator<Item = (&ServiceName, &TaskId, &TaskId)> {
        (self.records.values())
            .filter_map(|r| Some((&r.name, r.task.as_ref()?, r.replacement.as_ref()?)))
    }

    /// The replacement runs: it becomes the instance's task. Returns the old task, to kill.
    /// TODO-correctness: the replacement is not health-checked before it takes over, so an
    /// instance with a health check leaves DNS until its new task's first check passes.
    pub fn hand_over(&mut self, name: &ServiceName) -> Option<TaskId> {
        let rec = self.records.get_mut(name)?;
        let new = rec.replacement.take()?;
        let old = rec.task.replace(new);
        rec.health = HealthState::default();
        self.mark(name);
        self.health_changed = true;
        old
    }

    /// Whether a dependency runs and is healthy: a service instance, or any task, by name.
    fn ready(&self, dep: &ServiceName, tasks: &TaskTable) -> bool {
        let by_service = self.records.values().any(|r| {
            (r.name == *dep || r.service == *dep)
                && tasks
                    .live(r.task.as_ref())
                    .is_some_and(|t| t.state == TaskState::Running)
                && r.passes_health()
        });
        by_service
            || tasks.iter().any(|t| {
                t.name == *dep
                    && t.state == TaskState::Running
                    && !self.records.contains_key(&t.name)
            })
    }

    fn set_waiting(&mut self, name: &ServiceName, why: Option<String>) {
        if let Some(rec) = self.records.get_mut(name)
            && rec.waiting != why
        {
            rec.waiting = why;
            self.mark(name);
        }
    }

    /// The instances that should run now and do not. Those that cannot start say why (no
    /// command, a dependency not ready) in their `waiting`.
    pub fn due_starts(&mut self, tasks: &TaskTable, now: UnixMillis) -> Vec<Start> {
        let names: Vec<ServiceName> = self.records.keys().cloned().collect();
        let mut out = Vec::new();
        for name in names {
            let rec = &self.records[&name];
            if rec.completed || tasks.live(rec.task.as_ref()).is_some() {
                continue;
            }
            if rec.next_start.is_some_and(|at| now < at) {
                continue;
            }
            let Some(spec) = rec.spec.clone() else {
                let why = "cannot run: the service has neither a command nor an image_name";
                self.set_waiting(&name, Some(why.to_string()));
                continue;
            };
            if let Some(dep) = rec.policy.dependent_service.clone()
                && !self.ready(&dep, tasks)
            {
                self.set_waiting(
                    &name,
                    Some(format!("waiting for {dep} to run and be healthy")),
                );
                continue;
            }
            out.push(Start {
                restart: rec.task.is_some(),
                service: name,
                spec,
            });
        }
        out
    }

    /// How a start went. Returns the feed's line for a restart.
    pub fn started(&mut self, start: &Start, result: Result<TaskId, RackError>) -> Option<String> {
        let name = &start.service;
        match result {
            Ok(id) => {
                let rec = self.records.get_mut(name)?;
                rec.task = Some(id);
                rec.next_start = None;
                rec.waiting = None;
                rec.health = HealthState::default();
                // A rollout's replacement is no restart: its own lines are in the feed.
                let line = (start.restart && !rec.replacing()).then(|| {
                    rec.restarts += 1;
                    format!("service {name} restarted (restart {})", rec.restarts)
                });
                self.mark(name);
                line
            }
            Err(e) => {
                if let Some(rec) = self.records.get_mut(name)
                    && rec.replacing()
                    && let Some(mark) = &mut rec.rollout
                {
                    mark.failed = Some(format!("{name}: its new task cannot be launched: {e}"));
                }
                self.set_waiting(name, Some(format!("cannot launch: {e}")));
                None
            }
        }
    }

    /// A built-in task ended: if it is an instance's, a job is done, and anything else is
    /// restarted after its back-off. A drain's replacement that ended before it took over is
    /// forgotten: returns the task it was to replace (the drain tries again). An instance's
    /// task that ended while its replacement was on the way leaves the instance to it.
    pub fn task_ended(&mut self, change: &TaskChange, now: UnixMillis) -> Option<TaskId> {
        let state = change.to;
        if let Some(rec) = (self.records.get_mut(&change.name))
            .filter(|r| r.replacement.as_ref() == Some(&change.id))
        {
            rec.replacement = None;
            let old = rec.task.clone();
            self.mark(&change.name);
            return old;
        }
        if let Some(rec) = (self.records.get_mut(&change.name))
            .filter(|r| r.task.as_ref() == Some(&change.id) && r.replacement.is_some())
        {
            rec.task = rec.replacement.take();
            rec.health = HealthState::default();
            self.mark(&change.name);
            return None;
        }
        let rec = self
            .records
            .get_mut(&change.name)
            .filter(|r| r.task.as_ref() == Some(&change.id))?;
        let what = match (state, &change.message) {
            (TaskState::Finished, _) => "exited with code 0".to_string(),
            (_, Some(m)) => format!("{state}: {m}"),
            (_, None) => state.to_string(),
        };
        if let Some(mark) = &mut rec.rollout
            && let RolloutPhase::Replacing { old, .. } = &mark.phase
        {
            if old.as_ref() == Some(&change.id) {
                // The rollout's own kill: the new spec starts at once.
                rec.next_start = Some(now);
                rec.waiting = Some("rolling out: its new spec starts".to_string());
                self.mark(&change.name);
                return None;
            }
            // A task of the new spec ended before its instance counted as replaced.
            mark.failed = Some(format!(
                "{}: its new task {} {what}",
                change.name, change.id
            ));
        }
        if rec.policy.is_job {
            rec.completed = true;
            if state != TaskState::Finished {
                rec.last_failure = Some(Failure {
                    at: now,
                    message: what,
                });
            }
        } else if state == TaskState::Killed
            && change.from != TaskState::Killing
            && change.message.as_deref() == Some(torc_api::AGENT_SHUTDOWN_STOP)
        {
            // Killed without the rack asking, by its node's agent as that shut down (a rack
            // stopped, killed or restarted; the agent says so). Not a failure of the service:
            // started again at the next step, its failures and last failure kept as they were.
            // A task killed unasked for any other reason (a signal from elsewhere) backs off.
            rec.next_start = Some(now);
            rec.waiting = Some("starting again: its node's agent stopped it".to_string());
        } else {
            let ran_ms = change.running_since.map_or(0, |at| now.saturating_sub(at));
            if ran_ms >= STABLE_RUN_MS {
                rec.failures = 0;
            }
            rec.failures += 1;
            let factor = 1u64 << (rec.failures - 1).min(20);
            let delay = rec
                .policy
                .restart_delay_ms
                .saturating_mul(factor)
                .min(rec.policy.max_restart_delay_ms);
            rec.next_start = Some(now + delay);
            rec.waiting = Some(format!(
                "restarting {delay} ms after it ended ({} failure(s) in a row)",
                rec.failures
            ));
            rec.last_failure = Some(Failure {
                at: now,
                message: what,
            });
        }
        let name = change.name.clone();
        self.mark(&name);
        None
    }

    // -----------------------------------------------------------------------------------------
    // Rollouts (their steps are `rack::rollout`'s)

    /// Whether any instance is marked for a rollout step (the reconciler's cheap test before
    /// it looks at rollouts).
    pub fn any_rollout(&self) -> bool {
        self.records.values().any(|r| r.rollout.is_some())
    }

    /// The services with a rollout going on or rolled back: (group, service) → every
    /// instance of the service, by name.
    pub fn rollouts(&self) -> BTreeMap<(Option<ServiceName>, ServiceName), Vec<ServiceName>> {
        let with_rollout: BTreeSet<(Option<ServiceName>, ServiceName)> = (self.records.values())
            .filter(|r| r.rollout.is_some() || r.rolled_back.is_some())
            .map(|r| (r.group.clone(), r.service.clone()))
            .collect();
        let mut out: BTreeMap<_, Vec<ServiceName>> = BTreeMap::new();
        for r in self.records.values() {
            let key = (r.group.clone(), r.service.clone());
            if with_rollout.contains(&key) {
                out.entry(key).or_default().push(r.name.clone());
            }
        }
        out
    }

    /// Changes an instance's rollout state (a step of `rack::rollout`), stored with it.
    pub fn update_rollout(&mut self, name: &ServiceName, f: impl FnOnce(&mut ServiceRecord)) {
        if let Some(rec) = self.records.get_mut(name) {
            f(rec);
            self.mark(name);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Groups

    /// Adds the records of a service group's instances. Idempotent: instances that exist are
    /// left alone. Returns the instances' names.
    pub fn start_group(
        &mut self,
        group: &ServiceName,
        settings: &RackSettings,
    ) -> Result<Vec<ServiceName>, ServiceError> {
        let Some(templates) = settings.groups.get(group) else {
            return Err(ServiceError::GroupNotInConfig {
                group: group.clone(),
                origin: settings.config_origin.clone(),
            });
        };
        let mut names = Vec::new();
        for t in templates {
            for i in 0..t.instances {
                let name = if t.instances == 1 {
                    t.name.clone()
                } else {
                    instance_name(&t.name, &i.to_string())?
                };
                if let Some(existing) = self.records.get(&name)
                    && existing.group.as_ref() != Some(group)
                {
                    return Err(ServiceError::InstanceTaken {
                        origin: existing.origin(),
                        name,
                    });
                }
                names.push((name, t));
            }
        }
        let mut out = Vec::new();
        for (name, t) in names {
            if !self.records.contains_key(&name) {
                let rec = ServiceRecord::new(name.clone(), t, Some(group.clone()), None);
                self.records.insert(name.clone(), rec);
                self.mark(&name);
            }
            out.push(name);
        }
        Ok(out)
    }

    /// Forgets a service group's instances; returns their names and the tasks to kill.
    pub fn stop_group(
        &mut self,
        group: &ServiceName,
        settings: &RackSettings,
    ) -> Result<(Vec<ServiceName>, Vec<Kill>), ServiceError> {
        if !settings.groups.contains_key(group) {
            return Err(ServiceError::UnknownGroup(group.clone()));
        }
        let names: Vec<ServiceName> = self
            .records
            .values()
            .filter(|r| r.group.as_ref() == Some(group))
            .map(|r| r.name.clone())
            .collect();
        let why = format!("group {group} stopped");
        let kills = names.iter().flat_map(|n| self.remove(n, &why)).collect();
        Ok((names, kills))
    }

    // -----------------------------------------------------------------------------------------
    // Health

    /// Health checks due at `now`.
    pub fn due_health_checks(&self, tasks: &TaskTable, now: UnixMillis) -> Vec<HealthCheck> {
        self.records
            .values()
            .filter_map(|r| {
                let h = r.policy.health.as_ref()?;
                let task = tasks
                    .live(r.task.as_ref())
                    .filter(|t| t.state == TaskState::Running)?;
                (now.saturating_sub(r.health.checked_at) >= h.interval_ms).then(|| HealthCheck {
                    service: r.name.clone(),
                    task: task.id.clone(),
                    probe: h.probe.clone(),
                    timeout_ms: h.timeout_ms,
                    ip: task.ip,
                    ports: task.ports.clone(),
                })
            })
            .collect()
    }

    /// Marks a check as started, so it is not started again before it ends.
    pub fn health_check_started(&mut self, service: &ServiceName, now: UnixMillis) {
        if let Some(rec) = self.records.get_mut(service) {
            rec.health.checked_at = now;
        }
    }

    /// Records a check's outcome; after `failure_threshold` failures in a row, returns the
    /// task to kill (the service is then restarted).
    pub fn record_health(
        &mut self,
        service: &ServiceName,
        task: &TaskId,
        result: Result<(), ProbeFailure>,
        now: UnixMillis,
    ) -> Option<Kill> {
        let rec = self
            .records
            .get_mut(service)
            .filter(|r| r.task.as_ref() == Some(task))?;
        let threshold = rec
            .policy
            .health
            .as_ref()
            .map_or(1, |h| h.failure_threshold);
        rec.health.checked_at = now;
        match result {
            Ok(()) => {
                if rec.health.kind != HealthKind::Healthy {
                    tracing::info!(service = %service, "healthy");
                    self.health_changed = true;
                }
                rec.health = HealthState {
                    kind: HealthKind::Healthy,
                    failures: 0,
                    checked_at: now,
                    message: None,
                };
                None
            }
            Err(why) => {
                rec.health.failures += 1;
                rec.health.message = Some(why.to_string());
                if rec.health.failures < threshold {
                    return None;
                }
                rec.health.kind = HealthKind::Unhealthy;
                self.health_changed = true;
                let msg = format!(
                    "unhealthy ({} failed checks in a row: {why}); replacing it",
                    rec.health.failures
                );
                tracing::warn!(service = %service, "{msg}");
                Some((task.clone(), msg))
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Reads

    pub fn get(&self, name: &ServiceName) -> Option<&ServiceRecord> {
        self.records.get(name)
    }

    /// The instance whose current task `task` is.
    pub fn instance_of(&self, task: &TaskView) -> Option<&ServiceRecord> {
        self.records
            .get(&task.name)
            .filter(|r| r.task.as_ref() == Some(&task.id))
    }

    /// Whether `task` is a drain's replacement that has not taken over yet.
    pub fn is_replacement(&self, task: &TaskView) -> bool {
        (self.records.get(&task.name)).is_some_and(|r| r.replacement.as_ref() == Some(&task.id))
    }

    pub fn views(&self, tasks: &TaskTable) -> Vec<ServiceView> {
        self.records.values().map(|r| r.view(tasks)).collect()
    }

    pub fn view(&self, name: &ServiceName, tasks: &TaskTable) -> Result<ServiceView, ServiceError> {
        self.records
            .get(name)
            .map(|r| r.view(tasks))
            .ok_or_else(|| ServiceError::UnknownInstance(name.clone()))
    }

    /// The config's groups with their running instances.
    pub fn groups(&self, settings: &RackSettings, tasks: &TaskTable) -> Vec<GroupView> {
        settings
            .groups
            .iter()
            .map(|(name, ts)| GroupView {
                name: name.clone(),
                services: ts.iter().map(|t| t.name.clone()).collect(),
                instances: self
                    .records
                    .values()
                    .filter(|r| r.group.as_ref() == Some(name))
                    .map(|r| r.view(tasks))
                    .collect(),
            })
            .collect()
    }

    /// Per service (by origin and name): desired, running and healthy instances.
    pub fn statuses(&self, tasks: &TaskTable) -> Vec<ServiceStatus> {
        let mut by_service: BTreeMap<(String, ServiceName), Vec<ServiceView>> = BTreeMap::new();
        for r in self.records.values() {
            by_service
                .entry((r.origin(), r.service.clone()))
                .or_default()
                .push(r.view(tasks));
        }
        by_service
            .into_iter()
            .map(|((origin, name), instances)| ServiceStatus {
                name,
                origin,
                desired: instances.len(),
                running: instances
                    .iter()
                    .filter(|i| i.state == Some(TaskState::Running))
                    .count(),
                healthy: instances
                    .iter()
                    .filter(|i| {
                        i.state == Some(TaskState::Running)
                            && matches!(i.health.state.as_str(), "healthy" | "none")
                    })
                    .count(),
                restarts: instances.iter().map(|i| i.restarts).sum(),
                last_failure: instances
                    .iter()
                    .filter_map(|i| i.last_failure.clone())
                    .max_by_key(|f| f.at),
                instances,
            })
            .collect()
    }
}

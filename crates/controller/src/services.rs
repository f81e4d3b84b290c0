//! Supervised services: the config's system services (always on, expanded per node by their
//! SLA) and service groups (on demand), plus external tasks announced by sub-schedulers.
//!
//! A service instance is a durable record that outlives its tasks: when its task ends, the
//! record schedules the next start after `restart_delay`, doubling on each failure in a row up
//! to `max_restart_delay` (a crash loop does not hammer the node). Jobs (`is_job`) run once.
//! `dependent_service` holds a start until the dependency runs and is healthy.
//!
//! Invariants:
//! - At most one live task per service instance.
//! - A service instance's task is always a task of the built-in framework named like it.
//! - Starting a group that runs changes nothing; stopping it removes its records for good.

use serde::{Deserialize, Serialize};
use torc_api::original::{OriginalNode, OriginalTask};
use torc_api::{Failure, GroupView, Health, ServiceStatus, ServiceView, StatusView, TaskView};
use torc_types::{
    BUILTIN_FRAMEWORK, FrameworkName, NodeName, ServiceName, TaskId, TaskSpec, TaskState,
    UnixMillis,
};

use crate::rack::{Rack, RackError};
use crate::settings::{Probe, ServicePolicy, ServiceTemplate, SlaKind};
use crate::store::Table;

/// A failure in a row resets the back-off once a task ran this long.
const STABLE_RUN_MS: u64 = 60_000;

/// One supervised service instance.
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
    /// Health of the current task; not persisted (a restarted controller checks again).
    #[serde(skip)]
    pub health: HealthState,
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

/// An external task announced by a sub-scheduler, kept while its lease is renewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AnnouncedRecord {
    pub task: OriginalTask,
    pub first_seen: UnixMillis,
    pub last_update: UnixMillis,
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

fn builtin() -> FrameworkName {
    FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name")
}

fn instance_name(base: &ServiceName, suffix: &str) -> Result<ServiceName, RackError> {
    ServiceName::new(format!("{base}-{suffix}")).map_err(|e| {
        RackError::Invalid(format!("service {base}: instance name for {suffix:?}: {e}"))
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
            health: HealthState::default(),
        };
        rec.apply_template(t, node);
        rec
    }

    /// Takes the template's spec and policy (a changed config applies from the next start).
    fn apply_template(&mut self, t: &ServiceTemplate, node: Option<&NodeName>) {
        self.policy = t.policy.clone();
        self.spec = t.spec.clone().map(|mut spec| {
            spec.name = self.name.clone();
            if let Some(n) = node {
                spec.constraints.node_name = Some(n.clone());
            }
            spec
        });
    }

    fn origin(&self) -> String {
        self.group
            .as_ref()
            .map_or_else(|| "system".to_string(), |g| g.to_string())
    }
}

impl Rack {
    fn mark_service(&mut self, name: &ServiceName) {
        self.dirty_other.insert((Table::Services, name.to_string()));
    }

    /// The system-service instances the config asks for on the current nodes.
    fn desired_system_instances(&self) -> Vec<(ServiceName, ServiceTemplate, Option<NodeName>)> {
        let mut out = Vec::new();
        for t in &self.settings.system_services {
            match t.sla {
                None => out.push((t.name.clone(), t.clone(), None)),
                Some(sla) => {
                    for n in self.nodes.values() {
                        if sla == SlaKind::EachSlave && n.node_type != "slave" {
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

    /// Brings the service records in line with the config: new system instances (e.g. for a
    /// node that just joined), changed specs, removed services.
    pub(crate) fn adopt_config_services(&mut self, now: UnixMillis) {
        let desired = self.desired_system_instances();
        let mut wanted = std::collections::BTreeSet::new();
        for (name, t, node) in desired {
            wanted.insert(name.clone());
            match self.services.get_mut(&name) {
                Some(rec) if rec.group.is_none() => {
                    let before = (rec.spec.clone(), rec.policy.clone());
                    rec.apply_template(&t, node.as_ref());
                    if before != (rec.spec.clone(), rec.policy.clone()) {
                        self.mark_service(&name);
                    }
                }
                Some(_) => {} // a group instance of the same name: the config validator forbids it
                None => {
                    self.services.insert(
                        name.clone(),
                        ServiceRecord::new(name.clone(), &t, None, node.as_ref()),
                    );
                    self.mark_service(&name);
                }
            }
        }
        let stale: Vec<ServiceName> = self
            .services
            .values()
            .filter(|r| match &r.group {
                None => !wanted.contains(&r.name),
                Some(g) => !self
                    .settings
                    .groups
                    .get(g)
                    .is_some_and(|ts| ts.iter().any(|t| t.name == r.service)),
            })
            .map(|r| r.name.clone())
            .collect();
        for name in stale {
            self.remove_service(&name, "its service was removed from the rack config", now);
        }
        // Group instances follow template changes too.
        let groups: Vec<(ServiceName, ServiceName, ServiceTemplate)> = self
            .services
            .values()
            .filter_map(|r| {
                let g = r.group.as_ref()?;
                let t = self
                    .settings
                    .groups
                    .get(g)?
                    .iter()
                    .find(|t| t.name == r.service)?;
                Some((r.name.clone(), g.clone(), t.clone()))
            })
            .collect();
        for (name, _, t) in groups {
            if let Some(rec) = self.services.get_mut(&name) {
                let before = (rec.spec.clone(), rec.policy.clone());
                rec.apply_template(&t, None);
                if before != (rec.spec.clone(), rec.policy.clone()) {
                    self.mark_service(&name);
                }
            }
        }
    }

    fn remove_service(&mut self, name: &ServiceName, why: &str, now: UnixMillis) {
        if let Some(rec) = self.services.remove(name) {
            self.mark_service(name);
            if let Some(id) = rec.task {
                let _ = self.kill_with(&id, why, now);
            }
        }
    }

    fn task_live(&self, id: &Option<TaskId>) -> Option<&TaskView> {
        id.as_ref()
            .and_then(|id| self.tasks.get(id))
            .filter(|t| !t.state.is_terminal())
    }

    /// Whether a dependency runs and is healthy: a service instance, or any task, by name.
    fn service_ready(&self, dep: &ServiceName) -> bool {
        let by_service = self.services.values().any(|r| {
            (r.name == *dep || r.service == *dep)
                && self
                    .task_live(&r.task)
                    .is_some_and(|t| t.state == TaskState::Running)
                && (r.policy.health.is_none() || r.health.kind == HealthKind::Healthy)
        });
        by_service
            || self.tasks.values().any(|t| {
                t.name == *dep
                    && t.state == TaskState::Running
                    && !self.services.contains_key(&t.name)
            })
    }

    fn set_waiting(&mut self, name: &ServiceName, why: Option<String>) {
        if let Some(rec) = self.services.get_mut(name)
            && rec.waiting != why
        {
            rec.waiting = why;
            self.mark_service(name);
        }
    }

    /// Starts every service instance that should run and does not.
    pub(crate) fn reconcile_services(&mut self, now: UnixMillis) {
        self.adopt_config_services(now);
        let names: Vec<ServiceName> = self.services.keys().cloned().collect();
        for name in names {
            let rec = &self.services[&name];
            if rec.completed || self.task_live(&rec.task).is_some() {
                continue;
            }
            if rec.next_start.is_some_and(|at| now < at) {
                continue;
            }
            let Some(spec) = rec.spec.clone() else {
                let why = format!(
                    "cannot run: no `command` in the config (image {:?} needs a container runtime, and this agent runs processes)",
                    rec.policy.image
                );
                self.set_waiting(&name, Some(why));
                continue;
            };
            if let Some(dep) = rec.policy.dependent_service.clone()
                && !self.service_ready(&dep)
            {
                self.set_waiting(
                    &name,
                    Some(format!("waiting for {dep} to run and be healthy")),
                );
                continue;
            }
            let restart = rec.task.is_some();
            match self.launch(spec, builtin(), now) {
                Ok(id) => {
                    let rec = self.services.get_mut(&name).expect("listed");
                    rec.task = Some(id);
                    rec.next_start = None;
                    rec.waiting = None;
                    rec.health = HealthState::default();
                    if restart {
                        rec.restarts += 1;
                        let restarts = rec.restarts;
                        let msg = format!("service {name} restarted (restart {restarts})");
                        self.record("service", "warning", msg, None, None, now);
                    }
                    self.mark_service(&name);
                }
                Err(e) => self.set_waiting(&name, Some(format!("cannot launch: {e}"))),
            }
        }
    }

    /// Called on every task state change.
    pub(crate) fn task_changed(&mut self, id: &TaskId, now: UnixMillis) {
        let Some(task) = self.tasks.get(id) else {
            return;
        };
        if task.framework.as_str() != BUILTIN_FRAMEWORK {
            self.event_seq += 1;
            self.events
                .push_back((self.event_seq, task.framework.clone(), id.clone()));
            while self.events.len() > 10_000 {
                self.events.pop_front();
            }
            return;
        }
        if !task.state.is_terminal() {
            return;
        }
        let state = task.state;
        let ran_ms = task
            .history
            .iter()
            .find(|h| h.state == TaskState::Running)
            .map_or(0, |h| now.saturating_sub(h.at));
        let what = match (state, &task.message) {
            (TaskState::Finished, _) => "exited with code 0".to_string(),
            (_, Some(m)) => format!("{state}: {m}"),
            (_, None) => state.to_string(),
        };
        let name = task.name.clone();
        let Some(rec) = self
            .services
            .get_mut(&name)
            .filter(|r| r.task.as_ref() == Some(id))
        else {
            return;
        };
        if rec.policy.is_job {
            rec.completed = true;
            if state != TaskState::Finished {
                rec.last_failure = Some(Failure {
                    at: now,
                    message: what,
                });
            }
        } else {
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
        self.mark_service(&name);
    }

    // -----------------------------------------------------------------------------------------
    // Groups

    /// Starts a service group. Idempotent: instances that exist are left alone.
    pub fn start_group(
        &mut self,
        group: &ServiceName,
        now: UnixMillis,
    ) -> Result<Vec<ServiceName>, RackError> {
        let templates = self.settings.groups.get(group).cloned().ok_or_else(|| {
            RackError::NotFound(format!(
                "no service group named \"{group}\" in {}",
                self.settings.config_origin
            ))
        })?;
        let mut names = Vec::new();
        for t in &templates {
            for i in 0..t.instances {
                let name = if t.instances == 1 {
                    t.name.clone()
                } else {
                    instance_name(&t.name, &i.to_string())?
                };
                if let Some(existing) = self.services.get(&name)
                    && existing.group.as_ref() != Some(group)
                {
                    return Err(RackError::Conflict(format!(
                        "service {name} already runs as part of {}",
                        existing.origin()
                    )));
                }
                names.push((name, t.clone()));
            }
        }
        let mut out = Vec::new();
        for (name, t) in names {
            if !self.services.contains_key(&name) {
                let rec = ServiceRecord::new(name.clone(), &t, Some(group.clone()), None);
                self.services.insert(name.clone(), rec);
                self.mark_service(&name);
            }
            out.push(name);
        }
        self.reconcile_services(now);
        self.schedule(now);
        Ok(out)
    }

    /// Stops a service group: its instances are killed and forgotten.
    pub fn stop_group(
        &mut self,
        group: &ServiceName,
        now: UnixMillis,
    ) -> Result<Vec<ServiceName>, RackError> {
        if !self.settings.groups.contains_key(group) {
            return Err(RackError::NotFound(format!(
                "no service group named \"{group}\""
            )));
        }
        let names: Vec<ServiceName> = self
            .services
            .values()
            .filter(|r| r.group.as_ref() == Some(group))
            .map(|r| r.name.clone())
            .collect();
        for n in &names {
            self.remove_service(n, &format!("group {group} stopped"), now);
        }
        Ok(names)
    }

    pub fn group(&self, name: &ServiceName) -> Result<GroupView, RackError> {
        self.groups()
            .into_iter()
            .find(|g| &g.name == name)
            .ok_or_else(|| RackError::NotFound(format!("no service group named \"{name}\"")))
    }

    pub fn groups(&self) -> Vec<GroupView> {
        self.settings
            .groups
            .iter()
            .map(|(name, ts)| GroupView {
                name: name.clone(),
                services: ts.iter().map(|t| t.name.clone()).collect(),
                instances: self
                    .services
                    .values()
                    .filter(|r| r.group.as_ref() == Some(name))
                    .map(|r| self.service_view(r))
                    .collect(),
            })
            .collect()
    }

    /// Ends a service instance, announced task or task by name (`DELETE /service?name=`): a
    /// system service's task is killed and restarted; a group instance ends for good.
    pub fn delete_service(&mut self, name: &str, now: UnixMillis) -> Result<String, RackError> {
        if let Ok(sname) = ServiceName::new(name)
            && let Some(rec) = self.services.get(&sname)
        {
            if rec.group.is_some() {
                self.remove_service(&sname, "stopped by request", now);
                return Ok(format!("{name} stopped"));
            }
            if let Some(id) = rec
                .task
                .clone()
                .filter(|id| self.task_live(&Some(id.clone())).is_some())
            {
                self.kill_with(&id, "killed by request; a system service is restarted", now)?;
            }
            return Ok(format!(
                "{name} killed; it is a system service and will be restarted"
            ));
        }
        if self.announced.remove(name).is_some() {
            self.dirty_other
                .insert((Table::Announced, name.to_string()));
            return Ok(format!("announced task {name} removed"));
        }
        let live: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| t.name.as_str() == name && !t.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        if live.is_empty() {
            return Err(RackError::NotFound(format!(
                "no running service or task named \"{name}\""
            )));
        }
        for id in &live {
            self.kill_with(id, "killed by request", now)?;
        }
        Ok(format!("{name} killed"))
    }

    // -----------------------------------------------------------------------------------------
    // Health

    /// Health checks due at `now`.
    pub fn due_health_checks(&self, now: UnixMillis) -> Vec<HealthCheck> {
        self.services
            .values()
            .filter_map(|r| {
                let h = r.policy.health.as_ref()?;
                let task = self
                    .task_live(&r.task)
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
        if let Some(rec) = self.services.get_mut(service) {
            rec.health.checked_at = now;
        }
    }

    /// Records a check's outcome; after `failure_threshold` failures in a row the task is
    /// killed, and the service restarted.
    pub fn record_health(
        &mut self,
        service: &ServiceName,
        task: &TaskId,
        result: Result<(), String>,
        now: UnixMillis,
    ) {
        let Some(rec) = self
            .services
            .get_mut(service)
            .filter(|r| r.task.as_ref() == Some(task))
        else {
            return;
        };
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
                    // Only healthy instances are in DNS, and health is not persisted: say so.
                    self.health_changed = true;
                }
                rec.health = HealthState {
                    kind: HealthKind::Healthy,
                    failures: 0,
                    checked_at: now,
                    message: None,
                };
            }
            Err(why) => {
                rec.health.failures += 1;
                rec.health.message = Some(why.clone());
                if rec.health.failures >= threshold {
                    rec.health.kind = HealthKind::Unhealthy;
                    self.health_changed = true;
                    let msg = format!(
                        "unhealthy ({} failed checks in a row: {why}); replacing it",
                        rec.health.failures
                    );
                    tracing::warn!(service = %service, "{msg}");
                    let _ = self.kill_with(task, &msg, now);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Announced tasks

    /// `POST /service/announce`: registers or renews an external task of a sub-scheduler.
    pub fn announce(&mut self, task: OriginalTask, now: UnixMillis) -> Result<(), RackError> {
        let name = ServiceName::new(task.name.clone())
            .map_err(|e| RackError::Invalid(format!("name: {e}")))?;
        FrameworkName::new(task.controller.clone())
            .map_err(|e| RackError::Invalid(format!("controller: {e}")))?;
        task.ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| RackError::Invalid(format!("ip: {:?} is not an IP address", task.ip)))?;
        if task.controller == self.settings.rack_name || task.controller == BUILTIN_FRAMEWORK {
            return Err(RackError::Conflict(format!(
                "controller {:?} is this controller; announced tasks belong to sub-schedulers",
                task.controller
            )));
        }
        if let Some(rec) = self.services.get(&name) {
            return Err(RackError::Conflict(format!(
                "{name} is a service of this rack ({}); a sub-scheduler cannot announce it",
                rec.origin()
            )));
        }
        let first_seen = match self.announced.get(&task.name) {
            Some(a) if a.task.controller != task.controller => {
                return Err(RackError::Conflict(format!(
                    "{name} is announced by {}; {} cannot take it over",
                    a.task.controller, task.controller
                )));
            }
            Some(a) => a.first_seen,
            None => now,
        };
        let mut task = task;
        task.state = "Running".into();
        task.last_update = now / 1000;
        self.announced.insert(
            task.name.clone(),
            AnnouncedRecord {
                task,
                first_seen,
                last_update: now,
            },
        );
        self.dirty_other
            .insert((Table::Announced, name.to_string()));
        Ok(())
    }

    pub(crate) fn expire_announced(&mut self, now: UnixMillis) {
        let lease = self.settings.node_timeout.as_millis() as u64;
        let expired: Vec<String> = self
            .announced
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.last_update) > lease)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            tracing::info!(task = %k, "announced task's lease lapsed");
            self.announced.remove(&k);
            self.dirty_other.insert((Table::Announced, k));
        }
    }

    pub fn announced(&self) -> Vec<OriginalTask> {
        self.announced.values().map(|a| a.task.clone()).collect()
    }

    // -----------------------------------------------------------------------------------------
    // Views

    fn health_view(&self, r: &ServiceRecord) -> Health {
        let state = match (&r.policy.health, &r.health.kind) {
            (None, _) => "none",
            (Some(_), HealthKind::Unknown) => "unknown",
            (Some(_), HealthKind::Healthy) => "healthy",
            (Some(_), HealthKind::Unhealthy) => "unhealthy",
        };
        Health {
            state: state.to_string(),
            message: r.health.message.clone(),
            checked_at: r.health.checked_at,
        }
    }

    fn service_view(&self, r: &ServiceRecord) -> ServiceView {
        let task = r.task.as_ref().and_then(|id| self.tasks.get(id));
        ServiceView {
            name: r.name.clone(),
            service: r.service.clone(),
            origin: r.origin(),
            task: r.task.clone(),
            state: task.map(|t| t.state),
            node: task.and_then(|t| t.node.clone()),
            ip: task.and_then(|t| t.ip),
            ports: task.map(|t| t.ports.clone()).unwrap_or_default(),
            tls: task.is_some_and(|t| t.spec.credentials.tls),
            restarts: r.restarts,
            last_failure: r.last_failure.clone(),
            health: self.health_view(r),
            next_start_at: r.next_start,
            waiting: r.waiting.clone(),
            is_job: r.policy.is_job,
            metered: r.policy.is_metered,
        }
    }

    pub fn services(&self) -> Vec<ServiceView> {
        self.services
            .values()
            .map(|r| self.service_view(r))
            .collect()
    }

    pub fn service(&self, name: &ServiceName) -> Result<ServiceView, RackError> {
        self.services
            .get(name)
            .map(|r| self.service_view(r))
            .ok_or_else(|| RackError::NotFound(format!("no service instance named \"{name}\"")))
    }

    pub fn status(&self) -> StatusView {
        let mut by_service: std::collections::BTreeMap<(String, ServiceName), Vec<ServiceView>> =
            std::collections::BTreeMap::new();
        for r in self.services.values() {
            by_service
                .entry((r.origin(), r.service.clone()))
                .or_default()
                .push(self.service_view(r));
        }
        let services = by_service
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
            .collect();
        StatusView {
            warnings: Vec::new(),
            rack: self.settings.rack_name.clone(),
            started_at: self.started_at,
            nodes_total: self.nodes.len(),
            nodes_active: self.nodes.values().filter(|n| n.active).count(),
            services,
            frameworks: self.frameworks(),
        }
    }

    // -----------------------------------------------------------------------------------------
    // The original's shapes

    pub fn original_nodes(&self) -> Vec<OriginalNode> {
        self.nodes
            .values()
            .map(|n| OriginalNode {
                name: n.name.to_string(),
                ip: n.ip.to_string(),
                external_ip: n.external_ip.map(|i| i.to_string()).unwrap_or_default(),
                management_ip: n.management_ip.map(|i| i.to_string()).unwrap_or_default(),
                node_type: n.node_type.clone(),
                node_function: n.node_function.clone(),
                active: n.active,
                slave_id: if n.registered {
                    n.name.to_string()
                } else {
                    String::new()
                },
                port_id: n.port_id,
                last_seen: n.last_seen / 1000,
            })
            .collect()
    }

    fn original_task(&self, t: &TaskView) -> OriginalTask {
        let rec = self
            .services
            .get(&t.name)
            .filter(|r| r.task.as_ref() == Some(&t.id));
        let node = t.node.as_ref().and_then(|n| self.nodes.get(n));
        let policy = rec.map(|r| &r.policy);
        OriginalTask {
            name: t.name.to_string(),
            controller: if t.framework.as_str() == BUILTIN_FRAMEWORK {
                self.settings.rack_name.clone()
            } else {
                t.framework.to_string()
            },
            id: t.id.to_string(),
            image: policy.map(|p| p.image.clone()).unwrap_or_default(),
            node_name: t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
            node_type: node.map(|n| n.node_type.clone()).unwrap_or_default(),
            node_function: node.map(|n| n.node_function.clone()).unwrap_or_default(),
            dependent_service: policy
                .and_then(|p| p.dependent_service.as_ref())
                .map(|d| d.to_string())
                .unwrap_or_default(),
            arguments: policy
                .map(|p| p.arguments.clone())
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| t.spec.args.join(" ")),
            parameters: policy.map(|p| p.parameters.clone()).unwrap_or_default(),
            memory: t.spec.resources.mem_mb,
            cpu: t.spec.resources.cpus,
            volumes: policy.map(|p| p.volumes.clone()).unwrap_or_default(),
            privileged: policy.is_some_and(|p| p.privileged),
            sla: policy.map_or_else(|| "None".to_string(), |p| p.sla.clone()),
            is_metered: t.spec.metered || policy.is_some_and(|p| p.is_metered),
            is_system_service: rec.is_some_and(|r| r.group.is_none()),
            is_job: policy.is_some_and(|p| p.is_job),
            network_type: policy.map_or_else(|| "host".to_string(), |p| p.network_type.clone()),
            ip: t.ip.map(|i| i.to_string()).unwrap_or_default(),
            slave_id: t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
            state: "Running".into(),
            last_update: t.updated_at / 1000,
        }
    }

    /// `GET /services/running` (`metered_only` = `/services/metered`): own running tasks that
    /// are not jobs (or that are metered), and announced ones.
    pub fn original_running(&self, metered_only: bool) -> Vec<OriginalTask> {
        let own = self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
            .map(|t| self.original_task(t))
            .filter(|t| {
                if metered_only {
                    t.is_metered
                } else {
                    !t.is_job
                }
            });
        let foreign = self
            .announced
            .values()
            .map(|a| a.task.clone())
            .filter(|t| !metered_only || t.is_metered)
            .filter(|t| metered_only || !t.is_job);
        own.chain(foreign).collect()
    }

    /// `GET /service?id=`: the name of the first task whose id starts with `prefix`.
    pub fn name_by_id_prefix(&self, prefix: &str) -> Option<String> {
        if prefix.is_empty() {
            return None;
        }
        self.tasks
            .values()
            .find(|t| t.id.as_str().starts_with(prefix))
            .map(|t| t.name.to_string())
            .or_else(|| {
                self.announced
                    .values()
                    .find(|a| !a.task.id.is_empty() && a.task.id.starts_with(prefix))
                    .map(|a| a.task.name.clone())
            })
    }
}

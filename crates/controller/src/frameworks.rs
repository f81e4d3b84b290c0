//! Sub-schedulers (frameworks): schedulers outside the controller that launch and kill tasks
//! in their own namespace through the API, follow their tasks' updates with a long poll, and
//! get their tasks back when they re-register after a restart.
//!
//! A framework is "seen" each time it polls for events. Silent for longer than its failover
//! timeout, it is marked inactive and its tasks are killed (the original's timeout was 0: a
//! scheduler restart killed everything it ran).
//!
//! Invariants:
//! - A framework only touches its own tasks; system services and other frameworks' tasks are
//!   refused with 409.
//! - Event positions (`seq`) are only meaningful within one controller `epoch`.

use serde::{Deserialize, Serialize};
use torc_api::{FrameworkEvents, FrameworkRegistered, FrameworkRegistration, FrameworkView};
use torc_types::{BUILTIN_FRAMEWORK, FrameworkName, TaskId, TaskSpec, UnixMillis};

use crate::rack::{Rack, RackError};
use crate::store::Table;

/// Failover timeout when a framework does not choose one.
pub const DEFAULT_FAILOVER_MS: u64 = 60_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct FrameworkRecord {
    pub name: FrameworkName,
    pub failover_timeout_ms: u64,
    pub registered_at: UnixMillis,
    /// Not persisted on every poll; a restarted controller starts the clock again.
    #[serde(default)]
    pub last_seen: UnixMillis,
    pub active: bool,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub api_url: Option<String>,
}

impl Rack {
    fn framework_record(&self, name: &FrameworkName) -> Result<&FrameworkRecord, RackError> {
        self.frameworks.get(name).ok_or_else(|| {
            RackError::NotFound(format!("no framework named \"{name}\"; register it first"))
        })
    }

    fn active_framework(&self, name: &FrameworkName) -> Result<&FrameworkRecord, RackError> {
        let f = self.framework_record(name)?;
        if !f.active {
            return Err(RackError::Conflict(format!(
                "framework {name} is not active ({}); register it again",
                f.message.as_deref().unwrap_or("unregistered")
            )));
        }
        Ok(f)
    }

    /// Registers a framework, or re-registers it: its surviving tasks are its again.
    pub fn register_framework(
        &mut self,
        reg: FrameworkRegistration,
        now: UnixMillis,
    ) -> Result<FrameworkRegistered, RackError> {
        if reg.name.as_str() == BUILTIN_FRAMEWORK || reg.name.as_str() == self.settings.rack_name {
            return Err(RackError::Conflict(format!(
                "framework name {:?} is the controller's own",
                reg.name.as_str()
            )));
        }
        let timeout = reg.failover_timeout_ms.unwrap_or(DEFAULT_FAILOVER_MS);
        let registered_at = self
            .frameworks
            .get(&reg.name)
            .map_or(now, |f| f.registered_at);
        self.frameworks.insert(
            reg.name.clone(),
            FrameworkRecord {
                name: reg.name.clone(),
                failover_timeout_ms: timeout,
                registered_at,
                last_seen: now,
                active: true,
                message: None,
                api_url: reg.api_url.clone(),
            },
        );
        self.dirty_other
            .insert((Table::Frameworks, reg.name.to_string()));
        Ok(FrameworkRegistered {
            framework: self.framework_view(&reg.name),
            tasks: self.framework_tasks(&reg.name, true),
        })
    }

    /// Unregisters a framework: its tasks are killed.
    pub fn unregister_framework(
        &mut self,
        name: &FrameworkName,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        self.framework_record(name)?;
        self.deactivate(name, "unregistered", now);
        Ok(())
    }

    fn deactivate(&mut self, name: &FrameworkName, why: &str, now: UnixMillis) {
        if let Some(f) = self.frameworks.get_mut(name) {
            f.active = false;
            f.message = Some(why.to_string());
        }
        self.dirty_other
            .insert((Table::Frameworks, name.to_string()));
        let live: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|t| &t.framework == name && !t.state.is_terminal())
            .map(|t| t.id.clone())
            .collect();
        for id in live {
            let _ = self.kill_with(&id, &format!("framework {name} {why}"), now);
        }
    }

    /// Kills the tasks of frameworks silent past their failover timeout.
    pub(crate) fn expire_frameworks(&mut self, now: UnixMillis) {
        let expired: Vec<(FrameworkName, u64)> = self
            .frameworks
            .values()
            .filter(|f| f.active && now.saturating_sub(f.last_seen) > f.failover_timeout_ms)
            .map(|f| (f.name.clone(), f.failover_timeout_ms))
            .collect();
        for (name, timeout) in expired {
            tracing::warn!(framework = %name, "failover timeout passed; killing its tasks");
            self.deactivate(
                &name,
                &format!("did not come back within its failover timeout ({timeout} ms)"),
                now,
            );
        }
    }

    /// Launches a task for a framework.
    pub fn framework_launch(
        &mut self,
        name: &FrameworkName,
        spec: TaskSpec,
        now: UnixMillis,
    ) -> Result<TaskId, RackError> {
        self.active_framework(name)?;
        if let Some(rec) = self.services.get(&spec.name) {
            return Err(RackError::Conflict(format!(
                "{} is a service of this rack ({}); a framework cannot launch under its name",
                spec.name,
                rec.group.as_ref().map_or("system", |g| g.as_str())
            )));
        }
        if let Some(other) = self
            .tasks
            .values()
            .find(|t| t.name == spec.name && &t.framework != name && !t.state.is_terminal())
        {
            return Err(RackError::Conflict(format!(
                "the name {} is taken by a task of framework {}",
                spec.name, other.framework
            )));
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
        self.framework_record(name)?;
        let task = self.task(id)?;
        if &task.framework != name {
            return Err(RackError::Conflict(format!(
                "task {id} belongs to {}, not to framework {name}",
                if task.framework.as_str() == BUILTIN_FRAMEWORK {
                    "the controller".to_string()
                } else {
                    format!("framework {}", task.framework)
                }
            )));
        }
        self.kill_with(id, &format!("killed by framework {name}"), now)
    }

    /// Notes that a framework is alive (it polled).
    pub fn framework_seen(
        &mut self,
        name: &FrameworkName,
        now: UnixMillis,
    ) -> Result<(), RackError> {
        self.active_framework(name)?;
        if let Some(f) = self.frameworks.get_mut(name) {
            f.last_seen = now;
        }
        Ok(())
    }

    /// A framework's tasks; with `live_only`, those not ended.
    pub fn framework_tasks(
        &self,
        name: &FrameworkName,
        live_only: bool,
    ) -> Vec<torc_api::TaskView> {
        self.tasks
            .values()
            .filter(|t| &t.framework == name && (!live_only || !t.state.is_terminal()))
            .cloned()
            .collect()
    }

    /// Updates of a framework's tasks after `after` (see `FrameworkEvents`).
    pub fn framework_events(
        &self,
        name: &FrameworkName,
        epoch: u64,
        after: u64,
    ) -> FrameworkEvents {
        let oldest = self.events.front().map_or(self.event_seq + 1, |e| e.0);
        let lost_track = epoch != self.epoch || after > self.event_seq || after + 1 < oldest;
        if lost_track {
            return FrameworkEvents {
                epoch: self.epoch,
                seq: self.event_seq,
                reset: true,
                tasks: self.framework_tasks(name, false),
            };
        }
        let mut ids: Vec<&TaskId> = Vec::new();
        for (seq, fw, id) in self.events.iter().rev() {
            if *seq <= after {
                break;
            }
            if fw == name && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.reverse();
        FrameworkEvents {
            epoch: self.epoch,
            seq: self.event_seq,
            reset: false,
            tasks: ids
                .into_iter()
                .filter_map(|id| self.tasks.get(id).cloned())
                .collect(),
        }
    }

    pub fn event_position(&self) -> (u64, u64) {
        (self.epoch, self.event_seq)
    }

    fn framework_view(&self, name: &FrameworkName) -> FrameworkView {
        let mut tasks = std::collections::BTreeMap::new();
        for t in self.tasks.values().filter(|t| &t.framework == name) {
            *tasks.entry(t.state.to_string()).or_default() += 1;
        }
        let builtin = name.as_str() == BUILTIN_FRAMEWORK;
        let rec = self.frameworks.get(name);
        FrameworkView {
            name: name.clone(),
            builtin,
            active: builtin || rec.is_some_and(|f| f.active),
            tasks,
            failover_timeout_ms: rec.map(|f| f.failover_timeout_ms),
            registered_at: rec.map_or(self.started_at, |f| f.registered_at),
            last_seen: rec.map_or(0, |f| f.last_seen),
            message: rec.and_then(|f| f.message.clone()),
            api_url: rec.and_then(|f| f.api_url.clone()),
        }
    }

    pub fn frameworks(&self) -> Vec<FrameworkView> {
        let builtin = FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name");
        let mut names: Vec<FrameworkName> = vec![builtin];
        names.extend(self.frameworks.keys().cloned());
        for t in self.tasks.values() {
            if !names.contains(&t.framework) {
                names.push(t.framework.clone());
            }
        }
        names.iter().map(|n| self.framework_view(n)).collect()
    }

    pub fn framework(&self, name: &FrameworkName) -> Result<FrameworkView, RackError> {
        if name.as_str() != BUILTIN_FRAMEWORK {
            self.framework_record(name)?;
        }
        Ok(self.framework_view(name))
    }
}

//! The framework registry: sub-schedulers outside the controller that launch and kill tasks in
//! their own namespace through the API, follow their tasks' updates with a long poll, and get
//! their tasks back when they re-register after a restart.
//!
//! A framework is "seen" each time it polls for updates. Silent for longer than its failover
//! timeout, it is marked inactive and the rack kills its tasks (the original's timeout was 0: a
//! scheduler restart killed everything it ran).
//!
//! The registry also keeps the frameworks' task updates of this controller life (which task of
//! which framework changed, numbered by `seq`); a long poll asks for those after its position.
//!
//! Invariants:
//! - A framework only touches its own tasks; system services and other frameworks' tasks are
//!   refused with 409 (checked by the rack, which sees the task table and the supervisor).
//! - Update positions (`seq`) are only meaningful within one controller `epoch`; a poll from
//!   another epoch, or from before the oldest update kept, gets a full snapshot.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use torc_api::{FrameworkRegistration, FrameworkView};
use torc_types::{BUILTIN_FRAMEWORK, FrameworkName, TaskId, UnixMillis};

use super::error::FrameworkError;
use super::tasks::TaskTable;
use crate::store::{Table, Write};

/// Failover timeout when a framework does not choose one.
pub const DEFAULT_FAILOVER_MS: u64 = 60_000;
/// Task updates kept; a framework further behind gets a full snapshot.
const UPDATES_KEPT: usize = 10_000;

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

/// What a framework's poll gets.
#[derive(Debug, PartialEq)]
pub enum Updates {
    /// Its tasks that changed after the position asked for, in the order they last changed.
    Since(Vec<TaskId>),
    /// The position is of another epoch or too old: all its tasks.
    Reset,
}

/// The registered frameworks and their tasks' updates.
#[derive(Debug)]
pub struct FrameworkRegistry {
    records: BTreeMap<FrameworkName, FrameworkRecord>,
    /// Updates of frameworks' tasks, oldest first: (seq, framework, task).
    updates: VecDeque<(u64, FrameworkName, TaskId)>,
    seq: u64,
    /// This controller life's number (random): positions of another life are meaningless.
    epoch: u64,
    /// Records to persist.
    dirty: BTreeSet<FrameworkName>,
}

impl FrameworkRegistry {
    /// The stored frameworks; each gets a full failover timeout from `now` to come back.
    pub fn load(stored: Vec<FrameworkRecord>, epoch: u64, now: UnixMillis) -> FrameworkRegistry {
        FrameworkRegistry {
            records: stored
                .into_iter()
                .map(|mut f| {
                    f.last_seen = now;
                    (f.name.clone(), f)
                })
                .collect(),
            updates: VecDeque::new(),
            seq: 0,
            epoch,
            dirty: BTreeSet::new(),
        }
    }

    /// The records to persist since the last call.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|name| Write::current(Table::Frameworks, name.as_str(), self.records.get(&name)))
            .collect()
    }

    /// A registered framework, active or not.
    pub fn get(&self, name: &FrameworkName) -> Result<&FrameworkRecord, FrameworkError> {
        self.records
            .get(name)
            .ok_or_else(|| FrameworkError::Unknown(name.clone()))
    }

    /// A registered, active framework.
    pub fn active(&self, name: &FrameworkName) -> Result<&FrameworkRecord, FrameworkError> {
        let f = self.get(name)?;
        if !f.active {
            return Err(FrameworkError::Inactive {
                name: name.clone(),
                why: f.message.as_deref().unwrap_or("unregistered").to_string(),
            });
        }
        Ok(f)
    }

    /// Registers a framework, or re-registers it (keeping when it first registered).
    /// `rack_name` is the controller's own name, which no framework may take.
    pub fn register(
        &mut self,
        reg: &FrameworkRegistration,
        rack_name: &str,
        now: UnixMillis,
    ) -> Result<(), FrameworkError> {
        if reg.name.as_str() == BUILTIN_FRAMEWORK || reg.name.as_str() == rack_name {
            return Err(FrameworkError::ReservedName(reg.name.clone()));
        }
        let timeout = reg.failover_timeout_ms.unwrap_or(DEFAULT_FAILOVER_MS);
        let registered_at = self.records.get(&reg.name).map_or(now, |f| f.registered_at);
        self.records.insert(
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
        self.dirty.insert(reg.name.clone());
        Ok(())
    }

    /// Marks a framework inactive, with the reason (the rack kills its tasks).
    pub fn deactivate(&mut self, name: &FrameworkName, why: &str) {
        if let Some(f) = self.records.get_mut(name) {
            f.active = false;
            f.message = Some(why.to_string());
        }
        self.dirty.insert(name.clone());
    }

    /// The active frameworks silent past their failover timeout, with the timeout.
    pub fn expired(&self, now: UnixMillis) -> Vec<(FrameworkName, u64)> {
        self.records
            .values()
            .filter(|f| f.active && now.saturating_sub(f.last_seen) > f.failover_timeout_ms)
            .map(|f| (f.name.clone(), f.failover_timeout_ms))
            .collect()
    }

    /// Moves every active framework's last poll `ms` later (never past `now`): the controller
    /// did not run for that long (see `Rack::excuse_stall`).
    pub fn excuse(&mut self, ms: u64, now: UnixMillis) {
        for f in self.records.values_mut().filter(|f| f.active) {
            f.last_seen = f.last_seen.saturating_add(ms).min(now);
        }
    }

    /// Notes that a framework is alive (it polled).
    pub fn seen(&mut self, name: &FrameworkName, now: UnixMillis) -> Result<(), FrameworkError> {
        self.active(name)?;
        if let Some(f) = self.records.get_mut(name) {
            f.last_seen = now;
        }
        Ok(())
    }

    /// Notes that a task of `framework` changed.
    pub fn task_updated(&mut self, framework: &FrameworkName, id: &TaskId) {
        self.seq += 1;
        self.updates
            .push_back((self.seq, framework.clone(), id.clone()));
        while self.updates.len() > UPDATES_KEPT {
            self.updates.pop_front();
        }
    }

    /// The tasks of `name` that changed after position (`epoch`, `after`).
    pub fn updates_after(&self, name: &FrameworkName, epoch: u64, after: u64) -> Updates {
        let oldest = self.updates.front().map_or(self.seq + 1, |e| e.0);
        if epoch != self.epoch || after > self.seq || after + 1 < oldest {
            return Updates::Reset;
        }
        let mut ids: Vec<&TaskId> = Vec::new();
        for (seq, fw, id) in self.updates.iter().rev() {
            if *seq <= after {
                break;
            }
            if fw == name && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.reverse();
        Updates::Since(ids.into_iter().cloned().collect())
    }

    /// The current position: (epoch, seq).
    pub fn position(&self) -> (u64, u64) {
        (self.epoch, self.seq)
    }

    /// A framework's view (the built-in one too), with its tasks counted by state.
    pub fn view(
        &self,
        name: &FrameworkName,
        tasks: &TaskTable,
        started_at: UnixMillis,
    ) -> FrameworkView {
        let mut counts = BTreeMap::new();
        for t in tasks.iter().filter(|t| &t.framework == name) {
            *counts.entry(t.state.to_string()).or_default() += 1;
        }
        let builtin = name.as_str() == BUILTIN_FRAMEWORK;
        let rec = self.records.get(name);
        FrameworkView {
            name: name.clone(),
            builtin,
            active: builtin || rec.is_some_and(|f| f.active),
            tasks: counts,
            failover_timeout_ms: rec.map(|f| f.failover_timeout_ms),
            registered_at: rec.map_or(started_at, |f| f.registered_at),
            last_seen: rec.map_or(0, |f| f.last_seen),
            message: rec.and_then(|f| f.message.clone()),
            api_url: rec.and_then(|f| f.api_url.clone()),
        }
    }

    /// Every framework: the built-in one, the registered ones, and any a task names.
    pub fn views(&self, tasks: &TaskTable, started_at: UnixMillis) -> Vec<FrameworkView> {
        let builtin = FrameworkName::new(BUILTIN_FRAMEWORK).expect("valid builtin name");
        let mut names: Vec<FrameworkName> = vec![builtin];
        names.extend(self.records.keys().cloned());
        for t in tasks.iter() {
            if !names.contains(&t.framework) {
                names.push(t.framework.clone());
            }
        }
        names
            .iter()
            .map(|n| self.view(n, tasks, started_at))
            .collect()
    }
}

//! External tasks announced by sub-schedulers (the original's `POST /service/announce`): tasks
//! the controller does not run but lists among the running services and names in DNS, each
//! kept while its lease (the node timeout) is renewed.
//!
//! Invariants:
//! - An announced name belongs to one sub-scheduler until its lease lapses; it is never this
//!   controller's own name or one of its service instances (the rack checks the latter).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use torc_api::original::OriginalTask;
use torc_types::{BUILTIN_FRAMEWORK, FrameworkName, ServiceName, UnixMillis};

use super::error::AnnounceError;
use crate::store::{Table, Write};

/// An external task announced by a sub-scheduler, kept while its lease is renewed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct AnnouncedRecord {
    pub task: OriginalTask,
    pub first_seen: UnixMillis,
    pub last_update: UnixMillis,
}

/// The announced tasks, by name.
#[derive(Debug, Default)]
pub struct Announcements {
    records: BTreeMap<String, AnnouncedRecord>,
    /// Records to persist (or delete, when gone).
    dirty: BTreeSet<String>,
}

impl Announcements {
    pub fn load(stored: Vec<AnnouncedRecord>) -> Announcements {
        Announcements {
            records: stored
                .into_iter()
                .map(|a| (a.task.name.clone(), a))
                .collect(),
            dirty: BTreeSet::new(),
        }
    }

    /// The records to persist (and delete) since the last call.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|name| Write::current(Table::Announced, &name, self.records.get(&name)))
            .collect()
    }

    /// Registers or renews an external task. `rack_name` is the controller's own name;
    /// `service_origin` says whether a name is one of the rack's service instances (and
    /// whose: `system` or a group), which a sub-scheduler cannot announce.
    pub fn announce(
        &mut self,
        task: OriginalTask,
        rack_name: &str,
        service_origin: impl Fn(&ServiceName) -> Option<String>,
        now: UnixMillis,
    ) -> Result<(), AnnounceError> {
        let name = ServiceName::new(task.name.clone()).map_err(AnnounceError::BadName)?;
        FrameworkName::new(task.controller.clone()).map_err(AnnounceError::BadController)?;
        task.ip
            .parse::<std::net::IpAddr>()
            .map_err(|_| AnnounceError::BadIp(task.ip.clone()))?;
        if task.controller == rack_name || task.controller == BUILTIN_FRAMEWORK {
            return Err(AnnounceError::OwnController(task.controller));
        }
        if let Some(origin) = service_origin(&name) {
            return Err(AnnounceError::IsService { name, origin });
        }
        let first_seen = match self.records.get(&task.name) {
            Some(a) if a.task.controller != task.controller => {
                return Err(AnnounceError::Taken {
                    name,
                    owner: a.task.controller.clone(),
                    by: task.controller,
                });
            }
            Some(a) => a.first_seen,
            None => now,
        };
        let mut task = task;
        task.state = "Running".into();
        task.last_update = now / 1000;
        self.records.insert(
            task.name.clone(),
            AnnouncedRecord {
                task,
                first_seen,
                last_update: now,
            },
        );
        self.dirty.insert(name.to_string());
        Ok(())
    }

    /// Forgets the tasks whose lease (`lease_ms` since their last announcement) lapsed.
    pub fn expire(&mut self, lease_ms: u64, now: UnixMillis) {
        let expired: Vec<String> = self
            .records
            .iter()
            .filter(|(_, a)| now.saturating_sub(a.last_update) > lease_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            tracing::info!(task = %k, "announced task's lease lapsed");
            self.records.remove(&k);
            self.dirty.insert(k);
        }
    }

    /// Forgets a task; whether it was there.
    pub fn remove(&mut self, name: &str) -> bool {
        let found = self.records.remove(name).is_some();
        if found {
            self.dirty.insert(name.to_string());
        }
        found
    }

    /// Every announced task, by name.
    pub fn tasks(&self) -> impl Iterator<Item = &OriginalTask> {
        self.records.values().map(|a| &a.task)
    }

    /// The name of the first task whose id starts with `prefix`.
    pub fn name_by_id_prefix(&self, prefix: &str) -> Option<String> {
        self.records
            .values()
            .find(|a| !a.task.id.is_empty() && a.task.id.starts_with(prefix))
            .map(|a| a.task.name.clone())
    }
}

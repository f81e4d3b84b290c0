//! The node's disk upkeep (the agent's `upkeep_loop`, and its `purge_data` for the
//! controller): sandboxes of ended tasks removed after the rack's retention, and
//! the free space of the agent's data dir watched (the rack config's `logs`, see
//! `torc_api::Upkeep`). The caps of running tasks' output are `logfiles`'.
//!
//! Invariants:
//! - Only the sandbox of a task the agent no longer tracks is removed: its end was reported
//!   and acknowledged (retired), or it is unknown to the table; never one whose shim still
//!   holds its lock. A task the agent still tracks (running, or ended and not yet
//!   acknowledged) keeps its sandbox whatever its age.
//! - A sandbox goes when it is not among the newest `keep_ended_per_service` ended ones of
//!   its service, or when its task ended more than `keep_ended_for_seconds` ago; with it goes
//!   the shim's lock file of the task. Afterwards `torc logs` of the task answers that its
//!   sandbox was removed, and why. A task's id names its service as `<service>.<suffix>` (the
//!   controller's ids); an id without a dot is a service of its own.
//! - Service data dirs (`$DATA_DIR`) are never removed here: only on an admin's purge (the
//!   controller's `torc service purge`, refused while the service is in the rack config).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use torc_types::TaskId;

use crate::agent::Agent;

/// An ended task's sandbox, and when its task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub id: TaskId,
    pub ended_at: SystemTime,
}

/// The service a task id belongs to: the part before the last dot.
fn service_of(id: &TaskId) -> &str {
    id.as_str()
        .rsplit_once('.')
        .map_or(id.as_str(), |(service, _)| service)
}

/// Which of the `ended` sandboxes go (pure): beyond the newest `keep` of each service, or
/// ended more than `max_age` before `now`.
pub(crate) fn expired(
    ended: &[Ended],
    keep: u32,
    max_age: Duration,
    now: SystemTime,
) -> Vec<TaskId> {
    let mut by_service: BTreeMap<&str, Vec<&Ended>> = BTreeMap::new();
    for e in ended {
        by_service.entry(service_of(&e.id)).or_default().push(e);
    }
    let mut out = Vec::new();
    for (_, mut list) in by_service {
        // Newest first; the id breaks ties so the choice does not depend on listing order.
        list.sort_by(|a, b| b.ended_at.cmp(&a.ended_at).then(b.id.cmp(&a.id)));
        for (rank, e) in list.into_iter().enumerate() {
            let age = now.duration_since(e.ended_at).unwrap_or_default();
            if rank >= keep as usize || age > max_age {
                out.push(e.id.clone());
            }
        }
    }
    out.sort();
    out
}

/// The sandboxes in `sandboxes` whose shim (lock in `shims`) does not run, with when each
/// ended: its exit record's time, else the sandbox's. The caller drops those of tasks it
/// tracks, as it knows them *after* this listing: a task is recorded before its sandbox is
/// made, so no sandbox listed here belongs to a task recorded later.
pub(crate) fn sandboxes_without_shim(sandboxes: &Path, shims: &Path) -> Vec<Ended> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|n| TaskId::new(n).ok()) else {
            continue;
        };
        if shim_runs(shims, &id) {
            continue;
        }
        let dir = entry.path();
        let ended_at = std::fs::metadata(crate::runtime::status_file(&dir))
            .or_else(|_| std::fs::metadata(&dir))
            .and_then(|m| m.modified());
        if let Ok(ended_at) = ended_at {
            out.push(Ended { id, ended_at });
        }
    }
    out
}

/// Whether a shim holds `id`'s lock (see `runtime`).
fn shim_runs(shims: &Path, id: &TaskId) -> bool {
    match std::fs::File::open(shims.join(format!("{id}.lock"))) {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Removes `id`'s sandbox and its shim's lock file.
pub(crate) fn remove(sandboxes: &Path, shims: &Path, id: &TaskId) -> std::io::Result<()> {
    match std::fs::remove_dir_all(sandboxes.join(id.as_str())) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match std::fs::remove_file(shims.join(format!("{id}.lock"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a service's data dir `dir` whole: whether it was there, and the bytes its files
/// took (symbolic links are not followed).
pub(crate) fn purge(dir: &Path) -> std::io::Result<torc_api::DataPurged> {
    fn size(path: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if !meta.is_dir() {
            return meta.len();
        }
        std::fs::read_dir(path)
            .map(|entries| entries.flatten().map(|e| size(&e.path())).sum())
            .unwrap_or(0)
    }
    if !dir.exists() {
        return Ok(torc_api::DataPurged {
            removed: false,
            bytes: 0,
        });
    }
    let bytes = size(dir);
    std::fs::remove_dir_all(dir)?;
    Ok(torc_api::DataPurged {
        removed: true,
        bytes,
    })
}

/// The file system holding `dir`: its size, used and free bytes (free: what an unprivileged
/// writer may still use), and whether free is below `warning_percent` of the size.
pub(crate) fn disk_usage(dir: &Path, warning_percent: u8) -> std::io::Result<torc_api::DiskUsage> {
    let s = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let frag = s.fragment_size() as u64;
    let total = s.blocks() as u64 * frag;
    let free = s.blocks_available() as u64 * frag;
    let used = total.saturating_sub(s.blocks_free() as u64 * frag);
    Ok(torc_api::DiskUsage {
        path: dir.display().to_string(),
        total_bytes: total,
        used_bytes: used,
        free_bytes: free,
        warning_percent,
        low: total > 0 && (free as u128) * 100 < (total as u128) * u128::from(warning_percent),
    })
}

impl Agent {
    /// Removes ended tasks' sandboxes past the rack's retention and measures the data dir's
    /// file system, on a timer (a quarter of the retention's age, between 1 s and 60 s) and
    /// when a registration changed the rules. Nothing is done until the rack's rules are known
    /// (the first registration): the built-in ones may keep less than the rack's, or warn at
    /// another threshold.
    pub(crate) async fn upkeep_loop(self: Arc<Self>) {
        loop {
            let known = self.known_upkeep();
            let rules = known.unwrap_or_default();
            if known.is_some() {
                let this = Arc::clone(&self);
                // Directory walks and removals are blocking file I/O.
                let _ = tokio::task::spawn_blocking(move || {
                    this.sweep_sandboxes(&rules);
                    this.measure_disk(&rules);
                })
                .await;
            }
            let every = Duration::from_secs(rules.keep_ended_for_seconds / 4)
                .clamp(Duration::from_secs(1), Duration::from_secs(60));
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = self.upkeep_changed.notified() => {}
            }
        }
    }

    /// Removes the sandboxes of ended tasks past the rack's retention (see `upkeep`).
    fn sweep_sandboxes(&self, rules: &torc_api::Upkeep) {
        let sandboxes = self.cfg.data_dir.join("sandboxes");
        let shims = self.cfg.data_dir.join("shims");
        let mut ended = sandboxes_without_shim(&sandboxes, &shims);
        // After the listing: see `sandboxes_without_shim`.
        let tracked = self.tracked_ids();
        ended.retain(|e| !tracked.contains(&e.id));
        let gone = expired(
            &ended,
            rules.keep_ended_per_service,
            Duration::from_secs(rules.keep_ended_for_seconds),
            std::time::SystemTime::now(),
        );
        for id in &gone {
            match remove(&sandboxes, &shims, id) {
                Ok(()) => {
                    tracing::info!(task = %id, "removed the sandbox of an ended task (the rack's retention)")
                }
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "cannot remove the sandbox of an ended task")
                }
            }
        }
    }

    /// Measures the data dir's file system: into the metrics and the next report, and a
    /// warning when its free space falls below the rack's threshold (see `upkeep`).
    fn measure_disk(&self, rules: &torc_api::Upkeep) {
        match disk_usage(&self.cfg.data_dir, rules.disk_free_warning_percent) {
            Ok(usage) => {
                let mut disk = self.disk.lock().unwrap_or_else(|e| e.into_inner());
                let was_low = disk.as_ref().is_some_and(|d| d.low);
                if usage.low && !was_low {
                    tracing::warn!(
                        path = %usage.path,
                        free_bytes = usage.free_bytes,
                        total_bytes = usage.total_bytes,
                        threshold_percent = usage.warning_percent,
                        "the data dir's disk is nearly full"
                    );
                } else if was_low && !usage.low {
                    tracing::info!(path = %usage.path, free_bytes = usage.free_bytes, "the data dir's disk has room again");
                }
                let changed = usage.low != was_low;
                *disk = Some(usage.clone());
                drop(disk);
                self.metrics
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .data_dir = Some(usage);
                if changed {
                    self.report_now.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(path = %self.cfg.data_dir.display(), error = %e, "cannot measure the data dir's disk")
            }
        }
    }

    /// Removes `service`'s data dir on this node, unless a task of it is live here.
    pub(crate) async fn purge_data(
        &self,
        service: &torc_types::ServiceName,
    ) -> Result<torc_api::DataPurged, (axum::http::StatusCode, String)> {
        let live = self.live_tasks_of(service);
        if let Some(id) = live.first() {
            return Err((
                axum::http::StatusCode::CONFLICT,
                format!(
                    "task {id} of service {service} runs on this node; its data dir is kept \
                     (kill the service's tasks first)"
                ),
            ));
        }
        let dir = self.cfg.data_dir.join("data").join(service.as_str());
        let purged = tokio::task::spawn_blocking(move || purge(&dir)).await;
        match purged {
            Ok(Ok(done)) => {
                tracing::info!(%service, removed = done.removed, bytes = done.bytes, "purged a service's data dir");
                Ok(done)
            }
            Ok(Err(e)) => Err((
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot remove the data dir of service {service}: {e}"),
            )),
            Err(e) => Err((axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    }

    /// The data dir's file system, as the upkeep last measured it.
    pub(crate) fn disk(&self) -> Option<torc_api::DiskUsage> {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why `id` has no sandbox here: removed after its end (the rack's retention), or never
    /// run on this node.
    pub(crate) fn no_sandbox(&self, id: &TaskId) -> String {
        if self.retired(id) {
            let rules = self.upkeep();
            format!(
                "the sandbox of task {id} was removed after its end, and its output with it: \
                 this node keeps the sandboxes of the newest {} ended tasks of each service, \
                 for at most {} s (the rack config's `logs`)",
                rules.keep_ended_per_service, rules.keep_ended_for_seconds
            )
        } else {
            format!("no sandbox for task {id} on this node")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn ended(id: &str, secs_ago: u64, now: SystemTime) -> Ended {
        Ended {
            id: TaskId::new(id).unwrap(),
            ended_at: now - Duration::from_secs(secs_ago),
        }
    }

    #[test]
    fn the_newest_per_service_stay_until_they_are_too_old() {
        let now = SystemTime::now();
        let list = vec![
            ended("web.000001", 30, now),
            ended("web.000002", 20, now),
            ended("web.000003", 10, now),
            ended("db.000001", 500, now),
            ended("lonely", 5, now),
        ];
        let ids = |v: Vec<TaskId>| v.iter().map(|i| i.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(expired(&list, 2, Duration::from_secs(3600), now)),
            ["web.000001"]
        );
        assert_eq!(
            ids(expired(&list, 5, Duration::from_secs(100), now)),
            ["db.000001"]
        );
        assert_eq!(
            ids(expired(&list, 0, Duration::from_secs(3600), now)),
            [
                "db.000001",
                "lonely",
                "web.000001",
                "web.000002",
                "web.000003"
            ]
        );
    }

    #[test]
    fn only_untracked_sandboxes_without_a_running_shim_are_listed_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (sandboxes, shims) = (dir.path().join("sandboxes"), dir.path().join("shims"));
        for id in ["a.1", "b.1", "c.1"] {
            std::fs::create_dir_all(sandboxes.join(id)).unwrap();
        }
        std::fs::create_dir_all(&shims).unwrap();
        // c.1's shim runs: its lock is held.
        let lock = std::fs::File::create(shims.join("c.1.lock")).unwrap();
        lock.lock().unwrap();
        std::fs::File::create(shims.join("a.1.lock")).unwrap();
        let tracked = HashSet::from([TaskId::new("b.1").unwrap()]);
        let mut listed = sandboxes_without_shim(&sandboxes, &shims);
        listed.retain(|e| !tracked.contains(&e.id));
        assert_eq!(
            listed.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a.1"]
        );
        remove(&sandboxes, &shims, &listed[0].id).unwrap();
        assert!(!sandboxes.join("a.1").exists() && !shims.join("a.1.lock").exists());
        // Gone already: nothing to do.
        remove(&sandboxes, &shims, &listed[0].id).unwrap();
        assert!(sandboxes.join("b.1").exists() && sandboxes.join("c.1").exists());
    }

    #[test]
    fn disk_usage_is_low_below_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let never = disk_usage(dir.path(), 0).unwrap();
        assert!(!never.low && never.total_bytes > 0);
        assert!(never.free_bytes <= never.total_bytes);
        // 100% free is more than any file system with a byte used has.
        assert!(disk_usage(dir.path(), 100).unwrap().low);
    }
}

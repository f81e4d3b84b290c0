//! Rollouts: a service whose tasks' spec changed (a rack config applied by `torc apply` or
//! SIGHUP, or read at a start) gets its instances replaced one at a time, the next only once
//! the last replaced one runs and is healthy; a failure stops the rollout and rolls the
//! replaced instances back to the spec before, one at a time too.
//!
//! An instance is replaced in place: its task is killed, and the supervisor starts the new
//! spec as soon as it ended (no back-off). Not the drain's start-before-kill: instances of a
//! `singleton_each_node` service are pinned to their node, where two tasks of one service may
//! not fit (fixed ports, resources). So a service of n instances keeps n − 1 of them running
//! and healthy while it rolls, and the next instance is taken only when every other one runs
//! and is healthy.
//!
//! An instance counts as replaced once its new task has run for [`SETTLE_MS`] and passes its
//! health check (if it has one). The rollout fails when a task of the new spec ends before
//! that (a crash, a health check failed `failure_threshold` times, which kills it), cannot be
//! launched, or is not replaced within [`STEP_TIMEOUT_MS`]. It then rolls back: every record
//! of the service takes the spec before again (`RolledBack` keeps the failed one, which is not
//! taken again until the config changes it), instances never replaced are left alone, and the
//! others are replaced back, one at a time, without waiting for the others to be healthy (one
//! of them failed). A rollback that fails itself ends: its instances are left to the
//! supervisor's restarts, and the feed says so.
//!
//! Durable, not derived: each instance's part (`RolloutMark`: phase, the spec before, a
//! failure) is in its service record, written in the same commit as the step that changed it,
//! so a restarted controller or a new leader takes the next step from the records. Every step
//! is a `rollout` line of the event feed.

use torc_api::{EventKind, EventLevel, RolloutView, TaskView};
use torc_types::{ServiceName, TaskId, TaskState, UnixMillis};

use super::Rack;
use super::supervisor::{RolledBack, RolloutPhase, ServiceRecord};

/// A replaced instance's new task must have run this long (and pass its health check) before
/// the next instance is taken: a task that crashes within it fails the rollout.
pub(crate) const SETTLE_MS: u64 = 3_000;

/// An instance not replaced within this long (its new task not running, or not healthy) fails
/// the rollout. Long enough for an image pull.
pub(crate) const STEP_TIMEOUT_MS: u64 = 300_000;

/// A service's instances, as one rollout sees them.
struct Instances {
    /// `system`, or `group G`: for the feed.
    what: String,
    service: ServiceName,
    records: Vec<ServiceRecord>,
}

impl Instances {
    fn marked(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.records.iter().filter(|r| r.rollout.is_some())
    }

    fn back(&self) -> bool {
        self.marked()
            .any(|r| r.rollout.as_ref().is_some_and(|m| m.back))
    }

    /// Instances on the target spec: all but the marked ones not done.
    fn done(&self) -> usize {
        let left = (self.marked())
            .filter(|r| {
                r.rollout
                    .as_ref()
                    .is_some_and(|m| m.phase != RolloutPhase::Done)
            })
            .count();
        self.records.len() - left
    }

    fn label(&self) -> String {
        let verb = if self.back() { "rollback" } else { "rollout" };
        format!("{verb} of {} {}", self.what, self.service)
    }
}

impl Rack {
    /// The rollouts' steps: for each service with one, at most one step.
    pub(super) fn roll(&mut self, now: UnixMillis) {
        // Runs on every report and tick: nothing to do unless an instance is marked (a
        // rolled-back service keeps its record of it, but takes no step).
        if !self.services.any_rollout() {
            return;
        }
        for ((group, service), names) in self.services.rollouts() {
            let records: Vec<ServiceRecord> = (names.iter())
                .filter_map(|n| self.services.get(n).cloned())
                .collect();
            let what =
                group.map_or_else(|| "system service".to_string(), |g| format!("group {g}:"));
            let instances = Instances {
                what,
                service,
                records,
            };
            if instances.marked().next().is_some() {
                self.roll_service(&instances, now);
            }
        }
    }

    /// One step of one service's rollout.
    fn roll_service(&mut self, s: &Instances, now: UnixMillis) {
        if let Some((name, why)) = s.marked().find_map(|r| {
            let failed = r.rollout.as_ref()?.failed.clone()?;
            Some((r.name.clone(), failed))
        }) {
            self.rollout_failed(s, &name, &why, now);
            return;
        }
        let replacing = s.marked().find_map(|r| match &r.rollout.as_ref()?.phase {
            RolloutPhase::Replacing { since, .. } => Some((r, *since)),
            _ => None,
        });
        if let Some((rec, since)) = replacing {
            self.check_replaced(s, rec, since, now);
            return;
        }
        // Instances whose task does not live first: a rollback's failed one, one backing off.
        let mut waiting: Vec<&ServiceRecord> = (s.marked())
            .filter(|r| {
                r.rollout
                    .as_ref()
                    .is_some_and(|m| m.phase == RolloutPhase::Waiting)
            })
            .collect();
        waiting.sort_by_key(|r| self.tasks.live(r.task.as_ref()).is_some());
        let Some(next) = waiting.first() else {
            let label = s.label();
            let n = s.records.len();
            let message = format!("{label} done: {n}/{n} instance(s) on its spec, healthy");
            self.rollout_event(EventLevel::Info, message, None, now);
            for r in s.marked() {
                self.services
                    .update_rollout(&r.name, |rec| rec.rollout = None);
            }
            return;
        };
        if !s.back() && self.blocker(s, &next.name).is_some() {
            return;
        }
        let name = next.name.clone();
        let live = self.tasks.live(next.task.as_ref()).map(|t| t.id.clone());
        let (k, n) = (s.done() + 1, s.records.len());
        self.services.update_rollout(&name, |rec| {
            if let Some(mark) = &mut rec.rollout {
                mark.phase = RolloutPhase::Replacing {
                    since: now,
                    old: live.clone(),
                };
            }
            if live.is_none() {
                rec.next_start = Some(now);
            }
        });
        let label = s.label();
        match &live {
            Some(old) => {
                let why = format!("{label}: replaced by its new spec ({k}/{n})");
                let _ = self.kill_with(old, &why, now);
                let message = format!(
                    "{label}: replacing {name} ({k}/{n}): {old} killed, its new spec starts next"
                );
                self.rollout_event(EventLevel::Info, message, Some(old), now);
            }
            None => {
                let message = format!("{label}: replacing {name} ({k}/{n}): its new spec starts");
                self.rollout_event(EventLevel::Info, message, None, now);
            }
        }
    }

    /// Whether the instance being replaced now counts as replaced, or took too long.
    fn check_replaced(
        &mut self,
        s: &Instances,
        rec: &ServiceRecord,
        since: UnixMillis,
        now: UnixMillis,
    ) {
        let old = match &rec.rollout.as_ref().map(|m| &m.phase) {
            Some(RolloutPhase::Replacing { old, .. }) => old.clone(),
            _ => None,
        };
        let task = (self.tasks.live(rec.task.as_ref())).filter(|t| Some(&t.id) != old.as_ref());
        let ran = task
            .and_then(running_since)
            .map(|at| now.saturating_sub(at));
        if ran.is_some_and(|ms| ms >= SETTLE_MS) && rec.passes_health() {
            let id = task.map(|t| t.id.clone());
            self.services.update_rollout(&rec.name, |r| {
                if let Some(mark) = &mut r.rollout {
                    mark.phase = RolloutPhase::Done;
                }
            });
            let (k, n) = (s.done() + 1, s.records.len());
            let id_text = id
                .as_ref()
                .map_or_else(String::new, |id| format!(" by {id}"));
            let message = format!(
                "{}: {} replaced{id_text}, running and healthy ({k}/{n})",
                s.label(),
                rec.name
            );
            self.rollout_event(EventLevel::Info, message, id.as_ref(), now);
            return;
        }
        if now.saturating_sub(since) >= STEP_TIMEOUT_MS {
            let health = rec
                .health
                .message
                .as_ref()
                .map(|m| format!(" (health: {m})"))
                .unwrap_or_default();
            let why = format!(
                "{}: not running and healthy {} s after its replacement began{health}",
                rec.name,
                STEP_TIMEOUT_MS / 1000
            );
            self.services.update_rollout(&rec.name, |r| {
                if let Some(mark) = &mut r.rollout {
                    mark.failed = Some(why);
                }
            });
        }
    }

    /// The rollout failed at `name`: it rolls back, or, a rollback that failed, ends.
    fn rollout_failed(&mut self, s: &Instances, name: &ServiceName, why: &str, now: UnixMillis) {
        let label = s.label();
        if s.back() {
            let message = format!(
                "{label} failed at {name} ({why}); its instances are left to their restarts"
            );
            self.rollout_event(EventLevel::Error, message, None, now);
            for r in s.marked() {
                self.services
                    .update_rollout(&r.name, |rec| rec.rollout = None);
            }
            return;
        }
        let mut back = Vec::new();
        for r in s.marked() {
            let Some(mark) = r.rollout.clone() else {
                continue;
            };
            let touched = mark.phase != RolloutPhase::Waiting;
            // One whose new task ended (the failed one) starts its spec before at once; the
            // others are replaced back one at a time.
            let dead = self.tasks.live(r.task.as_ref()).is_none();
            if touched {
                back.push((r.name.clone(), dead));
            }
            self.services.update_rollout(&r.name, |rec| {
                rec.rolled_back = Some(RolledBack {
                    spec: rec.spec.clone(),
                    why: why.to_string(),
                    at: now,
                });
                rec.spec = mark.previous.clone();
                rec.rollout = touched.then(|| super::supervisor::RolloutMark {
                    previous: mark.previous.clone(),
                    started_at: now,
                    phase: match dead {
                        true => RolloutPhase::Replacing {
                            since: now,
                            old: None,
                        },
                        false => RolloutPhase::Waiting,
                    },
                    failed: None,
                    back: true,
                });
                if dead {
                    rec.next_start = Some(now);
                }
            });
        }
        let message = format!(
            "{label} stopped: {why}; rolling {} replaced instance(s) back to the spec before, one at a time",
            back.len()
        );
        self.rollout_event(EventLevel::Error, message, None, now);
        let label = format!("rollback of {} {}", s.what, s.service);
        for (name, _) in back.iter().filter(|(_, dead)| *dead) {
            let message = format!("{label}: replacing {name}: its spec before starts");
            self.rollout_event(EventLevel::Info, message, None, now);
        }
    }

    /// Why the next instance of `s` may not be replaced yet: another instance does not run
    /// and pass its health check (replacing this one would leave fewer than n − 1).
    fn blocker(&self, s: &Instances, next: &ServiceName) -> Option<String> {
        s.records.iter().filter(|r| r.name != *next).find_map(|r| {
            let runs =
                (self.tasks.live(r.task.as_ref())).is_some_and(|t| t.state == TaskState::Running);
            (!runs || !r.passes_health())
                .then(|| format!("waits for {} to run and be healthy", r.name))
        })
    }

    /// The rollouts for people (`torc status`).
    pub(super) fn rollout_views(&self) -> Vec<RolloutView> {
        let mut out = Vec::new();
        for ((group, service), names) in self.services.rollouts() {
            let records: Vec<ServiceRecord> = (names.iter())
                .filter_map(|n| self.services.get(n).cloned())
                .collect();
            let origin = group
                .as_ref()
                .map_or_else(|| "system".to_string(), |g| g.to_string());
            let s = Instances {
                what: origin.clone(),
                service,
                records,
            };
            let marks: Vec<_> = s.marked().filter_map(|r| r.rollout.as_ref()).collect();
            let started_at = (marks.iter().map(|m| m.started_at).min())
                .or_else(|| {
                    s.records
                        .iter()
                        .filter_map(|r| r.rolled_back.as_ref().map(|b| b.at))
                        .max()
                })
                .unwrap_or_default();
            let instance = s
                .marked()
                .find(|r| {
                    matches!(
                        r.rollout.as_ref().map(|m| &m.phase),
                        Some(RolloutPhase::Replacing { .. })
                    )
                })
                .map(|r| r.name.clone());
            let rolled_back = (s.records.iter().filter_map(|r| r.rolled_back.as_ref()))
                .max_by_key(|b| b.at)
                .map(|b| b.why.clone());
            let (state, message) = match (marks.is_empty(), s.back()) {
                (true, _) => ("rolled back", rolled_back),
                (false, true) => ("rolling back", rolled_back),
                (false, false) => {
                    let waits = match &instance {
                        Some(_) => None,
                        None => (s.marked())
                            .find(|r| {
                                r.rollout
                                    .as_ref()
                                    .is_some_and(|m| m.phase == RolloutPhase::Waiting)
                            })
                            .and_then(|r| self.blocker(&s, &r.name)),
                    };
                    ("rolling", waits)
                }
            };
            out.push(RolloutView {
                service: s.service.clone(),
                origin,
                step: s.done(),
                of: s.records.len(),
                state: state.to_string(),
                instance,
                message,
                started_at,
            });
        }
        out
    }

    fn rollout_event(
        &mut self,
        level: EventLevel,
        message: String,
        task: Option<&TaskId>,
        now: UnixMillis,
    ) {
        let node = task
            .and_then(|id| self.tasks.get(id))
            .and_then(|t| t.node.clone());
        self.feed
            .record(EventKind::Rollout, level, message, task, node.as_ref(), now);
    }
}

/// When a task last entered `running`.
fn running_since(t: &TaskView) -> Option<UnixMillis> {
    if t.state != TaskState::Running {
        return None;
    }
    (t.history.iter().rev())
        .find(|h| h.state == TaskState::Running)
        .map(|h| h.at)
}

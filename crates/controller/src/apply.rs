//! A new rack config for a running controller (`torc apply -f rack.yaml`, `POST
//! /api/v1/config`, and SIGHUP, which reads the controller's own file again): checked as a
//! start checks it (an error names the file, line and key, and nothing changes), compared with
//! the config applied (`diff`, pure), and, unless it is a dry run, applied.
//!
//! What applies live: the services (`healthcheck.system_services`, `api.service-groups`).
//! Instances of added services start, removed ones are stopped (their data directories kept
//! until `torc service purge`), and a changed spec is rolled out one instance at a time
//! (`rack::rollout`); a changed health check or restart timer applies at once. Every other
//! top-level key that changed is named in the report as needing a restart and is not applied
//! (the rack's timers, nodes, DNS, logins, ... stay as the controller started with them).
//!
//! Durability: the controller's config file is the rack's config. `torc apply` writes the
//! text it was given to that file (atomically: `torc_durable::write_atomic`) before the change
//! is committed, so a restarted controller starts from what was applied, and the rollouts'
//! progress is in the service records (`rack::rollout`). A file that cannot be written
//! refuses the apply before anything changes. A commit that fails after the file was written
//! answers the error, but the file and the rack's settings (which the reload after a failed
//! commit keeps) hold the new services: the next step that commits goes on with them, as a
//! restart would. TODO-correctness: on a rack of several
//! controllers only the applying controller's file is written; a standby that takes over
//! reads its own, older file at its next start (not at the takeover: the rack's settings
//! follow the leader's copy until then).

use std::collections::BTreeMap;

use serde_json::Value;
use torc_api::{ApplyReport, ChangedService};
use torc_config::{ConfigError, RackConfig, ServiceConfig};

use crate::controller::{ChangeError, Controller};
use crate::settings::{AppliedConfig, ConfigFile, RackSettings};

/// Why a config was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The text is not a valid rack config (the error names the line and key).
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error(
        "this controller was not started from a rack config file: there is nothing to compare with"
    )]
    NoConfig,
    #[error("SIGHUP: this controller knows no config file to read again")]
    NoFile,
    #[error("cannot write the controller's config file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: torc_durable::WriteError,
    },
    #[error(transparent)]
    Change(#[from] ChangeError),
}

impl Controller {
    /// The rack config this controller started with, and its file (SIGHUP reads it again,
    /// `torc apply` replaces it).
    pub fn set_config(&self, config: RackConfig, file: Option<ConfigFile>) {
        *self.applied.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(AppliedConfig { file, config });
    }

    /// Checks and compares a new rack config (`text`; `None`: the controller's file as it is
    /// now, for SIGHUP), and applies it unless `dry_run`. Blocking (a file write and a
    /// commit): async callers use `spawn_blocking`.
    /// `sent_as` names the text in its errors (the caller's file name).
    pub fn apply_config(
        &self,
        text: Option<&str>,
        sent_as: Option<&str>,
        dry_run: bool,
    ) -> Result<ApplyReport, ApplyError> {
        // Held throughout: applies are one after another.
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let current = applied.as_mut().ok_or(ApplyError::NoConfig)?;
        let vars = (current.file.as_ref()).map_or_else(BTreeMap::new, |f| f.vars.clone());
        let origin = (current.file.as_ref()).map_or_else(
            || "rack config".to_string(),
            |f| f.path.display().to_string(),
        );
        let new = match text {
            Some(text) => RackConfig::parse_with(text, sent_as.unwrap_or(&origin), &vars)?,
            None => {
                let file = current.file.as_ref().ok_or(ApplyError::NoFile)?;
                RackConfig::load_with(&file.path, &file.vars)?
            }
        };
        let mut report = diff(&current.config, &new);
        report.dry_run = dry_run;
        if dry_run {
            return Ok(report);
        }
        if let (Some(text), Some(file)) = (text, &current.file) {
            torc_durable::write_atomic(&file.path, text.as_bytes()).map_err(|source| {
                ApplyError::Write {
                    path: file.path.display().to_string(),
                    source,
                }
            })?;
        }
        // Only the services apply live: the new services read with the old rest (their
        // restart timers come from `stateclean`, which needs a restart like the rest).
        let mut live = current.config.clone();
        live.healthcheck.system_services = new.healthcheck.system_services.clone();
        live.api = new.api.clone();
        let settings = RackSettings::from_config(&live, &origin);
        let summary = summary(&origin, &report);
        tracing::info!("{summary}");
        self.write_keys(move |rack, keys| {
            for name in settings.secret_names() {
                keys.ensure_secret(name.as_str());
            }
            rack.apply_services(
                settings.system_services,
                settings.groups,
                summary,
                crate::clock::now_millis(),
            );
            Ok(())
        })?;
        // What is not applied live stays as it was, to be named again until a restart.
        current.config.healthcheck.system_services = new.healthcheck.system_services;
        current.config.api = new.api;
        Ok(report)
    }
}

/// The feed's line for an applied config.
fn summary(origin: &str, r: &ApplyReport) -> String {
    let mut parts = Vec::new();
    if !r.added.is_empty() {
        parts.push(format!("added {}", r.added.join(", ")));
    }
    if !r.removed.is_empty() {
        parts.push(format!("removed {}", r.removed.join(", ")));
    }
    if !r.changed.is_empty() {
        let changed: Vec<String> = (r.changed.iter())
            .map(|c| format!("{} ({})", c.service, c.fields.join(", ")))
            .collect();
        parts.push(format!("changed {}", changed.join(", ")));
    }
    if !r.needs_restart.is_empty() {
        parts.push(format!("needs a restart: {}", r.needs_restart.join(", ")));
    }
    if parts.is_empty() {
        parts.push("no change".to_string());
    }
    format!("rack config {origin} applied: {}", parts.join("; "))
}

/// The services of a config, by how people name them: `NAME` (a system service) or
/// `group/NAME`.
fn services(c: &RackConfig) -> BTreeMap<String, &ServiceConfig> {
    let system = (c.healthcheck.system_services.iter()).map(|s| (s.name.to_string(), s));
    let groups = (c.api.service_groups.iter()).flat_map(|g| {
        g.services
            .iter()
            .map(move |s| (format!("{}/{}", g.name, s.name), s))
    });
    system.chain(groups).collect()
}

/// What `new` changes against `old` (pure).
pub(crate) fn diff(old: &RackConfig, new: &RackConfig) -> ApplyReport {
    let (before, after) = (services(old), services(new));
    let mut report = ApplyReport::default();
    for (name, s) in &after {
        match before.get(name) {
            None => report.added.push(name.clone()),
            Some(was) if was != s => report.changed.push(ChangedService {
                service: name.clone(),
                fields: changed_keys(&json(was), &json(s)),
                rollout: was.to_task_spec() != s.to_task_spec(),
            }),
            Some(_) => {}
        }
    }
    report.removed = (before.keys())
        .filter(|n| !after.contains_key(*n))
        .cloned()
        .collect();
    let (old, new) = (json(old), json(new));
    for key in changed_keys(&old, &new) {
        match key.as_str() {
            // Live but for its poll interval.
            "healthcheck" => {
                let sub = changed_keys(&old[&key], &new[&key]);
                (report.needs_restart).extend(
                    (sub.into_iter().filter(|k| k != "system_services"))
                        .map(|k| format!("healthcheck.{k}")),
                );
            }
            "api" => {}
            _ => report.needs_restart.push(key),
        }
    }
    report
}

fn json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// The keys of two JSON objects whose values differ (present in one only included), in order.
fn changed_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<String> = a.keys().chain(b.keys()).cloned().collect();
    keys.sort();
    keys.dedup();
    keys.retain(|k| a.get(k) != b.get(k));
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "name: r\nnodes:\n  - {name: n1, ip: 10.0.0.1, type: master}\nhealthcheck:\n  system_services:\n    - {name: web, command: sleep, args: ['1']}\n    - {name: old, command: sleep}\n";

    #[test]
    fn the_diff_names_services_and_keys() {
        let old = RackConfig::parse(BASE, "a").unwrap();
        let text = "name: r\ndomain: other.ave\nnodes:\n  - {name: n1, ip: 10.0.0.1, type: master}\nhealthcheck:\n  poll_interval_in_seconds: 3\n  system_services:\n    - {name: web, command: sleep, args: ['2'], env: {A: b}}\n    - {name: new, command: sleep}\n";
        let new = RackConfig::parse(text, "b").unwrap();
        let r = diff(&old, &new);
        assert_eq!(r.added, vec!["new".to_string()]);
        assert_eq!(r.removed, vec!["old".to_string()]);
        assert_eq!(
            r.changed,
            vec![ChangedService {
                service: "web".into(),
                fields: vec!["args".into(), "env".into()],
                rollout: true,
            }]
        );
        assert_eq!(
            r.needs_restart,
            vec![
                "domain".to_string(),
                "healthcheck.poll_interval_in_seconds".to_string()
            ]
        );
        assert_eq!(diff(&old, &old), ApplyReport::default());
    }
}

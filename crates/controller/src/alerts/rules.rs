//! The alert rules' evaluation, pure (time and what was seen are arguments): which subjects
//! each rule holds for, pending and firing alerts, what fired or resolved at a step. See the
//! parent module for the rules themselves.

use std::collections::{BTreeMap, VecDeque};

use torc_api::{AlertState, AlertView, NodeMetrics};
use torc_config::{AlertCondition, AlertRule, AlertsConfig, NodeMetric};
use torc_types::UnixMillis;

/// What one evaluation saw: per rule, the subjects its condition holds for, each with a
/// summary and the value.
type Seen = BTreeMap<(String, String), (String, Option<f64>)>;

/// What the rules need from the rack at one evaluation.
#[derive(Debug, Default, Clone)]
pub(crate) struct Observation {
    /// Configured nodes and whether their agent reports.
    pub nodes: Vec<(String, bool)>,
    /// System services and their restart counts so far.
    pub restarts: Vec<(String, u32)>,
    /// The latest sample of each active node whose agent answered.
    pub metrics: Vec<NodeMetrics>,
}

/// The alerts of one controller life, and what the crash-loop rules remember.
#[derive(Debug, Default)]
pub(crate) struct Alerts {
    pub(super) active: BTreeMap<(String, String), AlertView>,
    /// Per service: (when, restart count), over the longest crash-loop window.
    restarts: BTreeMap<String, VecDeque<(UnixMillis, u32)>>,
}

impl Alerts {
    /// One evaluation at `now`: returns the alerts that fired or resolved (to tell).
    pub(crate) fn step(
        &mut self,
        config: &AlertsConfig,
        rack: &str,
        seen: &Observation,
        now: UnixMillis,
    ) -> Vec<AlertView> {
        self.remember_restarts(config, seen, now);
        let holds = self.holding(config, seen, now);
        let mut told = Vec::new();
        // Those that no longer hold: resolved if they fired, forgotten if pending.
        let gone: Vec<_> = (self.active.keys())
            .filter(|k| !holds.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(mut alert) = self.active.remove(&key)
                && alert.state == AlertState::Firing
            {
                alert.state = AlertState::Resolved;
                alert.resolved_at = Some(now);
                told.push(alert);
            }
        }
        for ((rule_name, subject), (summary, value)) in holds {
            let Some(rule) = config.rules.iter().find(|r| r.name == rule_name) else {
                continue;
            };
            let key = (rule_name.clone(), subject.clone());
            let alert = self.active.entry(key).or_insert_with(|| AlertView {
                rule: rule_name,
                subject,
                state: AlertState::Pending,
                summary: String::new(),
                value: None,
                since: now,
                fired_at: None,
                resolved_at: None,
                rack: rack.to_string(),
            });
            alert.summary = summary;
            alert.value = value;
            let held_ms = now.saturating_sub(alert.since);
            if alert.state == AlertState::Pending && held_ms >= rule.for_seconds * 1000 {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(now);
                told.push(alert.clone());
            }
        }
        told
    }

    /// The pending and firing alerts, by rule and subject.
    pub(crate) fn list(&self) -> Vec<AlertView> {
        self.active.values().cloned().collect()
    }

    fn remember_restarts(&mut self, config: &AlertsConfig, seen: &Observation, now: UnixMillis) {
        let window = (config.rules.iter())
            .filter_map(|r| match r.when {
                AlertCondition::CrashLoop { within_seconds, .. } => Some(within_seconds),
                _ => None,
            })
            .max();
        let Some(window) = window else {
            self.restarts.clear();
            return;
        };
        for (service, count) in &seen.restarts {
            let samples = self.restarts.entry(service.clone()).or_default();
            samples.push_back((now, *count));
            // Keep one sample at or before the window's start, so the window is covered.
            let start = now.saturating_sub(window * 1000);
            while samples.len() > 1 && samples[1].0 <= start {
                samples.pop_front();
            }
        }
        self.restarts
            .retain(|s, _| seen.restarts.iter().any(|(name, _)| name == s));
    }

    fn holding(&self, config: &AlertsConfig, seen: &Observation, now: UnixMillis) -> Seen {
        let mut holds = Seen::new();
        for rule in &config.rules {
            for (subject, summary, value) in self.subjects(rule, seen, now) {
                holds.insert((rule.name.clone(), subject), (summary, value));
            }
        }
        holds
    }

    /// The subjects `rule` holds for, each with a summary and the value seen.
    fn subjects(
        &self,
        rule: &AlertRule,
        seen: &Observation,
        now: UnixMillis,
    ) -> Vec<(String, String, Option<f64>)> {
        match &rule.when {
            AlertCondition::NodeLost => (seen.nodes.iter())
                .filter(|(_, active)| !active)
                .map(|(node, _)| {
                    let subject = format!("node {node}");
                    let summary = format!("{subject}: its agent does not report");
                    (subject, summary, None)
                })
                .collect(),
            AlertCondition::CrashLoop {
                restarts,
                within_seconds,
            } => {
                let start = now.saturating_sub(within_seconds * 1000);
                (self.restarts.iter())
                    .filter_map(|(service, samples)| {
                        let last = samples.back()?.1;
                        // The oldest sample in the window (or just before it).
                        let first = (samples.iter())
                            .rev()
                            .find(|(at, _)| *at <= start)
                            .or(samples.front())?
                            .1;
                        let n = last.saturating_sub(first);
                        (n >= *restarts).then(|| {
                            let subject = format!("service {service}");
                            let summary = format!(
                                "{subject} restarted {n} times in {within_seconds} s (rule: {restarts})"
                            );
                            (subject, summary, Some(f64::from(n)))
                        })
                    })
                    .collect()
            }
            AlertCondition::Metric { name, above } => (seen.metrics.iter())
                .filter_map(|m| {
                    let v = metric(m, *name);
                    (v > *above).then(|| {
                        let subject = format!("node {}", m.node);
                        let summary =
                            format!("{subject}: {} is {v:.1}, over {above}", name.as_str());
                        (subject, summary, Some(v))
                    })
                })
                .collect(),
            AlertCondition::DiskUsedPercentAbove(above) => (seen.metrics.iter())
                .flat_map(|m| {
                    m.filesystems.iter().filter_map(move |fs| {
                        if fs.total_bytes == 0 {
                            return None;
                        }
                        let v = fs.used_bytes as f64 * 100.0 / fs.total_bytes as f64;
                        (v > *above).then(|| {
                            let subject = format!("node {} file system {}", m.node, fs.mount_point);
                            let summary = format!("{subject} is {v:.1}% full, over {above}%");
                            (subject, summary, Some(v))
                        })
                    })
                })
                .collect(),
        }
    }
}

/// A node metric from its agent's sample.
fn metric(m: &NodeMetrics, name: NodeMetric) -> f64 {
    match name {
        NodeMetric::CpuPercent => m.cpu.user_percent + m.cpu.system_percent,
        NodeMetric::MemoryPercent if m.memory.total_bytes > 0 => {
            m.memory.used_bytes as f64 * 100.0 / m.memory.total_bytes as f64
        }
        NodeMetric::MemoryPercent => 0.0,
        NodeMetric::Load1 => m.load[0],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml_rules: Vec<AlertRule>) -> AlertsConfig {
        AlertsConfig {
            rules: yaml_rules,
            ..AlertsConfig::default()
        }
    }

    fn rule(name: &str, when: AlertCondition, for_seconds: u64) -> AlertRule {
        AlertRule {
            name: name.into(),
            when,
            for_seconds,
        }
    }

    fn at(s: u64) -> UnixMillis {
        s * 1000
    }

    /// Pending until `for_seconds`, then firing once; resolved once when it ends.
    #[test]
    fn a_node_lost_fires_after_its_duration_and_resolves() {
        let cfg = config(vec![rule("lost", AlertCondition::NodeLost, 10)]);
        let mut alerts = Alerts::default();
        let down = Observation {
            nodes: vec![("b1".into(), false), ("b2".into(), true)],
            ..Observation::default()
        };
        assert!(alerts.step(&cfg, "r", &down, at(0)).is_empty());
        assert_eq!(alerts.list()[0].state, AlertState::Pending);
        assert!(alerts.step(&cfg, "r", &down, at(5)).is_empty());
        let fired = alerts.step(&cfg, "r", &down, at(10));
        assert_eq!(fired.len(), 1);
        assert_eq!(
            (fired[0].state, fired[0].subject.as_str(), fired[0].fired_at),
            (AlertState::Firing, "node b1", Some(at(10)))
        );
        assert!(alerts.step(&cfg, "r", &down, at(15)).is_empty(), "once");
        let up = Observation {
            nodes: vec![("b1".into(), true), ("b2".into(), true)],
            ..Observation::default()
        };
        let resolved = alerts.step(&cfg, "r", &up, at(20));
        assert_eq!(resolved.len(), 1);
        assert_eq!(resolved[0].state, AlertState::Resolved);
        assert_eq!(resolved[0].resolved_at, Some(at(20)));
        assert!(alerts.list().is_empty());
    }

    /// A pending alert whose condition ends before its duration is never told.
    #[test]
    fn a_short_blip_is_forgotten() {
        let cfg = config(vec![rule("lost", AlertCondition::NodeLost, 10)]);
        let mut alerts = Alerts::default();
        let down = Observation {
            nodes: vec![("b1".into(), false)],
            ..Observation::default()
        };
        let up = Observation {
            nodes: vec![("b1".into(), true)],
            ..Observation::default()
        };
        assert!(alerts.step(&cfg, "r", &down, at(0)).is_empty());
        assert!(alerts.step(&cfg, "r", &up, at(5)).is_empty());
        assert!(alerts.list().is_empty());
    }

    /// Restarts counted over the window: 3 in 60 s fire, and the alert resolves once the
    /// window has slid past them.
    #[test]
    fn a_crash_loop_counts_restarts_in_its_window() {
        let cfg = config(vec![rule(
            "crash",
            AlertCondition::CrashLoop {
                restarts: 3,
                within_seconds: 60,
            },
            0,
        )]);
        let mut alerts = Alerts::default();
        let restarts = |n| Observation {
            restarts: vec![("web".into(), n)],
            ..Observation::default()
        };
        assert!(alerts.step(&cfg, "r", &restarts(5), at(0)).is_empty());
        assert!(alerts.step(&cfg, "r", &restarts(7), at(10)).is_empty());
        let fired = alerts.step(&cfg, "r", &restarts(8), at(20));
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!(fired[0].value, Some(3.0));
        assert!(
            fired[0]
                .summary
                .contains("service web restarted 3 times in 60 s")
        );
        // No restart since: at 85 s the window (25..85) holds samples 8 only.
        assert!(alerts.step(&cfg, "r", &restarts(8), at(50)).is_empty());
        let resolved = alerts.step(&cfg, "r", &restarts(8), at(85));
        assert_eq!(resolved.len(), 1, "{resolved:?}");
        assert_eq!(resolved[0].state, AlertState::Resolved);
    }

    fn sample(node: &str, used: u64, total: u64, fs_used: u64) -> NodeMetrics {
        NodeMetrics {
            node: node.parse().unwrap(),
            at: 0,
            interval_ms: 1000,
            cpu: torc_api::CpuMetrics {
                cores: 2,
                user_percent: 30.0,
                system_percent: 25.0,
                ..Default::default()
            },
            memory: torc_api::MemoryMetrics {
                total_bytes: total,
                used_bytes: used,
                ..Default::default()
            },
            load: [1.5, 1.0, 0.5],
            disks: Vec::new(),
            filesystems: vec![torc_api::FsMetrics {
                mount_point: "/".into(),
                device: "sda1".into(),
                total_bytes: 100,
                used_bytes: fs_used,
                available_bytes: 100 - fs_used,
            }],
            interfaces: Vec::new(),
            tasks: Vec::new(),
            data_dir: None,
        }
    }

    #[test]
    fn metrics_and_disks_hold_per_node_and_file_system() {
        let cfg = config(vec![
            rule(
                "cpu",
                AlertCondition::Metric {
                    name: NodeMetric::CpuPercent,
                    above: 50.0,
                },
                0,
            ),
            rule(
                "mem",
                AlertCondition::Metric {
                    name: NodeMetric::MemoryPercent,
                    above: 80.0,
                },
                0,
            ),
            rule("disk", AlertCondition::DiskUsedPercentAbove(90.0), 0),
        ]);
        let mut alerts = Alerts::default();
        let seen = Observation {
            metrics: vec![sample("b1", 90, 100, 95), sample("b2", 10, 100, 10)],
            ..Observation::default()
        };
        let fired = alerts.step(&cfg, "r", &seen, at(0));
        let got: Vec<(&str, &str)> = (fired.iter())
            .map(|a| (a.rule.as_str(), a.subject.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("cpu", "node b1"),
                ("cpu", "node b2"),
                ("disk", "node b1 file system /"),
                ("mem", "node b1"),
            ]
        );
        assert_eq!(fired[0].value, Some(55.0));
    }
}

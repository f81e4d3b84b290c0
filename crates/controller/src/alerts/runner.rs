//! Running the alert rules (`super::rules`) in the controller: every interval while it acts,
//! the rack and the agents' samples observed, each alert that fired or resolved told to the
//! event feed and queued for the webhooks, which one task POSTs to.

use std::sync::Arc;
use std::time::Duration;

use torc_api::{AlertState, AlertView, EventKind, EventLevel, NodeMetrics};
use torc_config::{AlertCondition, AlertsConfig};

use super::rules::Observation;
use crate::clock::now_millis;
use crate::controller::Controller;

/// Payloads waiting for the webhooks, at most.
const MAX_QUEUED: usize = 256;
/// Tries per payload and webhook.
const TRIES: u32 = 3;

/// Evaluates the rules every interval while this controller acts, forever.
pub(crate) async fn run(ctl: Arc<Controller>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<AlertView>(MAX_QUEUED);
    tokio::spawn(deliver(ctl.clone(), rx));
    loop {
        let config = ctl.read(|r| r.settings().alerts.clone());
        tokio::time::sleep(Duration::from_secs(
            config.evaluation_interval_in_seconds.max(1),
        ))
        .await;
        if config.rules.is_empty() || ctl.acting().is_err() {
            // A standby (or a leader that lapsed) keeps no alerts: the next leader evaluates.
            ctl.alerts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .active
                .clear();
            continue;
        }
        let seen = observe(&ctl, &config).await;
        let rack = ctl.read(|r| r.settings().rack_name.clone());
        let told = (ctl.alerts.lock().unwrap_or_else(|e| e.into_inner())).step(
            &config,
            &rack,
            &seen,
            now_millis(),
        );
        for alert in told {
            let (level, verb) = match alert.state {
                AlertState::Resolved => (EventLevel::Info, "resolved"),
                _ => (EventLevel::Warning, "firing"),
            };
            let line = format!("alert {} {verb}: {}", alert.rule, alert.summary);
            let recorded = ctl
                .change(move |r| {
                    r.record_event(EventKind::Alert, level, line, now_millis());
                    Ok(())
                })
                .await;
            if let Err(e) = recorded {
                tracing::warn!(error = %e, "cannot record an alert in the event feed");
            }
            if !config.webhooks.is_empty()
                && let Err(tokio::sync::mpsc::error::TrySendError::Full(dropped)) =
                    tx.try_send(alert)
            {
                tracing::warn!(rule = %dropped.rule, subject = %dropped.subject, "alert webhooks are behind; this alert is not sent");
            }
        }
    }
}

/// What the rules need now: nodes and services from the rack, samples from the active agents
/// (only when a rule watches them).
async fn observe(ctl: &Arc<Controller>, config: &AlertsConfig) -> Observation {
    let (nodes, restarts) = ctl.read(|r| {
        let nodes = (r.node_views().into_iter())
            .map(|n| (n.name.to_string(), n.active, n.agent_url))
            .collect::<Vec<_>>();
        let restarts = (r.status().services.into_iter())
            .map(|s| (s.name.to_string(), s.restarts))
            .collect();
        (nodes, restarts)
    });
    let wants_metrics = (config.rules.iter()).any(|r| {
        matches!(
            r.when,
            AlertCondition::Metric { .. } | AlertCondition::DiskUsedPercentAbove(_)
        )
    });
    let mut metrics = Vec::new();
    if wants_metrics {
        // All agents at once: one slow or unreachable agent (10 s client timeout) must not
        // hold up the rules of every other node by its deadline.
        let mut fetches = tokio::task::JoinSet::new();
        for (_, _, url) in nodes.iter().filter(|(_, active, _)| *active) {
            let Some(url) = url.clone() else { continue };
            let (http, token) = (ctl.http.clone(), ctl.own_token.clone());
            fetches.spawn(async move {
                let got = (http.get(format!("{url}/v1/metrics")).bearer_auth(&token))
                    .send()
                    .await;
                match got {
                    Ok(r) if r.status().is_success() => match r.json::<NodeMetrics>().await {
                        Ok(m) => Some(m),
                        Err(e) => {
                            tracing::debug!(%url, error = %e, "unreadable metrics");
                            None
                        }
                    },
                    Ok(r) => {
                        tracing::debug!(%url, status = %r.status(), "no metrics");
                        None
                    }
                    Err(e) => {
                        tracing::debug!(%url, error = %e, "no metrics");
                        None
                    }
                }
            });
        }
        while let Some(fetched) = fetches.join_next().await {
            metrics.extend(fetched.ok().flatten());
        }
    }
    Observation {
        nodes: nodes.into_iter().map(|(n, a, _)| (n, a)).collect(),
        restarts,
        metrics,
    }
}

/// POSTs each alert to every webhook of the config current when it is sent.
async fn deliver(ctl: Arc<Controller>, mut rx: tokio::sync::mpsc::Receiver<AlertView>) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the alert webhooks' HTTP client; alerts go to the event feed only");
            return;
        }
    };
    while let Some(alert) = rx.recv().await {
        let hooks = ctl.read(|r| r.settings().alerts.webhooks.clone());
        for hook in hooks {
            let mut wait = Duration::from_secs(1);
            for attempt in 1..=TRIES {
                match http.post(&hook).json(&alert).send().await {
                    Ok(r) if r.status().is_success() => break,
                    outcome => {
                        let why = match outcome {
                            Ok(r) => format!("answered {}", r.status()),
                            Err(e) => e.to_string(),
                        };
                        if attempt == TRIES {
                            tracing::warn!(%hook, rule = %alert.rule, error = %why, "alert webhook failed {TRIES} times; giving up on this alert");
                        } else {
                            tokio::time::sleep(wait).await;
                            wait *= 2;
                        }
                    }
                }
            }
        }
    }
}

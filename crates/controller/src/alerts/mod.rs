//! Alerts: the rules of the rack config's `alerts` section (`torc_config::AlertsConfig`),
//! evaluated every `evaluation_interval_in_seconds` by the controller that acts (a standby
//! evaluates nothing), told to the event feed and POSTed to every webhook when one fires and
//! when it resolves. `GET /api/v1/alerts` lists the pending and firing ones.
//!
//! A rule holds per subject: `node_lost` for each configured node whose agent does not report;
//! `crash_loop` for each system service that restarted at least `restarts` times in the last
//! `within_seconds`; `metric` and `disk_used_percent_above` for each active node (each file
//! system) whose agent's latest sample is over the threshold (the controller reads the samples
//! from the agents, with its own token, as its proxy does). A condition that holds is
//! *pending* until it has held `for_seconds`, then *firing*; one that no longer holds is
//! resolved (a pending one is forgotten silently).
//!
//! What is not kept: alerts live in the acting controller's memory. A new leader (or a
//! restart) evaluates afresh, so a condition that still holds fires again after `for_seconds`
//! (a webhook receiver such as Alertmanager deduplicates by rule and subject); one that ended
//! meanwhile is never resolved to the webhooks. A node whose metrics cannot be read counts as
//! not over any threshold (its agent down is `node_lost`'s business).
//!
//! Webhooks: each payload is an `AlertView` as JSON, POSTed with a 5 s deadline, tried 3
//! times (1 s, then 2 s apart); at most 256 payloads wait, and one that finds the queue full
//! is dropped (logged). HTTPS webhooks are checked against the system's roots, not the rack CA.

mod rules;
mod runner;

pub(crate) use rules::Alerts;
pub(crate) use runner::run;

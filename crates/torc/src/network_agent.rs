//! `torc network-agent`: the switch's route programmer (the seed's network agent on the Wedge).
//!
//! It long-polls the controller for the routes the switch should hold (one `/32` per
//! rack-network task, through the task's node) and makes the switch's kernel table match:
//! it adds and replaces its own routes and deletes the ones of its own that are no longer
//! wanted, in one pass planned by `torc_net::routes::plan`. Then it reports the whole table and
//! the switch's ports. On a switch OS (SONiC, Cumulus, switchdev) the kernel table is what the
//! ASIC is programmed from, so the same code programs a real switch.
//!
//! Invariants:
//! - It never touches a route it does not own: only unicast `/32` routes of the main table with
//!   its protocol (`--route-protocol`, 116 by default) are ever replaced or deleted.
//! - The whole table is reconciled at start, after every new snapshot, right after a change
//!   of the switch's links or routes (a netlink watch, `torc_net::Switch`), and every
//!   `--resync` seconds, so a route removed or added by hand is put right at once and one left
//!   by an agent that was killed when its successor starts.
//! - On exit it leaves its routes in place: a restarting agent must not cut the rack off. Its
//!   successor's first pass removes what went stale.
//! - A rack whose config has no `network-agent.type: netlink` is told so in the snapshot
//!   (`switch: None`): the agent then programs nothing, and says so once.
//! - Snapshots are ordered by `(epoch, generation)` (`torc_api::order::Follower`): a higher
//!   epoch (a new leader) is taken at once; a lower one (a deposed leader's late answer) is
//!   refused, leaving every route as it is, until the epoch held has been silent for
//!   `LOWER_EPOCH_GRACE`, and then taken with a warning (a new store). A restarted agent holds
//!   nothing and takes the first snapshot it gets.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use torc_api::order::{Follower, Verdict};
use torc_api::{NetworkReport, RouteSnapshot, SwitchPort, SwitchRoute};
use torc_net::routes::RouteProtocol;
use torc_net::{Netlink, RouteView, observe};

use crate::process::{init_tracing, shutdown_signal};

#[derive(Args)]
pub struct NetworkAgentArgs {
    /// The controllers' URLs, comma-separated (default: `$TORC_CONTROLLERS`, else
    /// `$TORC_CONTROLLER`, set for tasks by their agent).
    #[arg(long)]
    controller: Option<String>,
    /// The protocol number of the routes this agent owns (`rtm_protocol`; 5 to 254).
    #[arg(long, default_value_t = RouteProtocol::TORC.0)]
    route_protocol: u8,
    /// Seconds between two reconciliations of the whole table when nothing changed.
    #[arg(long, default_value_t = 10)]
    resync: u64,
    /// Serve Prometheus `/metrics` (plain HTTP, read-only) on this address: passes, route
    /// changes and their failures, the routes held, the snapshot applied. Off by default.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

pub fn run_network_agent(args: NetworkAgentArgs) -> anyhow::Result<()> {
    init_tracing("info");
    let protocol = RouteProtocol::owner(args.route_protocol)?;
    let resync = Duration::from_secs(args.resync.max(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let stats = Arc::new(Stats::default());
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let stats = stats.clone();
            Some(crate::metrics_http::bind(addr, move || stats.prometheus())?)
        }
        None => None,
    };
    rt.block_on(async move {
        if let Some(metrics) = metrics {
            tokio::spawn(metrics);
        }
        let client = torc_client::Client::from_env_with(torc_client::controllers_from_env(
            args.controller.clone(),
        )?)?;
        let mut agent = Agent {
            stats,
            client,
            protocol,
            switch: None,
            idle_said: false,
            last_sent: None,
            failures: BTreeMap::new(),
        };
        tokio::select! {
            () = agent.run(resync) => {}
            () = shutdown_signal() => {
                tracing::info!("network agent stopping; its routes stay on the switch");
            }
        }
        Ok(())
    })
}

/// What woke the agent: the controller's answer, or a change on the switch.
enum Woke {
    Snapshot(Result<RouteSnapshot, torc_client::ClientError>),
    SwitchChanged,
}

/// How long a change on the switch waits before its pass, so that a burst is one pass.
const SETTLE: Duration = Duration::from_millis(20);

/// What the agent has done since it started, for `/metrics`: counters only grow; the gauges
/// say what the last pass left.
#[derive(Default)]
struct Stats {
    passes: AtomicU64,
    pass_errors: AtomicU64,
    controller_errors: AtomicU64,
    report_errors: AtomicU64,
    /// Route changes by (add, replace, delete) and (done, failed).
    changes: [[AtomicU64; 2]; 3],
    routes: AtomicU64,
    epoch: AtomicU64,
    generation: AtomicU64,
}

impl Stats {
    fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    fn count_change(&self, op: &torc_net::routes::Op, ok: bool) {
        let kind = match op {
            torc_net::routes::Op::Add { .. } => 0,
            torc_net::routes::Op::Replace { .. } => 1,
            torc_net::routes::Op::Delete { .. } => 2,
        };
        Self::count(&self.changes[kind][usize::from(!ok)]);
    }

    fn prometheus(&self) -> String {
        use torc_prom::Kind::{Counter, Gauge};
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut text = torc_prom::Text::new();
        text.family(
            "torc_network_agent_passes_total",
            Counter,
            "Reconciliations of the switch's routes with the controller's snapshot.",
        )
        .sample(&[], get(&self.passes));
        text.family(
            "torc_network_agent_pass_errors_total",
            Counter,
            "Passes that could not read or program the switch.",
        )
        .sample(&[], get(&self.pass_errors));
        text.family(
            "torc_network_agent_controller_errors_total",
            Counter,
            "Polls of the controller that failed (the routes stay as they are).",
        )
        .sample(&[], get(&self.controller_errors));
        text.family(
            "torc_network_agent_report_errors_total",
            Counter,
            "Reports of the switch's table the controller did not take.",
        )
        .sample(&[], get(&self.report_errors));
        let mut changes = text.family(
            "torc_network_agent_route_changes_total",
            Counter,
            "Route changes made on the switch, by operation and result.",
        );
        for (i, op) in ["add", "replace", "delete"].into_iter().enumerate() {
            for (j, result) in ["done", "failed"].into_iter().enumerate() {
                changes.sample(&[("op", op), ("result", result)], get(&self.changes[i][j]));
            }
        }
        text.family(
            "torc_network_agent_routes",
            Gauge,
            "Routes of this agent's protocol on the switch after the last pass.",
        )
        .sample(&[], get(&self.routes));
        text.family(
            "torc_network_agent_snapshot_epoch",
            Gauge,
            "Epoch of the last snapshot applied in full (0 before any).",
        )
        .sample(&[], get(&self.epoch));
        text.family(
            "torc_network_agent_snapshot_generation",
            Gauge,
            "Generation of the last snapshot applied in full (0 before any).",
        )
        .sample(&[], get(&self.generation));
        text.into_string()
    }
}

struct Agent {
    stats: Arc<Stats>,
    client: torc_client::Client,
    protocol: RouteProtocol,
    /// The connection to the switch's namespace and the watch on it.
    switch: Option<torc_net::Switch>,
    idle_said: bool,
    /// What the last report that reached the controller said.
    last_sent: Option<ReportShape>,
    /// Operations that failed, with their error, so each is logged once until it changes.
    failures: BTreeMap<Ipv4Addr, String>,
}

impl Agent {
    async fn run(&mut self, resync: Duration) {
        let mut follower = Follower::default();
        let mut last: Option<RouteSnapshot> = None;
        loop {
            let at = follower.held().unwrap_or_default();
            // Wait for a new snapshot at most `resync` (the controller answers with its current
            // one either way), or for a change on the switch (a route removed by hand, a port
            // going down): then reconcile with the last snapshot at once.
            let woke = {
                let poll = self.client.switch_routes(at.epoch, at.generation, resync);
                // The settling wait is part of this branch, so a snapshot that comes meanwhile
                // is taken at once (its pass covers the change too): the agent's own route
                // changes wake it, and must not hold up the next task's route.
                let changed = async {
                    match (self.switch.as_mut(), &last) {
                        (Some(switch), Some(_)) => switch.changed().await,
                        _ => std::future::pending().await,
                    }
                    // A burst (its own routes, a port and its routes) is one pass.
                    tokio::time::sleep(SETTLE).await;
                };
                tokio::select! {
                    polled = poll => Woke::Snapshot(polled),
                    () = changed => Woke::SwitchChanged,
                }
            };
            let changed_only = matches!(woke, Woke::SwitchChanged);
            let snapshot = match woke {
                Woke::Snapshot(Ok(s)) => {
                    match ordered(&mut follower, s, last.as_ref(), Instant::now()) {
                        Some(s) => s,
                        // A deposed leader answers a poll of another epoch at once: asked again
                        // after a pause, until the client moves on or the grace is over.
                        None => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            continue;
                        }
                    }
                }
                Woke::Snapshot(Err(e)) => {
                    Stats::count(&self.stats.controller_errors);
                    tracing::warn!(error = %e, "cannot reach the controller; keeping the routes as they are");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                Woke::SwitchChanged => match &last {
                    Some(s) => s.clone(),
                    None => continue,
                },
            };
            Stats::count(&self.stats.passes);
            if let Err(e) = self.reconcile(&snapshot, changed_only).await {
                Stats::count(&self.stats.pass_errors);
                tracing::warn!(error = %e, "cannot reconcile the switch's routes");
                // A connection that failed is opened again next time.
                self.switch = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            last = Some(snapshot);
        }
    }

    /// The connection to the switch the snapshot names, opened (and watched) when it changes.
    fn connect(&mut self, setting: &str) -> Result<Netlink, torc_net::Error> {
        if let Some(switch) = &self.switch
            && switch.setting() == setting
        {
            return Ok(switch.netlink().clone());
        }
        let switch = torc_net::Switch::open(setting)?;
        let nl = switch.netlink().clone();
        tracing::info!(switch = %nl.namespace(), "programming the switch's routes");
        self.switch = Some(switch);
        Ok(nl)
    }

    /// One pass; `changed_only`: woken by a change on the switch, not by the controller or the
    /// resync, so the report is sent only if the table or a port's state differs from the last
    /// one sent (the agent's own route changes wake it too, and that pass changes nothing).
    async fn reconcile(
        &mut self,
        snapshot: &RouteSnapshot,
        changed_only: bool,
    ) -> anyhow::Result<()> {
        let Some(switch) = &snapshot.switch else {
            if !self.idle_said {
                tracing::info!(
                    "this rack has no network-agent of type netlink in its config: no routes are programmed"
                );
                self.idle_said = true;
            }
            self.switch = None;
            return Ok(());
        };
        self.idle_said = false;
        let nl = self.connect(switch)?;
        let desired: BTreeMap<Ipv4Addr, Ipv4Addr> = (snapshot.routes.iter())
            .map(|r| (r.destination, r.next_hop))
            .collect();
        let (plan, outcomes) = torc_net::route::reconcile(&nl, &desired, self.protocol).await?;
        for skipped in &plan.skipped {
            tracing::debug!(%skipped, "route not programmed");
        }
        let mut failed = BTreeSet::new();
        for (op, outcome) in outcomes {
            self.stats.count_change(&op, outcome.is_ok());
            match outcome {
                Ok(()) => tracing::info!(%op, "route programmed"),
                Err(e) => {
                    failed.insert(op.dst());
                    let text = e.to_string();
                    if self.failures.get(&op.dst()) != Some(&text) {
                        tracing::warn!(%op, error = %text, "route not programmed; retried next pass");
                        self.failures.insert(op.dst(), text);
                    }
                }
            }
        }
        self.failures.retain(|dst, _| failed.contains(dst));
        let applied = plan.ops.iter().all(|op| !failed.contains(&op.dst()));
        // What the switch holds now, for the controller.
        let (routes, ports) = observe::switch(&nl, self.protocol).await?;
        let ours = (routes.iter())
            .filter(|r| r.owner == torc_net::routes::Owner::Torc)
            .count();
        self.stats.routes.store(ours as u64, Ordering::Relaxed);
        if applied {
            self.stats.epoch.store(snapshot.epoch, Ordering::Relaxed);
            (self.stats.generation).store(snapshot.generation, Ordering::Relaxed);
        }
        let report = NetworkReport {
            epoch: snapshot.epoch,
            generation_applied: if applied { snapshot.generation } else { 0 },
            routes: routes
                .iter()
                .map(|r| switch_route(r, self.protocol))
                .collect(),
            ports: ports
                .into_iter()
                .map(|p| SwitchPort {
                    name: p.name,
                    oper_state: p.oper_state.to_string(),
                    mtu: p.mtu.unwrap_or(0),
                    mac: p.mac,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    rx_packets: p.rx_packets,
                    tx_packets: p.tx_packets,
                    rx_errors: p.rx_errors,
                    tx_errors: p.tx_errors,
                })
                .collect(),
        };
        let shape = ReportShape::of(&report);
        if changed_only && self.last_sent.as_ref() == Some(&shape) {
            return Ok(());
        }
        match self.client.report_network(&report).await {
            Ok(_) => self.last_sent = Some(shape),
            Err(e) => {
                Stats::count(&self.stats.report_errors);
                self.last_sent = None;
                tracing::warn!(error = %e, "cannot report the switch's table to the controller");
            }
        }
        Ok(())
    }
}

/// The snapshot to reconcile with after the controller answered `got` at `now`: `got` when it is
/// taken, the one held when `got` is not newer (the resync's answer), none when it is refused
/// (a lower epoch within the grace: every route stays as it is).
fn ordered(
    follower: &mut Follower,
    got: RouteSnapshot,
    last: Option<&RouteSnapshot>,
    now: Instant,
) -> Option<RouteSnapshot> {
    let verdict = follower.receive(got.stamp(), now);
    if let Some(warning) = verdict.warning(got.epoch) {
        tracing::warn!("the switch's routes of {warning}");
    }
    match verdict {
        Verdict::Take | Verdict::NewStore { .. } => {
            follower.took(got.stamp(), now);
            Some(got)
        }
        Verdict::NotNewer => Some(last.cloned().unwrap_or(got)),
        Verdict::Refused { .. } => None,
    }
}

/// What a report says that a change on the switch can alter: its routes, and each port's
/// state (not the counters, which move all the time).
#[derive(PartialEq)]
struct ReportShape {
    generation_applied: u64,
    routes: Vec<SwitchRoute>,
    ports: Vec<(String, String, u32)>,
}

impl ReportShape {
    fn of(report: &NetworkReport) -> ReportShape {
        ReportShape {
            generation_applied: report.generation_applied,
            routes: report.routes.clone(),
            ports: (report.ports.iter())
                .map(|p| (p.name.clone(), p.oper_state.clone(), p.mtu))
                .collect(),
        }
    }
}

/// A route as the controller shows it: the owner's routes as `torc`, others by their
/// protocol's name or number.
fn switch_route(r: &RouteView, ours: RouteProtocol) -> SwitchRoute {
    SwitchRoute {
        destination: r.dst,
        prefix_len: r.dst_len,
        gateway: r.gateway,
        port: r.device.clone(),
        protocol: r.protocol_label(ours),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(epoch: u64, generation: u64, destination: &str) -> RouteSnapshot {
        RouteSnapshot {
            epoch,
            generation,
            switch: Some(String::new()),
            routes: vec![torc_api::RackRoute {
                destination: destination.parse().unwrap(),
                next_hop: "198.18.0.21".parse().unwrap(),
                node: "b1".parse().unwrap(),
                task: torc_types::TaskId::new("web.0123456789ab").unwrap(),
                service: "web".parse().unwrap(),
            }],
        }
    }

    /// A restarted agent takes anything; then a deposed leader's snapshot leaves the routes
    /// held until the epoch held has been silent for the grace; the resync's answer (not
    /// newer) reconciles with the routes held. Time is injected.
    #[test]
    fn snapshots_are_ordered_by_epoch_with_a_grace_for_lower_ones() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = Follower::default();
        let first = routes(3, 40, "198.19.1.2");
        assert_eq!(
            ordered(&mut f, first.clone(), None, t0),
            Some(first.clone())
        );
        let leader = routes(5, 1, "198.19.1.3");
        assert_eq!(
            ordered(&mut f, leader.clone(), Some(&first), t0),
            Some(leader.clone()),
            "a higher epoch at once, whatever its generation"
        );
        let deposed = routes(3, 41, "198.19.1.9");
        assert_eq!(
            ordered(&mut f, deposed.clone(), Some(&leader), t0 + s(2)),
            None
        );
        assert_eq!(
            ordered(&mut f, routes(5, 1, "198.19.1.7"), Some(&leader), t0 + s(5)),
            Some(leader.clone()),
            "the resync's answer: the routes held"
        );
        assert_eq!(
            ordered(&mut f, deposed.clone(), Some(&leader), t0 + s(14)),
            None
        );
        assert_eq!(
            ordered(&mut f, deposed.clone(), Some(&leader), t0 + s(15)),
            Some(deposed.clone()),
            "silent for the grace: a new store"
        );
        assert_eq!(f.held(), Some(deposed.stamp()));
    }
}

//! A network partition: a compute node cut off from the rest of the rack by a netfilter drop
//! inside its namespace (`faults_net::cut_off`: its agent and tasks run on, their connections
//! stay open and hear nothing), then healed.
//!
//! - Shorter than `stateclean.timeout_in_seconds`: nothing is lost or restarted (the same task
//!   ids, the same pids) and the node is never inactive.
//! - Longer: the node goes inactive, its instances are lost and replaced on the other nodes
//!   while the old processes still run behind the partition; when it heals, the node rejoins
//!   and its surplus is stopped, so no instance runs twice, and a task placed on the node just
//!   after the cut (still active then, gone by the heal) is never started by an answer the
//!   agent hears only after the heal.
//!
//! Counted on the real rack: processes from `/proc`, DNS from `dig` in the switch.

use std::time::{Duration, Instant};

use torc_test_utils::faults_net::{self, Look, look};
use torc_test_utils::{
    DNS_SYSTEM_SERVICE, LocalRack, RackNetwork, RackOptions, namespaces_or_skip, system_services,
    wait_for,
};
use torc_types::{Resources, TaskSpec, TaskState};

use super::TORC;
use super::report::{Figures, scale};

/// The service whose instances the faults count.
pub(crate) const SERVICE: &str = "web";
/// Bound of each wait that has no bound of its own (a rack starting, a rejoin).
pub(crate) const WITHIN: Duration = Duration::from_secs(40);

/// A rack on namespaces with `compute` compute nodes, the rack's DNS and a group `web` of
/// `instances` instances on the compute nodes, each a rack task (an address of its own, so a
/// DNS answer names one task), its group started (wait with [`settled`]). `None` without the privilege (after a
/// printed line).
pub(crate) async fn rack_with_web(
    compute: usize,
    instances: usize,
    node_timeout_secs: u64,
    security: torc_test_utils::Security,
    dns_service: &str,
) -> Option<LocalRack> {
    if !namespaces_or_skip() {
        return None;
    }
    let group = format!(
        r#"api:
  service-groups:
    - name: {SERVICE}
      services:
        - name: {SERVICE}
          command: sleep
          args: ["100000"]
          network: rack
          node_type: slave
          memory: 8
          cpu: 0.05
          number_of_instances: {instances}
          kill_grace_in_seconds: 1
"#
    );
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: compute,
            node_timeout_secs,
            security,
            network: RackNetwork::Namespaces,
            extra_yaml: format!("{}{group}", system_services(&[dns_service])),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    rack.assert_namespaces();
    rack.client()
        .start_group(&SERVICE.parse().unwrap())
        .await
        .unwrap();
    Some(rack)
}

/// The standard rack of these faults: TLS, the rack's own `dns` service.
pub(super) async fn rack(
    compute: usize,
    instances: usize,
    node_timeout_secs: u64,
) -> Option<LocalRack> {
    rack_with_web(
        compute,
        instances,
        node_timeout_secs,
        torc_test_utils::Security::Tls,
        DNS_SYSTEM_SERVICE,
    )
    .await
}

/// Waits until the rack is consistent (`Look::inconsistency`); that look.
pub(crate) async fn settled(rack: &LocalRack, instances: usize, what: &str) -> Look {
    let last = std::sync::Mutex::new(String::new());
    let found = wait_for(what, WITHIN, || async {
        let l = look(rack, SERVICE, true).await.ok()?;
        match l.inconsistency(instances) {
            None => Some(l),
            Some(why) => {
                *last.lock().unwrap() = why;
                None
            }
        }
    })
    .await;
    found.unwrap_or_else(|e| panic!("{e}: {}\n{}", last.lock().unwrap(), rack.logs_hint()))
}

/// The node the first instance runs on (a compute node: the group runs on those only).
pub(crate) fn node_of_first(l: &Look) -> String {
    let first = l
        .instances
        .iter()
        .find(|s| s.name.as_str() == format!("{SERVICE}-0"))
        .unwrap_or_else(|| panic!("no {SERVICE}-0 in {:?}", l.instances));
    first.node.as_ref().unwrap().to_string()
}

/// A task pinned to `node` that should run for good: placed on a node that is cut off (or
/// frozen) but not yet inactive, it is lost when the node goes; the agent must never start
/// it from a desired set it hears only after that.
pub(crate) fn pinned(name: &str, node: &str) -> TaskSpec {
    let mut spec = TaskSpec::new(name.parse().unwrap(), "sleep");
    spec.args = vec!["100000".into()];
    spec.resources = Resources::new(0.05, 8.0, 0.0);
    spec.constraints.node_name = Some(node.parse().unwrap());
    spec.kill_grace_ms = 1_000;
    spec
}

/// Whether task `id` was ever started on `node`: its shim's lock file is made before the
/// shim is spawned and never removed (the agent's `shims/<id>.lock`).
pub(crate) fn ever_started(rack: &LocalRack, node: &str, id: &str) -> bool {
    (rack.dir.path())
        .join("agents")
        .join(node)
        .join("shims")
        .join(format!("{id}.lock"))
        .exists()
}

/// Looks at the rack until `done` holds (at most `WITHIN`), counting DNS's stale answers and
/// every task id seen running; the last look.
pub(crate) async fn watch_until(
    rack: &LocalRack,
    what: &str,
    stale: &mut u64,
    seen: &mut std::collections::BTreeSet<String>,
    mut done: impl FnMut(&Look) -> bool,
) -> Look {
    let deadline = Instant::now() + WITHIN;
    loop {
        if let Ok(l) = look(rack, SERVICE, true).await {
            *stale += l.stale_answers();
            seen.extend(l.processes.iter().map(|p| p.task.clone()));
            if done(&l) {
                return l;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {WITHIN:?} waiting for {what}: {:?}\n{}",
                    l.inconsistency(l.instances.len()),
                    rack.logs_hint()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shorter_than_the_node_timeout() {
    // The default timeout (10 s) against a cut of a fifth of it (CI) or of 4 s (scripts/faults):
    // TCP's retransmissions after the heal and the next heartbeat stay far inside it.
    let (node_timeout, cut) = (10, Duration::from_secs(scale(2, 4) as u64));
    let instances = scale(6, 24);
    let Some(rack) = rack(3, instances, node_timeout).await else {
        return;
    };
    let mut figures = Figures::new(format!(
        "partition of a node {} s (< {node_timeout} s node timeout)",
        cut.as_secs()
    ));
    let before = settled(&rack, instances, "the rack to settle").await;
    figures.acknowledged = instances as u64;
    let victim = node_of_first(&before);
    let on_victim = before.processes.iter().filter(|p| p.node == victim).count();
    assert!(on_victim > 0, "nothing runs on {victim}: {before:?}");

    faults_net::cut_off(&rack, &victim).unwrap();
    let cut_at = Instant::now();
    let (mut stale, mut seen) = (0, Default::default());
    let mut inactive_seen = false;
    watch_until(&rack, "the cut to last", &mut stale, &mut seen, |l| {
        inactive_seen |= l.nodes.iter().any(|n| !n.active);
        cut_at.elapsed() >= cut
    })
    .await;
    faults_net::reconnect(&rack, &victim).unwrap();
    let healed_at = Instant::now();
    let healed_wall = torc_types::now_millis();
    // Recovered once the controller hears the node again.
    let after = watch_until(
        &rack,
        "the node to be heard again",
        &mut stale,
        &mut seen,
        |l| {
            inactive_seen |= l.nodes.iter().any(|n| !n.active);
            l.nodes
                .iter()
                .any(|n| n.name.as_str() == victim && n.last_seen >= healed_wall)
                && l.inconsistency(instances).is_none()
        },
    )
    .await;
    figures.recovery = Some(healed_at.elapsed());
    figures.stale_dns = Some(stale);

    // Nothing lost, nothing restarted: the same tasks in the same processes.
    let tasks = |l: &Look| {
        (l.instances.iter())
            .map(|s| (s.name.to_string(), s.task.clone(), s.restarts))
            .collect::<Vec<_>>()
    };
    let lost: Vec<_> = (after.instances.iter())
        .filter(|s| before.instances.iter().all(|b| b.task != s.task))
        .map(|s| s.name.to_string())
        .collect();
    figures.lost = lost.len() as u64;
    figures.duplicated = after.duplicated().len() as u64;
    // Shown before the checks, so that a failing run says what it measured.
    eprintln!("before the checks: {}", figures.row());
    assert!(!inactive_seen, "a node went inactive during a short cut");
    assert_eq!(
        tasks(&after),
        tasks(&before),
        "instances replaced: {lost:?}"
    );
    assert_eq!(after.processes, before.processes, "the same processes run");
    for t in after.tasks.iter().filter(|t| t.state == TaskState::Running) {
        let runs = (t.history.iter())
            .filter(|h| h.state == TaskState::Running)
            .count();
        assert_eq!(runs, 1, "{t:?}");
    }
    figures.check();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn longer_than_the_node_timeout() {
    // Short enough that the cut node goes inactive within a few seconds, long enough (heartbeats
    // every 0.75 s) that a loaded machine does not lose the other nodes too.
    let node_timeout = 3;
    let instances = scale(6, 24);
    let Some(rack) = rack(3, instances, node_timeout).await else {
        return;
    };
    let mut figures = Figures::new(format!(
        "partition of a node past its node timeout ({node_timeout} s), then healed"
    ));
    let (cut, heal) = (
        |node: &str| faults_net::cut_off(&rack, node).unwrap(),
        |node: &str| faults_net::reconnect(&rack, node).unwrap(),
    );
    unheard_past_the_timeout(&rack, instances, &mut figures, cut, heal).await;
    figures.check();
}

/// What a node whose agent is not heard past the node timeout must come to, however it was
/// silenced (`silence`, undone by `restore`; both given the node): a task placed on it while
/// it still counts as active (the controller's answer waits, unread, until `restore`), the
/// node inactive, its instances lost and replaced elsewhere while the old processes run on;
/// restored, the rack consistent again (each instance once, the old processes stopped, DNS
/// exact) and staying so, and the late task never started. Fills `figures` (acknowledged:
/// the instances).
pub(crate) async fn unheard_past_the_timeout(
    rack: &LocalRack,
    instances: usize,
    figures: &mut Figures,
    silence: impl FnOnce(&str),
    restore: impl FnOnce(&str),
) {
    let before = settled(rack, instances, "the rack to settle").await;
    figures.acknowledged = instances as u64;
    let victim = node_of_first(&before);
    let old: Vec<_> = (before.processes.iter())
        .filter(|p| p.node == victim)
        .cloned()
        .collect();
    assert!(!old.is_empty(), "nothing runs on {victim}");

    silence(&victim);
    let late = rack
        .client()
        .launch(&pinned("late", &victim))
        .await
        .unwrap();
    let (mut stale, mut seen) = (0, std::collections::BTreeSet::new());
    let during = watch_until(
        rack,
        "the silent node's instances to be replaced elsewhere",
        &mut stale,
        &mut seen,
        |l| {
            let gone = (l.nodes.iter()).any(|n| n.name.as_str() == victim && !n.active);
            let replaced = (l.instances.iter()).all(|s| {
                s.state == Some(TaskState::Running)
                    && s.node.as_ref().is_some_and(|n| n.as_str() != victim)
            });
            let late_lost = (l.tasks.iter()).any(|t| t.id == late.id && t.state == TaskState::Lost);
            gone && replaced && late_lost
        },
    )
    .await;
    // The old instances still run: the rack runs them twice now, and only the node's return
    // can tell their agent.
    for p in &old {
        assert!(during.processes.contains(p), "{p:?} ended meanwhile");
    }

    restore(&victim);
    let restored_at = Instant::now();
    let mut after = watch_until(
        rack,
        "the rack to be consistent again",
        &mut stale,
        &mut seen,
        |l| l.inconsistency(instances).is_none(),
    )
    .await;
    figures.recovery = Some(restored_at.elapsed());
    // And it stays so: nothing comes back a moment later.
    let settle = Instant::now() + Duration::from_secs(2);
    while Instant::now() < settle {
        after = look(rack, SERVICE, true).await.unwrap();
        stale += after.stale_answers();
        seen.extend(after.processes.iter().map(|p| p.task.clone()));
        assert_eq!(after.inconsistency(instances), None, "after recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    figures.stale_dns = Some(stale);
    figures.lost = (instances - after.running_ips().len()) as u64;
    figures.duplicated = after.duplicated().len() as u64;
    // Shown before the checks, so that a failing run says what it measured.
    eprintln!("before the checks: {}", figures.row());
    // The check can see a start: the old instances' starts left their lock files.
    assert!(
        old.iter().all(|p| ever_started(rack, &victim, &p.task)),
        "{old:?}"
    );
    let late_started =
        ever_started(rack, &victim, late.id.as_str()) || seen.contains(late.id.as_str());
    assert!(
        !late_started,
        "{victim}'s agent started task {} from a desired set it read only after its node was \
         declared inactive (the controller counts it lost)\n{}",
        late.id,
        rack.logs_hint()
    );
    for p in &old {
        assert!(!torc_test_utils::pid_alive(p.pid), "{p:?} still runs");
    }
}

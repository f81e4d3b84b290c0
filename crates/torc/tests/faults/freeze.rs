//! A role frozen (SIGSTOP) past its timeouts, then resumed (SIGCONT): it rejoins cleanly and
//! nothing acts on stale leadership or stale generations.
//!
//! - An agent frozen past its node timeout: the node goes inactive and its instances are
//!   replaced elsewhere; resumed, the agent stops its surplus, and never starts a task from a
//!   desired set that waited in its socket while it was frozen (placed on it while it was
//!   still counted active, lost since).
//! - `torc dns` frozen while the names change: resumed, it serves the current names promptly
//!   and asks the controller a few times, not in a loop (counted by a proxy in front of the
//!   controller).
//! - The single controller frozen past the agents' heartbeat timeouts: the agents keep their
//!   tasks running, and the resumed controller takes its own silence for no node's: nothing
//!   is lost, restarted or run twice.
//!
//! (A frozen leader of several controllers is `ha.rs`'s.)

use std::collections::BTreeSet;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use torc_test_utils::faults_net::{self, dig_in_rack, look, task_processes};
use torc_test_utils::{DNS_SYSTEM_SERVICE, Security, pid_alive};
use torc_types::TaskState;

use super::partition::{
    SERVICE, WITHIN, rack, rack_with_web, settled, unheard_past_the_timeout, watch_until,
};
use super::report::{Figures, scale};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_past_its_node_timeout() {
    let node_timeout = 3;
    let instances = scale(6, 24);
    let Some(rack) = rack(3, instances, node_timeout).await else {
        return;
    };
    let mut figures = Figures::new(format!(
        "freeze (SIGSTOP) an agent past its node timeout ({node_timeout} s)"
    ));
    let agent = std::cell::Cell::new(0);
    let (stop, resume) = (
        |node: &str| {
            agent.set(rack.agent_pid(node).unwrap());
            faults_net::freeze(agent.get(), true).unwrap();
        },
        |_: &str| faults_net::freeze(agent.get(), false).unwrap(),
    );
    unheard_past_the_timeout(&rack, instances, &mut figures, stop, resume).await;
    figures.check();
    // The same agent process rejoined: it was not restarted.
    assert!(
        pid_alive(agent.get()),
        "the frozen agent {} is gone",
        agent.get()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_while_the_names_change() {
    let frozen_for = Duration::from_secs(scale(5, 35) as u64);
    // The DNS server asks the controller through a proxy that counts its polls (plain HTTP,
    // so the proxy can read them): a port of the switch's namespace nothing else uses.
    let proxy_port = 20_000 + (torc_test_utils::random_u64() % 10_000) as u16;
    let dns = DNS_SYSTEM_SERVICE.replace(
        r#"args: [dns, --listen, "$IP:53"]"#,
        &format!(r#"args: [dns, --listen, "$IP:53", --controller, "http://$IP:{proxy_port}"]"#),
    );
    assert_ne!(dns, DNS_SYSTEM_SERVICE, "the dns service's args moved");
    let instances = 3;
    let Some(rack) = rack_with_web(2, instances, 10, Security::Plain, &dns).await else {
        return;
    };
    let switch = rack.nodes["wedge"];
    let proxy = faults_net::CountingProxy::start(
        &rack,
        "wedge",
        SocketAddrV4::new(switch, proxy_port),
        SocketAddrV4::new(switch, rack.port),
        "GET /api/v1/dns",
    )
    .await
    .unwrap();
    let before = settled(&rack, instances, "the rack to settle").await;
    let client = rack.client();
    let mut figures = Figures::new(format!(
        "freeze (SIGSTOP) torc dns {} s while names change",
        frozen_for.as_secs()
    ));
    let dns_task = (before.tasks.iter())
        .find(|t| t.name.as_str() == "dns" && t.state == TaskState::Running)
        .expect("the dns service runs");
    let pid = (before.processes.iter())
        .find(|p| p.task == dns_task.id.as_str())
        .expect("the dns service's process")
        .pid;
    let old_ips = before.running_ips();
    let name = format!("{SERVICE}.service.torc");

    faults_net::freeze(pid, true).unwrap();
    let frozen_at = Instant::now();
    // The names change while it is frozen: the group stops.
    client.stop_group(&SERVICE.parse().unwrap()).await.unwrap();
    figures.acknowledged = 1;
    wait_for_none_running(&rack).await;
    tokio::time::sleep(frozen_for.saturating_sub(frozen_at.elapsed())).await;
    let polls_frozen = proxy.count();

    faults_net::freeze(pid, false).unwrap();
    let resumed_at = Instant::now();
    let mut stale = 0;
    // Fresh once it answers (it names the switch) and no longer names the stopped instances.
    let deadline = resumed_at + WITHIN;
    loop {
        let answer = dig_in_rack(&rack, &name);
        let answering = !dig_in_rack(&rack, "wedge.homer.ave").is_empty();
        stale += answer.iter().filter(|ip| old_ips.contains(ip)).count() as u64;
        if answering && answer.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "dns still answers {answer:?} for {name} {WITHIN:?} after it resumed\n{}",
            rack.logs_hint()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    figures.recovery = Some(resumed_at.elapsed());
    let polls_at_fresh = proxy.count();
    // Then it waits on its long poll: a few polls, not a loop.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let polls_after = proxy.count() - polls_frozen;
    figures.stale_dns = Some(stale);
    println!(
        "dns polls of the controller: {polls_frozen} before the resume, {} from the resume to \
         fresh names, {polls_after} in the 3 s after the resume and fresh names",
        polls_at_fresh - polls_frozen
    );
    assert!(
        polls_frozen > 0,
        "the proxy saw no poll: is the dns behind it?"
    );
    assert!(polls_after <= 5, "{polls_after} polls after the resume");
    // The same process serves on: it was not restarted.
    assert!(pid_alive(pid));
    let now = task_processes(&rack);
    assert!(now.iter().any(|p| p.pid == pid), "{now:?}");
    figures.check();
}

/// Waits until no instance of the service runs (the controller's word).
async fn wait_for_none_running(rack: &torc_test_utils::LocalRack) {
    torc_test_utils::wait_for("the group to stop", WITHIN, || async {
        let l = look(rack, SERVICE, false).await.ok()?;
        (l.running_ips().is_empty()
            && l.processes.iter().all(|p| {
                !l.tasks
                    .iter()
                    .any(|t| t.id.as_str() == p.task && t.name.as_str().starts_with(SERVICE))
            }))
        .then_some(())
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_past_the_heartbeat_timeouts() {
    let node_timeout = 3;
    // Past the node timeout and past an agent's report timeout (5 s).
    let frozen_for = Duration::from_secs(scale(8, 30) as u64);
    let instances = scale(4, 24);
    let Some(rack) = rack(2, instances, node_timeout).await else {
        return;
    };
    let before = settled(&rack, instances, "the rack to settle").await;
    let mut figures = Figures::new(format!(
        "freeze (SIGSTOP) the controller {} s (node timeout {node_timeout} s)",
        frozen_for.as_secs()
    ));
    figures.acknowledged = instances as u64;
    let old_ips = before.running_ips();
    let name = format!("{SERVICE}.service.torc");

    rack.freeze_controller("wedge", true).unwrap();
    let frozen_at = Instant::now();
    let mut stale = 0;
    // The agents and tasks carry on, and DNS keeps naming them.
    while frozen_at.elapsed() < frozen_for {
        let now = task_processes(&rack);
        for p in &before.processes {
            assert!(
                now.contains(p),
                "{p:?} ended while the controller was frozen"
            );
        }
        stale += (dig_in_rack(&rack, &name).iter())
            .filter(|ip| !old_ips.contains(ip))
            .count() as u64;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    rack.freeze_controller("wedge", false).unwrap();
    let resumed_at = Instant::now();
    let resumed_wall = torc_types::now_millis();
    let mut seen = BTreeSet::new();
    let after = watch_until(
        &rack,
        "every node to be heard again, the rack consistent",
        &mut stale,
        &mut seen,
        |l| {
            l.nodes.iter().all(|n| n.last_seen >= resumed_wall)
                && l.inconsistency(instances).is_none()
        },
    )
    .await;
    figures.recovery = Some(resumed_at.elapsed());
    let settle = Instant::now() + Duration::from_secs(2);
    let mut last = after.clone();
    while Instant::now() < settle {
        last = look(&rack, SERVICE, true).await.unwrap();
        stale += last.stale_answers();
        assert_eq!(last.inconsistency(instances), None, "after recovery");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    figures.stale_dns = Some(stale);
    let replaced: Vec<String> = (last.instances.iter())
        .filter(|s| before.instances.iter().all(|b| b.task != s.task))
        .map(|s| s.name.to_string())
        .collect();
    figures.lost = replaced.len() as u64;
    figures.duplicated = last.duplicated().len() as u64;
    let lost: Vec<_> = (last.tasks.iter())
        .filter(|t| t.state == TaskState::Lost)
        .map(|t| (t.name.to_string(), t.message.clone()))
        .collect();
    // Shown before the checks, so that a failing run says what it measured.
    eprintln!("before the checks: {}", figures.row());
    assert!(
        lost.is_empty(),
        "tasks lost: {lost:?}\n{}",
        rack.logs_hint()
    );
    assert_eq!(last.processes, before.processes, "the same processes run");
    figures.check();
}

//! The controller's wall clock stepped forward and back while agents run tasks: a rack of one
//! controller, and a highly available pair on etcd (`--store etcd`), every controller under
//! libfaketime ([`FakeClock`]).
//!
//! Only `CLOCK_REALTIME` is stepped, as NTP or an operator's `date -s` steps a host's clock;
//! the monotonic and boot clocks keep counting (`FAKETIME_DONT_FAKE_MONOTONIC=1`). Faking the
//! monotonic clock too is not a case the world has: no host's monotonic clock jumps.
//!
//! After each step, for a window: no node goes inactive and no node registers again (an agent
//! that lost its session would), every task runs on under the shim it had (none lost,
//! restarted or started twice), agents log no warnings, the controller uses no more CPU than
//! before the step (no storm of requests), a token with a 30 minute TTL still works (no mass
//! expiry), and with two controllers the leader keeps its lease (same leader, same epoch,
//! acting throughout).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use torc_api::{RackEvent, TaskFilter};
use torc_test_utils::faults_load::{FakeClock, cpu_time, shims_by_task, sleeper};
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::{TaskId, TaskState};

use super::TORC;
use super::report::{Figures, long};

/// Tasks running through the steps.
const TASKS: usize = 8;

/// How long each step is watched: past the node timeout (10 s) in the long variant; in CI,
/// several heartbeats and reconciler steps.
fn window() -> Duration {
    if long() {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(5)
    }
}

/// The seconds since the epoch in an HTTP `Date` header (`Sun, 06 Dec 2026 20:11:18 GMT`).
fn http_date(date: &str) -> Option<i64> {
    let mut w = date.split_whitespace().skip(1);
    let day: i64 = w.next()?.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(*m) == w.clone().next())? as i64
        + 1;
    w.next();
    let year: i64 = w.next()?.parse().ok()?;
    let hms: Vec<i64> = w
        .next()?
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hms.first()? * 3600 + hms.get(1)? * 60 + hms.get(2)?)
}

/// The controller `name`'s wall clock, as its HTTP server's `Date` header gives it (the
/// server reads the system clock itself, whatever torc's own clock does).
async fn controller_clock(rack: &LocalRack, name: &str) -> Option<i64> {
    let resp = rack
        .http_admin()
        .get(format!("{}/api/v1/status", rack.controller_url(name)))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    http_date(resp.headers().get("date")?.to_str().ok()?)
}

fn true_now() -> i64 {
    (torc_types::now_millis() / 1000) as i64
}

/// What runs, to compare after a step.
struct Before {
    shims: BTreeMap<String, Vec<u32>>,
    agents: Vec<Option<u32>>,
    events: u64,
    logs: BTreeMap<String, usize>,
}

fn agent_names(rack: &LocalRack) -> Vec<String> {
    rack.nodes.keys().cloned().collect()
}

fn agent_logs(rack: &LocalRack) -> BTreeMap<String, String> {
    agent_names(rack)
        .into_iter()
        .map(|n| {
            let path = rack.dir.path().join(format!("agent-{n}.log"));
            (n, std::fs::read_to_string(path).unwrap_or_default())
        })
        .collect()
}

async fn events_after(rack: &LocalRack, after: u64) -> Vec<RackEvent> {
    rack.http_admin()
        .get(format!("{}/api/v1/events?after={after}", rack.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn snapshot(rack: &LocalRack) -> Before {
    let events = events_after(rack, 0).await;
    Before {
        shims: shims_by_task(rack.dir.path()),
        agents: agent_names(rack)
            .iter()
            .map(|n| rack.agent_pid(n))
            .collect(),
        events: events.last().map_or(0, |e| e.seq),
        logs: agent_logs(rack)
            .into_iter()
            .map(|(n, text)| (n, text.len()))
            .collect(),
    }
}

/// The controllers' CPU time so far, together.
fn controllers_cpu(rack: &LocalRack) -> Duration {
    rack.controller_names
        .iter()
        .filter_map(|n| rack.controller_pid_of(n).and_then(cpu_time))
        .sum()
}

/// What a window after a step saw going wrong.
#[derive(Default, Debug)]
struct Trouble {
    inactive: BTreeSet<String>,
    not_running: BTreeSet<String>,
    leadership: Vec<String>,
}

/// A rack under test: its controllers on a clock of their own, `TASKS` tasks running, a token
/// with a 30 minute TTL, the leader and epoch that must hold throughout (two controllers), and
/// the CPU its controllers take in a quiet window.
struct Subject {
    rack: LocalRack,
    clock: FakeClock,
    _clock_dir: tempfile::TempDir,
    tasks: Vec<TaskId>,
    token: String,
    leader: Option<(String, u64)>,
    quiet_cpu: Duration,
}

impl Subject {
    async fn start(controllers: usize) -> Subject {
        let clock_dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new(clock_dir.path()).unwrap();
        let rack = LocalRack::start(
            TORC,
            RackOptions {
                compute_nodes: 2,
                controllers,
                controller_env: clock.env(),
                ..RackOptions::default()
            },
        )
        .await
        .unwrap();
        let leader = rack.wait_leader(&[]).await.unwrap();
        let epoch = rack.controller_status(&leader).await.unwrap().epoch;
        let client = rack.client();
        let mut tasks = Vec::new();
        for i in 0..TASKS {
            let spec = sleeper(&format!("steady-{i}"));
            tasks.push(client.launch(&spec).await.unwrap().id);
        }
        for id in &tasks {
            torc_test_utils::wait_running(&client, id, Duration::from_secs(30))
                .await
                .unwrap();
        }
        let token = client
            .create_token(&torc_api::TokenRequest {
                role: torc_api::TokenRole::Viewer,
                name: "half an hour".into(),
                framework: None,
                ttl_seconds: Some(1800),
            })
            .await
            .unwrap()
            .token;
        // The CPU the controllers take in a window when nothing happens.
        let cpu0 = controllers_cpu(&rack);
        tokio::time::sleep(window()).await;
        let quiet_cpu = controllers_cpu(&rack) - cpu0;
        Subject {
            leader: (controllers > 1).then(|| (leader, epoch.unwrap())),
            rack,
            clock,
            _clock_dir: clock_dir,
            tasks,
            token,
            quiet_cpu,
        }
    }
}

/// Steps the clock to `offset` seconds from the true time, watches the rack for a window, and
/// checks it.
async fn step(subject: &Subject, offset: i64, fault: &str) {
    let Subject {
        rack,
        clock,
        tasks,
        token,
        leader,
        quiet_cpu,
        ..
    } = subject;
    let quiet_cpu = *quiet_cpu;
    let before = snapshot(rack).await;
    clock.set_offset(offset).unwrap();
    let stepped = Instant::now();
    if offset > 0 {
        // The step shows in the `Date` header of every controller's server, which reads the
        // system clock itself: libfaketime is in effect. (A step back does not show there:
        // hyper keeps its last `Date` until the clock passes it again.)
        for name in &rack.controller_names {
            wait_for(
                &format!("controller {name}'s clock to show the step"),
                Duration::from_secs(15),
                || async {
                    let at = controller_clock(rack, name).await?;
                    ((at - (true_now() + offset)).abs() <= 3).then_some(())
                },
            )
            .await
            .unwrap();
        }
    }
    let cpu1 = controllers_cpu(rack);
    let client = rack.client();
    let mut trouble = Trouble::default();
    let until = Instant::now() + window();
    while Instant::now() < until {
        if let Ok(nodes) = client.nodes().await {
            for n in nodes.iter().filter(|n| !n.active) {
                trouble.inactive.insert(n.name.to_string());
            }
        }
        if let Ok(all) = client.tasks(&TaskFilter::default()).await {
            for t in all.iter().filter(|t| tasks.contains(&t.id)) {
                if t.state != TaskState::Running {
                    trouble.not_running.insert(t.id.to_string());
                }
            }
        }
        if let Some((name, epoch)) = leader {
            match rack.controller_status(name).await {
                Ok(s) if s.acting && s.epoch == Some(*epoch) => {}
                Ok(s) => trouble.leadership.push(format!(
                    "{name}: acting {} epoch {:?} {:?}",
                    s.acting, s.epoch, s.why_not
                )),
                Err(e) => trouble.leadership.push(format!("{name}: {e}")),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let window_cpu = controllers_cpu(rack) - cpu1;

    let after = snapshot(rack).await;
    let events = events_after(rack, before.events).await;
    let node_events: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e.kind, torc_api::EventKind::Node))
        .map(|e| e.message.as_str())
        .collect();
    let warnings: Vec<String> = agent_logs(rack)
        .into_iter()
        .flat_map(|(n, text)| {
            let from = before.logs.get(&n).copied().unwrap_or(0).min(text.len());
            text[from..]
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .map(|l| format!("{n}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    let token_works = rack
        .client_with(Some(token.clone()))
        .nodes()
        .await
        .map_err(|e| e.to_string());

    let mut duplicated = 0u64;
    for id in tasks {
        let now = after.shims.get(id.as_str());
        if now.is_none_or(|p| p.is_empty()) || now != before.shims.get(id.as_str()) {
            println!(
                "task {id}: shims {:?} before the step, {now:?} after",
                before.shims.get(id.as_str())
            );
            trouble.not_running.insert(id.to_string());
        }
        duplicated += now.map_or(0, |p| p.len().saturating_sub(1)) as u64;
    }
    println!(
        "{fault}: watched for {:.1} s after the step; controllers' CPU {:?} in the window, {:?} before it; \
         node events {node_events:?}; agents' warnings {warnings:?}; {trouble:?}",
        stepped.elapsed().as_secs_f64(),
        window_cpu,
        quiet_cpu
    );
    let mut figures = Figures::new(fault);
    figures.acknowledged = tasks.len() as u64;
    figures.lost = trouble.not_running.len() as u64;
    figures.duplicated = duplicated;
    figures.check();

    assert!(
        trouble.inactive.is_empty(),
        "{fault}: nodes went inactive: {trouble:?}"
    );
    assert!(
        trouble.leadership.is_empty(),
        "{fault}: the lease was lost: {trouble:?}"
    );
    assert!(
        node_events.is_empty(),
        "{fault}: node events {node_events:?}"
    );
    assert_eq!(after.agents, before.agents, "{fault}: an agent restarted");
    assert!(warnings.is_empty(), "{fault}: agents warned: {warnings:?}");
    assert!(
        token_works.is_ok(),
        "{fault}: a 30 minute token expired: {token_works:?}"
    );
    // A storm of requests shows as CPU: allow the quiet window's several times over, and
    // some slack for a loaded machine.
    assert!(
        window_cpu <= quiet_cpu * 4 + Duration::from_millis(500),
        "{fault}: the controllers used {window_cpu:?} of CPU after the step, {quiet_cpu:?} before"
    );
}

/// The steps every rack goes through: forward an hour, back to the true time, and back an
/// hour behind it.
const STEPS: [(i64, &str); 3] = [
    (3600, "forward 1 h"),
    (0, "back 1 h, to the true time"),
    (-3600, "back 1 h, behind the true time"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controllers_clock_steps_forward_and_back() {
    let mut subject = Subject::start(1).await;
    for (offset, what) in STEPS {
        step(&subject, offset, &format!("controller clock {what}")).await;
    }

    // A node whose agent dies as the clock steps back (its last report stamped an hour ahead
    // of the new time) still goes inactive after the node timeout, not an hour later.
    subject.rack.kill_agent("bladerunner2");
    subject.clock.set_offset(-7200).unwrap();
    let died = Instant::now();
    (subject.rack)
        .wait_active(&["bladerunner2".to_string()], false)
        .await
        .unwrap();
    println!(
        "a node that died at a step back went inactive after {:.1} s (timeout 10 s)",
        died.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_controllers_on_etcd_keep_their_lease_through_clock_steps() {
    let subject = Subject::start(2).await;
    for (offset, what) in STEPS {
        step(&subject, offset, &format!("HA controllers' clocks {what}")).await;
    }
}

//! A few of the rack's rules as code; most are data-driven cases (`rules.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use torc_api::{RegisterRequest, RuntimeInfo, StatusReport, TaskReport};
use torc_types::{FrameworkName, NodeName, Resources, TaskId, TaskSpec, TaskState};

use super::{NodeError, Rack, RackError, TaskError};
use crate::settings::{ConfiguredNode, RackSettings, TASKS_PER_STEP};
use crate::store::etcd::TXN_OPS;
use crate::store::etcd::tests::RealEtcd;
use crate::store::{Loaded, Store, Write};

fn settings(open_join: bool) -> RackSettings {
    let node = |name: &str, ip: &str, t: &str, f: &str| ConfiguredNode {
        name: NodeName::new(name).unwrap(),
        ip: ip.parse().unwrap(),
        external_ip: None,
        management_ip: None,
        port: 0,
        node_type: t.parse().unwrap(),
        node_function: Some(f.into()),
        resources: None,
        port_range: None,
        task_block: None,
        endpoint: None,
    };
    let mut s = RackSettings::with_nodes(
        "test",
        vec![
            node("wedge", "10.0.0.20", "master", "controller"),
            node("b1", "10.0.0.21", "slave", "compute"),
            node("b2", "10.0.0.22", "slave", "compute"),
        ],
    );
    s.config_origin = "rack.yaml".into();
    s.open_join = open_join;
    s.node_timeout = Duration::from_secs(10);
    s
}

fn empty() -> Loaded {
    Loaded::default()
}

fn register_request(name: &str, ip: &str) -> RegisterRequest {
    RegisterRequest {
        node: NodeName::new(name).unwrap(),
        ip: ip.parse().unwrap(),
        agent_url: format!("http://{ip}:5051"),
        node_type: None,
        node_function: None,
        resources: Resources::new(2.0, 1024.0, 1000.0),
        port_range: "31000-31009".parse().unwrap(),
        attributes: BTreeMap::new(),
        runtime: RuntimeInfo::default(),
        tasks: vec![],
        public_key: None,
    }
}

fn register(rack: &mut Rack, name: &str, ip: &str, now: u64) -> Result<Duration, RackError> {
    rack.register(register_request(name, ip), now)
}

fn spec(name: &str, mem: f64) -> TaskSpec {
    let mut s = TaskSpec::new(name.parse().unwrap(), "sleep");
    s.resources = Resources::new(0.1, mem, 0.0);
    s
}

fn builtin() -> FrameworkName {
    FrameworkName::new("torc").unwrap()
}

fn report(id: &TaskId, state: TaskState, exit_code: Option<i32>) -> StatusReport {
    StatusReport {
        tasks: vec![TaskReport {
            id: id.clone(),
            state,
            exit_code,
            message: None,
            at: 0,
        }],
        full: false,
        disk: None,
    }
}

#[test]
fn unknown_nodes_are_refused_with_the_reason() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    let err = register(&mut rack, "stranger", "10.0.0.99", 1).unwrap_err();
    assert!(
        matches!(&err, RackError::Node(NodeError::NotConfigured { node, origin })
            if node.as_str() == "stranger" && origin == "rack.yaml"),
        "{err}"
    );
    assert_eq!(err.status(), axum::http::StatusCode::FORBIDDEN);
    let err = register(&mut rack, "b1", "10.0.0.99", 1).unwrap_err();
    let configured: std::net::IpAddr = "10.0.0.21".parse().unwrap();
    assert!(
        matches!(&err, RackError::Node(NodeError::WrongAddress { node, configured: c, .. })
            if node.as_str() == "b1" && *c == configured),
        "{err}"
    );
    let mut open = Rack::for_tests(settings(true), empty(), 0, 1);
    register(&mut open, "stranger", "10.0.0.99", 1).unwrap();
    assert_eq!(open.node_views().len(), 4);
}

#[test]
fn task_lifecycle_and_desired_generations() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1).unwrap();
    let g0 = rack.take_changes().wake;
    assert_eq!(g0.len(), 1);
    let id = rack.launch(spec("web", 100.0), builtin(), 2).unwrap();
    let t = rack.task(&id).unwrap();
    assert_eq!(t.state, TaskState::Staging);
    assert_eq!(t.node.as_ref().unwrap().as_str(), "b1");
    let wake = rack.take_changes().wake;
    assert!(wake[0].1 > g0[0].1, "generation grows");
    let doc = rack.desired(&"b1".parse().unwrap()).unwrap();
    assert!(doc.tasks[0].launch);

    rack.report(
        &"b1".parse().unwrap(),
        report(&id, TaskState::Running, None),
        3,
    )
    .unwrap();
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Running);
    assert!(!rack.desired(&"b1".parse().unwrap()).unwrap().tasks[0].launch);

    rack.kill(&id, 4).unwrap();
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Killing);
    assert!(
        rack.desired(&"b1".parse().unwrap())
            .unwrap()
            .tasks
            .is_empty()
    );
    rack.report(
        &"b1".parse().unwrap(),
        report(&id, TaskState::Failed, Some(143)),
        5,
    )
    .unwrap();
    let t = rack.task(&id).unwrap();
    assert_eq!(
        t.state,
        TaskState::Killed,
        "a requested kill ends as killed"
    );
    let states: Vec<_> = t.history.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [
            TaskState::Pending,
            TaskState::Staging,
            TaskState::Running,
            TaskState::Killing,
            TaskState::Killed
        ]
    );
    // Terminal is final.
    rack.report(
        &"b1".parse().unwrap(),
        report(&id, TaskState::Running, None),
        6,
    )
    .unwrap();
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Killed);
    assert!(matches!(
        rack.kill(&id, 7),
        Err(RackError::Task(TaskError::Ended {
            state: TaskState::Killed,
            ..
        }))
    ));
}

#[test]
fn exit_codes_and_pending_reasons() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1).unwrap();
    let id = rack.launch(spec("job", 1.0), builtin(), 2).unwrap();
    let b1: NodeName = "b1".parse().unwrap();
    rack.report(&b1, report(&id, TaskState::Running, None), 3)
        .unwrap();
    rack.report(&b1, report(&id, TaskState::Failed, Some(1)), 4)
        .unwrap();
    let t = rack.task(&id).unwrap();
    assert_eq!((t.state, t.exit_code), (TaskState::Failed, Some(1)));

    let big = rack.launch(spec("big", 1e9), builtin(), 5).unwrap();
    let t = rack.task(&big).unwrap();
    assert_eq!(t.state, TaskState::Pending);
    assert!(t.message.unwrap().contains("1000000000 MiB memory"));
    // When a node joins, pending tasks are tried again (and still do not fit).
    register(&mut rack, "b2", "10.0.0.22", 6).unwrap();
    assert_eq!(rack.task(&big).unwrap().state, TaskState::Pending);
}

#[test]
fn silent_nodes_go_inactive_and_lose_their_tasks() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1_000).unwrap();
    let id = rack.launch(spec("web", 1.0), builtin(), 1_000).unwrap();
    let b1: NodeName = "b1".parse().unwrap();
    rack.report(&b1, report(&id, TaskState::Running, None), 1_001)
        .unwrap();
    rack.tick(5_000);
    assert!(rack.node_view(&b1).unwrap().active);
    rack.tick(11_002);
    assert!(!rack.node_view(&b1).unwrap().active);
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Lost);
    // It must register again before its reports count.
    assert!(matches!(
        rack.report(&b1, report(&id, TaskState::Running, None), 11_003),
        Err(RackError::Node(NodeError::Inactive(n))) if n == b1
    ));
    register(&mut rack, "b1", "10.0.0.21", 11_004).unwrap();
    assert!(rack.node_view(&b1).unwrap().active);
}

#[test]
fn a_stall_of_the_controller_is_not_the_nodes_silence() {
    // The node timeout is 10 s. b1 reports at 2 s, b2 last spoke at 1 s; the controller then
    // does not run from 4 s to 30 s (frozen): neither node is lost when it resumes.
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1_000).unwrap();
    register(&mut rack, "b2", "10.0.0.22", 1_000).unwrap();
    let id = rack.launch(spec("web", 1.0), builtin(), 1_500).unwrap();
    let (b1, b2): (NodeName, NodeName) = ("b1".parse().unwrap(), "b2".parse().unwrap());
    let on = rack.task(&id).unwrap().node.unwrap();
    rack.report(&on, report(&id, TaskState::Running, None), 2_000)
        .unwrap();
    let other = if on == b1 { b2.clone() } else { b1.clone() };
    rack.tick(4_000);
    rack.excuse_stall(26_000, 30_000);
    rack.tick(30_000);
    assert!(rack.node_view(&b1).unwrap().active && rack.node_view(&b2).unwrap().active);
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Running);
    // The silence before the stall still counts: the other node (silent since 1 s, so since
    // 27 s once excused) goes at 37 s, the task's node (2 s, so 28 s) a second later.
    rack.tick(37_001);
    assert!(!rack.node_view(&other).unwrap().active);
    assert!(rack.node_view(&on).unwrap().active);
    rack.tick(38_001);
    assert!(!rack.node_view(&on).unwrap().active);
    assert_eq!(rack.task(&id).unwrap().state, TaskState::Lost);
    // A node's last word is never moved past now.
    register(&mut rack, "b1", "10.0.0.21", 40_000).unwrap();
    rack.excuse_stall(1_000_000, 41_000);
    rack.tick(51_001);
    assert!(!rack.node_view(&b1).unwrap().active);
}

#[test]
fn a_report_that_arrived_counts_before_it_is_processed() {
    // The node timeout is 10 s. b1 registered at 1 s; its next report arrived at 9 s but waited
    // behind other changes (each waiting for its fsync) past 11 s: the step at 12 s, which
    // gets the rack's lock first, must not lose the node. The silence after it still counts.
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1_000).unwrap();
    let b1: NodeName = "b1".parse().unwrap();
    rack.heard([(b1.clone(), 9_000)]);
    rack.tick(12_000);
    assert!(rack.node_view(&b1).unwrap().active);
    // An older arrival never moves its last word back.
    rack.heard([(b1.clone(), 2_000)]);
    rack.tick(19_000);
    assert!(rack.node_view(&b1).unwrap().active);
    rack.tick(19_001);
    assert!(!rack.node_view(&b1).unwrap().active);
    // An inactive node is not revived by a report that arrived: it must register again.
    rack.heard([(b1.clone(), 19_500)]);
    assert!(!rack.node_view(&b1).unwrap().active);
}

#[test]
fn restart_from_the_store_keeps_tasks_and_generations() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    register(&mut rack, "b1", "10.0.0.21", 1).unwrap();
    let id = rack.launch(spec("web", 1.0), builtin(), 2).unwrap();
    rack.report(
        &"b1".parse().unwrap(),
        report(&id, TaskState::Running, None),
        3,
    )
    .unwrap();
    let changes = rack.take_changes();
    let generation = rack.desired_generation(&"b1".parse().unwrap()).unwrap();
    // Replay the writes into a "store" and rebuild.
    let mut loaded = empty();
    for w in changes.writes {
        match w {
            Write::Put(table, k, v) => loaded
                .records
                .entry(table)
                .or_default()
                .push((k, serde_json::from_slice(&v).unwrap())),
            Write::Meta(k, v) => loaded.meta.push((k.to_string(), v)),
            Write::Delete(..) => {}
        }
    }
    let rack2 = Rack::for_tests(settings(false), loaded, 100, 2);
    let t = rack2.task(&id).unwrap();
    assert_eq!(t.state, TaskState::Running);
    let b1 = rack2.node_view(&"b1".parse().unwrap()).unwrap();
    assert!(b1.active);
    assert_eq!(b1.last_seen, 100, "a grace period starts at the restart");
    assert_eq!(
        rack2.desired_generation(&"b1".parse().unwrap()),
        Some(generation)
    );
}

/// A rack whose group `big` has `instances` instances, restarted a second after they end.
fn big_group(instances: usize) -> RackSettings {
    let yaml = format!(
        "stateclean:\n  timeout_in_seconds: 10\n  restart_delay_in_seconds: 1\n\
         nodes:\n  - name: b1\n    ip: 10.0.0.21\n    type: slave\n\
         api:\n  service-groups:\n    - name: big\n      services:\n\
         \x20       - name: work\n          command: work\n          number_of_instances: {instances}\n"
    );
    let config = torc_config::RackConfig::parse(&yaml, "rack.yaml").unwrap();
    RackSettings::from_config(&config, "rack.yaml")
}

/// Commits a change through `store` in one Txn, as the controller does, and says how many
/// writes it had.
fn commit(rack: &mut Rack, store: &dyn Store) -> usize {
    let changes = rack.take_changes();
    store
        .commit(store.epoch(), &changes.writes)
        .expect("the change is one Txn the store takes");
    changes.writes.len()
}

/// A node with far more live tasks than the bound stops reporting: each tick loses at most
/// `TASKS_PER_STEP` of them, and the restarts of their instances share that budget; every
/// tick's change is one Txn a real etcd takes, and the node may register again only once all are lost. A restart from
/// the store in between goes on where the last life stopped.
#[test]
fn a_silent_node_with_thousands_of_tasks_is_lost_in_bounded_steps_on_etcd() {
    let etcd = RealEtcd::start();
    let mut options = etcd.options();
    options.commit_timeout = Duration::from_secs(30);
    let store = etcd.open_with(options).unwrap();
    let total = 2 * TASKS_PER_STEP + 300;
    let mut rack = Rack::for_tests(big_group(total), empty(), 0, 1);
    let mut req = register_request("b1", "10.0.0.21");
    req.resources = Resources::new(1e4, 1e7, 1e7);
    rack.register(req.clone(), 1_000).unwrap();
    rack.start_group(&"big".parse().unwrap(), 1_000).unwrap();
    // The group's start creates every instance's record but starts at most the bound of
    // them; the ticks after start the rest.
    let mut steps = 0;
    loop {
        let writes = commit(&mut rack, &store);
        assert!(writes < TXN_OPS, "{writes} writes in one step");
        steps += 1;
        if rack.services().iter().all(|s| s.task.is_some()) {
            break;
        }
        rack.tick(1_000);
    }
    assert_eq!(steps, total.div_ceil(TASKS_PER_STEP));
    let b1: NodeName = "b1".parse().unwrap();
    let live_on_b1 = |rack: &Rack| {
        rack.tasks(&Default::default())
            .iter()
            .filter(|t| t.node.as_ref() == Some(&b1) && !t.state.is_terminal())
            .count()
    };
    assert_eq!(live_on_b1(&rack), total);

    let lost = |rack: &Rack| {
        rack.tasks(&Default::default())
            .iter()
            .filter(|t| t.state == TaskState::Lost)
            .count()
    };
    rack.tick(11_001);
    let writes = commit(&mut rack, &store);
    assert!(writes < TXN_OPS, "{writes} writes in one tick");
    assert!(
        writes > 2 * TASKS_PER_STEP,
        "each lost task writes its instance's record too: {writes} writes"
    );
    assert!(!rack.node_view(&b1).unwrap().active);
    assert_eq!(lost(&rack), TASKS_PER_STEP);
    assert_eq!(live_on_b1(&rack), total - TASKS_PER_STEP);
    let err = rack.register(req.clone(), 11_002).unwrap_err();
    assert!(
        matches!(&err, RackError::Node(NodeError::StillLosing { node, left })
            if *node == b1 && *left == total - TASKS_PER_STEP),
        "{err}"
    );
    assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);

    // A new controller life from the store: the load takes the next step.
    let mut rack = Rack::for_tests(big_group(total), store.load().unwrap(), 12_000, 2);
    let writes = commit(&mut rack, &store);
    assert!(writes < TXN_OPS, "{writes} writes at the load");
    assert_eq!(lost(&rack), 2 * TASKS_PER_STEP);

    rack.tick(12_500);
    let writes = commit(&mut rack, &store);
    assert!(writes < TXN_OPS, "{writes} writes in the last tick");
    assert_eq!(live_on_b1(&rack), 0);
    assert_eq!(lost(&rack), total);
    rack.tick(13_000);
    assert_eq!(lost(&rack), total, "nothing is lost twice");
    commit(&mut rack, &store);
    rack.register(req, 13_500).unwrap();
    commit(&mut rack, &store);

    // What the store holds is what the rack says.
    let reloaded = Rack::for_tests(big_group(total), store.load().unwrap(), 14_000, 3);
    assert_eq!(lost(&reloaded), total);
    assert!(reloaded.node_view(&b1).unwrap().active);
}

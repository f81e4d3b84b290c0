//! A few of the rack's rules as code; most are data-driven cases (`rules.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use torc_api::{RegisterRequest, RuntimeInfo, StatusReport, TaskReport};
use torc_types::{FrameworkName, NodeName, Resources, TaskId, TaskSpec, TaskState};

use super::{Rack, RackError};
use crate::settings::{ConfiguredNode, RackSettings};
use crate::store::{Loaded, Write};

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

fn register(rack: &mut Rack, name: &str, ip: &str, now: u64) -> Result<Duration, RackError> {
    rack.register(
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
        },
        now,
    )
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
    }
}

#[test]
fn unknown_nodes_are_refused_with_the_reason() {
    let mut rack = Rack::for_tests(settings(false), empty(), 0, 1);
    let err = register(&mut rack, "stranger", "10.0.0.99", 1).unwrap_err();
    assert!(
        matches!(&err, RackError::Forbidden(m) if m.contains("not in the rack config (rack.yaml)")),
        "{err}"
    );
    let err = register(&mut rack, "b1", "10.0.0.99", 1).unwrap_err();
    assert!(
        err.to_string().contains("has ip 10.0.0.21 in rack.yaml"),
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
    assert!(matches!(rack.kill(&id, 7), Err(RackError::Conflict(_))));
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
        Err(RackError::Conflict(_))
    ));
    register(&mut rack, "b1", "10.0.0.21", 11_004).unwrap();
    assert!(rack.node_view(&b1).unwrap().active);
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
            Write::Put(table, _, v) => loaded
                .records
                .entry(table)
                .or_default()
                .push(serde_json::from_slice(&v).unwrap()),
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

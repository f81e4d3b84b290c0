//! Placement decisions per second as the controller makes them: each launch validates the
//! task, places it with the task table's ledger of 40 nodes already running 1,000 tasks, and
//! records the transition (everything but the disk commit, which the rack benchmark covers).
//! Run with `cargo bench -p torc-controller`. Prints figures; asserts nothing about speed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use torc_api::{RegisterRequest, RuntimeInfo, StatusReport, TaskReport};
use torc_controller::{ConfiguredNode, Rack, RackSettings};
use torc_types::{FrameworkName, NodeName, NodeType, Resources, TaskSpec, TaskState};

fn main() {
    let nodes: Vec<ConfiguredNode> = (0..40)
        .map(|i| ConfiguredNode {
            name: NodeName::new(format!("node{i}")).unwrap(),
            ip: format!("10.0.{}.{}", i / 200, 1 + i % 200).parse().unwrap(),
            external_ip: None,
            management_ip: None,
            port: 0,
            node_type: NodeType::Slave,
            node_function: Some("compute".into()),
            resources: Some(Resources::new(64.0, 256_000.0, 1e6)),
            port_range: Some("31000-32999".parse().unwrap()),
            task_block: None,
            endpoint: None,
        })
        .collect();
    let mut settings = RackSettings::with_nodes("bench", nodes.clone());
    settings.node_timeout = Duration::from_secs(3600);
    let mut rack = Rack::fresh(settings, 0);
    for n in &nodes {
        rack.register(
            RegisterRequest {
                node: n.name.clone(),
                ip: n.ip,
                agent_url: "http://x".into(),
                node_type: None,
                node_function: None,
                resources: Resources::new(64.0, 256_000.0, 1e6),
                port_range: "31000-32999".parse().unwrap(),
                attributes: BTreeMap::new(),
                runtime: RuntimeInfo::default(),
                tasks: vec![],
                public_key: None,
            },
            1,
        )
        .unwrap();
    }
    let framework = FrameworkName::new("torc").unwrap();
    // Not "bench": that is the rack's own name, which tasks may not take.
    let mut spec = TaskSpec::new("load".parse().unwrap(), "sleep");
    spec.resources = Resources::new(0.01, 8.0, 0.0);
    spec.ports = 1;
    for _ in 0..1000 {
        let id = rack.launch(spec.clone(), framework.clone(), 2).unwrap();
        let node = rack.task(&id).unwrap().node.unwrap();
        let report = StatusReport {
            tasks: vec![TaskReport {
                id,
                state: TaskState::Running,
                exit_code: None,
                message: None,
                at: 3,
            }],
            full: false,
            disk: None,
        };
        rack.report(&node, report, 3).unwrap();
    }
    rack.take_changes();

    let mut rates = Vec::new();
    for _ in 0..5 {
        let n = 2_000;
        let start = Instant::now();
        for _ in 0..n {
            let id = rack.launch(spec.clone(), framework.clone(), 4).unwrap();
            std::hint::black_box(&id);
        }
        rates.push(n as f64 / start.elapsed().as_secs_f64());
        rack.take_changes();
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "controller launch+placement: 40 nodes, 1000+ running tasks: median {:.0} decisions/s (min {:.0}, max {:.0}); target >= 10000/s",
        rates[2], rates[0], rates[4]
    );
}

//! Placement decisions per second: 40 nodes already running 1,000 tasks, placing more.
//! Run with `cargo bench -p torc-scheduler`. Prints figures; asserts nothing about speed.

use std::collections::BTreeSet;
use std::time::Instant;

use torc_scheduler::{Capability, Ledger, NodeState, TaskRequest};
use torc_types::{Constraints, NodeName, NodeType, Resources, TaskId};

fn main() {
    let nodes: Vec<NodeState> = (0..40)
        .map(|i| NodeState {
            name: NodeName::new(format!("node{i}")).unwrap(),
            node_type: NodeType::Slave,
            node_function: if i % 4 == 0 { "storage" } else { "compute" }.into(),
            active: true,
            cordoned: false,
            total: Resources::new(64.0, 256_000.0, 1_000_000.0),
            // 25 running tasks each (1,000 in all).
            allocated: Resources::new(25.0 * 0.5, 25.0 * 512.0, 0.0),
            port_range: "31000-32999".parse().unwrap(),
            used_ports: (31000..31025).collect::<BTreeSet<u16>>(),
            tasks: 25,
            task_block: None,
            rack_network: Capability::Unknown,
            containers: Capability::Unknown,
            used_addresses: BTreeSet::new(),
            next_address: 0,
        })
        .collect();
    let id = TaskId::new("bench.1").unwrap();
    let any = Constraints::default();
    let storage = Constraints {
        node_function: Some("storage".into()),
        ..Default::default()
    };
    let decisions = 20_000;
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let mut ledger = Ledger::new(nodes.clone());
        let start = Instant::now();
        for i in 0..decisions {
            let req = TaskRequest {
                id: &id,
                resources: Resources::new(0.01, 8.0, 0.0),
                ports: 1,
                constraints: if i % 3 == 0 { &storage } else { &any },
                rack_address: false,
                container: None,
            };
            std::hint::black_box(ledger.place(&req).expect("fits"));
        }
        rounds.push(decisions as f64 / start.elapsed().as_secs_f64());
    }
    rounds.sort_by(|a, b| a.total_cmp(b));
    println!(
        "placement: 40 nodes, 1000 running tasks: median {:.0} decisions/s (min {:.0}, max {:.0}); target >= 10000/s",
        rounds[2], rounds[0], rounds[4]
    );
}

//! The routes the switch should hold for the rack network: one `/32` per `network: rack` task
//! that holds its address (staging, running or being killed) on an active node, through that
//! node's address. The network agent on the switch programs them.
//!
//! This builds the content only. The controller numbers snapshots with its epoch and a
//! generation that goes up exactly when the content changes (see `controller`).
//!
//! Invariants: a task on an inactive (lost) node has no route, so the switch withdraws the
//! routes of a node that goes silent; only IPv4 addresses inside the node's task block are
//! routed.

use std::net::IpAddr;

use torc_api::RackRoute;
use torc_types::TaskNetwork;

use super::nodes::NodeTable;
use super::tasks::TaskTable;

/// The rack's routes, sorted by destination.
pub fn routes(nodes: &NodeTable, tasks: &TaskTable) -> Vec<RackRoute> {
    let mut routes: Vec<RackRoute> = (tasks.iter())
        .filter(|t| t.spec.network == TaskNetwork::Rack && t.state.holds_resources())
        .filter_map(|t| {
            let node = nodes.get(t.node.as_ref()?)?;
            let (Some(IpAddr::V4(destination)), IpAddr::V4(next_hop)) = (t.ip, node.ip) else {
                return None;
            };
            let inside = node.task_block.is_some_and(|b| b.contains(destination));
            (node.active && inside).then(|| RackRoute {
                destination,
                next_hop,
                node: node.name.clone(),
                task: t.id.clone(),
                service: t.name.clone(),
            })
        })
        .collect();
    routes.sort();
    routes
}

//! The rack in the original ToRC API's shapes (`GET /nodes`, `/services/running`,
//! `/services/metered`, `/service?id=`), built from the node and task tables, the supervisor's
//! policies and the announced tasks. The routes are `crate::http::compat`.

use torc_api::TaskView;
use torc_api::original::{OriginalNode, OriginalTask};
use torc_types::{BUILTIN_FRAMEWORK, TaskNetwork, TaskState};

use super::announcements::Announcements;
use super::nodes::NodeTable;
use super::supervisor::Supervisor;
use super::tasks::TaskTable;
use crate::settings::RackSettings;

/// `GET /nodes`.
pub fn nodes(nodes: &NodeTable) -> Vec<OriginalNode> {
    nodes
        .iter()
        .map(|n| OriginalNode {
            name: n.name.to_string(),
            ip: n.ip.to_string(),
            external_ip: n.external_ip.map(|i| i.to_string()).unwrap_or_default(),
            management_ip: n.management_ip.map(|i| i.to_string()).unwrap_or_default(),
            node_type: n.node_type.to_string(),
            node_function: n.node_function.clone(),
            active: n.active,
            slave_id: if n.registered {
                n.name.to_string()
            } else {
                String::new()
            },
            port_id: n.port_id,
            last_seen: n.last_seen / 1000,
        })
        .collect()
}

/// One of the rack's own tasks, as the original reported it.
fn task(
    settings: &RackSettings,
    nodes: &NodeTable,
    services: &Supervisor,
    t: &TaskView,
) -> OriginalTask {
    let rec = services.instance_of(t);
    let node = t.node.as_ref().and_then(|n| nodes.get(n));
    let policy = rec.map(|r| &r.policy);
    OriginalTask {
        name: t.name.to_string(),
        controller: if t.framework.as_str() == BUILTIN_FRAMEWORK {
            settings.rack_name.clone()
        } else {
            t.framework.to_string()
        },
        id: t.id.to_string(),
        image: policy.map(|p| p.image.clone()).unwrap_or_default(),
        node_name: t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
        node_type: node.map(|n| n.node_type.to_string()).unwrap_or_default(),
        node_function: node.map(|n| n.node_function.clone()).unwrap_or_default(),
        dependent_service: policy
            .and_then(|p| p.dependent_service.as_ref())
            .map(|d| d.to_string())
            .unwrap_or_default(),
        arguments: policy
            .map(|p| p.arguments.clone())
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| t.spec.args.join(" ")),
        parameters: policy.map(|p| p.parameters.clone()).unwrap_or_default(),
        memory: t.spec.resources.mem_mb,
        cpu: t.spec.resources.cpus,
        volumes: policy.map(|p| p.volumes.clone()).unwrap_or_default(),
        privileged: policy.is_some_and(|p| p.privileged),
        sla: policy.map_or_else(|| "None".to_string(), |p| p.sla.clone()),
        is_metered: t.spec.metered || policy.is_some_and(|p| p.is_metered),
        is_system_service: rec.is_some_and(|r| r.group.is_none()),
        is_job: policy.is_some_and(|p| p.is_job),
        // The original's word for its container network (Calico) is `torc`.
        network_type: match t.spec.network {
            TaskNetwork::Rack => "torc".to_string(),
            TaskNetwork::Node => policy.map_or_else(|| "host".into(), |p| p.network_type.clone()),
        },
        ip: t.ip.map(|i| i.to_string()).unwrap_or_default(),
        slave_id: t.node.as_ref().map(|n| n.to_string()).unwrap_or_default(),
        state: "Running".into(),
        last_update: t.updated_at / 1000,
    }
}

/// `GET /services/running` (`metered_only`: `/services/metered`): own running tasks that are
/// not jobs (or that are metered), and announced ones.
pub fn running(
    settings: &RackSettings,
    nodes: &NodeTable,
    tasks: &TaskTable,
    services: &Supervisor,
    announced: &Announcements,
    metered_only: bool,
) -> Vec<OriginalTask> {
    let own = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .map(|t| task(settings, nodes, services, t))
        .filter(|t| {
            if metered_only {
                t.is_metered
            } else {
                !t.is_job
            }
        });
    let foreign = announced
        .tasks()
        .filter(|t| !metered_only || t.is_metered)
        .filter(|t| metered_only || !t.is_job)
        .cloned();
    own.chain(foreign).collect()
}

/// `GET /service?id=`: the name of the first task whose id starts with `prefix`.
pub fn name_by_id_prefix(
    tasks: &TaskTable,
    announced: &Announcements,
    prefix: &str,
) -> Option<String> {
    if prefix.is_empty() {
        return None;
    }
    tasks
        .iter()
        .find(|t| t.id.as_str().starts_with(prefix))
        .map(|t| t.name.to_string())
        .or_else(|| announced.name_by_id_prefix(prefix))
}

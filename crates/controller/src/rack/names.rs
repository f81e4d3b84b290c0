//! The rack's names for `torc dns`: the nodes under the node domain; under the service domain
//! every running and healthy service instance, framework task and announced task, the
//! `dns-addons`, and the controller itself.
//!
//! This builds the content only (generation 0). The controller numbers snapshots
//! `(epoch, generation)` (see `published`): the generation goes up exactly when the content
//! changes, so a stopped instance disappears with the next snapshot the DNS role long-polls for.
//!
//! Invariants: a service instance with a health check is named only while it passes it; only
//! running tasks with an address are named.

use std::collections::BTreeMap;
use std::net::IpAddr;

use torc_api::dns::{DnsSnapshot, InstanceEntry, NodeEntry, ServiceEntry};
use torc_types::TaskState;

use super::announcements::Announcements;
use super::nodes::NodeTable;
use super::supervisor::Supervisor;
use super::tasks::TaskTable;
use crate::settings::RackSettings;

/// The current names, with generation 0.
pub fn snapshot(
    s: &RackSettings,
    nodes: &NodeTable,
    tasks: &TaskTable,
    services: &Supervisor,
    announced: &Announcements,
) -> DnsSnapshot {
    let node_entries: Vec<NodeEntry> = nodes
        .iter()
        .filter_map(|n| match n.ip {
            IpAddr::V4(ip) => Some(NodeEntry {
                name: n.name.to_string(),
                ip,
            }),
            IpAddr::V6(_) => None,
        })
        .collect();
    let master = nodes.master_ip();
    // Per name: its TTL (the shortest its instances ask for) and its instances.
    let mut names: BTreeMap<String, (u32, Vec<InstanceEntry>)> = BTreeMap::new();
    let mut add = |name: &str, instance: &str, ip: IpAddr, port: u16, ttl: Option<u32>| {
        let ttl = ttl.unwrap_or(s.service_ttl);
        let entry = names.entry(name.to_string()).or_insert((ttl, Vec::new()));
        entry.0 = entry.0.min(ttl);
        entry.1.push(InstanceEntry {
            target: format!("{instance}.{}", s.service_domain),
            ip,
            port,
            healthy: true,
        });
    };
    for t in tasks.iter().filter(|t| t.state == TaskState::Running) {
        let Some(ip) = t.ip else { continue };
        let port = t.ports.first().copied().unwrap_or(0);
        // A drain's replacement is named once it takes over (at most a step later).
        if services.is_replacement(t) {
            continue;
        }
        match services.instance_of(t) {
            Some(rec) => {
                if !rec.passes_health() {
                    continue;
                }
                let ttl = rec.policy.dns_ttl;
                add(t.name.as_str(), t.name.as_str(), ip, port, ttl);
                if rec.service != rec.name {
                    add(rec.service.as_str(), t.name.as_str(), ip, port, ttl);
                }
            }
            None => add(t.name.as_str(), t.name.as_str(), ip, port, None),
        }
    }
    for a in announced.tasks() {
        if let Ok(ip) = a.ip.parse() {
            add(&a.name, &a.name, ip, 0, None);
        }
    }
    for (name, ip) in &s.dns_addons {
        add(name.as_str(), name.as_str(), *ip, 0, None);
    }
    if let (Some(ip), Ok(_)) = (
        s.controller_addr
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .or(master),
        torc_types::ServiceName::new(s.rack_name.clone()),
    ) {
        let port = s.controller_addr.map_or(3000, |a| a.port());
        add(&s.rack_name, &s.rack_name, ip, port, None);
    }
    DnsSnapshot {
        epoch: 0,
        generation: 0,
        node_domain: s.domain.clone(),
        node_ttl: s.node_ttl,
        nameserver_ip: match master {
            Some(IpAddr::V4(ip)) => Some(ip),
            _ => None,
        },
        nodes: node_entries,
        service_domain: s.service_domain.clone(),
        services: names
            .into_iter()
            .map(|(name, (ttl, instances))| ServiceEntry {
                name,
                ttl,
                instances,
            })
            .collect(),
        records: Vec::new(),
    }
}

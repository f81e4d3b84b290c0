//! The rack's names for `torc dns`: the nodes under the node domain, and under the service
//! domain every running and healthy service instance, framework task and announced task, the
//! `dns-addons`, and the controller itself. The controller serves this as a whole
//! generation-numbered snapshot that the DNS role long-polls; the generation goes up exactly
//! when the content changes, so a stopped instance disappears with the next snapshot.

use std::collections::BTreeMap;
use std::net::IpAddr;

use torc_dns::{DnsSnapshot, InstanceEntry, NodeEntry, ServiceEntry};
use torc_types::TaskState;

use crate::rack::Rack;
use crate::services::HealthKind;

/// TTL of service names: short, since instances come and go.
const SERVICE_TTL: u32 = 5;

impl Rack {
    /// The current names, with generation 0 (the controller numbers snapshots).
    pub fn dns_snapshot(&self) -> DnsSnapshot {
        let s = &self.settings;
        let nodes: Vec<NodeEntry> = self
            .nodes
            .values()
            .filter_map(|n| match n.ip {
                IpAddr::V4(ip) => Some(NodeEntry {
                    name: n.name.to_string(),
                    ip,
                }),
                IpAddr::V6(_) => None,
            })
            .collect();
        let master = self
            .nodes
            .values()
            .find(|n| n.node_type == "master")
            .map(|n| n.ip);
        let mut services: BTreeMap<String, Vec<InstanceEntry>> = BTreeMap::new();
        let mut add = |name: &str, instance: &str, ip: IpAddr, port: u16| {
            services
                .entry(name.to_string())
                .or_default()
                .push(InstanceEntry {
                    target: format!("{instance}.{}", s.service_domain),
                    ip,
                    port,
                    healthy: true,
                });
        };
        for t in self
            .tasks
            .values()
            .filter(|t| t.state == TaskState::Running)
        {
            let Some(ip) = t.ip else { continue };
            let port = t.ports.first().copied().unwrap_or(0);
            if let Some(rec) = self
                .services
                .get(&t.name)
                .filter(|r| r.task.as_ref() == Some(&t.id))
            {
                if rec.policy.health.is_some() && rec.health.kind != HealthKind::Healthy {
                    continue;
                }
                add(t.name.as_str(), t.name.as_str(), ip, port);
                if rec.service != rec.name {
                    add(rec.service.as_str(), t.name.as_str(), ip, port);
                }
            } else {
                add(t.name.as_str(), t.name.as_str(), ip, port);
            }
        }
        for a in self.announced.values() {
            if let Ok(ip) = a.task.ip.parse() {
                add(&a.task.name, &a.task.name, ip, 0);
            }
        }
        for (name, ip) in &s.dns_addons {
            add(name.as_str(), name.as_str(), *ip, 0);
        }
        if let (Some(ip), Ok(_)) = (
            s.controller_addr
                .map(|a| a.ip())
                .filter(|ip| !ip.is_unspecified())
                .or(master),
            torc_types::ServiceName::new(s.rack_name.clone()),
        ) {
            let port = s.controller_addr.map_or(3000, |a| a.port());
            add(&s.rack_name, &s.rack_name, ip, port);
        }
        DnsSnapshot {
            generation: 0,
            node_domain: s.domain.clone(),
            node_ttl: 60,
            nameserver_ip: match master {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            nodes,
            service_domain: s.service_domain.clone(),
            services: services
                .into_iter()
                .map(|(name, instances)| ServiceEntry {
                    name,
                    ttl: SERVICE_TTL,
                    instances,
                })
                .collect(),
            records: Vec::new(),
        }
    }
}

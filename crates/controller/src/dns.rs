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
        // Per name: its TTL (the shortest its instances ask for) and its instances.
        let mut services: BTreeMap<String, (u32, Vec<InstanceEntry>)> = BTreeMap::new();
        let mut add = |name: &str, instance: &str, ip: IpAddr, port: u16, ttl: Option<u32>| {
            let ttl = ttl.unwrap_or(s.service_ttl);
            let entry = services
                .entry(name.to_string())
                .or_insert((ttl, Vec::new()));
            entry.0 = entry.0.min(ttl);
            entry.1.push(InstanceEntry {
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
                let ttl = rec.policy.dns_ttl;
                add(t.name.as_str(), t.name.as_str(), ip, port, ttl);
                if rec.service != rec.name {
                    add(rec.service.as_str(), t.name.as_str(), ip, port, ttl);
                }
            } else {
                add(t.name.as_str(), t.name.as_str(), ip, port, None);
            }
        }
        for a in self.announced.values() {
            if let Ok(ip) = a.task.ip.parse() {
                add(&a.task.name, &a.task.name, ip, 0, None);
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
            generation: 0,
            node_domain: s.domain.clone(),
            node_ttl: s.node_ttl,
            nameserver_ip: match master {
                Some(IpAddr::V4(ip)) => Some(ip),
                _ => None,
            },
            nodes,
            service_domain: s.service_domain.clone(),
            services: services
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
}

/// The answer to a lookup made through the rack's DNS server (the UI's lookup box).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Lookup {
    pub server: String,
    pub name: String,
    pub record_type: String,
    pub rcode: String,
    pub authoritative: bool,
    pub answers: Vec<String>,
    pub authority: Vec<String>,
    pub elapsed_ms: f64,
}

/// Asks `server` (UDP) for `name`/`rtype` and returns the answer as zone-file lines.
pub async fn lookup(
    server: std::net::SocketAddr,
    name: &str,
    rtype: &str,
) -> Result<Lookup, String> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let qname = Name::from_str_relaxed(name).map_err(|e| format!("name {name:?}: {e}"))?;
    let qtype: RecordType = rtype
        .to_ascii_uppercase()
        .parse()
        .map_err(|_| format!("record type {rtype:?} is not one DNS knows"))?;
    let id = (torc_types::now_millis() & 0xffff) as u16;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname, qtype));
    let bytes = msg.to_vec().map_err(|e| e.to_string())?;
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| e.to_string())?;
    let start = std::time::Instant::now();
    socket
        .send_to(&bytes, server)
        .await
        .map_err(|e| format!("cannot send to {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(2), socket.recv(&mut buf))
        .await
        .map_err(|_| format!("no answer from {server} within 2 s"))?
        .map_err(|e| format!("{server}: {e}"))?;
    let answer = Message::from_vec(&buf[..n])
        .map_err(|e| format!("unreadable answer from {server}: {e}"))?;
    Ok(Lookup {
        server: server.to_string(),
        name: name.to_string(),
        record_type: qtype.to_string(),
        rcode: match u16::from(answer.metadata.response_code) {
            0 => "NOERROR".to_string(),
            1 => "FORMERR".to_string(),
            2 => "SERVFAIL".to_string(),
            3 => "NXDOMAIN".to_string(),
            4 => "NOTIMP".to_string(),
            5 => "REFUSED".to_string(),
            other => format!("RCODE{other}"),
        },
        authoritative: answer.metadata.authoritative,
        answers: answer.answers.iter().map(|r| r.to_string()).collect(),
        authority: answer.authorities.iter().map(|r| r.to_string()).collect(),
        elapsed_ms: start.elapsed().as_secs_f64() * 1000.0,
    })
}

//! `torc up` on network namespaces: which network the rack gets (`--network`), the rack's slug
//! and plan from its config, and the forwarders that keep the README's endpoints on the host's
//! loopback. The namespaces themselves are made by `torc_net::rack`, the code test racks use.

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::Context as _;
use clap::ValueEnum;
use sha2::Digest as _;
use torc_config::RackConfig;
use torc_net::NetnsPrefix;
use torc_net::rack::{Forward, PlanNode, Proto, RackPlan};
use torc_types::NodeType;

/// `torc up --network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Network {
    /// Namespaces when this process may create them (root, or CAP_SYS_ADMIN and
    /// CAP_NET_ADMIN), else loopback.
    Auto,
    /// Each node in its own network namespace, linked to the switch by a veth pair.
    Namespaces,
    /// Each node on its own loopback address of the host.
    Loopback,
}

/// The ports forwarded from every node's endpoint to its rack address over TCP, besides the
/// API's: DNS, etcd, influxdb (the README's lines).
const TCP_PORTS: [u16; 3] = [53, 2379, 8086];
/// The same over UDP: DNS.
const UDP_PORTS: [u16; 1] = [53];

/// The slug of the rack kept in `data_dir`: 6 hex digits of the SHA-256 of its canonical path,
/// so that a rerun with the same directory finds (and sweeps) its own leftovers. The directory
/// must exist.
pub fn slug_of(data_dir: &Path) -> anyhow::Result<NetnsPrefix> {
    let canonical = data_dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let digest = sha2::Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    let slug: String = digest[..3].iter().map(|b| format!("{b:02x}")).collect();
    Ok(NetnsPrefix::new(&slug)?)
}

/// The network plan of `config`: the master node is the switch, every other node hangs off
/// the switch port its `port` names (or, when that is 0, its position among them).
pub fn plan_of(config: &RackConfig, prefix: NetnsPrefix) -> anyhow::Result<RackPlan> {
    let v4 = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => Ok(ip),
        IpAddr::V6(ip) => anyhow::bail!("{ip}: the rack network is IPv4"),
    };
    let master = config
        .nodes
        .iter()
        .find(|n| n.node_type == NodeType::Master)
        .context("the rack config has no `type: master` node to be the switch")?;
    let mut nodes = Vec::new();
    for (i, node) in config
        .nodes
        .iter()
        .filter(|n| n.name != master.name)
        .enumerate()
    {
        nodes.push(PlanNode {
            name: node.name.as_str(),
            address: v4(node.ip)?,
            port: if node.port == 0 {
                i as u16 + 1
            } else {
                node.port
            },
        });
    }
    Ok(RackPlan::new(
        prefix,
        (master.name.as_str(), v4(master.ip)?),
        &nodes,
    )?)
}

/// The forwarders of a namespaced rack: on every node's endpoint, the API port, DNS, etcd and
/// influxdb over TCP and DNS over UDP, each to the same port at the node's rack address.
pub fn forwards(config: &RackConfig, api_port: u16) -> Vec<Forward> {
    let mut tcp = vec![api_port];
    tcp.extend(TCP_PORTS.iter().filter(|p| **p != api_port));
    let mut out = Vec::new();
    for node in &config.nodes {
        let (Some(IpAddr::V4(endpoint)), IpAddr::V4(ip)) = (node.endpoint, node.ip) else {
            continue;
        };
        let pair = |proto, port| Forward {
            proto,
            listen: SocketAddrV4::new(endpoint, port),
            target: SocketAddrV4::new(ip, port),
        };
        out.extend(tcp.iter().map(|p| pair(Proto::Tcp, *p)));
        out.extend(UDP_PORTS.iter().map(|p| pair(Proto::Udp, *p)));
    }
    out
}

/// The node's address as seen from the host: its endpoint when it has one.
pub fn host_address(node: &torc_config::NodeConfig) -> IpAddr {
    node.endpoint.unwrap_or(node.ip)
}

/// `first-last` of a run of addresses, or one address.
pub fn span(addresses: &[Ipv4Addr]) -> String {
    match (addresses.first(), addresses.last()) {
        (Some(a), Some(b)) if a != b => format!("{a}-{}", b.octets()[3]),
        (Some(a), _) => a.to_string(),
        _ => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::up::config::{Layout, sample_config};

    #[test]
    fn the_slug_is_stable_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let a = slug_of(dir.path()).unwrap();
        assert_eq!(a.slug().len(), 6);
        // The same directory under another spelling.
        let dotted = dir
            .path()
            .join(".")
            .join("..")
            .join(dir.path().file_name().unwrap());
        assert_eq!(slug_of(&dotted).unwrap(), a);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(slug_of(other.path()).unwrap(), a);
    }

    #[test]
    fn the_sample_rack_plans_and_forwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rack.yaml");
        let text = sample_config(2, Ipv4Addr::new(127, 0, 3, 20), Layout::Namespaces);
        std::fs::write(&path, text).unwrap();
        let config = RackConfig::load(&path).unwrap();
        let plan = plan_of(&config, NetnsPrefix::new("abc123").unwrap()).unwrap();
        assert_eq!(
            plan,
            RackPlan::standard(NetnsPrefix::new("abc123").unwrap(), 2).unwrap()
        );
        let shown: Vec<String> = forwards(&config, 3000)
            .iter()
            .map(|f| f.to_string())
            .collect();
        assert_eq!(shown.len(), 15);
        assert_eq!(shown[0], "tcp 127.0.3.20:3000 -> 198.18.0.20:3000");
        assert_eq!(shown[4], "udp 127.0.3.20:53 -> 198.18.0.20:53");
        assert_eq!(shown[14], "udp 127.0.3.22:53 -> 198.18.0.22:53");
        assert_eq!(
            forwards(&config, 53).len(),
            12,
            "the API on 53 is forwarded once"
        );
        assert_eq!(
            span(&[Ipv4Addr::new(127, 0, 3, 20), Ipv4Addr::new(127, 0, 3, 22)]),
            "127.0.3.20-22"
        );
    }
}

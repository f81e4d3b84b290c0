//! The rack config `torc up` runs: the sample rack (`config/rack.yaml`) with its `nodes:` block
//! generated for the number of nodes and the rack's network, and the checks a given config must
//! pass to run on namespaces.

use std::net::{IpAddr, Ipv4Addr};

use torc_config::RackConfig;
use torc_net::rack;
use torc_types::NodeType;

/// The sample rack: the seed's wedge and bladerunners.
pub const SAMPLE_CONFIG: &str = include_str!("../../../../config/rack.yaml");

/// How the rack's nodes are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Every node on its own loopback address of the host (`127.0.3.20`, `.21`, ...).
    Loopback,
    /// Every node in its own network namespace on a rack address (`198.18.0.20`, `.21`, ...),
    /// linked to the switch (the controller node), reached from the host at its loopback
    /// `endpoint`.
    Namespaces,
}

/// The sample config with `compute` compute nodes. On loopback node `i` is at `base + i`; on
/// namespaces it is at the rack address [`rack::standard_address`]`(i)` with its endpoint at
/// `base + i`, its task block, its switch port, and the rack has a netlink network agent.
#[cfg(test)]
pub fn sample_config(compute: usize, base: Ipv4Addr, layout: Layout) -> String {
    sample_config_with(compute, 1, base, layout)
}

/// [`sample_config`] with `controllers` controller nodes: `wedge`, then `wedge2`, ... after the
/// compute nodes (so compute nodes keep their addresses), each `type: master` with the function
/// `standby-controller` (the sample's system services stay on `wedge`, the switch).
pub fn sample_config_with(
    compute: usize,
    controllers: usize,
    base: Ipv4Addr,
    layout: Layout,
) -> String {
    let loopback = |i: usize| Ipv4Addr::from(u32::from(base) + i as u32);
    let mut nodes = String::from("nodes:\n");
    for i in 0..compute + controllers.max(1) {
        let (name, node_type, function) = match i {
            0 => ("wedge".to_string(), "master", "controller"),
            i if i <= compute => (format!("bladerunner{i}"), "slave", "compute"),
            i => (
                format!("wedge{}", i - compute + 1),
                "master",
                "standby-controller",
            ),
        };
        nodes.push_str(&format!("  - name: {name}\n"));
        match layout {
            Layout::Loopback => nodes.push_str(&format!("    ip: {}\n", loopback(i))),
            Layout::Namespaces => {
                nodes.push_str(&format!("    ip: {}\n", rack::standard_address(i)));
                nodes.push_str(&format!("    endpoint: {}\n", loopback(i)));
                nodes.push_str(&format!(
                    "    task_block: {}\n",
                    rack::standard_task_block(i)
                ));
                if i > 0 {
                    nodes.push_str(&format!("    port: {i}\n"));
                }
            }
        }
        nodes.push_str(&format!(
            "    type: {node_type}\n    function: {function}\n"
        ));
    }
    // Replace the sample's `nodes:` block (up to the next top-level line) with ours.
    let mut out = String::new();
    let mut in_nodes = false;
    for line in SAMPLE_CONFIG.lines() {
        if line.starts_with("nodes:") {
            in_nodes = true;
            out.push_str(&nodes);
            continue;
        }
        if in_nodes {
            let top_level = !line.is_empty() && !line.starts_with(' ') && !line.starts_with('#');
            let comment_before_next = line.starts_with('#');
            if top_level || comment_before_next {
                in_nodes = false;
                out.push('\n');
            } else {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if layout == Layout::Namespaces {
        out.push_str(
            "\n# torc up on network namespaces: the switch is wedge's namespace, where the\n\
             # network agent (a system service on the controller node) programs the routes.\n\
             network-agent:\n  type: netlink\n  connection: \"\"\n",
        );
    }
    out
}

/// Why a config cannot run on namespaces: the first key that stands in the way.
#[derive(Debug, thiserror::Error)]
pub enum NotForNamespaces {
    #[error("the rack config has no `type: master` node to be the switch")]
    NoMaster,
    #[error("nodes[{index}].ip: {ip} is not in {range}, the rack network's range")]
    Outside {
        index: usize,
        ip: IpAddr,
        range: torc_types::Ipv4Block,
    },
    #[error(
        "nodes[{index}].endpoint: {ip} is not a loopback address (127.0.0.0/8): the host reaches the rack only through its own loopback"
    )]
    Endpoint { index: usize, ip: IpAddr },
    #[error("nodes[{index}].task_block: {block} is not in {range}, the rack network's range")]
    Block {
        index: usize,
        block: torc_types::Ipv4Block,
        range: torc_types::Ipv4Block,
    },
}

/// Whether the config's master node has a rack address (so `--network auto` may run it on
/// namespaces).
pub fn has_rack_addresses(config: &RackConfig) -> bool {
    let range = rack::rack_range();
    config
        .nodes
        .iter()
        .find(|n| n.node_type == NodeType::Master)
        .is_some_and(|n| matches!(n.ip, IpAddr::V4(ip) if range.contains(ip)))
}

/// Checks that `config` can run on namespaces: every node's `ip` and `task_block` in the rack
/// range, every `endpoint` on the host's loopback.
pub fn check_for_namespaces(config: &RackConfig) -> Result<(), NotForNamespaces> {
    let range = rack::rack_range();
    if !config.nodes.iter().any(|n| n.node_type == NodeType::Master) {
        return Err(NotForNamespaces::NoMaster);
    }
    for (index, node) in config.nodes.iter().enumerate() {
        if !matches!(node.ip, IpAddr::V4(ip) if range.contains(ip)) {
            return Err(NotForNamespaces::Outside {
                index,
                ip: node.ip,
                range,
            });
        }
        if let Some(ip) = node.endpoint
            && !ip.is_loopback()
        {
            return Err(NotForNamespaces::Endpoint { index, ip });
        }
        if let Some(block) = node.task_block
            && !(range.contains(block.network()) && range.contains(block.last()))
        {
            return Err(NotForNamespaces::Block {
                index,
                block,
                range,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> RackConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rack.yaml");
        std::fs::write(&path, text).unwrap();
        RackConfig::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn the_sample_rack_on_loopback_and_on_namespaces() {
        let base = Ipv4Addr::new(127, 0, 3, 20);
        let config = load(&sample_config(2, base, Layout::Loopback));
        let ips: Vec<String> = config.nodes.iter().map(|n| n.ip.to_string()).collect();
        assert_eq!(ips, ["127.0.3.20", "127.0.3.21", "127.0.3.22"]);
        assert!(config.nodes.iter().all(|n| n.endpoint.is_none()));
        assert!(config.network_agent.is_none());
        assert!(!has_rack_addresses(&config));
        assert!(check_for_namespaces(&config).is_err());

        let config = load(&sample_config(2, base, Layout::Namespaces));
        let nodes: Vec<String> = (config.nodes.iter())
            .map(|n| {
                format!(
                    "{} {} {} {} {}",
                    n.name,
                    n.ip,
                    n.endpoint.unwrap(),
                    n.task_block.unwrap(),
                    n.port
                )
            })
            .collect();
        assert_eq!(
            nodes,
            [
                "wedge 198.18.0.20 127.0.3.20 198.19.0.0/24 0",
                "bladerunner1 198.18.0.21 127.0.3.21 198.19.1.0/24 1",
                "bladerunner2 198.18.0.22 127.0.3.22 198.19.2.0/24 2",
            ]
        );
        let agent = config.network_agent.as_ref().unwrap();
        assert_eq!(agent.agent_type, torc_config::NetworkAgentKind::Netlink);
        assert_eq!(agent.connection, "");
        assert!(has_rack_addresses(&config));
        check_for_namespaces(&config).unwrap();
        // The network agent is one of the sample rack's system services.
        let services = &config.healthcheck.system_services;
        assert!(services.iter().any(|s| s.name.as_str() == "network-agent"));
    }

    #[test]
    fn a_config_that_cannot_run_on_namespaces_names_the_key() {
        let text = sample_config(2, Ipv4Addr::new(127, 0, 3, 20), Layout::Namespaces);
        let cases = [
            (
                text.replace("ip: 198.18.0.22", "ip: 10.0.0.22"),
                "nodes[2].ip: 10.0.0.22 is not in 198.18.0.0/15",
            ),
            (
                text.replace("endpoint: 127.0.3.21", "endpoint: 192.0.2.21"),
                "nodes[1].endpoint: 192.0.2.21 is not a loopback address",
            ),
            (
                text.replace("task_block: 198.19.1.0/24", "task_block: 10.1.0.0/24"),
                "nodes[1].task_block: 10.1.0.0/24 is not in 198.18.0.0/15",
            ),
        ];
        for (text, want) in cases {
            let e = check_for_namespaces(&load(&text)).unwrap_err().to_string();
            assert!(e.starts_with(want), "{want:?}: {e}");
        }
    }
}

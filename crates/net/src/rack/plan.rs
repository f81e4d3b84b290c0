//! The plan of a rack's network, pure: from the switch and the nodes (name, rack address,
//! switch port), the namespaces, links and addresses to make (`docs/design/rack-network.md`
//! §2). Nothing here touches the kernel; [`super::create`] carries a plan out.
//!
//! Invariants: every address of a plan lies in [`rack_range`] (198.18.0.0/15), and no two are
//! equal; every namespace carries the plan's prefix; every node hangs off its own switch port.

use std::fmt;
use std::net::Ipv4Addr;

use torc_types::Ipv4Block;

use crate::{Error, IfName, NetnsName, NetnsPrefix, Result};

/// The node end of every node's link to the switch.
pub const NODE_LINK: &str = "eth0";
/// The most compute nodes the standard layout numbers (`198.18.0.21` to `198.18.0.220`, task
/// blocks `198.19.1.0/24` to `198.19.200.0/24`).
pub const MAX_COMPUTE_NODES: usize = 200;

/// Where every rack address lies: 198.18.0.0/15, reserved for benchmarking networks (RFC
/// 2544), so that no route beyond this machine could lead there.
pub fn rack_range() -> Ipv4Block {
    Ipv4Block::new(Ipv4Addr::new(198, 18, 0, 0), 15).expect("198.18.0.0/15 is a block")
}

/// Node `i`'s address in the standard layout: the switch (`i = 0`) `198.18.0.20`, compute
/// node `i` `198.18.0.(20 + i)`, as the seed's `10.250.3.20-24` and the loopback rack's
/// `127.0.3.20-24`.
pub fn standard_address(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 20)) + i as u32)
}

/// Node `i`'s task block in the standard layout: `198.19.i.0/24` (the switch's is
/// `198.19.0.0/24`), for `i` up to 255.
pub fn standard_task_block(i: usize) -> Ipv4Block {
    Ipv4Block::new(Ipv4Addr::new(198, 19, i as u8, 0), 24).expect("a /24 with no host bits")
}

/// One node as a plan is given it.
#[derive(Debug, Clone, Copy)]
pub struct PlanNode<'a> {
    pub name: &'a str,
    /// Its rack address (in [`rack_range`]).
    pub address: Ipv4Addr,
    /// The switch port it hangs off (`swp<port>`), 1 or more.
    pub port: u16,
}

/// A compute node's link: `swp<N>` in the switch's namespace ↔ `eth0` in the node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeLink {
    pub node: String,
    pub netns: NetnsName,
    /// The switch's end (`swp1`).
    pub port: IfName,
    pub address: Ipv4Addr,
}

/// A rack's network: the switch's namespace (the controller node's: it holds the switch's
/// ports, its address on `lo` and on every port) and one namespace and link per other node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RackPlan {
    pub prefix: NetnsPrefix,
    /// The switch node's name (`wedge`).
    pub switch: String,
    pub switch_netns: NetnsName,
    pub switch_address: Ipv4Addr,
    pub links: Vec<NodeLink>,
}

impl RackPlan {
    /// The plan for the switch `switch` (name, address) and the `nodes` hanging off it.
    /// Refuses an address outside [`rack_range`], two nodes with one name, address or port,
    /// port 0, and a name that cannot name a namespace.
    pub fn new(
        prefix: NetnsPrefix,
        switch: (&str, Ipv4Addr),
        nodes: &[PlanNode<'_>],
    ) -> Result<RackPlan> {
        let range = rack_range();
        let outside = |name: &str, address: Ipv4Addr| {
            Error::invalid(
                "rack address",
                &address.to_string(),
                format!("(node {name}) is not in {range}, the rack network's range"),
            )
        };
        if !range.contains(switch.1) {
            return Err(outside(switch.0, switch.1));
        }
        let mut plan = RackPlan {
            switch_netns: prefix.name(switch.0)?,
            prefix,
            switch: switch.0.to_string(),
            switch_address: switch.1,
            links: Vec::with_capacity(nodes.len()),
        };
        for node in nodes {
            if !range.contains(node.address) {
                return Err(outside(node.name, node.address));
            }
            if node.port == 0 {
                return Err(Error::invalid(
                    "switch port",
                    "0",
                    format!("(node {}) ports are numbered from 1", node.name),
                ));
            }
            let port = IfName::new(&format!("swp{}", node.port))?;
            let taken = |what: &str, other: &str| {
                Error::invalid(
                    "rack plan",
                    node.name,
                    format!("has the same {what} as {other}"),
                )
            };
            if node.name == plan.switch {
                return Err(taken("name", "the switch"));
            }
            if node.address == plan.switch_address {
                return Err(taken("address", &plan.switch));
            }
            for link in &plan.links {
                if link.node == node.name {
                    return Err(taken("name", &link.node));
                }
                if link.address == node.address {
                    return Err(taken("address", &link.node));
                }
                if link.port == port {
                    return Err(taken(&format!("switch port ({port})"), &link.node));
                }
            }
            plan.links.push(NodeLink {
                node: node.name.to_string(),
                netns: plan.prefix.name(node.name)?,
                port,
                address: node.address,
            });
        }
        Ok(plan)
    }

    /// The standard layout: the switch `wedge` at [`standard_address`]`(0)` and `compute`
    /// nodes `bladerunner1..N`, node `i` at `standard_address(i)` on port `swp<i>`.
    pub fn standard(prefix: NetnsPrefix, compute: usize) -> Result<RackPlan> {
        if compute > MAX_COMPUTE_NODES {
            return Err(Error::invalid(
                "number of compute nodes",
                &compute.to_string(),
                format!("the standard layout numbers at most {MAX_COMPUTE_NODES}"),
            ));
        }
        let names: Vec<String> = (1..=compute).map(|i| format!("bladerunner{i}")).collect();
        let nodes: Vec<PlanNode<'_>> = (names.iter().enumerate())
            .map(|(i, name)| PlanNode {
                name,
                address: standard_address(i + 1),
                port: (i + 1) as u16,
            })
            .collect();
        RackPlan::new(prefix, ("wedge", standard_address(0)), &nodes)
    }

    /// Every namespace of the plan, the switch's first.
    pub fn namespaces(&self) -> Vec<&NetnsName> {
        std::iter::once(&self.switch_netns)
            .chain(self.links.iter().map(|l| &l.netns))
            .collect()
    }

    /// The namespace of node `node` (the switch's for the switch node).
    pub fn netns_of(&self, node: &str) -> Option<&NetnsName> {
        if node == self.switch {
            return Some(&self.switch_netns);
        }
        self.links.iter().find(|l| l.node == node).map(|l| &l.netns)
    }

    /// The rack address of node `node`.
    pub fn address_of(&self, node: &str) -> Option<Ipv4Addr> {
        if node == self.switch {
            return Some(self.switch_address);
        }
        self.links
            .iter()
            .find(|l| l.node == node)
            .map(|l| l.address)
    }
}

/// The plan as `ip` would be asked to build it, one line per step (for the intent record and
/// for people).
impl fmt::Display for RackPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sw = &self.switch_netns;
        writeln!(f, "netns {sw}: lo {}/32, ip_forward 1", self.switch_address)?;
        for l in &self.links {
            writeln!(
                f,
                "netns {}: veth {} ({sw}) <-> {NODE_LINK}, {}/32 peer {}/32, default via {}, ip_forward 1",
                l.netns, l.port, l.address, self.switch_address, self.switch_address
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix() -> NetnsPrefix {
        NetnsPrefix::new("3fa9c2").unwrap()
    }

    #[test]
    fn the_standard_layout() {
        let plan = RackPlan::standard(prefix(), 2).unwrap();
        assert_eq!(
            plan.to_string(),
            "netns torc-3fa9c2-wedge: lo 198.18.0.20/32, ip_forward 1\n\
             netns torc-3fa9c2-bladerunner1: veth swp1 (torc-3fa9c2-wedge) <-> eth0, 198.18.0.21/32 peer 198.18.0.20/32, default via 198.18.0.20, ip_forward 1\n\
             netns torc-3fa9c2-bladerunner2: veth swp2 (torc-3fa9c2-wedge) <-> eth0, 198.18.0.22/32 peer 198.18.0.20/32, default via 198.18.0.20, ip_forward 1\n"
        );
        let names: Vec<&str> = plan.namespaces().iter().map(|n| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "torc-3fa9c2-wedge",
                "torc-3fa9c2-bladerunner1",
                "torc-3fa9c2-bladerunner2"
            ]
        );
        assert_eq!(
            plan.address_of("bladerunner2"),
            Some(Ipv4Addr::new(198, 18, 0, 22))
        );
        assert_eq!(
            plan.netns_of("wedge").map(|n| n.as_str()),
            Some("torc-3fa9c2-wedge")
        );
        assert_eq!(plan.netns_of("nobody"), None);
        assert_eq!(standard_task_block(0).to_string(), "198.19.0.0/24");
        assert_eq!(standard_task_block(3).to_string(), "198.19.3.0/24");
        let last = RackPlan::standard(prefix(), MAX_COMPUTE_NODES).unwrap();
        assert_eq!(
            last.links.last().unwrap().address,
            Ipv4Addr::new(198, 18, 0, 220)
        );
        assert!(RackPlan::standard(prefix(), MAX_COMPUTE_NODES + 1).is_err());
    }

    #[test]
    fn bad_plans_are_refused_naming_the_node() {
        let node = |name, last: u8, port| PlanNode {
            name,
            address: Ipv4Addr::new(198, 18, 0, last),
            port,
        };
        let switch = ("wedge", Ipv4Addr::new(198, 18, 0, 20));
        let cases: Vec<(Vec<PlanNode<'_>>, &str)> = vec![
            (vec![node("a", 21, 0)], "(node a) ports are numbered from 1"),
            (
                vec![node("a", 21, 1), node("b", 21, 2)],
                "\"b\": has the same address as a",
            ),
            (
                vec![node("a", 21, 1), node("b", 22, 1)],
                "\"b\": has the same switch port (swp1) as a",
            ),
            (vec![node("a", 21, 1), node("a", 22, 2)], "same name as a"),
            (vec![node("wedge", 21, 1)], "same name as the switch"),
            (vec![node("a", 20, 1)], "same address as wedge"),
            (vec![node("a b", 21, 1)], "bad namespace name"),
            (
                vec![PlanNode {
                    name: "a",
                    address: Ipv4Addr::new(127, 0, 3, 21),
                    port: 1,
                }],
                "bad rack address \"127.0.3.21\": (node a) is not in 198.18.0.0/15",
            ),
        ];
        for (nodes, want) in cases {
            let e = RackPlan::new(prefix(), switch, &nodes)
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        let e = RackPlan::new(prefix(), ("wedge", Ipv4Addr::new(10, 0, 0, 1)), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("(node wedge) is not in 198.18.0.0/15"), "{e}");
    }
}

//! Placement: the resource ledger of a rack, and the decision where a task goes.
//!
//! The [`Ledger`] holds the nodes and what is allocated on each. Given a task, it decides where
//! the task goes, which ports it gets and, for a task on the rack network, which address of the
//! node's task block (reserving them), or says why it cannot go anywhere.
//! It performs no I/O and reads no clock, so the same input always gives the same placement and
//! the controller can test and benchmark it alone.
//!
//! Invariants:
//! - A placement never overcommits a node: the task's resources fit in what is still free
//!   after every earlier placement of the same plan.
//! - Ports handed out are inside the node's range and unused on that node.
//! - A rack address handed out is one of the node's block's task addresses and held by no
//!   other task. Addresses are handed out next-fit (after the last one given), so a freed
//!   address is reused only after the rest of the block, when DNS caches and the old route
//!   have long drained. The cursor is not stored: a ledger rebuilt after a controller restart
//!   starts after the highest address still held.
//! - A container task goes only to a node whose `containers` capability is `Ready`, and a
//!   rack-network task only to one whose `rack_network` is.
//! - Tasks are spread: among the nodes that fit, the least loaded wins (ties broken by fewer
//!   tasks, then by name), not the first that fits.
//! - A cordoned node takes no task, whatever asks (a pinned one waits with the reason); what
//!   runs on it keeps its allocation.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use torc_types::{
    Constraints, ImageRef, Ipv4Block, NodeName, NodeType, PortRange, Resources, TaskId,
};

/// A node as the ledger needs to see it.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: NodeName,
    pub node_type: NodeType,
    pub node_function: String,
    /// Inactive nodes receive nothing.
    pub active: bool,
    /// Cordoned nodes receive nothing either (node maintenance).
    pub cordoned: bool,
    pub total: Resources,
    pub allocated: Resources,
    pub port_range: PortRange,
    pub used_ports: BTreeSet<u16>,
    /// Tasks holding resources on the node.
    pub tasks: usize,
    /// The addresses the node gives its rack-network tasks, if any.
    pub task_block: Option<Ipv4Block>,
    /// Whether the node's agent can give a task its own network namespace.
    pub rack_network: Capability,
    /// Whether the node's agent can run container tasks (an engine answers it).
    pub containers: Capability,
    /// Rack addresses held by the node's tasks.
    pub used_addresses: BTreeSet<Ipv4Addr>,
    /// Where the next-fit search for a free address starts: an index into the block's task
    /// addresses.
    pub next_address: u32,
}

/// Whether a node's agent can do one thing beyond running processes: put a task on the rack
/// network, run containers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Capability {
    /// It can (it creates task namespaces; an engine answers it).
    Ready,
    /// It cannot (not privileged, no engine, an older agent); the note says why.
    Unavailable { note: String },
    /// Its agent has not said (not registered yet).
    #[default]
    Unknown,
}

impl NodeState {
    fn free(&self) -> Resources {
        self.total.saturating_sub(&self.allocated)
    }

    fn free_ports(&self) -> usize {
        self.port_range.len() - self.used_ports.len()
    }

    /// The higher of cpu and memory utilisation, after adding `extra`.
    fn load_with(&self, extra: &Resources) -> f64 {
        let ratio = |used: f64, total: f64| if total > 0.0 { used / total } else { 0.0 };
        let a = self.allocated.add(extra);
        ratio(a.cpus, self.total.cpus).max(ratio(a.mem_mb, self.total.mem_mb))
    }

    fn matches(&self, c: &Constraints) -> bool {
        c.node_name.as_ref().is_none_or(|n| *n == self.name)
            && c.node_type.as_ref().is_none_or(|t| *t == self.node_type)
            && c.node_function
                .as_ref()
                .is_none_or(|f| *f == self.node_function)
    }

    /// Why the node cannot give a task a rack address now, if it cannot.
    fn address_problem(&self) -> Option<AddressProblem> {
        let Some(block) = self.task_block else {
            return Some(AddressProblem::NoBlock {
                node: self.name.clone(),
            });
        };
        match &self.rack_network {
            Capability::Ready => {}
            Capability::Unavailable { note } => {
                return Some(AddressProblem::Unsupported {
                    node: self.name.clone(),
                    note: note.clone(),
                });
            }
            Capability::Unknown => {
                return Some(AddressProblem::Undeclared {
                    node: self.name.clone(),
                });
            }
        }
        let capacity = block.task_capacity();
        let used = (self.used_addresses.iter())
            .filter(|ip| block.contains(**ip))
            .count();
        (used >= capacity as usize).then(|| AddressProblem::Exhausted {
            node: self.name.clone(),
            block,
            in_use: used,
        })
    }

    /// The next free address after the cursor, taken. The caller checked that one is free.
    fn take_address(&mut self) -> Option<Ipv4Addr> {
        let block = self.task_block?;
        let capacity = block.task_capacity();
        (0..capacity)
            .map(|step| (self.next_address + step) % capacity)
            .filter_map(|offset| Some((offset, block.task_address(offset)?)))
            .find(|(_, ip)| !self.used_addresses.contains(ip))
            .map(|(offset, ip)| {
                self.used_addresses.insert(ip);
                self.next_address = (offset + 1) % capacity;
                ip
            })
    }

    fn take_ports(&mut self, count: u16) -> Vec<u16> {
        let mut ports = Vec::with_capacity(usize::from(count));
        let mut candidate = self.port_range.first;
        while ports.len() < usize::from(count) {
            if !self.used_ports.contains(&candidate) {
                ports.push(candidate);
            }
            if candidate == self.port_range.last {
                break;
            }
            candidate += 1;
        }
        self.used_ports.extend(ports.iter().copied());
        ports
    }
}

/// What one task asks of the ledger.
#[derive(Debug, Clone)]
pub struct TaskRequest<'a> {
    pub id: &'a TaskId,
    pub resources: Resources,
    pub ports: u16,
    pub constraints: &'a Constraints,
    /// The task needs an address of its own from its node's task block.
    pub rack_address: bool,
    /// The task runs this image: it needs a node whose agent runs containers.
    pub container: Option<&'a ImageRef>,
}

/// Where a task goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub node: NodeName,
    pub ports: Vec<u16>,
    /// The task's own rack address, when it asked for one.
    pub address: Option<Ipv4Addr>,
}

/// What a placed task holds on its node: given back with [`Ledger::release`], or recorded
/// with [`Ledger::reserve`] for a task placed before (loaded from disk).
#[derive(Debug, Clone, Copy)]
pub struct Holding<'a> {
    pub resources: &'a Resources,
    pub ports: &'a [u16],
    pub address: Option<Ipv4Addr>,
}

/// The resource ledger: each node's allocation, and placement against it. Each successful
/// `place` reserves the resources, so later tasks see them as taken; `release` gives them back.
/// The controller's task table keeps one; a throwaway copy serves for what-if placement.
#[derive(Debug, Clone)]
pub struct Ledger {
    nodes: Vec<NodeState>,
}

impl Ledger {
    pub fn new(mut nodes: Vec<NodeState>) -> Self {
        // A stable order makes ties deterministic whatever order the caller used.
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ledger { nodes }
    }

    pub fn nodes(&self) -> &[NodeState] {
        &self.nodes
    }

    pub fn node(&self, name: &NodeName) -> Option<&NodeState> {
        self.index(name).map(|i| &self.nodes[i])
    }

    fn index(&self, name: &NodeName) -> Option<usize> {
        self.nodes.binary_search_by(|n| n.name.cmp(name)).ok()
    }

    /// Adds a node, or replaces what is known of it while keeping its allocations.
    pub fn upsert_node(&mut self, mut node: NodeState) {
        match self.nodes.binary_search_by(|n| n.name.cmp(&node.name)) {
            Ok(i) => {
                let old = &mut self.nodes[i];
                node.allocated = old.allocated;
                node.used_ports = std::mem::take(&mut old.used_ports);
                node.used_addresses = std::mem::take(&mut old.used_addresses);
                node.next_address = old.next_address;
                node.tasks = old.tasks;
                *old = node;
            }
            Err(i) => self.nodes.insert(i, node),
        }
    }

    /// Records a task already placed on `node` (e.g. loaded from disk). The next-fit search
    /// for addresses goes on after the highest address reserved.
    pub fn reserve(&mut self, node: &NodeName, held: Holding<'_>) {
        if let Some(i) = self.index(node) {
            let n = &mut self.nodes[i];
            n.allocated = n.allocated.add(held.resources);
            n.used_ports.extend(held.ports.iter().copied());
            if let Some(ip) = held.address {
                n.used_addresses.insert(ip);
                if let Some(block) = n.task_block
                    && let Some(offset) = block.task_offset(ip)
                {
                    let after = (offset + 1) % block.task_capacity();
                    n.next_address = n.next_address.max(after);
                }
            }
            n.tasks += 1;
        }
    }

    /// Gives back what a task held on `node`.
    pub fn release(&mut self, node: &NodeName, held: Holding<'_>) {
        if let Some(i) = self.index(node) {
            let n = &mut self.nodes[i];
            n.allocated = n.allocated.saturating_sub(held.resources);
            for p in held.ports {
                n.used_ports.remove(p);
            }
            if let Some(ip) = held.address {
                n.used_addresses.remove(&ip);
            }
            n.tasks = n.tasks.saturating_sub(1);
        }
    }

    /// Place one task, or say why no node can take it.
    pub fn place(&mut self, task: &TaskRequest<'_>) -> Result<Placement, NoFit> {
        let mut best: Option<(usize, f64)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.active
                || node.cordoned
                || !node.matches(task.constraints)
                || !task.resources.fits_in(&node.free())
                || node.free_ports() < usize::from(task.ports)
                || (task.container.is_some() && node.containers != Capability::Ready)
                || (task.rack_address && node.address_problem().is_some())
            {
                continue;
            }
            let load = node.load_with(&task.resources);
            let better = match best {
                None => true,
                Some((j, best_load)) => {
                    load < best_load - 1e-12
                        || ((load - best_load).abs() <= 1e-12 && node.tasks < self.nodes[j].tasks)
                }
            };
            if better {
                best = Some((i, load));
            }
        }
        let Some((i, _)) = best else {
            return Err(self.why_not(task));
        };
        let node = &mut self.nodes[i];
        node.allocated = node.allocated.add(&task.resources);
        node.tasks += 1;
        let ports = node.take_ports(task.ports);
        let address = if task.rack_address {
            node.take_address()
        } else {
            None
        };
        Ok(Placement {
            node: node.name.clone(),
            ports,
            address,
        })
    }

    /// The reason a task fits nowhere, naming the closest candidates.
    fn why_not(&self, task: &TaskRequest<'_>) -> NoFit {
        if self.nodes.is_empty() {
            return NoFit::NoNodes;
        }
        let matching: Vec<&NodeState> = self
            .nodes
            .iter()
            .filter(|n| n.matches(task.constraints))
            .collect();
        if matching.is_empty() {
            return NoFit::NoMatch {
                constraints: task.constraints.clone(),
            };
        }
        let active: Vec<&NodeState> = matching.iter().copied().filter(|n| n.active).collect();
        if active.is_empty() {
            return NoFit::AllInactive {
                nodes: matching.iter().map(|n| n.name.clone()).collect(),
            };
        }
        let (cordoned, active): (Vec<&NodeState>, Vec<&NodeState>) =
            active.into_iter().partition(|n| n.cordoned);
        if active.is_empty() {
            return NoFit::AllCordoned {
                nodes: cordoned.iter().map(|n| n.name.clone()).collect(),
            };
        }
        let active = match task.container {
            Some(image) => {
                let (ready, cannot): (Vec<&NodeState>, Vec<&NodeState>) =
                    (active.iter()).partition(|n| n.containers == Capability::Ready);
                if ready.is_empty() {
                    return NoFit::NoContainers {
                        image: image.to_string(),
                        nodes: (cannot.iter())
                            .map(|n| (n.name.clone(), n.containers.clone()))
                            .collect(),
                    };
                }
                ready
            }
            None => active,
        };
        let active = if task.rack_address {
            let (ready, problems): (Vec<&NodeState>, Vec<AddressProblem>) =
                active
                    .iter()
                    .fold((Vec::new(), Vec::new()), |(mut ok, mut bad), n| {
                        match n.address_problem() {
                            None => ok.push(*n),
                            Some(problem) => bad.push(problem),
                        }
                        (ok, bad)
                    });
            if ready.is_empty() {
                return NoFit::NoRackAddress(problems);
            }
            ready
        } else {
            active
        };
        let r = &task.resources;
        let most = |f: fn(&Resources) -> f64| {
            active
                .iter()
                .map(|n| (f(&n.free()), &n.name))
                .reduce(|a, b| if b.0 > a.0 { b } else { a })
                .map(|(free, node)| (free, node.clone()))
                .expect("at least one active node")
        };
        let mut short = Vec::new();
        let (cpu, cpu_node) = most(|x| x.cpus);
        if r.cpus > cpu + 1e-9 {
            short.push(Shortfall::Cpus {
                want: r.cpus,
                most_free: cpu,
                on: cpu_node,
            });
        }
        let (mem, mem_node) = most(|x| x.mem_mb);
        if r.mem_mb > mem + 1e-9 {
            short.push(Shortfall::Memory {
                want: r.mem_mb,
                most_free: mem,
                on: mem_node,
            });
        }
        let (disk, disk_node) = most(|x| x.disk_mb);
        if r.disk_mb > disk + 1e-9 {
            short.push(Shortfall::Disk {
                want: r.disk_mb,
                most_free: disk,
                on: disk_node,
            });
        }
        let ports = active.iter().map(|n| n.free_ports()).max().unwrap_or(0);
        if usize::from(task.ports) > ports {
            short.push(Shortfall::Ports {
                want: task.ports,
                most_free: ports,
            });
        }
        if short.is_empty() {
            // Each resource fits somewhere, but never all on the same node.
            NoFit::Fragmented {
                resources: task.resources,
                ports: task.ports,
            }
        } else {
            NoFit::Short(short)
        }
    }
}

/// Why no node can take a task (the task stays pending with this as its reason).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoFit {
    #[error("no nodes in the rack")]
    NoNodes,
    #[error("no node matches the constraints ({constraints})")]
    NoMatch { constraints: Constraints },
    #[error("every node matching the constraints is inactive ({})", names(nodes))]
    AllInactive { nodes: Vec<NodeName> },
    /// Every active node that matches is cordoned (`torc node uncordon NAME` lets tasks on).
    #[error(
        "every active node matching the constraints is cordoned ({}); `torc node uncordon NAME` lets tasks on one again",
        names(nodes)
    )]
    AllCordoned { nodes: Vec<NodeName> },
    /// What no active node has enough of, with the most any has.
    #[error("no active node has {} free", shortfalls(.0))]
    Short(Vec<Shortfall>),
    #[error("no single active node has {resources} and {ports} free ports at once")]
    Fragmented { resources: Resources, ports: u16 },
    /// The task asked for a rack address and no active matching node can give one.
    #[error("no active node can give a rack address ({})", problems(.0))]
    NoRackAddress(Vec<AddressProblem>),
    /// The task runs an image and no active matching node's agent runs containers: each
    /// node with what its agent said.
    #[error(
        "no active node can run containers (image {image}): {}",
        container_problems(nodes)
    )]
    NoContainers {
        /// The normalised reference.
        image: String,
        nodes: Vec<(NodeName, Capability)>,
    },
}

/// `bladerunner1: containers: unavailable: <note>; bladerunner2: its agent has not said (not
/// registered yet)`.
fn container_problems(nodes: &[(NodeName, Capability)]) -> String {
    (nodes.iter())
        .map(|(node, capability)| match capability {
            Capability::Ready => format!("{node}: containers: ready"),
            Capability::Unavailable { note } => format!("{node}: containers: unavailable: {note}"),
            Capability::Unknown => format!("{node}: its agent has not said (not registered yet)"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why one node cannot give a task a rack address.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AddressProblem {
    #[error("{node}: no task_block in the rack config")]
    NoBlock { node: NodeName },
    #[error("{node}: its agent cannot create task namespaces: {note}")]
    Unsupported { node: NodeName, note: String },
    #[error("{node}: its agent has not said whether it can create task namespaces")]
    Undeclared { node: NodeName },
    #[error(
        "{node}: block {block} exhausted, {in_use} of {} in use",
        block.task_capacity()
    )]
    Exhausted {
        node: NodeName,
        block: Ipv4Block,
        in_use: usize,
    },
}

fn problems(problems: &[AddressProblem]) -> String {
    (problems.iter())
        .map(AddressProblem::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One resource a task needs more of than any active node has free.
#[derive(Debug, Clone, PartialEq)]
pub enum Shortfall {
    Cpus {
        want: f64,
        most_free: f64,
        on: NodeName,
    },
    Memory {
        want: f64,
        most_free: f64,
        on: NodeName,
    },
    Disk {
        want: f64,
        most_free: f64,
        on: NodeName,
    },
    Ports {
        want: u16,
        most_free: usize,
    },
}

impl std::fmt::Display for Shortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shortfall::Cpus {
                want,
                most_free,
                on,
            } => {
                write!(f, "{want} cpus (most free: {most_free} on {on})")
            }
            Shortfall::Memory {
                want,
                most_free,
                on,
            } => {
                write!(f, "{want} MiB memory (most free: {most_free} MiB on {on})")
            }
            Shortfall::Disk {
                want,
                most_free,
                on,
            } => {
                write!(f, "{want} MiB disk (most free: {most_free} MiB on {on})")
            }
            Shortfall::Ports { want, most_free } => {
                write!(f, "{want} ports (most free: {most_free})")
            }
        }
    }
}

fn names(nodes: &[NodeName]) -> String {
    nodes
        .iter()
        .map(NodeName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn shortfalls(short: &[Shortfall]) -> String {
    short
        .iter()
        .map(Shortfall::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpus: f64, mem: f64) -> NodeState {
        NodeState {
            name: NodeName::new(name).unwrap(),
            node_type: NodeType::Slave,
            node_function: "compute".into(),
            active: true,
            cordoned: false,
            total: Resources::new(cpus, mem, 1000.0),
            allocated: Resources::ZERO,
            port_range: "31000-31003".parse().unwrap(),
            used_ports: BTreeSet::new(),
            tasks: 0,
            task_block: None,
            rack_network: Capability::Unknown,
            containers: Capability::Unknown,
            used_addresses: BTreeSet::new(),
            next_address: 0,
        }
    }

    fn req<'a>(
        id: &'a TaskId,
        c: &'a Constraints,
        cpus: f64,
        mem: f64,
        ports: u16,
    ) -> TaskRequest<'a> {
        TaskRequest {
            id,
            resources: Resources::new(cpus, mem, 0.0),
            ports,
            constraints: c,
            rack_address: false,
            container: None,
        }
    }

    #[test]
    fn spreads_instead_of_first_fit() {
        let mut p = Ledger::new(vec![
            node("a", 4.0, 1000.0),
            node("b", 4.0, 1000.0),
            node("c", 4.0, 1000.0),
        ]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        let placed: Vec<String> = (0..6)
            .map(|_| {
                p.place(&req(&id, &c, 1.0, 100.0, 0))
                    .unwrap()
                    .node
                    .to_string()
            })
            .collect();
        assert_eq!(placed, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn never_overcommits_and_explains() {
        let mut p = Ledger::new(vec![node("a", 1.0, 100.0)]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        assert!(p.place(&req(&id, &c, 0.6, 10.0, 0)).is_ok());
        let err = p
            .place(&req(&id, &c, 0.6, 10.0, 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("0.6 cpus"), "{err}");
        let err = p.place(&req(&id, &c, 0.1, 1e9, 0)).unwrap_err().to_string();
        assert!(
            err.contains("1000000000 MiB memory (most free: 90 MiB on a)"),
            "{err}"
        );
    }

    #[test]
    fn constraints_and_inactive_nodes() {
        let mut b = node("b", 4.0, 1000.0);
        b.node_function = "controller".into();
        let mut c_node = node("c", 4.0, 1000.0);
        c_node.active = false;
        c_node.node_function = "storage".into();
        let mut p = Ledger::new(vec![node("a", 4.0, 1000.0), b, c_node]);
        let id = TaskId::new("t.1").unwrap();
        let on_controller = Constraints {
            node_function: Some("controller".into()),
            ..Default::default()
        };
        assert_eq!(
            p.place(&req(&id, &on_controller, 1.0, 1.0, 0))
                .unwrap()
                .node
                .as_str(),
            "b"
        );
        let on_storage = Constraints {
            node_function: Some("storage".into()),
            ..Default::default()
        };
        let err = p
            .place(&req(&id, &on_storage, 1.0, 1.0, 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inactive (c)"), "{err}");
        let nowhere = Constraints {
            node_name: Some(NodeName::new("zz").unwrap()),
            ..Default::default()
        };
        let err = p
            .place(&req(&id, &nowhere, 1.0, 1.0, 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("node_name=zz"), "{err}");
    }

    #[test]
    fn a_cordoned_node_takes_nothing_and_keeps_what_it_holds() {
        let mut a = node("a", 4.0, 1000.0);
        a.cordoned = true;
        a.allocated = Resources::new(1.0, 100.0, 0.0);
        let mut p = Ledger::new(vec![a, node("b", 1.0, 1000.0)]);
        let id = TaskId::new("t.1").unwrap();
        let any = Constraints::default();
        // `a` has more room, yet `b` takes it.
        assert_eq!(
            p.place(&req(&id, &any, 0.5, 1.0, 0)).unwrap().node.as_str(),
            "b"
        );
        // A task pinned to `a` waits, saying why and what lets it on.
        let on_a = Constraints {
            node_name: Some(NodeName::new("a").unwrap()),
            ..Default::default()
        };
        let err = p.place(&req(&id, &on_a, 0.5, 1.0, 0)).unwrap_err();
        assert_eq!(
            err,
            NoFit::AllCordoned {
                nodes: vec![NodeName::new("a").unwrap()]
            }
        );
        assert!(
            err.to_string()
                .contains("cordoned (a); `torc node uncordon NAME`"),
            "{err}"
        );
        // Too big for `b`: the shortfall counts only uncordoned nodes.
        let err = p
            .place(&req(&id, &any, 2.0, 1.0, 0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("most free: 0.5 on b"), "{err}");
        assert_eq!(
            p.node(&NodeName::new("a").unwrap()).unwrap().allocated.cpus,
            1.0
        );
        // Uncordoned, it takes tasks again.
        let mut a = p.node(&NodeName::new("a").unwrap()).unwrap().clone();
        a.cordoned = false;
        p.upsert_node(a);
        assert_eq!(
            p.place(&req(&id, &on_a, 0.5, 1.0, 0))
                .unwrap()
                .node
                .as_str(),
            "a"
        );
    }

    #[test]
    fn ports_are_unique_and_run_out() {
        let mut n = node("a", 8.0, 1000.0);
        n.used_ports.insert(31001);
        let mut p = Ledger::new(vec![n]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        assert_eq!(
            p.place(&req(&id, &c, 0.0, 0.0, 2)).unwrap().ports,
            [31000, 31002]
        );
        assert_eq!(p.place(&req(&id, &c, 0.0, 0.0, 1)).unwrap().ports, [31003]);
        let err = p.place(&req(&id, &c, 0.0, 0.0, 1)).unwrap_err();
        assert_eq!(
            err,
            NoFit::Short(vec![Shortfall::Ports {
                want: 1,
                most_free: 0
            }])
        );
        assert!(err.to_string().contains("1 ports (most free: 0)"), "{err}");
    }

    fn rack_node(name: &str, block: &str) -> NodeState {
        NodeState {
            task_block: Some(block.parse().unwrap()),
            rack_network: Capability::Ready,
            ..node(name, 8.0, 1000.0)
        }
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    #[test]
    fn rack_addresses_next_fit_and_run_out() {
        let mut p = Ledger::new(vec![rack_node("a", "198.19.1.0/29")]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        let rack = |p: &mut Ledger| {
            p.place(&TaskRequest {
                rack_address: true,
                ..req(&id, &c, 0.0, 0.0, 0)
            })
        };
        // A /29 has 8 addresses: network, gateway .1, tasks .2-.6, broadcast .7.
        let first: Vec<_> = (0..3).map(|_| rack(&mut p).unwrap().address).collect();
        assert_eq!(
            first,
            [
                Some(ip("198.19.1.2")),
                Some(ip("198.19.1.3")),
                Some(ip("198.19.1.4"))
            ]
        );
        // A freed address is not the next one given: the search goes on after the last.
        let a = NodeName::new("a").unwrap();
        let held = |address| Holding {
            resources: &Resources::ZERO,
            ports: &[],
            address: Some(ip(address)),
        };
        p.release(&a, held("198.19.1.2"));
        assert_eq!(rack(&mut p).unwrap().address, Some(ip("198.19.1.5")));
        assert_eq!(rack(&mut p).unwrap().address, Some(ip("198.19.1.6")));
        assert_eq!(rack(&mut p).unwrap().address, Some(ip("198.19.1.2")));
        let err = rack(&mut p).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no active node can give a rack address (a: block 198.19.1.0/29 exhausted, 5 of 5 \
             in use)"
        );
        // A task off the rack network still fits, and gets no address.
        assert_eq!(p.place(&req(&id, &c, 0.0, 0.0, 0)).unwrap().address, None);
        // An address reserved from disk is never handed out again.
        p.release(&a, held("198.19.1.4"));
        p.release(&a, held("198.19.1.3"));
        p.reserve(&a, held("198.19.1.3"));
        assert_eq!(rack(&mut p).unwrap().address, Some(ip("198.19.1.4")));
        assert!(rack(&mut p).is_err());
    }

    #[test]
    fn rack_addresses_say_why_each_node_cannot() {
        let mut unsupported = rack_node("b", "198.19.2.0/24");
        unsupported.rack_network = Capability::Unavailable {
            note: "not privileged (needs CAP_NET_ADMIN)".into(),
        };
        let mut silent = rack_node("c", "198.19.3.0/24");
        silent.rack_network = Capability::Unknown;
        let mut p = Ledger::new(vec![node("a", 4.0, 100.0), unsupported, silent]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        let err = p
            .place(&TaskRequest {
                rack_address: true,
                ..req(&id, &c, 0.0, 0.0, 0)
            })
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no active node can give a rack address (a: no task_block in the rack config; b: its \
             agent cannot create task namespaces: not privileged (needs CAP_NET_ADMIN); c: its \
             agent has not said whether it can create task namespaces)"
        );
        // A node that can give an address but lacks memory is named for the memory.
        let mut p = Ledger::new(vec![rack_node("d", "198.19.4.0/24")]);
        let err = p
            .place(&TaskRequest {
                rack_address: true,
                ..req(&id, &c, 0.0, 5000.0, 0)
            })
            .unwrap_err();
        assert!(err.to_string().contains("5000 MiB memory"), "{err}");
    }

    #[test]
    fn containers_go_only_where_an_engine_answers() {
        let mut ready = node("a", 1.0, 100.0);
        ready.containers = Capability::Ready;
        let mut off = node("b", 8.0, 1000.0);
        off.containers = Capability::Unavailable {
            note: "turned off (--containerd off)".into(),
        };
        let silent = node("c", 8.0, 1000.0);
        let mut p = Ledger::new(vec![ready, off, silent]);
        let id = TaskId::new("t.1").unwrap();
        let c = Constraints::default();
        let image = ImageRef::parse("torc/busybox:1").unwrap();
        let container = |cpus| TaskRequest {
            container: Some(&image),
            ..req(&id, &c, cpus, 10.0, 0)
        };
        // The least loaded nodes (b, c) cannot run it: it goes to a.
        assert_eq!(p.place(&container(0.5)).unwrap().node.as_str(), "a");
        // A process still spreads to the emptier nodes.
        assert_eq!(
            p.place(&req(&id, &c, 0.5, 10.0, 0)).unwrap().node.as_str(),
            "b"
        );
        // The only ready node is full: named for its cpus, not for containers.
        let err = p.place(&container(0.9)).unwrap_err().to_string();
        assert!(err.contains("0.9 cpus (most free: 0.5 on a)"), "{err}");
        // No node ready: each one's reason.
        let mut p = Ledger::new(p.nodes()[1..].to_vec());
        assert_eq!(
            p.place(&container(0.1)).unwrap_err().to_string(),
            "no active node can run containers (image docker.io/torc/busybox:1): b: containers: \
             unavailable: turned off (--containerd off); c: its agent has not said (not \
             registered yet)"
        );
    }
}

//! Placement: the resource ledger of a rack, and the decision where a task goes.
//!
//! The [`Ledger`] holds the nodes and what is allocated on each. Given a task, it decides where
//! the task goes and which ports it gets (reserving them), or says why it cannot go anywhere.
//! It performs no I/O and reads no clock, so the same input always gives the same placement and
//! the controller can test and benchmark it alone.
//!
//! Invariants:
//! - A placement never overcommits a node: the task's resources fit in what is still free
//!   after every earlier placement of the same plan.
//! - Ports handed out are inside the node's range and unused on that node.
//! - Tasks are spread: among the nodes that fit, the least loaded wins (ties broken by fewer
//!   tasks, then by name), not the first that fits.

use std::collections::BTreeSet;

use torc_types::{Constraints, NodeName, NodeType, PortRange, Resources, TaskId};

/// A node as the ledger needs to see it.
#[derive(Debug, Clone)]
pub struct NodeState {
    pub name: NodeName,
    pub node_type: NodeType,
    pub node_function: String,
    /// Inactive nodes receive nothing.
    pub active: bool,
    pub total: Resources,
    pub allocated: Resources,
    pub port_range: PortRange,
    pub used_ports: BTreeSet<u16>,
    /// Tasks holding resources on the node.
    pub tasks: usize,
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
}

/// Where a task goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub node: NodeName,
    pub ports: Vec<u16>,
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
                node.tasks = old.tasks;
                *old = node;
            }
            Err(i) => self.nodes.insert(i, node),
        }
    }

    /// Records a task already placed on `node` (e.g. loaded from disk).
    pub fn reserve(&mut self, node: &NodeName, resources: &Resources, ports: &[u16]) {
        if let Some(i) = self.index(node) {
            let n = &mut self.nodes[i];
            n.allocated = n.allocated.add(resources);
            n.used_ports.extend(ports.iter().copied());
            n.tasks += 1;
        }
    }

    /// Gives back what a task held on `node`.
    pub fn release(&mut self, node: &NodeName, resources: &Resources, ports: &[u16]) {
        if let Some(i) = self.index(node) {
            let n = &mut self.nodes[i];
            n.allocated = n.allocated.saturating_sub(resources);
            for p in ports {
                n.used_ports.remove(p);
            }
            n.tasks = n.tasks.saturating_sub(1);
        }
    }

    /// Place one task, or say why no node can take it.
    pub fn place(&mut self, task: &TaskRequest<'_>) -> Result<Placement, NoFit> {
        let mut best: Option<(usize, f64)> = None;
        for (i, node) in self.nodes.iter().enumerate() {
            if !node.active
                || !node.matches(task.constraints)
                || !task.resources.fits_in(&node.free())
                || node.free_ports() < usize::from(task.ports)
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
        Ok(Placement {
            node: node.name.clone(),
            ports,
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
    /// What no active node has enough of, with the most any has.
    #[error("no active node has {} free", shortfalls(.0))]
    Short(Vec<Shortfall>),
    #[error("no single active node has {resources} and {ports} free ports at once")]
    Fragmented { resources: Resources, ports: u16 },
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
            total: Resources::new(cpus, mem, 1000.0),
            allocated: Resources::ZERO,
            port_range: "31000-31003".parse().unwrap(),
            used_ports: BTreeSet::new(),
            tasks: 0,
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
}

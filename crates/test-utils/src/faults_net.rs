//! Faults of the network and of processes, for the fault-injection suite (issue 19), and what
//! the suite counts them with: a node cut off from the rack by a netfilter drop inside its own
//! namespace (as a pulled cable or a dead switch port cuts it: its processes run on and
//! cannot tell), a process frozen (SIGSTOP) and thawed, the rack's task processes as `/proc`
//! shows them (not as the controller or an agent says), the DNS answers asked from inside the
//! switch, and a TCP proxy inside a namespace that counts a role's requests to the controller.
//!
//! Everything here acts inside a rack's namespaces only: the drop is a table of its own in the
//! node's namespace (gone with the namespace, however the test ends), `dig` runs in the
//! switch, and the proxy's sockets are made inside the namespace (no host socket ever sends
//! to a rack address).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::LocalRack;

/// The netfilter table a partition adds to a node's namespace.
const DROP_TABLE: &str = "torc_fault_partition";

/// Cuts node `node` off from the rack: every packet in, out of or through its link to the
/// switch (`eth0`) is dropped, in its own namespace, by a netfilter table of its own. Its
/// processes keep running and their connections stay open: they only stop hearing anything,
/// as behind a pulled cable. [`reconnect`] heals it.
pub fn cut_off(rack: &LocalRack, node: &str) -> anyhow::Result<()> {
    let mut script = format!("add table inet {DROP_TABLE}; ");
    for (chain, hook, matches) in [
        ("input", "input", "iifname \"eth0\""),
        ("output", "output", "oifname \"eth0\""),
        ("forward_in", "forward", "iifname \"eth0\""),
        ("forward_out", "forward", "oifname \"eth0\""),
    ] {
        script.push_str(&format!(
            "add chain inet {DROP_TABLE} {chain} {{ type filter hook {hook} priority -300; policy accept; }}; \
             add rule inet {DROP_TABLE} {chain} {matches} drop; "
        ));
    }
    nft(rack, node, &script)
}

/// Heals [`cut_off`]: removes the drop table from node `node`'s namespace.
pub fn reconnect(rack: &LocalRack, node: &str) -> anyhow::Result<()> {
    nft(rack, node, &format!("delete table inet {DROP_TABLE}"))
}

fn nft(rack: &LocalRack, node: &str, script: &str) -> anyhow::Result<()> {
    let out = rack.exec_in(node, &["nft", script])?;
    if !out.status.success() {
        bail!(
            "nft in {node}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

pub use crate::freeze;

/// A task's main process as `/proc` shows it: the child of one of the rack's shims, with what
/// its agent put in its environment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TaskProcess {
    /// Its task (`TORC_TASK_ID`).
    pub task: String,
    pub pid: u32,
    /// The node whose agent started it (`TORC_NODE`).
    pub node: String,
    /// Its address (`TORC_TASK_IP`): a rack task's own, else its node's.
    pub ip: Option<Ipv4Addr>,
}

/// Every task process of `rack` that runs now (stopped ones included, zombies not), by pid.
/// Counted from `/proc`, whatever the controller and the agents believe.
pub fn task_processes(rack: &LocalRack) -> Vec<TaskProcess> {
    let shims = rack.shim_pids();
    let mut out = Vec::new();
    for pid in crate::all_pids() {
        if !crate::parent_of(pid).is_some_and(|p| shims.contains(&p)) || !crate::pid_alive(pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: BTreeMap<String, String> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        let Some(task) = env.get("TORC_TASK_ID") else {
            continue;
        };
        out.push(TaskProcess {
            task: task.clone(),
            pid,
            node: env.get("TORC_NODE").cloned().unwrap_or_default(),
            ip: env.get("TORC_TASK_IP").and_then(|ip| ip.parse().ok()),
        });
    }
    out.sort();
    out
}

/// What the rack's DNS server (on the switch, `wedge`) answers for `name`, asked with `dig`
/// from inside the switch's namespace; no answer (the server frozen, a timeout) is empty.
pub fn dig_in_rack(rack: &LocalRack, name: &str) -> Vec<Ipv4Addr> {
    let server = format!("@{}", rack.nodes["wedge"]);
    let Ok(out) = rack.exec_in(
        "wedge",
        &["dig", "+short", "+time=1", "+tries=1", &server, name],
    ) else {
        return Vec::new();
    };
    let mut ips: Vec<Ipv4Addr> = (String::from_utf8_lossy(&out.stdout).lines())
        .filter_map(|l| l.parse().ok())
        .collect();
    ips.sort();
    ips
}

/// A TCP proxy inside a node's namespace, from `listen` to `target` (both rack addresses of
/// that namespace), that counts how often `needle` (e.g. `GET /api/v1/dns`) opens a request a
/// client sends through it: how often a role asks the controller, for a plain-HTTP rack.
/// Stops when dropped.
pub struct CountingProxy {
    count: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl CountingProxy {
    /// Starts the proxy in node `node`'s namespace, on the caller's tokio runtime.
    pub async fn start(
        rack: &LocalRack,
        node: &str,
        listen: SocketAddrV4,
        target: SocketAddrV4,
        needle: &'static str,
    ) -> anyhow::Result<CountingProxy> {
        let ns = rack
            .netns(node)
            .with_context(|| format!("node {node} has no namespace in this rack"))?;
        let dialer = Arc::new(torc_net::forward::NetnsDialer::new(ns)?);
        let socket = dialer.tcp_socket().await?;
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::V4(listen))?;
        let listener = socket.listen(64)?;
        let count = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&count);
        let task = tokio::spawn(async move {
            let mut relays = tokio::task::JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let (dialer, counted) = (Arc::clone(&dialer), Arc::clone(&counted));
                relays.spawn(async move {
                    let Ok(upstream) = dialer.connect_tcp(SocketAddr::V4(target)).await else {
                        return;
                    };
                    relay(client, upstream, needle.as_bytes(), &counted).await;
                });
            }
        });
        Ok(CountingProxy { count, task })
    }

    /// Requests seen so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until either side closes, counting `needle` in what the client sends
/// (also across reads: the last bytes of each read are kept).
async fn relay(client: TcpStream, upstream: TcpStream, needle: &[u8], count: &AtomicU64) {
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut up_rx, mut up_tx) = upstream.into_split();
    let requests = async {
        let mut buf = vec![0u8; 16 * 1024];
        let mut carry: Vec<u8> = Vec::new();
        loop {
            let n = match client_rx.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            carry.extend_from_slice(&buf[..n]);
            let found = carry.windows(needle.len()).filter(|w| *w == needle).count();
            count.fetch_add(found as u64, Ordering::SeqCst);
            let keep = carry.len().min(needle.len().saturating_sub(1));
            carry.drain(..carry.len() - keep);
            if up_tx.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up_tx.shutdown().await;
    };
    let answers = async {
        let _ = tokio::io::copy(&mut up_rx, &mut client_tx).await;
        let _ = client_tx.shutdown().await;
    };
    tokio::join!(requests, answers);
}

/// One look at the rack, for a fault's counts: the nodes, every task and the instances of one
/// service as the controller says, the task processes as `/proc` says, and what DNS answers
/// for the service's name.
#[derive(Debug, Clone)]
pub struct Look {
    pub nodes: Vec<torc_api::NodeView>,
    pub tasks: Vec<torc_api::TaskView>,
    /// The instances of the service looked at (`web-0`, `web-1`, ...).
    pub instances: Vec<torc_api::ServiceView>,
    pub processes: Vec<TaskProcess>,
    /// DNS's answer for `<service>.service.torc` (`None`: not asked).
    pub answer: Option<Vec<Ipv4Addr>>,
    /// The addresses of the instances the controller counted running just before DNS was
    /// asked or just after: an answer naming one is not stale, whichever way it raced.
    pub running_around_answer: std::collections::BTreeSet<Ipv4Addr>,
}

/// Looks at the rack and service `service` (and asks DNS for its name when `dns`): the
/// controller first, then `/proc`, then DNS.
pub async fn look(rack: &LocalRack, service: &str, dns: bool) -> anyhow::Result<Look> {
    let client = rack.client();
    let nodes = client.nodes().await?;
    let tasks = client.tasks(&torc_api::TaskFilter::default()).await?;
    let instances = (client.services().await?)
        .into_iter()
        .filter(|s| s.service.as_str() == service)
        .collect();
    let processes = task_processes(rack);
    let mut look = Look {
        nodes,
        tasks,
        instances,
        processes,
        answer: None,
        running_around_answer: Default::default(),
    };
    if dns {
        look.answer = Some(dig_in_rack(rack, &format!("{service}.service.torc")));
        let after = Look {
            instances: (client.services().await?)
                .into_iter()
                .filter(|s| s.service.as_str() == service)
                .collect(),
            ..look.clone()
        };
        look.running_around_answer = look.running_ips();
        look.running_around_answer.extend(after.running_ips());
    }
    Ok(look)
}

impl Look {
    /// The addresses of the service's instances the controller counts running.
    pub fn running_ips(&self) -> std::collections::BTreeSet<Ipv4Addr> {
        (self.instances.iter())
            .filter(|s| s.state == Some(torc_types::TaskState::Running))
            .filter_map(|s| match s.ip {
                Some(std::net::IpAddr::V4(ip)) => Some(ip),
                _ => None,
            })
            .collect()
    }

    /// How many processes run for each task id.
    pub fn processes_by_task(&self) -> BTreeMap<&str, usize> {
        let mut by = BTreeMap::new();
        for p in &self.processes {
            *by.entry(p.task.as_str()).or_insert(0) += 1;
        }
        by
    }

    /// The service's instances that run more than once: by name, the processes of every task
    /// of that instance (the controller's current one and any earlier one still running).
    pub fn duplicated(&self) -> Vec<String> {
        let mut per_instance: BTreeMap<&str, usize> = BTreeMap::new();
        for p in &self.processes {
            if let Some(t) = self.tasks.iter().find(|t| t.id.as_str() == p.task)
                && self.instances.iter().any(|s| s.name == t.name)
            {
                *per_instance.entry(t.name.as_str()).or_insert(0) += 1;
            }
        }
        (per_instance.into_iter())
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Why the rack is not consistent, or `None` when it is: every node active; `instances`
    /// instances of the service, each running (the controller) as exactly one process (the
    /// kernel) on the node the controller says; no process of a task the controller does not
    /// count running there (a surplus); DNS, when asked, answering exactly the running
    /// instances' addresses.
    pub fn inconsistency(&self, instances: usize) -> Option<String> {
        if let Some(n) = self.nodes.iter().find(|n| !n.active) {
            return Some(format!("node {} is inactive", n.name));
        }
        let running: Vec<&torc_api::ServiceView> = (self.instances.iter())
            .filter(|s| s.state == Some(torc_types::TaskState::Running))
            .collect();
        if running.len() != instances {
            return Some(format!(
                "{} of {instances} instances run: {:?}",
                running.len(),
                (self.instances.iter())
                    .map(|s| (s.name.as_str(), s.state))
                    .collect::<Vec<_>>()
            ));
        }
        let by_task = self.processes_by_task();
        for s in &running {
            let task = s.task.as_ref().map(|t| t.as_str()).unwrap_or_default();
            if by_task.get(task).copied() != Some(1) {
                return Some(format!(
                    "instance {} (task {task}) runs as {} processes",
                    s.name,
                    by_task.get(task).copied().unwrap_or(0)
                ));
            }
        }
        for p in &self.processes {
            let wanted = self.tasks.iter().any(|t| {
                t.id.as_str() == p.task
                    && t.state == torc_types::TaskState::Running
                    && t.node.as_ref().is_some_and(|n| n.as_str() == p.node)
            });
            if !wanted {
                return Some(format!(
                    "a surplus process: task {} (pid {}) on {}",
                    p.task, p.pid, p.node
                ));
            }
        }
        if let Some(answer) = &self.answer {
            let want: Vec<Ipv4Addr> = self.running_ips().into_iter().collect();
            if *answer != want {
                return Some(format!("DNS answers {answer:?}, not {want:?}"));
            }
        }
        None
    }

    /// DNS answers of this look that name an address no instance had running, neither just
    /// before DNS was asked nor just after: stale names.
    pub fn stale_answers(&self) -> u64 {
        (self.answer.iter().flatten())
            .filter(|ip| !self.running_around_answer.contains(ip))
            .count() as u64
    }
}

//! Task namespaces: how the agent gives a `network: rack` task a network of its own.
//!
//! The controller picks the task's address from the node's task block (the agent never
//! allocates: it cannot see other nodes, nor give a `pending` reason) and sends it with the
//! task as [`RackAddress`]. The agent checks it ([`TaskAddress::check`]), then makes:
//!
//! - an anonymous network namespace, held only by a file descriptor;
//! - a veth `tk<8 hex>` in the node's namespace whose peer, `eth0`, is created directly in the
//!   task's namespace (one netlink request), labelled with its node and task (its alias,
//!   `torc <node>: task <id>`, shown by `ip link`);
//! - node side: the veth up, with no address yet;
//! - task side: `lo` up, `eth0` `ip/32 peer gateway/32` up, `default via gateway`, and
//!   `net.ipv4.ip_unprivileged_port_start=0` (per namespace: an unprivileged task may bind
//!   `:53` on its own address, as the seed's DNS servers did);
//! - node side, last: once its end carries packets, `gateway/32 peer ip/32` on the veth (the
//!   gateway is the block's first host address, the same on every task veth of the node),
//!   which gives the node its route to the task. Before both ends carry packets, a packet for
//!   the task would delay the first connection by a second (see `NodeSide::route_to_task`).
//!
//! The task's shim is then started inside the namespace (`setns` in its `pre_exec`, see
//! `runtime`) and the agent drops its descriptor.
//!
//! Invariants:
//! - **A task's namespace lives exactly as long as its shim and the processes under it.**
//!   Nothing else holds it once the shim runs: the descriptor and the netlink connection made
//!   inside it are dropped. When the last process in it ends, the kernel removes the namespace,
//!   and with it the veth (both ends) and the node's route to the task. Nothing is freed by
//!   hand, so nothing leaks when the agent dies at any point: a namespace made for a task whose
//!   shim never started dies with the agent's descriptor.
//! - A failed step frees what was made (the veth is deleted, the descriptor dropped) and is
//!   reported naming the step (`cannot create the task's veth tk3fa9c2d1: File exists`).
//! - Everything is done over netlink from sockets made in the namespace they act on; nothing
//!   forks, and no tokio worker changes its namespace (see `torc_net`).
//! - [`TaskNetworks::sweep`] deletes only links named `tk` and 8 hex digits, labelled as this
//!   node's, that no live task of this agent holds: a veth cannot outlive its task's namespace,
//!   so one that is left belongs to a process that escaped its task's end, and is cut off.
//!   Another agent's veths in the same namespace (a loopback rack runs every agent in one) are
//!   never touched.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use nix::errno::Errno;
use torc_api::RackAddress;
use torc_net::observe::{self, OperState};
use torc_net::{IfName, Netlink, Netns, RouteProtocol, addr, link, netns, route};
use torc_types::{Ipv4Block, NodeName, TaskId};

/// How long a task's start waits for the node's end of its veth to carry packets before it
/// routes to the task anyway (the kernel's link watcher takes microseconds, or as long as
/// the routing lock is held by others).
const CARRIER_WAIT: Duration = Duration::from_secs(1);
/// How many veth names a task tries (its hash, then the next ones) before giving up.
const VETH_ATTEMPTS: u32 = 16;
/// The name of the task's end of its veth, inside its namespace.
const TASK_LINK: &str = "eth0";
/// The sysctl that lets an unprivileged process bind a port below it (per namespace).
const UNPRIVILEGED_PORT_START: &str = "net.ipv4.ip_unprivileged_port_start";
/// `CAP_NET_ADMIN`, the capability the netlink steps need.
const CAP_NET_ADMIN: u32 = 12;

/// A task's rack address, checked against its block: the task's end and the node's end
/// (the block's gateway) of its link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TaskAddress {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// Why a rack address cannot be a task's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error(
        "network: rack: the task's address {ip} is not in its block {block} (the node's \
         task_block); the controller sent an address of another block"
    )]
    OutsideBlock { ip: Ipv4Addr, block: Ipv4Block },
    #[error(
        "network: rack: the task's address {ip} is the gateway of its block {block}, the node's \
         end of every task link"
    )]
    Gateway { ip: Ipv4Addr, block: Ipv4Block },
    #[error(
        "network: rack: the task's address {ip} is the network or broadcast address of its \
         block {block}"
    )]
    Reserved { ip: Ipv4Addr, block: Ipv4Block },
    #[error(
        "network: rack: the block {block} is too small for a gateway and a task (a /30 or \
         larger is needed)"
    )]
    TooSmall { block: Ipv4Block },
}

impl TaskAddress {
    /// Checks that `a.ip` is one of the task addresses of `a.block`: inside it, and neither its
    /// gateway nor its network or broadcast address.
    pub fn check(a: &RackAddress) -> Result<TaskAddress, AddressError> {
        let (ip, block) = (a.ip, a.block);
        let gateway = block.gateway().ok_or(AddressError::TooSmall { block })?;
        if !block.contains(ip) {
            return Err(AddressError::OutsideBlock { ip, block });
        }
        if ip == gateway {
            return Err(AddressError::Gateway { ip, block });
        }
        if ip == block.network() || ip == block.last() {
            return Err(AddressError::Reserved { ip, block });
        }
        Ok(TaskAddress { ip, gateway })
    }
}

/// Why a task's network could not be made. Each names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskNetError {
    /// This agent cannot make task namespaces (it said so in its `RuntimeInfo`).
    #[error("network: rack: this agent cannot give a task a network namespace of its own: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A step failed; the message is the step and the kernel's answer.
    #[error("cannot {step}: {}", cause(.source))]
    Step {
        step: String,
        #[source]
        source: torc_net::Error,
    },
    #[error(
        "cannot create the task's veth: tk{first:08x} and the next {} names are taken in the \
         node's namespace",
        VETH_ATTEMPTS - 1
    )]
    NoVethName { first: u32 },
    /// A blocking step's thread did not come back (it panicked).
    #[error("cannot {step}: {source}")]
    Thread {
        step: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// The kernel's (or the OS's) answer behind a torc-net error, without the namespace and step
/// torc-net adds (the agent names its own step): `File exists (os error 17)`.
fn cause(e: &torc_net::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => source.to_string(),
        None => e.to_string(),
    }
}

fn step(step: impl Into<String>) -> impl FnOnce(torc_net::Error) -> TaskNetError {
    let step = step.into();
    move |source| TaskNetError::Step { step, source }
}

/// A task's network, made and not yet handed to its shim: the namespace (to enter in the
/// shim's `pre_exec`) and the name of the node's end of its veth. Dropping it (after the shim
/// entered the namespace, or instead of starting one) leaves the namespace to its processes.
#[derive(Debug)]
pub(crate) struct TaskNamespace {
    ns: Netns,
    veth: IfName,
}

impl TaskNamespace {
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    pub fn veth(&self) -> &IfName {
        &self.veth
    }
}

/// The agent's means to make task namespaces, or why it has none.
pub(crate) struct TaskNetworks {
    state: Result<NodeSide, String>,
}

/// The node's namespace (where the agent runs, and where task veths have their node end), a
/// netlink connection made in it, and the label of this node's task veths.
struct NodeSide {
    ns: Netns,
    nl: Netlink,
    /// `torc <node>: `, the start of the alias of every task veth of this node.
    label: String,
}

/// The alias of a task veth of `node`, without the task: `torc <node>: `.
pub(crate) fn veth_label(node: &NodeName) -> String {
    format!("torc {node}: ")
}

impl TaskNetworks {
    /// Finds out whether this agent (of `node`) can make task namespaces and, when it can,
    /// opens a netlink connection in its own (the node's) namespace. Must be called inside a
    /// tokio runtime.
    pub fn open(node: &NodeName) -> TaskNetworks {
        TaskNetworks {
            state: NodeSide::open(node),
        }
    }

    /// An agent that cannot make task namespaces, for `why` (tests).
    #[cfg(test)]
    pub fn unavailable(why: &str) -> TaskNetworks {
        TaskNetworks {
            state: Err(why.to_string()),
        }
    }

    /// What the agent reports in its `RuntimeInfo`: whether it can, and if not, why.
    pub fn capability(&self) -> (bool, Option<String>) {
        match &self.state {
            Ok(_) => (true, None),
            Err(why) => (false, Some(why.clone())),
        }
    }

    /// Checks a task's rack address and that this agent can give it a namespace: what can be
    /// refused at once, before the task is recorded as starting.
    pub fn check(&self, a: &RackAddress) -> Result<TaskAddress, TaskNetError> {
        let address = TaskAddress::check(a)?;
        match &self.state {
            Ok(_) => Ok(address),
            Err(why) => Err(TaskNetError::Unavailable(why.clone())),
        }
    }

    /// Makes the network of task `id` (see the module doc). On failure whatever was made is
    /// freed, and the error names the step.
    pub async fn prepare(
        &self,
        id: &TaskId,
        address: TaskAddress,
    ) -> Result<TaskNamespace, TaskNetError> {
        let node = self
            .state
            .as_ref()
            .map_err(|why| TaskNetError::Unavailable(why.clone()))?;
        let label = format!("task {id}");
        let ns = blocking("create the task's network namespace", move || {
            netns::create_anonymous(&label)
        })
        .await?
        .map_err(step("create the task's network namespace"))?;
        let veth = node.add_veth(id, &ns).await?;
        // The node's route to the task comes last, once both ends of the veth carry packets:
        // see `NodeSide::route_to_task`.
        let made = async {
            node.label(&veth, id).await?;
            node.set_up(&veth).await?;
            configure_task_end(&ns, address).await?;
            node.route_to_task(&veth, address).await
        }
        .await;
        match made {
            Ok(()) => Ok(TaskNamespace { ns, veth }),
            Err(e) => {
                // Deleting the node's end removes both; dropping `ns` then frees the namespace.
                if let Err(cleanup) = link::delete(&node.nl, &veth).await {
                    tracing::warn!(task = %id, veth = %veth, error = %cleanup, "cannot delete the veth of a task whose network failed");
                }
                Err(e)
            }
        }
    }

    /// Deletes every task veth of this node (`tk` and 8 hex digits, labelled as this node's)
    /// that is not in `keep` (the veths of this agent's live tasks), and answers the names
    /// deleted.
    pub async fn sweep(&self, keep: &BTreeSet<String>) -> Result<Vec<String>, TaskNetError> {
        let Ok(node) = &self.state else {
            return Ok(Vec::new());
        };
        let mut deleted = Vec::new();
        let links = link::aliases(&node.nl)
            .await
            .map_err(step("list the node's links"))?;
        for (name, alias) in links {
            let ours = alias.is_some_and(|a| a.starts_with(&node.label));
            if !is_task_veth(&name) || !ours || keep.contains(&name) {
                continue;
            }
            let veth = IfName::new(&name).map_err(step("name a task veth"))?;
            if link::delete(&node.nl, &veth)
                .await
                .map_err(step(format!("delete the stale task veth {veth}")))?
            {
                tracing::warn!(%veth, "deleted a task veth no live task holds");
                deleted.push(name);
            }
        }
        Ok(deleted)
    }
}

impl NodeSide {
    fn open(node: &NodeName) -> Result<NodeSide, String> {
        match netns::can_create() {
            Ok(true) => {}
            Ok(false) => {
                return Err(
                    "not privileged: making a network namespace needs CAP_SYS_ADMIN \
                            (and CAP_NET_ADMIN to configure it)"
                        .into(),
                );
            }
            Err(e) => return Err(format!("cannot tell whether it may make namespaces: {e}")),
        }
        if !may_configure() {
            return Err("not privileged: configuring a task's link needs CAP_NET_ADMIN".into());
        }
        let ns = Netns::current().map_err(|e| format!("cannot open its own namespace: {e}"))?;
        let nl = Netlink::current().map_err(|e| format!("cannot open netlink: {e}"))?;
        Ok(NodeSide {
            ns,
            nl,
            label: veth_label(node),
        })
    }

    /// Labels the task veth `veth` as task `id`'s of this node (its alias), for `ip link` and
    /// for the sweep.
    async fn label(&self, veth: &IfName, id: &TaskId) -> Result<(), TaskNetError> {
        link::set_alias(&self.nl, veth, &format!("{}task {id}", self.label))
            .await
            .map_err(step(format!("label the task's veth {veth}")))?;
        Ok(())
    }

    /// Creates the task's veth: the node's end `tk<hash>` here, the task's end `eth0` directly
    /// in `task_ns`. A name that exists already (another task's hash, or a leftover) is skipped
    /// for the next one.
    async fn add_veth(&self, id: &TaskId, task_ns: &Netns) -> Result<IfName, TaskNetError> {
        let task_link = IfName::new(TASK_LINK).map_err(step("name the task's link"))?;
        for attempt in 0..VETH_ATTEMPTS {
            let veth = veth_name_of(id, attempt);
            match link::add_veth(&self.nl, &veth, &self.ns, &task_link, task_ns).await {
                Ok(()) => return Ok(veth),
                Err(e) if e.raw_os_error() == Some(Errno::EEXIST as i32) => {
                    tracing::debug!(task = %id, veth = %veth, "veth name taken; trying the next");
                }
                Err(e) => return Err(step(format!("create the task's veth {veth}"))(e)),
            }
        }
        Err(TaskNetError::NoVethName {
            first: fnv1a(id.as_str().as_bytes()),
        })
    }

    /// Sets the node's end of the veth up. It has no address yet, so the node has no route
    /// to the task.
    async fn set_up(&self, veth: &IfName) -> Result<(), TaskNetError> {
        link::set_up(&self.nl, veth)
            .await
            .map_err(step(format!("set the task's veth {veth} up")))?;
        Ok(())
    }

    /// Gives the node's end `gateway/32 peer ip/32`, which gives the node its route to the
    /// task: called last, once the task's end is up with its address and the node's end
    /// carries packets (its operational state is up), waiting for that at most
    /// [`CARRIER_WAIT`].
    ///
    /// Why: a veth end that went up before its peer sends nothing (its queue is the kernel's
    /// no-op one) until the kernel's link watcher, a deferred job that waits for the
    /// routing lock, sees the carrier come; the end that goes up second sends at once. A
    /// packet for the task arriving in between (a client retrying while the task starts)
    /// makes the node ask for the task's hardware address, and when the request or its answer
    /// is dropped, the kernel asks again only a second later (`retrans_time`): the first
    /// connection to the task waited that second (1 to 4% of starts in
    /// `cargo bench -p torc --bench network`).
    async fn route_to_task(&self, veth: &IfName, address: TaskAddress) -> Result<(), TaskNetError> {
        let deadline = tokio::time::Instant::now() + CARRIER_WAIT;
        loop {
            let port = observe::port(&self.nl, veth)
                .await
                .map_err(step(format!("look up the task's veth {veth}")))?;
            if port.oper_state == OperState::Up {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(%veth, state = %port.oper_state, "a task's veth does not carry packets yet; routing to the task anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let TaskAddress { ip, gateway } = address;
        addr::add_peer(&self.nl, veth, gateway, ip)
            .await
            .map_err(step(format!(
                "give the task's veth {veth} the address {gateway}/32 peer {ip}/32"
            )))?;
        Ok(())
    }
}

/// The task's end, inside its namespace: `lo` and `eth0` up, `ip/32 peer gateway/32`, the
/// default route through the node, and low ports for unprivileged processes. The netlink
/// connection made inside is dropped on return, so it does not hold the namespace.
async fn configure_task_end(ns: &Netns, address: TaskAddress) -> Result<(), TaskNetError> {
    let TaskAddress { ip, gateway } = address;
    let inside = ns
        .try_clone()
        .map_err(step("open the task's namespace again"))?;
    let nl = blocking("connect to netlink in the task's namespace", move || {
        netns::connect_in(&inside)
    })
    .await?
    .map_err(step("connect to netlink in the task's namespace"))?;
    let (lo, eth0) = (
        IfName::new("lo").map_err(step("name lo"))?,
        IfName::new(TASK_LINK).map_err(step("name the task's link"))?,
    );
    link::set_up(&nl, &lo)
        .await
        .map_err(step("set lo up in the task's namespace"))?;
    addr::add_peer(&nl, &eth0, ip, gateway)
        .await
        .map_err(step(format!(
            "give {eth0} the address {ip}/32 peer {gateway}/32 in the task's namespace"
        )))?;
    link::set_up(&nl, &eth0)
        .await
        .map_err(step(format!("set {eth0} up in the task's namespace")))?;
    // RTPROT_BOOT, as `ip route add` writes it: 116 means the network agent's switch routes.
    route::add_default(&nl, gateway, RouteProtocol::BOOT)
        .await
        .map_err(step(format!("add the task's default route via {gateway}")))?;
    drop(nl);
    let inside = ns
        .try_clone()
        .map_err(step("open the task's namespace again"))?;
    let what = format!("set {UNPRIVILEGED_PORT_START}=0 in the task's namespace");
    blocking("write a sysctl in the task's namespace", move || {
        netns::write_sysctl(&inside, UNPRIVILEGED_PORT_START, "0")
    })
    .await?
    .map_err(step(what))?;
    Ok(())
}

/// Runs `f` (which enters a namespace on a short-lived thread of its own and waits for it) on
/// the blocking pool, so the agent's runtime workers never wait for a thread.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, TaskNetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| TaskNetError::Thread { step: what, source })
}

/// The name task `id`'s veth tries at `attempt` (0 first): `tk` and 8 hex digits of its hash
/// (plus `attempt`).
pub(crate) fn veth_name_of(id: &TaskId, attempt: u32) -> IfName {
    veth_name(fnv1a(id.as_str().as_bytes()).wrapping_add(attempt))
}

/// `tk` and 8 lower-case hex digits: 10 characters, within the kernel's 15.
fn veth_name(hash: u32) -> IfName {
    IfName::new(&format!("tk{hash:08x}")).expect("10 characters of letters and digits")
}

/// Whether `name` is a task veth's node end, as [`veth_name`] makes them.
pub(crate) fn is_task_veth(name: &str) -> bool {
    name.len() == 10
        && name.starts_with("tk")
        && name[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// FNV-1a, 32 bits: a short name that is the same for a task id on every run.
fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// Whether this process may configure links and addresses (`CAP_NET_ADMIN`).
pub(crate) fn may_configure() -> bool {
    has_capability(CAP_NET_ADMIN)
}

/// Whether `capability` is in this process's effective set (`CapEff` in /proc/self/status).
fn has_capability(capability: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << capability) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rack(ip: &str, block: &str) -> RackAddress {
        RackAddress {
            ip: ip.parse().unwrap(),
            block: block.parse().unwrap(),
        }
    }

    #[test]
    fn an_address_must_be_a_task_address_of_its_block() {
        assert_eq!(
            TaskAddress::check(&rack("198.19.1.2", "198.19.1.0/24")).unwrap(),
            TaskAddress {
                ip: "198.19.1.2".parse().unwrap(),
                gateway: "198.19.1.1".parse().unwrap(),
            }
        );
        for (ip, block, why) in [
            (
                "198.19.2.5",
                "198.19.1.0/24",
                "is not in its block 198.19.1.0/24",
            ),
            ("198.19.1.1", "198.19.1.0/24", "is the gateway of its block"),
            ("198.19.1.0", "198.19.1.0/24", "network or broadcast"),
            ("198.19.1.255", "198.19.1.0/24", "network or broadcast"),
            ("198.19.1.1", "198.19.1.0/31", "too small"),
        ] {
            let e = TaskAddress::check(&rack(ip, block))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{ip} in {block}: {e}");
        }
    }

    #[test]
    fn veth_names_fit_the_kernel_and_are_recognised() {
        let name = veth_name(fnv1a(b"web.000001"));
        assert_eq!(name.as_str().len(), 10);
        assert!(is_task_veth(name.as_str()));
        assert_eq!(veth_name(0xdead_beef).as_str(), "tkdeadbeef");
        for other in [
            "tk",
            "tkdeadbee",
            "tkdeadbeef0",
            "tkDEADBEEF",
            "swp1",
            "eth0",
            "tkxyzxyzxy",
        ] {
            assert!(!is_task_veth(other), "{other}");
        }
        // FNV-1a's published check value.
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn a_failed_step_names_itself_and_the_kernels_answer() {
        let e = TaskNetError::Step {
            step: "create the task's veth tk3fa9c2d1".into(),
            source: torc_net::Error::Netlink {
                ns: "the current namespace".into(),
                step: "create veth tk3fa9c2d1".into(),
                source: std::io::Error::from_raw_os_error(Errno::EEXIST as i32),
            },
        };
        assert_eq!(
            e.to_string(),
            "cannot create the task's veth tk3fa9c2d1: File exists (os error 17)"
        );
    }
}

//! `network: rack` tasks against a real kernel: the agent's own code (its `apply`, the
//! `ProcessRuntime`, the task namespaces of `network`) running inside a node's namespace.
//!
//! The tests that build namespaces run as root only (CI runs as root); elsewhere each prints
//! `skipped: needs CAP_NET_ADMIN` and passes. The node's namespace is an anonymous one made
//! here and entered by the thread that runs the agent, so the agent's runtime, its netlink
//! connection and every process it forks start inside it, as under `torc up`. Addresses come
//! from 198.19.1.0/24 (in 198.18.0.0/15) and exist only inside these namespaces; every socket
//! that sends is made inside the node's namespace.
//!
//! The shim is a stand-in that execs the task (`FakeShim::exec`): the namespace is entered in
//! `ProcessRuntime::start`'s `pre_exec`, before the shim runs.

use std::future::Future;
use std::os::fd::AsFd as _;
use std::time::Instant;

use tokio::io::AsyncReadExt as _;
use torc_api::{DesiredState, DesiredTask, RackAddress, Resolver};
use torc_net::observe::{Announcement, OperState};
use torc_net::{IfName, Netlink, Netns, RouteProtocol, link, netns, observe};
use torc_types::{TaskNetwork, TaskSpec};

use super::tests::{FakeShim, adopts_after_crash, agent_with, crash_after_spawn};
use super::*;

const BLOCK: &str = "198.19.1.0/24";
const GATEWAY: &str = "198.19.1.1";
/// The port the test task listens on, on its own address in its own namespace.
const PORT: u16 = 7000;
/// The task: listens on its address (`$IP`, its first argument) and answers each connection
/// with what it sees: its address, its variables, the peer, and the lowest port it may bind.
const LISTENER: &str = r#"
import json, os, socket, sys
s = socket.socket()
s.bind((sys.argv[1], 7000))
s.listen()
low = open("/proc/sys/net/ipv4/ip_unprivileged_port_start").read().strip()
env = {k: os.environ.get(k) for k in ("HOST", "TORC_TASK_IP", "TORC_NODE_IP")}
resolv = open("/etc/resolv.conf").read()
while True:
    c, peer = s.accept()
    c.sendall(json.dumps({"ip": sys.argv[1], "env": env, "peer": peer[0], "low": low,
                          "resolv": resolv}).encode())
    c.close()
"#;

/// Whether this process may make and configure namespaces; if not, says so on one line.
fn privileged() -> bool {
    let capable = netns::can_create().unwrap_or(false) && crate::network::may_configure();
    if !capable {
        println!("skipped: needs CAP_NET_ADMIN");
    }
    capable
}

/// A node to test on: an agent (opened inside the node's namespace) with its data directory
/// and the stand-in shim. Dropped in this order: the agent, then every task the shim started
/// (killed), then the directory.
struct Node {
    agent: Arc<Agent>,
    shim: FakeShim,
    dir: tempfile::TempDir,
}

/// Runs `body` with a [`Node`] on a thread inside a new network namespace (the node's), on a
/// tokio runtime whose threads all start there; does nothing but say so when this process may
/// not make namespaces. The node outlives `body` (lent, not given: a body that moved it in
/// would drop the parts it does not use at once). A panic in `body` fails the test.
fn on_a_node<F>(body: F)
where
    F: AsyncFnOnce(&Node) + Send + 'static,
{
    if !privileged() {
        return;
    }
    let outcome = in_a_new_netns(|| async {
        let dir = tempfile::tempdir().unwrap();
        let shim = FakeShim::exec(dir.path());
        let agent = agent_with(dir.path(), shim.exe.clone());
        let node = Node { agent, shim, dir };
        body(&node).await;
    });
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Runs `body` on a thread inside a new network namespace (a node's), on a tokio runtime
/// whose threads all start there (the process stays in its own namespace, as containerd's
/// would under `torc up`). A panic in `body` is returned, for the caller to resume after its
/// own clean-up.
pub(super) fn in_a_new_netns<F, Fut>(body: F) -> std::thread::Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let node = netns::create_anonymous("the test's node").unwrap();
    std::thread::spawn(move || {
        netns::enter(node.as_fd()).unwrap();
        drop(node);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(body());
    })
    .join()
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

pub(super) fn rack_task(id: &str, address: &str, block: &str) -> DesiredTask {
    let mut spec = TaskSpec::new("web".parse().unwrap(), "python3");
    spec.args = vec!["-c".into(), LISTENER.into(), "$IP".into()];
    spec.network = TaskNetwork::Rack;
    DesiredTask {
        id: TaskId::new(id).unwrap(),
        spec,
        ports: Vec::new(),
        launch: true,
        registry: None,
        pull_timeout_seconds: None,
        rack_address: Some(RackAddress {
            ip: ip(address),
            block: block.parse().unwrap(),
        }),
        resolver: Some(Resolver {
            nameserver: ip("198.18.0.20"),
            search: vec!["service.torc".into(), "homer.ave".into()],
        }),
        files: Default::default(),
    }
}

fn desired(generation: u64, tasks: Vec<DesiredTask>) -> DesiredState {
    DesiredState {
        epoch: 1,
        generation,
        tasks,
    }
}

/// Waits until `check` answers `Some`, for at most 20 s.
async fn wait_until<T, Fut: Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> Fut,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The task once it is in `state`; on a timeout, the failure shows the task as it is.
async fn task_in(agent: &Agent, id: &str, state: TaskState) -> LocalTask {
    let id = TaskId::new(id).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let task = agent.lock().tasks.get(&id).cloned();
        match task {
            Some(task) if task.state == state => return task,
            other => assert!(
                Instant::now() < deadline,
                "timed out waiting for {id} to be {state}: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The task veths of the calling thread's namespace (the node's), sorted.
async fn task_veths() -> Vec<String> {
    let nl = Netlink::current().unwrap();
    let mut names: Vec<String> = observe::ports(&nl)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .filter(|n| crate::network::is_task_veth(n))
        .collect();
    names.sort();
    names
}

/// What the task at `address` answers, from a socket of the node's namespace (retried until
/// it listens).
async fn ask(address: &str) -> serde_json::Value {
    let address = ip(address);
    wait_until(&format!("{address}:{PORT} to answer"), || async move {
        let mut stream = tokio::net::TcpStream::connect((address, PORT)).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        serde_json::from_slice(&answer).ok()
    })
    .await
}

/// The identity of the network namespace process `pid` is in.
fn netns_of(pid: u32) -> (u64, u64) {
    Netns::open(&format!("/proc/{pid}/ns/net"))
        .unwrap()
        .id()
        .unwrap()
}

#[test]
fn a_rack_task_runs_on_its_own_address_and_its_network_goes_with_it() {
    on_a_node(async |node| {
        let agent = &node.agent;
        let info = agent.runtime_info();
        assert!(info.rack_network, "{info:?}");
        assert_eq!(info.rack_network_note, None);
        assert!(task_veths().await.is_empty(), "a new node has no task veth");

        agent
            .apply(desired(
                1,
                vec![rack_task("web.000001", "198.19.1.7", BLOCK)],
            ))
            .await;
        let task = task_in(agent, "web.000001", TaskState::Running).await;
        let net = task.net.clone().expect("a rack task keeps its network");
        assert_eq!(net.address, ip("198.19.1.7"));
        let veth = net.veth.expect("its veth is recorded");
        assert_eq!(task_veths().await, std::slice::from_ref(&veth));
        let labels: BTreeMap<String, Option<String>> = link::aliases(&Netlink::current().unwrap())
            .await
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            labels[&veth].as_deref(),
            Some("torc n1: task web.000001"),
            "ip link shows whose veth it is"
        );
        let pid = task.handle.as_ref().unwrap().pid;
        let node = Netns::current().unwrap().id().unwrap();
        assert_ne!(netns_of(pid), node, "the task has a namespace of its own");

        // From the node: the task answers on its own address, and sees the node's end of
        // its link as the peer.
        let answer = ask("198.19.1.7").await;
        assert_eq!(answer["ip"], "198.19.1.7", "{answer}");
        assert_eq!(answer["env"]["HOST"], "198.19.1.7", "{answer}");
        assert_eq!(answer["env"]["TORC_TASK_IP"], "198.19.1.7", "{answer}");
        assert_eq!(answer["env"]["TORC_NODE_IP"], "127.0.0.1", "{answer}");
        assert_eq!(answer["peer"], GATEWAY, "{answer}");
        assert_eq!(
            answer["low"], "0",
            "an unprivileged task may bind :53: {answer}"
        );
        assert_eq!(
            answer["resolv"], "nameserver 198.18.0.20\nsearch service.torc homer.ave\n",
            "the task resolves through the rack's nameserver: {answer}"
        );
        assert_ne!(
            std::fs::read_to_string("/etc/resolv.conf").unwrap(),
            answer["resolv"].as_str().unwrap(),
            "the node's own resolv.conf is untouched"
        );

        // Killed: its namespace goes with its last process, and takes the veth along.
        agent.apply(desired(2, Vec::new())).await;
        task_in(agent, "web.000001", TaskState::Killed).await;
        wait_until("the task's veth to go", || async {
            task_veths().await.is_empty().then_some(())
        })
        .await;
    });
}

/// The node's route to a rack task appears only once the task's veth carries packets both
/// ways: the task's end up with its address, the node's end operationally up. A route there
/// earlier let a packet for the task (a client retrying while the task starts) make the node
/// ask for the task's hardware address while one end still dropped what it sent; the kernel
/// asks again only a second later, and the first connection waited that long.
#[test]
fn a_rack_tasks_route_on_its_node_comes_once_its_veth_carries_packets() {
    on_a_node(async |node| {
        let agent = &node.agent;
        let here = Netns::current().unwrap();
        let announced = observe::Announcements::open(&here, RouteProtocol::TORC).unwrap();
        agent
            .apply(desired(
                1,
                vec![rack_task("web.000001", "198.19.1.7", BLOCK)],
            ))
            .await;
        let task = task_in(agent, "web.000001", TaskState::Running).await;
        let veth = task.net.and_then(|n| n.veth).expect("its veth is recorded");
        let read = announced.read().unwrap();
        let route = read
            .iter()
            .position(|a| {
                matches!(a, Announcement::Route(e)
                    if e.added && e.route.dst == ip("198.19.1.7") && e.route.dst_len == 32)
            })
            .expect("the node has a route to its task");
        let carrying = read.iter().position(|a| {
            matches!(a, Announcement::Link { removed: false, port }
                if port.name == veth && port.oper_state == OperState::Up)
        });
        assert!(
            carrying.is_some_and(|c| c < route),
            "the node routed to its task before {veth} carried packets: {read:#?}"
        );
        assert!(
            matches!(&read[route], Announcement::Route(e) if !e.linkdown),
            "{:?}",
            read[route]
        );
    });
}

/// The controller's address is checked before anything is made: one outside the task's
/// block, or the block's gateway, fails the task with the reason, and nothing starts. So
/// does a rack task on an agent that cannot make namespaces. (No namespace is made here.)
#[tokio::test]
async fn a_rack_address_that_cannot_be_the_tasks_fails_it_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let shim = FakeShim::exec(dir.path());
    let mut agent = agent_with(dir.path(), shim.exe.clone());
    agent
        .apply(desired(
            1,
            vec![
                rack_task("web.000001", "198.19.2.5", BLOCK),
                rack_task("web.000002", GATEWAY, BLOCK),
            ],
        ))
        .await;
    for (id, why) in [
        (
            "web.000001",
            "the task's address 198.19.2.5 is not in its block 198.19.1.0/24",
        ),
        ("web.000002", "198.19.1.1 is the gateway of its block"),
    ] {
        let task = agent.lock().tasks[&TaskId::new(id).unwrap()].clone();
        assert_eq!(task.state, TaskState::Failed, "{task:?}");
        let message = task.message.unwrap_or_default();
        assert!(message.contains(why), "{id}: {message}");
        assert!(task.handle.is_none());
        assert!(
            !dir.path().join("sandboxes").join(id).exists(),
            "{id} started"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    agent = agent_with(dir.path(), shim.exe.clone());
    Arc::get_mut(&mut agent).unwrap().networks =
        TaskNetworks::unavailable("not privileged: making a network namespace needs CAP_SYS_ADMIN");
    let info = agent.runtime_info();
    assert!(!info.rack_network);
    assert_eq!(
        info.rack_network_note.as_deref(),
        Some("not privileged: making a network namespace needs CAP_SYS_ADMIN")
    );
    agent
        .apply(desired(
            1,
            vec![rack_task("web.000003", "198.19.1.3", BLOCK)],
        ))
        .await;
    let task = agent.lock().tasks[&TaskId::new("web.000003").unwrap()].clone();
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert_eq!(
        task.message.as_deref(),
        Some(
            "network: rack: this agent cannot give a task a network namespace of its own: not \
             privileged: making a network namespace needs CAP_SYS_ADMIN"
        )
    );
}

/// A veth name that is taken (another task's hash, a leftover) is skipped for the next one.
/// The sweep at the agent's start deletes a leftover of its node's and keeps the live task's
/// veth, another agent's (a loopback rack runs every agent in one namespace) and one torc did
/// not label.
#[test]
fn a_taken_veth_name_is_skipped_and_a_leftover_is_swept() {
    on_a_node(async |node| {
        let agent = &node.agent;
        let first = crate::network::veth_name_of(&TaskId::new("web.000001").unwrap(), 0);
        let ns = Netns::current().unwrap();
        let nl = Netlink::current().unwrap();
        let ours = crate::network::veth_label(&"n1".parse().unwrap());
        for (name, peer, alias) in [
            (
                first.as_str(),
                "leftover",
                Some(format!("{ours}task web.000000")),
            ),
            (
                "tk0000000a",
                "other",
                Some("torc n2: task web.000002".into()),
            ),
            ("tk0000000b", "unlabelled", None),
        ] {
            let name = IfName::new(name).unwrap();
            link::add_veth(&nl, &name, &ns, &IfName::new(peer).unwrap(), &ns)
                .await
                .unwrap();
            if let Some(alias) = alias {
                link::set_alias(&nl, &name, &alias).await.unwrap();
            }
        }

        agent
            .apply(desired(
                1,
                vec![rack_task("web.000001", "198.19.1.9", BLOCK)],
            ))
            .await;
        let task = task_in(agent, "web.000001", TaskState::Running).await;
        let veth = task.net.unwrap().veth.unwrap();
        let second = crate::network::veth_name_of(&TaskId::new("web.000001").unwrap(), 1);
        assert_eq!(veth, second.as_str());
        assert_eq!(task_veths().await.len(), 4);

        agent.sweep_task_veths().await;
        let mut kept = vec![veth, "tk0000000a".into(), "tk0000000b".into()];
        kept.sort();
        assert_eq!(task_veths().await, kept, "only the node's leftover went");
        assert_eq!(ask("198.19.1.9").await["ip"], "198.19.1.9");
    });
}

/// An agent that dies right after starting a rack task's shim: the next one adopts the task,
/// keeps its veth out of the sweep, and the task still answers on its address.
#[test]
fn a_rack_task_is_adopted_after_an_agent_crash_with_its_network() {
    on_a_node(async |node| {
        let first = &node.agent;
        crash_after_spawn(first);
        let doc = desired(1, vec![rack_task("web.000001", "198.19.1.4", BLOCK)]);
        first.apply(doc.clone()).await;
        let id = TaskId::new("web.000001").unwrap();
        let pid = node.shim.starts(&id, 1)[0];
        assert_eq!(ask("198.19.1.4").await["ip"], "198.19.1.4");

        let (second, task) =
            adopts_after_crash(node.dir.path(), node.shim.exe.clone(), doc, &id, pid).await;
        second.sweep_task_veths().await;
        let veth = task.net.unwrap().veth.unwrap();
        assert_eq!(
            task_veths().await,
            [veth],
            "the sweep kept the live task's veth"
        );
        assert_eq!(ask("198.19.1.4").await["ip"], "198.19.1.4");
    });
}

/// A task whose network cannot be made fails with the step that failed, and leaves nothing
/// behind: here every veth name it may take is taken.
#[test]
fn a_task_whose_network_cannot_be_made_fails_naming_the_step() {
    on_a_node(async |node| {
        let agent = &node.agent;
        let id = TaskId::new("web.000001").unwrap();
        let ns = Netns::current().unwrap();
        let nl = Netlink::current().unwrap();
        for attempt in 0..16 {
            let name = crate::network::veth_name_of(&id, attempt);
            let peer = IfName::new(&format!("taken{attempt}")).unwrap();
            link::add_veth(&nl, &name, &ns, &peer, &ns).await.unwrap();
        }

        agent
            .apply(desired(
                1,
                vec![rack_task("web.000001", "198.19.1.5", BLOCK)],
            ))
            .await;
        let task = task_in(agent, "web.000001", TaskState::Failed).await;
        let first = crate::network::veth_name_of(&id, 0);
        assert_eq!(
            task.message.as_deref(),
            Some(
                format!(
                    "cannot create the task's veth: {first} and the next 15 names are taken in \
                     the node's namespace"
                )
                .as_str()
            )
        );
        assert!(task.handle.is_none(), "no shim was started");
        assert_eq!(
            task_veths().await.len(),
            16,
            "nothing of the task's is left"
        );
        assert!(!node.dir.path().join("sandboxes").join(id.as_str()).exists());
    });
}

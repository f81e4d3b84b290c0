//! torc-net against the real kernel: namespaces, veths, addresses, owned routes, observation and
//! the forwarder, in namespaces made for each test (random `torc-<6 hex>-` prefix, removed at
//! the end, panics included). Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (CI runs as root); without
//! them each test prints `skipped: needs CAP_NET_ADMIN` and passes.
//!
//! Nothing here sends from the host's namespace to a rack address: every socket that reaches a
//! rack address is made inside a namespace by a `NetnsDialer`, and the host only talks to
//! 127.0.0.1 (the forwarder's listeners). Each test checks its namespaces exist before sending.

mod common;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use common::{TestRack, privileged, wait_until};
use torc_net::forward::{self, NetnsDialer, TcpOptions, UdpOptions};
use torc_net::observe::{self, Announcement, OperState};
use torc_net::routes::Plan;
use torc_net::rtnetlink::RouteMessageBuilder;
use torc_net::{
    Error, IfName, Netlink, Netns, Op, Owner, RouteProtocol, addr, link, netns, route, routes,
};

const WEDGE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 20);
const NODE_A: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 21);
const NODE_B: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 22);
/// A task's address on node b (in b's block of the design, inside 198.18.0.0/15).
const TASK_B: Ipv4Addr = Ipv4Addr::new(198, 19, 2, 2);
/// Where a foreign (static) route points on the switch.
const FOREIGN: Ipv4Addr = Ipv4Addr::new(198, 19, 9, 10);
const TORC: RouteProtocol = RouteProtocol::TORC;
const SOON: Duration = Duration::from_secs(10);

fn ifname(name: &str) -> IfName {
    IfName::new(name).unwrap()
}

/// The design's rack in miniature: the switch `wedge` (198.18.0.20 on lo and on every port)
/// with swp1 ↔ eth0 of node a (198.18.0.21) and swp2 ↔ eth0 of node b (198.18.0.22), each
/// link `/32 peer /32`, forwarding on in the switch, nodes with a default route through it,
/// and node b holding the task address 198.19.2.2 on its lo.
struct Lab {
    rack: TestRack,
    wedge: Netns,
    a: Netns,
    b: Netns,
    switch: Netlink,
}

async fn build_lab() -> Lab {
    let rack = TestRack::new();
    let (wedge, a, b) = (rack.create("wedge"), rack.create("a"), rack.create("b"));
    let switch = netns::connect_in(&wedge).unwrap();
    let (lo, eth0) = (ifname("lo"), ifname("eth0"));
    link::add_veth(&switch, &ifname("swp1"), &wedge, &eth0, &a)
        .await
        .unwrap();
    link::add_veth(&switch, &ifname("swp2"), &wedge, &eth0, &b)
        .await
        .unwrap();
    link::set_up(&switch, &lo).await.unwrap();
    addr::add_host(&switch, &lo, WEDGE).await.unwrap();
    for (port, node) in [("swp1", NODE_A), ("swp2", NODE_B)] {
        addr::add_peer(&switch, &ifname(port), WEDGE, node)
            .await
            .unwrap();
        link::set_up(&switch, &ifname(port)).await.unwrap();
    }
    route::set_forwarding(&wedge, true).unwrap();
    for (ns, me) in [(&a, NODE_A), (&b, NODE_B)] {
        let node = netns::connect_in(ns).unwrap();
        link::set_up(&node, &lo).await.unwrap();
        addr::add_peer(&node, &eth0, me, WEDGE).await.unwrap();
        link::set_up(&node, &eth0).await.unwrap();
        route::add_default(&node, WEDGE, RouteProtocol::BOOT)
            .await
            .unwrap();
    }
    let node_b = netns::connect_in(&b).unwrap();
    addr::add_host(&node_b, &lo, TASK_B).await.unwrap();
    Lab {
        rack,
        wedge,
        a,
        b,
        switch,
    }
}

/// A TCP server made inside a namespace (by `dialer`) on `at`: for each line it answers
/// `PEER LINE`, so the client sees the address the server saw it from.
async fn echo_tcp(dialer: &NetnsDialer, at: SocketAddr) -> SocketAddr {
    let socket = dialer.tcp_socket().await.unwrap();
    socket.bind(at).unwrap();
    let listener = socket.listen(16).unwrap();
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let answer = format!("{} {line}\n", peer.ip());
                    if write.write_all(answer.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    bound
}

/// Sends `line` on `stream` and reads the answer line.
async fn ask(stream: &mut TcpStream, line: &str) -> String {
    stream
        .write_all(format!("{line}\n").as_bytes())
        .await
        .unwrap();
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(SOON, reader.read_line(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    answer.trim_end().to_string()
}

/// The plan for the switch's owned routes, given `desired` and what the switch has now.
async fn plan_for(lab: &Lab, desired: &[(Ipv4Addr, Ipv4Addr)]) -> Plan {
    let desired: BTreeMap<Ipv4Addr, Ipv4Addr> = desired.iter().copied().collect();
    let observed = observe::routes(&lab.switch, TORC).await.unwrap();
    let local = observe::local_addrs(&lab.switch).await.unwrap();
    routes::plan(&desired, &observed, &local)
}

/// Plans the switch's owned routes for `desired`, applies the plan, and answers the operations.
async fn reconcile(lab: &Lab, desired: &[(Ipv4Addr, Ipv4Addr)]) -> Vec<Op> {
    let desired: BTreeMap<Ipv4Addr, Ipv4Addr> = desired.iter().copied().collect();
    let (plan, outcomes) = route::reconcile(&lab.switch, &desired, TORC).await.unwrap();
    for (op, outcome) in outcomes {
        outcome.unwrap_or_else(|e| panic!("{op}: {e}"));
    }
    plan.ops
}

/// The switch's route to `dst`, printed as `ip route` would, and its owner.
async fn switch_route(lab: &Lab, dst: Ipv4Addr) -> Option<(String, Owner)> {
    let routes = observe::routes(&lab.switch, TORC).await.unwrap();
    let route = routes.into_iter().find(|r| r.dst == dst)?;
    Some((route.to_string(), route.owner))
}

/// The echo service on the task address of node b, and a dialer in node a to reach it.
async fn task_service(lab: &Lab) -> (NetnsDialer, SocketAddr) {
    let from_a = NetnsDialer::new(&lab.a).unwrap();
    let in_b = NetnsDialer::new(&lab.b).unwrap();
    // The listening socket stays in b after its dialer is gone.
    let service = echo_tcp(&in_b, SocketAddr::from((TASK_B, 0))).await;
    (from_a, service)
}

/// Connecting fails at once with "network unreachable" (the switch has no route).
async fn assert_unreachable(from: &NetnsDialer, service: SocketAddr) {
    use nix::errno::Errno;
    let refused = tokio::time::timeout(SOON, from.connect_tcp(service))
        .await
        .expect("the switch answers at once")
        .unwrap_err();
    let code = refused.raw_os_error();
    assert!(
        code == Some(Errno::ENETUNREACH as i32) || code == Some(Errno::EHOSTUNREACH as i32),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_crosses_the_switch_only_while_its_route_exists() {
    if !privileged() {
        return;
    }
    let lab = build_lab().await;
    lab.rack.assert_namespaces(&["wedge", "a", "b"]).await;
    let (from_a, service) = task_service(&lab).await;

    // No route to the task on the switch: the switch answers "network unreachable".
    assert_unreachable(&from_a, service).await;

    // The plan adds the /32 with protocol 116; a → switch → b now works, without NAT.
    assert_eq!(
        reconcile(&lab, &[(TASK_B, NODE_B)]).await,
        vec![Op::Add {
            dst: TASK_B,
            via: NODE_B
        }]
    );
    let mut stream = from_a.connect_tcp(service).await.unwrap();
    assert_eq!(ask(&mut stream, "hello").await, format!("{NODE_A} hello"));
    drop(stream);

    let owned = switch_route(&lab, TASK_B).await.expect("the task's route");
    let expected = "198.19.2.2/32 via 198.18.0.22 dev swp2 proto 116";
    assert_eq!(owned, (expected.into(), Owner::Torc));
    let connected = switch_route(&lab, NODE_A).await.expect("the link's route");
    let expected = "198.18.0.21/32 dev swp1 proto kernel";
    assert_eq!(connected, (expected.into(), Owner::Other));

    // A planned route already in place is left as it is.
    assert_eq!(reconcile(&lab, &[(TASK_B, NODE_B)]).await, vec![]);

    // Withdrawn: the next connection is unreachable again.
    assert_eq!(
        reconcile(&lab, &[]).await,
        vec![Op::Delete {
            dst: TASK_B,
            via: Some(NODE_B),
            priority: 0
        }]
    );
    assert_unreachable(&from_a, service).await;
    common::assert_host_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_of_another_protocol_is_never_touched() {
    if !privileged() {
        return;
    }
    let lab = build_lab().await;
    lab.rack.assert_namespaces(&["wedge", "a", "b"]).await;
    // An administrator's static route, and one of ours that went stale.
    let static_route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(FOREIGN, 32)
        .gateway(NODE_A)
        .protocol(RouteProtocol::STATIC.0.into())
        .build();
    lab.switch
        .handle()
        .route()
        .add(static_route)
        .execute()
        .await
        .unwrap();
    route::add(&lab.switch, TASK_B, NODE_A, TORC).await.unwrap();

    // Nothing desired: only the owned route goes.
    let ops = reconcile(&lab, &[]).await;
    assert_eq!(
        ops,
        vec![Op::Delete {
            dst: TASK_B,
            via: Some(NODE_A),
            priority: 0
        }]
    );
    // Desired over the static route: held, not replaced.
    let plan = plan_for(&lab, &[(FOREIGN, NODE_B)]).await;
    assert_eq!(plan.ops, vec![]);
    assert_eq!(plan.skipped.len(), 1, "{plan:?}");
    // Even asked directly, a delete with our protocol cannot remove it.
    assert!(
        !route::delete(&lab.switch, FOREIGN, Some(NODE_A), 0, TORC)
            .await
            .unwrap()
    );
    // And no request writes a route with a protocol of the kernel's or ip(8)'s.
    let refused = route::delete(&lab.switch, FOREIGN, Some(NODE_A), 0, RouteProtocol::STATIC)
        .await
        .unwrap_err();
    assert!(matches!(refused, Error::Invalid { .. }), "{refused}");

    let kept = switch_route(&lab, FOREIGN).await.expect("the static route");
    let expected = "198.19.9.10/32 via 198.18.0.21 dev swp1 proto static";
    assert_eq!(kept, (expected.into(), Owner::Other));
    assert_eq!(switch_route(&lab, TASK_B).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_next_hop_is_replaced_in_place() {
    if !privileged() {
        return;
    }
    let lab = build_lab().await;
    lab.rack.assert_namespaces(&["wedge", "a", "b"]).await;
    route::add(&lab.switch, TASK_B, NODE_A, TORC).await.unwrap();
    // A second add of the same /32 is refused rather than overwriting.
    let exists = route::add(&lab.switch, TASK_B, NODE_B, TORC)
        .await
        .unwrap_err();
    assert_eq!(
        exists.raw_os_error(),
        Some(nix::errno::Errno::EEXIST as i32),
        "{exists}"
    );
    assert!(
        exists.to_string().contains("198.19.2.2/32 via 198.18.0.22"),
        "{exists}"
    );

    assert_eq!(
        reconcile(&lab, &[(TASK_B, NODE_B)]).await,
        vec![Op::Replace {
            dst: TASK_B,
            via: NODE_B,
            was: Some(NODE_A)
        }]
    );
    let (from_a, service) = task_service(&lab).await;
    let mut stream = from_a.connect_tcp(service).await.unwrap();
    assert_eq!(ask(&mut stream, "again").await, format!("{NODE_A} again"));
}

/// A watch on the switch's namespace wakes for a route added or deleted there and for a port
/// going down, and the table read after the notice has the change. (Notices are coalesced,
/// so one that building the lab left could stand in for the next; the table read after it
/// is what each step checks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_switchs_route_and_port_changes_are_watched() {
    if !privileged() {
        return;
    }
    let lab = build_lab().await;
    lab.rack.assert_namespaces(&["wedge", "a", "b"]).await;
    let changes = torc_net::watch(Some(&lab.wedge)).unwrap();
    assert_eq!(changes.namespace(), lab.wedge.label());
    let woken = |what: &'static str| {
        let changes = &changes;
        async move {
            tokio::time::timeout(SOON, changes.changed())
                .await
                .unwrap_or_else(|_| panic!("no notice within {SOON:?} of {what}"))
        }
    };
    // Drain what building the lab left (bounded: at most 20 notices, each within 200 ms).
    for _ in 0..20 {
        let quiet = tokio::time::timeout(Duration::from_millis(200), changes.changed());
        if quiet.await.is_err() {
            break;
        }
    }
    route::add(&lab.switch, TASK_B, NODE_B, TORC).await.unwrap();
    assert!(woken("a route added").await);
    let table = observe::routes(&lab.switch, TORC).await.unwrap();
    assert!(
        table
            .iter()
            .any(|r| r.dst == TASK_B && r.owner == Owner::Torc),
        "the route is in the table read after the notice: {table:?}"
    );

    route::delete(&lab.switch, TASK_B, Some(NODE_B), 0, TORC)
        .await
        .unwrap();
    assert!(woken("a route deleted").await);
    wait_until("the route to be gone", SOON, || async {
        let table = observe::routes(&lab.switch, TORC).await.unwrap();
        (!table.iter().any(|r| r.dst == TASK_B)).then_some(())
    })
    .await;

    link::set_down(&lab.switch, &ifname("swp2")).await.unwrap();
    assert!(woken("a port set down").await);
    let ports = observe::ports(&lab.switch).await.unwrap();
    let swp2 = ports.iter().find(|p| p.name == "swp2").unwrap();
    assert!(!swp2.admin_up, "{swp2:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_and_addresses_are_observed_over_netlink() {
    if !privileged() {
        return;
    }
    let lab = build_lab().await;
    lab.rack.assert_namespaces(&["wedge", "a", "b"]).await;
    route::add(&lab.switch, TASK_B, NODE_B, TORC).await.unwrap();
    // The kernel reports a veth's operational state asynchronously (linkwatch), after both
    // ends are up.
    let before = wait_until("the ports to be up", SOON, || async {
        let ports = observe::ports(&lab.switch).await.unwrap();
        let up = ports[1..].iter().all(|p| p.oper_state == OperState::Up);
        up.then_some(ports)
    })
    .await;
    let names: Vec<&str> = before.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["lo", "swp1", "swp2"]);
    for port in &before[1..] {
        assert_eq!(port.oper_state, OperState::Up, "{port:?}");
        assert!(port.admin_up);
        assert_eq!(port.mtu, Some(1500));
        assert_eq!(port.mac.as_ref().map(|m| m.len()), Some(17), "{port:?}");
    }

    // Traffic from a to the task: in on swp1, out on swp2.
    let (from_a, service) = task_service(&lab).await;
    let mut stream = from_a.connect_tcp(service).await.unwrap();
    ask(&mut stream, "count me").await;
    let after = observe::ports(&lab.switch).await.unwrap();
    assert!(after[1].rx_packets > before[1].rx_packets, "{after:?}");
    assert!(after[1].rx_bytes > before[1].rx_bytes, "{after:?}");
    assert!(after[2].tx_packets > before[2].tx_packets, "{after:?}");
    assert_eq!(after[2].tx_errors, 0);

    // A port set down is seen down.
    link::set_down(&lab.switch, &ifname("swp2")).await.unwrap();
    let swp2 = wait_until("swp2 to be down", SOON, || async {
        let swp2 = observe::ports(&lab.switch).await.unwrap().remove(2);
        (swp2.oper_state == OperState::Down).then_some(swp2)
    })
    .await;
    assert!(!swp2.admin_up, "{swp2:?}");

    // A node's point-to-point address, as its own namespace reports it.
    let node_a = netns::connect_in(&lab.a).unwrap();
    let addresses = observe::addresses(&node_a).await.unwrap();
    let eth0 = addresses
        .iter()
        .find(|a| a.device.as_deref() == Some("eth0"))
        .expect("eth0's address");
    assert_eq!(
        (eth0.local, eth0.peer, eth0.prefix_len),
        (NODE_A, Some(WEDGE), 32)
    );
    assert!(
        observe::local_addrs(&lab.switch)
            .await
            .unwrap()
            .contains(&WEDGE)
    );
    // The node sees its own link, not the host's or the switch's.
    let node_ports: Vec<String> = observe::ports(&node_a)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(node_ports, ["lo", "eth0"]);
    // Forwarding is on in the switch only.
    assert_eq!(
        netns::read_sysctl(&lab.wedge, "net.ipv4.ip_forward").unwrap(),
        "1"
    );
    assert_eq!(
        netns::read_sysctl(&lab.a, "net.ipv4.ip_forward").unwrap(),
        "0"
    );
}

#[test]
fn named_namespaces_are_created_deleted_and_swept() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let (one, two) = (rack.name("one"), rack.name("two"));
    netns::create_named(&one).unwrap();
    netns::create_named(&two).unwrap();
    assert_eq!(
        netns::list(Some(&rack.prefix)).unwrap(),
        vec![one.clone(), two.clone()]
    );
    assert!(netns::list(None).unwrap().contains(&one));
    let host = Netns::current().unwrap().id().unwrap();
    assert_ne!(Netns::open_named(&one).unwrap().id().unwrap(), host);
    assert_ne!(
        Netns::open(one.as_str()).unwrap().id().unwrap(),
        Netns::open_named(&two).unwrap().id().unwrap()
    );

    let again = netns::create_named(&one).unwrap_err();
    assert_eq!(again.raw_os_error(), Some(nix::errno::Errno::EEXIST as i32));
    assert!(again.to_string().contains(one.as_str()), "{again}");
    // The failed create left the existing one usable.
    Netns::open_named(&one).unwrap();

    assert!(netns::delete_named(&one).unwrap());
    assert!(!netns::delete_named(&one).unwrap());
    assert!(Netns::open_named(&one).is_err());
    assert_eq!(netns::sweep(&rack.prefix).unwrap(), vec![two.clone()]);
    assert_eq!(netns::list(Some(&rack.prefix)).unwrap(), vec![]);
    // A sweep of another prefix never removes ours.
    let three = rack.name("three");
    netns::create_named(&three).unwrap();
    let other = TestRack::new();
    assert_eq!(netns::sweep(&other.prefix).unwrap(), vec![]);
    assert_eq!(netns::list(Some(&rack.prefix)).unwrap(), vec![three]);
}

#[test]
fn a_namespace_that_is_not_one_is_refused() {
    let plain = std::env::temp_dir().join(format!("torc-net-plain-{}", std::process::id()));
    std::fs::write(&plain, b"").unwrap();
    let e = Netns::open(plain.to_str().unwrap()).unwrap_err();
    std::fs::remove_file(&plain).unwrap();
    assert!(e.to_string().contains("not a namespace"), "{e}");
    assert!(Netns::open("..").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_namespace_dies_with_its_holder() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let node = rack.create("node");
    rack.assert_namespaces(&["node"]).await;
    let task = netns::create_anonymous("task t1").unwrap();
    let in_node = netns::connect_in(&node).unwrap();
    let tk = ifname("tk1");
    link::add_veth(&in_node, &tk, &node, &ifname("eth0"), &task)
        .await
        .unwrap();
    link::index(&in_node, &tk).await.unwrap();
    {
        let in_task = netns::connect_in(&task).unwrap();
        link::index(&in_task, &ifname("eth0")).await.unwrap();
        // Sockets hold their namespace too: this one goes with its connection, below.
    }
    let long = IfName::new("tk0123456789abcd").unwrap_err();
    assert!(long.to_string().contains("at most 15"), "{long}");

    drop(task);
    wait_until(
        "the task's veth to vanish with its namespace",
        SOON,
        || async {
            match link::index(&in_node, &tk).await {
                Err(Error::NoSuchLink { .. }) => Some(()),
                Ok(_) => None,
                Err(e) => panic!("{e}"),
            }
        },
    )
    .await;
    assert!(!link::delete(&in_node, &tk).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_links_alias_is_set_and_listed() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let node = rack.create("node");
    rack.assert_namespaces(&["node"]).await;
    let in_node = netns::connect_in(&node).unwrap();
    let (tk, peer) = (ifname("tk2"), ifname("tk2peer"));
    link::add_veth(&in_node, &tk, &node, &peer, &node)
        .await
        .unwrap();
    let index = link::set_alias(&in_node, &tk, "torc n1: task web.000001")
        .await
        .unwrap();
    assert_eq!(index, link::index(&in_node, &tk).await.unwrap());
    let links: BTreeMap<String, Option<String>> =
        link::aliases(&in_node).await.unwrap().into_iter().collect();
    assert_eq!(links["tk2"].as_deref(), Some("torc n1: task web.000001"));
    assert_eq!(links["tk2peer"], None);
    assert_eq!(links["lo"], None);
    let missing = link::set_alias(&in_node, &ifname("tk3"), "x").await;
    assert!(
        matches!(missing, Err(Error::NoSuchLink { .. })),
        "{missing:?}"
    );
}

/// Link and route changes are announced as they happen, in order: a veth made, a connected
/// route on it while its other end is down (marked `linkdown`), an owned route added and
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_and_route_changes_are_announced_in_order() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let (node, task) = (rack.create("node"), rack.create("task"));
    rack.assert_namespaces(&["node", "task"]).await;
    let in_node = netns::connect_in(&node).unwrap();
    let announced = observe::Announcements::open(&node, TORC).unwrap();
    assert!(!announced.wait(Duration::ZERO).unwrap(), "nothing yet");
    let tk = ifname("tk1");
    link::add_veth(&in_node, &tk, &node, &ifname("eth0"), &task)
        .await
        .unwrap();
    // The node's end up while the task's is still down: its route to the task has no carrier.
    addr::add_peer(&in_node, &tk, NODE_A, TASK_B).await.unwrap();
    link::set_up(&in_node, &tk).await.unwrap();
    route::add(&in_node, FOREIGN, TASK_B, TORC).await.unwrap();
    route::delete(&in_node, FOREIGN, Some(TASK_B), 0, TORC)
        .await
        .unwrap();
    assert!(announced.wait(SOON).unwrap());
    let mut seen = Vec::new();
    for a in announced.read().unwrap() {
        let line = match a {
            Announcement::Link {
                removed: true,
                port,
            } => format!("link {} removed", port.name),
            Announcement::Link { port, .. } => {
                let admin = if port.admin_up { "up" } else { "down" };
                format!("link {} {admin}, {}", port.name, port.oper_state)
            }
            Announcement::Route(e)
                if e.route.dst_len == 32 && e.route.table == routes::MAIN_TABLE =>
            {
                let verb = if e.added { "added" } else { "deleted" };
                let linkdown = if e.linkdown { " linkdown" } else { "" };
                format!("{verb} {}/32 {}{linkdown}", e.route.dst, e.route.owner)
            }
            Announcement::Route(_) => continue,
        };
        // A link is announced again at each change (up, addresses, carrier): once is enough.
        if seen.last() != Some(&line) {
            seen.push(line);
        }
    }
    assert_eq!(
        seen,
        [
            "link tk1 down, down",
            "link tk1 up, down",
            "added 198.19.2.2/32 other linkdown",
            "added 198.19.9.10/32 torc linkdown",
            "deleted 198.19.9.10/32 torc linkdown",
        ]
    );
    assert!(announced.read().unwrap().is_empty(), "each is read once");
}

#[test]
fn sysctls_are_per_namespace() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let ns = rack.create("sysctl");
    let host_before =
        netns::read_sysctl(&Netns::current().unwrap(), "net.ipv4.ip_forward").unwrap();
    route::set_forwarding(&ns, true).unwrap();
    assert_eq!(netns::read_sysctl(&ns, "net.ipv4.ip_forward").unwrap(), "1");
    route::set_forwarding(&ns, false).unwrap();
    assert_eq!(netns::read_sysctl(&ns, "net.ipv4.ip_forward").unwrap(), "0");
    let host_after = netns::read_sysctl(&Netns::current().unwrap(), "net.ipv4.ip_forward").unwrap();
    assert_eq!(host_before, host_after);
    for bad in ["kernel.hostname", "net..ipv4", "net.ipv4/../../x", "net"] {
        let e = netns::write_sysctl(&ns, bad, "1").unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{bad}: {e}");
    }
    // run_blocking runs inside: the thread is in the namespace and sees its links, not the
    // host's (`/proc/net` is the thread group leader's; `/proc/thread-self/net` the thread's).
    let (inside, links) = netns::run_blocking(&ns, || {
        let links = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
        (Netns::current().unwrap().id().unwrap(), links)
    })
    .unwrap();
    assert_eq!(inside, ns.id().unwrap());
    assert_eq!(links.lines().count(), 3, "only lo: {links}");
}

#[test]
fn the_capability_probe_answers_without_privilege_too() {
    // Run unprivileged (`setpriv --bounding-set -sys_admin,-net_admin`), this is the EPERM path.
    let expected = netns::has_capability(netns::CAP_SYS_ADMIN);
    assert_eq!(netns::can_create().unwrap(), expected);
}

#[test]
fn the_dialer_refuses_the_hosts_namespace() {
    let e = NetnsDialer::new(&Netns::current().unwrap()).unwrap_err();
    assert!(e.to_string().contains("own namespace"), "{e}");
    let e = netns::connect_in(&Netns::current().unwrap()).unwrap_err();
    assert!(matches!(e, Error::NoRuntime { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_forwarder_carries_tcp_and_udp_into_a_namespace() {
    if !privileged() {
        return;
    }
    let rack = TestRack::new();
    let service_ns = rack.create("svc");
    let inside = netns::connect_in(&service_ns).unwrap();
    link::set_up(&inside, &ifname("lo")).await.unwrap();
    addr::add_host(&inside, &ifname("lo"), WEDGE).await.unwrap();
    rack.assert_namespaces(&["svc"]).await;
    let dialer = Arc::new(NetnsDialer::new(&service_ns).unwrap());

    // The services, on the rack address inside the namespace.
    let tcp_target = echo_tcp(&dialer, SocketAddr::from((WEDGE, 0))).await;
    let udp_inside = dialer.udp_socket().await.unwrap();
    let udp_target = SocketAddr::from((WEDGE, udp_inside.local_addr().unwrap().port()));
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while let Ok((len, peer)) = udp_inside.recv_from(&mut buf).await {
            let answer = format!("{} {}", peer.ip(), String::from_utf8_lossy(&buf[..len]));
            let _ = udp_inside.send_to(answer.as_bytes(), peer).await;
        }
    });

    // The forwarders, on the host's loopback.
    let loopback = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
    let tcp_listener = TcpListener::bind(loopback).await.unwrap();
    let tcp_front = tcp_listener.local_addr().unwrap();
    let udp_front_socket = UdpSocket::bind(loopback).await.unwrap();
    let udp_front = udp_front_socket.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let tcp_forwarder = tokio::spawn(forward::tcp(
        tcp_listener,
        dialer.clone(),
        tcp_target,
        TcpOptions {
            max_connections: 1,
            ..TcpOptions::default()
        },
        until_stopped(stopped.clone()),
    ));
    let udp_forwarder = tokio::spawn(forward::udp(
        udp_front_socket,
        dialer.clone(),
        udp_target,
        UdpOptions::default(),
        until_stopped(stopped),
    ));

    // TCP: the service sees the namespace's own address as the client.
    let mut first = TcpStream::connect(tcp_front).await.unwrap();
    assert_eq!(ask(&mut first, "one").await, format!("{WEDGE} one"));
    // At most one connection at a time: the second waits until the first is closed.
    let mut second = TcpStream::connect(tcp_front).await.unwrap();
    second.write_all(b"two\n").await.unwrap();
    let mut waiting = BufReader::new(&mut second);
    let mut answer = String::new();
    let early =
        tokio::time::timeout(Duration::from_millis(300), waiting.read_line(&mut answer)).await;
    assert!(
        early.is_err(),
        "the second connection was served at once: {answer:?}"
    );
    drop(first);
    tokio::time::timeout(SOON, waiting.read_line(&mut answer))
        .await
        .expect("served once the first is closed")
        .unwrap();
    assert_eq!(answer.trim_end(), format!("{WEDGE} two"));

    // UDP, both ways.
    let client = UdpSocket::bind(loopback).await.unwrap();
    client.send_to(b"ping", udp_front).await.unwrap();
    let mut buf = [0u8; 512];
    let (len, from) = tokio::time::timeout(SOON, client.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .unwrap();
    assert_eq!(from, udp_front);
    assert_eq!(
        String::from_utf8_lossy(&buf[..len]),
        format!("{WEDGE} ping")
    );

    // Shutdown ends the relays and closes the listeners.
    stop.send(true).unwrap();
    tokio::time::timeout(SOON, tcp_forwarder)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(SOON, udp_forwarder)
        .await
        .unwrap()
        .unwrap();
    let mut rest = String::new();
    let eof = tokio::time::timeout(SOON, waiting.read_line(&mut rest))
        .await
        .unwrap();
    assert!(matches!(eof, Ok(0) | Err(_)), "{eof:?} {rest:?}");
    assert!(TcpStream::connect(tcp_front).await.is_err());
    common::assert_host_clean().await;
}

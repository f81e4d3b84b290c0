//! A test rack on network namespaces (`RackNetwork::Namespaces`): each node in its own
//! namespace, linked to the switch (wedge), and traffic between two nodes crossing the switch.
//! Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (CI runs as root); without them each test prints
//! `skipped: needs CAP_NET_ADMIN` and passes. The test talks to the rack only through the API's
//! forwarder on its loopback block; every packet to a rack address is sent from inside a node.

use std::time::Duration;

use torc_net::observe::PortView;
use torc_test_utils::{
    COUNTING_SERVER, LocalRack, RackNetwork, RackOptions, namespaces_or_skip, plain_state_store,
    python_task, stdout_of, wait_for,
};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");
/// What the client sends: enough that the switch ports' counters cannot have risen this much
/// from the agents' own traffic alone.
const PAYLOAD: u64 = 2_000_000;

/// Connects to argv[1]:argv[2], sends PAYLOAD bytes, prints the answer.
const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(b"x" * int(sys.argv[3]))
c.shutdown(socket.SHUT_WR)
print(c.makefile().read().strip(), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_from_one_node_to_another_crosses_the_switch() {
    if !namespaces_or_skip() {
        return;
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            network: RackNetwork::Namespaces,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    rack.assert_namespaces();
    let client = rack.client();
    // The controller knows the nodes by their rack addresses.
    let nodes = client.nodes().await.unwrap();
    let ip_of = |name: &str| {
        nodes
            .iter()
            .find(|n| n.name.as_str() == name)
            .map(|n| n.ip.to_string())
            .unwrap()
    };
    assert_eq!(ip_of("bladerunner2"), "198.18.0.22");
    // The nodes' links and routes, as ip(8) shows them inside (exec_in).
    let out = rack
        .exec_in("bladerunner1", &["ip", "-4", "route", "show"])
        .unwrap();
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        routes.contains("default via 198.18.0.20 dev eth0"),
        "{routes}"
    );

    let server = client
        .launch(&{
            let mut s = python_task("listener", "bladerunner2", COUNTING_SERVER, &[]);
            s.ports = 1;
            s
        })
        .await
        .unwrap();
    let listening = wait_for(
        "the listener to listen",
        Duration::from_secs(30),
        || async {
            let view = client.task(&server.id).await.ok()?;
            let out = stdout_of(&client, &server.id).await;
            (view.state == TaskState::Running && out.contains("listening")).then_some(view)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    let port = listening.ports[0];

    let before = rack.switch_ports().await.unwrap();
    let sender = client
        .launch(&python_task(
            "sender",
            "bladerunner1",
            CLIENT,
            &[ip_of("bladerunner2"), port.to_string(), PAYLOAD.to_string()],
        ))
        .await
        .unwrap();
    let ended = wait_for("the sender to finish", Duration::from_secs(30), || async {
        let view = client.task(&sender.id).await.ok()?;
        view.state.is_terminal().then_some(view)
    })
    .await
    .unwrap();
    let said = stdout_of(&client, &sender.id).await;
    assert_eq!(ended.state, TaskState::Finished, "{said}");
    // No NAT: the listener saw bladerunner1's own address.
    assert_eq!(
        said.trim(),
        format!("got {PAYLOAD} bytes from 198.18.0.21 on bladerunner2")
    );

    // Through the switch: in at swp1 (from bladerunner1), out at swp2 (to bladerunner2).
    let after = rack.switch_ports().await.unwrap();
    let rose = |port: &str, f: fn(&PortView) -> u64| f(&after[port]) - f(&before[port]);
    let (swp1_in, swp2_out) = (rose("swp1", |p| p.rx_bytes), rose("swp2", |p| p.tx_bytes));
    assert!(
        swp1_in >= PAYLOAD && swp2_out >= PAYLOAD,
        "swp1 received {swp1_in} bytes, swp2 sent {swp2_out}"
    );
}

/// The value of `key` in the switch node's store, read by etcdctl inside the switch's
/// namespace (the store listens on the switch's rack address, which the host never sends to).
fn store_value(rack: &LocalRack, key: &str) -> Option<serde_json::Value> {
    let endpoint = format!("--endpoints=http://{}:2379", rack.nodes["wedge"]);
    let out = rack
        .exec_in(
            "wedge",
            &["etcdctl", &endpoint, "get", key, "--print-value-only"],
        )
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).ok()
}

/// statesync publishes the switch's own ports and routes (read over netlink in the switch's
/// namespace, not the host's), and a port set down or a route added on the switch reaches the
/// store through its watch, long before its one-minute tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statesync_publishes_the_switchs_ports_and_routes_as_they_change() {
    if !namespaces_or_skip() {
        return;
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            network: RackNetwork::Namespaces,
            // statesync's tick a minute away: whatever reaches the store sooner came through its
            // watch on the switch.
            extra_yaml: plain_state_store(60_000),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    rack.assert_namespaces();
    let soon = Duration::from_secs(30);
    // The first cycle: swp1 (the switch's port to bladerunner1) is up, and the host's own
    // devices are not there.
    let swp1 = wait_for("/torc/ports/swp1 up", soon, || async {
        let value = store_value(&rack, "/torc/ports/swp1")?;
        (value["oper_state"] == "up").then_some(value)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    assert_eq!(swp1["admin_up"], true, "{swp1}");
    let host_only = torc_net::observe::ports(&torc_net::Netlink::current().unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name != "lo")
        .map(|p| p.name);
    if let Some(name) = host_only {
        assert_eq!(store_value(&rack, &format!("/torc/ports/{name}")), None);
    }

    // The tick is a minute away: these arrive through the watch or not at all.
    let set = |args: &[&str]| {
        let out = rack.exec_in("wedge", args).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    set(&[
        "ip",
        "route",
        "add",
        "198.19.9.10/32",
        "via",
        "198.18.0.21",
        "proto",
        "static",
    ]);
    let route = wait_for("the static route in the store", soon, || async {
        store_value(&rack, "/torc/routes/198.19.9.10-32")
    })
    .await
    .unwrap();
    assert_eq!(
        (
            &route["owner"],
            &route["protocol"],
            &route["interface"],
            &route["next_hop"]
        ),
        (
            &serde_json::json!("other"),
            &serde_json::json!("static"),
            &serde_json::json!("swp1"),
            &serde_json::json!("198.18.0.21")
        ),
        "{route}"
    );
    set(&["ip", "link", "set", "swp1", "down"]);
    wait_for("/torc/ports/swp1 down", soon, || async {
        let value = store_value(&rack, "/torc/ports/swp1")?;
        (value["admin_up"] == false && value["oper_state"] == "down").then_some(())
    })
    .await
    .unwrap();
    // Down, the port takes its routes with it (the kernel's), and the store follows.
    wait_for("the static route gone from the store", soon, || async {
        store_value(&rack, "/torc/routes/198.19.9.10-32")
            .is_none()
            .then_some(())
    })
    .await
    .unwrap();
    set(&["ip", "link", "set", "swp1", "up"]);
}

use super::*;
use std::net::Ipv4Addr;
use torc_net::RouteKind;
use torc_net::observe::OperState;

fn route(dst: [u8; 4], len: u8, gateway: Option<[u8; 4]>, protocol: RouteProtocol) -> RouteView {
    RouteView {
        dst: Ipv4Addr::from(dst),
        dst_len: len,
        gateway: gateway.map(Ipv4Addr::from),
        device: Some("swp1".into()),
        protocol,
        kind: RouteKind::Unicast,
        table: 254,
        priority: 0,
        owner: Owner::Other,
    }
    .classify(RouteProtocol::TORC)
}

fn net() -> NetworkState {
    NetworkState {
        routes: Some(vec![
            route([0, 0, 0, 0], 0, Some([192, 0, 2, 1]), RouteProtocol::BOOT),
            route([192, 0, 2, 0], 24, None, RouteProtocol::KERNEL),
            route(
                [198, 19, 1, 5],
                32,
                Some([198, 18, 0, 21]),
                RouteProtocol::TORC,
            ),
            // Ours by protocol but no task's: still the network agent's, until it removes it.
            route(
                [198, 19, 1, 6],
                32,
                Some([198, 18, 0, 21]),
                RouteProtocol::TORC,
            ),
        ]),
        ports: Some(vec![PortView {
            name: "swp1".into(),
            ifindex: 2,
            oper_state: OperState::Up,
            admin_up: true,
            mtu: Some(1500),
            mac: Some("02:00:00:00:00:01".into()),
            rx_bytes: 1,
            rx_packets: 1,
            rx_errors: 0,
            tx_bytes: 1,
            tx_packets: 1,
            tx_errors: 0,
        }]),
        protocol: RouteProtocol::TORC,
        wanted: ctl().network.routes,
        errors: vec![],
    }
}

const ALL: Known = Known {
    controller: true,
    routes: true,
    ports: true,
};

fn ctl() -> ControllerState {
    let node: NodeView = serde_json::from_value(serde_json::json!({
        "name": "wedge", "ip": "10.0.0.20", "node_type": "master", "node_function": "controller",
        "active": true, "registered": true, "last_seen": 5,
        "resources": {"total": {"cpus": 1, "mem_mb": 1, "disk_mb": 1}, "allocated": {"cpus": 0, "mem_mb": 0, "disk_mb": 0}, "ports_allocated": 0},
        "port_range": "31000-31999", "attributes": {}, "runtime": {"kind": "process", "limits_enforced": false}, "tasks": 0
    }))
    .unwrap();
    let task: TaskView = serde_json::from_value(serde_json::json!({
        "id": "etcd.0123456789ab", "name": "etcd", "framework": "torc", "state": "running", "node": "wedge",
        "ip": "10.0.0.20", "ports": [2379], "spec": {"name": "etcd", "command": "torc"},
        "created_at": 1, "updated_at": 2, "history": []
    }))
    .unwrap();
    let network: RouteSnapshot = serde_json::from_value(serde_json::json!({
        "epoch": 1, "generation": 3, "switch": "",
        "routes": [{"destination": "198.19.1.5", "next_hop": "198.18.0.21", "node": "bladerunner1",
                    "task": "web.0123456789ab", "service": "web"}]
    }))
    .unwrap();
    ControllerState {
        nodes: vec![node],
        tasks: vec![task],
        announced: vec![],
        controller_name: "torc-scheduler".into(),
        network,
    }
}

#[test]
fn desired_keys_and_schema() {
    let d = desired("/torc", Some(&ctl()), &net());
    let keys: Vec<&str> = d.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/torc/machines/wedge",
            "/torc/ports/swp1",
            "/torc/routes/0.0.0.0-0",
            "/torc/routes/192.0.2.0-24",
            "/torc/routes/198.19.1.5-32",
            "/torc/routes/198.19.1.6-32",
            "/torc/services/etcd"
        ]
    );
    let value = |k: &str| serde_json::from_str::<serde_json::Value>(&d[k]).unwrap();
    assert_eq!(
        value("/torc/routes/198.19.1.5-32"),
        serde_json::json!({
            "destination": "198.19.1.5/32", "next_hop": "198.18.0.21", "interface": "swp1",
            "metric": 0, "protocol": "torc", "owner": "torc",
            "node": "bladerunner1", "task": "web.0123456789ab", "service": "web"
        }),
        "an owned route names the task behind it"
    );
    let stale = value("/torc/routes/198.19.1.6-32");
    assert_eq!(
        (&stale["owner"], stale.get("task")),
        (&serde_json::json!("torc"), None)
    );
    let kernel = value("/torc/routes/192.0.2.0-24");
    assert_eq!(
        (&kernel["owner"], &kernel["protocol"], &kernel["next_hop"]),
        (
            &serde_json::json!("other"),
            &serde_json::json!("kernel"),
            &serde_json::Value::Null
        )
    );
    assert_eq!(
        value("/torc/ports/swp1"),
        serde_json::json!({
            "interface": "swp1", "oper_state": "up", "admin_up": true, "mtu": 1500,
            "mac": "02:00:00:00:00:01"
        }),
        "no counters: they would rewrite the key every cycle"
    );
    let svc: serde_json::Value = serde_json::from_str(&d["/torc/services/etcd"]).unwrap();
    assert_eq!(svc["owner"], "torc-scheduler");
    assert_eq!(svc["ports"][0], 2379);
    let route: serde_json::Value = serde_json::from_str(&d["/torc/routes/0.0.0.0-0"]).unwrap();
    assert_eq!(route["next_hop"], "192.0.2.1");
    let m: serde_json::Value = serde_json::from_str(&d["/torc/machines/wedge"]).unwrap();
    assert_eq!(
        (m["type"].as_str(), m["active"].as_bool()),
        (Some("master"), Some(true))
    );
}

#[test]
fn plan_writes_differences_and_removes_what_is_gone() {
    let want = desired("/torc", Some(&ctl()), &net());
    let mut have = want.clone();
    have.insert("/torc/services/gone".into(), "{}".into());
    have.insert("/torc/ports/swp9".into(), "{}".into());
    have.insert("/torc/routes/0.0.0.0-0".into(), "{\"old\":true}".into());
    have.remove("/torc/machines/wedge");
    let ops = plan("/torc", &want, &have, ALL);
    assert!(ops.contains(&Op::Delete("/torc/services/gone".into())));
    assert!(
        ops.contains(&Op::Delete("/torc/ports/swp9".into())),
        "ports are deleted too"
    );
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::Put(k, _) if k == "/torc/routes/0.0.0.0-0")),
        "a changed route is rewritten"
    );
    assert!(
        ops.iter()
            .any(|o| matches!(o, Op::Put(k, _) if k == "/torc/machines/wedge"))
    );
    assert_eq!(ops.len(), 4, "nothing else: {ops:?}");
    // Already in sync: nothing to do (it never deletes what it just wrote).
    assert!(plan("/torc", &want, &want, ALL).is_empty());
}

#[test]
fn no_answer_from_the_controller_deletes_nothing_of_its() {
    let want = desired("/torc", None, &net());
    let have = desired("/torc", Some(&ctl()), &net());
    let ops = plan("/torc", &want, &have, Known::of(None, &net()));
    assert!(ops.is_empty(), "{ops:?}");
}

#[test]
fn a_bad_endpoint_is_named() {
    let Err(err) = EtcdStore::connect("not a url", None, None) else {
        panic!("a bad endpoint was accepted");
    };
    assert!(
        matches!(&err, EtcdError::Endpoint { endpoint, .. } if endpoint == "not a url"),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("bad endpoint \"not a url\": "),
        "{err}"
    );
}

/// A switch that cannot be read says nothing about its routes and ports: their keys stay (a
/// table read empty, on the other hand, is a switch without routes).
#[tokio::test]
async fn an_unreadable_switch_deletes_no_route_or_port() {
    let have = desired("/torc", Some(&ctl()), &net());
    let unreadable = read_network(None, RouteProtocol::TORC, vec![]).await;
    assert!(unreadable.routes.is_none() && unreadable.ports.is_none());
    let ops = plan(
        "/torc",
        &desired("/torc", Some(&ctl()), &unreadable),
        &have,
        Known::of(Some(&ctl()), &unreadable),
    );
    assert!(!ops.iter().any(|o| matches!(o, Op::Delete(_))), "{ops:?}");
    let empty = NetworkState {
        routes: Some(vec![]),
        ports: Some(vec![]),
        protocol: RouteProtocol::TORC,
        wanted: vec![],
        errors: vec![],
    };
    let ops = plan(
        "/torc",
        &desired("/torc", Some(&ctl()), &empty),
        &have,
        Known::of(Some(&ctl()), &empty),
    );
    let deleted = |prefix: &str| {
        ops.iter()
            .filter(|o| matches!(o, Op::Delete(k) if k.starts_with(prefix)))
            .count()
    };
    assert_eq!(
        (deleted("/torc/routes/"), deleted("/torc/ports/")),
        (4, 1),
        "{ops:?}"
    );
}

/// The switch is read over one netlink connection, routes then ports (two dumps at once on one
/// socket are refused with EBUSY: both parts were unknown every cycle). Reads this process's
/// own namespace; changes nothing.
#[tokio::test]
async fn the_switch_is_read_over_one_netlink_connection() {
    let nl = Netlink::current().unwrap();
    let net = read_network(Some(&nl), RouteProtocol::TORC, vec![]).await;
    assert!(net.errors.is_empty(), "{:?}", net.errors);
    let ports = net.ports.expect("the ports");
    assert!(ports.iter().any(|p| p.name == "lo"), "{ports:?}");
    assert!(net.routes.is_some());
}

use super::*;

fn net() -> NetworkState {
    NetworkState {
        routes: Some(torc_procfs::parse_net_route(
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\n",
        )),
        ports: Some(vec![Port {
            interface: "eth0".into(),
            oper_state: "up".into(),
            speed_mbps: Some(10000),
            mtu: Some(1500),
            mac: "02:00:00:00:00:01".into(),
        }]),
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
    ControllerState {
        nodes: vec![node],
        tasks: vec![task],
        announced: vec![],
        controller_name: "torc-scheduler".into(),
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
            "/torc/ports/eth0",
            "/torc/routes/0.0.0.0-0",
            "/torc/routes/192.0.2.0-24",
            "/torc/services/etcd"
        ]
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
    have.insert("/torc/ports/eth9".into(), "{}".into());
    have.insert("/torc/routes/0.0.0.0-0".into(), "{\"old\":true}".into());
    have.remove("/torc/machines/wedge");
    let ops = plan("/torc", &want, &have, ALL);
    assert!(ops.contains(&Op::Delete("/torc/services/gone".into())));
    assert!(
        ops.contains(&Op::Delete("/torc/ports/eth9".into())),
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

/// A `/proc/net/route` that cannot be read says nothing about routes: the route keys stay (an
/// empty file, on the other hand, is a machine without routes); the same for ports and
/// `/sys/class/net`.
#[test]
fn unreadable_routes_delete_no_route() {
    let proc_root = tempfile::tempdir().unwrap();
    let sys = tempfile::tempdir().unwrap();
    let have = desired("/torc", Some(&ctl()), &net());
    let unreadable = read_network(proc_root.path(), &sys.path().join("absent"));
    assert!(unreadable.routes.is_none() && unreadable.ports.is_none());
    let ops = plan(
        "/torc",
        &desired("/torc", Some(&ctl()), &unreadable),
        &have,
        Known::of(Some(&ctl()), &unreadable),
    );
    assert!(!ops.iter().any(|o| matches!(o, Op::Delete(_))), "{ops:?}");
    std::fs::create_dir(proc_root.path().join("net")).unwrap();
    std::fs::write(
        proc_root.path().join("net/route"),
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
    )
    .unwrap();
    let none = read_network(proc_root.path(), sys.path());
    let ops = plan(
        "/torc",
        &desired("/torc", Some(&ctl()), &none),
        &have,
        Known::of(Some(&ctl()), &none),
    );
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::Delete(k) if k.starts_with("/torc/routes/")))
            .count(),
        2,
        "{ops:?}"
    );
}

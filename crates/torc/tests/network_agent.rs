//! The network agent against a real switch table: a switch namespace with a port to a node,
//! the agent as a real process (`torc network-agent`) following a real controller. It removes
//! a route of its own that no task needs (one a killed agent left behind), never a route it
//! does not own, and reports the switch's table and ports.
//!
//! As root only (CI runs as root): elsewhere it prints `skipped: needs CAP_NET_ADMIN`.
//! Addresses are from 198.18.0.0/15 and exist only inside the namespaces made here, which are
//! removed at the end, also when the test fails; nothing is sent from the host namespace.

use std::net::Ipv4Addr;
use std::process::{Child, Command};
use std::time::Duration;

use torc_net::rack::RackLock;
use torc_net::{IfName, Netlink, NetnsPrefix, RouteProtocol, addr, link, netns, observe, route};
use torc_test_utils::prom::{promtool_check, sample};
use torc_test_utils::{LocalRack, RackOptions, wait_for};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// Removes the test's namespaces (and kills the agent) however the test ends.
struct Cleanup {
    prefix: NetnsPrefix,
    agent: Option<Child>,
    /// The prefix's rack lock, held while the test lives: a test rack or `torc up` starting
    /// meanwhile sweeps the namespaces of racks whose lock is free, and would take these.
    /// Released after the sweep in `drop` (fields drop after it).
    _lock: RackLock,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = agent.kill();
            let _ = agent.wait();
        }
        if let Err(e) = netns::sweep(&self.prefix) {
            eprintln!("cannot remove the test's namespaces {}: {e}", self.prefix);
        }
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_agent_removes_its_stale_routes_and_leaves_others_alone() {
    if !netns::can_create().unwrap_or(false) {
        println!("skipped: needs CAP_NET_ADMIN");
        return;
    }
    let prefix = NetnsPrefix::random();
    let lock = RackLock::acquire(&prefix).unwrap();
    netns::sweep(&prefix).unwrap();
    let mut cleanup = Cleanup {
        prefix: prefix.clone(),
        agent: None,
        _lock: lock,
    };
    // The switch (wedge) with port swp1 to node b1, /32 peer addresses as torc up makes them.
    let wedge_name = prefix.name("wedge").unwrap();
    let wedge = netns::create_named(&wedge_name).unwrap();
    let b1 = netns::create_named(&prefix.name("b1").unwrap()).unwrap();
    let (swp1, eth0, lo) = (
        IfName::new("swp1").unwrap(),
        IfName::new("eth0").unwrap(),
        IfName::new("lo").unwrap(),
    );
    let host = Netlink::current().unwrap();
    link::add_veth(&host, &swp1, &wedge, &eth0, &b1)
        .await
        .unwrap();
    let on_wedge = netns::connect_in(&wedge).unwrap();
    let on_b1 = netns::connect_in(&b1).unwrap();
    for (nl, port, local, peer) in [
        (&on_wedge, &swp1, ip("198.18.0.20"), ip("198.18.0.21")),
        (&on_b1, &eth0, ip("198.18.0.21"), ip("198.18.0.20")),
    ] {
        link::set_up(nl, &lo).await.unwrap();
        link::set_up(nl, port).await.unwrap();
        addr::add_peer(nl, port, local, peer).await.unwrap();
    }
    // What a killed agent left (torc's protocol), and an operator's static route.
    let (stale, foreign) = (ip("198.19.9.9"), ip("198.19.9.10"));
    route::add(&on_wedge, stale, ip("198.18.0.21"), RouteProtocol::TORC)
        .await
        .unwrap();
    let static_route = torc_net::rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(foreign, 32)
        .gateway(ip("198.18.0.21"))
        .protocol(RouteProtocol::STATIC.0.into())
        .build();
    on_wedge
        .handle()
        .route()
        .add(static_route)
        .execute()
        .await
        .unwrap();

    let rack = LocalRack::start(
        TORC,
        RackOptions {
            extra_yaml: format!("network-agent:\n  type: netlink\n  connection: {wedge_name}\n"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Before anything is sent: the namespaces are the test's and the switch has its port.
    assert!(netns::list(Some(&prefix)).unwrap().contains(&wedge_name));
    let metrics_port = torc_test_utils::free_port(Ipv4Addr::LOCALHOST);
    cleanup.agent = Some(
        Command::new(TORC)
            // A resync far beyond the test: what it sees after the first pass, it sees
            // through its watch on the switch.
            .args(["network-agent", "--resync", "600", "--metrics-listen"])
            .arg(format!("127.0.0.1:{metrics_port}"))
            .envs(rack.cli_env())
            .spawn()
            .unwrap(),
    );

    let table = || async {
        observe::routes(&on_wedge, RouteProtocol::TORC)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.dst_len == 32 && r.dst.octets()[..2] == [198, 19])
            .map(|r| r.dst)
            .collect::<Vec<_>>()
    };
    wait_for("the stale route to go", Duration::from_secs(20), || async {
        (!table().await.contains(&stale)).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(table().await, [foreign], "the static route stays");

    // The controller has the switch's report: its port, and the static route as someone else's.
    let view = wait_for("the switch's report", Duration::from_secs(20), || async {
        rack.client()
            .network()
            .await
            .ok()
            .filter(|v| v.reported.is_some())
    })
    .await
    .unwrap();
    assert_eq!(view.desired.switch.as_deref(), Some(wedge_name.as_str()));
    let reported = view.reported.unwrap();
    let port = reported.ports.iter().find(|p| p.name == "swp1").unwrap();
    assert_eq!(port.oper_state, "up");
    let held = reported
        .routes
        .iter()
        .find(|r| r.destination == foreign)
        .unwrap();
    assert_eq!(
        (held.protocol.as_str(), held.port.as_deref()),
        ("static", Some("swp1"))
    );
    assert!(!reported.routes.iter().any(|r| r.destination == stale));

    // A route of its protocol added by hand afterwards goes at once, not at the next resync.
    let by_hand = ip("198.19.9.11");
    route::add(&on_wedge, by_hand, ip("198.18.0.21"), RouteProtocol::TORC)
        .await
        .unwrap();
    wait_for(
        "the route added by hand to go",
        Duration::from_secs(20),
        || async { (!table().await.contains(&by_hand)).then_some(()) },
    )
    .await
    .unwrap();
    // A port going down is reported at once too.
    link::set_down(&on_wedge, &swp1).await.unwrap();
    wait_for("swp1 reported down", Duration::from_secs(20), || async {
        let view = rack.client().network().await.ok()?;
        let reported = view.reported?;
        (reported.ports.iter())
            .any(|p| p.name == "swp1" && p.oper_state == "down")
            .then_some(())
    })
    .await
    .unwrap();

    // Its /metrics (read by the real promtool) count what it did: the two routes of its own
    // it deleted, none failed, none of its own left on the switch.
    let text = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&text).unwrap();
    for (series, want) in [
        (
            "torc_network_agent_route_changes_total{op=\"delete\",result=\"done\"}",
            2.0,
        ),
        (
            "torc_network_agent_route_changes_total{op=\"delete\",result=\"failed\"}",
            0.0,
        ),
        ("torc_network_agent_pass_errors_total", 0.0),
        ("torc_network_agent_routes", 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(
        sample(&text, "torc_network_agent_passes_total") >= Some(3.0),
        "{text}"
    );
    assert!(
        sample(&text, "torc_network_agent_snapshot_generation") >= Some(1.0),
        "{text}"
    );
}

/// A rack config whose task blocks overlap never starts a controller: it exits at once naming
/// the file, the line and both blocks (the same file the config crate's cases check).
#[test]
fn a_controller_refuses_overlapping_task_blocks_at_start() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/tests/data/bad/overlapping-task-blocks.yaml"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(TORC)
        .args(["controller", "--config", config, "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "127.0.0.1:0", "--plaintext", "--insecure"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{config}:13: nodes[2].task_block: 198.19.1.0/24 overlaps 198.19.1.0/25, the task block of node `bladerunner1`"
        )),
        "{err}"
    );
}

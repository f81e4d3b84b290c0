//! The rack network end to end (issue 16), on a test rack of network namespaces: `network:
//! rack` tasks get addresses of their own, the switch's network agent routes a `/32` to each
//! through its node, DNS names them, and a task that ends, a node that is lost or a route
//! left by a dead agent is withdrawn from the switch. Real processes, the real kernel.
//!
//! Needs CAP_SYS_ADMIN and CAP_NET_ADMIN (CI runs as root); without them each namespace test
//! prints `skipped: needs CAP_NET_ADMIN` and passes. Every namespace test checks the rack's
//! namespaces before it sends anything, reaches the API only through the forwarder on the
//! rack's loopback block, and sends to rack addresses only from inside the rack (`exec_in`, or
//! tasks). `LocalRack`'s `Drop` removes the namespaces, and their links and routes with them,
//! however the test ends.
//!
//! The rack's own services are those of `config/rack.yaml` (dns, etcd, statesync and the
//! network agent on the controller node), each test running the ones it needs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use torc_api::ServiceView;
use torc_client::Client;
use torc_test_utils::{
    COUNTING_SERVER, LocalRack, PYTHON, RackNetwork, RackOptions, namespaces_or_skip, python_task,
    stdout_of, wait_for,
};
use torc_types::{TaskId, TaskNetwork, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");
/// The switch: the controller node's namespace.
const SWITCH: &str = "wedge";
/// What the client sends: enough that the switch ports' counters cannot have risen this much
/// from the agents' own traffic alone.
const PAYLOAD: u64 = 2_000_000;
/// How soon the switch and DNS forget a task that ended (issue 16).
const WITHDRAWN_WITHIN: Duration = Duration::from_secs(1);
/// How soon the state store forgets the route of a task that ended: statesync runs a cycle
/// right after a change of the switch's routes (its watch), not at its next tick.
const STORE_FORGETS_WITHIN: Duration = Duration::from_secs(1);
/// A generous bound for what has no bound of its own (a rack starting its services).
const STARTS_WITHIN: Duration = Duration::from_secs(30);

/// Resolves argv[2] with dig at the rack's DNS server argv[1], connects to port argv[3] there
/// and sends argv[4] bytes; prints the address it resolved, the answer and its own address.
/// It retries (bounded) while the name or the route is not there yet.
const CLIENT: &str = r#"
import ipaddress, os, socket, subprocess, sys, time
dns, name, port, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
why = "no attempt"
for attempt in range(100):
    out = subprocess.run(["/usr/bin/dig", "+short", "+time=1", "+tries=1", "@" + dns, name],
                         capture_output=True, text=True).stdout.split()
    ips = []
    for word in out:
        try:
            ips.append(str(ipaddress.IPv4Address(word)))
        except ValueError:
            pass
    if not ips:
        why = "no answer for " + name
    else:
        try:
            c = socket.create_connection((ips[0], port), timeout=5)
            break
        except OSError as e:
            why = "connect to %s: %s" % (ips[0], e)
    time.sleep(0.1)
else:
    print("gave up:", why, flush=True)
    sys.exit(1)
c.sendall(b"x" * size)
c.shutdown(socket.SHUT_WR)
print("resolved", ips[0], flush=True)
print("answer", c.makefile().read().strip(), flush=True)
print("me", os.environ["HOST"], flush=True)
"#;

/// The rack's system services, as `config/rack.yaml` has them (each test takes those it needs).
const DNS: &str = r#"
    - name: dns
      command: torc
      privileged: true
      args: [dns, --listen, "$IP:53"]
      credentials: {api_access: viewer}
      memory: 32
      cpu: 0.2
      node_function: controller
      health:
        tcp: "$IP:53"
        interval_in_seconds: 1
"#;
const STORE: &str = r#"
    - name: etcd
      command: torc
      privileged: true
      args: [kv, --listen, "$IP:2379", --data-dir, "$DATA_DIR",
             --cert-file, "$SECRETS_DIR/tls.crt", --key-file, "$SECRETS_DIR/tls.key",
             --root-password-file, "$SECRETS_DIR/kv-root"]
      credentials: {tls: true, secrets: [kv-root]}
      memory: 64
      cpu: 0.2
      node_function: controller
      health:
        tcp: "$IP:2379"
        interval_in_seconds: 1
    - name: statesync
      command: torc
      privileged: true
      args: [statesync, --endpoints, "https://$IP:2379",
             --user, root, --password-file, "$SECRETS_DIR/kv-root"]
      credentials: {api_access: viewer, secrets: [kv-root]}
      memory: 32
      cpu: 0.1
      node_function: controller
      dependent_service: etcd
"#;

/// The network agent, restarted `restart_delay` seconds after it ends.
fn network_agent(restart_delay: u64) -> String {
    format!(
        r#"
    - name: network-agent
      command: torc
      privileged: true
      args: [network-agent]
      credentials: {{api_access: network}}
      memory: 32
      cpu: 0.1
      node_function: controller
      restart_delay_in_seconds: {restart_delay}
"#
    )
}

/// `echo`, a `network: rack` service with one instance on each compute node
/// (`echo-bladerunner1`, `echo-bladerunner2`), each a `COUNTING_SERVER`, not restarted within
/// a test.
fn echo_service() -> String {
    let script = serde_json::to_string(COUNTING_SERVER).expect("a string");
    format!(
        r#"
    - name: echo
      command: {PYTHON}
      args: ["-c", {script}]
      network: rack
      sla: singleton_each_slave
      ports: 1
      memory: 16
      cpu: 0.05
      kill_grace_in_seconds: 1
      restart_delay_in_seconds: 600
"#
    )
}

/// A rack on namespaces with 2 compute nodes running `services`, checked before anything is
/// sent. `None` (after a printed line) without the privilege.
async fn rack_with(services: &[&str], opts: RackOptions) -> Option<LocalRack> {
    if !namespaces_or_skip() {
        return None;
    }
    let mut extra_yaml = String::new();
    if !services.is_empty() {
        extra_yaml = format!("healthcheck:\n  system_services:{}", services.concat());
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            network: RackNetwork::Namespaces,
            extra_yaml,
            ..opts
        },
    )
    .await
    .unwrap();
    rack.assert_namespaces();
    Some(rack)
}

/// Runs `argv` in node `node`'s namespace; its stdout, or a panic with its stderr.
fn run_in(rack: &LocalRack, node: &str, argv: &[&str]) -> String {
    let out = rack.exec_in(node, argv).unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{argv:?} in {node}: {stderr}{stdout}");
    stdout
}

/// One route of the switch's table: its next hop and port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Hop {
    via: Ipv4Addr,
    port: String,
}

/// The switch's routes of a protocol (`116`: the network agent's; `static`), as ip(8) shows
/// them in the switch's namespace: destination → next hop and port. Destinations with a
/// prefix other than /32 carry it (`10.0.0.0/8`).
fn switch_routes(rack: &LocalRack, proto: &str) -> BTreeMap<String, Hop> {
    let text = run_in(rack, SWITCH, &["ip", "-j", "route", "show", "proto", proto]);
    let routes: Vec<serde_json::Value> = serde_json::from_str(&text).unwrap();
    routes
        .iter()
        .map(|r| {
            let hop = Hop {
                via: r["gateway"].as_str().unwrap_or("0.0.0.0").parse().unwrap(),
                port: r["dev"].as_str().unwrap_or_default().to_string(),
            };
            (r["dst"].as_str().unwrap().to_string(), hop)
        })
        .collect()
}

/// The route a task on `node` should have on the switch: via the node's address, out of its
/// port (`swpN` for `bladerunnerN`).
fn hop_to(rack: &LocalRack, node: &str) -> Hop {
    Hop {
        via: rack.nodes[node],
        port: format!("swp{}", node.trim_start_matches("bladerunner")),
    }
}

/// What the rack's DNS server answers for `name`, asked from inside the switch.
fn dig(rack: &LocalRack, name: &str) -> Vec<Ipv4Addr> {
    let server = format!("@{}", rack.nodes[SWITCH]);
    let out = rack
        .exec_in(
            SWITCH,
            &["dig", "+short", "+time=1", "+tries=1", &server, name],
        )
        .unwrap();
    // dig prints its trouble (`;; communications error`) even with +short: no answer.
    (String::from_utf8_lossy(&out.stdout).lines())
        .filter_map(|l| l.parse().ok())
        .collect()
}

fn v4(ip: Option<IpAddr>) -> Ipv4Addr {
    match ip {
        Some(IpAddr::V4(ip)) => ip,
        other => panic!("not an IPv4 address: {other:?}"),
    }
}

/// Waits until instance `name` runs, listens, and has its route on the switch; its view.
async fn echo_up(rack: &LocalRack, name: &str) -> ServiceView {
    let client = rack.client();
    let view = rack.wait_service_running(name).await.unwrap();
    let (task, ip) = (view.task.clone().unwrap(), v4(view.ip));
    let node = view.node.clone().unwrap();
    wait_for(
        &format!("{name} to listen on {ip} and be routed via {node}"),
        STARTS_WITHIN,
        || async {
            let listening = stdout_of(&client, &task).await.contains("listening");
            let routed = switch_routes(rack, "116").get(&ip.to_string())
                == Some(&hop_to(rack, node.as_str()));
            (listening && routed).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    view
}

/// A `network: rack` task.
fn rack_task(mut spec: TaskSpec) -> TaskSpec {
    spec.network = TaskNetwork::Rack;
    spec
}

/// Kills task `id` and waits until it has ended.
async fn kill_and_wait(client: &Client, id: &TaskId) {
    client.kill(id).await.unwrap();
    wait_for(&format!("task {id} to end"), STARTS_WITHIN, || async {
        let view = client.task(id).await.ok()?;
        view.state.is_terminal().then_some(())
    })
    .await
    .unwrap();
}

/// Panics unless `check` holds within `bound` of `start` (a check that began in time but
/// held only later fails too).
async fn within<F, Fut>(what: &str, start: Instant, bound: Duration, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let left = bound.saturating_sub(start.elapsed());
    if let Err(e) = wait_for(what, left, check).await {
        panic!("{e} ({bound:?} after it started)");
    }
    let took = start.elapsed();
    assert!(took <= bound, "{what}: took {took:?}, more than {bound:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rack_service_across_the_switch() {
    let (agent, echo) = (network_agent(1), echo_service());
    let Some(rack) = rack_with(&[DNS, &agent, &echo], RackOptions::default()).await else {
        return;
    };
    let client = rack.client();
    let one = echo_up(&rack, "echo-bladerunner1").await;
    let two = echo_up(&rack, "echo-bladerunner2").await;
    let (ip1, ip2) = (v4(one.ip), v4(two.ip));
    // Addresses of their nodes' task blocks, not their nodes'.
    assert_eq!(ip1.octets()[..3], [198, 19, 1], "{one:?}");
    assert_eq!(ip2.octets()[..3], [198, 19, 2], "{two:?}");

    // A client on bladerunner1, in a namespace of its own, finds bladerunner2's instance by
    // name and connects to it.
    let before = rack.switch_ports().await.unwrap();
    let spec = rack_task(python_task(
        "client",
        "bladerunner1",
        CLIENT,
        &[
            rack.nodes[SWITCH].to_string(),
            "echo-bladerunner2.service.torc".into(),
            two.ports[0].to_string(),
            PAYLOAD.to_string(),
        ],
    ));
    let launched = client.launch(&spec).await.unwrap();
    let ended = wait_for("the client to finish", STARTS_WITHIN, || async {
        let view = client.task(&launched.id).await.ok()?;
        view.state.is_terminal().then_some(view)
    })
    .await
    .unwrap();
    let said = stdout_of(&client, &launched.id).await;
    assert_eq!(ended.state, TaskState::Finished, "{said}\n{ended:?}");
    let me = v4(ended.ip);
    assert_eq!(me.octets()[..3], [198, 19, 1], "the client's own address");
    assert_ne!(me, ip1);
    // bladerunner2 answered, and saw the client's own address: no NAT on the way.
    assert_eq!(
        said.lines().collect::<Vec<_>>(),
        [
            format!("resolved {ip2}"),
            format!("answer got {PAYLOAD} bytes from {me} on bladerunner2"),
            format!("me {me}"),
        ],
        "{said}"
    );

    // Through the switch: in at swp1 (from bladerunner1), out at swp2 (to bladerunner2).
    let after = rack.switch_ports().await.unwrap();
    let rose =
        |port: &str, f: fn(&torc_net::observe::PortView) -> u64| f(&after[port]) - f(&before[port]);
    let (swp1_in, swp2_out) = (rose("swp1", |p| p.rx_bytes), rose("swp2", |p| p.tx_bytes));
    assert!(
        swp1_in >= PAYLOAD && swp2_out >= PAYLOAD,
        "swp1 received {swp1_in} bytes, swp2 sent {swp2_out}"
    );

    // The switch holds exactly one /32 per instance, via its node (the client's went with it).
    let want = BTreeMap::from([
        (ip1.to_string(), hop_to(&rack, "bladerunner1")),
        (ip2.to_string(), hop_to(&rack, "bladerunner2")),
    ]);
    wait_for(
        "the switch to hold the instances' routes only",
        STARTS_WITHIN,
        || async { (switch_routes(&rack, "116") == want).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", switch_routes(&rack, "116")));
    // And DNS names the service by both instances.
    let mut both = dig(&rack, "echo.service.torc");
    both.sort();
    assert_eq!(both, [ip1, ip2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_withdraws_within_a_second() {
    let (agent, echo) = (network_agent(1), echo_service());
    let Some(rack) = rack_with(&[DNS, STORE, &agent, &echo], RackOptions::default()).await else {
        return;
    };
    let client = rack.client();
    let one = echo_up(&rack, "echo-bladerunner1").await;
    let two = echo_up(&rack, "echo-bladerunner2").await;
    let (ip1, ip2) = (v4(one.ip), v4(two.ip));
    let name = "echo-bladerunner2.service.torc";
    let key = format!("/torc/routes/{ip2}-32");
    // etcdctl as the rack's users run it: TLS from the rack CA, as root (inside the switch).
    let kv_root = client.secret(&"kv-root".parse().unwrap()).await.unwrap();
    let (endpoint, cacert, user) = (
        format!("--endpoints=https://{}:2379", rack.nodes[SWITCH]),
        format!("--cacert={}", rack.ca_path().unwrap().display()),
        format!("--user=root:{kv_root}"),
    );
    let stored = || {
        let out = rack
            .exec_in(
                SWITCH,
                &[
                    "etcdctl",
                    &endpoint,
                    &cacert,
                    &user,
                    "--dial-timeout=1s",
                    "get",
                    &key,
                    "--print-value-only",
                ],
            )
            .unwrap();
        (out.status.success()).then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    wait_for(
        "DNS and the state store to have echo-bladerunner2",
        STARTS_WITHIN,
        || async {
            let named = dig(&rack, name) == [ip2];
            let kept = stored().is_some_and(|v| !v.is_empty());
            (named && kept).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    let value: serde_json::Value = serde_json::from_str(&stored().unwrap()).unwrap();
    assert_eq!(
        (
            &value["destination"],
            &value["next_hop"],
            &value["interface"]
        ),
        (
            &serde_json::json!(format!("{ip2}/32")),
            &serde_json::json!(rack.nodes["bladerunner2"].to_string()),
            &serde_json::json!("swp2")
        ),
        "{value}"
    );

    let start = Instant::now();
    client.kill(two.task.as_ref().unwrap()).await.unwrap();
    within(
        "the /32 to leave the switch",
        start,
        WITHDRAWN_WITHIN,
        || async { (!switch_routes(&rack, "116").contains_key(&ip2.to_string())).then_some(()) },
    )
    .await;
    within(
        "DNS to stop answering it",
        start,
        WITHDRAWN_WITHIN,
        || async {
            // The service's name answers the other instance only: the server is up, so an
            // answer without ip2 is no failure to ask.
            let gone = dig(&rack, "echo.service.torc") == [ip1] && !dig(&rack, name).contains(&ip2);
            gone.then_some(())
        },
    )
    .await;
    within(
        "its key to leave the state store",
        start,
        STORE_FORGETS_WITHIN,
        || async { (stored() == Some(String::new())).then_some(()) },
    )
    .await;
    // The other instance is untouched.
    assert_eq!(
        switch_routes(&rack, "116"),
        BTreeMap::from([(ip1.to_string(), hop_to(&rack, "bladerunner1"))])
    );
    assert_eq!(dig(&rack, "echo.service.torc"), [ip1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_node_withdraws() {
    let (agent, echo) = (network_agent(1), echo_service());
    let node_timeout = Duration::from_secs(2);
    let opts = RackOptions {
        node_timeout_secs: node_timeout.as_secs(),
        ..RackOptions::default()
    };
    let Some(mut rack) = rack_with(&[&agent, &echo], opts).await else {
        return;
    };
    let one = echo_up(&rack, "echo-bladerunner1").await;
    let two = echo_up(&rack, "echo-bladerunner2").await;
    let (ip1, ip2) = (v4(one.ip), v4(two.ip));

    // bladerunner2's agent dies; its task lives on under its shim, but the node is lost.
    let start = Instant::now();
    rack.kill_agent("bladerunner2");
    within(
        "bladerunner2's route to leave the switch",
        start,
        // The node timeout, then a reconciler step, the network agent's long poll and its
        // netlink change: well under 3 s, but a loaded 2-core machine (a full test run beside
        // other builds) once took more than 1 s for them, and once (load 6-7) more than 3 s.
        node_timeout + Duration::from_secs(8),
        || async { (!switch_routes(&rack, "116").contains_key(&ip2.to_string())).then_some(()) },
    )
    .await;
    assert_eq!(
        switch_routes(&rack, "116"),
        BTreeMap::from([(ip1.to_string(), hop_to(&rack, "bladerunner1"))]),
        "bladerunner1's route stays"
    );
    let nodes = rack.client().nodes().await.unwrap();
    let b2 = nodes.iter().find(|n| n.name.as_str() == "bladerunner2");
    assert!(b2.is_some_and(|n| !n.active), "{nodes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_and_foreign_routes() {
    // The network agent comes back 3 s after it ends: the window in which the test changes
    // the switch behind its back.
    let (agent, echo) = (network_agent(3), echo_service());
    let Some(rack) = rack_with(&[&agent, &echo], RackOptions::default()).await else {
        return;
    };
    let client = rack.client();
    let one = echo_up(&rack, "echo-bladerunner1").await;
    let two = echo_up(&rack, "echo-bladerunner2").await;
    let (ip1, ip2) = (v4(one.ip), v4(two.ip));
    let programmer = rack.wait_service_running("network-agent").await.unwrap();

    kill_and_wait(&client, programmer.task.as_ref().unwrap()).await;
    // While it is down: a rack task ends, a route of its protocol that no task needs appears
    // (as a killed agent would leave it), and an operator adds a static one.
    kill_and_wait(&client, two.task.as_ref().unwrap()).await;
    let (stale, foreign) = ("198.19.9.9", "198.19.9.10");
    let via = rack.nodes["bladerunner1"].to_string();
    for (dst, proto) in [(stale, "116"), (foreign, "static")] {
        run_in(
            &rack,
            SWITCH,
            &[
                "ip",
                "route",
                "add",
                &format!("{dst}/32"),
                "via",
                &via,
                "proto",
                proto,
            ],
        );
    }
    let table = switch_routes(&rack, "116");
    assert!(
        table.contains_key(&ip2.to_string()) && table.contains_key(stale),
        "with no network agent, nothing withdrew the dead task's route: {table:?}"
    );
    let down = client.service(&"network-agent".parse().unwrap()).await;
    assert!(
        down.as_ref()
            .is_ok_and(|s| s.state != Some(TaskState::Running)),
        "the network agent came back too early for the test: {down:?}"
    );

    rack.wait_service_running("network-agent").await.unwrap();
    let start = Instant::now();
    within(
        "the stale and the dead task's routes to go",
        start,
        WITHDRAWN_WITHIN,
        || async {
            let table = switch_routes(&rack, "116");
            (!table.contains_key(stale) && !table.contains_key(&ip2.to_string())).then_some(())
        },
    )
    .await;
    assert_eq!(
        switch_routes(&rack, "116"),
        BTreeMap::from([(ip1.to_string(), hop_to(&rack, "bladerunner1"))]),
        "the live task's route stays"
    );
    assert_eq!(
        switch_routes(&rack, "static"),
        BTreeMap::from([(foreign.to_string(), hop_to(&rack, "bladerunner1"))]),
        "a route of another protocol is never touched"
    );
}

/// Shows the task's own address, then waits.
const SHOW_ADDRESS: &str = r#"
import subprocess, time
print(subprocess.run(["/usr/sbin/ip", "-4", "-o", "addr", "show", "dev", "eth0"],
                     capture_output=True, text=True).stdout, flush=True)
time.sleep(600)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_block_pending() {
    // A /30: the network and broadcast addresses, the gateway (.1) and one task address.
    let block = "198.19.1.0/30";
    let opts = RackOptions {
        task_blocks: BTreeMap::from([("bladerunner1".to_string(), block.to_string())]),
        ..RackOptions::default()
    };
    let Some(rack) = rack_with(&[], opts).await else {
        return;
    };
    let client = rack.client();
    let task = |name: &str| rack_task(python_task(name, "bladerunner1", SHOW_ADDRESS, &[]));
    let first = client.launch(&task("first")).await.unwrap();
    let running = wait_for("the first to run", STARTS_WITHIN, || async {
        let view = client.task(&first.id).await.ok()?;
        (view.state == TaskState::Running).then_some(view)
    })
    .await
    .unwrap();
    let only = Ipv4Addr::new(198, 19, 1, 2);
    assert_eq!(v4(running.ip), only);

    let second = client.launch(&task("second")).await.unwrap();
    let view = client.task(&second.id).await.unwrap();
    assert_eq!(view.state, TaskState::Pending, "{view:?}");
    assert_eq!(
        view.message.as_deref(),
        Some(
            format!(
                "pending: no active node can give a rack address (bladerunner1: block {block} \
                 exhausted, 1 of 1 in use)"
            )
            .as_str()
        )
    );

    kill_and_wait(&client, &first.id).await;
    let placed = wait_for("the second to run", STARTS_WITHIN, || async {
        let view = client.task(&second.id).await.ok()?;
        let said = stdout_of(&client, &second.id).await;
        (view.state == TaskState::Running && said.contains("inet")).then_some((view, said))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    assert_eq!(v4(placed.0.ip), only, "{:?}", placed.0);
    // In a namespace of its own, on the address freed, the gateway at the other end.
    assert!(
        placed
            .1
            .contains("eth0    inet 198.19.1.2 peer 198.19.1.1/32"),
        "{}",
        placed.1
    );
}

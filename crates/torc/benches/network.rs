//! The rack network, measured (issue 16; `docs/design/rack-network.md` §11):
//!
//! 1. *start → route → connect*: a `LocalRack` on network namespaces (the switch and 2 compute
//!    nodes, the real `torc` binary, the `network-agent` system service on the switch), 200
//!    sequential `network: rack` launches alternating between the nodes, each a TCP listener
//!    (this binary, run again as the task). Per task, on the wall clock (`CLOCK_REALTIME`,
//!    read by the controller and by this process alike, in ms): when the controller recorded
//!    it `staging` and `running` (its task history), when a netlink listener in the switch's
//!    namespace saw `RTM_NEWROUTE` for its `/32` (the controller publishes the route from
//!    `staging`, so it usually comes before `running`), and the first `connect()` that
//!    succeeded from a socket made inside the *other* node's namespace (a new attempt every
//!    millisecond). Connections later than 200 ms are listed with how the attempts failed.
//! 2. *withdrawal*: each task is killed once connected; `RTM_DELROUTE` seen minus the kill
//!    request, and its parts (the controller's `killing`, the agent's `killed`, the switch).
//! 3. *reconcile 10,000 routes*, in-process with torc-net's own code (the network agent's
//!    pass: the dumps, `routes::plan`, `route::apply`) on a bare switch namespace with 2 node
//!    links: cold, and a restart with stale, missing and foreign routes; `ip route replace`
//!    for scale.
//!
//! Every address is in 198.18.0.0/15 and exists only inside namespaces made here (under rack
//! locks this process holds, so no sweep takes them); nothing is sent from the host's
//! namespace. Both racks are removed at the end, also on a panic (their guards' `Drop`).
//! Without CAP_SYS_ADMIN and CAP_NET_ADMIN it prints `skipped: needs CAP_NET_ADMIN` and exits.
//!
//! Run with `cargo bench -p torc --bench network`. Prints figures; asserts nothing about speed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use torc_net::forward::NetnsDialer;
use torc_net::observe::{Announcement, Announcements};
use torc_net::rack::{self, RackLock, RackNet, RackPlan};
use torc_net::routes::Op;
use torc_net::{Netlink, Netns, NetnsPrefix, Owner, RouteProtocol, netns, observe, route};
use torc_test_utils::bench::{bench_runtime, load_average, percentile, wall_ms};
use torc_test_utils::{LocalRack, RackNetwork, RackOptions, namespaces_or_skip, wait_for};
use torc_types::{Resources, TaskNetwork, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");
/// Set in a task's environment: this binary is then the task, a TCP listener on `$HOST:$PORT`.
const LISTENER: &str = "TORC_BENCH_NETWORK_LISTENER";
const LAUNCHES: usize = 200;
/// A connection later than this after `running` is listed with how its attempts failed.
const SLOW_MS: f64 = 200.0;
/// Bounds every wait of part 1 (a route, a connection, a state).
const PATIENCE: Duration = Duration::from_secs(10);
/// Routes of part 3.
const ROUTES: usize = 10_000;
const FOREIGN: usize = 1_000;
/// A routing daemon's protocol (`bgp`) for the routes torc does not own.
const FOREIGN_PROTOCOL: RouteProtocol = RouteProtocol(186);
const IP_ROUTES: usize = 200;

/// The switch's network agent, as `config/rack.yaml` runs it.
const NETWORK_AGENT: &str = r#"
healthcheck:
  system_services:
    - name: network-agent
      command: torc
      privileged: true
      args: [network-agent]
      credentials: {api_access: network}
      memory: 32
      cpu: 0.1
      node_function: controller
"#;

fn main() {
    if std::env::var_os(LISTENER).is_some() {
        return listen();
    }
    if !namespaces_or_skip() {
        return;
    }
    bench_runtime().block_on(async {
        println!(
            "rack network, release build; load average at the start: {}",
            load_average()
        );
        reconcile_bench().await;
        route_bench().await;
    });
}

/// The task: accepts connections on `$HOST:$PORT` and closes them, until killed (or for at most
/// two minutes, should nothing kill it).
fn listen() {
    let host: Ipv4Addr = std::env::var("HOST")
        .ok()
        .and_then(|h| h.parse().ok())
        .expect("$HOST");
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("$PORT");
    let listener = std::net::TcpListener::bind((host, port)).expect("bind $HOST:$PORT");
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(0);
    });
    for connection in listener.incoming() {
        drop(connection);
    }
}

fn summary(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    values.sort_by(|a, b| a.total_cmp(b));
    format!(
        "p50 {:.1}  p99 {:.1}  min {:.1}  max {:.1}  (n = {})",
        percentile(values, 0.5),
        percentile(values, 0.99),
        values[0],
        values[values.len() - 1],
        values.len()
    )
}

// ---------------------------------------------------------------------------------------------
// Part 1 and 2: start → route → connect, and withdrawal, on a rack of real processes.

/// One `/32` route announcement of the switch's kernel, stamped when it was read.
#[derive(Debug, Clone, Copy)]
struct Seen {
    at_ms: f64,
    added: bool,
    dst: Ipv4Addr,
}

/// A thread listening to the switch's route announcements (`observe::Announcements`, a socket
/// made inside its namespace), stamping each on the wall clock as it is read.
struct RouteWatcher {
    seen: Arc<Mutex<Vec<Seen>>>,
    overruns: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RouteWatcher {
    fn start(switch: &Netns) -> RouteWatcher {
        let announced =
            Announcements::open(switch, RouteProtocol::TORC).expect("listen on the switch");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let overruns = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, overruns, stop) = (seen.clone(), overruns.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !announced.wait(Duration::from_millis(100)).unwrap_or(false) {
                        continue;
                    }
                    let at_ms = wall_ms();
                    match announced.read() {
                        Ok(read) => {
                            seen.lock()
                                .unwrap()
                                .extend(read.iter().filter_map(|a| match a {
                                    Announcement::Route(e) if e.route.dst_len == 32 => Some(Seen {
                                        at_ms,
                                        added: e.added,
                                        dst: e.route.dst,
                                    }),
                                    _ => None,
                                }))
                        }
                        Err(_) => {
                            overruns.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        };
        RouteWatcher {
            seen,
            overruns,
            stop,
            thread: Some(thread),
        }
    }

    /// When `dst/32` was added (or deleted) at or after `after_ms`, waiting at most
    /// [`PATIENCE`].
    async fn seen(&self, dst: Ipv4Addr, added: bool, after_ms: f64) -> Option<f64> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let found = (self.seen.lock().unwrap().iter())
                .find(|e| e.dst == dst && e.added == added && e.at_ms >= after_ms)
                .map(|e| e.at_ms);
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

impl Drop for RouteWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// How the attempts before the first connection failed: refused (the task's end answered, its
/// listener was not up yet), unreachable (an ICMP error: no route yet), no answer in 2 ms.
#[derive(Debug, Default)]
struct Attempts {
    refused: u32,
    unreachable: u32,
    silent: u32,
    /// When the first refusal came (the task's end first answered).
    first_refused_ms: Option<f64>,
}

/// A TCP connection to `target` from inside the dialer's namespace: a new socket every
/// millisecond until one connects (each attempt given 2 ms, since the switch's ICMP answers
/// before the route exists are rate-limited), for at most [`PATIENCE`]. When it connected, and
/// how the attempts before failed.
async fn first_connect(dialer: &NetnsDialer, target: SocketAddr) -> (Option<f64>, Attempts) {
    let mut attempts = Attempts::default();
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        let Ok(socket) = dialer.tcp_socket().await else {
            break;
        };
        let attempt = tokio::time::timeout(Duration::from_millis(2), socket.connect(target));
        match attempt.await {
            Ok(Ok(_stream)) => return (Some(wall_ms()), attempts),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                attempts.refused += 1;
                attempts.first_refused_ms.get_or_insert_with(wall_ms);
            }
            Ok(Err(_)) => attempts.unreachable += 1,
            Err(_) => attempts.silent += 1,
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (None, attempts)
}

async fn route_bench() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            network: RackNetwork::Namespaces,
            node_timeout_secs: 30,
            node_resources: (16.0, 16_000.0),
            extra_yaml: NETWORK_AGENT.into(),
            ..RackOptions::default()
        },
    )
    .await
    .expect("the rack starts");
    rack.assert_namespaces();
    let client = rack.client();
    let watcher = RouteWatcher::start(rack.netns("wedge").expect("the switch"));
    rack.wait_service_running("network-agent")
        .await
        .expect("the network agent runs");
    wait_for("the switch's first report", PATIENCE, || async {
        client.network().await.ok()?.reported.map(drop)
    })
    .await
    .expect("the network agent reports");
    let nodes = ["bladerunner1", "bladerunner2"];
    let dialers = nodes.map(|n| NetnsDialer::new(rack.netns(n).unwrap()).expect("a dialer"));
    let me = std::env::current_exe().expect("this bench's path");

    let mut f = Figures::default();
    let (mut missed, mut slow) = (Vec::new(), Vec::new());
    for i in 0..LAUNCHES {
        let (node, other) = (i % 2, 1 - i % 2);
        let mut spec = TaskSpec::new("netbench".parse().unwrap(), me.display().to_string());
        spec.env.insert(LISTENER.into(), "1".into());
        spec.resources = Resources::new(0.01, 8.0, 0.0);
        spec.ports = 1;
        spec.network = TaskNetwork::Rack;
        spec.constraints.node_name = Some(nodes[node].parse().unwrap());
        spec.kill_grace_ms = 1_000;
        let asked = wall_ms();
        let task = client.launch(&spec).await.expect("launch");
        let placed = wait_for("an address", PATIENCE, || async {
            let t = client.task(&task.id).await.ok()?;
            (t.ip.is_some() && !t.ports.is_empty()).then_some(t)
        })
        .await
        .expect("the task is placed");
        let Some(std::net::IpAddr::V4(ip)) = placed.ip else {
            panic!("a rack task has an IPv4 address: {placed:?}");
        };
        let target = SocketAddr::from(SocketAddrV4::new(ip, placed.ports[0]));
        let (connected, attempts) = first_connect(&dialers[other], target).await;
        let routed = watcher.seen(ip, true, asked).await;
        let history = wait_for("running", PATIENCE, || async {
            let t = client.task(&task.id).await.ok()?;
            let at = |state| Some(t.history.iter().find(|h| h.state == state)?.at as f64);
            Some((
                t.created_at as f64,
                at(TaskState::Staging)?,
                at(TaskState::Running)?,
            ))
        })
        .await;
        let Ok((created, staging, t_run)) = history else {
            missed.push(format!("{ip}: never recorded running"));
            continue;
        };
        f.placed.push(staging - created);
        f.started.push(t_run - staging);
        match (routed, connected) {
            (Some(r), Some(c)) => {
                f.route_after_staging.push(r - staging);
                f.route.push(r - t_run);
                f.connect.push(c - t_run);
                if c - t_run > SLOW_MS {
                    slow.push(format!(
                        "{ip} on {}: staging {:+.0}, route {:+.1}, first refused {:?}, connected {:+.1} \
                         (ms from running); attempts before: {attempts:?}",
                        nodes[node],
                        staging - t_run,
                        r - t_run,
                        attempts.first_refused_ms.map(|x| (x - t_run).round()),
                        c - t_run
                    ));
                }
            }
            _ => missed.push(format!(
                "{ip}: route seen {routed:?}, connected {connected:?}"
            )),
        }

        let kill_asked = wall_ms();
        client.kill(&task.id).await.expect("kill");
        let withdrawn = watcher.seen(ip, false, kill_asked).await;
        let ended = wait_for("killed", PATIENCE, || async {
            let t = client.task(&task.id).await.ok()?;
            let at = |f: fn(TaskState) -> bool| {
                t.history.iter().find(|h| f(h.state)).map(|h| h.at as f64)
            };
            Some((
                at(|s| s == TaskState::Killing)?,
                at(TaskState::is_terminal)?,
            ))
        })
        .await;
        match (withdrawn, ended) {
            (Some(w), Ok((killing, killed))) => {
                f.withdraw.push(w - kill_asked);
                f.kill_accepted.push(killing - kill_asked);
                f.kill_done.push(killed - killing);
                f.withdraw_after_killed.push(w - killed);
            }
            _ => missed.push(format!("{ip}: withdrawal seen {withdrawn:?}")),
        }
    }
    let overruns = watcher.overruns.load(Ordering::Relaxed);
    drop(watcher);
    f.print();
    if overruns > 0 {
        println!("  the route listener lost announcements {overruns} times (ENOBUFS)");
    }
    for m in &slow {
        println!("  slow connect: {m}");
    }
    for m in &missed {
        println!("  missed: {m}");
    }
    if !missed.is_empty() {
        println!("{}", rack.logs_hint());
    }
}

/// Part 1 and 2's samples, in ms.
#[derive(Default)]
struct Figures {
    /// Accepted → staging (placed, with an address), then staging → running (the agent made
    /// the task's namespace and veth, started the shim and reported), on the controller's clock.
    placed: Vec<f64>,
    started: Vec<f64>,
    /// RTM_NEWROUTE after staging (when the route is published) and after running.
    route_after_staging: Vec<f64>,
    route: Vec<f64>,
    connect: Vec<f64>,
    /// Kill asked → RTM_DELROUTE, and its parts: the controller's `killing`, the agent's
    /// `killed`, the switch's withdrawal.
    withdraw: Vec<f64>,
    kill_accepted: Vec<f64>,
    kill_done: Vec<f64>,
    withdraw_after_killed: Vec<f64>,
}

impl Figures {
    fn print(&mut self) {
        println!(
            "start -> route -> connect: {LAUNCHES} sequential network: rack launches (a TCP \
             listener each), alternating between 2 nodes; wall clock (CLOCK_REALTIME: the \
             controller's task history and this process), ms"
        );
        let rows: [(&str, &mut Vec<f64>, &str); 9] = [
            ("accepted -> staging (placed)", &mut self.placed, ""),
            ("staging -> running (agent)", &mut self.started, ""),
            ("staging -> RTM_NEWROUTE", &mut self.route_after_staging, ""),
            (
                "running -> RTM_NEWROUTE",
                &mut self.route,
                "   (target p99 <= 50; < 0: before running)",
            ),
            (
                "running -> connect() from the other node",
                &mut self.connect,
                "   (target p99 <= 100)",
            ),
            (
                "kill asked -> RTM_DELROUTE",
                &mut self.withdraw,
                "   (target p99 <= 50)",
            ),
            (
                "  of which kill asked -> killing",
                &mut self.kill_accepted,
                "",
            ),
            ("  killing -> killed (agent)", &mut self.kill_done, ""),
            (
                "  killed -> RTM_DELROUTE",
                &mut self.withdraw_after_killed,
                "",
            ),
        ];
        for (what, values, target) in rows {
            println!("  {what:<42} {}{target}", summary(values));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Part 3: reconciling 10,000 routes in-process, and ip(8) for scale.

/// The `k`th destination of the bench's switch: 198.19.(1 + k / 250).(1 + k % 250).
fn destination(k: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, 1 + (k / 250) as u8, 1 + (k % 250) as u8)
}

/// One pass as the network agent makes it (`network_agent.rs`, before its report): the dumps,
/// the plan, the operations applied 64 at a time.
struct Pass {
    took: Duration,
    dumps: usize,
    adds: usize,
    replaces: usize,
    deletes: usize,
    failed: usize,
}

async fn reconcile(nl: &Netlink, desired: &BTreeMap<Ipv4Addr, Ipv4Addr>) -> Pass {
    let started = Instant::now();
    let (plan, outcomes) = route::reconcile(nl, desired, RouteProtocol::TORC)
        .await
        .expect("dump the table and addresses");
    let took = started.elapsed();
    let count = |f: fn(&Op) -> bool| plan.ops.iter().filter(|op| f(op)).count();
    Pass {
        took,
        // `observe::routes`: links (for names) and routes; `observe::local_addrs`: addresses.
        dumps: 3,
        adds: count(|op| matches!(op, Op::Add { .. })),
        replaces: count(|op| matches!(op, Op::Replace { .. })),
        deletes: count(|op| matches!(op, Op::Delete { .. })),
        failed: outcomes.iter().filter(|(_, r)| r.is_err()).count(),
    }
}

impl Pass {
    fn print(&self, what: &str) {
        let ops = self.adds + self.replaces + self.deletes;
        println!(
            "  {what}: {:.1} ms, {} netlink requests ({} dumps + {} adds + {} replaces + {} deletes), \
             {:.0} routes/s, {} failed",
            self.took.as_secs_f64() * 1000.0,
            self.dumps + ops,
            self.dumps,
            self.adds,
            self.replaces,
            self.deletes,
            ops as f64 / self.took.as_secs_f64(),
            self.failed
        );
    }
}

/// (owned, foreign) `/32` routes of the switch.
async fn count_routes(nl: &Netlink) -> (usize, usize) {
    let routes = observe::routes(nl, RouteProtocol::TORC)
        .await
        .expect("dump");
    let owned = routes.iter().filter(|r| r.owner == Owner::Torc).count();
    let foreign = routes
        .iter()
        .filter(|r| r.protocol == FOREIGN_PROTOCOL && r.dst_len == 32)
        .count();
    (owned, foreign)
}

/// A bare switch with two node links (the standard layout's addresses, in namespaces of its
/// own), torn down when dropped.
fn bare_switch() -> RackNet {
    let prefix = NetnsPrefix::random();
    let lock = RackLock::acquire(&prefix).expect("the bench rack's lock");
    let plan = RackPlan::standard(prefix, 2).expect("a plan");
    let net = rack::create(plan, lock, "the network bench's bare switch").expect("the switch");
    net.check().expect("the bench's namespaces are its own");
    net
}

async fn reconcile_bench() {
    let net = bare_switch();
    let nl = netns::connect_in(net.switch()).expect("netlink in the switch");
    let nodes = [net.plan().links[0].address, net.plan().links[1].address];
    let via = |k: usize| nodes[k % 2];
    println!(
        "reconcile {ROUTES} routes in-process (torc-net's dumps, plan and apply), bare switch, 2 node links"
    );

    // (a) Cold: all desired, none present.
    let desired: BTreeMap<_, _> = (0..ROUTES).map(|k| (destination(k), via(k))).collect();
    let cold = reconcile(&nl, &desired).await;
    cold.print("cold, 10,000 desired, 0 present");
    let programmed = count_routes(&nl).await.0;
    if programmed != ROUTES {
        println!("  (the cold pass left {programmed} owned routes, not {ROUTES})");
    }

    // (b) A restart: half of the present routes still desired, half stale, 5,000 missing, and
    // routes of a routing daemon's that must stay.
    let foreign: Vec<Op> = (0..FOREIGN)
        .map(|k| Op::Add {
            dst: destination(3 * ROUTES + k),
            via: via(k),
        })
        .collect();
    let added = route::apply(&nl, &foreign, FOREIGN_PROTOCOL).await;
    if let Some((op, Err(e))) = added.iter().find(|(_, r)| r.is_err()) {
        println!("  (a foreign route was not added: {op}: {e})");
    }
    let before = count_routes(&nl).await.1;
    let restart: BTreeMap<_, _> = (0..ROUTES / 2)
        .chain(ROUTES..ROUTES + ROUTES / 2)
        .map(|k| (destination(k), via(k)))
        .collect();
    let warm = reconcile(&nl, &restart).await;
    warm.print("restart, 5,000 kept + 5,000 stale + 5,000 missing + 1,000 foreign");
    let (owned, after) = count_routes(&nl).await;
    println!(
        "  after the restart: {owned} owned routes (want {}), foreign {before} before and {after} after{}",
        ROUTES,
        if before == after {
            " (unchanged)"
        } else {
            " (CHANGED)"
        }
    );

    // For scale: ip(8), one process per route, as a script would do it (`ip -n` enters the
    // switch's namespace by its name under /run/netns, as the design's probe did).
    let switch = net.plan().switch_netns.to_string();
    let started = Instant::now();
    let mut failed = 0;
    for k in 0..IP_ROUTES {
        let mut cmd = Command::new("ip");
        cmd.args([
            "-n",
            &switch,
            "route",
            "replace",
            &format!("{}/32", destination(4 * ROUTES + k)),
        ])
        .args(["via", &via(k).to_string(), "proto", "116"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        if !cmd.status().is_ok_and(|s| s.success()) {
            failed += 1;
        }
    }
    let ip_ms = started.elapsed().as_secs_f64() * 1000.0 / IP_ROUTES as f64;
    let torc_ms = cold.took.as_secs_f64() * 1000.0 / ROUTES as f64;
    println!(
        "  ip route replace, {IP_ROUTES} routes one process each: {ip_ms:.2} ms per route ({failed} failed); \
         torc-net cold {torc_ms:.4} ms per route: ip(8) takes {:.0}x as long",
        ip_ms / torc_ms
    );
    drop(nl);
    net.teardown().expect("the bench's switch is removed");
}

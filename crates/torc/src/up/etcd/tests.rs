//! `torc up`'s etcd against the real `etcd` 3.4 and `etcdctl`: on loopback addresses of a free
//! block with free ports, and on a namespaced rack (root only).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use torc_net::NetnsPrefix;
use torc_net::rack::{self, Forwarders, RackLock, RackPlan};
use torc_test_utils::{
    free_loopback_block, free_port, namespaces_or_skip, pid_alive, processes_mentioning, wait_for,
};
use torc_tls::pki::Ca;

use super::*;
use crate::up::config::{Layout, sample_config};

const RACK: &str = "r1";

/// A state directory with a rack CA and its logs directory, as `torc up` makes them.
struct State {
    dir: tempfile::TempDir,
    logs: std::path::PathBuf,
    ca: Ca,
}

impl State {
    fn new() -> State {
        let dir = tempfile::Builder::new()
            .prefix("up-etcd-")
            .tempdir()
            .unwrap();
        let logs = dir.path().join("logs");
        torc_tls::files::private_dir(&logs).unwrap();
        let ca = Ca::create(&dir.path().join("pki"), RACK).unwrap();
        State { dir, logs, ca }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn options<'a>(
        &'a self,
        security: Security<'a>,
        members: Vec<MemberSpec<'a>>,
    ) -> EtcdOptions<'a> {
        EtcdOptions {
            rack: RACK,
            state_dir: self.path(),
            logs: &self.logs,
            security,
            members,
            start_timeout: START_TIMEOUT,
        }
    }
}

/// `n` members on `.1`, `.2`, ... of a free loopback block, each with free ports.
fn loopback_members(n: usize) -> Vec<MemberSpec<'static>> {
    let block = free_loopback_block().octets();
    (1..=n)
        .map(|i| {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], i as u8);
            MemberSpec {
                name: NodeName::new(format!("node{i}")).unwrap(),
                ip: IpAddr::V4(ip),
                endpoint: None,
                netns: None,
                ports: Ports {
                    client: free_port(ip),
                    peer: free_port(ip),
                },
            }
        })
        .collect()
}

/// Runs the real `etcdctl` against `endpoints`, with the CA and `cert` when given.
fn etcdctl(
    endpoints: &[String],
    tls: Option<(&TlsFiles, &ClientCert)>,
    args: &[&str],
) -> (bool, String) {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=2s", "--command-timeout=5s"]);
    if let Some((files, cert)) = tls {
        cmd.arg("--cacert")
            .arg(&files.ca)
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key);
    }
    let out = cmd.args(args).output().expect("etcdctl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every etcd started on `state`'s data: none once stopped.
fn etcds_of(state: &Path) -> Vec<(u32, String)> {
    processes_mentioning(&state.join("etcd"))
        .into_iter()
        .filter(|(pid, cmd)| cmd.contains("etcd --name") && pid_alive(*pid))
        .collect()
}

#[tokio::test]
async fn three_members_with_auth_survive_a_member_and_a_restart() {
    let state = State::new();
    let members = loopback_members(3);
    let mut etcd = RackEtcd::start(state.options(Security::Tls(&state.ca), members.clone()))
        .await
        .unwrap();
    assert!(etcd.auth_set_up(), "a fresh cluster gets its auth set up");
    let files = etcd.tls().unwrap().clone();
    let endpoints = etcd.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert!(endpoints.iter().all(|e| e.starts_with("https://127.")));
    assert_eq!(
        etcd.rack_endpoints(),
        endpoints,
        "loopback: the rack is the host"
    );
    let line = etcd.describe();
    assert!(
        line.contains("3 members healthy (node1 node2 node3)"),
        "{line}"
    );
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions()) & 0o777
    };
    for f in [&files.root.cert, &files.root.key, &files.controller.key] {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
    assert_eq!(
        files.root.cert.parent(),
        Some(state.path().join("etcd").as_path())
    );

    // The controller's certificate: its prefix, and nothing else.
    let controller = Some((&files, &files.controller));
    let (ok, out) = etcdctl(
        &endpoints,
        controller,
        &["put", "/torc-controller/r1/x", "one"],
    );
    assert!(ok, "{out}");
    let (ok, out) = etcdctl(&endpoints, controller, &["get", "/torc-controller/r1/x"]);
    assert!(ok && out.contains("one"), "{out}");
    for args in [
        &["put", "/torc/x", "no"][..],
        &["get", "/torc-controller/r2/x"],
        &["put", "/torc-controller/r1", "no"],
        &["get", "--prefix", "/"],
    ] {
        let (ok, out) = etcdctl(&endpoints, controller, args);
        assert!(!ok && out.contains("permission denied"), "{args:?}: {out}");
    }
    // Without a client certificate the members refuse the connection.
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--dial-timeout=2s", "--command-timeout=5s", "--cacert"])
        .arg(&files.ca)
        .args(["get", "/torc-controller/r1/x"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !text.contains("one"), "{text}");
    // Root sees the members.
    let root = Some((&files, &files.root));
    let (ok, out) = etcdctl(&endpoints, root, &["member", "list"]);
    assert!(ok, "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
    for m in &members {
        assert!(out.contains(&format!(", {}, ", m.name)), "{out}");
    }

    // One member killed: the other two keep a quorum.
    let victim = etcd.pid("node1").unwrap();
    kill(Pid::from_raw(victim as i32), Signal::SIGKILL).unwrap();
    let started = Instant::now();
    let exited = wait_for(
        "the killed member to be seen",
        Duration::from_secs(10),
        || std::future::ready(etcd.exited()),
    )
    .await
    .unwrap();
    assert_eq!(exited.0.as_str(), "node1");
    wait_for(
        "a write on the two left",
        Duration::from_secs(20),
        || async {
            etcdctl(
                &endpoints,
                controller,
                &["put", "/torc-controller/r1/y", "two"],
            )
            .0
            .then_some(())
        },
    )
    .await
    .unwrap();
    let (ok, out) = etcdctl(&endpoints[1..], root, &["endpoint", "health"]);
    assert!(ok && out.matches("is healthy").count() == 2, "{out}");
    println!(
        "a write accepted {:?} after a member was killed",
        started.elapsed()
    );

    let stopping = Instant::now();
    etcd.stop().await;
    println!("3 members (one dead) stopped in {:?}", stopping.elapsed());
    assert_eq!(etcds_of(state.path()), Vec::new());
    for m in &members {
        assert!(
            state
                .path()
                .join("etcd")
                .join(m.name.as_str())
                .join("member")
                .is_dir()
        );
    }

    // A restart on the kept data: the data is there, auth too, and the setup is skipped.
    let etcd = RackEtcd::start(state.options(Security::Tls(&state.ca), members.clone()))
        .await
        .unwrap();
    assert!(!etcd.auth_set_up(), "a restart skips the auth setup");
    let (ok, out) = etcdctl(
        &etcd.endpoints(),
        controller,
        &["get", "/torc-controller/r1/y"],
    );
    assert!(ok && out.contains("two"), "{out}");
    let (ok, out) = etcdctl(&etcd.endpoints(), controller, &["put", "/torc/x", "no"]);
    assert!(!ok && out.contains("permission denied"), "{out}");
    drop(etcd);
    assert_eq!(etcds_of(state.path()), Vec::new(), "Drop leaves no etcd");
}

#[tokio::test]
async fn a_plaintext_member_runs_without_auth() {
    let state = State::new();
    let members = loopback_members(1);
    let etcd = RackEtcd::start(state.options(Security::Plaintext, members))
        .await
        .unwrap();
    assert!(!etcd.auth_set_up() && etcd.tls().is_none());
    let endpoints = etcd.endpoints();
    assert!(endpoints[0].starts_with("http://"), "{endpoints:?}");
    let (ok, out) = etcdctl(&endpoints, None, &["put", "/anything", "x"]);
    assert!(ok, "{out}");
    let stopping = Instant::now();
    etcd.stop().await;
    println!("1 member stopped in {:?}", stopping.elapsed());
    assert_eq!(etcds_of(state.path()), Vec::new());
}

#[tokio::test]
async fn a_member_that_cannot_start_is_named_with_its_log() {
    let state = State::new();
    let mut members = loopback_members(3);
    // Its peer port is held: it exits at once.
    let held = std::net::TcpListener::bind(SocketAddr::new(members[2].ip, 0)).unwrap();
    members[2].ports.peer = held.local_addr().unwrap().port();
    let err = RackEtcd::start(state.options(Security::Tls(&state.ca), members))
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("etcd member node3 exited"), "{text}");
    assert!(text.contains("etcd-node3.log"), "{text}");
    assert_eq!(etcds_of(state.path()), Vec::new(), "the others are killed");
}

#[test]
fn without_etcd_the_package_is_named() {
    let empty = tempfile::tempdir().unwrap();
    for path in [Some(empty.path().as_os_str()), None] {
        let err = find_etcd(path).unwrap_err().to_string();
        assert!(err.contains("etcd-server"), "{err}");
    }
}

#[test]
fn members_that_cannot_form_a_cluster_are_refused() {
    let members = loopback_members(2);
    let mut twice = members.clone();
    twice[1].name = twice[0].name.clone();
    let mut same_port = members.clone();
    same_port[1].ip = same_port[0].ip;
    same_port[1].ports = same_port[0].ports;
    let mut one_port = members.clone();
    one_port[0].ports.peer = one_port[0].ports.client;
    for (members, want) in [
        (Vec::new(), "at least one member"),
        (twice, "etcd member node1 is given twice"),
        (same_port, "would listen on the same port"),
        (one_port, "client and peer port are both"),
    ] {
        let err = check_members(&members).unwrap_err().to_string();
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[test]
fn the_sample_racks_members_and_their_forwarders() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rack.yaml");
    let base = Ipv4Addr::new(127, 0, 3, 20);
    std::fs::write(&path, sample_config(4, base, Layout::Namespaces)).unwrap();
    let config = RackConfig::load(&path).unwrap();
    let nodes = member_nodes(&config).unwrap();
    let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["wedge", "bladerunner1", "bladerunner2"]);
    let specs: Vec<MemberSpec<'_>> = nodes.iter().map(|n| MemberSpec::on(n, None)).collect();
    let shown: Vec<String> = forwards(&specs).iter().map(|f| f.to_string()).collect();
    assert_eq!(
        shown,
        [
            "tcp 127.0.3.20:2479 -> 198.18.0.20:2479",
            "tcp 127.0.3.21:2479 -> 198.18.0.21:2479",
            "tcp 127.0.3.22:2479 -> 198.18.0.22:2479",
        ]
    );
    assert_eq!(specs[1].host_client_url("https"), "https://127.0.3.21:2479");
    assert_eq!(specs[1].client_url("https"), "https://198.18.0.21:2479");

    std::fs::write(&path, sample_config(1, base, Layout::Loopback)).unwrap();
    let config = RackConfig::load(&path).unwrap();
    let err = member_nodes(&config).unwrap_err().to_string();
    assert!(
        err.contains("needs 3 nodes") && err.contains("has 2"),
        "{err}"
    );
    let specs: Vec<MemberSpec<'_>> = config
        .nodes
        .iter()
        .map(|n| MemberSpec::on(n, None))
        .collect();
    assert!(forwards(&specs).is_empty(), "loopback needs no forwarders");
}

/// On namespaces: each member in its node's namespace on its rack address, reached from the
/// host only through the forwarders on the nodes' endpoints (the host's guard route drops
/// anything sent to the rack's addresses directly).
#[tokio::test]
async fn three_members_on_namespaces_are_reached_through_forwarders() {
    if !namespaces_or_skip() {
        return;
    }
    let prefix = NetnsPrefix::random();
    let lock = RackLock::acquire(&prefix).unwrap();
    rack::sweep(Some(&lock)).unwrap();
    let net = rack::create(
        RackPlan::standard(prefix, 2).unwrap(),
        lock,
        "a torc up etcd test",
    )
    .unwrap();
    net.check().unwrap();
    let block = free_loopback_block().octets();
    let plan = net.plan();
    let nodes = std::iter::once(("wedge".to_string(), plan.switch_address))
        .chain(plan.links.iter().map(|l| (l.node.clone(), l.address)));
    let members: Vec<MemberSpec<'_>> = nodes
        .enumerate()
        .map(|(i, (name, address))| MemberSpec {
            name: NodeName::new(name.clone()).unwrap(),
            ip: IpAddr::V4(address),
            endpoint: Some(IpAddr::V4(Ipv4Addr::new(
                block[0],
                block[1],
                block[2],
                i as u8 + 1,
            ))),
            netns: net.netns(&name),
            ports: Ports::default(),
        })
        .collect();
    let forwarders = Forwarders::start(net.switch(), &forwards(&members)).unwrap();
    let state = State::new();
    let etcd = RackEtcd::start(state.options(Security::Tls(&state.ca), members.clone()))
        .await
        .unwrap();
    assert!(etcd.auth_set_up());
    let files = etcd.tls().unwrap().clone();
    let endpoints = etcd.endpoints();
    assert!(
        endpoints.iter().all(|e| e.starts_with("https://127.")),
        "{endpoints:?}"
    );
    assert!(
        etcd.rack_endpoints()
            .iter()
            .all(|e| e.starts_with("https://198.18."))
    );
    let (ok, out) = etcdctl(&endpoints, Some((&files, &files.root)), &["member", "list"]);
    assert!(ok && out.lines().count() == 3, "{out}");
    // Each member on its own, through its forwarder.
    for e in &endpoints {
        let controller = Some((&files, &files.controller));
        let (ok, out) = etcdctl(
            std::slice::from_ref(e),
            controller,
            &["put", "/torc-controller/r1/k", e],
        );
        assert!(ok, "{e}: {out}");
    }
    let stopping = Instant::now();
    etcd.stop().await;
    println!("3 members stopped in {:?}", stopping.elapsed());
    assert_eq!(etcds_of(state.path()), Vec::new());
    forwarders.stop();
    net.teardown().unwrap();
}

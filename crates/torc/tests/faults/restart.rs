//! `torc up` killed with SIGKILL (not Ctrl-C) and started again on the same `--data-dir`: every
//! process of the killed rack ends by itself (each child gets SIGTERM when `torc up` dies) but
//! its private containerd, which by design only the next holder of the rack's lock sweeps with
//! its containers; the next `torc up` sweeps it and the namespaces, and the rack comes back with its tasks (the
//! started group's instances), its names (DNS answers them, and only them) and its keys (every
//! acknowledged `etcdctl put`), under the same credentials. Its Ctrl-C then leaves nothing.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use torc_test_utils::up::{
    Up, assert_rack_gone, cli, env_for, free_base, listed_namespaces, namespace_id, netns_path,
    rack_prefix, up_args,
};
use torc_test_utils::{namespaces_or_skip, processes_in_namespaces, processes_mentioning};

use crate::TORC;
use crate::report::{Figures, scale};

/// `etcdctl ARGS` against the rack's kv through its endpoint, as the README's lines reach it:
/// its stdout, or why it failed.
fn etcdctl(
    base: Ipv4Addr,
    ca: &Path,
    root_password: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let (cacert, user) = (
        format!("--cacert={}", ca.display()),
        format!("--user=root:{root_password}"),
    );
    let mut all = vec![
        cacert.as_str(),
        user.as_str(),
        "--dial-timeout=2s",
        "--command-timeout=5s",
    ];
    all.extend_from_slice(args);
    torc_test_utils::etcdctl(&format!("https://{base}:2379"), &all)
}

/// The addresses `dig` gets for `name` from the rack's DNS endpoint (none on any failure).
fn dig(base: Ipv4Addr, name: &str) -> BTreeSet<String> {
    let out = Command::new("dig")
        .args([&format!("@{base}"), name, "+short", "+time=1", "+tries=1"])
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.parse::<Ipv4Addr>().is_ok())
        .map(str::to_string)
        .collect()
}

/// The rack addresses of the running instances of the group `hello`, one per instance (two
/// instances on one node give its address twice), from `torc services --json`.
fn running_hello(env: &[(&str, String)]) -> Option<Vec<String>> {
    let (ok, out, _) = cli(TORC, env, &["services", "--json"]);
    if !ok {
        return None;
    }
    let services: Vec<serde_json::Value> = serde_json::from_str(&out).ok()?;
    Some(
        services
            .iter()
            .filter(|s| s["origin"] == "hello" && s["state"] == "running")
            .filter_map(|s| s["rack_ip"].as_str().or(s["ip"].as_str()))
            .map(str::to_string)
            .collect(),
    )
}

/// The processes of the rack's private containerd (`/run/torc/<slug>/`), if it runs one.
fn containerd_of(prefix: &str) -> Vec<(u32, String)> {
    let slug = prefix.trim_start_matches("torc-").trim_end_matches('-');
    processes_mentioning(&Path::new("/run/torc").join(slug))
}

/// Waits (bounded) until `check` answers.
fn within<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_killed_torc_up_comes_back_with_its_tasks_names_and_keys_and_leaves_nothing() {
    if !namespaces_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (base, port) = free_base();
    let args = up_args(2, base, port, dir.path(), "namespaces");
    let mut up = Up::start(TORC, &[], &args);
    let prefix = rack_prefix(&up.until_up());
    let env = env_for(dir.path(), &format!("https://{base}:{port}"));
    let ca = dir.path().join("pki").join("ca.pem");

    // The rack's state: a started group (two instances, named in DNS) and acknowledged keys.
    let (ok, out, err) = cli(TORC, &env, &["group", "start", "hello"]);
    assert!(ok, "{out}{err}");
    let instances = within(
        "both hello instances running",
        Duration::from_secs(60),
        || running_hello(&env).filter(|ips| ips.len() == 2),
    );
    let named: BTreeSet<String> = instances.iter().cloned().collect();
    within("DNS names both instances", Duration::from_secs(30), || {
        (dig(base, "hello.service.torc") == named).then_some(())
    });
    let (ok, root, err) = cli(TORC, &env, &["secret", "get", "kv-root"]);
    assert!(ok, "{err}");
    let root = root.trim().to_string();
    let keys = scale(16, 200);
    let mut acknowledged = Vec::new();
    for i in 0..keys {
        let (key, value) = (format!("/faults/restart/{i:04}"), format!("value-{i}"));
        // The kv may still be starting (it is a system service): retry, bounded.
        within(
            &format!("etcdctl put {key}"),
            Duration::from_secs(60),
            || {
                etcdctl(base, &ca, &root, &["put", &key, &value])
                    .ok()
                    .map(drop)
            },
        );
        acknowledged.push((key, value));
    }

    // SIGKILL: torc up cannot stop anything itself; its children must end by themselves, and
    // with them every task in the rack's namespaces (held open, so their numbers stay theirs).
    let before = processes_mentioning(dir.path());
    assert!(
        !before.is_empty(),
        "the rack's processes mention its directory"
    );
    let held: Vec<std::fs::File> = listed_namespaces(&prefix)
        .iter()
        .map(|name| std::fs::File::open(netns_path(name)).unwrap())
        .collect();
    let namespaces: BTreeSet<(u64, u64)> = listed_namespaces(&prefix)
        .iter()
        .map(|name| namespace_id(&netns_path(name)))
        .collect();
    assert_eq!(namespaces.len(), 3, "the switch and two nodes");
    let tasks_before = processes_in_namespaces(&namespaces);
    assert!(
        tasks_before
            .iter()
            .any(|(_, cmd)| cmd.starts_with("sleep 3600")),
        "the group's tasks run in the nodes' namespaces: {tasks_before:?}"
    );
    up.signal(nix::sys::signal::Signal::SIGKILL);
    up.wait_exit();
    // The rack's private containerd (as root with containerd installed) is the one exception,
    // by design: it holds the containers, and only the next holder of the rack's lock sweeps
    // it with them (below).
    let containerd = containerd_of(&prefix);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = processes_mentioning(dir.path());
        left.extend(processes_in_namespaces(&namespaces));
        left.retain(|p| !containerd.contains(p));
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "30 s after torc up was killed, its processes are left: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);

    // Started again on the same directory: it sweeps what the killed one left and comes back.
    let restarted = Instant::now();
    let mut again = Up::start(TORC, &[], &args);
    let text = again.until_up();
    assert_eq!(
        rack_prefix(&text),
        prefix,
        "the same directory, the same rack"
    );
    let back = within(
        "both hello instances running again",
        Duration::from_secs(120),
        || running_hello(&env).filter(|ips| ips.len() == 2),
    );
    let back: BTreeSet<String> = back.into_iter().collect();
    within(
        "DNS names the instances again",
        Duration::from_secs(30),
        || (dig(base, "hello.service.torc") == back).then_some(()),
    );
    let recovery = restarted.elapsed();

    // The same credentials (the CLI's environment is the old one), every acknowledged key.
    let (ok, root_again, err) = cli(TORC, &env, &["secret", "get", "kv-root"]);
    assert!(ok, "{err}");
    assert_eq!(root_again.trim(), root, "the rack's secrets survive");
    let mut lost = 0;
    for (key, value) in &acknowledged {
        let out = within(
            &format!("etcdctl get {key}"),
            Duration::from_secs(60),
            || etcdctl(base, &ca, &root, &["get", key, "--print-value-only"]).ok(),
        );
        if out.trim() != value {
            eprintln!("lost {key}: {out:?}");
            lost += 1;
        }
    }
    // Stale names: answers for the group that name no running instance, over a few queries.
    let mut stale = 0;
    for _ in 0..10 {
        stale += dig(base, "hello.service.torc").difference(&back).count() as u64;
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut figures = Figures::new("kill -9 torc up, started again on its --data-dir");
    figures.acknowledged = (acknowledged.len() + instances.len()) as u64;
    figures.lost = lost;
    figures.stale_dns = Some(stale);
    figures.recovery = Some(recovery);

    // Ctrl-C of the restarted rack leaves nothing behind.
    let status = again.interrupt();
    assert!(status.success(), "{status}\n{}", again.said());
    assert_rack_gone(dir.path(), &prefix);
    figures.check();
    assert_eq!(stale, 0, "stale DNS answers after the restart");
}

//! `EtcdCluster`: three real etcd members that replicate, survive one member's death or
//! freeze, take a restarted member back, and leave no process or directory behind. Checked
//! with the real `etcdctl`.

use std::process::Command;
use std::time::Duration;

use torc_test_utils::{EtcdCluster, pid_alive, wait_for};

/// `etcdctl` against `endpoints`, with a short command timeout; (success, stdout + stderr).
fn etcdctl(endpoints: &[String], args: &[&str]) -> (bool, String) {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints.join(",")))
        .args(["--command-timeout=2s", "--dial-timeout=1s"])
        .args(args)
        .output()
        .expect("etcdctl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn get(endpoint: &str, key: &str) -> String {
    let (ok, out) = etcdctl(&[endpoint.to_string()], &["get", "--print-value-only", key]);
    assert!(ok, "get {key} at {endpoint}: {out}");
    out.trim().to_string()
}

#[tokio::test]
async fn three_members_replicate_and_survive_one_loss() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    let endpoints = cluster.endpoints();
    assert_eq!(endpoints.len(), 3);
    assert_eq!(cluster.len(), 3);

    // One cluster: the member list holds all three, and a put on one reads back on another.
    let (ok, members) = etcdctl(&endpoints[..1], &["member", "list"]);
    assert!(ok, "{members}");
    assert_eq!(members.lines().count(), 3, "{members}");
    let (ok, out) = etcdctl(&endpoints[..1], &["put", "/k", "one"]);
    assert!(ok, "{out}");
    assert_eq!(get(&endpoints[2], "/k"), "one");

    // Kill member 0 (SIGKILL): the other two keep a quorum and take writes.
    let pid0 = cluster.pid(0).unwrap();
    cluster.kill(0);
    assert!(!pid_alive(pid0));
    assert!(cluster.pid(0).is_none());
    assert!(!cluster.healthy(0).await);
    // If it led raft, the others elect a leader among themselves first.
    cluster.wait_healthy(&[1, 2]).await.unwrap();
    let (ok, out) = etcdctl(&endpoints[1..2], &["put", "/k", "two"]);
    assert!(ok, "{out}");

    // Restarted on its data, it catches up with what it missed.
    cluster.restart(0).await.unwrap();
    cluster.wait_healthy(&[0]).await.unwrap();
    let value = wait_for("member 0 to catch up", Duration::from_secs(10), || {
        let v = get(&endpoints[0], "/k");
        async move { (v == "two").then_some(v) }
    })
    .await
    .unwrap();
    assert_eq!(value, "two");
}

#[tokio::test]
async fn a_stopped_member_answers_nothing_until_continued() {
    let cluster = EtcdCluster::start().await.unwrap();
    cluster.stop(1).unwrap();
    assert!(!cluster.healthy(1).await, "a SIGSTOPped member answered");
    // The others still have a quorum (after an election, if it led raft).
    cluster.wait_healthy(&[0, 2]).await.unwrap();
    let others = [cluster.endpoint(0), cluster.endpoint(2)];
    let (ok, out) = etcdctl(&others, &["put", "/frozen", "yes"]);
    assert!(ok, "{out}");
    cluster.cont(1).unwrap();
    cluster.wait_healthy(&[1]).await.unwrap();
    let value = wait_for("member 1 to catch up", Duration::from_secs(10), || {
        let v = get(&cluster.endpoint(1), "/frozen");
        async move { (v == "yes").then_some(v) }
    })
    .await
    .unwrap();
    assert_eq!(value, "yes");
}

#[tokio::test]
async fn drop_kills_every_member_and_removes_the_data() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    cluster.stop(2).unwrap();
    // A killed member stays dead; a stopped one must go too.
    cluster.kill(1);
    let dir = cluster.dir().to_path_buf();
    let pids: Vec<u32> = [0, 2].iter().filter_map(|&i| cluster.pid(i)).collect();
    assert_eq!(pids.len(), 2);
    assert!(dir.join("member-0/data").is_dir());
    drop(cluster);
    for pid in pids {
        assert!(!pid_alive(pid), "etcd pid {pid} outlived its cluster");
    }
    assert!(!dir.exists(), "{} outlived its cluster", dir.display());
}

#[tokio::test]
async fn a_panicking_test_leaves_nothing_behind() {
    let (dir, pids) = tokio::spawn(async {
        let cluster = EtcdCluster::start_n(1).await.unwrap();
        let seen = (cluster.dir().to_path_buf(), cluster.pid(0).unwrap());
        // The cluster is dropped during the unwind.
        std::panic::panic_any(seen)
    })
    .await
    .unwrap_err()
    .into_panic()
    .downcast::<(std::path::PathBuf, u32)>()
    .map(|b| *b)
    .unwrap();
    assert!(!pid_alive(pids));
    assert!(!dir.exists());
}

//! torc kv driven by the real etcdctl: the data-driven case files in
//! `tests/cases/` (the same ones `compat.rs` checks against a real etcd),
//! watch, restart persistence and bad input.

mod common;

use std::time::Duration;

use common::{
    Lines, Server, Target, TorcKv, WATCH_EXPECTED, case_files, etcdctl, run_case, watch_session,
};
use torc_kv::KvOptions;

#[test]
fn case_files_pass() {
    let mut failures = Vec::new();
    for (name, text) in case_files() {
        let kv = TorcKv::start_with_options(common::options_for_flags(&common::case_server_flags(
            &text,
        )));
        failures.extend(run_case(&name, &text, &kv.endpoint, Server::Torc));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn watch_replays_and_streams_events() {
    let kv = TorcKv::start();
    let out = watch_session(&kv.endpoint);
    assert_eq!(&out[..WATCH_EXPECTED.len()], WATCH_EXPECTED);
    assert_eq!(
        out[WATCH_EXPECTED.len()],
        "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n\
         Error: watch is canceled by the server\n(exit 5)\n"
    );
}

#[test]
fn live_watch_sees_puts_in_order() {
    let kv = TorcKv::start();
    let mut child = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", kv.endpoint))
        .args(["watch", "/live/", "--prefix"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcdctl watch");
    let lines = Lines::new(child.stdout.take().expect("stdout"));
    // The watch may not be established yet: keep writing a probe key until
    // its event shows up, then the real writes must follow in order.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        etcdctl(&kv.endpoint, &["put", "/live/probe", "p"], None);
        if lines.next(Duration::from_millis(200)).is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watch never saw the probe"
        );
    }
    let mut expected = Vec::new();
    for i in 0..5 {
        etcdctl(
            &kv.endpoint,
            &["put", &format!("/live/k{i}"), &format!("v{i}")],
            None,
        );
        expected.extend(["PUT".to_string(), format!("/live/k{i}"), format!("v{i}")]);
    }
    let got = lines.until(Duration::from_secs(10), |l| l == "v4");
    let _ = child.kill();
    let _ = child.wait();
    // Probe events from before the watch was seen may precede the writes.
    assert!(got.ends_with(&expected), "{got:?}");
}

#[test]
fn data_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = TorcKv::start_in(dir.path(), KvOptions::default());
    assert_eq!(etcdctl(&kv.endpoint, &["put", "a", "1"], None), "OK\n");
    assert_eq!(etcdctl(&kv.endpoint, &["put", "a", "2"], None), "OK\n");
    let lease = etcdctl(&kv.endpoint, &["lease", "grant", "600"], None);
    let id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(
        etcdctl(
            &kv.endpoint,
            &["put", "leased", "x", &format!("--lease={id}")],
            None
        ),
        "OK\n"
    );
    assert_eq!(
        etcdctl(&kv.endpoint, &["compaction", "3"], None),
        "compacted revision 3\n"
    );
    assert_eq!(etcdctl(&kv.endpoint, &["del", "a"], None), "1\n");
    kv.stop();

    let kv = TorcKv::start_in(dir.path(), KvOptions::default());
    let e = &kv.endpoint;
    assert_eq!(etcdctl(e, &["get", "a"], None), "");
    assert_eq!(etcdctl(e, &["get", "a", "--rev=3"], None), "a\n2\n");
    assert!(etcdctl(e, &["get", "a", "--rev=2"], None).contains("has been compacted"));
    assert_eq!(
        etcdctl(e, &["lease", "timetolive", &id, "--keys"], None)
            .split(", remaining")
            .next(),
        Some(format!("lease {id} granted with TTL(600s)").as_str())
    );
    assert_eq!(
        etcdctl(e, &["put", "b", "1", "-w", "fields"], None)
            .lines()
            .nth(2),
        Some("\"Revision\" : 6")
    );
}

#[test]
fn lease_expiry_deletes_keys() {
    let kv = TorcKv::start();
    let e = &kv.endpoint;
    let lease = etcdctl(e, &["lease", "grant", "2"], None);
    let id = lease
        .split_whitespace()
        .nth(1)
        .expect("lease id")
        .to_string();
    assert_eq!(
        etcdctl(
            e,
            &["put", "ephemeral", "x", &format!("--lease={id}")],
            None
        ),
        "OK\n"
    );
    common::wait_until(Duration::from_secs(10), "the lease to expire", || {
        etcdctl(e, &["get", "ephemeral"], None).is_empty()
    });
    assert_eq!(
        etcdctl(e, &["lease", "timetolive", &id], None),
        format!("lease {id} already expired\n")
    );
}

#[test]
fn bad_input_gets_etcd_errors() {
    let kv = TorcKv::start();
    let e = &kv.endpoint;
    let huge = "x".repeat(2 * 1024 * 1024);
    let out = etcdctl(e, &["put", "big"], Some(&huge));
    assert!(
        out.contains("request is too large") || out.contains("larger than max"),
        "{out}"
    );
    let out = etcdctl(e, &["put", "k", "v", "--lease=99"], None);
    assert_eq!(
        out,
        "Error: etcdserver: requested lease not found\n(exit 1)\n"
    );
    let out = etcdctl(e, &["defrag"], None);
    assert!(out.contains("not supported"), "{out}");
}

/// 600 writes over 32 keys from 8 clients (so commits batch), every seventh
/// a delete; returns each key's final value.
fn write_load(endpoint: &str) -> std::collections::BTreeMap<String, Option<String>> {
    use torc_kv_client::proto::etcdserverpb::{
        DeleteRangeRequest, PutRequest, kv_client::KvClient,
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let url = format!("http://{endpoint}");
        let mut tasks = Vec::new();
        for c in 0..8 {
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = KvClient::connect(url).await.expect("connect");
                let mut last = std::collections::BTreeMap::new();
                for i in 0..75 {
                    let key = format!("k{c}-{}", i % 4);
                    if i % 7 == 6 {
                        let req = DeleteRangeRequest {
                            key: key.clone().into(),
                            ..Default::default()
                        };
                        client.delete_range(req).await.expect("delete");
                        last.insert(key, None);
                    } else {
                        let value = format!("v{i}");
                        let req = PutRequest {
                            key: key.clone().into(),
                            value: value.clone().into(),
                            ..Default::default()
                        };
                        client.put(req).await.expect("put");
                        last.insert(key, Some(value));
                    }
                }
                last
            }));
        }
        let mut all = std::collections::BTreeMap::new();
        for t in tasks {
            all.extend(t.await.expect("client"));
        }
        all
    })
}

fn check_values(endpoint: &str, expected: &std::collections::BTreeMap<String, Option<String>>) {
    for (key, value) in expected {
        let want = value
            .as_ref()
            .map_or(String::new(), |v| format!("{key}\n{v}\n"));
        assert_eq!(etcdctl(endpoint, &["get", key], None), want, "{key}");
    }
}

/// Automatic compaction runs in small steps and folds the on-disk log
/// lazily; a restart must still see the latest state, the retained history,
/// and the compaction point.
#[test]
fn automatic_compaction_survives_restart() {
    const RETAIN: usize = 50;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || KvOptions {
        retain_revisions: RETAIN as u64,
        ..KvOptions::default()
    };
    let mut kv = TorcKv::start_in(dir.path(), options());
    let expected = write_load(&kv.endpoint);
    let top = 1 + 600; // revision 1 is the empty store
    let before = etcdctl(&kv.endpoint, &["get", "k", "--prefix", "--rev=560"], None);
    kv.stop();

    let kv = TorcKv::start_in(dir.path(), options());
    let e = &kv.endpoint;
    check_values(e, &expected);
    // Retained history reads the same as before the restart ...
    let oldest = format!("--rev={}", top - RETAIN);
    assert!(!etcdctl(e, &["get", "k", "--prefix", &oldest], None).is_empty());
    assert_eq!(
        etcdctl(e, &["get", "k", "--prefix", "--rev=560"], None),
        before
    );
    // ... and compacted history stays compacted.
    assert!(
        etcdctl(e, &["get", "k", "--prefix", "--rev=100"], None).contains("has been compacted")
    );
}

/// A requested compaction leaves the on-disk log to be folded later (in
/// chunks, see `storage`); a restart before that replays the unfolded log.
#[test]
fn restart_with_an_unfolded_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || KvOptions {
        retain_revisions: 0,
        ..KvOptions::default()
    };
    let mut kv = TorcKv::start_in(dir.path(), options());
    let expected = write_load(&kv.endpoint);
    let e = kv.endpoint.clone();
    assert_eq!(
        etcdctl(&e, &["compaction", "590"], None),
        "compacted revision 590\n"
    );
    let before = etcdctl(&e, &["get", "k", "--prefix", "--rev=590"], None);
    kv.stop();

    let mut kv = TorcKv::start_in(dir.path(), options());
    let e = kv.endpoint.clone();
    check_values(&e, &expected);
    assert_eq!(
        etcdctl(&e, &["get", "k", "--prefix", "--rev=590"], None),
        before
    );
    assert!(
        etcdctl(&e, &["get", "k", "--prefix", "--rev=589"], None).contains("has been compacted")
    );
    // More writes; the state survives another restart.
    assert_eq!(etcdctl(&e, &["put", "k0-0", "after"], None), "OK\n");
    assert_eq!(etcdctl(&e, &["put", "k0-0", "later"], None), "OK\n");
    kv.stop();
    let kv = TorcKv::start_in(dir.path(), options());
    let mut expected = expected;
    expected.insert("k0-0".into(), Some("later".into()));
    check_values(&kv.endpoint, &expected);
    assert_eq!(
        etcdctl(&kv.endpoint, &["get", "k", "--prefix", "--rev=590"], None),
        before
    );
}

/// etcdctl sends an endpoint given as a URL as the HTTP/2 `:authority` for
/// `endpoint status` (and `endpoint hashkv`, ...); etcd accepts it, so must
/// torc kv.
#[test]
fn endpoint_status_accepts_a_url_endpoint() {
    let kv = TorcKv::start();
    let url = format!("http://{}", kv.endpoint);
    for _ in 0..2 {
        let out = etcdctl(&url, &["endpoint", "status", "-w", "json"], None);
        assert!(out.contains("\"version\":\"3.4.0-torc\""), "{out}");
        assert!(out.contains(&format!("\"Endpoint\":\"{url}\"")), "{out}");
    }
    let out = etcdctl(
        &format!("{url},{url}"),
        &["endpoint", "status", "--cluster=false"],
        None,
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(!out.contains("(exit"), "{out}");
    assert_eq!(etcdctl(&url, &["put", "k", "v"], None), "OK\n");
    assert_eq!(
        etcdctl(&url, &["get", "k", "--print-value-only"], None),
        "v\n"
    );
}

/// etcd lets one txn delete `--from-key` and put a key inside that range
/// (see `mvcc::duplicates`), so one revision may change a key twice; every
/// revision reads, and replays to a watch, the same after a restart.
#[test]
fn a_key_changed_twice_in_one_revision_survives_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kv = TorcKv::start_in(dir.path(), KvOptions::default());
    let e = kv.endpoint.clone();
    assert_eq!(etcdctl(&e, &["put", "k1", "1"], None), "OK\n");
    let txn = |e: &str, ops: &str| etcdctl(e, &["txn"], Some(&format!("\n{ops}\n\n\n")));
    assert_eq!(
        txn(&e, "del k --from-key\nput k2 2"),
        "SUCCESS\n\n1\n\nOK\n"
    );
    assert_eq!(
        txn(&e, "put k3 3\ndel k2 --from-key"),
        "SUCCESS\n\nOK\n\n2\n"
    );
    assert_eq!(etcdctl(&e, &["put", "k4", "4"], None), "OK\n");
    let reads = |e: &str| -> Vec<String> {
        (1..=5)
            .map(|rev| etcdctl(e, &["get", "k", "--prefix", &format!("--rev={rev}")], None))
            .collect()
    };
    let before = reads(&e);
    assert_eq!(before[2], "k2\n2\n");
    assert_eq!(before[3], "");
    let watch = |e: &str| {
        let mut child = Target::from(e)
            .command()
            .args(["watch", "k", "--prefix", "--rev=1"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcdctl watch");
        let lines = Lines::new(child.stdout.take().expect("stdout"));
        let got = lines.take(7 * 3, Duration::from_secs(10));
        let _ = child.kill();
        let _ = child.wait();
        got
    };
    let events = watch(&e);
    kv.stop();

    let kv = TorcKv::start_in(dir.path(), KvOptions::default());
    assert_eq!(reads(&kv.endpoint), before);
    assert_eq!(watch(&kv.endpoint), events);
    // As etcd 3.4 replays them (a DELETE's value line is empty).
    assert_eq!(
        events.join(" "),
        "PUT k1 1 DELETE k1  PUT k2 2 PUT k3 3 DELETE k2  DELETE k3  PUT k4 4"
    );
}

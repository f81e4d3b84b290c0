//! Snapshots in etcd's format, with the real etcd 3.4 tools: `etcdctl
//! snapshot save` against torc kv writes a file `etcdctl snapshot status`
//! reads, that `torc kv restore` (the library call behind it) and `etcdctl
//! snapshot restore` + a real etcd both serve with every key's value,
//! create and mod revisions, version and lease, at the same revision, and
//! with the same history above the compaction point; a real etcd's
//! snapshot restores into torc kv; a snapshot taken while writes go on is
//! one revision's state; a damaged or truncated file is refused, naming it.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Etcd, Target, TorcKv, etcdctl};
use serde_json::Value;
use torc_kv::KvOptions;
use torc_kv::snapshot::{self, SnapshotError};
use torc_kv_client::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest, RequestOp, TxnRequest,
    kv_client::KvClient, lease_client::LeaseClient, request_op,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn put(key: String, value: String, lease: i64) -> PutRequest {
    PutRequest {
        key: key.into_bytes().into(),
        value: value.into_bytes().into(),
        lease,
        ..Default::default()
    }
}

/// Puts `keys` in parallel over `clients` connections.
async fn put_all(endpoint: &str, keys: Vec<(String, String)>, clients: usize) {
    let chunk = keys.len().div_ceil(clients).max(1);
    let mut tasks = Vec::new();
    for part in keys.chunks(chunk) {
        let part = part.to_vec();
        let url = format!("http://{endpoint}");
        tasks.push(tokio::spawn(async move {
            let mut kv = KvClient::connect(url).await.expect("connect");
            for (k, v) in part {
                kv.put(put(k, v, 0)).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
}

/// Many revisions: keys put, overwritten (`rounds` times: for torc, enough
/// to fold compacted revisions into its `base` table), deleted and put
/// again, a txn of two puts (one revision, two sub-revisions), a compaction
/// with history before and after it, a key on a lease, and
/// a deletion last. Returns the compaction point.
async fn workload(endpoint: &str, keys: usize, rounds: usize) -> i64 {
    let url = format!("http://{endpoint}");
    let mut kv = KvClient::connect(url.clone()).await.expect("connect");
    let mut leases = LeaseClient::connect(url).await.expect("connect");
    for round in 0..rounds {
        let batch = (0..keys)
            .map(|i| (format!("/s/k{i:05}"), format!("v{i}-{round}")))
            .collect();
        put_all(endpoint, batch, 16).await;
    }
    let txn = TxnRequest {
        success: ["/s/t1", "/s/t2"]
            .iter()
            .map(|k| RequestOp {
                request: Some(request_op::Request::RequestPut(put(
                    k.to_string(),
                    "in a txn".into(),
                    0,
                ))),
            })
            .collect(),
        ..Default::default()
    };
    kv.txn(txn).await.expect("txn");
    for i in (0..keys).step_by(7) {
        kv.delete_range(DeleteRangeRequest {
            key: format!("/s/k{i:05}").into_bytes().into(),
            ..Default::default()
        })
        .await
        .expect("delete");
    }
    let at = kv
        .put(put("/s/mark".into(), "compaction".into(), 0))
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision;
    kv.compact(CompactionRequest {
        revision: at,
        physical: true,
    })
    .await
    .expect("compact");
    // History after the compaction point: deleted keys put again, overwrites.
    for i in (0..keys).step_by(5) {
        kv.put(put(format!("/s/k{i:05}"), format!("after-{i}"), 0))
            .await
            .expect("put");
    }
    let lease = leases
        .lease_grant(LeaseGrantRequest { ttl: 600, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id;
    kv.put(put("/s/leased".into(), "on a lease".into(), lease))
        .await
        .expect("put");
    kv.delete_range(DeleteRangeRequest {
        key: b"/s/k00001".to_vec().into(),
        ..Default::default()
    })
    .await
    .expect("delete");
    at
}

/// `etcdctl get --prefix /s/ -w json` (at `rev` if given): the revision
/// and every key with its value, revisions, version and lease.
fn state(target: &Target, rev: Option<i64>) -> (i64, Value) {
    state_of(target, "/s/", rev)
}

fn state_of(target: &Target, prefix: &str, rev: Option<i64>) -> (i64, Value) {
    let mut args = vec![
        "get".to_string(),
        "--prefix".into(),
        prefix.into(),
        "-w".into(),
        "json".into(),
    ];
    if let Some(rev) = rev {
        args.push(format!("--rev={rev}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = etcdctl(target, &args, None);
    let json: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let revision = json["header"]["revision"].as_i64().expect("revision");
    (revision, json["kvs"].clone())
}

/// `etcdctl snapshot save` against `target` into `dir`.
fn save(target: &Target, dir: &Path, name: &str) -> PathBuf {
    let file = dir.join(name);
    let path = file.to_str().expect("utf-8 path");
    let out = etcdctl(target, &["snapshot", "save", path], None);
    assert!(out.contains("Snapshot saved at"), "snapshot save: {out}");
    file
}

/// `etcdctl snapshot status -w json`.
fn status(file: &Path) -> Value {
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "status", "-w", "json"])
        .arg(file)
        .output()
        .expect("etcdctl snapshot status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "snapshot status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The snapshot's `meta` bucket, read with torc's bbolt reader.
fn meta_bucket(file: &Path) -> std::collections::HashMap<String, Vec<u8>> {
    use torc_kv::snapshot::bbolt_read::BoltFile;
    let len = std::fs::metadata(file).expect("stat").len() - 32;
    let bolt = BoltFile::open(file, len).expect("bbolt");
    let bucket = bolt.bucket(b"meta").expect("meta").expect("a meta bucket");
    let mut meta = std::collections::HashMap::new();
    bolt.walk::<torc_kv::snapshot::bbolt_read::BoltError>(&bucket, &mut |_, k, v| {
        meta.insert(String::from_utf8_lossy(k).into_owned(), v.to_vec());
        Ok(())
    })
    .expect("walk");
    meta
}

fn compacted(target: &Target, rev: i64) -> String {
    etcdctl(target, &["get", "/s/k00003", &format!("--rev={rev}")], None)
}

/// (a) and (b): torc kv's snapshot, read by `etcdctl snapshot status`,
/// restored by `torc kv restore` and by `etcdctl snapshot restore` + etcd:
/// both serve the same keys, revisions, versions and leases, the same
/// history above the compaction point, and refuse reads below it.
#[test]
fn a_torc_snapshot_restores_into_torc_and_into_etcd() {
    let torc = TorcKv::start_with_options(KvOptions {
        retain_revisions: 0,
        ..KvOptions::default()
    });
    let rt = runtime();
    let compact_at = rt.block_on(workload(&torc.endpoint, 600, 8));
    let (revision, kvs) = state(&torc.target, None);
    let history = compact_at + 20;
    let (_, kvs_then) = state(&torc.target, Some(history));
    assert!(kvs.as_array().is_some_and(|a| a.len() > 500), "{kvs}");

    let tmp = tempfile::tempdir().expect("tempdir");
    let file = save(&torc.target, tmp.path(), "torc.db");
    let st = status(&file);
    assert_eq!(st["revision"].as_i64(), Some(revision), "{st}");
    assert!(st["totalKey"].as_i64().is_some_and(|n| n > 600), "{st}");
    assert!(st["hash"].as_i64().is_some(), "{st}");
    assert_eq!(
        st["totalSize"].as_u64(),
        Some(std::fs::metadata(&file).expect("stat").len() - 32),
        "{st}"
    );

    // torc folded compacted history into its `base` table (written first in the
    // `key` bucket, by revision): the file says so as etcd would of a compaction
    // under way, finished where the kept history starts, scheduled at the point.
    let meta = meta_bucket(&file);
    let rev_of = |k: &str| i64::from_be_bytes(meta[k][..8].try_into().expect("8 bytes"));
    assert_eq!(rev_of("scheduledCompactRev"), compact_at);
    let finished = rev_of("finishedCompactRev");
    assert!(finished > 4000 && finished < compact_at, "{finished}");

    // torc kv restore, then torc kv on the new dir.
    let dir = tmp.path().join("restored");
    let restored = snapshot::restore(&file, &dir).expect("restore");
    assert_eq!(restored.revision, revision);
    assert_eq!(restored.compact_revision, compact_at);
    assert_eq!(restored.leases, 1);
    let again = TorcKv::start_in(&dir, KvOptions::default());
    assert_eq!(state(&again.target, None), (revision, kvs.clone()));
    assert_eq!(state(&again.target, Some(history)).1, kvs_then);
    assert!(compacted(&again.target, compact_at - 1).contains("compacted"));
    let leases = etcdctl(&again.target, &["lease", "list"], None);
    assert!(leases.contains("found 1 leases"), "{leases}");

    // etcdctl snapshot restore, then a real etcd on it.
    let etcd = Etcd::start_from_snapshot(&file);
    assert_eq!(state(&etcd.target, None), (revision, kvs));
    assert_eq!(state(&etcd.target, Some(history)).1, kvs_then);
    assert!(compacted(&etcd.target, compact_at - 1).contains("compacted"));
    let leases = etcdctl(&etcd.target, &["lease", "list"], None);
    assert!(leases.contains("found 1 leases"), "{leases}");
}

/// (c): a real etcd's snapshot, restored by `torc kv restore`, is served
/// by torc kv as etcd served it.
#[test]
fn an_etcd_snapshot_restores_into_torc() {
    let etcd = Etcd::start();
    let rt = runtime();
    let compact_at = rt.block_on(workload(&etcd.endpoint, 300, 2));
    let (revision, kvs) = state(&etcd.target, None);
    let (_, kvs_then) = state(&etcd.target, Some(compact_at + 10));

    let tmp = tempfile::tempdir().expect("tempdir");
    let file = save(&etcd.target, tmp.path(), "etcd.db");
    let dir = tmp.path().join("restored");
    let restored = snapshot::restore(&file, &dir).expect("restore");
    assert_eq!(restored.revision, revision);
    assert_eq!(restored.compact_revision, compact_at);
    let torc = TorcKv::start_in(&dir, KvOptions::default());
    assert_eq!(state(&torc.target, None), (revision, kvs));
    assert_eq!(state(&torc.target, Some(compact_at + 10)).1, kvs_then);
    assert!(compacted(&torc.target, compact_at - 1).contains("compacted"));
    let leases = etcdctl(&torc.target, &["lease", "list"], None);
    assert!(leases.contains("found 1 leases"), "{leases}");
}

/// (d): a snapshot taken while writes go on holds one revision's state
/// (the one its restore serves), and every write acknowledged before it
/// was asked for.
#[test]
fn a_snapshot_under_writes_is_one_revision() {
    let torc = TorcKv::start_with_options(KvOptions {
        retain_revisions: 0,
        ..KvOptions::default()
    });
    let rt = runtime();
    // Enough data that the snapshot takes a while to stream.
    let big = "x".repeat(2048);
    let preload = (0..8000)
        .map(|i| (format!("/p/{i:05}"), big.clone()))
        .collect();
    rt.block_on(put_all(&torc.endpoint, preload, 32));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let url = format!("http://{}", torc.endpoint);
        rt.spawn(async move {
            let mut kv = KvClient::connect(url).await.expect("connect");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                kv.put(put(format!("/w/{}", i % 97), format!("w{i}"), 0))
                    .await
                    .expect("put");
                i += 1;
            }
            i
        })
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    // Let the writer get going, then note what was acknowledged before the snapshot.
    common::wait_until(std::time::Duration::from_secs(10), "writes", || {
        state(&torc.target, None).0 > 8100
    });
    let before = state(&torc.target, None).0;
    let file = save(&torc.target, tmp.path(), "busy.db");
    stop.store(true, Ordering::Relaxed);
    let writes = rt.block_on(writer).expect("writer");
    assert!(writes > 0);
    eprintln!("{writes} writes; revision {before} before the snapshot");
    let dir = tmp.path().join("restored");
    let restored = snapshot::restore(&file, &dir).expect("restore");
    assert!(
        restored.revision >= before,
        "{} < {before}",
        restored.revision
    );
    let again = TorcKv::start_in(&dir, KvOptions::default());
    let (rev, kvs) = state_of(&again.target, "/w/", None);
    assert_eq!(rev, restored.revision);
    eprintln!(
        "snapshot at revision {rev}; store at {}",
        state(&torc.target, None).0
    );
    assert_eq!(state_of(&torc.target, "/w/", Some(rev)).1, kvs);
    let count = |t: &Target, rev: i64| {
        let rev = format!("--rev={rev}");
        let out = etcdctl(
            t,
            &["get", "--prefix", "/", "--keys-only", "-w", "json", &rev],
            None,
        );
        let json: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        json["count"].as_i64().expect("count")
    };
    assert_eq!(count(&again.target, rev), count(&torc.target, rev));
}

/// (e): a changed byte, a truncated file, a file that is no snapshot and a
/// data dir in use are refused with errors naming them, and leave no data
/// dir behind.
#[test]
fn damaged_snapshots_are_refused() {
    let torc = TorcKv::start();
    let rt = runtime();
    rt.block_on(put_all(
        &torc.endpoint,
        (0..50)
            .map(|i| (format!("/d/{i}"), format!("{i}")))
            .collect(),
        4,
    ));
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = save(&torc.target, tmp.path(), "good.db");
    let bytes = std::fs::read(&file).expect("read");
    let dir = tmp.path().join("restored");

    let flipped = tmp.path().join("flipped.db");
    let mut b = bytes.clone();
    b[5000] ^= 0x40;
    std::fs::write(&flipped, &b).expect("write");
    let e = snapshot::restore(&flipped, &dir).expect_err("flipped byte");
    assert!(matches!(e, SnapshotError::HashMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("flipped.db") && e.to_string().contains("damaged"),
        "{e}"
    );

    let truncated = tmp.path().join("truncated.db");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).expect("write");
    let e = snapshot::restore(&truncated, &dir).expect_err("truncated");
    assert!(e.to_string().contains("truncated.db"), "{e}");
    assert!(e.to_string().contains("not an etcd snapshot"), "{e}");

    let other = tmp.path().join("other.db");
    let mut junk = vec![7u8; 8192];
    use sha2::Digest;
    let sum = sha2::Sha256::digest(&junk);
    junk.extend_from_slice(&sum);
    std::fs::write(&other, &junk).expect("write");
    let e = snapshot::restore(&other, &dir).expect_err("not bbolt");
    assert!(
        e.to_string().contains("other.db is not a bbolt database"),
        "{e}"
    );
    assert!(!dir.exists(), "a failed restore left {}", dir.display());

    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("something"), b"x").expect("write");
    let e = snapshot::restore(&file, &dir).expect_err("dir in use");
    assert!(matches!(e, SnapshotError::DirNotEmpty { .. }), "{e}");
    std::fs::remove_file(dir.join("something")).expect("rm");
    // An empty dir is fine.
    snapshot::restore(&file, &dir).expect("restore into an empty dir");
}

//! torc kv's bounds on work, each refused with an error that names the
//! limit and the setting that raises it: watchers and leases per
//! connection, the size of a Range's answer, and the storage quota (etcd's
//! `--quota-backend-bytes`, whose NOSPACE alarm the case file
//! `tests/cases/quota.case` compares with a real etcd).

mod common;

use std::time::Duration;

use common::{TorcKv, etcdctl};
use tonic::Code;
use torc_kv::KvOptions;
use torc_kv_client::proto::etcdserverpb::{
    LeaseGrantRequest, LeaseRevokeRequest, WatchCancelRequest, WatchCreateRequest, WatchRequest,
    WatchResponse, lease_client::LeaseClient, watch_client::WatchClient,
    watch_request::RequestUnion,
};

fn create(key: &str) -> WatchRequest {
    WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: key.as_bytes().to_vec().into(),
            ..Default::default()
        })),
    }
}

/// A watch stream on `channel`: where to send requests, and its responses.
async fn watch_stream(
    channel: tonic::transport::Channel,
) -> (
    tokio::sync::mpsc::UnboundedSender<WatchRequest>,
    tonic::Streaming<WatchResponse>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = WatchClient::new(channel)
        .watch(tokio_stream::wrappers::UnboundedReceiverStream::new(rx))
        .await
        .expect("watch")
        .into_inner();
    (tx, stream)
}

async fn next(stream: &mut tonic::Streaming<WatchResponse>) -> WatchResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a watch response in time")
        .expect("watch stream")
        .expect("watch open")
}

async fn channel(endpoint: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{endpoint}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// One connection may have `--max-watchers-per-connection` watchers, over
/// all its watch streams; the next is created canceled with a reason that
/// names the setting; a canceled watcher makes room; another connection
/// has its own count.
#[test]
fn watchers_per_connection_are_bounded() {
    let kv = TorcKv::start_with_options(KvOptions {
        max_watchers_per_connection: 3,
        ..KvOptions::default()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let conn = channel(&kv.endpoint).await;
        let (tx1, mut s1) = watch_stream(conn.clone()).await;
        let (tx2, mut s2) = watch_stream(conn.clone()).await;
        let mut on_s1 = Vec::new();
        for key in ["a", "b"] {
            tx1.send(create(key)).expect("send");
            let r = next(&mut s1).await;
            assert!(r.created && !r.canceled, "{r:?}");
            on_s1.push(r.watch_id);
        }
        tx2.send(create("c")).expect("send");
        let third = next(&mut s2).await;
        assert!(third.created && !third.canceled, "{third:?}");
        tx2.send(create("d")).expect("send");
        let refused = next(&mut s2).await;
        assert!(refused.created && refused.canceled, "{refused:?}");
        assert_eq!(
            refused.cancel_reason,
            "torc kv: this connection has 3 watchers open, the most one connection may have \
             (raise it with torc kv --max-watchers-per-connection)"
        );
        // Another connection is not held to this one's count.
        let (tx3, mut s3) = watch_stream(channel(&kv.endpoint).await).await;
        tx3.send(create("e")).expect("send");
        let other = next(&mut s3).await;
        assert!(other.created && !other.canceled, "{other:?}");
        // Canceling one makes room on the first connection.
        tx1.send(WatchRequest {
            request_union: Some(RequestUnion::CancelRequest(WatchCancelRequest {
                watch_id: on_s1[0],
            })),
        })
        .expect("send");
        let canceled = next(&mut s1).await;
        assert!(canceled.canceled, "{canceled:?}");
        tx2.send(create("f")).expect("send");
        let again = next(&mut s2).await;
        assert!(again.created && !again.canceled, "{again:?}");
        // Ending a stream gives back all of its watchers.
        drop(tx1);
        drop(s1);
        let (tx4, mut s4) = watch_stream(conn.clone()).await;
        let mut created = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while created < 1 {
            tx4.send(create("g")).expect("send");
            let r = next(&mut s4).await;
            if !r.canceled {
                created += 1;
            } else {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no room came back: {r:?}"
                );
                tokio::task::yield_now().await;
            }
        }
    });
}

/// One connection may hold `--max-leases-per-connection` leases; the next
/// grant is refused with an error naming the setting; a revoked lease makes
/// room; another connection has its own count.
#[test]
fn leases_per_connection_are_bounded() {
    let kv = TorcKv::start_with_options(KvOptions {
        max_leases_per_connection: 2,
        ..KvOptions::default()
    });
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let mut leases = LeaseClient::new(channel(&kv.endpoint).await);
        let grant = || LeaseGrantRequest { ttl: 60, id: 0 };
        let first = leases
            .lease_grant(grant())
            .await
            .expect("grant")
            .into_inner();
        leases.lease_grant(grant()).await.expect("grant");
        let refused = leases
            .lease_grant(grant())
            .await
            .expect_err("over the limit");
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert_eq!(
            refused.message(),
            "torc kv: this connection holds 2 leases, the most one connection may hold \
             (revoke some, or raise it with torc kv --max-leases-per-connection)"
        );
        let mut other = LeaseClient::new(channel(&kv.endpoint).await);
        other
            .lease_grant(grant())
            .await
            .expect("another connection");
        leases
            .lease_revoke(LeaseRevokeRequest { id: first.id })
            .await
            .expect("revoke");
        leases.lease_grant(grant()).await.expect("room again");
    });
    // etcdctl's leases come over connections of their own.
    assert!(etcdctl(&kv.target, &["lease", "grant", "60"], None).contains("granted"));
}

/// A Range answers at most `--max-range-keys` keys and `--max-range-bytes`
/// bytes of keys and values; past either it is refused with an error naming
/// the setting, while a Range that asks for less (a limit, keys only, a
/// sorted page) is answered. A txn's ranges share one budget.
#[test]
fn range_answers_are_bounded() {
    let kv = TorcKv::start_with_options(KvOptions {
        max_range_keys: 3,
        max_range_bytes: 100,
        ..KvOptions::default()
    });
    let e = &kv.target;
    for i in 0..5 {
        let value = format!("{i}{}", "v".repeat(29));
        assert_eq!(etcdctl(e, &["put", &format!("k{i}"), &value], None), "OK\n");
    }
    assert_eq!(
        etcdctl(e, &["get", "k", "--prefix"], None),
        "Error: rpc error: code = ResourceExhausted desc = torc kv: the range's answer would hold more than 3 keys (ask for fewer with a \
         limit or a narrower range, or raise it with torc kv --max-range-keys)\n(exit 1)\n"
    );
    // A limit within the bound is answered (with `more`).
    assert_eq!(
        etcdctl(
            e,
            &["get", "k", "--prefix", "--limit=3", "--keys-only"],
            None
        ),
        "k0\n\nk1\n\nk2\n\n"
    );
    // Three keys of 32 bytes each (key and value): 96 bytes fit in 100.
    let out = etcdctl(e, &["get", "k0", "k3"], None);
    assert_eq!(out.lines().count(), 6, "{out}");
    assert_eq!(etcdctl(e, &["put", "k", &"x".repeat(100)], None), "OK\n",);
    assert_eq!(
        etcdctl(e, &["get", "k", "--print-value-only"], None),
        "Error: rpc error: code = ResourceExhausted desc = torc kv: the range's answer would hold more than 100 bytes of keys and values \
         (ask for less: a limit, a narrower range, keys only; or raise it with torc kv \
         --max-range-bytes)\n(exit 1)\n"
    );
    assert_eq!(etcdctl(e, &["get", "k", "--keys-only"], None), "k\n\n");
    // Sorted, with a limit: the page is what counts, not the keys sorted.
    assert_eq!(
        etcdctl(
            e,
            &[
                "get",
                "k0",
                "k9",
                "--sort-by=VALUE",
                "--order=DESCEND",
                "--limit=2",
                "--keys-only"
            ],
            None
        ),
        "k4\n\nk3\n\n"
    );
    // Two ranges of two keys in one txn: four keys, over the three allowed.
    let txn = "\nget k0 k2\nget k2 k4\n\n\n";
    assert_eq!(
        etcdctl(e, &["txn"], Some(txn)),
        "Error: rpc error: code = ResourceExhausted desc = torc kv: the range's answer would hold more than 3 keys (ask for fewer with a \
         limit or a narrower range, or raise it with torc kv --max-range-keys)\n(exit 1)\n"
    );
}

/// torc kv's quota counts the data it keeps, so deleting and compacting
/// frees space at once (etcd also needs a defrag); after `alarm disarm`
/// writes are served again. The space in use is `endpoint status`'s
/// dbSizeInUse.
#[test]
fn compaction_frees_quota_space() {
    let kv = TorcKv::start_with_options(KvOptions {
        quota_backend_bytes: 10_000,
        ..KvOptions::default()
    });
    let e = &kv.target;
    let value = "v".repeat(1000);
    let mut written = 0;
    loop {
        let out = etcdctl(e, &["put", &format!("k{written}"), &value], None);
        if out != "OK\n" {
            assert_eq!(
                out,
                "Error: etcdserver: mvcc: database space exceeded\n(exit 1)\n"
            );
            break;
        }
        written += 1;
        assert!(written < 10, "the quota never refused a put");
    }
    // 256 bytes of estimated metadata plus key and value, per version.
    assert_eq!(written, 7);
    // Go's JSON leaves out a zero.
    let in_use = |e| {
        let json = etcdctl(e, &["endpoint", "status", "-w", "json"], None);
        json.find("\"dbSizeInUse\":").map_or(0, |at| {
            json[at + 14..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<u64>()
                .expect("a number")
        })
    };
    let full = in_use(e);
    assert_eq!(full, 7 * (256 + 2 + 1000));
    assert_eq!(etcdctl(e, &["del", "k", "--prefix"], None), "7\n");
    let rev = common::current_revision(e);
    assert_eq!(
        etcdctl(e, &["compaction", &rev.to_string()], None),
        format!("compacted revision {rev}\n")
    );
    // Nothing is left: as etcd, compaction drops a tombstone at the
    // compaction point.
    assert_eq!(in_use(e), 0);
    // Still refused until disarmed.
    assert!(etcdctl(e, &["put", "again", "1"], None).contains("database space exceeded"));
    assert!(etcdctl(e, &["alarm", "disarm"], None).contains("alarm:NOSPACE"));
    assert_eq!(etcdctl(e, &["put", "again", "1"], None), "OK\n");
}

/// The NOSPACE alarm is durable: it outlives a restart, as etcd's does.
#[test]
fn the_alarm_outlives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = || KvOptions {
        quota_backend_bytes: 2_000,
        ..KvOptions::default()
    };
    let mut kv = TorcKv::start_in(dir.path(), options());
    let e = kv.endpoint.clone();
    assert!(
        etcdctl(&e, &["put", "big", &"x".repeat(2_000)], None).contains("database space exceeded")
    );
    kv.stop();
    let kv = TorcKv::start_in(dir.path(), options());
    let e = &kv.endpoint;
    assert!(etcdctl(e, &["alarm", "list"], None).ends_with("alarm:NOSPACE \n"));
    assert!(etcdctl(e, &["put", "small", "1"], None).contains("database space exceeded"));
    assert!(etcdctl(e, &["alarm", "disarm"], None).contains("alarm:NOSPACE"));
    assert_eq!(etcdctl(e, &["put", "small", "1"], None), "OK\n");
    assert_eq!(etcdctl(e, &["alarm", "list"], None), "");
}

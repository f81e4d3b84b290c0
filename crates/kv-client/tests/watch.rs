//! A prefix watch on a real 3-member etcd delivers every event once and in order across the
//! death of the member it watches through; a compacted start is reported; paged reads at one
//! revision give one consistent view.

use std::time::Duration;

use bytes::Bytes;
use torc_kv_client::proto::etcdserverpb as pb;
use torc_kv_client::proto::mvccpb::event::EventType;
use torc_kv_client::{Client, ClientOptions, PrefixWatch, WatchError, prefix_end};
use torc_test_utils::{EtcdCluster, wait_for};

const PREFIX: &[u8] = b"/torc-controller/r1/tasks/";

fn key(i: usize) -> Bytes {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(format!("{i:04}").as_bytes());
    k.into()
}

async fn put(client: &Client, i: usize, value: &str) -> i64 {
    let resp = client
        .put(pb::PutRequest {
            key: key(i),
            value: value.to_string().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    resp.header.unwrap().revision
}

/// Reads events until `n` have come (bounded by 20 s).
async fn take(watch: &mut PrefixWatch, n: usize) -> Vec<(i64, String, bool)> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while got.len() < n {
            let batch = watch.next().await.expect("the watch resumes");
            for e in batch.events {
                let kv = e.kv.unwrap();
                let deleted = e.r#type == EventType::Delete as i32;
                got.push((
                    kv.mod_revision,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    deleted,
                ));
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {} of {n} events within 20 s", got.len()));
    got
}

#[tokio::test]
async fn a_watch_resumes_on_another_member_without_loss_or_repeat() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    let client = Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
        .await
        .unwrap();
    let first = put(&client, 0, "a").await;
    put(&client, 1, "b").await;
    // An event outside the prefix is not delivered.
    client
        .put(pb::PutRequest {
            key: Bytes::from_static(b"/elsewhere"),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut watch = PrefixWatch::new(&client, PREFIX, first);
    let got = take(&mut watch, 2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, first);

    // Kill the member the watch (and the client) uses, then change more.
    let pinned = client.endpoint();
    let dead = cluster.index_of(&pinned).unwrap();
    cluster.kill(dead);
    let writer = Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
        .await
        .unwrap();
    let mut revisions = Vec::new();
    for i in 2..6 {
        let r = wait_for("a write after the kill", Duration::from_secs(10), || {
            let writer = writer.clone();
            async move {
                writer
                    .put(pb::PutRequest {
                        key: key(i),
                        value: "c".into(),
                        ..Default::default()
                    })
                    .await
                    .ok()
            }
        })
        .await
        .unwrap();
        revisions.push(r.header.unwrap().revision);
    }
    let got = take(&mut watch, 4).await;
    let seen: Vec<i64> = got.iter().map(|e| e.0).collect();
    assert_eq!(seen, revisions, "each event once, in order");
    assert_eq!(watch.next_revision(), revisions[3] + 1);
    assert_ne!(client.endpoint(), pinned);
}

#[tokio::test]
async fn a_compacted_start_is_reported() {
    let cluster = EtcdCluster::start_n(1).await.unwrap();
    let client = Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
        .await
        .unwrap();
    let old = put(&client, 0, "a").await;
    let now = put(&client, 0, "b").await;
    client
        .kv()
        .compact(pb::CompactionRequest {
            revision: now,
            physical: true,
        })
        .await
        .unwrap();
    let mut watch = PrefixWatch::new(&client, PREFIX, old);
    let err = watch.next().await.unwrap_err();
    assert!(
        matches!(err, WatchError::Compacted { from, compacted, .. } if from == old && compacted == now),
        "{err:?}"
    );
}

#[tokio::test]
async fn paged_reads_give_one_revision() {
    let cluster = EtcdCluster::start_n(1).await.unwrap();
    let client = Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
        .await
        .unwrap();
    let mut at = 0;
    for i in 0..250 {
        at = put(&client, i, "v1").await;
    }
    // Changes after `at`: not in a read at `at`.
    put(&client, 0, "v2").await;
    put(&client, 999, "new").await;
    let end = prefix_end(PREFIX);
    let old = client
        .range_all(PREFIX, end.clone(), at, 100)
        .await
        .unwrap();
    assert_eq!(old.revision, at);
    assert_eq!(old.kvs.len(), 250);
    assert!(old.kvs.iter().all(|kv| kv.value.as_ref() == b"v1"));
    let keys: Vec<Bytes> = old.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, (0..250).map(key).collect::<Vec<_>>());
    // The current view, pinned by its first page.
    let now = client.range_all(PREFIX, end, 0, 7).await.unwrap();
    assert_eq!(now.kvs.len(), 251);
    assert_eq!(now.kvs[0].value.as_ref(), b"v2");
    assert!(now.revision > at);
}

//! Elections on a real 3-member etcd: a campaigner takes over when the leader's lease is
//! revoked or lapses, when it resigns, epochs grow, and a deposed leader's fenced Txn changes
//! nothing. The holder is in-process: "killing" it is revoking its lease or stopping its
//! keepalives.

use std::time::{Duration, Instant};

use bytes::Bytes;
use torc_kv_client::proto::etcdserverpb as pb;
use torc_kv_client::{
    Client, ClientOptions, Election, KeepAlive, KeepAliveState, KeepAliveTask, Leadership, Renewal,
};
use torc_test_utils::{EtcdCluster, wait_for};

const PREFIX: &str = "/torc-controller/r1/election/";
/// The lease TTL of the design (§5.4) and its keepalive interval (TTL/4).
const TTL: i64 = 2;
const KEEPALIVE: Duration = Duration::from_millis(500);

async fn client(cluster: &EtcdCluster) -> Client {
    Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
        .await
        .unwrap()
}

/// A Txn fenced by `leadership` that writes `/torc-controller/r1/meta/writer`.
async fn fenced_write(client: &Client, leadership: &Leadership) -> bool {
    let put = pb::RequestOp {
        request: Some(pb::request_op::Request::RequestPut(pb::PutRequest {
            key: Bytes::from_static(b"/torc-controller/r1/meta/writer"),
            value: leadership.epoch.to_string().into(),
            ..Default::default()
        })),
    };
    client
        .txn(pb::TxnRequest {
            compare: vec![leadership.fence()],
            success: vec![put],
            failure: vec![],
        })
        .await
        .unwrap()
        .succeeded
}

async fn writer(client: &Client) -> String {
    let resp = client
        .range(pb::RangeRequest {
            key: Bytes::from_static(b"/torc-controller/r1/meta/writer"),
            ..Default::default()
        })
        .await
        .unwrap();
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .unwrap_or_default()
}

/// Waits until `election`'s key for `lease` exists: its campaign is queued.
async fn queued(client: &Client, election: &Election, lease: i64) {
    let key = election.key_of(lease);
    wait_for("a queued campaign", Duration::from_secs(10), || {
        let (client, key) = (client.clone(), key.clone());
        async move {
            let resp = client
                .range(pb::RangeRequest {
                    key,
                    ..Default::default()
                })
                .await
                .ok()?;
            (!resp.kvs.is_empty()).then_some(())
        }
    })
    .await
    .unwrap();
}

/// Waits (bounded) for `campaign` to finish; panics after 20 s.
async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} took more than 20 s"))
}

#[tokio::test]
async fn revoked_leader_is_replaced_and_fenced() {
    let cluster = EtcdCluster::start().await.unwrap();
    let (a_client, b_client) = (client(&cluster).await, client(&cluster).await);
    let (a_lease, b_lease) = (
        a_client.lease_grant(TTL).await.unwrap(),
        b_client.lease_grant(TTL).await.unwrap(),
    );
    let _a_alive = KeepAliveTask::spawn(&a_client, a_lease.id, KEEPALIVE);
    let _b_alive = KeepAliveTask::spawn(&b_client, b_lease.id, KEEPALIVE);
    let (a_election, b_election) = (
        Election::new(&a_client, PREFIX),
        Election::new(&b_client, PREFIX),
    );

    let a = within("a's campaign", a_election.campaign(a_lease.id, "a"))
        .await
        .unwrap();
    assert_eq!(a.key, a_election.key_of(a_lease.id));
    assert!(fenced_write(&a_client, &a).await);
    let leader = b_election.leader().await.unwrap().unwrap();
    assert_eq!((leader.value.as_ref(), leader.epoch), (&b"a"[..], a.epoch));

    // b waits behind a.
    let queue = b_election.clone();
    let b_campaign = tokio::spawn(async move { b_election.campaign(b_lease.id, "b").await });
    let mut observed = Election::new(&a_client, PREFIX).observe();
    queued(&b_client, &queue, b_lease.id).await;
    assert!(!b_campaign.is_finished(), "b led while a's key lived");

    // a's lease goes (a step-down, or its holder killed and the lease revoked): b leads.
    let revoked = Instant::now();
    a_client.lease_revoke(a_lease.id).await.unwrap();
    let b = within("b's campaign", b_campaign).await.unwrap().unwrap();
    let takeover = revoked.elapsed();
    assert!(
        b.epoch > a.epoch,
        "epochs grow: {} then {}",
        a.epoch,
        b.epoch
    );
    assert!(takeover < Duration::from_secs(1), "{takeover:?}");

    // The deposed a changes nothing; b does.
    assert!(!fenced_write(&a_client, &a).await);
    assert_eq!(writer(&b_client).await, a.epoch.to_string());
    assert!(fenced_write(&b_client, &b).await);
    assert_eq!(writer(&a_client).await, b.epoch.to_string());

    // Observers see b.
    within(
        "the observer to see b",
        observed.wait_for(|l| l.as_ref().is_some_and(|l| l.epoch == b.epoch)),
    )
    .await
    .unwrap();
    // Revoking again is not an error.
    a_client.lease_revoke(a_lease.id).await.unwrap();
    eprintln!("revoke -> new leader: {takeover:?}");
}

#[tokio::test]
async fn a_lapsed_lease_hands_over_within_its_ttl() {
    let cluster = EtcdCluster::start().await.unwrap();
    let (a_client, b_client) = (client(&cluster).await, client(&cluster).await);
    let a_lease = a_client.lease_grant(TTL).await.unwrap();
    let b_lease = b_client.lease_grant(TTL).await.unwrap();
    let a_alive = KeepAliveTask::spawn(&a_client, a_lease.id, KEEPALIVE);
    let _b_alive = KeepAliveTask::spawn(&b_client, b_lease.id, KEEPALIVE);
    let a = Election::new(&a_client, PREFIX)
        .campaign(a_lease.id, "a")
        .await
        .unwrap();
    let mut a_state = a_alive.state();
    let last = within(
        "a's first renewal",
        a_state.wait_for(|s| matches!(s, KeepAliveState::Alive { .. })),
    )
    .await
    .unwrap()
    .clone();
    let KeepAliveState::Alive { ttl, .. } = last else {
        unreachable!()
    };
    assert_eq!(ttl, TTL);

    let b_election = Election::new(&b_client, PREFIX);
    let b_campaign = tokio::spawn(async move { b_election.campaign(b_lease.id, "b").await });
    // a's holder dies: its keepalives stop, and etcd expires its lease after the TTL.
    let died = Instant::now();
    drop(a_alive);
    let b = within("b's campaign", b_campaign).await.unwrap().unwrap();
    let takeover = died.elapsed();
    assert!(b.epoch > a.epoch);
    assert!(
        takeover < Duration::from_secs(TTL as u64 + 2),
        "takeover took {takeover:?}"
    );
    assert!(!fenced_write(&a_client, &a).await);
    // a's next keepalive learns that its lease is gone.
    let mut keepalive = KeepAlive::new(&a_client, a_lease.id);
    assert_eq!(
        keepalive.renew(Duration::from_secs(2)).await.unwrap(),
        Renewal::Gone
    );
    eprintln!("keepalives stopped -> new leader: {takeover:?} (TTL {TTL} s)");
}

#[tokio::test]
async fn resign_hands_over_and_campaigning_again_queues_behind() {
    let cluster = EtcdCluster::start().await.unwrap();
    let (a_client, b_client) = (client(&cluster).await, client(&cluster).await);
    let a_lease = a_client.lease_grant(TTL).await.unwrap();
    let b_lease = b_client.lease_grant(TTL).await.unwrap();
    let _a_alive = KeepAliveTask::spawn(&a_client, a_lease.id, KEEPALIVE);
    let _b_alive = KeepAliveTask::spawn(&b_client, b_lease.id, KEEPALIVE);
    let a_election = Election::new(&a_client, PREFIX);
    let a = a_election.campaign(a_lease.id, "a").await.unwrap();
    // Campaigning again with the same lease keeps the key and the epoch.
    assert_eq!(a_election.campaign(a_lease.id, "a").await.unwrap(), a);

    let b_election = Election::new(&b_client, PREFIX);
    let queue = b_election.clone();
    let b_campaign = tokio::spawn(async move { b_election.campaign(b_lease.id, "b").await });
    queued(&b_client, &queue, b_lease.id).await;
    let resigned = Instant::now();
    a_election.resign(&a).await.unwrap();
    let b = within("b's campaign", b_campaign).await.unwrap().unwrap();
    let handover = resigned.elapsed();
    assert!(handover < Duration::from_secs(1), "{handover:?}");
    assert!(!fenced_write(&a_client, &a).await);
    // a campaigns again: same lease, new key revision, behind b.
    let queue = a_election.clone();
    let again = tokio::spawn(async move { a_election.campaign(a_lease.id, "a").await });
    queued(&a_client, &queue, a_lease.id).await;
    assert!(!again.is_finished(), "a led again while b leads");
    let leader = Election::new(&b_client, PREFIX)
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.epoch, b.epoch);
    again.abort();
    eprintln!("resign -> new leader: {handover:?}");
}

#[tokio::test]
async fn the_leader_survives_the_death_of_its_member() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    let a_client = client(&cluster).await;
    let a_lease = a_client.lease_grant(TTL).await.unwrap();
    let a_alive = KeepAliveTask::spawn(&a_client, a_lease.id, KEEPALIVE);
    let a = Election::new(&a_client, PREFIX)
        .campaign(a_lease.id, "a")
        .await
        .unwrap();
    // Kill the member a talks to: its keepalives move to another member and the lease
    // lives (etcd extends leases when raft elects a new leader).
    let pinned = a_client.endpoint();
    let dead = cluster
        .endpoints()
        .iter()
        .position(|e| *e == pinned)
        .unwrap();
    cluster.kill(dead);
    let killed = Instant::now();
    let mut state = a_alive.state();
    within(
        "a renewal after the kill",
        state.wait_for(|s| matches!(s, KeepAliveState::Alive { sent, .. } if *sent > killed)),
    )
    .await
    .unwrap();
    assert_ne!(a_client.endpoint(), pinned);
    let others: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    cluster.wait_healthy(&others).await.unwrap();
    let leader = Election::new(&a_client, PREFIX)
        .leader()
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leader.epoch, a.epoch);
    assert!(fenced_write(&a_client, &a).await);
}

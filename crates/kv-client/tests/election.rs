//! Elections on a real 3-member etcd: a campaigner takes over when the leader's lease is
//! revoked or lapses, when it resigns, epochs grow, and a deposed leader's fenced Txn changes
//! nothing. The holder is in-process: "killing" it is revoking its lease or stopping its
//! keepalives.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinHandle;
use torc_kv_client::proto::etcdserverpb as pb;
use torc_kv_client::{
    Client, ClientOptions, Election, ElectionError, KeepAlive, KeepAliveState, KeepAliveTask,
    Leadership, Renewal,
};
use torc_test_utils::{EtcdCluster, wait_for};

const PREFIX: &str = "/torc-controller/r1/election/";
/// The lease TTL of the design (§5.4) and its keepalive interval (TTL/4).
const TTL: i64 = 2;
const KEEPALIVE: Duration = Duration::from_millis(500);

/// A controller's part in an election: its own client, a lease kept alive, the election.
struct Campaigner {
    client: Client,
    lease: i64,
    alive: KeepAliveTask,
    election: Election,
}

impl Campaigner {
    async fn new(cluster: &EtcdCluster) -> Campaigner {
        let client = Client::connect_endpoints(&cluster.endpoints(), ClientOptions::default())
            .await
            .unwrap();
        let lease = client.lease_grant(TTL).await.unwrap().id;
        Campaigner {
            alive: KeepAliveTask::spawn(&client, lease, KEEPALIVE),
            election: Election::new(&client, PREFIX),
            client,
            lease,
        }
    }

    /// Campaigns in a task of its own, once its key is queued.
    async fn queue(&self, value: &'static str) -> JoinHandle<Result<Leadership, ElectionError>> {
        let (election, lease) = (self.election.clone(), self.lease);
        let campaign = tokio::spawn(async move { election.campaign(lease, value).await });
        queued(&self.client, &self.election, self.lease).await;
        campaign
    }
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
    let (ca, cb) = (
        Campaigner::new(&cluster).await,
        Campaigner::new(&cluster).await,
    );
    let a = within("a's campaign", ca.election.campaign(ca.lease, "a"))
        .await
        .unwrap();
    assert_eq!(a.key, ca.election.key_of(ca.lease));
    assert!(fenced_write(&ca.client, &a).await);
    let leader = cb.election.leader().await.unwrap().unwrap();
    assert_eq!((leader.value.as_ref(), leader.epoch), (&b"a"[..], a.epoch));

    // b waits behind a.
    let mut observed = ca.election.observe();
    let b_campaign = cb.queue("b").await;
    assert!(!b_campaign.is_finished(), "b led while a's key lived");

    // a's lease goes (a step-down, or its holder killed and the lease revoked): b leads.
    let revoked = Instant::now();
    ca.client.lease_revoke(ca.lease).await.unwrap();
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
    assert!(!fenced_write(&ca.client, &a).await);
    assert_eq!(writer(&cb.client).await, a.epoch.to_string());
    assert!(fenced_write(&cb.client, &b).await);
    assert_eq!(writer(&ca.client).await, b.epoch.to_string());

    // Observers see b.
    within(
        "the observer to see b",
        observed.wait_for(|l| l.as_ref().is_some_and(|l| l.epoch == b.epoch)),
    )
    .await
    .unwrap();
    // Revoking again is not an error.
    ca.client.lease_revoke(ca.lease).await.unwrap();
    eprintln!("revoke -> new leader: {takeover:?}");
}

#[tokio::test]
async fn a_lapsed_lease_hands_over_within_its_ttl() {
    let cluster = EtcdCluster::start().await.unwrap();
    let (ca, cb) = (
        Campaigner::new(&cluster).await,
        Campaigner::new(&cluster).await,
    );
    let a = ca.election.campaign(ca.lease, "a").await.unwrap();
    let mut a_state = ca.alive.state();
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

    let b_campaign = cb.queue("b").await;
    // a's holder dies: its keepalives stop, and etcd expires its lease after the TTL.
    let died = Instant::now();
    let Campaigner {
        client,
        lease,
        alive,
        ..
    } = ca;
    drop(alive);
    let b = within("b's campaign", b_campaign).await.unwrap().unwrap();
    let takeover = died.elapsed();
    assert!(b.epoch > a.epoch);
    assert!(
        takeover < Duration::from_secs(TTL as u64 + 2),
        "takeover took {takeover:?}"
    );
    assert!(!fenced_write(&client, &a).await);
    // a's next keepalive learns that its lease is gone.
    let mut keepalive = KeepAlive::new(&client, lease);
    assert_eq!(
        keepalive.renew(Duration::from_secs(2)).await.unwrap(),
        Renewal::Gone
    );
    eprintln!("keepalives stopped -> new leader: {takeover:?} (TTL {TTL} s)");
}

#[tokio::test]
async fn resign_hands_over_and_campaigning_again_queues_behind() {
    let cluster = EtcdCluster::start().await.unwrap();
    let (ca, cb) = (
        Campaigner::new(&cluster).await,
        Campaigner::new(&cluster).await,
    );
    let a = ca.election.campaign(ca.lease, "a").await.unwrap();
    // Campaigning again with the same lease keeps the key and the epoch.
    assert_eq!(ca.election.campaign(ca.lease, "a").await.unwrap(), a);

    let b_campaign = cb.queue("b").await;
    let resigned = Instant::now();
    ca.election.resign(&a).await.unwrap();
    let b = within("b's campaign", b_campaign).await.unwrap().unwrap();
    let handover = resigned.elapsed();
    assert!(handover < Duration::from_secs(1), "{handover:?}");
    assert!(!fenced_write(&ca.client, &a).await);
    // a campaigns again: same lease, new key revision, behind b.
    let again = ca.queue("a").await;
    assert!(!again.is_finished(), "a led again while b leads");
    let leader = cb.election.leader().await.unwrap().unwrap();
    assert_eq!(leader.epoch, b.epoch);
    again.abort();
    eprintln!("resign -> new leader: {handover:?}");
}

#[tokio::test]
async fn the_leader_survives_the_death_of_its_member() {
    let mut cluster = EtcdCluster::start().await.unwrap();
    let ca = Campaigner::new(&cluster).await;
    let a = ca.election.campaign(ca.lease, "a").await.unwrap();
    // Kill the member a talks to: its keepalives move to another member and the lease
    // lives (etcd extends leases when raft elects a new leader).
    let pinned = ca.client.endpoint();
    let dead = cluster.index_of(&pinned).unwrap();
    cluster.kill(dead);
    let killed = Instant::now();
    let mut state = ca.alive.state();
    within(
        "a renewal after the kill",
        state.wait_for(|s| matches!(s, KeepAliveState::Alive { sent, .. } if *sent > killed)),
    )
    .await
    .unwrap();
    assert_ne!(ca.client.endpoint(), pinned);
    let others: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    cluster.wait_healthy(&others).await.unwrap();
    let leader = ca.election.leader().await.unwrap().unwrap();
    assert_eq!(leader.epoch, a.epoch);
    assert!(fenced_write(&ca.client, &a).await);
}

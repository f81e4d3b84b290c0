//! etcd leases from the client side: grant, revoke, and keeping one alive.
//!
//! [`KeepAlive`] is one `LeaseKeepAlive` stream used a request at a time: [`KeepAlive::renew`]
//! sends one keepalive and waits for its answer within a deadline, and reports the instant it
//! sent it with the TTL etcd answered. etcd starts the TTL again when it receives the request,
//! which is no earlier than that instant, so `sent + TTL` is a bound the holder can act on
//! (the controller's acting deadline). A stream that fails is dropped and the pinned member
//! marked failed, so the next renewal opens a new stream, on the next member if there is one.
//!
//! [`KeepAliveTask`] renews on a timer in a task of its own and publishes each outcome; dropping
//! it stops the renewals (the lease then expires after its TTL), which is also how a test lets a
//! lease lapse without revoking it.
//!
//! Invariant: a renewal answered with `TTL <= 0` means the lease is gone for good (expired or
//! revoked): it is reported as [`Renewal::Gone`], never as alive.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::proto::etcdserverpb as pb;
use crate::{Client, ClientError, EndpointFailure, rpctypes};

/// A lease etcd granted: its id and the TTL it was granted with, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: i64,
    pub ttl: i64,
}

/// The outcome of one keepalive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// etcd renewed the lease: it lives at least `ttl` seconds from `sent`.
    Alive { sent: Instant, ttl: i64 },
    /// etcd answered that the lease no longer exists.
    Gone,
}

impl Client {
    /// Grants a lease of `ttl` seconds (etcd picks the id).
    pub async fn lease_grant(&self, ttl: i64) -> Result<Lease, ClientError> {
        let resp = self
            .call(|c| async move {
                let req = pb::LeaseGrantRequest { ttl, id: 0 };
                Ok(c.lease().lease_grant(req).await?.into_inner())
            })
            .await?;
        Ok(Lease {
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// Revokes lease `id`, deleting every key attached to it. A lease that is already gone
    /// (expired, or revoked by an earlier try) is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<(), ClientError> {
        let revoked = self
            .call_idempotent(|c| async move {
                let req = pb::LeaseRevokeRequest { id };
                Ok(c.lease().lease_revoke(req).await?.into_inner())
            })
            .await;
        match revoked {
            Ok(_) => Ok(()),
            Err(e)
                if e.status()
                    .is_some_and(|s| s.message() == rpctypes::LEASE_NOT_FOUND) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// One lease's keepalive stream, used a request at a time.
pub struct KeepAlive {
    client: Client,
    id: i64,
    stream: Option<(
        mpsc::Sender<pb::LeaseKeepAliveRequest>,
        Streaming<pb::LeaseKeepAliveResponse>,
    )>,
}

impl KeepAlive {
    /// Keepalives for lease `id` through `client` (the stream opens on the first renewal).
    pub fn new(client: &Client, id: i64) -> KeepAlive {
        KeepAlive {
            client: client.clone(),
            id,
            stream: None,
        }
    }

    pub fn id(&self) -> i64 {
        self.id
    }

    /// Sends one keepalive and waits for its answer, all within `deadline`. On a failure the
    /// stream is dropped (the next call opens another) and the error names the endpoint.
    pub async fn renew(&mut self, deadline: Duration) -> Result<Renewal, ClientError> {
        let sent = Instant::now();
        let endpoint = self.client.endpoint();
        let outcome = tokio::time::timeout(deadline, self.round_trip()).await;
        let status = match outcome {
            Ok(Ok(resp)) if resp.ttl > 0 => {
                return Ok(Renewal::Alive {
                    sent,
                    ttl: resp.ttl,
                });
            }
            Ok(Ok(_)) => return Ok(Renewal::Gone),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded(format!("no keepalive answer within {deadline:?}")),
        };
        self.stream = None;
        if self.client.member_failed(&status) {
            Err(ClientError::Unavailable {
                tried: vec![EndpointFailure { endpoint, status }],
            })
        } else {
            Err(ClientError::Rpc(status))
        }
    }

    async fn round_trip(&mut self) -> Result<pb::LeaseKeepAliveResponse, Status> {
        let request = pb::LeaseKeepAliveRequest { id: self.id };
        match self.stream.as_mut() {
            Some((tx, _)) => tx
                .send(request)
                .await
                .map_err(|_| Status::unavailable("keepalive stream closed"))?,
            None => {
                self.client.ready_for_stream().await?;
                // The first request goes in before the stream opens: etcd sends the
                // response headers (which opening waits for) with its first answer.
                let (tx, rx) = mpsc::channel(1);
                tx.send(request)
                    .await
                    .map_err(|_| Status::internal("keepalive channel closed"))?;
                let responses = self
                    .client
                    .lease()
                    .lease_keep_alive(ReceiverStream::new(rx))
                    .await?
                    .into_inner();
                self.stream = Some((tx, responses));
            }
        }
        let Some((_, responses)) = self.stream.as_mut() else {
            unreachable!("opened above");
        };
        match responses.message().await? {
            Some(resp) => Ok(resp),
            None => Err(Status::unavailable("keepalive stream ended")),
        }
    }
}

/// What a [`KeepAliveTask`] publishes after each renewal.
#[derive(Clone, Debug)]
pub enum KeepAliveState {
    /// No renewal has been answered yet.
    Starting,
    /// The last answered renewal: the lease lives at least until `sent + ttl`.
    Alive { sent: Instant, ttl: i64 },
    /// The last renewal failed (no answer in time, no member reachable, no quorum): why. The
    /// last `Alive` still bounds the lease from below.
    Failed { why: String },
    /// etcd said the lease is gone; the task has stopped.
    Gone,
}

/// Renews a lease every `interval` in a task of its own until dropped or until the lease is
/// gone.
pub struct KeepAliveTask {
    task: tokio::task::JoinHandle<()>,
    state: watch::Receiver<KeepAliveState>,
}

impl KeepAliveTask {
    /// Starts renewing `lease` through `client` at once, then every `interval`, each renewal
    /// with `interval` as its deadline.
    pub fn spawn(client: &Client, lease: i64, interval: Duration) -> KeepAliveTask {
        let (tx, state) = watch::channel(KeepAliveState::Starting);
        let mut keepalive = KeepAlive::new(client, lease);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match keepalive.renew(interval).await {
                    Ok(Renewal::Alive { sent, ttl }) => {
                        tx.send_replace(KeepAliveState::Alive { sent, ttl });
                    }
                    Ok(Renewal::Gone) => {
                        tx.send_replace(KeepAliveState::Gone);
                        return;
                    }
                    // The next tick tries again (on the next member).
                    Err(e) => {
                        tx.send_replace(KeepAliveState::Failed { why: e.to_string() });
                    }
                }
            }
        });
        KeepAliveTask { task, state }
    }

    /// The renewals' outcomes, as they come.
    pub fn state(&self) -> watch::Receiver<KeepAliveState> {
        self.state.clone()
    }
}

impl Drop for KeepAliveTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

//! Leader election as etcd's `concurrency.Election` does it, on the client side, so it works
//! against any etcd v3 server (a real etcd cluster or torc kv).
//!
//! A campaigner holds a lease and creates `<prefix><lease id in hex>` with it, if absent (a
//! Txn comparing its create revision with 0). The leader is the live key under the prefix with
//! the lowest create revision. A campaigner that is not first watches for the deletion of the
//! key created just before its own (not of the leader's: no herd when the leader goes), and
//! looks again when it goes. Its key's create revision is its **epoch**: every key older than
//! the leader's is deleted, so the next leader's key is newer and epochs only grow across
//! leaders (design §5.2).
//!
//! Fencing: [`Leadership::fence`] is the compare `create_revision(own key) == epoch`. A Txn that
//! carries it changes nothing once the leader is deposed (its lease expired or was revoked, or
//! it resigned), because its key is then gone; etcd checks it when it applies the Txn, so it
//! holds for a Txn sent before the leader noticed anything.
//!
//! Not here: keeping the lease alive ([`crate::KeepAliveTask`]) and deciding when to stop
//! acting; the caller owns both.

use bytes::Bytes;
use tokio::sync::watch;
use tonic::Status;

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::watch::Watcher;
use crate::{Client, ClientError, prefix_end};
use pb::compare::{CompareResult, CompareTarget, TargetUnion};
use pb::range_request::{SortOrder, SortTarget};
use pb::request_op::Request;

/// Why a campaign failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The campaigner's key disappeared while it waited: its lease expired or was revoked.
    #[error("the campaign key {} is gone (its lease expired or was revoked)", String::from_utf8_lossy(.key))]
    KeyGone { key: Bytes },
    /// A watch ended with an error the client could not get past.
    #[error("watching {}: {}", String::from_utf8_lossy(.key), .status.message())]
    Watch { key: Bytes, status: Status },
}

/// A key under the election prefix: a campaigner's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderKey {
    pub key: Bytes,
    /// What the campaigner put there (an address, a name).
    pub value: Bytes,
    /// The key's create revision: the campaigner's epoch.
    pub epoch: i64,
    pub lease: i64,
}

impl LeaderKey {
    fn from_kv(kv: &mvccpb::KeyValue) -> LeaderKey {
        LeaderKey {
            key: kv.key.clone(),
            value: kv.value.clone(),
            epoch: kv.create_revision,
            lease: kv.lease,
        }
    }
}

/// An election: the campaigners' keys under `prefix` (which should end in `/`).
#[derive(Clone)]
pub struct Election {
    client: Client,
    prefix: Bytes,
}

/// Won leadership: the leader's own key and epoch. Acting on it is safe only through Txns
/// that carry [`Leadership::fence`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub key: Bytes,
    pub epoch: i64,
    pub lease: i64,
}

impl Leadership {
    /// The compare that holds only while this leadership does:
    /// `create_revision(key) == epoch`.
    pub fn fence(&self) -> pb::Compare {
        pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: self.key.clone(),
            target_union: Some(TargetUnion::CreateRevision(self.epoch)),
            range_end: Bytes::new(),
        }
    }
}

impl Election {
    pub fn new(client: &Client, prefix: impl Into<Bytes>) -> Election {
        Election {
            client: client.clone(),
            prefix: prefix.into(),
        }
    }

    /// The key a campaign with `lease` uses: the prefix and the lease id in 16 hex digits (as
    /// the controller's key layout spells it).
    pub fn key_of(&self, lease: i64) -> Bytes {
        let mut key = self.prefix.to_vec();
        key.extend_from_slice(format!("{lease:016x}").as_bytes());
        key.into()
    }

    /// Campaigns with `lease` (which the caller keeps alive) and returns once this campaigner
    /// leads. A campaign again with the same lease keeps its key and epoch. Cancel it by
    /// dropping the future (then resign, or let the lease go, to leave the queue).
    pub async fn campaign(
        &self,
        lease: i64,
        value: impl Into<Bytes>,
    ) -> Result<Leadership, ElectionError> {
        let key = self.key_of(lease);
        let put = pb::RequestOp {
            request: Some(Request::RequestPut(pb::PutRequest {
                key: key.clone(),
                value: value.into(),
                lease,
                ..Default::default()
            })),
        };
        let get = pb::RequestOp {
            request: Some(Request::RequestRange(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })),
        };
        let absent = pb::Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Create as i32,
            key: key.clone(),
            target_union: Some(TargetUnion::CreateRevision(0)),
            range_end: Bytes::new(),
        };
        let resp = self
            .client
            .txn(pb::TxnRequest {
                compare: vec![absent],
                success: vec![put],
                failure: vec![get],
            })
            .await?;
        let epoch = if resp.succeeded {
            revision_of(&resp.header)
        } else {
            // Ours already (a campaign again with the same lease).
            match resp.responses.first().and_then(|r| r.response.as_ref()) {
                Some(pb::response_op::Response::ResponseRange(range)) => range
                    .kvs
                    .first()
                    .map(|kv| kv.create_revision)
                    .ok_or_else(|| ElectionError::KeyGone { key: key.clone() })?,
                _ => return Err(ElectionError::KeyGone { key }),
            }
        };
        self.wait_predecessors(epoch).await?;
        // Our key may have gone with our lease while we waited.
        match self.get(&key).await? {
            Some(kv) if kv.create_revision == epoch => Ok(Leadership { key, epoch, lease }),
            _ => Err(ElectionError::KeyGone { key }),
        }
    }

    /// Waits until no key under the prefix is older than `epoch` (etcd's `waitDeletes`).
    async fn wait_predecessors(&self, epoch: i64) -> Result<(), ElectionError> {
        loop {
            let resp = self.by_create(SortOrder::Descend, epoch - 1).await?;
            let Some(before) = resp.kvs.first() else {
                return Ok(());
            };
            let from = revision_of(&resp.header) + 1;
            self.wait_delete(before.key.clone(), from).await?;
        }
    }

    /// Waits for a DELETE of `key` at or after revision `from`.
    async fn wait_delete(&self, key: Bytes, from: i64) -> Result<(), ElectionError> {
        let mut watcher = match Watcher::open(&self.client, key.clone(), Bytes::new(), from).await {
            Ok(w) => w,
            // The member failed: the caller looks again (through the next member).
            Err(status) if self.client.member_failed(&status) => return Ok(()),
            Err(status) => return Err(ElectionError::Watch { key, status }),
        };
        loop {
            match watcher.next().await {
                Ok(Some(resp)) => {
                    let deleted = resp
                        .events
                        .iter()
                        .any(|e| e.r#type == mvccpb::event::EventType::Delete as i32);
                    // A cancelled watch (compacted past `from`): look again.
                    if deleted || resp.canceled || resp.compact_revision != 0 {
                        return Ok(());
                    }
                }
                // The stream ended or failed: look again.
                Ok(None) => return Ok(()),
                Err(status) if self.client.member_failed(&status) => return Ok(()),
                Err(status) => return Err(ElectionError::Watch { key, status }),
            }
        }
    }

    async fn get(&self, key: &Bytes) -> Result<Option<mvccpb::KeyValue>, ClientError> {
        let resp = self
            .client
            .range(pb::RangeRequest {
                key: key.clone(),
                ..Default::default()
            })
            .await?;
        Ok(resp.kvs.into_iter().next())
    }

    /// The first key under the prefix in create-revision `order`, among those created at or
    /// before `max_create` (0: all).
    async fn by_create(
        &self,
        order: SortOrder,
        max_create: i64,
    ) -> Result<pb::RangeResponse, ClientError> {
        self.client
            .range(pb::RangeRequest {
                key: self.prefix.clone(),
                range_end: prefix_end(&self.prefix).into(),
                limit: 1,
                sort_order: order as i32,
                sort_target: SortTarget::Create as i32,
                max_create_revision: max_create,
                ..Default::default()
            })
            .await
    }

    /// The current leader: the live key with the lowest create revision, if any.
    pub async fn leader(&self) -> Result<Option<LeaderKey>, ClientError> {
        Ok(self.leader_at().await?.0)
    }

    /// The leader and the revision the answer is from.
    async fn leader_at(&self) -> Result<(Option<LeaderKey>, i64), ClientError> {
        let resp = self.by_create(SortOrder::Ascend, 0).await?;
        let leader = resp.kvs.first().map(LeaderKey::from_kv);
        Ok((leader, revision_of(&resp.header)))
    }

    /// Gives up `leadership`: deletes its key if it is still the same key (etcd's `Resign`).
    /// The next campaigner leads as soon as it sees the deletion. The lease stays.
    pub async fn resign(&self, leadership: &Leadership) -> Result<(), ClientError> {
        self.client
            .txn(pb::TxnRequest {
                compare: vec![leadership.fence()],
                success: vec![pb::RequestOp {
                    request: Some(Request::RequestDeleteRange(pb::DeleteRangeRequest {
                        key: leadership.key.clone(),
                        ..Default::default()
                    })),
                }],
                failure: vec![],
            })
            .await?;
        Ok(())
    }

    /// Follows the leader: the receiver holds the current one (`None`: no campaigner) and
    /// changes when it does. A task of its own watches the prefix; it ends when every
    /// receiver is dropped, and rides out failures by looking again (through the next member).
    pub fn observe(&self) -> watch::Receiver<Option<LeaderKey>> {
        let (tx, rx) = watch::channel(None);
        let election = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = election.follow(&tx) => {}
                () = tx.closed() => {}
            }
        });
        rx
    }

    async fn follow(&self, tx: &watch::Sender<Option<LeaderKey>>) {
        let end = Bytes::from(prefix_end(&self.prefix));
        loop {
            let (leader, revision) = match self.leader_at().await {
                Ok(found) => found,
                Err(_) => {
                    // Every member failed just now: look again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
            };
            tx.send_if_modified(|current| {
                let changed = *current != leader;
                *current = leader;
                changed
            });
            let Ok(mut watcher) =
                Watcher::open(&self.client, self.prefix.clone(), end.clone(), revision + 1).await
            else {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            };
            // Any change under the prefix may change the leader: look again.
            while let Ok(Some(resp)) = watcher.next().await {
                if !resp.events.is_empty() || resp.canceled {
                    break;
                }
            }
        }
    }
}

/// The revision of a response's header (0 when it has none).
fn revision_of(header: &Option<pb::ResponseHeader>) -> i64 {
    header.as_ref().map_or(0, |h| h.revision)
}

//! Watching a prefix across failures, and reading a prefix in pages at one revision.
//!
//! [`PrefixWatch`] delivers every event under a prefix from a starting revision, in revision
//! order, each once: after a stream breaks (the member died, froze past the call deadline or
//! lost its leader) it leaves that member and watches again from the revision after the last
//! one it delivered. A start revision that etcd has compacted away is reported
//! ([`WatchError::Compacted`]), never skipped: the caller must reload.
//!
//! [`Client::range_all`] reads a range in pages of `page` keys, every page at the revision of
//! the first, so the result is one consistent view however large.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb;
use crate::{Client, ClientError, EndpointFailure};

/// One watch on one stream, kept open while the value lives.
pub(crate) struct Watcher {
    _requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

impl Watcher {
    /// Watches `key` (to `range_end`, if not empty) from revision `from`.
    pub(crate) async fn open(
        client: &Client,
        key: Bytes,
        range_end: Bytes,
        from: i64,
    ) -> Result<Watcher, Status> {
        Watcher::open_with(
            client,
            pb::WatchCreateRequest {
                key,
                range_end,
                start_revision: from,
                ..Default::default()
            },
        )
        .await
    }

    async fn open_with(client: &Client, create: pb::WatchCreateRequest) -> Result<Watcher, Status> {
        client.ready_for_stream().await?;
        // The create request goes in before the stream opens: etcd sends the response
        // headers (which opening waits for) with its first answer.
        let (tx, rx) = mpsc::channel(1);
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)),
        };
        tx.send(create)
            .await
            .map_err(|_| Status::internal("watch request channel closed"))?;
        let responses = client
            .watch()
            .watch(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Watcher {
            _requests: tx,
            responses,
        })
    }

    pub(crate) async fn next(&mut self) -> Result<Option<pb::WatchResponse>, Status> {
        self.responses.message().await
    }
}

/// Why a [`PrefixWatch`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The revision to watch from is compacted: the events in between are lost.
    #[error("watching {prefix} from revision {from}: compacted up to revision {compacted}")]
    Compacted {
        prefix: String,
        from: i64,
        compacted: i64,
    },
    /// etcd cancelled the watch for another reason.
    #[error("watching {prefix}: cancelled by etcd: {reason}")]
    Cancelled { prefix: String, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Events under a prefix from a revision on, resumed after failures (see the module doc).
pub struct PrefixWatch {
    client: Client,
    prefix: Bytes,
    /// The revision to watch from when (re)opening: one past the last delivered.
    next_revision: i64,
    watcher: Option<Watcher>,
}

/// A batch of events, all at revisions the watch had not delivered.
#[derive(Debug)]
pub struct WatchBatch {
    /// The store's revision when etcd sent the batch (a progress report has no events).
    pub revision: i64,
    pub events: Vec<mvccpb::Event>,
}

impl PrefixWatch {
    /// Events under `prefix` from revision `from` (etcd's `start_revision`; 0 means "from
    /// now").
    pub fn new(client: &Client, prefix: impl Into<Bytes>, from: i64) -> PrefixWatch {
        PrefixWatch {
            client: client.clone(),
            prefix: prefix.into(),
            next_revision: from,
            watcher: None,
        }
    }

    /// The revision the watch resumes from: one past the last event delivered.
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The next batch of events (or a progress report). After a broken stream it moves to
    /// another member and resumes; when every member failed in a row, the error names them
    /// (call again to resume later).
    pub async fn next(&mut self) -> Result<WatchBatch, WatchError> {
        let mut tried = Vec::new();
        loop {
            let endpoint = self.client.endpoint();
            let status = match self.step().await {
                Ok(Some(batch)) => return Ok(batch),
                Ok(None) => Status::unavailable("the watch stream ended"),
                Err(Step::Stop(e)) => return Err(e),
                Err(Step::Failed(status)) => status,
            };
            self.watcher = None;
            if !self.client.member_failed(&status) {
                return Err(ClientError::Rpc(status).into());
            }
            tried.push(EndpointFailure { endpoint, status });
            if tried.len() >= self.client.endpoints().len() {
                return Err(ClientError::Unavailable { tried }.into());
            }
        }
    }

    /// One response of the open watch (opening it first): a batch, `None` when the stream
    /// ended.
    async fn step(&mut self) -> Result<Option<WatchBatch>, Step> {
        if self.watcher.is_none() {
            let create = pb::WatchCreateRequest {
                key: self.prefix.clone(),
                range_end: crate::prefix_end(&self.prefix).into(),
                start_revision: self.next_revision,
                progress_notify: true,
                ..Default::default()
            };
            self.watcher = Some(
                Watcher::open_with(&self.client, create)
                    .await
                    .map_err(Step::Failed)?,
            );
        }
        let Some(watcher) = self.watcher.as_mut() else {
            unreachable!("opened above");
        };
        loop {
            let Some(resp) = watcher.next().await.map_err(Step::Failed)? else {
                return Ok(None);
            };
            let prefix = || String::from_utf8_lossy(&self.prefix).into_owned();
            if resp.compact_revision != 0 {
                return Err(Step::Stop(WatchError::Compacted {
                    prefix: prefix(),
                    from: self.next_revision,
                    compacted: resp.compact_revision,
                }));
            }
            if resp.canceled {
                return Err(Step::Stop(WatchError::Cancelled {
                    prefix: prefix(),
                    reason: resp.cancel_reason,
                }));
            }
            let revision = resp.header.as_ref().map_or(0, |h| h.revision);
            if resp.created && resp.events.is_empty() {
                // From now on, at the latest: a watch "from now" resumes from here.
                if self.next_revision == 0 {
                    self.next_revision = revision + 1;
                }
                continue;
            }
            if let Some(last) = resp.events.last().and_then(|e| e.kv.as_ref()) {
                self.next_revision = last.mod_revision + 1;
            }
            return Ok(Some(WatchBatch {
                revision,
                events: resp.events,
            }));
        }
    }
}

enum Step {
    Failed(Status),
    Stop(WatchError),
}

/// A whole range read at one revision.
#[derive(Debug)]
pub struct RangeAll {
    /// The revision every page was read at.
    pub revision: i64,
    pub kvs: Vec<mvccpb::KeyValue>,
}

impl Client {
    /// Every key from `key` to `range_end` at `revision` (0: the current one, pinned by the
    /// first page), read `page` keys at a time. A revision compacted meanwhile is an error
    /// (etcd's `required revision has been compacted`).
    pub async fn range_all(
        &self,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        revision: i64,
        page: i64,
    ) -> Result<RangeAll, ClientError> {
        self.range_all_within(key, range_end, revision, page, DEFAULT_DECODE_LIMIT)
            .await
    }

    /// [`Client::range_all`], taking answers of up to `decode_limit` bytes, and reading fewer
    /// keys a page (halved until it fits; one key always does when `decode_limit` exceeds the
    /// largest value) when a page's answer would exceed it.
    pub async fn range_all_within(
        &self,
        key: impl Into<Bytes>,
        range_end: impl Into<Bytes>,
        revision: i64,
        page: i64,
        decode_limit: usize,
    ) -> Result<RangeAll, ClientError> {
        let range_end = range_end.into();
        let mut next = key.into();
        let mut revision = revision;
        let mut page = page.max(1);
        let mut kvs = Vec::new();
        loop {
            let req = pb::RangeRequest {
                key: next.clone(),
                range_end: range_end.clone(),
                limit: page,
                revision,
                ..Default::default()
            };
            let resp = self
                .call_idempotent(|c| {
                    let req = req.clone();
                    async move {
                        Ok(c.kv()
                            .max_decoding_message_size(decode_limit)
                            .range(req)
                            .await?
                            .into_inner())
                    }
                })
                .await;
            let resp = match resp {
                Ok(resp) => resp,
                Err(ClientError::Rpc(status))
                    if page > 1 && status.message().contains("message length too large") =>
                {
                    page /= 2;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if revision == 0 {
                revision = resp.header.as_ref().map_or(0, |h| h.revision);
            }
            let more = resp.more;
            if let Some(last) = resp.kvs.last() {
                // The smallest key after the last one read.
                let mut after = last.key.to_vec();
                after.push(0);
                next = after.into();
            }
            kvs.extend(resp.kvs);
            if !more {
                return Ok(RangeAll { revision, kvs });
            }
        }
    }
}

/// tonic's default limit on a decoded answer.
const DEFAULT_DECODE_LIMIT: usize = 4 << 20;

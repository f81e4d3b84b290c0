//! The Watch service on [`Services`]: each stream's requests (create,
//! cancel, progress), checked against the auth rules when created and held
//! to the per-connection watcher bound, and its responses
//! ([`WatchResponses`]), which the store sends in batches already encoded
//! ([`crate::watch_wire`]).

use std::collections::HashSet;
use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use crate::auth::Access;
use crate::conn::Peer;
use crate::error::EtcdError;
use crate::mvcc::KeyRange;
use crate::proto::etcdserverpb as pb;
use crate::server::Services;
use crate::store::{WatchItem, WatchReceiver, WatchSpec, watch_channel};
use crate::watch_wire::{EncodedWatchResponse, Watch};

/// etcd's answer to a watch it will not create: created and canceled at
/// once, watch id -1, the reason as Go's gRPC library prints the status.
fn watch_refused(header: Option<pb::ResponseHeader>, e: &EtcdError) -> pb::WatchResponse {
    // etcd names these three; any other refusal is "permission denied".
    let reason = match e {
        EtcdError::InvalidAuthToken | EtcdError::UserEmpty | EtcdError::AuthOldRevision => {
            e.go_status_text()
        }
        _ => EtcdError::PermissionDenied.go_status_text(),
    };
    pb::WatchResponse {
        header,
        watch_id: -1,
        created: true,
        canceled: true,
        cancel_reason: reason,
        ..Default::default()
    }
}

/// A watch stream's responses. The store sends them in batches (one per
/// commit for all of the stream's watchers, see [`crate::store`]), so a
/// commit costs one channel send and one wakeup per stream, not per watcher.
pub struct WatchResponses {
    rx: WatchReceiver,
    batch: std::vec::IntoIter<EncodedWatchResponse>,
    ended: bool,
}

impl WatchResponses {
    fn new(rx: WatchReceiver) -> WatchResponses {
        WatchResponses {
            rx,
            batch: Vec::new().into_iter(),
            ended: false,
        }
    }
}

impl tokio_stream::Stream for WatchResponses {
    type Item = Result<EncodedWatchResponse, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        loop {
            if let Some(resp) = self.batch.next() {
                return std::task::Poll::Ready(Some(Ok(resp)));
            }
            if self.ended {
                return std::task::Poll::Ready(None);
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(WatchItem::Batch(batch, _)) => self.batch = batch.into_iter(),
                Some(WatchItem::Overflowed {
                    next_revision,
                    limit,
                }) => {
                    self.ended = true;
                    return std::task::Poll::Ready(Some(Err(Status::unavailable(format!(
                        "watch stream ended: its client fell more than {limit} bytes of events \
                         behind; its watches got every event before revision {next_revision}, \
                         watch again from there"
                    )))));
                }
                None => return std::task::Poll::Ready(None),
            }
        }
    }
}

#[tonic::async_trait]
impl Watch for Services {
    type WatchStream = WatchResponses;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        // Each watch is checked when created, with the stream's token (as
        // etcd: a token that expires later ends no watch already made).
        let metadata = request.metadata().clone();
        let peer = request.extensions().get::<Peer>().cloned();
        let conn = peer.as_ref().map(|p| Arc::clone(&p.conn));
        let mut inbound = request.into_inner();
        let (tx, rx) = watch_channel(self.options.watch_backlog_bytes);
        let svc = self.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let store = &svc.store;
            let stream = store.new_stream();
            let mut ids: HashSet<i64> = HashSet::new();
            let mut progress: HashSet<i64> = HashSet::new();
            let mut next_id: i64 = 0;
            let mut ticker = tokio::time::interval(svc.options.progress_notify_interval);
            ticker.tick().await;
            loop {
                // Answers wait for the client to read what it was sent.
                tokio::select! {
                    () = tx.drained() => {}
                    _ = stop.changed() => break,
                    _ = tx.closed() => break,
                }
                let req = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => req,
                        Ok(None) | Err(_) => break,
                    },
                    _ = ticker.tick() => {
                        let header = svc.committed_header();
                        for id in progress.iter().filter(|id| ids.contains(id)) {
                            let _ = tx.send(vec![pb::WatchResponse {
                                header,
                                watch_id: *id,
                                ..Default::default()
                            }.into()]);
                        }
                        continue;
                    }
                    _ = stop.changed() => break,
                    _ = tx.closed() => break,
                };
                use pb::watch_request::RequestUnion;
                match req.request_union {
                    Some(RequestUnion::CreateRequest(c)) => {
                        if let Err(e) = svc.caller_of(&metadata, peer.as_ref()).and_then(|caller| {
                            svc.store.lock().auth_committed.check(
                                &caller,
                                Access::Read,
                                &c.key,
                                &c.range_end,
                            )
                        }) {
                            let _ = tx.send(vec![watch_refused(svc.committed_header(), &e).into()]);
                            continue;
                        }
                        let id = if c.watch_id != 0 {
                            if ids.contains(&c.watch_id) {
                                let _ = tx.send(vec![
                                    pb::WatchResponse {
                                        header: svc.committed_header(),
                                        watch_id: c.watch_id,
                                        created: true,
                                        canceled: true,
                                        cancel_reason: EtcdError::DuplicateWatchId(c.watch_id)
                                            .to_string(),
                                        ..Default::default()
                                    }
                                    .into(),
                                ]);
                                continue;
                            }
                            c.watch_id
                        } else {
                            while ids.contains(&next_id) {
                                next_id += 1;
                            }
                            next_id
                        };
                        // torc's bound on one connection's watchers.
                        if let Some(conn) = &conn
                            && let Err(e) =
                                conn.take_watcher(svc.options.max_watchers_per_connection)
                        {
                            let _ = tx.send(vec![
                                pb::WatchResponse {
                                    header: svc.committed_header(),
                                    watch_id: id,
                                    created: true,
                                    canceled: true,
                                    cancel_reason: e.to_string(),
                                    ..Default::default()
                                }
                                .into(),
                            ]);
                            continue;
                        }
                        use pb::watch_create_request::FilterType;
                        let spec = WatchSpec {
                            range: KeyRange::new(c.key, c.range_end),
                            start_revision: c.start_revision,
                            prev_kv: c.prev_kv,
                            no_put: c.filters.contains(&(FilterType::Noput as i32)),
                            no_delete: c.filters.contains(&(FilterType::Nodelete as i32)),
                        };
                        if store.create_watch(stream, id, spec, &tx) {
                            ids.insert(id);
                            if c.progress_notify {
                                progress.insert(id);
                            }
                        } else if let Some(conn) = &conn {
                            conn.release_watchers(1);
                        }
                    }
                    Some(RequestUnion::CancelRequest(c))
                        if store.cancel_watch(stream, c.watch_id) =>
                    {
                        if ids.remove(&c.watch_id)
                            && let Some(conn) = &conn
                        {
                            conn.release_watchers(1);
                        }
                        progress.remove(&c.watch_id);
                        let _ = tx.send(vec![
                            pb::WatchResponse {
                                header: svc.committed_header(),
                                watch_id: c.watch_id,
                                canceled: true,
                                ..Default::default()
                            }
                            .into(),
                        ]);
                    }
                    // Canceling an unknown watch: etcd answers nothing.
                    Some(RequestUnion::CancelRequest(_)) => {}
                    Some(RequestUnion::ProgressRequest(_)) => {
                        // As etcd: not tied to one watch, so every watcher
                        // on the stream sees it (watch_id -1).
                        let _ = tx.send(vec![
                            pb::WatchResponse {
                                header: svc.committed_header(),
                                watch_id: -1,
                                ..Default::default()
                            }
                            .into(),
                        ]);
                    }
                    None => {}
                }
            }
            store.drop_stream(stream);
            if let Some(conn) = &conn {
                conn.release_watchers(ids.len());
            }
        });
        Ok(Response::new(WatchResponses::new(rx)))
    }
}

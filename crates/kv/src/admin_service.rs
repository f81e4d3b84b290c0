//! The Cluster and Maintenance services: what `etcdctl member list`,
//! `endpoint status`, `alarm list`, `alarm disarm` and `snapshot save` need (the NOSPACE
//! alarm of the storage quota, see `KvOptions::quota_backend_bytes`), root
//! only when auth is enabled (etcd release-3.4's rules); the rest answers
//! UNIMPLEMENTED on this single-node store. (Defragment among them: the
//! quota counts the data kept, which compaction frees at once, and redb
//! reuses the pages it frees.) `Snapshot` streams the store in etcd 3.4's
//! own format (see [`crate::snapshot`]): from one redb read transaction,
//! taken once redb holds every revision committed when it was asked for,
//! in chunks through a bounded channel (a client that reads slowly slows
//! the writing thread, not the server's memory), at most
//! [`MAX_SNAPSHOTS`](crate::store::MAX_SNAPSHOTS) at once.

use std::io::{self, Write};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::EtcdError;
use crate::proto::etcdserverpb as pb;
use crate::server::{Services, VERSION};

type ResponseStream<T> = ReceiverStream<Result<T, Status>>;

/// Bytes per `SnapshotResponse` (etcd sends 32 KiB).
const SNAPSHOT_CHUNK: usize = 64 * 1024;
/// Chunks queued ahead of the client.
const SNAPSHOT_QUEUE: usize = 4;
/// How long a snapshot waits for redb to catch up with the committed revision.
const SNAPSHOT_CATCH_UP: Duration = Duration::from_secs(30);

/// Sends what is written to it as `SnapshotResponse`s of [`SNAPSHOT_CHUNK`]
/// bytes, blocking while the channel is full.
struct ChunkSender {
    tx: mpsc::Sender<Result<pb::SnapshotResponse, Status>>,
    buf: Vec<u8>,
    /// Bytes of the whole snapshot not yet sent.
    remaining: u64,
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let blob = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        self.remaining = self.remaining.saturating_sub(blob.len() as u64);
        let resp = pb::SnapshotResponse {
            header: None,
            remaining_bytes: self.remaining,
            blob: blob.into(),
        };
        self.tx
            .blocking_send(Ok(resp))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkSender {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(SNAPSHOT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

fn unimplemented(method: &'static str) -> Status {
    EtcdError::Unimplemented(method).into()
}

impl Services {
    fn nospace_alarm(&self) -> bool {
        self.store.lock().core.nospace_alarm()
    }

    /// Maintenance and cluster administration: root only.
    fn check_admin<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let caller = self.caller(request)?;
        self.check_committed(|auth, _| auth.check_admin(&caller))
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for Services {
    async fn member_add(
        &self,
        _: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        Err(unimplemented("MemberAdd"))
    }

    async fn member_remove(
        &self,
        _: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        Err(unimplemented("MemberRemove"))
    }

    async fn member_update(
        &self,
        _: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        Err(unimplemented("MemberUpdate"))
    }

    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let caller = self.caller(&request)?;
        self.check_committed(|auth, _| auth.check_admin(&caller))?;
        // As etcd 3.4: the cluster's header carries no revision.
        Ok(Response::new(pb::MemberListResponse {
            header: self.header(0),
            members: vec![self.member()],
        }))
    }

    async fn member_promote(
        &self,
        _: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        Err(unimplemented("MemberPromote"))
    }
}

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for Services {
    type SnapshotStream = ResponseStream<pb::SnapshotResponse>;

    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        use pb::alarm_request::AlarmAction;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let ours = req.member_id == self.store.shared.member_id
            && req.alarm == pb::AlarmType::Nospace as i32;
        let member = pb::AlarmMember {
            member_id: self.store.shared.member_id,
            alarm: pb::AlarmType::Nospace as i32,
        };
        let alarms = match AlarmAction::try_from(req.action) {
            Ok(AlarmAction::Get) => {
                self.check_committed(|auth, _| auth.require_user(&caller))?;
                self.nospace_alarm().then_some(member).into_iter().collect()
            }
            // As etcd: the alarm named, for this member, if it changed.
            Ok(AlarmAction::Activate) => {
                self.check_committed(|auth, _| auth.check_admin(&caller))?;
                if req.alarm == pb::AlarmType::Corrupt as i32 {
                    return Err(unimplemented("the CORRUPT alarm"));
                }
                if ours && !self.nospace_alarm() {
                    self.raise_nospace().await;
                    vec![member]
                } else {
                    Vec::new()
                }
            }
            Ok(AlarmAction::Deactivate) => {
                self.check_committed(|auth, _| auth.check_admin(&caller))?;
                let (disarmed, _) = self
                    .store
                    .write(|core, _, _| {
                        if ours {
                            Ok(core.set_nospace_alarm(false))
                        } else {
                            Ok(crate::mvcc::Outcome {
                                response: false,
                                mutations: Vec::new(),
                            })
                        }
                    })
                    .await?;
                if disarmed {
                    tracing::info!("kv NOSPACE alarm disarmed");
                }
                disarmed.then_some(member).into_iter().collect()
            }
            Err(_) => return Err(Status::invalid_argument("unknown alarm action")),
        };
        Ok(Response::new(pb::AlarmResponse {
            header: self.committed_header(),
            alarms,
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.check_admin(&request)?;
        let db_size = std::fs::metadata(&self.store.shared.db_path)
            .map(|m| i64::try_from(m.len()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let (rev, in_use, nospace) = {
            let st = self.store.lock();
            (
                st.committed,
                st.core.space_in_use(),
                st.core.nospace_alarm(),
            )
        };
        // There is no raft log; the committed revision stands in for its
        // index so it still grows with every write.
        let index = u64::try_from(rev).unwrap_or(0);
        // As etcd: each alarm as Go prints its AlarmMember.
        let errors = if nospace {
            vec![format!(
                "memberID:{} alarm:NOSPACE ",
                self.store.shared.member_id
            )]
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::StatusResponse {
            header: self.header(rev),
            version: VERSION.into(),
            db_size,
            leader: self.store.shared.member_id,
            raft_index: index,
            raft_term: crate::store::RAFT_TERM,
            raft_applied_index: index,
            errors,
            // What the storage quota counts (see KvOptions::quota_backend_bytes).
            db_size_in_use: i64::try_from(in_use).unwrap_or(i64::MAX),
            is_learner: false,
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.check_admin(&request)?;
        Err(unimplemented("Defragment"))
    }

    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        self.check_admin(&request)?;
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        self.check_admin(&request)?;
        Err(unimplemented("HashKV"))
    }

    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        self.check_admin(&request)?;
        let shared = &self.store.shared;
        let slot = shared
            .snapshot_slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                Status::resource_exhausted(format!(
                    "kv: {} snapshots are being sent already; try again when one ends",
                    crate::store::MAX_SNAPSHOTS
                ))
            })?;
        // Everything acknowledged before this request is in the snapshot.
        let target = self.store.lock().committed;
        let mut applied = shared.applied.subscribe();
        match tokio::time::timeout(SNAPSHOT_CATCH_UP, applied.wait_for(|a| *a >= target)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Err(Status::unavailable("kv is closing")),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "kv snapshot: the store file did not catch up with revision {target} in \
                     {SNAPSHOT_CATCH_UP:?} (is the store refusing writes?)"
                )));
            }
        }
        let reader = shared
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| Status::unavailable("kv snapshot: the store file is closed"))?;
        let view = reader
            .view()
            .map_err(|e| Status::internal(format!("kv snapshot: {e}")))?;
        let (tx, rx) = mpsc::channel(SNAPSHOT_QUEUE);
        std::thread::Builder::new()
            .name("torc-kv-snapshot".into())
            .spawn(move || {
                let _slot = slot;
                let result = crate::snapshot::plan(&view).and_then(|plan| {
                    tracing::info!(
                        revision = plan.revision(),
                        bytes = plan.size(),
                        "kv sending a snapshot"
                    );
                    let mut out = ChunkSender {
                        tx: tx.clone(),
                        buf: Vec::with_capacity(SNAPSHOT_CHUNK),
                        remaining: plan.size(),
                    };
                    crate::snapshot::write(&view, &plan, &mut out)?;
                    out.flush().map_err(crate::snapshot::SnapshotError::Write)
                });
                if let Err(e) = result {
                    tracing::warn!(error = %e, "kv snapshot not sent");
                    let _ = tx.blocking_send(Err(Status::internal(format!("kv snapshot: {e}"))));
                }
            })
            .map_err(|e| Status::internal(format!("kv snapshot: starting its thread: {e}")))?;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.check_admin(&request)?;
        Err(unimplemented("MoveLeader"))
    }
}

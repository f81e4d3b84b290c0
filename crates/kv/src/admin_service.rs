//! The Cluster and Maintenance services: what `etcdctl member list`,
//! `endpoint status`, `alarm list` and `alarm disarm` need (the NOSPACE
//! alarm of the storage quota, see `KvOptions::quota_backend_bytes`), root
//! only when auth is enabled (etcd release-3.4's rules); the rest answers
//! UNIMPLEMENTED on this single-node store. (Defragment among them: the
//! quota counts the data kept, which compaction frees at once, and redb
//! reuses the pages it frees.)

use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::EtcdError;
use crate::proto::etcdserverpb as pb;
use crate::server::{Services, VERSION};

type ResponseStream<T> = UnboundedReceiverStream<Result<T, Status>>;

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
        Err(unimplemented("Snapshot"))
    }

    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.check_admin(&request)?;
        Err(unimplemented("MoveLeader"))
    }
}

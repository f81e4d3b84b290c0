//! The Cluster and Maintenance services: what `etcdctl member list`,
//! `endpoint status` and `alarm list` need, root only when auth is enabled
//! (etcd release-3.4's rules); the rest answers UNIMPLEMENTED on this
//! single-node store.

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
        Ok(Response::new(pb::MemberListResponse {
            header: self.committed_header(),
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
        if request.into_inner().action != AlarmAction::Get as i32 {
            self.check_committed(|auth, _| auth.check_admin(&caller))?;
            return Err(unimplemented("activating or deactivating alarms"));
        }
        self.check_committed(|auth, _| auth.require_user(&caller))?;
        // torc kv raises no alarms: a storage failure refuses writes with an
        // error saying so instead.
        Ok(Response::new(pb::AlarmResponse {
            header: self.committed_header(),
            alarms: Vec::new(),
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
        let rev = self.store.lock().committed;
        // There is no raft log; the committed revision stands in for its
        // index so it still grows with every write.
        let index = u64::try_from(rev).unwrap_or(0);
        Ok(Response::new(pb::StatusResponse {
            header: self.header(rev),
            version: VERSION.into(),
            db_size,
            leader: self.store.shared.member_id,
            raft_index: index,
            raft_term: crate::store::RAFT_TERM,
            raft_applied_index: index,
            errors: Vec::new(),
            db_size_in_use: db_size,
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

//! The KV and Lease services over a [`Store`], and [`KvServer`], the public
//! entry point that opens a data directory and serves a bound listener until
//! a shutdown future resolves (with the Watch service from `watch_wire`, the
//! Auth service from `auth_service` and Cluster and Maintenance from
//! `admin_service`; connections are `crate::conn`'s).
//!
//! This module only translates between the wire and the store: request size
//! limits, response headers, keep-alive streams, the per-connection lease
//! bound, and raising the NOSPACE alarm when the store refuses a write for
//! space. The data rules
//! live in [`crate::mvcc`], the auth rules in [`crate::auth`] (every method
//! here asks them, for the caller `auth_service` names, before acting),
//! durability in [`crate::store`] and [`crate::storage`].

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::auth::password::Passwords;
use crate::auth::token::Tokens;
use crate::auth::{Access, ROOT_USER};
use crate::conn::{ConnOptions, Peer};
use crate::counters::Counters;
use crate::error::{Error, EtcdError};
use crate::metrics::KvMetrics;
use crate::mvcc::{Limits, Mutation, Outcome};
use crate::proto::etcdserverpb as pb;
use crate::store::{OpenError, Store};
use crate::tls::ServerTls;

/// The version reported by Maintenance.Status: the etcd API level served, and
/// that it is torc's implementation.
pub const VERSION: &str = "3.4.0-torc";

/// Name of the database file inside the data directory.
pub const DB_FILE: &str = "kv.redb";

/// Tunables; `Default` matches etcd's defaults where etcd has one.
#[derive(Clone, Debug)]
pub struct KvOptions {
    /// Member name reported by MemberList (etcd's `--name`).
    pub name: String,
    /// The peer URLs MemberList reports (etcd's
    /// `--initial-advertise-peer-urls`). torc kv has no peers and listens on
    /// none of them; they are reported so that tools reading the member
    /// list see what an etcd member shows.
    pub peer_urls: Vec<String>,
    /// Automatic compaction keeps this many latest revisions readable (0:
    /// never compact automatically). It runs in small steps after every
    /// commit, so older revisions are dropped as soon as they leave the window.
    pub retain_revisions: u64,
    /// Largest accepted request (etcd `--max-request-bytes`).
    pub max_request_bytes: usize,
    /// Most operations per txn branch (etcd `--max-txn-ops`).
    pub max_txn_ops: usize,
    /// Most bytes of keys and values a Range (or a txn's ranges together)
    /// answers with; past it the Range is refused, naming the setting
    /// (torc's own bound: etcd answers up to gRPC's 2 GiB).
    pub max_range_bytes: usize,
    /// Most keys a Range (or a txn's ranges together) answers with; a
    /// Range with a `limit` up to this is never refused for its count.
    pub max_range_keys: usize,
    /// The storage quota (etcd's `--quota-backend-bytes`, 0: none): a
    /// write that would bring the data in use to it raises the NOSPACE
    /// alarm and is refused with `mvcc: database space exceeded`; so is
    /// every write that adds data until `etcdctl alarm disarm`. torc counts
    /// what etcd's quota estimates count for the data kept (every retained
    /// version and lease), not the file, so compaction alone frees space.
    pub quota_backend_bytes: u64,
    /// Interval of progress notifications to watchers that asked for them.
    pub progress_notify_interval: Duration,
    /// Most bytes of events a watch stream may have waiting for its client.
    /// Past it the stream ends with UNAVAILABLE, naming the first revision
    /// its watches did not get; etcd's clients then watch again from there by
    /// themselves. (etcd instead parks such watchers and replays history to
    /// them later; either way no event is lost, and the server's memory stays
    /// bounded when a client stops reading.)
    pub watch_backlog_bytes: usize,
    /// How often expired leases are looked for (etcd checks every 500 ms).
    pub lease_check_interval: Duration,
    /// How long an auth token stays valid after its last use (etcd's
    /// `--auth-token-ttl`).
    pub auth_token_ttl: Duration,
    /// bcrypt's cost for password hashes (etcd's `--bcrypt-cost`).
    pub bcrypt_cost: u32,
    /// Most password hashes or checks at once (each takes a core for tens
    /// of milliseconds; see [`crate::auth::password`]).
    pub password_checks: usize,
    /// Longest a client may take over its TLS handshake (see [`crate::tls`]),
    /// and, TLS or not, to send the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// Most client connections open at once.
    pub max_connections: usize,
    /// Most client connections open at once from one IP address.
    pub max_connections_per_source: usize,
    /// A connection with no call in flight and no stream open this long is
    /// closed with a GOAWAY (clients reconnect when they next need to).
    pub idle_timeout: Duration,
    /// Most calls (HTTP/2 streams) open at once on one connection (etcd's
    /// `--max-concurrent-streams`).
    pub max_concurrent_streams: u32,
    /// Most watchers open at once over one connection (torc's own bound;
    /// etcd has none).
    pub max_watchers_per_connection: usize,
    /// Most leases one connection may hold: granted through it and not yet
    /// revoked or expired (torc's own bound; etcd has none).
    pub max_leases_per_connection: usize,
    /// A connection silent this long is pinged (etcd's
    /// `--grpc-keepalive-interval`) ...
    pub keepalive_interval: Duration,
    /// ... and closed if the ping is not answered within this
    /// (`--grpc-keepalive-timeout`).
    pub keepalive_timeout: Duration,
}

impl Default for KvOptions {
    fn default() -> Self {
        let accept = torc_tls::AcceptOptions::default();
        KvOptions {
            name: "torc-kv".into(),
            // etcd's default.
            peer_urls: vec!["http://localhost:2380".into()],
            retain_revisions: 10_000,
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
            max_range_bytes: crate::mvcc::DEFAULT_MAX_RANGE_BYTES,
            max_range_keys: crate::mvcc::DEFAULT_MAX_RANGE_KEYS,
            quota_backend_bytes: crate::mvcc::DEFAULT_QUOTA_BYTES,
            progress_notify_interval: Duration::from_secs(600),
            watch_backlog_bytes: 16 << 20,
            lease_check_interval: Duration::from_millis(500),
            auth_token_ttl: crate::auth::token::DEFAULT_TTL,
            bcrypt_cost: crate::auth::password::DEFAULT_COST,
            password_checks: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
            // The accept path's defaults, as every torc server's.
            handshake_timeout: accept.handshake_timeout,
            max_connections: accept.max_connections,
            max_connections_per_source: accept.max_per_source,
            idle_timeout: Duration::from_secs(300),
            max_concurrent_streams: 1024,
            max_watchers_per_connection: 10_000,
            max_leases_per_connection: 10_000,
            // etcd 3.4's defaults.
            keepalive_interval: Duration::from_secs(2 * 3600),
            keepalive_timeout: Duration::from_secs(20),
        }
    }
}

/// How long connections get to finish once shutdown begins.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A single-node store speaking the etcd v3 gRPC API.
pub struct KvServer {
    store: Store,
    commit_thread: std::thread::JoinHandle<()>,
    options: KvOptions,
    auth: Arc<AuthRuntime>,
}

/// What the services share about auth besides the durable state: tokens
/// (in memory only) and password hashing.
pub(crate) struct AuthRuntime {
    pub tokens: Tokens,
    pub passwords: Arc<Passwords>,
}

/// What [`KvServer::bootstrap_root`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootBootstrap {
    /// It created `root` (with the `root` role) and enabled auth.
    Created,
    /// A `root` user existed; nothing was changed.
    RootExists,
}

impl KvServer {
    /// Opens (or creates) the store in `data_dir` and loads it.
    pub fn open(data_dir: &Path, options: KvOptions) -> Result<KvServer, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::CreateDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let limits = Limits {
            max_txn_ops: options.max_txn_ops,
            max_range_bytes: options.max_range_bytes,
            max_range_keys: options.max_range_keys,
            quota_bytes: options.quota_backend_bytes,
        };
        let (store, commit_thread) =
            Store::open(&path, limits, options.retain_revisions).map_err(|e| match e {
                OpenError::Storage(source) => Error::Storage { path, source },
                OpenError::Thread(e) => Error::Thread(e),
                OpenError::Random(reason) => Error::Random(reason),
            })?;
        let auth = Arc::new(AuthRuntime {
            tokens: Tokens::new(options.auth_token_ttl),
            passwords: Passwords::new(options.bcrypt_cost, options.password_checks),
        });
        Ok(KvServer {
            store,
            commit_thread,
            options,
            auth,
        })
    }

    /// A handle that renders this store's `/metrics` (etcd's names; see [`KvMetrics`]), valid
    /// while the store runs.
    pub fn metrics(&self) -> KvMetrics {
        KvMetrics {
            store: self.store.clone(),
            quota_bytes: self.options.quota_backend_bytes,
        }
    }

    /// torc's bootstrap of a rack's store (`torc kv --root-password-file`):
    /// if there is no `root` user, creates it with `password` and the `root`
    /// role and enables auth, durably, in one change; if there is one,
    /// changes nothing.
    pub async fn bootstrap_root(&self, password: String) -> Result<RootBootstrap, Error> {
        if self.store.lock().auth.user(ROOT_USER).is_some() {
            return Ok(RootBootstrap::RootExists);
        }
        let hash = self
            .auth
            .passwords
            .hash(password)
            .await
            .map_err(Error::Bootstrap)?;
        let (created, _) = self
            .store
            .write(|_, auth, _| {
                if auth.user(ROOT_USER).is_some() {
                    return Ok(Outcome {
                        response: RootBootstrap::RootExists,
                        mutations: Vec::new(),
                    });
                }
                let mutations = Arc::make_mut(auth).bootstrap_root(hash);
                Ok(Outcome {
                    response: RootBootstrap::Created,
                    mutations: mutations.into_iter().map(Mutation::Auth).collect(),
                })
            })
            .await
            .map_err(Error::Bootstrap)?;
        Ok(created)
    }

    /// Serves the etcd API in plain text on `listener` until `shutdown`
    /// resolves, then ends open streams, finishes queued writes and closes
    /// the database. Connections get [`SHUTDOWN_GRACE`] to finish; a client
    /// that stopped reading would otherwise hold the shutdown forever.
    /// `advertise_url` is the client URL MemberList reports.
    pub async fn serve(
        self,
        listener: TcpListener,
        advertise_url: String,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        self.serve_on(listener, None, advertise_url, shutdown).await
    }

    /// [`KvServer::serve`] over TLS only (etcd with `https://` client URLs):
    /// see [`crate::tls`]. `advertise_url` should be `https://...`.
    pub async fn serve_tls(
        self,
        listener: TcpListener,
        tls: ServerTls,
        advertise_url: String,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        self.serve_on(listener, Some(tls), advertise_url, shutdown)
            .await
    }

    /// Serves connections from `listener` (over `tls` if given), accepted by
    /// torc-tls's shared accept path under the connection caps and served
    /// by `crate::conn`.
    async fn serve_on(
        self,
        listener: TcpListener,
        tls: Option<ServerTls>,
        advertise_url: String,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let options = &self.options;
        let incoming = torc_tls::incoming(
            listener,
            tls.as_ref().map(ServerTls::config),
            torc_tls::AcceptOptions {
                handshake_timeout: options.handshake_timeout,
                max_connections: options.max_connections,
                max_per_source: options.max_connections_per_source,
            },
        );
        let conn_options = ConnOptions {
            preface_timeout: options.handshake_timeout,
            idle_timeout: options.idle_timeout,
            max_concurrent_streams: options.max_concurrent_streams,
            keepalive_interval: options.keepalive_interval,
            keepalive_timeout: options.keepalive_timeout,
            cert_names: tls.as_ref().is_some_and(ServerTls::client_cert_auth),
        };
        let KvServer {
            store,
            commit_thread,
            options,
            auth,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let max_decode = options.max_request_bytes + 512 * 1024;
        let svc = Services {
            store: store.clone(),
            options: Arc::new(options.clone()),
            advertise_url: Arc::new(advertise_url),
            cert_names_users: conn_options.cert_names,
            stop: stop_rx.clone(),
            auth,
        };

        let expiry_store = store.clone();
        let mut expiry_stop = stop_rx.clone();
        let check_every = options.lease_check_interval;
        let expiry = tokio::spawn(async move {
            let mut tick = tokio::time::interval(check_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => expiry_store.expire_leases(Instant::now()).await,
                    _ = expiry_stop.changed() => break,
                }
            }
        });

        let routes = tonic::service::Routes::new(
            pb::kv_server::KvServer::new(svc.clone()).max_decoding_message_size(max_decode),
        )
        .add_service(
            crate::watch_wire::WatchServer::new(svc.clone()).max_decoding_message_size(max_decode),
        )
        .add_service(
            pb::lease_server::LeaseServer::new(svc.clone()).max_decoding_message_size(max_decode),
        )
        .add_service(pb::cluster_server::ClusterServer::new(svc.clone()))
        .add_service(pb::auth_server::AuthServer::new(svc.clone()))
        .add_service(pb::maintenance_server::MaintenanceServer::new(svc));
        let served = crate::conn::serve(incoming, routes, conn_options, stop_rx);
        tokio::pin!(served);
        tokio::select! {
            () = &mut served => {}
            () = shutdown => {
                let _ = stop_tx.send(true);
                // Watchers hold the senders of their streams' responses; drop
                // them so graceful shutdown is not held up by open watches.
                store.drop_all_watchers();
                if tokio::time::timeout(SHUTDOWN_GRACE, &mut served).await.is_err() {
                    tracing::warn!(
                        "clients still connected {} s after shutdown began; closing their connections",
                        SHUTDOWN_GRACE.as_secs()
                    );
                }
            }
        }
        expiry.abort();
        store.close();
        drop(store);
        let _ = tokio::task::spawn_blocking(move || commit_thread.join()).await;
        Ok(())
    }
}

#[derive(Clone)]
pub(crate) struct Services {
    pub(crate) store: Store,
    pub(crate) options: Arc<KvOptions>,
    advertise_url: Arc<String>,
    /// `--client-cert-auth`: a client certificate's common name is the
    /// user of a request without a token.
    pub(crate) cert_names_users: bool,
    pub(crate) stop: watch::Receiver<bool>,
    pub(crate) auth: Arc<AuthRuntime>,
}

impl Services {
    fn check_size<M: prost::Message>(&self, m: &M) -> Result<(), Status> {
        if m.encoded_len() > self.options.max_request_bytes {
            return Err(EtcdError::RequestTooLarge.into());
        }
        Ok(())
    }

    /// A write that may add data ([`Store::write`]): when the store
    /// refuses it for space, the NOSPACE alarm is raised (durably, as
    /// etcd's) before the refusal is answered.
    async fn write_data<T>(
        &self,
        f: impl FnOnce(
            &mut crate::mvcc::Core,
            &mut Arc<crate::auth::AuthState>,
            i64,
        ) -> Result<Outcome<T>, EtcdError>,
    ) -> Result<(T, i64), EtcdError> {
        match self.store.write(f).await {
            Err(EtcdError::NoSpace) => {
                self.raise_nospace().await;
                Err(EtcdError::NoSpace)
            }
            done => done,
        }
    }

    /// Raises the NOSPACE alarm if it is not raised yet, and says so once.
    pub(crate) async fn raise_nospace(&self) {
        let raised = self
            .store
            .write(|core, _, _| Ok(core.set_nospace_alarm(true)))
            .await;
        match raised {
            Ok((true, _)) => {
                let in_use = self.store.lock().core.space_in_use();
                tracing::warn!(
                    in_use,
                    quota = self.options.quota_backend_bytes,
                    "kv storage quota (--quota-backend-bytes) reached: NOSPACE alarm raised; \
                     writes that add data are refused until space is freed (delete, compact) \
                     and `etcdctl alarm disarm`, or the quota is raised"
                );
            }
            Ok((false, _)) => {}
            Err(e) => tracing::warn!(error = %e, "raising the NOSPACE alarm failed"),
        }
    }

    pub(crate) fn header(&self, revision: i64) -> Option<pb::ResponseHeader> {
        Some(self.store.header(revision))
    }

    pub(crate) fn committed_header(&self) -> Option<pb::ResponseHeader> {
        let rev = self.store.lock().committed;
        self.header(rev)
    }

    pub(crate) fn member(&self) -> pb::Member {
        pb::Member {
            id: self.store.shared.member_id,
            name: self.options.name.clone(),
            peer_ur_ls: self.options.peer_urls.clone(),
            client_ur_ls: vec![self.advertise_url.to_string()],
            is_learner: false,
        }
    }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for Services {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        // etcd checks a request's shape before who sent it.
        if request.get_ref().key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req)?;
        Counters::count(&self.store.shared.counters.ranges);
        let (mut resp, rev) = {
            let st = self.store.lock();
            st.auth_committed
                .check(&caller, Access::Read, &req.key, &req.range_end)?;
            (st.core.range(&req, st.committed)?, st.committed)
        };
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        crate::mvcc::check_put_shape(request.get_ref())?;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req)?;
        Counters::count(&self.store.shared.counters.puts);
        let (mut resp, rev) = self
            .write_data(|core, auth, _| {
                auth.check_put(&caller, &req, core)?;
                core.put(&req)
            })
            .await?;
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        if request.get_ref().key.is_empty() {
            return Err(EtcdError::EmptyKey.into());
        }
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req)?;
        Counters::count(&self.store.shared.counters.deletes);
        let (mut resp, rev) = self
            .store
            .write(|core, auth, _| {
                auth.check_delete(&caller, &req)?;
                core.delete_range(&req)
            })
            .await?;
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        crate::mvcc::check_txn_shape(request.get_ref(), self.options.max_txn_ops)?;
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req)?;
        Counters::count(&self.store.shared.counters.txns);
        let (mut resp, rev) = self
            .write_data(|core, auth, _| {
                auth.check_txn(&caller, &req, core)?;
                core.txn(&req)
            })
            .await?;
        resp.header = self.header(rev);
        Ok(Response::new(resp))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let (_, rev) = self
            .store
            .write(|core, auth, committed| {
                auth.check_admin(&caller)?;
                core.compact(req.revision, committed)
            })
            .await?;
        Ok(Response::new(pb::CompactionResponse {
            header: self.header(rev),
        }))
    }
}

#[tonic::async_trait]
impl pb::lease_server::Lease for Services {
    type LeaseKeepAliveStream =
        tokio_stream::wrappers::ReceiverStream<Result<pb::LeaseKeepAliveResponse, Status>>;

    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let caller = self.caller(&request)?;
        let conn = request
            .extensions()
            .get::<Peer>()
            .map(|p| Arc::clone(&p.conn));
        let req = request.into_inner();
        // torc's bound on the leases one connection holds.
        if let Some(conn) = &conn {
            conn.take_lease(self.options.max_leases_per_connection, |id| {
                self.store.lock().core.has_lease(id)
            })?;
        }
        let granted = self
            .write_data(|core, auth, _| {
                auth.require_user(&caller)?;
                core.lease_grant(req.id, req.ttl, Instant::now())
            })
            .await;
        if let Some(conn) = &conn {
            conn.granted(granted.as_ref().ok().map(|((id, _), _)| *id));
        }
        let ((id, ttl), rev) = granted?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: self.header(rev),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.caller(&request)?;
        let id = request.into_inner().id;
        let (_, rev) = self
            .store
            .write(|core, auth, _| {
                auth.require_user(&caller)?;
                auth.check_lease(&caller, Access::Write, id, core)?;
                core.lease_revoke(id)
            })
            .await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: self.header(rev),
        }))
    }

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let metadata = request.metadata().clone();
        let peer = request.extensions().get::<Peer>().cloned();
        let mut inbound = request.into_inner();
        // Bounded: a client that sends keep-alives without reading the
        // answers stops being read from, rather than queueing answers.
        let (tx, rx) = mpsc::channel(64);
        let svc = self.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            loop {
                let req = tokio::select! {
                    msg = inbound.message() => match msg {
                        Ok(Some(req)) => req,
                        Ok(None) | Err(_) => break,
                    },
                    _ = stop.changed() => break,
                };
                // As etcd: root, or write on every key of the lease; a
                // refusal ends the stream.
                let renewed = svc.caller_of(&metadata, peer.as_ref()).and_then(|caller| {
                    let mut st = svc.store.lock();
                    st.auth_committed.require_user(&caller)?;
                    st.auth_committed
                        .check_lease(&caller, Access::Write, req.id, &st.core)?;
                    let ttl = st.core.lease_keep_alive(req.id, Instant::now());
                    Ok((ttl, st.committed))
                });
                let (ttl, rev) = match renewed {
                    Ok(renewed) => renewed,
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        break;
                    }
                };
                let resp = pb::LeaseKeepAliveResponse {
                    header: svc.header(rev),
                    id: req.id,
                    // etcd answers an unknown lease with TTL 0.
                    ttl: ttl.unwrap_or(0),
                };
                tokio::select! {
                    sent = tx.send(Ok(resp)) => if sent.is_err() { break },
                    _ = stop.changed() => break,
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let (info, rev) = {
            let st = self.store.lock();
            st.auth_committed.require_user(&caller)?;
            if req.keys {
                st.auth_committed
                    .check_lease(&caller, Access::Read, req.id, &st.core)?;
            }
            (
                st.core.lease_time_to_live(req.id, Instant::now()),
                st.committed,
            )
        };
        let resp = match info {
            Some(info) => pb::LeaseTimeToLiveResponse {
                header: self.header(rev),
                id: req.id,
                ttl: info.remaining,
                granted_ttl: info.granted_ttl,
                keys: if req.keys { info.keys } else { Vec::new() },
            },
            // etcd: an unknown (or expired) lease has TTL -1.
            None => pb::LeaseTimeToLiveResponse {
                header: self.header(rev),
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let caller = self.caller(&request)?;
        let (ids, rev) = {
            let st = self.store.lock();
            st.auth_committed.require_user(&caller)?;
            let ids = st.core.lease_ids();
            // Root, or read on every key of every lease.
            for id in &ids {
                st.auth_committed
                    .check_lease(&caller, Access::Read, *id, &st.core)?;
            }
            (ids, st.committed)
        };
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: self.header(rev),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}

//! torc's key-value store: a single-node store that speaks the etcd v3 gRPC
//! API (KV, Watch, Lease, Auth, and enough of Cluster and Maintenance for
//! `etcdctl member list`, `endpoint status` and `snapshot save`), so etcd's own clients
//! use it unchanged. It replaces etcd as the rack's "state soup".
//!
//! What it is not: a cluster. There is one member and no raft; the
//! cluster-changing and most maintenance methods answer UNIMPLEMENTED.
//!
//! Code map:
//! - [`mvcc`]: the data model (revisions, versions, tombstones, txn, leases,
//!   compaction) as a pure in-memory core with no I/O, its bounds (the
//!   storage quota and its alarm, a Range's answer), and etcd 3.4's rules
//!   for a Range's order and limit and for keys written twice in a txn.
//! - [`auth`]: etcd's authentication and authorization (users, roles,
//!   key-range permissions, the root user; tokens; bcrypt passwords), the
//!   rules pure, checked by every service.
//! - [`wal`]: the write-ahead log that makes each group commit durable before
//!   it is acknowledged.
//! - [`storage`]: the redb file the core and the auth state are persisted to
//!   (behind the log) and restored from.
//! - [`snapshot`]: etcd 3.4's snapshot format (a bbolt database with etcd's
//!   buckets and a sha256 trailer), written from a read transaction of the
//!   redb file for the Maintenance `Snapshot` RPC, and read back by
//!   `torc kv restore` (from torc or from a real etcd) into a new data dir.
//! - `store`: the core and the auth state behind a lock, the group-commit
//!   and apply threads, watchers.
//! - `server`: the KV and Lease services and [`KvServer`], the entry
//!   point; `auth_service`: the Auth service and who a caller is;
//!   `admin_service`: Cluster and Maintenance (alarms included).
//! - `watch_wire`: watch responses encoded once per commit, shared by
//!   watchers, and the gRPC Watch server over them; `watch_service`: the
//!   Watch service that sends them (streams, auth checks, watcher bound).
//! - `conn`: serving connections from torc-tls's shared accept path (caps
//!   in all and per source address, TLS handshakes with a deadline) as
//!   HTTP/2 connections, each with its own state (the limits per
//!   connection), a preface deadline and an idle timeout.
//! - `authority`: lets h2 accept a URL as `:authority` (etcdctl sends one);
//!   holds back at most one HEADERS frame of the largest accepted size.
//! - [`tls`]: TLS as etcd serves it (`--cert-file`, `--key-file`,
//!   `--trusted-ca-file`, `--client-cert-auth`: a client certificate's common
//!   name as the user of requests without a token), terminated in front of
//!   `authority`.
//! - [`proto`]: kv's on-disk records; the etcd v3 messages and the service
//!   traits implemented here, the gRPC codec (prost's, with buffers sized for
//!   etcd's small messages) and the client the rest of torc uses are
//!   `torc-kv-client`'s, which this crate builds on.
//! - `metrics`: the store's figures for `/metrics` under etcd 3.4's names
//!   ([`KvMetrics`]); `counters`, what the services and the commit thread
//!   count for it.
//! - `fuzzing`: the checks of the fuzz targets `kv-request` and
//!   `kv-authority` (`tests/fuzz.rs`, `scripts/fuzz`).
//!
//! Invariants kept across modules:
//! - A write is acknowledged only after it is durable (in the write-ahead
//!   log, fdatasync'd), and nothing is visible to reads or watches before it
//!   is durable. redb catches up behind the log; opening replays the log
//!   records redb lacks. Auth changes are writes like any other.
//! - With auth enabled, no request is served before the auth rules allowed
//!   it, checked against the durable auth state (reads, watches) or against
//!   the latest one under the same lock as the write (writes).
//! - After a failed commit the store refuses writes (fails closed).
//! - The on-disk format carries a version; unknown versions are refused.
//! - Bytes from the network or disk never cause a panic; bad requests get
//!   etcd's own gRPC status codes and messages ([`EtcdError`]).
//! - What a client can make the server hold is bounded: connections (in all
//!   and per source address), streams, watchers and leases per connection,
//!   a header block, a Range's answer, and the data kept (the quota); a
//!   refusal names the setting that raises its bound, or is etcd's own.

mod admin_service;
pub mod auth;
mod auth_service;
mod authority;
mod awake;
mod conn;
mod counters;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
mod metrics;
pub mod mvcc;
mod server;
pub mod snapshot;
pub mod storage;
mod store;
pub mod tls;
pub mod wal;
mod watch_service;
mod watch_wire;

pub use error::{Error, EtcdError, StorageError};
pub use metrics::KvMetrics;
pub use server::{DB_FILE, KvOptions, KvServer, RootBootstrap, SHUTDOWN_GRACE, VERSION};
pub use tls::ServerTls;

/// kv's on-disk records (`proto/torc/kv/storage.proto`, compiled by
/// `build.rs`). The etcd v3 wire code is `torc_kv_client::proto`'s; its
/// modules are named here for this crate's own use only (as
/// `crate::proto::etcdserverpb`), not re-exported.
pub mod proto {
    pub(crate) use torc_kv_client::proto::{authpb, etcdserverpb, mvccpb};
    /// On-disk records; not a wire API.
    pub mod torc {
        pub mod kv {
            pub mod storage {
                tonic::include_proto!("torc.kv.storage");
            }
        }
    }
}

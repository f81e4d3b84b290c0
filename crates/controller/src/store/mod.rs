//! The controller's durable state behind one trait, [`Store`]: nodes, tasks, service instances,
//! frameworks, announced tasks, credentials' metadata and hashes, rack secrets (and the
//! task-token key, as they are), and counters (`meta`).
//!
//! Records are JSON documents keyed by name or id, in the tables of [`Table`]. The controller
//! reads everything once (`load`) and then persists each change as one batch of [`Write`]s
//! (`commit`), atomic and durable before the change is acknowledged.
//!
//! Implementations: [`RedbStore`] (`redb`, one local file, the default) and [`EtcdStore`] (a
//! real etcd v3 cluster, issue 18, docs/design/ha-controller.md §3–§5: one key per record
//! under a prefix, each commit one Txn fenced by the leadership it acts under). Both pass the
//! same suite (`conformance`, run by each implementation's tests).
//!
//! The store owns the **epoch**: the number of the writer's life, which orders controller
//! starts (redb: `meta/epoch`, bumped at each open) and leaders (etcd: the create revision of
//! the leader's election key). It never goes down and is at least 1 while the store may be
//! written (an etcd store that follows has none: 0). Documents the controller numbers for long
//! polls carry it (`published`), and every commit names the epoch its caller acts under
//! (`fence`): a store refuses a batch of another epoch, writing nothing (`NotLeader`).
//!
//! Invariants (every implementation):
//! - `commit` returns `Ok` only once the whole batch is durable (redb: fsynced; etcd:
//!   committed by the cluster), and a `load` sees a batch whole or not at all.
//! - After `NotLeader`, `TooLarge` or `Refused`, nothing of the batch was written, and the
//!   store still takes commits (a smaller batch, or the right epoch, can succeed).
//! - Fails closed after a commit that failed once sent, by what the store can know:
//!   - redb (`Write`): the transaction was aborted, so nothing was kept; the store refuses
//!     every later commit (`Poisoned`) until the controller restarts. But when its only
//!     failures were writes refused for want of space (`NoSpace`, no failed sync), the store
//!     opens its file again and takes the next commit (`store/redb.rs` says why that is safe).
//!   - etcd (`Unknown`: the deadline passed or the connection broke after sending): the batch
//!     may or may not have landed; the store refuses commits (`Unsettled`) until a successful
//!     `load`, which shows the batch whole or not at all.
//! - Stored data carries a format version; an unknown version is refused at open.
//!
//! `layout` is where the etcd store keeps each record (pure keys); `seal` seals the secrets
//! it stores; `mirror` is the warm copy of the prefix every controller keeps (§6.1).
//!
//! Later (issue 18, not here yet): the controller's role (leader, lapsed, standby) over these
//! pieces (the election, keepalive and mirror on the store's `torc-etcd` thread), handing
//! leadership over, and the status of the backend.

pub(crate) mod etcd;
pub mod layout;
mod mirror;
mod redb;
pub mod seal;

#[cfg(test)]
pub(crate) mod conformance;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use etcd::{EtcdOptions, EtcdStore};
pub use mirror::{Mirror, MirrorError};
pub use redb::RedbStore;
#[cfg(test)]
pub(crate) use torc_durable::redb_backend::Injected;

/// The number of a writer's life: bumped durably at each start (redb), the leader key's create
/// revision (etcd), so it orders starts and leaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The controller's durable records.
///
/// `Box<dyn Store>` in the controller: the backend is chosen at run time (a flag, later), and a
/// type parameter would reach every handler's state for nothing (a call through a vtable is
/// nothing beside a commit's fsync).
pub trait Store: Send + Sync + 'static {
    /// Every record and counter, as of one consistent point.
    fn load(&self) -> Result<Loaded, StoreError>;

    /// The epoch this store's writer acts under (redb: `meta/epoch`, bumped at open; etcd:
    /// the current leadership's, 0 while following).
    fn epoch(&self) -> Epoch;

    /// Whether a commit may be tried now (`Poisoned`, `Unsettled` after a failed one; etcd:
    /// `NotLeader` while following). The write path asks before it changes the rack, so that
    /// a refused change leaves the rack as it was.
    fn writable(&self) -> Result<(), StoreError>;

    /// Persists `writes` atomically, in order (a later write to a key wins); `Ok` only once
    /// durable, and only under the epoch `fence` (another epoch: `NotLeader`, nothing written).
    /// A commit that failed once sent fails the store closed (see the module doc). An empty
    /// batch commits nothing and succeeds unless the store refuses writes.
    fn commit(&self, fence: Epoch, writes: &[Write]) -> Result<(), StoreError>;
}

/// A store shared with the role driver (the etcd store of a controller of several).
impl<S: Store + ?Sized> Store for std::sync::Arc<S> {
    fn load(&self) -> Result<Loaded, StoreError> {
        (**self).load()
    }

    fn epoch(&self) -> Epoch {
        (**self).epoch()
    }

    fn writable(&self) -> Result<(), StoreError> {
        (**self).writable()
    }

    fn commit(&self, fence: Epoch, writes: &[Write]) -> Result<(), StoreError> {
        (**self).commit(fence, writes)
    }
}

/// The record tables, each mapping a name or id to a JSON document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Nodes,
    Tasks,
    Services,
    Frameworks,
    Announced,
    /// Tokens' metadata and hashes (`auth::Keys`).
    Credentials,
    /// Named rack secrets and the task-token key (`auth::Keys`).
    Secrets,
}

impl Table {
    pub const ALL: [Table; 7] = [
        Table::Nodes,
        Table::Tasks,
        Table::Services,
        Table::Frameworks,
        Table::Announced,
        Table::Credentials,
        Table::Secrets,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Table::Nodes => "nodes",
            Table::Tasks => "tasks",
            Table::Services => "services",
            Table::Frameworks => "frameworks",
            Table::Announced => "announced",
            Table::Credentials => "credentials",
            Table::Secrets => "secrets",
        }
    }
}

/// Operations etcd must take in one Txn (the etcd store probes it at connect): a batch's
/// writes plus `meta/writer`.
pub const TXN_OPS: usize = 2048;
/// The etcd flag that bounds operations per Txn, and the value `torc up` gives it.
pub const TXN_OPS_FLAG: &str = "--max-txn-ops";

/// The counter that holds the epoch (`meta/epoch`).
pub const EPOCH_KEY: &str = "epoch";

/// The counter that holds the format version (`meta/format_version`).
pub const FORMAT_KEY: &str = "format_version";

/// Bump when a record's meaning changes; stores refuse other versions at open.
pub const FORMAT_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store {path}: {message}")]
    Open { path: String, message: String },
    #[error(
        "state store {path} has format version {found}; this torc reads version {FORMAT_VERSION}"
    )]
    Version { path: String, found: u64 },
    #[error("state store record {table}/{key} is corrupt: {message}")]
    Corrupt {
        table: &'static str,
        key: String,
        message: String,
    },
    #[error("state store write failed: {0}")]
    Write(String),
    #[error("state store refuses writes after an earlier failed commit; restart the controller")]
    Poisoned,
    /// A write of the commit was refused for want of space (`ENOSPC`, `EDQUOT`; redb), and
    /// no sync failed: the store, opened again, holds its last committed state (normally
    /// without the batch: redb rolls back a commit not wholly written), and takes commits
    /// again once space returns.
    #[error(
        "no space left for the state store {path} ({why}): the change was not made; changes are taken again once space is freed"
    )]
    NoSpace { path: String, why: String },
    /// The fence failed: nothing was written. `current` is the epoch that acts now, if any
    /// (redb: its own; etcd: the leader's, `None` when nobody leads), and `leader` what that
    /// leader put in its election key (etcd).
    #[error(
        "state store refuses a write under epoch {fence}: {}",
        describe_leader(*.current, .leader.as_deref())
    )]
    NotLeader {
        fence: Epoch,
        current: Option<Epoch>,
        leader: Option<String>,
    },
    /// The outcome of a commit is unknown (its deadline passed, or the connection broke after
    /// it was sent). The store refuses commits until a successful `load` shows what holds.
    #[error("the outcome of a commit at etcd {endpoint} is unknown: {why}")]
    Unknown { endpoint: String, why: String },
    /// Refusing commits after an `Unknown` one, until the state is loaded again.
    #[error(
        "state store refuses writes until the state is loaded again: an earlier commit's outcome is unknown"
    )]
    Unsettled,
    /// etcd refused the call (authentication, permission, no space, too large, a limit):
    /// nothing was written.
    #[error("etcd at {endpoint} refused: {why}")]
    Refused { endpoint: String, why: String },
    /// No endpoint could be reached: each endpoint tried, with its error.
    #[error("cannot reach etcd: {}", describe_tried(.tried))]
    Unreachable { tried: Vec<(String, String)> },
    /// The batch exceeds what the store takes in one transaction (checked before sending):
    /// nothing was written. `limit` names the setting that bounds it: etcd's
    /// `--max-txn-ops` for operations (the controller's own bound is fixed at 2,048, which it
    /// requires of etcd), or `--etcd-max-request-bytes` for bytes.
    #[error("{}", describe_too_large(*.ops, *.bytes, .limit))]
    TooLarge {
        ops: usize,
        bytes: usize,
        limit: &'static str,
    },
}

fn describe_leader(current: Option<Epoch>, leader: Option<&str>) -> String {
    match (current, leader) {
        (None, _) => "nobody leads now".to_string(),
        (Some(epoch), None) => format!("its writer acts under epoch {epoch}"),
        (Some(epoch), Some(leader)) => format!("the leader is {leader} (epoch {epoch})"),
    }
}

fn describe_too_large(ops: usize, bytes: usize, limit: &str) -> String {
    if limit == TXN_OPS_FLAG {
        format!(
            "a change of {ops} writes is more than the {} one etcd transaction of the controller holds; it was not made: make it smaller (fewer instances or tasks in one request)",
            TXN_OPS - 1
        )
    } else {
        format!(
            "a change of {bytes} bytes is more than the controller sends in one etcd transaction; it was not made: make it smaller, or raise {limit} (and etcd's own --max-request-bytes)"
        )
    }
}

fn describe_tried(tried: &[(String, String)]) -> String {
    if tried.is_empty() {
        return "no endpoint was tried".to_string();
    }
    tried
        .iter()
        .map(|(endpoint, why)| format!("{endpoint}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One change to persist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put(Table, String, Vec<u8>),
    Delete(Table, String),
    Meta(&'static str, u64),
}

impl Write {
    pub fn put<T: Serialize>(table: Table, key: &str, value: &T) -> Write {
        Write::Put(table, key.to_string(), to_json(value))
    }

    /// A record as it now is: written, or deleted when it is gone.
    pub fn current<T: Serialize>(table: Table, key: &str, value: Option<&T>) -> Write {
        match value {
            Some(v) => Write::put(table, key, v),
            None => Write::Delete(table, key.to_string()),
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own records always serialise: they hold no maps with non-string keys.
    serde_json::to_vec(value).expect("records serialise to JSON")
}

/// Everything read back at start-up: each table's records with their keys (in key order), and
/// the counters.
#[derive(Default)]
pub struct Loaded {
    pub records: BTreeMap<Table, Vec<(String, serde_json::Value)>>,
    pub meta: Vec<(String, u64)>,
}

impl Loaded {
    /// Takes a table's records, decoded.
    pub fn take<T: DeserializeOwned>(&mut self, table: Table) -> Result<Vec<T>, StoreError> {
        self.records
            .remove(&table)
            .unwrap_or_default()
            .into_iter()
            .map(|(key, v)| {
                serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
                    table: table.name(),
                    key,
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub fn meta(&self, key: &str) -> Option<u64> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

//! Errors: [`Error`] for opening and serving a store, [`EtcdError`] for one
//! request that the store refuses, mapped to the exact gRPC status code and
//! message that etcd 3.4 returns so clients recognise them.

use std::path::PathBuf;

/// Failure to open, load or serve a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("creating data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kv storage at {path}: {source}")]
    Storage {
        path: PathBuf,
        #[source]
        source: StorageError,
    },
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("starting the commit thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Failure of the on-disk store. After one of these during a commit, the store
/// refuses every later write (fails closed) until it is reopened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    #[error(
        "on-disk format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat { found: u64, supported: u64 },
    #[error("write-ahead log {path}: {source}")]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "write-ahead log {path}: format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedWalFormat {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("corrupt record in table {table} at {key}: {reason}")]
    Corrupt {
        table: &'static str,
        key: String,
        reason: String,
    },
}

/// Converts any of redb's specific error types.
pub(crate) fn redb_err<E: Into<redb::Error>>(e: E) -> StorageError {
    StorageError::Redb(e.into())
}

/// Why one request was refused. `Display` is etcd's own message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EtcdError {
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    #[error("etcdserver: key not found")]
    KeyNotFound,
    #[error("etcdserver: value is provided")]
    ValueProvided,
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    #[error("etcdserver: invalid watch id {0}: already in use on this stream")]
    DuplicateWatchId(i64),
    /// A commit failed earlier; the store refuses writes until restarted.
    #[error("torc kv: storage failed, refusing writes until restart: {0}")]
    StorageFailed(String),
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("torc kv: {0} is not supported by this single-node store")]
    Unimplemented(&'static str),
}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> Self {
        use tonic::Code;
        let code = match &e {
            EtcdError::EmptyKey
            | EtcdError::KeyNotFound
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided
            | EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge
            | EtcdError::DuplicateWatchId(_) => Code::InvalidArgument,
            EtcdError::Compacted | EtcdError::FutureRevision | EtcdError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            EtcdError::LeaseNotFound => Code::NotFound,
            EtcdError::LeaseExists => Code::FailedPrecondition,
            EtcdError::StorageFailed(_) | EtcdError::Stopped => Code::Unavailable,
            EtcdError::Unimplemented(_) => Code::Unimplemented,
        };
        tonic::Status::new(code, e.to_string())
    }
}

//! Errors: [`Error`] for opening and serving a store, [`EtcdError`] for one
//! request that the store refuses, mapped to the exact gRPC status code and
//! message that etcd 3.4 returns so clients recognise them (the texts torc's
//! own client acts on are `torc_kv_client::rpctypes`', used here).

use std::path::PathBuf;
use std::sync::Arc;

use torc_kv_client::rpctypes;

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
    #[error("starting the commit thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("creating the root user: {0}")]
    Bootstrap(#[source] EtcdError),
    #[error("the OS random source failed: {0}")]
    Random(#[source] getrandom::Error),
    #[error("TLS: {0}")]
    Tls(#[from] torc_tls::TlsError),
    #[error(
        "client certificate authentication (--client-cert-auth) needs a trusted CA \
         (--trusted-ca-file) to check client certificates against"
    )]
    ClientCertAuthWithoutCa,
}

/// Failure of the on-disk store. After one of these during a commit, the store
/// refuses every later write (fails closed) until it is reopened: by itself once space
/// returns when all that failed was a want of space ([`StorageError::is_no_space`]), else
/// by a restart.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("redb: {0}")]
    Redb(#[from] redb::Error),
    /// A commit into the redb file at `path` failed.
    #[error("redb file {path}: {source}")]
    RedbFile {
        path: PathBuf,
        #[source]
        source: Box<redb::Error>,
    },
    #[error(
        "on-disk format version {found} is not supported (this build reads version {supported})"
    )]
    UnsupportedFormat { found: u64, supported: u64 },
    /// A commit into the redb file at `path` failed only because writes were refused for want
    /// of space (no failed sync): see `torc_durable::redb_backend`.
    #[error("redb file {path}: {why}")]
    RedbNoSpace { path: PathBuf, why: String },
    #[error("write-ahead log {path}: {source}")]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Making a log append durable failed: what the disk holds is unknown (fsyncgate).
    #[error("write-ahead log {path}: fsync failed: {source}")]
    WalSync {
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

impl StorageError {
    /// Whether all that failed was a write refused for want of space (`ENOSPC`, `EDQUOT`), so
    /// the disk holds what a crash at that point would leave, and the store can be opened
    /// again once space returns.
    pub fn is_no_space(&self) -> bool {
        match self {
            StorageError::RedbNoSpace { .. } => true,
            StorageError::Wal { source, .. } => torc_durable::redb_backend::is_no_space(source),
            _ => false,
        }
    }
}

/// Why a store stopped taking writes: the first failure of a commit (a log append, a redb
/// transaction, the apply thread gone).
#[derive(Debug, thiserror::Error)]
pub enum CommitFailure {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the kv apply thread stopped")]
    ApplyStopped,
}

/// The [`CommitFailure`] that poisoned a store, shared by every write refused after it until
/// the store is reopened. Two are equal when they are the same failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error(transparent)]
pub struct Poison(Arc<CommitFailure>);

impl Poison {
    pub fn new(failure: impl Into<CommitFailure>) -> Poison {
        Poison(Arc::new(failure.into()))
    }

    /// What failed.
    pub fn cause(&self) -> &CommitFailure {
        &self.0
    }

    /// Whether the store takes writes again by itself once space returns (see
    /// [`StorageError::is_no_space`]).
    pub fn is_no_space(&self) -> bool {
        matches!(&*self.0, CommitFailure::Storage(e) if e.is_no_space())
    }
}

/// [`EtcdError::StorageFailed`]'s text: what the refusal lasts until, and the failure.
fn storage_failed(poison: &Poison) -> String {
    if poison.is_no_space() {
        format!(
            "torc kv: no space left for the store, refusing writes until space is freed \
             (the store tries again every second): {poison}"
        )
    } else {
        format!("torc kv: storage failed, refusing writes until restart: {poison}")
    }
}

impl PartialEq for Poison {
    fn eq(&self, other: &Poison) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Poison {}

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
    /// The storage quota (`--quota-backend-bytes`) would be passed, or the
    /// NOSPACE alarm is raised.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// torc's own bound (etcd has none): a Range's answer.
    #[error(
        "torc kv: the range's answer would hold more than {limit} bytes of keys and values \
         (ask for less: a limit, a narrower range, keys only; or raise it with torc kv \
         --max-range-bytes)"
    )]
    RangeTooLarge { limit: usize },
    /// torc's own bound (etcd has none): the keys of a Range's answer.
    #[error(
        "torc kv: the range's answer would hold more than {limit} keys (ask for fewer with a \
         limit or a narrower range, or raise it with torc kv --max-range-keys)"
    )]
    RangeTooManyKeys { limit: usize },
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
    /// A commit failed earlier; the store refuses writes until restarted, or, when it failed
    /// for want of space, until space returns.
    #[error("{}", storage_failed(.0))]
    StorageFailed(Poison),
    #[error("etcdserver: server stopped")]
    Stopped,
    #[error("torc kv: {0} is not supported by this single-node store")]
    Unimplemented(&'static str),
    #[error("etcdserver: too many requests")]
    TooManyRequests,
    /// torc's own bound (etcd has none): watchers per client connection.
    #[error(
        "torc kv: this connection has {limit} watchers open, the most one connection may have \
         (raise it with torc kv --max-watchers-per-connection)"
    )]
    TooManyWatchers { limit: usize },
    /// torc's own bound (etcd has none): leases granted through one
    /// client connection that still exist.
    #[error(
        "torc kv: this connection holds {limit} leases, the most one connection may hold \
         (revoke some, or raise it with torc kv --max-leases-per-connection)"
    )]
    TooManyLeases { limit: usize },
    // ---- auth (etcd's auth/store.go errors, as rpctypes sends them) ----
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    #[error("{}", rpctypes::USER_EMPTY)]
    UserEmpty,
    #[error("etcdserver: user name not found")]
    UserNotFound,
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// etcd has no gRPC status for this one: its clients see code Unknown
    /// and the auth package's own text.
    #[error("auth: authentication failed, password was given for no password user")]
    NoPasswordUser,
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    #[error("{}", rpctypes::AUTH_NOT_ENABLED)]
    AuthNotEnabled,
    #[error("{}", rpctypes::INVALID_AUTH_TOKEN)]
    InvalidAuthToken,
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
    /// torc's own: bcrypt reads 72 bytes of a password; etcd 3.4 ignored
    /// the rest, torc refuses a password it would not check whole.
    #[error("torc kv: the password is {0} bytes long; bcrypt checks at most 72")]
    PasswordTooLong(usize),
    /// torc's own: hashing a password or drawing a token failed.
    #[error("torc kv: auth failed on the server: {0}")]
    AuthInternal(String),
}

impl EtcdError {
    /// The gRPC status code etcd 3.4 sends with this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            EtcdError::EmptyKey
            | EtcdError::KeyNotFound
            | EtcdError::ValueProvided
            | EtcdError::LeaseProvided
            | EtcdError::TooManyOps
            | EtcdError::DuplicateKey
            | EtcdError::RequestTooLarge
            | EtcdError::DuplicateWatchId(_)
            | EtcdError::UserEmpty
            | EtcdError::RoleEmpty
            | EtcdError::AuthFailed
            | EtcdError::PermissionNotGiven
            | EtcdError::InvalidAuthMgmt
            | EtcdError::AuthOldRevision
            | EtcdError::PasswordTooLong(_) => Code::InvalidArgument,
            EtcdError::Compacted | EtcdError::FutureRevision | EtcdError::LeaseTtlTooLarge => {
                Code::OutOfRange
            }
            EtcdError::LeaseNotFound => Code::NotFound,
            EtcdError::LeaseExists
            | EtcdError::RootUserNotExist
            | EtcdError::RootRoleNotExist
            | EtcdError::UserAlreadyExist
            | EtcdError::UserNotFound
            | EtcdError::RoleAlreadyExist
            | EtcdError::RoleNotFound
            | EtcdError::RoleNotGranted
            | EtcdError::PermissionNotGranted
            | EtcdError::AuthNotEnabled => Code::FailedPrecondition,
            // Not `Unavailable`, which etcd's clients retry until their deadline: the
            // operator must free space, and the client should say so at once.
            EtcdError::StorageFailed(p) if p.is_no_space() => Code::ResourceExhausted,
            EtcdError::StorageFailed(_) | EtcdError::Stopped => Code::Unavailable,
            EtcdError::Unimplemented(_) => Code::Unimplemented,
            EtcdError::TooManyRequests
            | EtcdError::NoSpace
            | EtcdError::RangeTooLarge { .. }
            | EtcdError::RangeTooManyKeys { .. }
            | EtcdError::TooManyWatchers { .. }
            | EtcdError::TooManyLeases { .. } => Code::ResourceExhausted,
            EtcdError::PermissionDenied => Code::PermissionDenied,
            EtcdError::InvalidAuthToken => Code::Unauthenticated,
            EtcdError::NoPasswordUser | EtcdError::AuthInternal(_) => Code::Unknown,
        }
    }

    /// The text etcd's Go gRPC library makes of this error as a status
    /// (`rpc error: code = ... desc = ...`): what etcd puts in a watch's
    /// `cancel_reason` when it refuses to create the watch.
    pub fn go_status_text(&self) -> String {
        format!("rpc error: code = {:?} desc = {self}", self.code())
    }
}

impl From<EtcdError> for tonic::Status {
    fn from(e: EtcdError) -> Self {
        tonic::Status::new(e.code(), e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A poisoned store refuses with the first failure's own text, as gRPC `Unavailable`; every
    /// refusal shares that one failure.
    #[test]
    fn a_poisoned_store_names_its_failure() {
        let poison = Poison::new(StorageError::Wal {
            path: "/data/kv.wal.0".into(),
            source: std::io::Error::other("fsync failed"),
        });
        let refused = EtcdError::StorageFailed(poison.clone());
        assert_eq!(
            refused.to_string(),
            "torc kv: storage failed, refusing writes until restart: write-ahead log \
             /data/kv.wal.0: fsync failed"
        );
        assert_eq!(refused.code(), tonic::Code::Unavailable);
        assert!(matches!(
            poison.cause(),
            CommitFailure::Storage(StorageError::Wal { .. })
        ));
        assert!(!poison.is_no_space());
        assert_eq!(refused, EtcdError::StorageFailed(poison));
        let stopped = Poison::new(CommitFailure::ApplyStopped);
        assert_ne!(refused, EtcdError::StorageFailed(stopped.clone()));
        assert_eq!(
            stopped.to_string(),
            "the kv apply thread stopped",
            "the text the store answered with before the failure was typed"
        );
    }

    /// A store refusing writes for want of space says it resumes by itself, as
    /// `ResourceExhausted` (which clients do not retry), naming the file.
    #[test]
    fn a_full_disk_names_its_file_and_says_it_resumes() {
        for cause in [
            StorageError::RedbNoSpace {
                path: "/data/kv.redb".into(),
                why: "No space left on device (os error 28)".into(),
            },
            StorageError::Wal {
                path: "/data/kv.wal.1".into(),
                source: std::io::Error::from_raw_os_error(28),
            },
        ] {
            let poison = Poison::new(cause);
            assert!(poison.is_no_space());
            let refused = EtcdError::StorageFailed(poison);
            let text = refused.to_string();
            assert!(
                text.starts_with(
                    "torc kv: no space left for the store, refusing writes until space is freed"
                ),
                "{text}"
            );
            assert!(text.contains("/data/kv."), "{text}");
            assert!(text.contains("No space left on device"), "{text}");
            assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        }
        let sync = Poison::new(StorageError::WalSync {
            path: "/data/kv.wal.0".into(),
            source: std::io::Error::from_raw_os_error(28),
        });
        assert!(
            !sync.is_no_space(),
            "a failed fsync is never taken for a full disk"
        );
    }
}

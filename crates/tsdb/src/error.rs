//! Library errors. [`Error`] is `Clone` (its I/O errors are shared) because the failure that
//! poisons the store is kept and reported again to every later writer.

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the storage engine and of writes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file is damaged somewhere other than a torn WAL tail: refuse to open (fail closed).
    #[error("corrupt data in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: Damage },
    /// A WAL record in `path` that checksums but cannot be replayed: refuse to open.
    #[error("corrupt data in {path}: {source}")]
    Replay {
        path: PathBuf,
        #[source]
        source: ReplayError,
    },
    #[error(
        "unsupported on-disk format in {path}: {found:?} (this build reads version {expected})"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    /// A WAL, segment or `meta.json` write failed earlier; the store refuses writes from then
    /// on.
    #[error("storage is read-only after an earlier failure: {0}")]
    Poisoned(Poison),
    /// The WAL write was refused for want of space; nothing of it was kept, and the store is
    /// not poisoned: a later write is tried again (see [`crate::wal`]).
    #[error(
        "no space left to write {path}: {source}; the write was not stored, retry once space is freed"
    )]
    NoSpace {
        path: PathBuf,
        #[source]
        source: Arc<std::io::Error>,
    },
    #[error("database not found: {0:?}")]
    DatabaseNotFound(String),
    /// A restore would overwrite an existing database.
    #[error(
        "database {0:?} exists: a restore never overwrites a database; restore it under a new name (newdb) or drop it first"
    )]
    DatabaseExists(String),
    #[error("retention policy not found: {0}")]
    RetentionPolicyNotFound(String),
    #[error("database is required")]
    DatabaseRequired,
    /// A statement that needs a database got none (InfluxQL's words).
    #[error("database name required")]
    DatabaseNameRequired,
    #[error("retention policy already exists")]
    RetentionPolicyExists,
    #[error("continuous query already exists")]
    ContinuousQueryExists,
    /// A deletion met a shard whose head is being flushed; the caller may retry.
    #[error("delete while a flush is in progress")]
    FlushInProgress,
    /// The metadata could not be serialised.
    #[error("{0}")]
    Encode(#[source] Arc<serde_json::Error>),
    /// Some or all points were rejected; the text is InfluxDB's.
    #[error("partial write: {reason} dropped={dropped}")]
    PartialWrite { reason: Rejection, dropped: usize },
    /// A name refused before it reached the disk (see [`crate::names`]).
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
}

/// What is damaged in a file (the detail of [`Error::Corrupt`]); offsets are in bytes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Damage {
    /// A compressed block does not decode.
    #[error(transparent)]
    Block(#[from] crate::encoding::DecodeError),
    #[error("bad segment header")]
    SegmentHeader,
    #[error("segment checksum mismatch")]
    SegmentChecksum,
    #[error("bad string id")]
    StringId,
    #[error("bad type")]
    FieldType,
    #[error("bad schema id")]
    SchemaId,
    #[error("bad time exponent")]
    TimeExponent,
    #[error("empty series in segment")]
    EmptySeries,
    #[error("bad bitmap flag")]
    BitmapFlag,
    #[error("trailing bytes in segment body")]
    TrailingBytes,
    #[error("time and value counts differ")]
    ValueCount,
    #[error("file shorter than its header")]
    WalHeader,
    #[error("bad magic")]
    WalMagic,
    /// A record cut short in a WAL file that is not the newest (only the newest may be torn).
    #[error("incomplete record at offset {offset} in a sealed file")]
    IncompleteRecord { offset: usize },
    #[error("record length {len} at offset {offset}")]
    RecordLength { len: usize, offset: usize },
    #[error("checksum mismatch at offset {offset}")]
    RecordChecksum { offset: usize },
    /// `meta.json` is not the catalog's JSON.
    #[error("{0}")]
    Metadata(#[source] Arc<serde_json::Error>),
}

/// Why a WAL record cannot be replayed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Decode(#[from] crate::encoding::DecodeError),
    #[error("unknown WAL record kind {0}")]
    UnknownKind(u8),
    /// Applying the record failed (opening its shard, rewriting segments for a deletion).
    #[error(transparent)]
    Apply(#[from] Box<Error>),
}

/// The failure that made the store refuse writes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Poison {
    /// Writing or fsyncing the WAL failed.
    #[error("wal write failed: {0}")]
    WalWrite(#[source] Arc<std::io::Error>),
    /// Creating the next WAL file failed.
    #[error("creating wal: {0}")]
    WalCreate(#[source] Arc<std::io::Error>),
    /// Writing the next WAL file's header, or syncing its directory, failed.
    #[error("{0}")]
    WalHeader(#[source] Box<Error>),
    #[error("wal is shut down")]
    ShutDown,
    /// The WAL's thread ended without answering.
    #[error("wal writer stopped")]
    WriterStopped,
    /// A flush, a compaction, a deletion or a write of `meta.json` failed (see
    /// [`crate::storage`]).
    #[error("{0}")]
    Storage(#[source] Box<Error>),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }
}

impl From<torc_durable::WriteError> for Error {
    fn from(e: torc_durable::WriteError) -> Error {
        Error::io(
            format!("writing {} ({})", e.path.display(), e.step),
            e.source,
        )
    }
}

/// Why points of a write were dropped (the first reason, as InfluxDB reports one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error(
        "field type conflict: input field \"{field}\" on measurement \"{measurement}\" is type \
         {got}, already exists as type {have}"
    )]
    TypeConflict {
        field: String,
        measurement: String,
        got: crate::model::FieldType,
        have: crate::model::FieldType,
    },
    #[error("max-series-per-database limit exceeded: ({limit})")]
    SeriesLimit { limit: usize },
    #[error("points beyond retention policy")]
    Retention,
    #[error(transparent)]
    KeyTooLong(#[from] crate::names::KeyTooLong),
}

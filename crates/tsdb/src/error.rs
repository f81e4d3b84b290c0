//! Library errors.

use std::path::PathBuf;

/// Errors of the storage engine and of writes.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A file is damaged somewhere other than a torn WAL tail: refuse to open (fail closed).
    #[error("corrupt data in {path}: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "unsupported on-disk format in {path}: {found:?} (this build reads version {expected})"
    )]
    UnsupportedFormat {
        path: PathBuf,
        found: String,
        expected: u32,
    },
    /// A WAL or segment write failed earlier; the store refuses writes from then on.
    #[error("storage is read-only after an earlier failure: {0}")]
    Poisoned(String),
    #[error("database not found: {0:?}")]
    DatabaseNotFound(String),
    #[error("retention policy not found: {0}")]
    RetentionPolicyNotFound(String),
    #[error("database is required")]
    DatabaseRequired,
    /// Some or all points were rejected; the text is InfluxDB's.
    #[error("partial write: {reason} dropped={dropped}")]
    PartialWrite {
        reason: crate::storage::Rejection,
        dropped: usize,
    },
    /// A name refused before it reached the disk (see [`crate::names`]).
    #[error(transparent)]
    Name(#[from] crate::names::NameError),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<torc_durable::WriteError> for Error {
    fn from(e: torc_durable::WriteError) -> Error {
        Error::Io {
            context: format!("writing {} ({})", e.path.display(), e.step),
            source: e.source,
        }
    }
}

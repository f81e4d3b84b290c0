//! A redb file whose backend records how its I/O failed ([`open`]), so a store can tell a
//! commit refused for want of space from one whose sync failed. redb's own error does not say:
//! it latches the first I/O error and answers `PreviousIo` to everything after it.
//!
//! Why the difference matters (the stores that use this, the controller's state store and
//! `torc kv`, rely on it to take writes again by themselves once space returns):
//! - A write refused with `ENOSPC` or `EDQUOT` changed nothing on disk. After one, with no
//!   failed sync, the file is what a crash during that commit's fsync would leave: some of its
//!   writes (those that succeeded are in the page cache), never the fsync. redb's commit (1PC+C,
//!   its default) is built for that: the next open keeps the new primary slot only if its
//!   transaction is newer and every checksum under it holds, else rolls back to the previous
//!   commit. So dropping the `Database` (redb writes nothing on close after an I/O error, and
//!   releases its lock) and opening it again yields the last committed state.
//! - A failed sync is different (fsyncgate): the kernel may have dropped the dirty pages and
//!   marked them clean, so the page cache no longer says what the disk holds, and reopening
//!   would read it. The store must stay closed until the process restarts.
//!
//! With the `inject` feature (tests only: enable it from `[dev-dependencies]`), [`Inject`]
//! makes the backend report a failure instead of doing the next such operation; without it,
//! [`Inject`] is an empty value and the backend does nothing more than redb's `FileBackend`
//! plus one note per failed operation.

use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::backends::FileBackend;
use redb::{BackendError, Builder, Database, DatabaseError, StorageBackend};

/// What the backend of one open `Database` saw fail since it was opened.
#[derive(Debug, Default)]
pub struct Failures {
    seen: Mutex<Seen>,
}

/// The failures seen, by kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Seen {
    /// A sync failed: the page cache cannot be trusted any more (fsyncgate).
    pub sync: bool,
    /// A write (or a resize) refused for want of space, with the error's text.
    pub no_space: Option<String>,
    /// Any other failure.
    pub other: bool,
}

impl Seen {
    /// The want of space, when that is all that failed: then the file can be opened again
    /// once space returns (module doc).
    pub fn only_no_space(&self) -> Option<&str> {
        match self {
            Seen {
                no_space: Some(why),
                sync: false,
                other: false,
            } => Some(why),
            _ => None,
        }
    }
}

impl Failures {
    fn note(&self, f: impl FnOnce(&mut Seen)) {
        f(&mut self.seen.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// What failed so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Whether `e` says the file system has no room (or the quota none) for what was written.
pub fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Tests (`inject` feature): a failure the backend reports instead of doing the next such
/// operation.
#[cfg(feature = "inject")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Injected {
    /// The next write is refused with `ENOSPC`.
    NoSpace,
    /// The next sync fails with `EIO`.
    SyncFails,
}

/// The failure to inject, shared with each backend a store opens; set it through the `Arc`.
#[cfg(feature = "inject")]
pub type Inject = Arc<Mutex<Option<Injected>>>;

/// Without the `inject` feature: nothing (so production builds carry no switch).
#[cfg(not(feature = "inject"))]
#[derive(Debug, Default, Clone)]
pub struct Inject(());

/// redb's `FileBackend`, recording in `failures` which operations failed and how.
#[derive(Debug)]
struct Watched {
    file: FileBackend,
    failures: Arc<Failures>,
    #[cfg_attr(not(feature = "inject"), allow(dead_code))]
    inject: Inject,
}

impl Watched {
    #[cfg(feature = "inject")]
    fn injected(&self, kind: Injected) -> Option<std::io::Error> {
        let mut inject = self.inject.lock().unwrap_or_else(|e| e.into_inner());
        (*inject == Some(kind)).then(|| {
            *inject = None;
            std::io::Error::from_raw_os_error(match kind {
                // ENOSPC and EIO on Linux.
                Injected::NoSpace => 28,
                Injected::SyncFails => 5,
            })
        })
    }

    /// Records a failed write or resize.
    fn resized_or_written(&self, result: std::io::Result<()>) -> std::io::Result<()> {
        if let Err(e) = &result {
            self.failures.note(|s| {
                if is_no_space(e) {
                    s.no_space.get_or_insert_with(|| e.to_string());
                } else {
                    s.other = true;
                }
            });
        }
        result
    }

    fn other<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if result.is_err() {
            self.failures.note(|s| s.other = true);
        }
        result
    }
}

impl StorageBackend for Watched {
    fn len(&self) -> std::io::Result<u64> {
        self.other(self.file.len())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.other(self.file.read(offset, out))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.resized_or_written(self.file.set_len(len))
    }

    fn sync_data(&self) -> std::io::Result<()> {
        #[cfg(feature = "inject")]
        if let Some(e) = self.injected(Injected::SyncFails) {
            self.failures.note(|s| s.sync = true);
            return Err(e);
        }
        let result = self.file.sync_data();
        if result.is_err() {
            self.failures.note(|s| s.sync = true);
        }
        result
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        #[cfg(feature = "inject")]
        if let Some(e) = self.injected(Injected::NoSpace) {
            return self.resized_or_written(Err(e));
        }
        self.resized_or_written(self.file.write(offset, data))
    }

    fn close(&self) -> std::io::Result<()> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

/// Opens (creating it if `create` and it is missing) the redb file at `path` with `builder`'s
/// settings, through a backend that records its failures in the returned [`Failures`].
pub fn open(
    path: &Path,
    create: bool,
    builder: &Builder,
    inject: &Inject,
) -> Result<(Database, Arc<Failures>), DatabaseError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(false)
        .open(path)?;
    let failures = Arc::new(Failures::default());
    let backend = Watched {
        file: FileBackend::new(file)?,
        failures: Arc::clone(&failures),
        inject: inject.clone(),
    };
    Ok((builder.create_with_backend(backend)?, failures))
}

//! [`RedbStore`]: the controller's durable state in one `redb` file.
//!
//! A table per [`Table`] maps a name or id to its JSON bytes, and `meta` holds the counters
//! (`format_version`, `epoch`, `generation`, ...). Every change is one write transaction
//! committed with `Durability::Immediate`, so an acknowledged API call survives `kill -9`. The
//! file is created mode 0600 (and set to 0600 at every open): it holds the rack's secrets.
//!
//! Invariants:
//! - The epoch (`meta/epoch`) is bumped in the transaction that opens the file, so each open
//!   (each controller start) has a higher epoch than every earlier one on this file. A new
//!   file starts at 1: a reader that outlives a wiped data directory may hold the numbers of
//!   the old file, and is then answered at the end of its wait instead of at once.
//! - Fails closed: once a commit fails (e.g. fsync), the store refuses every later write, and
//!   the controller answers 503 rather than acknowledging state it may not have kept. A
//!   failed transaction is aborted, so nothing of its batch was kept.
//! - Except for a full disk: a commit whose only failures were writes refused for want of space
//!   (`ENOSPC`, `EDQUOT`), with no failed sync, fails alone (`NoSpace`, naming the file), and
//!   the store takes commits again by itself once space returns. Why that is safe:
//!   redb latches any I/O error and refuses everything after it (`PreviousIo`), so the
//!   `Database` is dropped (redb writes nothing on close after an I/O error, and releases its
//!   lock) and opened again, without a new epoch (same controller life). What the file holds
//!   then is what a crash during that commit's fsync could leave on disk: some of its writes
//!   (those that succeeded are in the page cache; a refused one changed nothing, as an unwritten
//!   page after a crash), perhaps the header that flips the primary slot among them (redb
//!   flushes its write buffer in no particular order), never the fsync. redb's commit (1PC+C,
//!   its default, `docs/design.md` in redb) is built for exactly that: the pages go to space the
//!   last committed transaction does not use, and the open that follows (`recovery_required`)
//!   keeps the new primary only if its transaction id is newer and every checksum under it
//!   holds, else rolls back to the previous commit. So the reopened file holds the last
//!   committed state (the refused batch whole or, normally, not at all), and that is what the
//!   controller reloads and serves. A failed sync is different (fsyncgate): the kernel
//!   may have dropped the dirty pages and marked them clean, so the page cache no longer says
//!   what the disk holds, and reopening would read it: the store stays poisoned until a
//!   restart. The file's backend (`torc_durable::redb_backend`, redb's own `FileBackend`
//!   underneath) records which operations failed and how, since redb's error alone does not
//!   say whether a sync failed.
//!   Should the reopen fail (e.g. the repair finds no room), the store stays closed and tries
//!   again at the next write.
//! - The file carries a format version; a file of an unknown version is refused at open.
//! - One process at a time: redb locks the file, so a second controller on it fails to open.
//! - A new file is created whole under a temporary name and renamed into place, so an empty
//!   (0-byte) file is a truncated store: refused at open, naming the file, never taken for a
//!   new rack. (redb itself refuses a file truncated below its layout.)

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use torc_durable::redb_backend::{self, Failures, Inject};

use super::{
    EPOCH_KEY, Epoch, FORMAT_KEY, FORMAT_VERSION, Loaded, Store, StoreError, Table, Write,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn table_def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

pub struct RedbStore {
    path: PathBuf,
    /// The open file and what its backend saw fail; `None` after a commit refused for want of
    /// space, until it is opened again.
    db: RwLock<Option<Open>>,
    epoch: Epoch,
    poisoned: AtomicBool,
    /// Tests: the next commit fails as a failed fsync would, after its writes are staged.
    #[cfg(test)]
    fail_next: Arc<AtomicBool>,
    /// Tests: the next failure the backend reports (a write refused for want of space, a failed
    /// sync), handed to each backend the store opens (an empty value outside tests).
    inject: Inject,
}

/// Creates an empty redb file at `path` whole: made (mode 0600) and initialised under a
/// temporary name, then renamed into place and the directory synced. So a start killed
/// meanwhile leaves no file at `path`, and an empty file there is a truncated store, refused
/// at open rather than taken for a new one (which would start an empty rack).
fn create_whole(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("redb.tmp");
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    let db = ::redb::Builder::new()
        .create(&tmp)
        .map_err(std::io::Error::other)?;
    drop(db);
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, path)?;
    torc_durable::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// An open file, and what its backend saw fail.
type Open = (Database, Arc<Failures>);

/// Opens the redb file at `path` (it exists) through a backend that records its failures.
fn open_db(path: &Path, inject: &Inject) -> Result<Open, ::redb::DatabaseError> {
    // redb's default page cache is 1 GiB; the controller's records need a few MiB.
    redb_backend::open(
        path,
        false,
        ::redb::Builder::new().set_cache_size(16 << 20),
        inject,
    )
}

impl RedbStore {
    /// Opens (or creates, see `create_whole`) the file and starts a new epoch in it.
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let shown = path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_whole(path).map_err(|e| open_err(&e))?;
            }
            Ok(m) if m.len() == 0 => {
                return Err(open_err(
                    &"the file is empty (0 bytes), but a store is created whole (under a \
                      temporary name, then renamed), so it was truncated: restore it from a \
                      backup (deleting it starts an empty rack)",
                ));
            }
            _ => {}
        }
        // Created (or narrowed) to 0600 before redb opens it: redb creates files with the
        // default mode, and rack secrets must not be readable by others.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|_| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| open_err(&e))?;
        let inject = Inject::default();
        let (db, failures) = open_db(path, &inject).map_err(|e| open_err(&e))?;
        let mut txn = db.begin_write().map_err(|e| open_err(&e))?;
        txn.set_durability(::redb::Durability::Immediate)
            .map_err(|e| open_err(&e))?;
        let epoch;
        {
            let mut meta = txn.open_table(META).map_err(|e| open_err(&e))?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(|e| open_err(&e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION)
                        .map_err(|e| open_err(&e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => return Err(StoreError::Version { path: shown, found }),
            }
            let last = meta
                .get(EPOCH_KEY)
                .map_err(|e| open_err(&e))?
                .map_or(0, |v| v.value());
            epoch = last
                .checked_add(1)
                .ok_or_else(|| open_err(&"its epoch counter is exhausted"))?;
            meta.insert(EPOCH_KEY, epoch).map_err(|e| open_err(&e))?;
            for table in Table::ALL {
                txn.open_table(table_def(table)).map_err(|e| open_err(&e))?;
            }
        }
        txn.commit().map_err(|e| open_err(&e))?;
        Ok(RedbStore {
            path: path.to_path_buf(),
            db: RwLock::new(Some((db, failures))),
            epoch: Epoch(epoch),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            fail_next: Arc::default(),
            inject,
        })
    }

    /// Opens the file again after a commit refused for want of space (see the module doc):
    /// the same epoch, which the file must still hold.
    fn reopen(&self) -> Result<Open, String> {
        let (db, failures) = open_db(&self.path, &self.inject).map_err(|e| e.to_string())?;
        let epoch = db.begin_read().map_err(|e| e.to_string()).and_then(|txn| {
            let meta = txn.open_table(META).map_err(|e| e.to_string())?;
            let epoch = meta.get(EPOCH_KEY).map_err(|e| e.to_string())?;
            Ok(epoch.map(|v| v.value()))
        })?;
        if epoch != Some(self.epoch.0) {
            // Not the file this controller life wrote: refuse it for good.
            self.poisoned.store(true, Ordering::Release);
            return Err(format!(
                "opened again, it holds epoch {epoch:?}, not this controller's {}",
                self.epoch
            ));
        }
        Ok((db, failures))
    }

    /// The open file, opened again first if a commit refused for want of space closed it.
    fn open_now(&self) -> Result<RwLockReadGuard<'_, Option<Open>>, StoreError> {
        {
            let db = self.db.read().unwrap_or_else(|e| e.into_inner());
            if db.is_some() {
                return Ok(db);
            }
        }
        let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
        if db.is_none() {
            match self.reopen() {
                Ok(open) => {
                    tracing::info!(path = %self.path.display(), "state store opened again after a full disk");
                    *db = Some(open);
                }
                Err(e) => {
                    return Err(StoreError::NoSpace {
                        path: self.path.display().to_string(),
                        why: format!(
                            "closed after a write refused for want of space, and cannot be opened again: {e}"
                        ),
                    });
                }
            }
        }
        drop(db);
        Ok(self.db.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Tests: a switch that makes the file's backend report the failure put in it (once),
    /// instead of doing the next such operation.
    #[cfg(test)]
    pub(crate) fn injector(&self) -> Inject {
        Arc::clone(&self.inject)
    }

    /// Tests: a switch that makes the next commit fail (set it to `true`), as a failed fsync
    /// would: the batch is staged in the transaction, which is then dropped, not committed.
    #[cfg(test)]
    pub(crate) fn failure_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fail_next)
    }

    fn try_commit(&self, db: &Database, writes: &[Write]) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let mut txn = db.begin_write().map_err(|e| err(&e))?;
        // redb's default, stated: the commit returns after the data is fsynced.
        txn.set_durability(::redb::Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            for w in writes {
                match w {
                    Write::Put(table, k, v) => {
                        let mut t = txn.open_table(table_def(*table)).map_err(|e| err(&e))?;
                        t.insert(k.as_str(), v.as_slice()).map_err(|e| err(&e))?;
                    }
                    Write::Delete(table, k) => {
                        let mut t = txn.open_table(table_def(*table)).map_err(|e| err(&e))?;
                        t.remove(k.as_str()).map_err(|e| err(&e))?;
                    }
                    Write::Meta(k, v) => {
                        meta.insert(*k, *v).map_err(|e| err(&e))?;
                    }
                }
            }
        }
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::AcqRel) {
            // Dropped uncommitted: redb aborts it.
            drop(txn);
            return Err(StoreError::Write("injected failure".into()));
        }
        txn.commit().map_err(|e| err(&e))
    }
}

impl Store for RedbStore {
    fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let db = self.open_now()?;
        let Some((db, _)) = db.as_ref() else {
            return Err(read_err(&"the state store was closed meanwhile"));
        };
        let txn = db.begin_read().map_err(|e| read_err(&e))?;
        let mut out = Loaded::default();
        for table in Table::ALL {
            let t = txn.open_table(table_def(table)).map_err(|e| read_err(&e))?;
            let records = out.records.entry(table).or_default();
            for entry in t.iter().map_err(|e| read_err(&e))? {
                let (k, v) = entry.map_err(|e| read_err(&e))?;
                let value = serde_json::from_slice(v.value()).map_err(|e| StoreError::Corrupt {
                    table: table.name(),
                    key: k.value().to_string(),
                    message: e.to_string(),
                })?;
                records.push((k.value().to_string(), value));
            }
        }
        let meta = txn.open_table(META).map_err(|e| read_err(&e))?;
        for entry in meta.iter().map_err(|e| read_err(&e))? {
            let (k, v) = entry.map_err(|e| read_err(&e))?;
            out.meta.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        self.open_now().map(drop)
    }

    fn commit(&self, fence: Epoch, writes: &[Write]) -> Result<(), StoreError> {
        self.writable()?;
        let current = self.epoch();
        if fence != current {
            return Err(StoreError::NotLeader {
                fence,
                current: Some(current),
                leader: None,
            });
        }
        if writes.is_empty() {
            return Ok(());
        }
        let db = self.db.read().unwrap_or_else(|e| e.into_inner());
        let Some((open, failures)) = db.as_ref() else {
            return Err(StoreError::Write(
                "the state store was closed meanwhile".into(),
            ));
        };
        let Err(e) = self.try_commit(open, writes) else {
            return Ok(());
        };
        let seen = failures.seen();
        drop(db);
        match seen.only_no_space() {
            Some(why) => {
                let why = why.to_owned();
                // Only writes refused for want of space: the file is as a crash here would
                // leave it, and redb refuses everything after an I/O error, so it is closed
                // (dropped first: that releases its lock) and opened again (module doc).
                let mut db = self.db.write().unwrap_or_else(|e| e.into_inner());
                *db = None;
                match self.reopen() {
                    Ok(open) => *db = Some(open),
                    Err(e) => tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "state store not opened again yet after a full disk; tried again at the next change"
                    ),
                }
                Err(StoreError::NoSpace {
                    path: self.path.display().to_string(),
                    why,
                })
            }
            None => {
                // A failed sync, another failure, or one we cannot place: we cannot know what
                // reached the disk, fail closed.
                self.poisoned.store(true, Ordering::Release);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::store::Injected;

    /// A redb file in a directory of its own.
    struct Redb {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Redb {
        fn new() -> Redb {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("controller.redb");
            Redb { _dir: dir, path }
        }
    }

    impl crate::store::conformance::Backend for Redb {
        type S = RedbStore;

        fn open(&self) -> Result<RedbStore, StoreError> {
            RedbStore::open(&self.path)
        }

        fn set_format(&self, version: u64) {
            let db = Database::create(&self.path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(FORMAT_KEY, version)
                .unwrap();
            txn.commit().unwrap();
        }

        fn fail_next_commit(
            &self,
            store: &RedbStore,
        ) -> Option<crate::store::conformance::FailureRule> {
            store.failure_switch().store(true, Ordering::Release);
            Some(crate::store::conformance::FailureRule::PoisonsUntilReopen)
        }
    }

    crate::store::conformance::suite!(Redb::new());

    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(RedbStore::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        // A file made readable by others (an older torc, a careless copy) is narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        store
            .commit(
                store.epoch(),
                &[Write::put(Table::Nodes, "a", &serde_json::json!({}))],
            )
            .unwrap();
    }

    /// A second process on the same file is refused (redb's lock), naming the file.
    #[test]
    fn one_writer_at_a_time() {
        let redb = Redb::new();
        let _first = RedbStore::open(&redb.path).unwrap();
        let err = RedbStore::open(&redb.path).err().expect("refused");
        assert!(
            err.to_string().contains(&redb.path.display().to_string()),
            "{err}"
        );
    }

    /// A store is created whole, so an empty file is a truncated one: refused, naming the
    /// file, never opened as a new (empty) rack. A leftover temporary file is no obstacle.
    #[test]
    fn an_empty_file_is_refused_not_taken_for_a_new_store() {
        let redb = Redb::new();
        std::fs::write(redb.path.with_extension("redb.tmp"), b"leftover").unwrap();
        drop(RedbStore::open(&redb.path).unwrap());
        assert!(!redb.path.with_extension("redb.tmp").exists());
        std::fs::File::create(&redb.path).unwrap();
        let err = RedbStore::open(&redb.path)
            .err()
            .expect("refused")
            .to_string();
        assert!(err.contains(&redb.path.display().to_string()), "{err}");
        assert!(err.contains("empty (0 bytes)"), "{err}");
    }

    fn names(store: &RedbStore) -> Vec<String> {
        let mut loaded = store.load().unwrap();
        let nodes: Vec<serde_json::Value> = loaded.take(Table::Nodes).unwrap();
        nodes
            .iter()
            .map(|n| n["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn put(store: &RedbStore, name: &str) -> Result<(), StoreError> {
        store.commit(
            store.epoch(),
            &[Write::put(
                Table::Nodes,
                name,
                &serde_json::json!({ "name": name }),
            )],
        )
    }

    /// A commit whose write the file system refuses for want of space (a real `ENOSPC`, from
    /// the file's backend under redb) fails alone, naming the file; the store, opened again
    /// by itself, keeps what was committed and takes the next commit, under the same epoch.
    #[test]
    fn a_commit_refused_for_want_of_space_fails_alone() {
        let redb = Redb::new();
        let store = RedbStore::open(&redb.path).unwrap();
        let epoch = store.epoch();
        put(&store, "kept").unwrap();
        *store.injector().lock().unwrap() = Some(Injected::NoSpace);
        let err = put(&store, "refused").unwrap_err();
        assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("no space left"), "{text}");
        assert!(text.contains(&redb.path.display().to_string()), "{text}");
        assert_eq!(names(&store), ["kept"]);
        store.writable().unwrap();
        put(&store, "later").unwrap();
        assert_eq!(names(&store), ["kept", "later"]);
        assert_eq!(store.epoch(), epoch);
        drop(store);
        let store = RedbStore::open(&redb.path).unwrap();
        assert_eq!(names(&store), ["kept", "later"]);
    }

    /// A failed sync poisons the store for good (fsyncgate): the page cache no longer says
    /// what the disk holds, so the file is not opened again behind the controller's back.
    #[test]
    fn a_failed_sync_poisons_the_store_until_a_restart() {
        let redb = Redb::new();
        let store = RedbStore::open(&redb.path).unwrap();
        put(&store, "kept").unwrap();
        *store.injector().lock().unwrap() = Some(Injected::SyncFails);
        let err = put(&store, "lost").unwrap_err();
        assert!(matches!(err, StoreError::Write(_)), "{err}");
        assert!(matches!(store.writable(), Err(StoreError::Poisoned)));
        assert!(matches!(put(&store, "later"), Err(StoreError::Poisoned)));
        drop(store);
        let store = RedbStore::open(&redb.path).unwrap();
        assert_eq!(names(&store), ["kept"]);
    }
}

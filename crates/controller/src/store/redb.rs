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
//! - The file carries a format version; a file of an unknown version is refused at open.
//! - One process at a time: redb locks the file, so a second controller on it fails to open.
//! - A new file is created whole under a temporary name and renamed into place, so an empty
//!   (0-byte) file is a truncated store: refused at open, naming the file, never taken for a
//!   new rack. (redb itself refuses a file truncated below its layout.)

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
#[cfg(test)]
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use ::redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{
    EPOCH_KEY, Epoch, FORMAT_KEY, FORMAT_VERSION, Loaded, Store, StoreError, Table, Write,
};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn table_def(table: Table) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(table.name())
}

pub struct RedbStore {
    db: Database,
    epoch: Epoch,
    poisoned: AtomicBool,
    /// Tests: the next commit fails as a failed fsync would, after its writes are staged.
    #[cfg(test)]
    fail_next: Arc<AtomicBool>,
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
        // redb's default page cache is 1 GiB; the controller's records need a few MiB.
        let db = ::redb::Builder::new()
            .set_cache_size(16 << 20)
            .create(path)
            .map_err(|e| open_err(&e))?;
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
            db,
            epoch: Epoch(epoch),
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            fail_next: Arc::default(),
        })
    }

    /// Tests: a switch that makes the next commit fail (set it to `true`), as a failed fsync
    /// would: the batch is staged in the transaction, which is then dropped, not committed.
    #[cfg(test)]
    pub(crate) fn failure_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.fail_next)
    }

    fn try_commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let mut txn = self.db.begin_write().map_err(|e| err(&e))?;
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
        let txn = self.db.begin_read().map_err(|e| read_err(&e))?;
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
                records.push(value);
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
        Ok(())
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
        let result = self.try_commit(writes);
        if result.is_err() {
            // After a failed commit we cannot know what reached the disk: fail closed.
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::{Path, PathBuf};

    use super::*;

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
}

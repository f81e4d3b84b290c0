//! The controller's durable state in one `redb` file: nodes, tasks, service instances,
//! frameworks, announced tasks, credentials' metadata and hashes, rack secrets (and the
//! task-token key, as they are), and counters (`meta`).
//!
//! Records are JSON documents keyed by name or id. Every change is one write transaction
//! committed with `Durability::Immediate`, so an acknowledged API call survives `kill -9`.
//! The file is created mode 0600 (and set to 0600 at every open): it holds the rack's
//! secrets.
//!
//! Invariants:
//! - Fails closed: once a commit fails (e.g. fsync), the store refuses every later write, and the
//!   controller answers 503 rather than acknowledging state it may not have kept.
//! - The file carries a format version; a file of an unknown version is refused at open.

use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

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

    fn name(self) -> &'static str {
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

    fn def(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name())
    }
}

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Bump when a record's meaning changes; `open` refuses other versions.
const FORMAT_VERSION: u64 = 1;

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
}

/// One change to persist.
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

/// Everything read back at start-up: each table's records, and the counters.
#[derive(Default)]
pub struct Loaded {
    pub records: std::collections::BTreeMap<Table, Vec<serde_json::Value>>,
    pub meta: Vec<(String, u64)>,
}

impl Loaded {
    /// Takes a table's records, decoded.
    pub fn take<T: DeserializeOwned>(&mut self, table: Table) -> Result<Vec<T>, StoreError> {
        self.records
            .remove(&table)
            .unwrap_or_default()
            .into_iter()
            .map(|v| {
                serde_json::from_value(v).map_err(|e| StoreError::Corrupt {
                    table: table.name(),
                    key: String::new(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub fn meta(&self, key: &str) -> Option<u64> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

pub struct Store {
    db: Database,
    poisoned: AtomicBool,
    /// Tests: the next commit fails as a failed fsync would.
    #[cfg(test)]
    fail_next: AtomicBool,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
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
        let db = redb::Builder::new()
            .set_cache_size(16 << 20)
            .create(path)
            .map_err(|e| open_err(&e))?;
        let txn = db.begin_write().map_err(|e| open_err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| open_err(&e))?;
            let found = meta
                .get("format_version")
                .map_err(|e| open_err(&e))?
                .map(|v| v.value());
            match found {
                None => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(|e| open_err(&e))?;
                }
                Some(FORMAT_VERSION) => {}
                Some(found) => return Err(StoreError::Version { path: shown, found }),
            }
            for table in Table::ALL {
                txn.open_table(table.def()).map_err(|e| open_err(&e))?;
            }
        }
        txn.commit().map_err(|e| open_err(&e))?;
        Ok(Store {
            db,
            poisoned: AtomicBool::new(false),
            #[cfg(test)]
            fail_next: AtomicBool::new(false),
        })
    }

    pub fn load(&self) -> Result<Loaded, StoreError> {
        let read_err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read_err(&e))?;
        let mut out = Loaded::default();
        for table in Table::ALL {
            let t = txn.open_table(table.def()).map_err(|e| read_err(&e))?;
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

    /// Whether a commit failed: from then on every commit is refused, until a restart.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Persist a batch atomically and durably.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        #[cfg(test)]
        if self.fail_next.swap(false, Ordering::AcqRel) {
            self.poisoned.store(true, Ordering::Release);
            return Err(StoreError::Write("injected failure".into()));
        }
        let result = self.try_commit(writes);
        if result.is_err() {
            // After a failed commit we cannot know what reached the disk: fail closed.
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    /// Tests: makes the next commit fail.
    #[cfg(test)]
    pub(crate) fn fail_next_commit(&self) {
        self.fail_next.store(true, Ordering::Release);
    }

    fn try_commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let mut txn = self.db.begin_write().map_err(|e| err(&e))?;
        // redb's default, stated: the commit returns after the data is fsynced.
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| err(&e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            for w in writes {
                match w {
                    Write::Put(table, k, v) => {
                        let mut t = txn.open_table(table.def()).map_err(|e| err(&e))?;
                        t.insert(k.as_str(), v.as_slice()).map_err(|e| err(&e))?;
                    }
                    Write::Delete(table, k) => {
                        let mut t = txn.open_table(table.def()).map_err(|e| err(&e))?;
                        t.remove(k.as_str()).map_err(|e| err(&e))?;
                    }
                    Write::Meta(k, v) => {
                        meta.insert(*k, *v).map_err(|e| err(&e))?;
                    }
                }
            }
        }
        txn.commit().map_err(|e| err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        {
            let store = Store::open(&path).unwrap();
            store
                .commit(&[
                    Write::put(Table::Nodes, "a", &serde_json::json!({"n": 1})),
                    Write::put(Table::Tasks, "t.1", &serde_json::json!({"t": 1})),
                    Write::put(Table::Tasks, "t.2", &serde_json::json!({"t": 2})),
                    Write::Delete(Table::Tasks, "t.1".into()),
                    Write::Meta("generation", 7),
                ])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let mut loaded = store.load().unwrap();
        assert_eq!(loaded.meta("generation"), Some(7));
        let nodes: Vec<serde_json::Value> = loaded.take(Table::Nodes).unwrap();
        assert_eq!(nodes, vec![serde_json::json!({"n": 1})]);
        let tasks: Vec<serde_json::Value> = loaded.take(Table::Tasks).unwrap();
        assert_eq!(tasks, vec![serde_json::json!({"t": 2})]);
        drop(store);

        // A future format is refused, not misread.
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("format_version", 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Store::open(&path).err().expect("refused");
        assert!(err.to_string().contains("format version 99"), "{err}");
    }

    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        drop(Store::open(&path).unwrap());
        assert_eq!(mode(&path), 0o600);
        // A file made readable by others (an older torc, a careless copy) is narrowed.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
        store
            .commit(&[Write::put(Table::Nodes, "a", &serde_json::json!({}))])
            .unwrap();
    }
}

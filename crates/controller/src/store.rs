//! The controller's durable state: node and task records in one `redb` file.
//!
//! Records are JSON documents keyed by name or id. Every change is one write transaction
//! committed with `Durability::Immediate`, so an acknowledged API call survives `kill -9`.
//!
//! Invariants:
//! - Fails closed: once a commit fails (e.g. fsync), the store refuses every later write, and the
//!   controller answers 503 rather than acknowledging state it may not have kept.
//! - The file carries a format version; a file of an unknown version is refused at open.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");
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
    PutNode(String, Vec<u8>),
    PutTask(String, Vec<u8>),
    DeleteTask(String),
    Meta(&'static str, u64),
}

impl Write {
    pub fn node<T: Serialize>(key: &str, value: &T) -> Write {
        Write::PutNode(key.to_string(), to_json(value))
    }

    pub fn task<T: Serialize>(key: &str, value: &T) -> Write {
        Write::PutTask(key.to_string(), to_json(value))
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Our own records always serialise: they hold no maps with non-string keys.
    serde_json::to_vec(value).expect("records serialise to JSON")
}

/// Everything read back at start-up.
pub struct Loaded<N, T> {
    pub nodes: Vec<N>,
    pub tasks: Vec<T>,
    pub meta: Vec<(String, u64)>,
}

pub struct Store {
    db: Database,
    poisoned: AtomicBool,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_err = |e: &dyn std::fmt::Display| StoreError::Open {
            path: shown.clone(),
            message: e.to_string(),
        };
        let db = Database::create(path).map_err(|e| open_err(&e))?;
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
            txn.open_table(NODES).map_err(|e| open_err(&e))?;
            txn.open_table(TASKS).map_err(|e| open_err(&e))?;
        }
        txn.commit().map_err(|e| open_err(&e))?;
        Ok(Store {
            db,
            poisoned: AtomicBool::new(false),
        })
    }

    pub fn load<N: DeserializeOwned, T: DeserializeOwned>(
        &self,
    ) -> Result<Loaded<N, T>, StoreError> {
        let read_err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let txn = self.db.begin_read().map_err(|e| read_err(&e))?;
        let mut out = Loaded {
            nodes: Vec::new(),
            tasks: Vec::new(),
            meta: Vec::new(),
        };
        for (name, def, sink) in [("nodes", NODES, 0), ("tasks", TASKS, 1)] {
            let table = txn.open_table(def).map_err(|e| read_err(&e))?;
            for entry in table.iter().map_err(|e| read_err(&e))? {
                let (k, v) = entry.map_err(|e| read_err(&e))?;
                let corrupt = |e: serde_json::Error| StoreError::Corrupt {
                    table: name,
                    key: k.value().to_string(),
                    message: e.to_string(),
                };
                if sink == 0 {
                    out.nodes
                        .push(serde_json::from_slice(v.value()).map_err(corrupt)?);
                } else {
                    out.tasks
                        .push(serde_json::from_slice(v.value()).map_err(corrupt)?);
                }
            }
        }
        let meta = txn.open_table(META).map_err(|e| read_err(&e))?;
        for entry in meta.iter().map_err(|e| read_err(&e))? {
            let (k, v) = entry.map_err(|e| read_err(&e))?;
            out.meta.push((k.value().to_string(), v.value()));
        }
        Ok(out)
    }

    /// Persist a batch atomically and durably.
    pub fn commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        let result = self.try_commit(writes);
        if result.is_err() {
            // After a failed commit we cannot know what reached the disk: fail closed.
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    fn try_commit(&self, writes: &[Write]) -> Result<(), StoreError> {
        let err = |e: &dyn std::fmt::Display| StoreError::Write(e.to_string());
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut nodes = txn.open_table(NODES).map_err(|e| err(&e))?;
            let mut tasks = txn.open_table(TASKS).map_err(|e| err(&e))?;
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            for w in writes {
                match w {
                    Write::PutNode(k, v) => {
                        nodes
                            .insert(k.as_str(), v.as_slice())
                            .map_err(|e| err(&e))?;
                    }
                    Write::PutTask(k, v) => {
                        tasks
                            .insert(k.as_str(), v.as_slice())
                            .map_err(|e| err(&e))?;
                    }
                    Write::DeleteTask(k) => {
                        tasks.remove(k.as_str()).map_err(|e| err(&e))?;
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
                    Write::node("a", &serde_json::json!({"n": 1})),
                    Write::task("t.1", &serde_json::json!({"t": 1})),
                    Write::task("t.2", &serde_json::json!({"t": 2})),
                    Write::DeleteTask("t.1".into()),
                    Write::Meta("generation", 7),
                ])
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let loaded = store
            .load::<serde_json::Value, serde_json::Value>()
            .unwrap();
        assert_eq!(loaded.nodes, vec![serde_json::json!({"n": 1})]);
        assert_eq!(loaded.tasks, vec![serde_json::json!({"t": 2})]);
        assert!(loaded.meta.contains(&("generation".to_string(), 7)));
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
}

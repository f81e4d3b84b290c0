//! Durable storage of the MVCC state in one redb file.
//!
//! Tables:
//! - `meta` (`&str` → `u64`): `format_version`, `cluster_id`, `member_id`,
//!   `revision` (latest committed), `compact_revision`.
//! - `log` (revision → `RevisionRecord`): every change at revisions
//!   `>= compact_revision`, without `prev_kv`.
//! - `base` (key → `mvccpb.KeyValue`): the keys live just before
//!   `compact_revision`. Replaying `log` over `base` rebuilds the in-memory
//!   [`Core`](crate::mvcc::Core) exactly, including the history reads and
//!   watches may still ask for.
//! - `leases` (id → `LeaseRecord`).
//!
//! Invariants: every commit is one redb write transaction with
//! `Durability::Immediate`, so a batch of mutations is durable as a whole or
//! not at all; compaction folds `log` entries below the compaction revision
//! into `base` in the same transaction that records the new
//! `compact_revision`. A file whose `format_version` is not
//! [`FORMAT_VERSION`] is refused, never guessed at.

use std::path::Path;

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{StorageError, redb_err};
use crate::mvcc::Mutation;
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};
use crate::proto::torc::kv::storage::{LeaseRecord, RevisionRecord};

/// Page cache of the store's database.
const CACHE_BYTES: usize = 32 << 20;

/// The on-disk format this build reads and writes.
pub const FORMAT_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const BASE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("base");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");

/// Everything read back when opening a store.
#[derive(Debug, Default)]
pub struct Loaded {
    pub cluster_id: u64,
    pub member_id: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub base: Vec<KeyValue>,
    pub log: Vec<(i64, Vec<Event>)>,
    /// `(id, ttl)`
    pub leases: Vec<(i64, i64)>,
}

pub struct Storage {
    db: Database,
}

fn corrupt(table: &'static str, key: impl ToString, reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        table,
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

fn rev_key(rev: i64) -> u64 {
    // Revisions are positive by construction.
    u64::try_from(rev).unwrap_or(0)
}

impl Storage {
    /// Opens (creating if needed) the store file. `new_ids` are the cluster
    /// and member IDs recorded if the file is new.
    pub fn open(path: &Path, new_ids: (u64, u64)) -> Result<(Storage, Loaded), StorageError> {
        // redb's default page cache is 1 GiB; a rack's state soup needs far less, and the
        // store shares a small controller box with the rest of the rack.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(redb_err)?;
        let storage = Storage { db };
        storage.init(new_ids)?;
        let loaded = storage.load()?;
        Ok((storage, loaded))
    }

    fn init(&self, (cluster_id, member_id): (u64, u64)) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let version = meta
                .get("format_version")
                .map_err(redb_err)?
                .map(|v| v.value());
            match version {
                Some(FORMAT_VERSION) => {}
                Some(found) => {
                    return Err(StorageError::UnsupportedFormat {
                        found,
                        supported: FORMAT_VERSION,
                    });
                }
                None => {
                    for (k, v) in [
                        ("format_version", FORMAT_VERSION),
                        ("cluster_id", cluster_id),
                        ("member_id", member_id),
                        ("revision", 1),
                        ("compact_revision", 0),
                    ] {
                        meta.insert(k, v).map_err(redb_err)?;
                    }
                }
            }
            txn.open_table(LOG).map_err(redb_err)?;
            txn.open_table(BASE).map_err(redb_err)?;
            txn.open_table(LEASES).map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }

    fn load(&self) -> Result<Loaded, StorageError> {
        let txn = self.db.begin_read().map_err(redb_err)?;
        let meta = txn.open_table(META).map_err(redb_err)?;
        let get = |k: &str| -> Result<u64, StorageError> {
            Ok(meta.get(k).map_err(redb_err)?.map_or(0, |v| v.value()))
        };
        let to_i64 =
            |k: &'static str, v: u64| i64::try_from(v).map_err(|_| corrupt("meta", k, "too large"));
        let mut loaded = Loaded {
            cluster_id: get("cluster_id")?,
            member_id: get("member_id")?,
            revision: to_i64("revision", get("revision")?)?,
            compact_revision: to_i64("compact_revision", get("compact_revision")?)?,
            ..Loaded::default()
        };
        let base = txn.open_table(BASE).map_err(redb_err)?;
        for row in base.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let kv = KeyValue::decode(v.value())
                .map_err(|e| corrupt("base", String::from_utf8_lossy(k.value()), e))?;
            loaded.base.push(kv);
        }
        let log = txn.open_table(LOG).map_err(redb_err)?;
        for row in log.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let rev = to_i64("log", k.value())?;
            let rec = RevisionRecord::decode(v.value()).map_err(|e| corrupt("log", rev, e))?;
            loaded.log.push((rev, rec.events));
        }
        let leases = txn.open_table(LEASES).map_err(redb_err)?;
        for row in leases.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let rec =
                LeaseRecord::decode(v.value()).map_err(|e| corrupt("leases", k.value(), e))?;
            loaded.leases.push((rec.id, rec.ttl));
        }
        Ok(loaded)
    }

    /// Makes `mutations` durable in one transaction (one fsync).
    pub fn commit<'a>(
        &self,
        mutations: impl IntoIterator<Item = &'a Mutation>,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let mut log = txn.open_table(LOG).map_err(redb_err)?;
            let mut base = txn.open_table(BASE).map_err(redb_err)?;
            let mut leases = txn.open_table(LEASES).map_err(redb_err)?;
            let mut latest = None;
            for m in mutations {
                match m {
                    Mutation::Revision(r) => {
                        let rec = RevisionRecord {
                            events: r
                                .events
                                .iter()
                                .map(|e| Event {
                                    r#type: e.r#type,
                                    kv: e.kv.clone(),
                                    prev_kv: None,
                                })
                                .collect(),
                        };
                        log.insert(rev_key(r.revision), rec.encode_to_vec().as_slice())
                            .map_err(redb_err)?;
                        latest = Some(r.revision);
                    }
                    Mutation::LeaseGrant { id, ttl } => {
                        let rec = LeaseRecord { id: *id, ttl: *ttl };
                        leases
                            .insert(*id, rec.encode_to_vec().as_slice())
                            .map_err(redb_err)?;
                    }
                    Mutation::LeaseRevoke { id } => {
                        leases.remove(*id).map_err(redb_err)?;
                    }
                    Mutation::Compact { revision } => {
                        fold_log(&mut log, &mut base, *revision)?;
                        meta.insert("compact_revision", rev_key(*revision))
                            .map_err(redb_err)?;
                    }
                }
            }
            if let Some(rev) = latest {
                meta.insert("revision", rev_key(rev)).map_err(redb_err)?;
            }
        }
        txn.commit().map_err(redb_err)
    }
}

/// Moves every logged revision below `revision` into `base`.
fn fold_log(
    log: &mut redb::Table<u64, &[u8]>,
    base: &mut redb::Table<&[u8], &[u8]>,
    revision: i64,
) -> Result<(), StorageError> {
    let mut folded = Vec::new();
    for row in log.range(..rev_key(revision)).map_err(redb_err)? {
        let (k, v) = row.map_err(redb_err)?;
        folded.push((k.value(), v.value().to_vec()));
    }
    for (rev, bytes) in folded {
        let rec = RevisionRecord::decode(bytes.as_slice()).map_err(|e| corrupt("log", rev, e))?;
        for ev in rec.events {
            let Some(kv) = ev.kv else { continue };
            if ev.r#type == EventType::Delete as i32 {
                base.remove(&kv.key[..]).map_err(redb_err)?;
            } else {
                base.insert(&kv.key[..], kv.encode_to_vec().as_slice())
                    .map_err(redb_err)?;
            }
        }
        log.remove(rev).map_err(redb_err)?;
    }
    Ok(())
}

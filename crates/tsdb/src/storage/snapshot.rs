//! Online backups and restores, the storage side: a consistent cut of some databases
//! ([`Tsdb::snapshot`]) and the installation of restored databases ([`Tsdb::install_restored`]).
//! What it does not do: the backup file's format, its checks or its streaming (see
//! [`crate::backup`]).
//!
//! The cut: a snapshot takes the flush lock and flushes while holding it. The flush freezes
//! every head under the exclusive gate, which waits for every write between its WAL append and
//! its head apply, so every write acknowledged before the snapshot began is in a frozen head,
//! and is in a segment once the flush returns. While the flush lock is held no other flush,
//! compaction, deletion, drop or retention sweep can add or change a segment, so the segments
//! listed then hold exactly the writes acknowledged before the freeze (later ones wait in the
//! heads). A segment is immutable and held in memory ([`Segment`]), so the snapshot keeps
//! `Arc`s of them: it costs no copy, and later compactions or drops do not change it. Nothing
//! a query can see changes (a flush moves data, it adds or removes none).
//!
//! A restore stages the segments of each database under `restore/<n>/` first (every segment
//! checked as a load would, written durably), then [`Tsdb::install_restored`] renames each
//! staged directory into `data/` and commits the databases to `meta.json`: that atomic
//! replacement is the commit point. A crash before it leaves directories that no database
//! names, removed at the next open (with what is left under `restore/`). It flushes first, under
//! the flush lock: the WAL then holds no record of an earlier database of the same name (a
//! deletion or a drop whose replay would touch the restored data).
//!
//! Invariants: a snapshot holds every write acknowledged before it was asked for and none that
//! was not acknowledged; a restored database is visible only once durable, and an existing
//! database is never overwritten.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::meta::DbMeta;
use super::tsdb::{Tsdb, now_ns};
use crate::Error;
use crate::names::dir_name;
use crate::segment::Segment;
use crate::wal;

/// A consistent cut of some databases: their catalog entries and their segments.
#[derive(Debug)]
pub struct Snapshot {
    /// When the cut was taken (ns since the epoch).
    pub taken_at_ns: i64,
    pub databases: Vec<DatabaseSnapshot>,
}

/// One database of a [`Snapshot`].
#[derive(Debug)]
pub struct DatabaseSnapshot {
    pub name: String,
    /// Its retention policies and continuous queries.
    pub meta: DbMeta,
    /// Per retention policy (sorted by name), its segments in precedence order.
    pub shards: Vec<(String, Vec<Arc<Segment>>)>,
}

/// A database staged for [`Tsdb::install_restored`]: its catalog entry and a directory holding
/// one subdirectory per retention policy (named as under `data/<db>/`).
#[derive(Debug)]
pub struct StagedDatabase {
    /// The name it takes.
    pub name: String,
    pub meta: DbMeta,
    pub dir: PathBuf,
}

impl Tsdb {
    /// A consistent cut of database `only`, or of every database (see the module's doc).
    pub async fn snapshot(&self, only: Option<&str>) -> Result<Snapshot, Error> {
        self.check_poison()?;
        if let Some(d) = only
            && self.database(d).is_none()
        {
            return Err(Error::DatabaseNotFound(d.to_string()));
        }
        let _f = self.flush_lock.lock().await;
        self.flush_held().await?;
        let taken_at_ns = now_ns();
        let meta = self.meta().databases.clone();
        let mut databases = Vec::new();
        for (name, dm) in meta {
            if only.is_some_and(|d| d != name) {
                continue;
            }
            let shards = dm
                .rps
                .keys()
                .map(|rp| {
                    let segs = self
                        .shards
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&(name.clone(), rp.clone()))
                        .map(|s| s.read().segments.clone())
                        .unwrap_or_default();
                    (rp.clone(), segs)
                })
                .collect();
            databases.push(DatabaseSnapshot {
                name,
                meta: dm,
                shards,
            });
        }
        if let Some(d) = only
            && databases.is_empty()
        {
            // Dropped between the check and the lock.
            return Err(Error::DatabaseNotFound(d.to_string()));
        }
        Ok(Snapshot {
            taken_at_ns,
            databases,
        })
    }

    /// A new, empty directory under `restore/` to stage a restore in.
    pub fn staging_dir(&self) -> Result<PathBuf, Error> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .dir
            .join("restore")
            .join(format!("{}-{n}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::io(format!("removing {}", dir.display()), e))?;
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        Ok(dir)
    }

    /// The directory, under a staging directory, of one database's retention policy.
    pub fn staged_shard_dir(staged: &Path, rp: &str) -> PathBuf {
        staged.join(dir_name(rp))
    }

    /// Makes staged databases part of the store, all or none: refused with
    /// [`Error::DatabaseExists`] when one of their names is taken. Durable when it returns
    /// (see the module's doc).
    pub async fn install_restored(&self, staged: Vec<StagedDatabase>) -> Result<(), Error> {
        self.check_poison()?;
        let _f = self.flush_lock.lock().await;
        self.flush_held().await?;
        self.check_free(&staged)?;
        let data = self.dir.join("data");
        let mut moved = Vec::new();
        let result = self.move_and_load(&staged, &data, &mut moved);
        let result = result.and_then(|()| {
            self.update_meta(|next| {
                for s in &staged {
                    if next.databases.contains_key(&s.name) {
                        return Err(Error::DatabaseExists(s.name.clone()));
                    }
                    next.databases.insert(s.name.clone(), s.meta.clone());
                }
                Ok(true)
            })
            .map(|_| ())
        });
        if result.is_err() {
            // Nothing names them: unload and remove what was moved (the next open would).
            for s in &staged {
                self.shards
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .retain(|(d, _), _| *d != s.name);
                self.db_series
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&s.name);
            }
            for d in moved {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        result
    }

    fn check_free(&self, staged: &[StagedDatabase]) -> Result<(), Error> {
        let m = self.meta();
        match staged.iter().find(|s| m.databases.contains_key(&s.name)) {
            Some(s) => Err(Error::DatabaseExists(s.name.clone())),
            None => Ok(()),
        }
    }

    /// Renames each staged directory to `data/<db>` (a leftover of a database that no longer
    /// exists goes first) and loads its shards.
    fn move_and_load(
        &self,
        staged: &[StagedDatabase],
        data: &Path,
        moved: &mut Vec<PathBuf>,
    ) -> Result<(), Error> {
        for s in staged {
            for rp in s.meta.rps.keys() {
                self.allow_long_dir(&s.name, rp)?;
            }
            let target = data.join(dir_name(&s.name));
            if target.exists() {
                std::fs::remove_dir_all(&target)
                    .map_err(|e| Error::io(format!("removing {}", target.display()), e))?;
            }
            std::fs::rename(&s.dir, &target).map_err(|e| {
                Error::io(
                    format!("moving {} to {}", s.dir.display(), target.display()),
                    e,
                )
            })?;
            moved.push(target);
        }
        wal::sync_dir(data)?;
        for s in staged {
            for rp in s.meta.rps.keys() {
                self.shard(&s.name, rp)?;
            }
        }
        Ok(())
    }
}

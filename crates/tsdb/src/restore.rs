//! Restores: a backup file ([`crate::backup`]) read, checked and installed into a store, as
//! `influxd restore -portable -db X -newdb Y` does it, into a running server (`POST
//! /torc/restore`) or into a store opened on an empty directory (`torc tsdb restore
//! --data-dir`).
//! What it is not: the file format or its checks (see [`crate::backup`]), or the durable
//! installation (see [`Tsdb::install_restored`]).
//!
//! Which databases: all in the backup, each under its own name, or one (`db`), under its own
//! name or a new one (`newdb`). A database of that name must not exist: a restore never
//! overwrites one. With a new name, the database's continuous queries are rewritten to read
//! and write the new database where they named the old one (influxd keeps their text).
//!
//! Invariants: nothing changes in the store unless the whole file was read and passed its
//! checks (its segments are staged under `restore/`, removed on any failure), and then the
//! chosen databases appear together, durably (see [`Tsdb::install_restored`]).

use std::io::Read;
use std::sync::Arc;

use axum::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::backup::{BackupError, BackupReader, Item};
use crate::influxql::{self, Select, Source, Statement};
use crate::segment;
use crate::storage::{DbMeta, StagedDatabase, Tsdb};

/// Why a restore was refused (nothing was changed).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Storage(#[from] Error),
    #[error("database {db:?} is not in the backup (it holds {have:?})")]
    NotInBackup { db: String, have: Vec<String> },
    #[error("a new name (newdb) needs the database it renames (db)")]
    NewDbWithoutDb,
}

/// Which databases of a backup to restore, and under which name.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this one (all when `None`).
    pub db: Option<String>,
    /// The name it takes (its own when `None`).
    pub newdb: Option<String>,
}

impl Selection {
    /// The name the backup's database `name` takes, or `None` when it is not restored.
    fn target(&self, name: &str) -> Option<String> {
        match &self.db {
            Some(d) if d != name => None,
            Some(_) => Some(self.newdb.clone().unwrap_or_else(|| name.to_string())),
            None => Some(name.to_string()),
        }
    }
}

/// One restored database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Restored {
    /// Its name in the store.
    pub database: String,
    /// Its name in the backup.
    pub from: String,
    pub retention_policies: usize,
    pub continuous_queries: usize,
    pub segments: u64,
    pub values: u64,
}

/// Restores the databases `sel` chooses from the backup `r` into `tsdb` (see the module's
/// doc). The file is read on a blocking thread.
pub async fn restore(
    tsdb: Arc<Tsdb>,
    r: impl Read + Send + 'static,
    sel: Selection,
) -> Result<Vec<Restored>, RestoreError> {
    if sel.newdb.is_some() && sel.db.is_none() {
        return Err(RestoreError::NewDbWithoutDb);
    }
    if let Some(n) = &sel.newdb {
        crate::names::check_name(crate::names::NameKind::Database, n).map_err(Error::from)?;
    }
    let t = tsdb.clone();
    let result = async {
        let (staged, restored) = tokio::task::spawn_blocking(move || stage(&t, r, &sel))
            .await
            .map_err(|e| Error::io("staging a restore", std::io::Error::other(e)))??;
        let dirs: Vec<_> = staged.iter().map(|s| s.dir.clone()).collect();
        let installed = tsdb.install_restored(staged).await;
        if installed.is_err() {
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        }
        installed?;
        Ok(restored)
    }
    .await;
    // The staging root goes once empty (a restore running alongside keeps it).
    let _ = std::fs::remove_dir(tsdb.dir().join("restore"));
    result
}

type Staged = (Vec<StagedDatabase>, Vec<Restored>);

/// Reads the whole backup and stages the chosen databases; on any error removes what it
/// staged.
fn stage(tsdb: &Tsdb, r: impl Read, sel: &Selection) -> Result<Staged, RestoreError> {
    let mut staged = Vec::new();
    match stage_into(tsdb, r, sel, &mut staged) {
        Ok(restored) => Ok((staged, restored)),
        Err(e) => {
            for s in staged {
                let _ = std::fs::remove_dir_all(s.dir);
            }
            Err(e)
        }
    }
}

fn stage_into(
    tsdb: &Tsdb,
    r: impl Read,
    sel: &Selection,
    staged: &mut Vec<StagedDatabase>,
) -> Result<Vec<Restored>, RestoreError> {
    let mut rd = BackupReader::open(r)?;
    let have = rd.manifest().databases.clone();
    if let Some(db) = &sel.db
        && !have.contains(db)
    {
        return Err(RestoreError::NotInBackup {
            db: db.clone(),
            have,
        });
    }
    // Refused before the data is read: a name that is taken.
    for name in &have {
        if let Some(t) = sel.target(name)
            && tsdb.database(&t).is_some()
        {
            return Err(Error::DatabaseExists(t).into());
        }
    }
    let mut restored: Vec<Restored> = Vec::new();
    // The database whose segments follow: its name in the backup, and where it is staged.
    let mut current: Option<(String, Option<usize>)> = None;
    loop {
        match rd.next_item()? {
            Item::Database { name, mut meta } => {
                if !have.contains(&name) || restored.iter().any(|r| r.from == name) {
                    return Err(rd
                        .damaged(format!(
                            "database {name:?} is not in the manifest or comes twice"
                        ))
                        .into());
                }
                let at = match sel.target(&name) {
                    Some(t) => {
                        if t != name {
                            rename_queries(&mut meta, &name, &t);
                        }
                        restored.push(Restored {
                            database: t.clone(),
                            from: name.clone(),
                            retention_policies: meta.rps.len(),
                            continuous_queries: meta.continuous_queries.len(),
                            segments: 0,
                            values: 0,
                        });
                        staged.push(StagedDatabase {
                            name: t,
                            meta,
                            dir: tsdb.staging_dir()?,
                        });
                        Some(staged.len() - 1)
                    }
                    None => None,
                };
                current = Some((name, at));
            }
            Item::Segment { db, rp, seq, bytes } => {
                let Some((name, at)) = &current else {
                    return Err(rd
                        .damaged(format!("a segment of {db:?} before any database record"))
                        .into());
                };
                if *name != db {
                    return Err(rd
                        .damaged(format!("a segment of {db:?} among those of {name:?}"))
                        .into());
                }
                let Some(i) = *at else { continue };
                let s = &staged[i];
                if !s.meta.rps.contains_key(&rp) {
                    return Err(rd
                        .damaged(format!(
                            "a segment of retention policy {rp:?}, which database {db:?} does not have"
                        ))
                        .into());
                }
                let dir = Tsdb::staged_shard_dir(&s.dir, &rp);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                let seg = segment::write_checked(&dir, seq, bytes).map_err(|e| match e {
                    Error::Corrupt { .. } | Error::UnsupportedFormat { .. } => {
                        RestoreError::from(rd.damaged(format!("segment {seq} of {db}.{rp}: {e}")))
                    }
                    e => e.into(),
                })?;
                restored[i].segments += 1;
                restored[i].values += seg.values();
            }
            Item::End(_) => break,
        }
    }
    for name in &have {
        if sel.target(name).is_some() && !restored.iter().any(|r| r.from == *name) {
            return Err(BackupError::Damaged {
                index: 0,
                offset: 0,
                what: format!(
                    "the manifest lists database {name:?}, the file holds no record of it"
                ),
            }
            .into());
        }
    }
    // The retention policies' directories are entries of each staged directory.
    for s in staged.iter() {
        crate::wal::sync_dir(&s.dir)?;
    }
    Ok(restored)
}

/// Rewrites a renamed database's continuous queries: `ON` and every source or target that
/// named the old database name the new one. A query that does not parse is kept as it is.
fn rename_queries(meta: &mut DbMeta, from: &str, to: &str) {
    for cq in &mut meta.continuous_queries {
        if let Ok(Statement::CreateContinuousQuery(mut c)) = influxql::parse_statement(&cq.query) {
            if c.database == from {
                c.database = to.to_string();
            }
            rename_select(&mut c.select, from, to);
            cq.query = Statement::CreateContinuousQuery(c).to_string();
        }
    }
}

fn rename_select(sel: &mut Select, from: &str, to: &str) {
    let rename = |d: &mut Option<String>| {
        if d.as_deref() == Some(from) {
            *d = Some(to.to_string());
        }
    };
    for src in &mut sel.sources {
        match src {
            Source::Subquery(inner) => rename_select(inner, from, to),
            Source::Measurement { database, .. } | Source::Regex { database, .. } => {
                rename(database)
            }
        }
    }
    if let Some(t) = &mut sel.into {
        rename(&mut t.database);
    }
}

/// A blocking [`Read`] over chunks sent from async code (a request body), for [`restore`].
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>,
    cur: Bytes,
}

impl ChannelReader {
    pub fn new(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

//! Snapshots in etcd 3.4's own format: what the Maintenance `Snapshot` RPC
//! streams (so `etcdctl snapshot save` writes a file `etcdctl snapshot
//! status` reads and `etcdctl snapshot restore` turns into a data dir a
//! real etcd serves), and what `torc kv restore` reads back (from torc or
//! from a real etcd).
//!
//! The file: a bbolt database ([`bbolt_write`], [`bbolt_read`]) with etcd's
//! buckets, then the sha256 of those bytes (32 bytes), as etcd's snapshot
//! stream ends. Buckets and encodings (etcd 3.4's `mvcc`, `lease`, `auth`):
//! - `key`: every kept revision of every key. The bbolt key is the revision,
//!   main (8 bytes, big-endian) `_` sub (8 bytes), with a `t` appended for a
//!   deletion (a tombstone); the value is the `mvccpb.KeyValue` (only the
//!   key for a tombstone). Sub-revisions number a revision's changes in
//!   their order; for the keys in redb's `base`, whose order within a
//!   revision is not kept, in key order.
//! - `meta`: `consistent_index` (8 bytes, big-endian: the revision, which
//!   torc reports as its raft index), and once compacted
//!   `scheduledCompactRev` and `finishedCompactRev` (17-byte revisions). The
//!   compaction is written as etcd writes one still under way when the
//!   store has compacted history not yet folded away: `finished` is where
//!   the kept revisions start (each key's latest version below it, then
//!   every change), `scheduled` the compaction point, which etcd finishes
//!   when it opens the data.
//! - `lease`: id (8 bytes, big-endian) → `leasepb.Lease` (id, TTL).
//! - `auth`: `authEnabled` (one byte) and `authRevision` (8 bytes,
//!   big-endian); `authUsers` and `authRoles`: name → `authpb.User` (the
//!   password as its bcrypt hash) and `authpb.Role`.
//!
//! Not written: etcd's `members`, `members_removed`, `cluster` and `alarm`
//! buckets (`etcdctl snapshot restore` replaces the members anyway; a
//! NOSPACE alarm is not carried over), and a lease's remaining TTL (leases
//! get their whole TTL again, as torc and etcd give them after a restart).
//! Read back by `torc kv restore`: `key`, `meta`, `lease` and the auth
//! buckets; the others are ignored.
//!
//! Consistency and bounds: a snapshot is one redb read transaction (writes
//! go on meanwhile), taken once redb holds every revision committed when it
//! was asked for. It is written twice from that view, the first time only
//! counted (the bbolt meta pages at the front need the page count and the
//! root page), and streamed in chunks; what is held in memory is a page per
//! tree level and a window of `base`'s rows (redb keeps them by key; the
//! `key` bucket wants them by revision: [`base_by_revision`] takes them in
//! that order a window at a time, one pass over the table per window). A restore reads the file page by
//! page and writes redb in transactions of [`RESTORE_BATCH`] revisions.

pub mod bbolt_read;
pub mod bbolt_write;

use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use prost::Message;
use sha2::{Digest, Sha256};

use crate::auth::AuthMutation;
use crate::error::StorageError;
use crate::mvcc::{Mutation, RevisionEvents};
use crate::proto::authpb::{Role, User};
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};
use crate::storage::{Storage, View};
use bbolt_read::{BoltError, BoltFile};
use bbolt_write::{BUCKET_ELEMENT, FIRST_DATA_PAGE, PAGE_SIZE, PageOut, Tree, bucket_value};

/// The sha256 trailer's length.
pub const TRAILER: usize = 32;
/// Revisions written to redb per transaction by a restore.
pub const RESTORE_BATCH: usize = 4096;

/// etcd's `leasepb.Lease`, the `lease` bucket's values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdLease {
    #[prost(int64, tag = "1")]
    pub id: i64,
    #[prost(int64, tag = "2")]
    pub ttl: i64,
    #[prost(int64, tag = "3")]
    pub remaining_ttl: i64,
}

/// Why a snapshot could not be written or restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Bolt(#[from] BoltError),
    #[error("writing the snapshot: {0}")]
    Write(#[source] io::Error),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is not an etcd snapshot: {reason}")]
    NotSnapshot { path: PathBuf, reason: String },
    #[error(
        "{path} is damaged: the sha256 of its first {bytes} bytes is {actual}, its trailer says \
         {expected} (truncated or changed since it was saved)"
    )]
    HashMismatch {
        path: PathBuf,
        bytes: u64,
        actual: String,
        expected: String,
    },
    #[error("{path}: bucket `{bucket}`: {reason}")]
    BadEntry {
        path: PathBuf,
        bucket: &'static str,
        reason: String,
    },
    #[error("{path} is not empty; restore into a new or empty directory")]
    DirNotEmpty { path: PathBuf },
    #[error("cannot write the data dir {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error(
        "the store changed under its own snapshot (pages: {counted} counted, {written} written)"
    )]
    Unstable { counted: u64, written: u64 },
}

/// The 17-byte revision key (main `_` sub), with `t` for a tombstone.
fn rev_key(main: i64, sub: u64, tombstone: bool) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(&(main as u64).to_be_bytes());
    k.push(b'_');
    k.extend_from_slice(&sub.to_be_bytes());
    if tombstone {
        k.push(b't');
    }
    k
}

/// What a snapshot of a view holds, read once.
pub struct Plan {
    revision: i64,
    /// `(finished, scheduled)` compaction, if any.
    compaction: Option<(i64, i64)>,
    /// The page count and the root bucket's root page.
    pages: u64,
    root: u64,
}

impl Plan {
    /// The snapshot's size: its database and trailer.
    pub fn size(&self) -> u64 {
        self.pages * PAGE_SIZE as u64 + TRAILER as u64
    }

    /// The revision the snapshot is of.
    pub fn revision(&self) -> i64 {
        self.revision
    }
}

/// Reads what `view` holds and lays its snapshot out (without writing it).
pub fn plan(view: &View) -> Result<Plan, SnapshotError> {
    let revision = i64::try_from(view.meta("revision")?).unwrap_or(i64::MAX);
    let compact = i64::try_from(view.meta("compact_revision")?).unwrap_or(i64::MAX);
    let compaction = (compact > 0).then(|| -> Result<(i64, i64), SnapshotError> {
        let folded = match view.oldest_logged()? {
            Some(oldest) => (oldest - 1).min(compact),
            None => compact,
        };
        Ok((folded.max(1), compact))
    });
    let mut plan = Plan {
        revision,
        compaction: compaction.transpose()?,
        pages: 0,
        root: 0,
    };
    let mut counter = PageOut::counting(FIRST_DATA_PAGE);
    plan.root = write_buckets(view, &plan, &mut counter)?;
    plan.pages = counter.next_id();
    Ok(plan)
}

/// Writes the snapshot `plan` laid out for `view` to `out`: the bbolt
/// database, then its sha256.
pub fn write(view: &View, plan: &Plan, out: &mut dyn Write) -> Result<(), SnapshotError> {
    let mut hashed = Hashing {
        out,
        hash: Sha256::new(),
    };
    bbolt_write::write_head(&mut hashed, plan.root, plan.pages).map_err(SnapshotError::Write)?;
    let mut pages = PageOut::writing(&mut hashed, FIRST_DATA_PAGE);
    let root = write_buckets(view, plan, &mut pages)?;
    let written = pages.next_id();
    if (root, written) != (plan.root, plan.pages) {
        return Err(SnapshotError::Unstable {
            counted: plan.pages,
            written,
        });
    }
    let sum = hashed.hash.finalize();
    hashed.out.write_all(&sum).map_err(SnapshotError::Write)
}

/// A writer that hashes what passes through it.
struct Hashing<'a> {
    out: &'a mut dyn Write,
    hash: Sha256,
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Bytes of `base` rows held at once while they are put in revision order.
const BASE_WINDOW_BYTES: usize = 16 << 20;

/// Calls `f` with `base`'s rows (mod revision, encoded `KeyValue`) in
/// (mod revision, key) order, with about `window` bytes of rows held: each
/// pass over the table keeps the smallest rows past the last one given (a
/// max-heap it trims to the window), so a table of any size takes
/// size/window passes and no more memory.
fn base_by_revision(
    view: &View,
    window: usize,
    f: &mut crate::storage::Row<'_, i64, SnapshotError>,
) -> Result<(), SnapshotError> {
    let mut after: Option<(i64, Vec<u8>)> = None;
    loop {
        let mut heap: BinaryHeap<(i64, Vec<u8>, Vec<u8>)> = BinaryHeap::new();
        let mut held = 0usize;
        let mut left_out = false;
        view.base::<SnapshotError>(&mut |key, value| {
            let kv = KeyValue::decode(value).map_err(|e| StorageError::Corrupt {
                table: "base",
                key: String::from_utf8_lossy(key).into_owned(),
                reason: e.to_string(),
            })?;
            let rev = kv.mod_revision;
            if after
                .as_ref()
                .is_some_and(|(r, k)| (rev, key) <= (*r, k.as_slice()))
            {
                return Ok(());
            }
            heap.push((rev, key.to_vec(), value.to_vec()));
            held += key.len() + value.len();
            while held > window && heap.len() > 1 {
                if let Some((_, k, v)) = heap.pop() {
                    held -= k.len() + v.len();
                    left_out = true;
                }
            }
            Ok(())
        })?;
        let rows = heap.into_sorted_vec();
        for (rev, _, value) in &rows {
            f(rev, value)?;
        }
        match rows.into_iter().next_back() {
            Some((rev, key, _)) if left_out => after = Some((rev, key)),
            _ => return Ok(()),
        }
    }
}

/// Writes every bucket's tree, then the root bucket's; returns its root.
fn write_buckets(view: &View, plan: &Plan, out: &mut PageOut) -> Result<u64, SnapshotError> {
    let w = SnapshotError::Write;
    let mut roots: Vec<(&[u8], u64)> = Vec::new();

    // auth
    let mut t = Tree::new();
    let enabled = [u8::from(view.meta("auth_enabled")? == 1)];
    t.push(out, 0, b"authEnabled", &enabled).map_err(w)?;
    let auth_rev = view.meta("auth_revision")?.to_be_bytes();
    t.push(out, 0, b"authRevision", &auth_rev).map_err(w)?;
    roots.push((b"auth", t.finish(out).map_err(w)?));

    for (name, users) in [(&b"authRoles"[..], false), (&b"authUsers"[..], true)] {
        let mut t = Tree::new();
        view.auth::<SnapshotError>(users, &mut |k, v| {
            t.push(out, 0, k.as_bytes(), v).map_err(w)
        })?;
        roots.push((name, t.finish(out).map_err(w)?));
    }

    // key
    let mut t = Tree::new();
    let mut last = (0i64, 0u64);
    base_by_revision(view, BASE_WINDOW_BYTES, &mut |&rev, value| {
        let sub = if last.0 == rev { last.1 + 1 } else { 0 };
        last = (rev, sub);
        t.push(out, 0, &rev_key(rev, sub, false), value).map_err(w)
    })?;
    view.log::<SnapshotError>(&mut |rev, events| {
        for (sub, ev) in events.iter().enumerate() {
            let Some(kv) = &ev.kv else { continue };
            if ev.r#type == EventType::Delete as i32 {
                let tomb = KeyValue {
                    key: kv.key.clone(),
                    ..KeyValue::default()
                };
                t.push(
                    out,
                    0,
                    &rev_key(rev, sub as u64, true),
                    &tomb.encode_to_vec(),
                )
                .map_err(w)?;
            } else {
                t.push(
                    out,
                    0,
                    &rev_key(rev, sub as u64, false),
                    &kv.encode_to_vec(),
                )
                .map_err(w)?;
            }
        }
        Ok(())
    })?;
    roots.push((b"key", t.finish(out).map_err(w)?));

    // lease
    let mut leases = view.leases()?;
    leases.sort_unstable_by_key(|(id, _)| *id as u64);
    let mut t = Tree::new();
    for (id, ttl) in leases {
        let v = EtcdLease {
            id,
            ttl,
            remaining_ttl: 0,
        };
        t.push(out, 0, &id.to_be_bytes(), &v.encode_to_vec())
            .map_err(w)?;
    }
    roots.push((b"lease", t.finish(out).map_err(w)?));

    // meta
    let mut t = Tree::new();
    t.push(
        out,
        0,
        b"consistent_index",
        &(plan.revision as u64).to_be_bytes(),
    )
    .map_err(w)?;
    if let Some((finished, scheduled)) = plan.compaction {
        t.push(out, 0, b"finishedCompactRev", &rev_key(finished, 0, false))
            .map_err(w)?;
        t.push(
            out,
            0,
            b"scheduledCompactRev",
            &rev_key(scheduled, 0, false),
        )
        .map_err(w)?;
    }
    roots.push((b"meta", t.finish(out).map_err(w)?));

    let mut root = Tree::new();
    for (name, page) in roots {
        root.push(out, BUCKET_ELEMENT, name, &bucket_value(page))
            .map_err(w)?;
    }
    root.finish(out).map_err(w)
}

/// What a restore wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub revision: i64,
    pub compact_revision: i64,
    /// Entries of the `key` bucket (revisions of keys, tombstones included).
    pub key_revisions: u64,
    pub leases: u64,
    pub users: u64,
    pub roles: u64,
}

/// Checks `snapshot`'s sha256 trailer and returns the database's length.
pub fn verify(snapshot: &Path) -> Result<u64, SnapshotError> {
    let read = |source| SnapshotError::Read {
        path: snapshot.to_owned(),
        source,
    };
    let not = |reason: String| SnapshotError::NotSnapshot {
        path: snapshot.to_owned(),
        reason,
    };
    let mut file = std::fs::File::open(snapshot).map_err(read)?;
    let len = file.metadata().map_err(read)?.len();
    // As `etcdctl snapshot restore`: a database of whole 512-byte blocks, then the hash.
    if len < TRAILER as u64 || !(len - TRAILER as u64).is_multiple_of(512) || len == TRAILER as u64
    {
        return Err(not(format!(
            "its {len} bytes are not whole 512-byte blocks and a 32-byte sha256 trailer (a bare \
             database file, or a truncated snapshot?)"
        )));
    }
    let db_len = len - TRAILER as u64;
    let mut hash = Sha256::new();
    let mut left = db_len;
    let mut buf = vec![0u8; 1 << 16];
    while left > 0 {
        let n = (left as usize).min(buf.len());
        file.read_exact(&mut buf[..n]).map_err(read)?;
        hash.update(&buf[..n]);
        left -= n as u64;
    }
    let mut trailer = [0u8; TRAILER];
    file.read_exact(&mut trailer).map_err(read)?;
    let actual = hash.finalize();
    if actual[..] != trailer[..] {
        return Err(SnapshotError::HashMismatch {
            path: snapshot.to_owned(),
            bytes: db_len,
            actual: hex(&actual),
            expected: hex(&trailer),
        });
    }
    Ok(db_len)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Restores `snapshot` (etcd's format, from torc or from etcd) into a new
/// torc kv data dir `data_dir`, which must be missing or empty. The data is
/// written into a temporary directory beside it and renamed into place, so
/// a failed restore leaves nothing behind.
pub fn restore(snapshot: &Path, data_dir: &Path) -> Result<Restored, SnapshotError> {
    let dir_err = |source| SnapshotError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(SnapshotError::DirNotEmpty {
            path: data_dir.to_owned(),
        });
    }
    let db_len = verify(snapshot)?;
    let bolt = BoltFile::open(snapshot, db_len)?;
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(dir_err)?;
    let tmp = tempfile::Builder::new()
        .prefix(".torc-kv-restore-")
        .tempdir_in(&parent)
        .map_err(dir_err)?;
    let ids = (random_u64()? | 1, random_u64()? | 1);
    let (storage, wal, _) = Storage::open(&tmp.path().join(crate::DB_FILE), ids)?;
    let restored = Restore {
        bolt: &bolt,
        path: snapshot,
        storage: &storage,
    }
    .run()?;
    drop(storage);
    drop(wal);
    // Missing or empty: rename(2) replaces an empty directory.
    std::fs::rename(tmp.path(), data_dir).map_err(dir_err)?;
    torc_durable::sync_dir(&parent).map_err(dir_err)?;
    let _ = tmp.keep();
    Ok(restored)
}

fn random_u64() -> Result<u64, SnapshotError> {
    getrandom::u64().map_err(|e| SnapshotError::Write(io::Error::other(e.to_string())))
}

struct Restore<'a> {
    bolt: &'a BoltFile,
    path: &'a Path,
    storage: &'a Storage,
}

impl Restore<'_> {
    fn bad(&self, bucket: &'static str, reason: impl Into<String>) -> SnapshotError {
        SnapshotError::BadEntry {
            path: self.path.to_owned(),
            bucket,
            reason: reason.into(),
        }
    }

    /// Calls `f` with each key and value of the top-level bucket `name`, if the file has it.
    fn each(
        &self,
        name: &'static str,
        f: &mut crate::storage::Row<'_, [u8], SnapshotError>,
    ) -> Result<(), SnapshotError> {
        match self.bolt.bucket(name.as_bytes())? {
            Some(bucket) => self.bolt.walk(&bucket, &mut |_, k, v| f(k, v)),
            None => Ok(()),
        }
    }

    fn commit(&self, mutations: &mut Vec<Mutation>) -> Result<(), SnapshotError> {
        self.storage.commit(mutations.iter(), 0, false)?;
        mutations.clear();
        Ok(())
    }

    fn run(&self) -> Result<Restored, SnapshotError> {
        let mut done = Restored {
            revision: 1,
            compact_revision: 0,
            key_revisions: 0,
            leases: 0,
            users: 0,
            roles: 0,
        };
        let Some(keys) = self.bolt.bucket(b"key")? else {
            return Err(SnapshotError::NotSnapshot {
                path: self.path.to_owned(),
                reason: "it has no `key` bucket".into(),
            });
        };
        // Revisions in order, each with its changes in sub-revision order.
        let mut batch: Vec<Mutation> = Vec::new();
        let mut current: Option<RevisionEvents> = None;
        self.bolt.walk::<SnapshotError>(&keys, &mut |_, key, value| {
            let (main, tombstone) = match key.len() {
                17 if key[8] == b'_' => (key, false),
                18 if key[8] == b'_' && key[17] == b't' => (&key[..17], true),
                n => return Err(self.bad("key", format!("a key of {n} bytes is not a revision"))),
            };
            let main = i64::from_be_bytes(main[..8].try_into().unwrap_or_default());
            let kv = KeyValue::decode(value)
                .map_err(|e| self.bad("key", format!("revision {main}: {e}")))?;
            let event = if tombstone {
                Event {
                    r#type: EventType::Delete as i32,
                    kv: Some(KeyValue {
                        key: kv.key,
                        mod_revision: main,
                        ..KeyValue::default()
                    }),
                    prev_kv: None,
                }
            } else {
                Event {
                    r#type: EventType::Put as i32,
                    kv: Some(kv),
                    prev_kv: None,
                }
            };
            done.key_revisions += 1;
            match &mut current {
                Some(r) if r.revision == main => r.events.push(event),
                _ => {
                    if let Some(r) = current.take() {
                        batch.push(Mutation::Revision(r.into()));
                        if batch.len() >= RESTORE_BATCH {
                            self.commit(&mut batch)?;
                        }
                    }
                    done.revision = done.revision.max(main);
                    current = Some(RevisionEvents {
                        revision: main,
                        events: vec![event],
                    });
                }
            }
            Ok(())
        })?;
        if let Some(r) = current.take() {
            batch.push(Mutation::Revision(r.into()));
        }
        self.commit(&mut batch)?;

        self.each("meta", &mut |key, value| {
            if key == b"finishedCompactRev" || key == b"scheduledCompactRev" {
                let rev: [u8; 8] = value
                    .get(..8)
                    .and_then(|v| v.try_into().ok())
                    .ok_or_else(|| self.bad("meta", "a compaction revision of under 8 bytes"))?;
                done.compact_revision = done.compact_revision.max(i64::from_be_bytes(rev));
            }
            Ok(())
        })?;
        self.each("lease", &mut |_, value| {
            let l = EtcdLease::decode(value).map_err(|e| self.bad("lease", e.to_string()))?;
            batch.push(Mutation::LeaseGrant {
                id: l.id,
                ttl: l.ttl,
            });
            done.leases += 1;
            Ok(())
        })?;
        self.each("auth", &mut |key, value| {
            let change = match key {
                b"authEnabled" => AuthMutation::Enabled(value.first() == Some(&1)),
                b"authRevision" => AuthMutation::Revision(u64::from_be_bytes(
                    value
                        .try_into()
                        .map_err(|_| self.bad("auth", "authRevision is not 8 bytes"))?,
                )),
                _ => return Ok(()),
            };
            batch.push(Mutation::Auth(change));
            Ok(())
        })?;
        self.each("authUsers", &mut |_, value| {
            let user = User::decode(value).map_err(|e| self.bad("authUsers", e.to_string()))?;
            batch.push(Mutation::Auth(AuthMutation::PutUser(user)));
            done.users += 1;
            Ok(())
        })?;
        self.each("authRoles", &mut |_, value| {
            let role = Role::decode(value).map_err(|e| self.bad("authRoles", e.to_string()))?;
            batch.push(Mutation::Auth(AuthMutation::PutRole(role)));
            done.roles += 1;
            Ok(())
        })?;
        self.commit(&mut batch)?;
        // As etcd: the current revision is the latest kept, or the compaction point.
        done.revision = done.revision.max(done.compact_revision);
        self.storage
            .finish_restore(done.revision, done.compact_revision)?;
        Ok(done)
    }
}

#[cfg(test)]
mod tests;

//! Durable storage of the MVCC state in one redb file.
//!
//! Tables:
//! - `meta` (`&str` → `u64`): `format_version`, `cluster_id`, `member_id`,
//!   `revision` (latest committed), `compact_revision`, `wal_lsn` (the last
//!   write-ahead log record applied, see [`crate::wal`]), `wal_created`
//!   (present once both log files were created whole: a log file found
//!   truncated or zeroed after that is refused, not created again empty;
//!   older builds ignore it, and a store without it gets it on open).
//! - `log` (revision → `RevisionRecord`): every change at revisions
//!   `>= compact_revision`, without `prev_kv`, and possibly some older ones
//!   not yet folded into `base` (the fold point is the oldest logged
//!   revision).
//! - `base` (key → `mvccpb.KeyValue`): the keys live just before the oldest
//!   logged revision. Replaying `log` over `base` rebuilds the in-memory
//!   [`Core`](crate::mvcc::Core), including the history reads and watches
//!   may still ask for (replayed history below `compact_revision` is
//!   unreadable and dropped once the core is restored).
//! - `leases` (id → `LeaseRecord`).
//! - `auth_users` (name → `authpb.User`, the password as its bcrypt hash)
//!   and `auth_roles` (name → `authpb.Role`); `meta` holds `auth_enabled`
//!   (0 or 1) and `auth_revision` (see [`crate::auth`]).
//! - `meta`'s `alarm_nospace` (0 or 1): etcd's NOSPACE alarm, which
//!   outlives restarts as etcd's does.
//!
//! Invariants: every commit is one redb write transaction, applied as a
//! whole or not at all, that records the lsn of the last log record it
//! applies. Acknowledged writes are durable in the write-ahead log
//! ([`crate::wal`]) first; commits here are mostly `Durability::None`, made
//! durable by a later `Durability::Immediate` one (a checkpoint), and opening
//! replays the log records above `wal_lsn` and checkpoints them before
//! anything else is written. A compaction only records the new `compact_revision`; once
//! enough compacted `log` entries piled up, each commit folds a bounded chunk
//! of the oldest into `base`, in the same transaction, so `base` plus `log`
//! always replays to the committed state. (Files written before this lazy
//! folding are the special case of an empty backlog: same format.) A file whose `format_version` is not
//! [`FORMAT_VERSION`] is refused, never guessed at, except older ones, which
//! are upgraded in place when opened, in one durable transaction before
//! anything else is written: version 1 (before the write-ahead log: no
//! `wal_lsn`), version 2 (before auth: no auth tables, auth disabled) and
//! version 3 (before the storage quota: no alarm).

use std::path::Path;
use std::sync::Arc;

use prost::Message;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use torc_durable::redb_backend::{self, Failures, Inject};

use crate::auth::AuthMutation;
use crate::error::{StorageError, redb_err};
use crate::mvcc::Mutation;
use crate::proto::authpb::{Role, User};
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};
use crate::proto::torc::kv::storage::{LeaseRecord, RevisionRecord};
use crate::wal::Wal;

/// Page cache of the store's database.
const CACHE_BYTES: usize = 32 << 20;

/// Compacted log entries are folded into `base` once this many piled up, this
/// many (and twice the commit's own revisions) per commit.
const FOLD_CHUNK: u64 = 4096;

/// The on-disk format this build reads and writes. Version 2 added the
/// write-ahead log (`wal_lsn`), version 3 the auth state (tables, meta keys
/// and log records), version 4 the NOSPACE alarm (a meta key and a log
/// record). Older files are upgraded when opened, and a build that knows
/// only an older version refuses a newer file rather than ignoring the
/// log's acknowledged writes, its users (and serving without auth) or its
/// alarm.
pub const FORMAT_VERSION: u64 = 4;

/// The format before the write-ahead log; upgraded in place.
const FORMAT_VERSION_BEFORE_WAL: u64 = 1;
/// The format before auth; upgraded in place.
const FORMAT_VERSION_BEFORE_AUTH: u64 = 2;
/// The format before the storage quota; upgraded in place.
const FORMAT_VERSION_BEFORE_QUOTA: u64 = 3;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const BASE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("base");
const LEASES: TableDefinition<i64, &[u8]> = TableDefinition::new("leases");
const AUTH_USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_users");
const AUTH_ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("auth_roles");

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
    pub auth_enabled: bool,
    pub auth_revision: u64,
    pub users: Vec<User>,
    pub roles: Vec<Role>,
    pub nospace_alarm: bool,
}

pub struct Storage {
    /// Shared with [`Reader`]s (snapshots read it while commits go on).
    db: Arc<Database>,
    /// The redb file, named by a failed commit's error.
    path: std::path::PathBuf,
    /// What the file's backend saw fail: tells a full disk from a failed sync.
    failures: Arc<Failures>,
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
    /// Opens (creating if needed) the store file and its write-ahead log,
    /// replays the log records redb lacks and makes them durable. `new_ids`
    /// are the cluster and member IDs recorded if the file is new.
    pub fn open(path: &Path, new_ids: (u64, u64)) -> Result<(Storage, Wal, Loaded), StorageError> {
        Storage::open_with(path, new_ids, &Inject::default())
    }

    /// [`Storage::open`], its redb backend given `inject` (a failure switch in tests, nothing
    /// otherwise).
    pub fn open_with(
        path: &Path,
        new_ids: (u64, u64),
        inject: &Inject,
    ) -> Result<(Storage, Wal, Loaded), StorageError> {
        // redb's default page cache is 1 GiB; a rack's state soup needs far less, and the
        // store shares a small controller box with the rest of the rack.
        let (db, failures) = redb_backend::open(
            path,
            true,
            redb::Builder::new().set_cache_size(CACHE_BYTES),
            inject,
        )
        .map_err(redb_err)?;
        let storage = Storage {
            db: Arc::new(db),
            path: path.to_path_buf(),
            failures,
        };
        let (applied_lsn, log_created) = storage.init(new_ids)?;
        let (wal, replay) = Wal::open(path, applied_lsn, log_created)?;
        if !log_created {
            storage.mark_log_created()?;
        }
        if let Some(last) = replay.last() {
            // One durable transaction: the log may be overwritten from here.
            tracing::info!(records = replay.len(), "kv replaying the write-ahead log");
            storage.commit(
                replay.iter().flat_map(|r| r.mutations.iter()),
                last.lsn,
                true,
            )?;
        }
        let loaded = storage.load()?;
        Ok((storage, wal, loaded))
    }

    /// Records, durably, that both log files exist whole: from then on a log
    /// file found truncated or zeroed is damage, not a creation to finish.
    fn mark_log_created(&self) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err)?;
        txn.open_table(META)
            .map_err(redb_err)?
            .insert("wal_created", 1)
            .map_err(redb_err)?;
        txn.commit().map_err(redb_err)
    }

    /// Creates or checks the tables; returns the lsn of the last log record
    /// applied, and whether the log files were created whole before.
    fn init(&self, (cluster_id, member_id): (u64, u64)) -> Result<(u64, bool), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err)?;
        let applied_lsn;
        let log_created;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let version = meta
                .get("format_version")
                .map_err(redb_err)?
                .map(|v| v.value());
            match version {
                Some(FORMAT_VERSION) => {}
                Some(
                    old @ (FORMAT_VERSION_BEFORE_WAL
                    | FORMAT_VERSION_BEFORE_AUTH
                    | FORMAT_VERSION_BEFORE_QUOTA),
                ) => {
                    meta.insert("format_version", FORMAT_VERSION)
                        .map_err(redb_err)?;
                    if old == FORMAT_VERSION_BEFORE_WAL {
                        meta.insert("wal_lsn", 0).map_err(redb_err)?;
                    }
                    if old < FORMAT_VERSION_BEFORE_QUOTA {
                        // etcd's auth store starts at revision 1, disabled.
                        meta.insert("auth_enabled", 0).map_err(redb_err)?;
                        meta.insert("auth_revision", 1).map_err(redb_err)?;
                    }
                    meta.insert("alarm_nospace", 0).map_err(redb_err)?;
                }
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
                        ("wal_lsn", 0),
                        ("auth_enabled", 0),
                        ("auth_revision", 1),
                        ("alarm_nospace", 0),
                    ] {
                        meta.insert(k, v).map_err(redb_err)?;
                    }
                }
            }
            applied_lsn = meta
                .get("wal_lsn")
                .map_err(redb_err)?
                .map_or(0, |v| v.value());
            log_created = meta.get("wal_created").map_err(redb_err)?.is_some();
            txn.open_table(LOG).map_err(redb_err)?;
            txn.open_table(BASE).map_err(redb_err)?;
            txn.open_table(LEASES).map_err(redb_err)?;
            txn.open_table(AUTH_USERS).map_err(redb_err)?;
            txn.open_table(AUTH_ROLES).map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)?;
        Ok((applied_lsn, log_created))
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
            auth_enabled: match get("auth_enabled")? {
                0 => false,
                1 => true,
                other => {
                    return Err(corrupt(
                        "meta",
                        "auth_enabled",
                        format!("{other} is not 0 or 1"),
                    ));
                }
            },
            auth_revision: get("auth_revision")?,
            nospace_alarm: match get("alarm_nospace")? {
                0 => false,
                1 => true,
                other => {
                    return Err(corrupt(
                        "meta",
                        "alarm_nospace",
                        format!("{other} is not 0 or 1"),
                    ));
                }
            },
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
        let users = txn.open_table(AUTH_USERS).map_err(redb_err)?;
        for row in users.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let user = User::decode(v.value()).map_err(|e| corrupt("auth_users", k.value(), e))?;
            loaded.users.push(user);
        }
        let roles = txn.open_table(AUTH_ROLES).map_err(redb_err)?;
        for row in roles.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let role = Role::decode(v.value()).map_err(|e| corrupt("auth_roles", k.value(), e))?;
            loaded.roles.push(role);
        }
        Ok(loaded)
    }

    /// Applies `mutations`, those of the log records up to `lsn`, in one
    /// transaction; `durable` makes it (and every earlier one) durable before
    /// returning (one flush), else it is durable after the next durable one.
    pub fn commit<'a>(
        &self,
        mutations: impl IntoIterator<Item = &'a Mutation>,
        lsn: u64,
        durable: bool,
    ) -> Result<(), StorageError> {
        // The error that poisons the store names the file (e.g. "no space left" on its disk),
        // and says whether all that failed was a want of space (then the store is opened
        // again once space returns, see `store`).
        self.commit_in_redb(mutations, lsn, durable)
            .map_err(|e| match e {
                StorageError::Redb(source) => match self.failures.seen().only_no_space() {
                    Some(why) => StorageError::RedbNoSpace {
                        path: self.path.clone(),
                        why: why.to_owned(),
                    },
                    None => StorageError::RedbFile {
                        path: self.path.clone(),
                        source: Box::new(source),
                    },
                },
                other => other,
            })
    }

    fn commit_in_redb<'a>(
        &self,
        mutations: impl IntoIterator<Item = &'a Mutation>,
        lsn: u64,
        durable: bool,
    ) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })
        .map_err(redb_err)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let mut log = txn.open_table(LOG).map_err(redb_err)?;
            let mut base = txn.open_table(BASE).map_err(redb_err)?;
            let mut leases = txn.open_table(LEASES).map_err(redb_err)?;
            let mut users = txn.open_table(AUTH_USERS).map_err(redb_err)?;
            let mut roles = txn.open_table(AUTH_ROLES).map_err(redb_err)?;
            let mut latest = None;
            let mut written = 0;
            for m in mutations {
                match m {
                    Mutation::Revision(r) => {
                        let rec = RevisionRecord {
                            events: r.stored_events(),
                        };
                        log.insert(rev_key(r.revision), rec.encode_to_vec().as_slice())
                            .map_err(redb_err)?;
                        latest = Some(r.revision);
                        written += 1;
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
                        // Automatic and requested compactions can reach one
                        // transaction out of order; the point only advances.
                        let current = meta
                            .get("compact_revision")
                            .map_err(redb_err)?
                            .map_or(0, |v| v.value());
                        meta.insert("compact_revision", current.max(rev_key(*revision)))
                            .map_err(redb_err)?;
                    }
                    Mutation::Auth(a) => apply_auth(a, &mut meta, &mut users, &mut roles)?,
                    Mutation::NoSpaceAlarm(raised) => {
                        meta.insert("alarm_nospace", u64::from(*raised))
                            .map_err(redb_err)?;
                    }
                }
            }
            if let Some(rev) = latest {
                meta.insert("revision", rev_key(rev)).map_err(redb_err)?;
            }
            meta.insert("wal_lsn", lsn).map_err(redb_err)?;
            // Fold compacted revisions into `base` a bounded chunk at a time,
            // riding on this transaction's fsync, so a compaction never
            // stalls commits for long. Chunks, not a few rows per commit:
            // `base` is keyed by key, so its inserts land on random pages,
            // and folding many rows at once rewrites each page once for
            // many of them (measured: one fold per commit wrote ~4x the
            // bytes per put). The chunk outpaces the log's growth, so the
            // backlog shrinks whenever writes keep coming.
            let compacted = meta
                .get("compact_revision")
                .map_err(redb_err)?
                .map_or(0, |v| v.value());
            let oldest = log.first().map_err(redb_err)?.map(|(k, _)| k.value());
            if oldest.is_some_and(|oldest| compacted.saturating_sub(oldest) >= FOLD_CHUNK) {
                fold_log(
                    &mut log,
                    &mut base,
                    compacted,
                    FOLD_CHUNK as usize + 2 * written,
                )?;
            }
        }
        txn.commit().map_err(redb_err)
    }
}

impl Storage {
    /// A handle that opens point-in-time reads of this file while commits
    /// go on (snapshots, see [`crate::snapshot`]).
    pub fn reader(&self) -> Reader {
        Reader(self.db.clone())
    }

    /// Ends a restore (see [`crate::snapshot`]): the store's revision is at
    /// least `revision` and its compaction point `compact`, durably.
    pub fn finish_restore(&self, revision: i64, compact: i64) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write().map_err(redb_err)?;
        txn.set_durability(Durability::Immediate)
            .map_err(redb_err)?;
        {
            let mut meta = txn.open_table(META).map_err(redb_err)?;
            let current = meta
                .get("revision")
                .map_err(redb_err)?
                .map_or(0, |v| v.value());
            meta.insert("revision", current.max(rev_key(revision)))
                .map_err(redb_err)?;
            meta.insert("compact_revision", rev_key(compact))
                .map_err(redb_err)?;
        }
        txn.commit().map_err(redb_err)
    }
}

/// Opens point-in-time reads of a store file.
#[derive(Clone)]
pub struct Reader(Arc<Database>);

impl Reader {
    /// The file as its latest commit left it; commits after this one do
    /// not change what the view reads (redb keeps the pages it reads).
    pub fn view(&self) -> Result<View, StorageError> {
        Ok(View(self.0.begin_read().map_err(redb_err)?))
    }
}

/// What a [`View`] calls with each row of a table: its key and stored value.
pub type Row<'a, K, E> = dyn FnMut(&K, &[u8]) -> Result<(), E> + 'a;

/// One point-in-time read of a store file: its tables, each in key order,
/// values as stored (encoded records).
pub struct View(redb::ReadTransaction);

impl View {
    /// A `meta` value (0 when absent).
    pub fn meta(&self, key: &str) -> Result<u64, StorageError> {
        let meta = self.0.open_table(META).map_err(redb_err)?;
        Ok(meta.get(key).map_err(redb_err)?.map_or(0, |v| v.value()))
    }

    /// `base`'s rows: key, encoded `mvccpb.KeyValue`.
    pub fn base<E: From<StorageError>>(&self, f: &mut Row<'_, [u8], E>) -> Result<(), E> {
        let table = self.0.open_table(BASE).map_err(redb_err)?;
        for row in table.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    /// The first `log` row's revision.
    pub fn oldest_logged(&self) -> Result<Option<i64>, StorageError> {
        let table = self.0.open_table(LOG).map_err(redb_err)?;
        let first = table.first().map_err(redb_err)?;
        Ok(first.map(|(k, _)| i64::try_from(k.value()).unwrap_or(i64::MAX)))
    }

    /// `log`'s rows, decoded: revision and its events.
    pub fn log<E: From<StorageError>>(
        &self,
        f: &mut dyn FnMut(i64, Vec<Event>) -> Result<(), E>,
    ) -> Result<(), E> {
        let table = self.0.open_table(LOG).map_err(redb_err)?;
        for row in table.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let rev =
                i64::try_from(k.value()).map_err(|_| corrupt("log", k.value(), "too large"))?;
            let rec = RevisionRecord::decode(v.value()).map_err(|e| corrupt("log", rev, e))?;
            f(rev, rec.events)?;
        }
        Ok(())
    }

    /// The leases: `(id, ttl)`.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        let table = self.0.open_table(LEASES).map_err(redb_err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            let rec =
                LeaseRecord::decode(v.value()).map_err(|e| corrupt("leases", k.value(), e))?;
            out.push((rec.id, rec.ttl));
        }
        Ok(out)
    }

    /// `auth_users` (`users`) or `auth_roles`' rows: name, encoded record.
    pub fn auth<E: From<StorageError>>(
        &self,
        users: bool,
        f: &mut Row<'_, str, E>,
    ) -> Result<(), E> {
        let table = self
            .0
            .open_table(if users { AUTH_USERS } else { AUTH_ROLES })
            .map_err(redb_err)?;
        for row in table.iter().map_err(redb_err)? {
            let (k, v) = row.map_err(redb_err)?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }
}

/// Writes one auth change: a user's or role's row, or a meta key.
fn apply_auth(
    a: &AuthMutation,
    meta: &mut redb::Table<&str, u64>,
    users: &mut redb::Table<&str, &[u8]>,
    roles: &mut redb::Table<&str, &[u8]>,
) -> Result<(), StorageError> {
    match a {
        AuthMutation::PutUser(u) => {
            let name = String::from_utf8_lossy(&u.name);
            users
                .insert(&*name, u.encode_to_vec().as_slice())
                .map_err(redb_err)?;
        }
        AuthMutation::PutRole(r) => {
            let name = String::from_utf8_lossy(&r.name);
            roles
                .insert(&*name, r.encode_to_vec().as_slice())
                .map_err(redb_err)?;
        }
        AuthMutation::DeleteUser(name) => {
            users.remove(name.as_str()).map_err(redb_err)?;
        }
        AuthMutation::DeleteRole(name) => {
            roles.remove(name.as_str()).map_err(redb_err)?;
        }
        AuthMutation::Enabled(on) => {
            meta.insert("auth_enabled", u64::from(*on))
                .map_err(redb_err)?;
        }
        AuthMutation::Revision(rev) => {
            meta.insert("auth_revision", *rev).map_err(redb_err)?;
        }
    }
    Ok(())
}

/// Moves the oldest logged revisions below `compacted`, at most `limit` of
/// them, into `base`.
fn fold_log(
    log: &mut redb::Table<u64, &[u8]>,
    base: &mut redb::Table<&[u8], &[u8]>,
    compacted: u64,
    limit: usize,
) -> Result<(), StorageError> {
    let mut folded = Vec::new();
    for row in log.range(..compacted).map_err(redb_err)?.take(limit) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{Core, Limits};
    use crate::proto::etcdserverpb as pb;
    use bytes::Bytes;

    fn latest(c: &Core, keys: usize) -> Vec<Option<Bytes>> {
        let top = c.revision();
        (0..keys)
            .map(|k| {
                c.get(format!("k{k}").as_bytes(), top)
                    .map(|kv| kv.value.clone())
            })
            .collect()
    }

    /// Compacted log entries are folded into `base` in chunks, lazily; a
    /// reopen at any point replays `base` + `log` to the same latest state.
    #[test]
    fn lazy_fold_replays_to_the_same_state() {
        const KEYS: usize = 100;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        let (storage, _, _) = Storage::open(&path, (1, 2)).expect("open");
        let mut c = Core::new(Limits::default(), 1);
        // Writes are committed in groups, as the commit thread batches them.
        let write = |c: &mut Core, i: usize| {
            let key = Bytes::from(format!("k{}", i % KEYS));
            if i % 9 == 8 {
                c.delete_range(&pb::DeleteRangeRequest {
                    key,
                    ..Default::default()
                })
                .expect("delete")
                .mutations
            } else {
                c.put(&pb::PutRequest {
                    key,
                    value: Bytes::from(format!("v{i}")),
                    ..Default::default()
                })
                .expect("put")
                .mutations
            }
        };
        let mut pending = Vec::new();
        for i in 0..5000 {
            pending.extend(write(&mut c, i));
            if i % 50 == 49 {
                storage
                    .commit(pending.drain(..).as_slice(), 0, true)
                    .expect("commit");
            }
        }
        let compact = c.revision() - 200;
        let out = c.compact(compact, c.revision()).expect("compact");
        storage
            .commit(out.mutations.iter(), 0, true)
            .expect("commit compaction");
        let last = write(&mut c, 5000);
        storage.commit(last.iter(), 0, true).expect("commit"); // folds a chunk
        drop(storage);

        let (storage, _, loaded) = Storage::open(&path, (1, 2)).expect("reopen");
        assert!(!loaded.base.is_empty(), "a chunk was folded");
        let oldest = loaded.log.first().map(|(rev, _)| *rev).expect("log");
        assert!(oldest > FOLD_CHUNK as i64 && oldest < compact, "{oldest}");
        assert_eq!(loaded.compact_revision, compact);
        let mut r = Core::new(Limits::default(), 1);
        for kv in loaded.base {
            r.restore_base(kv);
        }
        for (rev, events) in loaded.log {
            r.restore_revision(rev, events);
        }
        r.restore_revisions(loaded.revision, loaded.compact_revision);
        assert_eq!(r.revision(), c.revision());
        assert_eq!(latest(&r, KEYS), latest(&c, KEYS));
        for rev in [compact, compact + 100, c.revision()] {
            for k in 0..KEYS {
                let key = format!("k{k}");
                assert_eq!(
                    r.get(key.as_bytes(), rev).map(|kv| kv.mod_revision),
                    c.get(key.as_bytes(), rev).map(|kv| kv.mod_revision),
                    "{key}@{rev}"
                );
            }
        }
        drop(storage);
    }

    /// Auth changes are stored rows: reopening restores the same users,
    /// roles, flag and revision.
    #[test]
    fn auth_changes_survive_reopening() {
        use crate::auth::{AuthState, Caller};
        use crate::proto::authpb::{Permission, permission::Type};
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        let (storage, _, loaded) = Storage::open(&path, (1, 2)).expect("open");
        assert!(!loaded.auth_enabled);
        assert_eq!(loaded.auth_revision, 1);
        let mut a = AuthState::default();
        let anyone = Caller::Anonymous;
        let mut changes = Vec::new();
        changes.extend(a.role_add(&anyone, "app").expect("role"));
        changes.extend(a.role_add(&anyone, "gone").expect("role"));
        let perm = Permission {
            perm_type: Type::Readwrite as i32,
            key: "/p/".into(),
            range_end: "/p0".into(),
        };
        changes.extend(
            a.role_grant_permission(&anyone, "app", Some(&perm))
                .expect("grant"),
        );
        changes.extend(
            a.user_add(&anyone, "alice", Some("hash".into()))
                .expect("user"),
        );
        changes.extend(
            a.user_grant_role(&anyone, "alice", "app")
                .expect("grant role"),
        );
        changes.extend(
            a.user_grant_role(&anyone, "alice", "gone")
                .expect("grant role"),
        );
        changes.extend(a.role_delete(&anyone, "gone").expect("delete role"));
        changes.extend(a.bootstrap_root("roothash".into()));
        let mutations: Vec<Mutation> = changes.into_iter().map(Mutation::Auth).collect();
        storage.commit(mutations.iter(), 0, true).expect("commit");
        drop(storage);

        let (_, _, loaded) = Storage::open(&path, (1, 2)).expect("reopen");
        let b = AuthState::restore(
            loaded.auth_enabled,
            loaded.auth_revision,
            loaded.users,
            loaded.roles,
        );
        assert!(b.enabled());
        assert_eq!(b.revision(), a.revision());
        let root = Caller::User("root".into());
        assert_eq!(b.user_list(&root), a.user_list(&root));
        assert_eq!(
            b.role_list(&root),
            Ok(vec!["app".to_string(), "root".to_string()])
        );
        assert_eq!(b.user_get(&root, "alice"), Ok(vec!["app".to_string()]));
        assert_eq!(b.role_get(&root, "app"), Ok(vec![perm]));
        assert_eq!(b.password_hash("alice"), Ok(&b"hash"[..]));
    }

    /// A store file with only these `meta` rows, as an older build wrote it.
    fn write_meta(path: &Path, rows: &[(&str, u64)]) {
        let db = Database::create(path).expect("create");
        let txn = db.begin_write().expect("txn");
        {
            let mut meta = txn.open_table(META).expect("meta");
            for (k, v) in rows {
                meta.insert(*k, *v).expect("insert");
            }
        }
        txn.commit().expect("commit");
    }

    /// A format-3 file (before the quota) is upgraded in place keeping its
    /// auth state, with no alarm; the NOSPACE alarm, raised, outlives a
    /// reopen, and so does its disarming.
    #[test]
    fn the_nospace_alarm_is_durable_and_format_3_files_are_upgraded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        write_meta(
            &path,
            &[
                ("format_version", FORMAT_VERSION_BEFORE_QUOTA),
                ("cluster_id", 7),
                ("member_id", 8),
                ("revision", 1),
                ("compact_revision", 0),
                ("wal_lsn", 0),
                ("auth_enabled", 1),
                ("auth_revision", 5),
            ],
        );
        let (storage, _, loaded) = Storage::open(&path, (1, 2)).expect("upgrade");
        assert!(loaded.auth_enabled);
        assert_eq!(loaded.auth_revision, 5);
        assert!(!loaded.nospace_alarm);
        storage
            .commit([Mutation::NoSpaceAlarm(true)].iter(), 0, true)
            .expect("raise");
        drop(storage);
        let (storage, _, loaded) = Storage::open(&path, (1, 2)).expect("reopen");
        assert!(loaded.nospace_alarm);
        storage
            .commit([Mutation::NoSpaceAlarm(false)].iter(), 0, true)
            .expect("disarm");
        drop(storage);
        let (_, _, loaded) = Storage::open(&path, (1, 2)).expect("reopen");
        assert!(!loaded.nospace_alarm);
    }

    /// A format-2 file (before auth) is upgraded in place, auth disabled; a
    /// file of a later format than this build's is refused.
    #[test]
    fn older_formats_are_upgraded_and_newer_ones_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("kv.redb");
        // What a format-2 build created: no auth tables or meta keys.
        write_meta(
            &path,
            &[
                ("format_version", FORMAT_VERSION_BEFORE_AUTH),
                ("cluster_id", 7),
                ("member_id", 8),
                ("revision", 1),
                ("compact_revision", 0),
                ("wal_lsn", 0),
            ],
        );
        let (storage, _, loaded) = Storage::open(&path, (1, 2)).expect("upgrade");
        assert_eq!((loaded.cluster_id, loaded.member_id), (7, 8));
        assert!(!loaded.auth_enabled);
        assert_eq!(loaded.auth_revision, 1);
        assert!(loaded.users.is_empty() && loaded.roles.is_empty());
        drop(storage);
        {
            let db = Database::create(&path).expect("open");
            let txn = db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("format_version", FORMAT_VERSION + 1)
                .expect("insert");
            txn.commit().expect("commit");
        }
        assert!(matches!(
            Storage::open(&path, (1, 2)),
            Err(StorageError::UnsupportedFormat { found, .. }) if found == FORMAT_VERSION + 1
        ));
    }
}

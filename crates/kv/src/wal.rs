//! The write-ahead log: the durability point of acknowledged writes.
//!
//! A durable redb commit costs several page writes and a flush (~300 µs
//! measured on the bench machine); appending one record to a preallocated
//! file and `fdatasync`ing it costs about a third of that. So the commit
//! thread makes each group commit durable here, acknowledges it, and hands its
//! mutations to the apply thread, which writes them into redb without
//! flushing (`Durability::None`) and makes redb durable now and then (a
//! checkpoint, see `store`).
//!
//! Layout: two files, `kv.wal.0` and `kv.wal.1`, each a 16-byte header (magic
//! and [`WAL_FORMAT_VERSION`]) followed by records:
//! `[payload length: u32 LE][CRC-32 of lsn and payload: u32 LE][lsn: u64 LE][payload]`,
//! where the payload is a `WalBatch` proto and `lsn` (log sequence number)
//! counts records, one per group commit (leases change no revision, so
//! revisions cannot number records). The files are zero-filled when created,
//! so appends overwrite allocated blocks and `fdatasync` has no metadata to
//! flush; a file is created whole (zeroes, header, fsync) under a temporary
//! name and renamed into place, so a start killed meanwhile leaves no half
//! file (one an older build left, zeroes and at most part of a header, is
//! created again: it never held a record). One file is active; when it is three quarters full the log switches to the other one, overwriting it from the start, if
//! everything in it is already durable in redb (else it keeps growing the
//! active file and retries at the next commit).
//!
//! Each record's `fdatasync` runs with `crate::awake` keeping its CPU
//! from halting (on a VM a halted vCPU wakes to the disk's completion
//! milliseconds late); it changes nothing of what is written or when it is
//! durable.
//!
//! Invariants:
//! - A record is valid if its checksum matches and its lsn follows the
//!   previous record's in the same file; reading a file stops at the first
//!   invalid record (a torn write, zeroes, or leftovers of an older cycle,
//!   whose lsns are all lower).
//! - Recovery replays, in order, the records whose lsn is above the one redb
//!   recorded with its last commit; they must continue it without a gap, or
//!   opening fails (closed) rather than silently dropping acknowledged writes.
//! - A file is overwritten only once every record in it is durable in redb.
//! - A file whose header is not this format's is refused, never guessed at.
//! - Auth mutations (record kinds added after format 2's first release) are
//!   written only next to a redb file of format 3 or later, and NOSPACE
//!   alarm changes only next to format 4 or later, which builds that do not
//!   know them refuse before reading the log (see [`crate::storage`]); so
//!   no build meets a kind it cannot read.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use crate::auth::AuthMutation;
use crate::error::StorageError;
use crate::mvcc::{Mutation, RevisionEvents};
use crate::proto::torc::kv::storage::{
    LeaseRecord, WalBatch, WalMutation, WalRevision, wal_mutation::Kind,
};

/// The log format this build reads and writes.
/// Version 1 checksummed records with CRC-32C; version 2 with CRC-32 (IEEE), the checksum the
/// rest of torc already computes (`crc32fast`, also used by tsdb).
pub const WAL_FORMAT_VERSION: u32 = 2;

/// Size each log file is preallocated to.
pub const WAL_FILE_BYTES: u64 = 8 << 20;

/// Past this much, the log switches to the other file (and asks for a
/// checkpoint); the rest is headroom, so the record that crosses it rarely
/// grows the file.
const SWITCH_BYTES: u64 = WAL_FILE_BYTES / 4 * 3;

const MAGIC: &[u8; 8] = b"TORCKVWL";
const HEADER_BYTES: u64 = 16;
/// Length, checksum, lsn.
const RECORD_HEADER_BYTES: usize = 16;

/// One of the two log files.
struct WalFile {
    file: File,
    path: PathBuf,
    /// Where the next record goes.
    pos: u64,
    /// The file's size.
    len: u64,
    /// Lsn of the last record written to it in its current cycle (0: none).
    last_lsn: u64,
}

/// The write-ahead log; owned by the commit thread.
pub struct Wal {
    files: [WalFile; 2],
    active: usize,
    next_lsn: u64,
    /// Records are built here, to be written with one `pwrite`.
    buf: Vec<u8>,
    /// Keeps this CPU awake while a record syncs (`crate::awake`).
    awake: crate::awake::Awake,
}

/// A record read back at recovery.
pub struct Recovered {
    pub lsn: u64,
    pub mutations: Vec<Mutation>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StorageError + '_ {
    move |source| StorageError::Wal {
        path: path.to_owned(),
        source,
    }
}

/// Damage to a log file found at `offset` (bytes), before any record could be read.
fn damaged(path: &Path, offset: u64, reason: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt {
        table: "wal",
        key: format!("{} offset {offset}", path.display()),
        reason: reason.to_string(),
    }
}

fn corrupt(path: &Path, lsn: u64, reason: impl ToString) -> StorageError {
    StorageError::Corrupt {
        table: "wal",
        key: format!("{} lsn {lsn}", path.display()),
        reason: reason.to_string(),
    }
}

impl Wal {
    /// Opens (creating if needed) the log files next to `db_path` and returns
    /// the records to replay: those above `applied_lsn`, in order. The caller
    /// must make them durable in redb before appending (the first append may
    /// overwrite them). `created` says the store recorded that both files were
    /// created whole before: then a file that looks like an unfinished creation
    /// (no header, zeroes) was truncated or zeroed since, and is refused rather
    /// than created again empty, which would drop its records silently.
    pub fn open(
        db_path: &Path,
        applied_lsn: u64,
        created: bool,
    ) -> Result<(Wal, Vec<Recovered>), StorageError> {
        let mut files = Vec::with_capacity(2);
        let mut records = Vec::new();
        for i in 0..2 {
            let path = db_path.with_extension(format!("wal.{i}"));
            let (file, len, found) = open_file(&path, created)?;
            records.extend(found.into_iter().map(|r| (r, i)));
            files.push(WalFile {
                file,
                path,
                pos: HEADER_BYTES,
                len,
                last_lsn: 0,
            });
        }
        records.sort_by_key(|((lsn, _), _)| *lsn);
        let mut replay = Vec::new();
        let mut expected = applied_lsn + 1;
        for ((lsn, payload), file) in records {
            if lsn < expected {
                continue;
            }
            let path = &files[file].path;
            if lsn != expected {
                // A fresh database next to a log that went on past it: the database file was
                // deleted or replaced, and the log alone cannot rebuild what was checkpointed.
                let hint = if applied_lsn == 0 {
                    format!(
                        "; {} is new but this log is not: was the database file deleted or replaced? Restore it, or move the kv.wal.* files away to start an empty store",
                        db_path.display()
                    )
                } else {
                    String::new()
                };
                return Err(corrupt(
                    path,
                    lsn,
                    format!("records {expected} to {} are missing{hint}", lsn - 1),
                ));
            }
            let mutations = decode(&payload).map_err(|e| corrupt(path, lsn, e))?;
            replay.push(Recovered { lsn, mutations });
            expected += 1;
        }
        let [a, b]: [WalFile; 2] = files
            .try_into()
            .map_err(|_| corrupt(db_path, 0, "two log files expected"))?;
        let wal = Wal {
            files: [a, b],
            active: 0,
            next_lsn: expected,
            buf: Vec::new(),
            awake: crate::awake::Awake::start(),
        };
        Ok((wal, replay))
    }

    /// Appends one record holding `mutations` and makes it durable. Returns
    /// its lsn. After an error the log's state is unknown: the caller must
    /// stop writing (fail closed).
    pub fn append<'a>(
        &mut self,
        mutations: impl IntoIterator<Item = &'a Mutation>,
    ) -> Result<u64, StorageError> {
        let lsn = self.next_lsn;
        let batch = encode(mutations);
        self.buf.clear();
        self.buf.resize(RECORD_HEADER_BYTES, 0);
        batch
            .encode(&mut self.buf)
            .map_err(|e| corrupt(&self.files[self.active].path, lsn, e))?;
        let payload_len = u32::try_from(self.buf.len() - RECORD_HEADER_BYTES)
            .map_err(|_| corrupt(&self.files[self.active].path, lsn, "record too large"))?;
        self.buf[0..4].copy_from_slice(&payload_len.to_le_bytes());
        self.buf[8..16].copy_from_slice(&lsn.to_le_bytes());
        let crc = checksum(&self.buf[8..]);
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let f = &mut self.files[self.active];
        f.file
            .write_all_at(&self.buf, f.pos)
            .map_err(io_err(&f.path))?;
        let end = f.pos + self.buf.len() as u64;
        let synced = self.awake.during(|| {
            if end > f.len {
                // Grew past the preallocated size: the size must be flushed too.
                f.file.sync_all()
            } else {
                f.file.sync_data()
            }
        });
        synced.map_err(|source| StorageError::WalSync {
            path: f.path.clone(),
            source,
        })?;
        f.len = f.len.max(end);
        f.pos = end;
        f.last_lsn = lsn;
        self.next_lsn += 1;
        Ok(lsn)
    }

    /// Makes sure the record a failed [`Wal::append`] may have left whole is not read back:
    /// zeroes its header, durably. Called before the log is opened again after a write refused
    /// for want of space (the refused record was never acknowledged); fails while the disk
    /// still refuses the write.
    pub fn erase_failed_append(&mut self) -> Result<(), StorageError> {
        let f = &mut self.files[self.active];
        f.file
            .write_all_at(&[0; RECORD_HEADER_BYTES], f.pos)
            .map_err(io_err(&f.path))?;
        f.file.sync_all().map_err(|source| StorageError::WalSync {
            path: f.path.clone(),
            source,
        })
    }

    /// True when the active file is full and the other one holds only records
    /// durable in redb (`checkpointed_lsn`): then the log switches to it and
    /// the caller must ask for a checkpoint covering the active file's records
    /// (so the switch back later finds it free).
    pub fn switch_if_full(&mut self, checkpointed_lsn: u64) -> bool {
        let other = 1 - self.active;
        if self.files[self.active].pos < SWITCH_BYTES
            || self.files[other].last_lsn > checkpointed_lsn
        {
            return false;
        }
        self.active = other;
        self.files[other].pos = HEADER_BYTES;
        self.files[other].last_lsn = 0;
        true
    }
}

/// A record's lsn and payload, as read from a file.
type RawRecord = (u64, Vec<u8>);

/// This build's file header: magic, version, four reserved zero bytes.
fn header() -> [u8; HEADER_BYTES as usize] {
    let mut header = [0u8; HEADER_BYTES as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&WAL_FORMAT_VERSION.to_le_bytes());
    header
}

/// Whether `bytes` is what a creation cut short left: a proper prefix of this build's header
/// (possibly none of it), then nothing but zeroes. (The whole header then zeroes is a log
/// holding no record.) Such a file never held a record, since records are
/// written only after the whole file, header included, was synced. Builds before issue 19
/// created the file in place, zero-filling it before writing the header, so a start killed
/// meanwhile left one of these.
fn unfinished_creation(bytes: &[u8]) -> bool {
    let header = header();
    let written = bytes
        .iter()
        .zip(header.iter())
        .take_while(|(b, h)| b == h)
        .count();
    written < header.len() && bytes[written..].iter().all(|&b| b == 0)
}

/// Creates the log file at `path` whole: zero-filled to [`WAL_FILE_BYTES`] with its header,
/// through `torc_durable::write_atomic` (a synced temporary file renamed over `path`, then the
/// directory synced, the temporary removed on failure), so a kill at any point leaves either no
/// file (or what was there) or a complete one. Returns it and its size.
fn create_file(path: &Path) -> Result<(File, u64), StorageError> {
    let mut bytes = vec![0u8; WAL_FILE_BYTES as usize];
    let header = header();
    bytes[..header.len()].copy_from_slice(&header);
    torc_durable::write_atomic(path, &bytes).map_err(|e| StorageError::Wal {
        path: e.path,
        source: e.source,
    })?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    Ok((file, WAL_FILE_BYTES))
}

/// Opens or creates one log file; returns it, its size and its valid records. `created`: see
/// [`Wal::open`].
fn open_file(path: &Path, created: bool) -> Result<(File, u64, Vec<RawRecord>), StorageError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && created => {
            return Err(damaged(path, 0, "the file is missing"));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (file, len) = create_file(path)?;
            return Ok((file, len, Vec::new()));
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let len = file.metadata().map_err(io_err(path))?.len();
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    if unfinished_creation(&bytes) {
        if created {
            let at = bytes.len().min(HEADER_BYTES as usize);
            let what = if bytes.iter().all(|&b| b == 0) {
                format!("{} bytes of zeroes", bytes.len())
            } else {
                format!("{} bytes, the header cut short", bytes.len())
            };
            return Err(damaged(
                path,
                at as u64,
                format!("{what} where a whole log was created: truncated or zeroed"),
            ));
        }
        // Held no records (see `unfinished_creation`): create it again, whole.
        let (file, len) = create_file(path)?;
        return Ok((file, len, Vec::new()));
    }
    if bytes.len() < HEADER_BYTES as usize {
        return Err(damaged(
            path,
            bytes.len() as u64,
            "the file is shorter than its header",
        ));
    }
    let (header, mut rest) = bytes.split_at(HEADER_BYTES as usize);
    if &header[..8] != MAGIC {
        return Err(damaged(path, 0, "not a torc kv write-ahead log"));
    }
    let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if version != WAL_FORMAT_VERSION {
        return Err(StorageError::UnsupportedWalFormat {
            path: path.to_owned(),
            found: version,
            supported: WAL_FORMAT_VERSION,
        });
    }
    let mut records = Vec::new();
    let mut previous: Option<u64> = None;
    while rest.len() >= RECORD_HEADER_BYTES {
        let word =
            |at: usize| u32::from_le_bytes([rest[at], rest[at + 1], rest[at + 2], rest[at + 3]]);
        let payload_len = word(0) as usize;
        let crc = word(4);
        let Some(body) = rest.get(8..RECORD_HEADER_BYTES + payload_len) else {
            break;
        };
        let lsn = u64::from_le_bytes(body[..8].try_into().unwrap_or_default());
        let follows = previous.map_or(lsn > 0, |p| lsn == p + 1);
        if payload_len == 0 || !follows || checksum(body) != crc {
            break;
        }
        records.push((lsn, body[8..].to_vec()));
        previous = Some(lsn);
        rest = &rest[RECORD_HEADER_BYTES + payload_len..];
    }
    Ok((file, len, records))
}

fn encode<'a>(mutations: impl IntoIterator<Item = &'a Mutation>) -> WalBatch {
    let mutations = mutations
        .into_iter()
        .map(|m| WalMutation {
            kind: Some(match m {
                Mutation::Revision(r) => Kind::Revision(WalRevision {
                    revision: r.revision,
                    events: r.stored_events(),
                }),
                Mutation::LeaseGrant { id, ttl } => {
                    Kind::LeaseGrant(LeaseRecord { id: *id, ttl: *ttl })
                }
                Mutation::LeaseRevoke { id } => Kind::LeaseRevoke(*id),
                Mutation::Compact { revision } => Kind::Compact(*revision),
                Mutation::Auth(a) => match a {
                    AuthMutation::PutUser(u) => Kind::PutUser(u.clone()),
                    AuthMutation::DeleteUser(name) => Kind::DeleteUser(name.clone()),
                    AuthMutation::PutRole(r) => Kind::PutRole(r.clone()),
                    AuthMutation::DeleteRole(name) => Kind::DeleteRole(name.clone()),
                    AuthMutation::Enabled(on) => Kind::AuthEnabled(*on),
                    AuthMutation::Revision(rev) => Kind::AuthRevision(*rev),
                },
                Mutation::NoSpaceAlarm(raised) => Kind::NospaceAlarm(*raised),
            }),
        })
        .collect();
    WalBatch { mutations }
}

/// Why a record's payload (past its checksum) is not a batch of mutations.
#[derive(Debug, thiserror::Error)]
enum BadPayload {
    #[error("{0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("mutation of an unknown kind")]
    UnknownKind,
}

fn decode(payload: &[u8]) -> Result<Vec<Mutation>, BadPayload> {
    let batch = WalBatch::decode(payload)?;
    batch
        .mutations
        .into_iter()
        .map(|m| match m.kind {
            Some(Kind::Revision(r)) => Ok(Mutation::Revision(Arc::new(RevisionEvents {
                revision: r.revision,
                events: r.events,
            }))),
            Some(Kind::LeaseGrant(l)) => Ok(Mutation::LeaseGrant {
                id: l.id,
                ttl: l.ttl,
            }),
            Some(Kind::LeaseRevoke(id)) => Ok(Mutation::LeaseRevoke { id }),
            Some(Kind::Compact(revision)) => Ok(Mutation::Compact { revision }),
            Some(Kind::PutUser(u)) => Ok(Mutation::Auth(AuthMutation::PutUser(u))),
            Some(Kind::DeleteUser(name)) => Ok(Mutation::Auth(AuthMutation::DeleteUser(name))),
            Some(Kind::PutRole(r)) => Ok(Mutation::Auth(AuthMutation::PutRole(r))),
            Some(Kind::DeleteRole(name)) => Ok(Mutation::Auth(AuthMutation::DeleteRole(name))),
            Some(Kind::AuthEnabled(on)) => Ok(Mutation::Auth(AuthMutation::Enabled(on))),
            Some(Kind::AuthRevision(rev)) => Ok(Mutation::Auth(AuthMutation::Revision(rev))),
            Some(Kind::NospaceAlarm(raised)) => Ok(Mutation::NoSpaceAlarm(raised)),
            None => Err(BadPayload::UnknownKind),
        })
        .collect()
}

/// A record's checksum: CRC-32 (IEEE). Catches torn and stale records.
fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::{Event, KeyValue};

    /// Large values, so a file fills with few (slow, synced) appends.
    const VALUE_BYTES: usize = 32 << 10;

    /// Appends after which a log file is full.
    const PER_FILE: u64 = SWITCH_BYTES / VALUE_BYTES as u64 + 1;

    fn put(revision: i64) -> Mutation {
        Mutation::Revision(Arc::new(RevisionEvents {
            revision,
            events: vec![Event {
                r#type: 0,
                kv: Some(KeyValue {
                    key: format!("k{revision}").into(),
                    value: vec![b'v'; VALUE_BYTES].into(),
                    mod_revision: revision,
                    ..Default::default()
                }),
                prev_kv: None,
            }],
        }))
    }

    fn revisions(records: &[Recovered]) -> Vec<i64> {
        records
            .iter()
            .flat_map(|r| r.mutations.iter())
            .filter_map(|m| match m {
                Mutation::Revision(r) => Some(r.revision),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn checksum_check_value() {
        // The on-disk format's checksum, pinned: CRC-32 (IEEE)'s check value.
        assert_eq!(checksum(b"123456789"), 0xCBF4_3926);
    }

    /// Records above the applied lsn come back in order, across a switch of
    /// files; a torn tail is ignored.
    #[test]
    fn replays_what_redb_has_not_applied() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, replay) = Wal::open(&db, 0, false).expect("open");
        assert!(replay.is_empty());
        let per_file = PER_FILE;
        let mut switched_at = None;
        for rev in 1..=(per_file as i64 + 100) {
            let lsn = wal.append([put(rev)].iter()).expect("append");
            assert_eq!(lsn, rev as u64);
            if switched_at.is_none() && wal.switch_if_full(0) {
                switched_at = Some(lsn);
            }
        }
        let switched_at = switched_at.expect("switched files");
        // Cut the last record short, as a crash mid-write would.
        let active = &wal.files[wal.active];
        active
            .file
            .write_all_at(&[0xff; 8], active.pos - 8)
            .expect("tear");
        drop(wal);

        let last = per_file + 100;
        let (_, replay) = Wal::open(&db, 10, false).expect("reopen");
        let expect: Vec<i64> = (11..last as i64).collect();
        assert_eq!(revisions(&replay), expect);
        let (_, replay) = Wal::open(&db, switched_at, false).expect("reopen");
        assert_eq!(replay.first().map(|r| r.lsn), Some(switched_at + 1));
    }

    /// An append that wrote its record whole but failed after (its sync, or a report lost to
    /// a full disk) was never acknowledged: erased, it is not replayed, and the next append
    /// takes its place.
    #[test]
    fn an_erased_failed_append_is_not_replayed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
        wal.append([put(1)].iter()).expect("append");
        // A record written whole whose append then failed: on disk, not counted.
        let (pos, next_lsn, last_lsn) = {
            let f = &wal.files[wal.active];
            (f.pos, wal.next_lsn, f.last_lsn)
        };
        wal.append([put(2)].iter()).expect("append");
        wal.files[wal.active].pos = pos;
        wal.files[wal.active].last_lsn = last_lsn;
        wal.next_lsn = next_lsn;
        wal.erase_failed_append().expect("erase");
        drop(wal);
        let (mut wal, replay) = Wal::open(&db, 0, false).expect("reopen");
        assert_eq!(revisions(&replay), vec![1]);
        assert_eq!(wal.append([put(3)].iter()).expect("append"), 2);
        drop(wal);
        // Opening replays into redb, which then records lsn 1 as applied.
        let (_, replay) = Wal::open(&db, 1, true).expect("reopen");
        assert_eq!(revisions(&replay), vec![3]);
    }

    /// A file still holding records redb lacks is never overwritten.
    #[test]
    fn does_not_switch_onto_unapplied_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
        let per_file = PER_FILE;
        let mut switches = 0;
        for rev in 1..=(3 * per_file as i64) {
            wal.append([put(rev)].iter()).expect("append");
            // Nothing is ever checkpointed: one switch (onto the empty second
            // file), then the second file grows.
            if wal.switch_if_full(0) {
                switches += 1;
            }
        }
        assert_eq!(switches, 1);
        drop(wal);
        let (_, replay) = Wal::open(&db, 0, false).expect("reopen");
        assert_eq!(replay.len(), 3 * per_file as usize);
    }

    /// A gap between redb and the log is corruption, not an empty replay.
    #[test]
    fn refuses_a_gap_and_unknown_versions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
        wal.next_lsn = 5;
        wal.append([put(1)].iter()).expect("append");
        drop(wal);
        assert!(matches!(
            Wal::open(&db, 2, false),
            Err(StorageError::Corrupt { .. })
        ));
        let path = db.with_extension("wal.1");
        let f = OpenOptions::new().write(true).open(&path).expect("open");
        f.write_all_at(&9u32.to_le_bytes(), 8).expect("write");
        assert!(matches!(
            Wal::open(&db, 5, false),
            Err(StorageError::UnsupportedWalFormat { found: 9, .. })
        ));
    }

    /// A log that went on past a fresh database (the database file was deleted): refused,
    /// with an error that says so.
    #[test]
    fn a_new_database_next_to_an_old_log_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
        wal.next_lsn = 40;
        wal.append([put(1)].iter()).expect("append");
        drop(wal);
        let err = Wal::open(&db, 0, false).err().expect("refused").to_string();
        assert!(err.contains("records 1 to 39 are missing"), "{err}");
        assert!(err.contains("was the database file deleted"), "{err}");
    }

    /// Every state a creation cut short can leave (before issue 19 the file was zero-filled
    /// in place before its header was written): an empty file, zeroes of any length, a header
    /// cut short then zeroes. The log opens, holding nothing, and works; the other file's
    /// records still replay. Anything else in the header is refused, naming the file.
    #[test]
    fn an_interrupted_creation_opens_again() {
        let header = header();
        let mut states: Vec<Vec<u8>> = vec![Vec::new()];
        for len in [1, 15, 16, 17, 4096, 1 << 20, WAL_FILE_BYTES as usize] {
            states.push(vec![0; len]);
        }
        // (Past 9 bytes, magic and the version's low byte, the rest of a header is zeroes.)
        for cut in [1, 5, 8] {
            let mut b = vec![0u8; 1 << 20];
            b[..cut].copy_from_slice(&header[..cut]);
            states.push(b.clone());
            states.push(b[..cut].to_vec());
        }
        for (i, state) in states.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = dir.path().join("kv.redb");
            let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
            for rev in 1..=3 {
                wal.append([put(rev)].iter()).expect("append");
            }
            drop(wal);
            // The other file, as the kill left it (and, in a second run, the first one too:
            // a first start that never finished).
            std::fs::write(db.with_extension("wal.1"), state).expect("write");
            let (_, replay) = Wal::open(&db, 0, false)
                .unwrap_or_else(|e| panic!("state {i} ({} bytes): {e}", state.len()));
            assert_eq!(revisions(&replay), vec![1, 2, 3], "state {i}");
            std::fs::write(db.with_extension("wal.0"), state).expect("write");
            std::fs::write(db.with_extension("wal.1"), state).expect("write");
            let (mut wal, replay) = Wal::open(&db, 0, false)
                .unwrap_or_else(|e| panic!("state {i} ({} bytes), both files: {e}", state.len()));
            assert!(replay.is_empty(), "state {i}");
            wal.append([put(1)].iter())
                .expect("append after recreation");
            drop(wal);
            let (_, replay) = Wal::open(&db, 0, false).expect("reopen");
            assert_eq!(revisions(&replay), vec![1], "state {i}");
            assert_eq!(
                std::fs::metadata(db.with_extension("wal.0"))
                    .expect("stat")
                    .len(),
                WAL_FILE_BYTES
            );
        }
        // Once the store recorded the log as created whole, the same states are damage (a
        // file truncated or zeroed since): refused, naming the file and the offset.
        for (i, state) in states.iter().enumerate() {
            let dir = tempfile::tempdir().expect("tempdir");
            let db = dir.path().join("kv.redb");
            let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
            wal.append([put(1)].iter()).expect("append");
            drop(wal);
            std::fs::write(db.with_extension("wal.0"), state).expect("write");
            let e = Wal::open(&db, 0, true)
                .err()
                .unwrap_or_else(|| panic!("state {i} ({} bytes) opened", state.len()))
                .to_string();
            assert!(e.contains("kv.wal.0 offset "), "{e}");
        }
        // Not an unfinished creation: refused, naming the file.
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let mut b = vec![0u8; 4096];
        b[..8].copy_from_slice(b"TORCKVXX");
        std::fs::write(db.with_extension("wal.0"), &b).expect("write");
        let e = Wal::open(&db, 0, false).err().expect("refused").to_string();
        assert!(e.contains("kv.wal.0"), "{e}");
    }

    /// Auth mutations come back from the log as they went in.
    #[test]
    fn auth_records_replay() {
        use crate::auth::{AuthState, Caller};
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("kv.redb");
        let (mut wal, _) = Wal::open(&db, 0, false).expect("open");
        let mut a = AuthState::default();
        let mut changes = a.role_add(&Caller::Anonymous, "app").expect("role");
        changes.extend(a.bootstrap_root("hash".into()));
        changes.extend(
            a.role_delete(&Caller::User("root".into()), "app")
                .expect("delete"),
        );
        changes.push(AuthMutation::DeleteUser("nobody".into()));
        changes.push(AuthMutation::Enabled(false));
        let mutations: Vec<Mutation> = changes.into_iter().map(Mutation::Auth).collect();
        wal.append(mutations.iter()).expect("append");
        drop(wal);
        let (_, replay) = Wal::open(&db, 0, false).expect("reopen");
        assert_eq!(replay.len(), 1);
        assert_eq!(replay[0].mutations, mutations);
    }
}

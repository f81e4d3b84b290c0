//! Backup files: a consistent cut of some databases ([`Tsdb::snapshot`]) streamed as one file,
//! and that file read back and checked ([`BackupReader`]); [`crate::restore`] restores it.
//! What it is not: the cut itself or the installation of restored databases (see
//! [`crate::storage`]'s `snapshot` module), or the HTTP endpoints (see [`crate::http`]).
//!
//! Format (version 1; integers little-endian unless noted):
//! ```text
//! header:  "TORCTSDBBACKUP\0\0" (16 bytes), u32 version, u32 crc32 of the 20 bytes before
//! record:  u8 kind, u64 payload length, u32 crc32 of those 9 bytes, payload, u32 crc32 of it
//! records: 1 manifest   JSON {taken_at_ns, databases: [names], segment_version}
//!          2 database   JSON {name, meta}: its retention policies and continuous queries
//!          3 segment    varint-length db, varint-length rp, varint seq, then a segment file's
//!                       bytes (see crate::segment): the database's record comes first
//!          4 end        JSON {records, databases, segments, values, crc32}: `records` counts
//!                       those before it, `crc32` is that of every byte before it
//! ```
//! A file is a header, a manifest, then each database's record followed by its segments, then
//! the end record, then nothing. The length of a record is checked (its own checksum) before
//! anything is allocated for it, so a damaged length is reported as such; every payload has
//! its checksum, the end record holds the whole file's, and its absence means the file was cut
//! short. Errors ([`BackupError`]) name the record and the byte offset where the file went
//! wrong. A segment's bytes also pass a segment load's checks before they are restored.
//!
//! Memory: a backup streams each segment from memory (the store holds its segments there) in
//! chunks of [`CHUNK`] through a channel of a few chunks; a restore holds one segment at a time.
//!
//! Invariants: a restore changes the store only after the whole file has been read and checked
//! (the databases are staged first, then installed all or none); an existing database is never
//! overwritten ([`Error::DatabaseExists`]).

use std::io::Read;

use axum::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::encoding::{Reader, put_chunk, put_uvarint};
use crate::segment;
use crate::storage::{DbMeta, Snapshot, Tsdb};

/// The first 16 bytes of a backup file.
pub const MAGIC: &[u8; 16] = b"TORCTSDBBACKUP\0\0";
/// The format version written (and the only one read).
pub const VERSION: u32 = 1;
/// Largest record payload accepted (a segment holds at most a shard's data).
pub const MAX_RECORD: u64 = 16 << 30;
/// Bytes per chunk of the stream.
pub const CHUNK: usize = 1 << 20;

const KIND_MANIFEST: u8 = 1;
const KIND_DATABASE: u8 = 2;
const KIND_SEGMENT: u8 = 3;
const KIND_END: u8 = 4;

/// What a backup holds, before its data (record 1).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub taken_at_ns: i64,
    pub databases: Vec<String>,
    pub segment_version: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DatabaseRecord {
    name: String,
    meta: DbMeta,
}

/// The end record: counts and the file's checksum.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct End {
    pub records: u64,
    pub databases: u64,
    pub segments: u64,
    pub values: u64,
    pub crc32: u32,
}

/// Why a backup file is refused.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading the backup: {0}")]
    Io(#[source] std::io::Error),
    #[error("the backup is empty (0 bytes)")]
    Empty,
    #[error("not a torc tsdb backup: it starts with {found:?}, not \"TORCTSDBBACKUP\"")]
    NotABackup { found: String },
    #[error("backup format version {found}: this build reads version {VERSION} only")]
    Version { found: u32 },
    #[error("the backup's header is damaged (checksum mismatch)")]
    Header,
    #[error("the backup is truncated: it ends at byte {offset}, inside {inside}")]
    Truncated { offset: u64, inside: String },
    #[error("the backup is damaged: record {index} at byte {offset}: {what}")]
    Damaged {
        index: u64,
        offset: u64,
        what: String,
    },
    #[error(
        "the backup is damaged: its bytes give checksum {found:08x}, its end record says {expected:08x}"
    )]
    FileChecksum { expected: u32, found: u32 },
    #[error("the backup is damaged: bytes follow its end record at byte {offset}")]
    Trailing { offset: u64 },
}

/// Streams a consistent backup of database `only` (every database when `None`): the cut is
/// taken before this returns (an unknown database is an error then), the bytes follow through
/// the receiver. Dropping the receiver stops the stream.
pub async fn stream(
    db: &Tsdb,
    only: Option<&str>,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>, Error> {
    let snap = db.snapshot(only).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut w = Writer {
            tx,
            crc: crc32fast::Hasher::new(),
            end: End::default(),
        };
        // An error here is the receiver gone: the client stopped reading.
        let _ = w.snapshot(&snap).await;
    });
    Ok(rx)
}

/// Sends a backup's bytes and keeps the running checksum and counts.
struct Writer {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    crc: crc32fast::Hasher,
    end: End,
}

struct Gone;

impl Writer {
    async fn send(&mut self, b: Bytes) -> Result<(), Gone> {
        self.crc.update(&b);
        self.tx.send(Ok(b)).await.map_err(|_| Gone)
    }

    /// One record: `prefix` and `body` make its payload (the body is sent in chunks).
    async fn record(&mut self, kind: u8, prefix: &[u8], body: &[u8]) -> Result<(), Gone> {
        let mut head = record_header(kind, (prefix.len() + body.len()) as u64);
        head.extend_from_slice(prefix);
        let mut pc = crc32fast::Hasher::new();
        pc.update(prefix);
        pc.update(body);
        self.send(Bytes::from(head)).await?;
        for c in body.chunks(CHUNK) {
            self.send(Bytes::copy_from_slice(c)).await?;
        }
        self.send(Bytes::copy_from_slice(&pc.finalize().to_le_bytes()))
            .await?;
        self.end.records += 1;
        Ok(())
    }

    async fn snapshot(&mut self, snap: &Snapshot) -> Result<(), Gone> {
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
        self.send(Bytes::from(header)).await?;
        let manifest = Manifest {
            taken_at_ns: snap.taken_at_ns,
            databases: snap.databases.iter().map(|d| d.name.clone()).collect(),
            segment_version: segment::SEG_VERSION,
        };
        self.record(KIND_MANIFEST, &to_json(&manifest), &[]).await?;
        for d in &snap.databases {
            let rec = DatabaseRecord {
                name: d.name.clone(),
                meta: d.meta.clone(),
            };
            self.record(KIND_DATABASE, &to_json(&rec), &[]).await?;
            self.end.databases += 1;
            for (rp, segs) in &d.shards {
                for seg in segs {
                    let mut prefix = Vec::new();
                    put_chunk(&mut prefix, d.name.as_bytes());
                    put_chunk(&mut prefix, rp.as_bytes());
                    put_uvarint(&mut prefix, seg.seq);
                    self.record(KIND_SEGMENT, &prefix, seg.bytes()).await?;
                    self.end.segments += 1;
                    self.end.values += seg.values();
                }
            }
        }
        self.end.crc32 = self.crc.clone().finalize();
        let end = to_json(&self.end);
        self.record(KIND_END, &end, &[]).await
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers always serialize.
    serde_json::to_vec(v).unwrap_or_default()
}

fn record_header(kind: u8, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(13);
    h.push(kind);
    h.extend_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// One record of a backup, as [`BackupReader::next`] returns it.
#[derive(Debug)]
pub enum Item {
    Database {
        name: String,
        meta: DbMeta,
    },
    Segment {
        db: String,
        rp: String,
        seq: u64,
        bytes: Vec<u8>,
    },
    /// The end record, checked: the file's checksum matched and nothing follows it.
    End(End),
}

/// Reads a backup record by record, checking everything as it goes.
pub struct BackupReader<R> {
    r: R,
    offset: u64,
    /// Where the record read last began.
    record_offset: u64,
    crc: crc32fast::Hasher,
    index: u64,
    manifest: Manifest,
    done: bool,
}

impl<R: Read> BackupReader<R> {
    /// Checks the header and reads the manifest.
    pub fn open(r: R) -> Result<Self, BackupError> {
        let mut me = BackupReader {
            r,
            offset: 0,
            record_offset: 0,
            crc: crc32fast::Hasher::new(),
            index: 0,
            manifest: Manifest {
                taken_at_ns: 0,
                databases: Vec::new(),
                segment_version: 0,
            },
            done: false,
        };
        let mut head = [0u8; 24];
        let got = me.fill(&mut head)?;
        if got == 0 {
            return Err(BackupError::Empty);
        }
        if got < 16 || &head[..16] != MAGIC {
            return Err(BackupError::NotABackup {
                found: String::from_utf8_lossy(&head[..got.min(16)]).into_owned(),
            });
        }
        if got < 24 {
            return Err(BackupError::Truncated {
                offset: got as u64,
                inside: "the header".into(),
            });
        }
        let version = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
        let crc = u32::from_le_bytes([head[20], head[21], head[22], head[23]]);
        if crc != crc32fast::hash(&head[..20]) {
            return Err(BackupError::Header);
        }
        if version != VERSION {
            return Err(BackupError::Version { found: version });
        }
        let (kind, payload) = me.record()?;
        if kind != KIND_MANIFEST {
            return Err(me.damaged(format!("kind {kind} where the manifest (1) belongs")));
        }
        me.manifest = me.json(&payload, "manifest")?;
        Ok(me)
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The next record; after [`Item::End`], an error.
    pub fn next_item(&mut self) -> Result<Item, BackupError> {
        if self.done {
            return Err(BackupError::Trailing {
                offset: self.offset,
            });
        }
        let crc_before = self.crc.clone().finalize();
        let records_before = self.index;
        let (kind, payload) = self.record()?;
        match kind {
            KIND_DATABASE => {
                let rec: DatabaseRecord = self.json(&payload, "database record")?;
                Ok(Item::Database {
                    name: rec.name,
                    meta: rec.meta,
                })
            }
            KIND_SEGMENT => {
                let mut r = Reader::new(&payload);
                let parsed = (|| -> Result<(String, String, u64), crate::encoding::DecodeError> {
                    Ok((r.str()?.to_string(), r.str()?.to_string(), r.uvarint()?))
                })();
                let (db, rp, seq) =
                    parsed.map_err(|e| self.damaged(format!("segment record's header: {e}")))?;
                let at = r.pos;
                let mut bytes = payload;
                bytes.drain(..at);
                Ok(Item::Segment { db, rp, seq, bytes })
            }
            KIND_END => {
                let end: End = self.json(&payload, "end record")?;
                if end.crc32 != crc_before {
                    return Err(BackupError::FileChecksum {
                        expected: end.crc32,
                        found: crc_before,
                    });
                }
                if end.records != records_before {
                    return Err(self.damaged(format!(
                        "the end record counts {} records before it, the file has {records_before}",
                        end.records
                    )));
                }
                let mut one = [0u8; 1];
                if self.fill(&mut one)? > 0 {
                    return Err(BackupError::Trailing {
                        offset: self.offset - 1,
                    });
                }
                self.done = true;
                Ok(Item::End(end))
            }
            k => Err(self.damaged(format!("unknown record kind {k}"))),
        }
    }

    /// An error about the record just read.
    pub fn damaged(&self, what: String) -> BackupError {
        BackupError::Damaged {
            index: self.index.saturating_sub(1),
            offset: self.record_offset,
            what,
        }
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        payload: &[u8],
        what: &str,
    ) -> Result<T, BackupError> {
        serde_json::from_slice(payload).map_err(|e| self.damaged(format!("{what}: {e}")))
    }

    /// Reads one record (kind, checked payload).
    fn record(&mut self) -> Result<(u8, Vec<u8>), BackupError> {
        self.record_offset = self.offset;
        let index = self.index;
        self.index += 1;
        let mut h = [0u8; 13];
        self.exact(&mut h, || format!("the header of record {index}"))?;
        let len = u64::from_le_bytes([h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8]]);
        let crc = u32::from_le_bytes([h[9], h[10], h[11], h[12]]);
        if crc != crc32fast::hash(&h[..9]) {
            return Err(self.damaged("header checksum mismatch".into()));
        }
        if len > MAX_RECORD {
            return Err(self.damaged(format!("length {len} over the limit of {MAX_RECORD} bytes")));
        }
        let mut payload = vec![0u8; len as usize];
        self.exact(&mut payload, || {
            format!("record {index} (kind {}, {len} bytes)", h[0])
        })?;
        let mut c = [0u8; 4];
        self.exact(&mut c, || format!("the checksum of record {index}"))?;
        if u32::from_le_bytes(c) != crc32fast::hash(&payload) {
            return Err(self.damaged(format!(
                "payload checksum mismatch (kind {}, {len} bytes)",
                h[0]
            )));
        }
        Ok((h[0], payload))
    }

    fn exact(&mut self, buf: &mut [u8], inside: impl Fn() -> String) -> Result<(), BackupError> {
        if self.fill(buf)? < buf.len() {
            return Err(BackupError::Truncated {
                offset: self.offset,
                inside: inside(),
            });
        }
        Ok(())
    }

    /// Reads until `buf` is full or the input ends; returns the bytes read.
    fn fill(&mut self, buf: &mut [u8]) -> Result<usize, BackupError> {
        let mut n = 0;
        while n < buf.len() {
            match self.r.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BackupError::Io(e)),
            }
        }
        self.crc.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }
}

//! The storage engine: databases, retention policies, shards, WAL, head and segments.
//!
//! A *shard* holds the data of one (database, retention policy): a series index, an in-memory
//! head (recent writes), frozen heads being flushed, and immutable segments on disk.
//!
//! Directory layout (format version in `FORMAT`):
//! ```text
//! FORMAT                      "torc-tsdb 1", or "torc-tsdb 2" once a long name has a directory
//! meta.json                   databases, retention policies, continuous queries and users
//!                             (atomically replaced; version 2, version 1 had no users and is
//!                             read as none; a database without queries has no such field)
//! wal/<seq>.wal               write-ahead log (see wal.rs)
//! restore/<n>/<rp>/<seq>.seg  a restore being staged (see snapshot.rs; removed at open)
//! data/<db>/<rp>/<seq>.seg    segments (see segment.rs); <db> and <rp> are the names in hex,
//!                             or `~` + SHA-256 for names over 127 bytes (format 2, see names.rs)
//! ```
//!
//! Invariants:
//! * a write is acknowledged only after its WAL record is durable; it is then applied to the head;
//! * the `gate` is held shared by every write from WAL append to head apply and exclusively by a
//!   flush while it freezes heads and rotates the WAL, so every record of a sealed WAL file is in
//!   a frozen head, and a sealed WAL file is deleted only after those heads are in segments;
//! * precedence on equal timestamps: head > frozen heads (newest first) > segments (highest seq
//!   first); compaction keeps the highest input seq so this survives restarts;
//! * after open, the WAL is checkpointed into segments, so WAL records never outlive a
//!   `DROP DATABASE` across a restart (a drop is also logged, for replay before the checkpoint);
//! * WAL record kinds: 1 points, 2 drop database, 4 drop retention policy (both clear the heads
//!   replayed so far), 3 deletion (series keys, a time range and the
//!   shard's next segment seq at the time). A deletion's record is durable before any data is
//!   removed; it then filters the head and rewrites in place every older segment (seq below the
//!   recorded one) holding those series, all under the flush lock and the exclusive gate. Replay
//!   redoes it (idempotent), and the record lives until the next flush, which can only start
//!   once the rewrite is complete; later segments (seq at or above) hold only later writes, and a
//!   compaction keeps the highest input seq, so deleted data never comes back;
//! * the index holds exactly the series with data: after a deletion it is rebuilt from what
//!   remains (a measurement with series left keeps its field types);
//! * an unknown `FORMAT`, WAL or segment version refuses to open;
//! * names are checked when created ([`crate::names`]); a database or retention policy whose
//!   name this version would refuse (an older one accepted it) does not stop the store from
//!   opening: it is listed in [`Tsdb::startup_warnings`] (and logged) and served as it is.
//!
//! Code map (each module uses only those before it, no two import each other): `meta`
//! (options, catalog file, formats), `index` (a shard's series index), `shard` (a shard's
//! state and reads), `tsdb` (the store: open, poison, metadata, shard lookup), then the
//! operations on it, `impl Tsdb` blocks each: `catalog`, `delete`, `record` (WAL records and
//! replay), `write`, `flush` (flush, compaction, retention), `snapshot` (the consistent cut of
//! a backup, the installation of a restore).

mod catalog;
mod delete;
mod flush;
mod index;
mod meta;
mod record;
mod shard;
mod snapshot;
mod tsdb;
mod write;

pub use index::{Index, MeasurementIndex, SeriesInfo};
pub(crate) use meta::MetaFile;
pub use meta::{
    CqMeta, DbMeta, FORMAT_TEXT, FORMAT_TEXT_LONG_NAMES, Options, RpMeta, UserMeta, shard_group_for,
};
pub use shard::{Shard, ShardState};
pub use snapshot::{DatabaseSnapshot, Snapshot, StagedDatabase};
pub(crate) use tsdb::blocking;
pub use tsdb::{Tsdb, empty, now_ns};
pub use write::WriteSummary;

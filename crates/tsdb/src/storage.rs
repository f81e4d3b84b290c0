//! The storage engine: databases, retention policies, shards, WAL, head and segments.
//!
//! A *shard* holds the data of one (database, retention policy): a series index, an in-memory
//! head (recent writes), frozen heads being flushed, and immutable segments on disk.
//!
//! Directory layout (format version in `FORMAT`):
//! ```text
//! FORMAT                      "torc-tsdb 1", or "torc-tsdb 2" once a long name has a directory
//! meta.json                   databases, retention policies and users (atomically replaced;
//!                             version 2, version 1 had no users and is read as none)
//! wal/<seq>.wal               write-ahead log (see wal.rs)
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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::encoding::{Reader, put_chunk, put_uvarint, unzigzag, zigzag};
use crate::error::{Damage, Poison, Rejection, ReplayError};
use crate::influxql::Privilege;
use crate::model::{Column, FieldType, FieldValue, Point, Values};
use crate::names::{self, NameKind, dir_name};
use crate::segment::{self, Segment, SeriesData};
use crate::wal::{self, Wal};

/// `FORMAT` of a directory whose database and retention policy directories are all names in
/// hex (every name up to 127 bytes).
pub const FORMAT_TEXT: &str = "torc-tsdb 1";
/// `FORMAT` once a longer name has its (hashed) directory: see [`crate::names::dir_name`].
pub const FORMAT_TEXT_LONG_NAMES: &str = "torc-tsdb 2";

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Maximum number of series per database (InfluxDB's `max-series-per-database`); 0 = no limit.
    pub max_series_per_database: usize,
    /// Flush the heads to segments when they hold this many values.
    pub flush_values: usize,
    /// Compact a shard's segments into one when it has more than this many.
    pub max_segments: usize,
    /// InfluxDB's `[http] auth-enabled`: requests must authenticate once an admin user exists
    /// (see [`crate::auth`]).
    pub auth_enabled: bool,
    /// InfluxDB's `max-select-point`: most points a `SELECT` may read (and `GROUP BY time`
    /// buckets it may build), see [`crate::limits`]; 0 = no limit.
    pub max_select_point: usize,
    /// InfluxDB's `max-select-series`: most series a `SELECT` may read; 0 = no limit.
    pub max_select_series: usize,
    /// InfluxDB's `max-select-buckets`: most `GROUP BY time` buckets per group; 0 = no limit.
    pub max_select_buckets: usize,
    /// InfluxDB's `query-timeout`: longest a `/query` request may run; zero = no limit.
    pub query_timeout: std::time::Duration,
}

impl Default for Options {
    /// influxd 1.6 sets no query limit; torc does, because a rack's services must not grow
    /// without bound. A point costs a query about 100 bytes while it runs (its column, its row
    /// slot, its result cell), so 10 million points bound a query near 1 GB; the rack's
    /// interactive queries (a day of one-second samples of a few dozen series) read well under
    /// a million. 100,000 series is ten times a large rack's. A million buckets is a day and a
    /// half at one-second resolution per group (torc refused more before these settings
    /// existed). A minute is far longer than any interactive query and frees a server thread
    /// that a runaway query would hold.
    fn default() -> Self {
        Options {
            max_series_per_database: 1_000_000,
            flush_values: 20_000_000,
            max_segments: 8,
            auth_enabled: false,
            max_select_point: 10_000_000,
            max_select_series: 100_000,
            max_select_buckets: 1_000_000,
            query_timeout: std::time::Duration::from_secs(60),
        }
    }
}

impl Options {
    /// The query limits of these options.
    pub fn query_limits(&self) -> crate::limits::QueryLimits {
        crate::limits::QueryLimits {
            max_select_point: self.max_select_point,
            max_select_series: self.max_select_series,
            max_select_buckets: self.max_select_buckets,
            query_timeout: self.query_timeout,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpMeta {
    /// 0 = infinite.
    pub duration_ns: i64,
    pub shard_group_ns: i64,
    pub replication: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DbMeta {
    pub default_rp: String,
    pub rps: BTreeMap<String, RpMeta>,
}

/// A user as stored in `meta.json` (the catalog's rules are in [`crate::users`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserMeta {
    pub name: String,
    /// bcrypt hash of the password.
    pub hash: String,
    pub admin: bool,
    #[serde(default)]
    pub privileges: BTreeMap<String, Privilege>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct MetaFile {
    version: u32,
    pub(crate) databases: BTreeMap<String, DbMeta>,
    /// In creation order (`SHOW USERS` lists them so). Absent in version 1 files.
    #[serde(default)]
    pub(crate) users: Vec<UserMeta>,
}

impl MetaFile {
    fn database_mut(&mut self, db: &str) -> Result<&mut DbMeta, Error> {
        self.databases
            .get_mut(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))
    }
}

/// The metadata format written; [`META_VERSION_NO_USERS`] is read too.
const META_VERSION: u32 = 2;
const META_VERSION_NO_USERS: u32 = 1;

/// Default shard group duration for a retention duration, as InfluxDB picks it.
pub fn shard_group_for(duration_ns: i64) -> i64 {
    const H: i64 = 3_600_000_000_000;
    if duration_ns > 0 && duration_ns < 2 * 24 * H {
        H
    } else if duration_ns > 0 && duration_ns <= 180 * 24 * H {
        24 * H
    } else {
        7 * 24 * H
    }
}

/// A series in a shard's index.
#[derive(Debug)]
pub struct SeriesInfo {
    pub key: String,
    pub measurement: String,
    pub tags: Vec<(String, String)>,
}

impl SeriesInfo {
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(tk, _)| tk == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Per-measurement index.
#[derive(Debug, Default)]
pub struct MeasurementIndex {
    pub series: Vec<u32>,
    pub fields: BTreeMap<String, FieldType>,
    /// tag key -> tag value -> series ids.
    pub tags: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
}

/// Series and field index of one shard.
#[derive(Debug, Default)]
pub struct Index {
    pub series: Vec<SeriesInfo>,
    by_key: HashMap<String, u32>,
    pub measurements: BTreeMap<String, MeasurementIndex>,
}

impl Index {
    fn get_or_insert(&mut self, key: String, measurement: &str, tags: &[(String, String)]) -> u32 {
        if let Some(&id) = self.by_key.get(&key) {
            return id;
        }
        let id = self.series.len() as u32;
        let m = self
            .measurements
            .entry(measurement.to_string())
            .or_default();
        m.series.push(id);
        for (k, v) in tags {
            m.tags
                .entry(k.clone())
                .or_default()
                .entry(v.clone())
                .or_default()
                .push(id);
        }
        self.by_key.insert(key.clone(), id);
        self.series.push(SeriesInfo {
            key,
            measurement: measurement.to_string(),
            tags: tags.to_vec(),
        });
        id
    }
}

#[derive(Debug, Default)]
struct SeriesHead {
    fields: Vec<(String, Column)>,
}

#[derive(Debug)]
struct Frozen {
    id: u64,
    series: HashMap<u32, Vec<(String, Column)>>,
}

/// Number of independently locked parts of a head. Writers append under the shard's *shared*
/// lock plus one stripe's mutex, so a big batch never excludes queries; 64 stripes keep two
/// concurrent batches (thousands of series each) from queueing on the same mutex for long.
const HEAD_STRIPES: usize = 64;

/// The head: recent writes per series, striped by series id.
#[derive(Debug)]
struct Head {
    stripes: Vec<Mutex<HashMap<u32, SeriesHead>>>,
    values: AtomicUsize,
}

impl Default for Head {
    fn default() -> Self {
        Head {
            stripes: (0..HEAD_STRIPES).map(|_| Mutex::default()).collect(),
            values: AtomicUsize::new(0),
        }
    }
}

impl Head {
    fn stripe(&self, sid: u32) -> std::sync::MutexGuard<'_, HashMap<u32, SeriesHead>> {
        self.stripes[sid as usize % HEAD_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Empties the head, returning its series. Callers hold the shard lock exclusively.
    fn take(&self) -> HashMap<u32, SeriesHead> {
        let mut all = HashMap::new();
        for s in &self.stripes {
            all.extend(std::mem::take(
                &mut *s.lock().unwrap_or_else(|p| p.into_inner()),
            ));
        }
        self.values.store(0, Ordering::Relaxed);
        all
    }
}

/// Mutable state of a shard, behind its lock.
///
/// Lock discipline: the index, frozen heads and segments change only under the exclusive lock;
/// head appends take the shared lock plus a stripe mutex, and freezing the head takes the
/// exclusive lock, so a reader holding the shared lock sees every value exactly once (in the
/// head, a frozen head or a segment).
#[derive(Debug, Default)]
pub struct ShardState {
    pub index: Index,
    head: Head,
    frozen: Vec<Arc<Frozen>>,
    segments: Vec<Arc<Segment>>,
    /// series id -> (segment position, series position in it) for each segment.
    seg_maps: Vec<HashMap<u32, usize>>,
}

/// One database + retention policy.
#[derive(Debug)]
pub struct Shard {
    pub db: String,
    pub rp: String,
    dir: PathBuf,
    state: RwLock<ShardState>,
    next_seq: AtomicU64,
    db_series: Arc<AtomicUsize>,
}

impl Shard {
    /// A shard that lives only in memory, holding `points` in its head: the rows of a subquery,
    /// queried like stored data. It is never flushed or logged. A value whose type differs from
    /// the first one seen for its field (in its measurement) is left out, as a write would be.
    pub fn in_memory(points: &[Point]) -> Arc<Shard> {
        let mut st = ShardState::default();
        let mut values = 0;
        for p in points {
            let key = crate::lineproto::series_key(&p.measurement, &p.tags);
            let sid = st.index.get_or_insert(key, &p.measurement, &p.tags);
            let Some(m) = st.index.measurements.get_mut(&p.measurement) else {
                continue;
            };
            let fields: Vec<(String, FieldValue)> = p
                .fields
                .iter()
                .filter(|(f, v)| {
                    *m.fields.entry(f.clone()).or_insert(v.field_type()) == v.field_type()
                })
                .cloned()
                .collect();
            if fields.is_empty() {
                continue;
            }
            let p = Point {
                measurement: String::new(),
                tags: Vec::new(),
                fields,
                time: p.time,
            };
            values += apply_point(st.head.stripe(sid).entry(sid).or_default(), &p);
        }
        st.head.values.store(values, Ordering::Relaxed);
        Arc::new(Shard {
            db: String::new(),
            rp: String::new(),
            dir: PathBuf::new(),
            state: RwLock::new(st),
            next_seq: AtomicU64::new(1),
            db_series: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// True for a subquery's shard (see [`Shard::in_memory`]).
    pub fn is_in_memory(&self) -> bool {
        self.dir.as_os_str().is_empty()
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ShardState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, ShardState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }
}

impl ShardState {
    /// The merged columns of some fields of one series, limited to `[min, max]`: one entry
    /// per requested field, `None` where the series has no value in range. Each segment's
    /// times are decoded once for all the fields.
    pub fn columns(
        &self,
        sid: u32,
        fields: &[&str],
        min: i64,
        max: i64,
    ) -> Result<Vec<Option<Column>>, Error> {
        let mut acc: Vec<Option<Column>> = fields.iter().map(|_| None).collect();
        let add = |slot: &mut Option<Column>, c: Column| {
            let (lo, hi) = c.slice_time(min, max);
            if lo == hi {
                return;
            }
            let c = if lo == 0 && hi == c.times.len() {
                c
            } else {
                let idx: Vec<usize> = (lo..hi).collect();
                Column {
                    times: c.times[lo..hi].to_vec(),
                    values: c.values.permute(&idx),
                }
            };
            *slot = Some(match slot.take() {
                None => c,
                Some(a) => a.merge(c),
            });
        };
        for (seg, map) in self.segments.iter().zip(&self.seg_maps) {
            if let Some(&si) = map.get(&sid) {
                let s = &seg.series[si];
                if s.max_t < min || s.min_t > max {
                    continue;
                }
                for (slot, c) in acc.iter_mut().zip(seg.read_fields(si, fields)?) {
                    if let Some(c) = c {
                        add(slot, c);
                    }
                }
            }
        }
        let find = |cols: &[(String, Column)]| -> Vec<Option<usize>> {
            let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
            crate::model::positions(&names, fields)
        };
        for fz in &self.frozen {
            if let Some(cols) = fz.series.get(&sid) {
                for (slot, at) in acc.iter_mut().zip(find(cols)) {
                    if let Some(i) = at {
                        add(slot, cols[i].1.clone());
                    }
                }
            }
        }
        let head_cols: Vec<Option<Column>> = {
            let stripe = self.head.stripe(sid);
            match stripe.get(&sid) {
                Some(h) => find(&h.fields)
                    .into_iter()
                    .map(|at| at.map(|i| h.fields[i].1.clone()))
                    .collect(),
                None => fields.iter().map(|_| None).collect(),
            }
        };
        for (slot, c) in acc.iter_mut().zip(head_cols) {
            if let Some(mut c) = c {
                c.normalize();
                add(slot, c);
            }
        }
        Ok(acc)
    }

    /// Number of values in the head.
    pub fn head_values(&self) -> usize {
        self.head.values.load(Ordering::Relaxed)
    }
}

/// The database.
pub struct Tsdb {
    dir: PathBuf,
    opts: Options,
    meta: RwLock<MetaFile>,
    shards: RwLock<HashMap<(String, String), Arc<Shard>>>,
    db_series: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    wal: Wal,
    gate: tokio::sync::RwLock<()>,
    flush_lock: tokio::sync::Mutex<()>,
    /// Admission for the CPU-heavy parts of writes: at most one per core runs at a time. More
    /// would only time-slice against each other, and a writer preempted while it holds a head
    /// stripe makes a query wait a whole scheduler slice; with at most one runnable writer per
    /// core a query thread that wakes up gets the CPU at once.
    cpu: tokio::sync::Semaphore,
    flush_pending: AtomicBool,
    next_frozen: AtomicU64,
    poisoned: Mutex<Option<Poison>>,
    /// Password checks: the bcrypt workers and the cache of verified passwords.
    pub(crate) authn: crate::password::Authenticator,
    /// The directory's format version (1 or 2, see `FORMAT_TEXT_LONG_NAMES`).
    format: AtomicU64,
    /// What `open` found to report (names this version would refuse).
    startup_warnings: Vec<String>,
}

impl std::fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsdb").field("dir", &self.dir).finish()
    }
}

/// Summary of a write that was applied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteSummary {
    pub written: usize,
    pub dropped: usize,
}

impl Tsdb {
    /// Opens (or creates) a database directory: checks the format, loads segments, replays the
    /// WAL (truncating a torn tail), then checkpoints the replayed data into segments.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Tsdb, Error> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let format_path = dir.join("FORMAT");
        let format = match std::fs::read_to_string(&format_path) {
            Ok(s) => match s.trim() {
                FORMAT_TEXT => 1,
                FORMAT_TEXT_LONG_NAMES => 2,
                other => {
                    return Err(Error::UnsupportedFormat {
                        path: format_path,
                        found: other.to_string(),
                        expected: 2,
                    });
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let nonempty = std::fs::read_dir(&dir)
                    .map_err(|e| Error::io("reading data dir", e))?
                    .next()
                    .is_some();
                if nonempty {
                    return Err(Error::UnsupportedFormat {
                        path: format_path,
                        found: "missing FORMAT file in a non-empty directory".into(),
                        expected: 2,
                    });
                }
                write_atomic(&dir, "FORMAT", format!("{FORMAT_TEXT}\n").as_bytes())?;
                1
            }
            Err(e) => return Err(Error::io("reading FORMAT", e)),
        };
        let meta: MetaFile = match std::fs::read(dir.join("meta.json")) {
            Ok(b) => {
                let m: MetaFile = serde_json::from_slice(&b).map_err(|e| Error::Corrupt {
                    path: dir.join("meta.json"),
                    detail: Damage::Metadata(Arc::new(e)),
                })?;
                if m.version != META_VERSION && m.version != META_VERSION_NO_USERS {
                    return Err(Error::UnsupportedFormat {
                        path: dir.join("meta.json"),
                        found: format!("meta version {}", m.version),
                        expected: META_VERSION,
                    });
                }
                m
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => MetaFile {
                version: META_VERSION,
                databases: BTreeMap::new(),
                users: Vec::new(),
            },
            Err(e) => return Err(Error::io("reading meta.json", e)),
        };
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| Error::io("creating wal dir", e))?;
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).map_err(|e| Error::io("creating data dir", e))?;

        // Remove directories of dropped databases and retention policies.
        let live: HashMap<String, std::collections::HashSet<String>> = meta
            .databases
            .iter()
            .map(|(d, dm)| (dir_name(d), dm.rps.keys().map(|r| dir_name(r)).collect()))
            .collect();
        for e in std::fs::read_dir(&data_dir).map_err(|e| Error::io("reading data dir", e))? {
            let e = e.map_err(|e| Error::io("reading data dir", e))?;
            let name = e.file_name().to_string_lossy().to_string();
            let Some(rps) = live.get(&name) else {
                std::fs::remove_dir_all(e.path())
                    .map_err(|e| Error::io("removing dropped db", e))?;
                continue;
            };
            for r in std::fs::read_dir(e.path()).map_err(|e| Error::io("reading db dir", e))? {
                let r = r.map_err(|e| Error::io("reading db dir", e))?;
                if !rps.contains(&*r.file_name().to_string_lossy()) {
                    std::fs::remove_dir_all(r.path())
                        .map_err(|e| Error::io("removing dropped retention policy", e))?;
                }
            }
        }

        let meta_names: Vec<(String, Vec<String>)> = meta
            .databases
            .iter()
            .map(|(d, dm)| (d.clone(), dm.rps.keys().cloned().collect()))
            .collect();
        let wal_seqs = wal::list(&wal_dir)?;
        let next_wal = wal_seqs.last().map_or(1, |s| s + 1);
        let wal = Wal::open(&wal_dir, next_wal)?;
        let db = Tsdb {
            dir: dir.clone(),
            opts,
            meta: RwLock::new(meta),
            shards: RwLock::new(HashMap::new()),
            db_series: Mutex::new(HashMap::new()),
            wal,
            gate: tokio::sync::RwLock::new(()),
            flush_lock: tokio::sync::Mutex::new(()),
            cpu: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            ),
            flush_pending: AtomicBool::new(false),
            next_frozen: AtomicU64::new(1),
            poisoned: Mutex::new(None),
            authn: crate::password::Authenticator::new(),
            format: AtomicU64::new(format),
            startup_warnings: refused_names(&meta_names),
        };
        for w in &db.startup_warnings {
            tracing::warn!("{w}");
        }
        // Load segments of every known shard.
        let rps: Vec<(String, String)> = {
            let m = db.meta.read().unwrap_or_else(|p| p.into_inner());
            m.databases
                .iter()
                .flat_map(|(d, dm)| dm.rps.keys().map(move |r| (d.clone(), r.clone())))
                .collect()
        };
        for (d, r) in rps {
            db.shard(&d, &r)?;
        }
        // Replay. A torn tail is tolerated in the newest file holding records: files after it
        // hold none (a start killed before its replay finished left them).
        let mut tail = 0;
        for (i, seq) in wal_seqs.iter().enumerate().rev() {
            if wal::holds_records(&wal::wal_path(&wal_dir, *seq))? {
                tail = i;
                break;
            }
        }
        for (i, seq) in wal_seqs.iter().enumerate() {
            let path = wal::wal_path(&wal_dir, *seq);
            for rec in wal::read_file(&path, i >= tail)? {
                db.replay_record(&rec).map_err(|source| Error::Replay {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        // Checkpoint: replayed heads go to segments, old WAL files go away.
        db.checkpoint_blocking(&wal_seqs)?;
        let mut db = db;
        let key_warnings = db.long_keys();
        for w in &key_warnings {
            tracing::warn!("{w}");
        }
        db.startup_warnings.extend(key_warnings);
        Ok(db)
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// What opening the directory found to report: names this version would refuse, which an
    /// older one accepted (they are served as they are). Also logged at open.
    pub fn startup_warnings(&self) -> &[String] {
        &self.startup_warnings
    }

    /// One warning per shard holding series or field keys over [`names::MAX_KEY_LEN`].
    fn long_keys(&self) -> Vec<String> {
        let mut out = Vec::new();
        let shards = self.all_shards();
        for shard in shards {
            let st = shard.read();
            let mut n = 0;
            for s in &st.index.series {
                let fields = st.index.measurements.get(&s.measurement);
                let long_field = fields.is_some_and(|m| {
                    m.fields
                        .keys()
                        .any(|f| names::field_key_error(s.key.len(), f.len()).is_some())
                });
                if names::series_key_error(s.key.len()).is_some() || long_field {
                    n += 1;
                }
            }
            if n > 0 {
                out.push(format!(
                    "{n} series of database {} (retention policy {}) have keys longer than the {} bytes this version accepts in a write; they are served as they are",
                    names::preview(&shard.db),
                    names::preview(&shard.rp),
                    names::MAX_KEY_LEN
                ));
            }
        }
        out
    }

    /// Moves the directory to format 2 before the first directory of a long name is made.
    fn allow_long_dir(&self, db: &str, rp: &str) -> Result<(), Error> {
        if !(names::needs_long_dir(db) || names::needs_long_dir(rp))
            || self.format.load(Ordering::Relaxed) >= 2
        {
            return Ok(());
        }
        write_atomic(
            &self.dir,
            "FORMAT",
            format!("{FORMAT_TEXT_LONG_NAMES}\n").as_bytes(),
        )?;
        self.format.store(2, Ordering::Relaxed);
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn check_poison(&self) -> Result<(), Error> {
        if let Some(p) = self
            .poisoned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Err(Error::Poisoned(p));
        }
        if let Some(p) = self.wal.poisoned() {
            return Err(Error::Poisoned(p));
        }
        Ok(())
    }

    fn poison(&self, e: &Error) {
        tracing::error!(error = %e, "storage failure; refusing further writes");
        *self.poisoned.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(Poison::Storage(Box::new(e.clone())));
    }

    /// Applies `change` to a copy of the metadata; when it reports a change, persists the copy
    /// (in the current format version) and makes it current. On an error or no change nothing
    /// is written. Returns whether anything changed. A change is visible only once durable.
    ///
    /// If persisting fails, the old metadata stays current and the store is poisoned: what the
    /// disk holds is no longer known to match it (a failed fsync may have lost more than this
    /// file's write), so every later write is refused until a restart. A failure after the
    /// rename (the directory's fsync) has put the change in the file already: the old contents
    /// are written back, so that a restart finds the change refused as it was; should that
    /// fail too, a restart may find either.
    pub(crate) fn update_meta(
        &self,
        change: impl FnOnce(&mut MetaFile) -> Result<bool, Error>,
    ) -> Result<bool, Error> {
        let mut m = self.meta.write().unwrap_or_else(|p| p.into_inner());
        let mut next = m.clone();
        if !change(&mut next)? {
            return Ok(false);
        }
        next.version = META_VERSION;
        if let Err(failure) = self.write_meta(&meta_bytes(&next)?) {
            if failure.step == torc_durable::Step::FsyncDir
                && let Err(e) = meta_bytes(&m).and_then(|old| Ok(self.write_meta(&old)?))
            {
                tracing::error!(error = %e, "cannot put meta.json back after a failed write");
            }
            let e = Error::from(failure);
            self.poison(&e);
            return Err(e);
        }
        *m = next;
        Ok(true)
    }

    /// The current metadata, for reading.
    pub(crate) fn meta(&self) -> std::sync::RwLockReadGuard<'_, MetaFile> {
        self.meta.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_meta(&self, bytes: &[u8]) -> Result<(), torc_durable::WriteError> {
        torc_durable::write_atomic(&self.dir.join("meta.json"), bytes)
    }

    // ---------- metadata ----------

    pub fn databases(&self) -> Vec<String> {
        self.meta
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .databases
            .keys()
            .cloned()
            .collect()
    }

    pub fn database(&self, name: &str) -> Option<DbMeta> {
        self.meta
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .databases
            .get(name)
            .cloned()
    }

    /// `CREATE DATABASE` (idempotent, like InfluxDB).
    pub fn create_database(&self, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        if name.is_empty() {
            return Err(Error::DatabaseNameRequired);
        }
        self.update_meta(|next| {
            if next.databases.contains_key(name) {
                return Ok(false);
            }
            names::check_name(NameKind::Database, name)?;
            let mut rps = BTreeMap::new();
            rps.insert(
                "autogen".to_string(),
                RpMeta {
                    duration_ns: 0,
                    shard_group_ns: shard_group_for(0),
                    replication: 1,
                },
            );
            next.databases.insert(
                name.to_string(),
                DbMeta {
                    default_rp: "autogen".into(),
                    rps,
                },
            );
            Ok(true)
        })?;
        Ok(())
    }

    /// `CREATE RETENTION POLICY`.
    pub fn create_retention_policy(
        &self,
        db: &str,
        name: &str,
        rp: RpMeta,
        default: bool,
    ) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let d = next.database_mut(db)?;
            if let Some(existing) = d.rps.get(name)
                && *existing != rp
            {
                return Err(Error::RetentionPolicyExists);
            }
            if !d.rps.contains_key(name) {
                names::check_name(NameKind::RetentionPolicy, name)?;
            }
            d.rps.insert(name.to_string(), rp);
            if default {
                d.default_rp = name.to_string();
            }
            Ok(true)
        })?;
        Ok(())
    }

    /// `ALTER RETENTION POLICY`: changes the options given (a new duration takes effect at the
    /// next retention sweep).
    pub fn alter_retention_policy(
        &self,
        db: &str,
        name: &str,
        change: impl FnOnce(&mut RpMeta),
        default: bool,
    ) -> Result<(), Error> {
        self.check_poison()?;
        self.update_meta(|next| {
            let d = next.database_mut(db)?;
            let rp = d
                .rps
                .get_mut(name)
                .ok_or_else(|| Error::RetentionPolicyNotFound(name.to_string()))?;
            change(rp);
            if default {
                d.default_rp = name.to_string();
            }
            Ok(true)
        })?;
        Ok(())
    }

    /// `DROP RETENTION POLICY` (idempotent): its data goes with it. Logged (WAL kind 4) so that a
    /// replay does not bring back points written before the drop into a policy of the same
    /// name created after it.
    pub async fn drop_retention_policy(&self, db: &str, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        // The flush lock keeps a flush from writing a segment into the directory removed here.
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        // Like InfluxDB 1.6, dropping what does not exist (even the database) is no error.
        let dropped = self.update_meta(|next| {
            Ok(next
                .databases
                .get_mut(db)
                .is_some_and(|d| d.rps.remove(name).is_some()))
        })?;
        if !dropped {
            return Ok(());
        }
        let mut rec = vec![4u8];
        put_chunk(&mut rec, db.as_bytes());
        put_chunk(&mut rec, name.as_bytes());
        if let Err(e) = self.wal.append(&rec).await {
            self.poison(&e);
            return Err(e);
        }
        let shard = self
            .shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(db.to_string(), name.to_string()));
        if let Some(s) = shard {
            let n = s.read().index.series.len();
            s.db_series.fetch_sub(n, Ordering::Relaxed);
        }
        let p = self
            .dir
            .join("data")
            .join(dir_name(db))
            .join(dir_name(name));
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io("removing retention policy", e))?;
        }
        Ok(())
    }

    /// `DROP DATABASE` (idempotent).
    pub async fn drop_database(&self, name: &str) -> Result<(), Error> {
        self.check_poison()?;
        // As in `drop_retention_policy`: no flush may write a segment into the directory
        // removed here.
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        // InfluxDB drops the users' privileges on the database with it.
        let dropped = self.update_meta(|next| {
            let dropped = next.databases.remove(name).is_some();
            if dropped {
                for u in &mut next.users {
                    u.privileges.remove(name);
                }
            }
            Ok(dropped)
        })?;
        if !dropped {
            return Ok(());
        }
        let mut rec = vec![2u8];
        put_chunk(&mut rec, name.as_bytes());
        self.wal.append(&rec).await?;
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(d, _), _| d != name);
        self.db_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        let p = self.dir.join("data").join(dir_name(name));
        if p.exists() {
            std::fs::remove_dir_all(&p).map_err(|e| Error::io("removing database", e))?;
        }
        Ok(())
    }

    /// Deletes data of a database: in each shard, the series `select` names (by key), values
    /// with times in `[min, max]` (`DROP SERIES`, `DROP MEASUREMENT`, `DELETE`). A series left
    /// with no value leaves the index, and a measurement left with no series disappears, as in
    /// InfluxDB 1.6.
    ///
    /// `select` runs for every shard before anything changes, so an error it returns (a field
    /// in the condition) leaves the data untouched. Writes and flushes wait meanwhile. Per
    /// shard, a WAL record (kind 3: the keys, the time range and the shard's next segment seq)
    /// is made durable first, then the head is filtered and every older segment that holds one
    /// of the series is rewritten in place; replay redoes the whole deletion, so a crash at any
    /// point leaves either nothing or all of it deleted, and deleted data never comes back.
    pub async fn delete<E: From<Error>>(
        &self,
        db: &str,
        min: i64,
        max: i64,
        select: impl Fn(&ShardState) -> Result<Vec<String>, E>,
    ) -> Result<(), E> {
        self.check_poison()?;
        if min > max {
            return Ok(());
        }
        let _f = self.flush_lock.lock().await;
        let _g = self.gate.write().await;
        let mut plan = Vec::new();
        for shard in self.shards_of(db) {
            let keys = select(&shard.read())?;
            if !keys.is_empty() {
                plan.push((shard, keys));
            }
        }
        for (shard, keys) in plan {
            let bound = shard.next_seq.load(Ordering::Relaxed);
            let rec = encode_delete_record(&shard.db, &shard.rp, bound, min, max, &keys);
            if let Err(e) = self.wal.append(&rec).await {
                self.poison(&e);
                return Err(e.into());
            }
            if let Err(e) = blocking(|| apply_delete(&shard, &keys, min, max, bound)) {
                self.poison(&e);
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// Resolves the retention policy (given or default) of a database.
    pub fn resolve_rp(&self, db: &str, rp: Option<&str>) -> Result<(String, RpMeta), Error> {
        let m = self.meta.read().unwrap_or_else(|p| p.into_inner());
        let d = m
            .databases
            .get(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))?;
        let name = match rp {
            Some(r) if !r.is_empty() => r.to_string(),
            _ => d.default_rp.clone(),
        };
        let meta = d
            .rps
            .get(&name)
            .cloned()
            .ok_or_else(|| Error::RetentionPolicyNotFound(name.clone()))?;
        Ok((name, meta))
    }

    /// The shard of (db, rp), created (and its segments loaded) on first use.
    pub fn shard(&self, db: &str, rp: &str) -> Result<Arc<Shard>, Error> {
        let key = (db.to_string(), rp.to_string());
        if let Some(s) = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let mut shards = self.shards.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = shards.get(&key) {
            return Ok(s.clone());
        }
        let dir = self.dir.join("data").join(dir_name(db)).join(dir_name(rp));
        self.allow_long_dir(db, rp)?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let counter = self
            .db_series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(db.to_string())
            .or_default()
            .clone();
        let mut st = ShardState::default();
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(&dir).map_err(|e| Error::io("reading shard dir", e))? {
            let e = e.map_err(|e| Error::io("reading shard dir", e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(e.path());
            } else if let Some(s) = name.strip_suffix(".seg")
                && let Ok(n) = s.parse::<u64>()
            {
                seqs.push(n);
            }
        }
        seqs.sort_unstable();
        for seq in &seqs {
            let seg = Segment::load(*seq, segment::seg_path(&dir, *seq))?;
            install_segment(&mut st, Arc::new(seg), &counter);
        }
        let shard = Arc::new(Shard {
            db: db.to_string(),
            rp: rp.to_string(),
            dir,
            state: RwLock::new(st),
            next_seq: AtomicU64::new(seqs.last().map_or(1, |s| s + 1)),
            db_series: counter,
        });
        shards.insert(key, shard.clone());
        Ok(shard)
    }

    /// Every shard that exists (a snapshot: the map's lock is not held).
    fn all_shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Shards of a database that exist.
    pub fn shards_of(&self, db: &str) -> Vec<Arc<Shard>> {
        let mut v: Vec<Arc<Shard>> = self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| s.db == db)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.rp.cmp(&b.rp));
        v
    }

    // ---------- writes ----------

    /// Writes points durably. Rejected points (type conflicts, series limit, retention) are
    /// reported as InfluxDB's partial-write error after the accepted ones are durable.
    pub async fn write(
        &self,
        db: &str,
        rp: Option<&str>,
        points: Vec<Point>,
    ) -> Result<WriteSummary, Error> {
        self.check_poison()?;
        let (rp_name, rp_meta) = self.resolve_rp(db, rp)?;
        let shard = self.shard(db, &rp_name)?;
        let now = now_ns();
        let _g = self.gate.read().await;
        // The CPU-heavy parts of a write (series keys, index registration, WAL encoding, head
        // apply) run through `blocking`, so a big batch never stalls the runtime's worker and a
        // query that arrives meanwhile is served at once (the OS time-slices the two threads).
        let (accepted, first_rejection, dropped, rec) = self
            .cpu_bound(|| {
                // Series keys are built before any lock. In the steady state every series and field
                // is known, and the shared lock suffices: queries run alongside. Only a batch that
                // brings a new series or field takes the exclusive lock (and classifies again).
                let keys: Vec<String> = points
                    .iter()
                    .map(|p| crate::lineproto::series_key(&p.measurement, &p.tags))
                    .collect();
                let retention_floor = if rp_meta.duration_ns > 0 {
                    now.saturating_sub(rp_meta.duration_ns)
                } else {
                    i64::MIN
                };
                let shared = {
                    let st = shard.read();
                    let mut reg = Registration::new(points.len());
                    let mut complete = true;
                    for (p, key) in points.iter().zip(&keys) {
                        match classify(&st, p, key, retention_floor) {
                            Class::Known(sid) => reg.accepted.push((sid, p)),
                            Class::Reject(r) => reg.reject(r),
                            Class::New => {
                                complete = false;
                                break;
                            }
                        }
                    }
                    complete.then_some(reg)
                };
                let reg = match shared {
                    Some(reg) => reg,
                    None => {
                        let mut st = shard.write();
                        let limit = self.opts.max_series_per_database;
                        let mut reg = Registration::new(points.len());
                        for (p, key) in points.iter().zip(keys) {
                            let sid = match classify(&st, p, &key, retention_floor) {
                                Class::Known(sid) => sid,
                                Class::Reject(r) => {
                                    reg.reject(r);
                                    continue;
                                }
                                Class::New => {
                                    let sid = match st.index.by_key.get(&key) {
                                        Some(&id) => id,
                                        None => {
                                            if limit > 0
                                                && shard.db_series.load(Ordering::Relaxed) >= limit
                                            {
                                                reg.reject(Rejection::SeriesLimit {
                                                    limit: self.opts.max_series_per_database,
                                                });
                                                continue;
                                            }
                                            shard.db_series.fetch_add(1, Ordering::Relaxed);
                                            st.index.get_or_insert(key, &p.measurement, &p.tags)
                                        }
                                    };
                                    let m = st
                                        .index
                                        .measurements
                                        .get_mut(&p.measurement)
                                        .expect("measurement registered with its series");
                                    for (f, v) in &p.fields {
                                        if !m.fields.contains_key(f) {
                                            m.fields.insert(f.clone(), v.field_type());
                                        }
                                    }
                                    sid
                                }
                            };
                            reg.accepted.push((sid, p));
                        }
                        reg
                    }
                };
                let Registration {
                    accepted,
                    first_rejection,
                    dropped,
                } = reg;
                let rec = (!accepted.is_empty())
                    .then(|| encode_points_record(db, &rp_name, accepted.iter().map(|(_, p)| *p)));
                (accepted, first_rejection, dropped, rec)
            })
            .await;
        if let Some(rec) = rec {
            if let Err(e) = self.wal.append(&rec).await {
                // Out of space, nothing of the record was kept: refused, not poisoned (see
                // `wal`). TODO-correctness: series this write registered stay in the index
                // without data until a restart.
                if !matches!(e, Error::NoSpace { .. }) {
                    self.poison(&e);
                }
                return Err(e);
            }
            drop(rec);
            self.cpu_bound(|| {
                let st = shard.read();
                apply_points(&st, &accepted);
                if st.head_values() >= self.opts.flush_values {
                    self.flush_pending.store(true, Ordering::Relaxed);
                }
            })
            .await;
        }
        let summary = WriteSummary {
            written: accepted.len(),
            dropped,
        };
        if let Some(reason) = first_rejection {
            return Err(Error::PartialWrite { reason, dropped });
        }
        Ok(summary)
    }

    /// Runs CPU-heavy work of a write (parsing, indexing, head appends) off the async worker,
    /// at most one such job per core at a time (see `cpu`).
    pub async fn cpu_bound<R>(&self, f: impl FnOnce() -> R) -> R {
        let _permit = self.cpu.acquire().await.ok();
        blocking(f)
    }

    /// True when a write found the heads over the flush threshold.
    pub fn take_flush_request(&self) -> bool {
        self.flush_pending.swap(false, Ordering::Relaxed)
    }

    fn replay_record(&self, rec: &[u8]) -> Result<(), ReplayError> {
        let mut r = Reader::new(rec);
        match r.u8()? {
            1 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let points = decode_points(&mut r)?;
                if self.resolve_rp(&db, Some(&rp)).is_err() {
                    return Ok(()); // dropped since
                }
                let shard = self.shard(&db, &rp).map_err(Box::new)?;
                let mut st = shard.write();
                for p in &points {
                    let key = crate::lineproto::series_key(&p.measurement, &p.tags);
                    let new = !st.index.by_key.contains_key(&key);
                    let sid = st.index.get_or_insert(key, &p.measurement, &p.tags);
                    if new {
                        shard.db_series.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(m) = st.index.measurements.get_mut(&p.measurement) {
                        for (f, v) in &p.fields {
                            m.fields.entry(f.clone()).or_insert(v.field_type());
                        }
                    }
                    let added = apply_point(st.head.stripe(sid).entry(sid).or_default(), p);
                    st.head.values.fetch_add(added, Ordering::Relaxed);
                }
                Ok(())
            }
            2 => {
                let db = r.str()?.to_string();
                for ((d, _), s) in self.shards.read().unwrap_or_else(|p| p.into_inner()).iter() {
                    if *d == db {
                        let st = s.write();
                        st.head.take();
                    }
                }
                Ok(())
            }
            3 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let bound = r.uvarint()?;
                let min = unzigzag(r.uvarint()?);
                let max = unzigzag(r.uvarint()?);
                let n = r.uvarint()? as usize;
                let mut keys = Vec::with_capacity(n.min(1 << 16));
                for _ in 0..n {
                    keys.push(r.str()?.to_string());
                }
                if self.resolve_rp(&db, Some(&rp)).is_err() {
                    return Ok(()); // dropped since
                }
                let shard = self.shard(&db, &rp).map_err(Box::new)?;
                Ok(apply_delete(&shard, &keys, min, max, bound).map_err(Box::new)?)
            }
            4 => {
                let db = r.str()?.to_string();
                let rp = r.str()?.to_string();
                let key = (db, rp);
                if let Some(s) = self
                    .shards
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&key)
                {
                    let st = s.write();
                    st.head.take();
                }
                Ok(())
            }
            k => Err(ReplayError::UnknownKind(k)),
        }
    }

    // ---------- flush, compaction, retention ----------

    fn checkpoint_blocking(&self, old_wal: &[u64]) -> Result<(), Error> {
        let shards = self.all_shards();
        for shard in shards {
            if let Some(fz) = self.freeze(&shard) {
                self.write_frozen(&shard, &fz)?;
            }
        }
        for seq in old_wal {
            let _ = std::fs::remove_file(wal::wal_path(self.wal.dir(), *seq));
        }
        wal::sync_dir(self.wal.dir())
    }

    fn freeze(&self, shard: &Shard) -> Option<Arc<Frozen>> {
        let mut st = shard.write();
        let head = st.head.take();
        if head.is_empty() {
            return None;
        }
        let series = head
            .into_iter()
            .map(|(sid, h)| {
                let cols = h
                    .fields
                    .into_iter()
                    .map(|(n, mut c)| {
                        c.normalize();
                        (n, c)
                    })
                    .collect();
                (sid, cols)
            })
            .collect();
        let fz = Arc::new(Frozen {
            id: self.next_frozen.fetch_add(1, Ordering::Relaxed),
            series,
        });
        st.frozen.push(fz.clone());
        Some(fz)
    }

    fn write_frozen(&self, shard: &Shard, fz: &Frozen) -> Result<(), Error> {
        let cutoff = self.retention_cutoff(shard);
        let seq = shard.next_seq.fetch_add(1, Ordering::Relaxed);
        let seg = {
            let st = shard.read();
            let mut sids: Vec<&u32> = fz.series.keys().collect();
            sids.sort_unstable();
            let mut trimmed: Vec<(u32, Vec<(String, Column)>)> = Vec::new();
            for sid in sids {
                let cols: Vec<(String, Column)> = fz.series[sid]
                    .iter()
                    .filter_map(|(n, c)| trim_before(c, cutoff).map(|c| (n.clone(), c)))
                    .collect();
                if !cols.is_empty() {
                    trimmed.push((*sid, cols));
                }
            }
            let data: Vec<SeriesData<'_>> = trimmed
                .iter()
                .map(|(sid, cols)| {
                    let info = &st.index.series[*sid as usize];
                    SeriesData {
                        measurement: &info.measurement,
                        tags: &info.tags,
                        columns: cols.iter().map(|(n, c)| (n.as_str(), c)).collect(),
                    }
                })
                .collect();
            if data.is_empty() {
                None
            } else {
                Some(segment::write(&shard.dir, seq, &data)?)
            }
        };
        let mut st = shard.write();
        if let Some(seg) = seg {
            install_segment(&mut st, Arc::new(seg), &shard.db_series);
        }
        st.frozen.retain(|f| f.id != fz.id);
        Ok(())
    }

    fn retention_cutoff(&self, shard: &Shard) -> i64 {
        match self.resolve_rp(&shard.db, Some(&shard.rp)) {
            Ok((_, m)) if m.duration_ns > 0 => now_ns().saturating_sub(m.duration_ns),
            _ => i64::MIN,
        }
    }

    /// Moves every head into segments and deletes the WAL files that are then redundant;
    /// compacts shards that have too many segments.
    pub async fn flush(&self) -> Result<(), Error> {
        self.check_poison()?;
        let _f = self.flush_lock.lock().await;
        let shards = self.all_shards();
        let mut frozen = Vec::new();
        let sealed_below;
        {
            let _g = self.gate.write().await;
            for s in &shards {
                if let Some(fz) = self.freeze(s) {
                    frozen.push((s.clone(), fz));
                }
            }
            sealed_below = self.wal.rotate().await?;
        }
        for (s, fz) in frozen {
            let r = blocking(|| self.write_frozen(&s, &fz));
            if let Err(e) = r {
                self.poison(&e);
                return Err(e);
            }
        }
        for seq in wal::list(self.wal.dir())? {
            if seq < sealed_below {
                let _ = std::fs::remove_file(wal::wal_path(self.wal.dir(), seq));
            }
        }
        wal::sync_dir(self.wal.dir())?;
        for s in &shards {
            if s.read().segments.len() > self.opts.max_segments {
                blocking(|| self.compact_shard(s))?;
            }
        }
        Ok(())
    }

    /// Flushes and then merges each shard's segments into one (drops expired points).
    pub async fn compact(&self) -> Result<(), Error> {
        self.flush().await?;
        let _f = self.flush_lock.lock().await;
        let shards = self.all_shards();
        for s in &shards {
            blocking(|| self.compact_shard(s))?;
        }
        Ok(())
    }

    fn compact_shard(&self, shard: &Shard) -> Result<(), Error> {
        let (segs, maps): (Vec<Arc<Segment>>, Vec<HashMap<u32, usize>>) = {
            let st = shard.read();
            (st.segments.clone(), st.seg_maps.clone())
        };
        if segs.len() < 2 && self.retention_cutoff(shard) == i64::MIN {
            return Ok(());
        }
        if segs.is_empty() {
            return Ok(());
        }
        let cutoff = self.retention_cutoff(shard);
        let seq = segs.iter().map(|s| s.seq).max().unwrap_or(0);
        let new_seg = {
            let st = shard.read();
            let mut sids: Vec<u32> = maps.iter().flat_map(|m| m.keys().copied()).collect();
            sids.sort_unstable();
            sids.dedup();
            let mut merged: Vec<(u32, Vec<(String, Column)>)> = Vec::with_capacity(sids.len());
            for sid in sids {
                let mut fields: Vec<(String, Column)> = Vec::new();
                for (seg, map) in segs.iter().zip(&maps) {
                    let Some(&si) = map.get(&sid) else { continue };
                    let names: Vec<&str> = seg.series[si].fields.iter().map(|f| &*f.name).collect();
                    for (name, c) in names.iter().zip(seg.read_fields(si, &names)?) {
                        if let Some(c) = c {
                            match fields.iter_mut().find(|(n, _)| n == name) {
                                Some((_, acc)) => {
                                    let old = std::mem::replace(acc, Column::new(FieldType::Float));
                                    *acc = old.merge(c);
                                }
                                None => fields.push((name.to_string(), c)),
                            }
                        }
                    }
                }
                let fields: Vec<(String, Column)> = fields
                    .into_iter()
                    .filter_map(|(n, c)| trim_before(&c, cutoff).map(|c| (n, c)))
                    .collect();
                if !fields.is_empty() {
                    merged.push((sid, fields));
                }
            }
            let data: Vec<SeriesData<'_>> = merged
                .iter()
                .map(|(sid, cols)| {
                    let info = &st.index.series[*sid as usize];
                    SeriesData {
                        measurement: &info.measurement,
                        tags: &info.tags,
                        columns: cols.iter().map(|(n, c)| (n.as_str(), c)).collect(),
                    }
                })
                .collect();
            if data.is_empty() {
                None
            } else {
                Some(segment::write(&shard.dir, seq, &data)?)
            }
        };
        let mut st = shard.write();
        let n_old = segs.len();
        let rest_segs: Vec<Arc<Segment>> = st.segments.drain(n_old..).collect();
        st.segments.clear();
        st.seg_maps.clear();
        if let Some(seg) = new_seg {
            install_segment(&mut st, Arc::new(seg), &shard.db_series);
        } else {
            // Everything expired: the file named `seq` must go too.
            let _ = std::fs::remove_file(segment::seg_path(&shard.dir, seq));
        }
        for s in rest_segs {
            install_segment(&mut st, s, &shard.db_series);
        }
        drop(st);
        for s in segs {
            if s.seq != seq {
                let _ = std::fs::remove_file(&s.path);
            }
        }
        wal::sync_dir(&shard.dir)
    }

    /// Drops segments entirely older than their retention policy (and compacts partly expired
    /// ones). Called periodically by the server.
    pub async fn enforce_retention(&self) -> Result<(), Error> {
        let _f = self.flush_lock.lock().await;
        let shards = self.all_shards();
        for s in shards {
            let cutoff = self.retention_cutoff(&s);
            if cutoff == i64::MIN {
                continue;
            }
            let partly = {
                let mut st = s.write();
                let mut keep_s = Vec::new();
                let mut keep_m = Vec::new();
                let segs = std::mem::take(&mut st.segments);
                let maps = std::mem::take(&mut st.seg_maps);
                for (seg, map) in segs.into_iter().zip(maps) {
                    if seg.max_t < cutoff {
                        let _ = std::fs::remove_file(&seg.path);
                    } else {
                        keep_s.push(seg);
                        keep_m.push(map);
                    }
                }
                st.segments = keep_s;
                st.seg_maps = keep_m;
                st.segments.iter().any(|seg| seg.min_t < cutoff)
            };
            if partly {
                blocking(|| self.compact_shard(&s))?;
            }
        }
        Ok(())
    }

    /// Bytes on disk of segments (what a flushed database costs), and number of stored values.
    pub fn disk_usage(&self) -> (u64, u64) {
        let mut bytes = 0u64;
        let mut values = 0u64;
        for s in self
            .shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            let st = s.read();
            for seg in &st.segments {
                bytes += seg.size() as u64;
                for ser in &seg.series {
                    values += ser.fields.iter().map(|f| f.count() as u64).sum::<u64>();
                }
            }
        }
        (bytes, values)
    }
}

/// Runs blocking work without stalling a multi-threaded runtime's other tasks.
pub(crate) fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn trim_before(c: &Column, cutoff: i64) -> Option<Column> {
    if cutoff == i64::MIN || c.times.first().is_some_and(|&t| t >= cutoff) {
        return if c.times.is_empty() {
            None
        } else {
            Some(c.clone())
        };
    }
    let lo = c.times.partition_point(|&t| t < cutoff);
    if lo == c.times.len() {
        return None;
    }
    let idx: Vec<usize> = (lo..c.times.len()).collect();
    Some(Column {
        times: c.times[lo..].to_vec(),
        values: c.values.permute(&idx),
    })
}

fn install_segment(st: &mut ShardState, seg: Arc<Segment>, counter: &AtomicUsize) {
    let mut map = HashMap::with_capacity(seg.series.len());
    for (i, s) in seg.series.iter().enumerate() {
        let key = crate::lineproto::series_key(&s.measurement, &s.tags);
        let new = !st.index.by_key.contains_key(&key);
        let sid = st.index.get_or_insert(key, &s.measurement, &s.tags);
        if new {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(m) = st.index.measurements.get_mut(&s.measurement) {
            for f in &s.fields {
                m.fields.entry(f.name.to_string()).or_insert(f.ftype);
            }
        }
        map.insert(sid, i);
    }
    st.segments.push(seg);
    st.seg_maps.push(map);
}

/// The outcome of registering a batch in a shard's index.
struct Registration<'a> {
    accepted: Vec<(u32, &'a Point)>,
    first_rejection: Option<Rejection>,
    dropped: usize,
}

impl<'a> Registration<'a> {
    fn new(n: usize) -> Self {
        Registration {
            accepted: Vec::with_capacity(n),
            first_rejection: None,
            dropped: 0,
        }
    }

    fn reject(&mut self, r: Rejection) {
        self.dropped += 1;
        self.first_rejection.get_or_insert(r);
    }
}

/// How the index sees one point of a write.
enum Class {
    Known(u32),
    Reject(Rejection),
    /// Its series or one of its fields is new: registering it needs the exclusive lock.
    New,
}

fn classify(st: &ShardState, p: &Point, key: &str, retention_floor: i64) -> Class {
    if p.time < retention_floor {
        return Class::Reject(Rejection::Retention);
    }
    // Line protocol refuses these already (with the line in the message); this holds the
    // limit for every other way in (0.8 writes, library callers).
    let too_long = names::series_key_error(key.len()).or_else(|| {
        p.fields
            .iter()
            .find_map(|(f, _)| names::field_key_error(key.len(), f.len()))
    });
    if let Some(reason) = too_long {
        return Class::Reject(Rejection::KeyTooLong(reason));
    }
    let Some(m) = st.index.measurements.get(&p.measurement) else {
        return Class::New;
    };
    let mut new_field = false;
    for (f, v) in &p.fields {
        match m.fields.get(f) {
            Some(&have) if have != v.field_type() => {
                return Class::Reject(Rejection::TypeConflict {
                    field: f.clone(),
                    measurement: p.measurement.clone(),
                    got: v.field_type(),
                    have,
                });
            }
            Some(_) => {}
            None => new_field = true,
        }
    }
    match st.index.by_key.get(key) {
        Some(&sid) if !new_field => Class::Known(sid),
        _ => Class::New,
    }
}

/// Appends accepted points to the head, one stripe at a time (points of one series keep their
/// order). Callers hold the shard lock (shared is enough).
fn apply_points(st: &ShardState, accepted: &[(u32, &Point)]) {
    let mut order: Vec<u32> = (0..accepted.len() as u32).collect();
    order.sort_by_key(|&i| accepted[i as usize].0 as usize % HEAD_STRIPES);
    let mut added = 0;
    for chunk in order.chunk_by(|&a, &b| {
        accepted[a as usize].0 as usize % HEAD_STRIPES
            == accepted[b as usize].0 as usize % HEAD_STRIPES
    }) {
        let mut stripe = st.head.stripe(accepted[chunk[0] as usize].0);
        for &i in chunk {
            let (sid, p) = accepted[i as usize];
            added += apply_point(stripe.entry(sid).or_default(), p);
        }
    }
    st.head.values.fetch_add(added, Ordering::Relaxed);
}

/// Appends one point to a series' head; returns the number of values added.
///
/// Linear in the point's fields: a point's fields usually come in the order of the head's, so
/// the next column is tried first; a miss in a wide series falls back to a map of the columns.
fn apply_point(h: &mut SeriesHead, p: &Point) -> usize {
    let mut added = 0;
    let mut next = 0;
    let mut index: Option<HashMap<String, usize>> = None;
    for (f, v) in &p.fields {
        let found = if h.fields.get(next).is_some_and(|(n, _)| n == f) {
            Some(next)
        } else if h.fields.len() <= 16 {
            h.fields.iter().position(|(n, _)| n == f)
        } else {
            index
                .get_or_insert_with(|| {
                    h.fields
                        .iter()
                        .enumerate()
                        .map(|(i, (n, _))| (n.clone(), i))
                        .collect()
                })
                .get(f)
                .copied()
        };
        let i = match found {
            Some(i) => i,
            None => {
                h.fields.push((f.clone(), Column::new(v.field_type())));
                if let Some(index) = &mut index {
                    index.insert(f.clone(), h.fields.len() - 1);
                }
                h.fields.len() - 1
            }
        };
        next = i + 1;
        let col = &mut h.fields[i].1;
        if col.values.push(v) {
            col.times.push(p.time);
            added += 1;
        }
    }
    added
}

fn encode_delete_record(
    db: &str,
    rp: &str,
    bound: u64,
    min: i64,
    max: i64,
    keys: &[String],
) -> Vec<u8> {
    let mut out = vec![3u8];
    put_chunk(&mut out, db.as_bytes());
    put_chunk(&mut out, rp.as_bytes());
    put_uvarint(&mut out, bound);
    put_uvarint(&mut out, zigzag(min));
    put_uvarint(&mut out, zigzag(max));
    put_uvarint(&mut out, keys.len() as u64);
    for k in keys {
        put_chunk(&mut out, k.as_bytes());
    }
    out
}

/// The values of `c` outside `[min, max]` (`None` when none remain). Order is kept.
fn cut_range(c: Column, min: i64, max: i64) -> Option<Column> {
    if c.times.iter().all(|&t| t < min || t > max) {
        return (!c.times.is_empty()).then_some(c);
    }
    let idx: Vec<usize> = (0..c.times.len())
        .filter(|&i| c.times[i] < min || c.times[i] > max)
        .collect();
    if idx.is_empty() {
        return None;
    }
    Some(Column {
        times: idx.iter().map(|&i| c.times[i]).collect(),
        values: c.values.permute(&idx),
    })
}

/// Removes the values of the series `keys` with times in `[min, max]` from a shard: filters
/// the head, rewrites (same seq, atomically) every segment below `bound` that holds one of
/// them, then rebuilds the index from what remains. Idempotent, so WAL replay can redo it.
/// Callers exclude flushes (no frozen heads exist) and writes.
///
/// TODO-scalability: a deletion rewrites every segment holding one of the series, under the
/// shard's exclusive lock (queries of the shard wait); per-segment tombstones applied at read
/// and compaction time would make it cost what it deletes.
fn apply_delete(
    shard: &Shard,
    keys: &[String],
    min: i64,
    max: i64,
    bound: u64,
) -> Result<(), Error> {
    // Keeps "segments written after a deletion have a seq at or above its bound" true even
    // when the deletion removed the newest segment file and a restart computed a lower next
    // seq. (Data such a replay checkpoints also follows the deletion record in the WAL, so it
    // would be replayed again anyway; the invariant just keeps the reasoning local.)
    shard.next_seq.fetch_max(bound, Ordering::Relaxed);
    let mut st = shard.write();
    let target: std::collections::HashSet<u32> = keys
        .iter()
        .filter_map(|k| st.index.by_key.get(k).copied())
        .collect();
    if target.is_empty() {
        return Ok(());
    }
    if !st.frozen.is_empty() {
        return Err(Error::FlushInProgress);
    }
    // The head.
    let mut head: Vec<(u32, SeriesHead)> = Vec::new();
    for (sid, mut h) in st.head.take() {
        if target.contains(&sid) {
            h.fields = std::mem::take(&mut h.fields)
                .into_iter()
                .filter_map(|(n, c)| cut_range(c, min, max).map(|c| (n, c)))
                .collect();
            if h.fields.is_empty() {
                continue;
            }
        }
        head.push((sid, h));
    }
    // The segments written before the deletion.
    let segs = std::mem::take(&mut st.segments);
    let maps = std::mem::take(&mut st.seg_maps);
    let mut kept: Vec<Arc<Segment>> = Vec::with_capacity(segs.len());
    for (seg, map) in segs.into_iter().zip(maps) {
        if seg.seq >= bound || !map.keys().any(|sid| target.contains(sid)) {
            kept.push(seg);
            continue;
        }
        let hit: std::collections::HashSet<usize> = map
            .iter()
            .filter(|(sid, _)| target.contains(sid))
            .map(|(_, &si)| si)
            .collect();
        let mut series: Vec<(usize, Vec<(String, Column)>)> = Vec::new();
        for (si, s) in seg.series.iter().enumerate() {
            let names: Vec<&str> = s.fields.iter().map(|f| &*f.name).collect();
            let mut cols = Vec::with_capacity(names.len());
            for (name, c) in names.iter().zip(seg.read_fields(si, &names)?) {
                let Some(c) = c else { continue };
                let c = if hit.contains(&si) {
                    cut_range(c, min, max)
                } else {
                    Some(c)
                };
                if let Some(c) = c {
                    cols.push((name.to_string(), c));
                }
            }
            if !cols.is_empty() {
                series.push((si, cols));
            }
        }
        if series.is_empty() {
            std::fs::remove_file(&seg.path)
                .map_err(|e| Error::io(format!("removing {}", seg.path.display()), e))?;
            continue;
        }
        let data: Vec<SeriesData<'_>> = series
            .iter()
            .map(|(si, cols)| SeriesData {
                measurement: &seg.series[*si].measurement,
                tags: &seg.series[*si].tags,
                columns: cols.iter().map(|(n, c)| (n.as_str(), c)).collect(),
            })
            .collect();
        kept.push(Arc::new(segment::write(&shard.dir, seg.seq, &data)?));
    }
    wal::sync_dir(&shard.dir)?;
    // Rebuild the index from what remains; a measurement that keeps series keeps its field
    // types (as InfluxDB's field set does).
    let old = std::mem::take(&mut st.index);
    shard
        .db_series
        .fetch_sub(old.series.len(), Ordering::Relaxed);
    for seg in kept {
        install_segment(&mut st, seg, &shard.db_series);
    }
    let mut values = 0;
    for (old_sid, h) in head {
        let info = &old.series[old_sid as usize];
        let is_new = !st.index.by_key.contains_key(&info.key);
        let sid = st
            .index
            .get_or_insert(info.key.clone(), &info.measurement, &info.tags);
        if is_new {
            shard.db_series.fetch_add(1, Ordering::Relaxed);
        }
        values += h.fields.iter().map(|(_, c)| c.times.len()).sum::<usize>();
        st.head.stripe(sid).insert(sid, h);
    }
    st.head.values.store(values, Ordering::Relaxed);
    for (m, mi) in old.measurements {
        if let Some(now) = st.index.measurements.get_mut(&m) {
            for (f, t) in mi.fields {
                now.fields.entry(f).or_insert(t);
            }
        }
    }
    Ok(())
}

fn encode_points_record<'a>(
    db: &str,
    rp: &str,
    points: impl Iterator<Item = &'a Point>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(4096);
    out.push(1u8);
    put_chunk(&mut out, db.as_bytes());
    put_chunk(&mut out, rp.as_bytes());
    let pts: Vec<&Point> = points.collect();
    put_uvarint(&mut out, pts.len() as u64);
    for p in pts {
        put_chunk(&mut out, p.measurement.as_bytes());
        put_uvarint(&mut out, p.tags.len() as u64);
        for (k, v) in &p.tags {
            put_chunk(&mut out, k.as_bytes());
            put_chunk(&mut out, v.as_bytes());
        }
        put_uvarint(&mut out, p.fields.len() as u64);
        for (k, v) in &p.fields {
            put_chunk(&mut out, k.as_bytes());
            out.push(v.field_type().code());
            match v {
                FieldValue::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
                FieldValue::Int(i) => put_uvarint(&mut out, zigzag(*i)),
                FieldValue::Bool(b) => out.push(u8::from(*b)),
                FieldValue::Str(s) => put_chunk(&mut out, s.as_bytes()),
            }
        }
        put_uvarint(&mut out, zigzag(p.time));
    }
    out
}

fn decode_points(r: &mut Reader<'_>) -> Result<Vec<Point>, crate::encoding::DecodeError> {
    use crate::encoding::DecodeError;
    let n = r.uvarint()? as usize;
    let mut out = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        let measurement = r.str()?.to_string();
        let nt = r.uvarint()? as usize;
        let mut tags = Vec::with_capacity(nt.min(256));
        for _ in 0..nt {
            tags.push((r.str()?.to_string(), r.str()?.to_string()));
        }
        let nf = r.uvarint()? as usize;
        let mut fields = Vec::with_capacity(nf.min(256));
        for _ in 0..nf {
            let k = r.str()?.to_string();
            let v = match FieldType::from_code(r.u8()?).ok_or(DecodeError("field type"))? {
                FieldType::Float => {
                    let b = r.bytes(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    FieldValue::Float(f64::from_le_bytes(a))
                }
                FieldType::Integer => FieldValue::Int(unzigzag(r.uvarint()?)),
                FieldType::Boolean => FieldValue::Bool(r.u8()? != 0),
                FieldType::String => FieldValue::Str(r.str()?.to_string()),
            };
            fields.push((k, v));
        }
        let time = unzigzag(r.uvarint()?);
        out.push(Point {
            measurement,
            tags,
            fields,
            time,
        });
    }
    Ok(out)
}

fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    Ok(torc_durable::write_atomic(&dir.join(name), bytes)?)
}

/// `meta.json`'s contents for `m`.
fn meta_bytes(m: &MetaFile) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(m).map_err(|e| Error::Encode(Arc::new(e)))
}

/// Current time in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Used only to keep `Values` import meaningful for helpers.
pub fn empty(t: FieldType) -> Values {
    Values::new(t)
}

/// One warning per database or retention policy name in the metadata that this version would
/// refuse to create (see [`crate::names`]).
fn refused_names(dbs: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (db, rps) in dbs {
        let mut refused: Vec<(NameKind, &str)> = Vec::new();
        if names::check_name(NameKind::Database, db).is_err() {
            refused.push((NameKind::Database, db));
        }
        for rp in rps {
            if names::check_name(NameKind::RetentionPolicy, rp).is_err() {
                refused.push((NameKind::RetentionPolicy, rp));
            }
        }
        for (kind, name) in refused {
            out.push(format!(
                "the name of {kind} {} ({} bytes) is longer than the {} bytes this version accepts for a new one; it is served as it is{}",
                names::preview(name),
                name.len(),
                names::MAX_NAME_LEN,
                if kind == NameKind::Database {
                    ", and DROP DATABASE removes it"
                } else {
                    ", and DROP RETENTION POLICY removes it"
                }
            ));
        }
    }
    out
}

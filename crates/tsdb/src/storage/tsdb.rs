//! The store itself ([`Tsdb`]): opening a directory (format check, metadata, segments, WAL
//! replay and checkpoint), poisoning, the durable replacement of `meta.json`, and the lookup
//! of retention policies and shards.
//! What it does not do: the write, delete, flush and catalog operations, each in its own
//! module (`impl Tsdb` blocks there).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::meta::{
    FORMAT_TEXT, FORMAT_TEXT_LONG_NAMES, META_VERSION, META_VERSION_NO_USERS, MetaFile, Options,
    RpMeta, meta_bytes, refused_names,
};
use super::shard::{Shard, ShardState, install_segment};
use crate::Error;
use crate::error::{Damage, Poison};
use crate::model::{FieldType, Values};
use crate::names::{self, dir_name};
use crate::segment::{self, Segment};
use crate::wal::{self, Wal};

/// The database.
pub struct Tsdb {
    pub(super) dir: PathBuf,
    pub(super) opts: Options,
    pub(super) meta: RwLock<MetaFile>,
    pub(super) shards: RwLock<HashMap<(String, String), Arc<Shard>>>,
    pub(super) db_series: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    pub(super) wal: Wal,
    pub(super) gate: tokio::sync::RwLock<()>,
    pub(super) flush_lock: tokio::sync::Mutex<()>,
    /// Admission for the CPU-heavy parts of writes: at most one per core runs at a time. More
    /// would only time-slice against each other, and a writer preempted while it holds a head
    /// stripe makes a query wait a whole scheduler slice; with at most one runnable writer per
    /// core a query thread that wakes up gets the CPU at once.
    pub(super) cpu: tokio::sync::Semaphore,
    pub(super) flush_pending: AtomicBool,
    pub(super) next_frozen: AtomicU64,
    pub(super) poisoned: Mutex<Option<Poison>>,
    /// Password checks: the bcrypt workers and the cache of verified passwords.
    pub(crate) authn: crate::password::Authenticator,
    /// The directory's format version (1 or 2, see `FORMAT_TEXT_LONG_NAMES`).
    pub(super) format: AtomicU64,
    /// What `open` found to report (names this version would refuse).
    pub(super) startup_warnings: Vec<String>,
}

impl std::fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsdb").field("dir", &self.dir).finish()
    }
}

impl Tsdb {
    /// Opens (or creates) a database directory: checks the format, loads segments, replays the
    /// WAL (truncating a torn tail), then checkpoints the replayed data into segments.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Tsdb, Error> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let format = read_format(&dir)?;
        let meta = read_meta(&dir)?;
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir).map_err(|e| Error::io("creating wal dir", e))?;
        let data_dir = dir.join("data");
        std::fs::create_dir_all(&data_dir).map_err(|e| Error::io("creating data dir", e))?;

        remove_dropped(&data_dir, &meta)?;
        remove_staging(&dir)?;

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
        db.replay(&wal_dir, &wal_seqs)?;
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

    /// Replays the WAL files `wal_seqs` of `wal_dir`. A torn tail is tolerated in the newest
    /// file holding records: files after it hold none (a start killed before its replay
    /// finished left them).
    fn replay(&self, wal_dir: &Path, wal_seqs: &[u64]) -> Result<(), Error> {
        let mut tail = 0;
        for (i, seq) in wal_seqs.iter().enumerate().rev() {
            if wal::holds_records(&wal::wal_path(wal_dir, *seq))? {
                tail = i;
                break;
            }
        }
        for (i, seq) in wal_seqs.iter().enumerate() {
            let path = wal::wal_path(wal_dir, *seq);
            for rec in wal::read_file(&path, i >= tail)? {
                self.replay_record(&rec).map_err(|source| Error::Replay {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        Ok(())
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
    pub(super) fn long_keys(&self) -> Vec<String> {
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
    pub(super) fn allow_long_dir(&self, db: &str, rp: &str) -> Result<(), Error> {
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

    pub(super) fn poison(&self, e: &Error) {
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

    pub(super) fn write_meta(&self, bytes: &[u8]) -> Result<(), torc_durable::WriteError> {
        torc_durable::write_atomic(&self.dir.join("meta.json"), bytes)
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
    pub(super) fn all_shards(&self) -> Vec<Arc<Shard>> {
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

    /// Shards that exist, over every database and retention policy.
    pub fn shard_count(&self) -> usize {
        self.shards.read().unwrap_or_else(|p| p.into_inner()).len()
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

pub(super) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), Error> {
    Ok(torc_durable::write_atomic(&dir.join(name), bytes)?)
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

/// The format version of a data directory (1 or 2), writing `FORMAT` (1) into an empty one.
fn read_format(dir: &Path) -> Result<u64, Error> {
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
            let nonempty = std::fs::read_dir(dir)
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
            write_atomic(dir, "FORMAT", format!("{FORMAT_TEXT}\n").as_bytes())?;
            1
        }
        Err(e) => return Err(Error::io("reading FORMAT", e)),
    };
    Ok(format)
}

/// `meta.json`, or an empty catalog where there is none.
fn read_meta(dir: &Path) -> Result<MetaFile, Error> {
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
    Ok(meta)
}

/// Removes the directories of dropped databases and retention policies.
fn remove_dropped(data_dir: &Path, meta: &MetaFile) -> Result<(), Error> {
    // Remove directories of dropped databases and retention policies.
    let live: HashMap<String, std::collections::HashSet<String>> = meta
        .databases
        .iter()
        .map(|(d, dm)| (dir_name(d), dm.rps.keys().map(|r| dir_name(r)).collect()))
        .collect();
    for e in std::fs::read_dir(data_dir).map_err(|e| Error::io("reading data dir", e))? {
        let e = e.map_err(|e| Error::io("reading data dir", e))?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rps) = live.get(&name) else {
            std::fs::remove_dir_all(e.path()).map_err(|e| Error::io("removing dropped db", e))?;
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
    Ok(())
}

/// Removes what restores left under `restore/` (at open nothing there was committed, see the
/// `snapshot` module).
fn remove_staging(dir: &Path) -> Result<(), Error> {
    let staging = dir.join("restore");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(|e| Error::io(format!("removing {}", staging.display()), e))?;
    }
    Ok(())
}

//! Write-ahead log with group commit.
//!
//! Layout: `wal/<seq:020>.wal` files, each starting with `TSDBWAL\0` + u32 LE version, then
//! records `[u32 LE len][u32 LE crc32(payload)][payload]`. New files are written as version 2;
//! version 1 files are read too (see [`WAL_VERSION`]).
//!
//! Invariants:
//! * an append is acknowledged only after its bytes are written and `fdatasync`ed; concurrent
//!   appends that arrive while a sync is in progress are written and synced together (group
//!   commit), one dedicated thread owns the file;
//! * after a sync failure, or any write failure but one, the log is poisoned and every later
//!   append fails: what a failed `fdatasync` dropped from the page cache is unknown, so
//!   retrying it could acknowledge lost bytes (PostgreSQL's "fsyncgate");
//! * the exception: a write refused for want of space (`ENOSPC`, `EDQUOT`), before any sync
//!   of it was tried. The file is cut back to its durable length (dropping a partial record)
//!   and the appends of that batch fail with [`Error::NoSpace`], naming the file; the next
//!   batch tries again, so writes resume by themselves once space is freed. Should cutting
//!   back fail, the log is poisoned;
//! * on replay, only a torn tail is tolerated (and truncated), and only in the newest file that
//!   holds records: an incomplete record at the end, or a record whose checksum fails and
//!   after which the file holds nothing but zeroes (a file system that extended the file but
//!   lost its data leaves zeroes; they read as records of length 0 and checksum 0, crc32 of
//!   nothing, which are no records: payloads are never empty). Later files may exist holding no
//!   record (a header, a header cut short, zeroes): a start killed after it created its next
//!   file and before its replay finished leaves one, so a torn tail before them is still a tail.
//!   Any other damage fails closed, naming the file and the offset.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::oneshot;

use crate::Error;
use crate::error::{Damage, Poison};

pub const WAL_MAGIC: &[u8; 8] = b"TSDBWAL\0";
/// Version 2 added record kinds 3 (deletion) and 4 (drop retention policy), which a version-1
/// reader would take for damage; version-1 files (kinds 1 and 2) are still read.
pub const WAL_VERSION: u32 = 2;
const OLDEST_READABLE_VERSION: u32 = 1;
const HEADER_LEN: usize = 12;
/// Records larger than this are treated as damage, not as a torn tail of a huge write.
const MAX_RECORD: usize = 1 << 30;

type Waiter = oneshot::Sender<Result<(), Error>>;

struct State {
    buf: Vec<u8>,
    waiters: Vec<Waiter>,
    rotate: Vec<oneshot::Sender<Result<u64, Poison>>>,
    shutdown: bool,
    failed: Option<Poison>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// Handle to the log; cheap to share.
pub struct Wal {
    shared: Arc<Shared>,
    dir: PathBuf,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

pub fn wal_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.wal"))
}

/// Lists WAL sequence numbers in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<u64>, Error> {
    let mut out = Vec::new();
    let rd =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io("reading wal dir", e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if let Some(s) = name.strip_suffix(".wal")
            && let Ok(n) = s.parse::<u64>()
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Whether the WAL file at `path` holds anything past its header other than zeroes, i.e. a
/// record or part of one. A file that does not is what an interrupted creation leaves, so a torn
/// tail in an older file is still the log's tail (see the module's invariants).
pub fn holds_records(path: &Path) -> Result<bool, Error> {
    use std::io::Read;
    let context = || format!("reading {}", path.display());
    let mut f = File::open(path).map_err(|e| Error::io(context(), e))?;
    let mut buf = vec![0u8; 64 << 10];
    let mut at = 0usize;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(context(), e))?;
        if n == 0 {
            return Ok(false);
        }
        let skip = HEADER_LEN.saturating_sub(at).min(n);
        if buf[skip..n].iter().any(|&b| b != 0) {
            return Ok(true);
        }
        at += n;
    }
}

/// Reads every record of one WAL file. `tail_may_be_torn` says whether a torn tail may be
/// truncated (the file is the newest holding records, see [`holds_records`]).
pub fn read_file(path: &Path, tail_may_be_torn: bool) -> Result<Vec<Vec<u8>>, Error> {
    let data =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let corrupt = |detail: Damage| Error::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let zeroes = |from: usize| data[from.min(data.len())..].iter().all(|&b| b == 0);
    if tail_may_be_torn
        && (zeroes(0)
            || (data.len() < HEADER_LEN && WAL_MAGIC.starts_with(&data[..data.len().min(8)])))
    {
        // Torn while creating a fresh file (cut short in its header, or zeroes where the file
        // system lost it): nothing was acknowledged in it.
        rewrite_header(path)?;
        return Ok(Vec::new());
    }
    if data.len() < HEADER_LEN {
        return Err(corrupt(Damage::WalHeader));
    }
    if &data[..8] != WAL_MAGIC {
        return Err(corrupt(Damage::WalMagic));
    }
    let version = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    if !(OLDEST_READABLE_VERSION..=WAL_VERSION).contains(&version) {
        return Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found: format!("wal version {version}"),
            expected: WAL_VERSION,
        });
    }
    let mut pos = HEADER_LEN;
    let mut records = Vec::new();
    while pos < data.len() {
        let rest = data.len() - pos;
        let torn = |pos: usize| -> Result<(), Error> {
            if !tail_may_be_torn {
                return Err(corrupt(Damage::IncompleteRecord { offset: pos }));
            }
            tracing::warn!(path = %path.display(), offset = pos, "truncating torn WAL tail");
            let f = OpenOptions::new()
                .write(true)
                .open(path)
                .map_err(|e| Error::io("opening wal for truncation", e))?;
            f.set_len(pos as u64)
                .map_err(|e| Error::io("truncating wal", e))?;
            f.sync_all().map_err(|e| Error::io("syncing wal", e))?;
            Ok(())
        };
        if rest < 8 {
            torn(pos)?;
            break;
        }
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        if len == 0 {
            // Payloads are never empty: zeroes from here to the end are a torn tail (the file
            // system kept the size, not the data); anything after them is damage.
            if zeroes(pos) {
                torn(pos)?;
                break;
            }
            return Err(corrupt(Damage::RecordLength { len, offset: pos }));
        }
        if len > MAX_RECORD {
            return Err(corrupt(Damage::RecordLength { len, offset: pos }));
        }
        if 8 + len > rest {
            torn(pos)?;
            break;
        }
        let payload = &data[pos + 8..pos + 8 + len];
        if crc32fast::hash(payload) != crc {
            if zeroes(pos + 8 + len) {
                torn(pos)?;
                break;
            }
            return Err(corrupt(Damage::RecordChecksum { offset: pos }));
        }
        records.push(payload.to_vec());
        pos += 8 + len;
    }
    Ok(records)
}

fn rewrite_header(path: &Path) -> Result<(), Error> {
    let mut f = File::create(path).map_err(|e| Error::io("creating wal", e))?;
    write_header(&mut f)?;
    Ok(())
}

fn write_header(f: &mut File) -> Result<(), Error> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(WAL_MAGIC);
    h.extend_from_slice(&WAL_VERSION.to_le_bytes());
    f.write_all(&h)
        .map_err(|e| Error::io("writing wal header", e))?;
    f.sync_all()
        .map_err(|e| Error::io("syncing wal header", e))?;
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<(), Error> {
    torc_durable::sync_dir(dir)
        .map_err(|e| Error::io(format!("syncing directory {}", dir.display()), e))
}

impl Wal {
    /// Opens a new WAL file `seq` in `dir` (replay must have happened before).
    pub fn open(dir: &Path, seq: u64) -> Result<Wal, Error> {
        let path = wal_path(dir, seq);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        write_header(&mut file)?;
        sync_dir(dir)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                waiters: Vec::new(),
                rotate: Vec::new(),
                shutdown: false,
                failed: None,
            }),
            cv: Condvar::new(),
        });
        let s2 = shared.clone();
        let d2 = dir.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("tsdb-wal".into())
            .spawn(move || writer(s2, d2, file, seq))
            .map_err(|e| Error::io("spawning wal thread", e))?;
        Ok(Wal {
            shared,
            dir: dir.to_path_buf(),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record and waits until it is durable. `payload` is never empty (an empty
    /// record reads back as the zeroes of a torn tail).
    pub async fn append(&self, payload: &[u8]) -> Result<(), Error> {
        debug_assert!(!payload.is_empty(), "empty WAL record");
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = &st.failed {
                return Err(Error::Poisoned(f.clone()));
            }
            if st.shutdown {
                return Err(Error::Poisoned(Poison::ShutDown));
            }
            st.buf
                .extend_from_slice(&(payload.len() as u32).to_le_bytes());
            st.buf
                .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            st.buf.extend_from_slice(payload);
            st.waiters.push(tx);
        }
        self.shared.cv.notify_one();
        match rx.await {
            Ok(result) => result,
            Err(_) => Err(Error::Poisoned(Poison::WriterStopped)),
        }
    }

    /// Seals the current file and starts a new one; returns the new file's sequence number.
    /// Every record appended before this call is in an older file.
    pub async fn rotate(&self) -> Result<u64, Error> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = &st.failed {
                return Err(Error::Poisoned(f.clone()));
            }
            st.rotate.push(tx);
        }
        self.shared.cv.notify_one();
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(Error::Poisoned(e)),
            Err(_) => Err(Error::Poisoned(Poison::WriterStopped)),
        }
    }

    pub fn poisoned(&self) -> Option<Poison> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed
            .clone()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.shutdown = true;
        }
        self.shared.cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// Whether a failed write was refused for want of space (retryable, see the module's doc).
fn out_of_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}

/// Writes `buf` at the end of `file` (whose durable length is `*len`) and syncs it. A write
/// refused for want of space is undone (the file cut back to `*len`) and reported as
/// [`Error::NoSpace`]; any other failure poisons.
fn write_batch(file: &mut File, path: &Path, len: &mut u64, buf: &[u8]) -> Result<(), Error> {
    use std::io::{Seek, SeekFrom};
    if let Err(e) = file.write_all(buf) {
        if out_of_space(&e) {
            let undone = file
                .set_len(*len)
                .and_then(|()| file.seek(SeekFrom::Start(*len)).map(|_| ()));
            return match undone {
                Ok(()) => Err(Error::NoSpace {
                    path: path.to_path_buf(),
                    source: Arc::new(e),
                }),
                Err(cut) => Err(Error::Poisoned(Poison::WalWrite(Arc::new(
                    std::io::Error::new(
                        cut.kind(),
                        format!(
                            "{}: {e}, then cutting the partial record off failed: {cut}",
                            path.display()
                        ),
                    ),
                )))),
            };
        }
        return Err(Error::Poisoned(Poison::WalWrite(Arc::new(e))));
    }
    file.sync_data()
        .map_err(|e| Error::Poisoned(Poison::WalWrite(Arc::new(e))))?;
    *len += buf.len() as u64;
    Ok(())
}

fn writer(shared: Arc<Shared>, dir: PathBuf, mut file: File, mut seq: u64) {
    let mut len = HEADER_LEN as u64;
    loop {
        let (buf, waiters, rotate, shutdown) = {
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            while st.buf.is_empty() && st.rotate.is_empty() && !st.shutdown {
                st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            (
                std::mem::take(&mut st.buf),
                std::mem::take(&mut st.waiters),
                std::mem::take(&mut st.rotate),
                st.shutdown,
            )
        };
        let mut result: Result<(), Error> = Ok(());
        if !buf.is_empty() {
            result = write_batch(&mut file, &wal_path(&dir, seq), &mut len, &buf);
        }
        // Nothing of this batch is in the file: its appends fail, the log goes on. (Not when a
        // rotation waits in the batch: a flush that froze heads must not go on without it, so
        // that case poisons as before.)
        if rotate.is_empty()
            && let Err(e @ Error::NoSpace { .. }) = &result
        {
            tracing::warn!(error = %e, "WAL write refused: no space left");
            for w in waiters {
                let _ = w.send(Err(e.clone()));
            }
            continue;
        }
        let mut result = result.map_err(|e| match e {
            Error::Poisoned(p) => p,
            other => Poison::Storage(Box::new(other)),
        });
        if result.is_ok() && !rotate.is_empty() {
            let next = seq + 1;
            let opened = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(wal_path(&dir, next))
                .map_err(|e| Poison::WalCreate(Arc::new(e)))
                .and_then(|mut f| {
                    let header = write_header(&mut f).and_then(|()| sync_dir(&dir));
                    header.map_err(|e| Poison::WalHeader(Box::new(e)))?;
                    Ok(f)
                });
            match opened {
                Ok(f) => {
                    file = f;
                    seq = next;
                    len = HEADER_LEN as u64;
                }
                Err(e) => result = Err(e),
            }
        }
        if let Err(e) = &result {
            tracing::error!(error = %e, "WAL failed; refusing further writes");
            let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.failed = Some(e.clone());
            for w in std::mem::take(&mut st.waiters) {
                let _ = w.send(Err(Error::Poisoned(e.clone())));
            }
            for r in std::mem::take(&mut st.rotate) {
                let _ = r.send(Err(e.clone()));
            }
        }
        for w in waiters {
            let _ = w.send(result.clone().map_err(Error::Poisoned));
        }
        for r in rotate {
            let _ = r.send(result.clone().map(|_| seq));
        }
        if shutdown {
            let st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.buf.is_empty() {
                return;
            }
        }
        if result.is_err() {
            // Poisoned: keep failing whatever arrives, without touching the file again.
            loop {
                let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
                while st.waiters.is_empty() && st.rotate.is_empty() && !st.shutdown {
                    st = shared.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                let msg = st.failed.clone().unwrap_or(Poison::WriterStopped);
                st.buf.clear();
                for w in std::mem::take(&mut st.waiters) {
                    let _ = w.send(Err(Error::Poisoned(msg.clone())));
                }
                for r in std::mem::take(&mut st.rotate) {
                    let _ = r.send(Err(msg.clone()));
                }
                if st.shutdown {
                    return;
                }
            }
        }
    }
}

//! Files that survive a crash: torc's one atomic write ([`write_atomic`]) and its directory
//! fsync ([`sync_dir`]). Every file a role must find whole after `kill -9` or a power cut (a
//! segment, a catalog, a key, a task's exit record, a scheduler's state) is written here, so
//! the steps are the same everywhere.
//!
//! What "atomic" means: after a crash at any point, `path` holds either its old contents or the
//! new ones, never a mix or a truncation, and once [`write_atomic`] returns `Ok` the new ones
//! are on disk (file data and the directory entry both fsynced). The steps: write a temporary
//! file next to `path`, created with the final mode (so a secret is never readable by others,
//! not even for an instant), fsync it, rename it over `path`, fsync the directory.
//!
//! Each write has a temporary file of its own, `.<name>.<pid>.<n>.tmp` (the writer's process
//! id and a per-process counter; created exclusively, so two writers never share one). What it
//! is not: a lock. Two writers of the same path at once each rename a whole file: both
//! complete, the last rename wins, and `path` always holds one of the whole contents.
//!
//! A temporary file left by a writer that crashed (the only way one stays behind: a failed
//! write removes its own) is removed by a later write of the same path once no process with
//! the dead writer's id runs (a pid reused by a live process keeps it until that one ends).
//! Removing another live writer's file could only make that write fail with an error (its
//! rename finds no file), never corrupt `path`. The temporary file of torc before this naming,
//! `.<name>.tmp`, is removed the same way.
//!
//! With the `redb` feature, [`redb_backend`] opens a redb file whose backend records how its
//! I/O failed (a full disk or a failed sync), shared by the stores that keep one.
//!
//! A leaf crate with no workspace dependencies, so the stores (kv, tsdb, dns) can use it and
//! still be tested alone.

#[cfg(feature = "redb")]
pub mod redb_backend;

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The step of a durable write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateTemp,
    Write,
    Fsync,
    Rename,
    FsyncDir,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::CreateTemp => "creating its temporary file",
            Step::Write => "writing",
            Step::Fsync => "fsync",
            Step::Rename => "renaming its temporary file over it",
            Step::FsyncDir => "fsync of its directory",
        })
    }
}

/// Why a durable write failed; `path` keeps its old contents (or stays absent), except after a
/// failed [`Step::FsyncDir`], when the new contents are in place but may not survive a crash.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {step}: {source}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    pub step: Step,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` atomically and durably with mode 0644 (less the umask).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    write_atomic_mode(path, bytes, 0o644)
}

/// Writes `bytes` to `path` atomically and durably; the file has `mode` (less the umask) from
/// its first byte on.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), WriteError> {
    let (dir, tmp) = write_temporary(path, bytes, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path).map_err(failed(path, Step::Rename)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(failed(path, Step::FsyncDir))
}

/// Writes `bytes` durably to a temporary file of `path`'s (in its directory, with `mode`),
/// after removing those that writers which no longer run left; the directory and the
/// temporary's path. On an error the temporary is gone.
fn write_temporary<'p>(
    path: &'p Path,
    bytes: &[u8],
    mode: u32,
) -> Result<(&'p Path, PathBuf), WriteError> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    remove_stale_temporaries(dir, &name);
    let (tmp, mut f) =
        create_temporary(dir, &name, mode).map_err(failed(path, Step::CreateTemp))?;
    let written = f
        .write_all(bytes)
        .map_err(failed(path, Step::Write))
        .and_then(|()| f.sync_all().map_err(failed(path, Step::Fsync)));
    drop(f);
    match written {
        Ok(()) => Ok((dir, tmp)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Creates `path` with `bytes` and `mode` unless it exists, atomically and durably: a reader
/// (or a racing creator) sees no file or the whole of one, never an empty or partial file.
/// `Ok(false)` when it existed (its contents are kept, whatever they are).
pub fn create_new_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<bool, WriteError> {
    let (dir, tmp) = write_temporary(path, bytes, mode)?;
    // A hard link, unlike a rename, never replaces: the first creator wins.
    let linked = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(failed(path, Step::Rename)(e)),
    };
    let _ = std::fs::remove_file(&tmp);
    let created = linked?;
    sync_dir(dir).map_err(failed(path, Step::FsyncDir))?;
    Ok(created)
}

/// The error of `step` of a write to `path`.
fn failed(path: &Path, step: Step) -> impl FnOnce(std::io::Error) -> WriteError + '_ {
    move |source| WriteError {
        path: path.into(),
        step,
        source,
    }
}

/// Numbers the temporary files of this process.
static NEXT_TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Creates this write's own temporary file, `.<name>.<pid>.<n>.tmp`, with `mode`.
fn create_temporary(dir: &Path, name: &str, mode: u32) -> std::io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    loop {
        let n = NEXT_TEMPORARY.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}.{pid}.{n}.tmp"));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            // Left by a crashed process that had our pid (this process never hands out `n`
            // twice): no write of ours uses it, and the next number is tried.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
            }
            Err(e) => return Err(e),
        }
    }
}

/// The writer's pid in a temporary file name of `name` (`.<name>.<pid>.<n>.tmp`), `Some(None)`
/// for the older `.<name>.tmp`, `None` for any other file.
fn temporary_owner(file: &str, name: &str) -> Option<Option<u32>> {
    let rest = file
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?
        .strip_suffix("tmp")?;
    if rest.is_empty() {
        return Some(None);
    }
    let (pid, n) = rest.strip_suffix('.')?.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(pid) && digits(n)).then(|| pid.parse().ok())
}

/// Removes the temporary files of `name` in `dir` that writers which no longer run left behind
/// (best effort: a file that cannot be listed or removed stays).
fn remove_stale_temporaries(dir: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = std::process::id();
    // Without /proc no writer can be told alive: leave every file.
    let proc_mounted = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(owner) = file.to_str().and_then(|f| temporary_owner(f, name)) else {
            continue;
        };
        let stale = match owner {
            None => true,
            Some(pid) => pid != me && proc_mounted && !Path::new(&format!("/proc/{pid}")).exists(),
        };
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Fsyncs a directory, so the entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare name).
fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    /// The names of the files in `dir`.
    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    }

    /// Creators racing for one file: exactly one creates it, every reader sees it whole, and
    /// no temporary is left.
    #[test]
    fn racing_creators_leave_one_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.key");
        let created: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8u8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        let made = create_new_atomic(path, &[i; 32], 0o600).unwrap();
                        assert_eq!(std::fs::read(path).unwrap().len(), 32, "seen whole");
                        made
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), ["store.key"]);
        // An existing file is kept as it is.
        assert!(!create_new_atomic(&path, b"other", 0o600).unwrap());
        assert_eq!(std::fs::read(&path).unwrap().len(), 32);
    }

    #[test]
    fn writes_replace_whole_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic_mode(&path, b"first", 0o600).unwrap();
        write_atomic_mode(&path, b"second, longer", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second, longer");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file stays behind.
        let names = names(dir.path());
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // What a crash between create and rename left before temporary files were named per
        // write: a temporary file, read-only.
        let tmp = dir.path().join(".k.tmp");
        std::fs::write(&tmp, b"half").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400)).unwrap();
        write_atomic(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!tmp.exists());
    }

    #[test]
    fn a_failure_names_the_file_and_the_step_and_keeps_the_old_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("file");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.step, Step::CreateTemp);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot write {}: creating", path.display())),
            "{text}"
        );
        // A directory where the file should be: the rename fails, the directory stays.
        let path = dir.path().join("d");
        std::fs::create_dir(path.join("")).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(err.step, Step::Rename, "{err}");
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
        // The failed write removed its temporary file.
        let names = names(dir.path());
        assert_eq!(names, ["d"]);
    }

    /// Two writers of one path at once: every write succeeds and the file always holds one of
    /// the two whole contents (with one shared temporary name, one writer unlinked the other's
    /// file and renamed a half-written one over the path, or failed).
    #[test]
    fn concurrent_writers_each_rename_a_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let a = vec![b'a'; 64 << 10];
        let b = vec![b'b'; 96 << 10];
        write_atomic(&path, &a).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let writers: Vec<_> = [&a, &b]
                .into_iter()
                .map(|content| {
                    let path = &path;
                    s.spawn(move || {
                        (0..150).try_for_each(|i| {
                            write_atomic(path, content).map_err(|e| format!("write {i}: {e}"))
                        })
                    })
                })
                .collect();
            let reader = s.spawn(|| {
                let mut reads = 0u32;
                while !done.load(Ordering::SeqCst) {
                    let got = std::fs::read(&path).map_err(|e| e.to_string())?;
                    if got != a && got != b {
                        return Err(format!("read {} bytes, not one whole content", got.len()));
                    }
                    reads += 1;
                }
                Ok(reads)
            });
            let written: Vec<_> = writers.into_iter().map(|w| w.join().unwrap()).collect();
            done.store(true, Ordering::SeqCst);
            let read = reader.join().unwrap();
            assert_eq!(written, [Ok(()), Ok(())]);
            assert!(read.unwrap() > 0);
        });
        let got = std::fs::read(&path).unwrap();
        assert!(got == a || got == b);
        let names = names(dir.path());
        assert_eq!(names, ["state.json"], "no temporary file stays behind");
    }

    /// Temporary files of writers that no longer run are removed by the next write; a live
    /// process's, and other files' that look alike, stay.
    #[test]
    fn temporaries_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let file = |name: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, b"half").unwrap();
            p
        };
        let of_dead = file(&format!(".k.{dead}.0.tmp"));
        let older_naming = file(".k.tmp");
        let of_live = file(".k.1.7.tmp");
        let of_another_file = file(".k.1.1.0.tmp");
        write_atomic(&path, b"whole").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
        assert!(!of_dead.exists() && !older_naming.exists());
        assert!(of_live.exists() && of_another_file.exists());
    }

    #[test]
    fn temporary_names_are_told_apart() {
        assert_eq!(temporary_owner(".k.12.3.tmp", "k"), Some(Some(12)));
        assert_eq!(temporary_owner(".k.tmp", "k"), Some(None));
        assert_eq!(temporary_owner(".k.1.2.3.tmp", "k"), None, "of k.1");
        assert_eq!(temporary_owner(".k.x.3.tmp", "k"), None);
        assert_eq!(temporary_owner(".k.12..tmp", "k"), None);
        assert_eq!(temporary_owner("k.12.3.tmp", "k"), None);
        assert_eq!(temporary_owner(".kk.12.3.tmp", "k"), None);
    }
}

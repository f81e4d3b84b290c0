//! Files that survive a crash: torc's one atomic write ([`write_atomic`]) and its directory
//! fsync ([`sync_dir`]). Every file a role must find whole after `kill -9` or a power cut (a
//! segment, a catalog, a key, a task's exit record, a scheduler's state) is written here, so
//! the steps are the same everywhere.
//!
//! What "atomic" means: after a crash at any point, `path` holds either its old contents or the
//! new ones, never a mix or a truncation, and once [`write_atomic`] returns `Ok` the new ones
//! are on disk (file data and the directory entry both fsynced). The steps: write a temporary
//! file next to `path` (`.<name>.tmp`, created with the final mode, so a secret is never
//! readable by others, not even for an instant), fsync it, rename it over `path`, fsync the
//! directory.
//!
//! What it is not: a lock. Two writers of the same path at once race on the temporary file
//! (one fails with an error, none corrupts `path`); each torc file has one writer. A temporary
//! file left by a crash is removed by the next write of the same path.
//!
//! A leaf crate with no workspace dependencies, so the stores (kv, tsdb, dns) can use it and
//! still be tested alone.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

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
    let fail = |step| {
        move |source| WriteError {
            path: path.into(),
            step,
            source,
        }
    };
    let dir = parent(path);
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temporary file of an interrupted write (or with another mode): start afresh.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(fail(Step::CreateTemp)(e));
        }
        _ => {}
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(fail(Step::CreateTemp))?;
    let written = f
        .write_all(bytes)
        .map_err(fail(Step::Write))
        .and_then(|()| f.sync_all().map_err(fail(Step::Fsync)));
    drop(f);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path).map_err(fail(Step::Rename))) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir).map_err(fail(Step::FsyncDir))
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
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // What a crash between create and rename leaves: a temporary file, read-only.
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
        assert!(!dir.path().join(".d.tmp").exists());
    }
}

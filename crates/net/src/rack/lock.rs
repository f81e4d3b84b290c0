//! A rack's lock and intent record under `/run/torc`: `<slug>.lock`, held (`flock`) by the
//! process that runs the rack for as long as it runs, and `<slug>.json`, what the rack is
//! about to make. Both live on `/run` (a tmpfs), so they share the namespaces' lifetime: a
//! reboot clears both.
//!
//! A lock that nobody holds belongs to a rack whose process is gone (killed, or crashed):
//! whatever its namespaces are, they are leftovers and may be swept. A process that holds a
//! lock removes its file before it lets go, so an acquirer checks, once it holds the lock,
//! that the file it locked is still the one at the path (otherwise it tries again).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::{Error, NetnsPrefix, Result};

/// Where racks keep their locks and intent records.
pub const STATE_DIR: &str = "/run/torc";

/// The held lock of one rack (`/run/torc/<slug>.lock`). Dropping it lets go of the lock and
/// leaves the file; [`RackLock::release`] removes the file first.
#[derive(Debug)]
pub struct RackLock {
    _lock: Flock<File>,
    prefix: NetnsPrefix,
    path: PathBuf,
}

fn lock_path(slug: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{slug}.lock"))
}

/// The intent record of the rack whose slug is `slug`.
pub fn record_path(slug: &str) -> PathBuf {
    Path::new(STATE_DIR).join(format!("{slug}.json"))
}

fn state_err(path: &Path, step: &str, source: io::Error) -> Error {
    Error::State {
        path: path.display().to_string(),
        step: step.to_string(),
        source,
    }
}

impl RackLock {
    /// Takes the lock of the rack `prefix` without waiting for its holder: [`Error::Busy`]
    /// when another process (or another handle of this one) holds it for more than a moment
    /// (~200 ms of retries ride out a sweep or a check that holds it for an instant).
    pub fn acquire(prefix: &NetnsPrefix) -> Result<RackLock> {
        let path = lock_path(prefix.slug());
        // A holder removes the file just before it lets go, and [`running`] takes a shared
        // lock for an instant: a few rounds a few milliseconds apart settle either race.
        let (mut busy, mut replaced) = (0, 0);
        loop {
            let file = open_lock_file(&path)?;
            let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => lock,
                Err((_, Errno::EWOULDBLOCK)) if busy < 20 => {
                    busy += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(Error::Busy {
                        slug: prefix.slug().to_string(),
                        path: path.display().to_string(),
                    });
                }
                Err((_, e)) => return Err(state_err(&path, "lock (flock)", e.into())),
            };
            let held = lock.metadata().map_err(|e| state_err(&path, "fstat", e))?;
            let same = fs::metadata(&path)
                .is_ok_and(|now| (now.dev(), now.ino()) == (held.dev(), held.ino()));
            if same {
                return Ok(RackLock {
                    _lock: lock,
                    prefix: prefix.clone(),
                    path,
                });
            }
            replaced += 1;
            if replaced > 8 {
                return Err(state_err(
                    &path,
                    "lock",
                    io::Error::other("the file kept being replaced while it was locked"),
                ));
            }
        }
    }

    pub fn prefix(&self) -> &NetnsPrefix {
        &self.prefix
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the lock's file, then lets go of the lock: the rack is gone.
    pub fn release(self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// The slugs of every rack that has a lock file or an intent record under `/run/torc`.
pub(crate) fn known_slugs() -> Result<Vec<String>> {
    let entries = match fs::read_dir(STATE_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(state_err(Path::new(STATE_DIR), "list", e)),
    };
    let mut slugs: Vec<String> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let slug = name
                .strip_suffix(".lock")
                .or_else(|| name.strip_suffix(".json"))?;
            NetnsPrefix::new(slug).ok().map(|_| slug.to_string())
        })
        .collect();
    slugs.sort();
    slugs.dedup();
    Ok(slugs)
}

/// The racks whose lock a process holds (this one included, through another handle): the
/// racks running on this machine.
pub fn running() -> Result<Vec<NetnsPrefix>> {
    let mut held = Vec::new();
    for slug in known_slugs()? {
        let path = lock_path(&slug);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(state_err(&path, "open", e)),
        };
        // A shared lock for an instant: it fails exactly when someone holds the rack's.
        match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_free) => {}
            Err((_, Errno::EWOULDBLOCK)) => held.push(NetnsPrefix::new(&slug)?),
            Err((_, e)) => return Err(state_err(&path, "lock (flock)", e.into())),
        }
    }
    Ok(held)
}

/// Writes the intent record of the rack `prefix` (atomically, as every record torc keeps).
pub(crate) fn write_record(prefix: &NetnsPrefix, json: &serde_json::Value) -> Result<()> {
    let path = record_path(prefix.slug());
    let text = serde_json::to_string_pretty(json).expect("a JSON value serialises");
    torc_durable::write_atomic(&path, format!("{text}\n").as_bytes()).map_err(|e| {
        state_err(
            &path,
            &format!("write the intent record ({})", e.step),
            e.source,
        )
    })
}

/// Removes the intent record of the rack `prefix`, if there is one.
pub(crate) fn remove_record(prefix: &NetnsPrefix) -> Result<()> {
    let path = record_path(prefix.slug());
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_err(&path, "remove", e)),
    }
}

/// The lock that orders changes to the host's guard route (`/run/torc/guard-route.lock`, never
/// removed, waited for): adding it when a rack starts, removing it when no rack runs.
pub(crate) fn guard_lock() -> Result<Flock<File>> {
    // Not a slug (it has a `-`), so never taken for a rack's lock.
    let path = Path::new(STATE_DIR).join("guard-route.lock");
    Flock::lock(open_lock_file(&path)?, FlockArg::LockExclusive)
        .map_err(|(_, e)| state_err(&path, "lock (flock)", e.into()))
}

/// Opens (creating it, and `/run/torc`, if need be) the lock file `path`.
fn open_lock_file(path: &Path) -> Result<File> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(STATE_DIR)
        .map_err(|e| state_err(Path::new(STATE_DIR), "create the directory", e))?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| state_err(path, "open", e))
}

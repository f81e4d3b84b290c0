//! Network namespaces: named ones under `/run/netns` (the nodes of a rack, visible to
//! `ip netns`), anonymous ones held by a file descriptor (a task's), and running code inside
//! one.
//!
//! Everything that changes a namespace happens on a short-lived thread of its own: `unshare`
//! and `setns` change only the calling thread, so the caller (a tokio worker, the main thread)
//! keeps its namespace, and nothing forks inside a multi-threaded program. The probes behind
//! this are in `docs/design/rack-network.md` §1: a thread that `unshare(CLONE_NEWNET)`s can
//! bind-mount `/proc/thread-self/ns/net` (not `/proc/self/...`, which shows the thread group
//! leader's) to name the new namespace, and a socket created after `setns` stays in that
//! namespace whichever thread uses it later.
//!
//! Invariants: a name created here carries a rack prefix ([`NetnsName`]); [`sweep`] removes
//! exactly the names of one prefix; [`can_create`] leaves nothing behind. A named namespace
//! lives until it is deleted and the last process and file descriptor inside it are gone; an
//! anonymous one lives exactly as long as its [`Netns`] and the processes that entered it.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::thread;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};

use crate::netlink::{self, Netlink};
use crate::{Error, NetnsName, NetnsPrefix, Result};

/// Where named namespaces live, as iproute2 keeps them.
pub const RUN_DIR: &str = "/run/netns";
/// The calling thread's own network namespace.
const THREAD_NS: &str = "/proc/thread-self/ns/net";

/// An open network namespace: a file descriptor on nsfs, and a label for messages (its name,
/// or what an anonymous one is for). An anonymous namespace lives as long as this value and the
/// processes that entered it.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    label: String,
}

impl Netns {
    /// Opens a namespace by name (`/run/netns/NAME`) or, when `name_or_path` has a `/`, by path
    /// (`/proc/PID/ns/net`). For a switch whose namespace torc did not create (a multi-ASIC
    /// SONiC's `asic0`), so the name is not required to carry a rack prefix.
    pub fn open(name_or_path: &str) -> Result<Netns> {
        if name_or_path.contains('/') {
            return Netns::open_path(Path::new(name_or_path), name_or_path);
        }
        if name_or_path.is_empty() || name_or_path == "." || name_or_path == ".." {
            return Err(Error::invalid(
                "namespace name",
                name_or_path,
                "is not a file name under /run/netns",
            ));
        }
        Netns::open_path(&Path::new(RUN_DIR).join(name_or_path), name_or_path)
    }

    /// Opens the named namespace `name`.
    pub fn open_named(name: &NetnsName) -> Result<Netns> {
        Netns::open_path(&run_path(name), name.as_str())
    }

    /// The calling thread's namespace (the host's, unless this thread entered another).
    pub fn current() -> Result<Netns> {
        Netns::open_path(Path::new(THREAD_NS), "the current namespace")
    }

    fn open_path(path: &Path, label: &str) -> Result<Netns> {
        let err = |step: String, source: io::Error| Error::Netns {
            ns: label.to_string(),
            step,
            source,
        };
        let file = File::open(path).map_err(|e| err(format!("open {}", path.display()), e))?;
        // A name under /run/netns whose bind mount failed or was undone is a plain empty file:
        // refuse it here rather than fail later at setns with a bare EINVAL.
        let fs =
            fstatfs(&file).map_err(|e| err(format!("fstatfs {}", path.display()), e.into()))?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(err(
                format!("use {}", path.display()),
                io::Error::other("it is not a namespace (not on nsfs)"),
            ));
        }
        Ok(Netns {
            fd: file.into(),
            label: label.to_string(),
        })
    }

    /// What this namespace is called in messages: its name, or the label it was made with.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The namespace's identity (device and inode of its nsfs file): two handles name the same
    /// namespace exactly when these are equal.
    pub fn id(&self) -> Result<(u64, u64)> {
        let file = File::from(
            self.fd
                .try_clone()
                .map_err(|e| self.err("duplicate its fd", e))?,
        );
        let meta = file.metadata().map_err(|e| self.err("fstat", e))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> Result<Netns> {
        Ok(Netns {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| self.err("duplicate its fd", e))?,
            label: self.label.clone(),
        })
    }

    fn err(&self, step: &str, source: io::Error) -> Error {
        Error::Netns {
            ns: self.label.clone(),
            step: step.to_string(),
            source,
        }
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn run_path(name: &NetnsName) -> PathBuf {
    Path::new(RUN_DIR).join(name.as_str())
}

/// Runs `f` on a new thread and waits for it. A panic in `f` is resumed in the caller.
fn on_thread<T: Send>(f: impl FnOnce() -> T + Send) -> io::Result<T> {
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name("torc-netns".into())
            .spawn_scoped(scope, f)?;
        match handle.join() {
            Ok(value) => Ok(value),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Creates the named namespace `name` as `ip netns add` does: `/run/netns` is made a shared
/// mount point (bound onto itself first if it is not one), `/run/netns/NAME` is created empty
/// (an existing one is an error: `EEXIST`), and a thread that `unshare(CLONE_NEWNET)`s
/// bind-mounts its new namespace onto it. On failure nothing named is left behind.
pub fn create_named(name: &NetnsName) -> Result<Netns> {
    let err = |step: String, source: io::Error| Error::Netns {
        ns: name.to_string(),
        step,
        source,
    };
    prepare_run_dir().map_err(|e| err(format!("prepare {RUN_DIR} as a shared mount"), e))?;
    let path = run_path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| err(format!("create {}", path.display()), e))?;
    let made = on_thread(|| -> Result<(), (String, io::Error)> {
        unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| ("unshare(CLONE_NEWNET)".to_string(), e.into()))?;
        mount(
            Some(THREAD_NS),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| {
            (
                format!("bind-mount {THREAD_NS} onto {}", path.display()),
                e.into(),
            )
        })
    });
    let made = match made {
        Ok(Ok(())) => Ok(()),
        Ok(Err((step, e))) => Err(err(step, e)),
        Err(e) => Err(err("start a thread".into(), e)),
    };
    if let Err(e) = made {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Netns::open_named(name)
}

/// Makes `/run/netns` exist and be a shared mount point, as iproute2's `netns_add` does, so
/// that the namespaces bound under it are seen by processes in other mount namespaces. A lock
/// on the directory keeps two creators from binding it twice.
fn prepare_run_dir() -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(RUN_DIR)?;
    let dir = File::open(RUN_DIR)?;
    let _lock = Flock::lock(dir, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))?;
    let mut bound = false;
    loop {
        let shared = mount(
            None::<&str>,
            RUN_DIR,
            Some("none"),
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        );
        match shared {
            Ok(()) => return Ok(()),
            // Not a mount point yet: bind it onto itself, then make that shared.
            Err(Errno::EINVAL) if !bound => {
                mount(
                    Some(RUN_DIR),
                    RUN_DIR,
                    Some("none"),
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )?;
                bound = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Removes the name `name` (`ip netns delete`): unmounts `/run/netns/NAME` (lazily, so a
/// process inside does not block it) and removes the file. The namespace itself goes when the
/// last process and file descriptor in it are gone, and its veths and routes with it. Answers
/// whether there was anything to remove.
pub fn delete_named(name: &NetnsName) -> Result<bool> {
    let path = run_path(name);
    let err = |step: String, source: io::Error| Error::Netns {
        ns: name.to_string(),
        step,
        source,
    };
    let mounted = match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) => true,
        // Not a mount point (a half-made name), or not there at all.
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => false,
        Err(e) => return Err(err(format!("unmount {}", path.display()), e.into())),
    };
    match fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(mounted),
        Err(e) => Err(err(format!("remove {}", path.display()), e)),
    }
}

/// The named namespaces of one rack (`prefix`), or of every torc rack (`None`: every name that
/// carries a rack prefix), sorted.
pub fn list(prefix: Option<&NetnsPrefix>) -> Result<Vec<NetnsName>> {
    let entries = match fs::read_dir(RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Netns {
                ns: prefix.map_or("torc-*".to_string(), |p| format!("{p}*")),
                step: format!("list {RUN_DIR}"),
                source: e,
            });
        }
    };
    let mut names: Vec<NetnsName> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| prefix.is_none_or(|p| name.starts_with(p.as_str())))
        .filter_map(|name| NetnsName::parse(&name).ok())
        .collect();
    names.sort();
    Ok(names)
}

/// Removes every named namespace of the rack `prefix` (what a killed rack left behind) and
/// answers the names it removed. All are tried; the first failure is returned after that.
pub fn sweep(prefix: &NetnsPrefix) -> Result<Vec<NetnsName>> {
    let mut removed = Vec::new();
    let mut first_error = None;
    for name in list(Some(prefix))? {
        match delete_named(&name) {
            Ok(true) => removed.push(name),
            Ok(false) => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(removed),
    }
}

/// Creates a namespace with no name, held by the returned [`Netns`] only (a task's: the agent
/// hands it to the task's process and drops it, so the namespace lives as long as the task).
/// `label` names it in messages.
pub fn create_anonymous(label: &str) -> Result<Netns> {
    let err = |step: &str, source: io::Error| Error::Netns {
        ns: label.to_string(),
        step: step.to_string(),
        source,
    };
    let made = on_thread(|| -> Result<OwnedFd> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| err("unshare(CLONE_NEWNET)", e.into()))?;
        let file = File::open(THREAD_NS).map_err(|e| err("open the new namespace", e))?;
        Ok(file.into())
    })
    .map_err(|e| err("start a thread", e))??;
    Ok(Netns {
        fd: made,
        label: label.to_string(),
    })
}

/// Whether this process may create network namespaces: `Ok(false)` on `EPERM` or `EACCES`
/// (it needs CAP_SYS_ADMIN, and CAP_NET_ADMIN to configure them), an error for anything else.
/// A thread makes one and exits, so nothing is left behind.
pub fn can_create() -> Result<bool> {
    let err = |step: &str, source: io::Error| Error::Netns {
        ns: "a probe namespace".into(),
        step: step.to_string(),
        source,
    };
    match on_thread(|| unshare(CloneFlags::CLONE_NEWNET)).map_err(|e| err("start a thread", e))? {
        Ok(()) => Ok(true),
        Err(Errno::EPERM) | Err(Errno::EACCES) => Ok(false),
        Err(e) => Err(err("unshare(CLONE_NEWNET)", e.into())),
    }
}

/// The capability to configure networking (`CAP_NET_ADMIN`).
pub const CAP_NET_ADMIN: u32 = 12;
/// The capability, among much else, to create and mount namespaces (`CAP_SYS_ADMIN`).
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether `capability` is in this process's effective set (`CapEff` of `/proc/self/status`).
pub fn has_capability(capability: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    capability < 64 && effective & (1 << capability) != 0
}

/// Whether this process may build a rack on namespaces: it has CAP_SYS_ADMIN (to create and
/// name namespaces) and CAP_NET_ADMIN (to configure them) in its effective set, and creating a
/// namespace works ([`can_create`]; a container's seccomp profile may refuse it anyway).
pub fn capable() -> Result<bool> {
    Ok(has_capability(CAP_NET_ADMIN) && has_capability(CAP_SYS_ADMIN) && can_create()?)
}

/// The processes inside `ns` (`ip netns pids`): every process whose `/proc/PID/ns/net` is
/// `ns`. Processes whose namespace this process may not see (another user's, without
/// privilege) are not listed.
pub fn pids(ns: &Netns) -> Result<Vec<nix::unistd::Pid>> {
    let id = ns.id()?;
    let entries = fs::read_dir("/proc").map_err(|e| ns.err("list /proc", e))?;
    let mut pids: Vec<nix::unistd::Pid> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net")).is_ok_and(|m| (m.dev(), m.ino()) == id)
        })
        .map(nix::unistd::Pid::from_raw)
        .collect();
    pids.sort();
    Ok(pids)
}

/// Moves the calling thread into the namespace `ns` (`setns(fd, CLONE_NEWNET)`). For
/// `CommandExt::pre_exec`: it makes one system call and allocates nothing, so it is
/// async-signal-safe. Anywhere else, prefer [`run_blocking`], which leaves the caller's thread
/// where it was.
pub fn enter(ns: BorrowedFd<'_>) -> io::Result<()> {
    setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` inside `ns` on a short-lived thread and waits for it: for the few blocking steps
/// that must happen inside (a sysctl under `/proc/sys/net`, creating a socket). Not for long
/// work: the caller's thread waits.
pub fn run_blocking<T: Send>(ns: &Netns, f: impl FnOnce() -> T + Send) -> Result<T> {
    let fd = ns.as_fd();
    on_thread(move || enter(fd).map(|()| f()))
        .map_err(|e| ns.err("start a thread", e))?
        .map_err(|e| ns.err("enter (setns)", e))
}

/// Writes `value` to the sysctl `key` (`net.ipv4.ip_forward`) inside `ns`. Only `net.` keys
/// are accepted: those are the ones that follow the reader's namespace (`/proc/sys/net` is
/// resolved against the calling thread's namespace; the rest of `/proc/sys` is the host's).
pub fn write_sysctl(ns: &Netns, key: &str, value: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    run_blocking(ns, || fs::write(&path, value))?
        .map_err(|e| ns.err(&format!("write {value:?} to {path}"), e))
}

/// Reads the sysctl `key` inside `ns` (the same keys as [`write_sysctl`]), trimmed.
pub fn read_sysctl(ns: &Netns, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    let text = run_blocking(ns, || fs::read_to_string(&path))?
        .map_err(|e| ns.err(&format!("read {path}"), e))?;
    Ok(text.trim().to_string())
}

/// `/proc/sys/net/...` for a `net.` key, refusing anything that could name another file.
fn sysctl_path(key: &str) -> Result<String> {
    let parts: Vec<&str> = key.split('.').collect();
    let valid = parts.len() >= 2
        && parts[0] == "net"
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !valid {
        return Err(Error::invalid(
            "sysctl key",
            key,
            "must be a `net.` key of letters, digits, `_` and `-` separated by `.`",
        ));
    }
    Ok(format!("/proc/sys/{}", parts.join("/")))
}

/// The namespace a setting names (the rack config's `network-agent.connection`, a switch's
/// namespace): `""` is the caller's own (`None`), anything else is opened by [`Netns::open`].
pub fn open_setting(setting: &str) -> Result<Option<Netns>> {
    if setting.is_empty() {
        return Ok(None);
    }
    Netns::open(setting).map(Some)
}

/// A netlink connection in `ns`, or in the caller's own namespace when `None`.
pub fn connect(ns: Option<&Netns>) -> Result<Netlink> {
    match ns {
        Some(ns) => connect_in(ns),
        None => Netlink::current(),
    }
}

/// A netlink connection whose socket was created inside `ns`, so every request on it acts on
/// that namespace. Must be called inside a tokio runtime (the connection runs as a task on it).
pub fn connect_in(ns: &Netns) -> Result<Netlink> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
        step: "connect to netlink",
    })?;
    let socket = run_blocking(ns, move || {
        // The socket registers with the runtime's reactor from this thread.
        let _entered = runtime.enter();
        netlink::open_socket()
    })?
    .map_err(|e| ns.err("open a netlink socket", e))?;
    Ok(Netlink::from_socket(socket, ns.label()))
}

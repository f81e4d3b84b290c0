//! Task runtimes. `Runtime` is what the agent needs from one; `ProcessRuntime` runs a task as a
//! plain process under a `torc shim` (see `shim`), in its own sandbox directory. A container
//! runtime (issue 17) is a second implementation of the same trait: `start`, `ended` and `find`
//! are async because an engine's calls are, a [`Handle`] may name a container, an
//! [`ExitRecord`] may say the kernel killed the task at its memory limit (`oom`), and [`Probe`]
//! says where a task's usage is measured. The agent holds concrete runtimes (no `dyn`); it
//! never holds its task table's lock across a runtime's await (see `agent`).
//!
//! Each shim holds a lock (`flock`) on `<data dir>/shims/<task id>.lock` from its fork to its
//! end, with its pid in the file: a task whose shim runs is never started a second time
//! ([`RuntimeError::AlreadyRunning`]), and an agent that died around a spawn is followed by one
//! that can tell a started task from one that never was ([`Runtime::find`]). One
//! such file stays per task started, as long as its sandbox does (both go after the rack's
//! retention of ended tasks, see `upkeep`).
//!
//! A process task's output goes through its shim into capped, rotated files of its sandbox
//! ([`StartRequest::logs`], see `logfiles`).
//!
//! A `network: rack` task's shim is started inside the task's network namespace
//! ([`StartRequest::netns`], made by the agent's `network` module): it enters it between fork
//! and exec, before anything else, so the shim and every process under it live there and hold
//! it. The runtime keeps no descriptor of it.

use std::collections::BTreeMap;

use std::future::Future;
use std::io;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use torc_api::RuntimeInfo;
use torc_types::{TaskId, TaskSpec};

pub use crate::shim::ExitRecord;

/// The user and group an unprivileged task runs as: its own, from the node's range of task
/// ids (one per task name on the node, kept across restarts), so no task reads another's
/// sandbox, secrets or data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUser {
    pub uid: u32,
    pub gid: u32,
}

/// Everything needed to start one task.
pub struct StartRequest<'a> {
    pub id: &'a TaskId,
    pub spec: &'a TaskSpec,
    pub ports: &'a [u16],
    /// The task's address (`$IP`): the node's, or for a `network: rack` task its own.
    pub ip: std::net::IpAddr,
    /// The network namespace the shim and the task run in (a `network: rack` task's, see
    /// `network`); `None`: the agent's own. The shim enters it before anything else, and holds
    /// it from then on: the caller may close its descriptor once `start` returns.
    pub netns: Option<std::os::fd::BorrowedFd<'a>>,
    /// Variables the agent adds (`PORT0`, `TORC_TASK_ID`, ...), over the spec's `env`.
    pub extra_env: BTreeMap<String, String>,
    /// Credential files for the task's secrets directory (name → content).
    pub files: &'a BTreeMap<String, String>,
    /// Run as this user and group (its sandbox, secrets and data directory become its own);
    /// `None`: as the agent's user.
    pub run_as: Option<TaskUser>,
    /// With `netns`: the task's `/etc/resolv.conf` (the rack's resolver). The shim gets a mount
    /// namespace of its own in which the sandbox's `resolv.conf` is bound over the node's.
    pub resolv_conf: Option<&'a str>,
    /// Hears how a start that takes a while goes (a container's image pull), in words; the
    /// agent makes it the task's message.
    pub progress: Option<&'a (dyn Fn(String) + Send + Sync)>,
    /// The registry credential for a container task's image, if the rack has one.
    pub registry: Option<&'a torc_api::images::RegistryAuth>,
    /// How long a container task's image pull may take (`None`: the runtime's default).
    pub pull_timeout: Option<Duration>,
    /// The cap of the task's output files (its own `logs` over the rack's).
    pub logs: torc_types::LogCap,
}

/// Where a rack task's resolver goes, over the node's.
const RESOLV_CONF: &std::ffi::CStr = c"/etc/resolv.conf";

/// Makes `path` belong to `user` (no-op without one).
pub(crate) fn give(path: &Path, user: &Option<TaskUser>) -> io::Result<()> {
    if let Some(u) = user {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(u.uid)),
            Some(nix::unistd::Gid::from_raw(u.gid)),
        )
        .map_err(io::Error::from)?;
    }
    Ok(())
}

/// Variables of the agent's own environment a task never inherits: whatever credential an
/// operator may have put there for the agent or the CLI.
const SCRUBBED_ENV: [&str; 4] = [
    "TORC_TOKEN",
    "TORC_TOKEN_FILE",
    "TORC_JOIN_TOKEN_FILE",
    "TORC_ADMIN_TOKEN_FILE",
];

/// Writes a task's credential files into `<sandbox>/secrets` (0700; files 0600), replacing any
/// from an earlier start. Names are plain file names.
pub(crate) fn write_secrets(
    sandbox: &Path,
    files: &BTreeMap<String, String>,
    owner: &Option<TaskUser>,
) -> io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let dir = sandbox.join("secrets");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    give(&dir, owner)?;
    for (name, content) in files {
        let plain = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && !name.starts_with('.');
        if !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("credential file name {name:?} is not a plain file name"),
            ));
        }
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        io::Write::write_all(&mut f, content.as_bytes())?;
        give(&path, owner)?;
    }
    Ok(dir)
}

/// What identifies a running task across agent restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handle {
    pub sandbox: PathBuf,
    /// The shim's pid and its start time (clock ticks since boot), which together tell a live
    /// shim from an unrelated process that reused the pid.
    pub pid: u32,
    pub start_time: u64,
    /// The task's container, when a container runtime runs it (`pid` and `start_time` are
    /// then its init process's). Absent from a table written by an older agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRef>,
}

/// A task's container as its engine knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// The container's id in the engine (the task id).
    pub id: String,
    /// The engine's namespace the container lives in.
    pub namespace: String,
    /// The container's cgroup path, relative to each hierarchy's root (its limits, usage and
    /// out-of-memory count).
    pub cgroup: PathBuf,
    /// The signal a stop sends first (the image's `StopSignal` or `--stop-signal`); SIGTERM
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<i32>,
}

impl Handle {
    pub fn status_file(&self) -> PathBuf {
        status_file(&self.sandbox)
    }
}

pub(crate) fn status_file(sandbox: &Path) -> PathBuf {
    sandbox.join(".torc-exit.json")
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot prepare the sandbox {path}: {source}")]
    Sandbox {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the task's shim: {0}")]
    Spawn(io::Error),
    /// The task's shim holds its lock: the task runs already (it is never started twice).
    #[error("a supervisor of this task already runs on this node (pid {})", .0.pid)]
    AlreadyRunning(Handle),
    /// A container task that cannot run (its image, its engine, its spec), in words.
    #[error("{0}")]
    Container(String),
}

/// A task a runtime runs, as [`Runtime::ended`] watches it: started by this agent (with what
/// the runtime waits on, e.g. the shim's child process), or adopted (found running).
pub struct Started {
    pub handle: Handle,
    /// The shim this agent spawned (a process task), reaped when it ends.
    child: Option<tokio::process::Child>,
}

impl Started {
    /// A task this agent did not start: found running after a restart, or already running.
    pub fn adopted(handle: Handle) -> Started {
        Started {
            handle,
            child: None,
        }
    }
}

/// What a runtime knows of a task id the agent recorded as starting (see [`Runtime::find`]).
#[derive(Debug)]
pub enum Found {
    /// It runs: adopt it.
    Running(Handle),
    /// It ran and ended, so.
    Ended(ExitRecord),
    /// Nothing of it runs and no end is recorded: it never started (or ended without a trace).
    Never,
}

/// Where a task's usage is measured (see `metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The process tree under this pid (a process task's shim).
    Tree(u32),
    /// A container's cgroup (its path relative to each hierarchy's root).
    Cgroup(PathBuf),
}

/// A way to run tasks. Every method may be called without the agent's table lock; the async
/// ones are always called without it.
pub trait Runtime: Send + Sync + 'static {
    fn info(&self) -> RuntimeInfo;
    /// Starts a task. Refuses ([`RuntimeError::AlreadyRunning`]) a task id that runs already,
    /// also one started by an earlier agent: a task id is never started twice.
    fn start(
        &self,
        req: &StartRequest<'_>,
    ) -> impl Future<Output = Result<Started, RuntimeError>> + Send;
    /// Asks the task to stop: SIGTERM now, SIGKILL after the spec's grace period.
    fn stop(&self, handle: &Handle);
    /// Ends the task at once.
    fn kill_now(&self, handle: &Handle);
    /// Whether the task still runs (its supervisor: the pid and its start time).
    fn is_alive(&self, handle: &Handle) -> bool;
    /// Completes when the task has ended, with how it ended (`None`: no record of its end).
    /// At once for a task that has ended already.
    fn ended(&self, task: Started) -> impl Future<Output = Option<ExitRecord>> + Send;
    /// What runs, or ran, of `id` on this node: how an agent that restarted tells a task the
    /// last one was starting from one that never started.
    fn find(&self, id: &TaskId) -> impl Future<Output = Found> + Send;
    /// Where the task's cpu and memory usage is measured.
    fn probe(&self, handle: &Handle) -> Probe;
}

/// Runs tasks as processes, each under its own `torc shim`.
pub struct ProcessRuntime {
    /// The `torc` binary (for `torc shim`).
    exe: PathBuf,
    sandboxes: PathBuf,
    /// Per-service directories that outlive tasks (`$DATA_DIR`).
    data_dirs: PathBuf,
    /// The shims' lock files, one per task started (`<id>.lock`, holding the shim's pid).
    shims: PathBuf,
    cgroups: CgroupSupport,
}

enum CgroupSupport {
    /// Limits are applied under this directory (one child per task).
    Enabled(PathBuf),
    Disabled(NoCgroups),
}

/// Why this host gives the agent no cgroup v2 tree for task limits (the runtime then runs tasks
/// without cpu and memory limits, and says so in its `RuntimeInfo`).
#[derive(Debug, thiserror::Error)]
pub enum NoCgroups {
    #[error(
        "cgroup v2 is not mounted at /sys/fs/cgroup (this host uses cgroup v1 or none); \
         cpu and memory limits of process tasks are not enforced (containers' are, in their own cgroups)"
    )]
    NotMounted,
    #[error(
        "the cgroup v2 `{0}` controller is not available here; cpu and memory limits of process tasks are not enforced (containers' are, in their own cgroups)"
    )]
    MissingController(&'static str),
    #[error(
        "cannot create cgroups under {} ({error}); cpu and memory limits of process tasks are not enforced (containers' are, in their own cgroups)",
        dir.display()
    )]
    Setup { dir: PathBuf, error: io::Error },
}

impl ProcessRuntime {
    pub fn new(exe: PathBuf, sandboxes: PathBuf, node: &str) -> Self {
        let cgroups = match detect_cgroup_v2(node) {
            Ok(dir) => CgroupSupport::Enabled(dir),
            Err(why) => CgroupSupport::Disabled(why),
        };
        let parent = sandboxes.parent().unwrap_or(&sandboxes).to_path_buf();
        ProcessRuntime {
            exe,
            sandboxes,
            data_dirs: parent.join("data"),
            shims: parent.join("shims"),
            cgroups,
        }
    }

    pub fn sandbox_of(&self, id: &TaskId) -> PathBuf {
        self.sandboxes.join(id.as_str())
    }

    /// The lock file of `id`'s shim: in the agent's own directory (not the sandbox, which an
    /// unprivileged task owns and could fill with a lock of its own).
    fn lock_of(&self, id: &TaskId) -> PathBuf {
        self.shims.join(format!("{id}.lock"))
    }

    /// The running shim of `id`, if one holds its lock (see [`ProcessRuntime::start`]).
    async fn find_shim(&self, id: &TaskId) -> Option<Handle> {
        let path = self.lock_of(id);
        let file = std::fs::File::open(&path).ok()?;
        match file.try_lock() {
            // No shim holds it: none runs, and none will (a shim holds it from its fork on).
            Ok(()) => return None,
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(task = %id, error = %e, "cannot test the shim's lock");
                return None;
            }
            Err(std::fs::TryLockError::WouldBlock) => {}
        }
        // The shim's pid is written between its fork and its exec: at once, in practice.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let pid = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .filter(|p| *p > 0);
            if let Some(pid) = pid
                && let Some(start_time) = process_start_time(pid)
            {
                return Some(Handle {
                    sandbox: self.sandbox_of(id),
                    pid,
                    start_time,
                    container: None,
                });
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(task = %id, "the task's shim holds its lock but never wrote its pid");
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn task_cgroup(&self, id: &TaskId, spec: &TaskSpec) -> Option<PathBuf> {
        let CgroupSupport::Enabled(base) = &self.cgroups else {
            return None;
        };
        let dir = base.join(id.as_str());
        let apply = || -> io::Result<()> {
            std::fs::create_dir_all(&dir)?;
            if spec.resources.mem_mb > 0.0 {
                let bytes = (spec.resources.mem_mb * 1024.0 * 1024.0) as u64;
                std::fs::write(dir.join("memory.max"), bytes.to_string())?;
            }
            if spec.resources.cpus > 0.0 {
                let period = 100_000u64;
                let quota = ((spec.resources.cpus * period as f64) as u64).max(1_000);
                std::fs::write(dir.join("cpu.max"), format!("{quota} {period}"))?;
            }
            Ok(())
        };
        match apply() {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::warn!(task = %id, error = %e, "cgroup limits not applied");
                None
            }
        }
    }
}

/// Finds a cgroup v2 hierarchy where the agent may create task groups with cpu and memory
/// controllers, or says in words why there is none.
fn detect_cgroup_v2(node: &str) -> Result<PathBuf, NoCgroups> {
    let root = Path::new("/sys/fs/cgroup");
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
        .map_err(|_| NoCgroups::NotMounted)?;
    for c in ["cpu", "memory"] {
        if !controllers.split_whitespace().any(|x| x == c) {
            return Err(NoCgroups::MissingController(c));
        }
    }
    // Our own group: a process may not sit in a group whose children have controllers, so the
    // tasks go in a sibling tree, torc/<node>/<task>.
    let base = root.join("torc").join(node);
    let setup = || -> io::Result<()> {
        std::fs::create_dir_all(&base)?;
        for dir in [root.to_path_buf(), root.join("torc"), base.clone()] {
            std::fs::write(dir.join("cgroup.subtree_control"), "+cpu +memory")?;
        }
        Ok(())
    };
    setup().map_err(|error| NoCgroups::Setup {
        dir: base.clone(),
        error,
    })?;
    Ok(base)
}

/// The start time of a process, in clock ticks since boot (field 22 of /proc/PID/stat).
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past its last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Every live (not zombie) process below `pid`, from one scan of `/proc` (by parent pid:
/// `/proc/PID/task/TID/children` is not on every kernel).
pub(crate) fn descendants(pid: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<(u32, bool)>> = Default::default();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(stat) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .and_then(|t| torc_procfs::parse_pid_stat(&t))
        else {
            continue;
        };
        children
            .entry(stat.ppid)
            .or_default()
            .push((p, stat.state != 'Z'));
    }
    let mut out = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        for &(child, live) in children.get(&p).into_iter().flatten() {
            if live {
                out.push(child);
            }
            stack.push(child);
        }
    }
    out
}

fn signal(pid: u32, sig: Signal) {
    // A process that is already gone is what a stop wants anyway.
    let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), sig);
}

impl Runtime for ProcessRuntime {
    fn info(&self) -> RuntimeInfo {
        let (limits_enforced, limits_note) = match &self.cgroups {
            CgroupSupport::Enabled(_) => (true, None),
            CgroupSupport::Disabled(why) => (false, Some(why.to_string())),
        };
        RuntimeInfo {
            kind: "process".into(),
            limits_enforced,
            limits_note,
            // The agent, not the runtime, makes task namespaces (`network`): it fills these in.
            rack_network: false,
            rack_network_note: None,
            // The agent fills these in from its container runtime, if any.
            containers: false,
            containers_note: None,
        }
    }

    // Blocking file and process calls, all short: as they were under the agent's lock.
    async fn start(&self, req: &StartRequest<'_>) -> Result<Started, RuntimeError> {
        let sandbox = self.sandbox_of(req.id);
        let sandbox_err = |source| RuntimeError::Sandbox {
            path: sandbox.display().to_string(),
            source,
        };
        // The shim's lock, taken before anything of an earlier start is touched: held by the
        // shim from its fork to its end (it inherits this descriptor), so a task whose shim
        // runs is never started again, and the next agent can tell a started task from one
        // that never was.
        let lock_path = self.lock_of(req.id);
        let lock_err = |source| RuntimeError::Sandbox {
            path: lock_path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.shims).map_err(lock_err)?;
        let lock = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .map_err(lock_err)?
        };
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(match self.find_shim(req.id).await {
                    Some(handle) => RuntimeError::AlreadyRunning(handle),
                    None => lock_err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "locked by a process that is not the task's shim",
                    )),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
        }
        lock.set_len(0).map_err(lock_err)?;
        std::fs::create_dir_all(&sandbox).map_err(sandbox_err)?;
        if req.run_as.is_some() {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o700))
                .map_err(sandbox_err)?;
            give(&sandbox, &req.run_as).map_err(sandbox_err)?;
        }
        // The shim copies the task's output into capped, rotated files of the sandbox (see
        // `logfiles`); the files stay the agent's (0600), read by `torc logs` through the
        // agent. The shim's own messages go to the `stderr` file too.
        let stderr = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(sandbox.join("stderr"))
                .map_err(sandbox_err)?
        };
        let status = status_file(&sandbox);
        let _ = std::fs::remove_file(&status);

        // A rack task's own namespace has no way to the node's resolver (often on the node's
        // loopback): it resolves through the rack's, from a file of its sandbox bound over
        // /etc/resolv.conf in a mount namespace of its own (made in pre_exec, below).
        let resolv_conf = match (req.netns, req.resolv_conf) {
            (Some(_), Some(text)) if Path::new("/etc/resolv.conf").exists() => {
                let path = sandbox.join("resolv.conf");
                std::fs::write(&path, text).map_err(sandbox_err)?;
                Some(
                    std::ffi::CString::new(path.into_os_string().into_encoded_bytes())
                        .map_err(|e| sandbox_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?,
                )
            }
            (Some(_), Some(_)) => {
                tracing::warn!(
                    task = %req.id,
                    "this node has no /etc/resolv.conf to put the rack's resolver over; the task resolves as the node does"
                );
                None
            }
            _ => None,
        };
        let lock_fd = std::os::fd::AsRawFd::as_raw_fd(&lock);
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.arg("shim")
            .arg("--status")
            .arg(&status)
            .arg("--grace-ms")
            .arg(req.spec.kill_grace_ms.to_string())
            .arg("--lock-fd")
            .arg(lock_fd.to_string())
            .arg("--logs")
            .arg(&sandbox)
            .arg("--log-max-bytes")
            .arg(req.logs.max_bytes.to_string())
            .arg("--log-files")
            .arg(req.logs.files.to_string());
        if let Some(cg) = self.task_cgroup(req.id, req.spec) {
            cmd.arg("--cgroup").arg(cg);
        }
        if let Some(u) = &req.run_as {
            cmd.arg("--uid")
                .arg(u.uid.to_string())
                .arg("--gid")
                .arg(u.gid.to_string());
        }
        // A directory that outlives the task, for a service's state (`$DATA_DIR`): a restarted
        // instance of the same service on this node finds its data again.
        let data_dir = self.data_dirs.join(req.spec.name.as_str());
        std::fs::create_dir_all(&data_dir)
            .and_then(|()| give(&data_dir, &req.run_as))
            .map_err(|source| RuntimeError::Sandbox {
                path: data_dir.display().to_string(),
                source,
            })?;
        let data = data_dir.display().to_string();
        let secrets = if req.files.is_empty() {
            None
        } else {
            Some(write_secrets(&sandbox, req.files, &req.run_as).map_err(sandbox_err)?)
        };
        let secrets_dir = secrets
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        let fill = |t: &String| {
            torc_types::expand_placeholders(t, Some(req.ip), req.ports)
                .replace("$DATA_DIR", &data)
                .replace("$SECRETS_DIR", &secrets_dir)
        };
        // `torc` is this binary: the rack's own roles run as tasks without a PATH lookup.
        let program = if req.spec.command == "torc" {
            self.exe.display().to_string()
        } else {
            req.spec.command.clone()
        };
        cmd.arg("--")
            .arg(program)
            .args(req.spec.args.iter().map(fill))
            .current_dir(&sandbox)
            .envs(req.spec.env.iter().map(|(k, v)| (k, fill(v))))
            .envs(&req.extra_env)
            .env("TORC_DATA_DIR", &data)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        if let Some(dir) = &secrets {
            cmd.env("TORC_SECRETS_DIR", dir);
            if req.files.contains_key("token") {
                cmd.env("TORC_TOKEN_FILE", dir.join("token"));
            }
        }
        // A rack task's shim enters the task's namespace first, so it and everything it starts
        // live there (the namespace then lives as long as they do). A session of its own keeps
        // the task out of the agent's terminal signals (Ctrl-C) and lets it outlive an agent
        // restart. The lock's descriptor goes to the shim (the lock is the open file's, so it
        // is held from this fork on), with the shim's pid in it.
        // SAFETY: pre_exec runs between fork and exec; setns, unshare, mount, setsid, fcntl,
        // getpid and pwrite are async-signal-safe system calls (the mount paths are C strings
        // made before the fork, so nothing allocates), and the pid is formatted into a stack
        // buffer. The namespace's descriptor outlives the spawn (`req` borrows it).
        let netns_fd = req.netns.map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd));
        unsafe {
            cmd.pre_exec(move || {
                use std::os::fd::BorrowedFd;
                if let Some(fd) = netns_fd {
                    torc_net::netns::enter(BorrowedFd::borrow_raw(fd))?;
                }
                if let Some(source) = &resolv_conf {
                    use nix::mount::{MsFlags, mount};
                    const NONE: Option<&std::ffi::CStr> = None;
                    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)?;
                    // Nothing mounted here reaches the node's mount namespace.
                    mount(NONE, c"/", NONE, MsFlags::MS_REC | MsFlags::MS_SLAVE, NONE)?;
                    mount(
                        Some(source.as_c_str()),
                        RESOLV_CONF,
                        NONE,
                        MsFlags::MS_BIND,
                        NONE,
                    )?;
                }
                nix::unistd::setsid()?;
                let fd = BorrowedFd::borrow_raw(lock_fd);
                nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                )?;
                let mut digits = [b'\n'; 11];
                let mut pid = nix::unistd::getpid().as_raw() as u32;
                let mut at = 10;
                loop {
                    at -= 1;
                    digits[at] = b'0' + (pid % 10) as u8;
                    pid /= 10;
                    if pid == 0 {
                        break;
                    }
                }
                nix::sys::uio::pwrite(fd, &digits[at..], 0)?;
                Ok(())
            });
        }
        let child = tokio::process::Command::from(cmd)
            .kill_on_drop(false)
            .spawn()
            .map_err(RuntimeError::Spawn)?;
        // The shim holds the lock now; this descriptor is not needed (closing it does not
        // release a lock another descriptor of the same open file holds).
        drop(lock);
        let pid = child.id().unwrap_or(0);
        let start_time = process_start_time(pid).unwrap_or(0);
        Ok(Started {
            handle: Handle {
                sandbox,
                pid,
                start_time,
                container: None,
            },
            child: Some(child),
        })
    }

    fn stop(&self, handle: &Handle) {
        if self.is_alive(handle) {
            signal(handle.pid, Signal::SIGTERM);
        }
    }

    fn kill_now(&self, handle: &Handle) {
        if !self.is_alive(handle) {
            return;
        }
        // Every process under the shim first, while the shim lives: it is their subreaper, so
        // what they leave behind comes back under it and is found in the next round. Killed
        // after them, the shim leaves nothing to be reparented to init.
        for _ in 0..5 {
            let below = descendants(handle.pid);
            if below.is_empty() {
                break;
            }
            for pid in below {
                signal(pid, Signal::SIGKILL);
            }
        }
        signal(handle.pid, Signal::SIGKILL);
    }

    fn is_alive(&self, handle: &Handle) -> bool {
        handle.pid != 0 && process_start_time(handle.pid) == Some(handle.start_time)
    }

    /// A shim this agent spawned is waited on (and reaped); an adopted one is not this
    /// agent's child and is polled. Either way its exit record says how the task ended.
    async fn ended(&self, task: Started) -> Option<ExitRecord> {
        let Started { handle, child } = task;
        match child {
            Some(mut child) => {
                if let Err(e) = child.wait().await {
                    tracing::error!(sandbox = %handle.sandbox.display(), error = %e, "cannot wait for the task's shim");
                }
            }
            None => {
                while self.is_alive(&handle) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        ExitRecord::read(&handle.status_file())
    }

    /// From the shim's lock (held from its fork to its end), then its exit record.
    async fn find(&self, id: &TaskId) -> Found {
        if let Some(handle) = self.find_shim(id).await {
            return Found::Running(handle);
        }
        match ExitRecord::read(&status_file(&self.sandbox_of(id))) {
            Some(record) => Found::Ended(record),
            None => Found::Never,
        }
    }

    fn probe(&self, handle: &Handle) -> Probe {
        Probe::Tree(handle.pid)
    }
}

/// When a stopped task is killed: a process task's shim kills it after its grace period
/// itself, and the agent kills the shim 3 s later if it is still there; a container has no
/// such shim of ours, and the agent kills every process of it when the grace period ends.
pub fn stop_deadline(spec: &TaskSpec) -> Duration {
    let grace = Duration::from_millis(spec.kill_grace_ms);
    if spec.container.is_some() {
        grace
    } else {
        grace + Duration::from_secs(3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task table and an exit record written before containers read as they were, and a
    /// process task's are written as they were: the new fields appear only when set.
    #[test]
    fn handles_and_exit_records_of_older_agents_read_and_write_unchanged() {
        let old_handle = r#"{"sandbox":"/d/sandboxes/web.000001","pid":42,"start_time":7}"#;
        let handle: Handle = serde_json::from_str(old_handle).unwrap();
        assert_eq!(handle.container, None);
        assert_eq!(serde_json::to_string(&handle).unwrap(), old_handle);

        let old_record = r#"{"exit_code":137,"signal":9,"stopped":false}"#;
        let record: ExitRecord = serde_json::from_str(old_record).unwrap();
        assert!(!record.oom);
        assert_eq!(serde_json::to_string(&record).unwrap(), old_record);

        let container = Handle {
            container: Some(ContainerRef {
                id: "web.000001".into(),
                namespace: "torc".into(),
                cgroup: "/torc/torc/web.000001".into(),
                stop_signal: None,
            }),
            ..handle
        };
        let text = serde_json::to_string(&container).unwrap();
        assert_eq!(serde_json::from_str::<Handle>(&text).unwrap(), container);
        let oom = ExitRecord {
            oom: true,
            ..record
        };
        let text = serde_json::to_string(&oom).unwrap();
        assert!(text.contains(r#""oom":true"#), "{text}");
        assert_eq!(serde_json::from_str::<ExitRecord>(&text).unwrap(), oom);
    }

    /// `find` tells the three cases apart for a process task: nothing of it (never started),
    /// an exit record without a running shim (ended), and a shim holding its lock (running).
    #[tokio::test]
    async fn find_tells_a_task_that_never_started_from_one_that_ended_or_runs() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = ProcessRuntime::new(
            dir.path().join("no-such-torc"),
            dir.path().join("sandboxes"),
            "find-test",
        );
        let id = TaskId::new("web.000001").unwrap();
        assert!(matches!(runtime.find(&id).await, Found::Never));

        let sandbox = runtime.sandbox_of(&id);
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(status_file(&sandbox), r#"{"exit_code":3,"stopped":false}"#).unwrap();
        match runtime.find(&id).await {
            Found::Ended(r) => assert_eq!(r.exit_code, 3),
            other => panic!("{other:?}"),
        }

        // A process holding the task's lock with its pid in it, as a shim does.
        std::fs::create_dir_all(&runtime.shims).unwrap();
        let lock = std::fs::File::create(runtime.lock_of(&id)).unwrap();
        lock.lock().unwrap();
        let me = std::process::id();
        std::fs::write(runtime.lock_of(&id), me.to_string()).unwrap();
        match runtime.find(&id).await {
            Found::Running(h) => {
                assert_eq!(h.pid, me);
                assert!(runtime.is_alive(&h));
                assert_eq!(runtime.probe(&h), Probe::Tree(me));
            }
            other => panic!("{other:?}"),
        }
    }
}

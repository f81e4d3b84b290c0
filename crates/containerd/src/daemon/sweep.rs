//! The sweep: ending everything a private containerd ran, also after a crash.
//!
//! The way through containerd comes first: attach to the daemon (or start it again on the
//! same layout, so that containerd's own clean-up runs: it reconnects to live shims and
//! deletes after dead ones), kill and remove every task, container and container snapshot
//! in every namespace, remove the namespaces' empty cgroup directories, stop the daemon and
//! remove `run`. If that fails anywhere (containerd will not start, a task will not die), the
//! way around it follows, from what is on disk: SIGKILL the daemon, `runc delete --force`
//! every container in the layout's runc root (kills its processes, removes its cgroup), SIGTERM
//! the shims whose command line names the layout's socket (each removes its own socket in
//! `/run/containerd/s` and exits; SIGKILL after 7 s), unmount what is mounted below
//! `run`, remove the cgroup directories and `run`. The first way's error is still returned.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::layout::{DaemonError, DaemonOptions, Layout, cgroup_parent, io_error};
use super::process::{Daemon, answers, terminate};
use crate::client::Client;
use crate::error::Error;
use crate::ids::{ContainerId, Namespace};
use crate::tasks::TaskStatus;

/// How long a task killed by the sweep may take to be reported stopped.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shim may take to exit after SIGTERM (it waits up to 5 s for its events to
/// reach containerd).
const SHIM_EXIT_TIMEOUT: Duration = Duration::from_secs(7);

/// What a sweep found and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// The daemon had to be started again (it was not running).
    pub restarted: bool,
    pub namespaces: usize,
    /// Tasks that were running and were killed.
    pub killed: usize,
    /// Containers removed (with their tasks and snapshots).
    pub removed: usize,
    /// Cgroup directories removed.
    pub cgroups: usize,
}

/// Ends everything the private containerd on `layout` runs or ran, whether it is running or
/// not, then the daemon itself, and removes `layout.run` (`layout.root`, the images, stays).
/// Nothing to do when `run` does not exist.
pub async fn sweep(layout: &Layout, options: &DaemonOptions) -> Result<Swept, DaemonError> {
    sweep_with(layout, options, None).await
}

impl Daemon {
    /// Removes everything this daemon runs (see [`sweep`](super::sweep)), then ends it.
    pub async fn sweep(mut self) -> Result<Swept, DaemonError> {
        let child = self.child.take();
        sweep_with(&self.layout, &self.options, child).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        // Dropped while running: an error path or a panicking test. Leave nothing behind. The
        // sweep is async and this may run inside a runtime, so it runs on a thread of its own.
        let layout = self.layout.clone();
        let options = self.options.clone();
        let swept = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(io_error(Path::new("tokio runtime")))?;
            let child = None;
            runtime.block_on(sweep_with(&layout, &options, child))
        })
        .join();
        match swept {
            Ok(Ok(swept)) => tracing::info!(?swept, "swept a dropped private containerd"),
            Ok(Err(error)) => {
                tracing::error!(%error, "sweeping a dropped private containerd");
                eprintln!("sweeping a dropped private containerd: {error}");
            }
            Err(_) => eprintln!("sweeping a dropped private containerd: the sweep panicked"),
        }
        // The child is killed and reaped by tokio when it is dropped (kill_on_drop), if the
        // sweep did not end it.
    }
}

/// [`sweep`], given the daemon's child process when this process started it.
pub(super) async fn sweep_with(
    layout: &Layout,
    options: &DaemonOptions,
    child: Option<tokio::process::Child>,
) -> Result<Swept, DaemonError> {
    if !layout.run.exists() {
        return Ok(Swept::default());
    }
    layout.check()?;
    let result = match through_containerd(layout, options, child).await {
        Ok(swept) => remove_run(layout).map(|()| swept),
        Err(e) => Err(e),
    };
    let error = match result {
        Ok(swept) => return Ok(swept),
        Err(error) => error,
    };
    let mut failures = vec![error.to_string()];
    failures.extend(around_containerd(layout).await);
    Err(DaemonError::Sweep {
        socket: layout.socket(),
        failures,
    })
}

async fn through_containerd(
    layout: &Layout,
    options: &DaemonOptions,
    mut child: Option<tokio::process::Child>,
) -> Result<Swept, DaemonError> {
    let mut restarted = false;
    if child.is_none() && !answers(&layout.socket()).await {
        let mut daemon = Daemon::start(layout.clone(), options.clone()).await?;
        child = daemon.child.take();
        restarted = true;
    }
    let result = sweep_attached(layout).await;
    match child.as_mut() {
        Some(child) => terminate(child, options.stop_timeout).await,
        None => terminate_by_pid_file(layout, options.stop_timeout).await,
    }
    result.map(|swept| Swept { restarted, ..swept })
}

/// Kills and removes every task and container in every namespace of the answering daemon,
/// and their cgroup parents. Goes on past a failure, and reports them all.
async fn sweep_attached(layout: &Layout) -> Result<Swept, DaemonError> {
    let socket = layout.socket();
    let any = Namespace::new("default").expect("a valid namespace");
    let client = Client::connect(&socket, any).await?;
    let mut swept = Swept::default();
    let mut failures = Vec::new();
    for namespace in client.namespaces().await? {
        swept.namespaces += 1;
        let client = client.in_namespace(namespace.clone());
        match client.tasks().await {
            Ok(tasks) => {
                for task in tasks.iter().filter(|t| t.status != TaskStatus::Stopped) {
                    swept.killed += 1;
                    if let Err(e) = kill_and_wait(&client, &task.id).await {
                        failures.push(e.to_string());
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        match client.containers().await {
            Ok(containers) => {
                for container in containers {
                    match client.remove(&container.id).await {
                        Ok(_) => swept.removed += 1,
                        Err(e) => failures.push(e.to_string()),
                    }
                }
            }
            Err(e) => failures.push(e.to_string()),
        }
        swept.cgroups += remove_cgroups(&cgroup_parent(&namespace));
    }
    if failures.is_empty() {
        Ok(swept)
    } else {
        Err(DaemonError::Sweep { socket, failures })
    }
}

async fn kill_and_wait(client: &Client, id: &ContainerId) -> Result<(), Error> {
    match client.kill_task(id, Signal::SIGKILL, true).await {
        Ok(()) => {}
        // It ended meanwhile.
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    }
    match tokio::time::timeout(KILL_TIMEOUT, client.wait_task(id)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is_not_found() => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(Error::Timeout {
            socket: client.socket().to_path_buf(),
            call: "Tasks.Kill",
            target: format!("{id} (waiting for its exit)"),
            seconds: KILL_TIMEOUT.as_secs(),
        }),
    }
}

/// The way around containerd, from what is on disk; returns what failed.
async fn around_containerd(layout: &Layout) -> Vec<String> {
    let mut failures = Vec::new();
    if let Some(pid) = pid_from_file(layout) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let runc_root = layout.runc_root();
    let mut namespaces = Vec::new();
    for ns_dir in subdirs(&runc_root) {
        let Some(namespace) = ns_dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        for container in subdirs(&ns_dir) {
            let id = container.file_name().unwrap_or_default().to_owned();
            let output = tokio::process::Command::new("runc")
                .arg("--root")
                .arg(&ns_dir)
                .args(["delete", "--force"])
                .arg(&id)
                .output()
                .await;
            match output {
                Ok(o) if o.status.success() => {}
                Ok(o) => failures.push(format!(
                    "runc delete --force {}: {}",
                    id.to_string_lossy(),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => failures.push(format!("runc: {e}")),
            }
        }
        namespaces.push(namespace);
    }
    // The shims: SIGTERM, on which a shim removes its socket in /run/containerd/s (which
    // this code never touches) and exits; SIGKILL for one still there after a while.
    let shims = processes_with("-address", &layout.socket());
    for pid in &shims {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + SHIM_EXIT_TIMEOUT;
    while shims.iter().any(|pid| alive(*pid)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for pid in shims.iter().filter(|pid| alive(**pid)) {
        failures.push(format!("shim {pid} did not exit on SIGTERM: killed"));
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    // Deepest first, detached: a busy mount goes as soon as it is no longer used.
    let mut mounted = mounts_under(&layout.run);
    mounted.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for point in mounted {
        let path = PathBuf::from(point.replace("\\040", " "));
        if let Err(e) = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
            failures.push(format!("umount {}: {e}", path.display()));
        }
    }
    for namespace in namespaces {
        remove_cgroups(&format!("/torc/{namespace}"));
    }
    if let Err(e) = remove_run(layout) {
        failures.push(e.to_string());
    }
    failures
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Whether `pid` is a live process (not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Live processes with `flag value` among their arguments (exactly: two consecutive
/// arguments).
fn processes_with(flag: &str, value: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    let value = value.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
                args.windows(2)
                    .any(|pair| pair[0] == flag.as_bytes() && pair[1] == value)
            })
        })
        .collect()
}

/// Removes the empty cgroup directories `relative` (e.g. `/torc/<ns>`) in every hierarchy:
/// cgroup v2 at `/sys/fs/cgroup`, v1 controllers (and a hybrid host's `unified`) one level
/// below. Only `rmdir`: a cgroup with processes or children stays. Returns how many went.
pub fn remove_cgroups(relative: &str) -> usize {
    let relative = relative.trim_start_matches('/');
    let base = Path::new("/sys/fs/cgroup");
    let mut candidates = vec![base.join(relative)];
    candidates.extend(subdirs(base).into_iter().map(|d| d.join(relative)));
    candidates
        .iter()
        .filter(|dir| std::fs::remove_dir(dir).is_ok())
        .count()
}

/// Removes `layout.run`, unless something is still mounted below it (a container's rootfs:
/// removing the directory would delete inside the mount).
fn remove_run(layout: &Layout) -> Result<(), DaemonError> {
    let mounted = mounts_under(&layout.run);
    if !mounted.is_empty() {
        return Err(DaemonError::Sweep {
            socket: layout.socket(),
            failures: vec![format!(
                "{} is left in place: still mounted below it: {}",
                layout.run.display(),
                mounted.join(", ")
            )],
        });
    }
    match std::fs::remove_dir_all(&layout.run) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(&layout.run)(e)),
    }
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo` (field 5, with the kernel's
/// octal escape for spaces, compared escaped on both sides).
fn mounts_under(dir: &Path) -> Vec<String> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let dir = dir.to_string_lossy().replace(' ', "\\040");
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| *point == dir || point.starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

fn pid_from_file(layout: &Layout) -> Option<i32> {
    let pid = std::fs::read_to_string(layout.pid_path())
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    is_ours(pid, layout).then_some(pid)
}

/// Ends the daemon named by the layout's pid file (one this process did not start), if that
/// pid is still a containerd of this layout.
async fn terminate_by_pid_file(layout: &Layout, timeout: Duration) {
    let Some(pid) = pid_from_file(layout) else {
        return;
    };
    let pid = Pid::from_raw(pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while is_ours(pid.as_raw(), layout) {
        if Instant::now() >= deadline {
            let _ = kill(pid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pid` is a live (not zombie) containerd started with this layout's config.
fn is_ours(pid: i32, layout: &Layout) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let Ok(cmdline) = std::fs::read(proc.join("cmdline")) else {
        return false;
    };
    let config = layout.config_path();
    let names_config = cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == config.as_os_str().as_encoded_bytes());
    names_config && alive(pid)
}

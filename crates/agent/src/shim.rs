//! The task shim: a tiny supervisor process between the agent and each task.
//!
//! The agent starts `torc shim --status FILE --grace-ms N [--lock-fd FD] -- CMD ARGS...` in a
//! session of its own; the shim starts the task in a process group of its own, waits for it,
//! and writes how it ended to FILE before exiting. Because the shim (not the agent) is the
//! task's parent:
//! - an agent that restarts (or is killed) leaves its tasks running, and the new agent learns
//!   the exit code of a task that ended meanwhile from FILE;
//! - the shim is a child subreaper, so every process the task leaves behind (also one that
//!   double-forked into a session of its own) is reparented to the shim, not to init. When the
//!   task's main process ends, the shim kills the task's process group and then every process
//!   still under it, and ends only once none is left.
//!
//! What holds when the shim itself is killed: the task's main process gets SIGKILL with it
//! (PDEATHSIG). The agent's own hard kill (`ProcessRuntime::kill_now`) kills every process
//! under the shim before the shim, so nothing is left then either. A SIGKILL of the shim from
//! anywhere else (the OOM killer, an operator) leaves the task's other processes running,
//! reparented to init: only a cgroup holds those (TODO-correctness, issue 17).
//!
//! `--lock-fd` is the agent's lock of this task (see `runtime`): inherited open, so held from
//! the fork on; the shim keeps it to its end and lets no task process inherit it.
//!
//! On SIGTERM, SIGINT or SIGHUP the shim forwards SIGTERM to the task's process group, and
//! SIGKILL after the grace period.
//!
//! With `--logs DIR` the task's stdout and stderr are pipes the shim reads, one thread each,
//! into capped, rotated files in DIR (`logfiles::Rotator`): the task writes into a pipe of
//! 1 MiB where the kernel allows it, and never waits on a rotation or a full disk (what the
//! disk refuses is dropped and counted in the stream, see `logfiles`). The threads start after the task's fork; once
//! every process of the task is gone they drain what is left in the pipes (for at most
//! 2 s: a descriptor handed to an outside process could hold a pipe open) and the shim ends.
//! The shim's own messages go with the task's stderr while the task runs (its stderr is
//! the pipe then); before the task starts, to the `stderr` file the agent opened for it
//! (before any rotation); after the task's end, nowhere (its exit record says how it ended).
//!
//! Runs before any async runtime exists, with plain blocking calls; no thread runs before
//! the task is forked.

use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::prctl;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, killpg, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, setpgid};
use serde::{Deserialize, Serialize};

/// How a task ended, as the shim saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitRecord {
    /// The exit code, or 128 + signal when killed by a signal (the shell convention).
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// The shim was asked to stop the task.
    pub stopped: bool,
    /// The task could not be started at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn_error: Option<String>,
    /// The kernel killed the task at its memory limit (a container runtime reads this from the
    /// container's cgroup; the shim does not tell, and leaves it false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oom: bool,
}

impl ExitRecord {
    pub fn read(path: &Path) -> Option<ExitRecord> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Durably: the agent reads it after a crash of either (see `torc_durable`).
    pub(crate) fn write(&self, path: &Path) -> Result<(), torc_durable::WriteError> {
        torc_durable::write_atomic(path, &serde_json::to_vec(self).expect("record serialises"))
    }
}

/// Arguments of `torc shim`.
pub struct ShimArgs {
    pub status: PathBuf,
    pub grace: Duration,
    /// A cgroup v2 directory to join before starting the task (limits apply to the task).
    pub cgroup: Option<PathBuf>,
    /// The user and group the task runs as (`None`: the shim's own).
    pub run_as: Option<(u32, u32)>,
    /// The agent's lock of this task, inherited open: kept to the shim's end, never passed on.
    pub lock_fd: Option<i32>,
    /// Where the task's output goes, capped and rotated (`None`: the shim's own stdout and
    /// stderr, inherited).
    pub logs: Option<(PathBuf, torc_types::LogCap)>,
    pub command: String,
    pub args: Vec<String>,
}

/// Runs the shim; returns the process exit code.
pub fn run(args: ShimArgs) -> i32 {
    match supervise(&args) {
        Ok((status, stopped)) => {
            let (exit_code, signal) = match status {
                WaitStatus::Exited(_, code) => (code, None),
                WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
                // waitpid without WUNTRACED/WCONTINUED reports only these two for an end.
                other => unreachable!("waitpid reported {other:?} as an end"),
            };
            let rec = ExitRecord {
                exit_code,
                signal,
                stopped,
                spawn_error: None,
                oom: false,
            };
            if let Err(e) = rec.write(&args.status) {
                eprintln!("torc shim: {e}");
            }
            exit_code
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!("torc shim: {msg}");
            let rec = ExitRecord {
                exit_code: 127,
                signal: None,
                stopped: false,
                spawn_error: Some(msg),
                oom: false,
            };
            let _ = rec.write(&args.status);
            127
        }
    }
}

/// Why a task never started.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot {what}: {errno}")]
    Setup {
        what: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("cannot start {command:?}: {error}")]
    Spawn {
        command: String,
        error: std::io::Error,
    },
}

/// Starts the task and waits for its end: how it ended, and whether it was asked to stop. An
/// error means the task never started.
fn supervise(args: &ShimArgs) -> Result<(WaitStatus, bool), StartError> {
    let setup = |what| move |errno| StartError::Setup { what, errno };
    let mut watched = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        watched.add(s);
    }
    if let Some(fd) = args.lock_fd {
        if fd <= 2 {
            return Err(StartError::Setup {
                what: "keep the task's lock (--lock-fd must be above 2)",
                errno: nix::errno::Errno::EBADF,
            });
        }
        // SAFETY: the descriptor was inherited from the agent for this purpose and is never
        // closed by the shim; only its close-on-exec flag changes.
        let lock = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(
            lock,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(setup("keep the task's lock from the task"))?;
    }
    // Orphaned grandchildren come back to us, so nothing escapes the process tree.
    prctl::set_child_subreaper(true).map_err(setup("become a subreaper"))?;
    // Signals are taken synchronously, from a signalfd, below.
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&watched), None).map_err(setup("block signals"))?;
    let signals = SignalFd::with_flags(&watched, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(setup("open a signalfd"))?;
    if let Some(cg) = &args.cgroup
        && let Err(e) = std::fs::write(cg.join("cgroup.procs"), std::process::id().to_string())
    {
        eprintln!("torc shim: cannot join cgroup {}: {e}", cg.display());
    }

    let mut cmd = Command::new(&args.command);
    cmd.args(&args.args);
    if let Some((uid, gid)) = args.run_as {
        // std drops the supplementary groups too when it switches from root.
        cmd.uid(uid).gid(gid);
    }
    // SAFETY: pre_exec runs between fork and exec; these three calls are async-signal-safe
    // system calls that allocate nothing.
    unsafe {
        cmd.pre_exec(|| {
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
            prctl::set_pdeathsig(Signal::SIGKILL)?;
            Ok(())
        });
    }
    let pipes = match &args.logs {
        Some(_) => {
            let out = output_pipe().map_err(setup("make the task's stdout pipe"))?;
            let err = output_pipe().map_err(setup("make the task's stderr pipe"))?;
            let own = err.1.try_clone().map_err(|e| StartError::Setup {
                what: "keep the task's stderr pipe",
                errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?;
            cmd.stdout(out.1).stderr(err.1);
            Some(([out.0, err.0], own))
        }
        None => None,
    };
    let child = cmd.spawn().map_err(|error| StartError::Spawn {
        command: args.command.clone(),
        error,
    })?;
    // The pipes' write ends are the task's now (the command holds our copies), but for the
    // shim's own stderr: its messages go through the copier with the task's, so nothing else
    // ever writes to the files (a rotated one never changes).
    drop(cmd);
    let pipes = pipes.map(|(ends, own)| {
        let _ = nix::unistd::dup2_stderr(&own);
        ends
    });
    let pid = Pid::from_raw(child.id() as i32);
    // Dropping the std handle does not reap: we wait with waitpid ourselves.
    drop(child);
    let copiers = match (&args.logs, pipes) {
        (Some((dir, cap)), Some([out, err])) => {
            Some(crate::logfiles::copy_output(dir, *cap, out, err))
        }
        _ => None,
    };

    let mut stop_deadline: Option<Instant> = None;
    let mut killed = false;
    let mut stopped = false;
    let status = loop {
        // Reap everything that ended; remember the main child's status.
        let mut main_status = None;
        while let Ok(ended) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            match ended {
                WaitStatus::StillAlive => break,
                WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) if p == pid => {
                    main_status = Some(ended);
                }
                _ => {}
            }
        }
        if let Some(st) = main_status {
            break st;
        }
        let timeout = match stop_deadline {
            Some(d) if !killed => d.saturating_duration_since(Instant::now()),
            _ => Duration::from_secs(3600),
        };
        // Rounded up, so a deadline less than a millisecond away is not a busy loop.
        let millis = i32::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        );
        while let Ok(Some(info)) = signals.read_signal() {
            let stop = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP]
                .iter()
                .any(|s| *s as u32 == info.ssi_signo);
            if stop && stop_deadline.is_none() {
                stopped = true;
                stop_deadline = Some(Instant::now() + args.grace);
                let _ = killpg(pid, Signal::SIGTERM);
            }
        }
        if let Some(d) = stop_deadline
            && !killed
            && Instant::now() >= d
        {
            killed = true;
            let _ = killpg(pid, Signal::SIGKILL);
        }
    };
    // Whatever the task left in its group goes with it, and so does every process that left
    // the group (reparented to us, the subreaper); we wait until no child is left.
    let _ = killpg(pid, Signal::SIGKILL);
    let me = std::process::id();
    loop {
        for p in crate::runtime::descendants(me) {
            let _ = nix::sys::signal::kill(Pid::from_raw(p as i32), Signal::SIGKILL);
        }
        // Any other answer (a child reaped; EINTR cannot happen, our signals are blocked) means
        // look again.
        if let Err(nix::errno::Errno::ECHILD) = waitpid(None, None) {
            break;
        }
    }
    if let Some(done) = copiers {
        // Each copier ends at its pipe's end of file, once no writer is left: the shim's own
        // stderr lets go of its pipe first (what it says from here on is not kept).
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stderr(&null);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            // A pipe still held open (by a process outside the task): not waited for longer.
            if done.recv_timeout(left).is_err() {
                break;
            }
        }
    }
    Ok((status, stopped))
}

/// A pipe for one of the task's output streams, both ends close-on-exec (the task gets the
/// write end as its stdout or stderr through `dup2`, which clears the flag). As large as the
/// kernel lets us (1 MiB by default), so a burst never waits on the copier.
fn output_pipe() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), nix::errno::Errno> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let _ = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    Ok((r, w))
}

//! The task shim: a tiny supervisor process between the agent and each task.
//!
//! The agent starts `torc shim --status FILE --grace-ms N -- CMD ARGS...` in a session of its
//! own; the shim starts the task in a process group of its own, waits for it, and writes how it
//! ended to FILE before exiting. Because the shim (not the agent) is the task's parent:
//! - an agent that restarts (or is killed) leaves its tasks running, and the new agent learns
//!   the exit code of a task that ended meanwhile from FILE;
//! - a task never outlives its shim: it gets SIGKILL when the shim dies (PDEATHSIG), and the
//!   shim kills the task's whole process group when the task's main process ends.
//!
//! On SIGTERM, SIGINT or SIGHUP the shim forwards SIGTERM to the task's process group, and
//! SIGKILL after the grace period.
//!
//! Runs before any async runtime exists, with plain blocking calls.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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
}

impl ExitRecord {
    pub fn read(path: &Path) -> Option<ExitRecord> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(self).expect("record serialises"))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
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
    pub command: String,
    pub args: Vec<String>,
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write into the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Runs the shim; returns the process exit code.
pub fn run(args: ShimArgs) -> i32 {
    let watched = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGCHLD];
    let set = sigset(&watched);
    // SAFETY: plain libc calls on our own process; no Rust invariants involved.
    unsafe {
        // Orphaned grandchildren come back to us, so nothing escapes the process tree.
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
        // Signals are taken synchronously with sigtimedwait below.
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
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
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let empty = sigset(&[]);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::setpgid(0, 0);
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("cannot start {:?}: {e}", args.command);
            eprintln!("torc shim: {msg}");
            let rec = ExitRecord {
                exit_code: 127,
                signal: None,
                stopped: false,
                spawn_error: Some(msg),
            };
            let _ = rec.write(&args.status);
            return 127;
        }
    };
    let pid = child.id() as libc::pid_t;
    // Dropping the std handle does not reap: we wait with waitpid ourselves.
    drop(child);

    let mut stop_deadline: Option<Instant> = None;
    let mut killed = false;
    let mut stopped = false;
    let status: libc::c_int = loop {
        // Reap everything that ended; remember the main child's status.
        let mut main_status = None;
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: waitpid writes the status into our local.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == pid {
                main_status = Some(st);
            }
        }
        if let Some(st) = main_status {
            break st;
        }
        let timeout = match stop_deadline {
            Some(d) if !killed => d.saturating_duration_since(Instant::now()),
            _ => Duration::from_secs(3600),
        };
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: sigtimedwait reads our set and timespec.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
        match sig {
            libc::SIGTERM | libc::SIGINT | libc::SIGHUP => {
                if stop_deadline.is_none() {
                    stopped = true;
                    stop_deadline = Some(Instant::now() + args.grace);
                    // SAFETY: signalling our child's process group.
                    unsafe { libc::kill(-pid, libc::SIGTERM) };
                }
            }
            _ => {
                if let Some(d) = stop_deadline
                    && !killed
                    && Instant::now() >= d
                {
                    killed = true;
                    // SAFETY: as above.
                    unsafe { libc::kill(-pid, libc::SIGKILL) };
                }
            }
        }
    };
    // Whatever the task left in its group goes with it; then reap what we inherited.
    // SAFETY: signalling the (possibly empty) group, then reaping our own children.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        let mut st = 0;
        while libc::waitpid(-1, &mut st, libc::WNOHANG) > 0 {}
    }
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (libc::WEXITSTATUS(status), None)
    } else {
        let s = libc::WTERMSIG(status);
        (128 + s, Some(s))
    };
    let rec = ExitRecord {
        exit_code,
        signal,
        stopped,
        spawn_error: None,
    };
    if let Err(e) = rec.write(&args.status) {
        eprintln!("torc shim: cannot write {}: {e}", args.status.display());
    }
    exit_code
}

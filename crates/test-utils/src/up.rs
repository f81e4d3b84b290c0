//! `torc up` as a user runs it, for tests: [`Up`] starts it and reads what it prints, with
//! every wait bounded; the CLI's environment for its rack; and the checks that a rack is gone
//! (no process, namespace, lock, record or guard route left). Used by `torc`'s `up` tests and
//! the fault suite's restart of a killed `torc up`.
//!
//! Every `torc up` started here gets SIGTERM if the test process dies, and Ctrl-C when its
//! [`Up`] is dropped (a failed test included), so it removes what it made.

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{free_loopback_block, free_port, processes_mentioning};

/// Runs `EXE ARGS` with `env`: whether it succeeded, its stdout and its stderr.
pub fn cli(exe: &str, env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A free loopback block's `.20` (the endpoints' base) and a free port on it.
pub fn free_base() -> (Ipv4Addr, u16) {
    let b = free_loopback_block().octets();
    let base = Ipv4Addr::new(b[0], b[1], b[2], 20);
    (base, free_port(base))
}

/// The CLI's environment for the rack `torc up` keeps in `dir`, reached at `url`.
pub fn env_for(dir: &Path, url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TORC_CONTROLLER", url.to_string()),
        (
            "TORC_TOKEN_FILE",
            dir.join("credentials")
                .join("admin.token")
                .display()
                .to_string(),
        ),
        (
            "TORC_CA",
            dir.join("pki").join("ca.pem").display().to_string(),
        ),
    ]
}

/// A running `torc up`: its stdout line by line (read on a thread, so every wait is bounded),
/// its stderr in a file.
pub struct Up {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Up {
    /// Starts `[prefix...] EXE up ARGS` (`exe` is torc; `prefix` runs it, e.g. setpriv).
    pub fn start(exe: &str, prefix: &[&str], args: &[String]) -> Up {
        let stderr_dir = tempfile::tempdir().unwrap();
        let stderr = stderr_dir.path().join("up.stderr");
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.arg("up")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // SAFETY: pre_exec runs between fork and exec; prctl is an async-signal-safe system
        // call that allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                // If the test process dies, torc up stops its rack as on Ctrl-C.
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)?;
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Up {
            child,
            lines,
            seen: Vec::new(),
            stderr,
            _stderr_dir: stderr_dir,
        }
    }

    /// Everything printed so far, stdout then stderr.
    pub fn said(&self) -> String {
        let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        format!("{}\n--- stderr:\n{err}", self.seen.join("\n"))
    }

    /// Reads stdout until a line satisfies `done` (answering true) or stdout ends (false),
    /// for at most `timeout`.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let finished = done(&line);
                    self.seen.push(line);
                    if finished {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "torc up said nothing more for {timeout:?}:\n{}",
                        self.said()
                    )
                }
            }
        }
    }

    /// Waits until the rack is up; answers what torc up printed.
    pub fn until_up(&mut self) -> String {
        let up = self.read_until(Duration::from_secs(120), |l| l.starts_with("Try "));
        let text = self.seen.join("\n");
        assert!(up && text.contains("Rack is up."), "{}", self.said());
        text
    }

    /// Waits for torc up to exit by itself (at most 60 s).
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.read_until(Duration::from_secs(60), |_| false);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "torc up did not exit:\n{}",
                self.said()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Ctrl-C, then waits for it to exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGINT);
        self.wait_exit()
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // A failed test: stop the rack as a user would, SIGKILL if it hangs.
            self.signal(nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(60);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn up_args(nodes: usize, base: Ipv4Addr, port: u16, dir: &Path, network: &str) -> Vec<String> {
    [
        "--network",
        network,
        "--nodes",
        &nodes.to_string(),
        "--ip-base",
        &base.to_string(),
        "--api-port",
        &port.to_string(),
        "--data-dir",
    ]
    .iter()
    .map(|a| a.to_string())
    .chain([dir.display().to_string()])
    .collect()
}

pub fn rack_prefix(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with("network:"))
        .unwrap_or_else(|| panic!("no network line:\n{text}"));
    let word = line
        .split_whitespace()
        .find(|w| w.starts_with("torc-"))
        .unwrap_or_else(|| panic!("no rack prefix in {line:?}"));
    word.trim_end_matches(':').trim_end_matches('*').to_string()
}

/// The namespaces `ip netns list` shows whose name starts with `prefix`.
pub fn listed_namespaces(prefix: &str) -> BTreeSet<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(out.status.success(), "ip netns list: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// The namespace (device, inode) a path names: `/run/netns/NAME` or `/proc/PID/ns/net`.
pub fn namespace_id(path: &Path) -> (u64, u64) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.dev(), meta.ino())
}

/// The namespaces of the processes of the rack in `dir` whose command line has every one of
/// `words` (one process, and any child it forked that has not exec'd yet), at least one.
pub fn namespaces_of(dir: &Path, words: &[&str]) -> BTreeSet<(u64, u64)> {
    let found: Vec<(u32, String)> = processes_mentioning(dir)
        .into_iter()
        .filter(|(_, cmd)| words.iter().all(|w| cmd.contains(w)))
        .collect();
    let namespaces: BTreeSet<(u64, u64)> = (found.iter())
        .filter_map(|(pid, _)| std::fs::metadata(format!("/proc/{pid}/ns/net")).ok())
        .map(|meta| (meta.dev(), meta.ino()))
        .collect();
    assert!(!namespaces.is_empty(), "{words:?}: {found:?}");
    namespaces
}

/// Whether the host's table holds the guard route of namespaced racks.
pub fn guard_route_present() -> bool {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "proto", "116"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("blackhole 198.18.0.0/15")
}

/// After a rack stopped: the guard route goes, unless another rack (another test's) runs.
pub fn assert_guard_route_gone_unless_a_rack_runs() {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let running = torc_net::rack::running().unwrap();
        if !guard_route_present() || !running.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the guard route stayed with no rack running"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host holds no address of the rack range (198.18.0.0/15).
pub fn assert_host_has_no_rack_address() {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains(" 198.18.") && !text.contains(" 198.19."),
        "the host has a rack address:\n{text}"
    );
}

/// What a failed check needs to be understood: the rack's tasks and the tail of every log.
pub fn rack_state(exe: &str, env: &[(&str, String)], dir: &Path) -> String {
    let (_, tasks, err) = cli(exe, env, &["tasks", "-a"]);
    let mut out = format!("--- torc tasks -a\n{tasks}{err}");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("logs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        out.push_str(&format!("--- {}\n", log.display()));
        for line in tail.into_iter().rev() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Everything a rack of `dir` with `prefix` made is gone: processes, namespaces, its lock and
/// record, the guard route (unless another rack runs).
pub fn assert_rack_gone(dir: &Path, prefix: &str) {
    let left = processes_mentioning(dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert_eq!(listed_namespaces(prefix), BTreeSet::new());
    let slug = prefix.trim_start_matches("torc-").trim_end_matches('-');
    for file in [format!("{slug}.lock"), format!("{slug}.json")] {
        let path = Path::new("/run/torc").join(file);
        assert!(!path.exists(), "{} is left", path.display());
    }
    assert_guard_route_gone_unless_a_rack_runs();
}

pub fn eventually(what: &str, mut cmd: impl FnMut() -> Command, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cmd().output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.contains(want) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

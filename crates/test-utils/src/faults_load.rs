//! Support for the fault-injection suite's load and clock faults (issue 19,
//! `crates/torc/tests/faults/{kill,clock}.rs`): a standalone role process (`torc kv`,
//! `torc tsdb`) that a test kills with SIGKILL and starts again on the same data and address;
//! the task processes a rack really runs, counted per task from `/proc`; a controller's wall
//! clock stepped with libfaketime; and a process's CPU time.
//!
//! What it is not: a fault of its own. The tests drive the load, kill or step, and count.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use crate::{die_with_test, free_loopback_block, free_port, processes_mentioning, wait_for};

/// A `torc <role>` process serving on one address from one data directory, both kept across
/// kills and restarts. Dropping it kills the process.
pub struct RoleProcess {
    exe: PathBuf,
    role: String,
    extra: Vec<String>,
    /// Holds `data/` (the role's `--data-dir`) and `<role>.log`.
    pub dir: tempfile::TempDir,
    pub addr: SocketAddrV4,
    child: Option<Child>,
}

impl RoleProcess {
    /// Starts `exe ROLE --listen ADDR --data-dir DIR/data EXTRA...` on a free address of a
    /// loopback block of its own, and waits until it accepts connections.
    pub async fn start(exe: impl AsRef<Path>, role: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("torc-{role}-"))
            .tempdir()?;
        let block = free_loopback_block().octets();
        let ip = Ipv4Addr::new(block[0], block[1], block[2], 1);
        let addr = SocketAddrV4::new(ip, free_port(ip));
        let mut role = RoleProcess {
            exe: exe.as_ref().to_path_buf(),
            role: role.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            dir,
            addr,
            child: None,
        };
        role.restart()?;
        role.wait_accepting(Duration::from_secs(30)).await?;
        Ok(role)
    }

    /// The role's `--data-dir`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the role again (same address, same data) without waiting for it; a running one
    /// is killed first.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let log_path = self.dir.path().join(format!("{}.log", self.role));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg(&self.role)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        die_with_test(&mut cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {} {}", self.exe.display(), self.role))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL, then reaps it (nothing if it does not run).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until it accepts TCP connections; fails with its log's tail when it exits or
    /// takes longer than `timeout`.
    pub async fn wait_accepting(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let addr = self.addr;
        let accepted = wait_for(
            &format!("torc {} to accept on {addr}", self.role),
            timeout,
            || async {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(_) => Some(true),
                    Err(_) => None,
                }
            },
        )
        .await;
        let exited = match self.child.as_mut() {
            Some(c) => c.try_wait()?.is_some(),
            None => true,
        };
        if accepted.is_err() || exited {
            anyhow::bail!(
                "torc {} did not come up on {addr}:\n{}",
                self.role,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// The last lines of its log, for a failure's message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.role)))
            .unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The task shims running under `dir` (a rack's directory), by task id, with their pids: one
/// per task, or the task runs twice. Read from `/proc` (a shim's `--status` is
/// `<sandbox of the task>/.torc-exit.json`, the sandbox named by the task's id), not from
/// anyone's view of the rack.
pub fn shims_by_task(dir: &Path) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (pid, cmd) in crate::without_forks(processes_mentioning(dir)) {
        let mut words = cmd.split_whitespace();
        if !words.any(|w| w == "shim") {
            continue;
        }
        let Some(status) = words.skip_while(|w| *w != "--status").nth(1) else {
            continue;
        };
        let task = Path::new(status)
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned());
        if let Some(task) = task {
            out.entry(task).or_default().push(pid);
        }
    }
    out
}

/// A task that sleeps for ten minutes and asks for little (0.01 CPU, 1 MB), so that a test
/// rack holds the hundreds a load launches.
pub fn sleeper(name: &str) -> torc_types::TaskSpec {
    let name = name.parse().expect("a valid service name");
    let mut spec = torc_types::TaskSpec::new(name, "sleep");
    spec.args = vec!["600".into()];
    spec.resources.cpus = 0.01;
    spec.resources.mem_mb = 1.0;
    spec
}

/// The CPU time (user and system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // In USER_HZ, which the kernel's ABI fixes at 100 per second for /proc.
    Some(Duration::from_millis(ticks * 10))
}

/// Debian's libfaketime (package `libfaketime`), the thread-safe build: torc's roles are
/// multi-threaded.
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// A wall clock a test steps for the processes it starts with [`FakeClock::env`]: libfaketime
/// preloaded, reading its offset from a file the test rewrites.
///
/// Only `CLOCK_REALTIME` moves (`FAKETIME_DONT_FAKE_MONOTONIC=1`), as when NTP or an operator
/// steps a host's clock: the monotonic and boot clocks, which timers and leases run on, keep
/// counting. A process reads the offset at every reading of the clock (`FAKETIME_NO_CACHE=1`),
/// so a step takes effect with the file's rename: nothing a process serves could show a step
/// back (hyper's `Date` header, say, stands still until the wall clock passes it again).
pub struct FakeClock {
    file: PathBuf,
}

impl FakeClock {
    /// Whether libfaketime is installed (`scripts/test` installs it).
    pub fn available() -> bool {
        Path::new(LIBFAKETIME).is_file()
    }

    /// A clock at the true time, its offset file in `dir`.
    pub fn new(dir: &Path) -> anyhow::Result<FakeClock> {
        anyhow::ensure!(
            FakeClock::available(),
            "{LIBFAKETIME} is missing: `apt-get install faketime`"
        );
        let clock = FakeClock {
            file: dir.join("faketime.rc"),
        };
        clock.set_offset(0)?;
        Ok(clock)
    }

    /// The environment that puts a process on this clock.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", &self.file.display().to_string()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Steps the clock to the true time plus `seconds` (negative: behind it). Written whole
    /// (a new file renamed over the old), so a process never reads half an offset.
    pub fn set_offset(&self, seconds: i64) -> anyhow::Result<()> {
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, format!("{seconds:+}\n"))?;
        std::fs::rename(&tmp, &self.file)?;
        Ok(())
    }
}

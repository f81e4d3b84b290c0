//! What a piece of code asks the kernel, for tests of durability: [`trace`] runs a closure on
//! the calling thread while a real `strace` is attached to that thread, and
//! [`assert_durable_replace`] checks that a file was replaced the way a crash cannot undo: its
//! new contents synced before the rename that puts them in place, and the directory synced
//! after it (without that, a power loss can forget the rename, or keep it with empty contents).
//!
//! Only the calling thread is traced: the closure's work must happen on it (a blocking save,
//! not one handed to another thread). Needs `strace` (Debian's package) and the right to
//! ptrace this process (root has it); [`strace_or_skip`] says so in one line otherwise.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The system calls [`trace`] records, each as strace printed it, with `-y`: every file
/// descriptor argument followed by its path (`fsync(3</tmp/x/.state.json.tmp>)`).
#[derive(Debug)]
pub struct Trace {
    pub lines: Vec<String>,
}

/// Whether `strace` can trace this process; prints one line saying why not when not.
pub fn strace_or_skip() -> bool {
    if crate::which("strace").is_none() {
        println!("skipped: strace is not installed (apt-get install strace)");
        return false;
    }
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to this process's effective user.
    if std::fs::metadata("/proc/self").map_or(true, |m| m.uid() != 0) {
        println!("skipped: tracing this process's system calls needs root");
        return false;
    }
    true
}

/// The calling thread's tracer, from `/proc/thread-self/status` (0: none).
fn tracer() -> u32 {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Runs `f` on this thread with `strace` attached to it; answers `f`'s result and the calls
/// it made that touch files (opens, syncs, renames, closes).
pub fn trace<R>(f: impl FnOnce() -> R) -> anyhow::Result<(R, Trace)> {
    let out = tempfile::NamedTempFile::new()?;
    let tid = nix::unistd::gettid();
    let mut strace = Command::new("strace")
        .args([
            "-qq",
            "-y",
            "-s",
            "512",
            "-e",
            "trace=openat,fsync,fdatasync,rename,renameat,renameat2,close",
            "-o",
        ])
        .arg(out.path())
        .args(["-p", &tid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracer() == 0 {
        if let Some(status) = strace.try_wait()? {
            let mut why = String::new();
            if let Some(mut e) = strace.stderr.take() {
                use std::io::Read as _;
                let _ = e.read_to_string(&mut why);
            }
            anyhow::bail!("strace could not attach ({status}): {why}");
        }
        if Instant::now() > deadline {
            let _ = strace.kill();
            anyhow::bail!("strace did not attach within 10 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let result = f();
    // SIGINT: strace detaches and flushes its output.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(strace.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )?;
    strace.wait()?;
    let lines = std::fs::read_to_string(out.path())?
        .lines()
        .map(str::to_string)
        .collect();
    Ok((result, Trace { lines }))
}

impl Trace {
    /// The index of the first line at or after `from` that satisfies `pred`.
    fn find(&self, from: usize, pred: impl Fn(&str) -> bool) -> Option<usize> {
        (from..self.lines.len()).find(|&i| pred(&self.lines[i]))
    }
}

/// `path` was replaced durably in `trace`: some file was `fsync`ed or `fdatasync`ed, then
/// renamed onto `path`, then `path`'s directory was `fsync`ed. Answers what is missing, with
/// the trace, otherwise.
pub fn assert_durable_replace(trace: &Trace, path: &Path) {
    let target = path.display().to_string();
    let dir = path
        .parent()
        .expect("a file in a directory")
        .display()
        .to_string();
    let shown = || trace.lines.join("\n");
    let renamed = trace
        .find(0, |l| {
            l.starts_with("rename") && l.contains(&format!("\"{target}\"")) && !l.contains("= -1")
        })
        .unwrap_or_else(|| panic!("no rename onto {target}:\n{}", shown()));
    // The renamed file's path is the rename's first quoted argument.
    let line = &trace.lines[renamed];
    let from = line
        .split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("cannot read the rename: {line}"));
    let synced = (0..renamed).any(|i| {
        let l = &trace.lines[i];
        (l.starts_with("fsync(") || l.starts_with("fdatasync(")) && l.contains(&format!("<{from}>"))
    });
    assert!(
        synced,
        "{from} was renamed onto {target} without being synced first:\n{}",
        shown()
    );
    let dir_synced = trace
        .find(renamed, |l| {
            l.starts_with("fsync(") && l.contains(&format!("<{dir}>"))
        })
        .is_some();
    assert!(
        dir_synced,
        "the rename onto {target} was not followed by an fsync of {dir}:\n{}",
        shown()
    );
}

//! `torc shim`, the supervisor between an agent and each task, as a real process: exit codes
//! and signals in its exit record, a stop with its grace period and SIGKILL after it, and no
//! process of the task's group left behind.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn shim(dir: &Path, grace_ms: u64, command: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_torc"))
        .arg("shim")
        .arg("--status")
        .arg(dir.join("exit.json"))
        .arg("--grace-ms")
        .arg(grace_ms.to_string())
        .arg("--")
        .args(command)
        .current_dir(dir)
        .spawn()
        .unwrap()
}

fn record(dir: &Path) -> serde_json::Value {
    let text = std::fs::read(dir.join("exit.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// Waits until `cond` holds, for at most 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn terminate(child: &Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

/// A process is gone once it is neither running nor a zombie waiting for its parent.
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn an_exit_code_and_a_signal_are_recorded_as_the_shell_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    let status = shim(dir.path(), 1000, &["sh", "-c", "exit 3"])
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let r = record(dir.path());
    assert_eq!(r["exit_code"], 3);
    assert_eq!(r["stopped"], false);
    assert!(r.get("signal").is_none(), "{r}");

    let status = shim(dir.path(), 1000, &["sh", "-c", "kill -KILL $$"])
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(137));
    let r = record(dir.path());
    assert_eq!(
        (r["exit_code"].clone(), r["signal"].clone()),
        (137.into(), 9.into())
    );
    assert_eq!(r["stopped"], false);
}

#[test]
fn a_command_that_cannot_start_is_127_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let status = shim(dir.path(), 1000, &["/nonexistent/program"])
        .wait()
        .unwrap();
    assert_eq!(status.code(), Some(127));
    let r = record(dir.path());
    assert_eq!(r["exit_code"], 127);
    let why = r["spawn_error"].as_str().unwrap();
    assert!(why.contains("/nonexistent/program"), "{why}");
}

#[test]
fn a_stop_is_sigterm_to_the_group_then_sigkill_after_the_grace_period() {
    // A task that stops when asked.
    let dir = tempfile::tempdir().unwrap();
    let mut child = shim(
        dir.path(),
        5000,
        &["sh", "-c", "touch ready; exec sleep 60"],
    );
    wait_until("the task to start", || dir.path().join("ready").exists());
    terminate(&child);
    child.wait().unwrap();
    let r = record(dir.path());
    assert_eq!(
        (r["signal"].clone(), r["stopped"].clone()),
        (15.into(), true.into())
    );

    // A task (and its child) ignoring SIGTERM: SIGKILL, no sooner than the grace period.
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_millis(300);
    let mut child = shim(
        dir.path(),
        grace.as_millis() as u64,
        &["sh", "-c", "trap '' TERM; sleep 60 & echo $! > pid; wait"],
    );
    wait_until("the task to start", || {
        std::fs::read_to_string(dir.path().join("pid")).is_ok_and(|p| p.ends_with('\n'))
    });
    let sleeper: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let asked = Instant::now();
    terminate(&child);
    child.wait().unwrap();
    assert!(asked.elapsed() >= grace, "killed before the grace period");
    let r = record(dir.path());
    assert_eq!(
        (r["signal"].clone(), r["stopped"].clone()),
        (9.into(), true.into())
    );
    wait_until("the task's child to be gone", || gone(sleeper));
}

#[test]
fn what_the_task_left_in_its_group_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let status = shim(
        dir.path(),
        1000,
        &["sh", "-c", "sleep 300 & echo $! > pid; exit 0"],
    )
    .wait()
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let sleeper: i32 = std::fs::read_to_string(dir.path().join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("the background process to be gone", || gone(sleeper));
}

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

fn read_pid(dir: &Path, name: &str) -> i32 {
    let mut pid = None;
    wait_until(&format!("{name} to be written"), || {
        pid = std::fs::read_to_string(dir.join(name))
            .ok()
            .filter(|p| p.ends_with('\n'))
            .and_then(|p| p.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap()
}

/// A process that left the task's group (double fork into a session of its own) comes back
/// under the shim, its subreaper, and goes with the task too.
#[test]
fn a_process_that_left_the_group_goes_with_the_task() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = shim(
        dir.path(),
        1000,
        &[
            "sh",
            "-c",
            // The escapee is in a session of its own before the task's main process exits.
            "(setsid sh -c 'echo $$ > pid; exec sleep 300' &); \
             while [ ! -s pid ]; do sleep 0.01; done; exit 0",
        ],
    );
    let escapee = read_pid(dir.path(), "pid");
    let mut status = None;
    wait_until("the shim to end", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    assert_eq!(status.unwrap().code(), Some(0));
    wait_until("the escaped process to be gone", || gone(escapee));
}

/// Starts `sh -c SCRIPT` as task `id` the way the agent does (`ProcessRuntime` with this
/// `torc` as the shim, in `netns` when given one), on `rt`; answers the runtime, the task's
/// handle and the started task (which holds the shim's child).
fn start_task(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    id: &str,
    script: &str,
    netns: Option<std::os::fd::BorrowedFd<'_>>,
) -> (
    torc_agent::runtime::ProcessRuntime,
    torc_agent::runtime::Handle,
    torc_agent::runtime::Started,
) {
    use torc_agent::runtime::{ProcessRuntime, Runtime as _, StartRequest};
    let runtime = ProcessRuntime::new(
        env!("CARGO_BIN_EXE_torc").into(),
        dir.join("sandboxes"),
        &format!("shim-test-{}", std::process::id()),
    );
    let id = torc_types::TaskId::new(id).unwrap();
    let mut spec = torc_types::TaskSpec::new("shimtest".parse().unwrap(), "sh");
    spec.args = vec!["-c".into(), script.into()];
    let started = rt
        .block_on(runtime.start(&StartRequest {
            id: &id,
            spec: &spec,
            ports: &[],
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            netns,
            extra_env: Default::default(),
            files: &Default::default(),
            run_as: None,
            resolv_conf: None,
            progress: None,
            registry: None,
            pull_timeout: None,
            logs: torc_types::LogCap::default(),
        }))
        .unwrap();
    (runtime, started.handle.clone(), started)
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The agent's hard kill of a task (`kill_now`: SIGKILL, which the shim cannot handle) leaves
/// no process of the task: neither one in its group nor one that left it.
#[test]
fn a_hard_kill_leaves_no_process_of_the_task() {
    use torc_agent::runtime::Runtime as _;
    let dir = tempfile::tempdir().unwrap();
    let rt = current_thread_runtime();
    let (runtime, handle, _child) = start_task(
        &rt,
        dir.path(),
        "hard.000001",
        "sleep 300 & echo $! > child; (setsid sh -c 'echo $$ > escapee; exec sleep 300' &); \
         wait",
        None,
    );
    let sandbox = runtime.sandbox_of(&torc_types::TaskId::new("hard.000001").unwrap());
    let child = read_pid(&sandbox, "child");
    let escapee = read_pid(&sandbox, "escapee");
    // The escapee has been reparented to the shim once the subshell ended.
    wait_until("the escapee to be the shim's", || {
        std::fs::read_to_string(format!("/proc/{escapee}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.to_string()))
            .and_then(|r| r.split_whitespace().nth(1).map(|p| p.to_string()))
            == Some(handle.pid.to_string())
    });
    runtime.kill_now(&handle);
    wait_until("the shim to be gone", || gone(handle.pid as i32));
    wait_until("the task's child to be gone", || gone(child));
    wait_until("the escaped process to be gone", || gone(escapee));
}

/// A rack task's shim enters the network namespace it is given before anything else: the real
/// shim and its task run inside it and hold it, and it ends with them, taking a veth into it
/// along. As root only (elsewhere `skipped: needs CAP_NET_ADMIN`); both namespaces are
/// anonymous ones made here, the veth has no address, and nothing is sent anywhere.
#[test]
fn a_task_given_a_namespace_runs_in_it_and_the_namespace_ends_with_its_shim() {
    use std::os::fd::AsFd as _;
    use torc_agent::runtime::Runtime as _;
    use torc_net::{IfName, Netlink, netns};
    if !netns::can_create().unwrap_or(false) {
        println!("skipped: needs CAP_NET_ADMIN");
        return;
    }
    let rt = current_thread_runtime();
    let _guard = rt.enter();
    let node = netns::create_anonymous("the test's node").unwrap();
    let task_ns = netns::create_anonymous("the test's task").unwrap();
    // Both ends are created in the namespaces named: none appears in this one.
    let veth = IfName::new("tkshimtest").unwrap();
    rt.block_on(torc_net::link::add_veth(
        &Netlink::current().unwrap(),
        &veth,
        &node,
        &IfName::new("eth0").unwrap(),
        &task_ns,
    ))
    .unwrap();
    let on_node = netns::connect_in(&node).unwrap();
    let has_veth = || match rt.block_on(torc_net::link::index(&on_node, &veth)) {
        Ok(_) => true,
        Err(torc_net::Error::NoSuchLink { .. }) => false,
        Err(e) => panic!("{e}"),
    };

    let dir = tempfile::tempdir().unwrap();
    let (runtime, handle, _child) = start_task(
        &rt,
        dir.path(),
        "inside.000001",
        "readlink /proc/self/ns/net > ns.tmp && mv ns.tmp ns; exec sleep 300",
        Some(task_ns.as_fd()),
    );
    let expected = format!("net:[{}]", task_ns.id().unwrap().1);
    // From here the shim alone holds the task's namespace.
    drop(task_ns);
    let seen = dir.path().join("sandboxes/inside.000001/ns");
    wait_until("the task to say where it runs", || seen.exists());
    assert_eq!(std::fs::read_to_string(&seen).unwrap().trim(), expected);
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/ns/net", handle.pid))
            .unwrap()
            .display()
            .to_string(),
        expected,
        "the shim itself runs in the task's namespace"
    );
    assert!(has_veth(), "the veth lives while the shim does");

    runtime.kill_now(&handle);
    wait_until("the shim to be gone", || gone(handle.pid as i32));
    wait_until("the task's namespace, and its veth, to go", || !has_veth());
}

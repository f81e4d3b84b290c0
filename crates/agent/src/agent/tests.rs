//! The agent's own tests: crashes around a start, the table that cannot be saved, shutdown.

use super::*;
use torc_api::order::Stamp;
use torc_types::TaskSpec;

fn agent(dir: &std::path::Path) -> Arc<Agent> {
    agent_with(dir, dir.join("no-such-torc"))
}

pub(super) fn agent_with(dir: &std::path::Path, exe: PathBuf) -> Arc<Agent> {
    Agent::open(agent_config(dir, exe)).unwrap()
}

/// A test node's configuration: no controller, no containers.
pub(super) fn agent_config(dir: &std::path::Path, exe: PathBuf) -> AgentConfig {
    AgentConfig {
        node: "n1".parse().unwrap(),
        ip: "127.0.0.1".parse().unwrap(),
        // Nothing listens there; these tests never reach the controller.
        controller: "http://127.0.0.1:9".into(),
        join_token: None,
        ca: None,
        task_ids: None,
        data_dir: dir.to_path_buf(),
        node_type: None,
        node_function: None,
        resources: Resources::new(1.0, 64.0, 0.0),
        port_range: PortRange {
            first: 31000,
            last: 31010,
        },
        attributes: BTreeMap::new(),
        kill_tasks_on_exit: true,
        exe,
        metrics_interval: Duration::from_secs(1),
        containerd: None,
    }
}

/// Makes `agent` stop right after its next shim spawn, as an agent killed at that moment.
pub(super) fn crash_after_spawn(agent: &Agent) {
    agent
        .crash_after_spawn
        .store(true, std::sync::atomic::Ordering::SeqCst);
}

fn doc(generation: u64) -> DesiredState {
    DesiredState {
        epoch: 1,
        generation,
        tasks: vec![task(&format!("late.{generation:06x}"))],
    }
}

/// A task to launch, named after its id's first part.
fn task(id: &str) -> DesiredTask {
    let id = TaskId::new(id).unwrap();
    DesiredTask {
        files: Default::default(),
        resolver: None,
        registry: None,
        pull_timeout_seconds: None,
        spec: TaskSpec::new(
            id.as_str().split('.').next().unwrap().parse().unwrap(),
            "sleep",
        ),
        id,
        ports: Vec::new(),
        launch: true,
        rack_address: None,
    }
}

fn numbered(epoch: u64, generation: u64, tasks: Vec<DesiredTask>) -> DesiredState {
    DesiredState {
        epoch,
        generation,
        tasks,
    }
}

/// An agent on `dir` whose tasks run as a fake shim, as registered with a leader of `epoch`.
fn registered_at(dir: &std::path::Path, epoch: u64) -> (FakeShim, Arc<Agent>) {
    let shim = FakeShim::new(dir);
    let a = agent_with(dir, shim.exe.clone());
    a.lock().desired = Floor::registered(epoch);
    (shim, a)
}

/// A deposed leader's late answer (a lower epoch than the agent's registration) stops
/// nothing and starts nothing, even when its generation is higher; the leader's next document
/// is applied.
#[tokio::test]
async fn a_lower_epochs_document_stops_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (shim, a) = registered_at(dir.path(), 9);
    let web = task("web.000000000001");
    a.apply(numbered(9, 3, vec![web.clone()])).await;
    let pid = shim.starts(&web.id, 1)[0];

    // The old leader's view: the task is gone, another is wanted.
    a.apply(numbered(7, 80, vec![task("db.000000000002")]))
        .await;
    {
        let table = a.lock();
        let running = &table.tasks[&web.id];
        assert_eq!(running.state, TaskState::Running, "{running:?}");
        assert!(!running.kill_requested, "not asked to stop");
        assert_eq!(running.handle.as_ref().map(|h| h.pid), Some(pid));
        assert_eq!(
            table.tasks.len(),
            1,
            "nothing started: {:?}",
            table.tasks.keys()
        );
        assert_eq!(
            table.desired.position(),
            Stamp {
                epoch: 9,
                generation: 3
            }
        );
    }
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok(),
        "the shim still runs"
    );

    // The leader it follows says so: then it stops.
    a.apply(numbered(9, 4, vec![])).await;
    assert!(a.lock().tasks[&web.id].kill_requested);
}

/// A new leader's first document (a higher epoch, the agent moved there without registering)
/// is applied at once, although its generation is lower than the one applied; after it the
/// old leader's documents are ignored.
#[tokio::test]
async fn a_higher_epochs_document_is_applied_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (shim, a) = registered_at(dir.path(), 9);
    let web = task("web.000000000001");
    a.apply(numbered(9, 40, vec![web.clone()])).await;
    let db = task("db.000000000002");
    a.apply(numbered(11, 2, vec![web.clone(), db.clone()]))
        .await;
    shim.starts(&db.id, 1);
    assert_eq!(
        a.lock().desired.position(),
        Stamp {
            epoch: 11,
            generation: 2
        }
    );

    a.apply(numbered(9, 41, vec![])).await;
    let table = a.lock();
    assert!(
        table.tasks.values().all(|t| !t.kill_requested),
        "{:?}",
        table.tasks
    );
}

/// A desired state that arrives once shutdown began starts nothing (`torc up`'s Ctrl-C
/// once left a just-launched task running after the agent had stopped them all).
#[tokio::test]
async fn no_task_starts_once_shutdown_began() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    a.apply(doc(1)).await;
    assert_eq!(a.lock().tasks.len(), 1, "before shutdown the task is taken");
    a.shutting_down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    a.apply(doc(2)).await;
    assert_eq!(a.lock().tasks.len(), 1, "after it, nothing new");
}

/// An exit record that says the kernel killed the task at its memory limit settles it
/// failed, saying so with the limit; a stop asked for still settles it killed.
#[test]
fn an_out_of_memory_end_is_a_failure_that_says_so() {
    let mut task = LocalTask::new(&doc(1).tasks[0], 0);
    task.spec.resources.mem_mb = 64.0;
    let oom = ExitRecord {
        exit_code: 137,
        signal: Some(9),
        stopped: false,
        spawn_error: None,
        oom: true,
    };
    settle(&mut task, Some(oom.clone()));
    assert_eq!(task.state, TaskState::Failed);
    assert_eq!(task.exit_code, Some(137));
    assert_eq!(
        task.message.as_deref(),
        Some("out of memory: killed by the kernel at its memory limit (64 MiB)")
    );

    task.kill_requested = true;
    settle(&mut task, Some(oom));
    assert_eq!(task.state, TaskState::Killed);
}

/// A stand-in for `torc shim` that records each start (its pid, in the sandbox) and then
/// runs as long as a task would; the guard kills every one it started.
pub(super) struct FakeShim {
    pub(super) exe: PathBuf,
    sandboxes: PathBuf,
}

impl FakeShim {
    fn new(dir: &std::path::Path) -> FakeShim {
        FakeShim::with_script(dir, "exec sleep 300")
    }

    /// One that becomes the task: it execs the command after `--` (without the real
    /// shim's exit record, process group and subreaper).
    pub(super) fn exec(dir: &std::path::Path) -> FakeShim {
        FakeShim::with_script(
            dir,
            "while [ \"$1\" != -- ]; do shift; done\nshift\nexec \"$@\"",
        )
    }

    fn with_script(dir: &std::path::Path, then: &str) -> FakeShim {
        use std::os::unix::fs::PermissionsExt as _;
        let exe = dir.join("fake-torc");
        std::fs::write(&exe, format!("#!/bin/sh\necho $$ >> starts\n{then}\n")).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        FakeShim {
            exe,
            sandboxes: dir.join("sandboxes"),
        }
    }

    /// The pids that started in the sandbox of `id`, once there are `n`.
    pub(super) fn starts(&self, id: &TaskId, n: usize) -> Vec<u32> {
        let file = self.sandboxes.join(id.as_str()).join("starts");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let pids: Vec<u32> = std::fs::read_to_string(&file)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
                .collect();
            if pids.len() >= n {
                return pids;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {n} starts of {id}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FakeShim {
    fn drop(&mut self) {
        for sandbox in std::fs::read_dir(&self.sandboxes).into_iter().flatten() {
            let starts = sandbox.unwrap().path().join("starts");
            for pid in std::fs::read_to_string(starts).unwrap_or_default().lines() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// The task table is replaced durably (issue 19, bug 3: its rename was not followed by a
/// directory fsync, so after a power loss the agent could read an older table and start a task
/// again): the new table synced before the rename, the directory after it, as a real strace
/// sees the agent's system calls.
#[test]
fn the_task_table_is_synced_before_and_after_its_rename() {
    if !torc_test_utils::syscalls::strace_or_skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let table = a.lock();
    let (saved, trace) = torc_test_utils::syscalls::trace(|| a.persist(&table)).unwrap();
    saved.unwrap();
    torc_test_utils::syscalls::assert_durable_replace(&trace, &dir.path().join("tasks.json"));
}

/// A task table that cannot be saved starts nothing: a task the agent cannot remember
/// could be started again by the next agent while it runs. It is reported failed instead.
#[tokio::test]
async fn no_task_starts_while_the_table_cannot_be_saved() {
    let dir = tempfile::tempdir().unwrap();
    let shim = FakeShim::new(dir.path());
    let a = agent_with(dir.path(), shim.exe.clone());
    // A directory where the table goes: every save fails (also for root).
    std::fs::create_dir(dir.path().join("tasks.json")).unwrap();
    a.apply(doc(1)).await;
    let task = a.lock().tasks.values().next().cloned().unwrap();
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    let why = task.message.unwrap_or_default();
    assert!(why.contains("cannot save its task table"), "{why}");
    assert!(task.handle.is_none(), "no shim was started");
    assert!(
        !shim
            .sandboxes
            .join(task.id.as_str())
            .join("starts")
            .exists()
    );
}

/// An agent on `dir` that starts the task of `doc(1)` and dies right after its shim's
/// spawn; answers the document, the task's id and the shim's pid.
async fn crash_after_starting(
    dir: &std::path::Path,
    shim: &FakeShim,
) -> (DesiredState, TaskId, u32) {
    let first = agent_with(dir, shim.exe.clone());
    crash_after_spawn(&first);
    let doc = doc(1);
    let id = doc.tasks[0].id.clone();
    first.apply(doc.clone()).await;
    (doc, id.clone(), shim.starts(&id, 1)[0])
}

/// A next agent on `dir` after one died right after starting task `id`'s shim `pid`: it
/// adopts the running shim and never starts the task again, although the controller still
/// asks for its launch (`doc`). Answers the agent and the task.
pub(super) async fn adopts_after_crash(
    dir: &std::path::Path,
    exe: PathBuf,
    doc: DesiredState,
    id: &TaskId,
    pid: u32,
) -> (Arc<Agent>, LocalTask) {
    let second = agent_with(dir, exe);
    second.adopt().await;
    second.apply(doc).await;
    let task = second.lock().tasks[id].clone();
    assert_eq!(task.state, TaskState::Running, "{task:?}");
    assert_eq!(
        task.handle.as_ref().map(|h| h.pid),
        Some(pid),
        "the first shim is adopted, no second one started"
    );
    (second, task)
}

/// An agent that dies right after starting a task's shim, before it saved the task's
/// handle: the next agent adopts the running shim and never starts the task again,
/// although the controller still asks for its launch.
#[tokio::test]
async fn a_task_started_just_before_a_crash_is_adopted_not_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let shim = FakeShim::new(dir.path());
    let (doc, id, pid) = crash_after_starting(dir.path(), &shim).await;
    adopts_after_crash(dir.path(), shim.exe.clone(), doc, &id, pid).await;
}

/// An agent that died around a spawn, whose shim no longer runs and left no exit record:
/// the next agent reports the task lost, saying why, and starts nothing.
#[tokio::test]
async fn a_starting_task_without_a_shim_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let shim = FakeShim::new(dir.path());
    let (doc, id, pid) = crash_after_starting(dir.path(), &shim).await;
    // The shim dies (no exit record: a fake one writes none).
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        .is_ok_and(|s| s == nix::sys::wait::WaitStatus::StillAlive)
    {
        assert!(std::time::Instant::now() < deadline, "the shim did not die");
        std::thread::sleep(Duration::from_millis(5));
    }

    let second = agent_with(dir.path(), shim.exe.clone());
    second.adopt().await;
    second.apply(doc).await;
    let task = second.lock().tasks[&id].clone();
    assert_eq!(task.state, TaskState::Lost, "{task:?}");
    let why = task.message.unwrap_or_default();
    assert!(why.contains("stopped while starting the task"), "{why}");
    assert_eq!(shim.starts(&id, 1).len(), 1, "not started again");
}

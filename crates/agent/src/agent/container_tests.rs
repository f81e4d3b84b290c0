//! Container tasks against a real containerd 1.6 and runc: the agent's own code (its `apply`,
//! `adopt`, the `ContainerRuntime`) with a private containerd started by the test
//! (`torc_test_utils::Containerd`) and the busybox test image made from Debian's
//! busybox-static. As root only (CI runs as root); elsewhere each prints `skipped: needs
//! root` and passes.

use std::time::Instant;

use torc_api::{DesiredState, DesiredTask};
use torc_test_utils::{Containerd, Registry, TEST_IMAGE_NAME, TestImage};
use torc_types::{ContainerSpec, ImageRef, TaskSpec, Volume};

use super::*;
use crate::container::{ContainerdConfig, EngineState};
use crate::runtime::process_start_time;

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("skipped: needs root");
    }
    root
}

fn test_image() -> TestImage {
    let tmp = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    TestImage::get(&tmp).unwrap()
}

/// An agent whose container engine is a private containerd with the test image imported.
/// Dropped in this order: the agent, containerd (swept: nothing of a test outlives it), the
/// agent's directory.
struct Fixture {
    agent: Arc<Agent>,
    ctd: Containerd,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start() -> Fixture {
        let ctd = Containerd::start().await.unwrap();
        let file = std::fs::File::open(test_image().oci_archive).unwrap();
        torc_containerd::images::import(&ctd.client, file, torc_containerd::OVERLAYFS)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let agent = Fixture::open(dir.path(), &ctd).await;
        Fixture { agent, ctd, dir }
    }

    /// An agent on `dir` (a second one after a "crash" of the first) with `ctd` as its engine.
    async fn open(dir: &Path, ctd: &Containerd) -> Arc<Agent> {
        let agent = tests::agent_config(dir, dir.join("no-such-torc"));
        let agent = Agent::open(AgentConfig {
            containerd: Some(ContainerdConfig {
                socket: ctd.layout.socket(),
                namespace: ctd.namespace.to_string(),
            }),
            ..agent
        })
        .unwrap();
        let state = agent.runtime.containers.as_ref().unwrap().check().await;
        assert!(matches!(state, EngineState::Ready(_)), "{state:?}");
        let info = agent.runtime_info();
        assert!(info.containers, "{info:?}");
        assert!(
            info.containers_note
                .as_deref()
                .is_some_and(|n| n.starts_with("containerd 1.")),
            "{info:?}"
        );
        agent
    }

    fn task(&self, id: &TaskId) -> LocalTask {
        self.agent.lock().tasks[id].clone()
    }

    /// Waits (up to 30 s) until task `id` is in a state `done` accepts.
    async fn wait(&self, id: &TaskId, done: impl Fn(&LocalTask) -> bool) -> LocalTask {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let task = self.task(id);
            if done(&task) {
                return task;
            }
            assert!(Instant::now() < deadline, "still {task:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn sandbox_file(&self, id: &TaskId, name: &str) -> String {
        std::fs::read_to_string(
            self.dir
                .path()
                .join("sandboxes")
                .join(id.as_str())
                .join(name),
        )
        .unwrap_or_default()
    }

    /// Nothing of container `id` is left in containerd.
    async fn assert_gone(&self, id: &TaskId) {
        let cid = torc_containerd::ContainerId::new(id.as_str()).unwrap();
        let c = &self.ctd.client;
        assert!(
            c.task(&cid).await.unwrap().is_none(),
            "{id}: a task is left"
        );
        assert!(
            c.container(&cid).await.unwrap().is_none(),
            "{id}: a container is left"
        );
        assert!(
            c.snapshot(torc_containerd::OVERLAYFS, id.as_str())
                .await
                .unwrap()
                .is_none(),
            "{id}: a snapshot is left"
        );
    }

    /// Desires no task (document `generation`): task `id` ends `killed` and leaves nothing.
    async fn kill_all(&self, generation: u64, id: &TaskId) {
        self.agent.apply(doc(generation, vec![])).await;
        let task = self.wait(id, ended).await;
        assert_eq!(task.state, TaskState::Killed, "{task:?}");
        self.assert_gone(id).await;
    }

    async fn finish(self) {
        let Fixture {
            agent,
            mut ctd,
            dir,
        } = self;
        drop(agent);
        let swept = ctd.daemon.take().unwrap().sweep().await.unwrap();
        assert_eq!(
            (swept.killed, swept.removed),
            (0, 0),
            "containers left: {swept:?}"
        );
        drop(dir);
    }
}

fn container_task(id: &str, image: &str, args: &[&str]) -> DesiredTask {
    let mut spec = TaskSpec::new("box".parse().unwrap(), "");
    spec.args = args.iter().map(|a| a.to_string()).collect();
    spec.kill_grace_ms = 300;
    spec.container = Some(ContainerSpec::new(ImageRef::parse(image).unwrap()));
    DesiredTask {
        id: TaskId::new(id).unwrap(),
        spec,
        ports: Vec::new(),
        launch: true,
        rack_address: None,
        resolver: None,
        files: Default::default(),
        registry: None,
        pull_timeout_seconds: None,
    }
}

fn doc(generation: u64, tasks: Vec<DesiredTask>) -> DesiredState {
    DesiredState {
        epoch: 1,
        generation,
        tasks,
    }
}

fn ended(t: &LocalTask) -> bool {
    t.state.is_terminal()
}

fn running(t: &LocalTask) -> bool {
    t.state == TaskState::Running
}

/// A container runs its command; its stdout and stderr land in the sandbox, its exit code is
/// the task's; once it ended nothing of it is left in containerd (task, container, snapshot).
#[tokio::test]
async fn a_container_runs_with_its_output_in_the_sandbox_and_leaves_nothing() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let d = container_task(
        "echo.000001",
        TEST_IMAGE_NAME,
        &[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; echo $TORC_TASK_ID; exit 3",
        ],
    );
    let id = d.id.clone();
    let started = Instant::now();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    println!("ran and ended in {} ms", started.elapsed().as_millis());
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert_eq!(task.exit_code, Some(3));
    assert_eq!(task.message.as_deref(), Some("exited with code 3"));
    assert_eq!(f.sandbox_file(&id, "stdout"), "to-stdout\necho.000001\n");
    assert_eq!(f.sandbox_file(&id, "stderr"), "to-stderr\n");
    let handle = task.handle.expect("a handle");
    assert_eq!(
        handle.container.as_ref().map(|c| c.id.as_str()),
        Some("echo.000001"),
        "the container's id is the task's"
    );
    f.assert_gone(&id).await;
    f.finish().await;
}

/// `mem: 64` is enforced by runc's cgroup: a hog is killed by the kernel and the task says
/// "out of memory" (read from the cgroup's counter before it goes).
#[tokio::test]
async fn a_memory_hog_is_killed_and_reported_out_of_memory() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let mut d = container_task(
        "hog.000001",
        TEST_IMAGE_NAME,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
    );
    d.spec.resources.mem_mb = 64.0;
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert_eq!(task.exit_code, Some(137));
    assert_eq!(
        task.message.as_deref(),
        Some("out of memory: killed by the kernel at its memory limit (64 MiB)")
    );
    f.assert_gone(&id).await;
    f.finish().await;
}

/// `cpus: 0.5` is a CFS quota: a busy loop gets at most half a core, and the cgroup shows it
/// was throttled (the quota, not the machine's load, held it back).
#[tokio::test]
async fn a_cpu_quota_holds_a_busy_loop_to_half_a_core() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let mut d = container_task(
        "spin.000001",
        TEST_IMAGE_NAME,
        &["sh", "-c", "while :; do :; done"],
    );
    d.spec.resources.cpus = 0.5;
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, running).await;
    let cgroup = task
        .handle
        .as_ref()
        .unwrap()
        .container
        .as_ref()
        .unwrap()
        .cgroup
        .clone();
    let h = crate::container::Hierarchies::detect();
    let ticks = |h: &crate::container::Hierarchies| {
        let (u, s) = h.cpu_ticks(&cgroup, 100.0).expect("the cgroup's cpu time");
        u + s
    };
    let (before, at) = (ticks(&h), Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, secs) = (ticks(&h), at.elapsed().as_secs_f64());
    let cores = (after - before) as f64 / 100.0 / secs;
    let (periods, throttled) = h.throttling(&cgroup).expect("cpu.stat");
    println!(
        "{cores:.3} of a core over {secs:.1} s; throttled in {throttled} of {periods} periods"
    );
    assert!(cores <= 0.6, "{cores:.3} of a core with cpus: 0.5");
    assert!(throttled > 0, "never throttled: the quota did not bite");
    // The agent's metrics read the same cgroup: the task's cpu and memory, and its processes.
    let probe = crate::metrics::TaskProbe {
        id: id.clone(),
        name: task.spec.name.clone(),
        metered: true,
        probe: f.agent.runtime.probe(task.handle.as_ref().unwrap()),
    };
    let metrics = {
        let mut sampler = f.agent.metrics.lock().unwrap();
        sampler.sample(std::slice::from_ref(&probe), &[]);
        std::thread::sleep(Duration::from_millis(500));
        sampler.sample(std::slice::from_ref(&probe), &[]).unwrap()
    };
    let m = metrics
        .tasks
        .iter()
        .find(|t| t.id == id)
        .expect("the task's metrics");
    println!("metrics: {m:?}");
    let busy = m.cpu_user_percent + m.cpu_system_percent;
    assert!(busy > 20.0 && busy < 65.0, "{m:?}");
    assert!(m.memory_bytes > 0 && m.processes >= 1, "{m:?}");
    f.kill_all(2, &id).await;
    f.finish().await;
}

/// A kill sends SIGTERM, which a shell as pid 1 ignores, then after the grace period SIGKILL
/// to every process of the container: the task is `killed`.
#[tokio::test]
async fn a_kill_ends_a_container_whose_init_ignores_sigterm() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let d = container_task(
        "sleepy.000001",
        TEST_IMAGE_NAME,
        &["sh", "-c", "sleep 3600 & wait"],
    );
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    f.wait(&id, running).await;
    let asked = Instant::now();
    f.kill_all(2, &id).await;
    println!("killed {} ms after the kill", asked.elapsed().as_millis());
    f.finish().await;
}

/// An agent that dies (here: dropped without stopping its tasks) leaves its container running;
/// the next one adopts it with the same pid and never starts it again, and can kill it.
#[tokio::test]
async fn an_agent_restart_adopts_the_running_container() {
    if !root() {
        return;
    }
    let mut f = Fixture::start().await;
    let d = container_task("kept.000001", TEST_IMAGE_NAME, &["sleep", "3600"]);
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d.clone()])).await;
    let first = f.wait(&id, running).await.handle.unwrap();
    let start_time = process_start_time(first.pid);

    let second = Fixture::open(f.dir.path(), &f.ctd).await;
    f.agent = second;
    f.agent.adopt().await;
    // The controller still lists it (launch: false once it runs).
    f.agent
        .apply(doc(2, vec![DesiredTask { launch: false, ..d }]))
        .await;
    let task = f.task(&id);
    assert_eq!(task.state, TaskState::Running, "{task:?}");
    let handle = task.handle.unwrap();
    assert_eq!(
        handle.pid, first.pid,
        "the same container, not a second one"
    );
    assert_eq!(process_start_time(handle.pid), start_time);
    let cid = torc_containerd::ContainerId::new(id.as_str()).unwrap();
    let info = f.ctd.client.task(&cid).await.unwrap().unwrap();
    assert_eq!(info.pid, first.pid);

    f.kill_all(3, &id).await;
    f.finish().await;
}

/// `$DATA_DIR` outlives a task: a file one instance writes through a volume is read by the
/// next instance of the service; a read-only volume refuses writes.
#[tokio::test]
async fn data_dir_volumes_outlive_instances() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let with_volumes = |id: &str, script: &str| {
        let mut d = container_task(id, TEST_IMAGE_NAME, &["sh", "-c", script]);
        let c = d.spec.container.as_mut().unwrap();
        c.volumes = vec![
            Volume::parse_docker("$DATA_DIR:/data").unwrap(),
            Volume::parse_docker("$DATA_DIR:/frozen:ro").unwrap(),
        ];
        d
    };
    let first = with_volumes("box.000001", "echo $TORC_TASK_ID > /data/who");
    let id1 = first.id.clone();
    f.agent.apply(doc(1, vec![first])).await;
    assert_eq!(f.wait(&id1, ended).await.state, TaskState::Finished);
    let second = with_volumes(
        "box.000002",
        "cat /data/who; echo x > /frozen/y || echo refused",
    );
    let id2 = second.id.clone();
    f.agent.apply(doc(2, vec![second])).await;
    assert_eq!(f.wait(&id2, ended).await.state, TaskState::Finished);
    assert_eq!(f.sandbox_file(&id2, "stdout"), "box.000001\nrefused\n");
    assert!(
        f.sandbox_file(&id2, "stderr")
            .contains("Read-only file system"),
        "{}",
        f.sandbox_file(&id2, "stderr")
    );
    f.finish().await;
}

/// An image the node lacks is pulled first, from a loopback registry, with the pull's words
/// in the task's message while it stages; an image no registry has fails the task naming it.
#[tokio::test]
async fn a_missing_image_is_pulled_and_a_missing_registry_fails_the_task() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let registry = Registry::start().await.unwrap();
    let name = format!("{}/torc/pulled:1", registry.host);
    test_image().push(&registry, "torc/pulled:1").unwrap();
    let d = container_task("pulled.000001", &name, &["echo", "pulled"]);
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(f.sandbox_file(&id, "stdout"), "pulled\n");
    assert!(
        torc_containerd::images::get(&f.ctd.client, &name)
            .await
            .unwrap()
            .is_some(),
        "the pulled image stays on the node"
    );

    // What a pull tells its task as it goes (the task's message while it stages): the start,
    // the bytes, the unpack.
    let other = format!("{}/torc/progress:1", registry.host);
    test_image().push(&registry, "torc/progress:1").unwrap();
    let heard = std::sync::Mutex::new(Vec::new());
    let record = |s: crate::container::PullStatus| heard.lock().unwrap().push(s);
    let c = f.agent.runtime.containers.as_ref().unwrap();
    c.ensure_image(&ImageRef::parse(&other).unwrap(), None, None, &record)
        .await
        .unwrap()
        .1
        .expect("pulled, not found on the node");
    let heard = heard.into_inner().unwrap();
    let messages: Vec<&str> = heard.iter().map(|s| s.message.as_str()).collect();
    println!("{messages:#?}");
    assert_eq!(messages.first(), Some(&format!("pulling {other}").as_str()));
    assert!(
        messages.iter().any(|m| m.contains(" MB of ")),
        "{messages:?}"
    );
    assert_eq!(
        messages.last(),
        Some(&format!("pulling {other}: unpacking").as_str())
    );
    let last_bytes = heard.iter().rev().find(|s| s.total > 0).unwrap();
    assert_eq!(last_bytes.fetched, last_bytes.total, "{last_bytes:?}");
    // A second time, the node has it: no pull.
    assert!(
        c.ensure_image(&ImageRef::parse(&other).unwrap(), None, None, &|_| {})
            .await
            .unwrap()
            .1
            .is_none()
    );

    let d = container_task("nowhere.000001", "127.0.0.1:1/torc/nope:1", &["true"]);
    let id = d.id.clone();
    f.agent.apply(doc(2, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    let message = task.message.unwrap_or_default();
    assert!(message.contains("127.0.0.1:1/torc/nope:1"), "{message}");
    f.assert_gone(&id).await;
    f.finish().await;
}

/// A node whose agent has containers turned off says so, and a container task sent to it
/// fails with that reason (the scheduler does not send one: this is the agent's own guard).
#[tokio::test]
async fn an_agent_without_containers_says_why_and_refuses_container_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let agent = tests::agent_with(dir.path(), dir.path().join("no-such-torc"));
    let info = agent.runtime_info();
    assert!(!info.containers);
    assert_eq!(
        info.containers_note.as_deref(),
        Some("turned off (--containerd off)")
    );
    let d = container_task("refused.000001", TEST_IMAGE_NAME, &["true"]);
    let id = d.id.clone();
    agent.apply(doc(1, vec![d])).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let task = loop {
        let task = agent.lock().tasks[&id].clone();
        if task.state.is_terminal() || Instant::now() > deadline {
            break task;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert_eq!(
        task.message.as_deref(),
        Some("containers: unavailable: turned off (--containerd off)")
    );
}

/// A user name is looked up in the image's own `/etc/passwd` (through a read-only view of
/// its layers, unmounted at once); a name the image lacks fails the task saying so, and a
/// number needs no lookup.
#[tokio::test]
async fn user_names_are_looked_up_in_the_image() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let mut d = container_task("named.000001", TEST_IMAGE_NAME, &["true"]);
    d.spec.container.as_mut().unwrap().options.user = Some("www".into());
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert_eq!(
        task.message.as_deref(),
        Some("user www: not in the image's /etc/passwd")
    );
    f.assert_gone(&id).await;
    let views = torc_containerd::images::snapshots(&f.ctd.client)
        .await
        .unwrap();
    assert!(
        !views.iter().any(|s| s.contains("-users")),
        "the lookup's view is left: {views:?}"
    );

    // The test image has no `id`: the shell reads its own status.
    let mut d = container_task(
        "numbered.000001",
        TEST_IMAGE_NAME,
        &[
            "sh",
            "-c",
            "while read k v rest; do [ $k = Uid: ] && echo $v; done < /proc/self/status; \
             echo mine > /torc/data/f && cat /torc/data/f",
        ],
    );
    d.spec.container.as_mut().unwrap().options.user = Some("1234:1234".into());
    let id = d.id.clone();
    f.agent.apply(doc(2, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(
        task.state,
        TaskState::Finished,
        "{task:?} {}",
        f.sandbox_file(&id, "stderr")
    );
    // Its `$DATA_DIR` is its user's to write.
    assert_eq!(f.sandbox_file(&id, "stdout"), "1234\nmine\n");
    f.finish().await;
}

/// On a node in a network namespace of its own (as under `torc up`, with containerd in the
/// host's): a container on the node's network shares the node's namespace, not the host's
/// (containerd's); one on the rack network gets its own address in the task's namespace,
/// handed to runc by descriptor path, and the rack's resolver.
#[test]
fn containers_join_the_nodes_namespace_or_their_own_on_the_rack() {
    if !root() || !torc_net::netns::can_create().unwrap_or(false) {
        println!("skipped: needs root and network namespaces");
        return;
    }
    let outer = tokio::runtime::Runtime::new().unwrap();
    let mut ctd = outer.block_on(Containerd::start()).unwrap();
    let file = std::fs::File::open(test_image().oci_archive).unwrap();
    outer
        .block_on(torc_containerd::images::import(
            &ctd.client,
            file,
            torc_containerd::OVERLAYFS,
        ))
        .unwrap();
    let (socket, namespace) = (ctd.layout.socket(), ctd.namespace.to_string());
    let outcome = super::rack_tests::in_a_new_netns(move || async move {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::open(AgentConfig {
            containerd: Some(ContainerdConfig { socket, namespace }),
            ..tests::agent_config(dir.path(), dir.path().join("no-such-torc"))
        })
        .unwrap();
        let c = agent.runtime.containers.as_ref().unwrap();
        assert!(matches!(c.check().await, EngineState::Ready(_)));
        let show = "cat /etc/resolv.conf /proc/net/fib_trie; sleep 3600";
        let host = container_task("host.000001", TEST_IMAGE_NAME, &["sh", "-c", show]);
        let mut rack = super::rack_tests::rack_task("rack.000001", "198.19.1.9", "198.19.1.0/24");
        rack.spec.command = String::new();
        rack.spec.args = vec!["sh".into(), "-c".into(), show.into()];
        rack.spec.container = host.spec.container.clone();
        rack.spec.kill_grace_ms = 300;
        agent.apply(doc(1, vec![host, rack])).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        let out = |id: &str| {
            std::fs::read_to_string(dir.path().join("sandboxes").join(id).join("stdout"))
                .unwrap_or_default()
        };
        let handle = |id: &str| {
            agent.lock().tasks[&TaskId::new(id).unwrap()]
                .handle
                .as_ref()
                .map(|h| h.pid)
        };
        // A container may print before its start returns and the agent records its handle.
        while !(out("rack.000001").contains("LOCAL")
            && out("host.000001").contains("LOCAL")
            && handle("rack.000001").is_some()
            && handle("host.000001").is_some())
        {
            assert!(Instant::now() < deadline, "{:?}", agent.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pid = |id: &str| handle(id).unwrap();
        let netns = |path: String| {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            (m.dev(), m.ino())
        };
        let node_ns = netns("/proc/thread-self/ns/net".into());
        assert_eq!(
            netns(format!("/proc/{}/ns/net", pid("host.000001"))),
            node_ns
        );
        assert_ne!(
            netns(format!("/proc/{}/ns/net", pid("rack.000001"))),
            node_ns
        );
        // The process (its main thread) stayed in the host's namespace, as containerd did.
        assert_ne!(netns("/proc/self/ns/net".into()), node_ns);
        let rack = out("rack.000001");
        assert!(
            local_addresses(&rack).contains(&"198.19.1.9".to_string()),
            "{rack}"
        );
        assert!(rack.contains("nameserver 198.18.0.20"), "{rack}");
        let host = out("host.000001");
        assert!(
            !local_addresses(&host).contains(&"198.19.1.9".to_string()),
            "{host}"
        );
        agent.apply(doc(2, vec![])).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent.snapshot().iter().any(|t| !t.state.is_terminal()) {
            assert!(Instant::now() < deadline, "{:?}", agent.snapshot());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let swept = outer.block_on(ctd.daemon.take().unwrap().sweep()).unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(
        (swept.killed, swept.removed),
        (0, 0),
        "containers left: {swept:?}"
    );
}

/// The addresses `/proc/net/fib_trie` lists as the namespace's own (`/32 host LOCAL`, on the
/// line after the address).
fn local_addresses(fib_trie: &str) -> Vec<String> {
    let lines: Vec<&str> = fib_trie.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].contains("/32 host LOCAL"))
        .filter_map(|w| w[0].trim().strip_prefix("|-- ").map(str::to_string))
        .collect()
}

/// A pull that takes longer than the rack allows (the controller's
/// `pull_timeout_seconds`) fails the task saying so; here a "registry" accepts connections and
/// never answers.
#[tokio::test]
async fn a_pull_past_its_timeout_fails_the_task() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            open.push(stream);
        }
    });
    let image = format!("127.0.0.1:{port}/torc/slow:1");
    let mut d = container_task("slow.000001", &image, &["true"]);
    d.pull_timeout_seconds = Some(1);
    let id = d.id.clone();
    let started = Instant::now();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    held.abort();
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let message = task.message.unwrap_or_default();
    assert!(
        message.starts_with(&format!("image {image}: the pull timed out after 1 s")),
        "{message}"
    );
    f.assert_gone(&id).await;
    f.finish().await;
}

/// An unprivileged container runs under torc's seccomp filter: a user namespace, which needs no
/// capability, is refused (EPERM); a privileged container is not filtered.
#[tokio::test]
async fn unprivileged_containers_are_seccomp_filtered() {
    if !root() {
        return;
    }
    let f = Fixture::start().await;
    let unshare = ["/bin/busybox", "unshare", "-U", "true"];
    let d = container_task("filtered.000001", TEST_IMAGE_NAME, &unshare);
    let id = d.id.clone();
    f.agent.apply(doc(1, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    let stderr = f.sandbox_file(&id, "stderr");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");

    let mut d = container_task("trusted.000001", TEST_IMAGE_NAME, &unshare);
    d.spec.privileged = true;
    let id = d.id.clone();
    f.agent.apply(doc(2, vec![d])).await;
    let task = f.wait(&id, ended).await;
    assert_eq!(
        task.state,
        TaskState::Finished,
        "{task:?} {}",
        f.sandbox_file(&id, "stderr")
    );
    f.finish().await;
}

//! Containers, measured against containerd's own client (issue 17; `docs/design/containers.md`
//! §10). One `LocalRack` with a private containerd (`RackOptions.containers`), 2 compute
//! nodes, the real `torc` binary; `ctr` (containerd's CLI) is the peer, run against the same
//! containerd in namespaces of its own.
//!
//! 1. *accept → running*: 200 sequential launches (client API, `launch`) of a `sleep 3600`
//!    container of the busybox test image (imported with `import_image`) pinned to
//!    bladerunner1, each killed once running and waited for until it ended before the next;
//!    the same for 200 process tasks (`/bin/sleep 3600`). Per task: the controller's
//!    `running` time (its task history, wall clock in ms) minus when the launch's answer
//!    arrived here (the same wall clock), and its part from the controller's `staging` (sent to
//!    the agent) to `running`. The peer: 200 × `ctr run -d --null-io IMAGE ID sleep
//!    3600` (it returns once the task has started), timed around the command, each then
//!    killed and deleted.
//! 2. *RSS with 100 containers*: 100 running `sleep` containers on bladerunner1; the agent's,
//!    containerd's and the shims' RSS and PSS (`/proc/PID/smaps_rollup`), also per container.
//! 3. *pull of a ~10 MiB image*: busybox plus 10 MiB of random data, pushed to a loopback
//!    `docker-registry`; median of 5 `torc image pull --node bladerunner2` (the CLI, timed
//!    around the command; `torc image rm` between runs, which collects at once, so each is a
//!    real fetch and unpack) against 5 `ctr images pull --plain-http` each into a fresh namespace.
//!
//! Everything is on loopback and in the rack's private containerd (its dir a temp dir); the
//! rack's `Drop` (also on a panic) sweeps every namespace of it, `ctr`'s included (`ctr` runs
//! with the layout's runc root and cgroups under `/torc/<namespace>`, as the sweep expects).
//! Without root it prints `skipped: needs root and containerd` and exits.
//!
//! Run with `cargo bench -p torc --bench containers`. Prints figures; asserts nothing about
//! speed.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use torc_client::Client;
use torc_containerd::Namespace;
use torc_containerd::daemon::cgroup_parent;
use torc_test_utils::bench::{bench_runtime, load_average, percentile, wall_ms};
use torc_test_utils::{
    LocalRack, RackOptions, Registry, TEST_IMAGE_NAME, TestImage, containers_or_skip,
    processes_mentioning, push_padded_image, wait_for,
};
use torc_types::{ContainerSpec, NodeName, Resources, TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");
const LAUNCHES: usize = 200;
/// Each task's cpu (and each `ctr run`'s `--cpus`): `torc run`'s default.
const CPUS: f64 = 0.1;
const RUNNING: usize = 100;
const PULLS: usize = 5;
const PADDING: usize = 10 << 20;
/// The target of design §10 for accept → running of a container, p99.
const TARGET_P99_MS: f64 = 150.0;
/// Bounds every wait for a task's state.
const PATIENCE: Duration = Duration::from_secs(60);
const NODE: &str = "bladerunner1";
const PULL_NODE: &str = "bladerunner2";

fn main() {
    if !containers_or_skip() {
        return;
    }
    bench_runtime().block_on(async {
        println!(
            "containers, release build; load average at the start: {}",
            load_average()
        );
        let target_tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let image = TestImage::get(target_tmp).expect("the busybox test image");
        let rack = LocalRack::start(
            TORC,
            RackOptions {
                compute_nodes: 2,
                containers: true,
                node_resources: (16.0, 16_000.0),
                ..RackOptions::default()
            },
        )
        .await
        .expect("the rack starts");
        let client = rack.client();
        let node: NodeName = NODE.parse().unwrap();
        client
            .import_image(&node, &image.oci_archive, None)
            .await
            .expect("the test image imports");
        let ctr = Ctr::new(&rack, "ctr");
        ctr.ok(&["images", "import", path(&image.docker_archive)]);

        launch_bench(&rack, &ctr).await;
        rss_bench(&rack).await;
        pull_bench(&rack, &image, target_tmp).await;
        ctr.remove_namespace(&[TEST_IMAGE_NAME]);
    });
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Sorts `values`; p50, p90, p99 and max of them.
fn spread(values: &mut [f64]) -> [f64; 4] {
    values.sort_by(|a, b| a.total_cmp(b));
    [0.5, 0.9, 0.99, 1.0].map(|p| percentile(values, p))
}

fn line(what: &str, values: &mut [f64]) -> [f64; 4] {
    if values.is_empty() {
        println!("  {what:<34} no samples");
        return [f64::NAN; 4];
    }
    let s = spread(values);
    println!(
        "  {what:<34} p50 {:6.1}  p90 {:6.1}  p99 {:6.1}  max {:6.1}  (n = {})",
        s[0],
        s[1],
        s[2],
        s[3],
        values.len()
    );
    s
}

/// `ctr` against the rack's containerd, in a namespace of its own (`<rack's>-<suffix>`).
struct Ctr {
    socket: String,
    runc_root: String,
    namespace: String,
}

impl Ctr {
    fn new(rack: &LocalRack, suffix: &str) -> Ctr {
        let containerd = rack.containerd().expect("the rack's containerd");
        Ctr {
            socket: path(&containerd.layout.socket()).to_string(),
            runc_root: path(&containerd.layout.runc_root()).to_string(),
            namespace: format!("{}-{suffix}", containerd.namespace),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("ctr");
        command
            .args(["-a", &self.socket, "-n", &self.namespace])
            .args(args);
        command
    }

    /// Runs `ctr ARGS`: whether it succeeded, and its stderr.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.command(args).output().expect("ctr runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) {
        let (ok, err) = self.run(args);
        assert!(ok, "ctr {}: {err}", args.join(" "));
    }

    /// The cgroup a container of this namespace gets: under the sweep's `/torc/<namespace>`.
    fn cgroup(&self, id: &str) -> String {
        let namespace = Namespace::new(self.namespace.clone()).expect("a namespace name");
        format!("{}/{id}", cgroup_parent(&namespace))
    }

    /// Removes `images` (collecting at once) and the namespace; says so when something stays
    /// (the rack's sweep then removes it).
    fn remove_namespace(&self, images: &[&str]) {
        for image in images {
            let (ok, err) = self.run(&["images", "rm", "--sync", image]);
            if !ok {
                println!("  note: ctr images rm {image}: {}", err.trim());
            }
        }
        let out = Command::new("ctr")
            .args(["-a", &self.socket, "namespaces", "rm", &self.namespace])
            .output()
            .expect("ctr runs");
        if !out.status.success() {
            println!(
                "  note: ctr namespaces rm {}: {}",
                self.namespace,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let cgroup = Path::new("/sys/fs/cgroup").join(self.cgroup("").trim_matches('/'));
        let _ = std::fs::remove_dir(cgroup);
    }
}

// ---------------------------------------------------------------------------------------------
// Part 1: accept → running.

fn sleep_task(name: &str, image: Option<&str>) -> TaskSpec {
    let command = if image.is_some() {
        "sleep"
    } else {
        "/bin/sleep"
    };
    let mut spec = TaskSpec::new(name.parse().unwrap(), command);
    spec.args = vec!["3600".into()];
    // `torc run`'s default cpu, and the same limits on `ctr run` below: a container's cpu is
    // a CFS quota from its first instruction, so a tiny one (0.01 core: 1 ms per 100 ms
    // period) slows runc's init and the start by about a period.
    spec.resources = Resources::new(CPUS, 16.0, 0.0);
    spec.constraints.node_name = Some(NODE.parse().unwrap());
    // A container's pid 1 ignores SIGTERM: do not wait long for it.
    spec.kill_grace_ms = 100;
    spec.container = image.map(|i| ContainerSpec::new(i.parse().expect("an image reference")));
    spec
}

/// When the controller recorded `state` for task `id` (its history, ms; polled by `wait_for`,
/// every 25 ms: the figures come from the history's times, not from when a poll saw them).
async fn recorded(client: &Client, id: &TaskId, state: fn(TaskState) -> bool) -> Option<f64> {
    let found = wait_for("a state in the history", PATIENCE, || async {
        let t = client.task(id).await.ok()?;
        if let Some(h) = t.history.iter().find(|h| state(h.state)) {
            return Some(Some(h.at as f64));
        }
        // Ended some other way (failed): no figure, but no reason to wait.
        if t.state.is_terminal() {
            return Some(None);
        }
        None
    })
    .await;
    found.ok().flatten()
}

/// 200 sequential launches of `spec`, each killed once running and waited for to its end:
/// launch answer → running, and the part of it from `staging` (the agent's share: the
/// controller records `staging` as it sends the task) to `running` (ms).
async fn launches(
    client: &Client,
    spec: &TaskSpec,
    failures: &mut Vec<String>,
) -> (Vec<f64>, Vec<f64>) {
    let (mut out, mut staged) = (Vec::with_capacity(LAUNCHES), Vec::with_capacity(LAUNCHES));
    for _ in 0..LAUNCHES {
        let task = client.launch(spec).await.expect("launch");
        let answered = wall_ms();
        match recorded(client, &task.id, |s| s == TaskState::Running).await {
            Some(running) => {
                out.push(running - answered);
                let history = client.task(&task.id).await.map(|t| t.history);
                let staging = history.ok().and_then(|h| {
                    let at = h.iter().find(|h| h.state == TaskState::Staging)?.at;
                    Some(at as f64)
                });
                if let Some(staging) = staging {
                    staged.push(running - staging);
                }
            }
            None => {
                let t = client.task(&task.id).await.ok();
                failures.push(format!(
                    "{}: never running: {:?} {:?}",
                    task.id,
                    t.as_ref().map(|t| t.state),
                    t.and_then(|t| t.message)
                ));
            }
        }
        client.kill(&task.id).await.expect("kill");
        if recorded(client, &task.id, TaskState::is_terminal)
            .await
            .is_none()
        {
            failures.push(format!("{}: did not end after kill", task.id));
        }
    }
    (out, staged)
}

async fn launch_bench(rack: &LocalRack, ctr: &Ctr) {
    println!(
        "\n1. accept -> running, {LAUNCHES} sequential launches on {NODE} (cpus {CPUS}, 16 MiB), each \
         killed once running (launch answer here -> `running` in the controller's task history, \
         wall clock, ms)"
    );
    let client = rack.client();
    let mut failures = Vec::new();
    let started = Instant::now();
    let (mut containers, mut containers_staged) = launches(
        &client,
        &sleep_task("cbench", Some(TEST_IMAGE_NAME)),
        &mut failures,
    )
    .await;
    let container_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let (mut processes, mut processes_staged) =
        launches(&client, &sleep_task("pbench", None), &mut failures).await;
    let process_secs = started.elapsed().as_secs_f64();

    let mut peer = Vec::with_capacity(LAUNCHES);
    let (cpus, memory) = (CPUS.to_string(), (16u64 << 20).to_string());
    let started = Instant::now();
    for i in 0..LAUNCHES {
        let id = format!("ctr-{i}");
        let cgroup = ctr.cgroup(&id);
        let args = [
            "run",
            "-d",
            "--null-io",
            "--runc-root",
            &ctr.runc_root,
            "--cgroup",
            &cgroup,
            "--cpus",
            &cpus,
            "--memory-limit",
            &memory,
            TEST_IMAGE_NAME,
            &id,
            "sleep",
            "3600",
        ];
        let asked = Instant::now();
        let (ok, err) = ctr.run(&args);
        let took = asked.elapsed().as_secs_f64() * 1000.0;
        if ok {
            peer.push(took);
        } else {
            failures.push(format!("ctr run {id}: {}", err.trim()));
        }
        // `task rm -f` kills (SIGKILL) and deletes; `containers rm` removes the snapshot.
        ctr.run(&["tasks", "rm", "-f", &id]);
        ctr.ok(&["containers", "rm", &id]);
    }
    let peer_secs = started.elapsed().as_secs_f64();

    let c = line("torc, container (sleep 3600)", &mut containers);
    let p = line("torc, process (/bin/sleep 3600)", &mut processes);
    println!(
        "  {:<34} p50 {:6.1}  p90 {:6.1}  p99 {:6.1}  max {:6.1}",
        "container minus process",
        c[0] - p[0],
        c[1] - p[1],
        c[2] - p[2],
        c[3] - p[3]
    );
    line("  container: staging -> running", &mut containers_staged);
    line("  process: staging -> running", &mut processes_staged);
    let r = line("ctr run -d, same limits (its time)", &mut peer);
    println!(
        "  ratio torc/ctr (container): p50 {:.2}  p99 {:.2}",
        c[0] / r[0],
        c[2] / r[2]
    );
    println!(
        "  target p99 <= {TARGET_P99_MS} ms for a container: {} (p99 {:.1} ms)",
        if c[2] <= TARGET_P99_MS {
            "holds"
        } else {
            "MISSED"
        },
        c[2]
    );
    println!(
        "  wall time of each series (launch, running, kill, ended): containers {container_secs:.1} s, \
         processes {process_secs:.1} s, ctr {peer_secs:.1} s"
    );
    for f in &failures {
        println!("  failed: {f}");
    }
    if !failures.is_empty() {
        println!("{}", rack.logs_hint());
    }
}

// ---------------------------------------------------------------------------------------------
// Part 2: memory with 100 containers.

/// `Rss` and `Pss` of a process (kB), from `/proc/PID/smaps_rollup`.
fn memory_kb(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

async fn rss_bench(rack: &LocalRack) {
    println!("\n2. memory with {RUNNING} running `sleep` containers on {NODE} (smaps_rollup)");
    let client = rack.client();
    let containerd = rack.containerd().expect("the rack's containerd");
    let daemon = containerd.daemon.as_ref().expect("containerd runs").pid();
    let agent = rack.agent_pid(NODE).expect("the agent runs");
    let before = (memory_kb(agent), memory_kb(daemon));

    let spec = sleep_task("rss", Some(TEST_IMAGE_NAME));
    let mut ids = Vec::with_capacity(RUNNING);
    let started = Instant::now();
    for _ in 0..RUNNING {
        ids.push(client.launch(&spec).await.expect("launch").id);
    }
    let mut failed = 0;
    for id in &ids {
        if recorded(&client, id, |s| s == TaskState::Running)
            .await
            .is_none()
        {
            failed += 1;
        }
    }
    println!(
        "  {} of {RUNNING} running {:.1} s after the first launch",
        RUNNING - failed,
        started.elapsed().as_secs_f64()
    );
    let shims: Vec<u32> = processes_mentioning(containerd.dir.path())
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("containerd-shim"))
        .map(|(pid, _)| pid)
        .collect();
    let (mut shim_rss, mut shim_pss) = (0, 0);
    for (rss, pss) in shims.iter().filter_map(|&pid| memory_kb(pid)) {
        shim_rss += rss;
        shim_pss += pss;
    }
    let n = (RUNNING - failed).max(1) as f64;
    let show = |what: &str, before: Option<(u64, u64)>, now: Option<(u64, u64)>| match (before, now)
    {
        (Some((b, _)), Some((rss, pss))) => println!(
            "  {what:<12} RSS {:6.1} MiB (idle {:5.1}; {:5.2} MiB per container)  PSS {:6.1} MiB",
            mib(rss),
            mib(b),
            mib(rss.saturating_sub(b)) / n,
            mib(pss)
        ),
        _ => println!("  {what:<12} not readable"),
    };
    show("agent", before.0, memory_kb(agent));
    show("containerd", before.1, memory_kb(daemon));
    println!(
        "  {:<12} {} processes: RSS sum {:6.1} MiB ({:.2} per container)  PSS sum {:6.1} MiB ({:.2} per container)",
        "shims",
        shims.len(),
        mib(shim_rss),
        mib(shim_rss) / n,
        mib(shim_pss),
        mib(shim_pss) / n
    );

    let started = Instant::now();
    for id in &ids {
        client.kill(id).await.expect("kill");
    }
    for id in &ids {
        recorded(&client, id, TaskState::is_terminal).await;
    }
    println!(
        "  all killed and ended {:.1} s after the first kill",
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------------------------
// Part 3: a ~10 MiB pull.

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the CLI against `rack`: its time (ms), and its output when it failed.
fn torc_timed(rack: &LocalRack, args: &[&str]) -> Result<f64, String> {
    let asked = Instant::now();
    let out = Command::new(TORC)
        .args(args)
        .envs(rack.cli_env())
        .output()
        .expect("torc runs");
    let took = asked.elapsed().as_secs_f64() * 1000.0;
    match out.status.success() {
        true => Ok(took),
        false => Err(format!(
            "torc {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

async fn pull_bench(rack: &LocalRack, image: &TestImage, target_tmp: &Path) {
    let registry = Registry::start().await.expect("the registry starts");
    push_padded_image(image, target_tmp, &registry, "torc/padded:1", PADDING)
        .expect("the padded image is pushed");
    let reference = format!("{}/torc/padded:1", registry.host);
    println!(
        "\n3. pull of busybox + {} MiB of random data from a loopback registry ({PULLS} runs each, ms)",
        PADDING >> 20
    );
    let mut failures = Vec::new();
    let mut torc = Vec::new();
    for _ in 0..PULLS {
        match torc_timed(rack, &["image", "pull", &reference, "--node", PULL_NODE]) {
            Ok(ms) => torc.push(ms),
            Err(e) => failures.push(e),
        }
        if let Err(e) = torc_timed(rack, &["image", "rm", &reference, "--node", PULL_NODE]) {
            failures.push(e);
        }
    }
    let mut peer = Vec::new();
    for i in 0..PULLS {
        let ctr = Ctr::new(rack, &format!("pull{i}"));
        let asked = Instant::now();
        let (ok, err) = ctr.run(&["images", "pull", "--plain-http", &reference]);
        let took = asked.elapsed().as_secs_f64() * 1000.0;
        match ok {
            true => peer.push(took),
            false => failures.push(format!("ctr images pull: {}", err.trim())),
        }
        ctr.remove_namespace(&[&reference]);
    }
    let t = median(&mut torc);
    let p = median(&mut peer);
    println!("  torc image pull (the CLI)    median {t:6.1}  all {torc:.0?}");
    println!("  ctr images pull --plain-http median {p:6.1}  all {peer:.0?}");
    println!("  ratio torc/ctr (median): {:.2}", t / p);
    for f in &failures {
        println!("  failed: {f}");
    }
}

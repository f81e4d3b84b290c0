//! Issue 21, a node's disk: a task's output capped and rotated (the rack config's `logs`),
//! `torc logs` and `torc logs -f` across rotations, ended tasks' sandboxes removed after the
//! retention, `torc service purge`, and the data dir's disk warning. Real racks: a controller
//! and an agent as processes, tasks under real shims.

use std::path::{Path, PathBuf};
use std::time::Duration;

use torc_api::TaskView;
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::{Resources, TaskId, TaskSpec, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");
const NODE: &str = "bladerunner1";

async fn rack(extra_yaml: &str) -> LocalRack {
    LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            extra_yaml: extra_yaml.into(),
            ..RackOptions::default()
        },
    )
    .await
    .expect("the rack starts")
}

/// `command args...` as task `name`, pinned to the compute node.
fn task(name: &str, command: &str, args: &[&str]) -> TaskSpec {
    let mut spec = TaskSpec::new(name.parse().unwrap(), command);
    spec.args = args.iter().map(|a| a.to_string()).collect();
    spec.resources = Resources::new(0.1, 32.0, 0.0);
    spec.constraints.node_name = Some(NODE.parse().unwrap());
    spec.kill_grace_ms = 1_000;
    spec
}

async fn ended(rack: &LocalRack, id: &TaskId, within: Duration) -> TaskView {
    let client = rack.client();
    wait_for(&format!("task {id} to end"), within, || {
        let client = client.clone();
        async move {
            let t = client.task(id).await.ok()?;
            t.state.is_terminal().then_some(t)
        }
    })
    .await
    .unwrap()
}

/// A JSON answer of the rack, `None` until there is one (an error answer included).
async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
) -> Option<T> {
    http.get(url).send().await.ok()?.json().await.ok()
}

fn sandboxes(rack: &LocalRack) -> PathBuf {
    rack.dir.path().join("agents").join(NODE).join("sandboxes")
}

/// The files of a sandbox whose name starts with `stream`, with their sizes.
fn stream_files(sandbox: &Path, stream: &str) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(sandbox)
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.starts_with(stream)
                .then(|| (name, e.metadata().unwrap().len()))
        })
        .collect();
    files.sort();
    files
}

/// A task writing 105.9 MB (`seq 1 13000000`) keeps 1 MiB a file, the current one and 2
/// rotated; `torc logs` shows the tail, which spans the rotated file when the current one is
/// shorter, and ends with the last line written.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_writing_100_mb_stays_under_its_cap_and_torc_logs_shows_the_tail() {
    let rack = rack("logs: {max_bytes: 1MiB, files: 2}\n").await;
    let client = rack.client();
    let launched = client
        .launch(&task("chatty", "seq", &["1", "13000000"]))
        .await
        .unwrap();
    let id = launched.id;
    let done = ended(&rack, &id, Duration::from_secs(180)).await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");

    let sandbox = sandboxes(&rack).join(id.as_str());
    let files = stream_files(&sandbox, "stdout");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["stdout", "stdout.1", "stdout.2"], "{files:?}");
    for (name, size) in &files {
        assert!(
            *size <= 1 << 20,
            "{name} is {size} bytes, over the 1 MiB cap"
        );
    }
    let total: u64 = files.iter().map(|(_, s)| s).sum();
    println!("105.9 MB written, {total} bytes kept: {files:?}");

    let (ok, out, err) = rack.torc(TORC, &["logs", id.as_str(), "--tail", "1048576"]);
    assert!(ok, "{err}");
    assert_eq!(out.len(), 1 << 20, "a whole 1 MiB tail");
    let current = files[0].1;
    assert!(
        current < out.len() as u64,
        "the current file ({current} bytes) is shorter than the tail: it spans stdout.1"
    );
    // Every line after the first (cut) one, in order, up to the last one written.
    torc_test_utils::assert_counted_tail(&out, 13_000_000);
}

/// `torc logs -f` started while a task writes keeps following across rotations (4 KiB
/// files: 29 KB into 7 of them), and shows every line once, in order, with no note of output
/// rotated away.
#[tokio::test(flavor = "multi_thread")]
async fn torc_logs_follows_across_rotations_without_losing_or_repeating_lines() {
    // 44 KiB kept: the follower may fall 7 s behind the writer (6 KB/s) on a loaded machine.
    let rack = rack("logs: {max_bytes: 4KiB, files: 10}\n").await;
    let client = rack.client();
    let script = "import time\nfor i in range(1, 3001):\n    print(f'line {i}', flush=True)\n    time.sleep(0.002)\n";
    let launched = client
        .launch(&task("ticker", "/usr/bin/python3", &["-c", script]))
        .await
        .unwrap();
    let id = launched.id;
    // Follow from the first line on, before anything rotated.
    let stdout = sandboxes(&rack).join(id.as_str()).join("stdout");
    wait_for("the task's first line", Duration::from_secs(30), || {
        let stdout = stdout.clone();
        async move {
            std::fs::read_to_string(&stdout)
                .ok()
                .filter(|t| t.starts_with("line 1\n"))
        }
    })
    .await
    .unwrap();
    let follower = std::process::Command::new(TORC)
        .args(["logs", "-f", "--tail", "1000000", id.as_str()])
        .envs(rack.cli_env())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&follower.stdout);
    let err = String::from_utf8_lossy(&follower.stderr);
    assert!(follower.status.success(), "{err}");
    assert!(!err.contains("rotated away"), "{err}");
    let expected: String = (1..=3000).map(|i| format!("line {i}\n")).collect();
    if out != expected {
        let first = out
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(out.lines().count());
        panic!(
            "followed output differs from line {}: {} bytes, {:?} ...; stderr: {err}",
            first + 1,
            out.len(),
            out.lines().skip(first).take(3).collect::<Vec<_>>()
        );
    }
    let rotated = sandboxes(&rack).join(id.as_str()).join("stdout.5");
    assert!(rotated.exists(), "the output was rotated while followed");
}

/// Sandboxes of ended tasks go after the retention (the newest one of a service stays, then
/// goes when older than 3 s); the task stays listed, and `torc logs` says its sandbox was
/// removed.
#[tokio::test(flavor = "multi_thread")]
async fn ended_sandboxes_are_removed_after_the_retention() {
    let rack = rack("logs: {keep_ended_per_service: 1, keep_ended_for_in_seconds: 3}\n").await;
    let client = rack.client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let t = client
            .launch(&task("brief", "sh", &["-c", "echo hello"]))
            .await
            .unwrap();
        let done = ended(&rack, &t.id, Duration::from_secs(30)).await;
        assert_eq!(done.state, TaskState::Finished);
        ids.push(t.id);
    }
    let dir = sandboxes(&rack);
    let left = |dir: PathBuf| async move {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("brief."))
            .collect();
        names.sort();
        names
    };
    let newest = ids[2].to_string();
    let only_newest = wait_for("only the newest sandbox", Duration::from_secs(20), || {
        let (dir, newest) = (dir.clone(), newest.clone());
        async move { (left(dir).await == [newest]).then_some(()) }
    })
    .await;
    if let Err(e) = only_newest {
        panic!(
            "{e}: left {:?}; {}",
            left(dir.clone()).await,
            rack.logs_hint()
        );
    }
    wait_for("no sandbox once 3 s old", Duration::from_secs(20), || {
        let dir = dir.clone();
        async move { left(dir).await.is_empty().then_some(()) }
    })
    .await
    .unwrap();
    let shims = rack.dir.path().join("agents").join(NODE).join("shims");
    for id in &ids {
        assert!(
            !shims.join(format!("{id}.lock")).exists(),
            "{id}'s lock file goes too"
        );
        assert_eq!(client.task(id).await.unwrap().state, TaskState::Finished);
    }
    let (ok, _, err) = rack.torc(TORC, &["logs", ids[0].as_str()]);
    assert!(!ok);
    assert!(err.contains("was removed after its end"), "{err}");
    assert!(
        err.contains("newest 1 ended tasks of each service, for at most 3 s"),
        "{err}"
    );
}

/// A service's data dir stays until `torc service purge`, which refuses a service of the rack
/// config and a node where a task of the service still runs.
#[tokio::test(flavor = "multi_thread")]
async fn purge_removes_the_data_of_a_service_no_longer_in_the_config() {
    let rack = rack(
        "healthcheck:\n  system_services:\n    - {name: keeper, command: sleep, args: ['600'], node_name: bladerunner1, cpu: 0.1, memory: 16}\n",
    )
    .await;
    let client = rack.client();
    let (ok, _, err) = rack.torc(TORC, &["service", "purge", "keeper"]);
    assert!(!ok);
    assert!(
        err.contains("service keeper is in the rack config (healthcheck.system_services)"),
        "{err}"
    );

    let data = rack.dir.path().join("agents").join(NODE).join("data");
    let t = client
        .launch(&task(
            "gone",
            "sh",
            &["-c", "head -c 12345 /dev/zero > \"$TORC_DATA_DIR/state\""],
        ))
        .await
        .unwrap();
    assert_eq!(
        ended(&rack, &t.id, Duration::from_secs(30)).await.state,
        TaskState::Finished
    );
    assert_eq!(
        std::fs::metadata(data.join("gone/state")).unwrap().len(),
        12345
    );

    // While a task of the service runs, the node keeps its data and says why.
    let running = client
        .launch(&task("gone", "sleep", &["600"]))
        .await
        .unwrap();
    wait_for("the sleeper to run", Duration::from_secs(30), || {
        let client = client.clone();
        let id = running.id.clone();
        async move { (client.task(&id).await.ok()?.state == TaskState::Running).then_some(()) }
    })
    .await
    .unwrap();
    let (ok, out, err) = rack.torc(TORC, &["service", "purge", "gone"]);
    assert!(!ok);
    assert!(
        out.contains("kept:") && out.contains("runs on this node"),
        "{out}"
    );
    assert!(
        err.contains("some nodes kept the data of service gone"),
        "{err}"
    );
    assert!(data.join("gone/state").exists());

    client.kill(&running.id).await.unwrap();
    ended(&rack, &running.id, Duration::from_secs(30)).await;
    let (ok, out, err) = rack.torc(TORC, &["service", "purge", "gone"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(NODE) && out.contains("removed (12345 bytes)"),
        "{out}"
    );
    assert!(!data.join("gone").exists());
    // Again: nothing left to remove.
    let (ok, out, _) = rack.torc(TORC, &["service", "purge", "gone"]);
    assert!(ok && out.contains("nothing to remove"), "{out}");
}

/// With a threshold above the free share of the data dir's file system, the node warns: a
/// warning in the event feed, a line in the agent's log, and its metrics say so.
#[tokio::test(flavor = "multi_thread")]
async fn the_agent_warns_when_its_disk_is_below_the_threshold() {
    let probe = tempfile::tempdir().unwrap();
    let s = nix::sys::statvfs::statvfs(probe.path()).unwrap();
    let free = s.blocks_available() as u128 * 100 / (s.blocks() as u128).max(1);
    assert!(
        free < 99,
        "this test needs a file system less than 99% free (it has {free}%)"
    );
    let threshold = free + 1;
    let rack = rack(&format!(
        "logs: {{disk_free_warning_percent: {threshold}}}\n"
    ))
    .await;
    let http = rack.http_admin();
    let url = rack.url();
    let event = wait_for(
        "the disk warning in the event feed",
        Duration::from_secs(30),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let events: Vec<torc_api::RackEvent> =
                    get_json(&http, format!("{url}/api/v1/events")).await?;
                events.into_iter().find(|e| {
                    e.message
                        .contains(&format!("node {NODE}'s disk is nearly full"))
                })
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(event.level, torc_api::EventLevel::Warning);
    assert!(
        event
            .message
            .contains(&format!("below the rack's {threshold}%")),
        "{}",
        event.message
    );

    // The first sample comes a second after the agent starts.
    let disk = wait_for(
        "the data dir in the node's metrics",
        Duration::from_secs(30),
        || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let metrics: torc_api::NodeMetrics =
                    get_json(&http, format!("{url}/api/v1/nodes/{NODE}/metrics")).await?;
                metrics.data_dir
            }
        },
    )
    .await
    .unwrap();
    assert!(
        disk.low && disk.free_bytes > 0 && disk.used_bytes > 0,
        "{disk:?}"
    );
    let log = std::fs::read_to_string(rack.dir.path().join(format!("agent-{NODE}.log"))).unwrap();
    assert!(log.contains("the data dir's disk is nearly full"), "{log}");
}

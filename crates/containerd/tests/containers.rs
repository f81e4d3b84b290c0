//! torc-containerd against a real containerd 1.6 (a private one per test, in a temp dir, with
//! runc and the busybox image built by umoci and skopeo): version and plugins, output into
//! two files and the exit code, SIGTERM then SIGKILL, an OOM kill at a 64 MiB limit, events
//! across a containerd restart, the sweep of a killed daemon, and refusals. Each test checks
//! that nothing of its containers is left. Without root each prints `skipped: needs root`
//! and passes; a missing peer program fails it.

mod common;

use std::time::{Duration, Instant};

use common::{Fixture, alive, oom_kills, root, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use torc_containerd::daemon::{Daemon, DaemonOptions, sweep};
use torc_containerd::{
    ContainerId, Error, Event, Namespace, NewTask, Notice, OVERLAYFS, TaskIo, TaskStatus, topic,
};

fn id(text: &str) -> ContainerId {
    ContainerId::new(text).unwrap()
}

#[tokio::test]
async fn version_plugins_and_refusals() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let f = Fixture::start().await?;
    let version = f.client.version().await?;
    let (major, minor) = version.major_minor().expect("a numbered version");
    assert!((major, minor) >= (1, 6), "containerd {version:?}");

    let overlay = f
        .client
        .plugins(&["type==io.containerd.snapshotter.v1,id==overlayfs"])
        .await?;
    assert_eq!(overlay.len(), 1, "{overlay:?}");
    assert_eq!(overlay[0].init_error, None);
    // A disabled plugin is not listed at all; one that failed says why.
    assert!(f.client.plugins(&["id==cri"]).await?.is_empty());
    let btrfs = f.client.plugins(&["id==btrfs"]).await?;
    assert!(
        btrfs.is_empty(),
        "btrfs is disabled in the private config: {btrfs:?}"
    );
    assert!(f.client.namespaces().await?.contains(&f.namespace));

    // A task for a container that does not exist: containerd's NotFound, naming the call.
    let ghost = id("ghost.0a1b2c");
    let error = f
        .client
        .create_task(&NewTask {
            id: ghost.clone(),
            rootfs: vec![],
            io: TaskIo::Null,
            runc: None,
        })
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error}");
    let text = error.to_string();
    assert!(
        text.contains(&format!("containerd at {}", f.layout.socket().display()))
            && text.contains("Tasks.Create ghost.0a1b2c"),
        "{text}"
    );
    assert!(f.client.task(&ghost).await?.is_none());
    assert!(!f.client.delete_container(&ghost).await?);
    assert_eq!(f.client.remove(&ghost).await?, Default::default());

    // Output paths the shim could not take are refused before anything is sent.
    let relative = f
        .client
        .create_task(&NewTask {
            id: ghost.clone(),
            rootfs: vec![],
            io: TaskIo::Files {
                stdout: "out".into(),
                stderr: "/tmp/err".into(),
            },
            runc: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(relative, Error::Request { .. }), "{relative}");
    assert_eq!(
        relative.to_string(),
        "Tasks.Create ghost.0a1b2c: stdout out: not an absolute path"
    );
    assert!(ContainerId::new("../etc").is_err());
    assert!(Namespace::new("a b").is_err());

    // A client of a socket where nothing listens says so.
    let nowhere = f.dir.path().join("nothing.sock");
    let error = torc_containerd::Client::connect(&nowhere, f.namespace.clone())
        .await
        .unwrap_err();
    assert!(error.is_unavailable(), "{error}");
    assert!(
        error.to_string().contains("nothing.sock: cannot connect"),
        "{error}"
    );
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn output_lands_in_files_and_exit_code_is_collected() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let f = Fixture::start().await?;
    let c = id("echo.0a1b2c");
    let started = Instant::now();
    f.run(
        &c,
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7"],
        None,
    )
    .await?;
    println!(
        "created and started in {} ms",
        started.elapsed().as_millis()
    );
    let exit = f.client.wait_task(&c).await?;
    assert_eq!(exit.status, 7);
    assert_eq!(exit.signal(), None);
    assert!(exit.at.is_some());
    // Asked again after the exit, it is the same (Tasks.Get, not the event).
    assert_eq!(f.client.wait_task(&c).await?.status, 7);
    let (stdout, stderr) = (
        f.dir.path().join("echo.0a1b2c.stdout"),
        f.dir.path().join("echo.0a1b2c.stderr"),
    );
    assert_eq!(std::fs::read_to_string(stdout)?, "to-stdout\n");
    assert_eq!(std::fs::read_to_string(stderr)?, "to-stderr\n");

    let info = f.client.container(&c).await?.expect("the container");
    assert_eq!(info.runtime, torc_containerd::RUNC_V2);
    assert_eq!(info.labels.get("torc.test").map(String::as_str), Some("1"));
    assert_eq!(info.snapshot_key, c.as_str());
    // runc's state is under the daemon's own runc root, not /run/containerd/runc.
    assert!(
        f.layout
            .runc_root()
            .join(f.namespace.as_str())
            .join(c.as_str())
            .exists()
    );
    let removed = f.client.remove(&c).await?;
    assert_eq!(removed.task.map(|e| e.status), Some(7));
    assert!(removed.container && removed.snapshot, "{removed:?}");
    // Removing again finds nothing and is not an error.
    assert_eq!(f.client.remove(&c).await?, Default::default());
    f.assert_gone(&c).await?;
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn sigterm_then_sigkill() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let f = Fixture::start().await?;
    // A pid 1 with a handler ends on SIGTERM, with its own exit code.
    let polite = id("polite.0a1b2c");
    f.run(
        &polite,
        &[
            "sh",
            "-c",
            "trap 'exit 3' TERM; echo ready; while :; do sleep 1 & wait $!; done",
        ],
        None,
    )
    .await?;
    let out = f.dir.path().join("polite.0a1b2c.stdout");
    wait_for(Duration::from_secs(10), "the trap to be set", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t == "ready\n")
    })
    .await;
    f.client.kill_task(&polite, Signal::SIGTERM, false).await?;
    assert_eq!(f.client.wait_task(&polite).await?.status, 3);

    // A pid 1 without a handler ignores SIGTERM (design §1): it takes SIGKILL, to every
    // process of the container.
    let stubborn = id("stubborn.0a1b2c");
    let pid = f.run(&stubborn, &["sleep", "3600"], None).await?;
    assert!(alive(pid));
    assert_eq!(
        common::status(&f.client, &stubborn).await,
        Some(TaskStatus::Running)
    );
    f.client
        .kill_task(&stubborn, Signal::SIGTERM, false)
        .await?;
    // Something that does not happen: no exit within a moment.
    let ignored =
        tokio::time::timeout(Duration::from_millis(300), f.client.wait_task(&stubborn)).await;
    assert!(
        ignored.is_err(),
        "sleep as pid 1 ended on SIGTERM: {ignored:?}"
    );
    f.client.kill_task(&stubborn, Signal::SIGKILL, true).await?;
    let exit = f.client.wait_task(&stubborn).await?;
    assert_eq!(exit.status, 137);
    assert_eq!(exit.signal(), Some(Signal::SIGKILL));
    assert!(!alive(pid));

    for c in [&polite, &stubborn] {
        f.client.remove(c).await?;
        f.assert_gone(c).await?;
    }
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn memory_limit_oom_kills_a_hog() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let f = Fixture::start().await?;
    let mut events = f
        .client
        .subscribe(vec![format!("topic==\"{}\"", topic::TASK_OOM)]);
    assert!(matches!(events.next().await, Notice::Live));
    let hog = id("hog.0a1b2c");
    f.run(
        &hog,
        &["dd", "if=/dev/zero", "of=/dev/null", "bs=200M", "count=1"],
        Some(64 << 20),
    )
    .await?;
    let exit = f.client.wait_task(&hog).await?;
    assert_eq!(exit.status, 137, "the hog was not killed: {exit:?}");
    // The record: the cgroup's counter, readable until the task is deleted.
    let kills = oom_kills(&f.cgroup(&hog));
    assert!(
        kills.is_some_and(|n| n >= 1),
        "oom_kill in {}: {kills:?}",
        f.cgroup(&hog)
    );
    // The hint: containerd's event.
    let oom = tokio::time::timeout(Duration::from_secs(10), events.next()).await?;
    match oom {
        Notice::Event(e) => assert_eq!(
            e.event,
            Event::TaskOom {
                container_id: hog.to_string()
            }
        ),
        other => panic!("expected the OOM event, got {other:?}"),
    }
    f.client.remove(&hog).await?;
    f.assert_gone(&hog).await?;
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn events_come_back_after_containerd_restarts() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let mut f = Fixture::start().await?;
    let mut events = f.client.subscribe(vec![
        format!("topic==\"{}\"", topic::TASK_START),
        format!("topic==\"{}\"", topic::TASK_EXIT),
    ]);
    assert!(matches!(events.next().await, Notice::Live));

    // containerd dies: the subscription says so once, then waits for it.
    let daemon = f.daemon.take().unwrap();
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL)?;
    match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
        Notice::Lost(error) => assert!(error.is_unavailable() || error.code().is_some(), "{error}"),
        other => panic!("expected the loss, got {other:?}"),
    }
    daemon.stop().await?;
    f.daemon = Some(Daemon::start(f.layout.clone(), DaemonOptions::default()).await?);
    assert!(matches!(
        tokio::time::timeout(Duration::from_secs(10), events.next()).await?,
        Notice::Live
    ));

    // The same client (its channel reconnects) runs a container; both events arrive.
    let c = id("after.0a1b2c");
    let pid = f.run(&c, &["true"], None).await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
            Notice::Event(e) => {
                assert_eq!(e.namespace, f.namespace.as_str());
                seen.push(e.event)
            }
            other => panic!("expected events, got {other:?}"),
        }
    }
    assert_eq!(
        seen[0],
        Event::TaskStart {
            container_id: c.to_string(),
            pid
        }
    );
    assert!(
        matches!(&seen[1], Event::TaskExit { container_id, exit_status: 0, .. } if container_id == c.as_str()),
        "{seen:?}"
    );
    f.client.remove(&c).await?;
    f.assert_gone(&c).await?;
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn sweep_ends_what_a_killed_daemon_left() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let mut f = Fixture::start().await?;
    let c = id("orphan.0a1b2c");
    let pid = f.run(&c, &["sleep", "3600"], None).await?;
    // A `torc up` killed with SIGKILL: its containerd dies too; the shim and the container
    // live on (design §1).
    let daemon = f.daemon.take().unwrap();
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL)?;
    daemon.stop().await?;
    assert!(alive(pid));
    let shim_socket = f.shim_socket(&c);
    assert!(shim_socket.exists());

    let swept = sweep(&f.layout, &DaemonOptions::default()).await?;
    assert!(swept.restarted, "{swept:?}");
    assert_eq!((swept.killed, swept.removed), (1, 1), "{swept:?}");
    assert!(!alive(pid));
    assert!(!shim_socket.exists());
    assert!(!f.layout.run.exists());
    assert!(common::cgroup_dirs(&f.cgroup(&c)).is_empty());
    assert!(common::processes_naming(f.layout.run.to_str().unwrap()).is_empty());
    // A second sweep has nothing to do.
    assert_eq!(
        sweep(&f.layout, &DaemonOptions::default()).await?,
        Default::default()
    );
    // The snapshot went with the container (the root, with the image, stays).
    let restarted = Daemon::start(f.layout.clone(), DaemonOptions::default()).await?;
    let client = restarted.client(f.namespace.clone()).await?;
    assert!(client.snapshot(OVERLAYFS, c.as_str()).await?.is_none());
    assert!(client.snapshot(OVERLAYFS, &f.chain_id).await?.is_some());
    f.daemon = Some(restarted);
    f.finish().await?;
    Ok(())
}

#[tokio::test]
async fn a_dropped_daemon_leaves_nothing() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    // What a panicking test (or torc up on an error path) does: drop the daemon with a
    // container running. The drop sweeps.
    let f = Fixture::start().await?;
    let c = id("dropped.0a1b2c");
    let pid = f.run(&c, &["sleep", "3600"], None).await?;
    let (layout, cgroup) = (f.layout.clone(), f.cgroup(&c));
    let dir = f.dir.path().to_path_buf();
    let shim_socket = f.shim_socket(&c);
    drop(f);
    assert!(!alive(pid));
    assert!(!shim_socket.exists());
    assert!(!layout.run.exists());
    assert!(!dir.exists());
    assert!(common::cgroup_dirs(&cgroup).is_empty());
    assert!(common::processes_naming(layout.run.to_str().unwrap()).is_empty());
    Ok(())
}

#[tokio::test]
async fn sweep_goes_around_a_containerd_that_will_not_start() -> anyhow::Result<()> {
    if !root() {
        return Ok(());
    }
    let mut f = Fixture::start().await?;
    let c = id("stranded.0a1b2c");
    let pid = f.run(&c, &["sleep", "3600"], None).await?;
    let daemon = f.daemon.take().unwrap();
    kill(Pid::from_raw(daemon.pid() as i32), Signal::SIGKILL)?;
    daemon.stop().await?;

    // containerd cannot come back (its binary fails): the sweep says so, and cleans up from
    // what is on disk with runc.
    let broken = DaemonOptions {
        binary: Some("/bin/false".into()),
        ..DaemonOptions::default()
    };
    let shim_socket = f.shim_socket(&c);
    assert!(shim_socket.exists());
    let error = sweep(&f.layout, &broken).await.unwrap_err().to_string();
    assert!(error.contains("containerd exited"), "{error}");
    // The shim ended on SIGTERM, and removed its socket itself.
    assert!(!error.contains("did not exit"), "{error}");
    assert!(!shim_socket.exists());
    assert!(!alive(pid));
    assert!(!f.layout.run.exists());
    assert!(common::cgroup_dirs(&f.cgroup(&c)).is_empty());
    assert!(common::processes_naming(f.layout.run.to_str().unwrap()).is_empty());

    // containerd's records outlived it; a sweep through containerd removes them.
    let restarted = Daemon::start(f.layout.clone(), DaemonOptions::default()).await?;
    let swept = restarted.sweep().await?;
    assert_eq!((swept.killed, swept.removed), (0, 1), "{swept:?}");
    Ok(())
}

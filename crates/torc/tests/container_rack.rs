//! Test racks and containers: a `LocalRack` with `containers: true` runs a private containerd
//! (root; otherwise `skipped: needs root and containerd`) and points every agent at it, each
//! in a containerd namespace of its own; any other test rack gives its agents `--containerd
//! off`, and the CLI shows such nodes as unable to run containers, with the reason. The image
//! flow itself (pull, import, run) is `containers.rs`'s.

use std::process::Command;

use torc_test_utils::{
    LocalRack, RackOptions, containers_or_skip, pid_alive, processes_mentioning, without_forks,
};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// The command line of node `node`'s agent.
fn agent_command(rack: &LocalRack, node: &str) -> String {
    let agents: Vec<String> = without_forks(processes_mentioning(rack.dir.path()))
        .into_iter()
        .filter(|(_, cmd)| cmd.contains(" agent ") && cmd.contains(&format!("--name {node} ")))
        .map(|(_, cmd)| cmd)
        .collect();
    assert_eq!(agents.len(), 1, "{node}: {agents:?}");
    agents[0].clone()
}

fn torc(rack: &LocalRack, args: &[&str]) -> (bool, String, String) {
    rack.torc(TORC, args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_rack_with_containers_runs_a_private_containerd_and_removes_it() {
    if !containers_or_skip() {
        return;
    }
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            containers: true,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    let containerd = rack.containerd().expect("the rack's containerd");
    let version = containerd.client.version().await.unwrap();
    assert!(version.version.starts_with('1'), "{version:?}");
    let socket = containerd.layout.socket();
    for node in ["wedge", "bladerunner1"] {
        let namespace = rack.container_namespace(node).unwrap();
        assert_eq!(namespace, format!("{}-{node}", containerd.namespace));
        let command = agent_command(&rack, node);
        assert!(
            command.contains(&format!(
                "--containerd {} --containerd-namespace {namespace}",
                socket.display()
            )),
            "{command}"
        );
    }
    let pid = containerd.daemon.as_ref().unwrap().pid();
    let run = containerd.layout.run.clone();
    assert!(pid_alive(pid));
    drop(rack);
    assert!(!pid_alive(pid), "containerd outlived its rack");
    assert!(!run.exists(), "{} is left", run.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rack_without_containers_keeps_its_agents_off_containerd_and_the_cli_says_so() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..RackOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(rack.containerd().is_none());
    for node in ["wedge", "bladerunner1"] {
        let command = agent_command(&rack, node);
        assert!(command.contains("--containerd off"), "{command}");
    }
    // `torc nodes`: a CONTAINERS column with each node's reason (the agent's note when it
    // gives one).
    let nodes = rack.client().nodes().await.unwrap();
    let (ok, out, err) = torc(&rack, &["nodes"]);
    assert!(ok, "{err}");
    let mut lines = out.lines();
    assert!(lines.next().unwrap().contains("  CONTAINERS  "), "{out}");
    for node in &nodes {
        assert!(!node.runtime.containers, "{node:?}");
        let reason = match &node.runtime.containers_note {
            Some(note) => format!("unavailable: {note}"),
            None => "unavailable: its agent gives no reason".into(),
        };
        assert!(
            out.lines()
                .any(|l| l.starts_with(node.name.as_str()) && l.contains(&format!("{reason}  "))),
            "{reason}:\n{out}"
        );
    }
    // `torc image` without --node: no node can, each is named with its reason.
    let (ok, out, err) = torc(&rack, &["image", "ls"]);
    assert!(
        !ok && err.contains("no active node runs containers"),
        "{out}{err}"
    );
    for node in &nodes {
        assert!(
            err.contains(&format!("{}: containers: unavailable: ", node.name)),
            "{err}"
        );
    }
    let (ok, out, err) = torc(&rack, &["image", "pull", "busybox"]);
    assert!(
        !ok && err.contains("no active node runs containers"),
        "{out}{err}"
    );
    assert!(
        out.contains("bladerunner1: containers: unavailable: "),
        "{out}"
    );
    // Mistakes in a reference are named before anything is sent.
    let (ok, _, err) = torc(&rack, &["image", "rm", "Not/Valid"]);
    assert!(!ok && err.contains("Not/Valid"), "{err}");
}

#[test]
fn the_agents_containerd_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let agent = |extra: &[&str]| {
        let out = Command::new(TORC)
            .args([
                "agent",
                "--controller",
                "http://127.0.0.1:1",
                "--name",
                "n1",
            ])
            .args(["--ip", "127.0.0.1", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{extra:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = agent(&["--containerd-namespace", "no spaces"]);
    assert!(
        err.contains("--containerd-namespace") && err.contains("no spaces"),
        "{err}"
    );
    let err = agent(&["--containerd", "run/containerd.sock"]);
    assert!(
        err.contains(
            "--containerd \"run/containerd.sock\": expected the absolute path of containerd's socket, or `off`"
        ),
        "{err}"
    );
}

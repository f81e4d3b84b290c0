//! Containers end to end, as an operator drives them: the `torc` CLI against a test rack whose
//! agents run a private containerd (`RackOptions.containers`), the busybox test image made
//! from Debian's busybox-static (umoci, skopeo), a real `docker-registry` on loopback.
//! As root only (CI runs as root); elsewhere each prints `skipped: needs root and containerd`.
//!
//! - a registry: `torc image pull`, `torc run --image`, `torc logs`, `torc kill`; a registry
//!   that wants a login refuses until the rack config has one;
//! - no registry: `torc image import` (docker and OCI archives), `torc image ls`, a run;
//!   corrupt archives and unknown images refused, each naming what is wrong;
//! - restarts: the agent's (`kill -9`, the same container and pid afterwards) and the
//!   controller's (nothing changes);
//! - a rack whose agents run no containers: an image task stays pending, saying why.

use std::path::Path;
use std::time::Duration;

use torc_api::TaskView;
use torc_test_utils::{
    LocalRack, RackOptions, Registry, TEST_IMAGE_NAME, TestImage, containers_or_skip, stdout_of,
    wait_for,
};
use torc_types::{TaskId, TaskState};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn test_image() -> TestImage {
    TestImage::get(Path::new(env!("CARGO_TARGET_TMPDIR"))).unwrap()
}

/// The test image, imported onto bladerunner1 through the controller.
async fn import_on_bladerunner1(rack: &LocalRack) {
    rack.client()
        .import_image(
            &"bladerunner1".parse().unwrap(),
            &test_image().oci_archive,
            None,
        )
        .await
        .unwrap();
}

/// Runs the CLI against `rack`: (success, stdout, stderr).
fn torc(rack: &LocalRack, args: &[&str]) -> (bool, String, String) {
    rack.torc(TORC, args)
}

async fn rack(containers: bool, extra_yaml: &str) -> LocalRack {
    LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            containers,
            extra_yaml: extra_yaml.into(),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap()
}

/// `torc run --wait …` on bladerunner1; the task's id.
fn run(rack: &LocalRack, name: &str, image: &str, command: &[&str]) -> TaskId {
    let mut args = vec![
        "run",
        "--image",
        image,
        "--name",
        name,
        "--node",
        "bladerunner1",
        "--wait",
        "--",
    ];
    args.extend_from_slice(command);
    let (ok, out, err) = torc(rack, &args);
    assert!(ok, "{out}{err}");
    let id = out.split_whitespace().next().expect("the task's id");
    TaskId::new(id).unwrap()
}

async fn task_where(
    rack: &LocalRack,
    id: &TaskId,
    what: &str,
    done: impl Fn(&TaskView) -> bool,
) -> TaskView {
    let client = rack.client();
    wait_for(what, Duration::from_secs(60), || {
        let client = client.clone();
        let done = &done;
        async move { client.task(id).await.ok().filter(|t| done(t)) }
    })
    .await
    .unwrap()
}

/// Nothing of bladerunner1's containers is left in its containerd namespace.
async fn no_containers_left(rack: &LocalRack) {
    let ctd = rack.containerd().unwrap();
    let namespace = rack.container_namespace("bladerunner1").unwrap();
    let client = ctd
        .client
        .in_namespace(torc_containerd::Namespace::new(namespace).unwrap());
    wait_for(
        "the containers to be removed",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move {
                let containers = client.containers().await.ok()?;
                containers.is_empty().then_some(())
            }
        },
    )
    .await
    .unwrap();
}

/// Pushed to a loopback registry, pulled by `torc image pull` (progress, then `pulled`), run by
/// `torc run --image`; its output read by `torc logs`; killed by `torc kill` (its pid 1, a
/// shell, ignores SIGTERM: the kill ends with SIGKILL after the grace period); nothing of it
/// stays in containerd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_from_a_registry_run_logged_and_killed() {
    if !containers_or_skip() {
        return;
    }
    let registry = Registry::start().await.unwrap();
    test_image().push(&registry, "torc/busybox:1").unwrap();
    let image = format!("{}/torc/busybox:1", registry.host);
    let rack = rack(true, "").await;

    let (ok, out, err) = torc(&rack, &["image", "pull", &image, "--node", "bladerunner1"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("bladerunner1: pulled {image} (sha256:")),
        "{out}"
    );
    let (ok, out, _) = torc(&rack, &["image", "ls", "--node", "bladerunner1"]);
    assert!(ok && out.contains(&image), "{out}");

    let id = run(
        &rack,
        "hello",
        &image,
        &["sh", "-c", "echo hello from a container; sleep 3600"],
    );
    task_where(&rack, &id, "the task to run", |t| {
        t.state == TaskState::Running
    })
    .await;
    let client = rack.client();
    wait_for("its output", Duration::from_secs(20), || {
        let client = client.clone();
        let id = id.clone();
        async move {
            stdout_of(&client, &id)
                .await
                .contains("hello from a container")
                .then_some(())
        }
    })
    .await
    .unwrap();
    let (ok, out, _) = torc(&rack, &["logs", id.as_str()]);
    assert!(ok && out.contains("hello from a container"), "{out}");
    // The image a live task uses is kept unless forced.
    let (ok, _, err) = torc(&rack, &["image", "rm", &image, "--node", "bladerunner1"]);
    assert!(!ok);
    assert!(err.contains(&format!("is used by {id}")), "{err}");

    let (ok, out, err) = torc(&rack, &["kill", id.as_str()]);
    assert!(ok, "{out}{err}");
    let task = task_where(&rack, &id, "the kill", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Killed, "{task:?}");
    no_containers_left(&rack).await;
    let (ok, out, err) = torc(&rack, &["image", "rm", &image, "--node", "bladerunner1"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("bladerunner1: removed"), "{out}");
}

/// A registry that wants a login refuses a pull, and the task says so; with the login in the
/// rack config (`containers.registries`, its password a rack secret) the image is pulled as the
/// task starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_login_comes_from_the_rack_config() {
    if !containers_or_skip() {
        return;
    }
    let mut registry = Registry::start_with_auth("torc", "s3cret-pw")
        .await
        .unwrap();
    test_image().push(&registry, "torc/private:1").unwrap();
    let image = format!("{}/torc/private:1", registry.host);
    let config = format!(
        "containers:\n  registries:\n    - host: \"{}\"\n      user: torc\n      password_secret: registry-pw\n",
        registry.host
    );
    let rack = rack(true, &config).await;
    // The secret is not set yet: the pull goes without a login and is refused.
    let id = run(&rack, "private", &image, &["echo", "private"]);
    let task = task_where(&rack, &id, "the refusal", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    let message = task.message.clone().unwrap_or_default();
    assert!(message.contains(&image), "{message}");
    assert!(message.contains("401"), "{message}");
    assert!(message.contains("the rack has no login for"), "{message}");

    rack.client()
        .set_secret(&"registry-pw".parse().unwrap(), "s3cret-pw")
        .await
        .unwrap();
    let id = run(&rack, "private", &image, &["echo", "private"]);
    let task = task_where(&rack, &id, "the run", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(stdout_of(&rack.client(), &id).await, "private\n");
    registry.stop();
}

/// No registry at all: both archive formats import (`torc image import`), `torc image ls`
/// names the image, a task runs it. Corrupt archives, an image nobody has and a refused
/// docker option each fail saying what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_without_a_registry_and_bad_input_refused() {
    if !containers_or_skip() {
        return;
    }
    let image = test_image();
    let rack = rack(true, "").await;
    let docker = image.docker_archive.display().to_string();
    let (ok, out, err) = torc(
        &rack,
        &["image", "import", &docker, "--node", "bladerunner1"],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains(&format!("bladerunner1: imported {TEST_IMAGE_NAME}")),
        "{out}"
    );
    let oci = image.oci_archive.display().to_string();
    let (ok, out, err) = torc(&rack, &["image", "import", &oci, "--name", "torc/again:2"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("imported docker.io/torc/again:2"), "{out}");
    let (ok, out, _) = torc(&rack, &["image", "ls"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(TEST_IMAGE_NAME) && out.contains("docker.io/torc/again:2"),
        "{out}"
    );

    let id = run(&rack, "imported", TEST_IMAGE_NAME, &["echo", "imported"]);
    let task = task_where(&rack, &id, "the run", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Finished, "{task:?}");
    assert_eq!(stdout_of(&rack.client(), &id).await, "imported\n");

    // A truncated archive and random bytes.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&image.oci_archive).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = torc(&rack, &["image", "import", truncated.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("bladerunner1") && err.contains("entry"),
        "{err}"
    );
    let random = dir.path().join("random.tar");
    std::fs::write(
        &random,
        (0..40_000u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let (ok, _, err) = torc(&rack, &["image", "import", random.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("bladerunner1:"), "{err}");

    // An image no registry has: the task fails naming it.
    let id = run(&rack, "nowhere", "127.0.0.1:1/torc/nope:1", &["true"]);
    let task = task_where(&rack, &id, "the failure", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Failed, "{task:?}");
    assert!(
        task.message
            .as_deref()
            .is_some_and(|m| m.contains("127.0.0.1:1/torc/nope:1")),
        "{task:?}"
    );
    // A docker option torc does not map is refused before anything runs.
    let (ok, _, err) = torc(
        &rack,
        &[
            "run",
            "--image",
            TEST_IMAGE_NAME,
            "--param",
            "-p 80:80",
            "--",
            "true",
        ],
    );
    assert!(!ok);
    assert!(err.contains("ports are not published"), "{err}");
}

/// `kill -9` of the agent leaves the container running; the restarted agent adopts it (the
/// same container, the same pid) and nothing starts twice; a controller restart changes
/// nothing either; the task is then killed as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_of_the_agent_and_the_controller_keep_the_container() {
    if !containers_or_skip() {
        return;
    }
    let mut rack = rack(true, "").await;
    import_on_bladerunner1(&rack).await;
    let id = run(&rack, "kept", TEST_IMAGE_NAME, &["sleep", "3600"]);
    task_where(&rack, &id, "the task to run", |t| {
        t.state == TaskState::Running
    })
    .await;
    let ctd = rack.containerd().unwrap();
    let namespace =
        torc_containerd::Namespace::new(rack.container_namespace("bladerunner1").unwrap()).unwrap();
    let client = ctd.client.in_namespace(namespace);
    let cid = torc_containerd::ContainerId::new(id.as_str()).unwrap();
    let pid = client
        .task(&cid)
        .await
        .unwrap()
        .expect("the container's task")
        .pid;
    let start_time = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();

    rack.kill_agent("bladerunner1");
    rack.start_agent("bladerunner1").unwrap();
    rack.wait_active(&["bladerunner1".to_string()], true)
        .await
        .unwrap();
    rack.kill_controller();
    rack.start_controller().unwrap();
    rack.wait_active(&["bladerunner1".to_string()], true)
        .await
        .unwrap();
    let task = task_where(&rack, &id, "the task, running", |t| {
        t.state == TaskState::Running
    })
    .await;
    assert_eq!(task.state, TaskState::Running);
    assert_eq!(
        client.task(&cid).await.unwrap().unwrap().pid,
        pid,
        "the same container"
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap(),
        start_time.clone(),
        "the same process"
    );
    let containers = client.containers().await.unwrap();
    assert_eq!(containers.len(), 1, "no second container: {containers:?}");

    let (ok, out, err) = torc(&rack, &["kill", id.as_str()]);
    assert!(ok, "{out}{err}");
    let task = task_where(&rack, &id, "the kill", |t| t.state.is_terminal()).await;
    assert_eq!(task.state, TaskState::Killed, "{task:?}");
    no_containers_left(&rack).await;
}

/// On a rack whose agents run no containers, an image task stays pending and says why, naming
/// each node's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_task_on_a_rack_without_containers_is_pending_saying_why() {
    let rack = rack(false, "").await;
    let (ok, out, err) = torc(
        &rack,
        &[
            "run",
            "--image",
            TEST_IMAGE_NAME,
            "--name",
            "waits",
            "--",
            "true",
        ],
    );
    assert!(ok, "{out}{err}");
    let id = TaskId::new(out.split_whitespace().next().unwrap()).unwrap();
    let task = task_where(&rack, &id, "the pending reason", |t| {
        t.message
            .as_deref()
            .is_some_and(|m| m.contains("can run containers"))
    })
    .await;
    assert_eq!(task.state, TaskState::Pending, "{task:?}");
    let message = task.message.unwrap();
    assert!(
        message.contains("bladerunner1: containers: unavailable: turned off (--containerd off)"),
        "{message}"
    );
    let (ok, out, _) = torc(&rack, &["tasks"]);
    assert!(ok && out.contains("can run containers"), "{out}");
}

/// A containerized service with an HTTP health check, started from a service group of the
/// rack config: it serves on its port from the node's range (`$PORT`, on the node's network),
/// the controller's probe finds it healthy, and its DNS name answers its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containerized_service_passes_its_health_check() {
    if !containers_or_skip() {
        return;
    }
    let config = format!(
        r#"api:
  service-groups:
    - name: web
      services:
        - name: web
          image_name: {TEST_IMAGE_NAME}
          args: [sh, -c, "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p $PORT -h /tmp/www"]
          ports: 1
          memory: 16
          cpu: 0.1
          health: {{http: "http://$IP:$PORT/", interval_in_seconds: 1, timeout_in_seconds: 2}}
"#
    );
    let rack = rack(true, &config).await;
    import_on_bladerunner1(&rack).await;
    let (ok, out, err) = torc(&rack, &["group", "start", "web"]);
    assert!(ok, "{out}{err}");
    let client = rack.client();
    let service = wait_for("web to be healthy", Duration::from_secs(60), || {
        let client = client.clone();
        async move {
            let s = client.service(&"web".parse().unwrap()).await.ok()?;
            (s.health.state == "healthy").then_some(s)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", rack.logs_hint()));
    assert_eq!(service.state, Some(TaskState::Running));
    let task = service.task.clone().unwrap();
    let view = client.task(&task).await.unwrap();
    assert!(view.spec.container.is_some(), "{view:?}");
    let (ok, out, err) = torc(&rack, &["group", "stop", "web"]);
    assert!(ok, "{out}{err}");
    task_where(&rack, &task, "the group's stop", |t| t.state.is_terminal()).await;
    no_containers_left(&rack).await;
}

/// A container's output is capped and rotated as a process task's (`torc` as containerd's
/// logging program): a shell counting to 200,000 writes 1.3 MB into 64 KiB files, 2 rotated; `torc logs`
/// shows the tail, up to the last line written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_containers_output_is_capped_and_rotated() {
    if !containers_or_skip() {
        return;
    }
    let rack = rack(true, "logs: {max_bytes: 64KiB, files: 2}\n").await;
    import_on_bladerunner1(&rack).await;
    let count = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); echo $i; done";
    let id = run(&rack, "chatty", TEST_IMAGE_NAME, &["sh", "-c", count]);
    let done = task_where(&rack, &id, "the container to end", |t| {
        t.state.is_terminal()
    })
    .await;
    assert_eq!(done.state, TaskState::Finished, "{done:?}");
    let sandbox = rack
        .dir
        .path()
        .join("agents/bladerunner1/sandboxes")
        .join(id.as_str());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&sandbox).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with("stdout") {
            let size = entry.metadata().unwrap().len();
            assert!(size <= 64 << 10, "{name}: {size} bytes, over the cap");
            names.push(name);
        }
    }
    names.sort();
    assert_eq!(names, ["stdout", "stdout.1", "stdout.2"]);
    let (ok, out, err) = torc(&rack, &["logs", id.as_str(), "--tail", "100000"]);
    assert!(ok, "{err}");
    torc_test_utils::assert_counted_tail(&out, 200_000);
    no_containers_left(&rack).await;
}

//! The controller's restore drill (README, "Backups and restores"), run on a real rack: back up
//! with `torc backup`, destroy the controller (SIGKILL, its data dir deleted), refuse a wrong
//! passphrase and a damaged file, `torc restore` into a new data dir, start the controller on
//! it, and find the same tasks (the agents' running tasks adopted, none started twice), the
//! same services, rack secrets and tokens.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::time::Duration;

use torc_api::{TaskFilter, TokenRole};
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");

const SERVICES: &str = r#"
healthcheck:
  system_services:
    - name: keeper
      command: sleep
      args: ["600"]
      memory: 8
      cpu: 0.05
api:
  service-groups:
    - name: shop
      services:
        - name: web
          command: sleep
          args: ["600"]
          memory: 8
          cpu: 0.05
          number_of_instances: 2
"#;

/// Running tasks: id → (name, node).
async fn running(rack: &LocalRack) -> BTreeMap<String, (String, String)> {
    let filter = TaskFilter {
        state: Some(TaskState::Running),
        ..Default::default()
    };
    (rack.client().tasks(&filter).await.unwrap().into_iter())
        .map(|t| {
            let node = t.node.map(|n| n.to_string()).unwrap_or_default();
            (t.id.to_string(), (t.name.to_string(), node))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_destroyed_and_restored_from_its_backup_keeps_its_tasks_services_and_secrets()
{
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: SERVICES.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    client.start_group(&"shop".parse().unwrap()).await.unwrap();
    for name in ["keeper", "web-0", "web-1"] {
        rack.wait_service_running(name).await.unwrap();
    }
    let secret = "app-password".parse().unwrap();
    client
        .set_secret(&secret, "hunter2-hunter2-x")
        .await
        .unwrap();
    let viewer = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    // Backups are for admins: a viewer is refused.
    let denied = (rack.client_with(Some(viewer.clone())))
        .backup("a long passphrase for the drill")
        .await
        .unwrap_err();
    assert_eq!(denied.status().map(|s| s.as_u16()), Some(403), "{denied}");
    let before = running(&rack).await;
    assert_eq!(before.len(), 3, "{before:?}");

    // The backup, with the passphrase in a file.
    let dir = rack.dir.path().to_path_buf();
    let pass = dir.join("backup.pass");
    std::fs::write(&pass, "a long passphrase for the drill\n").unwrap();
    let file = dir.join("rack.backup");
    let (ok, out, err) = rack.torc(
        TORC,
        &[
            "backup",
            "-o",
            file.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("checked; its secrets open with the passphrase"),
        "{out}"
    );
    let bytes = std::fs::read(&file).unwrap();
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the backup file's mode");
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains("hunter2-hunter2-x"),
        "a rack secret in clear"
    );
    assert!(!text.contains(&viewer), "a token in clear");
    let events = client.events(0).await.unwrap();
    assert!(
        events.iter().any(|e| e
            .message
            .contains("took a backup of the controller's state")),
        "the backup is in the event feed"
    );
    // A short passphrase is refused by the controller, naming the rule.
    let short = dir.join("short.pass");
    std::fs::write(&short, "short").unwrap();
    let (ok, out, err) = rack.torc(
        TORC,
        &[
            "backup",
            "-o",
            dir.join("x").to_str().unwrap(),
            "--passphrase-file",
            short.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("at least 12 bytes"), "{out}{err}");
    assert!(!dir.join("x").exists());

    // Destroyed: killed, its data dir gone.
    rack.kill_controller();
    let data = dir.join("controller");
    std::fs::remove_dir_all(&data).unwrap();

    // A wrong passphrase and a damaged file are refused, and leave no store.
    let wrong = dir.join("wrong.pass");
    std::fs::write(&wrong, "not the passphrase at all").unwrap();
    let restore = |from: &std::path::Path, pass: &std::path::Path| {
        rack.torc(
            TORC,
            &[
                "restore",
                "--from",
                from.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
                "--passphrase-file",
                pass.to_str().unwrap(),
            ],
        )
    };
    let (ok, out, err) = restore(&file, &wrong);
    assert!(
        !ok && err.contains("do not open with this passphrase"),
        "{out}{err}"
    );
    let damaged = dir.join("damaged.backup");
    let mut d = bytes.clone();
    let at = d.len() / 2;
    d[at] ^= 0x20;
    std::fs::write(&damaged, &d).unwrap();
    let (ok, out, err) = restore(&damaged, &pass);
    assert!(!ok && err.contains("is damaged"), "{out}{err}");
    assert!(!data.join("controller.redb").exists());

    let (ok, out, err) = restore(&file, &pass);
    assert!(ok, "{out}{err}");
    assert!(out.contains("restored") && out.contains("3 tasks"), "{out}");
    // Never over a store.
    let (ok, out, err) = restore(&file, &pass);
    assert!(!ok && err.contains("already exists"), "{out}{err}");

    // The controller on the restored store: the agents' tasks are the ones it knew.
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();
    let after = wait_for(
        "the restored controller to see its tasks running",
        Duration::from_secs(30),
        || async {
            let now = running(&rack).await;
            (now == before).then_some(now)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", rack.logs_hint()));
    assert_eq!(after, before);
    // A while later, still the same: nothing was started twice, nothing lost.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running(&rack).await, before);
    let web = rack
        .client()
        .service(&"web-1".parse().unwrap())
        .await
        .unwrap();
    assert_eq!(web.state, Some(TaskState::Running));
    assert_eq!(
        rack.client().secret(&secret).await.unwrap(),
        "hunter2-hunter2-x"
    );
    let as_viewer = rack.client_with(Some(viewer));
    assert!(
        as_viewer.nodes().await.is_ok(),
        "the viewer token still works"
    );
}

/// A controller of several, on a real etcd: `torc backup` reaches the leader whichever
/// controller it asks first (a standby answers 421 naming it), the backup holds the secrets
/// the etcd store keeps sealed under `store.key` (sealed again under the passphrase), and it
/// restores as a sole controller's store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_of_a_controller_on_etcd_comes_from_the_leader_and_restores_to_redb() {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            controllers: 2,
            compute_nodes: 1,
            extra_yaml: SERVICES.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rack.wait_service_running("keeper").await.unwrap();
    let secret = "app-password".parse().unwrap();
    (rack.client())
        .set_secret(&secret, "etcd-sealed-secret-x")
        .await
        .unwrap();
    let leader = rack.controller_status("wedge").await.unwrap().leader;
    let leader = leader.expect("a leader").name;
    let standby = if leader == "wedge" { "wedge2" } else { "wedge" };
    let dir = rack.dir.path().to_path_buf();
    let pass = dir.join("backup.pass");
    std::fs::write(&pass, "a long passphrase for the drill\n").unwrap();
    let file = dir.join("ha.backup");
    // The standby first: the CLI follows its 421 to the leader.
    let out = std::process::Command::new(TORC)
        .args(["backup", "-o", file.to_str().unwrap()])
        .args(["--passphrase-file", pass.to_str().unwrap()])
        .envs(rack.cli_env())
        .env("TORC_CONTROLLER", rack.controller_url(standby))
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("from controller {leader}, checked")),
        "the leader's backup: {stdout}"
    );
    let bytes = std::fs::read(&file).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("etcd-sealed-secret-x"));

    let data = dir.join("restored");
    let (ok, out, err) = rack.torc(
        TORC,
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--passphrase-file",
            pass.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("restored") && out.contains("1 tasks"), "{out}");
}

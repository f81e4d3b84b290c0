//! `torc up` and the CLI, as a new user runs them.

use std::io::{BufRead as _, BufReader};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use torc_test_utils::{free_loopback_block, free_port, processes_mentioning};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn cli(env: &[(&str, String)], args: &[&str]) -> (bool, String, String) {
    let out = Command::new(TORC)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn torc_up_runs_a_rack_the_cli_drives_it_and_ctrl_c_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let b = free_loopback_block().octets();
    let base = Ipv4Addr::new(b[0], b[1], b[2], 20);
    let port = free_port(base);
    let mut up = Command::new(TORC)
        .args(["up", "--nodes", "2", "--ip-base", &base.to_string()])
        .args(["--api-port", &port.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(up.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        seen.push(line.clone());
        if line.starts_with("Try ") {
            break;
        }
    }
    let text = seen.join("\n");
    assert!(text.contains("Rack is up."), "{text}");
    assert!(text.contains("registered (3/3)"), "{text}");
    let url = format!("https://{base}:{port}");
    assert!(
        text.contains(&format!("API:         {url}/api/v1/nodes")),
        "{text}"
    );
    // Credentials: printed where they are, private to the user.
    let token_file = dir.path().join("admin.token");
    let ca = dir.path().join("pki").join("ca.pem");
    assert!(
        text.contains(&token_file.display().to_string())
            && text.contains(&ca.display().to_string()),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(dir.path()), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(mode(&dir.path().join("join.token")), 0o600);
    assert_eq!(mode(&dir.path().join("pki").join("ca.key")), 0o600);

    let env = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_TOKEN_FILE", token_file.display().to_string()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, out, err) = cli(&env, &["nodes"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("NAME"), "{out}");
    for n in ["wedge", "bladerunner1", "bladerunner2"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(n) && l.contains("active")),
            "{out}"
        );
    }

    let (ok, out, err) = cli(
        &env,
        &[
            "run",
            "--wait",
            "--node-function",
            "compute",
            "--",
            "sleep",
            "300",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains(" running on bladerunner"), "{out}");
    let id = out.split_whitespace().next().unwrap().to_string();
    let (ok, out, _) = cli(&env, &["tasks", "--json"]);
    assert!(ok);
    let tasks: serde_json::Value = serde_json::from_str(&out).unwrap();
    let listed = tasks.as_array().unwrap();
    assert!(listed.iter().any(|t| t["id"] == id.as_str()), "{tasks}");
    // The sample rack runs its DNS as a system service.
    assert!(listed.iter().any(|t| t["name"] == "dns"), "{tasks}");

    // Without a token, a change (and a read) is refused with a clear message.
    let no_token = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, _, err) = cli(&no_token, &["kill", &id]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
    let (ok, _, err) = cli(&no_token, &["tasks"]);
    assert!(!ok && err.contains("401"), "{err}");
    // Without the CA, the controller's certificate is not trusted.
    let (ok, _, err) = cli(
        &[
            ("TORC_CONTROLLER", url.clone()),
            ("TORC_TOKEN_FILE", token_file.display().to_string()),
        ],
        &["nodes"],
    );
    assert!(!ok && err.contains("--ca"), "{err}");

    // A viewer token, made with the CLI: it reads, it changes nothing; revoked, it is refused.
    let (ok, viewer, err) = cli(
        &env,
        &["token", "create", "--role", "viewer", "--name", "dash"],
    );
    assert!(ok, "{err}");
    let viewer_file = dir.path().join("viewer.token");
    std::fs::write(&viewer_file, viewer.trim()).unwrap();
    std::fs::set_permissions(&viewer_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let as_viewer = [
        ("TORC_CONTROLLER", url.clone()),
        ("TORC_TOKEN_FILE", viewer_file.display().to_string()),
        ("TORC_CA", ca.display().to_string()),
    ];
    let (ok, out, err) = cli(&as_viewer, &["tasks"]);
    assert!(ok && out.contains(&id), "{out}{err}");
    let (ok, _, err) = cli(&as_viewer, &["kill", &id]);
    assert!(!ok && err.contains("403") && err.contains("admin"), "{err}");
    let (ok, out, _) = cli(&env, &["token", "list"]);
    assert!(ok);
    let line = out
        .lines()
        .find(|l| l.contains("dash"))
        .unwrap()
        .to_string();
    assert!(line.contains("viewer"), "{out}");
    let viewer_id = line.split_whitespace().next().unwrap();
    let (ok, _, err) = cli(&env, &["token", "revoke", viewer_id]);
    assert!(ok, "{err}");
    let (ok, _, err) = cli(&as_viewer, &["tasks"]);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = cli(&env, &["kill", "no-such-task.1"]);
    assert!(!ok);
    assert!(err.contains("no task with id"), "{err}");

    // Ctrl-C: everything stops, the task included.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(up.id() as libc::pid_t, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "torc up did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
}

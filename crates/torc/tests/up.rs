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
    let url = format!("http://{base}:{port}");
    assert!(
        text.contains(&format!("API:   {url}/api/v1/nodes")),
        "{text}"
    );

    let env = [
        ("TORC_CONTROLLER", url.clone()),
        (
            "TORC_TOKEN_FILE",
            dir.path().join("token").display().to_string(),
        ),
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

    // Without the token, a change is refused with a clear message.
    let (ok, _, err) = cli(&[("TORC_CONTROLLER", url.clone())], &["kill", &id]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("Bearer"), "{err}");
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

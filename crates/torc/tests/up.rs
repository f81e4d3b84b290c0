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
    let token_file = dir.path().join("credentials").join("admin.token");
    let ca = dir.path().join("pki").join("ca.pem");
    assert!(
        text.contains(&token_file.display().to_string())
            && text.contains(&ca.display().to_string()),
        "{text}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(dir.path()),
        0o711,
        "tasks reach their sandboxes, list nothing"
    );
    assert_eq!(mode(&dir.path().join("credentials")), 0o700);
    assert_eq!(mode(&token_file), 0o600);
    assert_eq!(
        mode(&dir.path().join("credentials").join("join.token")),
        0o600
    );
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

    // The README's checks, with the rack's credentials: the core services answer dig, etcdctl
    // (as root, with the rack secret), the influx shell over HTTPS (trusting the rack CA) and
    // the seed's 0.8 query with curl; without credentials they refuse.
    readme_checks(&env, base, &ca);

    // Ctrl-C: everything stops, the task included.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
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

/// Runs `cmd` until it succeeds and its stdout contains `want`, for up to 60 s.
fn eventually(what: &str, mut cmd: impl FnMut() -> Command, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = cmd().output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && stdout.contains(want) {
            return stdout;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn readme_checks(env: &[(&str, String)], base: Ipv4Addr, ca: &std::path::Path) {
    let secret = |name: &str| {
        let (ok, out, err) = cli(env, &["secret", "get", name]);
        assert!(ok, "{err}");
        out.trim().to_string()
    };
    let o = base.octets();
    let node1 = Ipv4Addr::new(o[0], o[1], o[2], o[3] + 1);
    eventually(
        "dig for a node",
        || {
            let mut c = Command::new("dig");
            c.args([&format!("@{base}"), "bladerunner1.homer.ave", "+short"]);
            c
        },
        &node1.to_string(),
    );
    let kv_root = secret("kv-root");
    eventually(
        "etcdctl as root",
        || {
            let mut c = Command::new("etcdctl");
            c.env("ETCDCTL_API", "3")
                .arg(format!("--endpoints=https://{base}:2379"))
                .arg(format!("--cacert={}", ca.display()))
                .arg(format!("--user=root:{kv_root}"))
                .args(["get", "/torc", "--prefix", "--keys-only"]);
            c
        },
        "/torc/machines/bladerunner1",
    );
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{base}:2379"))
        .arg(format!("--cacert={}", ca.display()))
        .args(["get", "/torc", "--prefix", "--keys-only"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "etcd's auth is on");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{base}:2379"))
        .arg(format!("--user=root:{kv_root}"))
        .args([
            "--dial-timeout=2s",
            "get",
            "/torc",
            "--prefix",
            "--keys-only",
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "without the rack CA, etcdctl refuses the certificate"
    );
    let (ok, services, err) = cli(env, &["services", "--json"]);
    assert!(ok, "{err}");
    let services: serde_json::Value = serde_json::from_str(&services).unwrap();
    let influx = services
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "influxdb")
        .and_then(|s| s["ip"].as_str())
        .expect("influxdb runs")
        .to_string();
    let admin = secret("tsdb-admin");
    eventually(
        "the influx shell over HTTPS",
        || {
            let mut c = Command::new("influx");
            c.env("SSL_CERT_FILE", ca)
                .args(["-ssl", "-host", &influx, "-username", "admin", "-password"])
                .arg(&admin)
                .args(["-database", "torc", "-execute", "SHOW MEASUREMENTS"]);
            c
        },
        "machine",
    );
    let out = Command::new("influx")
        .args(["-ssl", "-host", &influx, "-execute", "SHOW DATABASES"])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("x509"),
        "without the rack CA, influx refuses the certificate: {said}"
    );
    let seed = eventually(
        "the seed's 0.8 query with curl",
        || {
            let mut c = Command::new("curl");
            c.args(["-s", "--fail", "--cacert"])
                .arg(ca)
                .args(["-G", &format!("https://{influx}:8086/db/torc/series")])
                .args(["--data-urlencode", "u=admin", "--data-urlencode"])
                .arg(format!("p={admin}"))
                .args([
                    "--data-urlencode",
                    "q=select * from machine where hostname = 'bladerunner1' limit 1000",
                ]);
            c
        },
        "sequence_number",
    );
    assert!(seed.contains("cpu_usage_user"), "{seed}");
    let out = Command::new("curl")
        .args(["-s", "--cacert"])
        .arg(ca)
        .args(["-G", &format!("https://{influx}:8086/db/torc/series")])
        .args(["--data-urlencode", "q=list series"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Invalid database/username/password"),
        "0.8's refusal without credentials"
    );
}

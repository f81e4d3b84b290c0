//! The state store and statesync: `torc kv` as the rack's `etcd` system service, statesync
//! keeping `/torc/` equal to the rack, checked with the real `etcdctl`; and statesync against a
//! real etcd.

use std::process::{Command, Stdio};
use std::time::Duration;

use torc_test_utils::{Etcd, LocalRack, RackOptions, plain_state_store, wait_for, which};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn etcdctl(endpoint: &str, args: &[&str]) -> String {
    assert!(
        which("etcdctl").is_some(),
        "etcdctl is not installed: run ./scripts/test (it installs it) or `apt-get install etcd-client`"
    );
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn keys(endpoint: &str) -> Vec<String> {
    etcdctl(endpoint, &["get", "/torc/", "--prefix", "--keys-only"])
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.to_string())
        .collect()
}

/// What the rack runs besides the plain state store and statesync (a 300 ms tick).
const GROUPS: &str = r#"
api:
  service-groups:
    - name: web
      services:
        - name: web
          command: sleep
          args: ["600"]
          memory: 8
          cpu: 0.05
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statesync_keeps_the_state_soup_equal_to_the_rack() {
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            node_timeout_secs: 30,
            extra_yaml: format!("{}{GROUPS}", plain_state_store(300)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let endpoint = format!("http://{}:2379", rack.nodes["wedge"]);

    let ep = endpoint.clone();
    // statesync writes the kinds independently: wait for one of each.
    wait_for(
        "every machine, the etcd service, lo and a route in /torc/",
        Duration::from_secs(30),
        || {
            let ep = ep.clone();
            async move {
                let k = keys(&ep);
                let machines = ["wedge", "bladerunner1", "bladerunner2"]
                    .iter()
                    .all(|n| k.contains(&format!("/torc/machines/{n}")));
                (machines
                    && k.contains(&"/torc/services/etcd".to_string())
                    && k.iter().any(|k| k.starts_with("/torc/ports/lo"))
                    && k.iter().any(|k| k.starts_with("/torc/routes/")))
                .then_some(())
            }
        },
    )
    .await
    .unwrap();
    let k = keys(&endpoint);
    assert!(k.contains(&"/torc/services/etcd".to_string()), "{k:?}");
    assert!(k.iter().any(|k| k.starts_with("/torc/ports/lo")), "{k:?}");
    assert!(k.iter().any(|k| k.starts_with("/torc/routes/")), "{k:?}");
    let m: serde_json::Value = serde_json::from_str(
        etcdctl(
            &endpoint,
            &["get", "/torc/machines/bladerunner1", "--print-value-only"],
        )
        .trim(),
    )
    .unwrap();
    assert_eq!(m["ip"], rack.nodes["bladerunner1"].to_string());
    assert_eq!(m["type"], "slave");

    // A service that starts appears within a second or so; one that stops is removed.
    client.start_group(&"web".parse().unwrap()).await.unwrap();
    let ep = endpoint.clone();
    let v = wait_for("web in /torc/services", Duration::from_secs(10), || {
        let ep = ep.clone();
        async move {
            let v = etcdctl(&ep, &["get", "/torc/services/web", "--print-value-only"]);
            (!v.trim().is_empty()).then_some(v)
        }
    })
    .await
    .unwrap();
    let svc: serde_json::Value = serde_json::from_str(v.trim()).unwrap();
    assert_eq!(svc["owner"], "torc-scheduler");
    assert_eq!(svc["state"], "running");
    client.stop_group(&"web".parse().unwrap()).await.unwrap();
    let ep = endpoint.clone();
    wait_for(
        "web removed from /torc/services",
        Duration::from_secs(10),
        || {
            let ep = ep.clone();
            async move { (!keys(&ep).contains(&"/torc/services/web".to_string())).then_some(()) }
        },
    )
    .await
    .unwrap();

    // Statesync never deletes what it just wrote (a second look changes nothing), and while the
    // controller is down it deletes nothing of the controller's.
    // Away for 30 s (the issue's figure, longer than statesync's interval many times over),
    // looked at every 2 s.
    // Routes and ports follow this host's kernel, which other tests change meanwhile (a
    // namespaced rack adds and removes the host's guard route): only the controller's keys
    // are compared.
    let controllers = |keys: Vec<String>| -> Vec<String> {
        (keys.into_iter())
            .filter(|k| !k.starts_with("/torc/routes/") && !k.starts_with("/torc/ports/"))
            .collect()
    };
    let before = controllers(keys(&endpoint));
    rack.kill_controller();
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(
            controllers(keys(&endpoint)),
            before,
            "nothing removed while the controller is away"
        );
    }
    rack.start_controller().unwrap();
    let names: Vec<String> = rack.nodes.keys().cloned().collect();
    rack.wait_active(&names, true).await.unwrap();

    // etcdctl sees a real etcd: status (given the URL form, which etcdctl sends as the HTTP/2
    // authority, and the bare address), member list, put/get.
    assert!(etcdctl(&endpoint, &["endpoint", "status"]).contains("3.4.0-torc"));
    let bare = endpoint.trim_start_matches("http://");
    assert!(etcdctl(bare, &["endpoint", "status"]).contains("3.4.0-torc"));
    assert!(etcdctl(&endpoint, &["member", "list"]).contains(&endpoint));
    etcdctl(&endpoint, &["put", "/calico/v1/config", "x"]);
    assert_eq!(
        etcdctl(
            &endpoint,
            &["get", "/calico/v1/config", "--print-value-only"]
        )
        .trim(),
        "x"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statesync_works_unchanged_against_a_real_etcd() {
    let real = Etcd::start().await.unwrap();
    let endpoint = real.endpoint.clone();
    let rack = one_node_rack().await;
    let sync = spawn_statesync(&rack, &endpoint, &[]).await;
    let ep = endpoint.clone();
    let found = wait_for("machines in the real etcd", Duration::from_secs(30), || {
        let ep = ep.clone();
        async move {
            // statesync puts keys one by one: wait for both machines, not the first.
            let k = keys(&ep);
            (k.contains(&"/torc/machines/bladerunner1".to_string())
                && k.contains(&"/torc/machines/wedge".to_string()))
            .then_some(k)
        }
    })
    .await;
    drop(sync);
    found.unwrap_or_else(|e| panic!("{e}\netcd's log:\n{}", real.log()));
}

/// A rack of the controller node and one compute node.
async fn one_node_rack() -> LocalRack {
    LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// `torc statesync` for `rack` against `endpoint` every 300 ms, with `extra` arguments, as a
/// viewer of the rack.
async fn spawn_statesync(rack: &LocalRack, endpoint: &str, extra: &[&str]) -> Running {
    let token_file = viewer_token_file(rack).await;
    let child = Command::new(TORC)
        .env("TORC_TOKEN_FILE", &token_file)
        .env("TORC_CA", rack.ca_path().unwrap())
        .args([
            "statesync",
            "--controller",
            &rack.url(),
            "--endpoints",
            endpoint,
        ])
        .args(["--interval-ms", "300"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Running(child)
}

/// A viewer token for statesync run by hand (as the README shows), in a 0600 file.
async fn viewer_token_file(rack: &LocalRack) -> std::path::PathBuf {
    rack.token_file(torc_api::TokenRole::Viewer, None)
        .await
        .unwrap()
}

/// A child process killed (SIGKILL) and reaped when dropped, also when the test fails.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// etcdctl as a user (`USER:PASSWORD`; empty: none); stdout, then stderr's messages.
fn etcdctl_as(endpoint: &str, user: &str, args: &[&str]) -> String {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"));
    if !user.is_empty() {
        cmd.arg(format!("--user={user}"));
    }
    let out = cmd.args(args).output().unwrap();
    // Without the client library's JSON retry logs.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: String = stderr
        .lines()
        .filter(|l| !l.starts_with("{\"level\""))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{}{errors}", String::from_utf8_lossy(&out.stdout))
}

/// A `statesync` user that may read and write `/torc/` only; then auth on (as root:rootpw).
fn add_statesync_user(endpoint: &str) {
    grant_statesync(
        |args| etcdctl_as(endpoint, "root:rootpw", args),
        &["--new-user-password=syncpw"],
    );
}

/// Through `etcdctl` (as root): a `statesync` user (`user add statesync` with `user_flags`)
/// with a role that may read and write `/torc/` only; then auth on.
fn grant_statesync(etcdctl: impl Fn(&[&str]) -> String, user_flags: &[&str]) {
    let user_add = [&["user", "add", "statesync"][..], user_flags].concat();
    for args in [
        &user_add[..],
        &["role", "add", "statesync"],
        &[
            "role",
            "grant-permission",
            "statesync",
            "readwrite",
            "/torc/",
            "--prefix",
        ],
        &["user", "grant-role", "statesync", "statesync"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(args);
        assert!(!out.contains("Error"), "etcdctl {args:?}: {out}");
    }
}

fn write_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Waits until torc kv at `endpoint` answers `user` (`NAME:PASSWORD`).
fn wait_answers(endpoint: &str, user: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !etcdctl_as(endpoint, user, &["get", "nothing-here"]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "torc kv never answered {user}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `torc kv` on a free loopback address; returns it and its endpoint.
fn start_kv(data: &std::path::Path, extra: &[&str], log: &std::path::Path) -> (Running, String) {
    let block = torc_test_utils::free_loopback_block().octets();
    let ip = std::net::Ipv4Addr::new(block[0], block[1], block[2], 1);
    let listen = format!("{ip}:{}", torc_test_utils::free_port(ip));
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(TORC)
        .args(["kv", "--listen", &listen, "--data-dir"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    (Running(child), format!("http://{listen}"))
}

/// statesync with `--user` and `--password-file`, against a real etcd with auth enabled and
/// against `torc kv` bootstrapped with `--root-password-file`: the same user with a `/torc/`
/// role on both, the same keys written to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statesync_authenticates_to_a_real_etcd_and_to_torc_kv() {
    let tmp = tempfile::tempdir().unwrap();
    let root_file = write_file(tmp.path(), "root-password", "rootpw\n");
    let sync_file = write_file(tmp.path(), "statesync-password", "syncpw\n");

    let real = Etcd::start().await.unwrap();
    let out = etcdctl_as(
        &real.endpoint,
        "root:rootpw",
        &["user", "add", "root", "--new-user-password=rootpw"],
    );
    assert_eq!(out, "User root created\n");
    add_statesync_user(&real.endpoint);

    let (_kv, torc_kv) = start_kv(
        &tmp.path().join("kv"),
        &["--root-password-file", root_file.to_str().unwrap()],
        &tmp.path().join("kv.log"),
    );
    let ep = torc_kv.clone();
    wait_for("torc kv to answer root", Duration::from_secs(20), || {
        let ep = ep.clone();
        async move {
            let out = etcdctl_as(&ep, "root:rootpw", &["get", "x"]);
            out.is_empty().then_some(())
        }
    })
    .await
    .unwrap();
    // auth enable in add_statesync_user is a no-op there: the bootstrap enabled it.
    add_statesync_user(&torc_kv);

    let rack = one_node_rack().await;
    let sync_file = sync_file.to_str().unwrap();
    let mut syncs = Vec::new();
    for endpoint in [&real.endpoint, &torc_kv] {
        let extra = ["--user", "statesync", "--password-file", sync_file];
        syncs.push(spawn_statesync(&rack, endpoint, &extra).await);
    }
    for endpoint in [&real.endpoint, &torc_kv] {
        let ep = endpoint.to_string();
        let found = wait_for("machines in the store", Duration::from_secs(30), || {
            let ep = ep.clone();
            async move {
                let k = etcdctl_as(
                    &ep,
                    "root:rootpw",
                    &["get", "/torc/", "--prefix", "--keys-only"],
                );
                (k.contains("/torc/machines/bladerunner1") && k.contains("/torc/machines/wedge"))
                    .then_some(k)
            }
        })
        .await;
        found.unwrap_or_else(|e| panic!("{endpoint}: {e}\netcd's log:\n{}", real.log()));
        // Auth is on: without a user nothing is readable, and statesync's user reads only
        // /torc/.
        let out = etcdctl_as(endpoint, "", &["get", "/torc/", "--prefix"]);
        assert_eq!(out, "Error: etcdserver: user name is empty\n", "{endpoint}");
        let out = etcdctl_as(
            endpoint,
            "statesync:syncpw",
            &["get", "/calico", "--prefix"],
        );
        assert_eq!(out, "Error: etcdserver: permission denied\n", "{endpoint}");
    }
}

/// `torc kv --root-password-file` creates root and enables auth once; a restart with another
/// file leaves root as it is and says the file was not used.
#[test]
fn torc_kv_bootstraps_root_once_from_a_password_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("kv");
    let first = write_file(tmp.path(), "first", "first-pw\n");
    let log = tmp.path().join("kv.log");
    let wait_ready = |endpoint: &str| wait_answers(endpoint, "root:first-pw");
    {
        let (_kv, endpoint) = start_kv(
            &data,
            &[
                "--root-password-file",
                first.to_str().unwrap(),
                "--auth-token-ttl",
                "60",
            ],
            &log,
        );
        wait_ready(&endpoint);
        assert_eq!(
            etcdctl_as(&endpoint, "", &["get", "x"]),
            "Error: etcdserver: user name is empty\n"
        );
        assert_eq!(
            etcdctl_as(&endpoint, "root:first-pw", &["put", "x", "1"]),
            "OK\n"
        );
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("created the root user")
        );
        // _kv is killed here (SIGKILL): the bootstrap was durable before serving.
    }
    let second = write_file(tmp.path(), "second", "second-pw\n");
    let (_kv, endpoint) = start_kv(
        &data,
        &["--root-password-file", second.to_str().unwrap()],
        &log,
    );
    wait_ready(&endpoint);
    assert_eq!(
        etcdctl_as(&endpoint, "root:second-pw", &["get", "x"]),
        "Error: etcdserver: authentication failed, invalid user ID or password\n"
    );
    assert_eq!(
        etcdctl_as(
            &endpoint,
            "root:first-pw",
            &["get", "x", "--print-value-only"]
        ),
        "1\n"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("the root password file was not used"),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    // A password file that cannot be used stops torc kv with a clear error.
    let empty = write_file(tmp.path(), "empty", "\n");
    let out = Command::new(TORC)
        .args(["kv", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--root-password-file")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("the password file {} is empty", empty.display())),
        "{stderr}"
    );
}

/// `torc` with `args`; its combined output, failing the test if it fails.
fn torc(args: &[&str]) -> String {
    let out = Command::new(TORC).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "torc {args:?}: {text}");
    text
}

/// `torc kv` over TLS with client certificates naming users (etcd's `--cert-file`, `--key-file`,
/// `--trusted-ca-file`, `--client-cert-auth`, certificates from `torc ca`), and statesync with
/// etcdctl's `--cacert`, `--cert` and `--key`: its certificate's common name is its user, which
/// has no password at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statesync_reaches_torc_kv_over_tls_as_the_user_its_certificate_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let ca = dir.join("ca");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    torc(&["ca", "init", ca.to_str().unwrap()]);
    let block = torc_test_utils::free_loopback_block().octets();
    let ip = std::net::Ipv4Addr::new(block[0], block[1], block[2], 1);
    let listen = format!("{ip}:{}", torc_test_utils::free_port(ip));
    let ca_dir = ca.to_str().unwrap();
    torc(&[
        "ca",
        "issue",
        ca_dir,
        "--out",
        &p("kv"),
        "--ip",
        &ip.to_string(),
    ]);
    for user in ["root", "statesync"] {
        torc(&["ca", "issue", ca_dir, "--out", &p(user), "--dns", user]);
    }
    let cacert = ca.join("ca.pem").to_str().unwrap().to_string();
    let root_file = write_file(dir, "root-password", "rootpw\n");
    let log = dir.join("kv.log");
    let child = Command::new(TORC)
        .args(["kv", "--listen", &listen, "--data-dir", &p("data")])
        .args(["--cert-file", &p("kv.crt"), "--key-file", &p("kv.key")])
        .args(["--trusted-ca-file", &cacert, "--client-cert-auth"])
        .args(["--root-password-file", root_file.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _kv = Running(child);
    let endpoint = format!("https://{listen}");
    let etcdctl_tls = |cert: Option<&str>, args: &[&str]| {
        let mut tls = vec![format!("--cacert={cacert}")];
        if let Some(name) = cert {
            tls.push(format!("--cert={}.crt", p(name)));
            tls.push(format!("--key={}.key", p(name)));
        }
        tls.push("--command-timeout=2s".into());
        let tls: Vec<&str> = tls.iter().map(String::as_str).collect();
        etcdctl_as(&endpoint, "", &[&tls[..], args].concat())
    };
    let ready = wait_for("torc kv over TLS", Duration::from_secs(20), || {
        let out = etcdctl_tls(Some("root"), &["user", "list"]);
        async move { (out == "root\n").then_some(()) }
    })
    .await;
    ready.unwrap_or_else(|e| panic!("{e}\nkv's log:\n{}", std::fs::read_to_string(&log).unwrap()));
    assert_eq!(
        etcdctl_tls(Some("root"), &["member", "list"])
            .trim_end()
            .rsplit(", ")
            .nth(1),
        Some(endpoint.as_str())
    );
    // Certificate only: no password.
    grant_statesync(|args| etcdctl_tls(Some("root"), args), &["--no-password"]);

    let rack = one_node_rack().await;
    let (cert, key) = (p("statesync.crt"), p("statesync.key"));
    let extra = ["--cacert", &cacert, "--cert", &cert, "--key", &key];
    let _statesync = spawn_statesync(&rack, &endpoint, &extra).await;
    wait_for("machines in torc kv", Duration::from_secs(30), || {
        let k = etcdctl_tls(Some("root"), &["get", "/torc/", "--prefix", "--keys-only"]);
        async move {
            (k.contains("/torc/machines/bladerunner1") && k.contains("/torc/machines/wedge"))
                .then_some(())
        }
    })
    .await
    .unwrap();
    // statesync's certificate reads /torc/ only; no certificate, no connection.
    assert_eq!(
        etcdctl_tls(Some("statesync"), &["get", "/calico"]),
        "Error: etcdserver: permission denied\n"
    );
    assert_eq!(
        etcdctl_tls(None, &["get", "/torc/", "--prefix"]),
        "Error: context deadline exceeded\n"
    );
}

/// Bad TLS flags stop `torc kv` and `torc statesync` at once, naming what is wrong.
#[test]
fn bad_tls_flags_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |args: &[&str]| {
        let out = Command::new(TORC).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let kv = |extra: &[&str]| {
        let base = [
            "kv",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
        ];
        run(&[&base[..], extra].concat())
    };
    let missing = tmp.path().join("missing.crt");
    let missing = missing.to_str().unwrap();
    let err = kv(&["--cert-file", missing, "--key-file", missing]);
    assert!(err.contains("missing.crt"), "{err}");
    // clap: the certificate needs its key; --client-cert-auth needs a CA.
    let err = kv(&["--cert-file", missing]);
    assert!(err.contains("--key-file"), "{err}");
    let err = kv(&["--client-cert-auth"]);
    assert!(err.contains("--trusted-ca-file"), "{err}");
    let exposed = write_file(tmp.path(), "exposed.key", "x");
    let cert = write_file(tmp.path(), "some.crt", "x");
    let err = kv(&[
        "--cert-file",
        cert.to_str().unwrap(),
        "--key-file",
        exposed.to_str().unwrap(),
    ]);
    assert!(err.contains("readable by others"), "{err}");
    let err = run(&[
        "statesync",
        "--controller",
        "http://127.0.0.1:1",
        "--endpoints",
        "http://127.0.0.1:2379",
        "--cacert",
        missing,
    ]);
    assert!(err.contains("missing.crt"), "{err}");
    // The scheme decides, before statesync waits for its controller.
    let err = run(&[
        "statesync",
        "--controller",
        "http://127.0.0.1:1",
        "--endpoints",
        "https://127.0.0.1:2379",
    ]);
    assert!(err.contains("--cacert"), "{err}");
}

/// `torc kv --listen-metrics-urls`: the real `promtool` reads its `/metrics`; it counts the
/// requests `etcdctl` made; and every `etcd_*` family it writes is one a real etcd 3.4 writes,
/// of the same type (scraped from the real etcd's client URL in the same test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torc_kv_metrics_use_etcds_names() {
    use torc_test_utils::prom::{promtool_problems, sample};
    let tmp = tempfile::tempdir().unwrap();
    let metrics_port = torc_test_utils::free_port(std::net::Ipv4Addr::LOCALHOST);
    let metrics_url = format!("http://127.0.0.1:{metrics_port}");
    let (_kv, ep) = start_kv(
        &tmp.path().join("kv"),
        &["--listen-metrics-urls", &metrics_url],
        &tmp.path().join("kv.log"),
    );
    let http = reqwest::Client::new();
    let scrape = |url: String| {
        let http = http.clone();
        async move { http.get(url).send().await.ok()?.text().await.ok() }
    };
    wait_for("torc kv's /metrics", Duration::from_secs(20), || {
        scrape(format!("{metrics_url}/metrics"))
    })
    .await
    .unwrap();
    for args in [
        &["put", "a", "1"][..],
        &["put", "b", "2"],
        &["get", "a"],
        &["del", "b"],
    ] {
        let out = etcdctl(&ep, args);
        assert!(!out.contains("Error"), "etcdctl {args:?}: {out}");
    }
    let text = scrape(format!("{metrics_url}/metrics")).await.unwrap();
    let problems = promtool_problems(&text).unwrap();
    for (series, want) in [
        ("etcd_mvcc_put_total", 2.0),
        ("etcd_mvcc_range_total", 1.0),
        ("etcd_mvcc_delete_total", 1.0),
        ("etcd_mvcc_txn_total", 0.0),
        ("etcd_server_proposals_committed_total", 3.0),
        ("etcd_server_proposals_failed_total", 0.0),
        ("etcd_debugging_mvcc_current_revision", 4.0),
        ("etcd_disk_wal_fsync_duration_seconds_count", 3.0),
        ("etcd_server_has_leader", 1.0),
    ] {
        assert_eq!(sample(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(sample(&text, "etcd_mvcc_db_total_size_in_bytes") > Some(0.0));

    let types = |text: &str| -> std::collections::BTreeMap<String, String> {
        (text.lines())
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .map(|(name, kind)| (name.to_string(), kind.to_string()))
            .collect()
    };
    let real = Etcd::start().await.unwrap();
    let etcd_text = scrape(format!("{}/metrics", real.endpoint)).await.unwrap();
    let (ours, theirs) = (types(&text), types(&etcd_text));
    let etcd_families: Vec<_> = ours.keys().filter(|n| n.starts_with("etcd_")).collect();
    assert!(etcd_families.len() >= 10, "{ours:?}");
    for name in etcd_families {
        assert_eq!(
            theirs.get(name),
            ours.get(name),
            "{name}: torc kv's type, and etcd 3.4's"
        );
    }
    // What promtool's linter says of torc kv's text it says of etcd's own (a gauge etcd named
    // `_total`): torc kv keeps etcd's names, warts included, and adds none of its own.
    let etcd_problems = promtool_problems(&etcd_text).unwrap();
    for problem in &problems {
        assert!(
            etcd_problems.contains(problem),
            "{problem}; etcd's: {etcd_problems:?}"
        );
    }
}

/// The kv backup drill, with the real processes and tools: `torc kv` with auth on, keys
/// written, `etcdctl snapshot save` (as root), the server killed (SIGKILL), `torc kv restore`
/// into a new data dir, and `torc kv` there serves the same keys to the same users (auth comes
/// back with the data). A damaged file and a data dir in use are refused, naming them.
#[test]
fn torc_kv_restore_brings_back_a_snapshot_with_its_users() {
    let tmp = tempfile::tempdir().unwrap();
    let root_file = write_file(tmp.path(), "root-password", "rootpw\n");
    let log = tmp.path().join("kv.log");
    let snapshot = tmp.path().join("backup.db");
    let wait_ready = |endpoint: &str| wait_answers(endpoint, "root:rootpw");
    let (before, revision) = {
        let (_kv, endpoint) = start_kv(
            &tmp.path().join("kv"),
            &["--root-password-file", root_file.to_str().unwrap()],
            &log,
        );
        wait_ready(&endpoint);
        for i in 0..20 {
            let out = etcdctl_as(
                &endpoint,
                "root:rootpw",
                &["put", &format!("/b/{i}"), &format!("v{i}")],
            );
            assert_eq!(out, "OK\n");
        }
        etcdctl_as(&endpoint, "root:rootpw", &["del", "/b/3"]);
        let out = etcdctl_as(
            &endpoint,
            "root:rootpw",
            &["snapshot", "save", snapshot.to_str().unwrap()],
        );
        assert!(out.contains("Snapshot saved at"), "{out}");
        let state = etcdctl_as(
            &endpoint,
            "root:rootpw",
            &["get", "--prefix", "/b/", "-w", "json"],
        );
        let json: serde_json::Value = serde_json::from_str(state.trim()).unwrap();
        (
            json["kvs"].clone(),
            json["header"]["revision"].as_i64().unwrap(),
        )
        // _kv is killed here (SIGKILL).
    };
    let restore = |file: &std::path::Path, dir: &std::path::Path| {
        Command::new(TORC)
            .args(["kv", "restore", "--snapshot"])
            .arg(file)
            .arg("--data-dir")
            .arg(dir)
            .output()
            .unwrap()
    };
    let restored = tmp.path().join("restored");
    let out = restore(&snapshot, &restored);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("revision {revision}")), "{said}");
    assert!(said.contains("1 users, 1 roles"), "{said}");

    let (_kv, endpoint) = start_kv(&restored, &[], &log);
    wait_ready(&endpoint);
    assert_eq!(
        etcdctl_as(&endpoint, "", &["get", "x"]),
        "Error: etcdserver: user name is empty\n"
    );
    let state = etcdctl_as(
        &endpoint,
        "root:rootpw",
        &["get", "--prefix", "/b/", "-w", "json"],
    );
    let json: serde_json::Value = serde_json::from_str(state.trim()).unwrap();
    assert_eq!(json["kvs"], before);
    assert_eq!(json["header"]["revision"].as_i64(), Some(revision));

    // Refusals: the data dir now in use, and a changed byte.
    let refused = |file: &std::path::Path, dir: &std::path::Path| {
        let out = restore(file, dir);
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&snapshot, &restored);
    assert!(err.contains("restored is not empty"), "{err}");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    bytes[4096 * 3 + 100] ^= 1;
    let damaged = write_file(tmp.path(), "damaged.db", "");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = refused(&damaged, &tmp.path().join("other"));
    assert!(err.contains("damaged.db is damaged"), "{err}");
    assert!(!tmp.path().join("other").exists());
}

//! The DNS example end to end on a local rack, thresholds scaled for test speed: one server up
//! and resolvable → load 200 → load 400 → a second server starts, resolves, and takes queries →
//! the load drops → it is stopped; no flapping; a killed server is restarted and the load
//! recovers. Its port-3005 API serves TLS (a certificate of the rack CA) and is reached
//! directly and through the controller.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use torc_api::TokenRole;
use torc_test_utils::{
    DNS_SYSTEM_SERVICE, LocalRack, RackOptions, free_port, processes_mentioning, system_services,
    wait_for, which,
};

const SCHEDULER: &str = env!("CARGO_BIN_EXE_torc-dns-scheduler");

/// The `torc` binary, built next to this one by `cargo test --workspace` / `./scripts/test`.
fn torc() -> PathBuf {
    let p = PathBuf::from(SCHEDULER).with_file_name("torc");
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build -p torc`, or run ./scripts/test)",
        p.display()
    );
    p
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dig_short(server: &str, args: &[&str]) -> Vec<String> {
    assert!(
        which("dig").is_some(),
        "dig is not installed: `apt-get install bind9-dnsutils`"
    );
    let out = Command::new("dig")
        .arg(format!("@{server}"))
        .args(["+time=1", "+tries=1", "+short"])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_scheduler_scales_with_the_load() {
    story(Server::Torc).await;
}

/// The same story with bind9's `named` answering (`run --server named`): the servers are named,
/// and the scaler reads named's own query counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dns_scheduler_scales_named_servers_with_the_load() {
    story(Server::Named).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Torc,
    Named,
}

/// Where Debian puts `named` (not on every user's PATH).
fn named() -> String {
    let found = which("named").or_else(|| {
        ["/usr/sbin/named", "/sbin/named"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    });
    found
        .expect("bind9's named is not installed: run ./scripts/test (it installs it) or `apt-get install bind9`")
        .display()
        .to_string()
}

async fn story(server: Server) {
    let rack = LocalRack::start(
        torc(),
        RackOptions {
            compute_nodes: 2,
            node_timeout_secs: 30,
            extra_yaml: format!(
                "{}{}",
                system_services(&[DNS_SYSTEM_SERVICE]),
                r#"    - name: influxdb
      command: torc
      args: [tsdb, --listen, "$IP:8086", --data-dir, "$DATA_DIR"]
      memory: 128
      cpu: 0.2
      node_function: controller
"#
            ),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let wedge = rack.nodes["wedge"].to_string();
    // The scheduler acts with a framework token of its own, not the admin's.
    let framework_token = rack
        .token_file(TokenRole::Framework, Some("torc-dns-scheduler"))
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let api_port = free_port(std::net::Ipv4Addr::LOCALHOST);
    // The port-3005 API serves TLS with a certificate of the rack CA.
    let issued = Command::new(torc())
        .args(["ca", "issue"])
        .arg(rack.dir.path().join("pki"))
        .arg("--out")
        .arg(state.path().join("api"))
        .args(["--ip", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(issued.status.success(), "{issued:?}");
    let api = format!("https://127.0.0.1:{api_port}");
    let log = std::fs::File::create(rack.dir.path().join("dns-scheduler.log")).unwrap();
    let _scheduler = Killed(
        Command::new(SCHEDULER)
            .args(["run", "--controller", &rack.url()])
            .args(match server {
                Server::Torc => vec!["--server".to_string(), "torc".into()],
                Server::Named => vec![
                    "--server".to_string(),
                    "named".into(),
                    "--named".into(),
                    named(),
                ],
            })
            .args(["--token-file", &framework_token.display().to_string()])
            .args(["--ca", &rack.ca_path().unwrap().display().to_string()])
            .args(["--state-dir", &state.path().display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .arg("--tls-certificate")
            .arg(state.path().join("api.crt"))
            .arg("--tls-private-key")
            .arg(state.path().join("api.key"))
            .args(["--rack-dns", &format!("{wedge}:53")])
            .args(["--tsdb", &format!("http://{wedge}:8086")])
            .args([
                "--high-qps",
                "400",
                "--low-qps",
                "250",
                "--k",
                "2",
                "--n",
                "3",
            ])
            .args([
                "--cooldown-secs",
                "8",
                "--interval-secs",
                "2",
                "--load-mean-ms",
                "1000",
                "--load-dev-ms",
                "300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let http = rack.http_admin();
    let scaling = || {
        let http = http.clone();
        let url = format!("{api}/api/v1/scaling");
        async move {
            http.get(url)
                .send()
                .await
                .ok()?
                .json::<serde_json::Value>()
                .await
                .ok()
        }
    };
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap().status().as_u16() }
    };
    // On a failure: the scheduler's log and the output of every dns-sl task it started.
    let hint = || {
        let mut out =
            std::fs::read_to_string(rack.dir.path().join("dns-scheduler.log")).unwrap_or_default();
        let agents = rack.dir.path().join("agents");
        for sandbox in std::fs::read_dir(&agents)
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|node| {
                std::fs::read_dir(node.path().join("sandboxes"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .filter(|s| s.file_name().to_string_lossy().contains("dns-sl"))
        {
            for stream in ["stdout", "stderr"] {
                let text = std::fs::read_to_string(sandbox.path().join(stream)).unwrap_or_default();
                out.push_str(&format!(
                    "--- {} {stream}\n{text}",
                    sandbox.path().display()
                ));
            }
        }
        out
    };

    // One server up, resolvable in the service domain, answering the demo zone.
    let w = wedge.clone();
    let sl1 = wait_for("dns-sl1 to resolve", Duration::from_secs(40), || {
        let w = w.clone();
        async move {
            dig_short(&w, &["_dns-sl1._tcp.service.torc", "SRV"])
                .into_iter()
                .next()
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    // Its port-3005 API speaks TLS only, and wants a viewer (to read) or an admin (to act), as
    // the controller does.
    assert!(
        reqwest::Client::new()
            .get(format!("http://127.0.0.1:{api_port}/admin/ping"))
            .send()
            .await
            .is_err(),
        "plain HTTP is not served"
    );
    let plain = rack.http();
    let r = plain
        .get(format!("{api}/api/v1/scaling"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let viewer = rack.make_token(TokenRole::Viewer, None).await.unwrap();
    let r = plain
        .get(format!("{api}/start/group?name=normalload200"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a viewer cannot start a load");
    let port = sl1.split_whitespace().nth(2).unwrap().to_string();
    // One try of one second per dig: on a loaded machine an answer can miss it, so ask again.
    let w = wedge.clone();
    let ip = wait_for("dns-sl1's address", Duration::from_secs(10), || {
        let w = w.clone();
        async move { dig_short(&w, &["dns-sl1.service.torc"]).into_iter().next() }
    })
    .await
    .unwrap();
    // The name is published when the task runs; the server answers a moment later.
    let (i, p) = (ip.clone(), port.clone());
    wait_for(
        "dns-sl1 to serve the demo zone",
        Duration::from_secs(20),
        || {
            let (i, p) = (i.clone(), p.clone());
            async move { (dig_short(&i, &["-p", &p, "host3.homer.ave"]).len() == 17).then_some(()) }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    // The server is the one asked for: named says it is BIND; torc dns does not answer that.
    let version = dig_short(&ip, &["-p", &port, "version.bind", "CH", "TXT"]);
    assert_eq!(
        version.iter().any(|v| v.contains("9.")),
        server == Server::Named,
        "version.bind: {version:?}"
    );

    // Load 200: one server is enough. Started through the controller, which forwards the call
    // to the scheduler's registered https API (checking its certificate against the rack CA).
    let through_controller = http
        .post(format!(
            "{}/api/v1/frameworks/torc-dns-scheduler/groups/normalload200/start",
            rack.url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        through_controller.status().as_u16(),
        200,
        "{:?}",
        through_controller.text().await
    );
    wait_for("~200 qps measured", Duration::from_secs(40), || async {
        let s = scaling().await?;
        (s["last_observation"]["total_qps"].as_f64()? > 120.0).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    assert_eq!(scaling().await.unwrap()["desired_servers"], 1);

    // Load 400 more: a second server starts, resolves, and takes queries.
    assert_eq!(
        get(format!("{api}/start/group?name=normalload400")).await,
        200
    );
    wait_for("a second server", Duration::from_secs(60), || async {
        let s = scaling().await?;
        (s["desired_servers"] == 2).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    let w = wedge.clone();
    wait_for("dns-sl2 to resolve", Duration::from_secs(30), || {
        let w = w.clone();
        async move { (!dig_short(&w, &["dns-sl2.service.torc"]).is_empty()).then_some(()) }
    })
    .await
    .unwrap();
    let client = rack.client();
    let load_task = |name: &'static str| {
        let client = client.clone();
        async move {
            client
                .tasks(&Default::default())
                .await
                .ok()?
                .into_iter()
                .find(|t| t.name.as_str() == name && t.state == torc_types::TaskState::Running)
        }
    };
    let t400 = load_task("normalload400").await.expect("the load runs");
    wait_for(
        "the load to spread to dns-sl2",
        Duration::from_secs(30),
        || async {
            let out = client.logs(&t400.id, &Default::default()).await.ok()?;
            let last: serde_json::Value = serde_json::from_str(out.data.lines().last()?).ok()?;
            let per = &last["per_server_qps"];
            (per["dns-sl1"].as_f64()? > 50.0 && per["dns-sl2"].as_f64()? > 50.0).then_some(())
        },
    )
    .await
    .unwrap();

    // A killed server is restarted, and the load recovers.
    let sl1_task = load_task("dns-sl1").await.unwrap();
    let shim = processes_mentioning(rack.dir.path())
        .into_iter()
        .find(|(_, cmd)| cmd.contains("shim") && cmd.contains(sl1_task.id.as_str()))
        .map(|(pid, _)| pid)
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for(
        "dns-sl1 restarted and serving the load again",
        Duration::from_secs(40),
        || async {
            let t = load_task("dns-sl1").await?;
            if t.id == sl1_task.id {
                return None;
            }
            let out = client.logs(&t400.id, &Default::default()).await.ok()?;
            let last: serde_json::Value = serde_json::from_str(out.data.lines().last()?).ok()?;
            (last["per_server_qps"]["dns-sl1"].as_f64()? > 50.0).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    if server == Server::Named {
        // The killed server's named went with it (not orphaned, holding its port).
        let old = sl1_task.id.to_string();
        wait_for(
            "the killed server's named to end",
            Duration::from_secs(10),
            || {
                let old = old.clone();
                let dir = rack.dir.path().to_path_buf();
                async move {
                    processes_mentioning(&dir)
                        .iter()
                        .all(|(_, cmd)| !(cmd.contains("named.conf") && cmd.contains(&old)))
                        .then_some(())
                }
            },
        )
        .await
        .unwrap();
    }

    // The load drops: the second server is stopped, and its name goes.
    assert_eq!(
        http.delete(format!("{api}/service?name=normalload400"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    wait_for("back to one server", Duration::from_secs(60), || async {
        let s = scaling().await?;
        (s["desired_servers"] == 1).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", hint()));
    let w = wedge.clone();
    wait_for(
        "dns-sl2 to be gone from DNS",
        Duration::from_secs(30),
        || {
            let w = w.clone();
            async move {
                dig_short(&w, &["dns-sl2.service.torc"])
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await
    .unwrap();

    // Exactly one step up and one down: no flapping; each decision says why, and is in the
    // rack's event feed.
    let s = scaling().await.unwrap();
    let decisions = s["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(
        (decisions[0]["from"].as_u64(), decisions[0]["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (decisions[1]["from"].as_u64(), decisions[1]["to"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        decisions[0]["reason"]
            .as_str()
            .unwrap()
            .contains("qps per server")
    );
    let feed: Vec<serde_json::Value> = http
        .get(format!("{}/api/v1/events", rack.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(feed.iter().any(|e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("scaling DNS servers 1 -> 2"))
    }));
    // The decisions survive in the scheduler's state file.
    let saved = std::fs::read_to_string(state.path().join("state.json")).unwrap();
    assert!(saved.contains("\"decisions\""));
}

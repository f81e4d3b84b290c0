//! The probe suite: a rack with its core services, attacked as someone on the rack network
//! would, port by port. After every attempt each role is still alive and answering, nothing
//! restarted, and the rack's data is intact.
//!
//! Every probe targets loopback addresses of the test's own rack, with bounded loops.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use torc_test_utils::{DNS_SYSTEM_SERVICE, LocalRack, RackOptions, system_services};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

/// The core services under attack: `dns`, etcd and influxdb with TLS and auth, the collector.
fn services() -> String {
    let rest = r#"    - name: etcd
      command: torc
      args: [kv, --listen, "$IP:2379", --data-dir, "$DATA_DIR", --root-password-file, "$SECRETS_DIR/kv-root",
             --cert-file, "$SECRETS_DIR/tls.crt", --key-file, "$SECRETS_DIR/tls.key"]
      credentials: {tls: true, secrets: [kv-root]}
      memory: 64
      cpu: 0.2
      node_function: controller
    - name: influxdb
      command: torc
      args: [tsdb, --listen, "$IP:8086", --data-dir, "$DATA_DIR",
             --https-certificate, "$SECRETS_DIR/tls.crt", --https-private-key, "$SECRETS_DIR/tls.key",
             --admin-user, admin, --admin-password-file, "$SECRETS_DIR/tsdb-admin"]
      credentials: {tls: true, secrets: [tsdb-admin]}
      memory: 128
      cpu: 0.2
      node_name: bladerunner1
    - name: datacollector
      command: torc
      args: [datacollector, --influxdb, "service:influxdb", --interval-seconds, "1",
             --user, admin, --password-file, "$SECRETS_DIR/tsdb-admin"]
      credentials: {api_access: viewer, secrets: [tsdb-admin]}
      memory: 40
      cpu: 0.1
      node_name: bladerunner1
      dependent_service: influxdb
access:
  etcd: {user: root, password_secret: kv-root}
  influxdb: {user: admin, password_secret: tsdb-admin}
"#;
    format!("{}{rest}", system_services(&[DNS_SYSTEM_SERVICE]))
}

/// The rack under attack, and what must survive.
struct Target {
    rack: LocalRack,
    controller: SocketAddr,
    agent: SocketAddr,
    kv: SocketAddr,
    tsdb: SocketAddr,
    dns: SocketAddr,
    kv_root: String,
    tsdb_admin: String,
}

async fn target() -> Target {
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            extra_yaml: services(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    for name in ["dns", "etcd", "influxdb", "datacollector"] {
        rack.wait_service_running(name).await.unwrap();
    }
    let client = rack.client();
    let wedge = rack.nodes["wedge"];
    let b1 = rack.nodes["bladerunner1"];
    let agent = client
        .node(&"bladerunner1".parse().unwrap())
        .await
        .unwrap()
        .agent_url
        .unwrap();
    let agent: SocketAddr = agent.trim_start_matches("https://").parse().unwrap();
    let kv_root = client.secret(&"kv-root".parse().unwrap()).await.unwrap();
    let tsdb_admin = client.secret(&"tsdb-admin".parse().unwrap()).await.unwrap();
    Target {
        controller: SocketAddr::from((wedge, rack.port)),
        agent,
        kv: SocketAddr::from((wedge, 2379)),
        tsdb: SocketAddr::from((b1, 8086)),
        dns: SocketAddr::from((wedge, 53)),
        rack,
        kv_root,
        tsdb_admin,
    }
}

fn etcdctl(t: &Target, args: &[&str]) -> std::process::Output {
    std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", t.kv))
        .arg(format!("--cacert={}", t.rack.ca_path().unwrap().display()))
        .arg(format!("--user=root:{}", t.kv_root))
        .args(args)
        .output()
        .expect("etcdctl")
}

fn tsdb_http(t: &Target) -> reqwest::Client {
    let roots = torc_tls::load_certs(&t.rack.ca_path().unwrap()).unwrap();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .tls_backend_preconfigured(torc_tls::client_config(&roots, None).unwrap())
        .build()
        .unwrap()
}

/// Every role alive and answering, nothing restarted, the canaries in place.
async fn assert_intact(t: &Target, after: &str) {
    let client = t.rack.client();
    let status = client
        .status()
        .await
        .unwrap_or_else(|e| panic!("after {after}: {e}"));
    for s in &status.services {
        assert_eq!(
            s.running, s.desired,
            "after {after}: {} is not running",
            s.name
        );
        assert_eq!(s.restarts, 0, "after {after}: {} restarted", s.name);
    }
    assert_eq!(status.nodes_active, status.nodes_total, "after {after}");
    let out = etcdctl(t, &["get", "/canary"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("still-here"),
        "after {after}: the kv canary: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And through the state browser (the controller's own TLS client of kv, logged in).
    let listing: serde_json::Value = t
        .rack
        .http_admin()
        .get(format!("{}/api/v1/kv", t.rack.url()))
        .query(&[("prefix", "/canary")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {after}: the state browser: {e}"))
        .json()
        .await
        .unwrap();
    assert_eq!(
        listing["entries"][0]["value"], "still-here",
        "after {after}: the state browser: {listing}"
    );
    let r = tsdb_http(t)
        .get(format!("https://{}/query", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("db", "canary"), ("q", "SELECT count(v) FROM m")])
        .send()
        .await
        .unwrap_or_else(|e| panic!("after {after}: tsdb: {e}"));
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1], 3,
        "after {after}: the tsdb canary: {v}"
    );
    let dig = std::process::Command::new("dig")
        .args([&format!("@{}", t.dns.ip()), "-p", "53", "+short", "+time=2"])
        .arg("wedge.homer.ave")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&dig.stdout).contains(&t.rack.nodes["wedge"].to_string()),
        "after {after}: dns"
    );
}

/// Writes raw bytes to a TCP port and reads what comes back (bounded), then closes.
fn raw(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(_) => return Vec::new(),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = std::io::Read::by_ref(&mut s)
        .take(64 << 10)
        .read_to_end(&mut out);
    out
}

/// A deterministic byte soup.
fn soup(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_survives_the_rack_networks_worst() {
    let t = target().await;
    // The canaries: a key, three points.
    let out = etcdctl(&t, &["put", "/canary", "still-here"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let http = tsdb_http(&t);
    let r = http
        .post(format!("https://{}/query", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("q", "CREATE DATABASE canary")])
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let r = http
        .post(format!("https://{}/write", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("db", "canary")])
        .body("m v=1 1\nm v=2 2\nm v=3 3\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_intact(&t, "setup").await;

    let tcp_ports = [t.controller, t.agent, t.kv, t.tsdb, t.dns];

    // 1. Malformed bytes on every TCP port: random soup, an HTTP/1 request where HTTP/2 or TLS
    //    is expected, an endless header, a huge declared length, a TLS hello cut short.
    let mut junk: Vec<Vec<u8>> = (0..6).map(|i| soup(i + 1, 2048)).collect();
    junk.push(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    junk.push([b"GET / HTTP/1.1\r\nX: ".to_vec(), vec![b'a'; 200_000]].concat());
    junk.push(b"POST /api/v1/tasks HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n{".to_vec());
    junk.push(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\xff\xff\x01\x05\x00\x00\x00\x01".to_vec());
    junk.push(vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc]);
    junk.push(vec![0x16, 0x03, 0x01, 0xff, 0xff]);
    for addr in tcp_ports {
        for bytes in &junk {
            let _ = raw(addr, bytes);
        }
    }
    assert_intact(&t, "malformed bytes").await;

    // 2. Slowloris: 100 connections that say almost nothing, held while the rack keeps serving.
    let mut held = Vec::new();
    for addr in tcp_ports {
        for _ in 0..20 {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.write_all(&[0x16, 0x03]);
                held.push(s);
            }
        }
    }
    assert_intact(&t, "slow connections held open").await;
    drop(held);

    // 3. Oversized and deep input through the front doors.
    let url = t.rack.url();
    let admin = t.rack.http_admin();
    let huge = format!(
        "{{\"name\":\"x\",\"command\":\"true\",\"args\":[\"{}\"]}}",
        "a".repeat(8 << 20)
    );
    // Refused: a 413, or, when the refusal arrives before the whole body is sent, the
    // connection closed under the sender.
    match admin
        .post(format!("{url}/api/v1/tasks"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
    {
        Ok(r) => assert_eq!(r.status(), 413, "an 8 MiB task spec"),
        Err(e) => assert!(e.is_request(), "an 8 MiB task spec: {e}"),
    }
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let r = admin
        .post(format!("{url}/api/v1/tasks"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "deep JSON: {}", r.status());
    let r = admin
        .post(format!("{url}/api/v1/tasks"))
        .json(&serde_json::json!({"name": "n".repeat(300), "command": "true"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a huge task name");
    let kv = torc_kv_client::Client::connect_with(
        &format!("https://{}", t.kv),
        Some(torc_kv_client::Credentials::new("root", t.kv_root.clone())),
        Some(torc_kv_client::ClientTls::from_files(&t.rack.ca_path().unwrap(), None).unwrap()),
    )
    .await
    .unwrap();
    let err = kv
        .put(torc_kv_client::proto::etcdserverpb::PutRequest {
            key: vec![b'k'; 2 << 20].into(),
            value: b"v".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("too large"), "a 2 MiB key: {err}");
    // A gzip bomb: a few KiB that inflate past the body limit.
    let bomb = {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let line = b"m v=1 1\n".repeat(1 << 16);
        for _ in 0..64 {
            e.write_all(&line).unwrap();
        }
        e.finish().unwrap()
    };
    let r = http
        .post(format!("https://{}/write", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("db", "canary")])
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "a gzip bomb");
    // A long operator chain (the expression that once overflowed the stack) and a name past
    // the filesystem's limit (one that once bricked the next restart): clear errors.
    let chain = format!(
        "q=SELECT%20{}%20FROM%20m",
        vec!["v"; 300_000].join("%20%2B%20")
    );
    let r = http
        .post(format!("https://{}/query", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("db", "canary")])
        .header("content-type", "application/x-www-form-urlencoded")
        .body(chain)
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert!(
        status == 400 && body.contains("expression too deep"),
        "a 300,000-term expression: {status} {body}"
    );
    let long = format!("CREATE DATABASE \"{}\"", "d".repeat(300));
    let r = http
        .post(format!("https://{}/query", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("q", long.as_str())])
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert!(
        body.contains("name too long"),
        "a 300-byte database name: {body}"
    );
    assert_intact(&t, "oversized and deep input").await;

    // 4. GETs that try to change state.
    let viewer = t
        .rack
        .make_token(torc_api::TokenRole::Viewer, None)
        .await
        .unwrap();
    let r = t
        .rack
        .http()
        .get(format!("{url}/api/v1/query"))
        .bearer_auth(&viewer)
        .query(&[("q", "DROP DATABASE canary")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a viewer's DROP through the controller");
    let r = t
        .rack
        .http()
        .get(format!("{url}/start/group?name=nosuch"))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "the original's changing GET as a viewer");
    // Even an admin's GET changes nothing on the tsdb itself: only SELECT and SHOW run.
    let r = http
        .get(format!("https://{}/query", t.tsdb))
        .basic_auth("admin", Some(&t.tsdb_admin))
        .query(&[("q", "DROP DATABASE canary")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405, "an admin's GET DROP DATABASE on the tsdb");
    assert_intact(&t, "GETs that try to change state").await;

    // 5. A DNS flood from one source: bounded, then the server answers others as before.
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let _ = sock.set_read_timeout(Some(Duration::from_millis(1)));
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["wedge", "homer", "ave"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 255, 0, 1]);
    let started = Instant::now();
    let mut sent = 0;
    while sent < 50_000 && started.elapsed() < Duration::from_secs(10) {
        if sock.send_to(&query, t.dns).is_ok() {
            sent += 1;
        }
        if sent % 64 == 0 {
            let mut buf = [0u8; 1500];
            while sock.recv_from(&mut buf).is_ok() {}
        }
    }
    for i in 0..2_000u64 {
        let _ = sock.send_to(&soup(i + 100, 1 + (i as usize % 600)), t.dns);
    }
    assert_intact(&t, "a DNS flood").await;

    // 6. Every token of the wrong shape, at every HTTP door.
    for addr in [t.controller, t.agent] {
        let r = t
            .rack
            .http()
            .get(format!("https://{addr}/api/v1/tasks"))
            .bearer_auth(String::from_utf8_lossy(&soup(9, 300)).replace(['\r', '\n'], ""))
            .send()
            .await;
        if let Ok(r) = r {
            assert!(r.status().is_client_error(), "{addr}: {}", r.status());
        }
    }
    assert_intact(&t, "bad tokens").await;
}

//! `torc tsdb` with authentication in a rack: `--admin-user`/`--admin-password-file` create the
//! admin and turn authentication on; `torc datacollector --user --password-file` writes with
//! those credentials; a datacollector with a wrong password logs a clear error and writes
//! nothing.

use std::time::Duration;

use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");

fn services(dir: &std::path::Path) -> String {
    let (admin, wrong) = (dir.join("admin"), dir.join("wrong"));
    let (admin, wrong) = (admin.display(), wrong.display());
    format!(
        r#"
healthcheck:
  system_services:
    - name: influxdb
      command: torc
      args: [tsdb, --listen, "$IP:8086", --data-dir, "$DATA_DIR", --admin-user, root, --admin-password-file, "{admin}"]
      privileged: true
      memory: 256
      cpu: 0.5
      node_name: bladerunner1
      health:
        tcp: "$IP:8086"
        interval_in_seconds: 1
    - name: datacollector
      command: torc
      args: [datacollector, --influxdb, "service:influxdb", --interval-seconds, "1", --user, root, --password-file, "{admin}"]
      credentials: {{api_access: viewer}}
      privileged: true
      memory: 40
      cpu: 0.1
      node_name: bladerunner1
      dependent_service: influxdb
    - name: wrongcollector
      command: torc
      args: [datacollector, --influxdb, "service:influxdb", --database, wrong, --interval-seconds, "1", --user, root, --password-file, "{wrong}"]
      credentials: {{api_access: viewer}}
      privileged: true
      memory: 40
      cpu: 0.1
      node_name: bladerunner1
      dependent_service: influxdb
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datacollector_writes_with_credentials() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("admin"), "s3cret pass\n").unwrap();
    std::fs::write(secrets.path().join("wrong"), "nope\n").unwrap();
    let rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            extra_yaml: services(secrets.path()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let client = rack.client();
    let influx = wait_for("influxdb to run", Duration::from_secs(30), || async {
        let s = client.service(&"influxdb".parse().unwrap()).await.ok()?;
        (s.state == Some(TaskState::Running)).then_some(format!("http://{}:8086", s.ip?))
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let query = |user: Option<(&'static str, &'static str)>, q: &'static str| {
        let (http, url) = (http.clone(), format!("{influx}/query"));
        async move {
            let mut r = http.post(url).query(&[("db", "torc"), ("q", q)]);
            if let Some((u, p)) = user {
                r = r.basic_auth(u, Some(p));
            }
            let r = r.send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.json::<serde_json::Value>().await.ok()?))
        }
    };
    let root = Some(("root", "s3cret pass"));
    // The collector's points arrive, written with the admin's credentials.
    wait_for("machine rows", Duration::from_secs(60), || async {
        let (s, v) = query(root, "SELECT count(cpu_usage_user) FROM machine").await?;
        (s == 200 && v["results"][0]["series"][0]["values"][0][1].as_u64()? > 0).then_some(())
    })
    .await
    .unwrap();
    // Authentication is on: no credentials, no answer.
    let (s, v) = query(None, "SHOW DATABASES").await.unwrap();
    assert_eq!(s, 401, "{v}");
    // The collector with the wrong password says so in its log, and wrote nothing.
    let task = wait_for("wrongcollector to run", Duration::from_secs(30), || async {
        let s = client
            .service(&"wrongcollector".parse().unwrap())
            .await
            .ok()?;
        (s.state == Some(TaskState::Running)).then_some(s.task?)
    })
    .await
    .unwrap();
    let log = wait_for(
        "the refusal in the log",
        Duration::from_secs(30),
        || async {
            let q = torc_api::LogQuery {
                stream: torc_api::LogStream::Stderr,
                tail: None,
                offset: None,
            };
            let chunk = client.logs(&task, &q).await.ok()?;
            let text = chunk.data.clone();
            text.contains("refused the credentials (authorization failed)")
                .then_some(text)
        },
    )
    .await
    .unwrap();
    assert!(log.contains("ERROR"), "{log}");
    assert!(!log.contains("s3cret") && !log.contains("nope"), "{log}");
    let (s, v) = query(root, "SHOW DATABASES").await.unwrap();
    assert_eq!(s, 200);
    assert!(!v.to_string().contains("wrong"), "{v}");

    // Its /metrics: behind the same authentication, read by the real promtool, counting the
    // collector's writes.
    let metrics = format!("{influx}/metrics");
    let anonymous = http.get(&metrics).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let text = (http.get(&metrics).basic_auth("root", Some("s3cret pass")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    torc_test_utils::prom::promtool_check(&text).unwrap();
    let sample = |series| torc_test_utils::prom::sample(&text, series);
    assert!(
        sample("torc_tsdb_points_written_total") > Some(0.0),
        "{text}"
    );
    assert!(
        sample("torc_tsdb_write_requests_total{code=\"2xx\"}") > Some(0.0),
        "{text}"
    );
    assert!(
        sample("torc_tsdb_query_requests_total{code=\"2xx\"}") >= Some(2.0),
        "{text}"
    );
    assert_eq!(sample("torc_tsdb_databases"), Some(1.0), "{text}");
    // Counted and timed (the collector writes on meanwhile, so the two are not compared).
    assert!(
        sample("torc_tsdb_write_duration_seconds_count") > Some(0.0),
        "{text}"
    );
}

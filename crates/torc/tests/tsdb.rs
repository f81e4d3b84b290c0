//! `torc tsdb` as the rack's `influxdb` service, fed by the datacollector: the seed's sample
//! queries, as written, over the 0.8 API, and their 1.x forms over `/query`.

use std::time::Duration;

use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::TaskState;

const TORC: &str = env!("CARGO_BIN_EXE_torc");

const SERVICES: &str = r#"
healthcheck:
  system_services:
    - name: influxdb
      command: torc
      args: [tsdb, --listen, "$IP:8086", --data-dir, "$DATA_DIR"]
      memory: 256
      cpu: 0.5
      node_name: bladerunner2
      health:
        tcp: "$IP:8086"
        interval_in_seconds: 1
    - name: datacollector
      command: torc
      args: [datacollector, --influxdb, "service:influxdb", --interval-seconds, "1"]
      credentials: {api_access: viewer}
      memory: 40
      cpu: 0.1
      node_name: bladerunner2
      dependent_service: influxdb
    - name: busy
      command: sh
      args: ["-c", "while :; do :; done"]
      memory: 8
      cpu: 0.5
      node_name: bladerunner1
      is_metered: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_queries_work_as_written() {
    let rack = LocalRack::start(
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
    let influx = wait_for("influxdb to run", Duration::from_secs(30), || async {
        let s = client.service(&"influxdb".parse().unwrap()).await.ok()?;
        (s.state == Some(TaskState::Running)).then_some(format!("http://{}:8086", s.ip?))
    })
    .await
    .unwrap();
    let http = rack.http();

    // 0.8: `GET /db/torc/series?u=root&p=root&q=...`, newest first, time and sequence_number.
    let v08 = |q: &'static str| {
        let http = http.clone();
        let url = format!("{influx}/db/torc/series");
        async move {
            let r = http
                .get(&url)
                .query(&[("u", "root"), ("p", "root"), ("q", q)])
                .send()
                .await
                .ok()?;
            if !r.status().is_success() {
                return None;
            }
            let v: serde_json::Value = r.json().await.ok()?;
            let points = v[0]["points"].as_array()?.len();
            (points > 0).then_some(v)
        }
    };
    let list = wait_for("list series", Duration::from_secs(30), || {
        v08("list series")
    })
    .await
    .unwrap();
    assert_eq!(list[0]["name"], "list_series_result");
    let machine = wait_for("machine rows", Duration::from_secs(30), || {
        v08("select * from machine where hostname = 'bladerunner1' limit 1000")
    })
    .await
    .unwrap();
    let cols: Vec<&str> = machine[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(&cols[..2], ["time", "sequence_number"]);
    for c in [
        "hostname",
        "cpu_usage_user",
        "cpu_usage_system",
        "memory_usage",
    ] {
        assert!(cols.contains(&c), "{c} missing from {cols:?}");
    }
    let times: Vec<i64> = machine[0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let network = wait_for("network rows", Duration::from_secs(30), || {
        v08("select * from network where hostname = 'bladerunner1' and interface_name = 'lo' limit 1000")
    })
    .await
    .unwrap();
    let cols: Vec<&str> = network[0]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for c in [
        "interface_name",
        "network_in_bytes",
        "network_out_bytes",
        "network_in_drops",
        "network_out_drops",
    ] {
        assert!(cols.contains(&c), "{c} missing from {cols:?}");
    }
    wait_for(
        "stats rows for the metered task",
        Duration::from_secs(30),
        || v08("select * from stats where hostname = 'bladerunner1' and container_name =~ /busy*/"),
    )
    .await
    .unwrap();

    // 1.x forms over /query.
    for q in [
        "SHOW SERIES",
        "SELECT * FROM machine WHERE hostname = 'bladerunner1' ORDER BY time DESC LIMIT 1000",
        "SELECT * FROM network WHERE hostname = 'bladerunner1' AND interface_name = 'lo' LIMIT 1000",
        "SELECT mean(cpu_usage_user) FROM \"stats\" WHERE container_name = 'busy' AND time > now() - 1h GROUP BY time(1m)",
    ] {
        let v: serde_json::Value = http
            .get(format!("{influx}/query"))
            .query(&[("db", "torc"), ("q", q)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let values = v["results"][0]["series"][0]["values"]
            .as_array()
            .map_or(0, |a| a.len());
        assert!(values > 0, "{q}: {v}");
    }
}

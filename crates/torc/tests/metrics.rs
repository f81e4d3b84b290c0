//! Metrics end to end: agents sample, the datacollector (a system service) writes to a real
//! InfluxDB 1.6, and the seed's queries return rows.

use std::time::Duration;

use torc_test_utils::{Influxd, LocalRack, RackOptions, wait_for};

const TORC: &str = env!("CARGO_BIN_EXE_torc");

async fn query(url: &str, q: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("{url}/query"))
        .query(&[("db", "torc"), ("q", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn rows(v: &serde_json::Value) -> usize {
    v["results"][0]["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|x| x["values"].as_array().map_or(0, |v| v.len()))
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datacollector_feeds_influxdb_and_the_seed_queries_answer() {
    let influx = Influxd::start().await.unwrap();
    let extra = format!(
        r#"
healthcheck:
  system_services:
    - name: datacollector
      command: torc
      args: [datacollector, --influxdb, "{}", --interval-seconds, "1"]
      credentials: {{api_access: viewer}}
      memory: 40
      cpu: 0.1
      node_function: controller
    - name: busy
      command: sh
      args: ["-c", "while :; do :; done"]
      memory: 8
      cpu: 0.5
      node_name: bladerunner1
      is_metered: true
"#,
        influx.url
    );
    let _rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            extra_yaml: extra,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let url = influx.url.clone();
    // The seed's queries, in their InfluxQL 1.x form (`lo` is an interface every machine has).
    for q in [
        "select * from machine where hostname = 'bladerunner1' limit 1000",
        "select * from network where hostname = 'bladerunner1' and interface_name = 'lo' limit 1000",
        "select * from \"stats\" where hostname = 'bladerunner1' and container_name =~ /busy/",
    ] {
        let v = wait_for(
            &format!("rows for {q}"),
            Duration::from_secs(30),
            || async {
                let v = query(&url, q).await;
                (rows(&v) > 0).then_some(v)
            },
        )
        .await
        .unwrap();
        let cols: Vec<&str> = v["results"][0]["series"][0]["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert!(cols.contains(&"hostname"), "{q}: {cols:?}");
    }
    // Values are right: the busy task uses about a core (percent of one core), measured over
    // the real interval.
    let v = wait_for("the busy task's CPU", Duration::from_secs(30), || async {
        let v = query(
            &url,
            "select last(cpu_usage_user) from \"stats\" where container_name = 'busy'",
        )
        .await;
        let cpu = v["results"][0]["series"][0]["values"][0][1].as_f64()?;
        (cpu > 50.0).then_some(cpu)
    })
    .await
    .unwrap();
    assert!(v < 150.0, "{v}");
    let show = query(&url, "show series").await;
    assert!(
        show.to_string().contains("machine,hostname=wedge"),
        "every node, the controller's too: {show}"
    );
    // The control plane rides along: the controller's own /metrics, one point a cycle.
    let cp = wait_for("the control_plane series", Duration::from_secs(30), || async {
        let v = query(
            &url,
            "select last(tasks_running), last(acting), last(store_commits_total_ok) from control_plane where role = 'controller'",
        )
        .await;
        v["results"][0]["series"][0]["values"][0].as_array().cloned()
    })
    .await
    .unwrap();
    assert_eq!(cp[2].as_f64(), Some(1.0), "the controller acts: {cp:?}");
    assert!(
        cp[1].as_f64() >= Some(2.0),
        "busy and the collector run: {cp:?}"
    );
    assert!(cp[3].as_f64() > Some(0.0), "{cp:?}");

    // The database goes away (a fresh data directory, an operator's DROP): the collector's
    // writes get 404s, it creates the database again, and rows come back.
    reqwest::Client::new()
        .post(format!("{url}/query"))
        .query(&[("q", "DROP DATABASE torc")])
        .send()
        .await
        .unwrap();
    wait_for(
        "rows after the database was dropped",
        Duration::from_secs(30),
        || async {
            let v = query(&url, "select * from machine limit 1").await;
            (rows(&v) > 0).then_some(())
        },
    )
    .await
    .unwrap();
}

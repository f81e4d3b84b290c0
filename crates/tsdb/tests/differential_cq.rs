//! Continuous queries and `SELECT ... INTO` against a real influxd 1.6.
//!
//! `same_statements_as_influxdb`: a script of `CREATE`/`DROP CONTINUOUS QUERY`, `SHOW
//! CONTINUOUS QUERIES`, their parse and execution errors, and `SELECT ... INTO` (aggregates by
//! time and tag, raw rows, `:MEASUREMENT` into another policy) runs on both servers over the
//! same data; every answer (status and JSON) must be the same, and so must what the `INTO`s
//! wrote. Normalisation: influxd lists its `_internal` database in `SHOW CONTINUOUS QUERIES`
//! (it creates it even with the monitor store off); that series is dropped.
//!
//! `same_downsampled_series_as_influxdb`: the same continuous queries on both servers (each
//! checking every second, influxd's `run-interval`), the same points written over the last
//! seconds; both must write the same downsampled series (each bucket at its start, per host).

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

/// The data both servers hold: `m` and `mx`, hosts a and b, every 10 s over 10 minutes of
/// 2020-09-13.
fn data() -> String {
    let mut out = String::new();
    for i in 0..60i64 {
        let t = 1_600_000_000 + i * 10;
        for (host, k) in [("a", 1.0), ("b", 2.5)] {
            out.push_str(&format!(
                "m,host={host} v={} {t}\n",
                k * (i % 7) as f64 + 0.5
            ));
            out.push_str(&format!("mx,host={host} v={}i {t}\n", (i % 5) * 3));
        }
    }
    out
}

const SCRIPT: &[&str] = &[
    "CREATE CONTINUOUS QUERY c1 ON cq BEGIN SELECT mean(v) INTO m_mean FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c2 ON cq RESAMPLE EVERY 2m FOR 10m BEGIN SELECT max(v) AS top, count(v) INTO cq.long.:MEASUREMENT FROM /^m/ WHERE host = 'a' GROUP BY time(5m, 1m), host fill(none) END",
    "CREATE CONTINUOUS QUERY \"c 3\" ON cq RESAMPLE FOR 1h BEGIN SELECT sum(v) INTO \"long\".\"sum\" FROM cq.autogen.m GROUP BY time(30m), * END",
    "CREATE CONTINUOUS QUERY c1 ON cq BEGIN SELECT mean(v) INTO m_mean FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c1 ON cq BEGIN SELECT min(v) INTO m_mean FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c4 ON nodb BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c4 ON cq BEGIN SELECT mean(v) INTO cq.nope.x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c4 ON cq BEGIN SELECT mean(v) INTO x FROM nodb..m GROUP BY time(1m) END",
    "SHOW CONTINUOUS QUERIES",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO x FROM m END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO x FROM m GROUP BY host END",
    "CREATE CONTINUOUS QUERY c ON cq RESAMPLE BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq RESAMPLE EVERY BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq RESAMPLE FOR 30s BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq RESAMPLE EVERY 2m FOR 1m BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(30s) END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m)",
    "CREATE CONTINUOUS QUERY c ON cq SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO : FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO long.:m FROM m GROUP BY time(1m) END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO x FROM /m/ GROUP BY host END",
    "CREATE CONTINUOUS QUERY c ON cq BEGIN SELECT mean(v) INTO x FROM m WHERE host = 'a' END",
    "ALTER RETENTION POLICY \"autogen\" ON \"cq\" DURATION 168h SHARD DURATION 24h",
    "CREATE CONTINUOUS QUERY \"torc_downsample_5m\" ON \"cq\" BEGIN SELECT mean(*) INTO \"cq\".\"long\".:MEASUREMENT FROM \"cq\".\"autogen\"./^(machine|network|stats)$/ GROUP BY time(5m), * END",
    "SHOW RETENTION POLICIES",
    "CREATE CONTINUOUS c ON cq",
    "CREATE CONTINUOUS QUERY c cq",
    "DROP CONTINUOUS QUERY c1",
    "DROP CONTINUOUS c1 ON cq",
    "DROP CONTINUOUS QUERY c1 ON cq",
    "DROP CONTINUOUS QUERY c1 ON cq",
    "DROP CONTINUOUS QUERY c9 ON nodb",
    "SHOW CONTINUOUS QUERIES",
    "SELECT mean(v) INTO agg FROM m WHERE time >= '2020-09-13T12:26:40Z' AND time < '2020-09-13T12:36:40Z' GROUP BY time(1m), host",
    "SELECT * FROM agg",
    "SELECT v, host INTO copy FROM m WHERE time < '2020-09-13T12:28:00Z'",
    "SELECT * FROM copy",
    "SELECT max(v) INTO cq.long.:MEASUREMENT FROM /^m/ WHERE time >= '2020-09-13T12:26:40Z' AND time < '2020-09-13T12:36:40Z' GROUP BY time(2m), host",
    "SELECT * FROM cq.long.m",
    "SELECT * FROM cq.long.mx",
    "SELECT count(v) INTO long.counted FROM m WHERE time >= '2020-09-13T12:26:40Z' AND time < '2020-09-13T12:36:40Z' GROUP BY time(5m)",
    "SELECT * FROM cq.long.counted",
    "SELECT count(v) INTO gaps FROM m WHERE time >= '2020-09-13T12:20:00Z' AND time < '2020-09-13T12:36:40Z' GROUP BY time(5m)",
    "SELECT * FROM gaps",
    "SELECT count(v) INTO gaps0 FROM m WHERE time >= '2020-09-13T12:20:00Z' AND time < '2020-09-13T12:36:40Z' GROUP BY time(5m) fill(0)",
    "SELECT * FROM gaps0",
    "SELECT mean(v) INTO nodb.autogen.x FROM m",
    "SELECT mean(v) INTO cq.nope.x FROM m",
];

/// Sets up database `cq` (with a policy `long`) and its data at `url`.
async fn load(url: &str) {
    for q in [
        "CREATE DATABASE cq",
        "CREATE RETENTION POLICY long ON cq DURATION 52w REPLICATION 1",
    ] {
        let (s, b) = common::query(url, "", q).await;
        assert_eq!(s, 200, "{q}: {b}");
    }
    let (s, b) = common::write(url, "cq", "s", &data()).await;
    assert_eq!(s, 204, "{b}");
}

/// `SHOW CONTINUOUS QUERIES` without influxd's `_internal` database.
fn normalise(q: &str, mut v: Value) -> Value {
    if q == "SHOW CONTINUOUS QUERIES"
        && let Some(series) = v
            .pointer_mut("/results/0/series")
            .and_then(|s| s.as_array_mut())
    {
        series.retain(|s| s["name"] != "_internal");
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_statements_as_influxdb() {
    let influx = common::Influxd::start().await;
    let torc = common::TorcServer::start().await;
    load(&influx.url()).await;
    load(&torc.url()).await;
    let mut failures = Vec::new();
    for q in SCRIPT {
        let (si, bi) = common::query(&influx.url(), "cq", q).await;
        let (st, bt) = common::query(&torc.url(), "cq", q).await;
        let vi = normalise(q, common::parse_body(&bi));
        let vt = normalise(q, common::parse_body(&bt));
        if si != st || !common::close(&vi, &vt) {
            failures.push(format!("{q}\n  influxdb {si}: {bi}\n  torc     {st}: {bt}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements differ:\n{}",
        failures.len(),
        SCRIPT.len(),
        failures.join("\n")
    );
    torc.stop().await;
}

/// The continuous queries of the live comparison: a plain one, and one with `RESAMPLE`,
/// `GROUP BY *` and `:MEASUREMENT` into another policy. Both reach back 20 s, so every bucket
/// of the points written is computed again after they are all in.
const LIVE: &[&str] = &[
    "CREATE RETENTION POLICY long ON cq DURATION 52w REPLICATION 1",
    "CREATE CONTINUOUS QUERY down ON cq RESAMPLE EVERY 1s FOR 20s BEGIN SELECT mean(v) AS mean_v, max(v), count(v) INTO down FROM m GROUP BY time(2s), host END",
    "CREATE CONTINUOUS QUERY back ON cq RESAMPLE FOR 20s BEGIN SELECT sum(v) INTO cq.long.:MEASUREMENT FROM /^m$/ GROUP BY time(4s), * END",
];

const CHECKS: &[&str] = &["SELECT * FROM down", "SELECT * FROM cq.long.m"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_downsampled_series_as_influxdb() {
    let influx =
        common::Influxd::start_with("\n[continuous_queries]\n  run-interval = \"1s\"\n").await;
    let opts = torc_tsdb::Options {
        cq_run_interval: Duration::from_secs(1),
        ..Default::default()
    };
    let torc = common::TorcServer::start_in_with(tempfile::tempdir().unwrap(), opts).await;
    for url in [influx.url(), torc.url()] {
        let (s, b) = common::query(&url, "", "CREATE DATABASE cq").await;
        assert_eq!(s, 200, "{b}");
        for q in LIVE {
            let (s, b) = common::query(&url, "cq", q).await;
            assert!(s == 200 && !b.contains("error"), "{url}: {q}: {b}");
        }
    }
    // Points over the last 12 s (at 250 ms), the same on both servers.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut lines = String::new();
    for i in 0..48i64 {
        let t = now_ms - 12_000 + i * 250;
        for (host, k) in [("a", 1.5), ("b", 4.0)] {
            lines.push_str(&format!("m,host={host} v={} {t}\n", k * (i % 9) as f64));
        }
    }
    for url in [influx.url(), torc.url()] {
        let (s, b) = common::write(&url, "cq", "ms", &lines).await;
        assert_eq!(s, 204, "{b}");
    }
    // Every 2 s bucket the points fall in, per host; then wait for both servers to hold them
    // all, the same (each server recomputes the buckets every second for 20 s).
    let buckets = |d: i64| {
        let mut b: Vec<i64> = (0..48i64)
            .map(|i| (now_ms - 12_000 + i * 250).div_euclid(d))
            .collect();
        b.dedup();
        b.len()
    };
    let want = [buckets(2_000) * 2, buckets(4_000) * 2];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut last = Vec::new();
        let mut done = true;
        for (q, want) in CHECKS.iter().zip(want) {
            let (_, bi) = common::query(&influx.url(), "cq", q).await;
            let (_, bt) = common::query(&torc.url(), "cq", q).await;
            let (vi, vt) = (common::parse_body(&bi), common::parse_body(&bt));
            let rows = |v: &Value| {
                v.pointer("/results/0/series/0/values")
                    .and_then(|r| r.as_array())
                    .map_or(0, |r| r.len())
            };
            done &= rows(&vi) == want && common::close(&vi, &vt);
            last.push(format!(
                "{q} (want {want} rows)\n  influxdb: {bi}\n  torc:     {bt}"
            ));
        }
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the downsampled series differ:\n{}",
            last.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    torc.stop().await;
}

//! Query limits (issue 14: nothing bounded a query): InfluxDB's `max-select-point`,
//! `max-select-series`, `max-select-buckets` and `query-timeout`, with influxd's error texts.
//!
//! Against the real influxd 1.6 with the same settings: the series and bucket limits, and the
//! timeout, give the same answers. Not compared: influxd 1.6 checks `max-select-point` once a
//! second while a query runs, so a query faster than that is never stopped by it there (torc
//! counts as it reads); and influxd does not check buckets without a lower time bound (torc
//! counts them from the group's first point).

mod common;

use std::time::{Duration, Instant};

use torc_tsdb::Options;

/// 10 series (`h=h0` .. `h9`) of 100 points (`v` = 0..99 at 0..99 s).
fn data(series: usize, points: usize) -> String {
    let mut s = String::new();
    for h in 0..series {
        for t in 0..points {
            s.push_str(&format!("m,h=h{h} v={t} {t}\n"));
        }
    }
    s
}

async fn load(url: &str, body: &str) {
    let (s, b) = common::query(url, "", "CREATE DATABASE d").await;
    assert_eq!(s, 200, "{b}");
    let lines: Vec<&str> = body.lines().collect();
    for chunk in lines.chunks(20_000) {
        let (s, b) = common::write(url, "d", "s", &chunk.join("\n")).await;
        assert_eq!(s, 204, "{b}");
    }
}

fn limited(points: usize, series: usize, buckets: usize, timeout: Duration) -> Options {
    Options {
        max_select_point: points,
        max_select_series: series,
        max_select_buckets: buckets,
        query_timeout: timeout,
        ..Options::default()
    }
}

async fn server(opts: Options) -> common::TorcServer {
    common::TorcServer::start_in_with(tempfile::tempdir().unwrap(), opts).await
}

fn error_of(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["results"][0]["error"].as_str().map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_stop_queries_with_influxdb_errors() {
    let torc = server(limited(500, 3, 3, Duration::ZERO)).await;
    load(&torc.url(), &data(10, 100)).await;
    let cases = [
        // Points: 100 per series; the limit is 500 (counted as each series is read).
        ("SELECT v FROM m WHERE h = 'h1'", None),
        (
            "SELECT count(v) FROM m WHERE h = 'h1' OR h = 'h2' OR h = 'h3'",
            None,
        ),
        (
            "SELECT v FROM m",
            Some("max-select-series limit exceeded: (4/3)"),
        ),
        // Series: the fourth one read is refused.
        (
            "SELECT count(v) FROM m GROUP BY h",
            Some("max-select-series limit exceeded: (4/3)"),
        ),
        // Buckets: influxd's check with a lower bound, torc's from the first point without.
        (
            "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 5s AND time < 35s GROUP BY time(10s)",
            Some("max-select-buckets limit exceeded: (4/3)"),
        ),
        (
            "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 5s AND time < 25s GROUP BY time(10s)",
            None,
        ),
        (
            "SELECT count(v) FROM m WHERE h = 'h1' AND time < 35s GROUP BY time(10s)",
            Some("max-select-buckets limit exceeded: (4/3)"),
        ),
        // Subqueries count toward the statement.
        (
            "SELECT count(v) FROM (SELECT v FROM m WHERE h = 'h1' OR h = 'h2' OR h = 'h3' OR h = 'h4')",
            Some("max-select-series limit exceeded: (4/3)"),
        ),
    ];
    for (q, want) in cases {
        let (s, b) = common::query(&torc.url(), "d", q).await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(error_of(&b).as_deref(), want, "{q}: {b}");
    }
    torc.stop().await;

    // Points, and the buckets a fill() makes over a range without data.
    let torc = server(limited(250, 0, 0, Duration::ZERO)).await;
    load(&torc.url(), &data(10, 100)).await;
    for (q, want) in [
        ("SELECT v FROM m WHERE h = 'h1' OR h = 'h2'", None),
        (
            "SELECT v FROM m WHERE h = 'h1' OR h = 'h2' OR h = 'h3'",
            Some("max-select-point limit exceeed: (300/250)"),
        ),
        (
            "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 0s AND time < 100s GROUP BY time(1s)",
            None,
        ),
        // 50 points read, and 1000 buckets mostly filled with nothing.
        (
            "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 50s AND time < 1050s GROUP BY time(1s) fill(0)",
            Some("max-select-point limit exceeed: (1050/250)"),
        ),
    ] {
        let (s, b) = common::query(&torc.url(), "d", q).await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(error_of(&b).as_deref(), want, "{q}: {b}");
    }
    torc.stop().await;
}

/// The same settings on influxd 1.6 and torc give the same answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_match_influxdb() {
    let influx = common::Influxd::start_with(
        "[coordinator]\n  max-select-series = 3\n  max-select-buckets = 3\n",
    )
    .await;
    let torc = server(limited(0, 3, 3, Duration::ZERO)).await;
    let body = data(10, 100);
    load(&influx.url(), &body).await;
    load(&torc.url(), &body).await;
    for q in [
        "SELECT count(v) FROM m",
        "SELECT * FROM m",
        "SELECT count(v) FROM m GROUP BY h",
        "SELECT count(v) FROM m WHERE h = 'h1'",
        "SELECT count(v) FROM m WHERE h = 'h1' OR h = 'h2' OR h = 'h3'",
        "SELECT count(v) FROM m WHERE h = 'h1' OR h = 'h2' OR h = 'h3' OR h = 'h4'",
        "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 5s AND time < 35s GROUP BY time(10s)",
        "SELECT count(v) FROM m WHERE h = 'h1' AND time >= 5s AND time < 25s GROUP BY time(10s)",
        "SELECT count(v) FROM m WHERE time >= 5s AND time < 95s GROUP BY time(10s)",
    ] {
        let want = common::query(&influx.url(), "d", q).await;
        let got = common::query(&torc.url(), "d", q).await;
        assert_eq!(want, got, "{q}");
    }
    torc.stop().await;
}

/// A query past `query-timeout` stops working: the answer comes at about the timeout, with
/// influxd's error, the rest of the request does not run, and the server is free at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_stops_the_work() {
    let timeout = Duration::from_millis(300);
    let torc = server(limited(0, 0, 0, timeout)).await;
    load(&torc.url(), &data(10, 20_000)).await;
    // Each statement evaluates a 400-operator expression for each of 200,000 rows: minutes
    // of work in a debug build, for ten statements.
    let heavy = format!("SELECT v FROM m WHERE {} > 0", vec!["v"; 400].join(" + "));
    let q = [heavy.as_str(); 10].join("; ");
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        common::query_form(&torc.url(), "d", &q),
    )
    .await;
    let took = started.elapsed();
    let (s, b) = r.expect("the query ran on past its timeout");
    assert_eq!(s, 200, "{}", &b[..b.len().min(300)]);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(
        results.last().unwrap()["error"],
        "query-timeout limit exceeded",
        "{}",
        &b[b.len().saturating_sub(300)..]
    );
    assert!(results.len() < 10, "all statements ran");
    assert!(took < timeout + Duration::from_secs(10), "took {took:?}");
    // The server is idle again: a small query is answered at once.
    let started = Instant::now();
    let (s, b) = common::query(&torc.url(), "d", "SELECT count(v) FROM m WHERE h = 'h1'").await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains(",20000]"), "{b}");
    assert!(started.elapsed() < Duration::from_secs(5));
    torc.stop().await;
}

/// influxd 1.6 and torc answer a query past its timeout the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_matches_influxdb() {
    let influx = common::Influxd::start_with("[coordinator]\n  query-timeout = \"1ms\"\n").await;
    let torc = server(limited(0, 0, 0, Duration::from_millis(1))).await;
    let body = data(10, 20_000);
    load(&influx.url(), &body).await;
    load(&torc.url(), &body).await;
    for q in ["SELECT count(v) FROM m", "SELECT * FROM m"] {
        let want = common::query(&influx.url(), "d", q).await;
        let got = common::query(&torc.url(), "d", q).await;
        assert_eq!(
            want,
            (
                200,
                "{\"results\":[{\"statement_id\":0,\"error\":\"query-timeout limit exceeded\"}]}\n"
                    .to_string()
            ),
            "{q}"
        );
        assert_eq!(want, got, "{q}");
    }
    torc.stop().await;
}

//! The real `influx` CLI (1.6) against torc-tsdb, plus the 1.x HTTP error shapes.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_cli_queries_torc() {
    let cli = common::require("influx");
    let srv = common::TorcServer::start().await;
    let url = srv.url();
    let (s, _) = common::query(&url, "", "CREATE DATABASE torc").await;
    assert_eq!(s, 200);
    let (s, b) = common::write(
        &url,
        "torc",
        "s",
        "cpu,host=a value=1.5 1600000000\ncpu,host=b value=2 1600000010",
    )
    .await;
    assert_eq!(s, 204, "{b}");
    let port = srv.addr.port().to_string();
    let out = tokio::process::Command::new(cli)
        .args([
            "-host",
            "127.0.0.1",
            "-port",
            &port,
            "-database",
            "torc",
            "-format",
            "json",
            "-execute",
        ])
        .arg("SELECT value FROM cpu WHERE host = 'b'")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1],
        serde_json::json!(2)
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_errors_match_influxdb() {
    let srv = common::TorcServer::start().await;
    let url = srv.url();
    let (s, b) = common::write(&url, "nope", "s", "cpu v=1").await;
    assert_eq!(
        (s, b.as_str()),
        (404, "{\"error\":\"database not found: \\\"nope\\\"\"}")
    );
    common::query(&url, "", "CREATE DATABASE t").await;
    let (s, b) = common::write(&url, "t", "s", "cpu v=1 1\ncpu v= 2").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        "{\"error\":\"partial write: unable to parse 'cpu v= 2': missing field value dropped=0\"}"
    );
    let (s, b) = common::write(&url, "t", "s", "cpu v=1i 3").await;
    assert_eq!(s, 400);
    assert!(b.contains("field type conflict"), "{b}");
    let (s, b) = common::write(&url, "t", "s", "garbage").await;
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            "{\"error\":\"unable to parse 'garbage': missing fields\"}"
        )
    );
    let (s, b) = common::query(&url, "t", "SELECT * FROM").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        "{\"error\":\"error parsing query: found EOF, expected identifier at line 1, char 15\"}"
    );
    let (s, b) = common::query(&url, "t", "SELECT v FROM cpu").await;
    assert_eq!(s, 200, "{b}");
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let opts = torc_tsdb::Options {
        max_series_per_database: 2,
        ..Default::default()
    };
    let db = torc_tsdb::Tsdb::open(dir.path(), opts).unwrap();
    db.create_database("t").unwrap();
    let pts = torc_tsdb::lineproto::parse(
        b"m,h=a v=1 1\nm,h=b v=1 1\nm,h=c v=1 1",
        torc_tsdb::lineproto::Precision::Seconds,
        0,
    )
    .points;
    let e = db.write("t", None, pts).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "partial write: max-series-per-database limit exceeded: (2) dropped=1"
    );
}

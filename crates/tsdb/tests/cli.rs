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
        (404, "{\"error\":\"database not found: \\\"nope\\\"\"}\n")
    );
    common::query(&url, "", "CREATE DATABASE t").await;
    let (s, b) = common::write(&url, "t", "s", "cpu v=1 1\ncpu v= 2").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        "{\"error\":\"partial write: unable to parse 'cpu v= 2': missing field value dropped=0\"}\n"
    );
    let (s, b) = common::write(&url, "t", "s", "cpu v=1i 3").await;
    assert_eq!(s, 400);
    assert!(b.contains("field type conflict"), "{b}");
    let (s, b) = common::write(&url, "t", "s", "garbage").await;
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            "{\"error\":\"unable to parse 'garbage': missing fields\"}\n"
        )
    );
    let (s, b) = common::query(&url, "t", "SELECT * FROM").await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        "{\"error\":\"error parsing query: found EOF, expected identifier at line 1, char 15\"}\n"
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

/// One `influx` CLI run: exit code, stdout, stderr.
async fn influx_cli(port: u16, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tokio::process::Command::new(common::require("influx"))
        .args(["-host", "127.0.0.1", "-port", &port.to_string()])
        .args(args)
        .output()
        .await
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A CLI session with `-username`/`-password` against torc and influxd 1.6, both with auth
/// enabled: bootstrap, admin work, a reader's query, refused writes and wrong passwords give the
/// same exit codes and output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influx_cli_session_with_credentials_matches_influxdb() {
    let influx = common::Influxd::start_with_auth().await;
    let torc = common::TorcServer::start_with_auth().await;
    let root = ["-username", "root", "-password", "rpw"];
    let bob = ["-username", "bob", "-password", "bpw"];
    let steps: Vec<Vec<&str>> = vec![
        vec!["-execute", "SHOW DATABASES"],
        vec![
            "-execute",
            "CREATE USER root WITH PASSWORD 'rpw' WITH ALL PRIVILEGES",
        ],
        vec!["-execute", "SHOW USERS"],
        [
            &root[..],
            &[
                "-execute",
                "CREATE DATABASE d; CREATE USER bob WITH PASSWORD 'bpw'; GRANT READ ON d TO bob",
            ],
        ]
        .concat(),
        [
            &root[..],
            &[
                "-database",
                "d",
                "-execute",
                "INSERT cpu,host=a value=1.5 1600000000000000000",
            ],
        ]
        .concat(),
        [&root[..], &["-execute", "SHOW USERS; SHOW GRANTS FOR bob"]].concat(),
        [
            &bob[..],
            &[
                "-database",
                "d",
                "-format",
                "json",
                "-execute",
                "SELECT value FROM cpu",
            ],
        ]
        .concat(),
        [
            &bob[..],
            &["-database", "d", "-execute", "SELECT value FROM cpu"],
        ]
        .concat(),
        [
            &bob[..],
            &["-database", "d", "-execute", "INSERT cpu value=2"],
        ]
        .concat(),
        [&bob[..], &["-execute", "SHOW DATABASES"]].concat(),
        [&bob[..], &["-execute", "SHOW USERS"]].concat(),
        vec![
            "-username",
            "bob",
            "-password",
            "wrong",
            "-execute",
            "SHOW DATABASES",
        ],
        vec![
            "-username",
            "nobody",
            "-password",
            "x",
            "-execute",
            "SHOW DATABASES",
        ],
    ];
    let mut failures = Vec::new();
    for args in &steps {
        let want = influx_cli(influx.port, args).await;
        let got = influx_cli(torc.addr.port(), args).await;
        if want != got {
            failures.push(format!("{args:?}\n  influxdb {want:?}\n  torc     {got:?}"));
        }
    }
    // Not vacuous: the reader saw the point, the wrong password was refused.
    let (code, out, _) = influx_cli(torc.addr.port(), &steps[6]).await;
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v["results"][0]["series"][0]["values"][0][1],
        serde_json::json!(1.5)
    );
    let (code, out, _) = influx_cli(torc.addr.port(), &steps[11]).await;
    assert_eq!(code, Some(1));
    assert!(out.contains("ERR: authorization failed"), "{out}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    torc.stop().await;
}

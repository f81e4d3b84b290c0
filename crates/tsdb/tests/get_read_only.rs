//! `GET /query` runs only `SELECT` and `SHOW` (issue 14: a GET of `DROP DATABASE` wiped data).
//! Anything else is a 405 naming the statement and saying to use POST, and nothing of the
//! request runs, not even its read statements. POST runs everything, as before.
//!
//! influxd 1.6 runs such statements on GET and only adds the warning "deprecated use of
//! '...' in a read only context, please use a POST request instead" to the result; the last
//! test checks that against the real influxd, so the documented difference stays true.

mod common;

use serde_json::Value;

async fn get(url: &str, db: &str, q: &str) -> (u16, Option<String>, String) {
    let r = common::client()
        .get(format!("{url}/query"))
        .query(&[("db", db), ("q", q)])
        .send()
        .await
        .expect("query");
    let allow = r
        .headers()
        .get("Allow")
        .map(|v| v.to_str().unwrap_or("").to_string());
    (r.status().as_u16(), allow, r.text().await.expect("body"))
}

async fn databases(url: &str) -> Vec<String> {
    let (s, b) = common::query(url, "", "SHOW DATABASES").await;
    assert_eq!(s, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    v["results"][0]["series"][0]["values"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|r| r[0].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_refuses_statements_that_change_state() {
    let torc = common::TorcServer::start().await;
    let url = torc.url();
    let (s, b) = common::query(&url, "", "CREATE DATABASE d").await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = common::write(&url, "d", "s", "m,h=a v=1 1").await;
    assert_eq!(s, 204, "{b}");
    for (q, shown) in [
        ("DROP DATABASE d", "DROP DATABASE d"),
        ("CREATE DATABASE x", "CREATE DATABASE x"),
        ("DELETE FROM m", "DELETE FROM m"),
        ("DROP SERIES FROM m", "DROP SERIES FROM m"),
        ("DROP MEASUREMENT m", "DROP MEASUREMENT m"),
        (
            "CREATE USER u WITH PASSWORD 'secret'",
            "CREATE USER u WITH PASSWORD [REDACTED]",
        ),
        (
            "CREATE RETENTION POLICY r ON d DURATION 1h REPLICATION 1",
            "CREATE RETENTION POLICY r ON d DURATION 1h REPLICATION 1",
        ),
        ("SELECT v INTO copy FROM m", "SELECT v INTO copy FROM m"),
        (
            "CREATE CONTINUOUS QUERY c ON d BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
            "CREATE CONTINUOUS QUERY c ON d BEGIN SELECT mean(v) INTO x FROM m GROUP BY time(1m) END",
        ),
        (
            "DROP CONTINUOUS QUERY c ON d",
            "DROP CONTINUOUS QUERY c ON d",
        ),
        // A read first does not let the rest through, and nothing of the request runs.
        ("SHOW DATABASES; DROP DATABASE d", "DROP DATABASE d"),
    ] {
        let (s, allow, b) = get(&url, "d", q).await;
        assert_eq!(s, 405, "{q}: {b}");
        assert_eq!(allow.as_deref(), Some("POST"), "{q}");
        let v: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("{q}: {b}"));
        assert_eq!(
            v["error"],
            Value::String(format!(
                "'{shown}' changes the database: not allowed in a read only context (GET), please use a POST request instead"
            )),
            "{q}"
        );
        assert!(!b.contains("secret"), "{b}");
    }
    // Nothing changed.
    assert_eq!(databases(&url).await, vec!["d".to_string()]);
    let (s, _, b) = get(&url, "d", "SHOW MEASUREMENTS").await;
    assert!(s == 200 && !b.contains("copy"), "{b}");
    let (s, _, b) = get(&url, "d", "SHOW CONTINUOUS QUERIES").await;
    assert_eq!(s, 200, "{b}");
    assert!(!b.contains("values"), "{b}");
    let (s, _, b) = get(&url, "d", "SELECT count(v) FROM m").await;
    assert_eq!(s, 200, "{b}");
    assert!(b.contains(r#"["1970-01-01T00:00:00Z",1]"#), "{b}");
    // Reads run on GET; everything runs on POST.
    for q in [
        "SHOW MEASUREMENTS",
        "SHOW USERS",
        "SHOW RETENTION POLICIES ON d",
        "SELECT v FROM m",
    ] {
        let (s, _, b) = get(&url, "d", q).await;
        assert_eq!(s, 200, "{q}: {b}");
        assert!(!b.contains("error"), "{q}: {b}");
    }
    let (s, b) = common::query(&url, "", "DROP DATABASE d").await;
    assert_eq!(s, 200, "{b}");
    assert!(databases(&url).await.is_empty());
    torc.stop().await;
}

/// influxd 1.6 runs a CREATE DATABASE sent with GET, with a warning (what torc refuses).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn influxd_only_warns() {
    let influx = common::Influxd::start().await;
    let (s, _, b) = get(&influx.url(), "", "CREATE DATABASE x").await;
    assert_eq!(s, 200, "{b}");
    assert!(
        b.contains(
            "deprecated use of 'CREATE DATABASE x' in a read only context, please use a POST request instead"
        ),
        "{b}"
    );
    assert!(databases(&influx.url()).await.contains(&"x".to_string()));
}

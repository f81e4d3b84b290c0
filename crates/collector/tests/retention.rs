//! The collector sets its database's retention up where it creates it, against a real torc
//! tsdb: `autogen` keeps the configured duration, the policy `long` and the downsampling
//! continuous query exist; set up again with other settings (a collector restarted with other
//! flags), the policies follow and switching downsampling off drops the query. (The same
//! statements are run against influxd 1.6 by `crates/tsdb/tests/differential_cq.rs`.)

mod common;

use std::sync::Arc;

use torc_collector::{LineWriter, Retention};

const DAY: i64 = 86_400_000_000_000;

async fn tsdb() -> (String, Arc<torc_tsdb::Tsdb>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap());
    let url = common::serve(db.clone()).await;
    (url, db, dir)
}

/// The rows of `q` in database `torc`, as text.
async fn rows(db: &torc_tsdb::Tsdb, q: &str) -> Vec<String> {
    let stmts = torc_tsdb::influxql::parse_query(q).unwrap();
    let r = torc_tsdb::exec::execute(db, &stmts, Some("torc")).await;
    assert!(r[0].error.is_none(), "{q}: {:?}", r[0].error);
    r[0].series
        .iter()
        .flat_map(|s| s.values.iter().map(|row| format!("{row:?}")))
        .collect()
}

async fn collect_once(url: &str, retention: Retention) {
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut w = LineWriter::new(http, "torc".into(), None).with_retention(retention);
    // A sample of now (the policies refuse points older than they keep), from a host of its
    // own each time.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let host = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    w.write(
        url,
        format!("machine,hostname=n{host} cpu_usage_user=1.5 {now_ms}"),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_sets_retention_and_downsampling_up() {
    let (url, db, _dir) = tsdb().await;
    collect_once(&url, Retention::default()).await;
    let policies = rows(&db, "SHOW RETENTION POLICIES ON torc").await;
    assert_eq!(
        policies,
        vec![
            r#"[Str("autogen"), Str("168h0m0s"), Str("24h0m0s"), Int(1), Bool(true)]"#,
            r#"[Str("long"), Str("8736h0m0s"), Str("168h0m0s"), Int(1), Bool(false)]"#,
        ]
    );
    let cqs = rows(&db, "SHOW CONTINUOUS QUERIES").await;
    assert_eq!(
        cqs,
        vec![
            "[Str(\"torc_downsample_5m\"), Str(\"CREATE CONTINUOUS QUERY torc_downsample_5m ON \
             torc BEGIN SELECT mean(*) INTO torc.long.:MEASUREMENT FROM torc.autogen./^(machine|network|stats)$/ \
             GROUP BY time(5m), * END\")]"
        ]
    );
    // Again with the same settings: nothing changes, nothing fails.
    collect_once(&url, Retention::default()).await;
    assert_eq!(rows(&db, "SHOW CONTINUOUS QUERIES").await, cqs);
    assert_eq!(rows(&db, "SELECT * FROM machine").await.len(), 2);

    // Other settings: 30 days raw, 10 weeks of means; then no downsampling.
    collect_once(
        &url,
        Retention {
            duration: 30 * DAY,
            downsample: Some(70 * DAY),
        },
    )
    .await;
    assert_eq!(
        rows(&db, "SHOW RETENTION POLICIES ON torc").await,
        vec![
            r#"[Str("autogen"), Str("720h0m0s"), Str("24h0m0s"), Int(1), Bool(true)]"#,
            r#"[Str("long"), Str("1680h0m0s"), Str("24h0m0s"), Int(1), Bool(false)]"#,
        ]
    );
    assert_eq!(rows(&db, "SHOW CONTINUOUS QUERIES").await, cqs);
    collect_once(
        &url,
        Retention {
            duration: 0,
            downsample: None,
        },
    )
    .await;
    assert_eq!(
        rows(&db, "SHOW RETENTION POLICIES ON torc").await[0],
        r#"[Str("autogen"), Str("0s"), Str("168h0m0s"), Int(1), Bool(true)]"#
    );
    assert!(rows(&db, "SHOW CONTINUOUS QUERIES").await.is_empty());
}

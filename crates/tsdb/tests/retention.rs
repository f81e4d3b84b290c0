//! Retention and continuous queries in a torc tsdb process killed with SIGKILL (the test binary
//! runs itself as the server, see `common::child`).
//!
//! * Shards past their policy's duration are dropped on the retention service's schedule (a
//!   test-short check interval): the segment files go from disk, queries no longer return the
//!   points, and both stay so after `kill -9` and a restart. Time is driven by old timestamps
//!   (written under an infinite policy, which is then shortened to 1 h), never by waiting.
//! * A continuous query is stored durably: it survives `kill -9`, runs after the restart and
//!   writes each `GROUP BY time` bucket at its start with the host tag it grouped by; a dropped
//!   one stays dropped.

mod common;

use std::time::{Duration, Instant};

use common::child::{ChildOptions, Killed, spawn};
use serde_json::Value;

#[test]
fn child_entry() {
    if let Ok(dir) = std::env::var("TSDB_CHILD_DIR") {
        common::child::child_main(&dir);
    }
}

/// Runs `query` on database `d`; its JSON (panics on an error).
async fn q(url: &str, query: &str) -> Value {
    let (s, b) = common::query(url, "d", query).await;
    assert_eq!(s, 200, "{query}: {b}");
    assert!(!b.contains("\"error\""), "{query}: {b}");
    common::parse_body(&b)
}

/// The rows of the first series of `query`'s answer.
async fn rows(url: &str, query: &str) -> Vec<Value> {
    q(url, query)
        .await
        .pointer("/results/0/series/0/values")
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The segment files of database `d`, policy `rp`.
fn segments(dir: &std::path::Path, rp: &str) -> usize {
    let p = dir
        .join("data")
        .join(torc_tsdb::names::dir_name("d"))
        .join(torc_tsdb::names::dir_name(rp));
    std::fs::read_dir(p).map_or(0, |d| {
        d.filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .count()
    })
}

/// Waits (polling, bounded) until `ok` holds; panics with `what` and the last state.
async fn wait_until<F, Fut>(what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match ok().await {
            Ok(()) => return,
            Err(state) => assert!(Instant::now() < deadline, "{what}: {state}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// 100 points of `m` (hosts a and b) from `start` (seconds), one a second.
fn points(start: i64) -> String {
    (0..100i64)
        .map(|i| {
            let host = if i % 2 == 0 { "a" } else { "b" };
            format!("m,host={host} v={i} {}\n", start + i)
        })
        .collect()
}

async fn count(url: &str) -> i64 {
    rows(url, "SELECT count(v) FROM m")
        .await
        .first()
        .and_then(|r| r[1].as_i64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_shards_are_dropped_and_stay_dropped_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ChildOptions {
        flush_values: Some(100),
        retention_check: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let (child, url) = spawn(dir.path(), &opts);
    let child = Killed(child);
    common::wait_ping(&url).await;
    q(&url, "CREATE DATABASE d").await;
    q(
        &url,
        "CREATE RETENTION POLICY short ON d DURATION INF REPLICATION 1 DEFAULT",
    )
    .await;
    // Three hours old, then recent: each batch fills the head and is flushed on its own, so
    // each is a segment of its own.
    let now = now_s();
    for (i, start) in [now - 3 * 3600, now - 200].into_iter().enumerate() {
        let (s, b) = common::write(&url, "d", "s", &points(start)).await;
        assert_eq!(s, 204, "{b}");
        wait_until("each batch flushed into a segment", || async {
            let n = segments(dir.path(), "short");
            (n == i + 1).then_some(()).ok_or(format!("{n} segments"))
        })
        .await;
    }
    assert_eq!(count(&url).await, 200);
    // Kept forever, the old points stay through several checks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(&url).await, 200);
    assert_eq!(segments(dir.path(), "short"), 2);

    q(&url, "ALTER RETENTION POLICY short ON d DURATION 1h").await;
    wait_until("the expired segment dropped", || async {
        let (n, c) = (segments(dir.path(), "short"), count(&url).await);
        (n == 1 && c == 100)
            .then_some(())
            .ok_or(format!("{n} segments, {c} points"))
    })
    .await;
    let old = format!("SELECT count(v) FROM m WHERE time < {}s", now - 3600);
    assert!(rows(&url, &old).await.is_empty());
    // A point past the policy is refused, as influxd refuses it.
    let (s, b) = common::write(&url, "d", "s", &format!("m,host=a v=1 {}\n", now - 7200)).await;
    assert!(
        s == 400 && b.contains("points beyond retention policy dropped=1"),
        "{s} {b}"
    );

    drop(child);
    let (child, url) = spawn(dir.path(), &opts);
    let _child = Killed(child);
    common::wait_ping(&url).await;
    assert_eq!(count(&url).await, 100);
    assert!(rows(&url, &old).await.is_empty());
    assert_eq!(segments(dir.path(), "short"), 1);
}

const CQ: &str = "CREATE CONTINUOUS QUERY c ON d RESAMPLE EVERY 1s FOR 30s BEGIN SELECT mean(v), \
                  count(v) INTO d.autogen.down FROM m GROUP BY time(2s), host END";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_queries_survive_kill_9_and_write_buckets_at_their_start() {
    let dir = tempfile::tempdir().unwrap();
    let opts = ChildOptions {
        cq_run: Some(Duration::from_millis(100)),
        ..Default::default()
    };
    let (child, url) = spawn(dir.path(), &opts);
    let child = Killed(child);
    common::wait_ping(&url).await;
    q(&url, "CREATE DATABASE d").await;
    q(&url, CQ).await;
    drop(child);

    let (child, url) = spawn(dir.path(), &opts);
    let child = Killed(child);
    common::wait_ping(&url).await;
    let shown = q(&url, "SHOW CONTINUOUS QUERIES").await;
    assert_eq!(
        shown["results"][0]["series"][0]["values"][0],
        serde_json::json!([
            "c",
            "CREATE CONTINUOUS QUERY c ON d RESAMPLE EVERY 1s FOR 30s BEGIN SELECT mean(v), \
             count(v) INTO d.autogen.down FROM d.autogen.m GROUP BY time(2s), host END"
        ]),
        "{shown}"
    );
    // Points over the last 10 s, one every 100 ms: v counts up, hosts alternate.
    let now_ms = now_s() * 1000;
    let start = now_ms - 10_000;
    let lines: String = (0..100i64)
        .map(|i| {
            let host = if i % 2 == 0 { "a" } else { "b" };
            format!("m,host={host} v={i} {}\n", start + i * 100)
        })
        .collect();
    let (s, b) = common::write(&url, "d", "ms", &lines).await;
    assert_eq!(s, 204, "{b}");
    // What each (host, 2 s bucket) should hold: its start, mean and count.
    let mut want: std::collections::BTreeMap<(String, i64), (f64, i64)> = Default::default();
    for i in 0..100i64 {
        let host = if i % 2 == 0 { "a" } else { "b" };
        let t = start + i * 100;
        let e = want
            .entry((host.to_string(), t.div_euclid(2000) * 2000))
            .or_insert((0.0, 0));
        e.0 += i as f64;
        e.1 += 1;
    }
    wait_until("the continuous query's buckets", || async {
        let v = q(&url, "SELECT mean, count FROM down GROUP BY host").await;
        let mut seen = 0;
        for s in v["results"][0]["series"].as_array().into_iter().flatten() {
            let host = s["tags"]["host"].as_str().unwrap_or("").to_string();
            for r in s["values"].as_array().into_iter().flatten() {
                let t = timefmt(&r[0]);
                let Some((sum, n)) = want.get(&(host.clone(), t)) else {
                    return Err(format!("a bucket at {t} not at a bucket start: {v}"));
                };
                if r[2].as_i64() != Some(*n)
                    || (r[1].as_f64().unwrap_or(f64::NAN) - sum / *n as f64).abs() > 1e-9
                {
                    return Err(format!("{host} {t}: {r}"));
                }
                seen += 1;
            }
        }
        (seen == want.len())
            .then_some(())
            .ok_or(format!("{seen} of {} buckets: {v}", want.len()))
    })
    .await;

    q(&url, "DROP CONTINUOUS QUERY c ON d").await;
    drop(child);
    let (child, url) = spawn(dir.path(), &opts);
    let _child = Killed(child);
    common::wait_ping(&url).await;
    let shown = q(&url, "SHOW CONTINUOUS QUERIES").await;
    assert_eq!(
        shown["results"][0]["series"][0],
        serde_json::json!({"name": "d", "columns": ["name", "query"]}),
        "{shown}"
    );
}

/// A row's time (RFC 3339, as `/query` answers without `epoch`) in ms.
fn timefmt(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or("");
    torc_tsdb::timefmt::parse_rfc3339(s).map_or(i64::MIN, |ns| ns / 1_000_000)
}

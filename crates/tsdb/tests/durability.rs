//! Every acknowledged write survives `kill -9`: the test binary re-executes itself as a server
//! (env `TSDB_CHILD_DIR`), writes concurrently, kills the child with SIGKILL, restarts it on the
//! same directory and checks that every acknowledged point is there. Also: a torn WAL tail is
//! truncated; other damage and unknown format versions refuse to open. Users, too: every
//! acknowledged `CREATE USER`, `GRANT` and `SET PASSWORD` survives `kill -9`, and one whose
//! `meta.json` write fails is refused for good.

mod common;

use std::process::Command;

use common::child::{self, ChildOptions, Killed};

fn spawn_child(dir: &std::path::Path) -> (std::process::Child, String) {
    spawn(dir, usize::MAX, false)
}

/// As [`spawn_child`]; the child flushes its heads into segments once they hold `flush_values`.
fn spawn_child_with(dir: &std::path::Path, flush_values: usize) -> (std::process::Child, String) {
    spawn(dir, flush_values, false)
}

fn spawn(dir: &std::path::Path, flush_values: usize, auth: bool) -> (std::process::Child, String) {
    let opts = ChildOptions {
        flush_values: (flush_values != usize::MAX).then_some(flush_values),
        auth,
        ..Default::default()
    };
    child::spawn(dir, &opts)
}

#[test]
fn child_entry() {
    if let Ok(dir) = std::env::var("TSDB_CHILD_DIR") {
        child::child_main(&dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn_child(dir.path());
    common::wait_ping(&url).await;
    let (s, _) = common::query(&url, "", "CREATE DATABASE d").await;
    assert_eq!(s, 200);
    // 8 concurrent writers; count acknowledged points; kill while they run.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let url = url.clone();
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            for b in 0..1000 {
                let body: String = (0..50)
                    .map(|i| format!("m,w={w} v={i}i {}\n", b * 50 + i))
                    .collect();
                match common::client()
                    .post(format!("{url}/write?db=d"))
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 204 => {
                        acked.fetch_add(50, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => return,
                }
            }
        }));
    }
    // Kill once some writes are acknowledged (wait on the condition, not on time).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.load(std::sync::atomic::Ordering::SeqCst) < 20_000 {
        assert!(std::time::Instant::now() < deadline, "writes too slow");
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let pid = child.id() as i32;
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    let (mut child, url) = spawn_child(dir.path());
    common::wait_ping(&url).await;
    let (_, b) = common::query(&url, "d", "SELECT count(v) FROM m").await;
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let n = v["results"][0]["series"][0]["values"][0][1]
        .as_u64()
        .unwrap_or(0) as usize;
    assert!(n >= acked, "lost writes: {n} stored < {acked} acknowledged");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn torn_tail_truncated_and_corruption_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
            db.create_database("d").unwrap();
            let pts = torc_tsdb::lineproto::parse(
                b"m v=1 1\nm v=2 2",
                torc_tsdb::lineproto::Precision::Seconds,
                0,
            )
            .points;
            db.write("d", None, pts).await.unwrap();
        });
    }
    // The newest WAL file holds the write; tear its tail.
    let wal_dir = dir.path().join("wal");
    let mut files: Vec<_> = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let last = files.last().unwrap().clone();
    let mut bytes = std::fs::read(&last).unwrap();
    bytes.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&last, &bytes).unwrap();
    let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).expect("torn tail is tolerated");
    drop(db);
    // Unknown format version refuses to open.
    std::fs::write(dir.path().join("FORMAT"), "torc-tsdb 99\n").unwrap();
    let e = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap_err();
    assert!(e.to_string().contains("unsupported on-disk format"), "{e}");
    std::fs::write(dir.path().join("FORMAT"), "torc-tsdb 1\n").unwrap();
    // A damaged segment refuses to open.
    let seg = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    std::fs::write(&seg, b).unwrap();
    let e = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap_err();
    assert!(e.to_string().contains("corrupt"), "{e}");
}

async fn q(url: &str, query: &str) -> String {
    let (s, b) = common::query(url, "d", query).await;
    assert_eq!(s, 200, "{query}: {b}");
    assert!(!b.contains("\"error\""), "{query}: {b}");
    b
}

/// What the deletion test expects to see: series keys and counts per series.
async fn deletion_state(url: &str) -> (String, String, String) {
    (
        q(url, "SHOW SERIES").await,
        q(url, "SELECT count(v) FROM m GROUP BY w").await,
        q(url, "SHOW MEASUREMENTS").await,
    )
}

/// Deletions survive `kill -9`, whether the deleted data was in segments or in the head, and
/// a second crash and replay does not change the outcome (deletion replay is idempotent);
/// writes acknowledged after a deletion are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (child, url) = spawn_child_with(dir.path(), 2000);
    let child = Killed(child);
    common::wait_ping(&url).await;
    common::query(&url, "", "CREATE DATABASE d").await;
    let batch = |from: i64, to: i64| -> String {
        (from..to)
            .flat_map(|t| (0..4).map(move |w| format!("m,w={w} v={t} {t}\n")))
            .chain((from..to).map(|t| format!("gone,x=1 v={t} {t}\n")))
            .collect()
    };
    let (s, b) = common::write(&url, "d", "s", &batch(0, 1000)).await;
    assert_eq!(s, 204, "{b}");
    // The background flush moves these into segments (wait on the condition).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !walk(dir.path())
        .iter()
        .any(|p| p.extension().is_some_and(|e| e == "seg"))
    {
        assert!(std::time::Instant::now() < deadline, "no flush");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // These stay in the head.
    let (s, b) = common::write(&url, "d", "s", &batch(1000, 1100)).await;
    assert_eq!(s, 204, "{b}");
    for stmt in [
        "DROP SERIES FROM m WHERE w = '0'",
        "DELETE FROM m WHERE w = '1' AND time < 500s",
        "DELETE FROM m WHERE w = '2' AND time >= 1050s",
        "DROP MEASUREMENT gone",
    ] {
        q(&url, stmt).await;
    }
    let (s, b) = common::write(&url, "d", "s", "m,w=0 v=7 5\n").await;
    assert_eq!(s, 204, "{b}");
    let before = deletion_state(&url).await;
    assert!(
        before.0.contains("m,w=0") && !before.0.contains("gone"),
        "{before:?}"
    );
    assert!(
        before.1.contains(
            r#""w":"1"},"columns":["time","count"],"values":[["1970-01-01T00:00:00Z",600]]"#
        ),
        "{before:?}"
    );
    assert!(
        before.1.contains(
            r#""w":"2"},"columns":["time","count"],"values":[["1970-01-01T00:00:00Z",1050]]"#
        ),
        "{before:?}"
    );
    assert!(
        before.1.contains(
            r#""w":"0"},"columns":["time","count"],"values":[["1970-01-01T00:00:00Z",1]]"#
        ),
        "{before:?}"
    );
    drop(child); // kill -9
    for round in 0..2 {
        let (child, url) = spawn_child_with(dir.path(), 2000);
        let child = Killed(child);
        common::wait_ping(&url).await;
        let after = deletion_state(&url).await;
        assert_eq!(before, after, "after restart {round}");
        drop(child); // kill -9
    }
}

async fn count_by_w(db: &torc_tsdb::Tsdb) -> String {
    let stmts = torc_tsdb::influxql::parse_query("SELECT count(v) FROM m GROUP BY w").unwrap();
    let r = torc_tsdb::exec::execute(db, &stmts, Some("d")).await;
    torc_tsdb::json::results_json(&r, torc_tsdb::json::Epoch::parse(None))
}

/// A crash after a deletion's WAL record is durable but before its segment rewrites reach the
/// disk: replay redoes the rewrite (simulated by putting the old segment files back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_replay_rewrites_old_segments() {
    use torc_tsdb::lineproto::{Precision, parse};
    let dir = tempfile::tempdir().unwrap();
    let saved;
    let expected;
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        db.create_database("d").unwrap();
        let lp: String = (0..100)
            .map(|t| format!("m,w={} v={t} {t}\n", t % 2))
            .collect();
        db.write(
            "d",
            None,
            parse(lp.as_bytes(), Precision::Seconds, 0).points,
        )
        .await
        .unwrap();
        db.flush().await.unwrap();
        saved = segments(dir.path());
        assert!(!saved.is_empty());
        let stmts = torc_tsdb::influxql::parse_query(
            "DROP SERIES FROM m WHERE w = '0'; DELETE FROM m WHERE time < 50s",
        )
        .unwrap();
        let r = torc_tsdb::exec::execute(&db, &stmts, Some("d")).await;
        assert!(r.iter().all(|r| r.error.is_none()), "{r:?}");
        expected = count_by_w(&db).await;
        assert!(
            expected.contains(
                r#""w":"1"},"columns":["time","count"],"values":[["1970-01-01T00:00:00Z",25]]"#
            ),
            "{expected}"
        );
        assert!(!expected.contains(r#""w":"0""#), "{expected}");
        // Dropped without a flush: the WAL keeps the deletion records.
    }
    for (p, b) in &saved {
        std::fs::write(p, b).unwrap();
    }
    for _ in 0..2 {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        assert_eq!(count_by_w(&db).await, expected);
    }
}

/// Every segment file under `dir`, with its bytes.
fn segments(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A deletion that removed a shard's only segment, a write of the same series after it, then a
/// crash while the restart's checkpoint had written its segment but not yet removed the WAL
/// (simulated by putting the WAL back): the second replay redoes the deletion and the write,
/// and the write is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletion_replay_keeps_later_writes() {
    use torc_tsdb::lineproto::{Precision, parse};
    let dir = tempfile::tempdir().unwrap();
    let points = |lp: &str| parse(lp.as_bytes(), Precision::Seconds, 0).points;
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        db.create_database("d").unwrap();
        db.write("d", None, points("m,w=0 v=1 1\nm,w=0 v=2 2"))
            .await
            .unwrap();
        db.flush().await.unwrap();
        let stmts = torc_tsdb::influxql::parse_query("DROP SERIES FROM m WHERE w = '0'").unwrap();
        let r = torc_tsdb::exec::execute(&db, &stmts, Some("d")).await;
        assert!(r.iter().all(|r| r.error.is_none()), "{r:?}");
        db.write("d", None, points("m,w=0 v=3 2")).await.unwrap();
    }
    let wal: Vec<(std::path::PathBuf, Vec<u8>)> = walk(&dir.path().join("wal"))
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    let expected = r#""values":[["1970-01-01T00:00:00Z",1]]"#;
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        let c = count_by_w(&db).await;
        assert!(c.contains(expected), "{c}");
    }
    for (p, b) in &wal {
        std::fs::write(p, b).unwrap();
    }
    let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
    let c = count_by_w(&db).await;
    assert!(c.contains(expected), "{c}");
}

async fn run(db: &torc_tsdb::Tsdb, q: &str) -> String {
    let stmts = torc_tsdb::influxql::parse_query(q).unwrap();
    let r = torc_tsdb::exec::execute(db, &stmts, Some("d")).await;
    assert!(r.iter().all(|r| r.error.is_none()), "{q}: {r:?}");
    torc_tsdb::json::results_json(&r, torc_tsdb::json::Epoch::parse(None))
}

/// `DROP RETENTION POLICY` takes its data along for good: neither its segments nor points still
/// in the WAL come back in a policy of the same name created later, across restarts; and a
/// directory a crash left behind is removed on open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_retention_policy_stays_dropped() {
    use torc_tsdb::lineproto::{Precision, parse};
    let dir = tempfile::tempdir().unwrap();
    let points = |lp: &str| parse(lp.as_bytes(), Precision::Seconds, 0).points;
    let rp_dir;
    let saved: Vec<(std::path::PathBuf, Vec<u8>)>;
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        db.create_database("d").unwrap();
        run(
            &db,
            "CREATE RETENTION POLICY r ON d DURATION INF REPLICATION 1",
        )
        .await;
        db.write("d", Some("r"), points("m v=1 1\nm v=2 2"))
            .await
            .unwrap();
        db.flush().await.unwrap();
        saved = segments(dir.path());
        assert_eq!(saved.len(), 1);
        rp_dir = saved[0].0.parent().unwrap().to_path_buf();
        db.write("d", Some("r"), points("m v=3 3")).await.unwrap();
        run(&db, "DROP RETENTION POLICY r ON d").await;
        assert!(!rp_dir.exists());
        run(
            &db,
            "CREATE RETENTION POLICY r ON d DURATION INF REPLICATION 1",
        )
        .await;
        db.write("d", Some("r"), points("m v=4 4")).await.unwrap();
        // Dropped without a flush: the WAL holds points before and after the drop.
    }
    let count = r#""values":[["1970-01-01T00:00:00Z",1]]"#;
    for _ in 0..2 {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        let c = run(&db, "SELECT count(v) FROM d.r.m").await;
        assert!(c.contains(count), "{c}");
    }
    // A crash between the metadata update and the removal of the directory, simulated by
    // putting the old segment back after a drop: the next open removes it.
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        run(&db, "DROP RETENTION POLICY r ON d").await;
    }
    std::fs::create_dir_all(&rp_dir).unwrap();
    std::fs::write(&saved[0].0, &saved[0].1).unwrap();
    let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
    assert!(!rp_dir.exists());
    run(
        &db,
        "CREATE RETENTION POLICY r ON d DURATION INF REPLICATION 1",
    )
    .await;
    let c = run(&db, "SELECT count(v) FROM d.r.m").await;
    assert_eq!(c, r#"{"results":[{"statement_id":0}]}"#);
}

/// The WAL is version 2 (deletion and drop-retention-policy records); a version-1 file, as an
/// older build left it, still replays, and an unknown version refuses to open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_version_1_replays_and_unknown_versions_refuse() {
    use torc_tsdb::lineproto::{Precision, parse};
    let dir = tempfile::tempdir().unwrap();
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        db.create_database("d").unwrap();
        let pts = parse(b"m,w=1 v=1 1", Precision::Seconds, 0).points;
        db.write("d", None, pts).await.unwrap();
    }
    let wal = walk(&dir.path().join("wal"))
        .into_iter()
        .filter(|p| std::fs::metadata(p).unwrap().len() > 12)
        .collect::<Vec<_>>();
    assert_eq!(wal.len(), 1);
    let mut b = std::fs::read(&wal[0]).unwrap();
    assert_eq!(&b[8..12], &2u32.to_le_bytes());
    let keep = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        for p in walk(from) {
            let t = to.join(p.strip_prefix(from).unwrap());
            std::fs::create_dir_all(t.parent().unwrap()).unwrap();
            std::fs::copy(&p, &t).unwrap();
        }
    };
    copy(dir.path(), keep.path());
    b[8..12].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(&wal[0], &b).unwrap();
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        assert!(count_by_w(&db).await.contains(r#""w":"1""#));
    }
    let other = keep.path().join(wal[0].strip_prefix(dir.path()).unwrap());
    b[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&other, &b).unwrap();
    let e = torc_tsdb::Tsdb::open(keep.path(), Default::default()).unwrap_err();
    assert!(e.to_string().contains("unsupported on-disk format"), "{e}");
}

/// A query as `user` (u/p in the URL): status and body.
async fn query_as(url: &str, user: &str, pw: &str, db: &str, q: &str) -> (u16, String) {
    let r = common::client()
        .post(format!("{url}/query"))
        .query(&[("u", user), ("p", pw), ("db", db), ("q", q)])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_user_changes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = spawn(dir.path(), usize::MAX, true);
    common::wait_ping(&url).await;
    let (s, b) = common::query(
        &url,
        "",
        "CREATE USER root WITH PASSWORD 'rpw' WITH ALL PRIVILEGES",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for q in [
        "CREATE DATABASE d",
        "CREATE USER bob WITH PASSWORD 'old'",
        "GRANT READ ON d TO bob",
        "SET PASSWORD FOR bob = 'new'",
    ] {
        let (s, b) = query_as(&url, "root", "rpw", "", q).await;
        assert_eq!((s, b.contains("error")), (200, false), "{q}: {b}");
    }
    // Users created concurrently, killed in the middle: every acknowledged one must be there.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for w in 0..2 {
        let (url, acked) = (url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let name = format!("u{w}_{i}");
                let q = format!("CREATE USER {name} WITH PASSWORD 'p{i}'");
                match common::client()
                    .post(format!("{url}/query"))
                    .query(&[("u", "root"), ("p", "rpw"), ("q", &q)])
                    .send()
                    .await
                {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let body = r.text().await.unwrap_or_default();
                        assert!(!body.contains("error"), "{body}");
                        acked.lock().unwrap().push(name);
                    }
                    _ => return,
                }
            }
        }));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while acked.lock().unwrap().len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "user creation too slow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = child.wait();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    let (mut child, url) = spawn(dir.path(), usize::MAX, true);
    common::wait_ping(&url).await;
    // Authentication is still required, the admin's password still works.
    let (s, _) = common::query(&url, "", "SHOW USERS").await;
    assert_eq!(s, 401);
    let (s, b) = query_as(&url, "root", "rpw", "", "SHOW USERS").await;
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    let users: Vec<&str> = v["results"][0]["series"][0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r[0].as_str())
        .collect();
    for name in &acked {
        assert!(
            users.contains(&name.as_str()),
            "lost user {name}: {users:?}"
        );
    }
    // The grant and the password change are there; the old password is gone.
    let (s, b) = query_as(&url, "root", "rpw", "", "SHOW GRANTS FOR bob").await;
    assert_eq!(s, 200);
    assert!(b.contains(r#"["d","READ"]"#), "{b}");
    let (s, _) = query_as(&url, "bob", "old", "d", "SHOW MEASUREMENTS").await;
    assert_eq!(s, 401);
    let (s, b) = query_as(&url, "bob", "new", "d", "SHOW MEASUREMENTS").await;
    assert_eq!(s, 200, "{b}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn meta_version_1_reads_as_no_users_and_unknown_versions_refuse() {
    let dir = tempfile::tempdir().unwrap();
    drop(torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap());
    // A version 1 file (before users) from an older torc.
    std::fs::write(
        dir.path().join("meta.json"),
        r#"{"version":1,"databases":{"d":{"default_rp":"autogen","rps":{"autogen":{"duration_ns":0,"shard_group_ns":604800000000000,"replication":1}}}}}"#,
    )
    .unwrap();
    let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
    assert_eq!(db.databases(), vec!["d".to_string()]);
    assert_eq!(db.user_count(), 0);
    // The next change writes version 2, users included.
    db.create_database("e").unwrap();
    drop(db);
    let text = std::fs::read_to_string(dir.path().join("meta.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["version"], 2);
    assert_eq!(v["users"], serde_json::json!([]));
    // A version this build does not know refuses to open.
    std::fs::write(
        dir.path().join("meta.json"),
        text.replace("\"version\": 2", "\"version\": 3"),
    )
    .unwrap();
    let e = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap_err();
    assert!(e.to_string().contains("meta version 3"), "{e}");
}

/// A user change whose `meta.json` write fails (a real failure: a directory stands where the
/// file is renamed to) is refused and never served; the store then refuses every
/// later change, also once the write could succeed, rather than go on from metadata the disk
/// may not hold; reads go on; a restart finds the users as they were before the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_user_change_poisons_the_store() {
    use torc_tsdb::lineproto::{Precision, parse};
    let dir = tempfile::tempdir().unwrap();
    {
        let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
        db.create_database("d").unwrap();
        db.create_user("alice", "pw-alice", false).await.unwrap();
        // A directory where meta.json must be renamed to: the write fails at its rename.
        let blocker = dir.path().join("meta.json");
        let before = std::fs::read(&blocker).unwrap();
        std::fs::remove_file(&blocker).unwrap();
        std::fs::create_dir(&blocker).unwrap();
        std::fs::write(blocker.join("in-the-way"), b"").unwrap();
        let e = db.create_user("bob", "pw-bob", true).await.unwrap_err();
        assert!(e.to_string().contains("meta.json"), "{e}");
        assert!(db.user("bob").is_none());
        assert!(!db.admin_exists());

        std::fs::remove_dir_all(&blocker).unwrap();
        std::fs::write(&blocker, &before).unwrap();
        let e = db
            .create_user("carol", "pw-carol", false)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        let e = db.create_database("e").unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        let points = parse(b"m v=1 1", Precision::Seconds, 0).points;
        let e = db.write("d", None, points).await.unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert!(db.user("alice").is_some());
        assert_eq!(db.databases(), vec!["d".to_string()]);
    }
    let db = torc_tsdb::Tsdb::open(dir.path(), Default::default()).unwrap();
    assert_eq!(db.users(), vec![("alice".to_string(), false)]);
    assert_eq!(db.databases(), vec!["d".to_string()]);
    db.create_user("carol", "pw-carol", false).await.unwrap();
}

//! `torc tsdb backup` and `torc tsdb restore` against real `torc tsdb` processes (free ports,
//! temp dirs): a backup taken while a writer acknowledges batches restores every batch
//! acknowledged before it began and nothing never written; a database's backup holds no other
//! database; retention policies and continuous queries come back (renamed with `--newdb`); an
//! existing database is never overwritten; the restore survives `kill -9`; damaged, truncated
//! and foreign files are refused with what is wrong; a restore into an empty data dir serves;
//! with authentication only an admin may back up or restore.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use torc_test_utils::{free_port, wait_for};

const TORC: &str = env!("CARGO_BIN_EXE_torc");
/// Points per write batch; a point's value is its time minus the run's base time.
const BATCH: u64 = 200;

/// A `torc tsdb` process, killed when dropped.
struct Tsdb {
    child: Child,
    url: String,
    dir: PathBuf,
    admin: Option<PathBuf>,
}

impl Tsdb {
    async fn start(dir: &Path, admin: Option<&Path>) -> Tsdb {
        for _ in 0..5 {
            let port = free_port(std::net::Ipv4Addr::LOCALHOST);
            let mut cmd = Command::new(TORC);
            cmd.args([
                "tsdb",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            if let Some(a) = admin {
                cmd.args(["--admin-user", "root", "--admin-password-file"])
                    .arg(a);
            }
            let mut t = Tsdb {
                child: cmd.spawn().expect("torc tsdb starts"),
                url: format!("http://127.0.0.1:{port}"),
                dir: dir.to_path_buf(),
                admin: admin.map(Path::to_path_buf),
            };
            let http = client();
            let up = wait_for("tsdb to answer /ping", Duration::from_secs(20), || {
                // Exited: the port was taken meanwhile.
                let exited = t.child.try_wait().ok().flatten().is_some();
                let (http, url) = (http.clone(), format!("{}/ping", t.url));
                async move {
                    if exited {
                        return Some(false);
                    }
                    let r = http.get(url).send().await.ok()?;
                    r.status().is_success().then_some(true)
                }
            })
            .await
            .unwrap();
            if up {
                return t;
            }
        }
        panic!("torc tsdb did not start on a free port in 5 tries");
    }

    /// SIGKILL, then a new process on the same directory.
    async fn kill_9_and_restart(mut self) -> Tsdb {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let (dir, admin) = (self.dir.clone(), self.admin.clone());
        Tsdb::start(&dir, admin.as_deref()).await
    }

    async fn query(&self, db: &str, q: &str) -> Value {
        self.query_as(db, q, Some(("root", "pw"))).await
    }

    async fn query_as(&self, db: &str, q: &str, user: Option<(&str, &str)>) -> Value {
        let mut r = client().post(format!("{}/query", self.url)).query(&[
            ("db", db),
            ("q", q),
            ("epoch", "ns"),
        ]);
        if let (Some((u, p)), Some(_)) = (user, &self.admin) {
            r = r.basic_auth(u, Some(p));
        }
        let r = r.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{q}: {status} {v}");
        v
    }

    async fn databases(&self) -> BTreeSet<String> {
        let v = self.query("", "SHOW DATABASES").await;
        v["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|r| r[0].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Tsdb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Runs `torc tsdb ARGS...` to its end.
async fn torc_tsdb(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(TORC).arg("tsdb").args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn assert_ok(out: &Output) -> String {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "stdout: {o}\nstderr: {e}");
    o.into_owned()
}

fn assert_refused(out: &Output, needle: &str) -> String {
    let e = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "succeeded: {e}");
    assert!(e.contains(needle), "{needle:?} not in: {e}");
    e
}

/// The (time, value) rows of `SELECT v FROM rp.m`.
async fn rows(t: &Tsdb, db: &str, rp: &str) -> Vec<(u64, u64)> {
    let v = t.query(db, &format!("SELECT v FROM {rp}.m")).await;
    let Some(values) = v["results"][0]["series"][0]["values"].as_array() else {
        return Vec::new();
    };
    values
        .iter()
        .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap()))
        .collect()
}

/// The retention policy batch `b` goes to.
fn rp_of(b: u64) -> &'static str {
    if b.is_multiple_of(5) { "wk" } else { "autogen" }
}

/// Writes batches to `d` until `stop`, recording each acknowledged batch; `started` is the
/// number of batches sent so far (acknowledged or not).
struct Writer {
    acked: Arc<Mutex<Vec<u64>>>,
    started: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_writer(url: String, base: u64) -> Writer {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (a, s, st) = (acked.clone(), started.clone(), stop.clone());
    let task = tokio::spawn(async move {
        let http = client();
        // Bounded: at most 5,000 batches (a million points).
        for b in 0..5_000u64 {
            if st.load(Ordering::SeqCst) {
                break;
            }
            let body: String = (0..BATCH)
                .map(|i| {
                    let off = b * 1_000 + i;
                    format!("m,w={} v={off}i {}\n", i % 10, base + off)
                })
                .collect();
            s.store(b + 1, Ordering::SeqCst);
            let r = http
                .post(format!("{url}/write"))
                .query(&[("db", "d"), ("rp", rp_of(b))])
                .body(body)
                .send()
                .await;
            if r.is_ok_and(|r| r.status().as_u16() == 204) {
                a.lock().unwrap().push(b);
            }
        }
    });
    Writer {
        acked,
        started,
        stop,
        task,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_ingest_restores_every_acknowledged_point() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Tsdb::start(&tmp.path().join("a"), None).await;
    for q in [
        "CREATE DATABASE d",
        "CREATE DATABASE other",
        "CREATE RETENTION POLICY wk ON d DURATION 7d REPLICATION 1",
        "CREATE CONTINUOUS QUERY cq ON d BEGIN SELECT mean(v) INTO m_1m FROM m GROUP BY time(1m) END",
    ] {
        a.query("", q).await;
    }
    let other = client()
        .post(format!("{}/write?db=other", a.url))
        .body("x v=1 1\n")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status().as_u16(), 204);

    let base = u64::try_from(torc_tsdb::storage::now_ns()).unwrap() - 3_600_000_000_000;
    let writer = start_writer(a.url.clone(), base);
    wait_for(
        "200 batches acknowledged",
        Duration::from_secs(120),
        || async { (writer.acked.lock().unwrap().len() >= 200).then_some(()) },
    )
    .await
    .unwrap();
    // What was acknowledged before the backup began; the writer goes on meanwhile.
    let before: Vec<u64> = writer.acked.lock().unwrap().clone();
    let file = tmp.path().join("d.bak");
    let out = torc_tsdb(args(&[
        "backup",
        "--url",
        &a.url,
        "--db",
        "d",
        "--file",
        &path(&file),
    ]))
    .await;
    let printed = assert_ok(&out);
    assert!(printed.contains("backed up 1 database(s)"), "{printed}");
    // Every batch the backup can hold was sent by now.
    let sent = writer.started.load(Ordering::SeqCst);
    let acked_after = writer.acked.lock().unwrap().len();
    eprintln!(
        "{} batches acknowledged before the backup, {} while it ran, {sent} sent by its end",
        before.len(),
        acked_after - before.len()
    );
    wait_for(
        "more batches after the backup",
        Duration::from_secs(60),
        || async { (writer.acked.lock().unwrap().len() >= acked_after + 20).then_some(()) },
    )
    .await
    .unwrap();
    writer.stop.store(true, Ordering::SeqCst);
    writer.task.await.unwrap();
    assert!(
        sent > before.len() as u64,
        "the writer kept writing during the backup"
    );

    // Restored into another, empty server.
    let b = Tsdb::start(&tmp.path().join("b"), None).await;
    let out = torc_tsdb(args(&[
        "restore",
        "--url",
        &b.url,
        "--db",
        "d",
        "--file",
        &path(&file),
    ]))
    .await;
    let printed = assert_ok(&out);
    assert!(printed.contains("restored d:"), "{printed}");
    assert_eq!(b.databases().await, BTreeSet::from(["d".to_string()]));
    let check = |got: BTreeMap<&'static str, Vec<(u64, u64)>>| {
        let mut batches: BTreeMap<u64, u64> = BTreeMap::new();
        for (rp, rows) in &got {
            for &(t, v) in rows {
                // Only what was written: the value its time says, in its batch's policy, from
                // a batch sent before the backup ended.
                assert_eq!(t - base, v, "a point never written: {t} {v}");
                let batch = v / 1_000;
                assert!(v % 1_000 < BATCH && batch < sent, "{v}");
                assert_eq!(*rp, rp_of(batch), "batch {batch} in {rp}");
                *batches.entry(batch).or_default() += 1;
            }
        }
        for b in &before {
            assert_eq!(batches.get(b), Some(&BATCH), "acknowledged batch {b}");
        }
        // A write is all or nothing: every batch present is whole.
        assert!(batches.values().all(|&n| n == BATCH), "{batches:?}");
        batches.len()
    };
    let restored = BTreeMap::from([
        ("autogen", rows(&b, "d", "autogen").await),
        ("wk", rows(&b, "d", "wk").await),
    ]);
    let n = check(restored);
    assert!(n >= before.len(), "{n} batches");

    // Retention policies and continuous queries came back.
    let rps = b
        .query("", "SHOW RETENTION POLICIES ON d")
        .await
        .to_string();
    assert!(rps.contains("\"wk\",\"168h0m0s\""), "{rps}");
    let cqs = b.query("", "SHOW CONTINUOUS QUERIES").await.to_string();
    assert!(
        cqs.contains("CREATE CONTINUOUS QUERY cq ON d BEGIN SELECT mean(v) INTO d.autogen.m_1m FROM d.autogen.m GROUP BY time(1m) END"),
        "{cqs}"
    );

    // The backup of d holds no other database.
    let out = torc_tsdb(args(&[
        "restore",
        "--url",
        &b.url,
        "--db",
        "other",
        "--file",
        &path(&file),
    ]))
    .await;
    assert_refused(
        &out,
        "database \"other\" is not in the backup (it holds [\"d\"])",
    );

    // An existing database is never overwritten; under a new name it is restored, its
    // continuous query reading and writing the new one.
    let out = torc_tsdb(args(&["restore", "--url", &a.url, "--file", &path(&file)])).await;
    assert_refused(&out, "database \"d\" exists");
    let out = torc_tsdb(args(&[
        "restore",
        "--url",
        &a.url,
        "--db",
        "d",
        "--newdb",
        "d2",
        "--file",
        &path(&file),
    ]))
    .await;
    assert!(assert_ok(&out).contains("restored d2 (from d)"));
    let cqs = a.query("", "SHOW CONTINUOUS QUERIES").await.to_string();
    assert!(
        cqs.contains("CREATE CONTINUOUS QUERY cq ON d2 BEGIN SELECT mean(v) INTO d2.autogen.m_1m FROM d2.autogen.m GROUP BY time(1m) END"),
        "{cqs}"
    );
    let renamed = BTreeMap::from([
        ("autogen", rows(&a, "d2", "autogen").await),
        ("wk", rows(&a, "d2", "wk").await),
    ]);
    assert_eq!(check(renamed), n);

    // An acknowledged restore is durable: kill -9, start again, all there.
    let b = b.kill_9_and_restart().await;
    let again = BTreeMap::from([
        ("autogen", rows(&b, "d", "autogen").await),
        ("wk", rows(&b, "d", "wk").await),
    ]);
    assert_eq!(check(again), n);
    let rps = b
        .query("", "SHOW RETENTION POLICIES ON d")
        .await
        .to_string();
    assert!(rps.contains("\"wk\""), "{rps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_files_are_refused_and_an_empty_data_dir_restores() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Tsdb::start(&tmp.path().join("a"), None).await;
    for db in ["d", "e"] {
        a.query("", &format!("CREATE DATABASE {db}")).await;
        let body: String = (0..2_000)
            .map(|i| format!("m,h={} v={i}i {i}\n", i % 7))
            .collect();
        let r = client()
            .post(format!("{}/write?db={db}", a.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }
    // Every database when none is named.
    let file = tmp.path().join("all.bak");
    let out = torc_tsdb(args(&["backup", "--url", &a.url, "--file", &path(&file)])).await;
    assert!(assert_ok(&out).contains("backed up 2 database(s)"));
    let good = std::fs::read(&file).unwrap();
    let out = torc_tsdb(args(&["backup", "--url", &a.url, "--file", &path(&file)])).await;
    assert_refused(&out, "exists: choose a new file");
    let out = torc_tsdb(args(&[
        "backup",
        "--url",
        &a.url,
        "--db",
        "nope",
        "--file",
        &path(&tmp.path().join("x")),
    ]))
    .await;
    assert_refused(&out, "database not found: \"nope\"");
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("x.partial").exists());

    let b = Tsdb::start(&tmp.path().join("b"), None).await;
    let bad = |name: &str, bytes: Vec<u8>| {
        let p = tmp.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x40;
    let mut version = good.clone();
    version[16] = 9;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"more");
    let cases = [
        (
            bad("cut.bak", good[..mid].to_vec()),
            "the backup is truncated: it ends at byte",
        ),
        (
            bad("noend.bak", good[..good.len() - 40].to_vec()),
            "the backup is truncated",
        ),
        (bad("flip.bak", flipped), "the backup is damaged: record"),
        (
            bad("foreign.bak", b"{\"results\":[]}".to_vec()),
            "not a torc tsdb backup",
        ),
        (bad("empty.bak", Vec::new()), "the backup is empty"),
        (
            bad("version.bak", version),
            "the backup's header is damaged",
        ),
        (bad("trailing.bak", trailing), "bytes follow its end record"),
    ];
    for (p, needle) in &cases {
        let out = torc_tsdb(args(&["restore", "--url", &b.url, "--file", &path(p)])).await;
        assert_refused(&out, needle);
        let dir = tmp
            .path()
            .join(format!("off-{}", p.file_name().unwrap().to_string_lossy()));
        let out = torc_tsdb(args(&[
            "restore",
            "--data-dir",
            &path(&dir),
            "--file",
            &path(p),
        ]))
        .await;
        assert_refused(&out, needle);
    }
    // Nothing of them reached the server, and nothing is left staged.
    assert!(b.databases().await.is_empty());
    assert!(!b.dir.join("restore").exists());

    // Into an empty data dir, then served; a non-empty one is refused.
    let dir = tmp.path().join("c");
    let out = torc_tsdb(args(&[
        "restore",
        "--data-dir",
        &path(&dir),
        "--file",
        &path(&file),
    ]))
    .await;
    let printed = assert_ok(&out);
    assert!(
        printed.contains("restored d:") && printed.contains("restored e:"),
        "{printed}"
    );
    let out = torc_tsdb(args(&[
        "restore",
        "--data-dir",
        &path(&dir),
        "--file",
        &path(&file),
    ]))
    .await;
    assert_refused(&out, "is not empty");
    let c = Tsdb::start(&dir, None).await;
    for db in ["d", "e"] {
        let v = c.query(db, "SELECT count(v), sum(v) FROM m").await;
        assert_eq!(v["results"][0]["series"][0]["values"][0][1], 2_000, "{v}");
        assert_eq!(
            v["results"][0]["series"][0]["values"][0][2], 1_999_000,
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_admin_may_back_up_or_restore() {
    let tmp = tempfile::tempdir().unwrap();
    let (root_pw, bob_pw) = (tmp.path().join("root"), tmp.path().join("bob"));
    std::fs::write(&root_pw, "pw\n").unwrap();
    std::fs::write(&bob_pw, "bobpw\n").unwrap();
    let a = Tsdb::start(&tmp.path().join("a"), Some(&root_pw)).await;
    for q in [
        "CREATE DATABASE d",
        "CREATE USER bob WITH PASSWORD 'bobpw'",
        "GRANT ALL ON d TO bob",
    ] {
        a.query("", q).await;
    }
    let file = tmp.path().join("d.bak");
    let as_user = |user: &str, pw: &Path, mut a: Vec<String>| {
        a.extend(args(&["--user", user, "--password-file", &path(pw)]));
        a
    };
    let backup = args(&[
        "backup",
        "--url",
        &a.url,
        "--db",
        "d",
        "--file",
        &path(&file),
    ]);
    let out = torc_tsdb(backup.clone()).await;
    assert_refused(&out, "401 Unauthorized");
    let out = torc_tsdb(as_user("bob", &bob_pw, backup.clone())).await;
    assert_refused(
        &out,
        "bob not authorized to back up databases, requires admin privilege",
    );
    assert!(!file.exists());
    assert_ok(&torc_tsdb(as_user("root", &root_pw, backup)).await);
    let restore = args(&[
        "restore",
        "--url",
        &a.url,
        "--db",
        "d",
        "--newdb",
        "d2",
        "--file",
        &path(&file),
    ]);
    let out = torc_tsdb(as_user("bob", &bob_pw, restore.clone())).await;
    assert_refused(
        &out,
        "bob not authorized to restore databases, requires admin privilege",
    );
    assert_ok(&torc_tsdb(as_user("root", &root_pw, restore)).await);
    assert_eq!(
        a.databases().await,
        BTreeSet::from(["d".to_string(), "d2".to_string()])
    );
}

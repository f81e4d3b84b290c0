//! Every acknowledged write survives `kill -9`: the test binary re-executes itself as a server
//! (env `TSDB_CHILD_DIR`), writes concurrently, kills the child with SIGKILL, restarts it on the
//! same directory and checks that every acknowledged point is there. Also: a torn WAL tail is
//! truncated; other damage and unknown format versions refuse to open.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// When run as the child: serve on a free port, print it, serve until killed.
fn child_main(dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let db =
            std::sync::Arc::new(torc_tsdb::Tsdb::open(dir, torc_tsdb::Options::default()).unwrap());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("PORT {}", l.local_addr().unwrap().port());
        torc_tsdb::serve(l, db, std::future::pending())
            .await
            .unwrap();
    });
}

fn spawn_child(dir: &std::path::Path) -> (std::process::Child, String) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env("TSDB_CHILD_DIR", dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let port = loop {
        let l = lines.next().expect("child exited").unwrap();
        // libtest prints `test child_entry ... ` before our line.
        if let Some(i) = l.find("PORT ") {
            break l[i + 5..].trim().to_string();
        }
    };
    (child, format!("http://127.0.0.1:{port}"))
}

#[test]
fn child_entry() {
    if let Ok(dir) = std::env::var("TSDB_CHILD_DIR") {
        child_main(&dir);
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

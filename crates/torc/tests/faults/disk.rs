//! Full disk: a role's data dir (tsdb's, kv's, the controller's) on a small tmpfs the test mounts,
//! filled up by a filler file while the role serves, then freed.
//!
//! Checked: writes are refused with a clear error ("no space left", naming the file), nothing
//! acknowledged before is damaged (also across a `kill -9` and restart), and writes are taken
//! again by themselves, without a restart, once the filler is deleted. Needs root (to mount);
//! skipped with a printed reason otherwise.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use torc_test_utils::{LocalRack, RackOptions, etcdctl, wait_for};

use super::TORC;
use super::report::{Figures, scale};
use super::torn::{Role, tsdb_query, tsdb_tags};

/// A tmpfs of `size` mounted at a fresh directory, unmounted when dropped (also on a panic).
/// Whatever uses it must be dropped first (declare the mount before it).
struct Tmpfs {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl Tmpfs {
    /// `None` (with the reason printed) when this is not root or the mount fails.
    fn mount(size: &str) -> Option<Tmpfs> {
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            println!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let parent = tempfile::tempdir().expect("tempdir");
        let dir = parent.path().join("small");
        std::fs::create_dir(&dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .expect("running mount");
        if !out.status.success() {
            println!(
                "skipped: mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return None;
        }
        Some(Tmpfs {
            dir,
            _parent: parent,
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = Command::new("umount").arg(&self.dir).output();
        if !out.is_ok_and(|o| o.status.success()) {
            // Something still holds it open: detach it, so the temp dir can go.
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Fills the file system holding `path` by writing zeroes to it until a write is refused.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).expect("creating the filler");
    let block = vec![0u8; 64 << 10];
    for _ in 0..100_000 {
        if f.write_all(&block).is_err() {
            break;
        }
    }
    // The last few bytes a 64 KiB block did not fit in.
    for _ in 0..100_000 {
        if f.write_all(&[0u8; 512]).and_then(|()| f.flush()).is_err() {
            break;
        }
    }
}

/// POSTs one point to tsdb: `Ok` when acknowledged (204), else the status and body.
async fn write_point(http: &reqwest::Client, addr: &str, line: &str) -> Result<(), String> {
    let r = http
        .post(format!("http://{addr}/write?db=d"))
        .body(line.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    if status == 204 {
        return Ok(());
    }
    Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
}

async fn start_tsdb(data: &Path, log: &Path, http: &reqwest::Client) -> Role {
    let tsdb = Role::start(&["tsdb", "--data-dir", &data.to_string_lossy()], log);
    let addr = tsdb.addr.clone();
    wait_for("tsdb to serve", Duration::from_secs(20), || async {
        tsdb_tags(http, &addr).await
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default()));
    tsdb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_refuses_writes_on_a_full_disk_and_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let data = fs.dir.join("tsdb");
    let http = reqwest::Client::new();
    let mut tsdb = start_tsdb(&data, &logs.path().join("tsdb.log"), &http).await;
    tsdb_query(&http, &tsdb.addr, "CREATE DATABASE d")
        .await
        .expect("create database");

    let mut acked: Vec<String> = Vec::new();
    let mut n = 0usize;
    let point = |n: &mut usize| {
        *n += 1;
        let k = format!("p{n:06}");
        (format!("m,k={k} v={n} {}", 1_000_000 + *n), k)
    };
    for _ in 0..scale(20, 200) {
        let (line, k) = point(&mut n);
        write_point(&http, &tsdb.addr, &line).await.expect("write");
        acked.push(k);
    }
    let filler = fs.dir.join("filler");
    fill(&filler);
    // Writes until one is refused (the WAL's last page may still have room for a few).
    let mut refusal = None;
    for _ in 0..10_000 {
        let (line, k) = point(&mut n);
        match write_point(&http, &tsdb.addr, &line).await {
            Ok(()) => acked.push(k),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a write on a full disk is refused");
    println!("refused: {refusal}");
    assert!(refusal.contains("no space left"), "{refusal}");
    assert!(
        refusal.contains(&*data.join("wal").to_string_lossy()),
        "names the file: {refusal}"
    );
    // Still refused while the disk is full, and what was acknowledged is intact.
    let (line, _) = point(&mut n);
    assert!(write_point(&http, &tsdb.addr, &line).await.is_err());
    let have = tsdb_tags(&http, &tsdb.addr).await.expect("query");
    let lost_while_full = acked.iter().filter(|k| !have.contains(k)).count();

    std::fs::remove_file(&filler).expect("freeing space");
    let freed = Instant::now();
    let recovered = wait_for("tsdb to take writes again", Duration::from_secs(10), || {
        let (line, k) = point(&mut n);
        let http = &http;
        let addr = tsdb.addr.clone();
        async move { write_point(http, &addr, &line).await.ok().map(|()| k) }
    })
    .await
    .expect("writes resume without a restart");
    let recovery = freed.elapsed();
    acked.push(recovered);
    for _ in 0..scale(5, 50) {
        let (line, k) = point(&mut n);
        write_point(&http, &tsdb.addr, &line)
            .await
            .expect("write after space returned");
        acked.push(k);
    }

    // Across a kill -9 and a restart too: the refused writes left no damage in the WAL.
    tsdb.kill();
    let tsdb = start_tsdb(&data, &logs.path().join("tsdb-2.log"), &http).await;
    let have = tsdb_tags(&http, &tsdb.addr).await.expect("query");
    let lost = acked.iter().filter(|k| !have.contains(k)).count();
    let mut figures = Figures::new("full disk: tsdb on an 8 MiB tmpfs, then space freed");
    figures.acknowledged = acked.len() as u64;
    figures.lost = (lost + lost_while_full) as u64;
    figures.recovery = Some(recovery);
    drop(tsdb);
    figures.check();
}

async fn start_kv(data: &Path, log: &Path) -> Role {
    let kv = Role::start(&["kv", "--data-dir", &data.to_string_lossy()], log);
    let endpoint = format!("http://{}", kv.addr);
    wait_for("kv to serve", Duration::from_secs(20), || {
        let endpoint = endpoint.clone();
        async move { etcdctl(&endpoint, &["get", "x"]).ok() }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(log).unwrap_or_default()));
    kv
}

/// The keys under `prefix` kv serves.
fn kv_keys(endpoint: &str, prefix: &str) -> Vec<String> {
    etcdctl(endpoint, &["get", "--prefix", "--keys-only", prefix])
        .expect("get")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `torc kv`'s data dir on a full disk: puts are refused (at once: not as `Unavailable`,
/// which etcdctl would retry until its deadline), naming the data dir and saying no space is
/// left; what was acknowledged stays readable; once space is freed the same process takes
/// puts again by itself; a `kill -9` and restart find every acknowledged key and no refused one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_refuses_writes_on_a_full_disk_and_resumes_when_space_returns() {
    // kv preallocates two 8 MiB log files.
    let Some(fs) = Tmpfs::mount("40m") else {
        return;
    };
    let logs = tempfile::tempdir().expect("tempdir");
    let data = fs.dir.join("kv");
    let mut kv = start_kv(&data, &logs.path().join("kv.log")).await;
    let endpoint = format!("http://{}", kv.addr);
    // 64 KiB values: a hundred fill a log file, whose switch makes redb write (it may keep
    // the rest in memory), so the full disk is met within a few hundred puts.
    let value = "v".repeat(64 << 10);
    let mut acked: Vec<String> = Vec::new();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        format!("full-{n:05}")
    };
    for _ in 0..scale(10, 100) {
        let k = next();
        etcdctl(&endpoint, &["put", &k, "small"]).expect("put");
        acked.push(k);
    }
    let filler = fs.dir.join("filler");
    fill(&filler);
    let mut refusal = None;
    let mut refused = Vec::new();
    for _ in 0..1_000 {
        let k = next();
        match etcdctl(&endpoint, &["put", &k, &value]) {
            Ok(_) => acked.push(k),
            Err(e) => {
                refused.push(k);
                // etcdctl's last line (the error names the command, value and all).
                let text = e.to_string();
                refusal = text.lines().last().map(str::to_owned);
                break;
            }
        }
    }
    let refusal = refusal.expect("a put on a full disk is refused");
    println!("refused after {} puts: {refusal}", acked.len());
    assert!(refusal.contains("no space left"), "{refusal}");
    assert!(
        refusal.contains(&*data.to_string_lossy()),
        "names the data dir: {refusal}"
    );
    // Still refused while the disk is full, and what was acknowledged is readable.
    let k = next();
    assert!(etcdctl(&endpoint, &["put", &k, "small"]).is_err());
    refused.push(k);
    let have = kv_keys(&endpoint, "full-");
    let lost_while_full = acked.iter().filter(|k| !have.contains(k)).count();

    std::fs::remove_file(&filler).expect("freeing space");
    let freed = Instant::now();
    let recovered = wait_for("kv to take puts again", Duration::from_secs(15), || {
        let k = next();
        let endpoint = endpoint.clone();
        async move { etcdctl(&endpoint, &["put", &k, "small"]).ok().map(|_| k) }
    })
    .await
    .expect("puts resume without a restart");
    let recovery = freed.elapsed();
    acked.push(recovered);
    for _ in 0..scale(5, 50) {
        let k = next();
        etcdctl(&endpoint, &["put", &k, "small"]).expect("put after space returned");
        acked.push(k);
    }
    let have = kv_keys(&endpoint, "full-");
    let lost_live = acked.iter().filter(|k| !have.contains(k)).count();

    kv.kill();
    let kv = start_kv(&data, &logs.path().join("kv-2.log")).await;
    let have = kv_keys(&format!("http://{}", kv.addr), "full-");
    let lost = acked.iter().filter(|k| !have.contains(k)).count();
    let kept_refused: Vec<_> = refused.iter().filter(|k| have.contains(k)).collect();
    assert!(
        kept_refused.is_empty(),
        "refused, yet kept: {kept_refused:?}"
    );
    let mut figures = Figures::new("full disk: kv on a 40 MiB tmpfs, then space freed");
    figures.acknowledged = acked.len() as u64;
    figures.lost = (lost + lost_live + lost_while_full) as u64;
    figures.recovery = Some(recovery);
    drop(kv);
    figures.check();
}

/// Launches a `sleep` task named `name`: `Ok` when acknowledged, else the error's words.
async fn launch(client: &torc_client::Client, name: &str) -> Result<(), String> {
    let mut spec = torc_types::TaskSpec::new(name.parse().expect("a task name"), "sleep");
    spec.args = vec!["600".into()];
    client
        .launch(&spec)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The names of the rack's tasks, as the controller serves them.
async fn task_names(client: &torc_client::Client) -> Vec<String> {
    let tasks = client
        .tasks(&torc_api::TaskFilter::default())
        .await
        .expect("listing tasks");
    tasks.iter().map(|t| t.name.to_string()).collect()
}

/// The controller's `--data-dir` on a full disk: a launch is refused, naming its state file and
/// saying no space is left; the rack keeps serving what was acknowledged (and nothing of the
/// refused launches); once space is freed, launches are taken again by the same controller
/// process, and a restart finds every acknowledged task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_refuses_changes_on_a_full_disk_and_resumes_when_space_returns() {
    let Some(fs) = Tmpfs::mount("8m") else {
        return;
    };
    let data = fs.dir.join("controller");
    let mut rack = LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 1,
            controller_data_dir: Some(data.clone()),
            ..Default::default()
        },
    )
    .await
    .expect("rack");
    let client = rack.client();
    let mut acked: Vec<String> = Vec::new();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        format!("t{n:05}")
    };
    for _ in 0..scale(3, 20) {
        let name = next();
        launch(&client, &name).await.expect("launch");
        acked.push(name);
    }
    let filler = fs.dir.join("filler");
    fill(&filler);
    // Launches until one is refused (redb's file may still have free pages for a few).
    let mut refusal = None;
    for _ in 0..2_000 {
        let name = next();
        match launch(&client, &name).await {
            Ok(()) => acked.push(name),
            Err(e) => {
                refusal = Some((name, e));
                break;
            }
        }
    }
    let (refused, refusal) = refusal.expect("a launch on a full disk is refused");
    println!("refused: {refusal}");
    assert!(refusal.contains("no space left"), "{refusal}");
    let file = data.join("controller.redb");
    assert!(
        refusal.contains(&*file.to_string_lossy()),
        "names the file: {refusal}"
    );
    // Still refused while the disk is full; the rack serves what was acknowledged, not the
    // refused launches.
    let again = next();
    assert!(
        launch(&client, &again).await.is_err(),
        "taken on a full disk"
    );
    let served = task_names(&client).await;
    assert!(
        !served.contains(&refused) && !served.contains(&again),
        "a refused launch is served: {served:?}"
    );
    let lost_while_full = acked.iter().filter(|k| !served.contains(k)).count();

    std::fs::remove_file(&filler).expect("freeing space");
    let freed = Instant::now();
    let recovered = wait_for(
        "the controller to take launches again",
        Duration::from_secs(10),
        || {
            let name = next();
            let client = &client;
            async move { launch(client, &name).await.ok().map(|()| name) }
        },
    )
    .await
    .expect("launches resume without a restart");
    let recovery = freed.elapsed();
    acked.push(recovered);
    for _ in 0..scale(3, 20) {
        let name = next();
        launch(&client, &name)
            .await
            .expect("launch after space returned");
        acked.push(name);
    }

    // Across a kill -9 and a restart too: what the refusals left is a valid state file.
    rack.kill_controller();
    rack.start_controller().expect("restarting the controller");
    let served = wait_for(
        "the controller to serve again",
        Duration::from_secs(20),
        || {
            let client = &client;
            async move {
                client
                    .tasks(&torc_api::TaskFilter::default())
                    .await
                    .ok()
                    .map(|t| t.iter().map(|t| t.name.to_string()).collect::<Vec<_>>())
            }
        },
    )
    .await
    .expect("restarted controller");
    let lost = acked.iter().filter(|k| !served.contains(k)).count();
    let mut figures = Figures::new("full disk: controller on an 8 MiB tmpfs, then space freed");
    figures.acknowledged = acked.len() as u64;
    figures.lost = (lost + lost_while_full) as u64;
    figures.recovery = Some(recovery);
    drop(rack);
    figures.check();
}

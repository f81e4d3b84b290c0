//! Torn writes: a role's log truncated at every record boundary and at random offsets, as a
//! crash in the middle of a write (or a file system that lost the end of a file) leaves it.
//!
//! Each case writes through the real role (`torc kv` with `etcdctl put`, `torc tsdb` with
//! `/write`), kills it with SIGKILL, and reads the records back from the log itself (its format
//! is in `crates/kv/src/wal.rs` and `crates/tsdb/src/wal.rs`). Then, for each cut, a copy of
//! the data dir with the log truncated there is started again, and either
//! - it serves every write whose record lies wholly before the cut (what lies after was torn
//!   off by the fault itself), or
//! - it refuses to start, with an error naming the file and the offset.
//!
//! Anything else (a start that serves less, or a panic) counts as a silent loss. The agent's
//! task table (one JSON document) and the controller's redb file have no torn tail to
//! tolerate: cut short anywhere, they must be refused, naming the file. The figures:
//! acknowledged = records (or, for those two, cuts) checked across all cuts, lost = silent
//! losses.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use torc_test_utils::{etcdctl, free_port, wait_for};

use super::TORC;
use super::report::{Figures, scale};

/// A role started from the `torc` binary, killed with SIGKILL when dropped; its stderr goes to
/// a file, which is what a refusal is read from.
pub struct Role {
    child: Child,
    stderr: PathBuf,
    pub addr: String,
}

impl Role {
    /// Starts `torc <args>` with `--listen 127.0.0.1:<free port>` appended; its stderr goes to
    /// `log`.
    pub fn start(args: &[&str], log: &Path) -> Role {
        let port = free_port(Ipv4Addr::LOCALHOST);
        let addr = format!("127.0.0.1:{port}");
        let mut args = args.to_vec();
        args.extend(["--listen", &addr]);
        let mut role = Role::start_plain(&args, log);
        role.addr = addr;
        role
    }

    /// Starts `torc <args>` as given (no `--listen`); its stderr goes to `log`.
    pub fn start_plain(args: &[&str], log: &Path) -> Role {
        let stderr = std::fs::File::create(log).expect("creating the role's log");
        let child = Command::new(TORC)
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting torc");
        Role {
            child,
            stderr: log.to_path_buf(),
            addr: String::new(),
        }
    }

    /// `Some(stderr)` once the role exited (a refusal), `None` while it runs.
    pub fn exited(&mut self) -> Option<String> {
        self.child.try_wait().ok().flatten()?;
        let mut text = String::new();
        std::fs::File::open(&self.stderr)
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok()?;
        Some(text)
    }

    /// Kills the role with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a start on a torn copy did.
enum Start<T> {
    /// It served; what it served.
    Served(T),
    /// It refused; its stderr.
    Refused(String),
}

/// Waits until `role` serves (`probe` answers) or exits.
async fn started<T, F, Fut>(role: &mut Role, what: &str, mut probe: F) -> Start<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let addr = role.addr.clone();
    let role = std::sync::Mutex::new(role);
    let got = wait_for(what, Duration::from_secs(20), || {
        let exited = role.lock().expect("role").exited();
        let served = probe(addr.clone());
        async move {
            if let Some(stderr) = exited {
                return Some(Start::Refused(stderr));
            }
            served.await.map(Start::Served)
        }
    })
    .await;
    got.unwrap_or_else(|e| panic!("{e}"))
}

/// A record of a log: where it ends, and the keys (or point tags) it holds.
struct Record {
    end: u64,
    holds: Vec<String>,
}

/// The names `names` that occur in `payload`.
fn named_in(payload: &[u8], names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| payload.windows(n.len()).any(|w| w == n.as_bytes()))
        .cloned()
        .collect()
}

/// Records of a log file: `header` bytes, then records of `[len u32 LE][rest of the record
/// header][payload]`, `record_header` bytes of record header in all, up to the first record of
/// length 0 (zeroes) or cut short. kv (`crates/kv/src/wal.rs`): header 16, record header 16
/// (length, checksum, lsn); tsdb (`crates/tsdb/src/wal.rs`): header 12, record header 8.
fn records(bytes: &[u8], header: usize, record_header: usize, names: &[String]) -> Vec<Record> {
    let mut out = Vec::new();
    let mut pos = header;
    while pos + record_header <= bytes.len() {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 || pos + record_header + len > bytes.len() {
            break;
        }
        let payload = &bytes[pos + record_header..pos + record_header + len];
        pos += record_header + len;
        out.push(Record {
            end: pos as u64,
            holds: named_in(payload, names),
        });
    }
    out
}

/// Every record boundary (the header's end included), the empty file, half a header, and
/// `random` seeded offsets in `[0, end]`, ascending, each once.
fn cuts(records: &[Record], header: u64, random: usize, seed: u64) -> Vec<u64> {
    let end = records.last().map_or(header, |r| r.end);
    let mut cuts: Vec<u64> = [0, header / 2, header]
        .into_iter()
        .chain(records.iter().map(|r| r.end))
        .collect();
    let mut x = seed;
    for _ in 0..random {
        // xorshift64: the same offsets every run, so a failure reproduces.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        cuts.push(x % (end + 1));
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// What must survive a cut at `cut`: the names in records wholly before it.
fn survivors(records: &[Record], cut: u64) -> Vec<String> {
    records
        .iter()
        .filter(|r| r.end <= cut)
        .flat_map(|r| r.holds.iter().cloned())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let target = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).expect("copy");
        }
    }
}

fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(len))
        .unwrap_or_else(|e| panic!("truncating {}: {e}", path.display()));
}

/// Checks one start on a copy cut at `cut` of `file`; returns (records checked, silent losses).
fn judge<T>(
    start: Start<Vec<String>>,
    file: &Path,
    cut: u64,
    expected: &[String],
    what: T,
) -> (u64, u64)
where
    T: std::fmt::Display,
{
    match start {
        Start::Served(have) => {
            let missing: Vec<&String> = expected.iter().filter(|k| !have.contains(k)).collect();
            if !missing.is_empty() {
                eprintln!(
                    "{what}: cut at {cut} of {}: served without {missing:?}",
                    file.display()
                );
            }
            (expected.len() as u64, missing.len() as u64)
        }
        Start::Refused(stderr) => {
            let last = stderr.lines().last().unwrap_or_default();
            println!("{what}: cut at {cut}: refused: {last}");
            let names_file = stderr.contains(&*file.to_string_lossy());
            let names_offset = stderr.contains("offset");
            let panicked = stderr.contains("panicked");
            if !names_file || !names_offset || panicked {
                eprintln!(
                    "{what}: cut at {cut} of {}: refused unclearly:\n{stderr}",
                    file.display()
                );
                return (expected.len() as u64, expected.len().max(1) as u64);
            }
            (expected.len() as u64, 0)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_log_cut_at_every_record_boundary() {
    let keys = scale(12, 100);
    let random = scale(4, 64);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("kv");
    let names: Vec<String> = (0..keys).map(|i| format!("torn-{i:05}")).collect();
    {
        let mut kv = Role::start(
            &["kv", "--data-dir", &data.to_string_lossy()],
            &tmp.path().join("kv.log"),
        );
        let endpoint = format!("http://{}", kv.addr);
        match started(&mut kv, "kv to serve", |addr| async move {
            etcdctl(&format!("http://{addr}"), &["get", "x"]).ok()
        })
        .await
        {
            Start::Served(_) => {}
            Start::Refused(e) => panic!("kv did not start: {e}"),
        }
        for k in &names {
            let out = etcdctl(&endpoint, &["put", k, "v"]).expect("put");
            assert_eq!(out.trim(), "OK");
        }
        kv.kill();
    }
    let file = data.join("kv.wal.0");
    let bytes = std::fs::read(&file).expect("read log");
    let records = records(&bytes, 16, 16, &names);
    let logged: usize = records.iter().map(|r| r.holds.len()).sum();
    assert_eq!(logged, keys, "every acknowledged put has its record");
    let t0 = Instant::now();
    let mut figures = Figures::new(format!(
        "torn kv.wal.0: {keys} puts, every record boundary and {random} random offsets"
    ));
    for cut in cuts(&records, 16, random, 0x5eed_0019) {
        let copy = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&data, &copy);
        let torn = copy.join("kv.wal.0");
        truncate(&torn, cut);
        let mut kv = Role::start(
            &["kv", "--data-dir", &copy.to_string_lossy()],
            &tmp.path().join(format!("cut-{cut}.log")),
        );
        let start = started(&mut kv, "kv to serve or refuse", |addr| async move {
            let out = etcdctl(
                &format!("http://{addr}"),
                &["get", "--prefix", "torn-", "--keys-only"],
            )
            .ok()?;
            Some(
                out.lines()
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect::<Vec<_>>(),
            )
        })
        .await;
        kv.kill();
        let (checked, lost) = judge(start, &torn, cut, &survivors(&records, cut), "kv");
        figures.acknowledged += checked;
        figures.lost += lost;
        std::fs::remove_dir_all(&copy).expect("rm copy");
    }
    println!("kv: {:?} for all cuts", t0.elapsed());
    figures.check();
}

pub async fn tsdb_query(http: &reqwest::Client, addr: &str, q: &str) -> Option<serde_json::Value> {
    let r = http
        .post(format!("http://{addr}/query"))
        .query(&[("q", q), ("db", "d")])
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json().await.ok()
}

/// The values of tag `k` of measurement `m` that tsdb serves.
pub async fn tsdb_tags(http: &reqwest::Client, addr: &str) -> Option<Vec<String>> {
    let v = tsdb_query(http, addr, "SELECT v, k FROM m").await?;
    let rows = v["results"][0]["series"][0]["values"].as_array();
    Some(
        rows.map(|rows| {
            rows.iter()
                .filter_map(|r| r[2].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_log_cut_at_every_record_boundary() {
    let points = scale(12, 100);
    let random = scale(4, 64);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("tsdb");
    let names: Vec<String> = (0..points).map(|i| format!("p{i:05}")).collect();
    let http = reqwest::Client::new();
    {
        let mut tsdb = Role::start(
            &["tsdb", "--data-dir", &data.to_string_lossy()],
            &tmp.path().join("tsdb.log"),
        );
        let addr = tsdb.addr.clone();
        let h = http.clone();
        match started(&mut tsdb, "tsdb to serve", move |addr| {
            let h = h.clone();
            async move { tsdb_query(&h, &addr, "CREATE DATABASE d").await }
        })
        .await
        {
            Start::Served(_) => {}
            Start::Refused(e) => panic!("tsdb did not start: {e}"),
        }
        for (i, k) in names.iter().enumerate() {
            let r = http
                .post(format!("http://{addr}/write?db=d"))
                .body(format!("m,k={k} v={i} {}", 1_000_000 + i))
                .send()
                .await
                .expect("write");
            assert_eq!(r.status(), 204, "{:?}", r.text().await);
        }
        tsdb.kill();
    }
    let mut wal: Vec<PathBuf> = std::fs::read_dir(data.join("wal"))
        .expect("wal dir")
        .map(|e| e.expect("entry").path())
        .collect();
    wal.sort();
    let file = wal.pop().expect("a wal file");
    let rel = file.strip_prefix(&data).expect("in data").to_path_buf();
    let bytes = std::fs::read(&file).expect("read log");
    let records = records(&bytes, 12, 8, &names);
    let logged: usize = records.iter().map(|r| r.holds.len()).sum();
    assert_eq!(logged, points, "every acknowledged write has its record");
    let t0 = Instant::now();
    let mut figures = Figures::new(format!(
        "torn tsdb wal: {points} writes, every record boundary and {random} random offsets"
    ));
    for cut in cuts(&records, 12, random, 0x5eed_0020) {
        let copy = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&data, &copy);
        let torn = copy.join(&rel);
        truncate(&torn, cut);
        let mut tsdb = Role::start(
            &["tsdb", "--data-dir", &copy.to_string_lossy()],
            &tmp.path().join(format!("cut-{cut}.log")),
        );
        let h = http.clone();
        let start = started(&mut tsdb, "tsdb to serve or refuse", move |addr| {
            let h = h.clone();
            async move { tsdb_tags(&h, &addr).await }
        })
        .await;
        tsdb.kill();
        let (checked, lost) = judge(start, &torn, cut, &survivors(&records, cut), "tsdb");
        figures.acknowledged += checked;
        figures.lost += lost;
        std::fs::remove_dir_all(&copy).expect("rm copy");
    }
    println!("tsdb: {:?} for all cuts", t0.elapsed());
    figures.check();
}

/// Waits until a role started on a torn file exits (a refusal: its stderr) or has run for
/// `grace` (it opened the file and went on).
async fn outcome_within(role: &mut Role, grace: Duration) -> Option<String> {
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if let Some(stderr) = role.exited() {
            return Some(stderr);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The agent's task table (`tasks.json`, one JSON document written atomically) cut anywhere
/// short of its end: the agent must refuse it, naming the file and where the text ends, never
/// start as if it were empty (it would start every task again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_task_table_cut_anywhere_is_refused() {
    let entries = scale(8, 64);
    let random = scale(4, 64);
    let tmp = tempfile::tempdir().expect("tempdir");
    // Retired task ids and the ids services ran as: what the agent must not forget.
    let retired: Vec<String> = (0..entries).map(|i| format!("svc-{i:05}.0a1b2c")).collect();
    let ids: serde_json::Map<String, serde_json::Value> = (0..entries)
        .map(|i| (format!("svc-{i:05}"), serde_json::Value::from(200_000 + i)))
        .collect();
    let table = serde_json::json!({"tasks": {}, "retired": retired, "task_ids": ids});
    let text = serde_json::to_string_pretty(&table).expect("json");
    // Record boundaries: after each entry's line.
    let mut records: Vec<Record> = Vec::new();
    for (at, _) in text.match_indices(",\n") {
        records.push(Record {
            end: at as u64 + 1,
            holds: Vec::new(),
        });
    }
    records.push(Record {
        end: text.len() as u64,
        holds: Vec::new(),
    });
    let mut figures = Figures::new(format!(
        "torn agent tasks.json: {} entries, every entry boundary and {random} random offsets",
        2 * entries
    ));
    for cut in cuts(&records, 0, random, 0x5eed_0021) {
        let data = tmp.path().join(format!("agent-{cut}"));
        std::fs::create_dir_all(&data).expect("mkdir");
        let file = data.join("tasks.json");
        std::fs::write(&file, &text.as_bytes()[..cut as usize]).expect("write table");
        let mut agent = Role::start_plain(
            &[
                "agent",
                "--controller",
                "http://127.0.0.1:9",
                "--name",
                "torn",
                "--ip",
                "127.0.0.1",
                "--port",
                "0",
                "--data-dir",
                &data.to_string_lossy(),
            ],
            &tmp.path().join(format!("agent-{cut}.log")),
        );
        let outcome = outcome_within(&mut agent, Duration::from_secs(3)).await;
        agent.kill();
        let whole = serde_json::from_slice::<serde_json::Value>(&text.as_bytes()[..cut as usize])
            .is_ok_and(|v| v == table);
        figures.acknowledged += 1;
        let about_table = outcome
            .as_deref()
            .is_some_and(|e| e.contains(&*file.to_string_lossy()));
        let clear = outcome.as_deref().is_some_and(|e| {
            e.contains(&*file.to_string_lossy()) && e.contains("column") && !e.contains("panicked")
        });
        let ok = if whole { !about_table } else { clear };
        if !ok {
            eprintln!("agent: table cut at {cut} of {}: {outcome:?}", text.len());
            figures.lost += 1;
        }
        std::fs::remove_dir_all(&data).expect("rm");
    }
    figures.check();
}

/// The controller's state file (`controller.redb`, redb's own format) cut at every page
/// boundary, to nothing, and at random offsets: the controller must refuse it, naming the file,
/// never start on it as on an empty rack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_state_file_cut_anywhere_is_refused() {
    let random = scale(4, 64);
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("rack.yaml");
    std::fs::write(
        &config,
        "name: torn\nnodes:\n  - name: wedge\n    ip: 127.0.0.1\n    type: master\n",
    )
    .expect("config");
    let controller = |data: &Path, log: &str| {
        Role::start_plain(
            &[
                "controller",
                "--config",
                &config.to_string_lossy(),
                "--data-dir",
                &data.to_string_lossy(),
                "--listen",
                "127.0.0.1:0",
                "--insecure",
                "--plaintext",
            ],
            &tmp.path().join(log),
        )
    };
    let data = tmp.path().join("controller");
    let file = data.join("controller.redb");
    {
        let mut c = controller(&data, "controller.log");
        wait_for("the state file", Duration::from_secs(20), || {
            let ready = std::fs::metadata(&file).is_ok_and(|m| m.len() > 0);
            async move { ready.then_some(()) }
        })
        .await
        .expect("controller started");
        // Past its first commit (the epoch's): it serves.
        assert!(
            outcome_within(&mut c, Duration::from_millis(500))
                .await
                .is_none(),
            "the controller exited"
        );
        c.kill();
    }
    let len = std::fs::metadata(&file).expect("stat").len();
    let pages: Vec<Record> = (1..len / 4096)
        .map(|p| Record {
            end: p * 4096,
            holds: Vec::new(),
        })
        .collect();
    let mut figures = Figures::new(format!(
        "torn controller.redb: every page boundary and {random} random offsets"
    ));
    for cut in cuts(&pages, 0, random, 0x5eed_0022) {
        let copy = tmp.path().join(format!("cut-{cut}"));
        copy_dir(&data, &copy);
        let torn = copy.join("controller.redb");
        truncate(&torn, cut);
        let mut c = controller(&copy, &format!("cut-{cut}.log"));
        let outcome = outcome_within(&mut c, Duration::from_secs(3)).await;
        c.kill();
        figures.acknowledged += 1;
        let clear = outcome
            .as_deref()
            .is_some_and(|e| e.contains(&*torn.to_string_lossy()) && !e.contains("panicked"));
        if !clear {
            eprintln!("controller: state file cut at {cut} of {len}: {outcome:?}");
            figures.lost += 1;
        }
        std::fs::remove_dir_all(&copy).expect("rm copy");
    }
    figures.check();
}

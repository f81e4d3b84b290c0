//! `kill -9` under load: the controller during 64 concurrent launches, `torc kv` during puts of
//! 64 clients, `torc tsdb` during ingest by 64 writers, and an agent during launches. Each role
//! is killed with SIGKILL while the load is on, started again on the same data, and then every
//! operation it acknowledged is looked for, one by one (counted, not sampled).
//!
//! An operation that failed or was in flight when the process died has an unknown outcome: it
//! may be there or not, but never twice. A task runs twice when two shims run for one task id
//! (read from `/proc`, not from the controller's view) or when one launch is in the table
//! twice; a put is applied twice when its key's version is past 1 (every key is put once); a
//! point is stored twice when a series returns one timestamp twice.
//!
//! Recovery is from the restart to the first operation acknowledged after it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use torc_api::{TaskFilter, TaskView};
use torc_client::Client;
use torc_test_utils::faults_load::{RoleProcess, shims_by_task, sleeper};
use torc_test_utils::{LocalRack, RackOptions, wait_for};
use torc_types::{TaskId, TaskState};

use super::TORC;
use super::report::{Figures, scale};

/// Concurrent clients of every load.
const CLIENTS: usize = 64;

/// What a load saw: operations acknowledged (with when), operations of unknown outcome, and
/// when the killed role was started again.
struct Ledger<T> {
    acked: Mutex<Vec<(T, Instant)>>,
    unknown: Mutex<Vec<T>>,
    restarted: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

impl<T> Default for Ledger<T> {
    fn default() -> Self {
        Ledger {
            acked: Mutex::default(),
            unknown: Mutex::default(),
            restarted: Mutex::default(),
            stop: AtomicBool::default(),
        }
    }
}

impl<T: Clone> Ledger<T> {
    fn ack(&self, op: T) {
        self.acked.lock().unwrap().push((op, Instant::now()));
    }

    fn unknown(&self, op: T) {
        self.unknown.lock().unwrap().push(op);
    }

    fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn mark_restart(&self) {
        *self.restarted.lock().unwrap() = Some(Instant::now());
    }

    /// Acknowledged after the restart: how many, and how long after it the first was.
    fn after_restart(&self) -> (usize, Option<Duration>) {
        let Some(at) = *self.restarted.lock().unwrap() else {
            return (0, None);
        };
        let acked = self.acked.lock().unwrap();
        let after: Vec<Instant> = acked.iter().map(|(_, t)| *t).filter(|t| *t > at).collect();
        (after.len(), after.iter().min().map(|t| *t - at))
    }

    /// Waits until `n` operations were acknowledged in all.
    async fn wait_acked(&self, n: usize, what: &str) {
        wait_for(what, Duration::from_secs(120), || async {
            (self.acked() >= n).then_some(())
        })
        .await
        .unwrap();
    }

    /// Waits until `n` operations were acknowledged after the restart; then stops the load.
    async fn wait_after_restart(&self, n: usize) {
        wait_for(
            "operations acknowledged after the restart",
            Duration::from_secs(120),
            || async { (self.after_restart().0 >= n).then_some(()) },
        )
        .await
        .unwrap();
        self.stop.store(true, Ordering::Release);
    }

    fn snapshot(&self) -> (Vec<T>, Vec<T>) {
        let acked = self.acked.lock().unwrap();
        let unknown = self.unknown.lock().unwrap();
        (
            acked.iter().map(|(op, _)| op.clone()).collect(),
            unknown.clone(),
        )
    }
}

// --- launches (controller, agent) ---

/// A launch: the task's name, unique to the launch, and its id once acknowledged.
#[derive(Clone, Debug)]
struct Launch {
    name: String,
    id: Option<TaskId>,
}

/// A rack with room for every launch of the long variant.
async fn launch_rack() -> LocalRack {
    LocalRack::start(
        TORC,
        RackOptions {
            compute_nodes: 2,
            node_resources: (64.0, 65536.0),
            ..RackOptions::default()
        },
    )
    .await
    .unwrap()
}

/// `CLIENTS` launchers, each launching tasks one after another until the ledger stops them.
fn start_launchers(
    rack: &LocalRack,
    ledger: &Arc<Ledger<Launch>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..CLIENTS)
        .map(|c| {
            let client = rack.client();
            let ledger = Arc::clone(ledger);
            tokio::spawn(async move {
                // Bounded: the ledger stops it long before.
                for i in 0..100_000 {
                    if ledger.stopped() {
                        return;
                    }
                    let name = format!("load-{c}-{i}");
                    match client.launch(&sleeper(&name)).await {
                        Ok(t) => ledger.ack(Launch {
                            name,
                            id: Some(t.id),
                        }),
                        Err(_) => {
                            ledger.unknown(Launch { name, id: None });
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

/// What the agent of a node killed while starting a task says of it on its restart: with no
/// shim running, the start did not happen or the task ended without a record, and the agent,
/// which starts a task at most once, reports it lost rather than start it again.
const INTERRUPTED_START: &str = "the agent stopped while starting the task";

/// Every acknowledged launch, counted against the controller's table and the shims that run:
/// (lost, duplicated). Waits (bounded) for the rack to settle first: every acknowledged task
/// running under one shim or ended, and no shim of a task that does not run.
///
/// An acknowledged launch is lost when it is not in the table, or does not run, except one
/// that an agent killed while starting it reports lost for that reason (`INTERRUPTED_START`,
/// on `killed_node` only): those are counted and printed apart, as "in doubt".
async fn count_launches(
    rack: &LocalRack,
    ledger: &Ledger<Launch>,
    killed_node: Option<&str>,
) -> (u64, u64) {
    let (acked, unknown) = ledger.snapshot();
    let client = rack.client();
    let settled = wait_for(
        "every acknowledged launch to run under one shim, or end",
        Duration::from_secs(90),
        || async {
            let tasks = client.tasks(&TaskFilter::default()).await.ok()?;
            let shims = shims_by_task(rack.dir.path());
            let by_id: BTreeMap<&str, &TaskView> =
                tasks.iter().map(|t| (t.id.as_str(), t)).collect();
            let all_settled = acked.iter().all(|l| {
                let id = l.id.as_ref().unwrap().as_str();
                by_id.get(id).is_some_and(|t| match t.state {
                    TaskState::Running => shims.get(id).is_some_and(|p| p.len() == 1),
                    state => state.is_terminal(),
                })
            });
            let none_extra = shims.keys().all(|id| {
                by_id
                    .get(id.as_str())
                    .is_some_and(|t| t.state == TaskState::Running)
            });
            (all_settled && none_extra).then_some(())
        },
    )
    .await;
    if let Err(e) = settled {
        println!("{e}\n{}", rack.logs_hint());
    }
    let tasks = client.tasks(&TaskFilter::default()).await.unwrap();
    let shims = shims_by_task(rack.dir.path());
    let by_id: BTreeMap<&str, &TaskView> = tasks.iter().map(|t| (t.id.as_str(), t)).collect();
    let (mut lost, mut in_doubt) = (0, 0);
    for l in &acked {
        let id = l.id.as_ref().unwrap().as_str();
        let t = by_id.get(id);
        if t.is_some_and(|t| t.state == TaskState::Running) && shims.contains_key(id) {
            continue;
        }
        let interrupted = t.is_some_and(|t| {
            t.state == TaskState::Lost
                && t.node.as_ref().map(|n| n.as_str()) == killed_node
                && t.message
                    .as_ref()
                    .is_some_and(|m| m.contains(INTERRUPTED_START))
        });
        if interrupted {
            in_doubt += 1;
            continue;
        }
        if lost < 10 {
            println!(
                "acknowledged launch {id} lost: {:?} on {:?}: {:?}",
                t.map(|t| t.state),
                t.and_then(|t| t.node.as_ref()),
                t.and_then(|t| t.message.as_ref()),
            );
        }
        lost += 1;
    }
    // Twice: two shims of one task, or one launch (one name) live in the table twice.
    let mut duplicated = 0;
    for (id, pids) in &shims {
        if pids.len() > 1 {
            println!("task {id} runs {} times: shims {pids:?}", pids.len());
            duplicated += pids.len() as u64 - 1;
        }
    }
    let mut live_by_name: BTreeMap<&str, u64> = BTreeMap::new();
    for t in tasks.iter().filter(|t| !t.state.is_terminal()) {
        *live_by_name.entry(t.spec.name.as_str()).or_default() += 1;
    }
    for (name, n) in &live_by_name {
        if *n > 1 {
            println!("launch {name} is live {n} times");
            duplicated += n - 1;
        }
    }
    // Shims of tasks that do not run: what a forgotten launch would leave behind.
    let orphans: Vec<&String> = shims
        .keys()
        .filter(|id| {
            by_id
                .get(id.as_str())
                .is_none_or(|t| t.state != TaskState::Running)
        })
        .collect();
    let unknown_present = unknown
        .iter()
        .filter(|l| live_by_name.contains_key(l.name.as_str()))
        .count();
    println!(
        "{} launches acknowledged ({in_doubt} in doubt: being started by the killed agent, \
         reported lost by it), {} of unknown outcome ({unknown_present} of them run), {} shims",
        acked.len(),
        unknown.len(),
        shims.len()
    );
    assert!(
        orphans.is_empty(),
        "shims of tasks that do not run: {orphans:?}"
    );
    (lost, duplicated)
}

/// The controller killed with SIGKILL while 64 clients launch; started again on its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_during_64_concurrent_launches() {
    let mut rack = launch_rack().await;
    let ledger: Arc<Ledger<Launch>> = Arc::default();
    let launchers = start_launchers(&rack, &ledger);
    let before = scale(64, 1_000);
    ledger.wait_acked(before, "launches before the kill").await;
    rack.kill_controller();
    let at_kill = ledger.acked();
    rack.start_controller().unwrap();
    ledger.mark_restart();
    ledger.wait_after_restart(scale(64, 1_000)).await;
    for l in launchers {
        l.await.unwrap();
    }
    let (lost, duplicated) = count_launches(&rack, &ledger, None).await;
    let mut figures = Figures::new(format!(
        "kill -9 controller during {CLIENTS} concurrent launches"
    ));
    figures.acknowledged = ledger.acked() as u64;
    figures.lost = lost;
    figures.duplicated = duplicated;
    figures.recovery = ledger.after_restart().1;
    println!("{at_kill} launches acknowledged when the controller was killed");
    figures.check();
}

/// How long a killed agent stays down.
const OUTAGE: Duration = Duration::from_secs(1);

/// An agent killed with SIGKILL while 64 clients launch (some onto its node), then started
/// again before its node times out: the tasks it ran run on under their shims, adopted, none
/// started twice; what was placed on it meanwhile starts once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_during_64_concurrent_launches() {
    let mut rack = launch_rack().await;
    let ledger: Arc<Ledger<Launch>> = Arc::default();
    let launchers = start_launchers(&rack, &ledger);
    let node = "bladerunner1";
    ledger
        .wait_acked(scale(64, 1_000), "launches before the kill")
        .await;
    rack.kill_agent(node);
    // Launches go on while it is down, for an outage well within the node timeout (10 s)
    // together with the restart: the node stays active, and what is placed on it waits.
    let down = ledger.acked();
    tokio::time::sleep(OUTAGE).await;
    let during = ledger.acked() - down;
    assert!(
        during > 0,
        "no launch was acknowledged while the agent was down"
    );
    rack.start_agent(node).unwrap();
    let restarted = Instant::now();
    ledger.mark_restart();
    // Recovery: a launch onto the node runs. The load stops meanwhile, once enough launches
    // were acknowledged after the restart.
    let client: Client = rack.client();
    let mut probe = sleeper("probe");
    probe.constraints.node_name = Some(node.parse().unwrap());
    let probe = client.launch(&probe).await.unwrap();
    let (ran, ()) = tokio::join!(
        torc_test_utils::wait_running(&client, &probe.id, Duration::from_secs(60)),
        ledger.wait_after_restart(scale(64, 1_000))
    );
    ran.unwrap();
    let recovery = restarted.elapsed();
    for l in launchers {
        l.await.unwrap();
    }
    ledger.ack(Launch {
        name: "probe".into(),
        id: Some(probe.id),
    });
    println!("{during} launches acknowledged while the agent was down");
    let (lost, duplicated) = count_launches(&rack, &ledger, Some(node)).await;
    let mut figures = Figures::new(format!(
        "kill -9 agent during {CLIENTS} concurrent launches"
    ));
    figures.acknowledged = ledger.acked() as u64;
    figures.lost = lost;
    figures.duplicated = duplicated;
    figures.recovery = Some(recovery);
    figures.check();
}

// --- kv ---

/// `torc kv` killed with SIGKILL while 64 clients put, each its own keys, each key once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_killed_during_puts_of_64_clients() {
    use torc_kv_client::proto::etcdserverpb::{PutRequest, RangeRequest};
    use torc_kv_client::{Client as KvClient, ClientOptions};

    let mut kv = RoleProcess::start(TORC, "kv", &[]).await.unwrap();
    let url = format!("http://{}", kv.addr);
    let options = ClientOptions {
        connect_timeout: Duration::from_secs(1),
        require_leader: false,
        ..ClientOptions::default()
    };
    let ledger: Arc<Ledger<String>> = Arc::default();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let client = KvClient::lazy_endpoints(&[url.as_str()], options.clone()).unwrap();
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move {
                for i in 0..1_000_000 {
                    if ledger.stopped() {
                        return;
                    }
                    let key = format!("load/c{c:02}/k{i:07}");
                    let put = PutRequest {
                        key: key.clone().into_bytes().into(),
                        value: format!("v{c}-{i}").into_bytes().into(),
                        ..Default::default()
                    };
                    match client.kv().put(put).await {
                        Ok(_) => ledger.ack(key),
                        Err(_) => {
                            ledger.unknown(key);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();
    ledger
        .wait_acked(scale(3_000, 50_000), "puts before the kill")
        .await;
    kv.kill();
    kv.restart().unwrap();
    ledger.mark_restart();
    ledger.wait_after_restart(scale(3_000, 50_000)).await;
    for w in writers {
        w.await.unwrap();
    }
    kv.wait_accepting(Duration::from_secs(10)).await.unwrap();

    // Every key, read back per client: present with its value, put once (version 1).
    let (acked, unknown) = ledger.snapshot();
    let reader = KvClient::lazy_endpoints(&[url.as_str()], options).unwrap();
    let mut stored: BTreeMap<String, (String, i64)> = BTreeMap::new();
    for c in 0..CLIENTS {
        let prefix = format!("load/c{c:02}/");
        let mut end = prefix.clone().into_bytes();
        *end.last_mut().unwrap() += 1;
        let resp = reader
            .kv()
            .range(RangeRequest {
                key: prefix.into_bytes().into(),
                range_end: end.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        for kv in resp.kvs {
            stored.insert(
                String::from_utf8_lossy(&kv.key).into_owned(),
                (String::from_utf8_lossy(&kv.value).into_owned(), kv.version),
            );
        }
    }
    let lost = acked
        .iter()
        .filter(|k| {
            let (c, i) = k["load/c".len()..].split_once("/k").unwrap();
            let want = format!(
                "v{}-{}",
                c.parse::<usize>().unwrap(),
                i.parse::<usize>().unwrap()
            );
            stored.get(*k).is_none_or(|(v, _)| *v != want)
        })
        .count() as u64;
    let duplicated = stored.values().filter(|(_, version)| *version != 1).count() as u64;
    let known: BTreeSet<&String> = acked.iter().chain(&unknown).collect();
    let strays: Vec<&String> = stored.keys().filter(|k| !known.contains(k)).collect();
    assert!(strays.is_empty(), "keys nobody put: {strays:?}");
    println!(
        "{} puts acknowledged, {} of unknown outcome, {} keys stored",
        acked.len(),
        unknown.len(),
        stored.len()
    );
    let mut figures = Figures::new(format!("kill -9 kv during puts of {CLIENTS} clients"));
    figures.acknowledged = acked.len() as u64;
    figures.lost = lost;
    figures.duplicated = duplicated;
    figures.recovery = ledger.after_restart().1;
    figures.check();
}

// --- tsdb ---

/// Points per write.
const BATCH: u64 = 50;

/// `torc tsdb` killed with SIGKILL while 64 writers send batches of points, every point of a
/// writer at its own timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tsdb_killed_during_ingest_by_64_writers() {
    let mut tsdb = RoleProcess::start(TORC, "tsdb", &[]).await.unwrap();
    let base = format!("http://{}", tsdb.addr);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let created = http
        .post(format!("{base}/query"))
        .query(&[("q", "CREATE DATABASE load")])
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{created:?}");
    let start_ns = torc_types::now_millis() * 1_000_000;
    // A batch is (writer, batch number); point n of writer w has value n and time start + n µs.
    let ledger: Arc<Ledger<(usize, u64)>> = Arc::default();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (http, ledger) = (http.clone(), Arc::clone(&ledger));
            let url = format!("{base}/write?db=load");
            tokio::spawn(async move {
                for b in 0..1_000_000u64 {
                    if ledger.stopped() {
                        return;
                    }
                    let body: String = (b * BATCH..(b + 1) * BATCH)
                        .map(|n| format!("load,writer=w{w} v={n}i {}\n", start_ns + n * 1_000))
                        .collect();
                    let ok = http
                        .post(&url)
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == reqwest::StatusCode::NO_CONTENT);
                    if ok {
                        ledger.ack((w, b));
                    } else {
                        ledger.unknown((w, b));
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();
    ledger
        .wait_acked(scale(640, 10_000), "batches before the kill")
        .await;
    tsdb.kill();
    tsdb.restart().unwrap();
    ledger.mark_restart();
    ledger.wait_after_restart(scale(640, 10_000)).await;
    for w in writers {
        w.await.unwrap();
    }
    tsdb.wait_accepting(Duration::from_secs(10)).await.unwrap();

    // Every writer's series, read back whole.
    let (acked, unknown) = ledger.snapshot();
    let (mut lost, mut duplicated, mut stored) = (0u64, 0u64, 0usize);
    for w in 0..CLIENTS {
        let q = format!("SELECT v FROM load WHERE writer = 'w{w}'");
        let resp: serde_json::Value = http
            .get(format!("{base}/query"))
            .query(&[("db", "load"), ("epoch", "ns"), ("q", q.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = resp["results"][0]["series"][0]["values"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut times = BTreeSet::new();
        let mut values = BTreeSet::new();
        for row in &rows {
            let (t, v) = (row[0].as_u64().unwrap(), row[1].as_u64().unwrap());
            assert_eq!(
                t,
                start_ns + v * 1_000,
                "point {v} of w{w} at the wrong time"
            );
            if !times.insert(t) {
                duplicated += 1;
            }
            values.insert(v);
        }
        stored += rows.len();
        for (_, b) in acked.iter().filter(|(x, _)| *x == w) {
            lost += (b * BATCH..(b + 1) * BATCH)
                .filter(|n| !values.contains(n))
                .count() as u64;
        }
    }
    println!(
        "{} batches of {BATCH} acknowledged, {} of unknown outcome, {stored} points stored",
        acked.len(),
        unknown.len()
    );
    let mut figures = Figures::new(format!("kill -9 tsdb during ingest by {CLIENTS} writers"));
    figures.acknowledged = acked.len() as u64 * BATCH;
    figures.lost = lost;
    figures.duplicated = duplicated;
    figures.recovery = ledger.after_restart().1;
    figures.check();
}

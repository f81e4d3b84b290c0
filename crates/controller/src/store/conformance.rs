//! The suite every [`Store`] implementation passes: `suite!(make_backend())` in the
//! implementation's tests makes one `#[test]` per case, each on a fresh [`Backend`].
//!
//! What it holds a store to: a new store loads nothing; a batch survives a reopen exactly as
//! committed (puts, deletes, counters, later writes to a key winning); a concurrent `load`
//! sees a batch whole or not at all; a commit under another epoch, or of a deposed writer,
//! writes nothing and poisons nothing; every open has a higher epoch than the last; a failed
//! commit fails closed by the backend's rule ([`FailureRule`]: redb keeps nothing and poisons
//! until reopened; etcd, whose outcome is then unknown, refuses writes until a load shows the
//! batch whole or not at all); a batch at the backend's bound commits and one over it is
//! refused, naming the limit, writing nothing; a load of more than 4 MiB comes back whole; a
//! store of an unknown format is refused at open, naming the version.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use super::{Epoch, FORMAT_VERSION, Loaded, Store, StoreError, Table, Write};

/// A place a store lives (a file, an etcd prefix), which the suite opens and reopens.
pub(crate) trait Backend {
    type S: Store;
    /// Opens the store at this place, as a controller start does (a new epoch).
    fn open(&self) -> Result<Self::S, StoreError>;
    /// Marks the stored data as of format `version`, as another torc would (no store is open).
    fn set_format(&self, version: u64);
    /// Makes the next commit of `store` fail after its writes were sent, as a failed fsync or
    /// a lost connection would, and says what the store does then; `None` if it cannot.
    fn fail_next_commit(&self, store: &Self::S) -> Option<FailureRule>;
    /// Undoes what `fail_next_commit` did to the backend (a frozen etcd resumes).
    fn recover(&self) {}
    /// Deposes `store`'s writer from outside, as a rival's takeover would; `false` if this
    /// backend has no such thing.
    fn depose(&self, _store: &Self::S) -> bool {
        false
    }
    /// The most one commit takes, if bounded.
    fn bound(&self) -> Option<Bound> {
        None
    }
}

/// How a store fails closed after a commit failed after sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureRule {
    /// The batch is surely not kept (`Write`), and every later commit is refused
    /// (`Poisoned`) until the store is opened again (redb: an aborted transaction).
    PoisonsUntilReopen,
    /// The outcome is unknown (`Unknown`): commits are refused (`Unsettled`) until a load,
    /// which shows the batch whole or not at all (etcd).
    UnsettledUntilLoad,
}

/// A backend's bound on one commit: writes (each a put, delete or counter) and bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub writes: usize,
    pub bytes: usize,
}

/// One `#[test]` per case of the suite, each on a fresh backend made by `$make`.
macro_rules! suite {
    ($make:expr) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn a_new_store_loads_nothing() {
                $crate::store::conformance::a_new_store_loads_nothing(&$make);
            }
            #[test]
            fn a_batch_survives_a_reopen() {
                $crate::store::conformance::a_batch_survives_a_reopen(&$make);
            }
            #[test]
            fn a_batch_is_seen_whole_or_not_at_all() {
                $crate::store::conformance::a_batch_is_seen_whole_or_not_at_all(&$make);
            }
            #[test]
            fn another_epoch_writes_nothing() {
                $crate::store::conformance::another_epoch_writes_nothing(&$make);
            }
            #[test]
            fn each_open_has_a_higher_epoch() {
                $crate::store::conformance::each_open_has_a_higher_epoch(&$make);
            }
            #[test]
            fn a_deposed_writer_writes_nothing() {
                $crate::store::conformance::a_deposed_writer_writes_nothing(&$make);
            }
            #[test]
            fn a_failed_commit_fails_closed() {
                $crate::store::conformance::a_failed_commit_fails_closed(&$make);
            }
            #[test]
            fn a_batch_at_the_bound_commits_and_one_over_is_refused() {
                $crate::store::conformance::a_batch_at_the_bound_commits_and_one_over_is_refused(
                    &$make,
                );
            }
            #[test]
            fn a_load_over_4_mib_comes_back_whole() {
                $crate::store::conformance::a_load_over_4_mib_comes_back_whole(&$make);
            }
            #[test]
            fn an_unknown_format_is_refused() {
                $crate::store::conformance::an_unknown_format_is_refused(&$make);
            }
        }
    };
}
pub(crate) use suite;

/// The records of every table, as `table/key=value` lines, and the counters the suite writes.
fn contents(loaded: &Loaded) -> (Vec<String>, Vec<(String, u64)>) {
    let records = loaded
        .records
        .iter()
        .flat_map(|(table, records)| {
            (records.iter()).map(move |(k, v)| format!("{}/{k}={v}", table.name()))
        })
        .collect();
    let meta = loaded
        .meta
        .iter()
        .filter(|(k, _)| k.starts_with("test_"))
        .cloned()
        .collect();
    (records, meta)
}

fn open<B: Backend>(backend: &B) -> B::S {
    backend.open().expect("the store opens")
}

fn commit<S: Store>(store: &S, writes: &[Write]) {
    store
        .commit(store.epoch(), writes)
        .expect("the batch commits");
}

fn put(table: Table, key: &str, value: Value) -> Write {
    Write::put(table, key, &value)
}

pub(crate) fn a_new_store_loads_nothing<B: Backend>(backend: &B) {
    let store = open(backend);
    let loaded = store.load().unwrap();
    assert!(
        loaded.records.values().all(Vec::is_empty),
        "records in a new store"
    );
    assert_eq!(loaded.meta("generation"), None);
    assert!(store.epoch() >= Epoch(1), "epoch {}", store.epoch());
    store.writable().expect("a new store takes writes");
    // An empty batch commits nothing.
    commit(&store, &[]);
    assert!(store.load().unwrap().records.values().all(Vec::is_empty));
}

pub(crate) fn a_batch_survives_a_reopen<B: Backend>(backend: &B) {
    let batch = [
        put(Table::Nodes, "b", json!({"n": "b"})),
        put(Table::Nodes, "a", json!({"n": "a"})),
        put(Table::Tasks, "t.1", json!({"t": 1})),
        put(Table::Tasks, "t.2", json!({"t": 2})),
        Write::Delete(Table::Tasks, "t.1".into()),
        // A later write to a key wins, within a batch as across batches.
        put(Table::Services, "s", json!({"s": 1})),
        put(Table::Services, "s", json!({"s": 2})),
        put(Table::Frameworks, "f", json!({"f": 1})),
        put(Table::Announced, "x.1", json!({"x": 1})),
        put(Table::Credentials, "c", json!({"c": "hash"})),
        put(Table::Secrets, "k", json!({"k": "secret"})),
        Write::Meta("test_counter", 7),
        Write::Meta("test_counter", 8),
    ];
    let expected = (
        vec![
            r#"nodes/a={"n":"a"}"#.to_string(),
            r#"nodes/b={"n":"b"}"#.to_string(),
            r#"tasks/t.2={"t":2}"#.to_string(),
            r#"services/s={"s":2}"#.to_string(),
            r#"frameworks/f={"f":1}"#.to_string(),
            r#"announced/x.1={"x":1}"#.to_string(),
            r#"credentials/c={"c":"hash"}"#.to_string(),
            r#"secrets/k={"k":"secret"}"#.to_string(),
        ],
        vec![("test_counter".to_string(), 8)],
    );
    {
        let store = open(backend);
        commit(&store, &batch);
        assert_eq!(
            contents(&store.load().unwrap()),
            expected,
            "before a reopen"
        );
    }
    let store = open(backend);
    let mut loaded = store.load().unwrap();
    assert_eq!(contents(&loaded), expected, "after a reopen");
    let tasks: Vec<Value> = loaded.take(Table::Tasks).unwrap();
    assert_eq!(tasks, [json!({"t": 2})]);
    // And a second batch on the reopened store deletes and changes what the first made.
    commit(
        &store,
        &[
            Write::Delete(Table::Nodes, "a".into()),
            Write::Delete(Table::Nodes, "never-there".into()),
            Write::Meta("test_counter", 9),
        ],
    );
    drop(store);
    let loaded = open(backend).load().unwrap();
    let (records, meta) = contents(&loaded);
    assert!(!records.contains(&expected.0[0]), "{records:?}");
    assert!(records.contains(&expected.0[1]), "{records:?}");
    assert_eq!(meta, [("test_counter".to_string(), 9)]);
}

pub(crate) fn a_batch_is_seen_whole_or_not_at_all<B: Backend>(backend: &B) {
    const BATCHES: u64 = 12;
    const SIZE: usize = 8;
    let store = open(backend);
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut loads = 0;
            loop {
                // Read the flag before the load, so that the last load follows the last commit.
                let last = done.load(Ordering::Acquire);
                let loaded = store.load().unwrap();
                let tasks = loaded
                    .records
                    .get(&Table::Tasks)
                    .map_or(&[][..], Vec::as_slice);
                let batches: Vec<&Value> = tasks.iter().map(|(_, t)| &t["batch"]).collect();
                assert!(
                    tasks.is_empty() || tasks.len() == SIZE,
                    "a load saw part of a batch: {batches:?}"
                );
                assert!(
                    batches.windows(2).all(|w| w[0] == w[1]),
                    "a load saw two batches mixed: {batches:?}"
                );
                assert_eq!(
                    loaded.meta("test_batch").map(Value::from).as_ref(),
                    batches.first().copied(),
                    "the counter and the records of one batch disagree"
                );
                loads += 1;
                if last {
                    assert_eq!(batches.first(), Some(&&json!(BATCHES)));
                    return loads;
                }
            }
        });
        for batch in 1..=BATCHES {
            let writes: Vec<Write> = (0..SIZE)
                .map(|i| put(Table::Tasks, &format!("t.{i}"), json!({"batch": batch})))
                .chain([Write::Meta("test_batch", batch)])
                .collect();
            commit(&store, &writes);
        }
        done.store(true, Ordering::Release);
        assert!(reader.join().unwrap() >= 1);
    });
}

pub(crate) fn another_epoch_writes_nothing<B: Backend>(backend: &B) {
    let store = open(backend);
    commit(&store, &[put(Table::Nodes, "a", json!({"n": 1}))]);
    let before = contents(&store.load().unwrap());
    let current = store.epoch();
    for fence in [Epoch(current.0 + 1), Epoch(current.0 - 1)] {
        let err = store
            .commit(
                fence,
                &[
                    put(Table::Nodes, "a", json!({"n": 2})),
                    put(Table::Nodes, "b", json!({"n": 3})),
                ],
            )
            .unwrap_err();
        assert!(
            matches!(err, StoreError::NotLeader { fence: f, current: c, .. } if f == fence && c == Some(current)),
            "{err}"
        );
        assert!(err.to_string().contains(&format!("epoch {fence}")), "{err}");
    }
    assert_eq!(contents(&store.load().unwrap()), before);
    // Refusing a stale writer is no failure of the store.
    store.writable().expect("not poisoned");
    commit(&store, &[put(Table::Nodes, "b", json!({"n": 4}))]);
}

pub(crate) fn each_open_has_a_higher_epoch<B: Backend>(backend: &B) {
    let mut last = Epoch(0);
    for _ in 0..3 {
        let store = open(backend);
        assert!(store.epoch() > last, "{} after {last}", store.epoch());
        last = store.epoch();
        // A commit does not move the epoch; only an open does.
        commit(&store, &[Write::Meta("test_counter", last.0)]);
        assert_eq!(store.epoch(), last);
    }
}

pub(crate) fn a_deposed_writer_writes_nothing<B: Backend>(backend: &B) {
    let store = open(backend);
    commit(&store, &[put(Table::Nodes, "a", json!({"n": 1}))]);
    let before = contents(&store.load().unwrap());
    if !backend.depose(&store) {
        return;
    }
    let fence = store.epoch();
    let err = store
        .commit(
            fence,
            &[
                put(Table::Nodes, "a", json!({"n": 2})),
                Write::Delete(Table::Nodes, "a".into()),
                Write::Meta("test_counter", 5),
            ],
        )
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotLeader { fence: f, .. } if f == fence),
        "{err}"
    );
    assert_eq!(contents(&store.load().unwrap()), before, "a deposed write");
}

pub(crate) fn a_failed_commit_fails_closed<B: Backend>(backend: &B) {
    let store = open(backend);
    commit(
        &store,
        &[
            put(Table::Nodes, "a", json!({"n": 1})),
            Write::Meta("test_counter", 1),
        ],
    );
    let kept = contents(&store.load().unwrap());
    let Some(rule) = backend.fail_next_commit(&store) else {
        return;
    };
    let batch = [
        put(Table::Nodes, "b", json!({"n": 2})),
        Write::Delete(Table::Nodes, "a".into()),
        Write::Meta("test_counter", 2),
    ];
    let err = store.commit(store.epoch(), &batch).unwrap_err();
    let refusals = |store: &B::S| {
        [
            store.writable().unwrap_err(),
            store.commit(store.epoch(), &[]).unwrap_err(),
            store
                .commit(store.epoch(), &[put(Table::Nodes, "c", json!({}))])
                .unwrap_err(),
        ]
    };
    match rule {
        FailureRule::PoisonsUntilReopen => {
            assert!(matches!(err, StoreError::Write(_)), "{err}");
            assert_eq!(contents(&store.load().unwrap()), kept, "the failed batch");
            for err in refusals(&store) {
                assert!(matches!(err, StoreError::Poisoned), "{err}");
                assert!(err.to_string().contains("restart"), "{err}");
            }
            drop(store);
            // A new start trusts what the store kept, and takes writes again.
            let store = open(backend);
            assert_eq!(contents(&store.load().unwrap()), kept, "after a reopen");
            commit(&store, &[put(Table::Nodes, "c", json!({"n": 3}))]);
        }
        FailureRule::UnsettledUntilLoad => {
            assert!(matches!(err, StoreError::Unknown { .. }), "{err}");
            assert!(err.to_string().contains("unknown"), "{err}");
            for err in refusals(&store) {
                assert!(matches!(err, StoreError::Unsettled), "{err}");
                assert!(err.to_string().contains("loaded again"), "{err}");
            }
            backend.recover();
            // The load shows the batch whole or not at all, and settles the store.
            let (records, meta) = contents(&store.load().unwrap());
            let landed = (
                vec![r#"nodes/b={"n":2}"#.to_string()],
                vec![("test_counter".to_string(), 2)],
            );
            assert!(
                (records.clone(), meta.clone()) == kept
                    || (records.clone(), meta.clone()) == landed,
                "half a batch: {records:?} {meta:?}"
            );
            store.writable().expect("settled by the load");
            commit(&store, &[put(Table::Nodes, "c", json!({"n": 3}))]);
        }
    }
}

pub(crate) fn a_batch_at_the_bound_commits_and_one_over_is_refused<B: Backend>(backend: &B) {
    let Some(bound) = backend.bound() else {
        return;
    };
    let store = open(backend);
    let at: Vec<Write> = (0..bound.writes)
        .map(|i| put(Table::Tasks, &format!("t.{i:05}"), json!(i)))
        .collect();
    commit(&store, &at);
    let before = contents(&store.load().unwrap());
    assert_eq!(before.0.len(), bound.writes);
    let over: Vec<Write> = (0..=bound.writes)
        .map(|i| put(Table::Tasks, &format!("u.{i:05}"), json!(i)))
        .collect();
    let big = vec![put(Table::Nodes, "big", json!("x".repeat(bound.bytes)))];
    // The text says what to do: a smaller change (the controller's operations bound is
    // fixed), or a higher byte bound, naming its flag.
    for (batch, flag, says) in [
        (over, "--max-txn-ops", "make it smaller"),
        (
            big,
            "--etcd-max-request-bytes",
            "raise --etcd-max-request-bytes",
        ),
    ] {
        let err = store.commit(store.epoch(), &batch).unwrap_err();
        assert!(
            matches!(err, StoreError::TooLarge { limit, .. } if limit == flag),
            "{err}"
        );
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(contents(&store.load().unwrap()), before, "a refused batch");
    // Refusing a batch is no failure of the store.
    store.writable().expect("not poisoned");
    commit(&store, &[Write::Delete(Table::Tasks, "t.00000".into())]);
}

pub(crate) fn a_load_over_4_mib_comes_back_whole<B: Backend>(backend: &B) {
    const RECORD: usize = 60 * 1024;
    const RECORDS: usize = 75;
    let store = open(backend);
    let per_batch = backend
        .bound()
        .map_or(RECORDS, |b| (b.bytes / (RECORD + 256)).clamp(1, RECORDS));
    let record = |i: usize| json!({"i": i, "pad": "p".repeat(RECORD)});
    let all: Vec<usize> = (0..RECORDS).collect();
    for chunk in all.chunks(per_batch) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|&i| put(Table::Tasks, &format!("t.{i:03}"), record(i)))
            .collect();
        commit(&store, &writes);
    }
    let mut loaded = store.load().unwrap();
    let tasks: Vec<Value> = loaded.take(Table::Tasks).unwrap();
    const { assert!(RECORD * RECORDS > 4 << 20) };
    assert_eq!(tasks.len(), RECORDS);
    for (i, task) in tasks.iter().enumerate() {
        assert_eq!(task, &record(i), "record {i}");
    }
}

pub(crate) fn an_unknown_format_is_refused<B: Backend>(backend: &B) {
    drop(open(backend));
    let future = FORMAT_VERSION + 98;
    backend.set_format(future);
    let err = backend.open().err().expect("a future format is refused");
    assert!(
        matches!(err, StoreError::Version { found, .. } if found == future),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("format version {future}")),
        "{err}"
    );
}

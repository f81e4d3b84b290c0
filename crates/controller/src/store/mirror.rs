//! [`Mirror`]: a warm copy of the controller's prefix, kept by every controller (a standby
//! serves reads from it and takes over from it; the leader sees its own writes come back
//! through it) (docs/design/ha-controller.md §6.1).
//!
//! A paged load at one revision R0, then a watch of the prefix from R0 + 1, applied one
//! watch response at a time under one lock (etcd sends whole revisions, as torc does not ask
//! it to fragment), so a reader never sees half a commit. A watch whose start is compacted
//! reloads the prefix at the current revision; a broken stream resumes from the next revision
//! (`PrefixWatch`). Records are decoded (and secrets opened) by the same code as
//! [`EtcdStore::load`](super::EtcdStore) (`Contents`).
//!
//! Invariants: `revision()` never goes down while no reload happens, and every event up to
//! it is applied; `loaded()` is the prefix as of exactly `revision()`.
//!
//! Not here: a revision reached by writes outside the prefix is seen only at etcd's next
//! progress report (a waiter for such a revision may wait that long).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use torc_kv_client::{Client, PrefixWatch, WatchError};

use super::etcd::{Codec, Contents, EtcdStore, read_prefix};
use super::{Loaded, StoreError};

/// How long the mirror waits before trying again after etcd failed it.
const RETRY: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    #[error(
        "the mirror of {prefix} is at revision {at}, not yet {wanted}, after {waited:?}{}",
        .last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    Behind {
        prefix: String,
        at: i64,
        wanted: i64,
        waited: Duration,
        last_error: Option<String>,
    },
}

struct State {
    contents: Contents,
    /// 0 until the first load.
    revision: i64,
    last_error: Option<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// The revision after each change, for async waiters (the role driver).
    revisions: watch::Sender<i64>,
    reloads: AtomicU64,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change to the state is made whole under the lock, before any call that could
        // panic returns: a poisoned lock still guards a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, why: String) {
        tracing::warn!("etcd mirror: {why}");
        self.lock().last_error = Some(why);
    }
}

/// A warm copy of the prefix, fed on the store's `torc-etcd` thread; stops when dropped.
pub struct Mirror {
    shared: Arc<Shared>,
    prefix: String,
    task: JoinHandle<()>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mirror {
    /// Starts mirroring `store`'s prefix (a load, then a watch) on its runtime.
    pub fn start(store: &EtcdStore) -> Mirror {
        Mirror::start_from(store, None)
    }

    fn start_from(store: &EtcdStore, seed: Option<(Contents, i64)>) -> Mirror {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                contents: Contents::default(),
                revision: 0,
                last_error: None,
            }),
            changed: Condvar::new(),
            revisions: watch::channel(0).0,
            reloads: AtomicU64::new(0),
        });
        let task = store.handle().spawn(follow(
            store.client().clone(),
            store.codec().clone(),
            store.decode_limit(),
            Arc::clone(&shared),
            seed,
        ));
        Mirror {
            shared,
            prefix: store.layout().prefix().to_string(),
            task,
        }
    }

    /// The revision the mirror is at (0 before its first load).
    pub fn revision(&self) -> i64 {
        self.shared.lock().revision
    }

    /// How many times the mirror read the whole prefix (1 after its start, more after
    /// compactions).
    pub fn reloads(&self) -> u64 {
        self.shared.reloads.load(Ordering::Acquire)
    }

    /// The records and counters as of [`Mirror::revision`], as a load gives them.
    pub fn loaded(&self) -> Loaded {
        self.shared.lock().contents.loaded()
    }

    /// [`Mirror::loaded`] and its revision, taken together.
    pub fn loaded_at(&self) -> (Loaded, i64) {
        let state = self.shared.lock();
        (state.contents.loaded(), state.revision)
    }

    /// The mirror's revision after each change (0 before its first load): to wait on from
    /// async code.
    pub fn revisions(&self) -> watch::Receiver<i64> {
        self.shared.revisions.subscribe()
    }

    /// Blocks until the mirror is at `revision` or later, at most `deadline`; its revision.
    pub fn wait_for(&self, revision: i64, deadline: Duration) -> Result<i64, MirrorError> {
        let start = Instant::now();
        let state = self.shared.lock();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, deadline, |s| s.revision < revision)
            .unwrap_or_else(|e| e.into_inner());
        if state.revision >= revision {
            return Ok(state.revision);
        }
        Err(MirrorError::Behind {
            prefix: self.prefix.clone(),
            at: state.revision,
            wanted: revision,
            waited: start.elapsed(),
            last_error: state.last_error.clone(),
        })
    }
}

/// The mirror's task: load, watch, apply; reload when the watch's start is compacted.
async fn follow(
    client: Client,
    codec: Codec,
    decode_limit: usize,
    shared: Arc<Shared>,
    mut seed: Option<(Contents, i64)>,
) {
    let prefix = codec.layout.prefix().as_bytes().to_vec();
    loop {
        let (contents, revision) = match seed.take() {
            Some(seeded) => seeded,
            None => {
                let all = match read_prefix(&client, &codec.layout, decode_limit).await {
                    Ok(all) => all,
                    Err(e) => {
                        shared.failed(format!("loading: {e}"));
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                };
                match Contents::of(&codec, &all.kvs) {
                    Ok(contents) => (contents, all.revision),
                    Err(e) => {
                        shared.failed(e.to_string());
                        tokio::time::sleep(RETRY).await;
                        continue;
                    }
                }
            }
        };
        {
            let mut state = shared.lock();
            state.contents = contents;
            state.revision = revision;
            state.last_error = None;
        }
        shared.reloads.fetch_add(1, Ordering::AcqRel);
        shared.changed.notify_all();
        shared.revisions.send_replace(revision);
        let mut watch = PrefixWatch::new(&client, prefix.clone(), revision + 1);
        if let Err(e) = apply_all(&mut watch, &codec, &shared).await {
            shared.failed(e);
            // Reload at once after a compaction; after anything else, a moment later.
        }
    }
}

/// Applies the watch's responses until it cannot go on (then why).
async fn apply_all(watch: &mut PrefixWatch, codec: &Codec, shared: &Shared) -> Result<(), String> {
    loop {
        let batch = match watch.next().await {
            Ok(batch) => batch,
            Err(e @ (WatchError::Compacted { .. } | WatchError::Cancelled { .. })) => {
                return Err(format!("{e}; reloading"));
            }
            Err(e) => {
                // Every member failed just now: resume from the next revision shortly.
                shared.failed(e.to_string());
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let applied: Result<i64, StoreError> = {
            let mut state = shared.lock();
            // Applied to a copy, so that a bad record leaves the mirror as it was.
            let mut next = state.contents.clone();
            let result: Result<(), StoreError> =
                batch.events.iter().try_for_each(|e| next.apply(codec, e));
            match result {
                Ok(()) => {
                    state.contents = next;
                    let last = batch
                        .events
                        .iter()
                        .filter_map(|e| e.kv.as_ref().map(|kv| kv.mod_revision))
                        .max()
                        .unwrap_or(0);
                    state.revision = state.revision.max(batch.revision).max(last);
                    Ok(state.revision)
                }
                Err(e) => Err(e),
            }
        };
        match applied {
            Ok(revision) => {
                shared.changed.notify_all();
                shared.revisions.send_replace(revision);
            }
            Err(e) => {
                tokio::time::sleep(RETRY).await;
                return Err(format!("{e}; reloading"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::conformance::Backend as _;
    use crate::store::etcd::tests::RealEtcd;
    use crate::store::{Store, Table, Write};

    const WAIT: Duration = Duration::from_secs(20);

    #[test]
    fn writes_through_the_leader_show_up_in_another_mirror() {
        let etcd = RealEtcd::start();
        let leader = etcd.open().unwrap();
        let standby = EtcdStore::connect(etcd.options()).unwrap();
        let mirror = Mirror::start(&standby);
        mirror.wait_for(1, WAIT).unwrap();
        assert_eq!(mirror.reloads(), 1);
        for i in 0..5u64 {
            leader
                .commit(
                    leader.epoch(),
                    &[
                        Write::put(Table::Tasks, &format!("t.{i}"), &json!({"i": i})),
                        Write::Delete(Table::Tasks, format!("t.{}", i.wrapping_sub(2))),
                        Write::Meta("generation", i),
                    ],
                )
                .unwrap();
        }
        let (loaded, revision) = leader.load_at().unwrap();
        assert!(mirror.wait_for(revision, WAIT).unwrap() >= revision);
        let (mirrored, at) = mirror.loaded_at();
        assert!(at >= revision);
        assert_eq!(mirrored.records, loaded.records);
        assert_eq!(mirrored.meta, loaded.meta);
        assert_eq!(
            (mirrored.records[&Table::Tasks].iter())
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
            [json!({"i": 3}), json!({"i": 4})]
        );
        assert_eq!(mirrored.meta("generation"), Some(4));
        // The leader's mirror is the same thing: its own writes come back through it.
        let own = Mirror::start(&leader);
        own.wait_for(revision, WAIT).unwrap();
        assert_eq!(own.loaded().records, loaded.records);
    }

    #[test]
    fn a_compaction_past_the_mirror_makes_it_reload() {
        let etcd = RealEtcd::start();
        let leader = etcd.open().unwrap();
        let commit = |i: u64| {
            leader
                .commit(
                    leader.epoch(),
                    &[Write::put(Table::Nodes, &format!("n{i}"), &json!(i))],
                )
                .unwrap()
        };
        commit(0);
        // A mirror seeded with a load at R0, whose watch opens only after later writes were
        // compacted away: its start is gone, so it must reload.
        let (kvs, r0) = leader
            .handle()
            .block_on(read_prefix(leader.client(), &etcd.layout, 4 << 20))
            .map(|all| (all.kvs, all.revision))
            .unwrap();
        let seed = Contents::of(leader.codec(), &kvs).unwrap();
        commit(1);
        commit(2);
        let (_, now) = leader.load_at().unwrap();
        let client = etcd.client();
        etcd.block_on(async move {
            client
                .kv()
                .compact(torc_kv_client::proto::etcdserverpb::CompactionRequest {
                    revision: now,
                    physical: true,
                })
                .await
                .unwrap();
        });
        let standby = EtcdStore::connect(etcd.options()).unwrap();
        let mirror = Mirror::start_from(&standby, Some((seed, r0)));
        mirror.wait_for(now, WAIT).unwrap();
        assert_eq!(mirror.reloads(), 2, "seeded, then reloaded");
        assert_eq!(
            (mirror.loaded().records[&Table::Nodes].iter())
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
            [json!(0), json!(1), json!(2)]
        );
        commit(3);
        let (_, after) = leader.load_at().unwrap();
        mirror.wait_for(after, WAIT).unwrap();
        assert_eq!(mirror.loaded().records[&Table::Nodes].len(), 4);
    }
}

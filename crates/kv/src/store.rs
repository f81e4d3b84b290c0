//! The store: the MVCC [`Core`] behind a mutex, a group-commit thread that
//! makes its mutations durable, and the watchers that committed events are
//! delivered to.
//!
//! Write path: a request locks the state, applies itself to the core (which
//! assigns its revision), queues its mutations to the commit thread while
//! still holding the lock (so the queue is in revision order), and waits. The
//! commit thread drains everything queued, writes it in one redb transaction
//! with one fsync, then publishes: it advances `committed`, acknowledges every
//! waiting request, and hands the events to watchers.
//!
//! Automatic compaction runs on the commit thread in small steps: after each
//! commit the core drops the revisions that fell out of the retained window
//! (cost proportional to those revisions' events, see [`Core::compact`]), and
//! the next commit records it and folds a bounded part of the on-disk log
//! (see [`crate::storage`]). No step is proportional to the number of keys.
//!
//! Locks: `state` (the core, `committed`) and `watchers`. Whoever takes both
//! takes `watchers` first. The watcher fan-out holds only `watchers`, so reads
//! and new writes go on while events are handed out.
//!
//! Invariants:
//! - Nothing that is not durable is visible: plain reads and watches read at
//!   `committed`, which only the commit thread advances, after the fsync.
//!   (Txn compares see the latest applied state; a txn is acknowledged only
//!   after everything it saw is durable.)
//! - Fail closed: after a failed commit `failed` is set and every later write
//!   is refused, including ones already queued; reads keep working at
//!   `committed`.
//! - A watcher is registered, and its history replayed, under the
//!   `watchers` lock, which the commit thread holds from advancing
//!   `committed` until it has handed out that commit's events, so a watcher
//!   sees every event exactly once and in revision order.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use crate::error::{EtcdError, StorageError};
use crate::mvcc::{Core, KeyRange, Limits, Mutation, Outcome, RevisionEvents};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{Event, event::EventType};
use crate::storage::Storage;

/// etcd reports a raft term; a single node never changes leader.
pub const RAFT_TERM: u64 = 1;
/// Most requests drained into one commit.
const MAX_BATCH: usize = 4096;

pub type WatchSender = mpsc::UnboundedSender<Result<pb::WatchResponse, tonic::Status>>;

/// What one watcher wants.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    pub range: KeyRange,
    pub start_revision: i64,
    pub prev_kv: bool,
    pub no_put: bool,
    pub no_delete: bool,
}

struct Watcher {
    stream: u64,
    id: i64,
    spec: WatchSpec,
    /// Events below this revision were already sent as history.
    min_rev: i64,
    tx: WatchSender,
}

impl Watcher {
    fn wants(&self, ev: &Event, rev: i64) -> bool {
        rev >= self.min_rev && self.matches(ev)
    }

    /// Key range and filters, ignoring revisions.
    fn matches(&self, ev: &Event) -> bool {
        let is_delete = ev.r#type == EventType::Delete as i32;
        if (is_delete && self.spec.no_delete) || (!is_delete && self.spec.no_put) {
            return false;
        }
        ev.kv
            .as_ref()
            .is_some_and(|kv| self.spec.range.contains(&kv.key))
    }

    /// The event as this watcher receives it (keys and values are shared
    /// `Bytes`, so this copies no payload).
    fn shape(&self, ev: &Event) -> Event {
        Event {
            r#type: ev.r#type,
            kv: ev.kv.clone(),
            prev_kv: if self.spec.prev_kv {
                ev.prev_kv.clone()
            } else {
                None
            },
        }
    }
}

pub struct State {
    pub core: Core,
    /// Latest durable revision; reads default to it.
    pub committed: i64,
    failed: Option<String>,
    closed: bool,
    next_stream: u64,
    retain_revisions: i64,
}

pub struct Shared {
    state: Mutex<State>,
    watchers: Mutex<Vec<Watcher>>,
    pub cluster_id: u64,
    pub member_id: u64,
    pub db_path: PathBuf,
}

enum Msg {
    Commit(Pending),
    Close,
}

struct Pending {
    mutations: Vec<Mutation>,
    /// The core's revision once this request was applied.
    revision: i64,
    ack: oneshot::Sender<Result<(), EtcdError>>,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
}

/// A random u64 from the standard library's per-process random hasher keys.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

impl Store {
    /// Opens the store file and starts the commit thread.
    pub fn open(
        db_path: &Path,
        limits: Limits,
        retain_revisions: u64,
    ) -> Result<(Store, std::thread::JoinHandle<()>), OpenError> {
        let ids = (random_u64() | 1, random_u64() | 1);
        let (storage, loaded) = Storage::open(db_path, ids).map_err(OpenError::Storage)?;
        let mut core = Core::new(limits, random_u64());
        for kv in loaded.base {
            core.restore_base(kv);
        }
        for (rev, events) in loaded.log {
            core.restore_revision(rev, events);
        }
        core.restore_revisions(loaded.revision, loaded.compact_revision);
        let now = Instant::now();
        for (id, ttl) in loaded.leases {
            core.restore_lease(id, ttl, now);
        }
        core.restore_lease_keys();
        let committed = core.revision();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                committed,
                failed: None,
                closed: false,
                next_stream: 0,
                retain_revisions: i64::try_from(retain_revisions).unwrap_or(i64::MAX),
            }),
            watchers: Mutex::new(Vec::new()),
            cluster_id: loaded.cluster_id,
            member_id: loaded.member_id,
            db_path: db_path.to_owned(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("torc-kv-commit".into())
            .spawn(move || run_committer(storage, thread_shared, rx))
            .map_err(OpenError::Thread)?;
        Ok((Store { shared, tx }, handle))
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.lock()
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        self.shared.header(revision)
    }

    /// Applies a write and waits until it (and everything it observed) is
    /// durable. Returns the response and the revision for its header.
    pub async fn write<T>(
        &self,
        f: impl FnOnce(&mut Core, i64) -> Result<Outcome<T>, EtcdError>,
    ) -> Result<(T, i64), EtcdError> {
        let ack = {
            let mut st = self.lock();
            if let Some(reason) = &st.failed {
                return Err(EtcdError::StorageFailed(reason.clone()));
            }
            if st.closed {
                return Err(EtcdError::Stopped);
            }
            let committed = st.committed;
            let out = f(&mut st.core, committed)?;
            let revision = st.core.revision();
            if out.mutations.is_empty() && revision == committed {
                return Ok((out.response, revision));
            }
            let (ack_tx, ack_rx) = oneshot::channel();
            let pending = Pending {
                mutations: out.mutations,
                revision,
                ack: ack_tx,
            };
            if self.tx.send(Msg::Commit(pending)).is_err() {
                return Err(EtcdError::Stopped);
            }
            (ack_rx, out.response, revision)
        };
        let (ack_rx, response, revision) = ack;
        match ack_rx.await {
            Ok(Ok(())) => Ok((response, revision)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(EtcdError::Stopped),
        }
    }

    /// Stops the commit thread after the writes already queued.
    pub fn close(&self) {
        self.lock().closed = true;
        let _ = self.tx.send(Msg::Close);
    }

    /// A new watch stream identity.
    pub fn new_stream(&self) -> u64 {
        let mut st = self.lock();
        st.next_stream += 1;
        st.next_stream
    }

    /// Registers a watcher: sends its `created` response, replays history
    /// from its start revision, then leaves it to receive live events.
    /// False if its start revision was compacted (it is then canceled).
    pub fn create_watch(&self, stream: u64, id: i64, spec: WatchSpec, tx: &WatchSender) -> bool {
        let mut watchers = self.shared.lock_watchers();
        let st = self.lock();
        let committed = st.committed;
        let header = Some(self.header(committed));
        let _ = tx.send(Ok(pb::WatchResponse {
            header,
            watch_id: id,
            created: true,
            ..Default::default()
        }));
        let start = if spec.start_revision <= 0 {
            committed + 1
        } else {
            spec.start_revision
        };
        let watcher = Watcher {
            stream,
            id,
            spec,
            min_rev: start.max(committed + 1),
            tx: tx.clone(),
        };
        if start <= committed {
            match st.core.history(&watcher.spec.range, start, committed) {
                Ok(events) => {
                    let events: Vec<Event> = events
                        .iter()
                        .filter(|e| watcher.matches(e))
                        .map(|e| watcher.shape(e))
                        .collect();
                    if !events.is_empty() {
                        let _ = tx.send(Ok(pb::WatchResponse {
                            header,
                            watch_id: id,
                            events,
                            ..Default::default()
                        }));
                    }
                }
                Err(_) => {
                    let _ = tx.send(Ok(pb::WatchResponse {
                        header,
                        watch_id: id,
                        canceled: true,
                        compact_revision: st.core.compact_revision(),
                        cancel_reason: EtcdError::Compacted.to_string(),
                        ..Default::default()
                    }));
                    return false;
                }
            }
        }
        drop(st);
        watchers.push(watcher);
        true
    }

    /// Removes a watcher; true if it existed.
    pub fn cancel_watch(&self, stream: u64, id: i64) -> bool {
        let mut watchers = self.shared.lock_watchers();
        let before = watchers.len();
        watchers.retain(|w| !(w.stream == stream && w.id == id));
        watchers.len() != before
    }

    pub fn drop_stream(&self, stream: u64) {
        self.shared.lock_watchers().retain(|w| w.stream != stream);
    }

    /// Drops every watcher (at shutdown, so their streams end).
    pub fn drop_all_watchers(&self) {
        self.shared.lock_watchers().clear();
    }

    /// Revokes every lease that has expired by `now`, one revision each.
    pub async fn expire_leases(&self, now: Instant) {
        let expired = self.lock().core.expired_leases(now);
        for id in expired {
            match self.write(|core, _| core.lease_revoke(id)).await {
                Ok(_) | Err(EtcdError::LeaseNotFound) => {}
                Err(e) => {
                    tracing::warn!(lease = id, error = %e, "expiring lease failed");
                    return;
                }
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug; keep serving rather than
        // turning it into a panic in every later request.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take before `state` when taking both.
    fn lock_watchers(&self) -> MutexGuard<'_, Vec<Watcher>> {
        self.watchers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn header(&self, revision: i64) -> pb::ResponseHeader {
        pb::ResponseHeader {
            cluster_id: self.cluster_id,
            member_id: self.member_id,
            revision,
            raft_term: RAFT_TERM,
        }
    }
}

/// Failure to open the store (wrapped with its path by the caller).
#[derive(Debug)]
pub enum OpenError {
    Storage(StorageError),
    Thread(std::io::Error),
}

/// Commit-thread timings, printed to stderr once a second when the
/// environment variable `TORC_KV_STATS` is set: a debugging aid for the
/// benchmark, off (and free) otherwise.
#[derive(Default)]
struct Stats {
    since: Option<Instant>,
    batches: u64,
    requests: u64,
    /// Batches by size: 1, 2-3, 4-7, ... (power-of-two buckets).
    sizes: [u64; 14],
    idle: std::time::Duration,
    commit: (std::time::Duration, std::time::Duration),
    publish: (std::time::Duration, std::time::Duration),
    compact_core: (std::time::Duration, std::time::Duration),
}

fn add(slot: &mut (std::time::Duration, std::time::Duration), d: std::time::Duration) {
    slot.0 += d;
    slot.1 = slot.1.max(d);
}

impl Stats {
    fn enabled() -> Option<Stats> {
        std::env::var_os("TORC_KV_STATS").map(|_| Stats {
            since: Some(Instant::now()),
            ..Stats::default()
        })
    }

    fn batch(&mut self, n: usize) {
        self.batches += 1;
        self.requests += n as u64;
        let bucket = (usize::BITS - n.max(1).leading_zeros() - 1) as usize;
        self.sizes[bucket.min(self.sizes.len() - 1)] += 1;
    }

    fn maybe_print(&mut self) {
        let since = self.since.unwrap_or_else(Instant::now);
        if since.elapsed().as_secs() < 1 {
            return;
        }
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        let sum_max = |(t, m): (std::time::Duration, std::time::Duration)| {
            format!("{:.1}/{:.2}", ms(t), ms(m))
        };
        eprintln!(
            "kv-stats {:.2}s batches={} requests={} sizes={:?} idle_ms={:.1} \
             commit_ms(total/max)={} publish_ms={} compact_core_ms={}",
            since.elapsed().as_secs_f64(),
            self.batches,
            self.requests,
            self.sizes,
            ms(self.idle),
            sum_max(self.commit),
            sum_max(self.publish),
            sum_max(self.compact_core),
        );
        *self = Stats {
            since: Some(Instant::now()),
            ..Stats::default()
        };
    }
}

fn run_committer(storage: Storage, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut closing = false;
    let mut stats = Stats::enabled();
    // Automatic compaction records, written with the next commit.
    let mut carried: Vec<Mutation> = Vec::new();
    while !closing {
        let idle = Instant::now();
        let msg = rx.blocking_recv();
        if let Some(s) = &mut stats {
            s.idle += idle.elapsed();
        }
        match msg {
            Some(Msg::Commit(p)) => batch.push(p),
            Some(Msg::Close) | None => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Commit(p)) => batch.push(p),
                Ok(Msg::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if let Some(s) = &mut stats {
            s.batch(batch.len());
        }
        let batch = std::mem::take(&mut batch);
        carried = commit_batch(&storage, &shared, batch, carried, stats.as_mut());
        if let Some(s) = &mut stats {
            s.maybe_print();
        }
    }
    if !carried.is_empty() && shared.lock().failed.is_none() {
        commit_carried(&storage, &shared, &carried);
    }
}

/// Makes a compaction record durable on its own (at shutdown).
fn commit_carried(storage: &Storage, shared: &Shared, carried: &[Mutation]) {
    if let Err(e) = storage.commit(carried) {
        tracing::error!(error = %e, "kv compaction commit failed; refusing further writes");
        shared.lock().failed = Some(e.to_string());
    }
}

fn commit_batch(
    storage: &Storage,
    shared: &Shared,
    batch: Vec<Pending>,
    carried: Vec<Mutation>,
    mut stats: Option<&mut Stats>,
) -> Vec<Mutation> {
    let t0 = Instant::now();
    let Some(last_rev) = batch.iter().map(|p| p.revision).max() else {
        return carried;
    };
    let already_failed = shared.lock().failed.clone();
    let result = match already_failed {
        Some(reason) => Err(reason),
        None => {
            let has_mutations =
                !carried.is_empty() || batch.iter().any(|p| !p.mutations.is_empty());
            if has_mutations {
                storage
                    .commit(
                        carried
                            .iter()
                            .chain(batch.iter().flat_map(|p| p.mutations.iter())),
                    )
                    .map_err(|e| {
                        tracing::error!(error = %e, "kv commit failed; refusing further writes");
                        e.to_string()
                    })
            } else {
                Ok(())
            }
        }
    };
    if let Some(s) = stats.as_deref_mut() {
        add(&mut s.commit, t0.elapsed());
    }
    let t1 = Instant::now();
    let mut compaction = None;
    match &result {
        Ok(()) => {
            let mut watchers = shared.lock_watchers();
            let committed = {
                let mut st = shared.lock();
                st.committed = st.committed.max(last_rev);
                // Automatic compaction: keep the last `retain_revisions`
                // revisions readable, dropping what fell out of that window
                // since the previous commit.
                let t2 = Instant::now();
                let retain = st.retain_revisions;
                let committed = st.committed;
                if retain > 0
                    && committed - st.core.compact_revision() > retain
                    && let Ok(out) = st.core.compact(committed - retain, committed)
                {
                    compaction = Some(out.mutations);
                    if let Some(s) = stats.as_deref_mut() {
                        add(&mut s.compact_core, t2.elapsed());
                    }
                }
                committed
            };
            // Writers first: their acks need nothing from the watchers.
            let batch = ack(batch, Ok(()));
            let revs: Vec<&Arc<RevisionEvents>> = batch
                .iter()
                .flat_map(|m| m.iter())
                .filter_map(|m| match m {
                    Mutation::Revision(r) => Some(r),
                    _ => None,
                })
                .collect();
            if !revs.is_empty() && !watchers.is_empty() {
                let header = shared.header(committed);
                watchers.retain(|w| {
                    let events: Vec<Event> = revs
                        .iter()
                        .flat_map(|r| {
                            r.events
                                .iter()
                                .filter(|e| w.wants(e, r.revision))
                                .map(|e| w.shape(e))
                        })
                        .collect();
                    if events.is_empty() {
                        return true;
                    }
                    w.tx.send(Ok(pb::WatchResponse {
                        header: Some(header),
                        watch_id: w.id,
                        events,
                        ..Default::default()
                    }))
                    .is_ok()
                });
            }
            drop(watchers);
            if let Some(s) = stats {
                add(&mut s.publish, t1.elapsed());
            }
        }
        Err(reason) => {
            shared.lock().failed = Some(reason.clone());
            ack(batch, Err(reason.clone()));
        }
    }
    compaction.unwrap_or_default()
}

/// Answers every request of a batch; returns their mutations.
fn ack(batch: Vec<Pending>, result: Result<(), String>) -> Vec<Vec<Mutation>> {
    batch
        .into_iter()
        .map(|p| {
            let _ = p.ack.send(result.clone().map_err(EtcdError::StorageFailed));
            p.mutations
        })
        .collect()
}

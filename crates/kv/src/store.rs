//! The store: the MVCC [`Core`] behind a mutex, a group-commit thread that
//! makes its mutations durable, and the watchers that committed events are
//! delivered to.
//!
//! Write path: a request locks the state, applies itself to the core (which
//! assigns its revision), queues its mutations to the commit thread while
//! still holding the lock (so the queue is in revision order), and waits. The
//! commit thread drains everything queued, writes it in one redb transaction
//! with one fsync, then publishes: it advances `committed`, hands the events
//! to watchers, and acknowledges every waiting request.
//!
//! Invariants:
//! - Nothing that is not durable is visible: plain reads and watches read at
//!   `committed`, which only the commit thread advances, after the fsync.
//!   (Txn compares see the latest applied state; a txn is acknowledged only
//!   after everything it saw is durable.)
//! - Fail closed: after a failed commit `failed` is set and every later write
//!   is refused, including ones already queued; reads keep working at
//!   `committed`.
//! - A watcher is registered, and its history replayed, under the same lock
//!   the commit thread publishes under, so it sees every event exactly once
//!   and in revision order.

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

    fn shape(&self, ev: &Event) -> Event {
        let mut ev = ev.clone();
        if !self.spec.prev_kv {
            ev.prev_kv = None;
        }
        ev
    }
}

pub struct State {
    pub core: Core,
    /// Latest durable revision; reads default to it.
    pub committed: i64,
    failed: Option<String>,
    closed: bool,
    watchers: Vec<Watcher>,
    next_stream: u64,
    retain_revisions: i64,
}

pub struct Shared {
    state: Mutex<State>,
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
                watchers: Vec::new(),
                next_stream: 0,
                retain_revisions: i64::try_from(retain_revisions).unwrap_or(i64::MAX),
            }),
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
        let mut st = self.lock();
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
        st.watchers.push(watcher);
        true
    }

    /// Removes a watcher; true if it existed.
    pub fn cancel_watch(&self, stream: u64, id: i64) -> bool {
        let mut st = self.lock();
        let before = st.watchers.len();
        st.watchers.retain(|w| !(w.stream == stream && w.id == id));
        st.watchers.len() != before
    }

    pub fn drop_stream(&self, stream: u64) {
        self.lock().watchers.retain(|w| w.stream != stream);
    }

    /// Drops every watcher (at shutdown, so their streams end).
    pub fn drop_all_watchers(&self) {
        self.lock().watchers.clear();
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

fn run_committer(storage: Storage, shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut closing = false;
    while !closing {
        match rx.blocking_recv() {
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
        commit_batch(&storage, &shared, std::mem::take(&mut batch));
    }
}

fn commit_batch(storage: &Storage, shared: &Shared, batch: Vec<Pending>) {
    let Some(last_rev) = batch.iter().map(|p| p.revision).max() else {
        return;
    };
    let already_failed = shared.lock().failed.clone();
    let result = match already_failed {
        Some(reason) => Err(reason),
        None => {
            let has_mutations = batch.iter().any(|p| !p.mutations.is_empty());
            if has_mutations {
                storage
                    .commit(batch.iter().flat_map(|p| p.mutations.iter()))
                    .map_err(|e| {
                        tracing::error!(error = %e, "kv commit failed; refusing further writes");
                        e.to_string()
                    })
            } else {
                Ok(())
            }
        }
    };
    let mut compaction = None;
    match &result {
        Ok(()) => {
            let mut st = shared.lock();
            st.committed = st.committed.max(last_rev);
            let revs: Vec<&Arc<RevisionEvents>> = batch
                .iter()
                .flat_map(|p| p.mutations.iter())
                .filter_map(|m| match m {
                    Mutation::Revision(r) => Some(r),
                    _ => None,
                })
                .collect();
            if !revs.is_empty() && !st.watchers.is_empty() {
                let header = shared.header(st.committed);
                st.watchers.retain(|w| {
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
            // Automatic compaction, triggered by growth: keep the last
            // `retain_revisions` revisions, compacting once twice that many
            // have piled up so the O(keys) pass is amortised.
            let retain = st.retain_revisions;
            let committed = st.committed;
            if retain > 0
                && committed - st.core.compact_revision() >= retain.saturating_mul(2)
                && let Ok(out) = st.core.compact(committed - retain, committed)
            {
                compaction = Some(out.mutations);
            }
        }
        Err(reason) => {
            shared.lock().failed = Some(reason.clone());
        }
    }
    for p in batch {
        let _ = p.ack.send(result.clone().map_err(EtcdError::StorageFailed));
    }
    if let Some(mutations) = compaction
        && let Err(e) = storage.commit(mutations.iter())
    {
        tracing::error!(error = %e, "kv compaction commit failed; refusing further writes");
        shared.lock().failed = Some(e.to_string());
    }
}

//! The store: the MVCC [`Core`] behind a mutex, a group-commit thread that
//! makes its mutations durable, an apply thread that writes them into redb,
//! and the watchers that committed events are delivered to.
//!
//! Write path: a request locks the state, applies itself to the core (which
//! assigns its revision), queues its mutations to the commit thread while
//! still holding the lock (so the queue is in revision order), and waits. The
//! commit thread drains everything queued, appends it to the write-ahead log
//! as one record with one `fdatasync` ([`crate::wal`]), then publishes: it
//! advances `committed`, acknowledges every waiting request, and hands the
//! events to watchers. Then it passes the record's mutations to the apply
//! thread, which writes them into redb without flushing, at most one
//! transaction per [`APPLY_INTERVAL`] holding whatever queued up meanwhile
//! (so it costs little CPU next to the request path, and the hand-over rarely
//! has to wake it), and makes redb durable (a checkpoint)
//! whenever the log switches files, so the file switched away from can be
//! reused later. redb work thus does not delay acknowledgements (unless the
//! apply thread falls [`MAX_APPLY_QUEUE`] records behind: then the commit
//! thread waits for it), and runs while the commit thread waits for the disk.
//!
//! Automatic compaction runs on the commit thread in small steps: after each
//! commit the core drops the revisions that fell out of the retained window
//! (cost proportional to those revisions' events, see [`Core::compact`]), and
//! the next commit logs it, and redb folds a bounded part of its on-disk log
//! (see [`crate::storage`]). No step is proportional to the number of keys.
//!
//! Watchers are kept by watch stream. A commit sends each stream one message
//! holding a response for every watcher of it concerned, and watchers that
//! get the same events share one encoding of them ([`crate::watch_wire`]), so
//! the fan-out costs little per watcher. A stream whose client falls too far
//! behind is ended, naming the revision to watch again from
//! ([`WatchSender`]), so a client that stops reading cannot grow the
//! server's memory without bound.
//!
//! Locks: `state` (the core, `committed`) and `watchers`. Whoever takes both
//! takes `watchers` first. The watcher fan-out holds only `watchers`, so reads
//! and new writes go on while events are handed out.
//!
//! Invariants:
//! - Nothing that is not durable is visible: plain reads and watches read at
//!   `committed`, which only the commit thread advances, after the fsync.
//!   (Txn compares see the latest applied state; a txn is acknowledged only
//!   after everything it saw is durable.) Auth changes go the same way:
//!   their mutations are logged like keys', and reads, watches and
//!   Authenticate are checked against `auth_committed`, which the commit
//!   thread advances with `committed`; writes against the latest `auth`.
//! - Fail closed: after a failed log append or redb commit `failed` is set and
//!   every later write is refused, including ones already queued; reads keep
//!   working at `committed`. (A write acknowledged before a redb failure is
//!   in the log, and replayed when the store is next opened.) Until a restart,
//!   except when all that failed was a write refused for want of space (no
//!   failed sync, see `torc_durable::redb_backend`): then the commit thread
//!   closes the store (the apply thread ends and drops the redb file; the
//!   refused log record, never acknowledged, is erased) and opens it again
//!   every [`REOPEN_INTERVAL`] until that works, as a start would, and serves
//!   the state it finds, which holds every acknowledged write and none that
//!   was refused ([`Committer::recover`]). Watchers stay: they saw nothing
//!   past `committed`. Leases get their whole TTL again, as at a restart.
//! - A watcher is registered, and its history replayed, under the
//!   `watchers` lock, which the commit thread holds from advancing
//!   `committed` until it has handed out that commit's events, so a watcher
//!   sees every event exactly once and in revision order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use torc_durable::redb_backend::Inject;

use crate::auth::AuthState;
use crate::error::{CommitFailure, EtcdError, Poison, StorageError};
use crate::mvcc::{Core, KeyRange, Limits, Mutation, Outcome, RevisionEvents};
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{Event, event::EventType};
use crate::storage::{Loaded, Storage};
use crate::wal::Wal;
use crate::watch_wire::EncodedWatchResponse;

/// etcd reports a raft term; a single node never changes leader. A new
/// one-member etcd reports 2 (it elects itself in its first term change),
/// and so does torc kv.
pub const RAFT_TERM: u64 = 2;
/// Most requests drained into one commit.
const MAX_BATCH: usize = 4096;
/// Most log records waiting for the apply thread; past this the commit thread
/// waits for it, so a slow redb bounds memory and the log's size.
const MAX_APPLY_QUEUE: usize = 1024;

/// Least time between two of the apply thread's redb transactions, so each
/// groups many log records (see [`run_applier`]). Reads never wait for redb
/// (they are served from memory), so this delays nothing anyone sees; only
/// the log's switching of files waits for a checkpoint, which this delays by
/// at most one interval.
const APPLY_INTERVAL: Duration = Duration::from_millis(10);

/// What the apply thread is doing, as the commit thread's [`Stats`] see it.
const APPLY_IDLE: u8 = 0;
const APPLY_BUSY: u8 = 1;
const APPLY_CHECKPOINT: u8 = 2;

/// What a watch stream's channel carries.
pub enum WatchItem {
    /// Responses (one commit's for all of the stream's watchers concerned, or
    /// one answer to the client), and their encoded size in bytes.
    Batch(Vec<EncodedWatchResponse>, usize),
    /// The client fell more than `limit` bytes behind: the stream's watches
    /// ended, and got every event before `next_revision`.
    Overflowed { next_revision: i64, limit: usize },
}

/// How far a watch stream's client is behind.
struct Backlog {
    /// Bytes queued and not yet taken by the stream.
    bytes: AtomicUsize,
    limit: usize,
    overflowed: AtomicBool,
    /// Told when `bytes` falls below `limit`.
    drained: tokio::sync::Notify,
}

/// Where a watch stream's responses go. The channel itself is unbounded (the
/// commit thread never waits for a client), but a commit's events are
/// queued only while the client is less than the limit behind; past it the
/// stream is ended ([`WatchItem::Overflowed`]) rather than let one client
/// that stopped reading grow the server's memory without bound.
#[derive(Clone)]
pub struct WatchSender {
    tx: mpsc::UnboundedSender<WatchItem>,
    backlog: Arc<Backlog>,
}

/// The stream's end of the channel; takes bytes off the backlog as it goes.
pub struct WatchReceiver {
    rx: mpsc::UnboundedReceiver<WatchItem>,
    backlog: Arc<Backlog>,
}

/// A watch stream's channel, ending the stream once `limit` bytes of events
/// wait for its client.
pub fn watch_channel(limit: usize) -> (WatchSender, WatchReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Arc::new(Backlog {
        bytes: AtomicUsize::new(0),
        limit,
        overflowed: AtomicBool::new(false),
        drained: tokio::sync::Notify::new(),
    });
    (
        WatchSender {
            tx,
            backlog: backlog.clone(),
        },
        WatchReceiver { rx, backlog },
    )
}

/// Why a commit's events were not queued.
enum NotQueued {
    /// The client is too far behind.
    Full,
    /// The stream is gone.
    Closed,
}

impl WatchSender {
    /// Queues an answer to the client's own request (or a watch's history)
    /// whatever the backlog; false once the stream has ended.
    pub fn send(&self, batch: Vec<EncodedWatchResponse>) -> bool {
        !self.backlog.overflowed.load(Ordering::Acquire) && self.queue(batch).is_ok()
    }

    /// Queues a commit's events, unless the client is already `limit` bytes
    /// behind.
    fn send_events(&self, batch: Vec<EncodedWatchResponse>) -> Result<(), NotQueued> {
        if self.backlog.overflowed.load(Ordering::Acquire) {
            return Err(NotQueued::Closed);
        }
        if self.backlog.bytes.load(Ordering::Acquire) >= self.backlog.limit {
            return Err(NotQueued::Full);
        }
        self.queue(batch).map_err(|()| NotQueued::Closed)
    }

    fn queue(&self, batch: Vec<EncodedWatchResponse>) -> Result<(), ()> {
        let bytes = batch.iter().map(prost::Message::encoded_len).sum();
        self.backlog.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.tx.send(WatchItem::Batch(batch, bytes)).map_err(|_| ())
    }

    /// Ends the stream: after what is queued, its client learns that its
    /// watches got every event before `next_revision`.
    fn overflow(&self, next_revision: i64) {
        self.backlog.overflowed.store(true, Ordering::Release);
        let _ = self.tx.send(WatchItem::Overflowed {
            next_revision,
            limit: self.backlog.limit,
        });
    }

    /// True once the stream has ended (overflowed, or its receiver gone).
    fn ended(&self) -> bool {
        self.backlog.overflowed.load(Ordering::Acquire) || self.tx.is_closed()
    }

    /// Resolves when the stream's receiving end is gone.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }

    /// Resolves once less than the limit waits for the client. The stream
    /// reads no request before, so a client that asks (for watches and their
    /// history, say) without reading the answers cannot queue without bound.
    pub async fn drained(&self) {
        loop {
            let notified = self.backlog.drained.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drain in between is not missed.
            notified.as_mut().enable();
            if self.backlog.bytes.load(Ordering::Acquire) < self.backlog.limit {
                return;
            }
            notified.await;
        }
    }
}

impl WatchReceiver {
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<WatchItem>> {
        let item = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(WatchItem::Batch(_, bytes)) = &item {
            let before = self.backlog.bytes.fetch_sub(*bytes, Ordering::AcqRel);
            if before >= self.backlog.limit && before - bytes < self.backlog.limit {
                self.backlog.drained.notify_waiters();
            }
        }
        std::task::Poll::Ready(item)
    }
}

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
    id: i64,
    spec: WatchSpec,
    /// Events below this revision were already sent as history.
    min_rev: i64,
}

/// The watchers of one watch stream and where its responses go.
struct StreamWatchers {
    tx: WatchSender,
    watchers: Vec<Watcher>,
}

/// Every watcher, by watch stream.
type Watchers = std::collections::BTreeMap<u64, StreamWatchers>;

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
    /// The auth state with every applied change, durable or not: writes
    /// are checked against it (they are acknowledged only after the changes
    /// they saw are durable).
    pub auth: Arc<AuthState>,
    /// The auth state with every durable change: reads, watches and
    /// Authenticate are checked against it, so no one is let in by a change
    /// that is not yet durable.
    pub auth_committed: Arc<AuthState>,
    failed: Option<Poison>,
    closed: bool,
    next_stream: u64,
    retain_revisions: i64,
}

pub struct Shared {
    state: Mutex<State>,
    watchers: Mutex<Watchers>,
    pub cluster_id: u64,
    pub member_id: u64,
    pub db_path: PathBuf,
    /// What `/metrics` counts (`crate::counters`).
    pub(crate) counters: crate::counters::Counters,
    /// Point-in-time reads of the redb file for snapshots; `None` while the
    /// store is closed (after a full disk, until it is opened again).
    pub snapshots: Mutex<Option<crate::storage::Reader>>,
    /// The latest revision redb holds (the apply thread's progress behind
    /// `committed`): a snapshot waits for it to reach `committed`.
    pub applied: tokio::sync::watch::Sender<i64>,
    /// Snapshots being sent at once (each holds a thread and a read
    /// transaction): at most [`MAX_SNAPSHOTS`].
    pub snapshot_slots: Arc<tokio::sync::Semaphore>,
}

/// Most snapshots sent at once.
pub const MAX_SNAPSHOTS: usize = 2;

enum Msg {
    Commit(Pending),
    /// The apply thread failed: the commit thread looks at `failed` (and, after a full disk,
    /// starts trying to open the store again) without waiting for the next write.
    Failed,
    Close,
}

/// Work for the apply thread: the mutations of one log record.
struct Logged {
    lsn: u64,
    mutations: Vec<Mutation>,
    /// Make redb durable up to this record (the log switched files).
    checkpoint: bool,
}

struct Pending {
    mutations: Vec<Mutation>,
    /// The core's revision once this request was applied.
    revision: i64,
    /// The auth state once this request was applied, if it changed it.
    auth: Option<Arc<AuthState>>,
    ack: oneshot::Sender<Result<(), EtcdError>>,
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
}

/// A random u64 from the OS's CSPRNG (the crate's one random source, also
/// behind auth tokens).
fn random_u64() -> Result<u64, OpenError> {
    getrandom::u64().map_err(OpenError::Random)
}

/// The in-memory state `loaded` from the store: the core and the auth state.
fn restore(loaded: Loaded, limits: &Limits) -> Result<(Core, Arc<AuthState>), OpenError> {
    let mut core = Core::new(limits.clone(), random_u64()?);
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
    core.restore_nospace_alarm(loaded.nospace_alarm);
    let auth = Arc::new(AuthState::restore(
        loaded.auth_enabled,
        loaded.auth_revision,
        loaded.users,
        loaded.roles,
    ));
    Ok((core, auth))
}

impl Store {
    /// Opens the store file and starts the commit thread.
    pub fn open(
        db_path: &Path,
        limits: Limits,
        retain_revisions: u64,
    ) -> Result<(Store, std::thread::JoinHandle<()>), OpenError> {
        Store::open_with(db_path, limits, retain_revisions, Inject::default())
    }

    /// [`Store::open`], the redb backend given `inject` (a failure switch in tests, nothing
    /// otherwise).
    pub fn open_with(
        db_path: &Path,
        limits: Limits,
        retain_revisions: u64,
        inject: Inject,
    ) -> Result<(Store, std::thread::JoinHandle<()>), OpenError> {
        let ids = (random_u64()? | 1, random_u64()? | 1);
        let (storage, wal, loaded) =
            Storage::open_with(db_path, ids, &inject).map_err(OpenError::Storage)?;
        let (cluster_id, member_id) = (loaded.cluster_id, loaded.member_id);
        let (core, auth) = restore(loaded, &limits)?;
        let committed = core.revision();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                core,
                committed,
                auth: auth.clone(),
                auth_committed: auth,
                failed: None,
                closed: false,
                next_stream: 0,
                retain_revisions: i64::try_from(retain_revisions).unwrap_or(i64::MAX),
            }),
            watchers: Mutex::new(Watchers::new()),
            cluster_id,
            member_id,
            db_path: db_path.to_owned(),
            counters: crate::counters::Counters::default(),
            snapshots: Mutex::new(None),
            applied: tokio::sync::watch::Sender::new(committed),
            snapshot_slots: Arc::new(tokio::sync::Semaphore::new(MAX_SNAPSHOTS)),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let committer = Committer::start(
            storage,
            wal,
            shared.clone(),
            Reopen {
                limits,
                inject,
                wake: tx.downgrade(),
            },
        )?;
        let handle = std::thread::Builder::new()
            .name("torc-kv-commit".into())
            .spawn(move || committer.run(rx))
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
    /// durable. Returns the response and the revision for its header. `f`
    /// gets the core, the latest auth state (to check the caller against,
    /// or to change: a change is made on a copy, see [`Arc::make_mut`]) and
    /// the committed revision.
    pub async fn write<T>(
        &self,
        f: impl FnOnce(&mut Core, &mut Arc<AuthState>, i64) -> Result<Outcome<T>, EtcdError>,
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
            let State { core, auth, .. } = &mut *st;
            let out = f(core, auth, committed)?;
            let revision = st.core.revision();
            let auth = out
                .mutations
                .iter()
                .any(|m| matches!(m, Mutation::Auth(_)))
                .then(|| st.auth.clone());
            if out.mutations.is_empty() && revision == committed {
                return Ok((out.response, revision));
            }
            let (ack_tx, ack_rx) = oneshot::channel();
            let pending = Pending {
                mutations: out.mutations,
                revision,
                auth,
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
        if tx.ended() {
            return false;
        }
        let st = self.lock();
        let committed = st.committed;
        let header = Some(self.header(committed));
        tx.send(vec![
            pb::WatchResponse {
                header,
                watch_id: id,
                created: true,
                ..Default::default()
            }
            .into(),
        ]);
        let start = if spec.start_revision <= 0 {
            committed + 1
        } else {
            spec.start_revision
        };
        let watcher = Watcher {
            id,
            spec,
            min_rev: start.max(committed + 1),
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
                        tx.send(vec![
                            pb::WatchResponse {
                                header,
                                watch_id: id,
                                events,
                                ..Default::default()
                            }
                            .into(),
                        ]);
                    }
                }
                Err(_) => {
                    tx.send(vec![
                        pb::WatchResponse {
                            header,
                            watch_id: id,
                            canceled: true,
                            compact_revision: st.core.compact_revision(),
                            cancel_reason: EtcdError::Compacted.to_string(),
                            ..Default::default()
                        }
                        .into(),
                    ]);
                    return false;
                }
            }
        }
        drop(st);
        watchers
            .entry(stream)
            .or_insert_with(|| StreamWatchers {
                tx: tx.clone(),
                watchers: Vec::new(),
            })
            .watchers
            .push(watcher);
        true
    }

    /// Removes a watcher; true if it existed.
    pub fn cancel_watch(&self, stream: u64, id: i64) -> bool {
        let mut watchers = self.shared.lock_watchers();
        let Some(entry) = watchers.get_mut(&stream) else {
            return false;
        };
        let before = entry.watchers.len();
        entry.watchers.retain(|w| w.id != id);
        entry.watchers.len() != before
    }

    pub fn drop_stream(&self, stream: u64) {
        self.shared.lock_watchers().remove(&stream);
    }

    /// Drops every watcher (at shutdown, so their streams end).
    pub fn drop_all_watchers(&self) {
        self.shared.lock_watchers().clear();
    }

    /// Revokes every lease that has expired by `now`, one revision each.
    pub async fn expire_leases(&self, now: Instant) {
        let expired = self.lock().core.expired_leases(now);
        for id in expired {
            match self.write(|core, _, _| core.lease_revoke(id)).await {
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
    /// Watchers open now, over every stream.
    pub(crate) fn watcher_count(&self) -> usize {
        self.lock_watchers()
            .values()
            .map(|s| s.watchers.len())
            .sum()
    }

    fn lock_watchers(&self) -> MutexGuard<'_, Watchers> {
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
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("starting a store thread: {0}")]
    Thread(std::io::Error),
    #[error("the OS random source failed: {0}")]
    Random(getrandom::Error),
}

/// Why the store was not opened again after a full disk (it keeps refusing writes, and tries
/// again).
#[derive(Debug, thiserror::Error)]
enum ReopenError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("the file now holds another store (its cluster and member ids differ)")]
    Replaced,
    #[error("the store holds revision {found}, but revision {committed} was acknowledged")]
    Behind { found: i64, committed: i64 },
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
    /// Log appends by duration: <0.25, <0.5, <1, <2, <4, <8, <16, >=16 ms.
    commit_hist: [u64; 8],
    /// Appends slower than 2 ms, by what the apply thread was doing when
    /// they started: idle, applying, checkpointing.
    slow_during: [u64; 3],
    /// Handing records to the apply thread: waits when its queue is full,
    /// or when waking it lets it run first on a busy core.
    apply_wait: (Duration, Duration),
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

    fn commit(&mut self, took: Duration, apply_phase: u8) {
        add(&mut self.commit, took);
        let us = took.as_micros();
        let bucket = if us < 250 {
            0
        } else {
            (usize::BITS - ((us / 250) as usize).leading_zeros()) as usize
        };
        self.commit_hist[bucket.min(self.commit_hist.len() - 1)] += 1;
        if took >= Duration::from_millis(2) {
            self.slow_during[usize::from(apply_phase).min(2)] += 1;
        }
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
             commit_ms(total/max)={} commit_hist={:?} slow_commits(idle/apply/checkpoint)={:?} \
             publish_ms={} compact_core_ms={} apply_wait_ms={}",
            since.elapsed().as_secs_f64(),
            self.batches,
            self.requests,
            self.sizes,
            ms(self.idle),
            sum_max(self.commit),
            self.commit_hist,
            self.slow_during,
            sum_max(self.publish),
            sum_max(self.compact_core),
            sum_max(self.apply_wait),
        );
        *self = Stats {
            since: Some(Instant::now()),
            ..Stats::default()
        };
    }
}

/// The commit thread's state.
struct Committer {
    wal: Wal,
    shared: Arc<Shared>,
    apply: std::sync::mpsc::SyncSender<Logged>,
    /// The apply thread, which owns the redb file.
    applier: std::thread::JoinHandle<()>,
    /// The last log record durable in redb (set by the apply thread).
    checkpointed: Arc<AtomicU64>,
    /// What the apply thread is doing (for [`Stats`] only).
    apply_phase: Arc<AtomicU8>,
    /// A log append failed: the record it may have left must be erased before the log is
    /// opened again.
    append_failed: bool,
    /// How to open the store again after a full disk.
    reopen: Reopen,
}

/// What opening the store again needs (see [`Committer::recover`]).
#[derive(Clone)]
struct Reopen {
    limits: Limits,
    inject: Inject,
    /// For the apply thread to wake the commit thread when it fails (weak, so the channel
    /// still closes when every [`Store`] is gone).
    wake: mpsc::WeakUnboundedSender<Msg>,
}

/// How often a store refusing writes for want of space tries to open itself again.
const REOPEN_INTERVAL: Duration = Duration::from_secs(1);

impl Committer {
    /// Starts the apply thread on `storage`; the commit thread's state for `wal`.
    fn start(
        storage: Storage,
        wal: Wal,
        shared: Arc<Shared>,
        reopen: Reopen,
    ) -> Result<Committer, OpenError> {
        let (apply, apply_rx) = std::sync::mpsc::sync_channel(MAX_APPLY_QUEUE);
        // Everything in the log when it was opened is durable in redb.
        let checkpointed = Arc::new(AtomicU64::new(0));
        let apply_phase = Arc::new(AtomicU8::new(APPLY_IDLE));
        // What redb holds now (the log was replayed into it) is what snapshots start from.
        let reader = storage.reader();
        let applied = i64::try_from(reader.view()?.meta("revision")?).unwrap_or(i64::MAX);
        shared.applied.send_replace(applied);
        *shared.snapshots.lock().unwrap_or_else(|e| e.into_inner()) = Some(reader);
        let applier = {
            let shared = shared.clone();
            let checkpointed = checkpointed.clone();
            let apply_phase = apply_phase.clone();
            let wake = reopen.wake.clone();
            std::thread::Builder::new()
                .name("torc-kv-apply".into())
                .spawn(move || {
                    run_applier(storage, shared, apply_rx, checkpointed, apply_phase, wake)
                })
                .map_err(OpenError::Thread)?
        };
        Ok(Committer {
            wal,
            shared,
            apply,
            applier,
            checkpointed,
            apply_phase,
            append_failed: false,
            reopen,
        })
    }

    fn run(mut self, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
                Some(Msg::Failed) => {}
                Some(Msg::Close) | None => break,
            }
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(Msg::Commit(p)) => batch.push(p),
                    Ok(Msg::Failed) => {}
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
            carried = self.commit_batch(batch, carried, stats.as_mut());
            if let Some(s) = &mut stats {
                s.maybe_print();
            }
            let failed = self.shared.lock().failed.clone();
            if !closing && let Some(poison) = failed.filter(Poison::is_no_space) {
                // The core holds the refused writes (and compacted on them): the store is
                // opened again from disk, which holds every acknowledged one.
                carried.clear();
                match self.recover(&mut rx, poison) {
                    Some(reopened) => self = reopened,
                    None => return,
                }
            }
        }
        if !carried.is_empty() && self.shared.lock().failed.is_none() {
            // Make a compaction record durable on its own (at shutdown).
            if let Err(reason) = self.log(carried) {
                self.shared.lock().failed = Some(reason);
            }
        }
        // The apply thread finishes what was logged, then checkpoints, and closes the file
        // (unless a snapshot being sent still reads it: then its end does).
        *self
            .shared
            .snapshots
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        drop(self.apply);
        let _ = self.applier.join();
    }

    /// After a commit refused for want of space (`poison`): closes the store (the apply thread
    /// ends, dropping the redb file, and the log is dropped, its refused record erased first)
    /// and opens it again, every [`REOPEN_INTERVAL`], until that works: then the state is what
    /// the disk holds, which is every acknowledged write (the log holds them, and opening
    /// replays it), and the store takes writes again. Meanwhile writes are refused with
    /// `poison`. `None` when the store was closed meanwhile (the apply thread has ended).
    ///
    /// Safe for the reason the controller's state store reopens its file (see
    /// `torc_durable::redb_backend`): with no failed sync, the files hold what a crash at that
    /// point would leave, which an open recovers from.
    fn recover(self, rx: &mut mpsc::UnboundedReceiver<Msg>, poison: Poison) -> Option<Committer> {
        let Committer {
            wal,
            shared,
            apply,
            applier,
            append_failed,
            reopen,
            ..
        } = self;
        // The file is closed only once no snapshot reads it (a snapshot being sent delays
        // the reopening until it ends).
        *shared.snapshots.lock().unwrap_or_else(|e| e.into_inner()) = None;
        drop(apply);
        let _ = applier.join();
        let mut unerased = append_failed.then_some(wal);
        tracing::warn!(
            error = %poison,
            "kv refusing writes for want of space; opening the store again every {REOPEN_INTERVAL:?} until space returns"
        );
        for attempt in 1u64.. {
            let deadline = Instant::now() + REOPEN_INTERVAL;
            while Instant::now() < deadline {
                loop {
                    match rx.try_recv() {
                        Ok(Msg::Commit(p)) => drop(ack(vec![p], Err(poison.clone()))),
                        Ok(Msg::Failed) => {}
                        Ok(Msg::Close) | Err(mpsc::error::TryRecvError::Disconnected) => {
                            return None;
                        }
                        Err(mpsc::error::TryRecvError::Empty) => break,
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let result = match unerased.as_mut().map(Wal::erase_failed_append) {
                Some(Err(e)) => Err(OpenError::Storage(e).into()),
                erased => {
                    if erased.is_some() {
                        unerased = None;
                    }
                    reopen.open(&shared)
                }
            };
            match result {
                Ok(reopened) => {
                    tracing::info!(
                        attempt,
                        "kv store opened again after a full disk; taking writes"
                    );
                    return Some(reopened);
                }
                // Once at first, then once a minute.
                Err(e) if attempt % 60 == 1 => tracing::warn!(
                    attempt,
                    error = %e,
                    "kv store not opened again yet after a full disk"
                ),
                Err(_) => {}
            }
        }
        None
    }

    /// Appends `mutations` to the log (durably) and queues them for redb.
    fn log(&mut self, mutations: Vec<Mutation>) -> Result<(), Poison> {
        let lsn = self.append(&mutations)?;
        self.apply(lsn, mutations)
    }

    fn append(&mut self, mutations: &[Mutation]) -> Result<u64, Poison> {
        self.wal.append(mutations).map_err(|e| {
            tracing::error!(error = %e, "kv log append failed; refusing further writes");
            self.append_failed = true;
            Poison::new(e)
        })
    }

    /// Hands a logged record to the apply thread.
    fn apply(&mut self, lsn: u64, mutations: Vec<Mutation>) -> Result<(), Poison> {
        let checkpoint = self
            .wal
            .switch_if_full(self.checkpointed.load(Ordering::Acquire));
        self.apply
            .send(Logged {
                lsn,
                mutations,
                checkpoint,
            })
            .map_err(|_| Poison::new(CommitFailure::ApplyStopped))
    }

    fn commit_batch(
        &mut self,
        batch: Vec<Pending>,
        carried: Vec<Mutation>,
        mut stats: Option<&mut Stats>,
    ) -> Vec<Mutation> {
        let shared = self.shared.clone();
        let t0 = Instant::now();
        let Some(last_rev) = batch.iter().map(|p| p.revision).max() else {
            return carried;
        };
        let already_failed = shared.lock().failed.clone();
        let apply_phase_at_start = self.apply_phase.load(Ordering::Relaxed);
        let mut logged: Vec<Mutation> = carried;
        logged.extend(batch.iter().flat_map(|p| p.mutations.iter().cloned()));
        let result = match already_failed {
            Some(reason) => Err(reason),
            None if logged.is_empty() => Ok(None),
            None => {
                let appended = self.append(&logged).map(Some);
                shared.counters.wal_fsync.observe(t0.elapsed());
                appended
            }
        };
        let requests = batch.len();
        let counters = &shared.counters;
        match &result {
            Ok(_) => crate::counters::Counters::add(&counters.proposals_committed, requests),
            Err(_) => crate::counters::Counters::add(&counters.proposals_failed, requests),
        }
        if let Some(s) = stats.as_deref_mut() {
            s.commit(t0.elapsed(), apply_phase_at_start);
        }
        let t1 = Instant::now();
        let mut compaction = None;
        match result {
            Ok(lsn) => {
                let mut watchers = shared.lock_watchers();
                let committed = {
                    let mut st = shared.lock();
                    st.committed = st.committed.max(last_rev);
                    if let Some(auth) = batch.iter().rev().find_map(|p| p.auth.clone()) {
                        st.auth_committed = auth;
                    }
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
                    publish(&shared.header(committed), &revs, &mut watchers);
                }
                drop(watchers);
                if let Some(s) = stats.as_deref_mut() {
                    add(&mut s.publish, t1.elapsed());
                }
                let t3 = Instant::now();
                if let Some(lsn) = lsn
                    && let Err(reason) = self.apply(lsn, logged)
                {
                    tracing::error!(error = %reason, "kv apply failed; refusing further writes");
                    shared.lock().failed = Some(reason);
                }
                if let Some(s) = stats {
                    add(&mut s.apply_wait, t3.elapsed());
                }
            }
            Err(reason) => {
                shared.lock().failed = Some(reason.clone());
                ack(batch, Err(reason));
            }
        }
        compaction.unwrap_or_default()
    }
}

impl Reopen {
    /// Opens the store at `shared`'s path again, and, if it is the same store and holds
    /// every acknowledged write, makes its state the served one, clears the failure, and
    /// returns the commit thread's state for it. Watchers stay: they have seen nothing past
    /// `committed`, which the disk holds. Leases are restored with their whole TTL from now,
    /// as at a restart.
    fn open(&self, shared: &Arc<Shared>) -> Result<Committer, ReopenError> {
        let (storage, wal, loaded) = Storage::open_with(
            &shared.db_path,
            (shared.cluster_id, shared.member_id),
            &self.inject,
        )
        .map_err(OpenError::Storage)?;
        if (loaded.cluster_id, loaded.member_id) != (shared.cluster_id, shared.member_id) {
            return Err(ReopenError::Replaced);
        }
        let (core, auth) = restore(loaded, &self.limits)?;
        let committed = shared.lock().committed;
        if core.revision() < committed {
            return Err(ReopenError::Behind {
                found: core.revision(),
                committed,
            });
        }
        let committer = Committer::start(storage, wal, shared.clone(), self.clone())?;
        let _watchers = shared.lock_watchers();
        let mut st = shared.lock();
        st.core = core;
        st.committed = st.core.revision();
        st.auth = auth.clone();
        st.auth_committed = auth;
        st.failed = None;
        Ok(committer)
    }
}

/// Hands committed revisions to the watchers that want them: one message
/// per watch stream, with a response for each of its watchers concerned.
/// Watchers that get the same events share one encoding of them (see
/// [`crate::watch_wire`]). Streams whose receiving end is gone are dropped,
/// and so are streams whose client fell too far behind (see [`WatchSender`]).
fn publish(header: &pb::ResponseHeader, revs: &[&Arc<RevisionEvents>], watchers: &mut Watchers) {
    // Encodings made so far, by the events they hold (indexes into `revs`
    // and their events) and whether with `prev_kv`.
    type Selection = (Vec<(usize, usize)>, bool);
    let mut encoded: Vec<(Selection, bytes::Bytes)> = Vec::new();
    let mut selection = Vec::new();
    watchers.retain(|_, stream| {
        let mut responses = Vec::new();
        for w in &stream.watchers {
            selection.clear();
            for (i, r) in revs.iter().enumerate() {
                for (j, e) in r.events.iter().enumerate() {
                    if w.wants(e, r.revision) {
                        selection.push((i, j));
                    }
                }
            }
            if selection.is_empty() {
                continue;
            }
            let prev_kv = w.spec.prev_kv;
            let rest = match encoded
                .iter()
                .find(|((sel, p), _)| *p == prev_kv && *sel == selection)
            {
                Some((_, rest)) => rest.clone(),
                None => {
                    let events = selection
                        .iter()
                        .map(|&(i, j)| w.shape(&revs[i].events[j]))
                        .collect();
                    let rest = EncodedWatchResponse::shared_part(pb::WatchResponse {
                        header: Some(*header),
                        events,
                        ..Default::default()
                    });
                    encoded.push(((selection.clone(), prev_kv), rest.clone()));
                    rest
                }
            };
            responses.push(EncodedWatchResponse {
                watch_id: w.id,
                rest,
            });
        }
        if responses.is_empty() {
            return true;
        }
        match stream.tx.send_events(responses) {
            Ok(()) => true,
            Err(NotQueued::Closed) => false,
            Err(NotQueued::Full) => {
                // Everything before this commit is queued for it; nothing
                // from this commit on is.
                let next_revision = revs.first().map_or(header.revision, |r| r.revision);
                tracing::warn!(
                    next_revision,
                    watchers = stream.watchers.len(),
                    "a watch stream's client fell too far behind; ending the stream"
                );
                stream.tx.overflow(next_revision);
                false
            }
        }
    });
}

/// The apply thread: writes logged mutations into redb, grouping what queued
/// up (for at least [`APPLY_INTERVAL`] since its previous transaction) into
/// one non-durable transaction, and checkpoints when asked (and when
/// the commit thread stops). A failure sets `failed` and stops applying: the
/// log keeps what was acknowledged.
fn run_applier(
    storage: Storage,
    shared: Arc<Shared>,
    rx: std::sync::mpsc::Receiver<Logged>,
    checkpointed: Arc<AtomicU64>,
    apply_phase: Arc<AtomicU8>,
    wake: mpsc::WeakUnboundedSender<Msg>,
) {
    let mut stats = std::env::var_os("TORC_KV_STATS").map(|_| ApplyStats::default());
    // The last record applied but not yet durable in redb.
    let mut unflushed: Option<u64> = None;
    let mut failed = false;
    let mut last_commit: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        // Let records pile up for a while after each transaction, then apply
        // them all in one: a redb transaction's fixed cost dominates a small
        // one, and while this thread sleeps the commit thread's hand-overs
        // wake nobody (on a busy core a woken apply thread preempts the
        // commit thread). Measured in `bench/kv.sh` (server on one core): with
        // one client, ~3,300 one-record transactions a second took 90-135 ms
        // of it, ~100 transactions of ~40 records 16-34 ms; with 64 clients
        // the commit thread's hand-overs took 150-200 ms of every second,
        // and 1-6 ms after.
        if let Some(at) = last_commit {
            let wait = APPLY_INTERVAL.saturating_sub(at.elapsed());
            if !wait.is_zero() && !first.checkpoint {
                std::thread::sleep(wait);
            }
        }
        let mut group = vec![first];
        group.extend(rx.try_iter());
        if failed {
            continue;
        }
        let t0 = Instant::now();
        let lsn = group.last().map_or(0, |l| l.lsn);
        let durable = group.iter().any(|l| l.checkpoint);
        apply_phase.store(
            if durable {
                APPLY_CHECKPOINT
            } else {
                APPLY_BUSY
            },
            Ordering::Relaxed,
        );
        let result = storage.commit(group.iter().flat_map(|l| l.mutations.iter()), lsn, durable);
        apply_phase.store(APPLY_IDLE, Ordering::Relaxed);
        if result.is_ok() {
            let top = group
                .iter()
                .flat_map(|l| l.mutations.iter())
                .filter_map(|m| match m {
                    Mutation::Revision(r) => Some(r.revision),
                    _ => None,
                })
                .max();
            if let Some(top) = top {
                shared.applied.send_if_modified(|a| {
                    let newer = top > *a;
                    *a = (*a).max(top);
                    newer
                });
            }
        }
        last_commit = Some(Instant::now());
        if let Some(s) = &mut stats {
            s.record(group.len(), durable, t0.elapsed());
        }
        match result {
            Ok(()) if durable => {
                checkpointed.store(lsn, Ordering::Release);
                unflushed = None;
            }
            Ok(()) => unflushed = Some(lsn),
            Err(e) => {
                tracing::error!(error = %e, "kv redb commit failed; refusing further writes");
                shared.lock().failed = Some(Poison::new(e));
                failed = true;
                if let Some(wake) = wake.upgrade() {
                    let _ = wake.send(Msg::Failed);
                }
            }
        }
    }
    if let Some(lsn) = unflushed
        && !failed
        && let Err(e) = storage.commit(std::iter::empty(), lsn, true)
    {
        // The log still holds these records; the next open replays them.
        tracing::error!(error = %e, "kv final checkpoint failed");
    }
}

/// Apply-thread timings, printed with [`Stats`] when `TORC_KV_STATS` is set.
#[derive(Default)]
struct ApplyStats {
    since: Option<Instant>,
    groups: u64,
    records: u64,
    apply: (Duration, Duration),
    checkpoint: (Duration, Duration),
}

impl ApplyStats {
    fn record(&mut self, records: usize, durable: bool, took: Duration) {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.groups += 1;
        self.records += records as u64;
        add(
            if durable {
                &mut self.checkpoint
            } else {
                &mut self.apply
            },
            took,
        );
        if since.elapsed().as_secs() >= 1 {
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            eprintln!(
                "kv-apply-stats {:.2}s groups={} records={} apply_ms(total/max)={:.1}/{:.2} \
                 checkpoint_ms={:.1}/{:.2}",
                since.elapsed().as_secs_f64(),
                self.groups,
                self.records,
                ms(self.apply.0),
                ms(self.apply.1),
                ms(self.checkpoint.0),
                ms(self.checkpoint.1),
            );
            *self = ApplyStats::default();
        }
    }
}

/// Answers every request of a batch; returns their mutations.
fn ack(batch: Vec<Pending>, result: Result<(), Poison>) -> Vec<Vec<Mutation>> {
    batch
        .into_iter()
        .map(|p| {
            let _ = p.ack.send(result.clone().map_err(EtcdError::StorageFailed));
            p.mutations
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use torc_durable::redb_backend::{Inject, Injected};

    use super::*;

    /// Puts `key` with a 64 KiB value: a hundred of them fill a log file, whose switch asks
    /// redb for a durable commit (non-durable ones may not reach the file at all).
    fn put(store: &Store, key: &str) -> impl Future<Output = Result<(), EtcdError>> + use<> {
        let store = store.clone();
        let req = pb::PutRequest {
            key: key.as_bytes().to_vec().into(),
            value: vec![b'v'; 64 << 10].into(),
            ..Default::default()
        };
        async move { store.write(|core, _, _| core.put(&req)).await.map(drop) }
    }

    /// A store in a directory of its own, its redb backend given a failure switch, holding the
    /// key `before`.
    async fn opened_with_a_key() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        Store,
        std::thread::JoinHandle<()>,
        Inject,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let inject = Inject::default();
        let (store, handle) =
            Store::open_with(&path, Limits::default(), 0, inject.clone()).unwrap();
        put(&store, "before").await.unwrap();
        (dir, path, store, handle, inject)
    }

    fn has(store: &Store, key: &str) -> bool {
        let st = store.lock();
        st.core.get(key.as_bytes(), st.committed).is_some()
    }

    /// A redb commit refused for want of space (no failed sync) stops writes with an error
    /// that says so, names the file and is `ResourceExhausted`; then the store opens itself
    /// again, without a restart, and takes writes. Every acknowledged write is there, live and
    /// after reopening; no refused one is.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_disk_refuses_writes_then_resumes_by_itself() {
        let (_dir, path, store, handle, inject) = opened_with_a_key().await;
        // A watcher from before the failure gets the events after it.
        let (watch_tx, mut watch_rx) = watch_channel(1 << 30);
        let stream = store.new_stream();
        let spec = WatchSpec {
            range: KeyRange::new("after".into(), bytes::Bytes::new()),
            start_revision: 0,
            prev_kv: false,
            no_put: false,
            no_delete: false,
        };
        assert!(store.create_watch(stream, 7, spec, &watch_tx));
        *inject.lock().unwrap() = Some(Injected::NoSpace);
        let mut acknowledged = vec!["before".to_owned()];
        let mut refused = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        for i in 0.. {
            assert!(Instant::now() < deadline, "no write was refused");
            let key = format!("probe-{i}");
            match put(&store, &key).await {
                Ok(()) => acknowledged.push(key),
                Err(e) => {
                    let text = e.to_string();
                    assert!(
                        text.starts_with("torc kv: no space left for the store"),
                        "{text}"
                    );
                    assert!(text.contains(&path.display().to_string()), "{text}");
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    refused = Some(key);
                    break;
                }
            }
        }
        let refused = refused.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match put(&store, "after").await {
                Ok(()) => break,
                Err(e) => assert!(Instant::now() < deadline, "writes did not resume: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acknowledged.push("after".to_owned());
        for key in &acknowledged {
            assert!(has(&store, key), "{key} acknowledged, then lost");
        }
        let watched = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let item = std::future::poll_fn(|cx| watch_rx.poll_recv(cx)).await;
                let Some(WatchItem::Batch(responses, _)) = item else {
                    panic!("the watch stream ended");
                };
                for r in responses {
                    let decoded = <pb::WatchResponse as prost::Message>::decode(r.rest).unwrap();
                    if r.watch_id == 7
                        && decoded
                            .events
                            .iter()
                            .any(|e| e.kv.as_ref().is_some_and(|kv| kv.key.as_ref() == b"after"))
                    {
                        return;
                    }
                }
            }
        })
        .await;
        assert!(
            watched.is_ok(),
            "the watcher did not see the put after the reopening"
        );
        assert!(!has(&store, &refused), "{refused} was refused, yet kept");
        store.close();
        handle.join().unwrap();
        let (store, handle) = Store::open(&path, Limits::default(), 0).unwrap();
        for key in &acknowledged {
            assert!(
                has(&store, key),
                "{key} acknowledged, then lost at reopening"
            );
        }
        assert!(
            !has(&store, &refused),
            "{refused} was refused, yet kept at reopening"
        );
        store.close();
        handle.join().unwrap();
    }

    /// A failed sync is never taken for a full disk: the store stays closed to writes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_refuses_writes_until_restart() {
        let (_dir, _path, store, handle, inject) = opened_with_a_key().await;
        *inject.lock().unwrap() = Some(Injected::SyncFails);
        let deadline = Instant::now() + Duration::from_secs(10);
        let refusal = 'refused: {
            for i in 0.. {
                assert!(Instant::now() < deadline, "no write was refused");
                if let Err(e) = put(&store, &format!("k{i}")).await {
                    break 'refused e;
                }
            }
            unreachable!()
        };
        let text = refusal.to_string();
        assert!(
            text.starts_with("torc kv: storage failed, refusing writes until restart"),
            "{text}"
        );
        assert_eq!(refusal.code(), tonic::Code::Unavailable);
        tokio::time::sleep(REOPEN_INTERVAL * 2).await;
        assert!(
            put(&store, "later").await.is_err(),
            "a failed sync must not be retried"
        );
        assert!(has(&store, "before"));
        store.close();
        handle.join().unwrap();
    }
}

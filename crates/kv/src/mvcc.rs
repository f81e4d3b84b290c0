//! The in-memory MVCC core: etcd's data model with no I/O and no clock.
//!
//! [`Core`] holds every retained version of every key, the event log that
//! Watch replays, and the leases. It applies requests and returns, next to the
//! response, the [`Mutation`]s that storage must make durable. It never
//! touches the disk or reads the time: callers pass `now`, which keeps every
//! rule here testable with plain unit tests.
//!
//! Invariants:
//! - `revision` starts at 1 and grows by exactly one for every write request
//!   (put, delete, txn, lease revoke/expiry) that changes at least one key;
//!   all changes of one request share that revision.
//! - For each key, `index[key]` is sorted by `mod_revision` (strictly
//!   increasing) and never empty; a deletion is a tombstone entry.
//! - `compact_revision <= revision`. Reads at a revision below
//!   `compact_revision` are refused; for every key the latest version at or
//!   below any readable revision is retained.
//! - `log` holds, in revision order, the events of every revision
//!   `>= compact_revision` that changed something, and none below it
//!   (history replayed from a store file whose log was not yet folded is
//!   dropped when the restore ends).
//! - Every version of a key at or above the previous compaction point has
//!   its event in `log`; below it a key keeps at most one, live, version.
//!   (Compaction relies on this to visit only the keys it can shrink.)
//! - A key's `lease` field names a lease in `leases`, and that lease's `keys`
//!   contains the key (for live keys); revoking a lease deletes its keys.
//! - `space_in_use` is etcd's cost estimate of what is kept: 256 bytes plus
//!   key and value for every retained version, 64 per lease (the storage
//!   quota counts it). Compaction drops, as etcd's, every version a read at
//!   or after the compaction point cannot see, so it frees space at once.
//! - While the NOSPACE alarm is raised, no write adds data (put, a txn that
//!   may put, lease grant); one that would bring `space_in_use` to the
//!   quota is refused and the caller raises the alarm.
//! - A Range picks, orders and pages its answer by etcd 3.4's rules
//!   (`order`); a txn never writes one key twice, by etcd's rule
//!   (`duplicates`); each response inside a txn carries the revision
//!   etcd gives it (`set_op_header`).
//! - No Range (nor a txn's ranges together) answers more than
//!   [`Limits::max_range_keys`] keys or [`Limits::max_range_bytes`] bytes
//!   of keys and values; a refused Range copies nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::etcdserverpb as pb;
use crate::proto::mvccpb::{Event, KeyValue, event::EventType};

mod bounds;
mod duplicates;
mod order;

pub(crate) use bounds::txn_cost;
pub use bounds::{DEFAULT_MAX_RANGE_BYTES, DEFAULT_MAX_RANGE_KEYS, DEFAULT_QUOTA_BYTES, Limits};
use bounds::{LEASE_OVERHEAD, RangeBudget, put_cost, version_cost};
use order::RangeOrder;

/// etcd's largest lease TTL, in seconds.
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's smallest lease TTL with default timing (1.5 × election timeout,
/// rounded up to seconds); shorter requests are raised to it.
pub const MIN_LEASE_TTL: i64 = 2;

/// One retained version of a key. A tombstone carries only key and
/// `mod_revision` (the deletion's revision).
#[derive(Clone, Debug)]
struct Entry {
    kv: KeyValue,
    tombstone: bool,
}

/// Everything that changed at one revision, in order. Events carry `prev_kv`.
#[derive(Clone, Debug, PartialEq)]
pub struct RevisionEvents {
    pub revision: i64,
    pub events: Vec<Event>,
}

impl RevisionEvents {
    /// The events as stored (in the log and in redb): without `prev_kv`, which is not kept.
    pub fn stored_events(&self) -> Vec<Event> {
        self.events
            .iter()
            .map(|e| Event {
                r#type: e.r#type,
                kv: e.kv.clone(),
                prev_kv: None,
            })
            .collect()
    }
}

/// A change that storage must make durable before the request is acknowledged.
#[derive(Clone, Debug, PartialEq)]
pub enum Mutation {
    Revision(Arc<RevisionEvents>),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    Compact {
        revision: i64,
    },
    /// A change to the auth state (users, roles, enabled, revision); it
    /// changes no key and no revision.
    Auth(crate::auth::AuthMutation),
    /// The NOSPACE alarm raised (`true`) or disarmed.
    NoSpaceAlarm(bool),
}

/// A response plus what must be persisted before sending it.
#[derive(Debug)]
pub struct Outcome<T> {
    pub response: T,
    pub mutations: Vec<Mutation>,
}

#[derive(Clone, Debug)]
struct Lease {
    ttl: i64,
    expiry: Instant,
    keys: BTreeSet<Bytes>,
}

/// What TimeToLive reports about a lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseInfo {
    pub id: i64,
    pub granted_ttl: i64,
    pub remaining: i64,
    pub keys: Vec<Bytes>,
}

/// The MVCC state. See the module comment for its invariants.
#[derive(Debug)]
pub struct Core {
    index: BTreeMap<Bytes, Vec<Entry>>,
    log: VecDeque<Arc<RevisionEvents>>,
    revision: i64,
    compact_revision: i64,
    leases: HashMap<i64, Lease>,
    next_lease_id: i64,
    limits: Limits,
    /// What the quota counts: [`version_cost`] of every retained version
    /// (tombstones included) and [`LEASE_OVERHEAD`] per lease.
    space_in_use: u64,
    /// etcd's NOSPACE alarm: raised when a write would pass the quota;
    /// while raised, writes that add data are refused, until disarmed.
    nospace: bool,
}

/// A key range as etcd encodes it: empty `end` is the single key `key`;
/// `end == "\0"` is every key `>= key`; otherwise `[key, end)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub key: Bytes,
    pub end: Bytes,
}

impl KeyRange {
    pub fn new(key: Bytes, end: Bytes) -> Self {
        KeyRange { key, end }
    }

    pub fn contains(&self, k: &[u8]) -> bool {
        if self.end.is_empty() {
            k == &self.key[..]
        } else if &self.end[..] == b"\0" {
            k >= &self.key[..]
        } else {
            k >= &self.key[..] && k < &self.end[..]
        }
    }
}

/// The write in progress: all its changes get revision `rev`.
struct WriteCtx {
    rev: i64,
    events: Vec<Event>,
}

impl Core {
    /// An empty store at revision 1, as etcd starts. `lease_id_seed` makes
    /// server-chosen lease IDs differ between stores.
    pub fn new(limits: Limits, lease_id_seed: u64) -> Core {
        Core {
            index: BTreeMap::new(),
            log: VecDeque::new(),
            revision: 1,
            compact_revision: 0,
            leases: HashMap::new(),
            // Positive, non-zero, and far from small user-chosen IDs.
            next_lease_id: ((lease_id_seed >> 2) | (1 << 60)) as i64 & i64::MAX,
            limits,
            space_in_use: 0,
            nospace: false,
        }
    }

    /// What the storage quota counts now, in bytes (etcd's cost estimates
    /// of every retained version and lease; compaction frees it at once).
    pub fn space_in_use(&self) -> u64 {
        self.space_in_use
    }

    /// [`Core::space_in_use`] recounted from scratch (for checks).
    pub(crate) fn recount_space(&self) -> u64 {
        let versions: u64 = self
            .index
            .values()
            .flatten()
            .map(|e| version_cost(&e.kv))
            .sum();
        versions + self.leases.len() as u64 * LEASE_OVERHEAD
    }

    /// Whether the NOSPACE alarm is raised.
    pub fn nospace_alarm(&self) -> bool {
        self.nospace
    }

    /// Refuses a write that adds `cost` bytes while the NOSPACE alarm is
    /// raised or when it would bring the space in use to the quota (etcd:
    /// `size + cost < quota` passes). The caller raises the alarm
    /// ([`Core::set_nospace_alarm`]) on [`EtcdError::NoSpace`].
    fn check_space(&self, cost: u64) -> Result<(), EtcdError> {
        let quota = self.limits.quota_bytes;
        if self.nospace || (quota > 0 && self.space_in_use.saturating_add(cost) >= quota) {
            return Err(EtcdError::NoSpace);
        }
        Ok(())
    }

    /// Raises (`true`) or disarms the NOSPACE alarm; no mutation when it
    /// already is so.
    pub fn set_nospace_alarm(&mut self, raised: bool) -> Outcome<bool> {
        let changed = self.nospace != raised;
        self.nospace = raised;
        Outcome {
            response: changed,
            mutations: if changed {
                vec![Mutation::NoSpaceAlarm(raised)]
            } else {
                Vec::new()
            },
        }
    }

    /// Restores the alarm recorded on disk.
    pub fn restore_nospace_alarm(&mut self, raised: bool) {
        self.nospace = raised;
    }

    /// The latest revision (including writes not yet durable).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    // ---- restore (used when loading from disk) ----

    /// Inserts a key version that was live at the compaction point.
    pub fn restore_base(&mut self, kv: KeyValue) {
        self.space_in_use += version_cost(&kv);
        if let Some(old) = self.index.get(&kv.key) {
            self.space_in_use -= old.iter().map(|e| version_cost(&e.kv)).sum::<u64>();
        }
        self.index.insert(
            kv.key.clone(),
            vec![Entry {
                kv,
                tombstone: false,
            }],
        );
    }

    /// Replays one logged revision. Events must come in revision order and
    /// after every `restore_base`.
    pub fn restore_revision(&mut self, revision: i64, events: Vec<Event>) {
        let mut ctx = WriteCtx {
            rev: revision,
            events: Vec::with_capacity(events.len()),
        };
        for ev in events {
            let Some(kv) = ev.kv else { continue };
            if ev.r#type == EventType::Delete as i32 {
                let key = kv.key.clone();
                self.delete_key(&mut ctx, key);
            } else {
                self.put_kv(&mut ctx, kv);
            }
        }
        self.finish(ctx);
        self.revision = self.revision.max(revision);
    }

    /// Sets the revisions recorded on disk after a restore, and drops what
    /// replayed history the compaction point makes unreadable, so that the
    /// restored core holds (and the quota counts) what it did before.
    pub fn restore_revisions(&mut self, revision: i64, compact_revision: i64) {
        self.revision = self.revision.max(revision).max(1);
        self.drop_compacted(compact_revision);
        self.compact_revision = compact_revision;
    }

    /// Restores a lease with a full TTL from `now`, attaching every live key
    /// that names it.
    pub fn restore_lease(&mut self, id: i64, ttl: i64, now: Instant) {
        self.add_lease(
            id,
            Lease {
                ttl,
                expiry: now + secs(ttl),
                keys: BTreeSet::new(),
            },
        );
    }

    fn add_lease(&mut self, id: i64, lease: Lease) {
        if self.leases.insert(id, lease).is_none() {
            self.space_in_use += LEASE_OVERHEAD;
        }
    }

    fn remove_lease(&mut self, id: i64) -> Option<Lease> {
        let lease = self.leases.remove(&id)?;
        self.space_in_use -= LEASE_OVERHEAD;
        Some(lease)
    }

    /// After restoring leases: rebuild each lease's key set from the keys.
    pub fn restore_lease_keys(&mut self) {
        let at = self.revision;
        let pairs: Vec<(i64, Bytes)> = self
            .index
            .iter()
            .filter_map(|(k, entries)| visible(entries, at).map(|kv| (kv.lease, k.clone())))
            .filter(|(lease, _)| *lease != 0)
            .collect();
        for (lease, key) in pairs {
            if let Some(l) = self.leases.get_mut(&lease) {
                l.keys.insert(key);
            }
        }
    }

    // ---- reads ----

    /// Checks that `rev` can be read when the latest readable revision is
    /// `current`.
    fn check_read_revision(&self, rev: i64, current: i64) -> Result<(), EtcdError> {
        if rev > current {
            return Err(EtcdError::FutureRevision);
        }
        if rev < self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        Ok(())
    }

    fn keys_in<'a>(
        &'a self,
        key: &'a [u8],
        end: &'a [u8],
    ) -> Box<dyn Iterator<Item = (&'a Bytes, &'a Vec<Entry>)> + 'a> {
        if end.is_empty() {
            Box::new(self.index.get_key_value(key).into_iter())
        } else if end == b"\0" {
            Box::new(
                self.index
                    .range::<[u8], _>((Bound::Included(key), Bound::Unbounded)),
            )
        } else if end <= key {
            Box::new(std::iter::empty())
        } else {
            Box::new(
                self.index
                    .range::<[u8], _>((Bound::Included(key), Bound::Excluded(end))),
            )
        }
    }

    /// The live version of `key` at `rev`, if any.
    pub fn get(&self, key: &[u8], rev: i64) -> Option<&KeyValue> {
        self.index.get(key).and_then(|e| visible(e, rev))
    }

    /// Serves a Range. `current` is the latest readable revision, used when
    /// the request names none. The header is left for the caller.
    pub fn range(
        &self,
        req: &pb::RangeRequest,
        current: i64,
    ) -> Result<pb::RangeResponse, EtcdError> {
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let rev = if req.revision <= 0 {
            current
        } else {
            req.revision
        };
        self.check_read_revision(rev, current)?;
        self.range_at(req, rev, &mut RangeBudget::of(&self.limits))
    }

    /// A Range's answer at `rev`, within `budget`.
    fn range_at(
        &self,
        req: &pb::RangeRequest,
        rev: i64,
        budget: &mut RangeBudget,
    ) -> Result<pb::RangeResponse, EtcdError> {
        let (kvs, count, more) = self.range_refs(req, rev, budget)?;
        let kvs = kvs
            .into_iter()
            .map(|kv| {
                let mut kv = kv.clone();
                if req.keys_only {
                    kv.value = Bytes::new();
                }
                kv
            })
            .collect();
        Ok(pb::RangeResponse {
            header: None,
            kvs,
            more,
            count,
        })
    }

    /// The key-values a Range answers with (not yet copied), its count and
    /// `more`; refused when they do not fit `budget`, which they are taken
    /// from. Only references are gathered (and sorted) before the budget is
    /// checked, so a refused Range copies nothing.
    fn range_refs<'a>(
        &'a self,
        req: &'a pb::RangeRequest,
        rev: i64,
        budget: &mut RangeBudget,
    ) -> Result<(Vec<&'a KeyValue>, i64, bool), EtcdError> {
        let order = RangeOrder::of(req);
        let (fetch, sorts) = (order.fetch(), order.sorts());
        let mut count: i64 = 0;
        let mut matched = 0usize;
        let mut kvs: Vec<&KeyValue> = Vec::new();
        let answer_bytes =
            |kv: &KeyValue| kv.key.len() + if req.keys_only { 0 } else { kv.value.len() };
        for (_, entries) in self.keys_in(&req.key, &req.range_end) {
            let Some(kv) = visible(entries, rev) else {
                continue;
            };
            count += 1;
            if (req.min_mod_revision > 0 && kv.mod_revision < req.min_mod_revision)
                || (req.max_mod_revision > 0 && kv.mod_revision > req.max_mod_revision)
                || (req.min_create_revision > 0 && kv.create_revision < req.min_create_revision)
                || (req.max_create_revision > 0 && kv.create_revision > req.max_create_revision)
            {
                continue;
            }
            matched += 1;
            if req.count_only {
                continue;
            }
            if !sorts {
                // Already in answer order: measure as it is gathered.
                if kvs.len() < order.limit {
                    budget.take(answer_bytes(kv), &self.limits)?;
                    kvs.push(kv);
                }
            } else if kvs.len() < fetch {
                kvs.push(kv);
            }
        }
        if req.count_only {
            // As etcd: no keys, so nothing was cut.
            return Ok((Vec::new(), count, false));
        }
        let more = if sorts {
            let cut = order.sort_and_cut(&mut kvs);
            for kv in &kvs {
                budget.take(answer_bytes(kv), &self.limits)?;
            }
            cut
        } else {
            matched > order.limit
        };
        Ok((kvs, count, more))
    }

    // ---- writes ----

    fn begin(&self) -> WriteCtx {
        WriteCtx {
            rev: self.revision + 1,
            events: Vec::new(),
        }
    }

    /// Ends a write: bumps the revision if anything changed and returns the
    /// revision's events for storage.
    fn finish(&mut self, ctx: WriteCtx) -> Option<Mutation> {
        if ctx.events.is_empty() {
            return None;
        }
        self.revision = ctx.rev;
        let rev = Arc::new(RevisionEvents {
            revision: ctx.rev,
            events: ctx.events,
        });
        self.log.push_back(rev.clone());
        Some(Mutation::Revision(rev))
    }

    /// Checks a put against the state before the write.
    fn check_put(&self, req: &pb::PutRequest) -> Result<(), EtcdError> {
        check_put_shape(req)?;
        if (req.ignore_value || req.ignore_lease) && self.get(&req.key, self.revision).is_none() {
            return Err(EtcdError::KeyNotFound);
        }
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(EtcdError::LeaseNotFound);
        }
        Ok(())
    }

    pub fn put(&mut self, req: &pb::PutRequest) -> Result<Outcome<pb::PutResponse>, EtcdError> {
        self.check_space(put_cost(req))?;
        self.check_put(req)?;
        let mut ctx = self.begin();
        let response = self.apply_put(&mut ctx, req);
        Ok(Outcome {
            response,
            mutations: self.finish(ctx).into_iter().collect(),
        })
    }

    fn apply_put(&mut self, ctx: &mut WriteCtx, req: &pb::PutRequest) -> pb::PutResponse {
        let prev = self.get(&req.key, ctx.rev).cloned();
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => p.value.clone(),
            _ => req.value.clone(),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let kv = KeyValue {
            key: req.key.clone(),
            create_revision: prev.as_ref().map_or(ctx.rev, |p| p.create_revision),
            mod_revision: ctx.rev,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
            value,
            lease,
        };
        self.put_kv(ctx, kv);
        pb::PutResponse {
            header: None,
            prev_kv: if req.prev_kv { prev } else { None },
        }
    }

    /// Records `kv` (whose revisions are already set) as the key's newest
    /// version, maintaining lease attachments and the event.
    fn put_kv(&mut self, ctx: &mut WriteCtx, kv: KeyValue) {
        let prev = self.get(&kv.key, ctx.rev).cloned();
        if let Some(p) = &prev
            && p.lease != 0
            && p.lease != kv.lease
            && let Some(l) = self.leases.get_mut(&p.lease)
        {
            l.keys.remove(&p.key);
        }
        if kv.lease != 0
            && let Some(l) = self.leases.get_mut(&kv.lease)
        {
            l.keys.insert(kv.key.clone());
        }
        self.push_entry(Entry {
            kv: kv.clone(),
            tombstone: false,
        });
        ctx.events.push(Event {
            r#type: EventType::Put as i32,
            kv: Some(kv),
            prev_kv: prev,
        });
    }

    fn push_entry(&mut self, entry: Entry) {
        self.space_in_use += version_cost(&entry.kv);
        let entries = self.index.entry(entry.kv.key.clone()).or_default();
        match entries.last_mut() {
            // A second change to one key within one revision replaces the
            // first, keeping mod_revisions strictly increasing.
            Some(last) if last.kv.mod_revision == entry.kv.mod_revision => {
                self.space_in_use -= version_cost(&last.kv);
                *last = entry;
            }
            _ => entries.push(entry),
        }
    }

    /// Deletes `key` if it is live; returns its last version.
    fn delete_key(&mut self, ctx: &mut WriteCtx, key: Bytes) -> Option<KeyValue> {
        let prev = self.get(&key, ctx.rev).cloned()?;
        if prev.lease != 0
            && let Some(l) = self.leases.get_mut(&prev.lease)
        {
            l.keys.remove(&key);
        }
        let tomb = KeyValue {
            key,
            mod_revision: ctx.rev,
            ..KeyValue::default()
        };
        self.push_entry(Entry {
            kv: tomb.clone(),
            tombstone: true,
        });
        ctx.events.push(Event {
            r#type: EventType::Delete as i32,
            kv: Some(tomb),
            prev_kv: Some(prev.clone()),
        });
        Some(prev)
    }

    pub fn delete_range(
        &mut self,
        req: &pb::DeleteRangeRequest,
    ) -> Result<Outcome<pb::DeleteRangeResponse>, EtcdError> {
        if req.key.is_empty() {
            return Err(EtcdError::EmptyKey);
        }
        let mut ctx = self.begin();
        let response = self.apply_delete(&mut ctx, req);
        Ok(Outcome {
            response,
            mutations: self.finish(ctx).into_iter().collect(),
        })
    }

    fn apply_delete(
        &mut self,
        ctx: &mut WriteCtx,
        req: &pb::DeleteRangeRequest,
    ) -> pb::DeleteRangeResponse {
        let keys: Vec<Bytes> = self
            .keys_in(&req.key, &req.range_end)
            .filter(|(_, e)| visible(e, ctx.rev).is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let mut prev_kvs = Vec::new();
        let mut deleted = 0;
        for key in keys {
            if let Some(prev) = self.delete_key(ctx, key) {
                deleted += 1;
                if req.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        pb::DeleteRangeResponse {
            header: None,
            deleted,
            prev_kvs,
        }
    }

    // ---- txn ----

    fn compare(&self, c: &pb::Compare, rev: i64) -> bool {
        use pb::compare::CompareTarget;
        let Ok(target) = CompareTarget::try_from(c.target) else {
            return false;
        };
        let kvs: Vec<&KeyValue> = if c.range_end.is_empty() {
            self.get(&c.key, rev).into_iter().collect()
        } else {
            self.keys_in(&c.key, &c.range_end)
                .filter_map(|(_, e)| visible(e, rev))
                .collect()
        };
        if kvs.is_empty() {
            // etcd: a missing key has no value to compare, so VALUE fails;
            // other targets compare against zero.
            if target == CompareTarget::Value {
                return false;
            }
            return compare_kv(c, target, &KeyValue::default());
        }
        kvs.iter().all(|kv| compare_kv(c, target, kv))
    }

    /// Decides every branch of `req` (and of nested txns on the taken path)
    /// against the state before the txn, as etcd does, and validates the
    /// requests on that path.
    fn plan_txn(
        &self,
        req: &pb::TxnRequest,
        path: &mut Vec<bool>,
        budget: &mut RangeBudget,
    ) -> Result<(), EtcdError> {
        let max = self.limits.max_txn_ops;
        if req.compare.len() > max || req.success.len() > max || req.failure.len() > max {
            return Err(EtcdError::TooManyOps);
        }
        let ok = req.compare.iter().all(|c| self.compare(c, self.revision));
        path.push(ok);
        let ops = if ok { &req.success } else { &req.failure };
        for op in ops {
            use pb::request_op::Request;
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    if r.key.is_empty() {
                        return Err(EtcdError::EmptyKey);
                    }
                    if r.revision > 0 {
                        self.check_read_revision(r.revision, self.revision)?;
                    }
                    // Measured against the state before the txn: its own
                    // puts may add to what the range answers at most what
                    // the request itself carries (bounded by
                    // --max-request-bytes).
                    let rev = if r.revision > 0 {
                        r.revision
                    } else {
                        self.revision
                    };
                    self.range_refs(r, rev, budget)?;
                }
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                    return Err(EtcdError::EmptyKey);
                }
                Some(Request::RequestDeleteRange(_)) => {}
                Some(Request::RequestTxn(t)) => self.plan_txn(t, path, budget)?,
                None => {}
            }
        }
        Ok(())
    }

    pub fn txn(&mut self, req: &pb::TxnRequest) -> Result<Outcome<pb::TxnResponse>, EtcdError> {
        // As etcd: a txn that may put is refused whichever branch it takes.
        let cost = txn_cost(req);
        if cost > 0 {
            self.check_space(cost)?;
        }
        // The server checks it with the request's shape, before auth, as
        // etcd; checked again here for every other caller.
        duplicates::check_duplicates(req)?;
        let mut path = Vec::new();
        let mut budget = RangeBudget::of(&self.limits);
        self.plan_txn(req, &mut path, &mut budget)?;
        let mut ctx = self.begin();
        let mut path = path.into_iter();
        let response = self.apply_txn(&mut ctx, req, &mut path);
        let mutations: Vec<Mutation> = self.finish(ctx).into_iter().collect();
        Ok(Outcome {
            response,
            mutations,
        })
    }

    fn apply_txn(
        &mut self,
        ctx: &mut WriteCtx,
        req: &pb::TxnRequest,
        path: &mut impl Iterator<Item = bool>,
    ) -> pb::TxnResponse {
        use pb::request_op::Request;
        use pb::response_op::Response;
        let succeeded = path.next().unwrap_or(false);
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    let rev = if r.revision > 0 { r.revision } else { ctx.rev };
                    // Bounded when the txn was planned.
                    let range = self.range_at(r, rev, &mut RangeBudget::unbounded());
                    Some(Response::ResponseRange(range.unwrap_or_default()))
                }
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.apply_put(ctx, p))),
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.apply_delete(ctx, d)))
                }
                Some(Request::RequestTxn(t)) => {
                    Some(Response::ResponseTxn(self.apply_txn(ctx, t, path)))
                }
                None => None,
            };
            let mut response = response;
            set_op_header(&mut response, ctx);
            responses.push(pb::ResponseOp { response });
        }
        pb::TxnResponse {
            header: None,
            succeeded,
            responses,
        }
    }

    // ---- compaction ----

    /// Discards history below `revision`. `current` is the latest durable
    /// revision; compacting beyond it is a future revision.
    pub fn compact(&mut self, revision: i64, current: i64) -> Result<Outcome<()>, EtcdError> {
        if revision <= self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        if revision > current {
            return Err(EtcdError::FutureRevision);
        }
        self.drop_compacted(revision);
        self.compact_revision = revision;
        Ok(Outcome {
            response: (),
            mutations: vec![Mutation::Compact { revision }],
        })
    }

    /// Drops the log below `revision` and every version no read at or
    /// after `revision` can see.
    fn drop_compacted(&mut self, revision: i64) {
        // Only keys changed by the revisions leaving the log (and at
        // `revision` itself) can have versions to drop: every version at or
        // above the previous compaction point has its event in the log, and
        // below it each key already keeps at most one live version. So the
        // cost is the number of events compacted, not the number of keys,
        // and automatic compaction can run in small steps on every commit.
        let mut visit: Vec<Bytes> = Vec::new();
        while self.log.front().is_some_and(|r| r.revision < revision) {
            let Some(gone) = self.log.pop_front() else {
                break;
            };
            visit.extend(
                gone.events
                    .iter()
                    .filter_map(|e| e.kv.as_ref())
                    .map(|kv| kv.key.clone()),
            );
        }
        // The events at `revision` stay (watches may start there), but the
        // versions they replaced are no longer readable.
        if let Some(at) = self.log.front().filter(|r| r.revision == revision) {
            visit.extend(
                at.events
                    .iter()
                    .filter_map(|e| e.kv.as_ref())
                    .map(|kv| kv.key.clone()),
            );
        }
        for key in visit {
            let Some(entries) = self.index.get_mut(&key) else {
                continue;
            };
            // As etcd: keep the newest version at or below `revision` (the
            // state there) unless it is a tombstone, and everything after.
            let first_after = entries.partition_point(|e| e.kv.mod_revision <= revision);
            let newest = first_after.saturating_sub(1);
            let drop_tomb = first_after > 0 && entries[newest].tombstone;
            let cut = if drop_tomb { first_after } else { newest };
            let freed: u64 = entries.drain(..cut).map(|e| version_cost(&e.kv)).sum();
            self.space_in_use -= freed;
            if entries.is_empty() {
                self.index.remove(&key);
            }
        }
    }

    // ---- watch history ----

    /// The retained events in `range` with revisions in `[from, to]`, grouped
    /// in revision order. `Err(Compacted)` if `from` is below the compaction
    /// point.
    pub fn history(&self, range: &KeyRange, from: i64, to: i64) -> Result<Vec<Event>, EtcdError> {
        if from < self.compact_revision {
            return Err(EtcdError::Compacted);
        }
        let start = self.log.partition_point(|r| r.revision < from);
        let mut out = Vec::new();
        for rev in self.log.iter().skip(start) {
            if rev.revision > to {
                break;
            }
            out.extend(
                rev.events
                    .iter()
                    .filter(|e| e.kv.as_ref().is_some_and(|kv| range.contains(&kv.key)))
                    .cloned(),
            );
        }
        Ok(out)
    }

    // ---- leases ----

    pub fn lease_grant(
        &mut self,
        id: i64,
        ttl: i64,
        now: Instant,
    ) -> Result<Outcome<(i64, i64)>, EtcdError> {
        self.check_space(LEASE_OVERHEAD)?;
        if ttl > MAX_LEASE_TTL {
            return Err(EtcdError::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(MIN_LEASE_TTL);
        let id = if id == 0 {
            loop {
                self.next_lease_id = self.next_lease_id.wrapping_add(1) & i64::MAX;
                let candidate = self.next_lease_id;
                if candidate != 0 && !self.leases.contains_key(&candidate) {
                    break candidate;
                }
            }
        } else if self.leases.contains_key(&id) {
            return Err(EtcdError::LeaseExists);
        } else {
            id
        };
        self.add_lease(
            id,
            Lease {
                ttl,
                expiry: now + secs(ttl),
                keys: BTreeSet::new(),
            },
        );
        Ok(Outcome {
            response: (id, ttl),
            mutations: vec![Mutation::LeaseGrant { id, ttl }],
        })
    }

    /// Revokes a lease, deleting its keys in one revision.
    pub fn lease_revoke(&mut self, id: i64) -> Result<Outcome<()>, EtcdError> {
        let lease = self.remove_lease(id).ok_or(EtcdError::LeaseNotFound)?;
        let mut ctx = self.begin();
        for key in lease.keys {
            self.delete_key(&mut ctx, key);
        }
        let mut mutations: Vec<Mutation> = self.finish(ctx).into_iter().collect();
        mutations.push(Mutation::LeaseRevoke { id });
        Ok(Outcome {
            response: (),
            mutations,
        })
    }

    /// Renews a lease; returns its TTL, or `None` if it does not exist or has
    /// already expired (expiry is about to revoke it).
    pub fn lease_keep_alive(&mut self, id: i64, now: Instant) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        if lease.expiry <= now {
            return None;
        }
        lease.expiry = now + secs(lease.ttl);
        Some(lease.ttl)
    }

    pub fn lease_time_to_live(&self, id: i64, now: Instant) -> Option<LeaseInfo> {
        let lease = self.leases.get(&id)?;
        let remaining = lease.expiry.saturating_duration_since(now).as_secs();
        Some(LeaseInfo {
            id,
            granted_ttl: lease.ttl,
            remaining: i64::try_from(remaining).unwrap_or(i64::MAX),
            keys: lease.keys.iter().cloned().collect(),
        })
    }

    /// Whether lease `id` exists (it may have expired, not yet revoked).
    pub fn has_lease(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Leases alive now.
    pub fn lease_count(&self) -> usize {
        self.leases.len()
    }

    pub fn lease_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Leases whose expiry is at or before `now`.
    pub fn expired_leases(&self, now: Instant) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }
}

impl crate::auth::LeaseKeys for Core {
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>> {
        self.leases
            .get(&id)
            .map(|l| l.keys.iter().cloned().collect())
    }
}

/// The checks of a put that need no state (etcd makes them before any
/// other, permissions included).
pub fn check_put_shape(req: &pb::PutRequest) -> Result<(), EtcdError> {
    if req.key.is_empty() {
        return Err(EtcdError::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(EtcdError::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(EtcdError::LeaseProvided);
    }
    Ok(())
}

/// The checks of a txn that need no state, in both branches and nested
/// txns (etcd's `checkTxnRequest`, made before permissions): sizes (a nested
/// txn gets what its parent's largest list left of `max_ops`) and missing
/// keys. (Which keys collide depends on the branch taken; the core checks
/// that on the path it takes.)
pub fn check_txn_shape(req: &pb::TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    check_txn_ops(req, max_ops)?;
    duplicates::check_duplicates(req)
}

/// [`check_txn_shape`] but for keys written twice.
fn check_txn_ops(req: &pb::TxnRequest, max_ops: usize) -> Result<(), EtcdError> {
    use pb::request_op::Request;
    let ops = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if ops > max_ops {
        return Err(EtcdError::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(EtcdError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) if r.key.is_empty() => return Err(EtcdError::EmptyKey),
            Some(Request::RequestPut(p)) => check_put_shape(p)?,
            Some(Request::RequestDeleteRange(d)) if d.key.is_empty() => {
                return Err(EtcdError::EmptyKey);
            }
            Some(Request::RequestTxn(t)) => check_txn_ops(t, max_ops - ops)?,
            _ => {}
        }
    }
    Ok(())
}

fn secs(s: i64) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// The live version in `entries` at `rev`.
fn visible(entries: &[Entry], rev: i64) -> Option<&KeyValue> {
    let i = entries.partition_point(|e| e.kv.mod_revision <= rev);
    let e = entries.get(i.checked_sub(1)?)?;
    (!e.tombstone).then_some(&e.kv)
}

fn compare_kv(c: &pb::Compare, target: pb::compare::CompareTarget, kv: &KeyValue) -> bool {
    use pb::compare::{CompareResult, CompareTarget, TargetUnion};
    use std::cmp::Ordering;
    let int = |want: Option<i64>, have: i64| have.cmp(&want.unwrap_or(0));
    let ord: Ordering = match target {
        CompareTarget::Value => {
            let want: &[u8] = match &c.target_union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            kv.value[..].cmp(want)
        }
        CompareTarget::Version => int(
            match c.target_union {
                Some(TargetUnion::Version(v)) => Some(v),
                _ => None,
            },
            kv.version,
        ),
        CompareTarget::Create => int(
            match c.target_union {
                Some(TargetUnion::CreateRevision(v)) => Some(v),
                _ => None,
            },
            kv.create_revision,
        ),
        CompareTarget::Mod => int(
            match c.target_union {
                Some(TargetUnion::ModRevision(v)) => Some(v),
                _ => None,
            },
            kv.mod_revision,
        ),
        CompareTarget::Lease => int(
            match c.target_union {
                Some(TargetUnion::Lease(v)) => Some(v),
                _ => None,
            },
            kv.lease,
        ),
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ord == Ordering::Equal,
        Ok(CompareResult::Greater) => ord == Ordering::Greater,
        Ok(CompareResult::Less) => ord == Ordering::Less,
        Ok(CompareResult::NotEqual) => ord != Ordering::Equal,
        Err(_) => false,
    }
}

/// The header of one response inside a txn, as etcd 3.4 sets it: only a
/// revision, the one the txn's view of the store had once the operation
/// was done: the revision before the txn, or the txn's own once anything in
/// it changed a key (so a range before the txn's first write, or a delete
/// that deleted nothing before it, carries the old revision). A nested
/// txn's own header is present but empty; the responses in it follow the
/// rule.
fn set_op_header(response: &mut Option<pb::response_op::Response>, ctx: &WriteCtx) {
    use pb::response_op::Response;
    let revision = if ctx.events.is_empty() {
        ctx.rev - 1
    } else {
        ctx.rev
    };
    let header = Some(pb::ResponseHeader {
        revision,
        ..Default::default()
    });
    match response {
        Some(Response::ResponseRange(r)) => r.header = header,
        Some(Response::ResponsePut(r)) => r.header = header,
        Some(Response::ResponseDeleteRange(r)) => r.header = header,
        Some(Response::ResponseTxn(t)) => t.header = Some(pb::ResponseHeader::default()),
        None => {}
    }
}

#[cfg(test)]
mod tests;

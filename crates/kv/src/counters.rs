//! The counters torc kv keeps for its `/metrics` (`crate::metrics` renders them): added to by
//! the KV service (one per request accepted) and by the commit thread (proposals, the log
//! append's duration). Relaxed atomics: a scrape may see one count a moment before another.

use std::sync::atomic::{AtomicU64, Ordering};

use torc_prom::{DurationHistogram, ETCD_DISK_BUCKETS};

/// The counters the services and the commit thread add to (in [`crate::store::Shared`]).
#[derive(Debug)]
pub(crate) struct Counters {
    pub puts: AtomicU64,
    pub deletes: AtomicU64,
    pub ranges: AtomicU64,
    pub txns: AtomicU64,
    pub proposals_committed: AtomicU64,
    pub proposals_failed: AtomicU64,
    pub wal_fsync: DurationHistogram,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            puts: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            ranges: AtomicU64::new(0),
            txns: AtomicU64::new(0),
            proposals_committed: AtomicU64::new(0),
            proposals_failed: AtomicU64::new(0),
            wal_fsync: DurationHistogram::new(ETCD_DISK_BUCKETS),
        }
    }
}

impl Counters {
    pub(crate) fn count(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }
}

//! The controller's own counters, for its `/metrics` (`http::metrics`): what persisting the
//! rack's changes costs and how often it fails. Lock-free: one relaxed add per commit.
//!
//! Counts start at zero with the process; they cover the changes this controller committed
//! while it acted (a standby commits nothing).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use torc_prom::{DurationHistogram, ETCD_DISK_BUCKETS};

#[derive(Debug)]
pub(crate) struct Stats {
    commits: AtomicU64,
    commit_failures: AtomicU64,
    /// Records (task, node, service, key ... writes) in the commits that succeeded.
    records: AtomicU64,
    commit_seconds: DurationHistogram,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            commits: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            records: AtomicU64::new(0),
            commit_seconds: DurationHistogram::new(ETCD_DISK_BUCKETS),
        }
    }
}

impl Stats {
    /// Counts one commit of `records` writes that took `took`.
    pub(crate) fn committed(&self, records: usize, took: Duration, ok: bool) {
        if ok {
            self.commits.fetch_add(1, Ordering::Relaxed);
            (self.records).fetch_add(records as u64, Ordering::Relaxed);
        } else {
            self.commit_failures.fetch_add(1, Ordering::Relaxed);
        }
        self.commit_seconds.observe(took);
    }

    pub(crate) fn write(&self, text: &mut torc_prom::Text) {
        use torc_prom::Kind::{Counter, Histogram};
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        text.family(
            "torc_controller_store_commits_total",
            Counter,
            "Changes of the rack committed to the store, by result.",
        )
        .sample(&[("result", "ok")], get(&self.commits))
        .sample(&[("result", "failed")], get(&self.commit_failures));
        text.family(
            "torc_controller_store_records_total",
            Counter,
            "Records written by the commits that succeeded.",
        )
        .sample(&[], get(&self.records));
        let mut family = text.family(
            "torc_controller_store_commit_duration_seconds",
            Histogram,
            "Time to commit one change of the rack to the store (fsync or etcd transaction included).",
        );
        self.commit_seconds.write(&mut family, &[]);
    }
}

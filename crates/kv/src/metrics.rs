//! torc kv's figures in Prometheus' text format, under etcd 3.4's metric names where etcd has
//! the figure, so dashboards and alerts written for etcd read torc kv unchanged: served by
//! `torc kv --listen-metrics-urls` (etcd's flag) through [`KvMetrics::prometheus`].
//!
//! What is counted where: the RPC counters (`etcd_mvcc_put_total`, `_delete_total`,
//! `_range_total`, `_txn_total`) by the KV service, one per request accepted (a txn's own
//! operations count in `_txn_total` only; etcd counts them in both); proposals by the commit
//! thread, one per write request made durable or refused; `etcd_disk_wal_fsync_duration_seconds`
//! times each log append with its `fdatasync` (etcd's times the fsync alone; the write before it
//! is a copy into the page cache). The gauges are read from the store when scraped.
//!
//! Not here: raft's figures (there is no raft: `etcd_server_has_leader` and `_is_leader` are
//! always 1), the keys count (`etcd_debugging_mvcc_keys_total` would walk every key under the
//! store's lock at each scrape), gRPC's per-method histograms.

use std::sync::atomic::{AtomicU64, Ordering};

use torc_prom::{Kind, Text};

use crate::store::Store;

/// Renders a running store's figures; cheap to clone. From [`crate::KvServer::metrics`].
#[derive(Clone)]
pub struct KvMetrics {
    pub(crate) store: Store,
    pub(crate) quota_bytes: u64,
}

impl KvMetrics {
    /// The store's figures in Prometheus' text format (the process's own are the caller's).
    pub fn prometheus(&self) -> String {
        let shared = &self.store.shared;
        let (revision, compacted, in_use, leases) = {
            let st = self.store.lock();
            (
                st.committed,
                st.core.compact_revision(),
                st.core.space_in_use(),
                st.core.lease_count(),
            )
        };
        let watchers = shared.watcher_count();
        let db_bytes = std::fs::metadata(&shared.db_path).map_or(0, |m| m.len());
        let c = &shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut text = Text::new();
        let mut gauge = |name: &str, help: &str, v: u64| {
            text.family(name, Kind::Gauge, help).sample(&[], v);
        };
        gauge(
            "etcd_server_has_leader",
            "Whether or not a leader exists. 1 is existence, 0 is not (torc kv: one member, always 1).",
            1,
        );
        gauge(
            "etcd_server_is_leader",
            "Whether or not this member is a leader. 1 if is, 0 otherwise (torc kv: always 1).",
            1,
        );
        gauge(
            "etcd_debugging_mvcc_current_revision",
            "The current revision of store.",
            revision.max(0) as u64,
        );
        gauge(
            "etcd_debugging_mvcc_compact_revision",
            "The revision of the last compaction in store.",
            compacted.max(0) as u64,
        );
        gauge(
            "etcd_mvcc_db_total_size_in_bytes",
            "Total size of the underlying database physically allocated in bytes.",
            db_bytes,
        );
        gauge(
            "etcd_mvcc_db_total_size_in_use_in_bytes",
            "Total size of the underlying database logically in use in bytes (what the quota counts).",
            in_use,
        );
        gauge(
            "etcd_server_quota_backend_bytes",
            "Current backend storage quota size in bytes.",
            self.quota_bytes,
        );
        gauge(
            "etcd_debugging_mvcc_watcher_total",
            "Total number of watchers.",
            watchers as u64,
        );
        // A gauge in etcd (raft's committed index), named `_total`: kept as etcd has it.
        gauge(
            "etcd_server_proposals_committed_total",
            "The total number of consensus proposals committed (torc kv: writes made durable).",
            get(&c.proposals_committed),
        );
        gauge("torc_kv_leases", "Leases alive now.", leases as u64);
        for (name, help, counter) in [
            (
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
                &c.puts,
            ),
            (
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
                &c.deletes,
            ),
            (
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
                &c.ranges,
            ),
            (
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
                &c.txns,
            ),
            (
                "etcd_server_proposals_failed_total",
                "The total number of failed proposals seen (torc kv: writes refused by a failed commit).",
                &c.proposals_failed,
            ),
        ] {
            text.family(name, Kind::Counter, help)
                .sample(&[], get(counter));
        }
        let mut family = text.family(
            "etcd_disk_wal_fsync_duration_seconds",
            Kind::Histogram,
            "The latency distributions of fsync called by WAL (torc kv: the log append with its fdatasync).",
        );
        c.wal_fsync.write(&mut family, &[]);
        text.into_string()
    }
}

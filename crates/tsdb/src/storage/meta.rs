//! The store's metadata and settings: [`Options`], the catalog of databases, retention
//! policies and users as `meta.json` holds it ([`MetaFile`], its version and its bytes), and
//! the `FORMAT` texts of a data directory.
//! What it does not do: read or replace the file (see [`super::tsdb`]), or change the
//! catalog (see [`super::catalog`] and [`crate::users`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::influxql::Privilege;
use crate::names::{self, NameKind};

/// `FORMAT` of a directory whose database and retention policy directories are all names in
/// hex (every name up to 127 bytes).
pub const FORMAT_TEXT: &str = "torc-tsdb 1";
/// `FORMAT` once a longer name has its (hashed) directory: see [`crate::names::dir_name`].
pub const FORMAT_TEXT_LONG_NAMES: &str = "torc-tsdb 2";

/// Tunables.
#[derive(Debug, Clone)]
pub struct Options {
    /// Maximum number of series per database (InfluxDB's `max-series-per-database`); 0 = no limit.
    pub max_series_per_database: usize,
    /// Flush the heads to segments when they hold this many values.
    pub flush_values: usize,
    /// Compact a shard's segments into one when it has more than this many.
    pub max_segments: usize,
    /// InfluxDB's `[http] auth-enabled`: requests must authenticate once an admin user exists
    /// (see [`crate::auth`]).
    pub auth_enabled: bool,
    /// InfluxDB's `max-select-point`: most points a `SELECT` may read (and `GROUP BY time`
    /// buckets it may build), see [`crate::limits`]; 0 = no limit.
    pub max_select_point: usize,
    /// InfluxDB's `max-select-series`: most series a `SELECT` may read; 0 = no limit.
    pub max_select_series: usize,
    /// InfluxDB's `max-select-buckets`: most `GROUP BY time` buckets per group; 0 = no limit.
    pub max_select_buckets: usize,
    /// InfluxDB's `query-timeout`: longest a `/query` request may run; zero = no limit.
    pub query_timeout: std::time::Duration,
    /// InfluxDB's `[retention] check-interval`: how often data past its retention policy is
    /// dropped (default, as influxd's, 30 minutes).
    pub retention_check_interval: std::time::Duration,
    /// InfluxDB's `[continuous_queries] run-interval`: how often continuous queries are checked
    /// (each runs at its own interval; default, as influxd's, 1 s).
    pub cq_run_interval: std::time::Duration,
}

impl Default for Options {
    /// influxd 1.6 sets no query limit; torc does, because a rack's services must not grow
    /// without bound. A point costs a query about 100 bytes while it runs (its column, its row
    /// slot, its result cell), so 10 million points bound a query near 1 GB; the rack's
    /// interactive queries (a day of one-second samples of a few dozen series) read well under
    /// a million. 100,000 series is ten times a large rack's. A million buckets is a day and a
    /// half at one-second resolution per group (torc refused more before these settings
    /// existed). A minute is far longer than any interactive query and frees a server thread
    /// that a runaway query would hold.
    fn default() -> Self {
        Options {
            max_series_per_database: 1_000_000,
            flush_values: 20_000_000,
            max_segments: 8,
            auth_enabled: false,
            max_select_point: 10_000_000,
            max_select_series: 100_000,
            max_select_buckets: 1_000_000,
            query_timeout: std::time::Duration::from_secs(60),
            retention_check_interval: std::time::Duration::from_secs(30 * 60),
            cq_run_interval: std::time::Duration::from_secs(1),
        }
    }
}

impl Options {
    /// The query limits of these options.
    pub fn query_limits(&self) -> crate::limits::QueryLimits {
        crate::limits::QueryLimits {
            max_select_point: self.max_select_point,
            max_select_series: self.max_select_series,
            max_select_buckets: self.max_select_buckets,
            query_timeout: self.query_timeout,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RpMeta {
    /// 0 = infinite.
    pub duration_ns: i64,
    pub shard_group_ns: i64,
    pub replication: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DbMeta {
    pub default_rp: String,
    pub rps: BTreeMap<String, RpMeta>,
    /// In creation order. Absent (none) in files written before torc had them.
    /// TODO-correctness: an older torc reading this file keeps the field's absence in mind
    /// only: its next catalog change writes the file without the queries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub continuous_queries: Vec<CqMeta>,
}

/// A continuous query as stored: its name and its normalized statement (influxd keeps the
/// text too, and parses it again to run it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CqMeta {
    pub name: String,
    pub query: String,
}

/// A user as stored in `meta.json` (the catalog's rules are in [`crate::users`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserMeta {
    pub name: String,
    /// bcrypt hash of the password.
    pub hash: String,
    pub admin: bool,
    #[serde(default)]
    pub privileges: BTreeMap<String, Privilege>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct MetaFile {
    pub(super) version: u32,
    pub(crate) databases: BTreeMap<String, DbMeta>,
    /// In creation order (`SHOW USERS` lists them so). Absent in version 1 files.
    #[serde(default)]
    pub(crate) users: Vec<UserMeta>,
}

impl MetaFile {
    pub(super) fn database_mut(&mut self, db: &str) -> Result<&mut DbMeta, Error> {
        self.databases
            .get_mut(db)
            .ok_or_else(|| Error::DatabaseNotFound(db.to_string()))
    }
}

/// The metadata format written; [`META_VERSION_NO_USERS`] is read too.
pub(super) const META_VERSION: u32 = 2;
pub(super) const META_VERSION_NO_USERS: u32 = 1;

/// Default shard group duration for a retention duration, as InfluxDB picks it.
pub fn shard_group_for(duration_ns: i64) -> i64 {
    const H: i64 = 3_600_000_000_000;
    if duration_ns > 0 && duration_ns < 2 * 24 * H {
        H
    } else if duration_ns > 0 && duration_ns <= 180 * 24 * H {
        24 * H
    } else {
        7 * 24 * H
    }
}

/// `meta.json`'s contents for `m`.
pub(super) fn meta_bytes(m: &MetaFile) -> Result<Vec<u8>, Error> {
    serde_json::to_vec_pretty(m).map_err(|e| Error::Encode(Arc::new(e)))
}

/// One warning per database or retention policy name in the metadata that this version would
/// refuse to create (see [`crate::names`]).
pub(super) fn refused_names(dbs: &[(String, Vec<String>)]) -> Vec<String> {
    let mut out = Vec::new();
    for (db, rps) in dbs {
        let mut refused: Vec<(NameKind, &str)> = Vec::new();
        if names::check_name(NameKind::Database, db).is_err() {
            refused.push((NameKind::Database, db));
        }
        for rp in rps {
            if names::check_name(NameKind::RetentionPolicy, rp).is_err() {
                refused.push((NameKind::RetentionPolicy, rp));
            }
        }
        for (kind, name) in refused {
            out.push(format!(
                "the name of {kind} {} ({} bytes) is longer than the {} bytes this version accepts for a new one; it is served as it is{}",
                names::preview(name),
                name.len(),
                names::MAX_NAME_LEN,
                if kind == NameKind::Database {
                    ", and DROP DATABASE removes it"
                } else {
                    ", and DROP RETENTION POLICY removes it"
                }
            ));
        }
    }
    out
}

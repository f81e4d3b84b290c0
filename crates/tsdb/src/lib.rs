//! torc tsdb: an InfluxDB-compatible time-series database (library).
//!
//! What it is: a single-node store that speaks InfluxDB's 1.x HTTP API (line protocol writes,
//! InfluxQL queries) and the 0.8 `/db/<db>/series` API the original ToRC data plane used.
//! Users and authentication are influxd 1.6's (`[http] auth-enabled`, see [`auth`] and
//! [`users`]), off unless [`Options::auth_enabled`].
//! It serves HTTPS when given a certificate ([`serve_tls`], influxd's `https-enabled`).
//! What it is not: a cluster, or a full InfluxQL (no `sample`, `elapsed` and `holt_winters`:
//! asking for one is an error). Retention policies are enforced on influxd's schedule, and
//! continuous queries and `SELECT ... INTO` run as influxd's do (see [`cq`]). `DROP SERIES`,
//! `DELETE` and `DROP MEASUREMENT` are supported (durable, see [`storage`]), and so are
//! subqueries (`FROM (SELECT ...)`, see [`exec`]); `/write` accepts gzip bodies and `/query`
//! answers gzip to clients that accept it.
//!
//! Code map:
//! * [`lineproto`]: line-protocol parser (InfluxDB 1.6 error texts);
//! * [`names`]: limits on names and the directory names of databases;
//! * [`storage`]: databases, retention policies, shards; [`wal`]: the group-commit WAL;
//!   [`segment`] + [`encoding`]: immutable compressed blocks;
//! * [`influxql`]: parser; [`exec::plan`]: the pure planner of a `SELECT` (functions resolved to
//!   [`exec::term::Function`]); [`exec`]: execution of statements and plans, bounded by
//!   [`limits`]; [`json`]: Go-compatible output;
//! * [`backup`]: the backup file (a consistent cut streamed, checked when read); [`restore`]:
//!   a backup restored into a store (running or not);
//! * [`v08`]: the 0.8 shim; [`http`]: the axum router and [`serve`]; [`form`]: URL query and
//!   form decoding; [`sched`]: a scheduling hint for query threads;
//! * [`users`]: the user catalog; [`password`]: bcrypt, bounded, and the cache of verified
//!   passwords; [`auth`]: credentials and privileges per request;
//! * layers, each using only those below it (`cargo test -p torc-test-utils --test
//!   module_cycles` checks that no two modules import each other): [`http`] over [`cq`] (the
//!   continuous-query service), [`restore`] over [`backup`], and [`v08`], over
//!   [`json`] over [`exec`] (its [`exec::QueryError`] and answers' [`exec::Val`] below it) over
//!   [`auth`] over [`users`] over [`storage`] over [`password`], [`wal`], [`segment`] and the
//!   leaves ([`influxql`], [`lineproto`], [`model`], [`names`], [`limits`], [`error`], ...);
//! * `fuzzing`: the checks of the fuzz targets in `tests/fuzz.rs` (not API);
//! * errors are enums carrying their cause: [`Error`] (storage, with [`error::Damage`] and
//!   [`error::Poison`]), [`exec::QueryError`] (a statement), [`lineproto::BadLine`],
//!   [`influxql::ParseError`], [`auth::QueryDenied`], [`v08::V08Error`]; their texts are
//!   influxd's where influxd has one, byte for byte.
//!
//! Invariants (details in each module): an acknowledged write is durable (WAL fsync before the
//! answer), and so is an acknowledged user change (`meta.json` replaced atomically); storage
//! fails closed (unknown format versions and damaged files refuse to open, a failed fsync or a
//! failed write of `meta.json` makes the store refuse writes until a restart); a deletion, once acknowledged, is never undone by a crash, a
//! restart or a compaction; no request bytes can panic the server, and a gzip body is bounded
//! by its inflated size; with authentication enabled, bcrypt work is bounded (see [`auth`]).
//! A backup holds every write acknowledged before it was asked for and nothing unacknowledged;
//! a restore changes nothing unless the whole file checks, never overwrites a database, and is
//! durable once answered (see [`backup`], [`restore`]).
//! No input changes state on a GET (see [`http`]), overflows the stack (expression trees and
//! subqueries are bounded in [`influxql`]), makes work superlinear in a line's fields (see
//! [`model::positions`]), or runs a query past its [`limits`]; names are checked before they
//! reach the disk ([`names`]).

pub mod auth;
pub mod backup;
pub mod cq;
pub mod encoding;
pub mod error;
pub mod exec;
pub mod form;
/// Not API: entry points for the fuzz targets of `tests/fuzz.rs`.
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod influxql;
pub mod json;
pub mod limits;
pub mod lineproto;
pub mod metrics;
pub mod model;
pub mod names;
pub mod password;
pub mod restore;
pub mod sched;
pub mod segment;
pub mod storage;
pub mod timefmt;
pub mod users;
pub mod v08;
pub mod wal;

pub use error::Error;
pub use http::{router, serve, serve_tls};
pub use storage::{Options, Tsdb};

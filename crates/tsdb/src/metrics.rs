//! `GET /metrics`: the database's own figures in Prometheus' text format (influxd 1.6 has no
//! such endpoint; its `/debug/vars` is expvar JSON). Behind the same authentication as
//! `/query` when users are enabled; a read that changes nothing.
//!
//! What is counted where: `/write` and `/query` requests by result and their durations by a
//! layer around those routes ([`count_requests`]), points taken by the write handler; the
//! gauges (databases, shards, bytes and values in segments) are read when scraped.
//!
//! Not here: per-database or per-measurement figures (labels a client could grow without
//! bound), the WAL's own timings.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use torc_prom::{DurationHistogram, ETCD_DISK_BUCKETS, Kind, Text};

use crate::storage::Tsdb;

/// What the HTTP layer counts (shared by the routes as an extension).
#[derive(Debug)]
pub struct Counters {
    /// `[write, query]` requests answered 2xx, 4xx, 5xx.
    requests: [[AtomicU64; 3]; 2],
    points: AtomicU64,
    seconds: [DurationHistogram; 2],
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            requests: Default::default(),
            points: AtomicU64::new(0),
            seconds: [
                DurationHistogram::new(ETCD_DISK_BUCKETS),
                DurationHistogram::new(ETCD_DISK_BUCKETS),
            ],
        }
    }
}

impl Counters {
    /// Counts `n` points taken by a write.
    pub(crate) fn points_written(&self, n: usize) {
        self.points.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Counts a `/write` or `/query` request by its answer's status class and times it.
pub(crate) async fn count_requests(
    State(counters): State<Arc<Counters>>,
    req: Request,
    next: Next,
) -> Response {
    let kind = usize::from(req.uri().path() != "/write");
    let began = std::time::Instant::now();
    let response = next.run(req).await;
    let class = match response.status().as_u16() {
        ..400 => 0,
        400..500 => 1,
        _ => 2,
    };
    counters.requests[kind][class].fetch_add(1, Ordering::Relaxed);
    counters.seconds[kind].observe(began.elapsed());
    response
}

/// The `/metrics` answer.
pub(crate) async fn serve(
    State(db): State<Arc<Tsdb>>,
    axum::Extension(counters): axum::Extension<Arc<Counters>>,
) -> Response {
    let text = crate::storage::blocking(move || render(&db, &counters));
    ([(header::CONTENT_TYPE, torc_prom::CONTENT_TYPE)], text).into_response()
}

fn render(db: &Tsdb, c: &Counters) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut text = Text::new();
    for (i, (name, help)) in [
        (
            "torc_tsdb_write_requests_total",
            "`/write` requests by the class of their answer.",
        ),
        (
            "torc_tsdb_query_requests_total",
            "`/query` requests by the class of their answer.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut family = text.family(name, Kind::Counter, help);
        for (j, class) in ["2xx", "4xx", "5xx"].into_iter().enumerate() {
            family.sample(&[("code", class)], get(&c.requests[i][j]));
        }
    }
    text.family(
        "torc_tsdb_points_written_total",
        Kind::Counter,
        "Points taken by `/write` requests.",
    )
    .sample(&[], get(&c.points));
    for (i, (name, help)) in [
        (
            "torc_tsdb_write_duration_seconds",
            "Time to answer a `/write` request.",
        ),
        (
            "torc_tsdb_query_duration_seconds",
            "Time to answer a `/query` request.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        c.seconds[i].write(&mut text.family(name, Kind::Histogram, help), &[]);
    }
    let (bytes, values) = db.disk_usage();
    text.family("torc_tsdb_databases", Kind::Gauge, "Databases.")
        .sample(&[], db.databases().len());
    text.family(
        "torc_tsdb_shards",
        Kind::Gauge,
        "Shards over every database and retention policy.",
    )
    .sample(&[], db.shard_count());
    text.family(
        "torc_tsdb_segment_bytes",
        Kind::Gauge,
        "Bytes of the flushed segments on disk.",
    )
    .sample(&[], bytes);
    text.family(
        "torc_tsdb_segment_values",
        Kind::Gauge,
        "Values stored in flushed segments.",
    )
    .sample(&[], values);
    torc_prom::process(&mut text);
    text.into_string()
}

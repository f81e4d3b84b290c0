//! Line-protocol cost per field as lines get wider: 1k, 8k and 64k fields in one line, parsed
//! (`lineproto::parse`) and then stored (`Tsdb::write` of the parsed point, a new series and
//! then a second point of it). Prints figures and the growth ratios against 1k fields; linear
//! work grows 8x and 64x. Not a test: run it with `bench/tsdb.sh parse` (or `cargo bench -p
//! torc-tsdb --bench lineproto_fields`), on a quiet machine if the figures matter.

use std::time::{Duration, Instant};

use torc_tsdb::lineproto::{Precision, parse};

/// The torc binary's allocator, so the figures are what ships.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Fields per line; `FIELDS=1000,2000,...` in the environment asks for others.
fn sizes() -> Vec<usize> {
    std::env::var("FIELDS")
        .ok()
        .and_then(|v| v.split(',').map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 8_000, 64_000])
}

fn line(fields: usize, t: i64) -> String {
    let mut s = String::with_capacity(fields * 16);
    s.push_str("wide,host=a ");
    for i in 0..fields {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("field_{i}={i}.5"));
    }
    s.push_str(&format!(" {t}"));
    s
}

/// The best of `runs` timings of `f` (the least disturbed by the machine's other work).
fn best(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap_or_default()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let sizes = sizes();
    let mut rows = Vec::new();
    for &n in &sizes {
        let body = line(n, 1);
        let runs = if n >= 64_000 { 5 } else { 20 };
        let parse_t = best(runs, || {
            let started = Instant::now();
            let parsed = parse(body.as_bytes(), Precision::Nanos, 0);
            let took = started.elapsed();
            assert_eq!(parsed.points[0].fields.len(), n);
            took
        });
        // Stored: a new series (its columns are created), then a second point of it.
        let store_t = best(runs.min(5), || {
            let dir = tempfile::tempdir().expect("tempdir");
            let db =
                torc_tsdb::Tsdb::open(dir.path(), torc_tsdb::Options::default()).expect("open");
            db.create_database("b").expect("create");
            let mut took = Duration::ZERO;
            for t in [1, 2] {
                let points = parse(line(n, t).as_bytes(), Precision::Nanos, 0).points;
                let started = Instant::now();
                rt.block_on(db.write("b", None, points)).expect("write");
                took += started.elapsed();
            }
            took / 2
        });
        rows.push((n, parse_t, store_t));
    }
    println!("line protocol, one line of N fields (best of several runs)");
    println!(
        "{:>7} {:>12} {:>10} {:>8} {:>12} {:>10} {:>8}",
        "fields", "parse", "ns/field", "ratio", "store", "ns/field", "ratio"
    );
    let (n0, p0, s0) = rows[0];
    for &(n, p, s) in &rows {
        println!(
            "{n:>7} {:>12?} {:>10.1} {:>8.1} {:>12?} {:>10.1} {:>8.1}",
            p,
            p.as_nanos() as f64 / n as f64,
            p.as_secs_f64() / p0.as_secs_f64(),
            s,
            s.as_nanos() as f64 / n as f64,
            s.as_secs_f64() / s0.as_secs_f64(),
        );
    }
    let growth: Vec<String> = sizes
        .iter()
        .skip(1)
        .map(|n| format!("{}x", n / n0))
        .collect();
    println!("linear growth is {} the {n0}-field time", growth.join(", "));
}

//! Points with many fields cost time linear in their fields (issue 14: one line with 8x more
//! fields took 55x longer). The bounds are generous (a debug build on a shared machine does
//! each case in well under a second); quadratic work on these sizes takes minutes.
//! `bench/tsdb.sh parse` prints the scaling itself.

mod common;

use std::time::{Duration, Instant};

use torc_tsdb::lineproto::{Precision, parse};
use torc_tsdb::model::FieldValue;

const BOUND: Duration = Duration::from_secs(20);

fn line(fields: usize, distinct: usize) -> String {
    let mut s = String::from("m,host=a ");
    for i in 0..fields {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!("field_{}={i}i", i % distinct));
    }
    s.push_str(" 1000");
    s
}

#[test]
fn parsing_is_linear_in_fields() {
    let n = 200_000;
    for distinct in [n, 1000] {
        let body = line(n, distinct);
        let started = Instant::now();
        let parsed = parse(body.as_bytes(), Precision::Nanos, 0);
        let took = started.elapsed();
        assert!(parsed.errors.is_empty(), "{:?}", parsed.errors.first());
        let p = &parsed.points[0];
        assert_eq!(p.fields.len(), distinct);
        // Later duplicates win; a key keeps the place of its first occurrence.
        assert_eq!(p.fields[0].0, "field_0");
        let last = ((n - 1) / distinct * distinct) as i64;
        assert_eq!(p.fields[0].1, FieldValue::Int(last));
        assert!(
            took < BOUND,
            "{n} fields ({distinct} distinct) took {took:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_points_are_stored_and_read_in_linear_time() {
    let torc = common::TorcServer::start().await;
    let (s, b) = common::query(&torc.url(), "", "CREATE DATABASE d").await;
    assert_eq!(s, 200, "{b}");
    let n = 50_000;
    let started = Instant::now();
    // A new series, then a second point of it (its fields are in the head by then).
    for t in [1, 2] {
        let body = line(n, n).replace(" 1000", &format!(" {t}"));
        let (s, b) = common::write(&torc.url(), "d", "s", &body).await;
        assert_eq!(s, 204, "{b}");
    }
    let check = |b: &str| {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        let series = &v["results"][0]["series"][0];
        assert_eq!(series["columns"].as_array().map(Vec::len), Some(n + 2));
        assert_eq!(series["values"].as_array().map(Vec::len), Some(2));
    };
    let (s, b) = common::query(&torc.url(), "d", "SELECT * FROM m").await;
    assert_eq!(s, 200, "{}", &b[..b.len().min(300)]);
    check(&b);
    // Again from segments.
    let torc = torc.restart().await;
    let (s, b) = common::query(&torc.url(), "d", "SELECT * FROM m").await;
    assert_eq!(s, 200, "{}", &b[..b.len().min(300)]);
    check(&b);
    let took = started.elapsed();
    assert!(took < 3 * BOUND, "{n} fields took {took:?}");
    torc.stop().await;
}

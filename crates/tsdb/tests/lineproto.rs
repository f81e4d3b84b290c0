//! Data-driven line-protocol tests: `tests/data/lineproto/*.txt`, cases separated by `====`;
//! input body, `----`, expected points (`{:?}`) and errors, one per line. `TSDB_BLESS=1`
//! rewrites the expectations.

mod common;

use std::fmt::Write;

use torc_tsdb::lineproto::{Precision, parse};

fn render(body: &str) -> String {
    let p = parse(body.as_bytes(), Precision::Nanos, 1_000);
    let mut out = String::new();
    for pt in &p.points {
        let _ = writeln!(out, "{pt:?}");
    }
    for e in &p.errors {
        let _ = writeln!(out, "error: {e}");
    }
    out
}

#[test]
fn lineproto_cases() {
    common::run_cases("lineproto", 1, render);
}

#[test]
fn random_bytes_never_panic() {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    for _ in 0..3000 {
        let len = (x % 64) as usize;
        let mut b = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.push(b"ab=, \"\\\n0i.1tf-e#"[(x % 17) as usize]);
        }
        let _ = parse(&b, Precision::Seconds, 0);
    }
}

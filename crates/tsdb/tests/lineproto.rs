//! Data-driven line-protocol tests: `tests/data/lineproto/*.txt`, cases separated by `====`;
//! input body, `----`, expected points (`{:?}`) and errors, one per line. `TSDB_BLESS=1`
//! rewrites the expectations.

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
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/lineproto");
    let bless = std::env::var_os("TSDB_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut failures = String::new();
    let mut n = 0;
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
    {
        let text = std::fs::read_to_string(f).unwrap();
        let mut blessed = Vec::new();
        for case in text.split("\n====\n") {
            let (input, expected) = case.split_once("\n----\n").unwrap_or((case, ""));
            let got = render(input);
            n += 1;
            if bless {
                blessed.push(format!("{input}\n----\n{}", got.trim_end()));
            } else if got.trim() != expected.trim() {
                let _ = writeln!(
                    failures,
                    "{}: {input}\n  expected: {}\n  got:      {}",
                    f.display(),
                    expected.trim(),
                    got.trim()
                );
            }
        }
        if bless {
            std::fs::write(f, blessed.join("\n====\n") + "\n").unwrap();
        }
    }
    assert!(n > 0);
    assert!(failures.is_empty(), "{failures}");
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

//! Data-driven InfluxQL parser tests: each `tests/data/influxql/*.txt` holds cases separated by
//! a line `====`; a case is the query, a line `----`, then the expected output: the AST in
//! `{:?}` form, or `error: <text>`. Set `TSDB_BLESS=1` to rewrite the expectations.

use std::fmt::Write;

fn render(q: &str) -> String {
    match torc_tsdb::influxql::parse_query(q) {
        Ok(stmts) => stmts
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn influxql_cases() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/influxql");
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
            let (q, expected) = case.split_once("\n----\n").unwrap_or((case, ""));
            let q = q.trim_end_matches('\n');
            let got = render(q);
            n += 1;
            if bless {
                blessed.push(format!("{q}\n----\n{got}"));
            } else if got.trim() != expected.trim() {
                let _ = writeln!(
                    failures,
                    "{}: {q}\n  expected: {}\n  got:      {got}",
                    f.display(),
                    expected.trim()
                );
            }
        }
        if bless {
            std::fs::write(f, blessed.join("\n====\n") + "\n").unwrap();
        }
    }
    assert!(n > 0, "no cases found");
    assert!(failures.is_empty(), "{failures}");
}

//! Data-driven tests of the pure planner (`exec::plan::plan`): each `tests/data/plan/*.txt`
//! holds cases separated by a line `====`; a case is one SELECT, a line `----`, then the
//! expected plan as text (see `SelectPlan`'s `Display`) or `error: <text>` (influxd 1.6's
//! text where it has one). `now` is fixed at 2023-11-14T22:13:20Z, so `now()` in a case is
//! that time. Set `TSDB_BLESS=1` to rewrite the expectations.

use std::fmt::Write;

use torc_tsdb::influxql::{Statement, parse_query};

/// The planner's `now` in every case: 1,700,000,000 s after the epoch.
const NOW: i64 = 1_700_000_000_000_000_000;

fn render(q: &str) -> String {
    let stmt = match parse_query(q) {
        Ok(mut stmts) if stmts.len() == 1 => stmts.remove(0),
        Ok(_) => return "not one statement".into(),
        Err(e) => return format!("parse error: {e}"),
    };
    let Statement::Select(sel) = stmt else {
        return "not a SELECT".into();
    };
    match torc_tsdb::exec::plan::plan(&sel, NOW) {
        Ok(p) => p.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

#[test]
fn plan_cases() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/plan");
    let bless = std::env::var_os("TSDB_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut failures = String::new();
    let mut n = 0;
    for f in &files {
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
                    "{}: {q}\n  expected:\n{}\n  got:\n{got}",
                    f.display(),
                    expected.trim()
                );
            }
        }
        if bless {
            std::fs::write(f, blessed.join("\n====\n") + "\n").unwrap();
        }
    }
    assert!(n >= 20, "only {n} cases found");
    assert!(failures.is_empty(), "{failures}");
}

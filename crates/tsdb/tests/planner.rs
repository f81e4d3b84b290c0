//! Data-driven tests of the pure planner (`exec::plan::plan`): each `tests/data/plan/*.txt`
//! holds cases separated by a line `====`; a case is one SELECT, a line `----`, then the
//! expected plan as text (see `SelectPlan`'s `Display`) or `error: <text>` (influxd 1.6's
//! text where it has one). `now` is fixed at 2023-11-14T22:13:20Z, so `now()` in a case is
//! that time. Set `TSDB_BLESS=1` to rewrite the expectations.

mod common;

use torc_tsdb::influxql::{Statement, parse_query};

/// The planner's `now` in every case: 1,700,000,000 s after the epoch.
const NOW: i64 = 1_700_000_000_000_000_000;

fn render(q: &str) -> String {
    let q = q.trim_end_matches('\n');
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
    common::run_cases("plan", 20, render);
}

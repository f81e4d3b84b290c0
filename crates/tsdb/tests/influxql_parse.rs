//! Data-driven InfluxQL parser tests: each `tests/data/influxql/*.txt` holds cases separated by
//! a line `====`; a case is the query, a line `----`, then the expected output: the AST in
//! `{:?}` form, or `error: <text>`. Set `TSDB_BLESS=1` to rewrite the expectations.

mod common;

fn render(q: &str) -> String {
    let q = q.trim_end_matches('\n');
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
    common::run_cases("influxql", 1, render);
}

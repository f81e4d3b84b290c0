//! InfluxQL statement execution against the storage engine.
//!
//! Semantics follow InfluxDB 1.6 where torc's differential test checks them: raw rows merge the
//! group's series by time, rows of one time in the order of influxd's iterator heap (`merge`;
//! aggregates read them by time and series key);
//! `GROUP BY time` buckets start at the lower time bound (or the group's earliest point) and end
//! at the upper bound (or now); `first`/`last` break timestamp ties by the larger value,
//! `min`/`max` break value ties by the earlier time; `count` of an empty `GROUP BY time` bucket
//! is 0, while without an interval a count over no values is null.
//!
//! A subquery runs first; its rows are held in an in-memory shard ([`crate::storage::Shard::in_memory`]) and the
//! outer query reads that like stored data: an inner query without a time condition gets the
//! outer one's range, the rows of a raw inner query keep their series' tags, the outer time
//! range does not cut the inner rows again, and `SELECT *` names the inner columns only.
//! `DROP SERIES` / `DELETE` / `DROP MEASUREMENT` resolve their condition to series keys per
//! shard and hand them to [`Tsdb::delete`]. `top`/`bottom` (with tag arguments and bare fields
//! or tags beside them) pick several points per bucket and show each at its own time. Math
//! functions (`round`, `abs`, `log`, ...) apply per row or to aggregates; `cumulative_sum` and
//! `moving_average` are transforms like `derivative`. A single selector (written once or more,
//! perhaps inside math) is shown at its point's time without `GROUP BY time`, and bare fields
//! and tags beside it are that point's; `distinct(x)` answers a row per distinct value of a
//! bucket; `func(*)` is one column `func_field` per field of a type `func` takes; a binary
//! expression's column is named by its references and calls joined by `_` (`max_min`). A 1.6
//! function torc does not evaluate is an error, never a column of nulls.
//!
//! Every request runs under a [`Budget`] ([`crate::limits`]): points, series and buckets per
//! statement, and the request's deadline, checked as the work goes (per series, every few
//! thousand rows), so a query past `query-timeout` stops computing.
//!
//! Invariants: execution never panics on user input; a statement that fails yields an error
//! for that statement only, and the statements after it do not run.
//!
//! Code map (each module's doc says what it does and does not do; each uses only those
//! below it, no two import each other):
//! * this module: the statement loop ([`execute`]) and the dispatch of one statement;
//! * `show`, `catalog`, `continuous`, `delete`, `users`: the statements other than `SELECT`;
//!   `into`: what a `SELECT ... INTO` answered, written back as points;
//! * `select`: `SELECT`, its sources (subqueries included), checks, wildcards, series
//!   grouping and raw projection; `aggregate`: buckets, `top`/`bottom`, fill;
//! * `rows`: a group's rows; `merge`: the order influxd merges a raw query's series in;
//!   `eval`: row expressions; `cond`: conditions on tags and the
//!   time range; `functions`: the functions of InfluxQL and their arithmetic;
//! * `sources`: databases and measurements; `error`: [`QueryError`]; `value`: answers.

use crate::auth::Caller;
use crate::influxql::Statement;
use crate::limits::Budget;
use crate::model::Values;
use crate::storage::Tsdb;

mod aggregate;
mod catalog;
mod cond;
mod continuous;
mod delete;
mod error;
mod eval;
mod functions;
mod into;
mod merge;
pub mod plan;
mod rows;
mod select;
mod show;
mod sources;
pub mod term;
mod users;
mod value;

use error::ExecResult;
pub use error::QueryError;
pub use show::go_duration;
pub use value::{ResultSeries, Val};

/// The result of one statement.
#[derive(Debug, Clone, Default)]
pub struct StatementResult {
    pub series: Vec<ResultSeries>,
    pub error: Option<QueryError>,
}
/// Executes parsed statements in order (InfluxDB stops at the first failing statement).
pub async fn execute(
    db: &Tsdb,
    stmts: &[Statement],
    default_db: Option<&str>,
) -> Vec<StatementResult> {
    execute_as(db, stmts, default_db, &Caller::Open).await
}

/// As [`execute`], for `caller`, whom [`crate::auth::authorize_query`] has let run `stmts`:
/// `SHOW DATABASES` lists only what the caller may read or write.
pub async fn execute_as(
    db: &Tsdb,
    stmts: &[Statement],
    default_db: Option<&str>,
    caller: &Caller,
) -> Vec<StatementResult> {
    // The time limit is the request's; the point and series counts are each statement's.
    let budget = Budget::new(db.options().query_limits());
    let mut out = Vec::new();
    for s in stmts {
        let r = match budget.start_statement() {
            Ok(()) => execute_one(db, s, default_db, caller, &budget).await,
            Err(e) => Err(e.into()),
        };
        // A read that ends past the deadline is answered as one stopped at it; a change that
        // ran is reported as done.
        let r = match r {
            Ok(series) if s.is_read_only() => budget
                .check_time()
                .map(|()| series)
                .map_err(QueryError::from),
            r => r,
        };
        let failed = r.is_err();
        out.push(match r {
            Ok(series) => StatementResult {
                series,
                error: None,
            },
            Err(e) => StatementResult {
                series: Vec::new(),
                error: Some(e),
            },
        });
        if failed {
            break;
        }
    }
    out
}

async fn execute_one(
    db: &Tsdb,
    stmt: &Statement,
    default_db: Option<&str>,
    caller: &Caller,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    match stmt {
        Statement::ShowUsers
        | Statement::ShowGrants { .. }
        | Statement::CreateUser { .. }
        | Statement::DropUser { .. }
        | Statement::SetPassword { .. }
        | Statement::Grant { .. }
        | Statement::GrantAdmin { .. }
        | Statement::Revoke { .. }
        | Statement::RevokeAdmin { .. } => users::execute(db, stmt).await,
        Statement::CreateDatabase { .. }
        | Statement::DropDatabase { .. }
        | Statement::CreateRetentionPolicy { .. }
        | Statement::AlterRetentionPolicy { .. }
        | Statement::DropRetentionPolicy { .. } => catalog::execute(db, stmt).await,
        Statement::DropMeasurement { .. }
        | Statement::DropSeries { .. }
        | Statement::Delete { .. } => delete::execute(db, stmt, default_db).await,
        Statement::ShowDatabases
        | Statement::ShowRetentionPolicies { .. }
        | Statement::ShowMeasurements { .. }
        | Statement::ShowSeries { .. }
        | Statement::ShowTagKeys { .. }
        | Statement::ShowTagValues { .. }
        | Statement::ShowFieldKeys { .. }
        | Statement::ShowSeriesCardinality { .. }
        | Statement::ShowMeasurementCardinality { .. }
        | Statement::ShowContinuousQueries => show::execute(db, stmt, default_db, caller, budget),
        Statement::CreateContinuousQuery(_) | Statement::DropContinuousQuery { .. } => {
            continuous::execute(db, stmt, default_db)
        }
        Statement::Select(sel) => match &sel.into {
            None => select::select(db, sel, default_db, budget),
            Some(target) => {
                let series = select::select(db, &into::as_written(sel), default_db, budget)?;
                into::write_into(db, target, series, default_db, budget).await
            }
        },
    }
}

/// Used by the 0.8 shim: all values of a field column as `Val`s.
pub fn values_to_vals(v: &Values) -> Vec<Val> {
    (0..v.len()).map(|i| Val::from_field(v.get(i))).collect()
}

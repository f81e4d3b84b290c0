//! The statements that delete data: `DROP MEASUREMENT`, `DROP SERIES` and `DELETE`. Each
//! resolves its condition to series keys per shard (tags only: a condition on a field is
//! refused, as in influxd 1.6) and a time range, and hands both to [`Tsdb::delete`], which
//! makes the deletion durable.
//! What it does not do: drop databases or retention policies (see [`super::catalog`]).

use std::collections::HashMap;

use super::cond::{collect_regexes, extract_time, refers_to_time, series_match_tags};
use super::error::{ExecResult, QueryError};
use super::sources::{check_db, measurements_for, need_db};
use super::value::ResultSeries;
use crate::influxql::{Expr, Source, Statement};
use crate::storage::{Tsdb, now_ns};

/// Runs a deleting statement (an error for any other statement).
pub(super) async fn execute(
    db: &Tsdb,
    stmt: &Statement,
    default_db: Option<&str>,
) -> ExecResult<Vec<ResultSeries>> {
    let dbname = need_db(None, default_db)?;
    check_db(db, dbname)?;
    let r = match stmt {
        Statement::DropMeasurement { name } => drop_measurement(db, dbname, name).await,
        Statement::DropSeries { sources, condition } => {
            drop_series(db, dbname, sources, condition.as_ref()).await
        }
        Statement::Delete { sources, condition } => {
            delete(db, dbname, sources, condition.as_ref()).await
        }
        other => {
            return Err(QueryError::Misrouted {
                kind: "deleting",
                statement: other.to_string(),
            });
        }
    };
    r.map(|()| Vec::new())
}

async fn drop_measurement(db: &Tsdb, dbname: &str, name: &str) -> ExecResult<()> {
    db.delete(dbname, i64::MIN, i64::MAX, |st| {
        Ok::<_, QueryError>(
            st.index
                .measurements
                .get(name)
                .map(|mi| {
                    mi.series
                        .iter()
                        .map(|&sid| st.index.series[sid as usize].key.clone())
                        .collect()
                })
                .unwrap_or_default(),
        )
    })
    .await
}

async fn drop_series(
    db: &Tsdb,
    dbname: &str,
    sources: &[Source],
    condition: Option<&Expr>,
) -> ExecResult<()> {
    if condition.is_some_and(refers_to_time) {
        return Err(QueryError::DropSeriesTime);
    }
    delete_where(db, dbname, sources, condition, i64::MIN, i64::MAX).await
}

async fn delete(
    db: &Tsdb,
    dbname: &str,
    sources: &[Source],
    condition: Option<&Expr>,
) -> ExecResult<()> {
    let (min, max, rest) = match condition {
        Some(c) => extract_time(c, now_ns())?,
        None => (i64::MIN, i64::MAX, None),
    };
    if rest.as_ref().is_some_and(refers_to_time) {
        return Err(QueryError::DeleteTime);
    }
    delete_where(db, dbname, sources, rest.as_ref(), min, max).await
}

/// `DROP SERIES` / `DELETE`: the series of `sources` (all measurements when empty) whose tags
/// satisfy `condition`, values in `[min, max]`. A condition on a field is refused, as in
/// InfluxDB 1.6 (which prefixes the message with the shard id: torc has no shard ids).
async fn delete_where(
    db: &Tsdb,
    dbname: &str,
    sources: &[Source],
    condition: Option<&Expr>,
    min: i64,
    max: i64,
) -> ExecResult<()> {
    if let Some(c) = condition {
        collect_regexes(c, &mut HashMap::new())?;
    }
    db.delete(dbname, min, max, |st| {
        let mut keys = Vec::new();
        for m in measurements_for(st, sources)? {
            let Some(mi) = st.index.measurements.get(&m) else {
                continue;
            };
            if let Some(c) = condition {
                let mut field = false;
                c.walk(&mut |e| {
                    if let Expr::VarRef(n) = e
                        && mi.fields.contains_key(n)
                    {
                        field = true;
                    }
                });
                if field {
                    return Err(QueryError::DeleteOnField);
                }
            }
            for &sid in &mi.series {
                let s = &st.index.series[sid as usize];
                if condition.is_none_or(|c| series_match_tags(c, s) == Some(true)) {
                    keys.push(s.key.clone());
                }
            }
        }
        Ok(keys)
    })
    .await
}

//! `SELECT ... INTO`: the query's answer written back as points, as influxd 1.6 does it.
//!
//! Each answered row becomes a point: its time (a `GROUP BY time` bucket's start), the row's
//! series tags (those the query grouped by), and its non-null columns as fields (a row with
//! none is skipped). The measurement is the target's, or with `:MEASUREMENT` the name of the
//! series the row belongs to. The target's database defaults to the query's, its retention
//! policy to that database's default. The answer is influxd's: one series `result` with
//! `written`, the number of points written, at time 0. Empty `GROUP BY time` buckets are
//! written only when the query asks for a fill.
//! What it does not do: run the query (see [`super::select`]) or schedule continuous queries
//! (the crate's `cq` module).

use super::error::{ExecResult, QueryError};
use super::value::{ResultSeries, Val};
use crate::influxql::{Fill, Select, Target};
use crate::limits::Budget;
use crate::model::{FieldValue, Point};
use crate::storage::Tsdb;

/// The query an `INTO` runs: as written, but without the rows of empty `GROUP BY time`
/// buckets unless it asks for a fill (influxd writes no point for them).
pub(super) fn as_written(sel: &Select) -> Select {
    let mut sel = sel.clone();
    if sel.fill == Fill::Null {
        sel.fill = Fill::None;
    }
    sel
}

/// Writes the answer `series` of a query into `target` and answers influxd's `result`.
pub(super) async fn write_into(
    db: &Tsdb,
    target: &Target,
    series: Vec<ResultSeries>,
    default_db: Option<&str>,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    let database = match target.database.as_deref().or(default_db) {
        Some(d) if !d.is_empty() => d.to_string(),
        _ => return Err(QueryError::DatabaseNameRequired),
    };
    if db.database(&database).is_none() {
        return Err(QueryError::DatabaseNotFound { name: database });
    }
    let points = to_points(target, series);
    let written = points.len();
    budget.check_time()?;
    if !points.is_empty() {
        db.write(&database, target.retention_policy.as_deref(), points)
            .await
            .map_err(QueryError::from_storage)?;
    }
    Ok(vec![ResultSeries {
        name: Some("result".into()),
        tags: None,
        columns: vec!["time".into(), "written".into()],
        values: vec![vec![Val::Time(0), Val::Int(written as i64)]],
    }])
}

/// The rows of `series` as points for `target` (see the module's doc).
fn to_points(target: &Target, series: Vec<ResultSeries>) -> Vec<Point> {
    let mut out = Vec::new();
    for s in series {
        let Some(measurement) = target.measurement.clone().or(s.name) else {
            continue;
        };
        let tags: Vec<(String, String)> = s
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .collect();
        let time_col = s.columns.iter().position(|c| c == "time");
        for row in s.values {
            let time = match time_col.and_then(|i| row.get(i)) {
                Some(Val::Time(t)) | Some(Val::Int(t)) => *t,
                _ => 0,
            };
            let fields: Vec<(String, FieldValue)> = s
                .columns
                .iter()
                .zip(row)
                .enumerate()
                .filter(|(i, _)| Some(*i) != time_col)
                .filter_map(|(_, (name, v))| field(v).map(|v| (name.clone(), v)))
                .collect();
            if fields.is_empty() {
                continue;
            }
            out.push(Point {
                measurement: measurement.clone(),
                tags: tags.clone(),
                fields,
                time,
            });
        }
    }
    out
}

fn field(v: Val) -> Option<FieldValue> {
    match v {
        Val::Float(f) => Some(FieldValue::Float(f)),
        Val::Int(i) => Some(FieldValue::Int(i)),
        Val::Str(s) => Some(FieldValue::Str(s)),
        Val::Bool(b) => Some(FieldValue::Bool(b)),
        Val::Null | Val::Time(_) => None,
    }
}

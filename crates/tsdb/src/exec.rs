//! InfluxQL statement execution against the storage engine.
//!
//! Semantics follow InfluxDB 1.6 where torc's differential test checks them: raw rows merge the
//! group's series ordered by (time, series key) and `ORDER BY time DESC` reverses that order;
//! `GROUP BY time` buckets start at the lower time bound (or the group's earliest point) and end
//! at the upper bound (or now); `first`/`last` break timestamp ties by the larger value,
//! `min`/`max` break value ties by the earlier time; `count` of an empty `GROUP BY time` bucket
//! is 0, while without an interval a count over no values is null.
//!
//! A subquery runs first; its rows are held in an in-memory shard ([`Shard::in_memory`]) and the
//! outer query reads that like stored data: an inner query without a time condition gets the
//! outer one's range, the rows of a raw inner query keep their series' tags, the outer time
//! range does not cut the inner rows again, and `SELECT *` names the inner columns only.
//! `DROP SERIES` / `DELETE` / `DROP MEASUREMENT` resolve their condition to series keys per
//! shard and hand them to [`Tsdb::delete`]. `top`/`bottom` (with tag arguments and bare fields
//! or tags beside them) pick several points per bucket and show each at its own time. Math
//! functions (`round`, `abs`, `log`, ...) apply per row or to aggregates; `cumulative_sum` and
//! `moving_average` are transforms like `derivative`. A 1.6 function torc does not evaluate is
//! an error, never a column of nulls.
//!
//! Every request runs under a [`Budget`] ([`crate::limits`]): points, series and buckets per
//! statement, and the request's deadline, checked as the work goes (per series, every few
//! thousand rows), so a query past `query-timeout` stops computing.
//!
//! Invariants: execution never panics on user input; a statement that fails yields an error
//! for that statement only, and the statements after it do not run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use regex::Regex;

use crate::auth::Caller;
use crate::influxql::{
    BinOp, Dimension, Expr, Field, Fill, Select, Source, Statement, TagKeyMatch,
};
use crate::limits::Budget;

mod error;
mod users;
mod value;

use crate::model::{FieldType, FieldValue, Values};
use crate::storage::{RpMeta, SeriesInfo, Shard, ShardState, Tsdb, now_ns, shard_group_for};
pub use error::QueryError;
pub use value::{ResultSeries, Val};

/// The result of one statement.
#[derive(Debug, Clone, Default)]
pub struct StatementResult {
    pub series: Vec<ResultSeries>,
    pub error: Option<QueryError>,
}

type ExecResult<T> = Result<T, QueryError>;

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

fn need_db<'a>(on: Option<&'a str>, default_db: Option<&'a str>) -> ExecResult<&'a str> {
    match on.or(default_db) {
        Some(d) if !d.is_empty() => Ok(d),
        _ => Err(QueryError::DatabaseNameRequired),
    }
}

fn check_db(db: &Tsdb, name: &str) -> ExecResult<()> {
    if db.database(name).is_none() {
        return Err(QueryError::DatabaseNotFound {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Formats nanoseconds as Go's `time.Duration.String()` does (`168h0m0s`, `0s`).
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let total_s = ns / 1_000_000_000;
    let frac = ns % 1_000_000_000;
    let h = total_s / 3600;
    let m = (total_s % 3600) / 60;
    let s = total_s % 60;
    let mut secs = s.to_string();
    if frac != 0 {
        let f = format!("{frac:09}");
        secs = format!("{s}.{}", f.trim_end_matches('0'));
    }
    if h > 0 {
        format!("{h}h{m}m{secs}s")
    } else if m > 0 {
        format!("{m}m{secs}s")
    } else {
        format!("{secs}s")
    }
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
        Statement::CreateDatabase { name } => {
            db.create_database(name)?;
            Ok(Vec::new())
        }
        Statement::DropDatabase { name } => {
            db.drop_database(name).await?;
            Ok(Vec::new())
        }
        Statement::DropMeasurement { name } => {
            let dbname = need_db(None, default_db)?;
            check_db(db, dbname)?;
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
            .await?;
            Ok(Vec::new())
        }
        Statement::DropRetentionPolicy { name, database } => {
            db.drop_retention_policy(database, name)
                .await
                .map_err(QueryError::from_storage)?;
            Ok(Vec::new())
        }
        Statement::DropSeries { sources, condition } => {
            let dbname = need_db(None, default_db)?;
            check_db(db, dbname)?;
            if condition.as_ref().is_some_and(refers_to_time) {
                return Err(QueryError::DropSeriesTime);
            }
            delete_where(db, dbname, sources, condition.as_ref(), i64::MIN, i64::MAX).await?;
            Ok(Vec::new())
        }
        Statement::Delete { sources, condition } => {
            let dbname = need_db(None, default_db)?;
            check_db(db, dbname)?;
            let (min, max, rest) = match condition {
                Some(c) => extract_time(c, now_ns())?,
                None => (i64::MIN, i64::MAX, None),
            };
            if rest.as_ref().is_some_and(refers_to_time) {
                return Err(QueryError::DeleteTime);
            }
            delete_where(db, dbname, sources, rest.as_ref(), min, max).await?;
            Ok(Vec::new())
        }
        Statement::AlterRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => {
            if let Some(d) = duration {
                check_rp_duration(*d)?;
            }
            db.alter_retention_policy(
                database,
                name,
                |rp| {
                    if let Some(d) = duration {
                        rp.duration_ns = *d;
                    }
                    if let Some(r) = replication {
                        rp.replication = (*r).clamp(1, u32::MAX as i64) as u32;
                    }
                    if let Some(sd) = shard_duration {
                        rp.shard_group_ns = *sd;
                    }
                },
                *default,
            )
            .map_err(QueryError::from_storage)?;
            Ok(Vec::new())
        }
        Statement::CreateRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => {
            check_rp_duration(*duration)?;
            let rp = RpMeta {
                duration_ns: *duration,
                shard_group_ns: shard_duration.unwrap_or_else(|| shard_group_for(*duration)),
                replication: (*replication).clamp(1, u32::MAX as i64) as u32,
            };
            db.create_retention_policy(database, name, rp, *default)
                .map_err(QueryError::from_storage)?;
            Ok(Vec::new())
        }
        Statement::ShowSeriesCardinality { on } | Statement::ShowMeasurementCardinality { on } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let series = matches!(stmt, Statement::ShowSeriesCardinality { .. });
            let mut set = BTreeSet::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for (m, mi) in &st.index.measurements {
                    budget.tick()?;
                    if series {
                        set.extend(
                            mi.series
                                .iter()
                                .map(|&sid| st.index.series[sid as usize].key.clone()),
                        );
                    } else if !mi.series.is_empty() {
                        set.insert(m.clone());
                    }
                }
            }
            // InfluxDB estimates with a sketch; torc counts (the same for small numbers).
            Ok(vec![ResultSeries {
                name: None,
                tags: None,
                columns: vec!["cardinality estimation".into()],
                values: vec![vec![Val::Int(set.len() as i64)]],
            }])
        }
        Statement::ShowContinuousQueries => Ok(db
            .databases()
            .into_iter()
            .map(|d| ResultSeries {
                name: Some(d),
                tags: None,
                columns: vec!["name".into(), "query".into()],
                values: Vec::new(),
            })
            .collect()),
        Statement::ShowDatabases => Ok(vec![ResultSeries {
            name: Some("databases".into()),
            tags: None,
            columns: vec!["name".into()],
            values: db
                .databases()
                .into_iter()
                .filter(|d| crate::auth::lists_database(caller, d))
                .map(|d| vec![Val::Str(d)])
                .collect(),
        }]),
        Statement::ShowRetentionPolicies { on } => {
            let name = need_db(on.as_deref(), default_db)?;
            let meta = db
                .database(name)
                .ok_or_else(|| QueryError::DatabaseNotFound {
                    name: name.to_string(),
                })?;
            Ok(vec![ResultSeries {
                name: None,
                tags: None,
                columns: [
                    "name",
                    "duration",
                    "shardGroupDuration",
                    "replicaN",
                    "default",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                values: meta
                    .rps
                    .iter()
                    .map(|(n, rp)| {
                        vec![
                            Val::Str(n.clone()),
                            Val::Str(go_duration(rp.duration_ns)),
                            Val::Str(go_duration(rp.shard_group_ns)),
                            Val::Int(i64::from(rp.replication)),
                            Val::Bool(*n == meta.default_rp),
                        ]
                    })
                    .collect(),
            }])
        }
        Statement::ShowMeasurements {
            on,
            sources,
            condition,
            limit,
            offset,
        } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let mut set = BTreeSet::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for m in measurements_for(&st, sources)? {
                    let Some(mi) = st.index.measurements.get(&m) else {
                        continue;
                    };
                    budget.tick()?;
                    let ok = match condition {
                        None => !mi.series.is_empty(),
                        Some(c) => mi.series.iter().any(|&sid| {
                            series_match_tags(c, &st.index.series[sid as usize]) != Some(false)
                        }),
                    };
                    if ok {
                        set.insert(m.clone());
                    }
                }
            }
            let vals = limit_offset(
                set.into_iter().map(|m| vec![Val::Str(m)]).collect(),
                *limit,
                *offset,
            );
            if vals.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![ResultSeries {
                name: Some("measurements".into()),
                tags: None,
                columns: vec!["name".into()],
                values: vals,
            }])
        }
        Statement::ShowSeries {
            on,
            sources,
            condition,
            limit,
            offset,
        } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let mut keys = BTreeSet::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for m in measurements_for(&st, sources)? {
                    let mi = &st.index.measurements[&m];
                    for &sid in &mi.series {
                        budget.tick()?;
                        let s = &st.index.series[sid as usize];
                        if condition
                            .as_ref()
                            .is_none_or(|c| series_match_tags(c, s) != Some(false))
                        {
                            keys.insert(s.key.clone());
                        }
                    }
                }
            }
            let vals = limit_offset(
                keys.into_iter().map(|k| vec![Val::Str(k)]).collect(),
                *limit,
                *offset,
            );
            if vals.is_empty() {
                return Ok(Vec::new());
            }
            Ok(vec![ResultSeries {
                name: None,
                tags: None,
                columns: vec!["key".into()],
                values: vals,
            }])
        }
        Statement::ShowTagKeys {
            on,
            sources,
            condition,
            limit,
            offset,
        } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let mut per: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for m in measurements_for(&st, sources)? {
                    let mi = &st.index.measurements[&m];
                    let e = per.entry(m.clone()).or_default();
                    for &sid in &mi.series {
                        budget.tick()?;
                        let s = &st.index.series[sid as usize];
                        if condition
                            .as_ref()
                            .is_none_or(|c| series_match_tags(c, s) != Some(false))
                        {
                            e.extend(s.tags.iter().map(|(k, _)| k.clone()));
                        }
                    }
                }
            }
            Ok(per
                .into_iter()
                .filter_map(|(m, keys)| {
                    let vals = limit_offset(
                        keys.into_iter().map(|k| vec![Val::Str(k)]).collect(),
                        *limit,
                        *offset,
                    );
                    (!vals.is_empty()).then(|| ResultSeries {
                        name: Some(m),
                        tags: None,
                        columns: vec!["tagKey".into()],
                        values: vals,
                    })
                })
                .collect())
        }
        Statement::ShowTagValues {
            on,
            sources,
            keys,
            condition,
            limit,
            offset,
        } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let key_ok: Box<dyn Fn(&str) -> bool> = match keys {
                TagKeyMatch::Eq(k) => {
                    let k = k.clone();
                    Box::new(move |x| x == k)
                }
                TagKeyMatch::Neq(k) => {
                    let k = k.clone();
                    Box::new(move |x| x != k)
                }
                TagKeyMatch::In(ks) => {
                    let ks = ks.clone();
                    Box::new(move |x| ks.iter().any(|k| k == x))
                }
                TagKeyMatch::Regex(r) => {
                    let re = compile(r)?;
                    Box::new(move |x| re.is_match(x))
                }
                TagKeyMatch::NotRegex(r) => {
                    let re = compile(r)?;
                    Box::new(move |x| !re.is_match(x))
                }
            };
            let mut per: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for m in measurements_for(&st, sources)? {
                    let mi = &st.index.measurements[&m];
                    for &sid in &mi.series {
                        budget.tick()?;
                        let s = &st.index.series[sid as usize];
                        if condition
                            .as_ref()
                            .is_none_or(|c| series_match_tags(c, s) != Some(false))
                        {
                            for (k, v) in &s.tags {
                                if key_ok(k) {
                                    per.entry(m.clone())
                                        .or_default()
                                        .insert((k.clone(), v.clone()));
                                }
                            }
                        }
                    }
                }
            }
            Ok(per
                .into_iter()
                .filter_map(|(m, kvs)| {
                    let vals = limit_offset(
                        kvs.into_iter()
                            .map(|(k, v)| vec![Val::Str(k), Val::Str(v)])
                            .collect(),
                        *limit,
                        *offset,
                    );
                    (!vals.is_empty()).then(|| ResultSeries {
                        name: Some(m),
                        tags: None,
                        columns: vec!["key".into(), "value".into()],
                        values: vals,
                    })
                })
                .collect())
        }
        Statement::ShowFieldKeys { on, sources } => {
            let name = need_db(on.as_deref(), default_db)?;
            check_db(db, name)?;
            let mut per: BTreeMap<String, BTreeMap<String, FieldType>> = BTreeMap::new();
            for shard in db.shards_of(name) {
                let st = shard.read();
                for m in measurements_for(&st, sources)? {
                    let mi = &st.index.measurements[&m];
                    let e = per.entry(m.clone()).or_default();
                    for (f, t) in &mi.fields {
                        e.entry(f.clone()).or_insert(*t);
                    }
                }
            }
            Ok(per
                .into_iter()
                .filter(|(_, f)| !f.is_empty())
                .map(|(m, fields)| ResultSeries {
                    name: Some(m),
                    tags: None,
                    columns: vec!["fieldKey".into(), "fieldType".into()],
                    values: fields
                        .into_iter()
                        .map(|(f, t)| vec![Val::Str(f), Val::Str(t.name().into())])
                        .collect(),
                })
                .collect())
        }
        Statement::Select(sel) => select(db, sel, default_db, budget),
    }
}

/// True when a condition mentions `time`.
fn refers_to_time(e: &Expr) -> bool {
    let mut yes = false;
    e.walk(&mut |e| {
        if let Expr::VarRef(n) = e
            && n.eq_ignore_ascii_case("time")
        {
            yes = true;
        }
    });
    yes
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

fn limit_offset<T>(v: Vec<T>, limit: usize, offset: usize) -> Vec<T> {
    let it = v.into_iter().skip(offset);
    if limit > 0 {
        it.take(limit).collect()
    } else {
        it.collect()
    }
}

fn compile(r: &str) -> ExecResult<Regex> {
    Regex::new(r).map_err(QueryError::Regex)
}

/// Measurements of a shard named by `sources` (all when empty).
fn measurements_for(st: &ShardState, sources: &[Source]) -> ExecResult<Vec<String>> {
    if sources.is_empty() {
        return Ok(st.index.measurements.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    for s in sources {
        match s {
            Source::Measurement { name, .. } => {
                if st.index.measurements.contains_key(name) {
                    out.insert(name.clone());
                }
            }
            Source::Regex { regex, .. } => {
                let re = compile(regex)?;
                for m in st.index.measurements.keys() {
                    if re.is_match(m) {
                        out.insert(m.clone());
                    }
                }
            }
            Source::Subquery(_) => {
                return Err(QueryError::SubqueryOutsideSelect);
            }
        }
    }
    Ok(out.into_iter().collect())
}

// ---------------------------------------------------------------------------------------------
// Conditions

/// Three-valued evaluation of a condition against a series' tags: `None` when the outcome
/// depends on fields or time.
fn series_match(e: &Expr, s: &SeriesInfo) -> Option<bool> {
    series_match_mode(e, s, false)
}

/// As [`series_match`]; in metadata statements (`SHOW ...`) conditions are on tags only, so a
/// missing tag is the empty string rather than unknown.
fn series_match_tags(e: &Expr, s: &SeriesInfo) -> Option<bool> {
    series_match_mode(e, s, true)
}

fn series_match_mode(e: &Expr, s: &SeriesInfo, tags_only: bool) -> Option<bool> {
    let series_match = |e: &Expr, s: &SeriesInfo| series_match_mode(e, s, tags_only);
    match e.unparen() {
        Expr::Bool(b) => Some(*b),
        Expr::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => match (series_match(lhs, s), series_match(rhs, s)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Binary {
            op: BinOp::Or,
            lhs,
            rhs,
        } => match (series_match(lhs, s), series_match(rhs, s)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Binary { op, lhs, rhs } => {
            let (name, lit, flipped) = match (lhs.unparen(), rhs.unparen()) {
                (Expr::VarRef(n), l) => (n, l, false),
                (l, Expr::VarRef(n)) => (n, l, true),
                _ => return None,
            };
            if name == "time" {
                return None;
            }
            // Fields are unknown here; a tag that the series lacks compares as "".
            let tv = match s.tag(name) {
                Some(v) => v,
                None if tags_only => "",
                None => {
                    // Could be a field: unknown unless comparing against a string/regex (a
                    // field compared with a string literal is also possible: stay unknown).
                    return None;
                }
            };
            compare_tag(*op, tv, lit, flipped)
        }
        _ => None,
    }
}

/// Series ids that can satisfy `e`, from the tag index, when `e` pins a tag to a value.
fn index_candidates(e: &Expr, mi: &crate::storage::MeasurementIndex) -> Option<Vec<u32>> {
    match e.unparen() {
        Expr::Binary {
            op: BinOp::And,
            lhs,
            rhs,
        } => match (index_candidates(lhs, mi), index_candidates(rhs, mi)) {
            (Some(a), Some(b)) => Some(if a.len() <= b.len() { a } else { b }),
            (Some(a), None) | (None, Some(a)) => Some(a),
            (None, None) => None,
        },
        Expr::Binary {
            op: BinOp::Eq,
            lhs,
            rhs,
        } => match (lhs.unparen(), rhs.unparen()) {
            (Expr::VarRef(k), Expr::String(v)) | (Expr::String(v), Expr::VarRef(k))
                if !v.is_empty() && !mi.fields.contains_key(k) =>
            {
                Some(
                    mi.tags
                        .get(k)
                        .and_then(|vals| vals.get(v))
                        .cloned()
                        .unwrap_or_default(),
                )
            }
            _ => None,
        },
        _ => None,
    }
}

thread_local! {
    static REGEX_CACHE: std::cell::RefCell<HashMap<String, Option<Regex>>> =
        std::cell::RefCell::new(HashMap::new());
}

fn cached_regex_match(r: &str, s: &str) -> Option<bool> {
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 1024 {
            c.clear();
        }
        let re = c.entry(r.to_string()).or_insert_with(|| Regex::new(r).ok());
        re.as_ref().map(|re| re.is_match(s))
    })
}

fn compare_tag(op: BinOp, tv: &str, lit: &Expr, flipped: bool) -> Option<bool> {
    match (op, lit) {
        (BinOp::Eq, Expr::String(s)) => Some(tv == s),
        (BinOp::Neq, Expr::String(s)) => Some(tv != s),
        (BinOp::EqRegex, Expr::Regex(r)) => cached_regex_match(r, tv),
        (BinOp::NeqRegex, Expr::Regex(r)) => cached_regex_match(r, tv).map(|m| !m),
        (BinOp::Lt | BinOp::Lte | BinOp::Gt | BinOp::Gte, Expr::String(s)) => {
            let (a, b) = if flipped {
                (s.as_str(), tv)
            } else {
                (tv, s.as_str())
            };
            Some(match op {
                BinOp::Lt => a < b,
                BinOp::Lte => a <= b,
                BinOp::Gt => a > b,
                _ => a >= b,
            })
        }
        _ => Some(false),
    }
}

/// A compiled row condition: tag, field and time references evaluated per row.
struct RowCtx<'a> {
    series: &'a SeriesInfo,
    time: i64,
    fields: &'a [String],
    values: &'a [Option<FieldValue>],
}

fn eval(e: &Expr, row: &RowCtx<'_>, regexes: &HashMap<String, Regex>) -> Val {
    match e {
        Expr::Paren(x) => eval(x, row, regexes),
        Expr::VarRef(n) => {
            if n == "time" {
                return Val::Time(row.time);
            }
            if let Some(i) = row.fields.iter().position(|f| f == n) {
                return match &row.values[i] {
                    Some(v) => Val::from_field(v.clone()),
                    None => Val::Null,
                };
            }
            match row.series.tag(n) {
                Some(v) => Val::Str(v.to_string()),
                None => Val::Null,
            }
        }
        Expr::Integer(i) => Val::Int(*i),
        Expr::Number(f) => Val::Float(*f),
        Expr::String(s) => Val::Str(s.clone()),
        Expr::Bool(b) => Val::Bool(*b),
        Expr::Duration(d) => Val::Int(*d),
        Expr::Binary { op, lhs, rhs } => {
            let l = eval(lhs, row, regexes);
            match op {
                BinOp::And => {
                    let r = eval(rhs, row, regexes);
                    return Val::Bool(l == Val::Bool(true) && r == Val::Bool(true));
                }
                BinOp::Or => {
                    let r = eval(rhs, row, regexes);
                    return Val::Bool(l == Val::Bool(true) || r == Val::Bool(true));
                }
                BinOp::EqRegex | BinOp::NeqRegex => {
                    let Expr::Regex(r) = rhs.unparen() else {
                        return Val::Bool(false);
                    };
                    let s = match &l {
                        Val::Str(s) => s.clone(),
                        Val::Null => String::new(),
                        _ => return Val::Bool(false),
                    };
                    let m = regexes.get(r).is_some_and(|re| re.is_match(&s));
                    return Val::Bool(if *op == BinOp::EqRegex { m } else { !m });
                }
                _ => {}
            }
            let r = eval(rhs, row, regexes);
            binop(*op, l, r)
        }
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => {
            let vals: Vec<Val> = args.iter().map(|a| eval(a, row, regexes)).collect();
            math(name, &vals)
        }
        _ => Val::Null,
    }
}

fn binop(op: BinOp, l: Val, r: Val) -> Val {
    use std::cmp::Ordering as O;
    let cmp = |o: Option<O>, f: fn(O) -> bool| Val::Bool(o.is_some_and(f));
    let ord = match (&l, &r) {
        (Val::Str(a), Val::Str(b)) => Some(a.cmp(b)),
        (Val::Bool(a), Val::Bool(b)) => Some(a.cmp(b)),
        (Val::Int(a), Val::Int(b))
        | (Val::Time(a), Val::Int(b))
        | (Val::Int(a), Val::Time(b))
        | (Val::Time(a), Val::Time(b)) => Some(a.cmp(b)),
        _ => match (l.as_f64(), r.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => None,
        },
    };
    match op {
        BinOp::Eq => cmp(ord, |o| o == O::Equal),
        BinOp::Neq => match (&l, &r) {
            (Val::Null, _) | (_, Val::Null) => Val::Bool(false),
            _ => cmp(ord, |o| o != O::Equal),
        },
        BinOp::Lt => cmp(ord, |o| o == O::Less),
        BinOp::Lte => cmp(ord, |o| o != O::Greater),
        BinOp::Gt => cmp(ord, |o| o == O::Greater),
        BinOp::Gte => cmp(ord, |o| o != O::Less),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Mod => match (&l, &r) {
            (Val::Int(a), Val::Int(b)) if op != BinOp::Div => match op {
                BinOp::Add => Val::Int(a.wrapping_add(*b)),
                BinOp::Sub => Val::Int(a.wrapping_sub(*b)),
                BinOp::Mul => Val::Int(a.wrapping_mul(*b)),
                _ => {
                    if *b == 0 {
                        Val::Int(0)
                    } else {
                        Val::Int(a.wrapping_rem(*b))
                    }
                }
            },
            _ => match (l.as_f64(), r.as_f64()) {
                (Some(a), Some(b)) => Val::Float(match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => {
                        if b == 0.0 {
                            0.0
                        } else {
                            a / b
                        }
                    }
                    _ => a % b,
                }),
                _ => Val::Null,
            },
        },
        BinOp::BitAnd | BinOp::BitOr | BinOp::BitXor => match (l, r) {
            (Val::Int(a), Val::Int(b)) => Val::Int(match op {
                BinOp::BitAnd => a & b,
                BinOp::BitOr => a | b,
                _ => a ^ b,
            }),
            _ => Val::Null,
        },
        _ => Val::Null,
    }
}

/// Evaluates a constant time expression (now(), literals, RFC3339 strings, arithmetic).
fn time_value(e: &Expr, now: i64) -> ExecResult<i64> {
    match e.unparen() {
        Expr::Call { name, args } if name == "now" && args.is_empty() => Ok(now),
        Expr::Integer(i) => Ok(*i),
        Expr::Number(f) => Ok(*f as i64),
        Expr::Duration(d) => Ok(*d),
        Expr::String(s) => crate::timefmt::parse_rfc3339(s).ok_or(QueryError::TimeString),
        Expr::Binary { op, lhs, rhs } => {
            let l = time_value(lhs, now)?;
            let r = time_value(rhs, now)?;
            match op {
                BinOp::Add => Ok(l.saturating_add(r)),
                BinOp::Sub => Ok(l.saturating_sub(r)),
                _ => Err(QueryError::TimeExpression),
            }
        }
        _ => Err(QueryError::TimeExpression),
    }
}

/// Splits top-level `AND`ed time comparisons out of a condition: returns (min, max, rest).
fn extract_time(cond: &Expr, now: i64) -> ExecResult<(i64, i64, Option<Expr>)> {
    let mut min = i64::MIN;
    let mut max = i64::MAX;
    fn walk(e: &Expr, now: i64, min: &mut i64, max: &mut i64) -> ExecResult<Option<Expr>> {
        match e.unparen() {
            Expr::Binary {
                op: BinOp::And,
                lhs,
                rhs,
            } => {
                let l = walk(lhs, now, min, max)?;
                let r = walk(rhs, now, min, max)?;
                Ok(match (l, r) {
                    (Some(l), Some(r)) => Some(Expr::Binary {
                        op: BinOp::And,
                        lhs: Box::new(l),
                        rhs: Box::new(r),
                    }),
                    (Some(x), None) | (None, Some(x)) => Some(x),
                    (None, None) => None,
                })
            }
            Expr::Binary { op, lhs, rhs }
                if matches!(
                    op,
                    BinOp::Lt | BinOp::Lte | BinOp::Gt | BinOp::Gte | BinOp::Eq
                ) =>
            {
                let (t, flip) = match (lhs.unparen(), rhs.unparen()) {
                    (Expr::VarRef(n), v) if n.eq_ignore_ascii_case("time") => {
                        (time_value(v, now)?, false)
                    }
                    (v, Expr::VarRef(n)) if n.eq_ignore_ascii_case("time") => {
                        (time_value(v, now)?, true)
                    }
                    _ => return Ok(Some(e.clone())),
                };
                let op = if flip {
                    match op {
                        BinOp::Lt => BinOp::Gt,
                        BinOp::Lte => BinOp::Gte,
                        BinOp::Gt => BinOp::Lt,
                        BinOp::Gte => BinOp::Lte,
                        o => *o,
                    }
                } else {
                    *op
                };
                match op {
                    BinOp::Gt => *min = (*min).max(t.saturating_add(1)),
                    BinOp::Gte => *min = (*min).max(t),
                    BinOp::Lt => *max = (*max).min(t.saturating_sub(1)),
                    BinOp::Lte => *max = (*max).min(t),
                    _ => {
                        *min = (*min).max(t);
                        *max = (*max).min(t);
                    }
                }
                Ok(None)
            }
            _ => Ok(Some(e.clone())),
        }
    }
    let rest = walk(cond, now, &mut min, &mut max)?;
    Ok((min, max, rest))
}

fn collect_regexes(e: &Expr, out: &mut HashMap<String, Regex>) -> ExecResult<()> {
    let mut err = None;
    e.walk(&mut |x| {
        if let Expr::Regex(r) = x
            && !out.contains_key(r)
        {
            match Regex::new(r) {
                Ok(re) => {
                    out.insert(r.clone(), re);
                }
                Err(e) => err = Some(QueryError::Regex(e)),
            }
        }
    });
    err.map_or(Ok(()), Err)
}

// ---------------------------------------------------------------------------------------------
// SELECT

const AGGREGATES: &[&str] = &[
    "mean",
    "median",
    "count",
    "sum",
    "min",
    "max",
    "first",
    "last",
    "spread",
    "stddev",
    "percentile",
    "mode",
    "distinct",
    "integral",
];
const SELECTORS: &[&str] = &["min", "max", "first", "last", "percentile"];
const TRANSFORMS: &[&str] = &[
    "derivative",
    "non_negative_derivative",
    "difference",
    "non_negative_difference",
    "cumulative_sum",
    "moving_average",
];

/// Selectors of several points per bucket: `top(field, N)` / `bottom(field, N)`, alone.
const SELECT_N: &[&str] = &["top", "bottom"];

/// A `top`/`bottom` query: `top(field[, tag ...], N)` beside bare fields or tags whose
/// values at the chosen points are shown beside them (InfluxDB 1.6).
struct SelectN<'a> {
    name: &'a str,
    field: &'a str,
    /// With tag arguments, one point per distinct combination of their values competes.
    tags: Vec<&'a str>,
    n: usize,
    /// Position of the call among the projections.
    at: usize,
    /// The other projections, in order.
    aux: Vec<&'a str>,
}

/// The `top`/`bottom` form of a projection list, if it is one; an error for the forms torc does
/// not implement (beside anything but bare names).
fn select_n(fields: &[Field]) -> ExecResult<Option<SelectN<'_>>> {
    let Some(at) = fields.iter().position(|f| contains_call(&f.expr, SELECT_N)) else {
        return Ok(None);
    };
    let f = &fields[at];
    for (i, other) in fields.iter().enumerate() {
        if i != at
            && let Expr::Call { .. } = other.expr.unparen()
            && let Expr::Call { name, .. } = f.expr.unparen()
        {
            return Err(QueryError::SelectorCombined { name: name.clone() });
        }
    }
    let unsupported = || QueryError::SelectorForm;
    let Expr::Call { name, args } = f.expr.unparen() else {
        return Err(unsupported());
    };
    if args.len() < 2 {
        return Err(QueryError::SelectorArity {
            name: name.clone(),
            got: args.len(),
        });
    }
    let Some(Expr::Integer(n)) = args.last().map(Expr::unparen) else {
        return Err(QueryError::SelectorLimitType {
            name: name.clone(),
            args: args.len(),
        });
    };
    if *n <= 0 {
        return Err(QueryError::SelectorLimit {
            name: name.clone(),
            n: *n,
        });
    }
    let mut names = args[..args.len() - 1].iter().map(|a| match a.unparen() {
        Expr::VarRef(v) => Some(v.as_str()),
        _ => None,
    });
    let Some(Some(field)) = names.next() else {
        return Err(unsupported());
    };
    let tags: Option<Vec<&str>> = names.collect();
    let aux: Option<Vec<&str>> = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, f)| match f.expr.unparen() {
            Expr::VarRef(v) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    match (tags, aux) {
        (Some(tags), Some(aux)) => Ok(Some(SelectN {
            name,
            field,
            tags,
            n: *n as usize,
            at,
            aux,
        })),
        _ => Err(unsupported()),
    }
}

/// Functions of InfluxQL 1.6 that torc does not implement (the rest of 1.6's are above).
const INFLUXQL_ONLY: &[&str] = &["sample", "elapsed", "holt_winters", "holt_winters_with_fit"];

/// Math functions of one value (two for `atan2`, `log` and `pow`), applied per row or to
/// aggregates.
const MATH: &[&str] = &[
    "abs", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "exp", "log", "ln", "log2",
    "log10", "sqrt", "pow", "floor", "ceil", "round",
];

fn math_arity(name: &str) -> usize {
    if matches!(name, "atan2" | "log" | "pow") {
        2
    } else {
        1
    }
}

/// Applies a math function; null in, null out. `abs`, `floor`, `ceil` and `round` keep an
/// integer an integer.
fn math(name: &str, args: &[Val]) -> Val {
    if args.len() != math_arity(name) || args.iter().any(Val::is_null) {
        return Val::Null;
    }
    if let [Val::Int(i)] = args {
        match name {
            "abs" => return Val::Int(i.wrapping_abs()),
            "floor" | "ceil" | "round" => return Val::Int(*i),
            _ => {}
        }
    }
    let Some(x) = args[0].as_f64() else {
        return Val::Null;
    };
    let y = args.get(1).and_then(Val::as_f64).unwrap_or(0.0);
    Val::Float(match name {
        "abs" => x.abs(),
        "sin" => x.sin(),
        "cos" => x.cos(),
        "tan" => x.tan(),
        "asin" => x.asin(),
        "acos" => x.acos(),
        "atan" => x.atan(),
        "atan2" => x.atan2(y),
        "exp" => x.exp(),
        "log" => x.ln() / y.ln(),
        "ln" => x.ln(),
        "log2" => x.log2(),
        "log10" => x.log10(),
        "sqrt" => x.sqrt(),
        "pow" => x.powf(y),
        "floor" => x.floor(),
        "ceil" => x.ceil(),
        "round" => x.round(),
        _ => return Val::Null,
    })
}

fn is_call_kind(e: &Expr, kinds: &[&str]) -> bool {
    matches!(e.unparen(), Expr::Call { name, .. } if kinds.contains(&name.as_str()))
}

/// The column name InfluxDB gives a projection.
fn column_name(f: &Field) -> String {
    if let Some(a) = &f.alias {
        return a.clone();
    }
    fn first_name(e: &Expr) -> Option<String> {
        match e {
            Expr::VarRef(n) => Some(n.clone()),
            Expr::Call { name, .. } => Some(name.clone()),
            Expr::Paren(x) => first_name(x),
            Expr::Binary { lhs, rhs, .. } => first_name(lhs).or_else(|| first_name(rhs)),
            _ => None,
        }
    }
    first_name(&f.expr).unwrap_or_else(|| "".into())
}

fn dedupe_names(names: Vec<String>) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let c = seen.entry(n.clone()).or_insert(0);
        if *c == 0 {
            out.push(n.clone());
        } else {
            let mut cand = format!("{n}_{c}");
            while seen.contains_key(&cand) {
                *seen.get_mut(&n).unwrap_or(&mut 0) += 1;
                cand = format!("{n}_{}", seen[&n]);
            }
            out.push(cand.clone());
            seen.insert(cand, 1);
        }
        *seen.get_mut(&n).unwrap_or(&mut 0) += 1;
    }
    out
}

struct Group<'a> {
    tags: Vec<String>,
    series: Vec<&'a SeriesInfo>,
    sids: Vec<u32>,
}

/// Runs a subquery and holds its rows in an in-memory shard: each result series becomes a
/// series of the measurement it names, with its tags, and each non-null column a field. As in
/// InfluxDB 1.x, an inner query without a time condition gets the outer query's time range, and
/// the rows of a raw (non-aggregate) inner query keep all the tags of their series.
fn subquery_shard(
    db: &Tsdb,
    inner: &Select,
    outer_condition: Option<&Expr>,
    default_db: Option<&str>,
    now: i64,
    budget: &Budget,
) -> ExecResult<Arc<Shard>> {
    let mut inner = inner.clone();
    // The points of a raw inner query keep all their tags, as InfluxDB's do.
    let inner_agg = inner.fields.iter().any(|f| {
        contains_call(&f.expr, AGGREGATES)
            || contains_call(&f.expr, TRANSFORMS)
            || contains_call(&f.expr, SELECT_N)
    });
    // Grouping by every tag makes LIMIT/OFFSET count per series; a raw inner query without
    // tag dimensions limits its merged rows instead, so those are applied here, after merging.
    let mut merged_limit = None;
    if !inner_agg {
        if inner
            .dimensions
            .iter()
            .all(|d| matches!(d, Dimension::Time { .. }))
            && (inner.limit > 0 || inner.offset > 0)
        {
            merged_limit = Some((inner.limit, inner.offset));
            inner.limit = 0;
            inner.offset = 0;
        }
        inner
            .dimensions
            .retain(|d| matches!(d, Dimension::Time { .. }));
        inner.dimensions.push(Dimension::Wildcard);
    }
    if let Some(c) = outer_condition
        && !inner.condition.as_ref().is_some_and(refers_to_time)
    {
        let (min, max, _) = extract_time(c, now)?;
        let bound = |op, t| Expr::Binary {
            op,
            lhs: Box::new(Expr::VarRef("time".into())),
            rhs: Box::new(Expr::Integer(t)),
        };
        let mut conds: Vec<Expr> = inner.condition.take().into_iter().collect();
        if min != i64::MIN {
            conds.push(bound(BinOp::Gte, min));
        }
        if max != i64::MAX {
            conds.push(bound(BinOp::Lte, max));
        }
        inner.condition = conds.into_iter().reduce(|a, b| Expr::Binary {
            op: BinOp::And,
            lhs: Box::new(Expr::Paren(Box::new(a))),
            rhs: Box::new(b),
        });
    }
    let mut results = select(db, &inner, default_db, budget)?;
    if let Some((limit, offset)) = merged_limit {
        // Raw rows merge ordered by (time, series key), as in a raw query's answer.
        let mut order: Vec<(i64, String, usize, usize)> = Vec::new();
        for (i, rs) in results.iter().enumerate() {
            let tags: Vec<(String, String)> =
                rs.tags.clone().unwrap_or_default().into_iter().collect();
            let key = crate::lineproto::series_key(rs.name.as_deref().unwrap_or(""), &tags);
            for (j, row) in rs.values.iter().enumerate() {
                if let Some(Val::Time(t) | Val::Int(t)) = row.first() {
                    order.push((*t, key.clone(), i, j));
                }
            }
        }
        order.sort();
        if inner.descending {
            order.reverse();
        }
        let keep: std::collections::HashSet<(usize, usize)> = limit_offset(order, limit, offset)
            .into_iter()
            .map(|(_, _, i, j)| (i, j))
            .collect();
        for (i, rs) in results.iter_mut().enumerate() {
            let rows = std::mem::take(&mut rs.values);
            rs.values = rows
                .into_iter()
                .enumerate()
                .filter(|(j, _)| keep.contains(&(i, *j)))
                .map(|(_, r)| r)
                .collect();
        }
    }
    let mut points = Vec::new();
    for rs in results {
        let measurement = rs.name.unwrap_or_default();
        let tags: Vec<(String, String)> = rs.tags.unwrap_or_default().into_iter().collect();
        for row in rs.values {
            let time = match row.first() {
                Some(Val::Time(t) | Val::Int(t)) => *t,
                _ => continue,
            };
            let fields: Vec<(String, FieldValue)> = rs
                .columns
                .iter()
                .zip(&row)
                .skip(1)
                .filter_map(|(c, v)| {
                    let v = match v {
                        Val::Float(f) => FieldValue::Float(*f),
                        Val::Int(i) | Val::Time(i) => FieldValue::Int(*i),
                        Val::Str(s) => FieldValue::Str(s.clone()),
                        Val::Bool(b) => FieldValue::Bool(*b),
                        Val::Null => return None,
                    };
                    Some((c.clone(), v))
                })
                .collect();
            if !fields.is_empty() {
                points.push(crate::model::Point {
                    measurement: measurement.clone(),
                    tags: tags.clone(),
                    fields,
                    time,
                });
            }
        }
    }
    Ok(Shard::in_memory(&points))
}

fn select(
    db: &Tsdb,
    sel: &Select,
    default_db: Option<&str>,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    let now = now_ns();
    // Resolve the shards and measurements.
    let mut targets: Vec<(Arc<Shard>, String)> = Vec::new();
    for src in &sel.sources {
        if let Source::Subquery(inner) = src {
            let shard = subquery_shard(db, inner, sel.condition.as_ref(), default_db, now, budget)?;
            let names: Vec<String> = shard.read().index.measurements.keys().cloned().collect();
            targets.extend(names.into_iter().map(|n| (shard.clone(), n)));
            continue;
        }
        let (sdb, srp) = match src {
            Source::Measurement {
                database,
                retention_policy,
                ..
            }
            | Source::Regex {
                database,
                retention_policy,
                ..
            } => (database.clone(), retention_policy.clone()),
            Source::Subquery(_) => continue,
        };
        let dbname = match sdb.as_deref().or(default_db) {
            Some(d) if !d.is_empty() => d.to_string(),
            _ => return Err(QueryError::DatabaseNameRequired),
        };
        let (rp, _) = db
            .resolve_rp(&dbname, srp.as_deref())
            .map_err(QueryError::from_storage)?;
        let shard = db.shard(&dbname, &rp)?;
        let names = {
            let st = shard.read();
            measurements_for(&st, std::slice::from_ref(src))?
        };
        for n in names {
            if !targets
                .iter()
                .any(|(s, m)| Arc::ptr_eq(s, &shard) && *m == n)
            {
                targets.push((shard.clone(), n));
            }
        }
    }
    targets.sort_by(|a, b| a.1.cmp(&b.1));

    // A function torc does not evaluate would otherwise answer nulls, silently.
    for f in &sel.fields {
        let mut bad = None;
        f.expr.walk(&mut |e| {
            if let Expr::Call { name, .. } = e
                && !AGGREGATES.contains(&name.as_str())
                && !TRANSFORMS.contains(&name.as_str())
                && !SELECT_N.contains(&name.as_str())
                && !MATH.contains(&name.as_str())
                && bad.is_none()
            {
                bad = Some(name.clone());
            }
        });
        let mut arity = None;
        f.expr.walk(&mut |e| {
            if let Expr::Call { name, args } = e
                && MATH.contains(&name.as_str())
                && args.len() != math_arity(name)
                && arity.is_none()
            {
                arity = Some(QueryError::Arity {
                    name: name.clone(),
                    expected: math_arity(name),
                    got: args.len(),
                });
            }
        });
        if let Some(e) = arity {
            return Err(e);
        }
        if let Some(name) = bad {
            return Err(if INFLUXQL_ONLY.contains(&name.as_str()) {
                QueryError::Unimplemented { name }
            } else {
                QueryError::UndefinedFunction { name }
            });
        }
    }
    let top_n = select_n(&sel.fields)?;
    if let Some(t) = &top_n
        && sel.limit > 0
        && t.n > sel.limit
    {
        return Err(QueryError::SelectorOverLimit {
            name: t.name.to_string(),
            n: t.n,
            limit: sel.limit,
        });
    }
    let is_agg = sel.fields.iter().any(|f| {
        contains_call(&f.expr, AGGREGATES)
            || contains_call(&f.expr, TRANSFORMS)
            || contains_call(&f.expr, SELECT_N)
    });
    let has_time_group = sel
        .dimensions
        .iter()
        .any(|d| matches!(d, Dimension::Time { .. }));
    if is_agg {
        for f in &sel.fields {
            if has_bare_ref(&f.expr) && top_n.is_none() {
                return Err(QueryError::MixedAggregate);
            }
        }
        for f in &sel.fields {
            if let Expr::Call { name, args } = f.expr.unparen()
                && TRANSFORMS.contains(&name.as_str())
            {
                let inner_agg = args.first().is_some_and(|a| is_call_kind(a, AGGREGATES));
                if has_time_group && !inner_agg {
                    return Err(QueryError::TransformWithoutAggregate { name: name.clone() });
                }
                if !has_time_group && inner_agg {
                    return Err(QueryError::TransformWithoutInterval { name: name.clone() });
                }
            }
        }
    } else if has_time_group {
        return Err(QueryError::GroupByWithoutAggregate);
    }
    if !sel.fields.iter().any(|f| field_refs_any(&f.expr)) {
        return Err(QueryError::NoField);
    }

    let (tmin, tmax, rest_cond) = match &sel.condition {
        Some(c) => extract_time(c, now)?,
        None => (i64::MIN, i64::MAX, None),
    };
    let mut regexes = HashMap::new();
    if let Some(c) = &rest_cond {
        collect_regexes(c, &mut regexes)?;
    }
    // influxd's check, before any data is read: the buckets of the time range.
    if tmin != i64::MIN
        && let Some((iv, off)) = time_dimension(sel)
    {
        let hi = if tmax == i64::MAX { now } else { tmax };
        budget.buckets(crate::limits::bucket_count(tmin, hi, iv, off))?;
    }

    // Wildcard expansion uses the union over all target measurements.
    let mut all_fields: BTreeMap<String, FieldType> = BTreeMap::new();
    let mut all_tags: BTreeSet<String> = BTreeSet::new();
    // `SELECT *` over a subquery names its columns only, not its tags (as in InfluxDB 1.6).
    let mut wildcard_tags: BTreeSet<String> = BTreeSet::new();
    for (shard, m) in &targets {
        let st = shard.read();
        if let Some(mi) = st.index.measurements.get(m) {
            for (f, t) in &mi.fields {
                all_fields.entry(f.clone()).or_insert(*t);
            }
            all_tags.extend(mi.tags.keys().cloned());
            if !shard.is_in_memory() {
                wildcard_tags.extend(mi.tags.keys().cloned());
            }
        }
    }
    // Group-by tag keys.
    let mut group_keys: Vec<String> = Vec::new();
    for d in &sel.dimensions {
        match d {
            Dimension::Tag(t) => group_keys.push(t.clone()),
            Dimension::Wildcard => group_keys.extend(all_tags.iter().cloned()),
            Dimension::Regex(r) => {
                let re = compile(r)?;
                group_keys.extend(all_tags.iter().filter(|t| re.is_match(t)).cloned());
            }
            Dimension::Time { .. } => {}
        }
    }
    group_keys.sort();
    group_keys.dedup();

    // Expand projections.
    let mut fields: Vec<Field> = Vec::new();
    for f in &sel.fields {
        if f.expr == Expr::Wildcard {
            let mut names: BTreeSet<String> = all_fields.keys().cloned().collect();
            if !is_agg {
                names.extend(
                    wildcard_tags
                        .iter()
                        .filter(|t| !group_keys.contains(t))
                        .cloned(),
                );
            }
            for n in names {
                fields.push(Field {
                    expr: Expr::VarRef(n),
                    alias: None,
                });
            }
        } else {
            fields.push(f.clone());
        }
    }
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns: Vec<String> = std::iter::once("time".to_string())
        .chain(dedupe_names(fields.iter().map(column_name).collect()))
        .collect();
    // top(field, tag, N) shows the tags after its own column.
    if let Some(t) = &top_n {
        let at = (t.at + 2).min(columns.len());
        columns.splice(at..at, t.tags.iter().map(|t| t.to_string()));
    }

    let mut out: Vec<ResultSeries> = Vec::new();
    for (shard, m) in &targets {
        let st = shard.read();
        let Some(mi) = st.index.measurements.get(m) else {
            continue;
        };
        if !is_agg {
            // A raw query that names only tags returns nothing, as InfluxDB does.
            let any_field = fields.iter().any(|f| {
                let mut yes = false;
                f.expr.walk(&mut |e| {
                    if let Expr::VarRef(n) = e
                        && mi.fields.contains_key(n)
                    {
                        yes = true;
                    }
                });
                yes
            });
            if !any_field {
                continue;
            }
        }
        // Candidate series and groups.
        let mut groups: BTreeMap<Vec<String>, Group<'_>> = BTreeMap::new();
        // Equality predicates on tags narrow the candidates through the tag index.
        let mut sids: Vec<u32> = rest_cond
            .as_ref()
            .and_then(|c| index_candidates(c, mi))
            .unwrap_or_else(|| mi.series.clone());
        sids.sort_by(|a, b| {
            st.index.series[*a as usize]
                .key
                .cmp(&st.index.series[*b as usize].key)
        });
        for sid in sids {
            budget.tick()?;
            let s = &st.index.series[sid as usize];
            if let Some(c) = &rest_cond
                && series_match(c, s) == Some(false)
            {
                continue;
            }
            budget.series(1)?;
            let key: Vec<String> = group_keys
                .iter()
                .map(|k| s.tag(k).unwrap_or("").to_string())
                .collect();
            let g = groups.entry(key.clone()).or_insert_with(|| Group {
                tags: key,
                series: Vec::new(),
                sids: Vec::new(),
            });
            g.series.push(s);
            g.sids.push(sid);
        }
        // Fields to load: referenced in projections or condition, and existing.
        let mut needed: BTreeSet<String> = BTreeSet::new();
        for f in &fields {
            f.expr.walk(&mut |e| {
                if let Expr::VarRef(n) = e
                    && mi.fields.contains_key(n)
                {
                    needed.insert(n.clone());
                }
            });
        }
        let cond_needs_rows = rest_cond.as_ref().is_some_and(|c| {
            let mut yes = false;
            c.walk(&mut |e| {
                if let Expr::VarRef(n) = e
                    && (mi.fields.contains_key(n) || n.eq_ignore_ascii_case("time"))
                {
                    yes = true;
                }
            });
            yes
        });
        if let Some(c) = &rest_cond {
            c.walk(&mut |e| {
                if let Expr::VarRef(n) = e
                    && mi.fields.contains_key(n)
                {
                    needed.insert(n.clone());
                }
            });
        }
        let needed: Vec<String> = needed.into_iter().collect();
        // Linear in the fields (a wide `SELECT *` names tens of thousands).
        let mut in_projections: std::collections::HashSet<&str> = Default::default();
        for f in &fields {
            f.expr.walk(&mut |e| {
                if let Expr::VarRef(x) = e {
                    in_projections.insert(x);
                }
            });
        }
        let projected: Vec<bool> = needed
            .iter()
            .map(|n| in_projections.contains(n.as_str()))
            .collect();
        let needed_at: HashMap<&str, usize> = needed
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let needed_refs: Vec<&str> = needed.iter().map(String::as_str).collect();
        for g in groups.values() {
            // Load rows: (time, series index) keys over one flat array of field values.
            let mut rows = Rows::new(needed.len());
            // A subquery got the outer time range already; its rows are not cut again (a
            // bucket that starts before the lower bound keeps its row, as in InfluxDB 1.6).
            let (lo, hi) = if shard.is_in_memory() {
                (i64::MIN, i64::MAX)
            } else {
                (tmin, tmax)
            };
            for (si, &sid) in g.sids.iter().enumerate() {
                let cols = st.columns(sid, &needed_refs, lo, hi)?;
                budget.points(cols.iter().flatten().map(|c| c.times.len()).sum())?;
                rows.append_series(&cols, si);
            }
            rows.keys.sort_unstable_by_key(|k| (k.time, k.series));
            // Keep rows with at least one projected field, passing the condition.
            {
                let Rows {
                    width,
                    keys,
                    values,
                } = &mut rows;
                let mut late = None;
                keys.retain(|k| {
                    if late.is_some() {
                        return false;
                    }
                    if let Err(e) = budget.tick() {
                        late = Some(e);
                        return false;
                    }
                    let vals = &values[k.at..k.at + *width];
                    if !vals.iter().zip(&projected).any(|(v, p)| *p && v.is_some()) {
                        return false;
                    }
                    if cond_needs_rows && let Some(c) = &rest_cond {
                        let ctx = RowCtx {
                            series: g.series[k.series],
                            time: k.time,
                            fields: &needed,
                            values: vals,
                        };
                        return eval(c, &ctx, &regexes) == Val::Bool(true);
                    }
                    true
                });
                if let Some(e) = late {
                    return Err(e.into());
                }
            }
            let tags = (!group_keys.is_empty()).then(|| {
                group_keys
                    .iter()
                    .cloned()
                    .zip(g.tags.iter().cloned())
                    .collect::<BTreeMap<_, _>>()
            });
            let values = if is_agg {
                aggregate(sel, &fields, &needed, g, &rows, (tmin, tmax, now), budget)?
            } else {
                // Only the rows that survive ORDER BY, OFFSET and LIMIT are projected.
                let n = rows.keys.len();
                let start = sel.offset.min(n);
                let end = if sel.limit > 0 {
                    start.saturating_add(sel.limit).min(n)
                } else {
                    n
                };
                let projections: Vec<Projection<'_>> = fields
                    .iter()
                    .map(|f| Projection::compile(&f.expr, &needed_at))
                    .collect();
                (start..end)
                    .map(|j| {
                        budget.tick()?;
                        let k = &rows.keys[if sel.descending { n - 1 - j } else { j }];
                        let ctx = RowCtx {
                            series: g.series[k.series],
                            time: k.time,
                            fields: &needed,
                            values: rows.values_of(k),
                        };
                        let mut row = Vec::with_capacity(projections.len() + 1);
                        row.push(Val::Time(k.time));
                        row.extend(projections.iter().map(|p| p.eval(&ctx, &regexes)));
                        Ok(row)
                    })
                    .collect::<ExecResult<Vec<Vec<Val>>>>()?
            };
            if values.is_empty() {
                continue;
            }
            out.push(ResultSeries {
                name: Some(m.clone()),
                tags,
                columns: columns.clone(),
                values,
            });
        }
    }
    Ok(limit_offset(out, sel.slimit, sel.soffset))
}

/// The `GROUP BY time(interval, offset)` of a statement, if any.
fn time_dimension(sel: &Select) -> Option<(i64, i64)> {
    sel.dimensions.iter().find_map(|d| match d {
        Dimension::Time { interval, offset } => Some((*interval, *offset)),
        _ => None,
    })
}

fn contains_call(e: &Expr, kinds: &[&str]) -> bool {
    let mut yes = false;
    e.walk(&mut |x| {
        if is_call_kind(x, kinds) {
            yes = true;
        }
    });
    yes
}

/// True if the expression references a field outside any function call.
fn has_bare_ref(e: &Expr) -> bool {
    match e {
        Expr::VarRef(_) | Expr::Wildcard => true,
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => args.iter().any(has_bare_ref),
        Expr::Call { .. } => false,
        Expr::Paren(x) => has_bare_ref(x),
        Expr::Binary { lhs, rhs, .. } => has_bare_ref(lhs) || has_bare_ref(rhs),
        _ => false,
    }
}

fn field_refs_any(e: &Expr) -> bool {
    let mut yes = false;
    e.walk(&mut |x| {
        if matches!(x, Expr::VarRef(_) | Expr::Wildcard) {
            yes = true;
        }
    });
    yes
}

/// Where one row's values are in [`Rows::values`].
#[derive(Debug, Clone, Copy)]
struct RowKey {
    time: i64,
    /// Index of the series in its group.
    series: usize,
    /// Offset of the row's first value.
    at: usize,
}

/// The rows of a group before projection: one slot per needed field per row, in one flat
/// array (a row is not an allocation of its own), addressed by sortable keys.
struct Rows {
    width: usize,
    keys: Vec<RowKey>,
    values: Vec<Option<FieldValue>>,
}

impl Rows {
    fn new(width: usize) -> Rows {
        Rows {
            width,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    fn values_of(&self, k: &RowKey) -> &[Option<FieldValue>] {
        &self.values[k.at..k.at + self.width]
    }

    /// Merges per-field columns of one series (number `si` of its group) into rows.
    fn append_series(&mut self, cols: &[Option<crate::model::Column>], si: usize) {
        // At least as many rows as the longest column: grow once, not by doublings.
        let longest = cols
            .iter()
            .flatten()
            .map(|c| c.times.len())
            .max()
            .unwrap_or(0);
        self.keys.reserve(longest);
        self.values.reserve(longest * self.width);
        let mut idx = vec![0usize; cols.len()];
        loop {
            let mut next: Option<i64> = None;
            for (c, &i) in cols.iter().zip(&idx) {
                if let Some(c) = c
                    && let Some(&t) = c.times.get(i)
                {
                    next = Some(next.map_or(t, |n: i64| n.min(t)));
                }
            }
            let Some(t) = next else { break };
            self.keys.push(RowKey {
                time: t,
                series: si,
                at: self.values.len(),
            });
            for (c, i) in cols.iter().zip(idx.iter_mut()) {
                match c {
                    Some(c) if c.times.get(*i) == Some(&t) => {
                        self.values.push(Some(c.values.get(*i)));
                        *i += 1;
                    }
                    _ => self.values.push(None),
                }
            }
        }
    }
}

/// A projection of a raw query, resolved once per group rather than per row.
enum Projection<'e> {
    Time,
    Field(usize),
    Tag(&'e str),
    Expr(&'e Expr),
}

impl<'e> Projection<'e> {
    /// Resolves a bare reference as [`eval`] would: `time`, then a loaded field, then a tag.
    /// `needed_at`: the position of each loaded field.
    fn compile(e: &'e Expr, needed_at: &HashMap<&str, usize>) -> Projection<'e> {
        match e.unparen() {
            Expr::VarRef(n) if n == "time" => Projection::Time,
            Expr::VarRef(n) => match needed_at.get(n.as_str()) {
                Some(&i) => Projection::Field(i),
                None => Projection::Tag(n),
            },
            _ => Projection::Expr(e),
        }
    }

    fn eval(&self, row: &RowCtx<'_>, regexes: &HashMap<String, Regex>) -> Val {
        match self {
            Projection::Time => Val::Time(row.time),
            Projection::Field(i) => match &row.values[*i] {
                Some(v) => Val::from_field(v.clone()),
                None => Val::Null,
            },
            Projection::Tag(n) => match row.series.tag(n) {
                Some(v) => Val::Str(v.to_string()),
                None => Val::Null,
            },
            Projection::Expr(e) => eval(e, row, regexes),
        }
    }
}

/// A point fed to an aggregate.
#[derive(Clone)]
struct Pt {
    t: i64,
    v: Val,
}

/// Aggregates one group's rows; `(tmin, tmax, now)` are the statement's time bounds.
fn aggregate(
    sel: &Select,
    fields: &[Field],
    needed: &[String],
    g: &Group<'_>,
    rows: &Rows,
    (tmin, tmax, now): (i64, i64, i64),
    budget: &Budget,
) -> ExecResult<Vec<Vec<Val>>> {
    let time_dim = time_dimension(sel);
    let _ = g;
    // Points of a field, in row order.
    let points_of = |name: &str| -> Vec<Pt> {
        let Some(i) = needed.iter().position(|n| n == name) else {
            return Vec::new();
        };
        rows.keys
            .iter()
            .filter_map(|k| {
                rows.values_of(k)[i].clone().map(|v| Pt {
                    t: k.time,
                    v: Val::from_field(v),
                })
            })
            .collect()
    };
    // Raw transforms without GROUP BY time.
    if time_dim.is_none()
        && let Some(f) = fields.iter().find(|f| is_call_kind(&f.expr, TRANSFORMS))
    {
        if fields.len() != 1 {
            return Err(QueryError::TransformCombined);
        }
        let Expr::Call { name, args } = f.expr.unparen() else {
            unreachable!()
        };
        let Some(Expr::VarRef(field)) = args.first().map(|a| a.unparen()) else {
            return Err(QueryError::FieldArgument { name: name.clone() });
        };
        let unit = transform_unit(name, args)?;
        let pts = points_of(field);
        let mut out = transform(name, &pts, unit);
        if sel.descending {
            out.reverse();
        }
        let vals = out.into_iter().map(|p| vec![Val::Time(p.t), p.v]).collect();
        return Ok(limit_offset(vals, sel.limit, sel.offset));
    }
    // Buckets.
    let first_t = rows.keys.first().map(|k| k.time);
    let Some(first_t) = first_t else {
        return Ok(Vec::new());
    };
    let (starts, interval): (Vec<i64>, Option<i64>) = match time_dim {
        Some((iv, off)) => {
            let lo = if tmin == i64::MIN { first_t } else { tmin };
            let hi = if tmax == i64::MAX { now } else { tmax };
            let b0 = lo - (lo - off).rem_euclid(iv);
            // Counted before they are built: each bucket costs memory like a point.
            let n = crate::limits::bucket_count(lo, hi, iv, off);
            budget.buckets(n)?;
            budget.points(n)?;
            // With both limits off, an absurd count is still an error, not an abort.
            let mut starts = Vec::new();
            starts
                .try_reserve_exact(n)
                .map_err(|_| QueryError::BucketsTooMany { count: n })?;
            starts.extend((0..n).map(|k| b0.saturating_add((k as i64).saturating_mul(iv))));
            (starts, Some(iv))
        }
        None => (vec![if tmin == i64::MIN { 0 } else { tmin }], None),
    };
    let nb = starts.len();
    let bucket_of = |t: i64| -> Option<usize> {
        match interval {
            None => Some(0),
            Some(iv) => {
                let k = (t - starts[0]).div_euclid(iv);
                (k >= 0 && (k as usize) < nb).then_some(k as usize)
            }
        }
    };
    // top/bottom: the N greatest (least) values of each bucket, ties to the earlier point
    // (with tag arguments, first the best point of each distinct tag combination), shown in time
    // order, each at its own time with the tags and fields asked beside it (InfluxDB 1.6).
    if let Some(sn) = select_n(fields)? {
        let tag_of = |k: &RowKey, tag: &str| -> Val {
            g.series[k.series]
                .tag(tag)
                .map_or(Val::Null, |v| Val::Str(v.to_string()))
        };
        let mut per_bucket: Vec<Vec<(i64, Val, usize)>> = vec![Vec::new(); nb];
        if let Some(vi) = needed.iter().position(|n| n == sn.field) {
            for (ki, k) in rows.keys.iter().enumerate() {
                let Some(v) = rows.values_of(k)[vi].clone() else {
                    continue;
                };
                let v = Val::from_field(v);
                if v.as_f64().is_none() {
                    let go_type = match v {
                        Val::Bool(_) => "boolean",
                        _ => "string",
                    };
                    return Err(QueryError::SelectorType {
                        name: sn.name.to_string(),
                        go_type,
                    });
                }
                if let Some(b) = bucket_of(k.time) {
                    per_bucket[b].push((k.time, v, ki));
                }
            }
        }
        let top = sn.name == "top";
        let rank = |a: &(i64, Val, usize), b: &(i64, Val, usize)| {
            let (x, y) = (a.1.as_f64().unwrap_or(0.0), b.1.as_f64().unwrap_or(0.0));
            let by_value = if top {
                y.total_cmp(&x)
            } else {
                x.total_cmp(&y)
            };
            by_value.then(a.0.cmp(&b.0))
        };
        // ORDER BY time DESC reverses the buckets; a bucket's points stay in time order.
        if sel.descending {
            per_bucket.reverse();
        }
        let mut out = Vec::new();
        for mut pts in per_bucket {
            if !sn.tags.is_empty() {
                let mut best: BTreeMap<Vec<String>, (i64, Val, usize)> = BTreeMap::new();
                for p in pts {
                    let k = &rows.keys[p.2];
                    let key: Vec<String> = sn
                        .tags
                        .iter()
                        .map(|t| g.series[k.series].tag(t).unwrap_or("").to_string())
                        .collect();
                    match best.get(&key) {
                        Some(cur) if rank(&p, cur) != std::cmp::Ordering::Less => {}
                        _ => {
                            best.insert(key, p);
                        }
                    }
                }
                pts = best.into_values().collect();
            }
            pts.sort_by(rank);
            pts.truncate(sn.n);
            pts.sort_by_key(|p| p.0);
            for (t, v, ki) in pts {
                let k = &rows.keys[ki];
                let mut row = vec![Val::Time(t)];
                let mut aux = sn.aux.iter();
                for i in 0..=sn.aux.len() {
                    if i == sn.at {
                        row.push(v.clone());
                        row.extend(sn.tags.iter().map(|tag| tag_of(k, tag)));
                    } else if let Some(name) = aux.next() {
                        row.push(match needed.iter().position(|n| n == name) {
                            Some(i) => rows.values_of(k)[i]
                                .clone()
                                .map_or(Val::Null, Val::from_field),
                            None => tag_of(k, name),
                        });
                    }
                }
                out.push(row);
            }
        }
        return Ok(limit_offset(out, sel.limit, sel.offset));
    }
    // Per projection: a column of bucket values (and, for a lone selector, its point time).
    let lone_selector =
        time_dim.is_none() && fields.len() == 1 && is_call_kind(&fields[0].expr, SELECTORS);
    // The points of each referenced field split by bucket, computed once per field rather
    // than once per bucket (which made GROUP BY time quadratic).
    let bucketed: std::cell::RefCell<HashMap<String, Vec<Vec<Pt>>>> = Default::default();
    let points_in_bucket = |field: &str, b: usize| -> Vec<Pt> {
        let mut cache = bucketed.borrow_mut();
        if !cache.contains_key(field) {
            let mut per_bucket: Vec<Vec<Pt>> = vec![Vec::new(); nb];
            for p in points_of(field) {
                if let Some(k) = bucket_of(p.t) {
                    per_bucket[k].push(p);
                }
            }
            cache.insert(field.to_string(), per_bucket);
        }
        cache
            .get(field)
            .and_then(|per_bucket| per_bucket.get(b))
            .cloned()
            .unwrap_or_default()
    };
    let mut cols: Vec<Vec<Val>> = Vec::new();
    let mut sel_times: Vec<Option<i64>> = vec![None; nb];
    let mut is_count: Vec<bool> = Vec::new();
    let mut is_transform: Vec<bool> = Vec::new();
    for f in fields {
        let mut col = vec![Val::Null; nb];
        let (expr, transform_name) = match f.expr.unparen() {
            Expr::Call { name, args } if TRANSFORMS.contains(&name.as_str()) => (
                args.first().cloned().unwrap_or(Expr::Wildcard),
                Some((name.clone(), args.clone())),
            ),
            e => (e.clone(), None),
        };
        is_count.push(
            matches!(expr.unparen(), Expr::Call { name, .. } if name == "count")
                && transform_name.is_none(),
        );
        is_transform.push(transform_name.is_some());
        for (b, slot) in col.iter_mut().enumerate() {
            budget.tick()?;
            *slot = eval_agg_expr(
                &expr,
                &|field: &str| points_in_bucket(field, b),
                if lone_selector {
                    Some(&mut sel_times[b])
                } else {
                    None
                },
            )?;
        }
        if let Some((name, args)) = transform_name {
            // Over GROUP BY time, the default unit is the interval (InfluxDB 1.x).
            let unit = match (args.len() < 2, interval) {
                (true, Some(iv)) if name.contains("derivative") => iv,
                _ => transform_unit(&name, &args)?,
            };
            let pts: Vec<Pt> = col
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_null())
                .map(|(b, v)| Pt {
                    t: starts[b],
                    v: v.clone(),
                })
                .collect();
            let res = transform(&name, &pts, unit);
            col = vec![Val::Null; nb];
            for p in res {
                if let Some(b) = bucket_of(p.t) {
                    col[b] = p.v;
                }
            }
        }
        cols.push(col);
    }
    // Assemble rows, fill.
    let mut out: Vec<Vec<Val>> = Vec::with_capacity(nb);
    let mut prev: Vec<Val> = vec![Val::Null; cols.len()];
    for b in 0..nb {
        budget.tick()?;
        let t = match sel_times[b] {
            Some(t) => t,
            None => starts[b],
        };
        let mut row = vec![Val::Time(t)];
        let mut all_null = true;
        for (c, col) in cols.iter().enumerate() {
            let mut v = col[b].clone();
            if v.is_null() {
                match &sel.fill {
                    Fill::Previous => v = prev[c].clone(),
                    Fill::Number(n) if !is_transform[c] => v = Val::Float(*n),
                    Fill::Integer(n) if !is_transform[c] => {
                        v = if cols_is_float(col) {
                            Val::Float(*n as f64)
                        } else {
                            Val::Int(*n)
                        }
                    }
                    Fill::Linear if interval.is_some() => v = linear(col, b),
                    _ => {}
                }
                // The fill of GROUP BY time gives count 0 (InfluxDB 1.6); without an
                // interval a count over no values stays null.
                if v.is_null() && is_count[c] && sel.fill != Fill::None && interval.is_some() {
                    v = Val::Int(0);
                }
            } else {
                all_null = false;
            }
            if !v.is_null() {
                prev[c] = v.clone();
            }
            row.push(v);
        }
        if all_null && (sel.fill == Fill::None || is_transform.iter().any(|x| *x)) {
            continue;
        }
        if all_null && interval.is_none() {
            continue;
        }
        out.push(row);
    }
    if sel.descending {
        out.reverse();
    }
    Ok(limit_offset(out, sel.limit, sel.offset))
}

fn cols_is_float(col: &[Val]) -> bool {
    col.iter().any(|v| matches!(v, Val::Float(_)))
}

fn linear(col: &[Val], b: usize) -> Val {
    let before = (0..b)
        .rev()
        .find_map(|i| col[i].as_f64().map(|v| (i, v, &col[i])));
    let after = (b + 1..col.len()).find_map(|i| col[i].as_f64().map(|v| (i, v)));
    match (before, after) {
        (Some((i0, v0, orig)), Some((i1, v1))) => {
            let v = v0 + (v1 - v0) * (b - i0) as f64 / (i1 - i0) as f64;
            match orig {
                Val::Int(_) => Val::Int(v as i64),
                _ => Val::Float(v),
            }
        }
        _ => Val::Null,
    }
}

/// The unit of a derivative (a duration, 1s by default), or the window of `moving_average`.
fn transform_unit(name: &str, args: &[Expr]) -> ExecResult<i64> {
    if name == "moving_average" {
        return match args.get(1).map(|a| a.unparen()) {
            Some(Expr::Integer(n)) if *n > 1 => Ok(*n),
            Some(Expr::Integer(n)) => Err(QueryError::MovingAverageWindow { n: *n }),
            _ => Err(QueryError::Arity {
                name: name.to_string(),
                expected: 2,
                got: args.len(),
            }),
        };
    }
    if name == "cumulative_sum" && args.len() != 1 {
        return Err(QueryError::Arity {
            name: name.to_string(),
            expected: 1,
            got: args.len(),
        });
    }
    match args.get(1).map(|a| a.unparen()) {
        None => Ok(1_000_000_000),
        Some(Expr::Duration(d)) if *d > 0 => Ok(*d),
        Some(_) => Err(QueryError::TransformUnit {
            name: name.to_string(),
        }),
    }
}

fn transform(name: &str, pts: &[Pt], unit: i64) -> Vec<Pt> {
    if name == "cumulative_sum" {
        let mut acc: Option<Val> = None;
        return pts
            .iter()
            .filter_map(|p| {
                let next = match (&acc, &p.v) {
                    (None, v @ (Val::Int(_) | Val::Float(_))) => v.clone(),
                    (Some(Val::Int(a)), Val::Int(b)) => Val::Int(a.wrapping_add(*b)),
                    (Some(a), b) => Val::Float(a.as_f64()? + b.as_f64()?),
                    (None, _) => return None,
                };
                acc = Some(next.clone());
                Some(Pt { t: p.t, v: next })
            })
            .collect();
    }
    if name == "moving_average" {
        let n = unit.max(1) as usize;
        let nums: Vec<(i64, f64)> = pts
            .iter()
            .filter_map(|p| p.v.as_f64().map(|v| (p.t, v)))
            .collect();
        return nums
            .windows(n)
            .map(|w| Pt {
                t: w[n - 1].0,
                v: Val::Float(w.iter().map(|(_, v)| v).sum::<f64>() / n as f64),
            })
            .collect();
    }
    let mut out = Vec::new();
    let mut prev: Option<&Pt> = None;
    for p in pts {
        let Some(pv) = prev else {
            prev = Some(p);
            continue;
        };
        if p.t == pv.t {
            continue;
        }
        let (Some(a), Some(b)) = (pv.v.as_f64(), p.v.as_f64()) else {
            prev = Some(p);
            continue;
        };
        let v = match name {
            "derivative" | "non_negative_derivative" => {
                (b - a) / ((p.t - pv.t) as f64 / unit as f64)
            }
            _ => b - a,
        };
        prev = Some(p);
        if name.starts_with("non_negative") && v < 0.0 {
            continue;
        }
        let v = if name.contains("difference") {
            match (&pv.v, &p.v) {
                (Val::Int(x), Val::Int(y)) => Val::Int(y - x),
                _ => Val::Float(v),
            }
        } else {
            Val::Float(v)
        };
        out.push(Pt { t: p.t, v });
    }
    out
}

/// Evaluates an aggregate expression (calls and arithmetic) for one bucket.
fn eval_agg_expr(
    e: &Expr,
    pts_of: &dyn Fn(&str) -> Vec<Pt>,
    sel_time: Option<&mut Option<i64>>,
) -> ExecResult<Val> {
    match e.unparen() {
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => {
            let vals = args
                .iter()
                .map(|a| eval_agg_expr(a, pts_of, None))
                .collect::<ExecResult<Vec<Val>>>()?;
            Ok(math(name, &vals))
        }
        Expr::Call { name, args } => {
            let field = match args.first().map(|a| a.unparen()) {
                Some(Expr::VarRef(f)) => f.clone(),
                _ => return Err(QueryError::FieldArgument { name: name.clone() }),
            };
            let pts = pts_of(&field);
            let (v, t) = agg(name, &pts, args)?;
            if let (Some(st), Some(t)) = (sel_time, t) {
                *st = Some(t);
            }
            Ok(v)
        }
        Expr::Binary { op, lhs, rhs } => {
            let l = eval_agg_expr(lhs, pts_of, None)?;
            let r = eval_agg_expr(rhs, pts_of, None)?;
            Ok(binop(*op, l, r))
        }
        Expr::Integer(i) => Ok(Val::Int(*i)),
        Expr::Number(f) => Ok(Val::Float(*f)),
        _ => Ok(Val::Null),
    }
}

/// Computes one aggregate; returns the value and, for selectors, the selected point's time.
fn agg(name: &str, pts: &[Pt], args: &[Expr]) -> ExecResult<(Val, Option<i64>)> {
    if name == "count" {
        return Ok((
            if pts.is_empty() {
                Val::Null
            } else {
                Val::Int(pts.len() as i64)
            },
            None,
        ));
    }
    if pts.is_empty() {
        return Ok((Val::Null, None));
    }
    let nums: Vec<f64> = pts.iter().filter_map(|p| p.v.as_f64()).collect();
    let all_int = pts.iter().all(|p| matches!(p.v, Val::Int(_)));
    let numeric = pts
        .iter()
        .all(|p| matches!(p.v, Val::Int(_) | Val::Float(_)));
    let need_numeric = |n: &str| -> ExecResult<()> {
        if numeric {
            Ok(())
        } else {
            Err(QueryError::NotNumeric {
                name: n.to_string(),
            })
        }
    };
    Ok(match name {
        "mean" => {
            need_numeric("mean")?;
            (
                Val::Float(nums.iter().sum::<f64>() / nums.len() as f64),
                None,
            )
        }
        "sum" => {
            need_numeric("sum")?;
            if all_int {
                (
                    Val::Int(
                        pts.iter()
                            .map(|p| if let Val::Int(i) = p.v { i } else { 0 })
                            .fold(0i64, i64::wrapping_add),
                    ),
                    None,
                )
            } else {
                (Val::Float(nums.iter().sum()), None)
            }
        }
        "median" => {
            need_numeric("median")?;
            let mut s = nums.clone();
            s.sort_by(|a, b| a.total_cmp(b));
            let n = s.len();
            let v = if n % 2 == 1 {
                s[n / 2]
            } else {
                (s[n / 2 - 1] + s[n / 2]) / 2.0
            };
            (Val::Float(v), None)
        }
        "spread" => {
            need_numeric("spread")?;
            if all_int {
                let ints: Vec<i64> = pts
                    .iter()
                    .map(|p| if let Val::Int(i) = p.v { i } else { 0 })
                    .collect();
                let mx = ints.iter().copied().max().unwrap_or(0);
                let mn = ints.iter().copied().min().unwrap_or(0);
                (Val::Int(mx.wrapping_sub(mn)), None)
            } else {
                let mx = nums.iter().copied().fold(f64::MIN, f64::max);
                let mn = nums.iter().copied().fold(f64::MAX, f64::min);
                (Val::Float(mx - mn), None)
            }
        }
        "stddev" => {
            need_numeric("stddev")?;
            if nums.len() < 2 {
                (Val::Null, None)
            } else {
                let mean = nums.iter().sum::<f64>() / nums.len() as f64;
                let var = nums.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
                    / (nums.len() - 1) as f64;
                (Val::Float(var.sqrt()), None)
            }
        }
        "min" | "max" => {
            need_numeric(name)?;
            let mut best = &pts[0];
            for p in &pts[1..] {
                let (a, b) = (p.v.as_f64().unwrap_or(0.0), best.v.as_f64().unwrap_or(0.0));
                let better = if name == "min" { a < b } else { a > b };
                if better || (a == b && p.t < best.t) {
                    best = p;
                }
            }
            (best.v.clone(), Some(best.t))
        }
        "first" | "last" => {
            let mut best = &pts[0];
            for p in &pts[1..] {
                let better = if name == "first" {
                    p.t < best.t
                } else {
                    p.t > best.t
                };
                let tie_bigger = p.t == best.t && val_gt(&p.v, &best.v);
                if better || tie_bigger {
                    best = p;
                }
            }
            (best.v.clone(), Some(best.t))
        }
        "percentile" => {
            need_numeric("percentile")?;
            let pct = match args.get(1).map(|a| a.unparen()) {
                Some(Expr::Integer(i)) => *i as f64,
                Some(Expr::Number(f)) => *f,
                _ => return Err(QueryError::PercentileArgument),
            };
            let mut s: Vec<&Pt> = pts.iter().collect();
            s.sort_by(|a, b| {
                a.v.as_f64()
                    .unwrap_or(0.0)
                    .total_cmp(&b.v.as_f64().unwrap_or(0.0))
                    .then(a.t.cmp(&b.t))
            });
            let i = (s.len() as f64 * pct / 100.0 + 0.5).floor() as i64 - 1;
            if i < 0 || i as usize >= s.len() {
                (Val::Null, None)
            } else {
                (s[i as usize].v.clone(), Some(s[i as usize].t))
            }
        }
        other => {
            return Err(QueryError::UndefinedFunction {
                name: other.to_string(),
            });
        }
    })
}

fn val_gt(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x > y,
        (Val::Bool(x), Val::Bool(y)) => x & !y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x > y,
            _ => false,
        },
    }
}

/// Used by the 0.8 shim: all values of a field column as `Val`s.
pub fn values_to_vals(v: &Values) -> Vec<Val> {
    (0..v.len()).map(|i| Val::from_field(v.get(i))).collect()
}

/// A retention policy keeps data forever (0) or at least an hour, as InfluxDB 1.6 requires.
fn check_rp_duration(duration_ns: i64) -> ExecResult<()> {
    if duration_ns != 0 && duration_ns < 3_600_000_000_000 {
        return Err(QueryError::RetentionTooShort);
    }
    Ok(())
}

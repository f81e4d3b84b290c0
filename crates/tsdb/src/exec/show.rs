//! The `SHOW` statements (databases, retention policies, measurements, series, tag keys and
//! values, field keys, cardinalities, continuous queries): each reads the catalog or the
//! shards' series indexes, never the data, and answers as influxd 1.6 does (columns, order,
//! `LIMIT`/`OFFSET`, nothing for an empty answer where influxd gives nothing). Conditions are
//! on tags only (a tag a series lacks compares as the empty string).
//! What it does not do: `SHOW USERS`/`SHOW GRANTS` (see [`super::users`]), nor `SELECT`.

use std::collections::{BTreeMap, BTreeSet};

use super::cond::series_match_tags;
use super::error::{ExecResult, QueryError};
use super::sources::{check_db, compile, limit_offset, measurements_for, need_db};
use super::value::{ResultSeries, Val};
use crate::auth::Caller;
use crate::influxql::{Expr, Source, Statement, TagKeyMatch};
use crate::limits::Budget;
use crate::model::FieldType;
use crate::storage::{SeriesInfo, Tsdb};

/// Runs a `SHOW` statement of the catalog or the series indexes (an error for any other statement).
pub(super) fn execute(
    db: &Tsdb,
    stmt: &Statement,
    default_db: Option<&str>,
    caller: &Caller,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    match stmt {
        Statement::ShowSeriesCardinality { on } => {
            cardinality(db, on.as_deref(), default_db, true, budget)
        }
        Statement::ShowMeasurementCardinality { on } => {
            cardinality(db, on.as_deref(), default_db, false, budget)
        }
        Statement::ShowContinuousQueries => Ok(continuous_queries(db)),
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
            retention_policies(db, need_db(on.as_deref(), default_db))
        }
        Statement::ShowMeasurements {
            on,
            sources,
            condition,
            limit,
            offset,
        }
        | Statement::ShowSeries {
            on,
            sources,
            condition,
            limit,
            offset,
        }
        | Statement::ShowTagKeys {
            on,
            sources,
            condition,
            limit,
            offset,
        }
        | Statement::ShowTagValues {
            on,
            sources,
            condition,
            limit,
            offset,
            ..
        } => Listing::new(
            db, on, default_db, sources, condition, *limit, *offset, budget,
        )
        .and_then(|q| match stmt {
            Statement::ShowSeries { .. } => q.series(),
            Statement::ShowTagKeys { .. } => q.tag_keys(),
            Statement::ShowTagValues { keys, .. } => q.tag_values(keys),
            _ => q.measurements(),
        }),
        Statement::ShowFieldKeys { on, sources } => field_keys(db, on, default_db, sources),
        other => Err(QueryError::Misrouted {
            kind: "SHOW",
            statement: other.to_string(),
        }),
    }
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

/// `SHOW SERIES CARDINALITY` (`series`) or `SHOW MEASUREMENT CARDINALITY`.
fn cardinality(
    db: &Tsdb,
    on: Option<&str>,
    default_db: Option<&str>,
    series: bool,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    let name = need_db(on, default_db)?;
    check_db(db, name)?;
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

/// `SHOW CONTINUOUS QUERIES`: a series per database (one without queries has no rows), each
/// query's name and its text as stored.
fn continuous_queries(db: &Tsdb) -> Vec<ResultSeries> {
    let stored = db.continuous_queries();
    db.databases()
        .into_iter()
        .map(|d| ResultSeries {
            values: stored
                .iter()
                .filter(|(sd, _)| *sd == d)
                .map(|(_, q)| vec![Val::Str(q.name.clone()), Val::Str(q.query.clone())])
                .collect(),
            name: Some(d),
            tags: None,
            columns: vec!["name".into(), "query".into()],
        })
        .collect()
}

/// `SHOW RETENTION POLICIES` of the database `name` (or the error of naming none).
fn retention_policies(db: &Tsdb, name: ExecResult<&str>) -> ExecResult<Vec<ResultSeries>> {
    let name = name?;
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

/// A `SHOW` of the series index (measurements, series, tag keys or values): its database
/// (checked), sources, tag condition and `LIMIT`/`OFFSET`.
struct Listing<'a> {
    db: &'a Tsdb,
    name: &'a str,
    sources: &'a [Source],
    condition: Option<&'a Expr>,
    limit: usize,
    offset: usize,
    budget: &'a Budget,
}

impl<'a> Listing<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        db: &'a Tsdb,
        on: &'a Option<String>,
        default_db: Option<&'a str>,
        sources: &'a [Source],
        condition: &'a Option<Expr>,
        limit: usize,
        offset: usize,
        budget: &'a Budget,
    ) -> ExecResult<Listing<'a>> {
        let name = need_db(on.as_deref(), default_db)?;
        check_db(db, name)?;
        Ok(Listing {
            db,
            name,
            sources,
            condition: condition.as_ref(),
            limit,
            offset,
            budget,
        })
    }

    /// True when the series passes the condition (every series without one).
    fn admits(&self, s: &SeriesInfo) -> bool {
        self.condition
            .is_none_or(|c| series_match_tags(c, s) != Some(false))
    }

    fn measurements(&self) -> ExecResult<Vec<ResultSeries>> {
        let mut set = BTreeSet::new();
        for shard in self.db.shards_of(self.name) {
            let st = shard.read();
            for m in measurements_for(&st, self.sources)? {
                let Some(mi) = st.index.measurements.get(&m) else {
                    continue;
                };
                self.budget.tick()?;
                let ok = match self.condition {
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
        Ok(self.one_column(Some("measurements"), "name", set))
    }

    /// One series of one string column (`column`) holding `names`, cut by the statement's
    /// `LIMIT` and `OFFSET`; none when that leaves nothing.
    fn one_column(
        &self,
        series: Option<&str>,
        column: &str,
        names: BTreeSet<String>,
    ) -> Vec<ResultSeries> {
        let vals = limit_offset(
            names.into_iter().map(|m| vec![Val::Str(m)]).collect(),
            self.limit,
            self.offset,
        );
        if vals.is_empty() {
            return Vec::new();
        }
        vec![ResultSeries {
            name: series.map(Into::into),
            tags: None,
            columns: vec![column.into()],
            values: vals,
        }]
    }

    /// Calls `f` with each series the statement's sources and condition admit, and its
    /// measurement's name (one budget tick per series looked at).
    fn each_admitted(&self, mut f: impl FnMut(&str, &SeriesInfo)) -> ExecResult<()> {
        for shard in self.db.shards_of(self.name) {
            let st = shard.read();
            for m in measurements_for(&st, self.sources)? {
                let mi = &st.index.measurements[&m];
                for &sid in &mi.series {
                    self.budget.tick()?;
                    let s = &st.index.series[sid as usize];
                    if self.admits(s) {
                        f(&m, s);
                    }
                }
            }
        }
        Ok(())
    }

    fn series(&self) -> ExecResult<Vec<ResultSeries>> {
        let mut keys = BTreeSet::new();
        self.each_admitted(|_, s| {
            keys.insert(s.key.clone());
        })?;
        Ok(self.one_column(None, "key", keys))
    }

    fn tag_keys(&self) -> ExecResult<Vec<ResultSeries>> {
        let mut per: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        self.each_admitted(|m, s| {
            per.entry(m.to_owned())
                .or_default()
                .extend(s.tags.iter().map(|(k, _)| k.clone()));
        })?;
        Ok(per
            .into_iter()
            .flat_map(|(m, keys)| self.one_column(Some(&m), "tagKey", keys))
            .collect())
    }

    fn tag_values(&self, keys: &TagKeyMatch) -> ExecResult<Vec<ResultSeries>> {
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
        self.each_admitted(|m, s| {
            for (k, v) in &s.tags {
                if key_ok(k) {
                    per.entry(m.to_owned())
                        .or_default()
                        .insert((k.clone(), v.clone()));
                }
            }
        })?;
        Ok(per
            .into_iter()
            .filter_map(|(m, kvs)| {
                let vals = limit_offset(
                    kvs.into_iter()
                        .map(|(k, v)| vec![Val::Str(k), Val::Str(v)])
                        .collect(),
                    self.limit,
                    self.offset,
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
}

/// `SHOW FIELD KEYS`: each measurement's fields with the type each was first written with.
fn field_keys(
    db: &Tsdb,
    on: &Option<String>,
    default_db: Option<&str>,
    sources: &[Source],
) -> ExecResult<Vec<ResultSeries>> {
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

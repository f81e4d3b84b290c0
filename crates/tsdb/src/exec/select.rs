//! `SELECT`, the executor of a plan: resolves the sources to (shard, measurement) targets (a
//! subquery runs first, into an in-memory shard), plans the statement ([`super::plan`]),
//! expands wildcards, groups the matching series, loads and filters their rows, and either
//! projects them (a raw query) or hands them to [`super::aggregate`].
//! What it does not do: decide what the statement means (the plan does) or function
//! arithmetic (see [`super::functions`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use super::aggregate::aggregate;
use super::cond::{extract_time, index_candidates, refers_to_time, series_match};
use super::error::{ExecResult, QueryError};
use super::eval::{RowCtx, eval};
use super::merge::{Aux, merge_like_influxd};
use super::plan::{Condition, Projection, SelectPlan, Shape, TagGroup, plan};
use super::rows::{Group, RowProjection, Rows};
use super::sources::{compile, limit_offset, measurements_for};
use super::term::{Kind, Term};
use super::value::{ResultSeries, Val};
use crate::influxql::{BinOp, Dimension, Expr, Select, Source};
use crate::limits::Budget;
use crate::model::{FieldType, FieldValue};
use crate::storage::{MeasurementIndex, Shard, ShardState, Tsdb, now_ns};

/// Column names made unique as influxd makes them (`mean`, `mean_1`, ...).
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

/// Runs a subquery and holds its rows in an in-memory shard: each result series becomes a
/// series of the measurement it names, with its tags, and each non-null column a field. As in
/// InfluxDB 1.x, an inner query without a time condition gets the outer query's time range, and
/// the rows of a raw (non-aggregate) inner query keep all the tags of their series.
pub(super) fn subquery_shard(
    db: &Tsdb,
    inner: &Select,
    outer_condition: Option<&Expr>,
    default_db: Option<&str>,
    now: i64,
    budget: &Budget,
) -> ExecResult<Arc<Shard>> {
    let mut inner = inner.clone();
    // The points of a raw inner query keep all their tags, as InfluxDB's do.
    let inner_agg = inner
        .fields
        .iter()
        .any(|f| Term::lower(&f.expr).contains_call(Kind::makes_aggregate_query));
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
    let mut results = select_at(db, &inner, default_db, now, budget)?;
    if let Some((limit, offset)) = merged_limit {
        limit_merged(&mut results, limit, offset, inner.descending);
    }
    Ok(Shard::in_memory(&as_points(results)))
}

/// `LIMIT`/`OFFSET` over the rows of several series merged as a raw query's answer orders
/// them: by (time, series key), reversed for `ORDER BY time DESC`.
fn limit_merged(results: &mut [ResultSeries], limit: usize, offset: usize, descending: bool) {
    // Raw rows merge ordered by (time, series key), as in a raw query's answer.
    let mut order: Vec<(i64, String, usize, usize)> = Vec::new();
    for (i, rs) in results.iter().enumerate() {
        let tags: Vec<(String, String)> = rs.tags.clone().unwrap_or_default().into_iter().collect();
        let key = crate::lineproto::series_key(rs.name.as_deref().unwrap_or(""), &tags);
        for (j, row) in rs.values.iter().enumerate() {
            if let Some(Val::Time(t) | Val::Int(t)) = row.first() {
                order.push((*t, key.clone(), i, j));
            }
        }
    }
    order.sort();
    if descending {
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

/// The rows of result series as points: each series' name and tags, each non-null column a
/// field.
fn as_points(results: Vec<ResultSeries>) -> Vec<crate::model::Point> {
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
    points
}

/// Runs a `SELECT` now.
pub(super) fn select(
    db: &Tsdb,
    sel: &Select,
    default_db: Option<&str>,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    select_at(db, sel, default_db, now_ns(), budget)
}

/// Runs a `SELECT` at `now`: its sources resolved, then planned, then executed.
fn select_at(
    db: &Tsdb,
    sel: &Select,
    default_db: Option<&str>,
    now: i64,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    let targets = resolve_targets(db, sel, default_db, now, budget)?;
    let plan = plan(sel, now)?;
    // influxd's check, before any data is read: the buckets of the time range.
    if plan.time.min != i64::MIN
        && let Some(iv) = plan.grouping.interval
    {
        let hi = if plan.time.max == i64::MAX {
            now
        } else {
            plan.time.max
        };
        budget.buckets(crate::limits::bucket_count(
            plan.time.min,
            hi,
            iv.every,
            iv.offset,
        ))?;
    }
    let (group_keys, fields) = expand(&plan, &targets)?;
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let mut columns: Vec<String> = std::iter::once("time".to_string())
        .chain(dedupe_names(
            fields.iter().map(Projection::column_name).collect(),
        ))
        .collect();
    // top(field, tag, N) shows the tags after its own column.
    if let Shape::TopBottom(t) = &plan.shape {
        let at = (t.at + 2).min(columns.len());
        columns.splice(at..at, t.tags.iter().cloned());
    }
    let q = Query {
        plan: &plan,
        fields: &fields,
        group_keys: &group_keys,
        columns: &columns,
        budget,
    };
    let mut out: Vec<ResultSeries> = Vec::new();
    for (shard, m) in &targets {
        q.run_target(shard, m, &mut out)?;
    }
    Ok(limit_offset(out, plan.limits.slimit, plan.limits.soffset))
}

/// The (shard, measurement) pairs a statement reads, by measurement name: a subquery runs
/// first into an in-memory shard; a stored source's database and retention policy must exist.
fn resolve_targets(
    db: &Tsdb,
    sel: &Select,
    default_db: Option<&str>,
    now: i64,
    budget: &Budget,
) -> ExecResult<Vec<(Arc<Shard>, String)>> {
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
    Ok(targets)
}

/// The group-by tag keys and the projections with wildcards expanded, over the union of the
/// targets' fields and tags.
fn expand(
    plan: &SelectPlan,
    targets: &[(Arc<Shard>, String)],
) -> ExecResult<(Vec<String>, Vec<Projection>)> {
    let mut all_fields: BTreeMap<String, FieldType> = BTreeMap::new();
    let mut all_tags: BTreeSet<String> = BTreeSet::new();
    // `SELECT *` over a subquery names its columns only, not its tags (as in InfluxDB 1.6).
    let mut wildcard_tags: BTreeSet<String> = BTreeSet::new();
    for (shard, m) in targets {
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
    let mut group_keys: Vec<String> = Vec::new();
    for d in &plan.grouping.tags {
        match d {
            TagGroup::Tag(t) => group_keys.push(t.clone()),
            TagGroup::All => group_keys.extend(all_tags.iter().cloned()),
            TagGroup::Regex(r) => {
                let re = compile(r)?;
                group_keys.extend(all_tags.iter().filter(|t| re.is_match(t)).cloned());
            }
        }
    }
    group_keys.sort();
    group_keys.dedup();
    let mut fields: Vec<Projection> = Vec::new();
    for f in &plan.projections {
        if f.term == Term::Wildcard {
            let mut names: BTreeSet<String> = all_fields.keys().cloned().collect();
            // Beside a selector, `*` is its point's fields and tags.
            if matches!(plan.shape, Shape::Raw | Shape::Aggregate { .. }) {
                names.extend(
                    wildcard_tags
                        .iter()
                        .filter(|t| !group_keys.contains(t))
                        .cloned(),
                );
            }
            for n in names {
                fields.push(Projection {
                    term: Term::Ref(n),
                    alias: None,
                });
            }
        } else if let Term::Call { func, args } = &f.term
            && args.first() == Some(&Term::Wildcard)
            && func.kind().aggregates()
        {
            // `func(*)`: one column per field the function takes, named `func_field`.
            for (n, t) in &all_fields {
                if func.takes(*t) {
                    let mut args = args.clone();
                    args[0] = Term::Ref(n.clone());
                    fields.push(Projection {
                        term: Term::Call { func: *func, args },
                        alias: Some(format!("{}_{n}", f.alias.as_deref().unwrap_or(func.name()))),
                    });
                }
            }
        } else {
            fields.push(f.clone());
        }
    }
    Ok((group_keys, fields))
}

/// A plan with its wildcards expanded, run target by target.
struct Query<'a> {
    plan: &'a SelectPlan,
    /// The plan's projections, `*` expanded.
    fields: &'a [Projection],
    group_keys: &'a [String],
    columns: &'a [String],
    budget: &'a Budget,
}

/// The fields a target loads and where each is.
struct Loaded {
    needed: Vec<String>,
    /// Whether each needed field is projected (a row without one is left out).
    projected: Vec<bool>,
    /// The condition needs each row (it names a field or time).
    cond_needs_rows: bool,
}

impl Query<'_> {
    fn condition(&self) -> Option<&Condition> {
        self.plan.condition.as_ref()
    }

    fn raw(&self) -> bool {
        self.plan.shape == Shape::Raw
    }

    /// What influxd's merge of a raw query's series compares rows of one time by: the
    /// projected fields and tags, by name (a name that is neither has no value).
    fn merge_aux<'n>(
        &'n self,
        mi: &MeasurementIndex,
        needed_at: &HashMap<&str, usize>,
    ) -> Vec<Aux<'n>> {
        let mut names: BTreeSet<&'n str> = BTreeSet::new();
        for f in self.fields {
            f.term.walk(&mut |t| {
                if let Term::Ref(n) = t {
                    names.insert(n);
                }
            });
        }
        names
            .into_iter()
            .map(|n| match needed_at.get(n) {
                Some(&i) => Aux::Field(i),
                None if mi.tags.contains_key(n) => Aux::Tag(n),
                None => Aux::Missing,
            })
            .collect()
    }

    /// Appends the result series of one measurement of one shard to `out`.
    fn run_target(
        &self,
        shard: &Arc<Shard>,
        m: &str,
        out: &mut Vec<ResultSeries>,
    ) -> ExecResult<()> {
        let st = shard.read();
        let Some(mi) = st.index.measurements.get(m) else {
            return Ok(());
        };
        if self.raw() {
            // A raw query that names only tags returns nothing, as InfluxDB does.
            let any_field = self.fields.iter().any(|f| {
                let mut yes = false;
                f.term.walk(&mut |e| {
                    if let Term::Ref(n) = e
                        && mi.fields.contains_key(n)
                    {
                        yes = true;
                    }
                });
                yes
            });
            if !any_field {
                return Ok(());
            }
        }
        let groups = self.groups(&st, mi)?;
        let loaded = self.loaded(mi);
        let needed_at: HashMap<&str, usize> = loaded
            .needed
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let needed_refs: Vec<&str> = loaded.needed.iter().map(String::as_str).collect();
        for g in groups.values() {
            // A subquery got the outer time range already; its rows are not cut again (a
            // bucket that starts before the lower bound keeps its row, as in InfluxDB 1.6).
            let (lo, hi) = if shard.is_in_memory() {
                (i64::MIN, i64::MAX)
            } else {
                (self.plan.time.min, self.plan.time.max)
            };
            let mut rows = Rows::new(loaded.needed.len());
            for (si, &sid) in g.sids.iter().enumerate() {
                let cols = st.columns(sid, &needed_refs, lo, hi)?;
                self.budget
                    .points(cols.iter().flatten().map(|c| c.times.len()).sum())?;
                rows.append_series(&cols, si);
            }
            rows.keys.sort_unstable_by_key(|k| (k.time, k.series));
            self.filter_rows(&mut rows, g, &loaded)?;
            if self.raw() {
                let aux = self.merge_aux(mi, &needed_at);
                merge_like_influxd(&mut rows, &g.series, &aux, self.plan.descending);
            }
            let tags = (!self.group_keys.is_empty()).then(|| {
                self.group_keys
                    .iter()
                    .cloned()
                    .zip(g.tags.iter().cloned())
                    .collect::<BTreeMap<_, _>>()
            });
            let values = if self.raw() {
                self.project(g, &rows, &loaded.needed, &needed_at)?
            } else {
                aggregate(
                    self.plan,
                    self.fields,
                    &loaded.needed,
                    g,
                    &rows,
                    self.budget,
                )?
            };
            if values.is_empty() {
                continue;
            }
            out.push(ResultSeries {
                name: Some(m.to_string()),
                tags,
                columns: self.columns.to_vec(),
                values,
            });
        }
        Ok(())
    }

    /// The series of a measurement that can pass the condition, grouped by the group-by tag
    /// values, each group's series in series-key order.
    fn groups<'s>(
        &self,
        st: &'s ShardState,
        mi: &MeasurementIndex,
    ) -> ExecResult<BTreeMap<Vec<String>, Group<'s>>> {
        let mut groups: BTreeMap<Vec<String>, Group<'_>> = BTreeMap::new();
        // Equality predicates on tags narrow the candidates through the tag index.
        let mut sids: Vec<u32> = self
            .condition()
            .and_then(|c| index_candidates(&c.expr, mi))
            .unwrap_or_else(|| mi.series.clone());
        sids.sort_by(|a, b| {
            st.index.series[*a as usize]
                .key
                .cmp(&st.index.series[*b as usize].key)
        });
        for sid in sids {
            self.budget.tick()?;
            let s = &st.index.series[sid as usize];
            if let Some(c) = self.condition()
                && series_match(&c.expr, s) == Some(false)
            {
                continue;
            }
            self.budget.series(1)?;
            let key: Vec<String> = self
                .group_keys
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
        Ok(groups)
    }

    /// The fields to load from a measurement: named in a projection or the condition, and
    /// existing.
    fn loaded(&self, mi: &MeasurementIndex) -> Loaded {
        let mut needed: BTreeSet<String> = BTreeSet::new();
        for f in self.fields {
            f.term.walk(&mut |e| {
                if let Term::Ref(n) = e
                    && mi.fields.contains_key(n)
                {
                    needed.insert(n.clone());
                }
            });
        }
        let cond_needs_rows = self.condition().is_some_and(|c| {
            let mut yes = false;
            c.expr.walk(&mut |e| {
                if let Expr::VarRef(n) = e
                    && (mi.fields.contains_key(n) || n.eq_ignore_ascii_case("time"))
                {
                    yes = true;
                }
            });
            yes
        });
        if let Some(c) = self.condition() {
            c.expr.walk(&mut |e| {
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
        for f in self.fields {
            f.term.walk(&mut |e| {
                if let Term::Ref(x) = e {
                    in_projections.insert(x);
                }
            });
        }
        let projected: Vec<bool> = needed
            .iter()
            .map(|n| in_projections.contains(n.as_str()))
            .collect();
        Loaded {
            needed,
            projected,
            cond_needs_rows,
        }
    }

    /// Keeps the rows with at least one projected field that pass the condition.
    fn filter_rows(&self, rows: &mut Rows, g: &Group<'_>, loaded: &Loaded) -> ExecResult<()> {
        let Rows {
            width,
            keys,
            values,
        } = rows;
        let mut late = None;
        keys.retain(|k| {
            if late.is_some() {
                return false;
            }
            if let Err(e) = self.budget.tick() {
                late = Some(e);
                return false;
            }
            let vals = &values[k.at..k.at + *width];
            if !vals
                .iter()
                .zip(&loaded.projected)
                .any(|(v, p)| *p && v.is_some())
            {
                return false;
            }
            if loaded.cond_needs_rows
                && let Some(c) = self.condition()
            {
                let ctx = RowCtx {
                    series: g.series[k.series],
                    time: k.time,
                    fields: &loaded.needed,
                    values: vals,
                };
                return eval(&c.term, &ctx, &c.regexes) == Val::Bool(true);
            }
            true
        });
        match late {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// The rows of a raw query: only those that survive ORDER BY, OFFSET and LIMIT are
    /// projected.
    fn project(
        &self,
        g: &Group<'_>,
        rows: &Rows,
        needed: &[String],
        needed_at: &HashMap<&str, usize>,
    ) -> ExecResult<Vec<Vec<Val>>> {
        let plan = self.plan;
        let n = rows.keys.len();
        let start = plan.limits.offset.min(n);
        let end = if plan.limits.limit > 0 {
            start.saturating_add(plan.limits.limit).min(n)
        } else {
            n
        };
        let projections: Vec<RowProjection<'_>> = self
            .fields
            .iter()
            .map(|f| RowProjection::compile(&f.term, needed_at))
            .collect();
        let no_regexes = HashMap::new();
        let regexes = self.condition().map_or(&no_regexes, |c| &c.regexes);
        (start..end)
            .map(|j| {
                self.budget.tick()?;
                let k = &rows.keys[if plan.descending { n - 1 - j } else { j }];
                let ctx = RowCtx {
                    series: g.series[k.series],
                    time: k.time,
                    fields: needed,
                    values: rows.values_of(k),
                };
                let mut row = Vec::with_capacity(projections.len() + 1);
                row.push(Val::Time(k.time));
                row.extend(projections.iter().map(|p| p.eval(&ctx, regexes)));
                Ok(row)
            })
            .collect()
    }
}

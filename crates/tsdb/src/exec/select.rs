//! `SELECT`: resolves the sources to (shard, measurement) targets (a subquery runs first,
//! into an in-memory shard), checks the statement, expands wildcards, groups the matching
//! series, loads and filters their rows, and either projects them (a raw query) or hands
//! them to [`super::aggregate`].
//! What it does not do: function arithmetic (see [`super::functions`]) or the other
//! statements.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use regex::Regex;

use super::aggregate::{aggregate, time_dimension};
use super::cond::{collect_regexes, extract_time, index_candidates, refers_to_time, series_match};
use super::error::{ExecResult, QueryError};
use super::eval::{RowCtx, eval};
use super::functions::{
    AGGREGATES, INFLUXQL_ONLY, MATH, SELECT_N, SelectN, TRANSFORMS, contains_call, field_refs_any,
    has_bare_ref, is_call_kind, math_arity, select_n,
};
use super::rows::{Group, Projection, Rows};
use super::sources::{compile, limit_offset, measurements_for};
use super::value::{ResultSeries, Val};
use crate::influxql::{BinOp, Dimension, Expr, Field, Select, Source};
use crate::limits::Budget;
use crate::model::{FieldType, FieldValue};
use crate::storage::{MeasurementIndex, Shard, ShardState, Tsdb, now_ns};

/// The column name InfluxDB gives a projection.
pub(super) fn column_name(f: &Field) -> String {
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

pub(super) fn dedupe_names(names: Vec<String>) -> Vec<String> {
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

pub(super) fn select(
    db: &Tsdb,
    sel: &Select,
    default_db: Option<&str>,
    budget: &Budget,
) -> ExecResult<Vec<ResultSeries>> {
    let now = now_ns();
    let targets = resolve_targets(db, sel, default_db, now, budget)?;
    let (top_n, is_agg) = check(sel)?;
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
    let (group_keys, fields) = expand(sel, &targets, is_agg)?;
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
    let q = Query {
        sel,
        fields: &fields,
        group_keys: &group_keys,
        columns: &columns,
        is_agg,
        bounds: (tmin, tmax, now),
        condition: rest_cond.as_ref(),
        regexes: &regexes,
        budget,
    };
    let mut out: Vec<ResultSeries> = Vec::new();
    for (shard, m) in &targets {
        q.run_target(shard, m, &mut out)?;
    }
    Ok(limit_offset(out, sel.slimit, sel.soffset))
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

/// The checks of a statement's projections and dimensions, before any data is read: its
/// `top`/`bottom` form if any, and whether it aggregates.
fn check(sel: &Select) -> ExecResult<(Option<SelectN<'_>>, bool)> {
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
    Ok((top_n, is_agg))
}

/// The group-by tag keys and the projections with wildcards expanded, over the union of the
/// targets' fields and tags.
fn expand(
    sel: &Select,
    targets: &[(Arc<Shard>, String)],
    is_agg: bool,
) -> ExecResult<(Vec<String>, Vec<Field>)> {
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
    Ok((group_keys, fields))
}

/// A checked statement with its wildcards expanded, run target by target.
struct Query<'a> {
    sel: &'a Select,
    fields: &'a [Field],
    group_keys: &'a [String],
    columns: &'a [String],
    is_agg: bool,
    /// The time range and now: `(tmin, tmax, now)`.
    bounds: (i64, i64, i64),
    /// The condition without its time range.
    condition: Option<&'a Expr>,
    regexes: &'a HashMap<String, Regex>,
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
        if !self.is_agg {
            // A raw query that names only tags returns nothing, as InfluxDB does.
            let any_field = self.fields.iter().any(|f| {
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
                (self.bounds.0, self.bounds.1)
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
            let tags = (!self.group_keys.is_empty()).then(|| {
                self.group_keys
                    .iter()
                    .cloned()
                    .zip(g.tags.iter().cloned())
                    .collect::<BTreeMap<_, _>>()
            });
            let values = if self.is_agg {
                aggregate(
                    self.sel,
                    self.fields,
                    &loaded.needed,
                    g,
                    &rows,
                    self.bounds,
                    self.budget,
                )?
            } else {
                self.project(g, &rows, &loaded.needed, &needed_at)?
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
            .condition
            .and_then(|c| index_candidates(c, mi))
            .unwrap_or_else(|| mi.series.clone());
        sids.sort_by(|a, b| {
            st.index.series[*a as usize]
                .key
                .cmp(&st.index.series[*b as usize].key)
        });
        for sid in sids {
            self.budget.tick()?;
            let s = &st.index.series[sid as usize];
            if let Some(c) = self.condition
                && series_match(c, s) == Some(false)
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
            f.expr.walk(&mut |e| {
                if let Expr::VarRef(n) = e
                    && mi.fields.contains_key(n)
                {
                    needed.insert(n.clone());
                }
            });
        }
        let cond_needs_rows = self.condition.is_some_and(|c| {
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
        if let Some(c) = self.condition {
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
        for f in self.fields {
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
                && let Some(c) = self.condition
            {
                let ctx = RowCtx {
                    series: g.series[k.series],
                    time: k.time,
                    fields: &loaded.needed,
                    values: vals,
                };
                return eval(c, &ctx, self.regexes) == Val::Bool(true);
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
        let sel = self.sel;
        let n = rows.keys.len();
        let start = sel.offset.min(n);
        let end = if sel.limit > 0 {
            start.saturating_add(sel.limit).min(n)
        } else {
            n
        };
        let projections: Vec<Projection<'_>> = self
            .fields
            .iter()
            .map(|f| Projection::compile(&f.expr, needed_at))
            .collect();
        (start..end)
            .map(|j| {
                self.budget.tick()?;
                let k = &rows.keys[if sel.descending { n - 1 - j } else { j }];
                let ctx = RowCtx {
                    series: g.series[k.series],
                    time: k.time,
                    fields: needed,
                    values: rows.values_of(k),
                };
                let mut row = Vec::with_capacity(projections.len() + 1);
                row.push(Val::Time(k.time));
                row.extend(projections.iter().map(|p| p.eval(&ctx, self.regexes)));
                Ok(row)
            })
            .collect()
    }
}

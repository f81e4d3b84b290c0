//! Aggregation of one group's rows: the `GROUP BY time` buckets (counted against the budget
//! before they are built), `top`/`bottom`, a column of bucket values per projection
//! (aggregates, selectors and arithmetic of them, transforms over the buckets), and `fill`.
//! What it does not do: choose the rows (see [`super::select`]) or define the functions'
//! arithmetic (see [`super::functions`]).

use std::collections::{BTreeMap, HashMap};

use super::error::{ExecResult, QueryError};
use super::eval::{RowCtx, binop, eval};
use super::functions::{
    Picked, Pt, Window, count_distinct, distinct, integral, integral_unit, math, need_numbers,
    reduce, transform, transform_unit,
};
use super::merge::merged;
use super::plan::{Interval, Projection, SelectPlan, Shape, TimeRange, TopBottom, single_selector};
use super::rows::{Group, RowKey, Rows};
use super::sources::limit_offset;
use super::term::{Function, Kind, Term};
use super::value::Val;
use crate::influxql::Fill;
use crate::limits::Budget;

/// Aggregates one group's rows as the plan's shape says (`fields`: its projections).
pub(super) fn aggregate(
    plan: &SelectPlan,
    fields: &[Projection],
    needed: &[String],
    g: &Group<'_>,
    rows: &Rows,
    budget: &Budget,
) -> ExecResult<Vec<Vec<Val>>> {
    let a = Agg {
        plan,
        fields,
        needed,
        g,
        rows,
        budget,
    };
    if plan.shape == Shape::RawTransform {
        return a.raw_transform();
    }
    let Some(first_t) = rows.keys.first().map(|k| k.time) else {
        return Ok(Vec::new());
    };
    let buckets = Buckets::new(plan.grouping.interval, plan.time, plan.now, first_t, budget)?;
    match &plan.shape {
        Shape::TopBottom(sn) => a.top_bottom(sn, &buckets),
        Shape::Distinct(field) => Ok(a.distinct(field, &buckets)),
        Shape::Aggregate { lone_selector } => {
            let cols = a.columns(&buckets)?;
            // `max(*)` over more than one field is several selectors.
            a.fill(&buckets, cols, *lone_selector && single_selector(fields))
        }
        // A raw query has no aggregation (see `select`).
        Shape::Raw | Shape::RawTransform => Ok(Vec::new()),
    }
}

/// One group's rows and what to compute of them.
struct Agg<'a> {
    plan: &'a SelectPlan,
    fields: &'a [Projection],
    needed: &'a [String],
    g: &'a Group<'a>,
    rows: &'a Rows,
    budget: &'a Budget,
}

/// The buckets of a group: one per `GROUP BY time` interval, or one in all.
struct Buckets {
    starts: Vec<i64>,
    interval: Option<i64>,
}

impl Buckets {
    /// `first_t`: the group's earliest point, the start when the range has no lower bound.
    fn new(
        interval: Option<Interval>,
        TimeRange {
            min: tmin,
            max: tmax,
        }: TimeRange,
        now: i64,
        first_t: i64,
        budget: &Budget,
    ) -> ExecResult<Buckets> {
        Ok(match interval {
            Some(Interval {
                every: iv,
                offset: off,
            }) => {
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
                Buckets {
                    starts,
                    interval: Some(iv),
                }
            }
            None => Buckets {
                starts: vec![if tmin == i64::MIN { 0 } else { tmin }],
                interval: None,
            },
        })
    }

    fn len(&self) -> usize {
        self.starts.len()
    }

    /// The bucket of a time, if any holds it.
    fn of(&self, t: i64) -> Option<usize> {
        match self.interval {
            None => Some(0),
            Some(iv) => {
                let k = (t - self.starts[0]).div_euclid(iv);
                (k >= 0 && (k as usize) < self.len()).then_some(k as usize)
            }
        }
    }
}

/// Per projection, a column of bucket values.
struct Columns {
    cols: Vec<Vec<Val>>,
    /// The point a selector picked in each bucket: the time a lone selector shows, the row
    /// its bare fields and tags come from.
    picked: Vec<Picked>,
    is_count: Vec<bool>,
    is_transform: Vec<bool>,
}

impl Agg<'_> {
    /// Points of a field, in row order.
    fn points_of(&self, name: &str) -> Vec<Pt> {
        let Some(i) = self.needed.iter().position(|n| n == name) else {
            return Vec::new();
        };
        // The rows holding the field, in influxd's merge order of the group's series.
        let (at, keys): (Vec<usize>, Vec<RowKey>) = self
            .rows
            .keys
            .iter()
            .enumerate()
            .filter(|(_, k)| self.rows.values_of(k)[i].is_some())
            .map(|(row, k)| (row, *k))
            .unzip();
        merged(&keys, self.rows, &self.g.series, &[], false)
            .into_iter()
            .filter_map(|j| {
                let k = &keys[j];
                self.rows.values_of(k)[i].clone().map(|v| Pt {
                    t: k.time,
                    v: Val::from_field(v),
                    row: at[j],
                })
            })
            .collect()
    }

    /// A transform of a field's points, without GROUP BY time (alone in the statement).
    fn raw_transform(&self) -> ExecResult<Vec<Vec<Val>>> {
        let Some((func, args)) = self.fields.iter().find_map(|p| match &p.term {
            Term::Call { func, args } if func.kind() == Kind::Transform => Some((*func, args)),
            _ => None,
        }) else {
            return Ok(Vec::new());
        };
        if self.fields.len() != 1 {
            return Err(QueryError::TransformCombined);
        }
        let Some(Term::Ref(field)) = args.first() else {
            return Err(QueryError::FieldArgument {
                name: func.name().to_string(),
            });
        };
        let unit = transform_unit(func, args)?;
        let pts = self.points_of(field);
        let mut out = transform(func, &pts, unit);
        if self.plan.descending {
            out.reverse();
        }
        let vals = out.into_iter().map(|p| vec![Val::Time(p.t), p.v]).collect();
        let l = &self.plan.limits;
        Ok(limit_offset(vals, l.limit, l.offset))
    }

    fn tag_of(&self, k: &RowKey, tag: &str) -> Val {
        self.g.series[k.series]
            .tag(tag)
            .map_or(Val::Null, |v| Val::Str(v.to_string()))
    }

    /// `distinct(field)`: a row per distinct value of each bucket, in the order the values
    /// are first seen, each at its bucket's start.
    fn distinct(&self, field: &str, buckets: &Buckets) -> Vec<Vec<Val>> {
        let mut per_bucket: Vec<Vec<Pt>> = vec![Vec::new(); buckets.len()];
        for p in self.points_of(field) {
            if let Some(b) = buckets.of(p.t) {
                per_bucket[b].push(p);
            }
        }
        let mut out: Vec<Vec<Vec<Val>>> = per_bucket
            .iter()
            .enumerate()
            .map(|(b, pts)| {
                let t = Val::Time(buckets.starts[b]);
                distinct(pts)
                    .into_iter()
                    .map(|v| vec![t.clone(), v])
                    .collect()
            })
            .collect();
        if self.plan.descending {
            out.reverse();
        }
        let l = &self.plan.limits;
        limit_offset(out.concat(), l.limit, l.offset)
    }

    /// top/bottom: the N greatest (least) values of each bucket, ties to the earlier point
    /// (with tag arguments, first the best point of each distinct tag combination), shown in
    /// time order, each at its own time with the tags and fields asked beside it (InfluxDB 1.6).
    fn top_bottom(&self, sn: &TopBottom, buckets: &Buckets) -> ExecResult<Vec<Vec<Val>>> {
        let (rows, needed) = (self.rows, self.needed);
        let mut per_bucket: Vec<Vec<(i64, Val, usize)>> = vec![Vec::new(); buckets.len()];
        if let Some(vi) = needed.iter().position(|n| *n == sn.field) {
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
                        name: sn.func.name().to_string(),
                        go_type,
                    });
                }
                if let Some(b) = buckets.of(k.time) {
                    per_bucket[b].push((k.time, v, ki));
                }
            }
        }
        let top = sn.func == Function::Top;
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
        if self.plan.descending {
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
                        .map(|t| self.g.series[k.series].tag(t).unwrap_or("").to_string())
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
                out.push(self.top_bottom_row(sn, t, v, &rows.keys[ki]));
            }
        }
        Ok(limit_offset(
            out,
            self.plan.limits.limit,
            self.plan.limits.offset,
        ))
    }

    /// One row of top/bottom: the point's value and tags at the call's position, the other
    /// projections' fields or tags around it.
    fn top_bottom_row(&self, sn: &TopBottom, t: i64, v: Val, k: &RowKey) -> Vec<Val> {
        let mut row = vec![Val::Time(t)];
        let mut aux = sn.aux.iter();
        for i in 0..=sn.aux.len() {
            if i == sn.at {
                row.push(v.clone());
                row.extend(sn.tags.iter().map(|tag| self.tag_of(k, tag)));
            } else if let Some(name) = aux.next() {
                row.push(match self.needed.iter().position(|n| n == name) {
                    Some(i) => self.rows.values_of(k)[i]
                        .clone()
                        .map_or(Val::Null, Val::from_field),
                    None => self.tag_of(k, name),
                });
            }
        }
        row
    }

    /// Per projection: a column of bucket values (and the points a selector picked). Bare
    /// fields and tags beside a selector (which the planner allows only beside one) are its
    /// picked point's.
    fn columns(&self, buckets: &Buckets) -> ExecResult<Columns> {
        let nb = buckets.len();
        // The points of each referenced field split by bucket, computed once per field rather
        // than once per bucket (which made GROUP BY time quadratic).
        let bucketed: std::cell::RefCell<HashMap<String, Vec<Vec<Pt>>>> = Default::default();
        let points_in_bucket = |field: &str, b: usize| -> Vec<Pt> {
            let mut cache = bucketed.borrow_mut();
            if !cache.contains_key(field) {
                let mut per_bucket: Vec<Vec<Pt>> = vec![Vec::new(); nb];
                for p in self.points_of(field) {
                    if let Some(k) = buckets.of(p.t) {
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
        let mut c = Columns {
            cols: Vec::new(),
            picked: vec![None; nb],
            is_count: Vec::new(),
            is_transform: Vec::new(),
        };
        for f in self.fields {
            let mut col = vec![Val::Null; nb];
            let (expr, transformed) = match &f.term {
                Term::Call { func, args } if func.kind() == Kind::Transform => {
                    (args.first().unwrap_or(&Term::Wildcard), Some((*func, args)))
                }
                t => (t, None),
            };
            c.is_count
                .push(expr.function() == Some(Function::Count) && transformed.is_none());
            c.is_transform.push(transformed.is_some());
            if let Term::Call {
                func: Function::Integral,
                args,
            } = expr
            {
                // A stream over the buckets, not one value per bucket.
                col = self.integral(args, buckets)?;
            } else {
                for (b, slot) in col.iter_mut().enumerate() {
                    self.budget.tick()?;
                    *slot = eval_agg_expr(
                        expr,
                        &|field: &str| points_in_bucket(field, b),
                        Some(&mut c.picked[b]),
                    )?;
                }
            }
            if let Some((func, args)) = transformed {
                col = transform_buckets(func, args, col, buckets)?;
            }
            c.cols.push(col);
        }
        for (f, col) in self.fields.iter().zip(c.cols.iter_mut()) {
            if f.term.has_bare_ref() {
                self.at_picked(&f.term, &c.picked, col);
            }
        }
        Ok(c)
    }

    /// `integral(field[, unit])` of each bucket, over the group's points in influxd's merge
    /// order (see [`integral`]).
    fn integral(&self, args: &[Term], buckets: &Buckets) -> ExecResult<Vec<Val>> {
        let Some(Term::Ref(field)) = args.first() else {
            return Err(QueryError::FieldArgument {
                name: "integral".into(),
            });
        };
        let unit = integral_unit(args)?;
        let mut col = vec![Val::Null; buckets.len()];
        let pts = self.points_of(field);
        need_numbers(Function::Integral, &pts)?;
        let window = |t: i64| {
            let b = buckets.of(t)?;
            let start = buckets.starts[b];
            Some((b, start, buckets.interval.map_or(i64::MAX, |iv| start + iv)))
        };
        let window: &dyn Fn(i64) -> Window = match buckets.interval {
            Some(_) => &window,
            None => &|_| Some((0, 0, i64::MAX)),
        };
        for (b, v) in integral(&pts, unit, window) {
            col[b] = Val::Float(v);
        }
        Ok(col)
    }

    /// A row expression evaluated at each bucket's picked point.
    fn at_picked(&self, term: &Term, picked: &[Picked], col: &mut [Val]) {
        let none = HashMap::new();
        for (slot, p) in col.iter_mut().zip(picked) {
            let Some(k) = p.and_then(|(_, row)| self.rows.keys.get(row)) else {
                continue;
            };
            let row = RowCtx {
                series: self.g.series[k.series],
                time: k.time,
                fields: self.needed,
                values: self.rows.values_of(k),
            };
            *slot = eval(term, &row, &none);
        }
    }

    /// The rows of the buckets, filled as `fill` says, in the statement's order and limits.
    /// `lone_selector`: each row at the time of its picked point.
    fn fill(
        &self,
        buckets: &Buckets,
        c: Columns,
        lone_selector: bool,
    ) -> ExecResult<Vec<Vec<Val>>> {
        let plan = self.plan;
        let interval = buckets.interval;
        let Columns {
            cols,
            picked,
            is_count,
            is_transform,
        } = c;
        let mut out: Vec<Vec<Val>> = Vec::with_capacity(buckets.len());
        let mut prev: Vec<Val> = vec![Val::Null; cols.len()];
        for b in 0..buckets.len() {
            self.budget.tick()?;
            let t = match picked[b] {
                Some((t, _)) if lone_selector => t,
                _ => buckets.starts[b],
            };
            let mut row = vec![Val::Time(t)];
            let mut all_null = true;
            for (c, col) in cols.iter().enumerate() {
                let mut v = col[b].clone();
                if v.is_null() {
                    match &plan.fill {
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
                    if v.is_null() && is_count[c] && plan.fill != Fill::None && interval.is_some() {
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
            if all_null && (plan.fill == Fill::None || is_transform.iter().any(|x| *x)) {
                continue;
            }
            if all_null && interval.is_none() {
                continue;
            }
            out.push(row);
        }
        if plan.descending {
            out.reverse();
        }
        Ok(limit_offset(out, plan.limits.limit, plan.limits.offset))
    }
}

/// A transform over a column of bucket values (each at its bucket's start).
fn transform_buckets(
    func: Function,
    args: &[Term],
    col: Vec<Val>,
    buckets: &Buckets,
) -> ExecResult<Vec<Val>> {
    // Over GROUP BY time, the default unit is the interval (InfluxDB 1.x).
    let derivative = matches!(func, Function::Derivative | Function::NonNegativeDerivative);
    let unit = match (args.len() < 2, buckets.interval) {
        (true, Some(iv)) if derivative => iv,
        _ => transform_unit(func, args)?,
    };
    let pts: Vec<Pt> = col
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(b, v)| Pt {
            t: buckets.starts[b],
            v: v.clone(),
            row: usize::MAX,
        })
        .collect();
    let res = transform(func, &pts, unit);
    let mut col = vec![Val::Null; buckets.len()];
    for p in res {
        if let Some(b) = buckets.of(p.t) {
            col[b] = p.v;
        }
    }
    Ok(col)
}

pub(super) fn cols_is_float(col: &[Val]) -> bool {
    col.iter().any(|v| matches!(v, Val::Float(_)))
}

pub(super) fn linear(col: &[Val], b: usize) -> Val {
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

/// Evaluates an aggregate expression (calls and arithmetic) for one bucket.
pub(super) fn eval_agg_expr(
    e: &Term,
    pts_of: &dyn Fn(&str) -> Vec<Pt>,
    mut picked: Option<&mut Picked>,
) -> ExecResult<Val> {
    match e {
        Term::Call { func, args } if func.kind() == Kind::Math => {
            let vals = args
                .iter()
                .map(|a| eval_agg_expr(a, pts_of, picked.as_deref_mut()))
                .collect::<ExecResult<Vec<Val>>>()?;
            Ok(math(*func, &vals))
        }
        Term::Call { func, args } => {
            if *func == Function::Count
                && let Some(Term::Call {
                    func: Function::Distinct,
                    args: inner,
                }) = args.first()
                && let [Term::Ref(f)] = inner.as_slice()
            {
                return Ok(count_distinct(&pts_of(f)));
            }
            let field = match args.first() {
                Some(Term::Ref(f)) => f.clone(),
                _ => {
                    return Err(QueryError::FieldArgument {
                        name: func.name().to_string(),
                    });
                }
            };
            let pts = pts_of(&field);
            let (v, t) = reduce(*func, &pts, args)?;
            if let (Some(slot), Some(p)) = (picked, t) {
                *slot = Some(p);
            }
            Ok(v)
        }
        Term::Binary { op, lhs, rhs } => {
            let l = eval_agg_expr(lhs, pts_of, picked.as_deref_mut())?;
            let r = eval_agg_expr(rhs, pts_of, picked)?;
            Ok(binop(*op, l, r))
        }
        Term::Int(i) => Ok(Val::Int(*i)),
        Term::Float(f) => Ok(Val::Float(*f)),
        _ => Ok(Val::Null),
    }
}

//! The planner: a parsed `SELECT` and the time `now` in, a [`SelectPlan`] out (or the
//! statement's error, with influxd 1.6's text). Pure: it reads no storage and no clock, so the
//! same statement and `now` always give the same plan (unit tests below).
//!
//! A plan says what to compute: the projections as [`Term`]s (calls resolved to
//! [`Function`]s), the [`Shape`] of the query (raw rows, a transform of raw points,
//! aggregates, or `top`/`bottom`), the time range taken out of the condition and the
//! residual condition (its regexes compiled), the grouping, `fill`, limits and order.
//! What it does not do: say where to read. Sources are resolved by the executor
//! (`select`) before it plans, against the catalog (a missing database is reported
//! before a statement's own mistakes, as influxd does), and wildcards (`*`, `GROUP BY *`,
//! `GROUP BY /re/`) are expanded there, over the fields and tags the sources hold.
//! Checks that need a group's data (the forms of a transform without `GROUP BY time`, a
//! transform's unit, an aggregate's argument) stay with the executor, which makes them only
//! when a group has rows, as before.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use regex::Regex;

use super::cond::{collect_regexes, extract_time};
use super::error::{ExecResult, QueryError};
use super::term::{Function, Kind, Term};
use crate::influxql::{Dimension, Expr, Fill, Select};

/// What a `SELECT` computes.
#[derive(Debug)]
pub struct SelectPlan {
    /// As written (a `*` is expanded per statement by the executor).
    pub projections: Vec<Projection>,
    pub shape: Shape,
    pub time: TimeRange,
    /// The condition without its time range.
    pub condition: Option<Condition>,
    pub grouping: Grouping,
    pub fill: Fill,
    pub limits: Limits,
    /// `ORDER BY time DESC`.
    pub descending: bool,
    /// The statement's `now()`: the time bound of a range without an upper one.
    pub now: i64,
}

/// One projection: a term and its alias.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub term: Term,
    pub alias: Option<String>,
}

impl Projection {
    /// The column name InfluxDB gives a projection.
    pub fn column_name(&self) -> String {
        match &self.alias {
            Some(a) => a.clone(),
            None => self.term.column_name(),
        }
    }
}

/// How a query turns rows into answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// Rows as stored, projected per row.
    Raw,
    /// A transform of a field's raw points (no `GROUP BY time`), e.g. `derivative(v)`.
    RawTransform,
    /// One row per bucket of aggregates, selectors, math of them, and transforms of them.
    /// `lone_selector`: a single selector without `GROUP BY time`, shown at its point's time.
    Aggregate { lone_selector: bool },
    /// `top`/`bottom`: several points per bucket, each at its own time.
    TopBottom(TopBottom),
    /// `distinct(field)`, alone: a row per distinct value of a bucket.
    Distinct(String),
}

/// A `top`/`bottom` query: `top(field[, tag ...], N)` beside bare fields or tags whose
/// values at the chosen points are shown beside them (InfluxDB 1.6).
#[derive(Debug, Clone, PartialEq)]
pub struct TopBottom {
    /// [`Function::Top`] or [`Function::Bottom`].
    pub func: Function,
    pub field: String,
    /// With tag arguments, one point per distinct combination of their values competes.
    pub tags: Vec<String>,
    pub n: usize,
    /// Position of the call among the projections.
    pub at: usize,
    /// The other projections' names, in order.
    pub aux: Vec<String>,
}

/// An inclusive time range; `i64::MIN`/`i64::MAX` where unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub min: i64,
    pub max: i64,
}

/// The condition left once its top-level time comparisons are taken out.
#[derive(Debug)]
pub struct Condition {
    /// As parsed: what the tag index and the series' tags decide (see `exec::cond`).
    pub expr: Expr,
    /// The same, lowered: evaluated per row.
    pub term: Term,
    /// Its regexes, compiled, by their text.
    pub regexes: HashMap<String, Regex>,
}

/// `GROUP BY`: tags (expanded by the executor) and the time interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Grouping {
    pub tags: Vec<TagGroup>,
    pub interval: Option<Interval>,
}

/// One tag dimension of `GROUP BY`.
#[derive(Debug, Clone, PartialEq)]
pub enum TagGroup {
    Tag(String),
    /// `GROUP BY /re/` (compiled by the executor, as before).
    Regex(String),
    /// `GROUP BY *`.
    All,
}

/// `GROUP BY time(every, offset)`, nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub every: i64,
    pub offset: i64,
}

/// `LIMIT`/`OFFSET` (rows per series) and `SLIMIT`/`SOFFSET` (series); 0 = none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub limit: usize,
    pub offset: usize,
    pub slimit: usize,
    pub soffset: usize,
}

/// Plans a `SELECT` at time `now`: the checks influxd makes before reading data, in its
/// order, then the plan.
pub fn plan(sel: &Select, now: i64) -> ExecResult<SelectPlan> {
    let projections: Vec<Projection> = sel
        .fields
        .iter()
        .map(|f| Projection {
            term: Term::lower(&f.expr),
            alias: f.alias.clone(),
        })
        .collect();
    check_functions(&projections)?;
    let top_bottom = top_bottom(&projections)?;
    let distinct = distinct(&projections)?;
    if let Some(t) = &top_bottom
        && sel.limit > 0
        && t.n > sel.limit
    {
        return Err(QueryError::SelectorOverLimit {
            name: t.func.name().to_string(),
            n: t.n,
            limit: sel.limit,
        });
    }
    let interval = sel.dimensions.iter().find_map(|d| match d {
        Dimension::Time { interval, offset } => Some(Interval {
            every: *interval,
            offset: *offset,
        }),
        _ => None,
    });
    let aggregates = projections
        .iter()
        .any(|p| p.term.contains_call(Kind::makes_aggregate_query));
    let selector = single_selector(&projections);
    check_aggregates(
        &projections,
        aggregates,
        interval.is_some(),
        top_bottom.is_some(),
    )?;
    if !projections.iter().any(|p| p.term.refers_to_any()) {
        return Err(QueryError::NoField);
    }
    let (min, max, rest) = match &sel.condition {
        Some(c) => extract_time(c, now)?,
        None => (i64::MIN, i64::MAX, None),
    };
    let condition = match rest {
        Some(expr) => {
            let mut regexes = HashMap::new();
            collect_regexes(&expr, &mut regexes)?;
            Some(Condition {
                term: Term::lower(&expr),
                expr,
                regexes,
            })
        }
        None => None,
    };
    let shape = match top_bottom {
        Some(t) => Shape::TopBottom(t),
        None if distinct.is_some() => Shape::Distinct(distinct.unwrap_or_default()),
        None if !aggregates => Shape::Raw,
        None if interval.is_none()
            && projections
                .iter()
                .any(|p| p.term.is_call(|k| k == Kind::Transform)) =>
        {
            Shape::RawTransform
        }
        None => Shape::Aggregate {
            lone_selector: interval.is_none() && selector,
        },
    };
    let tags = sel
        .dimensions
        .iter()
        .filter_map(|d| match d {
            Dimension::Tag(t) => Some(TagGroup::Tag(t.clone())),
            Dimension::Regex(r) => Some(TagGroup::Regex(r.clone())),
            Dimension::Wildcard => Some(TagGroup::All),
            Dimension::Time { .. } => None,
        })
        .collect();
    Ok(SelectPlan {
        projections,
        shape,
        time: TimeRange { min, max },
        condition,
        grouping: Grouping { tags, interval },
        fill: sel.fill.clone(),
        limits: Limits {
            limit: sel.limit,
            offset: sel.offset,
            slimit: sel.slimit,
            soffset: sel.soffset,
        },
        descending: sel.descending,
        now,
    })
}

/// Every call names a function torc evaluates, math functions with their number of values
/// (a function torc does not evaluate would otherwise answer nulls, silently). Per
/// projection in order: a math function's arity first, then an unknown name.
fn check_functions(projections: &[Projection]) -> ExecResult<()> {
    for p in projections {
        let mut bad: Option<QueryError> = None;
        p.term.walk(&mut |t| {
            if bad.is_some() {
                return;
            }
            match t {
                Term::Undefined { name, .. } => {
                    bad = Some(QueryError::UndefinedFunction { name: name.clone() })
                }
                Term::Call { func, .. } if func.kind() == Kind::Unimplemented => {
                    bad = Some(QueryError::Unimplemented {
                        name: func.name().to_string(),
                    })
                }
                _ => {}
            }
        });
        let mut arity = None;
        p.term.walk(&mut |t| {
            if let Term::Call { func, args } = t
                && func.kind() == Kind::Math
                && args.len() != func.arity()
                && arity.is_none()
            {
                arity = Some(QueryError::Arity {
                    name: func.name().to_string(),
                    expected: func.arity(),
                    got: args.len(),
                });
            }
        });
        if let Some(e) = arity.or(bad) {
            return Err(e);
        }
    }
    Ok(())
}

/// The `top`/`bottom` form of the projections, if it is one; an error for the forms torc
/// does not implement (beside anything but bare names).
fn top_bottom(projections: &[Projection]) -> ExecResult<Option<TopBottom>> {
    let Some(at) = projections
        .iter()
        .position(|p| p.term.contains_call(|k| k == Kind::TopBottom))
    else {
        return Ok(None);
    };
    let call = &projections[at].term;
    for (i, other) in projections.iter().enumerate() {
        if i != at
            && let Term::Call { .. } = other.term
            && let Term::Call { func, .. } = call
        {
            return Err(QueryError::SelectorCombined {
                name: func.name().to_string(),
            });
        }
    }
    let Term::Call { func, args } = call else {
        return Err(QueryError::SelectorForm);
    };
    let name = || func.name().to_string();
    if args.len() < 2 {
        return Err(QueryError::SelectorArity {
            name: name(),
            got: args.len(),
        });
    }
    let Some(Term::Int(n)) = args.last() else {
        return Err(QueryError::SelectorLimitType {
            name: name(),
            args: args.len(),
        });
    };
    if *n <= 0 {
        return Err(QueryError::SelectorLimit {
            name: name(),
            n: *n,
        });
    }
    if args[0] == Term::Wildcard {
        return Err(QueryError::SelectorFirstArgument { name: name() });
    }
    let bare = |t: &Term| match t {
        Term::Ref(v) => Some(v.clone()),
        _ => None,
    };
    let mut names = args[..args.len() - 1].iter().map(bare);
    let Some(Some(field)) = names.next() else {
        return Err(QueryError::SelectorForm);
    };
    let tags: Option<Vec<String>> = names.collect();
    let aux: Option<Vec<String>> = projections
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != at)
        .map(|(_, p)| bare(&p.term))
        .collect();
    match (tags, aux) {
        (Some(tags), Some(aux)) => Ok(Some(TopBottom {
            func: *func,
            field,
            tags,
            n: *n as usize,
            at,
            aux,
        })),
        _ => Err(QueryError::SelectorForm),
    }
}

/// The field of a `distinct(field)` projection; an error if it has other projections beside
/// it or another argument.
fn distinct(projections: &[Projection]) -> ExecResult<Option<String>> {
    let Some(p) = projections
        .iter()
        .find(|p| p.term.function() == Some(Function::Distinct))
    else {
        return Ok(None);
    };
    if projections.len() > 1 {
        return Err(QueryError::DistinctCombined);
    }
    match &p.term {
        Term::Call { args, .. } if args.is_empty() => {
            Err(QueryError::DistinctArity { many: false })
        }
        Term::Call { args, .. } if args.len() > 1 => Err(QueryError::DistinctArity { many: true }),
        Term::Call { args, .. } if matches!(args.as_slice(), [Term::Ref(_)]) => {
            Ok(args[0].first_name().map(String::from))
        }
        _ => Err(QueryError::FieldArgument {
            name: "distinct".into(),
        }),
    }
}

/// The distinct calls of aggregates and selectors of the projections (as text: influxd
/// computes a call written twice once), and whether each is a selector.
fn aggregate_calls(projections: &[Projection]) -> BTreeMap<String, bool> {
    let mut calls = BTreeMap::new();
    for p in projections {
        p.term.walk(&mut |t| {
            if let Term::Call { func, .. } = t
                && func.kind() != Kind::Math
            {
                calls.insert(t.to_string(), func.kind() == Kind::Selector);
            }
        });
    }
    calls
}

/// True when the projections compute one selector call (perhaps written several times or
/// inside math): its point's time is the row's when there is no `GROUP BY time`, and bare
/// fields and tags beside it are its point's (InfluxDB 1.6).
/// `max(*)` counts as one here; the executor asks again once `*` is expanded to a call per
/// field.
pub(super) fn single_selector(projections: &[Projection]) -> bool {
    let calls = aggregate_calls(projections);
    calls.len() == 1 && calls.values().all(|s| *s)
}

/// An aggregate query has no bare field beside its calls (but `top`/`bottom`'s or a single
/// selector's), and a transform takes an aggregate exactly when the query groups by time; a
/// raw query has no `GROUP BY time`.
fn check_aggregates(
    projections: &[Projection],
    aggregates: bool,
    by_time: bool,
    top_bottom: bool,
) -> ExecResult<()> {
    if !aggregates {
        return match by_time {
            true => Err(QueryError::GroupByWithoutAggregate),
            false => Ok(()),
        };
    }
    if !top_bottom
        && projections.iter().any(|p| p.term.has_bare_ref())
        && !single_selector(projections)
    {
        let calls = aggregate_calls(projections);
        return Err(match calls.len() > 1 && calls.values().all(|s| *s) {
            true => QueryError::SelectorsWithFields,
            false => QueryError::MixedAggregate,
        });
    }
    for p in projections {
        if let Term::Call { func, args } = &p.term
            && func.kind() == Kind::Transform
        {
            let inner_agg = args.first().is_some_and(|a| a.is_call(Kind::aggregates));
            let name = || func.name().to_string();
            if by_time && !inner_agg {
                return Err(QueryError::TransformWithoutAggregate { name: name() });
            }
            if !by_time && inner_agg {
                return Err(QueryError::TransformWithoutInterval { name: name() });
            }
        }
    }
    Ok(())
}

/// A plan as readable text, one line per part (what the planner's case files hold).
impl fmt::Display for SelectPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.shape {
            Shape::Raw => writeln!(f, "shape: raw")?,
            Shape::RawTransform => writeln!(f, "shape: raw transform")?,
            Shape::Aggregate { lone_selector } => writeln!(
                f,
                "shape: aggregate{}",
                if *lone_selector {
                    " (lone selector)"
                } else {
                    ""
                }
            )?,
            Shape::Distinct(field) => writeln!(f, "shape: distinct of {field}")?,
            Shape::TopBottom(t) => writeln!(
                f,
                "shape: {} {} of {} by [{}] at column {}, beside [{}]",
                t.func.name(),
                t.n,
                t.field,
                t.tags.join(", "),
                t.at,
                t.aux.join(", ")
            )?,
        }
        let projections: Vec<String> = self
            .projections
            .iter()
            .map(|p| match &p.alias {
                Some(a) => format!("{} AS {a}", p.term),
                None => p.term.to_string(),
            })
            .collect();
        writeln!(f, "projections: {}", projections.join(", "))?;
        let bound = |t: i64| match t {
            i64::MIN => "-inf".to_string(),
            i64::MAX => "+inf".to_string(),
            t => t.to_string(),
        };
        writeln!(
            f,
            "time: [{}, {}]",
            bound(self.time.min),
            bound(self.time.max)
        )?;
        match &self.condition {
            Some(c) => writeln!(f, "condition: {} ({} regexes)", c.term, c.regexes.len())?,
            None => writeln!(f, "condition: none")?,
        }
        let mut group: Vec<String> = self
            .grouping
            .tags
            .iter()
            .map(|g| match g {
                TagGroup::Tag(t) => t.clone(),
                TagGroup::Regex(r) => format!("/{r}/"),
                TagGroup::All => "*".to_string(),
            })
            .collect();
        if let Some(iv) = self.grouping.interval {
            group.push(format!("time({}ns, {}ns)", iv.every, iv.offset));
        }
        writeln!(f, "group by: [{}]", group.join(", "))?;
        let fill = match &self.fill {
            Fill::Null => "null".to_string(),
            Fill::None => "none".to_string(),
            Fill::Previous => "previous".to_string(),
            Fill::Linear => "linear".to_string(),
            Fill::Number(n) => format!("{n:?}"),
            Fill::Integer(i) => i.to_string(),
        };
        writeln!(f, "fill: {fill}")?;
        let l = &self.limits;
        writeln!(
            f,
            "limits: limit {} offset {} slimit {} soffset {}",
            l.limit, l.offset, l.slimit, l.soffset
        )?;
        write!(
            f,
            "order: {}",
            if self.descending {
                "descending"
            } else {
                "ascending"
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Shape, plan};
    use crate::exec::term::{Function, Term};
    use crate::influxql::{Statement, parse_query};

    fn select(q: &str) -> crate::influxql::Select {
        match parse_query(q).unwrap().remove(0) {
            Statement::Select(s) => *s,
            other => panic!("not a SELECT: {other}"),
        }
    }

    #[test]
    fn now_is_an_input() {
        let q = select("SELECT mean(v) FROM m WHERE time > now() - 1h GROUP BY time(10m)");
        let a = plan(&q, 10_000_000_000_000).unwrap();
        let b = plan(&q, 20_000_000_000_000).unwrap();
        assert_eq!(a.time.min, 10_000_000_000_000 - 3_600_000_000_000 + 1);
        assert_eq!(b.time.min, 20_000_000_000_000 - 3_600_000_000_000 + 1);
        assert_eq!(a.time.max, i64::MAX);
        assert_eq!((a.now, b.now), (10_000_000_000_000, 20_000_000_000_000));
        // The same statement and now: the same plan.
        let again = plan(&q, 10_000_000_000_000).unwrap();
        assert_eq!(again.to_string(), a.to_string());
    }

    #[test]
    fn calls_are_resolved_to_functions() {
        let p = plan(
            &select("SELECT derivative(mean(v), 1s) FROM m GROUP BY time(1m)"),
            0,
        )
        .unwrap();
        assert_eq!(
            p.shape,
            Shape::Aggregate {
                lone_selector: false
            }
        );
        let Term::Call { func, args } = &p.projections[0].term else {
            panic!("{:?}", p.projections[0].term)
        };
        assert_eq!(*func, Function::Derivative);
        assert_eq!(args[0].function(), Some(Function::Mean));
        assert_eq!(args[1], Term::Duration(1_000_000_000));
    }
}

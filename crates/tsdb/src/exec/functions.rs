//! InfluxQL's functions: which names exist and of what kind (aggregates, selectors,
//! transforms, `top`/`bottom`, math), and their arithmetic on points: one aggregate over a
//! bucket's points, one transform over a series of points, one math function of values.
//! What it does not do: bucket points or fill (see [`super::aggregate`]), nor read rows.

use super::error::{ExecResult, QueryError};
use super::value::Val;
use crate::influxql::{Expr, Field};

// ---------------------------------------------------------------------------------------------
// SELECT

pub(super) const AGGREGATES: &[&str] = &[
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
pub(super) const SELECTORS: &[&str] = &["min", "max", "first", "last", "percentile"];
pub(super) const TRANSFORMS: &[&str] = &[
    "derivative",
    "non_negative_derivative",
    "difference",
    "non_negative_difference",
    "cumulative_sum",
    "moving_average",
];

/// Selectors of several points per bucket: `top(field, N)` / `bottom(field, N)`, alone.
pub(super) const SELECT_N: &[&str] = &["top", "bottom"];

/// A `top`/`bottom` query: `top(field[, tag ...], N)` beside bare fields or tags whose
/// values at the chosen points are shown beside them (InfluxDB 1.6).
pub(super) struct SelectN<'a> {
    pub(super) name: &'a str,
    pub(super) field: &'a str,
    /// With tag arguments, one point per distinct combination of their values competes.
    pub(super) tags: Vec<&'a str>,
    pub(super) n: usize,
    /// Position of the call among the projections.
    pub(super) at: usize,
    /// The other projections, in order.
    pub(super) aux: Vec<&'a str>,
}

/// The `top`/`bottom` form of a projection list, if it is one; an error for the forms torc does
/// not implement (beside anything but bare names).
pub(super) fn select_n(fields: &[Field]) -> ExecResult<Option<SelectN<'_>>> {
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
pub(super) const INFLUXQL_ONLY: &[&str] =
    &["sample", "elapsed", "holt_winters", "holt_winters_with_fit"];

/// Math functions of one value (two for `atan2`, `log` and `pow`), applied per row or to
/// aggregates.
pub(super) const MATH: &[&str] = &[
    "abs", "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "exp", "log", "ln", "log2",
    "log10", "sqrt", "pow", "floor", "ceil", "round",
];

pub(super) fn math_arity(name: &str) -> usize {
    if matches!(name, "atan2" | "log" | "pow") {
        2
    } else {
        1
    }
}

/// Applies a math function; null in, null out. `abs`, `floor`, `ceil` and `round` keep an
/// integer an integer.
pub(super) fn math(name: &str, args: &[Val]) -> Val {
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

pub(super) fn is_call_kind(e: &Expr, kinds: &[&str]) -> bool {
    matches!(e.unparen(), Expr::Call { name, .. } if kinds.contains(&name.as_str()))
}

pub(super) fn contains_call(e: &Expr, kinds: &[&str]) -> bool {
    let mut yes = false;
    e.walk(&mut |x| {
        if is_call_kind(x, kinds) {
            yes = true;
        }
    });
    yes
}

/// True if the expression references a field outside any function call.
pub(super) fn has_bare_ref(e: &Expr) -> bool {
    match e {
        Expr::VarRef(_) | Expr::Wildcard => true,
        Expr::Call { name, args } if MATH.contains(&name.as_str()) => args.iter().any(has_bare_ref),
        Expr::Call { .. } => false,
        Expr::Paren(x) => has_bare_ref(x),
        Expr::Binary { lhs, rhs, .. } => has_bare_ref(lhs) || has_bare_ref(rhs),
        _ => false,
    }
}

pub(super) fn field_refs_any(e: &Expr) -> bool {
    let mut yes = false;
    e.walk(&mut |x| {
        if matches!(x, Expr::VarRef(_) | Expr::Wildcard) {
            yes = true;
        }
    });
    yes
}

/// A point fed to an aggregate.
#[derive(Clone)]
pub(super) struct Pt {
    pub(super) t: i64,
    pub(super) v: Val,
}

/// The unit of a derivative (a duration, 1s by default), or the window of `moving_average`.
pub(super) fn transform_unit(name: &str, args: &[Expr]) -> ExecResult<i64> {
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

pub(super) fn transform(name: &str, pts: &[Pt], unit: i64) -> Vec<Pt> {
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

/// Computes one aggregate; returns the value and, for selectors, the selected point's time.
pub(super) fn agg(name: &str, pts: &[Pt], args: &[Expr]) -> ExecResult<(Val, Option<i64>)> {
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

pub(super) fn val_gt(a: &Val, b: &Val) -> bool {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x > y,
        (Val::Bool(x), Val::Bool(y)) => x & !y,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x > y,
            _ => false,
        },
    }
}

//! The arithmetic of InfluxQL's functions on points and values: one aggregate or selector
//! over a bucket's points ([`reduce`]: `of_numbers` for aggregates, `select_point` for
//! selectors), one transform over a series of points ([`transform`], with its unit or window
//! from [`transform_unit`]), one math function of values ([`math`]). Each is one `match` on
//! [`Function`]: adding a function is its line in the table of [`super::term`] and its arm
//! here.
//! What it does not do: bucket points, fill or pick `top`/`bottom` points (see
//! [`super::aggregate`]), nor read rows.

use super::error::{ExecResult, QueryError};
use super::term::{Function, Kind, Term};
use super::value::Val;

/// A point fed to an aggregate.
#[derive(Clone)]
pub(super) struct Pt {
    pub(super) t: i64,
    pub(super) v: Val,
    /// The point's row among its group's rows (what a selector's other columns show).
    pub(super) row: usize,
}

/// The point a selector picked: its time and row.
pub(super) type Picked = Option<(i64, usize)>;

/// Applies a math function; null in, null out (and for a function that is not math).
/// `abs`, `floor`, `ceil` and `round` keep an integer an integer.
pub(super) fn math(func: Function, args: &[Val]) -> Val {
    use Function as F;
    if args.len() != func.arity() || args.iter().any(Val::is_null) {
        return Val::Null;
    }
    if let [Val::Int(i)] = args {
        match func {
            F::Abs => return Val::Int(i.wrapping_abs()),
            F::Floor | F::Ceil | F::Round => return Val::Int(*i),
            _ => {}
        }
    }
    let Some(x) = args[0].as_f64() else {
        return Val::Null;
    };
    let y = args.get(1).and_then(Val::as_f64).unwrap_or(0.0);
    Val::Float(match func {
        F::Abs => x.abs(),
        F::Sin => x.sin(),
        F::Cos => x.cos(),
        F::Tan => x.tan(),
        F::Asin => x.asin(),
        F::Acos => x.acos(),
        F::Atan => x.atan(),
        F::Atan2 => x.atan2(y),
        F::Exp => x.exp(),
        F::Log => x.ln() / y.ln(),
        F::Ln => x.ln(),
        F::Log2 => x.log2(),
        F::Log10 => x.log10(),
        F::Sqrt => x.sqrt(),
        F::Pow => x.powf(y),
        F::Floor => x.floor(),
        F::Ceil => x.ceil(),
        F::Round => x.round(),
        _ => return Val::Null,
    })
}

/// The unit of a derivative (a duration, 1s by default), or the window of `moving_average`.
pub(super) fn transform_unit(func: Function, args: &[Term]) -> ExecResult<i64> {
    let name = || func.name().to_string();
    match func {
        Function::MovingAverage => {
            return match args.get(1) {
                Some(Term::Int(n)) if *n > 1 => Ok(*n),
                Some(Term::Int(n)) => Err(QueryError::MovingAverageWindow { n: *n }),
                _ => Err(QueryError::Arity {
                    name: name(),
                    expected: 2,
                    got: args.len(),
                }),
            };
        }
        Function::Elapsed => {
            return match args.get(1) {
                None => Ok(1),
                Some(Term::Duration(d)) if *d > 0 => Ok(*d),
                Some(t) => Err(QueryError::ElapsedUnit {
                    got: match t {
                        Term::Int(_) => "IntegerLiteral",
                        Term::Float(_) => "NumberLiteral",
                        Term::Str(_) => "StringLiteral",
                        Term::Duration(_) => "DurationLiteral",
                        _ => "VarRef",
                    },
                }),
            };
        }
        Function::CumulativeSum if args.len() != 1 => {
            return Err(QueryError::Arity {
                name: name(),
                expected: 1,
                got: args.len(),
            });
        }
        _ => {}
    }
    match args.get(1) {
        None => Ok(1_000_000_000),
        Some(Term::Duration(d)) if *d > 0 => Ok(*d),
        Some(_) => Err(QueryError::TransformUnit { name: name() }),
    }
}

/// Applies a transform to points in time order; `unit` as [`transform_unit`] gives it.
pub(super) fn transform(func: Function, pts: &[Pt], unit: i64) -> Vec<Pt> {
    let rate = |pv: &Pt, p: &Pt, a: f64, b: f64| (b - a) / ((p.t - pv.t) as f64 / unit as f64);
    match func {
        Function::CumulativeSum => cumulative_sum(pts),
        Function::MovingAverage => moving_average(pts, unit.max(1) as usize),
        // The time since the previous point (0 for one of the same time), in units.
        Function::Elapsed => pts
            .windows(2)
            .map(|w| Pt {
                t: w[1].t,
                v: Val::Int((w[1].t - w[0].t) / unit.max(1)),
                row: w[1].row,
            })
            .collect(),
        Function::Derivative => consecutive(pts, |pv, p, a, b| Some(Val::Float(rate(pv, p, a, b)))),
        Function::NonNegativeDerivative => consecutive(pts, |pv, p, a, b| {
            let v = rate(pv, p, a, b);
            (v >= 0.0).then_some(Val::Float(v))
        }),
        Function::Difference => consecutive(pts, |pv, p, a, b| Some(difference(pv, p, b - a))),
        Function::NonNegativeDifference => consecutive(pts, |pv, p, a, b| {
            (b - a >= 0.0).then(|| difference(pv, p, b - a))
        }),
        _ => Vec::new(),
    }
}

/// A value per pair of consecutive points with distinct times, at the later one's time
/// (`None` leaves the pair out); a point that is not a number starts the next pair.
fn consecutive(pts: &[Pt], of: impl Fn(&Pt, &Pt, f64, f64) -> Option<Val>) -> Vec<Pt> {
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
        prev = Some(p);
        if let Some(v) = of(pv, p, a, b) {
            out.push(Pt {
                t: p.t,
                v,
                row: p.row,
            });
        }
    }
    out
}

/// The difference of two points: an integer for integers.
fn difference(pv: &Pt, p: &Pt, v: f64) -> Val {
    match (&pv.v, &p.v) {
        (Val::Int(x), Val::Int(y)) => Val::Int(y.wrapping_sub(*x)),
        _ => Val::Float(v),
    }
}

fn cumulative_sum(pts: &[Pt]) -> Vec<Pt> {
    let mut acc: Option<Val> = None;
    pts.iter()
        .filter_map(|p| {
            let next = match (&acc, &p.v) {
                (None, v @ (Val::Int(_) | Val::Float(_))) => v.clone(),
                (Some(Val::Int(a)), Val::Int(b)) => Val::Int(a.wrapping_add(*b)),
                (Some(a), b) => Val::Float(a.as_f64()? + b.as_f64()?),
                (None, _) => return None,
            };
            acc = Some(next.clone());
            Some(Pt {
                t: p.t,
                v: next,
                row: p.row,
            })
        })
        .collect()
}

fn moving_average(pts: &[Pt], n: usize) -> Vec<Pt> {
    let nums: Vec<(i64, f64, usize)> = pts
        .iter()
        .filter_map(|p| p.v.as_f64().map(|v| (p.t, v, p.row)))
        .collect();
    nums.windows(n)
        .map(|w| Pt {
            t: w[n - 1].0,
            v: Val::Float(w.iter().map(|(_, v, _)| v).sum::<f64>() / n as f64),
            row: w[n - 1].2,
        })
        .collect()
}

/// Computes one aggregate or selector over a bucket's points; returns the value and, for
/// selectors, the selected point. `args`: the call's (the first is the field).
pub(super) fn reduce(func: Function, pts: &[Pt], args: &[Term]) -> ExecResult<(Val, Picked)> {
    use Function as F;
    if func == F::Count {
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
    match func.kind() {
        Kind::Aggregate => of_numbers(func, pts, args),
        Kind::Selector => select_point(func, pts, args),
        // Functions of other kinds nested in an aggregate expression.
        _ => Err(QueryError::UndefinedFunction {
            name: func.name().to_string(),
        }),
    }
}

/// What [`reduce`] needs to know of a bucket's points: their numbers, whether all are
/// integers, and the error of an aggregate that needs numbers over other values.
fn numbers(func: Function, pts: &[Pt]) -> (Vec<f64>, bool, ExecResult<()>) {
    let nums: Vec<f64> = pts.iter().filter_map(|p| p.v.as_f64()).collect();
    let all_int = pts.iter().all(|p| matches!(p.v, Val::Int(_)));
    let numeric = match pts
        .iter()
        .find(|p| !matches!(p.v, Val::Int(_) | Val::Float(_)))
    {
        None => Ok(()),
        Some(p) => Err(QueryError::SelectorType {
            name: func.name().to_string(),
            go_type: match p.v {
                Val::Bool(_) => "boolean",
                _ => "string",
            },
        }),
    };
    (nums, all_int, numeric)
}

/// An error unless every point is a number (`func`'s, as influxd names it).
pub(super) fn need_numbers(func: Function, pts: &[Pt]) -> ExecResult<()> {
    numbers(func, pts).2
}

/// An aggregate of a bucket's points (not empty, `count` aside): one arm per aggregate.
fn of_numbers(func: Function, pts: &[Pt], args: &[Term]) -> ExecResult<(Val, Picked)> {
    use Function as F;
    let (nums, all_int, numeric) = numbers(func, pts);
    let need_numeric = || numeric.clone();
    Ok(match func {
        F::Mean => {
            need_numeric()?;
            (
                Val::Float(nums.iter().sum::<f64>() / nums.len() as f64),
                None,
            )
        }
        F::Sum => {
            need_numeric()?;
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
        F::Median => {
            need_numeric()?;
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
        F::Spread => {
            need_numeric()?;
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
        F::Stddev => {
            need_numeric()?;
            if nums.len() < 2 {
                (Val::Null, None)
            } else {
                let mean = nums.iter().sum::<f64>() / nums.len() as f64;
                let var = nums.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>()
                    / (nums.len() - 1) as f64;
                (Val::Float(var.sqrt()), None)
            }
        }
        F::Mode => (mode(pts), None),
        F::Integral => {
            need_numeric()?;
            let whole = |_| Some((0, 0, i64::MAX));
            let v = integral(pts, integral_unit(args)?, &whole).pop();
            (v.map_or(Val::Null, |(_, v)| Val::Float(v)), None)
        }
        // `distinct` is a shape of its own (`plan::Shape::Distinct`), or inside `count`.
        _ => {
            return Err(QueryError::UndefinedFunction {
                name: func.name().to_string(),
            });
        }
    })
}

/// The most frequent value (InfluxDB 1.6): booleans by count, `true` on a tie; other values
/// sorted by value and counted in runs, where a run ties with the best so far only if it
/// started no later, and a value seen once after the first never wins.
fn mode(pts: &[Pt]) -> Val {
    if pts.len() == 1 {
        return pts[0].v.clone();
    }
    if let Val::Bool(_) = pts[0].v {
        let t = pts.iter().filter(|p| p.v == Val::Bool(true)).count();
        return Val::Bool(2 * t >= pts.len());
    }
    let mut s: Vec<&Pt> = pts.iter().collect();
    s.sort_by(|a, b| cmp_vals(&a.v, &b.v));
    let (mut most_n, mut cur_n) = (0usize, 0usize);
    let (mut cur, mut most) = (&s[0].v, &s[0].v);
    let (mut cur_t, mut most_t) = (s[0].t, s[0].t);
    for p in &s {
        if p.v != *cur {
            (cur_n, cur, cur_t) = (1, &p.v, p.t);
            continue;
        }
        cur_n += 1;
        if most_n > cur_n || (most_n == cur_n && cur_t > most_t) {
            continue;
        }
        (most_n, most, most_t) = (cur_n, &p.v, p.t);
    }
    most.clone()
}

/// Orders two values of one type (numbers by value, strings bytewise).
pub(super) fn cmp_vals(a: &Val, b: &Val) -> std::cmp::Ordering {
    match (a, b) {
        (Val::Str(x), Val::Str(y)) => x.cmp(y),
        (Val::Bool(x), Val::Bool(y)) => x.cmp(y),
        _ => (a.as_f64().unwrap_or(0.0)).total_cmp(&b.as_f64().unwrap_or(0.0)),
    }
}

/// The unit of `integral(field[, unit])`: 1s by default.
pub(super) fn integral_unit(args: &[Term]) -> ExecResult<i64> {
    match args.get(1) {
        None => Ok(1_000_000_000),
        Some(Term::Duration(d)) if *d > 0 => Ok(*d),
        Some(_) => Err(QueryError::TransformUnit {
            name: "integral".into(),
        }),
    }
}

/// A window of `integral`: its bucket, start and end.
pub(super) type Window = Option<(usize, i64, i64)>;

/// The area under numeric points in time order by the trapezium rule, per `unit` of time, as
/// influxd 1.6 streams it: of points with one time the last counts; a bucket (`window` of a
/// time) holds the area from its first point, or from its start where the line from an
/// earlier bucket's last point crosses it (interpolated), to its last point or its end; it
/// is answered once a later point passes its end, or at the end unless its last point is its
/// start. Over integers (influxd's integer reducer), the segment from a bucket's start to its
/// first point runs from the previous point's value to the interpolated one, not to the
/// point's. Returns (bucket, area) in time order.
pub(super) fn integral(pts: &[Pt], unit: i64, window: &dyn Fn(i64) -> Window) -> Vec<(usize, f64)> {
    let per_unit = |dt: i64| dt as f64 / unit as f64;
    let mut out = Vec::new();
    let mut prev: Option<(i64, f64)> = None;
    let mut win = (0, 0, i64::MAX);
    let mut sum = 0.0;
    for p in pts {
        let mut x = p.v.as_f64().unwrap_or(0.0);
        let Some((mut pt, mut pv)) = prev else {
            prev = Some((p.t, x));
            win = window(p.t).unwrap_or(win);
            continue;
        };
        if p.t == pt {
            prev = Some((p.t, x));
            continue;
        }
        if p.t >= win.2 {
            if pt != win.2 {
                let at_end = pv + (x - pv) * per_unit(win.2 - pt) / per_unit(p.t - pt);
                sum += 0.5 * (at_end + pv) * per_unit(win.2 - pt);
                match p.v {
                    Val::Int(_) => (pt, x) = (win.2, at_end),
                    _ => (pt, pv) = (win.2, at_end),
                }
            }
            out.push((win.0, sum));
            win = window(p.t).unwrap_or(win);
            sum = 0.0;
        }
        sum += 0.5 * (x + pv) * per_unit(p.t - pt);
        prev = Some((p.t, p.v.as_f64().unwrap_or(0.0)));
    }
    if prev.is_some_and(|(t, _)| t != win.1) {
        out.push((win.0, sum));
    }
    out
}

/// How many distinct values the points have.
pub(super) fn count_distinct(pts: &[Pt]) -> Val {
    if pts.is_empty() {
        return Val::Null;
    }
    Val::Int(distinct(pts).len() as i64)
}

/// The distinct values of points, ordered by the time each is first seen, then by value
/// (InfluxDB 1.6).
pub(super) fn distinct(pts: &[Pt]) -> Vec<Val> {
    let mut seen = std::collections::HashSet::new();
    let mut firsts: Vec<&Pt> = pts
        .iter()
        .filter(|p| seen.insert(format!("{:?}", p.v)))
        .collect();
    firsts.sort_by(|a, b| a.t.cmp(&b.t).then_with(|| cmp_vals(&a.v, &b.v)));
    firsts.into_iter().map(|p| p.v.clone()).collect()
}

/// A selector of a bucket's points (not empty): the point it selects, one arm per selector.
fn select_point(func: Function, pts: &[Pt], args: &[Term]) -> ExecResult<(Val, Picked)> {
    use Function as F;
    let (_, _, numeric) = numbers(func, pts);
    let need_numeric = || numeric.clone();
    Ok(match func {
        F::Min | F::Max => {
            // Booleans compare as 0 and 1 (InfluxDB 1.6).
            let num = |v: &Val| match v {
                Val::Bool(b) => Some(f64::from(u8::from(*b))),
                v => v.as_f64(),
            };
            if pts.iter().any(|p| num(&p.v).is_none()) {
                need_numeric()?;
            }
            let mut best = &pts[0];
            for p in &pts[1..] {
                let (a, b) = (num(&p.v).unwrap_or(0.0), num(&best.v).unwrap_or(0.0));
                let better = if func == F::Min { a < b } else { a > b };
                if better || (a == b && p.t < best.t) {
                    best = p;
                }
            }
            (best.v.clone(), Some((best.t, best.row)))
        }
        F::First | F::Last => {
            let mut best = &pts[0];
            for p in &pts[1..] {
                let better = if func == F::First {
                    p.t < best.t
                } else {
                    p.t > best.t
                };
                let tie_bigger = p.t == best.t && val_gt(&p.v, &best.v);
                if better || tie_bigger {
                    best = p;
                }
            }
            (best.v.clone(), Some((best.t, best.row)))
        }
        F::Percentile => {
            need_numeric()?;
            let pct = match args.get(1) {
                Some(Term::Int(i)) => *i as f64,
                Some(Term::Float(f)) => *f,
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
                (
                    s[i as usize].v.clone(),
                    Some((s[i as usize].t, s[i as usize].row)),
                )
            }
        }
        _ => {
            return Err(QueryError::UndefinedFunction {
                name: func.name().to_string(),
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

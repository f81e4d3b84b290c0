//! Conditions (`WHERE`) before any row is read: whether a series' tags can satisfy one
//! (three-valued: `None` when the outcome depends on fields or time), which series the tag
//! index names for an equality, the time range split out of top-level `AND`s, and the
//! compiled regexes of a condition.
//! What it does not do: evaluate a condition per row (see [`super::eval`]).

use std::collections::HashMap;

use regex::Regex;

use super::error::{ExecResult, QueryError};
use crate::influxql::{BinOp, Expr};
use crate::storage::SeriesInfo;

/// True when a condition mentions `time`.
pub(super) fn refers_to_time(e: &Expr) -> bool {
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

// ---------------------------------------------------------------------------------------------
// Conditions

/// Three-valued evaluation of a condition against a series' tags: `None` when the outcome
/// depends on fields or time.
pub(super) fn series_match(e: &Expr, s: &SeriesInfo) -> Option<bool> {
    series_match_mode(e, s, false)
}

/// As [`series_match`]; in metadata statements (`SHOW ...`) conditions are on tags only, so a
/// missing tag is the empty string rather than unknown.
pub(super) fn series_match_tags(e: &Expr, s: &SeriesInfo) -> Option<bool> {
    series_match_mode(e, s, true)
}

pub(super) fn series_match_mode(e: &Expr, s: &SeriesInfo, tags_only: bool) -> Option<bool> {
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
pub(super) fn index_candidates(
    e: &Expr,
    mi: &crate::storage::MeasurementIndex,
) -> Option<Vec<u32>> {
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

pub(super) fn cached_regex_match(r: &str, s: &str) -> Option<bool> {
    REGEX_CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 1024 {
            c.clear();
        }
        let re = c.entry(r.to_string()).or_insert_with(|| Regex::new(r).ok());
        re.as_ref().map(|re| re.is_match(s))
    })
}

pub(super) fn compare_tag(op: BinOp, tv: &str, lit: &Expr, flipped: bool) -> Option<bool> {
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

/// Evaluates a constant time expression (now(), literals, RFC3339 strings, arithmetic).
pub(super) fn time_value(e: &Expr, now: i64) -> ExecResult<i64> {
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
pub(super) fn extract_time(cond: &Expr, now: i64) -> ExecResult<(i64, i64, Option<Expr>)> {
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

pub(super) fn collect_regexes(e: &Expr, out: &mut HashMap<String, Regex>) -> ExecResult<()> {
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

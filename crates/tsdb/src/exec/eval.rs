//! Row evaluation: an expression (a projection of a raw query, or the residual condition)
//! over one row's time, loaded fields and series tags, with InfluxQL's operators on
//! [`Val`]s (null in, null out; integer arithmetic stays integer but for `/`).
//! What it does not do: aggregate over rows (see [`super::aggregate`]), or decide anything
//! from tags alone (see [`super::cond`]).

use std::collections::HashMap;

use regex::Regex;

use super::functions::math;
use super::term::{Kind, Term};
use super::value::Val;
use crate::influxql::BinOp;
use crate::model::FieldValue;
use crate::storage::SeriesInfo;

/// A compiled row condition: tag, field and time references evaluated per row.
pub(super) struct RowCtx<'a> {
    pub(super) series: &'a SeriesInfo,
    pub(super) time: i64,
    pub(super) fields: &'a [String],
    pub(super) values: &'a [Option<FieldValue>],
}

pub(super) fn eval(e: &Term, row: &RowCtx<'_>, regexes: &HashMap<String, Regex>) -> Val {
    match e {
        Term::Ref(n) => {
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
        Term::Int(i) => Val::Int(*i),
        Term::Float(f) => Val::Float(*f),
        Term::Str(s) => Val::Str(s.clone()),
        Term::Bool(b) => Val::Bool(*b),
        Term::Duration(d) => Val::Int(*d),
        Term::Binary { op, lhs, rhs } => {
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
                    let Term::Regex(r) = &**rhs else {
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
        Term::Call { func, args } if func.kind() == Kind::Math => {
            let vals: Vec<Val> = args.iter().map(|a| eval(a, row, regexes)).collect();
            math(*func, &vals)
        }
        _ => Val::Null,
    }
}

pub(super) fn binop(op: BinOp, l: Val, r: Val) -> Val {
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

//! The vocabulary of a plan: [`Function`], every function of InfluxQL 1.6 by name and
//! [`Kind`], and [`Term`], an expression whose calls are resolved to functions (parentheses
//! dropped). The planner lowers the parser's expressions to terms once; the executor matches
//! on functions, never on names.
//! What it does not do: decide whether a statement is valid (see [`super::plan`]) or compute
//! anything (see `exec::functions`).
//!
//! Adding a function: one line in the `functions!` table below (variant, name, kind), and one
//! match arm where its kind is computed in `exec::functions`: `of_numbers` (aggregates),
//! `select_point` (selectors), `transform` (with `transform_unit` if it takes a unit or window),
//! or `math` (with its `arity` if it takes two values). `top` and
//! `bottom` are the one kind with a plan of their own (`plan::TopBottom`). A function of a
//! kind torc does not evaluate is `Kind::Unimplemented`: asking for it is an error, never a
//! column of nulls. For example `mode` and `integral` were each one arm in
//! `functions::of_numbers` (kind `Aggregate`), `elapsed` a line here (kind `Transform`) and
//! arms in `functions::transform` and `transform_unit`; `distinct` is the one aggregate with a shape of
//! its own (`plan::Shape::Distinct`, a row per value) and `count(distinct(x))` one case in
//! `aggregate::eval_agg_expr`. What `func(*)` expands to is [`Function::takes`]. The planner
//! needs no change for a function of an existing kind; the case files of `tests/data/plan/`
//! show what it makes of one.

use std::fmt;

use crate::influxql::{BinOp, Expr};
use crate::model::FieldType;

/// What a function computes, which decides where it may appear and how it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One value of a bucket's points (`mean`, `count`, ...).
    Aggregate,
    /// One of a bucket's points, shown at its own time when alone (`min`, `first`, ...).
    Selector,
    /// A series of points from a series of points or bucket values (`derivative`, ...).
    Transform,
    /// The N greatest or least points of a bucket (`top`, `bottom`).
    TopBottom,
    /// A function of values, per row or of aggregates (`abs`, `round`, ...).
    Math,
    /// A function of InfluxQL 1.6 torc does not evaluate.
    Unimplemented,
}

impl Kind {
    /// Aggregates and selectors: one value per bucket.
    pub fn aggregates(self) -> bool {
        matches!(self, Kind::Aggregate | Kind::Selector)
    }

    /// Makes a statement an aggregate query (no raw rows).
    pub fn makes_aggregate_query(self) -> bool {
        matches!(
            self,
            Kind::Aggregate | Kind::Selector | Kind::Transform | Kind::TopBottom
        )
    }
}

/// Defines [`Function`] with its names and kinds from one table.
macro_rules! functions {
    ($($variant:ident = $name:literal, $kind:ident;)*) => {
        /// A function of InfluxQL 1.6, resolved from its name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Function {
            $($variant,)*
        }

        impl Function {
            /// Every function, in the table's order.
            pub const ALL: &[Function] = &[$(Function::$variant,)*];

            /// The function of a name (the parser lower-cases a call's name).
            pub fn from_name(name: &str) -> Option<Function> {
                match name {
                    $($name => Some(Function::$variant),)*
                    _ => None,
                }
            }

            /// The function's name, as a column of it is named.
            pub fn name(self) -> &'static str {
                match self {
                    $(Function::$variant => $name,)*
                }
            }

            pub fn kind(self) -> Kind {
                match self {
                    $(Function::$variant => Kind::$kind,)*
                }
            }
        }
    };
}

functions! {
    Mean = "mean", Aggregate;
    Median = "median", Aggregate;
    Count = "count", Aggregate;
    Sum = "sum", Aggregate;
    Spread = "spread", Aggregate;
    Stddev = "stddev", Aggregate;
    Mode = "mode", Aggregate;
    Distinct = "distinct", Aggregate;
    Integral = "integral", Aggregate;
    Min = "min", Selector;
    Max = "max", Selector;
    First = "first", Selector;
    Last = "last", Selector;
    Percentile = "percentile", Selector;
    Derivative = "derivative", Transform;
    NonNegativeDerivative = "non_negative_derivative", Transform;
    Difference = "difference", Transform;
    NonNegativeDifference = "non_negative_difference", Transform;
    CumulativeSum = "cumulative_sum", Transform;
    MovingAverage = "moving_average", Transform;
    Elapsed = "elapsed", Transform;
    Top = "top", TopBottom;
    Bottom = "bottom", TopBottom;
    Abs = "abs", Math;
    Sin = "sin", Math;
    Cos = "cos", Math;
    Tan = "tan", Math;
    Asin = "asin", Math;
    Acos = "acos", Math;
    Atan = "atan", Math;
    Atan2 = "atan2", Math;
    Exp = "exp", Math;
    Log = "log", Math;
    Ln = "ln", Math;
    Log2 = "log2", Math;
    Log10 = "log10", Math;
    Sqrt = "sqrt", Math;
    Pow = "pow", Math;
    Floor = "floor", Math;
    Ceil = "ceil", Math;
    Round = "round", Math;
    Sample = "sample", Unimplemented;

    HoltWinters = "holt_winters", Unimplemented;
    HoltWintersWithFit = "holt_winters_with_fit", Unimplemented;
}

impl Function {
    /// Whether the function takes a field of type `t`: what `func(*)` expands to (InfluxDB
    /// 1.6: `count`, `first`, `last`, `mode` and `distinct` take any field, `min` and `max`
    /// numbers and booleans, the others numbers).
    pub fn takes(self, t: FieldType) -> bool {
        match self {
            Function::Count
            | Function::First
            | Function::Last
            | Function::Mode
            | Function::Distinct => true,
            Function::Min | Function::Max => t != FieldType::String,
            _ => matches!(t, FieldType::Float | FieldType::Integer),
        }
    }

    /// How many values a math function takes.
    pub fn arity(self) -> usize {
        match self {
            Function::Atan2 | Function::Log | Function::Pow => 2,
            _ => 1,
        }
    }
}

/// An expression with its calls resolved: what a projection computes, or a condition
/// evaluated per row.
#[derive(Debug, Clone, PartialEq)]
pub enum Term {
    /// A field, a tag or `time`, by name (which one is known per measurement).
    Ref(String),
    /// `*`: every field (and, in a raw query, tag), expanded per statement.
    Wildcard,
    Int(i64),
    Float(f64),
    Str(String),
    Bool(bool),
    /// Nanoseconds.
    Duration(i64),
    Regex(String),
    Binary {
        op: BinOp,
        lhs: Box<Term>,
        rhs: Box<Term>,
    },
    Call {
        func: Function,
        args: Vec<Term>,
    },
    /// A call of a name that is no function (an error in a projection, null in a condition).
    Undefined {
        name: String,
        args: Vec<Term>,
    },
}

impl Term {
    /// Lowers a parsed expression: names resolved, parentheses dropped.
    pub fn lower(e: &Expr) -> Term {
        match e {
            Expr::VarRef(n) => Term::Ref(n.clone()),
            Expr::Call { name, args } => {
                let args = args.iter().map(Term::lower).collect();
                match Function::from_name(name) {
                    Some(func) => Term::Call { func, args },
                    None => Term::Undefined {
                        name: name.clone(),
                        args,
                    },
                }
            }
            Expr::Integer(i) => Term::Int(*i),
            Expr::Number(f) => Term::Float(*f),
            Expr::String(s) => Term::Str(s.clone()),
            Expr::Regex(r) => Term::Regex(r.clone()),
            Expr::Bool(b) => Term::Bool(*b),
            Expr::Duration(d) => Term::Duration(*d),
            Expr::Wildcard => Term::Wildcard,
            Expr::Distinct(n) => Term::Call {
                func: Function::Distinct,
                args: vec![Term::Ref(n.clone())],
            },
            Expr::Binary { op, lhs, rhs } => Term::Binary {
                op: *op,
                lhs: Box::new(Term::lower(lhs)),
                rhs: Box::new(Term::lower(rhs)),
            },
            Expr::Paren(x) => Term::lower(x),
        }
    }

    /// Visits this term and then its sub-terms, depth first.
    pub fn walk<'t>(&'t self, f: &mut impl FnMut(&'t Term)) {
        f(self);
        match self {
            Term::Call { args, .. } | Term::Undefined { args, .. } => {
                args.iter().for_each(|a| a.walk(f))
            }
            Term::Binary { lhs, rhs, .. } => {
                lhs.walk(f);
                rhs.walk(f);
            }
            _ => {}
        }
    }

    /// The function of a call (none for anything else).
    pub fn function(&self) -> Option<Function> {
        match self {
            Term::Call { func, .. } => Some(*func),
            _ => None,
        }
    }

    /// True when this term is a call of a function of a kind `pred` accepts.
    pub fn is_call(&self, pred: impl Fn(Kind) -> bool) -> bool {
        self.function().is_some_and(|f| pred(f.kind()))
    }

    /// True when this term or a sub-term is a call of a function of a kind `pred` accepts.
    pub fn contains_call(&self, pred: impl Fn(Kind) -> bool) -> bool {
        let mut yes = false;
        self.walk(&mut |t| {
            if t.is_call(&pred) {
                yes = true;
            }
        });
        yes
    }

    /// True if the term references a field outside any function call but math.
    pub fn has_bare_ref(&self) -> bool {
        match self {
            Term::Ref(_) | Term::Wildcard => true,
            Term::Call { func, args } if func.kind() == Kind::Math => {
                args.iter().any(Term::has_bare_ref)
            }
            Term::Binary { lhs, rhs, .. } => lhs.has_bare_ref() || rhs.has_bare_ref(),
            _ => false,
        }
    }

    /// True if the term references any field (or `*`), in a call or not.
    pub fn refers_to_any(&self) -> bool {
        let mut yes = false;
        self.walk(&mut |t| {
            if matches!(t, Term::Ref(_) | Term::Wildcard) {
                yes = true;
            }
        });
        yes
    }

    /// The name InfluxDB 1.6 gives a column of this term: a reference's or a call's name; for
    /// a binary expression, the names of its references and calls (not those inside a call)
    /// joined by `_`, e.g. `max(v) - min(v)` is `max_min`.
    pub fn column_name(&self) -> String {
        match self {
            Term::Binary { .. } => {
                let mut names = Vec::new();
                self.binary_names(&mut names);
                names.join("_")
            }
            _ => self.first_name().unwrap_or("").to_string(),
        }
    }

    fn binary_names<'t>(&'t self, out: &mut Vec<&'t str>) {
        match self {
            Term::Binary { lhs, rhs, .. } => {
                lhs.binary_names(out);
                rhs.binary_names(out);
            }
            _ => out.extend(self.first_name()),
        }
    }

    /// The first reference or function of this term.
    pub fn first_name(&self) -> Option<&str> {
        match self {
            Term::Ref(n) => Some(n),
            Term::Call { func, .. } => Some(func.name()),
            Term::Undefined { name, .. } => Some(name),
            Term::Binary { lhs, rhs, .. } => lhs.first_name().or_else(|| rhs.first_name()),
            _ => None,
        }
    }
}

/// A term as text: calls by name, a binary expression in parentheses (its tree shown),
/// strings quoted, durations in nanoseconds.
impl fmt::Display for Term {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, args: &[Term]| -> fmt::Result {
            for (i, a) in args.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{a}")?;
            }
            Ok(())
        };
        match self {
            Term::Ref(n) => f.write_str(n),
            Term::Wildcard => f.write_str("*"),
            Term::Int(i) => write!(f, "{i}"),
            Term::Float(x) => write!(f, "{x:?}"),
            Term::Str(s) => write!(f, "'{s}'"),
            Term::Bool(b) => write!(f, "{b}"),
            Term::Duration(d) => write!(f, "{d}ns"),
            Term::Regex(r) => write!(f, "/{r}/"),
            Term::Binary { op, lhs, rhs } => write!(f, "({lhs} {} {rhs})", op.symbol()),
            Term::Call { func, args } => {
                write!(f, "{}(", func.name())?;
                list(f, args)?;
                f.write_str(")")
            }
            Term::Undefined { name, args } => {
                write!(f, "{name}?(")?;
                list(f, args)?;
                f.write_str(")")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Function, Kind};

    #[test]
    fn every_function_is_found_by_its_name_and_no_name_twice() {
        let mut names = std::collections::BTreeSet::new();
        for &f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Some(f));
            assert!(names.insert(f.name()), "{} twice", f.name());
        }
        assert_eq!(Function::from_name("no_such_function"), None);
        // Names are matched as the parser gives them: lower case.
        assert_eq!(Function::from_name("MEAN"), None);
        assert_eq!(Function::Percentile.kind(), Kind::Selector);
        assert!(Kind::Selector.aggregates() && !Kind::Transform.aggregates());
        assert_eq!((Function::Pow.arity(), Function::Abs.arity()), (2, 1));
    }
}

//! What a statement answers: series of rows of [`Val`] cells (re-exported as `exec::Val`,
//! `exec::ResultSeries`). A leaf apart from the executor, so that the user statements, which
//! the executor calls, build their answers without importing the executor back.

use std::collections::BTreeMap;

use crate::model::FieldValue;

/// A result cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Float(f64),
    Int(i64),
    Str(String),
    Bool(bool),
    /// A timestamp (ns), rendered per the request's `epoch`.
    Time(i64),
}

impl Val {
    pub(crate) fn from_field(v: FieldValue) -> Val {
        match v {
            FieldValue::Float(f) => Val::Float(f),
            FieldValue::Int(i) => Val::Int(i),
            FieldValue::Bool(b) => Val::Bool(b),
            FieldValue::Str(s) => Val::Str(s),
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Val::Float(f) => Some(*f),
            Val::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Val::Null)
    }
}

/// One output series.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSeries {
    pub name: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Val>>,
}

//! A group's rows before projection: the (time, series) keys over one flat array of the
//! loaded fields' values, merged from per-field columns, and the projections of a raw query
//! resolved once per group (time, a field's slot, a tag, or an expression).
//! What it does not do: read storage (see [`super::select`]) or aggregate (see
//! [`super::aggregate`]).

use std::collections::HashMap;

use regex::Regex;

use super::eval::{RowCtx, eval};
use super::term::Term;
use super::value::Val;
use crate::model::FieldValue;
use crate::storage::SeriesInfo;

pub(super) struct Group<'a> {
    pub(super) tags: Vec<String>,
    pub(super) series: Vec<&'a SeriesInfo>,
    pub(super) sids: Vec<u32>,
}

/// Where one row's values are in [`Rows::values`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RowKey {
    pub(super) time: i64,
    /// Index of the series in its group.
    pub(super) series: usize,
    /// Offset of the row's first value.
    pub(super) at: usize,
}

/// The rows of a group before projection: one slot per needed field per row, in one flat
/// array (a row is not an allocation of its own), addressed by sortable keys.
pub(super) struct Rows {
    pub(super) width: usize,
    pub(super) keys: Vec<RowKey>,
    pub(super) values: Vec<Option<FieldValue>>,
}

impl Rows {
    pub(super) fn new(width: usize) -> Rows {
        Rows {
            width,
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    pub(super) fn values_of(&self, k: &RowKey) -> &[Option<FieldValue>] {
        &self.values[k.at..k.at + self.width]
    }

    /// Merges per-field columns of one series (number `si` of its group) into rows.
    pub(super) fn append_series(&mut self, cols: &[Option<crate::model::Column>], si: usize) {
        // At least as many rows as the longest column: grow once, not by doublings.
        let longest = cols
            .iter()
            .flatten()
            .map(|c| c.times.len())
            .max()
            .unwrap_or(0);
        self.keys.reserve(longest);
        self.values.reserve(longest * self.width);
        let mut idx = vec![0usize; cols.len()];
        loop {
            let mut next: Option<i64> = None;
            for (c, &i) in cols.iter().zip(&idx) {
                if let Some(c) = c
                    && let Some(&t) = c.times.get(i)
                {
                    next = Some(next.map_or(t, |n: i64| n.min(t)));
                }
            }
            let Some(t) = next else { break };
            self.keys.push(RowKey {
                time: t,
                series: si,
                at: self.values.len(),
            });
            for (c, i) in cols.iter().zip(idx.iter_mut()) {
                match c {
                    Some(c) if c.times.get(*i) == Some(&t) => {
                        self.values.push(Some(c.values.get(*i)));
                        *i += 1;
                    }
                    _ => self.values.push(None),
                }
            }
        }
    }
}

/// A projection of a raw query, resolved once per group rather than per row.
pub(super) enum RowProjection<'e> {
    Time,
    Field(usize),
    Tag(&'e str),
    Term(&'e Term),
}

impl<'e> RowProjection<'e> {
    /// Resolves a bare reference as [`eval`] would: `time`, then a loaded field, then a tag.
    /// `needed_at`: the position of each loaded field.
    pub(super) fn compile(e: &'e Term, needed_at: &HashMap<&str, usize>) -> RowProjection<'e> {
        match e {
            Term::Ref(n) if n == "time" => RowProjection::Time,
            Term::Ref(n) => match needed_at.get(n.as_str()) {
                Some(&i) => RowProjection::Field(i),
                None => RowProjection::Tag(n),
            },
            _ => RowProjection::Term(e),
        }
    }

    pub(super) fn eval(&self, row: &RowCtx<'_>, regexes: &HashMap<String, Regex>) -> Val {
        match self {
            RowProjection::Time => Val::Time(row.time),
            RowProjection::Field(i) => match &row.values[*i] {
                Some(v) => Val::from_field(v.clone()),
                None => Val::Null,
            },
            RowProjection::Tag(n) => match row.series.tag(n) {
                Some(v) => Val::Str(v.to_string()),
                None => Val::Null,
            },
            RowProjection::Term(e) => eval(e, row, regexes),
        }
    }
}

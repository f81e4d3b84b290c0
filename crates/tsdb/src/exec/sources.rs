//! Where a statement reads: its database (named or the request's default, and existing) and
//! the measurements of a shard its sources name (by name or regex), plus `LIMIT`/`OFFSET`
//! over a list. Shared by `SHOW`, the deletions and `SELECT`.
//! What it does not do: resolve retention policies or open shards (see
//! [`crate::storage::Tsdb::shard`]), or run subqueries (see [`super::select`]).

use std::collections::BTreeSet;

use regex::Regex;

use super::error::{ExecResult, QueryError};
use crate::influxql::Source;
use crate::storage::{ShardState, Tsdb};

pub(super) fn need_db<'a>(on: Option<&'a str>, default_db: Option<&'a str>) -> ExecResult<&'a str> {
    match on.or(default_db) {
        Some(d) if !d.is_empty() => Ok(d),
        _ => Err(QueryError::DatabaseNameRequired),
    }
}

pub(super) fn check_db(db: &Tsdb, name: &str) -> ExecResult<()> {
    if db.database(name).is_none() {
        return Err(QueryError::DatabaseNotFound {
            name: name.to_string(),
        });
    }
    Ok(())
}

pub(super) fn limit_offset<T>(v: Vec<T>, limit: usize, offset: usize) -> Vec<T> {
    let it = v.into_iter().skip(offset);
    if limit > 0 {
        it.take(limit).collect()
    } else {
        it.collect()
    }
}

pub(super) fn compile(r: &str) -> ExecResult<Regex> {
    Regex::new(r).map_err(QueryError::Regex)
}

/// Measurements of a shard named by `sources` (all when empty).
pub(super) fn measurements_for(st: &ShardState, sources: &[Source]) -> ExecResult<Vec<String>> {
    if sources.is_empty() {
        return Ok(st.index.measurements.keys().cloned().collect());
    }
    let mut out = BTreeSet::new();
    for s in sources {
        match s {
            Source::Measurement { name, .. } => {
                if st.index.measurements.contains_key(name) {
                    out.insert(name.clone());
                }
            }
            Source::Regex { regex, .. } => {
                let re = compile(regex)?;
                for m in st.index.measurements.keys() {
                    if re.is_match(m) {
                        out.insert(m.clone());
                    }
                }
            }
            Source::Subquery(_) => {
                return Err(QueryError::SubqueryOutsideSelect);
            }
        }
    }
    Ok(out.into_iter().collect())
}

//! `CREATE CONTINUOUS QUERY` and `DROP CONTINUOUS QUERY`, as influxd 1.6 executes them.
//!
//! Creation normalizes the query first, as influxd does: every measurement of its `FROM` and
//! its `INTO` target gets a database (the request's `db`, else the query's `ON` database) and
//! a retention policy (that database's default); a database that does not exist is refused
//! (`database not found: x`), and so is a policy (`retention policy not found: db.rp`). The
//! statement is then stored as influxd prints it (`SHOW CONTINUOUS QUERIES` answers that
//! text): creating it again with the same text changes nothing, with another text is refused
//! (`continuous query already exists`). Dropping one is idempotent.
//! What it does not do: run queries (the crate's `cq` module) or list them (see [`super::show`]).

use super::error::{ExecResult, QueryError};
use super::value::ResultSeries;
use crate::influxql::{ContinuousQuery, Select, Source, Statement};
use crate::storage::Tsdb;

/// Runs `CREATE`/`DROP CONTINUOUS QUERY` (an error for any other statement).
pub(super) fn execute(
    db: &Tsdb,
    stmt: &Statement,
    default_db: Option<&str>,
) -> ExecResult<Vec<ResultSeries>> {
    match stmt {
        Statement::CreateContinuousQuery(cq) => create(db, cq, default_db)?,
        Statement::DropContinuousQuery { name, database } => db
            .drop_continuous_query(database, name)
            .map_err(QueryError::from_storage)?,
        other => {
            return Err(QueryError::Misrouted {
                kind: "continuous query",
                statement: other.to_string(),
            });
        }
    }
    Ok(Vec::new())
}

fn create(db: &Tsdb, cq: &ContinuousQuery, default_db: Option<&str>) -> ExecResult<()> {
    let default = default_db.filter(|d| !d.is_empty()).unwrap_or(&cq.database);
    let mut normal = cq.clone();
    normalize(db, &mut normal.select, default)?;
    let text = Statement::CreateContinuousQuery(Box::new(normal)).to_string();
    db.create_continuous_query(&cq.database, &cq.name, &text)
        .map_err(QueryError::from_storage)
}

/// Gives every source and the target of `sel` a database and a retention policy that exist.
fn normalize(db: &Tsdb, sel: &mut Select, default: &str) -> ExecResult<()> {
    for src in &mut sel.sources {
        match src {
            Source::Subquery(inner) => normalize(db, inner, default)?,
            Source::Measurement {
                database,
                retention_policy,
                ..
            }
            | Source::Regex {
                database,
                retention_policy,
                ..
            } => qualify(db, database, retention_policy, default)?,
        }
    }
    if let Some(t) = &mut sel.into {
        qualify(db, &mut t.database, &mut t.retention_policy, default)?;
    }
    Ok(())
}

fn qualify(
    db: &Tsdb,
    database: &mut Option<String>,
    rp: &mut Option<String>,
    default: &str,
) -> ExecResult<()> {
    let name = database.get_or_insert_with(|| default.to_string()).clone();
    let Some(meta) = db.database(&name) else {
        return Err(QueryError::DatabaseNotFound { name });
    };
    let policy = rp.get_or_insert_with(|| meta.default_rp.clone()).clone();
    if !meta.rps.contains_key(&policy) {
        return Err(QueryError::from_storage(
            crate::Error::RetentionPolicyNotFound(format!("{name}.{policy}")),
        ));
    }
    Ok(())
}

//! The statements that change the catalog: `CREATE`/`DROP DATABASE` and `CREATE`/`ALTER`/`DROP
//! RETENTION POLICY`. Each is one call to [`Tsdb`], which makes the change durable before it
//! answers; this module only checks the statement's values as influxd 1.6 does (a retention
//! policy's duration) and maps storage errors to InfluxQL's texts.
//! What it does not do: deleting data (see [`super::delete`]) or listing the catalog (see
//! [`super::show`]).

use super::error::{ExecResult, QueryError};
use super::value::ResultSeries;
use crate::influxql::Statement;
use crate::storage::{RpMeta, Tsdb, shard_group_for};

/// Runs a catalog statement (an error for any other statement).
pub(super) async fn execute(db: &Tsdb, stmt: &Statement) -> ExecResult<Vec<ResultSeries>> {
    let r = match stmt {
        Statement::CreateDatabase { name } => db.create_database(name).map_err(QueryError::from),
        Statement::DropDatabase { name } => db.drop_database(name).await.map_err(QueryError::from),
        Statement::DropRetentionPolicy { name, database } => db
            .drop_retention_policy(database, name)
            .await
            .map_err(QueryError::from_storage),
        Statement::AlterRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => alter_retention_policy(
            db,
            database,
            name,
            *duration,
            *replication,
            *shard_duration,
            *default,
        ),
        Statement::CreateRetentionPolicy {
            name,
            database,
            duration,
            replication,
            shard_duration,
            default,
        } => create_retention_policy(
            db,
            database,
            name,
            *duration,
            *replication,
            *shard_duration,
            *default,
        ),
        other => {
            return Err(QueryError::Misrouted {
                kind: "catalog",
                statement: other.to_string(),
            });
        }
    };
    r.map(|()| Vec::new())
}

fn alter_retention_policy(
    db: &Tsdb,
    database: &str,
    name: &str,
    duration: Option<i64>,
    replication: Option<i64>,
    shard_duration: Option<i64>,
    default: bool,
) -> ExecResult<()> {
    if let Some(d) = duration {
        check_rp_duration(d)?;
    }
    db.alter_retention_policy(
        database,
        name,
        |rp| {
            if let Some(d) = duration {
                rp.duration_ns = d;
            }
            if let Some(r) = replication {
                rp.replication = r.clamp(1, u32::MAX as i64) as u32;
            }
            if let Some(sd) = shard_duration {
                rp.shard_group_ns = sd;
            }
        },
        default,
    )
    .map_err(QueryError::from_storage)
}

fn create_retention_policy(
    db: &Tsdb,
    database: &str,
    name: &str,
    duration: i64,
    replication: i64,
    shard_duration: Option<i64>,
    default: bool,
) -> ExecResult<()> {
    check_rp_duration(duration)?;
    let rp = RpMeta {
        duration_ns: duration,
        shard_group_ns: shard_duration.unwrap_or_else(|| shard_group_for(duration)),
        replication: replication.clamp(1, u32::MAX as i64) as u32,
    };
    db.create_retention_policy(database, name, rp, default)
        .map_err(QueryError::from_storage)
}

/// A retention policy keeps data forever (0) or at least an hour, as InfluxDB 1.6 requires.
pub(super) fn check_rp_duration(duration_ns: i64) -> ExecResult<()> {
    if duration_ns != 0 && duration_ns < 3_600_000_000_000 {
        return Err(QueryError::RetentionTooShort);
    }
    Ok(())
}

//! What each statement needs from a user who is not an admin, as InfluxDB 1.6 decides it
//! (`RequiredPrivileges` of each statement): reads need `READ` on their database, deletions
//! and `DROP RETENTION POLICY` need `WRITE`, `SHOW DATABASES` needs nothing (its answer is
//! filtered instead), and everything that changes the schema or the users needs an admin.
//! A database left empty means "the request's `db` parameter". [`Statement::is_read_only`]
//! says which statements a `GET` may run.

use super::ast::{Privilege, Select, Source, Statement};

/// One requirement of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Required {
    /// Only an admin may run it.
    Admin,
    /// The user needs `privilege` on `database` (empty: the request's default database).
    On {
        privilege: Privilege,
        database: String,
    },
}

impl Required {
    fn on(privilege: Privilege, database: Option<&str>) -> Required {
        Required::On {
            privilege,
            database: database.unwrap_or("").to_string(),
        }
    }
}

fn select_requires(s: &Select, out: &mut Vec<Required>) {
    for src in &s.sources {
        match src {
            Source::Measurement { database, .. } | Source::Regex { database, .. } => {
                out.push(Required::on(Privilege::Read, database.as_deref()))
            }
            Source::Subquery(inner) => select_requires(inner, out),
        }
    }
    // influxd: an `INTO` needs WRITE on the target's database.
    if let Some(t) = &s.into {
        out.push(Required::on(Privilege::Write, t.database.as_deref()));
    }
}

impl Statement {
    /// True for the statements that only read (`SELECT`, `SHOW ...`): the only ones a `GET
    /// /query` may run (see `crate::http`).
    pub fn is_read_only(&self) -> bool {
        match self {
            Statement::Select(s) => s.into.is_none(),
            Statement::ShowDatabases
            | Statement::ShowMeasurements { .. }
            | Statement::ShowSeries { .. }
            | Statement::ShowTagKeys { .. }
            | Statement::ShowTagValues { .. }
            | Statement::ShowFieldKeys { .. }
            | Statement::ShowRetentionPolicies { .. }
            | Statement::ShowSeriesCardinality { .. }
            | Statement::ShowMeasurementCardinality { .. }
            | Statement::ShowUsers
            | Statement::ShowGrants { .. }
            | Statement::ShowContinuousQueries => true,
            Statement::CreateUser { .. }
            | Statement::DropUser { .. }
            | Statement::SetPassword { .. }
            | Statement::Grant { .. }
            | Statement::GrantAdmin { .. }
            | Statement::Revoke { .. }
            | Statement::RevokeAdmin { .. }
            | Statement::CreateDatabase { .. }
            | Statement::DropDatabase { .. }
            | Statement::DropSeries { .. }
            | Statement::Delete { .. }
            | Statement::DropMeasurement { .. }
            | Statement::DropRetentionPolicy { .. }
            | Statement::AlterRetentionPolicy { .. }
            | Statement::CreateRetentionPolicy { .. }
            | Statement::CreateContinuousQuery(_)
            | Statement::DropContinuousQuery { .. } => false,
        }
    }

    /// The requirements, in InfluxDB's order (the first unmet one is reported).
    pub fn required(&self) -> Vec<Required> {
        match self {
            Statement::Select(s) => {
                let mut out = Vec::new();
                select_requires(s, &mut out);
                out
            }
            Statement::ShowDatabases => vec![Required::on(Privilege::None, None)],
            Statement::ShowMeasurements { on, .. }
            | Statement::ShowSeries { on, .. }
            | Statement::ShowTagKeys { on, .. }
            | Statement::ShowTagValues { on, .. }
            | Statement::ShowFieldKeys { on, .. }
            | Statement::ShowRetentionPolicies { on }
            | Statement::ShowSeriesCardinality { on }
            | Statement::ShowMeasurementCardinality { on } => {
                vec![Required::on(Privilege::Read, on.as_deref())]
            }
            Statement::ShowContinuousQueries => vec![Required::on(Privilege::Read, None)],
            Statement::DropSeries { .. } | Statement::Delete { .. } => {
                vec![Required::on(Privilege::Write, None)]
            }
            Statement::DropRetentionPolicy { database, .. }
            | Statement::DropContinuousQuery { database, .. } => {
                vec![Required::on(Privilege::Write, Some(database))]
            }
            // influxd: WRITE on the query's database, or READ on it and WRITE on the target's
            // when the target names another.
            Statement::CreateContinuousQuery(cq) => {
                match cq.select.into.as_ref().and_then(|t| t.database.as_deref()) {
                    Some(target) => vec![
                        Required::on(Privilege::Read, Some(&cq.database)),
                        Required::on(Privilege::Write, Some(target)),
                    ],
                    None => vec![Required::on(Privilege::Write, Some(&cq.database))],
                }
            }
            Statement::ShowUsers
            | Statement::ShowGrants { .. }
            | Statement::CreateDatabase { .. }
            | Statement::DropDatabase { .. }
            | Statement::DropMeasurement { .. }
            | Statement::AlterRetentionPolicy { .. }
            | Statement::CreateRetentionPolicy { .. }
            | Statement::CreateUser { .. }
            | Statement::DropUser { .. }
            | Statement::SetPassword { .. }
            | Statement::Grant { .. }
            | Statement::GrantAdmin { .. }
            | Statement::Revoke { .. }
            | Statement::RevokeAdmin { .. } => vec![Required::Admin],
        }
    }
}

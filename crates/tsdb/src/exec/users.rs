//! The user statements (`SHOW USERS`, `SHOW GRANTS`, `CREATE USER`, `GRANT`, ...): each a call
//! to the catalog ([`crate::users`]), its answer as series or its failure as a
//! [`QueryError::User`].

use super::error::QueryError;
use super::value::{ResultSeries, Val};
use crate::influxql::{Privilege, Statement};
use crate::storage::Tsdb;
use crate::users::UserError;

fn user_series(columns: [&str; 2], values: Vec<Vec<Val>>) -> Vec<ResultSeries> {
    vec![ResultSeries {
        name: None,
        tags: None,
        columns: columns.iter().map(|c| c.to_string()).collect(),
        values,
    }]
}

/// Runs a user statement (`SHOW USERS`, `CREATE USER`, `GRANT`, ...).
pub(crate) async fn execute(db: &Tsdb, stmt: &Statement) -> Result<Vec<ResultSeries>, QueryError> {
    let done = |r: Result<(), UserError>| r.map(|()| Vec::new());
    let r = match stmt {
        Statement::ShowUsers => Ok(user_series(
            ["user", "admin"],
            db.users()
                .into_iter()
                .map(|(n, a)| vec![Val::Str(n), Val::Bool(a)])
                .collect(),
        )),
        Statement::ShowGrants { user } => match db.user(user) {
            // influxd lists them in map order; torc by database name.
            Some(u) => Ok(user_series(
                ["database", "privilege"],
                u.privileges
                    .iter()
                    .map(|(d, p)| vec![Val::Str(d.clone()), Val::Str(p.as_str().into())])
                    .collect(),
            )),
            None => Err(UserError::NotFound),
        },
        Statement::CreateUser {
            name,
            password,
            admin,
        } => done(db.create_user(name, &password.0, *admin).await),
        Statement::DropUser { name } => done(db.drop_user(name)),
        Statement::SetPassword { name, password } => done(db.set_password(name, &password.0).await),
        Statement::Grant {
            privilege,
            database,
            user,
        } => done(db.set_privilege(user, database, *privilege)),
        Statement::Revoke {
            privilege,
            database,
            user,
        } => {
            // Revoking ALL needs no look at what the user has; anything else clears bits.
            let left = match (privilege, db.user(user)) {
                (Privilege::All, _) => Ok(Privilege::None),
                (p, Some(u)) => Ok(u
                    .privileges
                    .get(database.as_str())
                    .copied()
                    .unwrap_or(Privilege::None)
                    .without(*p)),
                (_, None) => Err(UserError::NotFound),
            };
            done(left.and_then(|p| db.set_privilege(user, database, p)))
        }
        Statement::GrantAdmin { user } => done(db.set_admin(user, true)),
        Statement::RevokeAdmin { user } => done(db.set_admin(user, false)),
        other => return Err(QueryError::NotUserStatement(other.to_string())),
    };
    r.map_err(|e| {
        if let UserError::Storage(e) = &e {
            tracing::error!(error = %e, "cannot store a user change");
        }
        QueryError::User(e)
    })
}

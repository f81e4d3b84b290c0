//! InfluxDB users: the catalog (names, bcrypt hashes, the admin flag, privileges per database)
//! and the statements that change and show it (`CREATE USER`, `GRANT`, `SHOW GRANTS`, ...).
//!
//! What it is not: authentication or the per-request checks (see [`crate::auth`]); users exist
//! and can be managed whether or not authentication is enabled, as in InfluxDB.
//!
//! Invariants:
//! * users live in `meta.json` (format version 2) and change only through
//!   `Tsdb::update_meta`: a change is written to a temporary file, fsynced, renamed over
//!   `meta.json` and the directory fsynced before it is visible or acknowledged, so an
//!   acknowledged `CREATE USER`/`GRANT`/`SET PASSWORD` survives `kill -9`; a change whose write
//!   fails is not applied;
//! * passwords are stored only as bcrypt hashes (cost 10, influxd's); a hash is computed off
//!   the async workers and before the catalog lock is taken;
//! * `SET PASSWORD` and `DROP USER` drop the user's cached credential, so the old password
//!   stops working at once;
//! * users keep their creation order; `DROP DATABASE` drops every privilege on it; messages
//!   are influxd 1.6's (`user not found`, `user already exists`, `username required`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::exec::{QueryError, ResultSeries, Val};
use crate::influxql::{Privilege, Statement};
use crate::storage::Tsdb;

/// A user as stored in `meta.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UserMeta {
    pub name: String,
    /// bcrypt hash of the password.
    pub hash: String,
    pub admin: bool,
    #[serde(default)]
    pub privileges: BTreeMap<String, Privilege>,
}

/// A user as a request sees it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub admin: bool,
    pub privileges: BTreeMap<String, Privilege>,
}

impl User {
    /// InfluxDB's `AuthorizeDatabase`: admins may do anything, `NO PRIVILEGES` is always met,
    /// otherwise the user's privilege on `db` must be `privilege` or `ALL`.
    pub fn may(&self, privilege: Privilege, db: &str) -> bool {
        if self.admin || privilege == Privilege::None {
            return true;
        }
        self.privileges
            .get(db)
            .is_some_and(|p| *p == privilege || *p == Privilege::All)
    }
}

impl From<&UserMeta> for User {
    fn from(u: &UserMeta) -> User {
        User {
            name: u.name.clone(),
            admin: u.admin,
            privileges: u.privileges.clone(),
        }
    }
}

/// Why a user statement failed; the texts are influxd 1.6's.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UserError {
    #[error("user not found")]
    NotFound,
    #[error("user already exists")]
    Exists,
    #[error("username required")]
    NameRequired,
    #[error("database not found: {0}")]
    DatabaseNotFound(String),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error(transparent)]
    Storage(#[from] Error),
}

fn find<'a>(users: &'a mut [UserMeta], name: &str) -> Result<&'a mut UserMeta, UserError> {
    users
        .iter_mut()
        .find(|u| u.name == name)
        .ok_or(UserError::NotFound)
}

impl Tsdb {
    /// Every user (name, admin), in creation order.
    pub fn users(&self) -> Vec<(String, bool)> {
        self.meta()
            .users
            .iter()
            .map(|u| (u.name.clone(), u.admin))
            .collect()
    }

    /// The user named `name`.
    pub fn user(&self, name: &str) -> Option<User> {
        self.meta()
            .users
            .iter()
            .find(|u| u.name == name)
            .map(User::from)
    }

    pub(crate) fn user_hash(&self, name: &str) -> Option<(User, String)> {
        self.meta()
            .users
            .iter()
            .find(|u| u.name == name)
            .map(|u| (User::from(u), u.hash.clone()))
    }

    pub fn user_count(&self) -> usize {
        self.meta().users.len()
    }

    /// True when some user is an admin (then requests must authenticate, with auth enabled).
    pub fn admin_exists(&self) -> bool {
        self.meta().users.iter().any(|u| u.admin)
    }

    /// Applies `change` to the users (durably, see [`Tsdb::update_meta`]); `forget` names a user
    /// whose cached credential must go once the change is durable.
    fn change_users(
        &self,
        forget: Option<&str>,
        change: impl FnOnce(&mut crate::storage::MetaFile) -> Result<(), UserError>,
    ) -> Result<(), UserError> {
        self.check_poison()?;
        let mut failed = None;
        self.update_meta(|next| match change(next) {
            Ok(()) => Ok(true),
            Err(e) => {
                failed = Some(e);
                Ok(false)
            }
        })?;
        if let Some(name) = forget {
            self.authn.forget(name);
        }
        failed.map_or(Ok(()), Err)
    }

    /// `CREATE USER`. Creating a user that exists with the same password and admin flag
    /// succeeds (as in influxd); any other existing user is `user already exists`.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<(), UserError> {
        if name.is_empty() {
            return Err(UserError::NameRequired);
        }
        if let Some((user, hash)) = self.user_hash(name) {
            let same = self.authn.check_hash(password, &hash).await?;
            return if same && user.admin == admin {
                Ok(())
            } else {
                Err(UserError::Exists)
            };
        }
        let hash = self.authn.hash(password).await?;
        self.change_users(None, |m| {
            if m.users.iter().any(|u| u.name == name) {
                return Err(UserError::Exists);
            }
            m.users.push(UserMeta {
                name: name.to_string(),
                hash,
                admin,
                privileges: BTreeMap::new(),
            });
            Ok(())
        })
    }

    /// `SET PASSWORD FOR name = '...'`.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), UserError> {
        if self.user(name).is_none() {
            return Err(UserError::NotFound);
        }
        let hash = self.authn.hash(password).await?;
        self.change_users(Some(name), |m| {
            find(&mut m.users, name)?.hash = hash;
            Ok(())
        })
    }

    /// `DROP USER`.
    pub fn drop_user(&self, name: &str) -> Result<(), UserError> {
        self.change_users(Some(name), |m| {
            let before = m.users.len();
            m.users.retain(|u| u.name != name);
            if m.users.len() == before {
                return Err(UserError::NotFound);
            }
            Ok(())
        })
    }

    /// `GRANT p ON db TO user` (and `REVOKE`, with the privilege left): the database must
    /// exist. `NO PRIVILEGES` is kept as an entry, as influxd keeps it.
    pub fn set_privilege(&self, user: &str, db: &str, p: Privilege) -> Result<(), UserError> {
        self.change_users(None, |m| {
            let known = m.databases.contains_key(db);
            let u = find(&mut m.users, user)?;
            if !known {
                return Err(UserError::DatabaseNotFound(db.to_string()));
            }
            u.privileges.insert(db.to_string(), p);
            Ok(())
        })
    }

    /// `GRANT ALL PRIVILEGES TO user` / `REVOKE ALL PRIVILEGES FROM user`.
    pub fn set_admin(&self, user: &str, admin: bool) -> Result<(), UserError> {
        self.change_users(None, |m| {
            find(&mut m.users, user)?.admin = admin;
            Ok(())
        })
    }

    /// torc's bootstrap (`torc tsdb --admin-user`): when there are no users at all, creates
    /// `name` as an admin. Returns whether it did.
    pub async fn ensure_admin(&self, name: &str, password: &str) -> Result<bool, UserError> {
        if self.user_count() > 0 {
            return Ok(false);
        }
        self.create_user(name, password, true).await?;
        Ok(true)
    }
}

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

//! InfluxDB users: the catalog (names, bcrypt hashes, the admin flag, privileges per database)
//! and the changes behind the statements that change and show it (`CREATE USER`, `GRANT`,
//! `SHOW GRANTS`, ...; the statements themselves run in `exec::users`). The stored form,
//! [`UserMeta`], is part of `meta.json` and lives with it in [`crate::storage`].
//!
//! What it is not: authentication or the per-request checks (see [`crate::auth`]), nor the
//! bcrypt work ([`crate::password`]); users exist and can be managed whether or not
//! authentication is enabled, as in InfluxDB.
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

use crate::Error;
use crate::influxql::Privilege;
use crate::password::AuthError;
use crate::storage::{MetaFile, Tsdb, UserMeta};

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
    Auth(#[from] AuthError),
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
        change: impl FnOnce(&mut MetaFile) -> Result<(), UserError>,
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

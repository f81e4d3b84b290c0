//! etcd v3 authentication and authorization, as etcd 3.4 does it: users
//! (bcrypt password hashes), roles (key-range permissions), the `root` user
//! and role, and the rules deciding who may do what (etcd's
//! `auth/store.go`, `etcdserver/apply_auth.go` and the checks in
//! `etcdserver/v3_server.go` and `api/v3rpc`, release-3.4).
//!
//! - [`AuthState`]: the durable state (enabled flag, users, roles, the
//!   auth revision) and its rules. Pure: no I/O, no clock, no hashing. Every
//!   change returns the [`AuthMutation`]s that make it durable; the store
//!   writes them through the same write-ahead log as keys (see
//!   `store`), so an acknowledged auth change survives a crash.
//! - [`perm`]: key-range permission checks (pure).
//! - [`token`]: etcd's "simple" tokens, in memory only (as etcd's).
//! - [`password`]: bcrypt hashing off the async runtime, bounded.
//!
//! Rules (auth enabled; with auth disabled everything is allowed):
//! - A caller without a token is anonymous: every check fails with
//!   `user name is empty`; but under `--client-cert-auth` such a request is
//!   made by the user its client certificate's common name names. A token
//!   that is unknown or expired fails the call with `invalid auth token`,
//!   which etcd clients answer by authenticating again.
//! - The `root` role may do everything. `root` cannot be deleted, nor lose
//!   the `root` role, nor can the `root` role be deleted, while auth is
//!   enabled; auth can be enabled only once a `root` user has the `root`
//!   role.
//! - Admin calls (auth enable/disable, user and role changes, user and role
//!   lists, compaction, member list, maintenance) need the root role.
//!   UserGet is also allowed on oneself, RoleGet on one's own roles.
//! - Range needs read on its range; Put write on its key (and read with
//!   `prev_kv`, and write on every key of the lease it attaches, unless
//!   root); DeleteRange write on its range (and read with `prev_kv`); a Txn
//!   read on every compare's range and the same as above for every request
//!   in both branches, nested txns included; a watch read on its range when
//!   created.
//! - Leases: granting needs any user; revoking and keeping alive need root
//!   or write on every key attached; time-to-live with keys and listing
//!   leases need root or read on every key concerned.
//!
//! The auth revision counts changes (etcd's `authRevision`): it starts at 1
//! and every change but enabling auth (and a no-op grant) adds one. etcd
//! 3.4 sends it in no response header; torc keeps it durable so a restart
//! continues it.

pub mod password;
pub mod perm;
pub mod token;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::EtcdError;
use crate::proto::authpb::{Permission, Role, User, UserAddOptions};
use crate::proto::etcdserverpb as pb;
pub use perm::{Access, UserPermissions};

/// The user that may do everything, and that must exist to enable auth.
pub const ROOT_USER: &str = "root";
/// The role that may do everything.
pub const ROOT_ROLE: &str = "root";

/// A durable change to the auth state (one row of storage, see
/// [`crate::storage`]).
#[derive(Clone, Debug, PartialEq)]
pub enum AuthMutation {
    PutUser(User),
    DeleteUser(String),
    PutRole(Role),
    DeleteRole(String),
    Enabled(bool),
    Revision(u64),
}

/// Who is calling, from the request's token (or, under
/// `--client-cert-auth`, its client certificate: see [`crate::tls`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No token (or auth is disabled), and no certificate naming a user.
    Anonymous,
    /// A token's user, or the common name of a client certificate, which
    /// may be any text, the empty one included.
    User(Arc<str>),
}

impl Caller {
    fn name(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => None,
            Caller::User(name) => Some(name),
        }
    }
}

/// The keys attached to a lease (the KV core answers it).
pub trait LeaseKeys {
    /// `None` when the lease does not exist.
    fn lease_keys(&self, id: i64) -> Option<Vec<Bytes>>;
}

/// The auth state. Cheap to share ([`Arc`]), cloned on change.
#[derive(Clone, Debug)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
    /// Each user's merged permissions (etcd's range permission cache),
    /// rebuilt on every change.
    perms: HashMap<String, UserPermissions>,
}

impl Default for AuthState {
    /// A new store's: disabled, no users or roles, revision 1.
    fn default() -> Self {
        AuthState::restore(false, 1, Vec::new(), Vec::new())
    }
}

fn name_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn has_role(user: &User, role: &str) -> bool {
    user.roles
        .binary_search_by(|r| r.as_str().cmp(role))
        .is_ok()
}

impl AuthState {
    /// The state as loaded from storage.
    pub fn restore(enabled: bool, revision: u64, users: Vec<User>, roles: Vec<Role>) -> AuthState {
        let mut state = AuthState {
            enabled,
            revision,
            users: users.into_iter().map(|u| (name_of(&u.name), u)).collect(),
            roles: roles.into_iter().map(|r| (name_of(&r.name), r)).collect(),
            perms: HashMap::new(),
        };
        state.refresh_perms();
        state
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    fn refresh_perms(&mut self) {
        let roles = &self.roles;
        self.perms = self
            .users
            .iter()
            .map(|(name, user)| {
                let perms = user
                    .roles
                    .iter()
                    .filter_map(|r| roles.get(r))
                    .flat_map(|r| r.key_permission.iter());
                (name.clone(), UserPermissions::merge(perms))
            })
            .collect();
    }

    /// Counts one change made of `out` (etcd's `commitRevision`) and
    /// returns its mutations, the new revision last.
    fn changed(&mut self, mut out: Vec<AuthMutation>) -> Vec<AuthMutation> {
        self.revision += 1;
        out.push(AuthMutation::Revision(self.revision));
        self.refresh_perms();
        out
    }

    // ---- checks ----

    /// etcd's `IsAdminPermitted`: the caller has the root role. The empty
    /// name (a client certificate without a common name) is no one.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let name = caller
            .name()
            .filter(|n| !n.is_empty())
            .ok_or(EtcdError::UserEmpty)?;
        let user = self.users.get(name).ok_or(EtcdError::UserNotFound)?;
        if has_role(user, ROOT_ROLE) {
            Ok(())
        } else {
            Err(EtcdError::PermissionDenied)
        }
    }

    /// etcd's `requireAuthInfo`: the caller presented a valid token.
    pub fn require_user(&self, caller: &Caller) -> Result<(), EtcdError> {
        if self.enabled && caller.name().is_none() {
            return Err(EtcdError::UserEmpty);
        }
        Ok(())
    }

    /// etcd's `isOpPermitted`: `access` to one key (`range_end` empty) or a
    /// range.
    pub fn check(
        &self,
        caller: &Caller,
        access: Access,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), EtcdError> {
        if !self.enabled {
            return Ok(());
        }
        let name = caller.name().ok_or(EtcdError::UserEmpty)?;
        let user = self.users.get(name).ok_or(EtcdError::PermissionDenied)?;
        if has_role(user, ROOT_ROLE) {
            return Ok(());
        }
        match self.perms.get(name) {
            Some(p) if p.allows(access, key, range_end) => Ok(()),
            _ => Err(EtcdError::PermissionDenied),
        }
    }

    /// Root, or `access` to every key attached to lease `id` (a lease that
    /// does not exist has none).
    pub fn check_lease(
        &self,
        caller: &Caller,
        access: Access,
        id: i64,
        leases: &dyn LeaseKeys,
    ) -> Result<(), EtcdError> {
        if self.check_admin(caller).is_ok() {
            return Ok(());
        }
        for key in leases.lease_keys(id).unwrap_or_default() {
            self.check(caller, access, &key, b"")?;
        }
        Ok(())
    }

    pub fn check_put(
        &self,
        caller: &Caller,
        req: &pb::PutRequest,
        leases: &dyn LeaseKeys,
    ) -> Result<(), EtcdError> {
        self.check(caller, Access::Write, &req.key, b"")?;
        // A lease whose keys the caller could not write is one it could not
        // revoke: attaching another key to it is refused too.
        self.check_lease(caller, Access::Write, req.lease, leases)?;
        if req.prev_kv {
            self.check(caller, Access::Read, &req.key, b"")?;
        }
        Ok(())
    }

    pub fn check_delete(
        &self,
        caller: &Caller,
        req: &pb::DeleteRangeRequest,
    ) -> Result<(), EtcdError> {
        if req.prev_kv {
            self.check(caller, Access::Read, &req.key, &req.range_end)?;
        }
        self.check(caller, Access::Write, &req.key, &req.range_end)
    }

    /// Every compare and every request of both branches, nested txns
    /// included (etcd 3.4.42 on; earlier 3.4 skipped nested txns and the
    /// lease and `prev_kv` rules of puts inside a txn).
    pub fn check_txn(
        &self,
        caller: &Caller,
        req: &pb::TxnRequest,
        leases: &dyn LeaseKeys,
    ) -> Result<(), EtcdError> {
        use pb::request_op::Request;
        for c in &req.compare {
            self.check(caller, Access::Read, &c.key, &c.range_end)?;
        }
        for op in req.success.iter().chain(&req.failure) {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    self.check(caller, Access::Read, &r.key, &r.range_end)?
                }
                Some(Request::RequestPut(p)) => self.check_put(caller, p, leases)?,
                Some(Request::RequestDeleteRange(d)) => self.check_delete(caller, d)?,
                Some(Request::RequestTxn(t)) => self.check_txn(caller, t, leases)?,
                None => {}
            }
        }
        Ok(())
    }

    // ---- reads ----

    /// UserGet: root, or the caller asking about itself.
    pub fn user_get(&self, caller: &Caller, name: &str) -> Result<Vec<String>, EtcdError> {
        if let Err(e) = self.check_admin(caller)
            && caller.name() != Some(name)
        {
            return Err(e);
        }
        let user = self.users.get(name).ok_or(EtcdError::UserNotFound)?;
        Ok(user.roles.clone())
    }

    /// RoleGet: root, or a caller that has the role.
    pub fn role_get(&self, caller: &Caller, role: &str) -> Result<Vec<Permission>, EtcdError> {
        if let Err(e) = self.check_admin(caller) {
            let holds = caller
                .name()
                .and_then(|n| self.users.get(n))
                .is_some_and(|u| u.roles.iter().any(|r| r == role));
            if !holds {
                return Err(e);
            }
        }
        let role = self.roles.get(role).ok_or(EtcdError::RoleNotFound)?;
        Ok(role.key_permission.clone())
    }

    pub fn user_list(&self, caller: &Caller) -> Result<Vec<String>, EtcdError> {
        self.check_admin(caller)?;
        Ok(self.users.keys().cloned().collect())
    }

    pub fn role_list(&self, caller: &Caller) -> Result<Vec<String>, EtcdError> {
        self.check_admin(caller)?;
        Ok(self.roles.keys().cloned().collect())
    }

    /// The password hash to check an Authenticate against.
    pub fn password_hash(&self, name: &str) -> Result<&[u8], EtcdError> {
        if !self.enabled {
            return Err(EtcdError::AuthNotEnabled);
        }
        let user = self.users.get(name).ok_or(EtcdError::AuthFailed)?;
        if user.options.as_ref().is_some_and(|o| o.no_password) {
            return Err(EtcdError::NoPasswordUser);
        }
        Ok(&user.password)
    }

    // ---- changes (each checks the caller first, as etcd's auth applier) ----

    pub fn enable(&mut self, caller: &Caller) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if self.enabled {
            return Ok(Vec::new());
        }
        let root = self
            .users
            .get(ROOT_USER)
            .ok_or(EtcdError::RootUserNotExist)?;
        if !has_role(root, ROOT_ROLE) {
            return Err(EtcdError::RootRoleNotExist);
        }
        // etcd does not count enabling as a change of the auth revision.
        self.enabled = true;
        Ok(vec![AuthMutation::Enabled(true)])
    }

    pub fn disable(&mut self, caller: &Caller) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if !self.enabled {
            return Ok(Vec::new());
        }
        self.enabled = false;
        let change = vec![AuthMutation::Enabled(false)];
        Ok(self.changed(change))
    }

    /// UserAdd; `hash` is the bcrypt hash of its password (`None` for a
    /// user without one).
    pub fn user_add(
        &mut self,
        caller: &Caller,
        name: &str,
        hash: Option<String>,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        self.check_user_add(name)?;
        let user = User {
            name: Bytes::copy_from_slice(name.as_bytes()),
            password: hash.clone().map(Bytes::from).unwrap_or_default(),
            roles: Vec::new(),
            options: Some(UserAddOptions {
                no_password: hash.is_none(),
            }),
        };
        self.users.insert(name.to_string(), user.clone());
        let change = vec![AuthMutation::PutUser(user)];
        Ok(self.changed(change))
    }

    /// UserAdd's checks of the name (also made before hashing a password).
    pub fn check_user_add(&self, name: &str) -> Result<(), EtcdError> {
        if name.is_empty() {
            return Err(EtcdError::UserEmpty);
        }
        if self.users.contains_key(name) {
            return Err(EtcdError::UserAlreadyExist);
        }
        Ok(())
    }

    pub fn user_delete(
        &mut self,
        caller: &Caller,
        name: &str,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if self.enabled && name == ROOT_USER {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.users.remove(name).ok_or(EtcdError::UserNotFound)?;
        let change = vec![AuthMutation::DeleteUser(name.to_string())];
        Ok(self.changed(change))
    }

    pub fn user_change_password(
        &mut self,
        caller: &Caller,
        name: &str,
        hash: String,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        user.password = Bytes::from(hash);
        let change = vec![AuthMutation::PutUser(user.clone())];
        Ok(self.changed(change))
    }

    pub fn user_grant_role(
        &mut self,
        caller: &Caller,
        name: &str,
        role: &str,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if !self.users.contains_key(name) {
            return Err(EtcdError::UserNotFound);
        }
        // etcd lets the root role be granted before it exists.
        if role != ROOT_ROLE && !self.roles.contains_key(role) {
            return Err(EtcdError::RoleNotFound);
        }
        let Some(user) = self.users.get_mut(name) else {
            return Err(EtcdError::UserNotFound);
        };
        let Err(at) = user.roles.binary_search_by(|r| r.as_str().cmp(role)) else {
            return Ok(Vec::new()); // already granted: no change
        };
        user.roles.insert(at, role.to_string());
        let change = vec![AuthMutation::PutUser(user.clone())];
        Ok(self.changed(change))
    }

    pub fn user_revoke_role(
        &mut self,
        caller: &Caller,
        name: &str,
        role: &str,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if self.enabled && name == ROOT_USER && role == ROOT_ROLE {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let user = self.users.get_mut(name).ok_or(EtcdError::UserNotFound)?;
        let before = user.roles.len();
        user.roles.retain(|r| r != role);
        if user.roles.len() == before {
            return Err(EtcdError::RoleNotGranted);
        }
        let change = vec![AuthMutation::PutUser(user.clone())];
        Ok(self.changed(change))
    }

    pub fn role_add(
        &mut self,
        caller: &Caller,
        name: &str,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if name.is_empty() {
            return Err(EtcdError::RoleEmpty);
        }
        if self.roles.contains_key(name) {
            return Err(EtcdError::RoleAlreadyExist);
        }
        let role = Role {
            name: Bytes::copy_from_slice(name.as_bytes()),
            key_permission: Vec::new(),
        };
        self.roles.insert(name.to_string(), role.clone());
        let change = vec![AuthMutation::PutRole(role)];
        Ok(self.changed(change))
    }

    /// RoleDelete, which also takes the role from every user that had it.
    pub fn role_delete(
        &mut self,
        caller: &Caller,
        name: &str,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        if self.enabled && name == ROOT_ROLE {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        self.roles.remove(name).ok_or(EtcdError::RoleNotFound)?;
        let mut out = vec![AuthMutation::DeleteRole(name.to_string())];
        for user in self.users.values_mut() {
            let before = user.roles.len();
            user.roles.retain(|r| r != name);
            if user.roles.len() != before {
                out.push(AuthMutation::PutUser(user.clone()));
            }
        }
        Ok(self.changed(out))
    }

    /// RoleGrantPermission: replaces the type of the permission on the same
    /// range, or adds one. Permissions stay sorted by key.
    pub fn role_grant_permission(
        &mut self,
        caller: &Caller,
        name: &str,
        perm: Option<&Permission>,
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        let perm = perm.ok_or(EtcdError::PermissionNotGiven)?;
        if !perm::is_valid_permission_range(&perm.key, &perm.range_end) {
            return Err(EtcdError::InvalidAuthMgmt);
        }
        let role = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let perms = &mut role.key_permission;
        // As etcd: only the first permission at or after the key is looked
        // at for "the same range".
        let at = perms.partition_point(|p| p.key < perm.key);
        match perms.get_mut(at) {
            Some(p) if p.key == perm.key && p.range_end == perm.range_end => {
                p.perm_type = perm.perm_type;
            }
            _ => {
                perms.push(perm.clone());
                perms.sort_by(|a, b| a.key.cmp(&b.key));
            }
        }
        let change = vec![AuthMutation::PutRole(role.clone())];
        Ok(self.changed(change))
    }

    pub fn role_revoke_permission(
        &mut self,
        caller: &Caller,
        name: &str,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<AuthMutation>, EtcdError> {
        self.check_admin(caller)?;
        let role = self.roles.get_mut(name).ok_or(EtcdError::RoleNotFound)?;
        let before = role.key_permission.len();
        role.key_permission
            .retain(|p| p.key != key || p.range_end != range_end);
        if role.key_permission.len() == before {
            return Err(EtcdError::PermissionNotGranted);
        }
        let change = vec![AuthMutation::PutRole(role.clone())];
        Ok(self.changed(change))
    }

    /// torc's bootstrap (`torc kv --root-password-file`): the `root` role,
    /// a `root` user with it and `hash` as its password, and auth enabled,
    /// in one change; nothing if a `root` user exists.
    pub fn bootstrap_root(&mut self, hash: String) -> Vec<AuthMutation> {
        if self.users.contains_key(ROOT_USER) {
            return Vec::new();
        }
        let mut out = Vec::new();
        if !self.roles.contains_key(ROOT_ROLE) {
            let role = Role {
                name: Bytes::from_static(ROOT_ROLE.as_bytes()),
                key_permission: Vec::new(),
            };
            self.roles.insert(ROOT_ROLE.to_string(), role.clone());
            out.push(AuthMutation::PutRole(role));
        }
        let user = User {
            name: Bytes::from_static(ROOT_USER.as_bytes()),
            password: Bytes::from(hash),
            roles: vec![ROOT_ROLE.to_string()],
            options: Some(UserAddOptions { no_password: false }),
        };
        self.users.insert(ROOT_USER.to_string(), user.clone());
        out.push(AuthMutation::PutUser(user));
        self.enabled = true;
        out.push(AuthMutation::Enabled(true));
        self.changed(out)
    }
}

#[cfg(test)]
mod tests;

//! The controller's credentials: who may call it, as what, and the secrets it hands to tasks.
//!
//! What it is: `Keys`, plain data plus transitions like `Rack` (no I/O, time as an argument),
//! persisted by the controller through the same store commit as the rack.
//!
//! Identities (`Role`):
//! - `admin`: anything; `viewer`: every read, no change;
//! - `join`: only registers agents; registering mints that node's own credential;
//! - `node`: one per node, minted at registration: report its own tasks, read its own desired
//!   set, ask who a token belongs to (agents check callers of their own API that way);
//! - `framework`: one framework's registration, tasks, events and log line;
//! - task tokens: a task whose spec asks for `api_access: viewer` gets a token bound to its id.
//!   It is derived (an HMAC of the task id under a key of the rack), so the controller can hand
//!   it to the task's agent again after a restart without keeping it; it stops working the
//!   moment the task ends.
//!
//! A token is `torc_<id>_<secret>`. The store keeps, per stored credential, only the SHA-256 of
//! its secret, so no stored credential's token can be read back from `controller.redb`. It
//! does keep, as it is, the rack key that task and delegation tokens are derived from (the
//! secret `.task-token-key`): a copy of the file can mint the token of every running task that
//! has one, and a framework delegate's. Secrets come from the OS's CSPRNG and are compared in
//! constant time.
//!
//! Named rack secrets (e.g. the kv root password) are random values the controller generates
//! the first time a service names them and hands to those services' tasks as files. Unlike
//! tokens they are kept as they are (the controller must hand them out again), so the state
//! store is as sensitive as the secrets: it lives in a 0700 directory.
//!
//! Invariants: a revoked or expired credential authenticates nothing from the next request on;
//! a token never appears in a log, an event or an error message; `id`s are never reused.

use std::collections::BTreeMap;

use aws_lc_rs::{constant_time, digest, hmac};
use serde::{Deserialize, Serialize};
use torc_types::{ApiAccess, FrameworkName, NodeName, TaskId, UnixMillis};

use crate::store::{Loaded, StoreError, Table, Write};

/// Every token starts with this (secret scanners key on it).
pub const TOKEN_PREFIX: &str = "torc_";
/// Stored credential ids are 16 hex digits; task tokens' ids are `t` and the task id in hex;
/// delegation tokens' are `g` and the framework name in hex; the controller's own is `p` and
/// 16 hex digits. `t`, `g` and `p` are not hex
/// digits, so the four never collide.
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
/// The key task tokens are derived under, in the secrets table.
const TASK_TOKEN_KEY: &str = ".task-token-key";

/// What a stored credential may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Role {
    Admin,
    Viewer,
    Join,
    Node { node: NodeName },
    Framework { framework: FrameworkName },
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Viewer => f.write_str("viewer"),
            Role::Join => f.write_str("join"),
            Role::Node { node } => write!(f, "node {node}"),
            Role::Framework { framework } => write!(f, "framework {framework}"),
        }
    }
}

/// A stored credential. The secret itself is never stored, only its SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub id: String,
    pub name: String,
    #[serde(flatten)]
    pub role: Role,
    /// SHA-256 of the secret, hex.
    hash: String,
    pub created_at: UnixMillis,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<UnixMillis>,
    /// When it was revoked. A revoked credential is kept (a tombstone), so that a file still
    /// holding its token is never adopted again at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<UnixMillis>,
}

impl Credential {
    /// Not revoked and not expired at `now`.
    fn live(&self, now: UnixMillis) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }
}

/// Who a request comes from, once its credential checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A stored credential (its id and name, for the audit trail) with its role.
    Credential {
        id: String,
        name: String,
        role: Role,
    },
    /// A task's own token, valid while the task lives, with what its spec asked for: a
    /// viewer's reads, or the network agent's routes.
    Task { task: TaskId, access: ApiAccess },
    /// The controller itself, calling its agents: it reads there like a viewer, and is refused
    /// by the controller's own API (a node that got hold of it gains nothing).
    Controller,
    /// The controller, passing an admin's group action on to a framework's own API: good for
    /// that framework's API for a minute or two, for nothing else.
    Delegate(FrameworkName),
    /// Anyone at all: the controller runs with `--insecure`.
    Insecure,
}

impl Who {
    pub fn role(&self) -> Option<&Role> {
        match self {
            Who::Credential { role, .. } => Some(role),
            _ => None,
        }
    }

    /// May change anything.
    pub fn is_admin(&self) -> bool {
        matches!(self, Who::Insecure) || self.role() == Some(&Role::Admin)
    }

    /// May read everything, env, args, logs and stored values included.
    pub fn reads_all(&self) -> bool {
        self.is_admin()
            || matches!(
                self,
                Who::Task {
                    access: ApiAccess::Viewer,
                    ..
                } | Who::Controller
            )
            || self.role() == Some(&Role::Viewer)
    }

    /// How it is shown in events and answers (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Who::Credential { name, role, .. } => format!("{role} token {name:?}"),
            Who::Task { task, .. } => format!("task {task}"),
            Who::Controller => "the controller".into(),
            Who::Delegate(f) => format!("the controller, for an admin, at framework {f}"),
            Who::Insecure => "anyone (insecure mode)".into(),
        }
    }
}

/// Why a token was not accepted. Deliberately vague towards the caller: which part was wrong is
/// logged, not answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token is malformed (expected torc_<id>_<secret>)")]
    Malformed,
    #[error("the token is unknown, revoked or expired")]
    Unknown,
    #[error("the token was revoked")]
    Revoked,
}

/// A new credential, with the token shown once.
#[derive(Debug, Clone)]
pub struct Minted {
    pub credential: Credential,
    pub token: String,
}

/// The credentials and named secrets of a rack.
#[derive(Default)]
pub struct Keys {
    credentials: BTreeMap<String, Credential>,
    /// Named rack secrets and the task-token key.
    secrets: BTreeMap<String, String>,
    /// The controller's own token (calls to agents), for this process's life only: its id,
    /// the SHA-256 of its secret, and the token.
    controller: Option<(String, [u8; 32], String)>,
    writes: Vec<Write>,
}

impl std::fmt::Debug for Keys {
    /// Counts only: the values are secrets.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("credentials", &self.credentials.len())
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    torc_types::random_bytes(&mut buf);
    hex(&buf)
}

/// `bytes` as lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (either case); `None` when it is not one.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn equal(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// A fresh token of torc's shape, for a file the controller adopts at start
/// (`--admin-token-file`): how `torc up` prepares its tokens before the controller runs.
pub fn fresh_token() -> String {
    format!(
        "{TOKEN_PREFIX}{}_{}",
        random_hex(ID_BYTES),
        random_hex(SECRET_BYTES)
    )
}

/// `torc_<id>_<secret>` split, checked for shape only.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let rest = token
        .strip_prefix(TOKEN_PREFIX)
        .ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    if id.is_empty() || secret.len() != SECRET_BYTES * 2 || unhex(secret).is_none() {
        return Err(AuthError::Malformed);
    }
    Ok((id, secret))
}

impl Keys {
    /// Reads the credentials and secrets a store holds.
    pub fn load(loaded: &mut Loaded) -> Result<Keys, StoreError> {
        let credentials: Vec<Credential> = loaded.take(Table::Credentials)?;
        let secrets: Vec<NamedSecret> = loaded.take(Table::Secrets)?;
        Ok(Keys {
            credentials: credentials.into_iter().map(|c| (c.id.clone(), c)).collect(),
            secrets: secrets.into_iter().map(|s| (s.name, s.value)).collect(),
            controller: None,
            writes: Vec::new(),
        })
    }

    /// The writes made since the last call, for the store.
    pub fn take_writes(&mut self) -> Vec<Write> {
        std::mem::take(&mut self.writes)
    }

    /// Mints and stores a credential.
    pub fn mint(
        &mut self,
        name: &str,
        role: Role,
        now: UnixMillis,
        expires_at: Option<UnixMillis>,
    ) -> Minted {
        let id = loop {
            let id = random_hex(ID_BYTES);
            if !self.credentials.contains_key(&id) {
                break id;
            }
        };
        let secret = random_hex(SECRET_BYTES);
        let credential = Credential {
            id: id.clone(),
            name: name.to_string(),
            role,
            hash: hex(&sha256(secret.as_bytes())),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.writes
            .push(Write::put(Table::Credentials, &id, &credential));
        self.credentials.insert(id.clone(), credential.clone());
        Minted {
            credential,
            token: format!("{TOKEN_PREFIX}{id}_{secret}"),
        }
    }

    /// Stores a token someone else chose (an operator's `--admin-token-file`), unless it is
    /// already known. The token must have our shape.
    pub fn adopt(
        &mut self,
        token: &str,
        name: &str,
        role: Role,
        now: UnixMillis,
    ) -> Result<bool, AuthError> {
        let (id, secret) = split(token)?;
        if id.len() != ID_BYTES * 2 || unhex(id).is_none() {
            return Err(AuthError::Malformed);
        }
        if let Some(known) = self.credentials.get(id) {
            return if !equal(
                known.hash.as_bytes(),
                hex(&sha256(secret.as_bytes())).as_bytes(),
            ) {
                Err(AuthError::Unknown)
            } else if known.revoked_at.is_some() {
                Err(AuthError::Revoked)
            } else {
                Ok(false)
            };
        }
        let credential = Credential {
            id: id.to_string(),
            name: name.to_string(),
            role,
            hash: hex(&sha256(secret.as_bytes())),
            created_at: now,
            expires_at: None,
            revoked_at: None,
        };
        self.writes
            .push(Write::put(Table::Credentials, id, &credential));
        self.credentials.insert(id.to_string(), credential);
        Ok(true)
    }

    /// Revokes a credential (it stays as a tombstone). `false` when no live credential has
    /// that id.
    pub fn revoke(&mut self, id: &str, now: UnixMillis) -> bool {
        match self.credentials.get_mut(id) {
            Some(c) if c.revoked_at.is_none() => {
                c.revoked_at = Some(now);
                let c = c.clone();
                self.writes.push(Write::put(Table::Credentials, id, &c));
                true
            }
            _ => false,
        }
    }

    /// Whether the stored credential `id` exists and is live.
    pub fn knows(&self, id: &str, now: UnixMillis) -> bool {
        self.credentials.get(id).is_some_and(|c| c.live(now))
    }

    /// Whether `node` holds a live credential.
    pub fn node_has_credential(&self, node: &NodeName, now: UnixMillis) -> bool {
        self.credentials
            .values()
            .any(|c| c.live(now) && matches!(&c.role, Role::Node { node: n } if n == node))
    }

    /// Every live credential at `now`, oldest first.
    pub fn list(&self, now: UnixMillis) -> Vec<Credential> {
        let mut all: Vec<Credential> = self
            .credentials
            .values()
            .filter(|c| c.live(now))
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    /// Whether any unexpired admin credential exists.
    pub fn has_admin(&self, now: UnixMillis) -> bool {
        self.credentials
            .values()
            .any(|c| c.role == Role::Admin && c.live(now))
    }

    /// Mints a node's credential, revoking the one it had: a node has one at a time.
    pub fn mint_node(&mut self, node: &NodeName, now: UnixMillis) -> Minted {
        let old: Vec<String> = self
            .credentials
            .values()
            .filter(|c| c.revoked_at.is_none())
            .filter(|c| matches!(&c.role, Role::Node { node: n } if n == node))
            .map(|c| c.id.clone())
            .collect();
        for id in old {
            self.revoke(&id, now);
        }
        self.mint(
            &format!("node {node}"),
            Role::Node { node: node.clone() },
            now,
            None,
        )
    }

    /// The controller's own token for this process's life (not stored).
    pub fn controller_token(&mut self) -> String {
        let (_, _, token) = self.controller.get_or_insert_with(|| {
            let id = random_hex(ID_BYTES);
            let secret = random_hex(SECRET_BYTES);
            let token = format!("{TOKEN_PREFIX}p{id}_{secret}");
            (id, sha256(secret.as_bytes()), token)
        });
        token.clone()
    }

    /// Keeps `old`'s controller token (this process's, not stored) in these keys, reloaded
    /// from the store: the token agents already hold for this controller stays good.
    pub fn keep_controller_token(&mut self, old: &mut Keys) {
        if let Some(own) = old.controller.take() {
            self.controller = Some(own);
        }
    }

    /// Who holds `token`. `task_access` tells what a live task's token may do, `None` when
    /// the task ended or asked for no token.
    pub fn authenticate(
        &self,
        token: &str,
        now: UnixMillis,
        task_access: impl FnOnce(&TaskId) -> Option<ApiAccess>,
    ) -> Result<Who, AuthError> {
        let (id, secret) = split(token)?;
        if let Some(task_hex) = id.strip_prefix('t') {
            let task = unhex(task_hex)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| TaskId::new(s).ok())
                .ok_or(AuthError::Malformed)?;
            let expected = self.task_secret(&task).ok_or(AuthError::Unknown)?;
            if !equal(expected.as_bytes(), secret.as_bytes()) {
                return Err(AuthError::Unknown);
            }
            let access = task_access(&task).ok_or(AuthError::Unknown)?;
            return Ok(Who::Task { task, access });
        }
        if let Some(framework_hex) = id.strip_prefix('g') {
            let framework = unhex(framework_hex)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| FrameworkName::new(s).ok())
                .ok_or(AuthError::Malformed)?;
            // Valid in the minute it was made and the next.
            let minute = now / 60_000;
            let ok = [minute, minute.saturating_sub(1)].iter().any(|m| {
                self.keyed(&format!("delegate:{framework}:{m}"))
                    .is_some_and(|expected| equal(expected.as_bytes(), secret.as_bytes()))
            });
            return if ok {
                Ok(Who::Delegate(framework))
            } else {
                Err(AuthError::Unknown)
            };
        }
        if let Some(controller_id) = id.strip_prefix('p') {
            return match &self.controller {
                Some((cid, hash, _))
                    if equal(cid.as_bytes(), controller_id.as_bytes())
                        && equal(hash, &sha256(secret.as_bytes())) =>
                {
                    Ok(Who::Controller)
                }
                _ => Err(AuthError::Unknown),
            };
        }
        let credential = self.credentials.get(id).ok_or(AuthError::Unknown)?;
        let hash = hex(&sha256(secret.as_bytes()));
        if !equal(credential.hash.as_bytes(), hash.as_bytes()) || !credential.live(now) {
            return Err(AuthError::Unknown);
        }
        Ok(Who::Credential {
            id: credential.id.clone(),
            name: credential.name.clone(),
            role: credential.role.clone(),
        })
    }

    /// The token of a task that asked for one (`None` until the key exists: see
    /// [`Keys::ensure_task_key`]).
    pub fn task_token(&self, task: &TaskId) -> Option<String> {
        let secret = self.task_secret(task)?;
        Some(format!(
            "{TOKEN_PREFIX}t{}_{secret}",
            hex(task.as_str().as_bytes())
        ))
    }

    fn task_secret(&self, task: &TaskId) -> Option<String> {
        self.keyed(&format!("task:{task}"))
    }

    /// The rack key's HMAC of `what`, hex.
    fn keyed(&self, what: &str) -> Option<String> {
        let key = unhex(self.secrets.get(TASK_TOKEN_KEY)?)?;
        let key = hmac::Key::new(hmac::HMAC_SHA256, &key);
        Some(hex(hmac::sign(&key, what.as_bytes()).as_ref()))
    }

    /// A token with which the controller passes an admin's action to `framework`'s own API:
    /// it reviews as that framework's delegate, for a minute or two, and as nothing else.
    pub fn delegation_token(&self, framework: &FrameworkName, now: UnixMillis) -> Option<String> {
        let secret = self.keyed(&format!("delegate:{framework}:{}", now / 60_000))?;
        Some(format!(
            "{TOKEN_PREFIX}g{}_{secret}",
            hex(framework.as_str().as_bytes())
        ))
    }

    /// Creates the task-token key if the rack has none yet.
    pub fn ensure_task_key(&mut self) {
        self.ensure_secret(TASK_TOKEN_KEY);
    }

    /// A named rack secret, created (32 random bytes, hex) the first time it is asked for.
    pub fn ensure_secret(&mut self, name: &str) -> String {
        if let Some(v) = self.secrets.get(name) {
            return v.clone();
        }
        let value = random_hex(SECRET_BYTES);
        self.set_secret(name, value.clone());
        value
    }

    /// Sets a named rack secret.
    pub fn set_secret(&mut self, name: &str, value: String) {
        self.writes.push(Write::put(
            Table::Secrets,
            name,
            &NamedSecret {
                name: name.to_string(),
                value: value.clone(),
            },
        ));
        self.secrets.insert(name.to_string(), value);
    }

    /// A named rack secret, if it exists.
    pub fn secret(&self, name: &str) -> Option<&str> {
        self.secrets.get(name).map(String::as_str)
    }

    /// The names of the rack's secrets (not their values), without torc's own key.
    pub fn secret_names(&self) -> Vec<String> {
        self.secrets
            .keys()
            .filter(|k| !k.starts_with('.'))
            .cloned()
            .collect()
    }

    /// Marks credentials whose expiry has passed as revoked (they authenticate nothing
    /// either way; this keeps `list` and the store tidy).
    pub fn expire(&mut self, now: UnixMillis) {
        let expired: Vec<String> = self
            .credentials
            .values()
            .filter(|c| c.revoked_at.is_none() && c.expires_at.is_some_and(|e| e <= now))
            .map(|c| c.id.clone())
            .collect();
        for id in expired {
            self.revoke(&id, now);
        }
    }
}

/// A named rack secret as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct NamedSecret {
    name: String,
    value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        let mut k = Keys::default();
        k.ensure_task_key();
        k
    }

    #[test]
    fn minted_tokens_authenticate_until_revoked_or_expired() {
        let mut k = keys();
        let admin = k.mint("ops", Role::Admin, 1_000, None);
        let viewer = k.mint("dash", Role::Viewer, 1_000, Some(5_000));
        let who = k.authenticate(&admin.token, 2_000, |_| None).unwrap();
        assert!(who.is_admin());
        let who = k.authenticate(&viewer.token, 2_000, |_| None).unwrap();
        assert!(!who.is_admin() && who.reads_all());
        assert_eq!(
            k.authenticate(&viewer.token, 5_000, |_| None),
            Err(AuthError::Unknown)
        );
        assert!(k.revoke(&admin.credential.id, 2_000));
        assert!(!k.revoke(&admin.credential.id, 2_000), "once");
        assert_eq!(
            k.authenticate(&admin.token, 2_000, |_| None),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn every_stored_id_authenticates_whatever_digit_it_starts_with() {
        let mut k = keys();
        let mut first = std::collections::BTreeSet::new();
        while first.len() < 16 {
            let m = k.mint("x", Role::Viewer, 1, None);
            assert!(
                k.authenticate(&m.token, 2, |_| None).is_ok(),
                "id {}",
                m.credential.id
            );
            first.insert(m.credential.id.chars().next().unwrap());
        }
    }

    #[test]
    fn a_changed_secret_or_shape_is_refused() {
        let mut k = keys();
        let admin = k.mint("ops", Role::Admin, 1_000, None);
        let mut forged = admin.token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            k.authenticate(&forged, 2_000, |_| None),
            Err(AuthError::Unknown)
        );
        for bad in ["", "torc_", "torc_abc", "Bearer x", "torc_abc_zz"] {
            assert_eq!(
                k.authenticate(bad, 2_000, |_| None),
                Err(AuthError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_store_keeps_no_usable_token() {
        let mut k = keys();
        let admin = k.mint("ops", Role::Admin, 1_000, None);
        let stored: Vec<u8> = k
            .take_writes()
            .iter()
            .filter_map(|w| match w {
                Write::Put(_, _, v) => Some(v.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        let secret = admin.token.rsplit('_').next().unwrap();
        assert!(
            !String::from_utf8_lossy(&stored).contains(secret),
            "the secret must not be stored"
        );
    }

    #[test]
    fn task_tokens_work_while_the_task_lives() {
        let k = keys();
        let task = TaskId::new("statesync.1a2b").unwrap();
        let token = k.task_token(&task).unwrap();
        assert_eq!(
            k.authenticate(&token, 1, |t| (t == &task).then_some(ApiAccess::Network)),
            Ok(Who::Task {
                task: task.clone(),
                access: ApiAccess::Network
            })
        );
        assert_eq!(k.authenticate(&token, 1, |_| None), Err(AuthError::Unknown));
        // Another rack's key derives another token.
        let other = keys();
        assert_eq!(
            other.authenticate(&token, 1, |_| Some(ApiAccess::Viewer)),
            Err(AuthError::Unknown)
        );
    }

    #[test]
    fn a_node_has_one_credential_at_a_time() {
        let mut k = keys();
        let node = NodeName::new("bladerunner1").unwrap();
        let first = k.mint_node(&node, 1);
        let second = k.mint_node(&node, 2);
        assert_eq!(
            k.authenticate(&first.token, 3, |_| None),
            Err(AuthError::Unknown)
        );
        assert_eq!(
            k.authenticate(&second.token, 3, |_| None)
                .unwrap()
                .role()
                .cloned(),
            Some(Role::Node { node })
        );
    }

    #[test]
    fn adopted_tokens_are_checked_against_what_is_known() {
        let mut k = keys();
        let token = format!("torc_{}_{}", "ab".repeat(8), "cd".repeat(32));
        assert_eq!(k.adopt(&token, "file", Role::Admin, 1), Ok(true));
        assert_eq!(k.adopt(&token, "file", Role::Admin, 1), Ok(false));
        let other = format!("torc_{}_{}", "ab".repeat(8), "ef".repeat(32));
        assert_eq!(
            k.adopt(&other, "file", Role::Admin, 1),
            Err(AuthError::Unknown)
        );
        assert!(k.authenticate(&token, 2, |_| None).unwrap().is_admin());
        // Revoked, the file's token is never adopted again (it would come back at every
        // start otherwise).
        let id = "ab".repeat(8);
        assert!(k.revoke(&id, 3));
        assert_eq!(
            k.adopt(&token, "file", Role::Admin, 4),
            Err(AuthError::Revoked)
        );
        assert!(k.authenticate(&token, 4, |_| None).is_err());
        assert!(!k.has_admin(4));
    }

    #[test]
    fn delegation_tokens_name_one_framework_and_expire() {
        let k = keys();
        let f: FrameworkName = "dns".parse().unwrap();
        let token = k.delegation_token(&f, 120_000).unwrap();
        assert_eq!(
            k.authenticate(&token, 150_000, |_| None),
            Ok(Who::Delegate(f.clone()))
        );
        let who = k.authenticate(&token, 150_000, |_| None).unwrap();
        assert!(!who.is_admin() && !who.reads_all());
        assert_eq!(
            k.authenticate(&token, 180_000, |_| None),
            Ok(Who::Delegate(f))
        );
        assert_eq!(
            k.authenticate(&token, 240_000, |_| None),
            Err(AuthError::Unknown),
            "two minutes on"
        );
        // Another framework's name with this secret does not pass.
        let forged = token.replacen(&super::hex(b"dns"), &super::hex(b"dnx"), 1);
        assert!(k.authenticate(&forged, 150_000, |_| None).is_err());
    }

    #[test]
    fn the_controller_token_lives_in_memory_only() {
        let mut k = keys();
        let token = k.controller_token();
        assert_eq!(token, k.controller_token());
        assert_eq!(k.authenticate(&token, 1, |_| None), Ok(Who::Controller));
        assert!(
            k.take_writes()
                .iter()
                .all(|w| !matches!(w, Write::Put(Table::Credentials, ..)))
        );
        let restarted = keys();
        assert!(restarted.authenticate(&token, 1, |_| None).is_err());
    }
}

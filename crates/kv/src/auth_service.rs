//! The etcd v3 Auth service: Authenticate, and the management of users,
//! roles and the auth switch. The rules are [`crate::auth::AuthState`]'s;
//! this module adds the wire, password hashing (bcrypt, off the async
//! runtime and bounded, see [`crate::auth::password`]) and tokens.
//!
//! Changes go through the store's write path, so they are durable before
//! they are acknowledged; reads (UserGet, RoleGet, the lists) and
//! Authenticate see only durable changes.
//!
//! Also here, for every service: who a caller is (its token, or its client
//! certificate under `--client-cert-auth`), and the helpers that check it
//! against the auth state.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::auth::{AuthMutation, AuthState, Caller};
use crate::conn::Peer;
use crate::error::EtcdError;
use crate::mvcc::{Mutation, Outcome};
use crate::proto::etcdserverpb as pb;
use crate::server::Services;

/// How often Authenticate starts over when the user changed while its
/// password was being checked (etcd retries without a bound).
const AUTHENTICATE_ATTEMPTS: usize = 3;

/// The gRPC metadata keys etcd reads a token from (clients send `token`;
/// etcd's HTTP gateway `authorization`).
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// Metadata etcd's gRPC gateway adds to the requests it forwards; etcd
/// then ignores the connection's certificate (the gateway's own).
const GATEWAY_KEY: &str = "grpcgateway-accept";

impl Services {
    /// Who sent a request with this metadata over a connection whose
    /// handshake proved `peer` (etcd's `AuthInfoFromCtx`, then
    /// `AuthInfoFromTLS`):
    /// - with a token: the token's user, or `invalid auth token` when it is
    ///   unknown or expired; anonymous while auth is disabled (etcd then
    ///   ignores tokens);
    /// - without one: under `--client-cert-auth`, the user the client
    ///   certificate's common name names (unless the request says it came
    ///   through etcd's gateway); else anonymous.
    pub(crate) fn caller_of(
        &self,
        md: &tonic::metadata::MetadataMap,
        peer: Option<&Peer>,
    ) -> Result<Caller, EtcdError> {
        let Some(token) = TOKEN_KEYS.iter().find_map(|k| md.get(*k)) else {
            return Ok(match peer.and_then(|p| p.cert_name.as_ref()) {
                Some(name) if self.cert_names_users && md.get(GATEWAY_KEY).is_none() => {
                    Caller::User(Arc::clone(name))
                }
                _ => Caller::Anonymous,
            });
        };
        if !self.store.lock().auth.enabled() {
            return Ok(Caller::Anonymous);
        }
        let token = token.to_str().map_err(|_| EtcdError::InvalidAuthToken)?;
        self.auth
            .tokens
            .resolve(token, Instant::now())
            .map(Caller::User)
            .ok_or(EtcdError::InvalidAuthToken)
    }

    pub(crate) fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        Ok(self.caller_of(request.metadata(), request.extensions().get::<Peer>())?)
    }

    /// Runs `check` on the durable auth state.
    pub(crate) fn check_committed(
        &self,
        check: impl FnOnce(&AuthState, &crate::mvcc::Core) -> Result<(), EtcdError>,
    ) -> Result<(), Status> {
        let st = self.store.lock();
        Ok(check(&st.auth_committed, &st.core)?)
    }

    /// Makes an auth change for `caller` (who must have the root role) and
    /// waits until it is durable; returns the response header.
    pub(crate) async fn change_auth(
        &self,
        caller: &Caller,
        change: impl FnOnce(&mut AuthState) -> Result<Vec<AuthMutation>, EtcdError>,
    ) -> Result<Option<pb::ResponseHeader>, Status> {
        let (_, rev) = self
            .store
            .write(|_, auth, _| {
                // Checked before copying the state to change it.
                auth.check_admin(caller)?;
                let mutations = change(Arc::make_mut(auth))?;
                Ok(Outcome {
                    response: (),
                    mutations: mutations.into_iter().map(Mutation::Auth).collect(),
                })
            })
            .await?;
        Ok(self.header(rev))
    }

    /// A read of the durable auth state, with the committed header.
    fn read_auth<T>(
        &self,
        read: impl FnOnce(&crate::auth::AuthState) -> Result<T, EtcdError>,
    ) -> Result<(T, Option<pb::ResponseHeader>), Status> {
        let (out, rev) = {
            let st = self.store.lock();
            (read(&st.auth_committed)?, st.committed)
        };
        Ok((out, self.header(rev)))
    }

    /// The admin check before slow work (hashing a password), so that
    /// callers who may not change users cannot make torc hash for them.
    fn precheck_admin(&self, caller: &Caller) -> Result<(), Status> {
        Ok(self.store.lock().auth.check_admin(caller)?)
    }

    async fn authenticate_once(
        &self,
        name: &str,
        password: &str,
    ) -> Result<Option<String>, EtcdError> {
        let (hash, revision) = {
            let st = self.store.lock();
            let auth = &st.auth_committed;
            let hash = match auth.password_hash(name) {
                Ok(hash) => Some(hash.to_vec()),
                // An unknown user costs as much time as a wrong password.
                Err(EtcdError::AuthFailed) => None,
                Err(e) => return Err(e),
            };
            (hash, auth.revision())
        };
        let matches = self
            .auth
            .passwords
            .verify(password.to_string(), hash)
            .await?;
        if !matches {
            tracing::info!(user = name, "authentication failed");
            return Err(EtcdError::AuthFailed);
        }
        let st = self.store.lock();
        if st.auth_committed.revision() != revision || !st.auth_committed.enabled() {
            // The user (or auth) changed meanwhile: check again.
            return Ok(None);
        }
        let token = self
            .auth
            .tokens
            .issue(name, Instant::now())
            .map_err(|e| EtcdError::AuthInternal(e.to_string()))?;
        Ok(Some(token))
    }
}

#[tonic::async_trait]
impl pb::auth_server::Auth for Services {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let caller = self.caller(&request)?;
        let header = self.change_auth(&caller, |a| a.enable(&caller)).await?;
        tracing::info!("auth enabled");
        Ok(Response::new(pb::AuthEnableResponse { header }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let caller = self.caller(&request)?;
        let tokens = &self.auth.tokens;
        let header = self
            .change_auth(&caller, |a| {
                let out = a.disable(&caller)?;
                if !out.is_empty() {
                    tokens.clear();
                }
                Ok(out)
            })
            .await?;
        tracing::info!("auth disabled");
        Ok(Response::new(pb::AuthDisableResponse { header }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let req = request.into_inner();
        for _ in 0..AUTHENTICATE_ATTEMPTS {
            if let Some(token) = self.authenticate_once(&req.name, &req.password).await? {
                return Ok(Response::new(pb::AuthenticateResponse {
                    header: self.committed_header(),
                    token,
                }));
            }
        }
        Err(EtcdError::AuthOldRevision.into())
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.precheck_admin(&caller)?;
        self.store.lock().auth.check_user_add(&req.name)?;
        let no_password = req.options.is_some_and(|o| o.no_password);
        let hash = if no_password {
            None
        } else {
            Some(self.auth.passwords.hash(req.password).await?)
        };
        let header = self
            .change_auth(&caller, |a| a.user_add(&caller, &req.name, hash))
            .await?;
        Ok(Response::new(pb::AuthUserAddResponse { header }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        let (roles, header) = self.read_auth(|a| a.user_get(&caller, &name))?;
        Ok(Response::new(pb::AuthUserGetResponse { header, roles }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.caller(&request)?;
        let (users, header) = self.read_auth(|a| a.user_list(&caller))?;
        Ok(Response::new(pb::AuthUserListResponse { header, users }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        let tokens = &self.auth.tokens;
        let header = self
            .change_auth(&caller, |a| {
                let out = a.user_delete(&caller, &name)?;
                tokens.invalidate_user(&name);
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse { header }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.precheck_admin(&caller)?;
        if self.store.lock().auth.user(&req.name).is_none() {
            return Err(EtcdError::UserNotFound.into());
        }
        let hash = self.auth.passwords.hash(req.password).await?;
        let tokens = &self.auth.tokens;
        let header = self
            .change_auth(&caller, |a| {
                let out = a.user_change_password(&caller, &req.name, hash)?;
                // Its sessions end with the old password, at once.
                tokens.invalidate_user(&req.name);
                Ok(out)
            })
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse { header }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let header = self
            .change_auth(&caller, |a| {
                a.user_grant_role(&caller, &req.user, &req.role)
            })
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse { header }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let header = self
            .change_auth(&caller, |a| {
                a.user_revoke_role(&caller, &req.name, &req.role)
            })
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse { header }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let caller = self.caller(&request)?;
        let name = request.into_inner().name;
        let header = self
            .change_auth(&caller, |a| a.role_add(&caller, &name))
            .await?;
        Ok(Response::new(pb::AuthRoleAddResponse { header }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let role = request.into_inner().role;
        let (perm, header) = self.read_auth(|a| a.role_get(&caller, &role))?;
        Ok(Response::new(pb::AuthRoleGetResponse { header, perm }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.caller(&request)?;
        let (roles, header) = self.read_auth(|a| a.role_list(&caller))?;
        Ok(Response::new(pb::AuthRoleListResponse { header, roles }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let caller = self.caller(&request)?;
        let role = request.into_inner().role;
        let header = self
            .change_auth(&caller, |a| a.role_delete(&caller, &role))
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse { header }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let header = self
            .change_auth(&caller, |a| {
                a.role_grant_permission(&caller, &req.name, req.perm.as_ref())
            })
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header,
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let header = self
            .change_auth(&caller, |a| {
                a.role_revoke_permission(&caller, &req.role, &req.key, &req.range_end)
            })
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header,
        }))
    }
}

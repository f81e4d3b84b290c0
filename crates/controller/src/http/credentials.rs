//! Credentials and rack secrets, for admins: tokens listed (never their secrets), created
//! (shown once) and revoked (`/api/v1/tokens`); rack secrets listed by name, read and set
//! (`/api/v1/secrets`). Each change is recorded in the event feed.

use std::sync::Arc;

use crate::clock::now_millis;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use torc_api::{EventKind, EventLevel, TokenCreated, TokenRequest, TokenRole, TokenView};

use super::access::Caller;
use super::error::ApiError;
use super::extract::{Body, Path};
use crate::auth::Role;
use crate::controller::Controller;
use crate::rack::CredentialError;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .route("/api/v1/secrets", get(list_secrets))
        .route("/api/v1/secrets/{name}", get(get_secret).put(set_secret))
}

fn token_view(c: &crate::auth::Credential) -> TokenView {
    let (role, subject) = match &c.role {
        Role::Admin => ("admin", None),
        Role::Viewer => ("viewer", None),
        Role::Join => ("join", None),
        Role::Node { node } => ("node", Some(node.to_string())),
        Role::Framework { framework } => ("framework", Some(framework.to_string())),
    };
    TokenView {
        id: c.id.clone(),
        name: c.name.clone(),
        role: role.to_string(),
        subject,
        created_at: c.created_at,
        expires_at: c.expires_at,
    }
}

/// `GET /api/v1/tokens`: every stored credential, without secrets.
async fn list_tokens(State(ctl): State<Arc<Controller>>) -> Json<Vec<TokenView>> {
    Json(ctl.keys(|k| k.list(now_millis()).iter().map(token_view).collect()))
}

/// `POST /api/v1/tokens`: a new token, shown this once.
async fn create_token(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    Body(req): Body<TokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let role = match (req.role, req.framework) {
        (TokenRole::Framework, Some(framework)) => Role::Framework { framework },
        (TokenRole::Framework, None) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "framework: a framework token needs the framework's name",
            ));
        }
        (_, Some(_)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "framework: only framework tokens name a framework",
            ));
        }
        (TokenRole::Admin, None) => Role::Admin,
        (TokenRole::Viewer, None) => Role::Viewer,
        (TokenRole::Join, None) => Role::Join,
    };
    let name = req.name.trim().to_string();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name: 1 to 128 printable characters",
        ));
    }
    let now = now_millis();
    let expires_at = match req.ttl_seconds {
        Some(0) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "ttl_seconds: must be positive (leave it out for a token that lasts until revoked)",
            ));
        }
        Some(s) => Some(now.saturating_add(s.saturating_mul(1000))),
        None => None,
    };
    let by = caller.who.describe();
    let minted = ctl
        .change_keys(move |rack, keys| {
            let minted = keys.mint(&name, role, now, expires_at);
            rack.record_event(
                EventKind::Auth,
                EventLevel::Info,
                format!(
                    "{by} created {} token {:?} ({})",
                    minted.credential.role, minted.credential.name, minted.credential.id
                ),
                now,
            );
            Ok(minted)
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            token: minted.token.clone(),
            view: token_view(&minted.credential),
        }),
    ))
}

/// `DELETE /api/v1/tokens/{id}`: revokes a credential at once.
async fn revoke_token(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let by = caller.who.describe();
    let revoked = ctl
        .change_keys(move |rack, keys| {
            if !keys.revoke(&id, now_millis()) {
                return Err(CredentialError::UnknownToken(id).into());
            }
            rack.record_event(
                EventKind::Auth,
                EventLevel::Info,
                format!("{by} revoked token {id}"),
                now_millis(),
            );
            Ok(id)
        })
        .await?;
    Ok(Json(serde_json::json!({ "revoked": revoked })))
}

/// `GET /api/v1/secrets`: the names of the rack's secrets (never their values).
async fn list_secrets(State(ctl): State<Arc<Controller>>) -> Json<Vec<String>> {
    Json(ctl.keys(|k| k.secret_names()))
}

/// `GET /api/v1/secrets/{name}`: a rack secret's value, for an admin (e.g. the kv root
/// password, to use etcdctl as root). Recorded in the event feed.
async fn get_secret(
    State(ctl): State<Arc<Controller>>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<torc_types::SecretName>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let by = caller.who.describe();
    let n = name.clone();
    let value = ctl
        .change_keys(move |rack, keys| {
            let value = keys
                .secret(n.as_str())
                .map(str::to_string)
                .ok_or_else(|| CredentialError::UnknownSecret(n.clone()))?;
            rack.record_event(
                EventKind::Auth,
                EventLevel::Info,
                format!("{by} read secret {n}"),
                now_millis(),
            );
            Ok(value)
        })
        .await?;
    Ok(Json(serde_json::json!({ "secret": name, "value": value })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretValue {
    value: String,
}

/// `PUT /api/v1/secrets/{name}`: sets a rack secret (e.g. to a password an outside service
/// already has). Tasks started from then on get the new value.
async fn set_secret(
    State(ctl): State<Arc<Controller>>,
    Path(name): Path<torc_types::SecretName>,
    Body(v): Body<SecretValue>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if v.value.is_empty() || v.value.len() > 64 * 1024 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "value: 1 byte to 64 KiB",
        ));
    }
    let n = name.clone();
    ctl.change_keys(move |rack, keys| {
        keys.set_secret(n.as_str(), v.value);
        rack.record_event(
            EventKind::Auth,
            EventLevel::Info,
            format!("secret {n} set"),
            now_millis(),
        );
        Ok(())
    })
    .await?;
    Ok(Json(serde_json::json!({ "secret": name })))
}

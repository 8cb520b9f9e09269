//! Service tokens in the account API: create (the token is shown once), list, delete.
//!
//! A token acts as its owner inside one organization; creating one there needs the
//! `allowManageServiceTokens` permission or the admin role in that organization. Deleting is
//! immediate on every replica: the record goes, then every cache is told.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::auth::secret::{hash_secret, new_id};
use crate::auth::token::{new_token, IpBinding};
use crate::clock::rfc3339;
use crate::store::cache::revoke;
use crate::store::{AuditEvent, Invalidation, Permission, Role, ServiceToken};

/// Most tokens one user may hold; a runaway script should not fill the store.
pub const MAX_TOKENS_PER_USER: usize = 100;
const MAX_NAME_CHARS: usize = 100;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    name: String,
    organization_id: String,
    #[serde(default)]
    ip: Option<String>,
}

fn token_json(t: &ServiceToken, org_name: Option<&str>) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "organization_id": t.org_id,
        "organization_name": org_name,
        "ip": t.ip,
        "client_id": t.client_id,
        "created_at": rfc3339(t.created_at),
        "last_used_at": t.last_used_at.map(rfc3339),
        "last_used_ip": t.last_used_ip,
    })
}

fn may_manage_tokens(caller: &Caller, org_id: &str) -> bool {
    caller.user.membership(org_id).is_some_and(|m| {
        m.role == Role::Admin
            || m.permissions
                .contains(&Permission::AllowManageServiceTokens)
    })
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<NewToken>,
) -> Result<Response, ApiError> {
    let name = req.name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "name: 1-100 characters without control characters",
        ));
    }
    let binding = match req.ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(ip) => Some(IpBinding::parse(ip).map_err(|m| ApiError::bad_request("invalid_ip", m))?),
    };
    if !may_manage_tokens(&caller, &req.organization_id) {
        return Err(ApiError::forbidden(
            "forbidden",
            "You need the allowManageServiceTokens permission in that organization.",
        ));
    }
    let org = state
        .store
        .get_org(&req.organization_id)
        .await?
        .ok_or(ApiError::forbidden(
            "forbidden",
            "You need the allowManageServiceTokens permission in that organization.",
        ))?;
    if state.store.list_user_tokens(&caller.user.id).await?.len() >= MAX_TOKENS_PER_USER {
        return Err(ApiError::Conflict {
            code: "token_limit_reached",
            message: "At most 100 service tokens per user; delete unused ones first.",
        });
    }
    let secret = new_token();
    let token = ServiceToken {
        id: new_id("tok"),
        token_hash: hash_secret(&secret),
        name: name.to_string(),
        user_id: caller.user.id.clone(),
        org_id: org.id.clone(),
        ip: binding.map(IpBinding::to_text),
        client_id: new_id("cli"),
        created_at: state.clock.now(),
        last_used_at: None,
        last_used_ip: None,
    };
    state.store.create_token(&token).await?;
    Audit::by(&caller, AuditEvent::ServiceTokenCreated)
        .target(&token.id)
        .detail("name", &token.name)
        .record(&state, &token.org_id)
        .await;
    let mut body = token_json(&token, Some(&org.name));
    if let Value::Object(map) = &mut body {
        // The only time the token is ever shown.
        map.insert("token".into(), json!(secret));
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut tokens = state.store.list_user_tokens(&caller.user.id).await?;
    tokens.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let mut out = Vec::with_capacity(tokens.len());
    for t in &tokens {
        let org = state.store.get_org(&t.org_id).await?;
        out.push(token_json(t, org.as_ref().map(|o| o.name.as_str())));
    }
    Ok(Json(json!({ "service_tokens": out })))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // Someone else's token is "not found": its existence is none of the caller's business.
    let owned = state
        .store
        .get_token(&id)
        .await?
        .filter(|t| t.user_id == caller.user.id)
        .ok_or(ApiError::NotFound)?;
    let deleted = state
        .store
        .delete_token(&owned.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    // Returns only after every replica has been told: from now on the token is refused.
    revoke(
        &state.cache,
        &state.store,
        &Invalidation::Token(deleted.token_hash.clone()),
    )
    .await?;
    Audit::by(&caller, AuditEvent::ServiceTokenDeleted)
        .target(&deleted.id)
        .detail("name", &deleted.name)
        .record(&state, &deleted.org_id)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn client_ip(caller: Caller) -> Json<Value> {
    Json(json!({ "ip": caller.client_ip }))
}

//! The JSON API under `/auth/api/v1/`: the caller's profile, and for organization admins the
//! session duration setting, the session lists and "Expire now".

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::clock::rfc3339;
use crate::store::cache::revoke;
use crate::store::{
    AuditEvent, EndReason, Invalidation, Organization, Role, Session, TwoFactorPolicy, User,
    ALLOWED_SESSION_DAYS, SECONDS_PER_DAY,
};

/// Ids are ours (`org_<hex>`); anything longer or odder cannot exist.
pub(super) fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

pub(super) fn profile(user: &User) -> Value {
    json!({
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "job_title": user.job_title,
        "mobile_phone": user.mobile_phone,
        "business_phone": user.business_phone,
        "timezone": user.timezone,
    })
}

pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let mut orgs = Vec::new();
    for m in &caller.user.memberships {
        if let Some(org) = state.store.get_org(&m.org_id).await? {
            orgs.push(json!({
                "id": org.id,
                "name": org.name,
                "role": m.role,
                "permissions": m.permissions,
            }));
        }
    }
    let mut body = profile(&caller.user);
    if let Value::Object(map) = &mut body {
        map.insert("organizations".into(), Value::Array(orgs));
        map.insert("csrf_token".into(), json!(caller.session.csrf_token));
        map.insert(
            "session".into(),
            json!({ "id": caller.session.id, "organization_id": caller.session.org_id }),
        );
        map.insert("client_ip".into(), json!(caller.client_ip));
    }
    Ok(Json(body))
}

/// The organization, if the caller administers it: 404 for an unknown id, 403 for a non-admin.
pub(super) async fn administered_org(
    state: &AppState,
    caller: &Caller,
    org_id: &str,
) -> Result<Organization, ApiError> {
    if !plausible_id(org_id) {
        return Err(ApiError::NotFound);
    }
    let org = state
        .store
        .get_org(org_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    match caller.user.membership(org_id) {
        Some(m) if m.role == Role::Admin => Ok(org),
        _ => Err(ApiError::forbidden(
            "forbidden",
            "Only administrators of this organization may do this.",
        )),
    }
}

fn settings_json(org: &Organization) -> Json<Value> {
    Json(json!({
        "organization_id": org.id,
        "name": org.name,
        "session_duration_days": org.session_duration_days,
        "allowed_session_duration_days": ALLOWED_SESSION_DAYS,
        "two_factor": org.two_factor,
    }))
}

pub async fn get_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let org = administered_org(&state, &caller, &org_id).await?;
    Ok(settings_json(&org))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    #[serde(default, deserialize_with = "present")]
    session_duration_days: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    two_factor: Option<Value>,
}

/// A field that was sent, even as `null` (which is then refused by its rule, not ignored).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    use serde::Deserialize;
    Value::deserialize(d).map(Some)
}

pub async fn put_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
    JsonBody(update): JsonBody<SettingsUpdate>,
) -> Result<Json<Value>, ApiError> {
    let current = administered_org(&state, &caller, &org_id).await?;
    // Validate everything before changing anything.
    let days = match &update.session_duration_days {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| ALLOWED_SESSION_DAYS.contains(d))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_session_duration",
                        "session_duration_days must be one of 1, 7, 14, 30",
                    )
                })?,
        ),
    };
    let policy = match &update.two_factor {
        None => None,
        Some(v) => Some(v.as_str().and_then(TwoFactorPolicy::parse).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_two_factor",
                "two_factor must be one of off, optional, required",
            )
        })?),
    };
    if days.is_none() && policy.is_none() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "send session_duration_days and/or two_factor",
        ));
    }
    let mut org = current;
    if let Some(days) = days {
        org = state
            .store
            .set_session_duration(&org_id, days)
            .await?
            .ok_or(ApiError::NotFound)?;
        // Cached sessions of this org carry the old expiry: drop them everywhere.
        revoke(
            &state.cache,
            &state.store,
            &Invalidation::Org(org_id.clone()),
        )
        .await?;
    }
    if let Some(policy) = policy {
        org = state
            .store
            .set_two_factor_policy(&org_id, policy)
            .await?
            .ok_or(ApiError::NotFound)?;
    }
    Ok(settings_json(&org))
}

#[derive(Deserialize)]
pub struct SessionsQuery {
    #[serde(default)]
    state: Option<String>,
}

fn session_json(s: &Session, org: &Organization, user_name: &str, now: i64) -> Value {
    let reason = s.end_reason(org, now);
    json!({
        "id": s.id,
        "user_id": s.user_id,
        "user_name": user_name,
        "ip": s.ip,
        "user_agent": s.user_agent,
        "created_at": rfc3339(s.created_at),
        "last_activity_at": rfc3339(s.last_activity_at),
        "expires_at": rfc3339(s.expires_at(org)),
        "state": if reason.is_none() { "active" } else { "expired" },
        "ended_reason": reason,
    })
}

pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
    query: Result<Query<SessionsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let org = administered_org(&state, &caller, &org_id).await?;
    let Query(q) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let want_active = match q.state.as_deref() {
        None | Some("active") => true,
        Some("expired") => false,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_state",
                "state must be active or expired",
            ))
        }
    };
    let now = state.clock.now();
    let retained_since = now - i64::from(state.expired_retention_days) * SECONDS_PER_DAY;
    let mut sessions: Vec<Session> = state
        .store
        .list_org_sessions(&org_id)
        .await?
        .into_iter()
        .filter(|s| {
            if want_active {
                s.is_active(&org, now)
            } else {
                !s.is_active(&org, now) && s.expires_at(&org) >= retained_since
            }
        })
        .collect();
    sessions.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    let mut names: HashMap<String, String> = HashMap::new();
    let mut out = Vec::with_capacity(sessions.len());
    for s in &sessions {
        if !names.contains_key(&s.user_id) {
            let name = match state.store.get_user(&s.user_id).await? {
                Some(u) => u.display_name(),
                None => String::new(),
            };
            names.insert(s.user_id.clone(), name);
        }
        let name = names.get(&s.user_id).map(String::as_str).unwrap_or("");
        out.push(session_json(s, &org, name, now));
    }
    Ok(Json(json!({ "sessions": out })))
}

pub async fn expire_session(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, session_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    administered_org(&state, &caller, &org_id).await?;
    if !plausible_id(&session_id) {
        return Err(ApiError::NotFound);
    }
    let session = state
        .store
        .get_session(&session_id)
        .await?
        .filter(|s| s.org_id == org_id)
        .ok_or(ApiError::NotFound)?;
    let ended = state
        .store
        .end_session(&session.id, EndReason::ExpiredByAdmin, state.clock.now())
        .await?
        .ok_or(ApiError::NotFound)?;
    // Returns only after every replica has been told: from now on the cookie is refused.
    revoke(
        &state.cache,
        &state.store,
        &Invalidation::Session(ended.token_hash),
    )
    .await?;
    Audit::by(&caller, AuditEvent::SessionExpiredByAdmin)
        .target(&ended.id)
        .detail("user_id", &ended.user_id)
        .record(&state, &org_id)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn jwks(State(state): State<AppState>) -> Response {
    let mut resp = Json(state.signer.jwks()).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// Ends every active session of `user_id` in `org` (except `keep`) with `reason`, and tells
/// every replica before returning. Password change, member removal and 2FA reset use it.
pub(super) async fn end_user_sessions(
    state: &AppState,
    org: &Organization,
    user_id: &str,
    reason: EndReason,
    keep: Option<&str>,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    for s in state.store.list_org_sessions(&org.id).await? {
        if s.user_id != user_id || Some(s.id.as_str()) == keep || !s.is_active(org, now) {
            continue;
        }
        if let Some(ended) = state.store.end_session(&s.id, reason, now).await? {
            revoke(
                &state.cache,
                &state.store,
                &Invalidation::Session(ended.token_hash),
            )
            .await?;
        }
    }
    Ok(())
}

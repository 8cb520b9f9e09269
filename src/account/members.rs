//! Organization members, for that organization's admins: create a user in the organization
//! (`POST /auth/api/v1/orgs/{org}/users`), list the members (`GET`), remove one
//! (`DELETE .../users/{user}`). Creating and removing are recorded in the audit log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::api::{administered_org, end_user_sessions, plausible_id};
use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::profile::{email_taken, invalid_profile, parse_profile, FieldErrors};
use super::AppState;
use crate::auth::password::complexity_violations;
use crate::auth::secret::new_id;
use crate::clock::rfc3339;
use crate::store::cache::revoke;
use crate::store::{
    modify_user, AuditEvent, EndReason, Invalidation, Membership, Permission, Role, StoreError,
    User,
};

fn member_json(user: &User, org_id: &str) -> Value {
    let membership = user.membership(org_id);
    json!({
        "id": user.id,
        "email": user.email,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "job_title": user.job_title,
        "mobile_phone": user.mobile_phone,
        "business_phone": user.business_phone,
        "timezone": user.timezone,
        "role": membership.map(|m| m.role),
        "permissions": membership.map(|m| m.permissions.clone()).unwrap_or_default(),
        "has_password": user.password_hash.is_some(),
        "created_at": rfc3339(user.created_at),
    })
}

/// `GET /auth/api/v1/orgs/{org_id}/users` -> `{"members": [...]}`, ordered by email.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    administered_org(&state, &caller, &org_id).await?;
    let mut members = state.store.list_org_members(&org_id).await?;
    members.sort_by(|a, b| {
        a.email
            .to_lowercase()
            .cmp(&b.email.to_lowercase())
            .then(a.id.cmp(&b.id))
    });
    let out: Vec<Value> = members.iter().map(|u| member_json(u, &org_id)).collect();
    Ok(Json(json!({ "members": out })))
}

fn parse_role(value: Option<&Value>, errors: &mut FieldErrors) -> Role {
    match value {
        None | Some(Value::Null) => Role::Member,
        Some(Value::String(s)) if s == "member" => Role::Member,
        Some(Value::String(s)) if s == "admin" => Role::Admin,
        Some(_) => {
            errors.insert("role".into(), "must be \"admin\" or \"member\"".into());
            Role::Member
        }
    }
}

fn parse_permissions(value: Option<&Value>, errors: &mut FieldErrors) -> Vec<Permission> {
    let items = match value {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(_) => {
            errors.insert("permissions".into(), "must be a list of names".into());
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items {
        match item.as_str().and_then(Permission::parse) {
            Some(p) if !out.contains(&p) => out.push(p),
            Some(_) => {}
            None => {
                let known = Permission::ALL.map(|p| p.as_str()).join(", ");
                errors.insert("permissions".into(), format!("known permissions: {known}"));
            }
        }
    }
    out
}

/// `POST /auth/api/v1/orgs/{org_id}/users` with the profile fields (`first_name`, `last_name`,
/// `email` required), `role` (`member` by default), `permissions` and an optional initial
/// `password` (none: the user cannot sign in with a password until one is set). 201 with the
/// member; field errors as for the profile (`invalid_profile`), an email in use 409.
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(org_id): Path<String>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    administered_org(&state, &caller, &org_id).await?;
    let mut errors = FieldErrors::new();
    let profile = parse_profile(&body, &["role", "permissions", "password"], &mut errors);
    for field in ["first_name", "last_name", "email"] {
        if !body.contains_key(field) {
            errors.insert(field.into(), "required".into());
        }
    }
    let role = parse_role(body.get("role"), &mut errors);
    let permissions = parse_permissions(body.get("permissions"), &mut errors);
    let password = match body.get("password") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => {
            let email = profile.email.as_deref().unwrap_or("");
            let broken = complexity_violations(p, email);
            if !broken.is_empty() {
                errors.insert(
                    "password".into(),
                    format!("must have: {}", broken.join(", ")),
                );
            }
            Some(p.clone())
        }
        Some(_) => {
            errors.insert("password".into(), "must be a string or null".into());
            None
        }
    };
    if !errors.is_empty() {
        return Err(invalid_profile(&errors));
    }

    let password_hash = match password {
        Some(p) => {
            let passwords = state.passwords.clone();
            Some(
                tokio::task::spawn_blocking(move || passwords.hash(&p))
                    .await
                    .map_err(ApiError::internal)?
                    .map_err(ApiError::internal)?,
            )
        }
        None => None,
    };
    let now = state.clock.now();
    let mut user = User {
        id: new_id("usr"),
        email: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        job_title: None,
        mobile_phone: None,
        business_phone: None,
        timezone: None,
        password_hash,
        memberships: vec![Membership {
            org_id: org_id.clone(),
            role,
            permissions,
        }],
        created_at: now,
        updated_at: now,
        version: 0,
    };
    profile.apply(&mut user);
    match state.store.create_user(&user).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => return Err(email_taken()),
        Err(e) => return Err(e.into()),
    }
    Audit::by(&caller, AuditEvent::MemberCreated)
        .target(&user.id)
        .detail("email", &user.email)
        .detail(
            "role",
            if role == Role::Admin {
                "admin"
            } else {
                "member"
            },
        )
        .record(&state, &org_id)
        .await;
    Ok((StatusCode::CREATED, Json(member_json(&user, &org_id))).into_response())
}

/// Removes a member from the organization: their sessions there end and their service tokens
/// there stop working, on every replica, before this returns.
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, user_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let org = administered_org(&state, &caller, &org_id).await?;
    if !plausible_id(&user_id) {
        return Err(ApiError::NotFound);
    }
    if user_id == caller.user.id {
        return Err(ApiError::bad_request(
            "cannot_remove_self",
            "Administrators cannot remove themselves; ask another administrator.",
        ));
    }
    let member = state
        .store
        .get_user(&user_id)
        .await?
        .filter(|u| u.membership(&org_id).is_some())
        .ok_or(ApiError::NotFound)?;
    let now = state.clock.now();
    modify_user(state.store.as_ref(), &member.id, |u| {
        u.memberships.retain(|m| m.org_id != org_id);
        u.updated_at = now;
    })
    .await?
    .ok_or(ApiError::NotFound)?;
    // Membership is checked on every lookup, so the user invalidation alone stops both
    // sessions and tokens; ending the sessions also lists them with the reason.
    revoke(
        &state.cache,
        &state.store,
        &Invalidation::User(member.id.clone()),
    )
    .await?;
    end_user_sessions(&state, &org, &member.id, EndReason::MemberRemoved, None).await?;
    Audit::by(&caller, AuditEvent::MemberRemoved)
        .target(&member.id)
        .detail("email", &member.email)
        .record(&state, &org_id)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! `PATCH /auth/api/v1/me`: the "Account Information" card. Any subset of the profile fields;
//! every field that breaks a rule is named in one 400, so a form can mark them all at once:
//!
//! ```json
//! {"error": "invalid_profile",
//!  "message": "email: must be a valid email address like name@example.com",
//!  "fields": {"email": "must be a valid email address like name@example.com"}}
//! ```
//!
//! The shared field parsing is also used by `members::create`.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde_json::{Map, Value};

use super::api::profile;
use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::auth::profile::{
    check_email, check_job_title, check_name, check_phone, check_timezone, Rule,
};
use crate::store::cache::revoke;
use crate::store::{modify_user, AuditEvent, Invalidation, StoreError, User};

/// Field name -> the rule it broke.
pub type FieldErrors = BTreeMap<String, String>;

/// The profile fields a client may set.
pub const PROFILE_FIELDS: [&str; 7] = [
    "first_name",
    "last_name",
    "email",
    "job_title",
    "mobile_phone",
    "business_phone",
    "timezone",
];

/// The fields a request set, validated and cleaned. `None`: not in the request. For the
/// optional fields, `Some(None)` clears the value (`null` or `""`).
#[derive(Debug, Default, Clone)]
pub struct ProfileChanges {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub job_title: Option<Option<String>>,
    pub mobile_phone: Option<Option<String>>,
    pub business_phone: Option<Option<String>>,
    pub timezone: Option<Option<String>>,
}

impl ProfileChanges {
    pub fn apply(&self, user: &mut User) {
        let set = |target: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                target.clone_from(v);
            }
        };
        set(&mut user.first_name, &self.first_name);
        set(&mut user.last_name, &self.last_name);
        set(&mut user.email, &self.email);
        let set_opt = |target: &mut Option<String>, v: &Option<Option<String>>| {
            if let Some(v) = v {
                target.clone_from(v);
            }
        };
        set_opt(&mut user.job_title, &self.job_title);
        set_opt(&mut user.mobile_phone, &self.mobile_phone);
        set_opt(&mut user.business_phone, &self.business_phone);
        set_opt(&mut user.timezone, &self.timezone);
    }
}

fn required(
    body: &Map<String, Value>,
    field: &str,
    check: fn(&str) -> Result<String, Rule>,
    errors: &mut FieldErrors,
) -> Option<String> {
    match body.get(field)? {
        Value::String(s) => check(s)
            .map_err(|rule| errors.insert(field.to_string(), rule.to_string()))
            .ok(),
        _ => {
            errors.insert(field.to_string(), "must be a string".to_string());
            None
        }
    }
}

fn optional(
    body: &Map<String, Value>,
    field: &str,
    check: fn(&str) -> Result<Option<String>, Rule>,
    errors: &mut FieldErrors,
) -> Option<Option<String>> {
    match body.get(field)? {
        Value::Null => Some(None),
        Value::String(s) => check(s)
            .map_err(|rule| errors.insert(field.to_string(), rule.to_string()))
            .ok(),
        _ => {
            errors.insert(field.to_string(), "must be a string or null".to_string());
            None
        }
    }
}

/// Reads the profile fields of `body`. Keys that are neither profile fields nor in `also`
/// are errors ("unknown field"); keys in `also` are left to the caller.
pub fn parse_profile(
    body: &Map<String, Value>,
    also: &[&str],
    errors: &mut FieldErrors,
) -> ProfileChanges {
    for key in body.keys() {
        if !PROFILE_FIELDS.contains(&key.as_str()) && !also.contains(&key.as_str()) {
            errors.insert(key.clone(), "unknown field".to_string());
        }
    }
    ProfileChanges {
        first_name: required(body, "first_name", check_name, errors),
        last_name: required(body, "last_name", check_name, errors),
        email: required(body, "email", check_email, errors),
        job_title: optional(body, "job_title", check_job_title, errors),
        mobile_phone: optional(body, "mobile_phone", check_phone, errors),
        business_phone: optional(body, "business_phone", check_phone, errors),
        timezone: optional(body, "timezone", check_timezone, errors),
    }
}

/// The 400 for field errors: `invalid_profile` with `fields`, and every problem in `message`.
pub fn invalid_profile(errors: &FieldErrors) -> ApiError {
    let message = errors
        .iter()
        .map(|(field, rule)| format!("{field}: {rule}"))
        .collect::<Vec<_>>()
        .join("; ");
    let fields: Map<String, Value> = errors
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut details = Map::new();
    details.insert("fields".into(), Value::Object(fields));
    ApiError::Invalid {
        code: "invalid_profile",
        message,
        details,
    }
}

/// 409 for an email address another account has (compared case-insensitively).
pub fn email_taken() -> ApiError {
    ApiError::Conflict {
        code: "email_taken",
        message: "Another account uses that email address.",
    }
}

/// `PATCH /auth/api/v1/me` -> 200 with the whole profile.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let mut errors = FieldErrors::new();
    let changes = parse_profile(&body, &[], &mut errors);
    if !errors.is_empty() {
        return Err(invalid_profile(&errors));
    }
    let now = state.clock.now();
    let updated = match modify_user(state.store.as_ref(), &caller.user.id, |u| {
        changes.apply(u);
        u.updated_at = now;
    })
    .await
    {
        Ok(Some(u)) => u,
        Ok(None) => return Err(ApiError::Unauthenticated),
        Err(StoreError::Conflict(_)) => return Err(email_taken()),
        Err(e) => return Err(e.into()),
    };
    let old_email = &caller.user.email;
    if &updated.email != old_email {
        // Cached identities carry the email (X-Auth-User-Email, the JWT): drop them everywhere.
        revoke(
            &state.cache,
            &state.store,
            &Invalidation::User(updated.id.clone()),
        )
        .await?;
        Audit::by(&caller, AuditEvent::EmailChanged)
            .target(&updated.id)
            .detail("old_email", old_email)
            .detail("new_email", &updated.email)
            .record_in(
                &state,
                updated.memberships.iter().map(|m| m.org_id.as_str()),
            )
            .await;
    }
    Ok(Json(profile(&updated)))
}

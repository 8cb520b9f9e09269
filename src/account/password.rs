//! `POST /auth/api/v1/me/password` (product page, "Changing Your Password"): the current
//! password is verified behind the same brute-force gate as a login (a wrong one counts toward
//! the account's login failure limit), the new one must meet every complexity rule (all unmet
//! rules are listed at once), and then every other session of the person ends, on every
//! replica, while the caller's own session stays signed in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::api::end_user_sessions;
use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::login::{account_key, reserve_attempt};
use super::AppState;
use crate::auth::password::{new_password_violations, MAX_PASSWORD_BYTES};
use crate::store::{modify_user, AuditEvent, EndReason, User};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    current_password: String,
    new_password: String,
}

fn weak_password(broken: &[&'static str]) -> ApiError {
    let mut details = Map::new();
    details.insert(
        "rules".into(),
        Value::Array(broken.iter().map(|r| Value::from(*r)).collect()),
    );
    ApiError::Invalid {
        code: "weak_password",
        message: format!("new_password must have: {}", broken.join(", ")),
        details,
    }
}

pub async fn change(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<PasswordChange>,
) -> Result<Response, ApiError> {
    if req.current_password.is_empty() || req.current_password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(
            "invalid_password",
            "current_password: required, at most 1024 bytes",
        ));
    }
    // The rules first: they cost nothing and count as no failed attempt.
    let broken =
        new_password_violations(&req.new_password, &caller.user.email, &req.current_password);
    if !broken.is_empty() {
        return Err(weak_password(&broken));
    }

    let now = state.clock.now();
    let acct_key = account_key(&caller.user.email);
    reserve_attempt(&state, &acct_key, None, now).await?;
    let verified_hash = caller.user.password_hash.clone();
    let passwords = state.passwords.clone();
    let current = req.current_password.clone();
    let stored = verified_hash.clone();
    let ok = tokio::task::spawn_blocking(move || passwords.verify(&current, stored.as_deref()))
        .await
        .map_err(ApiError::internal)?;
    if !ok {
        // Counted by `reserve_attempt` already.
        return Err(ApiError::forbidden(
            "invalid_current_password",
            "The current password is wrong.",
        ));
    }
    state.store.clear_failures(&acct_key).await?;

    let passwords = state.passwords.clone();
    let new = req.new_password.clone();
    let new_hash = tokio::task::spawn_blocking(move || passwords.hash(&new))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    // Only replace the hash the current password was verified against: if another change won
    // meanwhile, this one was authorized by a password that is no longer current.
    let replaced = Arc::new(AtomicBool::new(false));
    let flag = replaced.clone();
    let user = modify_user(state.store.as_ref(), &caller.user.id, move |u| {
        let same = u.password_hash == verified_hash;
        flag.store(same, Ordering::SeqCst);
        if same {
            u.password_hash = Some(new_hash.clone());
            u.updated_at = now;
        }
    })
    .await?
    .ok_or(ApiError::Unauthenticated)?;
    if !replaced.load(Ordering::SeqCst) {
        return Err(ApiError::Conflict {
            code: "password_changed_concurrently",
            message: "The password was changed meanwhile; sign in again and retry.",
        });
    }

    end_other_sessions(&state, &user, &caller.session.id).await?;
    Audit::by(&caller, AuditEvent::PasswordChanged)
        .target(&user.id)
        .record_in(&state, user.memberships.iter().map(|m| m.org_id.as_str()))
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Ends every active session of `user` except `keep`, with reason `password_changed`, and
/// tells every replica before returning. Sessions only exist in the user's organizations.
async fn end_other_sessions(state: &AppState, user: &User, keep: &str) -> Result<(), ApiError> {
    for m in &user.memberships {
        if let Some(org) = state.store.get_org(&m.org_id).await? {
            end_user_sessions(
                state,
                &org,
                &user.id,
                EndReason::PasswordChanged,
                Some(keep),
            )
            .await?;
        }
    }
    Ok(())
}

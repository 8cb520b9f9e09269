//! The second step of a login: `POST /auth/login/2fa` (a code or a backup code),
//! `POST /auth/login/2fa/resend` (a new SMS code), and, when the organization requires 2FA and
//! the user has none yet, enrolment inside the login: `POST /auth/login/2fa/enroll/totp`,
//! `/enroll/sms` and `/enroll/verify`. Each takes the `challenge` the password step returned;
//! only a completed step issues a session, exactly as a password-only login does.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{client_ip, user_agent, JsonBody};
use super::login::{account_key, issue_session};
use super::two_factor::{self, Proof};
use super::AppState;
use crate::store::{AuditEvent, Organization};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    challenge: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    backup_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    challenge: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    challenge: String,
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    challenge: String,
    code: String,
}

async fn org_of(state: &AppState, org_id: &str) -> Result<Organization, ApiError> {
    state.store.get_org(org_id).await?.ok_or_else(|| {
        ApiError::bad_request(
            "invalid_challenge",
            "The login challenge is not valid; sign in again.",
        )
    })
}

fn count_login(state: &AppState, result: &str) {
    state.metrics.logins.with_label_values(&[result]).inc();
}

pub async fn answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    let (key, challenge, user) = two_factor::read_challenge(&state, &body.challenge).await?;
    let (ip, ua) = (client_ip(&headers), user_agent(&headers));
    let factor = two_factor::answer_challenge(
        &state,
        &key,
        &challenge,
        &user,
        &Proof::new(body.code, body.backup_code),
        &account_key(&user.email),
        |event| Audit::anonymous(event, &ip, &ua).detail("during", "login"),
    )
    .await
    .inspect_err(|_| count_login(&state, "invalid_second_factor"))?;
    let org = org_of(&state, &challenge.org_id).await?;
    let done = issue_session(&state, &headers, &user, &org, Some(factor)).await?;
    count_login(&state, "success");
    Ok(done.json_response(None))
}

pub async fn resend(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ChallengeBody>,
) -> Result<Response, ApiError> {
    let (_, challenge, user) = two_factor::read_challenge(&state, &body.challenge).await?;
    two_factor::resend(&state, &challenge, &user).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn enrol_totp(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ChallengeBody>,
) -> Result<Json<Value>, ApiError> {
    let (_, challenge, user) = two_factor::read_challenge(&state, &body.challenge).await?;
    Ok(Json(
        two_factor::login_enrol_totp(&state, &challenge, &user).await?,
    ))
}

pub async fn enrol_sms(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<PhoneBody>,
) -> Result<Response, ApiError> {
    let (_, challenge, user) = two_factor::read_challenge(&state, &body.challenge).await?;
    two_factor::login_enrol_sms(&state, &challenge, &user, &body.phone).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Completes the enrolment and the login at once: the answer carries the session and the
/// backup codes (shown this once).
pub async fn enrol_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Response, ApiError> {
    let (key, challenge, user) = two_factor::read_challenge(&state, &body.challenge).await?;
    let audit = Audit::anonymous(
        AuditEvent::TwoFactorEnabled,
        &client_ip(&headers),
        &user_agent(&headers),
    )
    .actor(&user.id);
    let verified =
        two_factor::login_enrol_verify(&state, &challenge, &user, &body.code, audit).await;
    let (codes, factor) = match verified {
        Ok(v) => v,
        Err(e) => {
            two_factor::fail_challenge(&state, &key, &account_key(&user.email)).await?;
            return Err(e);
        }
    };
    // The challenge is used up by this login.
    state
        .store
        .take_ticket(&key, state.clock.now())
        .await?
        .ok_or_else(|| {
            ApiError::bad_request("invalid_challenge", "The login challenge was already used.")
        })?;
    let org = org_of(&state, &challenge.org_id).await?;
    let done = issue_session(&state, &headers, &user, &org, Some(factor)).await?;
    count_login(&state, "success");
    Ok(done.json_response(Some(codes)))
}

//! The second step of a login: `POST /auth/login/2fa` (a code or a backup code),
//! `POST /auth/login/2fa/resend` (a new SMS code), and, when the organization requires 2FA and
//! the user has none yet, enrolment inside the login: `POST /auth/login/2fa/enroll/totp`,
//! `/enroll/sms` and `/enroll/verify`. Each takes the `challenge` the password step returned;
//! only a completed step issues a session, exactly as a password-only login does.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{client_ip, user_agent, JsonBody};
use super::login::{account_key, issue_session};
use super::two_factor::{
    count, enrol_key, put_ticket, read_ticket, send_sms_code, start_sms, start_totp, verify_proof,
    verify_sms_enrolment, verify_totp_enrolment, PendingEnrolment, Proof, CHALLENGE_TTL_SECS,
    MAX_CODE_ATTEMPTS,
};
use super::AppState;
use crate::store::{
    AuditEvent, Organization, Provider, SecondFactor, TwoFactorMethod, TwoFactorPolicy, User,
};

/// A login challenge's ticket key: `2fa:challenge:{sha256 of the secret}` (the client holds
/// the secret, the store only its hash).
fn challenge_key(secret_hash: &str) -> String {
    format!("2fa:challenge:{secret_hash}")
}

/// A login that passed its password and waits for the second factor (or for enrolment, when
/// the organization requires 2FA and the user has none).
#[derive(Serialize, Deserialize)]
pub struct Challenge {
    pub user_id: String,
    pub org_id: String,
    /// `None`: the user must enrol first.
    pub method: Option<TwoFactorMethod>,
    /// The Quick Login provider of the first step (`None`: a password).
    #[serde(default)]
    pub federated: Option<Provider>,
}

/// What the password step answers when a second step is needed.
pub async fn open_challenge(
    state: &AppState,
    user: &User,
    org: &Organization,
    federated: Option<Provider>,
) -> Result<Option<Value>, ApiError> {
    let method = state.store.get_two_factor(&user.id).await?;
    let needs_enrolment = method.is_none() && org.two_factor == TwoFactorPolicy::Required;
    if method.is_none() && !needs_enrolment {
        return Ok(None);
    }
    let secret = crate::auth::secret::new_session_secret();
    let challenge = Challenge {
        user_id: user.id.clone(),
        org_id: org.id.clone(),
        method: method.as_ref().map(|m| m.method),
        federated,
    };
    let key = challenge_key(&crate::auth::secret::hash_secret(&secret));
    put_ticket(state, &key, &challenge, CHALLENGE_TTL_SECS).await?;
    count(state, "challenge_issued");
    match method {
        Some(m) => {
            if m.method == TwoFactorMethod::Sms {
                send_sms_code(state, user, m.phone.as_deref().unwrap_or("")).await?;
            }
            Ok(Some(json!({
                "status": "2fa_required",
                "method": m.method,
                "challenge": secret,
            })))
        }
        None => Ok(Some(json!({
            "status": "2fa_enrollment_required",
            "methods": if state.sms.is_some() { vec!["totp", "sms"] } else { vec!["totp"] },
            "challenge": secret,
        }))),
    }
}

const NOT_VALID: &str = "The login challenge is not valid; sign in again.";
const EXPIRED: &str = "The login challenge has expired; sign in again.";
const USED: &str = "The login challenge was already used.";
const NO_ENROLMENT: &str = "This login does not need an enrolment.";

fn invalid_challenge(message: &'static str) -> ApiError {
    ApiError::bad_request("invalid_challenge", message)
}

/// Enrolment inside a login is only for a login that has no second factor yet.
fn require_enrolment(challenge: &Challenge) -> Result<(), ApiError> {
    match challenge.method {
        Some(_) => Err(invalid_challenge(NO_ENROLMENT)),
        None => Ok(()),
    }
}

/// Takes the challenge: whoever does so completes this login, and nobody else can.
async fn use_up_challenge(state: &AppState, key: &str) -> Result<(), ApiError> {
    state
        .store
        .take_ticket(key, state.clock.now())
        .await?
        .map(|_| ())
        .ok_or_else(|| invalid_challenge(USED))
}

fn challenge_hash(secret: &str) -> Result<String, ApiError> {
    if !crate::auth::secret::is_well_formed_session_secret(secret) {
        return Err(invalid_challenge(NOT_VALID));
    }
    Ok(crate::auth::secret::hash_secret(secret))
}

/// The challenge a request answers: the body's, else the cookie's.
fn challenge_secret(headers: &HeaderMap, body: Option<String>) -> Result<String, ApiError> {
    body.or_else(|| super::extract::cookie(headers, super::oauth::CHALLENGE_COOKIE))
        .ok_or_else(|| invalid_challenge(NOT_VALID))
}

/// Looks a challenge up without using it.
pub async fn read_challenge(
    state: &AppState,
    headers: &HeaderMap,
    body_secret: Option<String>,
) -> Result<(String, Challenge, User), ApiError> {
    let secret = challenge_secret(headers, body_secret)?;
    let hash = challenge_hash(&secret)?;
    let key = challenge_key(&hash);
    let ticket = state
        .store
        .get_ticket(&key, state.clock.now())
        .await?
        .ok_or_else(|| invalid_challenge(EXPIRED))?;
    let challenge: Challenge = read_ticket(&ticket)?;
    let user = state
        .store
        .get_user(&challenge.user_id)
        .await?
        .ok_or_else(|| invalid_challenge(NOT_VALID))?;
    Ok((key, challenge, user))
}

/// Counts a wrong answer against the challenge (it dies after 5) and the account's
/// brute-force limit.
pub async fn fail_challenge(
    state: &AppState,
    key: &str,
    account_key: &str,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    state.store.fail_ticket(key, now, MAX_CODE_ATTEMPTS).await?;
    state
        .store
        .record_failure(account_key, now, state.login.failure_window_seconds)
        .await?;
    Ok(())
}

/// Checks the second factor of a challenge; on success the challenge is used up.
pub async fn answer_challenge(
    state: &AppState,
    key: &str,
    challenge: &Challenge,
    user: &User,
    proof: &Proof,
    account_key: &str,
    audit: impl Fn(AuditEvent) -> Audit,
) -> Result<SecondFactor, ApiError> {
    let method = match challenge.method {
        Some(_) => state.store.get_two_factor(&user.id).await?,
        None => None,
    }
    .ok_or_else(|| invalid_challenge(NOT_VALID))?;
    match verify_proof(state, user, &method, proof, audit).await {
        Ok(factor) => {
            use_up_challenge(state, key).await?;
            Ok(factor)
        }
        Err(e) => {
            fail_challenge(state, key, account_key).await?;
            Err(e)
        }
    }
}

async fn resend_sms_code(
    state: &AppState,
    challenge: &Challenge,
    user: &User,
) -> Result<(), ApiError> {
    let method = state
        .store
        .get_two_factor(&user.id)
        .await?
        .filter(|m| {
            challenge.method == Some(TwoFactorMethod::Sms) && m.method == TwoFactorMethod::Sms
        })
        .ok_or_else(|| {
            ApiError::bad_request("no_sms_method", "This login does not use SMS codes.")
        })?;
    send_sms_code(state, user, method.phone.as_deref().unwrap_or("")).await
}

/// Enrolment inside a login (policy `required`): the same steps as the account API.
pub async fn login_enrol_totp(
    state: &AppState,
    challenge: &Challenge,
    user: &User,
) -> Result<Value, ApiError> {
    require_enrolment(challenge)?;
    start_totp(state, user).await
}

pub async fn login_enrol_sms(
    state: &AppState,
    challenge: &Challenge,
    user: &User,
    phone: &str,
) -> Result<(), ApiError> {
    require_enrolment(challenge)?;
    start_sms(state, user, phone).await
}

/// Completes an enrolment inside a login; returns the backup codes and the factor used.
pub async fn login_enrol_verify(
    state: &AppState,
    challenge: &Challenge,
    user: &User,
    code: &str,
    audit: Audit,
) -> Result<(Vec<String>, SecondFactor), ApiError> {
    require_enrolment(challenge)?;
    let pending: PendingEnrolment = match state
        .store
        .get_ticket(&enrol_key(&user.id), state.clock.now())
        .await?
    {
        Some(t) => read_ticket(&t)?,
        None => {
            return Err(ApiError::bad_request(
                "no_pending_enrolment",
                "Start the enrolment first.",
            ))
        }
    };
    match pending.method {
        TwoFactorMethod::Totp => Ok((
            verify_totp_enrolment(state, user, code, audit).await?,
            SecondFactor::Totp,
        )),
        TwoFactorMethod::Sms => Ok((
            verify_sms_enrolment(state, user, code, audit).await?,
            SecondFactor::Sms,
        )),
    }
}

// --- the handlers -----------------------------------------------------------------------------

// `challenge` may be left out after a Quick Login sign-in: it then comes from the HttpOnly
// `xgw_login_challenge` cookie the callback set (`oauth::CHALLENGE_COOKIE`).

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerBody {
    #[serde(default)]
    challenge: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    backup_code: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChallengeBody {
    #[serde(default)]
    challenge: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    #[serde(default)]
    challenge: Option<String>,
    phone: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    #[serde(default)]
    challenge: Option<String>,
    code: String,
}

async fn org_of(state: &AppState, org_id: &str) -> Result<Organization, ApiError> {
    state
        .store
        .get_org(org_id)
        .await?
        .ok_or_else(|| invalid_challenge(NOT_VALID))
}

/// The session for a login whose second step just succeeded.
async fn complete_login(
    state: &AppState,
    headers: &HeaderMap,
    challenge: &Challenge,
    user: &User,
    factor: SecondFactor,
) -> Result<super::login::LoggedIn, ApiError> {
    let org = org_of(state, &challenge.org_id).await?;
    let done = issue_session(
        state,
        headers,
        user,
        &org,
        Some(factor),
        challenge.federated,
    )
    .await?;
    count_login(state, "success");
    Ok(done)
}

/// A completed login no longer needs the challenge cookie (if it came through one).
fn clear_challenge_cookie(state: &AppState, mut resp: Response) -> Response {
    let clear = super::oauth::challenge_cookie(state, "", 0);
    if let Ok(v) = axum::http::HeaderValue::from_str(&clear) {
        resp.headers_mut().append(axum::http::header::SET_COOKIE, v);
    }
    resp
}

fn count_login(state: &AppState, result: &str) {
    state.metrics.logins.with_label_values(&[result]).inc();
}

pub async fn answer(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AnswerBody>,
) -> Result<Response, ApiError> {
    let (key, challenge, user) = read_challenge(&state, &headers, body.challenge).await?;
    let (ip, ua) = (client_ip(&headers), user_agent(&headers));
    let factor = answer_challenge(
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
    let done = complete_login(&state, &headers, &challenge, &user, factor).await?;
    Ok(clear_challenge_cookie(&state, done.json_response(None)))
}

pub async fn resend(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ChallengeBody>,
) -> Result<Response, ApiError> {
    let (_, challenge, user) = read_challenge(&state, &headers, body.challenge).await?;
    resend_sms_code(&state, &challenge, &user).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn enrol_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<ChallengeBody>,
) -> Result<Json<Value>, ApiError> {
    let (_, challenge, user) = read_challenge(&state, &headers, body.challenge).await?;
    Ok(Json(login_enrol_totp(&state, &challenge, &user).await?))
}

pub async fn enrol_sms(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<PhoneBody>,
) -> Result<Response, ApiError> {
    let (_, challenge, user) = read_challenge(&state, &headers, body.challenge).await?;
    login_enrol_sms(&state, &challenge, &user, &body.phone).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Completes the enrolment and the login at once: the answer carries the session and the
/// backup codes (shown this once).
pub async fn enrol_verify(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Result<Response, ApiError> {
    let (key, challenge, user) = read_challenge(&state, &headers, body.challenge).await?;
    let audit = Audit::anonymous(
        AuditEvent::TwoFactorEnabled,
        &client_ip(&headers),
        &user_agent(&headers),
    )
    .actor(&user.id);
    let verified = login_enrol_verify(&state, &challenge, &user, &body.code, audit).await;
    let (codes, factor) = match verified {
        Ok(v) => v,
        Err(e) => {
            fail_challenge(&state, &key, &account_key(&user.email)).await?;
            return Err(e);
        }
    };
    use_up_challenge(&state, &key).await?;
    let done = complete_login(&state, &headers, &challenge, &user, factor).await?;
    Ok(clear_challenge_cookie(
        &state,
        done.json_response(Some(codes)),
    ))
}

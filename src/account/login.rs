//! Login and logout: `GET /auth/login` (the page), `POST /auth/login` (JSON or form),
//! `POST /auth/logout`.
//!
//! A login runs the steps of `auth::login`: brute-force check (per account and per IP; the
//! account's attempt is counted atomically before the password check), password
//! verification on the blocking pool (a dummy hash for unknown accounts, so both cost the same),
//! then a fresh session with a new random id. Wrong password and unknown email look identical.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{client_ip, user_agent, JsonOrForm};
use super::AppState;
use crate::auth::login::{after_password, safe_next, LoginStep};
use crate::auth::password::MAX_PASSWORD_BYTES;
use crate::auth::ratelimit::Backoff;
use crate::auth::secret::{hash_secret, new_csrf_token, new_id, new_session_secret};
use crate::clock::UnixTime;
use crate::store::cache::revoke;
use crate::store::{
    AuditEvent, EndReason, FailureCount, Invalidation, Organization, Provider, SecondFactor,
    Session, User,
};

const MAX_EMAIL_BYTES: usize = 254;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    email: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

pub async fn login_page() -> Response {
    // The page reads `next` and `error` itself; nothing from the query is echoed into HTML.
    super::ui::html(super::ui::LOGIN_HTML)
}

/// The failure counter of an account, shared by login and password change.
pub(super) fn account_key(email: &str) -> String {
    format!("login:account:{}", email.trim().to_lowercase())
}

fn ip_key(ip: &str) -> String {
    format!("login:ip:{ip}")
}

pub async fn login(
    State(state): State<AppState>,
    parts: axum::http::request::Parts,
    body: JsonOrForm<LoginRequest>,
) -> Result<Response, ApiError> {
    let (req, is_form) = match body {
        JsonOrForm::Json(r) => (r, false),
        JsonOrForm::Form(r) => (r, true),
    };
    let next = safe_next(req.next.as_deref());
    let result = login_inner(&state, &parts, &req).await;
    state
        .metrics
        .logins
        .with_label_values(&[match &result {
            Ok(LoginOutcome::SecondStep(_)) => "second_factor_required",
            Ok(LoginOutcome::Done(_)) => "success",
            Err(ApiError::InvalidCredentials) => "invalid_credentials",
            Err(ApiError::RateLimited { .. }) => "rate_limited",
            Err(ApiError::BadRequest { .. }) => "bad_request",
            Err(ApiError::Unavailable) => "store_unavailable",
            Err(_) => "error",
        }])
        .inc();
    match (result, is_form) {
        (Ok(LoginOutcome::Done(done)), false) => Ok(done.json_response(None)),
        (Ok(LoginOutcome::Done(done)), true) => {
            let mut resp = Redirect::to(&next).into_response();
            done.set_cookie(resp.headers_mut());
            Ok(resp)
        }
        (Ok(LoginOutcome::SecondStep(body)), false) => Ok(Json(body).into_response()),
        // The second step needs the page's script; a form post without it cannot carry on.
        (Ok(LoginOutcome::SecondStep(_)), true) => Ok(Redirect::to(&format!(
            "/auth/login?error=second_step_needs_javascript&next={}",
            crate::web::query_escape(&next)
        ))
        .into_response()),
        (Err(e), true) => {
            let code = match e {
                ApiError::InvalidCredentials => "invalid_credentials",
                ApiError::RateLimited { .. } => "too_many_attempts",
                ApiError::BadRequest { .. } => "invalid_request",
                _ => "unavailable",
            };
            Ok(Redirect::to(&format!(
                "/auth/login?error={code}&next={}",
                crate::web::query_escape(&next)
            ))
            .into_response())
        }
        (Err(e), false) => Err(e),
    }
}

/// What a correct password leads to.
enum LoginOutcome {
    /// A session was issued.
    Done(LoggedIn),
    /// The second step (`two_factor::open_challenge`): a code, or enrolment first.
    SecondStep(serde_json::Value),
}

/// A successful login, ready to answer.
pub(super) struct LoggedIn {
    user_id: String,
    csrf_token: String,
    cookie: String,
}

impl LoggedIn {
    /// The `Set-Cookie` value of the new session.
    pub(super) fn cookie(&self) -> String {
        self.cookie.clone()
    }

    fn set_cookie(&self, headers: &mut HeaderMap) {
        if let Ok(v) = HeaderValue::from_str(&self.cookie) {
            headers.append(header::SET_COOKIE, v);
        }
    }

    /// The login answer; `backup_codes` when the login included a 2FA enrolment.
    pub(super) fn json_response(self, backup_codes: Option<Vec<String>>) -> Response {
        let mut body = serde_json::json!({
            "status": "ok",
            "user_id": self.user_id,
            "csrf_token": self.csrf_token,
        });
        if let (Some(codes), serde_json::Value::Object(map)) = (backup_codes, &mut body) {
            map.insert("backup_codes".into(), serde_json::json!(codes));
        }
        let mut resp = Json(body).into_response();
        self.set_cookie(resp.headers_mut());
        resp
    }
}

/// Opens a session for a login that passed every step: a fresh random id, the org's lifetime,
/// the account's failure count cleared, and an audit entry.
pub(super) async fn issue_session(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    org: &Organization,
    second_factor: Option<SecondFactor>,
    federated: Option<Provider>,
) -> Result<LoggedIn, ApiError> {
    state
        .store
        .clear_failures(&account_key(&user.email))
        .await?;
    let now = state.clock.now();
    let secret = new_session_secret();
    let session = Session {
        id: new_id("ses"),
        token_hash: hash_secret(&secret),
        user_id: user.id.clone(),
        org_id: org.id.clone(),
        ip: client_ip(headers),
        user_agent: user_agent(headers),
        created_at: now,
        last_activity_at: now,
        csrf_token: new_csrf_token(),
        ended_at: None,
        ended_reason: None,
        second_factor,
        federated,
    };
    state.store.create_session(&session).await?;
    let mut audit = Audit::anonymous(AuditEvent::LoginSucceeded, &session.ip, &session.user_agent)
        .actor(&user.id)
        .target(&session.id);
    if let Some(f) = second_factor {
        audit = audit.detail("second_factor", f.amr());
    }
    if let Some(p) = federated {
        audit = audit.detail("provider", p.as_str());
    }
    audit.record(state, &session.org_id).await;
    Ok(LoggedIn {
        user_id: user.id.clone(),
        csrf_token: session.csrf_token,
        cookie: state.session_cookie(&secret, org.session_lifetime_secs()),
    })
}

/// The brute-force gate in front of a password check (login, password change): refuses with
/// 429 while the account (or `ip_key`) backs off, then counts this attempt as a failure of the
/// account, atomically. The check and a failure recorded after the (slow) password check would
/// be two store calls, and concurrent guesses would all pass the check; so the attempt is
/// counted first, and only goes on if no racing attempt took the last allowed slot. A right
/// password clears the count again (`clear_failures`).
pub(super) async fn reserve_attempt(
    state: &AppState,
    acct_key: &str,
    ip_key: Option<&str>,
    now: UnixTime,
) -> Result<(), ApiError> {
    let window = state.login.failure_window_seconds;
    let per_account = Backoff {
        threshold: state.login.max_failures_per_account,
        base_secs: state.login.backoff_base_seconds,
        window_secs: window,
    };
    let per_ip = Backoff {
        threshold: state.login.max_failures_per_ip,
        ..per_account
    };
    let acct_before = state.store.failures(acct_key, now, window).await?;
    let mut wait = per_account.retry_after(acct_before, now);
    if let Some(ip_key) = ip_key {
        let ip_wait = per_ip.retry_after(state.store.failures(ip_key, now, window).await?, now);
        wait = wait.max(ip_wait);
    }
    if let Some(retry_after) = wait {
        return Err(ApiError::RateLimited { retry_after });
    }
    let reserved = state.store.record_failure(acct_key, now, window).await?;
    let prior = FailureCount {
        count: reserved.count.saturating_sub(1),
        last_failure_at: if reserved.count.saturating_sub(1) == acct_before.count {
            acct_before.last_failure_at
        } else {
            now
        },
    };
    match per_account.retry_after(prior, now) {
        Some(retry_after) => Err(ApiError::RateLimited { retry_after }),
        None => Ok(()),
    }
}

async fn login_inner(
    state: &AppState,
    parts: &axum::http::request::Parts,
    req: &LoginRequest,
) -> Result<LoginOutcome, ApiError> {
    if req.email.is_empty() || req.email.len() > MAX_EMAIL_BYTES {
        return Err(ApiError::bad_request(
            "invalid_email",
            "email: required, at most 254 bytes",
        ));
    }
    if req.password.is_empty() || req.password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::bad_request(
            "invalid_password",
            "password: required, at most 1024 bytes",
        ));
    }
    let now = state.clock.now();
    let ip = client_ip(&parts.headers);
    let (acct_key, ip_key) = (account_key(&req.email), ip_key(&ip));
    let window = state.login.failure_window_seconds;
    reserve_attempt(state, &acct_key, Some(&ip_key), now).await?;

    let user = state.store.find_user_by_email(req.email.trim()).await?;
    let passwords = state.passwords.clone();
    let password = req.password.clone();
    let stored_hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let password_ok =
        tokio::task::spawn_blocking(move || passwords.verify(&password, stored_hash.as_deref()))
            .await
            .map_err(ApiError::internal)?;

    match after_password(user.as_ref(), password_ok) {
        LoginStep::Rejected => {
            // The account's failure was recorded before the password check.
            state.store.record_failure(&ip_key, now, window).await?;
            if let Some(user) = &user {
                Audit::anonymous(AuditEvent::LoginFailed, &ip, &user_agent(&parts.headers))
                    .target(&user.id)
                    .detail("reason", "invalid_credentials")
                    .record_in(state, user.memberships.iter().map(|m| m.org_id.as_str()))
                    .await;
            }
            Err(ApiError::InvalidCredentials)
        }
        LoginStep::NoOrganization => {
            // The password was right: not a failure.
            state.store.clear_failures(&acct_key).await?;

            Err(ApiError::forbidden(
                "no_organization",
                "This account belongs to no organization; ask an administrator.",
            ))
        }
        LoginStep::IssueSession { org_id, .. } => {
            let (Some(user), Some(org)) = (user, state.store.get_org(&org_id).await?) else {
                return Err(ApiError::internal(format!(
                    "membership in missing org {org_id}"
                )));
            };
            // With a second step pending, the account's failure count is kept: it is cleared
            // only once a session is issued, so knowing the password does not reset the limit
            // on guessing codes.
            if let Some(challenge) =
                super::login_2fa::open_challenge(state, &user, &org, None).await?
            {
                return Ok(LoginOutcome::SecondStep(challenge));
            }
            issue_session(state, &parts.headers, &user, &org, None, None)
                .await
                .map(LoginOutcome::Done)
        }
    }
}

/// Ends the caller's session (if any) and clears the cookie. Always 204: logging out twice,
/// or without a session, is not an error.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session_id = headers
        .get("x-auth-session-id")
        .and_then(|v| v.to_str().ok())
        .filter(|_| headers.get("x-auth-method").and_then(|v| v.to_str().ok()) == Some("session"));
    if let Some(id) = session_id {
        if let Some(ended) = state
            .store
            .end_session(id, EndReason::LoggedOut, state.clock.now())
            .await?
        {
            revoke(
                &state.cache,
                &state.store,
                &Invalidation::Session(ended.token_hash.clone()),
            )
            .await?;
            Audit::anonymous(
                AuditEvent::Logout,
                &client_ip(&headers),
                &user_agent(&headers),
            )
            .actor(&ended.user_id)
            .target(&ended.id)
            .record(&state, &ended.org_id)
            .await;
        }
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&state.session_cookie("", 0)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

//! Quick Login (Google, GitHub): signing in through a provider, and connecting or disconnecting
//! a provider account on the My Account page.
//!
//! - `GET /auth/oauth/providers` — which providers the login page may offer.
//! - `GET /auth/oauth/{provider}/start?next=` — sign in: 302 to the provider.
//! - `POST /auth/api/v1/me/identities/{provider}` — connect: `{"authorize_url"}` for the page.
//! - `GET /auth/oauth/{provider}/callback` — where the provider sends the browser back.
//! - `GET /auth/api/v1/me/identities`, `DELETE /auth/api/v1/me/identities/{provider}`.
//!
//! A flow's `state` is random and single-use: its ticket (`oauth:state:{sha256}`, 10 minutes)
//! keeps the provider, PKCE verifier, nonce, `next` and purpose server-side, and is taken before
//! anything else at the callback, so a replayed callback finds nothing. It is also bound to the
//! browser that started the flow: the ticket holds the hash of the `xgw_oauth` cookie (HttpOnly,
//! `Path=/auth/oauth/`), which the callback must present — a callback URL carried into another
//! browser fails even while the state is fresh.
//!
//! Users are found by (provider, subject) only, never by email: whoever controls a provider
//! account with our user's email must not get in. An identity linked to nobody gets no session.
//! A linked user gets exactly what a password login gives, 2FA step included: the challenge
//! secret then travels in an HttpOnly cookie for the login page (`xgw_login_challenge`),
//! never in a URL.
//!
//! Every callback is counted in `xgw_oauth_callbacks_total{provider,outcome}`. Failures are
//! written to the audit log of the user's organizations when a user is known (connecting, or a
//! linked identity that cannot sign in); before that there is no organization to file them
//! under, so they go to the log (target `xgw::oauth`), as failed logins for unknown emails do.

use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::audit::Audit;
use super::error::ApiError;
use super::extract::{client_ip, cookie, user_agent, Caller};
use super::login::issue_session;
use super::two_factor::{put_ticket, read_ticket};
use super::AppState;
use crate::auth::login::{after_password, safe_next, LoginStep};
use crate::auth::secret::{constant_time_eq, hash_secret, is_well_formed_token, new_csrf_token};
use crate::clock::rfc3339;
use crate::oauth::{OAuthError, ProviderIdentity};
use crate::store::{
    AuditEvent, LinkOutcome, LinkedIdentity, Provider, UnlinkOutcome, User, MAX_EMAIL_LEN,
    MAX_SUBJECT_LEN,
};

/// How long a started flow may take at the provider.
const STATE_TTL_SECS: i64 = 600;
/// Binds a flow to the browser that started it.
const BINDING_COOKIE: &str = "xgw_oauth";
/// Carries a login challenge from a provider sign-in to the login page's 2FA step.
pub const CHALLENGE_COOKIE: &str = "xgw_login_challenge";
/// Flows one client IP may start per minute. Each start stores a ticket for 10 minutes, so
/// without a bound anyone could fill the store by requesting `/start` in a loop.
const MAX_STARTS_PER_IP_MINUTE: u32 = 30;
const START_WINDOW_SECS: i64 = 60;
/// Longest `state`, `code` and `error` values read from a callback.
const MAX_STATE_LEN: usize = 128;
const MAX_CODE_LEN: usize = 2048;

fn state_key(state: &str) -> String {
    format!("oauth:state:{}", hash_secret(state))
}

/// What a flow is for.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Purpose {
    SignIn,
    /// Link the provider account to this user (who must still be signed in at the callback).
    Connect {
        user_id: String,
    },
}

/// The server-side half of a flow, under `state_key(state)`.
#[derive(Serialize, Deserialize)]
struct Flow {
    provider: Provider,
    pkce_verifier: String,
    nonce: Option<String>,
    next: String,
    /// SHA-256 of the browser's `xgw_oauth` cookie.
    binding: String,
    purpose: Purpose,
}

fn providers_of(state: &AppState) -> Vec<Provider> {
    state
        .oauth
        .as_ref()
        .map(|p| p.available())
        .unwrap_or_default()
}

/// The provider named in a path, if it is one we offer.
fn offered(state: &AppState, name: &str) -> Option<Provider> {
    Provider::parse(name).filter(|p| providers_of(state).contains(p))
}

/// A 302 (the status the OAuth specs use) with optional cookies.
fn found(location: &str, cookies: &[String]) -> Response {
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp
}

/// The login challenge cookie (`max_age` 0 with an empty secret clears it): only the login
/// endpoints get it, and never from another site.
pub fn challenge_cookie(state: &AppState, secret: &str, max_age: i64) -> String {
    state.cookie(CHALLENGE_COOKIE, secret, "/auth/login", "Strict", max_age)
}

fn login_page_with_error(code: &str, next: &str) -> String {
    format!(
        "/auth/login?error={code}&next={}",
        crate::web::query_escape(next)
    )
}

// --- starting a flow ---------------------------------------------------------------------------

/// Why a flow could not start.
enum StartError {
    Provider(OAuthError),
    Api(ApiError),
}

impl From<ApiError> for StartError {
    fn from(e: ApiError) -> Self {
        StartError::Api(e)
    }
}

/// Stores the flow and returns the provider URL and the binding cookie to set.
async fn begin(
    state: &AppState,
    headers: &HeaderMap,
    provider: Provider,
    next: String,
    purpose: Purpose,
) -> Result<(String, String), StartError> {
    let providers = state
        .oauth
        .as_ref()
        .ok_or(StartError::Api(ApiError::NotFound))?;
    let now = state.clock.now();
    let starts = state
        .store
        .record_failure(
            &format!("oauth:start:{}", client_ip(headers)),
            now,
            START_WINDOW_SECS,
        )
        .await
        .map_err(ApiError::from)?;
    if starts.count > MAX_STARTS_PER_IP_MINUTE {
        return Err(StartError::Api(ApiError::RateLimited {
            retry_after: START_WINDOW_SECS,
        }));
    }
    // One binding per browser, reused across flows, so two tabs can sign in at once.
    let binding = cookie(headers, BINDING_COOKIE)
        .filter(|v| is_well_formed_token(v))
        .unwrap_or_else(new_csrf_token);
    let flow_state = new_csrf_token();
    let auth = providers
        .authorization(provider, &flow_state)
        .await
        .ok_or(StartError::Api(ApiError::NotFound))?
        .map_err(StartError::Provider)?;
    let purpose_label = match purpose {
        Purpose::SignIn => "sign_in",
        Purpose::Connect { .. } => "connect",
    };
    let flow = Flow {
        provider,
        pkce_verifier: auth.pkce_verifier,
        nonce: auth.nonce,
        next,
        binding: hash_secret(&binding),
        purpose,
    };
    put_ticket(state, &state_key(&flow_state), &flow, STATE_TTL_SECS).await?;
    state
        .metrics
        .oauth_starts
        .with_label_values(&[provider.as_str(), purpose_label])
        .inc();
    let cookie = state.cookie(
        BINDING_COOKIE,
        &binding,
        "/auth/oauth/",
        "Lax",
        STATE_TTL_SECS,
    );
    Ok((auth.url, cookie))
}

/// `GET /auth/oauth/providers`: `{"providers": ["google", "github"]}` (configured ones only).
pub async fn providers(State(state): State<AppState>) -> Json<Value> {
    let names: Vec<&str> = providers_of(&state).iter().map(|p| p.as_str()).collect();
    Json(json!({ "providers": names }))
}

/// `GET /auth/oauth/{provider}/start?next=/path`: 302 to the provider.
pub async fn start(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.as_deref());
    let next = safe_next(params.get("next"));
    let Some(provider) = offered(&state, &name) else {
        return found(&login_page_with_error("oauth_unavailable", &next), &[]);
    };
    match begin(&state, &headers, provider, next.clone(), Purpose::SignIn).await {
        Ok((url, cookie)) => found(&url, &[cookie]),
        Err(StartError::Provider(e)) => {
            count_callback(&state, provider, e.code());
            tracing::warn!(target: "xgw::oauth", provider = provider.as_str(), error = %e, "cannot start a sign-in");
            found(&login_page_with_error(e.code(), &next), &[])
        }
        Err(StartError::Api(ApiError::RateLimited { .. })) => {
            count_callback(&state, provider, "too_many_attempts");
            found(&login_page_with_error("too_many_attempts", &next), &[])
        }
        Err(StartError::Api(e)) => {
            tracing::warn!(target: "xgw::oauth", provider = provider.as_str(), error = ?e, "cannot start a sign-in");
            found(&login_page_with_error("unavailable", &next), &[])
        }
    }
}

/// `POST /auth/api/v1/me/identities/{provider}`: starts connecting; the page navigates to
/// `authorize_url`.
pub async fn connect(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let provider = offered(&state, &name).ok_or(ApiError::NotFound)?;
    let linked = state.store.list_user_identities(&caller.user.id).await?;
    if linked.iter().any(|i| i.provider == provider) {
        return Err(ApiError::Conflict {
            code: "identity_already_connected",
            message: "An account of this provider is already connected; disconnect it first.",
        });
    }
    let purpose = Purpose::Connect {
        user_id: caller.user.id.clone(),
    };
    match begin(&state, &headers, provider, "/auth/account".into(), purpose).await {
        Ok((url, cookie)) => {
            let mut resp = Json(json!({ "authorize_url": url })).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            Ok(resp)
        }
        Err(StartError::Provider(e)) => {
            tracing::warn!(target: "xgw::oauth", provider = provider.as_str(), error = %e, "cannot start connecting");
            Err(ApiError::BadGateway {
                code: e.code(),
                message:
                    "The provider could not be reached or answered unexpectedly; try again later.",
            })
        }
        Err(StartError::Api(e)) => Err(e),
    }
}

// --- the callback ------------------------------------------------------------------------------

/// The query of a callback (or a start), parsed without failing on junk.
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(query: Option<&str>) -> Params {
        Params(
            url::form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .take(20)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The parameter if it appears exactly once.
    fn get(&self, name: &str) -> Option<&str> {
        let mut values = self.0.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    }
}

/// Where a failed flow lands.
#[derive(Clone)]
enum Landing {
    Login { next: String },
    Account,
}

struct Failure {
    code: &'static str,
    landing: Landing,
    /// The user concerned, when known (their organizations get the audit entry).
    user: Option<User>,
    detail: String,
}

impl Failure {
    fn new(code: &'static str, landing: Landing, detail: impl Into<String>) -> Self {
        Failure {
            code,
            landing,
            user: None,
            detail: detail.into(),
        }
    }

    fn about(mut self, user: User) -> Self {
        self.user = Some(user);
        self
    }
}

enum Success {
    SignedIn { cookie: String, next: String },
    SecondStep { cookie: String, location: String },
    Connected,
}

impl Success {
    fn outcome(&self) -> &'static str {
        match self {
            Success::SignedIn { .. } => "signed_in",
            Success::SecondStep { .. } => "second_factor_required",
            Success::Connected => "connected",
        }
    }
}

fn count_callback(state: &AppState, provider: Provider, outcome: &str) {
    state
        .metrics
        .oauth_callbacks
        .with_label_values(&[provider.as_str(), outcome])
        .inc();
}

/// `GET /auth/oauth/{provider}/callback?code=&state=` (or `?error=&state=`).
pub async fn callback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    parts: axum::http::request::Parts,
) -> Result<Response, ApiError> {
    let provider = Provider::parse(&name).ok_or(ApiError::NotFound)?;
    let mut parts = parts;
    let result = complete(&state, provider, &mut parts).await;
    let headers = &parts.headers;
    match result {
        Ok(success) => {
            count_callback(&state, provider, success.outcome());
            Ok(match success {
                Success::SignedIn { cookie, next } => found(&next, &[cookie]),
                Success::SecondStep { cookie, location } => found(&location, &[cookie]),
                Success::Connected => found(
                    &format!("/auth/account?connected={}", provider.as_str()),
                    &[],
                ),
            })
        }
        Err(failure) => {
            count_callback(&state, provider, failure.code);
            let location = match &failure.landing {
                Landing::Login { next } => login_page_with_error(failure.code, next),
                Landing::Account => format!("/auth/account?error={}", failure.code),
            };
            record_failure(&state, provider, headers, failure).await;
            Ok(found(&location, &[]))
        }
    }
}

async fn record_failure(state: &AppState, provider: Provider, headers: &HeaderMap, f: Failure) {
    match f.user {
        Some(user) => {
            Audit::anonymous(
                AuditEvent::OauthFailed,
                &client_ip(headers),
                &user_agent(headers),
            )
            .target(&user.id)
            .detail("provider", provider.as_str())
            .detail("reason", f.code)
            .record_for(state, &user)
            .await
        }
        None => tracing::info!(
            target: "xgw::oauth",
            provider = provider.as_str(),
            reason = f.code,
            detail = %f.detail,
            ip = %client_ip(headers),
            "quick login failed"
        ),
    }
}

/// A callback whose flow we cannot find: to the login page, `next` unknown.
fn unknown_flow(detail: &'static str) -> Failure {
    Failure::new(
        "oauth_state_invalid",
        Landing::Login { next: "/".into() },
        detail,
    )
}

fn landing_of(purpose: &Purpose, next: &str) -> Landing {
    match purpose {
        Purpose::SignIn => Landing::Login {
            next: next.to_string(),
        },
        Purpose::Connect { .. } => Landing::Account,
    }
}

async fn complete(
    state: &AppState,
    provider: Provider,
    parts: &mut axum::http::request::Parts,
) -> Result<Success, Failure> {
    let params = Params::parse(parts.uri.query());
    let flow_state = params
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= MAX_STATE_LEN)
        .ok_or_else(|| unknown_flow("no usable state parameter"))?;
    // Taken first: whatever happens next, this state cannot be used again.
    let ticket = state
        .store
        .take_ticket(&state_key(flow_state), state.clock.now())
        .await
        .map_err(|e| {
            Failure::new(
                "unavailable",
                Landing::Login { next: "/".into() },
                e.to_string(),
            )
        })?
        .ok_or_else(|| unknown_flow("unknown, expired or already used state"))?;
    let flow: Flow = read_ticket(&ticket).map_err(|_| unknown_flow("unreadable flow"))?;
    let landing = landing_of(&flow.purpose, &flow.next);
    let same_browser = cookie(&parts.headers, BINDING_COOKIE)
        .is_some_and(|c| constant_time_eq(&hash_secret(&c), &flow.binding));
    if !same_browser || flow.provider != provider {
        return Err(Failure::new(
            "oauth_state_invalid",
            landing.clone(),
            "the callback came to another browser than the one that started the flow",
        ));
    }
    if let Some(error) = params.get("error") {
        let code = if error == "access_denied" {
            "oauth_denied"
        } else {
            "oauth_failed"
        };
        let shown: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return Err(Failure::new(
            code,
            landing.clone(),
            format!("the provider answered error={shown}"),
        ));
    }
    let code = params
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= MAX_CODE_LEN)
        .ok_or_else(|| Failure::new("oauth_failed", landing.clone(), "no usable code parameter"))?;
    let providers = state.oauth.as_ref().ok_or_else(|| {
        Failure::new(
            "oauth_unavailable",
            landing.clone(),
            "no provider configured",
        )
    })?;
    let identity = providers
        .finish(
            provider,
            code,
            &flow.pkce_verifier,
            flow.nonce.as_deref(),
            state.clock.now(),
        )
        .await
        .map_err(|e| Failure::new(e.code(), landing.clone(), e.to_string()))?;
    if identity.subject.len() > MAX_SUBJECT_LEN {
        return Err(Failure::new(
            "oauth_failed",
            landing.clone(),
            "subject too long",
        ));
    }
    match flow.purpose {
        Purpose::SignIn => sign_in(state, &parts.headers, provider, identity, flow.next).await,
        Purpose::Connect { ref user_id } => {
            let caller = Caller::from_request_parts(parts, state).await.ok();
            match caller {
                Some(c) if &c.user.id == user_id => link(state, &c, provider, identity)
                    .await
                    .map_err(|f| f.about(c.user)),
                _ => Err(Failure::new(
                    "oauth_state_invalid",
                    Landing::Account,
                    "the session that started connecting is gone",
                )),
            }
        }
    }
}

/// A provider sign-in: the linked user gets what a password login gives.
async fn sign_in(
    state: &AppState,
    headers: &HeaderMap,
    provider: Provider,
    identity: ProviderIdentity,
    next: String,
) -> Result<Success, Failure> {
    let landing = || Landing::Login { next: next.clone() };
    let store_down =
        |e: crate::store::StoreError| Failure::new("unavailable", landing(), e.to_string());
    let not_linked = || {
        Failure::new(
            "oauth_not_linked",
            landing(),
            "no account is connected to this provider account",
        )
    };
    let link = state
        .store
        .identity_by_subject(provider, &identity.subject)
        .await
        .map_err(store_down)?
        .ok_or_else(not_linked)?;
    let user = state
        .store
        .get_user(&link.user_id)
        .await
        .map_err(store_down)?
        .ok_or_else(not_linked)?;
    let org_id = match after_password(Some(&user), true) {
        LoginStep::IssueSession { org_id, .. } => org_id,
        _ => {
            return Err(Failure::new(
                "no_organization",
                landing(),
                "the user belongs to no organization",
            )
            .about(user))
        }
    };
    let api_failure = |e: ApiError| Failure::new("unavailable", landing(), format!("{e:?}"));
    let org = state
        .store
        .get_org(&org_id)
        .await
        .map_err(store_down)?
        .ok_or_else(|| Failure::new("unavailable", landing(), "membership in a missing org"))?;
    if let Some(challenge) = super::login_2fa::open_challenge(state, &user, &org, Some(provider))
        .await
        .map_err(api_failure)?
    {
        return Ok(second_step(state, &challenge, &next));
    }
    let done = issue_session(state, headers, &user, &org, None, Some(provider))
        .await
        .map_err(api_failure)?;
    Ok(Success::SignedIn {
        cookie: done.cookie(),
        next,
    })
}

/// The 2FA step after a provider sign-in: the login page shows it; the challenge secret rides
/// in an HttpOnly cookie scoped to the login endpoints.
fn second_step(state: &AppState, challenge: &Value, next: &str) -> Success {
    let secret = challenge["challenge"].as_str().unwrap_or_default();
    let step = match challenge["status"].as_str() {
        Some("2fa_enrollment_required") => format!(
            "step=enroll&methods={}",
            challenge["methods"]
                .as_array()
                .map(|m| m
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default()
        ),
        _ => format!(
            "step=2fa&method={}",
            challenge["method"].as_str().unwrap_or("totp")
        ),
    };
    Success::SecondStep {
        cookie: challenge_cookie(state, secret, super::two_factor::CHALLENGE_TTL_SECS),
        location: format!("/auth/login?{step}&next={}", crate::web::query_escape(next)),
    }
}

/// Connecting: links the provider account to the signed-in caller.
async fn link(
    state: &AppState,
    caller: &Caller,
    provider: Provider,
    identity: ProviderIdentity,
) -> Result<Success, Failure> {
    let linked = LinkedIdentity {
        user_id: caller.user.id.clone(),
        provider,
        subject: identity.subject,
        email: identity.email.filter(|e| e.len() <= MAX_EMAIL_LEN),
        connected_at: state.clock.now(),
    };
    let outcome = state
        .store
        .link_identity(&linked)
        .await
        .map_err(|e| Failure::new("unavailable", Landing::Account, e.to_string()))?;
    match outcome {
        LinkOutcome::Linked => {
            Audit::by(caller, AuditEvent::IdentityConnected)
                .target(&caller.user.id)
                .detail("provider", provider.as_str())
                .detail("subject", &linked.subject)
                .record_for(state, &caller.user)
                .await;
            Ok(Success::Connected)
        }
        LinkOutcome::SubjectInUse => Err(Failure::new(
            "identity_in_use",
            Landing::Account,
            "this provider account is connected to another user",
        )),
        LinkOutcome::ProviderAlreadyLinked => Err(Failure::new(
            "identity_already_connected",
            Landing::Account,
            "an account of this provider is already connected",
        )),
    }
}

// --- the identities of the signed-in user ------------------------------------------------------

/// `GET /auth/api/v1/me/identities`.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    let identities = state.store.list_user_identities(&caller.user.id).await?;
    let available: Vec<&str> = providers_of(&state).iter().map(|p| p.as_str()).collect();
    Ok(Json(json!({
        "identities": identities.iter().map(|i| json!({
            "provider": i.provider.as_str(),
            "subject": i.subject,
            "email": i.email,
            "connected_at": rfc3339(i.connected_at),
        })).collect::<Vec<_>>(),
        "available": available,
    })))
}

/// `DELETE /auth/api/v1/me/identities/{provider}`: 204; 409 `last_login_method` when it is the
/// only way left to sign in.
pub async fn disconnect(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let provider = Provider::parse(&name).ok_or(ApiError::NotFound)?;
    let require_another = caller.user.password_hash.is_none();
    match state
        .store
        .unlink_identity(&caller.user.id, provider, require_another)
        .await?
    {
        UnlinkOutcome::Unlinked(identity) => {
            Audit::by(&caller, AuditEvent::IdentityDisconnected)
                .target(&caller.user.id)
                .detail("provider", provider.as_str())
                .detail("subject", &identity.subject)
                .record_for(&state, &caller.user)
                .await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        UnlinkOutcome::NotLinked => Err(ApiError::NotFound),
        UnlinkOutcome::LastIdentity => Err(ApiError::Conflict {
            code: "last_login_method",
            message: "This is your only way to sign in: set a password or connect another provider first.",
        }),
    }
}

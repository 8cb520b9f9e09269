//! Two-factor authentication in the account app: enrolment (authenticator app or SMS),
//! backup codes, disabling, admin reset — and the second step of a login.
//!
//! The holes well-known gateways leave open are closed here:
//! - a TOTP code is accepted once: its time step is recorded atomically, so a replay of that
//!   code (or an older one) fails on every replica;
//! - a backup code is removed in the same atomic operation that accepts it;
//! - every code has an attempt limit: a login challenge dies after 5 wrong codes (each also
//!   counts toward the account's brute-force limit), an SMS code after 5, and SMS sends are
//!   limited to 3 per 15 minutes per user and per phone number.
//!
//! Short-lived state lives in store tickets: `2fa:enrol:{user}` (a pending enrolment, 10 min)
//! and `2fa:sms:{user}` (the outstanding SMS code, 5 min). The login's second step, which
//! reuses these steps, is in `login_2fa.rs`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::api::{administered_org, end_user_sessions};
use super::audit::Audit;
use super::error::ApiError;
use super::extract::{Caller, JsonBody};
use super::AppState;
use crate::auth::identity::SecondFactor;
use crate::auth::secret::constant_time_eq;
use crate::auth::{backup_codes, totp};
use crate::store::{
    AuditEvent, EndReason, Organization, Ticket, TwoFactor, TwoFactorMethod, TwoFactorPolicy, User,
};

pub const ENROL_TTL_SECS: i64 = 600;
pub const CODE_TTL_SECS: i64 = 300;
pub const CHALLENGE_TTL_SECS: i64 = 300;
pub const MAX_CODE_ATTEMPTS: u32 = 5;
pub const SMS_SENDS_PER_WINDOW: u32 = 3;
pub const SMS_SEND_WINDOW_SECS: i64 = 900;

pub(super) fn enrol_key(user_id: &str) -> String {
    format!("2fa:enrol:{user_id}")
}

fn sms_key(user_id: &str) -> String {
    format!("2fa:sms:{user_id}")
}

fn not_available() -> ApiError {
    ApiError::forbidden(
        "two_factor_not_available",
        "Two-factor authentication is not enabled for your organization.",
    )
}

/// The gateway has no key to seal authenticator seeds with (`[secrets] key_file`).
fn totp_not_configured() -> ApiError {
    ApiError::NotConfigured {
        code: "totp_not_configured",
        message: "Authenticator apps are not available here yet; ask your administrator.",
    }
}

fn invalid_code() -> ApiError {
    ApiError::bad_request("invalid_code", "The code is wrong or has expired.")
}

pub(super) fn count(state: &AppState, event: &str) {
    state
        .metrics
        .two_factor_events
        .with_label_values(&[event])
        .inc();
}

/// A pending enrolment: what the user is setting up, until they prove it works.
#[derive(Serialize, Deserialize)]
pub(super) struct PendingEnrolment {
    pub(super) method: TwoFactorMethod,
    /// Sealed TOTP seed.
    #[serde(default)]
    pub(super) secret: Option<String>,
    #[serde(default)]
    pub(super) phone: Option<String>,
}

/// An outstanding SMS code.
#[derive(Serialize, Deserialize)]
struct SmsCode {
    code_hash: String,
    phone: String,
}

fn code_hash(user_id: &str, code: &str) -> String {
    hex::encode(Sha256::digest(
        format!("xgw-sms-code:{user_id}:{code}").as_bytes(),
    ))
}

/// Stores `value` as a fresh ticket under `key`, living `ttl_secs` from now.
pub(super) async fn put_ticket<T: Serialize>(
    state: &AppState,
    key: &str,
    value: &T,
    ttl_secs: i64,
) -> Result<(), ApiError> {
    let now = state.clock.now();
    let ticket = Ticket {
        data: serde_json::to_string(value).map_err(ApiError::internal)?,
        expires_at: now + ttl_secs,
        attempts: 0,
    };
    Ok(state.store.put_ticket(key, &ticket, now).await?)
}

pub(super) fn read_ticket<T: serde::de::DeserializeOwned>(ticket: &Ticket) -> Result<T, ApiError> {
    serde_json::from_str(&ticket.data).map_err(ApiError::internal)
}

/// `+41 79 123 45 67` → `+41*******67`: enough to recognise one's own number.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() <= 5 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..3].iter().collect();
    let tail: String = chars[chars.len() - 2..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 5))
}

/// The organization whose policy applies to a signed-in person: the session's.
async fn policy_org(state: &AppState, org_id: &str) -> Result<Organization, ApiError> {
    state
        .store
        .get_org(org_id)
        .await?
        .ok_or_else(|| ApiError::internal(format!("session of a missing org {org_id}")))
}

async fn require_available(state: &AppState, caller: &Caller) -> Result<Organization, ApiError> {
    let org = policy_org(state, &caller.session.org_id).await?;
    if org.two_factor == TwoFactorPolicy::Off {
        return Err(not_available());
    }
    Ok(org)
}

// --- shared steps, used by the account API and by the login's enrolment step -------------------

/// Starts a TOTP enrolment: a fresh seed, kept sealed for 10 minutes.
pub(super) async fn start_totp(state: &AppState, user: &User) -> Result<Value, ApiError> {
    let sealer = state.sealer.as_ref().ok_or_else(|| {
        tracing::error!("TOTP enrolment refused: [secrets] key_file is not configured");
        totp_not_configured()
    })?;
    let secret = totp::new_secret();
    let setup = totp::enrolment(&secret, &user.email).map_err(ApiError::internal)?;
    let pending = PendingEnrolment {
        method: TwoFactorMethod::Totp,
        secret: Some(sealer.seal(&secret).map_err(ApiError::internal)?),
        phone: None,
    };
    put_ticket(state, &enrol_key(&user.id), &pending, ENROL_TTL_SECS).await?;
    Ok(json!({
        "secret": setup.secret_base32,
        "otpauth_uri": setup.otpauth_uri,
        "qr_png_base64": setup.qr_png_base64,
    }))
}

/// Sends a fresh 6-digit code to `phone` (replacing any outstanding one), within the send
/// limits per user and per number.
pub(super) async fn send_sms_code(
    state: &AppState,
    user: &User,
    phone: &str,
) -> Result<(), ApiError> {
    let sender = state.sms.as_ref().ok_or_else(|| {
        ApiError::forbidden("sms_not_configured", "SMS codes are not available here.")
    })?;
    let now = state.clock.now();
    for key in [
        format!("sms-send:user:{}", user.id),
        format!("sms-send:phone:{phone}"),
    ] {
        // Counted before sending: parallel requests cannot slip past the limit.
        let sends = state
            .store
            .record_failure(&key, now, SMS_SEND_WINDOW_SECS)
            .await?;
        if sends.count > SMS_SENDS_PER_WINDOW {
            count(state, "sms_rate_limited");
            return Err(ApiError::RateLimited {
                retry_after: SMS_SEND_WINDOW_SECS,
            });
        }
    }
    let code = format!("{:06}", rand::rngs::OsRng.gen_range(0..1_000_000u32));
    let sms = SmsCode {
        code_hash: code_hash(&user.id, &code),
        phone: phone.to_string(),
    };
    put_ticket(state, &sms_key(&user.id), &sms, CODE_TTL_SECS).await?;
    let message = format!("{code} is your Xelon HQ verification code. It expires in 5 minutes.");
    if let Err(e) = sender.send(phone, &message).await {
        count(state, "sms_failed");
        tracing::warn!(error = %e, provider = sender.name(), "SMS delivery failed");
        return Err(ApiError::BadGateway {
            code: "sms_delivery_failed",
            message: "The SMS could not be sent; try again later.",
        });
    }
    count(state, "sms_sent");
    Ok(())
}

/// Checks an SMS code against the outstanding one; it is used up on success and destroyed
/// after `MAX_CODE_ATTEMPTS` wrong tries. Returns the phone it was sent to.
async fn check_sms_code(state: &AppState, user_id: &str, code: &str) -> Result<String, ApiError> {
    let now = state.clock.now();
    let key = sms_key(user_id);
    let ticket = state
        .store
        .get_ticket(&key, now)
        .await?
        .ok_or_else(invalid_code)?;
    let sms: SmsCode = read_ticket(&ticket)?;
    let digits = totp::normalize_code(code).unwrap_or_default();
    if !constant_time_eq(&code_hash(user_id, &digits), &sms.code_hash) {
        state
            .store
            .fail_ticket(&key, now, MAX_CODE_ATTEMPTS)
            .await?;
        return Err(invalid_code());
    }
    // Taking it is what makes it single-use: a parallel request with the same code loses.
    state
        .store
        .take_ticket(&key, now)
        .await?
        .ok_or_else(invalid_code)?;
    Ok(sms.phone)
}

/// Proof of the second factor: a current code of the user's method, or a backup code.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Proof {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    backup_code: Option<String>,
}

impl Proof {
    pub fn new(code: Option<String>, backup_code: Option<String>) -> Proof {
        Proof { code, backup_code }
    }
}

/// Verifies `proof` against the user's active method. A used backup code and every wrong
/// code are counted and written to the audit log (in each of the user's organizations), with
/// the context `audit` gives (who, from where).
pub(super) async fn verify_proof(
    state: &AppState,
    user: &User,
    method: &TwoFactor,
    proof: &Proof,
    audit: impl Fn(AuditEvent) -> Audit,
) -> Result<SecondFactor, ApiError> {
    let result = match (&proof.code, &proof.backup_code) {
        (Some(code), None) => match method.method {
            TwoFactorMethod::Totp => {
                let sealed = method.totp_secret.as_deref().unwrap_or("");
                let sealer = state.sealer.as_ref().ok_or_else(totp_not_configured)?;
                let secret = sealer.open(sealed).map_err(ApiError::internal)?;
                match totp::matching_step(&secret, code, state.clock.now()) {
                    // Recorded atomically: the same code twice, on any replica, fails.
                    Some(step) if state.store.accept_totp_step(&user.id, step).await? => {
                        Ok(SecondFactor::Totp)
                    }
                    _ => Err(invalid_code()),
                }
            }
            TwoFactorMethod::Sms => check_sms_code(state, &user.id, code)
                .await
                .map(|_| SecondFactor::Sms),
        },
        (None, Some(backup)) => match backup_codes::hash(&user.id, backup) {
            Some(hash) if state.store.consume_backup_code(&user.id, &hash).await? => {
                count(state, "backup_code_used");
                Ok(SecondFactor::Backup)
            }
            _ => Err(invalid_code()),
        },
        _ => Err(ApiError::bad_request(
            "invalid_body",
            "Send exactly one of code or backup_code.",
        )),
    };
    let orgs = || user.memberships.iter().map(|m| m.org_id.as_str());
    match &result {
        Ok(SecondFactor::Backup) => {
            audit(AuditEvent::BackupCodeUsed)
                .target(&user.id)
                .record_in(state, orgs())
                .await;
        }
        Err(ApiError::BadRequest {
            code: "invalid_code",
            ..
        }) => {
            count(state, "failed_code");
            audit(AuditEvent::TwoFactorFailed)
                .target(&user.id)
                .detail(
                    "method",
                    if proof.backup_code.is_some() {
                        "backup"
                    } else {
                        method.method.as_str()
                    },
                )
                .record_in(state, orgs())
                .await;
        }
        _ => {}
    }
    result
}

/// Activates `method` with fresh backup codes; returns the codes (shown this once).
async fn activate(
    state: &AppState,
    user: &User,
    method: TwoFactor,
    audit: Audit,
) -> Result<Vec<String>, ApiError> {
    let codes = backup_codes::generate();
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| backup_codes::hash(&user.id, c))
        .collect();
    state.store.enable_two_factor(&method, &hashes).await?;
    state
        .store
        .take_ticket(&enrol_key(&user.id), state.clock.now())
        .await?;
    count(state, "enrolled");
    audit
        .detail("method", method.method.as_str())
        .record_in(state, user.memberships.iter().map(|m| m.org_id.as_str()))
        .await;
    Ok(codes)
}

/// Completes a pending TOTP enrolment with a first valid code.
pub(super) async fn verify_totp_enrolment(
    state: &AppState,
    user: &User,
    code: &str,
    audit: Audit,
) -> Result<Vec<String>, ApiError> {
    let now = state.clock.now();
    let key = enrol_key(&user.id);
    let ticket = state.store.get_ticket(&key, now).await?.ok_or_else(|| {
        ApiError::bad_request("no_pending_enrolment", "Start the enrolment first.")
    })?;
    let pending: PendingEnrolment = read_ticket(&ticket)?;
    let (TwoFactorMethod::Totp, Some(sealed)) = (pending.method, pending.secret.as_deref()) else {
        return Err(ApiError::bad_request(
            "no_pending_enrolment",
            "Start the enrolment first.",
        ));
    };
    let sealer = state.sealer.as_ref().ok_or_else(totp_not_configured)?;
    let secret = sealer.open(sealed).map_err(ApiError::internal)?;
    let step = totp::matching_step(&secret, code, now);
    let accepted = match step {
        Some(step) => state.store.accept_totp_step(&user.id, step).await?,
        None => false,
    };
    if !accepted {
        count(state, "failed_code");
        state
            .store
            .fail_ticket(&key, now, MAX_CODE_ATTEMPTS)
            .await?;
        return Err(invalid_code());
    }
    let method = TwoFactor {
        user_id: user.id.clone(),
        method: TwoFactorMethod::Totp,
        totp_secret: Some(sealed.to_string()),
        phone: None,
        enabled_at: now,
    };
    activate(state, user, method, audit).await
}

fn check_phone(phone: &str) -> Result<String, ApiError> {
    match crate::auth::profile::check_phone(phone) {
        Ok(Some(p)) => Ok(p),
        _ => Err(ApiError::bad_request(
            "invalid_phone",
            "phone: an international number in E.164 form, e.g. +41441234567",
        )),
    }
}

/// Starts an SMS enrolment: remembers the number and sends it a code.
pub(super) async fn start_sms(state: &AppState, user: &User, phone: &str) -> Result<(), ApiError> {
    let phone = check_phone(phone)?;
    let pending = PendingEnrolment {
        method: TwoFactorMethod::Sms,
        secret: None,
        phone: Some(phone.clone()),
    };
    put_ticket(state, &enrol_key(&user.id), &pending, ENROL_TTL_SECS).await?;
    send_sms_code(state, user, &phone).await
}

pub(super) async fn verify_sms_enrolment(
    state: &AppState,
    user: &User,
    code: &str,
    audit: Audit,
) -> Result<Vec<String>, ApiError> {
    let now = state.clock.now();
    let ticket = state
        .store
        .get_ticket(&enrol_key(&user.id), now)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request("no_pending_enrolment", "Start the enrolment first.")
        })?;
    let pending: PendingEnrolment = read_ticket(&ticket)?;
    if pending.method != TwoFactorMethod::Sms {
        return Err(ApiError::bad_request(
            "no_pending_enrolment",
            "Start the enrolment first.",
        ));
    }
    let phone = check_sms_code(state, &user.id, code)
        .await
        .inspect_err(|_| {
            count(state, "failed_code");
        })?;
    if pending.phone.as_deref() != Some(phone.as_str()) {
        return Err(invalid_code());
    }
    let method = TwoFactor {
        user_id: user.id.clone(),
        method: TwoFactorMethod::Sms,
        totp_secret: None,
        phone: Some(phone),
        enabled_at: now,
    };
    activate(state, user, method, audit).await
}

// --- the account API ---------------------------------------------------------------------------

pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let org = policy_org(&state, &caller.session.org_id).await?;
    let method = state.store.get_two_factor(&caller.user.id).await?;
    let remaining = state.store.backup_codes_remaining(&caller.user.id).await?;
    Ok(Json(json!({
        "available": org.two_factor != TwoFactorPolicy::Off,
        "policy": org.two_factor,
        "method": method.as_ref().map(|m| m.method),
        "backup_codes_remaining": remaining,
        "phone": method.and_then(|m| m.phone).map(|p| mask_phone(&p)),
        "sms_available": state.sms.is_some(),
    })))
}

/// Replacing an active method needs proof of it: a stolen session alone must not be able to
/// move someone's second factor onto the thief's device.
async fn require_current_proof(
    state: &AppState,
    caller: &Caller,
    proof: &Proof,
) -> Result<(), ApiError> {
    let Some(method) = state.store.get_two_factor(&caller.user.id).await? else {
        return Ok(());
    };
    if proof.code.is_none() && proof.backup_code.is_none() {
        return Err(ApiError::forbidden(
            "current_code_required",
            "Two-factor authentication is active: send a current code or a backup code to replace it.",
        ));
    }
    verify_proof(state, &caller.user, &method, proof, |e| {
        Audit::by(caller, e)
    })
    .await
    .map(|_| ())
    .map_err(|e| proof_refused(e, "A current code or a backup code is required."))
}

/// Starts a TOTP enrolment. Body `{}`, or with an active method `{"code"}` / `{"backup_code"}`.
pub async fn totp_start(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(proof): JsonBody<Proof>,
) -> Result<Json<Value>, ApiError> {
    require_available(&state, &caller).await?;
    require_current_proof(&state, &caller, &proof).await?;
    Ok(Json(start_totp(&state, &caller.user).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CodeBody {
    code: String,
}

pub async fn totp_verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    require_available(&state, &caller).await?;
    let audit = Audit::by(&caller, AuditEvent::TwoFactorEnabled);
    let codes = verify_totp_enrolment(&state, &caller.user, &body.code, audit).await?;
    Ok(Json(json!({ "backup_codes": codes })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhoneBody {
    phone: String,
    /// Proof of the active method, when replacing it.
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    backup_code: Option<String>,
}

pub async fn sms_start(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<PhoneBody>,
) -> Result<Response, ApiError> {
    require_available(&state, &caller).await?;
    let proof = Proof::new(body.code, body.backup_code);
    require_current_proof(&state, &caller, &proof).await?;
    start_sms(&state, &caller.user, &body.phone).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

pub async fn sms_verify(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    require_available(&state, &caller).await?;
    let audit = Audit::by(&caller, AuditEvent::TwoFactorEnabled);
    let codes = verify_sms_enrolment(&state, &caller.user, &body.code, audit).await?;
    Ok(Json(json!({ "backup_codes": codes })))
}

/// Sends an SMS code to an SMS user so they can prove their factor (to disable it or to
/// regenerate backup codes).
pub async fn sms_send_code(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let method = state
        .store
        .get_two_factor(&caller.user.id)
        .await?
        .filter(|m| m.method == TwoFactorMethod::Sms)
        .ok_or_else(|| ApiError::bad_request("no_sms_method", "SMS is not your second factor."))?;
    let phone = method.phone.unwrap_or_default();
    send_sms_code(&state, &caller.user, &phone).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// A wrong code where a proof is the price of an action is 403; other failures (a malformed
/// request, a store outage) keep their own answer.
fn proof_refused(e: ApiError, message: &'static str) -> ApiError {
    match e {
        ApiError::BadRequest {
            code: "invalid_code",
            ..
        } => ApiError::forbidden("invalid_code", message),
        other => other,
    }
}

async fn active_method(state: &AppState, user_id: &str) -> Result<TwoFactor, ApiError> {
    state.store.get_two_factor(user_id).await?.ok_or_else(|| {
        ApiError::bad_request(
            "two_factor_not_enabled",
            "Two-factor authentication is not enabled.",
        )
    })
}

pub async fn regenerate_backup_codes(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(body): JsonBody<CodeBody>,
) -> Result<Json<Value>, ApiError> {
    let method = active_method(&state, &caller.user.id).await?;
    let proof = Proof {
        code: Some(body.code),
        backup_code: None,
    };
    verify_proof(&state, &caller.user, &method, &proof, |e| {
        Audit::by(&caller, e)
    })
    .await
    .map_err(|e| proof_refused(e, "A current code is required."))?;
    let codes = backup_codes::generate();
    let hashes: Vec<String> = codes
        .iter()
        .filter_map(|c| backup_codes::hash(&caller.user.id, c))
        .collect();
    state
        .store
        .replace_backup_codes(&caller.user.id, &hashes)
        .await?;
    Audit::by(&caller, AuditEvent::BackupCodesRegenerated)
        .record_in(
            &state,
            caller.user.memberships.iter().map(|m| m.org_id.as_str()),
        )
        .await;
    Ok(Json(json!({ "backup_codes": codes })))
}

pub async fn disable(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(proof): JsonBody<Proof>,
) -> Result<Response, ApiError> {
    let method = active_method(&state, &caller.user.id).await?;
    let org = policy_org(&state, &caller.session.org_id).await?;
    if org.two_factor == TwoFactorPolicy::Required {
        return Err(ApiError::Conflict {
            code: "two_factor_required",
            message:
                "Your organization requires two-factor authentication; enrol a new method instead.",
        });
    }
    verify_proof(&state, &caller.user, &method, &proof, |e| {
        Audit::by(&caller, e)
    })
    .await
    .map_err(|e| proof_refused(e, "A current code or a backup code is required."))?;
    state.store.disable_two_factor(&caller.user.id).await?;
    count(&state, "disabled");
    Audit::by(&caller, AuditEvent::TwoFactorDisabled)
        .record_in(
            &state,
            caller.user.memberships.iter().map(|m| m.org_id.as_str()),
        )
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An org admin resets a member who lost every method: the method goes, their sessions end.
pub async fn admin_reset(
    State(state): State<AppState>,
    caller: Caller,
    Path((org_id, user_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let org = administered_org(&state, &caller, &org_id).await?;
    let member = state
        .store
        .get_user(&user_id)
        .await?
        .filter(|u| u.membership(&org_id).is_some())
        .ok_or(ApiError::NotFound)?;
    state.store.disable_two_factor(&member.id).await?;
    end_user_sessions(&state, &org, &member.id, EndReason::TwoFactorReset, None).await?;
    count(&state, "reset");
    Audit::by(&caller, AuditEvent::TwoFactorReset)
        .target(&member.id)
        .record(&state, &org_id)
        .await;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked_but_recognisable() {
        assert_eq!(mask_phone("+41441234567"), "+41*******67");
        assert_eq!(mask_phone("+123"), "****");
    }
}

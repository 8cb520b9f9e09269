//! Request extractors: the JSON body with our error codes, and the signed-in `Caller`.
//!
//! The account app listens on a private unix socket that only the gateway reaches, and the
//! gateway strips every client-sent `X-Auth-*` header, so the identity headers here are the
//! gateway's word. CSRF is checked here too: every state-changing `/auth/api/` call must carry
//! `X-CSRF-Token` equal to its session's token.

use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::auth::secret::constant_time_eq;
use crate::store::{Session, User};

/// A JSON body; wrong content type 415, bad JSON 400 naming the problem, too large 413.
pub struct JsonBody<T>(pub T);

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::json_expected(),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
        JsonRejection::JsonDataError(e) => ApiError::bad_request("invalid_body", e.body_text()),
        JsonRejection::BytesRejection(e) if e.status() == 413 => ApiError::payload_too_large(),
        other => ApiError::bad_request("unreadable_body", other.body_text()),
    }
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| JsonBody(v))
            .map_err(json_rejection)
    }
}

/// A body that is JSON or an HTML form (the login page works without JavaScript too).
pub enum JsonOrForm<T> {
    Json(T),
    Form(T),
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonOrForm<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.starts_with("application/x-www-form-urlencoded") {
            axum::Form::<T>::from_request(req, state)
                .await
                .map(|axum::Form(v)| JsonOrForm::Form(v))
                .map_err(|e| match e {
                    FormRejection::BytesRejection(b) if b.status() == 413 => {
                        ApiError::payload_too_large()
                    }
                    other => ApiError::bad_request("invalid_body", other.body_text()),
                })
        } else {
            JsonBody::<T>::from_request(req, state)
                .await
                .map(|JsonBody(v)| JsonOrForm::Json(v))
        }
    }
}

/// The client IP as the gateway determined it.
pub fn client_ip(headers: &HeaderMap) -> String {
    headers
        .get("x-auth-client-ip")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown")
        .to_string()
}

pub fn user_agent(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Shown in the sessions table; bound it.
    ua.chars().take(512).collect()
}

/// The value of the cookie `name`, if the request carries it exactly once (two of one name is
/// cookie tossing or a broken client: neither is trusted) and it is at most 256 bytes.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for header in headers.get_all(header::COOKIE) {
        for pair in header.to_str().ok()?.split(';') {
            if let Some((n, v)) = pair.trim().split_once('=') {
                if n == name {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(v.trim_matches('"').to_string());
                }
            }
        }
    }
    found.filter(|v| !v.is_empty() && v.len() <= 256)
}

/// A request from a signed-in person (session cookie), with their session and user record.
pub struct Caller {
    pub user: User,
    pub session: Session,
    pub client_ip: String,
    /// As `user_agent` returns it (bounded), for the audit log.
    pub user_agent: String,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        if header("x-auth-method") != Some("session") {
            return Err(ApiError::Unauthenticated);
        }
        let session_id = header("x-auth-session-id").ok_or(ApiError::Unauthenticated)?;
        let session = state
            .store
            .get_session(session_id)
            .await?
            .filter(|s| s.ended_reason.is_none())
            .ok_or(ApiError::Unauthenticated)?;
        let mutating = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if mutating && parts.uri.path().starts_with("/auth/api/") {
            let sent = header("x-csrf-token").unwrap_or("");
            if !constant_time_eq(sent, &session.csrf_token) {
                return Err(ApiError::forbidden(
                    "csrf_token_invalid",
                    "Send the X-CSRF-Token header from the login response or GET /auth/api/v1/me.",
                ));
            }
        }
        let user = state
            .store
            .get_user(&session.user_id)
            .await?
            .ok_or(ApiError::Unauthenticated)?;
        Ok(Caller {
            user,
            session,
            client_ip: client_ip(&parts.headers),
            user_agent: user_agent(&parts.headers),
        })
    }
}

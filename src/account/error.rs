//! How the account app's failures reach a client: a status, a stable `error` code and a generic
//! message. Causes go to the log, never into a response.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use serde_json::{Map, Value};

use crate::store::StoreError;
use crate::web::{body_limit_message, json_error, DEFAULT_AUTH_BODY_BYTES};

#[derive(Debug)]
pub enum ApiError {
    /// 400 with a code and a message naming the field or rule.
    BadRequest {
        code: &'static str,
        message: String,
    },
    /// 401: no valid session.
    Unauthenticated,
    /// 401: wrong email or password (or unknown account: indistinguishable).
    InvalidCredentials,
    /// 403 with a code.
    Forbidden {
        code: &'static str,
        message: &'static str,
    },
    NotFound,
    MethodNotAllowed,
    /// 503: a feature this gateway is not configured for.
    NotConfigured {
        code: &'static str,
        message: &'static str,
    },
    /// 502: a service we depend on (the SMS provider) failed.
    BadGateway {
        code: &'static str,
        message: &'static str,
    },
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    /// 413; carries the route's limit, which the message names.
    PayloadTooLarge {
        limit: usize,
    },
    /// 415; the message says what to send instead.
    UnsupportedMediaType {
        message: &'static str,
    },
    /// 400 with more than a message: e.g. `fields` (one rule per field) or `rules` (every
    /// unmet password rule), merged into the error object next to `error` and `message`.
    Invalid {
        code: &'static str,
        message: String,
        details: Map<String, Value>,
    },
    /// 429 with `Retry-After`.
    RateLimited {
        retry_after: i64,
    },
    /// 503: the store did not answer.
    Unavailable,
    /// 500: logged with its cause, reported without it.
    Internal,
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// 413 for a route with the default body limit.
    pub fn payload_too_large() -> Self {
        ApiError::PayloadTooLarge {
            limit: DEFAULT_AUTH_BODY_BYTES,
        }
    }

    /// 415 for a route that takes JSON.
    pub fn json_expected() -> Self {
        ApiError::UnsupportedMediaType {
            message: "Send the body as application/json.",
        }
    }

    pub fn forbidden(code: &'static str, message: &'static str) -> Self {
        ApiError::Forbidden { code, message }
    }

    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error in the account app");
        ApiError::Internal
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "store unavailable");
                ApiError::Unavailable
            }
            StoreError::Conflict(what) => ApiError::Conflict {
                code: "conflict",
                message: what,
            },
            other => ApiError::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message): (StatusCode, &str, String) = match &self {
            ApiError::BadRequest { code, message } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "authentication_required",
                "Sign in first.".into(),
            ),
            ApiError::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "The email or password is wrong.".into(),
            ),
            ApiError::Forbidden { code, message } => {
                (StatusCode::FORBIDDEN, code, message.to_string())
            }
            ApiError::NotConfigured { code, message } => {
                (StatusCode::SERVICE_UNAVAILABLE, *code, message.to_string())
            }
            ApiError::BadGateway { code, message } => {
                (StatusCode::BAD_GATEWAY, *code, message.to_string())
            }
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This resource does not support that method.".into(),
            ),
            ApiError::NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such resource.".into(),
            ),
            ApiError::Conflict { code, message } => {
                (StatusCode::CONFLICT, code, message.to_string())
            }
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                body_limit_message(*limit),
            ),
            ApiError::UnsupportedMediaType { message } => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message.to_string(),
            ),
            ApiError::Invalid { code, message, .. } => {
                (StatusCode::BAD_REQUEST, code, message.clone())
            }
            ApiError::RateLimited { retry_after } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!("Too many failed attempts; retry in {retry_after} seconds."),
            ),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The service is temporarily unavailable; retry shortly.".into(),
            ),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side.".into(),
            ),
        };
        let body = match &self {
            ApiError::Invalid { details, .. } => {
                let mut obj = Map::new();
                obj.insert("error".into(), Value::from(code));
                obj.insert("message".into(), Value::from(message));
                for (k, v) in details {
                    obj.insert(k.clone(), v.clone());
                }
                Value::Object(obj).to_string()
            }
            _ => json_error(code, &message),
        };
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        if let ApiError::RateLimited { retry_after } = self {
            if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
                resp.headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

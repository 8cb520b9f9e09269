//! How the account app's failures reach a client: a status, a stable `error` code and a generic
//! message. Causes go to the log, never into a response.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;
use crate::web::json_error;

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
    Conflict {
        code: &'static str,
        message: &'static str,
    },
    PayloadTooLarge,
    UnsupportedMediaType,
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
            ApiError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                "Request bodies are limited to 64 KiB.".into(),
            ),
            ApiError::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as application/json.".into(),
            ),
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
        let mut resp = (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json_error(code, &message),
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

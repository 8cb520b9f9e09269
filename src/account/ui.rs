//! The web UI files from `admin-ui/`, compiled into the binary so a deployment is one file.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

pub const LOGIN_HTML: &str = include_str!("../../admin-ui/login.html");

/// Scripts and styles only from us; no inline code, no framing, forms post only to us.
const HTML_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin-ui/login.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../admin-ui/style.css"),
    ),
];

pub fn html(body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(HTML_CSP),
    );
    resp
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            *body,
        )
            .into_response(),
        None => super::error::ApiError::NotFound.into_response(),
    }
}

pub async fn not_found() -> Response {
    super::error::ApiError::NotFound.into_response()
}

pub async fn method_not_allowed() -> Response {
    super::error::ApiError::MethodNotAllowed.into_response()
}

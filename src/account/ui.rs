//! The web UI files from `admin-ui/`, compiled into the binary so a deployment is one file.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const LOGIN_HTML: &str = include_str!("../../admin-ui/login.html");
const ACCOUNT_HTML: &str = include_str!("../../admin-ui/account.html");
const ORG_HTML: &str = include_str!("../../admin-ui/org.html");

/// Scripts and styles only from us; no inline code, no framing, forms post only to us.
const HTML_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const ASSETS: &[(&str, &str, &str)] = &[
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin-ui/common.js"),
    ),
    (
        "account.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin-ui/account.js"),
    ),
    (
        "org.js",
        "text/javascript; charset=utf-8",
        include_str!("../../admin-ui/org.js"),
    ),
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

/// `GET /auth/account`: the My Account page ("Profile & Security").
pub async fn account_page(headers: HeaderMap) -> Response {
    signed_in_page(&headers, ACCOUNT_HTML, "%2Fauth%2Faccount")
}

/// `GET /auth/org`: Manage My Organization (the page itself checks the admin role).
pub async fn org_page(headers: HeaderMap) -> Response {
    signed_in_page(&headers, ORG_HTML, "%2Fauth%2Forg")
}

/// The page for a signed-in person; anyone else goes to the login page, which comes back here.
/// `/auth/*` is reachable without a credential (the login page must be), so the gateway does
/// not redirect for us: its identity headers say whether there is a live session.
fn signed_in_page(headers: &HeaderMap, body: &'static str, next_encoded: &str) -> Response {
    let method = headers.get("x-auth-method").and_then(|v| v.to_str().ok());
    if method != Some("session") {
        let location = format!("/auth/login?next={next_encoded}");
        return match HeaderValue::from_str(&location) {
            Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
            Err(_) => super::error::ApiError::Unauthenticated.into_response(),
        };
    }
    html(body)
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

//! The account app: login pages, the JSON API and the UI files. It is just another upstream
//! behind the gateway — it listens on a private unix socket only the gateway reaches, and gets
//! the same pre-authenticated identity headers as the platform. Handlers are thin: decode,
//! apply the rules in `auth`, read or write the store, map the error.

mod api;
mod audit;
mod avatar;
mod error;
mod extract;
mod login;
mod login_2fa;
mod members;
mod oauth;
mod password;
mod profile;
mod tokens;
mod two_factor;
mod ui;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::auth::jwt::JwtSigner;
use crate::auth::password::Passwords;
use crate::clock::SharedClock;
use crate::config::LoginConfig;
use crate::metrics::Metrics;
use crate::store::cache::AuthCache;
use crate::store::SharedStore;
use crate::web::{
    auth_body_limit, AVATAR_PATH, CSP_NONE, DEFAULT_AUTH_BODY_BYTES, SECURITY_HEADERS,
};

/// Avatar uploads decoded and re-encoded at once; more wait (decoding is CPU work that would
/// otherwise compete with the proxy threads).
pub const AVATAR_CONCURRENCY: usize = 2;

#[derive(Clone)]
pub struct AppState {
    pub store: SharedStore,
    pub cache: Arc<AuthCache>,
    pub clock: SharedClock,
    pub metrics: Arc<Metrics>,
    pub passwords: Arc<Passwords>,
    pub signer: Arc<JwtSigner>,
    pub login: LoginConfig,
    pub cookie_name: String,
    pub cookie_secure: bool,
    pub expired_retention_days: u32,
    /// `AVATAR_CONCURRENCY` permits.
    pub avatar_permits: Arc<tokio::sync::Semaphore>,
    /// Seals TOTP seeds; `None` when no secrets key is configured (TOTP then unavailable).
    pub sealer: Option<Arc<crate::auth::seal::Sealer>>,
    /// Sends SMS codes; `None` when `[sms] provider = "none"`.
    pub sms: Option<Arc<dyn crate::sms::SmsSender>>,
    /// Quick Login providers; `None` when no `[oauth.*]` section is configured.
    pub oauth: Option<Arc<crate::oauth::Providers>>,
}

impl AppState {
    /// `Set-Cookie` for a session secret; an empty secret with max-age 0 clears the cookie.
    pub fn session_cookie(&self, secret: &str, max_age_secs: i64) -> String {
        self.cookie(&self.cookie_name, secret, "/", "Lax", max_age_secs)
    }

    /// `Set-Cookie` for one of our cookies: always `HttpOnly`, `Secure` unless configured off
    /// (plain-http development).
    pub fn cookie(
        &self,
        name: &str,
        value: &str,
        path: &str,
        same_site: &str,
        max_age_secs: i64,
    ) -> String {
        format!(
            "{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age_secs}{}",
            if self.cookie_secure { "; Secure" } else { "" }
        )
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/auth/login", get(login::login_page).post(login::login))
        .route("/auth/logout", post(login::logout))
        .route("/auth/.well-known/jwks.json", get(api::jwks))
        .route("/auth/ui/{name}", get(ui::asset))
        .route("/auth/account", get(ui::account_page))
        .route("/auth/org", get(ui::org_page))
        .route("/auth/api/v1/me", get(api::me).patch(profile::update))
        .route("/auth/api/v1/me/password", post(password::change))
        .route(
            AVATAR_PATH,
            put(avatar::upload)
                .delete(avatar::remove)
                // Body limits come from the table the proxy reads too (`web::AUTH_BODY_LIMITS`).
                .layer(DefaultBodyLimit::max(auth_body_limit(AVATAR_PATH))),
        )
        .route("/auth/api/v1/users/{user_id}/avatar", get(avatar::serve))
        .route(
            "/auth/api/v1/orgs/{org_id}/settings",
            get(api::get_settings).put(api::put_settings),
        )
        .route(
            "/auth/api/v1/orgs/{org_id}/sessions",
            get(api::list_sessions),
        )
        .route(
            "/auth/api/v1/orgs/{org_id}/sessions/{session_id}/expire",
            post(api::expire_session),
        )
        .route("/auth/api/v1/me/client-ip", get(tokens::client_ip))
        .route(
            "/auth/api/v1/service-tokens",
            get(tokens::list).post(tokens::create),
        )
        .route(
            "/auth/api/v1/service-tokens/{token_id}",
            axum::routing::delete(tokens::delete),
        )
        .route(
            "/auth/api/v1/orgs/{org_id}/users",
            get(members::list).post(members::create),
        )
        .route(
            "/auth/api/v1/orgs/{org_id}/users/{user_id}",
            axum::routing::delete(members::remove),
        )
        .route("/auth/api/v1/orgs/{org_id}/audit", get(audit::list))
        .route("/auth/login/2fa", post(login_2fa::answer))
        .route("/auth/login/2fa/resend", post(login_2fa::resend))
        .route("/auth/login/2fa/enroll/totp", post(login_2fa::enrol_totp))
        .route("/auth/login/2fa/enroll/sms", post(login_2fa::enrol_sms))
        .route(
            "/auth/login/2fa/enroll/verify",
            post(login_2fa::enrol_verify),
        )
        .route("/auth/api/v1/me/2fa", get(two_factor::status))
        .route("/auth/api/v1/me/2fa/totp", post(two_factor::totp_start))
        .route(
            "/auth/api/v1/me/2fa/totp/verify",
            post(two_factor::totp_verify),
        )
        .route("/auth/api/v1/me/2fa/sms", post(two_factor::sms_start))
        .route(
            "/auth/api/v1/me/2fa/sms/verify",
            post(two_factor::sms_verify),
        )
        .route(
            "/auth/api/v1/me/2fa/sms/code",
            post(two_factor::sms_send_code),
        )
        .route(
            "/auth/api/v1/me/2fa/backup-codes",
            post(two_factor::regenerate_backup_codes),
        )
        .route("/auth/api/v1/me/2fa/disable", post(two_factor::disable))
        .route(
            "/auth/api/v1/orgs/{org_id}/users/{user_id}/2fa/reset",
            post(two_factor::admin_reset),
        )
        .route("/auth/oauth/providers", get(oauth::providers))
        .route("/auth/oauth/{provider}/start", get(oauth::start))
        .route("/auth/oauth/{provider}/callback", get(oauth::callback))
        .route("/auth/api/v1/me/identities", get(oauth::list))
        .route(
            "/auth/api/v1/me/identities/{provider}",
            post(oauth::connect).delete(oauth::disconnect),
        )
        .fallback(ui::not_found)
        .method_not_allowed_fallback(ui::method_not_allowed)
        .layer(DefaultBodyLimit::max(DEFAULT_AUTH_BODY_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Every response gets the shared security headers; handlers that set their own cache or CSP
/// policy keep it.
async fn security_headers(mut resp: Response) -> Response {
    let headers = resp.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        let name = HeaderName::from_static(name);
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP_NONE),
        );
    }
    resp
}

/// Runs the app on a unix socket (mode 0600) inside the gateway process.
pub struct AccountService {
    pub state: AppState,
    pub socket: PathBuf,
}

#[async_trait]
impl BackgroundService for AccountService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = std::fs::remove_file(&self.socket);
        let listener = match tokio::net::UnixListener::bind(&self.socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(socket = %self.socket.display(), error = %e, "account app cannot listen");
                return;
            }
        };
        if let Err(e) =
            std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o600))
        {
            tracing::warn!(error = %e, "cannot restrict the account socket");
        }
        let app = router(self.state.clone());
        let served = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "account app stopped");
        }
    }
}

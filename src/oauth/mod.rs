//! Quick Login providers: Google (OpenID Connect) and GitHub (OAuth 2), both through the
//! `oauth2` crate's authorization-code flow with PKCE (S256) — and, for OpenID Connect, a nonce
//! bound into the ID token.
//!
//! This module only speaks to providers: it builds the URL the browser is sent to
//! ([`Providers::authorization`]) and turns the code the browser brings back into a verified
//! [`ProviderIdentity`] ([`Providers::finish`]). What a flow is for (sign in, connect), the
//! single-use `state`, and who gets a session are the account app's business
//! (`account::oauth`).
//!
//! Nothing from a provider is taken on trust that its protocol lets us verify: ID tokens are
//! checked in `oidc.rs`, GitHub's user id comes from its API with the token we just obtained.
//!
//! Layout: `settings.rs` the config sections; `http.rs` the outgoing HTTP (limits, and the
//! token answer normalized for GitHub); `oidc.rs` Google; `github.rs` GitHub.

mod github;
mod http;
mod oidc;
mod settings;

use std::sync::Arc;

use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use serde::{Deserialize, Serialize};

pub use settings::{parse_public_url, GithubConfig, GoogleConfig, OAuthConfig};

use crate::clock::UnixTime;
use crate::metrics::Metrics;
use crate::store::Provider;

/// Who a provider vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderIdentity {
    /// Google's `sub`, GitHub's numeric user id. Never an email.
    pub subject: String,
    /// Verified email, for display.
    pub email: Option<String>,
}

/// Why a flow failed on the provider's side. `code()` is the stable code the login page shows
/// and the metrics and audit log record.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OAuthError {
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the provider refused the authorization code: {0}")]
    CodeRejected(String),
    #[error("the ID token is not valid: {0}")]
    InvalidIdToken(String),
    #[error("the provider's answer was not usable: {0}")]
    BadResponse(String),
}

impl OAuthError {
    pub fn code(&self) -> &'static str {
        match self {
            OAuthError::Unreachable(_) => "oauth_unreachable",
            OAuthError::CodeRejected(_) => "oauth_code_rejected",
            OAuthError::InvalidIdToken(_) => "oauth_invalid_id_token",
            OAuthError::BadResponse(_) => "oauth_failed",
        }
    }
}

/// The token answer: RFC 6749's fields plus OpenID Connect's `id_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenField {
    #[serde(default)]
    pub id_token: Option<String>,
}
impl oauth2::ExtraTokenFields for IdTokenField {}
type TokenAnswer = StandardTokenResponse<IdTokenField, BasicTokenType>;

type OAuthClient = oauth2::Client<
    BasicErrorResponse,
    TokenAnswer,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(
    client_id: &str,
    client_secret: &str,
    authorize_url: &str,
    token_url: &str,
    redirect_uri: &str,
) -> Result<OAuthClient, OAuthError> {
    let bad = |what: &str| OAuthError::BadResponse(format!("{what} is not a valid URL"));
    Ok(oauth2::Client::new(ClientId::new(client_id.to_string()))
        .set_client_secret(ClientSecret::new(client_secret.to_string()))
        .set_auth_uri(AuthUrl::new(authorize_url.to_string()).map_err(|_| bad("authorize URL"))?)
        .set_token_uri(TokenUrl::new(token_url.to_string()).map_err(|_| bad("token URL"))?)
        .set_redirect_uri(
            RedirectUrl::new(redirect_uri.to_string()).map_err(|_| bad("redirect URI"))?,
        ))
}

/// Exchanges the code (with the PKCE verifier) for the provider's token answer.
async fn exchange(
    client: &OAuthClient,
    http: &http::ProviderHttp,
    code: &str,
    pkce_verifier: &str,
) -> Result<TokenAnswer, OAuthError> {
    // An owned client per call: a closure returning a future that borrows would not be `Send`
    // for every lifetime, which axum handlers need.
    let call = move |req: oauth2::HttpRequest| {
        let http = http.clone();
        async move { http.token_call(req).await }
    };
    client
        .exchange_code(AuthorizationCode::new(code.to_string()))
        .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier.to_string()))
        .request_async(&call)
        .await
        .map_err(|e| match e {
            RequestTokenError::ServerResponse(r) => {
                OAuthError::CodeRejected(r.error().as_ref().to_string())
            }
            RequestTokenError::Request(e) => OAuthError::Unreachable(e.to_string()),
            RequestTokenError::Parse(e, _) => {
                OAuthError::BadResponse(format!("token: unexpected answer ({})", e.inner()))
            }
            RequestTokenError::Other(e) => OAuthError::BadResponse(format!("token: {e}")),
        })
}

/// Where to send the browser, and what the callback needs to finish (kept server-side with the
/// state, never in the browser).
pub struct AuthorizationRequest {
    pub url: String,
    pub pkce_verifier: String,
    pub nonce: Option<String>,
}

impl AuthorizationRequest {
    fn new(client: &OAuthClient, state: &str, scopes: &[&str], with_nonce: bool) -> Self {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = state.to_string();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .set_pkce_challenge(challenge);
        for s in scopes {
            req = req.add_scope(Scope::new(s.to_string()));
        }
        let nonce = with_nonce.then(crate::auth::secret::new_csrf_token);
        if let Some(n) = &nonce {
            req = req.add_extra_param("nonce", n.clone());
        }
        let (url, _) = req.url();
        AuthorizationRequest {
            url: url.to_string(),
            pkce_verifier: verifier.secret().clone(),
            nonce,
        }
    }
}

/// The configured providers.
pub struct Providers {
    public_url: String,
    google: Option<oidc::OidcProvider>,
    github: Option<github::GithubProvider>,
}

impl Providers {
    /// `None` when no provider is configured. The config was validated at load.
    pub fn from_config(
        config: &OAuthConfig,
        public_url: Option<&str>,
        metrics: Arc<Metrics>,
    ) -> Result<Option<Providers>, String> {
        if !config.any() {
            return Ok(None);
        }
        let public_url = parse_public_url(public_url.unwrap_or_default())
            .map_err(|e| format!("server.public_url: {e}"))?;
        let google = match &config.google {
            Some(g) => Some(oidc::OidcProvider::new(
                g.clone(),
                http::ProviderHttp::new("google", metrics.clone())?,
            )),
            None => None,
        };
        let github = match &config.github {
            Some(g) => Some(github::GithubProvider::new(
                g.clone(),
                http::ProviderHttp::new("github", metrics)?,
            )),
            None => None,
        };
        Ok(Some(Providers {
            public_url,
            google,
            github,
        }))
    }

    pub fn available(&self) -> Vec<Provider> {
        let mut out = Vec::new();
        if self.google.is_some() {
            out.push(Provider::Google);
        }
        if self.github.is_some() {
            out.push(Provider::Github);
        }
        out
    }

    pub fn offers(&self, provider: Provider) -> bool {
        match provider {
            Provider::Google => self.google.is_some(),
            Provider::Github => self.github.is_some(),
        }
    }

    /// `{public_url}/auth/oauth/{provider}/callback`: what is registered at the provider.
    pub fn redirect_uri(&self, provider: Provider) -> String {
        format!(
            "{}/auth/oauth/{}/callback",
            self.public_url,
            provider.as_str()
        )
    }

    /// The provider's authorization URL for this `state`, with a fresh PKCE pair and nonce.
    /// `None` when the provider is not configured.
    pub async fn authorization(
        &self,
        provider: Provider,
        state: &str,
    ) -> Option<Result<AuthorizationRequest, OAuthError>> {
        let redirect = self.redirect_uri(provider);
        match provider {
            Provider::Google => match &self.google {
                Some(p) => Some(p.authorization(state, &redirect).await),
                None => None,
            },
            Provider::Github => self
                .github
                .as_ref()
                .map(|p| p.authorization(state, &redirect)),
        }
    }

    /// Turns the callback's code into a verified identity.
    pub async fn finish(
        &self,
        provider: Provider,
        code: &str,
        pkce_verifier: &str,
        nonce: Option<&str>,
        now: UnixTime,
    ) -> Result<ProviderIdentity, OAuthError> {
        let redirect = self.redirect_uri(provider);
        let missing = || OAuthError::BadResponse("the provider is not configured".into());
        match provider {
            Provider::Google => {
                self.google
                    .as_ref()
                    .ok_or_else(missing)?
                    .finish(code, pkce_verifier, nonce, &redirect, now)
                    .await
            }
            Provider::Github => {
                self.github
                    .as_ref()
                    .ok_or_else(missing)?
                    .finish(code, pkce_verifier, &redirect)
                    .await
            }
        }
    }
}

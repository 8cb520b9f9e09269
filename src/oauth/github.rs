//! GitHub (OAuth 2, no ID token): after the code exchange, the subject is the numeric user id
//! from `{api_url}/user` — stable for the life of the account, unlike the login name, which its
//! owner can change and someone else can then take — and the email is the primary verified one
//! from `{api_url}/user/emails`.

use serde::Deserialize;

use super::http::ProviderHttp;
use super::{client, exchange, AuthorizationRequest, GithubConfig, OAuthError, ProviderIdentity};
use crate::store::MAX_EMAIL_LEN;

/// `read:user` for the id, `user:email` for the emails endpoint (the profile's email may be
/// hidden or unverified).
pub const SCOPES: &[&str] = &["read:user", "user:email"];

#[derive(Deserialize)]
struct GithubUser {
    id: u64,
}

#[derive(Deserialize)]
struct GithubEmail {
    email: String,
    #[serde(default)]
    primary: bool,
    #[serde(default)]
    verified: bool,
}

pub struct GithubProvider {
    config: GithubConfig,
    http: ProviderHttp,
}

impl GithubProvider {
    pub fn new(config: GithubConfig, http: ProviderHttp) -> Self {
        Self { config, http }
    }

    fn client(&self, redirect_uri: &str) -> Result<super::OAuthClient, OAuthError> {
        client(
            &self.config.client_id,
            &self.config.client_secret,
            &self.config.authorize_url,
            &self.config.token_url,
            redirect_uri,
        )
    }

    pub fn authorization(
        &self,
        state: &str,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, OAuthError> {
        Ok(AuthorizationRequest::new(
            &self.client(redirect_uri)?,
            state,
            SCOPES,
            false,
        ))
    }

    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        redirect_uri: &str,
    ) -> Result<ProviderIdentity, OAuthError> {
        let token = exchange(&self.client(redirect_uri)?, &self.http, code, pkce_verifier).await?;
        let access = oauth2::TokenResponse::access_token(&token).secret().clone();
        let api = self.config.api_url.trim_end_matches('/');
        let user: GithubUser = self
            .http
            .get_json("user", &format!("{api}/user"), Some(&access))
            .await?;
        let emails: Vec<GithubEmail> = self
            .http
            .get_json("user_emails", &format!("{api}/user/emails"), Some(&access))
            .await?;
        let email = emails
            .into_iter()
            .find(|e| e.primary && e.verified && e.email.len() <= MAX_EMAIL_LEN)
            .map(|e| e.email);
        Ok(ProviderIdentity {
            subject: user.id.to_string(),
            email,
        })
    }
}

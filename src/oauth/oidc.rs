//! Google, or any OpenID Connect provider: endpoints from discovery, and the ID token verified
//! here rather than trusted — signature against the provider's JWKS, `iss`, `aud` (and `azp`),
//! `exp`, and the `nonce` this flow sent. The subject is the token's `sub`; the email is kept
//! only when the provider says it is verified.
//!
//! Discovery and JWKS are cached for an hour. A token signed with a key id the cached set does
//! not have triggers one refresh (providers rotate keys), at most every `JWKS_REFRESH_MIN`, so
//! forged tokens with random key ids cannot make us hammer the provider. A failed fetch is
//! remembered for `RETRY_AFTER_FAILURE`: while the provider is down, one request waits for the
//! timeout and the others are answered at once, instead of queueing behind each other's
//! timeouts.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use tokio::sync::Mutex;

use super::http::ProviderHttp;
use super::{
    client, exchange, AuthorizationRequest, GoogleConfig, OAuthClient, OAuthError, ProviderIdentity,
};
use crate::auth::secret::constant_time_eq;
use crate::clock::UnixTime;
use crate::store::{MAX_EMAIL_LEN, MAX_SUBJECT_LEN};
use crate::web::parse_http_url;

const CACHE_TTL: Duration = Duration::from_secs(3600);
const JWKS_REFRESH_MIN: Duration = Duration::from_secs(10);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Clock skew tolerated on `exp` and `iat`.
const LEEWAY_SECS: i64 = 60;
pub const SCOPES: &[&str] = &["openid", "email", "profile"];

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Default)]
struct Cache {
    discovery: Option<(Discovery, Instant)>,
    jwks: Option<(JwkSet, Instant)>,
    /// The last failed discovery or JWKS fetch, and when.
    discovery_failed: Option<(OAuthError, Instant)>,
    jwks_failed: Option<(OAuthError, Instant)>,
}

/// The remembered failure, while it is recent.
fn recent_failure(failed: &Option<(OAuthError, Instant)>) -> Option<OAuthError> {
    failed
        .as_ref()
        .filter(|(_, at)| at.elapsed() < RETRY_AFTER_FAILURE)
        .map(|(e, _)| e.clone())
}

pub struct OidcProvider {
    config: GoogleConfig,
    http: ProviderHttp,
    cache: Mutex<Cache>,
}

#[derive(Debug, Deserialize)]
struct IdClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    azp: Option<String>,
    /// A string or an array; only how many there are matters here (`validation` checks ours).
    #[serde(default)]
    aud: serde_json::Value,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
}

impl OidcProvider {
    pub fn new(config: GoogleConfig, http: ProviderHttp) -> Self {
        Self {
            config,
            http,
            cache: Mutex::new(Cache::default()),
        }
    }

    async fn discovery(&self) -> Result<Discovery, OAuthError> {
        let mut cache = self.cache.lock().await;
        if let Some((d, at)) = &cache.discovery {
            if at.elapsed() < CACHE_TTL {
                return Ok(d.clone());
            }
        }
        if let Some(e) = recent_failure(&cache.discovery_failed) {
            return Err(e);
        }
        match self.fetch_discovery().await {
            Ok(d) => {
                cache.discovery = Some((d.clone(), Instant::now()));
                Ok(d)
            }
            Err(e) => {
                cache.discovery_failed = Some((e.clone(), Instant::now()));
                Err(e)
            }
        }
    }

    async fn fetch_discovery(&self) -> Result<Discovery, OAuthError> {
        let issuer = self.config.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let d: Discovery = self.http.get_json("discovery", &url, None).await?;
        // OpenID Connect Discovery §4.3: the document must name the issuer we asked.
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(OAuthError::BadResponse(
                "discovery: the document names another issuer".into(),
            ));
        }
        for (name, u) in [
            ("authorization_endpoint", &d.authorization_endpoint),
            ("token_endpoint", &d.token_endpoint),
            ("jwks_uri", &d.jwks_uri),
        ] {
            parse_http_url(u)
                .map_err(|e| OAuthError::BadResponse(format!("discovery: {name}: {e}")))?;
        }
        Ok(d)
    }

    /// The discovered endpoints and a client for them.
    async fn client(&self, redirect_uri: &str) -> Result<(Discovery, OAuthClient), OAuthError> {
        let d = self.discovery().await?;
        let client = client(
            &self.config.client_id,
            &self.config.client_secret,
            &d.authorization_endpoint,
            &d.token_endpoint,
            redirect_uri,
        )?;
        Ok((d, client))
    }

    pub async fn authorization(
        &self,
        state: &str,
        redirect_uri: &str,
    ) -> Result<AuthorizationRequest, OAuthError> {
        let (_, client) = self.client(redirect_uri).await?;
        Ok(AuthorizationRequest::new(&client, state, SCOPES, true))
    }

    pub async fn finish(
        &self,
        code: &str,
        pkce_verifier: &str,
        nonce: Option<&str>,
        redirect_uri: &str,
        now: UnixTime,
    ) -> Result<ProviderIdentity, OAuthError> {
        let (d, client) = self.client(redirect_uri).await?;
        let token = exchange(&client, &self.http, code, pkce_verifier).await?;
        let id_token =
            token.extra_fields().id_token.as_deref().ok_or_else(|| {
                OAuthError::InvalidIdToken("the token answer has no id_token".into())
            })?;
        let nonce = nonce.ok_or_else(|| OAuthError::InvalidIdToken("no nonce was sent".into()))?;
        self.verify_id_token(&d, id_token, nonce, now).await
    }

    async fn key_for(&self, d: &Discovery, kid: Option<&str>) -> Result<DecodingKey, OAuthError> {
        let unknown_key =
            || OAuthError::InvalidIdToken("signed with a key the provider does not list".into());
        let mut cache = self.cache.lock().await;
        let cached = match &cache.jwks {
            Some((set, at)) if at.elapsed() < CACHE_TTL => Some((find_key(set, kid), at.elapsed())),
            _ => None,
        };
        let jwk = match cached {
            Some((Some(jwk), _)) => jwk,
            // A fresh set without the key: refetch (keys rotate), but not more often than this.
            Some((None, age)) if age < JWKS_REFRESH_MIN => return Err(unknown_key()),
            _ => {
                if let Some(e) = recent_failure(&cache.jwks_failed) {
                    return Err(e);
                }
                let set: JwkSet = match self.http.get_json("jwks", &d.jwks_uri, None).await {
                    Ok(set) => set,
                    Err(e) => {
                        cache.jwks_failed = Some((e.clone(), Instant::now()));
                        return Err(e);
                    }
                };
                let jwk = find_key(&set, kid);
                cache.jwks = Some((set, Instant::now()));
                jwk.ok_or_else(unknown_key)?
            }
        };
        DecodingKey::from_jwk(&jwk)
            .map_err(|e| OAuthError::BadResponse(format!("jwks: unusable key ({e})")))
    }

    async fn verify_id_token(
        &self,
        d: &Discovery,
        id_token: &str,
        nonce: &str,
        now: UnixTime,
    ) -> Result<ProviderIdentity, OAuthError> {
        let invalid = |why: String| OAuthError::InvalidIdToken(why);
        let header = jsonwebtoken::decode_header(id_token)
            .map_err(|e| invalid(format!("malformed ({e})")))?;
        // Asymmetric algorithms only: an HS256 token would be "signed" with our client secret,
        // and `none` is not a signature.
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
                | Algorithm::ES256
                | Algorithm::ES384
        ) {
            return Err(invalid(format!(
                "algorithm {:?} is not accepted",
                header.alg
            )));
        }
        let key = self.key_for(d, header.kid.as_deref()).await?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[d.issuer.as_str()]);
        validation.set_audience(&[self.config.client_id.as_str()]);
        // Expiry is checked below against the gateway's clock, like everything else here.
        validation.validate_exp = false;
        validation.required_spec_claims = HashSet::from(["iss".into(), "aud".into(), "sub".into()]);
        let claims = jsonwebtoken::decode::<IdClaims>(id_token, &key, &validation)
            .map_err(|e| invalid(format!("{e}")))?
            .claims;
        if now >= claims.exp + LEEWAY_SECS {
            return Err(invalid("expired".into()));
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(invalid("issued in the future".into()));
        }
        match claims.nonce.as_deref() {
            Some(n) if constant_time_eq(n, nonce) => {}
            _ => return Err(invalid("the nonce does not match this sign-in".into())),
        }
        // OIDC Core §3.1.3.7: with several audiences, `azp` must be us; when present, always.
        match claims.azp.as_deref() {
            Some(azp) if azp != self.config.client_id => {
                return Err(invalid("issued to another client (azp)".into()))
            }
            None if claims.aud.as_array().is_some_and(|a| a.len() > 1) => {
                return Err(invalid("several audiences and no azp".into()))
            }
            _ => {}
        }
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_SUBJECT_LEN
            || claims.sub.chars().any(char::is_control)
        {
            return Err(invalid("the subject is empty or too long".into()));
        }
        let email = claims
            .email
            .filter(|e| claims.email_verified == Some(true) && e.len() <= MAX_EMAIL_LEN);
        Ok(ProviderIdentity {
            subject: claims.sub,
            email,
        })
    }
}

/// The key a token names; without a key id, only an unambiguous set will do.
fn find_key(set: &JwkSet, kid: Option<&str>) -> Option<jsonwebtoken::jwk::Jwk> {
    match kid {
        Some(kid) => set.find(kid).cloned(),
        None if set.keys.len() == 1 => set.keys.first().cloned(),
        None => None,
    }
}

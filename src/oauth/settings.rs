//! The `[oauth.google]` and `[oauth.github]` config sections. Each is optional: a provider
//! whose section is absent is not offered. Every URL must be https, or plain http to a loopback
//! host (tests, a local stand-in), like the SMS provider URLs.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::web::parse_http_url;

pub const GOOGLE_ISSUER: &str = "https://accounts.google.com";
pub const GITHUB_AUTHORIZE_URL: &str = "https://github.com/login/oauth/authorize";
pub const GITHUB_TOKEN_URL: &str = "https://github.com/login/oauth/access_token";
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// Longest client id or secret we accept (real ones are well under 100 characters).
const MAX_CLIENT_VALUE_LEN: usize = 512;

#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OAuthConfig {
    pub google: Option<GoogleConfig>,
    pub github: Option<GithubConfig>,
}

/// Google, or any OpenID Connect provider: endpoints come from `{issuer}/.well-known/openid-configuration`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GoogleConfig {
    pub client_id: String,
    pub client_secret: String,
    pub issuer: String,
}

impl Default for GoogleConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: String::new(),
            issuer: GOOGLE_ISSUER.into(),
        }
    }
}

/// GitHub (or GitHub Enterprise: the three URLs point at it).
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GithubConfig {
    pub client_id: String,
    pub client_secret: String,
    pub authorize_url: String,
    pub token_url: String,
    pub api_url: String,
}

impl Default for GithubConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            client_secret: String::new(),
            authorize_url: GITHUB_AUTHORIZE_URL.into(),
            token_url: GITHUB_TOKEN_URL.into(),
            api_url: GITHUB_API_URL.into(),
        }
    }
}

impl fmt::Debug for OAuthConfig {
    // Only which providers are on and their public settings; the secrets never.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field(
                "google",
                &self.google.as_ref().map(|g| (&g.client_id, &g.issuer)),
            )
            .field(
                "github",
                &self.github.as_ref().map(|g| (&g.client_id, &g.api_url)),
            )
            .finish()
    }
}

impl fmt::Debug for GoogleConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoogleConfig({}, {})", self.client_id, self.issuer)
    }
}

impl fmt::Debug for GithubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GithubConfig({}, {})", self.client_id, self.api_url)
    }
}

impl OAuthConfig {
    pub fn any(&self) -> bool {
        self.google.is_some() || self.github.is_some()
    }

    /// Every problem, each naming its key; values are never quoted (a secret may be among them).
    pub fn problems(&self, public_url: Option<&str>) -> Vec<String> {
        let mut errors = Vec::new();
        if self.any() {
            match public_url {
                None => errors.push(
                    "server.public_url: required when an [oauth.*] provider is configured \
                     (redirect URIs are built from it)"
                        .into(),
                ),
                Some(u) => {
                    if let Err(e) = parse_public_url(u) {
                        errors.push(format!("server.public_url: {e}"));
                    }
                }
            }
        }
        if let Some(g) = &self.google {
            client_problems("oauth.google", &g.client_id, &g.client_secret, &mut errors);
            url_problem("oauth.google.issuer", &g.issuer, &mut errors);
        }
        if let Some(g) = &self.github {
            client_problems("oauth.github", &g.client_id, &g.client_secret, &mut errors);
            url_problem("oauth.github.authorize_url", &g.authorize_url, &mut errors);
            url_problem("oauth.github.token_url", &g.token_url, &mut errors);
            url_problem("oauth.github.api_url", &g.api_url, &mut errors);
        }
        errors
    }
}

/// The gateway's external origin: `scheme://host[:port]`, no path (the gateway owns `/auth/`).
pub fn parse_public_url(raw: &str) -> Result<String, String> {
    let url = parse_http_url(raw.trim_end_matches('/'))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("give only scheme://host[:port], without a path".into());
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn client_problems(section: &str, id: &str, secret: &str, errors: &mut Vec<String>) {
    for (key, value) in [("client_id", id), ("client_secret", secret)] {
        if value.trim().is_empty() {
            errors.push(format!("{section}.{key}: required"));
        } else if value.len() > MAX_CLIENT_VALUE_LEN || value.chars().any(char::is_control) {
            errors.push(format!(
                "{section}.{key}: at most {MAX_CLIENT_VALUE_LEN} characters, no control characters"
            ));
        }
    }
}

fn url_problem(key: &str, value: &str, errors: &mut Vec<String>) {
    if let Err(e) = parse_http_url(value) {
        errors.push(format!("{key}: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_url_is_an_origin() {
        assert_eq!(
            parse_public_url("https://hq.example.com/").unwrap(),
            "https://hq.example.com"
        );
        assert_eq!(
            parse_public_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        assert!(parse_public_url("http://hq.example.com").is_err());
        assert!(parse_public_url("https://hq.example.com/app").is_err());
        assert!(parse_public_url("https://hq.example.com/?x=1").is_err());
    }

    #[test]
    fn a_provider_needs_its_client_and_a_public_url() {
        let c = OAuthConfig {
            google: Some(GoogleConfig::default()),
            github: None,
        };
        let p = c.problems(None).join("\n");
        assert!(p.contains("server.public_url: required"), "{p}");
        assert!(p.contains("oauth.google.client_id: required"), "{p}");
        assert!(p.contains("oauth.google.client_secret: required"), "{p}");
        let c = OAuthConfig {
            google: None,
            github: Some(GithubConfig {
                client_id: "id".into(),
                client_secret: "s3cr3t".into(),
                api_url: "http://api.example.com".into(),
                ..GithubConfig::default()
            }),
        };
        let p = c.problems(Some("https://hq.example.com")).join("\n");
        assert!(p.contains("oauth.github.api_url: plain http"), "{p}");
        assert!(!p.contains("s3cr3t"));
        assert!(!format!("{c:?}").contains("s3cr3t"));
        assert!(OAuthConfig::default().problems(None).is_empty());
    }
}

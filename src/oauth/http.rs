//! Outgoing HTTP to the providers: one client with tight limits (timeouts, no redirects, a cap on
//! response size), the transport the `oauth2` crate uses for the token exchange, and JSON GETs
//! for discovery, JWKS and the GitHub API.
//!
//! The token endpoint's answer is normalized before `oauth2` reads it, because GitHub answers
//! form-encoded unless asked for JSON (and some of its proxies ignore the ask), and reports a bad
//! code with **200** and an `error` field. Both become what RFC 6749 says: JSON, and a 400 for an
//! error.

use std::sync::Arc;
use std::time::Duration;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use super::OAuthError;
use crate::metrics::Metrics;

/// Largest answer read from a provider (a JWKS with a handful of keys is a few KiB).
pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(10);
/// GitHub refuses API calls without a User-Agent.
const AGENT: &str = concat!("xelon-gateway/", env!("CARGO_PKG_VERSION"));

/// A transport failure, as `oauth2` wants it (`std::error::Error`). Never holds a URL's query
/// or a body: those may carry codes and tokens.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

#[derive(Clone)]
pub struct ProviderHttp {
    client: reqwest::Client,
    metrics: Arc<Metrics>,
    provider: &'static str,
}

impl ProviderHttp {
    pub fn new(provider: &'static str, metrics: Arc<Metrics>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            // A redirect could carry a credential to another host; providers don't redirect API calls.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(AGENT)
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            metrics,
            provider,
        })
    }

    fn count(&self, call: &str, result: &str) {
        self.metrics
            .oauth_provider_calls
            .with_label_values(&[self.provider, call, result])
            .inc();
    }

    /// The token exchange for `oauth2`: sends the prepared request, normalizes the answer.
    pub async fn token_call(
        &self,
        request: oauth2::HttpRequest,
    ) -> Result<oauth2::HttpResponse, TransportError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let sent = self
            .client
            .request(parts.method, &url)
            .headers(parts.headers)
            .body(body)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                self.count("token", "unreachable");
                return Err(TransportError(describe(&e)));
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(CONTENT_TYPE).cloned();
        let body = match read_limited(resp).await {
            Ok(b) => b,
            Err(e) => {
                self.count("token", "unreachable");
                return Err(TransportError(e));
            }
        };
        let (status, body) = normalize_token_answer(status, content_type.as_ref(), body);
        self.count("token", if status.is_success() { "ok" } else { "error" });
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        out.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(out)
    }

    /// GET a JSON document; `bearer` adds `Authorization: Bearer`. Any non-2xx is an error
    /// naming the call and the status.
    pub async fn get_json<T: DeserializeOwned>(
        &self,
        call: &'static str,
        url: &str,
        bearer: Option<&str>,
    ) -> Result<T, OAuthError> {
        let mut req = self
            .client
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        if call.starts_with("user") {
            // GitHub's versioned media type; harmless elsewhere.
            req = req
                .header(http::header::ACCEPT, "application/vnd.github+json")
                .header("x-github-api-version", "2022-11-28");
        }
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        let resp = req.send().await.map_err(|e| {
            self.count(call, "unreachable");
            OAuthError::Unreachable(format!("{call}: {}", describe(&e)))
        })?;
        let status = resp.status();
        let body = read_limited(resp).await.map_err(|e| {
            self.count(call, "unreachable");
            OAuthError::Unreachable(format!("{call}: {e}"))
        })?;
        if !status.is_success() {
            self.count(call, "error");
            return Err(OAuthError::BadResponse(format!(
                "{call}: the provider answered {status}"
            )));
        }
        serde_json::from_slice(&body)
            .inspect(|_| self.count(call, "ok"))
            .map_err(|e| {
                self.count(call, "error");
                OAuthError::BadResponse(format!("{call}: unexpected answer ({e})"))
            })
    }
}

/// A transport error without its URL (which may hold a code in its query).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_redirect() {
        "redirects are not followed".into()
    } else {
        let text = e.to_string();
        match e.url() {
            Some(url) => text.replace(url.as_str(), "<url>"),
            None => text,
        }
    }
}

/// Reads at most `MAX_RESPONSE_BYTES`; a longer answer is an error, not a truncated document.
async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, String> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer failed: {}", describe(&e)))?
    {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(format!("answer larger than {MAX_RESPONSE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Form-encoded → JSON object of strings; a 200 carrying `error` → 400 (see the module docs).
fn normalize_token_answer(
    status: StatusCode,
    content_type: Option<&HeaderValue>,
    body: Vec<u8>,
) -> (StatusCode, Vec<u8>) {
    let is_form = content_type.and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    let body = if is_form {
        let map: serde_json::Map<String, serde_json::Value> = url::form_urlencoded::parse(&body)
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
        serde_json::to_vec(&map).unwrap_or_default()
    } else {
        body
    };
    let has_error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("error").is_some());
    let status = if status == StatusCode::OK && has_error {
        StatusCode::BAD_REQUEST
    } else {
        status
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_answers_become_json_and_errors_become_400() {
        let form = HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8");
        let (status, body) = normalize_token_answer(
            StatusCode::OK,
            Some(&form),
            b"access_token=gho_x&scope=read%3Auser&token_type=bearer".to_vec(),
        );
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["access_token"], "gho_x");
        assert_eq!(v["scope"], "read:user");

        let (status, _) = normalize_token_answer(
            StatusCode::OK,
            Some(&form),
            b"error=bad_verification_code&error_description=The+code+is+wrong".to_vec(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let json = HeaderValue::from_static("application/json");
        let (status, _) = normalize_token_answer(
            StatusCode::OK,
            Some(&json),
            br#"{"error":"bad_verification_code"}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = normalize_token_answer(
            StatusCode::OK,
            Some(&json),
            br#"{"access_token":"x","token_type":"bearer"}"#.to_vec(),
        );
        assert_eq!(status, StatusCode::OK);
    }
}

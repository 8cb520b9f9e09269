//! Local stand-ins for the two Quick Login providers, started by the tests on `127.0.0.1:0`:
//!
//! - [`FakeOidc`]: an OpenID provider shaped like Google's (discovery, authorize, token, JWKS,
//!   userinfo) that signs RS256 ID tokens with a test-only key from `tests/fixtures/`.
//! - [`FakeGithub`]: GitHub's OAuth app endpoints and the two REST calls Quick Login needs
//!   (`/user`, `/user/emails`), with GitHub's quirks (form-encoded token answers unless JSON is
//!   asked for, errors as 200, a mandatory `User-Agent`).
//!
//! They are strict where a real provider is strict, and on purpose stricter where our gateway
//! must do more than a provider demands (PKCE S256, `state`, the OIDC `nonce`): a gateway that
//! skips one of those gets a 400 here instead of a silent pass. Every refusal names its reason, so
//! a failing flow test says what the gateway sent wrong. The self-tests (`oidc_tests`,
//! `github_tests`) drive both fakes by hand with reqwest, so a failing flow test is about the
//! gateway, not the fake.

mod github;
mod github_tests;
mod oidc;
mod oidc_tests;
mod test_client;

pub use github::FakeGithub;
pub use oidc::{FakeOidc, Tamper};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rand::Rng;
use reqwest::Url;
use sha2::{Digest, Sha256};

/// How long a code can be redeemed (GitHub and Google both use 10 minutes).
const CODE_TTL: i64 = 600;
const TOKEN_TTL: i64 = 3600;

type Params = HashMap<String, String>;
type Shared<S> = Arc<Mutex<S>>;

// ---------------------------------------------------------------------------------------------
// Pieces both providers share: request parsing, the authorize checks, codes, client auth, PKCE
// ---------------------------------------------------------------------------------------------

/// Pairs as a map; a parameter given twice is refused (RFC 6749 §3.1).
fn unique(pairs: Vec<(String, String)>) -> Result<Params, String> {
    let mut map = Params::new();
    for (k, v) in pairs {
        if map.insert(k.clone(), v).is_some() {
            return Err(format!("parameter {k} is given more than once"));
        }
    }
    Ok(map)
}

/// A parameter; an empty value counts as absent (RFC 6749 §3.1).
fn param<'a>(p: &'a Params, name: &str) -> Option<&'a str> {
    p.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn required<'a>(p: &'a Params, name: &str) -> Result<&'a str, String> {
    param(p, name).ok_or_else(|| format!("{name} is missing"))
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 24] = rand::thread_rng().gen();
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// RFC 7636 §4.6: BASE64URL-NOPAD(SHA256(ASCII(code_verifier))) == code_challenge, with the
/// verifier 43..=128 unreserved characters (§4.1).
fn pkce_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    well_formed && URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge
}

/// `application/x-www-form-urlencoded` serialization.
fn form_encode(pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse("http://form.invalid/").unwrap();
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_string()
}

/// `application/x-www-form-urlencoded` decoding of one component; `None` if malformed.
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn bad_request(reason: String) -> Response {
    (StatusCode::BAD_REQUEST, reason).into_response()
}

/// 302 to `redirect_uri` with `params` added to whatever query it already has.
fn redirect_back(redirect_uri: &Url, params: &[(&str, &str)]) -> Response {
    let mut url = redirect_uri.clone();
    url.query_pairs_mut().extend_pairs(params);
    (StatusCode::FOUND, [(header::LOCATION, url.to_string())]).into_response()
}

/// An authorization request that passed the checks both providers make.
struct AuthorizeRequest {
    redirect_uri: Url,
    /// Exactly as sent: the token request must repeat this string.
    redirect_uri_raw: String,
    state: String,
    code_challenge: String,
    scope: Vec<String>,
}

fn check_authorize(
    p: &Params,
    client_id: &str,
    registered_redirect: Option<&str>,
) -> Result<AuthorizeRequest, String> {
    let id = required(p, "client_id")?;
    if id != client_id {
        return Err(format!("unknown client_id {id:?}"));
    }
    let raw = required(p, "redirect_uri")?;
    let redirect_uri =
        Url::parse(raw).map_err(|e| format!("redirect_uri {raw:?} is not an absolute URL: {e}"))?;
    if !matches!(redirect_uri.scheme(), "http" | "https") || redirect_uri.fragment().is_some() {
        return Err(format!(
            "redirect_uri {raw:?} must be http(s) without a fragment"
        ));
    }
    if let Some(registered) = registered_redirect {
        if raw != registered {
            return Err(format!(
                "redirect_uri_mismatch: {raw:?} is not the registered {registered:?}"
            ));
        }
    }
    let state = required(p, "state")?;
    let code_challenge =
        required(p, "code_challenge").map_err(|e| format!("{e}: PKCE is required"))?;
    match param(p, "code_challenge_method") {
        Some("S256") => {}
        Some(other) => {
            return Err(format!(
                "code_challenge_method {other:?} is not accepted: PKCE must use S256"
            ))
        }
        None => {
            return Err(
                "code_challenge_method is missing (it would default to plain): PKCE must use S256"
                    .into(),
            )
        }
    }
    let digest_like = code_challenge.len() == 43
        && code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !digest_like {
        return Err(format!(
            "code_challenge {code_challenge:?} is not BASE64URL-NOPAD of a SHA-256 digest"
        ));
    }
    Ok(AuthorizeRequest {
        redirect_uri,
        redirect_uri_raw: raw.to_string(),
        state: state.to_string(),
        code_challenge: code_challenge.to_string(),
        scope: param(p, "scope")
            .unwrap_or_default()
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

/// What a code stands for: who asked, for where, with which PKCE challenge, as whom.
struct Grant<A> {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    scope: Vec<String>,
    account: A,
    expires_at: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenErrorKind {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnsupportedGrantType,
    RedirectUriMismatch,
}

struct TokenError {
    kind: TokenErrorKind,
    description: String,
}

fn token_error(kind: TokenErrorKind, description: impl Into<String>) -> TokenError {
    TokenError {
        kind,
        description: description.into(),
    }
}

/// Client authentication at the token endpoint: HTTP Basic with form-urlencoded id and secret
/// (RFC 6749 §2.3.1, what the `oauth2` crate sends by default) or `client_id` + `client_secret`
/// in the body. Using both at once is refused (§2.3: one method per request).
fn authenticate_client(
    headers: &HeaderMap,
    form: &Params,
    client_id: &str,
    client_secret: &str,
) -> Result<(), TokenError> {
    use TokenErrorKind::*;
    let (id, secret) =
        match headers.get(header::AUTHORIZATION) {
            Some(value) => {
                if form.contains_key("client_secret") {
                    return Err(token_error(
                        InvalidRequest,
                        "client authenticated both with HTTP Basic and client_secret in the body",
                    ));
                }
                let basic = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.split_once(' '))
                    .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                    .and_then(|(_, b64)| STANDARD.decode(b64.trim()).ok())
                    .and_then(|raw| String::from_utf8(raw).ok());
                let pair = basic.as_deref().and_then(|b| b.split_once(':'));
                let Some((id, secret)) = pair else {
                    return Err(token_error(
                        InvalidClient,
                        "Authorization is not HTTP Basic client credentials",
                    ));
                };
                let (Some(id), Some(secret)) = (form_decode(id), form_decode(secret)) else {
                    return Err(token_error(
                        InvalidClient,
                        "Basic credentials are not form-urlencoded",
                    ));
                };
                if param(form, "client_id").is_some_and(|body_id| body_id != id) {
                    return Err(token_error(
                        InvalidRequest,
                        "client_id in the body differs from the Basic one",
                    ));
                }
                (id, secret)
            }
            None => match (param(form, "client_id"), param(form, "client_secret")) {
                (Some(id), Some(secret)) => (id.to_string(), secret.to_string()),
                _ => return Err(token_error(
                    InvalidClient,
                    "no client authentication (neither HTTP Basic nor client_id + client_secret)",
                )),
            },
        };
    if id != client_id || secret != client_secret {
        return Err(token_error(
            InvalidClient,
            "unknown client or wrong client secret",
        ));
    }
    Ok(())
}

/// Checks a token request against its code and uses the code up (also when the checks after
/// the lookup fail: a code is good for one attempt).
fn redeem<A>(
    codes: &mut HashMap<String, Grant<A>>,
    headers: &HeaderMap,
    form: &Params,
    client: (&str, &str),
    now: i64,
    redirect_uri_required: bool,
) -> Result<Grant<A>, TokenError> {
    use TokenErrorKind::*;
    match param(form, "grant_type") {
        Some("authorization_code") => {}
        Some(other) => {
            return Err(token_error(
                UnsupportedGrantType,
                format!("grant_type {other:?}"),
            ))
        }
        None if redirect_uri_required => {
            return Err(token_error(InvalidRequest, "grant_type is missing"))
        }
        None => {}
    }
    authenticate_client(headers, form, client.0, client.1)?;
    let code = required(form, "code").map_err(|e| token_error(InvalidRequest, e))?;
    let verifier = required(form, "code_verifier")
        .map_err(|e| token_error(InvalidRequest, format!("{e}: PKCE is required")))?;
    let redirect_uri = param(form, "redirect_uri");
    if redirect_uri_required && redirect_uri.is_none() {
        return Err(token_error(InvalidRequest, "redirect_uri is missing"));
    }
    let grant = codes
        .remove(code)
        .ok_or_else(|| token_error(InvalidGrant, "code is unknown or already used"))?;
    if grant.client_id != client.0 {
        return Err(token_error(
            InvalidGrant,
            "code was issued to another client",
        ));
    }
    if now >= grant.expires_at {
        return Err(token_error(InvalidGrant, "code has expired"));
    }
    if redirect_uri.is_some_and(|r| r != grant.redirect_uri) {
        return Err(token_error(
            RedirectUriMismatch,
            "redirect_uri differs from the one in the authorization request",
        ));
    }
    if !pkce_matches(verifier, &grant.code_challenge) {
        return Err(token_error(
            InvalidGrant,
            "code_verifier does not match the code_challenge",
        ));
    }
    Ok(grant)
}

/// The token of an `Authorization: <scheme> <token>` header when the scheme is one of `schemes`.
fn bearer<'a>(headers: &'a HeaderMap, schemes: &[&str]) -> Option<&'a str> {
    let (scheme, token) = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .split_once(' ')?;
    schemes
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme))
        .then_some(token.trim())
}

/// A listener on a free loopback port and its base URL.
async fn bind() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    (listener, base)
}

fn spawn(listener: tokio::net::TcpListener, app: Router) {
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
}

/// Follows a 302 from the gateway's /start to the fake's authorize endpoint and returns the
/// Location the fake redirects back to (the gateway callback URL with code and state). The
/// client must not follow redirects (the harness client does not). Fails the test with the
/// fake's reason when it refuses the request.
pub async fn authorize_redirect(client: &reqwest::Client, authorize_url: &str) -> String {
    let resp = client.get(authorize_url).send().await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::LOCATION)
        .map(|l| l.to_str().unwrap().to_string());
    match location {
        Some(location) if status == StatusCode::FOUND => location,
        _ => panic!(
            "the provider did not redirect back from {authorize_url}: {status} {:?} \
             (is the client following redirects?)",
            resp.text().await.unwrap_or_default()
        ),
    }
}

/// The query parameters of a URL (e.g. a Location header) as a map.
pub fn query_params(url: &str) -> HashMap<String, String> {
    Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

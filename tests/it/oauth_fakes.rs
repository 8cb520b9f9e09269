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
//! a failing flow test says what the gateway sent wrong. The self-tests at the bottom drive both
//! fakes by hand with reqwest, so a failing flow test is about the gateway, not the fake.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::Rng;
use reqwest::Url;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xelon_gateway::clock::{SharedClock, SystemClock};

/// Test-only RSA keys (`openssl genrsa 2048`, PKCS#8 PEM). Never used outside these fakes.
const SIGNING_KEY_PEM: &str = include_str!("../fixtures/oidc-test-signing-key.pem");
const OTHER_KEY_PEM: &str = include_str!("../fixtures/oidc-test-other-key.pem");
/// The `kid` of the signing key, the only key in the JWKS.
pub const OIDC_KID: &str = "xgw-test-oidc-key-1";
/// How long a code can be redeemed (GitHub and Google both use 10 minutes).
const CODE_TTL: i64 = 600;
const TOKEN_TTL: i64 = 3600;

type Params = HashMap<String, String>;
type Shared<S> = Arc<Mutex<S>>;

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

struct Keys {
    signing: EncodingKey,
    other: EncodingKey,
    /// The public JWK of `signing`.
    jwk: Value,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    signing: EncodingKey::from_rsa_pem(SIGNING_KEY_PEM.as_bytes()).unwrap(),
    other: EncodingKey::from_rsa_pem(OTHER_KEY_PEM.as_bytes()).unwrap(),
    jwk: rsa_jwk(SIGNING_KEY_PEM, OIDC_KID),
});

/// The public JWK of a PKCS#8 PEM RSA key. `ring` (already a dependency) parses the key and
/// hands out the public modulus and exponent as `RsaPublicKeyComponents`, so the JWKS is
/// computed from the one committed PEM: nothing to keep in sync by hand, no DER walk of our own.
fn rsa_jwk(pem: &str, kid: &str) -> Value {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    let public = ring::signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
    json!({
        "kty": "RSA",
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(&public.n),
        "e": URL_SAFE_NO_PAD.encode(&public.e),
    })
}

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

// ---------------------------------------------------------------------------------------------
// The OpenID provider
// ---------------------------------------------------------------------------------------------

/// How the ID tokens issued from now on are spoiled. Everything else about the token stays valid,
/// so a verifier that rejects it rejects it for exactly this reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    None,
    /// `nonce` is not the one from the authorization request.
    WrongNonce,
    /// `aud` (and `azp`) name another client.
    WrongAudience,
    /// `iss` is not the discovered issuer.
    WrongIssuer,
    /// Signed by a key not in the JWKS, under the JWKS key's `kid`.
    BadSignature,
    /// `exp` an hour ago (`iat` two hours ago): beyond any sane leeway.
    Expired,
    /// Signed by the real key but under a `kid` the JWKS does not list: keys are chosen by `kid`.
    UnknownKid,
}

#[derive(Debug, Clone)]
struct OidcAccount {
    sub: String,
    email: String,
}

struct OidcState {
    issuer: String,
    client_id: String,
    client_secret: String,
    clock: SharedClock,
    account: OidcAccount,
    tamper: Tamper,
    deny_next: bool,
    registered_redirect: Option<String>,
    last_authorize: Option<Params>,
    codes: HashMap<String, Grant<OidcAccount>>,
    /// Access token -> (account, granted scope, expiry).
    tokens: HashMap<String, (OidcAccount, Vec<String>, i64)>,
}

/// A local OpenID provider shaped like Google's. See the module doc.
pub struct FakeOidc {
    /// `http://127.0.0.1:PORT`; discovery is at `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    state: Shared<OidcState>,
}

impl FakeOidc {
    pub async fn start(client_id: &str, client_secret: &str) -> FakeOidc {
        LazyLock::force(&KEYS); // a broken fixture fails here, not inside a handler
        let (listener, issuer) = bind().await;
        let state = Arc::new(Mutex::new(OidcState {
            issuer: issuer.clone(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            clock: Arc::new(SystemClock),
            account: OidcAccount {
                sub: "110248495921238986420".into(),
                email: "ada@example.test".into(),
            },
            tamper: Tamper::None,
            deny_next: false,
            registered_redirect: None,
            last_authorize: None,
            codes: HashMap::new(),
            tokens: HashMap::new(),
        }));
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(oidc_discovery))
            .route("/authorize", get(oidc_authorize))
            .route("/token", post(oidc_token))
            .route("/jwks", get(oidc_jwks))
            .route("/userinfo", get(oidc_userinfo))
            .with_state(state.clone());
        spawn(listener, app);
        FakeOidc { issuer, state }
    }

    fn lock(&self) -> MutexGuard<'_, OidcState> {
        self.state.lock().unwrap()
    }

    /// The account the next authorizations sign in as (until changed).
    pub fn sign_in_as(&self, sub: &str, email: &str) {
        self.lock().account = OidcAccount {
            sub: sub.into(),
            email: email.into(),
        };
    }

    /// How the ID tokens issued from now on are spoiled.
    pub fn tamper(&self, t: Tamper) {
        self.lock().tamper = t;
    }

    /// The next authorization answers `error=access_denied` instead of a code.
    pub fn deny_next(&self) {
        self.lock().deny_next = true;
    }

    /// Query parameters of the last /authorize request (to assert PKCE, nonce, scope,
    /// redirect_uri), recorded also when the request was refused.
    pub fn last_authorize(&self) -> Option<HashMap<String, String>> {
        self.lock().last_authorize.clone()
    }

    /// Register `uri` as the client's only redirect URI: from now on /authorize refuses any other
    /// (as Google does with `redirect_uri_mismatch`). Unset, any http(s) URI is accepted.
    pub fn register_redirect_uri(&self, uri: &str) {
        self.lock().registered_redirect = Some(uri.into());
    }

    /// Time for `iat`/`exp` and code expiry; the real clock unless set (share the gateway's
    /// `ManualClock` when a test moves time).
    pub fn use_clock(&self, clock: SharedClock) {
        self.lock().clock = clock;
    }
}

async fn oidc_discovery(State(s): State<Shared<OidcState>>) -> Json<Value> {
    let issuer = s.lock().unwrap().issuer.clone();
    Json(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "email", "profile"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "grant_types_supported": ["authorization_code"],
        "claims_supported": ["aud", "email", "email_verified", "exp", "iat", "iss", "sub", "nonce"],
    }))
}

async fn oidc_authorize(
    State(s): State<Shared<OidcState>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.last_authorize = Some(pairs.iter().cloned().collect());
    let p = match unique(pairs) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    if param(&p, "response_type") != Some("code") {
        return bad_request(format!(
            "response_type must be code, got {:?}",
            param(&p, "response_type")
        ));
    }
    let req = match check_authorize(&p, &st.client_id, st.registered_redirect.as_deref()) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if !req.scope.iter().any(|s| s == "openid") {
        return bad_request(format!(
            "scope {:?} does not contain openid",
            param(&p, "scope")
        ));
    }
    // OIDC only requires a nonce for implicit flows; we require it because the gateway must
    // bind its ID token to the browser session.
    let Some(nonce) = param(&p, "nonce") else {
        return bad_request("nonce is missing: the ID token must be bound to the request".into());
    };
    if std::mem::take(&mut st.deny_next) {
        return redirect_back(
            &req.redirect_uri,
            &[
                ("error", "access_denied"),
                ("error_description", "The user denied the request."),
                ("state", &req.state),
            ],
        );
    }
    let code = random_token("4/0Aoidc-");
    let scope = req.scope.join(" ");
    let grant = Grant {
        client_id: st.client_id.clone(),
        redirect_uri: req.redirect_uri_raw.clone(),
        code_challenge: req.code_challenge.clone(),
        nonce: Some(nonce.to_string()),
        scope: req.scope.clone(),
        account: st.account.clone(),
        expires_at: st.clock.now() + CODE_TTL,
    };
    st.codes.insert(code.clone(), grant);
    // Google adds `scope`, `authuser` and `prompt` to the callback: a callback must ignore
    // parameters it does not know.
    redirect_back(
        &req.redirect_uri,
        &[
            ("state", &req.state),
            ("code", &code),
            ("scope", &scope),
            ("authuser", "0"),
            ("prompt", "consent"),
        ],
    )
}

fn oidc_token_error(e: TokenError) -> Response {
    use TokenErrorKind::*;
    let (status, code) = match e.kind {
        // RFC 6749 §5.2 allows 401 for invalid_client (Google answers 401).
        InvalidClient => (StatusCode::UNAUTHORIZED, "invalid_client"),
        InvalidRequest => (StatusCode::BAD_REQUEST, "invalid_request"),
        InvalidGrant | RedirectUriMismatch => (StatusCode::BAD_REQUEST, "invalid_grant"),
        UnsupportedGrantType => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(json!({ "error": code, "error_description": e.description })),
    )
        .into_response()
}

async fn oidc_token(
    State(s): State<Shared<OidcState>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = match unique(pairs) {
        Ok(f) => f,
        Err(e) => return oidc_token_error(token_error(TokenErrorKind::InvalidRequest, e)),
    };
    let mut guard = s.lock().unwrap();
    let st = &mut *guard;
    let now = st.clock.now();
    let client = (st.client_id.as_str(), st.client_secret.as_str());
    let grant = match redeem(&mut st.codes, &headers, &form, client, now, true) {
        Ok(g) => g,
        Err(e) => return oidc_token_error(e),
    };
    let access_token = random_token("ya29.fake-");
    let id_token = id_token(st, &grant, &access_token, now);
    st.tokens.insert(
        access_token.clone(),
        (grant.account.clone(), grant.scope.clone(), now + TOKEN_TTL),
    );
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        Json(json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_TTL,
            "scope": grant.scope.join(" "),
            "id_token": id_token,
        })),
    )
        .into_response()
}

/// The RS256 ID token for a redeemed grant, spoiled per the current `Tamper`.
fn id_token(st: &OidcState, grant: &Grant<OidcAccount>, access_token: &str, now: i64) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    let mut claims = json!({
        "iss": st.issuer,
        "sub": grant.account.sub,
        "aud": st.client_id,
        "azp": st.client_id,
        "iat": now,
        "exp": now + TOKEN_TTL,
        "nonce": grant.nonce,
        "at_hash": URL_SAFE_NO_PAD.encode(&digest[..16]),
    });
    // Like Google: the email claims come with the `email` scope only.
    if grant.scope.iter().any(|s| s == "email") {
        claims["email"] = json!(grant.account.email);
        claims["email_verified"] = json!(true);
    }
    let (mut key, mut kid) = (&KEYS.signing, OIDC_KID);
    match st.tamper {
        Tamper::None => {}
        Tamper::WrongNonce => claims["nonce"] = json!("not-the-nonce-you-sent"),
        Tamper::WrongAudience => {
            claims["aud"] = json!("another-client.apps.example.test");
            claims["azp"] = json!("another-client.apps.example.test");
        }
        Tamper::WrongIssuer => claims["iss"] = json!("https://accounts.example.invalid"),
        Tamper::Expired => {
            claims["iat"] = json!(now - 2 * TOKEN_TTL);
            claims["exp"] = json!(now - TOKEN_TTL);
        }
        Tamper::BadSignature => key = &KEYS.other,
        Tamper::UnknownKid => kid = "xgw-test-oidc-key-unknown",
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

async fn oidc_jwks() -> Json<Value> {
    Json(json!({ "keys": [KEYS.jwk.clone()] }))
}

async fn oidc_userinfo(State(s): State<Shared<OidcState>>, headers: HeaderMap) -> Response {
    let st = s.lock().unwrap();
    let now = st.clock.now();
    let found = bearer(&headers, &["Bearer"])
        .and_then(|t| st.tokens.get(t))
        .filter(|(_, _, expires_at)| now < *expires_at);
    let Some((account, scope, _)) = found else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
            Json(json!({ "error": "invalid_token" })),
        )
            .into_response();
    };
    let mut info = json!({ "sub": account.sub });
    if scope.iter().any(|s| s == "email") {
        info["email"] = json!(account.email);
        info["email_verified"] = json!(true);
    }
    Json(info).into_response()
}

// ---------------------------------------------------------------------------------------------
// The GitHub stand-in
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct GithubAccount {
    id: u64,
    login: String,
    name: Option<String>,
    /// (email, primary, verified)
    emails: Vec<(String, bool, bool)>,
}

struct GithubState {
    client_id: String,
    client_secret: String,
    clock: SharedClock,
    account: GithubAccount,
    deny_next: bool,
    force_form: bool,
    registered_redirect: Option<String>,
    last_authorize: Option<Params>,
    codes: HashMap<String, Grant<GithubAccount>>,
    tokens: HashMap<String, GithubAccount>,
}

/// A local stand-in for GitHub's OAuth app endpoints and REST API. See the module doc.
pub struct FakeGithub {
    /// `{base}/login/oauth/authorize`
    pub authorize_url: String,
    /// `{base}/login/oauth/access_token`
    pub token_url: String,
    /// `{base}/api`: `{api_url}/user`, `{api_url}/user/emails`
    pub api_url: String,
    state: Shared<GithubState>,
}

impl FakeGithub {
    pub async fn start(client_id: &str, client_secret: &str) -> FakeGithub {
        let (listener, base) = bind().await;
        let state = Arc::new(Mutex::new(GithubState {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            clock: Arc::new(SystemClock),
            account: GithubAccount {
                id: 583231,
                login: "octocat".into(),
                name: None,
                emails: vec![("octocat@example.test".into(), true, true)],
            },
            deny_next: false,
            force_form: false,
            registered_redirect: None,
            last_authorize: None,
            codes: HashMap::new(),
            tokens: HashMap::new(),
        }));
        let app = Router::new()
            .route("/login/oauth/authorize", get(github_authorize))
            .route("/login/oauth/access_token", post(github_token))
            .route("/api/user", get(github_user))
            .route("/api/user/emails", get(github_emails))
            .with_state(state.clone());
        spawn(listener, app);
        FakeGithub {
            authorize_url: format!("{base}/login/oauth/authorize"),
            token_url: format!("{base}/login/oauth/access_token"),
            api_url: format!("{base}/api"),
            state,
        }
    }

    fn lock(&self) -> MutexGuard<'_, GithubState> {
        self.state.lock().unwrap()
    }

    /// Next sign-ins are as this GitHub user; emails: (email, primary, verified). The profile
    /// `name` is kept (null unless `set_name`), `email` on `/user` is always null (no public
    /// email), so the gateway must use `/user/emails`.
    pub fn sign_in_as(&self, id: u64, login: &str, emails: &[(&str, bool, bool)]) {
        let mut st = self.lock();
        st.account.id = id;
        st.account.login = login.into();
        st.account.emails = emails
            .iter()
            .map(|(e, primary, verified)| (e.to_string(), *primary, *verified))
            .collect();
    }

    /// The profile name of the next sign-ins (`None`: GitHub's `"name": null`).
    pub fn set_name(&self, name: Option<&str>) {
        self.lock().account.name = name.map(str::to_string);
    }

    pub fn deny_next(&self) {
        self.lock().deny_next = true;
    }

    /// Answer the token endpoint form-encoded even when JSON is asked for.
    pub fn force_form_token_response(&self, on: bool) {
        self.lock().force_form = on;
    }

    pub fn last_authorize(&self) -> Option<HashMap<String, String>> {
        self.lock().last_authorize.clone()
    }

    /// Register `uri` as the OAuth app's only callback URL: /authorize refuses any other.
    pub fn register_redirect_uri(&self, uri: &str) {
        self.lock().registered_redirect = Some(uri.into());
    }

    /// Time for code expiry; the real clock unless set.
    pub fn use_clock(&self, clock: SharedClock) {
        self.lock().clock = clock;
    }
}

const GITHUB_SCOPES: [&str; 2] = ["read:user", "user:email"];

async fn github_authorize(
    State(s): State<Shared<GithubState>>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Response {
    let mut st = s.lock().unwrap();
    st.last_authorize = Some(pairs.iter().cloned().collect());
    let p = match unique(pairs) {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let req = match check_authorize(&p, &st.client_id, st.registered_redirect.as_deref()) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    // GitHub accepts scopes separated by spaces (and commas, which we do not expect).
    for needed in GITHUB_SCOPES {
        if !req.scope.iter().any(|s| s == needed) {
            return bad_request(format!(
                "scope {:?} lacks {needed} (expected \"read:user user:email\")",
                param(&p, "scope")
            ));
        }
    }
    if std::mem::take(&mut st.deny_next) {
        return redirect_back(
            &req.redirect_uri,
            &[
                ("error", "access_denied"),
                (
                    "error_description",
                    "The user has denied your application access.",
                ),
                (
                    "error_uri",
                    "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/#access-denied",
                ),
                ("state", &req.state),
            ],
        );
    }
    let code = random_token("ghcode").chars().take(20).collect::<String>();
    let grant = Grant {
        client_id: st.client_id.clone(),
        redirect_uri: req.redirect_uri_raw.clone(),
        code_challenge: req.code_challenge.clone(),
        nonce: None,
        scope: req.scope.clone(),
        account: st.account.clone(),
        expires_at: st.clock.now() + CODE_TTL,
    };
    st.codes.insert(code.clone(), grant);
    redirect_back(&req.redirect_uri, &[("code", &code), ("state", &req.state)])
}

/// GitHub's token answer: JSON if asked for with `Accept: application/json` (and not forced to
/// form), else `application/x-www-form-urlencoded`. Always 200, errors included.
fn github_answer(json: bool, fields: &[(&str, &str)]) -> Response {
    if json {
        let map: serde_json::Map<String, Value> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        Json(Value::Object(map)).into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            form_encode(fields),
        )
            .into_response()
    }
}

async fn github_token(
    State(s): State<Shared<GithubState>>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let mut guard = s.lock().unwrap();
    let st = &mut *guard;
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/json"));
    let json = wants_json && !st.force_form;
    let now = st.clock.now();
    let client = (st.client_id.as_str(), st.client_secret.as_str());
    // GitHub does not ask for grant_type and treats redirect_uri as optional (checked if sent).
    let redeemed = unique(pairs)
        .map_err(|e| token_error(TokenErrorKind::InvalidRequest, e))
        .and_then(|form| redeem(&mut st.codes, &headers, &form, client, now, false));
    let grant = match redeemed {
        Ok(g) => g,
        Err(e) => {
            let (code, uri) = match e.kind {
                TokenErrorKind::InvalidClient => (
                    "incorrect_client_credentials",
                    "#incorrect-client-credentials",
                ),
                TokenErrorKind::RedirectUriMismatch => {
                    ("redirect_uri_mismatch", "#redirect-uri-mismatch2")
                }
                _ => ("bad_verification_code", "#bad-verification-code"),
            };
            let uri = format!(
                "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/{uri}"
            );
            return github_answer(
                json,
                &[
                    ("error", code),
                    ("error_description", &e.description),
                    ("error_uri", &uri),
                ],
            );
        }
    };
    let token = random_token("gho_");
    st.tokens.insert(token.clone(), grant.account);
    // GitHub lists the granted scopes comma-separated.
    let scope = grant.scope.join(",");
    github_answer(
        json,
        &[
            ("access_token", &token),
            ("scope", &scope),
            ("token_type", "bearer"),
        ],
    )
}

enum ApiRefusal {
    NoUserAgent,
    Unauthenticated,
    BadCredentials,
}

impl IntoResponse for ApiRefusal {
    fn into_response(self) -> Response {
        match self {
            ApiRefusal::NoUserAgent => (
                StatusCode::FORBIDDEN,
                "Request forbidden by administrative rules. Please make sure your request has a \
                 User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
                 Check https://developer.github.com for other possible causes.\n",
            )
                .into_response(),
            ApiRefusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "message": "Requires authentication",
                    "documentation_url": "https://docs.github.com/rest/users/users#get-the-authenticated-user",
                    "status": "401",
                })),
            )
                .into_response(),
            ApiRefusal::BadCredentials => (
                StatusCode::UNAUTHORIZED,
                Json(json!({
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401",
                })),
            )
                .into_response(),
        }
    }
}

/// The account behind an API request: `User-Agent` required, then `Bearer` or `token` auth.
fn github_caller(
    s: &Shared<GithubState>,
    headers: &HeaderMap,
) -> Result<GithubAccount, ApiRefusal> {
    if !headers.contains_key(header::USER_AGENT) {
        return Err(ApiRefusal::NoUserAgent);
    }
    if !headers.contains_key(header::AUTHORIZATION) {
        return Err(ApiRefusal::Unauthenticated);
    }
    let token = bearer(headers, &["Bearer", "token"]).ok_or(ApiRefusal::BadCredentials)?;
    s.lock()
        .unwrap()
        .tokens
        .get(token)
        .cloned()
        .ok_or(ApiRefusal::BadCredentials)
}

async fn github_user(State(s): State<Shared<GithubState>>, headers: HeaderMap) -> Response {
    let a = match github_caller(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    Json(json!({
        "login": a.login,
        "id": a.id,
        "node_id": format!("U_kgDO{:08}", a.id),
        "avatar_url": format!("https://avatars.githubusercontent.com/u/{}?v=4", a.id),
        "html_url": format!("https://github.com/{}", a.login),
        "type": "User",
        "site_admin": false,
        "name": a.name,
        "email": null,
    }))
    .into_response()
}

async fn github_emails(State(s): State<Shared<GithubState>>, headers: HeaderMap) -> Response {
    let a = match github_caller(&s, &headers) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let emails: Vec<Value> = a
        .emails
        .iter()
        .map(|(email, primary, verified)| {
            json!({
                "email": email,
                "primary": primary,
                "verified": verified,
                "visibility": if *primary { json!("public") } else { Value::Null },
            })
        })
        .collect();
    Json(Value::Array(emails)).into_response()
}

// ---------------------------------------------------------------------------------------------
// Self-tests: a client doing the code flow with PKCE by hand proves the fakes
// ---------------------------------------------------------------------------------------------

const CLIENT_ID: &str = "xgw-test.apps.example.test";
/// Characters that HTTP Basic client auth must form-urlencode (RFC 6749 §2.3.1).
const CLIENT_SECRET: &str = "s3cr:t+/= &%ü";
/// A callback that already has a query: the code and state are added to it.
const CALLBACK: &str = "http://127.0.0.1:9/auth/oauth/callback?provider=test";
const NONCE: &str = "n-0S6_WzA2Mj";

struct Pkce {
    verifier: String,
    challenge: String,
}

/// The client side of RFC 7636, written out here rather than borrowed from the fake.
fn new_pkce() -> Pkce {
    let bytes: [u8; 32] = rand::thread_rng().gen();
    let verifier = URL_SAFE_NO_PAD.encode(bytes);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce {
        verifier,
        challenge,
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn basic(id: &str, secret: &str) -> String {
    let enc = |v: &str| form_encode(&[("v", v)])["v=".len()..].to_string();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

fn url_with(endpoint: &str, params: &[(&str, String)]) -> String {
    Url::parse_with_params(endpoint, params)
        .unwrap()
        .to_string()
}

fn without(params: &[(&'static str, String)], name: &str) -> Vec<(&'static str, String)> {
    params.iter().filter(|(k, _)| *k != name).cloned().collect()
}

fn replaced(
    params: &[(&'static str, String)],
    name: &str,
    value: &str,
) -> Vec<(&'static str, String)> {
    let mut p = without(params, name);
    p.push((
        params.iter().find(|(k, _)| *k == name).unwrap().0,
        value.to_string(),
    ));
    p
}

async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

// --- OpenID provider ---------------------------------------------------------------------------

async fn discover(c: &reqwest::Client, issuer: &str) -> Value {
    c.get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn oidc_params(pkce: &Pkce) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", CLIENT_ID.into()),
        ("redirect_uri", CALLBACK.into()),
        ("scope", "openid email".into()),
        ("state", "st-1".into()),
        ("nonce", NONCE.into()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".into()),
    ]
}

/// Authorizes as a browser would and returns the code from the callback URL.
async fn oidc_code(c: &reqwest::Client, fake: &FakeOidc, pkce: &Pkce) -> String {
    let d = discover(c, &fake.issuer).await;
    let endpoint = d["authorization_endpoint"].as_str().unwrap();
    let location = authorize_redirect(c, &url_with(endpoint, &oidc_params(pkce))).await;
    assert!(location.starts_with(CALLBACK), "{location}");
    let q = query_params(&location);
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["provider"], "test", "the callback's own query is kept");
    q["code"].clone()
}

/// A token request: `basic` sends the client credentials as HTTP Basic, else in the body.
async fn oidc_redeem(
    c: &reqwest::Client,
    fake: &FakeOidc,
    form: &[(&str, &str)],
    basic_auth: bool,
) -> (u16, Value) {
    let d = discover(c, &fake.issuer).await;
    let mut req = c.post(d["token_endpoint"].as_str().unwrap());
    let mut form = form.to_vec();
    if basic_auth {
        req = req.header(header::AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET));
    } else {
        form.extend([("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)]);
    }
    json_of(req.form(&form).send().await.unwrap()).await
}

fn redeem_form<'a>(code: &'a str, pkce: &'a Pkce) -> Vec<(&'a str, &'a str)> {
    vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", &pkce.verifier),
    ]
}

/// What a relying party must check, done with jsonwebtoken against the discovered JWKS.
async fn verify_id_token(
    c: &reqwest::Client,
    issuer: &str,
    id_token: &str,
) -> Result<Value, String> {
    let d = discover(c, issuer).await;
    let jwks: jsonwebtoken::jwk::JwkSet = c
        .get(d["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(id_token).map_err(|e| format!("{e}"))?;
    let kid = header.kid.ok_or("no kid")?;
    let jwk = jwks.find(&kid).ok_or(format!("unknown kid {kid}"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).map_err(|e| format!("{e}"))?;
    let mut validation = jsonwebtoken::Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[CLIENT_ID]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let claims = jsonwebtoken::decode::<Value>(id_token, &key, &validation)
        .map_err(|e| format!("{:?}", e.kind()))?
        .claims;
    if claims["nonce"] != NONCE {
        return Err(format!("nonce {} is not ours", claims["nonce"]));
    }
    Ok(claims)
}

#[test]
fn pkce_check_matches_the_rfc_7636_example() {
    // RFC 7636 Appendix B.
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    assert!(pkce_matches(verifier, challenge));
    assert!(!pkce_matches(challenge, challenge));
    // `plain` (verifier == challenge) and a too short verifier are refused.
    let short = "abc";
    let short_challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(short));
    assert!(!pkce_matches(short, &short_challenge));
}

#[tokio::test]
async fn oidc_code_flow_with_pkce_issues_an_id_token_that_verifies_against_the_jwks() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    fake.sign_in_as("sub-ada-1", "ada@acme.test");
    let c = no_redirects();

    let d = discover(&c, &fake.issuer).await;
    assert_eq!(d["issuer"], fake.issuer);
    assert_eq!(d["response_types_supported"], json!(["code"]));
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
    assert!(d["subject_types_supported"].is_array());

    let pkce = new_pkce();
    let code = oidc_code(&c, &fake, &pkce).await;
    let seen = fake.last_authorize().unwrap();
    assert_eq!(seen["code_challenge"], pkce.challenge);
    assert_eq!(seen["nonce"], NONCE);
    assert_eq!(seen["redirect_uri"], CALLBACK);

    // Basic client auth with a secret that needs form-urlencoding, as the oauth2 crate sends it.
    let token_endpoint = d["token_endpoint"].as_str().unwrap();
    let resp = c
        .post(token_endpoint)
        .header(header::AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET))
        .form(&redeem_form(&code, &pkce))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CACHE_CONTROL], "no-store");
    let (status, tokens) = json_of(resp).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    assert_eq!(tokens["scope"], "openid email");

    let claims = verify_id_token(&c, &fake.issuer, tokens["id_token"].as_str().unwrap())
        .await
        .unwrap();
    assert_eq!(claims["sub"], "sub-ada-1");
    assert_eq!(claims["email"], "ada@acme.test");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["aud"], CLIENT_ID);

    let userinfo = d["userinfo_endpoint"].as_str().unwrap();
    let access = tokens["access_token"].as_str().unwrap();
    let (status, info) = json_of(c.get(userinfo).bearer_auth(access).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(
        info,
        json!({ "sub": "sub-ada-1", "email": "ada@acme.test", "email_verified": true })
    );
    let resp = c
        .get(userinfo)
        .bearer_auth("ya29.forged")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn oidc_token_endpoint_takes_basic_or_body_client_auth_but_not_both_nor_a_wrong_secret() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let d = discover(&c, &fake.issuer).await;
    let token_endpoint = d["token_endpoint"].as_str().unwrap();
    let pkce = new_pkce();
    let code = oidc_code(&c, &fake, &pkce).await;
    let form = redeem_form(&code, &pkce);

    let refusals = [
        (
            Some(basic(CLIENT_ID, "wrong")),
            vec![],
            401,
            "invalid_client",
        ),
        (
            None,
            vec![("client_id", CLIENT_ID), ("client_secret", "wrong")],
            401,
            "invalid_client",
        ),
        (None, vec![("client_id", CLIENT_ID)], 401, "invalid_client"),
        (None, vec![], 401, "invalid_client"),
        // The secret unencoded in Basic is not the secret.
        (
            Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
            )),
            vec![],
            401,
            "invalid_client",
        ),
        (
            Some(basic(CLIENT_ID, CLIENT_SECRET)),
            vec![("client_secret", CLIENT_SECRET)],
            400,
            "invalid_request",
        ),
    ];
    for (authorization, extra, status, error) in refusals {
        let mut req = c.post(token_endpoint);
        if let Some(a) = &authorization {
            req = req.header(header::AUTHORIZATION, a);
        }
        let mut body = form.clone();
        body.extend(extra);
        let (got, answer) = json_of(req.form(&body).send().await.unwrap()).await;
        assert_eq!(
            (got, answer["error"].as_str()),
            (status, Some(error)),
            "{authorization:?} {answer}"
        );
    }
    // A client that failed to authenticate did not use the code up; the secret in the body works.
    let (status, tokens) = oidc_redeem(&c, &fake, &form, false).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());
}

#[tokio::test]
async fn oidc_code_is_single_use_and_bound_to_its_verifier_redirect_uri_and_lifetime() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let pkce = new_pkce();
    let invalid_grant = |(status, body): (u16, Value)| {
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
    };

    let code = oidc_code(&c, &fake, &pkce).await;
    assert_eq!(
        oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true)
            .await
            .0,
        200
    );
    invalid_grant(oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true).await);

    // A wrong verifier fails and uses the code up.
    let code = oidc_code(&c, &fake, &pkce).await;
    invalid_grant(oidc_redeem(&c, &fake, &redeem_form(&code, &new_pkce()), true).await);
    invalid_grant(oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true).await);

    // Another redirect_uri than the authorize one (here: without the callback's query).
    let code = oidc_code(&c, &fake, &pkce).await;
    let mut form = redeem_form(&code, &pkce);
    form[2].1 = "http://127.0.0.1:9/auth/oauth/callback";
    invalid_grant(oidc_redeem(&c, &fake, &form, true).await);

    // Missing parameters are invalid_request and leave the code alone.
    let code = oidc_code(&c, &fake, &pkce).await;
    for missing in ["redirect_uri", "code_verifier", "grant_type"] {
        let form: Vec<_> = redeem_form(&code, &pkce)
            .into_iter()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (status, body) = oidc_redeem(&c, &fake, &form, true).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{missing}"
        );
    }
    assert_eq!(
        oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true)
            .await
            .0,
        200
    );

    // A code lives ten minutes.
    let clock = xelon_gateway::clock::ManualClock::new();
    fake.use_clock(clock.clone());
    let code = oidc_code(&c, &fake, &pkce).await;
    clock.advance(CODE_TTL + 1);
    invalid_grant(oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true).await);
}

#[tokio::test]
async fn oidc_authorize_refuses_with_400_what_a_gateway_must_send() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let d = discover(&c, &fake.issuer).await;
    let endpoint = d["authorization_endpoint"].as_str().unwrap();
    let pkce = new_pkce();
    let ok = oidc_params(&pkce);
    let mut duplicated = ok.clone();
    duplicated.push(("state", "st-2".into()));
    let cases = [
        (without(&ok, "code_challenge"), "code_challenge is missing"),
        (
            without(&ok, "code_challenge_method"),
            "code_challenge_method",
        ),
        (replaced(&ok, "code_challenge_method", "plain"), "S256"),
        (
            replaced(&ok, "code_challenge", "too-short"),
            "code_challenge",
        ),
        (without(&ok, "nonce"), "nonce"),
        (without(&ok, "state"), "state"),
        (without(&ok, "redirect_uri"), "redirect_uri"),
        (replaced(&ok, "redirect_uri", "/relative"), "redirect_uri"),
        (replaced(&ok, "scope", "email profile"), "openid"),
        (without(&ok, "scope"), "openid"),
        (replaced(&ok, "response_type", "token"), "response_type"),
        (replaced(&ok, "client_id", "someone-else"), "client_id"),
        (duplicated, "more than once"),
    ];
    for (params, reason) in cases {
        let resp = c.get(url_with(endpoint, &params)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{params:?}");
        assert!(resp.headers().get(header::LOCATION).is_none());
        let text = resp.text().await.unwrap();
        assert!(text.contains(reason), "{reason:?} not in {text:?}");
        // Refused requests are recorded too.
        let seen = fake.last_authorize().unwrap();
        assert_eq!(
            seen.len(),
            params
                .iter()
                .map(|(k, _)| k)
                .collect::<std::collections::HashSet<_>>()
                .len()
        );
    }

    fake.register_redirect_uri("https://gateway.example.test/auth/oauth/callback");
    let resp = c.get(url_with(endpoint, &ok)).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("redirect_uri_mismatch"));
    let registered = replaced(
        &ok,
        "redirect_uri",
        "https://gateway.example.test/auth/oauth/callback",
    );
    let location = authorize_redirect(&c, &url_with(endpoint, &registered)).await;
    assert!(query_params(&location).contains_key("code"), "{location}");
}

#[tokio::test]
async fn oidc_deny_next_answers_access_denied_once() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let d = discover(&c, &fake.issuer).await;
    let url = url_with(
        d["authorization_endpoint"].as_str().unwrap(),
        &oidc_params(&new_pkce()),
    );
    fake.deny_next();
    let q = query_params(&authorize_redirect(&c, &url).await);
    assert_eq!(q["error"], "access_denied");
    assert_eq!(q["state"], "st-1");
    assert!(!q.contains_key("code"));
    let q = query_params(&authorize_redirect(&c, &url).await);
    assert!(q.contains_key("code") && !q.contains_key("error"), "{q:?}");
}

#[tokio::test]
async fn every_tampered_id_token_fails_verification_for_its_own_reason() {
    let fake = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let cases = [
        (Tamper::None, None),
        (Tamper::WrongNonce, Some("nonce")),
        (Tamper::WrongAudience, Some("InvalidAudience")),
        (Tamper::WrongIssuer, Some("InvalidIssuer")),
        (Tamper::BadSignature, Some("InvalidSignature")),
        (Tamper::Expired, Some("ExpiredSignature")),
        (Tamper::UnknownKid, Some("unknown kid")),
    ];
    for (tamper, reason) in cases {
        fake.tamper(tamper);
        let pkce = new_pkce();
        let code = oidc_code(&c, &fake, &pkce).await;
        let (status, tokens) = oidc_redeem(&c, &fake, &redeem_form(&code, &pkce), true).await;
        assert_eq!(status, 200);
        let verified =
            verify_id_token(&c, &fake.issuer, tokens["id_token"].as_str().unwrap()).await;
        match (reason, verified) {
            (None, Ok(claims)) => assert_eq!(claims["sub"], "110248495921238986420"),
            (Some(reason), Err(e)) => assert!(e.contains(reason), "{tamper:?}: {e}"),
            (reason, got) => panic!("{tamper:?}: expected {reason:?}, got {got:?}"),
        }
    }
}

// --- GitHub ------------------------------------------------------------------------------------

fn github_params(pkce: &Pkce) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", CLIENT_ID.into()),
        ("redirect_uri", CALLBACK.into()),
        ("scope", "read:user user:email".into()),
        ("state", "gh-st".into()),
        ("code_challenge", pkce.challenge.clone()),
        ("code_challenge_method", "S256".into()),
    ]
}

async fn github_code(c: &reqwest::Client, fake: &FakeGithub, pkce: &Pkce) -> String {
    let location =
        authorize_redirect(c, &url_with(&fake.authorize_url, &github_params(pkce))).await;
    let q = query_params(&location);
    assert_eq!(q["state"], "gh-st");
    q["code"].clone()
}

/// A token request with the client credentials in the body (GitHub's documented way) and the
/// given Accept header; returns (content type, body).
async fn github_redeem(
    c: &reqwest::Client,
    fake: &FakeGithub,
    form: &[(&str, &str)],
    accept: Option<&str>,
) -> (String, String) {
    let mut req = c.post(&fake.token_url).form(form);
    if let Some(accept) = accept {
        req = req.header(header::ACCEPT, accept);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GitHub answers 200, errors included");
    let content_type = resp.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_string();
    (content_type, resp.text().await.unwrap())
}

fn github_form<'a>(code: &'a str, pkce: &'a Pkce, secret: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("client_id", CLIENT_ID),
        ("client_secret", secret),
        ("code", code),
        ("redirect_uri", CALLBACK),
        ("code_verifier", &pkce.verifier),
    ]
}

async fn github_get(
    c: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
    user_agent: bool,
) -> reqwest::Response {
    let mut req = c.get(url);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    if user_agent {
        req = req.header(header::USER_AGENT, "xgw-test");
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn github_code_flow_with_pkce_gives_a_token_for_user_and_emails() {
    let fake = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    fake.sign_in_as(
        42,
        "ada",
        &[
            ("ada@work.test", false, true),
            ("ada@home.test", true, true),
            ("old@ada.test", false, false),
        ],
    );
    fake.set_name(Some("Ada Lovelace"));
    let c = no_redirects();
    let pkce = new_pkce();
    let code = github_code(&c, &fake, &pkce).await;
    let seen = fake.last_authorize().unwrap();
    assert_eq!(seen["scope"], "read:user user:email");
    assert_eq!(seen["code_challenge"], pkce.challenge);

    let (content_type, body) = github_redeem(
        &c,
        &fake,
        &github_form(&code, &pkce, CLIENT_SECRET),
        Some("application/json"),
    )
    .await;
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let tokens: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["scope"], "read:user,user:email");
    let token = tokens["access_token"].as_str().unwrap();
    assert!(token.starts_with("gho_"));

    let user = github_get(
        &c,
        &format!("{}/user", fake.api_url),
        Some(&format!("Bearer {token}")),
        true,
    )
    .await;
    assert_eq!(user.status(), 200);
    let user: Value = user.json().await.unwrap();
    assert_eq!(user["id"], 42);
    assert_eq!(user["login"], "ada");
    assert_eq!(user["name"], "Ada Lovelace");
    assert_eq!(user["email"], Value::Null);

    // GitHub's older `token` scheme works too.
    let emails = github_get(
        &c,
        &format!("{}/user/emails", fake.api_url),
        Some(&format!("token {token}")),
        true,
    )
    .await;
    assert_eq!(emails.status(), 200);
    let emails: Value = emails.json().await.unwrap();
    assert_eq!(
        emails,
        json!([
            { "email": "ada@work.test", "primary": false, "verified": true, "visibility": null },
            { "email": "ada@home.test", "primary": true, "verified": true, "visibility": "public" },
            { "email": "old@ada.test", "primary": false, "verified": false, "visibility": null },
        ])
    );
}

#[tokio::test]
async fn github_token_answer_is_form_encoded_unless_json_is_asked_for_and_not_forced() {
    let fake = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let pkce = new_pkce();

    let code = github_code(&c, &fake, &pkce).await;
    let (content_type, body) =
        github_redeem(&c, &fake, &github_form(&code, &pkce, CLIENT_SECRET), None).await;
    assert!(
        content_type.starts_with("application/x-www-form-urlencoded"),
        "{content_type}"
    );
    let answer = query_params(&format!("http://x.invalid/?{body}"));
    assert!(answer["access_token"].starts_with("gho_"), "{body}");
    assert_eq!(answer["scope"], "read:user,user:email");
    assert_eq!(answer["token_type"], "bearer");

    // HTTP Basic client auth (the oauth2 crate's default) is accepted too.
    let code = github_code(&c, &fake, &pkce).await;
    let resp = c
        .post(&fake.token_url)
        .header(header::AUTHORIZATION, basic(CLIENT_ID, CLIENT_SECRET))
        .header(header::ACCEPT, "application/json")
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", CALLBACK),
            ("code_verifier", &pkce.verifier),
        ])
        .send()
        .await
        .unwrap();
    let (status, tokens) = json_of(resp).await;
    assert_eq!(status, 200);
    assert!(
        tokens["access_token"].as_str().unwrap().starts_with("gho_"),
        "{tokens}"
    );

    fake.force_form_token_response(true);
    let code = github_code(&c, &fake, &pkce).await;
    let (content_type, body) = github_redeem(
        &c,
        &fake,
        &github_form(&code, &pkce, CLIENT_SECRET),
        Some("application/json"),
    )
    .await;
    assert!(
        content_type.starts_with("application/x-www-form-urlencoded"),
        "{content_type}"
    );
    assert!(query_params(&format!("http://x.invalid/?{body}")).contains_key("access_token"));
}

#[tokio::test]
async fn github_token_errors_come_back_as_200_in_the_negotiated_format() {
    let fake = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let pkce = new_pkce();
    let json_error = |body: &str| {
        serde_json::from_str::<Value>(body).unwrap()["error"]
            .as_str()
            .unwrap()
            .to_string()
    };

    let code = github_code(&c, &fake, &pkce).await;
    let form = github_form(&code, &pkce, CLIENT_SECRET);
    // Wrong secret: refused without using the code up.
    let (_, body) = github_redeem(
        &c,
        &fake,
        &github_form(&code, &pkce, "wrong"),
        Some("application/json"),
    )
    .await;
    assert_eq!(json_error(&body), "incorrect_client_credentials");
    let (_, body) = github_redeem(&c, &fake, &form, Some("application/json")).await;
    assert!(body.contains("access_token"), "{body}");
    // Used once.
    let (_, body) = github_redeem(&c, &fake, &form, Some("application/json")).await;
    assert_eq!(json_error(&body), "bad_verification_code");

    let code = github_code(&c, &fake, &pkce).await;
    let other = new_pkce();
    let (content_type, body) =
        github_redeem(&c, &fake, &github_form(&code, &other, CLIENT_SECRET), None).await;
    assert!(content_type.starts_with("application/x-www-form-urlencoded"));
    assert_eq!(
        query_params(&format!("http://x.invalid/?{body}"))["error"],
        "bad_verification_code"
    );

    let code = github_code(&c, &fake, &pkce).await;
    let mut form = github_form(&code, &pkce, CLIENT_SECRET);
    form[3].1 = "http://127.0.0.1:9/elsewhere";
    let (_, body) = github_redeem(&c, &fake, &form, Some("application/json")).await;
    assert_eq!(json_error(&body), "redirect_uri_mismatch");

    // Like GitHub, redirect_uri may be left out of the token request.
    let code = github_code(&c, &fake, &pkce).await;
    let form: Vec<_> = github_form(&code, &pkce, CLIENT_SECRET)
        .into_iter()
        .filter(|(k, _)| *k != "redirect_uri")
        .collect();
    let (_, body) = github_redeem(&c, &fake, &form, Some("application/json")).await;
    assert!(body.contains("access_token"), "{body}");
}

#[tokio::test]
async fn github_api_requires_a_user_agent_and_a_valid_token() {
    let fake = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let pkce = new_pkce();
    let code = github_code(&c, &fake, &pkce).await;
    let (_, body) = github_redeem(
        &c,
        &fake,
        &github_form(&code, &pkce, CLIENT_SECRET),
        Some("application/json"),
    )
    .await;
    let token: Value = serde_json::from_str(&body).unwrap();
    let auth = format!("Bearer {}", token["access_token"].as_str().unwrap());

    for path in ["/user", "/user/emails"] {
        let url = format!("{}{path}", fake.api_url);
        let resp = github_get(&c, &url, Some(&auth), false).await;
        assert_eq!(resp.status(), 403, "{path} without User-Agent");
        assert!(resp.text().await.unwrap().contains("User-Agent"));

        let resp = github_get(&c, &url, None, true).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["message"],
            "Requires authentication"
        );

        let resp = github_get(&c, &url, Some("Bearer gho_forged"), true).await;
        assert_eq!(resp.status(), 401);
        assert_eq!(
            resp.json::<Value>().await.unwrap()["message"],
            "Bad credentials"
        );

        assert_eq!(github_get(&c, &url, Some(&auth), true).await.status(), 200);
    }
}

#[tokio::test]
async fn github_authorize_refuses_missing_pkce_or_scopes_and_can_deny() {
    let fake = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let c = no_redirects();
    let ok = github_params(&new_pkce());
    let cases = [
        (without(&ok, "code_challenge"), "code_challenge"),
        (replaced(&ok, "code_challenge_method", "plain"), "S256"),
        (without(&ok, "state"), "state"),
        (replaced(&ok, "scope", "read:user"), "user:email"),
        (replaced(&ok, "scope", "user:email"), "read:user"),
        (replaced(&ok, "client_id", "someone-else"), "client_id"),
    ];
    for (params, reason) in cases {
        let resp = c
            .get(url_with(&fake.authorize_url, &params))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{params:?}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(reason), "{reason:?} not in {text:?}");
    }

    fake.register_redirect_uri("https://gateway.example.test/cb");
    let resp = c
        .get(url_with(&fake.authorize_url, &ok))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let ok = replaced(&ok, "redirect_uri", "https://gateway.example.test/cb");

    fake.deny_next();
    let location = authorize_redirect(&c, &url_with(&fake.authorize_url, &ok)).await;
    assert!(
        location.starts_with("https://gateway.example.test/cb?"),
        "{location}"
    );
    let q = query_params(&location);
    assert_eq!(
        (q["error"].as_str(), q["state"].as_str()),
        ("access_denied", "gh-st")
    );
    let q = query_params(&authorize_redirect(&c, &url_with(&fake.authorize_url, &ok)).await);
    assert!(q.contains_key("code"), "{q:?}");

    // A code expires after ten minutes.
    let clock = xelon_gateway::clock::ManualClock::new();
    fake.use_clock(clock.clone());
    let pkce = new_pkce();
    let ok = replaced(
        &github_params(&pkce),
        "redirect_uri",
        "https://gateway.example.test/cb",
    );
    let code = query_params(&authorize_redirect(&c, &url_with(&fake.authorize_url, &ok)).await)
        ["code"]
        .clone();
    clock.advance(CODE_TTL + 1);
    let mut form = github_form(&code, &pkce, CLIENT_SECRET);
    form[3].1 = "https://gateway.example.test/cb";
    let (_, body) = github_redeem(&c, &fake, &form, Some("application/json")).await;
    assert!(body.contains("bad_verification_code"), "{body}");
}

//! The OpenID provider stand-in, shaped like Google's.

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
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use xelon_gateway::clock::{SharedClock, SystemClock};

use super::{
    bad_request, bearer, bind, check_authorize, param, random_token, redeem, redirect_back, spawn,
    token_error, unique, Grant, Params, Shared, TokenError, TokenErrorKind, CODE_TTL, TOKEN_TTL,
};

/// Test-only RSA keys (`openssl genrsa 2048`, PKCS#8 PEM). Never used outside these fakes.
const SIGNING_KEY_PEM: &str = include_str!("../../fixtures/oidc-test-signing-key.pem");
const OTHER_KEY_PEM: &str = include_str!("../../fixtures/oidc-test-other-key.pem");
/// The `kid` of the signing key, the only key in the JWKS.
pub const OIDC_KID: &str = "xgw-test-oidc-key-1";

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

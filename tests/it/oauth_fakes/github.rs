//! The GitHub stand-in: OAuth app endpoints and the REST calls Quick Login makes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use xelon_gateway::clock::{SharedClock, SystemClock};

use super::{
    bad_request, bearer, bind, check_authorize, form_encode, param, random_token, redeem,
    redirect_back, spawn, token_error, unique, Grant, Params, Shared, TokenErrorKind, CODE_TTL,
};

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

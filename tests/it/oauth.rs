//! Quick Login end to end: the real gateway against a local OpenID provider and a local GitHub
//! stand-in (`oauth_fakes`). Connect, sign in, unlinked identities, state replay and binding,
//! ID token checks, provider errors, disconnect rules, and 2FA after a provider sign-in.

use serde_json::{json, Value};
use xelon_gateway::config::{GithubConfig, GoogleConfig, OAuthConfig};

use crate::harness::{get, send, status_json, Options, TestGateway};
use crate::oauth_fakes::{query_params, FakeGithub, FakeOidc, Tamper};

const CLIENT_ID: &str = "xgw-test-client";
const CLIENT_SECRET: &str = "xgw-test-secret-0123456789";

struct Setup {
    gw: TestGateway,
    google: FakeOidc,
    github: FakeGithub,
}

/// Both providers, pointed at the stand-ins.
fn providers(google: &FakeOidc, github: &FakeGithub) -> OAuthConfig {
    OAuthConfig {
        google: Some(GoogleConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            issuer: google.issuer.clone(),
        }),
        github: Some(GithubConfig {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            authorize_url: github.authorize_url.clone(),
            token_url: github.token_url.clone(),
            api_url: github.api_url.clone(),
        }),
    }
}

async fn setup() -> Setup {
    let google = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let github = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let gw = TestGateway::start_with(Options {
        oauth: Some(providers(&google, &github)),
        ..Options::default()
    })
    .await;
    // Like a real registration: any other redirect URI is refused at the provider.
    google.register_redirect_uri(&gw.url("/auth/oauth/google/callback"));
    github.register_redirect_uri(&gw.url("/auth/oauth/github/callback"));
    google.use_clock(gw.clock.clone());
    github.use_clock(gw.clock.clone());
    Setup { gw, google, github }
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .unwrap_or_else(|| panic!("no Location on a {}", resp.status()))
        .to_str()
        .unwrap()
        .to_string()
}

fn sets_session_cookie(resp: &reqwest::Response) -> bool {
    resp.headers().get_all("set-cookie").iter().any(|v| {
        v.to_str().unwrap().starts_with("xgw_session=")
            && !v.to_str().unwrap().contains("Max-Age=0")
    })
}

/// The fake provider's answer to an authorization request: the callback URL it redirects to.
async fn provider_redirect(client: &reqwest::Client, authorize_url: &str) -> String {
    let resp = client.get(authorize_url).send().await.unwrap();
    assert_eq!(
        resp.status(),
        302,
        "the provider refused: {}",
        resp.text().await.unwrap()
    );
    location(&resp)
}

/// Starts a sign-in in `client`'s browser; returns the provider URL.
async fn start_sign_in(
    gw: &TestGateway,
    client: &reqwest::Client,
    provider: &str,
    next: &str,
) -> String {
    let resp = client
        .get(gw.url(&format!("/auth/oauth/{provider}/start?next={next}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    location(&resp)
}

/// A whole sign-in; returns the gateway's final answer to the callback.
async fn sign_in(
    gw: &TestGateway,
    client: &reqwest::Client,
    provider: &str,
    next: &str,
) -> reqwest::Response {
    let authorize = start_sign_in(gw, client, provider, next).await;
    let callback = provider_redirect(client, &authorize).await;
    assert!(
        callback.starts_with(&gw.url(&format!("/auth/oauth/{provider}/callback?"))),
        "{callback}"
    );
    client.get(callback).send().await.unwrap()
}

/// `POST /auth/api/v1/me/identities/{provider}` as the account page sends it.
async fn start_connect(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    provider: &str,
) -> (u16, Value) {
    let path = format!("/auth/api/v1/me/identities/{provider}");
    send(gw, client, reqwest::Method::POST, &path, csrf, None).await
}

/// Connects `provider` to the signed-in `client`; returns where the gateway sent the browser.
async fn connect(gw: &TestGateway, client: &reqwest::Client, csrf: &str, provider: &str) -> String {
    let (status, body) = start_connect(gw, client, csrf, provider).await;
    assert_eq!(status, 200, "{body}");
    let callback = provider_redirect(client, body["authorize_url"].as_str().unwrap()).await;
    let resp = client.get(callback).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    location(&resp)
}

/// A member of a fresh org, signed in with the password: (client, csrf, user id).
async fn member(gw: &TestGateway, email: &str) -> (reqwest::Client, String, String) {
    let org = gw.create_org("Acme").await;
    let user = gw.create_user(&org, email, false).await;
    let client = gw.client();
    let login = gw.login(&client, email).await;
    (
        client,
        login["csrf_token"].as_str().unwrap().to_string(),
        user.id,
    )
}

async fn whoami(gw: &TestGateway, client: &reqwest::Client) -> (u16, Value) {
    get(gw, client, "/auth/api/v1/me").await
}

#[tokio::test]
async fn connect_google_then_sign_in_with_it_like_a_password_login() {
    let s = setup().await;
    let (client, csrf, user_id) = member(&s.gw, "ada@acme.test").await;
    s.google.sign_in_as("google-sub-1", "ada@gmail.test");
    assert_eq!(
        connect(&s.gw, &client, &csrf, "google").await,
        "/auth/account?connected=google"
    );

    // What the gateway asked the provider for.
    let q = s.google.last_authorize().unwrap();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["code_challenge"].len() >= 43);
    assert!(q["nonce"].len() >= 32);
    assert!(q["scope"].split(' ').any(|s| s == "openid"));
    assert_eq!(q["redirect_uri"], s.gw.url("/auth/oauth/google/callback"));

    let (status, ids) = get(&s.gw, &client, "/auth/api/v1/me/identities").await;
    assert_eq!(status, 200);
    assert_eq!(ids["available"], json!(["google", "github"]));
    assert_eq!(ids["identities"][0]["provider"], "google");
    assert_eq!(ids["identities"][0]["subject"], "google-sub-1");
    assert_eq!(ids["identities"][0]["email"], "ada@gmail.test");

    // A new browser signs in with Google and lands on `next` with a session.
    let browser = s.gw.client();
    let resp = sign_in(&s.gw, &browser, "google", "/projects").await;
    assert_eq!(resp.status(), 302);
    assert_eq!(location(&resp), "/projects");
    assert!(sets_session_cookie(&resp));
    let (status, me) = whoami(&s.gw, &browser).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user_id.as_str());
    // The platform sees a federated login.
    let echoed = crate::harness::echoed(&s.gw, &browser, "/api/x").await;
    let text = echoed.to_string();
    assert!(text.contains("ada@acme.test"), "{text}");
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(r#"xgw_oauth_callbacks_total{outcome="signed_in",provider="google"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"xgw_oauth_callbacks_total{outcome="connected",provider="google"} 1"#)
    );
}

#[tokio::test]
async fn github_sign_in_uses_the_numeric_id_and_reads_form_token_answers() {
    let s = setup().await;
    let (client, csrf, user_id) = member(&s.gw, "grace@acme.test").await;
    s.github.sign_in_as(
        4242,
        "grace",
        &[
            ("old@x.test", false, true),
            ("grace@github.test", true, true),
        ],
    );
    s.github.force_form_token_response(true);
    assert_eq!(
        connect(&s.gw, &client, &csrf, "github").await,
        "/auth/account?connected=github"
    );
    let q = s.github.last_authorize().unwrap();
    assert_eq!(q["code_challenge_method"], "S256");
    assert!(q["scope"].contains("user:email"));

    let (_, ids) = get(&s.gw, &client, "/auth/api/v1/me/identities").await;
    assert_eq!(ids["identities"][0]["subject"], "4242");
    assert_eq!(ids["identities"][0]["email"], "grace@github.test");

    // The login name changed hands: the id still decides.
    s.github.force_form_token_response(false);
    s.github
        .sign_in_as(4242, "renamed", &[("grace@github.test", true, true)]);
    let browser = s.gw.client();
    let resp = sign_in(&s.gw, &browser, "github", "/").await;
    assert_eq!(location(&resp), "/");
    let (status, me) = whoami(&s.gw, &browser).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], user_id.as_str());
}

#[tokio::test]
async fn an_unlinked_identity_gets_no_session_even_with_a_matching_email() {
    let s = setup().await;
    let (_client, _csrf, _) = member(&s.gw, "ada@acme.test").await;
    // Same email as our user, but nobody connected this provider account.
    s.google.sign_in_as("stranger", "ada@acme.test");
    let browser = s.gw.client();
    let resp = sign_in(&s.gw, &browser, "google", "/projects").await;
    assert_eq!(
        location(&resp),
        "/auth/login?error=oauth_not_linked&next=/projects"
    );
    assert!(!sets_session_cookie(&resp));
    assert_eq!(whoami(&s.gw, &browser).await.0, 401);
    let metrics = s.gw.metrics().await;
    assert!(metrics
        .contains(r#"xgw_oauth_callbacks_total{outcome="oauth_not_linked",provider="google"} 1"#));
}

#[tokio::test]
async fn a_callback_works_once_and_only_in_the_browser_that_started_it() {
    let s = setup().await;
    let (client, csrf, _) = member(&s.gw, "ada@acme.test").await;
    s.google.sign_in_as("sub-r", "ada@gmail.test");
    connect(&s.gw, &client, &csrf, "google").await;

    // Replayed in the same browser after it worked.
    let browser = s.gw.client();
    let authorize = start_sign_in(&s.gw, &browser, "google", "/").await;
    let callback = provider_redirect(&browser, &authorize).await;
    let first = browser.get(&callback).send().await.unwrap();
    assert_eq!(location(&first), "/");
    let again = browser.get(&callback).send().await.unwrap();
    assert_eq!(
        location(&again),
        "/auth/login?error=oauth_state_invalid&next=/"
    );
    assert!(!sets_session_cookie(&again));

    // Carried into another browser: refused, and the state is spent for the first one too.
    let victim = s.gw.client();
    let authorize = start_sign_in(&s.gw, &victim, "google", "/").await;
    let callback = provider_redirect(&victim, &authorize).await;
    let attacker = s.gw.client();
    let stolen = attacker.get(&callback).send().await.unwrap();
    assert_eq!(
        location(&stolen),
        "/auth/login?error=oauth_state_invalid&next=/"
    );
    assert!(!sets_session_cookie(&stolen));
    assert_eq!(whoami(&s.gw, &attacker).await.0, 401);
    let late = victim.get(&callback).send().await.unwrap();
    assert!(location(&late).contains("error=oauth_state_invalid"));

    // A made-up state, and none at all.
    for q in ["state=forged&code=x", "code=x", ""] {
        let resp = browser
            .get(s.gw.url(&format!("/auth/oauth/google/callback?{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302);
        assert!(location(&resp).contains("error=oauth_state_invalid"), "{q}");
    }
}

#[tokio::test]
async fn id_tokens_that_fail_any_check_are_refused() {
    let s = setup().await;
    let (client, csrf, _) = member(&s.gw, "ada@acme.test").await;
    s.google.sign_in_as("sub-t", "ada@gmail.test");
    connect(&s.gw, &client, &csrf, "google").await;
    for tamper in [
        Tamper::WrongNonce,
        Tamper::WrongAudience,
        Tamper::WrongIssuer,
        Tamper::BadSignature,
        Tamper::Expired,
        Tamper::UnknownKid,
    ] {
        let name = format!("{tamper:?}");
        s.google.tamper(tamper);
        let browser = s.gw.client();
        let resp = sign_in(&s.gw, &browser, "google", "/").await;
        assert_eq!(
            location(&resp),
            "/auth/login?error=oauth_invalid_id_token&next=/",
            "{name}"
        );
        assert!(!sets_session_cookie(&resp), "{name}");
        assert_eq!(whoami(&s.gw, &browser).await.0, 401, "{name}");
    }
    // And the untouched token still works.
    s.google.tamper(Tamper::None);
    let browser = s.gw.client();
    assert_eq!(
        location(&sign_in(&s.gw, &browser, "google", "/").await),
        "/"
    );
    let metrics = s.gw.metrics().await;
    assert!(
        metrics.contains(
            r#"xgw_oauth_callbacks_total{outcome="oauth_invalid_id_token",provider="google"} 6"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn provider_errors_end_on_the_login_page_with_a_code() {
    let s = setup().await;
    // The person declines at the provider.
    s.github.deny_next();
    let browser = s.gw.client();
    let resp = sign_in(&s.gw, &browser, "github", "/p").await;
    assert_eq!(location(&resp), "/auth/login?error=oauth_denied&next=/p");

    // A code the provider does not know (right state, bogus code).
    let authorize = start_sign_in(&s.gw, &browser, "github", "/p").await;
    let state = query_params(&authorize)["state"].clone();
    let resp = browser
        .get(s.gw.url(&format!(
            "/auth/oauth/github/callback?code=bogus&state={state}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&resp),
        "/auth/login?error=oauth_code_rejected&next=/p"
    );

    // Unknown provider names are not routes to anything.
    let resp = browser
        .get(s.gw.url("/auth/oauth/myspace/callback?state=x"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = browser
        .get(s.gw.url("/auth/oauth/myspace/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&resp),
        "/auth/login?error=oauth_unavailable&next=/"
    );
}

#[tokio::test]
async fn an_unreachable_provider_is_a_clear_error_not_a_5xx() {
    let closed = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let gw = TestGateway::start_with(Options {
        oauth: Some(OAuthConfig {
            google: Some(GoogleConfig {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                issuer: closed.clone(),
            }),
            github: Some(GithubConfig {
                client_id: CLIENT_ID.into(),
                client_secret: CLIENT_SECRET.into(),
                authorize_url: format!("{closed}/login/oauth/authorize"),
                token_url: format!("{closed}/login/oauth/access_token"),
                api_url: format!("{closed}/api"),
            }),
        }),
        ..Options::default()
    })
    .await;
    let browser = gw.client();
    // Google needs discovery before it can even start.
    let resp = browser
        .get(gw.url("/auth/oauth/google/start?next=/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&resp),
        "/auth/login?error=oauth_unreachable&next=/a"
    );
    // Right after, the failure is remembered: no second wait on a dead provider.
    for _ in 0..3 {
        let resp = browser
            .get(gw.url("/auth/oauth/google/start?next=/a"))
            .send()
            .await
            .unwrap();
        assert!(location(&resp).contains("error=oauth_unreachable"));
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            r#"xgw_oauth_provider_calls_total{call="discovery",provider="google",result="unreachable"} 1"#
        ),
        "{metrics}"
    );
    // GitHub fails at the token exchange.
    let authorize = start_sign_in(&gw, &browser, "github", "/a").await;
    let state = query_params(&authorize)["state"].clone();
    let resp = browser
        .get(gw.url(&format!("/auth/oauth/github/callback?code=c&state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&resp),
        "/auth/login?error=oauth_unreachable&next=/a"
    );
    let metrics = gw.metrics().await;
    assert!(metrics.contains(r#"xgw_oauth_provider_calls_total{call="token",provider="github",result="unreachable"} 1"#), "{metrics}");
}

#[tokio::test]
async fn an_identity_connected_to_someone_else_is_refused() {
    let s = setup().await;
    let org = s.gw.create_org("Acme").await;
    s.gw.create_user(&org, "a@acme.test", false).await;
    s.gw.create_user(&org, "b@acme.test", false).await;
    let (a, b) = (s.gw.client(), s.gw.client());
    let csrf_a = s.gw.login(&a, "a@acme.test").await["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    let csrf_b = s.gw.login(&b, "b@acme.test").await["csrf_token"]
        .as_str()
        .unwrap()
        .to_string();
    s.google.sign_in_as("shared-sub", "x@gmail.test");
    assert_eq!(
        connect(&s.gw, &a, &csrf_a, "google").await,
        "/auth/account?connected=google"
    );
    assert_eq!(
        connect(&s.gw, &b, &csrf_b, "google").await,
        "/auth/account?error=identity_in_use"
    );
    let (_, ids) = get(&s.gw, &b, "/auth/api/v1/me/identities").await;
    assert_eq!(ids["identities"], json!([]));
    // One per provider: a second Google account for A is refused before leaving for Google.
    let (status, body) = start_connect(&s.gw, &a, &csrf_a, "google").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("identity_already_connected"))
    );
    // Connecting needs CSRF like every change.
    let resp = b
        .post(s.gw.url("/auth/api/v1/me/identities/github"))
        .send()
        .await
        .unwrap();
    assert_eq!(status_json(resp).await.0, 403);
    // A provider name we do not offer is not found, for connecting and disconnecting alike.
    let (status, body) = start_connect(&s.gw, &b, &csrf_b, "myspace").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = send(
        &s.gw,
        &b,
        reqwest::Method::DELETE,
        "/auth/api/v1/me/identities/myspace",
        &csrf_b,
        None,
    )
    .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn disconnect_keeps_at_least_one_way_to_sign_in() {
    let s = setup().await;
    let (client, csrf, user_id) = member(&s.gw, "ada@acme.test").await;
    s.google.sign_in_as("g-1", "ada@gmail.test");
    s.github
        .sign_in_as(7, "ada", &[("ada@github.test", true, true)]);
    connect(&s.gw, &client, &csrf, "google").await;
    connect(&s.gw, &client, &csrf, "github").await;

    // With a password, any identity can go.
    let del = |p: &'static str| {
        let (gw, client, csrf) = (&s.gw, &client, csrf.clone());
        async move {
            send(
                gw,
                client,
                reqwest::Method::DELETE,
                &format!("/auth/api/v1/me/identities/{p}"),
                &csrf,
                None,
            )
            .await
        }
    };
    assert_eq!(del("github").await.0, 204);
    assert_eq!(del("github").await.0, 404);
    // The disconnected GitHub account no longer signs anyone in.
    let browser = s.gw.client();
    assert!(location(&sign_in(&s.gw, &browser, "github", "/").await).contains("oauth_not_linked"));

    connect(&s.gw, &client, &csrf, "github").await;
    // Without a password: the last identity stays.
    xelon_gateway::store::modify_user(s.gw.handles.store.as_ref(), &user_id, |u| {
        u.password_hash = None;
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(del("google").await.0, 204);
    let (status, body) = del("github").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("last_login_method"))
    );
    let (_, ids) = get(&s.gw, &client, "/auth/api/v1/me/identities").await;
    assert_eq!(ids["identities"][0]["provider"], "github");
}

#[tokio::test]
async fn a_two_factor_user_still_answers_the_second_factor_after_a_provider() {
    let s = setup().await;
    let (client, csrf, user_id) = member(&s.gw, "ada@acme.test").await;
    // 2FA is available in the org, and Ada has an authenticator app.
    let org_id =
        s.gw.handles
            .store
            .get_user(&user_id)
            .await
            .unwrap()
            .unwrap()
            .memberships[0]
            .org_id
            .clone();
    s.gw.handles
        .store
        .set_two_factor_policy(&org_id, xelon_gateway::store::TwoFactorPolicy::Optional)
        .await
        .unwrap();
    let (secret, _) = crate::two_factor::enrol_totp(&s.gw, &client, &csrf).await;
    s.google.sign_in_as("g-2fa", "ada@gmail.test");
    connect(&s.gw, &client, &csrf, "google").await;

    let browser = s.gw.client();
    let resp = sign_in(&s.gw, &browser, "google", "/projects").await;
    assert_eq!(
        location(&resp),
        "/auth/login?step=2fa&method=totp&next=/projects"
    );
    assert!(!sets_session_cookie(&resp));
    assert_eq!(whoami(&s.gw, &browser).await.0, 401);

    // The login page answers with the code only; the challenge rides in its cookie.
    s.gw.clock.advance(30);
    let code = crate::two_factor::totp_at(&secret, s.gw.now());
    let resp = browser
        .post(s.gw.url("/auth/login/2fa"))
        .json(&json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, me) = whoami(&s.gw, &browser).await;
    assert_eq!(status, 200);
    assert_eq!(me["id"], user_id.as_str());
    // The JWT says how: a federated first step and an authenticator code.
    let echoed = crate::harness::echoed(&s.gw, &browser, "/api/x").await;
    let jwt = echoed["headers"]["x-auth-jwt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let payload = jwt.split('.').nth(1).unwrap_or_default();
    use base64::Engine;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null);
    assert_eq!(claims["amr"], json!(["fed", "otp"]), "{echoed}");
}

#[tokio::test]
async fn starting_flows_in_a_loop_is_cut_off_per_client_ip() {
    let s = setup().await;
    let browser = s.gw.client();
    // Each start stores a ticket: 30 a minute per IP, then the login page says to wait.
    for _ in 0..30 {
        let authorize = start_sign_in(&s.gw, &browser, "github", "/").await;
        assert!(
            authorize.starts_with(&s.github.authorize_url),
            "{authorize}"
        );
    }
    let resp = browser
        .get(s.gw.url("/auth/oauth/github/start?next=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        location(&resp),
        "/auth/login?error=too_many_attempts&next=/"
    );
    let (client, csrf, _) = member(&s.gw, "ada@acme.test").await;
    let (status, body) = start_connect(&s.gw, &client, &csrf, "google").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_attempts"))
    );
    // A minute later it works again.
    s.gw.clock.advance(61);
    start_sign_in(&s.gw, &browser, "github", "/").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_started_on_one_replica_finishes_on_another() {
    // Two replicas on one Redis behind one public address (A's): the state lives in the store.
    let redis = crate::redis_server::RedisServer::start();
    let google = FakeOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let github = FakeGithub::start(CLIENT_ID, CLIENT_SECRET).await;
    let clock = xelon_gateway::clock::ManualClock::new();
    google.use_clock(clock.clone());
    let a = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock.clone()),
        oauth: Some(providers(&google, &github)),
        ..Options::default()
    })
    .await;
    let b = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock),
        oauth: Some(providers(&google, &github)),
        public_url: Some(a.base.clone()),
        ..Options::default()
    })
    .await;
    google.register_redirect_uri(&a.url("/auth/oauth/google/callback"));
    let (client, csrf, user_id) = member(&a, "ada@acme.test").await;
    google.sign_in_as("sub-replicas", "ada@gmail.test");
    assert_eq!(
        connect(&a, &client, &csrf, "google").await,
        "/auth/account?connected=google"
    );

    let browser = b.client();
    let authorize = start_sign_in(&b, &browser, "google", "/p").await;
    let callback = provider_redirect(&browser, &authorize).await;
    assert!(
        callback.starts_with(&a.url("/auth/oauth/google/callback?")),
        "{callback}"
    );
    let resp = browser.get(callback).send().await.unwrap();
    assert_eq!(location(&resp), "/p");
    for gw in [&a, &b] {
        let (status, me) = whoami(gw, &browser).await;
        assert_eq!(status, 200, "{me}");
        assert_eq!(me["id"], user_id.as_str());
    }
    let (_, ids) = get(&b, &client, "/auth/api/v1/me/identities").await;
    assert_eq!(ids["identities"][0]["subject"], "sub-replicas");
}

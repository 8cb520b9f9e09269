//! Login and logout: the session cookie, identical failures, brute-force backoff, the HTML form
//! and what logging out leaves behind.

use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use serde_json::{json, Value};

use crate::harness::{Options, TestGateway, PASSWORD};

const WRONG: &str = "not-the-password";

async fn post_login(gw: &TestGateway, client: &Client, email: &str, password: &str) -> Response {
    client
        .post(gw.url("/auth/login"))
        .json(&json!({ "email": email, "password": password }))
        .send()
        .await
        .unwrap()
}

async fn post_form(gw: &TestGateway, client: &Client, fields: &[(&str, &str)]) -> Response {
    client
        .post(gw.url("/auth/login"))
        .form(fields)
        .send()
        .await
        .unwrap()
}

/// The raw `Set-Cookie` headers of a response (not what a jar makes of them).
fn set_cookies(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

fn session_set_cookie(headers: &HeaderMap) -> String {
    let all = set_cookies(headers);
    assert_eq!(all.len(), 1, "one Set-Cookie expected: {all:?}");
    assert!(all[0].starts_with("xgw_session="), "{}", all[0]);
    all[0].clone()
}

/// The cookie's value: `xgw_session=VALUE; ...` -> `VALUE`.
fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_string()
}

fn attributes(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

/// Asserts a 429 `too_many_attempts` and returns its `Retry-After` seconds.
async fn assert_rate_limited(resp: Response) -> i64 {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: i64 = resp.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "too_many_attempts");
    retry
}

async fn fail_times(gw: &TestGateway, client: &Client, email: &str, n: usize) {
    for i in 0..n {
        let resp = post_login(gw, client, email, WRONG).await;
        assert_eq!(resp.status(), 401, "failure {i} for {email}");
    }
}

async fn list_sessions(gw: &TestGateway, admin: &Client, org_id: &str, state: &str) -> Vec<Value> {
    let url = gw.url(&format!(
        "/auth/api/v1/orgs/{org_id}/sessions?state={state}"
    ));
    let resp = admin.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_sets_a_fresh_http_only_lax_cookie_lasting_the_org_duration() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    let user = gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let mut values = Vec::new();
    for _ in 0..2 {
        let resp = post_login(&gw, &client, "ada@acme.test", PASSWORD).await;
        assert_eq!(resp.status(), 200);
        let cookie = session_set_cookie(resp.headers());
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ok");
        assert_eq!(body["user_id"], user.id.as_str());
        assert!(!body["csrf_token"].as_str().unwrap().is_empty());

        let value = cookie_value(&cookie);
        assert!(value.starts_with("xgs_"), "{cookie}");
        let attrs = attributes(&cookie);
        for want in ["httponly", "samesite=lax", "path=/", "max-age=604800"] {
            assert!(attrs.iter().any(|a| a == want), "{want} missing: {cookie}");
        }
        assert!(!attrs.iter().any(|a| a == "secure"), "{cookie}");
        values.push(value);
    }
    assert_ne!(
        values[0], values[1],
        "every login gets a new session secret"
    );
    // The jar's cookie (the latest) opens the platform.
    let resp = client.get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_secure_setting_marks_the_session_cookie_secure() {
    let gw = TestGateway::start_with(Options {
        tweak: |c| c.session.cookie_secure = true,
        ..Default::default()
    })
    .await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let resp = post_login(&gw, &gw.client(), "ada@acme.test", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let cookie = session_set_cookie(resp.headers());
    assert!(
        attributes(&cookie).iter().any(|a| a == "secure"),
        "{cookie}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_and_wrong_password_look_the_same() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let wrong = post_login(&gw, &client, "ada@acme.test", WRONG).await;
    let unknown = post_login(&gw, &client, "nobody@acme.test", PASSWORD).await;
    for resp in [&wrong, &unknown] {
        assert_eq!(resp.status(), 401);
        assert!(set_cookies(resp.headers()).is_empty());
    }
    let wrong: Value = wrong.json().await.unwrap();
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(wrong["error"], "invalid_credentials");
    assert_eq!(wrong, unknown);
    assert!(gw
        .metrics()
        .await
        .contains("xgw_logins_total{result=\"invalid_credentials\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_is_matched_case_insensitively() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    let user = gw.create_user(&org, "ada@acme.test", false).await;
    let resp = post_login(&gw, &gw.client(), "ADA@Acme.Test", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["user_id"], user.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_back_off_doubling_until_the_window_ends() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    fail_times(&gw, &client, "ada@acme.test", 5).await;
    // Even the right password waits now.
    let retry =
        assert_rate_limited(post_login(&gw, &client, "ada@acme.test", PASSWORD).await).await;
    assert_eq!(retry, 30);
    // Other spellings of the address are the same account.
    let retry =
        assert_rate_limited(post_login(&gw, &client, "ADA@acme.test", PASSWORD).await).await;
    assert_eq!(retry, 30);

    // Past the wait, one more attempt; failing it doubles the wait.
    gw.clock.advance(31);
    let resp = post_login(&gw, &client, "ada@acme.test", WRONG).await;
    assert_eq!(resp.status(), 401);
    let retry =
        assert_rate_limited(post_login(&gw, &client, "ada@acme.test", PASSWORD).await).await;
    assert_eq!(retry, 60);

    // Once the window is over the right password works again.
    gw.clock.advance(901);
    let resp = post_login(&gw, &client, "ada@acme.test", PASSWORD).await;
    assert_eq!(resp.status(), 200);
    assert!(gw
        .metrics()
        .await
        .contains("xgw_logins_total{result=\"rate_limited\"} 3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_email_is_rate_limited_exactly_like_a_real_account() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    fail_times(&gw, &client, "ada@acme.test", 5).await;
    fail_times(&gw, &client, "ghost@acme.test", 5).await;
    let real = post_login(&gw, &client, "ada@acme.test", WRONG).await;
    let ghost = post_login(&gw, &client, "ghost@acme.test", WRONG).await;
    assert_eq!(real.headers()[RETRY_AFTER], ghost.headers()[RETRY_AFTER]);
    let (real_status, ghost_status) = (real.status(), ghost.status());
    let real: Value = real.json().await.unwrap();
    let ghost: Value = ghost.json().await.unwrap();
    assert_eq!(real_status, 429);
    assert_eq!(ghost_status, real_status);
    assert_eq!(ghost, real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_login_clears_the_account_failure_count() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    fail_times(&gw, &client, "ada@acme.test", 4).await;
    assert_eq!(
        post_login(&gw, &client, "ada@acme.test", PASSWORD)
            .await
            .status(),
        200
    );
    // Had the 4 failures stayed, the 5th below would start the backoff.
    fail_times(&gw, &client, "ada@acme.test", 4).await;
    assert_eq!(
        post_login(&gw, &client, "ada@acme.test", PASSWORD)
            .await
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_one_ip_across_accounts_limit_that_ip() {
    let gw = TestGateway::start_with(Options {
        tweak: |c| c.login.max_failures_per_ip = 3,
        ..Default::default()
    })
    .await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    for email in ["a@acme.test", "b@acme.test", "c@acme.test"] {
        fail_times(&gw, &client, email, 1).await;
    }
    // A fresh account, right password: the IP is over its limit.
    let retry =
        assert_rate_limited(post_login(&gw, &client, "ada@acme.test", PASSWORD).await).await;
    assert_eq!(retry, 30);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("xgw_logins_total{result=\"rate_limited\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_login_redirects_to_next_with_the_cookie() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let resp = post_form(
        &gw,
        &client,
        &[
            ("email", "ada@acme.test"),
            ("password", PASSWORD),
            ("next", "/projects/7?tab=a"),
        ],
    )
    .await;
    assert!(
        matches!(resp.status().as_u16(), 302 | 303),
        "{}",
        resp.status()
    );
    assert_eq!(resp.headers()[LOCATION], "/projects/7?tab=a");
    let cookie = session_set_cookie(resp.headers());
    assert!(cookie_value(&cookie).starts_with("xgs_"));
    assert_eq!(
        client.get(gw.url("/api/x")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_login_never_redirects_to_another_site() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;

    for next in ["//evil.example", "https://evil.example", "/\\evil.example"] {
        let fields = [
            ("email", "ada@acme.test"),
            ("password", PASSWORD),
            ("next", next),
        ];
        let resp = post_form(&gw, &gw.client(), &fields).await;
        assert!(matches!(resp.status().as_u16(), 302 | 303), "{next}");
        assert_eq!(resp.headers()[LOCATION], "/", "{next}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_login_with_a_wrong_password_redirects_back_with_an_error_and_no_cookie() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let fields = [
        ("email", "ada@acme.test"),
        ("password", WRONG),
        ("next", "/projects"),
    ];
    let resp = post_form(&gw, &client, &fields).await;
    assert!(matches!(resp.status().as_u16(), 302 | 303));
    let location = resp.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(
        location.starts_with("/auth/login?error=invalid_credentials"),
        "{location}"
    );
    assert!(location.contains("next=/projects"), "{location}");
    assert!(set_cookies(resp.headers()).is_empty());
    assert_eq!(
        client.get(gw.url("/api/x")).send().await.unwrap().status(),
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_page_is_html_with_a_content_security_policy() {
    let gw = TestGateway::start().await;
    let resp = gw.client().get(gw.url("/auth/login")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/html"), "{ct}");
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(resp.text().await.unwrap().contains("<form"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_clears_the_cookie_and_the_old_value_is_refused_afterwards() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let resp = post_login(&gw, &client, "ada@acme.test", PASSWORD).await;
    let value = cookie_value(&session_set_cookie(resp.headers()));
    // Warm the proxy's cache, so logout must drop the cached copy too.
    assert_eq!(
        client.get(gw.url("/api/x")).send().await.unwrap().status(),
        200
    );

    let resp = client.post(gw.url("/auth/logout")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let cleared = session_set_cookie(resp.headers());
    assert_eq!(cookie_value(&cleared), "");
    assert!(
        attributes(&cleared).iter().any(|a| a == "max-age=0"),
        "{cleared}"
    );

    // The browser dropped it ...
    let resp = client.get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // ... and a client that kept the value gets nowhere either.
    let resp = Client::new()
        .get(gw.url("/api/x"))
        .header("Cookie", format!("xgw_session={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_twice_or_without_a_session_is_still_204() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;

    let anonymous = gw
        .client()
        .post(gw.url("/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 204);

    let client = gw.client();
    let resp = post_login(&gw, &client, "ada@acme.test", PASSWORD).await;
    let value = cookie_value(&session_set_cookie(resp.headers()));
    assert_eq!(
        client
            .post(gw.url("/auth/logout"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        client
            .post(gw.url("/auth/logout"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // The ended session's cookie sent again by hand.
    let resp = Client::new()
        .post(gw.url("/auth/logout"))
        .header("Cookie", format!("xgw_session={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logged_out_session_is_listed_as_expired_with_reason_logged_out() {
    let gw = TestGateway::start().await;
    let (org, _, admin, _) = gw.admin_session().await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();
    let login = post_login(&gw, &client, "ada@acme.test", PASSWORD).await;
    assert_eq!(login.status(), 200);
    let me: Value = client
        .get(gw.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let session_id = me["session"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        client
            .post(gw.url("/auth/logout"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );

    let expired = list_sessions(&gw, &admin, &org.id, "expired").await;
    let ours: Vec<&Value> = expired
        .iter()
        .filter(|s| s["id"] == session_id.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{expired:?}");
    assert_eq!(ours[0]["ended_reason"], "logged_out");
    assert_eq!(ours[0]["state"], "expired");
    let active = list_sessions(&gw, &admin, &org.id, "active").await;
    assert!(
        active.iter().all(|s| s["id"] != session_id.as_str()),
        "{active:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_cannot_outrun_the_failure_limit() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    gw.create_user(&org, "ada@acme.test", false).await;
    let client = gw.client();

    let guesses = (0..20).map(|_| post_login(&gw, &client, "ada@acme.test", WRONG));
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let verified = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses.iter().all(|s| matches!(s, 401 | 429)),
        "{statuses:?}"
    );
    assert!(
        verified <= 5,
        "{verified} guesses were checked: {statuses:?}"
    );
}

//! Self-tests of the GitHub stand-in.

use axum::http::header;
use serde_json::{json, Value};

use super::test_client::*;
use super::*;

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

//! Self-tests of the OpenID provider stand-in.

use axum::http::header;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::test_client::*;
use super::*;

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

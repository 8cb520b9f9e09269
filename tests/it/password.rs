//! `POST /auth/api/v1/me/password`: the rules, the brute-force gate it shares with login, and
//! the caller staying signed in while every other session ends, on every replica.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{json, Value};
use xelon_gateway::clock::ManualClock;

use crate::harness::{echoed, get, send, try_login, Options, TestGateway, PASSWORD};
use crate::redis_server::RedisServer;

const PATH: &str = "/auth/api/v1/me/password";
const NEW: &str = "Another-Secret-Phrase-7";

async fn change(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    current: &str,
    new: &str,
) -> (u16, Value) {
    let body = json!({ "current_password": current, "new_password": new });
    send(gw, client, Method::POST, PATH, csrf, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_unmet_rule_is_listed_at_once() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    let cases: [(&str, &[&str]); 5] = [
        (
            "short",
            &["at least 12 characters", "an upper case letter", "a digit"],
        ),
        (
            "alllowercase-no-digits",
            &["an upper case letter", "a digit"],
        ),
        ("ALLUPPERCASE-123", &["a lower case letter"]),
        ("Admin@Acme.test1", &[]),
        (PASSWORD, &["different from the current password"]),
    ];
    for (new, rules) in cases {
        let (status, body) = change(&gw, &client, &csrf, PASSWORD, new).await;
        if rules.is_empty() {
            continue;
        }
        assert_eq!(status, 400, "{new}: {body}");
        assert_eq!(body["error"], "weak_password");
        assert_eq!(body["rules"], json!(rules), "{new}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with("new_password must have: "));
    }
    let (status, body) = change(&gw, &client, &csrf, PASSWORD, "admin@acme.test").await;
    assert_eq!(status, 400);
    assert!(body["rules"]
        .as_array()
        .unwrap()
        .contains(&json!("different from the email address")));
    // Unknown fields and a missing CSRF token are refused too.
    let (status, _) = send(
        &gw,
        &client,
        Method::POST,
        PATH,
        &csrf,
        Some(json!({ "current_password": PASSWORD, "new_password": NEW, "confirm": NEW })),
    )
    .await;
    assert_eq!(status, 400);
    let resp = client
        .post(gw.url(PATH))
        .json(&json!({ "current_password": PASSWORD, "new_password": NEW }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_password_replaces_the_old_one() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    // "Admin@Acme.test1" passed the rules above: the email rule is about equality only.
    let (status, body) = change(&gw, &client, &csrf, PASSWORD, NEW).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = try_login(&gw, &gw.client(), "admin@acme.test", PASSWORD).await;
    assert_eq!(status, 401, "the old password no longer signs in");
    let (status, _) = try_login(&gw, &gw.client(), "admin@acme.test", NEW).await;
    assert_eq!(status, 200);
    // The caller is still signed in.
    let (status, _) = get(&gw, &client, "/auth/api/v1/me").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_current_password_is_403_and_counts_toward_the_login_limit() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    // The default limit is 5 failures per account.
    for attempt in 1..=5 {
        let (status, body) = change(&gw, &client, &csrf, "Wrong-Password-99", NEW).await;
        assert_eq!(status, 403, "attempt {attempt}: {body}");
        assert_eq!(body["error"], "invalid_current_password");
    }
    let (status, body) = change(&gw, &client, &csrf, PASSWORD, NEW).await;
    assert_eq!(status, 429, "even the right password waits now: {body}");
    let (status, body) = try_login(&gw, &gw.client(), "admin@acme.test", PASSWORD).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_attempts"))
    );
    // After the backoff the right password works, and clears the count.
    gw.clock.advance(31);
    let (status, body) = change(&gw, &client, &csrf, PASSWORD, NEW).await;
    assert_eq!(status, 204, "{body}");
    let (status, _) = try_login(&gw, &gw.client(), "admin@acme.test", NEW).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_keeps_this_session_and_ends_the_others_on_every_replica() {
    let redis = RedisServer::start();
    let clock: Arc<ManualClock> = ManualClock::new();
    let opts = || Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock.clone()),
        ..Options::default()
    };
    let a = TestGateway::start_with(opts()).await;
    let b = TestGateway::start_with(opts()).await;
    crate::replicas::wait_for_feeds(&[&a, &b]).await;
    let (org, _, admin, _) = a.admin_session().await;
    a.create_user(&org, "member@acme.test", false).await;
    // The member is signed in on a laptop (via A) and a phone (via B); both sessions are
    // cached on both replicas.
    let laptop = a.client();
    let login = a.login(&laptop, "member@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap().to_string();
    let phone = b.client();
    b.login(&phone, "member@acme.test").await;
    for gw in [&a, &b] {
        echoed(gw, &laptop, "/api/x").await;
        echoed(gw, &phone, "/api/x").await;
        echoed(gw, &admin, "/api/x").await;
    }

    let (status, body) = change(&a, &laptop, &csrf, PASSWORD, NEW).await;
    assert_eq!(status, 204, "{body}");

    for gw in [&b, &a] {
        let resp = phone.get(gw.url("/api/x")).send().await.unwrap();
        assert_eq!(
            resp.status(),
            401,
            "the other session still works on a replica"
        );
        echoed(gw, &laptop, "/api/x").await;
        echoed(gw, &admin, "/api/x").await;
    }
    // The admin sees why the phone was signed out.
    let (status, expired) = get(
        &b,
        &admin,
        &format!("/auth/api/v1/orgs/{}/sessions?state=expired", org.id),
    )
    .await;
    assert_eq!(status, 200);
    let reasons: Vec<&Value> = expired["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["ended_reason"])
        .collect();
    assert_eq!(reasons, [&json!("password_changed")]);
}

//! Several gateway replicas sharing one Redis: revocations reach every replica at once, and a
//! store outage fails closed and heals without a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xelon_gateway::clock::ManualClock;

use crate::harness::{echoed, Options, TestGateway};
use crate::redis_server::RedisServer;

async fn two_replicas(redis: &RedisServer) -> (TestGateway, TestGateway) {
    let clock: Arc<ManualClock> = ManualClock::new();
    let a = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock.clone()),
        ..Options::default()
    })
    .await;
    let b = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock),
        ..Options::default()
    })
    .await;
    (a, b)
}

/// Both replicas' invalidation feeds are subscribed (else a test could race the subscription).
pub async fn wait_for_feeds(gws: &[&TestGateway]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    for gw in gws {
        while !gw.metrics().await.contains("xgw_invalidation_feed_up 1") {
            assert!(Instant::now() < deadline, "invalidation feed never came up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_now_on_one_replica_is_refused_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    wait_for_feeds(&[&a, &b]).await;
    let (org, _, admin, csrf) = a.admin_session().await;
    a.create_user(&org, "member@acme.test", false).await;
    let member = a.client();
    a.login(&member, "member@acme.test").await;
    // The same cookie works on both replicas, and B has it cached.
    echoed(&a, &member, "/api/x").await;
    echoed(&b, &member, "/api/x").await;
    echoed(&b, &member, "/api/x").await;

    // Expire the member's session (its id, as the admin list shows it, is in the member's /me).
    let me: Value = member
        .get(a.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member_session_id = me["session"]["id"].as_str().unwrap();
    let resp = admin
        .post(a.url(&format!(
            "/auth/api/v1/orgs/{}/sessions/{member_session_id}/expire",
            org.id
        )))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = member.get(b.url("/api/x")).send().await.unwrap();
    assert_eq!(
        resp.status(),
        401,
        "replica B still accepted an expired session"
    );
    let resp = member.get(a.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    // Every replica acknowledged the revocation before the API answered.
    assert!(a
        .metrics()
        .await
        .contains("xgw_invalidation_ack_timeouts_total 0"));
    // The admin's own session is untouched on both.
    echoed(&b, &admin, "/api/x").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_and_duration_changes_reach_every_replica() {
    let redis = RedisServer::start();
    let (a, b) = two_replicas(&redis).await;
    wait_for_feeds(&[&a, &b]).await;
    let (org, _, admin, csrf) = a.admin_session().await;
    a.create_user(&org, "member@acme.test", false).await;
    let (member, jar) = a.client_with_jar();
    a.login(&member, "member@acme.test").await;
    echoed(&b, &member, "/api/x").await;
    echoed(&b, &admin, "/api/x").await;
    // Keep the raw cookie: the browser forgets it on logout, a thief would not.
    use reqwest::cookie::CookieStore;
    let stolen = jar.cookies(&b.url("/").parse().unwrap()).unwrap();

    let resp = member.post(a.url("/auth/logout")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let thief = reqwest::Client::new();
    let resp = thief
        .get(b.url("/api/x"))
        .header("Cookie", stolen)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_session");

    // Shortening the duration on A ends B's cached sessions that are now too old.
    let resp = admin
        .put(a.url(&format!("/auth/api/v1/orgs/{}/settings", org.id)))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "session_duration_days": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    a.clock.advance(86_400 + 1);
    let resp = admin.get(b.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
}

async fn wait_for_status(client: &reqwest::Client, url: &str, want: u16) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(resp) = client.get(url).send().await {
            if resp.status() == want {
                return resp.json().await.unwrap_or(Value::Null);
            }
        }
        assert!(Instant::now() < deadline, "{url} never answered {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_down_fails_closed_with_503_and_recovers_without_restart() {
    let mut redis = RedisServer::start();
    let gw = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        ..Options::default()
    })
    .await;
    wait_for_feeds(&[&gw]).await;
    let (_, _, client, _) = gw.admin_session().await;
    echoed(&gw, &client, "/api/x").await;
    let plain = reqwest::Client::new();
    let readyz = format!("{}/readyz", gw.internal);
    wait_for_status(&plain, &readyz, 200).await;

    redis.stop();
    wait_for_status(&plain, &readyz, 503).await;
    // The cached session is not trusted while revocations cannot be heard.
    let body = wait_for_status(&client, &gw.url("/api/x"), 503).await;
    assert_eq!(body["error"], "store_unavailable");
    // Login fails closed too, with a clear code.
    let resp = gw
        .client()
        .post(gw.url("/auth/login"))
        .json(&json!({ "email": "admin@acme.test", "password": "whatever-Long-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert!(gw.metrics().await.contains("xgw_store_errors_total"));

    redis.restart();
    wait_for_status(&plain, &readyz, 200).await;
    // The data is gone with this throwaway Redis (no persistence), so the old session is not
    // found: what matters is that the gateway answers from the store again, without a restart.
    let body = wait_for_status(&client, &gw.url("/api/x"), 401).await;
    assert_eq!(body["error"], "invalid_session");
}

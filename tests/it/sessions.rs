//! Sessions as admins manage them: duration, the active and expired lists, Expire now, CSRF.

use serde_json::{json, Value};

use crate::harness::{echoed, TestGateway};

async fn sessions(gw: &TestGateway, admin: &reqwest::Client, org: &str, state: &str) -> Vec<Value> {
    let resp = admin
        .get(gw.url(&format!("/auth/api/v1/orgs/{org}/sessions?state={state}")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    body["sessions"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_changes_need_the_sessions_csrf_token() {
    let gw = TestGateway::start().await;
    let (org, _, admin, csrf) = gw.admin_session().await;
    let url = gw.url(&format!("/auth/api/v1/orgs/{}/settings", org.id));
    let body = json!({ "session_duration_days": 14 });
    for token in [None, Some("wrong"), Some("")] {
        let mut req = admin.put(&url).json(&body);
        if let Some(t) = token {
            req = req.header("X-CSRF-Token", t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 403, "token {token:?}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "csrf_token_invalid");
    }
    // Nothing changed.
    let current: Value = admin.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(current["session_duration_days"], 7);
    // The token from the login response (also in /me) works.
    let me: Value = admin
        .get(gw.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["csrf_token"], csrf.as_str());
    let resp = admin
        .put(&url)
        .header("X-CSRF-Token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let updated: Value = resp.json().await.unwrap();
    assert_eq!(updated["session_duration_days"], 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lowering_the_duration_shortens_existing_sessions() {
    let gw = TestGateway::start().await;
    let (org, _, admin, csrf) = gw.admin_session().await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    gw.login(&member, "member@acme.test").await;
    echoed(&gw, &member, "/api/x").await;

    let active = sessions(&gw, &admin, &org.id, "active").await;
    assert_eq!(active.len(), 2);
    let created = active[0]["created_at"].as_str().unwrap().to_string();
    assert!(created.ends_with('Z'), "RFC 3339 UTC: {created}");

    let resp = admin
        .put(gw.url(&format!("/auth/api/v1/orgs/{}/settings", org.id)))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "session_duration_days": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Two days on: both sessions (7 days when created) are over, the cached one included.
    gw.clock.advance(2 * 86_400);
    let resp = member.get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let resp = admin
        .get(gw.url(&format!("/auth/api/v1/orgs/{}/sessions", org.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "the admin's own session timed out too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_now_logs_the_device_out_at_once_and_lists_the_reason() {
    let gw = TestGateway::start().await;
    let (org, member_user, admin, csrf) = {
        let (org, _, admin, csrf) = gw.admin_session().await;
        let member = gw.create_user(&org, "member@acme.test", false).await;
        (org, member, admin, csrf)
    };
    let member = gw.client();
    gw.login(&member, "member@acme.test").await;
    // Warm the cache: the revocation must beat a cached credential.
    echoed(&gw, &member, "/api/x").await;

    let active = sessions(&gw, &admin, &org.id, "active").await;
    let target = active
        .iter()
        .find(|s| s["user_id"] == member_user.id.as_str())
        .unwrap();
    assert_eq!(target["user_name"], "Ada Lovelace");
    assert_eq!(target["ip"], "127.0.0.1");
    assert_eq!(target["state"], "active");
    assert!(target["expires_at"].as_str().is_some());
    let id = target["id"].as_str().unwrap();

    let resp = admin
        .post(gw.url(&format!(
            "/auth/api/v1/orgs/{}/sessions/{id}/expire",
            org.id
        )))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let resp = member.get(gw.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let expired = sessions(&gw, &admin, &org.id, "expired").await;
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["id"], id);
    assert_eq!(expired[0]["ended_reason"], "expired_by_admin");
    assert_eq!(expired[0]["state"], "expired");
    assert_eq!(sessions(&gw, &admin, &org.id, "active").await.len(), 1);

    // Expiring again is harmless and keeps the first reason.
    let resp = admin
        .post(gw.url(&format!(
            "/auth/api/v1/orgs/{}/sessions/{id}/expire",
            org.id
        )))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_sessions_are_listed_as_expired_for_the_retention_period() {
    let gw = TestGateway::start().await;
    let (org, _, _, _) = gw.admin_session().await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    gw.login(&member, "member@acme.test").await;
    gw.clock.advance(7 * 86_400 + 1);
    // The admin signs in again (their first session timed out too).
    let admin = gw.client();
    gw.login(&admin, "admin@acme.test").await;
    let expired = sessions(&gw, &admin, &org.id, "expired").await;
    assert_eq!(expired.len(), 2);
    assert!(expired.iter().all(|s| s["ended_reason"] == "timed_out"));
    // Past the retention (7 days) they are no longer listed.
    gw.clock.advance(8 * 86_400);
    let admin = gw.client();
    gw.login(&admin, "admin@acme.test").await;
    let expired = sessions(&gw, &admin, &org.id, "expired").await;
    assert_eq!(
        expired.len(),
        1,
        "only the admin's second session, timed out a day ago: {expired:?}"
    );
    assert_eq!(expired[0]["ended_reason"], "timed_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn org_endpoints_are_for_that_orgs_admins_only() {
    let gw = TestGateway::start().await;
    let (org, _, _, _) = gw.admin_session().await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    let login = gw.login(&member, "member@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    let other = gw.create_org("Other").await;
    for org_id in [&org.id, &other.id] {
        let resp = member
            .get(gw.url(&format!("/auth/api/v1/orgs/{org_id}/sessions")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let resp = member
            .put(gw.url(&format!("/auth/api/v1/orgs/{org_id}/settings")))
            .header("X-CSRF-Token", csrf)
            .json(&json!({ "session_duration_days": 30 }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403);
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"], "forbidden");
    }
    // Anonymous callers get 401 from the account API.
    let resp = gw
        .client()
        .get(gw.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

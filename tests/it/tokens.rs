//! Service tokens: created once-shown, used as Bearer with IP / range + X-User-Id rules,
//! deleted or disowned with immediate effect.

use std::sync::Arc;

use serde_json::{json, Value};
use xelon_gateway::clock::ManualClock;

use crate::harness::{Options, TestGateway};
use crate::redis_server::RedisServer;

/// The gateway believes X-Forwarded-For from loopback, so tests can play any client address.
fn behind_local_proxy(c: &mut xelon_gateway::config::Config) {
    c.server.trusted_proxies = vec!["127.0.0.1".into()];
}

async fn gateway() -> TestGateway {
    TestGateway::start_with(Options {
        tweak: behind_local_proxy,
        ..Options::default()
    })
    .await
}

async fn create_token(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    body: Value,
) -> reqwest::Response {
    client
        .post(gw.url("/auth/api/v1/service-tokens"))
        .header("X-CSRF-Token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Creates a token as the admin; returns the 201 body (with `token` and `client_id`).
async fn admin_token(
    gw: &TestGateway,
    ip: Option<&str>,
) -> (Value, reqwest::Client, String, String) {
    let (org, _, admin, csrf) = gw.admin_session().await;
    let resp = create_token(
        gw,
        &admin,
        &csrf,
        json!({ "name": "CI/CD Pipeline", "organization_id": org.id, "ip": ip }),
    )
    .await;
    assert_eq!(resp.status(), 201);
    (resp.json().await.unwrap(), admin, csrf, org.id)
}

/// GET /api/x as a script would: Bearer token, a client address, maybe X-User-Id.
async fn call(
    gw: &TestGateway,
    token: &str,
    from: &str,
    user_id: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .get(gw.url("/api/x"))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Forwarded-For", from);
    if let Some(id) = user_id {
        req = req.header("X-User-Id", id);
    }
    req.send().await.unwrap()
}

async fn error_code(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or("").to_string())
}

fn store_lookups(metrics: &str, op: &str) -> u64 {
    let prefix = format!("xgw_store_operation_seconds_count{{op=\"{op}\"}}");
    metrics
        .lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_shown_once_and_listed_without_its_value() {
    let gw = gateway().await;
    let (created, admin, _, org_id) = admin_token(&gw, None).await;
    let token = created["token"].as_str().unwrap();
    assert!(token.starts_with("xgw_") && token.len() == 54, "{token}");
    assert!(created["client_id"].as_str().unwrap().starts_with("cli_"));
    assert_eq!(created["organization_id"], org_id.as_str());
    assert_eq!(created["name"], "CI/CD Pipeline");
    assert!(created["ip"].is_null());
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let list: Value = admin
        .get(gw.url("/auth/api/v1/service-tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tokens = list["service_tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0]["id"], created["id"]);
    assert_eq!(tokens[0]["organization_name"], "Acme");
    assert!(tokens[0].get("token").is_none());
    assert!(
        !list.to_string().contains(token),
        "the token value is never shown again"
    );
    assert!(tokens[0]["last_used_at"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_token_needs_the_permission_in_that_organization() {
    let gw = gateway().await;
    let (org, _, _, _) = gw.admin_session().await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    let login = gw.login(&member, "member@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    let resp = create_token(
        &gw,
        &member,
        csrf,
        json!({ "name": "x", "organization_id": org.id }),
    )
    .await;
    assert_eq!(error_code(resp).await, (403, "forbidden".into()));

    // A member with allowManageServiceTokens may.
    let passwords = xelon_gateway::auth::password::Passwords::new(19_456, 2, 1).unwrap();
    xelon_gateway::admin::create_user(
        &gw.handles.store,
        &passwords,
        xelon_gateway::admin::NewUser {
            org_id: &org.id,
            email: "ops@acme.test",
            first_name: "O",
            last_name: "Ps",
            admin: false,
            permissions: &["allowManageServiceTokens".to_string()],
            password: crate::harness::PASSWORD,
        },
        gw.now(),
    )
    .await
    .unwrap();
    let ops = gw.client();
    let login = gw.login(&ops, "ops@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    let resp = create_token(
        &gw,
        &ops,
        csrf,
        json!({ "name": "x", "organization_id": org.id }),
    )
    .await;
    assert_eq!(resp.status(), 201);
    // ... but not in an organization they do not belong to.
    let other = gw.create_org("Other").await;
    let resp = create_token(
        &gw,
        &ops,
        csrf,
        json!({ "name": "x", "organization_id": other.id }),
    )
    .await;
    assert_eq!(error_code(resp).await, (403, "forbidden".into()));
    // And never without the CSRF token.
    let resp = ops
        .post(gw.url("/auth/api/v1/service-tokens"))
        .json(&json!({ "name": "x", "organization_id": org.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (403, "csrf_token_invalid".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_token_requests_get_a_400_naming_the_problem_and_create_nothing() {
    let gw = gateway().await;
    let (org, _, admin, csrf) = gw.admin_session().await;
    let cases = [
        (
            json!({ "name": "", "organization_id": org.id }),
            "invalid_name",
        ),
        (
            json!({ "name": "   ", "organization_id": org.id }),
            "invalid_name",
        ),
        (
            json!({ "name": "x".repeat(101), "organization_id": org.id }),
            "invalid_name",
        ),
        (
            json!({ "name": "a\u{0007}b", "organization_id": org.id }),
            "invalid_name",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "ip": "300.1.2.3" }),
            "invalid_ip",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "ip": "203.0.113.7/24" }),
            "invalid_ip",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "ip": "10.0.0.0/33" }),
            "invalid_ip",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "ip": "example.com" }),
            "invalid_ip",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "ip": 7 }),
            "invalid_body",
        ),
        (
            json!({ "name": "x", "organization_id": org.id, "scope": "all" }),
            "invalid_body",
        ),
        (json!({ "organization_id": org.id }), "invalid_body"),
    ];
    for (body, code) in cases {
        let resp = create_token(&gw, &admin, &csrf, body.clone()).await;
        let status = resp.status().as_u16();
        let err: Value = resp.json().await.unwrap();
        assert_eq!(
            (status, err["error"].as_str().unwrap()),
            (400, code),
            "{body}"
        );
        assert!(!err["message"].as_str().unwrap().is_empty());
    }
    let resp = create_token(
        &gw,
        &admin,
        &csrf,
        json!({ "name": "x", "organization_id": org.id, "ip": "203.0.113.7/24" }),
    )
    .await;
    let err: Value = resp.json().await.unwrap();
    assert!(err["message"].as_str().unwrap().contains("203.0.113.0/24"));
    let list: Value = admin
        .get(gw.url("/auth/api/v1/service-tokens"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["service_tokens"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bound_to_one_address_works_only_from_it() {
    let gw = gateway().await;
    let (created, _, _, org_id) = admin_token(&gw, Some("203.0.113.7")).await;
    let token = created["token"].as_str().unwrap();
    let resp = call(&gw, token, "203.0.113.7", None).await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(h["x-auth-method"], "service_token");
    assert_eq!(h["x-auth-token-id"], created["id"]);
    assert_eq!(h["x-auth-org-id"], org_id.as_str());
    assert_eq!(h["x-auth-user-email"], "admin@acme.test");
    assert_eq!(h["x-auth-client-ip"], "203.0.113.7");
    assert!(
        h.get("authorization").is_none(),
        "the token is not forwarded"
    );
    assert!(h.get("x-auth-session-id").is_none());
    let jwt = h["x-auth-jwt"].as_str().unwrap();
    let claims = gw.handles.signer.verify(jwt).unwrap();
    assert_eq!(claims.amr, vec!["svc"]);
    assert_eq!(claims.sid, created["id"].as_str().unwrap());

    assert_eq!(
        error_code(call(&gw, token, "203.0.113.8", None).await).await,
        (403, "ip_not_allowed".into())
    );
    // Without a trusted proxy in front, the socket peer is the client.
    let direct = reqwest::Client::new()
        .get(gw.url("/api/x"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(direct).await, (403, "ip_not_allowed".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_bound_to_a_range_needs_the_client_id_from_inside_it() {
    let gw = gateway().await;
    let (created, _, _, _) = admin_token(&gw, Some("198.51.100.0/24")).await;
    let token = created["token"].as_str().unwrap();
    let client_id = created["client_id"].as_str().unwrap();
    let resp = call(&gw, token, "198.51.100.20", Some(client_id)).await;
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert!(
        echo["headers"].get("x-user-id").is_none(),
        "X-User-Id is not forwarded"
    );

    let refusals = [
        ("198.51.100.20", None, "client_id_mismatch"),
        ("198.51.100.20", Some("cli_wrong"), "client_id_mismatch"),
        ("198.51.101.20", Some(client_id), "ip_not_allowed"),
    ];
    for (from, id, code) in refusals {
        let (status, got) = error_code(call(&gw, token, from, id).await).await;
        assert_eq!(
            (status, got.as_str()),
            (403, code),
            "from {from} with {id:?}"
        );
    }
    assert!(gw
        .metrics()
        .await
        .contains("xgw_requests_total{method=\"service_token\",outcome=\"client_id_mismatch\"} 2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_request_sending_x_user_id_must_send_the_right_one() {
    let gw = gateway().await;
    let (created, _, _, _) = admin_token(&gw, None).await;
    let token = created["token"].as_str().unwrap();
    let client_id = created["client_id"].as_str().unwrap();
    assert_eq!(
        call(&gw, token, "192.0.2.1", Some(client_id))
            .await
            .status(),
        200
    );
    assert_eq!(
        error_code(call(&gw, token, "192.0.2.1", Some("someone-else")).await).await,
        (403, "client_id_mismatch".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_authorization_never_reaches_the_store() {
    let gw = gateway().await;
    let (created, _, _, _) = admin_token(&gw, None).await;
    let token = created["token"].as_str().unwrap().to_string();
    let before = store_lookups(&gw.metrics().await, "token_by_hash");
    let mut typo = token.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let bad = [
        typo.as_str(),
        "xgw_short",
        "ghp_0123456789012345678901234567890123456789abcdef",
        &token[..token.len() - 1],
        "not a token at all",
    ];
    for value in bad {
        let (status, code) = error_code(call(&gw, value, "192.0.2.1", None).await).await;
        assert_eq!((status, code.as_str()), (401, "invalid_token"), "{value}");
    }
    for header in ["Bearer", "Bearer ", "Token abc", "bearer"] {
        let resp = reqwest::Client::new()
            .get(gw.url("/api/x"))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{header:?}");
    }
    assert_eq!(store_lookups(&gw.metrics().await, "token_by_hash"), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_token_costs_no_store_round_trip_and_last_use_is_written_once_a_minute() {
    let gw = gateway().await;
    let (created, admin, _, _) = admin_token(&gw, None).await;
    let token = created["token"].as_str().unwrap();
    assert_eq!(call(&gw, token, "192.0.2.1", None).await.status(), 200);
    let before = gw.metrics().await;
    for _ in 0..20 {
        assert_eq!(call(&gw, token, "192.0.2.1", None).await.status(), 200);
    }
    let after = gw.metrics().await;
    assert_eq!(
        store_lookups(&before, "token_by_hash"),
        store_lookups(&after, "token_by_hash")
    );
    assert_eq!(
        store_lookups(&before, "get_user"),
        store_lookups(&after, "get_user")
    );

    let last_used = |admin: reqwest::Client, url: String| async move {
        let list: Value = admin.get(url).send().await.unwrap().json().await.unwrap();
        let t = &list["service_tokens"][0];
        (t["last_used_at"].clone(), t["last_used_ip"].clone())
    };
    let url = gw.url("/auth/api/v1/service-tokens");
    let (first, ip) = {
        // The first use is written in the background; wait for it.
        let mut seen = (Value::Null, Value::Null);
        for _ in 0..100 {
            seen = last_used(admin.clone(), url.clone()).await;
            if !seen.0.is_null() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        seen
    };
    assert!(first.as_str().unwrap().ends_with('Z'));
    assert_eq!(ip, "192.0.2.1");
    let writes = store_lookups(&gw.metrics().await, "touch_token");
    gw.clock.advance(30);
    assert_eq!(call(&gw, token, "192.0.2.2", None).await.status(), 200);
    assert_eq!(store_lookups(&gw.metrics().await, "touch_token"), writes);
    gw.clock.advance(31);
    assert_eq!(call(&gw, token, "192.0.2.3", None).await.status(), 200);
    let mut moved = false;
    for _ in 0..100 {
        let (_, ip) = last_used(admin.clone(), url.clone()).await;
        if ip == "192.0.2.3" {
            moved = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(moved, "last use is recorded again after a minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_someone_elses_token_is_404_and_deletes_nothing() {
    let gw = gateway().await;
    let (created, _, _, org_id) = admin_token(&gw, None).await;
    let org = gw.handles.store.get_org(&org_id).await.unwrap().unwrap();
    gw.create_user(&org, "other@acme.test", true).await;
    let other = gw.client();
    let login = gw.login(&other, "other@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    for id in [
        created["id"].as_str().unwrap(),
        "tok_nope",
        &"x".repeat(300),
    ] {
        let resp = other
            .delete(gw.url(&format!("/auth/api/v1/service-tokens/{id}")))
            .header("X-CSRF-Token", csrf)
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(resp).await, (404, "not_found".into()));
    }
    assert_eq!(
        call(&gw, created["token"].as_str().unwrap(), "192.0.2.1", None)
            .await
            .status(),
        200
    );
    let ip: Value = other
        .get(gw.url("/auth/api/v1/me/client-ip"))
        .header("X-Forwarded-For", "192.0.2.77")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ip["ip"], "192.0.2.77");
}

async fn redis_replicas(redis: &RedisServer) -> (TestGateway, TestGateway) {
    let clock: Arc<ManualClock> = ManualClock::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(
            TestGateway::start_with(Options {
                store_url: Some(redis.url.clone()),
                clock: Some(clock.clone()),
                tweak: behind_local_proxy,
                ..Options::default()
            })
            .await,
        );
    }
    let b = replicas.pop().unwrap();
    let a = replicas.pop().unwrap();
    for gw in [&a, &b] {
        for _ in 0..200 {
            if gw.metrics().await.contains("xgw_invalidation_feed_up 1") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_token_is_refused_on_every_replica_at_once() {
    let redis = RedisServer::start();
    let (a, b) = redis_replicas(&redis).await;
    let (created, admin, csrf, _) = admin_token(&a, None).await;
    let token = created["token"].as_str().unwrap();
    // Cached on B.
    assert_eq!(call(&b, token, "192.0.2.1", None).await.status(), 200);
    assert_eq!(call(&b, token, "192.0.2.1", None).await.status(), 200);
    let resp = admin
        .delete(a.url(&format!(
            "/auth/api/v1/service-tokens/{}",
            created["id"].as_str().unwrap()
        )))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        error_code(call(&b, token, "192.0.2.1", None).await).await,
        (401, "invalid_token".into())
    );
    assert_eq!(call(&a, token, "192.0.2.1", None).await.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_stops_working_when_its_owner_leaves_the_organization() {
    let redis = RedisServer::start();
    let (a, b) = redis_replicas(&redis).await;
    let (org, _, admin, admin_csrf) = a.admin_session().await;
    let member_user = a.create_user(&org, "member@acme.test", true).await;
    let member = a.client();
    let login = a.login(&member, "member@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap();
    let resp = create_token(
        &a,
        &member,
        csrf,
        json!({ "name": "m", "organization_id": org.id }),
    )
    .await;
    let created: Value = resp.json().await.unwrap();
    let token = created["token"].as_str().unwrap();
    assert_eq!(call(&b, token, "192.0.2.1", None).await.status(), 200);

    let resp = admin
        .delete(a.url(&format!(
            "/auth/api/v1/orgs/{}/users/{}",
            org.id, member_user.id
        )))
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        error_code(call(&b, token, "192.0.2.1", None).await).await,
        (401, "invalid_token".into())
    );
    // Their session is over too, and listed with the reason.
    assert_eq!(
        member.get(b.url("/api/x")).send().await.unwrap().status(),
        401
    );
    let expired: Value = admin
        .get(a.url(&format!(
            "/auth/api/v1/orgs/{}/sessions?state=expired",
            org.id
        )))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["sessions"][0]["ended_reason"], "member_removed");
    // Removing yourself, or a non-member, is refused.
    let resp = admin
        .delete(a.url(&format!(
            "/auth/api/v1/orgs/{}/users/{}",
            org.id, member_user.id
        )))
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (404, "not_found".into()));
    let me: Value = admin
        .get(a.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = admin
        .delete(a.url(&format!(
            "/auth/api/v1/orgs/{}/users/{}",
            org.id,
            me["id"].as_str().unwrap()
        )))
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(resp).await, (400, "cannot_remove_self".into()));
}

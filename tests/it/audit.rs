//! The audit log: security events are recorded with actor, target, IP and user agent, and org
//! admins page through them newest first.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{get, send, try_login, Options, TestGateway, PASSWORD};

/// The gateway believes X-Forwarded-For from loopback, so a test can play a client address.
fn behind_local_proxy(c: &mut xelon_gateway::config::Config) {
    c.server.trusted_proxies = vec!["127.0.0.1".into()];
}

fn audit_path(org: &str, query: &str) -> String {
    format!("/auth/api/v1/orgs/{org}/audit{query}")
}

async fn all_entries(gw: &TestGateway, admin: &reqwest::Client, org: &str) -> Vec<Value> {
    let (status, body) = get(gw, admin, &audit_path(org, "?limit=200")).await;
    assert_eq!(status, 200, "{body}");
    body["entries"].as_array().unwrap().clone()
}

fn of_type<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["type"] == kind).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_events_are_recorded_with_actor_target_ip_and_user_agent() {
    let gw = TestGateway::start_with(Options {
        tweak: behind_local_proxy,
        ..Options::default()
    })
    .await;
    let org = gw.create_org("Acme").await;
    let admin_user = gw.create_user(&org, "admin@acme.test", true).await;
    let member_user = gw.create_user(&org, "member@acme.test", false).await;
    let browser = |ip: &'static str| {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-forwarded-for", ip.parse().unwrap());
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("AuditTest/1.0 (\"quoted\")")
            .default_headers(headers)
            .build()
            .unwrap()
    };
    let admin = browser("203.0.113.10");
    let login = gw.login(&admin, "admin@acme.test").await;
    let csrf = login["csrf_token"].as_str().unwrap().to_string();

    // A failed and a successful login of the member, then the admin expires that session.
    let member = browser("198.51.100.7");
    let (status, _) = try_login(&gw, &member, "member@acme.test", "Wrong-Password-1").await;
    assert_eq!(status, 401);
    let (status, _) = try_login(&gw, &member, "nobody@acme.test", "Wrong-Password-1").await;
    assert_eq!(
        status, 401,
        "unknown accounts have no organization and are not recorded"
    );
    gw.login(&member, "member@acme.test").await;
    let (_, me) = get(&gw, &member, "/auth/api/v1/me").await;
    let member_session = me["session"]["id"].as_str().unwrap().to_string();
    let (status, _) = send(
        &gw,
        &admin,
        Method::POST,
        &format!(
            "/auth/api/v1/orgs/{}/sessions/{member_session}/expire",
            org.id
        ),
        &csrf,
        None,
    )
    .await;
    assert_eq!(status, 204);

    // The admin: email change, password change, a token made and deleted, a member created
    // and removed, and finally a logout.
    let (status, _) = send(
        &gw,
        &admin,
        Method::PATCH,
        "/auth/api/v1/me",
        &csrf,
        Some(json!({ "email": "boss@acme.test" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = send(
        &gw,
        &admin,
        Method::POST,
        "/auth/api/v1/me/password",
        &csrf,
        Some(json!({ "current_password": PASSWORD, "new_password": "Brand-New-Secret-77" })),
    )
    .await;
    assert_eq!(status, 204);
    let (status, token) = send(
        &gw,
        &admin,
        Method::POST,
        "/auth/api/v1/service-tokens",
        &csrf,
        Some(json!({ "name": "CI", "organization_id": org.id })),
    )
    .await;
    assert_eq!(status, 201);
    let token_id = token["id"].as_str().unwrap();
    let (status, _) = send(
        &gw,
        &admin,
        Method::DELETE,
        &format!("/auth/api/v1/service-tokens/{token_id}"),
        &csrf,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, created) = send(
        &gw,
        &admin,
        Method::POST,
        &format!("/auth/api/v1/orgs/{}/users", org.id),
        &csrf,
        Some(json!({ "first_name": "New", "last_name": "Hire", "email": "hire@acme.test" })),
    )
    .await;
    assert_eq!(status, 201);
    let hire_id = created["id"].as_str().unwrap();
    let (status, _) = send(
        &gw,
        &admin,
        Method::DELETE,
        &format!("/auth/api/v1/orgs/{}/users/{hire_id}", org.id),
        &csrf,
        None,
    )
    .await;
    assert_eq!(status, 204);

    let entries = all_entries(&gw, &admin, &org.id).await;
    let kinds: BTreeSet<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "email_changed",
            "login_failed",
            "login_succeeded",
            "member_created",
            "member_removed",
            "password_changed",
            "service_token_created",
            "service_token_deleted",
            "session_expired_by_admin",
        ])
    );
    for e in &entries {
        assert!(e["id"].as_str().unwrap().starts_with("aud_"));
        assert!(e["time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(e["organization_id"], org.id.as_str());
        assert_eq!(e["user_agent"], "AuditTest/1.0 (\"quoted\")", "{e}");
    }
    let failed = of_type(&entries, "login_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["actor_user_id"], Value::Null);
    assert_eq!(failed[0]["target"], member_user.id.as_str());
    assert_eq!(failed[0]["ip"], "198.51.100.7");
    let logins = of_type(&entries, "login_succeeded");
    assert_eq!(logins.len(), 2, "the admin's and the member's");
    let expired = of_type(&entries, "session_expired_by_admin")[0];
    assert_eq!(expired["actor_user_id"], admin_user.id.as_str());
    assert_eq!(expired["target"], member_session.as_str());
    assert_eq!(expired["ip"], "203.0.113.10");
    assert_eq!(expired["details"]["user_id"], member_user.id.as_str());
    let email = of_type(&entries, "email_changed")[0];
    assert_eq!(
        email["details"],
        json!({ "old_email": "admin@acme.test", "new_email": "boss@acme.test" })
    );
    assert_eq!(
        of_type(&entries, "password_changed")[0]["target"],
        admin_user.id.as_str()
    );
    assert_eq!(
        of_type(&entries, "service_token_created")[0]["target"],
        token_id
    );
    assert_eq!(of_type(&entries, "member_removed")[0]["target"], hire_id);

    // Logout is recorded too (seen by a second admin session).
    let second = browser("203.0.113.11");
    let (status, _) = try_login(&gw, &second, "boss@acme.test", "Brand-New-Secret-77").await;
    assert_eq!(status, 200);
    let resp = admin.post(gw.url("/auth/logout")).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    let entries = all_entries(&gw, &second, &org.id).await;
    let logout = of_type(&entries, "logout");
    assert_eq!(logout.len(), 1);
    assert_eq!(logout[0]["actor_user_id"], admin_user.id.as_str());
    assert!(gw
        .metrics()
        .await
        .contains("xgw_audit_events_total{type=\"logout\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_pages_newest_first_with_limit_and_before() {
    let gw = TestGateway::start().await;
    let (org, _, admin, _) = gw.admin_session().await;
    // Seven more logins, a second apart: eight login_succeeded entries in all.
    for _ in 0..7 {
        gw.clock.advance(1);
        gw.login(&gw.client(), "admin@acme.test").await;
    }
    let (status, first) = get(&gw, &admin, &audit_path(&org.id, "")).await;
    assert_eq!(status, 200);
    assert_eq!(
        first["entries"].as_array().unwrap().len(),
        8,
        "default limit 50"
    );
    assert_eq!(
        first["next_before"],
        Value::Null,
        "a short page is the last"
    );

    let mut seen = Vec::new();
    let mut query = "?limit=3".to_string();
    loop {
        let (status, page) = get(&gw, &admin, &audit_path(&org.id, &query)).await;
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 3);
        seen.extend(entries.iter().cloned());
        match page["next_before"].as_str() {
            Some(cursor) => query = format!("?limit=3&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(
        seen,
        *first["entries"].as_array().unwrap(),
        "same entries, same order"
    );
    let times: Vec<&str> = seen.iter().map(|e| e["time"].as_str().unwrap()).collect();
    let mut sorted = times.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(times, sorted, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_for_org_admins_and_checks_its_query() {
    let gw = TestGateway::start().await;
    let (org, _, admin, _) = gw.admin_session().await;
    for (query, code) in [
        ("?limit=0", "invalid_limit"),
        ("?limit=201", "invalid_limit"),
        ("?limit=ten", "invalid_limit"),
        ("?limit=-1", "invalid_limit"),
        ("?before=yesterday", "invalid_cursor"),
        (
            &*format!("?before=aud_{}", "F".repeat(28)),
            "invalid_cursor",
        ),
        (
            &*format!("?before=aud_{}", "0".repeat(29)),
            "invalid_cursor",
        ),
    ] {
        let (status, body) = get(&gw, &admin, &audit_path(&org.id, query)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{query}"
        );
    }
    let oldest = format!("?limit=200&before=aud_{}1", "0".repeat(27));
    let (status, body) = get(&gw, &admin, &audit_path(&org.id, &oldest)).await;
    assert_eq!(status, 200);
    assert_eq!(body["entries"], json!([]));
    assert_eq!(status, 200);
    let (status, _) = get(&gw, &admin, &audit_path("org_nosuchorg", "")).await;
    assert_eq!(status, 404);

    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    gw.login(&member, "member@acme.test").await;
    let (status, body) = get(&gw, &member, &audit_path(&org.id, "")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, _) = get(&gw, &gw.client(), &audit_path(&org.id, "")).await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_purges_entries_past_audit_retention_days() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use xelon_gateway::clock::{Clock, ManualClock};
    use xelon_gateway::metrics::Metrics;
    use xelon_gateway::store::{self, audit_id, AuditEntry, AuditEvent};

    let redis = crate::redis_server::RedisServer::start();
    let clock: Arc<ManualClock> = ManualClock::new();
    let day = 86_400;
    let seeded = store::open(&redis.url, Arc::new(Metrics::new())).unwrap();
    let entry = |age_days: i64, n: u8| {
        let time = clock.now() - age_days * day;
        AuditEntry {
            id: audit_id(time, [n; 8]),
            time,
            org_id: "org_retention".into(),
            event: AuditEvent::Logout,
            actor_user_id: None,
            target: None,
            ip: "192.0.2.1".into(),
            user_agent: String::new(),
            details: Default::default(),
        }
    };
    let (old, recent) = (entry(31, 1), entry(29, 2));
    seeded.append_audit(&old).await.unwrap();
    seeded.append_audit(&recent).await.unwrap();

    let gw = TestGateway::start_with(Options {
        store_url: Some(redis.url.clone()),
        clock: Some(clock.clone()),
        tweak: |c| c.audit.retention_days = 30,
        ..Options::default()
    })
    .await;
    // The sweeper runs once at start, then every minute.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = seeded.list_audit("org_retention", None, 10).await.unwrap();
        if left.len() == 1 {
            assert_eq!(left[0].id, recent.id);
            break;
        }
        assert!(Instant::now() < deadline, "not purged: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while !gw.metrics().await.contains("xgw_audit_purged_total 1") {
        assert!(Instant::now() < deadline, "the purge was not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

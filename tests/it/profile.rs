//! `PATCH /auth/api/v1/me`: every profile rule with a passing and a failing value, several
//! field errors in one answer, unknown fields, case-insensitive email uniqueness, and an email
//! change reaching the identity the upstream sees.

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{echoed, get, send, TestGateway};

const ME: &str = "/auth/api/v1/me";

async fn patch(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
    body: Value,
) -> (u16, Value) {
    send(gw, client, Method::PATCH, ME, csrf, Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_rule_has_a_passing_and_a_failing_value() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    let long = "x".repeat(101);
    // (field, accepted value, what comes back, refused value, words of the rule)
    let cases: Vec<(&str, Value, Value, Value, &str)> = vec![
        (
            "first_name",
            json!("  Grace "),
            json!("Grace"),
            json!(""),
            "1-100 characters",
        ),
        (
            "first_name",
            json!("é".repeat(100)),
            json!("é".repeat(100)),
            json!(long),
            "1-100 characters",
        ),
        (
            "first_name",
            json!("Zoë"),
            json!("Zoë"),
            json!("Ada\u{7}"),
            "control characters",
        ),
        (
            "first_name",
            json!("Ada"),
            json!("Ada"),
            json!(42),
            "must be a string",
        ),
        (
            "last_name",
            json!("Hopper"),
            json!("Hopper"),
            json!("   "),
            "1-100 characters",
        ),
        (
            "last_name",
            json!("O'Brien"),
            json!("O'Brien"),
            json!("Hop\nper"),
            "control characters",
        ),
        (
            "last_name",
            json!("Lovelace"),
            json!("Lovelace"),
            json!(null),
            "must be a string",
        ),
        (
            "email",
            json!("grace@navy.example"),
            json!("grace@navy.example"),
            json!("grace@"),
            "valid email",
        ),
        (
            "email",
            json!("g.h+tag@sub.navy.example"),
            json!("g.h+tag@sub.navy.example"),
            json!("grace hopper@navy.example"),
            "valid email",
        ),
        (
            "email",
            json!("admin@acme.test"),
            json!("admin@acme.test"),
            json!(format!("{}@x.example", "a".repeat(250))),
            "254 bytes",
        ),
        (
            "job_title",
            json!("Rear Admiral"),
            json!("Rear Admiral"),
            json!(long),
            "at most 100",
        ),
        (
            "job_title",
            json!(null),
            json!(null),
            json!("Boss\u{0}"),
            "control characters",
        ),
        (
            "job_title",
            json!(""),
            json!(null),
            json!(["a"]),
            "string or null",
        ),
        (
            "mobile_phone",
            json!("+41791234567"),
            json!("+41791234567"),
            json!("079 123 45 67"),
            "E.164",
        ),
        (
            "mobile_phone",
            json!(null),
            json!(null),
            json!("+0791234567"),
            "E.164",
        ),
        (
            "business_phone",
            json!("+41441234567"),
            json!("+41441234567"),
            json!("+41 44 123 45 67"),
            "E.164",
        ),
        (
            "business_phone",
            json!(""),
            json!(null),
            json!("+1234567890123456"),
            "E.164",
        ),
        (
            "timezone",
            json!("Europe/Zurich"),
            json!("Europe/Zurich"),
            json!("Europe/Atlantis"),
            "IANA",
        ),
        (
            "timezone",
            json!("america/new_york"),
            json!("America/New_York"),
            json!("GMT+25"),
            "IANA",
        ),
        (
            "timezone",
            json!(null),
            json!(null),
            json!(1),
            "string or null",
        ),
    ];
    for (field, good, stored, bad, rule) in cases {
        let (status, body) = patch(&gw, &client, &csrf, json!({ field: bad })).await;
        assert_eq!(status, 400, "{field} = {bad}: {body}");
        assert_eq!(body["error"], "invalid_profile", "{body}");
        let said = body["fields"][field].as_str().unwrap_or_default();
        assert!(said.contains(rule), "{field} = {bad}: {body}");
        assert!(body["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{field}: ")));

        let (status, body) = patch(&gw, &client, &csrf, json!({ field: good })).await;
        assert_eq!(status, 200, "{field} = {good}: {body}");
        assert_eq!(body[field], stored, "{field}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_changes_only_what_it_names_and_returns_the_whole_profile() {
    let gw = TestGateway::start().await;
    let (_, user, client, csrf) = gw.admin_session().await;
    let (status, body) = patch(
        &gw,
        &client,
        &csrf,
        json!({
            "first_name": "Grace", "last_name": "Hopper", "job_title": "Rear Admiral",
            "mobile_phone": "+41791234567", "business_phone": "+41441234567",
            "timezone": "Europe/Zurich"
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = patch(&gw, &client, &csrf, json!({ "job_title": null })).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({
            "id": user.id, "email": "admin@acme.test", "first_name": "Grace",
            "last_name": "Hopper", "job_title": null, "mobile_phone": "+41791234567",
            "business_phone": "+41441234567", "timezone": "Europe/Zurich"
        })
    );
    let (_, me) = get(&gw, &client, ME).await;
    assert_eq!(me["first_name"], "Grace");
    assert_eq!(me["timezone"], "Europe/Zurich");
    // An empty patch changes nothing.
    let (status, same) = patch(&gw, &client, &csrf, json!({})).await;
    assert_eq!((status, same), (200, body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_is_named_in_one_answer_and_nothing_changes() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    let (status, body) = patch(
        &gw,
        &client,
        &csrf,
        json!({
            "first_name": "Fine", "email": "nope", "timezone": "Nowhere/Land",
            "nickname": "x", "password_hash": "$argon2id$..."
        }),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let fields = body["fields"].as_object().unwrap();
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["email", "nickname", "password_hash", "timezone"]);
    assert_eq!(fields["nickname"], "unknown field");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("email: ") && message.contains("timezone: "),
        "{message}"
    );
    let (_, me) = get(&gw, &client, ME).await;
    assert_eq!(me["first_name"], "Ada", "a refused patch changes nothing");

    // Not an object, and no CSRF token.
    let (status, body) = patch(&gw, &client, &csrf, json!(["first_name"])).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_body"))
    );
    let resp = client
        .patch(gw.url(ME))
        .json(&json!({ "first_name": "X" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_is_unique_across_users_whatever_its_case() {
    let gw = TestGateway::start().await;
    let (org, _, client, csrf) = gw.admin_session().await;
    let other_org = gw.create_org("Other").await;
    gw.create_user(&other_org, "taken@other.test", false).await;
    gw.create_user(&org, "colleague@acme.test", false).await;
    for email in [
        "taken@other.test",
        "TAKEN@Other.Test",
        "Colleague@acme.test",
    ] {
        let (status, body) = patch(&gw, &client, &csrf, json!({ "email": email })).await;
        assert_eq!(status, 409, "{email}: {body}");
        assert_eq!(body["error"], "email_taken");
    }
    // Your own address in another case is yours.
    let (status, body) = patch(&gw, &client, &csrf, json!({ "email": "Admin@ACME.test" })).await;
    assert_eq!(
        (status, body["email"].as_str()),
        (200, Some("Admin@ACME.test"))
    );
    // The old address is free again once changed.
    let (status, _) = patch(&gw, &client, &csrf, json!({ "email": "ada@acme.test" })).await;
    assert_eq!(status, 200);
    let (status, _) = patch(&gw, &client, &csrf, json!({ "email": "ada@acme.test" })).await;
    assert_eq!(status, 200, "setting the same address again is no conflict");
    gw.create_user(&org, "admin@acme.test", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_email_reaches_the_upstream_at_once_and_signs_in() {
    let gw = TestGateway::start().await;
    let (_, _, client, csrf) = gw.admin_session().await;
    // Cached identity first: the change must not wait for the cache to expire.
    let echo = echoed(&gw, &client, "/api/x").await;
    assert_eq!(echo["headers"]["x-auth-user-email"], "admin@acme.test");
    let (status, _) = patch(&gw, &client, &csrf, json!({ "email": "ada@lovelace.test" })).await;
    assert_eq!(status, 200);
    let echo = echoed(&gw, &client, "/api/x").await;
    assert_eq!(echo["headers"]["x-auth-user-email"], "ada@lovelace.test");
    let fresh = gw.client();
    gw.login(&fresh, "ada@lovelace.test").await;
}

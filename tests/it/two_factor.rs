//! Two-factor authentication end to end: org policy, TOTP enrolment checked with an
//! independent TOTP implementation, backup codes, SMS through a webhook receiver, 2FA at login,
//! replay and guessing limits (also across replicas), disable and admin reset.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::join_all;
use ring::hmac;
use serde_json::{json, Value};
use xelon_gateway::clock::{Clock, ManualClock};

use crate::harness::{Options, TestGateway, PASSWORD};
use crate::redis_server::RedisServer;

// --- an independent TOTP (RFC 6238 over ring's HMAC-SHA1), not the crate the gateway uses ---

fn base32_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits: u64 = 0;
    let mut nbits = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c).expect("base32") as u64;
        bits = (bits << 5) | v;
        nbits += 5;
        if nbits >= 8 {
            nbits -= 8;
            out.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    out
}

pub(crate) fn totp_at(secret_b32: &str, unix: i64) -> String {
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        &base32_decode(secret_b32),
    );
    let counter = (unix / 30) as u64;
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let h = tag.as_ref();
    let offset = (h[19] & 0x0f) as usize;
    let bin = (u32::from(h[offset] & 0x7f) << 24)
        | (u32::from(h[offset + 1]) << 16)
        | (u32::from(h[offset + 2]) << 8)
        | u32::from(h[offset + 3]);
    format!("{:06}", bin % 1_000_000)
}

#[test]
fn the_test_totp_matches_rfc_6238() {
    // Appendix B, SHA-1 seed "12345678901234567890" (base32 below), truncated to 6 digits.
    let seed = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    assert_eq!(totp_at(seed, 59), "287082");
    assert_eq!(totp_at(seed, 1_111_111_109), "081804");
}

// --- an SMS webhook receiver ----------------------------------------------------------------

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<Value>>>);

impl Inbox {
    fn last_code(&self) -> String {
        let messages = self.0.lock().unwrap();
        let text = messages.last().expect("an SMS was sent")["message"]
            .as_str()
            .unwrap()
            .to_string();
        text.split_whitespace().next().unwrap().to_string()
    }

    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

fn sms_receiver() -> (String, Inbox) {
    let inbox = Inbox::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    let seen = inbox.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().route(
                "/sms",
                axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                    let seen = seen.clone();
                    async move {
                        seen.0.lock().unwrap().push(body);
                        "ok"
                    }
                }),
            );
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    (format!("http://{addr}/sms"), inbox)
}

// --- helpers ------------------------------------------------------------------------------

async fn post(
    client: &reqwest::Client,
    url: String,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = client.post(url).json(&body);
    if let Some(t) = csrf {
        req = req.header("X-CSRF-Token", t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

pub(crate) async fn set_policy(
    gw: &TestGateway,
    admin: &reqwest::Client,
    csrf: &str,
    org: &str,
    policy: &str,
) {
    let resp = admin
        .put(gw.url(&format!("/auth/api/v1/orgs/{org}/settings")))
        .header("X-CSRF-Token", csrf)
        .json(&json!({ "two_factor": policy }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["two_factor"], policy);
}

/// Password step of a login; returns (status, body).
async fn password_step(gw: &TestGateway, client: &reqwest::Client, email: &str) -> (u16, Value) {
    post(
        client,
        gw.url("/auth/login"),
        None,
        json!({ "email": email, "password": PASSWORD }),
    )
    .await
}

/// Enrols the logged-in client in TOTP; returns (secret, backup codes).
pub(crate) async fn enrol_totp(
    gw: &TestGateway,
    client: &reqwest::Client,
    csrf: &str,
) -> (String, Vec<String>) {
    let (status, setup) = post(
        client,
        gw.url("/auth/api/v1/me/2fa/totp"),
        Some(csrf),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap().to_string();
    let code = totp_at(&secret, gw.now());
    let (status, done) = post(
        client,
        gw.url("/auth/api/v1/me/2fa/totp/verify"),
        Some(csrf),
        json!({ "code": code }),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    let codes = done["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    (secret, codes)
}

/// An org with 2FA `optional`, an admin logged in, and a member logged in.
async fn org_with_policy(
    gw: &TestGateway,
    policy: &str,
) -> (String, reqwest::Client, String, reqwest::Client, String) {
    let (org, _, admin, admin_csrf) = gw.admin_session().await;
    set_policy(gw, &admin, &admin_csrf, &org.id, policy).await;
    gw.create_user(&org, "member@acme.test", false).await;
    let member = gw.client();
    let (status, login) = password_step(gw, &member, "member@acme.test").await;
    assert_eq!(status, 200);
    let csrf = login["csrf_token"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default();
    (org.id, admin, admin_csrf, member, csrf)
}

fn jwt_amr(gw: &TestGateway, echo: &Value) -> Vec<String> {
    let jwt = echo["headers"]["x-auth-jwt"].as_str().unwrap();
    gw.handles.signer.verify(jwt).unwrap().amr
}

// --- tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factor_is_not_available_when_the_org_has_it_off() {
    let gw = TestGateway::start().await;
    let (_, _, admin, csrf) = gw.admin_session().await;
    let status: Value = admin
        .get(gw.url("/auth/api/v1/me/2fa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["available"], false);
    assert!(status["method"].is_null());
    for (path, body) in [
        ("/auth/api/v1/me/2fa/totp", json!({})),
        (
            "/auth/api/v1/me/2fa/totp/verify",
            json!({ "code": "123456" }),
        ),
        (
            "/auth/api/v1/me/2fa/sms",
            json!({ "phone": "+41441234567" }),
        ),
    ] {
        let (s, body) = post(&admin, gw.url(path), Some(&csrf), body).await;
        assert_eq!(
            (s, body["error"].as_str().unwrap()),
            (403, "two_factor_not_available"),
            "{path}"
        );
    }
    // Other policy values are refused.
    let (org, _, admin2, csrf2) = {
        let org = gw.create_org("Other").await;
        let u = gw.create_user(&org, "boss@other.test", true).await;
        let c = gw.client();
        let l = gw.login(&c, "boss@other.test").await;
        (org, u, c, l["csrf_token"].as_str().unwrap().to_string())
    };
    for bad in [json!("sometimes"), json!(true), json!(null), json!("OFF")] {
        let resp = admin2
            .put(gw.url(&format!("/auth/api/v1/orgs/{}/settings", org.id)))
            .header("X-CSRF-Token", &csrf2)
            .json(&json!({ "two_factor": bad }))
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        let b: Value = resp.json().await.unwrap();
        assert_eq!(s, 400, "{bad}");
        assert!(matches!(
            b["error"].as_str().unwrap(),
            "invalid_two_factor" | "invalid_body"
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_then_login_needs_a_fresh_code_once() {
    let gw = TestGateway::start().await;
    let (_, _, _, member, csrf) = org_with_policy(&gw, "optional").await;

    let (s, setup) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/totp"),
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(s, 200);
    let secret = setup["secret"].as_str().unwrap().to_string();
    let uri = setup["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Xelon%20HQ:member%40acme.test?"),
        "{uri}"
    );
    assert!(uri.contains(&format!("secret={secret}")));
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD
        .decode(setup["qr_png_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    // Not active until verified.
    let status: Value = member
        .get(gw.url("/auth/api/v1/me/2fa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["available"], true);
    assert!(status["method"].is_null());
    let wrong = if totp_at(&secret, gw.now()) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/totp/verify"),
        Some(&csrf),
        json!({ "code": wrong }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (400, "invalid_code"));

    let code = totp_at(&secret, gw.now());
    let (s, done) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/totp/verify"),
        Some(&csrf),
        json!({ "code": code }),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let codes = done["backup_codes"].as_array().unwrap();
    assert_eq!(codes.len(), 10);
    assert!(codes.iter().all(|c| c.as_str().unwrap().len() >= 10));
    let status: Value = member
        .get(gw.url("/auth/api/v1/me/2fa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["method"], "totp");
    assert_eq!(status["backup_codes_remaining"], 10);
    assert!(
        !status.to_string().contains(&secret),
        "the secret is never shown again"
    );

    // The next login stops after the password: no session, a challenge.
    let phone = gw.client();
    let (s, step) = password_step(&gw, &phone, "member@acme.test").await;
    assert_eq!(s, 200);
    assert_eq!(step["status"], "2fa_required");
    assert_eq!(step["method"], "totp");
    assert_eq!(
        phone.get(gw.url("/api/x")).send().await.unwrap().status(),
        401
    );
    let challenge = step["challenge"].as_str().unwrap().to_string();
    // The code used for the enrolment is spent: replaying it fails.
    let (s, b) = post(
        &phone,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": challenge, "code": code }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (400, "invalid_code"));
    gw.clock.advance(30);
    let fresh = totp_at(&secret, gw.now());
    let (s, b) = post(
        &phone,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": challenge, "code": fresh }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["status"], "ok");
    let echo: Value = phone
        .get(gw.url("/api/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwt_amr(&gw, &echo), vec!["pwd", "otp"]);
    // The challenge is used up, and the same code fails on a new login too.
    let (s, _) = post(
        &phone,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": challenge, "code": fresh }),
    )
    .await;
    assert_eq!(s, 400);
    let other = gw.client();
    let (_, step) = password_step(&gw, &other, "member@acme.test").await;
    let (s, b) = post(
        &other,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "code": fresh }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (400, "invalid_code"),
        "replayed TOTP code"
    );
    assert!(gw
        .metrics()
        .await
        .contains("xgw_2fa_events_total{event=\"enrolled\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_codes_work_once_each_and_can_be_regenerated() {
    let gw = TestGateway::start().await;
    let (org, admin, _, member, csrf) = org_with_policy(&gw, "optional").await;
    let (secret, codes) = enrol_totp(&gw, &member, &csrf).await;

    let c1 = gw.client();
    let (_, step) = password_step(&gw, &c1, "member@acme.test").await;
    let (s, _) = post(&c1, gw.url("/auth/login/2fa"), None, json!({ "challenge": step["challenge"], "backup_code": codes[0].to_lowercase().replace('-', " ") })).await;
    assert_eq!(s, 200, "typed in lower case with spaces");
    let echo: Value = c1
        .get(gw.url("/api/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwt_amr(&gw, &echo), vec!["pwd", "backup"]);
    let c2 = gw.client();
    let (_, step) = password_step(&gw, &c2, "member@acme.test").await;
    let (s, b) = post(
        &c2,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "backup_code": codes[0] }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (400, "invalid_code"),
        "used once"
    );

    // The use, and the failed reuse, are in the audit log.
    let audit: Value = admin
        .get(gw.url(&format!("/auth/api/v1/orgs/{org}/audit")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let types: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    for t in [
        "two_factor_enabled",
        "backup_code_used",
        "two_factor_failed",
    ] {
        assert!(types.contains(&t), "{t} missing from {types:?}");
    }

    // Two parallel logins with one code: exactly one gets in.
    let mut challenges = Vec::new();
    for _ in 0..2 {
        let c = gw.client();
        let (_, step) = password_step(&gw, &c, "member@acme.test").await;
        challenges.push((c, step["challenge"].as_str().unwrap().to_string()));
    }
    let attempts = challenges.iter().map(|(c, ch)| {
        post(
            c,
            gw.url("/auth/login/2fa"),
            None,
            json!({ "challenge": ch, "backup_code": codes[1] }),
        )
    });
    let results = join_all(attempts).await;
    assert_eq!(
        results.iter().filter(|(s, _)| *s == 200).count(),
        1,
        "{results:?}"
    );

    // Replacing the active method needs proof of it.
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/totp"),
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (403, "current_code_required")
    );
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/sms"),
        Some(&csrf),
        json!({ "phone": "+41791234567", "backup_code": "XXXX-XXXX-XXXX" }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (403, "invalid_code"));
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/totp"),
        Some(&csrf),
        json!({ "backup_code": codes[3] }),
    )
    .await;
    assert_eq!(s, 200, "{b}");

    // Regenerating needs a current code and invalidates the old set.
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/backup-codes"),
        Some(&csrf),
        json!({ "code": "000000" }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (403, "invalid_code"));
    gw.clock.advance(30);
    let (s, fresh) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/backup-codes"),
        Some(&csrf),
        json!({ "code": totp_at(&secret, gw.now()) }),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(fresh["backup_codes"].as_array().unwrap().len(), 10);
    let c3 = gw.client();
    let (_, step) = password_step(&gw, &c3, "member@acme.test").await;
    let (s, _) = post(
        &c3,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "backup_code": codes[2] }),
    )
    .await;
    assert_eq!(s, 400, "the old set is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_dies_after_five_wrong_codes_or_five_minutes() {
    let gw = TestGateway::start().await;
    let (_, _, _, member, csrf) = org_with_policy(&gw, "optional").await;
    let (secret, _) = enrol_totp(&gw, &member, &csrf).await;
    gw.clock.advance(30);

    let c = gw.client();
    let (_, step) = password_step(&gw, &c, "member@acme.test").await;
    let challenge = step["challenge"].as_str().unwrap().to_string();
    let right = totp_at(&secret, gw.now());
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let (s, b) = post(
            &c,
            gw.url("/auth/login/2fa"),
            None,
            json!({ "challenge": challenge, "code": wrong }),
        )
        .await;
        assert_eq!((s, b["error"].as_str().unwrap()), (400, "invalid_code"));
    }
    let (s, b) = post(
        &c,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": challenge, "code": right }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (400, "invalid_challenge"),
        "dead after 5"
    );
    // The wrong codes counted toward the account's limit: the next password step backs off.
    let (s, b) = password_step(&gw, &gw.client(), "member@acme.test").await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (429, "too_many_attempts")
    );

    gw.clock.advance(901);
    let (_, step) = password_step(&gw, &c, "member@acme.test").await;
    gw.clock.advance(301);
    let (s, b) = post(
        &c,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "code": totp_at(&secret, gw.now()) }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (400, "invalid_challenge"),
        "expired"
    );
    for garbage in ["", "xgs_short", "not a challenge"] {
        let (s, b) = post(
            &c,
            gw.url("/auth/login/2fa"),
            None,
            json!({ "challenge": garbage, "code": "123456" }),
        )
        .await;
        assert_eq!(
            (s, b["error"].as_str().unwrap()),
            (400, "invalid_challenge")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_policy_forces_enrolment_before_any_session() {
    let gw = TestGateway::start().await;
    let (_, _, _, _, _) = org_with_policy(&gw, "required").await;
    let c = gw.client();
    let (s, step) = password_step(&gw, &c, "member@acme.test").await;
    assert_eq!(s, 200);
    assert_eq!(step["status"], "2fa_enrollment_required");
    assert_eq!(
        c.get(gw.url("/api/x")).send().await.unwrap().status(),
        401,
        "no session yet"
    );
    let challenge = step["challenge"].as_str().unwrap().to_string();
    let (s, setup) = post(
        &c,
        gw.url("/auth/login/2fa/enroll/totp"),
        None,
        json!({ "challenge": challenge }),
    )
    .await;
    assert_eq!(s, 200, "{setup}");
    let secret = setup["secret"].as_str().unwrap();
    let (s, done) = post(
        &c,
        gw.url("/auth/login/2fa/enroll/verify"),
        None,
        json!({ "challenge": challenge, "code": totp_at(secret, gw.now()) }),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["status"], "ok");
    assert_eq!(done["backup_codes"].as_array().unwrap().len(), 10);
    let echo: Value = c
        .get(gw.url("/api/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwt_amr(&gw, &echo), vec!["pwd", "otp"]);
    // With 2FA required, disabling is refused; only replacing the method is possible.
    let csrf = done["csrf_token"].as_str().unwrap();
    let (s, b) = post(
        &c,
        gw.url("/auth/api/v1/me/2fa/disable"),
        Some(csrf),
        json!({ "backup_code": done["backup_codes"][0] }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (409, "two_factor_required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_needs_a_code_and_admin_reset_ends_the_members_sessions() {
    let gw = TestGateway::start().await;
    let (org, admin, admin_csrf, member, csrf) = org_with_policy(&gw, "optional").await;
    let (_, codes) = enrol_totp(&gw, &member, &csrf).await;
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/disable"),
        Some(&csrf),
        json!({ "code": "000000" }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (403, "invalid_code"));
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/disable"),
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap()),
        (400, "invalid_body"),
        "{b}"
    );
    let resp = member
        .post(gw.url("/auth/api/v1/me/2fa/disable"))
        .header("X-CSRF-Token", &csrf)
        .json(&json!({ "backup_code": codes[0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let (s, b) = password_step(&gw, &gw.client(), "member@acme.test").await;
    assert_eq!(
        (s, b["status"].as_str().unwrap()),
        (200, "ok"),
        "no second step any more"
    );

    // Enrol again, then the admin resets: the member's sessions end.
    // (A new code: the step used by the first enrolment stays spent.)
    gw.clock.advance(30);
    let (_, _) = enrol_totp(&gw, &member, &csrf).await;
    let me: Value = member
        .get(gw.url("/auth/api/v1/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let member_id = me["id"].as_str().unwrap();
    let resp = admin
        .post(gw.url(&format!(
            "/auth/api/v1/orgs/{org}/users/{member_id}/2fa/reset"
        )))
        .header("X-CSRF-Token", &admin_csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert_eq!(
        member.get(gw.url("/api/x")).send().await.unwrap().status(),
        401
    );
    let (s, b) = password_step(&gw, &gw.client(), "member@acme.test").await;
    assert_eq!((s, b["status"].as_str().unwrap()), (200, "ok"));
    // Members cannot reset anyone.
    let resp = member
        .post(gw.url(&format!(
            "/auth/api/v1/orgs/{org}/users/{member_id}/2fa/reset"
        )))
        .header("X-CSRF-Token", &csrf)
        .send()
        .await
        .unwrap();
    assert!(matches!(resp.status().as_u16(), 401 | 403));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_enrolment_and_login_through_the_webhook_with_send_limits() {
    let (url, inbox) = sms_receiver();
    let gw = TestGateway::start_with(Options {
        sms_webhook: Some(url),
        ..Options::default()
    })
    .await;
    let (_, _, _, member, csrf) = org_with_policy(&gw, "optional").await;
    let (s, b) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/sms"),
        Some(&csrf),
        json!({ "phone": "0791234567" }),
    )
    .await;
    assert_eq!((s, b["error"].as_str().unwrap()), (400, "invalid_phone"));
    let (s, _) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/sms"),
        Some(&csrf),
        json!({ "phone": "+41791234567" }),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(inbox.count(), 1);
    assert_eq!(inbox.0.lock().unwrap()[0]["to"], "+41791234567");
    let code = inbox.last_code();
    assert_eq!(code.len(), 6);
    let (s, done) = post(
        &member,
        gw.url("/auth/api/v1/me/2fa/sms/verify"),
        Some(&csrf),
        json!({ "code": code }),
    )
    .await;
    assert_eq!(s, 200, "{done}");
    let status: Value = member
        .get(gw.url("/auth/api/v1/me/2fa"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["method"], "sms");
    assert_eq!(status["phone"], "+41*******67");

    // Login: the code is sent after the password.
    let c = gw.client();
    let (_, step) = password_step(&gw, &c, "member@acme.test").await;
    assert_eq!(step["method"], "sms");
    assert_eq!(inbox.count(), 2);
    let code = inbox.last_code();
    let (s, b) = post(
        &c,
        gw.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "code": code }),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let echo: Value = c
        .get(gw.url("/api/x"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwt_amr(&gw, &echo), vec!["pwd", "sms"]);

    // Three sends per 15 minutes per user: the resend is the third, then 429.
    let c2 = gw.client();
    let (_, step) = password_step(&gw, &c2, "member@acme.test").await;
    let (s, b) = post(
        &c2,
        gw.url("/auth/login/2fa/resend"),
        None,
        json!({ "challenge": step["challenge"] }),
    )
    .await;
    assert_eq!(
        (s, b["error"].as_str().unwrap_or("")),
        (429, "too_many_attempts"),
        "{b}"
    );
    gw.clock.advance(901);
    let (s, _) = post(
        &c2,
        gw.url("/auth/login/2fa/resend"),
        None,
        json!({ "challenge": step["challenge"] }),
    )
    .await;
    assert_eq!(s, 400, "the challenge expired meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_code_is_refused_when_replayed_on_another_replica() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, hex::encode([42u8; 32])).unwrap();
    let clock: Arc<ManualClock> = ManualClock::new();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(
            TestGateway::start_with(Options {
                store_url: Some(redis.url.clone()),
                clock: Some(clock.clone()),
                secrets_key: Some(key.clone()),
                ..Options::default()
            })
            .await,
        );
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let (_, _, _, member, csrf) = org_with_policy(a, "optional").await;
    let (secret, _) = enrol_totp(a, &member, &csrf).await;
    clock.advance(30);
    let code = totp_at(&secret, clock.now());
    let ca = a.client();
    let (_, step) = password_step(a, &ca, "member@acme.test").await;
    let (s, _) = post(
        &ca,
        a.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "code": code }),
    )
    .await;
    assert_eq!(s, 200);
    let cb = b.client();
    let (_, step) = password_step(b, &cb, "member@acme.test").await;
    assert_eq!(
        step["status"], "2fa_required",
        "the seed opened on the other replica too"
    );
    let (s, body) = post(
        &cb,
        b.url("/auth/login/2fa"),
        None,
        json!({ "challenge": step["challenge"], "code": code }),
    )
    .await;
    assert_eq!((s, body["error"].as_str().unwrap()), (400, "invalid_code"));
}

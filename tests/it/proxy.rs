//! The hot path: who gets through, what the upstream sees.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;
use xelon_gateway::auth::jwt::Claims;

use crate::harness::{echoed, TestGateway};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_headers_reach_the_upstream_and_spoofed_ones_do_not() {
    let gw = TestGateway::start().await;
    let org = gw.create_org("Acme").await;
    let user = gw.create_user(&org, "admin@acme.test", true).await;
    let (client, jar) = gw.client_with_jar();
    gw.login(&client, "admin@acme.test").await;
    jar.add_cookie_str("theme=dark", &gw.url("/").parse().unwrap());
    let resp = client
        .get(gw.url("/api/projects?x=1"))
        .header("X-Auth-User-Id", "usr_attacker")
        .header("X-Auth-Org-Id", "org_attacker")
        .header("X-Auth-Jwt", "forged")
        .header("X-Auth-Something-New", "forged")
        .header("X-User-Id", "forged")
        .header("X-Forwarded-For", "6.6.6.6")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["uri"], "/api/projects?x=1");
    assert_eq!(h["x-auth-user-id"], user.id.as_str());
    assert_eq!(h["x-auth-org-id"], org.id.as_str());
    assert_eq!(h["x-auth-user-email"], "admin@acme.test");
    assert_eq!(h["x-auth-method"], "session");
    assert!(h["x-auth-session-id"].as_str().unwrap().starts_with("ses_"));
    assert!(h.get("x-auth-something-new").is_none());
    assert!(h.get("x-user-id").is_none());
    assert_ne!(h["x-auth-jwt"], "forged");
    // The client's own XFF is not believed from an untrusted peer.
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-auth-client-ip"], "127.0.0.1");
    // Other cookies pass; the session secret never reaches the upstream.
    let cookie = h["cookie"].as_str().unwrap_or("");
    assert!(cookie.contains("theme=dark"), "{cookie}");
    assert!(!cookie.contains("xgw_session"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identity_headers_off_the_platform_gets_only_the_jwt() {
    let gw = TestGateway::start_with(crate::harness::Options {
        tweak: |c| c.upstream.identity_headers = false,
        ..Default::default()
    })
    .await;
    let org = gw.create_org("Acme").await;
    let user = gw.create_user(&org, "admin@acme.test", true).await;
    let client = gw.client();
    gw.login(&client, "admin@acme.test").await;
    let resp = client
        .get(gw.url("/api/projects"))
        .header("X-Auth-User-Id", "usr_attacker")
        .header("X-Auth-Method", "session")
        .send()
        .await
        .unwrap();
    let echo: Value = resp.json().await.unwrap();
    let h = &echo["headers"];
    for name in [
        "x-auth-user-id",
        "x-auth-method",
        "x-auth-user-email",
        "x-auth-org-id",
        "x-auth-session-id",
    ] {
        // Neither ours nor the client's forgery.
        assert!(h.get(name).is_none(), "{name}: {h}");
    }
    assert_eq!(h["x-auth-client-ip"], "127.0.0.1");
    let jwt = h["x-auth-jwt"].as_str().unwrap();
    let payload = jwt.split('.').nth(1).unwrap();
    use base64::Engine;
    let claims: Claims = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.org, org.id);
    // The account app still reads its identity headers.
    let (status, me) = crate::harness::get(&gw, &client, "/auth/api/v1/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["id"], user.id.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_jwt_verifies_against_the_published_jwks() {
    let gw = TestGateway::start().await;
    let (org, user, client, _) = gw.admin_session().await;
    let echo = echoed(&gw, &client, "/api/a").await;
    let jwt = echo["headers"]["x-auth-jwt"].as_str().unwrap().to_string();

    let jwks: Value = client
        .get(gw.url("/auth/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header = jsonwebtoken::decode_header(&jwt).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"].as_str() == header.kid.as_deref())
        .expect("the JWT's kid is in the JWKS");
    let decoding = DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap();
    let mut v = Validation::new(Algorithm::EdDSA);
    v.validate_aud = false;
    v.set_issuer(&["xelon-gateway"]);
    let claims = jsonwebtoken::decode::<Claims>(&jwt, &decoding, &v)
        .unwrap()
        .claims;
    assert_eq!(claims.sub, user.id);
    assert_eq!(claims.org, org.id);
    assert_eq!(claims.amr, vec!["pwd"]);
    assert!(claims.exp - claims.iat <= 300);

    // Cached per session: the next request carries the same token, not a fresh signature.
    let again = echoed(&gw, &client, "/api/b").await;
    assert_eq!(again["headers"]["x-auth-jwt"].as_str().unwrap(), jwt);
    // Close to expiry it is re-minted.
    gw.clock.advance(250);
    let later = echoed(&gw, &client, "/api/c").await;
    assert_ne!(later["headers"]["x-auth-jwt"].as_str().unwrap(), jwt);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_are_redirected_to_login_and_api_clients_get_401() {
    let gw = TestGateway::start().await;
    let client = gw.client();
    let resp = client
        .get(gw.url("/projects/7?tab=a&b=c"))
        .header("Accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers()["location"],
        "/auth/login?next=/projects/7%3Ftab%3Da%26b%3Dc"
    );
    assert_eq!(resp.headers()["content-length"], "0");

    for req in [
        client.get(gw.url("/api/x")),
        client
            .post(gw.url("/projects"))
            .header("Accept", "text/html"),
    ] {
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "authentication_required");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_paths_pass_without_a_credential_and_without_identity() {
    let gw = TestGateway::start().await;
    let client = gw.client();
    let echo = echoed(&gw, &client, "/public/status").await;
    assert!(echo["headers"].get("x-auth-user-id").is_none());
    let resp = client.get(gw.url("/publicity")).send().await.unwrap();
    assert_eq!(resp.status(), 401, "a prefix match is per path segment");
    // Paths an upstream could normalize out of the public prefix need a credential.
    for sneaky in [
        "/public/%2e%2e/api/x",
        "/public/%2E%2E%2Fapi",
        "/public//api",
    ] {
        let resp = client.get(gw.url(sneaky)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{sneaky}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_costs_no_store_round_trip() {
    let gw = TestGateway::start().await;
    let (_, _, client, _) = gw.admin_session().await;
    echoed(&gw, &client, "/api/warm").await;
    let before = gw.metrics().await;
    for _ in 0..20 {
        echoed(&gw, &client, "/api/hot").await;
    }
    let after = gw.metrics().await;
    let lookups = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("xgw_store_operation_seconds_count{op=\"session_by_token\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.parse::<u64>().unwrap())
            .unwrap_or(0)
    };
    assert_eq!(lookups(&before), lookups(&after));
    assert!(after.contains("xgw_cache_lookups_total{result=\"hit\"}"));
}

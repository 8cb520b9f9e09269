//! The two-factor part of the store contract, on both backends: second factors with their
//! backup codes, TOTP replay protection, and single-use tickets with attempt limits.

use std::sync::Arc;

use futures_util::future::join_all;
use xelon_gateway::metrics::Metrics;
use xelon_gateway::store::{
    self, Organization, SharedStore, Ticket, TwoFactor, TwoFactorMethod, TwoFactorPolicy,
};

use crate::redis_server::RedisServer;

const OPS: [&str; 13] = [
    "set_two_factor_policy",
    "get_two_factor",
    "enable_two_factor",
    "disable_two_factor",
    "replace_backup_codes",
    "consume_backup_code",
    "backup_codes_remaining",
    "accept_totp_step",
    "put_ticket",
    "get_ticket",
    "fail_ticket",
    "take_ticket",
    "purge_tickets",
];

fn method(user: &str, m: TwoFactorMethod) -> TwoFactor {
    TwoFactor {
        user_id: user.to_string(),
        method: m,
        totp_secret: (m == TwoFactorMethod::Totp).then(|| "v1.c2VhbGVk\"quoted\"".to_string()),
        phone: (m == TwoFactorMethod::Sms).then(|| "+41441234567".to_string()),
        enabled_at: 1_700_000_000,
    }
}

fn hashes(prefix: &str) -> Vec<String> {
    (0..10).map(|i| format!("{prefix}-{i}")).collect()
}

async fn suite(store: SharedStore, metrics: Arc<Metrics>) {
    // The organization policy.
    let org = Organization {
        id: "org-2fa".into(),
        name: "Acme \"2FA\" ✓".into(),
        session_duration_days: 14,
        created_at: 1_700_000_000,
        two_factor: TwoFactorPolicy::Off,
    };
    store.create_org(&org).await.unwrap();
    for policy in [
        TwoFactorPolicy::Required,
        TwoFactorPolicy::Optional,
        TwoFactorPolicy::Off,
    ] {
        let updated = store
            .set_two_factor_policy("org-2fa", policy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            updated,
            Organization {
                two_factor: policy,
                ..org.clone()
            }
        );
        assert_eq!(store.get_org("org-2fa").await.unwrap(), Some(updated));
    }
    assert_eq!(
        store
            .set_two_factor_policy("org-missing", TwoFactorPolicy::Required)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.get_org("org-missing").await.unwrap(), None);

    // Second factors and backup codes.
    assert_eq!(store.get_two_factor("u1").await.unwrap(), None);
    assert_eq!(store.backup_codes_remaining("u1").await.unwrap(), 0);
    let totp = method("u1", TwoFactorMethod::Totp);
    store.enable_two_factor(&totp, &hashes("a")).await.unwrap();
    assert_eq!(
        store.get_two_factor("u1").await.unwrap(),
        Some(totp.clone())
    );
    assert_eq!(store.backup_codes_remaining("u1").await.unwrap(), 10);
    assert!(store.consume_backup_code("u1", "a-3").await.unwrap());
    assert!(
        !store.consume_backup_code("u1", "a-3").await.unwrap(),
        "single use"
    );
    assert!(
        !store.consume_backup_code("u2", "a-4").await.unwrap(),
        "per user"
    );
    assert!(!store.consume_backup_code("u1", "nope").await.unwrap());
    assert_eq!(store.backup_codes_remaining("u1").await.unwrap(), 9);

    // Regenerating invalidates the old set at once.
    store
        .replace_backup_codes("u1", &hashes("b"))
        .await
        .unwrap();
    assert!(!store.consume_backup_code("u1", "a-4").await.unwrap());
    assert_eq!(store.backup_codes_remaining("u1").await.unwrap(), 10);
    assert_eq!(
        store.get_two_factor("u1").await.unwrap(),
        Some(totp.clone())
    );

    // Two parallel uses of one code: exactly one wins.
    let tasks = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.consume_backup_code("u1", "b-0").await.unwrap() })
    });
    let wins = join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(wins, 1);

    // Enrolling another method replaces method and codes in one step.
    let sms = method("u1", TwoFactorMethod::Sms);
    store.enable_two_factor(&sms, &hashes("c")).await.unwrap();
    assert_eq!(store.get_two_factor("u1").await.unwrap(), Some(sms));
    assert!(!store.consume_backup_code("u1", "b-1").await.unwrap());
    assert!(store.consume_backup_code("u1", "c-1").await.unwrap());

    assert!(store.disable_two_factor("u1").await.unwrap());
    assert!(!store.disable_two_factor("u1").await.unwrap());
    assert_eq!(store.get_two_factor("u1").await.unwrap(), None);
    assert_eq!(store.backup_codes_remaining("u1").await.unwrap(), 0);

    // TOTP steps: each accepted once, never an older one.
    assert!(store.accept_totp_step("u1", 100).await.unwrap());
    assert!(!store.accept_totp_step("u1", 100).await.unwrap(), "replay");
    assert!(!store.accept_totp_step("u1", 99).await.unwrap(), "older");
    assert!(store.accept_totp_step("u1", 101).await.unwrap());
    assert!(store.accept_totp_step("u2", 50).await.unwrap(), "per user");
    let tasks = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.accept_totp_step("u3", 7).await.unwrap() })
    });
    let accepted = join_all(tasks)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(accepted, 1, "a code raced on two replicas is accepted once");

    // Tickets.
    let now = 1_000;
    let t = Ticket {
        data: r#"{"user_id":"u1","note":"quotes \" and ✓"}"#.to_string(),
        expires_at: now + 300,
        attempts: 0,
    };
    store.put_ticket("k1", &t, now).await.unwrap();
    assert_eq!(store.get_ticket("k1", now).await.unwrap(), Some(t.clone()));
    assert_eq!(
        store.get_ticket("k1", now + 300).await.unwrap(),
        None,
        "expired"
    );
    assert_eq!(store.get_ticket("missing", now).await.unwrap(), None);
    assert_eq!(store.fail_ticket("k1", now, 3).await.unwrap(), Some(1));
    assert_eq!(store.fail_ticket("k1", now, 3).await.unwrap(), Some(2));
    assert_eq!(
        store.get_ticket("k1", now).await.unwrap().unwrap().attempts,
        2
    );
    assert_eq!(
        store.get_ticket("k1", now).await.unwrap().unwrap().data,
        t.data
    );
    assert_eq!(store.fail_ticket("k1", now, 3).await.unwrap(), Some(3));
    assert_eq!(
        store.get_ticket("k1", now).await.unwrap(),
        None,
        "destroyed at the limit"
    );
    assert_eq!(store.fail_ticket("k1", now, 3).await.unwrap(), None);
    assert_eq!(store.fail_ticket("missing", now, 3).await.unwrap(), None);

    store.put_ticket("k2", &t, now).await.unwrap();
    assert_eq!(
        store.fail_ticket("k2", now + 301, 3).await.unwrap(),
        None,
        "expired"
    );
    store.put_ticket("k3", &t, now).await.unwrap();
    assert_eq!(
        store.take_ticket("k3", now + 301).await.unwrap(),
        None,
        "expired"
    );
    store.put_ticket("k3", &t, now).await.unwrap();
    let tasks = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.take_ticket("k3", now).await.unwrap() })
    });
    let taken: Vec<Ticket> = join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.unwrap())
        .collect();
    assert_eq!(taken, vec![t.clone()], "taken exactly once");

    // Purging leaves live tickets alone.
    store
        .put_ticket(
            "old",
            &Ticket {
                expires_at: now + 10,
                ..t.clone()
            },
            now,
        )
        .await
        .unwrap();
    store.put_ticket("live", &t, now).await.unwrap();
    store.purge_tickets(now + 100).await.unwrap();
    assert_eq!(
        store.get_ticket("live", now + 100).await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(store.get_ticket("old", now + 100).await.unwrap(), None);

    crate::store_conformance::assert_ops_observed(&metrics, &OPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factor_store_contract_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let url = format!("embedded:{}", dir.path().join("s.redb").display());
    suite(store::open(&url, metrics.clone()).unwrap(), metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_factor_store_contract_redis() {
    let redis = RedisServer::start();
    let metrics = Arc::new(Metrics::new());
    suite(store::open(&redis.url, metrics.clone()).unwrap(), metrics).await;
}

//! One suite, every backend: the embedded store defines the semantics and the Redis store must
//! behave the same (design §4: a behaviour only one backend has is a bug). Times are passed
//! explicitly from a manual clock, so windows and expiries are exercised without sleeping.
//! The Redis-only tests at the end cover what the embedded store has no equivalent for: the
//! key layout other tools rely on, the invalidation feed and surviving a Redis outage.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::sync::watch;
use xelon_gateway::clock::{Clock, ManualClock};
use xelon_gateway::metrics::Metrics;
use xelon_gateway::store::{
    self, modify_user, EndReason, FailureCount, Invalidation, InvalidationEvent, Membership,
    Organization, Permission, Role, ServiceToken, Session, SharedStore, StoreError, User,
    SECONDS_PER_DAY,
};

use crate::redis_server::RedisServer;

/// Every op label both backends must report to `xgw_store_operation_seconds`.
const OPS: [&str; 32] = [
    "create_org",
    "get_org",
    "list_org_ids",
    "update_user",
    "set_session_duration",
    "create_user",
    "get_user",
    "find_user_by_email",
    "create_session",
    "session_by_token",
    "get_session",
    "end_session",
    "touch_session",
    "list_org_sessions",
    "purge_sessions",
    "create_token",
    "token_by_hash",
    "get_token",
    "list_user_tokens",
    "delete_token",
    "touch_token",
    "record_failure",
    "failures",
    "clear_failures",
    "ping",
    "list_org_members",
    "put_avatar",
    "get_avatar",
    "delete_avatar",
    "append_audit",
    "list_audit",
    "purge_audit",
];

// --- records -----------------------------------------------------------------------------------

fn org(id: &str, days: u32, t: i64) -> Organization {
    Organization {
        id: id.to_string(),
        name: format!("Organization {id}"),
        session_duration_days: days,
        created_at: t,
        two_factor: Default::default(),
    }
}

fn user(id: &str, email: &str, org_id: &str, t: i64) -> User {
    User {
        id: id.to_string(),
        email: email.to_string(),
        first_name: "Zoë".to_string(),
        last_name: "O'Brien".to_string(),
        job_title: Some("Ops / \"SRE\"".to_string()),
        mobile_phone: None,
        business_phone: Some("+41 44 000 00 00".to_string()),
        timezone: Some("Europe/Zurich".to_string()),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string()),
        memberships: vec![Membership {
            org_id: org_id.to_string(),
            role: Role::Admin,
            permissions: vec![Permission::AllowManageServiceTokens],
        }],
        created_at: t,
        updated_at: t,
        version: 0,
    }
}

/// A session whose strings exercise JSON escaping (the Redis backend re-encodes sessions in
/// Lua, so a lossy round trip would show up as a field that changed).
fn session(id: &str, org_id: &str, user_id: &str, created_at: i64) -> Session {
    Session {
        id: id.to_string(),
        token_hash: format!("hash-{id}"),
        user_id: user_id.to_string(),
        org_id: org_id.to_string(),
        ip: "192.0.2.1".to_string(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Grüße \"quoted\" back\\slash ✓".to_string(),
        created_at,
        last_activity_at: created_at,
        csrf_token: format!("csrf-{id}"),
        ended_at: None,
        ended_reason: None,
        second_factor: None,
        federated: None,
    }
}

fn by_id(mut sessions: Vec<Session>) -> Vec<Session> {
    sessions.sort_by(|a, b| a.id.cmp(&b.id));
    sessions
}

/// A service token, never used yet; its name exercises JSON escaping (the Redis backend
/// re-encodes tokens in Lua when touching them).
fn token(id: &str, user_id: &str, org_id: &str, ip: Option<&str>, t: i64) -> ServiceToken {
    ServiceToken {
        id: id.to_string(),
        token_hash: format!("hash-{id}"),
        name: format!("CI \"{id}\" Grüße back\\slash ✓ / deploy"),
        user_id: user_id.to_string(),
        org_id: org_id.to_string(),
        ip: ip.map(str::to_string),
        client_id: format!("client-{id}"),
        created_at: t,
        last_used_at: None,
        last_used_ip: None,
    }
}

fn tokens_by_id(mut tokens: Vec<ServiceToken>) -> Vec<ServiceToken> {
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

// --- the suite ---------------------------------------------------------------------------------

/// Runs every contract against a fresh, empty store.
pub async fn run_suite(store: SharedStore, clock: Arc<ManualClock>) {
    let t0 = clock.now();
    store.ping().await.expect("ping");
    store
        .publish(&Invalidation::Org("org-a".to_string()))
        .await
        .expect("publish");
    directory(&store, t0).await;
    sessions_and_purge(&store, t0).await;
    tokens(&store, t0).await;
    rate_limits(&store, &clock).await;
    concurrent_failures(&store, clock.now()).await;
    concurrent_user_creation(&store, clock.now()).await;
    user_updates(&store, clock.now()).await;
    crate::store_conformance_account::org_members(&store, clock.now()).await;
    crate::store_conformance_account::avatars(&store, clock.now()).await;
    crate::store_conformance_account::audit(&store, clock.now()).await;
}

/// `update_user` is a compare-and-set on `version`; `modify_user` retries it.
async fn user_updates(store: &SharedStore, t: i64) {
    let u = user("upd-1", "Upd.One@example.com", "org-a", t);
    store.create_user(&u).await.expect("create");
    let other = user("upd-2", "upd.two@example.com", "org-a", t);
    store.create_user(&other).await.expect("create");

    // A change based on the current version is stored, with the version bumped.
    let mut changed = u.clone();
    changed.first_name = "Changed".into();
    changed.email = "new.one@example.com".into();
    assert!(store.update_user(&changed).await.expect("update"));
    let stored = store.get_user("upd-1").await.expect("get").expect("exists");
    assert_eq!(stored.first_name, "Changed");
    assert_eq!(stored.version, 1);
    // The email index moved: the new address finds the user, the old one nobody.
    assert_eq!(
        store
            .find_user_by_email("NEW.ONE@example.com")
            .await
            .expect("find")
            .map(|u| u.id),
        Some("upd-1".to_string())
    );
    assert_eq!(
        store
            .find_user_by_email("upd.one@example.com")
            .await
            .expect("find"),
        None
    );
    // A change based on a stale copy is refused and changes nothing.
    assert!(!store.update_user(&changed).await.expect("stale update"));
    assert_eq!(
        store
            .get_user("upd-1")
            .await
            .expect("get")
            .expect("exists")
            .version,
        1
    );
    // Taking another user's email is a conflict; nothing changes.
    let mut thief = stored.clone();
    thief.email = "UPD.TWO@example.com".into();
    assert!(matches!(
        store.update_user(&thief).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_user("upd-1").await.expect("get").expect("exists"),
        stored
    );
    // A case-only change of one's own email is fine.
    let mut recased = stored.clone();
    recased.email = "New.One@Example.com".into();
    assert!(store.update_user(&recased).await.expect("recase"));
    // Missing users are not created.
    assert!(!store
        .update_user(&user("upd-ghost", "ghost@example.com", "org-a", t))
        .await
        .expect("ghost"));
    assert_eq!(store.get_user("upd-ghost").await.expect("get"), None);

    // Concurrent modifications all land: none is lost to a race.
    let tasks = (0..8).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            modify_user(store.as_ref(), "upd-2", move |u| {
                u.job_title = Some(format!("{}{i}", u.job_title.clone().unwrap_or_default()));
            })
            .await
        })
    });
    for r in join_all(tasks).await {
        assert!(r.expect("task").expect("modify").is_some());
    }
    let final_user = store.get_user("upd-2").await.expect("get").expect("exists");
    assert_eq!(final_user.version, 8);
    // Each task appended its digit to the title (whose fixture text has no digits).
    let mut digits: Vec<char> = final_user
        .job_title
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    digits.sort();
    assert_eq!(digits, "01234567".chars().collect::<Vec<_>>());
    assert_eq!(
        modify_user(store.as_ref(), "upd-ghost", |_| {})
            .await
            .expect("modify"),
        None
    );
}

async fn directory(store: &SharedStore, t0: i64) {
    // Organizations.
    let a = org("org-a", 7, t0);
    store.create_org(&a).await.expect("create org-a");
    assert_eq!(store.get_org("org-a").await.expect("get"), Some(a.clone()));
    assert_eq!(store.get_org("org-missing").await.expect("get"), None);
    store
        .create_org(&org("org-listed", 1, t0))
        .await
        .expect("create org-listed");
    let mut ids = store.list_org_ids().await.expect("list org ids");
    ids.sort();
    assert_eq!(ids, vec!["org-a".to_string(), "org-listed".to_string()]);
    let impostor = Organization {
        name: "Impostor".to_string(),
        ..a.clone()
    };
    assert!(
        matches!(
            store.create_org(&impostor).await,
            Err(StoreError::Conflict(_))
        ),
        "a duplicate organization id is a conflict"
    );
    assert_eq!(
        store.get_org("org-a").await.expect("get"),
        Some(a.clone()),
        "a duplicate must not overwrite the original"
    );

    let updated = store
        .set_session_duration("org-a", 30)
        .await
        .expect("set duration")
        .expect("org-a exists");
    assert_eq!(
        updated,
        Organization {
            session_duration_days: 30,
            ..a.clone()
        }
    );
    assert_eq!(store.get_org("org-a").await.expect("get"), Some(updated));
    assert_eq!(
        store
            .set_session_duration("org-missing", 1)
            .await
            .expect("set duration"),
        None
    );
    assert_eq!(
        store.get_org("org-missing").await.expect("get"),
        None,
        "setting a duration must not create an organization"
    );
    store
        .create_org(&org("org-b", 7, t0))
        .await
        .expect("create org-b");
    store
        .create_org(&org("org-p", 1, t0))
        .await
        .expect("create org-p");

    // Users.
    let alice = user("user-alice", "Alice.Smith@Example.COM", "org-a", t0);
    store.create_user(&alice).await.expect("create alice");
    assert_eq!(
        store.get_user("user-alice").await.expect("get"),
        Some(alice.clone())
    );
    assert_eq!(store.get_user("user-missing").await.expect("get"), None);
    for email in [
        "alice.smith@example.com",
        "ALICE.SMITH@EXAMPLE.COM",
        "Alice.Smith@Example.COM",
    ] {
        assert_eq!(
            store.find_user_by_email(email).await.expect("find"),
            Some(alice.clone()),
            "lookup by {email} is case-insensitive and keeps the email as entered"
        );
    }
    assert_eq!(
        store
            .find_user_by_email("nobody@example.com")
            .await
            .expect("find"),
        None
    );

    let clash = user("user-alice-2", "alice.smith@EXAMPLE.com", "org-b", t0);
    match store.create_user(&clash).await {
        Err(StoreError::Conflict(msg)) => assert_eq!(msg, "email already in use"),
        other => panic!("a taken email must be a conflict, got {other:?}"),
    }
    assert_eq!(
        store.get_user("user-alice-2").await.expect("get"),
        None,
        "a refused user must not be stored"
    );

    let same_id = user("user-alice", "someone.else@example.com", "org-a", t0);
    assert!(
        matches!(
            store.create_user(&same_id).await,
            Err(StoreError::Conflict(_))
        ),
        "a taken user id is a conflict"
    );
    assert_eq!(
        store
            .find_user_by_email("someone.else@example.com")
            .await
            .expect("find"),
        None,
        "a refused user must not claim its email"
    );
    assert_eq!(
        store.get_user("user-alice").await.expect("get"),
        Some(alice.clone()),
        "a refused user must not overwrite the original"
    );
}

async fn sessions_and_purge(store: &SharedStore, t0: i64) {
    let s1 = session("s1", "org-a", "user-alice", t0);
    let s2 = session("s2", "org-a", "user-alice", t0);
    let s3 = session("s3", "org-b", "user-alice", t0);
    for s in [&s1, &s2, &s3] {
        store.create_session(s).await.expect("create session");
    }
    assert_eq!(
        store.session_by_token("hash-s1").await.expect("by token"),
        Some(s1.clone())
    );
    assert_eq!(
        store.get_session("s1").await.expect("by id"),
        Some(s1.clone())
    );
    assert_eq!(
        store
            .session_by_token("hash-missing")
            .await
            .expect("by token"),
        None
    );
    assert_eq!(store.get_session("missing").await.expect("by id"), None);

    // Neither the id nor the token hash may be taken twice.
    let same_id = Session {
        token_hash: "hash-other".to_string(),
        ..s1.clone()
    };
    let same_hash = Session {
        id: "s-other".to_string(),
        ..s1.clone()
    };
    for dup in [&same_id, &same_hash] {
        assert!(
            matches!(
                store.create_session(dup).await,
                Err(StoreError::Conflict(_))
            ),
            "duplicate session {dup:?} must be a conflict"
        );
    }
    assert_eq!(
        store
            .session_by_token("hash-other")
            .await
            .expect("by token"),
        None
    );
    assert_eq!(store.get_session("s-other").await.expect("by id"), None);
    assert_eq!(
        store.get_session("s1").await.expect("by id"),
        Some(s1.clone())
    );

    // Ending: the first reason wins, everything else in the record is untouched.
    let s1_ended = Session {
        ended_at: Some(t0 + 10),
        ended_reason: Some(EndReason::LoggedOut),
        ..s1.clone()
    };
    assert_eq!(
        store
            .end_session("s1", EndReason::LoggedOut, t0 + 10)
            .await
            .expect("end"),
        Some(s1_ended.clone())
    );
    assert_eq!(
        store
            .end_session("s1", EndReason::ExpiredByAdmin, t0 + 20)
            .await
            .expect("end again"),
        Some(s1_ended.clone()),
        "an ended session is returned unchanged"
    );
    assert_eq!(
        store.session_by_token("hash-s1").await.expect("by token"),
        Some(s1_ended.clone())
    );
    assert_eq!(
        store.get_session("s1").await.expect("by id"),
        Some(s1_ended.clone())
    );
    assert_eq!(
        store
            .end_session("missing", EndReason::LoggedOut, t0)
            .await
            .expect("end missing"),
        None
    );

    // Touching only moves forward, and never revives an ended session.
    store
        .touch_session("hash-s2", t0 + 60, "198.51.100.7")
        .await
        .expect("touch");
    let s2_touched = Session {
        last_activity_at: t0 + 60,
        ip: "198.51.100.7".to_string(),
        ..s2.clone()
    };
    assert_eq!(
        store.session_by_token("hash-s2").await.expect("by token"),
        Some(s2_touched.clone())
    );
    for (at, why) in [(t0 + 30, "earlier"), (t0 + 60, "the same second")] {
        store
            .touch_session("hash-s2", at, "203.0.113.9")
            .await
            .expect("touch");
        assert_eq!(
            store.session_by_token("hash-s2").await.expect("by token"),
            Some(s2_touched.clone()),
            "a touch at {why} must not change the session"
        );
    }
    store
        .touch_session("hash-s1", t0 + 100, "203.0.113.9")
        .await
        .expect("touch ended");
    assert_eq!(
        store.session_by_token("hash-s1").await.expect("by token"),
        Some(s1_ended.clone()),
        "an ended session is not touched"
    );
    store
        .touch_session("hash-missing", t0 + 100, "203.0.113.9")
        .await
        .expect("touching a missing session is not an error");
    assert_eq!(
        store
            .session_by_token("hash-missing")
            .await
            .expect("by token"),
        None,
        "touch must not create a session"
    );

    // Listing is per organization and includes ended sessions.
    assert_eq!(
        by_id(store.list_org_sessions("org-a").await.expect("list")),
        vec![s1_ended.clone(), s2_touched.clone()]
    );
    assert_eq!(
        store.list_org_sessions("org-b").await.expect("list"),
        vec![s3.clone()]
    );
    assert!(store
        .list_org_sessions("org-missing")
        .await
        .expect("list")
        .is_empty());

    // Purging. org-p allows one day.
    let day = SECONDS_PER_DAY;
    let p_ended = session("p-ended", "org-p", "user-alice", t0);
    let p_old = session("p-old", "org-p", "user-alice", t0 - 2 * day);
    let p_active = session("p-active", "org-p", "user-alice", t0);
    let orphan = session("orphan", "org-nowhere", "user-alice", t0);
    for s in [&p_ended, &p_old, &p_active, &orphan] {
        store.create_session(s).await.expect("create session");
    }
    let p_ended = store
        .end_session("p-ended", EndReason::ExpiredByAdmin, t0 + 100)
        .await
        .expect("end")
        .expect("exists");

    // Now: s1 ended at t0+10, p-old expired at t0-1d, the orphan has no organization.
    assert_eq!(store.purge_sessions(t0 + 50).await.expect("purge"), 3);
    for (id, hash) in [
        ("s1", "hash-s1"),
        ("p-old", "hash-p-old"),
        ("orphan", "hash-orphan"),
    ] {
        assert_eq!(
            store.get_session(id).await.expect("by id"),
            None,
            "{id} purged"
        );
        assert_eq!(
            store.session_by_token(hash).await.expect("by token"),
            None,
            "{id} purged"
        );
    }
    assert_eq!(
        store.list_org_sessions("org-a").await.expect("list"),
        vec![s2_touched.clone()]
    );
    assert_eq!(
        by_id(store.list_org_sessions("org-p").await.expect("list")),
        vec![p_active.clone(), p_ended.clone()]
    );
    assert!(store
        .list_org_sessions("org-nowhere")
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.purge_sessions(t0 + 50).await.expect("purge again"),
        0,
        "purging is idempotent"
    );
    assert_eq!(
        store.purge_sessions(t0 + 100).await.expect("purge"),
        0,
        "a session that ends exactly at the cutoff is kept"
    );
    assert_eq!(store.purge_sessions(t0 + 101).await.expect("purge"), 1);
    assert_eq!(store.get_session("p-ended").await.expect("by id"), None);

    // Lowering the duration shortens existing sessions, for purging too.
    store
        .set_session_duration("org-a", 1)
        .await
        .expect("set duration")
        .expect("org-a exists");
    assert_eq!(store.purge_sessions(t0 + day).await.expect("purge"), 0);
    assert_eq!(store.purge_sessions(t0 + day + 1).await.expect("purge"), 2);
    for id in ["s2", "p-active"] {
        assert_eq!(
            store.get_session(id).await.expect("by id"),
            None,
            "{id} purged"
        );
    }
    assert!(store
        .list_org_sessions("org-a")
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .list_org_sessions("org-p")
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.list_org_sessions("org-b").await.expect("list"),
        vec![s3.clone()],
        "org-b keeps its seven days"
    );
    assert_eq!(
        store.get_session("s3").await.expect("by id"),
        Some(s3.clone())
    );
}

async fn tokens(store: &SharedStore, t0: i64) {
    let a1 = token("tok_a1", "user-alice", "org-a", None, t0);
    let a2 = token(
        "tok_a2",
        "user-alice",
        "org-b",
        Some("203.0.113.0/24"),
        t0 + 1,
    );
    let b1 = token("tok_b1", "user-bob", "org-a", Some("198.51.100.7"), t0 + 2);
    for t in [&a1, &a2, &b1] {
        store.create_token(t).await.expect("create token");
    }
    for t in [&a1, &a2, &b1] {
        assert_eq!(
            store.get_token(&t.id).await.expect("by id"),
            Some(t.clone()),
            "{} round-trips by id",
            t.id
        );
        assert_eq!(
            store.token_by_hash(&t.token_hash).await.expect("by hash"),
            Some(t.clone()),
            "{} round-trips by hash",
            t.id
        );
    }
    assert_eq!(store.get_token("tok_missing").await.expect("by id"), None);
    assert_eq!(
        store.token_by_hash("hash-missing").await.expect("by hash"),
        None
    );

    // Neither the id nor the token hash may be taken twice; a refused token leaves no trace.
    let same_id = ServiceToken {
        token_hash: "hash-other".to_string(),
        user_id: "user-mallory".to_string(),
        ..a1.clone()
    };
    let same_hash = ServiceToken {
        id: "tok_other".to_string(),
        user_id: "user-mallory".to_string(),
        ..a1.clone()
    };
    for dup in [&same_id, &same_hash] {
        assert!(
            matches!(store.create_token(dup).await, Err(StoreError::Conflict(_))),
            "duplicate token {dup:?} must be a conflict"
        );
    }
    assert_eq!(
        store.token_by_hash("hash-other").await.expect("by hash"),
        None
    );
    assert_eq!(store.get_token("tok_other").await.expect("by id"), None);
    assert_eq!(
        store.get_token("tok_a1").await.expect("by id"),
        Some(a1.clone()),
        "a duplicate must not overwrite the original"
    );
    assert_eq!(
        store.token_by_hash("hash-tok_a1").await.expect("by hash"),
        Some(a1.clone()),
        "a duplicate must not overwrite the original"
    );
    assert!(store
        .list_user_tokens("user-mallory")
        .await
        .expect("list")
        .is_empty());

    // Listing is per user, across organizations.
    assert_eq!(
        tokens_by_id(store.list_user_tokens("user-alice").await.expect("list")),
        vec![a1.clone(), a2.clone()]
    );
    assert_eq!(
        store.list_user_tokens("user-bob").await.expect("list"),
        vec![b1.clone()]
    );
    assert!(store
        .list_user_tokens("user-missing")
        .await
        .expect("list")
        .is_empty());

    // Touching records the use, only moves forward, and touches nothing else.
    store
        .touch_token("hash-tok_a1", t0 + 60, "192.0.2.50")
        .await
        .expect("touch");
    let a1_touched = ServiceToken {
        last_used_at: Some(t0 + 60),
        last_used_ip: Some("192.0.2.50".to_string()),
        ..a1.clone()
    };
    assert_eq!(
        store.token_by_hash("hash-tok_a1").await.expect("by hash"),
        Some(a1_touched.clone())
    );
    assert_eq!(
        store.get_token("tok_a1").await.expect("by id"),
        Some(a1_touched.clone())
    );
    for (at, why) in [(t0 + 30, "earlier"), (t0 + 60, "the same second")] {
        store
            .touch_token("hash-tok_a1", at, "203.0.113.9")
            .await
            .expect("touch");
        assert_eq!(
            store.token_by_hash("hash-tok_a1").await.expect("by hash"),
            Some(a1_touched.clone()),
            "a touch at {why} must not change the token"
        );
    }
    store
        .touch_token("hash-tok_a1", t0 + 120, "203.0.113.9")
        .await
        .expect("touch");
    let a1_touched = ServiceToken {
        last_used_at: Some(t0 + 120),
        last_used_ip: Some("203.0.113.9".to_string()),
        ..a1.clone()
    };
    assert_eq!(
        store.token_by_hash("hash-tok_a1").await.expect("by hash"),
        Some(a1_touched.clone())
    );
    store
        .touch_token("hash-missing", t0 + 120, "203.0.113.9")
        .await
        .expect("touching a missing token is not an error");
    assert_eq!(
        store.token_by_hash("hash-missing").await.expect("by hash"),
        None,
        "touch must not create a token"
    );
    assert_eq!(
        tokens_by_id(store.list_user_tokens("user-alice").await.expect("list")),
        vec![a1_touched.clone(), a2.clone()],
        "the listing shows the touched token and leaves the others alone"
    );
    assert_eq!(
        store.get_token("tok_b1").await.expect("by id"),
        Some(b1.clone())
    );

    // Deleting returns the record and removes every way to find it.
    assert_eq!(
        store.delete_token("tok_a2").await.expect("delete"),
        Some(a2.clone())
    );
    assert_eq!(store.get_token("tok_a2").await.expect("by id"), None);
    assert_eq!(
        store.token_by_hash("hash-tok_a2").await.expect("by hash"),
        None
    );
    assert_eq!(
        store.list_user_tokens("user-alice").await.expect("list"),
        vec![a1_touched.clone()]
    );
    assert_eq!(
        store.delete_token("tok_a2").await.expect("delete again"),
        None,
        "a token is deleted once"
    );
    assert_eq!(
        store
            .delete_token("tok_missing")
            .await
            .expect("delete missing"),
        None
    );
    store
        .touch_token("hash-tok_a2", t0 + 180, "192.0.2.1")
        .await
        .expect("touching a deleted token is not an error");
    assert_eq!(
        store.token_by_hash("hash-tok_a2").await.expect("by hash"),
        None,
        "touch must not revive a deleted token"
    );
    assert_eq!(
        store.list_user_tokens("user-bob").await.expect("list"),
        vec![b1.clone()],
        "other users' tokens are untouched"
    );
    // Nothing of a deleted token lingers to block its id or hash.
    store
        .create_token(&a2)
        .await
        .expect("re-create after delete");
    assert_eq!(
        tokens_by_id(store.list_user_tokens("user-alice").await.expect("list")),
        vec![a1_touched.clone(), a2.clone()]
    );
    assert_eq!(
        store.delete_token("tok_a2").await.expect("delete"),
        Some(a2.clone())
    );

    // Concurrent deletes of one token: exactly one gets it.
    let race = token("tok_race", "user-bob", "org-b", Some("192.0.2.7"), t0);
    store.create_token(&race).await.expect("create");
    let tasks = (0..10).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.delete_token("tok_race").await })
    });
    let deleted: Vec<ServiceToken> = join_all(tasks)
        .await
        .into_iter()
        .filter_map(|r| r.expect("task").expect("delete"))
        .collect();
    assert_eq!(
        deleted,
        vec![race.clone()],
        "exactly one concurrent delete returns the token"
    );
    assert_eq!(store.get_token("tok_race").await.expect("by id"), None);
    assert_eq!(
        store.token_by_hash("hash-tok_race").await.expect("by hash"),
        None
    );
    assert_eq!(
        store.list_user_tokens("user-bob").await.expect("list"),
        vec![b1.clone()]
    );
}

async fn rate_limits(store: &SharedStore, clock: &ManualClock) {
    const W: i64 = 900;
    let key = "login:alice.smith@example.com";
    let t = clock.now();
    let count = |count, last_failure_at| FailureCount {
        count,
        last_failure_at,
    };

    assert_eq!(
        store.failures(key, t, W).await.expect("failures"),
        FailureCount::default()
    );
    assert_eq!(
        store.record_failure(key, t, W).await.expect("record"),
        count(1, t)
    );
    clock.advance(10);
    assert_eq!(
        store
            .record_failure(key, clock.now(), W)
            .await
            .expect("record"),
        count(2, t + 10)
    );
    assert_eq!(
        store.failures(key, t + 20, W).await.expect("failures"),
        count(2, t + 10)
    );
    assert_eq!(
        store.failures(key, t + W - 1, W).await.expect("failures"),
        count(2, t + 10),
        "still inside the window"
    );
    assert_eq!(
        store.failures(key, t + W, W).await.expect("failures"),
        FailureCount::default(),
        "the window runs from the first failure, not the last"
    );
    assert_eq!(
        store
            .failures("login:someone-else", t + 20, W)
            .await
            .expect("failures"),
        FailureCount::default(),
        "keys are independent"
    );

    clock.advance(W - 10); // now t + W
    assert_eq!(
        store
            .record_failure(key, clock.now(), W)
            .await
            .expect("record"),
        count(1, t + W),
        "a failure after the window starts a new one"
    );
    assert_eq!(
        store.failures(key, t + W + 1, W).await.expect("failures"),
        count(1, t + W)
    );
    assert_eq!(
        store
            .record_failure(key, t + W + 100, W)
            .await
            .expect("record"),
        count(2, t + W + 100)
    );
    assert_eq!(
        store
            .record_failure(key, t + 2 * W, W)
            .await
            .expect("record"),
        count(1, t + 2 * W),
        "the new window ends exactly W after its first failure"
    );

    store.clear_failures(key).await.expect("clear");
    assert_eq!(
        store.failures(key, t + 2 * W, W).await.expect("failures"),
        FailureCount::default()
    );
    assert_eq!(
        store
            .record_failure(key, t + 2 * W, W)
            .await
            .expect("record"),
        count(1, t + 2 * W),
        "counting starts over after a clear"
    );
    store
        .clear_failures("login:never-failed")
        .await
        .expect("clearing an unknown key is fine");
}

async fn concurrent_failures(store: &SharedStore, t: i64) {
    const N: u32 = 20;
    let tasks = (0..N).map(|_| {
        let store = store.clone();
        tokio::spawn(async move { store.record_failure("login:burst", t, 60).await })
    });
    let mut counts: Vec<u32> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task").expect("record").count)
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=N).collect::<Vec<_>>(),
        "every concurrent failure is counted exactly once"
    );
    assert_eq!(
        store
            .failures("login:burst", t, 60)
            .await
            .expect("failures")
            .count,
        N
    );
}

async fn concurrent_user_creation(store: &SharedStore, t: i64) {
    const EMAILS: [&str; 4] = [
        "Race@Example.com",
        "race@example.com",
        "RACE@EXAMPLE.COM",
        "race@EXAMPLE.com",
    ];
    let tasks = (0..12).map(|i| {
        let store = store.clone();
        let u = user(&format!("racer-{i}"), EMAILS[i % EMAILS.len()], "org-a", t);
        tokio::spawn(async move { (u.id.clone(), store.create_user(&u).await) })
    });
    let results: Vec<(String, Result<(), StoreError>)> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("task"))
        .collect();
    let winners: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.is_ok())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one concurrent signup wins: {results:?}"
    );
    for (id, r) in &results {
        match r {
            Ok(()) => {}
            Err(StoreError::Conflict(msg)) => {
                assert_eq!(*msg, "email already in use");
                assert_eq!(store.get_user(id).await.expect("get"), None);
            }
            Err(e) => panic!("{id}: unexpected error {e}"),
        }
    }
    let found = store
        .find_user_by_email("race@example.com")
        .await
        .expect("find")
        .expect("the winner is stored");
    assert_eq!(&found.id, winners[0]);
}

/// Every operation in `ops` was timed under its own name (the backends wrap each in `observed`).
pub(crate) fn assert_ops_observed(metrics: &Metrics, ops: &[&str]) {
    for op in ops {
        assert!(
            metrics
                .store_seconds
                .with_label_values(&[op])
                .get_sample_count()
                > 0,
            "op {op} is not observed under its name"
        );
    }
}

// --- both backends -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("embedded:{}", dir.path().join("store.redb").display());
    let metrics = Arc::new(Metrics::new());
    let store = store::open(&url, metrics.clone()).expect("open embedded store");
    assert_eq!(store.backend_name(), "embedded");
    run_suite(store, ManualClock::new()).await;
    assert_ops_observed(&metrics, &OPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis() {
    let server = RedisServer::start();
    let metrics = Arc::new(Metrics::new());
    let store = store::open(&server.url, metrics.clone()).expect("open redis store");
    assert_eq!(store.backend_name(), "redis");
    run_suite(store, ManualClock::new()).await;
    assert_ops_observed(&metrics, &OPS);
}

/// An organization with more sessions than one purge script takes (`PURGE_BATCH`, 500): the
/// Redis sweep pages through its set, and deletes exactly the expired ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis_purges_a_large_organization_in_pages() {
    let server = RedisServer::start();
    let store = store::open(&server.url, Arc::new(Metrics::new())).expect("open redis store");
    let t0 = 1_700_000_000;
    let day = SECONDS_PER_DAY;
    store.create_org(&org("org-big", 1, t0)).await.expect("org");
    let (old, fresh) = (1_100, 150);
    for i in 0..old + fresh {
        let created = if i < old { t0 - 2 * day } else { t0 };
        store
            .create_session(&session(
                &format!("big-{i:05}"),
                "org-big",
                "user-x",
                created,
            ))
            .await
            .expect("create session");
    }
    assert_eq!(store.purge_sessions(t0).await.expect("purge"), old);
    let left = store.list_org_sessions("org-big").await.expect("list");
    assert_eq!(left.len(), fresh);
    assert!(left.iter().all(|s| s.created_at == t0));
    assert_eq!(store.purge_sessions(t0).await.expect("purge again"), 0);
}

#[test]
fn store_conformance_invalidations_encode_and_decode() {
    for (inv, text) in [
        (Invalidation::Session("h1".to_string()), "session:h1"),
        (Invalidation::Token("9f86d08".to_string()), "token:9f86d08"),
        (Invalidation::Org("org-a".to_string()), "org:org-a"),
        (
            Invalidation::User("user-alice".to_string()),
            "user:user-alice",
        ),
        // Only the first colon separates the kind from the value.
        (Invalidation::Token("a:b".to_string()), "token:a:b"),
    ] {
        assert_eq!(inv.encode(), text);
        assert_eq!(Invalidation::decode(text), Some(inv));
    }
    for bad in ["", "token", "tokens:h", "Token:h"] {
        assert_eq!(
            Invalidation::decode(bad),
            None,
            "{bad:?} is not an invalidation"
        );
    }
}

// --- Redis only --------------------------------------------------------------------------------

const WAIT: Duration = Duration::from_secs(5);

/// Waits for the first event matching `want`, skipping others (e.g. extra `Resync`s from
/// failed reconnect attempts). Returns the events skipped on the way.
async fn wait_for_event(
    rx: &mut UnboundedReceiver<InvalidationEvent>,
    want: &InvalidationEvent,
    within: Duration,
) -> Vec<InvalidationEvent> {
    let deadline = tokio::time::Instant::now() + within;
    let mut skipped = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(e)) if &e == want => return skipped,
            Ok(Some(e)) => skipped.push(e),
            Ok(None) => panic!("the watcher stopped while waiting for {want:?}"),
            Err(_) => panic!("no {want:?} within {within:?}; saw {skipped:?}"),
        }
    }
}

/// Polls `f` until it succeeds; returns how long that took.
async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < within {
        if f().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not happen within {within:?}");
}

async fn assert_unavailable_fast(store: &SharedStore) {
    let started = Instant::now();
    match store.ping().await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while Redis is down, got {other:?}"),
    }
    match store.get_org("org-a").await {
        Err(StoreError::Unavailable(_)) => {}
        other => panic!("expected Unavailable while Redis is down, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a dead Redis must fail fast, took {:?}",
        started.elapsed()
    );
}

type Watcher = (
    UnboundedReceiver<InvalidationEvent>,
    watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
);

fn spawn_watcher(store: &SharedStore) -> Watcher {
    let (tx, rx) = unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    let store = store.clone();
    let handle = tokio::spawn(async move {
        let on_event = move |e: InvalidationEvent| {
            let _ = tx.send(e);
        };
        store.watch_invalidations(&on_event, stop_rx).await;
    });
    (rx, stop_tx, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis_invalidations_survive_an_outage() {
    let mut server = RedisServer::start();
    if server.is_external() {
        eprintln!("skipped: REDIS_URL is set, and this test must stop and restart the server");
        return;
    }
    let metrics_a = Arc::new(Metrics::new());
    let a = store::open(&server.url, metrics_a.clone()).expect("open a");
    let b = store::open(&server.url, Arc::new(Metrics::new())).expect("open b");
    let (mut events, stop, watcher) = spawn_watcher(&a);

    wait_for_event(&mut events, &InvalidationEvent::Resync, WAIT).await;
    assert_eq!(metrics_a.invalidation_feed_up.get(), 1);
    for inv in [
        Invalidation::Session("hash-1".to_string()),
        Invalidation::Token("hash-tok-1".to_string()),
        Invalidation::Org("org-1".to_string()),
        Invalidation::User("user-1".to_string()),
    ] {
        b.publish(&inv).await.expect("publish");
        let skipped = wait_for_event(&mut events, &InvalidationEvent::Invalidate(inv), WAIT).await;
        assert!(skipped.is_empty(), "unexpected events {skipped:?}");
    }
    // Both instances see the same data.
    b.create_org(&org("org-a", 7, 1_700_000_000))
        .await
        .expect("create");
    assert!(a.get_org("org-a").await.expect("get").is_some());

    // Redis dies: calls fail fast and the watcher asks for a resync.
    server.stop();
    assert_unavailable_fast(&a).await;
    wait_for_event(&mut events, &InvalidationEvent::Resync, WAIT).await;
    assert_eq!(metrics_a.invalidation_feed_up.get(), 0);
    assert!(
        metrics_a.store_errors.with_label_values(&["ping"]).get() >= 1,
        "failures are counted"
    );
    // A store opened while Redis is down connects lazily, and retries on the next call.
    let late = store::open(&server.url, Arc::new(Metrics::new())).expect("open needs no Redis");
    assert_unavailable_fast(&late).await;

    // Redis comes back (empty): the same store instances work again, no restart needed.
    server.restart();
    for s in [&a, &b, &late] {
        let s = s.clone();
        eventually("ping after restart", WAIT, || {
            let s = s.clone();
            async move { s.ping().await.is_ok() }
        })
        .await;
    }
    late.create_org(&org("org-late", 7, 1_700_000_000))
        .await
        .expect("create after restart");
    assert!(a.get_org("org-late").await.expect("get").is_some());

    eventually("feed resubscribed", Duration::from_secs(10), || {
        let up = metrics_a.invalidation_feed_up.get();
        async move { up == 1 }
    })
    .await;
    let inv = Invalidation::Session("hash-2".to_string());
    b.publish(&inv).await.expect("publish after restart");
    let skipped = wait_for_event(&mut events, &InvalidationEvent::Invalidate(inv), WAIT).await;
    assert!(
        skipped.contains(&InvalidationEvent::Resync),
        "resubscribing must ask for a resync first; saw {skipped:?}"
    );

    // Shutdown is prompt even while the feed is down and backing off.
    server.stop();
    wait_for_event(&mut events, &InvalidationEvent::Resync, WAIT).await;
    stop.send(true).expect("watcher alive");
    tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("the watcher returns promptly on shutdown")
        .expect("the watcher did not panic");
    assert_eq!(metrics_a.invalidation_feed_up.get(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis_key_layout_and_corrupt_records() {
    // Opening never connects.
    let nowhere = store::open("redis://127.0.0.1:1/", Arc::new(Metrics::new()))
        .expect("open does not connect");
    assert!(matches!(
        nowhere.ping().await,
        Err(StoreError::Unavailable(_))
    ));

    let server = RedisServer::start();
    let store = store::open(&server.url, Arc::new(Metrics::new())).expect("open");
    let raw_client = redis::Client::open(server.url.as_str()).expect("client");
    let mut raw = raw_client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let t = 1_700_000_000;
    let o = org("layout-org", 7, t);
    let u = user("layout-user", "Layout@Example.com", "layout-org", t);
    let s = session("layout-s", "layout-org", "layout-user", t);
    store.create_org(&o).await.expect("org");
    store.create_user(&u).await.expect("user");
    store.create_session(&s).await.expect("session");
    let tok = token(
        "tok_layout",
        "layout-user",
        "layout-org",
        Some("203.0.113.0/24"),
        t,
    );
    store.create_token(&tok).await.expect("token");
    store
        .record_failure("login:layout", t, 900)
        .await
        .expect("failure");

    let get = |k: &str| redis::cmd("GET").arg(k).clone();
    let json = |raw: Option<String>| -> serde_json::Value {
        serde_json::from_str(&raw.expect("key exists")).expect("json")
    };
    let org_json: Option<String> = get("xgw:org:layout-org")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(json(org_json), serde_json::to_value(&o).unwrap());
    let is_member: bool = redis::cmd("SISMEMBER")
        .arg("xgw:orgs")
        .arg("layout-org")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(is_member);
    let user_json: Option<String> = get("xgw:user:layout-user")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(json(user_json), serde_json::to_value(&u).unwrap());
    let by_email: Option<String> = get("xgw:user_email:layout@example.com")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(by_email.as_deref(), Some("layout-user"));
    let session_json: Option<String> = get("xgw:session:hash-layout-s")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(json(session_json), serde_json::to_value(&s).unwrap());
    let hash: Option<String> = get("xgw:session_id:layout-s")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some("hash-layout-s"));
    let in_org: bool = redis::cmd("SISMEMBER")
        .arg("xgw:org_sessions:layout-org")
        .arg("layout-s")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(in_org);
    for k in [
        "xgw:session:hash-layout-s",
        "xgw:session_id:layout-s",
        "xgw:org_sessions:layout-org",
    ] {
        let ttl: i64 = redis::cmd("TTL")
            .arg(k)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(
            ttl > 119 * SECONDS_PER_DAY && ttl <= 120 * SECONDS_PER_DAY,
            "{k} carries the 120-day backstop TTL, has {ttl}"
        );
    }
    // Ending and touching keep the backstop TTL.
    store
        .touch_session("hash-layout-s", t + 60, "192.0.2.9")
        .await
        .unwrap();
    store
        .end_session("layout-s", EndReason::LoggedOut, t + 61)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("TTL")
        .arg("xgw:session:hash-layout-s")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 119 * SECONDS_PER_DAY, "TTL kept, has {ttl}");
    // Service tokens: record by hash, id -> hash, the owner's set; none of them expires.
    let token_json: Option<String> = get("xgw:token:hash-tok_layout")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(json(token_json), serde_json::to_value(&tok).unwrap());
    let hash: Option<String> = get("xgw:token_id:tok_layout")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(hash.as_deref(), Some("hash-tok_layout"));
    let owned: bool = redis::cmd("SISMEMBER")
        .arg("xgw:user_tokens:layout-user")
        .arg("tok_layout")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(owned);
    const TOKEN_KEYS: [&str; 3] = [
        "xgw:token:hash-tok_layout",
        "xgw:token_id:tok_layout",
        "xgw:user_tokens:layout-user",
    ];
    let ttls = |raw: &mut redis::aio::MultiplexedConnection| {
        let mut raw = raw.clone();
        async move {
            let mut out = Vec::new();
            for k in TOKEN_KEYS {
                let ttl: i64 = redis::cmd("TTL")
                    .arg(k)
                    .query_async(&mut raw)
                    .await
                    .unwrap();
                out.push((k, ttl));
            }
            out
        }
    };
    assert_eq!(
        ttls(&mut raw).await,
        TOKEN_KEYS.map(|k| (k, -1)).to_vec(),
        "token keys live until the token is deleted"
    );
    store
        .touch_token("hash-tok_layout", t + 60, "203.0.113.42")
        .await
        .unwrap();
    let token_json: Option<String> = get("xgw:token:hash-tok_layout")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        json(token_json),
        serde_json::to_value(ServiceToken {
            last_used_at: Some(t + 60),
            last_used_ip: Some("203.0.113.42".to_string()),
            ..tok.clone()
        })
        .unwrap(),
        "the touched record is the same JSON with the use recorded"
    );
    assert_eq!(
        ttls(&mut raw).await,
        TOKEN_KEYS.map(|k| (k, -1)).to_vec(),
        "touching does not add a TTL"
    );
    store.delete_token("tok_layout").await.unwrap().unwrap();
    let left: i64 = redis::cmd("EXISTS")
        .arg(&TOKEN_KEYS[..])
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(left, 0, "deleting a token removes all its keys");

    let window: std::collections::HashMap<String, i64> = redis::cmd("HGETALL")
        .arg("xgw:fail:login:layout")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        window,
        [("count", 1), ("first", t), ("last", t)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    );

    // An index entry whose records vanished (TTL backstop) is dropped by the listing.
    let _: i64 = redis::cmd("SADD")
        .arg("xgw:org_sessions:layout-org")
        .arg("ghost")
        .query_async(&mut raw)
        .await
        .unwrap();
    let listed = store.list_org_sessions("layout-org").await.expect("list");
    assert_eq!(
        listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        ["layout-s"]
    );
    let ghost_left: bool = redis::cmd("SISMEMBER")
        .arg("xgw:org_sessions:layout-org")
        .arg("ghost")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!ghost_left, "the vanished id is removed from the index");

    // Undecodable records are Corrupt, not Unavailable, including inside Lua scripts.
    let _: () = redis::pipe()
        .cmd("SET")
        .arg("xgw:session:hash-bad")
        .arg("{not json")
        .ignore()
        .cmd("SET")
        .arg("xgw:session_id:bad")
        .arg("hash-bad")
        .ignore()
        .cmd("SET")
        .arg("xgw:org:bad-org")
        .arg("[]]")
        .ignore()
        .cmd("SET")
        .arg("xgw:token:hash-bad-token")
        .arg("{not json")
        .ignore()
        .cmd("SET")
        .arg("xgw:token_id:tok_bad")
        .arg("hash-bad-token")
        .ignore()
        .query_async(&mut raw)
        .await
        .unwrap();
    let corrupt = |r: Result<(), StoreError>, what: &str| {
        assert!(
            matches!(r, Err(StoreError::Corrupt { .. })),
            "{what}: expected Corrupt, got {r:?}"
        );
    };
    corrupt(
        store.session_by_token("hash-bad").await.map(|_| ()),
        "session_by_token",
    );
    corrupt(store.get_session("bad").await.map(|_| ()), "get_session");
    corrupt(
        store
            .end_session("bad", EndReason::LoggedOut, t)
            .await
            .map(|_| ()),
        "end_session",
    );
    corrupt(
        store.touch_session("hash-bad", t + 1, "192.0.2.1").await,
        "touch_session",
    );
    corrupt(
        store.set_session_duration("bad-org", 1).await.map(|_| ()),
        "set_session_duration",
    );
    corrupt(
        store.token_by_hash("hash-bad-token").await.map(|_| ()),
        "token_by_hash",
    );
    corrupt(store.get_token("tok_bad").await.map(|_| ()), "get_token");
    corrupt(
        store
            .touch_token("hash-bad-token", t + 1, "192.0.2.1")
            .await,
        "touch_token",
    );
    corrupt(
        store.delete_token("tok_bad").await.map(|_| ()),
        "delete_token",
    );
    for k in ["xgw:session:hash-bad", "xgw:token:hash-bad-token"] {
        let still: Option<String> = get(k).query_async(&mut raw).await.unwrap();
        assert_eq!(
            still.as_deref(),
            Some("{not json"),
            "{k}: nothing was overwritten or deleted"
        );
    }
    let id_still: Option<String> = get("xgw:token_id:tok_bad")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        id_still.as_deref(),
        Some("hash-bad-token"),
        "a refused delete keeps the id index, like the embedded store"
    );

    // The watcher stops promptly while subscribed, too.
    let (mut events, stop, watcher) = spawn_watcher(&store);
    wait_for_event(&mut events, &InvalidationEvent::Resync, WAIT).await;
    stop.send(true).expect("watcher alive");
    tokio::time::timeout(Duration::from_secs(1), watcher)
        .await
        .expect("the watcher returns promptly on shutdown")
        .expect("the watcher did not panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis_hung_server_times_out() {
    let mut server = RedisServer::start();
    if server.is_external() {
        eprintln!("skipped: REDIS_URL is set, and this test must freeze the server");
        return;
    }
    let store = store::open(&server.url, Arc::new(Metrics::new())).expect("open");
    let o = org("org-hung", 7, 1_700_000_000);
    store.create_org(&o).await.expect("create");

    // A server that accepts but never answers must not hang callers.
    server.pause();
    let started = Instant::now();
    let result = store.get_org("org-hung").await;
    let took = started.elapsed();
    server.resume();
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "expected Unavailable from a hung Redis, got {result:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "the command timeout bounds the call, took {took:?}"
    );

    // Once it answers again, the same store works and replies line up with their commands
    // (a late reply to the timed-out call must not be handed to the next caller).
    eventually("ping after resume", WAIT, || {
        let s = store.clone();
        async move { s.ping().await.is_ok() }
    })
    .await;
    for _ in 0..5 {
        assert_eq!(
            store.get_org("org-hung").await.expect("get"),
            Some(o.clone())
        );
        assert_eq!(store.get_org("org-other").await.expect("get"), None);
    }
}

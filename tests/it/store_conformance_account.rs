//! The store contracts behind the account API (organization members, avatars, the audit
//! log), run by `store_conformance::run_suite` against both backends, plus the Redis key
//! layout they promise to operators.

use std::collections::BTreeMap;
use std::sync::Arc;

use xelon_gateway::metrics::Metrics;
use xelon_gateway::store::{
    self, audit_id, modify_user, AuditEntry, AuditEvent, Avatar, Membership, Organization,
    Permission, Role, SharedStore, StoreError, User, AUDIT_PAGE_MAX,
};

use crate::redis_server::RedisServer;

fn org(id: &str, t: i64) -> Organization {
    Organization {
        id: id.to_string(),
        name: format!("Organization {id}"),
        session_duration_days: 7,
        created_at: t,
        two_factor: Default::default(),
    }
}

fn member_of(id: &str, email: &str, orgs: &[&str], t: i64) -> User {
    User {
        id: id.to_string(),
        email: email.to_string(),
        first_name: "Grace".to_string(),
        last_name: "Hopper".to_string(),
        job_title: None,
        mobile_phone: Some("+41441234567".to_string()),
        business_phone: None,
        timezone: Some("Europe/Zurich".to_string()),
        password_hash: None,
        memberships: orgs
            .iter()
            .map(|o| Membership {
                org_id: o.to_string(),
                role: Role::Member,
                permissions: vec![Permission::AllowManageServiceTokens],
            })
            .collect(),
        created_at: t,
        updated_at: t,
        version: 0,
    }
}

async fn member_ids(store: &SharedStore, org_id: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list_org_members(org_id)
        .await
        .expect("list members")
        .into_iter()
        .map(|u| u.id)
        .collect();
    ids.sort();
    ids
}

/// `list_org_members` follows user creation and every membership change, including a change
/// that removes the last membership, and is not moved by a refused (stale) update.
pub async fn org_members(store: &SharedStore, t: i64) {
    for id in ["mem-org-1", "mem-org-2"] {
        store.create_org(&org(id, t)).await.expect("create org");
    }
    let m1 = member_of("mem-1", "mem1@example.com", &["mem-org-1"], t);
    let m2 = member_of("mem-2", "mem2@example.com", &["mem-org-1", "mem-org-2"], t);
    let m3 = member_of("mem-3", "mem3@example.com", &["mem-org-2"], t);
    let loner = member_of("mem-4", "mem4@example.com", &[], t);
    for u in [&m1, &m2, &m3, &loner] {
        store.create_user(u).await.expect("create user");
    }
    assert_eq!(member_ids(store, "mem-org-1").await, ["mem-1", "mem-2"]);
    assert_eq!(member_ids(store, "mem-org-2").await, ["mem-2", "mem-3"]);
    assert!(member_ids(store, "mem-org-missing").await.is_empty());
    let listed = store.list_org_members("mem-org-1").await.expect("list");
    let listed_m2 = listed
        .iter()
        .find(|u| u.id == "mem-2")
        .expect("mem-2 listed");
    assert_eq!(listed_m2, &m2, "members are listed as stored");

    // A refused compare-and-set changes no index.
    let mut stale = m1.clone();
    stale.memberships.clear();
    modify_user(store.as_ref(), "mem-1", |u| u.job_title = Some("x".into()))
        .await
        .expect("modify")
        .expect("exists");
    assert!(!store.update_user(&stale).await.expect("stale update"));
    assert_eq!(member_ids(store, "mem-org-1").await, ["mem-1", "mem-2"]);

    // Joining, leaving, and leaving the last organization.
    modify_user(store.as_ref(), "mem-1", |u| {
        u.memberships.push(Membership {
            org_id: "mem-org-2".into(),
            role: Role::Admin,
            permissions: vec![],
        })
    })
    .await
    .expect("modify")
    .expect("exists");
    modify_user(store.as_ref(), "mem-2", |u| {
        u.memberships.retain(|m| m.org_id != "mem-org-1")
    })
    .await
    .expect("modify")
    .expect("exists");
    modify_user(store.as_ref(), "mem-3", |u| u.memberships.clear())
        .await
        .expect("modify")
        .expect("exists");
    modify_user(store.as_ref(), "mem-4", |u| {
        u.memberships.push(Membership {
            org_id: "mem-org-1".into(),
            role: Role::Member,
            permissions: vec![],
        })
    })
    .await
    .expect("modify")
    .expect("exists");
    assert_eq!(member_ids(store, "mem-org-1").await, ["mem-1", "mem-4"]);
    assert_eq!(member_ids(store, "mem-org-2").await, ["mem-1", "mem-2"]);
    let m3_now = store.get_user("mem-3").await.expect("get").expect("exists");
    assert!(m3_now.memberships.is_empty(), "{m3_now:?}");
}

fn avatar(tag: u8, len: usize, t: i64) -> Avatar {
    // Every byte value, NULs included: the backends must store bytes, not text.
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(tag))
        .collect();
    Avatar {
        content_type: "image/png".to_string(),
        etag: format!("etag-{tag}"),
        data,
        updated_at: t,
    }
}

pub async fn avatars(store: &SharedStore, t: i64) {
    assert_eq!(store.get_avatar("av-user").await.expect("get"), None);
    assert!(!store.delete_avatar("av-user").await.expect("delete none"));

    let first = avatar(1, 300_000, t);
    store.put_avatar("av-user", &first).await.expect("put");
    assert_eq!(
        store.get_avatar("av-user").await.expect("get"),
        Some(first.clone())
    );
    let other = avatar(2, 10, t);
    store.put_avatar("av-other", &other).await.expect("put");

    let second = Avatar {
        content_type: "image/webp".to_string(),
        ..avatar(3, 17, t + 5)
    };
    store.put_avatar("av-user", &second).await.expect("replace");
    assert_eq!(
        store.get_avatar("av-user").await.expect("get"),
        Some(second),
        "a smaller replacement leaves nothing of the first behind"
    );

    assert!(store.delete_avatar("av-user").await.expect("delete"));
    assert_eq!(store.get_avatar("av-user").await.expect("get"), None);
    assert!(!store.delete_avatar("av-user").await.expect("delete again"));
    assert_eq!(
        store.get_avatar("av-other").await.expect("get"),
        Some(other),
        "avatars are per user"
    );
}

fn entry(org_id: &str, time: i64, n: u8, event: AuditEvent) -> AuditEntry {
    let mut details = BTreeMap::new();
    details.insert("n".to_string(), n.to_string());
    details.insert("quote".to_string(), "\"Grüße\" \\ ✓".to_string());
    AuditEntry {
        id: audit_id(time, [n, 0, 0, 0, 0, 0, 0, n]),
        time,
        org_id: org_id.to_string(),
        event,
        actor_user_id: Some("usr_actor".to_string()),
        target: n.is_multiple_of(2).then(|| format!("usr_target{n}")),
        ip: "2001:db8::1".to_string(),
        user_agent: "Mozilla/5.0 \"quoted\"".to_string(),
        details,
    }
}

async fn page(store: &SharedStore, org: &str, before: Option<&str>, limit: usize) -> Vec<String> {
    store
        .list_audit(org, before, limit)
        .await
        .expect("list audit")
        .into_iter()
        .map(|e| e.id)
        .collect()
}

/// Newest first, paged by id cursor, per organization, capped, purged by time.
pub async fn audit(store: &SharedStore, t: i64) {
    assert!(page(store, "aud-org", None, 50).await.is_empty());

    // Appended out of order, two in the same second, every event kind once.
    let times = [
        t + 5,
        t + 1,
        t + 3,
        t + 3,
        t + 2,
        t + 9,
        t + 7,
        t + 4,
        t + 8,
        t + 6,
        t,
    ];
    let mut written = Vec::new();
    for (n, (time, event)) in times.iter().zip(AuditEvent::ALL).enumerate() {
        let e = entry("aud-org", *time, n as u8, event);
        store.append_audit(&e).await.expect("append");
        written.push(e);
    }
    let noise = entry("aud-other", t + 100, 99, AuditEvent::Logout);
    store.append_audit(&noise).await.expect("append other org");

    let mut newest_first = written.clone();
    newest_first.sort_by(|a, b| b.id.cmp(&a.id));
    let all = store.list_audit("aud-org", None, 50).await.expect("list");
    assert_eq!(all, newest_first, "every field comes back, newest first");
    let times_listed: Vec<i64> = all.iter().map(|e| e.time).collect();
    assert!(
        times_listed.windows(2).all(|w| w[0] >= w[1]),
        "{times_listed:?}"
    );

    // Paging with the last id of each page visits every entry once.
    let mut seen = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let ids = page(store, "aud-org", before.as_deref(), 4).await;
        assert!(ids.len() <= 4);
        if ids.is_empty() {
            break;
        }
        before = ids.last().cloned();
        seen.extend(ids);
    }
    let expected: Vec<String> = newest_first.iter().map(|e| e.id.clone()).collect();
    assert_eq!(seen, expected);
    // A cursor excludes its own entry; one older than everything yields nothing.
    assert_eq!(
        page(store, "aud-org", Some(&expected[0]), 50).await,
        expected[1..].to_vec()
    );
    assert!(page(store, "aud-org", Some(&audit_id(t, [0; 8])), 50)
        .await
        .is_empty());
    assert_eq!(
        page(store, "aud-other", None, 50).await,
        vec![noise.id.clone()],
        "entries are per organization"
    );

    // An id that does not start with its own time would be misplaced: refused.
    let mut misdated = entry("aud-org", t + 50, 42, AuditEvent::Logout);
    misdated.time = t + 51;
    assert!(matches!(
        store.append_audit(&misdated).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert_eq!(page(store, "aud-org", None, 50).await.len(), written.len());

    // A page is capped.
    for n in 0..(AUDIT_PAGE_MAX as u32 + 3) {
        let mut e = entry("aud-big", t + i64::from(n), 0, AuditEvent::LoginFailed);
        e.id = audit_id(e.time, (u64::from(n)).to_be_bytes());
        store.append_audit(&e).await.expect("append");
    }
    assert_eq!(
        page(store, "aud-big", None, 10_000).await.len(),
        AUDIT_PAGE_MAX
    );

    // Purge: strictly older than the cutoff, in every organization.
    let purged = store.purge_audit(t + 3).await.expect("purge");
    assert_eq!(purged, 3 + 3, "aud-org: t, t+1, t+2; aud-big: t, t+1, t+2");
    let left = store.list_audit("aud-org", None, 50).await.expect("list");
    assert_eq!(left.len(), written.len() - 3);
    assert!(left.iter().all(|e| e.time >= t + 3));
    assert_eq!(store.purge_audit(t + 3).await.expect("purge again"), 0);
    assert_eq!(page(store, "aud-other", None, 50).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_conformance_redis_account_key_layout() {
    let server = RedisServer::start();
    let store = store::open(&server.url, Arc::new(Metrics::new())).expect("open");
    let mut raw = redis::Client::open(server.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let t = 1_700_000_000;
    store.create_org(&org("kl-org", t)).await.expect("org");
    store
        .create_user(&member_of("kl-user", "kl@example.com", &["kl-org"], t))
        .await
        .expect("user");
    let members: Vec<String> = redis::cmd("SMEMBERS")
        .arg("xgw:org_members:kl-org")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(members, ["kl-user"]);

    let a = avatar(7, 64, t);
    store.put_avatar("kl-user", &a).await.expect("avatar");
    let (content_type, etag, data): (String, String, Vec<u8>) = redis::cmd("HMGET")
        .arg("xgw:avatar:kl-user")
        .arg("content_type")
        .arg("etag")
        .arg("data")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!((content_type, etag, data), (a.content_type, a.etag, a.data));

    let e = entry("kl-org", t, 1, AuditEvent::PasswordChanged);
    store.append_audit(&e).await.expect("audit");
    let zset: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg("xgw:audit:kl-org")
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(zset.len(), 1);
    let (member, score) = &zset[0];
    assert_eq!(*score, 0.0);
    let (id, json) = member.split_once(' ').expect("`{id} {json}`");
    assert_eq!(id, e.id);
    let stored: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(stored, serde_json::to_value(&e).unwrap());
    assert_eq!(stored["event"], "password_changed");
}

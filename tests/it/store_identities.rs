//! The linked-identity part of the store contract (Quick Login), on both backends: one user per
//! provider account, one account per provider per user, and never unlinking a password-less
//! user's last identity — each also under parallel calls, as two replicas would make them.

use std::sync::Arc;

use futures_util::future::join_all;
use xelon_gateway::metrics::Metrics;
use xelon_gateway::store::{
    self, LinkOutcome, LinkedIdentity, Provider, SharedStore, StoreError, UnlinkOutcome,
    MAX_EMAIL_LEN, MAX_SUBJECT_LEN,
};

use crate::redis_server::RedisServer;

const OPS: [&str; 4] = [
    "link_identity",
    "identity_by_subject",
    "list_user_identities",
    "unlink_identity",
];

const T: i64 = 1_700_000_000;

fn identity(user: &str, provider: Provider, subject: &str) -> LinkedIdentity {
    LinkedIdentity {
        user_id: user.to_string(),
        provider,
        subject: subject.to_string(),
        // Exercises JSON escaping (the Redis scripts decode the record).
        email: Some(format!("{user}+\"quoted\"@example.com")),
        connected_at: T,
    }
}

async fn link(store: &SharedStore, i: &LinkedIdentity) -> LinkOutcome {
    store.link_identity(i).await.unwrap()
}

async fn owner(store: &SharedStore, provider: Provider, subject: &str) -> Option<String> {
    store
        .identity_by_subject(provider, subject)
        .await
        .unwrap()
        .map(|i| i.user_id)
}

async fn providers_of(store: &SharedStore, user: &str) -> Vec<Provider> {
    store
        .list_user_identities(user)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.provider)
        .collect()
}

async fn link_lookup_and_list(store: &SharedStore) {
    assert_eq!(store.list_user_identities("u1").await.unwrap(), vec![]);
    assert_eq!(
        store
            .identity_by_subject(Provider::Google, "g-1")
            .await
            .unwrap(),
        None
    );
    // GitHub first, to show the listing is sorted rather than in link order.
    let github = LinkedIdentity {
        email: None,
        ..identity("u1", Provider::Github, "583231")
    };
    let google = identity("u1", Provider::Google, "g-1");
    assert_eq!(link(store, &github).await, LinkOutcome::Linked);
    assert_eq!(link(store, &google).await, LinkOutcome::Linked);
    assert_eq!(
        store
            .identity_by_subject(Provider::Google, "g-1")
            .await
            .unwrap(),
        Some(google.clone())
    );
    assert_eq!(
        store
            .identity_by_subject(Provider::Github, "583231")
            .await
            .unwrap(),
        Some(github.clone())
    );
    assert_eq!(
        store.list_user_identities("u1").await.unwrap(),
        vec![google, github],
        "sorted by provider (Provider::ALL order)"
    );
    // A subject is per provider: the same string under the other provider is another account.
    assert_eq!(owner(store, Provider::Github, "g-1").await, None);
}

async fn subject_in_use_and_provider_already_linked(store: &SharedStore) {
    let first = identity("a1", Provider::Google, "shared");
    assert_eq!(link(store, &first).await, LinkOutcome::Linked);

    let stolen = identity("a2", Provider::Google, "shared");
    assert_eq!(link(store, &stolen).await, LinkOutcome::SubjectInUse);
    assert_eq!(
        store
            .identity_by_subject(Provider::Google, "shared")
            .await
            .unwrap(),
        Some(first.clone()),
        "the first link is untouched"
    );
    assert_eq!(store.list_user_identities("a2").await.unwrap(), vec![]);

    let second_google = identity("a1", Provider::Google, "other");
    assert_eq!(
        link(store, &second_google).await,
        LinkOutcome::ProviderAlreadyLinked
    );
    assert_eq!(owner(store, Provider::Google, "other").await, None);
    assert_eq!(
        link(store, &first).await,
        LinkOutcome::ProviderAlreadyLinked,
        "re-linking the very same identity"
    );
    assert_eq!(
        store.list_user_identities("a1").await.unwrap(),
        vec![first.clone()]
    );

    // Both rules broken at once: the subject's owner is reported.
    let taken = identity("a3", Provider::Google, "a3-own");
    assert_eq!(link(store, &taken).await, LinkOutcome::Linked);
    assert_eq!(
        link(store, &identity("a3", Provider::Google, "shared")).await,
        LinkOutcome::SubjectInUse
    );
    assert_eq!(
        owner(store, Provider::Google, "a3-own").await.as_deref(),
        Some("a3")
    );
}

async fn parallel_links(store: &SharedStore) {
    // One subject, many users at once: exactly one of them gets it.
    let tasks = (0..12).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let i = identity(&format!("race-{n}"), Provider::Github, "777");
            (n, store.link_identity(&i).await.unwrap())
        })
    });
    let results: Vec<(i32, LinkOutcome)> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<i32> = results
        .iter()
        .filter(|(_, o)| *o == LinkOutcome::Linked)
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .all(|(_, o)| matches!(o, LinkOutcome::Linked | LinkOutcome::SubjectInUse)));
    let winner = format!("race-{}", winners[0]);
    assert_eq!(
        owner(store, Provider::Github, "777").await,
        Some(winner.clone())
    );
    for n in 0..12 {
        let user = format!("race-{n}");
        let expected = if user == winner {
            vec![Provider::Github]
        } else {
            vec![]
        };
        assert_eq!(providers_of(store, &user).await, expected, "{user}");
    }

    // The same two users racing with tokio::join!, both directions at once.
    let (duel_a, duel_b) = (
        identity("duel-a", Provider::Google, "duel"),
        identity("duel-b", Provider::Google, "duel"),
    );
    let (a, b) = tokio::join!(store.link_identity(&duel_a), store.link_identity(&duel_b));
    let mut outcomes = vec![a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(
        outcomes,
        vec![LinkOutcome::Linked, LinkOutcome::SubjectInUse]
    );

    // One user, many accounts of one provider at once: exactly one is linked.
    let tasks = (0..12).map(|n| {
        let store = store.clone();
        tokio::spawn(async move {
            let i = identity("greedy", Provider::Google, &format!("greedy-{n}"));
            store.link_identity(&i).await.unwrap()
        })
    });
    let results: Vec<LinkOutcome> = join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(
        results
            .iter()
            .filter(|o| **o == LinkOutcome::Linked)
            .count(),
        1,
        "{results:?}"
    );
    assert!(results
        .iter()
        .all(|o| matches!(o, LinkOutcome::Linked | LinkOutcome::ProviderAlreadyLinked)));
    assert_eq!(store.list_user_identities("greedy").await.unwrap().len(), 1);
}

async fn unlink_and_relink(store: &SharedStore) {
    let google = identity("b1", Provider::Google, "b-google");
    let github = identity("b1", Provider::Github, "b-github");
    assert_eq!(link(store, &google).await, LinkOutcome::Linked);
    assert_eq!(link(store, &github).await, LinkOutcome::Linked);

    assert_eq!(
        store
            .unlink_identity("b1", Provider::Google, false)
            .await
            .unwrap(),
        UnlinkOutcome::Unlinked(google.clone())
    );
    assert_eq!(owner(store, Provider::Google, "b-google").await, None);
    assert_eq!(providers_of(store, "b1").await, vec![Provider::Github]);
    assert_eq!(
        store
            .unlink_identity("b1", Provider::Google, false)
            .await
            .unwrap(),
        UnlinkOutcome::NotLinked,
        "already unlinked"
    );
    assert_eq!(
        store
            .unlink_identity("nobody", Provider::Github, false)
            .await
            .unwrap(),
        UnlinkOutcome::NotLinked
    );
    assert_eq!(
        store
            .unlink_identity("nobody", Provider::Github, true)
            .await
            .unwrap(),
        UnlinkOutcome::NotLinked,
        "NotLinked is checked before LastIdentity"
    );
    // Another user's provider is not this user's to unlink.
    assert_eq!(
        store
            .unlink_identity("b2", Provider::Github, false)
            .await
            .unwrap(),
        UnlinkOutcome::NotLinked
    );
    assert_eq!(
        owner(store, Provider::Github, "b-github").await.as_deref(),
        Some("b1")
    );

    // The freed subject can be linked again, by someone else; and b1 may link a new Google.
    let moved = identity("b2", Provider::Google, "b-google");
    assert_eq!(link(store, &moved).await, LinkOutcome::Linked);
    assert_eq!(
        owner(store, Provider::Google, "b-google").await.as_deref(),
        Some("b2")
    );
    assert_eq!(
        link(store, &identity("b1", Provider::Google, "b-google-2")).await,
        LinkOutcome::Linked
    );
    assert_eq!(
        providers_of(store, "b1").await,
        vec![Provider::Google, Provider::Github]
    );
}

async fn require_another(store: &SharedStore) {
    let only = identity("c1", Provider::Github, "c-only");
    assert_eq!(link(store, &only).await, LinkOutcome::Linked);
    assert_eq!(
        store
            .unlink_identity("c1", Provider::Github, true)
            .await
            .unwrap(),
        UnlinkOutcome::LastIdentity
    );
    assert_eq!(
        owner(store, Provider::Github, "c-only").await.as_deref(),
        Some("c1")
    );
    assert_eq!(
        store
            .unlink_identity("c1", Provider::Google, true)
            .await
            .unwrap(),
        UnlinkOutcome::NotLinked
    );

    let second = identity("c1", Provider::Google, "c-second");
    assert_eq!(link(store, &second).await, LinkOutcome::Linked);
    assert_eq!(
        store
            .unlink_identity("c1", Provider::Github, true)
            .await
            .unwrap(),
        UnlinkOutcome::Unlinked(only.clone()),
        "allowed while another identity remains"
    );
    assert_eq!(
        store
            .unlink_identity("c1", Provider::Google, true)
            .await
            .unwrap(),
        UnlinkOutcome::LastIdentity
    );
    // Without the requirement (the user has a password) the last one goes too.
    assert_eq!(
        store
            .unlink_identity("c1", Provider::Google, false)
            .await
            .unwrap(),
        UnlinkOutcome::Unlinked(second)
    );
    assert_eq!(store.list_user_identities("c1").await.unwrap(), vec![]);
}

async fn parallel_unlinks_keep_one_identity(store: &SharedStore) {
    for round in 0..10 {
        let user = format!("d{round}");
        let google = identity(&user, Provider::Google, &format!("d-google-{round}"));
        let github = identity(&user, Provider::Github, &format!("d-github-{round}"));
        assert_eq!(link(store, &google).await, LinkOutcome::Linked);
        assert_eq!(link(store, &github).await, LinkOutcome::Linked);

        let (a, b) = tokio::join!(
            {
                let store = store.clone();
                let user = user.clone();
                tokio::spawn(
                    async move { store.unlink_identity(&user, Provider::Google, true).await },
                )
            },
            {
                let store = store.clone();
                let user = user.clone();
                tokio::spawn(
                    async move { store.unlink_identity(&user, Provider::Github, true).await },
                )
            },
        );
        let outcomes = [a.unwrap().unwrap(), b.unwrap().unwrap()];
        let unlinked = outcomes
            .iter()
            .filter(|o| matches!(o, UnlinkOutcome::Unlinked(_)))
            .count();
        let refused = outcomes
            .iter()
            .filter(|o| **o == UnlinkOutcome::LastIdentity)
            .count();
        assert_eq!((unlinked, refused), (1, 1), "round {round}: {outcomes:?}");
        assert_eq!(
            store.list_user_identities(&user).await.unwrap().len(),
            1,
            "round {round}: the user can still sign in"
        );
    }
}

async fn subjects_that_look_like_key_syntax_do_not_collide(store: &SharedStore) {
    // Each (provider, subject) to its own user: if any two shared a key, a link below would
    // answer SubjectInUse or a lookup would name the wrong user.
    let cases: [(Provider, &str, &str); 12] = [
        (Provider::Google, "a:b", "e1"),
        (Provider::Google, "a", "e2"),
        (Provider::Google, "a:", "e3"),
        (Provider::Google, ":b", "e4"),
        (Provider::Github, "b", "e5"),
        (Provider::Github, "google:a:b", "e6"),
        (Provider::Google, "github:b", "e7"),
        (Provider::Google, "{a}:b", "e8"),
        (Provider::Google, "{a}", "e9"),
        (Provider::Github, "{a:b}", "e10"),
        (Provider::Github, "a b\u{0}\n✓", "e11"),
        (Provider::Github, "*", "e12"),
    ];
    for (provider, subject, user) in cases {
        assert_eq!(
            link(store, &identity(user, provider, subject)).await,
            LinkOutcome::Linked,
            "{provider:?} {subject:?}"
        );
    }
    for (provider, subject, user) in cases {
        assert_eq!(
            owner(store, provider, subject).await.as_deref(),
            Some(user),
            "{provider:?} {subject:?}"
        );
        assert_eq!(providers_of(store, user).await, vec![provider]);
    }
    assert_eq!(owner(store, Provider::Github, "a:b").await, None);
    assert_eq!(owner(store, Provider::Google, "b").await, None);

    // User ids with the same characters keep separate indexes too.
    for user in ["f:1", "f", "f:{1}"] {
        assert_eq!(
            link(
                store,
                &identity(user, Provider::Google, &format!("sub-{user}"))
            )
            .await,
            LinkOutcome::Linked
        );
    }
    for user in ["f:1", "f", "f:{1}"] {
        let listed = store.list_user_identities(user).await.unwrap();
        assert_eq!(listed.len(), 1, "{user}");
        assert_eq!(listed[0].subject, format!("sub-{user}"));
        assert_eq!(
            store
                .unlink_identity(user, Provider::Google, false)
                .await
                .unwrap(),
            UnlinkOutcome::Unlinked(listed[0].clone())
        );
    }
    // Unlinking went by the user's own index, never a neighbour's.
    assert_eq!(
        owner(store, Provider::Google, "a:b").await.as_deref(),
        Some("e1")
    );
}

async fn oversize_input_is_refused(store: &SharedStore) {
    let longest = "s".repeat(MAX_SUBJECT_LEN);
    assert_eq!(
        link(store, &identity("g1", Provider::Google, &longest)).await,
        LinkOutcome::Linked
    );
    assert_eq!(
        owner(store, Provider::Google, &longest).await.as_deref(),
        Some("g1")
    );

    let refused = [
        identity("g2", Provider::Google, &"s".repeat(MAX_SUBJECT_LEN + 1)),
        // 128 characters, 256 bytes: the limit is in bytes.
        identity("g2", Provider::Google, &"é".repeat(128)),
        identity("g2", Provider::Google, ""),
        LinkedIdentity {
            email: Some(format!("{}@x", "e".repeat(MAX_EMAIL_LEN - 1))),
            ..identity("g2", Provider::Github, "fine")
        },
    ];
    for i in &refused {
        assert!(
            matches!(
                store.link_identity(i).await,
                Err(StoreError::Corrupt { .. })
            ),
            "{} bytes of subject, {:?} bytes of email",
            i.subject.len(),
            i.email.as_ref().map(String::len)
        );
    }
    assert_eq!(store.list_user_identities("g2").await.unwrap(), vec![]);
    assert_eq!(owner(store, Provider::Github, "fine").await, None);

    let longest_email = LinkedIdentity {
        email: Some(format!("{}@x", "e".repeat(MAX_EMAIL_LEN - 2))),
        ..identity("g3", Provider::Github, "fine")
    };
    assert_eq!(link(store, &longest_email).await, LinkOutcome::Linked);
}

async fn suite(store: SharedStore, metrics: Arc<Metrics>) {
    link_lookup_and_list(&store).await;
    subject_in_use_and_provider_already_linked(&store).await;
    parallel_links(&store).await;
    unlink_and_relink(&store).await;
    require_another(&store).await;
    parallel_unlinks_keep_one_identity(&store).await;
    subjects_that_look_like_key_syntax_do_not_collide(&store).await;
    oversize_input_is_refused(&store).await;
    crate::store_conformance::assert_ops_observed(&metrics, &OPS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_identities_contract_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let url = format!("embedded:{}", dir.path().join("s.redb").display());
    suite(store::open(&url, metrics.clone()).unwrap(), metrics).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn store_identities_contract_redis() {
    let redis = RedisServer::start();
    let metrics = Arc::new(Metrics::new());
    suite(store::open(&redis.url, metrics.clone()).unwrap(), metrics).await;
}

/// The Redis key layout other tools (and operators) rely on; see `src/store/redis/identity.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_identities_redis_key_layout() {
    let redis = RedisServer::start();
    let store = store::open(&redis.url, Arc::new(Metrics::new())).unwrap();
    let i = identity("layout-user", Provider::Google, "1:{2}");
    assert_eq!(link(&store, &i).await, LinkOutcome::Linked);

    let client = redis::Client::open(redis.url.as_str()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let record: Option<String> = redis::cmd("GET")
        .arg("xgw:identity:google:1:{2}")
        .query_async(&mut raw)
        .await
        .unwrap();
    let record: LinkedIdentity = serde_json::from_str(&record.expect("record key")).unwrap();
    assert_eq!(record, i);
    let index: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg("xgw:user_identities:layout-user")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(index, vec![("google".to_string(), "1:{2}".to_string())]);

    // A hash entry whose record was deleted by hand is not trusted: not listed, not counted
    // as "another" identity, and the provider can be linked again.
    let other = identity("layout-user", Provider::Github, "gh-1");
    assert_eq!(link(&store, &other).await, LinkOutcome::Linked);
    let _: i64 = redis::cmd("DEL")
        .arg("xgw:identity:github:gh-1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(
        providers_of(&store, "layout-user").await,
        vec![Provider::Google]
    );
    assert_eq!(
        store
            .unlink_identity("layout-user", Provider::Google, true)
            .await
            .unwrap(),
        UnlinkOutcome::LastIdentity
    );
    assert_eq!(
        link(&store, &identity("layout-user", Provider::Github, "gh-2")).await,
        LinkOutcome::Linked
    );
    assert_eq!(
        providers_of(&store, "layout-user").await,
        vec![Provider::Google, Provider::Github]
    );
}

//! The per-replica credential cache: what makes a valid credential cost zero store round trips.
//!
//! Keyed by the credential's hash (the same key the store uses and invalidations name). An
//! entry is trusted for `ttl` seconds, and never past the credential's own expiry; an
//! invalidation (expire now, logout, org change) or a lost invalidation feed evicts at once.
//!
//! Race guard: a lookup that missed notes the cache generation before going to the store, and
//! its result is only inserted if no invalidation happened meanwhile — otherwise a revocation
//! that overtook the slow lookup could be undone by it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderValue;

use super::{Invalidation, Organization, SharedStore, StoreResult};
use crate::auth::identity::Identity;
use crate::auth::secret::SecretHash;
use crate::auth::token::UseRules;
use crate::clock::UnixTime;

/// Last activity is written at most this often per credential.
pub const TOUCH_INTERVAL_SECS: i64 = 60;
/// A cached upstream JWT is re-minted when it has less than this left.
pub const JWT_REFRESH_MARGIN_SECS: i64 = 60;

/// A verified credential as cached.
#[derive(Debug)]
pub struct CachedAuth {
    pub identity: Identity,
    /// The credential's own end (session expiry); the cache never outlives it.
    pub valid_until: UnixTime,
    /// For service tokens: the IP and client id rules checked on every use.
    pub token_rules: Option<UseRules>,
    /// The identity as upstream header values; `None` if one of them is not a valid header
    /// value (the proxy then builds them per request and fails as it always did).
    pub headers: Option<IdentityHeaders>,
}

/// The identity's upstream header values (`X-Auth-*`), built once when the credential is cached.
///
/// Hot path: a `HeaderValue` is reference-counted bytes, so forwarding a clone costs a counter
/// increment, where building the value from the identity's strings cost an allocation and a
/// copy per header per request (load benchmark, callgrind: 6 of the gateway's extra
/// allocations per request). The first clone moves the bytes to their shared form, once.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub method: HeaderValue,
    pub user_id: HeaderValue,
    pub email: HeaderValue,
    pub org_id: HeaderValue,
    pub credential_id: HeaderValue,
}

impl IdentityHeaders {
    pub fn of(identity: &Identity) -> Option<IdentityHeaders> {
        let value = |s: &str| HeaderValue::from_str(s).ok();
        Some(IdentityHeaders {
            method: HeaderValue::from_static(identity.method.as_str()),
            user_id: value(&identity.user_id)?,
            email: value(&identity.email)?,
            org_id: value(&identity.org_id)?,
            credential_id: value(&identity.credential_id)?,
        })
    }
}

struct Entry {
    auth: Arc<CachedAuth>,
    fetched_at: UnixTime,
    touched_at: UnixTime,
    /// The upstream JWT as a header value (see `IdentityHeaders`: ~500 bytes not copied per
    /// request) and its expiry.
    jwt: Option<(HeaderValue, UnixTime)>,
}

/// What a cache hit hands the proxy.
pub struct Hit {
    pub auth: Arc<CachedAuth>,
    /// A still-fresh upstream JWT, if one was minted before.
    pub jwt: Option<HeaderValue>,
    /// True once a minute: the caller should record activity in the store.
    pub touch_due: bool,
}

/// The entries' hasher: a `SecretHash` is a SHA-256 output and hashes itself as its first 8
/// bytes, which this passes through. SipHash over them would cost more than the rest of a lookup
/// and buys nothing here: only credentials the store vouched for are inserted, and their secrets
/// are random, so no client can choose keys that collide.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, first_bytes: u64) {
        self.0 = first_bytes;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached (`SecretHash` writes one u64); correct anyway if another key type did.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
}

type Entries = HashMap<SecretHash, Entry, BuildHasherDefault<PassThrough>>;

pub struct AuthCache {
    entries: Mutex<Entries>,
    orgs: Mutex<HashMap<String, (Arc<Organization>, UnixTime)>>,
    generation: AtomicU64,
    ttl_secs: i64,
    max_entries: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave a map half-updated in a way we care about.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl AuthCache {
    pub fn new(ttl_secs: i64, max_entries: usize) -> Self {
        Self {
            entries: Mutex::new(Entries::default()),
            orgs: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
            ttl_secs,
            max_entries,
        }
    }

    pub fn get(&self, key: &SecretHash, now: UnixTime) -> Option<Hit> {
        let mut entries = lock(&self.entries);
        let entry = entries.get_mut(key)?;
        if now >= entry.auth.valid_until || now >= entry.fetched_at + self.ttl_secs {
            entries.remove(key);
            return None;
        }
        let touch_due = now >= entry.touched_at + TOUCH_INTERVAL_SECS;
        if touch_due {
            entry.touched_at = now;
        }
        let jwt = match &entry.jwt {
            Some((token, exp)) if *exp - now > JWT_REFRESH_MARGIN_SECS => Some(token.clone()),
            _ => None,
        };
        Some(Hit {
            auth: entry.auth.clone(),
            jwt,
            touch_due,
        })
    }

    /// The generation to pass back to `insert` after a store lookup.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches a freshly verified credential unless an invalidation happened since `generation`.
    pub fn insert(&self, key: SecretHash, auth: Arc<CachedAuth>, now: UnixTime, generation: u64) {
        let mut entries = lock(&self.entries);
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= self.max_entries {
            // Rare and cheap to recover from: everything is re-read on the next request.
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                auth,
                fetched_at: now,
                touched_at: now,
                jwt: None,
            },
        );
    }

    pub fn set_jwt(&self, key: &SecretHash, token: HeaderValue, exp: UnixTime) {
        if let Some(entry) = lock(&self.entries).get_mut(key) {
            entry.jwt = Some((token, exp));
        }
    }

    pub fn org(&self, id: &str, now: UnixTime) -> Option<Arc<Organization>> {
        let orgs = lock(&self.orgs);
        match orgs.get(id) {
            Some((org, fetched)) if now < fetched + self.ttl_secs => Some(org.clone()),
            _ => None,
        }
    }

    pub fn put_org(&self, org: Arc<Organization>, now: UnixTime, generation: u64) {
        let mut orgs = lock(&self.orgs);
        if self.generation.load(Ordering::SeqCst) == generation {
            orgs.insert(org.id.clone(), (org, now));
        }
    }

    pub fn invalidate(&self, what: &Invalidation) {
        // Bump first: lookups already in flight must not re-insert what we drop.
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut entries = lock(&self.entries);
        match what {
            Invalidation::Session(hash) | Invalidation::Token(hash) => {
                // A key that is not a hash was never cached.
                if let Some(key) = SecretHash::from_hex(hash) {
                    entries.remove(&key);
                }
            }
            Invalidation::Org(id) => {
                entries.retain(|_, e| &*e.auth.identity.org_id != id.as_str());
                lock(&self.orgs).remove(id);
            }
            Invalidation::User(id) => {
                entries.retain(|_, e| &*e.auth.identity.user_id != id.as_str());
            }
        }
    }

    pub fn clear(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        lock(&self.entries).clear();
        lock(&self.orgs).clear();
    }

    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Revokes cached state everywhere: evicts it here at once, then tells the other replicas.
/// Call after the store write that ended the credential.
pub async fn revoke(
    cache: &AuthCache,
    store: &SharedStore,
    what: &Invalidation,
) -> StoreResult<()> {
    cache.invalidate(what);
    store.publish(what).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::identity::AuthMethod;

    fn key(name: &str) -> SecretHash {
        SecretHash::of(name)
    }

    fn auth(org: &str, user: &str, until: UnixTime) -> Arc<CachedAuth> {
        Arc::new(CachedAuth {
            identity: Identity {
                method: AuthMethod::Session,
                user_id: user.into(),
                email: "a@b.c".into(),
                org_id: org.into(),
                credential_id: "ses_1".into(),
                second_factor: None,
                federated: false,
            },
            valid_until: until,
            token_rules: None,
            headers: None,
        })
    }

    #[test]
    fn entries_expire_with_ttl_and_credential() {
        let c = AuthCache::new(30, 100);
        c.insert(key("k"), auth("o", "u", 1_050), 1_000, c.generation());
        assert!(c.get(&key("k"), 1_029).is_some());
        assert!(c.get(&key("k"), 1_030).is_none());
        c.insert(key("k"), auth("o", "u", 1_010), 1_000, c.generation());
        assert!(c.get(&key("k"), 1_010).is_none());
    }

    #[test]
    fn touch_is_due_once_a_minute_and_jwt_is_reused_until_near_expiry() {
        let c = AuthCache::new(300, 100);
        c.insert(key("k"), auth("o", "u", 10_000), 1_000, c.generation());
        assert!(!c.get(&key("k"), 1_000).unwrap().touch_due);
        assert!(c.get(&key("k"), 1_060).unwrap().touch_due);
        assert!(!c.get(&key("k"), 1_061).unwrap().touch_due);
        c.set_jwt(&key("k"), HeaderValue::from_static("jwt"), 1_300);
        assert!(c.get(&key("k"), 1_200).unwrap().jwt.is_some());
        assert!(c.get(&key("k"), 1_241).unwrap().jwt.is_none());
    }

    #[test]
    fn an_invalidation_during_a_lookup_wins() {
        let c = AuthCache::new(30, 100);
        let seen = c.generation();
        c.invalidate(&Invalidation::Session(key("k").hex()));
        c.insert(key("k"), auth("o", "u", 2_000), 1_000, seen);
        assert!(c.get(&key("k"), 1_000).is_none());
    }

    #[test]
    fn session_and_token_invalidations_name_the_store_key() {
        let c = AuthCache::new(30, 100);
        c.insert(key("s"), auth("o", "u", 2_000), 1_000, c.generation());
        c.insert(key("t"), auth("o", "u", 2_000), 1_000, c.generation());
        // Not a hash: nothing can be cached under it, nothing is evicted.
        c.invalidate(&Invalidation::Session("not-a-hash".into()));
        assert_eq!(c.len(), 2);
        c.invalidate(&Invalidation::Session(key("s").hex()));
        assert!(c.get(&key("s"), 1_000).is_none());
        assert!(c.get(&key("t"), 1_000).is_some());
        c.invalidate(&Invalidation::Token(key("t").hex()));
        assert!(c.is_empty());
    }

    #[test]
    fn org_and_user_invalidations_drop_their_entries() {
        let c = AuthCache::new(30, 100);
        c.insert(key("a"), auth("o1", "u1", 2_000), 1_000, c.generation());
        c.insert(key("b"), auth("o2", "u2", 2_000), 1_000, c.generation());
        c.invalidate(&Invalidation::Org("o1".into()));
        assert!(c.get(&key("a"), 1_000).is_none());
        assert!(c.get(&key("b"), 1_000).is_some());
        c.invalidate(&Invalidation::User("u2".into()));
        assert!(c.get(&key("b"), 1_000).is_none());
    }
}

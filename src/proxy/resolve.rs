//! Turns a credential into an identity: from the cache when possible, else from the store
//! (session, its organization, its user), then cached. Store failures surface as errors so the
//! caller can fail closed.

use std::sync::Arc;

use crate::auth::identity::Identity;
use crate::auth::secret::SecretHash;
use crate::auth::{session, token};
use crate::clock::UnixTime;
use crate::metrics::Metrics;
use crate::store::cache::{AuthCache, CachedAuth, Hit, IdentityHeaders, TOUCH_INTERVAL_SECS};
use crate::store::{SharedStore, StoreError};

pub struct Resolver {
    pub store: SharedStore,
    pub cache: Arc<AuthCache>,
    pub metrics: Arc<Metrics>,
}

impl Resolver {
    /// A cache hit, counted as a hit or a miss.
    fn cached(&self, key: &SecretHash, now: UnixTime) -> Option<Hit> {
        let hit = self.cache.get(key, now);
        self.metrics.count_cache_lookup(hit.is_some());
        hit
    }

    /// Caches a credential just verified against the store (unless an invalidation happened
    /// since `generation`, see `AuthCache::insert`).
    fn remember(
        &self,
        key: &SecretHash,
        identity: Identity,
        valid_until: UnixTime,
        token_rules: Option<token::UseRules>,
        now: UnixTime,
        generation: u64,
    ) -> Arc<CachedAuth> {
        let auth = Arc::new(CachedAuth {
            headers: IdentityHeaders::of(&identity),
            identity,
            valid_until,
            token_rules,
        });
        self.cache.insert(*key, auth.clone(), now, generation);
        auth
    }

    /// `Ok(None)`: the session is unknown, ended or expired.
    pub async fn session(
        &self,
        token_hash: &SecretHash,
        now: UnixTime,
    ) -> Result<Option<Hit>, StoreError> {
        if let Some(hit) = self.cached(token_hash, now) {
            return Ok(Some(hit));
        }
        let generation = self.cache.generation();
        let Some(stored) = self.store.session_by_token(&token_hash.hex()).await? else {
            return Ok(None);
        };
        let org = match self.cache.org(&stored.org_id, now) {
            Some(org) => org,
            None => match self.store.get_org(&stored.org_id).await? {
                Some(org) => {
                    let org = Arc::new(org);
                    self.cache.put_org(org.clone(), now, generation);
                    org
                }
                None => return Ok(None),
            },
        };
        if !stored.is_active(&org, now) {
            return Ok(None);
        }
        let user = self.store.get_user(&stored.user_id).await?;
        let Some((identity, valid_until)) = session::verify(&stored, &org, user.as_ref(), now)
        else {
            return Ok(None);
        };
        let auth = self.remember(token_hash, identity, valid_until, None, now, generation);
        Ok(Some(Hit {
            auth,
            jwt: None,
            // A fresh lookup just read the record; activity is recorded on the next minute.
            touch_due: now > stored.last_activity_at + TOUCH_INTERVAL_SECS,
        }))
    }

    /// `Ok(None)`: no such token, or its owner may no longer use it.
    pub async fn token(
        &self,
        token_hash: &SecretHash,
        now: UnixTime,
    ) -> Result<Option<Hit>, StoreError> {
        if let Some(hit) = self.cached(token_hash, now) {
            return Ok(Some(hit));
        }
        let generation = self.cache.generation();
        let Some(stored) = self.store.token_by_hash(&token_hash.hex()).await? else {
            return Ok(None);
        };
        let user = self.store.get_user(&stored.user_id).await?;
        let Some(identity) = token::verify(&stored, user.as_ref()) else {
            return Ok(None);
        };
        // Tokens do not expire; deletion and membership changes arrive as invalidations.
        let rules = Some(token::UseRules::of(&stored));
        let auth = self.remember(token_hash, identity, UnixTime::MAX, rules, now, generation);
        Ok(Some(Hit {
            auth,
            jwt: None,
            touch_due: stored
                .last_used_at
                .is_none_or(|last| now >= last + TOUCH_INTERVAL_SECS),
        }))
    }
}

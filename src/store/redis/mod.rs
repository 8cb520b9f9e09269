//! The Redis backend, shared by many gateway replicas; revocations travel over pub/sub.
//!
//! Key layout (every key starts with `xgw:` so the gateway can share a Redis with other users
//! and an operator can tell its keys apart at a glance):
//!
//! | key                           | type   | holds                                          |
//! |-------------------------------|--------|------------------------------------------------|
//! | `xgw:org:{id}`                | string | organization JSON                              |
//! | `xgw:orgs`                    | set    | every organization id                          |
//! | `xgw:user:{id}`               | string | user JSON                                      |
//! | `xgw:user_email:{email}`      | string | user id, keyed by the *lowercased* email       |
//! | `xgw:session:{token_hash}`    | string | session JSON, keyed like the hot path asks     |
//! | `xgw:session_id:{id}`         | string | token hash, for admin actions by public id     |
//! | `xgw:org_sessions:{org_id}`   | set    | session ids of the organization                |
//! | `xgw:fail:{key}`              | hash   | `count`, `first`, `last` of a failure window   |
//! | `xgw:token:{token_hash}`      | string | service token JSON (no TTL: tokens live until deleted) |
//! | `xgw:token_id:{id}`           | string | token hash, for delete by public id            |
//! | `xgw:user_tokens:{user_id}`   | set    | token ids the user owns                        |
//! | `xgw:2fa:{user_id}` …         |        | two-factor state and tickets: see `two_factor.rs` |
//! | `xgw:org_members:{org_id}`    | set    | user ids with a membership in the organization |
//! | `xgw:avatar:{user_id}`        | hash   | `content_type`, `etag`, `updated_at`, `data` (see `account.rs`) |
//! | `xgw:audit:{org_id}`          | zset   | audit entries as `{id} {json}`, all score 0, ordered by id (`account.rs`) |
//! | `xgw:identity:{provider}:{subject}` | string | linked identity JSON (`identity.rs`)     |
//! | `xgw:user_identities:{user_id}` | hash | provider -> subject of the user's identities    |
//!
//! `xgw:org_members` is written by the same scripts that create and update users, so it never
//! disagrees with the records (a user record is never re-encoded in Lua: the scripts only decode
//! it to read the memberships).
//!
//! Invalidations are published on the channel `xgw:invalidate` as `{nonce} {Invalidation::encode}`;
//! every replica acknowledges on the list `xgw:ack:{nonce}` once it has applied one, and the
//! publisher waits for all of them (see `publish`).
//!
//! Why it is shaped like this:
//! - The records are the same JSON the embedded backend stores, so both backends share one
//!   serde definition and a record written by one version is readable by the next.
//! - Sessions are keyed by token hash because the proxy looks them up on every request that
//!   misses its cache: one GET. The id and per-organization indexes exist for the account app
//!   (list, expire now), which is rare and may take a few round trips.
//! - Every write that must be atomic is one Lua script (or one command): Redis runs a script
//!   alone, so "check then write" inside it cannot race with another replica. Scripts that
//!   change a session or organization decode and re-encode its JSON with Redis' `cjson`.
//!   That is safe for these records because every number in them is a Unix time or a small
//!   count (cjson keeps 14 significant digits) and they hold no arrays (cjson would turn an
//!   empty array into `{}`); a record that gains an array field must be changed in Rust.
//! - Session keys carry a 120-day TTL (the longest session, 30 days, plus the longest retention
//!   `session.expired_retention_days` allows, 90) purely as a backstop: if the sweeper never
//!   runs, Redis still does not fill up, and under any valid config the sweeper, not the TTL,
//!   decides when a session is gone (as in the embedded backend). Validity is never decided
//!   by a TTL either: it is computed from the record and the organization's duration (which
//!   may change after the session was created), and failure windows are compared with the
//!   `now` the caller passes, so tests can drive time with a manual clock.
//! - Scripts build some key names from what they read (session id -> token hash -> session).
//!   That is fine on a single Redis or behind Sentinel; a Redis Cluster would need hash tags.
//!
//! Connections: one multiplexed `ConnectionManager`, created lazily on first use inside the
//! runtime that uses it (a connection made on a throwaway runtime dies with it). Every command
//! is bounded by a one-second timeout, so a dead Redis turns into `Unavailable` (and a 503 that
//! fails closed) instead of a hung request; the manager reconnects on its own when Redis is
//! back. The pub/sub feed uses its own connection, which does not reconnect by itself, so
//! `watch_invalidations` loops, resubscribes and tells the caller to resync.
//!
//! Files, by capability: `directory.rs` (organizations, users, memberships), `sessions.rs`,
//! `tokens.rs` (service tokens), `rate_limit.rs` (failure counters), `invalidation.rs` (the
//! pub/sub feed and its acks), `two_factor.rs` (2FA state and tickets), `account.rs` (avatars
//! and the audit log), `identity.rs` (linked sign-in identities). This file holds the
//! connection, the shared helpers and the `Store` impl.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, RedisResult, ScriptInvocation};
use tokio::sync::OnceCell;

mod account;
mod directory;
mod identity;
mod invalidation;
mod rate_limit;
mod sessions;
mod tokens;
mod two_factor;

use super::{
    decode, observed, Invalidation, InvalidationEvent, SharedStore, Store, StoreError, StoreResult,
};
use crate::metrics::Metrics;

const PREFIX: &str = "xgw:";

/// Upper bound for one command (and for one connection attempt). The hot path fails closed
/// when the store is slow, so waiting longer would only turn an outage into hung clients.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// SCAN page size used by the sweeper.
const SCAN_COUNT: usize = 500;

// --- Lua scripts -------------------------------------------------------------------------------
//
// They live beside the operations that run them, one `LazyLock<Script>` each. Each returns a
// small integer code or the record it wrote, and performs every check before the first write:
// Redis does not roll back a script that fails halfway.
// A record that cjson cannot decode is reported as `-CORRUPT <key>`, mapped to
// `StoreError::Corrupt` like the embedded backend's decode errors.

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}")
}

fn org_key(id: &str) -> String {
    key("org", id)
}

fn redis_err(e: RedisError) -> StoreError {
    // The scripts report undecodable records as `-CORRUPT <key>`; everything else means the
    // backend did not do its job, and callers fail closed.
    if e.code() == Some("CORRUPT") {
        return StoreError::Corrupt {
            key: e.detail().unwrap_or("<unknown>").to_string(),
            reason: "not valid JSON for a Lua script".to_string(),
        };
    }
    StoreError::Unavailable(format!("redis: {e}"))
}

/// Bounds one Redis round trip, so a dead or stuck server becomes `Unavailable` quickly.
async fn within<T>(fut: impl Future<Output = RedisResult<T>>) -> StoreResult<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => result.map_err(redis_err),
        Err(_) => Err(StoreError::Unavailable(format!(
            "redis did not answer within {} ms",
            COMMAND_TIMEOUT.as_millis()
        ))),
    }
}

pub struct RedisStore {
    client: redis::Client,
    /// Empty until the first call connects; a failed connect leaves it empty, so the next
    /// call tries again (Redis may come up after the gateway).
    conn: OnceCell<ConnectionManager>,
    metrics: Arc<Metrics>,
}

impl RedisStore {
    /// Parses the URL; does not connect (see the module doc).
    pub fn new(url: &str, metrics: Arc<Metrics>) -> StoreResult<RedisStore> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        Ok(RedisStore {
            client,
            conn: OnceCell::new(),
            metrics,
        })
    }

    pub fn open_shared(url: &str, metrics: Arc<Metrics>) -> StoreResult<SharedStore> {
        Ok(Arc::new(Self::new(url, metrics)?))
    }

    async fn conn(&self) -> StoreResult<ConnectionManager> {
        let manager = self
            .conn
            .get_or_try_init(|| async {
                // No retries inside the manager: its backoff starts at a second and grows to a
                // minute, during which every call would wait on it. One attempt per call, and a
                // failed attempt makes the next call try again, recovers as soon as Redis does.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(COMMAND_TIMEOUT)
                    .set_response_timeout(COMMAND_TIMEOUT);
                within(ConnectionManager::new_with_config(
                    self.client.clone(),
                    config,
                ))
                .await
            })
            .await?;
        Ok(manager.clone())
    }

    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> StoreResult<T> {
        let mut conn = self.conn().await?;
        within(cmd.query_async(&mut conn)).await
    }

    async fn query_pipe<T: FromRedisValue>(&self, pipe: &redis::Pipeline) -> StoreResult<T> {
        let mut conn = self.conn().await?;
        within(pipe.query_async(&mut conn)).await
    }

    async fn eval<T: FromRedisValue>(&self, invocation: &ScriptInvocation<'_>) -> StoreResult<T> {
        let mut conn = self.conn().await?;
        within(invocation.invoke_async(&mut conn)).await
    }

    /// The `{id}` of every existing `xgw:{kind}:{id}` key (SCAN: never blocks Redis for long).
    async fn scan_ids(&self, kind: &str) -> StoreResult<BTreeSet<String>> {
        let pattern = format!("{PREFIX}{kind}:*");
        let key_prefix = format!("{PREFIX}{kind}:");
        let mut ids = BTreeSet::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT),
                )
                .await?;
            for k in keys {
                if let Some(id) = k.strip_prefix(&key_prefix) {
                    ids.insert(id.to_string());
                }
            }
            if next == 0 {
                return Ok(ids);
            }
            cursor = next;
        }
    }

    async fn get_json<T: serde::de::DeserializeOwned>(&self, key: &str) -> StoreResult<Option<T>> {
        let raw: Option<Vec<u8>> = self.query(redis::cmd("GET").arg(key)).await?;
        raw.map(|bytes| decode(key, &bytes)).transpose()
    }
}

#[async_trait]
impl Store for RedisStore {
    fn backend_name(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> StoreResult<()> {
        observed(&self.metrics, "ping", async {
            let _pong: String = self.query(&redis::cmd("PING")).await?;
            Ok(())
        })
        .await
    }
    async fn publish(&self, invalidation: &Invalidation) -> StoreResult<()> {
        self.publish_invalidation(invalidation).await
    }

    async fn watch_invalidations(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        self.watch_invalidation_feed(on_event, shutdown).await
    }
}

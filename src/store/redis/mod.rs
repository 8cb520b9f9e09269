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

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{FromRedisValue, RedisError, RedisResult, Script, ScriptInvocation};
use tokio::sync::OnceCell;

mod account;
mod two_factor;

use super::{
    decode, encode, observed, window_expired, DirectoryStore, EndReason, FailureCount,
    Invalidation, InvalidationEvent, Organization, RateLimitStore, ServiceToken, Session,
    SessionStore, SharedStore, Store, StoreError, StoreResult, TokenStore, User, SECONDS_PER_DAY,
};
use crate::clock::UnixTime;
use crate::metrics::Metrics;

const PREFIX: &str = "xgw:";
const CHANNEL: &str = "xgw:invalidate";

/// Upper bound for one command (and for one connection attempt). The hot path fails closed
/// when the store is slow, so waiting longer would only turn an outage into hung clients.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);

/// Cleanup backstop for session keys: the longest session (30 days) plus the longest retention
/// the config accepts (90 days). Shorter, and Redis would drop sessions the sweeper still keeps.
const SESSION_TTL_SECS: i64 = (30 + 90) * SECONDS_PER_DAY;

/// Extra seconds a failure window is kept after it ran out (backstop only, see module doc).
const FAILURE_TTL_SLACK_SECS: i64 = 60;

/// Reconnect backoff of the invalidation feed.
const FEED_BACKOFF_START: Duration = Duration::from_millis(100);
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A subscribed connection is silent when nobody publishes; a periodic PING notices a peer
/// that vanished without closing the socket (a half-open TCP connection never ends the stream).
const FEED_HEARTBEAT: Duration = Duration::from_secs(5);

/// How long a revocation waits for every replica to acknowledge it.
const ACK_TIMEOUT: Duration = Duration::from_millis(500);
/// Acks of a revocation nobody waits for any more disappear on their own.
const ACK_KEY_TTL_SECS: i64 = 10;

fn ack_key(nonce: &str) -> String {
    format!("{PREFIX}ack:{nonce}")
}

/// Our nonces are 32 hex digits; anything else on the channel gets no ack key.
fn is_nonce(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// SCAN page size used by the sweeper.
const SCAN_COUNT: usize = 500;

// --- Lua scripts -------------------------------------------------------------------------------
//
// Each returns a small integer code or the record it wrote, and performs every check before the
// first write: Redis does not roll back a script that fails halfway.
// A record that cjson cannot decode is reported as `-CORRUPT <key>`, mapped to
// `StoreError::Corrupt` like the embedded backend's decode errors.

/// KEYS: org, orgs set. ARGV: org id, org JSON. Returns 1 if created, 0 if the id exists.
const CREATE_ORG: &str = r#"
if redis.call('SET', KEYS[1], ARGV[2], 'NX') then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
return 0
"#;

/// Lua helper: the organization ids of a decoded user's memberships, as a set-like table.
/// Decoding only (user records are never re-encoded in Lua, see the module doc).
const MEMBER_ORGS_FN: &str = r#"
local function member_orgs(u)
  local orgs = {}
  if type(u) == 'table' and type(u.memberships) == 'table' then
    for _, m in ipairs(u.memberships) do
      if type(m) == 'table' and type(m.org_id) == 'string' then orgs[m.org_id] = true end
    end
  end
  return orgs
end
"#;

/// KEYS: user_email, user. ARGV: user id, user JSON, key prefix.
/// Returns 0 when created, 1 when the email is taken, 2 when the user id exists.
/// Email before id, like the embedded backend, so both report the same conflict.
/// Adds the user to `org_members:{org}` of each membership in the same step.
const CREATE_USER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local ok, u = pcall(cjson.decode, ARGV[2])
if not ok then return redis.error_reply('CORRUPT ' .. KEYS[2]) end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2])
for org in pairs(member_orgs(u)) do
  redis.call('SADD', ARGV[3] .. 'org_members:' .. org, ARGV[1])
end
return 0
"#;

/// KEYS: org. ARGV: days. Returns the updated JSON, or nil if there is no such organization.
const SET_SESSION_DURATION: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, org = pcall(cjson.decode, raw)
if not ok or type(org) ~= 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
org.session_duration_days = tonumber(ARGV[1])
raw = cjson.encode(org)
redis.call('SET', KEYS[1], raw, 'KEEPTTL')
return raw
"#;

/// KEYS: session, session_id, org_sessions. ARGV: session JSON, session id, token hash, TTL.
/// Returns 1 if created, 0 if the token hash or the id is already taken.
const CREATE_SESSION: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
-- The newest session lives longest, so refreshing the set's TTL covers every member.
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"#;

/// KEYS: session_id. ARGV: session key prefix, reason, now.
/// Returns the session JSON after the call (unchanged if it had already ended: the first
/// reason wins), or nil if there is no such session.
const END_SESSION: &str = r#"
local hash = redis.call('GET', KEYS[1])
if not hash then return false end
local key = ARGV[1] .. hash
local raw = redis.call('GET', key)
if not raw then return false end
local ok, s = pcall(cjson.decode, raw)
if not ok or type(s) ~= 'table' then return redis.error_reply('CORRUPT ' .. key) end
if s.ended_reason == nil or s.ended_reason == cjson.null then
  s.ended_reason = ARGV[2]
  s.ended_at = tonumber(ARGV[3])
  raw = cjson.encode(s)
  redis.call('SET', key, raw, 'KEEPTTL')
end
return raw
"#;

/// KEYS: session. ARGV: now, ip. Moves `last_activity_at` forward on a session that has not
/// ended. Returns 1 if it wrote, 0 otherwise.
const TOUCH_SESSION: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, s = pcall(cjson.decode, raw)
if not ok or type(s) ~= 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
local now = tonumber(ARGV[1])
if (s.ended_reason == nil or s.ended_reason == cjson.null)
    and type(s.last_activity_at) == 'number' and now > s.last_activity_at then
  s.last_activity_at = now
  s.ip = ARGV[2]
  redis.call('SET', KEYS[1], cjson.encode(s), 'KEEPTTL')
  return 1
end
return 0
"#;

/// KEYS: org, org_sessions. ARGV: cutoff, key prefix.
/// Deletes (all three keys of) every session of the organization whose validity ended before
/// the cutoff; every session when the organization does not exist. Ids whose keys already
/// vanished (TTL backstop) are dropped from the set without being counted.
/// Returns how many sessions it deleted.
const PURGE_ORG_SESSIONS: &str = r#"
local lifetime = nil
local org_raw = redis.call('GET', KEYS[1])
if org_raw then
  local ok, org = pcall(cjson.decode, org_raw)
  if not ok or type(org) ~= 'table' or type(org.session_duration_days) ~= 'number' then
    return redis.error_reply('CORRUPT ' .. KEYS[1])
  end
  lifetime = org.session_duration_days * 86400
end
local cutoff = tonumber(ARGV[1])
local ids = redis.call('SMEMBERS', KEYS[2])
-- Decide everything first: a corrupt record must not leave a half-done purge behind.
local doomed, stale = {}, {}
for _, id in ipairs(ids) do
  local id_key = ARGV[2] .. 'session_id:' .. id
  local hash = redis.call('GET', id_key)
  local raw = nil
  if hash then raw = redis.call('GET', ARGV[2] .. 'session:' .. hash) end
  if not raw then
    table.insert(stale, {id, id_key})
  else
    local key = ARGV[2] .. 'session:' .. hash
    local ok, s = pcall(cjson.decode, raw)
    if not ok or type(s) ~= 'table' or type(s.created_at) ~= 'number' then
      return redis.error_reply('CORRUPT ' .. key)
    end
    local gone = true
    if lifetime then
      local expires = s.created_at + lifetime
      if type(s.ended_at) == 'number' and s.ended_at < expires then expires = s.ended_at end
      gone = expires < cutoff
    end
    if gone then table.insert(doomed, {id, id_key, key}) end
  end
end
for _, d in ipairs(stale) do
  redis.call('SREM', KEYS[2], d[1])
  redis.call('DEL', d[2])
end
for _, d in ipairs(doomed) do
  redis.call('DEL', d[3], d[2])
  redis.call('SREM', KEYS[2], d[1])
end
return #doomed
"#;

/// KEYS: fail. ARGV: now, window seconds, TTL. Counts one failure in a fixed window that
/// starts at the first failure and starts over once it ran out (`window_expired`).
/// Returns the count after this failure.
const RECORD_FAILURE: &str = r#"
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local v = redis.call('HMGET', KEYS[1], 'count', 'first')
local count = tonumber(v[1])
local first = tonumber(v[2])
if count and first and now < first + window then
  count = count + 1
else
  count = 1
  first = now
end
redis.call('HSET', KEYS[1], 'count', tostring(count), 'first', tostring(first), 'last', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return count
"#;

/// KEYS: token, token_id, user_tokens. ARGV: token JSON, token id, token hash.
/// Returns 1 if created, 0 if the hash or the id is already taken. Tokens do not expire.
const CREATE_TOKEN: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"#;

/// KEYS: token_id. ARGV: key prefix. Deletes all three keys of the token and returns its JSON,
/// or nil if there is no such token. An undecodable record is reported and left in place,
/// like the embedded backend (whose transaction aborts on the decode error).
const DELETE_TOKEN: &str = r#"
local hash = redis.call('GET', KEYS[1])
if not hash then return false end
local key = ARGV[1] .. 'token:' .. hash
local raw = redis.call('GET', key)
if not raw then
  redis.call('DEL', KEYS[1])
  return false
end
local ok, t = pcall(cjson.decode, raw)
if not ok or type(t) ~= 'table' or type(t.id) ~= 'string' or type(t.user_id) ~= 'string' then
  return redis.error_reply('CORRUPT ' .. key)
end
redis.call('DEL', KEYS[1], key)
redis.call('SREM', ARGV[1] .. 'user_tokens:' .. t.user_id, t.id)
return raw
"#;

/// KEYS: token. ARGV: now, ip. Moves `last_used_at` forward. Returns 1 if it wrote.
const TOUCH_TOKEN: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, t = pcall(cjson.decode, raw)
if not ok or type(t) ~= 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
local now = tonumber(ARGV[1])
if t.last_used_at == nil or t.last_used_at == cjson.null or now > t.last_used_at then
  t.last_used_at = now
  t.last_used_ip = ARGV[2]
  redis.call('SET', KEYS[1], cjson.encode(t))
  return 1
end
return 0
"#;

/// KEYS: user, new email, old email. ARGV: expected version, new JSON, user id, key prefix.
/// Compare-and-set on the user's `version` (decoded, never re-encoded: user records hold
/// arrays, which cjson cannot round-trip). Returns 1 if written, 0 if the version moved or the
/// user is gone, 2 if the new email belongs to someone else. Moves the user between
/// `org_members:{org}` sets as its memberships changed, in the same step.
const UPDATE_USER: &str = r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, u = pcall(cjson.decode, raw)
if not ok or type(u) ~= 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
local v = u.version
if v == nil or v == cjson.null then v = 0 end
if v ~= tonumber(ARGV[1]) then return 0 end
local ok_new, new = pcall(cjson.decode, ARGV[2])
if not ok_new then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
if KEYS[2] ~= KEYS[3] then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[3] then return 2 end
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[2])
local before, after = member_orgs(u), member_orgs(new)
for org in pairs(before) do
  if not after[org] then redis.call('SREM', ARGV[4] .. 'org_members:' .. org, ARGV[3]) end
end
for org in pairs(after) do
  if not before[org] then redis.call('SADD', ARGV[4] .. 'org_members:' .. org, ARGV[3]) end
end
return 1
"#;

struct Scripts {
    create_org: Script,
    create_user: Script,
    set_session_duration: Script,
    create_session: Script,
    end_session: Script,
    touch_session: Script,
    purge_org_sessions: Script,
    record_failure: Script,
    create_token: Script,
    delete_token: Script,
    update_user: Script,
    touch_token: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            create_org: Script::new(CREATE_ORG),
            create_user: Script::new(&format!("{MEMBER_ORGS_FN}{CREATE_USER}")),
            set_session_duration: Script::new(SET_SESSION_DURATION),
            create_session: Script::new(CREATE_SESSION),
            end_session: Script::new(END_SESSION),
            touch_session: Script::new(TOUCH_SESSION),
            purge_org_sessions: Script::new(PURGE_ORG_SESSIONS),
            record_failure: Script::new(RECORD_FAILURE),
            create_token: Script::new(CREATE_TOKEN),
            update_user: Script::new(&format!("{MEMBER_ORGS_FN}{UPDATE_USER}")),
            delete_token: Script::new(DELETE_TOKEN),
            touch_token: Script::new(TOUCH_TOKEN),
        }
    }
}

fn key(kind: &str, id: &str) -> String {
    format!("{PREFIX}{kind}:{id}")
}

fn org_key(id: &str) -> String {
    key("org", id)
}

fn orgs_key() -> String {
    format!("{PREFIX}orgs")
}

fn user_key(id: &str) -> String {
    key("user", id)
}

fn org_members_key(org_id: &str) -> String {
    key("org_members", org_id)
}

fn user_email_key(email: &str) -> String {
    key("user_email", &email.to_lowercase())
}

fn session_key(token_hash: &str) -> String {
    key("session", token_hash)
}

fn session_id_key(id: &str) -> String {
    key("session_id", id)
}

fn org_sessions_key(org_id: &str) -> String {
    key("org_sessions", org_id)
}

fn token_key(token_hash: &str) -> String {
    key("token", token_hash)
}

fn token_id_key(id: &str) -> String {
    key("token_id", id)
}

fn user_tokens_key(user_id: &str) -> String {
    key("user_tokens", user_id)
}

fn fail_key(k: &str) -> String {
    key("fail", k)
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

/// The wire name of an end reason, exactly as serde writes it into the session JSON.
fn reason_str(reason: EndReason) -> StoreResult<String> {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        other => Err(StoreError::Corrupt {
            key: "<end reason>".to_string(),
            reason: format!("unexpected encoding {other:?}"),
        }),
    }
}

pub struct RedisStore {
    client: redis::Client,
    /// Empty until the first call connects; a failed connect leaves it empty, so the next
    /// call tries again (Redis may come up after the gateway).
    conn: OnceCell<ConnectionManager>,
    scripts: Scripts,
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
            scripts: Scripts::new(),
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

    /// Follows the invalidation channel until the connection fails; returns why it stopped.
    /// Resets `backoff` once subscribed, so only consecutive failures slow the loop down.
    async fn follow_feed(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        backoff: &mut Duration,
    ) -> String {
        let pubsub = match within(self.client.get_async_pubsub()).await {
            Ok(p) => p,
            Err(e) => return format!("cannot connect: {e}"),
        };
        let (mut sink, mut stream) = pubsub.split();
        if let Err(e) = within(sink.subscribe(CHANNEL)).await {
            return format!("cannot subscribe: {e}");
        }
        self.metrics.invalidation_feed_up.set(1);
        *backoff = FEED_BACKOFF_START;
        tracing::info!(channel = CHANNEL, "invalidation feed subscribed");
        // Anything published while we were not subscribed is lost: drop every cached entry.
        on_event(InvalidationEvent::Resync);

        let mut heartbeat = tokio::time::interval(FEED_HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await; // the first tick is immediate
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return "the connection closed".to_string();
                    };
                    let payload: String = match msg.get_payload() {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring an unreadable invalidation");
                            continue;
                        }
                    };
                    // `{nonce} {invalidation}`: apply it, then acknowledge, so the publisher
                    // knows this replica refuses the credential from now on.
                    let (nonce, body) = match payload.split_once(' ') {
                        Some((n, b)) => (Some(n), b),
                        None => (None, payload.as_str()),
                    };
                    match Invalidation::decode(body) {
                        Some(inv) => on_event(InvalidationEvent::Invalidate(inv)),
                        None => {
                            tracing::warn!(%payload, "ignoring an unknown invalidation");
                            continue;
                        }
                    }
                    if let Some(nonce) = nonce.filter(|n| is_nonce(n)) {
                        let key = ack_key(nonce);
                        let acked: StoreResult<i64> =
                            match self.query::<i64>(redis::cmd("RPUSH").arg(&key).arg(1)).await {
                                Ok(_) => {
                                    self.query(redis::cmd("EXPIRE").arg(&key).arg(ACK_KEY_TTL_SECS))
                                        .await
                                }
                                Err(e) => Err(e),
                            };
                        if let Err(e) = acked {
                            tracing::warn!(error = %e, "could not acknowledge an invalidation");
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(e) = within(sink.ping::<redis::Value>()).await {
                        return format!("heartbeat failed: {e}");
                    }
                }
            }
        }
    }
}

/// Resolves once `shutdown` is true (or its sender is gone, which means nobody can ask any
/// more). Cancel-safe, so it can be raced in `select!` again and again.
async fn shutdown_requested(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow_and_update() {
            return;
        }
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

#[async_trait]
impl DirectoryStore for RedisStore {
    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        observed(&self.metrics, "create_org", async {
            let json = encode(org)?;
            let mut inv = self.scripts.create_org.prepare_invoke();
            inv.key(org_key(&org.id))
                .key(orgs_key())
                .arg(&org.id)
                .arg(json);
            let created: i64 = self.eval(&inv).await?;
            if created == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict("organization id exists"))
            }
        })
        .await
    }

    async fn get_org(&self, id: &str) -> StoreResult<Option<Organization>> {
        observed(&self.metrics, "get_org", self.get_json(&org_key(id))).await
    }

    async fn list_org_ids(&self) -> StoreResult<Vec<String>> {
        observed(&self.metrics, "list_org_ids", async {
            let mut ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(orgs_key())).await?;
            ids.sort();
            Ok(ids)
        })
        .await
    }

    async fn set_session_duration(
        &self,
        org_id: &str,
        days: u32,
    ) -> StoreResult<Option<Organization>> {
        observed(&self.metrics, "set_session_duration", async {
            let key = org_key(org_id);
            let mut inv = self.scripts.set_session_duration.prepare_invoke();
            inv.key(&key).arg(days);
            let raw: Option<Vec<u8>> = self.eval(&inv).await?;
            raw.map(|bytes| decode(&key, &bytes)).transpose()
        })
        .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        observed(&self.metrics, "create_user", async {
            let json = encode(user)?;
            let mut inv = self.scripts.create_user.prepare_invoke();
            inv.key(user_email_key(&user.email))
                .key(user_key(&user.id))
                .arg(&user.id)
                .arg(json)
                .arg(PREFIX);
            match self.eval::<i64>(&inv).await? {
                0 => Ok(()),
                1 => Err(StoreError::Conflict("email already in use")),
                _ => Err(StoreError::Conflict("user id exists")),
            }
        })
        .await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        observed(&self.metrics, "update_user", async {
            let current: Option<User> = self.get_json(&user_key(&user.id)).await?;
            let Some(current) = current else {
                return Ok(false);
            };
            let stored = User {
                version: user.version + 1,
                ..user.clone()
            };
            let mut inv = self.scripts.update_user.prepare_invoke();
            inv.key(user_key(&user.id))
                .key(user_email_key(&user.email))
                .key(user_email_key(&current.email))
                .arg(user.version)
                .arg(encode(&stored)?)
                .arg(&user.id)
                .arg(PREFIX);
            match self.eval::<i64>(&inv).await? {
                1 => Ok(true),
                2 => Err(StoreError::Conflict("email already in use")),
                _ => Ok(false),
            }
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        observed(&self.metrics, "get_user", self.get_json(&user_key(id))).await
    }

    async fn list_org_members(&self, org_id: &str) -> StoreResult<Vec<User>> {
        observed(&self.metrics, "list_org_members", async {
            let set = org_members_key(org_id);
            let ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set)).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let keys: Vec<String> = ids.iter().map(|id| user_key(id)).collect();
            let raws: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
            let mut members = Vec::with_capacity(ids.len());
            let mut stale = Vec::new();
            for ((id, key), raw) in ids.iter().zip(&keys).zip(raws) {
                // The scripts keep the set exact; re-checking the record costs nothing and
                // means a stray id could never list a non-member.
                match raw.map(|bytes| decode::<User>(key, &bytes)).transpose()? {
                    Some(u) if u.membership(org_id).is_some() => members.push(u),
                    _ => stale.push(id.clone()),
                }
            }
            if !stale.is_empty() {
                let _removed: i64 = self.query(redis::cmd("SREM").arg(&set).arg(&stale)).await?;
            }
            Ok(members)
        })
        .await
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        observed(&self.metrics, "find_user_by_email", async {
            // Two reads are enough: an email never moves to another user id once written.
            let id: Option<String> = self
                .query(redis::cmd("GET").arg(user_email_key(email)))
                .await?;
            match id {
                Some(id) => self.get_json(&user_key(&id)).await,
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        observed(&self.metrics, "create_session", async {
            let json = encode(session)?;
            let mut inv = self.scripts.create_session.prepare_invoke();
            inv.key(session_key(&session.token_hash))
                .key(session_id_key(&session.id))
                .key(org_sessions_key(&session.org_id))
                .arg(json)
                .arg(&session.id)
                .arg(&session.token_hash)
                .arg(SESSION_TTL_SECS);
            let created: i64 = self.eval(&inv).await?;
            if created == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict("session exists"))
            }
        })
        .await
    }

    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        observed(
            &self.metrics,
            "session_by_token",
            self.get_json(&session_key(token_hash)),
        )
        .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<Session>> {
        observed(&self.metrics, "get_session", async {
            // Two reads are enough: an id maps to one token hash for the session's whole life.
            let hash: Option<String> = self
                .query(redis::cmd("GET").arg(session_id_key(id)))
                .await?;
            match hash {
                Some(hash) => self.get_json(&session_key(&hash)).await,
                None => Ok(None),
            }
        })
        .await
    }

    async fn end_session(
        &self,
        id: &str,
        reason: EndReason,
        now: UnixTime,
    ) -> StoreResult<Option<Session>> {
        observed(&self.metrics, "end_session", async {
            let key = session_id_key(id);
            let mut inv = self.scripts.end_session.prepare_invoke();
            inv.key(&key)
                .arg(format!("{PREFIX}session:"))
                .arg(reason_str(reason)?)
                .arg(now);
            let raw: Option<Vec<u8>> = self.eval(&inv).await?;
            raw.map(|bytes| decode(&key, &bytes)).transpose()
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()> {
        observed(&self.metrics, "touch_session", async {
            let mut inv = self.scripts.touch_session.prepare_invoke();
            inv.key(session_key(token_hash)).arg(now).arg(ip);
            let _written: i64 = self.eval(&inv).await?;
            Ok(())
        })
        .await
    }

    async fn list_org_sessions(&self, org_id: &str) -> StoreResult<Vec<Session>> {
        observed(&self.metrics, "list_org_sessions", async {
            let set = org_sessions_key(org_id);
            let ids: Vec<String> = self.query(redis::cmd("SMEMBERS").arg(&set)).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let id_keys: Vec<String> = ids.iter().map(|id| session_id_key(id)).collect();
            let hashes: Vec<Option<String>> = self.query(redis::cmd("MGET").arg(&id_keys)).await?;

            let mut vanished = Vec::new();
            let mut found = Vec::new(); // (id, token hash)
            for (id, hash) in ids.into_iter().zip(hashes) {
                match hash {
                    Some(hash) => found.push((id, hash)),
                    None => vanished.push(id),
                }
            }
            let mut sessions = Vec::with_capacity(found.len());
            if !found.is_empty() {
                let keys: Vec<String> = found.iter().map(|(_, h)| session_key(h)).collect();
                let raws: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
                for ((id, _), (key, raw)) in found.into_iter().zip(keys.iter().zip(raws)) {
                    match raw {
                        Some(bytes) => sessions.push(decode::<Session>(key, &bytes)?),
                        None => vanished.push(id),
                    }
                }
            }
            // Ids whose records expired through the TTL backstop (or were purged between our
            // reads) are dropped from the index, so it does not grow forever.
            if !vanished.is_empty() {
                let _removed: i64 = self
                    .query(redis::cmd("SREM").arg(&set).arg(&vanished))
                    .await?;
            }
            Ok(sessions)
        })
        .await
    }

    async fn purge_sessions(&self, cutoff: UnixTime) -> StoreResult<usize> {
        observed(&self.metrics, "purge_sessions", async {
            // Walk the per-organization session sets rather than `xgw:orgs`: sessions that
            // point at an organization that does not exist must go too, like in the embedded
            // backend, and only the sets know about them.
            let org_ids = self.scan_ids("org_sessions").await?;
            // One script per organization: atomic against a concurrent duration change or
            // end_session, without holding Redis for the whole keyspace at once.
            let mut purged = 0usize;
            for org_id in org_ids {
                let mut inv = self.scripts.purge_org_sessions.prepare_invoke();
                inv.key(org_key(&org_id))
                    .key(org_sessions_key(&org_id))
                    .arg(cutoff)
                    .arg(PREFIX);
                let n: i64 = self.eval(&inv).await?;
                purged += usize::try_from(n).unwrap_or(0);
            }
            Ok(purged)
        })
        .await
    }
}

#[async_trait]
impl RateLimitStore for RedisStore {
    async fn record_failure(
        &self,
        key: &str,
        now: UnixTime,
        window_secs: i64,
    ) -> StoreResult<FailureCount> {
        observed(&self.metrics, "record_failure", async {
            let ttl = window_secs.max(1).saturating_add(FAILURE_TTL_SLACK_SECS);
            let mut inv = self.scripts.record_failure.prepare_invoke();
            inv.key(fail_key(key)).arg(now).arg(window_secs).arg(ttl);
            let count: i64 = self.eval(&inv).await?;
            Ok(FailureCount {
                count: u32::try_from(count).unwrap_or(u32::MAX),
                last_failure_at: now,
            })
        })
        .await
    }

    async fn failures(
        &self,
        key: &str,
        now: UnixTime,
        window_secs: i64,
    ) -> StoreResult<FailureCount> {
        observed(&self.metrics, "failures", async {
            let k = fail_key(key);
            let (count, first, last): (Option<i64>, Option<i64>, Option<i64>) = self
                .query(
                    redis::cmd("HMGET")
                        .arg(&k)
                        .arg("count")
                        .arg("first")
                        .arg("last"),
                )
                .await?;
            match (count, first, last) {
                (Some(count), Some(first), Some(last))
                    if !window_expired(first, window_secs, now) =>
                {
                    Ok(FailureCount {
                        count: u32::try_from(count).map_err(|e| StoreError::Corrupt {
                            key: k.clone(),
                            reason: e.to_string(),
                        })?,
                        last_failure_at: last,
                    })
                }
                _ => Ok(FailureCount::default()),
            }
        })
        .await
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        observed(&self.metrics, "clear_failures", async {
            let _deleted: i64 = self.query(redis::cmd("DEL").arg(fail_key(key))).await?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn create_token(&self, token: &ServiceToken) -> StoreResult<()> {
        observed(&self.metrics, "create_token", async {
            let mut inv = self.scripts.create_token.prepare_invoke();
            inv.key(token_key(&token.token_hash))
                .key(token_id_key(&token.id))
                .key(user_tokens_key(&token.user_id))
                .arg(encode(token)?)
                .arg(&token.id)
                .arg(&token.token_hash);
            let created: i64 = self.eval(&inv).await?;
            if created == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict("token exists"))
            }
        })
        .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ServiceToken>> {
        observed(
            &self.metrics,
            "token_by_hash",
            self.get_json(&token_key(token_hash)),
        )
        .await
    }

    async fn get_token(&self, id: &str) -> StoreResult<Option<ServiceToken>> {
        observed(&self.metrics, "get_token", async {
            let hash: Option<String> = self.query(redis::cmd("GET").arg(token_id_key(id))).await?;
            match hash {
                Some(hash) => self.get_json(&token_key(&hash)).await,
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_user_tokens(&self, user_id: &str) -> StoreResult<Vec<ServiceToken>> {
        observed(&self.metrics, "list_user_tokens", async {
            let ids: Vec<String> = self
                .query(redis::cmd("SMEMBERS").arg(user_tokens_key(user_id)))
                .await?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let hash: Option<String> =
                    self.query(redis::cmd("GET").arg(token_id_key(&id))).await?;
                if let Some(hash) = hash {
                    if let Some(t) = self.get_json(&token_key(&hash)).await? {
                        out.push(t);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn delete_token(&self, id: &str) -> StoreResult<Option<ServiceToken>> {
        observed(&self.metrics, "delete_token", async {
            let key = token_id_key(id);
            let mut inv = self.scripts.delete_token.prepare_invoke();
            inv.key(&key).arg(PREFIX);
            let raw: Option<Vec<u8>> = self.eval(&inv).await?;
            raw.map(|bytes| decode(&key, &bytes)).transpose()
        })
        .await
    }

    async fn touch_token(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()> {
        observed(&self.metrics, "touch_token", async {
            let mut inv = self.scripts.touch_token.prepare_invoke();
            inv.key(token_key(token_hash)).arg(now).arg(ip);
            let _written: i64 = self.eval(&inv).await?;
            Ok(())
        })
        .await
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

    /// Publishes the invalidation and waits (at most `ACK_TIMEOUT`) until every replica that
    /// received it has applied it. PUBLISH answers how many subscribers got the message; each
    /// of them pushes an ack onto `xgw:ack:{nonce}` after evicting. So when this returns, the
    /// revoked credential is refused on every replica that is listening — "Expire now" and
    /// token deletion take effect at once, not "soon". A replica that does not ack in time
    /// (hung, or its feed is down, in which case it trusts no cache anyway) is counted in
    /// `xgw_invalidation_ack_timeouts_total`.
    async fn publish(&self, invalidation: &Invalidation) -> StoreResult<()> {
        observed(&self.metrics, "publish", async {
            let nonce = hex::encode(rand::random::<[u8; 16]>());
            let receivers: u64 = self
                .query(
                    redis::cmd("PUBLISH")
                        .arg(CHANNEL)
                        .arg(format!("{nonce} {}", invalidation.encode())),
                )
                .await?;
            let key = ack_key(&nonce);
            let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
            let mut pause = Duration::from_millis(1);
            loop {
                let acks: u64 = self.query(redis::cmd("LLEN").arg(&key)).await?;
                if acks >= receivers {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    self.metrics.invalidation_ack_timeouts.inc();
                    tracing::warn!(
                        receivers,
                        acks,
                        "not every replica acknowledged an invalidation in time"
                    );
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            let _: StoreResult<i64> = self.query(redis::cmd("DEL").arg(&key)).await;
            Ok(())
        })
        .await
    }

    async fn watch_invalidations(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = FEED_BACKOFF_START;
        loop {
            let reason = tokio::select! {
                _ = shutdown_requested(&mut shutdown) => break,
                reason = self.follow_feed(on_event, &mut backoff) => reason,
            };
            // While we are not subscribed, revocations from other replicas are not heard:
            // the caller drops its cache (and keeps dropping it on every failed attempt).
            self.metrics.invalidation_feed_up.set(0);
            on_event(InvalidationEvent::Resync);
            tracing::warn!(
                %reason,
                retry_in_ms = backoff.as_millis() as u64,
                "invalidation feed lost"
            );
            tokio::select! {
                _ = shutdown_requested(&mut shutdown) => break,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(FEED_BACKOFF_MAX);
        }
        self.metrics.invalidation_feed_up.set(0);
    }
}

//! Browser sessions on Redis (`SessionStore`): records keyed by token hash, the id and
//! per-organization indexes, and the per-organization purge.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{key, org_key, RedisStore, PREFIX};
use crate::clock::UnixTime;
use crate::store::{
    decode, encode, observed, EndReason, Session, SessionStore, StoreError, StoreResult,
    SECONDS_PER_DAY,
};

/// Cleanup backstop for session keys: the longest session (30 days) plus the longest retention
/// the config accepts (90 days). Shorter, and Redis would drop sessions the sweeper still keeps.
const SESSION_TTL_SECS: i64 = (30 + 90) * SECONDS_PER_DAY;

/// KEYS: session, session_id, org_sessions. ARGV: session JSON, session id, token hash, TTL.
/// Returns 1 if created, 0 if the token hash or the id is already taken.
static CREATE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[4])
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('SADD', KEYS[3], ARGV[2])
-- The newest session lives longest, so refreshing the set's TTL covers every member.
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"#,
    )
});

/// KEYS: session_id. ARGV: session key prefix, reason, now.
/// Returns the session JSON after the call (unchanged if it had already ended: the first
/// reason wins), or nil if there is no such session.
static END_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

/// KEYS: session. ARGV: now, ip. Moves `last_activity_at` forward on a session that has not
/// ended. Returns 1 if it wrote, 0 otherwise.
static TOUCH_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

/// KEYS: org, org_sessions. ARGV: cutoff, key prefix, then up to `PURGE_BATCH` session ids
/// (one SSCAN page of the organization's set).
/// Deletes (all three keys of) each of those sessions whose validity ended before the cutoff;
/// each of them when the organization does not exist. Ids whose keys already vanished (TTL
/// backstop, or purged since the page was read) are dropped from the set without being counted.
/// Returns how many sessions it deleted.
/// Session ids one purge script handles (an SSCAN `COUNT` hint: a page may be a little larger).
const PURGE_BATCH: usize = 500;

static PURGE_ORG_SESSIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
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
"#,
    )
});

fn session_key(token_hash: &str) -> String {
    key("session", token_hash)
}

fn session_id_key(id: &str) -> String {
    key("session_id", id)
}

fn org_sessions_key(org_id: &str) -> String {
    key("org_sessions", org_id)
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

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        observed(&self.metrics, "create_session", async {
            let json = encode(session)?;
            let mut inv = CREATE_SESSION.prepare_invoke();
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
            let mut inv = END_SESSION.prepare_invoke();
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
            let mut inv = TOUCH_SESSION.prepare_invoke();
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
            // One script per page of an organization's set: each is atomic against a concurrent
            // duration change or end_session, and none holds Redis long. (One script over a whole
            // organization of ~50k sessions ran past the command timeout, so its sweep failed
            // every minute and nothing was ever purged.)
            let mut purged = 0usize;
            for org_id in org_ids {
                let set = org_sessions_key(&org_id);
                let mut cursor: u64 = 0;
                loop {
                    let (next, ids): (u64, Vec<String>) = self
                        .query(
                            redis::cmd("SSCAN")
                                .arg(&set)
                                .arg(cursor)
                                .arg("COUNT")
                                .arg(PURGE_BATCH),
                        )
                        .await?;
                    if !ids.is_empty() {
                        let mut inv = PURGE_ORG_SESSIONS.prepare_invoke();
                        inv.key(org_key(&org_id))
                            .key(&set)
                            .arg(cutoff)
                            .arg(PREFIX)
                            .arg(ids);
                        let n: i64 = self.eval(&inv).await?;
                        purged += usize::try_from(n).unwrap_or(0);
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
            Ok(purged)
        })
        .await
    }
}

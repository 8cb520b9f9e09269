//! Service tokens on Redis (`TokenStore`): records keyed by token hash, the id index and
//! each user's set of token ids.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{key, RedisStore, PREFIX};
use crate::clock::UnixTime;
use crate::store::{decode, encode, observed, ServiceToken, StoreError, StoreResult, TokenStore};

/// KEYS: token, token_id, user_tokens. ARGV: token JSON, token id, token hash.
/// Returns 1 if created, 0 if the hash or the id is already taken. Tokens do not expire.
static CREATE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1
"#,
    )
});

/// KEYS: token_id. ARGV: key prefix. Deletes all three keys of the token and returns its JSON,
/// or nil if there is no such token. An undecodable record is reported and left in place,
/// like the embedded backend (whose transaction aborts on the decode error).
static DELETE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

/// KEYS: token. ARGV: now, ip. Moves `last_used_at` forward. Returns 1 if it wrote.
static TOUCH_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

fn token_key(token_hash: &str) -> String {
    key("token", token_hash)
}

fn token_id_key(id: &str) -> String {
    key("token_id", id)
}

fn user_tokens_key(user_id: &str) -> String {
    key("user_tokens", user_id)
}

#[async_trait]
impl TokenStore for RedisStore {
    async fn create_token(&self, token: &ServiceToken) -> StoreResult<()> {
        observed(&self.metrics, "create_token", async {
            let mut inv = CREATE_TOKEN.prepare_invoke();
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
            let mut inv = DELETE_TOKEN.prepare_invoke();
            inv.key(&key).arg(PREFIX);
            let raw: Option<Vec<u8>> = self.eval(&inv).await?;
            raw.map(|bytes| decode(&key, &bytes)).transpose()
        })
        .await
    }

    async fn touch_token(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()> {
        observed(&self.metrics, "touch_token", async {
            let mut inv = TOUCH_TOKEN.prepare_invoke();
            inv.key(token_key(token_hash)).arg(now).arg(ip);
            let _written: i64 = self.eval(&inv).await?;
            Ok(())
        })
        .await
    }
}

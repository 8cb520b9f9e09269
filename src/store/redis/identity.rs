//! Linked sign-in identities on Redis (`IdentityStore`): one record per provider account and a
//! per-user hash, changed together by a script.
//!
//! - `xgw:identity:{provider}:{subject}` — the identity JSON. The provider is one of a fixed set
//!   of names without `:`, so any subject (with `:`, `{`, spaces…) gives one key no other
//!   (provider, subject) pair gives.
//! - `xgw:user_identities:{user_id}` — a hash, provider name -> subject.
//!
//! Link and unlink are Lua scripts, so "is this subject taken / is this the last identity"
//! and the write are one step on every replica. Scripts only decode the JSON (to read its
//! `user_id`), never re-encode it. A hash entry whose record is gone or names another user
//! (possible only if keys were deleted by hand) is dropped rather than trusted, as in the
//! embedded backend.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{key, RedisStore, PREFIX};
use crate::store::identity::{
    sort_by_provider, IdentityStore, LinkOutcome, LinkedIdentity, Provider, UnlinkOutcome,
};
use crate::store::{decode, encode, observed, StoreError, StoreResult};

/// `{PREFIX}identity:`: the scripts append `{provider}:{subject}` to it.
fn identity_prefix() -> String {
    format!("{PREFIX}identity:")
}

fn identity_key(provider: Provider, subject: &str) -> String {
    format!("{}{}:{subject}", identity_prefix(), provider.as_str())
}

fn user_identities_key(user_id: &str) -> String {
    key("user_identities", user_id)
}

/// Lua helper: the `user_id` in the identity record at `key`; false when there is no record,
/// nil when it cannot be decoded (the caller then answers CORRUPT).
const OWNER_OF_FN: &str = r#"
local function owner_of(key)
  local raw = redis.call('GET', key)
  if not raw then return false end
  local ok, i = pcall(cjson.decode, raw)
  if ok and type(i) == 'table' and type(i.user_id) == 'string' then return i.user_id end
  return nil
end
"#;

/// KEYS: identity, user_identities. ARGV: user id, provider, subject, identity JSON, identity
/// key prefix. Returns 0 when linked, 1 when the subject belongs to another user, 2 when the user
/// already has this provider (also for the very same subject).
static LINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{OWNER_OF_FN}{}",
        r#"
local owner = owner_of(KEYS[1])
if owner == nil then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
if owner then
  if owner == ARGV[1] then return 2 end
  return 1
end
local current = redis.call('HGET', KEYS[2], ARGV[2])
if current then
  local key = ARGV[5] .. ARGV[2] .. ':' .. current
  local current_owner = owner_of(key)
  if current_owner == nil then return redis.error_reply('CORRUPT ' .. key) end
  -- A hash entry whose record is gone or names someone else is stale: overwritten below.
  if current_owner == ARGV[1] then return 2 end
end
redis.call('SET', KEYS[1], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 0
"#
    ))
});

/// KEYS: user_identities. ARGV: user id, provider, require another ('1' or '0'), identity key
/// prefix. Returns `{code, json}`: `{1, json}` when unlinked (json: the removed record), `{0, ''}`
/// when the user has no identity for the provider, `{2, ''}` when refused as the last one.
/// Identities of providers this version does not know still count as "another".
static UNLINK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local entries = redis.call('HGETALL', KEYS[1])
local valid, target, target_raw, stale = 0, nil, nil, {}
for i = 1, #entries, 2 do
  local provider, subject = entries[i], entries[i + 1]
  local key = ARGV[4] .. provider .. ':' .. subject
  local raw = redis.call('GET', key)
  local owner = false
  if raw then
    local ok, rec = pcall(cjson.decode, raw)
    if not ok or type(rec) ~= 'table' or type(rec.user_id) ~= 'string' then
      return redis.error_reply('CORRUPT ' .. key)
    end
    owner = rec.user_id
  end
  if owner == ARGV[1] then
    valid = valid + 1
    if provider == ARGV[2] then target, target_raw = key, raw end
  else
    table.insert(stale, provider)
  end
end
for _, p in ipairs(stale) do redis.call('HDEL', KEYS[1], p) end
if not target then return {0, ''} end
if ARGV[3] == '1' and valid <= 1 then return {2, ''} end
redis.call('DEL', target)
redis.call('HDEL', KEYS[1], ARGV[2])
return {1, target_raw}
"#,
    )
});

#[async_trait]
impl IdentityStore for RedisStore {
    async fn link_identity(&self, identity: &LinkedIdentity) -> StoreResult<LinkOutcome> {
        observed(&self.metrics, "link_identity", async {
            identity.check_sizes()?;
            let mut inv = LINK.prepare_invoke();
            inv.key(identity_key(identity.provider, &identity.subject))
                .key(user_identities_key(&identity.user_id))
                .arg(&identity.user_id)
                .arg(identity.provider.as_str())
                .arg(&identity.subject)
                .arg(encode(identity)?)
                .arg(identity_prefix());
            match self.eval::<i64>(&inv).await? {
                0 => Ok(LinkOutcome::Linked),
                1 => Ok(LinkOutcome::SubjectInUse),
                _ => Ok(LinkOutcome::ProviderAlreadyLinked),
            }
        })
        .await
    }

    async fn identity_by_subject(
        &self,
        provider: Provider,
        subject: &str,
    ) -> StoreResult<Option<LinkedIdentity>> {
        observed(
            &self.metrics,
            "identity_by_subject",
            self.get_json(&identity_key(provider, subject)),
        )
        .await
    }

    async fn list_user_identities(&self, user_id: &str) -> StoreResult<Vec<LinkedIdentity>> {
        observed(&self.metrics, "list_user_identities", async {
            let entries: Vec<(String, String)> = self
                .query(redis::cmd("HGETALL").arg(user_identities_key(user_id)))
                .await?;
            // Names this version does not know (a newer replica's providers) are not listed.
            let keys: Vec<String> = entries
                .iter()
                .filter_map(|(p, subject)| Provider::parse(p).map(|p| identity_key(p, subject)))
                .collect();
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let raws: Vec<Option<Vec<u8>>> = self.query(redis::cmd("MGET").arg(&keys)).await?;
            let mut out = Vec::with_capacity(keys.len());
            for (key, raw) in keys.iter().zip(raws) {
                if let Some(bytes) = raw {
                    let identity: LinkedIdentity = decode(key, &bytes)?;
                    // An entry whose record names someone else is stale (see the module doc).
                    if identity.user_id == user_id {
                        out.push(identity);
                    }
                }
            }
            sort_by_provider(&mut out);
            Ok(out)
        })
        .await
    }

    async fn unlink_identity(
        &self,
        user_id: &str,
        provider: Provider,
        require_another: bool,
    ) -> StoreResult<UnlinkOutcome> {
        observed(&self.metrics, "unlink_identity", async {
            let hash = user_identities_key(user_id);
            let mut inv = UNLINK.prepare_invoke();
            inv.key(&hash)
                .arg(user_id)
                .arg(provider.as_str())
                .arg(if require_another { "1" } else { "0" })
                .arg(identity_prefix());
            let (code, raw): (i64, Vec<u8>) = self.eval(&inv).await?;
            match code {
                0 => Ok(UnlinkOutcome::NotLinked),
                1 => Ok(UnlinkOutcome::Unlinked(decode(&hash, &raw)?)),
                2 => Ok(UnlinkOutcome::LastIdentity),
                other => Err(StoreError::Unavailable(format!(
                    "redis: the unlink script answered {other}"
                ))),
            }
        })
        .await
    }
}

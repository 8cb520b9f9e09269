//! Organizations, users and their memberships on Redis (`DirectoryStore`): the scripts that
//! keep `xgw:user_email:*` and `xgw:org_members:*` in step with the user records.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{key, org_key, RedisStore, PREFIX};
use crate::store::{
    decode, encode, observed, DirectoryStore, Organization, StoreError, StoreResult, User,
};

/// KEYS: org, orgs set. ARGV: org id, org JSON. Returns 1 if created, 0 if the id exists.
static CREATE_ORG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('SET', KEYS[1], ARGV[2], 'NX') then
  redis.call('SADD', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    )
});

/// Lua helper: the organization ids of a decoded user's memberships, as a set-like table.
/// Decoding only (user records are never re-encoded in Lua, see the backend's module doc in
/// `mod.rs`).
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
static CREATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{MEMBER_ORGS_FN}{}",
        r#"
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
"#
    ))
});

/// KEYS: org. ARGV: field, value, `number` or `string`. Sets one field of an organization record
/// in place (session duration, two-factor policy); returns the updated JSON, or nil if there is
/// no such organization. (Organization records hold no arrays, so cjson may re-encode them.)
static SET_ORG_FIELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, org = pcall(cjson.decode, raw)
if not ok or type(org) ~= 'table' then return redis.error_reply('CORRUPT ' .. KEYS[1]) end
local value = ARGV[2]
if ARGV[3] == 'number' then value = tonumber(value) end
org[ARGV[1]] = value
raw = cjson.encode(org)
redis.call('SET', KEYS[1], raw, 'KEEPTTL')
return raw
"#,
    )
});

/// The value of one organization field, as `SET_ORG_FIELD` writes it.
pub(super) enum OrgField<'a> {
    Number(u32),
    Text(&'a str),
}

impl RedisStore {
    /// Sets one field of an organization record atomically; `None` if there is no such
    /// organization.
    pub(super) async fn set_org_field(
        &self,
        org_id: &str,
        field: &str,
        value: OrgField<'_>,
    ) -> StoreResult<Option<Organization>> {
        let key = org_key(org_id);
        let mut inv = SET_ORG_FIELD.prepare_invoke();
        inv.key(&key).arg(field);
        match value {
            OrgField::Number(n) => inv.arg(n).arg("number"),
            OrgField::Text(t) => inv.arg(t).arg("string"),
        };
        let raw: Option<Vec<u8>> = self.eval(&inv).await?;
        raw.map(|bytes| decode(&key, &bytes)).transpose()
    }
}

/// KEYS: user, new email, old email. ARGV: expected version, new JSON, user id, key prefix.
/// Compare-and-set on the user's `version` (decoded, never re-encoded: user records hold
/// arrays, which cjson cannot round-trip). Returns 1 if written, 0 if the version moved or the
/// user is gone, 2 if the new email belongs to someone else. Moves the user between
/// `org_members:{org}` sets as its memberships changed, in the same step.
static UPDATE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{MEMBER_ORGS_FN}{}",
        r#"
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
"#
    ))
});

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

#[async_trait]
impl DirectoryStore for RedisStore {
    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        observed(&self.metrics, "create_org", async {
            let json = encode(org)?;
            let mut inv = CREATE_ORG.prepare_invoke();
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
        observed(
            &self.metrics,
            "set_session_duration",
            self.set_org_field(org_id, "session_duration_days", OrgField::Number(days)),
        )
        .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        observed(&self.metrics, "create_user", async {
            let json = encode(user)?;
            let mut inv = CREATE_USER.prepare_invoke();
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
            let mut inv = UPDATE_USER.prepare_invoke();
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

//! Two-factor state on Redis.
//!
//! - `xgw:2fa:{user}` — the active second factor, JSON (no arrays, so Lua never re-encodes it);
//! - `xgw:2fa_backup:{user}` — a set of backup code hashes: `SREM` consumes one atomically;
//! - `xgw:2fa_step:{user}` — the last accepted TOTP step, moved forward only by a script;
//! - `xgw:ticket:{key}` — a ticket's JSON with a TTL a minute past its expiry (a backstop:
//!   validity is always decided by `expires_at` against the caller's `now`).

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::directory::OrgField;
use super::{key, RedisStore};
use crate::clock::UnixTime;
use crate::store::two_factor::{Ticket, TicketStore, TwoFactor, TwoFactorPolicy, TwoFactorStore};
use crate::store::{decode, encode, observed, Organization, StoreResult};

/// How long Redis keeps a ticket after it expired (backstop only).
const TICKET_TTL_SLACK_SECS: i64 = 60;

fn two_factor_key(user_id: &str) -> String {
    key("2fa", user_id)
}

fn backup_key(user_id: &str) -> String {
    key("2fa_backup", user_id)
}

fn step_key(user_id: &str) -> String {
    key("2fa_step", user_id)
}

fn ticket_key(k: &str) -> String {
    key("ticket", k)
}

/// KEYS: method, backup set. ARGV: method JSON (empty: delete the method), code hashes...
/// Replaces the method (if given) and the whole backup set in one step.
static REPLACE_TWO_FACTOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[1] ~= '' then redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('DEL', KEYS[2])
for i = 2, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
"#,
    )
});

/// KEYS: method, backup set. Returns 1 if there was a method.
static DISABLE_TWO_FACTOR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local had = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return had
"#,
    )
});

/// KEYS: step. ARGV: step. Returns 1 if the step is newer than the last accepted one.
static ACCEPT_STEP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('GET', KEYS[1]))
local step = tonumber(ARGV[1])
if last == nil or step > last then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"#,
    )
});

/// KEYS: ticket. ARGV: now, max attempts. Returns the attempts after this failure, or nil if
/// there is no live ticket; destroys the ticket at the limit.
static FAIL_TICKET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local ok, t = pcall(cjson.decode, raw)
if not ok or type(t) ~= 'table' or type(t.expires_at) ~= 'number' then
  return redis.error_reply('CORRUPT ' .. KEYS[1])
end
if tonumber(ARGV[1]) >= t.expires_at then
  redis.call('DEL', KEYS[1])
  return false
end
local attempts = (tonumber(t.attempts) or 0) + 1
if attempts >= tonumber(ARGV[2]) then
  redis.call('DEL', KEYS[1])
else
  t.attempts = attempts
  redis.call('SET', KEYS[1], cjson.encode(t), 'KEEPTTL')
end
return attempts
"#,
    )
});

#[async_trait]
impl TwoFactorStore for RedisStore {
    async fn set_two_factor_policy(
        &self,
        org_id: &str,
        policy: TwoFactorPolicy,
    ) -> StoreResult<Option<Organization>> {
        observed(&self.metrics, "set_two_factor_policy", async {
            let policy = match serde_json::to_value(policy) {
                Ok(serde_json::Value::String(p)) => p,
                _ => "off".to_string(),
            };
            self.set_org_field(org_id, "two_factor", OrgField::Text(&policy))
                .await
        })
        .await
    }

    async fn get_two_factor(&self, user_id: &str) -> StoreResult<Option<TwoFactor>> {
        observed(
            &self.metrics,
            "get_two_factor",
            self.get_json(&two_factor_key(user_id)),
        )
        .await
    }

    async fn enable_two_factor(&self, tf: &TwoFactor, hashes: &[String]) -> StoreResult<()> {
        observed(&self.metrics, "enable_two_factor", async {
            let mut inv = REPLACE_TWO_FACTOR.prepare_invoke();
            inv.key(two_factor_key(&tf.user_id))
                .key(backup_key(&tf.user_id))
                .arg(encode(tf)?);
            for h in hashes {
                inv.arg(h);
            }
            let _: i64 = self.eval(&inv).await?;
            Ok(())
        })
        .await
    }

    async fn disable_two_factor(&self, user_id: &str) -> StoreResult<bool> {
        observed(&self.metrics, "disable_two_factor", async {
            let mut inv = DISABLE_TWO_FACTOR.prepare_invoke();
            inv.key(two_factor_key(user_id)).key(backup_key(user_id));
            let had: i64 = self.eval(&inv).await?;
            Ok(had == 1)
        })
        .await
    }

    async fn replace_backup_codes(&self, user_id: &str, hashes: &[String]) -> StoreResult<()> {
        observed(&self.metrics, "replace_backup_codes", async {
            let mut inv = REPLACE_TWO_FACTOR.prepare_invoke();
            inv.key(two_factor_key(user_id))
                .key(backup_key(user_id))
                .arg("");
            for h in hashes {
                inv.arg(h);
            }
            let _: i64 = self.eval(&inv).await?;
            Ok(())
        })
        .await
    }

    async fn consume_backup_code(&self, user_id: &str, hash: &str) -> StoreResult<bool> {
        observed(&self.metrics, "consume_backup_code", async {
            let removed: i64 = self
                .query(redis::cmd("SREM").arg(backup_key(user_id)).arg(hash))
                .await?;
            Ok(removed == 1)
        })
        .await
    }

    async fn backup_codes_remaining(&self, user_id: &str) -> StoreResult<usize> {
        observed(&self.metrics, "backup_codes_remaining", async {
            let n: usize = self
                .query(redis::cmd("SCARD").arg(backup_key(user_id)))
                .await?;
            Ok(n)
        })
        .await
    }

    async fn accept_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
        observed(&self.metrics, "accept_totp_step", async {
            let mut inv = ACCEPT_STEP.prepare_invoke();
            inv.key(step_key(user_id)).arg(step);
            let accepted: i64 = self.eval(&inv).await?;
            Ok(accepted == 1)
        })
        .await
    }
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn put_ticket(&self, k: &str, ticket: &Ticket, now: UnixTime) -> StoreResult<()> {
        observed(&self.metrics, "put_ticket", async {
            let ttl = (ticket.expires_at - now).max(0) + TICKET_TTL_SLACK_SECS;
            let _: () = self
                .query(
                    redis::cmd("SET")
                        .arg(ticket_key(k))
                        .arg(encode(ticket)?)
                        .arg("EX")
                        .arg(ttl),
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn get_ticket(&self, k: &str, now: UnixTime) -> StoreResult<Option<Ticket>> {
        observed(&self.metrics, "get_ticket", async {
            let t: Option<Ticket> = self.get_json(&ticket_key(k)).await?;
            Ok(t.filter(|t| t.is_live(now)))
        })
        .await
    }

    async fn fail_ticket(
        &self,
        k: &str,
        now: UnixTime,
        max_attempts: u32,
    ) -> StoreResult<Option<u32>> {
        observed(&self.metrics, "fail_ticket", async {
            let mut inv = FAIL_TICKET.prepare_invoke();
            inv.key(ticket_key(k)).arg(now).arg(max_attempts);
            let attempts: Option<u32> = self.eval(&inv).await?;
            Ok(attempts)
        })
        .await
    }

    async fn take_ticket(&self, k: &str, now: UnixTime) -> StoreResult<Option<Ticket>> {
        observed(&self.metrics, "take_ticket", async {
            let key = ticket_key(k);
            let raw: Option<Vec<u8>> = self.query(redis::cmd("GETDEL").arg(&key)).await?;
            let ticket: Option<Ticket> = raw.map(|b| decode(&key, &b)).transpose()?;
            Ok(ticket.filter(|t| t.is_live(now)))
        })
        .await
    }

    async fn purge_tickets(&self, _now: UnixTime) -> StoreResult<usize> {
        // Their TTL (a minute past expiry) already removes them.
        observed(&self.metrics, "purge_tickets", async { Ok(0) }).await
    }
}

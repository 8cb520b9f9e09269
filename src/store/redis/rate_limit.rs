//! Brute-force counters on Redis (`RateLimitStore`): one hash per key, counted by a script.

use std::sync::LazyLock;

use async_trait::async_trait;
use redis::Script;

use super::{key, RedisStore};
use crate::clock::UnixTime;
use crate::store::{
    observed, window_expired, FailureCount, RateLimitStore, StoreError, StoreResult,
};

/// Extra seconds a failure window is kept after it ran out (backstop only, see the backend's
/// module doc in `mod.rs`).
const FAILURE_TTL_SLACK_SECS: i64 = 60;

/// KEYS: fail. ARGV: now, window seconds, TTL. Counts one failure in a fixed window that
/// starts at the first failure and starts over once it ran out (`window_expired`).
/// Returns the count after this failure.
static RECORD_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

fn fail_key(k: &str) -> String {
    key("fail", k)
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
            let mut inv = RECORD_FAILURE.prepare_invoke();
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

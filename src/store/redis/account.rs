//! The Redis backend's avatars and audit log.
//!
//! - `xgw:avatar:{user_id}` is a hash (`content_type`, `etag`, `updated_at`, `data`), written
//!   by one `HSET` after a `DEL` in a `MULTI`, so a reader never sees half of two images.
//! - `xgw:audit:{org_id}` is a sorted set whose members are `{id} {entry JSON}`, all with
//!   score 0: Redis then orders them by bytes, and as audit ids start with the time (and have
//!   one length) that is time order. A page is one `ZREVRANGEBYLEX` below `(before`, the
//!   purge one `ZREMRANGEBYLEX` below `audit_id_floor(cutoff)` per organization. The JSON is
//!   written and read by Rust only, never by Lua.

use async_trait::async_trait;

use super::{key, RedisStore};
use crate::clock::UnixTime;
use crate::store::{
    audit_id_floor, decode, encode, observed, AuditEntry, AuditStore, Avatar, AvatarStore,
    StoreError, StoreResult, AUDIT_PAGE_MAX,
};

fn avatar_key(user_id: &str) -> String {
    key("avatar", user_id)
}

fn audit_key(org_id: &str) -> String {
    key("audit", org_id)
}

fn corrupt(key: &str, reason: &str) -> StoreError {
    StoreError::Corrupt {
        key: key.to_string(),
        reason: reason.to_string(),
    }
}

#[async_trait]
impl AvatarStore for RedisStore {
    async fn put_avatar(&self, user_id: &str, avatar: &Avatar) -> StoreResult<()> {
        observed(&self.metrics, "put_avatar", async {
            let k = avatar_key(user_id);
            let mut pipe = redis::pipe();
            pipe.atomic()
                .del(&k)
                .ignore()
                .hset_multiple(
                    &k,
                    &[
                        ("content_type", avatar.content_type.as_bytes()),
                        ("etag", avatar.etag.as_bytes()),
                        ("updated_at", avatar.updated_at.to_string().as_bytes()),
                        ("data", avatar.data.as_slice()),
                    ],
                )
                .ignore();
            self.query_pipe::<()>(&pipe).await
        })
        .await
    }

    async fn get_avatar(&self, user_id: &str) -> StoreResult<Option<Avatar>> {
        observed(&self.metrics, "get_avatar", async {
            let k = avatar_key(user_id);
            type Fields = (Option<String>, Option<String>, Option<i64>, Option<Vec<u8>>);
            let fields: Fields = self
                .query(
                    redis::cmd("HMGET")
                        .arg(&k)
                        .arg("content_type")
                        .arg("etag")
                        .arg("updated_at")
                        .arg("data"),
                )
                .await?;
            match fields {
                (None, None, None, None) => Ok(None),
                (Some(content_type), Some(etag), Some(updated_at), Some(data)) => {
                    Ok(Some(Avatar {
                        content_type,
                        data,
                        etag,
                        updated_at,
                    }))
                }
                _ => Err(corrupt(&k, "an avatar hash lacks a field")),
            }
        })
        .await
    }

    async fn delete_avatar(&self, user_id: &str) -> StoreResult<bool> {
        observed(&self.metrics, "delete_avatar", async {
            let deleted: i64 = self
                .query(redis::cmd("DEL").arg(avatar_key(user_id)))
                .await?;
            Ok(deleted > 0)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for RedisStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        entry.check_id()?;
        observed(&self.metrics, "append_audit", async {
            let mut member = format!("{} ", entry.id).into_bytes();
            member.extend(encode(entry)?);
            let _added: i64 = self
                .query(
                    redis::cmd("ZADD")
                        .arg(audit_key(&entry.org_id))
                        .arg(0)
                        .arg(member),
                )
                .await?;
            Ok(())
        })
        .await
    }

    async fn list_audit(
        &self,
        org_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        observed(&self.metrics, "list_audit", async {
            let k = audit_key(org_id);
            // `(id` excludes `id` itself and, as every member is longer, its own member too.
            let max = match before {
                Some(id) => format!("({id}"),
                None => "+".to_string(),
            };
            let members: Vec<Vec<u8>> = self
                .query(
                    redis::cmd("ZREVRANGEBYLEX")
                        .arg(&k)
                        .arg(max)
                        .arg("-")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(limit.min(AUDIT_PAGE_MAX)),
                )
                .await?;
            members
                .iter()
                .map(|m| {
                    let json = m
                        .iter()
                        .position(|&b| b == b' ')
                        .map(|at| &m[at + 1..])
                        .ok_or_else(|| corrupt(&k, "an audit member lacks its id prefix"))?;
                    decode(&k, json)
                })
                .collect()
        })
        .await
    }

    async fn purge_audit(&self, cutoff: UnixTime) -> StoreResult<usize> {
        observed(&self.metrics, "purge_audit", async {
            let below = format!("({}", audit_id_floor(cutoff));
            let mut purged = 0usize;
            for org_id in self.scan_ids("audit").await? {
                let n: i64 = self
                    .query(
                        redis::cmd("ZREMRANGEBYLEX")
                            .arg(audit_key(&org_id))
                            .arg("-")
                            .arg(&below),
                    )
                    .await?;
                purged += usize::try_from(n).unwrap_or(0);
            }
            Ok(purged)
        })
        .await
    }
}

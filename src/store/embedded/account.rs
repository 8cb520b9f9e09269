//! The embedded backend's avatars and audit log.
//!
//! | table           | key -> value                                        |
//! |-----------------|-----------------------------------------------------|
//! | `avatars`       | user id -> image bytes                              |
//! | `avatar_meta`   | user id -> `{"content_type","etag","updated_at"}`   |
//! | `audit`         | `{org id}\0{audit id}` -> entry JSON                |
//! | `audit_by_time` | audit id -> org id (ids sort by time: the purge walks it from the start) |
//!
//! An organization's page is a reverse range over its key prefix; as audit ids sort by time,
//! that is newest first without decoding anything but the page.

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{db_err, get_json, EmbeddedStore};
use crate::clock::UnixTime;
use crate::store::{
    audit_id_floor, decode, encode, AuditEntry, AuditStore, Avatar, AvatarStore, StoreResult,
    AUDIT_PAGE_MAX,
};

pub(super) const AVATARS: TableDefinition<&str, &[u8]> = TableDefinition::new("avatars");
pub(super) const AVATAR_META: TableDefinition<&str, &[u8]> = TableDefinition::new("avatar_meta");
pub(super) const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
pub(super) const AUDIT_BY_TIME: TableDefinition<&str, &str> = TableDefinition::new("audit_by_time");

/// Separates the organization from the entry id in `audit` keys; sorts below every id byte.
const SEP: char = '\0';

#[derive(Serialize, Deserialize)]
struct AvatarMeta {
    content_type: String,
    etag: String,
    updated_at: UnixTime,
}

fn audit_key(org_id: &str, id: &str) -> String {
    format!("{org_id}{SEP}{id}")
}

#[async_trait]
impl AvatarStore for EmbeddedStore {
    async fn put_avatar(&self, user_id: &str, avatar: &Avatar) -> StoreResult<()> {
        let user_id = user_id.to_string();
        let meta = encode(&AvatarMeta {
            content_type: avatar.content_type.clone(),
            etag: avatar.etag.clone(),
            updated_at: avatar.updated_at,
        })?;
        let data = avatar.data.clone();
        self.run("put_avatar", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut images = txn.open_table(AVATARS).map_err(db_err)?;
                let mut metas = txn.open_table(AVATAR_META).map_err(db_err)?;
                images
                    .insert(user_id.as_str(), data.as_slice())
                    .map_err(db_err)?;
                metas
                    .insert(user_id.as_str(), meta.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn get_avatar(&self, user_id: &str) -> StoreResult<Option<Avatar>> {
        let user_id = user_id.to_string();
        self.run("get_avatar", move |db| {
            let Some(meta) = get_json::<AvatarMeta>(db, AVATAR_META, &user_id)? else {
                return Ok(None);
            };
            let txn = db.begin_read().map_err(db_err)?;
            let images = txn.open_table(AVATARS).map_err(db_err)?;
            let data = match images.get(user_id.as_str()).map_err(db_err)? {
                Some(v) => v.value().to_vec(),
                None => return Ok(None),
            };
            Ok(Some(Avatar {
                content_type: meta.content_type,
                data,
                etag: meta.etag,
                updated_at: meta.updated_at,
            }))
        })
        .await
    }

    async fn delete_avatar(&self, user_id: &str) -> StoreResult<bool> {
        let user_id = user_id.to_string();
        self.run("delete_avatar", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let existed = {
                let mut images = txn.open_table(AVATARS).map_err(db_err)?;
                let mut metas = txn.open_table(AVATAR_META).map_err(db_err)?;
                let image = images.remove(user_id.as_str()).map_err(db_err)?.is_some();
                let meta = metas.remove(user_id.as_str()).map_err(db_err)?.is_some();
                image || meta
            };
            txn.commit().map_err(db_err)?;
            Ok(existed)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for EmbeddedStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        entry.check_id()?;
        let key = audit_key(&entry.org_id, &entry.id);
        let bytes = encode(entry)?;
        let (id, org_id) = (entry.id.clone(), entry.org_id.clone());
        self.run("append_audit", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
                let mut by_time = txn.open_table(AUDIT_BY_TIME).map_err(db_err)?;
                audit
                    .insert(key.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
                by_time
                    .insert(id.as_str(), org_id.as_str())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn list_audit(
        &self,
        org_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let start = audit_key(org_id, "");
        let end = match before {
            Some(id) => audit_key(org_id, id),
            // Every key of the organization sorts below its prefix followed by \u{1}.
            None => format!("{org_id}\u{1}"),
        };
        let limit = limit.min(AUDIT_PAGE_MAX);
        self.run("list_audit", move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let audit = txn.open_table(AUDIT).map_err(db_err)?;
            let mut out = Vec::with_capacity(limit);
            for item in audit
                .range(start.as_str()..end.as_str())
                .map_err(db_err)?
                .rev()
                .take(limit)
            {
                let (k, v) = item.map_err(db_err)?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn purge_audit(&self, cutoff: UnixTime) -> StoreResult<usize> {
        let floor = audit_id_floor(cutoff);
        self.run("purge_audit", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let purged = {
                let mut audit = txn.open_table(AUDIT).map_err(db_err)?;
                let mut by_time = txn.open_table(AUDIT_BY_TIME).map_err(db_err)?;
                let mut doomed = Vec::new();
                for item in by_time.range(..floor.as_str()).map_err(db_err)? {
                    let (id, org) = item.map_err(db_err)?;
                    doomed.push((id.value().to_string(), org.value().to_string()));
                }
                for (id, org) in &doomed {
                    audit.remove(audit_key(org, id).as_str()).map_err(db_err)?;
                    by_time.remove(id.as_str()).map_err(db_err)?;
                }
                doomed.len()
            };
            txn.commit().map_err(db_err)?;
            Ok(purged)
        })
        .await
    }
}

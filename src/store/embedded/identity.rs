//! Linked sign-in identities in the redb file: every operation one write (or read) transaction.
//!
//! | table             | key -> value                                  |
//! |-------------------|-----------------------------------------------|
//! | `identities`      | (provider, subject) -> identity JSON          |
//! | `user_identities` | (user id, provider) -> subject                |
//!
//! Tuple keys, so no subject or user id needs escaping. Both tables change in the same
//! transaction; should they ever disagree (a hand-edited file), an index entry without its
//! identity is dropped rather than trusted.

use async_trait::async_trait;
use redb::{ReadableTable, Table, TableDefinition};

use super::{db_err, EmbeddedStore};
use crate::store::identity::{
    sort_by_provider, IdentityStore, LinkOutcome, LinkedIdentity, Provider, UnlinkOutcome,
};
use crate::store::{decode, encode, StoreResult};

pub(super) const IDENTITIES: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("identities");
pub(super) const USER_IDENTITIES: TableDefinition<(&str, &str), &str> =
    TableDefinition::new("user_identities");

fn record_key(provider: Provider, subject: &str) -> String {
    format!("identity:{}:{subject}", provider.as_str())
}

/// The identity stored for (provider, subject), if any.
fn read_identity(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    provider: Provider,
    subject: &str,
) -> StoreResult<Option<LinkedIdentity>> {
    match table.get((provider.as_str(), subject)).map_err(db_err)? {
        Some(v) => Ok(Some(decode(&record_key(provider, subject), v.value())?)),
        None => Ok(None),
    }
}

/// The user's identities as the index lists them, each checked against its record. Index
/// entries whose record is gone or names another user are returned in `stale`.
fn user_identities(
    index: &impl ReadableTable<(&'static str, &'static str), &'static str>,
    records: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    user_id: &str,
) -> StoreResult<(Vec<LinkedIdentity>, Vec<Provider>)> {
    let mut found = Vec::new();
    let mut stale = Vec::new();
    for provider in Provider::ALL {
        let Some(subject) = index
            .get((user_id, provider.as_str()))
            .map_err(db_err)?
            .map(|v| v.value().to_string())
        else {
            continue;
        };
        match read_identity(records, provider, &subject)? {
            Some(identity) if identity.user_id == user_id => found.push(identity),
            _ => stale.push(provider),
        }
    }
    sort_by_provider(&mut found);
    Ok((found, stale))
}

fn drop_stale(
    index: &mut Table<(&'static str, &'static str), &'static str>,
    user_id: &str,
    stale: &[Provider],
) -> StoreResult<()> {
    for provider in stale {
        index.remove((user_id, provider.as_str())).map_err(db_err)?;
    }
    Ok(())
}

#[async_trait]
impl IdentityStore for EmbeddedStore {
    async fn link_identity(&self, identity: &LinkedIdentity) -> StoreResult<LinkOutcome> {
        let identity = identity.clone();
        self.run("link_identity", move |db| {
            identity.check_sizes()?;
            let bytes = encode(&identity)?;
            let provider = identity.provider.as_str();
            let user_id = identity.user_id.as_str();
            let txn = db.begin_write().map_err(db_err)?;
            let outcome = {
                let mut records = txn.open_table(IDENTITIES).map_err(db_err)?;
                let mut index = txn.open_table(USER_IDENTITIES).map_err(db_err)?;
                let owner = read_identity(&records, identity.provider, &identity.subject)?;
                let (current, stale) = user_identities(&index, &records, user_id)?;
                drop_stale(&mut index, user_id, &stale)?;
                match owner {
                    Some(owner) if owner.user_id != identity.user_id => LinkOutcome::SubjectInUse,
                    Some(_) => LinkOutcome::ProviderAlreadyLinked,
                    None if current.iter().any(|i| i.provider == identity.provider) => {
                        LinkOutcome::ProviderAlreadyLinked
                    }
                    None => {
                        records
                            .insert((provider, identity.subject.as_str()), bytes.as_slice())
                            .map_err(db_err)?;
                        index
                            .insert((user_id, provider), identity.subject.as_str())
                            .map_err(db_err)?;
                        LinkOutcome::Linked
                    }
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(outcome)
        })
        .await
    }

    async fn identity_by_subject(
        &self,
        provider: Provider,
        subject: &str,
    ) -> StoreResult<Option<LinkedIdentity>> {
        let subject = subject.to_string();
        self.run("identity_by_subject", move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let records = txn.open_table(IDENTITIES).map_err(db_err)?;
            read_identity(&records, provider, &subject)
        })
        .await
    }

    async fn list_user_identities(&self, user_id: &str) -> StoreResult<Vec<LinkedIdentity>> {
        let user_id = user_id.to_string();
        self.run("list_user_identities", move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let index = txn.open_table(USER_IDENTITIES).map_err(db_err)?;
            let records = txn.open_table(IDENTITIES).map_err(db_err)?;
            let (found, _stale) = user_identities(&index, &records, &user_id)?;
            Ok(found)
        })
        .await
    }

    async fn unlink_identity(
        &self,
        user_id: &str,
        provider: Provider,
        require_another: bool,
    ) -> StoreResult<UnlinkOutcome> {
        let user_id = user_id.to_string();
        self.run("unlink_identity", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let outcome = {
                let mut records = txn.open_table(IDENTITIES).map_err(db_err)?;
                let mut index = txn.open_table(USER_IDENTITIES).map_err(db_err)?;
                let (current, stale) = user_identities(&index, &records, &user_id)?;
                drop_stale(&mut index, &user_id, &stale)?;
                match current.iter().find(|i| i.provider == provider) {
                    None => UnlinkOutcome::NotLinked,
                    Some(_) if require_another && current.len() <= 1 => UnlinkOutcome::LastIdentity,
                    Some(identity) => {
                        records
                            .remove((provider.as_str(), identity.subject.as_str()))
                            .map_err(db_err)?;
                        index
                            .remove((user_id.as_str(), provider.as_str()))
                            .map_err(db_err)?;
                        UnlinkOutcome::Unlinked(identity.clone())
                    }
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(outcome)
        })
        .await
    }
}

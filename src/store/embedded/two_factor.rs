//! Two-factor state in the redb file: every operation one write (or read) transaction.

use async_trait::async_trait;
use redb::{ReadableTable, TableDefinition};

use super::{db_err, get_json, update_org, EmbeddedStore};
use crate::clock::UnixTime;
use crate::store::two_factor::{Ticket, TicketStore, TwoFactor, TwoFactorPolicy, TwoFactorStore};
use crate::store::{decode, encode, Organization, StoreResult};

/// user id -> active second factor
pub(super) const TWO_FACTOR: TableDefinition<&str, &[u8]> = TableDefinition::new("two_factor");
/// user id -> JSON list of backup code hashes
pub(super) const BACKUP_CODES: TableDefinition<&str, &[u8]> = TableDefinition::new("backup_codes");
/// user id -> last accepted TOTP time step
pub(super) const TOTP_STEPS: TableDefinition<&str, i64> = TableDefinition::new("totp_steps");
/// ticket key -> ticket
pub(super) const TICKETS: TableDefinition<&str, &[u8]> = TableDefinition::new("tickets");

fn codes_of(bytes: Option<&[u8]>, key: &str) -> StoreResult<Vec<String>> {
    match bytes {
        Some(b) => decode(key, b),
        None => Ok(Vec::new()),
    }
}

#[async_trait]
impl TwoFactorStore for EmbeddedStore {
    async fn set_two_factor_policy(
        &self,
        org_id: &str,
        policy: TwoFactorPolicy,
    ) -> StoreResult<Option<Organization>> {
        let org_id = org_id.to_string();
        self.run("set_two_factor_policy", move |db| {
            update_org(db, &org_id, |org| org.two_factor = policy)
        })
        .await
    }

    async fn get_two_factor(&self, user_id: &str) -> StoreResult<Option<TwoFactor>> {
        let user_id = user_id.to_string();
        self.run("get_two_factor", move |db| {
            get_json(db, TWO_FACTOR, &user_id)
        })
        .await
    }

    async fn enable_two_factor(&self, tf: &TwoFactor, hashes: &[String]) -> StoreResult<()> {
        let tf = tf.clone();
        let hashes = hashes.to_vec();
        self.run("enable_two_factor", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut methods = txn.open_table(TWO_FACTOR).map_err(db_err)?;
                methods
                    .insert(tf.user_id.as_str(), encode(&tf)?.as_slice())
                    .map_err(db_err)?;
                let mut codes = txn.open_table(BACKUP_CODES).map_err(db_err)?;
                codes
                    .insert(tf.user_id.as_str(), encode(&hashes)?.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn disable_two_factor(&self, user_id: &str) -> StoreResult<bool> {
        let user_id = user_id.to_string();
        self.run("disable_two_factor", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let had = {
                let mut methods = txn.open_table(TWO_FACTOR).map_err(db_err)?;
                let had = methods.remove(user_id.as_str()).map_err(db_err)?.is_some();
                let mut codes = txn.open_table(BACKUP_CODES).map_err(db_err)?;
                codes.remove(user_id.as_str()).map_err(db_err)?;
                had
            };
            txn.commit().map_err(db_err)?;
            Ok(had)
        })
        .await
    }

    async fn replace_backup_codes(&self, user_id: &str, hashes: &[String]) -> StoreResult<()> {
        let user_id = user_id.to_string();
        let hashes = hashes.to_vec();
        self.run("replace_backup_codes", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut codes = txn.open_table(BACKUP_CODES).map_err(db_err)?;
                codes
                    .insert(user_id.as_str(), encode(&hashes)?.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn consume_backup_code(&self, user_id: &str, hash: &str) -> StoreResult<bool> {
        let user_id = user_id.to_string();
        let hash = hash.to_string();
        self.run("consume_backup_code", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let consumed = {
                let mut codes = txn.open_table(BACKUP_CODES).map_err(db_err)?;
                let mut list = {
                    let current = codes.get(user_id.as_str()).map_err(db_err)?;
                    codes_of(current.as_ref().map(|v| v.value()), &user_id)?
                };
                let before = list.len();
                list.retain(|h| h != &hash);
                let consumed = list.len() < before;
                if consumed {
                    codes
                        .insert(user_id.as_str(), encode(&list)?.as_slice())
                        .map_err(db_err)?;
                }
                consumed
            };
            txn.commit().map_err(db_err)?;
            Ok(consumed)
        })
        .await
    }

    async fn backup_codes_remaining(&self, user_id: &str) -> StoreResult<usize> {
        let user_id = user_id.to_string();
        self.run("backup_codes_remaining", move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let codes = txn.open_table(BACKUP_CODES).map_err(db_err)?;
            let current = codes.get(user_id.as_str()).map_err(db_err)?;
            Ok(codes_of(current.as_ref().map(|v| v.value()), &user_id)?.len())
        })
        .await
    }

    async fn accept_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool> {
        let user_id = user_id.to_string();
        self.run("accept_totp_step", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let accepted = {
                let mut steps = txn.open_table(TOTP_STEPS).map_err(db_err)?;
                let last = steps
                    .get(user_id.as_str())
                    .map_err(db_err)?
                    .map(|v| v.value());
                let accepted = last.is_none_or(|last| step > last);
                if accepted {
                    steps.insert(user_id.as_str(), step).map_err(db_err)?;
                }
                accepted
            };
            txn.commit().map_err(db_err)?;
            Ok(accepted)
        })
        .await
    }
}

#[async_trait]
impl TicketStore for EmbeddedStore {
    async fn put_ticket(&self, key: &str, ticket: &Ticket, _now: UnixTime) -> StoreResult<()> {
        let key = key.to_string();
        let ticket = ticket.clone();
        self.run("put_ticket", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut t = txn.open_table(TICKETS).map_err(db_err)?;
                t.insert(key.as_str(), encode(&ticket)?.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn get_ticket(&self, key: &str, now: UnixTime) -> StoreResult<Option<Ticket>> {
        let key = key.to_string();
        self.run("get_ticket", move |db| {
            let t: Option<Ticket> = get_json(db, TICKETS, &key)?;
            Ok(t.filter(|t| t.is_live(now)))
        })
        .await
    }

    async fn fail_ticket(
        &self,
        key: &str,
        now: UnixTime,
        max_attempts: u32,
    ) -> StoreResult<Option<u32>> {
        let key = key.to_string();
        self.run("fail_ticket", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let attempts = {
                let mut t = txn.open_table(TICKETS).map_err(db_err)?;
                let current: Option<Ticket> = match t.get(key.as_str()).map_err(db_err)? {
                    Some(v) => Some(decode(&key, v.value())?),
                    None => None,
                };
                match current {
                    Some(mut ticket) if ticket.is_live(now) => {
                        ticket.attempts = ticket.attempts.saturating_add(1);
                        if ticket.attempts >= max_attempts {
                            t.remove(key.as_str()).map_err(db_err)?;
                        } else {
                            t.insert(key.as_str(), encode(&ticket)?.as_slice())
                                .map_err(db_err)?;
                        }
                        Some(ticket.attempts)
                    }
                    Some(_) => {
                        t.remove(key.as_str()).map_err(db_err)?;
                        None
                    }
                    None => None,
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(attempts)
        })
        .await
    }

    async fn purge_tickets(&self, now: UnixTime) -> StoreResult<usize> {
        self.run("purge_tickets", move |db| purge_expired_tickets(db, now))
            .await
    }

    async fn take_ticket(&self, key: &str, now: UnixTime) -> StoreResult<Option<Ticket>> {
        let key = key.to_string();
        self.run("take_ticket", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let taken = {
                let mut t = txn.open_table(TICKETS).map_err(db_err)?;
                let removed = t.remove(key.as_str()).map_err(db_err)?;
                match removed {
                    Some(v) => Some(decode::<Ticket>(&key, v.value())?),
                    None => None,
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(taken.filter(|t| t.is_live(now)))
        })
        .await
    }
}

/// Deletes tickets that expired before `now`: an abandoned login should not stay forever.
fn purge_expired_tickets(db: &redb::Database, now: UnixTime) -> StoreResult<usize> {
    let txn = db.begin_write().map_err(db_err)?;
    let purged = {
        let mut t = txn.open_table(TICKETS).map_err(db_err)?;
        let mut doomed = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let ticket: Ticket = decode(k.value(), v.value())?;
            if !ticket.is_live(now) {
                doomed.push(k.value().to_string());
            }
        }
        for k in &doomed {
            t.remove(k.as_str()).map_err(db_err)?;
        }
        doomed.len()
    };
    txn.commit().map_err(db_err)?;
    Ok(purged)
}

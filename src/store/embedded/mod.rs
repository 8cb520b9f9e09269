//! The embedded backend: one redb file, for a single gateway node (the default).
//!
//! Every write is one redb write transaction, so each operation is atomic. redb is synchronous,
//! so calls run on tokio's blocking pool and never stall a proxy thread. Only one process can
//! open the file: while the gateway runs, the admin CLI gets a clear `Locked` error.
//!
//! Avatars and the audit log live in `account.rs`, two-factor state in `two_factor.rs`, linked
//! sign-in identities in `identity.rs`.

mod account;
mod identity;
mod two_factor;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::{
    decode, encode, observed, window_expired, DirectoryStore, EndReason, FailureCount,
    Invalidation, InvalidationEvent, Organization, RateLimitStore, ServiceToken, Session,
    SessionStore, Store, StoreError, StoreResult, TokenStore, User,
};
use crate::clock::UnixTime;
use crate::metrics::Metrics;

const ORGS: TableDefinition<&str, &[u8]> = TableDefinition::new("orgs");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// lowercased email -> user id
const USER_EMAILS: TableDefinition<&str, &str> = TableDefinition::new("user_emails");
/// token hash -> session record
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// public session id -> token hash
const SESSION_IDS: TableDefinition<&str, &str> = TableDefinition::new("session_ids");
/// token hash -> service token record
const TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("tokens");
/// public token id -> token hash
const TOKEN_IDS: TableDefinition<&str, &str> = TableDefinition::new("token_ids");
/// rate-limit key -> failure window
const FAILURES: TableDefinition<&str, &[u8]> = TableDefinition::new("failures");

/// Every table, created when the file is opened so readers never meet a missing one.
const BYTE_TABLES: [TableDefinition<&str, &[u8]>; 11] = [
    ORGS,
    USERS,
    SESSIONS,
    TOKENS,
    FAILURES,
    account::AVATARS,
    account::AVATAR_META,
    account::AUDIT,
    two_factor::TWO_FACTOR,
    two_factor::BACKUP_CODES,
    two_factor::TICKETS,
];
const TEXT_TABLES: [TableDefinition<&str, &str>; 4] =
    [USER_EMAILS, SESSION_IDS, TOKEN_IDS, account::AUDIT_BY_TIME];

#[derive(Serialize, Deserialize)]
struct FailureWindow {
    count: u32,
    first_failure_at: UnixTime,
    last_failure_at: UnixTime,
}

pub struct EmbeddedStore {
    db: Arc<Database>,
    path: String,
    metrics: Arc<Metrics>,
}

fn db_err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl EmbeddedStore {
    pub fn open(path: &str, metrics: Arc<Metrics>) -> StoreResult<Self> {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| db_err(format!("cannot create {}: {e}", dir.display())))?;
            }
        }
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked(path.to_string()),
            redb::DatabaseError::Storage(redb::StorageError::Io(io))
                if io.kind() == std::io::ErrorKind::WouldBlock =>
            {
                StoreError::Locked(path.to_string())
            }
            other => db_err(format!("cannot open {path}: {other}")),
        })?;
        // Create every table up front so readers never meet a missing one.
        let txn = db.begin_write().map_err(db_err)?;
        {
            for table in BYTE_TABLES {
                txn.open_table(table).map_err(db_err)?;
            }
            for table in TEXT_TABLES {
                txn.open_table(table).map_err(db_err)?;
            }
            txn.open_table(two_factor::TOTP_STEPS).map_err(db_err)?;
            txn.open_table(identity::IDENTITIES).map_err(db_err)?;
            txn.open_table(identity::USER_IDENTITIES).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_string(),
            metrics,
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Runs `f` on the blocking pool, timed and counted under `op`.
    async fn run<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> StoreResult<T> + Send + 'static,
    {
        let db = self.db.clone();
        observed(&self.metrics, op, async move {
            tokio::task::spawn_blocking(move || f(&db))
                .await
                .map_err(db_err)?
        })
        .await
    }
}

/// Changes one organization in a single write transaction; `None` if it does not exist.
fn update_org(
    db: &Database,
    org_id: &str,
    change: impl FnOnce(&mut Organization),
) -> StoreResult<Option<Organization>> {
    modify_record(db, ORGS, org_id, |org: &mut Organization| {
        change(org);
        true
    })
}

/// Changes one JSON record in a single write transaction. `change` says whether it changed
/// anything (only then is the record written); the record as it is afterwards is returned,
/// `None` if there is none.
fn modify_record<T: Serialize + serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
    change: impl FnOnce(&mut T) -> bool,
) -> StoreResult<Option<T>> {
    let txn = db.begin_write().map_err(db_err)?;
    let record = {
        let mut t = txn.open_table(table).map_err(db_err)?;
        let current: Option<T> = match t.get(key).map_err(db_err)? {
            Some(v) => Some(decode(key, v.value())?),
            None => None,
        };
        match current {
            Some(mut record) => {
                if change(&mut record) {
                    t.insert(key, encode(&record)?.as_slice()).map_err(db_err)?;
                }
                Some(record)
            }
            None => None,
        }
    };
    txn.commit().map_err(db_err)?;
    Ok(record)
}

/// Every record of `table` that `keep` selects (a full scan: for listings, not request paths).
fn scan<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    keep: impl Fn(&T) -> bool,
) -> StoreResult<Vec<T>> {
    let txn = db.begin_read().map_err(db_err)?;
    let t = txn.open_table(table).map_err(db_err)?;
    let mut out = Vec::new();
    for item in t.iter().map_err(db_err)? {
        let (k, v) = item.map_err(db_err)?;
        let record: T = decode(k.value(), v.value())?;
        if keep(&record) {
            out.push(record);
        }
    }
    Ok(out)
}

/// Stores a credential record under its secret's hash, with its public id pointing at it, in
/// one transaction (sessions and service tokens). `Conflict` if the id or the hash exists.
fn insert_indexed(
    db: &Database,
    records: TableDefinition<&str, &[u8]>,
    ids: TableDefinition<&str, &str>,
    hash: &str,
    id: &str,
    bytes: &[u8],
) -> StoreResult<()> {
    let txn = db.begin_write().map_err(db_err)?;
    {
        let mut ids = txn.open_table(ids).map_err(db_err)?;
        let mut records = txn.open_table(records).map_err(db_err)?;
        if ids.get(id).map_err(db_err)?.is_some() || records.get(hash).map_err(db_err)?.is_some() {
            return Err(StoreError::Conflict("record exists"));
        }
        ids.insert(id, hash).map_err(db_err)?;
        records.insert(hash, bytes).map_err(db_err)?;
    }
    txn.commit().map_err(db_err)
}

/// Names the conflict for the caller's kind of record.
fn conflict_as(e: StoreError, what: &'static str) -> StoreError {
    match e {
        StoreError::Conflict(_) => StoreError::Conflict(what),
        other => other,
    }
}

/// Reads a credential record by its public id (id -> hash -> record).
fn get_indexed<T: serde::de::DeserializeOwned>(
    db: &Database,
    records: TableDefinition<&str, &[u8]>,
    ids: TableDefinition<&str, &str>,
    id: &str,
) -> StoreResult<Option<T>> {
    let txn = db.begin_read().map_err(db_err)?;
    let ids = txn.open_table(ids).map_err(db_err)?;
    let Some(hash) = ids.get(id).map_err(db_err)? else {
        return Ok(None);
    };
    let hash = hash.value().to_string();
    let records = txn.open_table(records).map_err(db_err)?;
    match records.get(hash.as_str()).map_err(db_err)? {
        Some(v) => Ok(Some(decode(&hash, v.value())?)),
        None => Ok(None),
    }
}

fn get_json<T: serde::de::DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &str,
) -> StoreResult<Option<T>> {
    let txn = db.begin_read().map_err(db_err)?;
    let t = txn.open_table(table).map_err(db_err)?;
    match t.get(key).map_err(db_err)? {
        Some(v) => Ok(Some(decode(key, v.value())?)),
        None => Ok(None),
    }
}

#[async_trait]
impl DirectoryStore for EmbeddedStore {
    async fn create_org(&self, org: &Organization) -> StoreResult<()> {
        let org = org.clone();
        self.run("create_org", move |db| {
            let bytes = encode(&org)?;
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut t = txn.open_table(ORGS).map_err(db_err)?;
                if t.get(org.id.as_str()).map_err(db_err)?.is_some() {
                    return Err(StoreError::Conflict("organization id exists"));
                }
                t.insert(org.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn get_org(&self, id: &str) -> StoreResult<Option<Organization>> {
        let id = id.to_string();
        self.run("get_org", move |db| get_json(db, ORGS, &id)).await
    }

    async fn list_org_ids(&self) -> StoreResult<Vec<String>> {
        self.run("list_org_ids", |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let orgs = txn.open_table(ORGS).map_err(db_err)?;
            let mut ids = Vec::new();
            for item in orgs.iter().map_err(db_err)? {
                let (k, _) = item.map_err(db_err)?;
                ids.push(k.value().to_string());
            }
            Ok(ids)
        })
        .await
    }

    async fn set_session_duration(
        &self,
        org_id: &str,
        days: u32,
    ) -> StoreResult<Option<Organization>> {
        let org_id = org_id.to_string();
        self.run("set_session_duration", move |db| {
            update_org(db, &org_id, |org| org.session_duration_days = days)
        })
        .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let user = user.clone();
        self.run("create_user", move |db| {
            let email = user.email.to_lowercase();
            let bytes = encode(&user)?;
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut emails = txn.open_table(USER_EMAILS).map_err(db_err)?;
                if emails.get(email.as_str()).map_err(db_err)?.is_some() {
                    return Err(StoreError::Conflict("email already in use"));
                }
                let mut users = txn.open_table(USERS).map_err(db_err)?;
                if users.get(user.id.as_str()).map_err(db_err)?.is_some() {
                    return Err(StoreError::Conflict("user id exists"));
                }
                emails
                    .insert(email.as_str(), user.id.as_str())
                    .map_err(db_err)?;
                users
                    .insert(user.id.as_str(), bytes.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }

    async fn update_user(&self, user: &User) -> StoreResult<bool> {
        let user = user.clone();
        self.run("update_user", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut users = txn.open_table(USERS).map_err(db_err)?;
                let current: User = match users.get(user.id.as_str()).map_err(db_err)? {
                    Some(v) => decode(&user.id, v.value())?,
                    None => return Ok(false),
                };
                if current.version != user.version {
                    return Ok(false);
                }
                let (old_email, new_email) =
                    (current.email.to_lowercase(), user.email.to_lowercase());
                if old_email != new_email {
                    let mut emails = txn.open_table(USER_EMAILS).map_err(db_err)?;
                    let taken = emails
                        .get(new_email.as_str())
                        .map_err(db_err)?
                        .is_some_and(|owner| owner.value() != user.id);
                    if taken {
                        return Err(StoreError::Conflict("email already in use"));
                    }
                    emails.remove(old_email.as_str()).map_err(db_err)?;
                    emails
                        .insert(new_email.as_str(), user.id.as_str())
                        .map_err(db_err)?;
                }
                let stored = User {
                    version: user.version + 1,
                    ..user.clone()
                };
                users
                    .insert(user.id.as_str(), encode(&stored)?.as_slice())
                    .map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
            Ok(true)
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        let id = id.to_string();
        self.run("get_user", move |db| get_json(db, USERS, &id))
            .await
    }

    async fn list_org_members(&self, org_id: &str) -> StoreResult<Vec<User>> {
        let org_id = org_id.to_string();
        // A scan: one node, few users, and an admin page, not a request path.
        self.run("list_org_members", move |db| {
            scan(db, USERS, |u: &User| u.membership(&org_id).is_some())
        })
        .await
    }

    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_lowercase();
        self.run("find_user_by_email", move |db| {
            let txn = db.begin_read().map_err(db_err)?;
            let emails = txn.open_table(USER_EMAILS).map_err(db_err)?;
            let Some(id) = emails.get(email.as_str()).map_err(db_err)? else {
                return Ok(None);
            };
            let users = txn.open_table(USERS).map_err(db_err)?;
            let id = id.value().to_string();
            match users.get(id.as_str()).map_err(db_err)? {
                Some(v) => Ok(Some(decode(&id, v.value())?)),
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait]
impl SessionStore for EmbeddedStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let session = session.clone();
        self.run("create_session", move |db| {
            let bytes = encode(&session)?;
            insert_indexed(
                db,
                SESSIONS,
                SESSION_IDS,
                &session.token_hash,
                &session.id,
                &bytes,
            )
            .map_err(|e| conflict_as(e, "session exists"))
        })
        .await
    }

    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>> {
        let token_hash = token_hash.to_string();
        self.run("session_by_token", move |db| {
            get_json(db, SESSIONS, &token_hash)
        })
        .await
    }

    async fn get_session(&self, id: &str) -> StoreResult<Option<Session>> {
        let id = id.to_string();
        self.run("get_session", move |db| {
            get_indexed(db, SESSIONS, SESSION_IDS, &id)
        })
        .await
    }

    async fn end_session(
        &self,
        id: &str,
        reason: EndReason,
        now: UnixTime,
    ) -> StoreResult<Option<Session>> {
        let id = id.to_string();
        self.run("end_session", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let ended = {
                let ids = txn.open_table(SESSION_IDS).map_err(db_err)?;
                let hash = match ids.get(id.as_str()).map_err(db_err)? {
                    Some(h) => h.value().to_string(),
                    None => return Ok(None),
                };
                let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
                let mut session: Session = match sessions.get(hash.as_str()).map_err(db_err)? {
                    Some(v) => decode(&hash, v.value())?,
                    None => return Ok(None),
                };
                if session.ended_reason.is_none() {
                    session.ended_reason = Some(reason);
                    session.ended_at = Some(now);
                    sessions
                        .insert(hash.as_str(), encode(&session)?.as_slice())
                        .map_err(db_err)?;
                }
                session
            };
            txn.commit().map_err(db_err)?;
            Ok(Some(ended))
        })
        .await
    }

    async fn touch_session(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_string();
        let ip = ip.to_string();
        self.run("touch_session", move |db| {
            modify_record(db, SESSIONS, &token_hash, |s: &mut Session| {
                let moves = s.ended_reason.is_none() && now > s.last_activity_at;
                if moves {
                    s.last_activity_at = now;
                    s.ip = ip;
                }
                moves
            })
            .map(|_| ())
        })
        .await
    }

    async fn list_org_sessions(&self, org_id: &str) -> StoreResult<Vec<Session>> {
        let org_id = org_id.to_string();
        self.run("list_org_sessions", move |db| {
            scan(db, SESSIONS, |s: &Session| s.org_id == org_id)
        })
        .await
    }

    async fn purge_sessions(&self, cutoff: UnixTime) -> StoreResult<usize> {
        self.run("purge_sessions", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let purged = {
                let orgs = txn.open_table(ORGS).map_err(db_err)?;
                let mut sessions = txn.open_table(SESSIONS).map_err(db_err)?;
                let mut ids = txn.open_table(SESSION_IDS).map_err(db_err)?;
                let mut doomed = Vec::new();
                for item in sessions.iter().map_err(db_err)? {
                    let (k, v) = item.map_err(db_err)?;
                    let s: Session = decode(k.value(), v.value())?;
                    let org: Option<Organization> =
                        match orgs.get(s.org_id.as_str()).map_err(db_err)? {
                            Some(o) => Some(decode(&s.org_id, o.value())?),
                            None => None,
                        };
                    let gone = match org {
                        Some(org) => s.expires_at(&org) < cutoff,
                        None => true,
                    };
                    if gone {
                        doomed.push((s.token_hash, s.id));
                    }
                }
                for (hash, id) in &doomed {
                    sessions.remove(hash.as_str()).map_err(db_err)?;
                    ids.remove(id.as_str()).map_err(db_err)?;
                }
                doomed.len()
            };
            txn.commit().map_err(db_err)?;
            Ok(purged)
        })
        .await
    }
}

#[async_trait]
impl TokenStore for EmbeddedStore {
    async fn create_token(&self, token: &ServiceToken) -> StoreResult<()> {
        let token = token.clone();
        self.run("create_token", move |db| {
            let bytes = encode(&token)?;
            insert_indexed(db, TOKENS, TOKEN_IDS, &token.token_hash, &token.id, &bytes)
                .map_err(|e| conflict_as(e, "token exists"))
        })
        .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ServiceToken>> {
        let token_hash = token_hash.to_string();
        self.run("token_by_hash", move |db| get_json(db, TOKENS, &token_hash))
            .await
    }

    async fn get_token(&self, id: &str) -> StoreResult<Option<ServiceToken>> {
        let id = id.to_string();
        self.run("get_token", move |db| {
            get_indexed(db, TOKENS, TOKEN_IDS, &id)
        })
        .await
    }

    async fn list_user_tokens(&self, user_id: &str) -> StoreResult<Vec<ServiceToken>> {
        let user_id = user_id.to_string();
        self.run("list_user_tokens", move |db| {
            scan(db, TOKENS, |t: &ServiceToken| t.user_id == user_id)
        })
        .await
    }

    async fn delete_token(&self, id: &str) -> StoreResult<Option<ServiceToken>> {
        let id = id.to_string();
        self.run("delete_token", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let deleted = {
                let mut ids = txn.open_table(TOKEN_IDS).map_err(db_err)?;
                let hash = match ids.remove(id.as_str()).map_err(db_err)? {
                    Some(h) => h.value().to_string(),
                    None => return Ok(None),
                };
                let mut tokens = txn.open_table(TOKENS).map_err(db_err)?;
                let removed = tokens.remove(hash.as_str()).map_err(db_err)?;
                match removed {
                    Some(v) => Some(decode::<ServiceToken>(&hash, v.value())?),
                    None => None,
                }
            };
            txn.commit().map_err(db_err)?;
            Ok(deleted)
        })
        .await
    }

    async fn touch_token(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()> {
        let token_hash = token_hash.to_string();
        let ip = ip.to_string();
        self.run("touch_token", move |db| {
            modify_record(db, TOKENS, &token_hash, |t: &mut ServiceToken| {
                let moves = t.last_used_at.is_none_or(|last| now > last);
                if moves {
                    t.last_used_at = Some(now);
                    t.last_used_ip = Some(ip);
                }
                moves
            })
            .map(|_| ())
        })
        .await
    }
}

#[async_trait]
impl RateLimitStore for EmbeddedStore {
    async fn record_failure(
        &self,
        key: &str,
        now: UnixTime,
        window_secs: i64,
    ) -> StoreResult<FailureCount> {
        let key = key.to_string();
        self.run("record_failure", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            let window = {
                let mut t = txn.open_table(FAILURES).map_err(db_err)?;
                let current: Option<FailureWindow> = match t.get(key.as_str()).map_err(db_err)? {
                    Some(v) => Some(decode(&key, v.value())?),
                    None => None,
                };
                let window = match current {
                    Some(w) if !window_expired(w.first_failure_at, window_secs, now) => {
                        FailureWindow {
                            count: w.count.saturating_add(1),
                            first_failure_at: w.first_failure_at,
                            last_failure_at: now,
                        }
                    }
                    _ => FailureWindow {
                        count: 1,
                        first_failure_at: now,
                        last_failure_at: now,
                    },
                };
                t.insert(key.as_str(), encode(&window)?.as_slice())
                    .map_err(db_err)?;
                window
            };
            txn.commit().map_err(db_err)?;
            Ok(FailureCount {
                count: window.count,
                last_failure_at: window.last_failure_at,
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
        let key = key.to_string();
        self.run("failures", move |db| {
            let w: Option<FailureWindow> = {
                let txn = db.begin_read().map_err(db_err)?;
                let t = txn.open_table(FAILURES).map_err(db_err)?;
                match t.get(key.as_str()).map_err(db_err)? {
                    Some(v) => Some(decode(&key, v.value())?),
                    None => None,
                }
            };
            Ok(match w {
                Some(w) if !window_expired(w.first_failure_at, window_secs, now) => FailureCount {
                    count: w.count,
                    last_failure_at: w.last_failure_at,
                },
                _ => FailureCount::default(),
            })
        })
        .await
    }

    async fn clear_failures(&self, key: &str) -> StoreResult<()> {
        let key = key.to_string();
        self.run("clear_failures", move |db| {
            let txn = db.begin_write().map_err(db_err)?;
            {
                let mut t = txn.open_table(FAILURES).map_err(db_err)?;
                t.remove(key.as_str()).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)
        })
        .await
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn backend_name(&self) -> &'static str {
        "embedded"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.run("ping", |db| {
            db.begin_read().map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn publish(&self, _invalidation: &Invalidation) -> StoreResult<()> {
        // One node: the caller already evicted its own cache, and there is nobody else.
        Ok(())
    }

    async fn watch_invalidations(
        &self,
        _on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let _ = shutdown.changed().await;
    }
}

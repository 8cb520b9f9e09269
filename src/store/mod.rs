//! State, in domain words. The gateway talks to its store only through the small capability
//! traits below; two backends implement all of them:
//!
//! - `embedded` — a redb file, the default, for one gateway node;
//! - `redis`    — shared by many gateway replicas (revocations travel over pub/sub).
//!
//! Records are serialized as JSON in both backends. New optional fields get `#[serde(default)]`,
//! so the records of later features (2FA state, OAuth identities, service tokens) are added
//! without migrating what is stored. Secrets never appear here in a usable form: passwords are
//! argon2id PHC strings, session ids are stored as the SHA-256 of the cookie secret.
//!
//! Every operation that must be atomic is atomic inside the backend (one redb write
//! transaction, one Redis command or Lua script); callers never read-then-write.
//! `tests/it/store_conformance.rs` runs the same suite against both backends.

pub mod cache;
pub mod embedded;
pub mod identity;
pub mod redis;
pub mod two_factor;

pub use identity::{
    IdentityStore, LinkOutcome, LinkedIdentity, Provider, UnlinkOutcome, MAX_EMAIL_LEN,
    MAX_SUBJECT_LEN,
};
pub use two_factor::{
    Ticket, TicketStore, TwoFactor, TwoFactorMethod, TwoFactorPolicy, TwoFactorStore,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::clock::UnixTime;
use crate::metrics::Metrics;

pub const SECONDS_PER_DAY: i64 = 86_400;

/// The session durations an organization may choose, in days (product page: 1, 7, 14 or 30).
pub const ALLOWED_SESSION_DAYS: [u32; 4] = [1, 7, 14, 30];
pub const DEFAULT_SESSION_DAYS: u32 = 7;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend did not answer or failed; callers fail closed (503).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A uniqueness rule was violated (e.g. an email already taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// A stored record could not be decoded.
    #[error("corrupt record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// The embedded file is held by another process (usually the running gateway).
    #[error("the embedded store {0} is in use by another process (is the gateway running? stop it, or use the API)")]
    Locked(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub session_duration_days: u32,
    pub created_at: UnixTime,
    /// Whether members may (or must) use two-factor authentication.
    #[serde(default)]
    pub two_factor: TwoFactorPolicy,
}

impl Organization {
    pub fn session_lifetime_secs(&self) -> i64 {
        i64::from(self.session_duration_days) * SECONDS_PER_DAY
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Member,
}

/// Fine-grained rights beyond the role; names as the product page spells them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub enum Permission {
    #[serde(rename = "allowManageServiceTokens")]
    AllowManageServiceTokens,
}

impl Permission {
    pub const ALL: [Permission; 1] = [Permission::AllowManageServiceTokens];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::AllowManageServiceTokens => "allowManageServiceTokens",
        }
    }

    pub fn parse(s: &str) -> Option<Permission> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Membership {
    pub org_id: String,
    pub role: Role,
    #[serde(default)]
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct User {
    pub id: String,
    /// As entered; uniqueness is checked on the lowercased form.
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub job_title: Option<String>,
    #[serde(default)]
    pub mobile_phone: Option<String>,
    #[serde(default)]
    pub business_phone: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    /// argon2id PHC string; `None` for users who can only sign in with a linked provider.
    #[serde(default)]
    pub password_hash: Option<String>,
    #[serde(default)]
    pub memberships: Vec<Membership>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
    /// Bumped by every `update_user`; an update based on a stale copy is refused.
    #[serde(default)]
    pub version: u64,
}

impl User {
    pub fn display_name(&self) -> String {
        format!("{} {}", self.first_name, self.last_name)
    }

    pub fn membership(&self, org_id: &str) -> Option<&Membership> {
        self.memberships.iter().find(|m| m.org_id == org_id)
    }
}

/// Why a session stopped being valid before (or at) its natural end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    LoggedOut,
    ExpiredByAdmin,
    TimedOut,
    PasswordChanged,
    /// The user was removed from the session's organization.
    MemberRemoved,
    /// An administrator reset the user's two-factor authentication.
    TwoFactorReset,
}

/// The second factor a session was opened with (its JWT `amr` value after `pwd`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum SecondFactor {
    #[serde(rename = "otp")]
    Totp,
    #[serde(rename = "sms")]
    Sms,
    #[serde(rename = "backup")]
    Backup,
}

impl SecondFactor {
    pub fn amr(self) -> &'static str {
        match self {
            SecondFactor::Totp => "otp",
            SecondFactor::Sms => "sms",
            SecondFactor::Backup => "backup",
        }
    }
}

/// A browser session. Keyed by the SHA-256 of the cookie secret; `id` is the public handle
/// admins see and use for "Expire now". The lifetime is not stored: it is always
/// `created_at + organization duration`, so lowering the duration shortens existing sessions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Session {
    pub id: String,
    pub token_hash: String,
    pub user_id: String,
    pub org_id: String,
    pub ip: String,
    pub user_agent: String,
    pub created_at: UnixTime,
    pub last_activity_at: UnixTime,
    pub csrf_token: String,
    #[serde(default)]
    pub ended_at: Option<UnixTime>,
    #[serde(default)]
    pub ended_reason: Option<EndReason>,
    /// How the login was completed after the password, if it had a second step.
    #[serde(default)]
    pub second_factor: Option<SecondFactor>,
    /// The Quick Login provider the first step went through; `None` for a password.
    #[serde(default)]
    pub federated: Option<Provider>,
}

impl Session {
    /// When the session stops (or stopped) being valid under the given organization policy.
    pub fn expires_at(&self, org: &Organization) -> UnixTime {
        let natural = self.created_at + org.session_lifetime_secs();
        match self.ended_at {
            Some(ended) => ended.min(natural),
            None => natural,
        }
    }

    pub fn is_active(&self, org: &Organization, now: UnixTime) -> bool {
        self.ended_reason.is_none() && now < self.expires_at(org)
    }

    /// The reason shown for an inactive session (a natural expiry is `timed_out`).
    pub fn end_reason(&self, org: &Organization, now: UnixTime) -> Option<EndReason> {
        match self.ended_reason {
            Some(r) => Some(r),
            None if now >= self.expires_at(org) => Some(EndReason::TimedOut),
            None => None,
        }
    }
}

/// A service token: a Bearer credential acting as its owner within one organization.
/// Keyed by the SHA-256 of the token; the token itself is shown once, at creation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServiceToken {
    /// Public handle (`tok_<hex>`), used to list and delete.
    pub id: String,
    pub token_hash: String,
    pub name: String,
    /// The owner; the token has the owner's rights in `org_id` at the time of use.
    pub user_id: String,
    pub org_id: String,
    /// One address (`203.0.113.7`) or a CIDR range (`203.0.113.0/24`), normalized.
    #[serde(default)]
    pub ip: Option<String>,
    /// Sent as `X-User-Id` by callers of a range-bound token.
    pub client_id: String,
    pub created_at: UnixTime,
    #[serde(default)]
    pub last_used_at: Option<UnixTime>,
    #[serde(default)]
    pub last_used_ip: Option<String>,
}

/// Failed attempts counted under one key inside a fixed window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCount {
    pub count: u32,
    /// Time of the most recent failure (0 when none).
    pub last_failure_at: UnixTime,
}

/// A message to every replica: drop what you cached about this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// A session ended; carries its token hash (the cache key).
    Session(String),
    /// A service token was deleted; carries its hash (the cache key).
    Token(String),
    /// An organization changed (e.g. its session duration); drop its cached sessions.
    Org(String),
    /// A user changed; drop what is cached about them.
    User(String),
}

impl Invalidation {
    pub fn encode(&self) -> String {
        match self {
            Invalidation::Session(h) => format!("session:{h}"),
            Invalidation::Token(h) => format!("token:{h}"),
            Invalidation::Org(id) => format!("org:{id}"),
            Invalidation::User(id) => format!("user:{id}"),
        }
    }

    pub fn decode(s: &str) -> Option<Invalidation> {
        let (kind, value) = s.split_once(':')?;
        let value = value.to_string();
        match kind {
            "session" => Some(Invalidation::Session(value)),
            "token" => Some(Invalidation::Token(value)),
            "org" => Some(Invalidation::Org(value)),
            "user" => Some(Invalidation::User(value)),
            _ => None,
        }
    }
}

/// What a replica hears on the invalidation channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidationEvent {
    Invalidate(Invalidation),
    /// The feed was (re)connected or lost: anything cached may be stale, drop it all.
    Resync,
}

/// Organizations, users and their memberships.
#[async_trait]
pub trait DirectoryStore {
    async fn create_org(&self, org: &Organization) -> StoreResult<()>;
    async fn get_org(&self, id: &str) -> StoreResult<Option<Organization>>;
    /// Every organization id (for the sweeper's counts; not for request paths).
    async fn list_org_ids(&self) -> StoreResult<Vec<String>>;
    /// Returns the updated organization, `None` if it does not exist.
    async fn set_session_duration(
        &self,
        org_id: &str,
        days: u32,
    ) -> StoreResult<Option<Organization>>;
    /// Fails with `Conflict` when the email (case-insensitively) is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    async fn find_user_by_email(&self, email: &str) -> StoreResult<Option<User>>;
    /// Compare-and-set: stores `user` (with `version + 1`) only if the stored record still has
    /// `user.version`; `Ok(false)` if it changed meanwhile or is gone. A new email that another
    /// user has is a `Conflict`. Use `modify_user` rather than calling this directly.
    async fn update_user(&self, user: &User) -> StoreResult<bool>;
    /// Every user with a membership in the organization, in no particular order.
    async fn list_org_members(&self, org_id: &str) -> StoreResult<Vec<User>>;
}

/// Applies `change` to the current user record, retrying when another writer got there first.
/// Returns the stored result, `None` if there is no such user.
pub async fn modify_user(
    store: &dyn Store,
    id: &str,
    change: impl Fn(&mut User),
) -> StoreResult<Option<User>> {
    for _ in 0..16 {
        let Some(mut user) = store.get_user(id).await? else {
            return Ok(None);
        };
        change(&mut user);
        if store.update_user(&user).await? {
            user.version += 1;
            return Ok(Some(user));
        }
    }
    Err(StoreError::Unavailable(format!(
        "user {id} kept changing; gave up after 16 attempts"
    )))
}

/// Browser sessions: the hot path reads them, the account app creates and ends them.
#[async_trait]
pub trait SessionStore {
    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn session_by_token(&self, token_hash: &str) -> StoreResult<Option<Session>>;
    async fn get_session(&self, id: &str) -> StoreResult<Option<Session>>;
    /// Ends an active session and returns it; an already ended session is returned unchanged
    /// (the first reason wins). `None` if no such session.
    async fn end_session(
        &self,
        id: &str,
        reason: EndReason,
        now: UnixTime,
    ) -> StoreResult<Option<Session>>;
    /// Records activity (written at most once a minute per session by the proxy).
    async fn touch_session(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()>;
    /// Every retained session of the organization, active or not.
    async fn list_org_sessions(&self, org_id: &str) -> StoreResult<Vec<Session>>;
    /// Deletes sessions that stopped being valid before `cutoff`; returns how many.
    async fn purge_sessions(&self, cutoff: UnixTime) -> StoreResult<usize>;
}

/// Service tokens: the hot path reads them by hash, the account app manages them by id.
#[async_trait]
pub trait TokenStore {
    /// Fails with `Conflict` if the id or hash exists.
    async fn create_token(&self, token: &ServiceToken) -> StoreResult<()>;
    async fn token_by_hash(&self, token_hash: &str) -> StoreResult<Option<ServiceToken>>;
    async fn get_token(&self, id: &str) -> StoreResult<Option<ServiceToken>>;
    /// Every token the user owns, in any organization.
    async fn list_user_tokens(&self, user_id: &str) -> StoreResult<Vec<ServiceToken>>;
    /// Removes the token and returns it; `None` if no such token.
    async fn delete_token(&self, id: &str) -> StoreResult<Option<ServiceToken>>;
    /// Records use (at most once a minute per token, by the proxy); only moves forward.
    async fn touch_token(&self, token_hash: &str, now: UnixTime, ip: &str) -> StoreResult<()>;
}

/// Counters for brute-force protection.
#[async_trait]
pub trait RateLimitStore {
    /// Atomically counts one failure; the window starts at the first failure.
    async fn record_failure(
        &self,
        key: &str,
        now: UnixTime,
        window_secs: i64,
    ) -> StoreResult<FailureCount>;
    /// The failures counted in the current window (zero once it ran out).
    async fn failures(
        &self,
        key: &str,
        now: UnixTime,
        window_secs: i64,
    ) -> StoreResult<FailureCount>;
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;
}

/// A user's picture as the account app re-encoded it (never the bytes a client uploaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Avatar {
    /// `image/png`, ...
    pub content_type: String,
    pub data: Vec<u8>,
    /// A strong HTTP validator for `data` (sent quoted in `ETag`).
    pub etag: String,
    pub updated_at: UnixTime,
}

/// Avatars, one per user, kept apart from the user record so the hot path never loads them.
#[async_trait]
pub trait AvatarStore {
    /// Stores the user's avatar, replacing any previous one.
    async fn put_avatar(&self, user_id: &str, avatar: &Avatar) -> StoreResult<()>;
    async fn get_avatar(&self, user_id: &str) -> StoreResult<Option<Avatar>>;
    /// Removes it; `false` if there was none.
    async fn delete_avatar(&self, user_id: &str) -> StoreResult<bool>;
}

/// What an audit entry records. New kinds are added at the end; a kind this version does not
/// know (written by a newer replica) reads as `Other` rather than failing the whole page.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum AuditEvent {
    LoginSucceeded,
    LoginFailed,
    Logout,
    SessionExpiredByAdmin,
    PasswordChanged,
    EmailChanged,
    MemberCreated,
    MemberRemoved,
    ServiceTokenCreated,
    ServiceTokenDeleted,
    TwoFactorEnabled,
    TwoFactorDisabled,
    TwoFactorReset,
    BackupCodesRegenerated,
    BackupCodeUsed,
    TwoFactorFailed,
    IdentityConnected,
    IdentityDisconnected,
    /// A Quick Login that failed after the provider named a known user (or while connecting).
    OauthFailed,
    #[serde(other)]
    Other,
}

impl AuditEvent {
    pub const ALL: [AuditEvent; 20] = [
        AuditEvent::LoginSucceeded,
        AuditEvent::LoginFailed,
        AuditEvent::Logout,
        AuditEvent::SessionExpiredByAdmin,
        AuditEvent::PasswordChanged,
        AuditEvent::EmailChanged,
        AuditEvent::MemberCreated,
        AuditEvent::MemberRemoved,
        AuditEvent::ServiceTokenCreated,
        AuditEvent::ServiceTokenDeleted,
        AuditEvent::TwoFactorEnabled,
        AuditEvent::TwoFactorDisabled,
        AuditEvent::TwoFactorReset,
        AuditEvent::BackupCodesRegenerated,
        AuditEvent::BackupCodeUsed,
        AuditEvent::TwoFactorFailed,
        AuditEvent::IdentityConnected,
        AuditEvent::IdentityDisconnected,
        AuditEvent::OauthFailed,
        AuditEvent::Other,
    ];

    /// The wire name (also the `type` label of `xgw_audit_events_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            AuditEvent::LoginSucceeded => "login_succeeded",
            AuditEvent::LoginFailed => "login_failed",
            AuditEvent::Logout => "logout",
            AuditEvent::SessionExpiredByAdmin => "session_expired_by_admin",
            AuditEvent::PasswordChanged => "password_changed",
            AuditEvent::EmailChanged => "email_changed",
            AuditEvent::MemberCreated => "member_created",
            AuditEvent::MemberRemoved => "member_removed",
            AuditEvent::ServiceTokenCreated => "service_token_created",
            AuditEvent::ServiceTokenDeleted => "service_token_deleted",
            AuditEvent::TwoFactorEnabled => "two_factor_enabled",
            AuditEvent::TwoFactorDisabled => "two_factor_disabled",
            AuditEvent::TwoFactorReset => "two_factor_reset",
            AuditEvent::BackupCodesRegenerated => "backup_codes_regenerated",
            AuditEvent::BackupCodeUsed => "backup_code_used",
            AuditEvent::TwoFactorFailed => "two_factor_failed",
            AuditEvent::IdentityConnected => "identity_connected",
            AuditEvent::IdentityDisconnected => "identity_disconnected",
            AuditEvent::OauthFailed => "oauth_failed",
            AuditEvent::Other => "other",
        }
    }
}

/// One security-relevant event in an organization's audit log.
///
/// `id` is `aud_` + the time as 12 hex digits + 16 random hex digits (`audit_id`), so ids sort
/// by time: both backends page and purge by comparing ids, never by decoding entries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub time: UnixTime,
    pub org_id: String,
    pub event: AuditEvent,
    /// Who did it (`None` when nobody is signed in, e.g. a failed login).
    #[serde(default)]
    pub actor_user_id: Option<String>,
    /// What it was done to: a user, session or token id (they carry their kind as a prefix).
    #[serde(default)]
    pub target: Option<String>,
    pub ip: String,
    pub user_agent: String,
    /// Event-specific facts, e.g. the old and new email address.
    #[serde(default)]
    pub details: BTreeMap<String, String>,
}

/// Length of every audit id: `aud_` + 12 + 16 hex digits.
pub const AUDIT_ID_LEN: usize = 32;

/// The smallest id of an entry at `time`: every entry of an earlier second sorts below it.
pub fn audit_id_floor(time: UnixTime) -> String {
    format!("aud_{:012x}", time.clamp(0, 0xffff_ffff_ffff))
}

/// A fresh audit id for an entry at `time` (`nonce`: 8 random bytes).
pub fn audit_id(time: UnixTime, nonce: [u8; 8]) -> String {
    format!("{}{}", audit_id_floor(time), hex::encode(nonce))
}

/// Whether `id` has the shape of an audit id (API cursors are checked with it).
pub fn is_audit_id(id: &str) -> bool {
    id.len() == AUDIT_ID_LEN
        && id.starts_with("aud_")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl AuditEntry {
    /// Both backends refuse an entry whose id does not start with its own time: paging and
    /// purging would misplace it.
    pub(crate) fn check_id(&self) -> StoreResult<()> {
        if is_audit_id(&self.id) && self.id.starts_with(&audit_id_floor(self.time)) {
            Ok(())
        } else {
            Err(StoreError::Corrupt {
                key: self.id.clone(),
                reason: "an audit id must be audit_id(time, ..)".to_string(),
            })
        }
    }
}

/// The most entries one `list_audit` call returns.
pub const AUDIT_PAGE_MAX: usize = 200;

/// The audit log: appended by the account app, paged by org admins, purged by the sweeper.
#[async_trait]
pub trait AuditStore {
    async fn append_audit(&self, entry: &AuditEntry) -> StoreResult<()>;
    /// The organization's entries with an id below `before` (all when `None`), newest first,
    /// at most `limit` (capped at `AUDIT_PAGE_MAX`).
    async fn list_audit(
        &self,
        org_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>>;
    /// Deletes every entry (of every organization) with `time < cutoff`; returns how many.
    async fn purge_audit(&self, cutoff: UnixTime) -> StoreResult<usize>;
}

/// Everything the gateway needs from its state.
#[async_trait]
pub trait Store:
    DirectoryStore
    + SessionStore
    + TokenStore
    + RateLimitStore
    + AvatarStore
    + AuditStore
    + TwoFactorStore
    + TicketStore
    + IdentityStore
    + Send
    + Sync
    + 'static
{
    fn backend_name(&self) -> &'static str;
    /// A cheap round trip used by `/readyz`.
    async fn ping(&self) -> StoreResult<()>;
    /// Tells the other replicas to drop cached state. The local cache is evicted by the caller.
    async fn publish(&self, invalidation: &Invalidation) -> StoreResult<()>;
    /// Runs until `shutdown` fires, passing every invalidation published by any replica to
    /// `on_event`. A single-node backend has nobody to hear from and just waits.
    async fn watch_invalidations(
        &self,
        on_event: &(dyn Fn(InvalidationEvent) + Send + Sync),
        shutdown: tokio::sync::watch::Receiver<bool>,
    );
}

pub type SharedStore = Arc<dyn Store>;

/// Opens the backend named by `store.url`: `embedded:PATH` or `redis://...`.
pub fn open(url: &str, metrics: Arc<Metrics>) -> StoreResult<SharedStore> {
    if let Some(path) = url.strip_prefix("embedded:") {
        Ok(Arc::new(embedded::EmbeddedStore::open(path, metrics)?))
    } else if url.starts_with("redis://") || url.starts_with("rediss://") {
        redis::RedisStore::open_shared(url, metrics)
    } else {
        Err(StoreError::Unavailable(format!(
            "unsupported store url {url:?}: expected embedded:PATH or redis://"
        )))
    }
}

/// Times one store operation and counts its failures; both backends wrap every call in it.
pub(crate) async fn observed<T, F>(metrics: &Metrics, op: &'static str, fut: F) -> StoreResult<T>
where
    F: std::future::Future<Output = StoreResult<T>>,
{
    let timer = metrics.store_seconds.with_label_values(&[op]).start_timer();
    let result = fut.await;
    timer.observe_duration();
    if matches!(result, Err(StoreError::Unavailable(_))) {
        metrics.store_errors.with_label_values(&[op]).inc();
    }
    result
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> StoreResult<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

pub(crate) fn encode<T: Serialize>(value: &T) -> StoreResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Corrupt {
        key: "<encode>".to_string(),
        reason: e.to_string(),
    })
}

/// Fixed-window failure counting shared by both backends' semantics: a window that has run
/// out starts over.
pub(crate) fn window_expired(first_failure_at: UnixTime, window_secs: i64, now: UnixTime) -> bool {
    now >= first_failure_at + window_secs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_ids_sort_by_time_and_have_one_shape() {
        let early = audit_id(1_700_000_000, [0xff; 8]);
        let late = audit_id(1_700_000_001, [0; 8]);
        assert!(early < late);
        assert!(is_audit_id(&early) && is_audit_id(&late));
        assert_eq!(early.len(), AUDIT_ID_LEN);
        assert!(audit_id_floor(1_700_000_001) > early);
        assert!(audit_id_floor(1_700_000_001) <= late);
        for bad in [
            "",
            "aud_",
            "aud_XYZ",
            &early.to_uppercase(),
            &format!("{early}0"),
        ] {
            assert!(!is_audit_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn an_audit_event_from_a_newer_version_reads_as_other() {
        let e: AuditEvent = serde_json::from_str("\"totp_enabled\"").unwrap();
        assert_eq!(e, AuditEvent::Other);
        for e in AuditEvent::ALL {
            let json = serde_json::to_string(&e).unwrap();
            assert_eq!(json, format!("\"{}\"", e.as_str()));
        }
    }
}

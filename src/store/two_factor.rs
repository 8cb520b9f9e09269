//! State for two-factor authentication: each user's active second factor with its backup
//! codes and last accepted TOTP step, and short-lived single-use tickets (pending enrolments,
//! login challenges, SMS codes).
//!
//! The operations that stop replay and guessing are atomic in both backends:
//! `accept_totp_step` (a code's time step is accepted once, never an older one),
//! `consume_backup_code` (two parallel uses of one code: exactly one succeeds),
//! `fail_ticket` (attempts counted and the ticket destroyed at the limit) and `take_ticket`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{Organization, StoreResult};
use crate::clock::UnixTime;

/// An organization's 2FA policy.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TwoFactorPolicy {
    /// 2FA is not offered (the default).
    #[default]
    Off,
    /// Members may enrol.
    Optional,
    /// Members without 2FA must enrol right after their password, before any session.
    Required,
}

impl TwoFactorPolicy {
    pub fn parse(s: &str) -> Option<TwoFactorPolicy> {
        match s {
            "off" => Some(TwoFactorPolicy::Off),
            "optional" => Some(TwoFactorPolicy::Optional),
            "required" => Some(TwoFactorPolicy::Required),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TwoFactorMethod {
    Totp,
    Sms,
}

impl TwoFactorMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            TwoFactorMethod::Totp => "totp",
            TwoFactorMethod::Sms => "sms",
        }
    }
}

/// A user's active second factor; enrolling another method replaces it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TwoFactor {
    pub user_id: String,
    pub method: TwoFactorMethod,
    /// The TOTP seed, sealed (`auth::seal`); never stored in the clear.
    #[serde(default)]
    pub totp_secret: Option<String>,
    /// E.164 number for SMS codes.
    #[serde(default)]
    pub phone: Option<String>,
    pub enabled_at: UnixTime,
}

/// A short-lived, single-use record. `data` is the caller's own JSON.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ticket {
    pub data: String,
    pub expires_at: UnixTime,
    #[serde(default)]
    pub attempts: u32,
}

impl Ticket {
    pub fn is_live(&self, now: UnixTime) -> bool {
        now < self.expires_at
    }
}

#[async_trait]
pub trait TwoFactorStore {
    /// Sets an organization's policy; the updated organization, `None` if it does not exist.
    async fn set_two_factor_policy(
        &self,
        org_id: &str,
        policy: TwoFactorPolicy,
    ) -> StoreResult<Option<Organization>>;
    async fn get_two_factor(&self, user_id: &str) -> StoreResult<Option<TwoFactor>>;
    /// Activates `two_factor` with a fresh set of backup code hashes, replacing any previous
    /// method and codes in one step.
    async fn enable_two_factor(
        &self,
        two_factor: &TwoFactor,
        backup_code_hashes: &[String],
    ) -> StoreResult<()>;
    /// Removes the method and every backup code; `true` if there was a method.
    async fn disable_two_factor(&self, user_id: &str) -> StoreResult<bool>;
    /// Replaces the backup codes (the old set stops working at once).
    async fn replace_backup_codes(&self, user_id: &str, hashes: &[String]) -> StoreResult<()>;
    /// Removes the code if present: `true` exactly once per code.
    async fn consume_backup_code(&self, user_id: &str, hash: &str) -> StoreResult<bool>;
    async fn backup_codes_remaining(&self, user_id: &str) -> StoreResult<usize>;
    /// Accepts `step` only if it is newer than every step accepted before for this user:
    /// `false` means a replayed (or older) code.
    async fn accept_totp_step(&self, user_id: &str, step: i64) -> StoreResult<bool>;
}

#[async_trait]
pub trait TicketStore {
    /// Stores (or replaces) the ticket under `key`.
    async fn put_ticket(&self, key: &str, ticket: &Ticket, now: UnixTime) -> StoreResult<()>;
    /// The ticket if it exists and has not expired.
    async fn get_ticket(&self, key: &str, now: UnixTime) -> StoreResult<Option<Ticket>>;
    /// Counts one failed attempt and returns the attempts so far; at `max_attempts` the ticket
    /// is destroyed. `None` if there is no live ticket.
    async fn fail_ticket(
        &self,
        key: &str,
        now: UnixTime,
        max_attempts: u32,
    ) -> StoreResult<Option<u32>>;
    /// Removes and returns a live ticket: whoever takes it is the only one who does.
    async fn take_ticket(&self, key: &str, now: UnixTime) -> StoreResult<Option<Ticket>>;
    /// Deletes expired tickets (the sweeper); returns how many. On Redis their TTL already
    /// does this, so it reports 0.
    async fn purge_tickets(&self, now: UnixTime) -> StoreResult<usize>;
}

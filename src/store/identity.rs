//! Linked sign-in identities for Quick Login: a Google (OpenID Connect) or GitHub account a user
//! connected to their gateway account.
//!
//! Two rules hold in both backends, each checked and written in one atomic step:
//! - a provider account (`provider`, `subject`) belongs to at most one user, so two parallel
//!   links of one subject to two users give exactly one `Linked`;
//! - a user has at most one identity per provider.
//!
//! `unlink_identity` with `require_another` refuses to remove a user's last identity in the same
//! step that removes it, so two parallel disconnects cannot leave a password-less user with no
//! way to sign in.
//!
//! The subject is the provider's stable account id (Google's `sub`, GitHub's numeric user id),
//! never an email: emails change hands, these ids do not.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoreResult};
use crate::clock::UnixTime;

/// The longest subject the store accepts, in bytes (OpenID Connect caps `sub` at 255 ASCII
/// characters; GitHub's ids are a few digits).
pub const MAX_SUBJECT_LEN: usize = 255;
/// The longest email the store accepts, in bytes (the practical limit of an address).
pub const MAX_EMAIL_LEN: usize = 320;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Google,
    Github,
}

impl Provider {
    /// Every provider, in the order listings are sorted by.
    pub const ALL: [Provider; 2] = [Provider::Google, Provider::Github];

    /// The wire name, as serde writes it; also the name in store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Google => "google",
            Provider::Github => "github",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Position in `ALL` (the listing order).
    fn rank(self) -> usize {
        match self {
            Provider::Google => 0,
            Provider::Github => 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LinkedIdentity {
    pub user_id: String,
    pub provider: Provider,
    /// Google's `sub` or GitHub's numeric user id as a string — never an email.
    pub subject: String,
    /// The provider's (verified) email at link time, for display only.
    pub email: Option<String>,
    pub connected_at: UnixTime,
}

impl LinkedIdentity {
    /// The sizes `link_identity` accepts: a subject of 1 to `MAX_SUBJECT_LEN` bytes and an email
    /// of at most `MAX_EMAIL_LEN` bytes. Both backends refuse anything else with
    /// `StoreError::Corrupt` (as they refuse a malformed audit id): callers should check first
    /// (with this function) and answer the client with an error of their own.
    pub fn check_sizes(&self) -> StoreResult<()> {
        let problem = if self.subject.is_empty() {
            Some(format!("empty {} subject", self.provider.as_str()))
        } else if self.subject.len() > MAX_SUBJECT_LEN {
            Some(format!(
                "{} subject of {} bytes (at most {MAX_SUBJECT_LEN})",
                self.provider.as_str(),
                self.subject.len()
            ))
        } else {
            self.email
                .as_ref()
                .filter(|e| e.len() > MAX_EMAIL_LEN)
                .map(|e| format!("email of {} bytes (at most {MAX_EMAIL_LEN})", e.len()))
        };
        match problem {
            None => Ok(()),
            Some(reason) => Err(StoreError::Corrupt {
                key: format!("<identity of {}>", self.user_id),
                reason,
            }),
        }
    }
}

/// Sorts a user's identities by provider, in `Provider::ALL` order (both backends use it).
pub(crate) fn sort_by_provider(identities: &mut [LinkedIdentity]) {
    identities.sort_by_key(|i| i.provider.rank());
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    Linked,
    /// (provider, subject) is already linked to another user.
    SubjectInUse,
    /// The user already has an identity for this provider (one per provider per user).
    /// Re-linking the very same (user, provider, subject) also answers this.
    ProviderAlreadyLinked,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnlinkOutcome {
    Unlinked(LinkedIdentity),
    NotLinked,
    /// refused: `require_another` and this is the user's only identity
    LastIdentity,
}

#[async_trait]
pub trait IdentityStore {
    /// Atomic: two parallel links of one subject to two users → exactly one `Linked`.
    ///
    /// When both rules are broken (the subject belongs to another user *and* the user already
    /// has this provider), the answer is `SubjectInUse`. Sizes outside `check_sizes` are refused
    /// with `StoreError::Corrupt` and nothing is written.
    async fn link_identity(&self, identity: &LinkedIdentity) -> StoreResult<LinkOutcome>;
    async fn identity_by_subject(
        &self,
        provider: Provider,
        subject: &str,
    ) -> StoreResult<Option<LinkedIdentity>>;
    /// Sorted by provider (in `Provider::ALL` order: Google, then GitHub).
    async fn list_user_identities(&self, user_id: &str) -> StoreResult<Vec<LinkedIdentity>>;
    /// Atomic. With `require_another` (the caller passes it when the user has no password), refuses
    /// to remove the user's last identity, so two parallel disconnects cannot leave a user with no
    /// way to sign in. `NotLinked` when the user has no identity for `provider` (checked first).
    async fn unlink_identity(
        &self,
        user_id: &str,
        provider: Provider,
        require_another: bool,
    ) -> StoreResult<UnlinkOutcome>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(subject: &str, email: Option<String>) -> LinkedIdentity {
        LinkedIdentity {
            user_id: "u1".into(),
            provider: Provider::Google,
            subject: subject.into(),
            email,
            connected_at: 1,
        }
    }

    #[test]
    fn providers_round_trip_through_their_wire_names() {
        for p in Provider::ALL {
            assert_eq!(Provider::parse(p.as_str()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert_eq!(Provider::parse("Google"), None);
        assert_eq!(Provider::parse(""), None);
    }

    #[test]
    fn sizes_are_checked_in_bytes() {
        assert!(identity("1", None).check_sizes().is_ok());
        assert!(identity(
            &"s".repeat(MAX_SUBJECT_LEN),
            Some("e".repeat(MAX_EMAIL_LEN))
        )
        .check_sizes()
        .is_ok());
        assert!(identity("", None).check_sizes().is_err());
        assert!(identity(&"s".repeat(MAX_SUBJECT_LEN + 1), None)
            .check_sizes()
            .is_err());
        // 128 two-byte characters: 128 characters, 256 bytes.
        assert!(identity(&"é".repeat(128), None).check_sizes().is_err());
        assert!(identity("1", Some("e".repeat(MAX_EMAIL_LEN + 1)))
            .check_sizes()
            .is_err());
    }
}

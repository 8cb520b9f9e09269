//! Password hashing (argon2id) and the complexity rules.
//!
//! Hashing and verifying cost tens of milliseconds on purpose; callers run them on the blocking
//! pool. An unknown user is verified against a dummy hash so that "no such account" and "wrong
//! password" take the same time.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};

/// Longest password accepted: argon2 cost grows with input, so bound it.
pub const MAX_PASSWORD_BYTES: usize = 1024;
pub const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("argon2 parameters rejected: {0}")]
    Params(String),
    #[error("hashing failed: {0}")]
    Hash(String),
}

#[derive(Clone)]
pub struct Passwords {
    argon2: Argon2<'static>,
    /// A real hash of a random password, verified when the account does not exist.
    dummy_hash: String,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passwords { .. }")
    }
}

impl Passwords {
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, PasswordError> {
        let params = Params::new(memory_kib, iterations, parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut this = Self {
            argon2,
            dummy_hash: String::new(),
        };
        this.dummy_hash = this.hash(&crate::auth::secret::new_csrf_token())?;
        Ok(this)
    }

    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| PasswordError::Hash(e.to_string()))
    }

    /// `stored` is `None` for an unknown account (or one without a password): the dummy hash
    /// is checked instead and the answer is always false.
    pub fn verify(&self, password: &str, stored: Option<&str>) -> bool {
        let (hash, real) = match stored {
            Some(h) => (h, true),
            None => (self.dummy_hash.as_str(), false),
        };
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        let ok = self
            .argon2
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        ok && real
    }
}

/// Every rule the password breaks, so a UI can show them all at once.
pub fn complexity_violations(password: &str, email: &str) -> Vec<&'static str> {
    let mut broken = Vec::new();
    if password.chars().count() < MIN_PASSWORD_CHARS {
        broken.push("at least 12 characters");
    }
    if password.len() > MAX_PASSWORD_BYTES {
        broken.push("at most 1024 bytes");
    }
    if !password.chars().any(char::is_uppercase) {
        broken.push("an upper case letter");
    }
    if !password.chars().any(char::is_lowercase) {
        broken.push("a lower case letter");
    }
    if !password.chars().any(|c| c.is_ascii_digit()) {
        broken.push("a digit");
    }
    if !email.is_empty() && password.eq_ignore_ascii_case(email) {
        broken.push("different from the email address");
    }
    broken
}

/// The rules a new password breaks when it replaces `current` (product page, "Changing Your
/// Password"): the complexity rules, and not the old password again.
pub fn new_password_violations(new: &str, email: &str, current: &str) -> Vec<&'static str> {
    let mut broken = complexity_violations(new, email);
    if new == current {
        broken.push("different from the current password");
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_unknown_accounts_never_pass() {
        let p = Passwords::new(19_456, 2, 1).unwrap();
        let h = p.hash("Correct-Horse-9").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(p.verify("Correct-Horse-9", Some(&h)));
        assert!(!p.verify("wrong", Some(&h)));
        assert!(!p.verify("Correct-Horse-9", None));
        assert!(!p.verify("x", Some("not a phc string")));
    }

    #[test]
    fn complexity_lists_every_broken_rule() {
        assert_eq!(
            complexity_violations("short", ""),
            vec!["at least 12 characters", "an upper case letter", "a digit"]
        );
        assert!(complexity_violations("Long-enough-pw-1", "a@b.c").is_empty());
        assert!(complexity_violations("Ab1@example.COM", "ab1@example.com")
            .contains(&"different from the email address"));
    }

    #[test]
    fn a_new_password_must_differ_from_the_current_one() {
        assert_eq!(
            new_password_violations("Long-enough-pw-1", "a@b.c", "Long-enough-pw-1"),
            vec!["different from the current password"]
        );
        assert!(
            new_password_violations("Long-enough-pw-2", "a@b.c", "Long-enough-pw-1").is_empty()
        );
    }
}

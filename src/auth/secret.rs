//! Random secrets and ids. Session cookies are 256-bit random values with a recognizable prefix;
//! only their SHA-256 is stored (they are random, so a slow hash adds nothing).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of a session cookie value: `xgs_` + 43 base64url characters.
pub const SESSION_PREFIX: &str = "xgs_";
const SECRET_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b
}

/// A fresh session cookie value.
pub fn new_session_secret() -> String {
    format!(
        "{SESSION_PREFIX}{}",
        URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>())
    )
}

/// Checks the shape of a cookie value before anything is looked up; garbage never reaches the
/// store.
pub fn is_well_formed_session_secret(value: &str) -> bool {
    value
        .strip_prefix(SESSION_PREFIX)
        .is_some_and(is_well_formed_token)
}

/// The shape of `new_csrf_token` (and of the random part of a session secret): 43 base64url
/// characters.
pub fn is_well_formed_token(value: &str) -> bool {
    value.len() == ENCODED_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// SHA-256 of a secret, hex: the key under which its record is stored.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A CSRF token bound to a session.
pub fn new_csrf_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<SECRET_BYTES>())
}

/// A public identifier such as `ses_3f9a...` (128 random bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(random_bytes::<16>()))
}

/// Writes a new secret file readable by its owner only (0600), creating its directory; never
/// overwrites an existing file (a key that exists is loaded, not replaced).
pub fn write_private_file(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Constant-time equality for secrets compared in the open (CSRF tokens).
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_secrets_are_well_formed_and_distinct() {
        let a = new_session_secret();
        let b = new_session_secret();
        assert_ne!(a, b);
        assert!(is_well_formed_session_secret(&a));
        assert!(!is_well_formed_session_secret(&a[..a.len() - 1]));
        assert!(!is_well_formed_session_secret(&a.replace("xgs_", "xgt_")));
        assert!(!is_well_formed_session_secret(
            "xgs_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        ));
        assert_eq!(hash_secret(&a).len(), 64);
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "abcd"));
    }
}
